//! Truth: the known nodules of each scan, from pulmo's own `pulmo.truth/1` JSON or from a
//! LUNA16 `annotations.csv` (`seriesuid,coordX,coordY,coordZ,diameter_mm`, a header line,
//! one row per nodule).
//!
//! Both become one [`Truth`]; they differ in which scans they name.
//! A JSON truth lists its scans, each with its nodules (maybe none):
//! every case is scored, and one without a report is a scan with no findings.
//! A CSV lists nodules, so a scan without nodules has no row:
//! the scans scored are the series with reports, a reported series without rows has no
//! nodules, and rows of series without a report are left out (LUNA16's one annotations
//! file serves every subset of its scans).
//!
//! A CSV row's `coordX,coordY,coordZ` are LUNA16's world coordinates in mm, which are the
//! DICOM patient coordinates (LPS) of the reports' `center_patient_mm`; its nodules have
//! no type, so Lung-RADS is not compared for them. A file is read as CSV when its name ends
//! in `.csv` or its first line starts with `seriesuid`, and as JSON otherwise.
//!
//! A value pulmo does not know in an optional field of a JSON truth (a nodule's `type`,
//! a case's `anatomy`) is read as absent, with a warning naming the file and the field.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::Value;

use super::{anatomy, Error, Result, ScanResult};
use crate::findings::NoduleType;

/// The columns a LUNA16 annotations CSV must have (others are ignored).
pub const CSV_COLUMNS: [&str; 5] = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"];

/// Known nodules per series.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Truth {
    pub cases: Vec<TruthCase>,
    /// Whether every reported series is a scan, without nodules where no case names it
    /// (a CSV truth names only series with nodules).
    #[serde(skip)]
    pub reports_are_scans: bool,
    /// Follow-up pairs: which scan follows which, and how each nodule changed.
    #[serde(default)]
    pub followups: Vec<super::followup::TruthFollowUp>,
    /// Values read as absent, one line each, naming the file and the field.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// One series and its nodules.
#[derive(Debug, Clone, Deserialize)]
pub struct TruthCase {
    pub series_instance_uid: String,
    #[serde(default)]
    pub nodules: Vec<TruthNodule>,
    /// Where the anatomy lies (`pulmo.anatomy/1`), when the generator recorded it: false
    /// calls are then told apart by where they lie ([`anatomy::locate`]).
    #[serde(default, deserialize_with = "known")]
    pub anatomy: Option<anatomy::Anatomy>,
    /// Whether the case is scored only when a report names its series (a CSV truth's).
    #[serde(skip)]
    pub only_if_reported: bool,
}

/// One known nodule.
#[derive(Debug, Clone, Deserialize)]
pub struct TruthNodule {
    pub center_patient_mm: [f64; 3],
    pub diameter_mm: f64,
    /// Composition; Lung-RADS agreement is computed only where it is known.
    #[serde(default, rename = "type", deserialize_with = "known")]
    pub nodule_type: Option<NoduleType>,
}

impl Truth {
    /// The scans scored against `reports`: the cases scored with or without a report and
    /// those a report names, then, when the reports are scans, each reported series that no
    /// case names, without nodules (in UID order).
    pub fn scans<'a>(&'a self, reports: &HashMap<String, ScanResult>) -> Vec<Cow<'a, TruthCase>> {
        let mut scans: Vec<Cow<'a, TruthCase>> = self
            .cases
            .iter()
            .filter(|c| !c.only_if_reported || reports.contains_key(&c.series_instance_uid))
            .map(Cow::Borrowed)
            .collect();
        if self.reports_are_scans {
            let named: HashSet<&str> = self
                .cases
                .iter()
                .map(|c| c.series_instance_uid.as_str())
                .collect();
            let mut others: Vec<&String> = reports
                .keys()
                .filter(|uid| !named.contains(uid.as_str()))
                .collect();
            others.sort();
            scans.extend(others.into_iter().map(|uid| Cow::Owned(reported_case(uid))));
        }
        scans
    }

    /// Whether some case is scored only when reported and none of those is.
    pub fn names_no_reported_series(&self, reports: &HashMap<String, ScanResult>) -> bool {
        let mut listed = self.cases.iter().filter(|c| c.only_if_reported).peekable();
        listed.peek().is_some() && listed.all(|c| !reports.contains_key(&c.series_instance_uid))
    }
}

