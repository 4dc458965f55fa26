//! Pixels to Hounsfield units: decode an instance's frames and apply its modality LUT.
//!
//! RLE Lossless is decoded by `rle` straight into sample planes (dicom-pixeldata's RLE
//! decoder was the slowest stage of an RLE series), and 12-bit JPEG Extended by `jpeg12`
//! (libjpeg-turbo; jpeg-decoder has no 12-bit lossy). The other codecs come from
//! dicom-pixeldata: JPEG baseline and lossless (8 and 16 bit), deflate, JPEG 2000 and
//! HTJ2K through OpenJPEG (built from C by openjpeg-sys), JPEG-LS lossless and
//! near-lossless through CharLS (charls-sys, built with the venv's CMake and linked
//! statically). Sample interpretation is ours: mask to BitsStored, sign-extend when
//! PixelRepresentation is 1, `stored * slope + intercept`, and padding pixels become air.

use dicom_dictionary_std::{tags, uids};
use dicom_encoding::adapters::PixelDataObject;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::entries;
use ndarray::ArrayViewMut2;

use super::series::{FrameHeader, Instance, ModalityLut, PixelFormat, Source};
use super::{jpeg, jpeg12, part10, rle};
use super::{Error, Result};

/// Hounsfield value written for padding pixels (air).
pub const PADDING_HU: f32 = -1024.0;

/// Reads the instance up to and including its pixels from its source.
fn open(instance: &Instance) -> Result<DefaultDicomObject> {
    let name = || instance.source.name();
    let opened = match &instance.source {
        Source::Path(path) => part10::open_path(path, false),
        Source::Bytes { bytes, .. } => part10::open(std::io::Cursor::new(&bytes[..]), false),
    };
    let mut obj = opened.map_err(|source| Error::Read {
        name: name(),
        source: Box::new(source),
    })?;
    super::vr::resolve_unknown_vrs(&mut obj);
    if obj.get(tags::PIXEL_DATA).is_none() {
        return Err(Error::NoPixelData { name: name() });
    }
    Ok(obj)
}

/// Decodes the given frames of one instance into their output slices.
pub fn decode_into(instance: &Instance, targets: Vec<(u32, ArrayViewMut2<'_, f32>)>) -> Result<()> {
    check_format(instance)?;
    let obj = open(instance)?;
    for (frame, target) in targets {
        decode_one(instance, &obj, frame, target)?;
    }
    Ok(())
}

/// Decodes frame `frame` (0-based) of one instance to modality values (Hounsfield units
/// for CT), rows by columns: one image for a viewer, outside any volume.
pub fn decode_frame(instance: &Instance, frame: u32) -> Result<ndarray::Array2<f32>> {
    let shape = (
        instance.pixel.rows as usize,
        instance.pixel.columns as usize,
    );
    let mut values = ndarray::Array2::zeros(shape);
    decode_into(instance, vec![(frame, values.view_mut())])?;
    Ok(values)
}

fn decode_one(
    instance: &Instance,
    obj: &DefaultDicomObject,
    frame: u32,
    mut target: ArrayViewMut2<'_, f32>,
) -> Result<()> {
    let name = || instance.source.name();
    if let Some(done) = decode_own(instance, obj, frame, target.view_mut()) {
        return done;
    }
    check_jpeg_frame(instance, obj, frame)?;
    // Some codecs in dicom-pixeldata index out of bounds on inconsistent input (frames
    // whose data do not match Rows/Columns); that is bad data, not a crash.
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        obj.decode_pixel_data_frame(frame)
    }));
    let decoded = attempt
        .map_err(|_| Error::DecoderPanic {
            name: name(),
            frame,
        })?
        .map_err(|source| Error::Decode {
            name: name(),
            frame,
            source: Box::new(source),
        })?;
    let format = &instance.pixel;
    let bytes_per_sample = format.bits_allocated as usize / 8;
    let expected = target.len() * bytes_per_sample;
    let data = decoded.data();
    if data.len() < expected {
        return Err(Error::ShortPixelData {
            name: name(),
            frame,
            expected,
            found: data.len(),
        });
    }
    let header = &instance.frames[frame as usize];
    let lut = Lut::new(format, header, instance.modality_lut.as_deref());
    match (bytes_per_sample, target.as_slice_mut()) {
        // The common case (16-bit samples into a contiguous slice), with the sample width
        // known at compile time so the loop vectorises.
        (2, Some(out)) => {
            let samples = data.chunks_exact(2);
            lut.apply_all(out, samples.map(|s| u16::from_le_bytes([s[0], s[1]])));
        }
        _ => {
            let words_swapped = bytes_per_sample == 4 && ow_in_big_endian(instance, obj);
            for (out, sample) in target.iter_mut().zip(data.chunks_exact(bytes_per_sample)) {
                let raw = match *sample {
                    [a, b, c, d] if words_swapped => u32::from_le_bytes([c, d, a, b]),
                    _ => read_sample(sample),
                };
                *out = lut.apply(raw);
            }
        }
    }
    Ok(())
}

