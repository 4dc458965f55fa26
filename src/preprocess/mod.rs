//! Preprocess: from a Hounsfield volume to the tiles the network sees.
//!
//! Resamples to the model's working spacing (trilinear: rayon over slices, or libtorch
//! tensor ops on the model's GPU, see [`Resampling`]), finds the lungs
//! (air inside the body, by threshold and connected components), scales HU to the model's
//! window, and lays out overlapping tiles, keeping only those that touch the lungs.
//! The working grid keeps the source's axes: working index `w` is source index
//! `w * working_spacing / source_spacing` on each axis.

mod lungs;
mod tiles;

pub use lungs::{find_lungs, LungMask};
pub use tiles::{extract_crop, extract_tile, mirror, TileGrid};

use ndarray::{Array3, ArrayView3, Axis};
use rayon::prelude::*;

/// A volume on the model's working grid.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// HU window scaled to [0, 1], `[slice, row, column]`.
    pub image: Array3<f32>,
    /// Lung voxels on the same grid.
    pub lungs: LungMask,
    /// Source index per working index, per axis (`working / source` spacing).
    pub scale: [f64; 3],
    /// The tiles to run, already restricted to the lungs.
    pub grid: TileGrid,
}

/// Options for [`prepare`], from the model manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareOptions {
    pub spacing_mm: [f64; 3],
    pub hu_window: [f32; 2],
    pub patch: [usize; 3],
    pub overlap: f64,
    /// Tiles are kept when a lung voxel lies within this margin of them.
    pub lung_margin_mm: f64,
    /// Where the volume is resampled to the working grid.
    pub resampling: Resampling,
}

/// Resamples, finds the lungs, windows and tiles a volume.
pub fn prepare(hu: ArrayView3<f32>, spacing: [f64; 3], options: &PrepareOptions) -> Prepared {
    let working = resample_with(options.resampling, hu, spacing, options.spacing_mm);
    let lungs = find_lungs(working.view(), options.spacing_mm);
    let margin = options
        .spacing_mm
        .map(|s| (options.lung_margin_mm / s).ceil() as usize);
    let grid = lung_tiles(
        working.dim().into(),
        &lungs,
        options.patch,
        options.overlap,
        margin,
    );
    let image = window(working, options.hu_window);
    let scale = std::array::from_fn(|a| options.spacing_mm[a] / spacing[a]);
    Prepared {
        image,
        lungs,
        scale,
        grid,
    }
}

/// The tiles to run: a grid laid over the lungs' bounding box plus `margin` (voxels), not
/// over the whole volume, keeping the tiles with lung within `margin` of them. A grid
/// anchored at the volume's corner needs about one more tile per axis for the same lungs
/// (108 tiles against 40 on a 512 x 512 chest phantom).
pub fn lung_tiles(
    shape: [usize; 3],
    lungs: &LungMask,
    patch: [usize; 3],
    overlap: f64,
    margin: [usize; 3],
) -> TileGrid {
    let grid = match lungs.bounds {
        Some([lo, hi]) => {
            let lo = std::array::from_fn(|a| lo[a].saturating_sub(margin[a]));
            let hi = std::array::from_fn(|a| hi[a] + 1 + margin[a]);
            TileGrid::over(shape, patch, overlap, lo, hi)
        }
        None => TileGrid::new(shape, patch, overlap),
    };
    grid.touching(&lungs.counter, margin)
}

/// Where [`prepare`] resamples the volume to the working grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resampling {
    /// On the CPU, rayon over slices.
    #[default]
    Cpu,
    /// With libtorch tensor ops on this device (the model's GPU), falling back to the CPU
    /// if the device fails (for example out of memory).
    Device(tch::Device),
}

/// Where resampling should run, as the user names it, before the model's device is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResampleChoice {
    /// On the model's device when that is a GPU, else on the CPU.
    #[default]
    Auto,
    /// On the CPU, always.
    Cpu,
    /// On the model's device, whichever it is (on the CPU this checks the tensor path).
    Device,
}

impl ResampleChoice {
    /// Where to resample for a model on `model_device`.
    pub fn resolve(self, model_device: tch::Device) -> Resampling {
        match self {
            ResampleChoice::Auto if model_device.is_cuda() => Resampling::Device(model_device),
            ResampleChoice::Auto | ResampleChoice::Cpu => Resampling::Cpu,
            ResampleChoice::Device => Resampling::Device(model_device),
        }
    }
}

impl std::str::FromStr for ResampleChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(ResampleChoice::Auto),
            "cpu" => Ok(ResampleChoice::Cpu),
            "device" => Ok(ResampleChoice::Device),
            _ => Err(format!(
                "unknown resampling place {text:?}: expected auto, cpu or device"
            )),
        }
    }
}

