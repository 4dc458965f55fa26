//! The `jobs` table: one analysis of one series, from queued through running to done,
//! skipped or failed, and which newer job superseded it.
//!
//! Queueing reads and clears the news of the `series` table; completing a job files its
//! results and queues its pushes, all in one transaction.

use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{pushes, results, Result, ResultRow, Store};
use crate::push::{Push, Target};
use crate::{now, Lane};

/// The `jobs` table; created with the rest of the index.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    lane INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    instances INTEGER,
    findings INTEGER,
    report_path TEXT,
    superseded_by INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, lane, id);
CREATE INDEX IF NOT EXISTS jobs_series ON jobs(series_uid);
";

/// The state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Being analysed.
    Running,
    /// Analysed; the report and DICOM results are available.
    Done,
    /// Not analysed: the series is not one the selection rules accept (reason says why).
    Skipped,
    /// Failed; the reason says why.
    Failed,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Skipped => "skipped",
            JobState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> JobState {
        match text {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "skipped" => JobState::Skipped,
            _ => JobState::Failed,
        }
    }
}

/// One job, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Job {
    pub id: i64,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub lane: Lane,
    pub state: JobState,
    /// Why the job failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds since the Unix epoch.
    pub created_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    /// How many instances the analysis read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<u32>,
    /// The newer job whose results replaced this one's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<i64>,
    /// Pushing the results to the PACS (STOW-RS), when a destination is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<Push>,
    /// Sending the report to the webhook, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Push>,
    /// Sending the results to the PACS by C-STORE, when a Storage SCP is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimse: Option<Push>,
    #[serde(skip)]
    pub report_path: Option<PathBuf>,
}

/// The job queue and each job's end: [`Store::jobs`].
pub struct Jobs<'a>(pub(super) &'a Store);

