//! The unconstrained features model (UFM): why Neural Collapse happens, simulated and checked
//! against its closed form.
//!
//! In the UFM (Mixon et al. 2020; Fang et al. 2021; Zhu et al. 2021; Tirer & Bruna 2022; Zhou et
//! al. 2022) the last-layer features are free variables, trained together with the classifier
//! under weight decay. With `N = Σ_c n_c` samples, labels `y_i ∈ {0..C−1}`, features
//! `H ∈ R^{N×d}` (row `h_i`), classifier `W ∈ R^{C×d}` and bias `b ∈ R^C`, the objective is
//!
//! ```text
//! min_{H,W,b}  (1/N) Σ_i loss(W h_i + b, y_i) + λ_W/2 ‖W‖²_F + λ_H/2 ‖H‖²_F + λ_b/2 ‖b‖²
//!
//! MSE            loss(z, y) = ½ ‖z − e_y‖²                      (e_y the one-hot target)
//! cross-entropy  loss(z, y) = log Σ_k exp(z_k) − z_y
//! ```
//!
//! `λ_H` multiplies the *total* `‖H‖²_F` (a sum over all `N` samples), while the loss is a
//! mean: this is the normalisation of Zhu et al. 2021 and Zhou et al. 2022. Without a bias
//! ([`UfmParams::bias`]`(false)`) `b` stays 0 and `λ_b` plays no role.
//!
//! [`UfmParams`] (builder, linfa style) → [`UfmParams::check`] → [`UfmValidParams`] →
//! [`run`](UfmValidParams::run) does plain full-batch gradient descent in f64 from a seeded
//! Gaussian start (`H`, `W` entries `N(0, init_std²)`, `b = 0`; [`SplitMix64`] and Box–Muller,
//! so the same parameters give the same numbers on every platform), with step
//!
//! ```text
//! R = ∂loss/∂Z (N × C: Z − Y for MSE, softmax(Z) − Y for cross-entropy),  Z = H Wᵀ + 1 bᵀ
//! H ← H − η (R W / N + λ_H H)
//! W ← W − η (Rᵀ H / N + λ_W W)
//! b ← b − η (Rᵀ 1 / N + λ_b b)
//! ```
//!
//! and returns a [`UfmRun`]: an [`NcReport`] per recorded step, measured by
//! [`NcParams::measure`] with the current `(W, b)` as classifier (so NC1–NC4, NC2 of `W`, the
//! tables, tidy frames and every figure of [`crate::plot`] work on it; the step is the report's
//! `epoch`, the split is `train`, the layer `ufm`), the objective at those steps, and the final
//! `H`, `W`, `b`.
//!
//! # The closed form (MSE, balanced classes)
//!
//! With `n` samples in each of the `C` classes, `λ_W, λ_H > 0`, write
//!
//! ```text
//! γ = √(n λ_W λ_H),   c² = √(n λ_H / λ_W),   P = I − 11ᵀ/C,   J = 11ᵀ/C.
//! ```
//!
//! *Derivation.* For fixed `(W, b)` the objective is strictly convex in each `h_i` and depends
//! on `i` only through `y_i`, so at a minimiser every class collapses to its mean:
//! `h_i = μ_{y_i}` (NC1). With `M = [μ_0 … μ_{C−1}]` (d × C) the objective becomes
//! `(1/(2C)) ‖W M + b 1ᵀ − I‖²_F + λ_W/2 ‖W‖²_F + n λ_H/2 ‖M‖²_F + λ_b/2 ‖b‖²`. For a given
//! product `Z = W M` (any `C × C` matrix of rank ≤ d), `min λ_W/2 ‖W‖² + nλ_H/2 ‖M‖² = γ ‖Z‖_*`
//! (nuclear norm), reached by balanced factors `W Wᵀ = c² (ZᵀZ)^{½}`, `MᵀM = (ZᵀZ)^{½}/c²`.
//! Minimising over `b` gives `b = (1 − Z1)/(C(1 + λ_b))`, and the remaining problem in `Z` is
//! convex and invariant under relabelling the classes; its minimiser is unique, hence of the
//! form `Z = a P + β J`, and minimising the two scalars separately gives
//!
//! ```text
//! a = max(0, 1 − C γ)                                    (the C−1 "between-class" directions)
//! β = max(0, 1 − C γ (1 + λ_b)/λ_b)     with a bias       (β = 0 when λ_b = 0)
//! β = a                                  without a bias   (the limit λ_b → ∞)
//! b_k = (1 − β) / (C (1 + λ_b))          (every class; 0 without a bias)
//! ```
//!
//! so that, with `q = a (C−1)/C + β/C` (the diagonal of `Z`),
//!
//! ```text
//! ‖w_k‖²        = c² q    = √(n λ_H/λ_W) · q          row norm of W
//! ‖μ_k‖²        = q / c²  = √(λ_W/(n λ_H)) · q        class-mean norm (h_i = μ_{y_i})
//! ‖μ_k − μ_G‖²  = a (C−1)/C / c²                      centred class mean (μ_G = mean of means)
//! cos(w_k, w_l) = cos(μ_k, μ_l) = (β − a)/(a (C−1) + β)      for k ≠ l
//! ```
//!
//! With an unpenalised bias (`λ_b = 0`, the default) `β = 0`: the rows of `W` and the class
//! means form the same simplex ETF (cosines `−1/(C−1)`), so NC1, NC2 (means and `W`) and NC3
//! all vanish at the minimiser. Without a bias `β = a`: `W`'s rows and the means are orthogonal
//! (the centred means are still a simplex ETF, but NC3 compares them with the uncentred `W`).
//!
//! **Threshold.** The minimiser is collapsed and non-trivial only while
//! `√(λ_W λ_H) < 1/(C √n)`; at and beyond it `a = β = 0`: `H = 0`, `W = 0`, and the
//! model predicts the constant `b`. The constants depend on the normalisation above (loss a
//! mean over samples, `λ_H` on the total `‖H‖²`); papers that normalise differently state the
//! same result with `n` or `C` moved around. The formulas need `d ≥ rank Z`
//! (`C − 1` when `β = 0`, `C` when `β > 0`). Gradient descent reaches this minimiser from a
//! random start because the landscape has no spurious local minima (Zhou et al. 2022); the
//! tests check it numerically (`tests/ufm.rs`). [`UfmValidParams::closed_form`] returns these
//! numbers.
//!
//! # Minority collapse (measured)
//!
//! With imbalanced classes and cross-entropy the classifier rows of the minority classes are
//! pushed together (Fang et al. 2021). Measured with this module (C = 4: two majority classes of
//! `R` samples, two minority classes of 1; d = 8, `λ_H = λ_W = 2·10⁻²`, free bias, learning rate
//! 1, 5000 steps, seed 0), the cosine of the two minority rows is −1/3 at `R = 1`, 0.367 at
//! `R = 20`, 0.569 at 22, 0.989 at 24 and 1.000000 from 26 on; the crossing of 0.99 moves to
//! `R` between 48 and 50 at `λ = 10⁻²` and between 90 and 100 at `λ = 5·10⁻³`
//! (`tests/ufm.rs`, `minority_collapse_beyond_a_measured_ratio`).
//!
//! # Example
//!
//! ```
//! use neural_collapse::ufm::{UfmParams, UfmLoss};
//!
//! let run = UfmParams::new(4, 6).per_class(5).loss(UfmLoss::Mse)
//!     .lambda_h(5e-3).lambda_w(5e-3).learning_rate(1.0).steps(400).record_every(100)
//!     .seed(7).run()?;
//! assert_eq!(run.reports.len(), 5);                 // steps 0, 100, 200, 300, 400
//! let (first, last) = (&run.reports[0], run.reports.last().unwrap());
//! assert!(last.nc1 < first.nc1);
//! let cf = UfmParams::new(4, 6).per_class(5).lambda_h(5e-3).lambda_w(5e-3).check()?.closed_form()?;
//! assert!(cf.a > 0.0 && cf.beta == 0.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use ndarray::{Array1, Array2, Axis};
use polars::prelude::{Column, DataFrame};
use serde::Serialize;
use thiserror::Error;

