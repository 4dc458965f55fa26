//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;

use super::{api, dicomweb, push, stow};

/// pulmo's HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "pulmo", description = "Lung-nodule assist for chest CT: DICOMweb in, reports and DICOM results out"),
    paths(
        stow::store_any, stow::store_study,
        dicomweb::search_studies, dicomweb::search_series, dicomweb::search_instances,
        dicomweb::retrieve_instance,
        api::job, api::study, api::report, api::analyze, push::pushes,
        api::healthz, api::readyz, api::info, api::metrics,
    ),
    tags(
        (name = "dicomweb", description = "STOW-RS in; QIDO-RS and WADO-RS over pulmo's results"),
        (name = "api", description = "Jobs, study status and reports"),
        (name = "operations", description = "Health, readiness and identity"),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_matches_its_snapshot() {
        let mut doc = ApiDoc::openapi();
        // The version changes with every release; the shape is what is pinned.
        doc.info.version = "VERSION".to_owned();
        insta::assert_json_snapshot!(doc);
    }
}
