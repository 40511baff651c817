//! Tiled kernels for many classes: NC4's nearest class mean and classifier decision in column
//! tiles of certified f32 products (or, on the classes route, both from the NC1 pass's product:
//! [`NccFromProjection`], [`ClassifierFromProjection`]), and the pairwise statistics of `C`
//! vectors (NC2, GNC2, CDNV, the ETF error of a cross product) in tiles of a Gram product.
//!
//! Memory: `O(C·d)` for an f32 copy of the scores' right-hand side plus, per thread, a block
//! of rows and one tile of products; `C × C` matrices only on the classes route, where
//! `C ≤ d` makes each no larger than the means. Time: `O(N·d·C)` for NC4 on the features
//! route. On the classes route, `O(C²·d)` once for each side's numbers; then the
//! nearest-class-mean side costs `O(N·C)` for a row that the separation test decides from the
//! NC1 product alone and `O(K·C)` for the others (see [`NccFromProjection`]), the classifier
//! side `O(K + C)` for a row its own separation test decides, `O(K·C)` for the others
//! (`O(d·C)` for a row its f32 scores cannot decide: see [`ClassifierFromProjection`]). `O(C²·d)` for the pairs.

use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayViewMut2};

use crate::features::Classifier;
use crate::kernels::{argmin_combination, dot, residuals, top_two, weighted_sum_sq};
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
    /// `aᵀ` (d × C) rounded to f32, row-major: the right-hand side of the tile products,
    /// built on first use (the classes route's sides use `a` only for the rows their own
    /// scores leave open, and often for none).
    at32: std::sync::OnceLock<Array2<f32>>,
    /// `β · max_c ‖a_c‖` (see `F32Logits` in metrics: `β = 1.01 (d + 3) 2⁻²⁴`).
    bound: f64,
}

impl Scores {
    fn new(a: Array2<f64>, base: Vec<f64>) -> Self {
        let dim = a.ncols();
        let beta = 1.01 * (dim as f64 + 3.0) * f64::powi(2.0, -24);
        let a_max = a
            .rows()
            .into_iter()
            .map(|r| r.dot(&r).sqrt())
            .fold(0.0f64, f64::max);
        Self {
            a,
            base,
            at32: std::sync::OnceLock::new(),
            bound: beta * a_max,
        }
    }

    /// `aᵀ` rounded to f32 (`d × C`, row-major), built on the first call.
    fn at32(&self) -> &Array2<f32> {
        self.at32.get_or_init(|| {
            let (classes, dim) = self.a.dim();
            Array2::from_shape_fn((dim, classes), |(j, c)| self.a[[c, j]] as f32)
        })
    }
}

