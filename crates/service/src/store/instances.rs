//! The `instances` and `series` tables: where each received instance lies in the spool,
//! and for each series its lane, when it last heard news, and whether that news still
//! waits to be queued.

use std::path::PathBuf;

use super::{args, catalog, Attributes, Db, Result, Store};
use crate::{now, Lane};

/// The `instances` and `series` tables (migration 1).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    lane INTEGER NOT NULL,
    last_received REAL NOT NULL,
    pending INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
";

/// One stored instance, as the index knows it.
#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// What DICOMweb searches match, filed with the row in one transaction when given.
    pub attributes: Option<Attributes>,
}

/// What filing an instance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filed {
    /// A new instance: its series has news and is analysed once quiet.
    New,
    /// A re-send of a known instance. It is news (the series is analysed again) when its
    /// bytes differ from the stored ones or the series' last analysis failed: a corrected
    /// re-send repairs a failed series.
    Resent { news: bool },
    /// The SOP Instance UID is already filed under another study or series: nothing was
    /// recorded (a UID names one instance; the sender must fix the clash).
    Elsewhere {
        study_uid: String,
        series_uid: String,
    },
}

/// Received instances and their series: [`Store::instances`].
pub struct Instances<'a>(pub(super) &'a Store);

impl Instances<'_> {
    /// Records a stored instance and, when it is news, marks its series as having news.
    pub fn put(&self, row: &InstanceRow, lane: Lane) -> Result<Filed> {
        self.0.with(|db| put(db, row, lane))
    }

    /// The study and series an instance is filed under, when it is.
    pub fn filed_under(&self, sop_instance_uid: &str) -> Result<Option<(String, String)>> {
        let row = self.0.with(|db| {
            db.query_opt(
                "SELECT study_uid, series_uid FROM instances WHERE sop_instance_uid = ?1",
                args![sop_instance_uid],
            )
        })?;
        row.map(|r| Ok((r.get(0)?, r.get(1)?))).transpose()
    }

    /// The spool files of one series.
    pub fn paths(&self, series_uid: &str) -> Result<Vec<PathBuf>> {
        let rows = self.0.with(|db| {
            db.query(
                "SELECT path FROM instances WHERE series_uid = ?1 ORDER BY sop_instance_uid",
                args![series_uid],
            )
        })?;
        rows.iter()
            .map(|r| r.get::<String>(0).map(PathBuf::from))
            .collect()
    }

    /// The spool files of one study.
    pub fn study_paths(&self, study_uid: &str) -> Result<Vec<PathBuf>> {
        let rows = self.0.with(|db| {
            db.query(
                "SELECT path FROM instances WHERE study_uid = ?1 ORDER BY sop_instance_uid",
                args![study_uid],
            )
        })?;
        rows.iter()
            .map(|r| r.get::<String>(0).map(PathBuf::from))
            .collect()
    }

    /// How many instances of one study are stored.
    pub fn study_count(&self, study_uid: &str) -> Result<u32> {
        self.0.with(|db| {
            db.query_one(
                "SELECT count(*) FROM instances WHERE study_uid = ?1",
                args![study_uid],
            )?
            .get(0)
        })
    }

    /// Series of a study with news not yet queued (still arriving or quiet-waiting).
    pub fn receiving_series(&self, study_uid: &str) -> Result<Vec<String>> {
        let rows = self.0.with(|db| {
            db.query(
                "SELECT series_uid FROM series WHERE study_uid = ?1 AND pending = 1
                 ORDER BY series_uid",
                args![study_uid],
            )
        })?;
        rows.iter().map(|r| r.get(0)).collect()
    }
}

fn put(db: &mut Db<'_>, row: &InstanceRow, lane: Lane) -> Result<Filed> {
    let t = now();
    let known = db.query_opt(
        "SELECT study_uid, series_uid, bytes FROM instances WHERE sop_instance_uid = ?1",
        args![row.sop_instance_uid],
    )?;
    let filed = match known {
        None => Filed::New,
        Some(known) => {
            let (study_uid, series_uid): (String, String) = (known.get(0)?, known.get(1)?);
            if study_uid != row.study_uid || series_uid != row.series_uid {
                return Ok(Filed::Elsewhere {
                    study_uid,
                    series_uid,
                });
            }
            let changed = known.get::<i64>(2)? != row.bytes as i64;
            let failed = last_job_failed(db, &row.series_uid)?;
            Filed::Resent {
                news: changed || failed,
            }
        }
    };
    db.execute(
        "INSERT INTO instances VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (sop_instance_uid) DO UPDATE SET path = ?5, bytes = ?6",
        args![
            row.sop_instance_uid,
            row.sop_class_uid,
            row.study_uid,
            row.series_uid,
            row.path.to_string_lossy(),
            row.bytes as i64,
            t
        ],
    )?;
    if let Some(attributes) = &row.attributes {
        catalog::insert(db, attributes)?;
    }
    let news = matches!(filed, Filed::New | Filed::Resent { news: true });
    db.execute(
        "INSERT INTO series VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (series_uid) DO UPDATE SET
            lane = CASE WHEN excluded.lane < series.lane THEN excluded.lane ELSE series.lane END,
            last_received = excluded.last_received,
            pending = CASE WHEN excluded.pending > series.pending
                THEN excluded.pending ELSE series.pending END",
        args![row.series_uid, row.study_uid, lane as i64, t, news as i64],
    )?;
    Ok(filed)
}

