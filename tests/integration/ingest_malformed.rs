//! Bad input gets a typed error that names the file, a non-zero exit, and never a panic.

use std::sync::Arc;

use crate::common::{fixture, pulmo};
use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use proptest::prelude::*;
use pulmo::{ingest, volume};
use rstest::rstest;

/// Runs `pulmo convert` on `input` and returns its standard error; it must fail cleanly.
fn convert_fails(input: &std::path::Path, extra: &[&str]) -> String {
    let out = std::env::temp_dir().join(format!("pulmo-malformed-{}.npy", std::process::id()));
    let run = pulmo()
        .arg("convert")
        .arg(input)
        .args(extra)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// What `pulmo convert` does, through the library: the error and its causes on one line.
fn convert_error(input: &std::path::Path) -> String {
    let report = ingest::scan(&[input]).unwrap();
    let any_series = report
        .series()
        .next()
        .map(|s| s.series_instance_uid.clone());
    let rules = ingest::SelectionRules::default();
    let outcome = ingest::choose(&report, &rules, any_series.as_deref())
        .map_err(anyhow::Error::from)
        .and_then(|series| Ok(volume::assemble(series)?));
    format!("{:#}", outcome.expect_err("bad input must fail"))
}

#[rstest]
#[case::not_dicom("malformed/notes.txt", "could not read a DICOM header from")]
#[case::no_file_meta("malformed/no_meta.dcm", "could not read a DICOM header from")]
#[case::truncated_header(
    "malformed/CT_small_truncated_header.dcm",
    "could not read a DICOM header from"
)]
#[case::truncated_pixel_data(
    "malformed/CT_small_truncated_pixels.dcm",
    "claims 32768 bytes of pixels"
)]
#[case::truncated_inside_pixel_data("malformed/MR_truncated.dcm", "could not read")]
#[case::no_pixel_data("malformed/rtplan.dcm", "has no pixel data")]
fn bad_files_fail_with_an_error_naming_the_file(#[case] file: &str, #[case] problem: &str) {
    let path = fixture(file);
    let message = convert_error(&path);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(message.contains(name), "{message}");
    assert!(message.contains(problem), "{message}");
}

/// A value length corrupted to 4 GiB in a 39 KB file is refused by name before anything
/// reserves it (dicom-parser would zero-fill 4 GiB first): in the file meta group, in Pixel
/// Data (when decoding; the header scan stops before it), and in a bare data set's first
/// element.
#[rstest]
#[case::meta_group("single/CT_small.dcm", b"OB\0\0", 4)]
#[case::pixel_data("single/CT_small.dcm", b"\xe0\x7f\x10\x00OW\0\0", 8)]
#[case::bare_data_set("single/CT_small_bare_implicit.dcm", b"\x08\x00\x05\x00", 4)]
fn a_length_beyond_the_file_is_refused_naming_the_element(
    #[case] file: &str,
    #[case] header: &[u8],
    #[case] length_at: usize,
) {
    let mut bytes = std::fs::read(fixture(file)).unwrap();
    let at = bytes
        .windows(header.len())
        .position(|w| w == header)
        .unwrap()
        + length_at;
    bytes[at..at + 4].copy_from_slice(&0xF000_0000u32.to_le_bytes());
    let dir = crate::common::scratch("corrupt-length");
    let input = dir.join("corrupt.dcm");
    std::fs::write(&input, &bytes).unwrap();
    let stderr = convert_fails(&input, &[]);
    assert!(stderr.contains("corrupt.dcm"), "{stderr}");
    assert!(
        stderr.contains("claims 4026531840 bytes, but only"),
        "{stderr}"
    );
}

#[rstest]
#[case::not_dicom("malformed/notes.txt")]
#[case::no_file_meta("malformed/no_meta.dcm")]
#[case::truncated_header("malformed/CT_small_truncated_header.dcm")]
#[case::truncated_pixel_data("malformed/CT_small_truncated_pixels.dcm")]
fn the_cli_exits_1_naming_the_bad_file(#[case] file: &str) {
    let path = fixture(file);
    let stderr = convert_fails(&path, &[]);
    assert!(stderr.starts_with("pulmo: error: "), "{stderr}");
    assert!(
        stderr.contains(path.file_name().unwrap().to_str().unwrap()),
        "{stderr}"
    );
}

/// Readable files that are not CT images: refused before decoding, with the reason.
#[rstest]
#[case::truncated_mr("malformed/MR_truncated.dcm", "modality \"MR\" is not accepted")]
#[case::rt_plan("malformed/rtplan.dcm", "modality \"RTPLAN\" is not accepted")]
fn the_cli_exits_1_saying_why_a_file_is_not_a_ct_image(#[case] file: &str, #[case] why: &str) {
    let stderr = convert_fails(&fixture(file), &[]);
    assert!(stderr.contains("no series to convert"), "{stderr}");
    assert!(stderr.contains(why), "{stderr}");
}