use crate::datasets::SplitMix64;
use crate::features::{Classifier, FeatureError, Features};
use crate::metrics::{NcParams, NcReport};
use crate::stats::{ClassStats, MetricError};

/// Largest `N · (d + C)` a run allocates (each of `H`, the logits and the gradients is at most
/// this many f64): 2^27 values, 1 GiB.
const MAX_VALUES: usize = 1 << 27;

/// Default samples per class.
pub const DEFAULT_PER_CLASS: usize = 10;
/// Default `λ_H` and `λ_W`.
pub const DEFAULT_LAMBDA: f64 = 5e-3;
/// Default learning rate.
pub const DEFAULT_LEARNING_RATE: f64 = 0.5;
/// Default number of gradient steps.
pub const DEFAULT_STEPS: u32 = 2000;
/// Default standard deviation of the initial entries of `H` and `W`.
pub const DEFAULT_INIT_STD: f64 = 0.1;

/// The loss of the UFM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UfmLoss {
    /// `½ ‖W h + b − e_y‖²` (default; has the closed form of the module docs).
    #[default]
    Mse,
    /// `log Σ_k exp((W h + b)_k) − (W h + b)_y`.
    CrossEntropy,
}

impl std::fmt::Display for UfmLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UfmLoss::Mse => "MSE",
            UfmLoss::CrossEntropy => "cross-entropy",
        })
    }
}

