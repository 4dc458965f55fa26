//! The hot stages after decoding, on a synthetic 300 x 512 x 512 chest-sized volume:
//! resampling to the working grid, the lung mask, tiling, stitching tile outputs and
//! connected components (decoding is in `volume.rs`, encoding results in `report.rs`). Runs
//! without a GPU and without fixtures: `cargo bench --bench stages`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array3;
use pulmo::{morphology, postprocess, preprocess};

/// A crude chest: body ellipse, two air-filled lungs, round "vessels" every few cm.
fn chest(slices: usize) -> Array3<f32> {
    Array3::from_shape_fn((slices, 512, 512), |(k, j, i)| {
        let (y, x) = (j as f32 - 256.0, i as f32 - 256.0);
        let body = (x / 240.0).powi(2) + (y / 190.0).powi(2) < 1.0;
        let lung = |cx: f32| ((x - cx) / 95.0).powi(2) + (y / 140.0).powi(2) < 1.0;
        let vessel = ((i + k / 3) % 40 < 4) && ((j + k / 5) % 37 < 4);
        match (body, lung(-120.0) || lung(120.0), vessel) {
            (false, _, _) => -1000.0,
            (true, true, false) => -860.0,
            _ => 40.0,
        }
    })
}

fn stages(c: &mut Criterion) {
    let hu = chest(300);
    let spacing = [1.0, 0.7, 0.7];
    let target = [1.25, 1.25, 1.25];
    let mut group = c.benchmark_group("stages 300x512x512");
    group.sample_size(10);
    group.bench_function("resample to 1.25 mm", |b| {
        b.iter(|| preprocess::resample(black_box(hu.view()), spacing, target))
    });
    group.bench_function("resample to 1.25 mm, libtorch tensor ops on the CPU", |b| {
        let tensors = pulmo::inference::TensorResampler {
            device: pulmo::inference::device::resolve(pulmo::backend::DeviceChoice::Cpu)
                .expect("the CPU is always there"),
        };
        b.iter(|| preprocess::resample_with(Some(&tensors), black_box(hu.view()), spacing, target))
    });
    let working = preprocess::resample(hu.view(), spacing, target);
    group.bench_function("lung mask", |b| {
        b.iter(|| preprocess::find_lungs(black_box(working.view()), target))
    });
    let lungs = preprocess::find_lungs(working.view(), target);
    let grid = preprocess::lung_tiles(working.dim().into(), &lungs, [64; 3], 0.25, [7; 3]);
    group.bench_function("extract tiles", |b| {
        b.iter(|| {
            grid.origins
                .iter()
                .map(|o| preprocess::extract_tile(working.view(), *o, grid.patch, 0.0))
                .collect::<Vec<_>>()
        })
    });
    let tiles: Vec<Vec<f32>> = grid
        .origins
        .iter()
        .map(|o| preprocess::extract_tile(working.view(), *o, grid.patch, 0.0))
        .collect();
    group.bench_function("stitch", |b| {
        b.iter(|| {
            postprocess::stitch(
                grid.shape,
                grid.patch,
                &grid.origins,
                black_box(&tiles),
                0.0,
            )
        })
    });
    let mask = working.map(|v| *v > -300.0);
    group.bench_function("connected components", |b| {
        b.iter(|| morphology::label(black_box(mask.view())))
    });
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
