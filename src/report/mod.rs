//! Reports: what pulmo hands back, per analysed series.
//!
//! [`Report`] is the JSON report (`pulmo.report/1`, documented in `docs/report-schema.md`).
//! DICOM SR, SEG and key images are encoded here as they land. This module knows findings
//! and series identity; it knows nothing of HTTP or of how the findings were computed.

pub mod deidentify;
pub mod table;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::findings::{Finding, LungRads};

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
    pub series: SeriesInfo,
    /// Milliseconds per stage, and `total`.
    pub timing_ms: BTreeMap<String, f64>,
    pub study_score: f64,
    pub lung_rads: LungRads,
    pub warnings: Vec<String>,
    pub disclaimer: String,
    pub findings: Vec<Finding>,
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
    /// This binary.
    pub fn current() -> Self {
        BuildInfo {
            version: crate::build_info::VERSION.to_owned(),
            git: crate::build_info::GIT_REV.to_owned(),
            libtorch: crate::build_info::LIBTORCH_VERSION.to_owned(),
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
