//! Browser sessions: a reader signs in once with a token of the `review` role and gets a
//! cookie (HttpOnly, SameSite=Strict, Secure under TLS, expiring), or is signed in by a
//! trusted reverse proxy's authenticated-user header. Every request of a browser that
//! changes something must carry the session's CSRF token in `X-CSRF-Token`; a page of
//! another site can make the browser send the cookie, but cannot read the token.
//!
//! Sessions live in memory: a restart signs every browser out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::auth::{self, Caller, Role};
use super::error::ErrorBody;
use super::{ApiError, AppState};

/// Where a browser signs in (`POST`), learns its session (`GET`) and signs out (`DELETE`).
pub const PATH: &str = "/api/v1/session";
/// The session cookie's name.
pub const COOKIE: &str = "pulmo_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The most sessions held at once; the oldest go first.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub roles: Vec<Role>,
    pub csrf: String,
    expires: Instant,
}

/// The open sessions, keyed by the SHA-256 of their cookie (a lookup leaks no cookie).
#[derive(Debug)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
    lifetime: Duration,
    /// The reverse proxy's authenticated-user header, when it is trusted.
    proxy_header: Option<HeaderName>,
}

impl Sessions {
    /// Sessions that last `lifetime`; the user named in `proxy_header` is trusted.
    pub fn new(lifetime: Duration, proxy_header: Option<HeaderName>) -> Sessions {
        Sessions {
            open: Mutex::new(HashMap::new()),
            lifetime,
            proxy_header,
        }
    }

    /// Opens a session; returns its cookie value and the session.
    pub fn open(&self, caller: Caller, roles: Vec<Role>) -> (String, Session) {
        let id = auth::new_token();
        let session = Session {
            caller,
            roles,
            csrf: auth::new_token(),
            expires: Instant::now() + self.lifetime,
        };
        let mut open = self.lock();
        let now = Instant::now();
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                open.remove(&oldest);
            }
        }
        open.insert(key(&id), session.clone());
        (id, session)
    }

    /// The unexpired session whose cookie the request carries.
    pub fn of_request(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers)?;
        let open = self.lock();
        let session = open.get(&key(id))?;
        (session.expires > Instant::now()).then(|| session.clone())
    }

    /// Ends the session whose cookie the request carries.
    pub fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            self.lock().remove(&key(id));
        }
    }

    /// The user a trusted proxy names, when one is configured and the header is there.
    pub fn proxy_user(&self, headers: &HeaderMap) -> Option<String> {
        let value = headers
            .get(self.proxy_header.as_ref()?)?
            .to_str()
            .ok()?
            .trim();
        (!value.is_empty() && value.len() <= 128).then(|| value.to_owned())
    }

    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The session cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// The `Set-Cookie` value for a session, or one that deletes it (`max_age` zero).
fn set_cookie(value: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&text).expect("a session cookie is ASCII. This is a bug.")
}

/// Signing in.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// A bearer token with the `review` role.
    pub token: String,
}

/// A browser's session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// The reader: the token's name, or the proxy's user.
    pub reader: String,
    pub roles: Vec<String>,
    /// Send it as `X-CSRF-Token` with every request that changes something.
    pub csrf_token: Option<String>,
    /// Seconds until the session ends.
    pub expires_in: Option<u64>,
}

fn info(session: &Session, sessions: &Sessions) -> SessionInfo {
    SessionInfo {
        reader: session.caller.name.clone(),
        roles: session
            .roles
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        csrf_token: Some(session.csrf.clone()),
        expires_in: Some(sessions.lifetime().as_secs()),
    }
}

/// Signs a browser in with a token of the `review` role: sets the session cookie.
#[utoipa::path(post, path = "/api/v1/session", tag = "review",
    request_body = SignIn,
    responses((status = 200, body = SessionInfo, headers(("Set-Cookie" = String, description = "The session cookie"))),
              (status = 400, description = "The body is not `{\"token\": ...}`", body = ErrorBody),
              (status = 401, description = "The token is not configured", body = ErrorBody),
              (status = 403, description = "The token lacks the review role", body = ErrorBody)))]
