//! Dense linear algebra of the crate, one algorithm per file, behind one facade:
//!
//! * [`product`]: matrix products `C (+)= A·B` on strided views and the Gram product `A·Aᵀ`
//!   (lower triangle by blocks), through the `gemm` crate (AVX-512 / AVX2 + FMA / NEON
//!   micro-kernels chosen at run time), single-threaded per call;
//! * [`packed`]: the crate's own packed-right-hand-side product, kept where it beats `gemm`
//!   (see its docs and `scripts/bench-linalg`); x86-64 only: on other targets (aarch64) its
//!   callers are served by `gemm` per panel, so every product here is vectorised on both;
//! * [`cholesky`]: Cholesky solve of a symmetric positive definite system;
//! * `svd`: the thin SVD of a small matrix (Householder QR + one-sided Jacobi) used by NC1's
//!   pseudo-inverse and the class-mean projection.
//!
//! Every matrix-matrix product of the metrics goes through here (vector dot products and
//! element-wise passes stay in `kernels`). Accumulation is in f64, except for the f32 products
//! that the NC4 tiles and the classifier logits certify (their bound is stated in
//! [`product`]). Errors are [`LinalgError`]: shapes that do not fit and matrices that are not
//! positive definite; nothing here panics on data.

pub mod cholesky;
pub mod packed;
pub mod product;
mod svd;

pub use cholesky::cholesky_solve;
pub use product::{gram, gram_lower_into, matmul, matmul_into, Scalar};
pub(crate) use svd::thin_svd;

/// A failure of a linear-algebra routine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinalgError {
    /// The operands of a product (or a solve) do not fit: `left` is `m × k`, `right` must be
    /// `k × n` and the destination `m × n`.
    #[error("matrix shapes do not fit: {}×{} times {}×{} into {}×{}", left.0, left.1, right.0, right.1, dst.0, dst.1)]
    Shape {
        left: (usize, usize),
        right: (usize, usize),
        dst: (usize, usize),
    },
    /// A Cholesky pivot was not above the tolerance: `relative` is the pivot divided by the
    /// largest diagonal entry.
    #[error("matrix is not positive definite: pivot {pivot} is {relative:e} of the largest diagonal entry")]
    NotPositiveDefinite { pivot: usize, relative: f64 },
}
