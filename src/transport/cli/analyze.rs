//! `pulmo analyze`: every study under the given paths, its chosen CT series analysed,
//! a readable summary per series, JSON reports, DICOM SR and SEG, and key images on request.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::results;

use crate::compare::Prior;
use crate::findings::Finding;
use crate::ingest;
use crate::pipeline::{self, Analyzer, Outcome};
use crate::report::Report;

/// Arguments of `pulmo analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// DICOM files or folders (searched recursively; files that are not DICOM are skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Write results per analysed series into this directory: `<SeriesInstanceUID>.json`,
    /// and unless turned off below `.sr.dcm`, `.seg.dcm` and `.finding-<n>.png`.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub outputs: OutputArgs,
    /// A prior CT study of the same patient (DICOM files or a folder): it is analysed
    /// first (nothing of it is written) and every series under PATHS is compared with it:
    /// the scans are aligned from the lungs, nodules paired, and each one's change, volume
    /// doubling time and Lung-RADS category with comparison reported.
    #[arg(long, value_name = "PATH")]
    pub prior: Option<PathBuf>,
    /// Print the JSON reports (an array) on standard output; the summary goes to stderr.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: super::EngineArgs,
    #[command(flatten)]
    pub selection: super::SelectionArgs,
}

/// Which results `--out` writes besides the JSON report (all of them by default; the last
/// of `--x` and `--no-x` wins).
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// Write the DICOM SR (TID 1500 measurement report) `<SeriesInstanceUID>.sr.dcm`.
    #[arg(long, overrides_with = "no_sr")]
    pub sr: bool,
    /// Do not write the DICOM SR.
    #[arg(long, overrides_with = "sr")]
    pub no_sr: bool,
    /// Write the DICOM SEG `<SeriesInstanceUID>.seg.dcm` (when there are findings).
    #[arg(long, overrides_with = "no_seg")]
    pub seg: bool,
    /// Do not write the DICOM SEG.
    #[arg(long, overrides_with = "seg")]
    pub no_seg: bool,
    /// Write a key image `<SeriesInstanceUID>.finding-<n>.png` per call (finding at or above the operating point).
    #[arg(long, overrides_with = "no_images")]
    pub images: bool,
    /// Do not write key images.
    #[arg(long, overrides_with = "images")]
    pub no_images: bool,
    /// Write each key image also as a DICOM Secondary Capture `<SeriesInstanceUID>.finding-<n>.sc.dcm`.
    #[arg(long, overrides_with = "no_capture")]
    pub capture: bool,
    /// Do not write Secondary Captures.
    #[arg(long, overrides_with = "capture")]
    pub no_capture: bool,
}

impl OutputArgs {
    fn choice(&self) -> results::Choice {
        results::Choice {
            sr: !self.no_sr,
            seg: !self.no_seg,
            images: !self.no_images,
            capture: !self.no_capture,
        }
    }
}

