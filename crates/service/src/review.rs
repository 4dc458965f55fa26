//! A reader's review of a study: which decisions hold for the current reports, recording
//! a decision, and signing, which writes a verified SR (and SEG) in place of the
//! unverified ones and pushes them like any result.
//!
//! Decisions are stored per job and finding ([`store::Reviews`]). A finding of the current
//! report takes the decision made on it; failing that, the newest decision made on a
//! finding of an earlier analysis of the same series that [`same_nodule`] matches (a
//! re-analysis after late instances keeps what the reader decided on the nodules it finds
//! again). Everything else is undecided: to be reviewed again.
//!
//! Knows reports, the index and the encoders; nothing of HTTP or of who may call it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use pulmo_core::findings::{Finding, NoduleType};
use pulmo_core::pipeline::error_chain;
use pulmo_core::postprocess::Segment;
use pulmo_core::report::review::{
    rfc3339, same_nodule, verified, FindingReview, Mark, ReviewStatus, ReviewSummary, SavedSegment,
    Verdict,
};
use pulmo_core::report::sr::{Predecessor, Verification};
use pulmo_core::report::{self, seg, sr, Created, DerivedIds, Report};
use pulmo_dicom::{ingest, volume};

use crate::store::{Decision, JobState, ResultRow, Revision, Signature, Store};
use crate::{now, Service};

/// The file beside a job's report that holds its findings' voxels.
pub const SEGMENTS_FILE: &str = "segments.json";
/// The Verifying Organization of verified SRs.
pub const ORGANIZATION: &str = "pulmo review";
/// The longest comment kept, in characters.
pub const MAX_COMMENT: usize = 2000;

/// What can stop a review request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The study, series or finding is not there (the message says which).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be taken as it is (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// The study is not in a state to do this now (the message says why).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Service(#[from] crate::Error),
    #[error("could not read the report {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write the verified results of job {job}")]
    Write {
        job: i64,
        #[source]
        source: std::io::Error,
    },
    #[error("could not encode the verified results of job {job}")]
    Encode {
        job: i64,
        #[source]
        source: report::Error,
    },
}

impl From<crate::store::Error> for Error {
    fn from(err: crate::store::Error) -> Error {
        Error::Service(err.into())
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A study's current reports with the decisions that hold for them.
#[derive(Debug, Clone, Serialize)]
pub struct StudyReview {
    pub study_instance_uid: String,
    pub review: ReviewSummary,
    pub series: Vec<SeriesReview>,
}

/// One analysed series: its current job's report and, per finding (in the report's
/// order), the decision that holds (`None`: undecided).
#[derive(Debug, Clone, Serialize)]
pub struct SeriesReview {
    pub job_id: i64,
    #[serde(skip)]
    pub report_path: PathBuf,
    pub report: Report,
    pub reviews: Vec<Option<FindingReview>>,
}

/// What a reader decides on one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decide {
    pub verdict: Verdict,
    pub corrected_type: Option<NoduleType>,
    pub comment: Option<String>,
}

/// What signing did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Signed {
    pub study_instance_uid: String,
    pub reader: String,
    /// RFC 3339, UTC.
    pub signed_at: String,
    /// The verified SR and SEG written, by SOP Instance UID.
    pub verified: Vec<String>,
    /// The accepted findings they carry, per series.
    pub accepted: usize,
}

impl Service {
    /// The study's review; `None` when no analysed report of it exists.
    pub async fn review(&self, study: &str) -> Result<Option<StudyReview>> {
        let study = study.to_owned();
        self.blocking_review(move |store| current(store, &study))
            .await
    }

    /// Records `reader`'s decision on finding `id` of the study (of `series`, needed when
    /// the study has more than one analysed series); returns the review as it now stands.
    pub async fn decide(
        &self,
        study: &str,
        series: Option<&str>,
        id: u32,
        decide: Decide,
        reader: &str,
    ) -> Result<StudyReview> {
        if decide
            .comment
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_COMMENT)
        {
            return Err(Error::Invalid(format!(
                "the comment is longer than {MAX_COMMENT} characters"
            )));
        }
        let (study, series, reader) = (
            study.to_owned(),
            series.map(str::to_owned),
            reader.to_owned(),
        );
        self.blocking_review(move |store| {
            let review = current(store, &study)?.ok_or_else(|| no_report(&study))?;
            let one = pick_series(&review, series.as_deref())?;
            let finding = one
                .report
                .findings
                .iter()
                .find(|f| f.id == id)
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "no finding {id} in the report of series {}",
                        one.report.series_instance_uid
                    ))
                })?;
            store
                .reviews()
                .decide(&decision(one, finding, &decide, &reader))?;
            current(store, &study)?.ok_or_else(|| no_report(&study))
        })
        .await
    }

    /// Signs the study's review as `reader`: for each analysed series, a verified SR with
    /// the accepted findings (and a SEG of them) replaces the unverified SR and SEG in the
    /// catalog and is pushed to the configured destinations.
    pub async fn sign(&self, study: &str, reader: &str) -> Result<Signed> {
        let (study, reader) = (study.to_owned(), reader.to_owned());
        let dir = self.config.data_dir.join("results");
        let targets = self.config.push.targets();
        let signed = self
            .blocking_review(move |store| sign(store, &dir, &study, &reader, &targets))
            .await?;
        if !self.config.push.targets().is_empty() {
            self.push_wake.notify_one();
        }
        Ok(signed)
    }

    /// Every decision ever recorded, oldest first (for `pulmo feedback`).
    pub async fn decisions(&self) -> Result<Vec<Decision>> {
        self.blocking_review(|store| Ok(store.reviews().all()?))
            .await
    }

    async fn blocking_review<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || call(&store))
            .await
            .map_err(|err| Error::Service(crate::Error::Panicked(err)))?
    }
}

