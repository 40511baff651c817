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
//! [`NcReport::to_tidy_many`] (columns `epoch, split, layer, metric, value`) or
//! [`ProbeReport::to_tidy_many`] (`epoch, layer, probe, split, metric, value`), optionally with a
//! `run` column, or the reports themselves. [`MeanGeometryPlot`] takes [`ClassStats`] or
//! [`Features`] (and optionally a [`Classifier`]).
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

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use ndarray::Array1;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};
use polars::prelude::{DataFrame, DataType};
use thiserror::Error;

use crate::features::{Classifier, Features};
use crate::metrics::NcReport;
use crate::probe::ProbeReport;
use crate::stats::{ClassStats, GlobalMean};

// ---------------------------------------------------------------------------------------------
// Errors.

/// Why a figure could not be drawn or saved. Messages name the metric, series, checkpoint,
/// column or file at fault.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum PlotError {
    /// A required column is missing from the table.
    #[error("column `{column}` is missing from the table (columns: {available})")]
    MissingColumn {
        /// The missing column.
        column: String,
        /// The table's columns.
        available: String,
    },
    /// A column has a type that cannot be read.
    #[error("column `{column}` has type {dtype}; expected {expected}")]
    ColumnType {
        /// The column.
        column: String,
        /// Its type.
        dtype: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A row lacks a value the figure needs (e.g. an epoch for a plot against epochs).
    #[error("{metric}: a row of series {series} has no {column}")]
    MissingValue {
        /// The column without value.
        column: &'static str,
        /// The metric of the row.
        metric: String,
        /// The series of the row.
        series: String,
    },
    /// Nothing to draw: no rows for the metric and filters, or an empty input.
    #[error("nothing to plot for {what}; available: {available}")]
    NoData {
        /// What was asked for (metric and filters).
        what: String,
        /// What the data offers instead.
        available: String,
    },
    /// A NaN or infinite value.
    #[error("{metric} of series {series} at {at} is {value}, not a finite number")]
    NonFinite {
        /// The metric.
        metric: String,
        /// The series (split, layer, run, …).
        series: String,
        /// Where (e.g. `epoch 10`).
        at: String,
        /// The value.
        value: f64,
    },
    /// A value `≤ 0` on a log axis.
    #[error(
        "{metric} of series {series} at {at} is {value}: a log axis needs values > 0 \
         (use Scale::Linear or Scale::Auto for this metric)"
    )]
    NonPositive {
        /// The metric.
        metric: String,
        /// The series.
        series: String,
        /// Where (e.g. `epoch 10`).
        at: String,
        /// The value.
        value: f64,
    },
    /// Two values for the same point of a series.
    #[error(
        "{metric} of series {series} has several values at {at}; filter the table \
         (by run, layer, split or probe) so that each point has one value"
    )]
    Duplicate {
        /// The metric.
        metric: String,
        /// The series.
        series: String,
        /// Where.
        at: String,
    },
    /// A column has several values where the figure needs one.
    #[error("{column} has several values ({values}); choose one with .{column}(…)")]
    Ambiguous {
        /// The column (`run`, `split`, `probe`).
        column: &'static str,
        /// Its values.
        values: String,
    },
    /// Inconsistent input (shapes, options).
    #[error("{0}")]
    Invalid(String),
    /// A figure size outside `64..=8192` pixels per side (or a bad PNG scale).
    #[error("figure size {width} × {height} px is out of range (64..=8192 per side)")]
    BadSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// plotters failed while drawing.
    #[error("drawing failed: {0}")]
    Draw(String),
    /// A figure could not be written.
    #[error("cannot write {path}: {message}")]
    Save {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

fn draw_err(e: impl fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Font.

/// DejaVu Sans 2.37 (Bitstream Vera licence, `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Registers the bundled font with plotters (once per process) under `sans-serif`, the family
/// every text of the module uses.
fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(PlotError::Draw(
            "the bundled DejaVu Sans font could not be loaded".into(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Figure.

/// A drawn figure: the SVG text, its size, and what is needed to render it again as a PNG.
///
/// In an evcxr Jupyter cell, a `Figure` as the last expression displays inline as SVG
/// ([`evcxr_display`](Figure::evcxr_display)). [`save`](Figure::save) writes `.svg` or `.png`.
#[derive(Clone)]
pub struct Figure {
    svg: String,
    width: u32,
    height: u32,
    scene: Arc<Scene>,
}

impl fmt::Debug for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Figure")
            .field("title", &self.scene.title)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("legend", &self.legend())
            .finish()
    }
}

/// Smallest and largest side of a figure, in pixels.
const SIZE_RANGE: std::ops::RangeInclusive<u32> = 64..=8192;

impl Figure {
    fn render(scene: Scene) -> Result<Figure, PlotError> {
        ensure_font()?;
        let (width, height) = (scene.width, scene.height);
        if !SIZE_RANGE.contains(&width) || !SIZE_RANGE.contains(&height) {
            return Err(PlotError::BadSize { width, height });
        }
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            draw_scene(&scene, &root, 1.0)?;
            root.present().map_err(draw_err)?;
        }
        Ok(Figure {
            svg,
            width,
            height,
            scene: Arc::new(scene),
        })
    }

    /// The SVG document.
    pub fn svg(&self) -> &str {
        &self.svg
    }

    /// Width in pixels (of the SVG, and of a PNG at scale 1).
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The figure's title.
    pub fn title(&self) -> &str {
        &self.scene.title
    }

    /// The legend's labels, in order (empty when the figure has no legend).
    pub fn legend(&self) -> Vec<String> {
        self.scene.legend.iter().map(|e| e.label.clone()).collect()
    }

    /// Shows the figure in an evcxr Jupyter cell as `image/svg+xml`.
    pub fn evcxr_display(&self) {
        crate::display::evcxr_print("image/svg+xml", &self.svg);
    }

    /// Writes the SVG document.
    ///
    /// # Errors
    /// [`PlotError::Save`] if the file cannot be written.
    pub fn save_svg(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        let path = path.as_ref();
        std::fs::write(path, &self.svg).map_err(|e| PlotError::Save {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Renders the figure as RGB pixels (row-major, 3 bytes per pixel) at `scale` times its
    /// size (e.g. 2 for a high-density screen), with text drawn from the bundled font.
    ///
    /// # Errors
    /// [`PlotError::BadSize`] if the scaled size leaves `64..=8192` or `scale` is not finite
    /// and positive; [`PlotError::Draw`] if plotters fails.
    pub fn to_rgb(&self, scale: f64) -> Result<(u32, u32, Vec<u8>), PlotError> {
        let (w, h) = self.scaled_size(scale)?;
        let mut buf = vec![255u8; w as usize * h as usize * 3];
        {
            let root = TextFix(BitMapBackend::with_buffer(&mut buf, (w, h))).into_drawing_area();
            draw_scene(&self.scene, &root, scale)?;
            root.present().map_err(draw_err)?;
        }
        Ok((w, h, buf))
    }

    fn scaled_size(&self, scale: f64) -> Result<(u32, u32), PlotError> {
        let w = (self.width as f64 * scale).round();
        let h = (self.height as f64 * scale).round();
        let ok = scale.is_finite()
            && scale > 0.0
            && SIZE_RANGE.contains(&(w.min(1e9) as u32))
            && SIZE_RANGE.contains(&(h.min(1e9) as u32));
        if !ok {
            return Err(PlotError::BadSize {
                width: w.clamp(0.0, u32::MAX as f64) as u32,
                height: h.clamp(0.0, u32::MAX as f64) as u32,
            });
        }
        Ok((w as u32, h as u32))
    }

    /// Writes a PNG of the figure's size ([`width`](Self::width) × [`height`](Self::height)).
    ///
    /// # Errors
    /// As [`save_png_scaled`](Self::save_png_scaled).
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        self.save_png_scaled(path, 1.0)
    }

    /// Writes a PNG at `scale` times the figure's size (lines, text and markers scale too).
    ///
    /// # Errors
    /// [`PlotError::BadSize`] for a bad scale, [`PlotError::Draw`] if plotters fails,
    /// [`PlotError::Save`] if the file cannot be written.
    pub fn save_png_scaled(&self, path: impl AsRef<Path>, scale: f64) -> Result<(), PlotError> {
        let path = path.as_ref();
        let (w, h) = self.scaled_size(scale)?;
        let save = |e: &dyn fmt::Display| PlotError::Save {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        // The image encoder picks the format from the extension: insist on .png.
        let is_png = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !is_png {
            return Err(save(&"a PNG file name must end in .png"));
        }
        let root = TextFix(BitMapBackend::new(path, (w, h))).into_drawing_area();
        draw_scene(&self.scene, &root, scale)?;
        root.present().map_err(|e| save(&e))
    }

    /// Writes the figure as SVG or PNG, chosen by the extension of `path` (`.svg` / `.png`).
    ///
    /// # Errors
    /// [`PlotError::Save`] for another extension or a write failure; as
    /// [`save_png`](Self::save_png).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        let path = path.as_ref();
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("svg") => self.save_svg(path),
            Some("png") => self.save_png(path),
            _ => Err(PlotError::Save {
                path: path.display().to_string(),
                message: "unknown extension: use .svg or .png".into(),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PNG text.

/// The bundled font, parsed once.
fn face() -> Option<&'static ab_glyph::FontRef<'static>> {
    static FACE: OnceLock<Option<ab_glyph::FontRef<'static>>> = OnceLock::new();
    FACE.get_or_init(|| ab_glyph::FontRef::try_from_slice(FONT).ok())
        .as_ref()
}

/// A pixel backend whose text is rasterised here, from the bundled font, with each glyph at its
/// proper place (plotters 0.3.7 drops the glyphs' side bearings) and with the SVG backend's
/// metrics: em = size / 1.24, and the baseline where an SVG viewer puts it for each anchor
/// (`dy` of 0.76 em, 0.5 ex or −0.5 ex). Everything else goes to the wrapped backend.
struct TextFix<B>(B);

impl<B: DrawingBackend> DrawingBackend for TextFix<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        use ab_glyph::{point, Font, PxScale, ScaleFont};
        let Some(font) = face() else {
            return self.0.draw_text(text, style, pos);
        };
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let em = style.size() / 1.24;
        let units = font.units_per_em().unwrap_or(2048.0) as f64;
        let scale = PxScale::from((em * font.height_unscaled() as f64 / units) as f32);
        let scaled = font.as_scaled(scale);
        let mut caret = 0.0f32;
        let mut prev = None;
        let mut glyphs = Vec::with_capacity(text.len());
        for ch in text.chars() {
            let id = scaled.glyph_id(ch);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(scale, point(caret, 0.0)));
            caret += scaled.h_advance(id);
            prev = Some(id);
        }
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -(caret as f64) / 2.0,
            HPos::Right => -(caret as f64),
        };
        // DejaVu Sans: x-height 1118/2048 em.
        let ex = em * 1118.0 / 2048.0;
        let dy = match anchor.v_pos {
            VPos::Top => 0.76 * em,
            VPos::Center => 0.5 * ex,
            VPos::Bottom => -0.5 * ex,
        };
        let transform = style.transform();
        let mut pixels = Vec::new();
        for g in glyphs {
            if let Some(outline) = font.outline_glyph(g) {
                let b = outline.px_bounds();
                outline.draw(|x, y, c| {
                    let lx = (b.min.x as f64 + x as f64 + dx).round() as i32;
                    let ly = (b.min.y as f64 + y as f64 + dy).round() as i32;
                    let (rx, ry) = transform.transform(lx, ly);
                    pixels.push((pos.0 + rx, pos.1 + ry, c));
                });
            }
        }
        for (x, y, c) in pixels {
            if c > 0.0 {
                self.0.draw_pixel(
                    (x, y),
                    BackendColor {
                        alpha: color.alpha * c.min(1.0) as f64,
                        rgb: color.rgb,
                    },
                )?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Tidy input.

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
    /// shaded band by [`EpochPlot`]; from the optional `lo` and `hi` columns of a table.
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
                metric: metric.to_string(),
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
struct Filters {
    run: Option<String>,
    layer: Option<String>,
    split: Option<String>,
    probe: Option<String>,
}

impl Filters {
    fn keep(&self, r: &TidyRow) -> bool {
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
fn distinct<'a>(rows: impl IntoIterator<Item = &'a Option<String>>) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = Vec::new();
    for v in rows {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

/// Splits in display order: `train`, `test`, then the others as they appear.
fn split_order<'a>(rows: impl IntoIterator<Item = &'a Option<String>>) -> Vec<Option<String>> {
    let mut splits = distinct(rows);
    let rank = |s: &Option<String>| match s.as_deref() {
        Some("train") => 0,
        Some("test") => 1,
        _ => 2,
    };
    splits.sort_by_key(rank); // stable: others keep their order
    splits
}

fn list(values: &[Option<String>]) -> String {
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
fn select<'a>(
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
fn check_value(
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

// ---------------------------------------------------------------------------------------------
// Metric names.

/// The axis label of a metric: its name with its formula, e.g. `NC1 = Tr(Σ_W Σ_B†)/C` for
/// `nc1` (names as in [`NcReport::metrics`]; `accuracy` for probes). Unknown names are returned
/// unchanged.
///
/// ```
/// assert_eq!(neural_collapse::plot::metric_label("nc1"), "NC1 = Tr(Σ_W Σ_B†)/C");
/// assert_eq!(neural_collapse::plot::metric_label("my_metric"), "my_metric");
/// ```
pub fn metric_label(metric: &str) -> String {
    let (base, w) = match metric.strip_suffix("_w") {
        Some(b) if b.starts_with("nc2_") => (b, true),
        _ => (metric, false),
    };
    let (v, vp) = if w {
        ("w_c", "w_c′")
    } else {
        ("μ_c − μ_G", "μ_c′ − μ_G")
    };
    let s = match base {
        "nc1" => "NC1 = Tr(Σ_W Σ_B†)/C".to_string(),
        "nc1_trace_ratio" => "NC1 trace ratio = Tr Σ_W / Tr Σ_B".to_string(),
        "cdnv" => "CDNV = mean (σ²_c + σ²_c′) / (2‖μ_c − μ_c′‖²)".to_string(),
        "nc2_equinorm" => format!("NC2 equinorm = std ‖{v}‖ / mean ‖{v}‖"),
        "nc2_equiangularity" => format!("NC2 equiangularity = std cos({v}, {vp})"),
        "nc2_max_angle" => format!("NC2 max-angle = mean |cos({v}, {vp}) + 1/(C−1)|"),
        "nc2_etf_distance" => {
            if w {
                "NC2 ETF distance of W = ‖G/‖G‖_F − ETF‖_F".to_string()
            } else {
                "NC2 ETF distance = ‖G/‖G‖_F − ETF‖_F".to_string()
            }
        }
        "nc3" => "NC3 = ‖Wᵀ/‖W‖_F − M/‖M‖_F‖²_F".to_string(),
        "nc4" => "NC4 = P(argmax (Wh + b) ≠ nearest class mean)".to_string(),
        "accuracy" => "probe accuracy".to_string(),
        "error" => "error rate".to_string(),
        _ => metric.to_string(),
    };
    s
}

/// A short name for titles: `NC1`, `NC2 equinorm (W)`, `probe accuracy`, …
fn metric_short(metric: &str) -> String {
    let (base, w) = match metric.strip_suffix("_w") {
        Some(b) if b.starts_with("nc2_") => (b, true),
        _ => (metric, false),
    };
    let s = match base {
        "nc1" => "NC1",
        "nc1_trace_ratio" => "NC1 trace ratio",
        "cdnv" => "CDNV",
        "nc2_equinorm" => "NC2 equinorm",
        "nc2_equiangularity" => "NC2 equiangularity",
        "nc2_max_angle" => "NC2 max-angle",
        "nc2_etf_distance" => "NC2 ETF distance",
        "nc3" => "NC3",
        "nc4" => "NC4",
        "accuracy" => "Probe accuracy",
        "error" => "Error rate",
        other => return other.to_string(),
    };
    if w {
        format!("{s} (classifier rows)")
    } else {
        s.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Scales and ticks.

/// A value axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Logarithmic; every value must be `> 0` ([`PlotError::NonPositive`] otherwise).
    #[default]
    Log,
    /// Linear.
    Linear,
    /// Logarithmic when every value is `> 0`, linear otherwise.
    Auto,
}

impl Scale {
    /// Whether the axis is logarithmic for these values.
    fn is_log(self, values: impl IntoIterator<Item = f64>) -> bool {
        match self {
            Scale::Log => true,
            Scale::Linear => false,
            Scale::Auto => values.into_iter().all(|v| v > 0.0 || !v.is_finite()),
        }
    }
}

/// The epoch (x) axis; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EpochAxis {
    /// `LogPlusOne` for checkpoints bunched early (largest ≥ 20, median ≤ largest / 5),
    /// `Linear` otherwise.
    #[default]
    Auto,
    /// Linear in the epoch.
    Linear,
    /// Position `log10(epoch + 1)`, labelled with epochs; epoch 0 sits at the left edge.
    LogPlusOne,
}

impl EpochAxis {
    fn resolve(self, epochs: &[u32]) -> EpochAxis {
        match self {
            EpochAxis::Auto => {
                let mut e = epochs.to_vec();
                e.sort_unstable();
                let max = e.last().copied().unwrap_or(0);
                let median = e.get(e.len() / 2).copied().unwrap_or(0);
                if max >= 20 && median as f64 <= max as f64 / 5.0 {
                    EpochAxis::LogPlusOne
                } else {
                    EpochAxis::Linear
                }
            }
            other => other,
        }
    }

    fn pos(self, epoch: u32) -> f64 {
        match self {
            EpochAxis::LogPlusOne => (epoch as f64 + 1.0).log10(),
            _ => epoch as f64,
        }
    }
}

/// An axis of a panel, in drawing coordinates (log10 of the value on a log axis).
#[derive(Debug, Clone)]
struct AxisSpec {
    label: String,
    range: (f64, f64),
    ticks: Vec<(f64, String)>,
    minor: Vec<f64>,
}

/// `v` rounded for a tick label: plain decimals for `1e-3 ≤ |v| < 1e5`, `m×10ᵏ` otherwise.
fn fmt_tick(v: f64, decimals: Option<usize>) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let k = (v.abs().log10() + 1e-9).floor() as i32;
    if (-3..5).contains(&k) {
        let d = decimals.unwrap_or_else(|| {
            // Up to 3 significant digits, trailing zeros trimmed.
            (2 - k).max(0) as usize
        });
        let s = format!("{v:.d$}");
        if decimals.is_none() && s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let m = v / 10f64.powi(k);
        let m_s = format!("{m:.1}");
        let m_s = m_s.trim_end_matches('0').trim_end_matches('.');
        if m_s == "1" {
            format!("10{}", superscript(k))
        } else if m_s == "-1" {
            format!("−10{}", superscript(k))
        } else {
            format!("{m_s}×10{}", superscript(k))
        }
    }
    .replace('-', "−")
}

fn superscript(k: i32) -> String {
    k.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect()
}

/// A "nice" step (1, 2 or 5 × 10ᵏ) giving about `target` intervals over `span`: the nice
/// mantissa nearest (in ratio) to the raw step's.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let k = raw.log10().floor();
    let base = 10f64.powf(k);
    let m = raw / base;
    let nice = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .min_by(|a: &f64, b: &f64| (m / a).ln().abs().total_cmp(&(m / b).ln().abs()))
        .unwrap_or(1.0);
    nice * base
}

/// Linear ticks within `[lo, hi]` (positions are values).
fn linear_ticks(lo: f64, hi: f64, target: f64) -> Vec<(f64, String)> {
    let span = (hi - lo).abs().max(1e-12 * hi.abs().max(1.0));
    let step = nice_step(span, target);
    let decimals = (-(step.log10() + 1e-9).floor()).max(0.0) as usize;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    if last.saturating_sub(first) > 1000 {
        return Vec::new(); // a range beyond f64 precision: no ticks rather than millions
    }
    (first..=last)
        .map(|i| {
            let v = i as f64 * step;
            let v = if v.abs() < step * 1e-9 { 0.0 } else { v };
            let label = if v.abs() >= 1e5 || (v != 0.0 && v.abs() < 1e-3) {
                fmt_tick(v, None)
            } else {
                format!("{v:.decimals$}").replace('-', "−")
            };
            (v, label)
        })
        .collect()
}

/// Ticks of a log axis covering `[lo, hi]` in log10 space: majors (with labels) and minors.
fn log_ticks(lo: f64, hi: f64) -> (Vec<(f64, String)>, Vec<f64>) {
    let eps = 1e-9;
    let k0 = (lo - eps).floor() as i32;
    let k1 = (hi + eps).ceil() as i32;
    let within = |p: f64| p >= lo - eps && p <= hi + eps;
    let candidates = |ms: &[f64]| -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for k in k0..=k1 {
            for &m in ms {
                let v = m * 10f64.powi(k);
                let p = v.log10();
                if within(p) {
                    out.push((p, v));
                }
            }
        }
        out
    };
    let decades = candidates(&[1.0]);
    let all: Vec<f64> = (1..=9).map(f64::from).collect();
    let m125 = candidates(&[1.0, 2.0, 5.0]);
    let (major, minor_ms): (Vec<(f64, f64)>, Vec<f64>) = if decades.len() == 2 && m125.len() <= 8 {
        // About two decades: 1-2-5 ticks read better than two labels.
        (m125, vec![3.0, 4.0, 6.0, 7.0, 8.0, 9.0])
    } else if decades.len() >= 2 {
        let stride = decades.len().div_ceil(7);
        let major: Vec<(f64, f64)> = decades
            .iter()
            .enumerate()
            .filter(|(i, (p, _))| {
                // Keep decades on a common grid so that labels read 10⁰, 10², 10⁴, …
                let k = p.round() as i64;
                let _ = i;
                k.rem_euclid(stride as i64) == 0
            })
            .map(|(_, &pv)| pv)
            .collect();
        let minor_ms = if hi - lo <= 6.0 {
            all[1..].to_vec()
        } else {
            vec![]
        };
        (major, minor_ms)
    } else {
        if m125.len() >= 4 {
            (m125, vec![3.0, 4.0, 6.0, 7.0, 8.0, 9.0])
        } else {
            let m19 = candidates(&all);
            if m19.len() >= 3 {
                (m19, vec![])
            } else {
                // Less than a factor of ~2: linear ticks in value space.
                let (vlo, vhi) = (10f64.powf(lo), 10f64.powf(hi));
                let ticks = linear_ticks(vlo, vhi, 4.0)
                    .into_iter()
                    .filter(|(v, _)| *v > 0.0)
                    .map(|(v, l)| (v.log10(), l))
                    .collect();
                return (ticks, vec![]);
            }
        }
    };
    let ticks: Vec<(f64, String)> = major.iter().map(|&(p, v)| (p, fmt_tick(v, None))).collect();
    let mut minor: Vec<f64> = candidates(&minor_ms).into_iter().map(|(p, _)| p).collect();
    // Decades left out by the stride become minor lines.
    minor.extend(
        decades
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| !ticks.iter().any(|(q, _)| (q - p).abs() < eps)),
    );
    (ticks, minor)
}

/// A value axis over `values` (already checked), padded by 5 % of the span.
fn value_axis(label: String, values: &[f64], log: bool) -> AxisSpec {
    let (mut lo, mut hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            let p = if log { v.log10() } else { v };
            (a.min(p), b.max(p))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        0.06 * span
    } else if log {
        0.3
    } else {
        0.1 * hi.abs().max(1.0)
    };
    let pad = if log { pad.max(0.05) } else { pad };
    let (lo, hi) = (lo - pad, hi + pad);
    let (ticks, minor) = if log {
        log_ticks(lo, hi)
    } else {
        (linear_ticks(lo, hi, 5.0), vec![])
    };
    AxisSpec {
        label,
        range: (lo, hi),
        ticks,
        minor,
    }
}

/// The epoch axis over `epochs`.
fn epoch_axis(axis: EpochAxis, epochs: &[u32]) -> AxisSpec {
    let max = epochs.iter().copied().max().unwrap_or(0);
    let min = epochs.iter().copied().min().unwrap_or(0);
    match axis {
        EpochAxis::LogPlusOne => {
            let (lo, hi) = (axis.pos(min), axis.pos(max));
            let pad = 0.04 * (hi - lo).max(0.3);
            let mut candidates = vec![0u32];
            let mut base = 1u64;
            while base <= max as u64 {
                for m in [1u64, 2, 5] {
                    let e = m * base;
                    if e <= max as u64 && e >= min as u64 {
                        candidates.push(e as u32);
                    }
                }
                base *= 10;
            }
            candidates.retain(|&e| e >= min);
            if candidates.len() > 9 {
                candidates.retain(|&e| {
                    let s = e.to_string();
                    !s.starts_with('2') || e < 10
                });
            }
            // The last checkpoint gets a tick too unless one is close.
            if candidates
                .last()
                .is_some_and(|&c| axis.pos(max) - axis.pos(c) > 0.12)
            {
                candidates.push(max);
            }
            let ticks = candidates
                .into_iter()
                .map(|e| (axis.pos(e), e.to_string()))
                .collect();
            AxisSpec {
                label: "epoch (log scale of epoch + 1)".into(),
                range: (lo - pad, hi + pad),
                ticks,
                minor: vec![],
            }
        }
        _ => {
            let (lo, hi) = (min as f64, max as f64);
            let pad = 0.03 * (hi - lo).max(1.0);
            let step = nice_step((hi - lo).max(1.0), 6.0).max(1.0).round();
            let first = (lo / step).ceil() as i64;
            let last = (hi / step).floor() as i64;
            let ticks = (first..=last)
                .map(|i| {
                    let v = i as f64 * step;
                    (v, format!("{v:.0}"))
                })
                .collect();
            AxisSpec {
                label: "epoch".into(),
                range: (lo - pad, hi + pad),
                ticks,
                minor: vec![],
            }
        }
    }
}

/// A categorical axis: category `i` at position `i`.
fn category_axis(label: String, names: &[String]) -> AxisSpec {
    AxisSpec {
        label,
        range: (-0.4, names.len() as f64 - 0.6),
        ticks: names
            .iter()
            .enumerate()
            .map(|(i, n)| (i as f64, n.clone()))
            .collect(),
        minor: vec![],
    }
}

// ---------------------------------------------------------------------------------------------
// Styles and palettes.

/// Categorical palette: alternating dark and light colours (distinct in greyscale), paired
/// with distinct markers.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x3a, 0x93), // dark blue
    RGBColor(0xe6, 0x9f, 0x00), // orange (light)
    RGBColor(0x00, 0x8a, 0x60), // green (mid)
    RGBColor(0xc4, 0x39, 0x1d), // vermilion (mid-dark)
    RGBColor(0x56, 0xb4, 0xe9), // sky blue (light)
    RGBColor(0x6a, 0x2c, 0x8a), // purple (dark)
    RGBColor(0x9a, 0x9a, 0x2e), // olive (mid-light)
    RGBColor(0x40, 0x40, 0x40), // dark grey
];

const MARKERS: [Marker; 6] = [
    Marker::Circle,
    Marker::Square,
    Marker::Triangle,
    Marker::Diamond,
    Marker::Cross,
    Marker::InvTriangle,
];

/// Viridis at 9 evenly spaced points (matplotlib); lightness increases monotonically.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (0x44, 0x01, 0x54),
    (0x47, 0x2c, 0x7a),
    (0x3b, 0x51, 0x8b),
    (0x2c, 0x71, 0x8e),
    (0x21, 0x90, 0x8d),
    (0x27, 0xad, 0x81),
    (0x5c, 0xc8, 0x63),
    (0xaa, 0xdc, 0x32),
    (0xfd, 0xe7, 0x25),
];

/// Viridis at `t ∈ [0, 1]` (clamped), linearly interpolated.
fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

const TEXT: RGBColor = RGBColor(0x22, 0x22, 0x22);
const MUTED: RGBColor = RGBColor(0x55, 0x55, 0x55);
const GRID: RGBColor = RGBColor(0xdc, 0xdc, 0xdc);
const GRID_LIGHT: RGBColor = RGBColor(0xf0, 0xf0, 0xf0);
const AXIS: RGBColor = RGBColor(0x60, 0x60, 0x60);
const REFERENCE: RGBColor = RGBColor(0x80, 0x80, 0x80);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dash {
    None,
    Solid,
    Dashed,
    Dotted,
    LongDash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Circle,
    Square,
    Triangle,
    InvTriangle,
    Diamond,
    Cross,
    Dot,
}

#[derive(Debug, Clone, Copy)]
struct Style {
    color: RGBColor,
    dash: Dash,
    marker: Marker,
    /// Line width in logical pixels.
    width: f64,
    /// Marker radius in logical pixels.
    size: f64,
    alpha: f64,
}

impl Style {
    fn line(color: RGBColor, dash: Dash, marker: Marker) -> Self {
        Style {
            color,
            dash,
            marker,
            width: 2.0,
            size: 4.0,
            alpha: 1.0,
        }
    }

    fn points(color: RGBColor, marker: Marker, size: f64) -> Self {
        Style {
            color,
            dash: Dash::None,
            marker,
            width: 1.0,
            size,
            alpha: 1.0,
        }
    }
}

/// Dash pattern of a split: `train` solid, `test` dashed; variants of the test split as the
/// findings name them — `test (own means)` dashed, `test (train means)` long-dashed — and any
/// other split dotted.
fn split_dash(split: Option<&str>) -> Dash {
    match split {
        Some("train") | None => Dash::Solid,
        Some(s) if s.starts_with("test") && s.contains("train means") => Dash::LongDash,
        Some(s) if s.starts_with("test") => Dash::Dashed,
        _ => Dash::Dotted,
    }
}

// ---------------------------------------------------------------------------------------------
// Scenes: what a figure draws, independent of the backend (so that a PNG can be rendered at
// any scale from the same description as the SVG).

#[derive(Debug, Clone)]
struct Series {
    points: Vec<(f64, f64)>,
    style: Style,
    /// `(x, lo, hi)` of a shaded band around the line (empty: none).
    band: Vec<(f64, f64, f64)>,
}

#[derive(Debug, Clone)]
struct RefLine {
    vertical: bool,
    at: f64,
    style: Style,
}

#[derive(Debug, Clone)]
struct Note {
    at: (f64, f64),
    text: String,
    color: RGBColor,
}

#[derive(Debug, Clone)]
struct XyPanel {
    title: Option<String>,
    x: AxisSpec,
    y: AxisSpec,
    series: Vec<Series>,
    lines: Vec<RefLine>,
    notes: Vec<Note>,
    equal_aspect: bool,
}

#[derive(Debug, Clone)]
struct HeatPanel {
    x_label: String,
    y_label: String,
    columns: Vec<String>,
    rows: Vec<String>,
    /// `cells[row][column]`: the value, or `None` where the table has none.
    cells: Vec<Vec<Option<f64>>>,
    log: bool,
    /// Colour range in drawing coordinates (log10 of the value on a log scale).
    range: (f64, f64),
    bar: AxisSpec,
    annotate: bool,
}

#[derive(Debug, Clone)]
enum Panel {
    Xy(XyPanel),
    Heat(HeatPanel),
}

#[derive(Debug, Clone)]
struct LegendEntry {
    label: String,
    style: Style,
}

impl LegendEntry {
    fn new(label: impl Into<String>, style: Style) -> Self {
        LegendEntry {
            label: label.into(),
            style,
        }
    }
}

#[derive(Debug, Clone)]
struct Scene {
    title: String,
    subtitle: Vec<String>,
    width: u32,
    height: u32,
    panels: Vec<Panel>,
    columns: usize,
    legend: Vec<LegendEntry>,
}

/// Pixel sizes scaled for the output resolution.
#[derive(Clone, Copy)]
struct Px(f64);

impl Px {
    fn i(self, v: f64) -> i32 {
        (v * self.0).round() as i32
    }
    fn u(self, v: f64) -> u32 {
        (v * self.0).round().max(1.0) as u32
    }
    fn font(self, size: f64) -> f64 {
        size * self.0
    }
}

fn text_style(size: f64, color: &RGBColor) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(color)
}

fn text_width<DB: DrawingBackend, CT: plotters::coord::CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    text: &str,
    size: f64,
) -> u32 {
    area.estimate_text_size(text, &text_style(size, &TEXT))
        .map(|(w, _)| w)
        .unwrap_or((text.chars().count() as f64 * size * 0.6) as u32)
}

fn shape(style: &Style, px: Px, filled: bool) -> ShapeStyle {
    ShapeStyle {
        color: style.color.mix(style.alpha),
        filled,
        stroke_width: px.u(style.width),
    }
}

/// Draws a polyline with the style's dash pattern on any drawing area.
fn draw_path<DB, CT>(
    area: &DrawingArea<DB, CT>,
    points: &[CT::From],
    style: &Style,
    px: Px,
) -> Result<(), PlotError>
where
    DB: DrawingBackend,
    CT: plotters::coord::CoordTranslate,
    CT::From: Clone + 'static,
{
    if points.len() < 2 {
        return Ok(());
    }
    let st = shape(style, px, false);
    let pts = points.to_vec();
    let dashed = |on: f64, off: f64| {
        area.draw(&DashedPathElement::new(
            pts.clone(),
            px.i(on).max(1),
            px.i(off).max(1),
            st,
        ))
    };
    match style.dash {
        Dash::None => Ok(()),
        Dash::Solid => area.draw(&PathElement::new(pts.clone(), st)),
        Dash::Dashed => dashed(7.0, 4.0),
        Dash::Dotted => dashed(2.0, 3.0),
        Dash::LongDash => dashed(10.0, 5.0),
    }
    .map_err(draw_err)
}

/// Draws one marker centred at `at`.
fn draw_marker<DB, CT>(
    area: &DrawingArea<DB, CT>,
    at: CT::From,
    style: &Style,
    px: Px,
) -> Result<(), PlotError>
where
    DB: DrawingBackend,
    CT: plotters::coord::CoordTranslate,
    CT::From: Clone + 'static,
{
    let r = px.i(style.size).max(1);
    let fill = shape(style, px, true);
    let outline = ShapeStyle {
        color: WHITE.mix(style.alpha * 0.9),
        filled: false,
        stroke_width: 1,
    };
    let e = EmptyElement::at(at.clone());
    let res = match style.marker {
        Marker::None => Ok(()),
        Marker::Circle => area
            .draw(&(e + Circle::new((0, 0), r, fill)))
            .and_then(|_| area.draw(&(EmptyElement::at(at) + Circle::new((0, 0), r, outline)))),
        Marker::Dot => area.draw(&(e + Circle::new((0, 0), r, fill))),
        Marker::Square => {
            let s = (r as f64 * 0.85).round() as i32;
            area.draw(&(e + Rectangle::new([(-s, -s), (s, s)], fill)))
        }
        Marker::Triangle => {
            let h = (r as f64 * 1.2).round() as i32;
            area.draw(&(e + Polygon::new(vec![(0, -h), (h, h * 3 / 4), (-h, h * 3 / 4)], fill)))
        }
        Marker::InvTriangle => {
            let h = (r as f64 * 1.2).round() as i32;
            area.draw(&(e + Polygon::new(vec![(0, h), (h, -h * 3 / 4), (-h, -h * 3 / 4)], fill)))
        }
        Marker::Diamond => {
            let h = (r as f64 * 1.25).round() as i32;
            area.draw(&(e + Polygon::new(vec![(0, -h), (h, 0), (0, h), (-h, 0)], fill)))
        }
        Marker::Cross => {
            let st = ShapeStyle {
                stroke_width: px.u(2.0),
                ..fill
            };
            area.draw(&(e + Cross::new((0, 0), r, st)))
        }
    };
    res.map_err(draw_err)
}

fn draw_scene<DB: DrawingBackend>(
    scene: &Scene,
    root: &DrawingArea<DB, Shift>,
    scale: f64,
) -> Result<(), PlotError> {
    let px = Px(scale);
    root.fill(&WHITE).map_err(draw_err)?;
    let (w, _h) = root.dim_in_pixel();

    // Title and subtitle lines.
    let title_size = px.font(21.0);
    let sub_size = px.font(15.0);
    let mut y = px.i(10.0);
    let centred = |size: f64, color: &RGBColor| {
        text_style(size, color).pos(Pos::new(HPos::Center, VPos::Top))
    };
    root.draw_text(&scene.title, &centred(title_size, &TEXT), (w as i32 / 2, y))
        .map_err(draw_err)?;
    y += px.i(30.0);
    for line in &scene.subtitle {
        root.draw_text(line, &centred(sub_size, &MUTED), (w as i32 / 2, y))
            .map_err(draw_err)?;
        y += px.i(20.0);
    }
    let (_, body) = root.split_vertically(y + px.i(4.0));

    // Legend on the right, outside the plots.
    let legend_size = px.font(14.5);
    let (plots, legend_area) = if scene.legend.is_empty() {
        (body, None)
    } else {
        let widest = scene
            .legend
            .iter()
            .map(|e| text_width(&body, &e.label, legend_size))
            .max()
            .unwrap_or(0) as i32;
        let legend_w = (widest + px.i(58.0)).min(w as i32 * 2 / 5);
        let (p, l) = body.split_horizontally(w as i32 - legend_w);
        (p, Some(l))
    };
    if let Some(area) = &legend_area {
        draw_legend(area, &scene.legend, px, legend_size)?;
    }

    let columns = scene.columns.max(1);
    let rows = scene.panels.len().div_ceil(columns).max(1);
    let cells = plots.split_evenly((rows, columns));
    for (panel, area) in scene.panels.iter().zip(cells.iter()) {
        match panel {
            Panel::Xy(p) => draw_xy(p, area, px)?,
            Panel::Heat(p) => draw_heat(p, area, px)?,
        }
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    px: Px,
    size: f64,
) -> Result<(), PlotError> {
    let line_h = px.i(24.0);
    let mut y = px.i(18.0);
    let (x0, x1) = (px.i(6.0), px.i(36.0));
    for e in entries {
        let label_style = text_style(size, &TEXT).pos(Pos::new(HPos::Left, VPos::Center));
        draw_path(area, &[(x0, y), (x1, y)], &e.style, px)?;
        draw_marker(area, ((x0 + x1) / 2, y), &e.style, px)?;
        area.draw_text(&e.label, &label_style, (x1 + px.i(8.0), y))
            .map_err(draw_err)?;
        y += line_h;
    }
    Ok(())
}

/// Thins category labels that would overlap: every `k`-th label is kept.
fn thin_labels<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    ticks: &[(f64, String)],
    slot_px: f64,
    size: f64,
) -> Vec<(f64, String)> {
    let widest = ticks
        .iter()
        .map(|(_, l)| text_width(area, l, size))
        .max()
        .unwrap_or(0) as f64;
    let k = ((widest + 6.0) / slot_px.max(1.0)).ceil().max(1.0) as usize;
    ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| i % k == 0)
        .map(|(_, t)| t.clone())
        .collect()
}

/// A linear f64 axis whose tick marks (bold) and light grid lines sit exactly where given.
#[derive(Debug, Clone)]
struct Ticked {
    lo: f64,
    hi: f64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Ticked {
    fn new(range: (f64, f64), bold: Vec<f64>, light: Vec<f64>) -> Self {
        Ticked {
            lo: range.0,
            hi: range.1,
            bold,
            light,
        }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        if span == 0.0 || !span.is_finite() {
            return (limit.0 + limit.1) / 2;
        }
        let t = ((*v - self.lo) / span).clamp(-10.0, 10.0);
        limit.0 + ((limit.1 - limit.0) as f64 * t + 1e-3).floor() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

fn tick_label(ticks: &[(f64, String)], v: f64) -> String {
    ticks
        .iter()
        .find(|(p, _)| (p - v).abs() <= 1e-9 * p.abs().max(1.0))
        .map(|(_, l)| l.clone())
        .unwrap_or_default()
}

fn draw_xy<DB: DrawingBackend>(
    panel: &XyPanel,
    area: &DrawingArea<DB, Shift>,
    px: Px,
) -> Result<(), PlotError> {
    let tick_size = px.font(14.0);
    let desc_size = px.font(15.5);
    let (aw, ah) = area.dim_in_pixel();

    // Panel title (small multiples) above the chart.
    let area = match &panel.title {
        Some(t) => {
            let style = text_style(px.font(16.0), &TEXT).pos(Pos::new(HPos::Center, VPos::Top));
            area.draw_text(t, &style, (aw as i32 / 2, px.i(12.0)))
                .map_err(draw_err)?;
            area.split_vertically(px.i(34.0)).1
        }
        None => area.clone(),
    };
    let (aw, ah2) = area.dim_in_pixel();
    let _ = ah;

    let y_tick_w = panel
        .y
        .ticks
        .iter()
        .map(|(_, l)| text_width(&area, l, tick_size))
        .max()
        .unwrap_or(0) as i32;
    let y_area = y_tick_w + px.i(14.0) + px.i(28.0);
    let x_area = px.i(56.0);
    let (m_top, m_right, m_left, m_bottom) = (px.i(10.0), px.i(18.0), px.i(6.0), px.i(4.0));
    let plot_w = (aw as i32 - y_area - m_left - m_right).max(10) as f64;
    let plot_h = (ah2 as i32 - x_area - m_top - m_bottom).max(10) as f64;

    let (mut xr, mut yr) = (panel.x.range, panel.y.range);
    if panel.equal_aspect {
        // Expand the narrower range so that one data unit has the same length on both axes.
        let (sx, sy) = ((xr.1 - xr.0) / plot_w, (yr.1 - yr.0) / plot_h);
        if sx > sy {
            let c = (yr.0 + yr.1) / 2.0;
            let half = sx * plot_h / 2.0;
            yr = (c - half, c + half);
        } else {
            let c = (xr.0 + xr.1) / 2.0;
            let half = sy * plot_w / 2.0;
            xr = (c - half, c + half);
        }
    }
    // Category labels that would overlap are thinned.
    let x_ticks = if panel.x.ticks.len() > 1 {
        let slot = plot_w / ((xr.1 - xr.0).abs().max(1e-12))
            * (panel.x.ticks[1].0 - panel.x.ticks[0].0).abs();
        thin_labels(&area, &panel.x.ticks, slot, tick_size)
    } else {
        panel.x.ticks.clone()
    };

    // An axis description longer than its axis is set smaller (down to 70 %).
    let fit = [(&panel.x.label, plot_w), (&panel.y.label, plot_h)]
        .iter()
        .map(|(label, room)| {
            let w = text_width(&area, label, desc_size) as f64;
            if w > 0.0 {
                (room / w).min(1.0)
            } else {
                1.0
            }
        })
        .fold(1.0f64, f64::min)
        .max(0.7);
    let desc_size = desc_size * fit;
    let x_key: Vec<f64> = x_ticks.iter().map(|t| t.0).collect();
    let y_key: Vec<f64> = panel.y.ticks.iter().map(|t| t.0).collect();
    let mut chart = ChartBuilder::on(&area)
        .margin_top(m_top)
        .margin_right(m_right)
        .margin_left(m_left)
        .margin_bottom(m_bottom)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area)
        .build_cartesian_2d(
            Ticked::new(xr, x_key, panel.x.minor.clone()),
            Ticked::new(yr, y_key, panel.y.minor.clone()),
        )
        .map_err(draw_err)?;
    let x_fmt = |v: &f64| tick_label(&x_ticks, *v);
    let y_fmt = |v: &f64| tick_label(&panel.y.ticks, *v);
    chart
        .configure_mesh()
        .x_desc(panel.x.label.as_str())
        .y_desc(panel.y.label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(text_style(tick_size, &TEXT))
        .axis_desc_style(text_style(desc_size, &TEXT))
        .bold_line_style(ShapeStyle {
            color: GRID.to_rgba(),
            filled: false,
            stroke_width: px.u(1.0),
        })
        .light_line_style(ShapeStyle {
            color: GRID_LIGHT.to_rgba(),
            filled: false,
            stroke_width: px.u(1.0),
        })
        .axis_style(ShapeStyle {
            color: AXIS.to_rgba(),
            filled: false,
            stroke_width: px.u(1.0),
        })
        .set_all_tick_mark_size(px.i(4.0))
        .draw()
        .map_err(draw_err)?;

    let plot = chart.plotting_area();
    for line in &panel.lines {
        let pts = if line.vertical {
            [(line.at, yr.0), (line.at, yr.1)]
        } else {
            [(xr.0, line.at), (xr.1, line.at)]
        };
        draw_path(plot, &pts, &line.style, px)?;
    }
    for s in panel.series.iter().filter(|s| s.band.len() >= 2) {
        // The band: upper edge left to right, then the lower edge back.
        let poly: Vec<(f64, f64)> = s
            .band
            .iter()
            .map(|&(x, _, hi)| (x, hi))
            .chain(s.band.iter().rev().map(|&(x, lo, _)| (x, lo)))
            .collect();
        plot.draw(&Polygon::new(poly, s.style.color.mix(0.18).filled()))
            .map_err(draw_err)?;
    }
    for s in &panel.series {
        draw_path(plot, &s.points, &s.style, px)?;
    }
    for s in &panel.series {
        for &p in &s.points {
            draw_marker(plot, p, &s.style, px)?;
        }
    }
    for n in &panel.notes {
        let style = text_style(px.font(14.0), &n.color).pos(Pos::new(HPos::Left, VPos::Bottom));
        plot.draw(
            &(EmptyElement::at(n.at) + Text::new(n.text.clone(), (px.i(5.0), -px.i(3.0)), style)),
        )
        .map_err(draw_err)?;
    }
    Ok(())
}

fn draw_heat<DB: DrawingBackend>(
    panel: &HeatPanel,
    area: &DrawingArea<DB, Shift>,
    px: Px,
) -> Result<(), PlotError> {
    let tick_size = px.font(14.0);
    let desc_size = px.font(15.5);
    let (aw, ah) = area.dim_in_pixel();
    let bar_w = px.i(100.0);
    let (main, bar) = area.split_horizontally(aw as i32 - bar_w);

    let nx = panel.columns.len();
    let ny = panel.rows.len();
    let y_tick_w = panel
        .rows
        .iter()
        .map(|l| text_width(&main, l, tick_size))
        .max()
        .unwrap_or(0) as i32;
    let y_area = y_tick_w + px.i(14.0) + px.i(28.0);
    let x_area = px.i(56.0);
    let (m_top, m_right, m_left, m_bottom) = (px.i(10.0), px.i(10.0), px.i(6.0), px.i(4.0));
    let plot_w = (aw as i32 - bar_w - y_area - m_left - m_right).max(10) as f64;
    let plot_h = (ah as i32 - x_area - m_top - m_bottom).max(10) as f64;
    let cell_w = plot_w / nx.max(1) as f64;
    let cell_h = plot_h / ny.max(1) as f64;

    let x_all: Vec<(f64, String)> = panel
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (i as f64 + 0.5, c.clone()))
        .collect();
    let x_ticks = thin_labels(&main, &x_all, cell_w, tick_size);
    // First row at the top.
    let y_ticks: Vec<(f64, String)> = panel
        .rows
        .iter()
        .enumerate()
        .map(|(j, r)| ((ny - 1 - j) as f64 + 0.5, r.clone()))
        .collect();
    let x_key: Vec<f64> = x_ticks.iter().map(|t| t.0).collect();
    let y_key: Vec<f64> = y_ticks.iter().map(|t| t.0).collect();
    let mut chart = ChartBuilder::on(&main)
        .margin_top(m_top)
        .margin_right(m_right)
        .margin_left(m_left)
        .margin_bottom(m_bottom)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area)
        .build_cartesian_2d(
            Ticked::new((0.0, nx as f64), x_key, vec![]),
            Ticked::new((0.0, ny as f64), y_key, vec![]),
        )
        .map_err(draw_err)?;
    let x_fmt = |v: &f64| tick_label(&x_ticks, *v);
    let y_fmt = |v: &f64| tick_label(&y_ticks, *v);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(text_style(tick_size, &TEXT))
        .axis_desc_style(text_style(desc_size, &TEXT))
        .axis_style(ShapeStyle {
            color: AXIS.to_rgba(),
            filled: false,
            stroke_width: px.u(1.0),
        })
        .set_all_tick_mark_size(px.i(4.0))
        .draw()
        .map_err(draw_err)?;
    let plot = chart.plotting_area();
    let (lo, hi) = panel.range;
    let t_of = |v: f64| {
        let p = if panel.log { v.log10() } else { v };
        if hi > lo {
            (p - lo) / (hi - lo)
        } else {
            0.5
        }
    };
    let annotate = panel.annotate && cell_w >= px.font(44.0) && cell_h >= px.font(18.0);
    for (j, row) in panel.cells.iter().enumerate() {
        let y0 = (ny - 1 - j) as f64;
        for (i, cell) in row.iter().enumerate() {
            let x0 = i as f64;
            let (fill, text) = match cell {
                Some(v) => (viridis(t_of(*v)), Some(*v)),
                None => (RGBColor(0xee, 0xee, 0xee), None),
            };
            plot.draw(&Rectangle::new(
                [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                fill.filled(),
            ))
            .map_err(draw_err)?;
            if annotate {
                let (label, color) = match text {
                    Some(v) => (fmt_tick(v, None), if t_of(v) < 0.6 { WHITE } else { BLACK }),
                    None => ("–".to_string(), MUTED),
                };
                let style =
                    text_style(px.font(13.0), &color).pos(Pos::new(HPos::Center, VPos::Center));
                plot.draw(&Text::new(label, (x0 + 0.5, y0 + 0.5), style))
                    .map_err(draw_err)?;
            }
        }
    }
    // Thin white separators between cells.
    let sep = ShapeStyle {
        color: WHITE.to_rgba(),
        filled: false,
        stroke_width: px.u(1.0),
    };
    for i in 1..nx {
        plot.draw(&PathElement::new(
            vec![(i as f64, 0.0), (i as f64, ny as f64)],
            sep,
        ))
        .map_err(draw_err)?;
    }
    for j in 1..ny {
        plot.draw(&PathElement::new(
            vec![(0.0, j as f64), (nx as f64, j as f64)],
            sep,
        ))
        .map_err(draw_err)?;
    }

    // Colour bar, aligned with the plotting area.
    let bar_tick_w = panel
        .bar
        .ticks
        .iter()
        .map(|(_, l)| text_width(&bar, l, tick_size))
        .max()
        .unwrap_or(0) as i32;
    let bar_label_area = (bar_tick_w + px.i(12.0) + px.i(22.0)).min(bar_w - px.i(26.0));
    let bar_key: Vec<f64> = panel.bar.ticks.iter().map(|t| t.0).collect();
    let mut bar_chart = ChartBuilder::on(&bar)
        .margin_top(m_top)
        .margin_bottom(m_bottom + x_area)
        .margin_left(px.i(4.0))
        .margin_right(px.i(2.0))
        .right_y_label_area_size(bar_label_area)
        .build_cartesian_2d(
            Ticked::new((0.0, 1.0), vec![], vec![]),
            Ticked::new((lo, hi), bar_key, vec![]),
        )
        .map_err(draw_err)?;
    let b_fmt = |v: &f64| tick_label(&panel.bar.ticks, *v);
    bar_chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc(panel.bar.label.as_str())
        .y_label_formatter(&b_fmt)
        .label_style(text_style(tick_size, &TEXT))
        .axis_desc_style(text_style(desc_size, &TEXT))
        .axis_style(ShapeStyle {
            color: AXIS.to_rgba(),
            filled: false,
            stroke_width: px.u(1.0),
        })
        .set_all_tick_mark_size(px.i(4.0))
        .draw()
        .map_err(draw_err)?;
    let steps = 96;
    let bar_plot = bar_chart.plotting_area();
    for k in 0..steps {
        let a = lo + (hi - lo) * k as f64 / steps as f64;
        let b = lo + (hi - lo) * (k + 1) as f64 / steps as f64;
        let color = viridis((k as f64 + 0.5) / steps as f64);
        bar_plot
            .draw(&Rectangle::new([(0.0, a), (1.0, b)], color.filled()))
            .map_err(draw_err)?;
    }
    Ok(())
}

fn check_size(size: (u32, u32)) -> Result<(u32, u32), PlotError> {
    if SIZE_RANGE.contains(&size.0) && SIZE_RANGE.contains(&size.1) {
        Ok(size)
    } else {
        Err(PlotError::BadSize {
            width: size.0,
            height: size.1,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Metric vs epoch.

/// Series keys: which of run / layer / probe vary, and the label of each group.
struct Groups {
    keys: Vec<(Option<String>, Option<String>, Option<String>)>,
    vary: [bool; 3],
}

impl Groups {
    fn of(rows: &[&TidyRow]) -> Groups {
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

    fn index(&self, r: &TidyRow) -> usize {
        let k = (r.run.clone(), r.layer.clone(), r.probe.clone());
        self.keys.iter().position(|g| *g == k).unwrap_or(0)
    }

    fn label(&self, g: usize) -> String {
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

    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Options shared by [`EpochPlot`] and [`SmallMultiples`] panels.
#[derive(Debug, Clone, Default)]
struct EpochOptions {
    filters: Filters,
    x_axis: EpochAxis,
    markers: Vec<(u32, String)>,
    references: Vec<(f64, String)>,
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

/// Builds one metric-vs-epoch panel and the legend it needs. `groups`/`splits` are shared
/// across panels so that colours and dashes agree.
fn epoch_panel(
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
    title: Option<String>,
    y_label: Option<String>,
    scale: Scale,
    opts: EpochOptions,
    size: (u32, u32),
}

impl EpochPlot {
    /// A plot of `nc1` (change with [`metric`](Self::metric)) from a tidy table or reports.
    pub fn new<T: TidySource + ?Sized>(data: &T) -> Self {
        EpochPlot {
            rows: data.tidy_rows(),
            metric: "nc1".into(),
            title: None,
            y_label: None,
            scale: Scale::Log,
            opts: EpochOptions::default(),
            size: (760, 460),
        }
    }

    /// Probe accuracy against epochs from a probe table ([`ProbeReport::to_tidy_many`]):
    /// metric `accuracy`, linear y, train solid and test dashed, one colour per layer/probe.
    pub fn probe_accuracy<T: TidySource + ?Sized>(data: &T) -> Self {
        EpochPlot::new(data)
            .metric("accuracy")
            .scale(Scale::Linear)
            .title("Linear-probe accuracy vs epoch")
    }

    /// The metric to draw (a value of the `metric` column). Default `nc1`.
    pub fn metric(mut self, metric: impl Into<String>) -> Self {
        self.metric = metric.into();
        self
    }

    /// The title (default: the metric's short name and the filters).
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

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

    /// Figure size in pixels (default 760 × 460).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
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
        let size = check_size(self.size)?;
        let y_label = self
            .y_label
            .clone()
            .unwrap_or_else(|| metric_label(&self.metric));
        let (panel, legend) =
            epoch_panel(rows, &self.metric, self.scale, y_label, &self.opts, None)?;
        let title = self.title.clone().unwrap_or_else(|| {
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

fn with_filters(title: String, filters: &Filters) -> String {
    match filters.describe() {
        d if d.is_empty() => title,
        d => format!("{title} — {d}"),
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

// ---------------------------------------------------------------------------------------------
// Small multiples.

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
    title: Option<String>,
    opts: EpochOptions,
    size: Option<(u32, u32)>,
}

impl SmallMultiples {
    /// Panels for `nc1` only until [`metrics`](Self::metrics) is set.
    pub fn new<T: TidySource + ?Sized>(data: &T) -> Self {
        SmallMultiples {
            rows: data.tidy_rows(),
            metrics: vec!["nc1".into()],
            scales: vec![],
            default_scale: Scale::Log,
            columns: 2,
            title: None,
            opts: EpochOptions::default(),
            size: None,
        }
    }

    /// NC1, NC2 (ETF distance of the means), NC3 and NC4 — those of them present in the data —
    /// with [`Scale::Auto`] for NC4 (a mismatch fraction, often exactly 0) and log axes for the
    /// others.
    pub fn nc_overview<T: TidySource + ?Sized>(data: &T) -> Self {
        let mut g = SmallMultiples::new(data);
        let wanted = ["nc1", "nc2_etf_distance", "nc3", "nc4"];
        let present: Vec<String> = match &g.rows {
            Ok(rows) => wanted
                .iter()
                .filter(|m| rows.iter().any(|r| r.metric == **m))
                .map(|m| m.to_string())
                .collect(),
            Err(_) => vec![],
        };
        g.metrics = if present.is_empty() {
            vec!["nc1".into()]
        } else {
            present
        };
        g.scales.push(("nc4".into(), Scale::Auto));
        g.title = Some("Neural Collapse vs epoch".into());
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

    /// The title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    epoch_option_setters!(
        "The x axis of every panel (default [`EpochAxis::Auto`], decided on all panels' epochs).",
        "A vertical line at `epoch` in every panel."
    );

    /// Figure size (default: 440 × 310 per panel plus title and legend).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = Some((width, height));
        self
    }

    /// Draws the figure.
    ///
    /// # Errors
    /// [`PlotError::Invalid`] for no metrics or 0 columns; otherwise as [`EpochPlot::draw`], for
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
        let size = check_size(
            self.size
                .unwrap_or((440 * cols as u32 + legend_w, 310 * nrows as u32 + 50)),
        )?;
        let title = self
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

// ---------------------------------------------------------------------------------------------
// Metric vs layer.

/// Layers in first-appearance order, or the explicit order (which also filters).
fn layer_order(rows: &[&TidyRow], explicit: &Option<Vec<String>>) -> Vec<String> {
    match explicit {
        Some(l) => l.clone(),
        None => distinct(rows.iter().map(|r| &r.layer))
            .into_iter()
            .flatten()
            .collect(),
    }
}

/// Fails with [`PlotError::Ambiguous`] if the rows have several runs (or probes).
fn require_single(rows: &[&TidyRow]) -> Result<(), PlotError> {
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
/// Layers are taken in the order they first appear (see the [module docs](self)) or from
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
    title: Option<String>,
    y_label: Option<String>,
    size: (u32, u32),
}

impl LayerPlot {
    /// A plot of `nc1` (change with [`metric`](Self::metric)) from a tidy table or reports.
    pub fn new<T: TidySource + ?Sized>(data: &T) -> Self {
        LayerPlot {
            rows: data.tidy_rows(),
            metric: "nc1".into(),
            filters: Filters::default(),
            layers: None,
            epochs: None,
            max_epochs: 8,
            scale: Scale::Log,
            title: None,
            y_label: None,
            size: (760, 460),
        }
    }

    /// The metric (default `nc1`).
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

    /// The title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// The y-axis label (default: [`metric_label`]).
    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = Some(label.into());
        self
    }

    /// Figure size in pixels (default 760 × 460).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Draws the figure.
    ///
    /// # Errors
    /// As [`EpochPlot::draw`]; [`PlotError::Ambiguous`] for several runs or probes;
    /// [`PlotError::Duplicate`] for two values at one (epoch, split, layer);
    /// [`PlotError::NoData`] if the chosen layers or epochs have no rows.
    pub fn draw(&self) -> Result<Figure, PlotError> {
        let rows = self.rows.as_ref().map_err(Clone::clone)?;
        let size = check_size(self.size)?;
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
        let title = self.title.clone().unwrap_or_else(|| {
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

// ---------------------------------------------------------------------------------------------
// Heat map.

/// A layer × epoch heat map of one metric on one split: layers are rows (first layer at the
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
    title: Option<String>,
    size: Option<(u32, u32)>,
}

impl HeatMap {
    /// A heat map of `nc1` (change with [`metric`](Self::metric)).
    pub fn new<T: TidySource + ?Sized>(data: &T) -> Self {
        HeatMap {
            rows: data.tidy_rows(),
            metric: "nc1".into(),
            filters: Filters::default(),
            layers: None,
            scale: Scale::Log,
            annotate: true,
            title: None,
            size: None,
        }
    }

    /// The metric (default `nc1`).
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

    /// The title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Figure size (default: from the numbers of layers and epochs).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = Some((width, height));
        self
    }

    /// Draws the figure.
    ///
    /// # Errors
    /// As [`EpochPlot::draw`]; [`PlotError::Ambiguous`] for several splits, runs or probes;
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
        let title = self.title.clone().unwrap_or_else(|| {
            let mut t = format!("{} by layer and epoch", metric_short(&self.metric));
            if let Some(s) = &split {
                t.push_str(&format!(" — {s} split"));
            }
            t
        });
        let size = check_size(self.size.unwrap_or((
            (260 + 56 * epochs.len() as u32).clamp(560, 1400),
            (150 + 34 * layers.len() as u32).clamp(320, 1000),
        )))?;
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

// ---------------------------------------------------------------------------------------------
// Probe accuracy vs NC1.

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
    title: Option<String>,
    size: (u32, u32),
}

impl Nc1AccuracyPlot {
    /// NC values from `nc` (an NC tidy table or reports), accuracies from `probe` (a probe
    /// tidy table or reports).
    pub fn new<A: TidySource + ?Sized, B: TidySource + ?Sized>(nc: &A, probe: &B) -> Self {
        Nc1AccuracyPlot {
            nc: nc.tidy_rows(),
            probe: probe.tidy_rows(),
            nc_metric: "nc1".into(),
            nc_split: "train".into(),
            probe_split: "test".into(),
            probe_name: None,
            run: None,
            scale: Scale::Log,
            title: None,
            size: (740, 480),
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

    /// The title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Figure size in pixels (default 740 × 480).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Draws the figure.
    ///
    /// # Errors
    /// [`PlotError::NoData`] if either table lacks its metric/split or no checkpoint is in
    /// both; [`PlotError::Duplicate`] if a checkpoint has two NC values;
    /// [`PlotError::NonFinite`] / [`PlotError::NonPositive`] (log x) as in [`EpochPlot::draw`].
    pub fn draw(&self) -> Result<Figure, PlotError> {
        let nc_rows = self.nc.as_ref().map_err(Clone::clone)?;
        let probe_rows = self.probe.as_ref().map_err(Clone::clone)?;
        let size = check_size(self.size)?;
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
        let acc = select(probe_rows, "accuracy", &probe_filters)?;
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

// ---------------------------------------------------------------------------------------------
// Class-mean geometry.

/// Largest number of samples [`MeanGeometryPlot::samples`] draws.
pub const MAX_GEOMETRY_SAMPLES: usize = 5000;

/// The centred class means `μ_c − μ_G` projected on their first two principal axes, with the
/// classifier rows `w_c` and a seeded subsample of the samples when given.
///
/// ```text
/// Ṁ = [μ_c − μ_G]_c = U S Vᵀ          (d × C, thin SVD: Householder QR + one-sided Jacobi)
/// u_k = Ṁ v_k / s_k,  k = 1, 2         principal axes of the centred means
/// mean c   ↦ ((μ_c − μ_G)·u_1, (μ_c − μ_G)·u_2) = (s_1 v_1[c], s_2 v_2[c])
/// sample i ↦ ((h_i − μ_G)·u_1, (h_i − μ_G)·u_2)
/// row w_c  ↦ α (w_c·u_1, w_c·u_2),  α = ‖Ṁ‖_F / ‖W‖_F   (so W and Ṁ share a scale, as in NC3)
/// ```
///
/// This is the PCA of the `C` centred means computed with the crate's own SVD of the `d × C`
/// matrix `Ṁ` in `O(d·C²)`; no `d × d` matrix is formed. The subtitle states the share of
/// `‖Ṁ‖²_F` the plane holds (`(s_1² + s_2²)/Σ s_k²`; a simplex ETF spreads it evenly, `2/(C−1)`)
/// and the mean pairwise cosine of the centred means next to the simplex-ETF value `−1/(C−1)`.
/// Axes have equal scales.
///
/// ```
/// use ndarray::array;
/// use neural_collapse::prelude::*;
///
/// let x = array![[1.0f32, 0.0], [0.9, 0.1], [-0.5, 0.9], [-0.4, 0.8], [-0.5, -0.9], [-0.6, -0.8]];
/// let f = Features::new(x, vec![0, 0, 1, 1, 2, 2]);
/// let fig = MeanGeometryPlot::from_features(&f).samples(6, 0).draw()?;
/// assert!(fig.svg().contains("−1/(C−1) = −0.5"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct MeanGeometryPlot<'a> {
    stats: Option<&'a ClassStats>,
    features: Option<&'a Features>,
    classifier: Option<&'a Classifier>,
    samples: usize,
    seed: u64,
    global_mean: GlobalMean,
    class_names: Option<Vec<String>>,
    title: Option<String>,
    size: (u32, u32),
}

impl<'a> MeanGeometryPlot<'a> {
    /// The geometry of the class means in `stats`.
    pub fn new(stats: &'a ClassStats) -> Self {
        MeanGeometryPlot {
            stats: Some(stats),
            ..MeanGeometryPlot::new_empty()
        }
    }

    /// The geometry of the class means of `features` (by `labels`), whose samples
    /// [`samples`](Self::samples) can show.
    pub fn from_features(features: &'a Features) -> Self {
        MeanGeometryPlot {
            features: Some(features),
            ..MeanGeometryPlot::new_empty()
        }
    }

    fn new_empty() -> Self {
        MeanGeometryPlot {
            stats: None,
            features: None,
            classifier: None,
            samples: 0,
            seed: 0,
            global_mean: GlobalMean::ClassMeans,
            class_names: None,
            title: None,
            size: (800, 640),
        }
    }

    /// Also draw the classifier rows `w_c` (rescaled, see above).
    pub fn classifier(mut self, classifier: &'a Classifier) -> Self {
        self.classifier = Some(classifier);
        self
    }

    /// Draw up to `max` samples (at most [`MAX_GEOMETRY_SAMPLES`]) chosen uniformly without
    /// replacement by a generator seeded with `seed` (only with
    /// [`from_features`](Self::from_features)).
    pub fn samples(mut self, max: usize, seed: u64) -> Self {
        self.samples = max;
        self.seed = seed;
        self
    }

    /// The global-mean convention (default: mean of the class means).
    pub fn global_mean(mut self, g: GlobalMean) -> Self {
        self.global_mean = g;
        self
    }

    /// Names printed next to the class means (default: the class index).
    pub fn class_names<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.class_names = Some(names.iter().map(|n| n.as_ref().to_string()).collect());
        self
    }

    /// The title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Figure size in pixels (default 800 × 640).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Draws the figure.
    ///
    /// # Errors
    /// [`PlotError::Invalid`] for fewer than 2 classes, an empty class, non-finite features,
    /// coinciding class means, a classifier whose shape differs from `C × d` or is zero,
    /// class names of the wrong length, or samples requested without features.
    pub fn draw(&self) -> Result<Figure, PlotError> {
        let size = check_size(self.size)?;
        let invalid = |e: crate::Error| PlotError::Invalid(e.to_string());
        let owned;
        let stats = match (self.stats, self.features) {
            (Some(s), _) => s,
            (None, Some(f)) => {
                owned = ClassStats::from_data(f.x.view(), &f.labels).map_err(invalid)?;
                &owned
            }
            (None, None) => return Err(PlotError::Invalid("no class statistics".into())),
        };
        let c = stats.classes();
        if c < 2 {
            return Err(PlotError::Invalid(format!(
                "class-mean geometry needs at least 2 classes, found {c}"
            )));
        }
        stats.require_all_classes().map_err(invalid)?;
        if stats.means().iter().any(|v| !v.is_finite()) {
            return Err(PlotError::Invalid("class means are not finite".into()));
        }
        if self.samples > 0 && self.features.is_none() {
            return Err(PlotError::Invalid(
                "samples need features: use MeanGeometryPlot::from_features".into(),
            ));
        }
        let names: Vec<String> = match &self.class_names {
            Some(n) if n.len() != c => {
                return Err(PlotError::Invalid(format!(
                    "{} class names for {c} classes",
                    n.len()
                )))
            }
            Some(n) => n.clone(),
            None => (0..c).map(|i| i.to_string()).collect(),
        };
        let centered = stats.centered_means(self.global_mean); // C × d
        let svd = crate::linalg::thin_svd(centered.t());
        let total: f64 = svd.s.iter().map(|s| s * s).sum();
        if total <= 0.0 {
            return Err(PlotError::Invalid(
                "all class means coincide: nothing to project".into(),
            ));
        }
        let s_max = svd.s[0];
        let axes: Vec<Array1<f64>> = (0..2)
            .map(|k| {
                let s = svd.s.get(k).copied().unwrap_or(0.0);
                if k < svd.v.ncols() && s > 1e-12 * s_max {
                    centered.t().dot(&svd.v.column(k)) / s
                } else {
                    Array1::zeros(stats.dim())
                }
            })
            .collect();
        let project = |v: ndarray::ArrayView1<'_, f64>| (v.dot(&axes[0]), v.dot(&axes[1]));
        let means: Vec<(f64, f64)> = centered.outer_iter().map(project).collect();
        let share = |k: usize| svd.s.get(k).map_or(0.0, |s| s * s / total);

        // Classifier rows, rescaled.
        let w_points: Option<Vec<(f64, f64)>> = match self.classifier {
            None => None,
            Some(cl) => {
                if cl.w.dim() != (c, stats.dim()) {
                    return Err(PlotError::Invalid(format!(
                        "classifier W is {} × {}, expected {c} × {} (classes × feature dimension)",
                        cl.w.nrows(),
                        cl.w.ncols(),
                        stats.dim()
                    )));
                }
                let fw = cl.w.iter().map(|v| v * v).sum::<f64>().sqrt();
                if !(fw.is_finite() && fw > 0.0) {
                    return Err(PlotError::Invalid(format!(
                        "classifier W has Frobenius norm {fw}; it cannot be rescaled"
                    )));
                }
                let alpha = total.sqrt() / fw;
                Some(
                    cl.w.outer_iter()
                        .map(|row| {
                            let (a, b) = project(row);
                            (alpha * a, alpha * b)
                        })
                        .collect(),
                )
            }
        };

        // Seeded subsample of the samples.
        let mut sample_points: Vec<Vec<(f64, f64)>> = vec![Vec::new(); c];
        let mut n_drawn = 0;
        let mut n_total = 0;
        if let (Some(f), true) = (self.features, self.samples > 0) {
            n_total = f.labels.len();
            let k = self.samples.min(MAX_GEOMETRY_SAMPLES).min(n_total);
            let mut idx: Vec<usize> = (0..n_total).collect();
            let mut rng = crate::probe::SplitMix64(self.seed);
            for i in 0..k {
                let j = i + rng.below(n_total - i);
                idx.swap(i, j);
            }
            let g = stats.global_mean(self.global_mean);
            for &i in &idx[..k] {
                let h: Array1<f64> = f.x.row(i).mapv(f64::from) - &g;
                let y = f.labels[i] as usize;
                if y < c {
                    sample_points[y].push(project(h.view()));
                }
            }
            n_drawn = k;
        }

        // Range: symmetric about μ_G, equal scales.
        let r = means
            .iter()
            .chain(w_points.iter().flatten())
            .chain(sample_points.iter().flatten())
            .map(|(a, b)| a.abs().max(b.abs()))
            .fold(0.0f64, f64::max);
        let r = if r > 0.0 { r * 1.15 } else { 1.0 };
        let axis = |k: usize| {
            let mut a = value_axis(
                format!(
                    "PC{} of the class means ({:.0}% of ‖μ_c − μ_G‖²)",
                    k + 1,
                    100.0 * share(k)
                ),
                &[-r, r],
                false,
            );
            a.range = (-r, r);
            a
        };
        let class_color = |i: usize| {
            if c <= PALETTE.len() {
                PALETTE[i]
            } else {
                viridis(0.9 * i as f64 / (c - 1) as f64)
            }
        };
        let mut series = Vec::new();
        for (i, pts) in sample_points.iter().enumerate() {
            if !pts.is_empty() {
                let mut st = Style::points(class_color(i), Marker::Dot, 1.8);
                st.alpha = 0.35;
                series.push(Series {
                    points: pts.clone(),
                    style: st,
                    band: vec![],
                });
            }
        }
        if let Some(w) = &w_points {
            for (i, &p) in w.iter().enumerate() {
                let mut line = Style::line(class_color(i), Dash::Dashed, Marker::None);
                line.width = 1.5;
                series.push(Series {
                    points: vec![(0.0, 0.0), p],
                    style: line,
                    band: vec![],
                });
                series.push(Series {
                    points: vec![p],
                    style: Style::points(class_color(i), Marker::Triangle, 5.0),
                    band: vec![],
                });
            }
        }
        for (i, &p) in means.iter().enumerate() {
            series.push(Series {
                points: vec![p],
                style: Style::points(class_color(i), Marker::Circle, 6.0),
                band: vec![],
            });
        }
        let notes = means
            .iter()
            .enumerate()
            .map(|(i, &p)| Note {
                at: p,
                text: names[i].clone(),
                color: TEXT,
            })
            .collect();
        let origin = Style {
            width: 1.0,
            ..Style::line(RGBColor(0xb0, 0xb0, 0xb0), Dash::Solid, Marker::None)
        };
        let mut legend = vec![LegendEntry::new(
            "class mean μ_c − μ_G",
            Style::points(TEXT, Marker::Circle, 6.0),
        )];
        if w_points.is_some() {
            legend.push(LegendEntry::new(
                "classifier row w_c (rescaled)",
                Style {
                    width: 1.5,
                    ..Style::line(TEXT, Dash::Dashed, Marker::Triangle)
                },
            ));
        }
        if n_drawn > 0 {
            let mut st = Style::points(MUTED, Marker::Dot, 2.0);
            st.alpha = 0.6;
            legend.push(LegendEntry::new(
                format!("{n_drawn} of {n_total} samples"),
                st,
            ));
        }
        // Mean pairwise cosine of the centred means vs the simplex ETF's −1/(C−1).
        let norms: Vec<f64> = centered.outer_iter().map(|m| m.dot(&m).sqrt()).collect();
        let mut cos_sum = 0.0;
        let mut pairs = 0usize;
        for a in 0..c {
            for b in a + 1..c {
                if norms[a] > 0.0 && norms[b] > 0.0 {
                    cos_sum += centered.row(a).dot(&centered.row(b)) / (norms[a] * norms[b]);
                    pairs += 1;
                }
            }
        }
        let mean_cos = if pairs > 0 {
            cos_sum / pairs as f64
        } else {
            f64::NAN
        };
        let etf = -1.0 / (c as f64 - 1.0);
        let subtitle = vec![
            format!(
                "C = {c}: mean cos(μ_c − μ_G, μ_c′ − μ_G) = {}; simplex ETF: −1/(C−1) = {}",
                fmt_signed(mean_cos),
                fmt_signed(etf)
            ),
            format!(
                "this plane holds {:.0}% of ‖μ_c − μ_G‖² (a simplex ETF: {:.0}%)",
                100.0 * (share(0) + share(1)),
                100.0 * (2.0 / (c as f64 - 1.0)).min(1.0)
            ),
        ];
        let title = self.title.clone().unwrap_or_else(|| {
            let mut t = "Class-mean geometry".to_string();
            if let Some(f) = self.features {
                let mut parts = Vec::new();
                if let Some(l) = &f.layer {
                    parts.push(format!("layer {l}"));
                }
                if let Some(e) = f.epoch {
                    parts.push(format!("epoch {e}"));
                }
                if let Some(s) = &f.split {
                    parts.push(format!("{s} split"));
                }
                if !parts.is_empty() {
                    t.push_str(" — ");
                    t.push_str(&parts.join(", "));
                }
            }
            t
        });
        Figure::render(Scene {
            title,
            subtitle,
            width: size.0,
            height: size.1,
            panels: vec![Panel::Xy(XyPanel {
                title: None,
                x: axis(0),
                y: axis(1),
                series,
                lines: vec![
                    RefLine {
                        vertical: true,
                        at: 0.0,
                        style: origin,
                    },
                    RefLine {
                        vertical: false,
                        at: 0.0,
                        style: origin,
                    },
                ],
                notes,
                equal_aspect: true,
            })],
            columns: 1,
            legend,
        })
    }
}

/// A signed number with 3 decimals and a typographic minus.
fn fmt_signed(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.replace('-', "−")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_of_log_axes() {
        // Four decades: labels at powers of ten.
        let (t, minor) = log_ticks(-3.1, 0.2);
        let labels: Vec<&str> = t.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["0.001", "0.01", "0.1", "1"]);
        assert!(!minor.is_empty());
        // Half a decade: 1-2-5 ticks.
        let (t, _) = log_ticks(0.1f64.log10(), 0.6f64.log10());
        let labels: Vec<&str> = t.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6"]);
        // Tiny values are written with powers of ten.
        assert_eq!(fmt_tick(1e-6, None), "10⁻⁶");
        assert_eq!(fmt_tick(5e-6, None), "5×10⁻⁶");
        assert_eq!(fmt_tick(2e5, None), "2×10⁵");
        assert_eq!(fmt_tick(0.002, None), "0.002");
    }

    #[test]
    fn epoch_axis_choice() {
        let geometric = [0, 1, 2, 5, 10, 20, 50, 100, 200];
        assert_eq!(EpochAxis::Auto.resolve(&geometric), EpochAxis::LogPlusOne);
        let uniform: Vec<u32> = (0..=100).step_by(10).collect();
        assert_eq!(EpochAxis::Auto.resolve(&uniform), EpochAxis::Linear);
        let a = epoch_axis(EpochAxis::LogPlusOne, &geometric);
        assert_eq!(a.ticks[0], (0.0, "0".to_string()));
        assert!(a.range.0 < 0.0);
    }

    #[test]
    fn spread_keeps_ends() {
        let e: Vec<u32> = (0..=100).collect();
        let s = spread_epochs(&e, 5);
        assert_eq!(s.len(), 5);
        assert_eq!((s[0], s[4]), (0, 100));
    }

    #[test]
    fn every_label_character_is_in_the_bundled_font() {
        use ab_glyph::{Font, FontRef};
        let font = FontRef::try_from_slice(FONT).unwrap();
        let mut texts: Vec<String> = [
            "nc1",
            "nc1_trace_ratio",
            "cdnv",
            "nc2_equinorm",
            "nc2_equiangularity",
            "nc2_max_angle",
            "nc2_etf_distance",
            "nc2_equinorm_w",
            "nc2_etf_distance_w",
            "nc3",
            "nc4",
            "accuracy",
        ]
        .iter()
        .map(|m| metric_label(m))
        .collect();
        texts.extend([
            fmt_tick(1e-9, None),
            fmt_tick(-2e7, None),
            "classifier row w_c (×‖Ṁ‖_F/‖W‖_F)".into(),
            "C = 10: mean cos(μ_c − μ_G, μ_c′ − μ_G) = −0.1; simplex ETF: −1/(C−1) = −0.111".into(),
            "PC1 of the centred class means (41% of ‖μ_c − μ_G‖²) — layer · train –".into(),
            superscript(-1234567890),
        ]);
        for t in texts {
            for ch in t.chars() {
                assert_ne!(
                    font.glyph_id(ch).0,
                    0,
                    "{ch:?} (U+{:04X}) of {t:?}",
                    ch as u32
                );
            }
        }
    }
}