/// Runs `pulmo analyze`; the exit code is non-zero if any series or study failed.
pub fn run(args: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let analyzer = crate::analyzer::start(&args.engine.analyzer_config())?;
    let scan = ingest::scan(&args.paths)?;
    for skipped in &scan.skipped {
        tracing::info!(reason = %pipeline::error_chain(skipped), "skipped");
    }
    anyhow::ensure!(
        !scan.studies.is_empty(),
        "no DICOM studies found under {} ({} file(s) skipped)",
        args.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        scan.skipped.len()
    );
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    let summary_to_stderr = args.json;
    let write_error = std::sync::Mutex::new(None);
    let done = |outcome: &Outcome| {
        let text = summarize(outcome);
        if summary_to_stderr {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
        if let (Some(dir), Outcome::Analyzed(analysis)) = (&args.out, outcome) {
            let written =
                results::write(dir, analysis).and_then(|()| write_report(dir, &analysis.report));
            if let Err(err) = written {
                write_error.lock().expect("not poisoned").get_or_insert(err);
            }
        }
    };
    // Without --out nothing is written, so nothing is encoded.
    let choice = match args.out {
        Some(_) => args.outputs.choice(),
        None => results::Choice::NONE,
    };
    let rules = args.selection.rules()?;
    let prior = match &args.prior {
        Some(path) => Some(analyze_prior(&analyzer, path, &rules, &scan.studies)?),
        None => None,
    };
    let outcomes = analyzer.analyze_studies_with_prior(
        &scan.studies,
        &rules,
        args.engine.jobs(),
        choice,
        prior.as_ref(),
        &done,
    );
    if let Some(err) = write_error.into_inner().expect("not poisoned") {
        return Err(err);
    }
    if args.json {
        let reports: Vec<&Report> = outcomes.iter().filter_map(as_report).collect();
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    footer(
        &analyzer,
        &outcomes,
        scan.skipped.len(),
        started.elapsed(),
        summary_to_stderr,
    );
    let failed = outcomes.iter().any(|o| matches!(o, Outcome::Failed { .. }));
    Ok(if failed || outcomes.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Analyses the prior study under `path`: it must hold one study, which must not be one of
/// the `current` studies, with a series that can be analysed.
fn analyze_prior(
    analyzer: &Analyzer,
    path: &Path,
    rules: &ingest::SelectionRules,
    current: &[ingest::Study],
) -> anyhow::Result<Prior> {
    let scan = ingest::scan(&[path])?;
    let what = || format!("--prior {}", path.display());
    match scan.studies.as_slice() {
        [] => anyhow::bail!("{}: no DICOM study found", what()),
        [study]
            if current
                .iter()
                .any(|c| c.study_instance_uid == study.study_instance_uid) =>
        {
            anyhow::bail!("{}: the prior is one of the studies to analyse", what())
        }
        [_] => {}
        many => anyhow::bail!(
            "{}: {} studies found; give the folder of one prior study",
            what(),
            many.len()
        ),
    }
    let outcomes =
        analyzer.analyze_studies(&scan.studies, rules, 1, results::Choice::NONE, &|_| {});
    match outcomes.into_iter().next() {
        Some(Outcome::Analyzed(analysis)) if analysis.report.analyzed => Ok(analysis.as_prior()),
        Some(Outcome::Analyzed(_)) => {
            anyhow::bail!("{}: the prior series is not a chest CT", what())
        }
        Some(Outcome::Failed { reason, .. }) => anyhow::bail!("{}: {reason}", what()),
        None => anyhow::bail!("{}: nothing to analyse", what()),
    }
}

fn as_report(outcome: &Outcome) -> Option<&Report> {
    match outcome {
        Outcome::Analyzed(analysis) => Some(&analysis.report),
        Outcome::Failed { .. } => None,
    }
}

/// Writes `dir/<SeriesInstanceUID>.json` atomically.
pub(super) fn write_report(dir: &Path, report: &Report) -> anyhow::Result<()> {
    results::write_atomic(
        dir,
        &report.series_instance_uid,
        "json",
        report.to_json().as_bytes(),
    )
}

/// The human-readable block for one outcome.
fn summarize(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Failed {
            study_instance_uid,
            series_instance_uid,
            reason,
        } => {
            let what = match series_instance_uid {
                Some(series) => format!("series {series}"),
                None => format!("study {study_instance_uid}"),
            };
            format!("\n{what}: FAILED: {reason}\n")
        }
        Outcome::Analyzed(analysis) => summarize_report(&analysis.report),
    }
}

fn summarize_report(r: &Report) -> String {
    let s = &r.series;
    let mut out = format!(
        "\nseries {} ({} slices, {}x{}, {:.2} x {:.2} x {:.2} mm) on {}\n",
        r.series_instance_uid,
        s.slices,
        s.rows,
        s.columns,
        s.spacing_mm[0],
        s.spacing_mm[1],
        s.spacing_mm[2],
        r.device
    );
    for warning in &r.warnings {
        out.push_str(&format!("  warning: {warning}\n"));
    }
    if r.analyzed {
        out.push_str(&format!(
            "  {} finding(s), {} at or above the operating point {:.2}; study score {:.2}, Lung-RADS {}\n",
            r.findings.len(),
            r.calls(),
            r.operating_score,
            r.study_score,
            r.lung_rads.as_str()
        ));
    }
    if !r.findings.is_empty() {
        out.push_str("   #  side   image (inst)   centre LPS mm               diam  long x short  volume mm3  type          HU  score  LR\n");
        // Findings come highest score first: the candidates follow the calls.
        let first_candidate = r.findings.iter().position(|f| !r.is_call(f));
        for (n, f) in r.findings.iter().enumerate() {
            if first_candidate == Some(n) {
                out.push_str("  below the operating point (candidates for review; they do not set the category):\n");
            }
            out.push_str(&finding_row(f));
        }
    }
    out.push_str(&summarize_comparison(r));
    let timings: Vec<String> = r
        .timing_ms
        .iter()
        .map(|(stage, ms)| format!("{stage} {ms:.0}"))
        .collect();
    out.push_str(&format!("  timing ms: {}\n", timings.join(", ")));
    out
}

/// The comparison with the prior, when there was one: registration, then each finding's
/// change and the resolved prior findings.
fn summarize_comparison(r: &Report) -> String {
    let Some(c) = &r.comparison else {
        return String::new();
    };
    let reg = &c.registration;
    let interval = c.interval_days.map_or("interval unknown".to_owned(), |d| {
        format!("{d} days earlier")
    });
    let mut out = format!(
        "  compared with prior series {} ({interval}): registration {}",
        c.prior_series_instance_uid,
        match (&reg.reason, reg.residual_mm) {
            (Some(reason), _) => format!("FAILED: {reason}"),
            (None, Some(mm)) => format!("ok, residual {mm:.1} mm"),
            (None, None) => "ok".to_owned(),
        }
    );
    out.push('\n');
    for f in &r.findings {
        let Some(up) = &f.followup else { continue };
        let mut line = format!("   #{:<2} {}", f.id, up.change.as_str());
        if let Some(p) = &up.prior {
            line.push_str(&format!(" (prior #{}", p.finding_id));
            if let (Some(dd), Some(dv)) = (up.diameter_change_mm, up.volume_change_percent) {
                line.push_str(&format!(", {dd:+.1} mm, volume {dv:+.0} %"));
            }
            if let Some(days) = up.volume_doubling_days {
                line.push_str(&format!(", doubling time {days:.0} days"));
            }
            line.push(')');
        }
        out.push_str(&format!("{line}; Lung-RADS {}\n", f.lung_rads_rule));
    }
    for p in &r.resolved {
        out.push_str(&format!("   prior #{} resolved\n", p.finding_id));
    }
    if !r.lung_rads_rule.is_empty() {
        out.push_str(&format!("  study Lung-RADS: {}\n", r.lung_rads_rule));
    }
    out
}

fn finding_row(f: &Finding) -> String {
    let [x, y, z] = f.center_patient_mm;
    let instance = f.instance_number.map_or("-".to_owned(), |n| n.to_string());
    let side = serde_json::to_value(f.laterality)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned));
    let kind = serde_json::to_value(f.nodule_type)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned));
    // Part-solid nodules are categorised by their solid core: show it beside the category.
    let core = f
        .solid_core_mm
        .map_or(String::new(), |mm| format!(" (solid core {mm:.1} mm)"));
    format!(
        "  {:>2}  {:<5}  {:>5} ({:>4})   {:>7.1} {:>7.1} {:>7.1}   {:>5.1}  {:>5.1} x {:<5.1}  {:>10.0}  {:<12} {:>4.0}  {:.2}  {}{}\n",
        f.id,
        side.unwrap_or_default(),
        f.center_voxel[2],
        instance,
        x,
        y,
        z,
        f.diameter_mm,
        f.long_axis_mm,
        f.short_axis_mm,
        f.volume_mm3,
        kind.unwrap_or_default(),
        f.mean_hu,
        f.score,
        f.lung_rads.as_str(),
        core
    )
}

