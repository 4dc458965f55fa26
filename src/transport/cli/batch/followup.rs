//! `pulmo batch`'s follow-up pass: once every series is analysed, the studies of each
//! patient are put in date order and each is compared with the one before.
//!
//! Analysis keeps what a comparison needs of each series (lung surface, study date, a key
//! for the patient; [`Snapshot`]) in `DIR/followup/<SeriesInstanceUID>.json`, beside the
//! report; this pass reads them, so studies analysed by earlier runs take part too. Each
//! compared report is written again in place. The comparison is cheap (a registration of
//! two lung surfaces), so it is made again on every run, from the reports as they stand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::store::Store;
use crate::compare::{self, Prior, Snapshot};
use crate::report::Report;

/// What is kept per series for the follow-up pass.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Kept {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub snapshot: Snapshot,
}

/// Where the snapshots go.
pub(super) fn dir(store: &Store) -> PathBuf {
    store.root().join("followup")
}

/// Keeps `snapshot` of `report`'s series for the follow-up pass, without the findings'
/// views: the pass rewrites JSON reports only, and thousands of studies' views would weigh
/// gigabytes.
pub(super) fn keep(store: &Store, report: &Report, snapshot: &Snapshot) -> anyhow::Result<()> {
    let dir = dir(store);
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let kept = Kept {
        study_instance_uid: report.study_instance_uid.clone(),
        series_instance_uid: report.series_instance_uid.clone(),
        snapshot: Snapshot {
            views: Vec::new(),
            ..snapshot.clone()
        },
    };
    let json = serde_json::to_vec(&kept).expect("a snapshot always serialises. This is a bug.");
    crate::transport::cli::results::write_atomic(&dir, &report.series_instance_uid, "json", &json)
}

/// How the pass went.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Compared {
    /// Reports compared with a prior study.
    pub compared: usize,
    /// Of those, how many registrations failed.
    pub failed_registrations: usize,
}

/// Compares each patient's studies, in date order, with the one before; rewrites the
/// compared reports. Series without a kept snapshot or a report are left out.
pub(super) fn compare_patients(store: &Store) -> anyhow::Result<Compared> {
    let mut patients: BTreeMap<String, Vec<Kept>> = BTreeMap::new();
    for kept in read_all(&dir(store))? {
        if let Some(key) = kept.snapshot.patient_key.clone() {
            patients.entry(key).or_default().push(kept);
        }
    }
    let mut tally = Compared::default();
    for (_, mut studies) in patients {
        studies.sort_by(|a, b| {
            (a.snapshot.study_date.as_deref(), &a.study_instance_uid)
                .cmp(&(b.snapshot.study_date.as_deref(), &b.study_instance_uid))
        });
        // One series per study: the first kept.
        studies.dedup_by(|b, a| a.study_instance_uid == b.study_instance_uid);
        let mut before: Option<Prior> = None;
        for kept in studies {
            let Some(mut report) = read_report(store, &kept.series_instance_uid)? else {
                before = None;
                continue;
            };
            if let Some(prior) = before.as_ref().filter(|_| report.analyzed) {
                compare::compare(&mut report, &kept.snapshot, prior);
                store.write_report(&report)?;
                tally.compared += 1;
                let failed = report.comparison.as_ref().is_some_and(|c| {
                    c.registration.status == crate::report::RegistrationStatus::Failed
                });
                tally.failed_registrations += usize::from(failed);
            }
            if report.analyzed {
                before = Some(Prior {
                    report,
                    snapshot: kept.snapshot,
                });
            }
        }
    }
    Ok(tally)
}

fn read_all(dir: &Path) -> anyhow::Result<Vec<Kept>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("could not list {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text =
            std::fs::read(&path).with_context(|| format!("could not read {}", path.display()))?;
        let kept = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a follow-up snapshot", path.display()))?;
        out.push(kept);
    }
    Ok(out)
}

fn read_report(store: &Store, series: &str) -> anyhow::Result<Option<Report>> {
    let path = store.reports_dir().join(format!("{series}.json"));
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    let report = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a pulmo report", path.display()))?;
    Ok(Some(report))
}
