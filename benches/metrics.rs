//! Criterion benchmarks of the metric core at N = 50,000, d = 512, C ∈ {10, 100} (f32 input).
//!
//! `cargo bench --bench metrics`. The comparison with numpy is `scripts/bench-vs-numpy`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::{Array1, Array2};
use neural_collapse::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

fn data(n: usize, d: usize, c: usize) -> (Array2<f32>, Vec<u32>, Classifier) {
    let mut rng = StdRng::seed_from_u64(c as u64);
    let means = Array2::from_shape_fn((c, d), |_| rng.sample::<f32, _>(StandardNormal));
    let y: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        means[[y[i] as usize, j]] + 0.8 * rng.sample::<f32, _>(StandardNormal)
    });
    let clf = Classifier {
        w: means.mapv(f64::from),
        b: Array1::zeros(c),
    };
    (x, y, clf)
}

fn bench(cr: &mut Criterion) {
    let (n, d) = (50_000, 512);
    let mut group = cr.benchmark_group("metrics");
    group.sample_size(10);
    for c in [10usize, 100] {
        let (x, y, clf) = data(n, d, c);
        group.bench_with_input(BenchmarkId::new("class_stats", c), &c, |b, _| {
            b.iter(|| ClassStats::from_data(x.view(), &y).unwrap())
        });
        let stats = ClassStats::from_data(x.view(), &y).unwrap();
        group.bench_with_input(BenchmarkId::new("nc1_projected", c), &c, |b, _| {
            b.iter(|| nc1(x.view(), &y, &stats, GlobalMean::ClassMeans, DEFAULT_TOLERANCE).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("all_metrics", c), &c, |b, _| {
            b.iter(|| NcParams::new().classifier(&clf).measure(x.view(), &y).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
