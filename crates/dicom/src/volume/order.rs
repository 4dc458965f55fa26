//! Slice order and spacing from ImagePositionPatient, never from file names or numbers.
//!
//! Frames are sorted by their position projected on the image normal; the spacing is the
//! median distance between neighbours. Duplicates and mixed orientations are errors;
//! gaps, uneven spacing and gantry tilt are warnings.

use super::geometry::{cross, dot, Geometry};
use super::{Error, Result};

/// Orientation cosines may differ this much between slices of one volume.
const ORIENTATION_TOLERANCE: f64 = 1e-3;
/// Two slices closer than this (mm) along the normal sit at the same position.
const DUPLICATE_TOLERANCE_MM: f64 = 1e-3;
/// A slice step may differ from the median by this much (mm, or 1 %) and still count as even.
const SPACING_TOLERANCE_MM: f64 = 0.01;
/// Slice direction and normal may differ by this angle (radians) before it is a tilt.
const TILT_TOLERANCE_RAD: f64 = 1e-3;

/// What ordering needs to know about one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub position: Option<[f64; 3]>,
    pub orientation: Option<[f64; 6]>,
    pub pixel_spacing: Option<[f64; 2]>,
}

/// How to place a lone slice along the normal: SpacingBetweenSlices, then SliceThickness.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SingleSliceHints {
    pub spacing_between_slices: Option<f64>,
    pub slice_thickness: Option<f64>,
}

/// The frames in volume order, the geometry they span, and what looked wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Ordering {
    /// `order[k]` is the index (into the caller's frames) of slice `k`.
    pub order: Vec<usize>,
    pub geometry: Geometry,
    pub warnings: Vec<String>,
}

/// Orders frames along their normal and derives the volume geometry.
///
/// `names[n]` is how errors refer to frame `n`.
pub fn order(frames: &[Placed], names: &[String], hints: SingleSliceHints) -> Result<Ordering> {
    let mut warnings = Vec::new();
    let Some(first) = frames.first() else {
        return Err(Error::NoFrames);
    };
    if frames
        .iter()
        .all(|f| f.position.is_none() && f.orientation.is_none())
    {
        return Ok(stacked(frames, hints));
    }
    let (row, column) = orientation(first, &names[0])?;
    check_orientations(frames, first, names)?;
    let positions = positions(frames, names)?;
    let normal = cross(row, column);
    let order = sort_along(&positions, normal);
    check_duplicates(&order, &positions, normal, names)?;
    let sorted: Vec<[f64; 3]> = order.iter().map(|&n| positions[n]).collect();
    let (slice_direction, slice_spacing) = slice_axis(&sorted, normal, hints, &mut warnings);
    let pixel_spacing = pixel_spacing(frames, &mut warnings);
    let geometry = Geometry {
        origin: sorted[0],
        row_direction: row,
        column_direction: column,
        slice_direction,
        spacing: [slice_spacing, pixel_spacing[0], pixel_spacing[1]],
    };
    Ok(Ordering {
        order,
        geometry,
        warnings,
    })
}

/// Frames without any patient geometry (secondary captures, some multi-frame MR):
/// stacked in stored order on an axial grid at the origin, with a warning.
fn stacked(frames: &[Placed], hints: SingleSliceHints) -> Ordering {
    let mut warnings = vec![
        "no ImagePositionPatient or ImageOrientationPatient: frames stacked in stored order".into(),
    ];
    let spacing = single_slice_spacing(hints, &mut warnings);
    let pixel_spacing = pixel_spacing(frames, &mut warnings);
    Ordering {
        order: (0..frames.len()).collect(),
        geometry: Geometry::axial([0.0; 3], [spacing, pixel_spacing[0], pixel_spacing[1]]),
        warnings,
    }
}

/// Row and column directions, normalised.
fn orientation(first: &Placed, name: &str) -> Result<([f64; 3], [f64; 3])> {
    let Some(o) = first.orientation else {
        return Err(Error::MissingGeometry {
            name: name.to_owned(),
            attribute: "ImageOrientationPatient",
        });
    };
    let row = normalise([o[0], o[1], o[2]]);
    let column = normalise([o[3], o[4], o[5]]);
    match (row, column) {
        (Some(r), Some(c)) if dot(r, c).abs() < 0.01 => Ok((r, c)),
        _ => Err(Error::BadOrientation {
            name: name.to_owned(),
        }),
    }
}

