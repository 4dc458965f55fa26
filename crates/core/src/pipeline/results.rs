//! One analysis' results as encoded objects: DICOM SR, DICOM SEG, key images (PNG and
//! DICOM Secondary Capture). Transports decide where they go: the CLI writes files,
//! the service files them in its store and serves them over WADO-RS.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::Analysis;
use crate::compare;
use crate::report::{self, capture, images, seg, sr, DerivedIds};
use pulmo_dicom::volume::Volume;

/// Which DICOM results and images to encode (the JSON report is always made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub sr: bool,
    pub seg: bool,
    /// Key images as PNG.
    pub images: bool,
    /// Key images as DICOM Secondary Capture.
    pub capture: bool,
}

impl Choice {
    /// Nothing but the JSON report.
    pub const NONE: Choice = Choice {
        sr: false,
        seg: false,
        images: false,
        capture: false,
    };
}

/// One encoded result.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// How a file of it is named after its source series UID: `sr.dcm`, `finding-1.png`.
    pub suffix: String,
    /// Its DICOM identity; `None` for PNG key images.
    pub dicom: Option<DicomIds>,
    pub bytes: Vec<u8>,
}

/// The identity of an encoded DICOM result, for indexes and WADO-RS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomIds {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub modality: String,
}

/// Encodes the chosen results of one analysed series; nothing when it was not analysed.
///
/// The DICOM results and key images carry the model's calls (findings at or above the
/// operating point), which is what a PACS files and a viewer shows; the candidates below it
/// stay in the JSON report for review and research. The SR is made even with no call (it
/// says the series was read and nothing was called); the SEG is left out then, as a SEG
/// needs at least one segment.
///
/// With the `prior` the report was compared with, the key image of a call matched to a
/// prior finding shows that finding's view from the prior's snapshot beside it.
pub fn encode(
    volume: &Volume,
    analysis: &Analysis,
    choice: Choice,
    prior: Option<&compare::Prior>,
) -> report::Result<Vec<Encoded>> {
    let segments = &analysis.segments;
    let mut out = Vec::new();
    if !analysis.report.analyzed {
        return Ok(out);
    }
    let report = &analysis.report.calls_only();
    let ids = DerivedIds::for_findings(&report.findings);
    if choice.sr {
        out.push(dicom("sr.dcm", sr::to_sr(report, segments, volume, &ids))?);
    }
    if choice.seg && !report.findings.is_empty() {
        out.push(dicom(
            "seg.dcm",
            seg::to_seg(report, segments, volume, &ids)?,
        )?);
    }
    for finding in &report.findings {
        let segment = segments.iter().find(|s| s.finding_id == finding.id);
        let was = finding.followup.as_ref().and_then(|f| f.prior.as_ref());
        let beside = prior
            .zip(was)
            .filter(|_| choice.images || choice.capture)
            .and_then(|(prior, was)| prior.view(was.finding_id));
        if choice.images {
            out.push(Encoded {
                suffix: format!("finding-{}.png", finding.id),
                dicom: None,
                bytes: images::key_image(finding, segment, volume, beside.as_ref())?,
            });
        }
        if choice.capture {
            let pixels = images::render(finding, segment, volume, beside.as_ref());
            let object = capture::to_capture(report, finding, &pixels, volume, &ids);
            out.push(dicom(&format!("finding-{}.sc.dcm", finding.id), object)?);
        }
    }
    Ok(out)
}

fn dicom(suffix: &str, object: InMemDicomObject) -> report::Result<Encoded> {
    let get = |tag| {
        object
            .element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
            .expect("every encoder sets the identifying attributes. This is a bug.")
    };
    let ids = DicomIds {
        sop_class_uid: get(tags::SOP_CLASS_UID),
        sop_instance_uid: get(tags::SOP_INSTANCE_UID),
        series_instance_uid: get(tags::SERIES_INSTANCE_UID),
        modality: get(tags::MODALITY),
    };
    Ok(Encoded {
        suffix: suffix.to_owned(),
        dicom: Some(ids),
        bytes: report::to_part10(object)?,
    })
}
