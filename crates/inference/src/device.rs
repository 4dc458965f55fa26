//! Resolving a device choice against this machine, and naming devices as reports do.

use pulmo_backend::DeviceChoice;

use crate::{Error, Result};

/// Resolves `choice` against this machine.
pub fn resolve(choice: DeviceChoice) -> Result<tch::Device> {
    match choice {
        DeviceChoice::Auto => Ok(tch::Device::cuda_if_available()),
        DeviceChoice::Cpu => Ok(tch::Device::Cpu),
        DeviceChoice::Cuda(index) => {
            let available = if tch::Cuda::is_available() {
                usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
            } else {
                0
            };
            if index < available {
                Ok(tch::Device::Cuda(index))
            } else {
                Err(Error::CudaUnavailable { index, available })
            }
        }
    }
}

/// Names a resolved device the way reports and logs show it (`cpu`, `cuda:0`).
pub fn describe(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(index) => format!("cuda:{index}"),
        tch::Device::Mps => "mps".to_owned(),
        tch::Device::Vulkan => "vulkan".to_owned(),
        _ => "cpu".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_always_resolves_and_missing_cuda_is_an_error() {
        assert_eq!(resolve(DeviceChoice::Cpu).unwrap(), tch::Device::Cpu);
        let available = if tch::Cuda::is_available() {
            tch::Cuda::device_count()
        } else {
            0
        };
        let missing = DeviceChoice::Cuda(usize::try_from(available).unwrap());
        assert!(matches!(
            resolve(missing),
            Err(Error::CudaUnavailable { .. })
        ));
    }
}
