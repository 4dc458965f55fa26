//! Key images: one PNG per finding for people and PACS that show nothing else.
//!
//! An axial crop of the source slice through the nodule's centre in lung window
//! (W 1500, L -600), scaled up to [`SIZE`] pixels, with the segment's outline in red and
//! a caption (finding, Lung-RADS, size, type, score, slice) in an 8x8 bitmap font that is
//! compiled in. Knows the finding, its segment and the volume; nothing of transport.

use image::{ImageFormat, Rgb, RgbImage};

use super::{Error, Result};
use crate::findings::{Finding, NoduleType};
use crate::postprocess::Segment;
use pulmo_dicom::volume::Volume;

/// Width and height of the image part, in pixels.
pub const SIZE: u32 = 384;
/// Lung window centre and width (HU).
pub const WINDOW: (f32, f32) = (-600.0, 1500.0);
/// Caption glyphs are 8x8 font pixels drawn this many times larger.
const FONT_SCALE: u32 = 2;
const CAPTION_LINES: u32 = 3;
const LINE_HEIGHT: u32 = 8 * FONT_SCALE + 4;
const OUTLINE: Rgb<u8> = Rgb([255, 48, 48]);
const TEXT: Rgb<u8> = Rgb([255, 255, 255]);

/// Side of the view of a finding that an analysis keeps (in its snapshot) for a later
/// study's key image to show beside its own ([`view_png`]).
pub const VIEW_SIZE: u32 = 192;
/// The field of view of a kept view, in mm: wide enough for the crops of nodules up to
/// some 20 mm, so that the current crop's field can be cut from it at the same scale.
pub const VIEW_FOV_MM: f64 = 64.0;
const PRIOR_OUTLINE: Rgb<u8> = Rgb([64, 160, 255]);

/// A finding's view from the prior study ([`view_png`] decoded), with its field of view.
#[derive(Debug, Clone)]
pub struct PriorView {
    pub pixels: RgbImage,
    pub fov_mm: f64,
}

impl PriorView {
    /// The centre of the view covering `fov_mm` (all of it when that is wider), scaled to
    /// `size` pixels square: the prior at the scale of a current crop.
    fn at(&self, fov_mm: f64, size: u32) -> RgbImage {
        let side = self.pixels.width().min(self.pixels.height());
        let fraction = (fov_mm / self.fov_mm.max(f64::EPSILON)).clamp(0.05, 1.0);
        let part = ((f64::from(side) * fraction).round() as u32).clamp(1, side);
        let offset = (side - part) / 2;
        let cut = image::imageops::crop_imm(&self.pixels, offset, offset, part, part).to_image();
        image::imageops::resize(&cut, size, size, image::imageops::FilterType::Nearest)
    }
}

/// The key image of one finding, as PNG bytes; with `prior`, the view of its match in the
/// prior study ([`view_png`]) stands beside it.
pub fn key_image(
    finding: &Finding,
    segment: Option<&Segment>,
    volume: &Volume,
    prior: Option<&PriorView>,
) -> Result<Vec<u8>> {
    png(&render(finding, segment, volume, prior))
}

fn png(pixels: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    pixels
        .write_to(&mut bytes, ImageFormat::Png)
        .map_err(|source| Error::Png(Box::new(source)))?;
    Ok(bytes.into_inner())
}

/// The key image of one finding, as RGB pixels (for PNG or a Secondary Capture). With
/// `prior` (the view of the matched prior finding) and the finding's follow-up, the image is
/// twice as wide: the current crop on the left, the prior's on the right at the same scale
/// (mm per pixel), each captioned.
pub fn render(
    finding: &Finding,
    segment: Option<&Segment>,
    volume: &Volume,
    prior: Option<&PriorView>,
) -> RgbImage {
    let beside = prior
        .zip(finding.followup.as_ref())
        .and_then(|(view, up)| Some((view, up, up.prior.as_ref()?)));
    let caption_height = CAPTION_LINES * LINE_HEIGHT + 4;
    let width = if beside.is_some() { 2 * SIZE } else { SIZE };
    let mut canvas = RgbImage::new(width, SIZE + caption_height);
    let view = Crop::around(finding, volume, SIZE);
    draw_slice(&mut canvas, &view, volume);
    if let Some(segment) = segment {
        draw_outline(&mut canvas, &view, segment, OUTLINE);
    }
    draw_caption(&mut canvas, &caption(finding), 0);
    if let Some((image, followup, was)) = beside {
        let fov_mm = view.side as f64 * volume.geometry.spacing[2];
        image::imageops::replace(&mut canvas, &image.at(fov_mm, SIZE), i64::from(SIZE), 0);
        let lines = [
            format!("prior: nodule {}", was.finding_id),
            format!("{:.1} mm then", was.diameter_mm),
            format!("now {}", followup.change.as_str()),
        ];
        draw_caption(&mut canvas, &lines, SIZE);
    }
    canvas
}

/// Caption lines under the image part, from column `left`.
fn draw_caption(canvas: &mut RgbImage, lines: &[String], left: u32) {
    for (n, line) in lines.iter().enumerate() {
        draw_text(canvas, line, left + 6, SIZE + 4 + n as u32 * LINE_HEIGHT);
    }
}

