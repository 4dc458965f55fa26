//! DICOM JSON (PS3.18 F.2) for the few attributes pulmo's DICOMweb answers carry, and its
//! shape in the OpenAPI document.

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

    /// Adds `tag` (eight hex digits, `0020000D`) with one string value of `vr`.
    pub fn text(mut self, tag: &str, vr: &str, value: &str) -> Dataset {
        self.0
            .insert(tag.to_owned(), json!({ "vr": vr, "Value": [value] }));
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

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
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
    pub const STUDY_INSTANCE_UID: &str = "0020000D";
    pub const SERIES_INSTANCE_UID: &str = "0020000E";
    pub const NUMBER_OF_STUDY_RELATED_SERIES: &str = "00201206";
    pub const NUMBER_OF_STUDY_RELATED_INSTANCES: &str = "00201208";
    pub const NUMBER_OF_SERIES_RELATED_INSTANCES: &str = "00201209";
}