/// Bad UFM parameters, a diverging run, or a closed form asked where none exists. One line each.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum UfmError {
    /// Fewer than two classes.
    #[error("the UFM needs at least 2 classes, got {0}")]
    TooFewClasses(usize),
    /// Feature dimension 0.
    #[error("the UFM needs a feature dimension d ≥ 1, got 0")]
    ZeroDim,
    /// A per-class size vector whose length is not the number of classes.
    #[error("{sizes} class sizes given for {classes} classes")]
    SizesLength {
        /// Length of the vector given.
        sizes: usize,
        /// Number of classes.
        classes: usize,
    },
    /// A class with no samples.
    #[error("class {0} has no samples: every class needs at least 1")]
    EmptyClass(usize),
    /// A penalty that is negative, NaN or infinite.
    #[error("{name} = {value} must be finite and ≥ 0")]
    BadPenalty {
        /// `lambda_h`, `lambda_w` or `lambda_b`.
        name: &'static str,
        /// The value.
        value: f64,
    },
    /// A learning rate that is not finite and positive.
    #[error("learning rate {0} must be finite and > 0")]
    BadLearningRate(f64),
    /// An initial standard deviation that is not finite and positive.
    #[error("init_std {0} must be finite and > 0")]
    BadInitStd(f64),
    /// Zero gradient steps.
    #[error("steps must be at least 1, got 0")]
    ZeroSteps,
    /// `record_every(0)` or `record_log(0)`.
    #[error("the recording schedule must record at least every step count ≥ 1, got 0")]
    ZeroRecord,
    /// `N · (d + C)` beyond [`MAX_VALUES`].
    #[error("{samples} samples × (d = {dim} + C = {classes}) values are too large (limit 2^27)")]
    TooLarge {
        /// Samples `N`.
        samples: usize,
        /// Dimension `d`.
        dim: usize,
        /// Classes `C`.
        classes: usize,
    },
    /// The objective became NaN or infinite.
    #[error("gradient descent diverged at step {step} (objective {value}): lower the learning rate (now {lr})")]
    Diverged {
        /// The step.
        step: u32,
        /// The objective there.
        value: f64,
        /// The learning rate.
        lr: f64,
    },
    /// No closed form for these parameters.
    #[error("no closed form: {0}")]
    NoClosedForm(String),
}

/// How the recorded steps are chosen.
#[derive(Debug, Clone, PartialEq)]
enum Record {
    /// 0, k, 2k, … and the last step.
    Every(u32),
    /// 0 and `points` steps spaced geometrically from 1 to the last step.
    Log(usize),
}

/// Checked UFM parameters (from [`UfmParams::check`]); [`run`](Self::run) simulates,
/// [`closed_form`](Self::closed_form) gives the MSE minimiser.
#[derive(Debug, Clone, PartialEq)]
pub struct UfmValidParams {
    classes: usize,
    dim: usize,
    sizes: Option<Vec<usize>>, // None: `per_class` in every class
    per_class: usize,
    loss: UfmLoss,
    lambda_h: f64,
    lambda_w: f64,
    lambda_b: f64,
    bias: bool,
    lr: f64,
    steps: u32,
    record: Record,
    seed: u64,
    init_std: f64,
}

/// UFM parameters, linfa style: [`UfmParams::new`]`(C, d)`, builder setters, then
/// [`check`](Self::check) (or [`run`](Self::run), which checks first).
///
/// Defaults: [`DEFAULT_PER_CLASS`] samples per class, MSE, `λ_H = λ_W =`
/// [`DEFAULT_LAMBDA`], `λ_b = 0` with a bias, learning rate [`DEFAULT_LEARNING_RATE`],
/// [`DEFAULT_STEPS`] steps recorded every 100, seed 0, `init_std =` [`DEFAULT_INIT_STD`].
#[derive(Debug, Clone, PartialEq)]
pub struct UfmParams(UfmValidParams);

impl UfmParams {
    /// `classes` classes in dimension `dim`, other parameters at their defaults.
    pub fn new(classes: usize, dim: usize) -> Self {
        UfmParams(UfmValidParams {
            classes,
            dim,
            sizes: None,
            per_class: DEFAULT_PER_CLASS,
            loss: UfmLoss::Mse,
            lambda_h: DEFAULT_LAMBDA,
            lambda_w: DEFAULT_LAMBDA,
            lambda_b: 0.0,
            bias: true,
            lr: DEFAULT_LEARNING_RATE,
            steps: DEFAULT_STEPS,
            record: Record::Every(100),
            seed: 0,
            init_std: DEFAULT_INIT_STD,
        })
    }

