//! The service's index: instances in the spool, series and their quiet time, jobs and
//! their states, the result objects of each job, the pushes of those results, and the
//! audit log; in SQLite (one process, the default) or PostgreSQL (several nodes).
//!
//! The files are the data; this index says where they are and what happens next. Every
//! write commits durably (SQLite with `synchronous=FULL`, PostgreSQL with its default
//! `synchronous_commit`), so an instance acknowledged after its row is written survives a
//! crash of the process or the machine.
//!
//! [`Store`] owns the connections and migrates the schema ([`migrations`]); each family of
//! tables has its own file and a handle that borrows the store:
//!
//! | handle | file | tables |
//! |---|---|---|
//! | [`Store::instances`] → [`Instances`] | `instances.rs` | `instances`, `series` |
//! | [`Store::catalog`] → [`Catalog`] | `catalog.rs` | `catalog` |
//! | [`Store::jobs`] → [`Jobs`] | `jobs.rs` | `jobs` |
//! | [`Store::results`] → [`Results`] | `results.rs` | `results` |
//! | [`Store::pushes`] → [`Pushes`] | `pushes.rs` | `pushes` |
//! | [`Store::audit`] → [`Audit`] | `audit.rs` | `audit` |
//! | [`Store::reviews`] → [`Reviews`] | `reviews.rs` | `reviews`, `review_signatures` |
//!
//! A change that spans tables is one transaction: [`Jobs::complete`] files the results,
//! supersedes older jobs and queues pushes through helpers of the other files that take
//! the open transaction.
//!
//! # Several nodes
//!
//! With PostgreSQL, jobs and pushes are claimed, not owned: a claim takes a row with
//! `FOR UPDATE SKIP LOCKED` and writes a lease (this node's name, an expiry) that the
//! node renews while it works. A lease that runs out (the node died) is taken over by
//! the next claim anywhere; the old holder's late answer is refused ([`Error::LeaseLost`])
//! because every end of a job names the claim it ends. Unique indexes keep one queued and
//! one running job per series, whatever the nodes race to do.
//!
//! # Writing a table file (the pattern to follow)
//!
//! 1. `pub(super) const SCHEMA: &str` holds the table's DDL in SQLite's words (`INTEGER`,
//!    `REAL`, `TEXT`, `INTEGER PRIMARY KEY AUTOINCREMENT`, `CREATE ... IF NOT EXISTS`);
//!    add it as the next [`migrations::MIGRATIONS`] entry (never edit a released one).
//! 2. A handle `pub struct Things<'a>(pub(super) &'a Store)` and `Store::things()`.
//! 3. Each method is one [`Store::with`] call: the closure gets a [`Db`] (one open
//!    transaction on either engine) and runs SQL written with `?1`-style parameters,
//!    passing values with [`args!`] and reading columns with [`Row::get`].
//! 4. Write portable SQL (see [`sql`]); where the dialects differ, branch on
//!    [`Db::engine`] and say why. Helpers that join another file's transaction take
//!    `&mut Db<'_>`.
//! 5. Test through the store on both engines: wrap the tests in `on_both_engines! { store
//!    => #[test] fn name() { let (_guard, store) = store(); ... } }`, which runs each body
//!    on SQLite (`tests::store`) and on a real PostgreSQL (`tests::postgres`).
//!
//! Porting a table written the older way (`rusqlite` calls on `self.0.db()`): replace
//! `params![..]` with `args![..]`, `query_row(.., |r| ..)` with `query_one`/`query_opt`
//! and `Row::get`, `tx: &Transaction` helpers with `db: &mut Db<'_>`, and move its
//! `SCHEMA` into a new migration instead of `Store::open`.

mod audit;
mod catalog;
mod instances;
mod jobs;
pub mod migrations;
mod pushes;
mod results;
mod reviews;
pub mod sql;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use audit::{Audit, AuditEntry};
pub use catalog::{Attributes, Catalog, Scope, Served, Summary};
pub use instances::{Filed, InstanceRow, Instances};
pub use jobs::{Job, JobState, Jobs};
pub use pushes::Pushes;
pub use results::{ResultRow, Results};
pub use reviews::{Decision, Reviews, Revision, Signature};
pub use sql::{args, Db, Engine, Row};

