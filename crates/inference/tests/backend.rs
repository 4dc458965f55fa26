//! The libtorch backend under the real pipeline: the TorchScript stand-ins of
//! `models/threshold-test/` give what the plain-Rust test backend of `pulmo-core` gives, and a
//! bundle whose networks do not fit the manifest fails at start.

use std::collections::BTreeMap;

use pulmo_backend::{Bundle, DeviceChoice, ResampleChoice};
use pulmo_core::pipeline::Analyzer;
use pulmo_core::testing;
use pulmo_inference::Options;

fn analyzer(bundle: Bundle, resample: ResampleChoice) -> Analyzer {
    let options = Options {
        device: DeviceChoice::Cpu,
        resample,
        ..Options::default()
    };
    let backend = pulmo_inference::start(&bundle, &options).expect("the test bundle must load");
    Analyzer::new(bundle, backend)
}

fn threshold_bundle() -> Bundle {
    Bundle::open(&testing::threshold_bundle_dir()).unwrap()
}

#[test]
fn the_torchscript_networks_agree_with_the_plain_rust_ones() {
    let volume = testing::chest_with(&[
        ([-70.0, 0.0, 0.0], 7.0, 100.0),
        ([75.0, 10.0, 0.0], 4.0, 30.0),
    ]);
    let torch = analyzer(threshold_bundle(), ResampleChoice::Cpu)
        .analyze(&volume, BTreeMap::new())
        .unwrap()
        .report;
    let plain = testing::threshold_analyzer()
        .analyze(&volume, BTreeMap::new())
        .unwrap()
        .report;
    assert_eq!(torch.findings.len(), 2);
    assert_eq!(torch.findings.len(), plain.findings.len());
    for (t, p) in torch.findings.iter().zip(&plain.findings) {
        assert_eq!(t.center_voxel, p.center_voxel);
        assert!((t.diameter_mm - p.diameter_mm).abs() < 0.05, "{t:?} {p:?}");
        assert!((t.score - p.score).abs() < 1e-3, "{t:?} {p:?}");
    }
    assert_eq!(torch.pulmo.libtorch, pulmo_inference::LIBTORCH_VERSION);
}

#[test]
fn resampling_with_tensor_ops_on_the_device_gives_the_same_report() {
    // The path a GPU takes (`--resample device`), here on the CPU device: the same
    // findings, measurements and scores as resampling with rayon.
    let volume = testing::chest_with(&[
        ([-70.0, 0.0, 0.0], 7.0, 100.0),
        ([75.0, 10.0, 0.0], 4.0, 30.0),
    ]);
    let cpu = analyzer(threshold_bundle(), ResampleChoice::Cpu);
    assert!(cpu.backend().resampler.is_none());
    let device = analyzer(threshold_bundle(), ResampleChoice::Device);
    let resampler = device
        .backend()
        .resampler
        .as_ref()
        .expect("resampling on the device");
    assert_eq!(resampler.describe(), "cpu (tensor ops)");
    let on_cpu = cpu.analyze(&volume, BTreeMap::new()).unwrap().report;
    let on_device = device.analyze(&volume, BTreeMap::new()).unwrap().report;
    assert_eq!(on_cpu.findings.len(), 2);
    assert_eq!(on_device.findings, on_cpu.findings);
    assert_eq!(on_device.warnings, on_cpu.warnings);
}

#[test]
fn auto_resamples_on_a_gpu_only() {
    let auto = analyzer(threshold_bundle(), ResampleChoice::Auto);
    assert_eq!(
        auto.backend().resampler.is_some(),
        auto.backend().device.starts_with("cuda")
    );
    assert_eq!("Device".parse(), Ok(ResampleChoice::Device));
    assert!("gpu"
        .parse::<ResampleChoice>()
        .unwrap_err()
        .contains("\"gpu\""));
}

#[test]
fn a_bundle_whose_classifier_answers_per_voxel_is_refused_at_start() {
    // The detector named as the classifier: its warm-up answer has the wrong shape.
    use sha2::Digest;
    let from = testing::threshold_bundle_dir();
    let scratch = tempfile::Builder::new()
        .prefix("pulmo-wrong-head-")
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    std::fs::copy(from.join("model.pt"), dir.join("model.pt")).unwrap();
    let sha = sha2::Sha256::digest(std::fs::read(from.join("model.pt")).unwrap());
    let manifest = std::fs::read_to_string(from.join("manifest.toml")).unwrap()
        + &format!(
            "[classifier]\nfile = \"model.pt\"\nsha256 = \"{sha:x}\"\ncrop = [8, 8, 8]\nweight = 0.5\n"
        );
    std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
    let bundle = Bundle::open(dir).unwrap();
    let options = Options {
        device: DeviceChoice::Cpu,
        ..Options::default()
    };
    let err = pulmo_inference::start(&bundle, &options)
        .expect_err("a wrong classifier must fail at start");
    let message = err.to_string();
    assert!(message.contains("model.pt gave wrong numbers"), "{message}");
    assert!(
        message.contains("output shape [1, 1, 8, 8, 8] for input [1, 1, 8, 8, 8]; expected [1, 1]"),
        "{message}"
    );
}
