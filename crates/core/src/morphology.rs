//! Binary-mask algorithms shared by the stages: 3-D connected components, 2-D border
//! flood fill, and box counts through a summed-volume table.
//!
//! Plain array code on `[slice, row, column]` arrays; no geometry, no DICOM, no tensors.

use ndarray::{Array3, ArrayView3, Axis, Zip};
use rayon::prelude::*;

/// One connected component of a mask.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Label in the label array (1-based).
    pub label: u32,
    /// Number of voxels.
    pub voxels: usize,
    /// Inclusive bounding box, `[[k0, j0, i0], [k1, j1, i1]]`.
    pub bounds: [[usize; 3]; 2],
}

/// Labels the 26-connected components of `mask`; label 0 is background.
pub fn label(mask: ArrayView3<bool>) -> (Array3<u32>, Vec<Component>) {
    let (nk, nj, ni) = mask.dim();
    let mut labels = Array3::<u32>::zeros((nk, nj, ni));
    let mut components = Vec::new();
    let mut stack = Vec::new();
    for ((k, j, i), &set) in mask.indexed_iter() {
        if !set || labels[(k, j, i)] != 0 {
            continue;
        }
        let label = components.len() as u32 + 1;
        let mut component = Component {
            label,
            voxels: 0,
            bounds: [[k, j, i], [k, j, i]],
        };
        labels[(k, j, i)] = label;
        stack.push([k, j, i]);
        while let Some(p) = stack.pop() {
            component.voxels += 1;
            let [lo, hi] = &mut component.bounds;
            for ((lo, hi), p) in lo.iter_mut().zip(hi.iter_mut()).zip(p) {
                *lo = (*lo).min(p);
                *hi = (*hi).max(p);
            }
            for_each_neighbour(p, [nk, nj, ni], |q| {
                if mask[q] && labels[q] == 0 {
                    labels[q] = label;
                    stack.push(q);
                }
            });
        }
        components.push(component);
    }
    (labels, components)
}

/// Calls `f` with each of the up to 26 in-bounds neighbours of `p`.
#[inline]
fn for_each_neighbour(p: [usize; 3], shape: [usize; 3], mut f: impl FnMut([usize; 3])) {
    let lo = p.map(|v| v.saturating_sub(1));
    let hi: [usize; 3] = std::array::from_fn(|a| (p[a] + 1).min(shape[a] - 1));
    for k in lo[0]..=hi[0] {
        for j in lo[1]..=hi[1] {
            for i in lo[2]..=hi[2] {
                if [k, j, i] != p {
                    f([k, j, i]);
                }
            }
        }
    }
}

/// Per slice, marks the pixels of `mask` reachable from the image border through `mask`
/// (4-connected in the slice plane).
pub fn reachable_from_border(mask: ArrayView3<bool>) -> Array3<bool> {
    let mut out = Array3::from_elem(mask.dim(), false);
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(mask.axis_iter(Axis(0)).into_par_iter())
        .for_each(|(mut out, mask)| {
            let (nj, ni) = mask.dim();
            let mut stack: Vec<(usize, usize)> = (0..nj)
                .flat_map(|j| [(j, 0), (j, ni - 1)])
                .chain((0..ni).flat_map(|i| [(0, i), (nj - 1, i)]))
                .collect();
            while let Some((j, i)) = stack.pop() {
                if !mask[(j, i)] || out[(j, i)] {
                    continue;
                }
                out[(j, i)] = true;
                if j > 0 {
                    stack.push((j - 1, i));
                }
                if j + 1 < nj {
                    stack.push((j + 1, i));
                }
                if i > 0 {
                    stack.push((j, i - 1));
                }
                if i + 1 < ni {
                    stack.push((j, i + 1));
                }
            }
        });
    out
}

/// Per slice, fills the holes of `mask`: pixels not in it that the border cannot reach.
pub fn fill_holes_2d(mask: ArrayView3<bool>) -> Array3<bool> {
    let outside = reachable_from_border(mask.map(|m| !m).view());
    outside.map(|o| !o)
}

/// Per slice, closes `mask` with a square of side `2 * radius + 1`: a dilation then an
/// erosion, which fills bays and gaps narrower than the square and keeps the outline
/// elsewhere.
pub fn close_2d(mask: ArrayView3<bool>, radius: usize) -> Array3<bool> {
    let r = [0, radius, radius];
    let dilated = {
        let counter = BoxCounter::new(mask);
        Array3::from_shape_fn(mask.dim(), |(k, j, i)| {
            counter.count_around([k, j, i], r) > 0
        })
    };
    // Outside the image counts as unset, so nothing grows into the border; the original
    // voxels are kept as they are (a closing never removes any).
    let counter = BoxCounter::new(dilated.view());
    let full = ((2 * radius + 1) * (2 * radius + 1)) as u32;
    Array3::from_shape_fn(mask.dim(), |(k, j, i)| {
        mask[(k, j, i)] || counter.count_around([k, j, i], r) == full
    })
}

/// The half-open box of `radius` around `p`, clipped to `shape`.
fn window(p: [usize; 3], radius: [usize; 3], shape: [usize; 3]) -> ([usize; 3], [usize; 3]) {
    let lo = std::array::from_fn(|a| p[a].saturating_sub(radius[a]));
    let hi = std::array::from_fn(|a| (p[a] + radius[a] + 1).min(shape[a]));
    (lo, hi)
}

/// Counts set voxels in any box in constant time.
#[derive(Debug, Clone)]
pub struct BoxCounter {
    /// `table[k, j, i]` = set voxels in `[0, k) × [0, j) × [0, i)`.
    table: Array3<u32>,
}

