//! Registration: the affine map from one scan's patient coordinates to another's, found
//! from the lungs' surfaces alone (not from the scanners' coordinates, which change when the
//! patient lies differently).
//!
//! Iterative closest points, trimmed: the surfaces' centroids are aligned first; rigid
//! steps (Horn's closed form) then bring the surfaces together; affine steps with
//! correspondences taken both ways (so that the map cannot shrink one surface onto a patch of
//! the other) then take up the difference of inspiration. Each step keeps the closest
//! [`KEEP`] of the pairs, so lung cut off by one scan's field of view pulls on nothing.

use rayon::prelude::*;

/// An affine map `y = A·x + t`, as three rows `[a0, a1, a2, t]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [[f64; 4]; 3]);

impl Affine {
    /// The identity.
    pub const IDENTITY: Affine = Affine([
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ]);

    /// A translation by `t`.
    pub fn translation(t: [f64; 3]) -> Affine {
        let mut m = Affine::IDENTITY;
        (0..3).for_each(|r| m.0[r][3] = t[r]);
        m
    }

    /// The map of `p`.
    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        std::array::from_fn(|r| {
            let row = self.0[r];
            row[0] * p[0] + row[1] * p[1] + row[2] * p[2] + row[3]
        })
    }

    /// `self` after `first`: `x ↦ self(first(x))`.
    pub fn after(&self, first: &Affine) -> Affine {
        let (a, b) = (&self.0, &first.0);
        Affine(std::array::from_fn(|r| {
            std::array::from_fn(|c| {
                let linear: f64 = (0..3).map(|k| a[r][k] * b[k][c]).sum();
                linear + if c == 3 { a[r][3] } else { 0.0 }
            })
        }))
    }

    /// The singular values of the linear part, largest first: how much the map stretches.
    pub fn stretches(&self) -> [f64; 3] {
        let a = &self.0;
        let mut ata = [[0.0; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                ata[r][c] = (0..3).map(|k| a[k][r] * a[k][c]).sum();
            }
        }
        let (values, _) = jacobi_eigen(ata, 3);
        let mut s = [values[0], values[1], values[2]].map(|v| v.max(0.0).sqrt());
        s.sort_by(|x, y| y.total_cmp(x));
        s
    }

    /// The determinant of the linear part: below zero the map mirrors.
    pub fn determinant(&self) -> f64 {
        let a = &self.0;
        a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
    }
}

/// The share of pairs each step fits to (the closest ones), and the residual is measured on.
pub const KEEP: f64 = 0.9;
/// Rigid steps, then affine steps (each stops early once the map moves less than 0.01 mm).
const RIGID_STEPS: usize = 40;
const AFFINE_STEPS: usize = 30;
/// Surfaces are thinned to about this many points each: enough to align lungs to a
/// millimetre, few enough that a step takes milliseconds.
pub const MAX_POINTS: usize = 4000;

/// The outcome of a registration: the map from the moving scan to the fixed one and the
/// root-mean-square distance of the closest [`KEEP`] of the surface pairs under it (mm).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aligned {
    pub map: Affine,
    pub residual_mm: f64,
}

/// Aligns surface `moving` with surface `fixed` (points in mm): the returned map takes
/// `moving`'s coordinates to `fixed`'s. None when either has fewer than 3 points.
pub fn register(moving: &[[f64; 3]], fixed: &[[f64; 3]]) -> Option<Aligned> {
    if moving.len() < 3 || fixed.len() < 3 {
        return None;
    }
    let moving = thin(moving);
    let fixed = thin(fixed);
    let fixed_index = Buckets::new(&fixed);
    let mut map = Affine::translation(sub(centroid(&fixed), centroid(&moving)));
    for _ in 0..RIGID_STEPS {
        let pairs = trim(forward_pairs(&moving, &fixed, &fixed_index, &map));
        let step = fit_rigid(&pairs, &map);
        let before = map;
        map = step.after(&map);
        if moved(&before, &map, &moving) < 0.01 {
            break;
        }
    }
    for _ in 0..AFFINE_STEPS {
        let mut pairs = trim(forward_pairs(&moving, &fixed, &fixed_index, &map));
        pairs.extend(trim(backward_pairs(&moving, &fixed, &map)));
        let Some(next) = fit_affine(&pairs) else {
            break;
        };
        let before = map;
        map = next;
        if moved(&before, &map, &moving) < 0.01 {
            break;
        }
    }
    let mut pairs = trim(forward_pairs(&moving, &fixed, &fixed_index, &map));
    pairs.extend(trim(backward_pairs(&moving, &fixed, &map)));
    let squared: f64 = pairs.iter().map(|p| p.d2).sum();
    let residual_mm = (squared / pairs.len().max(1) as f64).sqrt();
    Some(Aligned { map, residual_mm })
}

/// Every `n`-th point, so that at most [`MAX_POINTS`] remain.
fn thin(points: &[[f64; 3]]) -> Vec<[f64; 3]> {
    let stride = points.len().div_ceil(MAX_POINTS).max(1);
    points.iter().step_by(stride).copied().collect()
}

