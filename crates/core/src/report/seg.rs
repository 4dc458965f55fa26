//! DICOM SEG: a binary segmentation with one segment per finding over the source grid.
//!
//! Frames exist only for source slices that hold part of a segment; each one names its
//! segment and its source slice (Derivation Image, Source Image: the exact SOP Instance
//! UID, and frame for multi-frame sources) and repeats that slice's ImagePositionPatient,
//! so a viewer places it without counting empty frames. Orientation and pixel spacing
//! are shared. Pixel Data is one bit per pixel, frames packed back to back.
//! This module knows the report, segments and volume; it knows nothing of transport.

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use ndarray::{s, ArrayView2};

use super::dcm::{self, code_seq, item, seq, text, Code, Element};
use super::{sr, DerivedIds, Error, Report, Result};
use crate::findings::Laterality;
use crate::postprocess::Segment;
use pulmo_dicom::volume::Volume;

/// Segmentation Storage.
pub const SOP_CLASS: &str = uids::SEGMENTATION_STORAGE;
/// The SEG's series number, after the SR's.
pub const SERIES_NUMBER: i32 = 9902;

const CATEGORY: Code = Code("49755003", "SCT", "Morphologically Altered Structure");
const NODULE: Code = Code("27925004", "SCT", "Nodule");
const LUNG: Code = Code("39607008", "SCT", "Lung");
const LEFT: Code = Code("7771000", "SCT", "Left");
const RIGHT: Code = Code("24028007", "SCT", "Right");
const SEGMENTATION: Code = Code("113076", "DCM", "Segmentation");

/// One frame: which segment (1-based), which source slice, and its pixels.
struct Frame<'a> {
    segment: u16,
    slice: usize,
    mask: ArrayView2<'a, bool>,
    /// Where `mask` starts in the source image (row, column).
    offset: [usize; 2],
}

/// The SEG of one analysed series; an error when there is nothing to segment.
pub fn to_seg(
    report: &Report,
    segments: &[Segment],
    volume: &Volume,
    ids: &DerivedIds,
) -> Result<InMemDicomObject> {
    let frames = frames(report, segments);
    if frames.is_empty() {
        return Err(Error::NothingToSegment);
    }
    let [_, rows, columns] = volume.shape();
    let mut elements = vec![
        text(tags::SOP_CLASS_UID, VR::UI, SOP_CLASS),
        text(tags::SOP_INSTANCE_UID, VR::UI, &ids.seg_instance_uid),
        text(tags::INSTANCE_CREATION_DATE, VR::DA, &ids.created.date),
        text(tags::INSTANCE_CREATION_TIME, VR::TM, &ids.created.time),
    ];
    elements.extend(dcm::patient_and_study(volume));
    elements.extend(series_and_image(volume, ids));
    elements.extend(dcm::equipment(&report.model));
    elements.extend(pixel_module(rows, columns, frames.len()));
    elements.push(segment_sequence(report, ids));
    elements.extend(dimensions(&ids.seg_instance_uid));
    elements.push(shared_groups(volume));
    elements.push(seq(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        frames.iter().map(|f| per_frame(f, volume)).collect(),
    ));
    elements.push(referenced_series(volume, &frames));
    elements.push(pixel_data(&frames, rows, columns));
    Ok(item(elements))
}

/// Every (segment, slice) pair with at least one voxel, segment by segment, slices in
/// volume order.
fn frames<'a>(report: &Report, segments: &'a [Segment]) -> Vec<Frame<'a>> {
    let mut frames = Vec::new();
    for (n, finding) in report.findings.iter().enumerate() {
        let Some(segment) = segments.iter().find(|s| s.finding_id == finding.id) else {
            continue;
        };
        for (dk, mask) in segment.mask.outer_iter().enumerate() {
            if mask.iter().any(|v| *v) {
                frames.push(Frame {
                    segment: n as u16 + 1,
                    slice: segment.origin[0] + dk,
                    mask,
                    offset: [segment.origin[1], segment.origin[2]],
                });
            }
        }
    }
    frames
}

