//! Evaluation: LUNA16-style FROC of reports against known truth, in Rust so that
//! researchers need no Python.
//!
//! This is pulmo's one FROC implementation: `pulmo evaluate`, `scripts/eval/evaluate` and the demo
//! all use it (it gives the numbers the retired `scripts/evaluate.py` gave on the same input;
//! a test pins them). A finding hits a nodule when its centre lies within the
//! nodule's radius of the nodule's centre; several hits on one nodule count once, with the
//! best score; nodules under 3 mm are excluded, and a finding that hits only excluded
//! nodules is neither a true nor a false positive. Every other finding is a false positive.
//! A truth series without a report is a scan with no findings; which series are scans
//! depends on the kind of truth ([`truth`]: pulmo's JSON, or LUNA16's annotations CSV).
//!
//! This module reads JSON and CSV files; it knows nothing of DICOM, tensors or how findings
//! were made.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::findings::{self, LungRads, NoduleType};

pub mod anatomy;
pub mod followup;
pub mod truth;
pub mod verdicts;

pub use truth::{load_truth, load_truths, Truth, TruthCase, TruthNodule};

/// False positives per scan at which sensitivity is reported (LUNA16).
pub const FP_RATES: [f64; 7] = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0];
/// Nodules smaller than this (mm) are excluded.
pub const MIN_DIAMETER_MM: f64 = 3.0;
/// The operating point (FP/scan) of the per-size sensitivities.
pub const SIZE_OPERATING_POINT: f64 = 1.0;
/// Size bins of the per-size sensitivity, `[from, to)` in mm.
const SIZE_BINS: [(&str, f64, f64); 4] = [
    ("3-6", 3.0, 6.0),
    ("6-10", 6.0, 10.0),
    ("10-20", 10.0, 20.0),
    (">=20", 20.0, f64::INFINITY),
];

/// What can stop an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON of the expected shape")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: no column {column} (a truth CSV has seriesuid,coordX,coordY,coordZ,diameter_mm)"
    )]
    CsvColumn { path: PathBuf, column: &'static str },
    #[error("{path} line {line}: not a row of seriesuid,coordX,coordY,coordZ,diameter_mm")]
    CsvRow {
        path: PathBuf,
        line: u64,
        #[source]
        source: csv::Error,
    },
    #[error("{path} line {line}: {reason}")]
    CsvValue {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error(
        "the report of series {series} has findings without logits (written before pulmo \
         reported them): it cannot be scored with another classifier weight"
    )]
    NoLogits { series: String },
    #[error("no reports in {dir} (no pulmo.report/1 JSON in it, nor in {dir}/reports)")]
    NoReports { dir: PathBuf },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The parts of a `pulmo.report/1` that evaluation reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ScanResult {
    /// The model's operating point: findings at or above it are its calls.
    #[serde(default)]
    pub operating_score: Option<f64>,
    /// The study's Lung-RADS category, as reported.
    #[serde(default)]
    pub lung_rads: Option<LungRads>,
    #[serde(default)]
    pub findings: Vec<Detection>,
    /// Whether the report was compared with a prior study and the registration held.
    #[serde(
        default,
        rename = "comparison",
        deserialize_with = "followup::registered"
    )]
    pub registered: Option<bool>,
}

/// One reported finding, as evaluation sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct Detection {
    pub center_patient_mm: [f64; 3],
    pub score: f64,
    #[serde(default)]
    pub diameter_mm: Option<f64>,
    #[serde(default)]
    pub lung_rads: Option<LungRads>,
    /// The network outputs its score was made from (absent from reports written before
    /// 2026-12-07).
    #[serde(default)]
    pub logits: Option<findings::Logits>,
    /// Its `id` in the report (0 in reports without ids).
    #[serde(default)]
    pub id: u32,
    /// The comparison with the prior study, when there was one.
    #[serde(default, flatten)]
    pub followup: followup::Compared,
}

/// Sensitivity in one size bin at [`SIZE_OPERATING_POINT`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeBin {
    pub nodules: usize,
    pub sensitivity: f64,
}

