//! Priors held by the PACS (`--priors-from URL`): when a study's patient has no earlier
//! study analysed here, QIDO-RS asks the PACS for the patient's earlier CT studies and
//! WADO-RS retrieves the latest one. Its instances are admitted to the spool like received
//! ones, in the research lane (their own analysis, for later follow-ups, waits for idle
//! time); the job that asked analyses the prior's CT series at once to compare with it.
//!
//! Only the patient's identifiers and UIDs go to the PACS; nothing of them is logged but
//! UIDs and counts.

use std::io::Write;
use std::time::Duration;

use reqwest::header::ACCEPT;
use reqwest::Client;
use serde_json::Value;

use crate::push::{Auth, Destination};
use crate::{Lane, Service};

/// Where priors come from: the PACS's DICOMweb base, and how long one request may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorsConfig {
    pub source: Destination,
    pub timeout: Duration,
}

/// What can go wrong asking the PACS; each says which request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not make an HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("{what}: the request failed")]
    Request {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: the PACS answered {status}")]
    Status { what: String, status: u16 },
    #[error("{what}: the answer is not DICOM JSON")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: the search URL cannot be made ({detail})")]
    Url { what: String, detail: String },
    #[error("{what}: the answer is not multipart/related DICOM ({detail})")]
    Multipart { what: String, detail: String },
    #[error("could not write a retrieved instance to {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The patient a prior is looked for: PatientID, IssuerOfPatientID (may be empty).
pub struct Patient<'a> {
    pub id: &'a str,
    pub issuer: &'a str,
}

/// An earlier study the PACS holds: its UID and StudyDate (`YYYYMMDD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierStudy {
    pub study_instance_uid: String,
    pub study_date: String,
}

/// How a retrieval went: instances admitted, and those refused (not CT, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retrieved {
    pub admitted: u32,
    pub refused: u32,
}

fn client(config: &PriorsConfig) -> Result<Client, Error> {
    // reqwest uses rustls without a default provider: pulmo links ring for it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(Error::Client)
}

fn authenticated(
    builder: reqwest::RequestBuilder,
    source: &Destination,
) -> reqwest::RequestBuilder {
    match &source.auth {
        Auth::None => builder,
        Auth::Basic { user, password } => builder.basic_auth(user, Some(password)),
        Auth::Bearer(token) => builder.bearer_auth(token),
    }
}

/// `GET url` with `accept` and the source's credentials; an answer other than 2xx is an
/// error naming `what` was asked.
async fn get(
    config: &PriorsConfig,
    url: impl reqwest::IntoUrl,
    accept: &str,
    what: &str,
) -> Result<reqwest::Response, Error> {
    let request = client(config)?.get(url).header(ACCEPT, accept);
    let response = authenticated(request, &config.source)
        .send()
        .await
        .map_err(|source| Error::Request {
            what: what.to_owned(),
            source,
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::Status {
            what: what.to_owned(),
            status: status.as_u16(),
        });
    }
    Ok(response)
}

/// The patient's most recent CT study at the PACS made before `before` (`YYYYMMDD`), other
/// than `current` (QIDO-RS `GET /studies?PatientID=…&ModalitiesInStudy=CT&StudyDate=-…`).
pub async fn latest_earlier(
    config: &PriorsConfig,
    patient: &Patient<'_>,
    current: &str,
    before: &str,
) -> Result<Option<EarlierStudy>, Error> {
    let what = "QIDO-RS search for the patient's earlier CT studies".to_owned();
    let mut query = vec![
        ("PatientID", patient.id.trim()),
        ("ModalitiesInStudy", "CT"),
        ("includefield", "00080020"),
    ];
    if !patient.issuer.trim().is_empty() {
        query.push(("IssuerOfPatientID", patient.issuer.trim()));
    }
    let range = format!("-{before}");
    query.push(("StudyDate", &range));
    let url = reqwest::Url::parse_with_params(&format!("{}/studies", config.source.url), &query)
        .map_err(|err| Error::Url {
            what: what.clone(),
            detail: err.to_string(),
        })?;
    let response = get(config, url, "application/dicom+json", &what).await?;
    if response.status() == reqwest::StatusCode::NO_CONTENT {
        return Ok(None);
    }
    let body = response.bytes().await.map_err(|source| Error::Request {
        what: what.clone(),
        source,
    })?;
    let found: Value =
        serde_json::from_slice(&body).map_err(|source| Error::Json { what, source })?;
    Ok(latest(&found, current, before))
}