pub async fn sign_in(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let sign_in: SignIn = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("the body is not {\"token\": \"...\"}".to_owned()))?;
    let (caller, roles) = match &state.tokens {
        Some(tokens) => {
            let token = tokens
                .find(sign_in.token.trim())
                .ok_or(ApiError::Unauthorized)?;
            (token.caller.clone(), token.roles.clone())
        }
        None => (anonymous(), vec![Role::Read, Role::Review, Role::Send]),
    };
    if !auth::allows(&roles, Role::Review) {
        tracing::info!(caller = %caller.name, "sign-in refused: no review role");
        return Err(ApiError::Forbidden);
    }
    tracing::info!(caller = %caller.name, "signed in");
    let (id, session) = state.sessions.open(caller, roles);
    Ok(with_cookie(
        &state,
        &id,
        Json(info(&session, &state.sessions)),
    ))
}

/// The browser's session: who is signed in and the CSRF token. Under a trusted proxy, the
/// proxy's user gets a session here.
#[utoipa::path(get, path = "/api/v1/session", tag = "review",
    responses((status = 200, body = SessionInfo)))]
pub async fn current(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(session) = state.sessions.of_request(&headers) {
        return Ok(Json(info(&session, &state.sessions)).into_response());
    }
    if state.sessions.proxy_user(&headers).as_deref() == Some(&caller.name) {
        let (id, session) = state.sessions.open(caller, vec![Role::Read, Role::Review]);
        return Ok(with_cookie(
            &state,
            &id,
            Json(info(&session, &state.sessions)),
        ));
    }
    // A bearer token (a script), or no tokens at all: no browser session to show.
    Ok(Json(SessionInfo {
        reader: caller.name,
        roles: Vec::new(),
        csrf_token: None,
        expires_in: None,
    })
    .into_response())
}

/// Signs the browser out: ends the session and deletes its cookie.
#[utoipa::path(delete, path = "/api/v1/session", tag = "review",
    responses((status = 204, description = "Signed out")))]
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    state.sessions.close(&headers);
    let secure = state.scheme == "https";
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", Duration::ZERO, secure));
    response
}

fn with_cookie(state: &AppState, id: &str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let cookie = set_cookie(id, state.sessions.lifetime(), state.scheme == "https");
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn anonymous() -> Caller {
    Caller {
        name: "anonymous".to_owned(),
        lane: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_session_is_found_by_its_cookie_until_it_expires_or_closes() {
        let sessions = Sessions::new(Duration::from_secs(60), None);
        let (id, session) = sessions.open(anonymous(), vec![Role::Review]);
        let headers = with_cookie(&format!("theme=dark; {COOKIE}={id}"));
        assert_eq!(sessions.of_request(&headers).unwrap().csrf, session.csrf);
        assert!(sessions
            .of_request(&with_cookie(&format!("{COOKIE}=x")))
            .is_none());
        sessions.close(&headers);
        assert!(sessions.of_request(&headers).is_none());
        let expired = Sessions::new(Duration::ZERO, None);
        let (id, _) = expired.open(anonymous(), vec![Role::Review]);
        assert!(expired
            .of_request(&with_cookie(&format!("{COOKIE}={id}")))
            .is_none());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_tls() {
        let cookie = set_cookie("abc", Duration::from_secs(3600), true);
        let text = cookie.to_str().unwrap();
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=3600",
            "Secure",
            "Path=/",
        ] {
            assert!(text.contains(part), "{text}");
        }
        let plain = set_cookie("abc", Duration::from_secs(3600), false);
        assert!(!plain.to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn a_proxy_user_is_trusted_only_when_configured() {
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", HeaderValue::from_static("dr.ann"));
        let off = Sessions::new(Duration::from_secs(60), None);
        assert_eq!(off.proxy_user(&headers), None);
        let on = Sessions::new(
            Duration::from_secs(60),
            Some(HeaderName::from_static("x-remote-user")),
        );
        assert_eq!(on.proxy_user(&headers).as_deref(), Some("dr.ann"));
    }
}
