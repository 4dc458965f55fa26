//! Connections per client: an acceptor that counts the open connections of each peer
//! address and turns away one more than the limit, so that one client (a runaway sender,
//! or someone opening connections and never speaking) cannot take every socket.
//!
//! A plain-HTTP connection over the limit is answered `503` with `Retry-After` before it
//! is closed; under TLS it is closed before the handshake (there is no one to answer yet).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// What a turned-away plain-HTTP client reads.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 5\r\n\
connection: close\r\n\
content-length: 56\r\n\r\n\
{\"error\":\"too many connections from this client; retry\"}";

/// Open connections by peer address.
#[derive(Debug)]
pub struct Connections {
    per_client: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Connections {
    pub fn new(per_client: usize) -> Arc<Connections> {
        Arc::new(Connections {
            per_client: per_client.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more connection from `peer`, or `None` when it already has the limit.
    fn open(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(peer).or_insert(0);
        if *count >= self.per_client {
            return None;
        }
        *count += 1;
        Some(Slot {
            connections: self.clone(),
            peer,
        })
    }

    /// How many connections `peer` has open.
    pub fn of(&self, peer: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&peer).copied().unwrap_or(0)
    }
}

/// One counted connection; dropping it (the connection closed) frees its place.
#[derive(Debug)]
struct Slot {
    connections: Arc<Connections>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// A TCP stream that holds its place among its client's connections.
#[derive(Debug)]
pub struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The acceptor: counts each accepted connection against its client's limit.
#[derive(Debug, Clone)]
pub struct LimitAcceptor {
    connections: Arc<Connections>,
    /// Answer 503 before closing (plain HTTP only).
    answer: bool,
}

impl LimitAcceptor {
    pub fn new(connections: Arc<Connections>, answer: bool) -> LimitAcceptor {
        LimitAcceptor {
            connections,
            answer,
        }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for LimitAcceptor {
    type Stream = Counted;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Counted, S)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let connections = self.connections.clone();
        let answer = self.answer;
        Box::pin(async move {
            let peer = stream.peer_addr()?.ip();
            match connections.open(peer) {
                Some(slot) => Ok((
                    Counted {
                        stream,
                        _slot: slot,
                    },
                    service,
                )),
                None => {
                    crate::metrics::failure("connect", "per_client");
                    if answer {
                        turn_away(stream).await;
                    }
                    Err(io::Error::other("too many connections from one client"))
                }
            }
        })
    }
}

/// Writes the 503 answer (for at most a second) and closes.
async fn turn_away(mut stream: TcpStream) {
    let write = async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_limit_and_its_place_back() {
        let connections = Connections::new(2);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let a = connections.open(peer).unwrap();
        let _b = connections.open(peer).unwrap();
        assert!(connections.open(peer).is_none());
        assert!(connections.open(other).is_some());
        drop(a);
        assert_eq!(connections.of(peer), 1);
        assert!(connections.open(peer).is_some());
    }

    #[test]
    fn the_busy_answer_is_a_whole_http_response() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
