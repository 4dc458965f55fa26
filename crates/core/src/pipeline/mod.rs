//! Pipeline: the one place where the stages are composed. Every transport calls it.
//!
//! An [`Analyzer`] holds an opened model bundle and the [`Backend`] that runs its networks
//! (libtorch in the binary; a plain-Rust one in tests); it turns a
//! [`Volume`] into a [`Report`]: preprocess, inference (batched with whatever else runs),
//! postprocess, findings, report.

pub mod results;

pub use results::Choice;

use std::collections::BTreeMap;

use ndarray::Array3;
use std::time::Instant;

use crate::compare::{self, Snapshot};
use crate::findings;
use crate::postprocess::{self, Thresholds};
use crate::preprocess::{self, PrepareOptions};
use crate::report::{self, BuildInfo, ModelInfo, Report, SeriesInfo};
use pulmo_backend::{Backend, Bundle, Network, OutputKind};
use pulmo_dicom::ingest::{self, SelectionRules, Study};
use pulmo_dicom::volume::{self, Series, Volume};

/// What can stop the pipeline from analysing a series.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Backend(#[from] pulmo_backend::Error),
    #[error(transparent)]
    Volume(#[from] volume::Error),
    #[error("could not encode the results")]
    Encode(#[from] report::Error),
}

/// Results of this stage.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything one analysis produced: the report and each finding's voxels, which the
/// DICOM encoders (SEG, key images) need and the JSON report does not carry.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub report: Report,
    /// One per finding, in the findings' order, on the source grid.
    pub segments: Vec<postprocess::Segment>,
    /// The encoded DICOM results and key images of the calls, when they were asked for
    /// ([`Analyzer::analyze_series`]); made while the volume was in memory.
    pub results: Vec<results::Encoded>,
    /// What a later study needs to be compared with this one (lung surface, study date).
    pub snapshot: Snapshot,
}

impl Analysis {
    /// This analysis as the prior of a later study.
    pub fn as_prior(&self) -> compare::Prior {
        compare::Prior {
            report: self.report.clone(),
            snapshot: self.snapshot.clone(),
        }
    }
}

/// The views of the top findings a snapshot keeps ([`compare::Snapshot::views`]); a view
/// that cannot be encoded is left out (a later key image then shows the current scan alone).
fn views(analysis: &Analysis, volume: &Volume) -> Vec<compare::FindingView> {
    analysis
        .report
        .findings
        .iter()
        .take(compare::MAX_VIEWS)
        .filter_map(|f| {
            let segment = analysis.segments.iter().find(|s| s.finding_id == f.id);
            let png = report::images::view_png(f, segment, volume).ok()?;
            Some(compare::FindingView::new(f.id, &png))
        })
        .collect()
}

/// A loaded model, ready to analyse volumes from any number of threads at once.
pub struct Analyzer {
    bundle: Bundle,
    backend: Backend,
}

