//! One configuration and typed names: the conventions a measurement is made under
//! ([`NcConfig`]: which class means, which global mean, which tolerance) and the names of the
//! metrics the crate reports ([`Metric`]).
//!
//! A leaf module: it imports nothing from the crate, so every other module (metrics, streaming,
//! partials, plots, the CLI) can use it. With the cargo feature `cli` (on by default) the enums a
//! command-line flag takes derive `clap::ValueEnum`, so the CLI parses straight into them (the
//! variants' doc comments are not used as CLI help: `help = None` keeps `--help` compact); the
//! notebooks build the library without it.
//!
//! # Conventions
//!
//! ```text
//! reference    own    μ_c, μ_G, Ṁ of the measured split                     (default)
//!              train  μ_c, μ_G, Ṁ of the train split of the same checkpoint (test collapse)
//! global mean  class  μ_G = (1/C) Σ_c μ_c                                     (default; Papyan et al.)
//!              sample μ_G = (1/N) Σ_c n_c μ_c
//! tolerance    Σ_B† keeps the eigen-directions with λ > tolerance · λ_max (at most C − 1),
//!              default 1e-12 (singular values of Ṁ above 1e-6 · s_max)
//! ```
//!
//! The formulas of the metrics are in [`crate::metrics`] and [`crate::generalized`];
//! [`Metric::label`] repeats each one in the short form the figures print.
//!
//! ```
//! use neural_collapse::config::{Metric, NcConfig, ReferenceChoice};
//!
//! let config = NcConfig { reference: ReferenceChoice::Train, ..NcConfig::default() };
//! assert_eq!(config.reference.name(), "train");
//! let m: Metric = "nc2_etf_distance_w".parse()?;
//! assert_eq!(m, Metric::Nc2EtfDistanceW);
//! assert_eq!(m.label(), "NC2 ETF distance of W = ‖G/‖G‖_F − ETF‖_F");
//! assert!("nc5".parse::<Metric>().unwrap_err().to_string().contains("\"nc5\""));
//! # Ok::<(), neural_collapse::config::ParseNameError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default relative tolerance on the eigenvalues of `Σ_B` kept by the pseudo-inverse
/// (an eigenvalue `λ` is kept when `λ > DEFAULT_TOLERANCE · λ_max`; equivalently singular values
/// of `Ṁ` above `1e-6 · s_max`).
pub const DEFAULT_TOLERANCE: f64 = 1e-12;

/// A name that is not one of a type's names ([`Metric`], [`ReferenceChoice`], [`GlobalMean`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {what} {value:?}: expected one of {expected}")]
pub struct ParseNameError {
    /// What was parsed (`"metric"`, `"reference"`, `"global mean"`).
    pub what: &'static str,
    /// The value given.
    pub value: String,
    /// The accepted names, comma-separated.
    pub expected: String,
}

fn parse_name<T: Copy>(
    what: &'static str,
    value: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, ParseNameError> {
    all.iter()
        .copied()
        .find(|&t| name(t) == value)
        .ok_or_else(|| ParseNameError {
            what,
            value: value.to_string(),
            expected: all.iter().map(|&t| name(t)).collect::<Vec<_>>().join(", "),
        })
}

/// Which class means each split is measured against (test collapse).
///
/// With [`NcParams`](crate::metrics::NcParams) on one matrix, `Train` needs the train split's
/// statistics ([`Reference::Train`](crate::metrics::Reference::Train)); over a feature file
/// ([`measure_scan`](crate::stream::measure_scan)) they are the train split of the same epoch.
/// Named (CLI, JSON, partial files) `"own"` and `"train"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ReferenceChoice {
    /// Each split's own class means.
    #[default]
    #[cfg_attr(feature = "cli", value(help = None::<&str>))]
    Own,
    /// The train split's class means of the same epoch (for the train split itself, its own).
    #[cfg_attr(feature = "cli", value(help = None::<&str>))]
    Train,
}

impl ReferenceChoice {
    /// Every choice.
    pub const ALL: [ReferenceChoice; 2] = [ReferenceChoice::Own, ReferenceChoice::Train];

