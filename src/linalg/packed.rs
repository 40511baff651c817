//! The crate's own product with a packed right-hand side ([`PackedRhs`]: `B` packed
//! once into panels, `MR × 24` f64 / `MR × 48` f32 register blocks, AVX-512 / AVX2 + FMA /
//! portable versions). `gemm` packs `B` again on every call; the packed product wins where one
//! `B` meets many small groups of rows (the NC1 pass: 96 rows at a time, with the next rows
//! prefetched meanwhile). `scripts/bench-linalg` times both on the crate's shapes.
//!
//! Instruction sets (one dispatch point, `PackedRhs::matmul_prefetch`): the hand micro-kernels
//! exist for x86-64 only (AVX-512, AVX2 + FMA, and a portable loop for a CPU without AVX2). On
//! every other target, aarch64 in particular, the product runs as one [`super::matmul_into`]
//! per panel, i.e. through `gemm`'s NEON micro-kernels, rather than through the portable loop
//! (which LLVM vectorises without fusing and one row at a time). It loses the reason the packed
//! product exists (`gemm` packs each panel again), but no aarch64 machine was at hand to tune
//! hand NEON kernels against it; the results are checked under qemu by `scripts/test-aarch64`.
//!
//! Rounding: each entry is summed in `E` with fused multiply-adds over chunks of
//! `KC = 128` values (on the `gemm` route, in `gemm`'s blocking), within the bounds stated in
//! [`super::product`]. The AVX-512 and AVX2 micro-kernels add in the same order whatever the
//! panel widths, so they give the same bits on either packing.

#[cfg(target_arch = "x86_64")]
use crate::kernels::{isa, Isa};

/// Rows of a micro-kernel product ([`PackedRhs::matmul`] works on multiples of it).
pub(crate) const MR: usize = 8;
/// Registers per full panel of a [`PackedRhs`]: 24 columns of f64, 48 of f32 (the last panel
/// may be one or two registers wide).
const PANEL_REGS: usize = 3;
/// 256-bit registers of columns per AVX2 micro-kernel call (12 f64 or 24 f32): 4 rows × 3
/// registers in 12 accumulators, the inner loop in `asm!` (see `asm_kernel_4x3`); 2 and 1
/// registers (the rest of a panel) with intrinsics. Panels of fewer registers (instead of 24
/// f64) measured slower on 1,024-row products (each row block read again per panel):
/// AVX2 keeps the full panels and pads only the last one less.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const AVX2_REGS: usize = 3;
/// Depth of a chunk of the products' inner dimension (a panel chunk is `KC × 24` f64 = 24 KiB).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86-64 versions use it
pub(crate) const KC: usize = 128;

/// The right-hand side `B` (`k × n`) of many products `Z = R·B`, packed once in the element
/// type `E` (f64, or f32 for a caller that certifies what it needs from an f32 product):
/// columns in panels of three 512-bit registers (24 f64 or 48 f32), the last one narrower
/// when that covers the rest: a multiple of 512 bits, or of 256 bits on a CPU whose best
/// version is AVX2 (9 f64 columns: 12, not 16); each panel stored `k`-major
/// (`panel[l·w + j] = B[l][c₀ + j]`) and zero-padded to its width.
///
/// A product runs [`MR`] rows at a time with the `MR × 24` block of `Z` in registers (24
/// AVX-512 accumulators; AVX2 in blocks of 4 rows × 12 f64, the rest of a panel 4 × 8 or
/// 8 × 4), loops ordered as in BLIS: `k` in chunks
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
    /// The last panel's width is a multiple of this: `E::LANES` (512 bits), or half of it (256
    /// bits) when this CPU's best version is AVX2, which pads less (9 f64 columns: 12, not 16).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    lanes: usize,
    /// (first column, width) of each panel; panel `p` starts at `data[k · first column]`.
    panels: Vec<(usize, usize)>,
    data: Vec<E>,
}

