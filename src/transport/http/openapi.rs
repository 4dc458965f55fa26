//! The OpenAPI document, generated from the handlers' annotations; what the guard in front
//! of every handler adds (bearer tokens, 401 and 403) is added here from the same rule.

use axum::http::Method;
use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::auth::required_role;
use super::error::ErrorBody;
use super::{api, dicomweb, params, push, rendered, review, session, stow, wado};

/// pulmo's HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "pulmo", description = "Lung-nodule assist for chest CT: DICOMweb in, reports and DICOM results out"),
    paths(
        stow::store_any, stow::store_study,
        dicomweb::search_studies, dicomweb::search_series, dicomweb::search_instances,
        dicomweb::search_study_instances, dicomweb::search_all_series, dicomweb::search_all_instances,
        wado::retrieve_study, wado::retrieve_series, wado::retrieve_instance,
        wado::study_metadata, wado::series_metadata, wado::instance_metadata,
        wado::bulk_data, wado::retrieve_frames,
        rendered::render_instance, rendered::render_frame,
        api::job, api::study, api::report, api::analyze, push::pushes,
        review::get, review::decide, review::sign,
        session::sign_in, session::current, session::sign_out,
        api::healthz, api::readyz, api::info, api::metrics,
    ),
    // Path parameters name their schema by reference; utoipa collects only bodies' schemas.
    components(schemas(
        params::Uid, params::FrameList, params::FrameNumber, params::BulkPathSchema,
        dicomweb::UidList, dicomweb::DateRange, dicomweb::IncludeField,
        review::VerdictName, review::TypeName,
    )),
    modifiers(&Guarded),
    tags(
        (name = "dicomweb", description = "STOW-RS in; QIDO-RS and WADO-RS over the received instances and pulmo's results"),
        (name = "api", description = "Jobs, study status and reports"),
        (name = "review", description = "The reader's review: decisions on findings, signing, browser sessions"),
        (name = "operations", description = "Health, readiness and identity"),
    )
)]
pub struct ApiDoc;

/// The name of the bearer token scheme in the document.
const BEARER: &str = "bearer";

/// Marks every operation the guard checks as needing a bearer token, and documents the
/// guard's refusals: 401 (no token, or an unknown one) and 403 (a token without the role).
struct Guarded;

impl Modify for Guarded {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [
                (Method::GET, &mut item.get),
                (Method::POST, &mut item.post),
                (Method::PUT, &mut item.put),
                (Method::DELETE, &mut item.delete),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                if required_role(&method, path).is_some() {
                    guard(operation);
                }
            }
        }
    }
}

/// One operation behind the guard: the bearer scheme, and its 401 and 403.
fn guard(operation: &mut Operation) {
    let no_scopes: [&str; 0] = [];
    operation.security = Some(vec![SecurityRequirement::new(BEARER, no_scopes)]);
    let responses = &mut operation.responses.responses;
    let unauthorized = refusal("No token, or one that is not configured")
        .header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(String::schema())
                .description(Some("`Bearer`"))
                .build(),
        )
        .build();
    responses.insert("401".to_owned(), RefOr::T(unauthorized));
    let forbidden = refusal("The token lacks the role (`send` for POST, `review` for decisions and signing, `read` otherwise), or a browser's change lacks its CSRF token").build();
    responses.insert("403".to_owned(), RefOr::T(forbidden));
}

/// A refusal answered with the JSON error body.
fn refusal(description: &str) -> ResponseBuilder {
    let schema = Ref::from_schema_name(ErrorBody::name());
    let body = ContentBuilder::new().schema(Some(schema)).build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", body)
}

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
