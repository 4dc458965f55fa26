//! Writing the audit record of a request: the caller's name, the action (method and
//! route), the studies it touched and the answer's status. Written by the service in the
//! background; a failure to write is logged, never answered.

use axum::http::Method;

use super::auth::Caller;
use super::AppState;

/// The studies a STOW-RS request stored, which its path does not name.
#[derive(Debug, Clone, Default)]
pub struct StoredStudies(pub Vec<String>);

/// Records one answered request.
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
    let action = format!("{method} {}", action_of(path));
    tracing::info!(target: "pulmo::audit", caller = %caller.name, %action, studies = ?studies, status, "audit");
    let service = state.service.clone();
    let name = caller.name.clone();
    tokio::spawn(async move {
        if let Err(err) = service.audit(&name, &action, studies, status).await {
            tracing::error!(error = %crate::pipeline::error_chain(&err), "could not write an audit record");
        }
    });
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
}
