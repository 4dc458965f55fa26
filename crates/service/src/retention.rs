//! Retention: the received source instances of analysed series are kept for a while (a
//! viewer shows them beside the results), then purged. Results and reports stay.
//!
//! A series is purged when its newest job ended `done` or `skipped`, nothing of it is
//! queued, running or waiting for its quiet time, and its last instance arrived longer
//! ago than the retention time. The check, the forgetting and the audit record (caller
//! `retention`) are one transaction; the files go after it. An instance of the series
//! re-sent in the moment between that transaction and the removal of its file (same SOP
//! Instance UID, so the same spool path) would lose its file: a month-old series re-sent
//! at that instant; its new job then fails and a re-send repairs it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{now, store, Service};
use pulmo_core::pipeline::error_chain;

/// The caller name of purges in the audit log.
pub const CALLER: &str = "retention";

/// Purges what is due every quarter of `retain` (at most hourly, at least every 200 ms)
/// until `stop` fires.
pub(super) async fn run(service: Arc<Service>, retain: Duration, stop: CancellationToken) {
    let period = (retain / 4).clamp(Duration::from_millis(200), Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let service = service.clone();
        let before = now() - retain.as_secs_f64();
        let done = tokio::task::spawn_blocking(move || purge(&service, before)).await;
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::error!(error = %error_chain(&err), "could not purge"),
            Err(err) => tracing::error!(error = %err, "the purge panicked"),
        }
    }
}

/// Purges every series that is due (last instance received before `before`); returns
/// how many instances went.
pub fn purge(service: &Service, before: f64) -> store::Result<usize> {
    let mut purged = 0;
    for (study, series) in service.store.instances().purgeable(before)? {
        let paths = service.store.instances().purge(&series, before, CALLER)?;
        if paths.is_empty() {
            continue;
        }
        for path in &paths {
            if let Err(err) = std::fs::remove_file(path) {
                tracing::warn!(error = %err, %series, "could not remove a purged instance's file");
            }
        }
        if let Some(dir) = paths[0].parent() {
            let _ = std::fs::remove_dir(dir);
        }
        tracing::info!(%study, %series, instances = paths.len(), "purged the source instances of an analysed series");
        purged += paths.len();
    }
    Ok(purged)
}
