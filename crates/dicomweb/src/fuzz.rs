//! The entry point of the STOW-RS fuzz target in `tests/fuzz`, which the tests also replay
//! over its corpus (`tests/integration/fuzz_corpus.rs`).
//!
//! It takes any bytes and must return: no panic, no abort, no hang, and no part read past
//! its limit. It calls the same [`boundary`] and [`Parts`] the server calls.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::stow::{boundary, Limits, Part, Parts, ReadError};

/// Small limits, so that inputs of a few kilobytes reach them.
const LIMITS: Limits = Limits {
    max_request_bytes: 16 << 10,
    max_instance_bytes: 4 << 10,
};

/// A STOW-RS request: the first line of `data` is its Content-Type, the rest its body,
/// which arrives in chunks of uneven sizes (so that boundaries fall across chunks).
/// Every part is read to its end, as the server reads it.
pub fn stow(data: &[u8]) {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(content_type) = std::str::from_utf8(head) else {
        return;
    };
    let Ok(boundary) = boundary(content_type) else {
        return;
    };
    let chunks = uneven_chunks(body).map(Ok::<_, std::convert::Infallible>);
    let parts = Parts::new(futures_util::stream::iter(chunks), boundary, LIMITS);
    let _ = block_on(read_all(parts));
}

/// `body` cut into chunks of 1 to 97 bytes, in a fixed sequence of sizes.
fn uneven_chunks(body: &[u8]) -> impl Iterator<Item = Bytes> {
    let mut rest = Bytes::copy_from_slice(body);
    let mut n = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        n += 1;
        let len = (1 + n * 37 % 97).min(rest.len());
        Some(rest.split_to(len))
    })
}

async fn read_all(mut parts: Parts) -> Result<(), ReadError> {
    while let Some(part) = parts.next().await? {
        let Part::Dicom(mut part) = part else {
            continue;
        };
        let mut len = 0;
        while let Some(chunk) = part.chunk().await? {
            len += chunk.len() as u64;
            assert!(
                len <= LIMITS.max_instance_bytes,
                "a part was read past its limit. This is a bug."
            );
        }
    }
    Ok(())
}

/// Runs `future` to its end on this thread. Everything it reads is already in memory,
/// so it never waits for long; a future that stays pending is a bug, and hangs the fuzzer.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}