/// The closing lines: counts, batching, wall time.
fn footer(
    analyzer: &Analyzer,
    outcomes: &[Outcome],
    skipped: usize,
    elapsed: Duration,
    to_stderr: bool,
) {
    let analysed = outcomes.iter().filter(|o| as_report(o).is_some()).count();
    let failed = outcomes.len() - analysed;
    let stats = analyzer.backend().detector.stats();
    let (batches, tiles, busy) = (stats.batches, stats.inputs, stats.busy);
    let mean = if batches > 0 {
        tiles as f64 / batches as f64
    } else {
        0.0
    };
    let shared = stats.shared_batches;
    let text = format!(
        "\n{analysed} series analysed, {failed} failed, {skipped} file(s) skipped; \
         {tiles} tiles in {batches} batches (mean {mean:.1}; {shared} shared by several series), \
         network {:.1} s, wall {:.1} s\n",
        busy.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    if to_stderr {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{LungRads, NoduleType};

    #[test]
    fn a_finding_row_shows_location_size_type_score_category_and_a_part_solid_core() {
        let mut f = pulmo_core::testing::finding(0.87, LungRads::Cat4A);
        f.id = 2;
        f.center_patient_mm = [-47.46, -4.6, -134.94];
        f.center_voxel = [100, 120, 35];
        f.instance_number = Some(73);
        f.diameter_mm = 14.0;
        f.long_axis_mm = 18.3;
        f.short_axis_mm = 9.7;
        f.nodule_type = NoduleType::PartSolid;
        f.solid_core_mm = Some(6.54);
        let row = finding_row(&f);
        for part in [
            " 2  left",
            "35 (  73)",
            "-47.5",
            "-4.6",
            "-134.9",
            "14.0",
            "18.3 x 9.7",
            "part-solid",
            "0.87",
            "4A (solid core 6.5 mm)",
        ] {
            assert!(row.contains(part), "{part:?} not in {row:?}");
        }
        f.nodule_type = NoduleType::Solid;
        f.solid_core_mm = None;
        assert!(!finding_row(&f).contains("core"));
    }
}
