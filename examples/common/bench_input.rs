//! The input files of the metric benchmarks (`scripts/bench-vs-numpy`,
//! `scripts/bench-many-classes`), shared by `bench_metrics` and `bench_many_classes`:
//! `meta.json` {"n","d","c"}, `x.f32` (n·d little-endian f32, row-major), `y.u32` (n), and
//! little-endian f64 files such as `w.f64` (c·d) and `b.f64` (c).

use ndarray::Array2;

/// The bytes of `path` (a benchmark's input: a missing file is a usage error, so it panics).
pub fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The peak resident memory of this process (`VmHWM`), in KiB.
pub fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The little-endian f64 values of `dir/name`.
pub fn f64s(dir: &std::path::Path, name: &str) -> Vec<f64> {
    read(&dir.join(name))
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// `(x, y, c)`: the `n × d` features, the labels and the number of classes of `dir`. The
/// features are streamed into one f32 buffer, so the input is held once.
pub fn features(dir: &std::path::Path) -> (Array2<f32>, Vec<u32>, usize) {
    let meta: serde_json::Value = serde_json::from_slice(&read(&dir.join("meta.json"))).unwrap();
    let (n, d, c) = (
        meta["n"].as_u64().unwrap() as usize,
        meta["d"].as_u64().unwrap() as usize,
        meta["c"].as_u64().unwrap() as usize,
    );
    let mut xs: Vec<f32> = Vec::with_capacity(n * d);
    {
        use std::io::Read;
        let mut file = std::fs::File::open(dir.join("x.f32")).expect("x.f32");
        let mut buf = vec![0u8; 1 << 16];
        while xs.len() < n * d {
            let want = ((n * d - xs.len()) * 4).min(buf.len());
            file.read_exact(&mut buf[..want])
                .expect("x.f32 is n·d f32 values");
            xs.extend(
                buf[..want]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap())),
            );
        }
    }
    let x = Array2::from_shape_vec((n, d), xs).unwrap();
    let y: Vec<u32> = read(&dir.join("y.u32"))
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (x, y, c)
}
