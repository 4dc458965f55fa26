//! Volume: a CT series as one 3-D array of Hounsfield units with exact patient geometry.
//!
//! This module owns the types every later stage reads ([`Volume`], [`Geometry`],
//! [`SliceRef`]). It knows DICOM; nothing after it does.

mod geometry;

pub use geometry::Geometry;

use ndarray::Array3;

/// The identifiers that tie a volume, and everything computed from it, to its series.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeriesIds {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
}

/// One source image of the volume, so findings can point a viewer at the exact slice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SliceRef {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub instance_number: Option<i32>,
    /// For multi-frame sources: the 1-based frame number within that instance.
    pub frame: Option<u32>,
}

/// A CT series in Hounsfield units.
///
/// `hu` is indexed `[slice, row, column]`: slice `k` is `slices[k]`, ordered along the
/// slice normal by position (never by file name or InstanceNumber); row and column are
/// the DICOM image's own.
#[derive(Debug, Clone)]
pub struct Volume {
    pub hu: Array3<f32>,
    pub geometry: Geometry,
    pub slices: Vec<SliceRef>,
    pub ids: SeriesIds,
    /// SliceThickness as stored (may differ from the spacing between slices).
    pub slice_thickness_mm: Option<f64>,
    /// Geometry or decoding problems that did not stop assembly (gaps, tilt, ...).
    pub warnings: Vec<String>,
}

impl Volume {
    /// `[slices, rows, columns]`.
    pub fn shape(&self) -> [usize; 3] {
        let (k, j, i) = self.hu.dim();
        [k, j, i]
    }
}
