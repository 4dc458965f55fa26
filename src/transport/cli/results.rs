//! Writing one analysis' results into the `--out` directory: the JSON report, DICOM SR,
//! DICOM SEG and key images, each file through a temporary name and a rename so an
//! interrupted run never leaves half a file.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::pipeline::Analysis;
use crate::report::{self, capture, images, seg, sr, DerivedIds};
use crate::volume::Volume;

/// Which DICOM results and images to write (the JSON report is always written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub sr: bool,
    pub seg: bool,
    pub images: bool,
    /// Key images also as DICOM Secondary Capture.
    pub capture: bool,
}

/// Writes the chosen results of one analysed series; nothing when it was not analysed.
///
/// The SEG is left out when there are no findings (a SEG needs at least one segment).
pub fn write(
    dir: &Path,
    volume: &Volume,
    analysis: &Analysis,
    choice: Choice,
) -> anyhow::Result<()> {
    let (report, segments) = (&analysis.report, &analysis.segments);
    if !report.analyzed {
        return Ok(());
    }
    let uid = &report.series_instance_uid;
    let ids = DerivedIds::new(report.findings.len());
    if choice.sr {
        let object = sr::to_sr(report, segments, volume, &ids);
        write_atomic(dir, uid, "sr.dcm", &report::to_part10(object)?)?;
    }
    if choice.seg && !report.findings.is_empty() {
        let object = seg::to_seg(report, segments, volume, &ids)?;
        write_atomic(dir, uid, "seg.dcm", &report::to_part10(object)?)?;
    }
    for finding in &report.findings {
        let segment = segments.iter().find(|s| s.finding_id == finding.id);
        if choice.images {
            let png = images::key_image(finding, segment, volume)?;
            write_atomic(dir, uid, &format!("finding-{}.png", finding.id), &png)?;
        }
        if choice.capture {
            let pixels = images::render(finding, segment, volume);
            let object = capture::to_capture(report, finding, &pixels, volume, &ids);
            let name = format!("finding-{}.sc.dcm", finding.id);
            write_atomic(dir, uid, &name, &report::to_part10(object)?)?;
        }
    }
    Ok(())
}

/// Writes `dir/<uid>.<suffix>` through a temporary file and a rename.
pub fn write_atomic(dir: &Path, uid: &str, suffix: &str, bytes: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(
        !uid.is_empty() && uid.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "series UID {uid:?} is not a valid file name"
    );
    let path = dir.join(format!("{uid}.{suffix}"));
    let tmp = dir.join(format!(".{uid}.{suffix}.tmp"));
    let mut file = std::fs::File::create(&tmp)
        .with_context(|| format!("could not create {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("could not write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("could not write {}", path.display()))
}
