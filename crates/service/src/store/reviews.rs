//! The `reviews` and `review_signatures` tables: each reader's decision on a finding of a
//! job's report (with where the finding was and how large, so that a re-analysis can
//! carry the decision to the same nodule, and the score and model for researchers), and
//! each signing of a study's review. Decisions are kept for every job a reader saw; which
//! of them hold for the current report is the service's business (`crate::review`).
//!
//! Plain SQL that SQLite and PostgreSQL both run: no `INSERT OR ...`, no rowid, upserts
//! with `ON CONFLICT ... DO UPDATE`; the tables are migration 3.

use super::sql::Value;
use super::{args, audit, pushes, results, Db, Result, ResultRow, Row, Store};
use crate::push::Target;
use pulmo_core::report::review::Verdict;

/// The tables (migration 3), in SQLite's words.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reviews (
    job_id INTEGER NOT NULL,
    finding_id INTEGER NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    verdict TEXT NOT NULL,
    corrected_type TEXT,
    comment TEXT,
    reader TEXT NOT NULL,
    decided_at REAL NOT NULL,
    center_x REAL NOT NULL,
    center_y REAL NOT NULL,
    center_z REAL NOT NULL,
    diameter_mm REAL NOT NULL,
    volume_mm3 REAL NOT NULL,
    score REAL NOT NULL,
    finding_type TEXT NOT NULL,
    model_id TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    PRIMARY KEY (job_id, finding_id)
);
CREATE INDEX IF NOT EXISTS reviews_study ON reviews(study_uid);
CREATE TABLE IF NOT EXISTS review_signatures (
    study_uid TEXT NOT NULL,
    jobs TEXT NOT NULL,
    reader TEXT NOT NULL,
    signed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS review_signatures_study ON review_signatures(study_uid, signed_at);
";

/// One reader's decision on one finding of one job's report.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub job_id: i64,
    pub finding_id: u32,
    pub study_uid: String,
    pub series_uid: String,
    pub verdict: Verdict,
    /// The reader's type (`solid`, `part-solid`, `ground-glass`) when it corrects the model's.
    pub corrected_type: Option<String>,
    pub comment: Option<String>,
    pub reader: String,
    /// Seconds since the Unix epoch.
    pub at: f64,
    /// The finding as the model reported it.
    pub center_patient_mm: [f64; 3],
    pub diameter_mm: f64,
    pub volume_mm3: f64,
    pub score: f64,
    pub finding_type: String,
    pub model_id: String,
    pub model_sha256: String,
}

/// One signing of a study's review.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// The current jobs of the study when it was signed, ascending: a later analysis makes
    /// the signature stale.
    pub jobs: Vec<i64>,
    pub reader: String,
    /// Seconds since the Unix epoch.
    pub signed_at: f64,
}

/// What signing changes in the results of one job: the unverified SR and SEG leave the
/// catalog, the verified ones take their place and are pushed again.
#[derive(Debug, Clone)]
pub struct Revision {
    pub job_id: i64,
    /// SOP Instance UIDs of the objects replaced.
    pub replaced: Vec<String>,
    pub rows: Vec<ResultRow>,
}

/// Decisions and signatures: [`Store::reviews`].
pub struct Reviews<'a>(pub(super) &'a Store);

impl Reviews<'_> {
    /// Records (or changes) a decision, audited with it.
    pub fn decide(&self, d: &Decision) -> Result<()> {
        self.0.with(|db| decide(db, d))
    }

    /// Every decision on the study's findings, of every job, newest first.
    pub fn of_study(&self, study_uid: &str) -> Result<Vec<Decision>> {
        self.select(
            "WHERE study_uid = ?1 ORDER BY decided_at DESC",
            args![study_uid],
        )
    }

    /// Every decision, oldest first (the researchers' export).
    pub fn all(&self) -> Result<Vec<Decision>> {
        self.select("ORDER BY decided_at, job_id, finding_id", &[])
    }

    fn select(&self, tail: &str, args: &[Value]) -> Result<Vec<Decision>> {
        let sql = format!(
            "SELECT job_id, finding_id, study_uid, series_uid, verdict, corrected_type, comment,
                reader, decided_at, center_x, center_y, center_z, diameter_mm, volume_mm3, score,
                finding_type, model_id, model_sha256 FROM reviews {tail}"
        );
        self.0
            .with(|db| db.query(&sql, args)?.iter().map(decision_row).collect())
    }

    /// The latest signature of a study.
    pub fn signature(&self, study_uid: &str) -> Result<Option<Signature>> {
        let row = self.0.with(|db| {
            db.query_opt(
                "SELECT jobs, reader, signed_at FROM review_signatures WHERE study_uid = ?1
                 ORDER BY signed_at DESC LIMIT 1",
                args![study_uid],
            )
        })?;
        row.map(|r| {
            let jobs: String = r.get(0)?;
            Ok(Signature {
                jobs: jobs.split(',').filter_map(|j| j.parse().ok()).collect(),
                reader: r.get(1)?,
                signed_at: r.get(2)?,
            })
        })
        .transpose()
    }

    /// Signs a study's review in one transaction: files each job's verified results in
    /// place of the unverified ones, queues them to `targets` again (a fresh push, with
    /// the usual retries), and records the signature and its audit entry.
    pub fn sign(
        &self,
        study_uid: &str,
        signature: &Signature,
        revisions: &[Revision],
        targets: &[Target],
    ) -> Result<()> {
        self.0.with(|db| {
            for revision in revisions {
                for uid in &revision.replaced {
                    results::remove(db, uid)?;
                }
                results::insert(db, &revision.rows)?;
                pushes::requeue(db, revision.job_id, targets)?;
            }
            let jobs: Vec<String> = signature.jobs.iter().map(i64::to_string).collect();
            db.execute(
                "INSERT INTO review_signatures (study_uid, jobs, reader, signed_at)
                 VALUES (?1, ?2, ?3, ?4)",
                args![
                    study_uid,
                    jobs.join(","),
                    signature.reader,
                    signature.signed_at
                ],
            )?;
            let what = format!("review signed (jobs {})", jobs.join(", "));
            audit::insert(
                db,
                signature.signed_at,
                &signature.reader,
                &what,
                Some(study_uid),
                200,
            )
        })
    }
}

