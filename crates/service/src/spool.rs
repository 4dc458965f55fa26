//! Admitting a received instance: check its header, then move it into the spool and
//! index it, in an order that survives a crash at any point.
//!
//! The part is already in `tmp/`, written and synced by the transport. Admission renames
//! it to `spool/<study>/<series>/<sop>.dcm`, syncs the directory, and commits the index
//! row; only then may the transport acknowledge it. A crash before the commit leaves at
//! most an unindexed file, which the sender's retry replaces.

use std::path::{Path, PathBuf};

use super::store::{Attributes, Filed, InstanceRow};
use super::{Lane, Service};
use pulmo_core::pipeline::error_chain;
use pulmo_dicom::ingest::{self, SelectionRules};
use pulmo_dicom::volume::Instance;

/// Why an instance was refused, as DICOM failure reasons (PS3.18 / PS3.4 status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 0xC000: not a DICOM instance, or one that cannot be read.
    CannotUnderstand,
    /// 0x0122: a SOP class pulmo does not store (pulmo takes CT images only).
    SopClassNotSupported,
    /// 0xA900: the instance contradicts the request (another study) or the standard (UIDs).
    DoesNotMatch,
    /// 0xA700: the server could not write it.
    OutOfResources,
}

impl Refusal {
    /// The status code as metrics label it.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::CannotUnderstand => "0xC000",
            Refusal::SopClassNotSupported => "0x0122",
            Refusal::DoesNotMatch => "0xA900",
            Refusal::OutOfResources => "0xA700",
        }
    }

    /// The DICOM status code.
    pub fn code(self) -> u16 {
        match self {
            Refusal::CannotUnderstand => 0xC000,
            Refusal::SopClassNotSupported => 0x0122,
            Refusal::DoesNotMatch => 0xA900,
            Refusal::OutOfResources => 0xA700,
        }
    }
}

/// An instance that was not stored, with what is known of it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub refusal: Refusal,
    /// A sentence naming the part and what is wrong with it.
    pub reason: String,
}

/// A stored instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// False when this SOP instance was already stored (a re-send).
    pub new: bool,
    pub bytes: u64,
}

