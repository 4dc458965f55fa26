//! DICOM SR: a Comprehensive 3D SR holding TID 1500 "Imaging Measurement Report".
//!
//! One document per analysed series, in the source study: root container with language,
//! device observer (TID 1004), procedure reported, an image library of the slices it
//! points at, and per finding a TID 1410 measurement group with tracking identifier and
//! UID, finding, finding site with laterality, algorithm identification (TID 4019), the
//! measurements of the JSON report, composition and Lung-RADS category, and a CIRCLE on
//! the source slice through the centre. With a comparison with a prior study, `sr/followup.rs`
//! adds the prior study, each finding's change and growth, and the resolved priors.
//! Codes are listed in `docs/dicom-conformance.md`.
//! This module knows the report and the volume's slices; it knows nothing of transport.

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

use super::dcm::{self, code_seq, item, seq, text, Code, Element};
use super::{DerivedIds, ModelInfo, Report};
use crate::findings::{Finding, Laterality, LungRads, NoduleType};
use crate::postprocess::Segment;
use pulmo_dicom::volume::{SliceRef, Volume};

mod followup;

/// Comprehensive 3D SR Storage.
pub const SOP_CLASS: &str = uids::COMPREHENSIVE3_DSR_STORAGE;
/// The SR's series number, chosen to sort after the source series in viewers.
pub const SERIES_NUMBER: i32 = 9901;

mod codes {
    use super::Code;
    pub const REPORT: Code = Code("126000", "DCM", "Imaging Measurement Report");
    pub const LANGUAGE: Code = Code("121049", "DCM", "Language of Content Item and Descendants");
    pub const EN_US: Code = Code("en-US", "RFC5646", "English (United States)");
    pub const OBSERVER_TYPE: Code = Code("121005", "DCM", "Observer Type");
    pub const DEVICE: Code = Code("121007", "DCM", "Device");
    pub const DEVICE_UID: Code = Code("121012", "DCM", "Device Observer UID");
    pub const DEVICE_NAME: Code = Code("121013", "DCM", "Device Observer Name");
    pub const DEVICE_MANUFACTURER: Code = Code("121014", "DCM", "Device Observer Manufacturer");
    pub const DEVICE_MODEL: Code = Code("121015", "DCM", "Device Observer Model Name");
    pub const PROCEDURE: Code = Code("121058", "DCM", "Procedure reported");
    pub const CT: Code = Code("25045-6", "LN", "CT unspecified body region");
    pub const IMAGE_LIBRARY: Code = Code("111028", "DCM", "Image Library");
    pub const IMAGE_LIBRARY_GROUP: Code = Code("126200", "DCM", "Image Library Group");
    pub const MEASUREMENTS: Code = Code("126010", "DCM", "Imaging Measurements");
    pub const GROUP: Code = Code("125007", "DCM", "Measurement Group");
    pub const TRACKING_ID: Code = Code("112039", "DCM", "Tracking Identifier");
    pub const TRACKING_UID: Code = Code("112040", "DCM", "Tracking Unique Identifier");
    pub const FINDING: Code = Code("121071", "DCM", "Finding");
    pub const NODULE: Code = Code("27925004", "SCT", "Nodule");
    pub const FINDING_SITE: Code = Code("363698007", "SCT", "Finding Site");
    pub const LUNG: Code = Code("39607008", "SCT", "Lung");
    pub const LATERALITY: Code = Code("272741003", "SCT", "Laterality");
    pub const LEFT: Code = Code("7771000", "SCT", "Left");
    pub const RIGHT: Code = Code("24028007", "SCT", "Right");
    pub const ALGORITHM_NAME: Code = Code("111001", "DCM", "Algorithm Name");
    pub const ALGORITHM_VERSION: Code = Code("111003", "DCM", "Algorithm Version");
    pub const IMAGE_REGION: Code = Code("111030", "DCM", "Image Region");
    pub const COMMENT: Code = Code("121106", "DCM", "Comment");
    pub const DIAMETER: Code = Code("81827009", "SCT", "Diameter");
    pub const LONG_AXIS: Code = Code("103339001", "SCT", "Long Axis");
    pub const SHORT_AXIS: Code = Code("103340004", "SCT", "Short Axis");
    pub const VOLUME: Code = Code("118565006", "SCT", "Volume");
    pub const MEAN_HU: Code = Code("112181", "DCM", "Mean Attenuation Coefficient");
    pub const CERTAINTY: Code = Code("111012", "DCM", "Certainty of Finding");
    pub const MM: Code = Code("mm", "UCUM", "millimeter");
    pub const MM3: Code = Code("mm3", "UCUM", "cubic millimeter");
    pub const HU: Code = Code("[hnsf'U]", "UCUM", "Hounsfield unit");
    pub const NO_UNITS: Code = Code("1", "UCUM", "no units");
    pub const COMPOSITION: Code = Code("composition", "99PULMO", "Nodule composition");
    pub const SOLID: Code = Code("solid", "99PULMO", "Solid");
    pub const PART_SOLID: Code = Code("part-solid", "99PULMO", "Part-solid");
    pub const GROUND_GLASS: Code = Code("112120", "DCM", "Ground glass opacity");
    pub const LUNG_RADS: Code = Code("lung-rads", "99PULMO", "Lung-RADS v2022 category");
}

