//! Generalized Neural Collapse for many classes (`C > d + 1`, where no simplex ETF exists):
//! hyperspherical uniformity (GNC2), the CDNV with a distance exponent, and the self-duality
//! variants of NC3 — and the tiled pairwise statistics behind them and behind NC2 at large `C`.
//!
//! Notation as in [`crate::metrics`]: `ṁ_c = μ_c − μ_G` the centred class means, `û_c = ṁ_c/‖ṁ_c‖`
//! their directions, `σ²_c` the within-class variances, `W` the `C × d` classifier.
//!
//! ```text
//! GNC2 log       = mean_{c<c'} log(1 / ‖û_c − û_c'‖)                  (logarithmic energy)
//! GNC2 Riesz-s   = mean_{c<c'} ‖û_c − û_c'‖^(−s)                      (Riesz s-energy, s > 0)
//! CDNV_p         = mean_{c<c'} (σ²_c + σ²_c') / (2 (‖μ_c − μ_c'‖²)^p)  (p = 1: Galanti et al.;
//!                                                                    p = 2: Wu & Papyan)
//! NC3 per class  = mean_c ‖w_c/‖w_c‖ − û_c‖²                          (self-duality per class, in [0, 4])
//! NC3 ETF(WṀ)    = ‖ WṀᵀ/‖WṀᵀ‖_F − (I − 11ᵀ/C)/√(C−1) ‖_F             (ETF error of the C × C
//!                                                                    cross product; 0 for a
//!                                                                    self-dual simplex ETF)
//! ```
//!
//! GNC2 follows Liu et al. (2023, *Generalizing and decoupling neural collapse via hyperspherical
//! uniformity gap*) and the `kernel_stats` of the NC libraries that follow it (mean over the
//! `C(C−1)/2` pairs of the kernel of the normalised centred means). Lower is more uniform. For
//! `C ≤ d + 1` both energies are minimal exactly at the regular simplex, where every chord is
//! `‖û_c − û_c'‖² = 2C/(C−1)`:
//!
//! ```text
//! GNC2 log   ≥ −½ log(2C/(C−1)),      GNC2 Riesz-s ≥ (2C/(C−1))^(−s/2)
//! ```
//!
//! (Jensen: `Σ_{c≠c'} ‖û_c − û_c'‖² = 2C² − 2‖Σ_c û_c‖² ≤ 2C²` and both kernels are convex
//! decreasing in the squared chord). For `C` points evenly spaced on a circle (chords
//! `2 sin(πk/C)`), `GNC2 log = −log C / (C − 1)` and `GNC2 Riesz-2 = (C + 1)/12`.
//!
//! All pairwise quantities are computed in tiles of `TILE × TILE` pairs of a Gram product
//! (`O(C²·d)` time, `O(TILE²)` memory per thread, never a `C × C` matrix). A distance taken from
//! the Gram (`‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b`) is recomputed from the difference itself when it
//! is below `1e-2 (‖a‖² + ‖b‖²)`, so cancellation costs at most ~`1e-12` relative.

use ndarray::{s, Array2, ArrayView2};
use serde::Serialize;

use crate::check;
use crate::check::CheckError;
use crate::linalg::matmul;
use crate::parallel::map_row_blocks_with;
use crate::stats::MetricError;

/// Results of the generalized metrics: [`MetricError`] by default.
type Result<T, E = MetricError> = std::result::Result<T, E>;

/// The four NC2 quantities of a set of `C` vectors (centred class means or classifier rows);
/// also `metrics::Nc2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Nc2 {
    /// `std(‖v_c‖) / mean(‖v_c‖)` (unbiased std).
    pub equinorm: f64,
    /// Unbiased std of the pairwise cosines, over `c < c'`; `NaN` for `C = 2` (a single pair
    /// has no unbiased std).
    pub equiangularity: f64,
    /// Mean of `|cos + 1/(C−1)|` over `c < c'`.
    pub max_angle: f64,
    /// `‖G/‖G‖_F − (I − 11ᵀ/C)/√(C−1)‖_F` with `G` the Gram matrix of the vectors.
    pub etf_distance: f64,
}

/// Rows per tile of the pairwise products.
const TILE: usize = 256;
/// Below this fraction of `‖a‖² + ‖b‖²`, a squared distance from the Gram is recomputed exactly.
const RECOMPUTE: f64 = 1e-2;

/// The default Riesz exponent `s` of GNC2 (the Coulomb energy of the Thomson problem).
pub const DEFAULT_RIESZ_S: f64 = 1.0;

