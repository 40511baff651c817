//! Inner loops of the passes over the data, compiled three times (AVX-512, AVX2 + FMA, and the
//! portable baseline) and chosen at run time by the CPU's features.
//!
//! On aarch64 the baseline is the only version and already has NEON (2 f64 lanes, fused
//! multiply-add): LLVM vectorises the element-wise bodies there (and, at opt-level 3 only, the
//! argmin); the sum of squares and `max_sum_excluding`, which it leaves scalar or unfused, have
//! NEON versions written with intrinsics, and `linalg::packed::PackedRhs`'s product goes through `gemm`'s
//! NEON micro-kernels (see its "Instruction sets").
//!
//! The crate is built for the baseline x86-64 target (SSE2), so that a binary or an evcxr cache
//! runs anywhere; without this module its loops would use 2 of the 8 f64 lanes an AVX-512 core
//! has. Each kernel is one `#[inline(always)]` body instantiated inside `#[target_feature]`
//! wrappers; the bodies are plain Rust written so that LLVM vectorises them (element-wise loops,
//! and reductions kept in [`LANES`] independent partial sums combined in a fixed order).
//!
//! Numerics: every value is converted to f64 before any arithmetic; sums are f64. The order of
//! the additions is fixed by [`LANES`] (not by the instruction set), so a kernel gives the same
//! bits whichever version runs, except where a version fuses a multiply and an add (the sums of
//! squares and the matrix products of `linalg::packed::PackedRhs`), which differs from the others only by
//! rounding.

/// Independent partial sums kept by the reductions (`LANES` f64 = two AVX-512 registers).
pub(crate) const LANES: usize = 16;

/// Which compiled version of the kernels runs on this CPU.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86-64 versions use it
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512F (8 f64 lanes).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 and FMA (4 f64 lanes).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// The target's baseline.
    Baseline,
}