/// A series whose newest job ended `done` or `skipped`, with no news and none queued or
/// running: its source instances may go once they are old enough.
const PURGEABLE: &str = "
    SELECT s.series_uid, s.study_uid FROM series s
    WHERE s.pending = 0 AND s.last_received < ?1
      AND (CAST(?2 AS TEXT) IS NULL OR s.series_uid = ?2)
      AND (SELECT state FROM jobs j WHERE j.series_uid = s.series_uid ORDER BY id DESC LIMIT 1)
          IN ('done', 'skipped')
      AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.series_uid = s.series_uid
                      AND j.state IN ('queued', 'running'))
    ORDER BY s.last_received";

impl Instances<'_> {
    /// Analysed series (study, series) whose last instance arrived before `before`.
    pub fn purgeable(&self, before: f64) -> Result<Vec<(String, String)>> {
        let rows = self
            .0
            .with(|db| db.query(PURGEABLE, args![before, None::<String>]))?;
        rows.iter().map(|r| Ok((r.get(1)?, r.get(0)?))).collect()
    }

    /// Forgets the received instances of one series, when it is still purgeable (checked
    /// again in the same transaction), audits that as `caller`, and returns their files
    /// for the caller to remove. The series is forgotten too: instances sent again later
    /// are a new series to analyse.
    pub fn purge(&self, series_uid: &str, before: f64, caller: &str) -> Result<Vec<PathBuf>> {
        self.0.with(|db| {
            if db.engine() == super::Engine::Postgres {
                // Two nodes' retention tasks purge a series once: the second waits here,
                // then finds it gone.
                db.query(
                    "SELECT 1 FROM series WHERE series_uid = ?1 FOR UPDATE",
                    args![series_uid],
                )?;
            }
            let still = db.query_opt(PURGEABLE, args![before, series_uid])?;
            let Some(still) = still else {
                return Ok(Vec::new());
            };
            let study_uid: String = still.get(1)?;
            let paths = db
                .query(
                    "SELECT path FROM instances WHERE series_uid = ?1",
                    args![series_uid],
                )?
                .iter()
                .map(|r| r.get::<String>(0).map(PathBuf::from))
                .collect::<Result<Vec<_>>>()?;
            db.execute(
                "DELETE FROM catalog WHERE sop_instance_uid IN
                    (SELECT sop_instance_uid FROM instances WHERE series_uid = ?1)",
                args![series_uid],
            )?;
            db.execute(
                "DELETE FROM instances WHERE series_uid = ?1",
                args![series_uid],
            )?;
            db.execute(
                "DELETE FROM series WHERE series_uid = ?1",
                args![series_uid],
            )?;
            let action = format!(
                "purge series {series_uid} ({} source instances)",
                paths.len()
            );
            super::audit::insert(db, now(), caller, &action, Some(&study_uid), 200)?;
            Ok(paths)
        })
    }
}

