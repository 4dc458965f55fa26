//! Finds the libtorch that torch-sys linked, for three things: an rpath in this crate's
//! own test binaries, `PULMO_LIBTORCH_VERSION` for reports, and two facts handed to the
//! crates that depend on this one (`links = "pulmo-libtorch"`): `DEP_PULMO_LIBTORCH_LIB_DIR`
//! (the real `torch/lib`) and `DEP_PULMO_LIBTORCH_CUDA` (whether `libtorch_cuda` must stay
//! linked), so the binary's build script can add the same link arguments.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report its libtorch directory");
        println!("cargo:rustc-env=PULMO_LIBTORCH_VERSION=unknown");
        return;
    };
    // The wheel's own libraries find the CUDA runtime through `$ORIGIN/../../nvidia/...`,
    // which only resolves from the real site-packages directory, not through a link.
    let lib: PathBuf = Path::new(&dir)
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(&dir));
    let cuda = lib.join("libtorch_cuda.so").exists() && lib.join("../../nvidia/cudnn").exists();
    println!("cargo:lib_dir={}", lib.display());
    println!("cargo:cuda={}", u8::from(cuda));
    for arg in link_args(&lib, cuda) {
        println!("cargo:rustc-link-arg={arg}");
    }
    let version = std::fs::read_to_string(lib.join("../version.py"))
        .ok()
        .and_then(|text| parse_torch_version(&text))
        .or_else(|| std::fs::read_to_string(lib.join("../build-version")).ok())
        .unwrap_or_else(|| "unknown".to_owned());
    let version = version.trim();
    println!("cargo:rustc-env=PULMO_LIBTORCH_VERSION={version}");
    if !version.starts_with("2.11.0") {
        println!("cargo:warning=tch 0.24 expects libtorch 2.11.0, found {version}");
    }
}

/// An rpath to the real `torch/lib`; and, where CUDA's libraries are present,
/// `libtorch_cuda` kept linked: rustc links with `--as-needed`, which drops it because
/// nothing calls it directly, and CUDA would then never register.
fn link_args(lib: &Path, cuda: bool) -> Vec<String> {
    let mut args = vec![format!("-Wl,-rpath,{}", lib.display())];
    if cuda {
        args.push("-Wl,--no-as-needed,-ltorch_cuda,--as-needed".to_owned());
    }
    args
}

/// Reads `__version__ = '2.11.0+cu130'` from torch's `version.py`.
fn parse_torch_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    let value = line.split_once('=')?.1.trim();
    Some(value.trim_matches(|c| c == '\'' || c == '"').to_owned())
}