/// General Series, Segmentation Series, Frame of Reference, General Image and
/// Segmentation Image attributes.
fn series_and_image(volume: &Volume, ids: &DerivedIds) -> Vec<Element> {
    vec![
        text(tags::MODALITY, VR::CS, "SEG"),
        text(tags::SERIES_INSTANCE_UID, VR::UI, &ids.seg_series_uid),
        text(tags::SERIES_NUMBER, VR::IS, SERIES_NUMBER.to_string()),
        text(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            "pulmo nodule segmentation",
        ),
        text(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &volume.ids.frame_of_reference_uid,
        ),
        dcm::empty(tags::POSITION_REFERENCE_INDICATOR, VR::LO),
        text(tags::INSTANCE_NUMBER, VR::IS, "1"),
        text(tags::CONTENT_DATE, VR::DA, &ids.created.date),
        text(tags::CONTENT_TIME, VR::TM, &ids.created.time),
        text(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY"),
        text(tags::CONTENT_LABEL, VR::CS, "NODULES"),
        text(tags::CONTENT_DESCRIPTION, VR::LO, "pulmo lung nodules"),
        dcm::empty(tags::CONTENT_CREATOR_NAME, VR::PN),
        text(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
    ]
}

/// Image Pixel attributes for one-bit frames.
fn pixel_module(rows: usize, columns: usize, frames: usize) -> Vec<Element> {
    vec![
        dcm::us(tags::SAMPLES_PER_PIXEL, 1),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        text(tags::NUMBER_OF_FRAMES, VR::IS, frames.to_string()),
        dcm::us(tags::ROWS, rows as u16),
        dcm::us(tags::COLUMNS, columns as u16),
        dcm::us(tags::BITS_ALLOCATED, 1),
        dcm::us(tags::BITS_STORED, 1),
        dcm::us(tags::HIGH_BIT, 0),
        dcm::us(tags::PIXEL_REPRESENTATION, 0),
    ]
}

/// One segment per finding, labelled with its tracking identifier and UID.
fn segment_sequence(report: &Report, ids: &DerivedIds) -> Element {
    let items = report
        .findings
        .iter()
        .enumerate()
        .map(|(n, f)| {
            let side = match f.laterality {
                Laterality::Left => LEFT,
                Laterality::Right => RIGHT,
            };
            let modifier = code_seq(tags::ANATOMIC_REGION_MODIFIER_SEQUENCE, side);
            let region = item(dcm::code_elements(LUNG).into_iter().chain([modifier]));
            item([
                dcm::us(tags::SEGMENT_NUMBER, n as u16 + 1),
                text(tags::SEGMENT_LABEL, VR::LO, sr::tracking_id(f)),
                text(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
                text(tags::SEGMENT_ALGORITHM_NAME, VR::LO, &report.model.id),
                code_seq(tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, CATEGORY),
                code_seq(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, NODULE),
                seq(tags::ANATOMIC_REGION_SEQUENCE, vec![region]),
                text(tags::TRACKING_ID, VR::UT, sr::tracking_id(f)),
                text(tags::TRACKING_UID, VR::UI, &ids.tracking_uids[n]),
            ])
        })
        .collect();
    seq(tags::SEGMENT_SEQUENCE, items)
}

/// Multi-frame Dimension module: frames are indexed by segment, then by position.
fn dimensions(instance_uid: &str) -> Vec<Element> {
    let organization = format!("{instance_uid}.1");
    let index = |pointer, group, label: &str| {
        item([
            dcm::at(tags::DIMENSION_INDEX_POINTER, pointer),
            dcm::at(tags::FUNCTIONAL_GROUP_POINTER, group),
            text(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &organization),
            text(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    vec![
        seq(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![item([text(
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                &organization,
            )])],
        ),
        text(tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D"),
        seq(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                index(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    "Segment Number",
                ),
                index(
                    tags::IMAGE_POSITION_PATIENT,
                    tags::PLANE_POSITION_SEQUENCE,
                    "Image Position Patient",
                ),
            ],
        ),
    ]
}

/// Plane orientation and pixel measures, the same for every frame.
fn shared_groups(volume: &Volume) -> Element {
    let g = &volume.geometry;
    let [sk, sj, si] = g.spacing;
    let orientation: Vec<f64> = g
        .row_direction
        .iter()
        .chain(&g.column_direction)
        .copied()
        .collect();
    let thickness = volume.slice_thickness_mm.unwrap_or(sk);
    let group = item([
        seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item([dcm::ds(
                tags::IMAGE_ORIENTATION_PATIENT,
                &orientation,
            )])],
        ),
        seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item([
                dcm::ds(tags::PIXEL_SPACING, &[sj, si]),
                dcm::ds(tags::SLICE_THICKNESS, &[thickness]),
                dcm::ds(tags::SPACING_BETWEEN_SLICES, &[sk]),
            ])],
        ),
    ]);
    seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![group])
}

/// The stored ImagePositionPatient of slice `k`, or the grid's when none was stored.
pub fn slice_position(volume: &Volume, k: usize) -> [f64; 3] {
    volume.slices[k]
        .position
        .unwrap_or_else(|| volume.geometry.voxel_to_patient([k as f64, 0.0, 0.0]))
}

fn per_frame(frame: &Frame<'_>, volume: &Volume) -> InMemDicomObject {
    let slice = &volume.slices[frame.slice];
    let source = dcm::source_image(slice);
    let derivation = item([
        code_seq(tags::DERIVATION_CODE_SEQUENCE, SEGMENTATION),
        seq(tags::SOURCE_IMAGE_SEQUENCE, vec![item(source)]),
    ]);
    let position = slice_position(volume, frame.slice);
    item([
        seq(tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]),
        seq(
            tags::FRAME_CONTENT_SEQUENCE,
            vec![item([dcm::ul(
                tags::DIMENSION_INDEX_VALUES,
                &[u32::from(frame.segment), frame.slice as u32 + 1],
            )])],
        ),
        seq(
            tags::PLANE_POSITION_SEQUENCE,
            vec![item([dcm::ds(tags::IMAGE_POSITION_PATIENT, &position)])],
        ),
        seq(
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            vec![item([dcm::us(
                tags::REFERENCED_SEGMENT_NUMBER,
                frame.segment,
            )])],
        ),
    ])
}

/// Common Instance Reference: the source series and every slice a frame derives from.
fn referenced_series(volume: &Volume, frames: &[Frame<'_>]) -> Element {
    let mut slices: Vec<usize> = frames.iter().map(|f| f.slice).collect();
    slices.sort_unstable();
    slices.dedup();
    let series = dcm::source_series_item(volume, &slices, tags::REFERENCED_INSTANCE_SEQUENCE);
    seq(tags::REFERENCED_SERIES_SEQUENCE, vec![series])
}

/// Pixel Data for one-bit frames.
fn pixel_data(frames: &[Frame<'_>], rows: usize, columns: usize) -> Element {
    let bytes = pack(frames, rows, columns);
    dicom_core::DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        dicom_core::PrimitiveValue::from(bytes),
    )
}

/// Packs frames bit by bit, first pixel in the lowest bit, frames back to back without
/// padding between them; the whole is padded to an even length.
fn pack(frames: &[Frame<'_>], rows: usize, columns: usize) -> Vec<u8> {
    let per_frame = rows * columns;
    let total = per_frame * frames.len();
    let mut bytes = vec![0u8; total.div_ceil(8).next_multiple_of(2)];
    for (n, frame) in frames.iter().enumerate() {
        let [r0, c0] = frame.offset;
        let (h, w) = frame.mask.dim();
        let (h, w) = (
            h.min(rows.saturating_sub(r0)),
            w.min(columns.saturating_sub(c0)),
        );
        let visible = frame.mask.slice(s![..h, ..w]);
        for ((r, c), inside) in visible.indexed_iter() {
            if *inside {
                let bit = n * per_frame + (r0 + r) * columns + c0 + c;
                bytes[bit / 8] |= 1 << (bit % 8);
            }
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn bits_run_on_across_frames_lowest_bit_first() {
        // Two 3x3 frames: 18 bits in 3 bytes, padded to 4.
        let mut a = Array2::from_elem((1, 1), false);
        a[[0, 0]] = true;
        let frames = [
            Frame {
                segment: 1,
                slice: 0,
                mask: a.view(),
                offset: [0, 1],
            },
            Frame {
                segment: 1,
                slice: 1,
                mask: a.view(),
                offset: [2, 2],
            },
        ];
        let bytes = pack(&frames, 3, 3);
        assert_eq!(bytes.len(), 4);
        // Frame 0, pixel 1 -> bit 1; frame 1, pixel 8 -> bit 17.
        assert_eq!(bytes, vec![0b0000_0010, 0, 0b0000_0010, 0]);
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;
    use crate::report::tests::{analysis, round_trip, string, volume};

    #[test]
    fn frames_exist_only_where_the_segment_is_and_sit_on_their_source_slices() {
        let (report, segments) = analysis();
        let volume = volume();
        let ids = DerivedIds::new(1);
        let obj = round_trip(to_seg(&report, &segments, &volume, &ids).unwrap());
        assert_eq!(string(&obj, tags::NUMBER_OF_FRAMES), "2");
        assert_eq!(string(&obj, tags::PATIENT_ID), "ID-7");
        assert_eq!(string(&obj, tags::STUDY_INSTANCE_UID), "1.2.3");
        assert_eq!(string(&obj, tags::FRAME_OF_REFERENCE_UID), "1.2.3.9");
        let frames = obj.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).unwrap();
        let frames = frames.items().unwrap();
        for (frame, k) in frames.iter().zip([1usize, 3]) {
            let derivation = &frame
                .get(tags::DERIVATION_IMAGE_SEQUENCE)
                .unwrap()
                .items()
                .unwrap()[0];
            let source = &derivation
                .get(tags::SOURCE_IMAGE_SEQUENCE)
                .unwrap()
                .items()
                .unwrap()[0];
            assert_eq!(
                string(source, tags::REFERENCED_SOP_INSTANCE_UID),
                format!("1.2.3.4.5.{k}")
            );
            let plane = &frame
                .get(tags::PLANE_POSITION_SEQUENCE)
                .unwrap()
                .items()
                .unwrap()[0];
            let position = plane
                .get(tags::IMAGE_POSITION_PATIENT)
                .unwrap()
                .to_multi_float64()
                .unwrap();
            assert_eq!(position, slice_position(&volume, k).to_vec());
        }
        // Frame 1: one pixel at (7, 7); frame 2: (8, 8) and (8, 9); 16x16 bits per frame.
        let pixels = obj.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        let set: Vec<usize> = (0..pixels.len() * 8)
            .filter(|bit| pixels[bit / 8] & (1 << (bit % 8)) != 0)
            .collect();
        assert_eq!(set, vec![7 * 16 + 7, 256 + 8 * 16 + 8, 256 + 8 * 16 + 9]);
    }

    #[test]
    fn no_findings_is_an_error_not_an_empty_seg() {
        let (mut report, segments) = analysis();
        report.findings.clear();
        let err = to_seg(&report, &segments, &volume(), &DerivedIds::new(0)).unwrap_err();
        assert!(matches!(err, Error::NothingToSegment), "{err}");
    }
}
