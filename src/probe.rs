//! Linear probes: how linearly decodable a label is from a layer's features.
//!
//! **Why one file (about 2,400 lines, a fifth of them docs).** The probe kinds (ridge in primal
//! and dual form, logistic, one-vs-rest least squares through linfa-linear), their linfa
//! params → checked params → fitted model triples and the sweeps share the penalty grid, the
//! selection on held-out train rows and [`ProbeError`]; the products and solves are in
//! [`crate::linalg`].
//!
//! Hui, Belkin & Nakkiran (2022) train networks on *coarse* labels and then fit a linear
//! classifier on the last-layer features to predict the *fine* labels: collapse of the features
//! onto the coarse classes destroys the fine information, which the probe's test accuracy shows.
//! This module fits such probes as linfa models: a parameter value ([`LinearProbe`]) with
//! builder setters, checked by [`linfa::ParamGuard`] into a [`ValidLinearProbe`], which
//! implements [`linfa::traits::Fit`] and returns a fitted model ([`FittedProbe`], a linfa
//! `PredictInplace` model of class labels); [`LinearProbe::fit`] does the same on
//! [`Features`]. [`OneVsRestOls`] is a least-squares probe built on linfa-linear, and
//! [`probe_scan`] sweeps a feature file with any linfa estimator whose fitted model predicts
//! class labels (e.g. linfa-logistic's `MultiLogisticRegression`).
//!
//! # Objectives
//!
//! Features `x_i ∈ R^d` of the training split (`n` rows) are first standardised with the
//! training split's own statistics (see *Standardisation* below): `z_i = (x_i − m) ⊘ s`.
//! Labels are mapped to `0..C` in increasing order of their values; `e_y` is the one-hot vector
//! of class `y`, `W` is `d × C` and `b ∈ R^C`.
//!
//! ```text
//! least squares  minimise_{W,b}  (1/n) Σ_i ‖Wᵀ z_i + b − e_{y_i}‖²  +  λ ‖W‖²_F
//!                ⇔  (ZᵀZ + n λ I) W = Zᵀ Y,   b = ȳ = class frequencies      (Z centred)
//!
//! logistic       minimise_{W,b}  (1/n) Σ_i −log softmax(Wᵀ z_i + b)_{y_i}  +  (λ/2) ‖W‖²_F
//!                solved by linfa-logistic (L-BFGS) with alpha = n λ on the summed loss
//!
//! prediction     ŷ(x) = argmax_c (Wᵀ z(x) + b)_c       (ties: the smallest label)
//! ```
//!
//! The intercept `b` is never penalised. The penalty `λ` is per sample (it multiplies `n` in
//! the normal equations), so the same `λ` means the same thing for a held-out subset and for
//! the whole training split. Equivalent settings elsewhere: scikit-learn's
//! `RidgeClassifier(alpha = n λ)` (whose `±1` targets only rescale `W` by 2) and
//! `LogisticRegression(C = 1 / (n λ))`, each after a `StandardScaler`.
//!
//! The least-squares probe accumulates the shifted Gram matrix `Σ_i (x_i − r)(x_i − r)ᵀ` (with
//! `r` the training mean) and the class sums `Σ_i (x_i − r) e_{y_i}ᵀ` in f64 in one pass over
//! the data, then centres, scales and solves all `C` outputs at once with one Cholesky
//! factorisation of `ZᵀZ + n λ I` (products and factorisation through [`crate::linalg`]).
//! Every sum is accumulated in f64 whatever the input type. When the rows it is fitted on are
//! fewer than the features (`n < d`), it solves the same problem in its dual (kernel) form
//! instead, an `n × n` system in place of the `d × d` one:
//!
//! ```text
//! W = Zᵀ (Z Zᵀ + n λ I)⁻¹ Y        (the same W: (ZᵀZ + nλI) Zᵀ = Zᵀ (ZZᵀ + nλI))
//! ```
//!
//! (`O(n² d)` time and `O(n d)` memory rather than `O(n d² + d³)` and `O(d²)`; the mean and the
//! scale are computed by two passes over the rows.) With `λ = 0` both systems are singular
//! when `n ≤ d` (`Z` is centred, so its rank is below `n`), and both fail with
//! [`ProbeError::Singular`]; the pivot reported by the dual form is a row, not a column.
//!
//! The logistic probe gives the standardised features to the patched linfa-logistic in
//! `vendor/` (see its `PATCHED.md`) as **f32**: `z` is computed in f64 and rounded once to f32,
//! a relative change of at most 2⁻²⁴ — in units of `x`, no more than the rounding the f32
//! features already carry. The solver's parameters, products and sums are all f64 (its
//! `fit_f32` converts each value as it loads it); storing f32 halves the memory and the bytes
//! read per L-BFGS evaluation. L-BFGS stops when the gradient of the summed objective has
//! Euclidean norm `< n · tol` ([`LinearProbe::gradient_tolerance`], default
//! [`DEFAULT_GRADIENT_TOLERANCE`]), i.e. when the per-sample objective's gradient is below
//! `tol`; scikit-learn's `tol` bounds the largest component instead, a weaker test.
//!
//! # Standardisation
//!
//! On by default ([`LinearProbe::standardize`]). The mean `m` and the standard deviation `s`
//! (population, `1/n`) of every column are computed on the rows the probe is fitted on — the
//! training split only, and, during penalty selection, only its fitting part — and stored in the
//! fitted probe ([`FittedProbe::mean`], [`FittedProbe::scale`]), which applies them unchanged to
//! any data it predicts. A column is treated as constant, and gets `s = 1`, when
//! `s ≤ n · ε · |m|` with `ε` the f64 machine epsilon (its variance is then at the level of the
//! rounding error of its mean; this is scikit-learn's rule); its centred values are set to
//! exactly 0, so that it gets a zero coefficient (or, with `λ = 0` in the least-squares probe,
//! makes the system singular). Centring is always applied; it is absorbed by the intercept and
//! changes only the conditioning. With `standardize(false)`, `s = 1` for every column.
//!
//! # Penalty selection
//!
//! With [`LinearProbe::penalty_grid`] (alias [`ridge_grid`](LinearProbe::ridge_grid)) the
//! training data given to `fit` is split, per class, into a fitting part and a held-out part
//! (default 20 % of each class, rounded, chosen by a seeded shuffle; a class keeps at least one
//! fitting row). Each candidate is fitted on the fitting part (with the fitting part's own
//! standardisation) and scored by its accuracy on the held-out part; the most accurate
//! candidate wins, ties going to the larger penalty. The probe is then refitted on all the
//! rows given to `fit`. Only the data passed to `fit` is ever seen: the test split cannot
//! influence the choice. The outcome is kept in [`FittedProbe::selection`].
//!
//! # Example
//!
//! ```
//! use ndarray::array;
//! use neural_collapse::probe::LinearProbe;
//!
//! let x = array![[0.0f32, 1.0], [0.2, 0.9], [1.0, 0.0], [0.9, 0.1], [1.0, 1.0], [0.9, 1.1]];
//! let y = [0u32, 0, 1, 1, 2, 2];
//! let probe = LinearProbe::least_squares().ridge(1e-3).fit_array(x.view(), &y)?;
//! assert_eq!(probe.predict(x.view())?, y.to_vec());
//! assert_eq!(probe.accuracy(x.view(), &y)?, 1.0);
//! # Ok::<(), neural_collapse::probe::ProbeError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use std::any::Any;

use linfa::dataset::{AsSingleTargets, DatasetBase};
use linfa::traits::{Fit, PredictInplace};
use linfa::ParamGuard;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{s, Array1, Array2, ArrayBase, ArrayView1, ArrayView2, Axis, Data, Ix2, Zip};
use serde::Serialize;
use thiserror::Error;

use crate::check::{self, first_non_finite, CheckError};
use crate::features::{FeatureError, FeatureScan, Features};
use crate::linalg::{self, LinalgError};

/// Result of the probes: [`ProbeError`] by default.
type Result<T, E = ProbeError> = std::result::Result<T, E>;

/// Default per-sample ridge penalty of [`LinearProbe::least_squares`].
pub const DEFAULT_RIDGE: f64 = 1e-3;
/// Default per-sample L2 penalty of [`LinearProbe::logistic`].
pub const DEFAULT_LOGISTIC_PENALTY: f64 = 1e-4;
/// Default held-out fraction of the training data for penalty selection.
pub const DEFAULT_HOLDOUT: f64 = 0.2;
/// Default seed of the held-out split.
pub const DEFAULT_SEED: u64 = 0;
/// Default gradient tolerance of the logistic probe, on the per-sample (mean) objective.
pub const DEFAULT_GRADIENT_TOLERANCE: f64 = 1e-4;
/// Default iteration cap of the logistic probe's L-BFGS.
pub const DEFAULT_MAX_ITERATIONS: u64 = 100;
/// Default relative pivot tolerance of the least-squares Cholesky factorisation.
pub const DEFAULT_SINGULAR_TOLERANCE: f64 = 1e-12;

/// `LinearProbe`'s constructors only make its own kinds.
const NOT_OURS: &str = "a LinearProbe is least squares or logistic";

/// Rows per block in the passes over the data (bounds the working memory to
/// `BLOCK_ROWS × d` f64 values per thread).
const BLOCK_ROWS: usize = 512;
/// Rows per worker thread below which the Gram pass stays on one thread.
const ROWS_PER_THREAD: usize = 4096;

