//! The `pushes` table: the durable queue of pushes, one per finished job and configured
//! destination. What a push is and the retry policy live in [`crate::push`]; this file
//! holds only their rows.
//!
//! A push being sent is leased like a job (see `jobs.rs`), for [`PUSH_LEASE_FACTOR`]
//! times the job lease: one attempt may wait on a slow PACS. A push whose node stopped
//! is due again once its lease runs out, for whichever node claims next. Delivery is at
//! least once: a node that stalls past its lease may send a push another node sends too
//! (the same SOP Instance UIDs, which a PACS stores once).

use super::sql::Value;
use super::{args, Db, Engine, Job, Result, Row, Store};
use crate::now;
use crate::push::{Failure, Push, PushConfig, PushCounts, PushState, Target};

/// The `pushes` table (migration 1).
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

/// Leases on pushes being sent (migration 2).
pub(super) const LEASES: &str = "
ALTER TABLE pushes ADD COLUMN lease_owner TEXT;
ALTER TABLE pushes ADD COLUMN lease_expires REAL;
";

/// How many job lease times a push's lease lasts.
pub const PUSH_LEASE_FACTOR: u32 = 10;

/// The durable queue of pushes: [`Store::pushes`].
pub struct Pushes<'a>(pub(super) &'a Store);

impl Pushes<'_> {
    /// Pushes left `sending` by this node when it stopped are due again at once (with
    /// SQLite, one process, every such push is this node's); returns how many.
    pub fn requeue_sending(&self) -> Result<u64> {
        let node = &self.0.lease().node;
        self.0.with(|db| match db.engine() {
            Engine::Sqlite => lapse(db, "1 = 1", args![now()]),
            Engine::Postgres => lapse(db, "lease_owner = ?2", args![now(), node]),
        })
    }

    /// Takes the push that is due first, counts an attempt, marks it `sending` and leases
    /// it to this node. Pushes whose lease ran out (their node stopped) are due first.
    pub fn claim(&self) -> Result<Option<Push>> {
        let lease = self.0.lease();
        let id = self.0.with(|db| {
            let t = now();
            let lapsed = match db.engine() {
                Engine::Sqlite => "lease_expires < ?1",
                Engine::Postgres => {
                    "lease_expires < ?1 AND id IN (SELECT id FROM pushes WHERE \
                     state = 'sending' AND lease_expires < ?1 FOR UPDATE SKIP LOCKED)"
                }
            };
            lapse(db, lapsed, args![t])?;
            let sql = format!(
                "UPDATE pushes SET state = 'sending', attempts = attempts + 1,
                    lease_owner = ?2, lease_expires = ?3
                 WHERE id = (
                    SELECT id FROM pushes WHERE state = 'pending' AND next_attempt_at <= ?1
                    ORDER BY next_attempt_at, id LIMIT 1{})
                 RETURNING id",
                db.skip_locked()
            );
            let expires = t + (lease.ttl * PUSH_LEASE_FACTOR).as_secs_f64();
            let id = db.query_opt(&sql, args![t, lease.node, expires])?;
            id.map(|r| r.get::<i64>(0)).transpose()
        })?;
        match id {
            Some(id) => self.get(id),
            None => Ok(None),
        }
    }

    /// When the next pending push is due, if any is (or a sending one's lease runs out).
    pub fn next_due(&self) -> Result<Option<f64>> {
        self.0.with(|db| {
            db.query_one(
                "SELECT min(CASE WHEN state = 'pending' THEN next_attempt_at
                    ELSE lease_expires END)
                 FROM pushes WHERE state = 'pending' OR
                    (state = 'sending' AND lease_expires IS NOT NULL)",
                &[],
            )?
            .get(0)
        })
    }

    /// Records a successful attempt. A push made due again while it was being sent (a
    /// signed review's verified results) stays due: what was sent is not what is filed now.
    pub fn done(&self, id: i64) -> Result<()> {
        self.0.with(|db| {
            db.execute(
                "UPDATE pushes SET state = 'done', last_error = NULL, finished_at = ?2,
                    lease_expires = NULL
                 WHERE id = ?1 AND state = 'sending'",
                args![id, now()],
            )
            .map(drop)
        })
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
        let state: String = self.0.with(|db| {
            db.query_one(
                "UPDATE pushes SET last_error = ?2, next_attempt_at = ?3, lease_expires = NULL,
                    state = CASE
                        WHEN (SELECT superseded_by FROM jobs WHERE id = pushes.job_id) IS NOT NULL
                            THEN 'cancelled'
                        WHEN ?4 THEN 'dead'
                        ELSE 'pending' END,
                    finished_at = CASE WHEN ?4 THEN CAST(?5 AS DOUBLE PRECISION) ELSE NULL END
                 WHERE id = ?1 RETURNING state",
                args![push.id, failure.error, t + wait.as_secs_f64(), spent, t],
            )?
            .get(0)
        })?;
        Ok(PushState::parse(&state))
    }

    /// One push.
    pub fn get(&self, id: i64) -> Result<Option<Push>> {
        let row = self
            .0
            .with(|db| db.query_opt(&format!("{PUSH_COLUMNS} WHERE id = ?1"), args![id]))?;
        row.as_ref().map(push_row).transpose()
    }

    /// The pushes of one job.
    pub fn of_job(&self, job_id: i64) -> Result<Vec<Push>> {
        let rows = self.0.with(|db| {
            db.query(
                &format!("{PUSH_COLUMNS} WHERE job_id = ?1 ORDER BY id"),
                args![job_id],
            )
        })?;
        rows.iter().map(push_row).collect()
    }

    /// Pushes in `state` (all when `None`), newest first, at most `limit`.
    pub fn list(&self, state: Option<PushState>, limit: u32) -> Result<Vec<Push>> {
        let rows = self.0.with(|db| {
            db.query(
                &format!(
                    "{PUSH_COLUMNS} WHERE CAST(?1 AS TEXT) IS NULL OR state = ?1
                     ORDER BY id DESC LIMIT ?2"
                ),
                args![state.map(PushState::as_str), limit],
            )
        })?;
        rows.iter().map(push_row).collect()
    }

    /// How many pushes are in each state, and how many retries were made.
    pub fn counts(&self) -> Result<PushCounts> {
        let (found, retries) = self.0.with(|db| {
            let found = db.query("SELECT state, count(*) FROM pushes GROUP BY state", &[])?;
            let retries: i64 = db
                .query_one(
                    "SELECT CAST(coalesce(sum(CASE WHEN attempts > 1 THEN attempts - 1
                        ELSE 0 END), 0) AS BIGINT) FROM pushes",
                    &[],
                )?
                .get(0)?;
            Ok((found, retries))
        })?;
        let found: Vec<(String, i64)> = found
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect::<Result<_>>()?;
        let by_state = PushState::ALL
            .into_iter()
            .map(|s| {
                let n = found.iter().find(|(name, _)| name == s.as_str());
                (s, n.map_or(0, |(_, n)| count(*n)))
            })
            .collect();
        Ok(PushCounts {
            by_state,
            retries: count(retries),
        })
    }
}

