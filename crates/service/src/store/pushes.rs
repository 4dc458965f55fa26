//! The `pushes` table: the durable queue of pushes, one per finished job and configured
//! destination. What a push is and the retry policy live in [`crate::push`]; this file
//! holds only their rows.

use rusqlite::{params, OptionalExtension, Transaction};

use super::{Job, Result, Store};
use crate::now;
use crate::push::{Failure, Push, PushConfig, PushCounts, PushState, Target};

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

/// The durable queue of pushes: [`Store::pushes`].
pub struct Pushes<'a>(pub(super) &'a Store);

impl Pushes<'_> {
    /// Pushes left `sending` by a process that stopped are due again; returns how many.
    pub fn requeue_sending(&self) -> Result<usize> {
        Ok(self.0.db().execute(
            "UPDATE pushes SET state = 'pending', next_attempt_at = ?1 WHERE state = 'sending'",
            [now()],
        )?)
    }

    /// Takes the push that is due first, counts an attempt and marks it `sending`.
    pub fn claim(&self) -> Result<Option<Push>> {
        let db = self.0.db();
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
            Some(id) => self.get(id),
            None => Ok(None),
        }
    }

    /// When the next pending push is due, if any is.
    pub fn next_due(&self) -> Result<Option<f64>> {
        Ok(self.0.db().query_row(
            "SELECT min(next_attempt_at) FROM pushes WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Records a successful attempt. A push made due again while it was being sent (a
    /// signed review's verified results) stays due: what was sent is not what is filed now.
    pub fn done(&self, id: i64) -> Result<()> {
        self.0.db().execute(
            "UPDATE pushes SET state = 'done', last_error = NULL, finished_at = ?2
             WHERE id = ?1 AND state = 'sending'",
            params![id, now()],
        )?;
        Ok(())
    }

    /// Records a failed attempt: `pending` again after the backoff, `dead` when attempts
    /// are spent or the failure is permanent, `cancelled` when the job was superseded
    /// meanwhile. Returns the new state.
    pub fn failed(&self, push: &Push, failure: &Failure, config: &PushConfig) -> Result<PushState> {
        let wait = config
            .delay(push.attempts)
            .max(failure.retry_after.unwrap_or_default())
            .min(config.backoff_cap);
        let spent = failure.permanent || push.attempts >= config.max_attempts;
        let t = now();
        let state: String = self.0.db().query_row(
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

    /// One push.
    pub fn get(&self, id: i64) -> Result<Option<Push>> {
        let db = self.0.db();
        let mut stmt = db.prepare_cached(&format!("{PUSH_COLUMNS} WHERE id = ?1"))?;
        Ok(stmt.query_row([id], push_row).optional()?)
    }

    /// The pushes of one job.
    pub fn of_job(&self, job_id: i64) -> Result<Vec<Push>> {
        let db = self.0.db();
        let mut stmt =
            db.prepare_cached(&format!("{PUSH_COLUMNS} WHERE job_id = ?1 ORDER BY id"))?;
        let rows = stmt.query_map([job_id], push_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Pushes in `state` (all when `None`), newest first, at most `limit`.
    pub fn list(&self, state: Option<PushState>, limit: u32) -> Result<Vec<Push>> {
        let db = self.0.db();
        let mut stmt = db.prepare_cached(&format!(
            "{PUSH_COLUMNS} WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![state.map(PushState::as_str), limit], push_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How many pushes are in each state, and how many retries were made.
    pub fn counts(&self) -> Result<PushCounts> {
        let db = self.0.db();
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

/// Inside `Jobs::complete`'s transaction: cancels the unsent pushes of the series'
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

/// Inside a transaction: makes the push of `job_id` to each of `targets` due again now,
/// as a fresh push (attempts counted from zero), for results that changed after the job
/// was filed (a signed review's verified SR and SEG).
pub(super) fn requeue(
    tx: &Transaction<'_>,
    job_id: i64,
    targets: &[Target],
) -> rusqlite::Result<()> {
    for target in targets {
        tx.execute(
            "INSERT INTO pushes (job_id, target, state, next_attempt_at, created_at)
             VALUES (?1, ?2, 'pending', ?3, ?3)
             ON CONFLICT (job_id, target) DO UPDATE SET state = 'pending', attempts = 0,
                last_error = NULL, next_attempt_at = excluded.next_attempt_at, finished_at = NULL",
            params![job_id, target.as_str(), now()],
        )?;
    }
    Ok(())
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

/// SQLite counts are signed; a count is never negative.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::super::tests::{instance, store};
    use super::*;
    use crate::Lane;

    /// Finishes one more job of series 1.2.3 (with one more instance), pushing to `targets`.
    fn finish(store: &Store, sop: &str, targets: &[Target]) -> Job {
        store
            .instances()
            .put(&instance(sop, "1.2.3"), Lane::Routine)
            .unwrap();
        store.jobs().queue_quiet(now() + 1.0).unwrap();
        let job = store.jobs().claim().unwrap().unwrap();
        store
            .jobs()
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
    fn a_push_made_due_again_while_sending_is_sent_again() {
        let (_dir, store) = store();
        let job = finish(&store, "1.1", &[Target::Dimse]);
        let sending = store.pushes().claim().unwrap().unwrap();
        {
            let mut db = store.db();
            let tx = db.transaction().unwrap();
            requeue(&tx, job.id, &[Target::Dimse]).unwrap();
            tx.commit().unwrap();
        }
        store.pushes().done(sending.id).unwrap();
        let again = store.pushes().claim().unwrap().expect("due again");
        assert_eq!((again.id, again.attempts), (sending.id, 1));
        store.pushes().done(again.id).unwrap();
        let push = store.pushes().get(again.id).unwrap().unwrap();
        assert_eq!(push.state, PushState::Done);
    }

    #[test]
    fn a_newer_job_cancels_the_older_jobs_unsent_pushes() {
        let (_dir, store) = store();
        let both = [Target::Stow, Target::Webhook];
        let first = finish(&store, "1.1", &both);
        let second = finish(&store, "1.2", &both);
        let old = store.jobs().get(first.id).unwrap().unwrap();
        assert_eq!(old.push.unwrap().state, PushState::Cancelled);
        assert_eq!(old.webhook.unwrap().state, PushState::Cancelled);
        let new = store.jobs().get(second.id).unwrap().unwrap().push.unwrap();
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
        let first = store.pushes().claim().unwrap().unwrap();
        let state = store
            .pushes()
            .failed(&first, &failure(false), &config)
            .unwrap();
        assert_eq!(state, PushState::Pending);
        let again = store.pushes().claim().unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (first.id, 2));
        let state = store
            .pushes()
            .failed(&again, &failure(false), &config)
            .unwrap();
        assert_eq!(state, PushState::Dead);
        let dead = store.pushes().list(Some(PushState::Dead), 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            dead[0].last_error.as_deref(),
            Some("the destination answered 503")
        );
        let counts = store.pushes().counts().unwrap();
        assert_eq!(counts.retries, 1);
        assert!(counts.by_state.contains(&(PushState::Dead, 1)));
    }

    #[test]
    fn a_permanent_refusal_is_dead_at_once_and_sending_survives_a_restart() {
        let (dir, store) = store();
        finish(&store, "1.1", &[Target::Stow, Target::Webhook]);
        let push = store.pushes().claim().unwrap().unwrap();
        let state = store
            .pushes()
            .failed(&push, &failure(true), &PushConfig::default())
            .unwrap();
        assert_eq!(state, PushState::Dead);
        let other = store.pushes().claim().unwrap().unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("index.sqlite")).unwrap();
        assert_eq!(store.pushes().requeue_sending().unwrap(), 1);
        let again = store.pushes().claim().unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (other.id, 2));
    }
}
