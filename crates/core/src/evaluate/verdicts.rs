//! Precision of the model's findings against reader verdicts: what `pulmo feedback` exports
//! (CSV or JSON Lines), read back and counted per model, per score threshold and per type.
//!
//! A reader accepts or rejects what the model showed, so verdicts say nothing of the nodules
//! it missed: precision (accepted / decided), not sensitivity. Findings nobody decided are
//! not in the export and not counted.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One decision, as `pulmo feedback` writes it (the columns read here; others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Verdict {
    pub study_instance_uid: String,
    pub finding_id: u32,
    pub score: f64,
    pub model_type: String,
    pub reader_type: String,
    pub verdict: String,
    pub model_id: String,
    pub model_sha256: String,
}

/// What a verdicts file could not give.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Line {
        path: String,
        line: u64,
        message: String,
    },
    #[error("{path}: no decisions (is it `pulmo feedback`'s export?)")]
    Empty { path: String },
}

/// Reads `pulmo feedback`'s export: JSON Lines when named `.jsonl`, CSV otherwise.
pub fn load(path: &Path) -> Result<Vec<Verdict>, Error> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: name.clone(),
        source,
    })?;
    let line_error = |line: u64, message: String| Error::Line {
        path: name.clone(),
        line,
        message,
    };
    let mut verdicts = Vec::new();
    if path.extension().is_some_and(|e| e == "jsonl") {
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let verdict =
                serde_json::from_str(line).map_err(|e| line_error(n as u64 + 1, e.to_string()))?;
            verdicts.push(verdict);
        }
    } else {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        for record in reader.deserialize() {
            let verdict: Verdict = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                line_error(line, e.to_string())
            })?;
            verdicts.push(verdict);
        }
    }
    for (n, v) in verdicts.iter().enumerate() {
        if !matches!(v.verdict.as_str(), "accepted" | "rejected") {
            return Err(line_error(
                n as u64 + 2,
                format!("verdict {:?} is neither accepted nor rejected", v.verdict),
            ));
        }
    }
    if verdicts.is_empty() {
        return Err(Error::Empty { path: name });
    }
    Ok(verdicts)
}

/// Accepted and rejected findings, and the precision they give.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tally {
    pub accepted: usize,
    pub rejected: usize,
    /// accepted / (accepted + rejected); null with no decision.
    pub precision: Option<f64>,
}

