//! Candidates from the probability map, measured on the source grid in millimetres.
//!
//! A candidate is a 26-connected component of voxels above the probability threshold on
//! the working grid. Its voxels are re-sampled at the source resolution (trilinear) and
//! measured there: centre, axial long and short axis on the slice where it is largest,
//! volume, mean HU, and the solid core (voxels above -300 HU) that decides composition.

use ndarray::{s, Array3, ArrayView3};
use rayon::prelude::*;

use super::stitch::{into_probabilities, logit, probability, sample};
use crate::findings::{self, Finding, Laterality, NoduleType};
use crate::morphology::{self, Component};
use crate::preprocess::LungMask;
use pulmo_dicom::volume::Volume;

/// Voxels above this HU count as solid tissue inside a nodule.
const SOLID_HU: f32 = -300.0;
/// Candidates wider than this in any direction are anatomy or masses, not nodules.
const MAX_EXTENT_MM: f64 = 50.0;

/// A nodule's voxels on the source grid: `mask` starts at source index `origin`
/// (`[slice, row, column]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The id of the finding it belongs to.
    pub finding_id: u32,
    pub origin: [usize; 3],
    pub mask: Array3<bool>,
}

/// A finding with its segmentation.
#[derive(Debug, Clone)]
pub struct Measured {
    pub finding: Finding,
    pub segment: Segment,
    /// The highest logit inside it (over all passes), which its score is made from.
    pub peak_logit: f32,
    /// The candidate classifier's logit, once [`rescore`]d.
    pub classifier_logit: Option<f32>,
}

/// Decision thresholds (from the model manifest).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub probability: f32,
    pub min_score: f64,
    pub min_diameter_mm: f64,
}

/// Finds, measures and ranks the nodules in a stitched working-grid map, which holds
/// logits when `logits` is set and probabilities otherwise.
///
/// Each candidate's peak logit ranks the findings (see [`score`]); `scale[a]` converts
/// working to source indices; `lungs` is on the working grid. The map is turned into
/// probabilities in place once the peaks are known, so that one working-grid map (with the
/// labels) is all this holds: on a fine pass, the largest arrays of an analysis.
pub fn measure_candidates(
    map: Array3<f32>,
    logits: bool,
    scale: [f64; 3],
    lungs: &LungMask,
    volume: &Volume,
    thresholds: &Thresholds,
) -> Vec<Measured> {
    let (labels, components) = {
        let mask = map.map(|v| probability(*v, logits) >= thresholds.probability);
        morphology::label(mask.view())
    };
    let candidates: Vec<(&Component, f32)> = components
        .par_iter()
        .filter(|c| {
            (0..3).all(|a| {
                (c.bounds[1][a] - c.bounds[0][a] + 1) as f64 * lungs.spacing[a] <= MAX_EXTENT_MM
            })
        })
        .map(|c| (c, peak(map.view(), logits, labels.view(), c)))
        .filter(|(_, peak)| sigmoid(f64::from(*peak)) >= thresholds.min_score)
        .collect();
    let prob = into_probabilities(map, logits);
    let midline = midline_x(lungs, scale, volume);
    let found: Vec<Measured> = candidates
        .into_par_iter()
        .filter_map(|(c, peak)| {
            let (finding, segment) =
                measure(prob.view(), scale, volume, c, thresholds.probability)?;
            let finding = Finding {
                score: findings::round_to(score(peak), 4),
                laterality: side(finding.center_patient_mm[0], midline),
                ..finding
            };
            Some(Measured {
                finding,
                segment,
                peak_logit: peak,
                classifier_logit: None,
            })
        })
        .filter(|m| m.finding.diameter_mm >= thresholds.min_diameter_mm)
        .filter(|m| near_lungs(&m.finding, scale, lungs))
        .collect();
    rank(found)
}

