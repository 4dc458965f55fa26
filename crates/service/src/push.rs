//! Pushing results back: where they go (a DICOMweb STOW-RS destination, a webhook), the
//! retry policy, and the durable queue of pushes in the index (`pushes` table).
//!
//! Each finished job gets one push per configured destination, written in the same
//! transaction that files its results. A push is `pending` until the pusher claims it
//! (`sending`), then `done`, or `pending` again with a later `next_attempt_at`, or `dead`
//! once `max_attempts` are spent or the destination refused it for good. A newer job of
//! the same series cancels the older job's pushes that have not been sent yet.
//! This module knows the policy and the table; `pusher` does the sending.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::now;
use super::store::{Job, Result, Store};

/// The `pushes` table; created with the rest of the index.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pushes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at REAL NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    UNIQUE (job_id, target)
);
CREATE INDEX IF NOT EXISTS pushes_due ON pushes(state, next_attempt_at);
";

/// Where a push goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The PACS: SR, SEG and key images in one STOW-RS request.
    Stow,
    /// A URL that receives the JSON report.
    Webhook,
}

impl Target {
    /// The target's name, as the API and logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Stow => "stow",
            Target::Webhook => "webhook",
        }
    }

    fn parse(text: &str) -> Target {
        match text {
            "webhook" => Target::Webhook,
            _ => Target::Stow,
        }
    }
}

/// Where a push stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushState {
    /// Waiting for its (next) attempt.
    Pending,
    /// An attempt is under way.
    Sending,
    /// The destination took it.
    Done,
    /// Given up: attempts spent, or refused for good (`last_error` says why).
    Dead,
    /// A newer job of the same series replaced it before it was sent.
    Cancelled,
}

impl PushState {
    /// Every state, in the order counts list them.
    pub const ALL: [PushState; 5] = [
        PushState::Pending,
        PushState::Sending,
        PushState::Done,
        PushState::Dead,
        PushState::Cancelled,
    ];

    /// The state's name, as the API and metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PushState::Pending => "pending",
            PushState::Sending => "sending",
            PushState::Done => "done",
            PushState::Dead => "dead",
            PushState::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> PushState {
        PushState::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .unwrap_or(PushState::Dead)
    }
}

/// How a request to a destination authenticates.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    /// HTTP basic authentication.
    Basic { user: String, password: String },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    /// Names the scheme, never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// One destination: a URL and how to authenticate to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// For STOW-RS, the DICOMweb base (`/studies` is appended); for a webhook, the URL.
    pub url: String,
    pub auth: Auth,
}

/// Where results go and how hard pulmo tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// The PACS's DICOMweb base URL, for example `http://pacs:8042/dicom-web`.
    pub stow: Option<Destination>,
    /// A URL that receives each job's JSON report.
    pub webhook: Option<Destination>,
    /// Attempts per push before it is dead.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles with each further one.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub backoff_cap: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl Default for PushConfig {
    /// No destinations; 8 attempts, 5 s backoff doubling up to 10 min, 5 min per attempt.
    fn default() -> Self {
        PushConfig {
            stow: None,
            webhook: None,
            max_attempts: 8,
            backoff: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(600),
            timeout: Duration::from_secs(300),
        }
    }
}

impl PushConfig {
    /// The configured destinations' targets.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if self.stow.is_some() {
            targets.push(Target::Stow);
        }
        if self.webhook.is_some() {
            targets.push(Target::Webhook);
        }
        targets
    }

    /// The destination of `target`, when configured.
    pub fn destination(&self, target: Target) -> Option<&Destination> {
        match target {
            Target::Stow => self.stow.as_ref(),
            Target::Webhook => self.webhook.as_ref(),
        }
    }

    /// The wait before attempt `attempts + 1`, after `attempts` failed ones:
    /// `backoff * 2^(attempts - 1)`, at most `backoff_cap`.
    pub fn delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.backoff
            .saturating_mul(1 << doublings)
            .min(self.backoff_cap)
    }
}

/// One push, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Push {
    pub id: i64,
    pub job_id: i64,
    pub target: Target,
    pub state: PushState,
    /// Attempts made so far.
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due (seconds since the Unix epoch), while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<f64>,
    pub created_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
}

/// How pushes stand, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushCounts {
    /// Pushes in each state (every state listed, zeros included).
    pub by_state: Vec<(PushState, u64)>,
    /// Attempts beyond the first, over all pushes.
    pub retries: u64,
}

/// Why an attempt failed, as the pusher reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The error chain, stored as `last_error`.
    pub error: String,
    /// No retry can help (the destination refused the request itself).
    pub permanent: bool,
    /// The destination asked to wait this long (`Retry-After`).
    pub retry_after: Option<Duration>,
}

const PUSH_COLUMNS: &str = "SELECT id, job_id, target, state, attempts, last_error,
    next_attempt_at, created_at, finished_at FROM pushes";

