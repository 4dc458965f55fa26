//! The OHIF viewer at `/viewer/`: the released `@ohif/app` build that
//! `scripts/setup/viewer.sh` unpacks (never committed), served as static files with an app
//! configuration whose one data source is this server's DICOMweb.
//!
//! The released build expects to live at `/`; the setup script rebases it to `/viewer/`
//! (its page's URLs, `window.PUBLIC_URL` and its bundles' public path), and a folder not
//! rebased is refused. Every path under `/viewer/` that is not a file is one of OHIF's own
//! routes (`/viewer/viewer?StudyInstanceUIDs=…`), so it gets the page.
//!
//! The files are public (no token): they hold no patient data. What the viewer then asks
//! for, under `/dicomweb`, needs the `read` role like any other client's requests; a browser
//! sends the token as a bearer header (a proxy or an extension sets it) or the review
//! sign-in's cookie.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// Where the viewer is mounted.
const MOUNT: &str = "/viewer";

/// The installed viewer: its folder and its page.
pub struct Viewer {
    dir: PathBuf,
    index: String,
}

impl Viewer {
    /// Opens the OHIF build in `dir` (the folder that holds its `index.html`).
    pub fn open(dir: &Path) -> anyhow::Result<Viewer> {
        let page = dir.join("index.html");
        let index = std::fs::read_to_string(&page).with_context(|| {
            format!(
                "no OHIF viewer in {}: {} cannot be read (scripts/setup/viewer.sh installs it)",
                dir.display(),
                page.display()
            )
        })?;
        anyhow::ensure!(
            index.contains("window.PUBLIC_URL=\"/viewer/\""),
            "{} is not an OHIF build rebased to /viewer/: install it with scripts/setup/viewer.sh",
            page.display()
        );
        Ok(Viewer {
            dir: dir.to_owned(),
            index,
        })
    }

    /// The routes under `/viewer`, with no token needed.
    pub fn routes(self: Arc<Viewer>) -> Router {
        Router::new()
            .route(MOUNT, get(|| async { Redirect::permanent("/viewer/") }))
            .route("/viewer/", get(page))
            .route("/viewer/index.html", get(page))
            .route("/viewer/app-config.js", get(app_config))
            .route("/viewer/{*path}", get(file))
            .with_state(self)
    }
}

async fn page(State(viewer): State<Arc<Viewer>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        viewer.index.clone(),
    )
        .into_response()
}

/// OHIF's configuration: one DICOMweb data source, this server, found from the page's own
/// origin, so it works behind any host name, port or TLS proxy.
async fn app_config() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        APP_CONFIG,
    )
        .into_response()
}

/// A file of the build, or the page for OHIF's own routes.
async fn file(State(viewer): State<Arc<Viewer>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let rest = parts
        .uri
        .path()
        .strip_prefix(MOUNT)
        .unwrap_or("/")
        .to_owned();
    parts.uri = match Uri::builder().path_and_query(rest).build() {
        Ok(uri) => uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let served = ServeDir::new(&viewer.dir)
        .append_index_html_on_directories(false)
        .oneshot(Request::from_parts(parts, body))
        .await;
    let response: Result<Response, Infallible> = served.map(|r| r.map(Body::new));
    let Ok(mut response) = response;
    if response.status() == StatusCode::NOT_FOUND {
        return page(State(viewer)).await;
    }
    // The build's chunk names carry their content hash; the rest may change on upgrade.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// OHIF's `window.config`: pulmo's DICOMweb as the only data source. WADO-RS metadata
/// gives OHIF every instance's attributes in one request per series; images are fetched
/// as frames (the stored encoding, which OHIF's codecs decode) and thumbnails rendered.
const APP_CONFIG: &str = r#"/** OHIF configuration written by pulmo: its data source is this pulmo's DICOMweb. */
window.config = {
  routerBasename: '/viewer',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  groupEnabledModesFirst: true,
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'pulmo',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'pulmo',
      configuration: {
        friendlyName: 'pulmo',
        name: 'pulmo',
        wadoUriRoot: window.location.origin + '/dicomweb',
        qidoRoot: window.location.origin + '/dicomweb',
        wadoRoot: window.location.origin + '/dicomweb',
        qidoSupportsIncludeField: true,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true },
      },
    },
  ],
};
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_ohif_is_refused_with_the_way_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Viewer::open(dir.path()).err().unwrap();
        assert!(
            format!("{err:#}").contains("scripts/setup/viewer.sh"),
            "{err:#}"
        );
        // The release as npm ships it, not rebased.
        let page = r#"<script>window.PUBLIC_URL="/"</script>"#;
        std::fs::write(dir.path().join("index.html"), page).unwrap();
        let err = Viewer::open(dir.path()).err().unwrap();
        assert!(
            format!("{err:#}").contains("not an OHIF build rebased"),
            "{err:#}"
        );
        std::fs::write(
            dir.path().join("index.html"),
            page.replace("\"/\"", "\"/viewer/\""),
        )
        .unwrap();
        assert!(Viewer::open(dir.path()).is_ok());
    }
}
