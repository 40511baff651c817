//! [`HeatMap`]: a layer × epoch heat map of one metric.

use super::axes::{linear_ticks, log_ticks, AxisSpec, Scale};
use super::error::PlotError;
use super::figure::{figure_option_setters, Figure, FigureOptions};
use super::labels::{metric_label, metric_short};
use super::scene::{HeatPanel, Panel, Scene};
use super::tidy::{
    check_value, distinct, layer_order, list, require_single, select, split_order, Filters,
    TidyRow, TidySource,
};

/// top, in network order), epochs are columns (sorted, equally wide whatever their spacing);
/// the colour is viridis on a log scale by default, with a colour bar. Cells without a value
/// are light grey.
///
/// ```
/// use neural_collapse::prelude::*;
/// use polars::prelude::*;
///
/// let tidy = df!("epoch" => [0u32, 0, 5, 5], "split" => ["train"; 4],
///                "layer" => ["l1", "l2", "l1", "l2"], "metric" => ["nc1"; 4],
///                "value" => [2.0, 1.0, 0.5, 0.01])?;
/// let fig = HeatMap::new(&tidy).metric("nc1").draw()?;
/// assert!(fig.svg().contains("log scale"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct HeatMap {
    rows: Result<Vec<TidyRow>, PlotError>,
    metric: String,
    filters: Filters,
    layers: Option<Vec<String>>,
    scale: Scale,
    annotate: bool,
    figure: FigureOptions,
}

impl HeatMap {
    /// A heat map of `nc1` (change with [`metric`](Self::metric)).
    pub fn new<T: TidySource + ?Sized>(data: &T) -> Self {
        HeatMap {
            rows: data.tidy_rows(),
            metric: crate::config::Metric::Nc1.into(),
            filters: Filters::default(),
            layers: None,
            scale: Scale::Log,
            annotate: true,
            figure: FigureOptions::default(),
        }
    }

    /// The metric: a value of the `metric` column, or a [`Metric`](crate::config::Metric)
    /// (its name). Default `nc1`.
    pub fn metric(mut self, metric: impl Into<String>) -> Self {
        self.metric = metric.into();
        self
    }

    /// The split (required when the table has several).
    pub fn split(mut self, split: impl Into<String>) -> Self {
        self.filters.split = Some(split.into());
        self
    }

    /// The run (required when the table has several).
    pub fn run(mut self, run: impl Into<String>) -> Self {
        self.filters.run = Some(run.into());
        self
    }

    /// The probe (required when the table has several).
    pub fn probe(mut self, probe: impl Into<String>) -> Self {
        self.filters.probe = Some(probe.into());
        self
    }

    /// The layers (rows), top to bottom (default: all, in order of first appearance).
    pub fn layers<S: AsRef<str>>(mut self, layers: &[S]) -> Self {
        self.layers = Some(layers.iter().map(|l| l.as_ref().to_string()).collect());
        self
    }

    /// The colour scale (default [`Scale::Log`]).
    pub fn scale(mut self, scale: Scale) -> Self {
        self.scale = scale;
        self
    }

    /// Whether to print each value in its cell when cells are large enough (default true).
    pub fn annotate(mut self, yes: bool) -> Self {
        self.annotate = yes;
        self
    }

    figure_option_setters!(
        "The title.",
        "Figure size (default: from the numbers of layers and epochs)."
    );

    /// Draws the figure.
    ///
    /// # Errors
    /// As [`EpochPlot::draw`](super::EpochPlot::draw); [`PlotError::Ambiguous`] for several splits, runs or probes;
    /// [`PlotError::Duplicate`] for two values in one cell.
    pub fn draw(&self) -> Result<Figure, PlotError> {
        let rows = self.rows.as_ref().map_err(Clone::clone)?;
        let selected = select(rows, &self.metric, &self.filters)?;
        require_single(&selected)?;
        let splits = split_order(selected.iter().map(|r| &r.split));
        if splits.len() > 1 {
            return Err(PlotError::Ambiguous {
                column: "split",
                values: list(&splits),
            });
        }
        let layers = layer_order(&selected, &self.layers);
        let mut epochs: Vec<u32> = selected.iter().filter_map(|r| r.epoch).collect();
        epochs.sort_unstable();
        epochs.dedup();
        let log = self.scale.is_log(selected.iter().map(|r| r.value));
        let mut cells = vec![vec![None; epochs.len()]; layers.len()];
        let mut values = Vec::new();
        for r in &selected {
            let Some(layer) = &r.layer else {
                return Err(PlotError::MissingValue {
                    column: "layer",
                    metric: self.metric.clone(),
                    series: r.split.clone().unwrap_or_default(),
                });
            };
            let Some(li) = layers.iter().position(|l| l == layer) else {
                continue;
            };
            let epoch = r.epoch.ok_or_else(|| PlotError::MissingValue {
                column: "epoch",
                metric: self.metric.clone(),
                series: layer.clone(),
            })?;
            let ei = epochs.iter().position(|e| *e == epoch).unwrap_or(0);
            let at = || format!("epoch {epoch}");
            check_value(r.value, log, &self.metric, &format!("layer {layer}"), at)?;
            if cells[li][ei].is_some() {
                return Err(PlotError::Duplicate {
                    metric: self.metric.clone(),
                    series: format!("layer {layer}"),
                    at: at(),
                });
            }
            cells[li][ei] = Some(r.value);
            values.push(r.value);
        }
        if values.is_empty() {
            return Err(PlotError::NoData {
                what: format!("metric {} at layers {}", self.metric, layers.join(", ")),
                available: format!(
                    "layers {}",
                    list(&distinct(selected.iter().map(|r| &r.layer)))
                ),
            });
        }
        let (mut lo, mut hi) =
            values
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    let p = if log { v.log10() } else { v };
                    (a.min(p), b.max(p))
                });
        if hi - lo < 1e-12 {
            let pad = if log { 0.5 } else { 0.5 * hi.abs().max(1.0) };
            lo -= pad;
            hi += pad;
        }
        let (ticks, minor) = if log {
            log_ticks(lo, hi)
        } else {
            (linear_ticks(lo, hi, 5.0), vec![])
        };
        let label = metric_short(&self.metric);
        let bar = AxisSpec {
            label: if log {
                format!("{label} (log scale)")
            } else {
                label
            },
            range: (lo, hi),
            ticks,
            minor,
        };
        let split = splits[0].clone();
        let title = self.figure.title.clone().unwrap_or_else(|| {
            let mut t = format!("{} by layer and epoch", metric_short(&self.metric));
            if let Some(s) = &split {
                t.push_str(&format!(" — {s} split"));
            }
            t
        });
        let size = self.figure.size_or((
            (260 + 56 * epochs.len() as u32).clamp(560, 1400),
            (150 + 34 * layers.len() as u32).clamp(320, 1000),
        ))?;
        Figure::render(Scene {
            title,
            subtitle: vec![metric_label(&self.metric)],
            width: size.0,
            height: size.1,
            panels: vec![Panel::Heat(HeatPanel {
                x_label: "epoch".into(),
                y_label: "layer".into(),
                columns: epochs.iter().map(|e| e.to_string()).collect(),
                rows: layers,
                cells,
                log,
                range: (lo, hi),
                bar,
                annotate: self.annotate,
            })],
            columns: 1,
            legend: vec![],
        })
    }
}