/// An element type of [`PackedRhs`] products: its register width and micro-kernels.
pub(crate) trait PackElem:
    super::Scalar
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
    /// The AVX2 micro-kernel: [`avx2_rows`]`(regs)` rows × `regs` 256-bit registers of
    /// columns (`regs` ≤ [`AVX2_REGS`]: 4 × 12 f64 or 4 × 24 f32; one register: 8 rows).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the pointers cover the block (see [`kernel_avx2`]).
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel256(
        regs: usize,
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
        regs: usize,
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
        unsafe {
            match regs {
                3 => kernel_avx2_4x3(bp, width, kc, rg, rs, cs, zg, zs, acc),
                2 => kernel_avx2::<{ avx2_rows(2) }, 2>(bp, width, kc, rg, rs, cs, zg, zs, acc),
                _ => kernel_avx2::<{ avx2_rows(1) }, 1>(bp, width, kc, rg, rs, cs, zg, zs, acc),
            }
        }
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
        regs: usize,
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
        unsafe {
            match regs {
                3 => kernel_avx2_f32_4x3(bp, width, kc, rg, rs, cs, zg, zs, acc),
                2 => kernel_avx2_f32::<{ avx2_rows(2) }, 2>(bp, width, kc, rg, rs, cs, zg, zs, acc),
                _ => kernel_avx2_f32::<{ avx2_rows(1) }, 1>(bp, width, kc, rg, rs, cs, zg, zs, acc),
            }
        }
    }
}

impl<E: PackElem> PackedRhs<E> {
    /// Packs the row-major `b` (`k × n`, row stride `stride`), converted to `E`, in the
    /// panels of this CPU's best version (registers of 256 bits for AVX2, else 512).
    pub(crate) fn new(b: &[f64], k: usize, n: usize, stride: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if matches!(isa(), Isa::Avx2) {
            return Self::with_lanes(b, k, n, stride, E::LANES / 2);
        }
        Self::with_lanes(b, k, n, stride, E::LANES)
    }

