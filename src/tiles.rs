//! Tiled kernels for many classes: NC4's nearest class mean and classifier decision in column
//! tiles of certified f32 products, and the pairwise statistics of `C` vectors (NC2, GNC2,
//! CDNV, the ETF error of a cross product) in tiles of a Gram product.
//!
//! Memory: `O(C·d)` for an f32 copy of the scores' right-hand side plus, per thread, a block
//! of rows and one tile of products; never a `C × C` matrix. Time: `O(N·d·C)` for NC4, `O(C²·d)` for the pairs.

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};

use crate::features::Classifier;
use crate::kernels::{argmin_combination, residuals, top_two};
use crate::linalg::matmul_into;
use crate::parallel::map_row_blocks_with;
use crate::stats::row_major;

/// Rows per block of the NC4 pass (each block streams every tile of the right-hand side once).
const NC4_BLOCK_ROWS: usize = 1024;
/// Columns per tile of the NC4 products: a tile's product for a block of rows is `1024 × 1024`
/// f32 (4 MiB), so up to 1,024 classes take one product per side and block (with the earlier 480,
/// C = 1,000 took three, the last one 40 columns wide, each packing the block's rows again).
const NC4_TILE: usize = 1024;

/// One side of NC4 as `argmax_c (h'·a_c + base_c)` over column tiles, with `h' = h − g`:
/// the nearest class mean (`a_c = 2(μ_c − g)`, `base_c = −‖μ_c − g‖²`) or the classifier
/// (`a_c = w_c`, `base_c = g·w_c + b_c`).
struct Scores {
    /// `a` (C × d, f64) for the fallback.
    a: Array2<f64>,
    base: Vec<f64>,
    /// `aᵀ` (d × C) rounded to f32, row-major: the right-hand side of the tile products.
    at32: Array2<f32>,
    /// `β · max_c ‖a_c‖` (see `F32Logits` in metrics: `β = 1.01 (d + 3) 2⁻²⁴`).
    bound: f64,
}

impl Scores {
    fn new(a: Array2<f64>, base: Vec<f64>) -> Self {
        let (classes, dim) = a.dim();
        let at32 = Array2::from_shape_fn((dim, classes), |(j, c)| a[[c, j]] as f32);
        let beta = 1.01 * (dim as f64 + 3.0) * f64::powi(2.0, -24);
        let a_max = a
            .rows()
            .into_iter()
            .map(|r| r.dot(&r).sqrt())
            .fold(0.0f64, f64::max);
        Self {
            a,
            base,
            at32,
            bound: beta * a_max,
        }
    }
}

/// Per-thread buffers of [`nc4_mismatches`].
struct Scratch<T> {
    rows: Vec<T>,
    /// One row of `h − g` in f64 (the residual kernel's output; the f32 copy is what is used).
    h: Vec<f64>,
    h32: Vec<f32>,
    z: Vec<f32>,
    best: Vec<(f64, usize, f64)>,
}

/// The winner of one row from its running `(best, index, second best)` if the gap beats the
/// f32 error bound; else `None` (the caller recomputes in f64).
fn certified(best: (f64, usize, f64), norm: f64, bound: f64) -> Option<usize> {
    let (top, idx, second) = best;
    let margin = 2.0 * bound * norm + 4.0 * f64::EPSILON * top.abs().max(second.abs());
    (top.is_finite() && top - second > margin).then_some(idx)
}

