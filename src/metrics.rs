//! Neural Collapse metrics: NC1 (three forms), CDNV, NC2, NC3, NC4 and the [`NcReport`].
//!
//! **Why one file (about 1,900 lines, a fifth of them docs).** The NC1 routes, NC2–NC4 and the
//! report share the reference geometry (`Σ_B†` at an explicit rank) and the blocked pass, and
//! must agree with each other to rounding; the larger pieces already live below it
//! ([`crate::stats`], [`crate::generalized`], `tiles`, [`crate::linalg`]).
//!
//! Notation (defaults follow Papyan, Han & Donoho 2020, PNAS). Features `h_i ∈ R^d` with labels
//! `y_i ∈ {0..C−1}`; `N` samples, `n_c` in class `c`; `μ_c` the class means and `μ_G` the global
//! mean (see [`GlobalMean`]); `W` the `C × d` classifier and `b` its bias.
//!
//! ```text
//! Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ          within-class covariance (pooled)
//! Σ_B = (1/C) Σ_c (μ_c − μ_G)(μ_c − μ_G)ᵀ                 between-class covariance, rank ≤ C−1
//! Ṁ   = [μ_c − μ_G]_c                                     d × C centred class means
//!
//! NC1             = Tr(Σ_W Σ_B†) / C                      Σ_B† of rank ≤ C−1, explicit tolerance
//!                 = (1/N) Σ_i ‖Ṁ† (h_i − μ_{y_i})‖²        (projected form, O(N·d·C), no d × d)
//! NC1 trace ratio = Tr Σ_W / Tr Σ_B
//! CDNV            = mean_{c<c'} (σ²_c + σ²_c') / (2 ‖μ_c − μ_c'‖²),   σ²_c = mean_{y_i=c} ‖h_i − μ_c‖²
//! NC2 equinorm    = std_c ‖μ_c − μ_G‖ / mean_c ‖μ_c − μ_G‖
//! NC2 equiangular = std_{c<c'} cos(μ_c − μ_G, μ_c' − μ_G)
//! NC2 max-angle   = mean_{c<c'} |cos(μ_c − μ_G, μ_c' − μ_G) + 1/(C−1)|
//! NC2 ETF dist.   = ‖ṀᵀṀ/‖ṀᵀṀ‖_F − (I − 11ᵀ/C)/√(C−1)‖_F
//! NC3             = ‖Wᵀ/‖W‖_F − Ṁ/‖Ṁ‖_F‖²_F
//! NC4             = (1/N) #{i : argmax_c (W h_i + b)_c ≠ argmin_c ‖h_i − μ_c‖}
//! ```
//!
//! Many classes: NC1's pseudo-inverse is decomposed from the smaller side of `Ṁ` ([`Nc1Route`]:
//! `d × d` when `C > d` and `C > 256`), NC4's classifier side runs in column tiles from 256
//! classes on (its own pass over the rows, run beside the decomposition and the NC1 pass), its
//! nearest-class-mean side too on the features route, while on the classes route it comes from
//! the NC1 pass's own product (`tiles::NccFromProjection`: `N·K·C` instead of `N·d·C`), and
//! NC2/CDNV run in tiles of a Gram product beyond 256 classes. The generalized metrics for
//! `C > d + 1` (GNC2 log/Riesz-s energies, `CDNV_p`, NC3 per class and the ETF error of `WṀᵀ`)
//! are defined in [`crate::generalized`] and reported in [`NcReport::generalized`].
//!
//! Conventions, stated once here:
//! * Papyan's notebook reports `Tr(Σ_W Σ_B†)` **without** the `/C`; multiply by `C` to compare.
//! * Standard deviations (equinorm, equiangularity) use the unbiased `n−1` estimator, as
//!   `torch.std` in Papyan's code; equiangularity and max-angle run over the `C(C−1)/2` unordered
//!   pairs `c < c'` (with `C = 2` there is one pair and equiangularity is `NaN`, as `torch.std`
//!   of one value). The same NC2 quantities are reported for the classifier rows `w_c`
//!   (uncentred, as in Papyan's code).
//! * The pseudo-inverse keeps the eigen-directions of `Σ_B` whose eigenvalue exceeds
//!   `tolerance · λ_max`, at most `C − 1` of them; the rank used is reported. It is computed in
//!   f64 from a one-sided Jacobi SVD of `Ṁ`, so f32 noise in `Σ_B` cannot blow NC1 up (numpy's
//!   `pinv` with its `1e-15` cut-off keeps all `d` noise directions of an f32 `Σ_B`).
//! * Every sum is accumulated in f64 whatever the input type.
//! * **Test collapse.** With [`Reference::Own`] every quantity uses the measured split's own class
//!   means. With [`Reference::Train`] the class means (and `μ_G`, `Ṁ`) are the train split's:
//!   `Σ_W`, `σ²_c` and NC1 residuals are then taken about the train means, NC2/NC3 describe the
//!   train means, and NC4 is the nearest-train-mean classifier (Papyan's NC4 on a test split).
//!   With `Reference::Own` NC4 on a test split uses the test split's own means.
//!
//! # Example
//!
//! ```
//! use ndarray::array;
//! use neural_collapse::metrics::NcParams;
//!
//! // Three classes, two samples each, spread ±0.1 about the vertices of a triangle.
//! let x = array![
//!     [1.1f32, 0.0], [0.9, 0.0],
//!     [-0.5, 0.9660254], [-0.5, 0.7660254],
//!     [-0.5, -0.7660254], [-0.5, -0.9660254],
//! ];
//! let y = [0, 0, 1, 1, 2, 2];
//! let report = NcParams::new().measure(x.view(), &y)?;
//! assert_eq!(report.rank, 2);
//! assert!(report.nc1 < 0.02);
//! # Ok::<(), neural_collapse::Error>(())
//! ```

use std::fmt;

use ndarray::{s, Array2, ArrayView2};
use serde::Serialize;

use crate::check::CheckError;
use crate::features::{Classifier, Features};
use crate::generalized::{pairwise_stats, Generalized, GeneralizedParams};
use crate::kernels::{
    argmin_combination, max_sum_excluding, projected_residuals, residuals, weighted_sum_sq,
    Directions, PROJECTED_MAX_COLS,
};
use crate::linalg::packed::{PackedRhs, MR};
use crate::linalg::thin_svd;
use crate::parallel::map_row_blocks_with;
use crate::stats::{
    class_means, row_major, validate_batch, validate_shapes, ClassStats, GlobalMean,
};
use crate::tiles::{ClassifierFromProjection, NccFromProjection, NccScratch};

// The conventions and metric names live in the leaf module `config`; re-exported here, where
// they were first defined, so `metrics::DEFAULT_TOLERANCE` and `metrics::ReferenceChoice` stay.
pub use crate::config::{Metric, NcConfig, ReferenceChoice, DEFAULT_TOLERANCE};

/// Rows per block of the passes over the data: the unit of parallel work, and of the partial
/// sums that are reduced in block order (so results do not depend on the thread count).
const BLOCK_ROWS: usize = 1024;

/// Rows per sub-block of a pass (a multiple of the micro-kernel's rows): their residuals
/// (`SUB_ROWS × (d + 8)` f64) and products stay in the L2 cache.
const SUB_ROWS: usize = 12 * MR;

// Moved down to `stats` (its first user), re-exported here where it was first defined.
pub use crate::stats::MetricError;

/// Result of the metrics: [`MetricError`].
type Result<T, E = MetricError> = std::result::Result<T, E>;

/// Which class means a split is measured against (test collapse).
#[derive(Debug, Clone, Copy, Default)]
pub enum Reference<'a> {
    /// The measured split's own class means (default).
    #[default]
    Own,
    /// The class means of another split, normally the train split of the same checkpoint.
    Train(&'a ClassStats),
}

impl Reference<'_> {
    /// `"own"` or `"train"`.
    pub fn name(&self) -> &'static str {
        match self {
            Reference::Own => "own",
            Reference::Train(_) => "train",
        }
    }
}

/// NC1 with the rank of the pseudo-inverse that produced it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nc1 {
    /// `Tr(Σ_W Σ_B†) / C`.
    pub value: f64,
    /// Rank of `Σ_B†` used (≤ C − 1).
    pub rank: usize,
}

// Defined in `generalized`, which computes it from the pairwise statistics, re-exported here.
pub use crate::generalized::Nc2;

/// Every NC metric of one (epoch, split, layer).
///
/// `Display` prints an aligned table, `evcxr_display` an HTML table in Jupyter, and
/// [`to_tidy`](NcReport::to_tidy) a long polars `DataFrame` (`epoch, split, layer, metric, value`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NcReport {
    /// Checkpoint, when known.
    pub epoch: Option<u32>,
    /// Split name, when known.
    pub split: Option<String>,
    /// Layer name, when known.
    pub layer: Option<String>,
    /// Number of samples.
    pub n: usize,
    /// Number of classes `C`.
    pub classes: usize,
    /// Feature dimension `d`.
    pub dim: usize,
    /// Rank of `Σ_B†` used by NC1.
    pub rank: usize,
    /// Own or train means (see [`Reference`]); in JSON `"own"` or `"train"`. `Train` on the
    /// train split itself (whose own means are the train means) too.
    pub reference: ReferenceChoice,
    /// The global-mean convention.
    pub global_mean: GlobalMean,
    /// The relative eigenvalue tolerance of `Σ_B†`.
    pub tolerance: f64,
    /// NC1 = `Tr(Σ_W Σ_B†)/C`.
    pub nc1: f64,
    /// `Tr Σ_W / Tr Σ_B`.
    pub nc1_trace_ratio: f64,
    /// Class-distance normalised variance (Galanti et al. 2021).
    pub cdnv: f64,
    /// NC2 of the centred class means.
    pub nc2: Nc2,
    /// NC2 of the classifier rows, when a classifier was given.
    pub nc2_w: Option<Nc2>,
    /// NC3, when a classifier was given.
    pub nc3: Option<f64>,
    /// NC4, when a classifier or predictions were given.
    pub nc4: Option<f64>,
    /// Classes left out by [`NcParams::min_class_samples`] (their labels in the input's
    /// numbering), ascending; empty when none was. The other classes are measured renumbered
    /// `0..classes` in ascending label order.
    pub dropped_classes: Vec<u32>,
    /// The side of `Ṁ` NC1's pseudo-inverse was decomposed from (see [`Nc1Route`]).
    pub nc1_route: Nc1Route,
    /// Generalized NC (GNC2, NC3 variants, the CDNV exponent) and notes on undefined values
    /// (see [`crate::generalized`]).
    pub generalized: Generalized,
}

impl NcReport {
    /// `(metric, value)` of every metric present, in the order of [`Metric::ALL`]: NC1, its
    /// trace ratio, CDNV and NC2 always; NC2 of `W` and NC3 with a classifier; NC4 with a
    /// classifier or predictions; the generalized metrics when computed. The one list the JSON
    /// keys, the tidy frames, the tables and the CLI are made from ([`Metric::name`] is the key).
    pub fn metrics(&self) -> Vec<(Metric, f64)> {
        let mut out = vec![
            (Metric::Nc1, self.nc1),
            (Metric::Nc1TraceRatio, self.nc1_trace_ratio),
            (Metric::Cdnv, self.cdnv),
            (Metric::Nc2Equinorm, self.nc2.equinorm),
            (Metric::Nc2Equiangularity, self.nc2.equiangularity),
            (Metric::Nc2MaxAngle, self.nc2.max_angle),
            (Metric::Nc2EtfDistance, self.nc2.etf_distance),
        ];
        if let Some(w) = &self.nc2_w {
            out.extend([
                (Metric::Nc2EquinormW, w.equinorm),
                (Metric::Nc2EquiangularityW, w.equiangularity),
                (Metric::Nc2MaxAngleW, w.max_angle),
                (Metric::Nc2EtfDistanceW, w.etf_distance),
            ]);
        }
        if let Some(v) = self.nc3 {
            out.push((Metric::Nc3, v));
        }
        if let Some(v) = self.nc4 {
            out.push((Metric::Nc4, v));
        }
        let g = &self.generalized;
        for (k, v) in [
            (Metric::Gnc2Log, g.gnc2_log),
            (Metric::Gnc2Riesz, g.gnc2_riesz),
            (Metric::Nc3PerClass, g.nc3_per_class),
            (Metric::Nc3EtfWm, g.nc3_etf_wm),
        ] {
            if let Some(v) = v {
                out.push((k, v));
            }
        }
        out
    }

