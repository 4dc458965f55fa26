//! One DICOM association as an SCU sends it (PDUs, presentation contexts, DIMSE command
//! sets and data sets), answered by pulmo's SCP: `pulmo_dimse::fuzz::association`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pulmo_dimse::fuzz::association(data);
});
