//! [`PlotError`]: why a figure could not be drawn or saved.

use std::fmt;

use thiserror::Error;

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

pub(super) fn draw_err(e: impl fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}