    /// The value of `metric`, when this report has it (see [`metrics`](Self::metrics); `None`
    /// for a classifier metric without a classifier, and for the probe metrics).
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.metrics()
            .into_iter()
            .find(|&(m, _)| m == metric)
            .map(|(_, v)| v)
    }

    /// The report as a JSON object: `epoch, split, n, classes, dim, rank`, then every metric of
    /// [`metrics`](Self::metrics) (classifier-dependent keys only when present); `nc1_route`
    /// (`"features"`) when NC1 came from the `d × d` side, `cdnv_exponent` when it is not 1,
    /// `riesz_s` with GNC2, `notes` when a value is undefined or left out.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("epoch".into(), self.epoch.into());
        m.insert("split".into(), self.split.clone().into());
        m.insert("n".into(), self.n.into());
        m.insert("classes".into(), self.classes.into());
        m.insert("dim".into(), self.dim.into());
        m.insert("rank".into(), self.rank.into());
        // The route only when it is not the classic C × C one (keeps the keys of C ≤ d).
        if self.nc1_route == Nc1Route::Features {
            m.insert("nc1_route".into(), self.nc1_route.name().into());
        }
        if let Some(p) = self.generalized.cdnv_exponent {
            m.insert("cdnv_exponent".into(), json_number(p));
        }
        if let Some(s) = self.generalized.riesz_s {
            m.insert("riesz_s".into(), json_number(s));
        }
        if !self.generalized.notes.is_empty() {
            m.insert("notes".into(), self.generalized.notes.clone().into());
        }
        if !self.dropped_classes.is_empty() {
            m.insert(
                "dropped_classes".into(),
                self.dropped_classes.clone().into(),
            );
        }
        for (k, v) in self.metrics() {
            m.insert(k.name().into(), json_number(v));
        }
        serde_json::Value::Object(m)
    }

    /// A one-line description of what was measured.
    pub(crate) fn heading(&self) -> String {
        let mut h = String::new();
        if let Some(l) = &self.layer {
            h.push_str(&format!("layer {l}, "));
        }
        if let Some(e) = self.epoch {
            h.push_str(&format!("epoch {e}, "));
        }
        if let Some(s) = &self.split {
            h.push_str(&format!("{s} split, "));
        }
        h.push_str(&format!(
            "N={} C={} d={}; means: {}, μ_G: {}, Σ_B† rank {} (tol {:e})",
            self.n,
            self.classes,
            self.dim,
            self.reference,
            self.global_mean,
            self.rank,
            self.tolerance
        ));
        if self.nc1_route == Nc1Route::Features {
            h.push_str(&format!("; NC1 from the {} side", self.nc1_route));
        }
        if let Some(note) = self.dropped_note() {
            h.push_str("; ");
            h.push_str(&note);
        }
        for note in &self.generalized.notes {
            h.push_str("; ");
            h.push_str(note);
        }
        h
    }

    /// `"N classes dropped (too few samples): a, b, …"` (the first 10, then how many more), or
    /// `None` when [`NcParams::min_class_samples`] dropped nothing.
    pub fn dropped_note(&self) -> Option<String> {
        if self.dropped_classes.is_empty() {
            return None;
        }
        let shown: Vec<String> = self
            .dropped_classes
            .iter()
            .take(10)
            .map(|c| c.to_string())
            .collect();
        let more = self.dropped_classes.len().saturating_sub(10);
        Some(format!(
            "{} classes dropped (too few samples): {}{}",
            self.dropped_classes.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
    }
}

impl fmt::Display for NcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.heading())?;
        for (k, v) in self.metrics() {
            writeln!(f, "  {k:<22} {v:>14.6e}")?;
        }
        Ok(())
    }
}

fn json_number(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Parameters of a measurement, in linfa's style: set with builder methods, checked when
/// [`measure`](NcParams::measure) runs.
///
/// ```
/// use ndarray::array;
/// use neural_collapse::prelude::*;
///
/// let train_x = array![[1.0f32, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]];
/// let test_x = array![[0.8f32, 0.3], [-1.2, 0.0]];
/// let train = ClassStats::from_data(train_x.view(), &[0, 0, 1, 1])?;
/// let test = NcParams::new()
///     .reference(Reference::Train(&train))
///     .measure(test_x.view(), &[0, 1])?;
/// assert_eq!(test.reference, ReferenceChoice::Train);
/// # Ok::<(), neural_collapse::Error>(())
/// ```
///
/// The conventions are one [`NcConfig`] (shared with [`MeasureOptions`] and the CLI): set it
/// whole with [`config`](Self::config) or a field at a time with [`global_mean`](Self::global_mean),
/// [`tolerance`](Self::tolerance) and [`reference`](Self::reference).
#[derive(Debug, Clone, Copy)]
pub struct NcParams<'a> {
    config: NcConfig,
    /// The train split's statistics of [`Reference::Train`]; `None` with
    /// [`ReferenceChoice::Train`] measures the data as the train split itself.
    train: Option<&'a ClassStats>,
    classifier: Option<&'a Classifier>,
    pred: Option<&'a [u32]>,
    min_class_samples: Option<usize>,
    nc1_route: Nc1Route,
    generalized: GeneralizedParams,
}

impl Default for NcParams<'_> {
    fn default() -> Self {
        Self {
            config: NcConfig::default(),
            train: None,
            classifier: None,
            pred: None,
            min_class_samples: None,
            nc1_route: Nc1Route::Auto,
            generalized: GeneralizedParams::default(),
        }
    }
}

impl<'a> NcParams<'a> {
    /// Defaults: class-mean `μ_G`, [`DEFAULT_TOLERANCE`], own means, no classifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// The conventions: reference, global mean and tolerance at once (see [`NcConfig`]).
    ///
    /// [`ReferenceChoice::Train`] measures against the statistics given with
    /// [`reference`](Self::reference)`(Reference::Train(&train))`; without them the data is
    /// taken to be the train split itself (its own means are the train means, as
    /// [`measure_scan`](crate::stream::measure_scan) does for the train split) and the report says `train`.
    pub fn config(mut self, config: NcConfig) -> Self {
        self.config = config;
        self
    }

    /// The conventions set so far.
    pub fn get_config(&self) -> NcConfig {
        self.config
    }

    /// The global-mean convention ([`NcConfig::global_mean`]).
    pub fn global_mean(mut self, g: GlobalMean) -> Self {
        self.config.global_mean = g;
        self
    }

    /// Relative eigenvalue tolerance of `Σ_B†` (see the module docs; [`NcConfig::tolerance`]).
    pub fn tolerance(mut self, rtol: f64) -> Self {
        self.config.tolerance = rtol;
        self
    }

    /// Which class means to measure against: sets [`NcConfig::reference`] and, for
    /// [`Reference::Train`], the train statistics.
    pub fn reference(mut self, r: Reference<'a>) -> Self {
        (self.config.reference, self.train) = match r {
            Reference::Own => (ReferenceChoice::Own, None),
            Reference::Train(s) => (ReferenceChoice::Train, Some(s)),
        };
        self
    }