    /// `n` samples in every class (balanced; replaces [`class_sizes`](Self::class_sizes)).
    pub fn per_class(mut self, n: usize) -> Self {
        self.0.per_class = n;
        self.0.sizes = None;
        self
    }

    /// One size per class (imbalanced classes; its length must be the number of classes).
    pub fn class_sizes(mut self, sizes: &[usize]) -> Self {
        self.0.sizes = Some(sizes.to_vec());
        self
    }

    /// The loss.
    pub fn loss(mut self, loss: UfmLoss) -> Self {
        self.0.loss = loss;
        self
    }

    /// `λ_H`, the penalty on `‖H‖²_F`.
    pub fn lambda_h(mut self, v: f64) -> Self {
        self.0.lambda_h = v;
        self
    }

    /// `λ_W`, the penalty on `‖W‖²_F`.
    pub fn lambda_w(mut self, v: f64) -> Self {
        self.0.lambda_w = v;
        self
    }

    /// `λ_b`, the penalty on `‖b‖²` (default 0: an unpenalised bias).
    pub fn lambda_b(mut self, v: f64) -> Self {
        self.0.lambda_b = v;
        self
    }

    /// Whether the classifier has a bias (default `true`); without one `b` stays 0.
    pub fn bias(mut self, yes: bool) -> Self {
        self.0.bias = yes;
        self
    }

    /// The learning rate `η` of gradient descent.
    pub fn learning_rate(mut self, lr: f64) -> Self {
        self.0.lr = lr;
        self
    }

    /// The number of gradient steps.
    pub fn steps(mut self, steps: u32) -> Self {
        self.0.steps = steps;
        self
    }

    /// Record a report at steps 0, k, 2k, … and at the last step.
    pub fn record_every(mut self, k: u32) -> Self {
        self.0.record = Record::Every(k);
        self
    }

    /// Record a report at step 0 and at about `points` steps spaced geometrically from 1 to
    /// the last step (always included): the right schedule for a log time axis.
    pub fn record_log(mut self, points: usize) -> Self {
        self.0.record = Record::Log(points);
        self
    }

    /// The seed of the initial `H` and `W`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.0.seed = seed;
        self
    }

    /// The standard deviation of the initial entries of `H` and `W` (default 0.1).
    pub fn init_std(mut self, s: f64) -> Self {
        self.0.init_std = s;
        self
    }

    /// The checked parameters.
    ///
    /// # Errors
    /// [`UfmError`]: fewer than 2 classes, `d = 0`, a size vector of the wrong length, an
    /// empty class, a negative/NaN/infinite penalty, a learning rate or `init_std` that is
    /// not finite and positive, zero steps, a recording interval of 0, or a problem too large.
    pub fn check(&self) -> Result<UfmValidParams, UfmError> {
        self.check_ref().cloned()
    }

    fn check_ref(&self) -> Result<&UfmValidParams, UfmError> {
        let p = &self.0;
        if p.classes < 2 {
            return Err(UfmError::TooFewClasses(p.classes));
        }
        if p.dim == 0 {
            return Err(UfmError::ZeroDim);
        }
        if let Some(s) = &p.sizes {
            if s.len() != p.classes {
                return Err(UfmError::SizesLength {
                    sizes: s.len(),
                    classes: p.classes,
                });
            }
            if let Some(c) = s.iter().position(|&n| n == 0) {
                return Err(UfmError::EmptyClass(c));
            }
        } else if p.per_class == 0 {
            return Err(UfmError::EmptyClass(0));
        }
        for (name, value) in [
            ("lambda_h", p.lambda_h),
            ("lambda_w", p.lambda_w),
            ("lambda_b", p.lambda_b),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(UfmError::BadPenalty { name, value });
            }
        }
        if !(p.lr.is_finite() && p.lr > 0.0) {
            return Err(UfmError::BadLearningRate(p.lr));
        }
        if !(p.init_std.is_finite() && p.init_std > 0.0) {
            return Err(UfmError::BadInitStd(p.init_std));
        }
        if p.steps == 0 {
            return Err(UfmError::ZeroSteps);
        }
        if matches!(p.record, Record::Every(0) | Record::Log(0)) {
            return Err(UfmError::ZeroRecord);
        }
        let too_large = || UfmError::TooLarge {
            samples: p.samples_saturating(),
            dim: p.dim,
            classes: p.classes,
        };
        let samples = match &p.sizes {
            Some(s) => s
                .iter()
                .try_fold(0usize, |a, &n| a.checked_add(n))
                .ok_or_else(too_large)?,
            None => p.classes.checked_mul(p.per_class).ok_or_else(too_large)?,
        };
        let width = p.dim.checked_add(p.classes).ok_or_else(too_large)?;
        match samples.checked_mul(width) {
            Some(v) if v <= MAX_VALUES && p.classes * p.dim <= MAX_VALUES => Ok(p),
            _ => Err(too_large()),
        }
    }

    /// Checks, then runs gradient descent ([`UfmValidParams::run`]).
    ///
    /// # Errors
    /// As [`check`](Self::check) and [`UfmValidParams::run`].
    pub fn run(&self) -> Result<UfmRun, UfmError> {
        self.check_ref()?.run()
    }
}

