//! Model bundles: a directory with `manifest.toml` and the TorchScript weights it names.
//!
//! A bundle is checked completely when it is opened (keys, ranges, sha256 of the weights),
//! so a bad bundle stops pulmo at start-up instead of failing the first study.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What can be wrong with a bundle.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid model manifest")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("{path}: sha256 is {actual}, but the manifest says {expected}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// `manifest.toml`, as written by `scripts/model/train.py`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub intended_use: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub thresholds: Thresholds,
    #[serde(default)]
    pub precision: PrecisionSpec,
    /// A second network that rescores every finding from a crop around it.
    #[serde(default)]
    pub classifier: Option<ClassifierSpec>,
}

/// The false-positive-reduction classifier: it sees a crop of the first pass's windowed
/// working image centred on each finding and answers one logit, "this is a nodule".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierSpec {
    /// TorchScript file in the bundle: `[N, 1, d, h, w]` crops to `[N, 1]` logits.
    pub file: String,
    pub sha256: String,
    /// Crop size `[z, y, x]` in working voxels.
    pub crop: [usize; 3],
    /// A finding ranks by `peak logit / 8 + weight * classifier logit`.
    pub weight: f64,
}

/// How volumes are prepared for the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Working voxel spacing `[z, y, x]` in mm.
    pub spacing_mm: [f64; 3],
    /// Patch size `[z, y, x]` in voxels.
    pub patch: [usize; 3],
    /// Fraction of the patch shared by neighbouring patches, in [0, 0.9].
    pub overlap: f64,
    /// HU clipped to this range, then scaled linearly to [0, 1].
    pub hu_window: [f32; 2],
    /// Spatial sizes the network accepts must be multiples of this.
    #[serde(default = "one")]
    pub divisible_by: usize,
    /// Test-time augmentation: each axis listed (0 = z, 1 = y, 2 = x) adds a pass over the
    /// tiles mirrored along it, and the passes' probabilities are averaged.
    #[serde(default)]
    pub mirror_axes: Vec<usize>,
    /// Further working spacings `[z, y, x]` (mm) to run the whole network at, after
    /// `spacing_mm`: below the training spacing small nodules look larger to the network.
    /// Findings of all passes are merged; where they overlap the first pass's measurement
    /// is kept with the higher score. Empty: one pass.
    #[serde(default)]
    pub extra_spacings_mm: Vec<[f64; 3]>,
}

/// What the network returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSpec {
    pub kind: OutputKind,
    pub channels: usize,
}

/// Whether outputs still need a sigmoid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Logits,
    Probabilities,
}

/// Default decision thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Voxel probability that makes a voxel part of a candidate.
    pub probability: f32,
    /// Candidates scoring below this are dropped.
    pub min_score: f64,
    /// Candidates smaller than this mean diameter are dropped.
    pub min_diameter_mm: f64,
    /// The operating point: findings scoring at least this are the model's positive calls,
    /// which alone set the study's Lung-RADS category. Findings below it are still listed.
    /// Absent: every listed finding is a call (`min_score`).
    #[serde(default)]
    pub operating_score: Option<f64>,
}

impl Thresholds {
    /// The score from which a finding is a positive call.
    pub fn operating_score(&self) -> f64 {
        self.operating_score.unwrap_or(self.min_score)
    }
}

/// The 16-bit formats the model keeps its results in (checked on held-out data), which
/// `--precision auto` may then use where the hardware is fast at them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PrecisionSpec {
    /// Run in float16 on CUDA.
    #[serde(default)]
    pub half_on_cuda: bool,
    /// Run in bfloat16 on CPUs that compute it natively.
    #[serde(default)]
    pub bfloat16_on_cpu: bool,
}

fn one() -> usize {
    1
}

/// A checked bundle: its manifest and where its weights are.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub weights: PathBuf,
    /// The classifier's weights, when the manifest names one.
    pub classifier: Option<PathBuf>,
}

