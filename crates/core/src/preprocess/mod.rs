//! Preprocess: from a Hounsfield volume to the tiles the network sees.
//!
//! Resamples to the model's working spacing (trilinear: rayon over slices, or on the
//! network's device through the backend's [`Resample`], from the same plan), finds the lungs
//! (air inside the body, by threshold and connected components), scales HU to the model's
//! window, and lays out overlapping tiles, keeping only those that touch the lungs.
//! The working grid keeps the source's axes: working index `w` is source index
//! `w * working_spacing / source_spacing` on each axis.

mod lungs;
mod tiles;

pub use lungs::{find_lungs, LungMask};
pub use tiles::{extract_crop, extract_tile, mirror, TileGrid};

use ndarray::{Array3, ArrayView3, Axis};
use pulmo_backend::{Resample, Taps};
use rayon::prelude::*;

/// A volume on the model's working grid.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// HU window scaled to [0, 1], `[slice, row, column]`.
    pub image: Array3<f32>,
    /// Lung voxels on the same grid.
    pub lungs: LungMask,
    /// Source index per working index, per axis (`working / source` spacing).
    pub scale: [f64; 3],
    /// The tiles to run, already restricted to the lungs.
    pub grid: TileGrid,
}

impl Prepared {
    /// The network's input: one tile of the image per grid origin, in the grid's order.
    pub fn tiles(&self) -> Vec<Vec<f32>> {
        self.grid
            .origins
            .iter()
            .map(|o| extract_tile(self.image.view(), *o, self.grid.patch, 0.0))
            .collect()
    }
}

/// Options for [`prepare`], from the model manifest.
#[derive(Debug, Clone, Copy)]
pub struct PrepareOptions<'a> {
    pub spacing_mm: [f64; 3],
    pub hu_window: [f32; 2],
    pub patch: [usize; 3],
    pub overlap: f64,
    /// Tiles are kept when a lung voxel lies within this margin of them.
    pub lung_margin_mm: f64,
    /// Resampling on the network's device; `None` resamples on the CPU.
    pub resampler: Option<&'a dyn Resample>,
}

/// Resamples, finds the lungs, windows and tiles a volume.
pub fn prepare(hu: ArrayView3<f32>, spacing: [f64; 3], options: &PrepareOptions<'_>) -> Prepared {
    let working = resample_with(options.resampler, hu, spacing, options.spacing_mm);
    let lungs = find_lungs(working.view(), options.spacing_mm);
    let margin = options
        .spacing_mm
        .map(|s| (options.lung_margin_mm / s).ceil() as usize);
    let grid = lung_tiles(
        working.dim().into(),
        &lungs,
        options.patch,
        options.overlap,
        margin,
    );
    let image = window(working, options.hu_window);
    let scale = std::array::from_fn(|a| options.spacing_mm[a] / spacing[a]);
    Prepared {
        image,
        lungs,
        scale,
        grid,
    }
}

/// The tiles to run: a grid laid over the lungs' bounding box plus `margin` (voxels), not
/// over the whole volume, keeping the tiles with lung within `margin` of them. A grid
/// anchored at the volume's corner needs about one more tile per axis for the same lungs
/// (108 tiles against 40 on a 512 x 512 chest phantom).
pub fn lung_tiles(
    shape: [usize; 3],
    lungs: &LungMask,
    patch: [usize; 3],
    overlap: f64,
    margin: [usize; 3],
) -> TileGrid {
    let grid = match lungs.bounds {
        Some([lo, hi]) => {
            let lo = std::array::from_fn(|a| lo[a].saturating_sub(margin[a]));
            let hi = std::array::from_fn(|a| hi[a] + 1 + margin[a]);
            TileGrid::over(shape, patch, overlap, lo, hi)
        }
        None => TileGrid::new(shape, patch, overlap),
    };
    grid.touching(|lo, hi| lungs.any_in(lo, hi), margin)
}

