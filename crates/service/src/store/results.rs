//! The `results` table: the current DICOM result objects (SR, SEG, key images) of each
//! study, and the file each lies in. A newer job of a series replaces the older job's rows.

use std::path::PathBuf;

use super::{args, catalog, Attributes, Db, Job, Result, Row, Store};

/// The `results` table (migration 1).
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
        let rows = self.0.with(|db| {
            db.query(
                "SELECT sop_instance_uid, sop_class_uid, modality, study_uid, series_uid,
                    job_id, path
                 FROM results WHERE study_uid = ?1 ORDER BY series_uid, sop_instance_uid",
                args![study_uid],
            )
        })?;
        rows.iter().map(result_row).collect()
    }

    /// The files of a job's result objects (SR, SEG, key images).
    pub fn paths_of_job(&self, job_id: i64) -> Result<Vec<PathBuf>> {
        let rows = self.0.with(|db| {
            db.query(
                "SELECT path FROM results WHERE job_id = ?1 ORDER BY series_uid, sop_instance_uid",
                args![job_id],
            )
        })?;
        rows.iter()
            .map(|r| r.get::<String>(0).map(PathBuf::from))
            .collect()
    }
}

/// Inside `Jobs::complete`'s transaction: removes the result rows of the series' other
/// jobs and returns their files, which the caller deletes once the change is committed.
pub(super) fn remove_older(db: &mut Db<'_>, job: &Job) -> Result<Vec<PathBuf>> {
    let old = db.query(
        "SELECT r.sop_instance_uid, r.path FROM results r JOIN jobs j ON r.job_id = j.id
         WHERE j.series_uid = ?1 AND j.id != ?2",
        args![job.series_instance_uid, job.id],
    )?;
    let mut paths = Vec::with_capacity(old.len());
    for row in old {
        let uid: String = row.get(0)?;
        db.execute(
            "DELETE FROM results WHERE sop_instance_uid = ?1",
            args![uid],
        )?;
        db.execute(
            "DELETE FROM catalog WHERE sop_instance_uid = ?1",
            args![uid],
        )?;
        paths.push(PathBuf::from(row.get::<String>(1)?));
    }
    Ok(paths)
}

/// Inside a transaction: forgets one result object (its row and its catalog entry).
pub(super) fn remove(db: &mut Db<'_>, sop_instance_uid: &str) -> Result<()> {
    db.execute(
        "DELETE FROM results WHERE sop_instance_uid = ?1",
        args![sop_instance_uid],
    )?;
    db.execute(
        "DELETE FROM catalog WHERE sop_instance_uid = ?1",
        args![sop_instance_uid],
    )?;
    Ok(())
}

/// Inside `Jobs::complete`'s transaction: files a job's result objects (and their catalog
/// rows, after `remove_older` forgot the old ones: a result may keep its UID).
pub(super) fn insert(db: &mut Db<'_>, rows: &[ResultRow]) -> Result<()> {
    for r in rows {
        db.execute(
            "INSERT INTO results VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (sop_instance_uid) DO UPDATE SET sop_class_uid = excluded.sop_class_uid,
                modality = excluded.modality, study_uid = excluded.study_uid,
                series_uid = excluded.series_uid, job_id = excluded.job_id, path = excluded.path",
            args![
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
            catalog::insert(db, attributes)?;
        }
    }
    Ok(())
}

fn result_row(r: &Row) -> Result<ResultRow> {
    Ok(ResultRow {
        sop_instance_uid: r.get(0)?,
        sop_class_uid: r.get(1)?,
        modality: r.get(2)?,
        study_uid: r.get(3)?,
        series_uid: r.get(4)?,
        job_id: r.get(5)?,
        path: PathBuf::from(r.get::<String>(6)?),
        attributes: None,
    })
}
