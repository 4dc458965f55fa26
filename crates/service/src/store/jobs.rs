//! The `jobs` table: one analysis of one series, from queued through running to done,
//! skipped or failed, and which newer job superseded it.
//!
//! Queueing reads and clears the news of the `series` table; completing a job files its
//! results and queues its pushes, all in one transaction.
//!
//! A claim is leased: `lease_owner` names the node, `lease_expires` when the claim lapses
//! unless [`Jobs::renew`] pushes it on, and `attempt` counts the claims. Every end of a
//! job ([`Jobs::finish`], [`Jobs::complete`]) names the claim it ends and is refused
//! ([`Error::LeaseLost`]) when another claim has taken the job since.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::sql::{is_conflict, Value};
use super::{args, pushes, results, Db, Error, Result, ResultRow, Row, Store};
use crate::push::{Push, Target};
use crate::{now, Lane};

/// The `jobs` table (migration 1).
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

/// Leases, and at most one queued and one running job per series (migration 2): the
/// database itself refuses a second analysis of a series, whichever nodes race.
pub(super) const LEASES: &str = "
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires REAL;
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX jobs_one_running ON jobs(series_uid) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_one_queued ON jobs(series_uid) WHERE state = 'queued';
";

/// Who the patient is and when the study was made, on each job (migration 4), so that a
/// later study of the same patient finds its prior here ([`Jobs::prior`]). The key is
/// [`pulmo_core::compare::patient_key`]'s hash, never the PatientID itself.
pub(super) const PATIENTS: &str = "
ALTER TABLE jobs ADD COLUMN patient_key TEXT;
ALTER TABLE jobs ADD COLUMN study_date TEXT;
ALTER TABLE jobs ADD COLUMN compared_with_date TEXT;
CREATE INDEX jobs_patient ON jobs(patient_key, state);
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
    /// Which claim of the job this is (1 for the first); a job's end names it.
    #[serde(skip)]
    pub attempt: u32,
    /// The node holding (or that last held) the job's lease.
    #[serde(skip)]
    pub node: Option<String>,
}

/// The job queue and each job's end: [`Store::jobs`].
pub struct Jobs<'a>(pub(super) &'a Store);