    /// [`PackedRhs::new`] with `lanes` values per register (`E::LANES` or `E::LANES / 2`).
    fn with_lanes(b: &[f64], k: usize, n: usize, stride: usize, lanes: usize) -> Self {
        assert!(stride >= n && (k == 0 || b.len() >= (k - 1) * stride + n));
        assert!(lanes == E::LANES || lanes * 2 == E::LANES);
        let full = PANEL_REGS * E::LANES;
        let mut panels = Vec::new();
        let mut c0 = 0;
        while c0 < n {
            // Full panels, the last one narrower (a multiple of `lanes`) when that covers the rest.
            let width = ((n - c0).div_ceil(lanes) * lanes).min(full);
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
        Self {
            k,
            lanes,
            panels,
            data,
        }
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
            Isa::Avx512 if self.lanes == E::LANES => unsafe { self.matmul_avx512(z, r, job) },
            Isa::Avx512 | Isa::Avx2 => unsafe { self.matmul_avx2(z, r, job) },
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
            super::matmul_into(dst, job.accumulate, a, b)
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
    /// The CPU has AVX2 and FMA; shapes checked by [`PackedRhs::matmul`]. Any packing (panels
    /// of 256- or 512-bit registers): each panel runs in pieces of up to [`AVX2_REGS`] 256-bit
    /// registers, [`avx2_rows`] rows at a time.
    #[cfg(target_arch = "x86_64")]
    unsafe fn matmul_avx2(&self, z: &mut [E], r: &[E], job: Job) {
        let (k, zs, l) = (self.k, self.z_stride(), E::LANES / 2);
        let (rp, zp, dp) = (r.as_ptr(), z.as_mut_ptr(), self.data.as_ptr());
        self.for_each_block(job, |c0, width, g, k0, kc, acc| {
            let mut p = 0;
            while p < width {
                let regs = ((width - p) / l).min(AVX2_REGS);
                let rows = avx2_rows(regs);
                for g1 in (g..g + MR).step_by(rows) {
                    // SAFETY: as in `matmul_avx512`; `rows` rows and `regs` registers of the
                    // panel's columns; the caller guarantees AVX2 and FMA.
                    unsafe {
                        let bp = dp.add(c0 * k + k0 * width + p);
                        let rg = rp.add(g1 * job.rs + k0 * job.cs);
                        let zg = zp.add(g1 * zs + c0 + p);
                        E::kernel256(regs, bp, width, kc, rg, job.rs, job.cs, zg, zs, acc);
                    }
                }
                p += regs * l;
            }
        });
    }
}

/// Rows of an AVX2 micro-kernel call `regs` registers wide: 4 for three or two (12 or 8
/// accumulators), all [`MR`] for one (8 accumulators: two FMA pipes of latency 4 need 8
/// independent sums).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const fn avx2_rows(regs: usize) -> usize {
    if regs == 1 {
        MR
    } else {
        MR / 2
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
/// * `$k256::<ROWS, W>`: `ROWS` rows × `W` 256-bit registers of columns (panel row stride
///   `width`);
/// * `$k4x3`: 4 rows × 3 256-bit registers, its inner loop in `asm!` (`$mov`, `$bcast`,
///   `$fma_asm`: the type's load, broadcast and fused multiply-add mnemonics);
/// * `$load_acc` and `$store_acc`: the AVX2 kernels' block of `Z` into and out of registers.
macro_rules! product_kernels {
    (
        $t:ty, $k512:ident, $k256:ident, $l512:expr, $l256:expr,
        [$zero512:ident, $load512:ident, $set512:ident, $fma512:ident, $store512:ident],
        [$zero256:ident, $load256:ident, $set256:ident, $fma256:ident, $store256:ident],
        $v256:ty, [$k4x3:ident, $load_acc:ident, $store_acc:ident],
        [$mov:literal, $bcast:literal, $fma_asm:literal]
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
        unsafe fn $k256<const ROWS: usize, const W: usize>(
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
            const L: usize = $l256;
            // SAFETY (whole body): the caller guarantees ROWS rows of r and z and kc rows of
            // the panel, W registers wide.
            unsafe {
                let mut acc = $load_acc::<ROWS, W>(zg, zs, accumulate);
                for l in 0..kc {
                    let mut b = [$zero256(); W];
                    for (w, v) in b.iter_mut().enumerate() {
                        *v = $load256(bp.add(l * width + L * w));
                    }
                    for (i, a) in acc.iter_mut().enumerate() {
                        let x = $set256(*rg.add(i * rs + l * cs));
                        for (v, bw) in a.iter_mut().zip(&b) {
                            *v = $fma256(x, *bw, *v);
                        }
                    }
                }
                $store_acc(zg, zs, &acc);
            }
        }

        /// The `ROWS × W` registers of `Z` at `zg` (row stride `zs`) if `accumulate`, else zeros.
        ///
        /// # Safety
        /// The CPU has AVX2; with `accumulate`, the block is in bounds.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $load_acc<const ROWS: usize, const W: usize>(
            zg: *const $t,
            zs: usize,
            accumulate: bool,
        ) -> [[$v256; W]; ROWS] {
            use std::arch::x86_64::*;
            // SAFETY: the caller's bounds.
            unsafe {
                let mut acc = [[$zero256(); W]; ROWS];
                if accumulate {
                    for (i, a) in acc.iter_mut().enumerate() {
                        for (w, v) in a.iter_mut().enumerate() {
                            *v = $load256(zg.add(i * zs + $l256 * w));
                        }
                    }
                }
                acc
            }
        }

        /// Stores the `ROWS × W` registers `acc` into `Z` at `zg` (row stride `zs`).
        ///
        /// # Safety
        /// The CPU has AVX2; the block is in bounds.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $store_acc<const ROWS: usize, const W: usize>(
            zg: *mut $t,
            zs: usize,
            acc: &[[$v256; W]; ROWS],
        ) {
            use std::arch::x86_64::*;
            // SAFETY: the caller's bounds.
            unsafe {
                for (i, a) in acc.iter().enumerate() {
                    for (w, v) in a.iter().enumerate() {
                        $store256(zg.add(i * zs + $l256 * w), *v);
                    }
                }
            }
        }

        /// The AVX2 micro-kernel of 4 rows × 3 registers (12 accumulators), its inner loop in
        /// `asm!` with every register named: written with intrinsics, LLVM spilled an
        /// accumulator and shuffled the others on every step (16 ymm registers: 12
        /// accumulators, 3 of `B`, 1 broadcast). Each step is `acc[i][w] = x_i · b_w +
        /// acc[i][w]` (`vfmadd231`), the same fused chain per entry as the other kernels.
        /// Measured beside the 4 × 2 and 8 × 1 pieces on a 12-column panel (k = 512, 96 rows,
        /// Zen 3): 40–48 against 23–36 GFLOP/s.
        ///
        /// # Safety
        /// The CPU has AVX2 and FMA; 4 rows of `r` (stride `rs`, `kc` values each at stride
        /// `cs`) and of `z` (stride `zs`, 3 registers), and `kc` rows of the panel (stride
        /// `width`, 3 registers) are in bounds.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $k4x3(
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
            const E: usize = std::mem::size_of::<$t>();
            // SAFETY (whole body): the caller's bounds; the loop reads kc rows of the panel
            // and kc values of each of the 4 rows of r, and writes nothing but registers.
            unsafe {
                let [
                    [mut a00, mut a01, mut a02],
                    [mut a10, mut a11, mut a12],
                    [mut a20, mut a21, mut a22],
                    [mut a30, mut a31, mut a32],
                ] = $load_acc::<4, 3>(zg, zs, accumulate);
                if kc > 0 {
                    std::arch::asm!(
                        "2:",
                        concat!($mov, " {b0}, ymmword ptr [{b}]"),
                        concat!($mov, " {b1}, ymmword ptr [{b} + 32]"),
                        concat!($mov, " {b2}, ymmword ptr [{b} + 64]"),
                        concat!($bcast, " [{r}]"),
                        concat!($fma_asm, " {a00}, {x}, {b0}"),
                        concat!($fma_asm, " {a01}, {x}, {b1}"),
                        concat!($fma_asm, " {a02}, {x}, {b2}"),
                        concat!($bcast, " [{r} + {rs}]"),
                        concat!($fma_asm, " {a10}, {x}, {b0}"),
                        concat!($fma_asm, " {a11}, {x}, {b1}"),
                        concat!($fma_asm, " {a12}, {x}, {b2}"),
                        concat!($bcast, " [{r} + {rs}*2]"),
                        concat!($fma_asm, " {a20}, {x}, {b0}"),
                        concat!($fma_asm, " {a21}, {x}, {b1}"),
                        concat!($fma_asm, " {a22}, {x}, {b2}"),
                        concat!($bcast, " [{r} + {rs3}]"),
                        concat!($fma_asm, " {a30}, {x}, {b0}"),
                        concat!($fma_asm, " {a31}, {x}, {b1}"),
                        concat!($fma_asm, " {a32}, {x}, {b2}"),
                        "add {b}, {bstep}",
                        "add {r}, {cstep}",
                        "dec {k}",
                        "jnz 2b",
                        b = inout(reg) bp => _,
                        r = inout(reg) rg => _,
                        k = inout(reg) kc => _,
                        rs = in(reg) rs * E,
                        rs3 = in(reg) rs * 3 * E,
                        bstep = in(reg) width * E,
                        cstep = in(reg) cs * E,
                        b0 = out(ymm_reg) _,
                        b1 = out(ymm_reg) _,
                        b2 = out(ymm_reg) _,
                        x = out(ymm_reg) _,
                        a00 = inout(ymm_reg) a00,
                        a01 = inout(ymm_reg) a01,
                        a02 = inout(ymm_reg) a02,
                        a10 = inout(ymm_reg) a10,
                        a11 = inout(ymm_reg) a11,
                        a12 = inout(ymm_reg) a12,
                        a20 = inout(ymm_reg) a20,
                        a21 = inout(ymm_reg) a21,
                        a22 = inout(ymm_reg) a22,
                        a30 = inout(ymm_reg) a30,
                        a31 = inout(ymm_reg) a31,
                        a32 = inout(ymm_reg) a32,
                        options(nostack, readonly),
                    );
                }
                let acc = [
                    [a00, a01, a02],
                    [a10, a11, a12],
                    [a20, a21, a22],
                    [a30, a31, a32],
                ];
                $store_acc(zg, zs, &acc);
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
    ],
    std::arch::x86_64::__m256d,
    [kernel_avx2_4x3, load_acc_f64, store_acc_f64],
    ["vmovupd", "vbroadcastsd {x}, qword ptr", "vfmadd231pd"]
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
    ],
    std::arch::x86_64::__m256,
    [kernel_avx2_f32_4x3, load_acc_f32, store_acc_f32],
    ["vmovups", "vbroadcastss {x}, dword ptr", "vfmadd231ps"]
);

macro_rules! hand {
    ($name:ident, $t:ty) => {
        /// Benchmark access to the packed product (`scripts/bench-linalg`); not a stable API.
        #[doc(hidden)]
        pub struct $name(PackedRhs<$t>);

        impl $name {
            /// Packs the row-major `k × n` matrix `b` (row stride `stride`).
            pub fn new(b: &[f64], k: usize, n: usize, stride: usize) -> Self {
                Self(PackedRhs::new(b, k, n, stride))
            }
            /// Row stride of the product written by [`Self::matmul`].
            pub fn z_stride(&self) -> usize {
                self.0.z_stride()
            }
            /// `z = R · B` for `rows` (a multiple of 8) rows of `r` with row stride `rs`.
            pub fn matmul(&self, z: &mut [$t], r: &[$t], rs: usize, rows: usize) {
                self.0.matmul(z, r, rs, 1, rows, false, false);
            }
        }
    };
}
hand!(HandF32, f32);
hand!(HandF64, f64);

#[cfg(test)]
mod tests {
    use super::*;