/// Whether the pixels are OW in big endian. The parser then hands them over as 16-bit
/// words in native order, so a 32-bit sample (an RT dose grid, say) arrives as its two
/// words, the more significant first: pydicom-data's `rtdose_expb_1frame` read 1 249 000
/// as 250 085 395 before.
fn ow_in_big_endian(instance: &Instance, obj: &DefaultDicomObject) -> bool {
    instance.transfer_syntax_uid == entries::EXPLICIT_VR_BIG_ENDIAN.uid()
        && obj
            .element(tags::PIXEL_DATA)
            .is_ok_and(|e| e.vr() == dicom_core::VR::OW)
}

/// JPEG and JPEG-LS syntaxes whose frames dicom-pixeldata decodes.
const JPEG_SYNTAXES: [&str; 6] = [
    uids::JPEG_BASELINE8_BIT,
    uids::JPEG_EXTENDED12_BIT,
    uids::JPEG_LOSSLESS,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEGLS_LOSSLESS,
    uids::JPEGLS_NEAR_LOSSLESS,
];

/// Checks a JPEG or JPEG-LS frame's stream before its decoder sees it, from the bytes the
/// decoder will be given (its own fragment, the fragments of a single frame joined, or
/// those the offset table gives a frame of a multi-frame image), read once:
///
/// - a frame header that claims another size than Rows × Columns is refused before the
///   decoder allocates what it claims ([`jpeg`]);
/// - a JPEG-LS stream that does not end with its EOI marker is refused before CharLS sees
///   it. CharLS 2.4.5 (charls-sys) decodes a stream that runs out of bits mid-scan by
///   reading zero bits past the end of its buffer until a 32-bit bit counter wraps round:
///   about 6 s of one core for a crafted 2 KB frame (found by fuzzing). A marker before the
///   buffer's end stops it at once with an error, and every complete JPEG-LS image ends
///   with EOI.
fn check_jpeg_frame(instance: &Instance, obj: &DefaultDicomObject, frame: u32) -> Result<()> {
    let syntax = instance.transfer_syntax_uid.as_str();
    if !JPEG_SYNTAXES.contains(&syntax) {
        return Ok(());
    }
    // No such frame: dicom-pixeldata reports it.
    let Some(bytes) = obj.frame_pixel_data(frame) else {
        return Ok(());
    };
    let name = || instance.source.name();
    if let Some((stream_rows, stream_columns)) = jpeg::frame_size(&bytes) {
        let (rows, columns) = (instance.pixel.rows, instance.pixel.columns);
        if (u32::from(stream_rows), u32::from(stream_columns)) != (rows, columns) {
            return Err(Error::JpegSize {
                name: name(),
                frame,
                rows,
                columns,
                stream_rows,
                stream_columns,
            });
        }
    }
    let jpeg_ls = syntax == uids::JPEGLS_LOSSLESS || syntax == uids::JPEGLS_NEAR_LOSSLESS;
    if jpeg_ls && !jpeg::ends_with_eoi(&bytes) {
        return Err(Error::JpegLsCutShort {
            name: name(),
            frame,
        });
    }
    Ok(())
}

/// The codecs pulmo runs itself instead of dicom-pixeldata's.
enum OwnCodec {
    Rle,
    Jpeg12,
}

impl OwnCodec {
    fn for_instance(instance: &Instance) -> Option<Self> {
        match instance.transfer_syntax_uid.as_str() {
            uids::RLE_LOSSLESS => Some(OwnCodec::Rle),
            // JPEG Extended (processes 2 and 4): 8-bit precision (BitsStored <= 8) stays
            // with jpeg-decoder, which handles it.
            uids::JPEG_EXTENDED12_BIT if instance.pixel.bits_stored > 8 => Some(OwnCodec::Jpeg12),
            _ => None,
        }
    }
}

