//! A series as its headers describe it, before any pixel is decoded.
//!
//! `ingest` fills these from the headers it scans; [`assemble`](super::assemble) reads
//! them to order the frames and to know where each one's pixels live. One entry per
//! frame, so single-frame CT and multi-frame Enhanced CT look the same from here on.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where an instance's bytes are: a file, or a buffer that arrived over the network.
#[derive(Clone)]
pub enum Source {
    /// A file on disk, opened again (whole) when its pixels are decoded.
    Path(PathBuf),
    /// A complete Part 10 instance in memory; `name` is how errors refer to it.
    Bytes { name: String, bytes: Arc<[u8]> },
}

impl Source {
    /// How errors and reports name this source.
    pub fn name(&self) -> String {
        match self {
            Source::Path(path) => path.display().to_string(),
            Source::Bytes { name, .. } => name.clone(),
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Path(path) => write!(f, "Path({})", path.display()),
            Source::Bytes { name, bytes } => write!(f, "Bytes({name}, {} bytes)", bytes.len()),
        }
    }
}

/// How the stored samples of an instance are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    pub rows: u32,
    pub columns: u32,
    pub number_of_frames: u32,
    pub samples_per_pixel: u16,
    /// PhotometricInterpretation YBR_FULL_422 (or the retired YBR_PARTIAL_422): each pair
    /// of pixels shares its chroma, so unencapsulated data holds two samples a pixel, not
    /// three (PS3.3 C.7.6.3.1.2).
    pub chroma_422: bool,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    /// PixelRepresentation 1: two's complement samples.
    pub signed: bool,
    /// PixelPaddingValue, as a stored value (already sign-interpreted).
    pub padding_value: Option<i32>,
    /// PixelPaddingRangeLimit: with `padding_value`, a range of padding values.
    pub padding_range_limit: Option<i32>,
}

/// One frame's place in the patient and its modality LUT.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameHeader {
    /// 0-based frame index within its instance.
    pub index: u32,
    /// ImagePositionPatient (LPS, mm) of the first transmitted pixel's centre.
    pub position: Option<[f64; 3]>,
    /// ImageOrientationPatient: row direction then column direction.
    pub orientation: Option<[f64; 6]>,
    /// PixelSpacing: between rows, then between columns (mm).
    pub pixel_spacing: Option<[f64; 2]>,
    pub slice_thickness: Option<f64>,
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
}

/// One instance (file or buffer) of a series and its frames.
#[derive(Debug, Clone)]
pub struct Instance {
    pub source: Source,
    pub transfer_syntax_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub instance_number: Option<i32>,
    pub image_type: Vec<String>,
    pub pixel: PixelFormat,
    pub spacing_between_slices: Option<f64>,
    pub frames: Vec<FrameHeader>,
    /// A Modality LUT Sequence, which replaces the rescale when present (PS3.3 C.11.1).
    pub modality_lut: Option<std::sync::Arc<ModalityLut>>,
}

/// A modality LUT: stored value `first` maps to `table[0]`, the next to `table[1]`, and so
/// on; values below or above the table take its first or last entry (PS3.3 C.11.1.1).
#[derive(Debug, Clone, PartialEq)]
pub struct ModalityLut {
    pub first: i32,
    pub table: Vec<f32>,
}

impl Instance {
    /// Whether this instance holds more than one frame (Enhanced CT and the like).
    pub fn is_multi_frame(&self) -> bool {
        self.pixel.number_of_frames > 1
    }
}

/// The instances of one series, in the order they were found.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub modality: String,
    pub series_description: String,
    pub series_number: Option<i32>,
    /// Patient and study attributes that derived objects (SR, SEG) copy.
    pub source: SourceAttributes,
    pub instances: Vec<Instance>,
}

impl Series {
    /// How many frames (slices, for axial CT) the series holds.
    pub fn frame_count(&self) -> usize {
        self.instances.iter().map(|i| i.frames.len()).sum()
    }
}

/// Patient and study module attributes of the source, as derived objects must repeat them.
///
/// Values are kept as read (trimmed); an absent attribute is an empty string, which the
/// DICOM encoders write as an empty type 2 element. These identify a person: they are
/// never logged (`Debug` prints no values) and never enter the JSON report.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SourceAttributes {
    pub patient_name: String,
    pub patient_id: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub referring_physician_name: String,
    pub study_id: String,
    /// IssuerOfPatientID: with `patient_id`, who the patient is across studies.
    pub issuer_of_patient_id: String,
}

impl fmt::Debug for SourceAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SourceAttributes { .. }")
    }
}
