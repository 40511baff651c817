//! The crate's own product with a packed right-hand side (`kernels::PackedRhs`: `B` packed
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
//! [`super::product`].

pub(crate) use crate::kernels::{PackedRhs, MR};

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