/// Makes the `sending` pushes that match `filter` due again (`?1` is the time now, the
/// first of `args`); returns how many.
fn lapse(db: &mut Db<'_>, filter: &str, args: &[Value]) -> Result<u64> {
    db.execute(
        &format!(
            "UPDATE pushes SET state = 'pending', next_attempt_at = ?1, lease_expires = NULL
             WHERE state = 'sending' AND {filter}"
        ),
        args,
    )
}

/// Inside `Jobs::complete`'s transaction: cancels the unsent pushes of the series'
/// older jobs and queues one push per target for `job`, due now.
pub(super) fn queue(db: &mut Db<'_>, job: &Job, targets: &[Target]) -> Result<()> {
    let t = now();
    db.execute(
        "UPDATE pushes SET state = 'cancelled', finished_at = ?3,
            last_error = 'superseded by job ' || ?4
         WHERE state = 'pending' AND job_id IN
            (SELECT id FROM jobs WHERE series_uid = ?1 AND id < ?2)",
        args![job.series_instance_uid, job.id, t, job.id.to_string()],
    )?;
    for target in targets {
        db.execute(
            "INSERT INTO pushes (job_id, target, state, next_attempt_at, created_at)
             VALUES (?1, ?2, 'pending', ?3, ?3) ON CONFLICT DO NOTHING",
            args![job.id, target.as_str(), t],
        )?;
    }
    Ok(())
}

/// Inside a transaction: makes the push of `job_id` to each of `targets` due again now,
/// as a fresh push (attempts counted from zero), for results that changed after the job
/// was filed (a signed review's verified SR and SEG).
pub(super) fn requeue(db: &mut Db<'_>, job_id: i64, targets: &[Target]) -> Result<()> {
    for target in targets {
        // A push being sent keeps its lease (its sender's `done` no longer applies, as the
        // state is no longer `sending`); the next claim after it sends the new results.
        db.execute(
            "INSERT INTO pushes (job_id, target, state, next_attempt_at, created_at)
             VALUES (?1, ?2, 'pending', ?3, ?3)
             ON CONFLICT (job_id, target) DO UPDATE SET state = 'pending', attempts = 0,
                last_error = NULL, next_attempt_at = excluded.next_attempt_at, finished_at = NULL",
            args![job_id, target.as_str(), now()],
        )?;
    }
    Ok(())
}

const PUSH_COLUMNS: &str = "SELECT id, job_id, target, state, attempts, last_error,
    next_attempt_at, created_at, finished_at FROM pushes";

fn push_row(r: &Row) -> Result<Push> {
    let state = PushState::parse(&r.get::<String>(3)?);
    let due: f64 = r.get(6)?;
    Ok(Push {
        id: r.get(0)?,
        job_id: r.get(1)?,
        target: Target::parse(&r.get::<String>(2)?),
        state,
        attempts: r.get(4)?,
        last_error: r.get(5)?,
        next_attempt_at: (state == PushState::Pending).then_some(due),
        created_at: r.get(7)?,
        finished_at: r.get(8)?,
    })
}

/// SQL counts are signed; a count is never negative.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::tests::on_both_engines;
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

    on_both_engines! { store =>
    #[test]
    fn a_push_made_due_again_while_sending_is_sent_again() {
        let (_dir, store) = store();
        let job = finish(&store, "1.1", &[Target::Dimse]);
        let sending = store.pushes().claim().unwrap().unwrap();
        store
            .with(|db| requeue(db, job.id, &[Target::Dimse]))
            .unwrap();
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
    }

    on_both_engines! { store =>
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
