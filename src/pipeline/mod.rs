//! Pipeline: the one place where the stages are composed. Every transport calls it.
//!
//! An [`Analyzer`] holds an opened model bundle and its inference engine; it turns a
//! [`Volume`] into a [`Report`]: preprocess, inference (batched with whatever else runs),
//! postprocess, findings, report.

pub mod results;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::findings;
use crate::inference::{self, BatchPolicy, Bundle, DeviceChoice, Engine, PrecisionChoice};
use crate::ingest::{self, SelectionRules, Study};
use crate::postprocess::{self, Thresholds};
use crate::preprocess::{self, PrepareOptions, ResampleChoice, Resampling};
use crate::report::{self, BuildInfo, ModelInfo, Report, SeriesInfo};
use crate::volume::{self, Series, Volume};

/// What can stop the pipeline from starting or from analysing a series.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not open model bundle {dir}")]
    Bundle {
        dir: PathBuf,
        #[source]
        source: Box<inference::ManifestError>,
    },
    #[error(transparent)]
    Inference(#[from] inference::Error),
    #[error(transparent)]
    Volume(#[from] volume::Error),
}

/// Results of this stage.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to start an [`Analyzer`].
#[derive(Debug, Clone)]
pub struct AnalyzerConfig {
    /// The model bundle directory (with `manifest.toml`).
    pub model_dir: PathBuf,
    pub device: DeviceChoice,
    pub precision: PrecisionChoice,
    pub batch: BatchPolicy,
    /// Where volumes are resampled to the model's grid.
    pub resample: ResampleChoice,
}

impl AnalyzerConfig {
    /// The bundled model on the best device, with default batching.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        AnalyzerConfig {
            model_dir: model_dir.into(),
            device: DeviceChoice::Auto,
            precision: PrecisionChoice::Auto,
            batch: BatchPolicy::default(),
            resample: ResampleChoice::Auto,
        }
    }
}

/// The bundled detection model, relative to the repository root.
pub fn default_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/pulmo-nodule-v1")
}

/// Everything one analysis produced: the report and each finding's voxels, which the
/// DICOM encoders (SEG, key images) need and the JSON report does not carry.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub report: Report,
    /// One per finding, in the findings' order, on the source grid.
    pub segments: Vec<postprocess::Segment>,
}

/// Sees an analysed volume with its analysis, on the worker thread that made them.
pub type VolumeHook<'a> = dyn Fn(&Volume, &Analysis) + Sync + 'a;

/// A loaded model, ready to analyse volumes from any number of threads at once.
pub struct Analyzer {
    bundle: Bundle,
    engine: Engine,
    /// The candidate classifier's engine, when the bundle has one.
    classifier: Option<Engine>,
    resampling: Resampling,
}

impl Analyzer {
    /// Opens and checks the bundle, loads the model on the device, and warms it up.
    pub fn start(config: &AnalyzerConfig) -> Result<Analyzer> {
        let bundle = Bundle::open(&config.model_dir).map_err(|source| Error::Bundle {
            dir: config.model_dir.clone(),
            source: Box::new(source),
        })?;
        let device = config.device.resolve()?;
        let precision = inference::precision::resolve(
            config.precision,
            &bundle.manifest.precision,
            inference::precision::Hardware::of(device),
        )?;
        let engine = Engine::start(&bundle, device, precision, config.batch)?;
        let classifier = Engine::start_classifier(&bundle, device, precision, config.batch)?;
        let resampling = config.resample.resolve(device);
        tracing::info!(
            model = %bundle.manifest.id,
            version = %bundle.manifest.version,
            device = %inference::device::describe(device),
            precision = %engine.precision(),
            resampling = %resampling.describe(),
            "model ready"
        );
        Ok(Analyzer {
            bundle,
            engine,
            classifier,
            resampling,
        })
    }

    /// The model's identity, as every report carries it.
    pub fn model_info(&self) -> ModelInfo {
        let m = &self.bundle.manifest;
        ModelInfo {
            id: m.id.clone(),
            version: m.version.clone(),
            sha256: m.sha256.clone(),
        }
    }

