//! Findings: what a radiologist acts on, in the domain's own words.
//!
//! A [`Finding`] is one nodule with its position, size, composition and score; this module
//! also assigns Lung-RADS v2022 categories and the study-level summary. It knows nothing of
//! DICOM, tensors or files: measurements arrive here already in millimetres.

mod followup;
mod lung_rads;

pub use followup::{doubling_days, Change, FollowUp, PriorFinding, GROWTH_MM};
pub use lung_rads::{
    assess, categorize, management_note, overall, thick_slice_caveat, Assessment, History, LungRads,
};

use serde::{Deserialize, Serialize};

/// Composition of a nodule, from the attenuation of its voxels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoduleType {
    /// Soft-tissue attenuation throughout.
    Solid,
    /// A solid core inside a ground-glass halo.
    PartSolid,
    /// Hazy increased attenuation that does not obscure vessels (non-solid).
    GroundGlass,
}

/// Which lung a finding lies in, from the patient's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Laterality {
    Left,
    Right,
}

/// One nodule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// 1-based, in descending order of score within a report.
    pub id: u32,
    /// Centre in patient coordinates (LPS, mm).
    pub center_patient_mm: [f64; 3],
    /// Centre as `[column, row, slice]` voxel indices of the source series.
    pub center_voxel: [u32; 3],
    /// The source image through the centre.
    pub sop_instance_uid: String,
    pub instance_number: Option<i32>,
    /// Mean of long and short axis on the axial plane (the Lung-RADS "diameter"), 0.1 mm.
    pub diameter_mm: f64,
    pub long_axis_mm: f64,
    pub short_axis_mm: f64,
    pub volume_mm3: f64,
    pub mean_hu: f64,
    #[serde(rename = "type")]
    pub nodule_type: NoduleType,
    /// Mean diameter of the solid core, for part-solid nodules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solid_core_mm: Option<f64>,
    /// Model confidence in [0, 1].
    pub score: f64,
    pub lung_rads: LungRads,
    pub laterality: Laterality,
    /// The network outputs the score was made from, for researchers who weigh them again
    /// (`pulmo evaluate --classifier-weight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logits: Option<Logits>,
    /// The rule of the Lung-RADS v2022 table that gave `lung_rads`, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lung_rads_rule: String,
    /// Identifies this nodule in the SR and SEG; a follow-up carries the prior's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_uid: Option<String>,
    /// The comparison with the prior study: `change`, `prior`, `diameter_change_mm`,
    /// `volume_change_percent`, `volume_doubling_days`. Absent without a comparison.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub followup: Option<FollowUp>,
}

/// A finding's network outputs: its score is `sigmoid(detector / 8 + weight × classifier)`,
/// with the bundle's `[classifier] weight`, or `sigmoid(detector / 8)` without a classifier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Logits {
    /// The segmentation network's highest logit inside the finding (over all passes).
    pub detector: f64,
    /// The candidate classifier's logit for the crop around it, when the bundle has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<f64>,
}

impl Finding {
    /// Whether this finding is one of the model's positive calls at `operating_score`
    /// (inclusive); the others are candidates listed for review.
    pub fn is_call(&self, operating_score: f64) -> bool {
        self.score >= operating_score
    }
}

/// The study-level summary of a list of findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The highest finding score; 0 when there are none. (Not a combination of all of them:
    /// a chest has many low-scoring candidates, and combining them says "1" for every study.)
    pub study_score: f64,
    /// The highest category among the findings at or above the operating point; 1 when
    /// there are none.
    pub lung_rads: LungRads,
}

impl Finding {
    /// Assesses this finding's Lung-RADS category from its size, type and follow-up (none:
    /// baseline), with the rule that gave it. `interval_days` is the time since the prior.
    pub fn assess_lung_rads(&mut self, interval_days: Option<f64>) {
        let history = match &self.followup {
            None => History::Baseline,
            Some(f) => match (f.change, &f.prior) {
                (Change::New, _) | (_, None) => History::New,
                (Change::Growing, _) => History::Growing,
                (Change::Stable | Change::Shrinking, Some(prior)) => History::Stable {
                    prior: prior.lung_rads,
                    interval_days,
                },
            },
        };
        let a = assess(
            self.nodule_type,
            self.diameter_mm,
            self.solid_core_mm,
            history,
        );
        self.lung_rads = a.category;
        self.lung_rads_rule = a.rule;
    }
}

