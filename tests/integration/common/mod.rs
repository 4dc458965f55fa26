//! Helpers shared by the ingest integration tests: fixture paths, the binary, `.npy` files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod server;

/// A path inside the repository.
pub fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A fixture under `tests/data/fetched/` (made by `scripts/setup/fetch_fixtures.sh`).
pub fn fixture(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fetched")
        .join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup/fetch_fixtures.sh",
        path.display()
    );
    path
}

/// The `pulmo` binary with a quiet log.
pub fn pulmo() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pulmo"));
    cmd.env_remove("PULMO_LOG").args(["--log", "warn"]);
    cmd
}

/// Runs `command`, which must succeed (its standard error is the failure message), and
/// returns its output.
pub fn succeeds(command: &mut Command) -> std::process::Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The project's Python (pydicom, nibabel, numpy).
pub fn python() -> Command {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3"))
}

/// A fresh scratch folder for one test, removed with everything in it when dropped (at the
/// end of the test, pass or fail), so test runs leave nothing behind in the temp folder.
pub fn scratch(name: &str) -> Scratch {
    let dir = tempfile::Builder::new()
        .prefix(&format!("pulmo-{name}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("scratch folder for {name}: {e}"));
    Scratch(dir)
}

/// A scratch folder; derefs to its path.
pub struct Scratch(tempfile::TempDir);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.path().as_os_str()
    }
}

/// A little-endian `.npy` array of float32 or int16, as (shape, values as f32).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = &bytes[10 + header_len..];
    let values: Vec<f32> = if header.contains("'<f4'") {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else if header.contains("'<i2'") {
        data.chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
            .collect()
    } else {
        panic!("unexpected dtype in {header}")
    };
    assert_eq!(
        values.len(),
        shape.iter().product::<usize>(),
        "{}",
        path.display()
    );
    (shape, values)
}

/// Panics with the first differing voxels unless `ours` equals `reference` within `tolerance`.
pub fn assert_close(what: &str, ours: &[f32], reference: &[f32], tolerance: f32) {
    assert_eq!(ours.len(), reference.len(), "{what}: voxel counts differ");
    let bad: Vec<(usize, f32, f32)> = ours
        .iter()
        .zip(reference)
        .enumerate()
        .filter(|(_, (a, b))| (*a - *b).abs() > tolerance || a.is_nan() != b.is_nan())
        .map(|(n, (a, b))| (n, *a, *b))
        .take(5)
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: voxels differ from pydicom (index, ours, pydicom): {bad:?}"
    );
}
