//! Build-time facts for `pulmo --version`, and the link flags that let every binary
//! (main, tests, benches) find libtorch without `LD_LIBRARY_PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    git_revision();
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => libtorch(Path::new(&dir)),
        Err(_) => println!("cargo:warning=torch-sys did not report its libtorch directory"),
    }
}

/// Bakes the git revision into `PULMO_GIT_REV` ("unknown" outside a checkout).
fn git_revision() {
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PULMO_GIT_REV={rev}");
    for path in [".git/HEAD", ".git/refs/heads"] {
        if Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// Adds an rpath to the real `torch/lib`, keeps `libtorch_cuda` linked, and records the
/// libtorch version.
fn libtorch(lib: &Path) {
    // The wheel's own libraries find the CUDA runtime through `$ORIGIN/../../nvidia/...`,
    // which only resolves from the real site-packages directory, not through a link.
    let lib: PathBuf = lib.canonicalize().unwrap_or_else(|_| lib.to_path_buf());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());

    // rustc links with --as-needed, which drops libtorch_cuda.so because nothing calls it
    // directly; CUDA would then never register. Keep it when its dependencies are present.
    let nvidia = lib.join("../../nvidia");
    if lib.join("libtorch_cuda.so").exists() && nvidia.join("cudnn").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
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

/// Reads `__version__ = '2.11.0+cu130'` from torch's `version.py`.
fn parse_torch_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    let value = line.split_once('=')?.1.trim();
    Some(value.trim_matches(|c| c == '\'' || c == '"').to_owned())
}