/// The best version this CPU runs (the feature checks are cached by the standard library).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86-64 versions use it
#[inline]
pub(crate) fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// Defines `pub(crate) fn $name` that runs `$body` compiled for the best instruction set.
macro_rules! dispatched {
    (
        $(#[$doc:meta])*
        fn $name:ident <$($g:ident : $bound:path),*> ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?
        = $body:ident;
    ) => {
        $(#[$doc])*
        pub(crate) fn $name<$($g: $bound),*>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512<$($g: $bound),*>($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<$($g: $bound),*>($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match isa() {
                    // SAFETY: `isa()` checked that the CPU has these features.
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}

/// A feature value: f32 or f64 (anything converted to f64 exactly).
pub(crate) trait Value: Copy + Into<f64> + Sync {}
impl<T: Copy + Into<f64> + Sync> Value for T {}

#[inline(always)]
fn lane_sum(acc: &[f64; LANES]) -> f64 {
    // Pairwise, in a fixed order.
    let mut v = *acc;
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for j in 0..width {
            v[j] += v[j + width];
        }
    }
    v[0]
}

#[inline(always)]
fn add_rows_body<T: Value>(sums: &mut [f64], x: &[T], labels: &[u32], dim: usize) {
    for (row, &y) in x.chunks_exact(dim).zip(labels) {
        let acc = &mut sums[y as usize * dim..(y as usize + 1) * dim];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v.into();
        }
    }
}

dispatched! {
    /// Adds each row of the row-major `x` (`labels.len() × dim`) into row `labels[i]` of the
    /// row-major `sums` (`C × dim`), in f64. Labels must be `< C` (checked by the caller).
    fn add_rows<T: Value>(sums: &mut [f64], x: &[T], labels: &[u32], dim: usize) = add_rows_body;
}

#[inline(always)]
fn sum_sq(v: &[f64]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] += c[j] * c[j];
        }
    }
    for (a, &r) in acc.iter_mut().zip(rest) {
        *a += r * r;
    }
    lane_sum(&acc)
}

#[inline(always)]
fn residuals_body<T: Value>(
    out: &mut [f64],
    out32: &mut [f32],
    x: &[T],
    labels: &[u32],
    means: &[f64],
    dim: usize,
    scatter: &mut [f64],
) -> f64 {
    let mut total = 0.0;
    for ((o, row), &y) in out
        .chunks_exact_mut(dim)
        .zip(x.chunks_exact(dim))
        .zip(labels)
    {
        let m = &means[y as usize * dim..(y as usize + 1) * dim];
        for ((oj, &xj), &mj) in o.iter_mut().zip(row).zip(m) {
            *oj = xj.into() - mj;
        }
        let sq = sum_sq_dispatched(o);
        scatter[y as usize] += sq;
        total += sq;
    }
    for (o32, &o) in out32.iter_mut().zip(out.iter()) {
        *o32 = o as f32;
    }
    total
}

dispatched! {
    /// `max_{c ≠ skip} (a[c] + b[c])` over `c < a.len()` (NaN ignored; −∞ when there is
    /// none), in 8 lanes.
    fn max_sum_excluding<>(a: &[f64], b: &[f64], skip: usize) -> f64 = max_sum_excluding_body;
}

#[inline(always)]
fn max_sum_excluding_body(a: &[f64], b: &[f64], skip: usize) -> f64 {
    #[cfg(target_arch = "aarch64")]
    return max_sum_excluding_neon(a, b, skip);
    #[cfg(not(target_arch = "aarch64"))]
    max_sum_excluding_portable(a, b, skip)
}

/// The portable [`max_sum_excluding`]: lane `l` keeps the maximum of the sums at `c ≡ l mod 8`.
#[cfg_attr(all(target_arch = "aarch64", not(test)), allow(dead_code))]
#[inline(always)]
fn max_sum_excluding_portable(a: &[f64], b: &[f64], skip: usize) -> f64 {
    const L: usize = 8;
    let b = &b[..a.len()];
    let mut best = [f64::NEG_INFINITY; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let full = a.len() - ac.remainder().len();
    for (chunk, (x, y)) in ac.zip(bc).enumerate() {
        for l in 0..L {
            let v = if chunk * L + l == skip {
                f64::NEG_INFINITY
            } else {
                x[l] + y[l]
            };
            best[l] = best[l].max(v);
        }
    }
    for (l, (x, y)) in a[full..].iter().zip(&b[full..]).enumerate() {
        if full + l != skip {
            best[l] = best[l].max(x + y);
        }
    }
    best.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// [`max_sum_excluding`] with NEON (LLVM leaves the portable loop scalar on aarch64): the same
/// 8 lanes in four 2-lane registers, `fmaxnm` (which is what `f64::max` compiles to on
/// aarch64, NaN ignored) on the sums `a[c] + b[c]`, the chunk holding `skip` through a copy
/// with −∞ in its place. Same operations per lane in the same order: the same bits as the
/// portable version.
#[cfg(target_arch = "aarch64")]
fn max_sum_excluding_neon(a: &[f64], b: &[f64], skip: usize) -> f64 {
    use std::arch::aarch64::*;
    const L: usize = 8;
    let b = &b[..a.len()];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let full = a.len() - ac.remainder().len();
    let mut best = [f64::NEG_INFINITY; L];
    // SAFETY (whole block): NEON is enabled on every aarch64 target; every load reads lanes
    // 2q, 2q + 1 (q < 4) of an 8-value chunk or array, every store lanes 2q, 2q + 1 of `best`.
    unsafe {
        let mut m = [vdupq_n_f64(f64::NEG_INFINITY); L / 2];
        for (chunk, (x, y)) in ac.zip(bc).enumerate() {
            if chunk == skip / L {
                let mut sums = [f64::NEG_INFINITY; L];
                for (l, s) in sums.iter_mut().enumerate() {
                    if chunk * L + l != skip {
                        *s = x[l] + y[l];
                    }
                }
                for (q, mq) in m.iter_mut().enumerate() {
                    *mq = vmaxnmq_f64(*mq, vld1q_f64(sums.as_ptr().add(2 * q)));
                }
                continue;
            }
            for (q, mq) in m.iter_mut().enumerate() {
                let xs = vld1q_f64(x.as_ptr().add(2 * q));
                let ys = vld1q_f64(y.as_ptr().add(2 * q));
                *mq = vmaxnmq_f64(*mq, vaddq_f64(xs, ys));
            }
        }
        for (q, mq) in m.iter().enumerate() {
            vst1q_f64(best.as_mut_ptr().add(2 * q), *mq);
        }
    }
    for (l, (x, y)) in a[full..].iter().zip(&b[full..]).enumerate() {
        if full + l != skip {
            best[l] = best[l].max(x + y);
        }
    }
    best.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

dispatched! {
    /// The best and second-best scores `s_c = base[c] + f64(z[c])` over `c < base.len()` (`z`
    /// at least as long), in one pass: `(max_c s_c, its first index, max_{c ≠ that index} s_c)`;
    /// `(−∞, 0, −∞)` when no score is above −∞. NaN scores are skipped by the maximum; a NaN
    /// may raise the second-best to the best, which only makes a caller's margin check more
    /// cautious. Eight lanes (`c` in lane `c mod 8`), each keeping its best, the best's first
    /// index and its second best (`second ← max(second, min(s, best))` before `best ← max`).
    fn top_two<>(base: &[f64], z: &[f32]) -> (f64, usize, f64) = top_two_body;
}

#[inline(always)]
fn top_two_body(base: &[f64], z: &[f32]) -> (f64, usize, f64) {
    const L: usize = 8;
    let z = &z[..base.len()];
    let mut b1 = [f64::NEG_INFINITY; L];
    let mut i1 = [usize::MAX; L];
    let mut b2 = [f64::NEG_INFINITY; L];
    let (bc, zc) = (base.chunks_exact(L), z.chunks_exact(L));
    let full = base.len() - bc.remainder().len();
    for (chunk, (x, y)) in bc.zip(zc).enumerate() {
        for l in 0..L {
            let v = x[l] + f64::from(y[l]);
            b2[l] = b2[l].max(v.min(b1[l]));
            if v > b1[l] {
                b1[l] = v;
                i1[l] = chunk * L + l;
            }
        }
    }
    for (l, (x, y)) in base[full..].iter().zip(&z[full..]).enumerate() {
        let v = x + f64::from(*y);
        b2[l] = b2[l].max(v.min(b1[l]));
        if v > b1[l] {
            b1[l] = v;
            i1[l] = full + l;
        }
    }
    let (mut top, mut idx, mut lane) = (f64::NEG_INFINITY, usize::MAX, L);
    for l in 0..L {
        if i1[l] != usize::MAX && (b1[l] > top || (b1[l] == top && i1[l] < idx)) {
            (top, idx, lane) = (b1[l], i1[l], l);
        }
    }
    if lane == L {
        return (f64::NEG_INFINITY, 0, f64::NEG_INFINITY);
    }
    let mut second = b2[lane];
    for l in (0..L).filter(|&l| l != lane) {
        second = second.max(b1[l]);
    }
    (top, idx, second)
}

dispatched! {
    /// `argmin_c (sa · a[c] + sb · b[c])` over `c < a.len()` (`b` at least as long): the first
    /// index on ties, NaN scores skipped, 0 when no score is below +∞. Eight independent
    /// running minima (`c` in lane `c mod 8`), then the smallest `(score, index)` of the lanes:
    /// the answer of one sequential scan, without its chain of dependent compares.
    fn argmin_combination_wide<>(a: &[f64], sa: f64, b: &[f64], sb: f64) -> usize = argmin_combination_body;
}

/// [`argmin_combination_wide`], run in place for a few values (up to 16), where the call into
/// the dispatched version would cost more than the scan.
#[inline]
pub(crate) fn argmin_combination(a: &[f64], sa: f64, b: &[f64], sb: f64) -> usize {
    if a.len() <= 16 {
        argmin_combination_body(a, sa, b, sb)
    } else {
        argmin_combination_wide(a, sa, b, sb)
    }
}

#[inline(always)]
fn argmin_combination_body(a: &[f64], sa: f64, b: &[f64], sb: f64) -> usize {
    const L: usize = 8;
    let b = &b[..a.len()];
    let mut best_v = [f64::INFINITY; L];
    let mut best_i = [usize::MAX; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let full = a.len() - ac.remainder().len();
    for (chunk, (x, y)) in ac.zip(bc).enumerate() {
        for l in 0..L {
            let v = sa * x[l] + sb * y[l];
            if v < best_v[l] {
                best_v[l] = v;
                best_i[l] = chunk * L + l;
            }
        }
    }
    for (l, (x, y)) in a[full..].iter().zip(&b[full..]).enumerate() {
        let v = sa * x + sb * y;
        if v < best_v[l] {
            best_v[l] = v;
            best_i[l] = full + l;
        }
    }
    let mut best = (f64::INFINITY, 0usize);
    for l in 0..L {
        if best_i[l] != usize::MAX
            && (best_v[l] < best.0 || (best_v[l] == best.0 && best_i[l] < best.1))
        {
            best = (best_v[l], best_i[l]);
        }
    }
    best.1
}

dispatched! {
    /// Residuals `r_i = x_i − m_{y_i}` (f64) written to the row-major `out`, and
    /// `scatter[c] += Σ_{y_i=c} ‖r_i‖²`; returns `Σ_i ‖r_i‖²`. `means` is row-major `C × dim`.
    /// The residuals rounded to f32 go to `out32`, as far as it reaches (pass `&mut []` for
    /// none).
    fn residuals<T: Value>(
        out: &mut [f64],
        out32: &mut [f32],
        x: &[T],
        labels: &[u32],
        means: &[f64],
        dim: usize,
        scatter: &mut [f64],
    ) -> f64 = residuals_body;
}

/// `Σ v_j²` with the best instruction set (LLVM does not vectorise this reduction by itself on
/// the x86-64 baseline; on aarch64 it does at opt-level 3 only, and never fuses). The
/// AVX-512, AVX2 and NEON versions perform the same fused operations in the same order, so they
/// give the same bits; the portable [`sum_sq`] differs from them only by the rounding of the
/// unfused products. Either way the sum of `n` values is within `γ_{⌈n/16⌉ + 5} Σ v_j²` of
/// the exact one (`γ_m = m u / (1 − m u)`, `u = 2⁻⁵³`; at most one rounding per product,
/// `⌈n/16⌉` additions along a lane, 4 levels of [`lane_sum`]; all terms are `≥ 0`).
fn sum_sq_dispatched(v: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    match isa() {
        // SAFETY: `isa()` checked that the CPU has these features.
        Isa::Avx512 => return unsafe { sum_sq_avx512(v) },
        Isa::Avx2 => return unsafe { sum_sq_avx2(v) },
        Isa::Baseline => {}
    }
    #[cfg(target_arch = "aarch64")]
    return sum_sq_neon(v);
    #[cfg(not(target_arch = "aarch64"))]
    sum_sq(v)
}

/// `Σ v_j²` with NEON (part of every aarch64 target's baseline, so no run-time check): the
/// [`LANES`] partial sums in eight 2-lane registers, lane `j` accumulating `v_j, v_{j+16}, …`
/// with fused multiply-adds (`fmla`), then the remainder (unfused) and [`lane_sum`], exactly as
/// [`sum_sq_avx512`] does. Before it, aarch64 ran the portable [`sum_sq`]: the same order of
/// additions, the products now fused, so results move only within the bound above.
#[cfg(target_arch = "aarch64")]
fn sum_sq_neon(v: &[f64]) -> f64 {
    use std::arch::aarch64::*;
    // SAFETY (the intrinsics' calls): NEON is enabled on every aarch64 target.
    let mut a = [unsafe { vdupq_n_f64(0.0) }; LANES / 2];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (q, acc) in a.iter_mut().enumerate() {
            // SAFETY: `c` holds LANES = 16 f64; lanes 2q, 2q + 1. NEON as above.
            unsafe {
                let x = vld1q_f64(c.as_ptr().add(2 * q));
                *acc = vfmaq_f64(*acc, x, x);
            }
        }
    }
    let mut acc = [0.0f64; LANES];
    for (q, r) in a.iter().enumerate() {
        // SAFETY: `acc` holds 16 f64; lanes 2q, 2q + 1.
        unsafe { vst1q_f64(acc.as_mut_ptr().add(2 * q), *r) };
    }
    for (a, &r) in acc.iter_mut().zip(rest) {
        *a += r * r;
    }
    lane_sum(&acc)
}

/// `Σ v_j²` with AVX-512: [`LANES`] partial sums in two registers (fused multiply-adds).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_sq_avx512(v: &[f64]) -> f64 {
    use std::arch::x86_64::*;
    let mut a0 = _mm512_setzero_pd();
    let mut a1 = _mm512_setzero_pd();
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        // SAFETY: `c` holds LANES = 16 f64, two unaligned 8-lane loads.
        let (x0, x1) = unsafe {
            (
                _mm512_loadu_pd(c.as_ptr()),
                _mm512_loadu_pd(c.as_ptr().add(8)),
            )
        };
        a0 = _mm512_fmadd_pd(x0, x0, a0);
        a1 = _mm512_fmadd_pd(x1, x1, a1);
    }
    let mut acc = [0.0f64; LANES];
    // SAFETY: `acc` holds 16 f64.
    unsafe {
        _mm512_storeu_pd(acc.as_mut_ptr(), a0);
        _mm512_storeu_pd(acc.as_mut_ptr().add(8), a1);
    }
    for (a, &r) in acc.iter_mut().zip(rest) {
        *a += r * r;
    }
    lane_sum(&acc)
}

/// `Σ v_j²` with AVX2 + FMA: [`LANES`] partial sums in four registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_sq_avx2(v: &[f64]) -> f64 {
    use std::arch::x86_64::*;
    let mut a = [_mm256_setzero_pd(); 4];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (q, acc) in a.iter_mut().enumerate() {
            // SAFETY: `c` holds 16 f64; lanes 4q..4q+4.
            let x = unsafe { _mm256_loadu_pd(c.as_ptr().add(4 * q)) };
            *acc = _mm256_fmadd_pd(x, x, *acc);
        }
    }
    let mut acc = [0.0f64; LANES];
    for (q, r) in a.iter().enumerate() {
        // SAFETY: `acc` holds 16 f64; lanes 4q..4q+4.
        unsafe { _mm256_storeu_pd(acc.as_mut_ptr().add(4 * q), *r) };
    }
    for (a, &r) in acc.iter_mut().zip(rest) {
        *a += r * r;
    }
    lane_sum(&acc)
}