/// The SR document of one analysed series, as an in-memory object.
///
/// `segments` (the findings' voxels, in the findings' order) size each image-region circle;
/// without one, the circle's radius is half the long axis.
pub fn to_sr(
    report: &Report,
    segments: &[Segment],
    volume: &Volume,
    ids: &DerivedIds,
) -> InMemDicomObject {
    let referenced = referenced_slices(&report.findings, volume);
    let mut elements = vec![
        text(tags::SOP_CLASS_UID, VR::UI, SOP_CLASS),
        text(tags::SOP_INSTANCE_UID, VR::UI, &ids.sr_instance_uid),
        text(tags::INSTANCE_CREATION_DATE, VR::DA, &ids.created.date),
        text(tags::INSTANCE_CREATION_TIME, VR::TM, &ids.created.time),
    ];
    elements.extend(dcm::patient_and_study(volume));
    elements.extend(series_and_document(ids));
    elements.extend(dcm::equipment(&report.model));
    elements.extend(evidence(volume, &referenced));
    elements.push(dcm::private_scheme_identification());
    elements.extend(root_container());
    elements.push(seq(
        tags::CONTENT_SEQUENCE,
        content(report, segments, volume, &referenced, ids),
    ));
    item(elements)
}

/// Who verified a report, and the unverified document it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The reader, as a DICOM person name.
    pub observer: String,
    /// The reader's organisation (Verifying Organization is required; pulmo's site name).
    pub organization: String,
    /// When the reader signed.
    pub at: super::Created,
    /// The unverified SR this one replaces, when there was one.
    pub predecessor: Option<Predecessor>,
}

/// An SR document that a later revision replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predecessor {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
}

