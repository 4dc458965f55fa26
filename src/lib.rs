//! pulmo: lung-nodule assist for chest CT.
//!
//! DICOM goes in, a LibTorch CNN runs on a CUDA GPU or the CPU, and structured reports
//! come out. The work lives in the library crates under `crates/`, along the data flow;
//! this crate holds the transports (CLI, HTTP and DIMSE) and the one place where the libtorch
//! backend meets the pipeline ([`analyzer`]). Imports point one way only:
//!
//! ```text
//! transport (cli, http, dimse) -> service -> pipeline -> ingest -> volume -> preprocess
//!                                              -> (backend: inference) -> postprocess
//!                                              -> findings -> report (json, sr, seg, images)
//! ```
//!
//! | module here | crate | what |
//! |---|---|---|
//! | [`ingest`], [`volume`] | `pulmo-dicom` | scan, group, choose the CT series; order, decode, HU |
//! | [`backend`] | `pulmo-backend` | bundles, the `Network` trait, device and precision choices |
//! | [`inference`] | `pulmo-inference` | libtorch: one thread per device owns the model |
//! | [`preprocess`], [`postprocess`], [`findings`], [`report`], [`evaluate`], [`pipeline`] | `pulmo-core` | the analysis, behind the `Network` trait |
//! | [`service`] | `pulmo-service` | spool, store, workers, pushes |
//! | [`metrics`] | `pulmo-metrics` | every Prometheus metric |
//! | [`transport`], [`analyzer`], [`build_info`] | this crate | CLI, HTTP and DIMSE (its protocol in `pulmo-dimse`) |
//!
//! `docs/ARCHITECTURE.md` holds the picture and the threading model.

pub mod analyzer;
pub mod build_info;
pub mod transport;

pub use pulmo_backend as backend;
pub use pulmo_core::{
    compare, evaluate, findings, morphology, pipeline, postprocess, preprocess, report,
};
pub use pulmo_dicom::{ingest, volume};
pub use pulmo_inference as inference;
pub use pulmo_metrics as metrics;
pub use pulmo_service as service;