fn push_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Push> {
    let state = PushState::parse(&r.get::<_, String>(3)?);
    let due: f64 = r.get(6)?;
    Ok(Push {
        id: r.get(0)?,
        job_id: r.get(1)?,
        target: Target::parse(&r.get::<_, String>(2)?),
        state,
        attempts: r.get(4)?,
        last_error: r.get(5)?,
        next_attempt_at: (state == PushState::Pending).then_some(due),
        created_at: r.get(7)?,
        finished_at: r.get(8)?,
    })
}

/// Inside `Store::complete`'s transaction: cancels the unsent pushes of the series'
/// older jobs and queues one push per target for `job`, due now.
pub(super) fn queue(tx: &Transaction<'_>, job: &Job, targets: &[Target]) -> rusqlite::Result<()> {
    let t = now();
    tx.execute(
        "UPDATE pushes SET state = 'cancelled', finished_at = ?3,
            last_error = 'superseded by job ' || ?2
         WHERE state = 'pending' AND job_id IN
            (SELECT id FROM jobs WHERE series_uid = ?1 AND id < ?2)",
        params![job.series_instance_uid, job.id, t],
    )?;
    for target in targets {
        tx.execute(
            "INSERT OR IGNORE INTO pushes (job_id, target, state, next_attempt_at, created_at)
             VALUES (?1, ?2, 'pending', ?3, ?3)",
            params![job.id, target.as_str(), t],
        )?;
    }
    Ok(())
}

impl Store {
    /// Pushes left `sending` by a process that stopped are due again; returns how many.
    pub fn requeue_sending(&self) -> Result<usize> {
        Ok(self.db().execute(
            "UPDATE pushes SET state = 'pending', next_attempt_at = ?1 WHERE state = 'sending'",
            [now()],
        )?)
    }