/// [`to_sr`] as a verified revision: VerificationFlag `VERIFIED`, the Verifying Observer,
/// and the Predecessor Documents Sequence pointing at the unverified document. `report`
/// holds the findings the reader accepted ([`super::review::verified`]).
pub fn to_verified_sr(
    report: &Report,
    segments: &[Segment],
    volume: &Volume,
    ids: &DerivedIds,
    verification: &Verification,
) -> InMemDicomObject {
    let mut object = to_sr(report, segments, volume, ids);
    let at = format!("{}{}", verification.at.date, verification.at.time);
    let predecessor = verification.predecessor.as_ref().map(|p| {
        item([
            text(tags::STUDY_INSTANCE_UID, VR::UI, &p.study_instance_uid),
            seq(
                tags::REFERENCED_SERIES_SEQUENCE,
                vec![item([
                    text(tags::SERIES_INSTANCE_UID, VR::UI, &p.series_instance_uid),
                    seq(
                        tags::REFERENCED_SOP_SEQUENCE,
                        vec![item([
                            text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, SOP_CLASS),
                            text(
                                tags::REFERENCED_SOP_INSTANCE_UID,
                                VR::UI,
                                &p.sop_instance_uid,
                            ),
                        ])],
                    ),
                ])],
            ),
        ])
    });
    let mut elements = vec![
        text(tags::VERIFICATION_FLAG, VR::CS, "VERIFIED"),
        text(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            "pulmo nodule measurements, verified",
        ),
        seq(
            tags::VERIFYING_OBSERVER_SEQUENCE,
            vec![item([
                text(
                    tags::VERIFYING_OBSERVER_NAME,
                    VR::PN,
                    &verification.observer,
                ),
                seq(
                    tags::VERIFYING_OBSERVER_IDENTIFICATION_CODE_SEQUENCE,
                    vec![],
                ),
                text(
                    tags::VERIFYING_ORGANIZATION,
                    VR::LO,
                    &verification.organization,
                ),
                text(tags::VERIFICATION_DATE_TIME, VR::DT, at),
            ])],
        ),
    ];
    elements.extend(predecessor.map(|p| seq(tags::PREDECESSOR_DOCUMENTS_SEQUENCE, vec![p])));
    for element in elements {
        object.put(element);
    }
    object
}

/// SR Document Series and SR Document General modules.
fn series_and_document(ids: &DerivedIds) -> Vec<Element> {
    vec![
        text(tags::MODALITY, VR::CS, "SR"),
        text(tags::SERIES_INSTANCE_UID, VR::UI, &ids.sr_series_uid),
        text(tags::SERIES_NUMBER, VR::IS, SERIES_NUMBER.to_string()),
        text(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            "pulmo nodule measurements",
        ),
        seq(tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, vec![]),
        text(tags::INSTANCE_NUMBER, VR::IS, "1"),
        text(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"),
        text(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"),
        text(tags::CONTENT_DATE, VR::DA, &ids.created.date),
        text(tags::CONTENT_TIME, VR::TM, &ids.created.time),
        seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]),
    ]
}

