//! DICOM networking (DIMSE over the DICOM upper layer, PS3.7 and PS3.8) for pulmo: who may
//! associate ([`peers`]), which presentation contexts are accepted ([`contexts`]), the
//! command sets of C-ECHO and C-STORE ([`command`]), the Storage and Verification SCP that
//! runs one association ([`scp`]), and the Storage SCU that pushes results ([`scu`]).
//!
//! PDUs are read and written by dicom-rs's `dicom-ul`; this crate decides what to answer.
//! It knows nothing of pulmo's spool, index or pipeline: the SCP hands each received
//! instance, written as a Part 10 file, to a [`scp::Storage`] that the caller implements
//! (the root's `transport::dimse` admits it into the service), and answers the status
//! that it returns. It links no libtorch, so a fuzz target can call [`fuzz::association`].

pub mod command;
pub mod contexts;
pub mod fuzz;
pub mod peers;
pub mod scp;
pub mod scu;

pub use peers::{Peer, Peers, PeersError, Policy, Rejection};
pub use scp::{Config, Ended, Outcome, Received, Status, Storage};

/// The implementation class UID pulmo sends in associations and file meta headers
/// (the same `2.25` UID as its result files).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.216130618470296398454458339328069935611";
/// The implementation version name, at most 16 characters.
pub const IMPLEMENTATION_VERSION_NAME: &str = "PULMO";

/// Whether `text` is a valid AE title: 1 to 16 characters of printable ASCII without a
/// backslash, not all spaces (PS3.5 6.2, AE).
pub fn is_ae_title(text: &str) -> bool {
    let trimmed = text.trim();
    !trimmed.is_empty()
        && text.len() <= 16
        && text
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
}

/// What the crate's tests share: an SCU's side of an association, as bytes.
#[cfg(test)]
pub(crate) mod testing {
    use dicom_ul::pdu::{AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem};

    /// An A-ASSOCIATE-RQ from `SCU` to `called` with one presentation context (id 1).
    pub fn request(called: &str, abstract_syntax: &str, transfer_syntax: &str) -> Pdu {
        Pdu::AssociationRQ(AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "SCU".into(),
            called_ae_title: called.into(),
            application_context_name: "1.2.840.10008.3.1.1.1".into(),
            presentation_contexts: vec![PresentationContextProposed {
                id: 1,
                abstract_syntax: abstract_syntax.into(),
                transfer_syntaxes: vec![transfer_syntax.into()],
            }],
            user_variables: vec![UserVariableItem::MaxLength(16384)],
        })
    }

    /// The PDUs, written one after the other.
    pub fn bytes_of(pdus: &[Pdu]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for pdu in pdus {
            dicom_ul::write_pdu(&mut bytes, pdu).unwrap();
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_titles_are_short_printable_ascii() {
        assert!(is_ae_title("PULMO"));
        assert!(is_ae_title("ORTHANC 1"));
        assert!(!is_ae_title(""));
        assert!(!is_ae_title("    "));
        assert!(!is_ae_title("SEVENTEEN_CHARS_X"));
        assert!(!is_ae_title("A\\B"));
        assert!(!is_ae_title("É"));
    }
}