/// Bad input to a probe, or a probe that cannot be fitted. Messages name the row, column,
/// value or parameter at fault.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Bad input found by [`check`] (no rows or no columns, a feature matrix and a label vector
    /// of different lengths, a non-finite feature value, a non-finite entry of a named
    /// matrix); its message is the [`CheckError`]'s.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// Every training label is the same: there is nothing to separate.
    #[error("only one class (label {label}) in the training labels: a probe needs at least 2")]
    OneClass {
        /// The single label.
        label: u32,
    },
    /// Data given to a fitted probe has another dimension than its training data.
    #[error("feature dimension {found} does not match the probe's {expected}")]
    DimensionMismatch {
        /// The probe's dimension.
        expected: usize,
        /// The dimension found.
        found: usize,
    },
    /// A penalty that is negative, NaN or infinite.
    #[error("penalty {value} must be finite and ≥ 0")]
    InvalidPenalty {
        /// The penalty.
        value: f64,
    },
    /// An empty penalty grid.
    #[error("the penalty grid is empty")]
    EmptyGrid,
    /// A parameter outside its domain.
    #[error("parameter `{name}` = {value} must be {expected}")]
    InvalidParameter {
        /// The parameter's setter.
        name: &'static str,
        /// The value given.
        value: f64,
        /// Its domain.
        expected: &'static str,
    },
    /// Penalty selection found no row to hold out.
    #[error(
        "penalty selection holds out no row: {rows} training rows, held-out fraction {fraction} \
         (each class keeps at least one fitting row)"
    )]
    NoHoldout {
        /// Training rows.
        rows: usize,
        /// The held-out fraction.
        fraction: f64,
    },
    /// `ZᵀZ + n λ I` is not numerically positive definite.
    #[error(
        "singular system: pivot {pivot} of ZᵀZ + nλI is {value:e} (relative tolerance \
         {tolerance:e}) at penalty λ = {penalty:e}; the features are constant or collinear: use a \
         positive ridge penalty"
    )]
    Singular {
        /// Column (feature) at which the factorisation broke down.
        pivot: usize,
        /// The pivot relative to the largest diagonal entry.
        value: f64,
        /// The relative pivot tolerance.
        tolerance: f64,
        /// The penalty.
        penalty: f64,
    },
    /// A routine of [`linalg`] refused its operands (shapes that do not fit); the probes build
    /// the operands they pass, so this signals a bug, reported rather than a panic.
    #[error(transparent)]
    Linalg(#[from] LinalgError),
    /// `Features` lack the requested label column.
    #[error("the features have no `{column}` labels")]
    MissingLabels {
        /// The requested column.
        column: LabelColumn,
    },
    /// linfa-logistic failed.
    #[error("{context}: linfa-logistic: {message}")]
    Linfa {
        /// What was being fitted.
        context: String,
        /// linfa's message.
        message: String,
    },
    /// linfa's own error (e.g. a dataset whose records and targets disagree).
    #[error("linfa: {0}")]
    LinfaBase(#[from] linfa::error::Error),
    /// A label that does not fit the label type (labels are `u32` in the crate).
    #[error("label {value} at row {row} does not fit in {target}")]
    LabelOutOfRange {
        /// Row of the label.
        row: usize,
        /// The label.
        value: u64,
        /// The type it does not fit in.
        target: &'static str,
    },
    /// Another linfa estimator (given to [`probe_scan`], or [`OneVsRestOls`]'s linfa-linear)
    /// failed.
    #[error("{context}: {estimator}: {message}")]
    Estimator {
        /// What was being fitted.
        context: String,
        /// The estimator (its type name).
        estimator: String,
        /// Its error message.
        message: String,
    },
    /// The least-squares probe's `d × d` scatter matrix (f64) cannot be allocated: more rows
    /// than columns selects the primal form, whose memory is `8·d²` bytes.
    #[error("{dim} feature columns: the {dim} × {dim} scatter matrix of the least-squares probe is too large to allocate (use fewer columns, or fewer rows than columns for the dual form)")]
    TooLarge {
        /// Feature dimension.
        dim: usize,
    },
    /// Reading the feature file of a sweep ([`probe_scan`]); the crate-level
    /// [`Error`](crate::Error) shows it as `Error::Features`.
    #[error(transparent)]
    Features(#[from] FeatureError),
    /// An error while probing one part of a sweep ([`probe_scan`]): `context` names the file,
    /// epoch and split (the crate-level [`Error`](crate::Error) shows it as `Error::Context`).
    #[error("{context}: {source}")]
    Context {
        /// Which part failed, e.g. `runs/a/features-fc2.parquet, epoch 10, split test`.
        context: String,
        /// What went wrong there.
        #[source]
        source: Box<ProbeError>,
    },
}

/// Checks that a `d × d` f64 matrix can be allocated (the allocation is asked for and released),
/// so that an impossible size is an error rather than an abort.
fn check_square_alloc(d: usize) -> Result<(), ProbeError> {
    let len = d.checked_mul(d).ok_or(ProbeError::TooLarge { dim: d })?;
    let mut probe: Vec<f64> = Vec::new();
    probe
        .try_reserve_exact(len)
        .map_err(|_| ProbeError::TooLarge { dim: d })
}

/// The kind of linear probe.
///
/// Serialised (JSON) as its [`name`](Self::name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Ridge regression on one-hot targets (square loss), see the [module docs](self).
    LeastSquares,
    /// Multinomial logistic regression (cross-entropy) through linfa-logistic.
    Logistic,
    /// Unpenalised least squares on one-hot targets, one `linfa_linear::LinearRegression` per
    /// class ([`OneVsRestOls`]).
    LinfaOls,
    /// Another linfa estimator given to [`probe_scan`]: the name of its type without path
    /// or generic arguments (e.g. `"LogisticRegressionParams"` for linfa-logistic's
    /// `MultiLogisticRegression`, an alias of that type).
    Other(&'static str),
}

impl ProbeKind {
    /// `"least-squares"`, `"logistic"`, `"linfa-ols"`, or the estimator's type name.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::LeastSquares => "least-squares",
            ProbeKind::Logistic => "logistic",
            ProbeKind::LinfaOls => "linfa-ols",
            ProbeKind::Other(name) => name,
        }
    }
}

/// The CLI's `--kind`: the crate's own probes, by [`name`](ProbeKind::name) (not
/// [`ProbeKind::Other`], which names another linfa estimator given to [`probe_scan`]).
#[cfg(feature = "cli")]
impl clap::ValueEnum for ProbeKind {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            ProbeKind::LeastSquares,
            ProbeKind::Logistic,
            ProbeKind::LinfaOls,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let value = clap::builder::PossibleValue::new(self.name());
        match self {
            ProbeKind::LeastSquares | ProbeKind::Logistic => Some(value),
            ProbeKind::LinfaOls => Some(value.help(
                "Unpenalised one-vs-rest least squares through linfa-linear (`OneVsRestOls`)",
            )),
            ProbeKind::Other(_) => None,
        }
    }
}

impl Serialize for ProbeKind {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub use crate::features::LabelColumn;

impl LabelColumn {
    /// The labels of `features` in this column.
    ///
    /// # Errors
    /// [`ProbeError::MissingLabels`] for [`LabelColumn::Coarse`] when `features.coarse` is `None`.
    pub fn labels_of(self, features: &Features) -> Result<&[u32], ProbeError> {
        match self {
            LabelColumn::Label => Ok(&features.labels),
            LabelColumn::Coarse => features
                .coarse
                .as_deref()
                .ok_or(ProbeError::MissingLabels { column: self }),
        }
    }
}

/// Parameters of a linear probe, set with builder methods and checked by
/// [`fit`](LinearProbe::fit) / [`fit_array`](LinearProbe::fit_array).
///
/// ```
/// use ndarray::array;
/// use neural_collapse::prelude::*;
///
/// let x = array![[0.0f32, 0.1], [0.1, 0.0], [0.2, 0.1], [1.0, 1.1], [1.1, 0.9], [0.9, 1.0]];
/// let train = Features::new(x, vec![0, 0, 0, 1, 1, 1]).with_epoch(3);
/// let probe = LinearProbe::logistic().penalty(1e-2).fit(&train)?;
/// assert_eq!(probe.accuracy_features(&train)?, 1.0);
/// # Ok::<(), neural_collapse::Error>(())
/// ```
///
/// In linfa's terms `LinearProbe` is the unchecked parameter set: [`ParamGuard`] checks it into
/// a [`ValidLinearProbe`], which implements [`linfa::traits::Fit`] on a
/// [`linfa::DatasetBase`] of `n × d` records (`f32` or `f64`) and `u32` or `usize` labels, and
/// returns the [`FittedProbe`], a linfa [`PredictInplace`] model predicting labels of the same
/// type. `LinearProbe` itself gets `Fit` from linfa's blanket impl over `ParamGuard`; since its
/// inherent [`fit`](Self::fit) takes [`Features`], call the trait as `Fit::fit(&probe, &dataset)`
/// (or `probe.check()?.fit(&dataset)`). Both paths run the same code and give the same model.
///
/// ```
/// use linfa::traits::{Fit, Predict};
/// use linfa::{Dataset, ParamGuard};
/// use ndarray::{array, Array1};
/// use neural_collapse::prelude::*;
///
/// let x = array![[0.0, 0.1], [0.1, 0.0], [0.2, 0.1], [1.0, 1.1], [1.1, 0.9], [0.9, 1.0]];
/// let y: Array1<usize> = array![0, 0, 0, 1, 1, 1];
/// let data = Dataset::new(x.clone(), y.clone());
/// let fitted = LinearProbe::least_squares().check()?.fit(&data)?;
/// let predicted: Array1<usize> = Predict::predict(&fitted, &x);
/// assert_eq!(predicted, y);
/// # Ok::<(), neural_collapse::probe::ProbeError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LinearProbe(ValidLinearProbe);

/// Checked parameters of a linear probe ([`LinearProbe`] after [`ParamGuard::check`]); fits
/// with [`linfa::traits::Fit`] or [`fit_array`](Self::fit_array).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidLinearProbe {
    kind: ProbeKind,
    penalty: f64,
    grid: Option<Vec<f64>>,
    holdout: f64,
    seed: u64,
    standardize: bool,
    label_column: LabelColumn,
    max_iterations: u64,
    gradient_tolerance: f64,
    singular_tolerance: f64,
}

impl LinearProbe {
    fn with_kind(kind: ProbeKind, penalty: f64) -> Self {
        LinearProbe(ValidLinearProbe {
            kind,
            penalty,
            grid: None,
            holdout: DEFAULT_HOLDOUT,
            seed: DEFAULT_SEED,
            standardize: true,
            label_column: LabelColumn::Label,
            max_iterations: DEFAULT_MAX_ITERATIONS,
            gradient_tolerance: DEFAULT_GRADIENT_TOLERANCE,
            singular_tolerance: DEFAULT_SINGULAR_TOLERANCE,
        })
    }

    /// A least-squares (ridge on one-hot targets) probe with penalty [`DEFAULT_RIDGE`]:
    ///
    /// ```text
    /// minimise_{W,b}  (1/n) Σ_i ‖Wᵀ z_i + b − e_{y_i}‖² + λ ‖W‖²_F
    /// ```
    pub fn least_squares() -> Self {
        Self::with_kind(ProbeKind::LeastSquares, DEFAULT_RIDGE)
    }

    /// A multinomial logistic probe (linfa-logistic) with penalty
    /// [`DEFAULT_LOGISTIC_PENALTY`]:
    ///
    /// ```text
    /// minimise_{W,b}  (1/n) Σ_i −log softmax(Wᵀ z_i + b)_{y_i} + (λ/2) ‖W‖²_F
    /// ```
    ///
    /// linfa-logistic minimises the summed loss with `alpha/2 ‖W‖²`, so it is given
    /// `alpha = n λ`; scikit-learn's `C` is `1 / (n λ)`.
    pub fn logistic() -> Self {
        Self::with_kind(ProbeKind::Logistic, DEFAULT_LOGISTIC_PENALTY)
    }

    /// A probe of the given kind with that kind's default penalty. `LinearProbe` fits the
    /// crate's own kinds, [`ProbeKind::LeastSquares`] and [`ProbeKind::Logistic`]; any other kind
    /// gives the least-squares probe (fit [`ProbeKind::LinfaOls`] with [`OneVsRestOls`], and
    /// other linfa estimators through [`probe_scan`]).
    pub fn new(kind: ProbeKind) -> Self {
        match kind {
            ProbeKind::Logistic => Self::logistic(),
            ProbeKind::LeastSquares | ProbeKind::LinfaOls | ProbeKind::Other(_) => {
                Self::least_squares()
            }
        }
    }

    /// Sets the per-sample L2 penalty `λ ≥ 0` (see the objectives in the [module docs](self)),
    /// and clears any penalty grid.
    pub fn penalty(mut self, lambda: f64) -> Self {
        self.0.penalty = lambda;
        self.0.grid = None;
        self
    }