/// The rule that gave a study's category: the rule of its first call with that category,
/// or "no nodule called" for category 1; with v2022's management note for 4B.
pub fn study_rule(findings: &[Finding], operating_score: f64, category: LungRads) -> String {
    let worst = findings
        .iter()
        .filter(|f| f.is_call(operating_score))
        .find(|f| f.lung_rads == category);
    let mut rule = match worst {
        Some(f) if !f.lung_rads_rule.is_empty() => {
            format!("finding {}: {}", f.id, f.lung_rads_rule)
        }
        Some(f) => format!("finding {}: {}", f.id, category.as_str()),
        None => format!("no nodule called: {}", category.as_str()),
    };
    if let Some(note) = management_note(category) {
        rule = format!("{rule}; {note}");
    }
    rule
}

/// Summarises findings for the study: only those scoring at least `operating_score` (the
/// model's positive calls) count towards its category, so that the low-scoring candidates
/// listed for review cannot raise it on their own.
pub fn summarize(findings: &[Finding], operating_score: f64) -> Summary {
    let top = findings.iter().map(|f| f.score).fold(0.0, f64::max);
    Summary {
        study_score: round_to(top.clamp(0.0, 1.0), 4),
        lung_rads: overall(
            findings
                .iter()
                .filter(|f| f.is_call(operating_score))
                .map(|f| f.lung_rads),
        ),
    }
}

/// Sorts by descending score and numbers the findings from 1.
pub fn rank(findings: &mut [Finding]) {
    findings.sort_by(|a, b| b.score.total_cmp(&a.score));
    for (n, finding) in findings.iter_mut().enumerate() {
        finding.id = n as u32 + 1;
    }
}

/// Rounds to `digits` decimals, for values reported to a stated precision.
pub fn round_to(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::finding;

    #[test]
    fn empty_study_is_category_1_with_score_0() {
        let summary = summarize(&[], 0.5);
        assert_eq!(summary.lung_rads, LungRads::Cat1);
        assert_eq!(summary.study_score, 0.0);
    }

    #[test]
    fn study_score_is_the_top_score_and_category_the_worst_call() {
        let findings = [finding(0.5, LungRads::Cat2), finding(0.6, LungRads::Cat4A)];
        let summary = summarize(&findings, 0.5);
        assert_eq!(summary.study_score, 0.6);
        assert_eq!(summary.lung_rads, LungRads::Cat4A);
    }

    #[test]
    fn findings_below_the_operating_point_do_not_set_the_category() {
        let findings = [
            finding(0.95, LungRads::Cat2),
            finding(0.3, LungRads::Cat4B),
            finding(0.2, LungRads::Cat3),
        ];
        let summary = summarize(&findings, 0.9);
        assert_eq!(summary.lung_rads, LungRads::Cat2);
        assert_eq!(summary.study_score, 0.95);
        // Only low-scoring candidates: category 1, but the score still says how close.
        let summary = summarize(&findings[1..], 0.9);
        assert_eq!(summary.lung_rads, LungRads::Cat1);
        assert_eq!(summary.study_score, 0.3);
    }

    #[test]
    fn rank_orders_by_score_and_numbers_from_one() {
        let mut findings = [finding(0.2, LungRads::Cat2), finding(0.9, LungRads::Cat3)];
        rank(&mut findings);
        assert_eq!((findings[0].id, findings[0].score), (1, 0.9));
        assert_eq!((findings[1].id, findings[1].score), (2, 0.2));
    }

    #[test]
    fn serialises_type_and_category_as_radiologists_write_them() {
        let json = serde_json::to_value(finding(0.9, LungRads::Cat4B)).unwrap();
        assert_eq!(json["type"], "solid");
        assert_eq!(json["lung_rads"], "4B");
        assert_eq!(json["laterality"], "left");
        assert!(json.get("solid_core_mm").is_none());
    }
}
