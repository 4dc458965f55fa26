//! The service's index in SQLite: instances in the spool, series and their quiet time,
//! jobs and their states, and the result objects of each job.
//!
//! The files are the data; this index says where they are and what happens next. Every
//! write commits with `synchronous=FULL`, so an instance acknowledged after its row is
//! written survives a crash of the process or the machine.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::push::{Push, Target};
use super::{now, Lane};

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

const SCHEMA: &str = "
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
    #[serde(skip)]
    pub report_path: Option<PathBuf>,
}

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
}

/// A study that has results, for QIDO-RS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultStudy {
    pub study_uid: String,
    pub modalities: Vec<String>,
    pub series: u32,
    pub instances: u32,
}

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
            db.execute_batch(SCHEMA)?;
            db.execute_batch(super::audit::SCHEMA)?;
            db.execute_batch(super::push::SCHEMA)?;
            Ok(db)
        };
        let db = open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Store { db: Mutex::new(db) })
    }

    pub(super) fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: every change
        // is one statement or one transaction.
        self.db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Jobs left running by a process that stopped go back to the queue; returns how many.
    pub fn requeue_running(&self) -> Result<usize> {
        Ok(self.db().execute(
            "UPDATE jobs SET state = 'queued', started_at = NULL WHERE state = 'running'",
            [],
        )?)
    }

    /// Records a stored instance and marks its series as having news. Returns false when
    /// the instance was already known (a re-send), which does not start a new analysis.
    pub fn put_instance(&self, row: &InstanceRow, lane: Lane) -> Result<bool> {
        let mut db = self.db();
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
    pub fn instance_paths(&self, series_uid: &str) -> Result<Vec<PathBuf>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT path FROM instances WHERE series_uid = ?1 ORDER BY sop_instance_uid",
        )?;
        let rows = stmt.query_map([series_uid], |r| r.get::<_, String>(0))?;
        Ok(rows
            .map(|p| p.map(PathBuf::from))
            .collect::<rusqlite::Result<_>>()?)
    }

    /// How many instances of one study are stored.
    pub fn study_instances(&self, study_uid: &str) -> Result<u32> {
        Ok(self.db().query_row(
            "SELECT count(*) FROM instances WHERE study_uid = ?1",
            [study_uid],
            |r| r.get(0),
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
        let mut db = self.db();
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
        let db = self.db();
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
            Some(id) => self.job(id),
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
        self.db().execute(
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
        results: &[ResultRow],
        targets: &[Target],
    ) -> Result<Vec<PathBuf>> {
        let mut db = self.db();
        let tx = db.transaction()?;
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
        }
        tx.execute(
            "UPDATE jobs SET superseded_by = ?2
             WHERE series_uid = ?1 AND id < ?2 AND state = 'done' AND superseded_by IS NULL",
            params![job.series_instance_uid, job.id],
        )?;
        for r in results {
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
        }
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
        super::push::queue(&tx, job, targets)?;
        tx.commit()?;
        Ok(old.into_iter().map(|(_, p)| PathBuf::from(p)).collect())
    }

    /// One job.
    pub fn job(&self, id: i64) -> Result<Option<Job>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(&format!("{JOB_COLUMNS} WHERE id = ?1"))?;
        let job = stmt.query_row([id], job_row).optional()?;
        drop(stmt);
        drop(db);
        job.map(|job| self.with_pushes(job)).transpose()
    }

    /// Every job of a study, oldest first.
    pub fn study_jobs(&self, study_uid: &str) -> Result<Vec<Job>> {
        let db = self.db();
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
        for push in self.job_pushes(job.id)? {
            match push.target {
                Target::Stow => job.push = Some(push),
                Target::Webhook => job.webhook = Some(push),
            }
        }
        Ok(job)
    }

    /// Series of a study with news not yet queued (still arriving or quiet-waiting).
    pub fn receiving_series(&self, study_uid: &str) -> Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT series_uid FROM series WHERE study_uid = ?1 AND pending = 1 ORDER BY series_uid",
        )?;
        let rows = stmt.query_map([study_uid], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How many jobs wait, in all lanes.
    pub fn queued_jobs(&self) -> Result<u32> {
        Ok(self.db().query_row(
            "SELECT count(*) FROM jobs WHERE state = 'queued'",
            [],
            |r| r.get(0),
        )?)
    }

    /// How many jobs wait in each lane.
    pub fn queue_depth(&self) -> Result<Vec<(Lane, u32)>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT lane, count(*) FROM jobs WHERE state = 'queued' GROUP BY lane ORDER BY lane",
        )?;
        let rows = stmt.query_map([], |r| Ok((Lane::from_rank(r.get(0)?), r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The current result objects of a study.
    pub fn results(&self, study_uid: &str) -> Result<Vec<ResultRow>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT sop_instance_uid, sop_class_uid, modality, study_uid, series_uid, job_id, path
             FROM results WHERE study_uid = ?1 ORDER BY series_uid, sop_instance_uid",
        )?;
        let rows = stmt.query_map([study_uid], result_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One current result object.
    pub fn result(&self, sop_instance_uid: &str) -> Result<Option<ResultRow>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT sop_instance_uid, sop_class_uid, modality, study_uid, series_uid, job_id, path
             FROM results WHERE sop_instance_uid = ?1",
        )?;
        Ok(stmt.query_row([sop_instance_uid], result_row).optional()?)
    }

    /// Studies that have results, newest first.
    pub fn result_studies(&self, limit: u32) -> Result<Vec<ResultStudy>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT study_uid, group_concat(DISTINCT modality), count(DISTINCT series_uid), count(*)
             FROM results GROUP BY study_uid ORDER BY max(job_id) DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            let modalities: String = r.get(1)?;
            Ok(ResultStudy {
                study_uid: r.get(0)?,
                modalities: modalities.split(',').map(str::to_owned).collect(),
                series: r.get(2)?,
                instances: r.get(3)?,
            })
        })?;
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
    })
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(sop: &str, series: &str) -> InstanceRow {
        InstanceRow {
            sop_instance_uid: sop.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            study_uid: "1.2".into(),
            series_uid: series.into(),
            path: PathBuf::from(format!("/spool/{sop}.dcm")),
            bytes: 10,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("index.sqlite")).unwrap();
        (dir, store)
    }

    #[test]
    fn a_resent_instance_is_not_news() {
        let (_dir, store) = store();
        assert!(store
            .put_instance(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap());
        assert_eq!(store.queue_quiet(now() + 1.0).unwrap().len(), 1);
        assert!(!store
            .put_instance(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap());
        assert!(store.queue_quiet(now() + 1.0).unwrap().is_empty());
        assert_eq!(store.instance_paths("1.2.3").unwrap().len(), 1);
    }

    #[test]
    fn series_still_arriving_are_not_queued() {
        let (_dir, store) = store();
        store
            .put_instance(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        assert!(store.queue_quiet(now() - 60.0).unwrap().is_empty());
        assert_eq!(store.receiving_series("1.2").unwrap(), ["1.2.3"]);
    }

    #[test]
    fn stat_jobs_are_claimed_before_older_routine_ones() {
        let (_dir, store) = store();
        store
            .put_instance(&instance("1.1", "1.2.3"), Lane::Research)
            .unwrap();
        store
            .put_instance(&instance("1.2", "1.2.4"), Lane::Stat)
            .unwrap();
        store.queue_quiet(now() + 1.0).unwrap();
        let first = store.claim().unwrap().unwrap();
        assert_eq!(
            (first.series_instance_uid.as_str(), first.lane),
            ("1.2.4", Lane::Stat)
        );
        assert_eq!(store.claim().unwrap().unwrap().lane, Lane::Research);
        assert!(store.claim().unwrap().is_none());
    }

    #[test]
    fn a_series_is_never_analysed_twice_at_once_and_the_newer_result_supersedes() {
        let (_dir, store) = store();
        store
            .put_instance(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        store.queue_quiet(now() + 1.0).unwrap();
        let first = store.claim().unwrap().unwrap();
        // More arrives while the first analysis runs: a second job, held back until it ends.
        store
            .put_instance(&instance("1.2", "1.2.3"), Lane::Routine)
            .unwrap();
        store.queue_quiet(now() + 1.0).unwrap();
        assert!(store.claim().unwrap().is_none());
        let row = |uid: &str, job: i64| ResultRow {
            sop_instance_uid: uid.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.88.33".into(),
            modality: "SR".into(),
            study_uid: "1.2".into(),
            series_uid: "9.9".into(),
            job_id: job,
            path: PathBuf::from(format!("/results/{uid}")),
        };
        store
            .complete(
                &first,
                Path::new("/r1.json"),
                0,
                1,
                &[row("5.1", first.id)],
                &[],
            )
            .unwrap();
        let second = store.claim().unwrap().unwrap();
        let old = store
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
        let results = store.results("1.2").unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].job_id, second.id);
        assert_eq!(
            store.job(first.id).unwrap().unwrap().superseded_by,
            Some(second.id)
        );
    }

    #[test]
    fn running_jobs_go_back_to_the_queue_after_a_restart() {
        let (dir, store) = store();
        store
            .put_instance(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        store.queue_quiet(now() + 1.0).unwrap();
        let job = store.claim().unwrap().unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("index.sqlite")).unwrap();
        assert_eq!(store.requeue_running().unwrap(), 1);
        assert_eq!(store.claim().unwrap().unwrap().id, job.id);
    }
}
