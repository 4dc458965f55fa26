//! Lung-RADS v2022 categories from nodule size, composition and, with a prior exam, change
//! (new, growing, stable).
//!
//! Sizes are mean diameters rounded to 0.1 mm, as Lung-RADS v2022 asks. The size, type and
//! change rules are applied; category 4X needs features (spiculation, lymphadenopathy) that
//! a radiologist judges, and perifissural, airway and cystic findings are not told apart.

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

/// What Lung-RADS needs to know of a nodule's history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum History {
    /// No prior exam (the baseline screen), or no comparison was made.
    Baseline,
    /// Not seen on the prior exam.
    New,
    /// Mean diameter up by more than 1.5 mm (for a part-solid nodule: its solid core).
    Growing,
    /// Unchanged, or decreased in size, since a prior exam where it had category `prior`,
    /// `interval_days` before (when the dates are known).
    Stable {
        prior: LungRads,
        interval_days: Option<f64>,
    },
}

/// A category and the rule of the v2022 table that gave it, in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub category: LungRads,
    pub rule: String,
}

impl Assessment {
    fn new(category: LungRads, rule: impl Into<String>) -> Assessment {
        Assessment {
            category,
            rule: format!("{}: {}", rule.into(), category.as_str()),
        }
    }
}

/// The follow-up interval (days) after which a category 4A nodule that is stable or
/// smaller steps down to 3: v2022's "3-month follow-up", with a week's slack.
pub const STEP_DOWN_4A_DAYS: f64 = 83.0;
/// The interval (days) after which a category 3 nodule that is stable or smaller steps
/// down to 2: v2022's "6-month follow-up", with a week's slack.
pub const STEP_DOWN_3_DAYS: f64 = 175.0;

/// The baseline category of one nodule.
///
/// `solid_core_mm` matters only for part-solid nodules; without it the core is taken as
/// small (< 6 mm).
pub fn categorize(kind: NoduleType, diameter_mm: f64, solid_core_mm: Option<f64>) -> LungRads {
    assess(kind, diameter_mm, solid_core_mm, History::Baseline).category
}

/// The Lung-RADS v2022 category of one nodule given its `history`, and the rule that gave it.
///
/// Sizes are rounded to 0.1 mm first. A stable (or smaller) nodule keeps its prior category,
/// stepped down one category (4A to 3 after 3 months, 3 to 2 after 6 months) as v2022 asks;
/// 4B stays 4B until a workup proves it benign, which only a reader knows. Category 4X needs
/// features a reader judges (spiculation, lymphadenopathy) and is never assigned here.
pub fn assess(
    kind: NoduleType,
    diameter_mm: f64,
    solid_core_mm: Option<f64>,
    history: History,
) -> Assessment {
    let d = super::round_to(diameter_mm, 1);
    let core = super::round_to(solid_core_mm.unwrap_or(0.0), 1);
    match (kind, history) {
        (
            NoduleType::Solid | NoduleType::PartSolid,
            History::Stable {
                prior,
                interval_days,
            },
        ) => stable(prior, interval_days),
        (NoduleType::Solid, History::Baseline) => solid_baseline(d),
        (NoduleType::Solid, History::New) => solid_new(d),
        (NoduleType::Solid, History::Growing) => solid_growing(d),
        (NoduleType::PartSolid, History::Baseline) => part_solid_baseline(d, core),
        (NoduleType::PartSolid, History::New) if d < 6.0 => {
            Assessment::new(LungRads::Cat3, "part-solid, new, under 6 mm in total")
        }
        (NoduleType::PartSolid, History::New | History::Growing) => {
            part_solid_core_changed(history, core)
        }
        (NoduleType::GroundGlass, history) => ground_glass(d, history),
    }
}

fn solid_baseline(d: f64) -> Assessment {
    match d {
        d if d < 6.0 => Assessment::new(LungRads::Cat2, "solid, baseline, under 6 mm"),
        d if d < 8.0 => Assessment::new(LungRads::Cat3, "solid, baseline, 6 to under 8 mm"),
        d if d < 15.0 => Assessment::new(LungRads::Cat4A, "solid, baseline, 8 to under 15 mm"),
        _ => Assessment::new(LungRads::Cat4B, "solid, baseline, 15 mm or more"),
    }
}

fn solid_new(d: f64) -> Assessment {
    match d {
        d if d < 4.0 => Assessment::new(LungRads::Cat2, "solid, new, under 4 mm"),
        d if d < 6.0 => Assessment::new(LungRads::Cat3, "solid, new, 4 to under 6 mm"),
        d if d < 8.0 => Assessment::new(LungRads::Cat4A, "solid, new, 6 to under 8 mm"),
        _ => Assessment::new(LungRads::Cat4B, "solid, new, 8 mm or more"),
    }
}

