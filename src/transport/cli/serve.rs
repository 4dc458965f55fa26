//! `pulmo serve`: the service a PACS forwards studies to, over DICOMweb and, with
//! `--dimse-listen`, over DIMSE (C-STORE).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::dimse::DimseArgs;
use super::push::{PriorsArgs, PushArgs};
use super::EngineArgs;
use crate::pipeline::results::Choice;
use crate::service::{self, Service, ServiceConfig};
use crate::transport::dimse;
use crate::transport::http::auth::Role;
use crate::transport::http::{self, AppState, Limits, Tokens};
use axum_server::tls_rustls::RustlsConfig;

/// Where `scripts/setup/viewer.sh` installs OHIF, relative to the working directory.
const DEFAULT_VIEWER_DIR: &str = "viewer/ohif";

/// Arguments of `pulmo serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "PULMO_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Data directory: the spool of received instances, results and the index.
    #[arg(long, env = "PULMO_DATA", default_value = "pulmo-data")]
    pub data: PathBuf,
    /// The index and job store: an SQLite file (default: pulmo.sqlite in the data
    /// directory) or a PostgreSQL URL (postgres://user@host:port/db) that several nodes share.
    #[arg(long, env = "PULMO_STORE")]
    pub store: Option<String>,
    /// Where the spool of received instances and the results live, when not in the data
    /// directory: with a shared store, a folder every node mounts at the same path.
    #[arg(long, env = "PULMO_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// This node's name in leases, logs and metrics (default: the host name); unique
    /// among the nodes sharing a store.
    #[arg(long, env = "PULMO_NODE")]
    pub node: Option<String>,
    /// How long a node's claim of a job lasts unless renewed (seconds); another node
    /// takes the job over once it lapses.
    #[arg(long, env = "PULMO_LEASE_SECONDS", default_value_t = 30.0)]
    pub lease_seconds: f64,
    /// A series is complete, and analysed, once nothing of it has arrived for this long (seconds).
    #[arg(long, env = "PULMO_QUIET_SECONDS", default_value_t = 3.0)]
    pub quiet_seconds: f64,
    /// Largest accepted instance (a STOW-RS part or a C-STORE data set), in MiB.
    #[arg(long, default_value_t = 1024)]
    pub max_instance_mib: u64,
    /// Largest accepted STOW-RS request, in MiB.
    #[arg(long, default_value_t = 8192)]
    pub max_request_mib: u64,
    /// Uploads received at once; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 16)]
    pub max_uploads: usize,
    /// Keep at least this much free space (MiB) in the data directory; below it uploads
    /// are answered 503 with Retry-After.
    #[arg(long, default_value_t = 2048)]
    pub min_free_mib: u64,
    /// With this many jobs queued, uploads and analyze requests are answered 503 until
    /// the queue drains.
    #[arg(long, default_value_t = 200)]
    pub max_queued_jobs: u32,
    /// A request's headers must arrive within this many seconds of the connection
    /// opening (or of the last answer on a kept-alive connection), or it is closed.
    #[arg(long, default_value_t = 30)]
    pub header_timeout_secs: u64,
    /// An upload's body may pause this many seconds between reads before it is cut off
    /// (408).
    #[arg(long, default_value_t = 30)]
    pub body_idle_timeout_secs: u64,
    /// An upload slower than this many bytes per second on average (after the idle
    /// timeout's grace) is cut off (408).
    #[arg(long, default_value_t = 16384)]
    pub min_upload_rate: u64,
    /// Open connections from one client address; more are answered 503 and closed.
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_client: usize,
    /// Do not make key images (DICOM Secondary Capture) beside SR and SEG.
    #[arg(long)]
    pub no_key_images: bool,
    /// Days the received source instances of an analysed series are kept (for viewers)
    /// before they are purged; results and reports stay. 0 keeps them forever.
    #[arg(long, env = "PULMO_RETAIN_DAYS", default_value_t = 30.0)]
    pub retain_days: f64,
    /// Bearer tokens (TOML: `[[token]]` with name, sha256, roles, optional lane; make
    /// entries with `pulmo token`). Required unless listening on loopback only.
    #[arg(long, env = "PULMO_TOKENS")]
    pub tokens: Option<PathBuf>,
    /// A browser origin allowed to call the API (CORS), e.g. https://viewer.example.org;
    /// repeat for several.
    #[arg(long = "cors-origin")]
    pub cors_origins: Vec<String>,
    /// The OHIF viewer to serve at /viewer/ (the folder `scripts/setup/viewer.sh` fills).
    /// Without it, `viewer/ohif` in the current directory is served when it is there.
    #[arg(long, env = "PULMO_VIEWER_DIR")]
    pub viewer_dir: Option<PathBuf>,
    /// Hours a reader's browser stays signed in to the review page.
    #[arg(long, env = "PULMO_SESSION_HOURS", default_value_t = 8.0)]
    pub session_hours: f64,
    /// Trust this request header (e.g. X-Remote-User) to name an authenticated reader,
    /// with the `read` and `review` roles: only behind a reverse proxy that sets it itself
    /// and strips it from clients (see docs/service.md).
    #[arg(long, env = "PULMO_TRUSTED_USER_HEADER")]
    pub trusted_user_header: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key, serves HTTPS.
    #[arg(long, env = "PULMO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "PULMO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub dimse: DimseArgs,
    #[command(flatten)]
    pub push: PushArgs,
    #[command(flatten)]
    pub priors: PriorsArgs,
    #[command(flatten)]
    pub selection: super::SelectionArgs,
}