impl Analyzer {
    /// The pipeline around `bundle`'s networks, started by a backend on one device.
    pub fn new(bundle: Bundle, backend: Backend) -> Analyzer {
        tracing::info!(
            model = %bundle.manifest.id,
            version = %bundle.manifest.version,
            device = %backend.device,
            precision = %backend.precision,
            resampling = %backend.resampler.as_ref().map_or("cpu".to_owned(), |r| r.describe()),
            "model ready"
        );
        Analyzer { bundle, backend }
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

    /// The backend: its device, number format and the detector's counters.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Analyses one volume. `timing_ms` may already hold earlier stages (decoding).
    ///
    /// One [`pass`](Self::pass) per working spacing (`input.spacing_mm`, then
    /// `input.extra_spacings_mm`), their findings merged; then, when the bundle has a
    /// classifier, [`classify`](Self::classify) rescores them; then they are ranked. A
    /// volume without lungs in view is reported as not a chest CT after the first
    /// preprocessing, with no findings.
    pub fn analyze(&self, volume: &Volume, timing_ms: BTreeMap<String, f64>) -> Result<Analysis> {
        let started = Instant::now();
        let mut clock = Clock::new(timing_ms);
        let mut warnings = volume.warnings.clone();
        let mut passes = Vec::new();
        // The first pass's windowed image and scale, which the classifier's crops come from.
        let mut first: Option<(Array3<f32>, [f64; 3])> = None;
        let mut surface = Vec::new();
        for spacing_mm in self.spacings() {
            let prepared = self.prepare(volume, spacing_mm);
            clock.lap("preprocess");
            if passes.is_empty() && !prepared.lungs.looks_like_chest() {
                warnings.push(format!(
                    "not a chest CT: only {:.0} ml of aerated lung in the field of view; the series was not analysed",
                    prepared.lungs.volume_ml
                ));
                return Ok(self.finish(volume, false, Vec::new(), warnings, clock, started));
            }
            if passes.is_empty() {
                surface = lung_surface(volume, &prepared);
            }
            let tiles = prepared.tiles();
            let preprocess::Prepared {
                image,
                lungs,
                scale,
                grid,
            } = prepared;
            // Only the classifier's crops need the image again; a later pass frees its
            // (larger) image before its maps are made.
            if first.is_none() && self.backend.classifier.is_some() {
                first = Some((image, scale));
            } else {
                drop(image);
            }
            passes.push(self.pass(volume, tiles, &grid, &lungs, scale, &mut clock)?);
        }
        let mut found = postprocess::merge_passes(passes);
        if let Some((image, scale)) = &first {
            self.classify(volume, image, *scale, &mut found)?;
            clock.lap("classify");
        }
        warnings.extend(findings::thick_slice_caveat(
            volume.geometry.spacing[0],
            volume.slice_thickness_mm,
        ));
        let mut analysis = self.finish(volume, true, found, warnings, clock, started);
        analysis.snapshot.lung_surface_mm = surface;
        analysis.snapshot.views = views(&analysis, volume);
        Ok(analysis)
    }

    /// The working spacings, one pass each: the manifest's first, then its extra ones.
    fn spacings(&self) -> impl Iterator<Item = [f64; 3]> + '_ {
        let input = &self.bundle.manifest.input;
        std::iter::once(input.spacing_mm).chain(input.extra_spacings_mm.iter().copied())
    }

    /// Resamples, windows and tiles the volume for a pass at `spacing_mm`.
    fn prepare(&self, volume: &Volume, spacing_mm: [f64; 3]) -> preprocess::Prepared {
        let input = &self.bundle.manifest.input;
        let options = PrepareOptions {
            spacing_mm,
            hu_window: input.hu_window,
            patch: input.patch,
            overlap: input.overlap,
            lung_margin_mm: 8.0,
            resampler: self.backend.resampler.as_deref(),
        };
        preprocess::prepare(volume.hu.view(), volume.geometry.spacing, &options)
    }

    /// One pass: the detector on a pass's `tiles` (and their mirrors, when the manifest
    /// asks for test-time mirroring), stitched on the working grid, and the candidates
    /// measured on the source grid.
    fn pass(
        &self,
        volume: &Volume,
        tiles: Vec<Vec<f32>>,
        grid: &preprocess::TileGrid,
        lungs: &preprocess::LungMask,
        scale: [f64; 3],
        clock: &mut Clock,
    ) -> Result<Vec<postprocess::Measured>> {
        let manifest = &self.bundle.manifest;
        let detector = self.backend.detector.as_ref();
        let outputs = infer_mirrored(detector, tiles, grid.patch, &manifest.input.mirror_axes)?;
        clock.lap("inference");
        let logits = manifest.output.kind == OutputKind::Logits;
        let empty = if logits {
            postprocess::EMPTY_LOGIT
        } else {
            0.0
        };
        let stitched = postprocess::stitch(grid.shape, grid.patch, &grid.origins, &outputs, empty);
        drop(outputs);
        let t = &manifest.thresholds;
        let thresholds = Thresholds {
            probability: t.probability,
            min_score: t.min_score,
            min_diameter_mm: t.min_diameter_mm,
        };
        let measured =
            postprocess::measure_candidates(stitched, logits, scale, lungs, volume, &thresholds);
        clock.lap("postprocess");
        Ok(measured)
    }