    /// The means measured against: the train statistics when the reference is
    /// [`ReferenceChoice::Train`] and they were given, else the data's own.
    fn means_reference(&self) -> Reference<'a> {
        match (self.config.reference, self.train) {
            (ReferenceChoice::Train, Some(s)) => Reference::Train(s),
            _ => Reference::Own,
        }
    }

    /// A classifier (enables NC2 of `W`, NC3 and NC4).
    pub fn classifier(mut self, c: &'a Classifier) -> Self {
        self.classifier = Some(c);
        self
    }

    /// Stored predictions (enable NC4 when no classifier is given).
    pub fn predictions(mut self, p: &'a [u32]) -> Self {
        self.pred = Some(p);
        self
    }

    /// Measures only the classes with at least `k` samples (`k ≥ 1`), and lists the others in
    /// [`NcReport::dropped_classes`].
    ///
    /// **Default: strict** (not set): every class `0..C` must have a sample, else
    /// [`MetricError::EmptyClass`]. With `k` set:
    /// - [`Reference::Own`]: the classes are the labels present in the input; those with fewer
    ///   than `k` rows are dropped with their rows (labels absent from the input are not
    ///   classes at all and are not listed).
    /// - [`Reference::Train`]: the classes are the reference's `0..C`; a class is dropped when
    ///   it has fewer than `k` rows in the input or fewer than `k` samples in the reference, and
    ///   the reference's statistics are restricted to the classes kept.
    ///
    /// The kept classes are renumbered `0..C'` in ascending order; a classifier keeps the rows
    /// of those classes (its decision is then the arg-max over the kept classes). Stored
    /// predictions are renumbered likewise; if any row's prediction is a dropped class, NC4 from
    /// predictions is left out (`None`) rather than counted against a class that is not
    /// measured. Fewer than two classes kept is [`MetricError::TooFewClasses`].
    pub fn min_class_samples(mut self, k: usize) -> Self {
        self.min_class_samples = Some(k);
        self
    }

    /// Which side of the centred means NC1's pseudo-inverse is decomposed from (default
    /// [`Nc1Route::Auto`]: the smaller one). Both give the same NC1 up to rounding.
    pub fn nc1_route(mut self, route: Nc1Route) -> Self {
        self.nc1_route = route;
        self
    }

    /// Options of the generalized metrics (GNC2, the NC3 variants, the CDNV exponent; see
    /// [`crate::generalized`]). By default GNC2 and the NC3 variants are computed only when
    /// `C > d + 1` and the CDNV exponent is 1.
    pub fn generalized(mut self, g: GeneralizedParams) -> Self {
        self.generalized = g;
        self
    }

    /// Measures a [`Features`] value; its `pred` column is used for NC4 when no classifier or
    /// predictions were set and it predicts the labels being measured
    /// ([`Features::pred_predicts_labels`]: a network trained on coarse labels stores coarse
    /// predictions, which say nothing about NC4 on the fine classes, so NC4 is then left out),
    /// and its epoch, split and layer label the report.
    ///
    /// # Errors
    /// As [`measure`](Self::measure).
    pub fn measure_features(&self, f: &Features) -> Result<NcReport> {
        let mut p = *self;
        if p.classifier.is_none() && p.pred.is_none() && f.pred_predicts_labels() {
            p.pred = f.pred.as_deref();
        }
        let mut report = p.measure(f.x.view(), &f.labels)?;
        report.epoch = f.epoch;
        report.split = f.split.clone();
        report.layer = f.layer.clone();
        Ok(report)
    }

    /// Measures every metric on an `n × d` matrix (f32 or f64) with labels in `0..C`.
    ///
    /// `C` is the reference's number of classes with [`Reference::Train`], else `max(label)+1`.
    /// Two passes over `x`: one for the class statistics, one (in blocks) for NC1, the scatter
    /// and NC4. Memory beyond the input: `O(C·d + C²)` plus, per thread, `96 × (d + 3C)` f64.
    ///
    /// # Errors
    /// [`MetricError`] for shape mismatches, labels or predictions out of range, non-finite
    /// values, fewer than two classes, an empty class, coinciding class means, a classifier of
    /// the wrong shape, or a bad tolerance.
    pub fn measure<T: Copy + Into<f64> + Sync>(
        &self,
        x: ArrayView2<'_, T>,
        labels: &[u32],
    ) -> Result<NcReport> {
        check_tolerance(self.config.tolerance)?;
        self.generalized.check()?;
        if let Some(k) = self.min_class_samples {
            return self.measure_classes_with(x, labels, k);
        }
        // Shapes and labels (cheap), then counts and means in one parallel pass; a NaN or
        // infinite value surfaces as a non-finite mean and is then located by a full scan.
        crate::check::check_lengths(x.nrows(), labels.len())?;
        crate::check::check_not_empty(&x)?;
        let classes = match self.means_reference() {
            Reference::Train(r) => r.classes(),
            Reference::Own => {
                let label = labels.iter().copied().max().unwrap_or(0);
                let classes = label as usize + 1;
                if classes > labels.len() {
                    // Some class is empty: find the first one from the distinct labels (O(n)
                    // memory) rather than allocating `classes × d` (a label of 4e9 would abort).
                    let mut distinct = labels.to_vec();
                    distinct.sort_unstable();
                    distinct.dedup();
                    let class = distinct
                        .iter()
                        .enumerate()
                        .find(|&(k, &l)| l as usize != k)
                        .map_or(distinct.len(), |(k, _)| k);
                    return Err(MetricError::EmptyClass { class, classes });
                }
                classes
            }
        };
        if classes < 2 {
            return Err(MetricError::TooFewClasses { classes });
        }
        if let Some((row, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(MetricError::Check(CheckError::LabelOutOfRange {
                row,
                label,
                classes,
            }));
        }
        let (counts, means) = class_means(x, labels, classes);
        if means.iter().any(|v| !v.is_finite()) {
            validate_batch(&x, labels, classes, x.ncols())?;
        }
        let mut own = ClassStats::from_parts(counts, means, vec![0.0; classes]);
        own.require_all_classes()?;
        let reference = match self.means_reference() {
            Reference::Own => None,
            Reference::Train(r) => {
                if r.dim() != own.dim() {
                    return Err(MetricError::Check(CheckError::DimensionMismatch {
                        expected: r.dim(),
                        found: own.dim(),
                    }));
                }
                r.require_all_classes()?;
                Some(r)
            }
        };
        let dim = own.dim();
        if let Some(c) = self.classifier {
            check_classifier(c, classes, dim)?;
        }
        let scaled = self.classifier.and_then(rescaled_classifier);
        let classifier = scaled.as_ref().or(self.classifier);
        if let Some(p) = self.pred {
            if p.len() != labels.len() {
                return Err(MetricError::PredictionLength {
                    rows: labels.len(),
                    preds: p.len(),
                });
            }
            if let Some((row, &pred)) = p.iter().enumerate().find(|(_, &v)| v as usize >= classes) {
                return Err(MetricError::PredictionOutOfRange { row, pred, classes });
            }
        }

        // With many classes on the features route, NC4 is its own tiled pass over the rows,
        // needing only the means: it runs beside the decomposition (single-threaded) and the
        // NC1 pass, so that no core idles during the decomposition. Same results as in sequence.
        let ref_stats = reference.unwrap_or(&own);
        let nc4_wanted = classifier.is_some() || self.pred.is_some();
        let route = resolve_route(self.nc1_route, classes, dim);
        let tiled_nc4 = nc4_wanted && uses_tiled_nc4(route, classes);
        // On the classes route both sides of NC4 come from the NC1 pass's own product
        // (`tiles::NccFromProjection`, `tiles::ClassifierFromProjection`).
        let ncc_in_pass = tiled_nc4 && route == Nc1Route::Classes;
        let (geometry, pass) = std::thread::scope(|scope| -> Result<(Geometry, PassResult)> {
            let side = (tiled_nc4 && !ncc_in_pass).then(|| {
                scope.spawn(|| {
                    crate::tiles::nc4_mismatches(x, ref_stats.means(), classifier, self.pred)
                })
            });
            let measured = Geometry::with_route(
                ref_stats,
                self.config.global_mean,
                self.config.tolerance,
                route,
            )
            .map(|g| {
                let pass = if ncc_in_pass {
                    let (mut pass, nearest, net) = ncc_pass(x, labels, &g, classifier);
                    let other = net.as_deref().or(self.pred).unwrap_or_default();
                    pass.nc4_mismatches = Some(count_mismatches(&nearest, other));
                    pass
                } else if tiled_nc4 {
                    blocked_pass(x, labels, &g, None, None)
                } else {
                    blocked_pass(x, labels, &g, classifier, self.pred)
                };
                (g, pass)
            });
            let side = side.map(|h| match h.join() {
                Ok(m) => m,
                Err(panic) => std::panic::resume_unwind(panic),
            });
            let (geometry, mut pass) = measured?;
            if let Some(m) = side {
                pass.nc4_mismatches = Some(m);
            }
            Ok((geometry, pass))
        })?;
        // The pass measured the scatter about the reference means: for `Own` that completes
        // the split's own statistics (two-pass: means first, then residuals).
        let scatter_ref = pass.scatter.clone();
        if reference.is_none() {
            own =
                ClassStats::from_parts(own.counts().to_vec(), own.means().to_owned(), pass.scatter);
        }
        let reference = reference.unwrap_or(&own);

        let n = labels.len();
        let many = ManyClasses::new(
            &geometry,
            &scatter_ref,
            own.counts(),
            reference,
            classifier,
            self.generalized,
        )?;
        Ok(NcReport {
            epoch: None,
            split: None,
            layer: None,
            n,
            classes,
            dim,
            rank: geometry.rank,
            reference: self.config.reference,
            global_mean: self.config.global_mean,
            tolerance: self.config.tolerance,
            nc1: pass.nc1_sum / n as f64,
            nc1_trace_ratio: trace_ratio(&scatter_ref, n, reference, self.config.global_mean),
            cdnv: many.cdnv,
            nc2: many.nc2,
            nc2_w: many.nc2_w,
            nc3: many.nc3,
            nc4: pass.nc4_mismatches.map(|m| m as f64 / n as f64),
            dropped_classes: Vec::new(),
            nc1_route: geometry.route,
            generalized: many.generalized,
        })
    }

    /// [`measure`](Self::measure) over the classes with at least `k` samples (see
    /// [`min_class_samples`](Self::min_class_samples)).
    fn measure_classes_with<T: Copy + Into<f64> + Sync>(
        &self,
        x: ArrayView2<'_, T>,
        labels: &[u32],
        k: usize,
    ) -> Result<NcReport> {
        if k == 0 {
            return Err(MetricError::BadMinClassSamples);
        }
        crate::check::check_lengths(x.nrows(), labels.len())?;
        // Rows per label, without allocating by label value (labels may be huge).
        let mut counts: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
        for &l in labels {
            *counts.entry(l).or_insert(0) += 1;
        }
        let (kept, dropped): (Vec<u32>, Vec<u32>) = match self.means_reference() {
            Reference::Own => {
                let kept = counts
                    .iter()
                    .filter(|&(_, &n)| n >= k)
                    .map(|(&l, _)| l)
                    .collect();
                let dropped = counts
                    .iter()
                    .filter(|&(_, &n)| n < k)
                    .map(|(&l, _)| l)
                    .collect();
                (kept, dropped)
            }
            Reference::Train(r) => {
                if let Some((row, &label)) = labels
                    .iter()
                    .enumerate()
                    .find(|(_, &l)| l as usize >= r.classes())
                {
                    return Err(MetricError::Check(CheckError::LabelOutOfRange {
                        row,
                        label,
                        classes: r.classes(),
                    }));
                }
                let enough = |c: usize| {
                    counts.get(&(c as u32)).copied().unwrap_or(0) >= k && r.counts()[c] >= k as u64
                };
                let all = 0..r.classes();
                (
                    all.clone()
                        .filter(|&c| enough(c))
                        .map(|c| c as u32)
                        .collect(),
                    all.filter(|&c| !enough(c)).map(|c| c as u32).collect(),
                )
            }
        };
        if kept.len() < 2 {
            return Err(MetricError::TooFewClasses {
                classes: kept.len(),
            });
        }
        let index: std::collections::HashMap<u32, u32> = kept
            .iter()
            .enumerate()
            .map(|(i, &l)| (l, i as u32))
            .collect();
        let rows: Vec<usize> = (0..labels.len())
            .filter(|&i| index.contains_key(&labels[i]))
            .collect();
        let x_kept = x.select(ndarray::Axis(0), &rows);
        let labels_kept: Vec<u32> = rows.iter().map(|&i| index[&labels[i]]).collect();
        let kept_usize: Vec<usize> = kept.iter().map(|&l| l as usize).collect();
        let classifier = match self.classifier {
            Some(c) => {
                if let Some(&l) = kept_usize
                    .iter()
                    .find(|&&l| l >= c.w.nrows() || l >= c.b.len())
                {
                    return Err(MetricError::ClassifierShape {
                        rows: c.w.nrows(),
                        cols: c.w.ncols(),
                        bias: c.b.len(),
                        classes: l + 1,
                        dim: x.ncols(),
                    });
                }
                Some(Classifier {
                    w: c.w.select(ndarray::Axis(0), &kept_usize),
                    b: c.b.select(ndarray::Axis(0), &kept_usize),
                })
            }
            None => None,
        };
        let pred: Option<Vec<u32>> = match self.pred {
            Some(p) if p.len() != labels.len() => {
                return Err(MetricError::PredictionLength {
                    rows: labels.len(),
                    preds: p.len(),
                })
            }
            Some(p) => rows.iter().map(|&i| index.get(&p[i]).copied()).collect(),
            None => None,
        };
        let reference = match self.means_reference() {
            Reference::Own => None,
            Reference::Train(r) => {
                let means = r.means().select(ndarray::Axis(0), &kept_usize);
                Some(ClassStats::from_parts(
                    kept_usize.iter().map(|&c| r.counts()[c]).collect(),
                    means,
                    kept_usize.iter().map(|&c| r.scatter()[c]).collect(),
                ))
            }
        };
        let p = NcParams {
            min_class_samples: None,
            nc1_route: self.nc1_route,
            generalized: self.generalized,
            classifier: classifier.as_ref(),
            pred: pred.as_deref(),
            config: self.config,
            train: reference.as_ref(),
        };
        let mut report = p.measure(x_kept.view(), &labels_kept)?;
        report.dropped_classes = dropped;
        Ok(report)
    }
}

/// Above this many classes NC2 and the CDNV come from the tiled pairwise pass
/// ([`pairwise_stats`]: one BLAS-speed Gram in tiles) instead of the `C × C` Gram of
/// [`nc2_of_rows`] and the scalar double loop of `cdnv_p` (which stay below it, so that the
/// results of few classes do not move by a rounding).
const PAIRWISE_TILED_MIN_CLASSES: usize = 256;

/// The metrics of the class means (and classifier) beyond NC1: NC2, CDNV, NC3 and the
/// generalized ones, by the route that suits `C`.
pub(crate) struct ManyClasses {
    pub(crate) nc2: Nc2,
    pub(crate) nc2_w: Option<Nc2>,
    pub(crate) nc3: Option<f64>,
    pub(crate) cdnv: f64,
    pub(crate) generalized: Generalized,
}

impl ManyClasses {
    /// `scatter` about the reference means, `counts` of the measured split.
    pub(crate) fn new(
        geo: &Geometry,
        scatter: &[f64],
        counts: &[u64],
        reference: &ClassStats,
        classifier: Option<&Classifier>,
        params: GeneralizedParams,
    ) -> Result<Self> {
        let (classes, dim) = geo.centered.dim();
        let p = params.cdnv_exponent;
        let wanted = params.always || classes > dim + 1;
        let mut g = Generalized {
            cdnv_exponent: (p != 1.0).then_some(p),
            ..Generalized::default()
        };
        let (nc2, cdnv) = if classes > PAIRWISE_TILED_MIN_CLASSES {
            let var: Vec<f64> = scatter
                .iter()
                .zip(counts)
                .map(|(&s, &n)| s / n as f64)
                .collect();
            let st = pairwise_stats(
                geo.centered.view(),
                Some(&var),
                p,
                params.riesz_s,
                "centred class mean",
            )?;
            if wanted {
                g.gnc2_log = Some(st.gnc2_log);
                g.gnc2_riesz = Some(st.gnc2_riesz);
            }
            (st.nc2, st.cdnv.unwrap_or(f64::NAN))
        } else {
            let nc2 = nc2_of_rows(geo.centered.view(), "centred class mean")?;
            let cdnv = cdnv_p(scatter, counts, reference, p)?;
            if wanted {
                let st = pairwise_stats(
                    geo.centered.view(),
                    None,
                    p,
                    params.riesz_s,
                    "centred class mean",
                )?;
                g.gnc2_log = Some(st.gnc2_log);
                g.gnc2_riesz = Some(st.gnc2_riesz);
            }
            (nc2, cdnv)
        };
        if wanted {
            g.riesz_s = Some(params.riesz_s);
            if g.gnc2_log.is_some_and(f64::is_infinite) {
                g.notes.push(
                    "gnc2 is +∞ (null in JSON): two centred class means point the same way".into(),
                );
            }
        }
        let (nc2_w, nc3) = match classifier {
            Some(c) => {
                let nc2_w = if classes > PAIRWISE_TILED_MIN_CLASSES {
                    pairwise_stats(c.w.view(), None, 1.0, params.riesz_s, "classifier row")?.nc2
                } else {
                    nc2_of_rows(c.w.view(), "classifier row")?
                };
                if wanted {
                    let (per_class, etf) =
                        crate::generalized::nc3_variants(c.w.view(), geo.centered.view())?;
                    g.nc3_per_class = Some(per_class);
                    g.nc3_etf_wm = Some(etf);
                }
                (Some(nc2_w), Some(nc3_of(c.w.view(), geo.centered.view())?))
            }
            None => {
                if params.always {
                    g.notes
                        .push("NC3 variants not computed: no classifier".to_string());
                }
                (None, None)
            }
        };
        if classes == 2 {
            g.notes.push(
                "nc2_equiangularity is undefined (NaN) for C = 2: one pair of classes has no standard deviation"
                    .to_string(),
            );
        }
        Ok(Self {
            nc2,
            nc2_w,
            nc3,
            cdnv,
            generalized: g,
        })
    }
}

/// Fails with [`MetricError::BadTolerance`] unless `tolerance` is finite and in `[0, 1)`.
pub(crate) fn check_tolerance(tolerance: f64) -> Result<()> {
    if tolerance.is_finite() && (0.0..1.0).contains(&tolerance) {
        Ok(())
    } else {
        Err(MetricError::BadTolerance(tolerance))
    }
}