impl ServeArgs {
    fn service_config(&self) -> anyhow::Result<ServiceConfig> {
        anyhow::ensure!(
            self.quiet_seconds.is_finite() && self.quiet_seconds >= 0.0,
            "--quiet-seconds must be a number of seconds, not {}",
            self.quiet_seconds
        );
        anyhow::ensure!(
            self.retain_days.is_finite() && self.retain_days >= 0.0,
            "--retain-days must be a number of days, not {}",
            self.retain_days
        );
        anyhow::ensure!(
            self.lease_seconds.is_finite() && self.lease_seconds >= 0.3,
            "--lease-seconds must be at least 0.3 seconds, not {}",
            self.lease_seconds
        );
        let node = self.node.clone().unwrap_or_else(host_name);
        anyhow::ensure!(
            !node.is_empty()
                && node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "--node {node:?} must be letters, digits, '-', '_' or '.'"
        );
        Ok(ServiceConfig {
            store: self.store.as_deref().map(service::store::Location::parse),
            spool_dir: self.spool_dir.clone(),
            lease: service::store::Lease {
                node,
                ttl: Duration::from_secs_f64(self.lease_seconds),
            },
            quiet: Duration::from_secs_f64(self.quiet_seconds),
            retain: (self.retain_days > 0.0)
                .then(|| Duration::from_secs_f64(self.retain_days * 86_400.0)),
            jobs: self.engine.jobs(),
            results: Choice {
                sr: true,
                seg: true,
                images: false,
                capture: !self.no_key_images,
            },
            push: self.push.config(&self.dimse.ae_title)?,
            priors: self.priors.config()?,
            rules: self.selection.rules()?,
            ..ServiceConfig::new(&self.data)
        })
    }

    fn limits(&self) -> Limits {
        Limits {
            max_instance_bytes: self.max_instance_mib << 20,
            max_request_bytes: self.max_request_mib << 20,
            max_uploads: self.max_uploads.max(1),
            min_free_bytes: self.min_free_mib << 20,
            max_queued_jobs: self.max_queued_jobs.max(1),
            timeouts: http::Timeouts {
                header: Duration::from_secs(self.header_timeout_secs.max(1)),
                body_idle: Duration::from_secs(self.body_idle_timeout_secs.max(1)),
                min_body_rate: self.min_upload_rate,
            },
            max_connections_per_client: self.max_connections_per_client.max(1),
        }
    }

