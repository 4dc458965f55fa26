//! Overlapping tiles that cover a volume, and copying one out with padding.

use ndarray::ArrayView3;

/// Tile origins over a volume; every voxel lies in at least one tile of the full grid.
#[derive(Debug, Clone, PartialEq)]
pub struct TileGrid {
    pub shape: [usize; 3],
    pub patch: [usize; 3],
    /// Corner `[k, j, i]` of each tile; tiles may reach past the volume (padded).
    pub origins: Vec<[usize; 3]>,
}

impl TileGrid {
    /// The full grid: steps of `patch * (1 - overlap)`, the last tile flush with the end.
    pub fn new(shape: [usize; 3], patch: [usize; 3], overlap: f64) -> TileGrid {
        TileGrid::over(shape, patch, overlap, [0; 3], shape)
    }

    /// The grid over the box `lo..hi` only (clamped to the volume), laid out from its corner
    /// like [`TileGrid::new`]: every voxel of the box lies in a tile. A box thinner than a
    /// patch gets one tile, moved back inside the volume where it fits.
    pub fn over(
        shape: [usize; 3],
        patch: [usize; 3],
        overlap: f64,
        lo: [usize; 3],
        hi: [usize; 3],
    ) -> TileGrid {
        let starts = |a: usize| -> Vec<usize> {
            let step = ((patch[a] as f64 * (1.0 - overlap)).round() as usize).max(1);
            let hi = hi[a].min(shape[a]);
            let first = lo[a].min(hi.saturating_sub(patch[a]));
            let last = hi.saturating_sub(patch[a]).max(first);
            let mut starts: Vec<usize> = (first..=last).step_by(step).collect();
            if starts.last() != Some(&last) {
                starts.push(last);
            }
            starts
        };
        let (zs, ys, xs) = (starts(0), starts(1), starts(2));
        let mut origins = Vec::with_capacity(zs.len() * ys.len() * xs.len());
        for &k in &zs {
            for &j in &ys {
                origins.extend(xs.iter().map(|&i| [k, j, i]));
            }
        }
        TileGrid {
            shape,
            patch,
            origins,
        }
    }

    /// Keeps the tiles with a set voxel of a mask within `margin` voxels of them;
    /// `any_in(lo, hi)` says whether the half-open box `[lo, hi)` holds one.
    pub fn touching(
        mut self,
        any_in: impl Fn([usize; 3], [usize; 3]) -> bool,
        margin: [usize; 3],
    ) -> TileGrid {
        let patch = self.patch;
        self.origins.retain(|o| {
            let lo = std::array::from_fn(|a| o[a].saturating_sub(margin[a]));
            let hi = std::array::from_fn(|a| o[a] + patch[a] + margin[a]);
            any_in(lo, hi)
        });
        self
    }
}

/// Copies the tile at `origin` out of `image` (row-major `[z, y, x]`), padding with `fill`
/// past the volume's end.
pub fn extract_tile(
    image: ArrayView3<f32>,
    origin: [usize; 3],
    patch: [usize; 3],
    fill: f32,
) -> Vec<f32> {
    let (nk, nj, ni) = image.dim();
    let mut tile = vec![fill; patch.iter().product()];
    let [pk, pj, pi] = patch;
    for dk in 0..pk.min(nk.saturating_sub(origin[0])) {
        for dj in 0..pj.min(nj.saturating_sub(origin[1])) {
            let row = (dk * pj + dj) * pi;
            let width = pi.min(ni.saturating_sub(origin[2]));
            for di in 0..width {
                tile[row + di] = image[(origin[0] + dk, origin[1] + dj, origin[2] + di)];
            }
        }
    }
    tile
}

