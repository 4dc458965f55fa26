//! Reports: what pulmo hands back, per analysed series.
//!
//! [`Report`] is the JSON report (`pulmo.report/1`, documented in `docs/report-schema.md`).
//! [`sr::to_sr`] (TID 1500 measurement report), [`seg::to_seg`] (binary segmentation) and
//! [`images::key_image`] (PNG, and [`capture::to_capture`] as DICOM Secondary Capture)
//! encode the same findings for PACS and viewers; the DICOM
//! objects are described in `docs/dicom-conformance.md`. This module knows findings, their
//! voxels and the source volume; it knows nothing of HTTP, the CLI or how the findings
//! were computed. Encoders return objects or bytes; callers decide where they go.

pub mod capture;
pub mod comparison;
mod dcm;
pub mod images;
pub mod review;
pub mod seg;
pub mod sr;

pub mod deidentify;
pub mod table;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::findings::{Finding, LungRads, PriorFinding};

pub use comparison::{Comparison, Registration, RegistrationStatus};
pub use dcm::{new_uid, to_part10, uid_of, Created};

/// What can stop a DICOM object or key image from being encoded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no finding has voxels, so there is no segmentation to write")]
    NothingToSegment,
    #[error("could not build the file meta group")]
    Meta(#[source] Box<dicom_object::WithMetaError>),
    #[error("could not encode the DICOM object")]
    Encode(#[source] Box<dicom_object::WriteError>),
    #[error("could not encode a key image")]
    Png(#[source] Box<image::ImageError>),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The new identities of one analysis' DICOM results, made once so that SR and SEG agree
/// (same tracking UIDs, same creation time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedIds {
    pub created: Created,
    pub sr_series_uid: String,
    pub sr_instance_uid: String,
    pub seg_series_uid: String,
    pub seg_instance_uid: String,
    /// The series of the key images' Secondary Captures.
    pub capture_series_uid: String,
    /// One per finding, in the report's order.
    pub tracking_uids: Vec<String>,
}

impl DerivedIds {
    /// Fresh UIDs for `findings`, created now; a finding that carries a Tracking UID (one
    /// made at analysis, or carried from the prior study) keeps it.
    pub fn for_findings(findings: &[Finding]) -> Self {
        let mut ids = DerivedIds::new(findings.len());
        for (uid, finding) in ids.tracking_uids.iter_mut().zip(findings) {
            if let Some(carried) = &finding.tracking_uid {
                uid.clone_from(carried);
            }
        }
        ids
    }

    /// Fresh UIDs for a report with `findings` findings, created now.
    pub fn new(findings: usize) -> Self {
        DerivedIds {
            created: Created::now(),
            sr_series_uid: new_uid(),
            sr_instance_uid: new_uid(),
            seg_series_uid: new_uid(),
            seg_instance_uid: new_uid(),
            capture_series_uid: new_uid(),
            tracking_uids: (0..findings).map(|_| new_uid()).collect(),
        }
    }
}

/// The schema tag of [`Report`].
pub const SCHEMA: &str = "pulmo.report/1";

/// Shown with every report.
pub const DISCLAIMER: &str = "Research and demonstration software; the model was trained on synthetic \
phantoms. Not a medical device and not for clinical use: findings must be reviewed by a qualified reader.";

/// The JSON report of one series. Contains no patient name, ID or birth date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// Whether the network ran; false when the series was judged not to be a chest CT.
    pub analyzed: bool,
    pub model: ModelInfo,
    pub pulmo: BuildInfo,
    pub device: String,
    /// The network's number format: `float32`, `bfloat16` or `float16`.
    #[serde(default = "float32")]
    pub precision: String,
    pub series: SeriesInfo,
    /// Milliseconds per stage, and `total`.
    pub timing_ms: BTreeMap<String, f64>,
    /// The highest finding score; 0 with none.
    pub study_score: f64,
    /// The worst category among the findings at or above `operating_score`.
    pub lung_rads: LungRads,
    /// The model's operating point: findings scoring at least this are its positive calls;
    /// those below are candidates listed for review. (Reports from before it was recorded
    /// counted every finding: 0.)
    #[serde(default)]
    pub operating_score: f64,
    pub warnings: Vec<String>,
    pub disclaimer: String,
    pub findings: Vec<Finding>,
    /// The rule of the Lung-RADS v2022 table that gave `lung_rads`, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lung_rads_rule: String,
    /// The prior study these findings were compared with; null without one.
    #[serde(default)]
    pub comparison: Option<Comparison>,
    /// The prior's calls that no finding of this study matched (empty without a comparison).
    #[serde(default)]
    pub resolved: Vec<PriorFinding>,
}

impl Report {
    /// Whether `finding` is one of the model's calls at this report's operating point.
    pub fn is_call(&self, finding: &Finding) -> bool {
        finding.is_call(self.operating_score)
    }

    /// How many findings are calls.
    pub fn calls(&self) -> usize {
        self.findings.iter().filter(|f| self.is_call(f)).count()
    }

    /// This report with its calls only: what the DICOM results carry.
    pub fn calls_only(&self) -> Report {
        Report {
            findings: self
                .findings
                .iter()
                .filter(|f| self.is_call(f))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }
}

/// Reports written before `precision` was recorded ran in float32.
fn float32() -> String {
    "float32".to_owned()
}

/// Which model produced the findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub id: String,
    pub version: String,
    pub sha256: String,
}

/// Which build of pulmo produced the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    pub version: String,
    pub git: String,
    pub libtorch: String,
}