/// How often the reported Lung-RADS category equals the one the truth implies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    pub compared: usize,
    pub agreeing: usize,
    /// `agreeing / compared`; NaN (JSON null) when nothing was compared.
    pub fraction: f64,
}

/// The FROC summary, and what the calls at operating points amount to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub scans: usize,
    pub nodules: usize,
    pub nodules_ge_6mm: usize,
    pub detected_any_score: usize,
    pub false_positives_total: usize,
    /// Keyed as the Python script keys them: `"0.125"` … `"8.0"`.
    pub sensitivity_at_fp_per_scan: BTreeMap<String, f64>,
    /// Mean of the seven sensitivities (competition performance metric).
    pub cpm: f64,
    pub sensitivity_ge_6mm_at_1fp: f64,
    pub median_abs_diameter_error_mm: f64,
    /// Per size bin (truth diameter), at 1 FP/scan.
    pub sensitivity_by_size_at_1fp: BTreeMap<String, SizeBin>,
    /// Per detected nodule: the best hit's category against the truth's size and type.
    pub lung_rads_nodules: Agreement,
    /// Per scan: the report's study category against the worst truth nodule's (1 if none).
    pub lung_rads_scans: Agreement,
    /// At the reports' own operating point (the model's; absent when the reports name none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operating_point: Option<OperatingPoint>,
    /// At each operating point asked for (`pulmo evaluate --operating`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operating_points: Vec<OperatingPoint>,
    /// Follow-up pairs scored, when the truth has any (`followups`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub followup: Option<followup::FollowUpScore>,
}

/// What the model's calls (findings at or above one score) amount to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperatingPoint {
    pub operating_score: f64,
    pub scans: usize,
    /// Nodules of 3 mm or more, and how many a call hits.
    pub nodules: usize,
    pub nodules_called: usize,
    /// The same for nodules of 6 mm or more.
    pub nodules_ge_6mm: usize,
    pub nodules_ge_6mm_called: usize,
    /// Calls that hit no nodule at all.
    pub false_calls: usize,
    pub false_calls_per_scan: f64,
    /// False calls by where they lie, for scans whose truth records the anatomy
    /// (`hilum`, `heart border`, `diaphragm`, `mediastinum`, `chest wall`, `parenchyma`);
    /// the others are counted as `unknown`.
    pub false_calls_by_location: BTreeMap<String, usize>,
    /// Scans whose study category from the calls equals the one from the findings that
    /// hit a nodule (higher: false calls raised it; lower: a true nodule fell below).
    pub category_as_true_findings: usize,
    pub category_higher: usize,
    pub category_lower: usize,
}

/// Every `pulmo.report/1` JSON directly in `dir` (as `pulmo analyze --out` writes them), or
/// where it has none, in `dir/reports` (as `pulmo batch --out` does), keyed by series UID;
/// other JSON files (other schemas) are passed over. Finding none is an error: an empty set
/// would score as if pulmo had found nothing.
pub fn load_reports(dir: &Path) -> Result<HashMap<String, ScanResult>> {
    let reports = reports_in(dir)?;
    if !reports.is_empty() {
        return Ok(reports);
    }
    let nested = dir.join("reports");
    let reports = if nested.is_dir() {
        reports_in(&nested)?
    } else {
        reports
    };
    if reports.is_empty() {
        return Err(Error::NoReports {
            dir: dir.to_owned(),
        });
    }
    Ok(reports)
}