/// The largest distance a point of `points` moved from map `a` to map `b` (mm).
fn moved(a: &Affine, b: &Affine, points: &[[f64; 3]]) -> f64 {
    points
        .iter()
        .map(|p| dist2(a.apply(*p), b.apply(*p)))
        .fold(0.0, f64::max)
        .sqrt()
}

/// A moving point, the fixed point paired with it, and their squared distance under the
/// map they were paired by.
#[derive(Debug, Clone, Copy)]
struct Pair {
    moving: [f64; 3],
    fixed: [f64; 3],
    d2: f64,
}

/// Each moving point with the fixed point closest to its image.
fn forward_pairs(
    moving: &[[f64; 3]],
    fixed: &[[f64; 3]],
    index: &Buckets,
    map: &Affine,
) -> Vec<Pair> {
    moving
        .par_iter()
        .filter_map(|p| {
            let image = map.apply(*p);
            let q = fixed[index.nearest(fixed, image)?];
            Some(Pair {
                moving: *p,
                fixed: q,
                d2: dist2(image, q),
            })
        })
        .collect()
}

/// Each fixed point with the moving point whose image is closest to it.
fn backward_pairs(moving: &[[f64; 3]], fixed: &[[f64; 3]], map: &Affine) -> Vec<Pair> {
    let images: Vec<[f64; 3]> = moving.iter().map(|p| map.apply(*p)).collect();
    let index = Buckets::new(&images);
    fixed
        .par_iter()
        .filter_map(|q| {
            let n = index.nearest(&images, *q)?;
            Some(Pair {
                moving: moving[n],
                fixed: *q,
                d2: dist2(images[n], *q),
            })
        })
        .collect()
}

/// The closest [`KEEP`] of `pairs`.
fn trim(mut pairs: Vec<Pair>) -> Vec<Pair> {
    let keep = ((pairs.len() as f64) * KEEP).ceil() as usize;
    if keep > 0 && keep < pairs.len() {
        pairs.select_nth_unstable_by(keep - 1, |a, b| a.d2.total_cmp(&b.d2));
        pairs.truncate(keep);
    }
    pairs
}

/// The rigid map that best takes each pair's moving point, mapped by `map`, onto its fixed
/// point: Horn's closed form (the rotation is the unit quaternion of the largest eigenvalue
/// of his 4×4 matrix), then the translation between the centroids.
fn fit_rigid(pairs: &[Pair], map: &Affine) -> Affine {
    let from: Vec<[f64; 3]> = pairs.iter().map(|p| map.apply(p.moving)).collect();
    let to: Vec<[f64; 3]> = pairs.iter().map(|p| p.fixed).collect();
    let (cf, ct) = (centroid(&from), centroid(&to));
    let mut s = [[0.0; 3]; 3];
    for (a, b) in from.iter().zip(&to) {
        let (a, b) = (sub(*a, cf), sub(*b, ct));
        for r in 0..3 {
            for c in 0..3 {
                s[r][c] += a[r] * b[c];
            }
        }
    }
    let [[sxx, sxy, sxz], [syx, syy, syz], [szx, szy, szz]] = s;
    let n = [
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz],
    ];
    let (values, vectors) = jacobi_eigen(n, 4);
    let best = (0..4)
        .max_by(|&a, &b| values[a].total_cmp(&values[b]))
        .expect("four eigenvalues. This is a bug.");
    let [w, x, y, z] = std::array::from_fn(|r| vectors[r][best]);
    let rot = [
        [
            w * w + x * x - y * y - z * z,
            2.0 * (x * y - w * z),
            2.0 * (x * z + w * y),
        ],
        [
            2.0 * (x * y + w * z),
            w * w - x * x + y * y - z * z,
            2.0 * (y * z - w * x),
        ],
        [
            2.0 * (x * z - w * y),
            2.0 * (y * z + w * x),
            w * w - x * x - y * y + z * z,
        ],
    ];
    let mut step = Affine(std::array::from_fn(|r| {
        [rot[r][0], rot[r][1], rot[r][2], 0.0]
    }));
    let moved_centroid = step.apply(cf);
    (0..3).for_each(|r| step.0[r][3] = ct[r] - moved_centroid[r]);
    step
}

/// The least-squares affine map taking each pair's first point onto its second; None when
/// the points do not span three dimensions.
fn fit_affine(pairs: &[Pair]) -> Option<Affine> {
    let mut xtx = [[0.0; 4]; 4];
    let mut xty = [[0.0; 3]; 4];
    for Pair {
        moving: x,
        fixed: y,
        ..
    } in pairs
    {
        let row = [x[0], x[1], x[2], 1.0];
        for r in 0..4 {
            for c in 0..4 {
                xtx[r][c] += row[r] * row[c];
            }
            for c in 0..3 {
                xty[r][c] += row[r] * y[c];
            }
        }
    }
    let solved = solve4(xtx, xty)?;
    Some(Affine(std::array::from_fn(|r| {
        std::array::from_fn(|c| solved[c][r])
    })))
}

