//! The background work: a timer that queues series once they have been quiet, and
//! workers that take jobs from the queue, run the pipeline off the async threads, and
//! file the report and DICOM results.
//!
//! Both work on the store, never on this process' memory: with several nodes sharing
//! one store, any node's timer queues a series whose instances arrived at others, and
//! any node's worker claims the job. A worker renews its claim's lease while the job
//! runs; a node that stops renewing (it died) loses the job to the next claim anywhere.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::store::{Attributes, Job, JobState, ResultRow};
use super::{now, priors, Lane, Service};
use pulmo_core::compare;
use pulmo_core::report::review::SavedSegment;
use pulmo_dicom::ingest;

/// The report's timings that become stage metrics.
const STAGES: [&str; 5] = ["decode", "preprocess", "inference", "postprocess", "total"];
use pulmo_core::pipeline::{error_chain, Analyzer, Choice};

/// What a job can fail with; the chain becomes the job's reason.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Store(#[from] super::store::Error),
    #[error("could not read the series from the spool")]
    Ingest(#[from] ingest::Error),
    #[error("none of the series' {0} stored instances could be read")]
    Unreadable(usize),
    #[error(transparent)]
    Pipeline(#[from] pulmo_core::pipeline::Error),
    #[error("could not write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Queues each series that has had news and then been quiet for the configured time.
pub(super) async fn complete_quiet_series(service: Arc<Service>, stop: CancellationToken) {
    let quiet = service.config.quiet;
    let tick = (quiet / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut timer = tokio::time::interval(tick);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = timer.tick() => {}
        }
        let cutoff = now() - quiet.as_secs_f64();
        let store = service.clone();
        let queued =
            tokio::task::spawn_blocking(move || store.store.jobs().queue_quiet(cutoff)).await;
        match queued {
            Ok(Ok(ids)) if !ids.is_empty() => {
                tracing::info!(jobs = ?ids, "complete series queued");
                service.wake.notify_waiters();
            }
            Ok(Ok(_)) => continue,
            Ok(Err(err)) => {
                tracing::error!(error = %error_chain(&err), "could not queue complete series")
            }
            Err(err) => tracing::error!(error = %err, "the completion check panicked"),
        }
    }
}

/// One worker: claims the next job, runs it, repeats until `stop`.
pub(super) async fn work(service: Arc<Service>, stop: CancellationToken) {
    // Jobs are also queued by the timer and by other processes' restarts, so idle
    // workers look again every so often besides being woken.
    const POLL: Duration = Duration::from_millis(200);
    loop {
        if stop.is_cancelled() {
            return;
        }
        let claimer = service.clone();
        let started = std::time::Instant::now();
        let claimed = tokio::task::spawn_blocking(move || claimer.store.jobs().claim()).await;
        pulmo_metrics::claim(started.elapsed().as_secs_f64());
        match claimed {
            Ok(Ok(Some(job))) => {
                run_leased(&service, job).await;
                continue;
            }
            Ok(Ok(None)) => {}
            Ok(Err(err)) => tracing::error!(error = %error_chain(&err), "could not claim a job"),
            Err(err) => tracing::error!(error = %err, "claiming a job panicked"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = service.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Runs one claimed job off the async workers, renewing its lease a few times per lease
/// time until it ends.
async fn run_leased(service: &Arc<Service>, job: Job) {
    let renewal = service.config.lease.ttl / 3;
    let (runner, leased) = (service.clone(), job.clone());
    let mut running = tokio::task::spawn_blocking(move || run(&runner, &leased));
    loop {
        tokio::select! {
            done = &mut running => {
                if let Err(err) = done {
                    tracing::error!(error = %err, job = job.id, "a job panicked");
                }
                return;
            }
            _ = tokio::time::sleep(renewal) => {}
        }
        let (renewer, leased) = (service.clone(), job.clone());
        let renewed =
            tokio::task::spawn_blocking(move || renewer.store.jobs().renew(&leased)).await;
        match renewed {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                tracing::warn!(job = job.id, "lost a job's lease: another node has it")
            }
            Ok(Err(err)) => {
                tracing::warn!(job = job.id, error = %error_chain(&err), "could not renew a job's lease")
            }
            Err(err) => tracing::error!(error = %err, "renewing a lease panicked"),
        }
    }
}

/// Runs one claimed job to its end state.
fn run(service: &Service, job: &Job) {
    let span = tracing::info_span!("job", id = job.id, study = %job.study_instance_uid, series = %job.series_instance_uid, lane = job.lane.as_str());
    let _enter = span.enter();
    tracing::info!("analysis started");
    let analyzer = service
        .analyzer()
        .expect("workers start after the model is loaded. This is a bug.");
    let (state, ended) = match analyze(service, analyzer, job) {
        Ok(Ended::Done { findings }) => {
            tracing::info!(findings, "analysis done");
            ("done", Ok(()))
        }
        Ok(Ended::Skipped { reason, instances }) => {
            tracing::info!(%reason, "series skipped");
            let jobs = service.store.jobs();
            let ended = jobs.finish(job, JobState::Skipped, Some(&reason), instances);
            ("skipped", ended)
        }
        Err(JobError::Store(super::store::Error::LeaseLost { .. })) => {
            // Its files are gone already (`analyze`); the claim that replaced it files its own.
            tracing::warn!("analysis dropped: the job's lease ran out and another node took it");
            return;
        }
        Err(err) => {
            let reason = error_chain(&err);
            tracing::warn!(%reason, "analysis failed");
            let reason = without_paths(&reason, service.config.shared_dir());
            pulmo_metrics::failure("analysis", "job");
            let ended = service
                .store
                .jobs()
                .finish(job, JobState::Failed, Some(&reason), 0);
            ("failed", ended)
        }
    };
    pulmo_metrics::job_ended(state);
    if let Err(err) = ended {
        tracing::error!(error = %error_chain(&err), "could not record the end of a job");
    }
}

enum Ended {
    Done { findings: u32 },
    Skipped { reason: String, instances: u32 },
}

fn analyze(service: &Service, analyzer: &Analyzer, job: &Job) -> Result<Ended, JobError> {
    let paths = service.store.instances().paths(&job.series_instance_uid)?;
    let scan = ingest::scan(&paths)?;
    for skipped in &scan.skipped {
        tracing::warn!(error = %error_chain(skipped), "a stored instance could not be read");
    }
    let Some(series) = scan
        .series()
        .find(|s| s.series_instance_uid == job.series_instance_uid)
    else {
        return Err(JobError::Unreadable(paths.len()));
    };
    let instances = series.instances.len() as u32;
    if let Some(reason) = service.config.rules.check(series) {
        let reason = format!("not analysed: {reason}");
        return Ok(Ended::Skipped { reason, instances });
    }
    let patient_key = compare::patient_key(
        &series.source.patient_id,
        &series.source.issuer_of_patient_id,
    );
    let study_date = dicom_date(&series.source.study_date);
    let found = find_prior(
        service,
        analyzer,
        job,
        series,
        patient_key.as_deref(),
        study_date,
    )?;
    let compared_with = found
        .prior
        .as_ref()
        .and_then(|p| p.snapshot.study_date.clone());
    let jobs = service.store.jobs();
    jobs.note_patient(
        job,
        patient_key.as_deref(),
        study_date,
        compared_with.as_deref(),
    )?;
    let mut analysis = analyzer.analyze_series_with_prior(
        series,
        &service.config.rules,
        service.config.results,
        found.prior.as_ref(),
    )?;
    if let Some(why) = found.warning {
        tracing::warn!(why = %without_paths(&why, service.config.shared_dir()), "not compared with the patient's prior study");
        analysis.report.warnings.push(why);
    }
    // Warnings name slices left out by their spool path; readers see the instance.
    for warning in &mut analysis.report.warnings {
        *warning = without_paths(warning, service.config.shared_dir());
    }
    for (stage, ms) in &analysis.report.timing_ms {
        if let Some(stage) = STAGES.iter().find(|s| **s == stage.as_str()) {
            pulmo_metrics::stage(stage, ms / 1e3);
        }
    }
    let dir = service.results_dir(job);
    let report_path = dir.join("report.json");
    write_synced(&dir, &report_path, analysis.report.to_json().as_bytes())?;
    // The findings' voxels, for the SEG of a signed review (see `review`).
    let saved: Vec<SavedSegment> = analysis.segments.iter().map(Into::into).collect();
    let saved = serde_json::to_vec(&saved).expect("segments always serialise. This is a bug.");
    write_synced(&dir, &dir.join(crate::review::SEGMENTS_FILE), &saved)?;
    // What a later study of the same patient is compared with (`read_prior`).
    let snapshot =
        serde_json::to_vec(&analysis.snapshot).expect("snapshots always serialise. This is a bug.");
    write_synced(&dir, &dir.join(SNAPSHOT_FILE), &snapshot)?;
    let mut rows = Vec::new();
    for object in analysis.results {
        let Some(ids) = object.dicom else { continue };
        let path = dir.join(&object.suffix);
        write_synced(&dir, &path, &object.bytes)?;
        rows.push(ResultRow {
            sop_instance_uid: ids.sop_instance_uid,
            sop_class_uid: ids.sop_class_uid,
            modality: ids.modality,
            study_uid: job.study_instance_uid.clone(),
            series_uid: ids.series_instance_uid,
            job_id: job.id,
            attributes: catalogue(&path),
            path,
        });
    }
    let findings = analysis.report.findings.len() as u32;
    let targets = service.config.push.targets();
    let completed = jobs.complete(job, &report_path, findings, instances, &rows, &targets);
    let superseded = completed.inspect_err(|_| {
        // Nothing of this claim was filed: its files are nobody's.
        let _ = std::fs::remove_dir_all(&dir);
    })?;
    if !targets.is_empty() {
        service.push_wake.notify_one();
    }
    for path in superseded {
        let _ = std::fs::remove_file(path);
    }
    if let (Some(key), Some(date)) = (&patient_key, study_date) {
        // A patient's later studies analysed before this earlier one are compared again.
        let again = jobs.compare_again(key, date, Lane::Routine)?;
        if !again.is_empty() {
            tracing::info!(jobs = ?again, "later studies of the patient queued again to compare with this one");
            service.wake.notify_waiters();
        }
    }
    Ok(Ended::Done { findings })
}

/// The file beside a job's report that holds its [`compare::Snapshot`] (lung surface, study
/// date), for comparing later studies of the same patient with it.
pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// A `YYYYMMDD` StudyDate, or none when the study has no date or a malformed one (a date
/// that cannot be ordered cannot choose a prior).
fn dicom_date(date: &str) -> Option<&str> {
    let date = date.trim();
    (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit())).then_some(date)
}

/// A job's prior, when one was found, and why one found could not be used.
#[derive(Default)]
struct Found {
    prior: Option<compare::Prior>,
    warning: Option<String>,
}

/// The prior of `job` (a study of patient `patient_key` made on `study_date`): the latest
/// earlier study of the patient analysed here ([`Jobs::prior`](crate::store::Jobs::prior)),
/// or else, with `--priors-from`, the latest one the PACS holds, retrieved and analysed now.
fn find_prior(
    service: &Service,
    analyzer: &Analyzer,
    job: &Job,
    series: &pulmo_dicom::volume::Series,
    patient_key: Option<&str>,
    study_date: Option<&str>,
) -> Result<Found, JobError> {
    let (Some(key), Some(date)) = (patient_key, study_date) else {
        return Ok(Found::default());
    };
    if let Some(prior_job) = service
        .store
        .jobs()
        .prior(key, &job.study_instance_uid, date)?
    {
        return Ok(match read_prior(&prior_job) {
            Ok(prior) => {
                tracing::info!(prior_job = prior_job.id, prior_study = %prior_job.study_instance_uid, "comparing with the patient's prior study");
                Found {
                    prior: Some(prior),
                    warning: None,
                }
            }
            Err(why) => Found {
                prior: None,
                warning: Some(why),
            },
        });
    }
    let Some(config) = &service.config.priors else {
        return Ok(Found::default());
    };
    Ok(
        match from_pacs(service, analyzer, config, job, series, date) {
            Ok(prior) => Found {
                prior,
                warning: None,
            },
            Err(why) => Found {
                prior: None,
                warning: Some(why),
            },
        },
    )
}

/// The patient's latest earlier CT study at the PACS (`--priors-from`), retrieved into the
/// spool unless it is there already, and its CT series analysed now; none when the PACS
/// has no earlier study. An error is the warning the report carries.
fn from_pacs(
    service: &Service,
    analyzer: &Analyzer,
    config: &priors::PriorsConfig,
    job: &Job,
    series: &pulmo_dicom::volume::Series,
    date: &str,
) -> Result<Option<compare::Prior>, String> {
    let runtime = tokio::runtime::Handle::current();
    let patient = priors::Patient {
        id: &series.source.patient_id,
        issuer: &series.source.issuer_of_patient_id,
    };
    let earlier = runtime
        .block_on(priors::latest_earlier(
            config,
            &patient,
            &job.study_instance_uid,
            date,
        ))
        .map_err(|err| format!("no prior looked up at the PACS: {}", error_chain(&err)))?;
    let Some(earlier) = earlier else {
        return Ok(None);
    };
    let uid = &earlier.study_instance_uid;
    let failed = |what: &str, err: &dyn std::error::Error| {
        format!(
            "not compared with the prior study {uid} from the PACS: {what}: {}",
            error_chain(err)
        )
    };
    let instances = service.store.instances();
    if instances
        .study_count(uid)
        .map_err(|e| failed("the store", &e))?
        == 0
    {
        let got = runtime
            .block_on(priors::retrieve(service, config, uid))
            .map_err(|e| failed("retrieving it", &e))?;
        tracing::info!(prior_study = %uid, admitted = got.admitted, refused = got.refused, "prior study retrieved from the PACS");
    }
    let paths = instances
        .study_paths(uid)
        .map_err(|e| failed("the store", &e))?;
    let scan = ingest::scan(&paths).map_err(|e| failed("reading it", &e))?;
    let chosen = ingest::choose(&scan, &service.config.rules, None)
        .map_err(|e| failed("choosing its CT series", &e))?;
    let analysis = analyzer
        .analyze_series(chosen, &service.config.rules, Choice::NONE)
        .map_err(|e| failed("analysing it", &e))?;
    if !analysis.report.analyzed {
        return Err(format!(
            "not compared with the prior study {uid} from the PACS: its CT series was not analysed"
        ));
    }
    tracing::info!(prior_study = %uid, "comparing with the patient's prior study from the PACS");
    Ok(Some(analysis.as_prior()))
}

/// The report and snapshot of `job`, an earlier analysis of the patient's prior study, or
/// why they cannot be used (written into the report's warnings: names UIDs, not paths).
fn read_prior(job: &Job) -> Result<compare::Prior, String> {
    let unusable = |what: &str| {
        format!(
            "not compared with the prior study {} (job {}): {what}",
            job.study_instance_uid, job.id
        )
    };
    let report_path = job
        .report_path
        .as_deref()
        .ok_or_else(|| unusable("it has no report"))?;
    let dir = report_path.parent().unwrap_or(Path::new("."));
    let report = std::fs::read(report_path)
        .ok()
        .and_then(|text| serde_json::from_slice(&text).ok())
        .ok_or_else(|| unusable("its report could not be read"))?;
    let snapshot = std::fs::read(dir.join(SNAPSHOT_FILE))
        .ok()
        .and_then(|text| serde_json::from_slice(&text).ok())
        .ok_or_else(|| {
            unusable("its lung surface was not kept (it was analysed by an older pulmo); analyse it again to compare")
        })?;
    Ok(compare::Prior { report, snapshot })
}

/// A result object's attributes for DICOMweb searches, read back from its file; one that
/// cannot be read is served but not found by searches, which the log says.
fn catalogue(path: &Path) -> Option<Attributes> {
    super::catalog::read(path)
        .inspect_err(|err| {
            tracing::error!(error = %error_chain(err), "could not catalogue a result object");
        })
        .ok()
}

/// A job's reason as API readers see it: spool files named by their instance
/// (`instance 1.2.3`), any other path under the data directory relative to it. The
/// server's own layout is not theirs to know; the log keeps the whole reason.
fn without_paths(reason: &str, data_dir: &Path) -> String {
    let data = data_dir.to_string_lossy();
    let spool = format!("{data}/spool/");
    let mut text = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(at) = rest.find(&spool) {
        text.push_str(&rest[..at]);
        let file = &rest[at + spool.len()..];
        let mut end = file
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '/'))
            .unwrap_or(file.len());
        if file[end..].starts_with("dcm") {
            end += "dcm".len();
        }
        let name = file[..end].rsplit('/').next().unwrap_or_default();
        text.push_str("instance ");
        text.push_str(name.strip_suffix(".dcm").unwrap_or(name));
        rest = &file[end..];
    }
    text.push_str(rest);
    text.replace(&format!("{data}/"), "").replace(&*data, "")
}

/// Writes a file and syncs it, so the index never points at a file a crash could lose.
fn write_synced(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), JobError> {
    synced(dir, path, bytes).map_err(|source| JobError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Writes `bytes` to `path` in `dir` (made when needed), then syncs the file and `dir`.
pub(super) fn synced(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_instances_not_server_paths() {
        let data = Path::new("/srv/pulmo-data");
        let reason = "could not decode frame 1 of /srv/pulmo-data/spool/1.2/1.2.3/1.2.3.4.dcm: \
                      truncated; could not write /srv/pulmo-data/results/7/report.json";
        let shown = without_paths(reason, data);
        assert_eq!(
            shown,
            "could not decode frame 1 of instance 1.2.3.4: truncated; \
             could not write results/7/report.json"
        );
        assert!(!shown.contains("/srv"), "{shown}");
        assert_eq!(without_paths("no path here", data), "no path here");
    }
}