/// A series a CSV truth names (or leaves out, having no nodules in it).
fn reported_case(uid: &str) -> TruthCase {
    TruthCase {
        series_instance_uid: uid.to_owned(),
        nodules: Vec::new(),
        anatomy: None,
        only_if_reported: true,
    }
}

/// Reads a truth file, JSON or CSV (the module doc says how they are told apart).
pub fn load_truth(path: &Path) -> Result<Truth> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = text.trim_start_matches('\u{feff}');
    if is_csv(path, text) {
        from_csv(path, text)
    } else {
        from_json(path, text)
    }
}

/// Reads several truth files (the halves of one set, say) as one.
pub fn load_truths(paths: &[PathBuf]) -> Result<Truth> {
    let mut all = Truth::default();
    for path in paths {
        let truth = load_truth(path)?;
        all.cases.extend(truth.cases);
        all.followups.extend(truth.followups);
        all.reports_are_scans |= truth.reports_are_scans;
        all.warnings.extend(truth.warnings);
    }
    Ok(all)
}

fn is_csv(path: &Path, text: &str) -> bool {
    let named = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    named || text.trim_start().starts_with("seriesuid")
}

fn from_json(path: &Path, text: &str) -> Result<Truth> {
    let parse = |source| Error::Parse {
        path: path.to_owned(),
        source,
    };
    let mut truth: Truth = serde_json::from_str(text).map_err(parse)?;
    // Parsed again untyped, to name what `known` read as absent.
    let value: Value = serde_json::from_str(text).map_err(parse)?;
    truth.warnings = unknown_values(path, &value);
    Ok(truth)
}

/// An optional field's value, or `None` where it is not one pulmo knows
/// ([`unknown_values`] names those).
fn known<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    deserializer: D,
) -> std::result::Result<Option<T>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value.and_then(|v| T::deserialize(v).ok()))
}

/// A warning for each optional field that [`known`] read as absent.
fn unknown_values(path: &Path, truth: &Value) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut check = |field: String, value: &Value, error: Option<serde_json::Error>| {
        if let (false, Some(error)) = (value.is_null(), error) {
            let path = path.display();
            warnings.push(format!("{path}: {field}: {error}; read as not given"));
        }
    };
    for (i, case) in list(&truth["cases"]).iter().enumerate() {
        let anatomy = &case["anatomy"];
        let error = anatomy::Anatomy::deserialize(anatomy).err();
        check(format!("cases[{i}].anatomy"), anatomy, error);
        for (j, nodule) in list(&case["nodules"]).iter().enumerate() {
            let kind = &nodule["type"];
            let error = NoduleType::deserialize(kind).err();
            check(format!("cases[{i}].nodules[{j}].type"), kind, error);
        }
    }
    warnings
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// One row of a LUNA16 annotations CSV.
#[derive(Debug, Deserialize)]
struct Annotation {
    seriesuid: String,
    #[serde(rename = "coordX")]
    x: f64,
    #[serde(rename = "coordY")]
    y: f64,
    #[serde(rename = "coordZ")]
    z: f64,
    diameter_mm: f64,
}

impl Annotation {
    /// Why the row cannot be a nodule, if it cannot.
    fn fault(&self) -> Option<String> {
        if self.seriesuid.is_empty() {
            Some("seriesuid is empty".to_owned())
        } else if ![self.x, self.y, self.z].iter().all(|v| v.is_finite()) {
            Some("coordX, coordY and coordZ must be finite numbers".to_owned())
        } else if !(self.diameter_mm.is_finite() && self.diameter_mm >= 0.0) {
            Some(format!("diameter_mm {} is not a size", self.diameter_mm))
        } else {
            None
        }
    }
}

