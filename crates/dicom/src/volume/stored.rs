//! Whether an instance's Pixel Data is all there, from element headers alone.
//!
//! A receiver acknowledges an instance only when its pixels can be decoded later, so a
//! truncated file is refused at the door, not found out when its series fails. The check
//! reads element headers and skips values ([`lengths`](super::lengths)), so it costs a few
//! reads whatever the instance's size. Native Pixel Data must hold every frame (a longer
//! value is accepted and its excess ignored, as dcmtk's `dcm2pnm` does); encapsulated Pixel
//! Data must hold at least one fragment after its basic offset table and end with its
//! sequence delimiter inside the file. Whether the fragments decode is for
//! [`assemble`](super::assemble) to find out.

use std::fmt;
use std::io::Cursor;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use super::lengths::{LengthError, PixelData, ITEM};
use super::part10::{self, OpenError};
use super::series::{Instance, PixelFormat};

/// Why an instance's Pixel Data cannot be what its header says.
#[derive(Debug, thiserror::Error)]
pub enum PixelDataError {
    #[error("Pixel Data holds {len} bytes where {} = {needed} are needed", Needed(.format))]
    Short {
        len: u32,
        needed: u64,
        format: PixelFormat,
    },
    #[error("Pixel Data claims {claimed} bytes, but the file ends {left} bytes after its header")]
    PastEnd { claimed: u32, left: u64 },
    #[error(
        "a Pixel Data fragment at byte {at} claims {claimed} bytes, but the file ends {left} \
         bytes after its header"
    )]
    FragmentPastEnd { at: u64, claimed: u32, left: u64 },
    #[error("Pixel Data's fragments end before their sequence delimiter")]
    Undelimited,
    #[error("Pixel Data holds no fragment after its basic offset table")]
    NoFragments,
    #[error("Pixel Data has a defined length, but transfer syntax {0} stores it in fragments")]
    NotEncapsulated(String),
    #[error("Pixel Data is in fragments, but transfer syntax {0} stores it unencapsulated")]
    Encapsulated(String),
    #[error("there is no Pixel Data")]
    Absent,
    #[error("the file ends inside the element header at byte {0}, before Pixel Data")]
    Cut(u64),
    #[error(transparent)]
    Open(OpenError),
}

/// A value running past the end of the file is, once the header before Pixel Data has been
/// read, Pixel Data's own or one of its fragments.
impl From<OpenError> for PixelDataError {
    fn from(err: OpenError) -> Self {
        match err {
            OpenError::Length(LengthError::TooLong {
                tag,
                at,
                claimed,
                left,
            }) if tag == ITEM => PixelDataError::FragmentPastEnd { at, claimed, left },
            OpenError::Length(LengthError::TooLong {
                tag, claimed, left, ..
            }) if tag == tags::PIXEL_DATA => PixelDataError::PastEnd { claimed, left },
            err => PixelDataError::Open(err),
        }
    }
}

/// Checks the Pixel Data of the file at `path` against `instance`, its header as read (so
/// every length before Pixel Data is known to fit).
///
/// A data set that cannot be walked (a deflated one, or one the walk leaves to the parser)
/// passes: decoding will judge it.
pub fn check_pixel_data(path: &Path, instance: &Instance) -> Result<(), PixelDataError> {
    match part10::pixel_data_path(path)? {
        Some(found) => check(found, instance),
        None => Ok(()),
    }
}

/// [`check_pixel_data`] for an instance held in memory as `bytes`.
pub fn check_pixel_data_bytes(bytes: &[u8], instance: &Instance) -> Result<(), PixelDataError> {
    match part10::pixel_data(Cursor::new(bytes))? {
        Some(found) => check(found, instance),
        None => Ok(()),
    }
}

/// Checks what the walk found against the header's format and transfer syntax.
fn check(found: PixelData, instance: &Instance) -> Result<(), PixelDataError> {
    let syntax = TransferSyntaxRegistry.get(&instance.transfer_syntax_uid);
    let encapsulated = syntax.map(|ts| ts.is_encapsulated_pixel_data());
    let name = || syntax.map_or_else(String::new, |ts| ts.name().to_owned());
    match found {
        PixelData::Native { .. } if encapsulated == Some(true) => {
            Err(PixelDataError::NotEncapsulated(name()))
        }
        PixelData::Native { len } => {
            let needed = needed_bytes(&instance.pixel);
            // An odd length is padded to an even one, so `needed + 1` is as good.
            if u64::from(len) < needed {
                return Err(PixelDataError::Short {
                    len,
                    needed,
                    format: instance.pixel,
                });
            }
            Ok(())
        }
        PixelData::Encapsulated { .. } if encapsulated == Some(false) => {
            Err(PixelDataError::Encapsulated(name()))
        }
        PixelData::Encapsulated {
            delimited: false, ..
        } => Err(PixelDataError::Undelimited),
        // The first item is the basic offset table (perhaps empty), not a fragment.
        PixelData::Encapsulated { items, .. } if items < 2 => Err(PixelDataError::NoFragments),
        PixelData::Encapsulated { .. } => Ok(()),
        PixelData::Absent => Err(PixelDataError::Absent),
        PixelData::Cut { at } => Err(PixelDataError::Cut(at)),
    }
}

