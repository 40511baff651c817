//! neural-collapse patch: the multinomial cost and gradient of an f64 problem in **one** blocked,
//! parallel pass over `X`.
//!
//! Upstream evaluates `H = XW + b` with one matrix product and `Xᵀ(P − Y)` with another; each
//! product repacks the whole `n × d` matrix (`matrixmultiply` packs both operands), and with
//! `C` ≈ 10 columns the packing, not the arithmetic, took ~60 % of a fit. Here `X` is read once
//! per evaluation, in blocks of [`BLOCK`] rows that stay in cache between the two products:
//!
//! ```text
//! for each block X_b:   H_b = X_b W + b                   (row · column dot products)
//!                       ℓ  += Σ_i Σ_c y_ic (lse_i − h_ic), lse_i = m_i + ln Σ_c exp(h_ic − m_i)
//!                       D_b = softmax(H_b) − Y_b           (m_i = max_c h_ic)
//!                       Gᵀ += D_bᵀ X_b,   g_b += Σ_i D_b,i
//! ```
//!
//! Values are f64 throughout. The rows are split into halves recursively down to [`TASK`]-row
//! leaves (`rayon::join`), and the partial sums are added back along the same tree, so the result
//! depends only on `n`, never on the number of threads. The two products have AVX-512 and
//! AVX2 + FMA versions (intrinsics) and a plain-Rust baseline, chosen at run time; each keeps
//! independent partial sums per lane, so the versions differ only in rounding (lane count,
//! fused multiply-adds), not in the result's meaning.

use ndarray::{Array2, ArrayView2};
use std::convert::TryInto;

/// Independent partial sums per dot product (one AVX-512 register of f64).
const LANES: usize = 8;
/// Rows per block: the logits and the gradient terms of a block are computed while its rows are
/// in cache (64 rows × 512 features × 8 bytes = 256 KiB).
const BLOCK: usize = 64;
/// Rows of a leaf of the parallel split.
const TASK: usize = 2048;

/// Kernel levels of the `ISA` parameter: the plain-Rust baseline (no fused multiply-add), and
/// AVX2 + FMA or AVX-512 (intrinsics for the two products, see [`avx2`] and [`avx512`]).
const PORTABLE: u8 = 0;
const AVX2: u8 = 1;
const AVX512: u8 = 2;

/// `(Σ_i Σ_c −y_ic log p_ic, [Xᵀ(P − Y); Σ_i (P − Y)_i])` for `X` (`n × d`, row-major), one-hot
/// (or any) targets `Y` (`n × c`, row-major) and parameters `w` (`d × c`, or `(d + 1) × c` with
/// the intercept as the last row). The gradient has the shape of `w`; the penalty is not
/// included.
pub(crate) fn multinomial_loss_grad<E: Elem>(
    x: &[E],
    y: &[f64],
    w: ArrayView2<'_, f64>,
    n: usize,
    d: usize,
) -> (f64, Array2<f64>) {
    multinomial_loss_grad_with(best_isa(), x, y, w, n, d)
}

/// The best [`ISA`](PORTABLE) level this CPU runs.
fn best_isa() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx2") && has!("fma") {
            return AVX512;
        }
        if has!("avx2") && has!("fma") {
            return AVX2;
        }
    }
    PORTABLE
}

/// [`multinomial_loss_grad`] with the kernels of level `isa` (at most [`best_isa`]).
fn multinomial_loss_grad_with<E: Elem>(
    isa: u8,
    x: &[E],
    y: &[f64],
    w: ArrayView2<'_, f64>,
    n: usize,
    d: usize,
) -> (f64, Array2<f64>) {
    assert!(
        isa <= best_isa(),
        "this CPU does not run kernel level {}",
        isa
    );
    let c = w.ncols();
    let intercept = w.nrows() == d + 1;
    debug_assert!(w.nrows() == d || intercept);
    debug_assert_eq!(x.len(), n * d);
    debug_assert_eq!(y.len(), n * c);
    // Wᵀ, one contiguous row of d weights per class.
    let mut wt = vec![0.0; c * d];
    for j in 0..d {
        for k in 0..c {
            wt[k * d + j] = w[[j, k]];
        }
    }
    let b: Vec<f64> = if intercept {
        w.row(d).to_vec()
    } else {
        vec![0.0; c]
    };
    let problem = Problem {
        x,
        y,
        wt: &wt,
        b: &b,
        d,
        c,
        isa,
    };
    let part = problem.split(0, n);
    let mut grad = Array2::<f64>::zeros(w.raw_dim());
    for j in 0..d {
        for k in 0..c {
            grad[[j, k]] = part.gt[k * d + j];
        }
    }
    if intercept {
        for k in 0..c {
            grad[[d, k]] = part.gb[k];
        }
    }
    (part.loss, grad)
}