/// Records (or changes) a decision and its audit entry, inside a transaction.
fn decide(db: &mut Db<'_>, d: &Decision) -> Result<()> {
    db.execute(
        "INSERT INTO reviews (job_id, finding_id, study_uid, series_uid, verdict,
            corrected_type, comment, reader, decided_at, center_x, center_y, center_z,
            diameter_mm, volume_mm3, score, finding_type, model_id, model_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
         ON CONFLICT (job_id, finding_id) DO UPDATE SET verdict = excluded.verdict,
            corrected_type = excluded.corrected_type, comment = excluded.comment,
            reader = excluded.reader, decided_at = excluded.decided_at",
        args![
            d.job_id,
            d.finding_id,
            d.study_uid,
            d.series_uid,
            d.verdict.as_str(),
            d.corrected_type,
            d.comment,
            d.reader,
            d.at,
            d.center_patient_mm[0],
            d.center_patient_mm[1],
            d.center_patient_mm[2],
            d.diameter_mm,
            d.volume_mm3,
            d.score,
            d.finding_type,
            d.model_id,
            d.model_sha256,
        ],
    )?;
    let what = format!(
        "review finding {} of series {} (job {}): {}{}",
        d.finding_id,
        d.series_uid,
        d.job_id,
        d.verdict.as_str(),
        d.corrected_type
            .as_deref()
            .map_or(String::new(), |t| format!(", type {t}"))
    );
    audit::insert(db, d.at, &d.reader, &what, Some(&d.study_uid), 200)?;
    Ok(())
}

fn decision_row(r: &Row) -> Result<Decision> {
    let verdict: String = r.get(4)?;
    Ok(Decision {
        job_id: r.get(0)?,
        finding_id: r.get(1)?,
        study_uid: r.get(2)?,
        series_uid: r.get(3)?,
        // Only `decide` writes the column, from a `Verdict`.
        verdict: Verdict::parse(&verdict).unwrap_or(Verdict::Rejected),
        corrected_type: r.get(5)?,
        comment: r.get(6)?,
        reader: r.get(7)?,
        at: r.get(8)?,
        center_patient_mm: [r.get(9)?, r.get(10)?, r.get(11)?],
        diameter_mm: r.get(12)?,
        volume_mm3: r.get(13)?,
        score: r.get(14)?,
        finding_type: r.get(15)?,
        model_id: r.get(16)?,
        model_sha256: r.get(17)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{on_both_engines, store};
    use super::*;

    fn decision(job_id: i64, finding_id: u32, verdict: Verdict) -> Decision {
        Decision {
            job_id,
            finding_id,
            study_uid: "1.2".into(),
            series_uid: "1.2.3".into(),
            verdict,
            corrected_type: None,
            comment: Some("vessel".into()),
            reader: "dr-a".into(),
            at: crate::now(),
            center_patient_mm: [1.0, 2.0, 3.0],
            diameter_mm: 6.5,
            volume_mm3: 120.0,
            score: 0.8,
            finding_type: "solid".into(),
            model_id: "m".into(),
            model_sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn a_changed_decision_replaces_the_first_and_both_are_audited() {
        let (dir, store) = store();
        store
            .reviews()
            .decide(&decision(7, 1, Verdict::Accepted))
            .unwrap();
        let mut again = decision(7, 1, Verdict::Rejected);
        again.corrected_type = Some("ground-glass".into());
        store.reviews().decide(&again).unwrap();
        store
            .reviews()
            .decide(&decision(7, 2, Verdict::Accepted))
            .unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("index.sqlite")).unwrap();
        let found = store.reviews().of_study("1.2").unwrap();
        assert_eq!(found.len(), 2, "one row per finding, kept over a restart");
        let first = found.iter().find(|d| d.finding_id == 1).unwrap();
        assert_eq!(first.verdict, Verdict::Rejected);
        assert_eq!(first.corrected_type.as_deref(), Some("ground-glass"));
        let audit = store.audit().of_study("1.2").unwrap();
        assert_eq!(audit.len(), 3);
        assert!(
            audit[1].action.contains("rejected, type ground-glass"),
            "{audit:?}"
        );
        assert_eq!(audit[1].caller, "dr-a");
    }

    on_both_engines! { store =>
    #[test]
    fn the_latest_signature_counts() {
        let (_dir, store) = store();
        assert_eq!(store.reviews().signature("1.2").unwrap(), None);
        for (n, jobs) in [vec![3], vec![3, 5]].into_iter().enumerate() {
            let signature = Signature {
                jobs,
                reader: "dr-a".into(),
                signed_at: 100.0 + n as f64,
            };
            store.reviews().sign("1.2", &signature, &[], &[]).unwrap();
        }
        let latest = store.reviews().signature("1.2").unwrap().unwrap();
        assert_eq!(latest.jobs, [3, 5]);
        let audit = store.audit().of_study("1.2").unwrap();
        assert_eq!(audit.last().unwrap().action, "review signed (jobs 3, 5)");
    }
    }
}
