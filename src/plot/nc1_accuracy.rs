//! [`Nc1AccuracyPlot`]: probe accuracy against NC1, one point per checkpoint.

use super::axes::{value_axis, Scale};
use super::error::PlotError;
use super::figure::{figure_option_setters, Figure, FigureOptions};
use super::labels::{metric_label, metric_short};
use super::scene::{LegendEntry, Note, Panel, Scene, Series, XyPanel};
use super::style::{Dash, Style, MARKERS, PALETTE};
use super::tidy::{check_value, distinct, list, select, Filters, Groups, TidyRow, TidySource};

/// Probe accuracy against NC1 (or another NC metric), one point per checkpoint (epoch, layer),
/// log x; colour and marker per layer (and probe). NC values and accuracies are matched on
/// (run, layer, epoch); points present in only one table are left out.
///
/// ```
/// use neural_collapse::prelude::*;
/// use polars::prelude::*;
///
/// let nc = df!("epoch" => [0u32, 5], "split" => ["train"; 2], "layer" => ["fc"; 2],
///              "metric" => ["nc1"; 2], "value" => [2.0, 0.05])?;
/// let probe = df!("epoch" => [0u32, 5], "layer" => ["fc"; 2], "probe" => ["least-squares/label"; 2],
///                 "split" => ["test"; 2], "metric" => ["accuracy"; 2], "value" => [0.6, 0.9])?;
/// let fig = Nc1AccuracyPlot::new(&nc, &probe).draw()?;
/// assert!(fig.svg().contains("probe accuracy on the test split"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Nc1AccuracyPlot {
    nc: Result<Vec<TidyRow>, PlotError>,
    probe: Result<Vec<TidyRow>, PlotError>,
    nc_metric: String,
    nc_split: String,
    probe_split: String,
    probe_name: Option<String>,
    run: Option<String>,
    scale: Scale,
    figure: FigureOptions,
}

impl Nc1AccuracyPlot {
    /// NC values from `nc` (an NC tidy table or reports), accuracies from `probe` (a probe
    /// tidy table or reports).
    pub fn new<A: TidySource + ?Sized, B: TidySource + ?Sized>(nc: &A, probe: &B) -> Self {
        Nc1AccuracyPlot {
            nc: nc.tidy_rows(),
            probe: probe.tidy_rows(),
            nc_metric: crate::config::Metric::Nc1.into(),
            nc_split: "train".into(),
            probe_split: "test".into(),
            probe_name: None,
            run: None,
            scale: Scale::Log,
            figure: FigureOptions::default(),
        }
    }

    /// The NC metric on x (default `nc1`).
    pub fn nc_metric(mut self, metric: impl Into<String>) -> Self {
        self.nc_metric = metric.into();
        self
    }

    /// The split the NC metric is taken on (default `train`).
    pub fn nc_split(mut self, split: impl Into<String>) -> Self {
        self.nc_split = split.into();
        self
    }

    /// The split of the probe accuracy (default `test`).
    pub fn probe_split(mut self, split: impl Into<String>) -> Self {
        self.probe_split = split.into();
        self
    }

    /// Only this probe (`"<kind>/<label column>"`).
    pub fn probe(mut self, probe: impl Into<String>) -> Self {
        self.probe_name = Some(probe.into());
        self
    }

    /// Only this run.
    pub fn run(mut self, run: impl Into<String>) -> Self {
        self.run = Some(run.into());
        self
    }

    /// The x scale (default [`Scale::Log`]).
    pub fn scale(mut self, scale: Scale) -> Self {
        self.scale = scale;
        self
    }

    figure_option_setters!("The title.", "Figure size in pixels (default 740 × 480).");