/// A finding's crop without caption, [`VIEW_FOV_MM`] wide at [`VIEW_SIZE`] pixels square,
/// outlined in blue, as PNG: what an analysis keeps so that a later study's key image can
/// show this finding as it was.
pub fn view_png(finding: &Finding, segment: Option<&Segment>, volume: &Volume) -> Result<Vec<u8>> {
    let mut canvas = RgbImage::new(VIEW_SIZE, VIEW_SIZE);
    let side = (VIEW_FOV_MM / volume.geometry.spacing[2].max(0.05)).round() as usize;
    let view = Crop::centred(finding, volume, side.max(8), VIEW_SIZE);
    draw_slice(&mut canvas, &view, volume);
    if let Some(segment) = segment {
        draw_outline(&mut canvas, &view, segment, PRIOR_OUTLINE);
    }
    png(&canvas)
}

/// The square of source pixels shown: slice `k`, top-left `(row, column)`, side length.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Crop {
    k: usize,
    top: i64,
    left: i64,
    side: usize,
    /// The canvas side it is drawn at.
    size: u32,
}

impl Crop {
    /// Three long axes wide (at least 48 pixels), centred on the finding, drawn `size`
    /// canvas pixels square.
    fn around(f: &Finding, volume: &Volume, size: u32) -> Crop {
        let [_, rows, columns] = volume.shape();
        let wanted = (3.0 * f.long_axis_mm / volume.geometry.spacing[2]).ceil() as usize;
        Crop::centred(f, volume, wanted.max(48).min(rows.max(columns)), size)
    }

    /// `side` source pixels square, centred on the finding, drawn `size` pixels square.
    fn centred(f: &Finding, volume: &Volume, side: usize, size: u32) -> Crop {
        let [i, j, k] = f.center_voxel.map(|v| v as i64);
        let half = side as i64 / 2;
        Crop {
            k: (k as usize).min(volume.slices.len().saturating_sub(1)),
            top: j - half,
            left: i - half,
            side,
            size,
        }
    }

    /// The source `(row, column)` shown at canvas pixel `(y, x)`.
    fn source(&self, y: i64, x: i64) -> (i64, i64) {
        let scale = |v: i64| v * self.side as i64 / i64::from(self.size);
        (self.top + scale(y), self.left + scale(x))
    }
}

fn draw_slice(canvas: &mut RgbImage, view: &Crop, volume: &Volume) {
    let slice = volume.hu.index_axis(ndarray::Axis(0), view.k);
    for y in 0..view.size {
        for x in 0..view.size {
            let (r, c) = view.source(i64::from(y), i64::from(x));
            let hu = usize::try_from(r)
                .ok()
                .zip(usize::try_from(c).ok())
                .and_then(|(r, c)| slice.get((r, c)).copied());
            let grey = hu.map_or(0, |hu| grey(hu, WINDOW));
            canvas.put_pixel(x, y, Rgb([grey; 3]));
        }
    }
}

/// A value's grey level in a linear window `(centre, width)`: black below, white above.
pub fn grey(value: f32, (centre, width): (f32, f32)) -> u8 {
    let low = centre - width / 2.0;
    ((value - low) / width.max(f32::EPSILON) * 255.0).clamp(0.0, 255.0) as u8
}

/// Paints the segment's edge on the crop: canvas pixels inside the segment with a pixel
/// outside it two canvas pixels away.
fn draw_outline(canvas: &mut RgbImage, view: &Crop, segment: &Segment, colour: Rgb<u8>) {
    let inside = |y: i64, x: i64| {
        let (r, c) = view.source(y, x);
        let index = [
            view.k as i64 - segment.origin[0] as i64,
            r - segment.origin[1] as i64,
            c - segment.origin[2] as i64,
        ];
        let Ok(index) = index
            .map(usize::try_from)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
        else {
            return false;
        };
        segment.mask.get([index[0], index[1], index[2]]).copied() == Some(true)
    };
    for y in 0..i64::from(view.size) {
        for x in 0..i64::from(view.size) {
            let edge = [(-2, 0), (2, 0), (0, -2), (0, 2)]
                .iter()
                .any(|(dy, dx)| !inside(y + dy, x + dx));
            if edge && inside(y, x) {
                canvas.put_pixel(x as u32, y as u32, colour);
            }
        }
    }
}

/// Three short lines: which finding and category, size and type, score and slice.
fn caption(f: &Finding) -> [String; 3] {
    let kind = match f.nodule_type {
        NoduleType::Solid => "solid",
        NoduleType::PartSolid => "part-solid",
        NoduleType::GroundGlass => "ground-glass",
    };
    let slice = f.instance_number.map_or_else(
        || format!("slice {}", f.center_voxel[2]),
        |n| format!("image {n}"),
    );
    [
        format!("nodule {}  Lung-RADS {}", f.id, f.lung_rads.as_str()),
        format!("{:.1} mm {kind}", f.diameter_mm),
        format!("score {:.2}  {slice}", f.score),
    ]
}

