//! `pulmo batch`: a whole archive, overnight. Discovers studies under the roots while it
//! analyses them, writes one JSON report per series, resumes where an earlier run stopped,
//! and ends with tables of every series and every finding.
//!
//! Three kinds of thread meet here: one discovers (header scans, see [`discover`]), `--jobs`
//! analyse (decode with rayon, then the shared inference engine, where series of different
//! studies share batches), and the calling thread owns progress, rows and the summary.
//! They are joined by channels: a bounded one for work, so scanning stays just ahead of
//! analysis, and one for events back.

mod discover;
mod followup;
mod progress;
mod store;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use self::progress::Progress;
use self::store::{Store, Tables};
use crate::ingest::SelectionRules;
use crate::pipeline::{self, Analyzer};
use crate::report::deidentify::Pseudonymizer;
use crate::report::table::{Format, SeriesRow, Status};
use crate::volume::Series;

/// Arguments of `pulmo batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Folders (or files) to search; each folder directly inside a root is taken as one
    /// study's folder and scanned, recursively, as analysis proceeds.
    #[arg(required = true)]
    pub roots: Vec<PathBuf>,
    /// Output folder: `reports/<SeriesInstanceUID>.json`, `findings.csv`, `series.csv`.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Table format: csv, or jsonl (one JSON object per line).
    #[arg(long, value_enum, default_value_t = TableFormat::Csv)]
    pub format: TableFormat,
    /// Analyse every series again, even where a complete report by this model exists.
    #[arg(long)]
    pub force: bool,
    /// No progress bar and no per-series lines; only errors and the closing summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write `deidentified/`: reports and tables with every UID replaced by a
    /// pseudonym (`2.25.<HMAC-SHA256>`), for sharing.
    #[arg(long)]
    pub deidentify: bool,
    /// Key of the pseudonyms; the same salt gives the same pseudonyms in every run.
    /// Without it a random key is used and forgotten.
    #[arg(
        long,
        env = "PULMO_SALT",
        hide_env_values = true,
        requires = "deidentify"
    )]
    pub salt: Option<String>,
    #[command(flatten)]
    pub engine: super::EngineArgs,
    #[command(flatten)]
    pub selection: super::SelectionArgs,
}

/// Table formats of `pulmo batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// JSON Lines.
    Jsonl,
}

/// What the discovering and analysing threads tell the calling thread.
enum Event {
    /// One more series to account for.
    Discovered,
    /// A series with a complete report from an earlier run.
    Resumed(String),
    /// A series analysed now; its report is written.
    Analysed { series: String, status: Status },
    /// A series, study or file without a report: failed or skipped.
    Row(SeriesRow),
}

/// Counts for the progress line and the summary.
#[derive(Debug, Default, Clone)]
struct Tally {
    discovered: u64,
    done: u64,
    analysed: u64,
    not_chest: u64,
    resumed: u64,
    failed: u64,
    skipped: u64,
}