    /// Rescores the findings with the candidate classifier: a crop of the first pass's
    /// windowed `image` (source index / `scale` = working index) around each finding, one
    /// logit each, combined with the detector's peak by the manifest's weight.
    fn classify(
        &self,
        volume: &Volume,
        image: &Array3<f32>,
        scale: [f64; 3],
        found: &mut [postprocess::Measured],
    ) -> Result<()> {
        let (Some(classifier), Some(spec)) =
            (&self.backend.classifier, &self.bundle.manifest.classifier)
        else {
            return Ok(());
        };
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
        let logits: Vec<f32> = classifier.infer(crops)?.into_iter().flatten().collect();
        postprocess::rescore(found, &logits, spec.weight);
        Ok(())
    }

    /// Ranks the findings and makes the report, with the total time.
    fn finish(
        &self,
        volume: &Volume,
        analyzed: bool,
        found: Vec<postprocess::Measured>,
        warnings: Vec<String>,
        clock: Clock,
        started: Instant,
    ) -> Analysis {
        let found = postprocess::rank(found);
        let mut timing_ms = clock.timing_ms;
        let decode = timing_ms.get("decode").copied().unwrap_or(0.0);
        let total = decode + started.elapsed().as_secs_f64() * 1e3;
        timing_ms.insert("total".to_owned(), round_ms(total));
        let (mut findings, segments): (Vec<findings::Finding>, _) =
            found.into_iter().map(|m| (m.finding, m.segment)).unzip();
        // Named after the series and the finding's place in it: analysing the same series
        // again gives the same Tracking UIDs.
        for finding in &mut findings {
            let [i, j, k] = finding.center_voxel;
            let name = format!(
                "pulmo-tracking/{}/{i}/{j}/{k}",
                volume.ids.series_instance_uid
            );
            finding.tracking_uid = Some(report::uid_of(&name));
        }
        let report = self.report(volume, analyzed, findings, warnings, timing_ms);
        let study_date = Some(volume.source.study_date.trim().to_owned()).filter(|d| !d.is_empty());
        Analysis {
            report,
            segments,
            results: Vec::new(),
            snapshot: Snapshot {
                lung_surface_mm: Vec::new(),
                study_date,
                patient_key: compare::patient_key(
                    &volume.source.patient_id,
                    &volume.source.issuer_of_patient_id,
                ),
                views: Vec::new(),
            },
        }
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
        let lung_rads_rule = findings::study_rule(&found, operating_score, summary.lung_rads);
        let [slices, rows, columns] = volume.shape();
        let [sk, sj, si] = volume.geometry.spacing;
        Report {
            schema: report::SCHEMA.to_owned(),
            study_instance_uid: volume.ids.study_instance_uid.clone(),
            series_instance_uid: volume.ids.series_instance_uid.clone(),
            frame_of_reference_uid: volume.ids.frame_of_reference_uid.clone(),
            analyzed,
            model: self.model_info(),
            pulmo: BuildInfo::current(&self.backend.runtime_version),
            device: self.backend.device.clone(),
            precision: self.backend.precision.name().to_owned(),
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
            lung_rads_rule,
            comparison: None,
            resolved: Vec::new(),
        }
    }
}

/// The lung surface of a pass's mask in patient coordinates (mm): working index × scale is
/// the source index.
fn lung_surface(volume: &Volume, prepared: &preprocess::Prepared) -> Vec<[f64; 3]> {
    let scale = prepared.scale;
    let surface = prepared.lungs.surface();
    // Thinned as registration would thin it, so that a snapshot stays small to keep.
    let stride = surface.len().div_ceil(compare::register::MAX_POINTS).max(1);
    surface
        .into_iter()
        .step_by(stride)
        .map(|w| {
            volume
                .geometry
                .voxel_to_patient(std::array::from_fn(|a| w[a] * scale[a]))
        })
        .collect()
}