/// What can go wrong with the index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not open the index {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0} is not a PostgreSQL URL (postgres://user@host:port/database)")]
    Url(String, #[source] postgres::Error),
    #[error("could not reach the PostgreSQL store")]
    Connect(#[source] r2d2::Error),
    #[error("the index failed")]
    Sql(#[from] rusqlite::Error),
    #[error("the PostgreSQL store failed")]
    Postgres(#[from] postgres::Error),
    #[error("column {index} holds {found}, not a {wanted}")]
    Column {
        index: usize,
        found: String,
        wanted: &'static str,
    },
    #[error("a query that always answers a row answered none")]
    NoRow,
    #[error(
        "the store's schema is version {found}, newer than this build's {known}: run a newer pulmo"
    )]
    Newer { found: i64, known: i64 },
    #[error("job {job} is no longer this node's: its lease ran out and another claim took it")]
    LeaseLost { job: i64 },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the index lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file: one process.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://...`): several nodes share it.
    Postgres(String),
}

impl Location {
    /// `postgres://` and `postgresql://` URLs name PostgreSQL; anything else is a file.
    pub fn parse(text: &str) -> Location {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Location::Postgres(text.to_owned())
        } else {
            Location::Sqlite(PathBuf::from(text))
        }
    }
}

/// Who claims here and for how long: leases name `node` and last `ttl` unless renewed.
#[derive(Debug, Clone)]
pub struct Lease {
    pub node: String,
    pub ttl: Duration,
}

impl Default for Lease {
    fn default() -> Self {
        Lease {
            node: "local".into(),
            ttl: Duration::from_secs(30),
        }
    }
}

type PgPool = r2d2::Pool<r2d2_postgres::PostgresConnectionManager<postgres::NoTls>>;

enum Pool {
    /// One connection behind a mutex (SQLite serialises writers anyway).
    Sqlite(Mutex<rusqlite::Connection>),
    Postgres(PgPool),
    /// Dropped (see `Drop for Store`).
    Closed,
}

/// The index.
pub struct Store {
    pool: Pool,
    lease: Lease,
}

impl Store {
    /// Opens (creating when needed) the index at `path` (SQLite), with a local lease.
    pub fn open(path: &Path) -> Result<Store> {
        Store::connect(&Location::Sqlite(path.to_owned()), Lease::default())
    }

    /// Opens the index at `location` and migrates its schema; claims made through it are
    /// leased as `lease` says.
    pub fn connect(location: &Location, lease: Lease) -> Result<Store> {
        let pool = match location {
            Location::Sqlite(path) => Pool::Sqlite(Mutex::new(open_sqlite(path)?)),
            Location::Postgres(url) => Pool::Postgres(open_postgres(url)?),
        };
        let store = Store { pool, lease };
        let applied = store.with(migrations::migrate)?;
        if !applied.is_empty() {
            tracing::info!(versions = ?applied, "migrated the index");
        }
        Ok(store)
    }

    /// Which engine holds the index.
    pub fn engine(&self) -> Engine {
        match self.pool {
            Pool::Sqlite(_) | Pool::Closed => Engine::Sqlite,
            Pool::Postgres(_) => Engine::Postgres,
        }
    }

    /// This node's name and lease time.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Whether the store answers now (a trivial query).
    pub fn ping(&self) -> Result<()> {
        self.with(|db| db.query_one("SELECT 1", &[]).map(drop))
    }