/// Solves `a · x = b` for a 4×4 `a` and three right-hand sides, by Gaussian elimination
/// with partial pivoting; None when `a` is (nearly) singular.
#[allow(clippy::needless_range_loop)] // row operations read best with indices
fn solve4(mut a: [[f64; 4]; 4], mut b: [[f64; 3]; 4]) -> Option<[[f64; 3]; 4]> {
    let scale = a
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-300);
    for col in 0..4 {
        let pivot = (col..4).max_by(|&r, &s| a[r][col].abs().total_cmp(&a[s][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 * scale {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in 0..4 {
            if r != col {
                let f = a[r][col] / a[col][col];
                for c in 0..4 {
                    a[r][c] -= f * a[col][c];
                }
                for c in 0..3 {
                    b[r][c] -= f * b[col][c];
                }
            }
        }
    }
    Some(std::array::from_fn(|r| b[r].map(|v| v / a[r][r])))
}

/// Eigenvalues and eigenvectors (columns) of the symmetric top-left `n`×`n` block of `m`,
/// by cyclic Jacobi rotations.
#[allow(clippy::needless_range_loop)] // rotations read best with indices
fn jacobi_eigen(mut m: [[f64; 4]; 4], n: usize) -> ([f64; 4], [[f64; 4]; 4]) {
    let mut v = [[0.0; 4]; 4];
    (0..4).for_each(|i| v[i][i] = 1.0);
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|p| (0..n).filter(move |&q| q != p).map(move |q| (p, q)))
            .map(|(p, q)| m[p][q] * m[p][q])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if m[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q][q] - m[p][p]) / (2.0 * m[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k][p], m[k][q]);
                    m[k][p] = c * mkp - s * mkq;
                    m[k][q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p][k], m[q][k]);
                    m[p][k] = c * mpk - s * mqk;
                    m[q][k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k][p], v[k][q]);
                    v[k][p] = c * vkp - s * vkq;
                    v[k][q] = s * vkp + c * vkq;
                }
            }
        }
    }
    (std::array::from_fn(|i| m[i][i]), v)
}

/// Points hashed into cubes of [`Buckets::SIDE`] mm, for nearest-neighbour queries.
struct Buckets {
    cells: std::collections::HashMap<[i64; 3], Vec<usize>>,
    /// How many rings of cells around a query's own hold all points.
    reach: i64,
}

impl Buckets {
    const SIDE: f64 = 8.0;

    fn new(points: &[[f64; 3]]) -> Buckets {
        let mut cells: std::collections::HashMap<[i64; 3], Vec<usize>> = Default::default();
        for (n, p) in points.iter().enumerate() {
            cells.entry(Self::cell(*p)).or_default().push(n);
        }
        Buckets { cells, reach: 6 }
    }

    fn cell(p: [f64; 3]) -> [i64; 3] {
        p.map(|v| (v / Self::SIDE).floor() as i64)
    }

    /// The index of the point nearest to `q` within [`Buckets::reach`] rings of cells
    /// (about 48 mm); None when none is that close.
    fn nearest(&self, points: &[[f64; 3]], q: [f64; 3]) -> Option<usize> {
        let home = Self::cell(q);
        let mut best: Option<(f64, usize)> = None;
        for ring in 0..=self.reach {
            for cell in ring_cells(home, ring) {
                for &n in self.cells.get(&cell).into_iter().flatten() {
                    let d = dist2(points[n], q);
                    if best.is_none_or(|(b, _)| d < b) {
                        best = Some((d, n));
                    }
                }
            }
            // Every point in a farther ring is at least `ring × SIDE` away.
            let covered = ring as f64 * Self::SIDE;
            if best.is_some_and(|(b, _)| b <= covered * covered) {
                break;
            }
        }
        best.map(|(_, n)| n)
    }
}

/// The cells on the surface of the cube of cells `ring` away from `home`.
fn ring_cells(home: [i64; 3], ring: i64) -> impl Iterator<Item = [i64; 3]> {
    let r = ring;
    (-r..=r).flat_map(move |a| {
        (-r..=r).flat_map(move |b| {
            (-r..=r).filter_map(move |c| {
                (a.abs() == r || b.abs() == r || c.abs() == r).then_some([
                    home[0] + a,
                    home[1] + b,
                    home[2] + c,
                ])
            })
        })
    })
}

fn centroid(points: &[[f64; 3]]) -> [f64; 3] {
    let n = points.len().max(1) as f64;
    let mut sum = [0.0; 3];
    for p in points {
        (0..3).for_each(|a| sum[a] += p[a]);
    }
    sum.map(|s| s / n)
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|i| a[i] - b[i])
}

fn dist2(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|i| (a[i] - b[i]) * (a[i] - b[i])).sum()
}
