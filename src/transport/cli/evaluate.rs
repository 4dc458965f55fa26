//! `pulmo evaluate`: the LUNA16 FROC of a folder of reports against truth files, and what
//! the model's calls amount to at its operating point.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::evaluate;

/// Arguments of `pulmo evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Known nodules: `pulmo.truth/1` JSON (as `scripts/model/phantom.py` writes it), or a
    /// LUNA16 `annotations.csv` (header `seriesuid,coordX,coordY,coordZ,diameter_mm`, one row
    /// per nodule, patient (LPS) mm), read as CSV when named `.csv` or when its first line
    /// starts with `seriesuid`. A CSV lists nodules, not scans: the scans scored are the
    /// series with reports (no row: no nodules), and rows of series without a report are
    /// left out. Several files are read as one set.
    #[arg(long, required_unless_present = "verdicts", num_args = 1.., value_name = "FILE")]
    pub truth: Vec<PathBuf>,
    /// Folder of `pulmo.report/1` JSON files: `pulmo analyze --out DIR`'s DIR, or `pulmo batch
    /// --out DIR`'s DIR (its `reports/` is read). A folder with no reports is an error.
    #[arg(long, value_name = "DIR", required_unless_present = "verdicts")]
    pub reports: Option<PathBuf>,
    /// Instead of truth: reader verdicts, as `pulmo feedback` exports them (CSV, or JSON
    /// Lines when named `.jsonl`). Gives the precision of the findings readers decided
    /// (accepted / decided) per model, at each `--operating` score, and per type.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["truth", "reports", "classifier_weight"])]
    pub verdicts: Option<PathBuf>,
    /// Also report the calls at each of these scores (besides the reports' own operating
    /// point): nodules called, false calls per scan and where they lie, study categories.
    #[arg(long, num_args = 1.., value_name = "SCORE")]
    pub operating: Vec<f64>,
    /// Score every finding again from the logits in its report with the candidate
    /// classifier's logit weighted W (the bundle's `[classifier] weight` gave the reported
    /// scores): `sigmoid(detector / 8 + W × classifier)`. For choosing a weight on a tuning
    /// set without analysing it again.
    #[arg(long, value_name = "W")]
    pub classifier_weight: Option<f64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `pulmo evaluate`.
pub fn run(args: &EvaluateArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.verdicts {
        return verdicts(path, args);
    }
    let truth = evaluate::load_truths(&args.truth)?;
    for warning in &truth.warnings {
        tracing::warn!("{warning}");
    }
    let reports_dir = args
        .reports
        .as_deref()
        .expect("clap requires --reports without --verdicts");
    let mut reports = evaluate::load_reports(reports_dir)?;
    if let Some(weight) = args.classifier_weight {
        evaluate::reweigh(&mut reports, weight)?;
    }
    if truth.names_no_reported_series(&reports) {
        tracing::warn!(
            reports = %reports_dir.display(),
            "no series with nodules in the truth CSV has a report: every scan is scored \
             as without nodules"
        );
    }
    let result = evaluate::evaluate_at(&truth, &reports, &args.operating);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        if let Some(weight) = args.classifier_weight {
            println!("scores from the reports' logits with classifier weight {weight}");
        }
        print!("{}", result.to_text());
    }
    Ok(ExitCode::SUCCESS)
}

/// `pulmo evaluate --verdicts FILE`: precision against reader verdicts.
fn verdicts(path: &std::path::Path, args: &EvaluateArgs) -> anyhow::Result<ExitCode> {
    let verdicts = evaluate::verdicts::load(path)?;
    let models = evaluate::verdicts::precision(&verdicts, &args.operating);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&models)?);
    } else {
        print!("{}", evaluate::verdicts::to_text(&models));
    }
    Ok(ExitCode::SUCCESS)
}