/// Runs the tiles, and again mirrored along each of `axes` (test-time augmentation), and
/// returns each tile's probabilities averaged over the passes. All passes go to the engine
/// at once, so they share batches.
fn infer_mirrored(
    engine: &dyn Network,
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

/// Stage timings of one analysis: each lap adds the time since the last one to a stage,
/// so stages add up over the passes.
struct Clock {
    timing_ms: BTreeMap<String, f64>,
    since: Instant,
}

impl Clock {
    fn new(timing_ms: BTreeMap<String, f64>) -> Clock {
        Clock {
            timing_ms,
            since: Instant::now(),
        }
    }

    fn lap(&mut self, stage: &str) {
        let ms = round_ms(self.since.elapsed().as_secs_f64() * 1e3);
        *self.timing_ms.entry(stage.to_owned()).or_insert(0.0) += ms;
        self.since = Instant::now();
    }
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
    /// Decodes a series into a volume and analyses it, timing the decode too; then, while
    /// the volume is still in memory (DICOM SR, SEG and key images need its pixels),
    /// encodes the results `choice` asks for into [`Analysis::results`]. Slices whose pixels
    /// do not decode are left out (with a warning in the report) as long as the `rules`'
    /// minimum number of frames remains.
    pub fn analyze_series(
        &self,
        series: &Series,
        rules: &SelectionRules,
        choice: Choice,
    ) -> Result<Analysis> {
        self.analyze_series_with_prior(series, rules, choice, None)
    }

    /// [`analyze_series`](Self::analyze_series), then, when there is a `prior` study of the
    /// same patient, the comparison with it ([`compare::compare`]) before the results are
    /// encoded, so that the SR and SEG carry the prior's Tracking UIDs and the changes.
    pub fn analyze_series_with_prior(
        &self,
        series: &Series,
        rules: &SelectionRules,
        choice: Choice,
        prior: Option<&compare::Prior>,
    ) -> Result<Analysis> {
        let started = Instant::now();
        let volume = volume::assemble_at_least(series, rules.min_frames)?;
        let decode = round_ms(started.elapsed().as_secs_f64() * 1e3);
        let mut analysis =
            self.analyze(&volume, BTreeMap::from([("decode".to_owned(), decode)]))?;
        if let Some(prior) = prior.filter(|_| analysis.report.analyzed) {
            compare::compare(&mut analysis.report, &analysis.snapshot, prior);
        }
        if choice != Choice::NONE {
            let started = Instant::now();
            analysis.results = results::encode(&volume, &analysis, choice, prior)?;
            pulmo_metrics::stage("encode", started.elapsed().as_secs_f64());
        }
        Ok(analysis)
    }

    /// Analyses the chosen CT series of every study, `jobs` series at a time, so that one
    /// series decodes while another's tiles are in the network, encoding the results
    /// `choice` asks for. `done` sees each outcome as it happens, with its encoded results;
    /// the returned outcomes are in study order, without them (they would pile up).
    pub fn analyze_studies(
        &self,
        studies: &[Study],
        rules: &SelectionRules,
        jobs: usize,
        choice: Choice,
        done: &(dyn Fn(&Outcome) + Sync),
    ) -> Vec<Outcome> {
        self.analyze_studies_with_prior(studies, rules, jobs, choice, None, done)
    }

    /// [`analyze_studies`](Self::analyze_studies), each series compared with `prior`
    /// when there is one.
    pub fn analyze_studies_with_prior(
        &self,
        studies: &[Study],
        rules: &SelectionRules,
        jobs: usize,
        choice: Choice,
        prior: Option<&compare::Prior>,
        done: &(dyn Fn(&Outcome) + Sync),
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
                        let mut outcome = self.outcome(series, rules, choice, prior);
                        done(&outcome);
                        if let Outcome::Analyzed(analysis) = &mut outcome {
                            analysis.results = Vec::new();
                        }
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

    fn outcome(
        &self,
        series: &Series,
        rules: &SelectionRules,
        choice: Choice,
        prior: Option<&compare::Prior>,
    ) -> Outcome {
        match self.analyze_series_with_prior(series, rules, choice, prior) {
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

pub use pulmo_dicom::error_chain;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{Laterality, LungRads, NoduleType};
    use crate::testing;

    #[test]
    fn mirrored_passes_are_mirrored_back_before_averaging() {
        // A 3x3x3 box filter (every weight equal) and a sigmoid commutes with mirroring:
        // correctly restored passes average to the plain output, while a pass left mirrored
        // would blur an asymmetric tile's answer.
        let patch = [32, 32, 32];
        let engine = testing::BoxFilterNet::new(patch);
        let ramp: Vec<f32> = (0..32 * 32 * 32)
            .map(|v| (v % 32) as f32 / 8.0 - (v / 1024) as f32 / 16.0)
            .collect();
        let plain = engine.infer(vec![ramp.clone()]).unwrap();
        let averaged = infer_mirrored(&engine, vec![ramp.clone()], patch, &[0, 2]).unwrap();
        assert_eq!(
            engine.stats().inputs,
            1 + 3,
            "one plain pass and two mirrored passes"
        );
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
        testing::threshold_analyzer()
    }

    /// A 1 mm-pixel, 1.5 mm-slice chest with two lungs and one 12 mm solid sphere in the
    /// patient's left lung (LPS +x) centred at `nodule` (mm).
    fn chest(nodule: [f64; 3]) -> Volume {
        testing::chest_with(&[(nodule, 6.0, 30.0)])
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
        let from = testing::threshold_bundle_dir();
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

    /// The threshold test bundle copied to a scratch folder with `files` beside its model and
    /// its manifest changed by `edit`, run by the plain-Rust test backend.
    fn test_bundle_analyzer(
        name: &str,
        files: &[&str],
        edit: impl FnOnce(String) -> String,
    ) -> Analyzer {
        let from = testing::threshold_bundle_dir();
        // Removed on return: the bundle is read when the analyzer starts.
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
        let bundle =
            Bundle::open(dir).unwrap_or_else(|e| panic!("the {name} test bundle must open: {e}"));
        testing::analyzer(bundle)
    }

    #[test]
    fn the_candidate_classifier_reranks_the_findings() {
        // A 14 mm sphere of 100 HU (the higher peak: the threshold net's logit grows with
        // HU) and an 8 mm one of 30 HU, which has less tissue in its crop.
        let volume = testing::chest_with(&[
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
        // Weight 0: the detector's order and scores; the classifier's logits are reported
        // all the same, and the detector's are the plain analysis's.
        let zero = classifier_analyzer(0.0)
            .analyze(&volume, BTreeMap::new())
            .unwrap()
            .report;
        let without_classifier = |findings: &[findings::Finding]| {
            let mut findings = findings.to_vec();
            for f in &mut findings {
                f.logits.as_mut().unwrap().classifier = None;
            }
            findings
        };
        assert!(zero
            .findings
            .iter()
            .all(|f| f.logits.unwrap().classifier.is_some()));
        assert!(plain
            .findings
            .iter()
            .all(|f| f.logits.unwrap().classifier.is_none()));
        assert_eq!(without_classifier(&zero.findings), plain.findings);
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
        let volume = testing::chest_with(&[
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
        let volume = testing::chest_with(&[
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
        let encoded = encode(&volume, &at, every, None).unwrap();
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
        let encoded = encode(&volume, &none, every, None).unwrap();
        assert_eq!(encoded.len(), 1);
        assert_eq!(encoded[0].suffix, "sr.dcm");
        assert!(!contains(&encoded[0].bytes, "nodule-"));

        // Without an operating point every finding is a call.
        let suffixes: Vec<String> = encode(&volume, &all, every, None)
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
}
