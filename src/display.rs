//! Rich display in Jupyter (evcxr): HTML tables for the crate's reports and for any polars
//! `DataFrame`.
//!
//! evcxr shows the value of a cell's last expression through its `evcxr_display` method when it
//! has one: the method prints `EVCXR_BEGIN_CONTENT <mime>`, the content and `EVCXR_END_CONTENT`.
//! [`NcReport`] and [`ProbeReport`] build
//! their tables with [`HtmlTable`]; a `DataFrame` is shown with [`Table`] (a bounded number of
//! rows, head and tail, and the shape); figures ([`Figure`](crate::plot::Figure)) are shown as
//! SVG.
//!
//! ```
//! use neural_collapse::display::{HtmlTable, Align, Cell};
//!
//! let mut t = HtmlTable::new("NC report").column("metric", Align::Left).column("value", Align::Right);
//! t.row([Cell::code("nc1"), Cell::text("1.0e-2")]);
//! assert!(t.to_html().contains("<code>nc1</code>"));
//! ```

use polars::prelude::{AnyValue, Column, DataFrame};

use crate::metrics::NcReport;
use crate::probe::ProbeReport;

/// Escapes `&`, `<` and `>` for HTML text.
///
/// ```
/// assert_eq!(neural_collapse::display::escape("a<b & c"), "a&lt;b &amp; c");
/// ```
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Prints `content` as an evcxr rich output of the given MIME type (`text/html`,
/// `image/svg+xml`, …): `EVCXR_BEGIN_CONTENT <mime>\n<content>\nEVCXR_END_CONTENT`.
///
/// A failed write (stdout closed or full) is ignored rather than a panic: a display hook has
/// no caller to return an error to.
pub fn evcxr_print(mime: &str, content: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stdout().lock(),
        "EVCXR_BEGIN_CONTENT {mime}\n{content}\nEVCXR_END_CONTENT"
    );
}

/// Horizontal alignment of a table column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Left-aligned (text).
    Left,
    /// Right-aligned (numbers).
    Right,
}

impl Align {
    fn css(self) -> &'static str {
        match self {
            Align::Left => "left",
            Align::Right => "right",
        }
    }
}

/// One cell of an [`HtmlTable`]: its HTML, already escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell(String);

impl Cell {
    /// Plain text (escaped).
    pub fn text(s: impl AsRef<str>) -> Self {
        Cell(escape(s.as_ref()))
    }

    /// Text in `<code>` (escaped), for names such as metric keys.
    pub fn code(s: impl AsRef<str>) -> Self {
        Cell(format!("<code>{}</code>", escape(s.as_ref())))
    }

    /// Text shown greyed (escaped), e.g. for nulls.
    pub fn muted(s: impl AsRef<str>) -> Self {
        Cell(format!(
            "<span style=\"color:#888\">{}</span>",
            escape(s.as_ref())
        ))
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::text(s)
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::text(s)
    }
}

/// A small HTML table with a left-aligned caption, a header row and aligned cells; the one
/// table builder behind every `evcxr_display` of the crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtmlTable {
    caption: String,
    columns: Vec<(String, Align)>,
    rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Row {
    Cells(Vec<Cell>),
    /// One cell spanning every column (e.g. "… 40 rows …").
    Spanning(Cell),
}