struct Problem<'a, E> {
    /// The kernel level (≤ [`best_isa`]).
    isa: u8,
    x: &'a [E],
    y: &'a [f64],
    wt: &'a [f64],
    b: &'a [f64],
    d: usize,
    c: usize,
}

/// An element of `X`: f64, or f32 converted (exactly) to f64 as it is loaded.
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    /// `true` for f32 (the AVX-512 loads convert), `false` for f64.
    const IS_F32: bool;
    /// The value as f64 (exact).
    fn f64(self) -> f64;
}

impl Elem for f64 {
    const IS_F32: bool = false;
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
}

impl Elem for f32 {
    const IS_F32: bool = true;
    #[inline(always)]
    fn f64(self) -> f64 {
        f64::from(self)
    }
}

/// A range of bytes to prefetch, one cache line at a time, while a kernel computes.
pub(crate) struct Prefetch {
    next: *const u8,
    end: *const u8,
}

/// Partial sums over a range of rows.
struct Partial {
    loss: f64,
    /// `Σ_i (P − Y)_ik x_ij` at `k · d + j`.
    gt: Vec<f64>,
    /// `Σ_i (P − Y)_ik`.
    gb: Vec<f64>,
}

impl Partial {
    fn add(mut self, other: Partial) -> Partial {
        self.loss += other.loss;
        for (a, b) in self.gt.iter_mut().zip(&other.gt) {
            *a += *b;
        }
        for (a, b) in self.gb.iter_mut().zip(&other.gb) {
            *a += *b;
        }
        self
    }
}

impl<E: Elem> Problem<'_, E> {
    /// Rows `lo..hi`, split in halves (at multiples of [`BLOCK`]) down to [`TASK`] rows.
    fn split(&self, lo: usize, hi: usize) -> Partial {
        if hi - lo <= TASK {
            return self.leaf(lo, hi);
        }
        let mid = lo + ((hi - lo) / 2).div_ceil(BLOCK) * BLOCK;
        let (a, b) = rayon::join(|| self.split(lo, mid), || self.split(mid, hi));
        a.add(b)
    }

    fn leaf(&self, lo: usize, hi: usize) -> Partial {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512<E: Elem>(p: &Problem<'_, E>, lo: usize, hi: usize) -> Partial {
                p.leaf_body::<AVX512>(lo, hi)
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2<E: Elem>(p: &Problem<'_, E>, lo: usize, hi: usize) -> Partial {
                p.leaf_body::<AVX2>(lo, hi)
            }
            match self.isa {
                // SAFETY: `isa ≤ best_isa()`, so the CPU has the features.
                AVX512 => return unsafe { avx512(self, lo, hi) },
                // SAFETY: as above.
                AVX2 => return unsafe { avx2(self, lo, hi) },
                _ => {}
            }
        }
        self.leaf_body::<PORTABLE>(lo, hi)
    }

    #[inline(always)]
    fn leaf_body<const ISA: u8>(&self, lo: usize, hi: usize) -> Partial {
        let (d, c) = (self.d, self.c);
        let mut part = Partial {
            loss: 0.0,
            gt: vec![0.0; c * d],
            gb: vec![0.0; c],
        };
        let mut h = vec![0.0; BLOCK * c];
        let mut ex = vec![0.0; c];
        let mut start = lo;
        while start < hi {
            let m = BLOCK.min(hi - start);
            let xb = &self.x[start * d..(start + m) * d];
            let yb = &self.y[start * c..(start + m) * c];
            let h = &mut h[..m * c];
            logits::<E, ISA>(xb, m, d, self.wt, c, h);
            for (hr, yr) in h.chunks_exact_mut(c).zip(yb.chunks_exact(c)) {
                let mut max = f64::NEG_INFINITY;
                for (v, &bk) in hr.iter_mut().zip(self.b) {
                    *v += bk;
                    max = max.max(*v);
                }
                // One exp per logit: e_k = exp(h_k − max), p_k = e_k / Σ e.
                let mut sum = 0.0;
                for (e, &v) in ex.iter_mut().zip(hr.iter()) {
                    *e = (v - max).exp();
                    sum += *e;
                }
                let lse = max + sum.ln();
                let inv = 1.0 / sum;
                for (((v, &yk), gb), &e) in hr.iter_mut().zip(yr).zip(part.gb.iter_mut()).zip(&ex) {
                    part.loss += yk * (lse - *v);
                    let dk = e * inv - yk;
                    *v = dk;
                    *gb += dk;
                }
            }
            // The next block (within this leaf) is prefetched into L2 while this one's gradient
            // terms are computed from cache.
            let next_end = (start + m + BLOCK).min(hi);
            let mut pf = Prefetch {
                next: self.x[(start + m) * d..].as_ptr() as *const u8,
                end: self.x[next_end * d..].as_ptr() as *const u8,
            };
            grad_terms::<E, ISA>(xb, m, d, h, c, &mut part.gt, &mut pf);
            start += m;
        }
        part
    }
}