impl linfa::ParamGuard for UfmParams {
    type Checked = UfmValidParams;
    type Error = UfmError;

    fn check_ref(&self) -> Result<&UfmValidParams, UfmError> {
        UfmParams::check_ref(self)
    }

    fn check(self) -> Result<UfmValidParams, UfmError> {
        UfmParams::check_ref(&self)?;
        Ok(self.0)
    }
}

/// The MSE minimiser of a balanced UFM (see the module docs for the derivation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UfmClosedForm {
    /// `γ = √(n λ_W λ_H)`.
    pub gamma: f64,
    /// The value of `√(λ_W λ_H)` at and beyond which the minimiser is 0: `1/(C √n)`.
    pub threshold: f64,
    /// Singular value of `Z = W M` on the `C − 1` centred directions: `max(0, 1 − Cγ)`.
    pub a: f64,
    /// Singular value of `Z` on the direction `1/√C` (0 with an unpenalised bias).
    pub beta: f64,
    /// `‖w_k‖`, every row of `W`.
    pub w_row_norm: f64,
    /// `‖μ_k‖`, every class mean (= every feature of the class).
    pub mean_norm: f64,
    /// `‖μ_k − μ_G‖`, every centred class mean.
    pub centred_mean_norm: f64,
    /// `cos(w_k, w_l)` for `k ≠ l` (also the cosine of two class means); `NaN` when `W = 0`.
    pub cosine: f64,
    /// `b_k`, every class (0 without a bias).
    pub bias: f64,
    /// The minimum of the objective.
    pub objective: f64,
}

impl UfmValidParams {
    /// Number of classes `C`.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Feature dimension `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Samples in each class.
    pub fn class_sizes(&self) -> Vec<usize> {
        match &self.sizes {
            Some(s) => s.clone(),
            None => vec![self.per_class; self.classes],
        }
    }

    /// Total samples `N`.
    pub fn samples(&self) -> usize {
        self.class_sizes().iter().sum()
    }

    fn samples_saturating(&self) -> usize {
        match &self.sizes {
            Some(s) => s.iter().fold(0usize, |a, &n| a.saturating_add(n)),
            None => self.classes.saturating_mul(self.per_class),
        }
    }

    /// Whether every class has the same size.
    pub fn balanced(&self) -> bool {
        let s = self.class_sizes();
        s.iter().all(|&n| n == s[0])
    }