/// Decodes `frame` with one of pulmo's own codecs into `target`, if one applies.
fn decode_own(
    instance: &Instance,
    obj: &DefaultDicomObject,
    frame: u32,
    target: ArrayViewMut2<'_, f32>,
) -> Option<Result<()>> {
    let codec = OwnCodec::for_instance(instance)?;
    let bytes = obj.frame_pixel_data(frame)?;
    let lut = Lut::new(
        &instance.pixel,
        &instance.frames[frame as usize],
        instance.modality_lut.as_deref(),
    );
    let name = instance.source.name();
    Some(match codec {
        OwnCodec::Rle => {
            let bytes_per_sample = instance.pixel.bits_allocated as usize / 8;
            decode_rle(&bytes, bytes_per_sample, &lut, target).map_err(|source| Error::Rle {
                name,
                frame,
                source,
            })
        }
        OwnCodec::Jpeg12 => {
            decode_jpeg12(&bytes, instance, &lut, target).map_err(|source| Error::Jpeg12 {
                name,
                frame,
                source,
            })
        }
    })
}

/// One 12-bit JPEG frame through the modality LUT into `target`.
fn decode_jpeg12(
    bytes: &[u8],
    instance: &Instance,
    lut: &Lut,
    mut target: ArrayViewMut2<'_, f32>,
) -> std::result::Result<(), jpeg12::Jpeg12Error> {
    let (rows, columns) = (
        instance.pixel.rows as usize,
        instance.pixel.columns as usize,
    );
    let mut samples = vec![0u16; rows * columns];
    jpeg12::decode(bytes, rows, columns, &mut samples)?;
    match target.as_slice_mut() {
        Some(out) => lut.apply_all(out, samples.iter().copied()),
        None => {
            for (out, &sample) in target.iter_mut().zip(&samples) {
                *out = lut.apply(u32::from(sample));
            }
        }
    }
    Ok(())
}

/// One RLE frame through the modality LUT into `target`: one plane per byte of a sample
/// (most significant first), combined in a single pass.
fn decode_rle(
    fragment: &[u8],
    bytes_per_sample: usize,
    lut: &Lut,
    mut target: ArrayViewMut2<'_, f32>,
) -> std::result::Result<(), rle::RleError> {
    let pixels = target.len();
    let mut buffer = vec![0u8; pixels * bytes_per_sample];
    let mut planes: Vec<&mut [u8]> = buffer.chunks_exact_mut(pixels.max(1)).collect();
    rle::decode_planes(fragment, &mut planes)?;
    match (&planes[..], target.as_slice_mut()) {
        ([high, low], Some(out)) => {
            let samples = high.iter().zip(low.iter());
            lut.apply_all(out, samples.map(|(&h, &l)| u16::from_be_bytes([h, l])));
        }
        _ => {
            for (i, out) in target.iter_mut().enumerate() {
                let raw = planes
                    .iter()
                    .fold(0u32, |raw, plane| raw << 8 | u32::from(plane[i]));
                *out = lut.apply(raw);
            }
        }
    }
    Ok(())
}

/// Refuses sample layouts that cannot hold CT values.
fn check_format(instance: &Instance) -> Result<()> {
    let f = &instance.pixel;
    let supported = f.samples_per_pixel == 1
        && matches!(f.bits_allocated, 8 | 16 | 32)
        && (1..=f.bits_allocated).contains(&f.bits_stored);
    if supported {
        return Ok(());
    }
    Err(Error::UnsupportedPixels {
        name: instance.source.name(),
        samples_per_pixel: f.samples_per_pixel,
        bits_allocated: f.bits_allocated,
        bits_stored: f.bits_stored,
    })
}

/// One little-endian sample of 1, 2 or 4 bytes.
fn read_sample(bytes: &[u8]) -> u32 {
    match *bytes {
        [a] => a as u32,
        [a, b] => u16::from_le_bytes([a, b]) as u32,
        [a, b, c, d] => u32::from_le_bytes([a, b, c, d]),
        _ => unreachable!("samples are 1, 2 or 4 bytes (checked). This is a bug."),
    }
}

/// The modality LUT of one frame (its rescale, or the instance's Modality LUT Sequence,
/// which replaces it), with padding.
#[derive(Debug, Clone, Copy)]
struct Lut<'a> {
    bits_stored: u32,
    signed: bool,
    slope: f64,
    intercept: f64,
    padding: Option<(i64, i64)>,
    table: Option<&'a ModalityLut>,
}

impl<'a> Lut<'a> {
    fn new(format: &PixelFormat, frame: &FrameHeader, table: Option<&'a ModalityLut>) -> Self {
        let bits_stored = format.bits_stored as u32;
        let stored = |v: i32| interpret(v as u32, bits_stored, format.signed);
        let padding = format.padding_value.map(|value| {
            let a = stored(value);
            let b = format.padding_range_limit.map_or(a, stored);
            (a.min(b), a.max(b))
        });
        Lut {
            bits_stored,
            signed: format.signed,
            slope: frame.rescale_slope,
            intercept: frame.rescale_intercept,
            padding,
            table,
        }
    }