fn draw_text(canvas: &mut RgbImage, line: &str, x0: u32, y0: u32) {
    for (n, c) in line.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY
            .get(c as usize)
            .copied()
            .unwrap_or([0; 8]);
        let left = x0 + n as u32 * 8 * FONT_SCALE;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits & (1 << col) != 0 {
                    fill(
                        canvas,
                        left + col * FONT_SCALE,
                        y0 + row as u32 * FONT_SCALE,
                    );
                }
            }
        }
    }
}

/// One font pixel: a `FONT_SCALE` square, clipped to the canvas.
fn fill(canvas: &mut RgbImage, x: u32, y: u32) {
    for dy in 0..FONT_SCALE {
        for dx in 0..FONT_SCALE {
            if x + dx < canvas.width() && y + dy < canvas.height() {
                canvas.put_pixel(x + dx, y + dy, TEXT);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::LungRads;
    use crate::testing::finding;
    use ndarray::Array3;
    use pulmo_dicom::volume::{Geometry, SliceRef};

    fn volume() -> Volume {
        Volume {
            hu: Array3::from_elem((3, 64, 64), -1000.0),
            geometry: Geometry::axial([0.0; 3], [2.0, 1.0, 1.0]),
            slices: vec![SliceRef::default(); 3],
            ids: Default::default(),
            source: Default::default(),
            slice_thickness_mm: None,
            warnings: vec![],
        }
    }

    #[test]
    fn a_key_image_is_a_png_with_the_outline_in_red() {
        let mut f = finding(0.9, LungRads::Cat3);
        f.center_voxel = [32, 32, 1];
        let segment = Segment {
            finding_id: f.id,
            origin: [1, 28, 28],
            mask: Array3::from_elem((1, 8, 8), true),
        };
        let bytes = key_image(&f, Some(&segment), &volume(), None).unwrap();
        let decoded = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(decoded.width(), SIZE);
        assert!(decoded.pixels().any(|p| *p == OUTLINE));
        // Air (-1000 HU) sits 350 HU above the lung window's floor (-1350 HU).
        assert_eq!(*decoded.get_pixel(1, 1), Rgb([59, 59, 59]));
    }

    #[test]
    fn a_followed_nodule_stands_beside_its_prior_view() {
        let mut f = finding(0.9, LungRads::Cat4A);
        f.center_voxel = [32, 32, 1];
        let segment = Segment {
            finding_id: f.id,
            origin: [1, 28, 28],
            mask: Array3::from_elem((1, 8, 8), true),
        };
        let mut was = f.clone();
        was.id = 7;
        was.diameter_mm = 3.2;
        let prior_png = view_png(&was, Some(&segment), &volume()).unwrap();
        let pixels = image::load_from_memory(&prior_png).unwrap().to_rgb8();
        assert_eq!((pixels.width(), pixels.height()), (VIEW_SIZE, VIEW_SIZE));
        assert!(pixels.pixels().any(|p| *p == PRIOR_OUTLINE));
        let prior = PriorView {
            pixels,
            fov_mm: VIEW_FOV_MM,
        };

        // Without a follow-up the view is not used.
        let alone = render(&f, Some(&segment), &volume(), Some(&prior));
        assert_eq!(alone.width(), SIZE);
        f.followup = Some(crate::findings::FollowUp::matched(
            &f,
            crate::findings::PriorFinding::quote(&was),
            Some(365.0),
        ));
        let pair = render(&f, Some(&segment), &volume(), Some(&prior));
        assert_eq!(pair.width(), 2 * SIZE);
        let right: Vec<_> = (SIZE..2 * SIZE)
            .flat_map(|x| (0..SIZE).map(move |y| (x, y)))
            .map(|(x, y)| *pair.get_pixel(x, y))
            .collect();
        assert!(
            right.contains(&PRIOR_OUTLINE),
            "the prior's outline on the right"
        );
        assert!(
            !right.contains(&OUTLINE),
            "the current outline stays on the left"
        );
        // At the current crop's scale: 48 source pixels of 1 mm, cut from the 64 mm view.
        let outline_columns = |image: &RgbImage, colour, from: u32| {
            let xs: Vec<u32> = (from..from + SIZE)
                .filter(|&x| (0..SIZE).any(|y| *image.get_pixel(x, y) == colour))
                .collect();
            xs.last().unwrap() - xs.first().unwrap()
        };
        let (now, then) = (
            outline_columns(&pair, OUTLINE, 0),
            outline_columns(&pair, PRIOR_OUTLINE, SIZE),
        );
        assert!(
            now.abs_diff(then) <= 8,
            "same scale: {now} and {then} pixels wide"
        );
    }

    #[test]
    fn captions_name_size_type_score_and_category() {
        let f = finding(0.934, LungRads::Cat4A);
        let lines = caption(&f);
        assert!(lines[0].contains("4A"), "{lines:?}");
        assert!(lines[1].contains("5.0 mm solid"), "{lines:?}");
        assert!(lines[2].contains("0.93"), "{lines:?}");
        assert!(lines
            .iter()
            .all(|l| l.len() as u32 * 8 * FONT_SCALE <= SIZE - 6));
    }
}
