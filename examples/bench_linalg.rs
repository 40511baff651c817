//! Times the matrix products the crate runs, on its shapes, with three implementations in one
//! run: the crate's packed hand kernels (`linalg::packed`), the `gemm` crate (`linalg::product`)
//! and faer (the optional dependency of feature `bench-faer`). One thread per product, as in
//! the crate's passes (which run one product per core); the Gram rows are the exception noted
//! below.
//!
//!     cargo run --release --features bench-faer --example bench_linalg [-- REPEATS]
//!
//! Prints GFLOP/s (2·m·k·n / best time of REPEATS) and the max relative difference of each
//! result from the f64 `gemm` product.
use std::time::Instant;

use faer::linalg::matmul::matmul as faer_matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{s, Array2};
use neural_collapse::linalg::packed::{HandF32, HandF64};
use neural_collapse::linalg::{gram, matmul_into};

fn rand(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Array2::from_shape_fn((rows, cols), |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    })
}

fn best<F: FnMut()>(repeats: usize, mut f: F) -> f64 {
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// One product shape `R (m × k) · B (k × n)`, repeated `calls` times per timing (the crate
/// reuses one `B` over many row groups; the hand kernel packs `B` once, outside the timing).
fn case(name: &str, m: usize, k: usize, n: usize, calls: usize, repeats: usize, f32_too: bool) {
    let r = rand(m, k, 1);
    let b = rand(k, n, 2);
    let flops = 2.0 * (m * k * n * calls) as f64;
    let gf = |t: f64| flops / t / 1e9;
    let mut reference = Array2::<f64>::zeros((m, n));
    matmul_into(reference.view_mut(), false, r.view(), b.view()).unwrap();
    let mut line = format!("{name:<34} {m:>5} {k:>5} {n:>6} {calls:>5}");
    // f64: hand, gemm, faer.
    let hand = HandF64::new(b.as_slice().unwrap(), k, n, n);
    let zs = hand.z_stride();
    let mp = m.div_ceil(8) * 8;
    let mut rp = vec![0.0f64; mp * k];
    rp[..m * k].copy_from_slice(r.as_slice().unwrap());
    let mut z = vec![0.0f64; mp * zs];
    let t_hand = best(repeats, || {
        (0..calls).for_each(|_| hand.matmul(&mut z, &rp, k, mp))
    });
    let hz = Array2::from_shape_fn((m, n), |(i, j)| z[i * zs + j]);
    let mut out = Array2::<f64>::zeros((m, n));
    let t_gemm = best(repeats, || {
        (0..calls).for_each(|_| matmul_into(out.view_mut(), false, r.view(), b.view()).unwrap())
    });
    let fr = MatRef::from_row_major_slice(r.as_slice().unwrap(), m, k);
    let fb = MatRef::from_row_major_slice(b.as_slice().unwrap(), k, n);
    let mut fo = vec![0.0f64; m * n];
    let t_faer = best(repeats, || {
        (0..calls).for_each(|_| {
            let dst = MatMut::from_row_major_slice_mut(&mut fo, m, n);
            faer_matmul(dst, Accum::Replace, fr, fb, 1.0, Par::Seq)
        })
    });
    let faer_out = Array2::from_shape_vec((m, n), fo.clone()).unwrap();
    line += &format!(
        " | f64 {:>6.1} {:>6.1} {:>6.1} ({:.0e} {:.0e})",
        gf(t_hand),
        gf(t_gemm),
        gf(t_faer),
        rel(&hz, &reference),
        rel(&faer_out, &reference)
    );
    if f32_too {
        let r32 = r.mapv(|v| v as f32);
        let b32 = b.mapv(|v| v as f32);
        let hand = HandF32::new(b.as_slice().unwrap(), k, n, n);
        let zs = hand.z_stride();
        let mut rp = vec![0.0f32; mp * k];
        rp[..m * k].copy_from_slice(r32.as_slice().unwrap());
        let mut z = vec![0.0f32; mp * zs];
        let t_hand = best(repeats, || {
            (0..calls).for_each(|_| hand.matmul(&mut z, &rp, k, mp))
        });
        let hz = Array2::from_shape_fn((m, n), |(i, j)| f64::from(z[i * zs + j]));
        let mut out = Array2::<f32>::zeros((m, n));
        let t_gemm = best(repeats, || {
            (0..calls)
                .for_each(|_| matmul_into(out.view_mut(), false, r32.view(), b32.view()).unwrap())
        });
        let fr = MatRef::from_row_major_slice(r32.as_slice().unwrap(), m, k);
        let fb = MatRef::from_row_major_slice(b32.as_slice().unwrap(), k, n);
        let mut fo = vec![0.0f32; m * n];
        let t_faer = best(repeats, || {
            (0..calls).for_each(|_| {
                let dst = MatMut::from_row_major_slice_mut(&mut fo, m, n);
                faer_matmul(dst, Accum::Replace, fr, fb, 1.0f32, Par::Seq)
            })
        });
        line += &format!(
            " | f32 {:>6.1} {:>6.1} {:>6.1} ({:.0e} {:.0e})",
            gf(t_hand),
            gf(t_gemm),
            gf(t_faer),
            rel(&hz, &reference),
            rel(&out.mapv(f64::from), &reference)
        );
    }
    println!("{line}");
}

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .map_or(3, |v| v.parse().expect("REPEATS"));
    println!("GFLOP/s on one thread, best of {repeats} (hand / gemm / faer), max rel diff of hand and faer (f32: hand and gemm) from f64 gemm");
    println!(
        "{:<34} {:>5} {:>5} {:>6} {:>5} |      hand   gemm   faer",
        "shape", "m", "k", "n", "calls"
    );
    // NC1 pass (metrics::blocked_pass): 96 residual rows × Q (d × rank) per call.
    case(
        "NC1 pass C=1000 d=2048 (96 rows)",
        96,
        2048,
        999,
        4,
        repeats,
        false,
    );
    case(
        "NC1 pass C=100 d=512 (96 rows)",
        96,
        512,
        99,
        40,
        repeats,
        false,
    );
    // NC4 tiles (tiles::nc4_mismatches): 1024 rows × a tile of 480 classes, f32 certified.
    case("NC4 tile C=1000 d=2048", 1024, 2048, 480, 1, repeats, true);
    case("NC4 tile C=32000 d=768", 1024, 768, 480, 1, repeats, true);
    case(
        "NC4 whole block C=32000 d=768",
        1024,
        768,
        4800,
        1,
        repeats,
        true,
    );
    // Pair tiles (generalized: Gram of means in tiles of 256 × 256, d = 768).
    case(
        "pair tile d=768 (256 × 256)",
        256,
        768,
        256,
        4,
        repeats,
        false,
    );
    // Gram of means, C = 1000, d = 2048: ndarray (matrixmultiply, as before) vs gemm.
    let means = rand(1000, 2048, 3);
    let t_nd = best(repeats, || {
        std::hint::black_box(means.dot(&means.t()));
    });
    let t_g = best(repeats, || {
        std::hint::black_box(gram(means.view()));
    });
    let flops = 2.0 * 1000.0 * 1000.0 * 2048.0;
    let d = rel(&gram(means.view()), &means.dot(&means.t()));
    println!(
        "Gram of means C=1000 d=2048: ndarray dot {:.1} GFLOP/s-equiv, linalg::gram (lower half) {:.1} ({:.3} s vs {:.3} s, rel diff {:.0e})",
        flops / t_nd / 1e9,
        flops / t_g / 1e9,
        t_nd,
        t_g,
        d
    );
    let _ = s![..];
}
