//! Per-class statistics: counts, f64 means and within-class scatter, streamed and mergeable.
//!
//! [`ClassStats`] is the one summary of a feature matrix that every metric starts from. It holds,
//! for each class `c ∈ {0..C−1}`:
//!
//! ```text
//! n_c                     number of samples of class c
//! μ_c = (1/n_c) Σ_{y_i=c} h_i                       class mean (f64, whatever the input type)
//! S_c = Σ_{y_i=c} ‖h_i − μ_c‖²                      within-class scatter (a scalar: the trace)
//! ```
//!
//! Batches are added with [`ClassStats::push`] and summaries combined with [`ClassStats::merge`];
//! both use the pairwise update of Chan, Golub & LeVeque (1979),
//!
//! ```text
//! n = n_a + n_b,   δ = μ_b − μ_a,   μ = μ_a + δ·n_b/n,   S = S_a + S_b + ‖δ‖²·n_a·n_b/n
//! ```
//!
//! with each batch's own means and scatter computed in two passes, so the result does not suffer
//! the cancellation of the one-pass formula `E‖h‖² − ‖μ‖²`. Pushing a matrix in any split into
//! batches, or merging summaries of any partition, gives the whole-matrix result up to rounding.
//!
//! # Example
//!
//! ```
//! use ndarray::array;
//! use neural_collapse::stats::{ClassStats, GlobalMean};
//!
//! let x = array![[0.0f32, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]];
//! let y = [0, 0, 1, 1];
//! let stats = ClassStats::from_data(x.view(), &y)?;
//! assert_eq!(stats.counts(), &[2, 2]);
//! assert_eq!(stats.means().row(1).to_vec(), vec![0.0, 5.0]);
//! assert_eq!(stats.scatter(), &[2.0, 2.0]); // 1² + 1² per class
//! assert_eq!(stats.global_mean(GlobalMean::ClassMeans).to_vec(), vec![0.5, 2.5]);
//! # Ok::<(), neural_collapse::Error>(())
//! ```

use std::sync::Mutex;

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis};
use thiserror::Error;

use crate::check::{self, CheckError};
use crate::kernels::{add_rows, residuals};
use crate::parallel::map_row_blocks_with;

/// Result of the statistics: [`MetricError`] by default.
type Result<T, E = MetricError> = std::result::Result<T, E>;

