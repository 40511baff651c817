//! [`EpochPlot`] (a metric against epochs) and [`epoch_reaching`]; the epoch panel and options
//! it shares with [`SmallMultiples`](super::SmallMultiples).

use super::axes::{epoch_axis, value_axis, EpochAxis, Scale};
use super::error::PlotError;
use super::figure::{figure_option_setters, Figure, FigureOptions};
use super::labels::{metric_label, metric_short};
use super::scene::{LegendEntry, Panel, RefLine, Scene, Series, XyPanel};
use super::style::{split_dash, Dash, Marker, Style, MARKERS, PALETTE, REFERENCE, TEXT};
use super::tidy::{
    check_value, distinct, select, split_order, with_filters, Filters, Groups, TidyRow, TidySource,
};

/// Options shared by [`EpochPlot`] and [`SmallMultiples`] panels.
#[derive(Debug, Clone, Default)]
pub(super) struct EpochOptions {
    pub(super) filters: Filters,
    pub(super) x_axis: EpochAxis,
    pub(super) markers: Vec<(u32, String)>,
    pub(super) references: Vec<(f64, String)>,
}

/// The builder setters of [`EpochOptions`], for a builder with an `opts: EpochOptions` field;
/// `$marker_doc` documents `marker` (how the line is shown differs between builders).
macro_rules! epoch_option_setters {
    ($x_axis_doc:literal, $marker_doc:literal) => {
        #[doc = $x_axis_doc]
        pub fn x_axis(mut self, axis: EpochAxis) -> Self {
            self.opts.x_axis = axis;
            self
        }

        /// Only rows of this run.
        pub fn run(mut self, run: impl Into<String>) -> Self {
            self.opts.filters.run = Some(run.into());
            self
        }

        /// Only rows of this layer.
        pub fn layer(mut self, layer: impl Into<String>) -> Self {
            self.opts.filters.layer = Some(layer.into());
            self
        }

        /// Only rows of this split.
        pub fn split(mut self, split: impl Into<String>) -> Self {
            self.opts.filters.split = Some(split.into());
            self
        }

        #[doc = $marker_doc]
        pub fn marker(mut self, epoch: u32, label: impl Into<String>) -> Self {
            self.opts.markers.push((epoch, label.into()));
            self
        }
    };
}
pub(super) use epoch_option_setters;

