//! How a batch run shows its progress: a bar on a terminal, log lines otherwise
//! (a job scheduler, `nohup`, a pipe), nothing but errors with `--quiet`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Tally;
use crate::report::table::SeriesRow;

/// One of the three ways to show progress.
pub(super) enum Progress {
    Bar(ProgressBar),
    Log,
    Quiet,
}

impl Progress {
    /// A bar when standard error is a terminal and `quiet` is off, else log lines or quiet.
    pub fn new(quiet: bool) -> Progress {
        if quiet {
            return Progress::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            return Progress::Log;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} series, {per_sec}, ETA {eta} {msg}",
        )
        .expect("the template is valid. This is a bug.")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(500));
        Progress::Bar(bar)
    }

    /// Counts changed.
    pub fn update(&self, tally: &Tally) {
        if let Progress::Bar(bar) = self {
            bar.set_length(tally.discovered);
            bar.set_position(tally.done);
            if tally.failed > 0 {
                bar.set_message(format!("({} failed)", tally.failed));
            }
        }
    }

    /// A series finished (analysed or resumed).
    pub fn series(&self, tally: &Tally, series: &str, what: &str) {
        if let Progress::Log = self {
            tracing::info!(
                done = tally.done,
                discovered = tally.discovered,
                failed = tally.failed,
                series,
                "{what}"
            );
        }
    }

    /// A series failed: always shown.
    pub fn failure(&self, tally: &Tally, row: &SeriesRow) {
        let series = &row.series_instance_uid;
        match self {
            Progress::Bar(bar) => bar.println(format!("series {series}: FAILED: {}", row.reason)),
            _ => tracing::warn!(
                done = tally.done,
                discovered = tally.discovered,
                failed = tally.failed,
                series = %series,
                reason = %row.reason,
                "series failed"
            ),
        }
    }

    /// A series, study or file passed over: a log line outside quiet mode.
    pub fn skipped(&self, row: &SeriesRow) {
        if let Progress::Log = self {
            tracing::info!(series = %row.series_instance_uid, reason = %row.reason, "skipped");
        }
    }

    /// Clears the bar before the summary.
    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