fn reports_in(dir: &Path) -> Result<HashMap<String, ScanResult>> {
    let read_dir = std::fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = read_dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut reports = HashMap::new();
    for path in paths {
        let value: serde_json::Value = read_json(&path)?;
        if value.get("schema").and_then(|s| s.as_str()) != Some(crate::report::SCHEMA) {
            continue;
        }
        let uid = value["series_instance_uid"].as_str().unwrap_or_default();
        let uid = uid.to_owned();
        let scan = serde_json::from_value(value).map_err(|source| Error::Parse {
            path: path.clone(),
            source,
        })?;
        reports.insert(uid, scan);
    }
    Ok(reports)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Per nodule its best hit, and the scores of the false positives, in one scan.
fn match_scan<'a>(
    nodules: &[TruthNodule],
    found: &'a [Detection],
) -> (Vec<Option<&'a Detection>>, Vec<f64>) {
    let mut best: Vec<Option<&Detection>> = vec![None; nodules.len()];
    let mut false_positives = Vec::new();
    for finding in found {
        let hits: Vec<usize> = (0..nodules.len())
            .filter(|&n| hits(&nodules[n], finding))
            .collect();
        let counted: Vec<usize> = hits
            .iter()
            .copied()
            .filter(|&n| nodules[n].diameter_mm >= MIN_DIAMETER_MM)
            .collect();
        if counted.is_empty() {
            // Hitting only excluded nodules makes a finding neither true nor false.
            if hits.is_empty() {
                false_positives.push(finding.score);
            }
            continue;
        }
        for n in counted {
            if best[n].is_none_or(|b| finding.score > b.score) {
                best[n] = Some(finding);
            }
        }
    }
    (best, false_positives)
}

fn hits(nodule: &TruthNodule, finding: &Detection) -> bool {
    let distance = nodule
        .center_patient_mm
        .iter()
        .zip(finding.center_patient_mm)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    distance <= nodule.diameter_mm / 2.0
}

/// Best sensitivity at a score threshold whose false positives per scan stay `<= rate`.
/// Both score lists must be sorted ascending.
pub fn sensitivity_at(hits: &[f64], nodules: usize, fps: &[f64], scans: usize, rate: f64) -> f64 {
    if nodules == 0 {
        return f64::NAN;
    }
    let at_least = |sorted: &[f64], t: f64| sorted.len() - sorted.partition_point(|&s| s < t);
    let thresholds = hits.iter().chain(fps).copied().chain([f64::INFINITY]);
    thresholds
        .filter(|&t| at_least(fps, t) as f64 / scans as f64 <= rate)
        .map(|t| at_least(hits, t) as f64 / nodules as f64)
        .fold(0.0, f64::max)
}

/// What one nodule contributes, after matching.
struct Counted<'a> {
    diameter_mm: f64,
    nodule_type: Option<NoduleType>,
    hit: Option<&'a Detection>,
}

/// Scores every finding of `reports` again from its logits with the classifier weighted
/// `weight` instead of the bundle's (see [`findings::Logits`]), so that a weight can be
/// chosen on a tuning set without analysing it again. Fails, naming the series, on a
/// finding whose report has no logits.
pub fn reweigh(reports: &mut HashMap<String, ScanResult>, weight: f64) -> Result<()> {
    for (series, scan) in reports.iter_mut() {
        for detection in &mut scan.findings {
            let Some(logits) = detection.logits else {
                return Err(Error::NoLogits {
                    series: series.clone(),
                });
            };
            let score =
                crate::postprocess::combined_score(logits.detector, logits.classifier, weight);
            detection.score = findings::round_to(score, 4);
        }
    }
    Ok(())
}

/// The FROC summary of the truth cases given the reports, keyed by series UID, with the
/// calls at the reports' own operating point and at each of `operating` scores.
pub fn evaluate_at(
    truth: &Truth,
    reports: &HashMap<String, ScanResult>,
    operating: &[f64],
) -> Evaluation {
    let mut result = evaluate(truth, reports);
    result.followup = followup::score(truth, reports);
    let own = reports.values().find_map(|r| r.operating_score);
    result.operating_point = own.map(|score| operating_point(truth, reports, score));
    result.operating_points = operating
        .iter()
        .map(|&score| operating_point(truth, reports, score))
        .collect();
    result
}