/// The classifier scaled by a power of two `2^k` so that its largest `|w|` or `|b|` lies in
/// `[1, 2)`, when that largest entry lies outside `[2^-256, 2^256]`; `None` (use it as it is)
/// otherwise.
///
/// Every classifier statistic is invariant to one positive scale of `W` and `b`: NC2 of `W`,
/// NC3 and its variants normalise `W`, and NC4's `argmax_c w_c·h + b_c` is unchanged. A power of
/// two scales exactly (up to entries `2^-1022` times smaller than the largest, which may become
/// subnormal or zero), so the statistics are those of the classifier as given; but unscaled, the
/// products `‖w_c‖²` and `w_c·h` overflow f64 from entries near `1e154` (weights of `1e308`
/// gave NC2 of `W` as NaN) and underflow below `1e-154`.
pub(crate) fn rescaled_classifier(c: &Classifier) -> Option<Classifier> {
    let largest =
        c.w.iter()
            .chain(c.b.iter())
            .fold(0.0_f64, |m, v| m.max(v.abs()));
    if largest == 0.0 || !largest.is_finite() {
        return None;
    }
    let e = largest.log2().floor() as i32;
    if (-256..=256).contains(&e) {
        return None;
    }
    // Two factors, each within f64's normal range (2^±537 at most), whose product is 2^-e.
    let (e1, e2) = (-e / 2, -e - (-e / 2));
    let (f1, f2) = (2f64.powi(e1), 2f64.powi(e2));
    Some(Classifier {
        w: c.w.mapv(|v| v * f1 * f2),
        b: c.b.mapv(|v| v * f1 * f2),
    })
}

pub(crate) fn check_classifier(c: &Classifier, classes: usize, dim: usize) -> Result<()> {
    if c.w.nrows() != classes || c.w.ncols() != dim || c.b.len() != classes {
        return Err(MetricError::ClassifierShape {
            rows: c.w.nrows(),
            cols: c.w.ncols(),
            bias: c.b.len(),
            classes,
            dim,
        });
    }
    if let Some(((row, column), &value)) = c.w.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(MetricError::NonFiniteClassifier {
            what: format!("W[{row}, {column}]"),
            value,
        });
    }
    if let Some((k, &value)) = c.b.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(MetricError::NonFiniteClassifier {
            what: format!("b[{k}]"),
            value,
        });
    }
    Ok(())
}

/// The reference geometry, from the thin SVD `Ṁ = U S Vᵀ` of the centred reference means
/// (`d × C`, columns `μ_c − μ_G`):
///
/// ```text
/// Q = Ṁ V = U S                      d × C, column k is s_k u_k
/// NC1 term of a residual r:          ‖P_Kᵀ r‖² = Σ_{k<K} (r·q_k)² / s_k⁴   (P_K = U_K S_K⁻¹)
/// r·(μ_c − μ_G) = Σ_k V_ck (r·q_k)   (Ṁ = Q Vᵀ, every k)
/// ```
///
/// so one product `r·Q` per sample gives both the NC1 term and the nearest-class-mean scores.
pub(crate) struct Geometry {
    means: Array2<f64>,               // C × d reference class means (standard layout)
    pub(crate) centered: Array2<f64>, // C × d, rows μ_c − μ_G
    q: Array2<f64>,                   // d × C (classes route) or d × d (features route)
    /// `Vᵀ` (`C × C`, row k = right singular vector k) on the classes route; `None` on the
    /// features route, whose nearest-class-mean scores are tiled products with the means.
    v_t: Option<Array2<f64>>,
    /// `1 / s_k⁴` for the kept `k < rank`.
    nc1_weights: Vec<f64>,
    pub(crate) rank: usize,
    /// Which decomposition gave `s` and `Q`.
    pub(crate) route: Nc1Route,
    /// NC4's nearest-class-mean scores from the NC1 product (classes route, many classes),
    /// built on first use (`O(C²·d)`) and kept, so that the batches of a streamed pass over the
    /// same reference share it.
    ncc: std::sync::OnceLock<NccFromProjection>,
    /// NC1's directions for the fused pass without NC4 (`projected_pass`), built on first use
    /// and kept like `ncc`: a streamed pass calls it per piece of 512 rows. `None` when
    /// `kernels::Directions` refuses the rank.
    projected: std::sync::OnceLock<Option<Directions>>,
}

/// Which decomposition of the centred means `Ṁ` (`d × C`) gives NC1's pseudo-inverse, by the
/// smaller side of `Ṁ` (its rank is at most `min(C − 1, d)`):
///
/// ```text
/// classes  (C ≤ d): Ṁ = U S Vᵀ from the C × C side — Householder QR of Ṁ (d × C), then one-sided
///                   Jacobi on the C × C factor (Jacobi over the C columns when C > d); or, for
///                   C > 256, the eigendecomposition (src/spectral.rs: Householder tridiagonal +
///                   implicit QL) of the C × C Gram ṀᵀṀ = V S² Vᵀ.  Q = Ṁ V.
/// features (C > d): the same from the d × d side — QR of Ṁᵀ (C × d) and Jacobi on the d × d
///                   factor (left singular vectors U); or, for d > 256, the eigendecomposition
///                   of the d × d Gram ṀṀᵀ = U S² Uᵀ.  Q = U S.
/// ```
///
/// Both give the same `s_k` and the same NC1 `Σ_k (r·q_k)²/s_k⁴`; the cost of the decomposition
/// is `O(min(C, d)³)` plus `O(C·d·min(C, d))` instead of the `O(C³)` per Jacobi sweep over `C`
/// columns that made `C > d` slow. Jacobi is accurate relative to `s_max` for every kept
/// direction; the Gram's eigenvalues have absolute errors of order `ε·s_max²`, so with the
/// default tolerance (`s_k² > 1e-12 s_max²`) the smallest kept weights may carry relative
/// errors up to ~`1e-3` when such tiny directions exist — far above them the two agree to
/// ~`1e-12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Nc1Route {
    /// The smaller side: `Features` when `C > d` and `C > 256`, else `Classes` (up to 256
    /// classes one-sided Jacobi over the `C` columns is cheap, and gives the results of before
    /// the routes existed).
    #[default]
    #[cfg_attr(feature = "cli", value(help = None::<&str>))]
    Auto,
    /// Decompose from the `C × C` side.
    #[cfg_attr(feature = "cli", value(help = None::<&str>))]
    Classes,
    /// Decompose from the `d × d` side.
    #[cfg_attr(feature = "cli", value(help = None::<&str>))]
    Features,
}

impl Nc1Route {
    /// `"classes"`, `"features"` (or `"auto"` before a choice is made).
    pub fn name(&self) -> &'static str {
        match self {
            Nc1Route::Auto => "auto",
            Nc1Route::Classes => "classes",
            Nc1Route::Features => "features",
        }
    }
}

impl fmt::Display for Nc1Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Nc1Route::Auto => "auto",
            Nc1Route::Classes => "C×C (C ≤ d)",
            Nc1Route::Features => "d×d (C > d)",
        })
    }
}

/// The route [`Nc1Route::Auto`] stands for at `classes` × `dim` (others are themselves).
fn resolve_route(route: Nc1Route, classes: usize, dim: usize) -> Nc1Route {
    match route {
        Nc1Route::Auto if classes > dim && classes > JACOBI_MAX => Nc1Route::Features,
        Nc1Route::Auto => Nc1Route::Classes,
        r => r,
    }
}

/// Whether NC4 is [`tiles::nc4_mismatches`](crate::tiles)'s own pass rather than part of the
/// NC1 pass (see [`TILED_NC4_MIN_CLASSES`]).
fn uses_tiled_nc4(route: Nc1Route, classes: usize) -> bool {
    classes >= TILED_NC4_MIN_CLASSES || route == Nc1Route::Features
}

/// Above this size the `n × n` side is decomposed through its Gram matrix (one BLAS-speed
/// product and a symmetric eigendecomposition) instead of one-sided Jacobi (`O(n³)` per
/// sweep, memory-bound).
const JACOBI_MAX: usize = 256;

/// Singular values (decreasing) and the right singular vectors (columns of `v`) of the
/// `rows × n` matrix `a`, `n` its smaller side: Jacobi SVD for `n ≤ JACOBI_MAX`, else the
/// eigendecomposition of `aᵀa` (`s = √λ`, negative rounding clamped to 0).
fn right_singular(a: ArrayView2<'_, f64>, hint: &'static str) -> Result<(Vec<f64>, Array2<f64>)> {
    if a.ncols() <= JACOBI_MAX {
        let svd = thin_svd(a);
        return Ok((svd.s.to_vec(), svd.v));
    }
    // The Gram matrix, sym_eigen's working copy and its eigenvectors are alive together: reserve
    // that much fallibly first (then free it), so that a size the machine cannot hold is an
    // error, not an abort on allocation.
    let n = a.ncols();
    let too_large = || MetricError::TooLargeGeometry {
        n,
        gib: 3.0 * 8.0 * (n as f64).powi(2) / (1u64 << 30) as f64,
        hint,
    };
    let cells = n
        .checked_mul(n)
        .and_then(|m| m.checked_mul(3))
        .filter(|&m| m <= isize::MAX as usize / 8)
        .ok_or_else(too_large)?;
    let mut probe = Vec::<f64>::new();
    probe.try_reserve_exact(cells).map_err(|_| too_large())?;
    drop(probe);
    let gram = crate::linalg::gram(a.t());
    let (vals, vecs) = crate::spectral::sym_eigen(gram.view())
        .ok_or(MetricError::DegenerateMeans { tolerance: 0.0 })?;
    Ok((vals.iter().map(|&l| l.max(0.0).sqrt()).collect(), vecs))
}

impl Geometry {
    pub(crate) fn new(reference: &ClassStats, g: GlobalMean, tolerance: f64) -> Result<Self> {
        Self::with_route(reference, g, tolerance, Nc1Route::Auto)
    }

    /// [`Geometry::new`] with the decomposition chosen (see [`Nc1Route`]).
    pub(crate) fn with_route(
        reference: &ClassStats,
        g: GlobalMean,
        tolerance: f64,
        route: Nc1Route,
    ) -> Result<Self> {
        let centered = reference.centered_means(g);
        let classes = reference.classes();
        let dim = reference.dim();
        let route = resolve_route(route, classes, dim);
        let m_dot = centered.t(); // d × C
        let (s, q, v_t) = if route == Nc1Route::Classes {
            let (s, v) = right_singular(
                m_dot,
                "the features route (--nc1-route features) works in d × d instead",
            )?;
            let q = crate::linalg::matmul(m_dot, v.view()).expect("d × C times C × C");
            (s, q, Some(v.t().as_standard_layout().into_owned()))
        } else {
            // Right singular vectors of Ṁᵀ are the left ones of Ṁ: Q = U S.
            // Householder works on the columns of its argument as contiguous rows: hand it
            // Ṁᵀ as the transpose of the standard-layout Ṁ.
            let m_std = m_dot.as_standard_layout().into_owned();
            let (s, u) = right_singular(
                m_std.t(),
                "the classes route (--nc1-route classes) works in C × C instead",
            )?;
            let q = Array2::from_shape_fn(u.dim(), |(j, k)| u[[j, k]] * s[k]);
            (s, q, None)
        };
        let s_max = s.first().copied().unwrap_or(0.0);
        // Eigenvalues of Σ_B are s²/C: keep s² > tol · s_max², at most C − 1. A direction whose
        // weight 1/s⁴ overflows (s below ~1e-77, possible only with tolerance 0) is numerically
        // zero: left out rather than turning NC1 into ∞ · 0 = NaN.
        let rank = s
            .iter()
            .take(classes - 1)
            .take_while(|&&s| {
                s > 0.0 && s * s > tolerance * s_max * s_max && (1.0 / (s * s)).powi(2).is_finite()
            })
            .count();
        if rank == 0 {
            return Err(MetricError::DegenerateMeans { tolerance });
        }
        let nc1_weights = s
            .iter()
            .take(rank)
            .map(|&s| {
                let inv = 1.0 / (s * s);
                inv * inv
            })
            .collect();
        Ok(Self {
            means: reference.means().as_standard_layout().into_owned(),
            centered,
            q,
            v_t,
            nc1_weights,
            rank,
            route,
            ncc: std::sync::OnceLock::new(),
            projected: std::sync::OnceLock::new(),
        })
    }
}

/// From this many classes on (or on the features route), NC4 is computed by
/// [`tiles::nc4_mismatches`](crate::tiles): certified f32 products in column tiles, with no
/// `C × C` matrix; below, inside the NC1 pass.
const TILED_NC4_MIN_CLASSES: usize = 256;