    /// Alias of [`penalty`](Self::penalty), named for the least-squares probe.
    pub fn ridge(self, lambda: f64) -> Self {
        self.penalty(lambda)
    }

    /// Chooses the penalty among `candidates` on a held-out part of the training data (see
    /// *Penalty selection* in the [module docs](self)), then refits on all of it.
    pub fn penalty_grid(mut self, candidates: &[f64]) -> Self {
        self.0.grid = Some(candidates.to_vec());
        self
    }

    /// Alias of [`penalty_grid`](Self::penalty_grid), named for the least-squares probe.
    pub fn ridge_grid(self, candidates: &[f64]) -> Self {
        self.penalty_grid(candidates)
    }

    /// Fraction of each class held out for penalty selection, in `(0, 1)`; default
    /// [`DEFAULT_HOLDOUT`].
    pub fn holdout_fraction(mut self, fraction: f64) -> Self {
        self.0.holdout = fraction;
        self
    }

    /// Seed of the held-out split; default [`DEFAULT_SEED`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.0.seed = seed;
        self
    }

    /// Whether to scale the columns to unit variance on the training rows (default `true`;
    /// centring is always applied).
    pub fn standardize(mut self, yes: bool) -> Self {
        self.0.standardize = yes;
        self
    }

    /// Which labels [`fit`](Self::fit) and the `*_features` methods of the fitted probe use
    /// (default [`LabelColumn::Label`]).
    pub fn label_column(mut self, column: LabelColumn) -> Self {
        self.0.label_column = column;
        self
    }

    /// Iteration cap of the logistic probe's L-BFGS (default [`DEFAULT_MAX_ITERATIONS`]).
    pub fn max_iterations(mut self, iterations: u64) -> Self {
        self.0.max_iterations = iterations;
        self
    }

    /// Gradient tolerance of the logistic probe, on the per-sample objective: L-BFGS stops
    /// when `‖∇‖₂ < tolerance` for the mean loss, i.e. linfa is given `tolerance · n` for its
    /// summed loss (default [`DEFAULT_GRADIENT_TOLERANCE`]).
    pub fn gradient_tolerance(mut self, tolerance: f64) -> Self {
        self.0.gradient_tolerance = tolerance;
        self
    }

    /// Relative pivot tolerance of the least-squares Cholesky factorisation: the system is
    /// declared singular when a pivot falls to `tolerance × max_j A_jj` or below (default
    /// [`DEFAULT_SINGULAR_TOLERANCE`]).
    pub fn singular_tolerance(mut self, tolerance: f64) -> Self {
        self.0.singular_tolerance = tolerance;
        self
    }

    /// The kind of probe.
    pub fn kind(&self) -> ProbeKind {
        self.0.kind
    }

    /// The label column used by [`fit`](Self::fit).
    pub fn labels(&self) -> LabelColumn {
        self.0.label_column
    }

    /// Fits the probe on the labels of `train` chosen by [`label_column`](Self::label_column).
    ///
    /// # Errors
    /// [`ProbeError::MissingLabels`] when `coarse` labels are asked for and absent, and those of
    /// [`fit_array`](Self::fit_array).
    pub fn fit(&self, train: &Features) -> Result<FittedProbe, ProbeError> {
        let labels = self.0.label_column.labels_of(train)?;
        self.fit_array(train.x.view(), labels)
    }

    /// Fits the probe on an `n × d` matrix (`f32` or `f64`) and its labels (any `u32` values;
    /// the classes are the distinct values, in increasing order).
    ///
    /// # Errors
    /// [`ProbeError::InvalidPenalty`], [`ProbeError::EmptyGrid`] or
    /// [`ProbeError::InvalidParameter`] for bad parameters; [`ProbeError::Check`] (no rows or
    /// columns, lengths that differ, a non-finite value naming row and column) and
    /// [`ProbeError::OneClass`] for bad data; [`ProbeError::NoHoldout`] when penalty selection
    /// has nothing to hold out; [`ProbeError::Singular`] when `ZᵀZ + nλI` is singular (e.g.
    /// `λ = 0` with constant or collinear columns; during selection a singular candidate is
    /// skipped, and the error is returned only if every candidate is); [`ProbeError::Linfa`]
    /// if linfa-logistic fails.
    pub fn fit_array<T>(
        &self,
        x: ArrayView2<'_, T>,
        labels: &[u32],
    ) -> Result<FittedProbe, ProbeError>
    where
        T: Copy + Into<f64> + Sync,
    {
        self.check_ref()?.fit_array(x, labels)
    }
}

impl ParamGuard for LinearProbe {
    type Checked = ValidLinearProbe;
    type Error = ProbeError;

    fn check_ref(&self) -> Result<&ValidLinearProbe, ProbeError> {
        self.0.validate()?;
        Ok(&self.0)
    }

    fn check(self) -> Result<ValidLinearProbe, ProbeError> {
        self.0.validate()?;
        Ok(self.0)
    }
}

impl ValidLinearProbe {
    /// The kind of probe.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// The label column used by [`LinearProbe::fit`].
    pub fn labels(&self) -> LabelColumn {
        self.label_column
    }

    fn validate(&self) -> Result<(), ProbeError> {
        let bad = |name, value, expected| {
            Err(ProbeError::InvalidParameter {
                name,
                value,
                expected,
            })
        };
        match &self.grid {
            None => check_penalty(self.penalty)?,
            Some(grid) if grid.is_empty() => return Err(ProbeError::EmptyGrid),
            Some(grid) => {
                for &l in grid {
                    check_penalty(l)?;
                }
            }
        }
        if !(self.holdout > 0.0 && self.holdout < 1.0) {
            return bad("holdout_fraction", self.holdout, "in (0, 1)");
        }
        if !(self.gradient_tolerance.is_finite() && self.gradient_tolerance > 0.0) {
            return bad(
                "gradient_tolerance",
                self.gradient_tolerance,
                "finite and > 0",
            );
        }
        if self.max_iterations == 0 {
            return bad("max_iterations", 0.0, "≥ 1");
        }
        if !(self.singular_tolerance.is_finite() && (0.0..1.0).contains(&self.singular_tolerance)) {
            return bad(
                "singular_tolerance",
                self.singular_tolerance,
                "finite and in [0, 1)",
            );
        }
        Ok(())
    }

    /// Fits the probe on an `n × d` matrix and its labels (as [`LinearProbe::fit_array`], whose
    /// parameters have been checked).
    ///
    /// # Errors
    /// As [`LinearProbe::fit_array`], except for the parameter errors.
    pub fn fit_array<T>(
        &self,
        x: ArrayView2<'_, T>,
        labels: &[u32],
    ) -> Result<FittedProbe, ProbeError>
    where
        T: Copy + Into<f64> + Sync,
    {
        let (n, d) = x.dim();
        check::check_not_empty(&x)?;
        check::check_lengths(n, labels.len())?;
        let shift = checked_column_means(&x)?;
        let (classes, y) = dense_labels(labels);
        if classes.len() < 2 {
            return Err(ProbeError::OneClass { label: classes[0] });
        }
        let c = classes.len();
        let all: Vec<usize> = (0..n).collect();

        let (selection, penalty, warm) = match &self.grid {
            None => (None, self.penalty, None),
            Some(grid) => {
                let mask = holdout_mask(&y, c, self.holdout, self.seed);
                let (fit_rows, held_rows): (Vec<usize>, Vec<usize>) =
                    all.iter().partition(|&&i| !mask[i]);
                if held_rows.is_empty() {
                    return Err(ProbeError::NoHoldout {
                        rows: n,
                        fraction: self.holdout,
                    });
                }
                let (sel, warm) = self.select(&x, &y, c, &shift, &fit_rows, &held_rows, grid)?;
                let chosen = sel.chosen;
                (Some(sel), chosen, warm)
            }
        };

        let model = match self.kind {
            ProbeKind::LeastSquares if !matches!(warm, Some(Warm::Moments(_))) && n < d => {
                let data = DualData::new(&x, &y, &all, &shift, c, self.standardize);
                data.solve(penalty, self.singular_tolerance)?
            }
            ProbeKind::LeastSquares => {
                let m = match warm {
                    Some(Warm::Moments(m)) => m,
                    _ => moments(&x, &y, &all, shift.view(), c)?,
                };
                ls_solve(
                    &m,
                    &shift,
                    penalty,
                    self.standardize,
                    self.singular_tolerance,
                )?
            }
            ProbeKind::LinfaOls | ProbeKind::Other(_) => unreachable!("{NOT_OURS}"),
            ProbeKind::Logistic => {
                let init = match warm {
                    Some(Warm::Model(m)) => Some(m),
                    _ => None,
                };
                self.logistic_solve(&x, &y, c, &all, penalty, init.as_ref())?
            }
        };
        Ok(FittedProbe {
            kind: self.kind,
            label_column: self.label_column,
            penalty,
            classes,
            n_train: n,
            model,
            selection,
        })
    }

    /// Penalty selection on `fit_rows`, scored on `held_rows`. Also returns what the final
    /// refit can reuse: the moments of all rows (least squares) or the chosen candidate's model
    /// as a warm start (logistic).
    #[allow(clippy::too_many_arguments)]
    fn select<T>(
        &self,
        x: &ArrayView2<'_, T>,
        y: &[usize],
        c: usize,
        shift: &Array1<f64>,
        fit_rows: &[usize],
        held_rows: &[usize],
        grid: &[f64],
    ) -> Result<(PenaltySelection, Option<Warm>), ProbeError>
    where
        T: Copy + Into<f64> + Sync,
    {
        let held_y: Vec<usize> = held_rows.iter().map(|&i| y[i]).collect();
        let score = |model: &Model| -> f64 {
            let pred = model.predict_rows(x, Some(held_rows));
            let correct = pred.iter().zip(&held_y).filter(|(p, t)| p == t).count();
            correct as f64 / held_rows.len() as f64
        };
        let mut accuracy = vec![f64::NAN; grid.len()];
        let mut last_err = None;
        let mut warm = None;
        // Best so far: (accuracy, penalty, index).
        let mut best: Option<(f64, f64, usize)> = None;
        let consider = |k: usize, acc: f64, best: &mut Option<(f64, f64, usize)>| {
            let better = match *best {
                None => true,
                Some((a, l, _)) => acc > a || (acc == a && grid[k] > l),
            };
            if better {
                *best = Some((acc, grid[k], k));
            }
        };
        match self.kind {
            ProbeKind::LeastSquares if fit_rows.len() < x.ncols() => {
                // Dual form: one n × n Gram matrix for every candidate; the final refit on all
                // rows builds its own.
                let data = DualData::new(x, y, fit_rows, shift, c, self.standardize);
                for (k, &l) in grid.iter().enumerate() {
                    match data.solve(l, self.singular_tolerance) {
                        Ok(model) => {
                            accuracy[k] = score(&model);
                            consider(k, accuracy[k], &mut best);
                        }
                        Err(e) => last_err = Some(e),
                    }
                }
            }
            ProbeKind::LeastSquares => {
                let fit_m = moments(x, y, fit_rows, shift.view(), c)?;
                for (k, &l) in grid.iter().enumerate() {
                    match ls_solve(&fit_m, shift, l, self.standardize, self.singular_tolerance) {
                        Ok(model) => {
                            accuracy[k] = score(&model);
                            consider(k, accuracy[k], &mut best);
                        }
                        Err(e) => last_err = Some(e),
                    }
                }
                if best.is_some() {
                    let mut all_m = moments(x, y, held_rows, shift.view(), c)?;
                    all_m.add(&fit_m);
                    warm = Some(Warm::Moments(all_m));
                }
            }
            ProbeKind::LinfaOls | ProbeKind::Other(_) => unreachable!("{NOT_OURS}"),
            ProbeKind::Logistic => {
                // Visit the candidates from the largest penalty down, each warm-started from the
                // previous solution (the path of solutions is continuous in λ).
                let mut order: Vec<usize> = (0..grid.len()).collect();
                order.sort_by(|&a, &b| grid[b].total_cmp(&grid[a]));
                let mut prev: Option<Model> = None;
                let mut models: Vec<Option<Model>> = vec![None; grid.len()];
                for k in order {
                    let model = self.logistic_solve(x, y, c, fit_rows, grid[k], prev.as_ref())?;
                    accuracy[k] = score(&model);
                    consider(k, accuracy[k], &mut best);
                    prev = Some(model.clone());
                    models[k] = Some(model);
                }
                if let Some((_, _, k)) = best {
                    warm = models[k].take().map(Warm::Model);
                }
            }
        }
        let Some((_, chosen, _)) = best else {
            return Err(last_err.unwrap_or(ProbeError::EmptyGrid));
        };
        Ok((
            PenaltySelection {
                candidates: grid.to_vec(),
                holdout_accuracy: accuracy,
                chosen,
                n_fit: fit_rows.len(),
                n_holdout: held_rows.len(),
                holdout_fraction: self.holdout,
                seed: self.seed,
            },
            warm,
        ))
    }