/// Per-thread buffers of the NC4 products (the rows of a block are a separate `Vec<T>`).
#[derive(Default)]
struct Scratch {
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

/// The unweighted mean of the class means (`C × d`), the centre `g` of both sides of NC4.
fn centre(means: ArrayView2<'_, f64>) -> Vec<f64> {
    let classes = means.nrows() as f64;
    (0..means.ncols())
        .map(|j| means.column(j).sum() / classes)
        .collect()
}

/// The NCC side of NC4 (`a_c = 2(μ_c − g)`, `base_c = −‖μ_c − g‖²`) and the `g` it is
/// centred on: the unweighted mean of the class means.
fn ncc_scores(means: ArrayView2<'_, f64>) -> (Vec<f64>, Scores) {
    let (classes, dim) = means.dim();
    let g = centre(means);
    let centred = Array2::from_shape_fn((classes, dim), |(c, j)| means[[c, j]] - g[j]);
    let ncc_base: Vec<f64> = centred.rows().into_iter().map(|r| -r.dot(&r)).collect();
    (g, Scores::new(centred * 2.0, ncc_base))
}

/// The classifier side of NC4 about `g` (`a_c = w_c`, `base_c = g·w_c + b_c`).
fn net_scores(clf: &Classifier, g: &[f64]) -> Scores {
    Scores::new(clf.w.to_owned(), net_base(clf, g))
}

/// `g·w_c + b_c` per class.
fn net_base(clf: &Classifier, g: &[f64]) -> Vec<f64> {
    clf.w
        .rows()
        .into_iter()
        .zip(clf.b.iter())
        .map(|(w, b)| w.iter().zip(g).map(|(a, b)| a * b).sum::<f64>() + b)
        .collect()
}

/// `a b` with blocks of 64 rows of `a` on all cores (`linalg::matmul` runs on the calling
/// thread). Each entry is a `k`-term dot product with the error bound of any order (`γ_k`),
/// which is all [`ClassifierFromProjection`] assumes of its products.
fn matmul_on_all_cores(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> Array2<f64> {
    let mut out = Array2::<f64>::zeros((a.nrows(), b.ncols()));
    let blocks = map_row_blocks_with(
        a.nrows(),
        64,
        || (),
        |_, r0, r1| crate::linalg::matmul(a.slice(s![r0..r1, ..]), b).expect("shapes fit"),
    );
    let mut at = 0;
    for block in blocks {
        let rows = block.nrows();
        out.slice_mut(s![at..at + rows, ..]).assign(&block);
        at += rows;
    }
    out
}

impl Scores {
    /// The f64 rule for one row `x`: `argmax_c (a_c·(x − g) + base_c)`, first index on ties.
    fn exact<T: Copy + Into<f64>>(&self, x: &[T], g: &[f64]) -> usize {
        let h = centred_row(x, g);
        let full: Vec<f64> = (0..self.base.len()).map(|c| self.product(c, &h)).collect();
        argmin_combination(&self.base, -1.0, &full, -1.0)
    }

    /// `a_c·h` in f64 (the f64 rule's product; [`dot`]'s order of the sums).
    fn product(&self, c: usize, h: &[f64]) -> f64 {
        let a = self.a.row(c);
        dot(a.as_slice().expect("standard layout"), h)
    }

    /// [`exact`](Self::exact) for a row whose approximate scores `score(c)` (the f32 products
    /// and their base, within `err` of this rule's scores) did not certify a winner, computing
    /// the f64 rule only for the classes that can still win: those within the certification
    /// margin `2·err + 4ε·max(|top|, |s_c|)` of the best approximate score `top`. Any other
    /// class loses to the best by more than that margin, the test by which [`certified`] and
    /// the projected scores accept a winner, so it is not the f64 rule's winner either; the
    /// candidates are scored by the same f64 sums as `exact`, in index order (first index on
    /// ties): the same decision at `O(candidates · d)` instead of `O(C · d)` scalar work. Falls
    /// back to `exact` when a score is not finite.
    fn exact_among<T: Copy + Into<f64>>(
        &self,
        x: &[T],
        g: &[f64],
        score: impl Fn(usize) -> f64,
        err: f64,
    ) -> usize {
        let classes = self.base.len();
        let mut top = f64::NEG_INFINITY;
        for c in 0..classes {
            let v = score(c);
            if !v.is_finite() {
                return self.exact(x, g);
            }
            top = top.max(v);
        }
        let h = centred_row(x, g);
        let (mut best, mut at) = (f64::INFINITY, None);
        for c in 0..classes {
            let v = score(c);
            if top - v > 2.0 * err + 4.0 * f64::EPSILON * top.abs().max(v.abs()) {
                continue;
            }
            let full = self.product(c, &h);
            // As argmin_combination(base, −1, full, −1): NaN skipped, first index on ties.
            let rule = -self.base[c] + -full;
            if rule < best {
                (best, at) = (rule, Some(c));
            }
        }
        at.unwrap_or_else(|| self.exact(x, g))
    }
}

/// `x − g` in f64.
fn centred_row<T: Copy + Into<f64>>(x: &[T], g: &[f64]) -> Vec<f64> {
    x.iter().zip(g).map(|(&x, g)| x.into() - g).collect()
}

/// The decisions of each of `sides` for the rows `xb` (`rows × dim`, row-major) of one block:
/// f32 products in column tiles, certified or recomputed in f64 (see [`nc4_mismatches`]).
fn block_decisions<T: Copy + Into<f64> + Sync>(
    xb: &[T],
    rows: usize,
    g: &[f64],
    sides: &[&Scores],
    buf: &mut Scratch,
) -> Vec<Vec<usize>> {
    let dim = g.len();
    let Scratch {
        h: h_row,
        h32,
        z: z_buf,
        best,
    } = buf;
    // h − g per row in f32 for the products, and ‖h − g‖ for the error bound; the f64 row is
    // recomputed only for a row the f32 scores cannot decide.
    h_row.resize(dim, 0.0);
    h32.clear();
    h32.resize(rows * dim, 0.0);
    let mut norms = vec![0.0f64; rows];
    let mut sink = [0.0f64];
    for (i, norm) in norms.iter_mut().enumerate() {
        let sq = residuals(
            &mut h_row[..dim],
            &mut h32[i * dim..(i + 1) * dim],
            &xb[i * dim..(i + 1) * dim],
            &[0],
            g,
            dim,
            &mut sink,
        );
        *norm = sq.sqrt();
    }
    sides
        .iter()
        .map(|s| {
            let classes = s.base.len();
            best.clear();
            best.resize(rows, (f64::NEG_INFINITY, 0, f64::NEG_INFINITY));
            for c0 in (0..classes).step_by(NC4_TILE) {
                let w = NC4_TILE.min(classes - c0);
                z_buf.resize(rows * w, 0.0);
                let h32 = ArrayView2::from_shape((rows, dim), &h32[..rows * dim])
                    .expect("rows × d buffer");
                let z = ArrayViewMut2::from_shape((rows, w), &mut z_buf[..rows * w])
                    .expect("rows × w buffer");
                matmul_into(z, false, h32, s.at32().slice(s![.., c0..c0 + w]))
                    .expect("shapes built here fit");
                let base = &s.base[c0..c0 + w];
                for (i, b) in best.iter_mut().enumerate() {
                    let (top, k, second) = top_two(base, &z_buf[i * w..(i + 1) * w]);
                    // Merge (top, second) of this tile into the row's running pair; on equal
                    // values the earlier tile (smaller index) stays first.
                    if top > b.0 {
                        b.2 = b.0.max(second);
                        b.0 = top;
                        b.1 = c0 + k;
                    } else {
                        b.2 = b.2.max(top);
                    }
                }
            }
            // With one tile, `z_buf` still holds every row's scores for all classes.
            let one_tile = classes <= NC4_TILE;
            let mut z_row = vec![0.0f32; if one_tile { 0 } else { classes }];
            (0..rows)
                .map(|i| {
                    certified(best[i], norms[i], s.bound).unwrap_or_else(|| {
                        // The row's f32 scores for all classes, to find the classes that can
                        // still win: from the one tile's product, or computed again.
                        let z_row: &[f32] = if one_tile {
                            &z_buf[i * classes..(i + 1) * classes]
                        } else {
                            let h = ArrayView2::from_shape((1, dim), &h32[i * dim..(i + 1) * dim])
                                .expect("one row");
                            let z = ArrayViewMut2::from_shape((1, classes), &mut z_row[..])
                                .expect("one row");
                            matmul_into(z, false, h, s.at32().view())
                                .expect("shapes built here fit");
                            &z_row
                        };
                        let score = |c: usize| s.base[c] + f64::from(z_row[c]);
                        s.exact_among(&xb[i * dim..(i + 1) * dim], g, score, s.bound * norms[i])
                    })
                })
                .collect()
        })
        .collect()
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
    let (g, ncc) = ncc_scores(means);
    let net = classifier.map(|clf| net_scores(clf, &g));
    let mut sides = vec![&ncc];
    match (&net, pred) {
        (Some(s), _) => sides.push(s),
        (None, Some(_)) => {}
        (None, None) => return 0,
    }
    let partials = map_row_blocks_with(
        x.nrows(),
        NC4_BLOCK_ROWS,
        Default::default,
        |buf: &mut (Vec<T>, Scratch), start, end| {
            let rows = end - start;
            let xb = row_major(x.slice_move(s![start..end, ..]), &mut buf.0);
            let d = block_decisions(xb, rows, &g, &sides, &mut buf.1);
            let other: Vec<usize> = match pred {
                Some(p) if net.is_none() => p[start..end].iter().map(|&v| v as usize).collect(),
                _ => d[1].clone(),
            };
            d[0].iter().zip(&other).filter(|(a, b)| a != b).count() as u64
        },
    );
    partials.into_iter().sum()
}

/// The classifier's decision `argmax_c (w_c·h + b_c)` for every row (first index on ties),
/// from the same certified f32 tiles as [`nc4_mismatches`] (centred on the mean of `means`):
/// the classes route's decisions before [`ClassifierFromProjection`], now the tests' second
/// reference for it.
#[cfg(test)]
pub(crate) fn classifier_decisions<T: Copy + Into<f64> + Sync>(
    x: ArrayView2<'_, T>,
    means: ArrayView2<'_, f64>,
    classifier: &Classifier,
) -> Vec<u32> {
    let g = centre(means);
    let net = net_scores(classifier, &g);
    let blocks = map_row_blocks_with(
        x.nrows(),
        NC4_BLOCK_ROWS,
        Default::default,
        |buf: &mut (Vec<T>, Scratch), start, end| {
            let xb = row_major(x.slice_move(s![start..end, ..]), &mut buf.0);
            let mut d = block_decisions(xb, end - start, &g, &[&net], &mut buf.1);
            d.pop().expect("one side")
        },
    );
    blocks.into_iter().flatten().map(|c| c as u32).collect()
}

/// Nearest class means from the NC1 pass's own product, on the classes route.
///
/// There the NC1 pass computes, for each row `h` of label `y`, `z_k = r·q̂_k` with `r = h − μ_y`
/// and `Q̂ = Ṁᵀ V̂` (`d × K`, `K ≤ C` right singular vectors of the centred means `Ṁ`, `C × d`
/// with rows `μ̇_c = μ_c − g`; so `Q̂ V̂ᵀ = Ṁᵀ` up to rounding). Then
///
/// ```text
/// z'_k = (h − g)·q̂_k = z_k + (Ṁ Q̂)_{yk}                   (Ṁ Q̂: C × K, once)
/// (h − g)·μ̇_c = z'·v̂_c − (h − g)·D_c,   D = Q̂ V̂ᵀ − Ṁᵀ      (d × C, measured once)
/// NCC: argmin_c ‖h − μ_c‖² = argmax_c s_c,   s_c = 2 (h − g)·μ̇_c − ‖μ̇_c‖²
/// ```
///
/// so the scores are one f32 product `Z'·(2V̂ᵀ)` of `N·K·C` multiply-adds, where the tiled
/// route ([`nc4_mismatches`]) takes `N·d·C` (at `C = 1,000`, `d = 2,048`: half). They are
/// certified like the tiled route's, with every step's error bounded: for class `c`, with
/// `H = ‖r‖ + ‖μ̇_y‖ ≥ ‖h − g‖` and `v̂_c` row `c` of `V̂`,
///
/// ```text
/// |ŝ_c − s_c| ≤ 2 ‖v̂_c‖ β_K ‖ẑ'‖            the f32 product (β_K = 1.01 (K + 3) 2⁻²⁴, `F32Logits`)
///             + 2 ‖v̂_c‖ γ_{d+2} H ‖Q̂‖_F     the f64 evaluation of z' (two d-term products, one sum)
///             + 2 H δ_c                     the identity: δ_c = ‖D̂_c‖ + γ_{K+1} (‖Q̂‖_F ‖v̂_c‖ + ‖μ̇_c‖) ≥ ‖D_c‖
///             + γ_d ‖μ̇_c‖²                  the f64 base
/// ```
///
/// (`γ_m = m u / (1 − m u)`, `u = 2⁻⁵³`). A row is decided by its f32 winner when the best
/// score beats the second by more than twice the largest of these bounds over `c`, plus
/// `4 ε max(|best|, |second|)` for the f64 additions; otherwise by the tiled route's f64 rule
/// on the row itself ([`Scores::exact`]), so the decisions are those of [`nc4_mismatches`].
pub(crate) struct NccFromProjection {
    /// `Ṁ Q̂` (`C × K`): row `y` turns a row's `z` into `z'`.
    shift: Array2<f64>,
    /// `‖μ̇_c‖` per class.
    centred_norm: Vec<f64>,
    /// `2 V̂ᵀ` in f32 (`K × C`), the right-hand side of the score product.
    rhs32: Array2<f32>,
    /// `−‖μ̇_c‖²`.
    base: Vec<f64>,
    /// `2 max_c ‖v̂_c‖ β_K`: the bound's factor of `‖ẑ'‖`.
    z_coef: f64,
    /// `2 max_c ‖v̂_c‖ γ_{d+2} ‖Q̂‖_F + 2 max_c δ_c`: the bound's factor of `H`.
    h_coef: f64,
    /// `γ_d max_c ‖μ̇_c‖²`.
    base_err: f64,
    /// The test that decides a row near its own class mean without scores.
    separation: Separation,
    /// The tiled route's NCC scores and centre, for rows the f32 scores cannot decide.
    exact: (Vec<f64>, Scores),
}

/// Per-thread buffers of [`NccFromProjection::decide`] and
/// [`ClassifierFromProjection::decide`] (used one after the other).
#[derive(Default)]
pub(crate) struct NccScratch {
    z32: Vec<f32>,
    scores: Vec<f32>,
    norms: Vec<f64>,
    /// The rows of the block that the separation test (or the classifier's margin) left open.
    open: Vec<usize>,
    /// The classifier's rows that its separation test left to the score product.
    scored: Vec<usize>,
    /// The classifier's open rows, gathered, and the tiled route's buffers for them.
    gathered: Vec<f64>,
    tiled: Scratch,
}

impl NccScratch {
    /// `scores = z32 · rhs` in f32 for the first `rows` rows of `z32` (`rows × K`, `rhs`
    /// `K × C`), into the first `rows × C` values of `scores`.
    fn score_product(&mut self, rows: usize, rhs: ArrayView2<'_, f32>) {
        let (k, classes) = rhs.dim();
        self.scores.resize(rows * classes, 0.0);
        let z32 =
            ArrayView2::from_shape((rows, k), &self.z32[..rows * k]).expect("rows × K buffer");
        let scores = ArrayViewMut2::from_shape((rows, classes), &mut self.scores[..rows * classes])
            .expect("rows × C buffer");
        matmul_into(scores, false, z32, rhs).expect("shapes built here fit");
    }
}

impl NccFromProjection {
    /// From the reference `means` (`C × d`), the centred means `centred` (`C × d`), `q` (`Q̂`,
    /// `d × K`) and `v_t` (`V̂ᵀ`, `K × C`) of the classes route.
    pub(crate) fn new(
        means: ArrayView2<'_, f64>,
        centred: ArrayView2<'_, f64>,
        q: ArrayView2<'_, f64>,
        v_t: ArrayView2<'_, f64>,
    ) -> Self {
        let (classes, dim) = centred.dim();
        let k = q.ncols();
        // Ṁ Q̂ and the rows of D̂ᵀ = V̂ Q̂ᵀ − Ṁ, 64 classes per block on all cores.
        let blocks = map_row_blocks_with(
            classes,
            64,
            || (),
            |_, a, b| {
                let rows = centred.slice(s![a..b, ..]);
                let shift = crate::linalg::matmul(rows, q).expect("b × d times d × K");
                let mut d_t = crate::linalg::matmul(v_t.slice(s![.., a..b]).t(), q.t())
                    .expect("b × K times K × d");
                d_t -= &rows;
                let d_norms: Vec<f64> = d_t.rows().into_iter().map(|r| r.dot(&r).sqrt()).collect();
                (shift, d_norms)
            },
        );
        let mut shift = Array2::<f64>::zeros((classes, k));
        let mut d_norm = Vec::with_capacity(classes);
        let mut at = 0;
        for (block, norms) in blocks {
            let b = block.nrows();
            shift.slice_mut(s![at..at + b, ..]).assign(&block);
            d_norm.extend(norms);
            at += b;
        }
        let q_fro = q.iter().map(|v| v * v).sum::<f64>().sqrt();
        let v_norm: Vec<f64> = v_t
            .columns()
            .into_iter()
            .map(|c| c.dot(&c).sqrt())
            .collect();
        let centred_norm: Vec<f64> = centred
            .rows()
            .into_iter()
            .map(|r| r.dot(&r).sqrt())
            .collect();
        let v_max = v_norm.iter().copied().fold(0.0f64, f64::max);
        let delta: Vec<f64> = (0..classes)
            .map(|c| d_norm[c] + gamma(k + 1) * (q_fro * v_norm[c] + centred_norm[c]))
            .collect();
        let delta_max = delta.iter().copied().fold(0.0f64, f64::max);
        let mu_max = centred_norm.iter().copied().fold(0.0f64, f64::max);
        let beta = 1.01 * (k as f64 + 3.0) * f64::powi(2.0, -24);
        let exact = ncc_scores(means);
        let separation = Separation::new(centred, q, v_t, &centred_norm, &delta, &exact.1);
        Self {
            shift,
            rhs32: v_t.mapv(|v| (2.0 * v) as f32),
            base: centred_norm.iter().map(|n| -(n * n)).collect(),
            z_coef: 2.0 * v_max * beta,
            h_coef: 2.0 * v_max * gamma(dim + 2) * q_fro + 2.0 * delta_max,
            base_err: gamma(dim) * mu_max * mu_max,
            centred_norm,
            separation,
            exact,
        }
    }

    /// Whether the separation test decides the row (NC1 product `z`, `‖h − μ_y‖`, label `y`)
    /// as nearest to its own class mean, without scores (see [`Separation`]).
    pub(crate) fn separated(&self, z: &[f64], resid_norm: f64, y: usize) -> bool {
        self.separation.holds(&z[..self.columns()], resid_norm, y)
    }

    /// `K`: the columns of the NC1 product that the scores need.
    pub(crate) fn columns(&self) -> usize {
        self.rhs32.nrows()
    }

    /// The nearest class mean of each row of a block: `z` holds the rows' NC1 products
    /// (`rows × zs`, the first `K` columns used), `resid_norms` their `‖h − μ_y‖`, `labels`
    /// and `xb` (`rows × d`, row-major) the rows themselves (for the f64 rule). Appends to `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decide<T: Copy + Into<f64>>(
        &self,
        z: &[f64],
        zs: usize,
        resid_norms: &[f64],
        labels: &[u32],
        xb: &[T],
        buf: &mut NccScratch,
        out: &mut Vec<u32>,
    ) {
        let rows = labels.len();
        let (k, classes) = self.rhs32.dim();
        let dim = xb.len() / rows.max(1);
        let first = out.len();
        out.resize(first + rows, 0);
        buf.z32.clear();
        buf.norms.clear();
        buf.open.clear();
        // Rows near their own mean are decided by the separation test; the others get `z'`.
        for (i, &y) in labels.iter().enumerate() {
            let zi = &z[i * zs..i * zs + k];
            if self.separated(zi, resid_norms[i], y as usize) {
                out[first + i] = y;
                continue;
            }
            buf.open.push(i);
            let shift = self.shift.row(y as usize);
            let shift = shift.as_slice().expect("standard layout");
            let mut sq = 0.0f64;
            for (&zk, &p) in zi.iter().zip(shift) {
                let v = zk + p;
                sq += v * v;
                buf.z32.push(v as f32);
            }
            buf.norms.push(sq.sqrt());
        }
        let open = buf.open.len();
        if open == 0 {
            return;
        }
        buf.score_product(open, self.rhs32.view());
        let (g, exact) = &self.exact;
        for (j, &i) in buf.open.iter().enumerate() {
            let y = labels[i];
            let (top, idx, second) =
                top_two(&self.base, &buf.scores[j * classes..(j + 1) * classes]);
            let h = resid_norms[i] + self.centred_norm[y as usize];
            let e = self.z_coef * buf.norms[j] + self.h_coef * h + self.base_err;
            let margin = 2.0 * e + 4.0 * f64::EPSILON * top.abs().max(second.abs());
            let c = if top.is_finite() && top - second > margin {
                idx
            } else {
                let z = &buf.scores[j * classes..(j + 1) * classes];
                let score = |c: usize| self.base[c] + f64::from(z[c]);
                exact.exact_among(&xb[i * dim..(i + 1) * dim], g, score, e)
            };
            out[first + i] = c as u32;
        }
    }
}

/// The classifier's decisions from the NC1 pass's own product, on the classes route.
///
/// There the NC1 pass computes `z = r Q̂` (`r = h − μ_y`, `Q̂` the `d × K` product of
/// [`NccFromProjection`], columns `q̂_k` of norms `σ_k`) for each row `h` of label `y`. With
/// `A = diag(1/σ_k²) Q̂ᵀ Wᵀ` (`K × C`, computed once: `Q̂ a_c` is nearly the projection of `w_c`
/// onto the span of the centred means, since the `q̂_k` are nearly orthogonal) and the exact
/// remainder `e_c = w_c − Q̂ a_c`, for every class `c`, exactly,
///
/// ```text
/// w_c·h + b_c = T_yc + z·a_c + r·e_c,     T_yc = μ_y·w_c + b_c     (T: C × C, once)
/// |r·e_c| ≤ ‖r‖ δ_c,                      δ_c ≥ ‖e_c‖               (measured once)
/// ```
///
/// so the scores `T_yc + z·a_c` are one f32 product `Z·A` of `N·K·C` multiply-adds, where the
/// tiled route (`classifier_decisions`) takes `N·d·C` (at `C = 1,000`, `d = 2,048`: half),
/// and the part of `w_c` outside the span of the means is bounded instead of computed. When the
/// classifier lies mostly in that span (NC3, self-duality: what a collapsing network's does),
/// `δ_c` is small. Every other step's error is bounded too (`γ_m = m u/(1 − m u)`,
/// `u = 2⁻⁵³`; `β_K = 1.01 (K + 3) 2⁻²⁴` as for `F32Logits` in metrics):
///
/// ```text
/// |ŝ_c − s_c| ≤ β_K ‖ẑ‖ a_max                      the f32 product of ẑ and A rounded to f32
///             + γ_{d+2} ‖r‖ ‖Q̂‖_F a_max             the f64 ẑ (|ẑ_k − z_k| ≤ γ_{d+2} ‖r‖ σ_k)
///             + ‖r‖ δ_max                           the remainder, not computed
///             + γ_{d+1} (m_max w_max + b_max)       the f64 table T
/// ```
///
/// (`a_max, w_max, b_max, m_max` the largest `‖a_c‖, ‖w_c‖, |b_c|, ‖μ_y‖`;
/// `δ_c = (‖ê_c‖ + γ_{K+1} ‖Q̂‖_F ‖a_c‖)(1 + γ_{d+4})` from the computed `ê_c = fl(w_c − Q̂ a_c)`);
/// and the f64 rule the tiled route falls back on ([`Scores::exact`], about `g`, the mean of the
/// class means) is within `γ_{d+1} w_max (‖r‖ + ‖μ_y − g‖) + γ_{d+1} (w_max ‖g‖ + b_max)` of the
/// exact scores. A row is decided by its f32 winner when the best score beats the second by
/// more than twice the sum of these bounds (with `‖r‖` the computed norm times `1 + γ_{d+2}`),
/// plus `4 ε max(|best|, |second|)` for the f64 additions; otherwise by the tiled route on the
/// row (`classifier_decisions`: its certified f32 product over all `d` features, then the f64
/// rule), gathered with the block's other open rows into one product. A classifier far from the
/// span of the means (as at initialisation) leaves most rows open and costs about what the tiled
/// route alone did. Every decision is the f64 rule's, which the tests check row by row.
///
/// **Separation test** (before any score): a row whose own class certainly wins needs no
/// scores, like [`Separation`] on the nearest-class-mean side. With weights `ω_k = 1/σ_k²`,
/// Cauchy–Schwarz bounds every other class's score by numbers known per row and per class:
///
/// ```text
/// s_c ≤ T_yc + ‖z‖_ω p_c + ‖r‖ δ_c        (c ≠ y),   ‖z‖²_ω = Σ_k ω_k z_k²,  p_c ≥ ‖a_c‖_{1/ω}
/// s_y ≥ T_yy + z·a_y − ‖r‖ δ_y
/// ```
///
/// (`p_c` over the `k` with `ω_k > 0`; where `ω_k = 0`, `q̂_k = 0` and row `k` of `A` is 0). With
/// the roundings bounded — `‖ẑ − z‖_ω ≤ γ_{d+2} τ ‖r‖` (`τ = √K (1 + γ_{d+4})`, as for
/// [`Separation`]), the f64 `ẑ·a_y` within `γ_K ‖ẑ‖_ω p_y`, the table's `γ_{d+1} (m_max w_max +
/// b_max)`, the computed norms rounded up by `1 + γ_{K+3}` and `1 + γ_{d+2}` — the row is
/// decided as `y`, by the exact scores and by the f64 rule, when the lower bound of `s_y` beats
/// the largest upper bound of the others by more than twice the f64 rule's error (above) plus
/// `γ_16` times the sum of the magnitudes involved. That is `O(K + C)` per row instead of
/// `O(K·C)`. It holds for most rows of a collapsing network (`‖r‖` small against the gaps
/// `T_yy − T_yc`); on the `bench_many_classes` data (`x = μ_y + 0.8 N(0, I)`, `W = M + 0.3 N(0,
/// I)`, C = 1,000, d = 2,048) for 44 % of the rows (78 % with the refinement below).
///
/// **Refinement.** Cauchy–Schwarz charges every class the whole `‖z‖_ω p_c`, which the actual
/// `z·a_c` rarely approaches; a row usually fails the test through a few classes `c` with a
/// large `T_yc` (classes whose means the classifier confuses with `y`'s). For each class whose
/// bound reaches the limit (at most [`MAX_REFINED`] of them; a row with more goes to the score
/// product), the bound is replaced by the class's own computed score, bounded like `s_y`:
///
/// ```text
/// s_c ≤ T_yc + fl(ẑ·a_c) + (γ_K ‖ẑ‖_ω + ‖ẑ − z‖_ω) p_c + ‖r‖ δ_c
/// ```
///
/// (`|fl(ẑ·a_c) − ẑ·a_c| ≤ γ_K Σ_k |ẑ_k a_ck| ≤ γ_K ‖ẑ‖_ω p_c`, and `(ẑ − z)·a_c ≤ ‖ẑ − z‖_ω p_c`,
/// both by the weighted Cauchy–Schwarz inequality; `|fl(ẑ·a_c)| ≤ ‖ẑ‖_ω p_c (1 + γ_K)` is within
/// the magnitudes already counted). `K` multiply-adds per refined class instead of the `K·C`
/// of the score product: on the same data the test then decides 78 % of the rows instead of
/// 44 % (72 % with at most 16 refined classes, 84 % with 64, which measured no faster), and
/// the whole measure took 5.93 s instead of 6.16 s (CPU 12.5 s instead of 13.0 s; A/B in one
/// run, `bench_many_classes --random 100000 2048 1000 1 --all-only`); with an unrelated
/// classifier (`--unrelated-classifier`) no row passes either way, and the time is unchanged.
pub(crate) struct ClassifierFromProjection {
    /// `A` rounded to f32 (`K × C`), the right-hand side of the score product.
    a32: Array2<f32>,
    /// `T_yc = μ_y·w_c + b_c` (`C × C`).
    table: Array2<f64>,
    /// `‖μ_y − g‖` per class.
    centred_norm: Vec<f64>,
    /// `β_K a_max`: the bound's factor of `‖ẑ‖`.
    z_coef: f64,
    /// `(γ_{d+2} ‖Q̂‖_F a_max + δ_max + γ_{d+1} w_max)(1 + γ_{d+2})`: its factor of the computed `‖r‖`.
    r_coef: f64,
    /// `γ_{d+1} w_max`: its factor of `‖μ_y − g‖`.
    y_coef: f64,
    /// `γ_{d+1} (m_max w_max + b_max) + γ_{d+1} (w_max ‖g‖ + b_max)`.
    const_err: f64,
    /// The tiled route's classifier scores and centre, for rows the f32 scores cannot decide.
    exact: (Vec<f64>, Scores),
    /// The separation test's numbers (see [`ClassifierFromProjection`]).
    sep: NetSeparation,
}

/// What [`ClassifierFromProjection::decide`] did with a block's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NetTally {
    /// Rows decided (as their own label) by the separation test, without scores.
    pub(crate) separated: usize,
    /// Rows the scores through `z` left to the tiled route.
    pub(crate) open: usize,
}