impl BuildInfo {
    /// This build, running its networks on libtorch `libtorch` (the backend's runtime version).
    pub fn current(libtorch: &str) -> Self {
        BuildInfo {
            version: crate::build_info::VERSION.to_owned(),
            git: crate::build_info::GIT_REV.to_owned(),
            libtorch: libtorch.to_owned(),
        }
    }
}

/// The analysed series' size and spacing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesInfo {
    pub slices: usize,
    pub rows: usize,
    pub columns: usize,
    /// `[column, row, slice]` spacing in mm, in the order of `center_voxel`.
    pub spacing_mm: [f64; 3],
    pub slice_thickness_mm: Option<f64>,
}

impl Report {
    /// Pretty JSON, as written to `<SeriesInstanceUID>.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises. This is a bug.")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::postprocess;
    use crate::testing::finding;
    use dicom_object::DefaultDicomObject;
    use ndarray::Array3;
    use pulmo_dicom::volume::{Geometry, SeriesIds, SliceRef, Volume};

    /// A 5-slice 16x16 axial volume whose slices sit 2.5 mm apart from z = -100.
    pub(crate) fn volume() -> Volume {
        let geometry = Geometry::axial([-10.0, -20.0, -100.0], [2.5, 0.8, 0.8]);
        let slices = (0..5)
            .map(|k| SliceRef {
                sop_instance_uid: format!("1.2.3.4.5.{k}"),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                instance_number: Some(k + 1),
                frame: None,
                position: Some(geometry.voxel_to_patient([f64::from(k), 0.0, 0.0])),
            })
            .collect();
        Volume {
            hu: Array3::from_elem((5, 16, 16), -800.0),
            geometry,
            slices,
            ids: SeriesIds {
                study_instance_uid: "1.2.3".into(),
                series_instance_uid: "1.2.3.4".into(),
                frame_of_reference_uid: "1.2.3.9".into(),
            },
            source: pulmo_dicom::volume::SourceAttributes {
                patient_name: "DOE^JANE".into(),
                patient_id: "ID-7".into(),
                ..Default::default()
            },
            slice_thickness_mm: Some(2.5),
            warnings: vec![],
        }
    }

    /// A report with one finding centred on slice 2, and its segment on slices 1 and 3
    /// (slice 2's mask left empty, as a hole the SEG must not fill with a frame).
    pub(crate) fn analysis() -> (Report, Vec<postprocess::Segment>) {
        let mut f = finding(0.9, LungRads::Cat3);
        f.id = 1;
        f.center_voxel = [8, 8, 2];
        f.sop_instance_uid = "1.2.3.4.5.2".into();
        let mut mask = Array3::from_elem((3, 4, 4), false);
        mask[[0, 1, 1]] = true;
        mask[[2, 2, 2]] = true;
        mask[[2, 2, 3]] = true;
        let segment = postprocess::Segment {
            finding_id: 1,
            origin: [1, 6, 6],
            mask,
        };
        let report = Report {
            schema: SCHEMA.into(),
            study_instance_uid: "1.2.3".into(),
            series_instance_uid: "1.2.3.4".into(),
            frame_of_reference_uid: "1.2.3.9".into(),
            analyzed: true,
            model: ModelInfo {
                id: "test-model".into(),
                version: "7".into(),
                sha256: "ab".repeat(32),
            },
            pulmo: BuildInfo::current("2.11.0"),
            device: "cpu".into(),
            precision: "float32".into(),
            series: SeriesInfo {
                slices: 5,
                rows: 16,
                columns: 16,
                spacing_mm: [0.8, 0.8, 2.5],
                slice_thickness_mm: Some(2.5),
            },
            timing_ms: BTreeMap::new(),
            study_score: 0.9,
            lung_rads: LungRads::Cat3,
            operating_score: 0.5,
            warnings: vec![],
            disclaimer: DISCLAIMER.into(),
            findings: vec![f],
            lung_rads_rule: String::new(),
            comparison: None,
            resolved: vec![],
        };
        (report, vec![segment])
    }

    /// Encodes to Part 10 bytes and reads them back, as another toolkit would.
    pub(crate) fn round_trip(object: dicom_object::InMemDicomObject) -> DefaultDicomObject {
        let bytes = to_part10(object).unwrap();
        assert_eq!(&bytes[128..132], b"DICM");
        dicom_object::from_reader(&bytes[128..]).unwrap()
    }

    pub(crate) fn string(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> String {
        obj.get(tag).unwrap().to_str().unwrap().trim().to_owned()
    }
}
