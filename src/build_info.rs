//! What this build is: crate version, git revision, and the libtorch it links against.
//!
//! The version and revision come from `pulmo-core` (reports carry them), the libtorch
//! version from `pulmo-inference`; `/info`, reports and `--version` all read them.

use std::sync::LazyLock;

pub use pulmo_core::build_info::{GIT_REV, VERSION};
pub use pulmo_inference::LIBTORCH_VERSION;

/// The line `pulmo --version` prints after the program name.
pub static VERSION_LINE: LazyLock<String> =
    LazyLock::new(|| format!("{VERSION} (git {GIT_REV}, libtorch {LIBTORCH_VERSION})"));

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
