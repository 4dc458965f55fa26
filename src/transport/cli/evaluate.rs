//! `pulmo evaluate`: the LUNA16 FROC of a folder of reports against a truth file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::evaluate;

/// Arguments of `pulmo evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Known nodules per series (`pulmo.truth/1`, as `scripts/phantom.py` writes it).
    #[arg(long)]
    pub truth: PathBuf,
    /// Folder of `pulmo.report/1` JSON files (`pulmo batch` writes them to `OUT/reports`).
    #[arg(long)]
    pub reports: PathBuf,
    /// Print the summary as JSON (the keys of `scripts/evaluate.py --json`, and more).
    #[arg(long)]
    pub json: bool,
}

/// Runs `pulmo evaluate`.
pub fn run(args: &EvaluateArgs) -> anyhow::Result<ExitCode> {
    let truth = evaluate::load_truth(&args.truth)?;
    let reports = evaluate::load_reports(&args.reports)?;
    let result = evaluate::evaluate(&truth, &reports);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", result.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
