//! pulmo: lung-nodule assist for chest CT.
//!
//! DICOM goes in, a LibTorch CNN runs on a CUDA GPU or the CPU, and structured reports
//! come out. The modules follow the data, and imports point one way only:
//!
//! ```text
//! transport (http, dimse, cli) -> pipeline -> ingest -> volume -> preprocess
//!                                          -> inference -> postprocess -> findings
//!                                          -> report (json, sr, seg, images)
//! ```
//!
//! - `ingest`: scan files or in-memory instances, group into studies and series,
//!   pick the CT series to analyse.
//! - `volume`: order slices by geometry, decode pixels, Hounsfield units.
//! - `preprocess`: resample, window, lung mask, tiles.
//! - [`inference`]: one OS thread per device owns the TorchScript model;
//!   tiles from many studies share batches.
//! - `postprocess`: stitch tiles, candidates, measurements.
//! - `findings`: nodules, Lung-RADS; knows nothing of DICOM or torch.
//! - `report`: JSON, DICOM SR, DICOM SEG, key images.
//! - `pipeline`: the one place where the stages are composed.
//! - [`evaluate`]: LUNA16 FROC of reports against truth; reads JSON only.
//! - [`transport`]: how the world reaches the pipeline (CLI, HTTP, DIMSE).
//!
//! Stages that are not written yet are declared here as they land;
//! `docs/ARCHITECTURE.md` holds the picture and the threading model.

pub mod build_info;
pub mod evaluate;
pub mod findings;
pub mod inference;
pub mod ingest;
pub mod metrics;
pub mod morphology;
pub mod pipeline;
pub mod postprocess;
pub mod preprocess;
pub mod report;
pub mod service;
pub mod transport;
pub mod volume;
