//! The `catalog` table: the attributes DICOMweb searches match and answer with, for every
//! instance pulmo serves (received source instances and its own results), and the files
//! those searches and retrievals lead to.
//!
//! A row lives as long as its instance, but every read joins it with `instances` and
//! `results`: a purged or superseded instance is never found, even before its row goes.
//! These values identify a person; they are matched and served, never logged.

use std::fmt;
use std::path::PathBuf;

use super::{args, Db, Engine, Result, Row, Store};

/// The `catalog` table (migration 1). An index made before it existed gets its rows from
/// [`Catalog::missing`] at start.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS catalog (
    sop_instance_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    patient_birth_date TEXT NOT NULL,
    patient_sex TEXT NOT NULL,
    study_date TEXT NOT NULL,
    study_time TEXT NOT NULL,
    accession_number TEXT NOT NULL,
    study_id TEXT NOT NULL,
    study_description TEXT NOT NULL,
    referring_physician_name TEXT NOT NULL,
    series_number INTEGER,
    series_description TEXT NOT NULL,
    instance_number INTEGER,
    rows INTEGER,
    columns INTEGER,
    frames INTEGER,
    bits_allocated INTEGER
);
CREATE INDEX IF NOT EXISTS catalog_study ON catalog(study_uid);
CREATE INDEX IF NOT EXISTS catalog_series ON catalog(series_uid);
";

/// The columns, in [`Attributes`]' order.
const COLUMNS: &str = "sop_instance_uid, study_uid, series_uid, sop_class_uid, modality, \
    patient_id, patient_name, patient_birth_date, patient_sex, study_date, study_time, \
    accession_number, study_id, study_description, referring_physician_name, series_number, \
    series_description, instance_number, rows, columns, frames, bits_allocated";

/// The catalog rows of instances that are still served (received or current results).
const LIVE: &str = "live AS (
    SELECT c.* FROM catalog c JOIN instances i USING (sop_instance_uid)
    UNION ALL SELECT c.* FROM catalog c JOIN results r USING (sop_instance_uid))";

/// What one instance says of its patient, study, series and itself. Absent values are
/// empty strings or `None`. `Debug` prints UIDs only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_class_uid: String,
    pub modality: String,
    pub patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_id: String,
    pub study_description: String,
    pub referring_physician_name: String,
    pub series_number: Option<i64>,
    pub series_description: String,
    pub instance_number: Option<i64>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub frames: Option<i64>,
    pub bits_allocated: Option<i64>,
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attributes")
            .field("study_uid", &self.study_uid)
            .field("series_uid", &self.series_uid)
            .field("sop_instance_uid", &self.sop_instance_uid)
            .finish_non_exhaustive()
    }
}

/// A study or a series: the attributes of one of its instances (the study's or series'
/// own are the same in all), the modalities of its series, and how much it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub attributes: Attributes,
    pub modalities: Vec<String>,
    pub series: u32,
    pub instances: u32,
}

/// A served instance's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub path: PathBuf,
}

/// Where a search or retrieval looks: a study, a series of it, one instance, or anywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub study: Option<&'a str>,
    pub series: Option<&'a str>,
    pub instance: Option<&'a str>,
}

impl Scope<'_> {
    /// The SQL condition on `study_uid`, `series_uid` and `sop_instance_uid` (`?1`..`?3`).
    /// (Each parameter is cast where first seen: PostgreSQL types it there.)
    const WHERE: &'static str = "(CAST(?1 AS TEXT) IS NULL OR study_uid = ?1) \
         AND (CAST(?2 AS TEXT) IS NULL OR series_uid = ?2) \
         AND (CAST(?3 AS TEXT) IS NULL OR sop_instance_uid = ?3)";

    fn args(&self) -> [super::sql::Value; 3] {
        use super::sql::ToValue;
        [self.study, self.series, self.instance].map(|s| s.to_value())
    }
}

/// The searchable attributes of served instances: [`Store::catalog`].
pub struct Catalog<'a>(pub(super) &'a Store);