/// Bad input to a statistic or metric. Messages name the row, column, class or value at fault.
///
/// Defined here, below [`metrics`](crate::metrics) (which re-exports it), because statistics
/// and metrics share it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MetricError {
    /// Bad input found by the shared checks ([`check`]): lengths, dimensions, an empty input,
    /// a label out of range, the first NaN or infinite value, named by row and column.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// Fewer than two classes: NC metrics are undefined.
    #[error("{classes} class(es): Neural Collapse metrics need at least 2")]
    TooFewClasses {
        /// Number of classes found.
        classes: usize,
    },
    /// The largest label implies more classes than there are rows, so some class is empty
    /// (checked before anything is allocated per class: a label such as 4e9 would otherwise
    /// ask for `4e9 × d` values).
    #[error("largest label {label} implies {} classes but there are only {rows} rows: labels must be 0..C−1 with every class present", *label as u64 + 1)]
    TooManyClasses {
        /// The largest label.
        label: u32,
        /// Number of rows (samples) the classes come from.
        rows: usize,
    },
    /// A class has no samples.
    #[error("class {class} has no samples (classes 0..{classes})")]
    EmptyClass {
        /// The empty class.
        class: usize,
        /// Number of classes.
        classes: usize,
    },
    /// Two summaries cannot be merged or compared.
    #[error("statistics do not match: classes {classes:?}, dimensions {dims:?}")]
    StatsMismatch {
        /// Classes of the two summaries.
        classes: (usize, usize),
        /// Dimensions of the two summaries.
        dims: (usize, usize),
    },
    /// All class means coincide: `Σ_B = 0` and NC1 is undefined.
    #[error("all class means coincide (Σ_B has rank 0 at tolerance {tolerance:e})")]
    DegenerateMeans {
        /// The tolerance used.
        tolerance: f64,
    },
    /// Two class means coincide: CDNV is undefined.
    #[error("class means {a} and {b} coincide: CDNV divides by ‖μ_a − μ_b‖² = 0")]
    CoincidentMeans {
        /// First class.
        a: usize,
        /// Second class.
        b: usize,
    },
    /// A classifier whose shape does not fit the features.
    #[error("classifier is {rows} × {cols} with {bias} biases, expected {classes} × {dim}")]
    ClassifierShape {
        /// Rows of W.
        rows: usize,
        /// Columns of W.
        cols: usize,
        /// Length of b.
        bias: usize,
        /// Expected classes.
        classes: usize,
        /// Expected dimension.
        dim: usize,
    },
    /// A vector of zero norm where a direction is needed (NC2 cosines, NC3 normalisation).
    #[error("{what} has zero norm")]
    ZeroNorm {
        /// What had zero norm (e.g. "classifier row 3").
        what: String,
    },
    /// A prediction is not in `0..classes`.
    #[error("prediction {pred} at row {row} is out of range: expected 0..{classes}")]
    PredictionOutOfRange {
        /// Row.
        row: usize,
        /// The prediction.
        pred: u32,
        /// Number of classes.
        classes: usize,
    },
    /// `min_class_samples(0)`: a class needs at least one sample to be measured.
    #[error("min_class_samples must be at least 1")]
    BadMinClassSamples,
    /// A parameter outside its range (e.g. a CDNV exponent or Riesz `s` that is not a finite
    /// positive number).
    #[error("{name} {value} must be a finite positive number")]
    BadParameter {
        /// Which parameter.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A tolerance that is not a finite number in `[0, 1)`.
    #[error("tolerance {0} must be finite and in [0, 1)")]
    BadTolerance(f64),
    /// Per-class statistics too large to allocate (`classes × dim` f64 means).
    #[error("{classes} classes × {dim} dimensions of class means are too large to allocate")]
    TooLarge {
        /// Number of classes asked for.
        classes: usize,
        /// Feature dimension.
        dim: usize,
    },
    /// The `d × d` within-class covariance of
    /// [`nc1_explicit`](crate::metrics::nc1_explicit) is too large to allocate (`8·d²` bytes);
    /// [`nc1`](crate::metrics::nc1) needs only `O(C·d)` memory.
    #[error("{dim} feature columns: the {dim} × {dim} covariance of nc1_explicit is too large to allocate (nc1 needs no d × d matrix)")]
    TooLargeCovariance {
        /// Feature dimension.
        dim: usize,
    },
    /// The `n × n` eigendecomposition behind the NC1 geometry (Gram matrix, working copy and
    /// eigenvectors: three `n × n` f64 matrices at its peak) cannot be allocated; `n` is `C` on
    /// the classes route, `d` on the features route.
    #[error("the NC1 geometry needs three {n} × {n} matrices ({gib:.1} GiB), more than can be allocated here; {hint}")]
    TooLargeGeometry {
        /// The side of the matrices.
        n: usize,
        /// Their size in GiB.
        gib: f64,
        /// The other route, when it is smaller.
        hint: &'static str,
    },
    /// A classifier weight or bias that is NaN or infinite.
    #[error("classifier {what} = {value} is not finite")]
    NonFiniteClassifier {
        /// Which entry, e.g. `W[3, 7]` or `b[2]`.
        what: String,
        /// The value.
        value: f64,
    },
    /// A vector of stored predictions whose length differs from the number of rows.
    #[error("{preds} predictions for {rows} feature rows")]
    PredictionLength {
        /// Rows of the feature matrix.
        rows: usize,
        /// Length of the prediction vector.
        preds: usize,
    },
}

pub use crate::config::GlobalMean;

/// Per-class counts, f64 means and within-class scatter of a labelled feature matrix.
///
/// Means are stored as a `C × d` matrix (row `c` is `μ_c`). See the [module docs](self) for the
/// formulas and the streaming update.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassStats {
    counts: Vec<u64>,
    means: Array2<f64>,
    scatter: Vec<f64>,
}

/// Rows per block in the parallel passes of this module.
const STATS_BLOCK_ROWS: usize = 4096;

/// Rows per block of the residual pass (its f64 residual buffer, `block × d`, stays in the
/// core's L2 cache).
const RESIDUAL_BLOCK_ROWS: usize = 128;

