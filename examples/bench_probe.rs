//! Times the least-squares and logistic probes on data written by `scripts/bench-vs-sklearn` and
//! prints one JSON object: best-of-`repeats` fit seconds and the train/test accuracies.
//!
//! ```text
//! cargo run --release --example bench_probe -- DIR [REPEATS]
//! DIR holds meta.json {"n", "n_test", "d", "c", "ridge", "logistic_penalty", "max_iter", "tol"},
//! x.f32 (n·d little-endian f32, row-major), y.u32 (n), xt.f32 (n_test·d) and yt.u32 (n_test).
//! ```
//!
//! A fit includes everything `LinearProbe::fit_array` does on the f32 matrix: validation,
//! standardisation, the Gram matrix (least squares) or the f64 copy and L-BFGS (logistic).

use std::time::Instant;

use ndarray::Array2;
use neural_collapse::probe::{FittedProbe, LinearProbe};

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(path: &std::path::Path) -> Vec<f32> {
    read(path)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn u32s(path: &std::path::Path) -> Vec<u32> {
    read(path)
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: bench_probe DIR [REPEATS]"));
    let repeats: usize = args
        .next()
        .map_or(3, |r| r.parse().expect("REPEATS is a number"));
    let meta: serde_json::Value = serde_json::from_slice(&read(&dir.join("meta.json"))).unwrap();
    let get = |k: &str| meta[k].as_f64().unwrap_or_else(|| panic!("meta.json: {k}"));
    let (n, n_test, d) = (get("n") as usize, get("n_test") as usize, get("d") as usize);
    let x = Array2::from_shape_vec((n, d), f32s(&dir.join("x.f32"))).unwrap();
    let y = u32s(&dir.join("y.u32"));
    let xt = Array2::from_shape_vec((n_test, d), f32s(&dir.join("xt.f32"))).unwrap();
    let yt = u32s(&dir.join("yt.u32"));

    let probes = [
        (
            "least_squares",
            LinearProbe::least_squares().ridge(get("ridge")),
        ),
        (
            "logistic",
            LinearProbe::logistic()
                .penalty(get("logistic_penalty"))
                .max_iterations(get("max_iter") as u64)
                .gradient_tolerance(get("tol")),
        ),
    ];
    let mut out = serde_json::Map::new();
    for (name, probe) in probes {
        let mut best = f64::INFINITY;
        let mut fitted: Option<FittedProbe> = None;
        for _ in 0..repeats {
            let t = Instant::now();
            let f = probe.fit_array(x.view(), &y).expect("fit");
            best = best.min(t.elapsed().as_secs_f64());
            fitted = Some(f);
        }
        let f = fitted.expect("at least one repeat");
        let t = Instant::now();
        let test_accuracy = f.accuracy(xt.view(), &yt).expect("test accuracy");
        let predict_s = t.elapsed().as_secs_f64();
        out.insert(
            name.into(),
            serde_json::json!({
                "fit_s": best,
                "predict_s": predict_s,
                "train_accuracy": f.accuracy(x.view(), &y).expect("train accuracy"),
                "test_accuracy": test_accuracy,
                "penalty": f.penalty(),
            }),
        );
    }
    println!("{}", serde_json::Value::Object(out));
}