/// Whether the newest job of a series failed.
fn last_job_failed(db: &mut Db<'_>, series_uid: &str) -> Result<bool> {
    let state = db.query_opt(
        "SELECT state FROM jobs WHERE series_uid = ?1 ORDER BY id DESC LIMIT 1",
        args![series_uid],
    )?;
    Ok(match state {
        Some(row) => row.get::<String>(0)? == "failed",
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::instance;
    use super::super::tests::on_both_engines;
    use super::*;

    on_both_engines! { store =>
    #[test]
    fn a_resent_instance_is_not_news() {
        let (_dir, store) = store();
        let instances = store.instances();
        let put = |row| instances.put(&row, Lane::Routine).unwrap();
        assert_eq!(put(instance("1.1", "1.2.3")), Filed::New);
        assert_eq!(store.jobs().queue_quiet(now() + 1.0).unwrap().len(), 1);
        assert_eq!(put(instance("1.1", "1.2.3")), Filed::Resent { news: false });
        assert!(store.jobs().queue_quiet(now() + 1.0).unwrap().is_empty());
        assert_eq!(instances.paths("1.2.3").unwrap().len(), 1);
    }
    }

    on_both_engines! { store =>
    #[test]
    fn a_changed_resend_is_news() {
        let (_dir, store) = store();
        let instances = store.instances();
        instances
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        assert_eq!(store.jobs().queue_quiet(now() + 1.0).unwrap().len(), 1);
        let changed = InstanceRow {
            bytes: 11,
            ..instance("1.1", "1.2.3")
        };
        let filed = instances.put(&changed, Lane::Routine).unwrap();
        assert_eq!(filed, Filed::Resent { news: true });
        assert_eq!(store.jobs().queue_quiet(now() + 1.0).unwrap().len(), 1);
    }
    }

    on_both_engines! { store =>
    #[test]
    fn a_resend_to_a_failed_series_is_news() {
        let (_dir, store) = store();
        let instances = store.instances();
        instances
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        store.jobs().queue_quiet(now() + 1.0).unwrap();
        let job = store.jobs().claim().unwrap().unwrap();
        store
            .jobs()
            .finish(&job, crate::JobState::Failed, Some("bad slice"), 0)
            .unwrap();
        let filed = instances
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        assert_eq!(filed, Filed::Resent { news: true });
        assert_eq!(store.jobs().queue_quiet(now() + 1.0).unwrap().len(), 1);
    }
    }

    on_both_engines! { store =>
    #[test]
    fn an_instance_uid_filed_elsewhere_is_not_recorded() {
        let (_dir, store) = store();
        let instances = store.instances();
        instances
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        let other_study = InstanceRow {
            study_uid: "9.9".into(),
            series_uid: "9.9.1".into(),
            path: PathBuf::from("/spool/elsewhere.dcm"),
            ..instance("1.1", "9.9.1")
        };
        let filed = instances.put(&other_study, Lane::Routine).unwrap();
        assert_eq!(
            filed,
            Filed::Elsewhere {
                study_uid: "1.2".into(),
                series_uid: "1.2.3".into()
            }
        );
        assert_eq!(instances.study_count("9.9").unwrap(), 0);
        assert_eq!(
            instances.paths("1.2.3").unwrap(),
            [PathBuf::from("/spool/1.1.dcm")]
        );
        assert_eq!(
            instances.filed_under("1.1").unwrap(),
            Some(("1.2".into(), "1.2.3".into()))
        );
    }
    }

    on_both_engines! { store =>
    #[test]
    fn only_analysed_series_are_purged_and_the_purge_is_audited() {
        let (_dir, store) = store();
        let later = now() + 10.0;
        let purgeable = || store.instances().purgeable(later).unwrap();
        store
            .instances()
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        assert!(purgeable().is_empty(), "pending news");
        store.jobs().queue_quiet(now() + 1.0).unwrap();
        assert!(purgeable().is_empty(), "queued");
        let job = store.jobs().claim().unwrap().unwrap();
        assert!(purgeable().is_empty(), "running");
        assert!(store
            .instances()
            .purge("1.2.3", later, "test")
            .unwrap()
            .is_empty());
        store
            .jobs()
            .finish(&job, crate::JobState::Failed, Some("bad"), 0)
            .unwrap();
        assert!(purgeable().is_empty(), "failed: a re-send may repair it");
        store
            .jobs()
            .finish(&job, crate::JobState::Skipped, Some("not CT"), 1)
            .unwrap();
        assert_eq!(purgeable(), [("1.2".to_owned(), "1.2.3".to_owned())]);
        assert!(
            store
                .instances()
                .purgeable(now() - 60.0)
                .unwrap()
                .is_empty(),
            "too young"
        );
        let paths = store.instances().purge("1.2.3", later, "test").unwrap();
        assert_eq!(paths, [PathBuf::from("/spool/1.1.dcm")]);
        assert!(store.instances().paths("1.2.3").unwrap().is_empty());
        assert!(purgeable().is_empty());
        let audit = store.audit().of_study("1.2").unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].caller, "test");
        assert!(
            audit[0].action.starts_with("purge series 1.2.3"),
            "{}",
            audit[0].action
        );
    }
    }

    on_both_engines! { store =>
    #[test]
    fn series_still_arriving_are_not_queued() {
        let (_dir, store) = store();
        store
            .instances()
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        assert!(store.jobs().queue_quiet(now() - 60.0).unwrap().is_empty());
        assert_eq!(
            store.instances().receiving_series("1.2").unwrap(),
            ["1.2.3"]
        );
    }
    }
}