    /// Draws the figure.
    ///
    /// # Errors
    /// [`PlotError::NoData`] if either table lacks its metric/split or no checkpoint is in
    /// both; [`PlotError::Duplicate`] if a checkpoint has two NC values;
    /// [`PlotError::NonFinite`] / [`PlotError::NonPositive`] (log x) as in [`EpochPlot::draw`](super::EpochPlot::draw).
    pub fn draw(&self) -> Result<Figure, PlotError> {
        let nc_rows = self.nc.as_ref().map_err(Clone::clone)?;
        let probe_rows = self.probe.as_ref().map_err(Clone::clone)?;
        let size = self.figure.size_or((740, 480))?;
        let nc_filters = Filters {
            run: self.run.clone(),
            split: Some(self.nc_split.clone()),
            ..Filters::default()
        };
        let probe_filters = Filters {
            run: self.run.clone(),
            split: Some(self.probe_split.clone()),
            probe: self.probe_name.clone(),
            ..Filters::default()
        };
        let nc = select(nc_rows, &self.nc_metric, &nc_filters)?;
        let acc = select(
            probe_rows,
            crate::config::Metric::Accuracy.name(),
            &probe_filters,
        )?;
        let key = |r: &TidyRow| (r.run.clone(), r.layer.clone(), r.epoch);
        let mut nc_by_key: Vec<((Option<String>, Option<String>, Option<u32>), f64)> = Vec::new();
        for r in &nc {
            let k = key(r);
            if nc_by_key.iter().any(|(q, _)| *q == k) {
                return Err(PlotError::Duplicate {
                    metric: self.nc_metric.clone(),
                    series: r.layer.clone().unwrap_or_default(),
                    at: format!("epoch {:?}", r.epoch),
                });
            }
            nc_by_key.push((k, r.value));
        }
        let log = self.scale.is_log(nc.iter().map(|r| r.value));
        let matched: Vec<(&TidyRow, f64)> = acc
            .iter()
            .filter_map(|r| {
                let k = key(r);
                nc_by_key
                    .iter()
                    .find(|(q, _)| *q == k)
                    .map(|(_, v)| (*r, *v))
            })
            .collect();
        if matched.is_empty() {
            return Err(PlotError::NoData {
                what: format!(
                    "checkpoints with both {} ({} split) and probe accuracy ({} split)",
                    self.nc_metric, self.nc_split, self.probe_split
                ),
                available: format!(
                    "NC layers {}, probe layers {}",
                    list(&distinct(nc.iter().map(|r| &r.layer))),
                    list(&distinct(acc.iter().map(|r| &r.layer)))
                ),
            });
        }
        let matched_rows: Vec<&TidyRow> = matched.iter().map(|(r, _)| *r).collect();
        let groups = Groups::of(&matched_rows);
        let mut series: Vec<Vec<(u32, f64, f64)>> = vec![Vec::new(); groups.len()];
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for (r, x) in &matched {
            let g = groups.index(r);
            let name = {
                let l = groups.label(g);
                if l.is_empty() {
                    "checkpoints".to_string()
                } else {
                    l
                }
            };
            let at = || format!("epoch {}", r.epoch.map_or("?".into(), |e| e.to_string()));
            check_value(*x, log, &self.nc_metric, &name, at)?;
            check_value(r.value, false, "accuracy", &name, at)?;
            series[g].push((
                r.epoch.unwrap_or(0),
                if log { x.log10() } else { *x },
                r.value,
            ));
            xs.push(*x);
            ys.push(r.value);
        }
        let x_label = format!(
            "{} on the {} split{}",
            metric_label(&self.nc_metric),
            self.nc_split,
            if log { " (log scale)" } else { "" }
        );
        let x = value_axis(x_label, &xs, log);
        let y = value_axis(
            format!("probe accuracy on the {} split", self.probe_split),
            &ys,
            false,
        );
        let style_of = |g: usize| {
            let mut s = Style::points(PALETTE[g % PALETTE.len()], MARKERS[g % MARKERS.len()], 4.5);
            s.alpha = 0.9;
            s
        };
        let legend = (0..groups.len())
            .map(|g| {
                let l = groups.label(g);
                LegendEntry::new(
                    if l.is_empty() {
                        "checkpoints".into()
                    } else {
                        l
                    },
                    style_of(g),
                )
            })
            .collect();
        let title = self
            .figure
            .title
            .clone()
            .unwrap_or_else(|| format!("Probe accuracy vs {}", metric_short(&self.nc_metric)));
        // Time order: each group's points joined in epoch order, every point labelled with its
        // epoch.
        let mut notes = Vec::new();
        for (g, pts) in series.iter_mut().enumerate() {
            pts.sort_by_key(|p| p.0);
            for &(e, x, y) in pts.iter() {
                notes.push(Note {
                    at: (x, y),
                    text: e.to_string(),
                    color: PALETTE[g % PALETTE.len()],
                });
            }
        }
        Figure::render(Scene {
            title,
            subtitle: vec![
                "one point per checkpoint (epoch, layer), labelled by epoch and joined in time order".into(),
            ],
            width: size.0,
            height: size.1,
            panels: vec![Panel::Xy(XyPanel {
                title: None,
                x,
                y,
                series: series
                    .into_iter()
                    .enumerate()
                    .map(|(g, points)| Series {
                        points: points.into_iter().map(|(_, x, y)| (x, y)).collect(),
                        style: Style {
                            dash: Dash::Solid,
                            width: 1.0,
                            ..style_of(g)
                        },
                        band: vec![],
                    })
                    .collect(),
                lines: vec![],
                notes,
                equal_aspect: false,
            })],
            columns: 1,
            legend,
        })
    }
}