    /// The labels: class 0 for the first `n_0` rows, then class 1, …
    pub fn labels(&self) -> Vec<u32> {
        self.class_sizes()
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c as u32, n))
            .collect()
    }

    /// The loss.
    pub fn loss(&self) -> UfmLoss {
        self.loss
    }

    /// `(λ_H, λ_W, λ_b)`.
    pub fn lambdas(&self) -> (f64, f64, f64) {
        (self.lambda_h, self.lambda_w, self.lambda_b)
    }

    /// Whether the classifier has a bias.
    pub fn has_bias(&self) -> bool {
        self.bias
    }

    /// The learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// The number of gradient steps.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The steps at which reports are recorded (ascending, from 0, ending at the last step).
    pub fn record_steps(&self) -> Vec<u32> {
        let mut s = match self.record {
            Record::Every(k) => (0..=self.steps / k).map(|i| i * k).collect::<Vec<_>>(),
            Record::Log(points) => {
                let mut v = vec![0];
                let top = f64::from(self.steps).ln();
                for i in 0..points {
                    let f = if points == 1 {
                        1.0
                    } else {
                        i as f64 / (points - 1) as f64
                    };
                    v.push((f * top).exp().round() as u32);
                }
                v
            }
        };
        s.push(self.steps);
        s.sort_unstable();
        s.dedup();
        s.retain(|&t| t <= self.steps);
        s
    }

    /// The closed-form minimiser of the MSE UFM with balanced classes (module docs).
    ///
    /// # Errors
    /// [`UfmError::NoClosedForm`] for cross-entropy, imbalanced classes, `λ_W = 0` or
    /// `λ_H = 0` (the infimum is then not attained or not unique), or `d` below the rank of
    /// the minimiser (`C − 1` with an unpenalised bias, else `C`, when it is not 0).
    pub fn closed_form(&self) -> Result<UfmClosedForm, UfmError> {
        if self.loss != UfmLoss::Mse {
            return Err(UfmError::NoClosedForm(
                "the closed form is for the MSE loss (cross-entropy: run gradient descent)".into(),
            ));
        }
        if !self.balanced() {
            return Err(UfmError::NoClosedForm(
                "the closed form is for balanced classes".into(),
            ));
        }
        if self.lambda_w == 0.0 || self.lambda_h == 0.0 {
            return Err(UfmError::NoClosedForm(
                "λ_W and λ_H must be > 0 (without them the minimum is not attained or not unique)"
                    .into(),
            ));
        }
        let c = self.classes as f64;
        let n = self.per_class as f64;
        let (lh, lw, lb) = (self.lambda_h, self.lambda_w, self.lambda_b);
        let gamma = (n * lw * lh).sqrt();
        let a = (1.0 - c * gamma).max(0.0);
        // Weight of the J direction in the quadratic part after b is minimised out: μ = λ_b/(1+λ_b)
        // with a bias, 1 without.
        let (beta, bias, mu) = if self.bias {
            let mu = lb / (1.0 + lb);
            let beta = if mu > 0.0 {
                (1.0 - c * gamma / mu).max(0.0)
            } else {
                0.0
            };
            (beta, (1.0 - beta) / (c * (1.0 + lb)), mu)
        } else {
            (a, 0.0, 1.0)
        };
        let rank = usize::from(a > 0.0) * (self.classes - 1) + usize::from(beta > 0.0);
        if self.dim < rank {
            return Err(UfmError::NoClosedForm(format!(
                "d = {} is below the rank {rank} of the minimiser W M",
                self.dim
            )));
        }
        let c2 = (n * lh / lw).sqrt();
        let q = a * (c - 1.0) / c + beta / c;
        let objective = (a - 1.0).powi(2) * (c - 1.0) / (2.0 * c)
            + (1.0 - beta).powi(2) * mu / (2.0 * c)
            + gamma * (a * (c - 1.0) + beta);
        Ok(UfmClosedForm {
            gamma,
            threshold: 1.0 / (c * n.sqrt()),
            a,
            beta,
            w_row_norm: (c2 * q).sqrt(),
            mean_norm: (q / c2).sqrt(),
            centred_mean_norm: (a * (c - 1.0) / c / c2).sqrt(),
            cosine: (beta - a) / (a * (c - 1.0) + beta),
            bias,
            objective,
        })
    }

    /// Runs gradient descent (module docs) and measures the recorded steps.
    ///
    /// A step whose metrics are undefined (e.g. coinciding class means) is listed in
    /// [`UfmRun::skipped`] with the reason instead of a report.
    ///
    /// # Errors
    /// [`UfmError::Diverged`] when the objective becomes NaN or infinite.
    pub fn run(&self) -> Result<UfmRun, UfmError> {
        let labels = self.labels();
        let (n, d, c) = (labels.len(), self.dim, self.classes);
        let mut rng = SplitMix64::new(self.seed);
        let std = self.init_std;
        let mut h = Array2::from_shape_simple_fn((n, d), || std * normal(&mut rng));
        let mut w = Array2::from_shape_simple_fn((c, d), || std * normal(&mut rng));
        let mut b = Array1::<f64>::zeros(c);
        let record = self.record_steps();
        let mut next = 0;
        let mut reports = Vec::with_capacity(record.len());
        let mut objective = Vec::with_capacity(record.len());
        let mut skipped = Vec::new();
        let inv_n = 1.0 / n as f64;
        for t in 0..=self.steps {
            // Logits, then the residual R = ∂loss/∂Z in place, and the loss.
            let mut r = h.dot(&w.t());
            if self.bias {
                r += &b;
            }
            let mut loss = 0.0;
            for (mut row, &y) in r.axis_iter_mut(Axis(0)).zip(&labels) {
                let y = y as usize;
                match self.loss {
                    UfmLoss::Mse => {
                        row[y] -= 1.0;
                        loss += 0.5 * row.iter().map(|v| v * v).sum::<f64>();
                    }
                    UfmLoss::CrossEntropy => {
                        let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v));
                        let mut s = 0.0;
                        for v in row.iter_mut() {
                            *v = (*v - m).exp();
                            s += *v;
                        }
                        // loss = log Σ exp(z) − z_y = log s + m − z_y = log s − log(p_y·s)
                        loss += -(row[y] / s).ln();
                        row.mapv_inplace(|v| v / s);
                        row[y] -= 1.0;
                    }
                }
            }
            let obj = loss * inv_n
                + 0.5 * self.lambda_w * sq(&w)
                + 0.5 * self.lambda_h * sq(&h)
                + if self.bias {
                    0.5 * self.lambda_b * b.dot(&b)
                } else {
                    0.0
                };
            if !obj.is_finite() {
                return Err(UfmError::Diverged {
                    step: t,
                    value: obj,
                    lr: self.lr,
                });
            }
            if record.get(next) == Some(&t) {
                next += 1;
                objective.push((t, obj));
                match measure(&h, &w, &b, &labels, t) {
                    Ok(rep) => reports.push(rep),
                    Err(e) => skipped.push((t, e.to_string())),
                }
            }
            if t == self.steps {
                break;
            }
            r *= inv_n;
            let gh = r.dot(&w);
            let gw = r.t().dot(&h);
            let gb = r.sum_axis(Axis(0));
            // x ← x − η (g + λ x), written (1 − ηλ) x − η g: the gradients were taken at the
            // old x, so this is exactly one gradient step on the objective.
            h *= 1.0 - self.lr * self.lambda_h;
            h.scaled_add(-self.lr, &gh);
            w *= 1.0 - self.lr * self.lambda_w;
            w.scaled_add(-self.lr, &gw);
            if self.bias {
                b *= 1.0 - self.lr * self.lambda_b;
                b.scaled_add(-self.lr, &gb);
            }
        }
        Ok(UfmRun {
            params: self.clone(),
            labels,
            reports,
            objective,
            skipped,
            h,
            w,
            b,
        })
    }
}

