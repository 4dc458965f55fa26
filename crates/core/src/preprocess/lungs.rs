//! Finding the lungs: air inside the body, as large connected components, holes filled.
//!
//! Air is below -400 HU. Air that reaches the image border within its slice is outside the
//! body (room air, the gap under the table). What remains and forms large 3-D components is
//! lungs and airways; filling each slice's holes brings back the vessels and nodules inside.

use ndarray::{Array3, ArrayView3, Zip};

use crate::morphology::{self, BoxCounter};

/// Air threshold in HU.
const AIR_HU: f32 = -400.0;
/// Components smaller than this are gas elsewhere (bowel, sinuses), not lung.
const MIN_COMPONENT_ML: f64 = 50.0;

/// The lungs on the working grid.
///
/// The mask is held on the coarse grid it was found on (every `step` working voxels per
/// axis): a working voxel is lung when its coarse cell is. On a fine pass a working-grid
/// mask and its box counts would be the largest arrays after the image itself.
#[derive(Debug, Clone)]
pub struct LungMask {
    coarse: Array3<bool>,
    /// Box counts over `coarse`.
    counter: BoxCounter,
    /// Working voxels per coarse cell, per axis.
    step: [usize; 3],
    /// Shape of the working grid.
    shape: [usize; 3],
    /// Voxel spacing of the working grid, mm.
    pub spacing: [f64; 3],
    /// Total lung volume in millilitres.
    pub volume_ml: f64,
    /// Inclusive bounding box of the mask in working indices, if any lung was found.
    pub bounds: Option<[[usize; 3]; 2]>,
}

impl LungMask {
    /// Whether the volume plausibly shows a chest: enough aerated lung in view.
    pub fn looks_like_chest(&self) -> bool {
        self.volume_ml >= 300.0
    }

    /// Whether working voxel `[k, j, i]` is lung (outside the grid: no).
    pub fn contains(&self, index: [usize; 3]) -> bool {
        (0..3).all(|a| index[a] < self.shape[a])
            && self.coarse[[0, 1, 2].map(|a| index[a] / self.step[a])]
    }

    /// The lungs' surface: the centres of the mask's cells that are lung and have a 6-neighbour
    /// inside the grid that is not, as fractional working-grid indices `[k, j, i]`. Cells on
    /// the grid's edge are not surface for that reason alone: there the scan's field of view
    /// cut the lungs, which is no anatomy to align by.
    pub fn surface(&self) -> Vec<[f64; 3]> {
        let dim: [usize; 3] = self.coarse.dim().into();
        let outside = |k: usize, j: usize, i: usize, a: usize, up: bool| {
            let mut at = [k, j, i];
            if up {
                if at[a] + 1 >= dim[a] {
                    return false;
                }
                at[a] += 1;
            } else {
                if at[a] == 0 {
                    return false;
                }
                at[a] -= 1;
            }
            !self.coarse[at]
        };
        let centre = |a: usize, c: usize| {
            let len = ((c + 1) * self.step[a]).min(self.shape[a]) - c * self.step[a];
            (c * self.step[a]) as f64 + (len as f64 - 1.0) / 2.0
        };
        self.coarse
            .indexed_iter()
            .filter(|(_, lung)| **lung)
            .filter(|((k, j, i), _)| {
                (0..3).any(|a| outside(*k, *j, *i, a, true) || outside(*k, *j, *i, a, false))
            })
            .map(|((k, j, i), _)| [centre(0, k), centre(1, j), centre(2, i)])
            .collect()
    }

    /// Whether any lung voxel lies in the half-open working box `[lo, hi)`, clipped to
    /// the grid. Every coarse cell between `lo / step` and `ceil(hi / step)` shares
    /// working voxels with the clipped box, so the coarse count answers exactly.
    pub fn any_in(&self, lo: [usize; 3], hi: [usize; 3]) -> bool {
        let hi: [usize; 3] = std::array::from_fn(|a| hi[a].min(self.shape[a]));
        if (0..3).any(|a| lo[a] >= hi[a]) {
            return false;
        }
        let coarse_lo = std::array::from_fn(|a| lo[a] / self.step[a]);
        let coarse_hi = std::array::from_fn(|a| hi[a].div_ceil(self.step[a]));
        self.counter.count(coarse_lo, coarse_hi) > 0
    }
}

