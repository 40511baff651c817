//! Tidy input: tables and reports read as [`TidyRow`]s, and the row selection, grouping and
//! checks the builders share.

use polars::prelude::{DataFrame, DataType};

use crate::metrics::NcReport;
use crate::probe::ProbeReport;

use super::error::{draw_err, PlotError};

/// One row of a tidy table: a metric's value at one (run, epoch, layer, probe, split).
#[derive(Debug, Clone, PartialEq)]
pub struct TidyRow {
    /// Run name (the `run` column), when present.
    pub run: Option<String>,
    /// Checkpoint.
    pub epoch: Option<u32>,
    /// Layer.
    pub layer: Option<String>,
    /// Probe (`"<kind>/<label column>"`), for probe tables.
    pub probe: Option<String>,
    /// Split (`train`, `test`).
    pub split: Option<String>,
    /// Metric name (`nc1`, `accuracy`, …).
    pub metric: String,
    /// Value.
    pub value: f64,
    /// An interval around the value `(lo, hi)` (e.g. a 95 % interval over seeds), drawn as a
    /// shaded band by [`EpochPlot`](super::EpochPlot); from the optional `lo` and `hi` columns of a table.
    pub band: Option<(f64, f64)>,
}

/// Anything the figures can read as tidy rows: a polars `DataFrame` with columns `metric` (str)
/// and `value` (numeric) and any of `run`, `epoch` (integer), `layer`, `probe`, `split`, and
/// the band columns `lo` and `hi` (numeric, both or neither); or the crate's reports. Rows whose
/// `value` is null are skipped.
pub trait TidySource {
    /// The rows.
    ///
    /// # Errors
    /// [`PlotError::MissingColumn`] / [`PlotError::ColumnType`] for a table that does not fit.
    fn tidy_rows(&self) -> Result<Vec<TidyRow>, PlotError>;
}

