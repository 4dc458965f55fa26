//! A STOW-RS request's content type and multipart body: `pulmo_dicomweb::fuzz::stow`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pulmo_dicomweb::fuzz::stow(data));