fn from_csv(path: &Path, text: &str) -> Result<Truth> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|source| row_error(path, source))?
        .clone();
    if let Some(column) = CSV_COLUMNS
        .into_iter()
        .find(|c| !headers.iter().any(|h| h == *c))
    {
        return Err(Error::CsvColumn {
            path: path.to_owned(),
            column,
        });
    }
    let mut cases: Vec<TruthCase> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut record = csv::StringRecord::new();
    while reader
        .read_record(&mut record)
        .map_err(|source| row_error(path, source))?
    {
        let line = record.position().map_or(0, csv::Position::line);
        let row: Annotation = record
            .deserialize(Some(&headers))
            .map_err(|source| row_error(path, source))?;
        if let Some(reason) = row.fault() {
            let path = path.to_owned();
            return Err(Error::CsvValue { path, line, reason });
        }
        let n = *index.entry(row.seriesuid.clone()).or_insert_with(|| {
            cases.push(reported_case(&row.seriesuid));
            cases.len() - 1
        });
        cases[n].nodules.push(TruthNodule {
            center_patient_mm: [row.x, row.y, row.z],
            diameter_mm: row.diameter_mm,
            nodule_type: None,
        });
    }
    Ok(Truth {
        cases,
        reports_are_scans: true,
        warnings: Vec::new(),
        followups: Vec::new(),
    })
}