/// A `size`-shaped crop (row-major `[z, y, x]`) of `image` whose voxel `size / 2` is the
/// voxel nearest `centre` (a fractional index), padded with `fill` where it leaves the image.
pub fn extract_crop(
    image: ArrayView3<f32>,
    centre: [f64; 3],
    size: [usize; 3],
    fill: f32,
) -> Vec<f32> {
    let shape: [usize; 3] = image.dim().into();
    let lo: [i64; 3] = std::array::from_fn(|a| {
        let c = if centre[a].is_finite() {
            centre[a].round()
        } else {
            0.0
        };
        c.clamp(-1e9, 1e9) as i64 - (size[a] / 2) as i64
    });
    let mut crop = vec![fill; size.iter().product()];
    // The part of the crop inside the image, per axis, as crop-relative ranges.
    let inside: [std::ops::Range<usize>; 3] = std::array::from_fn(|a| {
        let start = (-lo[a]).clamp(0, size[a] as i64) as usize;
        let end = (shape[a] as i64 - lo[a]).clamp(start as i64, size[a] as i64) as usize;
        start..end
    });
    let [_, sj, si] = size;
    for dk in inside[0].clone() {
        for dj in inside[1].clone() {
            let row = (dk * sj + dj) * si;
            for di in inside[2].clone() {
                let at = [dk, dj, di].map(|d| d as i64);
                let src: [usize; 3] = std::array::from_fn(|a| (lo[a] + at[a]) as usize);
                crop[row + di] = image[src];
            }
        }
    }
    crop
}

