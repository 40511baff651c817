//! The crate's error type.
//!
//! Each module owns a typed error enum (`#[non_exhaustive]`, built with `thiserror`) whose
//! messages name the file, column, class or value at fault, and input validation has its own at
//! the bottom ([`CheckError`](crate::check::CheckError)). [`Error`](enum@Error) wraps them so
//! that `?` works across modules and in notebooks: it sits at the top of the crate's layers
//! (see the crate docs), and the modules below do not use it; only the paper's
//! [`findings`](crate::findings), above it like a user's notebook, return [`Result<T>`](Result).

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
    /// Reading `.npy` / `.npz` files (numpy).
    #[error(transparent)]
    Npy(#[from] crate::npy::NpyError),
    /// Bad input to a statistic or metric (shapes, labels, empty classes, non-finite values).
    #[error(transparent)]
    Metric(#[from] crate::metrics::MetricError),
    /// Bad input to a linear probe, or a probe that cannot be fitted.
    #[error(transparent)]
    Probe(crate::probe::ProbeError),
    /// Reading, verifying or sub-sampling MNIST / Fashion-MNIST, coarse-label maps.
    #[error(transparent)]
    Dataset(#[from] crate::datasets::DatasetError),
    /// Drawing or saving a figure (bad input to a plot, a write failure).
    #[error(transparent)]
    Plot(#[from] crate::plot::PlotError),
    /// Opening a study (the runs of one preset at several seeds).
    #[error(transparent)]
    Study(crate::study::StudyError),
    /// Projecting class means on their principal axes (an empty class, coinciding means).
    #[error(transparent)]
    Projection(#[from] crate::projection::ProjectionError),
    /// Bad parameters for, or a diverging run of, the unconstrained-features model.
    #[error(transparent)]
    Ufm(#[from] crate::ufm::UfmError),
    /// The streamed passes over a file ([`crate::stream`]): sums that do not fit together.
    #[error(transparent)]
    Stream(crate::stream::StreamError),
    /// Reading, writing or merging partial statistics ([`crate::partial`]).
    #[error(transparent)]
    Partial(crate::partial::PartialError),
    /// Training or exporting a run (feature `train`).
    #[cfg(feature = "train")]
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// An error while processing one part of a larger job (a checkpoint of a file, a layer of a
    /// run): `context` says which part.
    #[error("{context}: {source}")]
    Context {
        /// Which part failed, e.g. `runs/a/features-h3.parquet, epoch 10, split test`.
        context: String,
        /// What went wrong there.
        #[source]
        source: Box<Error>,
    },
}

impl From<crate::study::StudyError> for Error {
    /// A study's error reading a run is shown as the [`Error::Features`] it is.
    fn from(e: crate::study::StudyError) -> Self {
        match e {
            crate::study::StudyError::Features(f) => Error::Features(f),
            e => Error::Study(e),
        }
    }
}

impl From<crate::probe::ProbeError> for Error {
    /// A probe sweep's error reading a file is shown as the [`Error::Features`] it is, and its
    /// context as [`Error::Context`], as before the sweeps returned [`ProbeError`](crate::probe::ProbeError).
    fn from(e: crate::probe::ProbeError) -> Self {
        use crate::probe::ProbeError;
        match e {
            ProbeError::Features(f) => Error::Features(f),
            ProbeError::Context { context, source } => Error::Context {
                context,
                source: Box::new(Error::from(*source)),
            },
            e => Error::Probe(e),
        }
    }
}

impl From<crate::stream::StreamError> for Error {
    /// A streamed pass's error reading a file or measuring is shown as the [`Error::Features`]
    /// or [`Error::Metric`] it is, and its context as [`Error::Context`], as before the passes
    /// returned [`StreamError`](crate::stream::StreamError).
    fn from(e: crate::stream::StreamError) -> Self {
        use crate::stream::StreamError;
        match e {
            StreamError::Features(f) => Error::Features(f),
            StreamError::Metric(m) => Error::Metric(m),
            StreamError::Context { context, source } => Error::Context {
                context,
                source: Box::new(Error::from(*source)),
            },
            e => Error::Stream(e),
        }
    }
}

impl From<crate::partial::PartialError> for Error {
    /// As for [`StreamError`](crate::stream::StreamError): wrapped feature, metric and stream
    /// errors are shown as what they are, the context as [`Error::Context`].
    fn from(e: crate::partial::PartialError) -> Self {
        use crate::partial::PartialError;
        match e {
            PartialError::Features(f) => Error::Features(f),
            PartialError::Metric(m) => Error::Metric(m),
            PartialError::Stream(s) => Error::from(s),
            PartialError::Context { context, source } => Error::Context {
                context,
                source: Box::new(Error::from(*source)),
            },
            e => Error::Partial(e),
        }
    }
}

impl Error {
    /// Wraps this error with a description of where it happened.
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }
}
