//! The number format on libtorch: its element type, and what this machine's hardware does
//! fast (the choice itself is made by `pulmo_backend::precision::resolve`).

use pulmo_backend::{precision::cpu_has_native_bf16, Hardware, Precision};

/// The libtorch element type of `precision`.
pub fn kind(precision: Precision) -> tch::Kind {
    match precision {
        Precision::Float32 => tch::Kind::Float,
        Precision::BFloat16 => tch::Kind::BFloat16,
        Precision::Float16 => tch::Kind::Half,
    }
}

/// What the hardware behind `device` on this machine computes natively.
pub fn hardware(device: tch::Device) -> Hardware {
    Hardware {
        cuda: device.is_cuda(),
        cpu_bf16: cpu_has_native_bf16(),
    }
}