/// The classifier's separation test (see [`ClassifierFromProjection`]): per class `c`,
/// `p_c ≥ ‖a_c‖_{1/ω}` and `δ_c`; per label `y`, `max_c |T_yc|`; and the constant factors.
struct NetSeparation {
    /// `Aᵀ` (`C × K`): row `y` is `a_y`, for `ẑ·a_y`.
    a_t: Array2<f64>,
    /// `ω_k = 1/σ_k²` (0 where `σ_k = 0`).
    omega: Vec<f64>,
    p: Vec<f64>,
    p_max: f64,
    delta: Vec<f64>,
    delta_max: f64,
    t_abs_max: Vec<f64>,
    /// `γ_{d+2} τ`, `τ = √K (1 + γ_{d+4})`: `‖ẑ − z‖_ω ≤ γ_{d+2} τ ‖r‖`.
    z_err: f64,
    /// `γ_K`: the f64 `ẑ·a_y`.
    dot_err: f64,
    /// `1 + γ_{K+3}`: the computed `‖ẑ‖_ω` rounded up.
    zw_up: f64,
    /// `1 + γ_{d+2}`: the computed `‖r‖` rounded up.
    r_up: f64,
    /// `γ_{d+1} (m_max w_max + b_max)`: the table `T`.
    t_err: f64,
    /// `γ_{d+1} w_max`: the f64 rule's factor of `‖r‖` and of `‖μ_y − g‖`.
    rule_coef: f64,
    /// `γ_{d+1} (w_max ‖g‖ + b_max)`: the f64 rule's constant.
    rule_const: f64,
}