pub(super) fn admit(
    service: &Service,
    tmp: &Path,
    name: &str,
    study: Option<&str>,
    lane: Lane,
) -> Result<Accepted, Refused> {
    let result = check_and_store(service, tmp, name, study, lane);
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

fn check_and_store(
    service: &Service,
    tmp: &Path,
    name: &str,
    study: Option<&str>,
    lane: Lane,
) -> Result<Accepted, Refused> {
    let refuse = |refusal, reason: String| Refused {
        sop_class_uid: None,
        sop_instance_uid: None,
        refusal,
        reason,
    };
    // Header only, up to Pixel Data: a large multi-frame part is never read whole.
    let (key, instance) = ingest::read_file_header(name, tmp)
        .map_err(|err| refuse(Refusal::CannotUnderstand, error_chain(&err)))?;
    let refuse = |refusal, reason: String| refused(&instance, refusal, format!("{name}: {reason}"));
    check_sop_class(
        &service.config.rules,
        &key.modality,
        &instance.sop_class_uid,
    )
    .map_err(|reason| refuse(Refusal::SopClassNotSupported, reason))?;
    for uid in [
        &key.study_instance_uid,
        &key.series_instance_uid,
        &instance.sop_instance_uid,
    ] {
        if !is_uid(uid) {
            return Err(refuse(
                Refusal::DoesNotMatch,
                format!("{uid:?} is not a valid UID"),
            ));
        }
    }
    if let Some(study) = study.filter(|s| *s != key.study_instance_uid) {
        let reason = format!(
            "belongs to study {} but was sent to study {study}",
            key.study_instance_uid
        );
        return Err(refuse(Refusal::DoesNotMatch, reason));
    }
    // Pixel Data's element headers (its value skipped): a part cut short, or one claiming
    // more than it holds, is refused now rather than failing its whole series later.
    ingest::check_pixel_data(name, tmp, &instance)
        .map_err(|err| refused(&instance, Refusal::CannotUnderstand, error_chain(&err)))?;
    let clash = |study_uid: &str, series_uid: &str| {
        refuse(
            Refusal::DoesNotMatch,
            format!(
                "SOP Instance UID {} is already stored in study {study_uid}, series {series_uid}; \
                 an instance cannot move to another study or series (give it a new UID)",
                instance.sop_instance_uid
            ),
        )
    };
    let indexing = |err: super::store::Error| {
        tracing::error!(error = %error_chain(&err), "could not index a received instance");
        refuse(
            Refusal::OutOfResources,
            "the server could not index it".to_owned(),
        )
    };
    let filed = service
        .store
        .instances()
        .filed_under(&instance.sop_instance_uid)
        .map_err(indexing)?;
    if let Some((study_uid, series_uid)) = filed {
        if study_uid != key.study_instance_uid || series_uid != key.series_instance_uid {
            return Err(clash(&study_uid, &series_uid));
        }
    }
    let dir = service
        .config
        .shared_dir()
        .join("spool")
        .join(&key.study_instance_uid)
        .join(&key.series_instance_uid);
    let path = dir.join(format!("{}.dcm", instance.sop_instance_uid));
    let size = move_into(tmp, &dir, &path).map_err(|err| {
        tracing::error!(error = %err, "could not move a received instance into the spool");
        refuse(
            Refusal::OutOfResources,
            "the server could not store it".to_owned(),
        )
    })?;
    // Filed with its attributes in one transaction: what is stored is found by searches.
    let attributes = super::catalog::read(&path).unwrap_or_else(|_| Attributes {
        sop_instance_uid: instance.sop_instance_uid.clone(),
        sop_class_uid: instance.sop_class_uid.clone(),
        study_uid: key.study_instance_uid.clone(),
        series_uid: key.series_instance_uid.clone(),
        modality: key.modality.clone(),
        ..Attributes::default()
    });
    let row = InstanceRow {
        sop_instance_uid: instance.sop_instance_uid.clone(),
        sop_class_uid: instance.sop_class_uid.clone(),
        study_uid: key.study_instance_uid.clone(),
        series_uid: key.series_instance_uid.clone(),
        path,
        bytes: size,
        attributes: Some(attributes),
    };
    let new = match service
        .store
        .instances()
        .put(&row, lane)
        .map_err(indexing)?
    {
        Filed::New => true,
        Filed::Resent { .. } => false,
        Filed::Elsewhere {
            study_uid,
            series_uid,
        } => {
            // Filed elsewhere between the check and now: this copy is not indexed.
            let _ = std::fs::remove_file(&row.path);
            return Err(clash(&study_uid, &series_uid));
        }
    };
    Ok(Accepted {
        bytes: row.bytes,
        sop_class_uid: row.sop_class_uid,
        sop_instance_uid: row.sop_instance_uid,
        study_instance_uid: row.study_uid,
        series_instance_uid: row.series_uid,
        new,
    })
}

/// A refusal of `instance`, whose header was read, for `reason`.
fn refused(instance: &Instance, refusal: Refusal, reason: String) -> Refused {
    Refused {
        sop_class_uid: Some(instance.sop_class_uid.clone()),
        sop_instance_uid: Some(instance.sop_instance_uid.clone()),
        refusal,
        reason,
    }
}

/// pulmo stores what it can analyse: the selection rules' modalities and SOP classes.
/// Localizers and other CT images the rules skip are stored, and skipped per series.
fn check_sop_class(rules: &SelectionRules, modality: &str, sop_class: &str) -> Result<(), String> {
    if !rules.sop_classes.iter().any(|c| c == sop_class) {
        return Err(format!(
            "SOP class {sop_class} (modality {modality}) is not a CT image; pulmo stores CT images only"
        ));
    }
    if !rules.accepts_modality(modality) {
        return Err(format!("modality {modality:?} is not one pulmo analyses"));
    }
    Ok(())
}

/// A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters. Also what makes it a
/// safe file name.
pub fn is_uid(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !text.starts_with('.')
        && !text.ends_with('.')
        && !text.contains("..")
}

/// Renames a synced file into place and syncs the directory, so the name survives a crash.
fn move_into(tmp: &Path, dir: &Path, path: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    std::fs::rename(tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Removes parts left in `tmp/` by a process that stopped mid-upload (never acknowledged).
pub(super) fn clear_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let parts: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    for part in &parts {
        let _ = std::fs::remove_file(part);
    }
    if !parts.is_empty() {
        tracing::info!(
            parts = parts.len(),
            "removed unacknowledged parts of interrupted uploads"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceConfig;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever a part holds, admission answers with a refusal, never a panic, and
        /// leaves nothing in `tmp/`.
        #[test]
        fn any_bytes_are_refused_without_a_panic(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            preamble in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let service = Service::open(ServiceConfig::new(dir.path())).unwrap();
            let mut bytes = Vec::new();
            if preamble {
                bytes.extend_from_slice(&[0; 128]);
                bytes.extend_from_slice(b"DICM");
            }
            bytes.extend_from_slice(&body);
            let tmp = service.temporary_path();
            std::fs::write(&tmp, &bytes).unwrap();
            let refused = service.admit(&tmp, "part 1", None, Lane::Routine).unwrap_err();
            prop_assert!(refused.reason.contains("part 1"), "{}", refused.reason);
            prop_assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        }
    }

    #[test]
    fn uids_that_could_escape_the_spool_are_not_uids() {
        assert!(is_uid("1.2.840.10008.5.1.4.1.1.2"));
        for bad in [
            "",
            "..",
            "1..2",
            "../etc",
            "1.2/3",
            ".1",
            "1.",
            &"1".repeat(65),
        ] {
            assert!(!is_uid(bad), "{bad:?}");
        }
    }
}
