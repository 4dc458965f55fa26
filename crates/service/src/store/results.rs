//! The `results` table: the current DICOM result objects (SR, SEG, key images) of each
//! study, and the file each lies in. A newer job of a series replaces the older job's rows.

use std::path::PathBuf;

use rusqlite::{params, Transaction};

use super::{catalog, Attributes, Job, Result, Store};

/// The `results` table; created with the rest of the index.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS results (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_study ON results(study_uid);
CREATE INDEX IF NOT EXISTS results_job ON results(job_id);
";

/// One stored result object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub modality: String,
    pub study_uid: String,
    pub series_uid: String,
    pub job_id: i64,
    pub path: PathBuf,
    /// What DICOMweb searches match, filed with the row when given (never read back here).
    pub attributes: Option<Attributes>,
}

/// The current result objects: [`Store::results`].
pub struct Results<'a>(pub(super) &'a Store);

impl Results<'_> {
    /// The current result objects of a study.
    pub fn of_study(&self, study_uid: &str) -> Result<Vec<ResultRow>> {
        let db = self.0.db();
        let mut stmt = db.prepare_cached(
            "SELECT sop_instance_uid, sop_class_uid, modality, study_uid, series_uid, job_id, path
             FROM results WHERE study_uid = ?1 ORDER BY series_uid, sop_instance_uid",
        )?;
        let rows = stmt.query_map([study_uid], result_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The files of a job's result objects (SR, SEG, key images).
    pub fn paths_of_job(&self, job_id: i64) -> Result<Vec<PathBuf>> {
        let db = self.0.db();
        let mut stmt = db.prepare_cached(
            "SELECT path FROM results WHERE job_id = ?1 ORDER BY series_uid, sop_instance_uid",
        )?;
        let rows = stmt.query_map([job_id], |r| r.get::<_, String>(0))?;
        Ok(rows
            .map(|p| p.map(Into::into))
            .collect::<rusqlite::Result<_>>()?)
    }
}

/// Inside `Jobs::complete`'s transaction: removes the result rows of the series' other
/// jobs and returns their files, which the caller deletes once the change is committed.
pub(super) fn remove_older(tx: &Transaction<'_>, job: &Job) -> rusqlite::Result<Vec<PathBuf>> {
    let old: Vec<(String, String)> = {
        let mut stmt = tx.prepare(
            "SELECT r.sop_instance_uid, r.path FROM results r JOIN jobs j ON r.job_id = j.id
             WHERE j.series_uid = ?1 AND j.id != ?2",
        )?;
        let rows = stmt.query_map(params![job.series_instance_uid, job.id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (uid, _) in &old {
        tx.execute("DELETE FROM results WHERE sop_instance_uid = ?1", [uid])?;
        tx.execute("DELETE FROM catalog WHERE sop_instance_uid = ?1", [uid])?;
    }
    Ok(old.into_iter().map(|(_, p)| PathBuf::from(p)).collect())
}

/// Inside a transaction: forgets one result object (its row and its catalog entry).
pub(super) fn remove(tx: &Transaction<'_>, sop_instance_uid: &str) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM results WHERE sop_instance_uid = ?1",
        [sop_instance_uid],
    )?;
    tx.execute(
        "DELETE FROM catalog WHERE sop_instance_uid = ?1",
        [sop_instance_uid],
    )?;
    Ok(())
}

/// Inside `Jobs::complete`'s transaction: files a job's result objects (and their catalog
/// rows, after `remove_older` forgot the old ones: a result may keep its UID).
pub(super) fn insert(tx: &Transaction<'_>, rows: &[ResultRow]) -> rusqlite::Result<()> {
    for r in rows {
        tx.execute(
            "INSERT OR REPLACE INTO results VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                r.sop_instance_uid,
                r.sop_class_uid,
                r.modality,
                r.study_uid,
                r.series_uid,
                r.job_id,
                r.path.to_string_lossy()
            ],
        )?;
        if let Some(attributes) = &r.attributes {
            catalog::insert(tx, attributes)?;
        }
    }
    Ok(())
}

fn result_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResultRow> {
    Ok(ResultRow {
        sop_instance_uid: r.get(0)?,
        sop_class_uid: r.get(1)?,
        modality: r.get(2)?,
        study_uid: r.get(3)?,
        series_uid: r.get(4)?,
        job_id: r.get(5)?,
        path: PathBuf::from(r.get::<_, String>(6)?),
        attributes: None,
    })
}
