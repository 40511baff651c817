//! Inner loops of the passes over the data, compiled three times (AVX-512, AVX2 + FMA, and the
//! portable baseline) and chosen at run time by the CPU's features.
//!
//! On aarch64 the baseline is the only version and already has NEON (2 f64 lanes, fused
//! multiply-add): LLVM vectorises the element-wise bodies there (and, at opt-level 3 only, the
//! argmin); the sum of squares and `max_sum_excluding`, which it leaves scalar or unfused, have
//! NEON versions written with intrinsics, and [`PackedRhs`]'s product goes through `gemm`'s
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
//! squares and the matrix products of [`PackedRhs`]), which differs from the others only by
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

/// Rows of a micro-kernel product ([`PackedRhs::matmul`] works on multiples of it).
pub(crate) const MR: usize = 8;
/// Registers per full panel of a [`PackedRhs`]: 24 columns of f64, 48 of f32 (the last panel
/// may be one or two registers wide).
const PANEL_REGS: usize = 3;
/// Columns per full f64 panel.
#[cfg(test)]
const PANEL: usize = PANEL_REGS * 8;
/// Depth of a chunk of the products' inner dimension (a panel chunk is `KC × 24` f64 = 24 KiB).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86-64 versions use it
pub(crate) const KC: usize = 128;

/// The right-hand side `B` (`k × n`) of many products `Z = R·B`, packed once in the element
/// type `E` (f64, or f32 for a caller that certifies what it needs from an f32 product):
/// columns in panels of three 512-bit registers (24 f64 or 48 f32; the last one 1 or 2
/// registers wide when that covers the rest), each panel stored `k`-major
/// (`panel[l·w + j] = B[l][c₀ + j]`) and zero-padded to its width.
///
/// A product runs [`MR`] rows at a time with the `MR × 24` block of `Z` in registers (24
/// AVX-512 accumulators; AVX2 in 4 × 8 pieces), loops ordered as in BLIS: `k` in chunks
/// of [`KC`] (a panel chunk stays in L1 while every row group passes over it), then panels,
/// then row groups. `B` is packed once per pass, not once per product.
///
/// # Instruction sets
///
/// One dispatch point, in [`PackedRhs::matmul_prefetch`]: on x86-64 the AVX-512 or AVX2 + FMA
/// micro-kernels above (the portable loop only on a CPU without AVX2); on every other target
/// (aarch64 in particular) one `gemm` product per panel ([`crate::linalg::matmul_into`]),
/// whose NEON micro-kernels (fused multiply-adds, register-blocked) beat what LLVM makes of
/// the portable loop. Hand NEON kernels would save `gemm`'s repacking of each panel; they are
/// not written, as no aarch64 machine is at hand to measure them (the tests run under qemu:
/// `scripts/test-aarch64`).
pub(crate) struct PackedRhs<E: PackElem = f64> {
    k: usize,
    /// (first column, width) of each panel; panel `p` starts at `data[k · first column]`.
    panels: Vec<(usize, usize)>,
    data: Vec<E>,
}

/// An element type of [`PackedRhs`] products: its register width and micro-kernels.
pub(crate) trait PackElem:
    crate::linalg::Scalar
    + Copy
    + Default
    + Send
    + Sync
    + 'static
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
{
    /// Values per 512-bit register.
    const LANES: usize;
    /// The nearest value to `v` (rounding for f32).
    fn from_f64(v: f64) -> Self;
    /// The AVX-512 micro-kernel for a panel `regs` registers wide.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the pointers cover `MR` rows and `kc` panel rows (see
    /// [`kernel_avx512`]).
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel512(
        regs: usize,
        bp: *const Self,
        kc: usize,
        rg: *const Self,
        rs: usize,
        cs: usize,
        zg: *mut Self,
        zs: usize,
        accumulate: bool,
        prefetch: *const u8,
        prefetch_lines: usize,
    );
    /// The AVX2 micro-kernel: `MR / 2` rows × `LANES` columns (two 256-bit registers).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the pointers cover the block (see [`kernel_avx2`]).
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel256(
        bp: *const Self,
        width: usize,
        kc: usize,
        rg: *const Self,
        rs: usize,
        cs: usize,
        zg: *mut Self,
        zs: usize,
        accumulate: bool,
    );
}