/// Builds one metric-vs-epoch panel and the legend it needs. `groups`/`splits` are shared
/// across panels so that colours and dashes agree.
pub(super) fn epoch_panel(
    rows: &[TidyRow],
    metric: &str,
    scale: Scale,
    y_label: String,
    opts: &EpochOptions,
    shared: Option<(&Groups, &[Option<String>], &[u32])>,
) -> Result<(XyPanel, Vec<LegendEntry>), PlotError> {
    let selected = select(rows, metric, &opts.filters)?;
    let own_groups;
    let own_splits;
    let own_epochs;
    let (groups, splits, all_epochs) = match shared {
        Some(s) => s,
        None => {
            own_groups = Groups::of(&selected);
            own_splits = split_order(selected.iter().map(|r| &r.split));
            own_epochs = selected.iter().filter_map(|r| r.epoch).collect::<Vec<_>>();
            (&own_groups, own_splits.as_slice(), own_epochs.as_slice())
        }
    };
    let log = scale.is_log(
        selected
            .iter()
            .map(|r| r.value)
            .chain(opts.references.iter().map(|r| r.0)),
    );
    // Series: (group, split) → points.
    let mut series: Vec<((usize, usize), Vec<(u32, f64, Option<(f64, f64)>)>)> = Vec::new();
    for r in &selected {
        let g = groups.index(r);
        let s = splits.iter().position(|x| *x == r.split).unwrap_or(0);
        let name = series_name(groups, g, splits, s);
        let epoch = r.epoch.ok_or_else(|| PlotError::MissingValue {
            column: "epoch",
            metric: metric.into(),
            series: name.clone(),
        })?;
        check_value(r.value, log, metric, &name, || format!("epoch {epoch}"))?;
        // A band that a log axis cannot show (lo ≤ 0) is left out, not an error.
        let band = r.band.filter(|(lo, hi)| !log || (*lo > 0.0 && *hi > 0.0));
        match series.iter_mut().find(|(k, _)| *k == (g, s)) {
            Some((_, pts)) => {
                if pts.iter().any(|(e, _, _)| *e == epoch) {
                    return Err(PlotError::Duplicate {
                        metric: metric.into(),
                        series: name,
                        at: format!("epoch {epoch}"),
                    });
                }
                pts.push((epoch, r.value, band));
            }
            None => series.push(((g, s), vec![(epoch, r.value, band)])),
        }
    }
    for (y, label) in &opts.references {
        check_value(*y, log, label, "reference line", || "the line".into())?;
    }
    series.sort_by_key(|(k, _)| *k);
    let x_axis = opts.x_axis.resolve(all_epochs);
    let mut x = epoch_axis(x_axis, all_epochs);
    for (e, _) in &opts.markers {
        let p = x_axis.pos(*e);
        x.range = (x.range.0.min(p), x.range.1.max(p));
    }
    let values: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| {
            p.iter().flat_map(|(_, v, b)| {
                std::iter::once(*v).chain(b.iter().flat_map(|(lo, hi)| [*lo, *hi]))
            })
        })
        .chain(opts.references.iter().map(|r| r.0))
        .collect();
    let y = value_axis(
        if log {
            format!("{y_label} (log scale)")
        } else {
            y_label
        },
        &values,
        log,
    );
    let dense = series.iter().map(|(_, p)| p.len()).max().unwrap_or(0) > 30;
    // With one group, the splits also differ in colour and marker (not only in dash).
    let single_group = groups.len() == 1;
    let style_of = |g: usize, s: usize| {
        let k = if single_group { s } else { g };
        let marker = if dense {
            Marker::None
        } else {
            MARKERS[k % MARKERS.len()]
        };
        Style::line(
            PALETTE[k % PALETTE.len()],
            split_dash(splits[s].as_deref()),
            marker,
        )
    };
    let mut out = Vec::new();
    let tr = |v: f64| if log { v.log10() } else { v };
    for ((g, s), mut pts) in series {
        pts.sort_by_key(|(e, _, _)| *e);
        out.push(Series {
            points: pts
                .iter()
                .map(|&(e, v, _)| (x_axis.pos(e), tr(v)))
                .collect(),
            style: style_of(g, s),
            band: pts
                .iter()
                .filter_map(|&(e, _, b)| b.map(|(lo, hi)| (x_axis.pos(e), tr(lo), tr(hi))))
                .collect(),
        });
    }
    let mut lines = Vec::new();
    let mut legend = Vec::new();
    // Legend: one entry per series, or colours (groups) and dashes (splits) separately.
    if groups.len() > 1 && splits.len() > 1 {
        for g in 0..groups.len() {
            let mut st = style_of(g, 0);
            st.dash = Dash::Solid;
            legend.push(LegendEntry::new(groups.label(g), st));
        }
        for split in splits {
            legend.push(LegendEntry::new(
                split.clone().unwrap_or_else(|| "(no split)".into()),
                Style::line(TEXT, split_dash(split.as_deref()), Marker::None),
            ));
        }
    } else {
        for g in 0..groups.len() {
            for s in 0..splits.len() {
                legend.push(LegendEntry::new(
                    series_name(groups, g, splits, s),
                    style_of(g, s),
                ));
            }
        }
    }
    for (i, (e, label)) in opts.markers.iter().enumerate() {
        // The first marker long-dashed, the others dash-dotted, so that two markers differ.
        let dash = if i == 0 { Dash::LongDash } else { Dash::Dotted };
        let style = Style {
            width: 1.5,
            ..Style::line(REFERENCE, dash, Marker::None)
        };
        lines.push(RefLine {
            vertical: true,
            at: x_axis.pos(*e),
            style,
        });
        legend.push(LegendEntry::new(format!("{label} (epoch {e})"), style));
    }
    for (v, label) in &opts.references {
        let style = Style {
            width: 1.5,
            ..Style::line(REFERENCE, Dash::Dotted, Marker::None)
        };
        lines.push(RefLine {
            vertical: false,
            at: if log { v.log10() } else { *v },
            style,
        });
        legend.push(LegendEntry::new(label.clone(), style));
    }
    Ok((
        XyPanel {
            title: None,
            x,
            y,
            series: out,
            lines,
            notes: vec![],
            equal_aspect: false,
        },
        legend,
    ))
}

