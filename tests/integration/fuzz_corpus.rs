//! The fuzz corpus replayed (tests/fuzz/README.md): every input the fuzzers kept, fed to
//! the same entry point its target calls, must return without a panic. Seconds, where the
//! fuzzing that found them took hours; an empty or missing corpus fails.

use std::panic::{catch_unwind, RefUnwindSafe};
use std::path::Path;

/// Feeds every file of `tests/fuzz/corpus/{target}` to `run`; fails naming every input
/// that panicked.
fn replay(target: &str, run: impl Fn(&[u8]) + RefUnwindSafe) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("no corpus at {}: {err}", dir.display()));
    let mut inputs = 0;
    let mut panicked = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        inputs += 1;
        if catch_unwind(|| run(&data)).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(inputs > 0, "the corpus at {} is empty", dir.display());
    assert!(panicked.is_empty(), "these inputs panicked: {panicked:#?}");
}

#[test]
fn the_part10_corpus_replays() {
    replay("part10", pulmo_dicom::fuzz::part10);
}

#[test]
fn the_decode_corpus_replays() {
    replay("decode", pulmo_dicom::fuzz::decode);
}

#[test]
fn the_stow_corpus_replays() {
    replay("stow", pulmo_dicomweb::fuzz::stow);
}

#[test]
fn the_dimse_corpus_replays() {
    replay("dimse", |data| {
        pulmo_dimse::fuzz::association(data);
    });
}
