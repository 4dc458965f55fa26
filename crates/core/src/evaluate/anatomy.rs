//! Where a false call lies, from the landmarks a phantom generator records in its truth
//! (`"anatomy"`, schema `pulmo.anatomy/1`, see `scripts/model/phantom.py`): the places where lung
//! CAD's classic false positives sit (hilar vessels, heart border, diaphragm dome,
//! mediastinum) against everything else.
//!
//! The rules, in this order (the first that holds names the place), all in patient mm:
//! - `hilum`: within [`HILUM_MM`] of a hilum point, or within a vessel's radius plus
//!   [`VESSEL_MARGIN_MM`] of a point on a central or hilar vessel of radius
//!   [`BIG_VESSEL_MM`] or more (the trunks and lobar vessels, not the peripheral tree);
//! - `heart border`: within [`HEART_BORDER_MM`] of the heart's ellipsoid surface (inside or
//!   out, approximated along the ellipsoid's normalised radius);
//! - `mediastinum`: inside the mediastinal column widened by [`MEDIASTINUM_MARGIN_MM`];
//! - `diaphragm`: below that side's dome apex plus [`DIAPHRAGM_MM`];
//! - `elsewhere`: the rest (chest wall or parenchyma; the landmarks do not include the
//!   pleura, so the two are not told apart).
//!
//! Nothing here was tuned on a set it is used to report on: the distances are fixed, round
//! numbers chosen from the anatomy, before any false call was counted.

use serde::Deserialize;

/// A hilum point's reach.
pub const HILUM_MM: f64 = 25.0;
/// How far outside a big vessel's wall a finding still lies on it.
pub const VESSEL_MARGIN_MM: f64 = 5.0;
/// The smallest vessel radius counted as a hilar trunk or lobar vessel.
pub const BIG_VESSEL_MM: f64 = 2.5;
/// Half the thickness of the heart border band.
pub const HEART_BORDER_MM: f64 = 12.0;
/// The mediastinal column's widening.
pub const MEDIASTINUM_MARGIN_MM: f64 = 5.0;
/// How far above a dome's apex the diaphragm band reaches.
pub const DIAPHRAGM_MM: f64 = 15.0;

/// The landmarks evaluation reads (other keys of the record are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Anatomy {
    #[serde(default)]
    pub hilum: Option<Sides<[f64; 3]>>,
    #[serde(default)]
    pub heart: Option<Heart>,
    #[serde(default)]
    pub diaphragm: Option<Sides<Dome>>,
    #[serde(default)]
    pub mediastinum: Option<Mediastinum>,
    #[serde(default)]
    pub vessels: Vec<Vessel>,
}

/// One value per side of the patient.
#[derive(Debug, Clone, Deserialize)]
pub struct Sides<T> {
    pub right: T,
    pub left: T,
}

/// The heart as an ellipsoid: radii along three unit axes.
#[derive(Debug, Clone, Deserialize)]
pub struct Heart {
    pub center: [f64; 3],
    pub radii: [f64; 3],
    pub axes: [[f64; 3]; 3],
}

/// One diaphragm dome.
#[derive(Debug, Clone, Deserialize)]
pub struct Dome {
    /// The dome's top.
    pub apex: [f64; 3],
}

/// The central column between the lungs.
#[derive(Debug, Clone, Deserialize)]
pub struct Mediastinum {
    pub center_xy: [f64; 2],
    pub half_width_mm: f64,
    pub half_depth_mm: f64,
}

/// A vessel as points with radii, `[x, y, z, r]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Vessel {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub points: Vec<[f64; 4]>,
}

/// Where a point lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    Hilum,
    HeartBorder,
    Mediastinum,
    Diaphragm,
    Elsewhere,
}

impl Place {
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Place::Hilum => "hilum",
            Place::HeartBorder => "heart border",
            Place::Mediastinum => "mediastinum",
            Place::Diaphragm => "diaphragm",
            Place::Elsewhere => "elsewhere",
        }
    }
}

