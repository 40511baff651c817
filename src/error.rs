//! The crate's error type.
//!
//! Every fallible function of the crate returns [`Result<T>`](Result). Each module owns a typed
//! error enum (`#[non_exhaustive]`, built with `thiserror`) whose messages name the file, column,
//! class or value at fault; [`Error`] wraps them so that `?` works across modules and in notebooks.

use thiserror::Error;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error the crate can return.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, validating or writing feature files.
    #[error(transparent)]
    Features(#[from] crate::features::FeatureError),
    /// Bad input to a statistic or metric (shapes, labels, empty classes, non-finite values).
    #[error(transparent)]
    Metric(#[from] crate::metrics::MetricError),
    /// Bad input to a linear probe, or a probe that cannot be fitted.
    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
    /// An I/O error that is not tied to a feature file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (names the path).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