pub(crate) struct PassResult {
    pub(crate) nc1_sum: f64,
    pub(crate) nc4_mismatches: Option<u64>,
    /// Per class, `Σ_{y_i=c} ‖h_i − m_c‖²` about the reference means `m_c`.
    pub(crate) scatter: Vec<f64>,
}

impl PassResult {
    /// Adds the blocks' `(nc1 sum, NC4 mismatches, per-class scatter)` in block order (so the
    /// result does not depend on the thread count); NC4 is reported only if `nc4_wanted`.
    fn reduce(partials: Vec<(f64, u64, Vec<f64>)>, classes: usize, nc4_wanted: bool) -> Self {
        let mut scatter = vec![0.0f64; classes];
        let (mut nc1_sum, mut mism) = (0.0, 0u64);
        for (n1, m, sc) in partials {
            nc1_sum += n1;
            mism += m;
            for (acc, v) in scatter.iter_mut().zip(sc) {
                *acc += v;
            }
        }
        PassResult {
            nc1_sum,
            nc4_mismatches: nc4_wanted.then_some(mism),
            scatter,
        }
    }
}

/// Per-thread buffers of [`blocked_pass`].
struct PassScratch<T> {
    rows: Vec<T>,
    resid: Vec<f64>,
    z: Vec<f64>,
    t: Vec<f64>,
    /// The residuals in f32, their norms, and the f32 logits (classifier only).
    resid32: Vec<f32>,
    norms: Vec<f64>,
    logits32: Vec<f32>,
    logits64: Vec<f64>,
}

impl<T> PassScratch<T> {
    fn new() -> Self {
        Self {
            rows: Vec::new(),
            resid: Vec::new(),
            z: Vec::new(),
            t: Vec::new(),
            resid32: Vec::new(),
            norms: Vec::new(),
            logits32: Vec::new(),
            logits64: Vec::new(),
        }
    }
}

/// From this many classes on, the classifier's logits are certified f32 products
/// ([`F32Logits`]); below, f64 columns of the pass's one product, where they mostly fill the
/// padding of its last register.
const F32_LOGITS_MIN_CLASSES: usize = 16;

/// The classifier's logits `r·w_c` of a pass, computed in f32 and certified.
///
/// With `r̃, w̃` the f32 roundings of the residual and the weights, the f32 product of `d`
/// terms satisfies (`u = 2⁻²⁴`, fused multiply-adds, any order of the sums)
///
/// ```text
/// |fl(r̃·w̃_c) − r·w_c| ≤ (γ_d (1 + u)² + 2u + u²) Σ_j |r_j w_cj| ≤ β ‖r‖ ‖w_c‖,
/// γ_d = d u / (1 − d u),   β = 1.01 (d + 3) u   (for d u ≤ 10⁻³)
/// ```
///
/// so when the largest score `ℓ̃_a = base_a + fl(r̃·w̃_a)` exceeds every other by more than
/// `2 β ‖r‖ max_c ‖w_c‖` (plus the f64 roundings of the additions), `a` is the true argmax
/// of the f64 scores, unique. Otherwise (near ties, or non-finite values) the row's logits are
/// recomputed in f64 and the f64 rule decides. NC4 is therefore the f64 result; f32 halves the
/// cost of the `C` classifier columns of the product (16 lanes per AVX-512 register, not 8).
struct F32Logits {
    packed: PackedRhs<f32>,
    /// `β · max_c ‖w_c‖₂`.
    bound: f64,
}

impl F32Logits {
    fn new(w: &Array2<f64>) -> Self {
        let (classes, dim) = w.dim();
        let wt = w.t().as_standard_layout().into_owned();
        let packed = PackedRhs::<f32>::new(
            wt.as_slice().expect("standard layout"),
            dim,
            classes,
            classes,
        );
        let u = f64::powi(2.0, -24);
        let beta = 1.01 * (dim as f64 + 3.0) * u;
        let w_max = w
            .rows()
            .into_iter()
            .map(|r| r.dot(&r).sqrt())
            .fold(0.0f64, f64::max);
        Self {
            packed,
            bound: beta * w_max,
        }
    }
}

/// The classifier's prediction for one row from certified f32 logits (see [`F32Logits`]):
/// `argmax_c (base_c + logit_c)`, first index on ties; `r` (the f64 residual), `w` and `l64`
/// (scratch of `C` values) serve the f64 fallback.
fn certified_argmax(
    base: &[f64],
    logits: &[f32],
    norm: f64,
    bound: f64,
    r: &[f64],
    w: &Array2<f64>,
    l64: &mut [f64],
) -> usize {
    for (o, &v) in l64.iter_mut().zip(logits) {
        *o = f64::from(v);
    }
    let best = argmin_combination(base, -1.0, l64, -1.0);
    let top = base[best] + l64[best];
    let second = max_sum_excluding(base, l64, best);
    let margin = 2.0 * bound * norm + 4.0 * f64::EPSILON * top.abs().max(second.abs());
    if top - second > margin {
        return best;
    }
    // Not certified: the logits in f64.
    for (o, wc) in l64.iter_mut().zip(w.rows()) {
        *o = wc.iter().zip(r).map(|(a, b)| a * b).sum();
    }
    argmin_combination(base, -1.0, l64, -1.0)
}

/// One blocked pass over the data: the NC1 sum of `‖Pᵀ(h − m_y)‖²`, the per-class scatter
/// about the reference means, and the NC4 mismatches. Blocks run on all cores; partial sums are
/// reduced in block order so the result does not depend on the thread count.
///
/// Per block of rows: residuals `r = h − m_y` (f64), then one product `Z = R·[Q | Wᵀ]`, from
/// which
/// * NC1: `Σ_{k<K} z_k² / s_k⁴`;
/// * nearest class mean: `argmin_c ‖h − μ_c‖² = argmin_c (‖μ_c‖² − 2 μ_y·μ_c − 2 Σ_k V_ck z_k)`
///   (terms constant in `c` dropped; the `C × C` mixing is a second, small product);
/// * classifier: `argmax_c (r·w_c + μ_y·w_c + b_c)`; from [`F32_LOGITS_MIN_CLASSES`]
///   classes on, `r·Wᵀ` is a separate f32 product whose argmax is certified, or recomputed in
///   f64 (see [`F32Logits`]), and `Z = R·Q`.
///
/// While a group's product runs, the next group's rows are prefetched into L2, so that the
/// memory traffic of the residuals overlaps the arithmetic.
///
/// Working on residuals rather than on `h` keeps NC1 and the scatter free of cancellation
/// when the features are nearly collapsed.
pub(crate) fn blocked_pass<T: Copy + Into<f64> + Sync>(
    x: ArrayView2<'_, T>,
    labels: &[u32],
    geo: &Geometry,
    classifier: Option<&Classifier>,
    pred: Option<&[u32]>,
) -> PassResult {
    let classes = geo.means.nrows();
    let dim = geo.means.ncols();
    let nc4_wanted = classifier.is_some() || pred.is_some();
    if nc4_wanted && uses_tiled_nc4(geo.route, classes) && geo.route == Nc1Route::Classes {
        let (mut pass, nearest, net) = ncc_pass(x, labels, geo, classifier);
        let other = match net {
            Some(net) => net,
            None => pred.expect("nc4_wanted").to_vec(),
        };
        pass.nc4_mismatches = Some(count_mismatches(&nearest, &other));
        return pass;
    }
    if nc4_wanted && uses_tiled_nc4(geo.route, classes) {
        let mut pass = blocked_pass(x, labels, geo, None, None);
        pass.nc4_mismatches = Some(crate::tiles::nc4_mismatches(
            x,
            geo.means.view(),
            classifier,
            pred,
        ));
        return pass;
    }
    // Columns of the one product: Q's first `rank` columns suffice for NC1; nearest-class-mean
    // scores need all of them; the classifier adds Wᵀ.
    let q_cols = if nc4_wanted { classes } else { geo.rank };
    if !nc4_wanted && q_cols >= GEMM_PASS_MIN_COLS {
        return gemm_pass(x, labels, geo, q_cols, None, None).0;
    }
    if !nc4_wanted && q_cols <= PROJECTED_MAX_COLS {
        if let Some(pass) = projected_pass(x, labels, geo) {
            return pass;
        }
    }
    // The classifier's logits: in the one f64 product for few classes, where they fit the
    // padding of its last register; certified f32 products beyond (see `F32Logits`).
    let f32_logits = classifier
        .filter(|_| classes >= F32_LOGITS_MIN_CLASSES)
        .map(|clf| F32Logits::new(&clf.w));
    let w_cols = if f32_logits.is_none() {
        classifier.map_or(0, |_| classes)
    } else {
        0
    };
    let cols = q_cols + w_cols;
    let mut rhs = Array2::<f64>::zeros((dim, cols));
    rhs.slice_mut(s![.., ..q_cols])
        .assign(&geo.q.slice(s![.., ..q_cols]));
    // Per (label y, class c): ‖μ_c‖² − 2 μ_y·μ_c, and μ_y·w_c + b_c (C × C: only for NC4,
    // and only below TILED_NC4_MIN_CLASSES).
    let ncc_base = if nc4_wanted {
        let gram = crate::linalg::gram(geo.means.view());
        Array2::from_shape_fn((classes, classes), |(y, c)| {
            gram[[c, c]] - 2.0 * gram[[y, c]]
        })
    } else {
        Array2::zeros((0, 0))
    };
    let logit_base = classifier.map(|clf| {
        if w_cols > 0 {
            rhs.slice_mut(s![.., q_cols..]).assign(&clf.w.t());
        }
        (crate::linalg::matmul(geo.means.view(), clf.w.t()).expect("C × d times d × C") + &clf.b)
            .as_standard_layout()
            .into_owned()
    });
    fn row_of(m: &Array2<f64>, y: usize) -> &[f64] {
        &m.as_slice().expect("standard layout")[y * m.ncols()..(y + 1) * m.ncols()]
    }
    let means = geo.means.as_slice().expect("standard layout");
    let rhs = PackedRhs::new(rhs.as_slice().expect("standard layout"), dim, cols, cols);
    let mix = nc4_wanted.then(|| {
        let v_t = geo.v_t.as_ref().expect("classes route (checked above)");
        let v_t = v_t.as_slice().expect("standard layout");
        PackedRhs::new(v_t, classes, classes, classes)
    });
    let (zs, ts) = (rhs.z_stride(), mix.as_ref().map_or(0, PackedRhs::z_stride));
    let ls = f32_logits.as_ref().map_or(0, |f| f.packed.z_stride());
    let weights = &geo.nc1_weights;

    let partials = map_row_blocks_with(
        labels.len(),
        BLOCK_ROWS,
        PassScratch::<T>::new,
        |buf, start, end| {
            let rows = end - start;
            let lb = &labels[start..end];
            let xb = row_major(x.slice_move(s![start..end, ..]), &mut buf.rows);
            let mut scatter = vec![0.0f64; classes];
            // Residual rows padded by 8 values so that rows 4 KiB apart do not alias in L1.
            let r_stride = dim + 8;
            buf.resid.resize(SUB_ROWS * r_stride, 0.0);
            buf.z.resize(SUB_ROWS * zs, 0.0);
            buf.t.resize(SUB_ROWS * ts, 0.0);
            if f32_logits.is_some() {
                buf.resid32.resize(SUB_ROWS * r_stride, 0.0);
                buf.norms.resize(SUB_ROWS, 0.0);
                buf.logits32.resize(SUB_ROWS * ls, 0.0);
                buf.logits64.resize(classes, 0.0);
            }
            let (mut nc1, mut mism) = (0.0, 0u64);
            // SUB_ROWS rows at a time: residuals (in L2), then Z = R·[Q | Wᵀ] and T = Z_Q·Vᵀ.
            for g0 in (0..rows).step_by(SUB_ROWS) {
                let g = SUB_ROWS.min(rows - g0);
                for i in 0..g {
                    let sq = residuals(
                        &mut buf.resid[i * r_stride..i * r_stride + dim],
                        if f32_logits.is_some() {
                            &mut buf.resid32[i * r_stride..i * r_stride + dim]
                        } else {
                            &mut []
                        },
                        &xb[(g0 + i) * dim..(g0 + i + 1) * dim],
                        &lb[g0 + i..g0 + i + 1],
                        means,
                        dim,
                        &mut scatter,
                    );
                    if f32_logits.is_some() {
                        buf.norms[i] = sq.sqrt();
                    }
                }
                let padded = g.div_ceil(MR) * MR;
                buf.resid[g * r_stride..padded * r_stride].fill(0.0);
                // Meanwhile, fetch the rows of the next group of this block into L2.
                let next = (g0 + g) * dim..(g0 + g + SUB_ROWS).min(rows) * dim;
                let ahead = &xb[next];
                rhs.matmul_prefetch(
                    &mut buf.z, &buf.resid, r_stride, 1, padded, false, false, ahead,
                );
                if let Some(mix) = &mix {
                    mix.matmul(&mut buf.t, &buf.z, zs, 1, padded, false, false);
                }
                if let Some(f) = &f32_logits {
                    buf.resid32[g * r_stride..padded * r_stride].fill(0.0);
                    f.packed.matmul(
                        &mut buf.logits32,
                        &buf.resid32,
                        r_stride,
                        1,
                        padded,
                        false,
                        false,
                    );
                }
                for i in 0..g {
                    let z = &buf.z[i * zs..(i + 1) * zs];
                    nc1 += weighted_sum_sq(&z[..weights.len()], weights);
                    if !nc4_wanted {
                        continue;
                    }
                    let y = lb[g0 + i] as usize;
                    let t = &buf.t[i * ts..i * ts + classes];
                    // argmin_c (base − 2 t) and argmax_c (base + logits) = argmin_c (−base − logits):
                    // multiplying by ±1 and −2 is exact, so these are the scores themselves.
                    let ncc = argmin_combination(row_of(&ncc_base, y), 1.0, t, -2.0);
                    let net = match (&logit_base, &f32_logits, classifier, pred) {
                        (Some(base), None, _, _) => {
                            let logits = &z[q_cols..q_cols + classes];
                            argmin_combination(row_of(base, y), -1.0, logits, -1.0)
                        }
                        (Some(base), Some(f), Some(clf), _) => certified_argmax(
                            row_of(base, y),
                            &buf.logits32[i * ls..i * ls + classes],
                            buf.norms[i],
                            f.bound,
                            &buf.resid[i * r_stride..i * r_stride + dim],
                            &clf.w,
                            &mut buf.logits64,
                        ),
                        (_, _, _, Some(p)) => p[start + g0 + i] as usize,
                        _ => unreachable!("nc4_wanted"),
                    };
                    mism += u64::from(ncc != net);
                }
            }
            (nc1, mism, scatter)
        },
    );
    PassResult::reduce(partials, classes, nc4_wanted)
}