    /// Received instances and their series.
    pub fn instances(&self) -> Instances<'_> {
        Instances(self)
    }

    /// The searchable attributes of served instances.
    pub fn catalog(&self) -> Catalog<'_> {
        Catalog(self)
    }

    /// The job queue and each job's end.
    pub fn jobs(&self) -> Jobs<'_> {
        Jobs(self)
    }

    /// The current result objects.
    pub fn results(&self) -> Results<'_> {
        Results(self)
    }

    /// The durable queue of pushes.
    pub fn pushes(&self) -> Pushes<'_> {
        Pushes(self)
    }

    /// Readers' decisions on findings, and signed reviews.
    pub fn reviews(&self) -> Reviews<'_> {
        Reviews(self)
    }

    /// The audit log.
    pub fn audit(&self) -> Audit<'_> {
        Audit(self)
    }

    /// Runs `call` in one transaction, committed when it returns `Ok` and rolled back
    /// otherwise.
    pub fn with<T>(&self, call: impl FnOnce(&mut Db<'_>) -> Result<T>) -> Result<T> {
        match &self.pool {
            Pool::Sqlite(db) => {
                // A panic while holding the lock cannot leave SQLite half-written: every
                // change is one transaction, rolled back when dropped.
                let mut db = db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let tx = db.transaction()?;
                let out = call(&mut Db::Sqlite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Pool::Postgres(pool) => {
                let mut client = pool.get().map_err(Error::Connect)?;
                let mut db = Db::Postgres(client.transaction()?);
                let out = call(&mut db)?;
                if let Db::Postgres(tx) = db {
                    tx.commit()?;
                }
                Ok(out)
            }
            Pool::Closed => unreachable!("a store is used only while it lives. This is a bug."),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // The synchronous client closes a connection by blocking on its own runtime, which
        // panics on an async worker (where the last `Arc<Service>` may go): close them on
        // a thread of their own.
        if let Pool::Postgres(pool) = std::mem::replace(&mut self.pool, Pool::Closed) {
            let closing = std::thread::Builder::new()
                .name("pulmo-store-close".into())
                .spawn(move || drop(pool));
            if let Ok(closing) = closing {
                let _ = closing.join();
            }
        }
    }
}

fn open_sqlite(path: &Path) -> Result<rusqlite::Connection> {
    let open = || -> rusqlite::Result<rusqlite::Connection> {
        let db = rusqlite::Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(Duration::from_secs(10))?;
        Ok(db)
    };
    open().map_err(|source| Error::Open {
        path: path.to_owned(),
        source,
    })
}

fn open_postgres(url: &str) -> Result<PgPool> {
    let config: postgres::Config = url.parse().map_err(|e| Error::Url(redact(url), e))?;
    let manager = r2d2_postgres::PostgresConnectionManager::new(config, postgres::NoTls);
    // Workers, the pusher, the timers and the HTTP handlers each hold one at a time.
    r2d2::Pool::builder()
        .max_size(16)
        .min_idle(Some(2))
        // A failed connection is the caller's error (`Error::Connect`, `/readyz`), not a log line per try.
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .connection_timeout(Duration::from_secs(10))
        .build(manager)
        .map_err(Error::Connect)
}

/// A URL with its password left out, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Weak};

    use super::*;
    use crate::testing::Postgres;
    use crate::{now, Lane};

    /// An empty index in a temporary directory.
    pub(super) fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("index.sqlite")).unwrap();
        (dir, store)
    }

    /// An empty index in a new database of a real PostgreSQL server, shared by the tests
    /// that run at the same time and stopped after the last of them.
    pub(super) fn postgres() -> (Arc<Postgres>, Store) {
        let (server, url) = postgres_database();
        let store = Store::connect(&Location::Postgres(url), Lease::default()).unwrap();
        (server, store)
    }

    /// A new, empty database on the shared test server, and its URL.
    pub(super) fn postgres_database() -> (Arc<Postgres>, String) {
        static SERVER: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());
        static DATABASES: AtomicUsize = AtomicUsize::new(0);
        let server = {
            let mut shared = SERVER.lock().unwrap_or_else(|p| p.into_inner());
            match shared.upgrade() {
                Some(server) => server,
                None => {
                    let server = Arc::new(Postgres::start().unwrap_or_else(|e| panic!("{e}")));
                    *shared = Arc::downgrade(&server);
                    server
                }
            }
        };
        let name = format!("test{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        let url = server.database(&name).unwrap();
        (server, url)
    }

    /// Each test twice, as `NAME::sqlite` and `NAME::postgres`; `$store` is the name the
    /// bodies call for their empty index.
    macro_rules! on_both_engines {
        ($store:ident => $(#[test] fn $name:ident() $body:block)*) => {$(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[test]
                fn sqlite() {
                    let $store = $crate::store::tests::store;
                    $body
                }

                #[test]
                fn postgres() {
                    let $store = $crate::store::tests::postgres;
                    $body
                }
            }
        )*};
    }
    pub(crate) use on_both_engines;

    /// One CT instance of study 1.2.
    pub(super) fn instance(sop: &str, series: &str) -> InstanceRow {
        InstanceRow {
            sop_instance_uid: sop.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            study_uid: "1.2".into(),
            series_uid: series.into(),
            path: PathBuf::from(format!("/spool/{sop}.dcm")),
            bytes: 10,
            attributes: None,
        }
    }

    /// Opening migrates once; a store newer than this build is refused.
    fn migrations_are_recorded_and_a_newer_schema_is_refused(location: &Location) {
        let versions = |store: &Store| -> Vec<i64> {
            let sql = "SELECT version FROM schema_version ORDER BY version";
            let rows = store.with(|db| db.query(sql, &[])).unwrap();
            rows.iter().map(|r| r.get(0).unwrap()).collect()
        };
        let store = Store::connect(location, Lease::default()).unwrap();
        let all: Vec<i64> = (1..=migrations::latest()).collect();
        assert_eq!(versions(&store), all);
        drop(store);
        let store = Store::connect(location, Lease::default()).unwrap();
        assert_eq!(versions(&store), all, "reopening applies nothing again");
        store
            .with(|db| {
                db.execute(
                    "INSERT INTO schema_version VALUES (?1, 0, 'from the future')",
                    args![migrations::latest() + 1],
                )
            })
            .unwrap();
        drop(store);
        let refused = Store::connect(location, Lease::default()).err().unwrap();
        assert!(matches!(refused, Error::Newer { .. }), "{refused}");
    }

    #[test]
    fn migrations_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::Sqlite(dir.path().join("index.sqlite"));
        migrations_are_recorded_and_a_newer_schema_is_refused(&location);
    }

    #[test]
    fn migrations_on_postgres() {
        let (_server, url) = postgres_database();
        migrations_are_recorded_and_a_newer_schema_is_refused(&Location::Postgres(url));
    }

    #[test]
    fn an_index_made_before_versions_were_recorded_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let old = rusqlite::Connection::open(&path).unwrap();
        for ddl in migrations::MIGRATIONS[0].steps {
            old.execute_batch(ddl).unwrap();
        }
        old.execute_batch(
            "INSERT INTO jobs (study_uid, series_uid, lane, state, created_at, started_at)
             VALUES ('1.2', '1.2.3', 1, 'running', 1.0, 2.0)",
        )
        .unwrap();
        drop(old);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.jobs().requeue_running().unwrap(), 1);
        let job = store.jobs().claim().unwrap().unwrap();
        assert_eq!(
            (job.series_instance_uid.as_str(), job.attempt),
            ("1.2.3", 1)
        );
    }

    #[test]
    fn every_table_is_created_and_reopening_keeps_them() {
        let (dir, store) = store();
        let tables = |store: &Store| -> Vec<String> {
            let sql = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name";
            let rows = store.with(|db| db.query(sql, &[])).unwrap();
            rows.iter().map(|r| r.get(0).unwrap()).collect()
        };
        let expected = [
            "audit",
            "catalog",
            "instances",
            "jobs",
            "pushes",
            "results",
            "review_signatures",
            "reviews",
            "schema_version",
            "series",
            "sqlite_sequence",
        ];
        assert_eq!(tables(&store), expected);
        store
            .instances()
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("index.sqlite")).unwrap();
        assert_eq!(tables(&store), expected);
        assert_eq!(store.jobs().queue_quiet(now() + 1.0).unwrap().len(), 1);
    }
}