impl Jobs<'_> {
    /// Jobs left running by this node when it stopped go back to the queue at once; with
    /// SQLite (one process) every running job is this node's. Returns how many.
    pub fn requeue_running(&self) -> Result<u64> {
        let node = &self.0.lease().node;
        self.0.with(|db| match db.engine() {
            super::Engine::Sqlite => lapse(db, "started_at <= ?1", args![now()]),
            super::Engine::Postgres => lapse(
                db,
                "started_at <= ?1 AND lease_owner = ?2",
                args![now(), node],
            ),
        })
    }

    /// Queues a job for every series with news that has been quiet since `cutoff`.
    pub fn queue_quiet(&self, cutoff: f64) -> Result<Vec<i64>> {
        self.queue_where("pending = 1 AND last_received <= ?1", args![cutoff], None)
    }

    /// Queues a job now for every series of a study (news or not), in `lane` when given.
    pub fn queue_study(&self, study_uid: &str, lane: Option<Lane>) -> Result<Vec<i64>> {
        self.queue_where("study_uid = ?1", args![study_uid], lane)
    }

    fn queue_where(&self, filter: &str, args: &[Value], lane: Option<Lane>) -> Result<Vec<i64>> {
        self.0.with(|db| {
            // Locked and skipped by other nodes' scans: each series is queued by one of them.
            let sql = format!(
                "SELECT series_uid, study_uid, lane FROM series WHERE {filter}{}",
                db.skip_locked()
            );
            let due = db.query(&sql, args)?;
            let mut ids = Vec::new();
            for row in due {
                let series: String = row.get(0)?;
                let study: String = row.get(1)?;
                let lane = lane.map_or(row.get(2)?, |l| l as i64);
                ids.push(queue_series(db, &series, &study, lane)?);
            }
            Ok(ids)
        })
    }

    /// Takes the next queued job (highest lane first, then oldest) whose series is not
    /// already being analysed, and leases it to this node. Jobs whose lease ran out (their
    /// node stopped) are first put back in the queue.
    pub fn claim(&self) -> Result<Option<Job>> {
        let lease = self.0.lease();
        let claimed = self.0.with(|db| {
            let t = now();
            let lapsed = reap(db, t)?;
            if lapsed > 0 {
                pulmo_metrics::jobs_taken_over(lapsed);
            }
            let sql = format!(
                "UPDATE jobs SET state = 'running', started_at = ?1, lease_owner = ?2,
                    lease_expires = ?3, attempt = attempt + 1
                 WHERE id = (
                    SELECT id FROM jobs WHERE state = 'queued' AND series_uid NOT IN
                        (SELECT series_uid FROM jobs WHERE state = 'running')
                    ORDER BY lane, id LIMIT 1{})
                 RETURNING id",
                db.skip_locked()
            );
            let expires = t + lease.ttl.as_secs_f64();
            let id = db.query_opt(&sql, args![t, lease.node, expires])?;
            id.map(|r| r.get::<i64>(0)).transpose()
        });
        let id = match claimed {
            Ok(id) => id,
            // Another node's claim of the same series committed first: nothing to take now.
            Err(err) if is_conflict(&err) => None,
            Err(err) => return Err(err),
        };
        match id {
            Some(id) => self.get(id),
            None => Ok(None),
        }
    }

    /// Pushes a claimed job's lease on by the lease time; false when the claim is no
    /// longer this node's (the lease ran out and another claim took the job).
    pub fn renew(&self, job: &Job) -> Result<bool> {
        let lease = self.0.lease();
        let changed = self.0.with(|db| {
            db.execute(
                "UPDATE jobs SET lease_expires = ?3
                 WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?4 AND state = 'running'",
                args![
                    job.id,
                    job.attempt,
                    now() + lease.ttl.as_secs_f64(),
                    lease.node
                ],
            )
        })?;
        Ok(changed == 1)
    }

    /// Notes on a claimed job whose patient it is (`patient_key`, from
    /// [`pulmo_core::compare::patient_key`]), the study's date (`YYYYMMDD`), and the date of
    /// the prior study it is compared with, for [`Jobs::prior`] and [`Jobs::compare_again`].
    pub fn note_patient(
        &self,
        job: &Job,
        patient_key: Option<&str>,
        study_date: Option<&str>,
        compared_with_date: Option<&str>,
    ) -> Result<()> {
        self.0.with(|db| {
            let noted = db.execute(
                "UPDATE jobs SET patient_key = ?2, study_date = ?3, compared_with_date = ?6
                 WHERE id = ?1 AND attempt = ?4 AND lease_owner = ?5 AND state = 'running'",
                args![
                    job.id,
                    patient_key,
                    study_date,
                    job.attempt,
                    self.0.lease().node,
                    compared_with_date
                ],
            )?;
            fenced(noted, job)
        })
    }

    /// After a study of patient `patient_key` made on `study_date` was analysed: queues again
    /// (in `lane`) each analysed series of the patient's later studies whose comparison was
    /// with an older prior than this study, or with none, so that it is compared with its
    /// true prior (a patient's history that arrived newest first). Returns the job ids.
    pub fn compare_again(
        &self,
        patient_key: &str,
        study_date: &str,
        lane: Lane,
    ) -> Result<Vec<i64>> {
        self.0.with(|db| {
            let later = db.query(
                "SELECT DISTINCT series_uid, study_uid FROM jobs
                 WHERE patient_key = ?1 AND study_date > ?2 AND state = 'done'
                   AND superseded_by IS NULL
                   AND (compared_with_date IS NULL OR compared_with_date < ?2)",
                args![patient_key, study_date],
            )?;
            let mut ids = Vec::new();
            for row in later {
                let series: String = row.get(0)?;
                let study: String = row.get(1)?;
                ids.push(queue_series(db, &series, &study, lane as i64)?);
            }
            Ok(ids)
        })
    }

    /// The prior of a study of patient `patient_key` made on `study_date` (`YYYYMMDD`): the
    /// analysed series (done, not superseded) of the most recent earlier study of the same
    /// patient; of that study's series, the one with the most instances (the thinnest
    /// slices). Studies of the same day are not each other's prior: which came first is not
    /// known from the date alone.
    pub fn prior(
        &self,
        patient_key: &str,
        study_uid: &str,
        study_date: &str,
    ) -> Result<Option<Job>> {
        let row = self.0.with(|db| {
            db.query_opt(
                &format!(
                    "{JOB_COLUMNS} WHERE patient_key = ?1 AND study_uid <> ?2 AND state = 'done'
                       AND superseded_by IS NULL AND study_date IS NOT NULL AND study_date < ?3
                     ORDER BY study_date DESC, instances DESC, id DESC LIMIT 1"
                ),
                args![patient_key, study_uid, study_date],
            )
        })?;
        row.map(|r| job_row(&r)).transpose()
    }

    /// Gives a claimed job back to the queue unfinished (the node is draining).
    pub fn release(&self, job: &Job) -> Result<()> {
        self.0.with(|db| {
            db.execute(
                "UPDATE jobs SET state = 'queued', started_at = NULL, lease_owner = NULL,
                    lease_expires = NULL
                 WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?3 AND state = 'running'",
                args![job.id, job.attempt, self.0.lease().node],
            )
            .map(drop)
        })
    }

    /// Ends a job that produced no results.
    pub fn finish(
        &self,
        job: &Job,
        state: JobState,
        reason: Option<&str>,
        instances: u32,
    ) -> Result<()> {
        self.0.with(|db| {
            let ended = db.execute(
                "UPDATE jobs SET state = ?2, reason = ?3, finished_at = ?4, instances = ?5,
                    lease_expires = NULL
                 WHERE id = ?1 AND attempt = ?6 AND lease_owner = ?7",
                args![
                    job.id,
                    state.as_str(),
                    reason,
                    now(),
                    instances,
                    job.attempt,
                    self.0.lease().node
                ],
            )?;
            fenced(ended, job)
        })
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
        self.0.with(|db| {
            // First, and fenced: the job's row stays locked until the commit.
            let ended = db.execute(
                "UPDATE jobs SET state = 'done', finished_at = ?2, report_path = ?3,
                    findings = ?4, instances = ?5, lease_expires = NULL
                 WHERE id = ?1 AND attempt = ?6 AND lease_owner = ?7 AND state = 'running'",
                args![
                    job.id,
                    now(),
                    report_path.to_string_lossy(),
                    findings,
                    instances,
                    job.attempt,
                    self.0.lease().node
                ],
            )?;
            fenced(ended, job)?;
            let old = results::remove_older(db, job)?;
            db.execute(
                "UPDATE jobs SET superseded_by = ?2
                 WHERE series_uid = ?1 AND id < ?2 AND state = 'done' AND superseded_by IS NULL",
                args![job.series_instance_uid, job.id],
            )?;
            results::insert(db, rows)?;
            pushes::queue(db, job, targets)?;
            Ok(old)
        })
    }

    /// One job.
    pub fn get(&self, id: i64) -> Result<Option<Job>> {
        let row = self
            .0
            .with(|db| db.query_opt(&format!("{JOB_COLUMNS} WHERE id = ?1"), args![id]))?;
        row.map(|r| self.with_pushes(job_row(&r)?)).transpose()
    }

    /// Every job of a study, oldest first.
    pub fn of_study(&self, study_uid: &str) -> Result<Vec<Job>> {
        let rows = self.0.with(|db| {
            db.query(
                &format!("{JOB_COLUMNS} WHERE study_uid = ?1 ORDER BY id"),
                args![study_uid],
            )
        })?;
        rows.iter().map(|r| self.with_pushes(job_row(r)?)).collect()
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
        self.0.with(|db| {
            db.query_one("SELECT count(*) FROM jobs WHERE state = 'queued'", &[])?
                .get(0)
        })
    }

    /// How many jobs wait in each lane.
    pub fn depth(&self) -> Result<Vec<(Lane, u32)>> {
        let rows = self.0.with(|db| {
            db.query(
                "SELECT lane, count(*) FROM jobs WHERE state = 'queued'
                 GROUP BY lane ORDER BY lane",
                &[],
            )
        })?;
        rows.iter()
            .map(|r| Ok((Lane::from_rank(r.get(0)?), r.get(1)?)))
            .collect()
    }
}

