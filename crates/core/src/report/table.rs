//! Tables of many reports: one row per finding and one row per series, as CSV or JSON Lines.
//!
//! Rows are flat and typed, so CSV columns and JSON keys are the same names. This module
//! knows reports and findings; it does not know where the reports came from.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::Report;

/// One finding of one series: `findings.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingRow {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub finding_id: u32,
    /// Centre in patient coordinates (LPS, mm).
    pub x_mm: f64,
    pub y_mm: f64,
    pub z_mm: f64,
    /// Centre as voxel indices of the source series.
    pub column: u32,
    pub row: u32,
    pub slice: u32,
    pub sop_instance_uid: String,
    pub instance_number: Option<i32>,
    pub diameter_mm: f64,
    pub long_axis_mm: f64,
    pub short_axis_mm: f64,
    pub volume_mm3: f64,
    pub mean_hu: f64,
    #[serde(rename = "type")]
    pub nodule_type: String,
    pub solid_core_mm: Option<f64>,
    pub score: f64,
    /// Whether the score reaches the report's operating point: one of the model's calls.
    pub call: bool,
    pub lung_rads: String,
    pub laterality: String,
}

/// What became of a series in a batch run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The network ran; the findings are in the report.
    Analysed,
    /// The series was read but judged not to be a chest CT; the report says why.
    NotChest,
    /// The series (or study) could not be analysed; `reason` says why.
    Failed,
    /// Passed over on purpose: not a CT series to analyse, or a file that is not DICOM.
    Skipped,
}

impl Status {
    /// The status of a series with a report.
    pub fn of(report: &Report) -> Status {
        if report.analyzed {
            Status::Analysed
        } else {
            Status::NotChest
        }
    }
}

/// One series (or a study or file that yielded none): `series.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesRow {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub status: Status,
    pub reason: String,
    /// Whether this run reused a report an earlier run wrote.
    pub resumed: bool,
    pub findings: Option<usize>,
    /// Findings at or above the operating point.
    pub calls: Option<usize>,
    pub study_score: Option<f64>,
    pub lung_rads: Option<String>,
    pub model_sha256: String,
    pub decode_ms: Option<f64>,
    pub inference_ms: Option<f64>,
    pub total_ms: Option<f64>,
}

impl SeriesRow {
    /// The row of a series with a report.
    pub fn from_report(report: &Report, resumed: bool) -> SeriesRow {
        let timing = |stage: &str| report.timing_ms.get(stage).copied();
        SeriesRow {
            study_instance_uid: report.study_instance_uid.clone(),
            series_instance_uid: report.series_instance_uid.clone(),
            status: Status::of(report),
            reason: if report.analyzed {
                String::new()
            } else {
                report.warnings.join("; ")
            },
            resumed,
            findings: Some(report.findings.len()),
            calls: Some(report.calls()),
            study_score: Some(report.study_score),
            lung_rads: Some(report.lung_rads.as_str().to_owned()),
            model_sha256: report.model.sha256.clone(),
            decode_ms: timing("decode"),
            inference_ms: timing("inference"),
            total_ms: timing("total"),
        }
    }

    /// The row of a series, study or file without a report.
    pub fn without_report(study: &str, series: &str, status: Status, reason: String) -> Self {
        SeriesRow {
            study_instance_uid: study.to_owned(),
            series_instance_uid: series.to_owned(),
            status,
            reason,
            resumed: false,
            findings: None,
            calls: None,
            study_score: None,
            lung_rads: None,
            model_sha256: String::new(),
            decode_ms: None,
            inference_ms: None,
            total_ms: None,
        }
    }
}

/// One row per finding of a report, in the report's order.
pub fn finding_rows(report: &Report) -> Vec<FindingRow> {
    report
        .findings
        .iter()
        .map(|f| {
            let [x_mm, y_mm, z_mm] = f.center_patient_mm;
            let [column, row, slice] = f.center_voxel;
            FindingRow {
                study_instance_uid: report.study_instance_uid.clone(),
                series_instance_uid: report.series_instance_uid.clone(),
                finding_id: f.id,
                x_mm,
                y_mm,
                z_mm,
                column,
                row,
                slice,
                sop_instance_uid: f.sop_instance_uid.clone(),
                instance_number: f.instance_number,
                diameter_mm: f.diameter_mm,
                long_axis_mm: f.long_axis_mm,
                short_axis_mm: f.short_axis_mm,
                volume_mm3: f.volume_mm3,
                mean_hu: f.mean_hu,
                nodule_type: word(&f.nodule_type),
                solid_core_mm: f.solid_core_mm,
                score: f.score,
                call: report.is_call(f),
                lung_rads: f.lung_rads.as_str().to_owned(),
                laterality: word(&f.laterality),
            }
        })
        .collect()
}

/// An enum as its JSON spelling (`part-solid`, `left`).
fn word<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// How a table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

/// Writes rows of one type, one at a time, as CSV or JSON Lines.
pub struct TableWriter<W: Write> {
    inner: Inner<W>,
}

enum Inner<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Jsonl(std::io::BufWriter<W>),
}

impl<W: Write> TableWriter<W> {
    /// A writer in the given format; CSV writes its header with the first row.
    pub fn new(out: W, format: Format) -> Self {
        let inner = match format {
            Format::Csv => Inner::Csv(Box::new(csv::Writer::from_writer(out))),
            Format::Jsonl => Inner::Jsonl(std::io::BufWriter::new(out)),
        };
        TableWriter { inner }
    }

    /// Appends one row.
    pub fn write<T: Serialize>(&mut self, row: &T) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Csv(w) => w.serialize(row).map_err(std::io::Error::other),
            Inner::Jsonl(w) => {
                serde_json::to_writer(&mut *w, row)?;
                w.write_all(b"\n")
            }
        }
    }

    /// Flushes and hands back the output.
    pub fn finish(self) -> std::io::Result<W> {
        match self.inner {
            Inner::Csv(w) => w.into_inner().map_err(|e| e.into_error()),
            Inner::Jsonl(w) => w.into_inner().map_err(|e| e.into_error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> SeriesRow {
        SeriesRow::without_report(
            "1.2",
            "1.2.3",
            Status::NotChest,
            "a, \"quoted\" reason".into(),
        )
    }

    #[test]
    fn csv_rows_read_back_as_written() {
        let mut writer = TableWriter::new(Vec::new(), Format::Csv);
        writer.write(&row()).unwrap();
        writer.write(&row()).unwrap();
        let bytes = writer.finish().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("study_instance_uid,series_instance_uid,status,reason,"));
        assert!(text.contains(",not-chest,"), "{text}");
        let mut reader = csv::Reader::from_reader(&bytes[..]);
        let back: Vec<SeriesRow> = reader.deserialize().map(|r| r.unwrap()).collect();
        assert_eq!(back, vec![row(), row()]);
    }

    #[test]
    fn jsonl_is_one_object_per_line() {
        let mut writer = TableWriter::new(Vec::new(), Format::Jsonl);
        writer.write(&row()).unwrap();
        writer.write(&row()).unwrap();
        let text = String::from_utf8(writer.finish().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let back: SeriesRow = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(back, row());
    }
}