impl Resampling {
    /// `cpu`, or the device as libtorch names it (`cuda:0`).
    pub fn describe(self) -> String {
        match self {
            Resampling::Cpu => "cpu".to_owned(),
            Resampling::Device(tch::Device::Cpu) => "cpu (tensor ops)".to_owned(),
            Resampling::Device(tch::Device::Cuda(n)) => format!("cuda:{n}"),
            Resampling::Device(other) => format!("{other:?}"),
        }
    }
}

/// For each working index along one axis: the two source indices around it and the
/// weight of the second.
type Taps = Vec<(usize, usize, f32)>;

/// The working grid's shape and, per axis, the interpolation taps: one plan for both
/// resampling paths, so they sample exactly the same points.
fn resample_plan(
    shape: [usize; 3],
    spacing: [f64; 3],
    target: [f64; 3],
) -> ([usize; 3], [Taps; 3]) {
    let out_shape: [usize; 3] = std::array::from_fn(|a| {
        let extent = (shape[a].saturating_sub(1)) as f64 * spacing[a];
        (extent / target[a]).floor() as usize + 1
    });
    let taps = std::array::from_fn(|a| {
        (0..out_shape[a])
            .map(|n| {
                let x = (n as f64 * target[a] / spacing[a]).min((shape[a] - 1) as f64);
                let lo = x.floor() as usize;
                (lo, (lo + 1).min(shape[a] - 1), (x - lo as f64) as f32)
            })
            .collect()
    });
    (out_shape, taps)
}

/// Trilinear resampling from `spacing` to `target` (both `[slice, row, column]`, mm).
pub fn resample(hu: ArrayView3<f32>, spacing: [f64; 3], target: [f64; 3]) -> Array3<f32> {
    let (out_shape, [zk, zj, zi]) = resample_plan(hu.dim().into(), spacing, target);
    let mut out = Array3::<f32>::zeros(out_shape);
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(&zk)
        .for_each(|(mut slice, &(k0, k1, fk))| {
            let (a, b) = (hu.index_axis(Axis(0), k0), hu.index_axis(Axis(0), k1));
            for (j, &(j0, j1, fj)) in zj.iter().enumerate() {
                for (i, &(i0, i1, fi)) in zi.iter().enumerate() {
                    let bilinear = |p: &ndarray::ArrayView2<f32>| {
                        let top = p[(j0, i0)] * (1.0 - fi) + p[(j0, i1)] * fi;
                        let bottom = p[(j1, i0)] * (1.0 - fi) + p[(j1, i1)] * fi;
                        top * (1.0 - fj) + bottom * fj
                    };
                    slice[(j, i)] = bilinear(&a) * (1.0 - fk) + bilinear(&b) * fk;
                }
            }
        });
    out
}

/// [`resample`] with libtorch tensor ops on `device`: the volume goes up once, is
/// interpolated along columns, then rows, then slices (`index_select` of the two taps and
/// their weighted sum, the same float operations in the same order as [`resample`], so the
/// result is the same to the last bit on the CPU), and the working grid comes back.
pub fn resample_on(
    device: tch::Device,
    hu: ArrayView3<f32>,
    spacing: [f64; 3],
    target: [f64; 3],
) -> Result<Array3<f32>, tch::TchError> {
    let shape: [usize; 3] = hu.dim().into();
    let (out_shape, taps) = resample_plan(shape, spacing, target);
    let standard;
    let values = match hu.as_slice() {
        Some(values) => values,
        None => {
            standard = hu.as_standard_layout();
            standard
                .as_slice()
                .expect("a standard-layout array is contiguous")
        }
    };
    let dims = shape.map(|n| n as i64);
    let mut volume = tch::Tensor::f_from_slice(values)?
        .f_view(dims)?
        .f_to_device(device)?;
    for axis in [2, 1, 0] {
        let (lo, hi, weight): (Vec<i64>, Vec<i64>, Vec<f32>) = taps[axis]
            .iter()
            .map(|&(lo, hi, w)| (lo as i64, hi as i64, w))
            .collect();
        let mut weight_shape = [1i64; 3];
        weight_shape[axis] = weight.len() as i64;
        let upload = |v: &[i64]| tch::Tensor::f_from_slice(v)?.f_to_device(device);
        let weight = tch::Tensor::f_from_slice(&weight)?
            .f_view(weight_shape)?
            .f_to_device(device)?;
        let first = volume.f_index_select(axis as i64, &upload(&lo)?)?;
        let second = volume.f_index_select(axis as i64, &upload(&hi)?)?;
        // (1 - w) as `resample` rounds it, then a * (1 - w) + b * w.
        let keep = weight.f_neg()?.f_add_scalar(1.0)?;
        volume = first.f_mul(&keep)?.f_add(&second.f_mul(&weight)?)?;
    }
    let values = Vec::<f32>::try_from(volume.f_to_device(tch::Device::Cpu)?.f_flatten(0, -1)?)?;
    Ok(Array3::from_shape_vec(out_shape, values).expect("the plan's shape holds every value"))
}