    /// The engine, for its counters.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Analyses one volume. `timing_ms` may already hold earlier stages (decoding).
    pub fn analyze(
        &self,
        volume: &Volume,
        mut timing_ms: BTreeMap<String, f64>,
    ) -> Result<Analysis> {
        let manifest = &self.bundle.manifest;
        let started = Instant::now();
        let mut clock = Instant::now();
        // Stages add up over the passes (one per working spacing).
        let mut lap = |name: &str, timing: &mut BTreeMap<String, f64>| {
            *timing.entry(name.to_owned()).or_insert(0.0) +=
                round_ms(clock.elapsed().as_secs_f64() * 1e3);
            clock = Instant::now();
        };
        let t = &manifest.thresholds;
        let thresholds = Thresholds {
            probability: t.probability,
            min_score: t.min_score,
            min_diameter_mm: t.min_diameter_mm,
        };
        let logits = manifest.output.kind == inference::OutputKind::Logits;
        let spacings = std::iter::once(manifest.input.spacing_mm)
            .chain(manifest.input.extra_spacings_mm.iter().copied());
        let mut warnings = volume.warnings.clone();
        let mut passes: Vec<Vec<postprocess::Measured>> = Vec::new();
        // The first pass's windowed image, which the classifier's crops come from.
        let mut first: Option<(ndarray::Array3<f32>, [f64; 3])> = None;
        let mut analyzed = true;
        for spacing_mm in spacings {
            let options = PrepareOptions {
                spacing_mm,
                hu_window: manifest.input.hu_window,
                patch: manifest.input.patch,
                overlap: manifest.input.overlap,
                lung_margin_mm: 8.0,
                resampling: self.resampling,
            };
            let prepared = preprocess::prepare(volume.hu.view(), volume.geometry.spacing, &options);
            lap("preprocess", &mut timing_ms);
            if passes.is_empty() && !prepared.lungs.looks_like_chest() {
                analyzed = false;
                warnings.push(format!(
                    "not a chest CT: only {:.0} ml of aerated lung in the field of view; the series was not analysed",
                    prepared.lungs.volume_ml
                ));
                break;
            }
            let patch = prepared.grid.patch;
            let tiles = prepared
                .grid
                .origins
                .iter()
                .map(|o| preprocess::extract_tile(prepared.image.view(), *o, patch, 0.0))
                .collect();
            let outputs = infer_mirrored(&self.engine, tiles, patch, &manifest.input.mirror_axes)?;
            lap("inference", &mut timing_ms);
            let shape = prepared.image.dim().into();
            let empty = if logits {
                postprocess::EMPTY_LOGIT
            } else {
                0.0
            };
            let stitched =
                postprocess::stitch(shape, patch, &prepared.grid.origins, &outputs, empty);
            let (prob, logit_map) = postprocess::probabilities_and_logits(stitched, logits);
            passes.push(postprocess::measure_candidates(
                prob.view(),
                logit_map.view(),
                prepared.scale,
                &prepared.lungs,
                volume,
                &thresholds,
            ));
            lap("postprocess", &mut timing_ms);
            if first.is_none() && self.classifier.is_some() {
                first = Some((prepared.image, prepared.scale));
            }
        }
        let mut found = postprocess::merge_passes(passes);
        if let (Some(engine), Some(spec), Some((image, scale))) =
            (&self.classifier, &manifest.classifier, &first)
        {
            let crops = found
                .iter()
                .map(|m| {
                    let f = &m.finding;
                    let [i, j, k] = f.center_voxel.map(f64::from);
                    let source = volume
                        .geometry
                        .patient_to_voxel(f.center_patient_mm)
                        .unwrap_or([k, j, i]);
                    let centre = std::array::from_fn(|a| source[a] / scale[a]);
                    preprocess::extract_crop(image.view(), centre, spec.crop, 0.0)
                })
                .collect();
            let logits: Vec<f32> = engine.infer(crops)?.into_iter().flatten().collect();
            postprocess::rescore(&mut found, &logits, spec.weight);
            lap("classify", &mut timing_ms);
        }
        let found = postprocess::rank(found);
        if analyzed {
            warnings.extend(findings::thick_slice_caveat(
                volume.geometry.spacing[0],
                volume.slice_thickness_mm,
            ));
        }
        let decode = timing_ms.get("decode").copied().unwrap_or(0.0);
        let total = decode + started.elapsed().as_secs_f64() * 1e3;
        timing_ms.insert("total".to_owned(), round_ms(total));
        let (findings, segments) = found.into_iter().map(|m| (m.finding, m.segment)).unzip();
        let report = self.report(volume, analyzed, findings, warnings, timing_ms);
        Ok(Analysis { report, segments })
    }