/// Queues one series' news: a queued job of it already covers them (it reads the series
/// when it starts), otherwise a new job. Returns the job's id.
fn queue_series(db: &mut Db<'_>, series: &str, study: &str, lane: i64) -> Result<i64> {
    db.execute(
        "UPDATE series SET pending = 0 WHERE series_uid = ?1",
        args![series],
    )?;
    let queued = db.query_opt(
        "UPDATE jobs SET lane = CASE WHEN ?2 < lane THEN ?2 ELSE lane END
         WHERE series_uid = ?1 AND state = 'queued' RETURNING id",
        args![series, lane],
    )?;
    if let Some(row) = queued {
        return row.get(0);
    }
    db.query_one(
        "INSERT INTO jobs (study_uid, series_uid, lane, state, created_at)
         VALUES (?1, ?2, ?3, 'queued', ?4) RETURNING id",
        args![study, series, lane, now()],
    )?
    .get(0)
}

/// Puts jobs whose lease ran out by `t` back in the queue (see [`lapse`]).
fn reap(db: &mut Db<'_>, t: f64) -> Result<u64> {
    let lapsed = match db.engine() {
        super::Engine::Sqlite => "lease_expires < ?1",
        // Rows another node is renewing or ending right now are theirs: skipped.
        super::Engine::Postgres => {
            "lease_expires < ?1 AND id IN (SELECT id FROM jobs WHERE state = 'running' \
             AND lease_expires < ?1 FOR UPDATE SKIP LOCKED)"
        }
    };
    lapse(db, lapsed, args![t])
}

