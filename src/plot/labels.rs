//! Metric names for axes and titles: the [`Metric`] of a name, else the name itself.

use crate::config::Metric;

/// The axis label of a metric: its name with its formula, e.g. `NC1 = Tr(Σ_W Σ_B†)/C` for
/// `nc1` ([`Metric::label`]; names as in [`NcReport::metrics`](crate::metrics::NcReport::metrics),
/// `accuracy` for probes). Unknown names are returned unchanged.
///
/// ```
/// assert_eq!(neural_collapse::plot::metric_label("nc1"), "NC1 = Tr(Σ_W Σ_B†)/C");
/// assert_eq!(neural_collapse::plot::metric_label("my_metric"), "my_metric");
/// ```
pub fn metric_label(metric: &str) -> String {
    metric
        .parse::<Metric>()
        .map_or_else(|_| metric.to_string(), |m| m.label().to_string())
}

/// A short name for titles ([`Metric::short`]): `NC1`, `NC2 equinorm (classifier rows)`,
/// `Probe accuracy`, …; unknown names unchanged.
pub(super) fn metric_short(metric: &str) -> String {
    metric
        .parse::<Metric>()
        .map_or_else(|_| metric.to_string(), |m| m.short().to_string())
}
