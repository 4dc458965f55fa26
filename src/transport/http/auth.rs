//! Bearer tokens with roles, and the guard every request passes: authentication,
//! authorisation, the audit log and request metrics.
//!
//! Tokens are configured as SHA-256 hashes in a TOML file (`pulmo token` makes one), so
//! the file reveals no token. `/healthz`, `/readyz`, signing in and the review page's own
//! files need none; sending studies needs the `send` role, deciding on findings and signing
//! a review the `review` role (which includes `read`), everything else `read`.
//!
//! A caller is known by, in this order: a bearer token; a browser session's cookie (made
//! by signing in with a token, see [`super::session`]); the authenticated-user header of a
//! trusted reverse proxy, when one is configured. A browser (session or proxy) must send
//! its session's CSRF token in `X-CSRF-Token` with every request that changes something.

use std::path::Path;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::service::Lane;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send studies (STOW-RS) and ask for analyses.
    Send,
    /// Read jobs, reports, results, metrics and the API description.
    Read,
    /// Review findings and sign reviews (a radiologist); includes `read`.
    Review,
}

impl Role {
    /// As the tokens file and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Send => "send",
            Role::Read => "read",
            Role::Review => "review",
        }
    }
}

/// Whether holding `roles` allows what needs `role`.
pub fn allows(roles: &[Role], role: Role) -> bool {
    roles.contains(&role) || (role == Role::Read && roles.contains(&Role::Review))
}

/// What can be wrong with the tokens file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not read the tokens file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the tokens file {path} is not valid")]
    Parse {
        path: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("token {name:?} in {path}: sha256 must be 64 hexadecimal digits")]
    Hash { path: String, name: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    roles: Vec<Role>,
    /// The lane this sender's uploads go to unless the request says otherwise.
    lane: Option<Lane>,
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Token>,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) caller: Caller,
    hash: [u8; 32],
    pub(crate) roles: Vec<Role>,
}

/// The caller name of a request refused for want of a valid token.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// Who made a request: the token's name (never the token), for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    /// The sender's default lane.
    pub lane: Option<Lane>,
}

impl Tokens {
    /// Reads a tokens file: `[[token]]` tables with `name`, `sha256`, `roles` and an
    /// optional `lane`.
    pub fn load(path: &Path) -> Result<Tokens, Error> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: shown.clone(),
            source,
        })?;
        let file: TokensFile = toml::from_str(&text).map_err(|source| Error::Parse {
            path: shown.clone(),
            source: Box::new(source),
        })?;
        let entries = file
            .tokens
            .into_iter()
            .map(|e| {
                let hash = parse_hash(&e.sha256).ok_or_else(|| Error::Hash {
                    path: shown.clone(),
                    name: e.name.clone(),
                })?;
                let caller = Caller {
                    name: e.name,
                    lane: e.lane,
                };
                Ok(Token {
                    caller,
                    hash,
                    roles: e.roles,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Tokens { entries })
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry whose hash matches `token`; every entry is compared in constant time.
    pub(crate) fn find(&self, token: &str) -> Option<&Token> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(entry);
            }
        }
        found
    }
}

/// The SHA-256 of a token, as the tokens file holds it.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A fresh random token (244 random bits).
pub fn new_token() -> String {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    format!("pulmo_{}{}", a.simple(), b.simple())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut hash = [0; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(hash)
}

/// The role a request needs, or `None` for the probes that need no token.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    match (method, path) {
        (_, "/healthz" | "/readyz") => None,
        // Signing in needs no token; a method the route lacks is answered 405 by it.
        (m, super::session::PATH) if m != Method::GET && m != Method::DELETE => None,
        (_, page) if page.starts_with("/review/") => None,
        (&Method::PUT, review) if review.ends_with("/review") => Some(Role::Review),
        (&Method::POST, sign) if sign.ends_with("/review/sign") => Some(Role::Review),
        (&Method::POST, _) => Some(Role::Send),
        _ => Some(Role::Read),
    }
}

/// The methods that change nothing, which need no CSRF token.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub(crate) fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks the caller, runs the request, then counts it and writes the audit record.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let path = request.uri().path().to_owned();
    let caller = match authorise(&state, &request) {
        Ok(caller) => caller,
        Err((refused, caller)) => {
            super::drain(request.into_body()).await;
            let response = refused.into_response();
            let status = response.status().as_u16();
            observe(&method, &route, status, started);
            // Refused attempts are audited too: who (or that nobody known) tried what.
            super::audit::record(&state, &caller, &method, &path, status, None);
            return response;
        }
    };
    if let Some(caller) = &caller {
        request.extensions_mut().insert(caller.clone());
    }
    let response = next.run(request).await;
    let status = response.status().as_u16();
    observe(&method, &route, status, started);
    if let Some(caller) = caller {
        let stored = response.extensions().get::<super::StoredStudies>().cloned();
        super::audit::record(&state, &caller, &method, &path, status, stored);
    }
    response
}

