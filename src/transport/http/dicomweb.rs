//! QIDO-RS over everything pulmo serves: the received source instances (until retention
//! purges them) and pulmo's results (SR, SEG, key images), at study, series and instance
//! level, with the matching, paging and `includefield` of `pulmo_dicomweb::qido`.
//!
//! Answers carry the attributes PS3.18 Table 10.6.3-3, -4 and -5 list for each level,
//! from the index's catalog; `includefield` adds those of the levels above.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pulmo_dicomweb::accept::{negotiate, Offer};
use pulmo_dicomweb::qido::{self, Level, Query as Search};

use super::dicom_json::{tag, Dataset};
use super::error::ErrorBody;
use super::params::{Query, SeriesPath, StudyPath, Uids};
use super::{ApiError, AppState};
use crate::service::{Attributes, Scope, Summary};

/// The query string of a search: matching keys (keyword or tag), `limit`, `offset`,
/// `includefield` and `fuzzymatching`.
type Pairs = Query<Vec<(String, String)>>;

/// The attributes every study answer carries (PS3.18 Table 10.6.3-3).
const STUDY: &[&str] = &[
    tag::STUDY_DATE,
    tag::STUDY_TIME,
    tag::ACCESSION_NUMBER,
    tag::INSTANCE_AVAILABILITY,
    tag::MODALITIES_IN_STUDY,
    tag::REFERRING_PHYSICIAN_NAME,
    tag::STUDY_DESCRIPTION,
    tag::RETRIEVE_URL,
    tag::PATIENT_NAME,
    tag::PATIENT_ID,
    tag::PATIENT_BIRTH_DATE,
    tag::PATIENT_SEX,
    tag::STUDY_INSTANCE_UID,
    tag::STUDY_ID,
    tag::NUMBER_OF_STUDY_RELATED_SERIES,
    tag::NUMBER_OF_STUDY_RELATED_INSTANCES,
];

/// The attributes every series answer carries (Table 10.6.3-4, and its study's UID).
const SERIES: &[&str] = &[
    tag::MODALITY,
    tag::SERIES_DESCRIPTION,
    tag::SERIES_NUMBER,
    tag::SERIES_INSTANCE_UID,
    tag::NUMBER_OF_SERIES_RELATED_INSTANCES,
    tag::INSTANCE_AVAILABILITY,
    tag::RETRIEVE_URL,
    tag::STUDY_INSTANCE_UID,
];

/// The attributes every instance answer carries (Table 10.6.3-5, and its study's and
/// series' UIDs).
const INSTANCE: &[&str] = &[
    tag::SOP_CLASS_UID,
    tag::SOP_INSTANCE_UID,
    tag::INSTANCE_AVAILABILITY,
    tag::RETRIEVE_URL,
    tag::INSTANCE_NUMBER,
    tag::ROWS,
    tag::COLUMNS,
    tag::BITS_ALLOCATED,
    tag::NUMBER_OF_FRAMES,
    tag::STUDY_INSTANCE_UID,
    tag::SERIES_INSTANCE_UID,
    tag::MODALITY,
];

/// Studies (QIDO-RS), newest study date first.
#[utoipa::path(get, path = "/dicomweb/studies", tag = "dicomweb",
    params(SearchParams),
    responses((status = 200, description = "DICOM JSON array of studies", body = Vec<Dataset>,
               content_type = "application/dicom+json"),
              (status = 400, description = "A query parameter is unknown or its value malformed", body = ErrorBody),
              (status = 406, description = "The Accept header takes no DICOM JSON", body = ErrorBody)))]
pub async fn search_studies(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(pairs): Pairs,
) -> Result<Response, ApiError> {
    let search = parse(Level::Study, &pairs, &headers)?;
    let studies = state.service.summaries(Scope::default(), false).await?;
    let base = base_url(&state, &headers);
    let items = studies.iter().filter_map(|s| {
        let item = study_item(s, &base);
        search.matches(|t| values(&item, t)).then_some(item)
    });
    Ok(answer(&search, items, STUDY))
}

/// The series of a study (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series", tag = "dicomweb",
    params(StudyPath, SearchParams),
    responses((status = 200, description = "DICOM JSON array of series", body = Vec<Dataset>,
               content_type = "application/dicom+json"),
              (status = 400, description = "The UID is not a DICOM UID, or a query parameter is unknown or malformed", body = ErrorBody),
              (status = 404, description = "Nothing of this study is served", body = ErrorBody),
              (status = 406, description = "The Accept header takes no DICOM JSON", body = ErrorBody)))]
