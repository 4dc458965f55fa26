//! Pixel decoding in every transfer syntax pulmo reads: `pulmo_dicom::fuzz::decode`.
//!
//! pulmo catches a panic inside dicom-pixeldata's decoders and reports the frame as one
//! that does not decode (`volume::Error::DecoderPanic`). libfuzzer-sys's panic hook would
//! abort on that caught panic too, so the default hook is put back: a panic that pulmo
//! catches is printed and the run goes on, and one that escapes still aborts (libfuzzer-sys
//! aborts on any panic that reaches it).
#![no_main]

use std::sync::Once;

static DEFAULT_HOOK: Once = Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    pulmo_dicom::fuzz::decode(data);
});