impl HtmlTable {
    /// An empty table with this caption (plain text, escaped).
    pub fn new(caption: impl AsRef<str>) -> Self {
        HtmlTable {
            caption: escape(caption.as_ref()),
            columns: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Adds a column (header text, escaped) with its alignment.
    pub fn column(mut self, name: impl AsRef<str>, align: Align) -> Self {
        self.columns.push((escape(name.as_ref()), align));
        self
    }

    /// Appends a row; missing cells are left empty, extra cells are dropped.
    pub fn row(&mut self, cells: impl IntoIterator<Item = Cell>) -> &mut Self {
        self.rows.push(Row::Cells(cells.into_iter().collect()));
        self
    }

    /// Appends one cell spanning all columns (centred, greyed).
    pub fn spanning_row(&mut self, cell: Cell) -> &mut Self {
        self.rows.push(Row::Spanning(cell));
        self
    }

    /// Number of rows added (spanning rows included).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as an HTML fragment (`<table>…</table>`).
    pub fn to_html(&self) -> String {
        let mut html = format!(
            "<table><caption style=\"text-align:left\">{}</caption><tr>",
            self.caption
        );
        for (name, align) in &self.columns {
            html.push_str(&format!(
                "<th style=\"text-align:{}\">{name}</th>",
                align.css()
            ));
        }
        html.push_str("</tr>");
        for row in &self.rows {
            match row {
                Row::Cells(cells) => {
                    html.push_str("<tr>");
                    for ((_, align), cell) in self.columns.iter().zip(cells) {
                        html.push_str(&format!(
                            "<td style=\"text-align:{}\">{}</td>",
                            align.css(),
                            cell.0
                        ));
                    }
                    for (_, align) in self.columns.iter().skip(cells.len()) {
                        html.push_str(&format!("<td style=\"text-align:{}\"></td>", align.css()));
                    }
                    html.push_str("</tr>");
                }
                Row::Spanning(cell) => html.push_str(&format!(
                    "<tr><td colspan=\"{}\" style=\"text-align:center;color:#888\">{}</td></tr>",
                    self.columns.len().max(1),
                    cell.0
                )),
            }
        }
        html.push_str("</table>");
        html
    }

    /// Shows the table in an evcxr Jupyter cell (`text/html`).
    pub fn evcxr_display(&self) {
        evcxr_print("text/html", &self.to_html());
    }
}

/// Default number of rows [`Table`] shows (half from the head, half from the tail).
pub const DEFAULT_MAX_ROWS: usize = 20;

/// A polars `DataFrame` shown as an HTML table in evcxr: at most `max_rows` rows (the first
/// and last ones, with a "… n rows …" line between), every column with its dtype, and the shape
/// in the caption.
///
/// ```
/// use polars::prelude::*;
/// use neural_collapse::display::Table;
///
/// let df = df!("epoch" => [0u32, 1, 2], "value" => [1.0, 0.5, 0.25]).unwrap();
/// let html = Table::new(&df).max_rows(2).to_html();
/// assert!(html.contains("shape: (3, 2)"));
/// assert!(html.contains("1 more row"));
/// ```
#[derive(Debug, Clone)]
pub struct Table<'a> {
    df: &'a DataFrame,
    max_rows: usize,
    caption: Option<String>,
}

/// Shorthand for [`Table::new`]: `table(&df)` as a cell's last expression displays the frame.
pub fn table(df: &DataFrame) -> Table<'_> {
    Table::new(df)
}

/// The HTML of [`Table`] with at most `max_rows` rows.
pub fn df_html(df: &DataFrame, max_rows: usize) -> String {
    Table::new(df).max_rows(max_rows).to_html()
}

impl<'a> Table<'a> {
    /// Shows `df` with [`DEFAULT_MAX_ROWS`] rows at most.
    pub fn new(df: &'a DataFrame) -> Self {
        Table {
            df,
            max_rows: DEFAULT_MAX_ROWS,
            caption: None,
        }
    }

    /// At most this many rows (`⌈max/2⌉` from the head, `⌊max/2⌋` from the tail).
    pub fn max_rows(mut self, max_rows: usize) -> Self {
        self.max_rows = max_rows;
        self
    }

    /// A caption shown before the shape.
    pub fn caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = Some(caption.into());
        self
    }

    /// The table as an HTML fragment.
    pub fn to_html(&self) -> String {
        let (height, width) = self.df.shape();
        let shape = format!("shape: ({height}, {width})");
        let caption = match &self.caption {
            Some(c) => format!("{c} — {shape}"),
            None => shape,
        };
        let columns = self.df.get_columns();
        let mut t = HtmlTable::new(caption);
        for c in columns {
            let align = if c.dtype().is_primitive_numeric() {
                Align::Right
            } else {
                Align::Left
            };
            t = t.column(format!("{} ({})", c.name(), c.dtype()), align);
        }
        let (head, tail) = if height > self.max_rows {
            (self.max_rows.div_ceil(2), self.max_rows / 2)
        } else {
            (height, 0)
        };
        for i in 0..head {
            t.row(columns.iter().map(|c| cell_of(c, i)));
        }
        if head + tail < height {
            let hidden = height - head - tail;
            let s = if hidden == 1 { "" } else { "s" };
            t.spanning_row(Cell::text(format!("… {hidden} more row{s} …")));
        }
        for i in height - tail..height {
            t.row(columns.iter().map(|c| cell_of(c, i)));
        }
        t.to_html()
    }

    /// Shows the table in an evcxr Jupyter cell (`text/html`).
    pub fn evcxr_display(&self) {
        evcxr_print("text/html", &self.to_html());
    }
}