/// Where `p` (patient LPS mm) lies among the landmarks.
pub fn locate(anatomy: &Anatomy, p: [f64; 3]) -> Place {
    if near_hilum(anatomy, p) {
        Place::Hilum
    } else if anatomy
        .heart
        .as_ref()
        .is_some_and(|h| on_heart_border(h, p))
    {
        Place::HeartBorder
    } else if anatomy
        .mediastinum
        .as_ref()
        .is_some_and(|m| in_mediastinum(m, p))
    {
        Place::Mediastinum
    } else if anatomy
        .diaphragm
        .as_ref()
        .is_some_and(|d| on_diaphragm(d, p))
    {
        Place::Diaphragm
    } else {
        Place::Elsewhere
    }
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn near_hilum(anatomy: &Anatomy, p: [f64; 3]) -> bool {
    let at_point = anatomy
        .hilum
        .as_ref()
        .is_some_and(|h| distance(h.right, p).min(distance(h.left, p)) <= HILUM_MM);
    at_point
        || anatomy
            .vessels
            .iter()
            .filter(|v| v.kind == "central" || v.kind == "hilar")
            .flat_map(|v| &v.points)
            .any(|&[x, y, z, r]| {
                r >= BIG_VESSEL_MM && distance([x, y, z], p) <= r + VESSEL_MARGIN_MM
            })
}

fn on_heart_border(heart: &Heart, p: [f64; 3]) -> bool {
    let d: [f64; 3] = std::array::from_fn(|a| p[a] - heart.center[a]);
    let along: [f64; 3] =
        std::array::from_fn(|i| heart.axes[i].iter().zip(d).map(|(u, v)| u * v).sum::<f64>());
    let normalised = along
        .iter()
        .zip(heart.radii)
        .map(|(a, r)| (a / r.max(1.0)).powi(2))
        .sum::<f64>()
        .sqrt();
    let mean_radius = heart.radii.iter().sum::<f64>() / 3.0;
    ((normalised - 1.0) * mean_radius).abs() <= HEART_BORDER_MM
}

fn in_mediastinum(m: &Mediastinum, p: [f64; 3]) -> bool {
    (p[0] - m.center_xy[0]).abs() <= m.half_width_mm + MEDIASTINUM_MARGIN_MM
        && (p[1] - m.center_xy[1]).abs() <= m.half_depth_mm + MEDIASTINUM_MARGIN_MM
}

fn on_diaphragm(domes: &Sides<Dome>, p: [f64; 3]) -> bool {
    // LPS: x grows to the patient's left, so the right lung lies at negative x.
    let dome = if p[0] < 0.0 {
        &domes.right
    } else {
        &domes.left
    };
    p[2] <= dome.apex[2] + DIAPHRAGM_MM
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anatomy() -> Anatomy {
        serde_json::from_str(
            r#"{
            "hilum": {"right": [-60, 0, 0], "left": [60, 0, 0]},
            "heart": {"center": [20, -40, -60], "radii": [60, 45, 50],
                      "axes": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]},
            "diaphragm": {"right": {"apex": [-80, 0, -120]}, "left": {"apex": [80, 0, -140]}},
            "mediastinum": {"center_xy": [0, 0], "half_width_mm": 25, "half_depth_mm": 60},
            "vessels": [{"kind": "hilar", "points": [[-100, 10, 20, 4]]},
                        {"kind": "hilar", "points": [[-110, 30, 60, 1]]}],
            "family": 4
        }"#,
        )
        .unwrap()
    }

    #[test]
    fn each_place_is_found_by_its_rule() {
        let a = anatomy();
        for (p, want) in [
            ([-70.0, 10.0, 5.0], Place::Hilum),
            ([-100.0, 10.0, 27.0], Place::Hilum),
            ([20.0, -40.0, -5.0], Place::HeartBorder),
            ([0.0, 40.0, 60.0], Place::Mediastinum),
            ([-90.0, 50.0, -110.0], Place::Diaphragm),
            ([90.0, 50.0, -130.0], Place::Diaphragm),
            ([-110.0, 30.0, 60.0], Place::Elsewhere),
            ([110.0, 40.0, 80.0], Place::Elsewhere),
        ] {
            assert_eq!(locate(&a, p), want, "{p:?}");
        }
    }

    #[test]
    fn missing_landmarks_leave_everything_elsewhere() {
        assert_eq!(locate(&Anatomy::default(), [0.0; 3]), Place::Elsewhere);
    }
}