/// The working grid's shape and, per axis, the interpolation taps: one plan for both
/// resampling paths, so they sample exactly the same points.
fn resample_plan(
    shape: [usize; 3],
    spacing: [f64; 3],
    target: [f64; 3],
) -> ([usize; 3], [Taps; 3]) {
    let out_shape: [usize; 3] = std::array::from_fn(|a| {
        let extent = (shape[a].saturating_sub(1)) as f64 * spacing[a];
        (extent / target[a]).floor() as usize + 1
    });
    let taps = std::array::from_fn(|a| {
        (0..out_shape[a])
            .map(|n| {
                let x = (n as f64 * target[a] / spacing[a]).min((shape[a] - 1) as f64);
                let lo = x.floor() as usize;
                (lo, (lo + 1).min(shape[a] - 1), (x - lo as f64) as f32)
            })
            .collect()
    });
    (out_shape, taps)
}

/// Trilinear resampling from `spacing` to `target` (both `[slice, row, column]`, mm).
pub fn resample(hu: ArrayView3<f32>, spacing: [f64; 3], target: [f64; 3]) -> Array3<f32> {
    let (out_shape, [zk, zj, zi]) = resample_plan(hu.dim().into(), spacing, target);
    let mut out = Array3::<f32>::zeros(out_shape);
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(&zk)
        .for_each(|(mut slice, &(k0, k1, fk))| {
            let (a, b) = (hu.index_axis(Axis(0), k0), hu.index_axis(Axis(0), k1));
            for (j, &(j0, j1, fj)) in zj.iter().enumerate() {
                for (i, &(i0, i1, fi)) in zi.iter().enumerate() {
                    let bilinear = |p: &ndarray::ArrayView2<f32>| {
                        let top = p[(j0, i0)] * (1.0 - fi) + p[(j0, i1)] * fi;
                        let bottom = p[(j1, i0)] * (1.0 - fi) + p[(j1, i1)] * fi;
                        top * (1.0 - fj) + bottom * fj
                    };
                    slice[(j, i)] = bilinear(&a) * (1.0 - fk) + bilinear(&b) * fk;
                }
            }
        });
    out
}

/// Resamples on `resampler` (the network's device) when there is one, else on the CPU;
/// the CPU also takes over, with a warning, when the device fails (for example out of
/// memory).
pub fn resample_with(
    resampler: Option<&dyn Resample>,
    hu: ArrayView3<f32>,
    spacing: [f64; 3],
    target: [f64; 3],
) -> Array3<f32> {
    let Some(resampler) = resampler else {
        return resample(hu, spacing, target);
    };
    let (shape, taps) = resample_plan(hu.dim().into(), spacing, target);
    resampler.resample(hu, shape, &taps).unwrap_or_else(|err| {
        tracing::warn!(error = %err, "resampling on the device failed; resampling on the CPU");
        resample(hu, spacing, target)
    })
}

/// Clips HU to `[lo, hi]` and scales linearly to [0, 1], in place.
pub fn window(mut hu: Array3<f32>, [lo, hi]: [f32; 2]) -> Array3<f32> {
    let scale = 1.0 / (hi - lo);
    hu.par_mapv_inplace(|v| (v.clamp(lo, hi) - lo) * scale);
    hu
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn resampling_a_linear_ramp_is_exact() {
        let ramp = Array3::from_shape_fn((5, 6, 7), |(k, j, i)| {
            (k as f32) * 2.5 + (j as f32) * 0.7 + (i as f32) * 0.8
        });
        let out = resample(ramp.view(), [2.5, 0.7, 0.8], [1.0, 1.0, 1.0]);
        assert_eq!(out.dim(), (11, 4, 5));
        for ((k, j, i), v) in out.indexed_iter() {
            let want = (k + j + i) as f32;
            assert!((v - want).abs() < 1e-4, "[{k},{j},{i}] {v} != {want}");
        }
    }

    #[test]
    fn same_spacing_returns_the_input() {
        let input = Array3::from_shape_fn((3, 4, 5), |(k, j, i)| (k * 100 + j * 10 + i) as f32);
        assert_eq!(resample(input.view(), [1.0; 3], [1.0; 3]), input);
    }

    #[test]
    fn window_clips_and_scales() {
        let hu = Array3::from_shape_vec((1, 1, 4), vec![-2000.0, -1000.0, -300.0, 3000.0]).unwrap();
        let out = window(hu, [-1000.0, 400.0]);
        assert_eq!(out.as_slice().unwrap(), &[0.0, 0.0, 0.5, 1.0]);
    }
}