fn check_orientations(frames: &[Placed], first: &Placed, names: &[String]) -> Result<()> {
    let reference = first.orientation.unwrap_or([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    for (frame, name) in frames.iter().zip(names) {
        let Some(o) = frame.orientation else {
            return Err(Error::MissingGeometry {
                name: name.clone(),
                attribute: "ImageOrientationPatient",
            });
        };
        if o.iter()
            .zip(&reference)
            .any(|(a, b)| (a - b).abs() > ORIENTATION_TOLERANCE)
        {
            return Err(Error::MixedOrientation {
                name: name.clone(),
                first: names[0].clone(),
            });
        }
    }
    Ok(())
}

fn positions(frames: &[Placed], names: &[String]) -> Result<Vec<[f64; 3]>> {
    frames
        .iter()
        .zip(names)
        .map(|(frame, name)| {
            frame.position.ok_or_else(|| Error::MissingGeometry {
                name: name.clone(),
                attribute: "ImagePositionPatient",
            })
        })
        .collect()
}

/// Indexes sorted by position along the normal (a stable sort: ties keep input order).
pub fn sort_along(positions: &[[f64; 3]], normal: [f64; 3]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..positions.len()).collect();
    order.sort_by(|&a, &b| dot(positions[a], normal).total_cmp(&dot(positions[b], normal)));
    order
}

fn check_duplicates(
    order: &[usize],
    positions: &[[f64; 3]],
    normal: [f64; 3],
    names: &[String],
) -> Result<()> {
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if (dot(positions[b], normal) - dot(positions[a], normal)).abs() < DUPLICATE_TOLERANCE_MM {
            return Err(Error::DuplicatePosition {
                name: names[b].clone(),
                other: names[a].clone(),
            });
        }
    }
    Ok(())
}

/// Direction and spacing from slice to slice, with warnings for gaps, unevenness and tilt.
fn slice_axis(
    sorted: &[[f64; 3]],
    normal: [f64; 3],
    hints: SingleSliceHints,
    warnings: &mut Vec<String>,
) -> ([f64; 3], f64) {
    if sorted.len() == 1 {
        return (normal, single_slice_spacing(hints, warnings));
    }
    let steps: Vec<f64> = sorted.windows(2).map(|p| distance(p[0], p[1])).collect();
    let spacing = median(&steps);
    warn_uneven(&steps, spacing, warnings);
    let span = sub(sorted[sorted.len() - 1], sorted[0]);
    let direction =
        normalise(span).expect("distinct sorted positions span a length. This is a bug.");
    let angle = dot(direction, normal).clamp(-1.0, 1.0).acos();
    if angle > TILT_TOLERANCE_RAD {
        warnings.push(format!(
            "gantry tilt: slices advance {:.2} degrees off the image normal",
            angle.to_degrees()
        ));
    }
    (direction, spacing)
}

fn single_slice_spacing(hints: SingleSliceHints, warnings: &mut Vec<String>) -> f64 {
    let positive = |v: Option<f64>| v.filter(|v| *v > 0.0);
    positive(hints.spacing_between_slices)
        .or(positive(hints.slice_thickness))
        .unwrap_or_else(|| {
            warnings.push(
                "one slice without SpacingBetweenSlices or SliceThickness: spacing set to 1 mm"
                    .into(),
            );
            1.0
        })
}

fn warn_uneven(steps: &[f64], spacing: f64, warnings: &mut Vec<String>) {
    let tolerance = SPACING_TOLERANCE_MM.max(0.01 * spacing);
    for (k, &step) in steps.iter().enumerate() {
        let missing = (step / spacing).round() - 1.0;
        if step > 1.5 * spacing {
            warnings.push(format!(
                "gap between slices {k} and {}: {step:.3} mm where {spacing:.3} mm is usual (about {missing} missing)",
                k + 1
            ));
        } else if (step - spacing).abs() > tolerance {
            warnings.push(format!(
                "non-uniform spacing between slices {k} and {}: {step:.3} mm where {spacing:.3} mm is usual",
                k + 1
            ));
        }
    }
}

fn pixel_spacing(frames: &[Placed], warnings: &mut Vec<String>) -> [f64; 2] {
    let Some(spacing) = frames[0]
        .pixel_spacing
        .filter(|s| s.iter().all(|v| *v > 0.0))
    else {
        warnings.push("no PixelSpacing: pixels taken as 1 mm".into());
        return [1.0, 1.0];
    };
    let differs = |s: &[f64; 2]| s.iter().zip(&spacing).any(|(a, b)| (a - b).abs() > 1e-4);
    if frames
        .iter()
        .filter_map(|f| f.pixel_spacing.as_ref())
        .any(differs)
    {
        warnings.push(format!(
            "PixelSpacing differs between slices: used the first, {spacing:?}"
        ));
    }
    spacing
}

/// Median of a non-empty list.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    let d = sub(b, a);
    dot(d, d).sqrt()
}