/// The bytes native Pixel Data of `format` takes: every sample of every frame, bits packed
/// (so BitsAllocated 1 takes an eighth of a byte a sample).
fn needed_bytes(format: &PixelFormat) -> u64 {
    let bits = u64::from(format.rows)
        * u64::from(format.columns)
        * u64::from(stored_samples(format))
        * u64::from(format.number_of_frames.max(1))
        * u64::from(format.bits_allocated);
    bits.div_ceil(8)
}

/// Samples stored per pixel: two for three samples whose chroma is shared by two pixels.
fn stored_samples(format: &PixelFormat) -> u16 {
    if format.chroma_422 && format.samples_per_pixel == 3 {
        2
    } else {
        format.samples_per_pixel
    }
}

/// `512×512×1×16 bits`, with `×N frames` when there are several.
struct Needed<'a>(&'a PixelFormat);

impl fmt::Display for Needed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        write!(
            f,
            "{}×{}×{}×{} bits",
            p.rows,
            p.columns,
            stored_samples(p),
            p.bits_allocated
        )?;
        if p.number_of_frames > 1 {
            write!(f, "×{} frames", p.number_of_frames)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::uids;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    use dicom_transfer_syntax_registry::entries;

    use super::*;

    /// A CT image of `rows`×64 pixels of `bits` bits with the given Pixel Data.
    fn ct(rows: u16, bits: u16, pixels: DataElement<InMemDicomObject>) -> InMemDicomObject {
        let text = |tag, vr, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
        let number = |tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
        InMemDicomObject::from_element_iter([
            text(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
            text(tags::SOP_INSTANCE_UID, VR::UI, "1.2.826.0.1.3680043.9.7.1"),
            text(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.826.0.1.3680043.9.7"),
            text(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                "1.2.826.0.1.3680043.9.7.2",
            ),
            text(tags::MODALITY, VR::CS, "CT"),
            number(tags::SAMPLES_PER_PIXEL, 1),
            text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            number(tags::ROWS, rows),
            number(tags::COLUMNS, 64),
            number(tags::BITS_ALLOCATED, bits),
            number(tags::BITS_STORED, bits),
            number(tags::HIGH_BIT, bits - 1),
            number(tags::PIXEL_REPRESENTATION, 0),
            pixels,
        ])
    }

    fn native(len: usize) -> DataElement<InMemDicomObject> {
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(vec![7u8; len]),
        )
    }

    fn fragments(fragments: Vec<Vec<u8>>) -> DataElement<InMemDicomObject> {
        let sequence = PixelFragmentSequence::new(Vec::<u32>::new(), fragments);
        DataElement::new(tags::PIXEL_DATA, VR::OB, sequence)
    }

    /// `obj` as a Part 10 file in `syntax`.
    fn part10(obj: InMemDicomObject, syntax: &str) -> Vec<u8> {
        let file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(syntax))
            .unwrap();
        let mut bytes = Vec::new();
        file.write_all(&mut bytes).unwrap();
        bytes
    }

    /// Writes `bytes` to a file, reads its header as admission does, and checks its pixels.
    fn check_bytes(bytes: &[u8]) -> Result<(), PixelDataError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.dcm");
        std::fs::write(&path, bytes).unwrap();
        let (_, instance) = crate::ingest::read_file_header("part 1", &path).unwrap();
        check_pixel_data(&path, &instance)
    }

    fn message(bytes: &[u8]) -> String {
        check_bytes(bytes).unwrap_err().to_string()
    }

    const EXPLICIT: &str = uids::EXPLICIT_VR_LITTLE_ENDIAN;
    const RLE: &str = uids::RLE_LOSSLESS;

    #[test]
    fn whole_native_pixel_data_passes_and_longer_is_accepted() {
        check_bytes(&part10(ct(64, 16, native(64 * 64 * 2)), EXPLICIT)).unwrap();
        // More than the frames need: dcmtk's dcm2pnm renders it as if it were exact.
        check_bytes(&part10(ct(64, 16, native(64 * 64 * 2 + 512)), EXPLICIT)).unwrap();
    }

    #[test]
    fn short_native_pixel_data_is_refused_with_what_it_needs() {
        let bytes = part10(ct(64, 16, native(100)), EXPLICIT);
        assert_eq!(
            message(&bytes),
            "Pixel Data holds 100 bytes where 64×64×1×16 bits = 8192 are needed"
        );
    }

    #[test]
    fn a_cut_native_file_is_refused() {
        let mut bytes = part10(ct(64, 16, native(64 * 64 * 2)), EXPLICIT);
        bytes.truncate(bytes.len() * 7 / 10);
        let err = check_bytes(&bytes).unwrap_err();
        assert!(
            matches!(err, PixelDataError::PastEnd { claimed: 8192, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("Pixel Data claims 8192 bytes, but the file ends"),
            "{err}"
        );
    }

    #[test]
    fn a_length_of_nearly_4_gib_is_refused_without_reading_it() {
        let mut bytes = part10(ct(64, 16, native(64 * 64 * 2)), EXPLICIT);
        let header = [0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0];
        let at = bytes.windows(8).position(|w| w == header).unwrap();
        bytes[at + 8..at + 12].copy_from_slice(&0xFFF0_0000u32.to_le_bytes());
        assert_eq!(
            message(&bytes),
            "Pixel Data claims 4293918720 bytes, but the file ends 8192 bytes after its header"
        );
    }

    #[test]
    fn packed_bits_need_an_eighth_of_a_byte_a_pixel_rounded_up() {
        // 3×64 one-bit pixels: 24 bytes.
        check_bytes(&part10(ct(3, 1, native(24)), EXPLICIT)).unwrap();
        assert_eq!(
            message(&part10(ct(3, 1, native(22)), EXPLICIT)),
            "Pixel Data holds 22 bytes where 3×64×1×1 bits = 24 are needed"
        );
    }

    #[test]
    fn ybr_full_422_stores_two_samples_a_pixel() {
        let mut obj = ct(4, 8, native(4 * 64 * 2));
        obj.put(DataElement::new(
            tags::SAMPLES_PER_PIXEL,
            VR::US,
            PrimitiveValue::from(3u16),
        ));
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("YBR_FULL_422"),
        ));
        check_bytes(&part10(obj.clone(), EXPLICIT)).unwrap();
        obj.put(native(4 * 64 * 2 - 2));
        assert_eq!(
            message(&part10(obj, EXPLICIT)),
            "Pixel Data holds 510 bytes where 4×64×2×8 bits = 512 are needed"
        );
    }

    #[test]
    fn a_bare_data_set_is_checked_too() {
        let bare = |len| {
            let mut bytes = Vec::new();
            let syntax = entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
            let obj = ct(64, 16, native(len));
            obj.write_dataset_with_ts(&mut bytes, &syntax).unwrap();
            bytes
        };
        check_bytes(&bare(64 * 64 * 2)).unwrap();
        assert_eq!(
            message(&bare(100)),
            "Pixel Data holds 100 bytes where 64×64×1×16 bits = 8192 are needed"
        );
    }

    #[test]
    fn whole_fragments_pass() {
        let bytes = part10(ct(64, 16, fragments(vec![vec![1; 100], vec![2; 60]])), RLE);
        check_bytes(&bytes).unwrap();
        let sample = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../sample-dicom/phantom-4242/CT0001.dcm"
        );
        check_bytes(&std::fs::read(sample).unwrap()).unwrap();
    }

    #[test]
    fn fragments_cut_short_are_refused() {
        let whole = part10(ct(64, 16, fragments(vec![vec![1; 1000]])), RLE);
        let mut cut = whole.clone();
        cut.truncate(whole.len() * 7 / 10);
        let err = check_bytes(&cut).unwrap_err();
        assert!(
            matches!(err, PixelDataError::FragmentPastEnd { claimed: 1000, .. }),
            "{err}"
        );
        // All the fragments there, but not the delimiter after them.
        let undelimited = &whole[..whole.len() - 8];
        assert_eq!(
            message(undelimited),
            "Pixel Data's fragments end before their sequence delimiter"
        );
    }

    #[test]
    fn an_offset_table_without_fragments_is_refused() {
        let bytes = part10(ct(64, 16, fragments(Vec::new())), RLE);
        assert_eq!(
            message(&bytes),
            "Pixel Data holds no fragment after its basic offset table"
        );
    }

    #[test]
    fn pixel_data_must_be_stored_as_the_syntax_says() {
        let fragments = part10(ct(64, 16, fragments(vec![vec![1; 100]])), EXPLICIT);
        assert_eq!(
            message(&fragments),
            "Pixel Data is in fragments, but transfer syntax Explicit VR Little Endian stores \
             it unencapsulated"
        );
        let native = part10(ct(64, 16, native(64 * 64 * 2)), RLE);
        assert_eq!(
            message(&native),
            "Pixel Data has a defined length, but transfer syntax RLE Lossless stores it in \
             fragments"
        );
    }

    #[test]
    fn a_file_cut_inside_the_pixel_data_header_is_refused() {
        let whole = part10(ct(64, 16, native(64 * 64 * 2)), EXPLICIT);
        let header = [0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0];
        let at = whole.windows(8).position(|w| w == header).unwrap();
        for cut in [2, 4, 6, 10] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("part.dcm");
            std::fs::write(&path, &whole[..at + cut]).unwrap();
            // Either the header read (the parser stops at Pixel Data's tag) or the check.
            if let Ok((_, instance)) = crate::ingest::read_file_header("part 1", &path) {
                let err = check_pixel_data(&path, &instance).unwrap_err();
                assert!(
                    matches!(err, PixelDataError::Cut(found) if found == at as u64),
                    "cut {cut}: {err}"
                );
            }
        }
    }

    #[test]
    fn an_image_without_pixel_data_is_refused() {
        let mut obj = ct(64, 16, native(2));
        obj.remove_element(tags::PIXEL_DATA);
        assert_eq!(message(&part10(obj, EXPLICIT)), "there is no Pixel Data");
    }
}
