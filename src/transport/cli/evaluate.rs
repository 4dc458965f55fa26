//! `pulmo evaluate`: the LUNA16 FROC of a folder of reports against truth files, and what
//! the model's calls amount to at its operating point.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::evaluate;

/// Arguments of `pulmo evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Known nodules per series (`pulmo.truth/1`, as `scripts/model/phantom.py` writes it); several
    /// files are read as one set.
    #[arg(long, required = true, num_args = 1..)]
    pub truth: Vec<PathBuf>,
    /// Folder of `pulmo.report/1` JSON files (`pulmo batch` writes them to `OUT/reports`).
    #[arg(long)]
    pub reports: PathBuf,
    /// Also report the calls at each of these scores (besides the reports' own operating
    /// point): nodules called, false calls per scan and where they lie, study categories.
    #[arg(long, num_args = 1.., value_name = "SCORE")]
    pub operating: Vec<f64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `pulmo evaluate`.
pub fn run(args: &EvaluateArgs) -> anyhow::Result<ExitCode> {
    let truth = evaluate::load_truths(&args.truth)?;
    let reports = evaluate::load_reports(&args.reports)?;
    let result = evaluate::evaluate_at(&truth, &reports, &args.operating);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", result.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