/// Per-class counts and f64 means of a matrix whose labels are known to be `< classes`: sums
/// per row block (in parallel), reduced in block order, then divided by the counts. A NaN or
/// infinite input shows up as a non-finite mean.
pub(crate) fn class_means<T: Copy + Into<f64> + Sync>(
    x: ArrayView2<'_, T>,
    labels: &[u32],
    classes: usize,
) -> (Vec<u64>, Array2<f64>) {
    let dim = x.ncols();
    let mut counts = vec![0u64; classes];
    let mut sums = vec![0.0f64; classes * dim];
    // Per block, the sums of the classes it holds, compactly: `K × d` for its `K` distinct
    // labels (ascending), each class's rows added in row order — the same values as a `C × d`
    // partial, at most `min(C, rows) × d`. Blocks in groups of 8, each group's partials added
    // into `sums` in block order as soon as it is done: the same sums as adding every block's at
    // the end, with at most 8 partials alive.
    //
    // The partials' buffers are recycled through a pool. A fresh buffer per block (16 MiB at
    // C = 1,000, d = 2,048) cost a page fault per 4 KiB — calloc'd pages fault twice, first
    // mapping the zero page, then on the write with a TLB shoot-down of the other core — more
    // time than the additions.
    let pool: Mutex<Vec<Vec<f64>>> = Mutex::new(Vec::new());
    let n = labels.len();
    let group = 8 * STATS_BLOCK_ROWS;
    for g0 in (0..n).step_by(group) {
        let g1 = (g0 + group).min(n);
        let partial = map_row_blocks_with(g1 - g0, STATS_BLOCK_ROWS, Vec::new, |buf, s0, e0| {
            let (start, end) = (g0 + s0, g0 + e0);
            let lb = &labels[start..end];
            let mut held = lb.to_vec();
            held.sort_unstable();
            held.dedup();
            // Each label's place among the block's classes (always found: `held` is built from
            // `lb`; `Err` would be the same place).
            let slots: Vec<u32> = lb
                .iter()
                .map(|l| held.binary_search(l).unwrap_or_else(|k| k) as u32)
                .collect();
            let mut counts = vec![0u64; held.len()];
            for &k in &slots {
                counts[k as usize] += 1;
            }
            let spare = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut part = spare.unwrap_or_default();
            part.clear();
            part.resize(held.len() * dim, 0.0);
            let rows = row_major(x.slice_move(s![start..end, ..]), buf);
            add_rows(&mut part, rows, &slots, dim);
            (held, counts, part)
        });
        for (held, pc, part) in partial {
            for (k, &c) in held.iter().enumerate() {
                let c = c as usize;
                counts[c] += pc[k];
                for (acc, v) in sums[c * dim..(c + 1) * dim]
                    .iter_mut()
                    .zip(&part[k * dim..(k + 1) * dim])
                {
                    *acc += v;
                }
            }
            pool.lock().unwrap_or_else(|e| e.into_inner()).push(part);
        }
    }
    let mut means = Array2::from_shape_vec((classes, dim), sums).expect("classes × dim sums");
    for (mut m, &n) in means.outer_iter_mut().zip(&counts) {
        if n > 0 {
            m /= n as f64;
        }
    }
    (counts, means)
}

/// The rows of `x` as one row-major slice: borrowed when `x` is in standard layout, else copied
/// into `buf`.
pub(crate) fn row_major<'o, 'v: 'o, 'b: 'o, T: Copy>(
    x: ArrayView2<'v, T>,
    buf: &'b mut Vec<T>,
) -> &'o [T] {
    match x.to_slice() {
        Some(rows) => rows,
        None => {
            buf.clear();
            buf.extend(x.iter().copied());
            buf
        }
    }
}

/// The smallest label in `0..` that no row has (from the sorted distinct labels: `O(n)` memory,
/// nothing allocated per class).
pub(crate) fn first_absent_label(labels: &[u32]) -> usize {
    let mut distinct = labels.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
        .iter()
        .enumerate()
        .find(|&(k, &l)| l as usize != k)
        .map_or(distinct.len(), |(k, _)| k)
}

/// Shapes and label range of a batch (cheap: no pass over the values): [`check::check_shapes`].
pub(crate) fn validate_shapes<T>(
    x: &ArrayView2<'_, T>,
    labels: &[u32],
    classes: usize,
    dim: usize,
) -> Result<()> {
    Ok(check::check_shapes(x, labels, classes, dim)?)
}

/// Checks shapes, labels and finiteness of a batch against `classes` and `dim`:
/// [`check::check_matrix`].
pub(crate) fn validate_batch<T: Copy + Into<f64>>(
    x: &ArrayView2<'_, T>,
    labels: &[u32],
    classes: usize,
    dim: usize,
) -> Result<()> {
    Ok(check::check_matrix(x, labels, classes, dim)?)
}

