//! The output folder of a batch run: one report per series, and the tables rebuilt from
//! all of them.
//!
//! Every file is written to a hidden temporary name and renamed into place, so a run that
//! is interrupted (Ctrl-C, kill, power) leaves whole files or none; leftover temporaries
//! are removed when the next run opens the folder.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::report::deidentify::Pseudonymizer;
use crate::report::table::{self, Format, SeriesRow, TableWriter};
use crate::report::{Report, SCHEMA};

/// `DIR/reports/<SeriesInstanceUID>.json` and the tables in `DIR`.
pub(super) struct Store {
    root: PathBuf,
    /// The model whose reports count as complete.
    model_sha256: String,
}

impl Store {
    /// Opens (creating) the folder and clears temporaries an interrupted run left.
    pub fn open(root: &Path, model_sha256: String) -> anyhow::Result<Store> {
        let store = Store {
            root: root.to_owned(),
            model_sha256,
        };
        let reports = store.reports_dir();
        std::fs::create_dir_all(&reports)
            .with_context(|| format!("could not create {}", reports.display()))?;
        remove_temporaries(&reports)?;
        remove_temporaries(root)?;
        Ok(store)
    }

    /// The output folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn reports_dir(&self) -> PathBuf {
        self.root.join("reports")
    }

    /// Whether a valid report for this series by this model is already there.
    pub fn is_complete(&self, series_uid: &str) -> bool {
        let path = self.reports_dir().join(format!("{series_uid}.json"));
        match read_report(&path) {
            Some(report) => {
                report.series_instance_uid == series_uid && report.model.sha256 == self.model_sha256
            }
            None => false,
        }
    }

    /// Writes one report, atomically.
    pub fn write_report(&self, report: &Report) -> anyhow::Result<()> {
        crate::transport::cli::analyze::write_report(&self.reports_dir(), report)
    }

    /// Rebuilds `findings.<ext>` and `series.<ext>` from every report in the folder plus
    /// the rows without a report; with a pseudonymizer, also `deidentified/` (reports and
    /// tables). Returns how many reports went in.
    pub fn write_tables(&self, tables: &Tables<'_>) -> anyhow::Result<usize> {
        let mut plain = TablePair::create(&self.root, tables.format)?;
        let mut shared = match tables.deidentify {
            Some(p) => Some((p, DeidentifiedDir::create(&self.root, tables.format)?)),
            None => None,
        };
        let mut count = 0;
        for path in report_paths(&self.reports_dir())? {
            let Some(report) = read_report(&path) else {
                tracing::warn!(path = %path.display(), "not a pulmo report; left out of the tables");
                continue;
            };
            let resumed = tables.resumed.contains(&report.series_instance_uid);
            plain.add_report(&report, resumed)?;
            if let Some((p, dir)) = &mut shared {
                dir.add_report(&p.report(&report), resumed)?;
            }
            count += 1;
        }
        for row in tables.rows {
            plain.series.write(row)?;
            if let Some((p, dir)) = &mut shared {
                dir.tables.series.write(&p.series_row(row))?;
            }
        }
        plain.finish()?;
        if let Some((_, dir)) = shared {
            dir.tables.finish()?;
        }
        Ok(count)
    }
}

/// What goes into the tables besides the reports.
pub(super) struct Tables<'a> {
    pub format: Format,
    /// Series this run found complete and did not recompute.
    pub resumed: &'a HashSet<String>,
    /// Series, studies and files without a report: failed and skipped.
    pub rows: &'a [SeriesRow],
    pub deidentify: Option<&'a Pseudonymizer>,
}

/// `findings.<ext>` and `series.<ext>` being written under temporary names.
struct TablePair {
    findings: TableWriter<File>,
    series: TableWriter<File>,
    renames: Vec<(PathBuf, PathBuf)>,
}

impl TablePair {
    fn create(dir: &Path, format: Format) -> anyhow::Result<TablePair> {
        let mut renames = Vec::new();
        let mut open = |name: &str| -> anyhow::Result<TableWriter<File>> {
            let path = dir.join(format!("{name}.{}", format.extension()));
            let tmp = dir.join(format!(".{name}.{}.tmp", format.extension()));
            let file = File::create(&tmp)
                .with_context(|| format!("could not create {}", tmp.display()))?;
            renames.push((tmp, path));
            Ok(TableWriter::new(file, format))
        };
        Ok(TablePair {
            findings: open("findings")?,
            series: open("series")?,
            renames,
        })
    }

    fn add_report(&mut self, report: &Report, resumed: bool) -> anyhow::Result<()> {
        self.series
            .write(&SeriesRow::from_report(report, resumed))?;
        for row in table::finding_rows(report) {
            self.findings.write(&row)?;
        }
        Ok(())
    }

    /// Flushes both tables to disk and renames them into place.
    fn finish(self) -> anyhow::Result<()> {
        for writer in [self.findings, self.series] {
            writer.finish()?.sync_all()?;
        }
        for (tmp, path) in self.renames {
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("could not write {}", path.display()))?;
        }
        Ok(())
    }
}

/// `DIR/deidentified/`: pseudonymized reports and tables, for sharing.
struct DeidentifiedDir {
    reports: PathBuf,
    tables: TablePair,
}

impl DeidentifiedDir {
    fn create(root: &Path, format: Format) -> anyhow::Result<DeidentifiedDir> {
        let dir = root.join("deidentified");
        let reports = dir.join("reports");
        // Pseudonyms change with the key: reports of an earlier key must not linger.
        if reports.exists() {
            std::fs::remove_dir_all(&reports)
                .with_context(|| format!("could not clear {}", reports.display()))?;
        }
        std::fs::create_dir_all(&reports)
            .with_context(|| format!("could not create {}", reports.display()))?;
        let tables = TablePair::create(&dir, format)?;
        Ok(DeidentifiedDir { reports, tables })
    }

    fn add_report(&mut self, report: &Report, resumed: bool) -> anyhow::Result<()> {
        crate::transport::cli::analyze::write_report(&self.reports, report)?;
        self.tables.add_report(report, resumed)
    }
}

/// A report file that parses as `pulmo.report/1`; anything else is `None`.
fn read_report(path: &Path) -> Option<Report> {
    let text = std::fs::read_to_string(path).ok()?;
    let report: Report = serde_json::from_str(&text).ok()?;
    (report.schema == SCHEMA).then_some(report)
}

/// The `*.json` files in a folder, in name order.
fn report_paths(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Removes `.*.tmp` files: the remains of writes that never reached their rename.
fn remove_temporaries(dir: &Path) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))?;
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') && name.ends_with(".tmp") {
            std::fs::remove_file(&path)
                .with_context(|| format!("could not remove {}", path.display()))?;
        }
    }
    Ok(())
}
