//! Neural Collapse metrics.
use thiserror::Error;

/// Bad input to a statistic or metric.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MetricError {
    /// Feature matrix and label vector disagree in length.
    #[error("{rows} feature rows but {labels} labels")]
    LengthMismatch {
        /// Rows of the feature matrix.
        rows: usize,
        /// Length of the label vector.
        labels: usize,
    },
}