/// `Σ_k a_k b_k` in 8 partial sums (lane `l` takes the `k ≡ l mod 8` of the leading multiple of
/// 8; the rest is one more sum), combined pairwise. A single running sum is a chain of
/// dependent additions: it made the two `O(n³/3)` reductions of `spectral::tred2`
/// latency-bound (0.86 s at n = 1,000), and the refined classes of the classifier's separation
/// test (`tiles::NetSeparation`) cost 4 cycles per term. The rounding differs from the
/// sequential sum only by the order of the additions (the same `γ_n Σ |a_k b_k|` bound).
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0f64; 8];
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + rest
}

/// `Σ_k z_k² w_k`, in 8 partial sums combined in a fixed order (one chain of dependent
/// additions per row would take longer than the row's share of the matrix product).
pub(crate) fn weighted_sum_sq(z: &[f64], w: &[f64]) -> f64 {
    let (zc, wc) = (z.chunks_exact(8), w.chunks_exact(8));
    let mut s: f64 = zc
        .remainder()
        .iter()
        .zip(wc.remainder())
        .map(|(z, w)| z * z * w)
        .sum();
    let mut acc = [0.0f64; 8];
    for (a, b) in zc.zip(wc) {
        for l in 0..8 {
            acc[l] += a[l] * a[l] * b[l];
        }
    }
    s += ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    s
}