/// Options of the generalized metrics: set on [`NcParams`](crate::metrics::NcParams) with
/// [`generalized`](crate::metrics::NcParams::generalized).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GeneralizedParams {
    /// Compute GNC2 and the NC3 variants even when `C ≤ d + 1` (they are always computed when
    /// `C > d + 1`, where the simplex ETF cannot exist).
    pub always: bool,
    /// The exponent `p` of the CDNV's squared distance (1 = Galanti et al., the default).
    pub cdnv_exponent: f64,
    /// The Riesz exponent `s > 0` of GNC2 (default [`DEFAULT_RIESZ_S`]).
    pub riesz_s: f64,
}

impl Default for GeneralizedParams {
    fn default() -> Self {
        Self {
            always: false,
            cdnv_exponent: 1.0,
            riesz_s: DEFAULT_RIESZ_S,
        }
    }
}

impl GeneralizedParams {
    /// Fails with [`MetricError::BadParameter`] unless the exponents are finite and positive.
    pub fn check(&self) -> Result<()> {
        if !(self.cdnv_exponent.is_finite() && self.cdnv_exponent > 0.0) {
            return Err(MetricError::BadParameter {
                name: "cdnv exponent",
                value: self.cdnv_exponent,
            });
        }
        if !(self.riesz_s.is_finite() && self.riesz_s > 0.0) {
            return Err(MetricError::BadParameter {
                name: "Riesz s",
                value: self.riesz_s,
            });
        }
        Ok(())
    }
}

/// The generalized metrics of one report; `None` where not computed (no classifier for NC3)
/// and `notes` saying why a value is undefined or absent.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Generalized {
    /// GNC2 with the logarithmic kernel.
    pub gnc2_log: Option<f64>,
    /// GNC2 with the Riesz-s kernel.
    pub gnc2_riesz: Option<f64>,
    /// The `s` of [`gnc2_riesz`](Self::gnc2_riesz).
    pub riesz_s: Option<f64>,
    /// The CDNV's distance exponent `p` when it is not 1 (then `cdnv` is `CDNV_p`).
    pub cdnv_exponent: Option<f64>,
    /// NC3 per class: `mean_c ‖ŵ_c − û_c‖²`.
    pub nc3_per_class: Option<f64>,
    /// NC3 as the ETF error of `WṀᵀ`.
    pub nc3_etf_wm: Option<f64>,
    /// Why a value is undefined (NaN/null) or was not computed.
    pub notes: Vec<String>,
}

/// Every statistic of the pairs `c < c'` of `C` vectors, from one tiled Gram pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairwiseStats {
    /// NC2 of the vectors (as [`nc2_of_rows`](crate::metrics::nc2_of_rows)).
    pub nc2: Nc2,
    /// GNC2 log energy of their directions.
    pub gnc2_log: f64,
    /// GNC2 Riesz-s energy of their directions.
    pub gnc2_riesz: f64,
    /// `CDNV_p` when variances were given.
    pub cdnv: Option<f64>,
}

/// Running sums of one tile row.
#[derive(Default, Clone)]
struct Partial {
    /// Welford count, mean and M2 of the cosines.
    n: f64,
    mean: f64,
    m2: f64,
    abs_sum: f64,
    s_gg: f64,
    s_gr: f64,
    s_rr: f64,
    log_sum: f64,
    riesz_sum: f64,
    cdnv_sum: f64,
    coincident: Option<(usize, usize)>,
}

