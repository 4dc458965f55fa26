//! The comparison block of a follow-up report: which prior study the findings were compared
//! with, how far apart, and how the two scans were aligned.

use serde::{Deserialize, Serialize};

/// The prior study a report was compared with (`comparison` in the JSON report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub prior_study_instance_uid: String,
    pub prior_series_instance_uid: String,
    /// The prior's StudyDate as `YYYY-MM-DD`, when it had one.
    pub prior_study_date: Option<String>,
    /// Days from the prior's StudyDate to this study's; null unless both are known.
    pub interval_days: Option<i64>,
    pub registration: Registration,
    /// How findings were paired across the studies, in words.
    #[serde(default)]
    pub matching: String,
}

/// How the prior scan was aligned with this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// The method, e.g. `lung-surface-icp-affine`.
    pub method: String,
    /// Root-mean-square distance (mm) between the aligned lung surfaces (the closest 90 %
    /// of surface points); null when there was nothing to measure.
    pub residual_mm: Option<f64>,
    /// `ok`, or `failed` (then no finding was compared, and `reason` says why).
    pub status: RegistrationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The affine map from this study's patient coordinates (LPS mm) to the prior's, as
    /// three rows `[a, b, c, t]`: `prior = A · current + t`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_to_prior: Option<[[f64; 4]; 3]>,
    /// Milliseconds the registration took.
    #[serde(default)]
    pub time_ms: f64,
}

/// Whether a registration can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationStatus {
    Ok,
    Failed,
}
