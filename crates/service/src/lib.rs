//! The service core that every network transport shares: a durable spool of received
//! instances, an index of series and jobs (SQLite), series completion by quiet time, a
//! job queue with priority lanes, and workers that run the pipeline and file its results.
//!
//! Transports (`transport::http` today, DIMSE later) hand it instance files and read
//! jobs and results back through [`Service`]'s async methods ([`Service::job`],
//! [`Service::study_status`], [`Service::summaries`], [`Service::files`], ...), which run each call on the
//! index off the async workers; they never open the [`store`] or touch the pipeline
//! themselves. This module knows files, the index and the pipeline; it knows nothing of
//! HTTP.
//!
//! | module | what |
//! |---|---|
//! | [`store`] | the SQLite index: one file and one handle per table family |
//! | [`push`] | destinations, the retry policy, what a push is |
//! | `spool` | admitting a received instance into the spool and the index |
//! | `worker` | the quiet-time timer and the workers that run the pipeline |
//! | `pusher` | the task that sends due pushes |
//! | `catalog` | the attributes DICOMweb searches match, read from each served instance |
//! | [`review`] | readers' decisions, signing, the verified SR and SEG |
//! | [`retention`] | purging the source instances of analysed series after a while |
//! | [`testing`] | a throwaway PostgreSQL server for tests and measurements |
//!
//! Several nodes can share one PostgreSQL store and one spool folder
//! ([`ServiceConfig::store`], [`ServiceConfig::spool_dir`]): every node receives, serves
//! and analyses; jobs and pushes are claimed with leases (see [`store`]).

mod catalog;
pub mod priors;
pub mod push;
mod pusher;
pub mod retention;
pub mod review;
mod spool;
pub mod store;
pub mod testing;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use store::{Lease, Location, Store};

use pulmo_core::pipeline::{results::Choice, Analyzer};
use pulmo_dicom::ingest::SelectionRules;

pub use push::{
    Auth, Destination, DimseDestination, Push, PushConfig, PushCounts, PushState, Target,
};
pub use spool::{is_uid, Accepted, Refusal, Refused};
pub use store::{Attributes, AuditEntry, Job, JobState, ResultRow, Scope, Served, Summary};

/// What can stop the service from starting or from doing one piece of work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("a call on the index panicked")]
    Panicked(#[source] tokio::task::JoinError),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Priority lanes: every queued `stat` job runs before any `routine` one, and those
/// before `research`. Within a lane, oldest first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    Stat = 0,
    #[default]
    Routine = 1,
    Research = 2,
}

impl Lane {
    fn from_rank(rank: i64) -> Lane {
        match rank {
            0 => Lane::Stat,
            1 => Lane::Routine,
            _ => Lane::Research,
        }
    }

    /// The lane's name, as the API and metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Stat => "stat",
            Lane::Routine => "routine",
            Lane::Research => "research",
        }
    }
}

impl std::str::FromStr for Lane {
    type Err = String;

    fn from_str(text: &str) -> Result<Lane, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "stat" => Ok(Lane::Stat),
            "routine" => Ok(Lane::Routine),
            "research" => Ok(Lane::Research),
            other => Err(format!(
                "unknown priority lane {other:?}: use stat, routine or research"
            )),
        }
    }
}

/// Where a study stands: instances stored, series still arriving, and every job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StudyStatus {
    pub study_instance_uid: String,
    /// Instances stored for this study.
    pub instances: u32,
    /// Series with instances that arrived after their last job was queued: waiting for
    /// the quiet time to pass.
    pub receiving: Vec<String>,
    /// Every job of the study, oldest first (superseded ones included).
    pub jobs: Vec<Job>,
}

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Holds the index `pulmo.sqlite` and, unless `spool_dir` says otherwise, `spool/`,
    /// `results/` and `tmp/`.
    pub data_dir: PathBuf,
    /// The index; `None` is `data_dir/pulmo.sqlite`. PostgreSQL lets several nodes share it.
    pub store: Option<Location>,
    /// Where `spool/`, `results/` and `tmp/` live when not in `data_dir`: a folder every
    /// node sharing the store mounts at the same path. Each node writes its partial
    /// uploads under `tmp/<node>/` there, so a rename admits them.
    pub spool_dir: Option<PathBuf>,
    /// This node's name and how long its claims last unless renewed.
    pub lease: Lease,
    /// A series is complete when no instance of it has arrived for this long.
    pub quiet: Duration,
    /// How many series are analysed at once (they share the inference engine's batches).
    pub jobs: usize,
    /// Which DICOM results each analysis files besides its JSON report.
    pub results: Choice,
    pub rules: SelectionRules,
    /// Where results are pushed (the PACS, a webhook) and the retry policy; by default nowhere.
    pub push: PushConfig,
    /// Source instances of analysed series are purged this long after their last one
    /// arrived; `None` keeps them forever.
    pub retain: Option<Duration>,
    /// The PACS asked for a patient's prior study when none was analysed here; by default none.
    pub priors: Option<priors::PriorsConfig>,
}