/// `Ok(None)`: no token needed; `Ok(Some(caller))`: a caller with the role; `Err`: the
/// refusal and whom to blame for it in the audit log.
fn authorise(state: &AppState, request: &Request) -> Result<Option<Caller>, (ApiError, Caller)> {
    let Some(role) = required_role(request.method(), request.uri().path()) else {
        return Ok(None);
    };
    let Some(tokens) = &state.tokens else {
        return Ok(Some(Caller {
            name: "anonymous".to_owned(),
            lane: None,
        }));
    };
    let unknown = Caller {
        name: UNAUTHENTICATED.to_owned(),
        lane: None,
    };
    let known = identify(state, tokens, request).ok_or((ApiError::Unauthorized, unknown))?;
    if !allows(&known.roles, role) {
        return Err((ApiError::Forbidden, known.caller));
    }
    if known.browser && !is_safe(request.method()) && !csrf_matches(state, request, &known) {
        return Err((ApiError::Csrf, known.caller));
    }
    Ok(Some(known.caller))
}

/// Who a request comes from, and what they may do.
pub(crate) struct Known {
    pub caller: Caller,
    pub roles: Vec<Role>,
    /// Known by a browser's cookie or a proxy's header rather than a bearer token: its
    /// changes need the CSRF token.
    pub browser: bool,
}

/// The caller, by bearer token, then session cookie, then trusted proxy header.
pub(crate) fn identify(state: &AppState, tokens: &Tokens, request: &Request) -> Option<Known> {
    if let Some(token) = bearer(request) {
        let token = tokens.find(token)?;
        return Some(Known {
            caller: token.caller.clone(),
            roles: token.roles.clone(),
            browser: false,
        });
    }
    if let Some(session) = state.sessions.of_request(request.headers()) {
        return Some(Known {
            caller: session.caller,
            roles: session.roles,
            browser: true,
        });
    }
    let user = state.sessions.proxy_user(request.headers())?;
    Some(Known {
        caller: Caller {
            name: user,
            lane: None,
        },
        roles: vec![Role::Read, Role::Review],
        browser: true,
    })
}

/// Whether the request's `X-CSRF-Token` is its session's (a proxy's user needs a session
/// too: the review page opens one with `GET /api/v1/session`).
fn csrf_matches(state: &AppState, request: &Request, known: &Known) -> bool {
    let Some(session) = state.sessions.of_request(request.headers()) else {
        return false;
    };
    let sent = request
        .headers()
        .get(super::session::CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    session.caller.name == known.caller.name && bool::from(session.csrf.as_bytes().ct_eq(sent))
}

fn observe(method: &Method, route: &str, status: u16, started: Instant) {
    crate::metrics::http_request(
        method.as_str(),
        route,
        status,
        started.elapsed().as_secs_f64(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_only_its_own_hash() {
        let token = new_token();
        let text = format!(
            "[[token]]\nname = \"pacs\"\nsha256 = \"{}\"\nroles = [\"send\"]\nlane = \"stat\"\n",
            hash_token(&token)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, text).unwrap();
        let tokens = Tokens::load(&path).unwrap();
        let found = tokens.find(&token).unwrap();
        assert_eq!(found.caller.name, "pacs");
        assert_eq!(found.caller.lane, Some(Lane::Stat));
        assert_eq!(found.roles, [Role::Send]);
        assert!(tokens.find("pulmo_wrong").is_none());
        assert!(tokens.find(&token[..token.len() - 1]).is_none());
    }

    #[test]
    fn a_bad_hash_is_named_with_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            "[[token]]\nname = \"viewer\"\nsha256 = \"abc\"\nroles = [\"read\"]\n",
        )
        .unwrap();
        let err = Tokens::load(&path).unwrap_err().to_string();
        assert!(err.contains("viewer"), "{err}");
    }

    #[test]
    fn probes_need_no_token_and_posts_need_send() {
        assert_eq!(required_role(&Method::GET, "/healthz"), None);
        assert_eq!(required_role(&Method::GET, "/readyz"), None);
        assert_eq!(
            required_role(&Method::POST, "/dicomweb/studies"),
            Some(Role::Send)
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/studies/1.2/analyze"),
            Some(Role::Send)
        );
        assert_eq!(required_role(&Method::GET, "/metrics"), Some(Role::Read));
        assert_eq!(
            required_role(&Method::GET, "/api/v1/studies/1.2/report"),
            Some(Role::Read)
        );
    }

    #[test]
    fn reviewing_needs_review_which_includes_read() {
        let put = required_role(&Method::PUT, "/api/v1/studies/1.2/findings/1/review");
        assert_eq!(put, Some(Role::Review));
        let sign = required_role(&Method::POST, "/api/v1/studies/1.2/review/sign");
        assert_eq!(sign, Some(Role::Review));
        assert_eq!(required_role(&Method::GET, "/review/1.2"), None);
        assert_eq!(required_role(&Method::POST, "/api/v1/session"), None);
        assert_eq!(
            required_role(&Method::DELETE, "/api/v1/session"),
            Some(Role::Read)
        );
        assert!(allows(&[Role::Review], Role::Read));
        assert!(!allows(&[Role::Read], Role::Review));
        assert!(!allows(&[Role::Review], Role::Send));
    }
}
