//! Input validation: one place for the checks that features, statistics, metrics and probes
//! make on the matrices and labels they are given (lengths, dimensions, label range, non-finite
//! values), and its error type [`CheckError`].
//!
//! A leaf of the crate (it uses no other module). Each caller carries a [`CheckError`] in its own
//! error, keeping every field and the message: [`MetricError`](crate::stats::MetricError) and
//! [`ProbeError`](crate::probe::ProbeError) wrap it whole in their `Check` variant, and
//! [`FeatureError`](crate::features::FeatureError) adds the file and column (the checks here
//! know rows, columns and values, not where they were read from).
//!
//! Scans are in row-major order, so the value named is the first bad one a reader would meet.

use ndarray::ArrayView2;
use thiserror::Error;

/// Bad input found by a check of this module; the message names the row, column, label or
/// value at fault.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum CheckError {
    /// No rows or no feature columns.
    #[error("empty input: {rows} rows × {dim} columns")]
    Empty {
        /// Rows.
        rows: usize,
        /// Columns.
        dim: usize,
    },
    /// Feature matrix and label vector disagree in length.
    #[error("{rows} feature rows but {labels} labels")]
    LengthMismatch {
        /// Rows of the feature matrix.
        rows: usize,
        /// Length of the label vector.
        labels: usize,
    },
    /// A feature dimension differs from the one expected.
    #[error("feature dimension {found} does not match the expected {expected}")]
    DimensionMismatch {
        /// The dimension expected.
        expected: usize,
        /// The dimension found.
        found: usize,
    },
    /// A label is not in `0..classes`.
    #[error("label {label} at row {row} is out of range: expected 0..{classes}")]
    LabelOutOfRange {
        /// Row of the offending label.
        row: usize,
        /// The label.
        label: u32,
        /// Number of classes.
        classes: usize,
    },
    /// A feature value is NaN or infinite.
    #[error("feature value {value} at row {row}, column {column} is not finite")]
    NonFinite {
        /// Row of the value.
        row: usize,
        /// Column of the value.
        column: usize,
        /// The value.
        value: f64,
    },
    /// A NaN or infinite entry of a named matrix (a class mean, a classifier).
    #[error("{what} [{row}, {column}] = {value} is not finite")]
    NonFiniteEntry {
        /// What the matrix holds (e.g. "centred class mean", "classifier W").
        what: String,
        /// Row.
        row: usize,
        /// Column.
        column: usize,
        /// The value.
        value: f64,
    },
}

/// Index and value of the first NaN or infinite entry of `values`.
pub(crate) fn first_non_finite_in<T: Copy + Into<f64>>(values: &[T]) -> Option<(usize, f64)> {
    values
        .iter()
        .position(|&v| !v.into().is_finite())
        .map(|k| (k, values[k].into()))
}

/// Row, column and value of the first NaN or infinite entry of `x` (row-major order).
pub(crate) fn first_non_finite<T: Copy + Into<f64>>(
    x: &ArrayView2<'_, T>,
) -> Option<(usize, usize, f64)> {
    for (row, xs) in x.outer_iter().enumerate() {
        if let Some(s) = xs.as_slice() {
            if let Some((column, value)) = first_non_finite_in(s) {
                return Some((row, column, value));
            }
        } else if let Some((column, &v)) =
            xs.iter().enumerate().find(|(_, &v)| !v.into().is_finite())
        {
            return Some((row, column, v.into()));
        }
    }
    None
}

/// [`CheckError::NonFinite`] at the first NaN or infinite value of `x`.
pub(crate) fn check_finite<T: Copy + Into<f64>>(x: &ArrayView2<'_, T>) -> Result<(), CheckError> {
    match first_non_finite(x) {
        Some((row, column, value)) => Err(CheckError::NonFinite { row, column, value }),
        None => Ok(()),
    }
}

/// [`CheckError::NonFiniteEntry`] at the first NaN or infinite entry of the matrix `what`.
pub(crate) fn check_finite_entries(x: ArrayView2<'_, f64>, what: &str) -> Result<(), CheckError> {
    match first_non_finite(&x) {
        Some((row, column, value)) => Err(CheckError::NonFiniteEntry {
            what: what.to_string(),
            row,
            column,
            value,
        }),
        None => Ok(()),
    }
}

