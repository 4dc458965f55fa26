//! Model bundles for tests, here and in the crates that implement or use a backend.

use std::path::{Path, PathBuf};

/// The smoke model (`models/smoke/model.pt`): one 3x3x3 box filter and a sigmoid.
pub fn smoke_weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/smoke/model.pt")
}

/// A complete manifest in the real format; `SHA` stands for the weights' sha256.
pub const EXAMPLE: &str = r#"
id = "test-model"
version = "1.0.0"
file = "model.pt"
sha256 = "SHA"
[input]
spacing_mm = [1.5, 1.5, 1.5]
patch = [32, 32, 32]
overlap = 0.25
hu_window = [-1000.0, 400.0]
divisible_by = 8
[output]
kind = "logits"
channels = 1
[thresholds]
probability = 0.5
min_score = 0.1
min_diameter_mm = 3.0
[precision]
half_on_cuda = true
bfloat16_on_cpu = true
"#;

/// Writes a bundle around the smoke model into `dir` with `manifest` (its `SHA` replaced by
/// the weights' sha256), and returns `dir`.
pub fn write_bundle(dir: &Path, manifest: &str) -> PathBuf {
    let weights = smoke_weights();
    std::fs::copy(&weights, dir.join("model.pt")).expect("the smoke model is in the repository");
    let sha = crate::manifest::sha256_file(&weights).expect("the smoke model is readable");
    std::fs::write(dir.join("manifest.toml"), manifest.replace("SHA", &sha))
        .expect("the test folder is writable");
    dir.to_owned()
}

/// [`write_bundle`] into a fresh temporary folder, removed when the handle drops.
#[cfg(test)]
pub(crate) fn bundle_dir(name: &str, manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("pulmo-{name}-"))
        .tempdir()
        .unwrap();
    write_bundle(dir.path(), manifest);
    dir
}
