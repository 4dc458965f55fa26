//! The command line: parse arguments, set up logging, call the pipeline, print results.
//!
//! Errors are printed once, here, with their whole cause chain.

mod analyze;
mod batch;
mod dimse;
mod evaluate;
mod feedback;
mod push;
mod results;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::analyzer::{self, AnalyzerConfig};
use crate::backend::{BatchPolicy, DeviceChoice, PrecisionChoice, ResampleChoice};
use crate::build_info;
use crate::inference;
use crate::ingest::{self, SelectionRules};
use crate::volume::{self, export::SampleType};

/// Lung-nodule assist for chest CT: DICOM in, findings and reports out.
#[derive(Debug, Parser)]
#[command(name = "pulmo", version = build_info::VERSION_LINE.as_str(), propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The log filter unless `--log` or `PULMO_LOG` says otherwise.
const DEFAULT_LOG: &str = "info,jpeg2k=warn";

/// Logging options shared by every subcommand.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter, in tracing's syntax (for example `info` or `pulmo=debug`). The default
    /// keeps OpenJPEG's per-image progress messages (`jpeg2k` at info) out.
    #[arg(long = "log", env = "PULMO_LOG", default_value = DEFAULT_LOG, global = true)]
    pub filter: String,
    /// Log line format on standard error.
    #[arg(long, env = "PULMO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What pulmo can do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that libtorch works here: load the bundled smoke model and verify its output.
    Selftest(SelftestArgs),
    /// Find and measure lung nodules in every study under the given files or folders.
    Analyze(analyze::AnalyzeArgs),
    /// Convert the CT series found in DICOM files or folders to NIfTI-1 or NumPy.
    Convert(ConvertArgs),
    /// Analyse a whole archive: reports per series, tables of series and findings, resume.
    Batch(batch::BatchArgs),
    /// Score a folder of reports against known nodules (LUNA16 FROC, sizes, Lung-RADS).
    Evaluate(evaluate::EvaluateArgs),
    /// Serve DICOMweb: take studies by STOW-RS, analyse each series once complete, serve
    /// reports and DICOM results.
    Serve(Box<serve::ServeArgs>),
    /// Make a bearer token for `pulmo serve`: prints the token once, and the entry (its
    /// hash) to add to the tokens file.
    Token(serve::TokenArgs),
    /// Export every reader decision of a `pulmo serve` data directory (CSV or JSON Lines;
    /// no patient data), to score and retrain models against readers.
    Feedback(feedback::FeedbackArgs),
}

/// Arguments of `pulmo convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// DICOM files or folders (searched recursively; files that are not DICOM are skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output file: `.nii`, `.nii.gz` (RAS affine) or `.npy` (shape slices, rows, columns).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Sample type: auto (int16 when that is lossless, else float32), int16 or float32.
    #[arg(long, value_enum, default_value_t = Dtype::Auto)]
    pub dtype: Dtype,
    /// Convert this series (SeriesInstanceUID) instead of the one the selection rules choose.
    #[arg(long)]
    pub series: Option<String>,
    #[command(flatten)]
    pub selection: SelectionArgs,
}

/// Which series of a study is analysed, shared by `analyze`, `batch`, `convert` and `serve`.
#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// Series selection rules, a TOML file with any of the keys `modalities`, `sop_classes`,
    /// `excluded_image_types`, `demoted_image_types`, `min_frames` (the others keep their
    /// chest CT defaults; docs/ARCHITECTURE.md).
    #[arg(long = "selection", env = "PULMO_SELECTION")]
    pub selection: Option<PathBuf>,
}