impl PackElem for f64 {
    const LANES: usize = 8;
    fn from_f64(v: f64) -> Self {
        v
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn kernel512(
        regs: usize,
        bp: *const f64,
        kc: usize,
        rg: *const f64,
        rs: usize,
        cs: usize,
        zg: *mut f64,
        zs: usize,
        acc: bool,
        pf: *const u8,
        lines: usize,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match regs {
                3 => kernel_avx512::<3>(bp, kc, rg, rs, cs, zg, zs, acc, pf, lines),
                2 => kernel_avx512::<2>(bp, kc, rg, rs, cs, zg, zs, acc, pf, lines),
                _ => kernel_avx512::<1>(bp, kc, rg, rs, cs, zg, zs, acc, pf, lines),
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn kernel256(
        bp: *const f64,
        width: usize,
        kc: usize,
        rg: *const f64,
        rs: usize,
        cs: usize,
        zg: *mut f64,
        zs: usize,
        acc: bool,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { kernel_avx2(bp, width, kc, rg, rs, cs, zg, zs, acc) }
    }
}

impl PackElem for f32 {
    const LANES: usize = 16;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn kernel512(
        regs: usize,
        bp: *const f32,
        kc: usize,
        rg: *const f32,
        rs: usize,
        cs: usize,
        zg: *mut f32,
        zs: usize,
        acc: bool,
        pf: *const u8,
        lines: usize,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match regs {
                3 => kernel_avx512_f32::<3>(bp, kc, rg, rs, cs, zg, zs, acc, pf, lines),
                2 => kernel_avx512_f32::<2>(bp, kc, rg, rs, cs, zg, zs, acc, pf, lines),
                _ => kernel_avx512_f32::<1>(bp, kc, rg, rs, cs, zg, zs, acc, pf, lines),
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn kernel256(
        bp: *const f32,
        width: usize,
        kc: usize,
        rg: *const f32,
        rs: usize,
        cs: usize,
        zg: *mut f32,
        zs: usize,
        acc: bool,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { kernel_avx2_f32(bp, width, kc, rg, rs, cs, zg, zs, acc) }
    }
}

impl<E: PackElem> PackedRhs<E> {
    /// Packs the row-major `b` (`k × n`, row stride `stride`), converted to `E`.
    pub(crate) fn new(b: &[f64], k: usize, n: usize, stride: usize) -> Self {
        assert!(stride >= n && (k == 0 || b.len() >= (k - 1) * stride + n));
        let mut panels = Vec::new();
        let mut c0 = 0;
        while c0 < n {
            // Full panels, the last one 1 or 2 registers wide when that covers the rest.
            let width = (n - c0).div_ceil(E::LANES).min(PANEL_REGS) * E::LANES;
            panels.push((c0, width));
            c0 += width;
        }
        let mut data = vec![E::default(); c0 * k];
        for &(c0, width) in &panels {
            let cols = width.min(n - c0);
            for l in 0..k {
                let src = &b[l * stride + c0..][..cols];
                for (d, &v) in data[c0 * k + l * width..][..cols].iter_mut().zip(src) {
                    *d = E::from_f64(v);
                }
            }
        }
        Self { k, panels, data }
    }

    /// Row stride of the `Z` written by [`PackedRhs::matmul`] (`n` rounded up to the panels).
    pub(crate) fn z_stride(&self) -> usize {
        self.panels.last().map_or(0, |&(c0, w)| c0 + w)
    }

    /// `Z (rows × z_stride, row-major) = R · B` in `E` (`+=` when `accumulate`), for `rows` a
    /// multiple of [`MR`], where `R[i][l] = r[i·rs + l·cs]` (`rows × k`: row-major with
    /// `cs = 1`, or the transpose of a row-major matrix with `rs = 1`). Columns past `n` are
    /// zero (or unchanged when accumulating). With `lower`, blocks of `Z` entirely above the
    /// diagonal (`j > i`) are skipped (left unchanged): the product `UᵀU` of a symmetric
    /// result needs only its lower triangle.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul(
        &self,
        z: &mut [E],
        r: &[E],
        rs: usize,
        cs: usize,
        rows: usize,
        accumulate: bool,
        lower: bool,
    ) {
        self.matmul_prefetch::<f64>(z, r, rs, cs, rows, accumulate, lower, &[]);
    }

    /// [`PackedRhs::matmul`], prefetching `ahead` (what the caller reads next, e.g. the next
    /// rows of its input) into L2 meanwhile: one cache line per step of the AVX-512 micro-kernel,
    /// spread over the product, so that the memory traffic of the caller's next, memory-bound
    /// step overlaps this product's arithmetic. (Only the AVX-512 version prefetches; a
    /// prefetch never changes a result.)
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul_prefetch<T>(
        &self,
        z: &mut [E],
        r: &[E],
        rs: usize,
        cs: usize,
        rows: usize,
        accumulate: bool,
        lower: bool,
        ahead: &[T],
    ) {
        assert!(rows.is_multiple_of(MR));
        if rows == 0 || self.k == 0 {
            if !accumulate {
                z[..rows * self.z_stride()].fill(E::default());
            }
            return;
        }
        assert!(r.len() > (rows - 1) * rs + (self.k - 1) * cs);
        assert!(z.len() >= rows * self.z_stride());
        let job = Job {
            rs,
            cs,
            rows,
            accumulate,
            lower,
            ahead: ahead.as_ptr() as *const u8,
            ahead_lines: std::mem::size_of_val(ahead).div_ceil(64),
        };
        // The one dispatch point of the packed product (see "Instruction sets" on
        // [`PackedRhs`]): the hand micro-kernels on x86-64, `gemm`'s elsewhere.
        #[cfg(target_arch = "x86_64")]
        match isa() {
            // SAFETY: `isa()` checked the CPU's features; the asserts above bound every access.
            Isa::Avx512 => unsafe { self.matmul_avx512(z, r, job) },
            Isa::Avx2 => unsafe { self.matmul_avx2(z, r, job) },
            Isa::Baseline => self.matmul_baseline(z, r, job),
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.matmul_gemm(z, r, job);
    }

    /// The product through `gemm` ([`crate::linalg::matmul_into`]), one call per panel: the
    /// panel is a row-major `k × width` matrix, `R` a strided view, the panel's columns of `Z`
    /// a view with row stride `z_stride`. For a lower product the call covers only the row
    /// groups that [`Job::skips`] keeps (the skipped groups precede them), so the same blocks
    /// as in the micro-kernel versions are left unchanged. `gemm` packs the panel again on
    /// every call (the cost that the hand kernels avoid), but runs its NEON micro-kernels on
    /// aarch64. Rounding: fused multiply-adds in `gemm`'s order, within the bound of
    /// [`crate::linalg::product`].
    #[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
    fn matmul_gemm(&self, z: &mut [E], r: &[E], job: Job) {
        use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
        let (k, zs) = (self.k, self.z_stride());
        for &(c0, width) in &self.panels {
            let first = (0..job.rows)
                .step_by(MR)
                .find(|&g| !job.skips(c0, g))
                .unwrap_or(job.rows);
            let m = job.rows - first;
            if m == 0 {
                continue;
            }
            // The asserts of `matmul_prefetch` (`r` covers `(rows − 1)·rs + (k − 1)·cs`, `z`
            // covers `rows × z_stride`, and `c0 + width ≤ z_stride`) make these views valid.
            let a = ArrayView2::from_shape((m, k).strides((job.rs, job.cs)), &r[first * job.rs..])
                .expect("R covers its rows (asserted by matmul_prefetch)");
            let b = ArrayView2::from_shape((k, width), &self.data[c0 * k..(c0 + width) * k])
                .expect("a panel holds k × width values");
            let dst =
                ArrayViewMut2::from_shape((m, width).strides((zs, 1)), &mut z[first * zs + c0..])
                    .expect("Z covers rows × z_stride (asserted by matmul_prefetch)");
            crate::linalg::matmul_into(dst, job.accumulate, a, b)
                .expect("the three views have fitting shapes by construction");
        }
    }

    #[cfg_attr(not(any(target_arch = "x86_64", test)), allow(dead_code))]
    fn matmul_baseline(&self, z: &mut [E], r: &[E], job: Job) {
        let (k, zs) = (self.k, self.z_stride());
        for &(c0, width) in &self.panels {
            let bp = &self.data[c0 * k..(c0 + width) * k];
            for i in 0..job.rows {
                if job.skips(c0, i - i % MR) {
                    continue;
                }
                let out = &mut z[i * zs + c0..][..width];
                let mut acc = [E::default(); PANEL_REGS * 16];
                if job.accumulate {
                    acc[..width].copy_from_slice(out);
                }
                for (l, brow) in bp.chunks_exact(width).enumerate() {
                    let a = r[i * job.rs + l * job.cs];
                    for (c, &bv) in acc.iter_mut().zip(brow) {
                        *c += a * bv;
                    }
                }
                out.copy_from_slice(&acc[..width]);
            }
        }
    }

    /// The blocked loops shared by the SIMD versions: `k` in chunks of [`KC`], then panels,
    /// then groups of [`MR`] rows (skipping blocks above the diagonal for a lower product).
    /// Calls `f(c0, width, g, k0, kc, accumulate)` for each block.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86-64 versions use it
    fn for_each_block(&self, job: Job, mut f: impl FnMut(usize, usize, usize, usize, usize, bool)) {
        for k0 in (0..self.k).step_by(KC) {
            let kc = KC.min(self.k - k0);
            let accumulate = job.accumulate || k0 > 0;
            for &(c0, width) in &self.panels {
                for g in (0..job.rows).step_by(MR) {
                    if !job.skips(c0, g) {
                        f(c0, width, g, k0, kc, accumulate);
                    }
                }
            }
        }
    }

    /// # Safety
    /// The CPU has AVX-512F; shapes checked by [`PackedRhs::matmul`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn matmul_avx512(&self, z: &mut [E], r: &[E], job: Job) {
        let (k, zs) = (self.k, self.z_stride());
        let (rp, zp, dp) = (r.as_ptr(), z.as_mut_ptr(), self.data.as_ptr());
        // Lines of `ahead` per micro-kernel call, at most one per step.
        let calls = self.k.div_ceil(KC) * self.panels.len() * job.rows.div_ceil(MR);
        let per_call = job.ahead_lines.div_ceil(calls.max(1)).min(KC);
        let mut next_line = 0;
        self.for_each_block(job, |c0, width, g, k0, kc, acc| {
            let lines = per_call.min(kc).min(job.ahead_lines - next_line);
            let pf = job.ahead.wrapping_add(64 * next_line);
            next_line += lines;
            // SAFETY: the panel spans data[c0·k ..][.. width·k]; rows g .. g + MR of r and z
            // are in bounds by the asserts of `matmul`; the caller guarantees AVX-512F.
            // Prefetches touch `ahead` only and never fault.
            unsafe {
                let bp = dp.add(c0 * k + k0 * width);
                let rg = rp.add(g * job.rs + k0 * job.cs);
                let zg = zp.add(g * zs + c0);
                let (rs, cs, regs) = (job.rs, job.cs, width / E::LANES);
                E::kernel512(regs, bp, kc, rg, rs, cs, zg, zs, acc, pf, lines);
            }
        });
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; shapes checked by [`PackedRhs::matmul`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn matmul_avx2(&self, z: &mut [E], r: &[E], job: Job) {
        const HALF: usize = MR / 2;
        let (k, zs, l) = (self.k, self.z_stride(), E::LANES);
        let (rp, zp, dp) = (r.as_ptr(), z.as_mut_ptr(), self.data.as_ptr());
        self.for_each_block(job, |c0, width, g, k0, kc, acc| {
            for (half, piece) in (0..2).flat_map(|h| (0..width / l).map(move |e| (h, e))) {
                // SAFETY: as in `matmul_avx512`; MR/2 rows and `LANES` columns of the panel;
                // the caller guarantees AVX2 and FMA.
                unsafe {
                    let bp = dp.add(c0 * k + k0 * width + l * piece);
                    let rg = rp.add((g + HALF * half) * job.rs + k0 * job.cs);
                    let zg = zp.add((g + HALF * half) * zs + c0 + l * piece);
                    E::kernel256(bp, width, kc, rg, job.rs, job.cs, zg, zs, acc);
                }
            }
        });
    }
}

/// The shape of one [`PackedRhs::matmul`].
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86-64 versions use it
#[derive(Clone, Copy)]
struct Job {
    rs: usize,
    cs: usize,
    rows: usize,
    accumulate: bool,
    lower: bool,
    /// Bytes to prefetch meanwhile (see [`PackedRhs::matmul_prefetch`]), in 64-byte lines.
    ahead: *const u8,
    ahead_lines: usize,
}

impl Job {
    /// Whether the block of rows `g .. g + MR` and the panel starting at column `c0` lies
    /// entirely above the diagonal (skipped for a lower-triangular product).
    #[inline]
    fn skips(&self, c0: usize, g: usize) -> bool {
        self.lower && c0 > g + MR - 1
    }
}

/// Defines the AVX-512 and AVX2 micro-kernels of [`PackedRhs`] for one element type, from its
/// intrinsics (`$l512`/`$l256` values per 512/256-bit register):
///
/// * `$k512::<W>`: `MR` rows × `W` registers of columns, `Z (+)= R · B_panel` over `kc` values
///   of the inner dimension, prefetching `prefetch_lines` lines of `prefetch` on the way;
/// * `$k256`: `MR / 2` rows × 2 registers of columns (panel row stride `width`).
macro_rules! product_kernels {
    (
        $t:ty, $k512:ident, $k256:ident, $l512:expr, $l256:expr,
        [$zero512:ident, $load512:ident, $set512:ident, $fma512:ident, $store512:ident],
        [$zero256:ident, $load256:ident, $set256:ident, $fma256:ident, $store256:ident]
    ) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $k512<const W: usize>(
            bp: *const $t,
            kc: usize,
            rg: *const $t,
            rs: usize,
            cs: usize,
            zg: *mut $t,
            zs: usize,
            accumulate: bool,
            prefetch: *const u8,
            prefetch_lines: usize,
        ) {
            use std::arch::x86_64::*;
            const L: usize = $l512;
            // SAFETY (whole body): the caller guarantees MR rows of r and z and kc rows of the
            // panel.
            unsafe {
                let mut acc = [[$zero512(); W]; MR];
                if accumulate {
                    for (i, a) in acc.iter_mut().enumerate() {
                        for (w, v) in a.iter_mut().enumerate() {
                            *v = $load512(zg.add(i * zs + L * w));
                        }
                    }
                }
                for l in 0..kc {
                    if l < prefetch_lines {
                        _mm_prefetch::<_MM_HINT_T1>(prefetch.wrapping_add(64 * l) as *const i8);
                    }
                    let mut b = [$zero512(); W];
                    for (w, v) in b.iter_mut().enumerate() {
                        *v = $load512(bp.add(l * L * W + L * w));
                    }
                    for (i, a) in acc.iter_mut().enumerate() {
                        let x = $set512(*rg.add(i * rs + l * cs));
                        for (v, bw) in a.iter_mut().zip(&b) {
                            *v = $fma512(x, *bw, *v);
                        }
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    for (w, v) in a.iter().enumerate() {
                        $store512(zg.add(i * zs + L * w), *v);
                    }
                }
            }
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $k256(
            bp: *const $t,
            width: usize,
            kc: usize,
            rg: *const $t,
            rs: usize,
            cs: usize,
            zg: *mut $t,
            zs: usize,
            accumulate: bool,
        ) {
            use std::arch::x86_64::*;
            const ROWS: usize = MR / 2;
            const L: usize = $l256;
            // SAFETY (whole body): the caller guarantees MR / 2 rows of r and z and kc rows of
            // the panel.
            unsafe {
                let mut acc = [[$zero256(); 2]; ROWS];
                if accumulate {
                    for (i, a) in acc.iter_mut().enumerate() {
                        a[0] = $load256(zg.add(i * zs));
                        a[1] = $load256(zg.add(i * zs + L));
                    }
                }
                for l in 0..kc {
                    let b0 = $load256(bp.add(l * width));
                    let b1 = $load256(bp.add(l * width + L));
                    for (i, a) in acc.iter_mut().enumerate() {
                        let x = $set256(*rg.add(i * rs + l * cs));
                        a[0] = $fma256(x, b0, a[0]);
                        a[1] = $fma256(x, b1, a[1]);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    $store256(zg.add(i * zs), a[0]);
                    $store256(zg.add(i * zs + L), a[1]);
                }
            }
        }
    };
}

product_kernels!(
    f64,
    kernel_avx512,
    kernel_avx2,
    8,
    4,
    [
        _mm512_setzero_pd,
        _mm512_loadu_pd,
        _mm512_set1_pd,
        _mm512_fmadd_pd,
        _mm512_storeu_pd
    ],
    [
        _mm256_setzero_pd,
        _mm256_loadu_pd,
        _mm256_set1_pd,
        _mm256_fmadd_pd,
        _mm256_storeu_pd
    ]
);
product_kernels!(
    f32,
    kernel_avx512_f32,
    kernel_avx2_f32,
    16,
    8,
    [
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps
    ],
    [
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps
    ]
);

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

    /// f32 products (as the certified logits of the metric pass use them) are within the
    /// rounding bound `1.01 (k + 3) 2⁻²⁴ Σ_l |r_l b_l|` of the exact f64 product, for every
    /// compiled version and for panel remainders of 1 and 2 registers.
    #[test]
    fn f32_products_are_within_the_f32_bound() {
        for &(rows, k, n) in &[(8, 37, 10), (16, 300, 100), (24, 5, 49), (8, 129, 17)] {
            let b: Vec<f64> = (0..k * n)
                .map(|i| (i * 7919 % 1000) as f64 / 500.0 - 1.0)
                .collect();
            let r: Vec<f64> = (0..rows * k)
                .map(|i| (i * 104_729 % 997) as f64 / 498.0 - 1.0)
                .collect();
            let r32: Vec<f32> = r.iter().map(|&v| v as f32).collect();
            let packed = PackedRhs::<f32>::new(&b, k, n, n);
            let zs = packed.z_stride();
            let job = Job {
                rs: k,
                cs: 1,
                rows,
                accumulate: false,
                lower: false,
                ahead: std::ptr::null(),
                ahead_lines: 0,
            };
            let mut results = Vec::new();
            let mut z = vec![f32::NAN; rows * zs];
            packed.matmul(&mut z, &r32, k, 1, rows, false, false);
            results.push(z);
            let mut z0 = vec![f32::NAN; rows * zs];
            packed.matmul_baseline(&mut z0, &r32, job);
            results.push(z0);
            let mut zg = vec![f32::NAN; rows * zs];
            packed.matmul_gemm(&mut zg, &r32, job);
            results.push(zg);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                let mut z2 = vec![f32::NAN; rows * zs];
                // SAFETY: the CPU has AVX2 and FMA; shapes as for `matmul`.
                unsafe { packed.matmul_avx2(&mut z2, &r32, job) };
                results.push(z2);
            }
            let u = f64::powi(2.0, -24);
            for z in &results {
                for i in 0..rows {
                    for j in 0..zs {
                        let got = f64::from(z[i * zs + j]);
                        if j >= n {
                            assert_eq!(got, 0.0);
                            continue;
                        }
                        let exact: f64 = (0..k).map(|l| r[i * k + l] * b[l * n + j]).sum();
                        let mag: f64 = (0..k).map(|l| (r[i * k + l] * b[l * n + j]).abs()).sum();
                        let bound = 1.01 * (k as f64 + 3.0) * u * mag;
                        assert!((got - exact).abs() <= bound, "{got} vs {exact} ± {bound}");
                    }
                }
            }
        }
    }

    #[test]
    fn packed_matmul_matches_naive_product() {
        for (k, n) in [
            (1usize, 1usize),
            (9, 5),
            (37, 16),
            (20, 33),
            (300, 20),
            (130, 24),
            (5, 8),
        ] {
            let b: Vec<f64> = (0..k * (n + 3)).map(|i| (i as f64 * 0.61).sin()).collect();
            let packed = PackedRhs::new(&b, k, n, n + 3);
            let r_stride = k + 2;
            let rows = 2 * MR;
            let r: Vec<f64> = (0..rows * r_stride)
                .map(|i| (i as f64 * 0.29).cos())
                .collect();
            let mut z = vec![f64::NAN; rows * packed.z_stride()];
            packed.matmul(&mut z, &r, r_stride, 1, rows, false, false);
            for i in 0..rows {
                for j in 0..packed.z_stride() {
                    let want: f64 = if j < n {
                        (0..k)
                            .map(|l| r[i * r_stride + l] * b[l * (n + 3) + j])
                            .sum()
                    } else {
                        0.0
                    };
                    approx::assert_relative_eq!(
                        z[i * packed.z_stride() + j],
                        want,
                        epsilon = 1e-13
                    );
                }
            }
            // Every compiled version gives the same product (up to fused rounding).
            let mut z0 = vec![f64::NAN; rows * packed.z_stride()];
            let job = Job {
                rs: r_stride,
                cs: 1,
                rows,
                accumulate: false,
                lower: false,
                ahead: std::ptr::null(),
                ahead_lines: 0,
            };
            packed.matmul_baseline(&mut z0, &r, job);
            let mut zg = vec![f64::NAN; rows * packed.z_stride()];
            packed.matmul_gemm(&mut zg, &r, job);
            for (a, b) in zg.iter().zip(&z0) {
                approx::assert_relative_eq!(a, b, epsilon = 1e-13);
            }
            // Prefetching (here: of `r` itself, more lines than the product has steps) changes
            // no bit of the result.
            let mut zp = vec![f64::NAN; rows * packed.z_stride()];
            let ahead: Vec<f32> = vec![1.0; 64 * 1024];
            packed.matmul_prefetch(&mut zp, &r, r_stride, 1, rows, false, false, &ahead);
            assert!(zp.iter().zip(&z).all(|(a, b)| a.to_bits() == b.to_bits()));
            for (a, b) in z.iter().zip(&z0) {
                approx::assert_relative_eq!(a, b, epsilon = 1e-13);
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                let mut z2 = vec![f64::NAN; rows * packed.z_stride()];
                // SAFETY: the CPU has AVX2 and FMA; shapes as for `matmul`.
                unsafe { packed.matmul_avx2(&mut z2, &r, job) };
                for (a, b) in z2.iter().zip(&z0) {
                    approx::assert_relative_eq!(a, b, epsilon = 1e-13);
                }
            }
        }
    }

    #[test]
    fn lower_gram_of_transposed_rows_accumulates() {
        // S += UᵀU over two blocks, lower triangle, with R = Uᵀ read through strides.
        let (b, d) = (7usize, 29usize);
        let d_pad = d.div_ceil(MR) * MR;
        let mut z = vec![0.0f64; d_pad * d.div_ceil(PANEL) * PANEL];
        let mut want = vec![0.0f64; d * d];
        let mut zs = 0;
        for block in 0..2 {
            let mut u = vec![0.0f64; b * d_pad];
            for l in 0..b {
                for j in 0..d {
                    u[l * d_pad + j] = ((block * 31 + l * 7 + j) as f64 * 0.37).sin();
                }
            }
            for i in 0..d {
                for j in 0..d {
                    want[i * d + j] += (0..b)
                        .map(|l| u[l * d_pad + i] * u[l * d_pad + j])
                        .sum::<f64>();
                }
            }
            let packed = PackedRhs::new(&u, b, d, d_pad);
            zs = packed.z_stride();
            packed.matmul(&mut z, &u, 1, d_pad, d_pad, true, true);
        }
        for i in 0..d {
            for j in 0..=i {
                approx::assert_relative_eq!(z[i * zs + j], want[i * d + j], epsilon = 1e-12);
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
    fn lower_products_skip_the_same_blocks_in_every_version() {
        for (b, d) in [(5usize, 8usize), (7, 29), (3, 70), (130, 50)] {
            let d_pad = d.div_ceil(MR) * MR;
            let u: Vec<f64> = (0..b * d_pad).map(|i| (i as f64 * 0.43).sin()).collect();
            let packed = PackedRhs::new(&u, b, d, d_pad);
            let zs = packed.z_stride();
            let start: Vec<f64> = (0..d_pad * zs).map(|i| i as f64 * 0.25 - 3.0).collect();
            let job = Job {
                rs: 1,
                cs: d_pad,
                rows: d_pad,
                accumulate: true,
                lower: true,
                ahead: std::ptr::null(),
                ahead_lines: 0,
            };
            let mut z0 = start.clone();
            packed.matmul_baseline(&mut z0, &u, job);
            let mut zg = start.clone();
            packed.matmul_gemm(&mut zg, &u, job);
            let mut zd = start.clone();
            packed.matmul(&mut zd, &u, 1, d_pad, d_pad, true, true);
            for i in 0..d_pad {
                for j in 0..zs {
                    let at = i * zs + j;
                    let want = start[at]
                        + if j < d {
                            (0..b).map(|l| u[l * d_pad + i] * u[l * d_pad + j]).sum()
                        } else {
                            0.0
                        };
                    let skipped = job.skips(j - j % PANEL, i - i % MR);
                    for z in [&z0, &zg, &zd] {
                        if skipped {
                            assert_eq!(z[at].to_bits(), start[at].to_bits(), "({i}, {j})");
                        } else {
                            approx::assert_relative_eq!(
                                z[at],
                                want,
                                epsilon = 1e-12,
                                max_relative = 1e-13
                            );
                        }
                    }
                }
            }
        }
    }

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
}
