//! Key images as DICOM Secondary Capture, for PACS that show nothing but images.
//!
//! One single-frame RGB Secondary Capture per finding, in the source study, in its own
//! series, pointing at the source slice it was cut from. The pixels are
//! [`images::render`](super::images::render)'s: crop, outline and burned-in caption.

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use image::RgbImage;

use super::dcm::{self, item, seq, text, Element};
use super::{DerivedIds, Report};
use crate::findings::Finding;
use pulmo_dicom::volume::Volume;

/// Secondary Capture Image Storage.
pub const SOP_CLASS: &str = uids::SECONDARY_CAPTURE_IMAGE_STORAGE;
/// The key images' series number, after the SR's and the SEG's.
pub const SERIES_NUMBER: i32 = 9903;

/// The Secondary Capture of one finding's key image (`pixels` from `images::render`).
pub fn to_capture(
    report: &Report,
    finding: &Finding,
    pixels: &RgbImage,
    volume: &Volume,
    ids: &DerivedIds,
) -> InMemDicomObject {
    let mut elements = vec![
        text(tags::SOP_CLASS_UID, VR::UI, SOP_CLASS),
        text(tags::SOP_INSTANCE_UID, VR::UI, dcm::new_uid()),
        text(tags::INSTANCE_CREATION_DATE, VR::DA, &ids.created.date),
        text(tags::INSTANCE_CREATION_TIME, VR::TM, &ids.created.time),
    ];
    elements.extend(dcm::patient_and_study(volume));
    elements.extend(series(ids));
    elements.extend(dcm::equipment(&report.model));
    elements.extend(capture_equipment(report));
    elements.extend(general_image(finding, volume, ids));
    elements.extend(image_pixel(pixels));
    item(elements)
}

fn series(ids: &DerivedIds) -> Vec<Element> {
    vec![
        text(tags::MODALITY, VR::CS, "OT"),
        text(tags::SERIES_INSTANCE_UID, VR::UI, &ids.capture_series_uid),
        text(tags::SERIES_NUMBER, VR::IS, SERIES_NUMBER.to_string()),
        text(tags::SERIES_DESCRIPTION, VR::LO, "pulmo key images"),
        // Findings of one series lie in either lung, so the series has no one laterality.
        dcm::empty(tags::LATERALITY, VR::CS),
    ]
}

/// SC Equipment module: made on a workstation by pulmo.
fn capture_equipment(report: &Report) -> Vec<Element> {
    vec![
        text(tags::CONVERSION_TYPE, VR::CS, "WSD"),
        text(tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER, VR::LO, "pulmo"),
        text(
            tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER_MODEL_NAME,
            VR::LO,
            &report.model.id,
        ),
        text(
            tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS,
            VR::LO,
            crate::build_info::VERSION,
        ),
    ]
}

/// General Image module, with the source slice as Source Image.
fn general_image(finding: &Finding, volume: &Volume, ids: &DerivedIds) -> Vec<Element> {
    let k = (finding.center_voxel[2] as usize).min(volume.slices.len().saturating_sub(1));
    let slice = &volume.slices[k];
    let source = dcm::source_image(slice);
    vec![
        text(tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY"),
        text(tags::INSTANCE_NUMBER, VR::IS, finding.id.to_string()),
        dcm::empty(tags::PATIENT_ORIENTATION, VR::CS),
        text(tags::CONTENT_DATE, VR::DA, &ids.created.date),
        text(tags::CONTENT_TIME, VR::TM, &ids.created.time),
        text(
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            "lung window crop with nodule outline and caption",
        ),
        seq(tags::SOURCE_IMAGE_SEQUENCE, vec![item(source)]),
        text(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
    ]
}

/// Image Pixel module: 8-bit RGB, pixel-interleaved.
fn image_pixel(pixels: &RgbImage) -> Vec<Element> {
    let mut bytes = pixels.as_raw().clone();
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    vec![
        dcm::us(tags::SAMPLES_PER_PIXEL, 3),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
        dcm::us(tags::PLANAR_CONFIGURATION, 0),
        dcm::us(tags::ROWS, pixels.height() as u16),
        dcm::us(tags::COLUMNS, pixels.width() as u16),
        dcm::us(tags::BITS_ALLOCATED, 8),
        dcm::us(tags::BITS_STORED, 8),
        dcm::us(tags::HIGH_BIT, 7),
        dcm::us(tags::PIXEL_REPRESENTATION, 0),
        dicom_core::DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            dicom_core::PrimitiveValue::from(bytes),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::images;
    use crate::report::tests::{analysis, round_trip, string, volume};

    #[test]
    fn a_capture_holds_the_rendered_pixels_in_the_source_study() {
        let (report, segments) = analysis();
        let volume = volume();
        let f = &report.findings[0];
        let pixels = images::render(f, segments.first(), &volume, None);
        let ids = DerivedIds::new(1);
        let obj = round_trip(to_capture(&report, f, &pixels, &volume, &ids));
        assert_eq!(string(&obj, tags::STUDY_INSTANCE_UID), "1.2.3");
        assert_eq!(string(&obj, tags::ROWS), pixels.height().to_string());
        let stored = obj.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        assert_eq!(&stored[..pixels.as_raw().len()], &pixels.as_raw()[..]);
        let source = &obj
            .get(tags::SOURCE_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        assert_eq!(
            string(source, tags::REFERENCED_SOP_INSTANCE_UID),
            "1.2.3.4.5.2"
        );
    }
}
