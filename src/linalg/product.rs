//! Matrix products through the `gemm` crate: `C (+)= A · B` on strided views, and the Gram
//! product `A · Aᵀ` computed on its lower triangle.
//!
//! `gemm` packs both operands into cache-sized blocks and runs register-blocked micro-kernels
//! chosen at run time (AVX-512F, AVX2 + FMA or SSE on x86-64; NEON on aarch64; scalar
//! elsewhere). It is called single-threaded: the crate parallelises over blocks of rows itself
//! (`parallel::map_row_blocks_with`), so every product here runs on the calling thread.
//!
//! Numerics: each entry is `c_ij = Σ_l a_il b_lj` summed in the element type `T` with fused
//! multiply-adds in an order fixed by the block sizes (not by the thread count), so for f64
//!
//! ```text
//! |fl(c_ij) − c_ij| ≤ γ_k Σ_l |a_il b_lj|,   γ_k = k u / (1 − k u),   u = 2⁻⁵³
//! ```
//!
//! (and `u = 2⁻²⁴` for f32: the crate uses f32 products only where it certifies the result,
//! see `tiles` and `F32Logits` in `metrics`, whose bound `β = 1.01 (k + 3) 2⁻²⁴` covers any
//! summation order). Which instruction set runs changes the result only by that rounding.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::LinalgError;

/// An element type of the products: f32 or f64.
pub trait Scalar: Copy + Default + Send + Sync + 'static {}
impl Scalar for f32 {}
impl Scalar for f64 {}