/// Resamples where `resampling` says, falling back to the CPU (with a warning) if the
/// device fails.
pub fn resample_with(
    resampling: Resampling,
    hu: ArrayView3<f32>,
    spacing: [f64; 3],
    target: [f64; 3],
) -> Array3<f32> {
    match resampling {
        Resampling::Cpu => resample(hu, spacing, target),
        Resampling::Device(device) => {
            resample_on(device, hu, spacing, target).unwrap_or_else(|err| {
                tracing::warn!(error = %err, "resampling on the device failed; resampling on the CPU");
                resample(hu, spacing, target)
            })
        }
    }
}

/// Clips HU to `[lo, hi]` and scales linearly to [0, 1], in place.
pub fn window(mut hu: Array3<f32>, [lo, hi]: [f32; 2]) -> Array3<f32> {
    let scale = 1.0 / (hi - lo);
    hu.par_mapv_inplace(|v| (v.clamp(lo, hi) - lo) * scale);
    hu
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn resampling_a_linear_ramp_is_exact() {
        let ramp = Array3::from_shape_fn((5, 6, 7), |(k, j, i)| {
            (k as f32) * 2.5 + (j as f32) * 0.7 + (i as f32) * 0.8
        });
        let out = resample(ramp.view(), [2.5, 0.7, 0.8], [1.0, 1.0, 1.0]);
        assert_eq!(out.dim(), (11, 4, 5));
        for ((k, j, i), v) in out.indexed_iter() {
            let want = (k + j + i) as f32;
            assert!((v - want).abs() < 1e-4, "[{k},{j},{i}] {v} != {want}");
        }
    }

    #[test]
    fn same_spacing_returns_the_input() {
        let input = Array3::from_shape_fn((3, 4, 5), |(k, j, i)| (k * 100 + j * 10 + i) as f32);
        assert_eq!(resample(input.view(), [1.0; 3], [1.0; 3]), input);
    }

    #[test]
    fn resampling_with_tensor_ops_gives_the_same_bits() {
        // Not a multiple of anything, up- and downsampled, plus a non-standard layout.
        let hu = Array3::from_shape_fn((13, 17, 11), |(k, j, i)| {
            ((k * 7919 + j * 104729 + i * 1299709) % 2000) as f32 - 1000.0 + 0.37 * i as f32
        });
        for (spacing, target) in [
            ([2.5, 0.7, 0.8], [1.25, 1.25, 1.25]),
            ([0.625, 0.55, 0.95], [0.8, 0.8, 0.8]),
            ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),
        ] {
            let cpu = resample(hu.view(), spacing, target);
            let tensors = resample_on(tch::Device::Cpu, hu.view(), spacing, target).unwrap();
            assert_eq!(tensors.dim(), cpu.dim());
            let same = cpu
                .iter()
                .zip(&tensors)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{spacing:?} -> {target:?}: the two paths differ");
        }
        let reversed = hu.slice(ndarray::s![..;-1, .., ..]);
        assert_eq!(
            resample_on(tch::Device::Cpu, reversed, [2.0, 0.7, 0.7], [1.25; 3]).unwrap(),
            resample(reversed, [2.0, 0.7, 0.7], [1.25; 3])
        );
    }

    #[test]
    fn auto_resamples_on_a_gpu_only() {
        use tch::Device;
        assert_eq!(ResampleChoice::Auto.resolve(Device::Cpu), Resampling::Cpu);
        assert_eq!(
            ResampleChoice::Auto.resolve(Device::Cuda(1)),
            Resampling::Device(Device::Cuda(1))
        );
        assert_eq!(
            ResampleChoice::Cpu.resolve(Device::Cuda(0)),
            Resampling::Cpu
        );
        assert_eq!(
            ResampleChoice::Device.resolve(Device::Cpu),
            Resampling::Device(Device::Cpu)
        );
        assert_eq!("Device".parse(), Ok(ResampleChoice::Device));
        assert!("gpu"
            .parse::<ResampleChoice>()
            .unwrap_err()
            .contains("auto, cpu or device"));
    }

    #[test]
    fn window_clips_and_scales() {
        let hu = Array3::from_shape_vec((1, 1, 4), vec![-2000.0, -1000.0, -300.0, 3000.0]).unwrap();
        let out = window(hu, [-1000.0, 400.0]);
        assert_eq!(out.as_slice().unwrap(), &[0.0, 0.0, 0.5, 1.0]);
    }
}
