//! A reader's review of a report: the verdict on each finding, whether the review is
//! signed, which decisions survive a re-analysis, and the report that a signed review
//! turns into (the accepted findings only, with the reader's corrected types).
//!
//! This module knows findings and reports; where decisions are stored, who may make them
//! and how they reach a PACS belong to the service and its transports.

use ndarray::Array3;
use serde::{Deserialize, Serialize};

use super::Report;
use crate::findings::{categorize, Finding, NoduleType};
use crate::postprocess::Segment;

/// A reader's decision on one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accepted,
    Rejected,
}

impl Verdict {
    /// As the API and the index spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Rejected => "rejected",
        }
    }

    /// The verdict `text` names, if any.
    pub fn parse(text: &str) -> Option<Verdict> {
        match text {
            "accepted" => Some(Verdict::Accepted),
            "rejected" => Some(Verdict::Rejected),
            _ => None,
        }
    }
}

/// The review of one finding, as the report carries it (`findings[].review`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingReview {
    pub verdict: Verdict,
    /// The reader: the name of the token (or proxy user) that decided.
    pub reader: String,
    /// When, RFC 3339 in UTC.
    pub at: String,
    pub comment: Option<String>,
    /// The reader's correction of the finding's type, when they made one.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub corrected_type: Option<NoduleType>,
}

/// Where a study's review stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReviewStatus {
    /// No finding decided.
    Unreviewed,
    /// Some decided, not signed (or signed before a re-analysis changed the findings).
    InProgress,
    /// Signed: the verified SR was written.
    Signed,
}

/// The review of a whole report (the report's top-level `review`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewSummary {
    pub status: ReviewStatus,
    /// Who signed; `None` until signed.
    pub reader: Option<String>,
    /// When, RFC 3339 in UTC; `None` until signed.
    pub signed_at: Option<String>,
}

/// Where and how large a decided finding was, so that the decision can be carried to
/// the same nodule found again by a re-analysis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mark {
    pub center_patient_mm: [f64; 3],
    pub diameter_mm: f64,
}

impl From<&Finding> for Mark {
    fn from(f: &Finding) -> Mark {
        Mark {
            center_patient_mm: f.center_patient_mm,
            diameter_mm: f.diameter_mm,
        }
    }
}

/// Centres closer than this always match (a re-analysis with one more slice moves a
/// small nodule's centre by up to about a slice).
pub const MATCH_MIN_DISTANCE_MM: f64 = 3.0;
/// Diameters that differ by less than this always match.
pub const MATCH_MIN_SIZE_MM: f64 = 2.0;

/// Whether a decision made on `old` holds for `new`, found by a later analysis of the same
/// series: their centres lie within half the larger diameter of each other (at least
/// [`MATCH_MIN_DISTANCE_MM`]), and their diameters differ by at most half the larger one
/// (at least [`MATCH_MIN_SIZE_MM`]).
pub fn same_nodule(old: Mark, new: Mark) -> bool {
    let larger = old.diameter_mm.max(new.diameter_mm);
    let distance = old
        .center_patient_mm
        .iter()
        .zip(new.center_patient_mm)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let size = (old.diameter_mm - new.diameter_mm).abs();
    distance <= (larger / 2.0).max(MATCH_MIN_DISTANCE_MM)
        && size <= (larger / 2.0).max(MATCH_MIN_SIZE_MM)
}

/// The report a signed review puts its name to: only the accepted findings (calls and
/// candidates alike), each with the reader's corrected type and the Lung-RADS category
/// that type gives; every accepted finding counts, so the operating point is 0.
pub fn verified(report: &Report, decision: impl Fn(u32) -> Option<FindingReview>) -> Report {
    let findings: Vec<Finding> = report
        .findings
        .iter()
        .filter_map(|f| {
            let review = decision(f.id)?;
            (review.verdict == Verdict::Accepted).then(|| corrected(f, review.corrected_type))
        })
        .collect();
    let summary = crate::findings::summarize(&findings, 0.0);
    Report {
        findings,
        operating_score: 0.0,
        lung_rads: summary.lung_rads,
        ..report.clone()
    }
}

fn corrected(f: &Finding, kind: Option<NoduleType>) -> Finding {
    let Some(kind) = kind.filter(|k| *k != f.nodule_type) else {
        return f.clone();
    };
    let solid_core_mm = (kind == NoduleType::PartSolid).then_some(f.solid_core_mm.unwrap_or(0.0));
    Finding {
        nodule_type: kind,
        solid_core_mm,
        lung_rads: categorize(kind, f.diameter_mm, solid_core_mm),
        ..f.clone()
    }
}