/// Runs `pulmo batch`; the exit code is non-zero if any series or study failed.
pub fn run(args: &BatchArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let pseudonyms = match (&args.salt, args.deidentify) {
        (Some(salt), _) => Some(Pseudonymizer::new(salt.as_bytes())),
        (None, true) => Some(Pseudonymizer::random()?),
        (None, false) => None,
    };
    let rules = args.selection.rules()?;
    let analyzer = crate::analyzer::start(&args.engine.analyzer_config())?;
    let store = Store::open(&args.out, analyzer.model_info().sha256)?;
    let progress = Progress::new(args.quiet);
    let (tally, rows, resumed) = process(args, &rules, &analyzer, &store, &progress);
    progress.finish();
    let compared = followup::compare_patients(&store)?;
    let tables = Tables {
        format: match args.format {
            TableFormat::Csv => Format::Csv,
            TableFormat::Jsonl => Format::Jsonl,
        },
        resumed: &resumed,
        rows: &rows,
        deidentify: pseudonyms.as_ref(),
    };
    let reports = store.write_tables(&tables)?;
    println!("{}", summary(&tally, reports, &analyzer, started.elapsed()));
    if compared.compared > 0 {
        println!(
            "{} series compared with the patient's study before ({} registrations failed)",
            compared.compared, compared.failed_registrations
        );
    }
    anyhow::ensure!(
        tally.discovered > 0 || !rows.is_empty(),
        "no DICOM files found under the given roots"
    );
    Ok(if tally.failed > 0 || tally.discovered == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Discovers and analyses everything; returns the tally, the rows without a report and
/// the series resumed from earlier runs.
fn process(
    args: &BatchArgs,
    rules: &SelectionRules,
    analyzer: &Analyzer,
    store: &Store,
    progress: &Progress,
) -> (Tally, Vec<SeriesRow>, HashSet<String>) {
    let jobs = args.engine.jobs();
    let (work, tasks) = crossbeam_channel::bounded::<Series>(jobs);
    let (events, received) = crossbeam_channel::unbounded();
    std::thread::scope(|scope| {
        let discovery = discover::Discovery {
            rules: rules.clone(),
            store,
            force: args.force,
            work,
            events: events.clone(),
            seen: HashSet::new(),
        };
        scope.spawn(|| discovery.run(&args.roots));
        for _ in 0..jobs {
            let (tasks, events) = (tasks.clone(), events.clone());
            scope.spawn(move || {
                for series in tasks {
                    let event = analyse(analyzer, store, rules, &series);
                    if events.send(event).is_err() {
                        return;
                    }
                }
            });
        }
        drop(events);
        collect(received, progress)
    })
}

/// Analyses one series and writes its report; any failure becomes a row.
fn analyse(analyzer: &Analyzer, store: &Store, rules: &SelectionRules, series: &Series) -> Event {
    let failed = |reason: String| {
        Event::Row(SeriesRow::without_report(
            &series.study_instance_uid,
            &series.series_instance_uid,
            Status::Failed,
            reason,
        ))
    };
    // Malformed pixel data is an error from `volume` (decoder panics are caught there), so
    // a corrupt study costs one row, as it does in `pulmo analyze`.
    let analysis = match analyzer.analyze_series(series, rules, pipeline::Choice::NONE) {
        Ok(analysis) => analysis,
        Err(err) => return failed(pipeline::error_chain(&err)),
    };
    let report = &analysis.report;
    let written = store
        .write_report(report)
        .and_then(|()| followup::keep(store, report, &analysis.snapshot));
    match written {
        Ok(()) => Event::Analysed {
            series: report.series_instance_uid.clone(),
            status: Status::of(report),
        },
        Err(err) => failed(format!("{err:#}")),
    }
}

/// The calling thread's loop: counts, progress, rows; returns when every sender is gone.
fn collect(
    received: crossbeam_channel::Receiver<Event>,
    progress: &Progress,
) -> (Tally, Vec<SeriesRow>, HashSet<String>) {
    let mut tally = Tally::default();
    let mut rows = Vec::new();
    let mut resumed = HashSet::new();
    for event in received {
        match event {
            Event::Discovered => tally.discovered += 1,
            Event::Resumed(series) => {
                tally.done += 1;
                tally.resumed += 1;
                progress.series(&tally, &series, "resumed");
                resumed.insert(series);
            }
            Event::Analysed { series, status } => {
                tally.done += 1;
                match status {
                    Status::NotChest => tally.not_chest += 1,
                    _ => tally.analysed += 1,
                }
                progress.series(&tally, &series, status_word(status));
            }
            Event::Row(row) => {
                record_row(&mut tally, &row, progress);
                rows.push(row);
            }
        }
        progress.update(&tally);
    }
    (tally, rows, resumed)
}

fn record_row(tally: &mut Tally, row: &SeriesRow, progress: &Progress) {
    match row.status {
        Status::Failed => {
            tally.done += 1;
            tally.failed += 1;
            progress.failure(tally, row);
        }
        _ => {
            tally.skipped += 1;
            progress.skipped(row);
        }
    }
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Analysed => "analysed",
        Status::NotChest => "not a chest CT",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
    }
}

/// The closing lines: counts, throughput, batching.
fn summary(tally: &Tally, reports: usize, analyzer: &Analyzer, elapsed: Duration) -> String {
    let stats = analyzer.backend().detector.stats();
    let (batches, tiles, busy) = (stats.batches, stats.inputs, stats.busy);
    let shared = stats.shared_batches;
    let computed = tally.analysed + tally.not_chest + tally.failed;
    let hours = elapsed.as_secs_f64() / 3600.0;
    let rate = if hours > 0.0 {
        computed as f64 / hours
    } else {
        0.0
    };
    format!(
        "{} series: {} analysed, {} not chest CT, {} failed, {} resumed; {} skipped \
         (series, studies or files); {reports} reports in the tables\n\
         {tiles} tiles in {batches} batches ({shared} shared by several series), network {:.1} s, \
         wall {:.1} s, {rate:.0} series/hour",
        tally.discovered,
        tally.analysed,
        tally.not_chest,
        tally.failed,
        tally.resumed,
        tally.skipped,
        busy.as_secs_f64(),
        elapsed.as_secs_f64(),
    )
}
