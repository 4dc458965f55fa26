//! Writing the audit record of a request: the caller's name, the action (method and
//! route), the studies it touched and the answer's status. Written by the service in the
//! background; a failure to write is logged, never answered.
//!
//! What a stranger can make it write is bounded: an action is at most [`MAX_ACTION`]
//! characters, and requests refused for want of a valid token are recorded at most
//! [`Throttle`]'s rate; the rest are counted, and the count is recorded with the next one.

use std::sync::Mutex;
use std::time::Instant;

use axum::http::Method;

use super::auth::Caller;
use super::AppState;

/// The studies a STOW-RS request stored, which its path does not name.
#[derive(Debug, Clone, Default)]
pub struct StoredStudies(pub Vec<String>);

/// The longest action recorded, the count of skipped records included; a longer path is
/// cut (and marked with `…`).
pub const MAX_ACTION: usize = 160;

/// Records one answered request. `throttled` requests (refused before any token was
/// recognised) go through `throttle`.
pub fn record(
    state: &AppState,
    caller: &Caller,
    method: &Method,
    path: &str,
    status: u16,
    stored: Option<StoredStudies>,
) {
    let mut studies = stored.map(|s| s.0).unwrap_or_default();
    if let Some(study) = study_in(path) {
        if !studies.iter().any(|s| s == study) {
            studies.push(study.to_owned());
        }
    }
    let mut note = String::new();
    if caller.name == super::auth::UNAUTHENTICATED {
        match state.audit_throttle.admit(Instant::now()) {
            None => {
                crate::metrics::failure("audit", "throttled");
                return;
            }
            Some(0) => {}
            Some(skipped) => {
                note = format!(" (and {skipped} unauthenticated requests not recorded)")
            }
        }
    }
    let room = MAX_ACTION.saturating_sub(note.chars().count());
    let action = truncated(&format!("{method} {}", action_of(path)), room) + &note;
    tracing::info!(target: "pulmo::audit", caller = %caller.name, %action, studies = ?studies, status, "audit");
    let service = state.service.clone();
    let name = caller.name.clone();
    tokio::spawn(async move {
        if let Err(err) = service.audit(&name, &action, studies, status).await {
            tracing::error!(error = %crate::pipeline::error_chain(&err), "could not write an audit record");
        }
    });
}

/// `action` cut to `room` characters (and `…`).
fn truncated(action: &str, room: usize) -> String {
    match action.char_indices().nth(room) {
        None => action.to_owned(),
        Some((at, _)) => format!("{}…", &action[..at]),
    }
}

/// A token bucket: `burst` records at once, refilled at `per_second`.
#[derive(Debug)]
pub struct Throttle {
    per_second: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
    skipped: u64,
}

impl Throttle {
    pub fn new(per_second: f64, burst: f64) -> Throttle {
        Throttle {
            per_second,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                at: None,
                skipped: 0,
            }),
        }
    }

    /// `Some(skipped)`: record this one, and say how many were skipped since the last;
    /// `None`: skip it.
    pub(crate) fn admit(&self, now: Instant) -> Option<u64> {
        let mut bucket = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = bucket.at.map_or(0.0, |at| (now - at).as_secs_f64());
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = Some(now);
        if bucket.tokens < 1.0 {
            bucket.skipped += 1;
            return None;
        }
        bucket.tokens -= 1.0;
        Some(std::mem::take(&mut bucket.skipped))
    }
}

impl Default for Throttle {
    /// 5 records a second, 50 at once.
    fn default() -> Throttle {
        Throttle::new(5.0, 50.0)
    }
}

/// The Study Instance UID in a `/dicomweb/studies/{study}/...` or
/// `/api/v1/studies/{study}/...` path.
fn study_in(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/dicomweb/studies/")
        .or_else(|| path.strip_prefix("/api/v1/studies/"))?;
    let study = rest.split('/').next()?;
    crate::service::is_uid(study).then_some(study)
}

/// The path with UIDs and ids replaced by placeholders, so actions group.
fn action_of(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .map(|p| {
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                "{uid}"
            } else {
                p
            }
        })
        .collect();
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_study_is_read_from_the_path() {
        assert_eq!(study_in("/api/v1/studies/1.2.3/report"), Some("1.2.3"));
        assert_eq!(study_in("/dicomweb/studies/1.2.3"), Some("1.2.3"));
        assert_eq!(study_in("/dicomweb/studies"), None);
        assert_eq!(study_in("/api/v1/studies/../x"), None);
        assert_eq!(
            action_of("/api/v1/studies/1.2.3/report"),
            "/api/v1/studies/{uid}/report"
        );
    }

    #[test]
    fn long_actions_are_cut() {
        let long = format!("GET /api/v1/studies/{}/report", "a".repeat(60_000));
        let cut = truncated(&long, MAX_ACTION);
        assert_eq!(cut.chars().count(), MAX_ACTION + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(truncated("GET /info", MAX_ACTION), "GET /info");
    }

    #[test]
    fn the_throttle_lets_a_burst_through_then_counts_what_it_skips() {
        let throttle = Throttle::new(1.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(throttle.admit(t0), Some(0));
        }
        assert_eq!(throttle.admit(t0), None);
        assert_eq!(throttle.admit(t0), None);
        let later = t0 + std::time::Duration::from_millis(1500);
        assert_eq!(throttle.admit(later), Some(2));
        assert_eq!(throttle.admit(later), None);
    }
}