impl NetSeparation {
    /// Whether the row (NC1 product `z`, its first `K` entries; computed `‖r‖`; label `y`;
    /// `T_y·` and `‖μ_y − g‖`) is certainly decided as `y` by the f64 rule (`false` also for
    /// NaN). A class whose Cauchy–Schwarz bound reaches the limit is bounded again through its
    /// own computed `ẑ·a_c` (see [`ClassifierFromProjection`], "refinement"), for at most
    /// [`MAX_REFINED`] classes per row.
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // `!(u < limit)` is meant to hold for NaN
    fn holds(&self, z: &[f64], resid_norm: f64, y: usize, t_row: &[f64], centred: f64) -> bool {
        let r = resid_norm * self.r_up;
        let zw = weighted_sum_sq(z, &self.omega).sqrt() * self.zw_up;
        let zp = zw + self.z_err * r;
        let a_y = self.a_t.row(y);
        let a_y = a_y.as_slice().expect("standard layout");
        let zy = dot(z, a_y);
        let (p, delta) = (&self.p[..], &self.delta[..]);
        // The error of a computed ẑ·a_c, per unit of p_c: rounding of the f64 dot product and
        // the difference ẑ − z.
        let dot_bound = self.dot_err * zw + self.z_err * r;
        let lo = t_row[y] + zy - self.t_err - dot_bound * p[y] - r * delta[y];
        let rule = self.rule_coef * (r + centred) + self.rule_const;
        let mag = t_row[y].abs()
            + zy.abs()
            + self.t_abs_max[y]
            + 2.0 * self.t_err
            + zp * (p[y] + self.p_max)
            + r * (delta[y] + self.delta_max);
        // Every other class's upper bound `u_c` must satisfy `u_c + t_err < lo − 2·rule − γ₁₆·mag`.
        let limit = lo - self.t_err - 2.0 * rule - gamma(16) * mag;
        let mut refine = [0usize; MAX_REFINED];
        let mut count = 0;
        for range in [0..y, y + 1..t_row.len()] {
            for c in range {
                // `!(u < limit)`: also for NaN.
                if !(t_row[c] + zp * p[c] + r * delta[c] < limit) {
                    if count == MAX_REFINED {
                        return false;
                    }
                    refine[count] = c;
                    count += 1;
                }
            }
        }
        refine[..count].iter().all(|&c| {
            let a_c = self.a_t.row(c);
            let a_c = a_c.as_slice().expect("standard layout");
            t_row[c] + dot(z, a_c) + dot_bound * p[c] + r * delta[c] < limit
        })
    }
}