    /// `"own"` or `"train"`.
    pub fn name(self) -> &'static str {
        match self {
            ReferenceChoice::Own => "own",
            ReferenceChoice::Train => "train",
        }
    }
}

impl fmt::Display for ReferenceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for ReferenceChoice {
    type Err = ParseNameError;

    /// `"own"` or `"train"`.
    fn from_str(s: &str) -> Result<Self, ParseNameError> {
        parse_name("reference", s, &Self::ALL, Self::name)
    }
}

/// How the global mean `μ_G` is formed from the class means.
///
/// ```text
/// ClassMeans     μ_G = (1/C) Σ_c μ_c            (default; Papyan, Han & Donoho 2020)
/// SampleWeighted μ_G = (1/N) Σ_c n_c μ_c        (the sample mean of all features)
/// ```
///
/// The two agree when classes are balanced. With imbalanced classes `ClassMeans` keeps the
/// between-class covariance `Σ_B = (1/C) Σ_c (μ_c − μ_G)(μ_c − μ_G)ᵀ` of rank ≤ C − 1 exactly.
///
/// Named `"class"` and `"sample"` (CLI `--global-mean`, [`Display`](fmt::Display), `FromStr`);
/// serialised (partial files) as `"class_means"` and `"sample_weighted"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum GlobalMean {
    /// Mean of the class means (default).
    #[default]
    #[cfg_attr(feature = "cli", value(name = "class", help = None::<&str>))]
    ClassMeans,
    /// Sample-weighted mean: the mean of all samples.
    #[cfg_attr(feature = "cli", value(name = "sample", help = None::<&str>))]
    SampleWeighted,
}

impl GlobalMean {
    /// Both conventions.
    pub const ALL: [GlobalMean; 2] = [GlobalMean::ClassMeans, GlobalMean::SampleWeighted];

    /// `"class"` or `"sample"`.
    pub fn name(self) -> &'static str {
        match self {
            GlobalMean::ClassMeans => "class",
            GlobalMean::SampleWeighted => "sample",
        }
    }
}

impl fmt::Display for GlobalMean {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for GlobalMean {
    type Err = ParseNameError;

    /// `"class"` or `"sample"`.
    fn from_str(s: &str) -> Result<Self, ParseNameError> {
        parse_name("global mean", s, &Self::ALL, Self::name)
    }
}

/// The conventions of a measurement: which class means, which global mean, which tolerance.
///
/// One value shared by [`NcParams`](crate::metrics::NcParams) (through its setters or
/// [`config`](crate::metrics::NcParams::config)), [`MeasureOptions`](crate::metrics::MeasureOptions)
/// and the CLI's `--reference`, `--global-mean` and `--tolerance`. `Default` is Papyan's: own
/// means, class-mean `μ_G`, [`DEFAULT_TOLERANCE`]. The tolerance is checked (finite, in
/// `[0, 1)`) when a measurement runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NcConfig {
    /// Own or train means (test collapse).
    pub reference: ReferenceChoice,
    /// Global-mean convention.
    pub global_mean: GlobalMean,
    /// Relative eigenvalue tolerance of `Σ_B†`.
    pub tolerance: f64,
}

impl Default for NcConfig {
    fn default() -> Self {
        Self {
            reference: ReferenceChoice::Own,
            global_mean: GlobalMean::ClassMeans,
            tolerance: DEFAULT_TOLERANCE,
        }
    }
}

