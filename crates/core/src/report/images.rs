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

/// The key image of one finding, as PNG bytes.
pub fn key_image(finding: &Finding, segment: Option<&Segment>, volume: &Volume) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    render(finding, segment, volume)
        .write_to(&mut bytes, ImageFormat::Png)
        .map_err(|source| Error::Png(Box::new(source)))?;
    Ok(bytes.into_inner())
}

/// The key image of one finding, as RGB pixels (for PNG or a Secondary Capture).
pub fn render(finding: &Finding, segment: Option<&Segment>, volume: &Volume) -> RgbImage {
    let caption_height = CAPTION_LINES * LINE_HEIGHT + 4;
    let mut canvas = RgbImage::new(SIZE, SIZE + caption_height);
    let view = Crop::around(finding, volume);
    draw_slice(&mut canvas, &view, volume);
    if let Some(segment) = segment {
        draw_outline(&mut canvas, &view, segment);
    }
    for (n, line) in caption(finding).iter().enumerate() {
        draw_text(&mut canvas, line, 6, SIZE + 4 + n as u32 * LINE_HEIGHT);
    }
    canvas
}

/// The square of source pixels shown: slice `k`, top-left `(row, column)`, side length.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Crop {
    k: usize,
    top: i64,
    left: i64,
    side: usize,
}

impl Crop {
    /// Three long axes wide (at least 48 pixels), centred on the finding.
    fn around(f: &Finding, volume: &Volume) -> Crop {
        let [_, rows, columns] = volume.shape();
        let [i, j, k] = f.center_voxel.map(|v| v as i64);
        let wanted = (3.0 * f.long_axis_mm / volume.geometry.spacing[2]).ceil() as usize;
        let side = wanted.max(48).min(rows.max(columns));
        let half = side as i64 / 2;
        Crop {
            k: (k as usize).min(volume.slices.len().saturating_sub(1)),
            top: j - half,
            left: i - half,
            side,
        }
    }

    /// The source `(row, column)` shown at canvas pixel `(y, x)`.
    fn source(&self, y: i64, x: i64) -> (i64, i64) {
        let scale = |v: i64| v * self.side as i64 / i64::from(SIZE);
        (self.top + scale(y), self.left + scale(x))
    }
}

fn draw_slice(canvas: &mut RgbImage, view: &Crop, volume: &Volume) {
    let slice = volume.hu.index_axis(ndarray::Axis(0), view.k);
    for y in 0..SIZE {
        for x in 0..SIZE {
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
fn draw_outline(canvas: &mut RgbImage, view: &Crop, segment: &Segment) {
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
    for y in 0..i64::from(SIZE) {
        for x in 0..i64::from(SIZE) {
            let edge = [(-2, 0), (2, 0), (0, -2), (0, 2)]
                .iter()
                .any(|(dy, dx)| !inside(y + dy, x + dx));
            if edge && inside(y, x) {
                canvas.put_pixel(x as u32, y as u32, OUTLINE);
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
        let bytes = key_image(&f, Some(&segment), &volume()).unwrap();
        let decoded = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(decoded.width(), SIZE);
        assert!(decoded.pixels().any(|p| *p == OUTLINE));
        // Air (-1000 HU) sits 350 HU above the lung window's floor (-1350 HU).
        assert_eq!(*decoded.get_pixel(1, 1), Rgb([59, 59, 59]));
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