/// Classes per row whose Cauchy–Schwarz bound [`NetSeparation::holds`] may replace by the
/// class's own computed score (`K` multiply-adds each); a row with more goes to the score
/// product (`K·C` multiply-adds in f32), which is then cheaper.
const MAX_REFINED: usize = 32;

impl ClassifierFromProjection {
    /// From the reference `means` (`C × d`), `q` (`Q̂`, `d × K`) and the classifier.
    pub(crate) fn new(
        means: ArrayView2<'_, f64>,
        q: ArrayView2<'_, f64>,
        clf: &Classifier,
    ) -> Self {
        let (classes, dim) = means.dim();
        let k = q.ncols();
        let norm = |r: ArrayView1<'_, f64>| r.dot(&r).sqrt();
        let inv_sigma_sq: Vec<f64> = q
            .columns()
            .into_iter()
            .map(|c| {
                let s = c.dot(&c);
                if s > 0.0 {
                    1.0 / s
                } else {
                    0.0
                }
            })
            .collect();
        let mut a = matmul_on_all_cores(q.t(), clf.w.t());
        for (mut row, s) in a.rows_mut().into_iter().zip(&inv_sigma_sq) {
            row *= *s;
        }
        let a_norm: Vec<f64> = a.columns().into_iter().map(norm).collect();
        // ‖ê_c‖ of the remainders, 64 classes per block on all cores.
        let a_ref = &a;
        let e_norm: Vec<f64> = map_row_blocks_with(
            classes,
            64,
            || (),
            |_, c0, c1| {
                let mut e_t = crate::linalg::matmul(a_ref.slice(s![.., c0..c1]).t(), q.t())
                    .expect("b × K times K × d");
                e_t -= &clf.w.slice(s![c0..c1, ..]);
                e_t.rows().into_iter().map(norm).collect::<Vec<f64>>()
            },
        )
        .into_iter()
        .flatten()
        .collect();
        let q_fro = q.iter().map(|v| v * v).sum::<f64>().sqrt();
        let max = |v: &mut dyn Iterator<Item = f64>| v.fold(0.0f64, f64::max);
        let delta: Vec<f64> = (0..classes)
            .map(|c| (e_norm[c] + gamma(k + 1) * q_fro * a_norm[c]) * (1.0 + gamma(dim + 4)))
            .collect();
        let delta_max = max(&mut delta.iter().copied());
        let a_max = max(&mut a_norm.iter().copied());
        let w_max = max(&mut clf.w.rows().into_iter().map(norm));
        let b_max = max(&mut clf.b.iter().map(|b| b.abs()));
        let m_max = max(&mut means.rows().into_iter().map(norm));
        let mut table = matmul_on_all_cores(means, clf.w.t());
        for mut row in table.rows_mut() {
            row += &clf.b;
        }
        let g = centre(means);
        let g_norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        // ‖μ_y − g‖, rounded up (its own rounding: 1 + γ_{d+2}).
        let centred_norm: Vec<f64> = means
            .rows()
            .into_iter()
            .map(|m| {
                let sq: f64 = m.iter().zip(&g).map(|(a, b)| (a - b) * (a - b)).sum();
                sq.sqrt() * (1.0 + gamma(dim + 2))
            })
            .collect();
        let beta = 1.01 * (k as f64 + 3.0) * f64::powi(2.0, -24);
        let net = net_scores(clf, &g);
        // ‖a_c‖_{1/ω} over the k with ω_k > 0 (where ω_k = 0, row k of A is 0), rounded up.
        let p: Vec<f64> = a
            .columns()
            .into_iter()
            .map(|col| {
                let sq: f64 = col
                    .iter()
                    .zip(&inv_sigma_sq)
                    .filter(|(_, &w)| w > 0.0)
                    .map(|(&v, &w)| v * v / w)
                    .sum();
                sq.sqrt() * (1.0 + gamma(k + 3))
            })
            .collect();
        let t_err = gamma(dim + 1) * (m_max * w_max + b_max);
        let sep = NetSeparation {
            a_t: a.t().as_standard_layout().into_owned(),
            p_max: max(&mut p.iter().copied()),
            p,
            delta,
            delta_max,
            t_abs_max: table
                .rows()
                .into_iter()
                .map(|r| r.iter().fold(0.0f64, |m, v| m.max(v.abs())))
                .collect(),
            omega: inv_sigma_sq,
            z_err: gamma(dim + 2) * (k as f64).sqrt() * (1.0 + gamma(dim + 4)),
            dot_err: gamma(k),
            zw_up: 1.0 + gamma(k + 3),
            r_up: 1.0 + gamma(dim + 2),
            t_err,
            rule_coef: gamma(dim + 1) * w_max,
            rule_const: gamma(dim + 1) * (w_max * g_norm + b_max),
        };
        Self {
            a32: a.mapv(|v| v as f32),
            table,
            centred_norm,
            z_coef: beta * a_max,
            r_coef: (gamma(dim + 2) * q_fro * a_max + delta_max + gamma(dim + 1) * w_max)
                * (1.0 + gamma(dim + 2)),
            y_coef: gamma(dim + 1) * w_max,
            const_err: gamma(dim + 1) * (m_max * w_max + b_max)
                + gamma(dim + 1) * (w_max * g_norm + b_max),
            exact: (g, net),
            sep,
        }
    }

