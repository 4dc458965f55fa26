//! The service's index in SQLite: instances in the spool, series and their quiet time,
//! jobs and their states, the result objects of each job, the pushes of those results,
//! and the audit log.
//!
//! The files are the data; this index says where they are and what happens next. Every
//! write commits with `synchronous=FULL`, so an instance acknowledged after its row is
//! written survives a crash of the process or the machine.
//!
//! [`Store`] owns the one connection and creates every table; each family of tables has
//! its own file and a handle that borrows the store:
//!
//! | handle | file | tables |
//! |---|---|---|
//! | [`Store::instances`] → [`Instances`] | `instances.rs` | `instances`, `series` |
//! | [`Store::catalog`] → [`Catalog`] | `catalog.rs` | `catalog` |
//! | [`Store::jobs`] → [`Jobs`] | `jobs.rs` | `jobs` |
//! | [`Store::results`] → [`Results`] | `results.rs` | `results` |
//! | [`Store::pushes`] → [`Pushes`] | `pushes.rs` | `pushes` |
//! | [`Store::audit`] → [`Audit`] | `audit.rs` | `audit` |
//! | [`Store::reviews`] → [`Reviews`] | `reviews.rs` | `reviews`, `review_signatures` |
//!
//! A change that spans tables is one transaction: [`Jobs::complete`] files the results,
//! supersedes older jobs and queues pushes through helpers of the other files that take
//! the open transaction.

mod audit;
mod catalog;
mod instances;
mod jobs;
mod pushes;
mod results;
mod reviews;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

pub use audit::{Audit, AuditEntry};
pub use catalog::{Attributes, Catalog, Scope, Served, Summary};
pub use instances::{Filed, InstanceRow, Instances};
pub use jobs::{Job, JobState, Jobs};
pub use pushes::Pushes;
pub use results::{ResultRow, Results};
pub use reviews::{Decision, Reviews, Revision, Signature};

/// What can go wrong with the index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not open the index {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the index failed")]
    Sql(#[from] rusqlite::Error),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The index: one connection behind a mutex (SQLite serialises writers anyway).
pub struct Store {
    db: Mutex<Connection>,
}

impl Store {
    /// Opens (creating when needed) the index at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let open = |path: &Path| -> rusqlite::Result<Connection> {
            let db = Connection::open(path)?;
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "FULL")?;
            db.busy_timeout(std::time::Duration::from_secs(10))?;
            for schema in [
                instances::SCHEMA,
                catalog::SCHEMA,
                jobs::SCHEMA,
                results::SCHEMA,
                audit::SCHEMA,
                pushes::SCHEMA,
                reviews::SCHEMA,
            ] {
                db.execute_batch(schema)?;
            }
            Ok(db)
        };
        let db = open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Store { db: Mutex::new(db) })
    }

    /// Received instances and their series.
    pub fn instances(&self) -> Instances<'_> {
        Instances(self)
    }

    /// The searchable attributes of served instances.
    pub fn catalog(&self) -> Catalog<'_> {
        Catalog(self)
    }

    /// The job queue and each job's end.
    pub fn jobs(&self) -> Jobs<'_> {
        Jobs(self)
    }

    /// The current result objects.
    pub fn results(&self) -> Results<'_> {
        Results(self)
    }

    /// The durable queue of pushes.
    pub fn pushes(&self) -> Pushes<'_> {
        Pushes(self)
    }

    /// Readers' decisions on findings, and signed reviews.
    pub fn reviews(&self) -> Reviews<'_> {
        Reviews(self)
    }

    /// The audit log.
    pub fn audit(&self) -> Audit<'_> {
        Audit(self)
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: every change
        // is one statement or one transaction.
        self.db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{now, Lane};

    /// An empty index in a temporary directory.
    pub(super) fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("index.sqlite")).unwrap();
        (dir, store)
    }

    /// One CT instance of study 1.2.
    pub(super) fn instance(sop: &str, series: &str) -> InstanceRow {
        InstanceRow {
            sop_instance_uid: sop.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            study_uid: "1.2".into(),
            series_uid: series.into(),
            path: PathBuf::from(format!("/spool/{sop}.dcm")),
            bytes: 10,
            attributes: None,
        }
    }

    #[test]
    fn every_table_is_created_and_reopening_keeps_them() {
        let (dir, store) = store();
        let tables = |store: &Store| -> Vec<String> {
            let db = store.db();
            let mut stmt = db
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.collect::<rusqlite::Result<_>>().unwrap()
        };
        let expected = [
            "audit",
            "catalog",
            "instances",
            "jobs",
            "pushes",
            "results",
            "review_signatures",
            "reviews",
            "series",
            "sqlite_sequence",
        ];
        assert_eq!(tables(&store), expected);
        store
            .instances()
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("index.sqlite")).unwrap();
        assert_eq!(tables(&store), expected);
        assert_eq!(store.jobs().queue_quiet(now() + 1.0).unwrap().len(), 1);
    }
}
