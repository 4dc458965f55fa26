//! A series' frames into one Hounsfield volume: order, check, decode in parallel.

use ndarray::{Array3, ArrayViewMut2, Axis};
use rayon::prelude::*;

use super::order::{self, Placed, SingleSliceHints};
use super::series::{FrameHeader, Instance, Series, Source};
use super::{decode, Error, Result, SeriesIds, SliceRef, Volume};

/// The most voxels one volume may hold (4 GiB of `f32`); hostile headers stop here.
pub const MAX_VOXELS: u128 = 1 << 30;
/// No codec squeezes real CT this much; a header claiming more pixels is lying.
const MAX_COMPRESSION_RATIO: u128 = 4096;
/// Transfer syntaxes whose pixels are stored as they are (deflate is not among them).
const NATIVE_SYNTAXES: [&str; 3] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
];

/// One frame of the series: which instance it comes from and its header.
type FrameOf<'a> = (usize, &'a FrameHeader);

/// Orders a series' frames by position, decodes them in parallel and applies each
/// frame's modality LUT.
///
/// Mixed sizes or orientations, duplicate positions and undecodable multi-frame instances
/// are errors; gaps, uneven spacing and gantry tilt land in [`Volume::warnings`]. A
/// single-frame slice whose pixels cannot be read or decoded is left out with a warning
/// (and the gap it leaves is warned of as any other) unless no slice would be left.
pub fn assemble(series: &Series) -> Result<Volume> {
    assemble_at_least(series, 1)
}

/// [`assemble`], refusing to leave bad slices out when fewer than `min_slices` would
/// remain (the error names the first one left out). A series that held fewer to begin
/// with is its caller's choice.
pub fn assemble_at_least(series: &Series, min_slices: usize) -> Result<Volume> {
    let (rows, columns) = common_size(series)?;
    check_voxels((series.frame_count(), rows as usize, columns as usize))?;
    let mut left_out = LeftOut::new(series.frame_count(), min_slices);
    for (n, instance) in series.instances.iter().enumerate() {
        if let Err(err) = check_plausible(instance) {
            left_out.push(n, instance, err)?;
        }
    }
    let frames = frames_of(series, &left_out);
    left_out.enough(frames.len())?;
    let ordering = order_frames(series, &frames)?;
    let mut hu = Array3::<f32>::zeros((frames.len(), rows as usize, columns as usize));
    let failed = decode_all(series, &frames, &ordering.order, &mut hu);
    let (frames, ordering, hu) = if failed.is_empty() {
        (frames, ordering, hu)
    } else {
        for (n, err) in failed {
            left_out.push(n, &series.instances[n], err)?;
        }
        drop_failed(series, &frames, &ordering, &hu, &mut left_out)?
    };
    let mut warnings = left_out.warnings();
    warnings.extend(ordering.warnings);
    Ok(Volume {
        hu,
        geometry: ordering.geometry,
        slices: ordering
            .order
            .iter()
            .map(|&k| slice_ref(series, frames[k]))
            .collect(),
        ids: ids(series),
        source: series.source.clone(),
        slice_thickness_mm: frames.first().and_then(|(_, f)| f.slice_thickness),
        warnings,
    })
}

/// Single-frame instances left out of the volume because their pixels could not be read
/// or decoded, each with its error, and how few slices may remain.
struct LeftOut {
    instances: Vec<usize>,
    errors: Vec<Error>,
    total: usize,
    min_slices: usize,
}

impl LeftOut {
    fn new(total: usize, min_slices: usize) -> Self {
        LeftOut {
            instances: Vec::new(),
            errors: Vec::new(),
            total,
            min_slices: min_slices.max(1),
        }
    }

    /// Leaves instance `n` out for `err`; `err` itself when it is the series' (a multi-frame
    /// instance, or a problem of the header rather than of the pixels).
    fn push(&mut self, n: usize, instance: &Instance, err: Error) -> Result<()> {
        if instance.is_multi_frame() || !is_pixel_fault(&err) {
            return Err(err);
        }
        self.instances.push(n);
        self.errors.push(err);
        Ok(())
    }

    fn contains(&self, n: usize) -> bool {
        self.instances.contains(&n)
    }

    /// Whether `kept` slices are enough to go on with. Too few is the only slice's own error,
    /// or, when there were others, one that says how many were kept and names the first
    /// left out.
    fn enough(&mut self, kept: usize) -> Result<()> {
        if self.errors.is_empty() || kept >= self.min_slices {
            return Ok(());
        }
        let first = self.errors.remove(0);
        if self.total == 1 {
            return Err(first);
        }
        Err(Error::TooFewDecoded {
            kept,
            total: self.total,
            needed: self.min_slices,
            source: Box::new(first),
        })
    }

