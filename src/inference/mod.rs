//! Inference: TorchScript models on the CPU or a CUDA device.
//!
//! This stage knows tensors and devices; it never sees DICOM. Today it chooses the device
//! and proves that libtorch runs ([`smoke`]); the per-device model thread and the
//! cross-study batcher land here next.

pub mod device;
pub mod smoke;

pub use device::DeviceChoice;

/// What can go wrong while choosing a device or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown device {0:?}: expected auto, cpu, cuda or cuda:N")]
    UnknownDevice(String),
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
    #[error("model {path} gave wrong numbers: {detail}")]
    WrongOutput {
        path: std::path::PathBuf,
        detail: String,
    },
}

/// Results of this stage.
pub type Result<T, E = Error> = std::result::Result<T, E>;