/// The calls at `score` over every scan ([`Truth::scans`]).
pub fn operating_point(
    truth: &Truth,
    reports: &HashMap<String, ScanResult>,
    score: f64,
) -> OperatingPoint {
    let scans = truth.scans(reports);
    let mut point = OperatingPoint {
        operating_score: score,
        scans: scans.len(),
        nodules: 0,
        nodules_called: 0,
        nodules_ge_6mm: 0,
        nodules_ge_6mm_called: 0,
        false_calls: 0,
        false_calls_per_scan: 0.0,
        false_calls_by_location: BTreeMap::new(),
        category_as_true_findings: 0,
        category_higher: 0,
        category_lower: 0,
    };
    let empty = ScanResult::default();
    for case in &scans {
        let scan = reports.get(&case.series_instance_uid).unwrap_or(&empty);
        let hits: Vec<Vec<usize>> = scan
            .findings
            .iter()
            .map(|f| {
                (0..case.nodules.len())
                    .filter(|&n| hits(&case.nodules[n], f))
                    .collect()
            })
            .collect();
        let calls: Vec<(&Detection, &Vec<usize>)> = scan
            .findings
            .iter()
            .zip(&hits)
            .filter(|(f, _)| f.score >= score)
            .collect();
        for (call, _) in calls.iter().filter(|(_, h)| h.is_empty()) {
            point.false_calls += 1;
            let place = case.anatomy.as_ref().map_or("unknown", |a| {
                anatomy::locate(a, call.center_patient_mm).name()
            });
            *point
                .false_calls_by_location
                .entry(place.to_owned())
                .or_insert(0) += 1;
        }
        for (n, nodule) in case.nodules.iter().enumerate() {
            if nodule.diameter_mm < MIN_DIAMETER_MM {
                continue;
            }
            let called = calls.iter().any(|(_, h)| h.contains(&n));
            point.nodules += 1;
            point.nodules_called += usize::from(called);
            if nodule.diameter_mm >= 6.0 {
                point.nodules_ge_6mm += 1;
                point.nodules_ge_6mm_called += usize::from(called);
            }
        }
        let category = |found: &mut dyn Iterator<Item = &Detection>| {
            found
                .filter_map(|f| f.lung_rads)
                .max()
                .unwrap_or(LungRads::Cat1)
        };
        let got = category(&mut calls.iter().map(|(f, _)| *f));
        let ideal = category(
            &mut scan
                .findings
                .iter()
                .zip(&hits)
                .filter(|(_, h)| !h.is_empty())
                .map(|(f, _)| f),
        );
        point.category_as_true_findings += usize::from(got == ideal);
        point.category_higher += usize::from(got > ideal);
        point.category_lower += usize::from(got < ideal);
    }
    point.false_calls_per_scan = point.false_calls as f64 / point.scans.max(1) as f64;
    point
}

/// The FROC summary of the scans ([`Truth::scans`]) given the reports, keyed by series UID.
pub fn evaluate(truth: &Truth, reports: &HashMap<String, ScanResult>) -> Evaluation {
    let scans = truth.scans(reports);
    let empty = ScanResult::default();
    let mut counted = Vec::new();
    let mut fps = Vec::new();
    let mut scan_agreement = (0, 0);
    for case in &scans {
        let report = reports.get(&case.series_instance_uid);
        let scan = report.unwrap_or(&empty);
        let (best, false_positives) = match_scan(&case.nodules, &scan.findings);
        fps.extend(false_positives);
        for (nodule, hit) in case.nodules.iter().zip(best) {
            if nodule.diameter_mm >= MIN_DIAMETER_MM {
                counted.push(Counted {
                    diameter_mm: nodule.diameter_mm,
                    nodule_type: nodule.nodule_type,
                    hit,
                });
            }
        }
        if let Some(agrees) = report.and_then(|r| scan_lung_rads_agrees(case, r)) {
            scan_agreement.0 += 1;
            scan_agreement.1 += usize::from(agrees);
        }
    }
    summarize(scans.len(), &counted, fps, scan_agreement)
}