/// `h[i·c + k] = x_i · wt_k` for the `m` rows of `x`, in tiles of 4 rows × 4 classes. The
/// classes are the outer loop: the 4 rows of `Wᵀ` of a tile stay in L1 while the block's rows
/// (in L2) stream past them.
#[inline(always)]
fn logits<E: Elem, const ISA: u8>(
    x: &[E],
    m: usize,
    d: usize,
    wt: &[f64],
    c: usize,
    h: &mut [f64],
) {
    // Classes per tile: 4 (AVX-512 and portable), 2 with AVX2's 16 registers.
    let tile = if ISA == AVX2 { 2 } else { 4 };
    let mut k = 0;
    while k < c {
        let q = (c - k).min(tile);
        let mut i = 0;
        while i + 4 <= m {
            logit_rows::<E, 4, ISA>(x, i, d, wt, k, q, c, h);
            i += 4;
        }
        while i < m {
            logit_rows::<E, 1, ISA>(x, i, d, wt, k, q, c, h);
            i += 1;
        }
        k += q;
    }
}

/// The tile of `R` rows from `i` and `q ≤ 4` classes from `k`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn logit_rows<E: Elem, const R: usize, const ISA: u8>(
    x: &[E],
    i: usize,
    d: usize,
    wt: &[f64],
    k: usize,
    q: usize,
    c: usize,
    h: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    if ISA == AVX512 {
        // SAFETY: `ISA == AVX512` only inside the AVX-512 version of the leaf.
        unsafe {
            match q {
                1 => avx512::logit_tile::<E, R, 1>(x, i, d, wt, k, c, h),
                2 => avx512::logit_tile::<E, R, 2>(x, i, d, wt, k, c, h),
                3 => avx512::logit_tile::<E, R, 3>(x, i, d, wt, k, c, h),
                _ => avx512::logit_tile::<E, R, 4>(x, i, d, wt, k, c, h),
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if ISA == AVX2 {
        // SAFETY: `ISA == AVX2` only inside the AVX2 + FMA version of the leaf.
        unsafe {
            match q {
                1 => avx2::logit_tile::<E, R, 1>(x, i, d, wt, k, c, h),
                _ => avx2::logit_tile::<E, R, 2>(x, i, d, wt, k, c, h),
            }
        }
        return;
    }
    match q {
        1 => logit_tile::<E, R, 1>(x, i, d, wt, k, c, h),
        2 => logit_tile::<E, R, 2>(x, i, d, wt, k, c, h),
        3 => logit_tile::<E, R, 3>(x, i, d, wt, k, c, h),
        _ => logit_tile::<E, R, 4>(x, i, d, wt, k, c, h),
    }
}

#[inline(always)]
fn logit_tile<E: Elem, const R: usize, const Q: usize>(
    x: &[E],
    i: usize,
    d: usize,
    wt: &[f64],
    k: usize,
    c: usize,
    h: &mut [f64],
) {
    let xi = &x[i * d..(i + R) * d];
    let wk = &wt[k * d..(k + Q) * d];
    let mut acc = [[[0.0f64; LANES]; Q]; R];
    let full = d - d % LANES;
    let mut j = 0;
    while j < full {
        for r in 0..R {
            let xr = &xi[r * d + j..r * d + j + LANES];
            for q in 0..Q {
                let wq = &wk[q * d + j..q * d + j + LANES];
                let a = &mut acc[r][q];
                for l in 0..LANES {
                    a[l] += xr[l].f64() * wq[l];
                }
            }
        }
        j += LANES;
    }
    for r in 0..R {
        for q in 0..Q {
            let a = &acc[r][q];
            // Fixed pairwise order: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
            let mut s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
            for jj in full..d {
                s += xi[r * d + jj].f64() * wk[q * d + jj];
            }
            h[(i + r) * c + k + q] = s;
        }
    }
}

/// `gt[k·d + j] += Σ_i dm[i·c + k] x[i·d + j]` over the `m` rows, in tiles of 4 classes ×
/// 2·[`LANES`] features whose sums stay in registers while the rows stream by.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn grad_terms<E: Elem, const ISA: u8>(
    x: &[E],
    m: usize,
    d: usize,
    dm: &[f64],
    c: usize,
    gt: &mut [f64],
    pf: &mut Prefetch,
) {
    #[cfg(target_arch = "x86_64")]
    if ISA == AVX512 {
        let mut k = 0;
        while k < c {
            // SAFETY: `ISA == AVX512` only inside the AVX-512 version of the leaf.
            unsafe {
                match c - k {
                    1 => avx512::grad_classes::<E, 1>(x, m, d, dm, c, k, gt, pf),
                    2 => avx512::grad_classes::<E, 2>(x, m, d, dm, c, k, gt, pf),
                    3 => avx512::grad_classes::<E, 3>(x, m, d, dm, c, k, gt, pf),
                    _ => avx512::grad_classes::<E, 4>(x, m, d, dm, c, k, gt, pf),
                }
            }
            k += 4;
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if ISA == AVX2 {
        let mut k = 0;
        while k < c {
            // SAFETY: `ISA == AVX2` only inside the AVX2 + FMA version of the leaf.
            unsafe {
                match c - k {
                    1 => avx2::grad_classes::<E, 1>(x, m, d, dm, c, k, gt, pf),
                    2 => avx2::grad_classes::<E, 2>(x, m, d, dm, c, k, gt, pf),
                    3 => avx2::grad_classes::<E, 3>(x, m, d, dm, c, k, gt, pf),
                    _ => avx2::grad_classes::<E, 4>(x, m, d, dm, c, k, gt, pf),
                }
            }
            k += 4;
        }
        return;
    }
    let mut k = 0;
    while k + 4 <= c {
        grad_classes::<E, 4>(x, m, d, dm, c, k, gt);
        k += 4;
    }
    while k + 2 <= c {
        grad_classes::<E, 2>(x, m, d, dm, c, k, gt);
        k += 2;
    }
    while k < c {
        grad_classes::<E, 1>(x, m, d, dm, c, k, gt);
        k += 1;
    }
}

#[inline(always)]
fn grad_classes<E: Elem, const Q: usize>(
    x: &[E],
    m: usize,
    d: usize,
    dm: &[f64],
    c: usize,
    k: usize,
    gt: &mut [f64],
) {
    const W: usize = 2 * LANES;
    let full = d - d % W;
    let mut j = 0;
    while j < full {
        let mut acc = [[0.0f64; W]; Q];
        for (q, a) in acc.iter_mut().enumerate() {
            a.copy_from_slice(&gt[(k + q) * d + j..(k + q) * d + j + W]);
        }
        for i in 0..m {
            let xv: &[E; W] = x[i * d + j..i * d + j + W].try_into().unwrap();
            let dv: &[f64] = &dm[i * c + k..i * c + k + Q];
            for q in 0..Q {
                for l in 0..W {
                    acc[q][l] += dv[q] * xv[l].f64();
                }
            }
        }
        for (q, a) in acc.iter().enumerate() {
            gt[(k + q) * d + j..(k + q) * d + j + W].copy_from_slice(a);
        }
        j += W;
    }
    for jj in full..d {
        for q in 0..Q {
            let mut s = gt[(k + q) * d + jj];
            for i in 0..m {
                s += dm[i * c + k + q] * x[i * d + jj].f64();
            }
            gt[(k + q) * d + jj] = s;
        }
    }
}

/// Defines a module `$name` with the two products for one instruction set (`$feature`):
/// `logit_tile` (`R` rows × `Q` classes of `x_i · wt_k` in `L` lanes, then the horizontal sum
/// `$hsum`, a fixed order) and `grad_classes` (`Q` classes × strips of features whose sums
/// stay in registers while the rows stream by). Same tiles and the same order of additions
/// within a lane as the portable code (LLVM keeps the portable versions' partial sums in
/// memory, hence the intrinsics).
macro_rules! simd_products {
    (
        $name:ident, $feature:literal, $lanes:literal, $wide:literal, $v:ty,
        [$zero:ident, $load:ident, $set1:ident, $fma:ident, $store:ident, $hsum:ident],
        [$cvt:ident, $loadps:ident]
    ) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use super::{Elem, Prefetch};
            use std::arch::x86_64::*;

            /// f64 values per register.
            const L: usize = $lanes;
            /// Registers per class in the wide gradient strips.
            const WIDE: usize = $wide;

            /// `L` consecutive values as f64 (f32 values are converted exactly).
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn load<E: Elem>(p: *const E) -> $v {
                if E::IS_F32 {
                    $cvt($loadps(p as *const f32))
                } else {
                    $load(p as *const f64)
                }
            }

            /// `h[(i + r)·c + k + q] = x_{i+r} · wt_{k+q}` for `r < R`, `q < Q`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn logit_tile<E: Elem, const R: usize, const Q: usize>(
                x: &[E],
                i: usize,
                d: usize,
                wt: &[f64],
                k: usize,
                c: usize,
                h: &mut [f64],
            ) {
                let xi = &x[i * d..(i + R) * d];
                let wk = &wt[k * d..(k + Q) * d];
                assert!((i + R - 1) * c + k + Q <= h.len());
                let (xp, wp) = (xi.as_ptr(), wk.as_ptr());
                let mut acc = [[$zero(); Q]; R];
                let full = d - d % L;
                let mut j = 0;
                while j < full {
                    let mut wv = [$zero(); Q];
                    for (q, v) in wv.iter_mut().enumerate() {
                        *v = $load(wp.add(q * d + j));
                    }
                    for (r, a) in acc.iter_mut().enumerate() {
                        let xv = load(xp.add(r * d + j));
                        for q in 0..Q {
                            a[q] = $fma(xv, wv[q], a[q]);
                        }
                    }
                    j += L;
                }
                for r in 0..R {
                    for q in 0..Q {
                        let mut s = $hsum(acc[r][q]);
                        for jj in full..d {
                            s = xi[r * d + jj].f64().mul_add(wk[q * d + jj], s);
                        }
                        h[(i + r) * c + k + q] = s;
                    }
                }
            }

            /// `gt[(k + q)·d + j] += Σ_i dm[i·c + k + q] x[i·d + j]` for `q < Q`, in tiles of
            /// `WIDE · L` features (`WIDE` registers per class), then `L`, then single features.
            #[target_feature(enable = $feature)]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn grad_classes<E: Elem, const Q: usize>(
                x: &[E],
                m: usize,
                d: usize,
                dm: &[f64],
                c: usize,
                k: usize,
                gt: &mut [f64],
                pf: &mut Prefetch,
            ) {
                assert!(
                    x.len() >= m * d && dm.len() >= m * c && k + Q <= c && gt.len() >= (k + Q) * d
                );
                let (xp, dp, gp) = (x.as_ptr(), dm.as_ptr(), gt.as_mut_ptr());
                let mut j = 0;
                while j + WIDE * L <= d {
                    strip::<E, Q, WIDE>(xp, m, d, dp, c, k, gp, j, pf);
                    j += WIDE * L;
                }
                while j + L <= d {
                    strip::<E, Q, 1>(xp, m, d, dp, c, k, gp, j, pf);
                    j += L;
                }
                while j < d {
                    for q in 0..Q {
                        let mut s = *gp.add((k + q) * d + j);
                        for i in 0..m {
                            s = (*dp.add(i * c + k + q)).mul_add((*xp.add(i * d + j)).f64(), s);
                        }
                        *gp.add((k + q) * d + j) = s;
                    }
                    j += 1;
                }
            }

            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn strip<E: Elem, const Q: usize, const V: usize>(
                xp: *const E,
                m: usize,
                d: usize,
                dp: *const f64,
                c: usize,
                k: usize,
                gp: *mut f64,
                j: usize,
                pf: &mut Prefetch,
            ) {
                let mut acc = [[$zero(); V]; Q];
                for (q, a) in acc.iter_mut().enumerate() {
                    for (v, r) in a.iter_mut().enumerate() {
                        *r = $load(gp.add((k + q) * d + j + L * v));
                    }
                }
                for i in 0..m {
                    if pf.next < pf.end {
                        _mm_prefetch::<_MM_HINT_T1>(pf.next as *const i8);
                        pf.next = pf.next.wrapping_add(64);
                    }
                    let mut xv = [$zero(); V];
                    for (v, r) in xv.iter_mut().enumerate() {
                        *r = load(xp.add(i * d + j + L * v));
                    }
                    for (q, a) in acc.iter_mut().enumerate() {
                        let dv = $set1(*dp.add(i * c + k + q));
                        for v in 0..V {
                            a[v] = $fma(dv, xv[v], a[v]);
                        }
                    }
                }
                for (q, a) in acc.iter().enumerate() {
                    for (v, r) in a.iter().enumerate() {
                        $store(gp.add((k + q) * d + j + L * v), *r);
                    }
                }
            }
        }
    };
}