/// Most directions `K` taken by [`projected_residuals`] (five sweeps of [`PROJECTED_GROUP`]
/// over each block of rows); more go through the packed product.
pub(crate) const PROJECTED_MAX_COLS: usize = 15;

/// Directions summed per sweep over a block of rows in [`projected_residuals`]: the block's
/// `4·3` accumulators, its 4 residual vectors and a row of `Qᵀ` take 17 of the 32 AVX-512
/// registers. LLVM kept some accumulators on the stack (a store and a load around each of
/// their updates) with 23 or more live registers: two rows with all 9 directions of the
/// benchmark and their sums of squares, or 4 rows with 5 directions.
const PROJECTED_GROUP: usize = 3;

/// Rows summed at once by [`projected_residuals`]: each load of a row of `Qᵀ` (from L2) serves
/// 4 multiply-adds. Measured (`perf`, `scripts/bench-scale` 2 GB, rank 9): pass 2's kernel
/// took 1,964–2,454 samples with two rows a time (converting and subtracting the means within
/// each sweep), 1,710–1,790 with 4 rows from residuals written once per block.
const PROJECTED_ROWS: usize = 4;

/// Rows summed at once by the AVX2 kernel of [`projected_residuals`] (16 registers: its
/// `3·3` accumulators, 3 residual vectors and a row of `Qᵀ` take 13).
const PROJECTED_ROWS_AVX2: usize = 3;

/// NC1's second-pass sums over a few directions, in one sweep over the rows. For each row `i`
/// of the row-major `x` (`labels.len() × dim`), with `r = x_i − m_{y_i}` (f64, `m_c` = row `c`
/// of the row-major `means`), adds `‖r‖²` to `scatter[y_i]` and returns
///
/// ```text
/// Σ_i Σ_k w_k (q_k · r)²        q_k, w_k: the directions and weights of `dirs` (Directions)
/// ```
///
/// — what the residuals ([`residuals`]), the product `Z = R·Q` (`linalg::packed::PackedRhs`)
/// and [`weighted_sum_sq`] give together, without padding `Q`'s `K` columns to a multiple of 8
/// or writing more than [`PROJECTED_ROWS`] residuals at a time. Per block of that many rows:
/// their residuals (f64, in L1) and sums of squares in one sweep, then their dot products
/// with `Qᵀ`'s rows, [`PROJECTED_GROUP`] directions per sweep over the block (each load of
/// `q_k`, from L2 — `Qᵀ` is 36 KB at `K = 9, d = 512`, more than L1 — serving every row of
/// the block), `K` rounded up to a whole group with zero directions. Each dot product is
/// summed in 8 lanes (fused multiply-adds), then the lanes pairwise; the rounding differs from
/// the product's only by the order of the additions.
///
/// Two kernels: AVX-512 ([`PROJECTED_ROWS`] rows at a time) and AVX2 with FMA (Zen 3 and
/// other cores without AVX-512: [`PROJECTED_ROWS_AVX2`] rows, 4 lanes per dot product). `None`
/// where it does not run: without AVX2 and FMA, or with inputs whose shapes do not fit
/// `dirs` (the caller then takes the other route); [`Directions::new`] refuses `K = 0` and
/// `K >` [`PROJECTED_MAX_COLS`].
pub(crate) fn projected_residuals<T: Value>(
    x: &[T],
    labels: &[u32],
    means: &[f64],
    dirs: &Directions,
    scatter: &mut [f64],
) -> Option<f64> {
    projected_residuals_on(isa(), x, labels, means, dirs, scatter)
}

/// [`projected_residuals`] with the kernel of `isa` (the tests run every one the CPU has).
pub(crate) fn projected_residuals_on<T: Value>(
    isa: Isa,
    x: &[T],
    labels: &[u32],
    means: &[f64],
    dirs: &Directions,
    scatter: &mut [f64],
) -> Option<f64> {
    let (dim, classes) = (dirs.dim, scatter.len());
    let fits = x.len() == labels.len() * dim
        && means.len() == classes * dim
        && labels.iter().all(|&y| (y as usize) < classes);
    if !fits || !runs_here(isa) {
        return None;
    }
    match isa {
        // SAFETY (both): `runs_here` checked the CPU; `fits` the lengths and labels; `dirs`
        // holds whole groups of directions of `dim` values (`Directions::new`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(unsafe {
            projected_avx512::<T, PROJECTED_GROUP, PROJECTED_ROWS>(x, labels, means, dirs, scatter)
        }),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(unsafe {
            projected_avx2::<T, PROJECTED_GROUP, PROJECTED_ROWS_AVX2>(
                x, labels, means, dirs, scatter,
            )
        }),
        Isa::Baseline => None,
    }
}

/// The directions of [`projected_residuals`]: `Qᵀ` (`K × dim`, row-major) and NC1's weights
/// `w`, with zero directions up to a whole number of [`PROJECTED_GROUP`]s (a zero direction
/// adds 0). Built once per reference geometry and kept with it (`metrics::Geometry`), not per
/// block of rows.
#[derive(Debug, Clone)]
pub(crate) struct Directions {
    q_t: Vec<f64>,
    w: Vec<f64>,
    dim: usize,
}