/// The mask is found on a grid of about this spacing (mm), then spread back: the lungs are
/// large, and connected components over every working voxel would cost seconds.
const MASK_SPACING_MM: f64 = 2.5;

/// Pleural bays narrower than about twice this are closed (mm).
const CLOSING_RADIUS_MM: f64 = 10.0;

fn closing_radius(spacing: [f64; 3]) -> usize {
    (CLOSING_RADIUS_MM / spacing[1].max(spacing[2]))
        .round()
        .max(1.0) as usize
}

/// Finds the lungs in a HU volume with voxel spacing `spacing` (mm).
pub fn find_lungs(hu: ArrayView3<f32>, spacing: [f64; 3]) -> LungMask {
    let step = spacing.map(|s| ((MASK_SPACING_MM / s).floor() as usize).max(1));
    let coarse = hu.slice(ndarray::s![..;step[0], ..;step[1], ..;step[2]]);
    let coarse_spacing = std::array::from_fn(|a| spacing[a] * step[a] as f64);
    let (coarse_mask, coarse_bounds) = lungs_on(coarse, coarse_spacing);
    let shape: [usize; 3] = hu.dim().into();
    let bounds = coarse_bounds.map(|[lo, hi]| {
        [
            std::array::from_fn(|a| lo[a] * step[a]),
            std::array::from_fn(|a| ((hi[a] + 1) * step[a]).min(shape[a]) - 1),
        ]
    });
    // Working voxels of coarse cell `c` along axis `a` (the last cells may be cut short).
    let cell = |a: usize, c: usize| ((c + 1) * step[a]).min(shape[a]) - c * step[a];
    let voxels: usize = coarse_mask
        .indexed_iter()
        .filter(|(_, m)| **m)
        .map(|((k, j, i), _)| cell(0, k) * cell(1, j) * cell(2, i))
        .sum();
    let voxel_ml = spacing.iter().product::<f64>() / 1000.0;
    let counter = BoxCounter::new(coarse_mask.view());
    LungMask {
        coarse: coarse_mask,
        counter,
        step,
        shape,
        spacing,
        volume_ml: voxels as f64 * voxel_ml,
        bounds,
    }
}