fn no_report(study: &str) -> Error {
    Error::NotFound(format!("no analysed report of study {study}"))
}

/// The study's current analysed reports with the decisions that hold for them.
fn current(store: &Store, study: &str) -> Result<Option<StudyReview>> {
    let jobs = store.jobs().of_study(study)?;
    let decisions = store.reviews().of_study(study)?;
    let mut series = Vec::new();
    for job in jobs
        .iter()
        .filter(|j| j.state == JobState::Done && j.superseded_by.is_none())
    {
        let Some(path) = &job.report_path else {
            continue;
        };
        let report = read_report(Path::new(path))?;
        if !report.analyzed {
            continue;
        }
        let reviews = report
            .findings
            .iter()
            .map(|f| holding(&decisions, job.id, &report.series_instance_uid, f))
            .collect();
        series.push(SeriesReview {
            job_id: job.id,
            report_path: PathBuf::from(path),
            report,
            reviews,
        });
    }
    if series.is_empty() {
        return Ok(None);
    }
    let review = summary(store, study, &series)?;
    Ok(Some(StudyReview {
        study_instance_uid: study.to_owned(),
        review,
        series,
    }))
}

fn read_report(path: &Path) -> Result<Report> {
    let text = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|err| {
        Error::Conflict(format!(
            "a report of this study cannot be read ({err}); analyse it again"
        ))
    })
}

/// The decision that holds for `finding` of job `job`: its own, else the newest one on a
/// matching finding of an earlier job of the series. `decisions` are newest first.
fn holding(
    decisions: &[Decision],
    job: i64,
    series: &str,
    finding: &Finding,
) -> Option<FindingReview> {
    let own = decisions
        .iter()
        .find(|d| d.job_id == job && d.finding_id == finding.id);
    let carried = || {
        decisions.iter().find(|d| {
            d.job_id < job
                && d.series_uid == series
                && same_nodule(
                    Mark {
                        center_patient_mm: d.center_patient_mm,
                        diameter_mm: d.diameter_mm,
                    },
                    Mark::from(finding),
                )
        })
    };
    own.or_else(carried).map(|d| FindingReview {
        verdict: d.verdict,
        reader: d.reader.clone(),
        at: rfc3339(d.at),
        comment: d.comment.clone(),
        corrected_type: d
            .corrected_type
            .as_deref()
            .and_then(|t| serde_json::from_value(serde_json::Value::String(t.to_owned())).ok()),
    })
}

/// Signed when the latest signature covers exactly the current jobs; otherwise in
/// progress once any finding holds a decision.
fn summary(store: &Store, study: &str, series: &[SeriesReview]) -> Result<ReviewSummary> {
    let mut jobs: Vec<i64> = series.iter().map(|s| s.job_id).collect();
    jobs.sort_unstable();
    if let Some(signature) = store.reviews().signature(study)? {
        if signature.jobs == jobs {
            return Ok(ReviewSummary {
                status: ReviewStatus::Signed,
                reader: Some(signature.reader),
                signed_at: Some(rfc3339(signature.signed_at)),
            });
        }
    }
    let any = series.iter().any(|s| s.reviews.iter().any(Option::is_some));
    Ok(ReviewSummary {
        status: if any {
            ReviewStatus::InProgress
        } else {
            ReviewStatus::Unreviewed
        },
        reader: None,
        signed_at: None,
    })
}

fn pick_series<'a>(review: &'a StudyReview, series: Option<&str>) -> Result<&'a SeriesReview> {
    match (series, review.series.as_slice()) {
        (None, [one]) => Ok(one),
        (None, _) => Err(Error::Invalid(format!(
            "study {} has {} analysed series: name one with ?series=",
            review.study_instance_uid,
            review.series.len()
        ))),
        (Some(uid), all) => all
            .iter()
            .find(|s| s.report.series_instance_uid == uid)
            .ok_or_else(|| Error::NotFound(format!("no analysed report of series {uid}"))),
    }
}

