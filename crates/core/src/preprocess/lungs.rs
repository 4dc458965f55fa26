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
#[derive(Debug, Clone)]
pub struct LungMask {
    pub mask: Array3<bool>,
    /// Box counts over `mask`, for choosing tiles.
    pub counter: BoxCounter,
    /// Voxel spacing of the grid the mask is on, mm.
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
    let shape = hu.dim();
    let mask = Array3::from_shape_fn(shape, |(k, j, i)| {
        coarse_mask[(k / step[0], j / step[1], i / step[2])]
    });
    let bounds = coarse_bounds.map(|[lo, hi]| {
        let full = [shape.0, shape.1, shape.2];
        [
            std::array::from_fn(|a| lo[a] * step[a]),
            std::array::from_fn(|a| ((hi[a] + 1) * step[a]).min(full[a]) - 1),
        ]
    });
    let voxel_ml = spacing.iter().product::<f64>() / 1000.0;
    let volume_ml = mask.iter().filter(|m| **m).count() as f64 * voxel_ml;
    let counter = BoxCounter::new(mask.view());
    LungMask {
        mask,
        spacing,
        counter,
        volume_ml,
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
            lungs.mask[(20, 55, 85)],
            "the nodule is inside the lung mask"
        );
        assert!(!lungs.mask[(20, 50, 60)], "the mediastinum is not lung");
        assert!(!lungs.mask[(20, 2, 2)], "room air is not lung");
        assert!(lungs.looks_like_chest());
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