    /// Multinomial logistic regression on `rows` through linfa-logistic.
    fn logistic_solve<T>(
        &self,
        x: &ArrayView2<'_, T>,
        y: &[usize],
        c: usize,
        rows: &[usize],
        lambda: f64,
        init: Option<&Model>,
    ) -> Result<Model, ProbeError>
    where
        T: Copy + Into<f64> + Sync,
    {
        let d = x.ncols();
        let n = rows.len();
        let (mean, scale, constant) = column_scaler(x, rows, self.standardize);
        // Constant columns are zero after centring; write exact zeros (rounding would leave
        // values of the order of ε · |m|).
        let keep: Array1<f64> = constant
            .iter()
            .map(|&k| if k { 0.0 } else { 1.0 })
            .collect();
        // The standardised features are computed in f64 and stored as f32, the precision of
        // the features themselves: the solver reads them once per evaluation and converts
        // each value to f64 as it loads it (all its sums are f64), so storing f32 halves the
        // bytes that bound an evaluation's time. The rounding, 2⁻²⁴ of |z|, is at most the
        // rounding the f32 features already carry, 2⁻²⁴ · |x|, in units of x.
        let mut z = Array2::<f32>::zeros((n, d));
        for (mut zr, &i) in z.outer_iter_mut().zip(rows) {
            Zip::from(&mut zr)
                .and(x.row(i))
                .and(&mean)
                .and(&scale)
                .and(&keep)
                .for_each(|o, &v, &m, &s, &k| *o = (k * (v.into() - m) / s) as f32);
        }
        let targets: Array1<usize> = rows.iter().map(|&i| y[i]).collect();
        let mut params = MultiLogisticRegression::<f64>::default()
            .alpha(lambda * n as f64)
            .max_iterations(self.max_iterations)
            .gradient_tolerance(self.gradient_tolerance * n as f64)
            .with_intercept(true);
        if let Some(init) = init {
            // Express the warm start in this fit's standardised coordinates:
            // W_z = diag(s) W_in, b = b_in + mᵀ W_in.
            let mut p = Array2::<f64>::zeros((d + 1, c));
            for j in 0..d {
                for k in 0..c {
                    p[[j, k]] = scale[j] * init.w_in[[j, k]];
                }
            }
            let b = &init.b_in + &mean.dot(&init.w_in);
            p.row_mut(d).assign(&b);
            if p.iter().all(|v| v.is_finite()) {
                params = params.initial_params(p);
            }
        }
        let context =
            || format!("fitting the logistic probe (n = {n}, d = {d}, C = {c}, λ = {lambda:e})");
        let linfa_error = |e: linfa_logistic::error::Error| ProbeError::Linfa {
            context: context(),
            message: e.to_string(),
        };
        let fitted = params
            .check()
            .map_err(linfa_error)?
            .fit_f32(z.view(), targets.view())
            .map_err(linfa_error)?;
        let mut coef = Array2::<f64>::zeros((d, c));
        let mut intercept = Array1::<f64>::from_elem(c, f64::NEG_INFINITY);
        // linfa's columns are the distinct targets present, in increasing order.
        for (k, &class) in fitted.classes().iter().enumerate() {
            if class < c {
                coef.column_mut(class).assign(&fitted.params().column(k));
                intercept[class] = fitted.intercept()[k];
            }
        }
        if coef.iter().chain(intercept.iter()).any(|v| v.is_nan()) {
            return Err(ProbeError::Linfa {
                context: context(),
                message: "the solver returned NaN coefficients".into(),
            });
        }
        Ok(Model::new(mean, scale, coef, intercept))
    }
}

fn check_penalty(lambda: f64) -> Result<(), ProbeError> {
    if lambda.is_finite() && lambda >= 0.0 {
        Ok(())
    } else {
        Err(ProbeError::InvalidPenalty { value: lambda })
    }
}

/// What the final refit reuses from penalty selection.
enum Warm {
    Moments(Moments),
    Model(Model),
}

/// The outcome of penalty selection on a held-out part of the training data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PenaltySelection {
    /// The candidate penalties, in the order given.
    pub candidates: Vec<f64>,
    /// Held-out accuracy of each candidate (NaN for a least-squares candidate whose system was
    /// singular).
    pub holdout_accuracy: Vec<f64>,
    /// The chosen penalty (best held-out accuracy; ties go to the larger penalty).
    pub chosen: f64,
    /// Rows the candidates were fitted on.
    pub n_fit: usize,
    /// Rows held out.
    pub n_holdout: usize,
    /// The held-out fraction asked for.
    pub holdout_fraction: f64,
    /// Seed of the split.
    pub seed: u64,
}

/// A fitted linear classifier in both coordinate systems.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    mean: Array1<f64>,
    scale: Array1<f64>,
    /// `d × C`, on standardised features.
    coef: Array2<f64>,
    /// `C`.
    intercept: Array1<f64>,
    /// `d × C`, on input features: `W_in = diag(1/s) W`.
    w_in: Array2<f64>,
    /// `b_in = b − mᵀ W_in`.
    b_in: Array1<f64>,
}

impl Model {
    fn new(
        mean: Array1<f64>,
        scale: Array1<f64>,
        coef: Array2<f64>,
        intercept: Array1<f64>,
    ) -> Self {
        let mut w_in = coef.clone();
        for (mut row, &s) in w_in.outer_iter_mut().zip(&scale) {
            row.mapv_inplace(|v| v / s);
        }
        let b_in = &intercept - &mean.dot(&w_in);
        Model {
            mean,
            scale,
            coef,
            intercept,
            w_in,
            b_in,
        }
    }

    /// Scores `x W_in + b_in` of the given rows (all rows when `None`), `rows × C`.
    fn scores<T: Copy + Into<f64>>(
        &self,
        x: &ArrayView2<'_, T>,
        rows: Option<&[usize]>,
    ) -> Array2<f64> {
        let n = rows.map_or(x.nrows(), <[usize]>::len);
        let (d, c) = self.w_in.dim();
        let mut out = Array2::<f64>::zeros((n, c));
        let mut buf = Array2::<f64>::zeros((BLOCK_ROWS.min(n).max(1), d));
        let mut start = 0;
        while start < n {
            let end = (start + BLOCK_ROWS).min(n);
            for k in start..end {
                let i = rows.map_or(k, |r| r[k]);
                Zip::from(buf.row_mut(k - start))
                    .and(x.row(i))
                    .for_each(|o, &v| *o = v.into());
            }
            let mut block = out.slice_mut(s![start..end, ..]);
            for mut r in block.outer_iter_mut() {
                r.assign(&self.b_in);
            }
            linalg::matmul_into(
                block,
                true,
                buf.slice(s![..end - start, ..]),
                self.w_in.view(),
            )
            .expect("block is (end − start) × C, buf is (end − start) × d, w_in is d × C");
            start = end;
        }
        out
    }

    /// Class indices (`0..C`) of the argmax of the scores; ties go to the smallest index.
    fn predict_rows<T: Copy + Into<f64>>(
        &self,
        x: &ArrayView2<'_, T>,
        rows: Option<&[usize]>,
    ) -> Vec<usize> {
        self.scores(x, rows).outer_iter().map(argmax).collect()
    }
}

fn argmax(row: ArrayView1<'_, f64>) -> usize {
    let mut best = 0;
    let mut best_v = f64::NEG_INFINITY;
    for (k, &v) in row.iter().enumerate() {
        if v > best_v {
            best = k;
            best_v = v;
        }
    }
    best
}

/// Accuracy of one class on some data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassAccuracy {
    /// The label.
    pub class: u32,
    /// Rows with this label.
    pub n: usize,
    /// Of which predicted correctly.
    pub correct: usize,
    /// `correct / n`.
    pub accuracy: f64,
}

/// Accuracy of each label of `truth` (increasing), given the predictions.
fn class_counts(pred: &[u32], truth: &[u32]) -> Vec<ClassAccuracy> {
    let mut tally: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for (&p, &t) in pred.iter().zip(truth) {
        let e = tally.entry(t).or_default();
        e.0 += 1;
        e.1 += usize::from(p == t);
    }
    tally
        .into_iter()
        .map(|(class, (n, correct))| ClassAccuracy {
            class,
            n,
            correct,
            accuracy: correct as f64 / n as f64,
        })
        .collect()
}

/// A fitted probe: the standardisation and the linear classifier, with the penalty it was
/// fitted with. Built by [`LinearProbe::fit`] / [`LinearProbe::fit_array`].
#[derive(Debug, Clone, PartialEq)]
pub struct FittedProbe {
    kind: ProbeKind,
    label_column: LabelColumn,
    penalty: f64,
    classes: Vec<u32>,
    n_train: usize,
    model: Model,
    selection: Option<PenaltySelection>,
}

impl FittedProbe {
    /// The kind of probe.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// The label column used by the `*_features` methods.
    pub fn label_column(&self) -> LabelColumn {
        self.label_column
    }

    /// The penalty `λ` of the final fit (the chosen one after penalty selection).
    pub fn penalty(&self) -> f64 {
        self.penalty
    }

    /// The outcome of penalty selection, when a grid was given.
    pub fn selection(&self) -> Option<&PenaltySelection> {
        self.selection.as_ref()
    }