impl Partial {
    /// Chan et al.'s merge of two (count, mean, M2), and sums.
    fn merge(&mut self, o: &Partial) {
        let n = self.n + o.n;
        if n > 0.0 {
            let delta = o.mean - self.mean;
            self.m2 += o.m2 + delta * delta * self.n * o.n / n;
            self.mean += delta * o.n / n;
        }
        self.n = n;
        self.abs_sum += o.abs_sum;
        self.s_gg += o.s_gg;
        self.s_gr += o.s_gr;
        self.s_rr += o.s_rr;
        self.log_sum += o.log_sum;
        self.riesz_sum += o.riesz_sum;
        self.cdnv_sum += o.cdnv_sum;
        self.coincident = match (self.coincident, o.coincident) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

fn sq_dist(a: ndarray::ArrayView1<'_, f64>, b: ndarray::ArrayView1<'_, f64>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// `(chord²)^(−s/2)`, without `powf` for the common `s = 1, 2`.
#[inline]
fn riesz(chord2: f64, s: f64) -> f64 {
    if s == 1.0 {
        1.0 / chord2.sqrt()
    } else if s == 2.0 {
        1.0 / chord2
    } else {
        chord2.powf(-0.5 * s)
    }
}

/// `x^p` with `p = 1` exact.
fn pow(x: f64, p: f64) -> f64 {
    if p == 1.0 {
        x
    } else {
        x.powf(p)
    }
}

/// NC2, GNC2 and (with `variances`) `CDNV_p` of the `C` rows of `v`, in tiles (see the module
/// docs for the formulas). Pass the centred class means (and `σ²_c`); the CDNV's distances are
/// those of the rows, which are the class means' distances since centring does not move them.
///
/// Equal to [`nc2_of_rows`](crate::metrics::nc2_of_rows) (which forms the `C × C` Gram) up to
/// rounding; equiangularity is `NaN` for `C = 2` (one pair has no unbiased std).
///
/// # Errors
/// [`MetricError::TooFewClasses`] for fewer than 2 rows, [`CheckError::NonFiniteEntry`](crate::check::CheckError::NonFiniteEntry),
/// [`MetricError::ZeroNorm`] for a zero row (naming it with `what`),
/// [`MetricError::CoincidentMeans`] when two rows coincide and variances were given,
/// [`MetricError::BadParameter`] for a non-positive exponent.
pub fn pairwise_stats(
    v: ArrayView2<'_, f64>,
    variances: Option<&[f64]>,
    cdnv_exponent: f64,
    riesz_s: f64,
    what: &str,
) -> Result<PairwiseStats> {
    GeneralizedParams {
        always: true,
        cdnv_exponent,
        riesz_s,
    }
    .check()?;
    let (c, _d) = v.dim();
    if c < 2 {
        return Err(MetricError::TooFewClasses { classes: c });
    }
    check::check_finite_entries(v.view(), what)?;
    if let Some(var) = variances {
        if var.len() != c {
            return Err(MetricError::Check(CheckError::LengthMismatch {
                rows: c,
                labels: var.len(),
            }));
        }
    }
    let v = v.as_standard_layout().into_owned();
    let n2: Vec<f64> = v.rows().into_iter().map(|r| r.dot(&r)).collect();
    let norms: Vec<f64> = n2.iter().map(|x| x.sqrt()).collect();
    if let Some(i) = norms.iter().position(|&x| x == 0.0) {
        return Err(MetricError::ZeroNorm {
            what: format!("{what} {i}"),
        });
    }
    let unit = Array2::from_shape_fn(v.dim(), |(a, j)| v[[a, j]] / norms[a]);
    let cf = c as f64;
    let shift = 1.0 / (cf - 1.0);
    let scale = 1.0 / (cf - 1.0).sqrt();
    let (e_diag, e_off) = ((1.0 - 1.0 / cf) * scale, -scale / cf);
    let trace: f64 = n2.iter().sum();
    let alpha0 = (cf - 1.0).sqrt() / trace;
    let p = cdnv_exponent;
    let tiles = c.div_ceil(TILE);
    // Work unit u: tile rows u and tiles−1−u (balanced triangle).
    let units = tiles.div_ceil(2);
    let partials = map_row_blocks_with(
        units,
        1,
        || (),
        |_, u, _| {
            let mut acc = Partial::default();
            let mut rows = vec![u];
            if tiles - 1 - u != u {
                rows.push(tiles - 1 - u);
            }
            for ti in rows {
                let a0 = ti * TILE;
                let a1 = (a0 + TILE).min(c);
                let va = v.slice(s![a0..a1, ..]);
                for tj in ti..tiles {
                    let b0 = tj * TILE;
                    let b1 = (b0 + TILE).min(c);
                    let g = matmul(va, v.slice(s![b0..b1, ..]).t()).expect("tile shapes fit");
                    let mut t = Partial::default();
                    for a in a0..a1 {
                        let first = if ti == tj { a + 1 } else { b0 };
                        for b in first..b1 {
                            let gab = g[[a - a0, b - b0]];
                            let cos = (gab / (norms[a] * norms[b])).clamp(-1.0, 1.0);
                            t.n += 1.0;
                            let delta = cos - t.mean;
                            t.mean += delta / t.n;
                            t.m2 += delta * (cos - t.mean);
                            t.abs_sum += (cos + shift).abs();
                            let r = alpha0 * gab - e_off;
                            t.s_gg += 2.0 * gab * gab;
                            t.s_gr += 2.0 * gab * r;
                            t.s_rr += 2.0 * r * r;
                            let mut chord2 = 2.0 - 2.0 * cos;
                            if chord2 < 2.0 * RECOMPUTE {
                                chord2 = sq_dist(unit.row(a), unit.row(b));
                            }
                            t.log_sum += -0.5 * chord2.ln();
                            t.riesz_sum += riesz(chord2, riesz_s);
                            if let Some(var) = variances {
                                let mut d2 = n2[a] + n2[b] - 2.0 * gab;
                                if d2 < RECOMPUTE * (n2[a] + n2[b]) {
                                    d2 = sq_dist(v.row(a), v.row(b));
                                }
                                if d2 == 0.0 {
                                    t.coincident = t.coincident.or(Some((a, b)));
                                }
                                t.cdnv_sum += (var[a] + var[b]) / (2.0 * pow(d2, p));
                            }
                        }
                    }
                    acc.merge(&t);
                }
            }
            acc
        },
    );
    let mut total = Partial::default();
    for part in &partials {
        total.merge(part);
    }
    if let (Some((a, b)), Some(_)) = (total.coincident, variances) {
        return Err(MetricError::CoincidentMeans { a, b });
    }
    // Diagonal of the ETF sums.
    for &g in &n2 {
        let r = alpha0 * g - e_diag;
        total.s_gg += g * g;
        total.s_gr += g * r;
        total.s_rr += r * r;
    }
    let pairs = total.n;
    let mean_norm = norms.iter().sum::<f64>() / cf;
    let equinorm = (norms.iter().map(|x| (x - mean_norm).powi(2)).sum::<f64>() / (cf - 1.0)).sqrt()
        / mean_norm;
    let delta = 1.0 / total.s_gg.sqrt() - alpha0;
    let dist2 = delta * delta * total.s_gg + 2.0 * delta * total.s_gr + total.s_rr;
    Ok(PairwiseStats {
        nc2: Nc2 {
            equinorm,
            equiangularity: if pairs > 1.0 {
                (total.m2 / (pairs - 1.0)).sqrt()
            } else {
                f64::NAN
            },
            max_angle: total.abs_sum / pairs,
            etf_distance: dist2.max(0.0).sqrt(),
        },
        gnc2_log: total.log_sum / pairs,
        gnc2_riesz: total.riesz_sum / pairs,
        cdnv: variances.map(|_| total.cdnv_sum / pairs),
    })
}

/// The self-duality variants of NC3 (see the module docs): `(per class, ETF error of WṀᵀ)`,
/// with `w` the `C × d` classifier and `centered` the `C × d` centred class means. The ETF
/// error is computed in tiles of `WṀᵀ` (`O(C²·d)` time, no `C × C` matrix).
///
/// # Errors
/// [`MetricError::StatsMismatch`] for different shapes, [`MetricError::TooFewClasses`],
/// [`MetricError::ZeroNorm`] for a zero row of either, [`CheckError::NonFiniteEntry`](crate::check::CheckError::NonFiniteEntry).
pub fn nc3_variants(w: ArrayView2<'_, f64>, centered: ArrayView2<'_, f64>) -> Result<(f64, f64)> {
    if w.dim() != centered.dim() {
        return Err(MetricError::StatsMismatch {
            classes: (w.nrows(), centered.nrows()),
            dims: (w.ncols(), centered.ncols()),
        });
    }
    let c = w.nrows();
    if c < 2 {
        return Err(MetricError::TooFewClasses { classes: c });
    }
    for (m, what) in [
        (w.view(), "classifier W"),
        (centered.view(), "centred class means"),
    ] {
        check::check_finite_entries(m.view(), what)?;
        if let Some(i) = m.rows().into_iter().position(|r| r.dot(&r) == 0.0) {
            return Err(MetricError::ZeroNorm {
                what: format!("{what} row {i}"),
            });
        }
    }
    let per_class = w
        .rows()
        .into_iter()
        .zip(centered.rows())
        .map(|(a, b)| {
            let (na, nb) = (a.dot(&a).sqrt(), b.dot(&b).sqrt());
            a.iter()
                .zip(b.iter())
                .map(|(x, y)| (x / na - y / nb).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / c as f64;
    let cf = c as f64;
    let scale = 1.0 / (cf - 1.0).sqrt();
    let (e_diag, e_off) = ((1.0 - 1.0 / cf) * scale, -scale / cf);
    let trace: f64 = w
        .rows()
        .into_iter()
        .zip(centered.rows())
        .map(|(a, b)| a.dot(&b))
        .sum();
    let alpha0 = if trace > 0.0 {
        (cf - 1.0).sqrt() / trace
    } else {
        0.0
    };
    let sums = map_row_blocks_with(
        c,
        TILE,
        || (),
        |_, a0, a1| {
            let (mut s_gg, mut s_gr, mut s_rr) = (0.0, 0.0, 0.0);
            let wa = w.slice(s![a0..a1, ..]);
            for b0 in (0..c).step_by(TILE) {
                let b1 = (b0 + TILE).min(c);
                let g = matmul(wa, centered.slice(s![b0..b1, ..]).t()).expect("tile shapes fit");
                for a in a0..a1 {
                    for b in b0..b1 {
                        let gab = g[[a - a0, b - b0]];
                        let r = alpha0 * gab - if a == b { e_diag } else { e_off };
                        s_gg += gab * gab;
                        s_gr += gab * r;
                        s_rr += r * r;
                    }
                }
            }
            (s_gg, s_gr, s_rr)
        },
    );
    let (mut s_gg, mut s_gr, mut s_rr) = (0.0, 0.0, 0.0);
    for (a, b, c) in sums {
        s_gg += a;
        s_gr += b;
        s_rr += c;
    }
    if s_gg == 0.0 {
        return Err(MetricError::ZeroNorm {
            what: "W Ṁᵀ".into(),
        });
    }
    let delta = 1.0 / s_gg.sqrt() - alpha0;
    let dist2 = delta * delta * s_gg + 2.0 * delta * s_gr + s_rr;
    Ok((per_class, dist2.max(0.0).sqrt()))
}

/// Where the planted class means of [`synthetic_vocabulary`] point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    /// Directions i.i.d. uniform on the sphere `S^{d−1}` (isotropic Gaussian, normalised).
    Uniform,
    /// Directions uniform on the unit sphere of the first `k` coordinates only (a
    /// low-dimensional, hence less uniform, arrangement: `E t² = 1/k`). (A cone about one axis
    /// would not do: centring the means removes its common axis.)
    Subspace(usize),
}

/// A synthetic "vocabulary" for many-class experiments (`C > d` as in a language model's
/// tokens): class `c` has `n_c = max(1, round(max_class_size / (c + 1)))` samples (Zipf sizes,
/// most classes with one or two samples), a planted mean `4 û_c` ([`Planted`]), and samples
/// `4 û_c + N(0, I)`. Deterministic in `seed` (xorshift64* and Box–Muller).
///
/// For [`Planted::Uniform`] the directions are isotropic, so (with `t = cos(û, û')`,
/// `E t = 0`, `E t² = 1/d`) the log energy is, to second order in `t`,
///
/// ```text
/// E GNC2 log = −½ E log(2 − 2t) ≈ −½ log 2 + 1/(4d)
/// ```
///
/// and the sample means, being planted directions plus isotropic noise, stay isotropic. For
/// [`Planted::Subspace`]`(k)` the planted directions alone would give `−½ log 2 + 1/(4k)` to the
/// same order (the noise spreads the sample means of small classes out of the subspace).
pub fn synthetic_vocabulary(
    classes: usize,
    dim: usize,
    max_class_size: usize,
    planted: Planted,
    seed: u64,
) -> crate::features::Features {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        ((state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut normal = move || {
        let (u, v) = (uniform(), uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    };
    let mut means = Array2::<f64>::zeros((classes, dim));
    for mut row in means.rows_mut() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = match planted {
                Planted::Subspace(k) if j >= k => 0.0,
                _ => normal(),
            };
        }
        let n = row.dot(&row).sqrt();
        row.mapv_inplace(|v| 4.0 * v / n);
    }
    let sizes: Vec<usize> = (0..classes)
        .map(|c| ((max_class_size as f64 / (c + 1) as f64).round() as usize).max(1))
        .collect();
    let n: usize = sizes.iter().sum();
    let mut x = Array2::<f32>::zeros((n, dim));
    let mut labels = Vec::with_capacity(n);
    let mut i = 0;
    for (c, &size) in sizes.iter().enumerate() {
        for _ in 0..size {
            for j in 0..dim {
                x[[i, j]] = (means[[c, j]] + normal()) as f32;
            }
            labels.push(c as u32);
            i += 1;
        }
    }
    crate::features::Features::new(x, labels)
}
