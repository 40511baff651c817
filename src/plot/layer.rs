//! [`LayerPlot`]: a metric against layers, one line per epoch.

use super::axes::{category_axis, value_axis, Scale};
use super::error::PlotError;
use super::figure::{figure_option_setters, Figure, FigureOptions};
use super::labels::{metric_label, metric_short};
use super::scene::{LegendEntry, Panel, Scene, Series, XyPanel};
use super::style::{split_dash, viridis, Dash, Marker, Style, TEXT};
use super::tidy::{
    check_value, distinct, layer_order, list, require_single, select, split_order, with_filters,
    Filters, TidyRow, TidySource,
};

/// At most `max` epochs, spread evenly on a `log(epoch + 1)` scale, first and last included.
fn spread_epochs(epochs: &[u32], max: usize) -> Vec<u32> {
    if epochs.len() <= max || max < 2 {
        return epochs.iter().copied().take(max.max(1)).collect();
    }
    let pos = |e: u32| (e as f64 + 1.0).ln();
    let (lo, hi) = (pos(epochs[0]), pos(epochs[epochs.len() - 1]));
    let mut out: Vec<u32> = Vec::new();
    for k in 0..max {
        let target = lo + (hi - lo) * k as f64 / (max - 1) as f64;
        let best = epochs
            .iter()
            .copied()
            .filter(|e| !out.contains(e))
            .min_by(|a, b| {
                (pos(*a) - target)
                    .abs()
                    .total_cmp(&(pos(*b) - target).abs())
            });
        if let Some(e) = best {
            out.push(e);
        }
    }
    out.sort_unstable();
    out
}

/// A metric against layers (in network order), one line per epoch coloured by epoch
/// (viridis: dark = early, light = late) and dashed by split; log y by default.
///
/// Layers are taken in the order they first appear (see the [module docs](crate::plot)) or from
/// [`layers`](Self::layers). With more than [`max_epochs`](Self::max_epochs) epochs (default 8),
/// that many are picked evenly on a `log(epoch + 1)` scale, first and last included;
/// [`epochs`](Self::epochs) picks them explicitly.
///
/// ```
/// use neural_collapse::prelude::*;
/// use polars::prelude::*;
///
/// let tidy = df!("epoch" => [0u32, 0, 0, 9, 9, 9], "split" => ["train"; 6],
///                "layer" => ["layer2", "layer10", "fc", "layer2", "layer10", "fc"],
///                "metric" => ["nc1"; 6], "value" => [5.0, 4.0, 3.0, 1.0, 0.1, 0.01])?;
/// let fig = LayerPlot::new(&tidy).draw()?;
/// // Layers keep the table's order: layer2, layer10, fc.
/// let (a, b) = (fig.svg().find("layer2").unwrap(), fig.svg().find("layer10").unwrap());
/// assert!(a < b);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LayerPlot {
    rows: Result<Vec<TidyRow>, PlotError>,
    metric: String,
    filters: Filters,
    layers: Option<Vec<String>>,
    epochs: Option<Vec<u32>>,
    max_epochs: usize,
    scale: Scale,
    figure: FigureOptions,
    y_label: Option<String>,
}

impl LayerPlot {
    /// A plot of `nc1` (change with [`metric`](Self::metric)) from a tidy table or reports.
    pub fn new<T: TidySource + ?Sized>(data: &T) -> Self {
        LayerPlot {
            rows: data.tidy_rows(),
            metric: crate::config::Metric::Nc1.into(),
            filters: Filters::default(),
            layers: None,
            epochs: None,
            max_epochs: 8,
            scale: Scale::Log,
            figure: FigureOptions::default(),
            y_label: None,
        }
    }

    /// The metric: a value of the `metric` column, or a [`Metric`](crate::config::Metric)
    /// (its name). Default `nc1`.
    pub fn metric(mut self, metric: impl Into<String>) -> Self {
        self.metric = metric.into();
        self
    }

    /// Only this split (default: every split, told apart by dash).
    pub fn split(mut self, split: impl Into<String>) -> Self {
        self.filters.split = Some(split.into());
        self
    }

    /// Only this run (required when the table has several).
    pub fn run(mut self, run: impl Into<String>) -> Self {
        self.filters.run = Some(run.into());
        self
    }

    /// Only this probe (required when the table has several).
    pub fn probe(mut self, probe: impl Into<String>) -> Self {
        self.filters.probe = Some(probe.into());
        self
    }

    /// The layers to show, in this order (default: all, in order of first appearance).
    pub fn layers<S: AsRef<str>>(mut self, layers: &[S]) -> Self {
        self.layers = Some(layers.iter().map(|l| l.as_ref().to_string()).collect());
        self
    }

    /// The epochs to show (default: up to [`max_epochs`](Self::max_epochs), spread out).
    pub fn epochs(mut self, epochs: &[u32]) -> Self {
        self.epochs = Some(epochs.to_vec());
        self
    }

    /// At most this many epochs when [`epochs`](Self::epochs) is not set (default 8).
    pub fn max_epochs(mut self, max: usize) -> Self {
        self.max_epochs = max;
        self
    }

    /// The y scale (default [`Scale::Log`]).
    pub fn scale(mut self, scale: Scale) -> Self {
        self.scale = scale;
        self
    }

    figure_option_setters!("The title.", "Figure size in pixels (default 760 × 460).");