impl SelectionArgs {
    /// The rules the file gives, or the defaults.
    pub fn rules(&self) -> anyhow::Result<SelectionRules> {
        let Some(path) = &self.selection else {
            return Ok(SelectionRules::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read the selection rules {}", path.display()))?;
        SelectionRules::from_toml(&text)
            .with_context(|| format!("selection rules {} are not valid", path.display()))
    }
}

/// Sample types `pulmo convert` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// int16 when every value is an integer in range, else float32.
    Auto,
    /// Hounsfield units rounded to int16.
    Int16,
    /// Hounsfield units as float32.
    Float32,
}

/// Model, device and batching options shared by `analyze` and `batch`.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Where the model runs: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, env = "PULMO_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    /// The network's number format: auto (float16 on CUDA, bfloat16 on CPUs with native
    /// bfloat16, where the model's manifest allows it; else float32), float32, bfloat16 or
    /// float16 (CUDA only).
    #[arg(long, env = "PULMO_PRECISION", default_value = "auto")]
    pub precision: PrecisionChoice,
    /// Where volumes are resampled to the model's grid: auto (on the model's device when it
    /// is a GPU, else the CPU), cpu, or device (the model's device even when that is the CPU).
    #[arg(long, env = "PULMO_RESAMPLE", default_value = "auto")]
    pub resample: ResampleChoice,
    /// Model bundle directory (with manifest.toml).
    #[arg(long, env = "PULMO_MODEL", default_value_os_t = analyzer::default_model_dir())]
    pub model: PathBuf,
    /// Series analysed at once: one decodes while another is in the network.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Most tiles per network call; tiles of different series share calls.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_batch: u16,
    /// Longest a tile waits for others to fill a batch, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub max_wait_ms: u64,
}

impl EngineArgs {
    /// The analyzer these options ask for.
    pub fn analyzer_config(&self) -> AnalyzerConfig {
        AnalyzerConfig {
            model_dir: self.model.clone(),
            backend: inference::Options {
                device: self.device,
                precision: self.precision,
                resample: self.resample,
                batch: BatchPolicy {
                    max_batch: usize::from(self.max_batch),
                    max_wait: std::time::Duration::from_millis(self.max_wait_ms),
                },
            },
        }
    }

    /// How many series run at once.
    pub fn jobs(&self) -> usize {
        usize::from(self.jobs)
    }
}

/// Arguments of `pulmo selftest`.
#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Where to run: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, env = "PULMO_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    /// The smoke TorchScript model to load.
    #[arg(long, default_value_os_t = inference::smoke::default_model_path())]
    pub model: PathBuf,
}

/// Runs the command line and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pulmo: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Selftest(args) => selftest(&args),
        Command::Analyze(args) => analyze::run(&args),
        Command::Convert(args) => convert(&args),
        Command::Batch(args) => batch::run(&args),
        Command::Evaluate(args) => evaluate::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Token(args) => serve::token(&args),
        Command::Feedback(args) => feedback::run(&args),
    }
}

fn convert(args: &ConvertArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let report = ingest::scan(&args.paths)?;
    let scanned = started.elapsed();
    for skipped in &report.skipped {
        tracing::info!(reason = %skipped, "skipped");
    }
    let rules = args.selection.rules()?;
    let series = ingest::choose(&report, &rules, args.series.as_deref())?;
    let volume = volume::assemble(series)?;
    let assembled = started.elapsed();
    for warning in &volume.warnings {
        tracing::warn!(series = %series.series_instance_uid, "{warning}");
    }
    let sample_type = match args.dtype {
        Dtype::Auto => SampleType::Auto,
        Dtype::Int16 => SampleType::Int16,
        Dtype::Float32 => SampleType::Float32,
    };
    let written = volume::export::write(&volume, &args.out, sample_type)?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let [k, j, i] = volume.shape();
    let spacing = volume.geometry.spacing;
    println!(
        "{}: {k}x{j}x{i} (slices, rows, columns), spacing {:.3}x{:.3}x{:.3} mm, {written:?}, series {}; \
         scan {:.0} ms, decode {:.0} ms, write {:.0} ms",
        args.out.display(),
        spacing[0],
        spacing[1],
        spacing[2],
        series.series_instance_uid,
        ms(scanned),
        ms(assembled - scanned),
        ms(started.elapsed() - assembled),
    );
    Ok(ExitCode::SUCCESS)
}

fn selftest(args: &SelftestArgs) -> anyhow::Result<ExitCode> {
    let device = inference::device::resolve(args.device)?;
    let report = inference::smoke::run(&args.model, device)?;
    println!(
        "pulmo {}: libtorch ok on {} ({} values, max error {:.1e}, {:.0} ms)",
        *build_info::VERSION_LINE,
        inference::device::describe(report.device),
        report.values,
        report.max_abs_error,
        report.elapsed.as_secs_f64() * 1e3,
    );
    Ok(ExitCode::SUCCESS)
}

fn init_logging(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.filter).unwrap_or_else(|err| {
        eprintln!(
            "pulmo: warning: ignoring log filter {:?}: {err}",
            args.filter
        );
        EnvFilter::new(DEFAULT_LOG)
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