/// A series' legend label: its group and split, leaving out what does not vary (a lone split
/// goes into the title instead).
fn series_name(groups: &Groups, g: usize, splits: &[Option<String>], s: usize) -> String {
    let group = groups.label(g);
    let split = if splits.len() == 1 && !group.is_empty() {
        String::new()
    } else {
        splits[s].clone().unwrap_or_default()
    };
    match (group.is_empty(), split.is_empty()) {
        (true, true) => "value".into(),
        (true, false) => split,
        (false, true) => group,
        (false, false) => format!("{group} · {split}"),
    }
}

/// A metric against epochs: one line per split (train solid, test dashed, others dotted) and
/// per run/layer/probe present in the data (colour and marker), log y by default.
///
/// The x axis is chosen by [`EpochAxis`] (epoch 0 is handled by plotting `log10(epoch + 1)`
/// or a linear axis). [`marker`](Self::marker) draws a vertical line at an epoch, e.g. where the
/// train error reaches 0 (see [`epoch_reaching`]).
///
/// ```
/// use neural_collapse::prelude::*;
/// use polars::prelude::*;
///
/// let tidy = df!("epoch" => [0u32, 1, 2], "split" => ["train"; 3], "metric" => ["nc1"; 3],
///                "value" => [1.0, 0.1, 0.01])?;
/// let fig = EpochPlot::new(&tidy).metric("nc1").title("NC1 of a toy run").draw()?;
/// assert_eq!(fig.title(), "NC1 of a toy run");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct EpochPlot {
    rows: Result<Vec<TidyRow>, PlotError>,
    metric: String,
    figure: FigureOptions,
    y_label: Option<String>,
    scale: Scale,
    opts: EpochOptions,
}

impl EpochPlot {
    /// A plot of `nc1` (change with [`metric`](Self::metric)) from a tidy table or reports.
    pub fn new<T: TidySource + ?Sized>(data: &T) -> Self {
        EpochPlot {
            rows: data.tidy_rows(),
            metric: crate::config::Metric::Nc1.into(),
            figure: FigureOptions::default(),
            y_label: None,
            scale: Scale::Log,
            opts: EpochOptions::default(),
        }
    }

    /// Probe accuracy against epochs from a probe table ([`ProbeReport::to_tidy_many`](crate::probe::ProbeReport::to_tidy_many)):
    /// metric `accuracy`, linear y, train solid and test dashed, one colour per layer/probe.
    pub fn probe_accuracy<T: TidySource + ?Sized>(data: &T) -> Self {
        EpochPlot::new(data)
            .metric(crate::config::Metric::Accuracy)
            .scale(Scale::Linear)
            .title("Linear-probe accuracy vs epoch")
    }

    /// The metric to draw: a value of the `metric` column, or a [`Metric`](crate::config::Metric)
    /// (`.metric(Metric::Nc1)`, its name). Default `nc1`.
    pub fn metric(mut self, metric: impl Into<String>) -> Self {
        self.metric = metric.into();
        self
    }

    figure_option_setters!(
        "The title (default: the metric's short name and the filters).",
        "Figure size in pixels (default 760 × 460)."
    );