/// Of a QIDO-RS answer's studies, the latest made before `before`, other than `current`.
fn latest(found: &Value, current: &str, before: &str) -> Option<EarlierStudy> {
    let first =
        |study: &Value, tag: &str| study[tag]["Value"][0].as_str().map(|v| v.trim().to_owned());
    found
        .as_array()?
        .iter()
        .filter_map(|study| {
            Some(EarlierStudy {
                study_instance_uid: first(study, "0020000D")?,
                study_date: first(study, "00080020")?,
            })
        })
        .filter(|s| {
            s.study_instance_uid != current
                && s.study_date.len() == 8
                && s.study_date.bytes().all(|b| b.is_ascii_digit())
                && s.study_date.as_str() < before
        })
        .max_by(|a, b| a.study_date.cmp(&b.study_date))
}

/// Retrieves a study from the PACS (WADO-RS `GET /studies/{uid}`) and admits each instance
/// to the spool in the research lane, as a received one is: written, synced, checked.
/// Blocking for each admission; call it from a blocking thread's runtime handle.
pub async fn retrieve(
    service: &Service,
    config: &PriorsConfig,
    study_uid: &str,
) -> Result<Retrieved, Error> {
    let what = format!("WADO-RS retrieval of study {study_uid}");
    let url = format!("{}/studies/{study_uid}", config.source.url);
    let accept = "multipart/related; type=\"application/dicom\"";
    let response = get(config, url, accept, &what).await?;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let boundary = pulmo_dicomweb::boundary(&content_type).map_err(|err| Error::Multipart {
        what: what.clone(),
        detail: err.to_string(),
    })?;
    let limits = pulmo_dicomweb::Limits {
        max_request_bytes: u64::MAX,
        max_instance_bytes: 2 << 30,
    };
    let mut parts = pulmo_dicomweb::Parts::new(response.bytes_stream(), boundary, limits);
    let mut retrieved = Retrieved::default();
    let mut index = 0;
    loop {
        let part = parts.next().await.map_err(|err| Error::Multipart {
            what: what.clone(),
            detail: err.to_string(),
        })?;
        let Some(part) = part else { break };
        index += 1;
        let pulmo_dicomweb::Part::Dicom(mut dicom) = part else {
            retrieved.refused += 1;
            continue;
        };
        let tmp = service.temporary_path();
        let written = async {
            let mut file = std::fs::File::create(&tmp)?;
            while let Some(chunk) = dicom
                .chunk()
                .await
                .map_err(|err| std::io::Error::other(err.to_string()))?
            {
                file.write_all(&chunk)?;
            }
            file.sync_all()
        }
        .await;
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Write { path: tmp, source });
        }
        let name = format!("part {index} of the retrieved prior study {study_uid}");
        match service.admit(&tmp, &name, Some(study_uid), Lane::Research) {
            Ok(_) => retrieved.admitted += 1,
            Err(refused) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::info!(reason = %refused.reason, "a retrieved prior instance was not kept");
                retrieved.refused += 1;
            }
        }
    }
    Ok(retrieved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_earlier_study_is_chosen_and_later_undated_or_current_ones_are_not() {
        let study = |uid: &str, date: Option<&str>| {
            let mut s = serde_json::json!({"0020000D": {"vr": "UI", "Value": [uid]}});
            if let Some(date) = date {
                s["00080020"] = serde_json::json!({"vr": "DA", "Value": [date]});
            }
            s
        };
        let found = Value::Array(vec![
            study("1.1", Some("20230105")),
            study("1.2", Some("20240105")),
            study("1.3", Some("20250105")),
            study("1.4", None),
            study("1.5", Some("2024")),
            study("1.6", Some("20260105")),
        ]);
        let pick = |current: &str, before: &str| {
            latest(&found, current, before).map(|s| s.study_instance_uid)
        };
        assert_eq!(pick("1.3", "20250105").as_deref(), Some("1.2"));
        assert_eq!(
            pick("1.9", "20240105").as_deref(),
            Some("1.1"),
            "same day is not earlier"
        );
        assert_eq!(pick("1.1", "20230105"), None);
        assert_eq!(
            latest(&serde_json::json!({"error": 1}), "1.3", "20250105"),
            None
        );
    }
}
