//! Which device a model runs on: `auto`, `cpu`, `cuda` or `cuda:N`.

use std::fmt;
use std::str::FromStr;

use super::{Error, Result};

/// A device as the user names it, before checking that it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA device when there is one, else the CPU.
    #[default]
    Auto,
    /// The CPU, always available.
    Cpu,
    /// CUDA device N; an error if it does not exist.
    Cuda(usize),
}

impl DeviceChoice {
    /// Resolves the choice against this machine.
    pub fn resolve(self) -> Result<tch::Device> {
        match self {
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
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let unknown = || Error::UnknownDevice(text.to_owned());
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => {
                let index = other.strip_prefix("cuda:").ok_or_else(unknown)?;
                index.parse().map(DeviceChoice::Cuda).map_err(|_| unknown())
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(index) => write!(f, "cuda:{index}"),
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
    fn parses_every_spelling() {
        for (text, want) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap(), want, "{text}");
            assert_eq!(want.to_string().parse::<DeviceChoice>().unwrap(), want);
        }
    }

    #[test]
    fn rejects_nonsense_with_the_text() {
        for text in ["", "tpu", "cuda:", "cuda:-1", "cuda:x"] {
            let err = text.parse::<DeviceChoice>().unwrap_err();
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn cpu_always_resolves_and_missing_cuda_is_an_error() {
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), tch::Device::Cpu);
        let available = if tch::Cuda::is_available() {
            tch::Cuda::device_count()
        } else {
            0
        };
        let missing = DeviceChoice::Cuda(usize::try_from(available).unwrap());
        assert!(matches!(
            missing.resolve(),
            Err(Error::CudaUnavailable { .. })
        ));
    }
}