    /// The classes (distinct training labels, increasing); column `k` of the coefficients
    /// belongs to `classes()[k]`.
    pub fn classes(&self) -> &[u32] {
        &self.classes
    }

    /// Feature dimension `d`.
    pub fn dim(&self) -> usize {
        self.model.mean.len()
    }

    /// Number of training rows.
    pub fn n_train(&self) -> usize {
        self.n_train
    }

    /// Column means `m` of the training rows.
    pub fn mean(&self) -> ArrayView1<'_, f64> {
        self.model.mean.view()
    }

    /// Column scales `s` (standard deviations of the training rows, 1 for constant columns or
    /// without standardisation).
    pub fn scale(&self) -> ArrayView1<'_, f64> {
        self.model.scale.view()
    }

    /// `W`, `d × C`, on the standardised features `z = (x − m) ⊘ s` (the solution of the
    /// objective in the [module docs](self)).
    pub fn coefficients(&self) -> ArrayView2<'_, f64> {
        self.model.coef.view()
    }

    /// `b`, the unpenalised intercept on standardised features.
    pub fn intercept(&self) -> ArrayView1<'_, f64> {
        self.model.intercept.view()
    }

    /// The same classifier on input features: `W_in = diag(1/s) W` (`d × C`), so that the
    /// scores are `x W_in + b_in`.
    pub fn input_weights(&self) -> ArrayView2<'_, f64> {
        self.model.w_in.view()
    }

    /// `b_in = b − mᵀ W_in`.
    pub fn input_intercept(&self) -> ArrayView1<'_, f64> {
        self.model.b_in.view()
    }

    fn check_x<T: Copy + Into<f64>>(&self, x: &ArrayView2<'_, T>) -> Result<(), ProbeError> {
        if x.ncols() != self.dim() {
            return Err(ProbeError::DimensionMismatch {
                expected: self.dim(),
                found: x.ncols(),
            });
        }
        check::check_finite(x)?;
        Ok(())
    }

    /// Scores `z(x) W + b`, `n × C` (column `k` for `classes()[k]`).
    ///
    /// # Errors
    /// [`ProbeError::DimensionMismatch`], [`ProbeError::Check`] (a non-finite value).
    pub fn decision_function<T: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, T>,
    ) -> Result<Array2<f64>, ProbeError> {
        self.check_x(&x)?;
        Ok(self.model.scores(&x, None))
    }

    /// Predicted label of every row: `argmax_c (Wᵀ z(x) + b)_c`, ties to the smallest label.
    ///
    /// # Errors
    /// [`ProbeError::DimensionMismatch`], [`ProbeError::Check`] (a non-finite value).
    pub fn predict<T: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, T>,
    ) -> Result<Vec<u32>, ProbeError> {
        self.check_x(&x)?;
        Ok(self
            .model
            .predict_rows(&x, None)
            .into_iter()
            .map(|k| self.classes[k])
            .collect())
    }

    fn counts<T: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, T>,
        labels: &[u32],
    ) -> Result<Vec<ClassAccuracy>, ProbeError> {
        if x.nrows() == 0 {
            return Err(CheckError::Empty {
                rows: 0,
                dim: x.ncols(),
            }
            .into());
        }
        check::check_lengths(x.nrows(), labels.len())?;
        let pred = self.predict(x)?;
        Ok(class_counts(&pred, labels))
    }

    /// Fraction of rows whose predicted label equals `labels` (a label the probe never saw
    /// counts as an error).
    ///
    /// # Errors
    /// [`ProbeError::Check`] for zero rows, lengths that differ or a non-finite value;
    /// [`ProbeError::DimensionMismatch`].
    pub fn accuracy<T: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, T>,
        labels: &[u32],
    ) -> Result<f64, ProbeError> {
        let per_class = self.counts(x, labels)?;
        let correct: usize = per_class.iter().map(|c| c.correct).sum();
        Ok(correct as f64 / labels.len() as f64)
    }

    /// Accuracy of each label present in `labels`, in increasing label order.
    ///
    /// # Errors
    /// As [`accuracy`](Self::accuracy).
    pub fn per_class_accuracy<T: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, T>,
        labels: &[u32],
    ) -> Result<Vec<ClassAccuracy>, ProbeError> {
        self.counts(x, labels)
    }

    /// [`predict`](Self::predict) on `features.x`.
    ///
    /// # Errors
    /// As [`predict`](Self::predict).
    pub fn predict_features(&self, features: &Features) -> Result<Vec<u32>, ProbeError> {
        self.predict(features.x.view())
    }

    /// [`accuracy`](Self::accuracy) against the probe's [`label_column`](Self::label_column).
    ///
    /// # Errors
    /// [`ProbeError::MissingLabels`] and those of [`accuracy`](Self::accuracy).
    pub fn accuracy_features(&self, features: &Features) -> Result<f64, ProbeError> {
        self.accuracy(features.x.view(), self.label_column.labels_of(features)?)
    }

    /// [`per_class_accuracy`](Self::per_class_accuracy) against the probe's label column.
    ///
    /// # Errors
    /// [`ProbeError::MissingLabels`] and those of [`accuracy`](Self::accuracy).
    pub fn per_class_accuracy_features(
        &self,
        features: &Features,
    ) -> Result<Vec<ClassAccuracy>, ProbeError> {
        self.per_class_accuracy(features.x.view(), self.label_column.labels_of(features)?)
    }

    /// Scores this probe on the training data it was fitted on and on test data. `epoch` and
    /// `layer` are taken from `test` (else from `train`).
    ///
    /// # Errors
    /// As [`accuracy_features`](Self::accuracy_features), for either split.
    pub fn report(&self, train: &Features, test: &Features) -> Result<ProbeReport, ProbeError> {
        let train_accuracy = self.accuracy_features(train)?;
        let per_class = self.per_class_accuracy_features(test)?;
        let n_test = test.n_samples();
        let correct: usize = per_class.iter().map(|c| c.correct).sum();
        Ok(ProbeReport {
            epoch: test.epoch.or(train.epoch),
            layer: test.layer.clone().or_else(|| train.layer.clone()),
            kind: self.kind,
            label: self.label_column,
            penalty: self.penalty,
            selection: self.selection.clone(),
            train_accuracy,
            test_accuracy: correct as f64 / n_test as f64,
            per_class_test_accuracy: per_class,
            n_train: train.n_samples(),
            n_test,
            classes: self.classes.len(),
            dim: self.dim(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// linfa: Fit / PredictInplace, and a one-vs-rest least-squares probe on linfa-linear.

/// A label type the crate's probes accept in a linfa dataset and predict: `u32` (the crate's
/// labels) or `usize` (linfa's usual class type). Values must fit in a `u32`.
pub trait ProbeLabel: Copy + Default + 'static {
    /// Name of the type, for errors.
    const NAME: &'static str;
    /// The label as `u32`, when it fits.
    fn to_u32(self) -> Option<u32>;
    /// The label from `u32`.
    fn from_u32(label: u32) -> Self;
    /// The label as `u64`, for errors.
    fn to_u64(self) -> u64;
}

impl ProbeLabel for u32 {
    const NAME: &'static str = "u32";
    fn to_u32(self) -> Option<u32> {
        Some(self)
    }
    fn from_u32(label: u32) -> Self {
        label
    }
    fn to_u64(self) -> u64 {
        u64::from(self)
    }
}

impl ProbeLabel for usize {
    const NAME: &'static str = "usize";
    fn to_u32(self) -> Option<u32> {
        u32::try_from(self).ok()
    }
    fn from_u32(label: u32) -> Self {
        label as usize
    }
    fn to_u64(self) -> u64 {
        self as u64
    }
}

/// The targets of a linfa dataset as `u32` labels.
fn labels_u32<L: ProbeLabel>(targets: ArrayView1<'_, L>) -> Result<Vec<u32>, ProbeError> {
    targets
        .iter()
        .enumerate()
        .map(|(row, &l)| {
            l.to_u32().ok_or(ProbeError::LabelOutOfRange {
                row,
                value: l.to_u64(),
                target: "u32",
            })
        })
        .collect()
}

impl<T, D, L> Fit<ArrayBase<D, Ix2>, L, ProbeError> for ValidLinearProbe
where
    T: Copy + Into<f64> + Sync,
    D: Data<Elem = T>,
    L: AsSingleTargets,
    L::Elem: ProbeLabel,
{
    type Object = FittedProbe;

    /// [`fit_array`](ValidLinearProbe::fit_array) on the dataset's records and labels (the
    /// classes are the distinct labels, in increasing order).
    fn fit(&self, dataset: &DatasetBase<ArrayBase<D, Ix2>, L>) -> Result<FittedProbe, ProbeError> {
        let labels = labels_u32(dataset.targets().as_single_targets())?;
        self.fit_array(dataset.records().view(), &labels)
    }
}

/// linfa's prediction: the label of every row ([`FittedProbe::predict`] without its checks).
///
/// # Panics
/// When `x` has another number of columns than the training data, or `y` another length than
/// `x` has rows (linfa's convention). Rows with non-finite values get some label; use
/// [`FittedProbe::predict`] to have them rejected.
impl<T, D, L> PredictInplace<ArrayBase<D, Ix2>, Array1<L>> for FittedProbe
where
    T: Copy + Into<f64>,
    D: Data<Elem = T>,
    L: ProbeLabel,
{
    fn predict_inplace(&self, x: &ArrayBase<D, Ix2>, y: &mut Array1<L>) {
        assert_eq!(x.nrows(), y.len(), "one target per row of the records");
        assert_eq!(
            x.ncols(),
            self.dim(),
            "the records must have the training data's number of columns"
        );
        for (out, k) in y.iter_mut().zip(self.model.predict_rows(&x.view(), None)) {
            *out = L::from_u32(self.classes[k]);
        }
    }

    fn default_target(&self, x: &ArrayBase<D, Ix2>) -> Array1<L> {
        Array1::default(x.nrows())
    }
}

/// A least-squares probe built on linfa-linear: one unpenalised
/// [`linfa_linear::LinearRegression`] (with intercept) per class on that class's one-hot
/// target, predicting the class of the largest score (ties: the smallest label).
///
/// ```text
/// minimise_{w_c, b_c}  Σ_i (w_cᵀ x_i + b_c − [y_i = c])²    for every class c
/// ```
///
/// These `C` problems are the columns of [`LinearProbe::least_squares`]'s objective with
/// `λ = 0`; its standardisation does not change an unpenalised fit with intercept, so both
/// give the same scores (up to the solvers' rounding) when `XᵀX` (centred) is invertible. The
/// records are `f64`; labels are `u32` or `usize`. linfa-linear solves each class by its own
/// least-squares factorisation of `[X 1]` (no Gram matrix), which costs `C` times the work of
/// the crate's one Cholesky factorisation but does not square the condition number.
///
/// ```
/// use linfa::traits::{Fit, Predict};
/// use linfa::Dataset;
/// use ndarray::{array, Array1};
/// use neural_collapse::probe::OneVsRestOls;
///
/// let x = array![[0.0, 0.1], [0.1, 0.0], [0.2, 0.3], [1.0, 1.1], [1.1, 0.9], [0.8, 1.0]];
/// let y: Array1<usize> = array![0, 0, 0, 1, 1, 1];
/// let fitted = OneVsRestOls::default().fit(&Dataset::new(x.clone(), y.clone()))?;
/// let predicted: Array1<usize> = fitted.predict(&x);
/// assert_eq!(predicted, y);
/// # Ok::<(), neural_collapse::probe::ProbeError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OneVsRestOls;

/// A fitted [`OneVsRestOls`]: one linfa-linear model per class.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedOneVsRestOls {
    classes: Vec<u32>,
    /// `d × C`.
    weights: Array2<f64>,
    /// `C`.
    intercept: Array1<f64>,
}

impl<D, L> Fit<ArrayBase<D, Ix2>, L, ProbeError> for OneVsRestOls
where
    D: Data<Elem = f64>,
    L: AsSingleTargets,
    L::Elem: ProbeLabel,
{
    type Object = FittedOneVsRestOls;

    fn fit(
        &self,
        dataset: &DatasetBase<ArrayBase<D, Ix2>, L>,
    ) -> Result<FittedOneVsRestOls, ProbeError> {
        let x = dataset.records();
        let labels = labels_u32(dataset.targets().as_single_targets())?;
        let (n, d) = x.dim();
        check::check_not_empty(&x.view())?;
        check::check_lengths(n, labels.len())?;
        check::check_finite(&x.view())?;
        let (classes, y) = dense_labels(&labels);
        if classes.len() < 2 {
            return Err(ProbeError::OneClass { label: classes[0] });
        }
        let c = classes.len();
        let mut weights = Array2::<f64>::zeros((d, c));
        let mut intercept = Array1::<f64>::zeros(c);
        for k in 0..c {
            let target: Array1<f64> = y.iter().map(|&j| f64::from(u8::from(j == k))).collect();
            let fitted = linfa_linear::LinearRegression::new()
                .fit(&DatasetBase::new(x.view(), target))
                .map_err(|e| ProbeError::Estimator {
                    context: format!("fitting class {} of {c} (n = {n}, d = {d})", classes[k]),
                    estimator: "linfa_linear::LinearRegression".into(),
                    message: e.to_string(),
                })?;
            weights.column_mut(k).assign(fitted.params());
            intercept[k] = fitted.intercept();
        }
        Ok(FittedOneVsRestOls {
            classes,
            weights,
            intercept,
        })
    }
}

impl FittedOneVsRestOls {
    /// The classes (distinct training labels, increasing); column `k` belongs to `classes()[k]`.
    pub fn classes(&self) -> &[u32] {
        &self.classes
    }

    /// Per-class weights on the input features, `d × C`.
    pub fn weights(&self) -> ArrayView2<'_, f64> {
        self.weights.view()
    }

    /// Per-class intercepts, `C`.
    pub fn intercept(&self) -> ArrayView1<'_, f64> {
        self.intercept.view()
    }

    /// Scores `x W + b`, `n × C`.
    ///
    /// # Panics
    /// When `x` has another number of columns than the training data.
    pub fn decision_function<D: Data<Elem = f64>>(&self, x: &ArrayBase<D, Ix2>) -> Array2<f64> {
        x.dot(&self.weights) + &self.intercept
    }
}