    /// The y-axis label (default: [`metric_label`]).
    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = Some(label.into());
        self
    }

    /// Draws the figure.
    ///
    /// # Errors
    /// As [`EpochPlot::draw`](super::EpochPlot::draw); [`PlotError::Ambiguous`] for several runs or probes;
    /// [`PlotError::Duplicate`] for two values at one (epoch, split, layer);
    /// [`PlotError::NoData`] if the chosen layers or epochs have no rows.
    pub fn draw(&self) -> Result<Figure, PlotError> {
        let rows = self.rows.as_ref().map_err(Clone::clone)?;
        let size = self.figure.size_or((760, 460))?;
        let selected = select(rows, &self.metric, &self.filters)?;
        require_single(&selected)?;
        let layers = layer_order(&selected, &self.layers);
        let mut all_epochs: Vec<u32> = selected.iter().filter_map(|r| r.epoch).collect();
        all_epochs.sort_unstable();
        all_epochs.dedup();
        let epochs = match &self.epochs {
            Some(e) => {
                let mut e = e.clone();
                e.sort_unstable();
                e.dedup();
                e
            }
            None => spread_epochs(&all_epochs, self.max_epochs),
        };
        let splits = split_order(selected.iter().map(|r| &r.split));
        let keep: Vec<&TidyRow> = selected
            .iter()
            .copied()
            .filter(|r| {
                r.epoch.is_some_and(|e| epochs.contains(&e))
                    && r.layer.as_ref().is_some_and(|l| layers.contains(l))
            })
            .collect();
        if keep.is_empty() {
            return Err(PlotError::NoData {
                what: format!(
                    "metric {} at layers {} and epochs {:?}",
                    self.metric,
                    layers.join(", "),
                    epochs
                ),
                available: format!(
                    "layers {}; epochs {:?}",
                    list(&distinct(selected.iter().map(|r| &r.layer))),
                    all_epochs
                ),
            });
        }
        let log = self.scale.is_log(keep.iter().map(|r| r.value));
        // (epoch index, split index) → points (layer index, value).
        let mut series: Vec<((usize, usize), Vec<(usize, f64)>)> = Vec::new();
        for r in &keep {
            let (Some(epoch), Some(layer)) = (r.epoch, r.layer.as_ref()) else {
                continue;
            };
            let ei = epochs.iter().position(|e| *e == epoch).unwrap_or(0);
            let si = splits.iter().position(|s| *s == r.split).unwrap_or(0);
            let li = layers.iter().position(|l| l == layer).unwrap_or(0);
            let name = match &r.split {
                Some(s) => format!("epoch {epoch} · {s}"),
                None => format!("epoch {epoch}"),
            };
            check_value(r.value, log, &self.metric, &name, || {
                format!("layer {layer}")
            })?;
            match series.iter_mut().find(|(k, _)| *k == (ei, si)) {
                Some((_, pts)) => {
                    if pts.iter().any(|(l, _)| *l == li) {
                        return Err(PlotError::Duplicate {
                            metric: self.metric.clone(),
                            series: name,
                            at: format!("layer {layer}"),
                        });
                    }
                    pts.push((li, r.value));
                }
                None => series.push(((ei, si), vec![(li, r.value)])),
            }
        }
        series.sort_by_key(|(k, _)| *k);
        let color_of = |ei: usize| {
            let t = if epochs.len() > 1 {
                ei as f64 / (epochs.len() - 1) as f64
            } else {
                0.0
            };
            // Stop before viridis' pale yellow end, which is hard to see on white.
            viridis(0.85 * t)
        };
        let values: Vec<f64> = keep.iter().map(|r| r.value).collect();
        let y_label = self
            .y_label
            .clone()
            .unwrap_or_else(|| metric_label(&self.metric));
        let y = value_axis(
            if log {
                format!("{y_label} (log scale)")
            } else {
                y_label
            },
            &values,
            log,
        );
        let x = category_axis("layer (network order)".into(), &layers);
        let mut out = Vec::new();
        for ((ei, si), mut pts) in series {
            pts.sort_by_key(|p| p.0);
            out.push(Series {
                points: pts
                    .iter()
                    .map(|&(l, v)| (l as f64, if log { v.log10() } else { v }))
                    .collect(),
                style: Style::line(
                    color_of(ei),
                    split_dash(splits[si].as_deref()),
                    Marker::Circle,
                ),
                band: vec![],
            });
        }
        let mut legend: Vec<LegendEntry> = epochs
            .iter()
            .enumerate()
            .filter(|(_, e)| keep.iter().any(|r| r.epoch == Some(**e)))
            .map(|(i, e)| {
                LegendEntry::new(
                    format!("epoch {e}"),
                    Style::line(color_of(i), Dash::Solid, Marker::Circle),
                )
            })
            .collect();
        if splits.len() > 1 {
            for s in &splits {
                legend.push(LegendEntry::new(
                    s.clone().unwrap_or_else(|| "(no split)".into()),
                    Style::line(TEXT, split_dash(s.as_deref()), Marker::None),
                ));
            }
        }
        let title = self.figure.title.clone().unwrap_or_else(|| {
            with_filters(
                format!("{} vs layer", metric_short(&self.metric)),
                &self.filters,
            )
        });
        Figure::render(Scene {
            title,
            subtitle: vec![],
            width: size.0,
            height: size.1,
            panels: vec![Panel::Xy(XyPanel {
                title: None,
                x,
                y,
                series: out,
                lines: vec![],
                notes: vec![],
                equal_aspect: false,
            })],
            columns: 1,
            legend,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_keeps_ends() {
        let e: Vec<u32> = (0..=100).collect();
        let s = spread_epochs(&e, 5);
        assert_eq!(s.len(), 5);
        assert_eq!((s[0], s[4]), (0, 100));
    }
}
