//! Scoring follow-up pairs: whether the nodules found in both scans were paired with their
//! own prior selves, how far the reported volume change is from the truth's, and whether
//! the change class (`new`, `growing`, `stable`, `shrinking`) is right.
//!
//! A truth nodule is found in a scan when a call (a finding at or above the report's
//! operating point) hits it (its centre within the nodule's radius; the best-scoring hit).

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::truth::TruthCase;
use super::{Detection, ScanResult};
use crate::findings::Change;

/// One follow-up pair of the truth (`followups` in `pulmo.truth/1`).
#[derive(Debug, Clone, Deserialize)]
pub struct TruthFollowUp {
    pub prior_series_instance_uid: String,
    pub series_instance_uid: String,
    /// The current scan's nodules, each linked to its prior self (or none: new).
    #[serde(default)]
    pub nodules: Vec<TruthLink>,
    /// Prior nodules (their `id`s) that are gone.
    #[serde(default)]
    pub resolved: Vec<u32>,
}

/// How one nodule of the current scan relates to the prior. Ids are 1-based positions in
/// the cases' `nodules`.
#[derive(Debug, Clone, Deserialize)]
pub struct TruthLink {
    pub id: u32,
    pub prior_id: Option<u32>,
    pub change: Change,
    #[serde(default)]
    pub volume_change_percent: Option<f64>,
}

/// The comparison keys of a reported finding, as scoring reads them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Compared {
    #[serde(default)]
    pub change: Option<Change>,
    #[serde(default)]
    pub prior: Option<PriorId>,
    #[serde(default)]
    pub volume_change_percent: Option<f64>,
}

/// A reported prior finding, by id.
#[derive(Debug, Clone, Deserialize)]
pub struct PriorId {
    pub finding_id: u32,
}

/// Reads a report's `comparison` as whether its registration held (None: no comparison).
pub fn registered<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(value.map(|c| c["registration"]["status"] == "ok"))
}

/// Nodules of this size or more count towards the volume-change error (mm).
pub const GROWTH_MIN_MM: f64 = 6.0;

/// The follow-up scores of a set of pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FollowUpScore {
    pub pairs: usize,
    /// Pairs whose current report was compared with the prior and registered.
    pub registered: usize,
    /// Truth nodules present in both scans and found in both.
    pub found_in_both: usize,
    /// Of those, paired with the right prior finding.
    pub matched_correctly: usize,
    pub matching_fraction: f64,
    /// Nodules of 6 mm or more found in both and paired right, with a reported volume change.
    pub volume_change_compared: usize,
    /// Median |reported − true volume change| of those, percentage points.
    pub median_volume_change_error_pp: f64,
    /// Truth nodules found in the current scan (and, unless new, in the prior) whose
    /// reported change class was compared, and how many were right.
    pub change_compared: usize,
    pub change_right: usize,
    pub change_fraction: f64,
}

impl FollowUpScore {
    /// Lines for `pulmo evaluate`'s text summary.
    pub fn to_text(&self) -> String {
        format!(
            "follow-up: {} pairs ({} registered); nodules found in both scans {}, matched right {} \
             ({:.3}); median |volume change error| {:.1} pp over {} nodules >= 6 mm; change class \
             right {} of {} ({:.3})\n",
            self.pairs,
            self.registered,
            self.found_in_both,
            self.matched_correctly,
            self.matching_fraction,
            self.median_volume_change_error_pp,
            self.volume_change_compared,
            self.change_right,
            self.change_compared,
            self.change_fraction
        )
    }
}

/// Scores the truth's follow-up pairs against the reports; None without pairs.
pub fn score(truth: &super::Truth, reports: &HashMap<String, ScanResult>) -> Option<FollowUpScore> {
    if truth.followups.is_empty() {
        return None;
    }
    let case = |uid: &str| truth.cases.iter().find(|c| c.series_instance_uid == uid);
    let mut tally = Tally::default();
    for pair in &truth.followups {
        let (Some(now), Some(before)) = (
            case(&pair.series_instance_uid),
            case(&pair.prior_series_instance_uid),
        ) else {
            continue;
        };
        let empty = ScanResult::default();
        let current = reports.get(&pair.series_instance_uid).unwrap_or(&empty);
        let prior = reports
            .get(&pair.prior_series_instance_uid)
            .unwrap_or(&empty);
        tally.pairs += 1;
        tally.registered += usize::from(current.registered == Some(true));
        for link in &pair.nodules {
            tally.add(link, now, before, current, prior);
        }
    }
    Some(tally.finish())
}

#[derive(Default)]
struct Tally {
    pairs: usize,
    registered: usize,
    found_in_both: usize,
    matched: usize,
    volume_errors: Vec<f64>,
    change_compared: usize,
    change_right: usize,
}