fn row_error(path: &Path, source: csv::Error) -> Error {
    Error::CsvRow {
        path: path.to_owned(),
        line: source.position().map_or(0, csv::Position::line),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` written as `name` in a fresh temporary folder, and read back.
    fn load(name: &str, text: &str) -> (tempfile::TempDir, Result<Truth>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let truth = load_truth(&path);
        (dir, truth)
    }

    const ANNOTATIONS: &str = "\
seriesuid,coordX,coordY,coordZ,diameter_mm
1.2.3,-128.6994211,-175.3192718,-298.3875064,5.651470635
1.2.3,103.7836509,-211.9251487,-227.12125,4.224708481
1.2.4,69.63901724,-140.9445859,876.3744957,5.786347814
";

    #[test]
    fn a_luna16_csv_gives_one_case_per_series_with_its_nodules() {
        let (_dir, truth) = load("annotations.csv", ANNOTATIONS);
        let truth = truth.unwrap();
        assert!(truth.reports_are_scans);
        let uids: Vec<&str> = truth
            .cases
            .iter()
            .map(|c| c.series_instance_uid.as_str())
            .collect();
        assert_eq!(uids, ["1.2.3", "1.2.4"]);
        let first = &truth.cases[0].nodules[0];
        assert_eq!(
            first.center_patient_mm,
            [-128.6994211, -175.3192718, -298.3875064]
        );
        assert_eq!(first.diameter_mm, 5.651470635);
        assert_eq!(first.nodule_type, None);
        assert_eq!(truth.cases[0].nodules.len(), 2);
        assert!(truth.cases.iter().all(|c| c.only_if_reported));
    }

    #[test]
    fn a_csv_is_told_by_its_first_line_without_the_extension() {
        let (_dir, truth) = load("truth", ANNOTATIONS);
        assert_eq!(truth.unwrap().cases.len(), 2);
    }

    #[test]
    fn extra_columns_and_spaces_are_taken() {
        let text = "id, seriesuid ,coordX,coordY,coordZ,diameter_mm\n7, 1.2.3 , 1, 2 ,3,4\n";
        let (_dir, truth) = load("a.csv", text);
        let truth = truth.unwrap();
        assert_eq!(truth.cases[0].series_instance_uid, "1.2.3");
        assert_eq!(truth.cases[0].nodules[0].center_patient_mm, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn a_bad_number_names_the_file_and_line() {
        let text = ANNOTATIONS.replace("4.224708481", "4.2 mm");
        let (dir, truth) = load("annotations.csv", &text);
        let err = truth.unwrap_err();
        assert!(matches!(err, Error::CsvRow { line: 3, .. }), "{err:?}");
        let path = dir.path().join("annotations.csv").display().to_string();
        assert!(
            err.to_string().starts_with(&format!("{path} line 3: ")),
            "{err}"
        );
        // A row with a field too many is named the same way.
        let text = ANNOTATIONS.replace("876.3744957", "876,3744957");
        let (_dir, truth) = load("annotations.csv", &text);
        assert!(matches!(truth, Err(Error::CsvRow { line: 4, .. })));
    }

    #[test]
    fn a_value_that_is_no_measurement_names_the_line() {
        let text = ANNOTATIONS.replace("5.786347814", "-5");
        let (_dir, truth) = load("annotations.csv", &text);
        let err = truth.unwrap_err();
        assert!(matches!(err, Error::CsvValue { line: 4, .. }), "{err:?}");
        assert!(err.to_string().contains("diameter_mm -5"), "{err}");
        let text = ANNOTATIONS.replace("876.3744957", "NaN");
        let (_dir, truth) = load("annotations.csv", &text);
        assert!(matches!(truth, Err(Error::CsvValue { line: 4, .. })));
    }

    #[test]
    fn a_missing_column_is_named() {
        let text = ANNOTATIONS
            .replace(",coordZ", "")
            .replace(",-298.3875064", "");
        let (_dir, truth) = load("annotations.csv", &text);
        let err = truth.unwrap_err();
        assert!(
            matches!(
                err,
                Error::CsvColumn {
                    column: "coordZ",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("coordZ"), "{err}");
        let (_dir, truth) = load("empty.csv", "");
        assert!(matches!(
            truth,
            Err(Error::CsvColumn {
                column: "seriesuid",
                ..
            })
        ));
    }

    #[test]
    fn an_unknown_optional_value_is_a_warning_not_a_failure() {
        let text = r#"{"schema": "pulmo.truth/1", "cases": [{"series_instance_uid": "1.2",
            "anatomy": {"hilum": "left"},
            "nodules": [
                {"center_patient_mm": [0, 0, 0], "diameter_mm": 6, "type": "solid"},
                {"center_patient_mm": [9, 0, 0], "diameter_mm": 7, "type": "ground_glass"}]}]}"#;
        let (dir, truth) = load("truth.json", text);
        let truth = truth.unwrap();
        let nodules = &truth.cases[0].nodules;
        assert_eq!(nodules[0].nodule_type, Some(NoduleType::Solid));
        assert_eq!(nodules[1].nodule_type, None);
        assert!(truth.cases[0].anatomy.is_none());
        assert!(!truth.reports_are_scans && !truth.cases[0].only_if_reported);
        let path = dir.path().join("truth.json").display().to_string();
        assert_eq!(truth.warnings.len(), 2, "{:?}", truth.warnings);
        let [anatomy, kind] = [&truth.warnings[0], &truth.warnings[1]];
        assert!(anatomy.starts_with(&format!("{path}: cases[0].anatomy: ")));
        assert!(kind.starts_with(&format!("{path}: cases[0].nodules[1].type: ")));
        assert!(kind.contains("ground_glass"), "{kind}");
    }

    #[test]
    fn a_required_field_still_fails_the_file() {
        let text = r#"{"cases": [{"series_instance_uid": "1.2",
            "nodules": [{"center_patient_mm": [0, 0, 0], "type": "solid"}]}]}"#;
        let (_dir, truth) = load("truth.json", text);
        let err = truth.unwrap_err();
        assert!(matches!(err, Error::Parse { .. }), "{err:?}");
    }

    #[test]
    fn a_csv_truths_scans_are_the_reported_series() {
        let (_dir, truth) = load("annotations.csv", ANNOTATIONS);
        let truth = truth.unwrap();
        let reports = HashMap::from([
            ("1.2.3".to_owned(), ScanResult::default()),
            ("9.9".to_owned(), ScanResult::default()),
        ]);
        let scans: Vec<(String, usize)> = truth
            .scans(&reports)
            .iter()
            .map(|c| (c.series_instance_uid.clone(), c.nodules.len()))
            .collect();
        assert_eq!(scans, [("1.2.3".into(), 2), ("9.9".into(), 0)]);
        assert!(!truth.names_no_reported_series(&reports));
        let elsewhere = HashMap::from([("9.9".to_owned(), ScanResult::default())]);
        assert!(truth.names_no_reported_series(&elsewhere));
    }
}
