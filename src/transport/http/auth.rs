//! Bearer tokens with roles, and the guard every request passes: authentication,
//! authorisation, the audit log and request metrics.
//!
//! Tokens are configured as SHA-256 hashes in a TOML file (`pulmo token` makes one), so
//! the file reveals no token. `/healthz` and `/readyz` need none; sending studies needs
//! the `send` role, everything else `read`.

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
struct Token {
    caller: Caller,
    hash: [u8; 32],
    roles: Vec<Role>,
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
    fn find(&self, token: &str) -> Option<&Token> {
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
        (&Method::POST, _) => Some(Role::Send),
        _ => Some(Role::Read),
    }
}

fn bearer(request: &Request) -> Option<&str> {
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

/// `Ok(None)`: no token needed; `Ok(Some(caller))`: a token with the role; `Err`: the
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
    let token = bearer(request)
        .and_then(|t| tokens.find(t))
        .ok_or((ApiError::Unauthorized, unknown))?;
    if !token.roles.contains(&role) {
        return Err((ApiError::Forbidden, token.caller.clone()));
    }
    Ok(Some(token.caller.clone()))
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
}