/// Whether the report's study category equals the truth's, when both are known.
fn scan_lung_rads_agrees(case: &TruthCase, report: &ScanResult) -> Option<bool> {
    let reported = report.lung_rads?;
    let categories: Option<Vec<LungRads>> = case.nodules.iter().map(truth_category).collect();
    Some(findings::overall(categories?) == reported)
}

fn truth_category(nodule: &TruthNodule) -> Option<LungRads> {
    let kind = nodule.nodule_type?;
    Some(findings::categorize(kind, nodule.diameter_mm, None))
}

fn summarize(
    scans: usize,
    counted: &[Counted<'_>],
    mut fps: Vec<f64>,
    scan_agreement: (usize, usize),
) -> Evaluation {
    fps.sort_by(f64::total_cmp);
    let scans_for_rate = scans.max(1);
    let scores = |keep: &dyn Fn(&Counted<'_>) -> bool| -> (Vec<f64>, usize) {
        let kept: Vec<&Counted<'_>> = counted.iter().filter(|c| keep(c)).collect();
        let mut hits: Vec<f64> = kept.iter().filter_map(|c| c.hit.map(|h| h.score)).collect();
        hits.sort_by(f64::total_cmp);
        (hits, kept.len())
    };
    let (hits, nodules) = scores(&|_| true);
    let sens = |rate: f64| sensitivity_at(&hits, nodules, &fps, scans_for_rate, rate);
    let sensitivity: BTreeMap<String, f64> =
        FP_RATES.iter().map(|&r| (rate_key(r), sens(r))).collect();
    let cpm = if nodules == 0 {
        f64::NAN
    } else {
        sensitivity.values().sum::<f64>() / FP_RATES.len() as f64
    };
    let (big_hits, big) = scores(&|c| c.diameter_mm >= 6.0);
    let by_size = SIZE_BINS
        .iter()
        .map(|&(name, from, to)| {
            let (bin_hits, n) = scores(&|c| (from..to).contains(&c.diameter_mm));
            let sensitivity =
                sensitivity_at(&bin_hits, n, &fps, scans_for_rate, SIZE_OPERATING_POINT);
            (
                name.to_owned(),
                SizeBin {
                    nodules: n,
                    sensitivity,
                },
            )
        })
        .collect();
    Evaluation {
        scans,
        nodules,
        nodules_ge_6mm: big,
        detected_any_score: hits.len(),
        false_positives_total: fps.len(),
        sensitivity_at_fp_per_scan: sensitivity,
        cpm,
        sensitivity_ge_6mm_at_1fp: sensitivity_at(&big_hits, big, &fps, scans_for_rate, 1.0),
        median_abs_diameter_error_mm: median_diameter_error(counted),
        sensitivity_by_size_at_1fp: by_size,
        lung_rads_nodules: nodule_agreement(counted),
        lung_rads_scans: agreement(scan_agreement.0, scan_agreement.1),
        operating_point: None,
        operating_points: Vec::new(),
        followup: None,
    }
}

/// `0.125` -> `"0.125"`, `1.0` -> `"1.0"` (as Python's `str(float)` writes them, which
/// earlier JSON outputs used).
fn rate_key(rate: f64) -> String {
    if rate.fract() == 0.0 {
        format!("{rate:.1}")
    } else {
        rate.to_string()
    }
}

fn median_diameter_error(counted: &[Counted<'_>]) -> f64 {
    let mut errors: Vec<f64> = counted
        .iter()
        .filter_map(|c| Some((c.hit?.diameter_mm? - c.diameter_mm).abs()))
        .collect();
    errors.sort_by(f64::total_cmp);
    match errors.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => errors[n / 2],
        n => (errors[n / 2 - 1] + errors[n / 2]) / 2.0,
    }
}

fn nodule_agreement(counted: &[Counted<'_>]) -> Agreement {
    let pairs: Vec<(LungRads, LungRads)> = counted
        .iter()
        .filter_map(|c| {
            let kind = c.nodule_type?;
            let reported = c.hit?.lung_rads?;
            Some((findings::categorize(kind, c.diameter_mm, None), reported))
        })
        .collect();
    let agreeing = pairs.iter().filter(|(t, r)| t == r).count();
    agreement(pairs.len(), agreeing)
}

fn agreement(compared: usize, agreeing: usize) -> Agreement {
    let fraction = if compared == 0 {
        f64::NAN
    } else {
        agreeing as f64 / compared as f64
    };
    Agreement {
        compared,
        agreeing,
        fraction,
    }
}

impl Evaluation {
    /// The human-readable summary `pulmo evaluate` prints.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "scans {}, nodules >= 3 mm {} ({} >= 6 mm), false positives {}\n",
            self.scans, self.nodules, self.nodules_ge_6mm, self.false_positives_total
        );
        for rate in FP_RATES {
            let s = self.sensitivity_at_fp_per_scan[&rate_key(rate)];
            out.push_str(&format!("  sensitivity at {rate:>5.3} FP/scan: {s:.3}\n"));
        }
        out.push_str(&format!(
            "CPM {:.3}; >= 6 mm at 1 FP/scan {:.3}; median |diameter error| {:.2} mm\n",
            self.cpm, self.sensitivity_ge_6mm_at_1fp, self.median_abs_diameter_error_mm
        ));
        if let Some(followup) = &self.followup {
            out.push_str(&followup.to_text());
        }
        for (name, _, _) in SIZE_BINS {
            let bin = &self.sensitivity_by_size_at_1fp[name];
            out.push_str(&format!(
                "  {name:>5} mm: {} nodules, sensitivity at 1 FP/scan {:.3}\n",
                bin.nodules, bin.sensitivity
            ));
        }
        let (n, s) = (&self.lung_rads_nodules, &self.lung_rads_scans);
        out.push_str(&format!(
            "Lung-RADS agreement: nodules {}/{} ({:.3}), scans {}/{} ({:.3})\n",
            n.agreeing, n.compared, n.fraction, s.agreeing, s.compared, s.fraction
        ));
        for point in self.operating_point.iter().chain(&self.operating_points) {
            out.push_str(&point.to_text());
        }
        out
    }
}