impl TidySource for DataFrame {
    fn tidy_rows(&self) -> Result<Vec<TidyRow>, PlotError> {
        let available = || {
            self.get_column_names()
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let missing = |column: &str| PlotError::MissingColumn {
            column: column.into(),
            available: available(),
        };
        let n = self.height();
        let strings = |name: &str| -> Result<Option<Vec<Option<String>>>, PlotError> {
            let Ok(c) = self.column(name) else {
                return Ok(None);
            };
            let bad = || PlotError::ColumnType {
                column: name.into(),
                dtype: c.dtype().to_string(),
                expected: "strings",
            };
            let c = c.cast(&DataType::String).map_err(|_| bad())?;
            let ca = c.str().map_err(|_| bad())?;
            Ok(Some(
                ca.into_iter().map(|v| v.map(str::to_string)).collect(),
            ))
        };
        let metric = strings("metric")?.ok_or_else(|| missing("metric"))?;
        let run = strings("run")?;
        let layer = strings("layer")?;
        let probe = strings("probe")?;
        let split = strings("split")?;
        let value_col = self.column("value").map_err(|_| missing("value"))?;
        if !value_col.dtype().is_primitive_numeric() {
            return Err(PlotError::ColumnType {
                column: "value".into(),
                dtype: value_col.dtype().to_string(),
                expected: "numbers",
            });
        }
        let value = value_col
            .cast(&DataType::Float64)
            .map_err(draw_err)?
            .f64()
            .map_err(draw_err)?
            .into_iter()
            .collect::<Vec<_>>();
        let numbers = |name: &str| -> Result<Option<Vec<Option<f64>>>, PlotError> {
            let Ok(c) = self.column(name) else {
                return Ok(None);
            };
            if !c.dtype().is_primitive_numeric() {
                return Err(PlotError::ColumnType {
                    column: name.into(),
                    dtype: c.dtype().to_string(),
                    expected: "numbers",
                });
            }
            Ok(Some(
                c.cast(&DataType::Float64)
                    .map_err(draw_err)?
                    .f64()
                    .map_err(draw_err)?
                    .into_iter()
                    .collect(),
            ))
        };
        let (lo, hi) = (numbers("lo")?, numbers("hi")?);
        let epoch: Option<Vec<Option<u32>>> = match self.column("epoch") {
            Err(_) => None,
            Ok(c) => {
                let bad = || PlotError::ColumnType {
                    column: "epoch".into(),
                    dtype: c.dtype().to_string(),
                    expected: "non-negative integers",
                };
                if !c.dtype().is_integer() && !c.dtype().is_null() {
                    return Err(bad());
                }
                let c = c.cast(&DataType::Int64).map_err(|_| bad())?;
                let ca = c.i64().map_err(|_| bad())?;
                let mut out = Vec::with_capacity(n);
                for v in ca.into_iter() {
                    out.push(match v {
                        None => None,
                        Some(e) => Some(u32::try_from(e).map_err(|_| bad())?),
                    });
                }
                Some(out)
            }
        };
        let get = |col: &Option<Vec<Option<String>>>, i: usize| -> Option<String> {
            col.as_ref().and_then(|c| c[i].clone())
        };
        let mut rows = Vec::with_capacity(n);
        for i in 0..n {
            let (Some(metric), Some(value)) = (metric[i].clone(), value[i]) else {
                continue;
            };
            rows.push(TidyRow {
                run: get(&run, i),
                epoch: epoch.as_ref().and_then(|e| e[i]),
                layer: get(&layer, i),
                probe: get(&probe, i),
                split: get(&split, i),
                metric,
                value,
                band: match (&lo, &hi) {
                    (Some(l), Some(h)) => match (l[i], h[i]) {
                        (Some(a), Some(b)) if a.is_finite() && b.is_finite() => Some((a, b)),
                        _ => None,
                    },
                    _ => None,
                },
            });
        }
        Ok(rows)
    }
}

impl TidySource for NcReport {
    fn tidy_rows(&self) -> Result<Vec<TidyRow>, PlotError> {
        Ok(self
            .metrics()
            .into_iter()
            .map(|(metric, value)| TidyRow {
                run: None,
                epoch: self.epoch,
                layer: self.layer.clone(),
                probe: None,
                split: self.split.clone(),
                metric: metric.name().to_string(),
                value,
                band: None,
            })
            .collect())
    }
}

impl TidySource for ProbeReport {
    fn tidy_rows(&self) -> Result<Vec<TidyRow>, PlotError> {
        let probe = format!("{}/{}", self.kind, self.label);
        Ok(self
            .tidy_rows()
            .into_iter()
            .map(|(split, metric, value)| TidyRow {
                run: None,
                epoch: self.epoch,
                layer: self.layer.clone(),
                probe: Some(probe.clone()),
                split: Some(split.to_string()),
                metric,
                value,
                band: None,
            })
            .collect())
    }
}

impl TidySource for TidyRow {
    fn tidy_rows(&self) -> Result<Vec<TidyRow>, PlotError> {
        Ok(vec![self.clone()])
    }
}

impl<T: TidySource> TidySource for [T] {
    fn tidy_rows(&self) -> Result<Vec<TidyRow>, PlotError> {
        let mut out = Vec::new();
        for r in self {
            out.extend(r.tidy_rows()?);
        }
        Ok(out)
    }
}

impl<T: TidySource> TidySource for Vec<T> {
    fn tidy_rows(&self) -> Result<Vec<TidyRow>, PlotError> {
        self.as_slice().tidy_rows()
    }
}

/// Row filters shared by the builders.
#[derive(Debug, Clone, Default)]
pub(super) struct Filters {
    pub(super) run: Option<String>,
    pub(super) layer: Option<String>,
    pub(super) split: Option<String>,
    pub(super) probe: Option<String>,
}

impl Filters {
    pub(super) fn keep(&self, r: &TidyRow) -> bool {
        let ok = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        ok(&self.run, &r.run)
            && ok(&self.layer, &r.layer)
            && ok(&self.split, &r.split)
            && ok(&self.probe, &r.probe)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.run {
            parts.push(format!("run {v}"));
        }
        if let Some(v) = &self.layer {
            parts.push(format!("layer {v}"));
        }
        if let Some(v) = &self.split {
            parts.push(format!("{v} split"));
        }
        if let Some(v) = &self.probe {
            parts.push(format!("probe {v}"));
        }
        parts.join(", ")
    }
}

/// Distinct values of a field, in order of first appearance.
pub(super) fn distinct<'a>(
    rows: impl IntoIterator<Item = &'a Option<String>>,
) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = Vec::new();
    for v in rows {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

/// Splits in display order: `train`, `test`, then the others as they appear.
pub(super) fn split_order<'a>(
    rows: impl IntoIterator<Item = &'a Option<String>>,
) -> Vec<Option<String>> {
    let mut splits = distinct(rows);
    let rank = |s: &Option<String>| match s.as_deref() {
        Some("train") => 0,
        Some("test") => 1,
        _ => 2,
    };
    splits.sort_by_key(rank); // stable: others keep their order
    splits
}