/// Puts the running jobs that match `filter` back in the queue; one whose series already
/// has a queued job ends `failed` instead, superseded by it (that job reads the whole
/// series when it starts). `?1` in `filter` is the time now, the first of `args`.
/// Returns how many went back or ended.
fn lapse(db: &mut Db<'_>, filter: &str, args: &[Value]) -> Result<u64> {
    let ended = db.query(
        &format!(
            "UPDATE jobs SET state = 'failed', finished_at = ?1, lease_expires = NULL,
                reason = 'its node stopped during the analysis; a newer job analyses the series',
                superseded_by = (SELECT q.id FROM jobs q
                    WHERE q.series_uid = jobs.series_uid AND q.state = 'queued')
             WHERE state = 'running' AND {filter} AND EXISTS (SELECT 1 FROM jobs q
                WHERE q.series_uid = jobs.series_uid AND q.state = 'queued')
             RETURNING id, lease_owner"
        ),
        args,
    )?;
    let requeued = db.query(
        &format!(
            "UPDATE jobs SET state = 'queued', started_at = NULL, lease_expires = NULL
             WHERE state = 'running' AND {filter} RETURNING id, lease_owner"
        ),
        args,
    )?;
    for row in ended.iter().chain(&requeued) {
        let (job, node): (i64, Option<String>) = (row.get(0)?, row.get(1)?);
        let node = node.as_deref().unwrap_or("?");
        tracing::warn!(job, node, "a job's claim lapsed: queued again");
    }
    Ok((ended.len() + requeued.len()) as u64)
}

/// A job's end changed its row, or the claim it names is no longer the job's.
fn fenced(changed: u64, job: &Job) -> Result<()> {
    match changed {
        0 => Err(Error::LeaseLost { job: job.id }),
        _ => Ok(()),
    }
}

const JOB_COLUMNS: &str = "SELECT id, study_uid, series_uid, lane, state, reason, created_at,
    started_at, finished_at, instances, findings, superseded_by, report_path, attempt,
    lease_owner FROM jobs";