impl OperatingPoint {
    /// One paragraph: calls, false calls per scan and where they lie, categories.
    pub fn to_text(&self) -> String {
        let places: Vec<String> = self
            .false_calls_by_location
            .iter()
            .map(|(place, n)| format!("{place} {n}"))
            .collect();
        let places = if places.is_empty() {
            String::new()
        } else {
            format!(" ({})", places.join(", "))
        };
        format!(
            "operating point {}: {} of {} nodules called ({} of {} >= 6 mm), \
             {} false calls in {} scans = {:.2} per scan{places}; study category as from the \
             true findings in {} scans, higher in {}, lower in {}\n",
            self.operating_score,
            self.nodules_called,
            self.nodules,
            self.nodules_ge_6mm_called,
            self.nodules_ge_6mm,
            self.false_calls,
            self.scans,
            self.false_calls_per_scan,
            self.category_as_true_findings,
            self.category_higher,
            self.category_lower
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodule(c: [f64; 3], d: f64) -> TruthNodule {
        TruthNodule {
            center_patient_mm: c,
            diameter_mm: d,
            nodule_type: Some(NoduleType::Solid),
        }
    }

    fn found(c: [f64; 3], diameter: Option<f64>, score: f64) -> Detection {
        Detection {
            center_patient_mm: c,
            score,
            diameter_mm: diameter,
            lung_rads: diameter.map(|d| findings::categorize(NoduleType::Solid, d, None)),
            logits: None,
            id: 0,
            followup: Default::default(),
        }
    }

    fn case(uid: &str, nodules: Vec<TruthNodule>) -> TruthCase {
        TruthCase {
            series_instance_uid: uid.into(),
            nodules,
            anatomy: None,
            only_if_reported: false,
        }
    }

    /// The Python script's self-test, with its known answers.
    fn python_self_test() -> (Truth, HashMap<String, ScanResult>) {
        let truth = Truth {
            cases: vec![
                case(
                    "A",
                    vec![
                        nodule([0.0, 0.0, 0.0], 10.0),
                        nodule([50.0, 0.0, 0.0], 4.0),
                        nodule([0.0, 80.0, 0.0], 2.0),
                    ],
                ),
                case("B", vec![nodule([10.0, 10.0, 10.0], 8.0)]),
                case("C", vec![]),
            ],
            ..Truth::default()
        };
        let scan = |findings| ScanResult {
            operating_score: None,
            lung_rads: None,
            findings,
            registered: None,
        };
        let reports = HashMap::from([
            (
                "A".to_owned(),
                scan(vec![
                    found([4.9, 0.0, 0.0], Some(9.0), 0.9),
                    found([0.0, 0.0, 1.0], Some(11.0), 0.5),
                    found([0.0, 80.5, 0.0], Some(2.0), 0.99),
                    found([52.5, 0.0, 0.0], Some(4.0), 0.3),
                ]),
            ),
            (
                "B".to_owned(),
                scan(vec![
                    found([10.0, 10.0, 13.9], Some(8.5), 0.8),
                    found([100.0, 0.0, 0.0], None, 0.7),
                ]),
            ),
            (
                "C".to_owned(),
                scan(vec![found([1.0, 2.0, 3.0], None, 0.95)]),
            ),
        ]);
        (truth, reports)
    }

    #[test]
    fn agrees_with_the_python_self_test() {
        let (truth, reports) = python_self_test();
        let r = evaluate(&truth, &reports);
        assert_eq!((r.nodules, r.nodules_ge_6mm), (3, 2));
        assert_eq!(r.false_positives_total, 3);
        assert_eq!(r.detected_any_score, 2);
        let s = &r.sensitivity_at_fp_per_scan;
        assert_eq!((s["0.125"], s["0.25"]), (0.0, 0.0));
        assert!((s["0.5"] - 2.0 / 3.0).abs() < 1e-9, "{s:?}");
        assert!((s["8.0"] - 2.0 / 3.0).abs() < 1e-9, "{s:?}");
        assert!((r.sensitivity_ge_6mm_at_1fp - 1.0).abs() < 1e-9);
        assert!((r.median_abs_diameter_error_mm - 0.75).abs() < 1e-9);
        assert!((r.cpm - (5.0 * 2.0 / 3.0) / 7.0).abs() < 1e-9);
    }

    #[test]
    fn findings_are_scored_again_from_their_logits_with_another_classifier_weight() {
        let (truth, mut reports) = python_self_test();
        let logits = |detector, classifier| {
            Some(findings::Logits {
                detector,
                classifier: Some(classifier),
            })
        };
        // A's hit on its 10 mm nodule: the detector is sure, the classifier doubts.
        let a = reports.get_mut("A").unwrap();
        a.findings[0].logits = logits(24.0, -4.0);
        let others: Vec<_> = reports.keys().cloned().collect();
        let untouched = |reports: &HashMap<String, ScanResult>| reports["B"].findings[0].score;
        let before = untouched(&reports);
        // No logits in B and C: refused, naming the series.
        let err = reweigh(&mut reports.clone(), 0.5).unwrap_err();
        assert!(matches!(err, Error::NoLogits { .. }), "{err}");
        for uid in &others {
            for d in &mut reports.get_mut(uid).unwrap().findings {
                d.logits.get_or_insert(findings::Logits {
                    detector: 0.0,
                    classifier: Some(0.0),
                });
            }
        }
        reweigh(&mut reports, 0.5).unwrap();
        // sigmoid(24 / 8 - 0.5 × 4) = sigmoid(1); the others sigmoid(0).
        assert_eq!(reports["A"].findings[0].score, 0.7311);
        assert_eq!(untouched(&reports), 0.5);
        assert_ne!(before, 0.5);
        reweigh(&mut reports, 0.0).unwrap();
        assert_eq!(reports["A"].findings[0].score, 0.9526);
        let _ = evaluate(&truth, &reports);
    }

    #[test]
    fn a_missing_report_is_a_scan_without_findings() {
        let (truth, _) = python_self_test();
        let r = evaluate(&truth, &HashMap::new());
        assert_eq!((r.cpm, r.false_positives_total), (0.0, 0));
    }

    #[test]
    fn a_csv_truth_without_rows_for_a_reported_scan_scores_the_same() {
        let (json, reports) = python_self_test();
        // As an annotations CSV would give it: no row for C, which has no nodules.
        let mut csv = json.clone();
        csv.cases.retain(|c| !c.nodules.is_empty());
        csv.cases.iter_mut().for_each(|c| c.only_if_reported = true);
        csv.reports_are_scans = true;
        // As JSON, so that NaN (nothing to compare) equals NaN.
        let figures = |truth: &Truth| serde_json::to_value(evaluate(truth, &reports)).unwrap();
        assert_eq!(figures(&csv), figures(&json));
        // Rows of a series without a report are not scored; one in the JSON is a scan.
        let mut fewer = reports.clone();
        fewer.remove("B");
        let r = evaluate(&csv, &fewer);
        assert_eq!((r.scans, r.nodules), (2, 2));
        assert_eq!(evaluate(&json, &fewer).scans, 3);
    }

    #[test]
    fn sizes_are_binned_and_lung_rads_compared() {
        let (truth, reports) = python_self_test();
        let r = evaluate(&truth, &reports);
        let bins = &r.sensitivity_by_size_at_1fp;
        assert_eq!((bins["3-6"].nodules, bins["3-6"].sensitivity), (1, 0.0));
        assert_eq!((bins["6-10"].nodules, bins["6-10"].sensitivity), (1, 1.0));
        assert_eq!((bins["10-20"].nodules, bins["10-20"].sensitivity), (1, 1.0));
        assert!(bins[">=20"].sensitivity.is_nan());
        // Truth 10 mm solid is 4A, its best hit (9 mm) is 4A; truth 8 mm is 4A, 8.5 mm is 4A.
        assert_eq!(
            (r.lung_rads_nodules.compared, r.lung_rads_nodules.agreeing),
            (2, 2)
        );
    }

    #[test]
    fn rate_keys_are_written_as_python_writes_floats() {
        let keys: Vec<String> = FP_RATES.iter().map(|&r| rate_key(r)).collect();
        assert_eq!(keys, ["0.125", "0.25", "0.5", "1.0", "2.0", "4.0", "8.0"]);
    }

    #[test]
    fn false_calls_at_the_operating_point_are_counted_by_where_they_lie() {
        let mut truth = Truth {
            cases: vec![case("A", vec![nodule([0.0, 0.0, 0.0], 10.0)])],
            ..Truth::default()
        };
        truth.cases[0].anatomy = Some(
            serde_json::from_str(r#"{"hilum": {"right": [-60, 0, 0], "left": [60, 0, 0]}}"#)
                .unwrap(),
        );
        let reports = HashMap::from([(
            "A".to_owned(),
            ScanResult {
                operating_score: Some(0.9),
                lung_rads: None,
                registered: None,
                findings: vec![
                    found([1.0, 0.0, 0.0], Some(9.0), 0.95),
                    found([-65.0, 5.0, 0.0], Some(12.0), 0.97),
                    found([100.0, 50.0, 0.0], Some(6.0), 0.91),
                    found([-62.0, 0.0, 0.0], Some(12.0), 0.5),
                ],
            },
        )]);
        let result = evaluate_at(&truth, &reports, &[0.96]);
        let own = result
            .operating_point
            .expect("the reports name their operating point");
        assert_eq!((own.nodules, own.nodules_called), (1, 1));
        assert_eq!(own.false_calls, 2);
        assert_eq!(own.false_calls_per_scan, 2.0);
        let places: Vec<(&str, usize)> = own
            .false_calls_by_location
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(places, [("elsewhere", 1), ("hilum", 1)]);
        let stricter = &result.operating_points[0];
        assert_eq!((stricter.nodules_called, stricter.false_calls), (0, 1));
    }
}
