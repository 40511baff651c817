//! The scene model: what a figure draws (panels, series, reference lines, notes, legend),
//! independent of the backend, so that a PNG can be rendered at any scale from the same
//! description as the SVG.

use plotters::style::RGBColor;

use super::axes::AxisSpec;
use super::style::Style;

#[derive(Debug, Clone)]
pub(super) struct Series {
    pub(super) points: Vec<(f64, f64)>,
    pub(super) style: Style,
    /// `(x, lo, hi)` of a shaded band around the line (empty: none).
    pub(super) band: Vec<(f64, f64, f64)>,
}

#[derive(Debug, Clone)]
pub(super) struct RefLine {
    pub(super) vertical: bool,
    pub(super) at: f64,
    pub(super) style: Style,
}

#[derive(Debug, Clone)]
pub(super) struct Note {
    pub(super) at: (f64, f64),
    pub(super) text: String,
    pub(super) color: RGBColor,
}

#[derive(Debug, Clone)]
pub(super) struct XyPanel {
    pub(super) title: Option<String>,
    pub(super) x: AxisSpec,
    pub(super) y: AxisSpec,
    pub(super) series: Vec<Series>,
    pub(super) lines: Vec<RefLine>,
    pub(super) notes: Vec<Note>,
    pub(super) equal_aspect: bool,
}

#[derive(Debug, Clone)]
pub(super) struct HeatPanel {
    pub(super) x_label: String,
    pub(super) y_label: String,
    pub(super) columns: Vec<String>,
    pub(super) rows: Vec<String>,
    /// `cells[row][column]`: the value, or `None` where the table has none.
    pub(super) cells: Vec<Vec<Option<f64>>>,
    pub(super) log: bool,
    /// Colour range in drawing coordinates (log10 of the value on a log scale).
    pub(super) range: (f64, f64),
    pub(super) bar: AxisSpec,
    pub(super) annotate: bool,
}

#[derive(Debug, Clone)]
pub(super) enum Panel {
    Xy(XyPanel),
    Heat(HeatPanel),
}

#[derive(Debug, Clone)]
pub(super) struct LegendEntry {
    pub(super) label: String,
    pub(super) style: Style,
}

impl LegendEntry {
    pub(super) fn new(label: impl Into<String>, style: Style) -> Self {
        LegendEntry {
            label: label.into(),
            style,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Scene {
    pub(super) title: String,
    pub(super) subtitle: Vec<String>,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) panels: Vec<Panel>,
    pub(super) columns: usize,
    pub(super) legend: Vec<LegendEntry>,
}
