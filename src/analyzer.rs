//! Starting an [`Analyzer`]: the one place where the libtorch backend meets the pipeline.
//!
//! Every transport that analyses (`analyze`, `batch`, `serve`) starts its analyzer here,
//! from the model bundle directory and the backend options the user gave.

use std::path::{Path, PathBuf};

use pulmo_backend::{Bundle, ManifestError};
use pulmo_core::pipeline::Analyzer;

/// What can stop an analyzer from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not open model bundle {dir}")]
    Bundle {
        dir: PathBuf,
        #[source]
        source: Box<ManifestError>,
    },
    #[error(transparent)]
    Inference(#[from] pulmo_inference::Error),
}

/// How to start an [`Analyzer`].
#[derive(Debug, Clone)]
pub struct AnalyzerConfig {
    /// The model bundle directory (with `manifest.toml`).
    pub model_dir: PathBuf,
    /// Device, number format, batching and resampling place.
    pub backend: pulmo_inference::Options,
}

impl AnalyzerConfig {
    /// The model at `model_dir` on the best device, with default batching.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        AnalyzerConfig {
            model_dir: model_dir.into(),
            backend: pulmo_inference::Options::default(),
        }
    }
}

/// The bundled detection model, relative to the repository root.
pub fn default_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/pulmo-nodule-v1")
}

/// Opens and checks the bundle, loads its networks on the device, and warms them up.
pub fn start(config: &AnalyzerConfig) -> Result<Analyzer, StartError> {
    let bundle = Bundle::open(&config.model_dir).map_err(|source| StartError::Bundle {
        dir: config.model_dir.clone(),
        source: Box::new(source),
    })?;
    let backend = pulmo_inference::start(&bundle, &config.backend)?;
    Ok(Analyzer::new(bundle, backend))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_bundle_stops_start_up_with_its_directory_named() {
        let err = start(&AnalyzerConfig::new("/nonexistent/bundle"))
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("/nonexistent/bundle"),
            "{err:#}"
        );
    }
}
