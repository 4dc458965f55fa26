//! DICOM for pulmo: from files or bytes to a Hounsfield volume, with no network and no
//! torch in sight.
//!
//! - [`ingest`]: scan files, folders or in-memory instances (headers only), group them into
//!   studies and series, and choose each study's CT series by data-driven rules.
//! - [`volume`]: order a series' frames by geometry, decode their pixels (rayon), and apply
//!   the rescale to Hounsfield units; Part 10 files in every layout real toolkits write.
//!
//! - [`fuzz`]: the entry points of the fuzz targets in `tests/fuzz`, which the tests replay.
//!
//! `ingest` builds the instance types of `volume::series`, and `volume::assemble` reads
//! them, so imports point down only: `ingest -> volume`.

pub mod fuzz;
pub mod ingest;
pub mod volume;

/// An error and its causes on one line, as `a: b: c`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
