//! Times the NC metrics at many classes (`scripts/bench-many-classes`), and serves as a quick
//! profiling harness on random data.
//!
//! ```text
//! cargo run --release --example bench_many_classes -- DIR [REPEATS] [--no-classifier] [--all-only]
//!     DIR holds meta.json {"n","d","c"}, x.f32 (n·d little-endian f32, row-major), y.u32 (n),
//!     w.f64 (c·d) and b.f64 (c), as written by scripts/bench-many-classes; with pred.u32 (n)
//!     instead of w/b, NC4 compares the nearest class mean with those predictions.
//! cargo run --release --example bench_many_classes -- --random N D C [REPEATS] [--no-classifier]
//!                                                    [--unrelated-classifier]
//!     random data made here: class means N(0, I), features = mean + 0.8·N(0, I), classes in turn;
//!     with --unrelated-classifier, W = N(0, I) independent of the means (an untrained network's
//!     last layer: most rows' classifier scores are close, the hard case of NC4's f64 fallback).
//! ```
//!
//! Prints one JSON object: best-of-`REPEATS` seconds of the class statistics, of NC1 alone
//! ([`nc1`]) and of every metric ([`NcParams::measure`] with the classifier, so NC4 too, and the
//! generalized metrics), the values, and the peak resident memory before and after the input.

use std::time::Instant;

use ndarray::{Array1, Array2};
use neural_collapse::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

#[path = "common/bench_input.rs"]
mod bench_input;
use bench_input::{f64s, read, vm_hwm_kib};

/// Features, labels and a classifier from the files of `dir`.
fn from_dir(dir: &std::path::Path, classifier: bool) -> (Array2<f32>, Vec<u32>, Classifier) {
    let (x, y, c) = bench_input::features(dir);
    let d = x.ncols();
    let clf = if classifier {
        Classifier {
            w: Array2::from_shape_vec((c, d), f64s(dir, "w.f64")).unwrap(),
            b: Array1::from(f64s(dir, "b.f64")),
        }
    } else {
        Classifier {
            w: Array2::zeros((0, d)),
            b: Array1::zeros(0),
        }
    };
    (x, y, clf)
}

/// Random data: means `N(0, I)`, features `mean + 0.8·N(0, I)`, labels `i mod C`, and a
/// classifier `W = means + 0.3·N(0, I)`, `b = 0.1·N(0, 1)`.
fn random(n: usize, d: usize, c: usize, unrelated: bool) -> (Array2<f32>, Vec<u32>, Classifier) {
    let mut rng = StdRng::seed_from_u64(c as u64);
    let means = Array2::from_shape_fn((c, d), |_| rng.sample::<f32, _>(StandardNormal));
    let y: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        means[[y[i] as usize, j]] + 0.8 * rng.sample::<f32, _>(StandardNormal)
    });
    let w = means.mapv(|v| {
        let noise = rng.sample::<f64, _>(StandardNormal);
        if unrelated {
            noise
        } else {
            f64::from(v) + 0.3 * noise
        }
    });
    let b = Array1::from_shape_fn(c, |_| 0.1 * rng.sample::<f64, _>(StandardNormal));
    (x, y, Classifier { w, b })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut with_classifier = !args.iter().any(|a| a == "--no-classifier");
    let all_only = args.iter().any(|a| a == "--all-only");
    let unrelated = args.iter().any(|a| a == "--unrelated-classifier");
    let pos: Vec<&String> = args
        .iter()
        .filter(|a| !(a.starts_with("--no") || a.starts_with("--all") || a.starts_with("--un")))
        .collect();
    let before_input = vm_hwm_kib();
    let mut pred: Option<Vec<u32>> = None;
    let (x, y, clf, repeats) = if pos.first().map(|s| s.as_str()) == Some("--random") {
        let num = |i: usize| -> usize {
            pos.get(i)
                .expect("usage: --random N D C [REPEATS]")
                .parse()
                .expect("a number")
        };
        let (x, y, clf) = random(num(1), num(2), num(3), unrelated);
        let repeats = pos.get(4).map_or(1, |r| r.parse().expect("REPEATS"));
        (x, y, clf, repeats)
    } else {
        let dir = std::path::PathBuf::from(pos.first().expect("usage: bench_many_classes DIR"));
        if dir.join("pred.u32").exists() {
            pred = Some(
                read(&dir.join("pred.u32"))
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            );
            with_classifier = false;
        }
        let (x, y, clf) = from_dir(&dir, pred.is_none());
        let repeats = pos.get(1).map_or(1, |r| r.parse().expect("REPEATS"));
        (x, y, clf, repeats)
    };
    let (n, d) = x.dim();
    let after_input = vm_hwm_kib();

    let mut best_all = f64::INFINITY;
    let mut best_stats = f64::INFINITY;
    let mut best_nc1 = f64::INFINITY;
    let mut report = None;
    for _ in 0..repeats {
        if all_only {
            let t = Instant::now();
            let mut p = NcParams::new();
            if with_classifier {
                p = p.classifier(&clf);
            } else if let Some(pr) = &pred {
                p = p.predictions(pr);
            }
            let r = p.measure(x.view(), &y).unwrap();
            best_all = best_all.min(t.elapsed().as_secs_f64());
            report = Some(r);
            continue;
        }
        let t = Instant::now();
        let stats = ClassStats::from_data(x.view(), &y).unwrap();
        best_stats = best_stats.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let v = nc1(
            x.view(),
            &y,
            &stats,
            GlobalMean::ClassMeans,
            DEFAULT_TOLERANCE,
        )
        .unwrap();
        best_nc1 = best_nc1.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&v);
        drop(stats);
        let t = Instant::now();
        let mut p = NcParams::new();
        if with_classifier {
            p = p.classifier(&clf);
        } else if let Some(pr) = &pred {
            p = p.predictions(pr);
        }
        let r = p.measure(x.view(), &y).unwrap();
        best_all = best_all.min(t.elapsed().as_secs_f64());
        report = Some(r);
    }
    let report = report.expect("at least one repeat");
    let mut out = serde_json::Map::new();
    out.insert("n".into(), n.into());
    out.insert("d".into(), d.into());
    out.insert("seconds_all".into(), best_all.into());
    out.insert("seconds_class_stats".into(), best_stats.into());
    out.insert("seconds_nc1_given_stats".into(), best_nc1.into());
    out.insert("input_bytes".into(), (n * d * 4 + n * 4).into());
    out.insert("peak_rss_kib".into(), vm_hwm_kib().into());
    out.insert("rss_before_input_kib".into(), before_input.into());
    out.insert("rss_after_input_kib".into(), after_input.into());
    out.insert("metrics".into(), report.to_json());
    println!("{}", serde_json::Value::Object(out));
}
