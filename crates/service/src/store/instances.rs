//! The `instances` and `series` tables: where each received instance lies in the spool,
//! and for each series its lane, when it last heard news, and whether that news still
//! waits to be queued.

use std::path::PathBuf;

use rusqlite::{params, OptionalExtension};

use super::{Result, Store};
use crate::{now, Lane};

/// The `instances` and `series` tables; created with the rest of the index.
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
}

/// Received instances and their series: [`Store::instances`].
pub struct Instances<'a>(pub(super) &'a Store);

impl Instances<'_> {
    /// Records a stored instance and marks its series as having news. Returns false when
    /// the instance was already known (a re-send), which does not start a new analysis.
    pub fn put(&self, row: &InstanceRow, lane: Lane) -> Result<bool> {
        let mut db = self.0.db();
        let tx = db.transaction()?;
        let t = now();
        let known: Option<String> = tx
            .query_row(
                "SELECT path FROM instances WHERE sop_instance_uid = ?1",
                [&row.sop_instance_uid],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "INSERT INTO instances VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(sop_instance_uid) DO UPDATE SET path = ?5, bytes = ?6",
            params![
                row.sop_instance_uid,
                row.sop_class_uid,
                row.study_uid,
                row.series_uid,
                row.path.to_string_lossy(),
                row.bytes as i64,
                t
            ],
        )?;
        let news = known.is_none();
        tx.execute(
            "INSERT INTO series VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(series_uid) DO UPDATE SET
                lane = min(lane, ?3), last_received = ?4, pending = max(pending, ?5)",
            params![row.series_uid, row.study_uid, lane as i64, t, news as i64],
        )?;
        tx.commit()?;
        Ok(news)
    }

    /// The spool files of one series.
    pub fn paths(&self, series_uid: &str) -> Result<Vec<PathBuf>> {
        let db = self.0.db();
        let mut stmt = db.prepare_cached(
            "SELECT path FROM instances WHERE series_uid = ?1 ORDER BY sop_instance_uid",
        )?;
        let rows = stmt.query_map([series_uid], |r| r.get::<_, String>(0))?;
        Ok(rows
            .map(|p| p.map(PathBuf::from))
            .collect::<rusqlite::Result<_>>()?)
    }

    /// How many instances of one study are stored.
    pub fn study_count(&self, study_uid: &str) -> Result<u32> {
        Ok(self.0.db().query_row(
            "SELECT count(*) FROM instances WHERE study_uid = ?1",
            [study_uid],
            |r| r.get(0),
        )?)
    }

    /// Series of a study with news not yet queued (still arriving or quiet-waiting).
    pub fn receiving_series(&self, study_uid: &str) -> Result<Vec<String>> {
        let db = self.0.db();
        let mut stmt = db.prepare_cached(
            "SELECT series_uid FROM series WHERE study_uid = ?1 AND pending = 1 ORDER BY series_uid",
        )?;
        let rows = stmt.query_map([study_uid], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{instance, store};
    use super::*;

    #[test]
    fn a_resent_instance_is_not_news() {
        let (_dir, store) = store();
        let instances = store.instances();
        assert!(instances
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap());
        assert_eq!(store.jobs().queue_quiet(now() + 1.0).unwrap().len(), 1);
        assert!(!instances
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap());
        assert!(store.jobs().queue_quiet(now() + 1.0).unwrap().is_empty());
        assert_eq!(instances.paths("1.2.3").unwrap().len(), 1);
    }

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