    fn report(
        &self,
        volume: &Volume,
        analyzed: bool,
        found: Vec<findings::Finding>,
        warnings: Vec<String>,
        timing_ms: BTreeMap<String, f64>,
    ) -> Report {
        let operating_score = self.bundle.manifest.thresholds.operating_score();
        let summary = findings::summarize(&found, operating_score);
        let [slices, rows, columns] = volume.shape();
        let [sk, sj, si] = volume.geometry.spacing;
        Report {
            schema: report::SCHEMA.to_owned(),
            study_instance_uid: volume.ids.study_instance_uid.clone(),
            series_instance_uid: volume.ids.series_instance_uid.clone(),
            frame_of_reference_uid: volume.ids.frame_of_reference_uid.clone(),
            analyzed,
            model: self.model_info(),
            pulmo: BuildInfo::current(),
            device: inference::device::describe(self.engine.device()),
            precision: self.engine.precision().name().to_owned(),
            series: SeriesInfo {
                slices,
                rows,
                columns,
                spacing_mm: [si, sj, sk].map(|v| findings::round_to(v, 4)),
                slice_thickness_mm: volume.slice_thickness_mm,
            },
            timing_ms,
            study_score: summary.study_score,
            lung_rads: summary.lung_rads,
            operating_score,
            warnings,
            disclaimer: report::DISCLAIMER.to_owned(),
            findings: found,
        }
    }
}

/// Runs the tiles, and again mirrored along each of `axes` (test-time augmentation), and
/// returns each tile's probabilities averaged over the passes. All passes go to the engine
/// at once, so they share batches.
fn infer_mirrored(
    engine: &Engine,
    tiles: Vec<Vec<f32>>,
    patch: [usize; 3],
    axes: &[usize],
) -> Result<Vec<Vec<f32>>> {
    if axes.is_empty() {
        return Ok(engine.infer(tiles)?);
    }
    let count = tiles.len();
    let mut all = Vec::with_capacity(count * (1 + axes.len()));
    for &axis in axes {
        all.extend(tiles.iter().map(|t| preprocess::mirror(t, patch, axis)));
    }
    all.extend(tiles);
    let mut outputs = engine.infer(all)?;
    let mut averaged = outputs.split_off(count * axes.len());
    for (pass, &axis) in outputs.chunks_exact(count).zip(axes) {
        for (sum, mirrored) in averaged.iter_mut().zip(pass) {
            let restored = preprocess::mirror(mirrored, patch, axis);
            sum.iter_mut().zip(restored).for_each(|(s, r)| *s += r);
        }
    }
    let passes = (1 + axes.len()) as f32;
    for tile in &mut averaged {
        tile.iter_mut().for_each(|p| *p /= passes);
    }
    Ok(averaged)
}

fn round_ms(ms: f64) -> f64 {
    findings::round_to(ms, 1)
}

/// What became of one series (or of a study with nothing to analyse).
#[derive(Debug)]
pub enum Outcome {
    /// The series was analysed (or judged not to be a chest CT, see `report.analyzed`).
    Analyzed(Box<Analysis>),
    /// The series, or a study without any analysable series, failed with a reason.
    Failed {
        study_instance_uid: String,
        series_instance_uid: Option<String>,
        reason: String,
    },
}

impl Analyzer {
    /// Decodes a series into a volume and analyses it, timing the decode too.
    pub fn analyze_series(&self, series: &Series) -> Result<Analysis> {
        self.analyze_series_with(series, &|_, _| {})
    }

