//! Volume: a CT series as one 3-D array of Hounsfield units with exact patient geometry.
//!
//! This module owns the types every later stage reads ([`Volume`], [`Geometry`],
//! [`SliceRef`]). It knows DICOM; nothing after it does.
//!
//! [`assemble`] turns a [`Series`] (headers, from `ingest`) into a [`Volume`]: it orders
//! the frames by position ([`order`]), checks that they fit one grid, and decodes them in
//! parallel with rayon ([`decode`]). [`export`] writes a volume as NIfTI-1 or NumPy.
//! [`check_pixel_data`] says, before anything is decoded, whether an instance's Pixel Data
//! is all there.

mod assemble;
mod decode;
pub mod export;
mod geometry;
mod jpeg;
mod jpeg12;
pub mod lengths;
pub mod order;
pub mod part10;
mod rle;
mod series;
mod stored;
pub mod vr;

pub use assemble::{assemble, assemble_at_least, MAX_VOXELS};
pub use decode::{decode_frame, PADDING_HU};
pub use geometry::Geometry;
pub use series::{
    FrameHeader, Instance, ModalityLut, PixelFormat, Series, Source, SourceAttributes,
};
pub use stored::{check_pixel_data, check_pixel_data_bytes, PixelDataError};

use ndarray::Array3;

/// What can stop a series from becoming a volume.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the series has no image frames")]
    NoFrames,
    #[error("{name} has no {attribute}")]
    MissingGeometry {
        name: String,
        attribute: &'static str,
    },
    #[error("{name} has an ImageOrientationPatient that is not two orthogonal directions")]
    BadOrientation { name: String },
    #[error("{name} is oriented differently from {first}")]
    MixedOrientation { name: String, first: String },
    #[error("{name} sits at the same position as {other}")]
    DuplicatePosition { name: String, other: String },
    #[error("{name} is {found:?} (rows, columns) where the series is {expected:?}")]
    MixedSizes {
        name: String,
        expected: (u32, u32),
        found: (u32, u32),
    },
    #[error("the series would hold {voxels} voxels, more than the {MAX_VOXELS} allowed")]
    TooLarge { voxels: u128 },
    #[error("{name} claims {claimed} bytes of pixels but holds {stored} bytes in all")]
    Implausible {
        name: String,
        claimed: u128,
        stored: u128,
    },
    #[error(
        "only {kept} of {total} slices could be decoded, fewer than the {needed} needed; \
         the first left out"
    )]
    TooFewDecoded {
        kept: usize,
        total: usize,
        needed: usize,
        #[source]
        source: Box<Error>,
    },
    #[error("could not read {name}")]
    Read {
        name: String,
        #[source]
        source: Box<part10::OpenError>,
    },
    #[error("{name} has no pixel data")]
    NoPixelData { name: String },
    #[error("could not decode frame {frame} of {name}")]
    Decode {
        name: String,
        frame: u32,
        #[source]
        source: Box<dicom_pixeldata::Error>,
    },
    #[error("could not decode 12-bit JPEG frame {frame} of {name}")]
    Jpeg12 {
        name: String,
        frame: u32,
        #[source]
        source: jpeg12::Jpeg12Error,
    },
    #[error("could not decode RLE frame {frame} of {name}")]
    Rle {
        name: String,
        frame: u32,
        #[source]
        source: rle::RleError,
    },
    #[error(
        "frame {frame} of {name} is a JPEG image of {stream_rows}×{stream_columns} where the header \
         says {rows}×{columns}"
    )]
    JpegSize {
        name: String,
        frame: u32,
        rows: u32,
        columns: u32,
        stream_rows: u16,
        stream_columns: u16,
    },
    #[error(
        "frame {frame} of {name} is a JPEG-LS stream without its end (EOI marker): cut short?"
    )]
    JpegLsCutShort { name: String, frame: u32 },
    #[error("frame {frame} of {name} is inconsistent with its header: the decoder failed on it")]
    DecoderPanic { name: String, frame: u32 },
    #[error("frame {frame} of {name} decoded to {found} bytes, {expected} expected")]
    ShortPixelData {
        name: String,
        frame: u32,
        expected: usize,
        found: usize,
    },
    #[error(
        "{name} stores {samples_per_pixel} samples of {bits_stored} bits in {bits_allocated}, \
         not a CT image"
    )]
    UnsupportedPixels {
        name: String,
        samples_per_pixel: u16,
        bits_allocated: u16,
        bits_stored: u16,
    },
    #[error("could not write {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: the name must end in .nii, .nii.gz or .npy")]
    UnknownFormat { path: std::path::PathBuf },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The identifiers that tie a volume, and everything computed from it, to its series.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeriesIds {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
}

/// One source image of the volume, so findings can point a viewer at the exact slice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SliceRef {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub instance_number: Option<i32>,
    /// For multi-frame sources: the 1-based frame number within that instance.
    pub frame: Option<u32>,
    /// ImagePositionPatient as stored, which derived objects (SEG frames) repeat exactly.
    pub position: Option<[f64; 3]>,
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
    /// Patient and study attributes for the DICOM results; never logged.
    pub source: SourceAttributes,
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