impl ServiceConfig {
    /// Defaults: a 3 s quiet time, two series at once, SR, SEG and key images (Secondary
    /// Capture), source instances kept 30 days.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServiceConfig {
            data_dir: data_dir.into(),
            store: None,
            spool_dir: None,
            lease: Lease::default(),
            quiet: Duration::from_secs(3),
            jobs: 2,
            results: Choice {
                sr: true,
                seg: true,
                images: false,
                capture: true,
            },
            rules: SelectionRules::default(),
            push: PushConfig::default(),
            retain: Some(Duration::from_secs(30 * 24 * 3600)),
            priors: None,
        }
    }

    /// The folder holding `spool/` and `results/`.
    pub fn shared_dir(&self) -> &Path {
        self.spool_dir.as_deref().unwrap_or(&self.data_dir)
    }

    /// Where this node writes uploads before admitting them: `tmp/`, or `tmp/<node>/` in
    /// a spool folder that other nodes share.
    pub fn tmp_dir(&self) -> PathBuf {
        match &self.spool_dir {
            Some(shared) => shared.join("tmp").join(&self.lease.node),
            None => self.data_dir.join("tmp"),
        }
    }

    fn location(&self) -> Location {
        self.store
            .clone()
            .unwrap_or_else(|| Location::Sqlite(self.data_dir.join("pulmo.sqlite")))
    }
}

/// The shared core: spool, index, and (once loaded) the analyzer.
pub struct Service {
    config: ServiceConfig,
    store: Arc<Store>,
    analyzer: OnceLock<Arc<Analyzer>>,
    /// Wakes idle workers when a job is queued.
    wake: tokio::sync::Notify,
    /// Wakes the pusher when a job has queued pushes.
    push_wake: tokio::sync::Notify,
}

impl Service {
    /// Creates the data directory's layout, opens the index, and puts jobs that a previous
    /// process left running back in the queue.
    pub fn open(config: ServiceConfig) -> Result<Service> {
        let shared = config.shared_dir();
        let dirs = [
            config.data_dir.clone(),
            shared.join("spool"),
            shared.join("results"),
            config.tmp_dir(),
        ];
        for path in dirs {
            std::fs::create_dir_all(&path).map_err(|source| Error::Create { path, source })?;
        }
        spool::clear_temporaries(&config.tmp_dir());
        let store = Store::connect(&config.location(), config.lease.clone())?;
        let requeued = store.jobs().requeue_running()?;
        if requeued > 0 {
            tracing::info!(
                jobs = requeued,
                "jobs interrupted by the last stop are queued again"
            );
        }
        let resent = store.pushes().requeue_sending()?;
        if resent > 0 {
            tracing::info!(
                pushes = resent,
                "pushes interrupted by the last stop are due again"
            );
        }
        Ok(Service {
            config,
            store: Arc::new(store),
            analyzer: OnceLock::new(),
            wake: tokio::sync::Notify::new(),
            push_wake: tokio::sync::Notify::new(),
        })
    }

    /// How the service runs.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The analyzer, once the model is loaded and warmed up.
    pub fn analyzer(&self) -> Option<&Arc<Analyzer>> {
        self.analyzer.get()
    }

    /// Where a part being received is written before it is checked and admitted.
    pub fn temporary_path(&self) -> PathBuf {
        self.config
            .tmp_dir()
            .join(format!("{}.part", uuid::Uuid::new_v4()))
    }

    /// Checks a received file (already on disk and synced at `tmp`) and moves it into the
    /// spool, or refuses it with the reason. Blocking: call it off the async workers.
    ///
    /// `name` is how refusals refer to it (for example `part 3`); `study` is the study the
    /// request was addressed to, when it was.
    pub fn admit(
        &self,
        tmp: &Path,
        name: &str,
        study: Option<&str>,
        lane: Lane,
    ) -> Result<Accepted, Refused> {
        spool::admit(self, tmp, name, study, lane)
    }

    /// Queues every series of a study for analysis now, in `lane` when given; returns the
    /// job ids (none when nothing of the study was received).
    pub async fn analyze_now(&self, study: &str, lane: Option<Lane>) -> Result<Vec<i64>> {
        let study = study.to_owned();
        let ids = self
            .blocking(move |s| s.jobs().queue_study(&study, lane))
            .await?;
        self.wake.notify_waiters();
        Ok(ids)
    }

    /// One job, with where its pushes stand.
    pub async fn job(&self, id: i64) -> Result<Option<Job>> {
        self.blocking(move |s| s.jobs().get(id)).await
    }