/// [`blocked_pass`] without NC4 for at most [`PROJECTED_MAX_COLS`] directions (`rank`):
/// per block of [`BLOCK_ROWS`] rows, one sweep of `kernels::projected_residuals` (residual,
/// its square and its `rank` dot products with `Qᵀ`'s rows, no residual buffer and no
/// padding of `Q`'s columns). Same sums as the residuals-then-product route up to the order
/// of the additions; blocks reduced in order. `None` where the kernel does not run (neither
/// AVX-512 nor AVX2 with FMA): the caller then takes that route.
///
/// Measured on the NC1 pass of `scripts/bench-scale` (d = 512, rank 9): the product padded 9
/// columns to 16 and, with the residuals written and read again, took 46 % of the CPU time of
/// `metrics`.
fn projected_pass<T: Copy + Into<f64> + Sync>(
    x: ArrayView2<'_, T>,
    labels: &[u32],
    geo: &Geometry,
) -> Option<PassResult> {
    let (classes, dim) = geo.means.dim();
    let dirs = geo
        .projected
        .get_or_init(|| {
            let k = geo.nc1_weights.len();
            let q_t = geo
                .q
                .slice(s![.., ..k])
                .t()
                .as_standard_layout()
                .into_owned();
            Directions::new(q_t.as_slice()?, &geo.nc1_weights, dim)
        })
        .as_ref()?;
    let means = geo.means.as_slice()?;
    let partials = map_row_blocks_with(labels.len(), BLOCK_ROWS, Vec::new, |buf, start, end| {
        let xb = row_major(x.slice_move(s![start..end, ..]), buf);
        let mut scatter = vec![0.0f64; classes];
        let nc1 = projected_residuals(xb, &labels[start..end], means, dirs, &mut scatter)?;
        Some((nc1, 0u64, scatter))
    });
    let partials = partials.into_iter().collect::<Option<Vec<_>>>()?;
    Some(PassResult::reduce(partials, classes, false))
}

/// From this many columns of `Q` on, the NC1 pass without NC4 ([`gemm_pass`]) runs one `gemm`
/// product per block of rows instead of the packed hand kernel per 96 rows:
/// `scripts/bench-linalg` measured (one thread, f64) 80 GFLOP/s for `gemm` on 1024-row blocks
/// against 53 for the hand kernel on 96-row groups (`k = 2048, n = 999`); at 99 columns the
/// hand kernel is level (71 vs 70) and keeps its L2-resident residuals and prefetching.
const GEMM_PASS_MIN_COLS: usize = 256;

/// [`blocked_pass`] without NC4 for a wide `Q`: per block of [`BLOCK_ROWS`] rows, the f64
/// residuals `R = H − M_y` (`rows × d`, 16 MiB at d = 2,048), `Z = R·Q` in one `gemm` product
/// (`linalg::matmul_into`), and `Σ_k z_k² w_k` per row. Same sums as [`blocked_pass`] (the
/// products differ only by rounding, see `linalg::product`); blocks reduced in order.
///
/// With `ncc` (classes route), `Z` takes all `K` columns of `Q` and also gives each row's
/// nearest class mean ([`NccFromProjection`]), returned in row order.
fn gemm_pass<T: Copy + Into<f64> + Sync>(
    x: ArrayView2<'_, T>,
    labels: &[u32],
    geo: &Geometry,
    q_cols: usize,
    ncc: Option<&NccFromProjection>,
    net: Option<&ClassifierFromProjection>,
) -> (PassResult, Vec<u32>, Vec<u32>) {
    let (classes, dim) = geo.means.dim();
    let means = geo.means.as_slice().expect("standard layout");
    let q_cols = ncc.map_or(q_cols, |n| n.columns().max(q_cols));
    let q_cols = net.map_or(q_cols, |n| n.columns().max(q_cols));
    let q = geo.q.slice(s![.., ..q_cols]);
    let weights = &geo.nc1_weights;
    let partials = map_row_blocks_with(
        labels.len(),
        BLOCK_ROWS,
        || (PassScratch::<T>::new(), NccScratch::default()),
        |(buf, ncc_buf), start, end| {
            let rows = end - start;
            let lb = &labels[start..end];
            let xb = row_major(x.slice_move(s![start..end, ..]), &mut buf.rows);
            let mut scatter = vec![0.0f64; classes];
            buf.resid.resize(rows * dim, 0.0);
            buf.z.resize(rows * q_cols, 0.0);
            buf.norms.resize(rows, 0.0);
            for i in 0..rows {
                let sq = residuals(
                    &mut buf.resid[i * dim..(i + 1) * dim],
                    &mut [],
                    &xb[i * dim..(i + 1) * dim],
                    &lb[i..i + 1],
                    means,
                    dim,
                    &mut scatter,
                );
                buf.norms[i] = sq.sqrt();
            }
            let r = ArrayView2::from_shape((rows, dim), &buf.resid[..rows * dim])
                .expect("rows × d buffer");
            let z = ndarray::ArrayViewMut2::from_shape((rows, q_cols), &mut buf.z[..rows * q_cols])
                .expect("rows × q buffer");
            crate::linalg::matmul_into(z, false, r, q).expect("rows × d times d × q");
            let nc1: f64 = buf.z[..rows * q_cols]
                .chunks_exact(q_cols.max(1))
                .map(|z| weighted_sum_sq(&z[..weights.len()], weights))
                .sum();
            let mut nearest = Vec::new();
            if let Some(ncc) = ncc {
                nearest.reserve(rows);
                ncc.decide(
                    &buf.z[..rows * q_cols],
                    q_cols,
                    &buf.norms[..rows],
                    lb,
                    xb,
                    ncc_buf,
                    &mut nearest,
                );
            }
            let mut decided = Vec::new();
            if let Some(net) = net {
                decided.reserve(rows);
                let _ = net.decide(
                    &buf.z[..rows * q_cols],
                    q_cols,
                    &buf.norms[..rows],
                    lb,
                    xb,
                    ncc_buf,
                    &mut decided,
                );
            }
            (nc1, scatter, nearest, decided)
        },
    );
    let (mut nearest, mut decided) = (Vec::new(), Vec::new());
    let partials = partials
        .into_iter()
        .map(|(nc1, scatter, n, c)| {
            nearest.extend(n);
            decided.extend(c);
            (nc1, 0, scatter)
        })
        .collect();
    (
        PassResult::reduce(partials, classes, false),
        nearest,
        decided,
    )
}

/// The NC1 pass with NC4 for many classes on the classes route: NC1, the nearest class means
/// and (with a classifier) its decisions from one pass ([`gemm_pass`] with
/// [`NccFromProjection`] and [`ClassifierFromProjection`]); without one, the caller compares
/// the nearest class means with stored predictions.
fn ncc_pass<T: Copy + Into<f64> + Sync>(
    x: ArrayView2<'_, T>,
    labels: &[u32],
    geo: &Geometry,
    classifier: Option<&Classifier>,
) -> (PassResult, Vec<u32>, Option<Vec<u32>>) {
    let ncc = geo.ncc.get_or_init(|| {
        let v_t = geo.v_t.as_ref().expect("classes route");
        NccFromProjection::new(
            geo.means.view(),
            geo.centered.view(),
            geo.q.view(),
            v_t.view(),
        )
    });
    // The first `rank` columns of Q̂: the others' σ_k are rounding noise, whose 1/σ_k² would
    // make A's coefficients (and the bound) huge.
    let q = geo.q.slice(s![.., ..geo.rank]);
    let net = classifier.map(|clf| ClassifierFromProjection::new(geo.means.view(), q, clf));
    let (pass, nearest, decided) = gemm_pass(x, labels, geo, geo.rank, Some(ncc), net.as_ref());
    (pass, nearest, net.map(|_| decided))
}

/// Rows whose nearest class mean differs from the other decision.
fn count_mismatches(nearest: &[u32], other: &[u32]) -> u64 {
    nearest.iter().zip(other).filter(|(a, b)| a != b).count() as u64
}

/// `Tr Σ_W / Tr Σ_B` with `Σ_W` about the reference means (`scatter[c] = Σ_{y_i=c} ‖h_i − m_c‖²`)
/// and `Σ_B` of the reference means.
pub(crate) fn trace_ratio(scatter: &[f64], n: usize, reference: &ClassStats, g: GlobalMean) -> f64 {
    let tr_w: f64 = scatter.iter().sum::<f64>() / n as f64;
    let centered = reference.centered_means(g);
    let tr_b = centered.iter().map(|v| v * v).sum::<f64>() / reference.classes() as f64;
    tr_w / tr_b
}

/// `CDNV_p` = mean over pairs `c < c'` of `(σ²_c + σ²_c') / (2 (‖m_c − m_c'‖²)^p)`, with
/// `σ²_c = scatter[c] / n_c` about the reference means `m_c` (`p = 1`: Galanti et al.'s CDNV;
/// see [`crate::generalized`]). The naive double loop, used up to `PAIRWISE_TILED_MIN_CLASSES`.
fn cdnv_p(scatter: &[f64], counts: &[u64], reference: &ClassStats, p: f64) -> Result<f64> {
    let var: Vec<f64> = scatter
        .iter()
        .zip(counts)
        .map(|(&s, &n)| s / n as f64)
        .collect();
    let m = reference.means();
    let c = reference.classes();
    let mut sum = 0.0;
    for a in 0..c {
        for b in a + 1..c {
            let d2: f64 = m
                .row(a)
                .iter()
                .zip(m.row(b).iter())
                .map(|(x, y)| (x - y) * (x - y))
                .sum();
            if d2 == 0.0 {
                return Err(MetricError::CoincidentMeans { a, b });
            }
            sum += (var[a] + var[b]) / (2.0 * if p == 1.0 { d2 } else { d2.powf(p) });
        }
    }
    Ok(sum / (c * (c - 1) / 2) as f64)
}

/// Fails with [`CheckError::NonFiniteEntry`](crate::check::CheckError::NonFiniteEntry) naming the first NaN or infinite entry of `m`.
fn check_finite_entries(m: ArrayView2<'_, f64>, what: &str) -> Result<()> {
    Ok(crate::check::check_finite_entries(m, what)?)
}