/// A metric the crate reports, in [`NcReport`](crate::metrics::NcReport)s (and their JSON,
/// tidy frames and tables) or in probe tables, with its name and the label its figures print.
///
/// [`name`](Self::name) is the key of the JSON output and of the tidy frames' `metric` column
/// (`nc1`, `nc2_equinorm_w`, …); [`label`](Self::label) the axis label with the formula
/// (`NC1 = Tr(Σ_W Σ_B†)/C`); [`short`](Self::short) the name in titles (`NC1`). The `_w`
/// metrics are the NC2 quantities of the classifier rows `w_c` (uncentred). `FromStr` parses a
/// name; [`ALL`](Self::ALL) lists every metric in report order.
///
/// Not here: the probe tables' per-class accuracies `accuracy_class_<label>` and the probe
/// `penalty` (names with a parameter, or not a metric); the figures take any name as a string
/// and print unknown ones unchanged ([`metric_label`](crate::plot::metric_label)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// `nc1`: `Tr(Σ_W Σ_B†)/C`.
    Nc1,
    /// `nc1_trace_ratio`: `Tr Σ_W / Tr Σ_B`.
    Nc1TraceRatio,
    /// `cdnv`: class-distance normalised variance (Galanti et al. 2021).
    Cdnv,
    /// `nc2_equinorm`: `std ‖μ_c − μ_G‖ / mean ‖μ_c − μ_G‖`.
    Nc2Equinorm,
    /// `nc2_equiangularity`: std of the pairwise cosines of the centred means.
    Nc2Equiangularity,
    /// `nc2_max_angle`: mean `|cos + 1/(C−1)|` of the centred means.
    Nc2MaxAngle,
    /// `nc2_etf_distance`: distance of the centred means' normalised Gram to the simplex ETF.
    Nc2EtfDistance,
    /// `nc2_equinorm_w`: equinorm of the classifier rows.
    Nc2EquinormW,
    /// `nc2_equiangularity_w`: equiangularity of the classifier rows.
    Nc2EquiangularityW,
    /// `nc2_max_angle_w`: max-angle of the classifier rows.
    Nc2MaxAngleW,
    /// `nc2_etf_distance_w`: ETF distance of the classifier rows.
    Nc2EtfDistanceW,
    /// `nc3`: `‖Wᵀ/‖W‖_F − Ṁ/‖Ṁ‖_F‖²_F`.
    Nc3,
    /// `nc4`: disagreement of the classifier and the nearest-class-mean rule.
    Nc4,
    /// `gnc2_log`: GNC2 logarithmic energy of the mean directions.
    Gnc2Log,
    /// `gnc2_riesz`: GNC2 Riesz-s energy of the mean directions.
    Gnc2Riesz,
    /// `nc3_per_class`: self-duality per class.
    Nc3PerClass,
    /// `nc3_etf_wm`: ETF error of `WṀᵀ`.
    Nc3EtfWm,
    /// `accuracy`: a probe's accuracy (probe tables).
    Accuracy,
    /// `error`: an error rate (1 − accuracy).
    Error,
}

impl Metric {
    /// Every metric, in the order of [`NcReport::metrics`](crate::metrics::NcReport::metrics),
    /// then the probe metrics.
    pub const ALL: [Metric; 19] = [
        Metric::Nc1,
        Metric::Nc1TraceRatio,
        Metric::Cdnv,
        Metric::Nc2Equinorm,
        Metric::Nc2Equiangularity,
        Metric::Nc2MaxAngle,
        Metric::Nc2EtfDistance,
        Metric::Nc2EquinormW,
        Metric::Nc2EquiangularityW,
        Metric::Nc2MaxAngleW,
        Metric::Nc2EtfDistanceW,
        Metric::Nc3,
        Metric::Nc4,
        Metric::Gnc2Log,
        Metric::Gnc2Riesz,
        Metric::Nc3PerClass,
        Metric::Nc3EtfWm,
        Metric::Accuracy,
        Metric::Error,
    ];

