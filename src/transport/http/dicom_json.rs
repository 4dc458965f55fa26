//! DICOM JSON (PS3.18 F.2) built attribute by attribute, for the answers pulmo writes
//! itself (QIDO-RS, STOW-RS), and its shape in the OpenAPI document. Whole instances
//! become DICOM JSON in `metadata`.

use std::borrow::Cow;

use serde_json::{json, Map, Value};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// One DICOM JSON dataset, built attribute by attribute.
#[derive(Debug, Default)]
pub struct Dataset(Map<String, Value>);

impl Dataset {
    pub fn new() -> Dataset {
        Dataset::default()
    }

    /// Adds `tag` (eight hex digits, `0020000D`) with one string value of `vr`; an empty
    /// value is written without `Value`, as the standard says.
    pub fn text(mut self, tag: &str, vr: &str, value: &str) -> Dataset {
        let attribute = if value.is_empty() {
            json!({ "vr": vr })
        } else {
            json!({ "vr": vr, "Value": [value] })
        };
        self.0.insert(tag.to_owned(), attribute);
        self
    }

    /// Adds a person name (PN), its alphabetic representation only when it has no `=`.
    pub fn person(mut self, tag: &str, value: &str) -> Dataset {
        let attribute = if value.is_empty() {
            json!({ "vr": "PN" })
        } else {
            json!({ "vr": "PN", "Value": [person_name(value)] })
        };
        self.0.insert(tag.to_owned(), attribute);
        self
    }

    /// Adds an integer-valued `tag` when there is a value, an empty one otherwise.
    pub fn maybe_number(mut self, tag: &str, vr: &str, value: Option<i64>) -> Dataset {
        let attribute = match value {
            Some(value) => json!({ "vr": vr, "Value": [value] }),
            None => json!({ "vr": vr }),
        };
        self.0.insert(tag.to_owned(), attribute);
        self
    }

    /// Keeps only the attributes `keep` accepts.
    pub fn retain(mut self, keep: impl Fn(&str) -> bool) -> Dataset {
        self.0.retain(|tag, _| keep(tag));
        self
    }

    /// Adds `tag` with several string values of `vr`.
    pub fn texts(mut self, tag: &str, vr: &str, values: &[String]) -> Dataset {
        self.0
            .insert(tag.to_owned(), json!({ "vr": vr, "Value": values }));
        self
    }

    /// Adds an integer-valued `tag` (US, UL, IS).
    pub fn number(mut self, tag: &str, vr: &str, value: u64) -> Dataset {
        self.0
            .insert(tag.to_owned(), json!({ "vr": vr, "Value": [value] }));
        self
    }

    /// Adds a sequence; an empty one is written without `Value`, as the standard says.
    pub fn sequence(mut self, tag: &str, items: Vec<Dataset>) -> Dataset {
        let value = if items.is_empty() {
            json!({ "vr": "SQ" })
        } else {
            let items: Vec<Value> = items.into_iter().map(Dataset::into_value).collect();
            json!({ "vr": "SQ", "Value": items })
        };
        self.0.insert(tag.to_owned(), value);
        self
    }

    /// One attribute, when present.
    pub fn get(&self, tag: &str) -> Option<&Value> {
        self.0.get(tag)
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

/// A PN value as DICOM JSON: its component groups (alphabetic, ideographic, phonetic).
pub fn person_name(value: &str) -> Value {
    let mut groups = Map::new();
    for (name, group) in ["Alphabetic", "Ideographic", "Phonetic"]
        .into_iter()
        .zip(value.split('='))
    {
        if !group.is_empty() {
            groups.insert(name.to_owned(), Value::String(group.to_owned()));
        }
    }
    Value::Object(groups)
}

/// The shape of every dataset: attributes keyed by tag, each with a VR and maybe values.
impl utoipa::PartialSchema for Dataset {
    fn schema() -> RefOr<Schema> {
        let text = |pattern: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern))
        };
        let attribute = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("vr", text("^[A-Z]{2}$"))
            .required("vr")
            .property("Value", ArrayBuilder::new())
            .description(Some(
                "One attribute: its VR and, unless empty, its values (sequence items are datasets)",
            ));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(text("^[0-9A-F]{8}$")))
            .additional_properties(Some(attribute))
            .description(Some(
                "A DICOM JSON dataset (PS3.18 F.2): attributes keyed by tag, eight hexadecimal digits",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Dataset {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("DicomDataset")
    }
}

/// The attributes used here, by name.
pub mod tag {
    pub const SOP_CLASS_UID: &str = "00080016";
    pub const SOP_INSTANCE_UID: &str = "00080018";
    pub const MODALITY: &str = "00080060";
    pub const MODALITIES_IN_STUDY: &str = "00080061";
    pub const FAILURE_REASON: &str = "00081197";
    pub const FAILED_SOP_SEQUENCE: &str = "00081198";
    pub const REFERENCED_SOP_SEQUENCE: &str = "00081199";
    pub const REFERENCED_SOP_CLASS_UID: &str = "00081150";
    pub const REFERENCED_SOP_INSTANCE_UID: &str = "00081155";
    pub const RETRIEVE_URL: &str = "00081190";
    pub const ERROR_COMMENT: &str = "00000902";
    pub const STUDY_DATE: &str = "00080020";
    pub const STUDY_TIME: &str = "00080030";
    pub const ACCESSION_NUMBER: &str = "00080050";
    pub const INSTANCE_AVAILABILITY: &str = "00080056";
    pub const REFERRING_PHYSICIAN_NAME: &str = "00080090";
    pub const STUDY_DESCRIPTION: &str = "00081030";
    pub const SERIES_DESCRIPTION: &str = "0008103E";
    pub const PATIENT_NAME: &str = "00100010";
    pub const PATIENT_ID: &str = "00100020";
    pub const PATIENT_BIRTH_DATE: &str = "00100030";
    pub const PATIENT_SEX: &str = "00100040";
    pub const STUDY_ID: &str = "00200010";
    pub const SERIES_NUMBER: &str = "00200011";
    pub const INSTANCE_NUMBER: &str = "00200013";
    pub const NUMBER_OF_FRAMES: &str = "00280008";
    pub const ROWS: &str = "00280010";
    pub const COLUMNS: &str = "00280011";
    pub const BITS_ALLOCATED: &str = "00280100";
    pub const STUDY_INSTANCE_UID: &str = "0020000D";
    pub const SERIES_INSTANCE_UID: &str = "0020000E";
    pub const NUMBER_OF_STUDY_RELATED_SERIES: &str = "00201206";
    pub const NUMBER_OF_STUDY_RELATED_INSTANCES: &str = "00201208";
    pub const NUMBER_OF_SERIES_RELATED_INSTANCES: &str = "00201209";
}