/// Unbiased (n−1) standard deviation.
fn std_unbiased(v: &[f64]) -> f64 {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// NC2 of the `C` rows of `v` (centred class means, or classifier rows).
///
/// ```text
/// equinorm       = std_c ‖v_c‖ / mean_c ‖v_c‖                       (unbiased std)
/// equiangularity = std_{c<c'} cos(v_c, v_c')                         (unbiased std)
/// max_angle      = mean_{c<c'} |cos(v_c, v_c') + 1/(C−1)|
/// etf_distance   = ‖G/‖G‖_F − (I − 11ᵀ/C)/√(C−1)‖_F,   G = V Vᵀ
/// ```
///
/// All four are 0 for the vertices of a centred simplex equiangular tight frame. With `C = 2`
/// there is one pair, whose cosines have no unbiased standard deviation: `equiangularity` is
/// then `NaN` (undefined, not 0; `null` in JSON).
///
/// # Errors
/// [`MetricError::TooFewClasses`] for fewer than 2 rows; [`CheckError::NonFiniteEntry`](crate::check::CheckError::NonFiniteEntry) for a
/// NaN or infinite entry; [`MetricError::ZeroNorm`] if a row (naming it, with `what`) or the
/// Gram matrix is zero.
pub fn nc2_of_rows(v: ArrayView2<'_, f64>, what: &str) -> Result<Nc2> {
    let c = v.nrows();
    if c < 2 {
        return Err(MetricError::TooFewClasses { classes: c });
    }
    check_finite_entries(v, what)?;
    let gram = crate::linalg::gram(v);
    let norms: Vec<f64> = (0..c).map(|i| gram[[i, i]].sqrt()).collect();
    if let Some(i) = norms.iter().position(|&n| n == 0.0) {
        return Err(MetricError::ZeroNorm {
            what: format!("{what} {i}"),
        });
    }
    let mean_norm = norms.iter().sum::<f64>() / c as f64;
    let equinorm = std_unbiased(&norms) / mean_norm;
    let mut cos = Vec::with_capacity(c * (c - 1) / 2);
    for a in 0..c {
        for b in a + 1..c {
            cos.push(gram[[a, b]] / (norms[a] * norms[b]));
        }
    }
    // One pair (C = 2): the unbiased std of a single cosine is undefined (torch.std gives NaN).
    let equiangularity = if cos.len() > 1 {
        std_unbiased(&cos)
    } else {
        f64::NAN
    };
    let shift = 1.0 / (c as f64 - 1.0);
    let max_angle = cos.iter().map(|x| (x + shift).abs()).sum::<f64>() / cos.len() as f64;
    let fro = gram.iter().map(|x| x * x).sum::<f64>().sqrt();
    let scale = 1.0 / (c as f64 - 1.0).sqrt();
    let mut dist2 = 0.0;
    for a in 0..c {
        for b in 0..c {
            let etf = (if a == b { 1.0 } else { 0.0 } - 1.0 / c as f64) * scale;
            let d = gram[[a, b]] / fro - etf;
            dist2 += d * d;
        }
    }
    Ok(Nc2 {
        equinorm,
        equiangularity,
        max_angle,
        etf_distance: dist2.sqrt(),
    })
}

/// NC3 = `‖Wᵀ/‖W‖_F − Ṁ/‖Ṁ‖_F‖²_F`, with `w` the `C × d` classifier and `centered` the `C × d`
/// centred class means (the transpose of `Ṁ`). 0 when the classifier is self-dual to the means;
/// at most 4.
///
/// # Errors
/// [`MetricError::StatsMismatch`] if the shapes differ (classes and dimensions of `w`, then of
/// `centered`), [`CheckError::NonFiniteEntry`](crate::check::CheckError::NonFiniteEntry) for a NaN or infinite entry,
/// [`MetricError::ZeroNorm`] if either matrix is zero.
pub fn nc3_of(w: ArrayView2<'_, f64>, centered: ArrayView2<'_, f64>) -> Result<f64> {
    if w.dim() != centered.dim() {
        return Err(MetricError::StatsMismatch {
            classes: (w.nrows(), centered.nrows()),
            dims: (w.ncols(), centered.ncols()),
        });
    }
    check_finite_entries(w, "classifier W")?;
    check_finite_entries(centered, "centred class means")?;
    let fw = w.iter().map(|x| x * x).sum::<f64>().sqrt();
    let fm = centered.iter().map(|x| x * x).sum::<f64>().sqrt();
    if fw == 0.0 {
        return Err(MetricError::ZeroNorm {
            what: "classifier W".into(),
        });
    }
    if fm == 0.0 {
        return Err(MetricError::ZeroNorm {
            what: "centred class means Ṁ".into(),
        });
    }
    Ok(w.iter()
        .zip(centered.iter())
        .map(|(a, b)| {
            let d = a / fw - b / fm;
            d * d
        })
        .sum())
}

/// NC1 in its projected form, `(1/N) Σ_i ‖Ṁ† (h_i − μ_{y_i})‖²`, against the given reference
/// statistics (pass the split's own statistics for `Reference::Own`).
///
/// Cost `O(N·d·K)` time and `O(d·C)` memory; never forms a `d × d` matrix.
///
/// # Errors
/// As [`NcParams::measure`].
pub fn nc1<T: Copy + Into<f64> + Sync>(
    x: ArrayView2<'_, T>,
    labels: &[u32],
    reference: &ClassStats,
    global_mean: GlobalMean,
    tolerance: f64,
) -> Result<Nc1> {
    check_tolerance(tolerance)?;
    validate_shapes(&x, labels, reference.classes(), reference.dim())?;
    reference.require_all_classes()?;
    if labels.is_empty() {
        return Err(MetricError::Check(CheckError::Empty {
            rows: 0,
            dim: x.ncols(),
        }));
    }
    let geo = Geometry::new(reference, global_mean, tolerance)?;
    let pass = blocked_pass(x, labels, &geo, None, None);
    // A NaN or infinite value makes the sums non-finite: only then scan to name it.
    if !pass.nc1_sum.is_finite() || pass.scatter.iter().any(|v| !v.is_finite()) {
        validate_batch(&x, labels, reference.classes(), reference.dim())?;
    }
    Ok(Nc1 {
        value: pass.nc1_sum / labels.len() as f64,
        rank: geo.rank,
    })
}

/// NC1 in its explicit form, `Tr(Σ_W Σ_B†)/C`, forming the `d × d` matrices `Σ_W` and `Σ_B` and
/// taking `Σ_B†` from a symmetric eigendecomposition (linfa-linalg), keeping eigenvalues
/// `λ > tolerance · λ_max`, at most `C − 1`. An independent cross-check of [`nc1`]: same value,
/// different algorithm. `O(N·d² + d³)` time and `O(d²)` memory.
///
/// # Errors
/// As [`nc1`].
pub fn nc1_explicit<T: Copy + Into<f64>>(
    x: ArrayView2<'_, T>,
    labels: &[u32],
    reference: &ClassStats,
    global_mean: GlobalMean,
    tolerance: f64,
) -> Result<Nc1> {
    use linfa_linalg::eigh::Eigh;
    check_tolerance(tolerance)?;
    validate_batch(&x, labels, reference.classes(), reference.dim())?;
    reference.require_all_classes()?;
    let (n, d) = x.dim();
    if n == 0 {
        return Err(MetricError::Check(CheckError::Empty { rows: 0, dim: d }));
    }
    let c = reference.classes();
    let means = reference.means();
    // O(d²) memory: an impossible d is an error, not an abort.
    let too_large = || MetricError::TooLargeCovariance { dim: d };
    let mut probe: Vec<f64> = Vec::new();
    probe
        .try_reserve_exact(d.checked_mul(d).ok_or_else(too_large)?)
        .map_err(|_| too_large())?;
    drop(probe);
    let mut sigma_w = Array2::<f64>::zeros((d, d));
    for start in (0..n).step_by(BLOCK_ROWS) {
        let end = (start + BLOCK_ROWS).min(n);
        let mut r: Array2<f64> = x.slice(s![start..end, ..]).mapv(|v| v.into());
        for (mut row, &y) in r.outer_iter_mut().zip(&labels[start..end]) {
            row -= &means.row(y as usize);
        }
        crate::linalg::matmul_into(sigma_w.view_mut(), true, r.t(), r.view())
            .expect("d × b times b × d into d × d");
    }
    sigma_w /= n as f64;
    let centered = reference.centered_means(global_mean);
    let sigma_b = crate::linalg::gram(centered.t()) / c as f64;
    let (vals, vecs) = sigma_b
        .eigh()
        .map_err(|_| MetricError::DegenerateMeans { tolerance })?;
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
    let lmax = vals[order[0]];
    let kept: Vec<usize> = order
        .into_iter()
        .take(c - 1)
        .take_while(|&k| vals[k] > 0.0 && vals[k] > tolerance * lmax && (1.0 / vals[k]).is_finite())
        .collect();
    if kept.is_empty() {
        return Err(MetricError::DegenerateMeans { tolerance });
    }
    // Tr(Σ_W Σ_B†) = Σ_k v_kᵀ Σ_W v_k / λ_k
    let mut trace = 0.0;
    for &k in &kept {
        let v = vecs.column(k);
        trace += v.dot(&sigma_w.dot(&v)) / vals[k];
    }
    Ok(Nc1 {
        value: trace / c as f64,
        rank: kept.len(),
    })
}

/// Options of [`measure_scan`](crate::stream::measure_scan): filters and conventions. `Default` measures every checkpoint
/// with each split's own means, class-mean `μ_G` and [`DEFAULT_TOLERANCE`]
/// ([`NcConfig::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MeasureOptions {
    /// Only this checkpoint.
    pub epoch: Option<u32>,
    /// Only this split.
    pub split: Option<String>,
    /// Own or train means (test collapse; [`ReferenceChoice::Train`]: each split against the
    /// train split of its epoch), global-mean convention, tolerance of `Σ_B†`.
    pub config: NcConfig,
    /// A `classifier.parquet` (epoch, class, bias, w) for NC2 of `W`, NC3 and NC4.
    pub classifier: Option<std::path::PathBuf>,
    /// Label column the classes are taken from: the fine `label` (default) or the `coarse`
    /// labels a network was trained on (NC of the source task, see [`Features::relabel`]).
    pub labels: crate::features::LabelColumn,
    /// Measure only the classes with at least this many samples
    /// ([`NcParams::min_class_samples`]); `None` (the default) is strict: an empty class is an
    /// error. With [`ReferenceChoice::Train`] the train split's labels must still be below its
    /// number of rows (the reference is built for classes `0..=max label`).
    pub min_class_samples: Option<usize>,
    /// The side NC1's pseudo-inverse is decomposed from ([`NcParams::nc1_route`]).
    pub nc1_route: Nc1Route,
    /// GNC2, the NC3 variants and the CDNV exponent ([`NcParams::generalized`]).
    pub generalized: GeneralizedParams,
}

