//! Follow-up: how a nodule changed since the prior study, in Lung-RADS' terms.
//!
//! The numbers here (diameter and volume change, volume doubling time, the change class)
//! come from one current finding and the prior finding it was matched to; how the two
//! scans were aligned and the findings matched is the `compare` module's business.

use serde::{Deserialize, Serialize};

/// Lung-RADS v2022 calls a nodule growing when its mean diameter increased by more than
/// this (mm) within 12 months; a decrease by more than this is shrinking here.
pub const GROWTH_MM: f64 = 1.5;

/// How a nodule changed since the prior study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// No prior finding matched it.
    New,
    /// Mean diameter up by more than [`GROWTH_MM`].
    Growing,
    /// Mean diameter within [`GROWTH_MM`] of the prior's.
    Stable,
    /// Mean diameter down by more than [`GROWTH_MM`].
    Shrinking,
}

impl Change {
    /// The class of a change in mean diameter, `current - prior` (mm, each rounded to
    /// 0.1 mm as Lung-RADS measures).
    pub fn of_diameters(current_mm: f64, prior_mm: f64) -> Change {
        let delta = super::round_to(current_mm, 1) - super::round_to(prior_mm, 1);
        // Rounded differences such as 1.6 - 0.1 carry float noise: compare at 0.01 mm.
        let delta = super::round_to(delta, 2);
        if delta > GROWTH_MM {
            Change::Growing
        } else if delta < -GROWTH_MM {
            Change::Shrinking
        } else {
            Change::Stable
        }
    }

    /// As written in reports: `new`, `growing`, `stable`, `shrinking`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Growing => "growing",
            Change::Stable => "stable",
            Change::Shrinking => "shrinking",
        }
    }
}

/// A finding of the prior study, as a follow-up report quotes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorFinding {
    /// The finding's `id` in the prior report.
    pub finding_id: u32,
    pub diameter_mm: f64,
    pub volume_mm3: f64,
    /// Centre in the prior study's patient coordinates (LPS, mm).
    pub center_patient_mm: [f64; 3],
    /// The prior finding's solid core, for part-solid nodules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solid_core_mm: Option<f64>,
    /// Its category in the prior report.
    pub lung_rads: super::LungRads,
    /// The prior's Tracking UID (when its report recorded one): the matched current
    /// finding carries the same one into its SR and SEG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_uid: Option<String>,
}

impl PriorFinding {
    /// How a follow-up quotes `finding` of the prior report.
    pub fn quote(finding: &super::Finding) -> PriorFinding {
        PriorFinding {
            finding_id: finding.id,
            diameter_mm: finding.diameter_mm,
            volume_mm3: finding.volume_mm3,
            center_patient_mm: finding.center_patient_mm,
            solid_core_mm: finding.solid_core_mm,
            lung_rads: finding.lung_rads,
            tracking_uid: finding.tracking_uid.clone(),
        }
    }
}

/// A current finding's comparison with the prior study. Present on every finding of a
/// report whose comparison succeeded; absent otherwise (no prior, or a failed registration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUp {
    pub change: Change,
    /// The matched prior finding; null for a new nodule.
    pub prior: Option<PriorFinding>,
    /// Current minus prior mean diameter (mm); null for a new nodule.
    pub diameter_change_mm: Option<f64>,
    /// Volume change relative to the prior, in percent; null for a new nodule.
    pub volume_change_percent: Option<f64>,
    /// Volume doubling time in days; null unless the nodule is growing and the interval
    /// between the studies is known.
    pub volume_doubling_days: Option<f64>,
}

impl FollowUp {
    /// The follow-up of a nodule no prior finding matched.
    pub fn new_nodule() -> FollowUp {
        FollowUp {
            change: Change::New,
            prior: None,
            diameter_change_mm: None,
            volume_change_percent: None,
            volume_doubling_days: None,
        }
    }

    /// The follow-up of `current` matched to `prior`, `interval_days` apart (when known).
    pub fn matched(
        current: &super::Finding,
        prior: PriorFinding,
        interval_days: Option<f64>,
    ) -> FollowUp {
        let change = Change::of_diameters(current.diameter_mm, prior.diameter_mm);
        let volume_change_percent = (prior.volume_mm3 > 0.0)
            .then(|| super::round_to(100.0 * (current.volume_mm3 / prior.volume_mm3 - 1.0), 1));
        let volume_doubling_days = match (change, interval_days) {
            (Change::Growing, Some(days)) => {
                doubling_days(prior.volume_mm3, current.volume_mm3, days)
            }
            _ => None,
        };
        FollowUp {
            change,
            diameter_change_mm: Some(super::round_to(current.diameter_mm - prior.diameter_mm, 1)),
            prior: Some(prior),
            volume_change_percent,
            volume_doubling_days,
        }
    }
}

/// Volume doubling time (days) of a nodule that went from `before` to `after` mm³ in
/// `days`: `days × ln 2 / ln(after / before)`, the exponential-growth model of
/// Schwartz (1961) that screening programmes use. None unless the volume grew and the
/// interval is positive.
pub fn doubling_days(before: f64, after: f64, days: f64) -> Option<f64> {
    (before > 0.0 && after > before && days > 0.0)
        .then(|| super::round_to(days * std::f64::consts::LN_2 / (after / before).ln(), 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::LungRads;
    use crate::testing::finding;

    #[test]
    fn growth_is_more_than_one_and_a_half_millimetres_of_mean_diameter() {
        assert_eq!(Change::of_diameters(7.6, 6.0), Change::Growing);
        assert_eq!(Change::of_diameters(7.5, 6.0), Change::Stable);
        assert_eq!(Change::of_diameters(4.5, 6.0), Change::Stable);
        assert_eq!(Change::of_diameters(4.4, 6.0), Change::Shrinking);
        // Sizes are compared as reported, to 0.1 mm: 7.54 is 7.5.
        assert_eq!(Change::of_diameters(7.54, 6.0), Change::Stable);
    }

    #[test]
    fn doubling_time_of_a_volume_that_doubled_is_the_interval() {
        assert_eq!(doubling_days(100.0, 200.0, 365.0), Some(365.0));
        assert_eq!(doubling_days(100.0, 400.0, 365.0), Some(183.0));
        assert_eq!(doubling_days(100.0, 100.0, 365.0), None);
        assert_eq!(doubling_days(100.0, 90.0, 365.0), None);
        assert_eq!(doubling_days(100.0, 200.0, 0.0), None);
    }

    #[test]
    fn a_matched_finding_gets_its_changes_and_a_doubling_time_only_when_growing() {
        let mut current = finding(0.9, LungRads::Cat4A);
        current.diameter_mm = 8.0;
        current.volume_mm3 = 268.0;
        let mut prior = PriorFinding::quote(&current);
        prior.diameter_mm = 6.3;
        prior.volume_mm3 = 134.0;
        let grown = FollowUp::matched(&current, prior.clone(), Some(200.0));
        assert_eq!(grown.change, Change::Growing);
        assert_eq!(grown.diameter_change_mm, Some(1.7));
        assert_eq!(grown.volume_change_percent, Some(100.0));
        assert_eq!(grown.volume_doubling_days, Some(200.0));
        assert_eq!(
            FollowUp::matched(&current, prior.clone(), None).volume_doubling_days,
            None
        );
        prior.diameter_mm = 7.0;
        let stable = FollowUp::matched(&current, prior, Some(200.0));
        assert_eq!(stable.change, Change::Stable);
        assert_eq!(stable.volume_doubling_days, None);
        assert_eq!(stable.volume_change_percent, Some(100.0));
    }
}
