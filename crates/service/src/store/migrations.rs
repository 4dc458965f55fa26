//! The schema's history: one numbered list of migrations, shared by both engines, each
//! applied once and recorded in `schema_version` (version, when, what).
//!
//! DDL is written once in SQLite's words (`INTEGER`, `REAL`, `TEXT`, `INTEGER PRIMARY
//! KEY AUTOINCREMENT`); [`postgres_ddl`] turns it into PostgreSQL's (`BIGINT`, `DOUBLE
//! PRECISION`, `BIGSERIAL PRIMARY KEY`). A migration, once released, never changes: a
//! new column or table is a new migration at the end of [`MIGRATIONS`].
//!
//! Version 1 is the index as it was before versions were recorded, with `IF NOT EXISTS`,
//! so an index made by an older build is taken up as version 1 and migrated from there.
//! Several nodes starting at once against one PostgreSQL take turns: the migrating
//! transaction holds an advisory lock.

use super::sql::{args, Db, Engine};
use super::{audit, catalog, instances, jobs, pushes, results, reviews, Error, Result};

/// One step of the schema's history.
pub(super) struct Migration {
    pub version: i64,
    /// What it does, recorded beside the version.
    pub what: &'static str,
    /// Its DDL, in SQLite's words, run in order.
    pub steps: &'static [&'static str],
}

/// Every migration, oldest first; the last one's version is this build's schema.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "instances, series, catalog, jobs, results, audit, pushes",
        steps: &[
            instances::SCHEMA,
            catalog::SCHEMA,
            jobs::SCHEMA,
            results::SCHEMA,
            audit::SCHEMA,
            pushes::SCHEMA,
        ],
    },
    Migration {
        version: 2,
        what: "leases on jobs and pushes, one queued and one running job per series",
        steps: &[jobs::LEASES, pushes::LEASES],
    },
    Migration {
        version: 3,
        what: "readers' review decisions and signatures",
        steps: &[reviews::SCHEMA],
    },
    Migration {
        version: 4,
        what: "each job's patient (hashed) and study date, for finding a study's prior",
        steps: &[jobs::PATIENTS],
    },
];

/// This build's schema version.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

const VERSIONS: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL,
    what TEXT NOT NULL
);";

/// Brings the schema to [`latest`], inside the caller's transaction; returns the versions
/// applied. A store already at a newer version than this build knows is refused.
pub(super) fn migrate(db: &mut Db<'_>) -> Result<Vec<i64>> {
    if db.engine() == Engine::Postgres {
        // Held until the transaction ends: one node migrates, the others then find it done.
        db.execute("SELECT pg_advisory_xact_lock(4471584017)", &[])?;
    }
    run_ddl(db, VERSIONS)?;
    let current: i64 = db
        .query_one(
            "SELECT CAST(coalesce(max(version), 0) AS BIGINT) FROM schema_version",
            &[],
        )?
        .get(0)?;
    if current > latest() {
        return Err(Error::Newer {
            found: current,
            known: latest(),
        });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        for step in migration.steps {
            run_ddl(db, step)?;
        }
        db.execute(
            "INSERT INTO schema_version (version, applied_at, what) VALUES (?1, ?2, ?3)",
            args![migration.version, crate::now(), migration.what],
        )?;
        applied.push(migration.version);
    }
    Ok(applied)
}

fn run_ddl(db: &mut Db<'_>, ddl: &str) -> Result<()> {
    match db.engine() {
        Engine::Sqlite => db.batch(ddl),
        Engine::Postgres => db.batch(&postgres_ddl(ddl)),
    }
}

/// SQLite's column types as PostgreSQL's: 64-bit integers, double precision reals,
/// and `BIGSERIAL` for SQLite's auto-incremented keys.
pub(super) fn postgres_ddl(ddl: &str) -> String {
    ddl.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
        .split_inclusive(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .map(|word| {
            let (name, rest) = word.split_at(
                word.find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .unwrap_or(word.len()),
            );
            match name {
                "INTEGER" => format!("BIGINT{rest}"),
                "REAL" => format!("DOUBLE PRECISION{rest}"),
                _ => word.to_owned(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_types_become_postgres_types_and_nothing_else_changes() {
        let ddl = "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL,\n\
                   at REAL, real_name TEXT, INTEGERS TEXT);";
        assert_eq!(
            postgres_ddl(ddl),
            "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, n BIGINT NOT NULL,\n\
             at DOUBLE PRECISION, real_name TEXT, INTEGERS TEXT);"
        );
    }

    #[test]
    fn versions_are_numbered_one_by_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.what);
        }
    }
}