impl ClassStats {
    /// An empty summary for `classes` classes of `dim`-dimensional features.
    ///
    /// # Errors
    /// [`MetricError::TooFewClasses`] if `classes < 2`; [`CheckError::Empty`](crate::check::CheckError::Empty) if `dim == 0`;
    /// [`MetricError::TooLarge`] if `classes × dim` means cannot be allocated (checked, so that
    /// a huge count is an error, not an abort).
    pub fn new(classes: usize, dim: usize) -> Result<Self> {
        if classes < 2 {
            return Err(MetricError::TooFewClasses { classes });
        }
        if dim == 0 {
            return Err(MetricError::Check(CheckError::Empty { rows: 0, dim }));
        }
        let too_large = || MetricError::TooLarge { classes, dim };
        // `classes × dim` f64 means within isize::MAX bytes (ndarray's limit), and the memory
        // reserved fallibly first (then freed and taken zeroed), so that a huge count is an
        // error, not an abort.
        let cells = classes
            .checked_mul(dim)
            .filter(|&m| m <= isize::MAX as usize / 8)
            .ok_or_else(too_large)?;
        let mut probe = Vec::<f64>::new();
        probe.try_reserve_exact(cells).map_err(|_| too_large())?;
        drop(probe);
        Ok(Self {
            counts: vec![0; classes],
            means: Array2::zeros((classes, dim)),
            scatter: vec![0.0; classes],
        })
    }

    /// Summary of a whole `n × d` matrix; the number of classes is `max(labels) + 1`.
    ///
    /// # Errors
    /// Those of [`new`](Self::new) and [`push`](Self::push); [`CheckError::Empty`](crate::check::CheckError::Empty) when
    /// `x` has no rows or no columns; [`MetricError::TooManyClasses`] when the largest label is
    /// not below the number of rows (some class would be empty), checked before anything is
    /// allocated per class, so that a label such as 4·10⁹ is an error, not an abort.
    pub fn from_data<T: Copy + Into<f64> + Sync>(
        x: ArrayView2<'_, T>,
        labels: &[u32],
    ) -> Result<Self> {
        if x.nrows() != labels.len() {
            return Err(MetricError::Check(CheckError::LengthMismatch {
                rows: x.nrows(),
                labels: labels.len(),
            }));
        }
        let largest = labels.iter().copied().max();
        if let Some(label) = largest {
            if label as usize >= labels.len() {
                return Err(MetricError::TooManyClasses {
                    label,
                    rows: labels.len(),
                });
            }
        }
        let classes = largest.map_or(0, |m| m as usize + 1);
        Self::from_data_with_classes(x, labels, classes)
    }

    /// Summary of a whole matrix with an explicit number of classes (labels must be `< classes`).
    ///
    /// # Errors
    /// As [`from_data`](Self::from_data); [`CheckError::LengthMismatch`](crate::check::CheckError::LengthMismatch) and
    /// [`CheckError::LabelOutOfRange`](crate::check::CheckError::LabelOutOfRange) are checked first, and more classes than rows (so that
    /// some class is necessarily empty) is [`MetricError::EmptyClass`] naming the first class
    /// without a sample, before anything is allocated per class.
    pub fn from_data_with_classes<T: Copy + Into<f64> + Sync>(
        x: ArrayView2<'_, T>,
        labels: &[u32],
        classes: usize,
    ) -> Result<Self> {
        if x.nrows() == 0 || x.ncols() == 0 {
            return Err(MetricError::Check(CheckError::Empty {
                rows: x.nrows(),
                dim: x.ncols(),
            }));
        }
        if classes < 2 {
            return Err(MetricError::TooFewClasses { classes });
        }
        validate_shapes(&x, labels, classes, x.ncols())?;
        if classes > labels.len() {
            return Err(MetricError::EmptyClass {
                class: first_absent_label(labels),
                classes,
            });
        }
        let mut stats = Self::new(classes, x.ncols())?;
        stats.push(x, labels)?;
        Ok(stats)
    }