fn solid_growing(d: f64) -> Assessment {
    if d < 8.0 {
        Assessment::new(LungRads::Cat4A, "solid, growing, under 8 mm")
    } else {
        Assessment::new(LungRads::Cat4B, "solid, growing, 8 mm or more")
    }
}

fn part_solid_baseline(d: f64, core: f64) -> Assessment {
    match (d, core) {
        (d, _) if d < 6.0 => {
            Assessment::new(LungRads::Cat2, "part-solid, baseline, under 6 mm in total")
        }
        (_, c) if c < 6.0 => Assessment::new(
            LungRads::Cat3,
            "part-solid, baseline, 6 mm or more with a solid core under 6 mm",
        ),
        (_, c) if c < 8.0 => Assessment::new(
            LungRads::Cat4A,
            "part-solid, baseline, solid core 6 to under 8 mm",
        ),
        _ => Assessment::new(
            LungRads::Cat4B,
            "part-solid, baseline, solid core 8 mm or more",
        ),
    }
}

fn part_solid_core_changed(history: History, core: f64) -> Assessment {
    let how = if history == History::New {
        "new"
    } else {
        "growing"
    };
    if core < 4.0 {
        Assessment::new(
            LungRads::Cat4A,
            format!("part-solid, {how}, solid core under 4 mm"),
        )
    } else {
        Assessment::new(
            LungRads::Cat4B,
            format!("part-solid, {how}, solid core 4 mm or more"),
        )
    }
}

fn ground_glass(d: f64, history: History) -> Assessment {
    match history {
        _ if d < 30.0 => Assessment::new(
            LungRads::Cat2,
            "non-solid, under 30 mm (baseline, new, growing or stable)",
        ),
        History::Stable { .. } => {
            Assessment::new(LungRads::Cat2, "non-solid, 30 mm or more, stable")
        }
        History::Baseline => Assessment::new(LungRads::Cat3, "non-solid, baseline, 30 mm or more"),
        History::New => Assessment::new(LungRads::Cat3, "non-solid, new, 30 mm or more"),
        // v2022 puts slowly growing ones in 2; one interval cannot tell slow growth, so the
        // category of a new one is kept.
        History::Growing => Assessment::new(LungRads::Cat3, "non-solid, growing, 30 mm or more"),
    }
}

fn stable(prior: LungRads, interval_days: Option<f64>) -> Assessment {
    let after = |days: f64| interval_days.is_some_and(|i| i >= days);
    match prior {
        LungRads::Cat4B => Assessment::new(
            LungRads::Cat4B,
            "stable or smaller, category 4B on the prior (stays until proven benign)",
        ),
        LungRads::Cat4A if after(STEP_DOWN_4A_DAYS) => Assessment::new(
            LungRads::Cat3,
            "category 4A stable or smaller at 3-month follow-up or later",
        ),
        LungRads::Cat4A => Assessment::new(
            LungRads::Cat4A,
            "category 4A stable or smaller, less than 3 months apart",
        ),
        LungRads::Cat3 if after(STEP_DOWN_3_DAYS) => Assessment::new(
            LungRads::Cat2,
            "category 3 stable or smaller at 6-month follow-up or later",
        ),
        LungRads::Cat3 => Assessment::new(
            LungRads::Cat3,
            "category 3 stable or smaller, less than 6 months apart",
        ),
        LungRads::Cat1 | LungRads::Cat2 => {
            Assessment::new(LungRads::Cat2, "stable or smaller, category 2 on the prior")
        }
    }
}

