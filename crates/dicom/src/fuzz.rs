//! Entry points for coverage-guided fuzzing (`tests/fuzz`) and for the replay of its corpus
//! in the tests (`tests/integration/fuzz_corpus.rs`).
//!
//! Each takes any bytes and must return: no panic, no abort, no allocation larger than
//! the input justifies, no hang. They call the public paths a received or scanned instance
//! takes, so the fuzzer, the replay and pulmo itself cannot drift apart. Errors are the
//! expected answer to most inputs and are dropped.

use std::io::Cursor;
use std::sync::Arc;

use crate::ingest;
use crate::volume::{self, part10, Series};

/// Part 10 parsing and the element walker on one instance, as admission and decoding
/// meet it: the walk to Pixel Data from element headers alone, the header read up to
/// Pixel Data, the check that the Pixel Data is all there, and the whole instance read.
pub fn part10(data: &[u8]) {
    let _ = part10::pixel_data(Cursor::new(data));
    let _ = part10::open(Cursor::new(data), false);
    if let Ok((_, instance)) = ingest::read_header("fuzz", Arc::from(data)) {
        let _ = volume::check_pixel_data_bytes(data, &instance);
    }
}

/// Pixel decoding of one instance in whatever transfer syntax it names, as
/// [`volume::assemble`] runs it: the header read as a scan reads it, then the size and
/// plausibility checks, the allocation, every frame decoded and the modality LUT applied.
///
/// The frames are placed on a plain grid first, so that an input whose geometry the
/// mutations broke still reaches its pixels (geometry has unit tests of its own).
pub fn decode(data: &[u8]) {
    let Ok((_, mut instance)) = ingest::read_header("fuzz", Arc::from(data)) else {
        return;
    };
    for frame in &mut instance.frames {
        frame.position = Some([0.0, 0.0, f64::from(frame.index)]);
        frame.orientation = Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        frame.pixel_spacing = Some([1.0, 1.0]);
    }
    let series = Series {
        instances: vec![instance],
        ..Series::default()
    };
    let _ = volume::assemble(&series);
}
