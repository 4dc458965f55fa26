//! Streaming discovery: the tree is scanned one top-level folder at a time, and each
//! folder's series are handed to the analysers before the next folder is read.
//!
//! A *unit* is a file given as a root, the loose files directly inside a root, or one
//! folder directly inside a root (archives are laid out study per folder, so a unit is
//! normally one study). Only one unit's headers are held at a time, and the hand-off
//! channel is bounded, so scanning runs just ahead of analysis and memory does not grow
//! with the archive. A study split over two top-level folders is selected within each.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;

use super::store::Store;
use super::Event;
use crate::ingest::{self, SelectionRules, Study};
use crate::pipeline::error_chain;
use crate::report::table::{SeriesRow, Status};
use crate::volume::Series;

/// What the producer learns and hands on.
pub(super) struct Discovery<'a> {
    pub rules: SelectionRules,
    pub store: &'a Store,
    /// Resume is off: analyse even where a valid report exists.
    pub force: bool,
    pub work: Sender<Series>,
    pub events: Sender<Event>,
    /// Series already handed on, so a series found twice is analysed once.
    pub seen: HashSet<String>,
}

impl Discovery<'_> {
    /// Scans every unit under the roots in order; stops early if the consumers are gone.
    pub fn run(mut self, roots: &[PathBuf]) {
        for root in roots {
            for unit in units(root) {
                if self.unit(&unit).is_err() {
                    return;
                }
            }
        }
    }

    fn unit(&mut self, unit: &[PathBuf]) -> Result<(), ()> {
        let scan = match ingest::scan(unit) {
            Ok(scan) => scan,
            Err(err) => return self.file_row(error_chain(&err)),
        };
        for skipped in &scan.skipped {
            self.file_row(error_chain(skipped))?;
        }
        for study in &scan.studies {
            self.study(study)?;
        }
        Ok(())
    }

    fn study(&mut self, study: &Study) -> Result<(), ()> {
        let selection = ingest::select(study, &self.rules);
        for rejected in &selection.rejected {
            let s = rejected.series;
            let row = SeriesRow::without_report(
                &s.study_instance_uid,
                &s.series_instance_uid,
                Status::Skipped,
                rejected.reason.to_string(),
            );
            self.send(Event::Row(row))?;
        }
        match selection.chosen {
            Some(series) => self.series(series),
            None if selection.rejected.is_empty() => {
                let row = SeriesRow::without_report(
                    &study.study_instance_uid,
                    "",
                    Status::Skipped,
                    "no series to analyse".to_owned(),
                );
                self.send(Event::Row(row))
            }
            None => Ok(()),
        }
    }

    fn series(&mut self, series: &Series) -> Result<(), ()> {
        let uid = &series.series_instance_uid;
        if !self.seen.insert(uid.clone()) {
            return Ok(());
        }
        self.send(Event::Discovered)?;
        if !self.force && self.store.is_complete(uid) {
            return self.send(Event::Resumed(uid.clone()));
        }
        self.work.send(series.clone()).map_err(|_| ())
    }

    /// A file that is not a usable DICOM instance: a row with empty UIDs and the reason.
    fn file_row(&self, reason: String) -> Result<(), ()> {
        self.send(Event::Row(SeriesRow::without_report(
            "",
            "",
            Status::Skipped,
            reason,
        )))
    }

    fn send(&self, event: Event) -> Result<(), ()> {
        self.events.send(event).map_err(|_| ())
    }
}

/// The units under one root, in name order; only the root itself is listed here, the
/// folders below it are walked when their unit is scanned.
fn units(root: &Path) -> Vec<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(root) else {
        // A file, or something ingest will report as unreadable.
        return vec![vec![root.to_owned()]];
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let (folders, files): (Vec<PathBuf>, Vec<PathBuf>) =
        paths.into_iter().partition(|p| p.is_dir());
    let loose = (!files.is_empty()).then_some(files);
    loose
        .into_iter()
        .chain(folders.into_iter().map(|f| vec![f]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_loose_files_then_each_folder() {
        let root = std::env::temp_dir().join(format!("pulmo-units-{}", std::process::id()));
        for dir in ["b", "a/x"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("loose.dcm"), b"").unwrap();
        let found = units(&root);
        assert_eq!(
            found,
            vec![
                vec![root.join("loose.dcm")],
                vec![root.join("a")],
                vec![root.join("b")]
            ]
        );
        assert_eq!(
            units(&root.join("loose.dcm")),
            vec![vec![root.join("loose.dcm")]]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