pub async fn search_series(
    state: State<AppState>,
    uids: Uids<1>,
    headers: HeaderMap,
    pairs: Pairs,
) -> Result<Response, ApiError> {
    let [study] = uids.0;
    series_in(state, Some(study), headers, pairs).await
}

/// Series of every study (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/series", tag = "dicomweb",
    params(SearchParams),
    responses((status = 200, description = "DICOM JSON array of series", body = Vec<Dataset>,
               content_type = "application/dicom+json"),
              (status = 400, description = "A query parameter is unknown or its value malformed", body = ErrorBody),
              (status = 406, description = "The Accept header takes no DICOM JSON", body = ErrorBody)))]
pub async fn search_all_series(
    state: State<AppState>,
    headers: HeaderMap,
    pairs: Pairs,
) -> Result<Response, ApiError> {
    series_in(state, None, headers, pairs).await
}

async fn series_in(
    State(state): State<AppState>,
    study: Option<String>,
    headers: HeaderMap,
    Query(pairs): Pairs,
) -> Result<Response, ApiError> {
    let search = parse(Level::Series, &pairs, &headers)?;
    let scope = Scope {
        study: study.as_deref(),
        ..Scope::default()
    };
    let series = state.service.summaries(scope, true).await?;
    if let (Some(study), true) = (&study, series.is_empty()) {
        return Err(ApiError::NotFound(format!(
            "nothing of study {study} is served"
        )));
    }
    let base = base_url(&state, &headers);
    let items = series.iter().filter_map(|s| {
        let item = series_item(s, &base);
        search.matches(|t| values(&item, t)).then_some(item)
    });
    Ok(answer(&search, items, SERIES))
}

/// The instances of one series (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances", tag = "dicomweb",
    params(SeriesPath, SearchParams),
    responses((status = 200, description = "DICOM JSON array of instances", body = Vec<Dataset>,
               content_type = "application/dicom+json"),
              (status = 400, description = "A UID is not a DICOM UID, or a query parameter is unknown or malformed", body = ErrorBody),
              (status = 404, description = "Nothing of this series is served", body = ErrorBody),
              (status = 406, description = "The Accept header takes no DICOM JSON", body = ErrorBody)))]
pub async fn search_instances(
    state: State<AppState>,
    uids: Uids<2>,
    headers: HeaderMap,
    pairs: Pairs,
) -> Result<Response, ApiError> {
    let [study, series] = uids.0;
    instances_in(state, (Some(study), Some(series)), headers, pairs).await
}

/// The instances of one study, every series (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}/instances", tag = "dicomweb",
    params(StudyPath, SearchParams),
    responses((status = 200, description = "DICOM JSON array of instances", body = Vec<Dataset>,
               content_type = "application/dicom+json"),
              (status = 400, description = "The UID is not a DICOM UID, or a query parameter is unknown or malformed", body = ErrorBody),
              (status = 404, description = "Nothing of this study is served", body = ErrorBody),
              (status = 406, description = "The Accept header takes no DICOM JSON", body = ErrorBody)))]
pub async fn search_study_instances(
    state: State<AppState>,
    uids: Uids<1>,
    headers: HeaderMap,
    pairs: Pairs,
) -> Result<Response, ApiError> {
    let [study] = uids.0;
    instances_in(state, (Some(study), None), headers, pairs).await
}

/// Instances of every study (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/instances", tag = "dicomweb",
    params(SearchParams),
    responses((status = 200, description = "DICOM JSON array of instances", body = Vec<Dataset>,
               content_type = "application/dicom+json"),
              (status = 400, description = "A query parameter is unknown or its value malformed", body = ErrorBody),
              (status = 406, description = "The Accept header takes no DICOM JSON", body = ErrorBody)))]
pub async fn search_all_instances(
    state: State<AppState>,
    headers: HeaderMap,
    pairs: Pairs,
) -> Result<Response, ApiError> {
    instances_in(state, (None, None), headers, pairs).await
}

