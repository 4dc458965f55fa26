//! The audit log: who (a token's name) sent or read which study, when, and how it ended.
//! Kept in the index beside the jobs; holds UIDs and names of tokens, never patient data.

use rusqlite::params;

use super::now;
use super::store::{Result, Store};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    at REAL NOT NULL,
    caller TEXT NOT NULL,
    action TEXT NOT NULL,
    study_uid TEXT,
    status INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_study ON audit(study_uid, at);
";

/// One audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Seconds since the Unix epoch.
    pub at: f64,
    pub caller: String,
    /// What was done: `POST /dicomweb/studies`, `GET /api/v1/studies/{study}/report`...
    pub action: String,
    pub study_uid: Option<String>,
    /// The HTTP status it was answered with.
    pub status: u16,
}

impl Store {
    /// Appends records for one request: one per study it touched (or one without a study).
    pub fn audit(&self, caller: &str, action: &str, studies: &[String], status: u16) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let at = now();
        let none = [None];
        let studies: Vec<Option<&str>> = if studies.is_empty() {
            none.to_vec()
        } else {
            studies.iter().map(|s| Some(s.as_str())).collect()
        };
        for study in studies {
            tx.execute(
                "INSERT INTO audit VALUES (?1, ?2, ?3, ?4, ?5)",
                params![at, caller, action, study, status],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The records of one study, oldest first.
    pub fn audit_of(&self, study_uid: &str) -> Result<Vec<Entry>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT at, caller, action, study_uid, status FROM audit WHERE study_uid = ?1 ORDER BY at",
        )?;
        let rows = stmt.query_map([study_uid], |r| {
            Ok(Entry {
                at: r.get(0)?,
                caller: r.get(1)?,
                action: r.get(2)?,
                study_uid: r.get(3)?,
                status: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