    /// The y-axis label (default: [`metric_label`]).
    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = Some(label.into());
        self
    }

    /// The y scale (default [`Scale::Log`]).
    pub fn scale(mut self, scale: Scale) -> Self {
        self.scale = scale;
        self
    }

    epoch_option_setters!(
        "The x axis (default [`EpochAxis::Auto`]).",
        "A vertical line at `epoch`, listed in the legend as `\"<label> (epoch <epoch>)\"`."
    );

    /// Only rows of this probe (`"<kind>/<label column>"`).
    pub fn probe(mut self, probe: impl Into<String>) -> Self {
        self.opts.filters.probe = Some(probe.into());
        self
    }

    /// A horizontal reference line at `value` (e.g. chance accuracy `1/C`).
    pub fn reference_line(mut self, value: f64, label: impl Into<String>) -> Self {
        self.opts.references.push((value, label.into()));
        self
    }

    /// Draws the figure.
    ///
    /// # Errors
    /// [`PlotError::NoData`] if no row has the metric (after filters), [`PlotError::NonFinite`],
    /// [`PlotError::NonPositive`] on a log axis, [`PlotError::Duplicate`] if a series has two
    /// values at one epoch, [`PlotError::MissingValue`] for a row without epoch, the column
    /// errors of [`TidySource`], [`PlotError::BadSize`].
    pub fn draw(&self) -> Result<Figure, PlotError> {
        let rows = self.rows.as_ref().map_err(Clone::clone)?;
        let size = self.figure.size_or((760, 460))?;
        let y_label = self
            .y_label
            .clone()
            .unwrap_or_else(|| metric_label(&self.metric));
        let (panel, legend) =
            epoch_panel(rows, &self.metric, self.scale, y_label, &self.opts, None)?;
        let title = self.figure.title.clone().unwrap_or_else(|| {
            let mut filters = self.opts.filters.clone();
            if filters.split.is_none() {
                filters.split = lone_split(rows, &self.metric);
            }
            with_filters(format!("{} vs epoch", metric_short(&self.metric)), &filters)
        });
        Figure::render(Scene {
            title,
            subtitle: vec![],
            width: size.0,
            height: size.1,
            panels: vec![Panel::Xy(panel)],
            columns: 1,
            legend,
        })
    }
}

/// The split of `metric`'s rows when they all have the same one.
fn lone_split(rows: &[TidyRow], metric: &str) -> Option<String> {
    let splits = distinct(rows.iter().filter(|r| r.metric == metric).map(|r| &r.split));
    match splits.as_slice() {
        [Some(s)] => Some(s.clone()),
        _ => None,
    }
}

/// The first epoch from which `metric` on `split` equals `target` (within `tolerance`) at
/// every later checkpoint, e.g. the start of the terminal phase of training:
/// `epoch_reaching(&tidy, "error", "train", 0.0, 0.0)` or
/// `epoch_reaching(&probe_tidy, "accuracy", "train", 1.0, 1e-9)`. `None` if the last
/// checkpoint is not at the target. Rows are those of `metric` and `split` (filter the table
/// first so that they form one series).
///
/// ```
/// use neural_collapse::plot::{epoch_reaching, TidyRow};
///
/// let row = |epoch, value| TidyRow { run: None, epoch: Some(epoch), layer: None, probe: None, band: None,
///     split: Some("train".into()), metric: "error".into(), value };
/// let rows = vec![row(0, 0.9), row(5, 0.0), row(10, 0.01), row(20, 0.0), row(40, 0.0)];
/// assert_eq!(epoch_reaching(&rows, "error", "train", 0.0, 0.0)?, Some(20));
/// # Ok::<(), neural_collapse::plot::PlotError>(())
/// ```
///
/// # Errors
/// [`PlotError::NoData`] if no row matches, [`PlotError::Duplicate`] if an epoch has two
/// values, [`PlotError::MissingValue`] for a row without epoch.
pub fn epoch_reaching<T: TidySource + ?Sized>(
    data: &T,
    metric: &str,
    split: &str,
    target: f64,
    tolerance: f64,
) -> Result<Option<u32>, PlotError> {
    let rows = data.tidy_rows()?;
    let filters = Filters {
        split: Some(split.into()),
        ..Filters::default()
    };
    let selected = select(&rows, metric, &filters)?;
    let mut points: Vec<(u32, f64)> = Vec::new();
    for r in selected {
        let epoch = r.epoch.ok_or_else(|| PlotError::MissingValue {
            column: "epoch",
            metric: metric.into(),
            series: split.into(),
        })?;
        if points.iter().any(|(e, _)| *e == epoch) {
            return Err(PlotError::Duplicate {
                metric: metric.into(),
                series: split.into(),
                at: format!("epoch {epoch}"),
            });
        }
        points.push((epoch, r.value));
    }
    points.sort_by_key(|p| p.0);
    let mut first = None;
    for (e, v) in points {
        if (v - target).abs() <= tolerance {
            first.get_or_insert(e);
        } else {
            first = None;
        }
    }
    Ok(first)
}
