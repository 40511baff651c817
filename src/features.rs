//! Feature files (schema v1): scanning, loading, validating and writing with polars.
//!
//! Schema v1, one Parquet file per (run, layer) at `data/runs/<run>/features-<layer>.parquet`:
//!
//! ```text
//! column   type                         meaning
//! epoch    u32                          checkpoint (0 = initialisation)
//! split    str                          "train" or "test"
//! sample   u32                          index into the split of the dataset
//! label    u32                          fine label used for NC
//! coarse   u32, optional                label the network was trained on, when it differs
//! pred     u32, optional                the network's prediction
//! x        fixed-size list of f32       the feature vector (polars Array)
//! ```

use ndarray::{Array1, Array2};
use thiserror::Error;

/// Errors from reading, validating or writing feature files. Messages name the file and column.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FeatureError {
    /// A polars error while scanning, collecting or writing `path`.
    #[error("{path}: {message}")]
    Polars {
        /// The file being read or written.
        path: String,
        /// polars' message.
        message: String,
    },
}

/// Features of one (epoch, split, layer): an `n × d` matrix with its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `n × d` feature matrix, one row per sample.
    pub x: Array2<f32>,
    /// Fine label of each sample (`0..C`), used for NC.
    pub labels: Vec<u32>,
    /// The label the network was trained on, when it differs from `labels`.
    pub coarse: Option<Vec<u32>>,
    /// The network's prediction, when stored.
    pub pred: Option<Vec<u32>>,
    /// Index of each sample in its split of the dataset, when stored.
    pub sample: Option<Vec<u32>>,
    /// Checkpoint the features were taken at, when known.
    pub epoch: Option<u32>,
    /// `"train"` or `"test"`, when known.
    pub split: Option<String>,
    /// Layer name, when known.
    pub layer: Option<String>,
}

/// A linear classifier `z = W h + b` (W is `C × d`), as stored in `classifier.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct Classifier {
    /// `C × d` weights, one row per class.
    pub w: Array2<f64>,
    /// `C` biases.
    pub b: Array1<f64>,
}