impl Catalog<'_> {
    /// Records (or replaces) the attributes of one instance.
    pub fn put(&self, a: &Attributes) -> Result<()> {
        self.0.with(|db| insert(db, a))
    }

    /// Served instances in `scope`, by series and instance number.
    pub fn instances(&self, scope: Scope<'_>) -> Result<Vec<Attributes>> {
        let sql = format!(
            "WITH {LIVE} SELECT {COLUMNS} FROM live WHERE {}
             ORDER BY study_uid, series_number, series_uid, instance_number, sop_instance_uid",
            Scope::WHERE
        );
        let rows = self.0.with(|db| db.query(&sql, &scope.args()))?;
        rows.iter().map(attributes).collect()
    }

    /// Studies (`by_series` false) or series with a served instance in `scope`.
    pub fn summaries(&self, scope: Scope<'_>, by_series: bool) -> Result<Vec<Summary>> {
        let group = if by_series { "series_uid" } else { "study_uid" };
        // Non-empty values win over empty ones; all instances of a study agree otherwise.
        let columns = COLUMNS
            .split(", ")
            .map(|c| format!("max({c})"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = self.0.with(|db| {
            let modalities = match db.engine() {
                Engine::Sqlite => "group_concat(DISTINCT modality)",
                Engine::Postgres => "string_agg(DISTINCT modality, ',')",
            };
            let sql = format!(
                "WITH {LIVE} SELECT {columns}, {modalities},
                    count(DISTINCT series_uid), count(*)
                 FROM live WHERE {} GROUP BY {group}
                 ORDER BY max(study_date) DESC, max(study_uid), max(series_number), max(series_uid)",
                Scope::WHERE
            );
            db.query(&sql, &scope.args())
        })?;
        rows.iter()
            .map(|r| {
                let modalities: Option<String> = r.get(22)?;
                Ok(Summary {
                    attributes: attributes(r)?,
                    modalities: modalities
                        .unwrap_or_default()
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    series: r.get(23)?,
                    instances: r.get(24)?,
                })
            })
            .collect()
    }

    /// The files of served instances in `scope` (the study's is required), by series and
    /// instance number.
    pub fn files(&self, scope: Scope<'_>) -> Result<Vec<Served>> {
        let rows = self.0.with(|db| {
            db.query(
                "SELECT f.study_uid, f.series_uid, f.sop_instance_uid, f.path FROM (
                    SELECT study_uid, series_uid, sop_instance_uid, path FROM instances
                    UNION ALL SELECT study_uid, series_uid, sop_instance_uid, path FROM results) f
                 LEFT JOIN catalog c USING (sop_instance_uid)
                 WHERE (CAST(?1 AS TEXT) IS NULL OR f.study_uid = ?1)
                    AND (CAST(?2 AS TEXT) IS NULL OR f.series_uid = ?2)
                    AND (CAST(?3 AS TEXT) IS NULL OR f.sop_instance_uid = ?3)
                 ORDER BY c.series_number, f.series_uid, c.instance_number, f.sop_instance_uid",
                &scope.args(),
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(Served {
                    study_uid: r.get(0)?,
                    series_uid: r.get(1)?,
                    sop_instance_uid: r.get(2)?,
                    path: PathBuf::from(r.get::<String>(3)?),
                })
            })
            .collect()
    }

    /// Served instances without a catalog row (filed before the catalog existed).
    pub fn missing(&self) -> Result<Vec<PathBuf>> {
        let rows = self.0.with(|db| {
            db.query(
                "SELECT path FROM (SELECT sop_instance_uid, path FROM instances
                    UNION ALL SELECT sop_instance_uid, path FROM results) served
                 WHERE sop_instance_uid NOT IN (SELECT sop_instance_uid FROM catalog)",
                &[],
            )
        })?;
        rows.iter()
            .map(|r| r.get::<String>(0).map(PathBuf::from))
            .collect()
    }
}