    /// Takes the push that is due first, counts an attempt and marks it `sending`.
    pub fn claim_push(&self) -> Result<Option<Push>> {
        let db = self.db();
        let id: Option<i64> = db
            .query_row(
                "UPDATE pushes SET state = 'sending', attempts = attempts + 1 WHERE id = (
                    SELECT id FROM pushes WHERE state = 'pending' AND next_attempt_at <= ?1
                    ORDER BY next_attempt_at, id LIMIT 1)
                 RETURNING id",
                [now()],
                |r| r.get(0),
            )
            .optional()?;
        drop(db);
        match id {
            Some(id) => self.push(id),
            None => Ok(None),
        }
    }

    /// When the next pending push is due, if any is.
    pub fn next_push_due(&self) -> Result<Option<f64>> {
        Ok(self.db().query_row(
            "SELECT min(next_attempt_at) FROM pushes WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Records a successful attempt.
    pub fn push_done(&self, id: i64) -> Result<()> {
        self.db().execute(
            "UPDATE pushes SET state = 'done', last_error = NULL, finished_at = ?2
             WHERE id = ?1",
            params![id, now()],
        )?;
        Ok(())
    }

    /// Records a failed attempt: `pending` again after the backoff, `dead` when attempts
    /// are spent or the failure is permanent, `cancelled` when the job was superseded
    /// meanwhile. Returns the new state.
    pub fn push_failed(
        &self,
        push: &Push,
        failure: &Failure,
        config: &PushConfig,
    ) -> Result<PushState> {
        let wait = config
            .delay(push.attempts)
            .max(failure.retry_after.unwrap_or_default())
            .min(config.backoff_cap);
        let spent = failure.permanent || push.attempts >= config.max_attempts;
        let t = now();
        let state: String = self.db().query_row(
            "UPDATE pushes SET last_error = ?2, next_attempt_at = ?3,
                state = CASE
                    WHEN (SELECT superseded_by FROM jobs WHERE id = pushes.job_id) IS NOT NULL
                        THEN 'cancelled'
                    WHEN ?4 THEN 'dead'
                    ELSE 'pending' END,
                finished_at = CASE WHEN ?4 THEN ?5 ELSE NULL END
             WHERE id = ?1 RETURNING state",
            params![push.id, failure.error, t + wait.as_secs_f64(), spent, t],
            |r| r.get(0),
        )?;
        Ok(PushState::parse(&state))
    }

    /// The files of a job's result objects (SR, SEG, key images).
    pub fn job_result_paths(&self, job_id: i64) -> Result<Vec<std::path::PathBuf>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT path FROM results WHERE job_id = ?1 ORDER BY series_uid, sop_instance_uid",
        )?;
        let rows = stmt.query_map([job_id], |r| r.get::<_, String>(0))?;
        Ok(rows
            .map(|p| p.map(Into::into))
            .collect::<rusqlite::Result<_>>()?)
    }

    /// One push.
    pub fn push(&self, id: i64) -> Result<Option<Push>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(&format!("{PUSH_COLUMNS} WHERE id = ?1"))?;
        Ok(stmt.query_row([id], push_row).optional()?)
    }

    /// The pushes of one job.
    pub fn job_pushes(&self, job_id: i64) -> Result<Vec<Push>> {
        let db = self.db();
        let mut stmt =
            db.prepare_cached(&format!("{PUSH_COLUMNS} WHERE job_id = ?1 ORDER BY id"))?;
        let rows = stmt.query_map([job_id], push_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Pushes in `state` (all when `None`), newest first, at most `limit`.
    pub fn pushes(&self, state: Option<PushState>, limit: u32) -> Result<Vec<Push>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(&format!(
            "{PUSH_COLUMNS} WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![state.map(PushState::as_str), limit], push_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How many pushes are in each state, and how many retries were made.
    pub fn push_counts(&self) -> Result<PushCounts> {
        let db = self.db();
        let mut stmt = db.prepare_cached("SELECT state, count(*) FROM pushes GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let found: Vec<(String, i64)> = rows.collect::<rusqlite::Result<_>>()?;
        let by_state = PushState::ALL
            .into_iter()
            .map(|s| {
                let n = found.iter().find(|(name, _)| name == s.as_str());
                (s, n.map_or(0, |(_, n)| count(*n)))
            })
            .collect();
        let retries = db.query_row(
            "SELECT coalesce(sum(max(attempts - 1, 0)), 0) FROM pushes",
            [],
            |r| r.get(0),
        )?;
        Ok(PushCounts {
            by_state,
            retries: count(retries),
        })
    }
}

/// SQLite counts are signed; a count is never negative.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InstanceRow;
    use crate::Lane;
    use std::path::Path;

    /// An empty index.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("index.sqlite")).unwrap();
        (dir, store)
    }

    /// Finishes one more job of series 1.2.3 (with one more instance), pushing to `targets`.
    fn finish(store: &Store, sop: &str, targets: &[Target]) -> Job {
        let row = InstanceRow {
            sop_instance_uid: sop.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            study_uid: "1.2".into(),
            series_uid: "1.2.3".into(),
            path: format!("/spool/{sop}.dcm").into(),
            bytes: 10,
        };
        store.put_instance(&row, Lane::Routine).unwrap();
        store.queue_quiet(now() + 1.0).unwrap();
        let job = store.claim().unwrap().unwrap();
        store
            .complete(&job, Path::new("/r.json"), 0, 1, &[], targets)
            .unwrap();
        job
    }

    fn failure(permanent: bool) -> Failure {
        Failure {
            error: "the destination answered 503".into(),
            permanent,
            retry_after: None,
        }
    }

    #[test]
    fn a_newer_job_cancels_the_older_jobs_unsent_pushes() {
        let (_dir, store) = store();
        let both = [Target::Stow, Target::Webhook];
        let first = finish(&store, "1.1", &both);
        let second = finish(&store, "1.2", &both);
        let old = store.job(first.id).unwrap().unwrap();
        assert_eq!(old.push.unwrap().state, PushState::Cancelled);
        assert_eq!(old.webhook.unwrap().state, PushState::Cancelled);
        let new = store.job(second.id).unwrap().unwrap().push.unwrap();
        assert_eq!((new.state, new.attempts), (PushState::Pending, 0));
    }

    #[test]
    fn failures_back_off_then_die_and_are_counted() {
        let (_dir, store) = store();
        finish(&store, "1.1", &[Target::Stow]);
        let config = PushConfig {
            max_attempts: 2,
            backoff: Duration::ZERO,
            ..PushConfig::default()
        };
        let first = store.claim_push().unwrap().unwrap();
        let state = store.push_failed(&first, &failure(false), &config).unwrap();
        assert_eq!(state, PushState::Pending);
        let again = store.claim_push().unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (first.id, 2));
        let state = store.push_failed(&again, &failure(false), &config).unwrap();
        assert_eq!(state, PushState::Dead);
        let dead = store.pushes(Some(PushState::Dead), 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            dead[0].last_error.as_deref(),
            Some("the destination answered 503")
        );
        let counts = store.push_counts().unwrap();
        assert_eq!(counts.retries, 1);
        assert!(counts.by_state.contains(&(PushState::Dead, 1)));
    }

    #[test]
    fn a_permanent_refusal_is_dead_at_once_and_sending_survives_a_restart() {
        let (dir, store) = store();
        finish(&store, "1.1", &[Target::Stow, Target::Webhook]);
        let push = store.claim_push().unwrap().unwrap();
        let state = store
            .push_failed(&push, &failure(true), &PushConfig::default())
            .unwrap();
        assert_eq!(state, PushState::Dead);
        let other = store.claim_push().unwrap().unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("index.sqlite")).unwrap();
        assert_eq!(store.requeue_sending().unwrap(), 1);
        let again = store.claim_push().unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (other.id, 2));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let config = PushConfig {
            backoff: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(10),
            ..PushConfig::default()
        };
        let waits: Vec<u64> = (1..=5).map(|n| config.delay(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 10, 10]);
        assert_eq!(config.delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let basic = Auth::Basic {
            user: "pulmo".into(),
            password: "hunter2".into(),
        };
        assert_eq!(format!("{basic:?}"), "Basic(pulmo, ***)");
        assert!(!format!("{:?}", Auth::Bearer("t0k3n".into())).contains("t0k3n"));
    }
}
