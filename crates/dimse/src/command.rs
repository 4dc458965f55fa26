//! DIMSE command sets (PS3.7 9.3 and E): group 0000 in Implicit VR Little Endian, read
//! and written with dicom-object. Only what C-ECHO and C-STORE need: the command field,
//! message ids, the affected SOP class and instance, the data set type and the status.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// Command Field values.
pub mod field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
}

/// Command Data Set Type: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;
/// Command Data Set Type pulmo writes when a data set follows (any other value means one).
const DATA_SET: u16 = 0x0000;

/// The most bytes a command set may have: a C-STORE-RQ is a few hundred.
pub const MAX_COMMAND_BYTES: usize = 64 << 10;

/// Status codes pulmo answers (PS3.4 B.2.3, PS3.7 C).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources (disk, queue).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class.
    pub const DOES_NOT_MATCH: u16 = 0xA900;
    /// Error: cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Refused: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: processing failure.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
}

/// Why a command set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the command set is not Implicit VR Little Endian group 0000")]
    Read(#[source] dicom_object::ReadError),
    #[error("the command set has no {0}")]
    Missing(&'static str),
    #[error("the command set is longer than {MAX_COMMAND_BYTES} bytes")]
    TooLong,
    #[error(
        "command set element ({group:04X},{element:04X}) at byte {at} claims {length} bytes \
         where {left} are left"
    )]
    Length {
        group: u16,
        element: u16,
        at: usize,
        length: u32,
        left: usize,
    },
    #[error("the command set has element ({group:04X},{element:04X}) at byte {at}: only group 0000 belongs there")]
    Group { group: u16, element: u16, at: usize },
    #[error("command set element ({group:04X},{element:04X}) at byte {at} is {vr} of {length} bytes, not a whole number of values")]
    Numbers {
        group: u16,
        element: u16,
        at: usize,
        vr: &'static str,
        length: u32,
    },
}

/// One command, as far as pulmo reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub field: u16,
    /// The request's Message ID, or the one a response answers.
    pub message_id: u16,
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    /// Whether a data set follows.
    pub has_data_set: bool,
    /// A response's status.
    pub status: Option<u16>,
    pub error_comment: Option<String>,
}

/// Reads a command set.
pub fn read(bytes: &[u8]) -> Result<Command, CommandError> {
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(CommandError::TooLong);
    }
    check_lengths(bytes)?;
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let set = InMemDicomObject::read_dataset_with_ts(bytes, &ts).map_err(CommandError::Read)?;
    let int = |tag| set.element(tag).ok().and_then(|e| e.to_int::<u16>().ok());
    let text = |tag| {
        let value = set.element(tag).ok()?.to_str().ok()?;
        Some(value.trim_end_matches(['\0', ' ']).to_owned())
    };
    let field = int(tags::COMMAND_FIELD).ok_or(CommandError::Missing("Command Field"))?;
    let message_id = int(tags::MESSAGE_ID)
        .or_else(|| int(tags::MESSAGE_ID_BEING_RESPONDED_TO))
        .ok_or(CommandError::Missing("Message ID"))?;
    let data_set_type =
        int(tags::COMMAND_DATA_SET_TYPE).ok_or(CommandError::Missing("Command Data Set Type"))?;
    Ok(Command {
        field,
        message_id,
        sop_class_uid: text(tags::AFFECTED_SOP_CLASS_UID),
        sop_instance_uid: text(tags::AFFECTED_SOP_INSTANCE_UID),
        has_data_set: data_set_type != NO_DATA_SET,
        status: int(tags::STATUS),
        error_comment: text(tags::ERROR_COMMENT),
    })
}

