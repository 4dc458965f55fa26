//! Where C-STORE instances go: the same spool and index as STOW-RS parts. Each instance is
//! written to `tmp/`, synced, then admitted by the service off the async workers; only an
//! admitted instance is answered Success.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use pulmo_dimse::command::status;
use pulmo_dimse::{Received, Status, Storage};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use super::Settings;
use crate::service::{Lane, Service};

/// The spool, seen from one association: it remembers the studies it stored, for the
/// association's audit record.
pub struct Spool {
    service: Arc<Service>,
    settings: Arc<Settings>,
    studies: Mutex<BTreeSet<String>>,
}

impl Spool {
    pub fn new(service: Arc<Service>, settings: Arc<Settings>) -> Spool {
        Spool {
            service,
            settings,
            studies: Mutex::new(BTreeSet::new()),
        }
    }

    /// The studies of the instances stored so far.
    pub fn studies(&self) -> Vec<String> {
        let studies = self.studies.lock().unwrap_or_else(|e| e.into_inner());
        studies.iter().cloned().collect()
    }
}

/// One instance being written to `tmp/`.
pub struct Part {
    file: BufWriter<tokio::fs::File>,
    path: PathBuf,
}

impl AsyncWrite for Part {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl Storage for Spool {
    type Sink = Part;

    async fn room(&self) -> Result<(), Status> {
        let watermarks = self.settings.watermarks;
        let room = crate::transport::room(
            &self.service,
            watermarks.min_free_bytes,
            watermarks.max_queued_jobs,
        )
        .await;
        match room {
            Ok(Ok(())) => Ok(()),
            Ok(Err(full)) => Err(Status::failure(status::OUT_OF_RESOURCES, full.reason())),
            Err(err) => {
                tracing::error!(error = %crate::pipeline::error_chain(&err), "could not look at the queue");
                Err(Status::failure(
                    status::OUT_OF_RESOURCES,
                    "the index failed",
                ))
            }
        }
    }

    async fn open(&self) -> std::io::Result<Part> {
        let path = self.service.temporary_path();
        let file = tokio::fs::File::create(&path).await?;
        Ok(Part {
            file: BufWriter::with_capacity(256 << 10, file),
            path,
        })
    }

    async fn store(&self, mut part: Part, instance: Received<'_>) -> Status {
        let synced = async {
            part.file.flush().await?;
            part.file.get_ref().sync_all().await
        };
        if let Err(err) = synced.await {
            tracing::error!(error = %err, "could not write a received instance");
            self.discard(part).await;
            return Status::failure(
                status::OUT_OF_RESOURCES,
                "pulmo could not write the instance",
            );
        }
        drop(part.file);
        let lane = lane(instance.peer);
        let name = format!("C-STORE {}", instance.sop_instance_uid);
        let service = self.service.clone();
        let tmp = part.path;
        let admitted =
            tokio::task::spawn_blocking(move || service.admit(&tmp, &name, None, lane)).await;
        match admitted {
            Ok(Ok(accepted)) => {
                crate::metrics::instance_stored(accepted.new, accepted.bytes);
                let mut studies = self.studies.lock().unwrap_or_else(|e| e.into_inner());
                studies.insert(accepted.study_instance_uid);
                Status::success()
            }
            Ok(Err(refused)) => {
                crate::metrics::failure("receive", refused.refusal.label());
                tracing::info!(
                    sop_instance = instance.sop_instance_uid,
                    calling_ae = %instance.peer.ae_title,
                    code = refused.refusal.code(),
                    reason = %refused.reason,
                    "instance refused"
                );
                Status::failure(refused.refusal.code(), refused.reason)
            }
            Err(err) => {
                tracing::error!(error = %err, "admitting an instance panicked");
                Status::failure(
                    status::PROCESSING_FAILURE,
                    "pulmo failed to store the instance",
                )
            }
        }
    }

    async fn discard(&self, part: Part) {
        drop(part.file);
        let _ = tokio::fs::remove_file(&part.path).await;
    }
}

/// The lane of a peer's studies: its peers-file lane, else `routine`.
pub fn lane(peer: &pulmo_dimse::Peer) -> Lane {
    peer.lane
        .as_deref()
        .and_then(|lane| lane.parse().ok())
        .unwrap_or_default()
}