impl Bundle {
    /// Reads `dir/manifest.toml`, validates it and verifies the weights' sha256.
    pub fn open(dir: &Path) -> Result<Bundle, ManifestError> {
        let path = dir.join("manifest.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|source| ManifestError::Parse {
            path: path.clone(),
            source,
        })?;
        if let Some(problem) = manifest.problem() {
            return Err(ManifestError::Invalid { path, problem });
        }
        let weights = verified(dir.join(&manifest.file), &manifest.sha256)?;
        let classifier = match &manifest.classifier {
            Some(c) => Some(verified(dir.join(&c.file), &c.sha256)?),
            None => None,
        };
        Ok(Bundle {
            dir: dir.to_owned(),
            manifest,
            weights,
            classifier,
        })
    }
}

/// `path`, once its sha256 is the expected one.
fn verified(path: PathBuf, expected: &str) -> Result<PathBuf, ManifestError> {
    let actual = sha256_file(&path)?;
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(ManifestError::Checksum {
            path,
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(path)
}

impl Manifest {
    /// The first thing wrong with the values, if any.
    fn problem(&self) -> Option<String> {
        let input = &self.input;
        let checks = [
            (self.id.trim().is_empty(), "id is empty".to_owned()),
            (
                self.file.contains(".."),
                format!("file {:?} leaves the bundle", self.file),
            ),
            (
                !input.spacing_mm.iter().all(|s| s.is_finite() && *s > 0.0),
                format!("input.spacing_mm {:?} must be positive", input.spacing_mm),
            ),
            (
                !input
                    .extra_spacings_mm
                    .iter()
                    .flatten()
                    .all(|s| s.is_finite() && *s >= 0.25),
                format!(
                    "input.extra_spacings_mm {:?} must be at least 0.25 mm",
                    input.extra_spacings_mm
                ),
            ),
            (
                input.divisible_by == 0
                    || input
                        .patch
                        .iter()
                        .any(|p| *p == 0 || p % input.divisible_by != 0),
                format!(
                    "input.patch {:?} must be positive multiples of {}",
                    input.patch, input.divisible_by
                ),
            ),
            (
                !(0.0..=0.9).contains(&input.overlap),
                format!("input.overlap {} must be in [0, 0.9]", input.overlap),
            ),
            (
                input.hu_window[0] >= input.hu_window[1]
                    || input.hu_window.iter().any(|v| !v.is_finite()),
                format!("input.hu_window {:?} must be increasing", input.hu_window),
            ),
            (
                input.mirror_axes.iter().any(|a| *a > 2)
                    || (1..input.mirror_axes.len())
                        .any(|i| input.mirror_axes[..i].contains(&input.mirror_axes[i])),
                format!(
                    "input.mirror_axes {:?} must be distinct axes 0, 1 or 2",
                    input.mirror_axes
                ),
            ),
            (
                self.classifier
                    .as_ref()
                    .is_some_and(|c| c.file.contains("..")),
                "classifier.file leaves the bundle".to_owned(),
            ),
            (
                self.classifier.as_ref().is_some_and(|c| {
                    c.crop.contains(&0) || !(c.weight.is_finite() && c.weight >= 0.0)
                }),
                "classifier.crop must be positive and classifier.weight finite and not negative"
                    .to_owned(),
            ),
            (
                self.output.channels != 1,
                "output.channels must be 1".to_owned(),
            ),
            (
                !(0.0..1.0).contains(&self.thresholds.probability),
                "thresholds.probability must be in [0, 1)".to_owned(),
            ),
            (
                self.thresholds
                    .operating_score
                    .is_some_and(|s| !(0.0..=1.0).contains(&s)),
                "thresholds.operating_score must be in [0, 1]".to_owned(),
            ),
        ];
        checks
            .into_iter()
            .find(|(bad, _)| *bad)
            .map(|(_, problem)| problem)
    }
}

pub(crate) fn sha256_file(path: &Path) -> Result<String, ManifestError> {
    let mut file = std::fs::File::open(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::{bundle_dir, EXAMPLE};

    #[test]
    fn opens_a_good_bundle() {
        let bundle = Bundle::open(bundle_dir("good", EXAMPLE).path()).unwrap();
        assert_eq!(bundle.manifest.input.patch, [32, 32, 32]);
        assert_eq!(bundle.manifest.output.kind, OutputKind::Logits);
        assert!(bundle.manifest.precision.half_on_cuda);
        assert!(bundle.manifest.precision.bfloat16_on_cpu);
        // No operating point: every listed finding is a call.
        assert_eq!(bundle.manifest.thresholds.operating_score(), 0.1);
    }

    #[test]
    fn a_changed_weight_file_fails_the_checksum() {
        let dir = bundle_dir("tampered", EXAMPLE);
        std::fs::write(dir.path().join("model.pt"), b"tampered").unwrap();
        let err = Bundle::open(dir.path()).unwrap_err();
        assert!(matches!(err, ManifestError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains("model.pt"));
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            (
                "patch = [32, 32, 32]",
                "patch = [30, 32, 32]",
                "input.patch",
            ),
            ("overlap = 0.25", "overlap = 0.95", "input.overlap"),
            (
                "hu_window = [-1000.0, 400.0]",
                "hu_window = [400.0, -1000.0]",
                "hu_window",
            ),
            (
                "file = \"model.pt\"",
                "file = \"../x.pt\"",
                "leaves the bundle",
            ),
            (
                "divisible_by = 8",
                "divisible_by = 8\nmirror_axes = [2, 3]",
                "input.mirror_axes [2, 3]",
            ),
            (
                "divisible_by = 8",
                "divisible_by = 8\nmirror_axes = [2, 2]",
                "must be distinct",
            ),
            (
                "divisible_by = 8",
                "divisible_by = 8\nextra_spacings_mm = [[1.0, 1.0, 0.0]]",
                "input.extra_spacings_mm [[1.0, 1.0, 0.0]] must be at least 0.25 mm",
            ),
            (
                "min_diameter_mm = 3.0",
                "min_diameter_mm = 3.0\noperating_score = 1.5",
                "thresholds.operating_score",
            ),
        ];
        for (from, to, named) in cases {
            let dir = bundle_dir("bad", &EXAMPLE.replace(from, to));
            let err = Bundle::open(dir.path()).unwrap_err().to_string();
            assert!(err.contains(named), "{to}: {err}");
        }
    }

    const CLASSIFIER: &str =
        "\n[classifier]\nfile = \"model.pt\"\nsha256 = \"SHA\"\ncrop = [8, 8, 8]\nweight = 1.5\n";

    #[test]
    fn a_classifier_section_is_checked_like_the_model() {
        let bundle =
            Bundle::open(bundle_dir("classifier", &format!("{EXAMPLE}{CLASSIFIER}")).path())
                .unwrap();
        let spec = bundle.manifest.classifier.as_ref().unwrap();
        assert_eq!((spec.crop, spec.weight), ([8, 8, 8], 1.5));
        assert_eq!(bundle.classifier.as_deref(), Some(bundle.weights.as_path()));
        assert!(Bundle::open(bundle_dir("no-classifier", EXAMPLE).path())
            .unwrap()
            .classifier
            .is_none());

        let wrong_sha = CLASSIFIER.replace("SHA", "0000");
        let err =
            Bundle::open(bundle_dir("classifier-sha", &format!("{EXAMPLE}{wrong_sha}")).path())
                .unwrap_err();
        assert!(matches!(err, ManifestError::Checksum { .. }), "{err}");
        for (from, to, named) in [
            ("crop = [8, 8, 8]", "crop = [8, 0, 8]", "classifier.crop"),
            ("weight = 1.5", "weight = -1.0", "classifier.weight"),
            (
                "file = \"model.pt\"\nsha256",
                "file = \"../m.pt\"\nsha256",
                "classifier.file leaves",
            ),
        ] {
            let text = format!("{EXAMPLE}{}", CLASSIFIER.replace(from, to));
            let err = Bundle::open(bundle_dir("classifier-bad", &text).path())
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{to}: {err}");
        }
    }

    #[test]
    fn missing_keys_are_a_parse_error_naming_the_file() {
        let dir = bundle_dir("missing", "id = \"x\"\n");
        let err = Bundle::open(dir.path()).unwrap_err();
        assert!(matches!(err, ManifestError::Parse { .. }));
        assert!(err.to_string().contains("manifest.toml"));
    }
}
