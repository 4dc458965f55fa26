//! pulmo's analysis: from a Hounsfield volume to findings and reports, with the network
//! behind a trait (`pulmo_backend::Network`), so none of this links libtorch.
//!
//! The modules follow the data, and imports point one way only:
//!
//! ```text
//! pipeline -> preprocess -> (backend: the networks) -> postprocess -> findings -> report
//! ```
//!
//! - [`preprocess`]: resample, lung mask, HU window, tiles.
//! - [`postprocess`]: stitch tiles, candidates, measurements, classifier rescoring.
//! - [`findings`]: nodules, Lung-RADS; knows nothing of DICOM or networks.
//! - [`report`]: JSON, DICOM SR, DICOM SEG, key images; knows nothing of HTTP.
//! - [`compare`]: follow-up: registration with the prior scan, nodule matching, change.
//! - [`pipeline`]: the one place where the stages are composed; every transport calls it.
//! - [`evaluate`]: LUNA16 FROC of reports against truth; reads pulmo's JSON and LUNA16's CSV.
//! - [`morphology`]: connected components and hole filling, shared by pre- and postprocess.
//! - [`testing`]: plain-Rust networks and volumes, for tests here and above.

pub mod build_info;
pub mod compare;
pub mod evaluate;
pub mod findings;
pub mod morphology;
pub mod pipeline;
pub mod postprocess;
pub mod preprocess;
pub mod report;
pub mod testing;
