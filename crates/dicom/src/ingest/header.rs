//! One instance's header, read up to (never into) Pixel Data, as a [`volume::Instance`].
//!
//! Single-frame images take position, orientation and rescale from the top level;
//! Enhanced CT takes them per frame from the functional groups, falling back to the
//! shared groups and then to the top level.

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::{Error, Result};
use crate::volume::part10::{self, OpenError};
use crate::volume::{FrameHeader, Instance, ModalityLut, PixelFormat, Source, SourceAttributes};

/// More frames than this in one instance is not an honest CT header.
pub const MAX_FRAMES: u32 = 65_536;
/// More rows or columns than this is not an honest CT header.
pub const MAX_MATRIX: u32 = 16_384;

/// The series-level attributes of an instance: where it belongs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesKey {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub modality: String,
    pub series_description: String,
    pub series_number: Option<i32>,
    /// Patient and study attributes for derived objects; never logged.
    pub source: SourceAttributes,
}

/// Reads the header of a file (preamble optional, or a bare data set), stopping before
/// Pixel Data.
pub fn read_path(path: &std::path::Path) -> Result<(SeriesKey, Instance)> {
    let source = Source::Path(path.to_owned());
    let obj = part10::open_path(path, true).map_err(|err| read_error(&source, err))?;
    parse(source, obj)
}

/// Reads the header of a file as [`read_path`] does, naming it `name` in errors (a
/// received part, say, whose temporary path means nothing to its sender).
pub fn read_path_as(name: &str, path: &std::path::Path) -> Result<(SeriesKey, Instance)> {
    let obj = part10::open_path(path, true).map_err(|err| Error::ReadHeader {
        name: name.to_owned(),
        source: Box::new(err),
    })?;
    parse_as(name.to_owned(), Source::Path(path.to_owned()), obj)
}

/// Reads the header of an in-memory instance (preamble optional), stopping before Pixel Data.
pub fn read_bytes(name: &str, bytes: std::sync::Arc<[u8]>) -> Result<(SeriesKey, Instance)> {
    let source = Source::Bytes {
        name: name.to_owned(),
        bytes: bytes.clone(),
    };
    let obj = part10::open(std::io::Cursor::new(&bytes[..]), true)
        .map_err(|err| read_error(&source, err))?;
    parse(source, obj)
}

fn read_error(source: &Source, err: OpenError) -> Error {
    Error::ReadHeader {
        name: source.name(),
        source: Box::new(err),
    }
}

fn parse(source: Source, obj: DefaultDicomObject) -> Result<(SeriesKey, Instance)> {
    parse_as(source.name(), source, obj)
}

fn parse_as(
    name: String,
    source: Source,
    mut obj: DefaultDicomObject,
) -> Result<(SeriesKey, Instance)> {
    crate::volume::vr::resolve_unknown_vrs(&mut obj);
    let obj = &obj;
    let key = series_key(obj, &name)?;
    let pixel = pixel_format(obj, &name)?;
    let frames = frames(obj, pixel.number_of_frames);
    let instance = Instance {
        transfer_syntax_uid: trim(obj.meta().transfer_syntax()).to_owned(),
        sop_instance_uid: required(obj, tags::SOP_INSTANCE_UID, "SOPInstanceUID", &name)?,
        sop_class_uid: text(obj, tags::SOP_CLASS_UID).unwrap_or_default(),
        instance_number: int(obj, tags::INSTANCE_NUMBER),
        image_type: strings(obj, tags::IMAGE_TYPE),
        spacing_between_slices: float(obj, tags::SPACING_BETWEEN_SLICES),
        modality_lut: modality_lut(obj, pixel.signed, &name)?,
        source,
        pixel,
        frames,
    };
    Ok((key, instance))
}