/// A finding's voxels as a service files them beside its report (`segments.json`), so
/// that the SEG of a signed review can be written without analysing again: the mask as
/// runs of set voxels in row-major order, `[start, length, start, length, ...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSegment {
    pub finding_id: u32,
    pub origin: [usize; 3],
    pub shape: [usize; 3],
    pub runs: Vec<usize>,
}

impl From<&Segment> for SavedSegment {
    fn from(segment: &Segment) -> SavedSegment {
        let mut runs = Vec::new();
        let mut open: Option<usize> = None;
        for (n, &set) in segment.mask.iter().enumerate() {
            match (set, open) {
                (true, None) => open = Some(n),
                (false, Some(start)) => {
                    runs.extend([start, n - start]);
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(start) = open {
            runs.extend([start, segment.mask.len() - start]);
        }
        let (k, r, c) = segment.mask.dim();
        SavedSegment {
            finding_id: segment.finding_id,
            origin: segment.origin,
            shape: [k, r, c],
            runs,
        }
    }
}

impl SavedSegment {
    /// The segment again; `None` when a run lies outside the shape (a damaged file).
    pub fn to_segment(&self) -> Option<Segment> {
        let [k, r, c] = self.shape;
        let mut mask = Array3::from_elem((k, r, c), false);
        let flat = mask.as_slice_mut()?;
        for run in self.runs.chunks(2) {
            let [start, length] = run else { return None };
            flat.get_mut(*start..start.checked_add(*length)?)?
                .fill(true);
        }
        Some(Segment {
            finding_id: self.finding_id,
            origin: self.origin,
            mask,
        })
    }
}

/// RFC 3339 (UTC, seconds) of a Unix time in seconds.
pub fn rfc3339(seconds: f64) -> String {
    dicom_core::chrono::DateTime::from_timestamp(seconds.floor() as i64, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::LungRads;
    use crate::report::tests::analysis;

    fn mark(x: f64, diameter_mm: f64) -> Mark {
        Mark {
            center_patient_mm: [x, 0.0, 0.0],
            diameter_mm,
        }
    }

    #[test]
    fn a_nodule_moved_a_little_matches_and_a_different_one_does_not() {
        assert!(same_nodule(mark(0.0, 8.0), mark(2.5, 8.4)));
        assert!(
            same_nodule(mark(0.0, 8.0), mark(4.0, 8.0)),
            "half the diameter"
        );
        assert!(!same_nodule(mark(0.0, 8.0), mark(4.5, 8.0)));
        assert!(
            same_nodule(mark(0.0, 3.0), mark(2.9, 4.5)),
            "small ones: 3 mm"
        );
        assert!(!same_nodule(mark(0.0, 8.0), mark(1.0, 17.0)), "grew twice");
    }

    fn decided(verdict: Verdict, corrected_type: Option<NoduleType>) -> FindingReview {
        FindingReview {
            verdict,
            reader: "dr".into(),
            at: rfc3339(0.0),
            comment: None,
            corrected_type,
        }
    }

    #[test]
    fn the_verified_report_keeps_accepted_findings_with_their_corrected_type() {
        let (mut report, _) = analysis();
        let mut second = report.findings[0].clone();
        second.id = 2;
        second.score = 0.1;
        report.findings.push(second);
        let mut third = report.findings[0].clone();
        third.id = 3;
        report.findings.push(third);
        let verified = verified(&report, |id| match id {
            1 => Some(decided(Verdict::Rejected, None)),
            2 => Some(decided(Verdict::Accepted, Some(NoduleType::GroundGlass))),
            _ => None,
        });
        let ids: Vec<u32> = verified.findings.iter().map(|f| f.id).collect();
        assert_eq!(ids, [2], "the rejected and the undecided are left out");
        assert_eq!(verified.findings[0].nodule_type, NoduleType::GroundGlass);
        assert_eq!(
            verified.operating_score, 0.0,
            "an accepted candidate counts"
        );
        assert_ne!(verified.lung_rads, LungRads::Cat1);
    }

    #[test]
    fn a_saved_segment_reads_back_the_same() {
        let (_, segments) = analysis();
        let saved = SavedSegment::from(&segments[0]);
        assert_eq!(saved.runs, [5, 1, 42, 2]);
        let json = serde_json::to_string(&saved).unwrap();
        let back: SavedSegment = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_segment().unwrap(), segments[0]);
        let damaged = SavedSegment {
            runs: vec![40, 100],
            ..saved
        };
        assert_eq!(damaged.to_segment(), None);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_700_000_000.7), "2023-11-14T22:13:20Z");
    }
}