impl Tally {
    fn add(
        &mut self,
        link: &TruthLink,
        now: &TruthCase,
        before: &TruthCase,
        current: &ScanResult,
        prior: &ScanResult,
    ) {
        let Some(nodule) = nth(now, link.id) else {
            return;
        };
        let Some(hit) = found(current, nodule) else {
            return;
        };
        let prior_nodule = link.prior_id.and_then(|p| nth(before, p));
        let found_before = prior_nodule.and_then(|n| found(prior, n));
        match (prior_nodule, found_before) {
            (None, _) => {}
            (Some(_), None) => return, // missed in the prior scan: nothing to pair
            (Some(n), Some(b)) => {
                self.found_in_both += 1;
                let right = hit.followup.prior.as_ref().map(|p| p.finding_id) == Some(b.id);
                self.matched += usize::from(right);
                if right && n.diameter_mm.max(nodule.diameter_mm) >= GROWTH_MIN_MM {
                    if let (Some(got), Some(want)) = (
                        hit.followup.volume_change_percent,
                        link.volume_change_percent,
                    ) {
                        self.volume_errors.push((got - want).abs());
                    }
                }
            }
        }
        self.change_compared += 1;
        self.change_right += usize::from(hit.followup.change == Some(link.change));
    }

    fn finish(mut self) -> FollowUpScore {
        self.volume_errors.sort_by(f64::total_cmp);
        let fraction = |a: usize, b: usize| {
            if b == 0 {
                f64::NAN
            } else {
                a as f64 / b as f64
            }
        };
        FollowUpScore {
            pairs: self.pairs,
            registered: self.registered,
            found_in_both: self.found_in_both,
            matched_correctly: self.matched,
            matching_fraction: fraction(self.matched, self.found_in_both),
            volume_change_compared: self.volume_errors.len(),
            median_volume_change_error_pp: median(&self.volume_errors),
            change_compared: self.change_compared,
            change_right: self.change_right,
            change_fraction: fraction(self.change_right, self.change_compared),
        }
    }
}

fn nth(case: &TruthCase, id: u32) -> Option<&super::truth::TruthNodule> {
    case.nodules.get((id as usize).checked_sub(1)?)
}

/// The best-scoring call of `report` that hits `nodule`.
fn found<'a>(report: &'a ScanResult, nodule: &super::truth::TruthNodule) -> Option<&'a Detection> {
    let operating = report.operating_score.unwrap_or(0.0);
    report
        .findings
        .iter()
        .filter(|f| f.score >= operating && super::hits(nodule, f))
        .max_by(|a, b| a.score.total_cmp(&b.score))
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUTH: &str = r#"{"schema": "pulmo.truth/1", "cases": [
        {"series_instance_uid": "1.1", "nodules": [
            {"center_patient_mm": [0, 0, 0], "diameter_mm": 6.0},
            {"center_patient_mm": [50, 0, 0], "diameter_mm": 8.0},
            {"center_patient_mm": [-50, 0, 0], "diameter_mm": 5.0}]},
        {"series_instance_uid": "1.2", "nodules": [
            {"center_patient_mm": [10, 0, 0], "diameter_mm": 9.0},
            {"center_patient_mm": [60, 0, 0], "diameter_mm": 8.0},
            {"center_patient_mm": [10, 40, 0], "diameter_mm": 7.0}]}],
      "followups": [{"prior_series_instance_uid": "1.1", "series_instance_uid": "1.2",
        "nodules": [
            {"id": 1, "prior_id": 1, "change": "growing", "volume_change_percent": 237.5},
            {"id": 2, "prior_id": 2, "change": "stable", "volume_change_percent": 0.0},
            {"id": 3, "prior_id": null, "change": "new"}],
        "resolved": [3]}]}"#;

    fn finding(
        id: u32,
        c: [f64; 3],
        change: Option<&str>,
        prior: Option<u32>,
        dv: Option<f64>,
    ) -> serde_json::Value {
        serde_json::json!({"id": id, "center_patient_mm": c, "score": 0.9, "change": change,
            "prior": prior.map(|p| serde_json::json!({"finding_id": p})), "volume_change_percent": dv})
    }

    #[test]
    fn pairs_volume_changes_and_change_classes_are_scored_against_the_truth() {
        let truth: super::super::Truth = serde_json::from_str(TRUTH).unwrap();
        let prior: ScanResult = serde_json::from_value(serde_json::json!({"operating_score": 0.5,
            "findings": [finding(1, [0.0, 0.0, 0.0], None, None, None), finding(2, [50.0, 0.0, 0.0], None, None, None)]}))
        .unwrap();
        let current: ScanResult =
            serde_json::from_value(serde_json::json!({"operating_score": 0.5,
            "comparison": {"registration": {"status": "ok"}},
            "findings": [
                finding(1, [10.0, 0.0, 0.0], Some("growing"), Some(1), Some(227.5)),
                // Paired with the wrong prior finding, and called growing.
                finding(2, [60.0, 0.0, 0.0], Some("growing"), Some(1), Some(40.0)),
                finding(3, [10.0, 40.0, 0.0], Some("new"), None, None)]}))
            .unwrap();
        let reports = HashMap::from([("1.1".to_owned(), prior), ("1.2".to_owned(), current)]);
        let s = score(&truth, &reports).unwrap();
        assert_eq!((s.pairs, s.registered), (1, 1));
        assert_eq!((s.found_in_both, s.matched_correctly), (2, 1));
        assert_eq!(s.volume_change_compared, 1);
        assert_eq!(s.median_volume_change_error_pp, 10.0);
        assert_eq!((s.change_compared, s.change_right), (3, 2));
    }
}