#[test]
fn a_folder_without_ct_lists_every_series_and_file_passed_over() {
    let dir = crate::common::scratch("no-ct");
    for file in ["notes.txt", "rtplan.dcm", "test-SR.dcm"] {
        std::fs::copy(fixture(&format!("malformed/{file}")), dir.join(file)).unwrap();
    }
    let stderr = convert_fails(&dir, &[]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(stderr.contains("no series to convert"), "{stderr}");
    assert!(
        stderr.contains("modality \"RTPLAN\" is not accepted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("modality \"SR\" is not accepted"),
        "{stderr}"
    );
    assert!(stderr.contains("notes.txt"), "{stderr}");
}

/// CT_small with some header attributes replaced, as in-memory bytes.
fn ct_small_with(elements: &[(dicom_core::Tag, VR, PrimitiveValue)]) -> Arc<[u8]> {
    let mut obj = dicom_object::open_file(fixture("single/CT_small.dcm")).unwrap();
    for (tag, vr, value) in elements {
        obj.put(DataElement::new(*tag, *vr, value.clone()));
    }
    let mut bytes = Vec::new();
    obj.write_all(&mut bytes).unwrap();
    bytes.into()
}

#[test]
fn a_series_of_mixed_image_sizes_is_an_error_naming_the_odd_file() {
    let original = ct_small_with(&[]);
    let smaller = ct_small_with(&[
        (tags::ROWS, VR::US, PrimitiveValue::from(64u16)),
        (tags::COLUMNS, VR::US, PrimitiveValue::from(64u16)),
        (
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.826.0.1.3680043.10.99.1"),
        ),
        (
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            PrimitiveValue::Strs(
                ["-158.135803", "-179.035797", "-70.0"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
            ),
        ),
    ]);
    let report = ingest::scan_bytes(vec![
        ("a.dcm".into(), original),
        ("b-small.dcm".into(), smaller),
    ]);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let series = report.series().next().unwrap();
    assert_eq!(series.instances.len(), 2);
    let err = volume::assemble(series).unwrap_err().to_string();
    assert!(
        err.contains("b-small.dcm is (64, 64) (rows, columns) where the series is (128, 128)"),
        "{err}"
    );
}

/// CT_small with a Modality LUT Sequence of one item: descriptor (entries, first, bits).
fn ct_small_with_modality_lut(descriptor: [u16; 3], data: &[u16]) -> Arc<[u8]> {
    let item = dicom_object::InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::LUT_DESCRIPTOR,
            VR::US,
            PrimitiveValue::U16(descriptor.to_vec().into()),
        ),
        DataElement::new(
            tags::LUT_DATA,
            VR::US,
            PrimitiveValue::U16(data.to_vec().into()),
        ),
    ]);
    let mut obj = dicom_object::open_file(fixture("single/CT_small.dcm")).unwrap();
    obj.put(DataElement::new(
        tags::MODALITY_LUT_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(vec![item]),
    ));
    let mut bytes = Vec::new();
    obj.write_all(&mut bytes).unwrap();
    bytes.into()
}

#[test]
fn a_modality_lut_sequence_is_applied_and_a_short_one_is_refused_by_name() {
    // CT_small is signed: first mapped value 0xFFFF is -1, so -1, 0, 1 map to 7, 8, 9 and
    // every other value to the nearer end.
    let bytes = ct_small_with_modality_lut([3, 0xFFFF, 16], &[7, 8, 9]);
    let report = ingest::scan_bytes(vec![("lut.dcm".into(), bytes)]);
    let volume = volume::assemble(report.series().next().unwrap()).unwrap();
    assert!(volume.hu.iter().all(|&v| (7.0..=9.0).contains(&v)));
    assert!(volume.hu.iter().any(|&v| v == 9.0));

    let short = ct_small_with_modality_lut([4, 0, 16], &[7, 8, 9]);
    let err = ingest::read_header("short-lut.dcm", short).unwrap_err();
    assert_eq!(
        err.to_string(),
        "short-lut.dcm has a Modality LUT Sequence that cannot be applied: LUTData has 3 \
         entries, its descriptor says 4"
    );
}