fn job_row(r: &Row) -> Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        study_instance_uid: r.get(1)?,
        series_instance_uid: r.get(2)?,
        lane: Lane::from_rank(r.get(3)?),
        state: JobState::parse(&r.get::<String>(4)?),
        reason: r.get(5)?,
        created_at: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
        instances: r.get(9)?,
        findings: r.get(10)?,
        superseded_by: r.get(11)?,
        report_path: r.get::<Option<String>>(12)?.map(PathBuf::from),
        attempt: r.get(13)?,
        node: r.get(14)?,
        push: None,
        webhook: None,
        dimse: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::on_both_engines;
    use super::super::tests::{instance, store};
    use super::*;

    on_both_engines! { store =>
    #[test]
    fn a_studys_prior_is_the_patients_latest_earlier_study_and_its_thinnest_series() {
        let (_dir, store) = store();
        let jobs = store.jobs();
        // One analysed series: study `study`, made on `date`, of patient `key`.
        let analysed = |key: &str, study: &str, series: &str, date: &str, instances: u32| {
            let mut row = instance(&format!("{series}.1"), series);
            row.study_uid = study.into();
            store.instances().put(&row, Lane::Routine).unwrap();
            jobs.queue_quiet(now() + 1.0).unwrap();
            let job = jobs.claim().unwrap().unwrap();
            jobs.note_patient(&job, Some(key), Some(date), None).unwrap();
            jobs.complete(&job, Path::new("/r.json"), 0, instances, &[], &[])
                .unwrap();
            job.id
        };
        let first = analysed("p", "1.1", "1.1.1", "20230105", 200);
        analysed("p", "1.2", "1.2.1", "20240105", 60);
        let thin = analysed("p", "1.2", "1.2.2", "20240105", 300);
        analysed("p", "1.4", "1.4.1", "20260105", 300);
        analysed("q", "1.5", "1.5.1", "20240601", 300);
        let prior = |study: &str, date: &str| {
            jobs.prior("p", study, date).unwrap().map(|job| job.id)
        };
        assert_eq!(prior("1.3", "20250105"), Some(thin));
        assert_eq!(prior("1.2", "20240105"), Some(first), "not its own study");
        assert_eq!(prior("1.9", "20240105"), Some(first), "not a study of the same day");
        assert_eq!(prior("1.1", "20230105"), None, "the first study has none");
        assert!(jobs.prior("nobody", "1.3", "20250105").unwrap().is_none());
    }
    }

    on_both_engines! { store =>
    #[test]
    fn a_later_study_analysed_before_its_prior_is_queued_again_once() {
        let (_dir, store) = store();
        let jobs = store.jobs();
        let analysed = |study: &str, series: &str, date: &str, compared_with: Option<&str>| {
            let mut row = instance(&format!("{series}.1"), series);
            row.study_uid = study.into();
            store.instances().put(&row, Lane::Routine).unwrap();
            jobs.queue_quiet(now() + 1.0).unwrap();
            let job = jobs.claim().unwrap().unwrap();
            jobs.note_patient(&job, Some("p"), Some(date), compared_with)
                .unwrap();
            jobs.complete(&job, Path::new("/r.json"), 0, 1, &[], &[])
                .unwrap();
            job.id
        };
        // The newest study arrived first, compared with the oldest; the middle one came last.
        analysed("1.1", "1.1.1", "20230105", None);
        analysed("1.3", "1.3.1", "20250105", Some("20230105"));
        analysed("1.4", "1.4.1", "20260105", Some("20250105"));
        analysed("1.2", "1.2.1", "20240105", Some("20230105"));
        let again = jobs.compare_again("p", "20240105", Lane::Routine).unwrap();
        assert_eq!(again.len(), 1, "only the study whose prior it now is");
        let job = jobs.claim().unwrap().unwrap();
        assert_eq!(job.series_instance_uid, "1.3.1");
        jobs.note_patient(&job, Some("p"), Some("20250105"), Some("20240105"))
            .unwrap();
        jobs.complete(&job, Path::new("/r.json"), 0, 1, &[], &[])
            .unwrap();
        assert!(jobs.compare_again("p", "20240105", Lane::Routine).unwrap().is_empty());
        assert!(
            jobs.compare_again("p", "20250105", Lane::Routine).unwrap().is_empty(),
            "1.4 was compared with 1.3 already"
        );
    }
    }

    on_both_engines! { store =>
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
    }

    on_both_engines! { store =>
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

    /// Two nodes on one new PostgreSQL database; `a`'s claims lapse at once.
    fn two_nodes() -> (std::sync::Arc<crate::testing::Postgres>, Store, Store) {
        let (server, url) = super::super::tests::postgres_database();
        let location = super::super::Location::Postgres(url);
        let node = |name: &str, ttl: f64| super::super::Lease {
            node: name.into(),
            ttl: std::time::Duration::from_secs_f64(ttl),
        };
        let a = Store::connect(&location, node("a", 0.0)).unwrap();
        let b = Store::connect(&location, node("b", 30.0)).unwrap();
        (server, a, b)
    }

    #[test]
    fn a_lapsed_lease_is_taken_over_and_the_old_claim_can_no_longer_end_the_job() {
        let (_server, a, b) = two_nodes();
        a.instances()
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        a.jobs().queue_quiet(now() + 1.0).unwrap();
        let first = a.jobs().claim().unwrap().unwrap();
        assert_eq!((first.attempt, first.node.as_deref()), (1, Some("a")));
        // a's lease ran out the moment it was written (lease time 0): b takes the job over.
        let second = b.jobs().claim().unwrap().unwrap();
        assert_eq!(second.id, first.id);
        assert_eq!((second.attempt, second.node.as_deref()), (2, Some("b")));
        assert!(!a.jobs().renew(&first).unwrap());
        let late = a
            .jobs()
            .complete(&first, Path::new("/a.json"), 0, 1, &[], &[]);
        assert!(matches!(late, Err(Error::LeaseLost { .. })), "{late:?}");
        let late = a.jobs().finish(&first, JobState::Failed, Some("late"), 0);
        assert!(matches!(late, Err(Error::LeaseLost { .. })), "{late:?}");
        // b's lease holds: a cannot take it back.
        assert!(a.jobs().claim().unwrap().is_none());
        assert!(b.jobs().renew(&second).unwrap());
        b.jobs()
            .complete(&second, Path::new("/b.json"), 0, 1, &[], &[])
            .unwrap();
        let done = b.jobs().get(first.id).unwrap().unwrap();
        assert_eq!(done.state, JobState::Done);
        assert_eq!(done.report_path, Some(PathBuf::from("/b.json")));
    }

    #[test]
    fn a_series_received_at_two_nodes_is_queued_once_and_read_whole() {
        let (_server, a, b) = two_nodes();
        a.instances()
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        b.instances()
            .put(&instance("1.2", "1.2.3"), Lane::Routine)
            .unwrap();
        assert_eq!(b.jobs().queue_quiet(now() + 1.0).unwrap().len(), 1);
        assert!(a.jobs().queue_quiet(now() + 1.0).unwrap().is_empty());
        let job = b.jobs().claim().unwrap().unwrap();
        assert_eq!(
            a.instances().paths(&job.series_instance_uid).unwrap().len(),
            2
        );
        // More arrives at a while b analyses: one new job, held back until b's ends.
        a.instances()
            .put(&instance("1.3", "1.2.3"), Lane::Routine)
            .unwrap();
        assert_eq!(a.jobs().queue_quiet(now() + 1.0).unwrap().len(), 1);
        assert!(a.jobs().claim().unwrap().is_none());
    }

    #[test]
    fn nodes_claiming_at_once_take_each_job_once() {
        let (server, url) = super::super::tests::postgres_database();
        let location = super::super::Location::Postgres(url);
        let setup = Store::connect(&location, Default::default()).unwrap();
        for i in 0..24 {
            let row = instance(&format!("1.{i}"), &format!("1.2.{i}"));
            setup.instances().put(&row, Lane::Routine).unwrap();
        }
        setup.jobs().queue_quiet(now() + 1.0).unwrap();
        let claimed: Vec<i64> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|n| {
                    let location = &location;
                    scope.spawn(move || {
                        let lease = super::super::Lease {
                            node: format!("n{n}"),
                            ..Default::default()
                        };
                        let store = Store::connect(location, lease).unwrap();
                        let mut mine = Vec::new();
                        while let Some(job) = store.jobs().claim().unwrap() {
                            store
                                .jobs()
                                .complete(&job, Path::new("/r.json"), 0, 1, &[], &[])
                                .unwrap();
                            mine.push(job.id);
                        }
                        mine
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let mut unique = claimed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!((claimed.len(), unique.len()), (24, 24));
        drop(server);
    }
}