/// Instances within a study and series, when given.
async fn instances_in(
    State(state): State<AppState>,
    (study, series): (Option<String>, Option<String>),
    headers: HeaderMap,
    Query(pairs): Pairs,
) -> Result<Response, ApiError> {
    let search = parse(Level::Instance, &pairs, &headers)?;
    let scope = Scope {
        study: study.as_deref(),
        series: series.as_deref(),
        instance: None,
    };
    let instances = state.service.instances(scope).await?;
    if let (Some(study), true) = (&study, instances.is_empty()) {
        let series = series.map_or(String::new(), |s| format!("series {s} of "));
        return Err(ApiError::NotFound(format!(
            "nothing of {series}study {study} is served"
        )));
    }
    let base = base_url(&state, &headers);
    let items = instances.iter().filter_map(|a| {
        let item = instance_item(a, &base);
        search.matches(|t| values(&item, t)).then_some(item)
    });
    Ok(answer(&search, items, INSTANCE))
}

/// The search, or a 400 naming what is wrong (never echoing it); a 406 when the client
/// takes no DICOM JSON.
fn parse(
    level: Level,
    pairs: &[(String, String)],
    headers: &HeaderMap,
) -> Result<Search, ApiError> {
    let offers = [
        Offer::single("application/dicom+json"),
        Offer::single("application/json"),
    ];
    negotiate(accept(headers), &offers).ok_or_else(|| {
        ApiError::NotAcceptable("searches answer application/dicom+json only".to_owned())
    })?;
    qido::parse(level, pairs).map_err(|err| ApiError::BadRequest(format!("search: {err}")))
}

/// The `Accept` header, when it is text.
pub(super) fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

/// Where this server is reached, as the client named it: `http://host:port`, for the
/// URLs (RetrieveURL, BulkDataURI) answers carry.
pub(super) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    format!("{}://{host}", state.scheme)
}

fn study_item(s: &Summary, base: &str) -> Dataset {
    let a = &s.attributes;
    Dataset::new()
        .text(tag::STUDY_DATE, "DA", &a.study_date)
        .text(tag::STUDY_TIME, "TM", &a.study_time)
        .text(tag::ACCESSION_NUMBER, "SH", &a.accession_number)
        .text(tag::INSTANCE_AVAILABILITY, "CS", "ONLINE")
        .texts(tag::MODALITIES_IN_STUDY, "CS", &s.modalities)
        .person(tag::REFERRING_PHYSICIAN_NAME, &a.referring_physician_name)
        .text(tag::STUDY_DESCRIPTION, "LO", &a.study_description)
        .text(
            tag::RETRIEVE_URL,
            "UR",
            &format!("{base}/dicomweb/studies/{}", a.study_uid),
        )
        .person(tag::PATIENT_NAME, &a.patient_name)
        .text(tag::PATIENT_ID, "LO", &a.patient_id)
        .text(tag::PATIENT_BIRTH_DATE, "DA", &a.patient_birth_date)
        .text(tag::PATIENT_SEX, "CS", &a.patient_sex)
        .text(tag::STUDY_INSTANCE_UID, "UI", &a.study_uid)
        .text(tag::STUDY_ID, "SH", &a.study_id)
        .number(tag::NUMBER_OF_STUDY_RELATED_SERIES, "IS", s.series.into())
        .number(
            tag::NUMBER_OF_STUDY_RELATED_INSTANCES,
            "IS",
            s.instances.into(),
        )
}

/// A series with its study's attributes (the answer keeps them for `includefield`).
fn series_item(s: &Summary, base: &str) -> Dataset {
    let a = &s.attributes;
    let study = Summary {
        modalities: Vec::new(),
        ..s.clone()
    };
    study_item(&study, base)
        .retain(|t| !t.starts_with("002012") && t != tag::MODALITIES_IN_STUDY)
        .text(tag::MODALITY, "CS", &a.modality)
        .text(tag::SERIES_DESCRIPTION, "LO", &a.series_description)
        .maybe_number(tag::SERIES_NUMBER, "IS", a.series_number)
        .text(tag::SERIES_INSTANCE_UID, "UI", &a.series_uid)
        .number(
            tag::NUMBER_OF_SERIES_RELATED_INSTANCES,
            "IS",
            s.instances.into(),
        )
        .text(
            tag::RETRIEVE_URL,
            "UR",
            &format!(
                "{base}/dicomweb/studies/{}/series/{}",
                a.study_uid, a.series_uid
            ),
        )
}