/// One value of a column as a cell: nulls greyed, floats with 6 significant digits.
fn cell_of(c: &Column, i: usize) -> Cell {
    match c.get(i) {
        Ok(AnyValue::Null) => Cell::muted("null"),
        Ok(AnyValue::String(s)) => Cell::text(s),
        Ok(AnyValue::StringOwned(s)) => Cell::text(s.as_str()),
        Ok(AnyValue::Float64(v)) => Cell::text(format_float(v)),
        Ok(AnyValue::Float32(v)) => Cell::text(format_float(v.into())),
        Ok(v) => Cell::text(v.to_string()),
        Err(e) => Cell::muted(e.to_string()),
    }
}

/// `v` with 6 significant digits: fixed notation for `1e-4 ≤ |v| < 1e6`, scientific otherwise.
pub(crate) fn format_float(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if (1e-4..1e6).contains(&a) {
        let decimals = (5 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{v:.5e}")
    }
}

// The reports' HTML tables live here, with the table builder, so that the metrics and probes
// know nothing of their display.

impl NcReport {
    /// Shows the report as an HTML table in an evcxr Jupyter cell.
    pub fn evcxr_display(&self) {
        self.html_table().evcxr_display();
    }

    /// The table [`evcxr_display`](Self::evcxr_display) shows: one row per metric.
    pub fn html_table(&self) -> HtmlTable {
        let mut t = HtmlTable::new(format!("NC report — {}", self.heading()))
            .column("metric", Align::Left)
            .column("value", Align::Right);
        for (k, v) in self.metrics() {
            t.row([Cell::code(k.name()), Cell::text(format!("{v:.6e}"))]);
        }
        t
    }
}

impl ProbeReport {
    /// Shows the report as an HTML table in an evcxr Jupyter cell.
    pub fn evcxr_display(&self) {
        self.html_table().evcxr_display();
    }

    /// The table [`evcxr_display`](Self::evcxr_display) shows: accuracy and size of each split,
    /// then the test accuracy of each class.
    pub fn html_table(&self) -> HtmlTable {
        let mut t = HtmlTable::new(format!("probe — {}", self.heading()))
            .column("split", Align::Left)
            .column("n", Align::Right)
            .column("accuracy", Align::Right);
        for (split, n, acc) in [
            ("train", self.n_train, self.train_accuracy),
            ("test", self.n_test, self.test_accuracy),
        ] {
            t.row([
                Cell::text(split),
                Cell::text(n.to_string()),
                Cell::text(format!("{acc:.4}")),
            ]);
        }
        for c in &self.per_class_test_accuracy {
            t.row([
                Cell::text(format!("test, class {}", c.class)),
                Cell::text(c.n.to_string()),
                Cell::text(format!("{:.4}", c.accuracy)),
            ]);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn table_shows_head_tail_and_shape() {
        let df = df!("epoch" => (0u32..10).collect::<Vec<_>>(),
                     "split" => vec!["train"; 10],
                     "value" => (0..10).map(|i| i as f64 / 3.0).collect::<Vec<_>>())
        .unwrap();
        let html = Table::new(&df).max_rows(4).to_html();
        assert!(html.contains("shape: (10, 3)"), "{html}");
        assert!(html.contains("… 6 more rows …"), "{html}");
        // Head 0, 1 and tail 8, 9.
        assert_eq!(html.matches("<tr>").count(), 1 + 4 + 1);
        assert!(html.contains(">9<") && html.contains(">0<") && !html.contains(">5<"));
        assert!(html.contains(">0.333333<"), "{html}");
        assert!(html.contains("epoch (u32)"));
        // Small frames are shown whole.
        let all = Table::new(&df).to_html();
        assert!(!all.contains("more row"));
    }

    #[test]
    fn nulls_and_escaping() {
        let df = df!("layer" => [Some("<b>"), None]).unwrap();
        let html = Table::new(&df).caption("a & b").to_html();
        assert!(html.contains("&lt;b&gt;") && html.contains("null") && html.contains("a &amp; b"));
    }

    #[test]
    fn float_format() {
        assert_eq!(format_float(0.5), "0.5");
        assert_eq!(format_float(1.0 / 3.0), "0.333333");
        assert_eq!(format_float(1234.5678), "1234.57");
        assert_eq!(format_float(1.5e-7), "1.50000e-7");
        assert_eq!(format_float(0.0), "0");
    }
}
