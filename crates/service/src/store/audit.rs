//! The `audit` table: who (a token's name) sent or read which study, when, and how it
//! ended. Kept in the index beside the jobs; holds UIDs and names of tokens, never patient
//! data.

use super::{args, Db, Result, Store};
use crate::now;

/// The `audit` table (migration 1).
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
pub struct AuditEntry {
    /// Seconds since the Unix epoch.
    pub at: f64,
    pub caller: String,
    /// What was done: `POST /dicomweb/studies`, `GET /api/v1/studies/{study}/report`...
    pub action: String,
    pub study_uid: Option<String>,
    /// The HTTP status it was answered with.
    pub status: u16,
}

/// Appends one record within an open transaction (a change audited with itself).
pub(super) fn insert(
    db: &mut Db<'_>,
    at: f64,
    caller: &str,
    action: &str,
    study: Option<&str>,
    status: u16,
) -> Result<()> {
    db.execute(
        "INSERT INTO audit VALUES (?1, ?2, ?3, ?4, ?5)",
        args![at, caller, action, study, status],
    )?;
    Ok(())
}

/// The audit log: [`Store::audit`].
pub struct Audit<'a>(pub(super) &'a Store);

impl Audit<'_> {
    /// Appends records for one request: one per study it touched (or one without a study).
    pub fn record(
        &self,
        caller: &str,
        action: &str,
        studies: &[String],
        status: u16,
    ) -> Result<()> {
        let at = now();
        let none = [None];
        let studies: Vec<Option<&str>> = if studies.is_empty() {
            none.to_vec()
        } else {
            studies.iter().map(|s| Some(s.as_str())).collect()
        };
        self.0.with(|db| {
            for study in studies {
                insert(db, at, caller, action, study, status)?;
            }
            Ok(())
        })
    }

    /// The records of one study, oldest first.
    pub fn of_study(&self, study_uid: &str) -> Result<Vec<AuditEntry>> {
        let rows = self.0.with(|db| {
            db.query(
                "SELECT at, caller, action, study_uid, status FROM audit
                 WHERE study_uid = ?1 ORDER BY at",
                args![study_uid],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.get(0)?,
                    caller: r.get(1)?,
                    action: r.get(2)?,
                    study_uid: r.get(3)?,
                    status: r.get(4)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::on_both_engines;

    on_both_engines! { store =>
    #[test]
    fn a_request_is_recorded_once_per_study_it_touched() {
        let (_dir, store) = store();
        let audit = store.audit();
        let studies = ["1.2".to_owned(), "1.3".to_owned()];
        audit.record("reader", "GET /x", &studies, 200).unwrap();
        audit.record("reader", "GET /healthz", &[], 200).unwrap();
        let entries = audit.of_study("1.2").unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].caller.as_str(), entries[0].status),
            ("reader", 200)
        );
        assert_eq!(audit.of_study("1.3").unwrap().len(), 1);
    }
    }
}