/// An instance with its series' and study's attributes.
fn instance_item(a: &Attributes, base: &str) -> Dataset {
    let series = Summary {
        attributes: a.clone(),
        modalities: Vec::new(),
        series: 1,
        instances: 1,
    };
    let url = format!(
        "{base}/dicomweb/studies/{}/series/{}/instances/{}",
        a.study_uid, a.series_uid, a.sop_instance_uid
    );
    series_item(&series, base)
        .retain(|t| t != tag::NUMBER_OF_SERIES_RELATED_INSTANCES)
        .text(tag::SOP_CLASS_UID, "UI", &a.sop_class_uid)
        .text(tag::SOP_INSTANCE_UID, "UI", &a.sop_instance_uid)
        .text(tag::RETRIEVE_URL, "UR", &url)
        .maybe_number(tag::INSTANCE_NUMBER, "IS", a.instance_number)
        .maybe_number(tag::ROWS, "US", a.rows)
        .maybe_number(tag::COLUMNS, "US", a.columns)
        .maybe_number(tag::BITS_ALLOCATED, "US", a.bits_allocated)
        .maybe_number(tag::NUMBER_OF_FRAMES, "IS", a.frames)
}

/// An attribute's values in an answer item, as text (a person name's alphabetic group,
/// a number as written); an absent or empty attribute is one empty value.
fn values(item: &Dataset, tag: &str) -> Vec<String> {
    let Some(values) = item.get(tag).and_then(|a| a["Value"].as_array()) else {
        return vec![String::new()];
    };
    values
        .iter()
        .map(|v| match v {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => other["Alphabetic"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// The page of matching items, each cut to its level's attributes and those included.
fn answer(search: &Search, items: impl Iterator<Item = Dataset>, defaults: &[&str]) -> Response {
    let page = items
        .skip(search.offset)
        .take(search.limit)
        .map(|item| {
            item.retain(|t| defaults.contains(&t) || search.include.includes(t))
                .into_value()
        })
        .collect();
    dicom_json(page)
}

/// A DICOM JSON answer.
pub(super) fn dicom_json(items: Vec<serde_json::Value>) -> Response {
    let body = serde_json::to_vec(&items).expect("JSON values always serialise");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        body,
    )
        .into_response()
}

/// The query parameters of a search, for the OpenAPI document. Any matching key of the
/// level (keyword or tag) may be given; these are the common ones. Each schema says
/// exactly what the parser takes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SearchParams {
    /// The most answers (at most 1000 are given).
    #[param(minimum = 0, maximum = 1_000_000_000)]
    limit: Option<u32>,
    /// Answers to skip.
    #[param(minimum = 0, maximum = 1_000_000_000)]
    offset: Option<u32>,
    /// More attributes to answer with: keywords or tags, comma-separated, or `all`.
    #[param(value_type = Option<IncludeField>)]
    includefield: Option<String>,
    /// Accepted; person names match case-insensitively either way.
    fuzzymatching: Option<bool>,
    /// Study Instance UIDs, comma-separated.
    #[param(rename = "StudyInstanceUID", value_type = Option<UidList>)]
    study_instance_uid: Option<String>,
    /// Patient ID, `*` and `?` as wildcards.
    #[param(rename = "PatientID", max_length = 256)]
    patient_id: Option<String>,
    /// Patient name, wildcards allowed, case-insensitive.
    #[param(rename = "PatientName", max_length = 256)]
    patient_name: Option<String>,
    /// A date (`YYYYMMDD`) or range (`YYYYMMDD-YYYYMMDD`, either end open).
    #[param(rename = "StudyDate", value_type = Option<DateRange>)]
    study_date: Option<String>,
    /// Accession number, wildcards allowed.
    #[param(rename = "AccessionNumber", max_length = 256)]
    accession_number: Option<String>,
    /// A modality of the study's series, wildcards allowed.
    #[param(rename = "ModalitiesInStudy", max_length = 256)]
    modalities_in_study: Option<String>,
}

/// A string schema with a pattern, for the OpenAPI document.
macro_rules! pattern_schema {
    ($name:ident, $pattern:expr, $description:expr) => {
        #[doc = $description]
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some($pattern))
                    .description(Some($description))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

pattern_schema!(
    UidList,
    qido::UID_LIST_PATTERN,
    "UIDs, separated by commas or backslashes"
);
pattern_schema!(
    DateRange,
    qido::DATE_PATTERN,
    "A date (YYYYMMDD) or a range with either end open"
);
pattern_schema!(
    IncludeField,
    qido::includefield_pattern(),
    "`all`, or tags and keywords, comma-separated"
);
