//! `pulmo feedback`: every reader decision a `pulmo serve` data directory holds, as CSV or
//! JSON Lines for researchers: study, series and finding ids, position, size, score, model
//! id and sha256, the model's and the reader's type, verdict and time. No patient data, no
//! reader names and no comments (free text may name a patient).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::report::review::rfc3339;
use crate::service::store::{Decision, Store};

/// Arguments of `pulmo feedback`.
#[derive(Debug, Args)]
pub struct FeedbackArgs {
    /// The data directory of `pulmo serve` (`--data`).
    #[arg(long, env = "PULMO_DATA", default_value = "pulmo-data")]
    pub data: PathBuf,
    /// Output file: `.csv`, or `.jsonl` for one JSON object per line.
    #[arg(long, short)]
    pub out: PathBuf,
}

/// One exported decision.
#[derive(Debug, Serialize)]
pub struct Row {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub job_id: i64,
    pub finding_id: u32,
    pub x_mm: f64,
    pub y_mm: f64,
    pub z_mm: f64,
    pub diameter_mm: f64,
    pub volume_mm3: f64,
    pub score: f64,
    pub model_type: String,
    pub reader_type: String,
    pub verdict: &'static str,
    pub decided_at: String,
    pub model_id: String,
    pub model_sha256: String,
}

impl From<&Decision> for Row {
    fn from(d: &Decision) -> Row {
        Row {
            study_instance_uid: d.study_uid.clone(),
            series_instance_uid: d.series_uid.clone(),
            job_id: d.job_id,
            finding_id: d.finding_id,
            x_mm: d.center_patient_mm[0],
            y_mm: d.center_patient_mm[1],
            z_mm: d.center_patient_mm[2],
            diameter_mm: d.diameter_mm,
            volume_mm3: d.volume_mm3,
            score: d.score,
            model_type: d.finding_type.clone(),
            reader_type: d
                .corrected_type
                .clone()
                .unwrap_or_else(|| d.finding_type.clone()),
            verdict: d.verdict.as_str(),
            decided_at: rfc3339(d.at),
            model_id: d.model_id.clone(),
            model_sha256: d.model_sha256.clone(),
        }
    }
}

const HEADER: &str = "study_instance_uid,series_instance_uid,job_id,finding_id,x_mm,y_mm,z_mm,\
diameter_mm,volume_mm3,score,model_type,reader_type,verdict,decided_at,model_id,model_sha256";

/// One CSV line. Every field is a UID, a number, a fixed word or a model id; a model id
/// with a comma or a quote is quoted.
fn csv_line(r: &Row) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        r.study_instance_uid,
        r.series_instance_uid,
        r.job_id,
        r.finding_id,
        r.x_mm,
        r.y_mm,
        r.z_mm,
        r.diameter_mm,
        r.volume_mm3,
        r.score,
        r.model_type,
        r.reader_type,
        r.verdict,
        r.decided_at,
        quote(&r.model_id),
        r.model_sha256
    )
}

/// Writes the export.
pub fn run(args: &FeedbackArgs) -> anyhow::Result<ExitCode> {
    let index = args.data.join("pulmo.sqlite");
    anyhow::ensure!(
        index.is_file(),
        "{} holds no pulmo index (pulmo.sqlite)",
        args.data.display()
    );
    let store =
        Store::open(&index).with_context(|| format!("could not open {}", index.display()))?;
    let rows: Vec<Row> = store.reviews().all()?.iter().map(Row::from).collect();
    let jsonl = args.out.extension().is_some_and(|e| e == "jsonl");
    let mut text = String::new();
    if !jsonl {
        text.push_str(HEADER);
        text.push('\n');
    }
    for row in &rows {
        let line = if jsonl {
            serde_json::to_string(row).expect("a row always serialises. This is a bug.")
        } else {
            csv_line(row)
        };
        text.push_str(&line);
        text.push('\n');
    }
    let mut file = std::fs::File::create(&args.out)
        .with_context(|| format!("could not create {}", args.out.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("could not write {}", args.out.display()))?;
    eprintln!("{} decisions written to {}", rows.len(), args.out.display());
    Ok(ExitCode::SUCCESS)
}
