//! Plain-Rust networks, backends and volumes for tests: the pipeline runs here end to end
//! without libtorch, and the crates above this one test with the same pieces.
//!
//! [`ThresholdNet`] and [`MeanClassifier`] compute what the TorchScript stand-ins of
//! `models/threshold-test/` compute (`scripts/testdata/make_smoke_model.py`); [`BoxFilterNet`] what
//! `models/smoke/` computes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::Array3;
use pulmo_backend::{Backend, Bundle, Network, NetworkStats, Precision, Result};
use pulmo_dicom::volume::{Geometry, SeriesIds, SliceRef, Volume};

use crate::findings::{Finding, Laterality, LungRads, NoduleType};
use crate::pipeline::Analyzer;

/// The detector of the threshold test bundle: `logit = 40 * (windowed HU - 0.5)`, that is
/// soft tissue above -300 HU, voxel by voxel.
#[derive(Debug, Default)]
pub struct ThresholdNet {
    inputs: AtomicU64,
}

impl Network for ThresholdNet {
    fn infer(&self, inputs: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        self.inputs
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        Ok(inputs
            .into_iter()
            .map(|tile| tile.into_iter().map(|x| (x - 0.5) * 40.0).collect())
            .collect())
    }

    fn stats(&self) -> NetworkStats {
        count(&self.inputs)
    }
}

/// The stand-in candidate classifier: `logit = 40 * (0.3 - mean of the crop)`, which
/// prefers candidates with little tissue around them.
#[derive(Debug, Default)]
pub struct MeanClassifier;

impl Network for MeanClassifier {
    fn infer(&self, inputs: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        Ok(inputs
            .iter()
            .map(|crop| {
                let mean = crop.iter().sum::<f32>() / crop.len().max(1) as f32;
                vec![(0.3 - mean) * 40.0]
            })
            .collect())
    }
}

/// The smoke model: a 3x3x3 box filter (every weight 1/27, zero padding), bias 0.5 and a
/// sigmoid, on `patch`-shaped inputs.
#[derive(Debug)]
pub struct BoxFilterNet {
    patch: [usize; 3],
    inputs: AtomicU64,
}

impl BoxFilterNet {
    /// The filter for inputs of `patch` voxels (`[z, y, x]`).
    pub fn new(patch: [usize; 3]) -> BoxFilterNet {
        BoxFilterNet {
            patch,
            inputs: AtomicU64::new(0),
        }
    }

    fn filter(&self, tile: &[f32]) -> Vec<f32> {
        let [d, h, w] = self.patch;
        let at = |k: usize, j: usize, i: usize| tile[(k * h + j) * w + i];
        let around = |n: usize, len: usize| n.saturating_sub(1)..(n + 2).min(len);
        let mut out = Vec::with_capacity(tile.len());
        for k in 0..d {
            for j in 0..h {
                for i in 0..w {
                    let mut sum = 0.0f32;
                    for kk in around(k, d) {
                        for jj in around(j, h) {
                            for ii in around(i, w) {
                                sum += at(kk, jj, ii);
                            }
                        }
                    }
                    out.push(1.0 / (1.0 + (-(sum / 27.0 + 0.5)).exp()));
                }
            }
        }
        out
    }
}

impl Network for BoxFilterNet {
    fn infer(&self, inputs: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        self.inputs
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        Ok(inputs.iter().map(|tile| self.filter(tile)).collect())
    }

    fn stats(&self) -> NetworkStats {
        count(&self.inputs)
    }
}

fn count(inputs: &AtomicU64) -> NetworkStats {
    NetworkStats {
        inputs: inputs.load(Ordering::Relaxed),
        ..NetworkStats::default()
    }
}

/// A backend that runs [`ThresholdNet`], and [`MeanClassifier`] when `bundle` names a
/// classifier, on the CPU in float32.
pub fn backend(bundle: &Bundle) -> Backend {
    Backend {
        detector: Box::new(ThresholdNet::default()),
        classifier: bundle
            .manifest
            .classifier
            .as_ref()
            .map(|_| Box::new(MeanClassifier) as Box<dyn Network>),
        resampler: None,
        device: "cpu".to_owned(),
        precision: Precision::Float32,
        runtime_version: "none (plain-Rust test backend)".to_owned(),
    }
}

/// `models/threshold-test/` in the repository.
pub fn threshold_bundle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/threshold-test")
}

/// An analyzer around `bundle` with the test [`backend`].
pub fn analyzer(bundle: Bundle) -> Analyzer {
    let backend = backend(&bundle);
    Analyzer::new(bundle, backend)
}

/// The threshold test bundle with the test [`backend`].
pub fn threshold_analyzer() -> Analyzer {
    let bundle = Bundle::open(&threshold_bundle_dir()).expect("the test bundle must open");
    analyzer(bundle)
}

/// A 5 mm solid finding with `score` and `category`, for tests of what reads findings.
pub fn finding(score: f64, category: LungRads) -> Finding {
    Finding {
        id: 0,
        center_patient_mm: [0.0; 3],
        center_voxel: [0; 3],
        sop_instance_uid: "1.2.3".into(),
        instance_number: Some(1),
        diameter_mm: 5.0,
        long_axis_mm: 6.0,
        short_axis_mm: 4.0,
        volume_mm3: 65.0,
        mean_hu: 20.0,
        nodule_type: NoduleType::Solid,
        solid_core_mm: None,
        score,
        lung_rads: category,
        laterality: Laterality::Left,
        logits: None,
        lung_rads_rule: String::new(),
        tracking_uid: None,
        followup: None,
    }
}

/// A 1 mm-pixel, 1.5 mm-slice chest (80 x 240 x 300) with two lungs and spheres
/// `(centre mm, radius mm, HU)`.
/// The same chest with spheres `(centre mm, radius mm, HU)`.
pub fn chest_with(nodules: &[([f64; 3], f64, f32)]) -> Volume {
    let geometry = Geometry::axial([-150.0, -120.0, -60.0], [1.5, 1.0, 1.0]);
    let hu = Array3::from_shape_fn((80, 240, 300), |(k, j, i)| {
        let [x, y, z] = geometry.voxel_to_patient([k as f64, j as f64, i as f64]);
        let body = (x / 140.0).powi(2) + (y / 110.0).powi(2) < 1.0;
        let lung = |cx: f64| ((x - cx) / 55.0).powi(2) + (y / 80.0).powi(2) < 1.0;
        let inside = nodules.iter().find(|(c, r, _)| {
            ((x - c[0]).powi(2) + (y - c[1]).powi(2) + (z - c[2]).powi(2)).sqrt() <= *r
        });
        if !body {
            -1000.0
        } else if let Some((_, _, hu)) = inside {
            *hu
        } else if lung(-70.0) || lung(70.0) {
            -860.0
        } else {
            40.0
        }
    });
    let slices = (0..80)
        .map(|k| SliceRef {
            sop_instance_uid: format!("1.2.826.0.1.3680043.10.1.{k}"),
            instance_number: Some(k + 1),
            ..SliceRef::default()
        })
        .collect();
    let ids = SeriesIds {
        study_instance_uid: "1.2.3".into(),
        series_instance_uid: "1.2.3.4".into(),
        frame_of_reference_uid: "1.2.3.5".into(),
    };
    Volume {
        hu,
        geometry,
        slices,
        ids,
        source: Default::default(),
        slice_thickness_mm: Some(1.5),
        warnings: vec![],
    }
}
