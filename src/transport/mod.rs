//! How the world reaches the pipeline: the command line, HTTP (DICOMweb and pulmo's API)
//! and DIMSE (C-STORE and C-ECHO) through the service core. Transports turn their protocol
//! into pipeline or service calls and nothing more.

pub mod cli;
pub mod dimse;
pub mod http;

use crate::service::{self, Service};

/// Why new instances are refused: a watermark that STOW-RS and C-STORE share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The data directory has less free space than kept (`free` bytes left).
    Disk { free: u64 },
    /// The analysis queue holds its maximum of jobs.
    Queue,
}

impl Full {
    /// The refusal in words, for answers and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Full::Disk { .. } => "the server is short of disk space",
            Full::Queue => "the analysis queue is full",
        }
    }
}

/// Whether new instances may come in: at least `min_free_bytes` free in the data
/// directory and fewer than `max_queued_jobs` jobs waiting. Counts and logs a refusal.
pub async fn room(
    service: &std::sync::Arc<Service>,
    min_free_bytes: u64,
    max_queued_jobs: u32,
) -> Result<Result<(), Full>, service::Error> {
    let dir = service.config().shared_dir().to_owned();
    let free = tokio::task::spawn_blocking(move || fs4::available_space(&dir).unwrap_or(u64::MAX))
        .await
        .map_err(service::Error::Panicked)?;
    if free < min_free_bytes {
        crate::metrics::failure("receive", "disk");
        tracing::warn!(
            free,
            "refusing instances: the data directory is nearly full"
        );
        return Ok(Err(Full::Disk { free }));
    }
    if service.queued_jobs().await? >= max_queued_jobs {
        crate::metrics::failure("receive", "queue");
        return Ok(Err(Full::Queue));
    }
    Ok(Ok(()))
}