/// Merges the findings of passes at different working spacings (the first pass first):
/// a finding of a later pass whose centre lies within the long-axis radius of an earlier
/// one (or within 3 mm; either's radius) is the same nodule, and only raises that one's
/// score; the others are added. Unranked: [`rank`] them once their scores are final.
pub fn merge_passes(passes: Vec<Vec<Measured>>) -> Vec<Measured> {
    let mut passes = passes.into_iter();
    let mut merged = passes.next().unwrap_or_default();
    for pass in passes {
        let known = merged.len();
        for m in pass {
            let f = &m.finding;
            let same = merged[..known].iter_mut().find(|k| {
                let reach = (k.finding.long_axis_mm.max(f.long_axis_mm) / 2.0).max(3.0);
                distance(k.finding.center_patient_mm, f.center_patient_mm) <= reach
            });
            match same {
                Some(k) => {
                    k.finding.score = k.finding.score.max(f.score);
                    k.peak_logit = k.peak_logit.max(m.peak_logit);
                }
                None => merged.push(m),
            }
        }
    }
    merged
}

/// Rescores findings with the candidate classifier's logit for each (in order):
/// `sigmoid(peak logit / 8 + weight * classifier logit)`.
pub fn rescore(found: &mut [Measured], classifier_logits: &[f32], weight: f64) {
    for (m, c) in found.iter_mut().zip(classifier_logits) {
        let score = combined_score(f64::from(m.peak_logit), Some(f64::from(*c)), weight);
        m.finding.score = findings::round_to(score, 4);
        m.classifier_logit = Some(*c);
    }
}

/// A score from the detector's peak logit and the classifier's logit, if any:
/// `sigmoid(detector / 8 + weight × classifier)`.
pub fn combined_score(detector: f64, classifier: Option<f64>, weight: f64) -> f64 {
    sigmoid(detector / SCORE_TEMPERATURE + weight * classifier.unwrap_or(0.0))
}

/// Sorts by score, drops candidates inside better ones, and numbers the rest from 1; each
/// keeps the logits its score was made from.
pub fn rank(mut found: Vec<Measured>) -> Vec<Measured> {
    found.sort_by(|a, b| b.finding.score.total_cmp(&a.finding.score));
    let mut kept = suppress_overlaps(found);
    for (n, m) in kept.iter_mut().enumerate() {
        m.finding.id = n as u32 + 1;
        m.segment.finding_id = m.finding.id;
        m.finding.logits = Some(findings::Logits {
            detector: findings::round_to(f64::from(m.peak_logit), 3),
            classifier: m
                .classifier_logit
                .map(|c| findings::round_to(f64::from(c), 3)),
        });
    }
    kept
}

/// Temperature of the reported score: `sigmoid(peak logit / T)`.
const SCORE_TEMPERATURE: f64 = 8.0;