/// The root CONTAINER's own attributes, with its template (DCMR TID 1500).
fn root_container() -> Vec<Element> {
    vec![
        text(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
        code_seq(tags::CONCEPT_NAME_CODE_SEQUENCE, codes::REPORT),
        text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
        seq(
            tags::CONTENT_TEMPLATE_SEQUENCE,
            vec![item([
                text(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
                text(tags::TEMPLATE_IDENTIFIER, VR::CS, "1500"),
            ])],
        ),
    ]
}

/// The root's children, in TID 1500 order.
fn content(
    report: &Report,
    segments: &[Segment],
    volume: &Volume,
    referenced: &[usize],
    ids: &DerivedIds,
) -> Vec<InMemDicomObject> {
    let mut children = vec![code(
        "HAS CONCEPT MOD",
        codes::LANGUAGE,
        codes::EN_US,
        vec![],
    )];
    children.extend(observer_context(&report.model));
    children.push(code("HAS CONCEPT MOD", codes::PROCEDURE, codes::CT, vec![]));
    let library = referenced
        .iter()
        .map(|&k| image("CONTAINS", &volume.slices[k]))
        .collect();
    let group = container("CONTAINS", codes::IMAGE_LIBRARY_GROUP, library);
    children.push(container("CONTAINS", codes::IMAGE_LIBRARY, vec![group]));
    let groups = report
        .findings
        .iter()
        .enumerate()
        .map(|(n, f)| {
            let segment = segments.iter().find(|s| s.finding_id == f.id);
            measurement_group(f, segment, volume, &report.model, &ids.tracking_uids[n])
        })
        .collect();
    children.push(container("CONTAINS", codes::MEASUREMENTS, groups));
    children.extend(followup::qualitative_evaluations(report));
    children
}

/// TID 1002/1004: the observer is a device, pulmo running one model.
fn observer_context(model: &ModelInfo) -> Vec<InMemDicomObject> {
    let context = |name, value: &str| text_item("HAS OBS CONTEXT", name, value);
    vec![
        code(
            "HAS OBS CONTEXT",
            codes::OBSERVER_TYPE,
            codes::DEVICE,
            vec![],
        ),
        uidref("HAS OBS CONTEXT", codes::DEVICE_UID, &device_uid(model)),
        context(codes::DEVICE_NAME, "pulmo"),
        context(codes::DEVICE_MANUFACTURER, "pulmo"),
        context(codes::DEVICE_MODEL, &model.id),
    ]
}

/// A UID that stays the same for one model file: `2.25.` and the first 128 bits of its
/// SHA-256, or pulmo's implementation UID when the digest is not hexadecimal.
pub fn device_uid(model: &ModelInfo) -> String {
    model
        .sha256
        .get(..32)
        .and_then(|hex| u128::from_str_radix(hex, 16).ok())
        .map_or_else(
            || dcm::IMPLEMENTATION_CLASS_UID.to_owned(),
            |n| format!("2.25.{n}"),
        )
}

/// TID 1410 for one finding.
fn measurement_group(
    f: &Finding,
    segment: Option<&Segment>,
    volume: &Volume,
    model: &ModelInfo,
    tracking_uid: &str,
) -> InMemDicomObject {
    let circle = Circle::of(f, segment, volume);
    let mut children = vec![
        text_item("HAS OBS CONTEXT", codes::TRACKING_ID, &sr_tracking_id(f)),
        uidref("HAS OBS CONTEXT", codes::TRACKING_UID, tracking_uid),
        code("CONTAINS", codes::FINDING, codes::NODULE, vec![]),
        circle.item("CONTAINS", Some(codes::IMAGE_REGION)),
        finding_site(f.laterality),
        text_item("HAS CONCEPT MOD", codes::ALGORITHM_NAME, &model.id),
        text_item("HAS CONCEPT MOD", codes::ALGORITHM_VERSION, &model.version),
    ];
    children.extend(measurements(f, &circle));
    children.push(text_item("CONTAINS", codes::COMMENT, &label(f)));
    children.push(code(
        "CONTAINS",
        codes::COMPOSITION,
        composition(f.nodule_type),
        vec![],
    ));
    children.push(code(
        "CONTAINS",
        codes::LUNG_RADS,
        lung_rads(f.lung_rads),
        followup::lung_rads_basis(f),
    ));
    children.extend(followup::finding_items(f));
    container("CONTAINS", codes::GROUP, children)
}

/// How the SR and the SEG name a finding: `nodule-<id>`.
pub fn tracking_id(f: &Finding) -> String {
    tracking_id_of(f.id)
}

/// `nodule-<id>`, for the finding numbered `id` in its report.
fn tracking_id_of(id: u32) -> String {
    format!("nodule-{id}")
}

/// What viewers built on Cornerstone (OHIF) look for at the start of a measurement's
/// Tracking Identifier to load it as an editable circle, listed in their measurement panel;
/// without it OHIF only draws the SR read-only. The standard leaves the identifier's text
/// free, and the Tracking UID (which is what links a finding across objects) is unchanged.
const CORNERSTONE_CIRCLE: &str = "Cornerstone3DTools@^0.1.0:CircleROI";

/// The SR's Tracking Identifier of a finding: [`CORNERSTONE_CIRCLE`], then `:nodule-<id>`.
fn sr_tracking_id(f: &Finding) -> String {
    format!("{CORNERSTONE_CIRCLE}:{}", tracking_id(f))
}

fn finding_site(side: Laterality) -> InMemDicomObject {
    let side = match side {
        Laterality::Left => codes::LEFT,
        Laterality::Right => codes::RIGHT,
    };
    let laterality = code("HAS CONCEPT MOD", codes::LATERALITY, side, vec![]);
    code(
        "HAS CONCEPT MOD",
        codes::FINDING_SITE,
        codes::LUNG,
        vec![laterality],
    )
}

/// The JSON report's numbers, with the same values. The diameter, the first, is
/// INFERRED FROM the finding's circle (TID 300): viewers built on Cornerstone (OHIF) take
/// the circle they draw and list from under a group's first NUM, not from the group's
/// Image Region.
fn measurements(f: &Finding, circle: &Circle) -> Vec<InMemDicomObject> {
    [
        (codes::DIAMETER, f.diameter_mm, codes::MM),
        (codes::LONG_AXIS, f.long_axis_mm, codes::MM),
        (codes::SHORT_AXIS, f.short_axis_mm, codes::MM),
        (codes::VOLUME, f.volume_mm3, codes::MM3),
        (codes::MEAN_HU, f.mean_hu, codes::HU),
        (codes::CERTAINTY, f.score, codes::NO_UNITS),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, value, unit))| {
        let inferred = (i == 0).then(|| circle.item("INFERRED FROM", None));
        num(name, value, unit, inferred)
    })
    .collect()
}