    /// Adds a batch of samples (`x` is `b × d`, `labels` has length `b`).
    ///
    /// The batch's per-class means and scatter are computed in two passes in f64 and combined
    /// with the current summary by the pairwise update (module docs). The summary is unchanged
    /// when an error is returned.
    ///
    /// # Errors
    /// [`CheckError::LengthMismatch`](crate::check::CheckError::LengthMismatch), [`CheckError::DimensionMismatch`](crate::check::CheckError::DimensionMismatch),
    /// [`CheckError::LabelOutOfRange`](crate::check::CheckError::LabelOutOfRange), [`CheckError::NonFinite`](crate::check::CheckError::NonFinite) (naming the row and column).
    pub fn push<T: Copy + Into<f64> + Sync>(
        &mut self,
        x: ArrayView2<'_, T>,
        labels: &[u32],
    ) -> Result<()> {
        validate_shapes(&x, labels, self.classes(), self.dim())?;
        if labels.is_empty() {
            return Ok(());
        }
        let batch = Self::batch_unchecked(x, labels, self.classes());
        // A NaN or infinite value makes some mean or scatter non-finite: only then scan the
        // batch to name the row and column.
        if batch
            .means
            .iter()
            .chain(&batch.scatter)
            .any(|v| !v.is_finite())
        {
            validate_batch(&x, labels, self.classes(), self.dim())?;
        }
        self.merge_unchecked(&batch);
        Ok(())
    }

    /// Two-pass per-class summary of a validated batch (means first, then the scatter about
    /// them), each pass parallel over row blocks.
    fn batch_unchecked<T: Copy + Into<f64> + Sync>(
        x: ArrayView2<'_, T>,
        labels: &[u32],
        classes: usize,
    ) -> Self {
        let (counts, means) = class_means(x, labels, classes);
        let means_rm = means.as_standard_layout();
        let means_rm = means_rm.as_slice().expect("standard layout");
        let dim = x.ncols();
        let partial = map_row_blocks_with(
            labels.len(),
            RESIDUAL_BLOCK_ROWS,
            || (Vec::new(), Vec::new()),
            |(buf, resid), start, end| {
                let mut scatter = vec![0.0f64; classes];
                let lb = &labels[start..end];
                let rows = row_major(x.slice_move(s![start..end, ..]), buf);
                resid.resize(lb.len() * dim, 0.0);
                residuals(resid, &mut [], rows, lb, means_rm, dim, &mut scatter);
                scatter
            },
        );
        let mut scatter = vec![0.0f64; classes];
        for part in partial {
            for (acc, v) in scatter.iter_mut().zip(part) {
                *acc += v;
            }
        }
        Self {
            counts,
            means,
            scatter,
        }
    }

    /// A summary from its parts (used when the scatter comes from another pass).
    pub(crate) fn from_parts(counts: Vec<u64>, means: Array2<f64>, scatter: Vec<f64>) -> Self {
        Self {
            counts,
            means,
            scatter,
        }
    }

    /// Combines another summary (of other samples) into this one.
    ///
    /// # Errors
    /// [`MetricError::StatsMismatch`] if the number of classes or the dimension differ.
    pub fn merge(&mut self, other: &ClassStats) -> Result<()> {
        if other.classes() != self.classes() || other.dim() != self.dim() {
            return Err(MetricError::StatsMismatch {
                classes: (self.classes(), other.classes()),
                dims: (self.dim(), other.dim()),
            });
        }
        self.merge_unchecked(other);
        Ok(())
    }

    fn merge_unchecked(&mut self, other: &ClassStats) {
        for c in 0..self.classes() {
            let (na, nb) = (self.counts[c], other.counts[c]);
            if nb == 0 {
                continue;
            }
            if na == 0 {
                self.counts[c] = nb;
                self.means.row_mut(c).assign(&other.means.row(c));
                self.scatter[c] = other.scatter[c];
                continue;
            }
            let n = na + nb;
            let wb = nb as f64 / n as f64;
            let mut delta_sq = 0.0;
            let mb = other.means.row(c);
            for (ma, &mb) in self.means.row_mut(c).iter_mut().zip(mb.iter()) {
                let delta = mb - *ma;
                delta_sq += delta * delta;
                *ma += delta * wb;
            }
            self.scatter[c] += other.scatter[c] + delta_sq * (na as f64) * wb;
            self.counts[c] = n;
        }
    }

    /// Number of classes `C`.
    pub fn classes(&self) -> usize {
        self.counts.len()
    }

    /// Feature dimension `d`.
    pub fn dim(&self) -> usize {
        self.means.ncols()
    }