    /// Where a study stands; `None` when nothing of it was received.
    pub async fn study_status(&self, study: &str) -> Result<Option<StudyStatus>> {
        let uid = study.to_owned();
        self.blocking(move |s| {
            let instances = s.instances().study_count(&uid)?;
            if instances == 0 {
                return Ok(None);
            }
            Ok(Some(StudyStatus {
                instances,
                receiving: s.instances().receiving_series(&uid)?,
                jobs: s.jobs().of_study(&uid)?,
                study_instance_uid: uid,
            }))
        })
        .await
    }

    /// Whether the index answers now (readiness).
    pub async fn store_reachable(&self) -> Result<()> {
        self.blocking(|s| s.ping()).await
    }

    /// How many jobs wait, in all lanes.
    pub async fn queued_jobs(&self) -> Result<u32> {
        self.blocking(|s| s.jobs().queued()).await
    }

    /// How many jobs wait in each lane (lanes without any left out).
    pub async fn queue_depth(&self) -> Result<Vec<(Lane, u32)>> {
        self.blocking(|s| s.jobs().depth()).await
    }

    /// Studies (`by_series` false) or series with a served instance (received or result)
    /// in `scope`.
    pub async fn summaries(&self, scope: Scope<'_>, by_series: bool) -> Result<Vec<Summary>> {
        let scope = OwnedScope::from(scope);
        self.blocking(move |s| s.catalog().summaries(scope.borrow(), by_series))
            .await
    }

    /// The served instances (received or results) in `scope`.
    pub async fn instances(&self, scope: Scope<'_>) -> Result<Vec<Attributes>> {
        let scope = OwnedScope::from(scope);
        self.blocking(move |s| s.catalog().instances(scope.borrow()))
            .await
    }

    /// The files of the served instances in `scope`.
    pub async fn files(&self, scope: Scope<'_>) -> Result<Vec<Served>> {
        let scope = OwnedScope::from(scope);
        self.blocking(move |s| s.catalog().files(scope.borrow()))
            .await
    }

    /// Pushes in `state` (all when `None`), newest first, at most `limit`.
    pub async fn pushes(&self, state: Option<PushState>, limit: u32) -> Result<Vec<Push>> {
        self.blocking(move |s| s.pushes().list(state, limit)).await
    }

    /// How many pushes are in each state, and how many retries were made.
    pub async fn push_counts(&self) -> Result<PushCounts> {
        self.blocking(|s| s.pushes().counts()).await
    }

    /// Appends the audit records of one answered request: one per study it touched.
    pub async fn audit(
        &self,
        caller: &str,
        action: &str,
        studies: Vec<String>,
        status: u16,
    ) -> Result<()> {
        let (caller, action) = (caller.to_owned(), action.to_owned());
        self.blocking(move |s| s.audit().record(&caller, &action, &studies, status))
            .await
    }

    /// Runs one call on the index off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Store) -> store::Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        let done = tokio::task::spawn_blocking(move || call(&store)).await;
        Ok(done.map_err(Error::Panicked)??)
    }

    /// Where one claim of a job writes its results: `results/<job>` for the first,
    /// `results/<job>.<attempt>` after a takeover, so a node that lost its lease never
    /// writes over the files of the claim that replaced it.
    fn results_dir(&self, job: &Job) -> PathBuf {
        let name = match job.attempt {
            0 | 1 => job.id.to_string(),
            n => format!("{}.{n}", job.id),
        };
        self.config.shared_dir().join("results").join(name)
    }
}

/// A [`Scope`] that can cross to the blocking pool.
struct OwnedScope([Option<String>; 3]);

impl From<Scope<'_>> for OwnedScope {
    fn from(scope: Scope<'_>) -> Self {
        OwnedScope([scope.study, scope.series, scope.instance].map(|s| s.map(str::to_owned)))
    }
}

impl OwnedScope {
    fn borrow(&self) -> Scope<'_> {
        let [study, series, instance] = self.0.each_ref().map(Option::as_deref);
        Scope {
            study,
            series,
            instance,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Starts the background work on a loaded analyzer: the completion timer, `config.jobs`
/// workers, and the pusher when a push destination is configured. They stop taking new
/// work when `stop` fires and return once their current job is filed; a job cut off by a
/// harder stop is queued again next start, an interrupted push is due again.
pub fn start(
    service: Arc<Service>,
    analyzer: Arc<Analyzer>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinSet<()> {
    service
        .analyzer
        .set(analyzer)
        .unwrap_or_else(|_| panic!("the service is started once. This is a bug."));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(worker::complete_quiet_series(service.clone(), stop.clone()));
    for _ in 0..service.config.jobs.max(1) {
        tasks.spawn(worker::work(service.clone(), stop.clone()));
    }
    if !service.config.push.targets().is_empty() {
        tasks.spawn(pusher::run(service.clone(), stop.clone()));
    }
    if let Some(retain) = service.config.retain {
        tasks.spawn(retention::run(service.clone(), retain, stop.clone()));
    }
    let store = service.store.clone();
    tasks.spawn(async move {
        let _ = tokio::task::spawn_blocking(move || catalog::backfill(&store)).await;
    });
    tasks
}