    /// [`Analyzer::analyze_series`], handing the volume and its analysis to `encode` while
    /// the volume is still in memory (DICOM SR, SEG and key images need its pixels).
    pub fn analyze_series_with(
        &self,
        series: &Series,
        encode: &VolumeHook<'_>,
    ) -> Result<Analysis> {
        let started = Instant::now();
        let volume = volume::assemble(series)?;
        let decode = round_ms(started.elapsed().as_secs_f64() * 1e3);
        let analysis = self.analyze(&volume, BTreeMap::from([("decode".to_owned(), decode)]))?;
        encode(&volume, &analysis);
        Ok(analysis)
    }

    /// Analyses the chosen CT series of every study, `jobs` series at a time, so that one
    /// series decodes while another's tiles are in the network. `done` sees each outcome
    /// as it happens; the returned outcomes are in study order.
    pub fn analyze_studies(
        &self,
        studies: &[Study],
        rules: &SelectionRules,
        jobs: usize,
        done: &(dyn Fn(&Outcome) + Sync),
    ) -> Vec<Outcome> {
        self.analyze_studies_with(studies, rules, jobs, done, &|_, _| {})
    }

    /// [`Analyzer::analyze_studies`], with `encode` seeing each analysed volume and its
    /// analysis (before `done` sees the outcome).
    pub fn analyze_studies_with(
        &self,
        studies: &[Study],
        rules: &SelectionRules,
        jobs: usize,
        done: &(dyn Fn(&Outcome) + Sync),
        encode: &VolumeHook<'_>,
    ) -> Vec<Outcome> {
        let mut work: Vec<(usize, &Series)> = Vec::new();
        let mut outcomes: Vec<Option<Outcome>> = Vec::new();
        for study in studies {
            let selection = ingest::select(study, rules);
            match selection.chosen {
                Some(series) => work.push((outcomes.len(), series)),
                None => {
                    let outcome = no_series(study, &selection);
                    done(&outcome);
                    outcomes.push(Some(outcome));
                    continue;
                }
            }
            outcomes.push(None);
        }
        let (queue, tasks) = crossbeam_channel::unbounded();
        for item in work {
            queue
                .send(item)
                .expect("the receiver is alive. This is a bug.");
        }
        drop(queue);
        let results = std::sync::Mutex::new(outcomes);
        std::thread::scope(|scope| {
            for _ in 0..jobs.max(1) {
                scope.spawn(|| {
                    for (slot, series) in tasks.iter() {
                        let outcome = self.outcome(series, encode);
                        done(&outcome);
                        results.lock().expect("no worker panics while holding it")[slot] =
                            Some(outcome);
                    }
                });
            }
        });
        let results = results.into_inner().expect("workers finished");
        results
            .into_iter()
            .map(|o| o.expect("every slot is filled. This is a bug."))
            .collect()
    }

    fn outcome(&self, series: &Series, encode: &VolumeHook<'_>) -> Outcome {
        match self.analyze_series_with(series, encode) {
            Ok(analysis) => Outcome::Analyzed(Box::new(analysis)),
            Err(err) => {
                tracing::warn!(series = %series.series_instance_uid, error = %format!("{err:#}"), "series failed");
                Outcome::Failed {
                    study_instance_uid: series.study_instance_uid.clone(),
                    series_instance_uid: Some(series.series_instance_uid.clone()),
                    reason: error_chain(&err),
                }
            }
        }
    }
}

/// A study none of whose series passed the selection rules, with every reason.
fn no_series(study: &Study, selection: &ingest::Selection<'_>) -> Outcome {
    let reasons: Vec<String> = selection
        .rejected
        .iter()
        .map(|r| format!("series {}: {}", r.series.series_instance_uid, r.reason))
        .collect();
    let reason = if reasons.is_empty() {
        "no CT series to analyse".to_owned()
    } else {
        format!("no CT series to analyse: {}", reasons.join("; "))
    };
    Outcome::Failed {
        study_instance_uid: study.study_instance_uid.clone(),
        series_instance_uid: None,
        reason,
    }
}

