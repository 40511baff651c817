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

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: bench_metrics DIR [REPEATS]"));
    let repeats: usize = args.next().map_or(3, |r| r.parse().expect("REPEATS is a number"));
    let meta: serde_json::Value = serde_json::from_slice(&read(&dir.join("meta.json"))).unwrap();
    let (n, d, c) = (
        meta["n"].as_u64().unwrap() as usize,
        meta["d"].as_u64().unwrap() as usize,
        meta["c"].as_u64().unwrap() as usize,
    );
    let before_input = vm_hwm_kib();
    // Stream the file into the f32 buffer so that the input is held once.
    let mut xs: Vec<f32> = Vec::with_capacity(n * d);
    {
        use std::io::Read;
        let mut file = std::fs::File::open(dir.join("x.f32")).expect("x.f32");
        let mut buf = vec![0u8; 1 << 16];
        while xs.len() < n * d {
            let want = ((n * d - xs.len()) * 4).min(buf.len());
            file.read_exact(&mut buf[..want]).expect("x.f32 is n·d f32 values");
            xs.extend(buf[..want].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())));
        }
    }
    let x = Array2::from_shape_vec((n, d), xs).unwrap();
    let y: Vec<u32> = read(&dir.join("y.u32"))
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let f64s = |name: &str| -> Vec<f64> {
        read(&dir.join(name))
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let clf = Classifier {
        w: Array2::from_shape_vec((c, d), f64s("w.f64")).unwrap(),
        b: Array1::from(f64s("b.f64")),
    };
    let after_input = vm_hwm_kib();

    let mut best_all = f64::INFINITY;
    let mut best_stats = f64::INFINITY;
    let mut report = None;
    for _ in 0..repeats {
        let t = Instant::now();
        let stats = ClassStats::from_data(x.view(), &y).unwrap();
        best_stats = best_stats.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&stats);
        let t = Instant::now();
        let r = NcParams::new().classifier(&clf).measure(x.view(), &y).unwrap();
        best_all = best_all.min(t.elapsed().as_secs_f64());
        report = Some(r);
    }
    let report = report.expect("at least one repeat");
    let mut out = serde_json::Map::new();
    out.insert("seconds_all".into(), best_all.into());
    out.insert("seconds_class_stats".into(), best_stats.into());
    out.insert("input_bytes".into(), (n * d * 4 + n * 4).into());
    out.insert("peak_rss_kib".into(), vm_hwm_kib().into());
    out.insert("rss_before_input_kib".into(), before_input.into());
    out.insert("rss_after_input_kib".into(), after_input.into());
    out.insert("metrics".into(), report.to_json());
    println!("{}", serde_json::Value::Object(out));
}
