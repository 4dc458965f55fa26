//! Voxel index ↔ patient coordinates (LPS, millimetres).

/// Where a volume's voxels sit in the patient.
///
/// Index order everywhere is `[slice k, row j, column i]`, matching the `hu` array.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Patient position (LPS, mm) of the centre of voxel `[0, 0, 0]`.
    pub origin: [f64; 3],
    /// Unit vector along increasing column index `i` (ImageOrientationPatient 1..3).
    pub row_direction: [f64; 3],
    /// Unit vector along increasing row index `j` (ImageOrientationPatient 4..6).
    pub column_direction: [f64; 3],
    /// Unit vector from slice `k` to slice `k + 1`; equals the image normal (or its
    /// opposite) unless the gantry was tilted.
    pub slice_direction: [f64; 3],
    /// Distance between voxel centres in mm along `[slice, row, column]`.
    pub spacing: [f64; 3],
}

impl Geometry {
    /// An axial geometry with the given origin and spacing, for tests and synthetic data.
    pub fn axial(origin: [f64; 3], spacing: [f64; 3]) -> Self {
        Geometry {
            origin,
            row_direction: [1.0, 0.0, 0.0],
            column_direction: [0.0, 1.0, 0.0],
            slice_direction: [0.0, 0.0, 1.0],
            spacing,
        }
    }

    /// The image normal: row direction × column direction.
    pub fn normal(&self) -> [f64; 3] {
        cross(self.row_direction, self.column_direction)
    }

    /// Patient position (mm) of a (possibly fractional) voxel index `[k, j, i]`.
    pub fn voxel_to_patient(&self, index: [f64; 3]) -> [f64; 3] {
        let [k, j, i] = index;
        let [sk, sj, si] = self.spacing;
        std::array::from_fn(|a| {
            self.origin[a]
                + k * sk * self.slice_direction[a]
                + j * sj * self.column_direction[a]
                + i * si * self.row_direction[a]
        })
    }

    /// Voxel index `[k, j, i]` of a patient position; `None` when the axes are degenerate.
    pub fn patient_to_voxel(&self, point: [f64; 3]) -> Option<[f64; 3]> {
        let [sk, sj, si] = self.spacing;
        let axes = [
            self.slice_direction.map(|v| v * sk),
            self.column_direction.map(|v| v * sj),
            self.row_direction.map(|v| v * si),
        ];
        let delta: [f64; 3] = std::array::from_fn(|a| point[a] - self.origin[a]);
        solve(axes, delta)
    }
}

pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Solves `sum_n x[n] * axes[n] = rhs` by Cramer's rule.
fn solve(axes: [[f64; 3]; 3], rhs: [f64; 3]) -> Option<[f64; 3]> {
    let det = dot(axes[0], cross(axes[1], axes[2]));
    if det.abs() < 1e-12 {
        return None;
    }
    Some([
        dot(rhs, cross(axes[1], axes[2])) / det,
        dot(axes[0], cross(rhs, axes[2])) / det,
        dot(axes[0], cross(axes[1], rhs)) / det,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: [f64; 3], b: [f64; 3]) -> bool {
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn axial_voxel_to_patient_scales_each_axis() {
        let g = Geometry::axial([-100.0, -120.0, 50.0], [2.5, 0.7, 0.8]);
        assert!(close(
            g.voxel_to_patient([2.0, 10.0, 5.0]),
            [-96.0, -113.0, 55.0]
        ));
        assert!(close(g.normal(), [0.0, 0.0, 1.0]));
    }

    #[test]
    fn round_trip_through_an_oblique_tilted_geometry() {
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let g = Geometry {
            origin: [10.0, -20.0, 30.0],
            row_direction: [s, s, 0.0],
            column_direction: [0.0, 0.0, -1.0],
            slice_direction: [-s, s * 0.9, 0.1f64.sqrt() * s],
            spacing: [1.25, 0.6, 0.6],
        };
        let index = [7.5, 100.25, 3.0];
        let back = g.patient_to_voxel(g.voxel_to_patient(index)).unwrap();
        assert!(close(back, index), "{back:?}");
    }

    #[test]
    fn degenerate_axes_have_no_inverse() {
        let mut g = Geometry::axial([0.0; 3], [1.0; 3]);
        g.slice_direction = g.row_direction;
        assert!(g.patient_to_voxel([1.0, 2.0, 3.0]).is_none());
    }
}