/// `‖a‖²_F`.
fn sq(a: &Array2<f64>) -> f64 {
    a.iter().map(|v| v * v).sum()
}

/// A standard normal deviate (Box–Muller) from two 53-bit uniforms.
fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn measure(
    h: &Array2<f64>,
    w: &Array2<f64>,
    b: &Array1<f64>,
    labels: &[u32],
    step: u32,
) -> Result<NcReport, MetricError> {
    let clf = Classifier {
        w: w.clone(),
        b: b.clone(),
    };
    let mut r = NcParams::new().classifier(&clf).measure(h.view(), labels)?;
    r.epoch = Some(step);
    r.split = Some("train".into());
    r.layer = Some("ufm".into());
    Ok(r)
}

/// The result of [`UfmValidParams::run`].
#[derive(Debug, Clone)]
pub struct UfmRun {
    /// The parameters that produced it.
    pub params: UfmValidParams,
    /// The label of each row of `h`.
    pub labels: Vec<u32>,
    /// One report per recorded step (`epoch` = step, split `train`, layer `ufm`).
    pub reports: Vec<NcReport>,
    /// `(step, objective)` at every recorded step.
    pub objective: Vec<(u32, f64)>,
    /// Recorded steps whose metrics are undefined, with the reason.
    pub skipped: Vec<(u32, String)>,
    /// Final features, `N × d`.
    pub h: Array2<f64>,
    /// Final classifier weights, `C × d`.
    pub w: Array2<f64>,
    /// Final biases, `C` (zeros without a bias).
    pub b: Array1<f64>,
}

impl UfmRun {
    /// The last report (`None` only if every recorded step was skipped).
    pub fn last(&self) -> Option<&NcReport> {
        self.reports.last()
    }

    /// The final objective.
    pub fn final_objective(&self) -> f64 {
        self.objective.last().map_or(f64::NAN, |o| o.1)
    }

    /// The final `(W, b)` as a [`Classifier`] (for [`crate::plot::MeanGeometryPlot`]).
    pub fn classifier(&self) -> Classifier {
        Classifier {
            w: self.w.clone(),
            b: self.b.clone(),
        }
    }

    /// The final class statistics of `H`.
    ///
    /// # Errors
    /// Only for non-finite features (a run that diverged returns an error instead).
    pub fn class_stats(&self) -> Result<ClassStats, MetricError> {
        ClassStats::from_data(self.h.view(), &self.labels)
    }

    /// The final `H` as [`Features`] (f32, split `train`, layer `ufm`, epoch = last step).
    pub fn features(&self) -> Features {
        let mut f = Features::new(self.h.mapv(|v| v as f32), self.labels.clone());
        f.epoch = Some(self.params.steps);
        f.split = Some("train".into());
        f.layer = Some("ufm".into());
        f
    }