impl Tally {
    fn of<'a>(verdicts: impl Iterator<Item = &'a Verdict>) -> Tally {
        let (mut accepted, mut rejected) = (0, 0);
        for v in verdicts {
            if v.verdict == "accepted" {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        let decided = accepted + rejected;
        Tally {
            accepted,
            rejected,
            precision: (decided > 0).then(|| accepted as f64 / decided as f64),
        }
    }
}

/// One model's precision against its readers.
#[derive(Debug, Clone, Serialize)]
pub struct ModelPrecision {
    pub model_id: String,
    pub model_sha256: String,
    pub studies: usize,
    /// Every decided finding.
    pub all: Tally,
    /// Findings scored at or above each threshold asked for (the operating point's calls).
    pub at_or_above: BTreeMap<String, Tally>,
    /// By the type the model gave.
    pub by_model_type: BTreeMap<String, Tally>,
    /// Accepted findings whose type the reader corrected.
    pub type_corrected: usize,
}

/// Precision per model (id and sha256), at each score in `thresholds`.
pub fn precision(verdicts: &[Verdict], thresholds: &[f64]) -> Vec<ModelPrecision> {
    let mut models: BTreeMap<(&str, &str), Vec<&Verdict>> = BTreeMap::new();
    for v in verdicts {
        models
            .entry((v.model_id.as_str(), v.model_sha256.as_str()))
            .or_default()
            .push(v);
    }
    models
        .into_iter()
        .map(|((id, sha), of)| {
            let studies = of
                .iter()
                .map(|v| v.study_instance_uid.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let at_or_above = thresholds
                .iter()
                .map(|&t| {
                    let tally = Tally::of(of.iter().copied().filter(|v| v.score >= t));
                    (format!("{t}"), tally)
                })
                .collect();
            let mut types: BTreeMap<String, Vec<&Verdict>> = BTreeMap::new();
            for v in &of {
                types.entry(v.model_type.clone()).or_default().push(v);
            }
            ModelPrecision {
                model_id: id.to_owned(),
                model_sha256: sha.to_owned(),
                studies,
                all: Tally::of(of.iter().copied()),
                at_or_above,
                by_model_type: types
                    .into_iter()
                    .map(|(t, vs)| (t, Tally::of(vs.into_iter())))
                    .collect(),
                type_corrected: of
                    .iter()
                    .filter(|v| v.verdict == "accepted" && v.reader_type != v.model_type)
                    .count(),
            }
        })
        .collect()
}

/// The summary as a few lines of text.
pub fn to_text(models: &[ModelPrecision]) -> String {
    let line = |label: &str, t: &Tally| {
        let precision = t
            .precision
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.3}"));
        format!(
            "  {label:<24} precision {precision:>5}  ({} accepted, {} rejected)\n",
            t.accepted, t.rejected
        )
    };
    let mut out = String::new();
    for m in models {
        let sha = m.model_sha256.get(..12).unwrap_or(&m.model_sha256);
        let _ = writeln!(
            out,
            "model {} (sha256 {sha}…), {} studies reviewed",
            m.model_id, m.studies
        );
        out.push_str(&line("every decided finding", &m.all));
        for (t, tally) in &m.at_or_above {
            out.push_str(&line(&format!("score >= {t}"), tally));
        }
        for (kind, tally) in &m.by_model_type {
            out.push_str(&line(&format!("called {kind}"), tally));
        }
        let _ = writeln!(
            out,
            "  accepted with the type corrected: {}",
            m.type_corrected
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "study_instance_uid,series_instance_uid,job_id,finding_id,x_mm,y_mm,z_mm,\
diameter_mm,volume_mm3,score,model_type,reader_type,verdict,decided_at,model_id,model_sha256
1.2.3,1.2.3.4,1,1,0,0,0,9,300,0.97,solid,solid,accepted,2026-12-07T10:00:00Z,pulmo-nodule-v1,abc
1.2.3,1.2.3.4,1,2,0,0,0,6,100,0.93,solid,part-solid,accepted,2026-12-07T10:00:01Z,pulmo-nodule-v1,abc
1.2.3,1.2.3.4,1,3,0,0,0,12,800,0.91,solid,solid,rejected,2026-12-07T10:00:02Z,pulmo-nodule-v1,abc
1.2.5,1.2.5.4,2,1,0,0,0,4,30,0.40,ground-glass,ground-glass,rejected,2026-12-07T10:00:03Z,pulmo-nodule-v1,abc
1.2.5,1.2.5.4,2,2,0,0,0,4,30,0.99,solid,solid,accepted,2026-12-07T10:00:04Z,\"other, model\",def
";

    fn write(name: &str, text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), text).unwrap();
        dir
    }

    #[test]
    fn precision_counts_accepted_over_decided_per_model_and_threshold() {
        let dir = write("f.csv", CSV);
        let verdicts = load(&dir.path().join("f.csv")).unwrap();
        let models = precision(&verdicts, &[0.9]);
        assert_eq!(models.len(), 2);
        let ours = models.iter().find(|m| m.model_sha256 == "abc").unwrap();
        assert_eq!(ours.studies, 2);
        assert_eq!((ours.all.accepted, ours.all.rejected), (2, 2));
        assert_eq!(ours.all.precision, Some(0.5));
        let calls = ours.at_or_above["0.9"];
        assert_eq!((calls.accepted, calls.rejected), (2, 1));
        assert_eq!(ours.by_model_type["ground-glass"].precision, Some(0.0));
        assert_eq!(ours.type_corrected, 1);
        let other = models.iter().find(|m| m.model_sha256 == "def").unwrap();
        assert_eq!(other.model_id, "other, model");
        assert!(to_text(&models).contains("score >= 0.9"));
    }

    #[test]
    fn json_lines_read_the_same_and_bad_input_is_named() {
        let csv = write("f.csv", CSV);
        let from_csv = load(&csv.path().join("f.csv")).unwrap();
        let lines: String = from_csv
            .iter()
            .map(|v| {
                format!(
                    "{{\"study_instance_uid\":\"{}\",\"finding_id\":{},\"score\":{},\"model_type\":\"{}\",\
\"reader_type\":\"{}\",\"verdict\":\"{}\",\"model_id\":\"{}\",\"model_sha256\":\"{}\"}}\n",
                    v.study_instance_uid, v.finding_id, v.score, v.model_type, v.reader_type,
                    v.verdict, v.model_id, v.model_sha256
                )
            })
            .collect();
        let jsonl = write("f.jsonl", &lines);
        let from_jsonl = load(&jsonl.path().join("f.jsonl")).unwrap();
        assert_eq!(from_jsonl.len(), from_csv.len());

        let bad = write(
            "bad.csv",
            &CSV.replace(
                "rejected,2026-12-07T10:00:02Z",
                "maybe,2026-12-07T10:00:02Z",
            ),
        );
        let err = load(&bad.path().join("bad.csv")).unwrap_err().to_string();
        assert!(err.contains("bad.csv") && err.contains("maybe"), "{err}");
        let empty = write("empty.csv", CSV.lines().next().unwrap());
        let err = load(&empty.path().join("empty.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no decisions"), "{err}");
        let err = load(&empty.path().join("missing.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.csv"), "{err}");
    }
}
