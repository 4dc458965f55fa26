//! Cataloguing an instance: read the attributes DICOMweb searches match from its header,
//! for a received instance at admission and for each result object once its job is filed.
//! Knows DICOM headers and the index; nothing of HTTP or of matching rules.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pulmo_dicom::volume::part10;

use crate::store::Attributes;

/// Reads the attributes of the instance at `path`, stopping before Pixel Data.
pub fn read(path: &Path) -> Result<Attributes, part10::OpenError> {
    let obj = part10::open_path(path, true)?;
    Ok(from_object(&obj))
}

/// The catalogued attributes of a data set; absent ones are empty.
pub fn from_object(obj: &InMemDicomObject) -> Attributes {
    let text = |tag| text(obj, tag);
    let int = |tag| int(obj, tag);
    Attributes {
        sop_instance_uid: text(tags::SOP_INSTANCE_UID),
        study_uid: text(tags::STUDY_INSTANCE_UID),
        series_uid: text(tags::SERIES_INSTANCE_UID),
        sop_class_uid: text(tags::SOP_CLASS_UID),
        modality: text(tags::MODALITY),
        patient_id: text(tags::PATIENT_ID),
        patient_name: text(tags::PATIENT_NAME),
        patient_birth_date: text(tags::PATIENT_BIRTH_DATE),
        patient_sex: text(tags::PATIENT_SEX),
        study_date: text(tags::STUDY_DATE),
        study_time: text(tags::STUDY_TIME),
        accession_number: text(tags::ACCESSION_NUMBER),
        study_id: text(tags::STUDY_ID),
        study_description: text(tags::STUDY_DESCRIPTION),
        referring_physician_name: text(tags::REFERRING_PHYSICIAN_NAME),
        series_number: int(tags::SERIES_NUMBER),
        series_description: text(tags::SERIES_DESCRIPTION),
        instance_number: int(tags::INSTANCE_NUMBER),
        rows: int(tags::ROWS),
        columns: int(tags::COLUMNS),
        frames: int(tags::NUMBER_OF_FRAMES),
        bits_allocated: int(tags::BITS_ALLOCATED),
    }
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    let value = obj
        .get(tag)
        .and_then(|e| e.to_str().ok())
        .unwrap_or_default();
    value
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_owned()
}

fn int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

/// Catalogues served instances filed before the catalog existed (an index from an older
/// pulmo). Blocking; one header read per instance, so it runs in the background at start.
pub(super) fn backfill(store: &crate::store::Store) {
    let missing = match store.catalog().missing() {
        Ok(missing) => missing,
        Err(err) => {
            tracing::error!(error = %pulmo_core::pipeline::error_chain(&err), "could not list uncatalogued instances");
            return;
        }
    };
    let mut done = 0;
    for path in &missing {
        let filed = read(path)
            .map_err(|err| pulmo_core::pipeline::error_chain(&err))
            .and_then(|a| {
                store
                    .catalog()
                    .put(&a)
                    .map_err(|err| pulmo_core::pipeline::error_chain(&err))
            });
        match filed {
            Ok(()) => done += 1,
            Err(error) => tracing::warn!(%error, "could not catalogue a stored instance"),
        }
    }
    if !missing.is_empty() {
        tracing::info!(
            instances = done,
            "catalogued instances filed by an older pulmo"
        );
    }
}
