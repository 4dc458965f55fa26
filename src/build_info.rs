//! What this build is: crate version, git revision, and the libtorch it links against.
//!
//! The values are baked in by `build.rs`; `/info`, reports and `--version` all read them here.

/// The crate version from `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision the binary was built from, or `unknown` outside a checkout.
pub const GIT_REV: &str = env!("PULMO_GIT_REV");

/// The libtorch version found at build time (for example `2.11.0+cu130`).
pub const LIBTORCH_VERSION: &str = env!("PULMO_LIBTORCH_VERSION");

/// The line `pulmo --version` prints after the program name.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("PULMO_GIT_REV"),
    ", libtorch ",
    env!("PULMO_LIBTORCH_VERSION"),
    ")"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line_names_all_three() {
        assert!(VERSION_LINE.starts_with(VERSION));
        assert!(VERSION_LINE.contains(GIT_REV));
        assert!(VERSION_LINE.contains(&format!("libtorch {LIBTORCH_VERSION}")));
    }
}
