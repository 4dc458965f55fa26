//! What pulmo's pipeline needs from a network backend, and nothing of any backend itself.
//!
//! A model bundle ([`manifest`]: the manifest, the weights and their sha256) says what the
//! network expects and how its answers are read. A backend crate (`pulmo-inference`, with
//! libtorch) opens the bundle's networks and hands the pipeline a [`Backend`]: the detector
//! and the optional candidate classifier as [`Network`]s, and optionally a [`Resample`]
//! that resamples volumes where the network runs (a GPU). The pipeline sees only these
//! traits, so it compiles, and is tested, without libtorch (with a plain-Rust network).
//!
//! The user's choices of device, number format and resampling place ([`DeviceChoice`],
//! [`PrecisionChoice`], [`ResampleChoice`]) and the batching policy ([`BatchPolicy`],
//! [`BatchState`]) are plain data here too; only resolving them against real hardware needs
//! the backend.

pub mod batcher;
pub mod device;
pub mod manifest;
pub mod precision;
pub mod testing;

use std::fmt;
use std::time::Duration;

use ndarray::{Array3, ArrayView3};

pub use batcher::{BatchPolicy, BatchState};
pub use device::{DeviceChoice, ResampleChoice};
pub use manifest::{Bundle, Manifest, ManifestError, OutputKind};
pub use precision::{Hardware, Precision, PrecisionChoice};

/// What can go wrong in choosing or running a backend.
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
    /// The backend failed to load or run a network; its own error says why.
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

/// Results of this crate and of the [`Network`] and [`Resample`] traits.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A loaded network, callable from any number of threads at once.
pub trait Network: Send + Sync {
    /// Runs the network on `inputs` (each one patch or crop, `[z, y, x]` row-major) and
    /// returns each input's outputs in order (one value per voxel for the detector, one
    /// logit per crop for the classifier). Blocks until all are done; inputs of concurrent
    /// callers may share batches.
    fn infer(&self, inputs: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>>;

    /// Counters of the network's calls so far.
    fn stats(&self) -> NetworkStats {
        NetworkStats::default()
    }
}

/// Counters of one [`Network`], for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Calls of the network (batches).
    pub batches: u64,
    /// Inputs run.
    pub inputs: u64,
    /// Time spent in the network.
    pub busy: Duration,
    /// Batches that held inputs of more than one `infer` call (several series at once).
    pub shared_batches: u64,
}

/// For each output index along one axis: the two source indices around it and the weight
/// of the second. One plan of taps per axis drives every resampling path, so they sample
/// exactly the same points.
pub type Taps = Vec<(usize, usize, f32)>;

/// Resampling where the network runs (a GPU), from a plan the pipeline made.
pub trait Resample: Send + Sync + fmt::Debug {
    /// Interpolates `hu` along columns, then rows, then slices with `taps` (indexed by axis
    /// `[slice, row, column]`) into an array of `shape`, computing `a * (1 - w) + b * w`
    /// in float32 at each step, as the CPU path does.
    fn resample(
        &self,
        hu: ArrayView3<f32>,
        shape: [usize; 3],
        taps: &[Taps; 3],
    ) -> Result<Array3<f32>>;

    /// Where it runs, as logs name it (`cuda:0`).
    fn describe(&self) -> String;
}

/// A started backend: the bundle's networks on one device, ready for the pipeline.
pub struct Backend {
    /// The detector: tiles in, one value per voxel out.
    pub detector: Box<dyn Network>,
    /// The candidate classifier, when the bundle has one: crops in, one logit each out.
    pub classifier: Option<Box<dyn Network>>,
    /// Resampling on the network's device; `None` resamples on the CPU.
    pub resampler: Option<Box<dyn Resample>>,
    /// The device, as reports name it (`cpu`, `cuda:0`).
    pub device: String,
    /// The number format the networks run in.
    pub precision: Precision,
    /// The runtime's version (libtorch's, for example `2.11.0+cu130`), as reports carry it.
    pub runtime_version: String,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("device", &self.device)
            .field("precision", &self.precision)
            .field("classifier", &self.classifier.is_some())
            .field("resampler", &self.resampler)
            .field("runtime_version", &self.runtime_version)
            .finish()
    }
}