    /// A product's shape: `R` strides `(rs, cs)`, `rows`, nothing prefetched.
    fn job((rs, cs): (usize, usize), rows: usize, accumulate: bool, lower: bool) -> Job {
        Job {
            rs,
            cs,
            rows,
            accumulate,
            lower,
            ahead: std::ptr::null(),
            ahead_lines: 0,
        }
    }

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
            for lanes in [16, 8] {
                let packed = PackedRhs::<f32>::with_lanes(&b, k, n, n, lanes);
                let zs = packed.z_stride();
                let job = job((k, 1), rows, false, false);
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
                            let mag: f64 =
                                (0..k).map(|l| (r[i * k + l] * b[l * n + j]).abs()).sum();
                            let bound = 1.01 * (k as f64 + 3.0) * u * mag;
                            assert!((got - exact).abs() <= bound, "{got} vs {exact} ± {bound}");
                        }
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
            // The AVX2 version's products per packing (512- then 256-bit panels).
            let mut avx2_products: Vec<Vec<f64>> = Vec::new();
            for lanes in [8, 4] {
                let packed = PackedRhs::with_lanes(&b, k, n, n + 3, lanes);
                assert_eq!(packed.z_stride(), n.div_ceil(lanes) * lanes);
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
                let job = job((r_stride, 1), rows, false, false);
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
                    let zs = packed.z_stride();
                    avx2_products.push(
                        (0..rows)
                            .flat_map(|i| z2[i * zs..i * zs + n].to_vec())
                            .collect(),
                    );
                }
            }
            // The same fused chain per entry whatever the panels: the same bits.
            if let [a, b] = &avx2_products[..] {
                assert!(
                    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "k {k} n {n}"
                );
            }
        }
    }

    #[test]
    fn lower_gram_of_transposed_rows_accumulates() {
        // S += UᵀU over two blocks, lower triangle, with R = Uᵀ read through strides.
        let (b, d) = (7usize, 29usize);
        let d_pad = d.div_ceil(MR) * MR;
        let mut z = vec![0.0f64; d_pad * d.div_ceil(24) * 24];
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

    #[test]
    fn lower_products_skip_the_same_blocks_in_every_version() {
        for (b, d) in [(5usize, 8usize), (7, 29), (3, 70), (130, 50)] {
            let d_pad = d.div_ceil(MR) * MR;
            let u: Vec<f64> = (0..b * d_pad).map(|i| (i as f64 * 0.43).sin()).collect();
            for lanes in [8, 4] {
                let packed = PackedRhs::with_lanes(&u, b, d, d_pad, lanes);
                let zs = packed.z_stride();
                let start: Vec<f64> = (0..d_pad * zs).map(|i| i as f64 * 0.25 - 3.0).collect();
                let job = job((1, d_pad), d_pad, true, true);
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
                        let panel = packed.panels.iter().rfind(|p| p.0 <= j).expect("panel 0");
                        let skipped = job.skips(panel.0, i - i % MR);
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
    }
}