impl Jobs<'_> {
    /// Jobs left running by a process that stopped go back to the queue; returns how many.
    pub fn requeue_running(&self) -> Result<usize> {
        Ok(self.0.db().execute(
            "UPDATE jobs SET state = 'queued', started_at = NULL WHERE state = 'running'",
            [],
        )?)
    }

    /// Queues a job for every series with news that has been quiet since `cutoff`.
    pub fn queue_quiet(&self, cutoff: f64) -> Result<Vec<i64>> {
        self.queue_where("pending = 1 AND last_received <= ?1", params![cutoff], None)
    }

    /// Queues a job now for every series of a study (news or not), in `lane` when given.
    pub fn queue_study(&self, study_uid: &str, lane: Option<Lane>) -> Result<Vec<i64>> {
        self.queue_where("study_uid = ?1", params![study_uid], lane)
    }

    fn queue_where(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
        lane: Option<Lane>,
    ) -> Result<Vec<i64>> {
        let mut db = self.0.db();
        let tx = db.transaction()?;
        let due: Vec<(String, String, i64)> = {
            let sql = format!("SELECT series_uid, study_uid, lane FROM series WHERE {filter}");
            let mut stmt = tx.prepare(&sql)?;
            let rows = stmt.query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut ids = Vec::new();
        let t = now();
        for (series, study, series_lane) in due {
            let lane = lane.map_or(series_lane, |l| l as i64);
            tx.execute(
                "UPDATE series SET pending = 0 WHERE series_uid = ?1",
                [&series],
            )?;
            let queued: Option<i64> = tx
                .query_row(
                    "SELECT id FROM jobs WHERE series_uid = ?1 AND state = 'queued'",
                    [&series],
                    |r| r.get(0),
                )
                .optional()?;
            // A queued job reads the series when it starts, so it already covers the news.
            let id = match queued {
                Some(id) => {
                    tx.execute(
                        "UPDATE jobs SET lane = min(lane, ?2) WHERE id = ?1",
                        params![id, lane],
                    )?;
                    id
                }
                None => {
                    tx.execute(
                        "INSERT INTO jobs (study_uid, series_uid, lane, state, created_at)
                         VALUES (?1, ?2, ?3, 'queued', ?4)",
                        params![study, series, lane, t],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            ids.push(id);
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Takes the next queued job (highest lane first, then oldest) whose series is not
    /// already being analysed, and marks it running.
    pub fn claim(&self) -> Result<Option<Job>> {
        let db = self.0.db();
        let id: Option<i64> = db
            .query_row(
                "UPDATE jobs SET state = 'running', started_at = ?1 WHERE id = (
                    SELECT id FROM jobs WHERE state = 'queued' AND series_uid NOT IN
                        (SELECT series_uid FROM jobs WHERE state = 'running')
                    ORDER BY lane, id LIMIT 1)
                 RETURNING id",
                [now()],
                |r| r.get(0),
            )
            .optional()?;
        drop(db);
        match id {
            Some(id) => self.get(id),
            None => Ok(None),
        }
    }

    /// Ends a job that produced no results.
    pub fn finish(
        &self,
        id: i64,
        state: JobState,
        reason: Option<&str>,
        instances: u32,
    ) -> Result<()> {
        self.0.db().execute(
            "UPDATE jobs SET state = ?2, reason = ?3, finished_at = ?4, instances = ?5 WHERE id = ?1",
            params![id, state.as_str(), reason, now(), instances],
        )?;
        Ok(())
    }

    /// Ends a job with its report and result objects, superseding the results of every
    /// earlier job of the same series, and queues a push of them to each of `targets`
    /// (cancelling the older jobs' unsent pushes). Returns the files of the superseded results.
    pub fn complete(
        &self,
        job: &Job,
        report_path: &Path,
        findings: u32,
        instances: u32,
        rows: &[ResultRow],
        targets: &[Target],
    ) -> Result<Vec<PathBuf>> {
        let mut db = self.0.db();
        let tx = db.transaction()?;
        let old = results::remove_older(&tx, job)?;
        tx.execute(
            "UPDATE jobs SET superseded_by = ?2
             WHERE series_uid = ?1 AND id < ?2 AND state = 'done' AND superseded_by IS NULL",
            params![job.series_instance_uid, job.id],
        )?;
        results::insert(&tx, rows)?;
        tx.execute(
            "UPDATE jobs SET state = 'done', finished_at = ?2, report_path = ?3, findings = ?4,
                instances = ?5 WHERE id = ?1",
            params![
                job.id,
                now(),
                report_path.to_string_lossy(),
                findings,
                instances
            ],
        )?;
        pushes::queue(&tx, job, targets)?;
        tx.commit()?;
        Ok(old)
    }

    /// One job.
    pub fn get(&self, id: i64) -> Result<Option<Job>> {
        let db = self.0.db();
        let mut stmt = db.prepare_cached(&format!("{JOB_COLUMNS} WHERE id = ?1"))?;
        let job = stmt.query_row([id], job_row).optional()?;
        drop(stmt);
        drop(db);
        job.map(|job| self.with_pushes(job)).transpose()
    }

    /// Every job of a study, oldest first.
    pub fn of_study(&self, study_uid: &str) -> Result<Vec<Job>> {
        let db = self.0.db();
        let mut stmt =
            db.prepare_cached(&format!("{JOB_COLUMNS} WHERE study_uid = ?1 ORDER BY id"))?;
        let rows = stmt.query_map([study_uid], job_row)?;
        let jobs: Vec<Job> = rows.collect::<rusqlite::Result<_>>()?;
        drop(stmt);
        drop(db);
        jobs.into_iter().map(|job| self.with_pushes(job)).collect()
    }

    /// Fills in where the job's pushes stand.
    fn with_pushes(&self, mut job: Job) -> Result<Job> {
        for push in self.0.pushes().of_job(job.id)? {
            match push.target {
                Target::Stow => job.push = Some(push),
                Target::Webhook => job.webhook = Some(push),
                Target::Dimse => job.dimse = Some(push),
            }
        }
        Ok(job)
    }

    /// How many jobs wait, in all lanes.
    pub fn queued(&self) -> Result<u32> {
        Ok(self.0.db().query_row(
            "SELECT count(*) FROM jobs WHERE state = 'queued'",
            [],
            |r| r.get(0),
        )?)
    }

    /// How many jobs wait in each lane.
    pub fn depth(&self) -> Result<Vec<(Lane, u32)>> {
        let db = self.0.db();
        let mut stmt = db.prepare_cached(
            "SELECT lane, count(*) FROM jobs WHERE state = 'queued' GROUP BY lane ORDER BY lane",
        )?;
        let rows = stmt.query_map([], |r| Ok((Lane::from_rank(r.get(0)?), r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

const JOB_COLUMNS: &str = "SELECT id, study_uid, series_uid, lane, state, reason, created_at,
    started_at, finished_at, instances, findings, superseded_by, report_path FROM jobs";

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        study_instance_uid: r.get(1)?,
        series_instance_uid: r.get(2)?,
        lane: Lane::from_rank(r.get(3)?),
        state: JobState::parse(&r.get::<_, String>(4)?),
        reason: r.get(5)?,
        created_at: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
        instances: r.get(9)?,
        findings: r.get(10)?,
        superseded_by: r.get(11)?,
        report_path: r.get::<_, Option<String>>(12)?.map(PathBuf::from),
        push: None,
        webhook: None,
        dimse: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{instance, store};
    use super::*;

    #[test]
    fn stat_jobs_are_claimed_before_older_routine_ones() {
        let (_dir, store) = store();
        store
            .instances()
            .put(&instance("1.1", "1.2.3"), Lane::Research)
            .unwrap();
        store
            .instances()
            .put(&instance("1.2", "1.2.4"), Lane::Stat)
            .unwrap();
        let jobs = store.jobs();
        jobs.queue_quiet(now() + 1.0).unwrap();
        let first = jobs.claim().unwrap().unwrap();
        assert_eq!(
            (first.series_instance_uid.as_str(), first.lane),
            ("1.2.4", Lane::Stat)
        );
        assert_eq!(jobs.claim().unwrap().unwrap().lane, Lane::Research);
        assert!(jobs.claim().unwrap().is_none());
    }

    #[test]
    fn a_series_is_never_analysed_twice_at_once_and_the_newer_result_supersedes() {
        let (_dir, store) = store();
        let jobs = store.jobs();
        store
            .instances()
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        jobs.queue_quiet(now() + 1.0).unwrap();
        let first = jobs.claim().unwrap().unwrap();
        // More arrives while the first analysis runs: a second job, held back until it ends.
        store
            .instances()
            .put(&instance("1.2", "1.2.3"), Lane::Routine)
            .unwrap();
        jobs.queue_quiet(now() + 1.0).unwrap();
        assert!(jobs.claim().unwrap().is_none());
        let row = |uid: &str, job: i64| ResultRow {
            sop_instance_uid: uid.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.88.33".into(),
            modality: "SR".into(),
            study_uid: "1.2".into(),
            series_uid: "9.9".into(),
            job_id: job,
            path: PathBuf::from(format!("/results/{uid}")),
            attributes: None,
        };
        jobs.complete(
            &first,
            Path::new("/r1.json"),
            0,
            1,
            &[row("5.1", first.id)],
            &[],
        )
        .unwrap();
        let second = jobs.claim().unwrap().unwrap();
        let old = jobs
            .complete(
                &second,
                Path::new("/r2.json"),
                0,
                2,
                &[row("5.2", second.id)],
                &[],
            )
            .unwrap();
        assert_eq!(old, [PathBuf::from("/results/5.1")]);
        let results = store.results().of_study("1.2").unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].job_id, second.id);
        assert_eq!(
            jobs.get(first.id).unwrap().unwrap().superseded_by,
            Some(second.id)
        );
    }

    #[test]
    fn running_jobs_go_back_to_the_queue_after_a_restart() {
        let (dir, store) = store();
        store
            .instances()
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        store.jobs().queue_quiet(now() + 1.0).unwrap();
        let job = store.jobs().claim().unwrap().unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("index.sqlite")).unwrap();
        assert_eq!(store.jobs().requeue_running().unwrap(), 1);
        assert_eq!(store.jobs().claim().unwrap().unwrap().id, job.id);
    }
}