/// The management note v2022 attaches to a study's category 4B (and to 4X, which a reader
/// assigns when a category 3 or 4 nodule has additional suspicious features).
pub fn management_note(category: LungRads) -> Option<&'static str> {
    (category == LungRads::Cat4B).then_some(
        "4B: diagnostic chest CT with or without contrast, PET/CT and/or tissue sampling \
         depending on the probability of malignancy and comorbidities; a reader upgrades a \
         category 3 or 4 nodule with additional suspicious features to 4X",
    )
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

    fn stable(prior: LungRads, days: f64) -> History {
        History::Stable {
            prior,
            interval_days: Some(days),
        }
    }

    /// Each row of the v2022 table that applies to a follow-up, case by case:
    /// (type, diameter, solid core, history, category).
    #[test]
    fn follow_up_categories_follow_the_v2022_table() {
        use History::*;
        let cases = [
            // Solid, new: 2 under 4 mm, 3 from 4, 4A from 6, 4B from 8.
            (Solid, 3.9, None, New, LungRads::Cat2),
            (Solid, 4.0, None, New, LungRads::Cat3),
            (Solid, 5.9, None, New, LungRads::Cat3),
            (Solid, 6.0, None, New, LungRads::Cat4A),
            (Solid, 7.9, None, New, LungRads::Cat4A),
            (Solid, 8.0, None, New, LungRads::Cat4B),
            // Solid, growing: 4A under 8 mm, 4B from 8.
            (Solid, 5.0, None, Growing, LungRads::Cat4A),
            (Solid, 7.9, None, Growing, LungRads::Cat4A),
            (Solid, 8.0, None, Growing, LungRads::Cat4B),
            (Solid, 20.0, None, Growing, LungRads::Cat4B),
            // Part-solid, new: 3 under 6 mm in total; else by the solid core, 4A under 4 mm.
            (PartSolid, 5.9, Some(2.0), New, LungRads::Cat3),
            (PartSolid, 9.0, Some(3.9), New, LungRads::Cat4A),
            (PartSolid, 9.0, Some(4.0), New, LungRads::Cat4B),
            // Part-solid, growing: by the solid core.
            (PartSolid, 12.0, Some(3.0), Growing, LungRads::Cat4A),
            (PartSolid, 12.0, Some(4.0), Growing, LungRads::Cat4B),
            // Non-solid: 2 under 30 mm whatever its history; 3 when 30 mm or more and new;
            // 2 when 30 mm or more and stable.
            (GroundGlass, 12.0, None, New, LungRads::Cat2),
            (GroundGlass, 29.9, None, Growing, LungRads::Cat2),
            (GroundGlass, 30.0, None, New, LungRads::Cat3),
            (
                GroundGlass,
                31.0,
                None,
                stable(LungRads::Cat3, 365.0),
                LungRads::Cat2,
            ),
            (
                GroundGlass,
                12.0,
                None,
                stable(LungRads::Cat2, 365.0),
                LungRads::Cat2,
            ),
            // Stable or smaller: 4A steps down to 3 at a 3-month follow-up, 3 to 2 at a
            // 6-month one; 4B stays; 2 stays.
            (
                Solid,
                10.0,
                None,
                stable(LungRads::Cat4A, 90.0),
                LungRads::Cat3,
            ),
            (
                Solid,
                10.0,
                None,
                stable(LungRads::Cat4A, 30.0),
                LungRads::Cat4A,
            ),
            (
                Solid,
                7.0,
                None,
                stable(LungRads::Cat3, 182.0),
                LungRads::Cat2,
            ),
            (
                Solid,
                7.0,
                None,
                stable(LungRads::Cat3, 90.0),
                LungRads::Cat3,
            ),
            (
                Solid,
                16.0,
                None,
                stable(LungRads::Cat4B, 365.0),
                LungRads::Cat4B,
            ),
            (
                Solid,
                5.0,
                None,
                stable(LungRads::Cat2, 365.0),
                LungRads::Cat2,
            ),
            // A stable nodule that measures a little over a threshold keeps its category.
            (
                Solid,
                6.4,
                None,
                stable(LungRads::Cat2, 365.0),
                LungRads::Cat2,
            ),
            (
                PartSolid,
                12.0,
                Some(7.0),
                stable(LungRads::Cat4A, 120.0),
                LungRads::Cat3,
            ),
        ];
        for (kind, d, core, history, want) in cases {
            let got = assess(kind, d, core, history);
            assert_eq!(
                got.category, want,
                "{kind:?} {d} mm core {core:?} {history:?}: {}",
                got.rule
            );
            assert!(got.rule.ends_with(want.as_str()), "{}", got.rule);
        }
    }

    #[test]
    fn a_stable_nodule_without_known_dates_keeps_its_prior_category() {
        let history = History::Stable {
            prior: LungRads::Cat4A,
            interval_days: None,
        };
        assert_eq!(assess(Solid, 10.0, None, history).category, LungRads::Cat4A);
    }

    #[test]
    fn rules_name_the_row_that_applied() {
        let a = assess(Solid, 9.0, None, History::Growing);
        assert_eq!(a.rule, "solid, growing, 8 mm or more: 4B");
        let b = assess(Solid, 7.0, None, History::Baseline);
        assert_eq!(b.rule, "solid, baseline, 6 to under 8 mm: 3");
        assert!(management_note(LungRads::Cat4B).unwrap().contains("4X"));
        assert_eq!(management_note(LungRads::Cat4A), None);
    }
}
