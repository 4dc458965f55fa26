//! Ingest: turn a pile of DICOM files, or in-memory instances, into studies and series,
//! and choose the CT series to analyse.
//!
//! [`scan`] reads every header once, up to Pixel Data and never into it, in parallel;
//! files that are not DICOM are listed with the reason, not fatal. [`select`] applies
//! [`SelectionRules`] to a study. Pixels are decoded later, by [`crate::volume::assemble`];
//! [`check_pixel_data`] only asks `volume` whether a received file holds them all.
//! This module knows DICOM headers; it does not know pixels or geometry.

mod header;
mod select;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

pub use header::{SeriesKey, MAX_FRAMES, MAX_MATRIX};
pub use select::{select, Reason, Rejected, Selection, SelectionRules};

use crate::error_chain;
use crate::volume::{Instance, Series};

/// What can go wrong while reading headers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not list everything under {path}")]
    Walk {
        path: PathBuf,
        #[source]
        source: walkdir::Error,
    },
    #[error("could not read a DICOM header from {name}")]
    ReadHeader {
        name: String,
        #[source]
        source: Box<crate::volume::part10::OpenError>,
    },
    #[error("{name} has no {attribute}")]
    MissingAttribute {
        name: String,
        attribute: &'static str,
    },
    #[error("{name} has a Modality LUT Sequence that cannot be applied: {problem}")]
    BadModalityLut { name: String, problem: String },
    #[error("{name} claims {rows}x{columns} pixels in {frames} frames, too large to be honest")]
    TooLarge {
        name: String,
        rows: u32,
        columns: u32,
        frames: u32,
    },
    #[error("{name} has unusable pixel data")]
    PixelData {
        name: String,
        #[source]
        source: crate::volume::PixelDataError,
    },
    #[error("{name} repeats SOP instance {uid}, already read from {first}")]
    DuplicateInstance {
        name: String,
        uid: String,
        first: String,
    },
    #[error("no series to convert{}", list(.passed_over))]
    NoSeries { passed_over: Vec<String> },
    #[error("{} studies each have a series to convert, choose one by its UID{}", .candidates.len(), list(.candidates))]
    SeveralSeries { candidates: Vec<String> },
    #[error("no series with SeriesInstanceUID {uid}")]
    SeriesNotFound { uid: String },
}

/// `: a; b; c` for a non-empty list, nothing otherwise.
fn list(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(": {}", items.join("; "))
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a scan found: studies with their series, and what it passed over.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Studies in the order their first instance was found.
    pub studies: Vec<Study>,
    /// Files or buffers that were not usable DICOM instances, each with its reason.
    pub skipped: Vec<Error>,
}

impl ScanReport {
    /// All series of all studies.
    pub fn series(&self) -> impl Iterator<Item = &Series> {
        self.studies.iter().flat_map(|s| &s.series)
    }
}

/// One study and its series.
#[derive(Debug, Clone, Default)]
pub struct Study {
    pub study_instance_uid: String,
    pub series: Vec<Series>,
}

/// Scans files and folders (recursively), reading each file's header once.
///
/// A root that cannot be listed is an error; any file below it that is not a usable
/// DICOM instance is listed in [`ScanReport::skipped`].
pub fn scan<P: AsRef<Path>>(paths: &[P]) -> Result<ScanReport> {
    let mut skipped = Vec::new();
    let files = list_files(paths, &mut skipped)?;
    let headers: Vec<_> = files
        .par_iter()
        .map(|path| header::read_path(path))
        .collect();
    let mut report = group(headers);
    report.skipped.splice(0..0, skipped);
    Ok(report)
}

/// Scans in-memory Part 10 instances (`name` is how reports refer to each one).
pub fn scan_bytes(instances: Vec<(String, Arc<[u8]>)>) -> ScanReport {
    let headers: Vec<_> = instances
        .into_par_iter()
        .map(|(name, bytes)| header::read_bytes(&name, bytes))
        .collect();
    group(headers)
}

/// Reads one in-memory instance's header; the building block of [`scan_bytes`].
pub fn read_header(name: &str, bytes: Arc<[u8]>) -> Result<(SeriesKey, Instance)> {
    header::read_bytes(name, bytes)
}

/// Reads one file's header up to Pixel Data, naming it `name` in errors.
pub fn read_file_header(name: &str, path: &Path) -> Result<(SeriesKey, Instance)> {
    header::read_path_as(name, path)
}

/// Checks that the file at `path`, whose header [`read_file_header`] read as `instance`,
/// holds all the Pixel Data that header describes, naming it `name` in errors. Only
/// element headers are read, never the pixels themselves.
pub fn check_pixel_data(name: &str, path: &Path, instance: &Instance) -> Result<()> {
    crate::volume::check_pixel_data(path, instance).map_err(|source| Error::PixelData {
        name: name.to_owned(),
        source,
    })
}

/// The one series to analyse in a scan: the given UID, or the one [`select`] chooses.
///
/// More than one study with a passing series is an error, as is none; either error lists
/// what was passed over and why.
pub fn choose<'a>(
    report: &'a ScanReport,
    rules: &SelectionRules,
    uid: Option<&str>,
) -> Result<&'a Series> {
    if let Some(uid) = uid {
        let found = report.series().find(|s| s.series_instance_uid == uid);
        return found.ok_or_else(|| Error::SeriesNotFound {
            uid: uid.to_owned(),
        });
    }
    let selections: Vec<Selection<'_>> = report
        .studies
        .iter()
        .map(|study| select(study, rules))
        .collect();
    let chosen: Vec<&Series> = selections.iter().filter_map(|s| s.chosen).collect();
    match chosen[..] {
        [one] => Ok(one),
        [] => Err(Error::NoSeries {
            passed_over: passed_over(report, &selections),
        }),
        _ => Err(Error::SeveralSeries {
            candidates: chosen.iter().map(|s| describe(s)).collect(),
        }),
    }
}

