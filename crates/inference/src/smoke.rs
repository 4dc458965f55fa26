//! Proof that libtorch really runs here: load the tiny TorchScript model in
//! `models/smoke/` and check its output against the formula it was built from.
//!
//! The model (made by `scripts/testdata/make_smoke_model.py`) is one 3×3×3 convolution with every
//! weight 1/27, bias 0.5 and zero padding, followed by a sigmoid. Fed all ones, a voxel
//! with `n` neighbours inside the volume (itself included) must read `sigmoid(n/27 + 0.5)`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// The shape of the test input, `[batch, channel, depth, height, width]`.
const SHAPE: [i64; 5] = [2, 1, 4, 5, 6];
/// Largest difference from the formula that still counts as right (float32 arithmetic).
const TOLERANCE: f64 = 1e-5;

/// What a smoke run measured.
#[derive(Debug, Clone)]
pub struct SmokeReport {
    /// The device the model ran on.
    pub device: Device,
    /// Largest absolute difference between the model's output and the formula.
    pub max_abs_error: f64,
    /// How many output values were checked.
    pub values: usize,
    /// Time to load the model and run it once.
    pub elapsed: Duration,
}

/// The bundled smoke model, relative to the repository root.
pub fn default_model_path() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.ancestors().nth(2).unwrap_or(crate_dir);
    root.join("models/smoke/model.pt")
}

/// Loads the smoke model on `device`, runs it on ones, and checks every output value.
pub fn run(path: &Path, device: Device) -> Result<SmokeReport> {
    let started = Instant::now();
    let mut module = tch::CModule::load_on_device(path, device).map_err(|source| Error::Load {
        path: path.to_owned(),
        source,
    })?;
    module.set_eval();
    let input = Tensor::ones(SHAPE, (Kind::Float, device));
    let output = tch::no_grad(|| module.forward_ts(&[input]))
        .and_then(|out| out.to_device(Device::Cpu).f_to_kind(Kind::Double))
        .map_err(|source| Error::Forward {
            path: path.to_owned(),
            source,
        })?;
    let wrong = |detail: String| Error::WrongOutput {
        path: path.to_owned(),
        detail,
    };
    if output.size() != SHAPE {
        return Err(wrong(format!(
            "shape {:?}, expected {SHAPE:?}",
            output.size()
        )));
    }
    let got = Vec::<f64>::try_from(output.flatten(0, -1)).map_err(|source| Error::Forward {
        path: path.to_owned(),
        source,
    })?;
    let want = expected();
    let max_abs_error = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    if max_abs_error.is_nan() || max_abs_error > TOLERANCE {
        return Err(wrong(format!(
            "max error {max_abs_error:e} exceeds {TOLERANCE:e}"
        )));
    }
    Ok(SmokeReport {
        device,
        max_abs_error,
        values: got.len(),
        elapsed: started.elapsed(),
    })
}

/// The output the formula predicts for an all-ones input, in row-major order.
fn expected() -> Vec<f64> {
    let [batch, _, depth, height, width] = SHAPE.map(|n| n as usize);
    let inside = |i: usize, n: usize| 1 + usize::from(i > 0) + usize::from(i + 1 < n);
    let mut values = Vec::with_capacity(batch * depth * height * width);
    for _ in 0..batch {
        for z in 0..depth {
            for y in 0..height {
                for x in 0..width {
                    let n = inside(z, depth) * inside(y, height) * inside(x, width);
                    values.push(sigmoid(n as f64 / 27.0 + 0.5));
                }
            }
        }
    }
    values
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_matches_hand_computed_corners_and_centre() {
        let values = expected();
        // A corner has 2×2×2 neighbours; voxel (1,1,1) is interior in all three axes.
        assert!((values[0] - sigmoid(8.0 / 27.0 + 0.5)).abs() < 1e-12);
        let interior = 30 + 6 + 1;
        assert!((values[interior] - sigmoid(1.5)).abs() < 1e-12);
    }

    #[test]
    fn bundled_model_runs_on_the_best_device_and_matches_the_formula() {
        let device = tch::Device::cuda_if_available();
        let report = run(&default_model_path(), device).expect("smoke model must run");
        assert_eq!(report.values, SHAPE.iter().product::<i64>() as usize);
        assert!(report.max_abs_error <= TOLERANCE);
    }

    #[test]
    fn a_missing_model_is_a_load_error_naming_the_file() {
        let err = run(Path::new("/nonexistent/model.pt"), Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::Load { .. }));
        assert!(err.to_string().contains("/nonexistent/model.pt"));
    }
}