/// Checks that every element of a command set (Implicit VR Little Endian: tag, then a 32-bit
/// length) is of group 0000 and fits in what is left of it, before dicom-parser, which
/// reserves whatever an element claims (a 1 KB association made it reserve 2 GiB; found by
/// fuzzing). A command set has no sequences and no items (an item header is read as the
/// start of nested elements, which this walk would not follow), so an undefined length is
/// refused with the rest.
fn check_lengths(bytes: &[u8]) -> Result<(), CommandError> {
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + 8) else {
            // A few bytes that make no element header: dicom-parser says so.
            return Ok(());
        };
        let word = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
        if word(0) != 0x0000 {
            return Err(CommandError::Group {
                group: word(0),
                element: word(2),
                at,
            });
        }
        let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        // dicom-parser reads binary numbers whole and leaves a rest byte to the next tag,
        // out of step with this walk (found by fuzzing: a US of 57 bytes, then a length of
        // 3.6 GB read one byte early).
        let vr = StandardDataDictionary
            .by_tag(Tag(word(0), word(2)))
            .map_or(VR::UN, |entry| entry.vr().relaxed());
        if number_size(vr).is_some_and(|size| length as usize % size != 0) {
            return Err(CommandError::Numbers {
                group: word(0),
                element: word(2),
                at,
                vr: vr.to_string(),
                length,
            });
        }
        let left = bytes.len() - at - 8;
        if length as usize > left {
            return Err(CommandError::Length {
                group: word(0),
                element: word(2),
                at,
                length,
                left,
            });
        }
        at += 8 + length as usize;
    }
    Ok(())
}

/// The size of one value of a binary number VR; `None` for the others.
fn number_size(vr: VR) -> Option<usize> {
    match vr {
        VR::US | VR::SS | VR::OW => Some(2),
        VR::UL | VR::SL | VR::FL | VR::AT | VR::OL | VR::OF => Some(4),
        VR::FD | VR::SV | VR::UV | VR::OD | VR::OV => Some(8),
        _ => None,
    }
}

/// A C-STORE-RQ (medium priority) for one instance; its data set follows.
pub fn store_request(message_id: u16, sop_class_uid: &str, sop_instance_uid: &str) -> Vec<u8> {
    encode(vec![
        uid(tags::AFFECTED_SOP_CLASS_UID, sop_class_uid),
        us(tags::COMMAND_FIELD, field::C_STORE_RQ),
        us(tags::MESSAGE_ID, message_id),
        us(tags::PRIORITY, 0),
        us(tags::COMMAND_DATA_SET_TYPE, DATA_SET),
        uid(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance_uid),
    ])
}

/// A C-ECHO-RQ.
pub fn echo_request(message_id: u16) -> Vec<u8> {
    encode(vec![
        uid(tags::AFFECTED_SOP_CLASS_UID, crate::contexts::VERIFICATION),
        us(tags::COMMAND_FIELD, field::C_ECHO_RQ),
        us(tags::MESSAGE_ID, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
    ])
}

/// The response to `request` (C-ECHO-RSP or C-STORE-RSP) with `status` and, for a
/// failure, a comment (cut to the 64 characters Error Comment holds).
pub fn response(request: &Command, status: u16, comment: Option<&str>) -> Vec<u8> {
    let mut elements = vec![
        us(tags::COMMAND_FIELD, request.field | 0x8000),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, request.message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, status),
    ];
    if let Some(class) = &request.sop_class_uid {
        elements.push(uid(tags::AFFECTED_SOP_CLASS_UID, class));
    }
    if let Some(instance) = &request.sop_instance_uid {
        elements.push(uid(tags::AFFECTED_SOP_INSTANCE_UID, instance));
    }
    if let Some(comment) = comment.filter(|_| status != status::SUCCESS) {
        elements.push(text(tags::ERROR_COMMENT, VR::LO, comment, 64));
    }
    encode(elements)
}

type Element = DataElement<InMemDicomObject>;

fn us(tag: Tag, value: u16) -> Element {
    DataElement::new(tag, VR::US, PrimitiveValue::from(value))
}

