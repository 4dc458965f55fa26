//! A series' frames into one Hounsfield volume: order, check, decode in parallel.

use ndarray::{Array3, ArrayViewMut2};
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
/// Mixed sizes or orientations, duplicate positions and undecodable frames are errors;
/// gaps, uneven spacing and gantry tilt land in [`Volume::warnings`].
pub fn assemble(series: &Series) -> Result<Volume> {
    let frames: Vec<FrameOf<'_>> = series
        .instances
        .iter()
        .enumerate()
        .flat_map(|(n, instance)| instance.frames.iter().map(move |f| (n, f)))
        .collect();
    let (rows, columns) = common_size(series)?;
    let shape = (frames.len(), rows as usize, columns as usize);
    check_voxels(shape)?;
    series.instances.iter().try_for_each(check_plausible)?;
    let names: Vec<String> = frames
        .iter()
        .map(|&(n, f)| frame_name(&series.instances[n], f))
        .collect();
    let placed: Vec<Placed> = frames.iter().map(|(_, f)| placed(f)).collect();
    let ordering = order::order(&placed, &names, hints(series))?;
    let mut hu = Array3::<f32>::zeros(shape);
    decode_all(series, &frames, &ordering.order, &mut hu)?;
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
        warnings: ordering.warnings,
    })
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

/// Hands every output slice to the instance holding it, then decodes instances in parallel.
fn decode_all(
    series: &Series,
    frames: &[FrameOf<'_>],
    order: &[usize],
    hu: &mut Array3<f32>,
) -> Result<()> {
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
        .filter(|(_, targets)| !targets.is_empty())
        .try_for_each(|(instance, targets)| decode::decode_into(instance, targets))
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
