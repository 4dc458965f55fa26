//! Pushing results back: where they go (a DICOMweb STOW-RS destination, a Storage SCP by
//! C-STORE, a webhook), the retry policy, and what a push is. The durable queue of pushes is the index's `pushes`
//! table ([`crate::store::Pushes`]).
//!
//! Each finished job gets one push per configured destination, written in the same
//! transaction that files its results. A push is `pending` until the pusher claims it
//! (`sending`), then `done`, or `pending` again with a later `next_attempt_at`, or `dead`
//! once `max_attempts` are spent or the destination refused it for good. A newer job of
//! the same series cancels the older job's pushes that have not been sent yet.
//! This module knows the policy; the store keeps the rows; `pusher` does the sending.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a push goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The PACS: SR, SEG and key images in one STOW-RS request.
    Stow,
    /// A URL that receives the JSON report.
    Webhook,
    /// The PACS's Storage SCP: SR, SEG and key images by C-STORE over one association.
    Dimse,
}

impl Target {
    /// The target's name, as the API and logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Stow => "stow",
            Target::Webhook => "webhook",
            Target::Dimse => "dimse",
        }
    }

    pub(crate) fn parse(text: &str) -> Target {
        match text {
            "webhook" => Target::Webhook,
            "dimse" => Target::Dimse,
            _ => Target::Stow,
        }
    }
}

/// Where a push stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushState {
    /// Waiting for its (next) attempt.
    Pending,
    /// An attempt is under way.
    Sending,
    /// The destination took it.
    Done,
    /// Given up: attempts spent, or refused for good (`last_error` says why).
    Dead,
    /// A newer job of the same series replaced it before it was sent.
    Cancelled,
}

impl PushState {
    /// Every state, in the order counts list them.
    pub const ALL: [PushState; 5] = [
        PushState::Pending,
        PushState::Sending,
        PushState::Done,
        PushState::Dead,
        PushState::Cancelled,
    ];

    /// The state's name, as the API and metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PushState::Pending => "pending",
            PushState::Sending => "sending",
            PushState::Done => "done",
            PushState::Dead => "dead",
            PushState::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(text: &str) -> PushState {
        PushState::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .unwrap_or(PushState::Dead)
    }
}

/// How a request to a destination authenticates.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    /// HTTP basic authentication.
    Basic { user: String, password: String },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    /// Names the scheme, never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// One destination: a URL and how to authenticate to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// For STOW-RS, the DICOMweb base (`/studies` is appended); for a webhook, the URL.
    pub url: String,
    pub auth: Auth,
}

/// A Storage SCP that receives results by C-STORE, and the AE title pulmo calls it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimseDestination {
    pub destination: pulmo_dimse::scu::Destination,
    pub calling_ae_title: String,
}

/// Where results go and how hard pulmo tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// The PACS's DICOMweb base URL, for example `http://pacs:8042/dicom-web`.
    pub stow: Option<Destination>,
    /// A URL that receives each job's JSON report.
    pub webhook: Option<Destination>,
    /// The PACS's Storage SCP, for SR, SEG and key images by C-STORE.
    pub dimse: Option<DimseDestination>,
    /// Attempts per push before it is dead.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles with each further one.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub backoff_cap: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl Default for PushConfig {
    /// No destinations; 8 attempts, 5 s backoff doubling up to 10 min, 5 min per attempt.
    fn default() -> Self {
        PushConfig {
            stow: None,
            webhook: None,
            dimse: None,
            max_attempts: 8,
            backoff: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(600),
            timeout: Duration::from_secs(300),
        }
    }
}

impl PushConfig {
    /// The configured destinations' targets.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if self.stow.is_some() {
            targets.push(Target::Stow);
        }
        if self.webhook.is_some() {
            targets.push(Target::Webhook);
        }
        if self.dimse.is_some() {
            targets.push(Target::Dimse);
        }
        targets
    }

    /// The HTTP destination of `target`, when configured (none for C-STORE).
    pub fn destination(&self, target: Target) -> Option<&Destination> {
        match target {
            Target::Stow => self.stow.as_ref(),
            Target::Webhook => self.webhook.as_ref(),
            Target::Dimse => None,
        }
    }

    /// The wait before attempt `attempts + 1`, after `attempts` failed ones:
    /// `backoff * 2^(attempts - 1)`, at most `backoff_cap`.
    pub fn delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.backoff
            .saturating_mul(1 << doublings)
            .min(self.backoff_cap)
    }
}

/// One push, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Push {
    pub id: i64,
    pub job_id: i64,
    pub target: Target,
    pub state: PushState,
    /// Attempts made so far.
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due (seconds since the Unix epoch), while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<f64>,
    pub created_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
}

/// How pushes stand, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushCounts {
    /// Pushes in each state (every state listed, zeros included).
    pub by_state: Vec<(PushState, u64)>,
    /// Attempts beyond the first, over all pushes.
    pub retries: u64,
}

/// Why an attempt failed, as the pusher reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The error chain, stored as `last_error`.
    pub error: String,
    /// No retry can help (the destination refused the request itself).
    pub permanent: bool,
    /// The destination asked to wait this long (`Retry-After`).
    pub retry_after: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let config = PushConfig {
            backoff: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(10),
            ..PushConfig::default()
        };
        let waits: Vec<u64> = (1..=5).map(|n| config.delay(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 10, 10]);
        assert_eq!(config.delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let basic = Auth::Basic {
            user: "pulmo".into(),
            password: "hunter2".into(),
        };
        assert_eq!(format!("{basic:?}"), "Basic(pulmo, ***)");
        assert!(!format!("{:?}", Auth::Bearer("t0k3n".into())).contains("t0k3n"));
    }
}