/// The label a viewer shows beside a finding's circle (a Comment, which is what OHIF
/// reads as a measurement's label): `nodule-<id>, <diameter> mm`.
fn label(f: &Finding) -> String {
    format!("{}, {:.1} mm", tracking_id(f), f.diameter_mm)
}

/// Solid and part-solid have no standard code we could find; ground glass does.
pub fn composition(kind: NoduleType) -> Code {
    match kind {
        NoduleType::Solid => codes::SOLID,
        NoduleType::PartSolid => codes::PART_SOLID,
        NoduleType::GroundGlass => codes::GROUND_GLASS,
    }
}

/// Lung-RADS categories in pulmo's private scheme (code value = category as printed).
fn lung_rads(category: LungRads) -> Code {
    match category {
        LungRads::Cat1 => Code("1", dcm::PRIVATE_SCHEME, "Lung-RADS 1"),
        LungRads::Cat2 => Code("2", dcm::PRIVATE_SCHEME, "Lung-RADS 2"),
        LungRads::Cat3 => Code("3", dcm::PRIVATE_SCHEME, "Lung-RADS 3"),
        LungRads::Cat4A => Code("4A", dcm::PRIVATE_SCHEME, "Lung-RADS 4A"),
        LungRads::Cat4B => Code("4B", dcm::PRIVATE_SCHEME, "Lung-RADS 4B"),
    }
}

/// A CIRCLE around the nodule on the source slice through its centre.
struct Circle<'a> {
    /// Centre, then a point on the rim, in image coordinates.
    data: [f32; 4],
    slice: &'a SliceRef,
}