fn series_key(obj: &InMemDicomObject, name: &str) -> Result<SeriesKey> {
    Ok(SeriesKey {
        study_instance_uid: required(obj, tags::STUDY_INSTANCE_UID, "StudyInstanceUID", name)?,
        series_instance_uid: required(obj, tags::SERIES_INSTANCE_UID, "SeriesInstanceUID", name)?,
        frame_of_reference_uid: text(obj, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default(),
        modality: text(obj, tags::MODALITY).unwrap_or_default(),
        series_description: text(obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        series_number: int(obj, tags::SERIES_NUMBER),
        source: source_attributes(obj),
    })
}

/// The patient and study attributes that SR and SEG copy from their source.
fn source_attributes(obj: &InMemDicomObject) -> SourceAttributes {
    let get = |tag| text(obj, tag).unwrap_or_default();
    SourceAttributes {
        patient_name: get(tags::PATIENT_NAME),
        patient_id: get(tags::PATIENT_ID),
        issuer_of_patient_id: get(tags::ISSUER_OF_PATIENT_ID),
        patient_birth_date: get(tags::PATIENT_BIRTH_DATE),
        patient_sex: get(tags::PATIENT_SEX),
        study_date: get(tags::STUDY_DATE),
        study_time: get(tags::STUDY_TIME),
        accession_number: get(tags::ACCESSION_NUMBER),
        referring_physician_name: get(tags::REFERRING_PHYSICIAN_NAME),
        study_id: get(tags::STUDY_ID),
    }
}

fn pixel_format(obj: &InMemDicomObject, name: &str) -> Result<PixelFormat> {
    let signed = int(obj, tags::PIXEL_REPRESENTATION) == Some(1);
    let format = PixelFormat {
        rows: uint(obj, tags::ROWS),
        columns: uint(obj, tags::COLUMNS),
        number_of_frames: int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32,
        samples_per_pixel: uint(obj, tags::SAMPLES_PER_PIXEL).max(1) as u16,
        chroma_422: text(obj, tags::PHOTOMETRIC_INTERPRETATION)
            .is_some_and(|p| p.ends_with("_422")),
        bits_allocated: uint(obj, tags::BITS_ALLOCATED) as u16,
        bits_stored: uint(obj, tags::BITS_STORED) as u16,
        signed,
        padding_value: int(obj, tags::PIXEL_PADDING_VALUE),
        padding_range_limit: int(obj, tags::PIXEL_PADDING_RANGE_LIMIT),
    };
    check_dimensions(&format, name)?;
    Ok(format)
}

/// The Modality LUT Sequence's first item as a table, if there is one. Its descriptor is
/// (entries, 0 meaning 65536; first stored value mapped, signed when the pixels are;
/// bits per entry), and its data holds one 16-bit word per entry.
fn modality_lut(
    obj: &InMemDicomObject,
    signed: bool,
    name: &str,
) -> Result<Option<std::sync::Arc<ModalityLut>>> {
    let Some(item) = first_item(obj, tags::MODALITY_LUT_SEQUENCE) else {
        return Ok(None);
    };
    let bad = |problem: String| Error::BadModalityLut {
        name: name.to_owned(),
        problem,
    };
    let descriptor: Vec<i32> = item
        .get(tags::LUT_DESCRIPTOR)
        .and_then(|e| e.to_multi_int::<i32>().ok())
        .filter(|d| d.len() == 3)
        .ok_or_else(|| bad("no LUTDescriptor of three numbers".into()))?;
    let entries = match descriptor[0] {
        0 => 65_536,
        n => n as u16 as usize,
    };
    let first = match descriptor[1] {
        v if signed && v > 0x7FFF => v - 0x1_0000,
        v => v,
    };
    let words: Vec<u16> = match item.get(tags::LUT_DATA).map(|e| e.value()) {
        Some(dicom_core::DicomValue::Primitive(dicom_core::PrimitiveValue::U8(bytes))) => bytes
            .chunks_exact(2)
            .map(|w| u16::from_le_bytes([w[0], w[1]]))
            .collect(),
        Some(value) => value
            .to_multi_int::<u16>()
            .map_err(|_| bad("LUTData is not 16-bit words".into()))?,
        None => return Err(bad("no LUTData".into())),
    };
    if words.len() < entries {
        return Err(bad(format!(
            "LUTData has {} entries, its descriptor says {entries}",
            words.len()
        )));
    }
    Ok(Some(std::sync::Arc::new(ModalityLut {
        first,
        table: words[..entries].iter().map(|&w| f32::from(w)).collect(),
    })))
}

/// Refuses headers whose dimensions would make us allocate absurd amounts.
fn check_dimensions(format: &PixelFormat, name: &str) -> Result<()> {
    if format.rows > MAX_MATRIX
        || format.columns > MAX_MATRIX
        || format.number_of_frames > MAX_FRAMES
    {
        return Err(Error::TooLarge {
            name: name.to_owned(),
            rows: format.rows,
            columns: format.columns,
            frames: format.number_of_frames,
        });
    }
    Ok(())
}

/// The frames of an instance, with per-frame functional groups where they exist.
fn frames(obj: &InMemDicomObject, number_of_frames: u32) -> Vec<FrameHeader> {
    let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .unwrap_or(&[]);
    (0..number_of_frames)
        .map(|index| {
            let groups = [per_frame.get(index as usize), shared];
            frame(obj, index, &groups)
        })
        .collect()
}

fn frame(obj: &InMemDicomObject, index: u32, groups: &[Option<&InMemDicomObject>]) -> FrameHeader {
    let find = |sequence, tag| {
        let in_group = groups
            .iter()
            .flatten()
            .filter_map(|group| first_item(group, sequence))
            .find(|item| item.get(tag).is_some());
        in_group.unwrap_or(obj)
    };
    let position = find(tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT);
    let orientation = find(
        tags::PLANE_ORIENTATION_SEQUENCE,
        tags::IMAGE_ORIENTATION_PATIENT,
    );
    let spacing = find(tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING);
    let thickness = find(tags::PIXEL_MEASURES_SEQUENCE, tags::SLICE_THICKNESS);
    let slope = find(
        tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
        tags::RESCALE_SLOPE,
    );
    let intercept = find(
        tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
        tags::RESCALE_INTERCEPT,
    );
    FrameHeader {
        index,
        position: floats(position, tags::IMAGE_POSITION_PATIENT),
        orientation: floats(orientation, tags::IMAGE_ORIENTATION_PATIENT),
        pixel_spacing: floats(spacing, tags::PIXEL_SPACING),
        slice_thickness: float(thickness, tags::SLICE_THICKNESS),
        rescale_slope: float(slope, tags::RESCALE_SLOPE).unwrap_or(1.0),
        rescale_intercept: float(intercept, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
    }
}

fn first_item(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)?.items()?.first()
}

fn trim(value: &str) -> &str {
    value.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let value = obj.get(tag)?.to_str().ok()?;
    Some(trim(&value).to_owned()).filter(|s| !s.is_empty())
}

fn required(
    obj: &InMemDicomObject,
    tag: dicom_core::Tag,
    what: &'static str,
    name: &str,
) -> Result<String> {
    text(obj, tag).ok_or_else(|| Error::MissingAttribute {
        name: name.to_owned(),
        attribute: what,
    })
}

fn strings(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Vec<String> {
    let Some(values) = obj.get(tag).and_then(|e| e.to_multi_str().ok()) else {
        return Vec::new();
    };
    values.iter().map(|s| trim(s).to_uppercase()).collect()
}

fn int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i32> {
    obj.get(tag)?.to_int::<i32>().ok()
}

fn uint(obj: &InMemDicomObject, tag: dicom_core::Tag) -> u32 {
    int(obj, tag).map_or(0, |v| v.max(0) as u32)
}

fn float(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    obj.get(tag)?.to_float64().ok().filter(|v| v.is_finite())
}

fn floats<const N: usize>(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<[f64; N]> {
    let values = obj.get(tag)?.to_multi_float64().ok()?;
    let array: [f64; N] = values.get(..N)?.try_into().ok()?;
    array.iter().all(|v| v.is_finite()).then_some(array)
}
