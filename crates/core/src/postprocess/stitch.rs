//! Blending overlapping tile outputs into one map, and reading it between voxels.

use ndarray::{Array3, ArrayView3};

/// Blends tiles (row-major `[z, y, x]` patches at `origins`) into a `shape` map with
/// Gaussian weights (sigma = patch / 8, centre-heavy), so tile borders do not show.
/// Voxels no tile covered read `empty`.
pub fn stitch(
    shape: [usize; 3],
    patch: [usize; 3],
    origins: &[[usize; 3]],
    tiles: &[Vec<f32>],
    empty: f32,
) -> Array3<f32> {
    let weights = gaussian(patch);
    let mut sum = Array3::<f32>::zeros(shape);
    let mut norm = Array3::<f32>::zeros(shape);
    let [pk, pj, pi] = patch;
    for (origin, tile) in origins.iter().zip(tiles) {
        for dk in 0..pk.min(shape[0].saturating_sub(origin[0])) {
            for dj in 0..pj.min(shape[1].saturating_sub(origin[1])) {
                let row = (dk * pj + dj) * pi;
                for di in 0..pi.min(shape[2].saturating_sub(origin[2])) {
                    let at = (origin[0] + dk, origin[1] + dj, origin[2] + di);
                    let w = weights[row + di];
                    sum[at] += w * tile[row + di];
                    norm[at] += w;
                }
            }
        }
    }
    ndarray::Zip::from(&mut sum)
        .and(&norm)
        .par_for_each(|s, n| *s = if *n > 0.0 { *s / *n } else { empty });
    sum
}

/// Logit given to voxels no tile covered: a probability of about 1e-13.
pub const EMPTY_LOGIT: f32 = -30.0;

/// The probability of one voxel of a stitched map, which holds logits when `logits` is set
/// and probabilities otherwise.
pub fn probability(value: f32, logits: bool) -> f32 {
    if logits {
        1.0 / (1.0 + (-value).exp())
    } else {
        value
    }
}

/// The logit of one voxel of a stitched map (see [`probability`]); a probability of 1.0
/// still has a finite logit, so the order of confident voxels is kept.
pub fn logit(value: f32, logits: bool) -> f32 {
    if logits {
        value
    } else {
        let p = value.clamp(1e-12, 1.0 - 1e-7);
        (p / (1.0 - p)).ln()
    }
}

/// A stitched map turned into probabilities in place (see [`probability`]).
pub fn into_probabilities(mut map: Array3<f32>, logits: bool) -> Array3<f32> {
    if logits {
        map.par_mapv_inplace(|l| probability(l, true));
    }
    map
}

/// Per-voxel weights of one patch: a separable Gaussian, floored so edges still count.
fn gaussian(patch: [usize; 3]) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f32> {
        let centre = (n as f32 - 1.0) / 2.0;
        let sigma = (n as f32 / 8.0).max(0.5);
        (0..n)
            .map(|x| (-((x as f32 - centre).powi(2)) / (2.0 * sigma * sigma)).exp())
            .collect()
    };
    let (wk, wj, wi) = (axis(patch[0]), axis(patch[1]), axis(patch[2]));
    let mut out = Vec::with_capacity(patch.iter().product());
    for a in &wk {
        for b in &wj {
            out.extend(wi.iter().map(|c| (a * b * c).max(1e-3)));
        }
    }
    out
}

/// Trilinear value of `map` at a fractional index `[k, j, i]` (clamped to the volume).
pub fn sample(map: ArrayView3<f32>, at: [f64; 3]) -> f32 {
    let shape: [usize; 3] = map.dim().into();
    let corner = |a: usize| {
        let x = at[a].clamp(0.0, (shape[a] - 1) as f64);
        let lo = x.floor() as usize;
        (lo, (lo + 1).min(shape[a] - 1), (x - lo as f64) as f32)
    };
    let ((k0, k1, fk), (j0, j1, fj), (i0, i1, fi)) = (corner(0), corner(1), corner(2));
    let plane = |k| {
        let top = map[(k, j0, i0)] * (1.0 - fi) + map[(k, j0, i1)] * fi;
        let bottom = map[(k, j1, i0)] * (1.0 - fi) + map[(k, j1, i1)] * fi;
        top * (1.0 - fj) + bottom * fj
    };
    plane(k0) * (1.0 - fk) + plane(k1) * fk
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{extract_tile, TileGrid};

    #[test]
    fn stitching_an_identity_model_returns_its_input() {
        let input = Array3::from_shape_fn((13, 17, 19), |(k, j, i)| {
            ((k * 7 + j * 3 + i) % 11) as f32 / 10.0
        });
        let grid = TileGrid::new([13, 17, 19], [8, 8, 8], 0.5);
        let tiles: Vec<Vec<f32>> = grid
            .origins
            .iter()
            .map(|o| extract_tile(input.view(), *o, grid.patch, 0.0))
            .collect();
        let out = stitch(grid.shape, grid.patch, &grid.origins, &tiles, 0.0);
        for (a, b) in out.iter().zip(input.iter()) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn uncovered_voxels_read_the_empty_value() {
        let out = stitch([4, 4, 8], [4, 4, 4], &[[0, 0, 0]], &[vec![1.0; 64]], -30.0);
        assert_eq!(out[(0, 0, 0)], 1.0);
        assert_eq!(out[(0, 0, 7)], -30.0);
    }

    #[test]
    fn logits_and_probabilities_map_to_each_other() {
        let logits = Array3::from_shape_vec((1, 1, 3), vec![-30.0, 0.0, 40.0]).unwrap();
        assert_eq!(logits.map(|l| logit(*l, true)), logits);
        let prob = into_probabilities(logits.clone(), true);
        assert!(prob[(0, 0, 0)] < 1e-12 && prob[(0, 0, 1)] == 0.5 && prob[(0, 0, 2)] == 1.0);
        assert_eq!(prob, logits.map(|l| probability(*l, true)));
        // From probabilities, 1.0 has a finite logit and the order is kept.
        assert_eq!(into_probabilities(prob.clone(), false), prob);
        let logit = prob.map(|p| logit(*p, false));
        assert!(logit[(0, 0, 0)] < logit[(0, 0, 1)] && logit[(0, 0, 1)] < logit[(0, 0, 2)]);
        assert!(logit[(0, 0, 2)].is_finite() && logit[(0, 0, 1)].abs() < 1e-6);
    }

    #[test]
    fn sampling_interpolates_and_clamps() {
        let map = Array3::from_shape_fn((2, 2, 2), |(k, j, i)| (k * 4 + j * 2 + i) as f32);
        assert_eq!(sample(map.view(), [0.5, 0.5, 0.5]), 3.5);
        assert_eq!(sample(map.view(), [-3.0, 9.0, 1.0]), 3.0);
    }
}
