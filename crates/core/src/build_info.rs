//! What this build of pulmo is: its version and git revision, baked in by `build.rs`.
//!
//! Reports, DICOM results and `pulmo --version` read them here; the runtime's version
//! (libtorch's) comes from the backend, which alone knows it.

/// The workspace version from `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision the build was made from, or `unknown` outside a checkout.
pub const GIT_REV: &str = env!("PULMO_GIT_REV");