/// A tile (`patch`-shaped, row-major `[z, y, x]`) mirrored along `axis`; its own inverse.
pub fn mirror(tile: &[f32], patch: [usize; 3], axis: usize) -> Vec<f32> {
    let [pk, pj, pi] = patch;
    let mut view = ArrayView3::from_shape((pk, pj, pi), tile)
        .expect("a tile has the patch's size. This is a bug.");
    view.invert_axis(ndarray::Axis(axis));
    view.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::morphology::BoxCounter;
    use ndarray::Array3;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_full_grid_covers_every_voxel(
            shape in (1usize..40, 1usize..40, 1usize..40),
            patch in (1usize..16, 1usize..16, 1usize..16),
            overlap in 0.0f64..0.9,
        ) {
            let shape = [shape.0, shape.1, shape.2];
            let grid = TileGrid::new(shape, [patch.0, patch.1, patch.2], overlap);
            let mut covered = Array3::from_elem(shape, false);
            for o in &grid.origins {
                for k in o[0]..(o[0] + patch.0).min(shape[0]) {
                    for j in o[1]..(o[1] + patch.1).min(shape[1]) {
                        for i in o[2]..(o[2] + patch.2).min(shape[2]) {
                            covered[(k, j, i)] = true;
                        }
                    }
                }
            }
            prop_assert!(covered.iter().all(|c| *c));
        }
    }

    proptest! {
        #[test]
        fn a_box_grid_covers_the_box_and_stays_in_it_where_it_can(
            shape in (1usize..40, 1usize..40, 1usize..40),
            corner in (0usize..40, 0usize..40, 0usize..40),
            size in (1usize..40, 1usize..40, 1usize..40),
            patch in (1usize..16, 1usize..16, 1usize..16),
            overlap in 0.0f64..0.9,
        ) {
            let shape = [shape.0, shape.1, shape.2];
            let patch = [patch.0, patch.1, patch.2];
            let (corner, size) = ([corner.0, corner.1, corner.2], [size.0, size.1, size.2]);
            let lo: [usize; 3] = std::array::from_fn(|a| corner[a] % shape[a]);
            let hi: [usize; 3] = std::array::from_fn(|a| (lo[a] + size[a]).min(shape[a]));
            let grid = TileGrid::over(shape, patch, overlap, lo, hi);
            let mut covered = Array3::from_elem(shape, false);
            for o in &grid.origins {
                for a in 0..3 {
                    prop_assert!(o[a] + patch[a] <= shape[a].max(patch[a]));
                }
                for k in o[0]..(o[0] + patch[0]).min(shape[0]) {
                    for j in o[1]..(o[1] + patch[1]).min(shape[1]) {
                        for i in o[2]..(o[2] + patch[2]).min(shape[2]) {
                            covered[(k, j, i)] = true;
                        }
                    }
                }
            }
            let inside = covered.slice(ndarray::s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]]);
            prop_assert!(inside.iter().all(|c| *c));
        }
    }

    proptest! {
        #[test]
        fn a_crop_holds_the_image_around_the_centre_and_fill_outside(
            shape in (1usize..12, 1usize..12, 1usize..12),
            centre in (-20.0f64..30.0, -20.0f64..30.0, -20.0f64..30.0),
            size in (1usize..9, 1usize..9, 1usize..9),
        ) {
            let shape = [shape.0, shape.1, shape.2];
            let size = [size.0, size.1, size.2];
            let image = Array3::from_shape_fn(shape, |(k, j, i)| (k * 10_000 + j * 100 + i) as f32);
            let crop = extract_crop(image.view(), [centre.0, centre.1, centre.2], size, -1.0);
            prop_assert_eq!(crop.len(), size.iter().product::<usize>());
            let centre = [centre.0, centre.1, centre.2];
            for (n, value) in crop.iter().enumerate() {
                let d = [n / (size[1] * size[2]), n / size[2] % size[1], n % size[2]];
                let src: Vec<i64> = (0..3)
                    .map(|a| centre[a].round() as i64 - (size[a] / 2) as i64 + d[a] as i64)
                    .collect();
                let inside = (0..3).all(|a| (0..shape[a] as i64).contains(&src[a]));
                let expected = if inside {
                    image[(src[0] as usize, src[1] as usize, src[2] as usize)]
                } else {
                    -1.0
                };
                prop_assert_eq!(*value, expected);
            }
        }
    }

    #[test]
    fn a_crop_far_outside_or_at_a_nan_centre_is_fill_or_clamped() {
        let image = Array3::from_elem((4, 4, 4), 1.0f32);
        assert!(
            extract_crop(image.view(), [1e300, 0.0, 0.0], [2, 2, 2], 0.0)
                .iter()
                .all(|v| *v == 0.0)
        );
        assert_eq!(
            extract_crop(image.view(), [f64::NAN, 1.0, 1.0], [2, 2, 2], 0.0).len(),
            8
        );
    }

    #[test]
    fn a_box_grid_starts_at_the_box() {
        let grid = TileGrid::over([100, 100, 100], [8, 8, 8], 0.5, [10, 20, 30], [20, 28, 34]);
        let ks: Vec<usize> = grid.origins.iter().map(|o| o[0]).collect();
        assert_eq!(grid.origins[0], [10, 20, 26]);
        assert_eq!(ks.first(), Some(&10));
        assert_eq!(ks.last(), Some(&12));
        assert_eq!(grid.origins.len(), 2);
    }

    #[test]
    fn only_tiles_near_the_mask_are_kept() {
        let mut mask = Array3::from_elem((8, 32, 32), false);
        mask[(4, 2, 2)] = true;
        let counter = BoxCounter::new(mask.view());
        let grid = TileGrid::new([8, 32, 32], [8, 8, 8], 0.0)
            .touching(|lo, hi| counter.count(lo, hi) > 0, [0, 0, 0]);
        assert_eq!(grid.origins, vec![[0, 0, 0]]);
        let grid = TileGrid::new([8, 32, 32], [8, 8, 8], 0.0)
            .touching(|lo, hi| counter.count(lo, hi) > 0, [0, 7, 7]);
        assert_eq!(grid.origins.len(), 4);
    }

    #[test]
    fn mirroring_reverses_one_axis_and_undoes_itself() {
        let patch = [2, 3, 4];
        let tile: Vec<f32> = (0..24).map(|v| v as f32).collect();
        assert_eq!(mirror(&tile, patch, 2)[..4], [3.0, 2.0, 1.0, 0.0]);
        assert_eq!(mirror(&tile, patch, 1)[..4], [8.0, 9.0, 10.0, 11.0]);
        assert_eq!(mirror(&tile, patch, 0)[..4], [12.0, 13.0, 14.0, 15.0]);
        for axis in 0..3 {
            assert_eq!(mirror(&mirror(&tile, patch, axis), patch, axis), tile);
        }
    }

    #[test]
    fn extraction_pads_past_the_end() {
        let image = Array3::from_shape_fn((2, 2, 2), |(k, j, i)| (k * 4 + j * 2 + i) as f32);
        let tile = extract_tile(image.view(), [1, 1, 0], [2, 2, 2], -1.0);
        assert_eq!(tile, vec![6.0, 7.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0]);
    }
}
