//! Small building blocks shared by the DICOM encoders: elements, codes, UIDs, the patient
//! and study modules, and Part 10 bytes.
//!
//! Objects are element lists built with `tags::` constants; this module knows nothing of
//! findings, only of how DICOM spells things.

use dicom_core::chrono::{DateTime, Utc};
use dicom_core::{
    smallvec::SmallVec, value::DataSetSequence, DataElement, PrimitiveValue, Tag, VR,
};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use super::{Error, Result};
use pulmo_dicom::volume::{SliceRef, SourceAttributes, Volume};

/// One element of an in-memory object.
pub type Element = dicom_object::mem::InMemElement;

/// The implementation class UID pulmo writes into file meta headers (a `2.25` UUID UID).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.216130618470296398454458339328069935611";
/// The implementation version name, at most 16 characters.
pub const IMPLEMENTATION_VERSION_NAME: &str = "PULMO";
/// pulmo's private coding scheme, for concepts without a standard code.
pub const PRIVATE_SCHEME: &str = "99PULMO";

/// A coded concept: value, coding scheme designator, meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code(pub &'static str, pub &'static str, pub &'static str);

/// A new globally unique UID: `2.25.` followed by a random UUID as a decimal number.
pub fn new_uid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

/// A UID that `name` always gives: `2.25.` followed by a name-based UUID (version 8, from
/// the SHA-256 of the name), so that analysing the same series again names the same things
/// the same.
pub fn uid_of(name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let bytes: [u8; 16] = digest[..16]
        .try_into()
        .expect("a SHA-256 digest has 32 bytes. This is a bug.");
    format!(
        "2.25.{}",
        uuid::Builder::from_custom_bytes(bytes)
            .into_uuid()
            .as_u128()
    )
}

/// When an object was created, as DICOM date (`YYYYMMDD`) and time (`HHMMSS`) strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub date: String,
    pub time: String,
}

impl Created {
    /// Now, in UTC.
    pub fn now() -> Self {
        Self::at(Utc::now())
    }

    /// A given moment, in UTC.
    pub fn at(moment: DateTime<Utc>) -> Self {
        Created {
            date: moment.format("%Y%m%d").to_string(),
            time: moment.format("%H%M%S").to_string(),
        }
    }
}

/// A textual element (any string VR; several values joined by `\`).
pub fn text(tag: Tag, vr: VR, value: impl Into<String>) -> Element {
    DataElement::new(tag, vr, PrimitiveValue::from(value.into()))
}

/// An element with no value (type 2, unknown).
pub fn empty(tag: Tag, vr: VR) -> Element {
    DataElement::new(tag, vr, PrimitiveValue::Empty)
}

/// A US element.
pub fn us(tag: Tag, value: u16) -> Element {
    DataElement::new(tag, VR::US, PrimitiveValue::from(value))
}

/// A UL element with one or more values.
pub fn ul(tag: Tag, values: &[u32]) -> Element {
    DataElement::new(
        tag,
        VR::UL,
        PrimitiveValue::U32(SmallVec::from_slice(values)),
    )
}

/// An FL element with one or more values.
pub fn fl(tag: Tag, values: &[f32]) -> Element {
    DataElement::new(
        tag,
        VR::FL,
        PrimitiveValue::F32(SmallVec::from_slice(values)),
    )
}

/// An AT element holding one tag.
pub fn at(tag: Tag, value: Tag) -> Element {
    DataElement::new(tag, VR::AT, PrimitiveValue::from(value))
}

/// A DS element: decimal strings, at most 16 characters each.
pub fn ds(tag: Tag, values: &[f64]) -> Element {
    let joined: Vec<String> = values.iter().map(|v| decimal(*v)).collect();
    text(tag, VR::DS, joined.join("\\"))
}

/// A decimal string of at most 16 characters, exact when the value allows.
pub fn decimal(value: f64) -> String {
    let exact = format!("{value}");
    if exact.len() <= 16 {
        return exact;
    }
    // Fewer decimals until it fits; the integer part of any plausible value is short.
    (0..=10)
        .rev()
        .map(|digits| format!("{value:.digits$}"))
        .find(|s| s.len() <= 16)
        .unwrap_or_else(|| format!("{value:.6e}"))
}

/// A sequence element.
pub fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> Element {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// A dataset (sequence item or object) from its elements.
pub fn item(elements: impl IntoIterator<Item = Element>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

/// The basic code attributes of a code sequence item.
pub fn code_elements(code: Code) -> [Element; 3] {
    [
        text(tags::CODE_VALUE, VR::SH, code.0),
        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, code.1),
        text(tags::CODE_MEANING, VR::LO, code.2),
    ]
}

/// A code sequence item.
pub fn code_item(code: Code) -> InMemDicomObject {
    item(code_elements(code))
}

/// A code sequence holding one code.
pub fn code_seq(tag: Tag, code: Code) -> Element {
    seq(tag, vec![code_item(code)])
}

/// Coding Scheme Identification for pulmo's private scheme.
pub fn private_scheme_identification() -> Element {
    seq(
        tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
        vec![item([
            text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, PRIVATE_SCHEME),
            text(tags::CODING_SCHEME_NAME, VR::ST, "pulmo private codes"),
            text(
                tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
                VR::ST,
                "pulmo project (docs/dicom-conformance.md)",
            ),
        ])],
    )
}