simd_products!(
    avx512,
    "avx512f",
    8,
    4,
    __m512d,
    [
        _mm512_setzero_pd,
        _mm512_loadu_pd,
        _mm512_set1_pd,
        _mm512_fmadd_pd,
        _mm512_storeu_pd,
        _mm512_reduce_add_pd
    ],
    [_mm512_cvtps_pd, _mm256_loadu_ps]
);
// AVX2: tiles of 4 rows × 2 classes (see `logits`) and strips of 2 registers fit its 16
// registers.
simd_products!(
    avx2,
    "avx2,fma",
    4,
    2,
    __m256d,
    [
        _mm256_setzero_pd,
        _mm256_loadu_pd,
        _mm256_set1_pd,
        _mm256_fmadd_pd,
        _mm256_storeu_pd,
        hsum256
    ],
    [_mm256_cvtps_pd, _mm_loadu_ps]
);

/// `(a0 + a2) + (a1 + a3)` of an AVX2 register: a fixed order.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum256(v: std::arch::x86_64::__m256d) -> f64 {
    let mut a = [0.0f64; 4];
    std::arch::x86_64::_mm256_storeu_pd(a.as_mut_ptr(), v);
    (a[0] + a[2]) + (a[1] + a[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// A reproducible problem: `x` with an offset and mixed scales, one-hot `y`, small `w`.
    fn problem(
        n: usize,
        d: usize,
        c: usize,
        intercept: bool,
        seed: u64,
    ) -> (Array2<f64>, Array2<f64>, Array2<f64>) {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let x = Array2::from_shape_fn((n, d), |(_, j)| {
            3.0 * next() * (1.0 + j as f64 % 3.0) + 0.25
        });
        let mut y = Array2::<f64>::zeros((n, c));
        for i in 0..n {
            let k = ((next() + 0.5) * c as f64) as usize;
            y[[i, k.min(c - 1)]] = 1.0;
        }
        let w = Array2::from_shape_fn((d + intercept as usize, c), |_| next());
        (x, y, w)
    }

    fn run<E: Elem>(
        isa: u8,
        x: &Array2<E>,
        y: &Array2<f64>,
        w: &Array2<f64>,
    ) -> (f64, Array2<f64>) {
        let (n, d) = x.dim();
        multinomial_loss_grad_with(
            isa,
            x.as_slice().unwrap(),
            y.as_slice().unwrap(),
            w.view(),
            n,
            d,
        )
    }

    fn max_rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1.0);
        a.iter().zip(b).fold(0f64, |m, (p, q)| m.max((p - q).abs())) / scale
    }

    const SHAPES: [(usize, usize, usize, bool); 7] = [
        (1, 1, 1, false),
        (7, 3, 2, true),
        (65, 8, 3, true),
        (131, 37, 5, false),
        (300, 33, 7, true),
        (257, 64, 4, true),
        (5000, 70, 10, true),
    ];

    /// The single pass agrees with upstream's two products (`multi_logistic_loss` and
    /// `multi_logistic_grad` with α = 0) for shapes that exercise every remainder: rows not a
    /// multiple of 4, 64 or the 2048-row leaves; features not a multiple of 8 or 32; 1–10
    /// classes; with and without the intercept row.
    #[test]
    fn matches_upstream_products_at_every_level() {
        for (s, &(n, d, c, intercept)) in SHAPES.iter().enumerate() {
            let (x, y, w) = problem(n, d, c, intercept, s as u64 + 1);
            let loss = crate::multi_logistic_loss(&x, &y, 0.0, &w);
            let grad = crate::multi_logistic_grad(&x, &y, 0.0, &w);
            for isa in PORTABLE..=best_isa() {
                let (l, g) = run(isa, &x, &y, &w);
                assert!(
                    (l - loss).abs() <= 1e-12 * loss.abs().max(1.0),
                    "loss {} vs {} (shape {}, level {})",
                    l,
                    loss,
                    s,
                    isa
                );
                let e = max_rel(&g, &grad);
                assert!(
                    e <= 1e-12,
                    "gradient off by {:e} (shape {}, level {})",
                    e,
                    s,
                    isa
                );
            }
        }
    }

    /// f32 records give exactly the result of the same records converted to f64: the values
    /// are converted exactly as they are loaded and every operation is the same.
    #[test]
    fn f32_records_equal_their_f64_conversion() {
        for (s, &(n, d, c, intercept)) in SHAPES.iter().enumerate() {
            let (x, y, w) = problem(n, d, c, intercept, s as u64 + 11);
            let x32 = x.mapv(|v| v as f32);
            let x64 = x32.mapv(f64::from);
            for isa in PORTABLE..=best_isa() {
                let (l32, g32) = run(isa, &x32, &y, &w);
                let (l64, g64) = run(isa, &x64, &y, &w);
                assert_eq!(l32.to_bits(), l64.to_bits(), "shape {}, level {}", s, isa);
                assert!(g32
                    .iter()
                    .zip(&g64)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    /// The parallel split depends on `n` only: one thread and three threads give the same bits.
    #[test]
    fn result_does_not_depend_on_the_thread_count() {
        let (x, y, w) = problem(9000, 40, 6, true, 5);
        let pool = |t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        };
        let (l1, g1) = pool(1).install(|| run(best_isa(), &x, &y, &w));
        let (l3, g3) = pool(3).install(|| run(best_isa(), &x, &y, &w));
        assert_eq!(l1.to_bits(), l3.to_bits());
        assert!(g1.iter().zip(&g3).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
