//! The DIMSE transport: a Storage and Verification SCP inside `pulmo serve`. Each accepted
//! connection runs one association (`pulmo_dimse::scp::serve`) on a tokio task; its
//! instances go to the service's spool exactly as STOW-RS parts do ([`storage`]), and
//! each association leaves one audit record (peer AE title and address, what it stored,
//! the studies, how it ended) and one log line.
//!
//! Rejected associations are recorded at most 5 a second (bursts of 50), as HTTP requests
//! without a token are: a stranger cannot grow the audit table or the log without bound.
//!
//! At most `max_associations` run at once. One more is still read, and rejected
//! (transient, "local limit exceeded") within the ARTIM timeout; beyond as many again,
//! connections are closed unread.

mod storage;

use std::net::SocketAddr;
use std::sync::Arc;

use pulmo_dimse::{Config, Ended, Outcome, Peer};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::service::Service;
use crate::transport::http::Throttle;
use storage::Spool;

pub use storage::lane;

/// The STOW-RS watermarks, which C-STORE shares: below them, stores are refused (0xA700).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub min_free_bytes: u64,
    pub max_queued_jobs: u32,
}

/// How the DIMSE listener runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub watermarks: Watermarks,
}

/// Serves associations on `listener` until `stop`, then lets the running ones finish for
/// up to [`STOP_GRACE`] and cuts off the rest.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    settings: Settings,
    stop: CancellationToken,
) {
    let settings = Arc::new(settings);
    let throttle = Arc::new(Throttle::default());
    let limit = settings.config.max_associations.max(1);
    let (slots, rejections) = (
        Arc::new(Semaphore::new(limit)),
        Arc::new(Semaphore::new(limit)),
    );
    let mut running = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while running.try_join_next().is_some() {}
        let (stream, address) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, usually: wait instead of spinning.
                tracing::warn!(error = %err, "could not accept a DIMSE connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (permit, busy) = match slots.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => match rejections.clone().try_acquire_owned() {
                Ok(permit) => (permit, true),
                Err(_) => continue,
            },
        };
        let (service, settings, throttle) = (service.clone(), settings.clone(), throttle.clone());
        running.spawn(async move {
            let outcome = association(stream, address, &service, settings, busy).await;
            drop(permit);
            let Some(skipped) = admitted(&outcome, &throttle) else {
                return;
            };
            record(&service, address, &outcome.0, outcome.1, skipped).await;
        });
    }
    tracing::info!(
        associations = running.len(),
        "no longer accepting DIMSE associations"
    );
    let finished = tokio::time::timeout(STOP_GRACE, async {
        while running.join_next().await.is_some() {}
    });
    if finished.await.is_err() {
        // What they had acknowledged is stored; the rest their senders will send again.
        tracing::warn!(
            associations = running.len(),
            "aborting DIMSE associations still open"
        );
        running.abort_all();
    }
}

/// How long running associations may go on after a stop before they are cut off.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs one association; returns how it went and the studies it stored.
async fn association(
    stream: tokio::net::TcpStream,
    address: SocketAddr,
    service: &Arc<Service>,
    settings: Arc<Settings>,
    busy: bool,
) -> (Outcome, Vec<String>) {
    let started = std::time::Instant::now();
    let spool = Spool::new(service.clone(), settings.clone());
    let outcome = pulmo_dimse::scp::serve(stream, address, &settings.config, &spool, busy).await;
    crate::metrics::stage("dimse_association", started.elapsed().as_secs_f64());
    (outcome, spool.studies())
}

/// Whether to record an association: `Some(rejections skipped since the last one)`, or
/// `None` for a rejection beyond the throttle's rate.
fn admitted(outcome: &(Outcome, Vec<String>), throttle: &Throttle) -> Option<u64> {
    if !matches!(outcome.0.ended, Ended::Rejected(_)) {
        return Some(0);
    }
    let admitted = throttle.admit(std::time::Instant::now());
    if admitted.is_none() {
        crate::metrics::failure("audit", "throttled");
    }
    admitted
}

/// Logs the association and appends its audit record. A connection that never sent an
/// association request (a port scan) is logged only.
async fn record(
    service: &Service,
    address: SocketAddr,
    outcome: &Outcome,
    studies: Vec<String>,
    skipped: u64,
) {
    let calling = outcome.calling_ae_title.as_deref().unwrap_or("-");
    let called = outcome.called_ae_title.as_deref().unwrap_or("-");
    let ended = ended(&outcome.ended);
    tracing::info!(
        calling_ae = calling,
        called_ae = called,
        peer = %address,
        echoes = outcome.echoes,
        stored = outcome.stored,
        refused = outcome.refused,
        studies = ?studies,
        ended = %ended,
        lane = outcome.peer.as_ref().map(|p| lane(p).as_str()),
        "DIMSE association"
    );
    if outcome.calling_ae_title.is_none() {
        return;
    }
    let caller = format!("dimse:{calling}@{}", address.ip());
    let mut action = format!(
        "DIMSE association to {called}: {} stored, {} refused, {} echoes; {ended}",
        outcome.stored, outcome.refused, outcome.echoes
    );
    if skipped > 0 {
        action += &format!(" (and {skipped} rejected associations not recorded)");
    }
    let action: String = action.chars().take(160).collect();
    let status = match outcome.ended {
        Ended::Rejected(_) => 403,
        _ if outcome.refused > 0 => 409,
        _ => 200,
    };
    if let Err(err) = service.audit(&caller, &action, studies, status).await {
        tracing::error!(error = %crate::pipeline::error_chain(&err), "could not write an audit record");
    }
}

/// How an association ended, in words.
fn ended(ended: &Ended) -> String {
    match ended {
        Ended::Released => "released".to_owned(),
        Ended::Aborted => "aborted by the peer".to_owned(),
        Ended::Closed => "closed without release".to_owned(),
        Ended::Rejected(why) => format!("rejected: {}", why.reason()),
        Ended::TimedOut => "timed out".to_owned(),
        Ended::Protocol(what) => format!("aborted: {what}"),
    }
}

/// Checks the peers' lanes once, at start-up.
pub fn check_lanes<'a>(peers: impl IntoIterator<Item = &'a Peer>) -> anyhow::Result<()> {
    for peer in peers {
        if let Some(text) = &peer.lane {
            text.parse::<crate::service::Lane>()
                .map_err(|err| anyhow::anyhow!("peer {:?}: {err}", peer.ae_title))?;
        }
    }
    Ok(())
}
