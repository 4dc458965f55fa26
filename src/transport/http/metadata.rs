//! A whole instance as DICOM JSON (PS3.18 F.2), for WADO-RS `/metadata`: every attribute
//! of its data set (the file meta group and group lengths left out), numbers as JSON
//! numbers, person names by component group, and binary values as `InlineBinary` up to
//! [`MAX_INLINE`] bytes and as a `BulkDataURI` beyond (Pixel Data always).
//!
//! A bulk data URI names the value by its place in the data set: `7FE00010` at the top,
//! `00880200.0.7FE00010` inside the first item of a sequence; [`bulk`] finds it again.

use base64::Engine;
use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, Value as DicomValue};
use dicom_core::{Tag, VR};
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;
use serde_json::{json, Map, Value};

use super::dicom_json::person_name;

/// Binary values longer than this are bulk data.
pub const MAX_INLINE: usize = 1024;

/// Deepest sequence nesting written; deeper items are left empty.
const MAX_DEPTH: usize = 16;

/// The data set as DICOM JSON; `uri` turns a bulk data path into its URI.
pub fn to_json(obj: &InMemDicomObject, uri: &dyn Fn(&str) -> String) -> Value {
    Value::Object(dataset(obj, "", uri, 0))
}

fn dataset(
    obj: &InMemDicomObject,
    prefix: &str,
    uri: &dyn Fn(&str) -> String,
    depth: usize,
) -> Map<String, Value> {
    let mut map = Map::new();
    for element in obj {
        let tag = element.tag();
        if tag.element() == 0 || tag.group() == 0x0002 {
            continue;
        }
        let key = format!("{:04X}{:04X}", tag.group(), tag.element());
        let path = format!("{prefix}{key}");
        map.insert(key, attribute(element, &path, uri, depth));
    }
    map
}

fn attribute(
    element: &InMemElement,
    path: &str,
    uri: &dyn Fn(&str) -> String,
    depth: usize,
) -> Value {
    let vr = element.vr();
    let mut out = Map::new();
    out.insert("vr".to_owned(), json!(vr.to_string()));
    match element.value() {
        DicomValue::Sequence(seq) => {
            if depth < MAX_DEPTH && !seq.items().is_empty() {
                let items = seq
                    .items()
                    .iter()
                    .enumerate()
                    .map(|(n, item)| {
                        Value::Object(dataset(item, &format!("{path}.{n}."), uri, depth + 1))
                    })
                    .collect();
                out.insert("Value".to_owned(), Value::Array(items));
            }
        }
        DicomValue::PixelSequence(_) => {
            out.insert("BulkDataURI".to_owned(), json!(uri(path)));
        }
        DicomValue::Primitive(value) => {
            if let Some((key, value)) = primitive(element.tag(), vr, value, path, uri) {
                out.insert(key.to_owned(), value);
            }
        }
    }
    Value::Object(out)
}

/// The `Value`, `InlineBinary` or `BulkDataURI` of a primitive value; `None` when empty.
fn primitive(
    tag: Tag,
    vr: VR,
    value: &PrimitiveValue,
    path: &str,
    uri: &dyn Fn(&str) -> String,
) -> Option<(&'static str, Value)> {
    if matches!(value, PrimitiveValue::Empty) {
        return None;
    }
    let strings = || -> Vec<String> {
        value
            .to_multi_str()
            .iter()
            .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
            .collect()
    };
    let values: Vec<Value> = match vr {
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN => {
            let bytes = value.to_bytes();
            if bytes.len() > MAX_INLINE || tag == Tag(0x7FE0, 0x0010) {
                return Some(("BulkDataURI", json!(uri(path))));
            }
            let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
            return Some(("InlineBinary", json!(text)));
        }
        VR::PN => strings().iter().map(|s| person_name(s)).collect(),
        VR::AT => match value {
            PrimitiveValue::Tags(tags) => tags
                .iter()
                .map(|t| json!(format!("{:04X}{:04X}", t.group(), t.element())))
                .collect(),
            _ => strings().into_iter().map(Value::String).collect(),
        },
        VR::DS | VR::FL | VR::FD => match value.to_multi_float64() {
            Ok(numbers) => numbers.into_iter().map(number).collect(),
            Err(_) => strings().into_iter().map(text_or_null).collect(),
        },
        VR::IS | VR::SL | VR::SS | VR::UL | VR::US | VR::SV | VR::UV => {
            match value.to_multi_int::<i64>() {
                Ok(numbers) => numbers.into_iter().map(Value::from).collect(),
                Err(_) => strings().into_iter().map(text_or_null).collect(),
            }
        }
        VR::LT | VR::ST | VR::UT => vec![Value::String(
            value.to_str().trim_end_matches(['\0', ' ']).to_owned(),
        )],
        _ => strings().into_iter().map(text_or_null).collect(),
    };
    (!values.is_empty()).then_some(("Value", Value::Array(values)))
}

/// A finite number, or null (JSON has no NaN).
fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// An empty value within a multi-valued attribute is null (PS3.18 F.2.5).
fn text_or_null(text: String) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    }
}

/// The element a bulk data path names: each step a tag, and but for the last, the item
/// of that sequence to go into.
pub fn bulk<'a>(
    obj: &'a InMemDicomObject,
    steps: &[(u32, Option<usize>)],
) -> Option<&'a InMemElement> {
    let (&(last, _), within) = steps.split_last()?;
    let mut current = obj;
    for &(tag, item) in within {
        let element = current.get(as_tag(tag))?;
        current = element.items()?.get(item?)?;
    }
    current.get(as_tag(last))
}

fn as_tag(tag: u32) -> Tag {
    Tag((tag >> 16) as u16, (tag & 0xFFFF) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{dicom_value, DataElement};
    use dicom_dictionary_std::tags;

    fn object() -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(tags::PATIENT_NAME, VR::PN, "Doe^Jane"));
        obj.put(DataElement::new(tags::SLICE_THICKNESS, VR::DS, "1.25"));
        obj.put(DataElement::new(
            tags::ROWS,
            VR::US,
            dicom_value!(U16, [512]),
        ));
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U8(vec![0; 8].into()),
        ));
        obj.put(DataElement::new(
            Tag(0x0029, 0x1010),
            VR::OB,
            PrimitiveValue::U8(vec![7; 2000].into()),
        ));
        obj.put(DataElement::new(
            Tag(0x0029, 0x1011),
            VR::OB,
            dicom_value!(U8, [1, 2, 3]),
        ));
        obj
    }

    #[test]
    fn values_are_typed_and_large_ones_are_bulk_data() {
        let json = to_json(&object(), &|path| format!("bulk/{path}"));
        assert_eq!(json["00100010"]["Value"][0]["Alphabetic"], "Doe^Jane");
        assert_eq!(json["00180050"]["Value"][0], 1.25);
        assert_eq!(json["00280010"]["Value"][0], 512);
        assert_eq!(json["7FE00010"]["BulkDataURI"], "bulk/7FE00010");
        assert_eq!(json["00291010"]["BulkDataURI"], "bulk/00291010");
        assert_eq!(json["00291011"]["InlineBinary"], "AQID");
    }

    #[test]
    fn bulk_paths_find_their_element() {
        let obj = object();
        let found = bulk(&obj, &[(0x0029_1010, None)]).unwrap();
        assert_eq!(found.value().to_bytes().unwrap().len(), 2000);
        assert!(bulk(&obj, &[(0x0029_1010, Some(0)), (0x7FE0_0010, None)]).is_none());
        assert!(bulk(&obj, &[]).is_none());
    }
}
