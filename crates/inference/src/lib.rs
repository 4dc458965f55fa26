//! The libtorch backend: TorchScript networks on the CPU or a CUDA device. The only crate
//! of pulmo that links libtorch (through `tch`).
//!
//! It knows tensors and devices and never sees DICOM. [`start`] resolves the user's device
//! and number format against this machine ([`device`], [`precision`]), starts one OS
//! thread per network that owns the TorchScript module and batches inputs across callers
//! ([`engine`]), and hands the pipeline a [`pulmo_backend::Backend`]: the [`Engine`]s as
//! its networks and, when the model runs on a GPU, a [`TensorResampler`]. [`smoke`] proves
//! that libtorch runs at all.

pub mod device;
pub mod engine;
pub mod precision;
pub mod resample;
pub mod smoke;

use pulmo_backend::{Backend, BatchPolicy, Bundle, DeviceChoice, PrecisionChoice, ResampleChoice};

pub use engine::{Engine, EngineStats};
pub use resample::TensorResampler;

/// The libtorch version found at build time (for example `2.11.0+cu130`).
pub const LIBTORCH_VERSION: &str = env!("PULMO_LIBTORCH_VERSION");

/// What can go wrong while choosing a device or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Choice(#[from] pulmo_backend::Error),
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

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for pulmo_backend::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Choice(choice) => choice,
            other => pulmo_backend::Error::Backend(Box::new(other)),
        }
    }
}

/// How to start the backend: the user's choices, before they meet this machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub device: DeviceChoice,
    pub precision: PrecisionChoice,
    pub batch: BatchPolicy,
    /// Where volumes are resampled to the model's grid.
    pub resample: ResampleChoice,
}

/// Resolves the device and number format, loads the bundle's detector (and classifier,
/// when it has one) on the device, each in its own thread, warms them up, and returns
/// them as the pipeline's backend. A bad bundle or device fails here, at start-up.
pub fn start(bundle: &Bundle, options: &Options) -> Result<Backend> {
    let device = device::resolve(options.device)?;
    let precision = pulmo_backend::precision::resolve(
        options.precision,
        &bundle.manifest.precision,
        precision::hardware(device),
    )?;
    let detector = Engine::start(bundle, device, precision, options.batch)?;
    let classifier = Engine::start_classifier(bundle, device, precision, options.batch)?;
    let on_device = match options.resample {
        ResampleChoice::Auto => device.is_cuda(),
        ResampleChoice::Cpu => false,
        ResampleChoice::Device => true,
    };
    Ok(Backend {
        detector: Box::new(detector),
        classifier: classifier.map(|c| Box::new(c) as Box<dyn pulmo_backend::Network>),
        resampler: on_device
            .then(|| Box::new(TensorResampler { device }) as Box<dyn pulmo_backend::Resample>),
        device: device::describe(device),
        precision,
        runtime_version: LIBTORCH_VERSION.to_owned(),
    })
}