/// A UID, padded with NUL to an even length.
fn uid(tag: Tag, value: &str) -> Element {
    let mut value = value.to_owned();
    if value.len() % 2 == 1 {
        value.push('\0');
    }
    DataElement::new(tag, VR::UI, PrimitiveValue::from(value))
}

/// Text of at most `max` characters of printable ASCII, padded with a space to an even length.
fn text(tag: Tag, vr: VR, value: &str, max: usize) -> Element {
    let mut value: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(max)
        .collect();
    if value.len() % 2 == 1 {
        value.push(' ');
    }
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

/// The command set's bytes, Command Group Length first.
fn encode(elements: Vec<Element>) -> Vec<u8> {
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let write = |set: &InMemDicomObject| {
        let mut bytes = Vec::with_capacity(256);
        set.write_dataset_with_ts(&mut bytes, &ts)
            .expect("a command set of fixed elements always encodes. This is a bug.");
        bytes
    };
    let mut set = InMemDicomObject::from_element_iter(elements);
    let length = write(&set).len() as u32;
    set.put(DataElement::new(
        tags::COMMAND_GROUP_LENGTH,
        VR::UL,
        PrimitiveValue::from(length),
    ));
    write(&set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_element_claiming_more_than_is_left_is_refused_before_the_parser() {
        let mut bytes = echo_request(1);
        let good = bytes.len();
        // (0000,0800) US claiming 2 GiB: dicom-parser would reserve it.
        bytes.extend_from_slice(&[0x00, 0x00, 0x00, 0x08, 0xF0, 0xFF, 0xFF, 0x7F, 1, 0]);
        let err = read(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                CommandError::Length {
                    group: 0,
                    element: 0x0800,
                    length: 0x7FFF_FFF0,
                    left: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(check_lengths(&bytes[..good]).ok(), Some(()));
        // Priority (US) of 57 bytes: the parser reads 28 numbers and the next tag a byte
        // early.
        let mut odd = echo_request(1);
        odd.extend_from_slice(&[0x00, 0x00, 0x00, 0x07, 57, 0, 0, 0]);
        odd.extend_from_slice(&[0xD6; 64]);
        let err = read(&odd).unwrap_err();
        assert!(
            matches!(
                err,
                CommandError::Numbers {
                    element: 0x0700,
                    vr: "US",
                    length: 57,
                    ..
                }
            ),
            "{err}"
        );
        // An item header (FFFE,E000), which the parser would step into.
        let mut item = echo_request(1);
        item.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 2, 0, 0, 0, 1, 0]);
        let err = read(&item).unwrap_err();
        assert!(
            matches!(
                err,
                CommandError::Group {
                    group: 0xFFFE,
                    element: 0xE000,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_store_request_reads_back_and_its_response_answers_it() {
        let bytes = store_request(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3");
        let request = read(&bytes).unwrap();
        assert_eq!(request.field, field::C_STORE_RQ);
        assert_eq!(request.message_id, 7);
        assert_eq!(request.sop_instance_uid.as_deref(), Some("1.2.3"));
        assert!(request.has_data_set);
        let answer = read(&response(&request, 0xA700, Some("disk full\n"))).unwrap();
        assert_eq!(answer.field, field::C_STORE_RSP);
        assert_eq!(answer.message_id, 7);
        assert_eq!(answer.status, Some(0xA700));
        assert_eq!(answer.error_comment.as_deref(), Some("disk full?"));
        assert!(!answer.has_data_set);
        assert_eq!(answer.sop_class_uid, request.sop_class_uid);
    }

    #[test]
    fn the_group_length_counts_the_bytes_after_it() {
        let bytes = store_request(1, "1.2", "1.2.3");
        let length = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(bytes[..4], [0, 0, 0, 0]);
        assert_eq!(length, bytes.len() - 12);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(read(b"\x00\x00\x00\x00\x04\x00\x00\x00").is_err());
        assert!(read(&[0xff; 40]).is_err());
        assert!(matches!(read(&[]), Err(CommandError::Missing(_))));
    }
}