/// [`CheckError::LengthMismatch`] unless `rows == labels`.
pub(crate) fn check_lengths(rows: usize, labels: usize) -> Result<(), CheckError> {
    if rows == labels {
        Ok(())
    } else {
        Err(CheckError::LengthMismatch { rows, labels })
    }
}

/// [`CheckError::DimensionMismatch`] unless `found == expected`.
pub(crate) fn check_dimension(expected: usize, found: usize) -> Result<(), CheckError> {
    if expected == found {
        Ok(())
    } else {
        Err(CheckError::DimensionMismatch { expected, found })
    }
}

/// [`CheckError::Empty`] if `x` has no rows or no columns.
pub(crate) fn check_not_empty<T>(x: &ArrayView2<'_, T>) -> Result<(), CheckError> {
    let (rows, dim) = x.dim();
    if rows == 0 || dim == 0 {
        Err(CheckError::Empty { rows, dim })
    } else {
        Ok(())
    }
}

/// [`CheckError::LabelOutOfRange`] at the first label not in `0..classes`.
pub(crate) fn check_labels(labels: &[u32], classes: usize) -> Result<(), CheckError> {
    match labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        Some((row, &label)) => Err(CheckError::LabelOutOfRange {
            row,
            label,
            classes,
        }),
        None => Ok(()),
    }
}

/// The shapes of a feature matrix with its labels: as many labels as rows, `dim` columns, every
/// label in `0..classes` (cheap: no pass over the values).
pub(crate) fn check_shapes<T>(
    x: &ArrayView2<'_, T>,
    labels: &[u32],
    classes: usize,
    dim: usize,
) -> Result<(), CheckError> {
    check_lengths(x.nrows(), labels.len())?;
    check_dimension(dim, x.ncols())?;
    check_labels(labels, classes)
}

/// A feature matrix with its labels: [`check_shapes`], then every value finite.
pub(crate) fn check_matrix<T: Copy + Into<f64>>(
    x: &ArrayView2<'_, T>,
    labels: &[u32],
    classes: usize,
    dim: usize,
) -> Result<(), CheckError> {
    check_shapes(x, labels, classes, dim)?;
    check_finite(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn names_the_first_bad_value_in_row_major_order() {
        let x = array![[1.0f32, 2.0], [3.0, f32::NAN], [f32::INFINITY, 0.0]];
        assert_eq!(
            first_non_finite(&x.view()).map(|(r, c, _)| (r, c)),
            Some((1, 1))
        );
        // A transposed (non-contiguous rows) view scans its own rows: (0, 2) is ∞.
        let t = x.t();
        let (r, c, v) = first_non_finite(&t).unwrap();
        assert_eq!((r, c, v), (0, 2, f64::INFINITY));
        assert_eq!(
            check_finite(&x.view()).unwrap_err().to_string(),
            "feature value NaN at row 1, column 1 is not finite"
        );
        assert_eq!(
            first_non_finite_in(&[0.5f64, -1.0, f64::NEG_INFINITY]),
            Some((2, f64::NEG_INFINITY))
        );
        assert!(check_finite(&array![[0.0f64, 1e308]].view()).is_ok());
    }

    #[test]
    fn matrix_checks_in_order_with_their_messages() {
        let x = array![[0.0f64, f64::NAN], [1.0, 2.0]];
        let e = check_matrix(&x.view(), &[0], 2, 2).unwrap_err();
        assert_eq!(e.to_string(), "2 feature rows but 1 labels");
        let e = check_matrix(&x.view(), &[0, 1], 2, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "feature dimension 2 does not match the expected 3"
        );
        let e = check_matrix(&x.view(), &[0, 5], 2, 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "label 5 at row 1 is out of range: expected 0..2"
        );
        let e = check_matrix(&x.view(), &[0, 1], 2, 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "feature value NaN at row 0, column 1 is not finite"
        );
        assert!(check_shapes(&x.view(), &[0, 1], 2, 2).is_ok());
        let empty = ndarray::Array2::<f64>::zeros((0, 3));
        assert_eq!(
            check_not_empty(&empty.view()).unwrap_err().to_string(),
            "empty input: 0 rows × 3 columns"
        );
        let e = check_finite_entries(x.view(), "class mean").unwrap_err();
        assert_eq!(e.to_string(), "class mean [0, 1] = NaN is not finite");
    }
}