/// A finding's score from its peak logit.
///
/// A trained network is over-confident: most candidates, true or not, peak at logits of
/// 20 and more, probabilities that float32 and four decimals both report as 1.0 and rank
/// as ties (which cost the FROC its first operating points). Dividing the logit by a fixed
/// temperature keeps the order of the peaks (ranking, and so FROC, is unchanged by the
/// choice of T) and 0.5 where it was, but spreads the confident end so that the order
/// survives rounding up to logits of about 80. The candidate threshold (`min_score`) still
/// applies to the peak probability.
fn score(peak_logit: f32) -> f64 {
    sigmoid(f64::from(peak_logit) / SCORE_TEMPERATURE)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The highest logit of a stitched `map` (see [`measure_candidates`]) inside a component.
fn peak(map: ArrayView3<f32>, logits: bool, labels: ArrayView3<u32>, c: &Component) -> f32 {
    let [lo, hi] = c.bounds;
    let region = s![lo[0]..=hi[0], lo[1]..=hi[1], lo[2]..=hi[2]];
    let (p, l) = (map.slice(region), labels.slice(region));
    p.iter()
        .zip(l.iter())
        .filter(|(_, l)| **l == c.label)
        .map(|(v, _)| logit(*v, logits))
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Whether the centre lies in the lungs (whose mask includes pleural bays and everything
/// inside), give or take a few mm: nodules are in the lungs or on the pleura, not in the
/// mediastinum, the hila, the heart or the abdomen.
fn near_lungs(f: &Finding, scale: [f64; 3], lungs: &LungMask) -> bool {
    let [i, j, k] = f.center_voxel.map(f64::from);
    let centre = [k / scale[0], j / scale[1], i / scale[2]];
    let reach_mm = 3.0 + f.long_axis_mm / 4.0;
    let lo = std::array::from_fn(|a| (centre[a] - reach_mm / lungs.spacing[a]).max(0.0) as usize);
    let hi = std::array::from_fn(|a| (centre[a] + reach_mm / lungs.spacing[a]).ceil() as usize + 1);
    lungs.any_in(lo, hi)
}

/// Drops candidates whose centre lies inside a higher-scoring one (input sorted by score).
fn suppress_overlaps(sorted: Vec<Measured>) -> Vec<Measured> {
    let mut kept: Vec<Measured> = Vec::with_capacity(sorted.len());
    for m in sorted {
        let f = &m.finding;
        let inside = kept.iter().any(|k| {
            let k = &k.finding;
            let d = distance(k.center_patient_mm, f.center_patient_mm);
            d < k.long_axis_mm.max(f.long_axis_mm) / 2.0
        });
        if !inside {
            kept.push(m);
        }
    }
    kept
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|n| (a[n] - b[n]).powi(2)).sum::<f64>().sqrt()
}

/// Patient x (LPS) of the middle of the lungs: left of it is the patient's left.
fn midline_x(lungs: &LungMask, scale: [f64; 3], volume: &Volume) -> f64 {
    let [k, j, i] = match lungs.bounds {
        Some([lo, hi]) => std::array::from_fn(|a| (lo[a] + hi[a]) as f64 / 2.0 * scale[a]),
        None => volume.shape().map(|n| n as f64 / 2.0),
    };
    volume.geometry.voxel_to_patient([k, j, i])[0]
}

fn side(x: f64, midline: f64) -> Laterality {
    // LPS: +x points to the patient's left.
    if x >= midline {
        Laterality::Left
    } else {
        Laterality::Right
    }
}

/// Measures one candidate on the source grid; `None` when it vanishes at that resolution.
fn measure(
    prob: ArrayView3<f32>,
    scale: [f64; 3],
    volume: &Volume,
    c: &Component,
    threshold: f32,
) -> Option<(Finding, Segment)> {
    let shape = volume.shape();
    let lo: [usize; 3] = std::array::from_fn(|a| {
        ((c.bounds[0][a] as f64 - 1.0) * scale[a]).floor().max(0.0) as usize
    });
    let hi: [usize; 3] = std::array::from_fn(|a| {
        (((c.bounds[1][a] as f64 + 1.0) * scale[a]).ceil() as usize).min(shape[a] - 1)
    });
    let dims = (hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1);
    let weights = Array3::from_shape_fn(dims, |(k, j, i)| {
        let source = [lo[0] + k, lo[1] + j, lo[2] + i];
        sample(prob, std::array::from_fn(|a| source[a] as f64 / scale[a]))
    });
    let region = largest_component(weights.map(|p| *p >= threshold).view())?;
    let hu = volume
        .hu
        .slice(s![lo[0]..=hi[0], lo[1]..=hi[1], lo[2]..=hi[2]]);
    let region = refine_by_attenuation(region, hu);
    let spacing = volume.geometry.spacing;

    let (mut total, mut centre, mut hu_sum, mut count) = (0.0, [0.0; 3], 0.0, 0usize);
    for ((k, j, i), _) in region.indexed_iter().filter(|(_, m)| **m) {
        let w = f64::from(weights[(k, j, i)]);
        total += w;
        centre = [
            centre[0] + w * (lo[0] + k) as f64,
            centre[1] + w * (lo[1] + j) as f64,
            centre[2] + w * (lo[2] + i) as f64,
        ];
        hu_sum += f64::from(hu[(k, j, i)]);
        count += 1;
    }
    let centre = centre.map(|c| c / total);
    let [ck, cj, ci] = centre.map(|c| c.round().max(0.0) as usize);
    let slice = volume
        .slices
        .get(ck.min(shape[0] - 1))
        .cloned()
        .unwrap_or_default();
    let (long, short) = axial_axes(region.view(), [spacing[1], spacing[2]]);
    let core = region.clone() & hu.map(|v| *v > SOLID_HU);
    let (core_long, core_short) = axial_axes(core.view(), [spacing[1], spacing[2]]);
    let diameter = findings::round_to((long + short) / 2.0, 1);
    let core_mm = findings::round_to((core_long + core_short) / 2.0, 1);
    let nodule_type = composition(diameter, core_mm);
    let solid_core_mm = (nodule_type == NoduleType::PartSolid).then_some(core_mm);
    let baseline = findings::assess(
        nodule_type,
        diameter,
        solid_core_mm,
        findings::History::Baseline,
    );
    let finding = Finding {
        id: 0,
        center_patient_mm: volume
            .geometry
            .voxel_to_patient(centre)
            .map(|v| findings::round_to(v, 2)),
        center_voxel: [ci as u32, cj as u32, ck as u32],
        sop_instance_uid: slice.sop_instance_uid,
        instance_number: slice.instance_number,
        diameter_mm: diameter,
        long_axis_mm: findings::round_to(long, 1),
        short_axis_mm: findings::round_to(short, 1),
        volume_mm3: findings::round_to(count as f64 * spacing.iter().product::<f64>(), 1),
        mean_hu: findings::round_to(hu_sum / count as f64, 1),
        nodule_type,
        solid_core_mm,
        score: 0.0,
        lung_rads: baseline.category,
        laterality: Laterality::Left,
        logits: None,
        lung_rads_rule: baseline.rule,
        tracking_uid: None,
        followup: None,
    };
    let segment = Segment {
        finding_id: 0,
        origin: lo,
        mask: region,
    };
    Some((finding, segment))
}

/// Aerated lung, the background a nodule's edge is measured against (HU).
const LUNG_HU: f32 = -850.0;

/// Trims the network's region to the nodule's visible edge: voxels brighter than halfway
/// between the nodule's dense part (90th percentile of the region) and aerated lung, the
/// edge a reader sees in the lung window. Networks' masks tend to run a voxel or two wide;
/// this keeps diameters independent of how sharp the model is. Keeps the region when the
/// trim would leave nothing.
fn refine_by_attenuation(region: Array3<bool>, hu: ArrayView3<f32>) -> Array3<bool> {
    let mut values: Vec<f32> = region
        .iter()
        .zip(hu.iter())
        .filter(|(m, _)| **m)
        .map(|(_, v)| *v)
        .collect();
    if values.is_empty() {
        return region;
    }
    let rank = (values.len() - 1) * 9 / 10;
    let dense = *values.select_nth_unstable_by(rank, f32::total_cmp).1;
    if dense <= LUNG_HU + 100.0 {
        return region;
    }
    let level = (dense + LUNG_HU) / 2.0;
    let trimmed = ndarray::Zip::from(&region)
        .and(&hu)
        .map_collect(|m, v| *m && *v > level);
    largest_component(trimmed.view()).unwrap_or(region)
}

/// The largest 26-connected component of a mask, or `None` if the mask is empty.
fn largest_component(mask: ArrayView3<bool>) -> Option<Array3<bool>> {
    let (labels, components) = morphology::label(mask);
    let best = components.iter().max_by_key(|c| c.voxels)?.label;
    Some(labels.map(|l| *l == best))
}

/// Composition from the solid core's size relative to the whole nodule.
fn composition(diameter_mm: f64, core_mm: f64) -> NoduleType {
    let ratio = if diameter_mm > 0.0 {
        core_mm / diameter_mm
    } else {
        0.0
    };
    if ratio >= 0.8 {
        NoduleType::Solid
    } else if ratio < 0.25 || core_mm < 2.0 {
        NoduleType::GroundGlass
    } else {
        NoduleType::PartSolid
    }
}

/// Long and short axis (mm, edge to edge) on the axial slice where the mask is largest.
///
/// The long axis is the longest distance between two pixels; the short axis is the
/// mask's extent perpendicular to it. `pixel` is `[row, column]` spacing in mm.
pub fn axial_axes(mask: ArrayView3<bool>, pixel: [f64; 2]) -> (f64, f64) {
    let best = (0..mask.dim().0)
        .max_by_key(|&k| mask.slice(s![k, .., ..]).iter().filter(|m| **m).count())
        .map(|k| mask.slice(s![k, .., ..]));
    let Some(plane) = best else { return (0.0, 0.0) };
    let points: Vec<[f64; 2]> = plane
        .indexed_iter()
        .filter(|(_, m)| **m)
        .map(|((j, i), _)| [j as f64 * pixel[0], i as f64 * pixel[1]])
        .collect();
    if points.is_empty() {
        return (0.0, 0.0);
    }
    let (mut long, mut axis) = (0.0, [0.0, 1.0]);
    for (n, a) in points.iter().enumerate() {
        for b in &points[n + 1..] {
            let d = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
            if d > long {
                long = d;
                axis = [(b[0] - a[0]) / d, (b[1] - a[1]) / d];
            }
        }
    }
    let across = points.iter().map(|p| -p[0] * axis[1] + p[1] * axis[0]);
    let (min, max) = across.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // Pixel centres underestimate an edge-to-edge extent by one pixel.
    let pixel_size = (pixel[0] * pixel[1]).sqrt();
    (long + pixel_size, (max - min) + pixel_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_keeps_the_order_of_peaks_and_separates_the_confident_ones() {
        // Logits of 17 and above are a probability of 1.0 in float32.
        let peaks = [-2.2_f32, 0.0, 2.2, 6.9, 17.0, 25.0, 40.0, 60.0];
        let scores: Vec<f64> = peaks
            .iter()
            .map(|p| findings::round_to(score(*p), 4))
            .collect();
        assert!((score(0.0) - 0.5).abs() < 1e-12);
        assert!(scores.windows(2).all(|w| w[0] < w[1]), "{scores:?}");
        assert!(scores.iter().all(|s| (0.0..1.0).contains(s)), "{scores:?}");
    }

    fn disc(radius_px: f64, n: usize) -> Array3<bool> {
        let c = (n as f64 - 1.0) / 2.0;
        Array3::from_shape_fn((3, n, n), |(k, j, i)| {
            let r = if k == 1 { radius_px } else { radius_px / 2.0 };
            (j as f64 - c).powi(2) + (i as f64 - c).powi(2) <= r * r
        })
    }

    #[test]
    fn a_disc_measures_its_diameter_on_its_largest_slice() {
        // Radius 10 px at 0.5 mm: 10 mm across.
        let (long, short) = axial_axes(disc(10.0, 31).view(), [0.5, 0.5]);
        assert!((long - 10.5).abs() < 0.6, "{long}");
        assert!((short - 10.5).abs() < 0.6, "{short}");
    }

    #[test]
    fn an_ellipse_has_distinct_long_and_short_axes() {
        let mask = Array3::from_shape_fn((1, 41, 41), |(_, j, i)| {
            let (y, x) = (j as f64 - 20.0, i as f64 - 20.0);
            (x / 16.0).powi(2) + (y / 8.0).powi(2) <= 1.0
        });
        let (long, short) = axial_axes(mask.view(), [1.0, 1.0]);
        assert!((long - 33.0).abs() < 1.0, "{long}");
        assert!((short - 17.0).abs() < 1.0, "{short}");
    }

    fn at(x: f64, long_axis_mm: f64, score: f64, diameter_mm: f64) -> Measured {
        let finding = Finding {
            center_patient_mm: [x, 0.0, 0.0],
            long_axis_mm,
            diameter_mm,
            ..crate::testing::finding(score, findings::LungRads::Cat2)
        };
        let segment = Segment {
            finding_id: 0,
            origin: [0; 3],
            mask: Array3::from_elem((1, 1, 1), true),
        };
        let peak_logit = (8.0 * (score / (1.0 - score)).ln()) as f32;
        Measured {
            finding,
            segment,
            peak_logit,
            classifier_logit: None,
        }
    }

    #[test]
    fn passes_merge_into_the_first_passs_measurements_with_the_best_score() {
        let first = vec![at(0.0, 20.0, 0.7, 18.0), at(100.0, 4.0, 0.9, 4.0)];
        // The big nodule again (inside its radius) with a higher score and another size,
        // the small one 2.5 mm away (within 3 mm), and a new one.
        let second = vec![
            at(8.0, 16.0, 0.95, 15.0),
            at(102.5, 4.0, 0.6, 4.0),
            at(50.0, 5.0, 0.8, 5.0),
        ];
        let merged = rank(merge_passes(vec![first, second]));
        let got: Vec<(f64, f64, f64, u32)> = merged
            .iter()
            .map(|m| {
                let f = &m.finding;
                (f.center_patient_mm[0], f.diameter_mm, f.score, f.id)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0.0, 18.0, 0.95, 1),
                (100.0, 4.0, 0.9, 2),
                (50.0, 5.0, 0.8, 3)
            ]
        );
        assert!(merged.iter().all(|m| m.segment.finding_id == m.finding.id));
        assert!(merge_passes(Vec::new()).is_empty());
    }

    #[test]
    fn the_classifier_reorders_findings_by_peak_and_its_logit_together() {
        // Peak logits 40, 24 and 16 (scores 0.993, 0.953, 0.881).
        let found = vec![
            at(0.0, 10.0, 0.9933, 10.0),
            at(50.0, 10.0, 0.9526, 10.0),
            at(100.0, 10.0, 0.8808, 10.0),
        ];
        let mut rescored = found;
        rescore(&mut rescored, &[-6.0, 1.0, 4.0], 1.0);
        let rescored = rank(rescored);
        let got: Vec<(f64, f64, u32)> = rescored
            .iter()
            .map(|m| {
                (
                    m.finding.center_patient_mm[0],
                    m.finding.score,
                    m.finding.id,
                )
            })
            .collect();
        // 5 - 6 = -1, 3 + 1 = 4, 2 + 4 = 6.
        assert_eq!(
            got,
            vec![(100.0, 0.9975, 1), (50.0, 0.982, 2), (0.0, 0.2687, 3)]
        );
        assert!(rescored
            .iter()
            .all(|m| m.segment.finding_id == m.finding.id));
        // Each keeps the logits its score came from, and they give the score back.
        let logits = rescored[0].finding.logits.unwrap();
        assert_eq!(logits.classifier, Some(4.0));
        assert!((combined_score(logits.detector, logits.classifier, 1.0) - 0.9975).abs() < 1e-4);
        // Weight 0: the order and scores of the peaks.
        let mut same = rescored;
        rescore(&mut same, &[9.0, 0.0, -9.0], 0.0);
        let same = rank(same);
        let order: Vec<f64> = same
            .iter()
            .map(|m| m.finding.center_patient_mm[0])
            .collect();
        assert_eq!(order, vec![0.0, 50.0, 100.0]);
    }

    #[test]
    fn composition_follows_the_core() {
        assert_eq!(composition(10.0, 9.0), NoduleType::Solid);
        assert_eq!(composition(10.0, 5.0), NoduleType::PartSolid);
        assert_eq!(composition(10.0, 1.0), NoduleType::GroundGlass);
        assert_eq!(composition(0.0, 0.0), NoduleType::GroundGlass);
    }
}