impl Directions {
    /// `None` with `dim = 0`, `K = w.len()` of 0 or above [`PROJECTED_MAX_COLS`], or
    /// `q_t.len() ≠ K·dim`.
    pub(crate) fn new(q_t: &[f64], w: &[f64], dim: usize) -> Option<Self> {
        let k = w.len();
        if dim == 0 || !(1..=PROJECTED_MAX_COLS).contains(&k) || q_t.len() != k * dim {
            return None;
        }
        let padded = k.div_ceil(PROJECTED_GROUP) * PROJECTED_GROUP;
        let mut q = q_t.to_vec();
        q.resize(padded * dim, 0.0);
        let mut w = w.to_vec();
        w.resize(padded, 0.0);
        Some(Self { q_t: q, w, dim })
    }
}

/// Whether the [`projected_residuals`] kernel of `isa` runs on this CPU (the baseline has
/// none: the caller then takes the residuals-then-product route).
pub(crate) fn runs_here(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        match isa {
            Isa::Avx512 => has!("avx512f"),
            Isa::Avx2 => has!("avx2") && has!("fma"),
            Isa::Baseline => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

/// The blocks of [`projected_residuals`], for both instruction sets: per block of `R` rows,
/// their residuals and sums of squares (`residual`, in L1: 16 KB at `R = 4, d = 512`), then
/// their dot products with each group of `G` directions (`dots`), weighted and squared.
/// Inlined into each `#[target_feature]` kernel, which passes its own `residual` and `dots`.
#[inline(always)]
fn projected_blocks<T: Value, const G: usize, const R: usize>(
    x: &[T],
    labels: &[u32],
    means: &[f64],
    dirs: &Directions,
    scatter: &mut [f64],
    residual: impl Fn(&[T], &[f64], &mut [f64], *const T) -> f64,
    dots: impl Fn(&[f64], &[f64], usize) -> [[f64; G]; R],
) -> f64 {
    let (q_t, w, dim) = (&dirs.q_t, &dirs.w, dirs.dim);
    let rows = labels.len();
    let mut nc1 = 0.0;
    let mut resid = vec![0.0f64; R * dim];
    let mut i = 0;
    while i < rows {
        // The last rows of a count not a multiple of R are repeated (the copies dropped).
        let mut sq = [0.0f64; R];
        for (r, (out, s)) in resid.chunks_exact_mut(dim).zip(&mut sq).enumerate() {
            let a = (i + r).min(rows - 1);
            let y = labels[a] as usize;
            // The same row of the next block, fetched meanwhile: 2 KiB rows on 4 KiB pages
            // leave the hardware prefetchers (which stop at a page's end) little to go on.
            let ahead = x.as_ptr().wrapping_add((a + R) * dim);
            *s = residual(
                &x[a * dim..(a + 1) * dim],
                &means[y * dim..(y + 1) * dim],
                out,
                ahead,
            );
        }
        let mut n = [0.0f64; R];
        for (qg, wg) in q_t.chunks_exact(G * dim).zip(w.chunks_exact(G)) {
            let z = dots(&resid, qg, dim);
            for r in 0..R {
                n[r] += z[r].iter().zip(wg).map(|(z, w)| z * z * w).sum::<f64>();
            }
        }
        for r in 0..R.min(rows - i) {
            scatter[labels[i + r] as usize] += sq[r];
            nc1 += n[r];
        }
        i += R;
    }
    nc1
}

/// [`projected_residuals`] with AVX-512, rows `R` at a time, directions `G` at a time.
///
/// # Safety
/// The CPU has AVX-512F; `x.len() = labels.len()·dim`, `means.len() = scatter.len()·dim`,
/// every label `< scatter.len()`; `dirs` built for groups of `G` (`Directions::new`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn projected_avx512<T: Value, const G: usize, const R: usize>(
    x: &[T],
    labels: &[u32],
    means: &[f64],
    dirs: &Directions,
    scatter: &mut [f64],
) -> f64 {
    // SAFETY (both closures): AVX-512F (this function's); the driver passes a row, a mean
    // and `out` of `dim` values, `R·dim` residuals and a group of `G·dim` directions.
    projected_blocks::<T, G, R>(
        x,
        labels,
        means,
        dirs,
        scatter,
        |row, m, out, ahead| unsafe { residual_row(row, m, out, ahead) },
        |resid, qg, dim| unsafe { dots::<G, R>(resid, qg, dim) },
    )
}

/// `out = row − m` in f64, and `‖out‖²` (8 lanes of fused multiply-adds, then pairwise);
/// prefetches the `dim` values at `ahead` (a prefetch does not fault, wherever it points).
///
/// # Safety
/// AVX-512F; `row`, `m` and `out` hold the same number of values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn residual_row<T: Value>(row: &[T], m: &[f64], out: &mut [f64], ahead: *const T) -> f64 {
    use std::arch::x86_64::*;
    let dim = row.len();
    let full = dim / 8 * 8;
    let mut s = _mm512_setzero_pd();
    let mut j = 0;
    while j < full {
        if j % 16 == 0 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(j).cast());
        }
        // SAFETY: `j + 8 ≤ dim`, within `row`, `m` and `out`.
        unsafe {
            let v: [f64; 8] = std::array::from_fn(|l| (*row.as_ptr().add(j + l)).into());
            let r = _mm512_sub_pd(
                _mm512_loadu_pd(v.as_ptr()),
                _mm512_loadu_pd(m.as_ptr().add(j)),
            );
            _mm512_storeu_pd(out.as_mut_ptr().add(j), r);
            s = _mm512_fmadd_pd(r, r, s);
        }
        j += 8;
    }
    let mut l = [0.0f64; 8];
    // SAFETY: `l` holds 8 f64.
    unsafe { _mm512_storeu_pd(l.as_mut_ptr(), s) };
    let mut sq = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    for j in full..dim {
        out[j] = row[j].into() - m[j];
        sq += out[j] * out[j];
    }
    sq
}

