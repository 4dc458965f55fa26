//! Inference: TorchScript models on the CPU or a CUDA device.
//!
//! This stage knows tensors and devices; it never sees DICOM. It opens model bundles
//! ([`manifest`]), chooses the device ([`device`]) and the number format ([`precision`]),
//! and runs the network on one OS thread per device ([`engine`]) that batches tiles across
//! studies ([`batcher`]). [`smoke`] proves that libtorch runs at all.

pub mod batcher;
pub mod device;
pub mod engine;
pub mod manifest;
pub mod precision;
pub mod smoke;

pub use batcher::BatchPolicy;
pub use device::DeviceChoice;
pub use engine::Engine;
pub use manifest::{Bundle, Manifest, ManifestError, OutputKind};
pub use precision::{Precision, PrecisionChoice};

/// What can go wrong while choosing a device or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown device {0:?}: expected auto, cpu, cuda or cuda:N")]
    UnknownDevice(String),
    #[error("unknown precision {0:?}: expected auto, float32, bfloat16 or float16")]
    UnknownPrecision(String),
    #[error("{precision} is not available here: {reason}")]
    PrecisionUnavailable {
        precision: Precision,
        reason: &'static str,
    },
    #[error("CUDA device {index} was requested but this machine has {available} CUDA device(s)")]
    CudaUnavailable { index: usize, available: usize },
    #[error("could not load TorchScript model {path}")]
    Load {
        path: std::path::PathBuf,
        #[source]
        source: tch::TchError,
    },
    #[error("model {path} failed on its test input")]
    Forward {
        path: std::path::PathBuf,
        #[source]
        source: tch::TchError,
    },
    #[error("inference failed: {0}")]
    Engine(String),
    #[error("model {path} gave wrong numbers: {detail}")]
    WrongOutput {
        path: std::path::PathBuf,
        detail: String,
    },
}

/// Results of this stage.
pub type Result<T, E = Error> = std::result::Result<T, E>;