impl Default for MeasureOptions {
    fn default() -> Self {
        Self {
            epoch: None,
            split: None,
            config: NcConfig::default(),
            classifier: None,
            labels: crate::features::LabelColumn::Label,
            min_class_samples: None,
            nc1_route: Nc1Route::Auto,
            generalized: GeneralizedParams::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifier_from_the_nc1_product_equals_naive_with_near_ties() {
        // `tiles::ClassifierFromProjection` against the plain f64 argmax and the tiled route
        // (`tiles::classifier_decisions`), row by row, for two classifiers: one with a part
        // outside the span of the means (`e_c`, bounded, not computed), one inside it (so that
        // the f32 product's error is the bound's main term). Rows: noisy ones (decided by the
        // f32 scores); ones moved so that the classifier's two best scores differ by a relative
        // 1e-9 (far above f64 rounding, below the f32 margin: the f64 rule decides them); and,
        // for the first classifier, ones far out of the span where the part of `w` the scores
        // do not see decides (the f64 rule again).
        use rand::{rngs::StdRng, Rng, SeedableRng};
        use rand_distr::StandardNormal;
        let (c, d) = (40usize, 400usize);
        let mut rng = StdRng::seed_from_u64(51);
        let mut normal = move |s: f64| s * rng.sample::<f64, _>(StandardNormal);
        let means = Array2::from_shape_fn((c, d), |_| normal(1.0));
        let x0 = ndarray::concatenate![ndarray::Axis(0), means.view(), means.view()];
        let y0: Vec<u32> = (0..2 * c as u32).map(|i| i % c as u32).collect();
        let stats = ClassStats::from_data(x0.view(), &y0).unwrap();
        let geo =
            Geometry::with_route(&stats, GlobalMean::ClassMeans, 1e-12, Nc1Route::Classes).unwrap();
        let q = geo.q.slice(s![.., ..geo.rank]);
        // The part of v outside the span of Q̂'s columns (nearly orthogonal).
        let outside = |v: &mut Vec<f64>| {
            for qk in q.columns() {
                let f = qk.iter().zip(v.iter()).map(|(a, b)| a * b).sum::<f64>() / qk.dot(&qk);
                for (vj, qj) in v.iter_mut().zip(qk) {
                    *vj -= f * qj;
                }
            }
        };
        let noise = Array2::from_shape_fn((c, d), |_| normal(0.1));
        // Inside the span: the centred means (the span holds μ_c − g, not g) plus noise there.
        let g = means.mean_axis(ndarray::Axis(0)).unwrap();
        let mut inside_w = &means - &g;
        for (mut w, n) in inside_w.rows_mut().into_iter().zip(noise.rows()) {
            let mut out = n.to_vec();
            outside(&mut out);
            for j in 0..d {
                w[j] += n[j] - out[j];
            }
        }
        let b = ndarray::Array1::from_shape_fn(c, |_| normal(0.5));
        let classifiers_inside = inside_w.clone();
        let classifiers = [
            Classifier {
                w: &means + &noise,
                b: b.clone(),
            },
            Classifier {
                w: inside_w,
                b: b.clone(),
            },
            // Unrelated to the means, as at initialisation: most rows are left open.
            Classifier {
                w: Array2::from_shape_fn((c, d), |_| normal(1.0)),
                b: b.clone(),
            },
            // Even classes inside the span, odd ones with a part outside: a row pushed out of
            // the span towards another class is then seen by one side of the separation
            // test's remainder terms only (`δ_y ≈ 0` or `δ_b ≈ 0`).
            Classifier {
                w: Array2::from_shape_fn((c, d), |(k, j)| {
                    if k % 2 == 0 {
                        classifiers_inside[[k, j]]
                    } else {
                        means[[k, j]] + noise[[k, j]]
                    }
                }),
                b,
            },
        ];
        for (which, clf) in classifiers.iter().enumerate() {
            let net = ClassifierFromProjection::new(geo.means.view(), q, clf);
            let score = |h: &[f64], k: usize| {
                clf.w.row(k).iter().zip(h).map(|(a, b)| a * b).sum::<f64>() + clf.b[k]
            };
            let best_but = |h: &[f64], not: usize| {
                (0..c)
                    .filter(|&k| k != not)
                    .max_by(|&k, &l| score(h, k).total_cmp(&score(h, l)).then(l.cmp(&k)))
                    .unwrap()
            };
            let kinds = if which == 0 || which == 3 { 3 } else { 2 };
            let mut rows: Vec<f64> = Vec::new();
            let mut labels: Vec<u32> = Vec::new();
            for i in 0..100 * kinds {
                let y = i % c;
                let mut h: Vec<f64> = means.row(y).iter().map(|v| v + normal(0.6)).collect();
                if i % kinds == 1 {
                    // Move h along w_a − w_b (a, b its two best classes) until their scores
                    // differ by ±1e-9 of the best score's size.
                    let a = best_but(&h, c);
                    let b = best_but(&h, a);
                    let v: Vec<f64> = (0..d).map(|j| clf.w[[a, j]] - clf.w[[b, j]]).collect();
                    let gap = score(&h, a) - score(&h, b);
                    let t = if (i / kinds) % 2 == 0 { 1e-9 } else { -1e-9 } * score(&h, a).abs();
                    let vv: f64 = v.iter().map(|x| x * x).sum();
                    for j in 0..d {
                        h[j] -= (gap - t) / vv * v[j];
                    }
                } else if i % kinds == 2 {
                    // h = μ_y + s u, u the unit part of w_b − w_y outside the span of the means
                    // (b the classifier's second best at μ_y), s such that b wins by 1e-3 of
                    // the scores' size: the scores seen through z (≈ 0 here) say y, widely.
                    let m: Vec<f64> = means.row(y).to_vec();
                    let b = best_but(&m, y);
                    let mut u: Vec<f64> = (0..d).map(|j| clf.w[[b, j]] - clf.w[[y, j]]).collect();
                    outside(&mut u);
                    let un = u.iter().map(|v| v * v).sum::<f64>().sqrt();
                    let gap = score(&m, y) - score(&m, b);
                    let s = (gap + 1e-3 * score(&m, y).abs()) / un;
                    h = (0..d).map(|j| m[j] + s * u[j] / un).collect();
                }
                rows.extend(h);
                labels.push(y as u32);
            }
            let n = labels.len();
            let x = Array2::from_shape_vec((n, d), rows).unwrap();
            let resid = Array2::from_shape_fn((n, d), |(i, j)| {
                x[[i, j]] - geo.means[[labels[i] as usize, j]]
            });
            let norms: Vec<f64> = resid.rows().into_iter().map(|r| r.dot(&r).sqrt()).collect();
            let z = crate::linalg::matmul(resid.view(), q).unwrap();
            let (mut got, mut buf) = (Vec::new(), NccScratch::default());
            let tally = net.decide(
                z.as_slice().unwrap(),
                geo.rank,
                &norms,
                &labels,
                x.as_slice().unwrap(),
                &mut buf,
                &mut got,
            );
            let want: Vec<u32> = x
                .rows()
                .into_iter()
                .map(|h| best_but(h.as_slice().unwrap(), c) as u32)
                .collect();
            let tiled = crate::tiles::classifier_decisions(x.view(), geo.means.view(), clf);
            assert_eq!(got, want, "classifier {which}");
            assert_eq!(tiled, want, "classifier {which}");
            // Both ways of deciding were used: the near ties and the rows far outside the span
            // are left open (to the tiled route), (nearly) all noisy rows decided by the scores
            // through z; with the unrelated classifier, most rows are left open.
            // The noisy rows (100) near their own mean: decided by the separation test when
            // the classifier is near the means, not when it is unrelated to them.
            // A near tie that the row's own class wins may also be decided by the separation
            // test's refinement (the f64 scores of the few classes its Cauchy–Schwarz bound
            // cannot rule out): the special rows that it must leave open are those whose
            // decision is another class.
            let open = tally.open;
            let special = 100 * (kinds - 1);
            let must_open = (0..n)
                .filter(|&i| i % kinds != 0 && want[i] != labels[i])
                .count();
            if which != 2 {
                assert!(
                    must_open >= 40 && (must_open..=special + 10).contains(&open),
                    "classifier {which}: {open} of {n} left open ({must_open} must be)"
                );
                assert!(tally.separated >= 90, "classifier {which}: {tally:?}");
            } else {
                assert!(open > n / 2, "classifier {which}: {open} of {n} left open");
                assert!(tally.separated < 10, "classifier {which}: {tally:?}");
            }
            // The rows outside the span go to b, not to their label (which the scores through
            // z alone would give); the near ties go either way.
            assert!((0..n)
                .filter(|&i| i % kinds == 2)
                .all(|i| want[i] != labels[i]));
            let near: Vec<usize> = (0..n).filter(|&i| i % kinds == 1).collect();
            let moved = near.iter().filter(|&&i| want[i] != labels[i]).count();
            assert!(
                moved > 0 && moved < near.len(),
                "classifier {which}: {moved}"
            );
        }
    }

    /// The separation test of the NC4 pass (`tiles::NccFromProjection`) never decides a row
    /// whose nearest class mean (naive f64 distances) is not its own, and does decide rows near
    /// their mean whose whole residual is too long for it: only the part in the span of the
    /// means counts. `d = 400 ≫ C = 40`; means `N(0, I)` (`‖μ_c − μ_y‖ ≈ 28`).
    #[test]
    fn separation_test_is_sound_and_sees_only_the_span_of_the_means() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        use rand_distr::StandardNormal;
        let (c, d) = (40usize, 400usize);
        let mut rng = StdRng::seed_from_u64(41);
        let mut normal = move || rng.sample::<f64, _>(StandardNormal);
        let means = Array2::from_shape_fn((c, d), |_| normal());
        // Two rows per class exactly at the mean make the stats' means `means` (up to rounding).
        let x0 = ndarray::concatenate![ndarray::Axis(0), means.view(), means.view()];
        let y0: Vec<u32> = (0..2 * c as u32).map(|i| i % c as u32).collect();
        let stats = ClassStats::from_data(x0.view(), &y0).unwrap();
        let geo =
            Geometry::with_route(&stats, GlobalMean::ClassMeans, 1e-12, Nc1Route::Classes).unwrap();
        let v_t = geo.v_t.as_ref().unwrap();
        let ncc = NccFromProjection::new(
            geo.means.view(),
            geo.centered.view(),
            geo.q.view(),
            v_t.view(),
        );
        let m = geo.means.view();
        let nearest = |h: &[f64]| {
            (0..c)
                .map(|k| (0..d).map(|j| (h[j] - m[[k, j]]).powi(2)).sum::<f64>())
                .enumerate()
                .fold(
                    (0, f64::INFINITY),
                    |b, (k, v)| if v < b.1 { (k, v) } else { b },
                )
                .0
        };
        let decide = |h: Vec<f64>, y: usize| {
            let r: Vec<f64> = h.iter().zip(m.row(y)).map(|(a, b)| a - b).collect();
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            let r = Array2::from_shape_vec((1, d), r).unwrap();
            let z = crate::linalg::matmul(r.view(), geo.q.view()).unwrap();
            let passed = ncc.separated(z.as_slice().unwrap(), norm, y);
            (passed, nearest(&h))
        };
        let mut rng = StdRng::seed_from_u64(42);
        let mut noise = move |s: f64| s * rng.sample::<f64, _>(StandardNormal);
        // Isotropic noise of norm ≈ 20 (twice it is above the distance from μ_y to every other
        // mean, so `‖r‖` could not show any of these rows separated), of which ≈ 6.2 lies in
        // the span of the means: every such row passes.
        for i in 0..400 {
            let y = i % c;
            let h: Vec<f64> = m.row(y).iter().map(|v| v + noise(1.0)).collect();
            let r_norm = h
                .iter()
                .zip(m.row(y))
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                .sqrt();
            let far = (0..c)
                .map(|k| {
                    (0..d)
                        .map(|j| (m[[k, j]] - m[[y, j]]).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
                .fold(0.0f64, f64::max);
            assert!(2.0 * r_norm > far, "{r_norm} vs {far}");
            assert_eq!(decide(h, y), (true, y), "row {i}");
        }
        // Rows on the segment to another mean, h = μ_y + t (μ_k − μ_y) + small noise: past the
        // midpoint (t > 0.5) the nearest mean is k and the test must not pass; well before it
        // (t ≤ 0.3) it passes.
        let (mut passed_before, mut rows_before) = (0, 0);
        for i in 0..800 {
            let y = i % c;
            let k = (y + 1 + i % (c - 1)) % c;
            let t = 0.05 + 0.9 * (i as f64 / 800.0);
            let h: Vec<f64> = (0..d)
                .map(|j| m[[y, j]] + t * (m[[k, j]] - m[[y, j]]) + noise(0.01))
                .collect();
            let (passed, near) = decide(h, y);
            if passed {
                assert_eq!(near, y, "row {i}, t = {t}");
            }
            if t > 0.5 {
                assert!(!passed && near != y, "row {i}, t = {t}");
            }
            if t <= 0.3 {
                rows_before += 1;
                passed_before += usize::from(passed);
            }
        }
        assert!(
            passed_before == rows_before,
            "{passed_before} of {rows_before}"
        );
    }

    /// The sequential definition that `argmin_combination` computes in lanes: first index on
    /// ties, NaN skipped, 0 when nothing beats the start value.
    fn argmin_seq(v: &[f64]) -> usize {
        let (mut best, mut best_v) = (0, f64::INFINITY);
        for (i, &x) in v.iter().enumerate() {
            if x < best_v {
                best_v = x;
                best = i;
            }
        }
        best
    }

    #[test]
    fn lane_argmin_argmax_equal_the_sequential_scan() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [1usize, 2, 7, 8, 9, 16, 17, 100, 103] {
            for _ in 0..200 {
                // Few distinct values, so that ties are frequent; some NaN and ±∞.
                let v: Vec<f64> = (0..len)
                    .map(|_| match next() % 13 {
                        0 => f64::NAN,
                        1 => f64::INFINITY,
                        2 => f64::NEG_INFINITY,
                        r => (r % 4) as f64 - 1.5,
                    })
                    .collect();
                let zero = vec![0.0; len];
                let neg: Vec<f64> = v.iter().map(|x| -x).collect();
                assert_eq!(
                    argmin_combination(&v, 1.0, &zero, 1.0),
                    argmin_seq(&v),
                    "{v:?}"
                );
                assert_eq!(
                    argmin_combination(&v, -1.0, &zero, 1.0),
                    argmin_seq(&neg),
                    "{v:?}"
                );
                // Both terms, each at its own index.
                let ramp: Vec<f64> = (0..len).map(|c| c as f64 * 1e-3).collect();
                let want: Vec<f64> = v.iter().zip(&ramp).map(|(x, r)| x - 2.0 * r).collect();
                assert_eq!(argmin_combination(&v, 1.0, &ramp, -2.0), argmin_seq(&want));
            }
        }
        assert_eq!(argmin_combination(&[], 1.0, &[], 1.0), 0);
    }
}
