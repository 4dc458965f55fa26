//! Part 10 parsing and the element walker: `pulmo_dicom::fuzz::part10`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pulmo_dicom::fuzz::part10(data));