    /// `K`: the columns of the NC1 product that the scores need.
    pub(crate) fn columns(&self) -> usize {
        self.a32.nrows()
    }

    /// The classifier's decision for each row of a block: `z` holds the rows' NC1 products
    /// (`rows × zs`, the first `K` columns used), `resid_norms` their computed `‖h − μ_y‖`,
    /// `labels` and `xb` (`rows × d`, row-major) the rows themselves (for the f64 rule).
    /// Appends to `out`; says how many rows the separation test decided and how many the
    /// scores through `z` left to the tiled route.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decide<T: Copy + Into<f64>>(
        &self,
        z: &[f64],
        zs: usize,
        resid_norms: &[f64],
        labels: &[u32],
        xb: &[T],
        buf: &mut NccScratch,
        out: &mut Vec<u32>,
    ) -> NetTally {
        let rows = labels.len();
        if rows == 0 {
            return NetTally::default();
        }
        let (k, classes) = self.a32.dim();
        let dim = xb.len() / rows;
        let first = out.len();
        out.resize(first + rows, 0);
        buf.z32.clear();
        buf.norms.clear();
        buf.scored.clear();
        // Rows whose own class certainly wins are decided without scores; the others get them.
        for (i, &y) in labels.iter().enumerate() {
            let y = y as usize;
            let zi = &z[i * zs..i * zs + k];
            let t_row = self.table.row(y);
            let t_row = t_row.as_slice().expect("standard layout");
            if self
                .sep
                .holds(zi, resid_norms[i], y, t_row, self.centred_norm[y])
            {
                out[first + i] = y as u32;
                continue;
            }
            buf.scored.push(i);
            buf.z32.extend(zi.iter().map(|&v| v as f32));
            buf.norms.push(zi.iter().map(|v| v * v).sum::<f64>().sqrt());
        }
        let scored = buf.scored.len();
        buf.open.clear();
        if scored > 0 {
            buf.score_product(scored, self.a32.view());
        }
        for (j, &i) in buf.scored.iter().enumerate() {
            let y = labels[i] as usize;
            let base = self.table.row(y);
            let base = base.as_slice().expect("standard layout");
            let (top, idx, second) = top_two(base, &buf.scores[j * classes..(j + 1) * classes]);
            let e = self.z_coef * buf.norms[j]
                + self.r_coef * resid_norms[i]
                + self.y_coef * self.centred_norm[y]
                + self.const_err;
            let margin = 2.0 * e + 4.0 * f64::EPSILON * top.abs().max(second.abs());
            if top.is_finite() && top - second > margin {
                out[first + i] = idx as u32;
            } else {
                buf.open.push(i);
            }
        }
        // The rows left open (near ties, or a classifier far from the span of the means, as
        // at initialisation) go to the tiled route: its certified f32 product over all `d`
        // features, and the f64 rule for the rows that does not decide either. One block
        // product, not a scalar f64 rule per row.
        let open = buf.open.len();
        if open > 0 {
            buf.gathered.clear();
            for &i in &buf.open {
                buf.gathered
                    .extend(xb[i * dim..(i + 1) * dim].iter().map(|&v| v.into()));
            }
            let (g, exact) = &self.exact;
            let decided = block_decisions(&buf.gathered, open, g, &[exact], &mut buf.tiled);
            for (&i, &c) in buf.open.iter().zip(&decided[0]) {
                out[first + i] = c as u32;
            }
        }
        NetTally {
            separated: rows - scored,
            open,
        }
    }
}