    #[inline]
    fn apply(&self, raw: u32) -> f32 {
        let value = interpret(raw, self.bits_stored, self.signed);
        match (self.padding, self.table) {
            (Some((low, high)), _) if (low..=high).contains(&value) => PADDING_HU,
            (_, Some(lut)) => {
                let last = lut.table.len() as i64 - 1;
                lut.table[(value - i64::from(lut.first)).clamp(0, last) as usize]
            }
            _ => (value as f64 * self.slope + self.intercept) as f32,
        }
    }

    /// `apply` over a whole frame of samples of at most 16 bits, with every per-sample
    /// choice (signedness, rescale or table, padding or not) made once, so that the common
    /// case (a rescale) compiles to a loop without branches that the compiler vectorises.
    /// The values are `apply`'s, bit for bit.
    fn apply_all(&self, out: &mut [f32], samples: impl Iterator<Item = u16>) {
        if self.table.is_some() || self.bits_stored > 16 {
            for (out, raw) in out.iter_mut().zip(samples) {
                *out = self.apply(u32::from(raw));
            }
        } else if self.signed {
            self.rescale::<true>(out, samples);
        } else {
            self.rescale::<false>(out, samples);
        }
    }

    #[inline(always)]
    fn rescale<const SIGNED: bool>(&self, out: &mut [f32], samples: impl Iterator<Item = u16>) {
        // BitsStored is 1..=16 here (checked by `check_format` and `apply_all`), so every
        // stored value fits an i32; the padding range, clamped to i32, keeps its meaning (an empty
        // range, low > high, when there is none).
        let shift = 32 - self.bits_stored.clamp(1, 16);
        let (low, high) = self.padding.map_or((1, 0), |(low, high)| {
            let clamp = |v: i64| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
            (clamp(low), clamp(high))
        });
        let (slope, intercept) = (self.slope, self.intercept);
        for (out, raw) in out.iter_mut().zip(samples) {
            let raw = u32::from(raw) << shift;
            let value = if SIGNED {
                (raw as i32) >> shift
            } else {
                (raw >> shift) as i32
            };
            let hu = (f64::from(value) * slope + intercept) as f32;
            *out = if value >= low && value <= high {
                PADDING_HU
            } else {
                hu
            };
        }
    }
}