    /// The key in JSON output and tidy frames: `nc1`, `nc2_equinorm_w`, `gnc2_log`, `accuracy`, …
    pub fn name(self) -> &'static str {
        match self {
            Metric::Nc1 => "nc1",
            Metric::Nc1TraceRatio => "nc1_trace_ratio",
            Metric::Cdnv => "cdnv",
            Metric::Nc2Equinorm => "nc2_equinorm",
            Metric::Nc2Equiangularity => "nc2_equiangularity",
            Metric::Nc2MaxAngle => "nc2_max_angle",
            Metric::Nc2EtfDistance => "nc2_etf_distance",
            Metric::Nc2EquinormW => "nc2_equinorm_w",
            Metric::Nc2EquiangularityW => "nc2_equiangularity_w",
            Metric::Nc2MaxAngleW => "nc2_max_angle_w",
            Metric::Nc2EtfDistanceW => "nc2_etf_distance_w",
            Metric::Nc3 => "nc3",
            Metric::Nc4 => "nc4",
            Metric::Gnc2Log => "gnc2_log",
            Metric::Gnc2Riesz => "gnc2_riesz",
            Metric::Nc3PerClass => "nc3_per_class",
            Metric::Nc3EtfWm => "nc3_etf_wm",
            Metric::Accuracy => "accuracy",
            Metric::Error => "error",
        }
    }

    /// The axis label: the short name with its formula, e.g. `NC1 = Tr(Σ_W Σ_B†)/C`.
    ///
    /// `G` is the Gram matrix of the vectors, `ETF` the simplex ETF `(I − 11ᵀ/C)/√(C−1)`, `û_c`
    /// the direction of `μ_c − μ_G`, `M` (`Ṁ`) the centred means.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Nc1 => "NC1 = Tr(Σ_W Σ_B†)/C",
            Metric::Nc1TraceRatio => "NC1 trace ratio = Tr Σ_W / Tr Σ_B",
            Metric::Cdnv => "CDNV = mean (σ²_c + σ²_c′) / (2‖μ_c − μ_c′‖²)",
            Metric::Nc2Equinorm => "NC2 equinorm = std ‖μ_c − μ_G‖ / mean ‖μ_c − μ_G‖",
            Metric::Nc2Equiangularity => "NC2 equiangularity = std cos(μ_c − μ_G, μ_c′ − μ_G)",
            Metric::Nc2MaxAngle => "NC2 max-angle = mean |cos(μ_c − μ_G, μ_c′ − μ_G) + 1/(C−1)|",
            Metric::Nc2EtfDistance => "NC2 ETF distance = ‖G/‖G‖_F − ETF‖_F",
            Metric::Nc2EquinormW => "NC2 equinorm = std ‖w_c‖ / mean ‖w_c‖",
            Metric::Nc2EquiangularityW => "NC2 equiangularity = std cos(w_c, w_c′)",
            Metric::Nc2MaxAngleW => "NC2 max-angle = mean |cos(w_c, w_c′) + 1/(C−1)|",
            Metric::Nc2EtfDistanceW => "NC2 ETF distance of W = ‖G/‖G‖_F − ETF‖_F",
            Metric::Nc3 => "NC3 = ‖Wᵀ/‖W‖_F − M/‖M‖_F‖²_F",
            Metric::Nc4 => "NC4 = P(argmax (Wh + b) ≠ nearest class mean)",
            Metric::Gnc2Log => "GNC2 log = mean log(1/‖û_c − û_c′‖)",
            Metric::Gnc2Riesz => "GNC2 Riesz-s = mean ‖û_c − û_c′‖^(−s)",
            Metric::Nc3PerClass => "NC3 per class = mean ‖w_c/‖w_c‖ − û_c‖²",
            Metric::Nc3EtfWm => "NC3 ETF(WṀ) = ‖WṀᵀ/‖WṀᵀ‖_F − ETF‖_F",
            Metric::Accuracy => "probe accuracy",
            Metric::Error => "error rate",
        }
    }

    /// The name in titles: `NC1`, `NC2 equinorm (classifier rows)`, `Probe accuracy`, …
    pub fn short(self) -> &'static str {
        match self {
            Metric::Nc1 => "NC1",
            Metric::Nc1TraceRatio => "NC1 trace ratio",
            Metric::Cdnv => "CDNV",
            Metric::Nc2Equinorm => "NC2 equinorm",
            Metric::Nc2Equiangularity => "NC2 equiangularity",
            Metric::Nc2MaxAngle => "NC2 max-angle",
            Metric::Nc2EtfDistance => "NC2 ETF distance",
            Metric::Nc2EquinormW => "NC2 equinorm (classifier rows)",
            Metric::Nc2EquiangularityW => "NC2 equiangularity (classifier rows)",
            Metric::Nc2MaxAngleW => "NC2 max-angle (classifier rows)",
            Metric::Nc2EtfDistanceW => "NC2 ETF distance (classifier rows)",
            Metric::Nc3 => "NC3",
            Metric::Nc4 => "NC4",
            Metric::Gnc2Log => "GNC2 log",
            Metric::Gnc2Riesz => "GNC2 Riesz-s",
            Metric::Nc3PerClass => "NC3 per class",
            Metric::Nc3EtfWm => "NC3 ETF(WṀ)",
            Metric::Accuracy => "Probe accuracy",
            Metric::Error => "Error rate",
        }
    }
}

