//! Reports as tidy ("long") polars `DataFrame`s: one row per report and metric, the one path
//! from results to figures ([`plot`](crate::plot) reads these frames, see
//! [`TidySource`](crate::plot::TidySource)) and to tables in Jupyter
//! ([`display::table`](crate::display::table)).
//!
//! The methods are [`NcReport::to_tidy`], [`NcReport::to_tidy_many`], [`ProbeReport::to_tidy`]
//! and [`ProbeReport::to_tidy_many`]: defined here, above the metrics and probes, so that those
//! modules know nothing of frames built for display.

use polars::prelude::{Column, DataFrame};

use crate::features::FeatureError;
use crate::metrics::NcReport;
use crate::probe::ProbeReport;

/// Builds a tidy `DataFrame` from its columns; `what` names the table in the error.
///
/// # Errors
/// [`FeatureError::Polars`] if polars rejects the columns (e.g. different lengths).
pub(crate) fn tidy_frame(columns: Vec<Column>, what: &str) -> Result<DataFrame, FeatureError> {
    DataFrame::new(columns).map_err(|e| FeatureError::Polars {
        path: format!("<{what}>"),
        message: e.to_string(),
    })
}

impl NcReport {
    /// Long ("tidy") table of several reports: columns `epoch` (u32, null when unknown),
    /// `split`, `layer` (str), `metric` (str), `value` (f64); one row per report and metric.
    ///
    /// # Errors
    /// Only if polars fails to build the frame.
    pub fn to_tidy_many(reports: &[NcReport]) -> Result<DataFrame, FeatureError> {
        let (mut epoch, mut split, mut layer, mut metric, mut value) =
            (vec![], vec![], vec![], vec![], vec![]);
        for r in reports {
            for (k, v) in r.metrics() {
                epoch.push(r.epoch);
                split.push(r.split.clone());
                layer.push(r.layer.clone());
                metric.push(k.name());
                value.push(v);
            }
        }
        tidy_frame(
            vec![
                Column::new("epoch".into(), epoch),
                Column::new("split".into(), split),
                Column::new("layer".into(), layer),
                Column::new("metric".into(), metric),
                Column::new("value".into(), value),
            ],
            "tidy report",
        )
    }

    /// This report as a tidy `DataFrame` (see [`to_tidy_many`](Self::to_tidy_many)).
    ///
    /// # Errors
    /// Only if polars fails to build the frame.
    pub fn to_tidy(&self) -> Result<DataFrame, FeatureError> {
        Self::to_tidy_many(std::slice::from_ref(self))
    }
}

impl ProbeReport {
    /// Long ("tidy") table of several reports: columns `epoch` (u32, null when unknown),
    /// `layer` (str), `probe` (str, `"<kind>/<label column>"`, e.g. `"least-squares/label"`),
    /// `split` (`"train"` or `"test"`), `metric` (str) and `value` (f64). Metrics: `accuracy`
    /// (both splits), `accuracy_class_<label>` (test split) and `penalty` (the `λ` used, on
    /// the train split where it was chosen).
    ///
    /// # Errors
    /// Only if polars fails to build the frame.
    pub fn to_tidy_many(reports: &[ProbeReport]) -> Result<DataFrame, FeatureError> {
        let (mut epoch, mut layer, mut probe, mut split, mut metric, mut value) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for r in reports {
            let name = format!("{}/{}", r.kind, r.label);
            for (sp, m, v) in r.tidy_rows() {
                epoch.push(r.epoch);
                layer.push(r.layer.clone());
                probe.push(name.clone());
                split.push(sp);
                metric.push(m);
                value.push(v);
            }
        }
        tidy_frame(
            vec![
                Column::new("epoch".into(), epoch),
                Column::new("layer".into(), layer),
                Column::new("probe".into(), probe),
                Column::new("split".into(), split),
                Column::new("metric".into(), metric),
                Column::new("value".into(), value),
            ],
            "tidy probe report",
        )
    }

    /// This report as a tidy `DataFrame` (see [`to_tidy_many`](Self::to_tidy_many)).
    ///
    /// # Errors
    /// Only if polars fails to build the frame.
    pub fn to_tidy(&self) -> Result<DataFrame, FeatureError> {
        Self::to_tidy_many(std::slice::from_ref(self))
    }
}