#[test]
fn hostile_dimensions_are_refused_before_allocating() {
    let rows = ct_small_with(&[(tags::ROWS, VR::US, PrimitiveValue::from(60_000u16))]);
    let err = ingest::read_header("rows.dcm", rows).unwrap_err();
    assert!(
        err.to_string().contains("rows.dcm claims 60000x128 pixels"),
        "{err}"
    );

    let frames = ct_small_with(&[(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from("2000000000"),
    )]);
    assert!(matches!(
        ingest::read_header("frames.dcm", frames),
        Err(ingest::Error::TooLarge { .. })
    ));

    let big = [
        (tags::ROWS, VR::US, PrimitiveValue::from(16_000u16)),
        (tags::COLUMNS, VR::US, PrimitiveValue::from(16_000u16)),
        (
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            PrimitiveValue::from("60000"),
        ),
    ];
    let report = ingest::scan_bytes(vec![("big.dcm".into(), ct_small_with(&big))]);
    let err = volume::assemble(report.series().next().unwrap()).unwrap_err();
    assert!(matches!(err, volume::Error::TooLarge { .. }), "{err}");

    let lying = [
        (tags::ROWS, VR::US, PrimitiveValue::from(16_000u16)),
        (tags::COLUMNS, VR::US, PrimitiveValue::from(16_000u16)),
    ];
    let report = ingest::scan_bytes(vec![("lying.dcm".into(), ct_small_with(&lying))]);
    let err = volume::assemble(report.series().next().unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("lying.dcm claims 512000000 bytes of pixels"),
        "{err}"
    );
}

/// dcmtk's 12-bit JPEG CT slice with its one fragment edited, as in-memory bytes.
fn jpeg12_with(edit: impl FnOnce(&mut Vec<u8>)) -> Arc<[u8]> {
    let mut obj = dicom_object::open_file(fixture("single/693_JPGE.dcm")).unwrap();
    let fragments = obj.element(tags::PIXEL_DATA).unwrap().value().fragments();
    let mut fragment = fragments.unwrap()[0].clone();
    edit(&mut fragment);
    if fragment.len() % 2 == 1 {
        fragment.push(0);
    }
    let pixels = PixelFragmentSequence::new(Vec::<u32>::new(), vec![fragment]);
    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, pixels));
    let mut bytes = Vec::new();
    obj.write_all(&mut bytes).unwrap();
    bytes.into()
}

#[test]
fn a_cut_12_bit_jpeg_is_an_error_naming_the_file_and_frame() {
    let cut = jpeg12_with(|fragment| fragment.truncate(fragment.len() / 2));
    let report = ingest::scan_bytes(vec![("cut.dcm".into(), cut)]);
    let err = volume::assemble(report.series().next().unwrap()).unwrap_err();
    let message = format!("{:#}", anyhow::Error::from(err));
    assert!(
        message.starts_with("could not decode 12-bit JPEG frame 0 of cut.dcm: libjpeg-turbo:"),
        "{message}"
    );
}

/// Parses and, when the header passes, assembles; the outcome does not matter, a panic does.
fn parse_and_assemble(bytes: Vec<u8>) {
    let report = ingest::scan_bytes(vec![("fuzz.dcm".into(), bytes.into())]);
    for series in report.series() {
        let _ = volume::assemble(series);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        parse_and_assemble(bytes);
    }

    // The same after the start of a bare data set (no file meta), so that the bytes are
    // read as elements in each syntax pulmo recognises there.
    #[test]
    fn arbitrary_bytes_as_a_bare_data_set_never_panic(
        start in prop_oneof![
            Just(vec![0x08u8, 0x00, 0x05, 0x00]),
            Just(vec![0x08u8, 0x00, 0x05, 0x00, b'C', b'S']),
            Just(vec![0x00u8, 0x08, 0x00, 0x05, b'C', b'S']),
        ],
        rest in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        parse_and_assemble([start, rest].concat());
    }

}

proptest! {
    // Each case parses and decodes a real slice: fewer cases keep the suite quick.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    // Flips land anywhere, element headers included: a corrupted length is refused by
    // `volume::lengths` before dicom-parser would reserve it (up to 4 GiB each, which CI
    // memory could not afford), so this also tests that guard.
    #[test]
    fn truncated_or_corrupted_ct_never_panics(
        cut in 0usize..40_000,
        flips in proptest::collection::vec((0usize..40_000, any::<u8>()), 0..4),
    ) {
        let mut bytes = std::fs::read(fixture("single/CT_small.dcm")).unwrap();
        for (at, value) in flips {
            let at = at.min(bytes.len() - 1);
            bytes[at] = value;
        }
        bytes.truncate(cut.min(bytes.len()));
        parse_and_assemble(bytes);
    }

    // The same for a 12-bit JPEG stream, which goes to libjpeg-turbo (C): any cut and any
    // flipped bytes inside it are an error or a picture, never a crash.
    #[test]
    fn cut_or_corrupted_12_bit_jpeg_never_panics(
        cut in 0usize..50_000,
        flips in proptest::collection::vec((0usize..50_000, any::<u8>()), 0..8),
    ) {
        let bytes = jpeg12_with(|fragment| {
            for (at, value) in flips {
                let at = at % fragment.len();
                fragment[at] = value;
            }
            fragment.truncate(cut.min(fragment.len()));
        });
        parse_and_assemble(bytes.to_vec());
    }
}
