//! Presentation contexts: which SOP classes pulmo takes as an SCP (Verification, CT Image
//! Storage, Enhanced CT Image Storage) and in which transfer syntaxes (every one pulmo's
//! decoder reads), and the answer to each proposed context (PS3.8 9.3.3.2).
//!
//! Of the transfer syntaxes a context proposes, the first one pulmo reads is accepted: the
//! sender's order of preference wins, as it knows what its files are stored in.

use dicom_ul::pdu::{
    PresentationContextNegotiated, PresentationContextProposed, PresentationContextResultReason,
};

/// Verification (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
/// CT Image Storage.
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Enhanced CT Image Storage.
pub const ENHANCED_CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2.1";

/// The storage SOP classes pulmo accepts.
pub const STORAGE: [&str; 2] = [CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE];

/// Implicit VR Little Endian, the default transfer syntax every DICOM node reads.
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Every transfer syntax whose images pulmo decodes (`pulmo-dicom`'s `volume::decode`).
pub const TRANSFER_SYNTAXES: [&str; 16] = [
    IMPLICIT_VR_LE,
    EXPLICIT_VR_LE,
    "1.2.840.10008.1.2.1.99",  // Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",     // Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.5",     // RLE Lossless
    "1.2.840.10008.1.2.4.50",  // JPEG Baseline (process 1)
    "1.2.840.10008.1.2.4.51",  // JPEG Extended (processes 2 and 4)
    "1.2.840.10008.1.2.4.57",  // JPEG Lossless (process 14)
    "1.2.840.10008.1.2.4.70",  // JPEG Lossless, first-order prediction (SV1)
    "1.2.840.10008.1.2.4.80",  // JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  // JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  // JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  // JPEG 2000
    "1.2.840.10008.1.2.4.201", // HTJ2K Lossless
    "1.2.840.10008.1.2.4.202", // HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203", // HTJ2K
];

/// Verification's transfer syntaxes: it has no data set, so the uncompressed ones.
const VERIFICATION_SYNTAXES: [&str; 2] = [IMPLICIT_VR_LE, EXPLICIT_VR_LE];

/// A UID without the padding a PDU may carry.
pub fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

/// The transfer syntaxes pulmo accepts for `abstract_syntax`; none for another SOP class.
pub fn syntaxes_for(abstract_syntax: &str) -> &'static [&'static str] {
    match trim_uid(abstract_syntax) {
        VERIFICATION => &VERIFICATION_SYNTAXES,
        uid if STORAGE.contains(&uid) => &TRANSFER_SYNTAXES,
        _ => &[],
    }
}

/// The answer to each proposed presentation context, in the order proposed.
pub fn negotiate(proposed: &[PresentationContextProposed]) -> Vec<PresentationContextNegotiated> {
    proposed.iter().map(answer).collect()
}

fn answer(context: &PresentationContextProposed) -> PresentationContextNegotiated {
    let abstract_syntax = trim_uid(&context.abstract_syntax).to_owned();
    let accepted = syntaxes_for(&abstract_syntax);
    let chosen = context
        .transfer_syntaxes
        .iter()
        .map(|ts| trim_uid(ts))
        .find(|ts| accepted.contains(ts));
    let (reason, transfer_syntax) = match chosen {
        Some(ts) => (PresentationContextResultReason::Acceptance, ts.to_owned()),
        None if accepted.is_empty() => (
            PresentationContextResultReason::AbstractSyntaxNotSupported,
            IMPLICIT_VR_LE.to_owned(),
        ),
        None => (
            PresentationContextResultReason::TransferSyntaxesNotSupported,
            IMPLICIT_VR_LE.to_owned(),
        ),
    };
    PresentationContextNegotiated {
        id: context.id,
        reason,
        transfer_syntax,
        abstract_syntax,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposed(id: u8, sop: &str, syntaxes: &[&str]) -> PresentationContextProposed {
        PresentationContextProposed {
            id,
            abstract_syntax: sop.to_owned(),
            transfer_syntaxes: syntaxes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn ct_storage_takes_the_first_decodable_syntax_in_the_senders_order() {
        let answers = negotiate(&[
            proposed(
                1,
                "1.2.840.10008.5.1.4.1.1.2\0",
                &["1.9.9", "1.2.840.10008.1.2.4.70"],
            ),
            proposed(
                3,
                ENHANCED_CT_IMAGE_STORAGE,
                &[EXPLICIT_VR_LE, IMPLICIT_VR_LE],
            ),
        ]);
        assert_eq!(
            answers[0].reason,
            PresentationContextResultReason::Acceptance
        );
        assert_eq!(answers[0].transfer_syntax, "1.2.840.10008.1.2.4.70");
        assert_eq!(answers[0].abstract_syntax, CT_IMAGE_STORAGE);
        assert_eq!(answers[1].transfer_syntax, EXPLICIT_VR_LE);
        assert_eq!(answers[1].id, 3);
    }

    #[test]
    fn other_sop_classes_and_unknown_syntaxes_are_rejected() {
        let mr = "1.2.840.10008.5.1.4.1.1.4";
        let answers = negotiate(&[
            proposed(1, mr, &[IMPLICIT_VR_LE]),
            proposed(3, CT_IMAGE_STORAGE, &["1.2.3.4"]),
            proposed(5, VERIFICATION, &["1.2.840.10008.1.2.4.70", IMPLICIT_VR_LE]),
        ]);
        let reasons: Vec<_> = answers.iter().map(|a| a.reason.clone()).collect();
        assert_eq!(
            reasons,
            [
                PresentationContextResultReason::AbstractSyntaxNotSupported,
                PresentationContextResultReason::TransferSyntaxesNotSupported,
                PresentationContextResultReason::Acceptance,
            ]
        );
        assert_eq!(answers[2].transfer_syntax, IMPLICIT_VR_LE);
    }
}