/// Records (or replaces) the attributes of one instance within an open transaction
/// (admission files an instance and its attributes as one).
pub(super) fn insert(db: &mut Db<'_>, a: &Attributes) -> Result<()> {
    let updates = COLUMNS
        .split(", ")
        .skip(1)
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    db.execute(
        &format!(
            "INSERT INTO catalog ({COLUMNS}) VALUES
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
              ?18, ?19, ?20, ?21, ?22)
             ON CONFLICT (sop_instance_uid) DO UPDATE SET {updates}"
        ),
        args![
            a.sop_instance_uid,
            a.study_uid,
            a.series_uid,
            a.sop_class_uid,
            a.modality,
            a.patient_id,
            a.patient_name,
            a.patient_birth_date,
            a.patient_sex,
            a.study_date,
            a.study_time,
            a.accession_number,
            a.study_id,
            a.study_description,
            a.referring_physician_name,
            a.series_number,
            a.series_description,
            a.instance_number,
            a.rows,
            a.columns,
            a.frames,
            a.bits_allocated
        ],
    )?;
    Ok(())
}

fn attributes(r: &Row) -> Result<Attributes> {
    Ok(Attributes {
        sop_instance_uid: r.get(0)?,
        study_uid: r.get(1)?,
        series_uid: r.get(2)?,
        sop_class_uid: r.get(3)?,
        modality: r.get(4)?,
        patient_id: r.get(5)?,
        patient_name: r.get(6)?,
        patient_birth_date: r.get(7)?,
        patient_sex: r.get(8)?,
        study_date: r.get(9)?,
        study_time: r.get(10)?,
        accession_number: r.get(11)?,
        study_id: r.get(12)?,
        study_description: r.get(13)?,
        referring_physician_name: r.get(14)?,
        series_number: r.get(15)?,
        series_description: r.get(16)?,
        instance_number: r.get(17)?,
        rows: r.get(18)?,
        columns: r.get(19)?,
        frames: r.get(20)?,
        bits_allocated: r.get(21)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::instance;
    use super::super::tests::on_both_engines;
    use super::*;
    use crate::store::InstanceRow;
    use crate::Lane;

    fn attributes_of(sop: &str, series: &str, modality: &str) -> Attributes {
        Attributes {
            sop_instance_uid: sop.into(),
            study_uid: "1.2".into(),
            series_uid: series.into(),
            modality: modality.into(),
            patient_id: "P1".into(),
            study_date: "20200102".into(),
            ..Attributes::default()
        }
    }

    on_both_engines! { store =>
    #[test]
    fn an_instance_filed_with_its_attributes_is_found() {
        let (_dir, store) = store();
        let row = InstanceRow {
            attributes: Some(attributes_of("1.1", "1.2.3", "CT")),
            ..instance("1.1", "1.2.3")
        };
        store.instances().put(&row, Lane::Routine).unwrap();
        let found = store.catalog().instances(Scope::default()).unwrap();
        assert_eq!(found, [attributes_of("1.1", "1.2.3", "CT")]);
    }
    }

    on_both_engines! { store =>
    #[test]
    fn only_served_instances_are_found() {
        let (_dir, store) = store();
        store
            .catalog()
            .put(&attributes_of("1.1", "1.2.3", "CT"))
            .unwrap();
        store
            .catalog()
            .put(&attributes_of("1.9", "1.2.3", "CT"))
            .unwrap();
        store
            .instances()
            .put(&instance("1.1", "1.2.3"), Lane::Routine)
            .unwrap();
        let all = store.catalog().instances(Scope::default()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].sop_instance_uid, "1.1");
        let studies = store.catalog().summaries(Scope::default(), false).unwrap();
        assert_eq!(studies.len(), 1);
        assert_eq!((studies[0].series, studies[0].instances), (1, 1));
        assert_eq!(studies[0].modalities, ["CT"]);
        assert_eq!(studies[0].attributes.patient_id, "P1");
        let scope = Scope {
            study: Some("1.2"),
            ..Scope::default()
        };
        assert_eq!(store.catalog().files(scope).unwrap().len(), 1);
        assert_eq!(store.catalog().missing().unwrap(), Vec::<PathBuf>::new());
    }
    }
}