    /// How long a browser session lasts.
    fn session_lifetime(&self) -> anyhow::Result<std::time::Duration> {
        anyhow::ensure!(
            self.session_hours.is_finite()
                && self.session_hours > 0.0
                && self.session_hours <= 24.0 * 30.0,
            "--session-hours must be more than 0 and at most 720"
        );
        Ok(std::time::Duration::from_secs_f64(
            self.session_hours * 3600.0,
        ))
    }

    /// The trusted reverse proxy's user header, checked.
    fn proxy_header(&self) -> anyhow::Result<Option<axum::http::HeaderName>> {
        self.trusted_user_header
            .as_deref()
            .map(|name| {
                axum::http::HeaderName::try_from(name)
                    .with_context(|| format!("--trusted-user-header {name:?} is not a header name"))
            })
            .transpose()
    }

    /// The tokens, or none when listening on loopback only without a tokens file.
    fn tokens(&self) -> anyhow::Result<Option<Tokens>> {
        match &self.tokens {
            Some(path) => {
                let tokens = Tokens::load(path)?;
                anyhow::ensure!(!tokens.is_empty(), "{} holds no token", path.display());
                Ok(Some(tokens))
            }
            None if self.listen.ip().is_loopback() => {
                tracing::warn!("no --tokens: every request is accepted (loopback only)");
                Ok(None)
            }
            None => anyhow::bail!(
                "listening on {} needs --tokens: every endpoint but /healthz and /readyz requires a bearer token",
                self.listen
            ),
        }
    }

    /// The viewer named by --viewer-dir (which must be there), else the default folder's
    /// when it is installed.
    fn viewer(&self) -> anyhow::Result<Option<http::Viewer>> {
        match &self.viewer_dir {
            Some(dir) => http::Viewer::open(dir).map(Some),
            None => {
                let dir = Path::new(DEFAULT_VIEWER_DIR);
                if !dir.join("index.html").is_file() {
                    tracing::info!(
                        "no OHIF viewer in {DEFAULT_VIEWER_DIR} (scripts/setup/viewer.sh installs it): /viewer/ is not served"
                    );
                    return Ok(None);
                }
                http::Viewer::open(dir).map(Some)
            }
        }
    }