    fn warnings(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|err| format!("a slice was left out: {}", crate::error_chain(err)))
            .collect()
    }
}

/// Whether `err` is about one instance's pixels (they are missing, cut short or do not
/// decode), so that leaving the instance out leaves a sound volume.
fn is_pixel_fault(err: &Error) -> bool {
    matches!(
        err,
        Error::Implausible { .. }
            | Error::Read { .. }
            | Error::NoPixelData { .. }
            | Error::Decode { .. }
            | Error::Jpeg12 { .. }
            | Error::JpegSize { .. }
            | Error::Rle { .. }
            | Error::DecoderPanic { .. }
            | Error::ShortPixelData { .. }
    )
}

/// The frames of every instance not left out, in the series' order.
fn frames_of<'a>(series: &'a Series, left_out: &LeftOut) -> Vec<FrameOf<'a>> {
    series
        .instances
        .iter()
        .enumerate()
        .filter(|(n, _)| !left_out.contains(*n))
        .flat_map(|(n, instance)| instance.frames.iter().map(move |f| (n, f)))
        .collect()
}

fn order_frames(series: &Series, frames: &[FrameOf<'_>]) -> Result<order::Ordering> {
    let names: Vec<String> = frames
        .iter()
        .map(|&(n, f)| frame_name(&series.instances[n], f))
        .collect();
    let placed: Vec<Placed> = frames.iter().map(|(_, f)| placed(f)).collect();
    order::order(&placed, &names, hints(series))
}

/// The volume without the slices that failed to decode: the rest ordered again (so that
/// the spacing and the gap warnings see what is left) and copied out of `hu`.
fn drop_failed<'a>(
    series: &'a Series,
    frames: &[FrameOf<'a>],
    ordering: &order::Ordering,
    hu: &Array3<f32>,
    left_out: &mut LeftOut,
) -> Result<(Vec<FrameOf<'a>>, order::Ordering, Array3<f32>)> {
    let mut slice_of = vec![0; frames.len()];
    for (slice, &k) in ordering.order.iter().enumerate() {
        slice_of[k] = slice;
    }
    let kept: Vec<usize> = (0..frames.len())
        .filter(|&k| !left_out.contains(frames[k].0))
        .collect();
    left_out.enough(kept.len())?;
    let kept_frames: Vec<FrameOf<'a>> = kept.iter().map(|&k| frames[k]).collect();
    let reordered = order_frames(series, &kept_frames)?;
    let slices: Vec<usize> = reordered.order.iter().map(|&j| slice_of[kept[j]]).collect();
    Ok((kept_frames, reordered, hu.select(Axis(0), &slices)))
}

fn frame_name(instance: &Instance, frame: &FrameHeader) -> String {
    if instance.is_multi_frame() {
        format!("frame {} of {}", frame.index + 1, instance.source.name())
    } else {
        instance.source.name()
    }
}

fn placed(frame: &FrameHeader) -> Placed {
    Placed {
        position: frame.position,
        orientation: frame.orientation,
        pixel_spacing: frame.pixel_spacing,
    }
}

fn hints(series: &Series) -> SingleSliceHints {
    let first = series.instances.first();
    SingleSliceHints {
        spacing_between_slices: first.and_then(|i| i.spacing_between_slices),
        slice_thickness: first
            .and_then(|i| i.frames.first())
            .and_then(|f| f.slice_thickness),
    }
}

/// Rows and columns shared by every instance.
fn common_size(series: &Series) -> Result<(u32, u32)> {
    let first = series.instances.first().ok_or(Error::NoFrames)?;
    let expected = (first.pixel.rows, first.pixel.columns);
    for instance in &series.instances {
        let found = (instance.pixel.rows, instance.pixel.columns);
        if found.0 == 0 || found.1 == 0 {
            return Err(Error::NoPixelData {
                name: instance.source.name(),
            });
        }
        if found != expected {
            return Err(Error::MixedSizes {
                name: instance.source.name(),
                expected,
                found,
            });
        }
    }
    Ok(expected)
}

fn check_voxels((k, j, i): (usize, usize, usize)) -> Result<()> {
    let voxels = k as u128 * j as u128 * i as u128;
    if voxels > MAX_VOXELS {
        return Err(Error::TooLarge { voxels });
    }
    Ok(())
}

/// Refuses an instance whose header claims more pixel bytes than its source could hold,
/// before anything that size is allocated.
fn check_plausible(instance: &Instance) -> Result<()> {
    let p = &instance.pixel;
    let claimed = p.rows as u128
        * p.columns as u128
        * p.number_of_frames as u128
        * p.bits_allocated.div_ceil(8) as u128;
    let Some(stored) = source_len(instance) else {
        return Ok(()); // unreadable: the decode step reports it, naming the file
    };
    let native = NATIVE_SYNTAXES.contains(&instance.transfer_syntax_uid.as_str());
    let limit = if native {
        stored
    } else {
        stored.saturating_mul(MAX_COMPRESSION_RATIO)
    };
    if claimed > limit {
        return Err(Error::Implausible {
            name: instance.source.name(),
            claimed,
            stored,
        });
    }
    Ok(())
}

fn source_len(instance: &Instance) -> Option<u128> {
    match &instance.source {
        Source::Path(path) => std::fs::metadata(path).ok().map(|m| m.len() as u128),
        Source::Bytes { bytes, .. } => Some(bytes.len() as u128),
    }
}

/// Hands every output slice to the instance holding it, then decodes instances in parallel;
/// returns the instances that failed, each with its error.
fn decode_all(
    series: &Series,
    frames: &[FrameOf<'_>],
    order: &[usize],
    hu: &mut Array3<f32>,
) -> Vec<(usize, Error)> {
    let mut targets: Vec<Vec<(u32, ArrayViewMut2<'_, f32>)>> =
        series.instances.iter().map(|_| Vec::new()).collect();
    for (slice, &k) in hu.outer_iter_mut().zip(order) {
        let (n, frame) = frames[k];
        targets[n].push((frame.index, slice));
    }
    series
        .instances
        .par_iter()
        .zip(targets)
        .enumerate()
        .filter(|(_, (_, targets))| !targets.is_empty())
        .filter_map(|(n, (instance, targets))| {
            decode::decode_into(instance, targets)
                .err()
                .map(|err| (n, err))
        })
        .collect()
}

fn slice_ref(series: &Series, (n, frame): FrameOf<'_>) -> SliceRef {
    let instance = &series.instances[n];
    SliceRef {
        sop_instance_uid: instance.sop_instance_uid.clone(),
        sop_class_uid: instance.sop_class_uid.clone(),
        instance_number: instance.instance_number,
        frame: instance.is_multi_frame().then_some(frame.index + 1),
        position: frame.position,
    }
}

fn ids(series: &Series) -> SeriesIds {
    SeriesIds {
        study_instance_uid: series.study_instance_uid.clone(),
        series_instance_uid: series.series_instance_uid.clone(),
        frame_of_reference_uid: series.frame_of_reference_uid.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ingest;

    /// The first five slices of the sample series, the middle one cut to 70 %.
    fn series_with_a_cut_slice() -> Series {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../sample-dicom/phantom-4242"
        );
        let instances = (1..=5)
            .map(|n| {
                let mut bytes = std::fs::read(format!("{dir}/CT{n:04}.dcm")).unwrap();
                if n == 3 {
                    bytes.truncate(bytes.len() * 7 / 10);
                }
                (format!("slice-{n}.dcm"), Arc::from(bytes))
            })
            .collect();
        let report = ingest::scan_bytes(instances);
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        let series = report.series().next().unwrap().clone();
        series
    }

    #[test]
    fn a_slice_that_does_not_decode_is_left_out_with_a_gap_warning() {
        let series = series_with_a_cut_slice();
        let volume = assemble(&series).unwrap();
        assert_eq!(volume.shape()[0], 4);
        assert_eq!(volume.slices.len(), 4);
        let cut = &series.instances[2].sop_instance_uid;
        assert!(volume.slices.iter().all(|s| &s.sop_instance_uid != cut));
        let warnings = volume.warnings.join("\n");
        assert!(
            warnings.contains("a slice was left out: could not read slice-3.dcm"),
            "{warnings}"
        );
        assert!(
            warnings.contains("gap between slices 1 and 2") && warnings.contains("about 1 missing"),
            "{warnings}"
        );
        // The slices kept are those a series without the cut one gives.
        let mut whole = series.clone();
        whole.instances.remove(2);
        let expected = assemble(&whole).unwrap();
        assert_eq!(volume.hu, expected.hu);
        assert_eq!(volume.geometry, expected.geometry);
    }

    #[test]
    fn too_few_slices_left_is_an_error_naming_the_one_left_out() {
        let series = series_with_a_cut_slice();
        assemble_at_least(&series, 4).unwrap();
        let err = assemble_at_least(&series, 5).unwrap_err();
        assert!(matches!(err, Error::TooFewDecoded { kept: 4, .. }), "{err}");
        let message = crate::error_chain(&err);
        assert!(
            message.starts_with(
                "only 4 of 5 slices could be decoded, fewer than the 5 needed; the first left \
                 out: could not read slice-3.dcm"
            ),
            "{message}"
        );
    }
}