impl<D, L> PredictInplace<ArrayBase<D, Ix2>, Array1<L>> for FittedOneVsRestOls
where
    D: Data<Elem = f64>,
    L: ProbeLabel,
{
    fn predict_inplace(&self, x: &ArrayBase<D, Ix2>, y: &mut Array1<L>) {
        assert_eq!(x.nrows(), y.len(), "one target per row of the records");
        assert_eq!(
            x.ncols(),
            self.weights.nrows(),
            "the records must have the training data's number of columns"
        );
        let scores = self.decision_function(x);
        for (out, row) in y.iter_mut().zip(scores.outer_iter()) {
            *out = L::from_u32(self.classes[argmax(row)]);
        }
    }

    fn default_target(&self, x: &ArrayBase<D, Ix2>) -> Array1<L> {
        Array1::default(x.nrows())
    }
}

// ---------------------------------------------------------------------------------------------
// Reports.

/// A probe's accuracies at one (epoch, layer).
///
/// `Display` prints a short table, `evcxr_display` an HTML table in Jupyter,
/// [`to_json`](Self::to_json) a JSON object and [`to_tidy_many`](Self::to_tidy_many) a long polars
/// `DataFrame`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    /// Checkpoint, when known.
    pub epoch: Option<u32>,
    /// Layer name, when known.
    pub layer: Option<String>,
    /// Probe kind.
    pub kind: ProbeKind,
    /// Label column the probe was fitted on and scored against.
    pub label: LabelColumn,
    /// Penalty `λ` of the final fit.
    pub penalty: f64,
    /// Penalty selection, when a grid was given.
    pub selection: Option<PenaltySelection>,
    /// Accuracy on the training split.
    pub train_accuracy: f64,
    /// Accuracy on the test split.
    pub test_accuracy: f64,
    /// Accuracy of each label of the test split.
    pub per_class_test_accuracy: Vec<ClassAccuracy>,
    /// Training rows.
    pub n_train: usize,
    /// Test rows.
    pub n_test: usize,
    /// Number of classes of the probe.
    pub classes: usize,
    /// Feature dimension.
    pub dim: usize,
}

impl ProbeReport {
    /// The report as a JSON object with every field (`per_class_test_accuracy` as an array of
    /// `{class, n, correct, accuracy}`; `selection` null without a grid).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// `(split, metric, value)` rows of the tidy table.
    pub(crate) fn tidy_rows(&self) -> Vec<(&'static str, String, f64)> {
        let accuracy = crate::config::Metric::Accuracy.name();
        let mut rows = vec![
            ("train", accuracy.to_string(), self.train_accuracy),
            ("test", accuracy.to_string(), self.test_accuracy),
        ];
        for c in &self.per_class_test_accuracy {
            rows.push(("test", format!("accuracy_class_{}", c.class), c.accuracy));
        }
        // Another linfa estimator's penalty is unknown (NaN): no row.
        if !self.penalty.is_nan() {
            rows.push(("train", "penalty".to_string(), self.penalty));
        }
        rows
    }