/// The lung mask and its bounds on the grid given.
fn lungs_on(hu: ArrayView3<f32>, spacing: [f64; 3]) -> (Array3<bool>, Option<[[usize; 3]; 2]>) {
    let voxel_ml = spacing.iter().product::<f64>() / 1000.0;
    let air = hu.map(|v| *v < AIR_HU);
    let outside = morphology::reachable_from_border(air.view());
    let mut inner = air;
    Zip::from(&mut inner)
        .and(&outside)
        .for_each(|a, o| *a &= !o);

    let (labels, mut components) = morphology::label(inner.view());
    components.sort_by_key(|c| std::cmp::Reverse(c.voxels));
    let keep: Vec<u32> = components
        .iter()
        .take(2)
        .filter(|c| c.voxels as f64 * voxel_ml >= MIN_COMPONENT_ML)
        .map(|c| c.label)
        .collect();
    let lungs = labels.map(|l| *l != 0 && keep.contains(l));
    // Filling holes brings back vessels and nodules inside the lung; closing brings back
    // nodules on the pleura, which make bays in the air mask.
    let closed = morphology::close_2d(lungs.view(), closing_radius(spacing));
    let mask = morphology::fill_holes_2d(closed.view());

    let bounds = components
        .iter()
        .filter(|c| keep.contains(&c.label))
        .map(|c| c.bounds)
        .reduce(|a, b| {
            [
                std::array::from_fn(|n| a[0][n].min(b[0][n])),
                std::array::from_fn(|n| a[1][n].max(b[1][n])),
            ]
        });
    (mask, bounds)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A crude chest: air outside, a soft-tissue body, two air-filled lungs with a solid
    /// 6-voxel nodule in the left one. 2 mm voxels.
    pub(crate) fn toy_chest() -> Array3<f32> {
        Array3::from_shape_fn((40, 100, 120), |(_, j, i)| {
            let (y, x) = (j as f32 - 50.0, i as f32 - 60.0);
            let in_body = (x / 55.0).powi(2) + (y / 45.0).powi(2) < 1.0;
            let in_lung = |cx: f32| ((x - cx) / 20.0).powi(2) + (y / 30.0).powi(2) < 1.0;
            let nodule = (x - 25.0).powi(2) + (y - 5.0).powi(2) < 9.0;
            match (in_body, in_lung(-25.0) || in_lung(25.0), nodule) {
                (false, _, _) => -1000.0,
                (true, true, false) => -850.0,
                _ => 40.0,
            }
        })
    }

    #[test]
    fn finds_both_lungs_and_keeps_the_nodule_inside() {
        let lungs = find_lungs(toy_chest().view(), [2.0, 2.0, 2.0]);
        // Two ellipses of pi*20*30 voxels on 40 slices of 8 ml voxels... in ml:
        let expected = 2.0 * std::f64::consts::PI * 20.0 * 30.0 * 40.0 * 0.008;
        assert!(
            (lungs.volume_ml - expected).abs() / expected < 0.05,
            "{}",
            lungs.volume_ml
        );
        assert!(
            lungs.contains([20, 55, 85]),
            "the nodule is inside the lung mask"
        );
        assert!(!lungs.contains([20, 50, 60]), "the mediastinum is not lung");
        assert!(!lungs.contains([20, 2, 2]), "room air is not lung");
        assert!(lungs.looks_like_chest());
    }

    proptest::proptest! {
        /// The coarse mask answers exactly what the working-grid mask it stands for would.
        #[test]
        fn coarse_answers_match_the_working_grid_mask(
            cells in proptest::collection::vec(proptest::bool::weighted(0.2), 27),
            step in [1usize..4, 1..4, 1..4],
            cut in [0usize..3, 0..3, 0..3],
            lo in [0usize..12, 0..12, 0..12],
            size in [0usize..8, 0..8, 0..8],
        ) {
            let coarse = Array3::from_shape_vec((3, 3, 3), cells).unwrap();
            // The last coarse cell may be cut short, as when the grid is not a multiple.
            let shape: [usize; 3] = std::array::from_fn(|a| 3 * step[a] - cut[a].min(step[a] - 1));
            let full = Array3::from_shape_fn(shape, |(k, j, i)| {
                coarse[(k / step[0], j / step[1], i / step[2])]
            });
            let cell = |a: usize, c: usize| ((c + 1) * step[a]).min(shape[a]) - c * step[a];
            let voxels: usize = coarse
                .indexed_iter()
                .filter(|(_, m)| **m)
                .map(|((k, j, i), _)| cell(0, k) * cell(1, j) * cell(2, i))
                .sum();
            proptest::prop_assert_eq!(voxels, full.iter().filter(|m| **m).count());
            let lungs = LungMask {
                counter: BoxCounter::new(coarse.view()),
                coarse,
                step,
                shape,
                spacing: [1.0; 3],
                volume_ml: 0.0,
                bounds: None,
            };
            let hi: [usize; 3] = std::array::from_fn(|a| lo[a] + size[a]);
            let brute = full.indexed_iter().any(|((k, j, i), m)| {
                *m && (0..3).all(|a| (lo[a]..hi[a]).contains(&[k, j, i][a]))
            });
            proptest::prop_assert_eq!(lungs.any_in(lo, hi), brute);
            for (index, m) in full.indexed_iter() {
                proptest::prop_assert_eq!(lungs.contains(index.into()), *m);
            }
        }
    }

    #[test]
    fn a_head_sized_volume_without_lungs_is_not_a_chest() {
        let head = Array3::from_shape_fn((40, 100, 100), |(_, j, i)| {
            let r = ((j as f32 - 50.0).powi(2) + (i as f32 - 50.0).powi(2)).sqrt();
            if r < 40.0 {
                35.0
            } else {
                -1000.0
            }
        });
        let lungs = find_lungs(head.view(), [2.0, 2.0, 2.0]);
        assert!(!lungs.looks_like_chest());
        assert_eq!(lungs.volume_ml, 0.0);
        assert!(lungs.bounds.is_none());
    }
}