/// `γ_m = m u / (1 − m u)`, `u = 2⁻⁵³`: the relative error bound of an `m`-term f64 sum of
/// products (Higham, Lemma 3.1).
fn gamma(m: usize) -> f64 {
    let mu = m as f64 * f64::EPSILON / 2.0;
    mu / (1.0 - mu)
}

/// A sufficient condition, checked per row from the NC1 product alone, for a row's nearest
/// class mean to be its own class's: the row then needs no scores (`N·K·C` multiply-adds saved
/// for each such row). Features that collapse (the subject of this crate) sit close to their
/// own class mean, so it decides most rows there; on spread-out rows it fails and the scores
/// decide as before.
///
/// For a row `h` of label `y` with `r = h − μ_y` and any class `c ≠ y`, with `Δ_c = μ_c − μ_y`,
///
/// ```text
/// ‖h − μ_c‖² − ‖h − μ_y‖² = ‖Δ_c‖² − 2 r·Δ_c
/// ```
///
/// and `Δ_c` lies in the span of the centred means, where `r·Δ_c` is seen through the NC1
/// product `z = r Q̂` (`Q̂ = Ṁᵀ V̂`, `Ṁᵀ = Q̂ V̂ᵀ − D` with the measured identity defect `D`):
/// `r·(μ̇_c − μ̇_y) = z·(v̂_c − v̂_y) − r·(D_c − D_y)`. Cauchy–Schwarz with weights
/// `σ_k = ‖q̂_k‖` (`Q̂ = W S` for orthonormal `W`, so `σ_k = s_k` and both factors below are
/// Euclidean norms of the projections; for any positive `σ` the inequality holds):
///
/// ```text
/// z·(v̂_c − v̂_y) ≤ ‖z‖_{1/σ} A_cy,   ‖z‖²_{1/σ} = Σ_k z_k²/σ_k²,   A_cy = ‖σ ∘ (v̂_c − v̂_y)‖
/// ```
///
/// (terms with `σ_k = 0` have `q̂_k = 0`, so `z_k = 0`, and are left out). With every rounding
/// bounded — the computed `ẑ` (`|ẑ_k − z_k| ≤ γ_{d+2} ‖r‖ σ_k`, so `‖ẑ − z‖_{1/σ} ≤ γ_{d+2} ‖r‖ τ`,
/// `τ = √K (1 + γ_{d+4})`), the centred means' rounding `e_cy = 2u (‖μ̇_c‖ + ‖μ̇_y‖)`, the defects
/// `δ_c ≥ ‖D_c‖` of [`NccFromProjection`], and the f64 rule's own score error
/// `E ≤ γ_{d+8} (7 n H + 4 n²)` (`n = max_c ‖μ_c − g‖`, `H = ‖r‖ + ‖μ_y − g‖ ≥ ‖h − g‖`, with a
/// margin over its `γ_{d+3} (2 n H + n²)`) — the row's nearest mean is `y`, strictly, for the
/// exact scores and for the f64 rule's, when for every `c ≠ y`
///
/// ```text
/// 2 (a + γ_{d+2} τ b) Â_cy + 2 b (δ_c + δ_y + e_cy + 7 γ_{d+8} n) < L̂_cy − 2 ε_y,
///     ε_y = γ_{d+8} (7 n ‖μ_y − g‖ + 4 n²)
/// ```
///
/// with `a ≥ ‖ẑ‖_{1/σ}` and `b ≥ ‖r‖` the row's two numbers (computed, times `1 + 4 γ_{K+d+8}`),
/// `Â_cy ≥ A_cy` and `L̂_cy ≤ (‖μ̇_c − μ̇_y‖ − e_cy)₊²` from the `C × C` Grams of `σ ∘ V̂` and `Ṁ`
/// (each with its rounding, `3 γ` of the two squared norms). Dividing by `Â_cy` makes it
/// two numbers per class, computed once (`O(C²·(d + K))`):
///
/// ```text
/// 2 a + 2 b κ_y < ρ_y,   ρ_y = min_{c≠y} (L̂_cy − 2 ε_y) / Â_cy,
///                        κ_y = max_{c≠y} (δ_c + δ_y + e_cy + 7 γ_{d+8} n) / Â_cy + γ_{d+2} τ
/// ```
///
/// (a class whose `L̂_cy − 2 ε_y ≤ 0` gives `ρ_y = −∞`: no row of `y` passes). Without the
/// weights (`‖r‖` for `‖z‖_{1/σ}`) the test would see the whole residual, also the part outside
/// the span of the means, which at `d ≫ C` is most of it.
struct Separation {
    /// `1/σ_k²`, or 0 where `σ_k = 0`.
    inv_sigma_sq: Vec<f64>,
    /// `ρ_y` per class.
    radius: Vec<f64>,
    /// `κ_y` per class.
    kappa: Vec<f64>,
    /// `1 + 4 γ_{K+d+8}`: the rounding of the row's own numbers and of the comparison.
    slack: f64,
}

