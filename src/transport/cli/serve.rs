//! `pulmo serve`: the DICOMweb service a PACS forwards studies to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::push::PushArgs;
use super::EngineArgs;
use crate::pipeline::{results::Choice, Analyzer};
use crate::service::{self, Service, ServiceConfig};
use crate::transport::http::{self, AppState, Limits};

/// Arguments of `pulmo serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "PULMO_LISTEN", default_value = "127.0.0.1:8042")]
    pub listen: SocketAddr,
    /// Data directory: the spool of received instances, results and the index.
    #[arg(long, env = "PULMO_DATA", default_value = "pulmo-data")]
    pub data: PathBuf,
    /// A series is complete, and analysed, once nothing of it has arrived for this long (seconds).
    #[arg(long, env = "PULMO_QUIET_SECONDS", default_value_t = 3.0)]
    pub quiet_seconds: f64,
    /// Largest accepted instance, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub max_instance_mib: u64,
    /// Largest accepted STOW-RS request, in MiB.
    #[arg(long, default_value_t = 8192)]
    pub max_request_mib: u64,
    /// Uploads received at once; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 16)]
    pub max_uploads: usize,
    /// Do not make key images (DICOM Secondary Capture) beside SR and SEG.
    #[arg(long)]
    pub no_key_images: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub push: PushArgs,
}

impl ServeArgs {
    fn service_config(&self) -> anyhow::Result<ServiceConfig> {
        anyhow::ensure!(
            self.quiet_seconds.is_finite() && self.quiet_seconds >= 0.0,
            "--quiet-seconds must be a number of seconds, not {}",
            self.quiet_seconds
        );
        Ok(ServiceConfig {
            quiet: Duration::from_secs_f64(self.quiet_seconds),
            jobs: self.engine.jobs(),
            results: Choice {
                sr: true,
                seg: true,
                images: false,
                capture: !self.no_key_images,
            },
            push: self.push.config()?,
            ..ServiceConfig::new(&self.data)
        })
    }

    fn limits(&self) -> Limits {
        Limits {
            max_instance_bytes: self.max_instance_mib << 20,
            max_request_bytes: self.max_request_mib << 20,
            max_uploads: self.max_uploads.max(1),
        }
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
    let data = config.data_dir.clone();
    let service = tokio::task::spawn_blocking(move || Service::open(config))
        .await?
        .with_context(|| format!("could not open the data directory {}", data.display()))?;
    let service = Arc::new(service);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    // Tests and supervisors read this line to learn the port.
    println!("pulmo listening on http://{address}");
    tracing::info!(%address, data = %data.display(), "listening");
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    let state = AppState::new(service.clone(), args.limits());
    let server = tokio::spawn(http::serve(listener, state, stop.clone()));
    let analyzer_config = args.engine.analyzer_config();
    let analyzer = tokio::task::spawn_blocking(move || Analyzer::start(&analyzer_config)).await?;
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
    tracing::info!("no longer accepting requests; finishing running jobs");
    while let Some(done) = workers.join_next().await {
        done?;
    }
    tracing::info!("stopped");
    Ok(())
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