/// The number of rows whose nearest class mean (`argmin_c ‖h − μ_c‖`) differs from the
/// classifier's decision (`argmax_c w_c·h + b_c`) or, without a classifier, from `pred`.
///
/// ```text
/// NCC:        argmin_c ‖h − μ_c‖² = argmax_c (2 (h − g)·(μ_c − g) − ‖μ_c − g‖²)   (any g; g = mean of the μ_c)
/// classifier: argmax_c (w_c·h + b_c) = argmax_c ((h − g)·w_c + g·w_c + b_c)
/// ```
///
/// Both are products of the rows with `C` columns, done in f32 in column tiles (a running best
/// and second best per row), and certified: when the best beats the second by more than the
/// f32 rounding bound `2 β ‖h − g‖ max_c ‖a_c‖` (see `F32Logits` in `metrics`), the f32 winner
/// is the f64 winner; otherwise the row's scores are recomputed in f64 (first index on ties).
pub(crate) fn nc4_mismatches<T: Copy + Into<f64> + Sync>(
    x: ArrayView2<'_, T>,
    means: ArrayView2<'_, f64>,
    classifier: Option<&Classifier>,
    pred: Option<&[u32]>,
) -> u64 {
    let (classes, dim) = means.dim();
    let g: Vec<f64> = (0..dim)
        .map(|j| means.column(j).sum() / classes as f64)
        .collect();
    let centred = Array2::from_shape_fn((classes, dim), |(c, j)| means[[c, j]] - g[j]);
    let ncc_base: Vec<f64> = centred.rows().into_iter().map(|r| -r.dot(&r)).collect();
    let ncc = Scores::new(centred * 2.0, ncc_base);
    let net = classifier.map(|clf| {
        let base: Vec<f64> = clf
            .w
            .rows()
            .into_iter()
            .zip(clf.b.iter())
            .map(|(w, b)| w.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>() + b)
            .collect();
        Scores::new(clf.w.to_owned(), base)
    });
    let n = x.nrows();
    let stride = dim;
    let partials = map_row_blocks_with(
        n,
        NC4_BLOCK_ROWS,
        || Scratch::<T> {
            rows: Vec::new(),
            h: Vec::new(),
            h32: Vec::new(),
            z: Vec::new(),
            best: Vec::new(),
        },
        |buf, start, end| {
            let rows = end - start;
            let Scratch {
                rows: rows_buf,
                h: h_row,
                h32,
                z: z_buf,
                best: best_buf,
            } = buf;
            let xb = row_major(x.slice_move(s![start..end, ..]), rows_buf);
            // h − g per row in f32 for the products, and ‖h − g‖ for the error bound; the f64
            // row is recomputed only for a row the f32 scores cannot decide.
            h_row.resize(dim, 0.0);
            h32.clear();
            h32.resize(rows * stride, 0.0);
            let mut norms = vec![0.0f64; rows];
            let mut sink = [0.0f64];
            for (i, norm) in norms.iter_mut().enumerate() {
                let sq = residuals(
                    &mut h_row[..dim],
                    &mut h32[i * stride..i * stride + dim],
                    &xb[i * dim..(i + 1) * dim],
                    &[0],
                    &g,
                    dim,
                    &mut sink,
                );
                *norm = sq.sqrt();
            }
            let decide = |s: &Scores,
                          z_buf: &mut Vec<f32>,
                          best: &mut Vec<(f64, usize, f64)>|
             -> Vec<usize> {
                best.clear();
                best.resize(rows, (f64::NEG_INFINITY, 0, f64::NEG_INFINITY));
                for c0 in (0..classes).step_by(NC4_TILE) {
                    let w = NC4_TILE.min(classes - c0);
                    let zs = w;
                    z_buf.resize(rows * zs, 0.0);
                    let h32 = ArrayView2::from_shape((rows, dim), &h32[..rows * dim])
                        .expect("rows × d buffer");
                    let z = ArrayViewMut2::from_shape((rows, w), &mut z_buf[..rows * w])
                        .expect("rows × w buffer");
                    matmul_into(z, false, h32, s.at32.slice(s![.., c0..c0 + w]))
                        .expect("shapes built here fit");
                    let base = &s.base[c0..c0 + w];
                    for i in 0..rows {
                        let (top, k, second) = top_two(base, &z_buf[i * zs..i * zs + w]);
                        let b = &mut best[i];
                        // Merge (top, second) of this tile into the row's running pair; on
                        // equal values the earlier tile (smaller index) stays first.
                        if top > b.0 {
                            b.2 = b.0.max(second);
                            b.0 = top;
                            b.1 = c0 + k;
                        } else {
                            b.2 = b.2.max(top);
                        }
                    }
                }
                (0..rows)
                    .map(|i| {
                        certified(best[i], norms[i], s.bound).unwrap_or_else(|| {
                            let h: Vec<f64> = xb[i * dim..(i + 1) * dim]
                                .iter()
                                .zip(&g)
                                .map(|(&x, g)| x.into() - g)
                                .collect();
                            let full: Vec<f64> =
                                s.a.rows()
                                    .into_iter()
                                    .map(|a| a.iter().zip(&h).map(|(p, q)| p * q).sum())
                                    .collect();
                            argmin_combination(&s.base, -1.0, &full, -1.0)
                        })
                    })
                    .collect()
            };
            let nearest = decide(&ncc, z_buf, best_buf);
            let other: Vec<usize> = match (&net, pred) {
                (Some(s), _) => decide(s, z_buf, best_buf),
                (None, Some(p)) => p[start..end].iter().map(|&v| v as usize).collect(),
                (None, None) => return 0u64,
            };
            nearest.iter().zip(&other).filter(|(a, b)| a != b).count() as u64
        },
    );
    partials.into_iter().sum()
}