impl<'a> Circle<'a> {
    fn of(f: &Finding, segment: Option<&Segment>, volume: &'a Volume) -> Circle<'a> {
        let [i, j, k] = f.center_voxel.map(|v| v as usize);
        let radius = segment
            .and_then(|s| radius_px(s, [k, j, i]))
            .unwrap_or(f.long_axis_mm / 2.0 / volume.geometry.spacing[2]);
        // Image coordinates put (0, 0) at the top-left corner of the first pixel.
        let (x, y) = (i as f32 + 0.5, j as f32 + 0.5);
        Circle {
            data: [x, y, x + radius.max(1.0) as f32, y],
            slice: &volume.slices[k],
        }
    }

    /// The SCOORD content item, named `name` (the group's Image Region) or unnamed (a
    /// measurement's INFERRED FROM).
    fn item(&self, relationship: &str, name: Option<Code>) -> InMemDicomObject {
        let source = image("SELECTED FROM", self.slice);
        let mut elements = header(relationship, "SCOORD", name);
        elements.push(text(tags::GRAPHIC_TYPE, VR::CS, "CIRCLE"));
        elements.push(dcm::fl(tags::GRAPHIC_DATA, &self.data));
        elements.push(seq(tags::CONTENT_SEQUENCE, vec![source]));
        item(elements)
    }
}

/// The distance in columns from `centre` to the farthest segment voxel on its slice,
/// plus half a pixel; `None` when the slice holds none of the segment.
fn radius_px(segment: &Segment, centre: [usize; 3]) -> Option<f64> {
    let k = centre[0].checked_sub(segment.origin[0])?;
    let slice = segment.mask.outer_iter().nth(k)?;
    slice
        .indexed_iter()
        .filter(|(_, inside)| **inside)
        .map(|((r, c), _)| {
            let dy = (segment.origin[1] + r) as f64 - centre[1] as f64;
            let dx = (segment.origin[2] + c) as f64 - centre[2] as f64;
            dx.hypot(dy) + 0.5
        })
        .reduce(f64::max)
}

/// Source slice indices the findings point at, sorted and unique.
fn referenced_slices(findings: &[Finding], volume: &Volume) -> Vec<usize> {
    let mut slices: Vec<usize> = findings
        .iter()
        .map(|f| f.center_voxel[2] as usize)
        .filter(|&k| k < volume.slices.len())
        .collect();
    slices.sort_unstable();
    slices.dedup();
    slices
}

/// Current Requested Procedure Evidence: every source image the content tree references;
/// none when it references none.
fn evidence(volume: &Volume, referenced: &[usize]) -> Option<Element> {
    if referenced.is_empty() {
        return None;
    }
    let series = dcm::source_series_item(volume, referenced, tags::REFERENCED_SOP_SEQUENCE);
    let study = item([
        text(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            &volume.ids.study_instance_uid,
        ),
        seq(tags::REFERENCED_SERIES_SEQUENCE, vec![series]),
    ]);
    Some(seq(
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![study],
    ))
}

// Content items.

fn header(relationship: &str, value_type: &str, name: Option<Code>) -> Vec<Element> {
    let mut elements = vec![
        text(tags::RELATIONSHIP_TYPE, VR::CS, relationship),
        text(tags::VALUE_TYPE, VR::CS, value_type),
    ];
    elements.extend(name.map(|n| code_seq(tags::CONCEPT_NAME_CODE_SEQUENCE, n)));
    elements
}

fn with_children(mut elements: Vec<Element>, children: Vec<InMemDicomObject>) -> InMemDicomObject {
    if !children.is_empty() {
        elements.push(seq(tags::CONTENT_SEQUENCE, children));
    }
    item(elements)
}

fn container(relationship: &str, name: Code, children: Vec<InMemDicomObject>) -> InMemDicomObject {
    let mut elements = header(relationship, "CONTAINER", Some(name));
    elements.push(text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"));
    with_children(elements, children)
}

fn code(
    relationship: &str,
    name: Code,
    value: Code,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut elements = header(relationship, "CODE", Some(name));
    elements.push(code_seq(tags::CONCEPT_CODE_SEQUENCE, value));
    with_children(elements, children)
}

fn text_item(relationship: &str, name: Code, value: &str) -> InMemDicomObject {
    let mut elements = header(relationship, "TEXT", Some(name));
    elements.push(text(tags::TEXT_VALUE, VR::UT, value));
    item(elements)
}

fn uidref(relationship: &str, name: Code, value: &str) -> InMemDicomObject {
    let mut elements = header(relationship, "UIDREF", Some(name));
    elements.push(text(tags::UID, VR::UI, value));
    item(elements)
}

/// A NUM item, with `inferred_from` as its child when given.
fn num(
    name: Code,
    value: f64,
    unit: Code,
    inferred_from: Option<InMemDicomObject>,
) -> InMemDicomObject {
    let measured = item([
        code_seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, unit),
        dcm::ds(tags::NUMERIC_VALUE, &[value]),
    ]);
    let mut elements = header("CONTAINS", "NUM", Some(name));
    elements.push(seq(tags::MEASURED_VALUE_SEQUENCE, vec![measured]));
    with_children(elements, inferred_from.into_iter().collect())
}

/// An IMAGE item pointing at one source slice (and frame, for multi-frame sources).
fn image(relationship: &str, slice: &SliceRef) -> InMemDicomObject {
    let mut sop = vec![
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &slice.sop_class_uid),
        text(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            &slice.sop_instance_uid,
        ),
    ];
    sop.extend(
        slice
            .frame
            .map(|n| text(tags::REFERENCED_FRAME_NUMBER, VR::IS, n.to_string())),
    );
    let mut elements = header(relationship, "IMAGE", None);
    elements.push(seq(tags::REFERENCED_SOP_SEQUENCE, vec![item(sop)]));
    item(elements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::dcm::code_item;
    use ndarray::Array3;

    #[test]
    fn circle_radius_reaches_the_farthest_voxel_on_the_centre_slice() {
        let mut mask = Array3::from_elem((3, 5, 5), false);
        mask[[1, 2, 2]] = true;
        mask[[1, 2, 4]] = true;
        let segment = Segment {
            finding_id: 1,
            origin: [10, 20, 30],
            mask,
        };
        assert_eq!(radius_px(&segment, [11, 22, 32]), Some(2.5));
        assert_eq!(radius_px(&segment, [10, 22, 32]), None);
        assert_eq!(radius_px(&segment, [9, 22, 32]), None);
    }

    #[test]
    fn device_uid_is_stable_for_a_model_digest() {
        let model = ModelInfo {
            id: "m".into(),
            version: "1".into(),
            sha256: "ff".repeat(32),
        };
        assert_eq!(device_uid(&model), format!("2.25.{}", u128::MAX));
        let odd = ModelInfo {
            sha256: "not hex".into(),
            ..model
        };
        assert_eq!(device_uid(&odd), dcm::IMPLEMENTATION_CLASS_UID);
    }

    #[test]
    fn ground_glass_uses_the_dicom_code_and_the_others_the_private_scheme() {
        assert_eq!(composition(NoduleType::GroundGlass).1, "DCM");
        assert_eq!(composition(NoduleType::Solid).1, dcm::PRIVATE_SCHEME);
        assert_eq!(lung_rads(LungRads::Cat4A).0, "4A");
    }

    #[test]
    fn code_items_carry_value_scheme_and_meaning() {
        let obj = code_item(codes::NODULE);
        let value = |t| obj.get(t).unwrap().to_str().unwrap().into_owned();
        assert_eq!(value(tags::CODE_VALUE), "27925004");
        assert_eq!(value(tags::CODING_SCHEME_DESIGNATOR), "SCT");
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;
    use crate::report::tests::{analysis, round_trip, string, volume};

    /// Every item under `obj` (depth first), for looking things up by concept name.
    fn items(obj: &InMemDicomObject) -> Vec<&InMemDicomObject> {
        let children = obj
            .get(tags::CONTENT_SEQUENCE)
            .and_then(|e| e.items())
            .unwrap_or(&[]);
        children
            .iter()
            .flat_map(|c| std::iter::once(c).chain(items(c)))
            .collect()
    }

    fn named<'a>(all: &[&'a InMemDicomObject], meaning: &str) -> Vec<&'a InMemDicomObject> {
        all.iter()
            .copied()
            .filter(|i| {
                i.get(tags::CONCEPT_NAME_CODE_SEQUENCE)
                    .and_then(|e| e.items())
                    .is_some_and(|c| string(&c[0], tags::CODE_MEANING) == meaning)
            })
            .collect()
    }

    #[test]
    fn the_sr_carries_the_reports_numbers_in_the_source_study() {
        let (report, segments) = analysis();
        let ids = DerivedIds::new(1);
        let obj = round_trip(to_sr(&report, &segments, &volume(), &ids));
        assert_eq!(string(&obj, tags::SOP_CLASS_UID), SOP_CLASS);
        assert_eq!(string(&obj, tags::STUDY_INSTANCE_UID), "1.2.3");
        assert_eq!(string(&obj, tags::PATIENT_NAME), "DOE^JANE");
        assert_ne!(string(&obj, tags::SERIES_INSTANCE_UID), "1.2.3.4");
        let all = items(&obj);
        assert_eq!(named(&all, "Measurement Group").len(), 1);
        let value = |meaning: &str| {
            let num = named(&all, meaning)[0];
            let measured = &num
                .get(tags::MEASURED_VALUE_SEQUENCE)
                .unwrap()
                .items()
                .unwrap()[0];
            string(measured, tags::NUMERIC_VALUE)
                .parse::<f64>()
                .unwrap()
        };
        let f = &report.findings[0];
        assert_eq!(value("Diameter"), f.diameter_mm);
        assert_eq!(value("Volume"), f.volume_mm3);
        assert_eq!(value("Certainty of Finding"), f.score);
        let tracking = named(&all, "Tracking Unique Identifier")[0];
        assert_eq!(string(tracking, tags::UID), ids.tracking_uids[0]);
        assert!(obj
            .get(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)
            .is_some());
        let region = named(&all, "Image Region")[0];
        let data = region
            .get(tags::GRAPHIC_DATA)
            .unwrap()
            .to_multi_float32()
            .unwrap();
        assert_eq!(&data[..2], &[8.5, 8.5]);

        // What OHIF draws and lists: the circle under the group's first NUM (the
        // diameter), the same as the Image Region, and a Comment as the label.
        let group = named(&all, "Measurement Group")[0];
        let first_num = group
            .get(tags::CONTENT_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .iter()
            .find(|i| string(i, tags::VALUE_TYPE) == "NUM")
            .unwrap();
        let inferred = &first_num
            .get(tags::CONTENT_SEQUENCE)
            .expect("the diameter is inferred from the circle")
            .items()
            .unwrap()[0];
        assert_eq!(string(inferred, tags::RELATIONSHIP_TYPE), "INFERRED FROM");
        assert_eq!(string(inferred, tags::GRAPHIC_TYPE), "CIRCLE");
        let circle = inferred
            .get(tags::GRAPHIC_DATA)
            .unwrap()
            .to_multi_float32()
            .unwrap();
        assert_eq!(circle, data);
        let comment = named(&all, "Comment")[0];
        assert_eq!(
            string(comment, tags::TEXT_VALUE),
            format!("nodule-{}, {:.1} mm", f.id, f.diameter_mm)
        );
    }
}

