//! Figures of Neural Collapse experiments, drawn with plotters: shown inline in Jupyter (evcxr)
//! as SVG, saved as `.svg` or `.png`.
//!
//! Every figure is a builder in linfa/plotters style: set options with chained setters, then
//! [`draw`](EpochPlot::draw) returns a [`Figure`] or a [`PlotError`].
//!
//! | builder | figure |
//! |---|---|
//! | [`EpochPlot`] | a metric vs epoch, log y; one line per split (train solid, test dashed) and per run/layer/probe; optional marker at an epoch (e.g. where train error reaches 0) |
//! | [`LayerPlot`] | a metric vs layer, log y; one line per epoch, coloured by epoch (sequential palette) |
//! | [`HeatMap`] | layer × epoch heat map of a metric, log colour scale with a colour bar |
//! | [`EpochPlot::probe_accuracy`] | probe accuracy vs epoch (linear y) |
//! | [`Nc1AccuracyPlot`] | probe accuracy vs NC1, one point per checkpoint, log x |
//! | [`MeanGeometryPlot`] | centred class means (and classifier rows, and a seeded subsample of samples) projected on their first two principal axes |
//! | [`SmallMultiples`] | several metrics vs epoch on one canvas (e.g. NC1–NC4 of one run) |
//!
//! # Input
//!
//! The builders take tidy tables ([`TidySource`]): a polars `DataFrame` in the format of
//! [`NcReport::to_tidy_many`](crate::metrics::NcReport::to_tidy_many) (columns `epoch, split, layer, metric, value`) or
//! [`ProbeReport::to_tidy_many`](crate::probe::ProbeReport::to_tidy_many) (`epoch, layer, probe, split, metric, value`), optionally with a
//! `run` column, or the reports themselves. [`MeanGeometryPlot`] takes [`ClassStats`](crate::stats::ClassStats) or
//! [`Features`](crate::features::Features) (and optionally a
//! [`Classifier`](crate::features::Classifier)).
//!
//! Layers are drawn **in the order they first appear** in the table (the order in which the
//! reports were computed: [`Run::layers`](crate::features::Run::layers) lists them in network
//! order), never sorted by name, so `layer10` comes after `layer2`; `.layers(…)` sets the order
//! explicitly. Epochs are sorted numerically.
//!
//! # Axes
//!
//! * **Log axes** ([`Scale::Log`]) are drawn in `log10` space with ticks at powers of ten (and
//!   at 2× and 5× when the range is short). A log axis requires every value to be `> 0`.
//!   [`Scale::Auto`] picks a log axis when every value is positive and a linear one otherwise
//!   (used for NC4, a mismatch fraction that is often exactly 0).
//! * **Epoch axis** ([`EpochAxis`]). Epoch 0 (initialisation) cannot sit on a log axis. With
//!   [`EpochAxis::LogPlusOne`] the x position is `log10(epoch + 1)`, labelled with the epochs
//!   themselves (0, 1, 2, 5, 10, …): epoch 0 sits at the left edge and a geometric checkpoint
//!   schedule is spread evenly. [`EpochAxis::Linear`] is a plain linear axis.
//!   [`EpochAxis::Auto`] (the default) takes `LogPlusOne` when the checkpoints are bunched
//!   early (largest epoch ≥ 20 and median ≤ a fifth of it, as in a geometric schedule) and
//!   `Linear` otherwise; the axis label says which.
//!
//! # Errors, never panics
//!
//! Drawing validates everything before plotters sees it and returns a typed [`PlotError`] that
//! names the metric, series and checkpoint at fault: no rows for the metric or filter
//! ([`PlotError::NoData`], listing what is available), a NaN or infinite value
//! ([`PlotError::NonFinite`]), a value `≤ 0` on a log axis ([`PlotError::NonPositive`]), two
//! values for one point ([`PlotError::Duplicate`]), several runs/splits where one is needed
//! ([`PlotError::Ambiguous`]), missing or ill-typed columns, a bad size. An empty series is
//! never drawn silently: a filter that leaves nothing is an error.
//!
//! # Style
//!
//! Titles, axis labels with the metric's formula ([`metric_label`], e.g.
//! `NC1 = Tr(Σ_W Σ_B†)/C`), legends outside the plotting area (they never cover data), and
//! palettes that survive greyscale printing: categorical series differ in lightness, marker
//! shape and (for splits) dash pattern, not only in hue; epochs use viridis, whose lightness
//! increases monotonically. Text is DejaVu Sans, bundled (`assets/DejaVuSans.ttf`, Bitstream
//! Vera licence) and drawn with ab_glyph, so PNGs need no system fonts; SVGs name the
//! `sans-serif` family and the viewer picks the font.
//!
//! # Example
//!
//! ```
//! use neural_collapse::prelude::*;
//! use polars::prelude::*;
//!
//! let tidy = df!(
//!     "epoch" => [0u32, 10, 100, 0, 10, 100],
//!     "split" => ["train", "train", "train", "test", "test", "test"],
//!     "layer" => ["fc2"; 6],
//!     "metric" => ["nc1"; 6],
//!     "value" => [3.0, 0.3, 0.01, 3.5, 0.9, 0.4],
//! )?;
//! let fig = EpochPlot::new(&tidy).metric("nc1").marker(40, "train error = 0").draw()?;
//! assert!(fig.svg().contains("NC1 = Tr(Σ_W Σ_B†)/C"));
//! assert_eq!(fig.legend(), ["train", "test", "train error = 0 (epoch 40)"]);
//! // fig.save_png("nc1.png")?;  — or leave `fig` as a cell's last expression in Jupyter.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod axes;
mod epoch;
mod error;
mod figure;
mod heat_map;
mod labels;
mod layer;
mod mean_geometry;
mod nc1_accuracy;
mod render;
mod scene;
mod small_multiples;
mod style;
mod text;
mod tidy;

pub use axes::{EpochAxis, Scale};
pub use epoch::{epoch_reaching, EpochPlot};
pub use error::PlotError;
pub use figure::Figure;
pub use heat_map::HeatMap;
pub use labels::metric_label;
pub use layer::LayerPlot;
pub use mean_geometry::{MeanGeometryPlot, MAX_GEOMETRY_SAMPLES};
pub use nc1_accuracy::Nc1AccuracyPlot;
pub use small_multiples::SmallMultiples;
pub use tidy::{TidyRow, TidySource};