    fn app(&self, state: AppState) -> anyhow::Result<axum::Router> {
        let mut router = http::router(state);
        if let Some(viewer) = self.viewer()? {
            router = router.merge(Arc::new(viewer).routes());
        }
        if self.cors_origins.is_empty() {
            return Ok(router);
        }
        let origins = self
            .cors_origins
            .iter()
            .map(|o| {
                o.parse()
                    .with_context(|| format!("--cors-origin {o:?} is not a header value"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(router.layer(http::cors(&origins)))
    }

    async fn tls(&self) -> anyhow::Result<Option<RustlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        // One process-wide provider; a second call finds it installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = RustlsConfig::from_pem_file(cert, key)
            .await
            .with_context(|| {
                format!(
                    "could not load TLS certificate {} and key {}",
                    cert.display(),
                    key.display()
                )
            })?;
        Ok(Some(config))
    }
}

/// Runs the service until SIGINT or SIGTERM.
pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pulmo-http")
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.service_config()?;
    let tokens = args.tokens()?;
    let watermarks = dimse::Watermarks {
        min_free_bytes: args.min_free_mib << 20,
        max_queued_jobs: args.max_queued_jobs.max(1),
    };
    let dimse = args.dimse.settings(watermarks)?.map(|mut settings| {
        settings.config.max_instance_bytes = args.max_instance_mib << 20;
        settings
    });
    let tls = args.tls().await?;
    // One of several nodes: every metric says which.
    let shared = matches!(config.store, Some(service::store::Location::Postgres(_)));
    crate::metrics::install_for(shared.then_some(config.lease.node.as_str()));
    let data = config.data_dir.clone();
    let store = match &config.store {
        Some(service::store::Location::Postgres(url)) => service::store::redact(url),
        _ => data.display().to_string(),
    };
    let node = config.lease.node.clone();
    let service = tokio::task::spawn_blocking(move || Service::open(config))
        .await?
        .with_context(|| format!("could not open the data directory and store {store}"))?;
    tracing::info!(node, store, "store open");
    let service = Arc::new(service);
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Tests and supervisors read this line to learn the port.
    println!("pulmo listening on {scheme}://{address}");
    tracing::info!(%address, data = %data.display(), "listening");
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    let limits = args.limits();
    let state = AppState::new(service.clone(), limits, tokens)
        .with_https(tls.is_some())
        .with_sessions(args.session_lifetime()?, args.proxy_header()?);
    let app = args.app(state)?;
    let server = tokio::spawn(http::serve(listener, app, tls, limits, stop.clone()));
    let dimse = match dimse {
        Some(settings) => Some(listen_dimse(args, &service, settings, &stop).await?),
        None => None,
    };
    let analyzer_config = args.engine.analyzer_config();
    let analyzer =
        tokio::task::spawn_blocking(move || crate::analyzer::start(&analyzer_config)).await?;
    let analyzer = match analyzer {
        Ok(analyzer) => Arc::new(analyzer),
        Err(err) => {
            stop.cancel();
            return Err(err).context("could not load the model");
        }
    };
    let mut workers = service::start(service, analyzer, stop.clone());
    tracing::info!("ready");
    server.await?.context("the HTTP server failed")?;
    if let Some(dimse) = dimse {
        dimse.await?;
    }
    tracing::info!("no longer accepting requests; finishing running jobs");
    while let Some(done) = workers.join_next().await {
        done?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds the DIMSE listener, prints its address (after the HTTP one) and serves it.
async fn listen_dimse(
    args: &ServeArgs,
    service: &Arc<Service>,
    settings: dimse::Settings,
    stop: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let address = args
        .dimse
        .dimse_listen
        .expect("settings exist only with an address");
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("could not listen for DIMSE on {address}"))?;
    let bound = listener.local_addr()?;
    let ae_title = settings.config.policy.ae_title.clone();
    // Tests and supervisors read this line to learn the port.
    println!("pulmo DIMSE listening on {bound} as {ae_title}");
    tracing::info!(address = %bound, ae_title, "listening for DIMSE");
    Ok(tokio::spawn(dimse::serve(
        listener,
        service.clone(),
        settings,
        stop.clone(),
    )))
}

/// The host's name, or `pulmo` when it cannot be read.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "pulmo".to_owned())
}

async fn stop_on_signal(stop: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("stop requested");
    stop.cancel();
}

/// Arguments of `pulmo token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Who holds the token (the audit log names it), e.g. `pacs` or `viewer`.
    #[arg(long)]
    pub name: String,
    /// What it may do; repeat for both.
    #[arg(long = "role", value_enum, required = true)]
    pub roles: Vec<Role>,
    /// Default lane for this sender's uploads.
    #[arg(long, value_enum)]
    pub lane: Option<crate::service::Lane>,
}

/// Prints a new token and its tokens-file entry.
pub fn token(args: &TokenArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.name.is_empty() && !args.name.contains(['"', '\\', '\n']),
        "--name must be a plain name"
    );
    let token = http::auth::new_token();
    let roles: Vec<String> = args
        .roles
        .iter()
        .map(|r| format!("\"{}\"", r.as_str()))
        .collect();
    println!(
        "# token for {} (shown once; give it to the client):",
        args.name
    );
    println!("# {token}");
    println!("[[token]]");
    println!("name = \"{}\"", args.name);
    println!("sha256 = \"{}\"", http::auth::hash_token(&token));
    println!("roles = [{}]", roles.join(", "));
    if let Some(lane) = args.lane {
        println!("lane = \"{}\"", lane.as_str());
    }
    Ok(ExitCode::SUCCESS)
}