    /// Samples per class, `n_c`.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Total number of samples `N = Σ_c n_c`.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Class means as a `C × d` matrix (row `c` is `μ_c`; zero for a class with no samples).
    pub fn means(&self) -> ArrayView2<'_, f64> {
        self.means.view()
    }

    /// Mean of class `c`, or `None` if `c ≥ C`.
    pub fn class_mean(&self, c: usize) -> Option<ArrayView1<'_, f64>> {
        (c < self.classes()).then(|| self.means.row(c))
    }

    /// Within-class scatter per class, `S_c = Σ_{y_i=c} ‖h_i − μ_c‖²`.
    pub fn scatter(&self) -> &[f64] {
        &self.scatter
    }

    /// Per-class variance `σ²_c = S_c / n_c` (the mean squared distance to the class mean; NaN
    /// for an empty class).
    pub fn variances(&self) -> Vec<f64> {
        self.scatter
            .iter()
            .zip(&self.counts)
            .map(|(&s, &n)| s / n as f64)
            .collect()
    }

    /// The first class with no samples, if any.
    pub fn first_empty_class(&self) -> Option<usize> {
        self.counts.iter().position(|&n| n == 0)
    }

    /// Fails with [`MetricError::EmptyClass`] if some class has no samples.
    pub fn require_all_classes(&self) -> Result<()> {
        match self.first_empty_class() {
            Some(class) => Err(MetricError::EmptyClass {
                class,
                classes: self.classes(),
            }),
            None => Ok(()),
        }
    }

    /// Global mean `μ_G` under the given convention (see [`GlobalMean`]).
    ///
    /// Undefined, and then `NaN` in every coordinate (never the zero placeholder of an empty
    /// class's mean): with [`GlobalMean::ClassMeans`] when some class has no samples, with
    /// [`GlobalMean::SampleWeighted`] when there are no samples at all.
    pub fn global_mean(&self, convention: GlobalMean) -> Array1<f64> {
        let undefined = match convention {
            GlobalMean::ClassMeans => self.first_empty_class().is_some(),
            GlobalMean::SampleWeighted => self.total() == 0,
        };
        if undefined {
            return Array1::from_elem(self.dim(), f64::NAN);
        }
        match convention {
            GlobalMean::ClassMeans => self
                .means
                .mean_axis(Axis(0))
                .unwrap_or_else(|| Array1::from_elem(self.dim(), f64::NAN)),
            GlobalMean::SampleWeighted => {
                let total = self.total() as f64;
                let mut g = Array1::<f64>::zeros(self.dim());
                for (m, &n) in self.means.outer_iter().zip(&self.counts) {
                    g.scaled_add(n as f64 / total, &m);
                }
                g
            }
        }
    }

    /// Centred class means `μ_c − μ_G` as a `C × d` matrix (the transpose of `Ṁ`); `NaN` where
    /// [`global_mean`](Self::global_mean) is undefined.
    pub fn centered_means(&self, convention: GlobalMean) -> Array2<f64> {
        let g = self.global_mean(convention);
        &self.means - &g.insert_axis(Axis(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `class_means` (compact per-block partials, recycled buffers, groups of 8 blocks) against
    /// a plain per-class sum: integer-valued features make every sum exact whatever the order,
    /// so counts and means must be equal, not close. More classes than rows per block, so a
    /// block holds only some of them, and more rows than one group of blocks.
    #[test]
    fn class_means_equal_a_plain_sum() {
        let (n, d, classes) = (8 * STATS_BLOCK_ROWS + 5_000, 3, 7_000);
        let mut state = 11u64;
        let mut next = |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        // Classes 0..6,999 in a shuffled-looking order; the last 2,000 rows in class 5 only.
        let labels: Vec<u32> = (0..n)
            .map(|i| {
                if i < n - 2_000 {
                    next(classes) as u32
                } else {
                    5
                }
            })
            .collect();
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            (next(201) as f32 - 100.0) * (j + 1) as f32 + i as f32 % 3.0
        });
        let (counts, means) = class_means(x.view(), &labels, classes as usize);
        let mut want_counts = vec![0u64; classes as usize];
        let mut want_sums = Array2::<f64>::zeros((classes as usize, d));
        for (i, &y) in labels.iter().enumerate() {
            want_counts[y as usize] += 1;
            for j in 0..d {
                want_sums[[y as usize, j]] += f64::from(x[[i, j]]);
            }
        }
        assert_eq!(counts, want_counts);
        for c in 0..classes as usize {
            for j in 0..d {
                let want = if want_counts[c] > 0 {
                    want_sums[[c, j]] / want_counts[c] as f64
                } else {
                    0.0
                };
                assert_eq!(means[[c, j]], want, "class {c}, column {j}");
            }
        }
    }
}