impl BoxCounter {
    pub fn new(mask: ArrayView3<bool>) -> Self {
        let (nk, nj, ni) = mask.dim();
        let mut table = Array3::<u32>::zeros((nk + 1, nj + 1, ni + 1));
        Zip::indexed(mask).for_each(|(k, j, i), &m| table[(k + 1, j + 1, i + 1)] = u32::from(m));
        for axis in 0..3 {
            table.accumulate_axis_inplace(Axis(axis), |&prev, cur| *cur += prev);
        }
        BoxCounter { table }
    }

    /// Set voxels within `radius` of `p` on each axis.
    pub fn count_around(&self, p: [usize; 3], radius: [usize; 3]) -> u32 {
        let (nk, nj, ni) = self.table.dim();
        let (lo, hi) = window(p, radius, [nk - 1, nj - 1, ni - 1]);
        self.count(lo, hi)
    }

    /// Set voxels in the half-open box `[lo, hi)`, clipped to the volume.
    pub fn count(&self, lo: [usize; 3], hi: [usize; 3]) -> u32 {
        let (nk, nj, ni) = self.table.dim();
        let hi = [hi[0].min(nk - 1), hi[1].min(nj - 1), hi[2].min(ni - 1)];
        let lo = [lo[0].min(hi[0]), lo[1].min(hi[1]), lo[2].min(hi[2])];
        let t = |k, j, i| i64::from(self.table[(k, j, i)]);
        let sum = t(hi[0], hi[1], hi[2])
            - t(lo[0], hi[1], hi[2])
            - t(hi[0], lo[1], hi[2])
            - t(hi[0], hi[1], lo[2])
            + t(lo[0], lo[1], hi[2])
            + t(lo[0], hi[1], lo[2])
            + t(hi[0], lo[1], lo[2])
            - t(lo[0], lo[1], lo[2]);
        sum as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mask_from(points: &[[usize; 3]], shape: (usize, usize, usize)) -> Array3<bool> {
        let mut mask = Array3::from_elem(shape, false);
        for p in points {
            mask[*p] = true;
        }
        mask
    }

    #[test]
    fn diagonal_voxels_join_and_separated_ones_do_not() {
        let mask = mask_from(&[[0, 0, 0], [1, 1, 1], [3, 3, 3]], (4, 4, 4));
        let (labels, components) = label(mask.view());
        assert_eq!(components.len(), 2);
        assert_eq!(components[0].voxels, 2);
        assert_eq!(components[0].bounds, [[0, 0, 0], [1, 1, 1]]);
        assert_eq!(labels[[1, 1, 1]], 1);
        assert_eq!(labels[[3, 3, 3]], 2);
    }

    #[test]
    fn holes_are_filled_but_open_bays_are_not() {
        // A ring with a hole in slice 0; the same ring opened to the border in slice 1.
        let mut mask = Array3::from_elem((2, 5, 5), false);
        for (j, i) in [
            (1, 1),
            (1, 2),
            (1, 3),
            (2, 1),
            (2, 3),
            (3, 1),
            (3, 2),
            (3, 3),
        ] {
            mask[[0, j, i]] = true;
            mask[[1, j, i]] = true;
        }
        mask[[1, 1, 2]] = false;
        mask[[1, 0, 2]] = false;
        let filled = fill_holes_2d(mask.view());
        assert!(filled[[0, 2, 2]]);
        assert!(!filled[[1, 2, 2]]);
        assert!(!filled[[0, 0, 0]]);
    }

    #[test]
    fn closing_fills_a_narrow_bay_but_not_a_wide_one() {
        // A block with a 2-wide notch at the top and an 8-wide notch at the bottom.
        let mut mask = Array3::from_elem((1, 20, 30), false);
        for j in 2..18 {
            for i in 2..28 {
                mask[(0, j, i)] = true;
            }
        }
        for j in 2..7 {
            mask[(0, j, 9)] = false;
            mask[(0, j, 10)] = false;
        }
        for j in 13..18 {
            for i in 15..23 {
                mask[(0, j, i)] = false;
            }
        }
        let closed = close_2d(mask.view(), 2);
        assert!(
            closed[(0, 3, 9)] && closed[(0, 3, 10)],
            "the narrow notch is filled"
        );
        assert!(!closed[(0, 17, 19)], "the wide notch stays open");
        assert!(
            closed[(0, 2, 2)] && !closed[(0, 0, 0)],
            "the outline is kept"
        );
    }

    proptest! {
        #[test]
        fn box_counts_match_brute_force(
            bits in proptest::collection::vec(any::<bool>(), 4 * 5 * 6),
            lo in (0usize..5, 0usize..6, 0usize..7),
            size in (0usize..5, 0usize..6, 0usize..7),
        ) {
            let mask = Array3::from_shape_vec((4, 5, 6), bits).unwrap();
            let counter = BoxCounter::new(mask.view());
            let lo = [lo.0, lo.1, lo.2];
            let hi = [lo[0] + size.0, lo[1] + size.1, lo[2] + size.2];
            let brute = mask.indexed_iter()
                .filter(|((k, j, i), &m)| m && (lo[0]..hi[0]).contains(k)
                    && (lo[1]..hi[1]).contains(j) && (lo[2]..hi[2]).contains(i))
                .count() as u32;
            prop_assert_eq!(counter.count(lo, hi), brute);
        }

        #[test]
        fn components_partition_the_mask(bits in proptest::collection::vec(any::<bool>(), 3 * 4 * 5)) {
            let mask = Array3::from_shape_vec((3, 4, 5), bits).unwrap();
            let (labels, components) = label(mask.view());
            let total: usize = components.iter().map(|c| c.voxels).sum();
            prop_assert_eq!(total, mask.iter().filter(|m| **m).count());
            for (m, l) in mask.iter().zip(labels.iter()) {
                prop_assert_eq!(*m, *l != 0);
            }
        }
    }
}
