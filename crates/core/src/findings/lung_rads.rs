//! Lung-RADS v2022 categories from nodule size and composition (baseline screening).
//!
//! Sizes are mean diameters rounded to 0.1 mm, as Lung-RADS v2022 asks. Only the size and
//! type rules are applied: growth needs a prior exam, and category 4X needs features
//! (spiculation, lymphadenopathy) that a radiologist judges.

use serde::{Deserialize, Serialize};

use super::NoduleType;

/// A Lung-RADS v2022 assessment category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LungRads {
    /// Negative: no lung nodules.
    #[serde(rename = "1")]
    Cat1,
    /// Benign appearance or behaviour.
    #[serde(rename = "2")]
    Cat2,
    /// Probably benign.
    #[serde(rename = "3")]
    Cat3,
    /// Suspicious.
    #[serde(rename = "4A")]
    Cat4A,
    /// Very suspicious.
    #[serde(rename = "4B")]
    Cat4B,
}

impl LungRads {
    /// The category as printed in reports: `1`, `2`, `3`, `4A`, `4B`.
    pub fn as_str(self) -> &'static str {
        match self {
            LungRads::Cat1 => "1",
            LungRads::Cat2 => "2",
            LungRads::Cat3 => "3",
            LungRads::Cat4A => "4A",
            LungRads::Cat4B => "4B",
        }
    }
}

/// The baseline category of one nodule.
///
/// `solid_core_mm` matters only for part-solid nodules; without it the core is taken as
/// small (< 6 mm).
pub fn categorize(kind: NoduleType, diameter_mm: f64, solid_core_mm: Option<f64>) -> LungRads {
    let d = super::round_to(diameter_mm, 1);
    match kind {
        NoduleType::Solid => match d {
            d if d < 6.0 => LungRads::Cat2,
            d if d < 8.0 => LungRads::Cat3,
            d if d < 15.0 => LungRads::Cat4A,
            _ => LungRads::Cat4B,
        },
        NoduleType::PartSolid => {
            let core = super::round_to(solid_core_mm.unwrap_or(0.0), 1);
            match (d, core) {
                (d, _) if d < 6.0 => LungRads::Cat2,
                (_, c) if c < 6.0 => LungRads::Cat3,
                (_, c) if c < 8.0 => LungRads::Cat4A,
                _ => LungRads::Cat4B,
            }
        }
        NoduleType::GroundGlass if d < 30.0 => LungRads::Cat2,
        NoduleType::GroundGlass => LungRads::Cat3,
    }
}

/// The highest category of a study; category 1 when there are no nodules.
pub fn overall(categories: impl IntoIterator<Item = LungRads>) -> LungRads {
    categories.into_iter().max().unwrap_or(LungRads::Cat1)
}

/// The thickest slices lung screening CT is read from: the ACR's screening CT specifications
/// ask for reconstructions of 2.5 mm or thinner, and Lung-RADS sizes assume them.
pub const SCREENING_MAX_SLICE_MM: f64 = 2.5;

/// A caveat for the report when the series is thicker than screening CT, either in its
/// slice profile (`thickness_mm`, SliceThickness) or in the distance between its slices:
/// a nodule under 6 mm can then fall between two slices, and sizes blur along the slice axis.
pub fn thick_slice_caveat(spacing_mm: f64, thickness_mm: Option<f64>) -> Option<String> {
    let limit = SCREENING_MAX_SLICE_MM + 0.01;
    let what = match thickness_mm {
        Some(t) if t > limit => format!("slice thickness {t:.2} mm"),
        _ if spacing_mm > limit => format!("slices {spacing_mm:.2} mm apart"),
        _ => return None,
    };
    Some(format!(
        "thick slices: {what}, where screening CT is read from {SCREENING_MAX_SLICE_MM} mm or \
         thinner; nodules under 6 mm may be missed and sizes are less exact"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use NoduleType::*;

    #[test]
    fn slices_thicker_or_farther_apart_than_screening_ct_get_a_caveat() {
        assert_eq!(thick_slice_caveat(2.5, Some(2.5)), None);
        assert_eq!(thick_slice_caveat(0.625, Some(1.25)), None);
        assert_eq!(thick_slice_caveat(1.0, None), None);
        let thick = thick_slice_caveat(2.5, Some(5.0)).unwrap();
        assert!(thick.contains("slice thickness 5.00 mm"), "{thick}");
        let apart = thick_slice_caveat(3.0, Some(1.0)).unwrap();
        assert!(apart.contains("slices 3.00 mm apart"), "{apart}");
        assert!(thick_slice_caveat(5.0, None)
            .unwrap()
            .contains("under 6 mm"));
    }

    #[test]
    fn solid_thresholds_follow_v2022() {
        for (d, want) in [
            (3.0, LungRads::Cat2),
            (5.94, LungRads::Cat2),
            (5.96, LungRads::Cat3),
            (7.9, LungRads::Cat3),
            (8.0, LungRads::Cat4A),
            (14.9, LungRads::Cat4A),
            (15.0, LungRads::Cat4B),
        ] {
            assert_eq!(categorize(Solid, d, None), want, "{d} mm");
        }
    }

    #[test]
    fn part_solid_is_driven_by_the_solid_core() {
        assert_eq!(categorize(PartSolid, 5.0, Some(3.0)), LungRads::Cat2);
        assert_eq!(categorize(PartSolid, 12.0, Some(4.0)), LungRads::Cat3);
        assert_eq!(categorize(PartSolid, 12.0, Some(6.5)), LungRads::Cat4A);
        assert_eq!(categorize(PartSolid, 20.0, Some(8.0)), LungRads::Cat4B);
        assert_eq!(categorize(PartSolid, 12.0, None), LungRads::Cat3);
    }

    #[test]
    fn part_solid_boundaries_fall_where_lung_rads_puts_them_after_rounding() {
        for (d, core, want) in [
            (5.9, 5.0, LungRads::Cat2),
            (5.96, 5.0, LungRads::Cat3), // total rounds to 6.0
            (6.0, 5.9, LungRads::Cat3),
            (9.0, 5.96, LungRads::Cat4A), // core rounds to 6.0
            (9.0, 6.0, LungRads::Cat4A),
            (9.0, 7.9, LungRads::Cat4A),
            (9.0, 7.95, LungRads::Cat4B), // core rounds to 8.0
            (9.0, 8.0, LungRads::Cat4B),
        ] {
            assert_eq!(
                categorize(PartSolid, d, Some(core)),
                want,
                "{d} mm, core {core} mm"
            );
        }
    }

    #[test]
    fn ground_glass_changes_category_at_30_mm() {
        assert_eq!(categorize(GroundGlass, 29.9, None), LungRads::Cat2);
        assert_eq!(categorize(GroundGlass, 30.0, None), LungRads::Cat3);
    }

    #[test]
    fn overall_takes_the_worst() {
        assert_eq!(overall([]), LungRads::Cat1);
        assert_eq!(
            overall([LungRads::Cat3, LungRads::Cat4B, LungRads::Cat2]),
            LungRads::Cat4B
        );
    }
}