impl Separation {
    /// From the centred means `Ṁ` (`C × d`), `Q̂` (`d × K`), `V̂ᵀ` (`K × C`), `‖μ̇_c‖`, the
    /// defect bounds `δ_c`, and the f64 rule's scores (whose `base_c = −‖μ_c − g‖²`).
    fn new(
        centred: ArrayView2<'_, f64>,
        q: ArrayView2<'_, f64>,
        v_t: ArrayView2<'_, f64>,
        centred_norm: &[f64],
        delta: &[f64],
        rule: &Scores,
    ) -> Self {
        let (classes, dim) = centred.dim();
        let k = q.ncols();
        let u = f64::EPSILON / 2.0;
        let sigma: Vec<f64> = q.columns().into_iter().map(|c| c.dot(&c).sqrt()).collect();
        let inv_sigma_sq: Vec<f64> = sigma
            .iter()
            .map(|&s| if s > 0.0 { 1.0 / (s * s) } else { 0.0 })
            .collect();
        let kept = sigma.iter().filter(|&&s| s > 0.0).count();
        let tau = (kept as f64).sqrt() * (1.0 + gamma(dim + 4));
        // σ ∘ V̂ as C × K rows.
        let p = Array2::from_shape_fn((classes, k), |(c, j)| v_t[[j, c]] * sigma[j]);
        let p_sq: Vec<f64> = p.rows().into_iter().map(|r| r.dot(&r)).collect();
        let m_sq: Vec<f64> = centred_norm.iter().map(|n| n * n).collect();
        let rule_norm: Vec<f64> = rule.base.iter().map(|b| (-b).max(0.0).sqrt()).collect();
        let n_max = rule_norm.iter().copied().fold(0.0f64, f64::max);
        let g8 = gamma(dim + 8);
        let rule_h = 7.0 * g8 * n_max;
        let g_m = 3.0 * gamma(dim.max(k) + 16);
        let z_err = gamma(dim + 2) * tau;
        let (down, up) = (1.0 - 4.0 * u, 1.0 + 4.0 * u);
        let blocks = map_row_blocks_with(
            classes,
            64,
            || (),
            |_, a, b| {
                let lg = crate::linalg::matmul(centred.slice(s![a..b, ..]), centred.t())
                    .expect("b × d times d × C");
                let pg =
                    crate::linalg::matmul(p.slice(s![a..b, ..]), p.t()).expect("b × K times K × C");
                (a..b)
                    .map(|y| {
                        let eps = g8 * (7.0 * n_max * rule_norm[y] + 4.0 * n_max * n_max);
                        let (mut rho, mut kappa) = (f64::INFINITY, 0.0f64);
                        for c in (0..classes).filter(|&c| c != y) {
                            let lam2 = m_sq[y] + m_sq[c]
                                - 2.0 * lg[[y - a, c]]
                                - g_m * (m_sq[y] + m_sq[c]);
                            let lam = lam2.max(0.0).sqrt() * (1.0 - 2.0 * u);
                            let e = 2.0 * u * (centred_norm[y] + centred_norm[c]);
                            let lo = (lam - e).max(0.0);
                            let f = lo * lo * down - 2.0 * eps;
                            let a2 = p_sq[y] + p_sq[c] - 2.0 * pg[[y - a, c]]
                                + g_m * (p_sq[y] + p_sq[c]);
                            let big_a = a2.max(0.0).sqrt() * (1.0 + 2.0 * u);
                            rho = rho.min(if f > 0.0 {
                                f / big_a * down
                            } else {
                                f64::NEG_INFINITY
                            });
                            kappa =
                                kappa.max((delta[c] + delta[y] + e + rule_h) / big_a * up + z_err);
                        }
                        (rho, kappa)
                    })
                    .collect::<Vec<_>>()
            },
        );
        let (radius, kappa) = blocks.into_iter().flatten().unzip();
        Self {
            inv_sigma_sq,
            radius,
            kappa,
            slack: 1.0 + 4.0 * gamma(k + dim + 8),
        }
    }

    /// Whether the row with NC1 product `z` (first `K` entries), `‖h − μ_y‖ = resid_norm` and
    /// label `y` is certainly nearest to its own class mean (`false` also for NaN).
    fn holds(&self, z: &[f64], resid_norm: f64, y: usize) -> bool {
        let a = weighted_sum_sq(z, &self.inv_sigma_sq).sqrt() * self.slack;
        let b = resid_norm * self.slack;
        (2.0 * a + 2.0 * b * self.kappa[y]) * self.slack < self.radius[y]
    }
}
