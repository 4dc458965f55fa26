//! Resampling with libtorch tensor ops on the model's device (decision 0006).
//!
//! The pipeline makes the plan (the taps of every axis); this executes it: the volume goes
//! up once, is interpolated along columns, then rows, then slices (`index_select` of the two
//! taps and their weighted sum, the same float operations in the same order as the CPU
//! path, so on the CPU device the result is the same to the last bit), and the working grid
//! comes back. It does not need the module, so it runs on the caller's thread, not the
//! device thread.

use ndarray::{Array3, ArrayView3};
use pulmo_backend::{Resample, Taps};
use tch::{Device, Tensor};

/// Resamples on one libtorch device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorResampler {
    pub device: Device,
}

impl Resample for TensorResampler {
    fn resample(
        &self,
        hu: ArrayView3<f32>,
        shape: [usize; 3],
        taps: &[Taps; 3],
    ) -> pulmo_backend::Result<Array3<f32>> {
        resample_on(self.device, hu, shape, taps)
            .map_err(|err| pulmo_backend::Error::Backend(Box::new(err)))
    }

    fn describe(&self) -> String {
        match self.device {
            Device::Cpu => "cpu (tensor ops)".to_owned(),
            other => crate::device::describe(other),
        }
    }
}

fn resample_on(
    device: Device,
    hu: ArrayView3<f32>,
    out_shape: [usize; 3],
    taps: &[Taps; 3],
) -> Result<Array3<f32>, tch::TchError> {
    let shape: [usize; 3] = hu.dim().into();
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
    let mut volume = Tensor::f_from_slice(values)?
        .f_view(dims)?
        .f_to_device(device)?;
    for axis in [2, 1, 0] {
        let (lo, hi, weight): (Vec<i64>, Vec<i64>, Vec<f32>) = taps[axis]
            .iter()
            .map(|&(lo, hi, w)| (lo as i64, hi as i64, w))
            .collect();
        let mut weight_shape = [1i64; 3];
        weight_shape[axis] = weight.len() as i64;
        let upload = |v: &[i64]| Tensor::f_from_slice(v)?.f_to_device(device);
        let weight = Tensor::f_from_slice(&weight)?
            .f_view(weight_shape)?
            .f_to_device(device)?;
        let first = volume.f_index_select(axis as i64, &upload(&lo)?)?;
        let second = volume.f_index_select(axis as i64, &upload(&hi)?)?;
        // (1 - w) as the CPU path rounds it, then a * (1 - w) + b * w.
        let keep = weight.f_neg()?.f_add_scalar(1.0)?;
        volume = first.f_mul(&keep)?.f_add(&second.f_mul(&weight)?)?;
    }
    let values = Vec::<f32>::try_from(volume.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)?;
    let expected: usize = out_shape.iter().product();
    if values.len() != expected {
        return Err(tch::TchError::Shape(format!(
            "resampled {} values for a {out_shape:?} grid",
            values.len()
        )));
    }
    Ok(Array3::from_shape_vec(out_shape, values).expect("the length was checked"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulmo_core::preprocess::{resample, resample_with};

    #[test]
    fn resampling_with_tensor_ops_gives_the_same_bits() {
        // Not a multiple of anything, up- and downsampled, plus a non-standard layout.
        let hu = Array3::from_shape_fn((13, 17, 11), |(k, j, i)| {
            ((k * 7919 + j * 104729 + i * 1299709) % 2000) as f32 - 1000.0 + 0.37 * i as f32
        });
        let tensors = TensorResampler {
            device: Device::Cpu,
        };
        for (spacing, target) in [
            ([2.5, 0.7, 0.8], [1.25, 1.25, 1.25]),
            ([0.625, 0.55, 0.95], [0.8, 0.8, 0.8]),
            ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),
        ] {
            let cpu = resample(hu.view(), spacing, target);
            let on_device = resample_with(Some(&tensors), hu.view(), spacing, target);
            assert_eq!(on_device.dim(), cpu.dim());
            let same = cpu
                .iter()
                .zip(&on_device)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{spacing:?} -> {target:?}: the two paths differ");
        }
        let reversed = hu.slice(ndarray::s![..;-1, .., ..]);
        assert_eq!(
            resample_with(Some(&tensors), reversed, [2.0, 0.7, 0.7], [1.25; 3]),
            resample(reversed, [2.0, 0.7, 0.7], [1.25; 3])
        );
    }
}