fn normalise(v: [f64; 3]) -> Option<[f64; 3]> {
    let norm = dot(v, v).sqrt();
    (norm > 1e-6).then(|| v.map(|x| x / norm))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AXIAL: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];

    fn frames(zs: &[f64]) -> Vec<Placed> {
        zs.iter()
            .map(|&z| Placed {
                position: Some([-10.0, -20.0, z]),
                orientation: Some(AXIAL),
                pixel_spacing: Some([0.7, 0.8]),
            })
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("f{i}")).collect()
    }

    fn run(f: &[Placed]) -> Result<Ordering> {
        order(f, &names(f.len()), SingleSliceHints::default())
    }

    #[test]
    fn shuffled_slices_sort_by_position_not_input_order() {
        let o = run(&frames(&[5.0, 2.5, 10.0, 0.0, 7.5])).unwrap();
        assert_eq!(o.order, vec![3, 1, 0, 4, 2]);
        assert_eq!(o.geometry.origin, [-10.0, -20.0, 0.0]);
        assert_eq!(o.geometry.spacing, [2.5, 0.7, 0.8]);
        assert_eq!(o.geometry.slice_direction, [0.0, 0.0, 1.0]);
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    }

    #[test]
    fn a_missing_slice_is_a_gap_warning() {
        let o = run(&frames(&[0.0, 1.0, 2.0, 4.0, 5.0])).unwrap();
        assert_eq!(o.geometry.spacing[0], 1.0);
        assert_eq!(o.warnings.len(), 1);
        assert!(
            o.warnings[0].contains("gap between slices 2 and 3"),
            "{:?}",
            o.warnings
        );
    }

    #[test]
    fn uneven_steps_are_reported() {
        let o = run(&frames(&[0.0, 1.0, 2.0, 3.2, 4.2, 5.2])).unwrap();
        assert!(
            o.warnings.iter().any(|w| w.contains("non-uniform spacing")),
            "{:?}",
            o.warnings
        );
    }

    #[test]
    fn two_slices_at_one_position_are_an_error() {
        let err = run(&frames(&[0.0, 1.0, 1.0])).unwrap_err();
        assert!(matches!(err, Error::DuplicatePosition { .. }), "{err}");
    }

    #[test]
    fn mixed_orientations_are_an_error() {
        let mut f = frames(&[0.0, 1.0]);
        f[1].orientation = Some([0.0, 1.0, 0.0, 0.0, 0.0, -1.0]);
        let err = run(&f).unwrap_err();
        assert!(matches!(err, Error::MixedOrientation { .. }), "{err}");
    }

    #[test]
    fn a_tilted_stack_follows_the_positions_and_warns() {
        let mut f = frames(&[0.0, 1.0, 2.0]);
        for (k, frame) in f.iter_mut().enumerate() {
            frame.position = Some([-10.0, -20.0 + 0.2 * k as f64, k as f64]);
        }
        let o = run(&f).unwrap();
        let d = o.geometry.slice_direction;
        assert!((d[1] - 0.2 / 1.04f64.sqrt()).abs() < 1e-9, "{d:?}");
        assert!((o.geometry.spacing[0] - 1.04f64.sqrt()).abs() < 1e-9);
        assert!(
            o.warnings.iter().any(|w| w.contains("gantry tilt")),
            "{:?}",
            o.warnings
        );
    }

    #[test]
    fn a_lone_slice_takes_its_spacing_from_the_hints() {
        let f = frames(&[3.0]);
        let hints = SingleSliceHints {
            spacing_between_slices: None,
            slice_thickness: Some(5.0),
        };
        let o = order(&f, &names(1), hints).unwrap();
        assert_eq!(o.geometry.spacing[0], 5.0);
        let o = run(&f).unwrap();
        assert_eq!(o.geometry.spacing[0], 1.0);
        assert!(o.warnings[0].contains("spacing set to 1 mm"));
    }

    #[test]
    fn reversed_normal_sorts_feet_first() {
        let mut f = frames(&[0.0, 1.0, 2.0]);
        for frame in &mut f {
            frame.orientation = Some([1.0, 0.0, 0.0, 0.0, -1.0, 0.0]);
        }
        let o = run(&f).unwrap();
        assert_eq!(o.order, vec![2, 1, 0]);
        assert_eq!(o.geometry.slice_direction, [0.0, 0.0, -1.0]);
    }

    #[test]
    fn several_frames_without_positions_are_an_error() {
        let mut f = frames(&[0.0, 1.0]);
        f[1].position = None;
        assert!(matches!(
            run(&f).unwrap_err(),
            Error::MissingGeometry { .. }
        ));
    }
}