fn passed_over(report: &ScanReport, selections: &[Selection<'_>]) -> Vec<String> {
    let rejected = selections.iter().flat_map(|s| &s.rejected);
    let series = rejected.map(|r| format!("series {}: {}", describe(r.series), r.reason));
    let files = report.skipped.iter().map(|err| error_chain(err));
    series.chain(files).collect()
}

fn describe(series: &Series) -> String {
    let description = &series.series_description;
    let uid = &series.series_instance_uid;
    if description.is_empty() {
        uid.clone()
    } else {
        format!("{uid} ({description})")
    }
}

/// Every regular file under the given paths, sorted within each folder.
///
/// A root that cannot be read is an error; anything unreadable below it (a folder without
/// permission, a link loop) is passed over and listed in `skipped`.
fn list_files<P: AsRef<Path>>(paths: &[P], skipped: &mut Vec<Error>) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for root in paths {
        let root = root.as_ref();
        for entry in walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
        {
            match entry {
                Ok(entry) if entry.file_type().is_file() => files.push(entry.into_path()),
                Ok(_) => {}
                Err(source) if source.depth() == 0 => {
                    return Err(Error::Walk {
                        path: root.to_owned(),
                        source,
                    })
                }
                Err(source) => skipped.push(Error::Walk {
                    path: root.to_owned(),
                    source,
                }),
            }
        }
    }
    Ok(files)
}

/// Groups headers into studies and series, keeping first-seen order.
fn group(headers: Vec<Result<(SeriesKey, Instance)>>) -> ScanReport {
    let mut report = ScanReport::default();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut studies: HashMap<String, usize> = HashMap::new();
    for header in headers {
        match header.and_then(|(key, instance)| unique(&mut seen, key, instance)) {
            Ok((key, instance)) => place(&mut report, &mut studies, key, instance),
            Err(err) => report.skipped.push(err),
        }
    }
    report
}

fn unique(
    seen: &mut HashMap<String, String>,
    key: SeriesKey,
    instance: Instance,
) -> Result<(SeriesKey, Instance)> {
    let name = instance.source.name();
    if let Some(first) = seen.get(&instance.sop_instance_uid) {
        let uid = instance.sop_instance_uid.clone();
        return Err(Error::DuplicateInstance {
            name,
            uid,
            first: first.clone(),
        });
    }
    seen.insert(instance.sop_instance_uid.clone(), name);
    Ok((key, instance))
}

fn place(
    report: &mut ScanReport,
    studies: &mut HashMap<String, usize>,
    key: SeriesKey,
    instance: Instance,
) {
    let study_index = *studies
        .entry(key.study_instance_uid.clone())
        .or_insert_with(|| {
            let study_instance_uid = key.study_instance_uid.clone();
            report.studies.push(Study {
                study_instance_uid,
                series: Vec::new(),
            });
            report.studies.len() - 1
        });
    let study = &mut report.studies[study_index];
    let known = study
        .series
        .iter()
        .position(|s| s.series_instance_uid == key.series_instance_uid);
    let index = known.unwrap_or_else(|| {
        study.series.push(new_series(&key));
        study.series.len() - 1
    });
    study.series[index].instances.push(instance);
}

fn new_series(key: &SeriesKey) -> Series {
    Series {
        study_instance_uid: key.study_instance_uid.clone(),
        series_instance_uid: key.series_instance_uid.clone(),
        frame_of_reference_uid: key.frame_of_reference_uid.clone(),
        modality: key.modality.clone(),
        series_description: key.series_description.clone(),
        series_number: key.series_number,
        source: key.source.clone(),
        instances: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let err = scan(&["/nonexistent/pulmo-scan-root"]).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/pulmo-scan-root"),
            "{err}"
        );
    }

    #[test]
    fn non_dicom_files_are_skipped_with_their_name() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/readme.txt"), b"hello").unwrap();
        let report = scan(&[dir]).unwrap();
        assert!(report.studies.is_empty());
        assert_eq!(report.skipped.len(), 1);
        assert!(
            report.skipped[0].to_string().contains("readme.txt"),
            "{}",
            report.skipped[0]
        );
    }

    #[test]
    fn the_same_instance_twice_is_kept_once_and_reported() {
        let header = |name: &str| {
            let instance = Instance {
                modality_lut: None,
                source: crate::volume::Source::Path(name.into()),
                transfer_syntax_uid: String::new(),
                sop_instance_uid: "1.2.3".into(),
                sop_class_uid: String::new(),
                instance_number: None,
                image_type: Vec::new(),
                pixel: crate::volume::PixelFormat {
                    rows: 1,
                    columns: 1,
                    number_of_frames: 1,
                    samples_per_pixel: 1,
                    chroma_422: false,
                    bits_allocated: 16,
                    bits_stored: 16,
                    signed: false,
                    padding_value: None,
                    padding_range_limit: None,
                },
                spacing_between_slices: None,
                frames: Vec::new(),
            };
            let key = SeriesKey {
                study_instance_uid: "1".into(),
                series_instance_uid: "2".into(),
                ..SeriesKey::default()
            };
            Ok((key, instance))
        };
        let report = group(vec![header("a.dcm"), header("copy/a.dcm")]);
        assert_eq!(report.series().map(|s| s.instances.len()).sum::<usize>(), 1);
        assert!(
            matches!(&report.skipped[..], [Error::DuplicateInstance { .. }]),
            "{:?}",
            report.skipped
        );
    }
}