    /// The final logits `W h_i + b`, `N × C`.
    pub fn logits(&self) -> Array2<f64> {
        self.h.dot(&self.w.t()) + &self.b
    }

    /// Fraction of samples whose largest final logit is not their label (ties go to the
    /// lowest class index).
    pub fn train_error(&self) -> f64 {
        let logits = self.logits();
        let wrong = logits
            .rows()
            .into_iter()
            .zip(&self.labels)
            .filter(|(z, &y)| {
                let best = (0..z.len()).fold(0, |b, k| if z[k] > z[b] { k } else { b });
                best != y as usize
            })
            .count();
        wrong as f64 / self.labels.len() as f64
    }

    /// `‖w_k‖` for every class.
    pub fn w_row_norms(&self) -> Vec<f64> {
        self.w
            .rows()
            .into_iter()
            .map(|r| r.dot(&r).sqrt())
            .collect()
    }

    /// `‖μ_k‖` (uncentred) for every class.
    pub fn class_mean_norms(&self) -> Vec<f64> {
        let mut sums = Array2::<f64>::zeros((self.params.classes, self.params.dim));
        let mut counts = vec![0usize; self.params.classes];
        for (row, &y) in self.h.rows().into_iter().zip(&self.labels) {
            let mut s = sums.row_mut(y as usize);
            s += &row;
            counts[y as usize] += 1;
        }
        sums.rows()
            .into_iter()
            .zip(&counts)
            .map(|(s, &k)| s.dot(&s).sqrt() / k as f64)
            .collect()
    }

    /// `cos(w_k, w_l)` for every pair (a `C × C` matrix; `NaN` for a zero row).
    pub fn w_cosines(&self) -> Array2<f64> {
        let norms = self.w_row_norms();
        let g = self.w.dot(&self.w.t());
        Array2::from_shape_fn(g.dim(), |(k, l)| g[[k, l]] / (norms[k] * norms[l]))
    }

    /// The mean of `cos(w_k, w_l)` over the pairs `k < l` of `classes` (e.g. the minority
    /// classes: minority collapse drives it to 1). `NaN` for fewer than two classes.
    pub fn mean_cosine(&self, classes: &[usize]) -> f64 {
        let cos = self.w_cosines();
        let (mut s, mut k) = (0.0, 0usize);
        for (i, &a) in classes.iter().enumerate() {
            for &b2 in &classes[i + 1..] {
                s += cos[[a, b2]];
                k += 1;
            }
        }
        if k == 0 {
            f64::NAN
        } else {
            s / k as f64
        }
    }

    /// The trajectory as a tidy frame ([`NcReport::to_tidy_many`]; `epoch` is the step).
    ///
    /// # Errors
    /// Only if polars fails to build the frame.
    pub fn tidy(&self) -> Result<DataFrame, FeatureError> {
        NcReport::to_tidy_many(&self.reports)
    }

    /// The trajectory as a tidy frame with a constant `run` column `name` (several runs
    /// stacked with [`tidy_runs`] draw one line each in [`crate::plot::EpochPlot`]).
    ///
    /// # Errors
    /// Only if polars fails to build the frame.
    pub fn tidy_named(&self, name: &str) -> Result<DataFrame, FeatureError> {
        let mut f = self.tidy()?;
        let n = f.height();
        f.with_column(Column::new("run".into(), vec![name; n]))
            .map_err(|e| polars_err(e, "UFM tidy frame"))?;
        Ok(f)
    }
}

/// Several runs' tidy frames stacked, each with its `run` name (see [`UfmRun::tidy_named`]).
///
/// # Errors
/// Only if polars fails to build the frame.
pub fn tidy_runs(runs: &[(&str, &UfmRun)]) -> Result<DataFrame, FeatureError> {
    let mut out: Option<DataFrame> = None;
    for (name, run) in runs {
        let f = run.tidy_named(name)?;
        out = Some(match out {
            None => f,
            Some(mut acc) => {
                acc.vstack_mut(&f)
                    .map_err(|e| polars_err(e, "UFM tidy frames"))?;
                acc
            }
        });
    }
    match out {
        Some(f) => Ok(f),
        None => NcReport::to_tidy_many(&[]).and_then(|f| {
            let mut f = f;
            f.with_column(Column::new("run".into(), Vec::<&str>::new()))
                .map_err(|e| polars_err(e, "UFM tidy frame"))?;
            Ok(f)
        }),
    }
}

fn polars_err(e: polars::prelude::PolarsError, what: &str) -> FeatureError {
    FeatureError::Polars {
        path: format!("<{what}>"),
        message: e.to_string(),
    }
}