/// An error and its causes on one line, as `a: b: c`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{Laterality, LungRads, NoduleType};
    use crate::volume::{Geometry, SeriesIds, SliceRef};
    use ndarray::Array3;

    #[test]
    fn mirrored_passes_are_mirrored_back_before_averaging() {
        use crate::inference::engine::tests::smoke_engine;
        use crate::inference::Precision;
        // The smoke model is one 3x3x3 box filter (every weight equal) and a sigmoid, so it
        // commutes with mirroring: correctly restored passes average to the plain output,
        // while a pass left mirrored would blur an asymmetric tile's answer.
        let engine = smoke_engine("mirrored", Precision::Float32, BatchPolicy::default());
        let patch = [32, 32, 32];
        let ramp: Vec<f32> = (0..32 * 32 * 32)
            .map(|v| (v % 32) as f32 / 8.0 - (v / 1024) as f32 / 16.0)
            .collect();
        let plain = engine.infer(vec![ramp.clone()]).unwrap();
        let averaged = infer_mirrored(&engine, vec![ramp.clone()], patch, &[0, 2]).unwrap();
        let (_, tiles, _) = engine.stats().snapshot();
        assert_eq!(tiles, 1 + 3, "one plain pass and two mirrored passes");
        let worst = plain[0]
            .iter()
            .zip(&averaged[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "largest difference {worst}");
        let unrestored = engine
            .infer(vec![preprocess::mirror(&ramp, patch, 2)])
            .unwrap();
        let centre_row = (16 * 32 + 16) * 32;
        assert!((unrestored[0][centre_row + 2] - plain[0][centre_row + 2]).abs() > 0.1);
    }

    fn threshold_analyzer() -> Analyzer {
        threshold_analyzer_resampling(ResampleChoice::Auto)
    }

    fn threshold_analyzer_resampling(resample: ResampleChoice) -> Analyzer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/threshold-test");
        let config = AnalyzerConfig {
            device: DeviceChoice::Cpu,
            resample,
            ..AnalyzerConfig::new(dir)
        };
        Analyzer::start(&config).expect("the test bundle must load")
    }

    #[test]
    fn resampling_with_tensor_ops_on_the_device_gives_the_same_report() {
        // The path a GPU takes (`--resample device`), here on the CPU device: the same
        // findings, measurements and scores as resampling with rayon.
        let volume = chest_with(&[
            ([-70.0, 0.0, 0.0], 7.0, 100.0),
            ([75.0, 10.0, 0.0], 4.0, 30.0),
        ]);
        let cpu = threshold_analyzer_resampling(ResampleChoice::Cpu);
        assert_eq!(cpu.resampling, Resampling::Cpu);
        let device = threshold_analyzer_resampling(ResampleChoice::Device);
        assert_eq!(device.resampling, Resampling::Device(tch::Device::Cpu));
        let on_cpu = cpu.analyze(&volume, BTreeMap::new()).unwrap().report;
        let on_device = device.analyze(&volume, BTreeMap::new()).unwrap().report;
        assert_eq!(on_cpu.findings.len(), 2);
        assert_eq!(on_device.findings, on_cpu.findings);
        assert_eq!(on_device.warnings, on_cpu.warnings);
    }

    /// A 1 mm-pixel, 1.5 mm-slice chest with two lungs and one 12 mm solid sphere in the
    /// patient's left lung (LPS +x) centred at `nodule` (mm).
    fn chest(nodule: [f64; 3]) -> Volume {
        chest_with(&[(nodule, 6.0, 30.0)])
    }

    /// The same chest with spheres `(centre mm, radius mm, HU)`.
    fn chest_with(nodules: &[([f64; 3], f64, f32)]) -> Volume {
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

    #[test]
    fn a_sphere_in_the_left_lung_is_found_measured_and_located() {
        let analyzer = threshold_analyzer();
        let nodule = [75.0, 10.0, 0.0];
        let report = analyzer
            .analyze(&chest(nodule), BTreeMap::new())
            .unwrap()
            .report;
        assert!(report.analyzed);
        assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
        let f = &report.findings[0];
        for (got, want) in f.center_patient_mm.iter().zip(nodule) {
            assert!((got - want).abs() < 1.0, "{:?}", f.center_patient_mm);
        }
        // Slice through z = 0 is k = 40 (origin -60 mm, 1.5 mm apart).
        assert_eq!(f.center_voxel, [225, 130, 40]);
        assert_eq!(f.sop_instance_uid, "1.2.826.0.1.3680043.10.1.40");
        assert_eq!(f.instance_number, Some(41));
        assert!(
            (f.diameter_mm - 12.0).abs() <= 1.0,
            "diameter {}",
            f.diameter_mm
        );
        // The test model cuts at -300 HU, inside the edge's midpoint (-415 HU) after the
        // 2 mm resampling blur, so the measured sphere is a little small (r ~5.6 mm).
        let sphere = 4.0 / 3.0 * std::f64::consts::PI * 216.0;
        assert!(
            (f.volume_mm3 - sphere).abs() / sphere < 0.25,
            "volume {}",
            f.volume_mm3
        );
        assert_eq!(f.nodule_type, NoduleType::Solid);
        assert_eq!(f.lung_rads, LungRads::Cat4A);
        assert_eq!(f.laterality, Laterality::Left);
        assert!((f.mean_hu - 30.0).abs() < 60.0);
        assert_eq!(report.lung_rads, LungRads::Cat4A);
        for stage in ["preprocess", "inference", "postprocess", "total"] {
            assert!(report.timing_ms.contains_key(stage), "{stage}");
        }
    }

    /// The threshold bundle with the stand-in classifier of `models/threshold-test/`
    /// (logit = 40 * (0.3 - mean of an 8-voxel crop)) at `weight`.
    fn classifier_analyzer(weight: f64) -> Analyzer {
        use sha2::Digest;
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/threshold-test");
        let sha = sha2::Sha256::digest(std::fs::read(from.join("classifier.pt")).unwrap());
        test_bundle_analyzer(
            &format!("classifier-{weight}"),
            &["classifier.pt"],
            |manifest| {
                manifest
                + &format!(
                    "[classifier]\nfile = \"classifier.pt\"\nsha256 = \"{sha:x}\"\ncrop = [8, 8, 8]\nweight = {weight:?}\n"
                )
            },
        )
    }

    #[test]
    fn a_bundle_whose_classifier_answers_per_voxel_is_refused_at_start() {
        // The detector named as the classifier: its warm-up answer has the wrong shape.
        use sha2::Digest;
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/threshold-test");
        let scratch = tempfile::Builder::new()
            .prefix("pulmo-wrong-head-")
            .tempdir()
            .unwrap();
        let dir = scratch.path();
        std::fs::copy(from.join("model.pt"), dir.join("model.pt")).unwrap();
        let sha = sha2::Sha256::digest(std::fs::read(from.join("model.pt")).unwrap());
        let manifest = std::fs::read_to_string(from.join("manifest.toml")).unwrap()
            + &format!(
                "[classifier]\nfile = \"model.pt\"\nsha256 = \"{sha:x}\"\ncrop = [8, 8, 8]\nweight = 0.5\n"
            );
        std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
        let config = AnalyzerConfig {
            device: DeviceChoice::Cpu,
            ..AnalyzerConfig::new(dir.to_path_buf())
        };
        let err = Analyzer::start(&config)
            .err()
            .expect("a wrong classifier must fail at start");
        let message = err.to_string();
        assert!(message.contains("model.pt gave wrong numbers"), "{message}");
        assert!(
            message.contains(
                "output shape [1, 1, 8, 8, 8] for input [1, 1, 8, 8, 8]; expected [1, 1]"
            ),
            "{message}"
        );
    }

    /// The threshold test bundle copied to a scratch folder with `files` beside its model and
    /// its manifest changed by `edit`, started on the CPU.
    fn test_bundle_analyzer(
        name: &str,
        files: &[&str],
        edit: impl FnOnce(String) -> String,
    ) -> Analyzer {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/threshold-test");
        // Removed on return: the analyzer has loaded its networks when it has started.
        let scratch = tempfile::Builder::new()
            .prefix(&format!("pulmo-{name}-"))
            .tempdir()
            .unwrap();
        let dir = scratch.path();
        for file in std::iter::once(&"model.pt").chain(files) {
            std::fs::copy(from.join(file), dir.join(file)).unwrap();
        }
        let manifest = edit(std::fs::read_to_string(from.join("manifest.toml")).unwrap());
        std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
        let config = AnalyzerConfig {
            device: DeviceChoice::Cpu,
            ..AnalyzerConfig::new(dir.to_path_buf())
        };
        Analyzer::start(&config).unwrap_or_else(|e| panic!("the {name} test bundle must load: {e}"))
    }

    #[test]
    fn the_candidate_classifier_reranks_the_findings() {
        // A 14 mm sphere of 100 HU (the higher peak: the threshold net's logit grows with
        // HU) and an 8 mm one of 30 HU, which has less tissue in its crop.
        let volume = chest_with(&[
            ([-70.0, 0.0, 0.0], 7.0, 100.0),
            ([75.0, 10.0, 0.0], 4.0, 30.0),
        ]);
        let sides = |report: &Report| -> Vec<Laterality> {
            report.findings.iter().map(|f| f.laterality).collect()
        };
        let plain = threshold_analyzer()
            .analyze(&volume, BTreeMap::new())
            .unwrap()
            .report;
        assert_eq!(sides(&plain), [Laterality::Right, Laterality::Left]);
        assert!(!plain.timing_ms.contains_key("classify"));

        let analysis = classifier_analyzer(1.0)
            .analyze(&volume, BTreeMap::new())
            .unwrap();
        let rescored = &analysis.report;
        assert_eq!(sides(rescored), [Laterality::Left, Laterality::Right]);
        assert!(rescored.timing_ms.contains_key("classify"));
        // The big one's crop is about a third sphere: its classifier logit is negative.
        assert!(rescored.findings[1].score < plain.findings[0].score);
        assert!(rescored.findings[0].score > plain.findings[1].score);
        let ids: Vec<u32> = analysis.segments.iter().map(|s| s.finding_id).collect();
        assert_eq!(ids, [1, 2]);
        // Measurements are the detector's.
        for f in &rescored.findings {
            let same = plain
                .findings
                .iter()
                .find(|p| p.laterality == f.laterality)
                .unwrap();
            assert_eq!(
                (f.center_patient_mm, f.diameter_mm),
                (same.center_patient_mm, same.diameter_mm)
            );
        }
        // Weight 0: the detector's order and scores.
        let zero = classifier_analyzer(0.0)
            .analyze(&volume, BTreeMap::new())
            .unwrap()
            .report;
        assert_eq!(zero.findings, plain.findings);
    }

    /// The threshold test model with an operating point in its manifest.
    fn operating_analyzer(score: f64) -> Analyzer {
        test_bundle_analyzer(&format!("operating-{score}"), &[], |manifest| {
            let edited = manifest.replace(
                "min_diameter_mm = 3.0\n",
                &format!("min_diameter_mm = 3.0\noperating_score = {score:?}\n"),
            );
            assert!(edited.contains("operating_score"));
            edited
        })
    }

    #[test]
    fn only_findings_at_the_operating_point_set_the_study_category() {
        // A 14 mm solid nodule and an 8 mm one, the bigger scoring higher.
        let volume = chest_with(&[
            ([-70.0, 0.0, 0.0], 7.0, 100.0),
            ([75.0, 10.0, 0.0], 4.0, 30.0),
        ]);
        let all = threshold_analyzer()
            .analyze(&volume, BTreeMap::new())
            .unwrap()
            .report;
        let [big, small] = [&all.findings[0], &all.findings[1]];
        assert!(big.score > small.score);
        assert!(big.lung_rads > LungRads::Cat2, "{:?}", big.lung_rads);
        assert_eq!(all.lung_rads, big.lung_rads.max(small.lung_rads));
        assert_eq!(all.study_score, big.score);
        assert_eq!(all.operating_score, 0.1);

        // The operating point above both: nothing is called, both are still listed.
        let above = operating_analyzer(1.0)
            .analyze(&volume, BTreeMap::new())
            .unwrap()
            .report;
        assert_eq!(above.findings, all.findings);
        assert_eq!(above.lung_rads, LungRads::Cat1);
        assert_eq!(above.study_score, big.score);
        assert_eq!(above.operating_score, 1.0);
        // At the big one's score: it is called (the operating point is inclusive).
        let at = operating_analyzer(big.score)
            .analyze(&volume, BTreeMap::new())
            .unwrap()
            .report;
        assert_eq!(at.lung_rads, big.lung_rads);
    }

    #[test]
    fn the_dicom_results_carry_only_the_calls() {
        use results::{encode, Choice};
        let volume = chest_with(&[
            ([-70.0, 0.0, 0.0], 7.0, 100.0),
            ([75.0, 10.0, 0.0], 4.0, 30.0),
        ]);
        let every = Choice {
            sr: true,
            seg: true,
            images: true,
            capture: true,
        };
        let contains =
            |bytes: &[u8], text: &str| bytes.windows(text.len()).any(|w| w == text.as_bytes());
        // Ranks and scores come from the plain threshold model.
        let all = threshold_analyzer()
            .analyze(&volume, BTreeMap::new())
            .unwrap();
        assert_eq!(all.report.findings.len(), 2);
        let big = all.report.findings[0].score;

        // Only the bigger one is called: the smaller stays in the JSON report alone.
        let at = operating_analyzer(big)
            .analyze(&volume, BTreeMap::new())
            .unwrap();
        assert_eq!(at.report.findings.len(), 2);
        let encoded = encode(&volume, &at, every).unwrap();
        let suffixes: Vec<&str> = encoded.iter().map(|e| e.suffix.as_str()).collect();
        assert_eq!(
            suffixes,
            ["sr.dcm", "seg.dcm", "finding-1.png", "finding-1.sc.dcm"]
        );
        for (e, kind) in encoded.iter().zip(["SR", "SEG"]) {
            assert!(contains(&e.bytes, "nodule-1"), "{kind}");
            assert!(!contains(&e.bytes, "nodule-2"), "{kind}");
        }

        // No call: an SR that lists no nodule, and nothing else.
        let none = operating_analyzer(1.0)
            .analyze(&volume, BTreeMap::new())
            .unwrap();
        let encoded = encode(&volume, &none, every).unwrap();
        assert_eq!(encoded.len(), 1);
        assert_eq!(encoded[0].suffix, "sr.dcm");
        assert!(!contains(&encoded[0].bytes, "nodule-"));

        // Without an operating point every finding is a call.
        let suffixes: Vec<String> = encode(&volume, &all, every)
            .unwrap()
            .into_iter()
            .map(|e| e.suffix)
            .collect();
        assert_eq!(suffixes.len(), 2 + 2 * 2, "{suffixes:?}");
    }

    #[test]
    fn a_nodule_in_the_right_lung_is_on_the_right() {
        let report = threshold_analyzer()
            .analyze(&chest([-70.0, -20.0, 10.0]), BTreeMap::new())
            .unwrap()
            .report;
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.findings[0].laterality, Laterality::Right);
    }

    #[test]
    fn a_thick_slice_series_is_analysed_with_a_caveat_and_a_thin_one_without() {
        let analyzer = threshold_analyzer();
        let mut volume = chest([75.0, 10.0, 0.0]);
        let thin = analyzer.analyze(&volume, BTreeMap::new()).unwrap().report;
        assert!(thin.warnings.is_empty(), "{:?}", thin.warnings);
        volume.slice_thickness_mm = Some(5.0);
        let thick = analyzer.analyze(&volume, BTreeMap::new()).unwrap().report;
        assert!(thick.analyzed);
        assert_eq!(thick.findings.len(), 1);
        assert!(
            thick
                .warnings
                .iter()
                .any(|w| w.contains("slice thickness 5.00 mm")),
            "{:?}",
            thick.warnings
        );
    }

    #[test]
    fn a_volume_without_lungs_is_not_analysed_into_findings() {
        let mut head = chest([0.0, 0.0, 0.0]);
        head.hu.mapv_inplace(|v| if v > -900.0 { 35.0 } else { v });
        let report = threshold_analyzer()
            .analyze(&head, BTreeMap::new())
            .unwrap()
            .report;
        assert!(!report.analyzed);
        assert!(report.findings.is_empty());
        assert_eq!(report.lung_rads, LungRads::Cat1);
        assert!(
            report.warnings.iter().any(|w| w.contains("not a chest CT")),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn a_broken_bundle_stops_start_up_with_its_directory_named() {
        let err = Analyzer::start(&AnalyzerConfig::new("/nonexistent/bundle"))
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("/nonexistent/bundle"),
            "{err:#}"
        );
    }
}