/// The dot products of the `R` rows of `resid` (`R × dim`) with the `G` rows of `qg`
/// (`G × dim`), each in 8 lanes of fused multiply-adds, then pairwise: each load of a row of
/// `qg` (from L2: `Qᵀ` is 40 KB at `K = 10, d = 512`, more than L1) serves `R` multiply-adds.
///
/// # Safety
/// AVX-512F; `resid` holds `R·dim` values, `qg` `G·dim`.
// Index loops over the register tile (`a[r][k]`, fully unrolled) read as the algebra does.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots<const G: usize, const R: usize>(
    resid: &[f64],
    qg: &[f64],
    dim: usize,
) -> [[f64; G]; R] {
    use std::arch::x86_64::*;
    let full = dim / 8 * 8;
    let mut a = [[_mm512_setzero_pd(); G]; R];
    let (rp, qp) = (resid.as_ptr(), qg.as_ptr());
    let mut j = 0;
    while j < full {
        // SAFETY: `j + 8 ≤ dim`: within each row of `resid` and of `qg`.
        unsafe {
            let mut v = [_mm512_setzero_pd(); R];
            for r in 0..R {
                v[r] = _mm512_loadu_pd(rp.add(r * dim + j));
            }
            for k in 0..G {
                let q = _mm512_loadu_pd(qp.add(k * dim + j));
                for r in 0..R {
                    a[r][k] = _mm512_fmadd_pd(v[r], q, a[r][k]);
                }
            }
        }
        j += 8;
    }
    // Each register's 8 lanes summed pairwise. The registers are stored by a loop LLVM
    // unrolls (one instruction each): a loop calling `_mm512_reduce_add_pd` stays a loop,
    // and its variable index would keep the accumulators in memory.
    let mut lanes = [[[0.0f64; 8]; G]; R];
    for r in 0..R {
        for k in 0..G {
            // SAFETY: `lanes[r][k]` holds 8 f64.
            unsafe { _mm512_storeu_pd(lanes[r][k].as_mut_ptr(), a[r][k]) };
        }
    }
    let mut z =
        lanes.map(|g| g.map(|l| ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))));
    for (r, zr) in z.iter_mut().enumerate() {
        for j in full..dim {
            for (k, zk) in zr.iter_mut().enumerate() {
                *zk += resid[r * dim + j] * qg[k * dim + j];
            }
        }
    }
    z
}

/// [`projected_residuals`] with AVX2 and FMA (4 f64 lanes, 16 registers), rows `R` at a time,
/// directions `G` at a time: the AVX-512 kernel's algorithm ([`projected_avx512`]) with a
/// register tile that fits 16 registers (`R·G` accumulators, `R` residual vectors and a row of
/// `Qᵀ`: 13 with `R = G = 3`).
///
/// # Safety
/// The CPU has AVX2 and FMA; `x.len() = labels.len()·dim`, `means.len() = scatter.len()·dim`,
/// every label `< scatter.len()`; `dirs` built for groups of `G` (`Directions::new`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn projected_avx2<T: Value, const G: usize, const R: usize>(
    x: &[T],
    labels: &[u32],
    means: &[f64],
    dirs: &Directions,
    scatter: &mut [f64],
) -> f64 {
    // SAFETY (both closures): AVX2 and FMA (this function's); the driver passes a row, a
    // mean and `out` of `dim` values, `R·dim` residuals and a group of `G·dim` directions.
    projected_blocks::<T, G, R>(
        x,
        labels,
        means,
        dirs,
        scatter,
        |row, m, out, ahead| unsafe { residual_row_avx2(row, m, out, ahead) },
        |resid, qg, dim| unsafe { dots_avx2::<G, R>(resid, qg, dim) },
    )
}

/// `out = row − m` in f64, and `‖out‖²` (two registers of 4 lanes of fused multiply-adds,
/// then pairwise), with AVX2; prefetches the `dim` values at `ahead`.
///
/// # Safety
/// AVX2 and FMA; `row`, `m` and `out` hold the same number of values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn residual_row_avx2<T: Value>(
    row: &[T],
    m: &[f64],
    out: &mut [f64],
    ahead: *const T,
) -> f64 {
    use std::arch::x86_64::*;
    let dim = row.len();
    let full = dim / 8 * 8;
    let (mut s0, mut s1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let mut j = 0;
    while j < full {
        if j % 16 == 0 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(j).cast());
        }
        // SAFETY: `j + 8 ≤ dim`, within `row`, `m` and `out`.
        unsafe {
            let v: [f64; 8] = std::array::from_fn(|l| (*row.as_ptr().add(j + l)).into());
            let r0 = _mm256_sub_pd(
                _mm256_loadu_pd(v.as_ptr()),
                _mm256_loadu_pd(m.as_ptr().add(j)),
            );
            let r1 = _mm256_sub_pd(
                _mm256_loadu_pd(v.as_ptr().add(4)),
                _mm256_loadu_pd(m.as_ptr().add(j + 4)),
            );
            _mm256_storeu_pd(out.as_mut_ptr().add(j), r0);
            _mm256_storeu_pd(out.as_mut_ptr().add(j + 4), r1);
            s0 = _mm256_fmadd_pd(r0, r0, s0);
            s1 = _mm256_fmadd_pd(r1, r1, s1);
        }
        j += 8;
    }
    let mut l = [0.0f64; 8];
    // SAFETY: `l` holds 8 f64.
    unsafe {
        _mm256_storeu_pd(l.as_mut_ptr(), s0);
        _mm256_storeu_pd(l.as_mut_ptr().add(4), s1);
    }
    let mut sq = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    for j in full..dim {
        out[j] = row[j].into() - m[j];
        sq += out[j] * out[j];
    }
    sq
}