    pub(crate) fn heading(&self) -> String {
        let mut h = String::new();
        if let Some(l) = &self.layer {
            h.push_str(&format!("layer {l}, "));
        }
        if let Some(e) = self.epoch {
            h.push_str(&format!("epoch {e}, "));
        }
        h.push_str(&format!(
            "{} probe on `{}`: λ = {:e}",
            self.kind, self.label, self.penalty
        ));
        if let Some(s) = &self.selection {
            h.push_str(&format!(
                " (chosen among {} on {} held-out training rows)",
                s.candidates.len(),
                s.n_holdout
            ));
        }
        h.push_str(&format!(", C = {}, d = {}", self.classes, self.dim));
        h
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.heading())?;
        writeln!(
            f,
            "  train accuracy {:.4}  (n = {})",
            self.train_accuracy, self.n_train
        )?;
        writeln!(
            f,
            "  test accuracy  {:.4}  (n = {})",
            self.test_accuracy, self.n_test
        )?;
        let per: Vec<String> = self
            .per_class_test_accuracy
            .iter()
            .map(|c| format!("{}: {:.3}", c.class, c.accuracy))
            .collect();
        writeln!(f, "  per-class test accuracy: {}", per.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Sweeps over feature files.

/// Fits a probe on the `train` split and scores it on the `test` split of every epoch of a
/// feature file (one layer). `epochs` restricts the sweep to those checkpoints (in increasing
/// order); `None` takes every epoch of the file. One report per epoch, in increasing epoch
/// order; tidy them with [`ProbeReport::to_tidy_many`].
///
/// The probe is any linfa estimator whose fitted model predicts class labels: `estimator`
/// implements [`Fit`] on a [`linfa::Dataset`] of `f64` records and `usize` labels, and the
/// fitted model [`PredictInplace`] of `usize` labels — e.g. the crate's [`LinearProbe`],
/// [`OneVsRestOls`] (linfa-linear), `linfa_logistic::MultiLogisticRegression`, or your own.
/// The labels are those of the probe's [`label_column`](LinearProbe::label_column) for a
/// `LinearProbe`, the fine `label` column for any other estimator (see [`probe_scan_on`]).
///
/// A [`LinearProbe`] is recognised and fitted on the stored features directly (as
/// [`LinearProbe::fit`]), so its report has its penalty and penalty selection. For other
/// estimators the features are given as `f64` (exactly; the stored values are `f32`), the
/// report's [`kind`](ProbeReport::kind) is [`ProbeKind::LinfaOls`] for [`OneVsRestOls`] and
/// [`ProbeKind::Other`] with the estimator's type name otherwise, and its penalty is `NaN`
/// (`0` for `OneVsRestOls`) with no selection: the crate does not know other estimators'
/// settings.
///
/// ```no_run
/// use neural_collapse::prelude::*;
/// use neural_collapse::linfa_logistic::MultiLogisticRegression;
///
/// let scan = FeatureScan::open("data/runs/mnist-coarse/features-fc2.parquet")?;
/// let probe = LinearProbe::least_squares().ridge_grid(&[1e-4, 1e-3, 1e-2]);
/// let reports = probe_scan(&scan, &probe, None)?;
/// let tidy = ProbeReport::to_tidy_many(&reports)?;
/// let logistic = probe_scan(&scan, &MultiLogisticRegression::default().alpha(1e-2), None)?;
/// # Ok::<(), neural_collapse::Error>(())
/// ```
///
/// # Errors
/// Those of loading ([`FeatureError`], e.g. an epoch without a
/// `train` or `test` split) and of fitting and scoring ([`ProbeError`]; another estimator's
/// error as [`ProbeError::Estimator`]), wrapped in [`ProbeError::Context`]
/// naming the file, epoch and split.
pub fn probe_scan<E, Er>(
    scan: &FeatureScan,
    estimator: &E,
    epochs: Option<&[u32]>,
) -> Result<Vec<ProbeReport>>
where
    E: Fit<Array2<f64>, Array1<usize>, Er> + 'static,
    E::Object: PredictInplace<Array2<f64>, Array1<usize>> + 'static,
    Er: std::error::Error + From<linfa::error::Error>,
{
    let column = match (estimator as &dyn Any).downcast_ref::<LinearProbe>() {
        Some(probe) => probe.labels(),
        None => LabelColumn::Label,
    };
    probe_scan_on(scan, estimator, column, epochs)
}

/// [`probe_scan`] on the given label column (for a [`LinearProbe`], in place of its own
/// [`label_column`](LinearProbe::label_column)).
///
/// # Errors
/// As [`probe_scan`], and [`ProbeError::MissingLabels`] for absent `coarse` labels.
pub fn probe_scan_on<E, Er>(
    scan: &FeatureScan,
    estimator: &E,
    column: LabelColumn,
    epochs: Option<&[u32]>,
) -> Result<Vec<ProbeReport>>
where
    E: Fit<Array2<f64>, Array1<usize>, Er> + 'static,
    E::Object: PredictInplace<Array2<f64>, Array1<usize>> + 'static,
    Er: std::error::Error + From<linfa::error::Error>,
{
    let own = (estimator as &dyn Any)
        .downcast_ref::<LinearProbe>()
        .map(|p| p.clone().label_column(column));
    let epochs = match epochs {
        Some(e) => {
            let mut e = e.to_vec();
            e.sort_unstable();
            e.dedup();
            e
        }
        None => {
            let epochs = scan.epochs()?;
            if epochs.is_empty() {
                // An empty file: the loader's "no rows" error, as for the metrics.
                scan.query().load()?;
            }
            epochs
        }
    };
    let mut reports = Vec::with_capacity(epochs.len());
    for epoch in epochs {
        let train = scan.epoch(epoch).split("train").load_with_labels(column)?;
        let test = scan.epoch(epoch).split("test").load_with_labels(column)?;
        let context = |e: ProbeError, split: &str| ProbeError::Context {
            context: format!("{}, epoch {epoch}, split {split}", scan.path().display()),
            source: Box::new(e),
        };
        let report = match &own {
            // The crate's own probe, on the stored features as they are (today's path).
            Some(probe) => {
                let fitted = probe.fit(&train).map_err(|e| context(e, "train"))?;
                fitted
                    .report(&train, &test)
                    .map_err(|e| context(e, "test"))?
            }
            None => linfa_report(estimator, &train, &test, column, &context)?,
        };
        reports.push(report);
    }
    Ok(reports)
}

/// The short name of a type: its path's last segment, without generic arguments.
fn short_type_name<E>() -> &'static str {
    let full = std::any::type_name::<E>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// Fits any linfa estimator on `train` (records `f64`, labels `usize`) and scores it on
/// `test`.
fn linfa_report<E, Er>(
    estimator: &E,
    train: &Features,
    test: &Features,
    column: LabelColumn,
    context: &dyn Fn(ProbeError, &str) -> ProbeError,
) -> Result<ProbeReport>
where
    E: Fit<Array2<f64>, Array1<usize>, Er> + 'static,
    E::Object: PredictInplace<Array2<f64>, Array1<usize>> + 'static,
    Er: std::error::Error + From<linfa::error::Error>,
{
    let is_ols = (estimator as &dyn Any).is::<OneVsRestOls>();
    let (kind, penalty) = if is_ols {
        (ProbeKind::LinfaOls, 0.0)
    } else {
        (ProbeKind::Other(short_type_name::<E>()), f64::NAN)
    };
    let split_data = |f: &Features, split: &str| -> Result<(Array2<f64>, Vec<u32>)> {
        let labels = column.labels_of(f).map_err(|e| context(e, split))?;
        check::check_not_empty(&f.x.view())
            .and_then(|()| check::check_finite(&f.x.view()))
            .map_err(|e| context(e.into(), split))?;
        Ok((f.x.mapv(f64::from), labels.to_vec()))
    };
    let (x_train, y_train) = split_data(train, "train")?;
    let (x_test, y_test) = split_data(test, "test")?;
    if x_test.ncols() != x_train.ncols() {
        let e = ProbeError::DimensionMismatch {
            expected: x_train.ncols(),
            found: x_test.ncols(),
        };
        return Err(context(e, "test"));
    }
    let targets: Array1<usize> = y_train.iter().map(|&l| l as usize).collect();
    let dataset = DatasetBase::new(x_train, targets);
    let fitted = estimator.fit(&dataset).map_err(|e| {
        let (n, d) = dataset.records().dim();
        context(
            ProbeError::Estimator {
                context: format!("fitting on n = {n} rows, d = {d} columns"),
                estimator: std::any::type_name::<E>().to_string(),
                message: e.to_string(),
            },
            "train",
        )
    })?;
    let predict = |x: &Array2<f64>| -> Vec<u32> {
        let mut y = fitted.default_target(x);
        fitted.predict_inplace(x, &mut y);
        y.iter().map(|&l| l as u32).collect()
    };
    let train_pred = predict(dataset.records());
    let test_pred = predict(&x_test);
    let correct =
        |pred: &[u32], truth: &[u32]| pred.iter().zip(truth).filter(|(p, t)| p == t).count();
    let per_class = class_counts(&test_pred, &y_test);
    let mut classes = y_train.clone();
    classes.sort_unstable();
    classes.dedup();
    Ok(ProbeReport {
        epoch: test.epoch.or(train.epoch),
        layer: test.layer.clone().or_else(|| train.layer.clone()),
        kind,
        label: column,
        penalty,
        selection: None,
        train_accuracy: correct(&train_pred, &y_train) as f64 / y_train.len() as f64,
        test_accuracy: correct(&test_pred, &y_test) as f64 / y_test.len() as f64,
        per_class_test_accuracy: per_class,
        n_train: train.n_samples(),
        n_test: test.n_samples(),
        classes: classes.len(),
        dim: dataset.records().ncols(),
    })
}

/// [`probe_scan`] over several feature files (e.g. the layers of a run), concatenated in the
/// order of `scans`.
///
/// # Errors
/// As [`probe_scan`].
pub fn probe_scans<E, Er>(
    scans: &[FeatureScan],
    estimator: &E,
    epochs: Option<&[u32]>,
) -> Result<Vec<ProbeReport>>
where
    E: Fit<Array2<f64>, Array1<usize>, Er> + 'static,
    E::Object: PredictInplace<Array2<f64>, Array1<usize>> + 'static,
    Er: std::error::Error + From<linfa::error::Error>,
{
    let mut out = Vec::new();
    for scan in scans {
        out.extend(probe_scan(scan, estimator, epochs)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Numerics.

/// Column means (f64) of `x`, checking that every value is finite.
fn checked_column_means<T: Copy + Into<f64>>(
    x: &ArrayView2<'_, T>,
) -> Result<Array1<f64>, ProbeError> {
    let mut sum = Array1::<f64>::zeros(x.ncols());
    let mut bad = false;
    for row in x.outer_iter() {
        Zip::from(&mut sum).and(&row).for_each(|s, &v| {
            let v: f64 = v.into();
            bad |= !v.is_finite();
            *s += v;
        });
        if bad {
            break;
        }
    }
    if bad {
        if let Some((row, column, value)) = first_non_finite(x) {
            return Err(CheckError::NonFinite { row, column, value }.into());
        }
    }
    Ok(sum / x.nrows() as f64)
}

/// Distinct labels (increasing) and the index of each row's label among them.
fn dense_labels(labels: &[u32]) -> (Vec<u32>, Vec<usize>) {
    let mut classes = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let y = labels
        .iter()
        .map(|l| classes.binary_search(l).unwrap_or(0))
        .collect();
    (classes, y)
}

/// Whether a column with this mean and variance (over `n` rows) is constant up to rounding.
fn is_constant(mean: f64, var: f64, n: usize) -> bool {
    let bound = n as f64 * f64::EPSILON * mean.abs();
    var <= bound * bound
}

/// Mean, scale and constancy of the columns of `x` over `rows` (two passes, f64).
fn column_scaler<T: Copy + Into<f64>>(
    x: &ArrayView2<'_, T>,
    rows: &[usize],
    standardize: bool,
) -> (Array1<f64>, Array1<f64>, Vec<bool>) {
    let d = x.ncols();
    let n = rows.len();
    let mut mean = Array1::<f64>::zeros(d);
    for &i in rows {
        Zip::from(&mut mean)
            .and(x.row(i))
            .for_each(|m, &v| *m += v.into());
    }
    mean /= n as f64;
    let mut var = Array1::<f64>::zeros(d);
    for &i in rows {
        Zip::from(&mut var)
            .and(x.row(i))
            .and(&mean)
            .for_each(|s, &v, &m| {
                let u = v.into() - m;
                *s += u * u;
            });
    }
    var /= n as f64;
    let constant: Vec<bool> = mean
        .iter()
        .zip(&var)
        .map(|(&m, &v)| is_constant(m, v, n))
        .collect();
    let scale = Array1::from_iter(var.iter().zip(&constant).map(|(&v, &k)| {
        if standardize && !k {
            v.sqrt()
        } else {
            1.0
        }
    }));
    (mean, scale, constant)
}

/// Shifted sums of some rows: `u_i = x_i − r` with `r` a fixed shift (the training mean).
#[derive(Debug, Clone)]
struct Moments {
    n: usize,
    /// `Σ u_i` (`d`).
    sum: Array1<f64>,
    /// `Σ u_i u_iᵀ` (`d × d`; lower triangle until [`Moments::symmetrize`]).
    scatter: Array2<f64>,
    /// `Σ_i e_{y_i} u_iᵀ` (`C × d`): the sum of `u` over each class.
    class_sums: Array2<f64>,
    /// Rows of each class.
    counts: Vec<usize>,
}

impl Moments {
    fn zeros(d: usize, c: usize) -> Self {
        Moments {
            n: 0,
            sum: Array1::zeros(d),
            scatter: Array2::zeros((d, d)),
            class_sums: Array2::zeros((c, d)),
            counts: vec![0; c],
        }
    }

    fn add(&mut self, other: &Moments) {
        self.n += other.n;
        self.sum += &other.sum;
        self.scatter += &other.scatter;
        self.class_sums += &other.class_sums;
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Copies the lower triangle of the scatter onto the upper one.
    fn symmetrize(&mut self) {
        let d = self.scatter.nrows();
        for i in 0..d {
            for j in i + 1..d {
                self.scatter[[i, j]] = self.scatter[[j, i]];
            }
        }
    }
}

/// [`Moments`] of `rows`, on the calling thread: blocks of [`BLOCK_ROWS`] shifted rows `U`,
/// whose Gram matrix `UᵀU` ([`linalg::gram_lower_into`], lower triangle) is added to the
/// scatter's lower triangle.
fn moments_serial<T: Copy + Into<f64>>(
    x: &ArrayView2<'_, T>,
    y: &[usize],
    rows: &[usize],
    shift: ArrayView1<'_, f64>,
    c: usize,
) -> Result<Moments, ProbeError> {
    let d = x.ncols();
    let mut m = Moments::zeros(d, c);
    m.n = rows.len();
    let mut u = Array2::<f64>::zeros((BLOCK_ROWS.min(rows.len()).max(1), d));
    let mut block_gram = Array2::<f64>::zeros((d, d));
    for block in rows.chunks(BLOCK_ROWS) {
        for (k, &i) in block.iter().enumerate() {
            let cls = y[i];
            m.counts[cls] += 1;
            Zip::from(u.row_mut(k))
                .and(x.row(i))
                .and(&shift)
                .and(&mut m.sum)
                .and(m.class_sums.row_mut(cls))
                .for_each(|o, &v, &r, s, cs| {
                    let u = v.into() - r;
                    *o = u;
                    *s += u;
                    *cs += u;
                });
        }
        linalg::gram_lower_into(block_gram.view_mut(), u.slice(s![..block.len(), ..]).t())?;
        for i in 0..d {
            for j in 0..=i {
                m.scatter[[i, j]] += block_gram[[i, j]];
            }
        }
    }
    Ok(m)
}

/// [`Moments`] of `rows`, on several threads when there are many rows (each thread sums its
/// own share in f64; the shares are added).
fn moments<T: Copy + Into<f64> + Sync>(
    x: &ArrayView2<'_, T>,
    y: &[usize],
    rows: &[usize],
    shift: ArrayView1<'_, f64>,
    c: usize,
) -> Result<Moments, ProbeError> {
    let d = x.ncols();
    check_square_alloc(d)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Each thread holds two d × d matrices (its accumulator and a block's Gram matrix): stay
    // within ~1 GiB of them.
    let by_memory = ((1usize << 30) / (16 * d * d).max(1)).max(1);
    let threads = cores
        .min(rows.len() / ROWS_PER_THREAD)
        .min(by_memory)
        .max(1);
    let mut total = if threads == 1 {
        moments_serial(x, y, rows, shift, c)?
    } else {
        let chunk = rows.len().div_ceil(threads);
        let parts: Vec<Result<Moments>> = std::thread::scope(|scope| {
            let handles: Vec<_> = rows
                .chunks(chunk)
                .map(|part| scope.spawn(move || moments_serial(x, y, part, shift, c)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut it = parts.into_iter();
        let mut total = it.next().unwrap_or_else(|| Ok(Moments::zeros(d, c)))?;
        for p in it {
            total.add(&p?);
        }
        total
    };
    total.symmetrize();
    Ok(total)
}

/// Solves the least-squares probe from the moments of its training rows.
fn ls_solve(
    m: &Moments,
    shift: &Array1<f64>,
    lambda: f64,
    standardize: bool,
    tolerance: f64,
) -> Result<Model, ProbeError> {
    let d = m.sum.len();
    let c = m.counts.len();
    let n = m.n as f64;
    let mu = &m.sum / n; // mean of u = x − r
    let mean = shift + &mu;
    // Centred scatter Σ (x − m)(x − m)ᵀ = Σ u uᵀ − n μ μᵀ.
    let mut a = m.scatter.clone();
    for i in 0..d {
        for j in 0..d {
            a[[i, j]] -= n * mu[i] * mu[j];
        }
    }
    let mut scale = Array1::<f64>::ones(d);
    let mut constant = vec![false; d];
    for j in 0..d {
        let var = (a[[j, j]] / n).max(0.0);
        constant[j] = is_constant(mean[j], var, m.n);
        if standardize && !constant[j] {
            scale[j] = var.sqrt();
        }
    }
    // A = D⁻¹ (centred scatter) D⁻¹ + n λ I = ZᵀZ + n λ I. Constant columns are exactly zero
    // in Z (rounding would leave values of the order of ε · |m|).
    for i in 0..d {
        for j in 0..d {
            a[[i, j]] = if constant[i] || constant[j] {
                0.0
            } else {
                a[[i, j]] / (scale[i] * scale[j])
            };
        }
        a[[i, i]] += n * lambda;
    }
    // Right-hand side ZᵀY: (ZᵀY)_{jc} = (Σ_{y_i = c} u_ij − n_c μ_j) / s_j  (d × C).
    let mut rhs = Array2::<f64>::zeros((d, c));
    for k in 0..c {
        for j in 0..d {
            if !constant[j] {
                rhs[[j, k]] = (m.class_sums[[k, j]] - m.counts[k] as f64 * mu[j]) / scale[j];
            }
        }
    }
    let coef = spd_solve(a.view(), rhs.view(), tolerance, lambda)?;
    let intercept: Array1<f64> = m.counts.iter().map(|&k| k as f64 / n).collect();
    Ok(Model::new(mean, scale, coef, intercept))
}

/// The least-squares probe's data in dual (kernel) form, for `n < d`: the standardised rows
/// `Z` (`n × d`, constant columns exactly 0) and their Gram matrix `K = Z Zᵀ` (`n × n`).
struct DualData {
    mean: Array1<f64>,
    scale: Array1<f64>,
    z: Array2<f64>,
    gram: Array2<f64>,
    /// Class of each row, `0..C`.
    y: Vec<usize>,
    counts: Vec<usize>,
}

impl DualData {
    /// Standardises `rows` of `x` (mean and population standard deviation of those rows, two
    /// passes about `shift`; the constant-column rule of [`ls_solve`]) and forms `Z Zᵀ`.
    fn new<T: Copy + Into<f64>>(
        x: &ArrayView2<'_, T>,
        y: &[usize],
        rows: &[usize],
        shift: &Array1<f64>,
        c: usize,
        standardize: bool,
    ) -> Self {
        let (n, d) = (rows.len(), x.ncols());
        let mut z = Array2::<f64>::zeros((n, d));
        for (mut zr, &i) in z.outer_iter_mut().zip(rows) {
            Zip::from(&mut zr)
                .and(x.row(i))
                .and(shift)
                .for_each(|o, &v, &r| *o = v.into() - r);
        }
        let mu = z.sum_axis(Axis(0)) / n as f64;
        z -= &mu;
        let var = z.map_axis(Axis(0), |col| col.dot(&col) / n as f64);
        let mean = shift + &mu;
        let mut scale = Array1::<f64>::ones(d);
        let mut keep = Array1::<f64>::ones(d);
        for j in 0..d {
            if is_constant(mean[j], var[j], n) {
                keep[j] = 0.0;
            } else if standardize {
                scale[j] = var[j].sqrt();
            }
        }
        let factor = &keep / &scale;
        z *= &factor;
        let gram = linalg::gram(z.view());
        let y: Vec<usize> = rows.iter().map(|&i| y[i]).collect();
        let mut counts = vec![0; c];
        for &k in &y {
            counts[k] += 1;
        }
        DualData {
            mean,
            scale,
            z,
            gram,
            y,
            counts,
        }
    }

    /// `W = Zᵀ (Z Zᵀ + n λ I)⁻¹ Y`, `b` = class frequencies.
    fn solve(&self, lambda: f64, tolerance: f64) -> Result<Model, ProbeError> {
        let n = self.y.len();
        let c = self.counts.len();
        let mut a = self.gram.clone();
        for i in 0..n {
            a[[i, i]] += n as f64 * lambda;
        }
        let mut targets = Array2::<f64>::zeros((n, c));
        for (i, &k) in self.y.iter().enumerate() {
            targets[[i, k]] = 1.0;
        }
        let alpha = spd_solve(a.view(), targets.view(), tolerance, lambda)?;
        let coef = linalg::matmul(self.z.t(), alpha.view())?;
        let intercept: Array1<f64> = self.counts.iter().map(|&k| k as f64 / n as f64).collect();
        Ok(Model::new(
            self.mean.clone(),
            self.scale.clone(),
            coef,
            intercept,
        ))
    }
}

/// Solves `(ZᵀZ + nλI) X = B` (or the dual `(ZZᵀ + nλI) X = B`) by [`linalg::cholesky_solve`]
/// with the relative pivot tolerance `tolerance`; a pivot not above `tolerance · max_j A_jj` is
/// [`ProbeError::Singular`] with the pivot's index and its value relative to `max_j A_jj`.
fn spd_solve(
    a: ArrayView2<'_, f64>,
    b: ArrayView2<'_, f64>,
    tolerance: f64,
    penalty: f64,
) -> Result<Array2<f64>> {
    linalg::cholesky_solve(a, b, tolerance).map_err(|e| match e {
        LinalgError::NotPositiveDefinite { pivot, relative } => ProbeError::Singular {
            pivot,
            value: relative,
            tolerance,
            penalty,
        },
        e => ProbeError::Linalg(e),
    })
}

/// SplitMix64: a small, well-mixed seeded generator for the held-out split.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below `n / 2⁶⁴`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Class-stratified held-out mask: in each class (in label order), a seeded Fisher–Yates
/// shuffle, then the first `round(fraction · n_c)` rows (at most `n_c − 1`) are held out.
fn holdout_mask(y: &[usize], c: usize, fraction: f64, seed: u64) -> Vec<bool> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); c];
    for (i, &k) in y.iter().enumerate() {
        by_class[k].push(i);
    }
    let mut rng = SplitMix64(seed);
    let mut mask = vec![false; y.len()];
    for rows in &mut by_class {
        for i in (1..rows.len()).rev() {
            let j = rng.below(i + 1);
            rows.swap(i, j);
        }
        let k = ((fraction * rows.len() as f64).round() as usize).min(rows.len().saturating_sub(1));
        for &i in &rows[..k] {
            mask[i] = true;
        }
    }
    mask
}

#[cfg(test)]
mod dual_tests {
    use super::*;

    /// Features with a constant column and a column of large offset, `n × d`.
    fn data(n: usize, d: usize, c: usize, seed: u64) -> (Array2<f64>, Vec<usize>) {
        let mut rng = SplitMix64(seed);
        let y: Vec<usize> = (0..n).map(|i| i % c).collect();
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            let noise = rng.below(1_000_000) as f64 / 1e6 - 0.5;
            match j {
                0 => 3.0,
                1 => 1e3 + noise,
                _ => ((y[i] * 7 + j * 3) % 5) as f64 * 0.1 + noise,
            }
        });
        (x, y)
    }

    fn max_rel_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b)
            .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()))
            / scale
    }

    #[test]
    fn dual_and_primal_give_the_same_scores() {
        for &(n, d, c) in &[(30usize, 80usize, 3usize), (50, 51, 4), (12, 200, 2)] {
            let (x, y) = data(n, d, c, n as u64);
            let xv = x.view();
            let rows: Vec<usize> = (0..n).collect();
            let shift = x.row(0).to_owned();
            for standardize in [true, false] {
                for lambda in [1e-4, 1e-2, 1.0] {
                    let m = moments(&xv, &y, &rows, shift.view(), c).unwrap();
                    let primal = ls_solve(&m, &shift, lambda, standardize, 1e-12).unwrap();
                    let dual = DualData::new(&xv, &y, &rows, &shift, c, standardize)
                        .solve(lambda, 1e-12)
                        .unwrap();
                    assert_eq!(primal.scale.len(), dual.scale.len());
                    for (p, q) in primal.scale.iter().zip(&dual.scale) {
                        assert!((p - q).abs() <= 1e-9 * p.abs(), "scale {p} vs {q}");
                    }
                    let sp = primal.scores(&xv, None);
                    let sd = dual.scores(&xv, None);
                    let r = max_rel_diff(&sd, &sp);
                    assert!(r <= 1e-9, "n {n} d {d} λ {lambda} std {standardize}: {r:e}");
                    let r = max_rel_diff(&dual.coef, &primal.coef);
                    assert!(r <= 1e-8, "coefficients: {r:e}");
                    assert_eq!(primal.predict_rows(&xv, None), dual.predict_rows(&xv, None));
                }
            }
        }
    }

    #[test]
    fn dual_with_zero_penalty_is_singular_as_the_primal() {
        let (x, y) = data(10, 40, 2, 3);
        let rows: Vec<usize> = (0..10).collect();
        let shift = x.row(0).to_owned();
        let dual = DualData::new(&x.view(), &y, &rows, &shift, 2, true).solve(0.0, 1e-12);
        assert!(matches!(dual, Err(ProbeError::Singular { .. })));
        let m = moments(&x.view(), &y, &rows, shift.view(), 2).unwrap();
        assert!(matches!(
            ls_solve(&m, &shift, 0.0, true, 1e-12),
            Err(ProbeError::Singular { .. })
        ));
    }
}
