//! [`SmallMultiples`]: several metrics against epochs on one canvas.

use super::axes::{EpochAxis, Scale};
use super::epoch::{epoch_option_setters, epoch_panel, EpochOptions};
use super::error::PlotError;
use super::figure::{figure_option_setters, Figure, FigureOptions};
use super::labels::{metric_label, metric_short};
use super::scene::{Panel, Scene};
use super::tidy::{select, split_order, with_filters, Groups, TidyRow, TidySource};
use crate::config::Metric;

/// Several metrics against epochs, one panel each, on one canvas with a shared legend (same
/// colours and dashes in every panel).
///
/// ```
/// use neural_collapse::prelude::*;
/// use polars::prelude::*;
///
/// let tidy = df!("epoch" => [0u32, 5, 0, 5], "split" => ["train"; 4],
///                "metric" => ["nc1", "nc1", "nc4", "nc4"], "value" => [1.0, 0.1, 0.2, 0.0])?;
/// let fig = SmallMultiples::nc_overview(&tidy).draw()?; // NC4 = 0 → linear axis (Scale::Auto)
/// assert!(fig.svg().contains("NC4"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SmallMultiples {
    rows: Result<Vec<TidyRow>, PlotError>,
    metrics: Vec<String>,
    scales: Vec<(String, Scale)>,
    default_scale: Scale,
    columns: usize,
    figure: FigureOptions,
    opts: EpochOptions,
}

impl SmallMultiples {
    /// Panels for `nc1` only until [`metrics`](Self::metrics) is set.
    pub fn new<T: TidySource + ?Sized>(data: &T) -> Self {
        SmallMultiples {
            rows: data.tidy_rows(),
            metrics: vec![Metric::Nc1.into()],
            scales: vec![],
            default_scale: Scale::Log,
            columns: 2,
            figure: FigureOptions::default(),
            opts: EpochOptions::default(),
        }
    }

    /// NC1, NC2 (ETF distance of the means), NC3 and NC4 — those of them present in the data —
    /// with [`Scale::Auto`] for NC4 (a mismatch fraction, often exactly 0) and log axes for the
    /// others.
    pub fn nc_overview<T: TidySource + ?Sized>(data: &T) -> Self {
        let mut g = SmallMultiples::new(data);
        let wanted = [
            Metric::Nc1,
            Metric::Nc2EtfDistance,
            Metric::Nc3,
            Metric::Nc4,
        ];
        let present: Vec<String> = match &g.rows {
            Ok(rows) => wanted
                .iter()
                .filter(|m| rows.iter().any(|r| r.metric == m.name()))
                .map(|m| m.name().to_string())
                .collect(),
            Err(_) => vec![],
        };
        g.metrics = if present.is_empty() {
            vec![Metric::Nc1.into()]
        } else {
            present
        };
        g.scales.push((Metric::Nc4.into(), Scale::Auto));
        g.figure.title = Some("Neural Collapse vs epoch".into());
        g
    }

    /// The metrics, one panel each, in this order.
    pub fn metrics<S: AsRef<str>>(mut self, metrics: &[S]) -> Self {
        self.metrics = metrics.iter().map(|m| m.as_ref().to_string()).collect();
        self
    }

    /// The y scale of one metric's panel.
    pub fn scale_for(mut self, metric: impl Into<String>, scale: Scale) -> Self {
        let metric = metric.into();
        self.scales.retain(|(m, _)| *m != metric);
        self.scales.push((metric, scale));
        self
    }

    /// The y scale of every panel without its own (default [`Scale::Log`]).
    pub fn scale(mut self, scale: Scale) -> Self {
        self.default_scale = scale;
        self
    }

    /// Panels per row (default 2).
    pub fn columns(mut self, columns: usize) -> Self {
        self.columns = columns;
        self
    }

    figure_option_setters!(
        "The title.",
        "Figure size (default: 440 × 310 per panel plus title and legend)."
    );

    epoch_option_setters!(
        "The x axis of every panel (default [`EpochAxis::Auto`], decided on all panels' epochs).",
        "A vertical line at `epoch` in every panel."
    );

    /// Draws the figure.
    ///
    /// # Errors
    /// [`PlotError::Invalid`] for no metrics or 0 columns; otherwise as [`EpochPlot::draw`](super::EpochPlot::draw), for
    /// the first panel that fails.
    pub fn draw(&self) -> Result<Figure, PlotError> {
        let rows = self.rows.as_ref().map_err(Clone::clone)?;
        if self.metrics.is_empty() || self.columns == 0 {
            return Err(PlotError::Invalid(
                "small multiples need at least one metric and one column".into(),
            ));
        }
        // Shared groups, splits and epochs over every panel's rows.
        let mut all: Vec<&TidyRow> = Vec::new();
        for m in &self.metrics {
            all.extend(select(rows, m, &self.opts.filters)?);
        }
        let groups = Groups::of(&all);
        let splits = split_order(all.iter().map(|r| &r.split));
        let epochs: Vec<u32> = all.iter().filter_map(|r| r.epoch).collect();
        let mut opts = self.opts.clone();
        opts.x_axis = self.opts.x_axis.resolve(&epochs);
        let mut panels = Vec::new();
        let mut legend = Vec::new();
        for m in &self.metrics {
            let scale = self
                .scales
                .iter()
                .find(|(k, _)| k == m)
                .map_or(self.default_scale, |(_, s)| *s);
            let (mut panel, l) = epoch_panel(
                rows,
                m,
                scale,
                metric_short(m),
                &opts,
                Some((&groups, &splits, &epochs)),
            )?;
            panel.title = Some(metric_label(m));
            panels.push(Panel::Xy(panel));
            if legend.is_empty() {
                legend = l;
            }
        }
        let cols = self.columns.min(panels.len());
        let nrows = panels.len().div_ceil(cols);
        let legend_w = if legend.is_empty() { 0 } else { 190 };
        let size = self
            .figure
            .size_or((440 * cols as u32 + legend_w, 310 * nrows as u32 + 50))?;
        let title = self
            .figure
            .title
            .clone()
            .unwrap_or_else(|| "Metrics vs epoch".into());
        Figure::render(Scene {
            title: with_filters(title, &self.opts.filters),
            subtitle: vec![],
            width: size.0,
            height: size.1,
            panels,
            columns: cols,
            legend,
        })
    }
}