/// The dot products of the `R` rows of `resid` (`R × dim`) with the `G` rows of `qg`
/// (`G × dim`), each in 4 lanes of fused multiply-adds, then pairwise, with AVX2: each load
/// of a row of `qg` serves `R` multiply-adds.
///
/// # Safety
/// AVX2 and FMA; `resid` holds `R·dim` values, `qg` `G·dim`.
// Index loops over the register tile (`a[r][k]`, fully unrolled) read as the algebra does.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2<const G: usize, const R: usize>(
    resid: &[f64],
    qg: &[f64],
    dim: usize,
) -> [[f64; G]; R] {
    use std::arch::x86_64::*;
    let full = dim / 4 * 4;
    let mut a = [[_mm256_setzero_pd(); G]; R];
    let (rp, qp) = (resid.as_ptr(), qg.as_ptr());
    let mut j = 0;
    while j < full {
        // SAFETY: `j + 4 ≤ dim`: within each row of `resid` and of `qg`.
        unsafe {
            let mut v = [_mm256_setzero_pd(); R];
            for r in 0..R {
                v[r] = _mm256_loadu_pd(rp.add(r * dim + j));
            }
            for k in 0..G {
                let q = _mm256_loadu_pd(qp.add(k * dim + j));
                for r in 0..R {
                    a[r][k] = _mm256_fmadd_pd(v[r], q, a[r][k]);
                }
            }
        }
        j += 4;
    }
    let mut lanes = [[[0.0f64; 4]; G]; R];
    for r in 0..R {
        for k in 0..G {
            // SAFETY: `lanes[r][k]` holds 4 f64.
            unsafe { _mm256_storeu_pd(lanes[r][k].as_mut_ptr(), a[r][k]) };
        }
    }
    let mut z = lanes.map(|g| g.map(|l| (l[0] + l[2]) + (l[1] + l[3])));
    for (r, zr) in z.iter_mut().enumerate() {
        for j in full..dim {
            for (k, zk) in zr.iter_mut().enumerate() {
                *zk += resid[r * dim + j] * qg[k * dim + j];
            }
        }
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_rows_matches_scalar_loop() {
        let dim = 37; // not a multiple of any vector width
        let x: Vec<f32> = (0..5 * dim).map(|i| (i as f32).sin()).collect();
        let labels = [2u32, 0, 2, 1, 0];
        let mut sums = vec![0.0f64; 3 * dim];
        add_rows(&mut sums, &x, &labels, dim);
        let mut want = vec![0.0f64; 3 * dim];
        for (i, &y) in labels.iter().enumerate() {
            for j in 0..dim {
                want[y as usize * dim + j] += x[i * dim + j] as f64;
            }
        }
        assert_eq!(sums, want); // element-wise adds in the same order: exact
    }

    /// The instruction sets of the x86-64 kernels (only the baseline elsewhere).
    fn kernels_here() -> Vec<Isa> {
        #[cfg(target_arch = "x86_64")]
        return vec![Isa::Avx512, Isa::Avx2, Isa::Baseline];
        #[cfg(not(target_arch = "x86_64"))]
        vec![Isa::Baseline]
    }

    #[test]
    fn projected_residuals_match_scalar_loop() {
        // Dimensions around the 8-lane width, directions around the group of 3 (6, 9 and 15
        // fill their groups, the others are padded with zero directions), row counts around
        // the blocks of 4 (AVX-512) and 3 (AVX2) rows (the last rows of 1, 2, 3, 5, 6, 7 and 9
        // repeated, their copies dropped).
        for (dim, k, rows) in [
            (1usize, 1usize, 1usize),
            (7, 2, 3),
            (8, 5, 4),
            (15, 6, 5),
            (33, 9, 7),
            (64, 10, 2),
            (130, 13, 9),
            (512, 15, 6),
        ] {
            let classes = 3;
            let x: Vec<f32> = (0..rows * dim)
                .map(|i| (i as f32 * 0.37).cos() * 3.0)
                .collect();
            let means: Vec<f64> = (0..classes * dim)
                .map(|i| (i as f64 * 0.11).sin())
                .collect();
            let q_t: Vec<f64> = (0..k * dim).map(|i| (i as f64 * 0.7).cos()).collect();
            let w: Vec<f64> = (0..k).map(|i| 1.0 / (1.0 + i as f64)).collect();
            let labels: Vec<u32> = (0..rows).map(|i| (i * 7 % classes) as u32).collect();
            // The definition, one row and one direction at a time, in f64.
            let (mut want_scatter, mut want) = (vec![0.0f64; classes], 0.0f64);
            for (i, &y) in labels.iter().enumerate() {
                let y = y as usize;
                let r: Vec<f64> = (0..dim)
                    .map(|j| f64::from(x[i * dim + j]) - means[y * dim + j])
                    .collect();
                want_scatter[y] += r.iter().map(|v| v * v).sum::<f64>();
                for kk in 0..k {
                    let z: f64 = (0..dim).map(|j| r[j] * q_t[kk * dim + j]).sum();
                    want += w[kk] * z * z;
                }
            }
            let dirs = Directions::new(&q_t, &w, dim).expect("1 ≤ K ≤ 15");
            // Every kernel this CPU runs (AVX2 also where AVX-512 is the one chosen).
            for isa in kernels_here() {
                let mut scatter = vec![0.0f64; classes];
                let got = projected_residuals_on(isa, &x, &labels, &means, &dirs, &mut scatter);
                if !runs_here(isa) {
                    assert_eq!(got, None, "{isa:?} does not run here");
                    continue;
                }
                let got = got.expect("the kernel runs, shapes fit");
                assert!(
                    (got - want).abs() <= 1e-12 * want,
                    "{isa:?}, dim {dim}, K {k}: {got} vs {want}"
                );
                for (a, b) in scatter.iter().zip(&want_scatter) {
                    assert!(
                        (a - b).abs() <= 1e-12 * b,
                        "{isa:?}, dim {dim}, K {k}: {a} vs {b}"
                    );
                }
            }
        }
        // The route chosen is one of them, or none on the baseline.
        assert_eq!(
            runs_here(isa()),
            isa() != Isa::Baseline,
            "projected_residuals runs wherever AVX2 and FMA do"
        );
        // Where it does not run, it says so (and leaves the sums alone).
        let (x, means, q_t) = (vec![1.0f32; 16], vec![0.0f64; 16], vec![1.0f64; 16 * 16]);
        let mut scatter = vec![0.0f64; 2];
        let w16 = vec![1.0f64; 16];
        let none = |x: &[f32], labels: &[u32], q: &[f64], w: &[f64], sc: &mut [f64]| {
            projected_residuals(x, labels, &means, &Directions::new(q, w, 8)?, sc)
        };
        assert_eq!(none(&x, &[0, 1], &q_t, &w16, &mut scatter), None); // K = 16 > 15
        assert_eq!(none(&x, &[0, 1], &[], &[], &mut scatter), None); // K = 0
        assert_eq!(none(&x, &[0, 2], &q_t[..8], &w16[..1], &mut scatter), None); // label 2 ≥ C
        assert_eq!(none(&x, &[0], &q_t[..8], &w16[..1], &mut scatter), None); // 16 values, 1 row
        assert_eq!(scatter, vec![0.0, 0.0]);
    }

    #[test]
    fn residuals_match_scalar_loop() {
        for dim in [1usize, 15, 16, 33, 64] {
            let x: Vec<f64> = (0..4 * dim).map(|i| (i as f64 * 0.37).cos()).collect();
            let means: Vec<f64> = (0..2 * dim).map(|i| (i as f64 * 0.11).sin()).collect();
            let labels = [1u32, 0, 0, 1];
            let mut out = vec![0.0; 4 * dim];
            let mut scatter = vec![0.0; 2];
            residuals(&mut out, &mut [], &x, &labels, &means, dim, &mut scatter);
            let mut want_scatter = [0.0f64; 2];
            for (i, &y) in labels.iter().enumerate() {
                for j in 0..dim {
                    let r = x[i * dim + j] - means[y as usize * dim + j];
                    assert_eq!(out[i * dim + j], r);
                    want_scatter[y as usize] += r * r;
                }
            }
            for c in 0..2 {
                approx::assert_relative_eq!(scatter[c], want_scatter[c], max_relative = 1e-14);
            }
        }
    }

    /// The fused order of the SIMD sums of squares, written with `f64::mul_add` (a correctly
    /// rounded fused multiply-add on every target).
    fn sum_sq_fused_reference(v: &[f64]) -> f64 {
        let mut acc = [0.0f64; LANES];
        let chunks = v.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for j in 0..LANES {
                acc[j] = c[j].mul_add(c[j], acc[j]);
            }
        }
        for (a, &r) in acc.iter_mut().zip(rest) {
            *a += r * r;
        }
        lane_sum(&acc)
    }

    /// A lower product (`R = Uᵀ` through strides, accumulating) computes the same blocks with
    /// every version, within rounding, and leaves the blocks above the diagonal bit for bit
    /// unchanged: the `gemm` route (aarch64's) skips exactly the micro-kernels' blocks.

    #[test]
    fn sums_of_squares_agree_across_instruction_sets() {
        for len in [0usize, 3, 16, 31, 512, 1000] {
            let v: Vec<f64> = (0..len).map(|i| (i as f64 * 0.7).sin()).collect();
            let want: f64 = v.iter().map(|x| x * x).sum();
            approx::assert_relative_eq!(sum_sq(&v), want, max_relative = 1e-14);
            approx::assert_relative_eq!(sum_sq_dispatched(&v), want, max_relative = 1e-14);
            // Every SIMD version gives the bits of the fused reference.
            let fused = sum_sq_fused_reference(&v);
            #[cfg(target_arch = "aarch64")]
            assert_eq!(sum_sq_neon(&v).to_bits(), fused.to_bits());
            #[cfg(target_arch = "x86_64")]
            if isa() != Isa::Baseline {
                assert_eq!(sum_sq_dispatched(&v).to_bits(), fused.to_bits());
            }
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA.
                    let got = unsafe { sum_sq_avx2(&v) };
                    assert_eq!(got.to_bits(), fused.to_bits());
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    let got = unsafe { sum_sq_avx512(&v) };
                    assert_eq!(got.to_bits(), fused.to_bits());
                }
            }
        }
    }

    #[test]
    fn top_two_agrees_with_two_scans() {
        // Against the plain definition: the first index of the maximum, then the maximum over
        // every other index; lengths around the 8 lanes, ties and −∞ included.
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % 7) as f64 - 3.0
        };
        for len in [1usize, 2, 7, 8, 9, 16, 17, 40, 480] {
            for _ in 0..20 {
                let base: Vec<f64> = (0..len).map(|_| next() * 0.5).collect();
                let z: Vec<f32> = (0..len).map(|_| next() as f32).collect();
                let s: Vec<f64> = base
                    .iter()
                    .zip(&z)
                    .map(|(a, b)| a + f64::from(*b))
                    .collect();
                let top = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let idx = s.iter().position(|&v| v == top).unwrap();
                let second = s
                    .iter()
                    .enumerate()
                    .filter(|&(c, _)| c != idx)
                    .map(|(_, &v)| v)
                    .fold(f64::NEG_INFINITY, f64::max);
                assert_eq!(top_two(&base, &z), (top, idx, second), "len {len}, s {s:?}");
            }
        }
        let none = [f64::NEG_INFINITY; 3];
        assert_eq!(
            top_two(&none, &[0.0; 3]),
            (f64::NEG_INFINITY, 0, f64::NEG_INFINITY)
        );
    }

    /// `max_sum_excluding` (every version: the dispatched one, and on aarch64 the NEON one)
    /// gives the bits of the portable loop and, up to the sign of a zero maximum, of a plain
    /// scan; NaN sums are ignored, `skip` in a full chunk, in the remainder and past the end.
    #[test]
    fn max_sum_excluding_agrees_with_a_scan() {
        for len in [0usize, 1, 7, 8, 9, 23, 64, 67] {
            let a: Vec<f64> = (0..len)
                .map(|i| match i % 11 {
                    3 => f64::NAN,
                    5 => -0.0,
                    _ => (i as f64 * 0.83).sin() * 10.0,
                })
                .collect();
            let b: Vec<f64> = (0..len + 3).map(|i| (i as f64 * 0.29).cos()).collect();
            for skip in [0, 3, 7, 8, 13, len.saturating_sub(1), len, len + 5] {
                let scan = (0..len)
                    .filter(|&c| c != skip && !(a[c] + b[c]).is_nan())
                    .map(|c| a[c] + b[c])
                    .fold(f64::NEG_INFINITY, f64::max);
                let portable = max_sum_excluding_portable(&a, &b, skip);
                assert_eq!(portable, scan, "len {len} skip {skip}");
                let got = max_sum_excluding(&a, &b, skip);
                assert_eq!(got.to_bits(), portable.to_bits(), "len {len} skip {skip}");
                #[cfg(target_arch = "aarch64")]
                assert_eq!(
                    max_sum_excluding_neon(&a, &b, skip).to_bits(),
                    portable.to_bits()
                );
            }
        }
    }

    #[test]
    fn lane_sum_adds_everything() {
        let acc: [f64; LANES] = std::array::from_fn(|i| (i + 1) as f64);
        assert_eq!(lane_sum(&acc), (LANES * (LANES + 1) / 2) as f64);
    }

    #[test]
    fn weighted_sum_of_squares_matches_the_plain_sum() {
        for len in [0usize, 1, 7, 8, 9, 99, 100] {
            let z: Vec<f64> = (0..len).map(|i| (i as f64 * 0.37).sin()).collect();
            let w: Vec<f64> = (0..len).map(|i| 1.0 + i as f64 / 7.0).collect();
            let plain: f64 = z.iter().zip(&w).map(|(z, w)| z * z * w).sum();
            let lanes = weighted_sum_sq(&z, &w);
            assert!(
                (lanes - plain).abs() <= 1e-14 * plain.abs().max(1.0),
                "{len}"
            );
        }
    }
}
