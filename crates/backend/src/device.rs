//! Where a model runs, as the user names it: `auto`, `cpu`, `cuda` or `cuda:N`; and where
//! volumes are resampled. Resolving a choice against the machine is the backend's work.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

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

/// Where volumes are resampled to the working grid, as the user names it, before the
/// model's device is known.
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

impl FromStr for ResampleChoice {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
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
}