/// The Patient and General Study modules, copied from the source series.
pub fn patient_and_study(volume: &Volume) -> Vec<Element> {
    let s: &SourceAttributes = &volume.source;
    let charset = charset(s).map(|cs| text(tags::SPECIFIC_CHARACTER_SET, VR::CS, cs));
    let mut elements: Vec<Element> = charset.into_iter().collect();
    elements.extend([
        text(tags::PATIENT_NAME, VR::PN, &s.patient_name),
        text(tags::PATIENT_ID, VR::LO, &s.patient_id),
        text(tags::PATIENT_BIRTH_DATE, VR::DA, &s.patient_birth_date),
        text(tags::PATIENT_SEX, VR::CS, &s.patient_sex),
        text(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            &volume.ids.study_instance_uid,
        ),
        text(tags::STUDY_DATE, VR::DA, &s.study_date),
        text(tags::STUDY_TIME, VR::TM, &s.study_time),
        text(tags::ACCESSION_NUMBER, VR::SH, &s.accession_number),
        text(
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            &s.referring_physician_name,
        ),
        text(tags::STUDY_ID, VR::SH, &s.study_id),
    ]);
    elements
}

/// ISO_IR 192 (UTF-8) when any copied value needs more than ASCII; none (the default
/// repertoire) otherwise.
fn charset(s: &SourceAttributes) -> Option<&'static str> {
    let values = [
        &s.patient_name,
        &s.patient_id,
        &s.accession_number,
        &s.referring_physician_name,
        &s.study_id,
    ];
    (!values.iter().all(|v| v.is_ascii())).then_some("ISO_IR 192")
}

/// The General Equipment attributes (also the Enhanced General Equipment module).
pub fn equipment(model: &super::ModelInfo) -> Vec<Element> {
    let software = format!(
        "pulmo {}\\{} {}",
        crate::build_info::VERSION,
        model.id,
        model.version
    );
    vec![
        text(tags::MANUFACTURER, VR::LO, "pulmo"),
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, &model.id),
        text(tags::DEVICE_SERIAL_NUMBER, VR::LO, &model.version),
        text(tags::SOFTWARE_VERSIONS, VR::LO, software),
    ]
}

/// Purpose of reference of an image a derived image was made from.
const SOURCE_IMAGE: Code = Code(
    "121322",
    "DCM",
    "Source image for image processing operation",
);

/// A Source Image Sequence item's elements: the source slice (and its frame, for
/// multi-frame sources) with purpose "Source image for image processing operation".
pub fn source_image(slice: &SliceRef) -> Vec<Element> {
    let mut source = vec![
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &slice.sop_class_uid),
        text(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            &slice.sop_instance_uid,
        ),
    ];
    source.extend(
        slice
            .frame
            .map(|n| text(tags::REFERENCED_FRAME_NUMBER, VR::IS, n.to_string())),
    );
    source.push(code_seq(
        tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
        SOURCE_IMAGE,
    ));
    source
}

/// A Referenced Series item for the source series, listing the images of `slices` (indices
/// into the volume) under `images`, each source instance once (a multi-frame instance holds
/// many slices).
pub fn source_series_item(volume: &Volume, slices: &[usize], images: Tag) -> InMemDicomObject {
    let mut seen: Vec<&str> = Vec::new();
    let instances = slices
        .iter()
        .map(|&k| &volume.slices[k])
        .filter(|s| {
            let new = !seen.contains(&s.sop_instance_uid.as_str());
            seen.push(&s.sop_instance_uid);
            new
        })
        .map(|s| {
            item([
                text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &s.sop_class_uid),
                text(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    &s.sop_instance_uid,
                ),
            ])
        })
        .collect();
    item([
        text(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            &volume.ids.series_instance_uid,
        ),
        seq(images, instances),
    ])
}

/// The object as a Part 10 file (explicit VR little endian), ready to write or send.
pub fn to_part10(object: InMemDicomObject) -> Result<Vec<u8>> {
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    let file = object
        .with_meta(meta)
        .map_err(|source| Error::Meta(Box::new(source)))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|source| Error::Encode(Box::new(source)))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_2_25_decimal_and_short_enough() {
        let uid = new_uid();
        assert!(uid.starts_with("2.25."), "{uid}");
        assert!(uid.len() <= 64, "{uid}");
        assert!(uid[5..].chars().all(|c| c.is_ascii_digit()), "{uid}");
        assert_ne!(uid, new_uid());
    }

    #[test]
    fn decimals_fit_in_16_characters() {
        assert_eq!(decimal(12.8), "12.8");
        assert_eq!(decimal(-600.0), "-600");
        assert!(decimal(std::f64::consts::PI * 1000.0).len() <= 16);
        assert!(decimal(1.0e300).len() <= 16);
    }

    #[test]
    fn non_ascii_names_switch_to_utf8() {
        let mut s = SourceAttributes::default();
        assert_eq!(charset(&s), None);
        s.patient_name = "Müller^Jürgen".into();
        assert_eq!(charset(&s), Some("ISO_IR 192"));
    }
}