pub(super) fn list(values: &[Option<String>]) -> String {
    values
        .iter()
        .map(|v| v.as_deref().unwrap_or("(none)").to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The metrics present in `rows`, for error messages.
fn metrics_available(rows: &[TidyRow]) -> String {
    let names: Vec<Option<String>> = rows.iter().map(|r| Some(r.metric.clone())).collect();
    let m = distinct(&names);
    if m.is_empty() {
        "no rows at all".into()
    } else {
        format!("metrics {}", list(&m))
    }
}

/// Rows of `metric` that pass `filters`, or [`PlotError::NoData`].
pub(super) fn select<'a>(
    rows: &'a [TidyRow],
    metric: &str,
    filters: &Filters,
) -> Result<Vec<&'a TidyRow>, PlotError> {
    let out: Vec<&TidyRow> = rows
        .iter()
        .filter(|r| r.metric == metric && filters.keep(r))
        .collect();
    if out.is_empty() {
        let what = match filters.describe() {
            d if d.is_empty() => format!("metric {metric}"),
            d => format!("metric {metric} ({d})"),
        };
        let of_metric: Vec<&TidyRow> = rows.iter().filter(|r| r.metric == metric).collect();
        let available = if of_metric.is_empty() {
            metrics_available(rows)
        } else {
            format!(
                "for {metric}: runs {}; layers {}; splits {}; probes {}",
                list(&distinct(of_metric.iter().map(|r| &r.run))),
                list(&distinct(of_metric.iter().map(|r| &r.layer))),
                list(&distinct(of_metric.iter().map(|r| &r.split))),
                list(&distinct(of_metric.iter().map(|r| &r.probe))),
            )
        };
        return Err(PlotError::NoData { what, available });
    }
    Ok(out)
}

/// Checks that a value is finite (and positive on a log axis).
pub(super) fn check_value(
    value: f64,
    log: bool,
    metric: &str,
    series: &str,
    at: impl FnOnce() -> String,
) -> Result<(), PlotError> {
    if !value.is_finite() {
        return Err(PlotError::NonFinite {
            metric: metric.into(),
            series: series.into(),
            at: at(),
            value,
        });
    }
    if log && value <= 0.0 {
        return Err(PlotError::NonPositive {
            metric: metric.into(),
            series: series.into(),
            at: at(),
            value,
        });
    }
    Ok(())
}

/// Series keys: which of run / layer / probe vary, and the label of each group.
pub(super) struct Groups {
    pub(super) keys: Vec<(Option<String>, Option<String>, Option<String>)>,
    pub(super) vary: [bool; 3],
}

impl Groups {
    pub(super) fn of(rows: &[&TidyRow]) -> Groups {
        let mut keys = Vec::new();
        for r in rows {
            let k = (r.run.clone(), r.layer.clone(), r.probe.clone());
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let vary = [
            distinct(rows.iter().map(|r| &r.run)).len() > 1,
            distinct(rows.iter().map(|r| &r.layer)).len() > 1,
            distinct(rows.iter().map(|r| &r.probe)).len() > 1,
        ];
        Groups { keys, vary }
    }

    pub(super) fn index(&self, r: &TidyRow) -> usize {
        let k = (r.run.clone(), r.layer.clone(), r.probe.clone());
        self.keys.iter().position(|g| *g == k).unwrap_or(0)
    }

    pub(super) fn label(&self, g: usize) -> String {
        let (run, layer, probe) = &self.keys[g];
        let mut parts = Vec::new();
        if self.vary[0] {
            parts.push(run.clone().unwrap_or_else(|| "(no run)".into()));
        }
        if self.vary[1] {
            parts.push(layer.clone().unwrap_or_else(|| "(no layer)".into()));
        }
        if self.vary[2] {
            parts.push(probe.clone().unwrap_or_else(|| "(no probe)".into()));
        }
        parts.join(" · ")
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }
}

pub(super) fn with_filters(title: String, filters: &Filters) -> String {
    match filters.describe() {
        d if d.is_empty() => title,
        d => format!("{title} — {d}"),
    }
}

/// Layers in first-appearance order, or the explicit order (which also filters).
pub(super) fn layer_order(rows: &[&TidyRow], explicit: &Option<Vec<String>>) -> Vec<String> {
    match explicit {
        Some(l) => l.clone(),
        None => distinct(rows.iter().map(|r| &r.layer))
            .into_iter()
            .flatten()
            .collect(),
    }
}

/// Fails with [`PlotError::Ambiguous`] if the rows have several runs (or probes).
pub(super) fn require_single(rows: &[&TidyRow]) -> Result<(), PlotError> {
    let runs = distinct(rows.iter().map(|r| &r.run));
    if runs.len() > 1 {
        return Err(PlotError::Ambiguous {
            column: "run",
            values: list(&runs),
        });
    }
    let probes = distinct(rows.iter().map(|r| &r.probe));
    if probes.len() > 1 {
        return Err(PlotError::Ambiguous {
            column: "probe",
            values: list(&probes),
        });
    }
    Ok(())
}