/// `dst ← A · B`, or `dst ← dst + A · B` when `accumulate`, for any strides of the three views
/// (row- or column-major, slices, transposes; `dst` must not overlap `a` or `b`, which its
/// mutable borrow guarantees).
///
/// Shapes: `a` is `m × k`, `b` is `k × n`, `dst` is `m × n`; anything else is
/// [`LinalgError::Shape`]. `k = 0` gives zeros (or leaves `dst` unchanged when accumulating).
/// Rounding: see the module docs (`γ_k Σ_l |a_il b_lj|` per entry).
pub fn matmul_into<T: Scalar>(
    mut dst: ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
) -> Result<(), LinalgError> {
    let (m, k) = a.dim();
    let (kb, n) = b.dim();
    if kb != k || dst.dim() != (m, n) {
        return Err(LinalgError::Shape {
            left: a.dim(),
            right: b.dim(),
            dst: dst.dim(),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (ds, as_, bs) = (dst.strides(), a.strides(), b.strides());
    let (drs, dcs, ars, acs, brs, bcs) = (ds[0], ds[1], as_[0], as_[1], bs[0], bs[1]);
    let (one, zero) = unit::<T>();
    // SAFETY: the three views are valid for their shapes and strides (ndarray guarantees it);
    // `dst` is uniquely borrowed, so it overlaps neither operand; `gemm` reads `dst` only when
    // `read_dst` and writes exactly the m × n entries.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dcs,
            drs,
            accumulate,
            a.as_ptr(),
            acs,
            ars,
            b.as_ptr(),
            bcs,
            brs,
            if accumulate { one } else { zero },
            one,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    Ok(())
}

/// `A · B` as a new row-major matrix (see [`matmul_into`]).
pub fn matmul<T: Scalar>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
) -> Result<Array2<T>, LinalgError> {
    let mut out = Array2::<T>::default((a.nrows(), b.ncols()));
    matmul_into(out.view_mut(), false, a, b)?;
    Ok(out)
}

/// Rows per block of [`gram`]'s lower triangle.
const GRAM_BLOCK: usize = 256;

/// The Gram matrix `G = A · Aᵀ` (`g_ij = a_i · a_j` over the rows `a_i` of the `n × d` matrix
/// `a`), computed on the lower triangle in blocks of rows (`G[I, ..=I] = A_I · A_{..=I}ᵀ`,
/// about half of the `n² d` multiply-adds of the full product) and mirrored, so `G` is exactly
/// symmetric. Rounding as [`matmul_into`] with `k = d`.
pub fn gram(a: ArrayView2<'_, f64>) -> Array2<f64> {
    let n = a.nrows();
    let mut g = Array2::<f64>::zeros((n, n));
    gram_lower_into(g.view_mut(), a).expect("n × n destination");
    for i in 0..n {
        for j in i + 1..n {
            g[[i, j]] = g[[j, i]];
        }
    }
    g
}

/// Writes the lower triangle (and the diagonal blocks' upper parts) of `A · Aᵀ` into the
/// `n × n` view `dst`: entries `(i, j)` with `j` in a block of [`GRAM_BLOCK`] rows not after
/// `i`'s. Entries above those blocks are left unchanged.
pub fn gram_lower_into(
    mut dst: ArrayViewMut2<'_, f64>,
    a: ArrayView2<'_, f64>,
) -> Result<(), LinalgError> {
    let n = a.nrows();
    if dst.dim() != (n, n) {
        return Err(LinalgError::Shape {
            left: a.dim(),
            right: (a.ncols(), n),
            dst: dst.dim(),
        });
    }
    for i0 in (0..n).step_by(GRAM_BLOCK) {
        let i1 = (i0 + GRAM_BLOCK).min(n);
        let block = dst.slice_mut(ndarray::s![i0..i1, ..i1]);
        matmul_into(
            block,
            false,
            a.slice(ndarray::s![i0..i1, ..]),
            a.slice(ndarray::s![..i1, ..]).t(),
        )?;
    }
    Ok(())
}

/// (1, 0) of `T` without a numeric-traits dependency.
fn unit<T: Scalar>() -> (T, T) {
    use std::any::Any;
    let one: Box<dyn Any> = if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        Box::new(1.0f32)
    } else {
        Box::new(1.0f64)
    };
    (*one.downcast::<T>().expect("T is f32 or f64"), T::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2, ShapeBuilder};

    /// A deterministic pseudo-random matrix with entries in [−1, 1).
    fn rand(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        Array2::from_shape_fn((rows, cols), |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
    }

    /// The naive f64 product and `Σ_l |a_il b_lj|` (for the rounding bound).
    fn naive(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> (Array2<f64>, Array2<f64>) {
        let (m, k) = a.dim();
        let n = b.ncols();
        let mut c = Array2::zeros((m, n));
        let mut mag = Array2::zeros((m, n));
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    c[[i, j]] += a[[i, l]] * b[[l, j]];
                    mag[[i, j]] += (a[[i, l]] * b[[l, j]]).abs();
                }
            }
        }
        (c, mag)
    }

    /// Products of random shapes (edge sizes 0, 1, odd, beyond the micro-kernel and block
    /// sizes) in every layout (row-major, column-major, transposed, strided slices) equal the
    /// naive product within `2 γ_k Σ_l |a_il b_lj|` (f64: both sides round, each by `γ_k`).
    #[test]
    fn f64_products_match_naive_reference_in_every_layout() {
        let sizes = [0usize, 1, 2, 7, 17, 33, 130];
        let u = f64::EPSILON / 2.0;
        let mut seed = 1;
        for &m in &sizes {
            for &k in &[0usize, 1, 5, 64, 257] {
                for &n in &sizes {
                    seed += 1;
                    let a = rand(m, k, seed);
                    let b = rand(k, n, seed + 1000);
                    let (want, mag) = naive(a.view(), b.view());
                    let gamma = 2.0 * (k as f64 * u) / (1.0 - k as f64 * u);
                    // `slack`: the rounding of adding a destination of magnitude `slack` (one
                    // addition, then subtracting it again: `2u (slack + |c|)` at most).
                    let check_with = |got: &Array2<f64>, slack: f64, what: &str| {
                        for ((g, w), s) in got.iter().zip(&want).zip(&mag) {
                            let tol = gamma * s + 2.0 * u * (slack + w.abs() + gamma * s) * 1.01;
                            assert!((g - w).abs() <= tol, "{what} {m}x{k}x{n}: {g} vs {w}");
                        }
                    };
                    let check = |got: &Array2<f64>, what: &str| check_with(got, 0.0, what);
                    // Row-major operands.
                    check(&matmul(a.view(), b.view()).unwrap(), "row-major");
                    // Column-major copies and a column-major destination.
                    let ac = Array2::from_shape_vec((m, k).f(), a.t().iter().copied().collect())
                        .unwrap();
                    let bc = Array2::from_shape_vec((k, n).f(), b.t().iter().copied().collect())
                        .unwrap();
                    let mut dc = Array2::<f64>::zeros((m, n).f());
                    matmul_into(dc.view_mut(), false, ac.view(), bc.view()).unwrap();
                    check(&dc, "column-major");
                    // Strided slices of larger matrices (every other row/column), accumulating
                    // onto a known destination.
                    let big_a = {
                        let mut x = rand(2 * m + 1, 2 * k + 3, seed + 7);
                        x.slice_mut(s![..2 * m;2, 1..2 * k + 1;2]).assign(&a);
                        x
                    };
                    let big_b = {
                        let mut x = rand(2 * k + 1, 3 * n + 1, seed + 9);
                        x.slice_mut(s![1..2 * k + 1;2, ..3 * n;3]).assign(&b);
                        x
                    };
                    let mut acc = Array2::from_elem((m, n), 0.5);
                    matmul_into(
                        acc.view_mut(),
                        true,
                        big_a.slice(s![..2 * m;2, 1..2 * k + 1;2]),
                        big_b.slice(s![1..2 * k + 1;2, ..3 * n;3]),
                    )
                    .unwrap();
                    check_with(&(acc - 0.5), 0.5, "strided, accumulated");
                    // Aᵀ·B through transposed views of Aᵀ.
                    let at = a.t().to_owned();
                    check(&matmul(at.t(), b.view()).unwrap(), "transposed view");
                }
            }
        }
    }

    /// f32 products satisfy the bound `β Σ_l |a_il b_lj|`, `β = 1.01 (k + 3) 2⁻²⁴`, that the
    /// certified NC4 tiles and `F32Logits` rely on (against the exact f64 product of the f32
    /// inputs).
    #[test]
    fn f32_products_meet_the_certification_bound() {
        for &(m, k, n) in &[
            (8usize, 37usize, 10usize),
            (100, 768, 480),
            (3, 2048, 49),
            (1, 129, 1),
        ] {
            let a = rand(m, k, 5).mapv(|v| v as f32);
            let b = rand(k, n, 6).mapv(|v| v as f32);
            let got = matmul(a.view(), b.view()).unwrap();
            let (want, mag) = naive(a.mapv(f64::from).view(), b.mapv(f64::from).view());
            let beta = 1.01 * (k as f64 + 3.0) * f64::powi(2.0, -24);
            for ((g, w), s) in got.iter().zip(&want).zip(&mag) {
                assert!((f64::from(*g) - w).abs() <= beta * s, "{g} vs {w}");
            }
        }
    }

    #[test]
    fn shape_mismatch_is_an_error_not_a_panic() {
        let a = Array2::<f64>::zeros((3, 4));
        let b = Array2::<f64>::zeros((5, 2));
        assert!(matches!(
            matmul(a.view(), b.view()),
            Err(LinalgError::Shape {
                left: (3, 4),
                right: (5, 2),
                ..
            })
        ));
        let mut d = Array2::<f64>::zeros((3, 3));
        assert!(gram_lower_into(d.view_mut(), Array2::zeros((4, 2)).view()).is_err());
    }

    /// The Gram product is symmetric and equals the naive `A Aᵀ` (sizes across the block edge).
    #[test]
    fn gram_matches_naive_and_is_symmetric() {
        let u = f64::EPSILON / 2.0;
        for &(n, d) in &[
            (0usize, 3usize),
            (1, 1),
            (5, 0),
            (255, 9),
            (257, 31),
            (600, 4),
        ] {
            let a = rand(n, d, (n * 31 + d) as u64);
            let g = gram(a.view());
            let (want, mag) = naive(a.view(), a.t());
            let gamma = 2.0 * (d as f64 * u) / (1.0 - d as f64 * u);
            for i in 0..n {
                for j in 0..n {
                    assert_eq!(g[[i, j]].to_bits(), g[[j, i]].to_bits());
                    assert!((g[[i, j]] - want[[i, j]]).abs() <= gamma * mag[[i, j]]);
                }
            }
        }
    }
}