fn decision(one: &SeriesReview, f: &Finding, decide: &Decide, reader: &str) -> Decision {
    let type_name = |t: NoduleType| {
        serde_json::to_value(t)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    Decision {
        job_id: one.job_id,
        finding_id: f.id,
        study_uid: one.report.study_instance_uid.clone(),
        series_uid: one.report.series_instance_uid.clone(),
        verdict: decide.verdict,
        corrected_type: decide.corrected_type.map(type_name),
        comment: decide.comment.clone().filter(|c| !c.trim().is_empty()),
        reader: reader.to_owned(),
        at: now(),
        center_patient_mm: f.center_patient_mm,
        diameter_mm: f.diameter_mm,
        volume_mm3: f.volume_mm3,
        score: f.score,
        finding_type: type_name(f.nodule_type),
        model_id: one.report.model.id.clone(),
        model_sha256: one.report.model.sha256.clone(),
    }
}

/// Writes and files the verified results of every analysed series of the study.
fn sign(
    store: &Store,
    results: &Path,
    study: &str,
    reader: &str,
    targets: &[crate::Target],
) -> Result<Signed> {
    let review = current(store, study)?.ok_or_else(|| no_report(study))?;
    let signed_at = now();
    let mut revisions = Vec::new();
    let mut accepted = 0;
    let mut written = Vec::new();
    for one in &review.series {
        let revision = revise(
            store,
            &results.join(one.job_id.to_string()),
            one,
            reader,
            signed_at,
        )?;
        accepted += one
            .reviews
            .iter()
            .flatten()
            .filter(|r| r.verdict == Verdict::Accepted)
            .count();
        written.extend(revision.rows.iter().map(|r| r.sop_instance_uid.clone()));
        revisions.push(revision);
    }
    let mut jobs: Vec<i64> = review.series.iter().map(|s| s.job_id).collect();
    jobs.sort_unstable();
    let replaced_files = files_of(store, study, &revisions)?;
    let signature = Signature {
        jobs,
        reader: reader.to_owned(),
        signed_at,
    };
    store
        .reviews()
        .sign(study, &signature, &revisions, targets)?;
    for path in replaced_files {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!(%study, accepted, "review signed");
    Ok(Signed {
        study_instance_uid: study.to_owned(),
        reader: reader.to_owned(),
        signed_at: rfc3339(signed_at),
        verified: written,
        accepted,
    })
}

/// The files of the result objects that `revisions` replace.
fn files_of(store: &Store, study: &str, revisions: &[Revision]) -> Result<Vec<PathBuf>> {
    let rows = store.results().of_study(study)?;
    Ok(rows
        .into_iter()
        .filter(|r| {
            revisions
                .iter()
                .any(|v| v.replaced.contains(&r.sop_instance_uid))
        })
        .map(|r| r.path)
        .collect())
}

/// The verified SR (and SEG) of one series, written beside its report.
fn revise(
    store: &Store,
    dir: &Path,
    one: &SeriesReview,
    reader: &str,
    at: f64,
) -> Result<Revision> {
    let job = one.job_id;
    let report = verified(&one.report, |id| {
        let n = one.report.findings.iter().position(|f| f.id == id)?;
        one.reviews[n].clone()
    });
    let current: Vec<ResultRow> = store
        .results()
        .of_study(&one.report.study_instance_uid)?
        .into_iter()
        .filter(|r| r.job_id == job && (r.modality == "SR" || r.modality == "SEG"))
        .collect();
    let volume = source_volume(store, &one.report)?;
    let segments = saved_segments(dir);
    let ids = DerivedIds::new(report.findings.len());
    let verification = Verification {
        observer: reader.to_owned(),
        organization: ORGANIZATION.to_owned(),
        at: Created::at(utc(at)),
        predecessor: current
            .iter()
            .find(|r| r.modality == "SR")
            .map(|r| Predecessor {
                study_instance_uid: r.study_uid.clone(),
                series_instance_uid: r.series_uid.clone(),
                sop_instance_uid: r.sop_instance_uid.clone(),
            }),
    };
    let encode = |source| Error::Encode { job, source };
    let stamp = at.floor() as i64;
    let mut objects = vec![(
        format!("sr-verified-{stamp}.dcm"),
        sr::to_verified_sr(&report, &segments, &volume, &ids, &verification),
    )];
    if !report.findings.is_empty() {
        match seg::to_seg(&report, &segments, &volume, &ids) {
            Ok(object) => objects.push((format!("seg-verified-{stamp}.dcm"), object)),
            Err(report::Error::NothingToSegment) => {}
            Err(err) => return Err(encode(err)),
        }
    }
    let mut rows = Vec::new();
    for (name, object) in objects {
        let attributes = crate::catalog::from_object(&object);
        let bytes = report::to_part10(object).map_err(encode)?;
        let path = dir.join(name);
        crate::worker::synced(dir, &path, &bytes).map_err(|source| Error::Write { job, source })?;
        rows.push(ResultRow {
            sop_instance_uid: attributes.sop_instance_uid.clone(),
            sop_class_uid: attributes.sop_class_uid.clone(),
            modality: attributes.modality.clone(),
            study_uid: one.report.study_instance_uid.clone(),
            series_uid: attributes.series_uid.clone(),
            job_id: job,
            path,
            attributes: Some(attributes),
        });
    }
    Ok(Revision {
        job_id: job,
        replaced: current.into_iter().map(|r| r.sop_instance_uid).collect(),
        rows,
    })
}

fn utc(seconds: f64) -> dicom_core::chrono::DateTime<dicom_core::chrono::Utc> {
    dicom_core::chrono::DateTime::from_timestamp(seconds.floor() as i64, 0).unwrap_or_default()
}

/// The analysed series read again from the spool, for the SR's and SEG's references and
/// geometry; refused when its source instances are gone or changed since the analysis.
fn source_volume(store: &Store, report: &Report) -> Result<volume::Volume> {
    let uid = &report.series_instance_uid;
    let gone = || {
        Error::Conflict(format!(
            "the source instances of series {uid} are no longer stored, so no verified SR can be written"
        ))
    };
    let paths = store.instances().paths(uid)?;
    let scan = ingest::scan(&paths).map_err(|err| {
        tracing::warn!(error = %error_chain(&err), "could not read a series again to sign it");
        gone()
    })?;
    let series = scan
        .series()
        .find(|s| &s.series_instance_uid == uid)
        .ok_or_else(gone)?;
    let volume = volume::assemble(series).map_err(|err| {
        tracing::warn!(error = %error_chain(&err), "could not assemble a series again to sign it");
        gone()
    })?;
    if volume.slices.len() != report.series.slices {
        return Err(Error::Conflict(format!(
            "series {uid} changed since its analysis; sign once the new analysis is reviewed"
        )));
    }
    Ok(volume)
}

/// The findings' voxels filed beside the report; none for reports filed before they were
/// (their SR's circles are then sized from the long axis, and no SEG is written).
fn saved_segments(dir: &Path) -> Vec<Segment> {
    let Ok(text) = std::fs::read(dir.join(SEGMENTS_FILE)) else {
        return Vec::new();
    };
    let saved: Vec<SavedSegment> = serde_json::from_slice(&text).unwrap_or_default();
    saved.iter().filter_map(SavedSegment::to_segment).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(job_id: i64, finding_id: u32, x: f64, verdict: Verdict) -> Decision {
        Decision {
            job_id,
            finding_id,
            study_uid: "1.2".into(),
            series_uid: "1.2.3".into(),
            verdict,
            corrected_type: Some("part-solid".into()),
            comment: None,
            reader: "dr-a".into(),
            at: 1_700_000_000.0,
            center_patient_mm: [x, 0.0, 0.0],
            diameter_mm: 8.0,
            volume_mm3: 200.0,
            score: 0.9,
            finding_type: "solid".into(),
            model_id: "m".into(),
            model_sha256: "ab".repeat(32),
        }
    }

    fn finding(id: u32, x: f64) -> Finding {
        let mut f = pulmo_core::testing::finding(0.9, pulmo_core::findings::LungRads::Cat3);
        f.id = id;
        f.center_patient_mm = [x, 0.0, 0.0];
        f.diameter_mm = 8.0;
        f
    }

    #[test]
    fn a_reanalysis_keeps_the_decisions_of_matching_findings_only() {
        // Newest first, as the store gives them.
        let decisions = [
            decided(1, 2, 40.0, Verdict::Rejected),
            decided(1, 1, 0.0, Verdict::Accepted),
        ];
        // Job 2 found the first nodule 2 mm off (renumbered 3), and one new one.
        let kept = holding(&decisions, 2, "1.2.3", &finding(3, 2.0)).unwrap();
        assert_eq!(kept.verdict, Verdict::Accepted);
        assert_eq!(kept.corrected_type, Some(NoduleType::PartSolid));
        assert_eq!(holding(&decisions, 2, "1.2.3", &finding(1, 20.0)), None);
        // Not from another series, and the job's own decision comes first.
        assert_eq!(holding(&decisions, 2, "1.2.9", &finding(3, 2.0)), None);
        let own = [decided(2, 3, 2.0, Verdict::Rejected), decisions[1].clone()];
        let mine = holding(&own, 2, "1.2.3", &finding(3, 2.0)).unwrap();
        assert_eq!(mine.verdict, Verdict::Rejected);
    }
}