impl fmt::Display for Metric {
    /// The [`name`](Metric::name) (padding and alignment honoured).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Metric {
    type Err = ParseNameError;

    /// A [`name`](Metric::name); anything else is an error naming the value and the names.
    fn from_str(s: &str) -> Result<Self, ParseNameError> {
        parse_name("metric", s, &Self::ALL, Self::name)
    }
}

impl From<Metric> for String {
    /// The [`name`](Metric::name), so a figure's `.metric(Metric::Nc1)` reads the `nc1` rows.
    fn from(m: Metric) -> String {
        m.name().to_string()
    }
}

impl AsRef<str> for Metric {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_round_trip_and_are_distinct() {
        let mut names = std::collections::BTreeSet::new();
        let mut labels = std::collections::BTreeSet::new();
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>(), Ok(m));
            assert_eq!(m.to_string(), m.name());
            assert_eq!(String::from(m), m.name());
            assert!(names.insert(m.name()), "{} twice", m.name());
            assert!(labels.insert(m.label()), "{} twice", m.label());
            // A label starts with the title name (case aside), then `=` and the formula.
            assert!(
                m.label().to_lowercase().starts_with(
                    &m.short()
                        .trim_end_matches(" (classifier rows)")
                        .to_lowercase()
                ),
                "{m}: {} / {}",
                m.label(),
                m.short()
            );
        }
        assert_eq!(names.len(), Metric::ALL.len());
        // Pads like a string in tables.
        assert_eq!(format!("[{:<6}]", Metric::Nc1), "[nc1   ]");
    }

    #[test]
    fn bad_names_are_errors_naming_the_value() {
        for bad in ["NC1", "nc1 ", "", "nc2_equinorm_W", "accuracy_class_3"] {
            let e = bad.parse::<Metric>().unwrap_err();
            assert_eq!(e.value, bad);
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("unknown metric {bad:?}")),
                "{text}"
            );
            assert!(text.contains("nc1, nc1_trace_ratio, cdnv"), "{text}");
        }
        let e = "test".parse::<ReferenceChoice>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown reference \"test\": expected one of own, train"
        );
        let e = "class_means".parse::<GlobalMean>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown global mean \"class_means\": expected one of class, sample"
        );
    }

    #[test]
    fn conventions_round_trip_through_their_names_and_serde() {
        for r in ReferenceChoice::ALL {
            assert_eq!(r.name().parse::<ReferenceChoice>(), Ok(r));
            // The on-disk / JSON string is the name.
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.name())
            );
        }
        for g in GlobalMean::ALL {
            assert_eq!(g.name().parse::<GlobalMean>(), Ok(g));
        }
        // The partial files' spelling of the global mean (format version 1) is unchanged.
        assert_eq!(
            serde_json::to_string(&GlobalMean::ClassMeans).unwrap(),
            "\"class_means\""
        );
        assert_eq!(
            serde_json::to_string(&GlobalMean::SampleWeighted).unwrap(),
            "\"sample_weighted\""
        );
        let c = NcConfig::default();
        assert_eq!(
            (c.reference, c.global_mean, c.tolerance),
            (ReferenceChoice::Own, GlobalMean::ClassMeans, 1e-12)
        );
    }

    #[cfg(feature = "cli")]
    #[test]
    fn cli_value_names_are_the_names() {
        use clap::ValueEnum;
        for r in ReferenceChoice::ALL {
            assert_eq!(r.to_possible_value().unwrap().get_name(), r.name());
        }
        for g in GlobalMean::ALL {
            assert_eq!(g.to_possible_value().unwrap().get_name(), g.name());
        }
    }
}
