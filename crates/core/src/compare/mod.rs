//! Comparison with a prior study: align the two scans from their lungs, pair each nodule
//! with its prior self, and say how it changed; then assess Lung-RADS with the comparison.
//!
//! [`Snapshot`] is what an analysis keeps of its scan for a later comparison (the lung
//! surface and the study date); [`compare`] takes the current report and snapshot and a
//! [`Prior`] and fills in the report's `comparison`, each finding's `followup` and
//! Tracking UID, `resolved`, and the categories. It knows findings and reports, not DICOM
//! files or how the prior was found.

mod matching;
pub mod register;

pub use matching::{match_findings, MATCHING_RULE, MIN_GATE_MM};
pub use register::{Affine, Aligned};

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::findings::{self, FollowUp, PriorFinding};
use crate::report::{Comparison, Registration, RegistrationStatus, Report};

/// What an analysis keeps of its scan so that a later study can be compared with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Lung surface points in patient coordinates (LPS, mm), about 2.5 mm apart.
    pub lung_surface_mm: Vec<[f64; 3]>,
    /// The StudyDate, `YYYYMMDD` as DICOM writes it, when the study had one.
    pub study_date: Option<String>,
    /// Who the patient is, for finding their other studies ([`patient_key`]); none without
    /// a PatientID.
    #[serde(default)]
    pub patient_key: Option<String>,
    /// How the findings looked (the top [`MAX_VIEWS`] by score): a later study's key image of
    /// a matched nodule shows its prior view beside the current one. Absent in snapshots of
    /// older versions, whose follow-ups then get key images of the current scan alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<FindingView>,
}

/// How many findings' views a snapshot keeps (a finding below them is rarely a later
/// call's match; each view is some 20-40 KB).
pub const MAX_VIEWS: usize = 20;

/// One finding's view: [`crate::report::images::view_png`], base64 in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingView {
    pub finding_id: u32,
    /// The width of the square the view shows, in mm.
    pub fov_mm: f64,
    pub png_base64: String,
}

impl FindingView {
    pub fn new(finding_id: u32, png: &[u8]) -> FindingView {
        use base64::Engine;
        FindingView {
            finding_id,
            fov_mm: crate::report::images::VIEW_FOV_MM,
            png_base64: base64::engine::general_purpose::STANDARD.encode(png),
        }
    }

    /// The view; `None` (with a warning in the log) when it does not decode.
    pub fn view(&self) -> Option<crate::report::images::PriorView> {
        self.pixels()
            .map(|pixels| crate::report::images::PriorView {
                pixels,
                fov_mm: self.fov_mm,
            })
    }

    fn pixels(&self) -> Option<image::RgbImage> {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&self.png_base64)
            .map_err(|e| e.to_string())
            .and_then(|png| image::load_from_memory(&png).map_err(|e| e.to_string()));
        match decoded {
            Ok(image) => Some(image.to_rgb8()),
            Err(error) => {
                tracing::warn!(finding = self.finding_id, %error, "a prior finding's view does not decode; key image without it");
                None
            }
        }
    }
}

impl Prior {
    /// The view of prior finding `finding_id`, when the prior's snapshot kept one.
    pub fn view(&self, finding_id: u32) -> Option<crate::report::images::PriorView> {
        self.snapshot
            .views
            .iter()
            .find(|v| v.finding_id == finding_id)
            .and_then(FindingView::view)
    }
}