/// The stored value of a raw sample: its low `bits` bits, two's complement when signed.
#[inline]
fn interpret(raw: u32, bits: u32, signed: bool) -> i64 {
    let masked = if bits >= 32 {
        raw as u64
    } else {
        (raw & ((1u32 << bits) - 1)) as u64
    };
    if signed && bits > 0 && masked >> (bits - 1) & 1 == 1 {
        masked as i64 - (1i64 << bits)
    } else {
        masked as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `decode` fuzz target: a 32 × 32 JPEG baseline slice whose JPEG frame
    /// header claims 64544 × 16160; jpeg-decoder allocated 1 GB and took half a minute.
    #[test]
    fn a_jpeg_frame_of_another_size_than_the_header_is_refused_before_decoding() {
        let bytes =
            include_bytes!("../../../../tests/data/fuzz/jpeg-frame-claiming-64544x16160.dcm");
        let (_, instance) =
            crate::ingest::read_header("slice.dcm", std::sync::Arc::from(&bytes[..])).unwrap();
        let mut hu = ndarray::Array2::<f32>::zeros((32, 32));
        let err = decode_into(&instance, vec![(0, hu.view_mut())]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame 0 of slice.dcm is a JPEG image of 64544×16160 where the header says 32×32"
        );
    }

    #[test]
    fn a_jpeg_frame_of_a_multi_frame_image_is_checked_in_the_fragments_the_offset_table_gives_it() {
        // Two frames of two fragments each, found through the basic offset table.
        let bytes = include_bytes!(
            "../../../../tests/data/fuzz/jpeg-two-frames-in-four-fragments-claiming-64544x16160.dcm"
        );
        let (_, instance) =
            crate::ingest::read_header("frames.dcm", std::sync::Arc::from(&bytes[..])).unwrap();
        let mut hu = ndarray::Array2::<f32>::zeros((32, 32));
        let err = decode_into(&instance, vec![(1, hu.view_mut())]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame 1 of frames.dcm is a JPEG image of 64544×16160 where the header says 32×32"
        );
    }

    #[test]
    fn a_jpeg_ls_frame_cut_short_is_refused_before_charls() {
        // A fuzzed near-lossless frame whose stream stops mid-scan: CharLS spent 6 s on it.
        let bytes = include_bytes!("../../../../tests/data/fuzz/jpeg-ls-frame-without-eoi.dcm");
        let (_, instance) =
            crate::ingest::read_header("slice.dcm", std::sync::Arc::from(&bytes[..])).unwrap();
        let mut hu = ndarray::Array2::<f32>::zeros((32, 32));
        let err = decode_into(&instance, vec![(0, hu.view_mut())]).unwrap_err();
        assert!(
            matches!(err, Error::JpegLsCutShort { frame: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn twelve_bit_signed_samples_sign_extend_from_bit_11() {
        assert_eq!(interpret(0x0800, 12, true), -2048);
        assert_eq!(interpret(0x07ff, 12, true), 2047);
        assert_eq!(interpret(0xf800, 12, true), -2048);
        assert_eq!(interpret(0xffff, 16, true), -1);
        assert_eq!(interpret(0xffff, 16, false), 65535);
        assert_eq!(interpret(0xf123, 12, false), 0x123);
    }

    fn format(signed: bool, padding: Option<i32>) -> PixelFormat {
        PixelFormat {
            rows: 1,
            columns: 1,
            number_of_frames: 1,
            samples_per_pixel: 1,
            chroma_422: false,
            bits_allocated: 16,
            bits_stored: 16,
            signed,
            padding_value: padding,
            padding_range_limit: None,
        }
    }

    fn frame(slope: f64, intercept: f64) -> FrameHeader {
        FrameHeader {
            index: 0,
            position: None,
            orientation: None,
            pixel_spacing: None,
            slice_thickness: None,
            rescale_slope: slope,
            rescale_intercept: intercept,
        }
    }

    #[test]
    fn rescale_maps_stored_values_to_hounsfield_units() {
        let lut = Lut::new(&format(false, None), &frame(1.0, -1024.0), None);
        assert_eq!(lut.apply(0), -1024.0);
        assert_eq!(lut.apply(1024), 0.0);
        let lut = Lut::new(&format(true, None), &frame(0.5, 10.0), None);
        assert_eq!(lut.apply(0xfffe), 9.0);
    }

    #[test]
    fn a_modality_lut_table_replaces_the_rescale_and_clamps_at_its_ends() {
        let table = ModalityLut {
            first: -2,
            table: vec![100.0, 200.0, 300.0],
        };
        let lut = Lut::new(&format(true, None), &frame(1.0, -1024.0), Some(&table));
        let stored = |v: i16| v as u16 as u32;
        assert_eq!(lut.apply(stored(-2)), 100.0);
        assert_eq!(lut.apply(stored(0)), 300.0);
        assert_eq!(lut.apply(stored(-100)), 100.0);
        assert_eq!(lut.apply(stored(100)), 300.0);
    }

    #[test]
    fn the_whole_frame_kernel_equals_apply_for_every_16_bit_sample() {
        let table = ModalityLut {
            first: -100,
            table: (0..300).map(|v| v as f32 * 1.5).collect(),
        };
        let raws: Vec<u16> = (0..=u16::MAX).collect();
        for signed in [false, true] {
            for bits in [1, 8, 12, 15, 16] {
                for padding in [None, Some(-2000), Some(0), Some(63536), Some(4095)] {
                    for (slope, intercept) in [(1.0, -1024.0), (0.5, 10.0), (1.0001, -1023.7)] {
                        let mut format = format(signed, padding);
                        format.bits_stored = bits;
                        format.padding_range_limit = padding.map(|p| p + 7);
                        let header = frame(slope, intercept);
                        for table in [None, Some(&table)] {
                            let lut = Lut::new(&format, &header, table);
                            let mut out = vec![0f32; raws.len()];
                            lut.apply_all(&mut out, raws.iter().copied());
                            for (&raw, &value) in raws.iter().zip(&out) {
                                let expected = lut.apply(u32::from(raw));
                                assert_eq!(
                                    value.to_bits(),
                                    expected.to_bits(),
                                    "raw {raw}, {lut:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn padding_written_as_unsigned_still_matches_signed_samples() {
        // PixelPaddingValue US 63536 in a signed image is the stored value -2000.
        let lut = Lut::new(&format(true, Some(63536)), &frame(1.0, 0.0), None);
        assert_eq!(lut.apply((-2000i16) as u16 as u32), PADDING_HU);
        assert_eq!(lut.apply(5), 5.0);
    }
}
