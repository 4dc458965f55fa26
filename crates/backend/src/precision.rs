//! The network's number format: float32, or a 16-bit format where the hardware has fast
//! kernels for it and the model's manifest says the model keeps its results in it.
//!
//! `auto` picks float16 on CUDA when the manifest allows it (`half_on_cuda`), bfloat16 on a
//! CPU that computes it natively (AMX or AVX-512 BF16) when the manifest allows it
//! (`bfloat16_on_cpu`), and float32 everywhere else. A CPU without native bfloat16 only
//! emulates it, slower than float32, so `auto` never picks it there.

use std::fmt;
use std::str::FromStr;

use crate::manifest::PrecisionSpec;
use crate::{Error, Result};

/// The precision as the user names it, before it is checked against device and model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrecisionChoice {
    /// The fastest format the device computes natively and the manifest allows.
    #[default]
    Auto,
    /// This format, whatever the manifest says.
    Exactly(Precision),
}

/// The number format the network runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Float32,
    BFloat16,
    Float16,
}

impl Precision {
    /// The name reports and logs use.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Float32 => "float32",
            Precision::BFloat16 => "bfloat16",
            Precision::Float16 => "float16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PrecisionChoice {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let exactly = |p| Ok(PrecisionChoice::Exactly(p));
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(PrecisionChoice::Auto),
            "float32" | "fp32" => exactly(Precision::Float32),
            "bfloat16" | "bf16" => exactly(Precision::BFloat16),
            "float16" | "fp16" | "half" => exactly(Precision::Float16),
            _ => Err(Error::UnknownPrecision(text.to_owned())),
        }
    }
}

impl fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrecisionChoice::Auto => f.write_str("auto"),
            PrecisionChoice::Exactly(p) => p.fmt(f),
        }
    }
}

/// What the hardware running the network can do, as far as the choice depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardware {
    /// The network runs on a CUDA device.
    pub cuda: bool,
    /// The CPU computes bfloat16 natively (AMX-BF16 or AVX-512 BF16).
    pub cpu_bf16: bool,
}

/// Whether this CPU has bfloat16 dot-product instructions that libtorch's oneDNN kernels use.
pub fn cpu_has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Every CPU with AMX-BF16 also has AVX-512 BF16 (and AMX detection is not stable
        // Rust yet), so the one flag covers both.
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Resolves `choice` for a model with `spec` on `hardware`.
///
/// An explicit choice wins over the manifest (the user takes responsibility for a model not
/// validated in that format), but float16 needs CUDA: libtorch has no fast float16
/// convolutions on the CPU.
pub fn resolve(
    choice: PrecisionChoice,
    spec: &PrecisionSpec,
    hardware: Hardware,
) -> Result<Precision> {
    match choice {
        PrecisionChoice::Exactly(Precision::Float16) if !hardware.cuda => {
            Err(Error::PrecisionUnavailable {
                precision: Precision::Float16,
                reason: "float16 runs on CUDA only; on the CPU use bfloat16 or float32",
            })
        }
        PrecisionChoice::Exactly(precision) => Ok(precision),
        PrecisionChoice::Auto if hardware.cuda && spec.half_on_cuda => Ok(Precision::Float16),
        PrecisionChoice::Auto if !hardware.cuda && hardware.cpu_bf16 && spec.bfloat16_on_cpu => {
            Ok(Precision::BFloat16)
        }
        PrecisionChoice::Auto => Ok(Precision::Float32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: Hardware = Hardware {
        cuda: false,
        cpu_bf16: false,
    };
    const CPU_BF16: Hardware = Hardware {
        cuda: false,
        cpu_bf16: true,
    };
    const GPU: Hardware = Hardware {
        cuda: true,
        cpu_bf16: true,
    };

    fn spec(half_on_cuda: bool, bfloat16_on_cpu: bool) -> PrecisionSpec {
        PrecisionSpec {
            half_on_cuda,
            bfloat16_on_cpu,
        }
    }

    #[test]
    fn auto_picks_a_16_bit_format_only_where_the_manifest_and_the_hardware_allow() {
        let auto = PrecisionChoice::Auto;
        let both = spec(true, true);
        assert_eq!(resolve(auto, &both, GPU).unwrap(), Precision::Float16);
        assert_eq!(resolve(auto, &both, CPU_BF16).unwrap(), Precision::BFloat16);
        // Emulated bfloat16 is slower than float32.
        assert_eq!(resolve(auto, &both, CPU).unwrap(), Precision::Float32);
        let neither = spec(false, false);
        for hardware in [GPU, CPU_BF16, CPU] {
            assert_eq!(
                resolve(auto, &neither, hardware).unwrap(),
                Precision::Float32
            );
        }
        assert_eq!(
            resolve(auto, &spec(false, true), GPU).unwrap(),
            Precision::Float32
        );
        assert_eq!(
            resolve(auto, &spec(true, false), CPU_BF16).unwrap(),
            Precision::Float32
        );
    }

    #[test]
    fn an_explicit_choice_wins_except_float16_on_the_cpu() {
        let neither = spec(false, false);
        let bf16: PrecisionChoice = "bf16".parse().unwrap();
        assert_eq!(resolve(bf16, &neither, CPU).unwrap(), Precision::BFloat16);
        let fp32: PrecisionChoice = "float32".parse().unwrap();
        assert_eq!(
            resolve(fp32, &spec(true, true), GPU).unwrap(),
            Precision::Float32
        );
        let fp16: PrecisionChoice = "float16".parse().unwrap();
        assert_eq!(resolve(fp16, &neither, GPU).unwrap(), Precision::Float16);
        let err = resolve(fp16, &spec(true, true), CPU_BF16).unwrap_err();
        assert!(err.to_string().contains("CUDA only"), "{err}");
    }

    #[test]
    fn names_parse_and_print() {
        for text in ["auto", "float32", "bfloat16", "float16"] {
            let choice: PrecisionChoice = text.parse().unwrap();
            assert_eq!(choice.to_string(), text);
        }
        assert_eq!(
            "FP16".parse::<PrecisionChoice>().unwrap().to_string(),
            "float16"
        );
        let err = "int8".parse::<PrecisionChoice>().unwrap_err();
        assert!(err.to_string().contains("\"int8\""), "{err}");
    }
}
