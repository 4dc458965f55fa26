//! Encoding the results of one analysis: the JSON report, the DICOM SR (TID 1500) and SEG
//! as Part 10 bytes, and a key image (PNG) with its Secondary Capture.
//!
//! The analysis is real: the committed `sample-dicom` series (108 x 256 x 256) analysed on
//! the CPU with `models/threshold-test` (no network, so setting up takes about a second),
//! which finds several dense blobs with their segments. No GPU, no fixtures to fetch:
//! `cargo bench --bench report`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use pulmo::analyzer::{self, AnalyzerConfig};
use pulmo::backend::DeviceChoice;
use pulmo::ingest::{self, SelectionRules};
use pulmo::pipeline::Analysis;
use pulmo::report::{self, capture, images, seg, sr, DerivedIds};
use pulmo::volume::{self, Volume};

/// The sample series, decoded, and its analysis with the threshold test model.
fn sample_analysis() -> (Volume, Analysis) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scan = ingest::scan(&[root.join("sample-dicom")]).expect("sample-dicom is readable");
    let series = ingest::choose(&scan, &SelectionRules::default(), None).expect("one CT series");
    let volume = volume::assemble(series).expect("the sample decodes");
    let mut config = AnalyzerConfig::new(root.join("models/threshold-test"));
    config.backend.device = DeviceChoice::Cpu;
    let analyzer = analyzer::start(&config).expect("the test model loads");
    let analysis = analyzer
        .analyze(&volume, Default::default())
        .expect("the sample analyses");
    assert!(
        !analysis.report.findings.is_empty(),
        "the test model finds blobs in the sample"
    );
    (volume, analysis)
}

fn encode(c: &mut Criterion) {
    let (volume, analysis) = sample_analysis();
    let (report, segments) = (&analysis.report, &analysis.segments[..]);
    let ids = DerivedIds::new(report.findings.len());
    let name = format!("report, {} findings, 108x256x256", report.findings.len());
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    group.bench_function("JSON", |b| b.iter(|| black_box(report).to_json()));
    group.bench_function("SR to Part 10", |b| {
        b.iter(|| report::to_part10(sr::to_sr(black_box(report), segments, &volume, &ids)))
    });
    group.bench_function("SEG to Part 10", |b| {
        b.iter(|| {
            let object = seg::to_seg(black_box(report), segments, &volume, &ids).unwrap();
            report::to_part10(object)
        })
    });
    let (finding, segment) = (&report.findings[0], segments.first());
    group.bench_function("key image PNG", |b| {
        b.iter(|| images::key_image(black_box(finding), segment, &volume, None))
    });
    let pixels = images::render(finding, segment, &volume, None);
    group.bench_function("Secondary Capture to Part 10", |b| {
        b.iter(|| {
            let object = capture::to_capture(black_box(report), finding, &pixels, &volume, &ids);
            report::to_part10(object)
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