/// A key for the patient of PatientID `id` issued by IssuerOfPatientID `issuer`: the hex
/// SHA-256 of both, so that files which group studies by patient do not spell the ID out.
/// None for an empty ID. (A hash of an ID is not an anonymisation: short IDs can be guessed
/// back. It keeps IDs out of sight, not out of reach.)
pub fn patient_key(id: &str, issuer: &str) -> Option<String> {
    use sha2::Digest;
    let id = id.trim();
    if id.is_empty() {
        return None;
    }
    let digest = sha2::Sha256::digest(format!("pulmo-patient\0{}\0{id}", issuer.trim()));
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// A prior study: its report and its snapshot.
#[derive(Debug, Clone)]
pub struct Prior {
    pub report: Report,
    pub snapshot: Snapshot,
}

/// The registration method, as reports name it.
pub const METHOD: &str = "lung-surface-icp-affine";
/// A registration whose lung surfaces stay further apart than this (RMS, mm) has failed.
pub const MAX_RESIDUAL_MM: f64 = 6.0;
/// A registration that stretches or shrinks any direction by more than this factor has
/// failed: inspiration changes lung height by some 10-20 %, not by half.
pub const MAX_STRETCH: f64 = 1.35;
/// Surfaces with fewer points than this are no lungs to align.
const MIN_SURFACE_POINTS: usize = 200;

/// Compares `report` (with its scan's `snapshot`) with `prior`: fills in `comparison`, and
/// when the registration holds, each finding's `followup`, its carried Tracking UID,
/// `resolved`, and the Lung-RADS categories and rules with comparison. A failed
/// registration is reported as failed, with a warning, and no finding is compared.
pub fn compare(report: &mut Report, snapshot: &Snapshot, prior: &Prior) {
    let started = Instant::now();
    forget(report);
    let interval_days = interval_days(
        prior.snapshot.study_date.as_deref(),
        snapshot.study_date.as_deref(),
    );
    let aligned = align(snapshot, &prior.snapshot);
    let time_ms = findings::round_to(started.elapsed().as_secs_f64() * 1e3, 1);
    let registration = registration(&aligned, time_ms);
    report.comparison = Some(Comparison {
        prior_study_instance_uid: prior.report.study_instance_uid.clone(),
        prior_series_instance_uid: prior.report.series_instance_uid.clone(),
        prior_study_date: prior.snapshot.study_date.as_deref().and_then(iso_date),
        interval_days,
        registration,
        matching: MATCHING_RULE.to_owned(),
    });
    if interval_days.is_some_and(|d| d < 0) {
        report.warnings.push(
            "the prior study is dated after this one: the comparison runs backwards in time"
                .to_owned(),
        );
    }
    match aligned {
        Ok(aligned) => follow_up(report, prior, &aligned.map, interval_days.map(|d| d as f64)),
        Err(reason) => report.warnings.push(format!(
            "registration with the prior study failed ({reason}); no finding was compared"
        )),
    }
}

/// Takes any earlier comparison out of `report` (a report compared again starts from its
/// baseline assessment).
fn forget(report: &mut Report) {
    let warning = "registration with the prior study failed";
    report
        .warnings
        .retain(|w| !w.starts_with(warning) && !w.starts_with("the prior study is dated"));
    report.comparison = None;
    report.resolved.clear();
    for finding in &mut report.findings {
        finding.followup = None;
        finding.assess_lung_rads(None);
    }
    let summary = findings::summarize(&report.findings, report.operating_score);
    report.lung_rads = summary.lung_rads;
    report.lung_rads_rule =
        findings::study_rule(&report.findings, report.operating_score, report.lung_rads);
}

/// The alignment of this scan with the prior, or why there is none.
fn align(current: &Snapshot, prior: &Snapshot) -> Result<Aligned, String> {
    let (c, p) = (current.lung_surface_mm.len(), prior.lung_surface_mm.len());
    if c.min(p) < MIN_SURFACE_POINTS {
        return Err(format!(
            "too little lung surface to align: {c} points in this scan, {p} in the prior"
        ));
    }
    let aligned = register::register(&current.lung_surface_mm, &prior.lung_surface_mm)
        .ok_or_else(|| "the lung surfaces could not be aligned".to_owned())?;
    let stretches = aligned.map.stretches();
    if aligned.map.determinant() <= 0.0
        || stretches[0] > MAX_STRETCH
        || stretches[2] < 1.0 / MAX_STRETCH
    {
        return Err(format!(
            "implausible deformation: stretches {:.2}, {:.2}, {:.2}",
            stretches[0], stretches[1], stretches[2]
        ));
    }
    if aligned.residual_mm > MAX_RESIDUAL_MM {
        return Err(format!(
            "the lung surfaces stay {:.1} mm apart (limit {MAX_RESIDUAL_MM} mm)",
            aligned.residual_mm
        ));
    }
    Ok(aligned)
}

fn registration(aligned: &Result<Aligned, String>, time_ms: f64) -> Registration {
    let (status, reason, residual, map) = match aligned {
        Ok(a) => (
            RegistrationStatus::Ok,
            None,
            Some(a.residual_mm),
            Some(a.map),
        ),
        Err(reason) => (RegistrationStatus::Failed, Some(reason.clone()), None, None),
    };
    Registration {
        method: METHOD.to_owned(),
        residual_mm: residual.map(|r| findings::round_to(r, 2)),
        status,
        reason,
        current_to_prior: map.map(|m| m.0.map(|row| row.map(|v| findings::round_to(v, 5)))),
        time_ms,
    }
}

/// Pairs the findings, fills in their follow-ups, carries Tracking UIDs, lists the resolved
/// prior calls and assesses Lung-RADS with the comparison.
fn follow_up(report: &mut Report, prior: &Prior, to_prior: &Affine, interval_days: Option<f64>) {
    let pairs = match_findings(&report.findings, &prior.report.findings, to_prior);
    let mut matched_prior = vec![false; prior.report.findings.len()];
    for (n, finding) in report.findings.iter_mut().enumerate() {
        let pair = pairs.iter().find(|(c, _)| *c == n).map(|(_, p)| *p);
        finding.followup = Some(match pair {
            Some(p) => {
                matched_prior[p] = true;
                let quoted = PriorFinding::quote(&prior.report.findings[p]);
                if quoted.tracking_uid.is_some() {
                    finding.tracking_uid.clone_from(&quoted.tracking_uid);
                }
                FollowUp::matched(finding, quoted, interval_days)
            }
            None => FollowUp::new_nodule(),
        });
        finding.assess_lung_rads(interval_days);
    }
    report.resolved = prior
        .report
        .findings
        .iter()
        .zip(&matched_prior)
        .filter(|(f, matched)| !**matched && prior.report.is_call(f))
        .map(|(f, _)| PriorFinding::quote(f))
        .collect();
    let summary = findings::summarize(&report.findings, report.operating_score);
    report.lung_rads = summary.lung_rads;
    report.lung_rads_rule =
        findings::study_rule(&report.findings, report.operating_score, report.lung_rads);
}

/// Days from `prior` to `current` (DICOM dates, `YYYYMMDD`); None unless both parse.
pub fn interval_days(prior: Option<&str>, current: Option<&str>) -> Option<i64> {
    Some(day_number(current?)? - day_number(prior?)?)
}

/// A DICOM date as `YYYY-MM-DD`.
fn iso_date(date: &str) -> Option<String> {
    day_number(date)?;
    Some(format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..8]))
}

/// Days since 1970-01-01 of a DICOM date `YYYYMMDD` (Howard Hinnant's days_from_civil).
fn day_number(date: &str) -> Option<i64> {
    let date = date.trim();
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = date[..4].parse().ok()?;
    let m: i64 = date[4..6].parse().ok()?;
    let d: i64 = date[6..8].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146097 + doe - 719468)
}

#[cfg(test)]
mod tests;
