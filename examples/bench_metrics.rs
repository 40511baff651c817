//! Times every metric (NC1–NC4, CDNV) on data written by `scripts/bench-vs-numpy` and prints
//! one JSON object: best-of-`repeats` seconds, the metric values and the peak resident memory.
//!
//! ```text
//! cargo run --release --example bench_metrics -- DIR [REPEATS]
//! DIR holds meta.json {"n","d","c"}, x.f32 (n·d little-endian f32, row-major), y.u32 (n),
//! w.f64 (c·d) and b.f64 (c).
//! ```

use std::time::Instant;

use ndarray::{Array1, Array2};
use neural_collapse::prelude::*;

#[path = "common/bench_input.rs"]
mod bench_input;
use bench_input::{f64s, vm_hwm_kib};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: bench_metrics DIR [REPEATS]"));
    let repeats: usize = args
        .next()
        .map_or(3, |r| r.parse().expect("REPEATS is a number"));
    let before_input = vm_hwm_kib();
    let (x, y, c) = bench_input::features(&dir);
    let (n, d) = x.dim();
    let clf = Classifier {
        w: Array2::from_shape_vec((c, d), f64s(&dir, "w.f64")).unwrap(),
        b: Array1::from(f64s(&dir, "b.f64")),
    };
    let after_input = vm_hwm_kib();

    let mut best_all = f64::INFINITY;
    let mut best_stats = f64::INFINITY;
    let mut best_nc1 = f64::INFINITY;
    let mut report = None;
    for _ in 0..repeats {
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
        let t = Instant::now();
        let r = NcParams::new()
            .classifier(&clf)
            .measure(x.view(), &y)
            .unwrap();
        best_all = best_all.min(t.elapsed().as_secs_f64());
        report = Some(r);
    }
    let report = report.expect("at least one repeat");
    let mut out = serde_json::Map::new();
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