#[cfg(test)]
mod without_findings {
    use super::*;
    use crate::report::tests::{analysis, round_trip, string, volume};

    #[test]
    fn an_sr_without_findings_references_no_evidence() {
        let (mut report, _) = analysis();
        report.findings.clear();
        let obj = round_trip(to_sr(&report, &[], &volume(), &DerivedIds::new(0)));
        assert!(obj
            .get(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)
            .is_none());
    }

    #[test]
    fn a_verified_sr_names_its_reader_and_its_predecessor() {
        let (report, segments) = analysis();
        let verification = Verification {
            observer: "reader^ann".into(),
            organization: "pulmo".into(),
            at: crate::report::Created::now(),
            predecessor: Some(Predecessor {
                study_instance_uid: "1.2.3".into(),
                series_instance_uid: "1.2.3.7".into(),
                sop_instance_uid: "1.2.3.7.1".into(),
            }),
        };
        let ids = DerivedIds::new(1);
        let obj = round_trip(to_verified_sr(
            &report,
            &segments,
            &volume(),
            &ids,
            &verification,
        ));
        assert_eq!(string(&obj, tags::VERIFICATION_FLAG), "VERIFIED");
        let observer = &obj
            .get(tags::VERIFYING_OBSERVER_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        assert_eq!(
            string(observer, tags::VERIFYING_OBSERVER_NAME),
            "reader^ann"
        );
        let predecessor = &obj
            .get(tags::PREDECESSOR_DOCUMENTS_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        let series = &predecessor
            .get(tags::REFERENCED_SERIES_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        let sop = &series
            .get(tags::REFERENCED_SOP_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        assert_eq!(string(sop, tags::REFERENCED_SOP_INSTANCE_UID), "1.2.3.7.1");
    }
}
