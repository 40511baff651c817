//! Feature files (schema v1): scanning, loading, validating and writing with polars.
//!
//! **Why one file (about 2,200 lines, a fifth of them docs).** Schema v1 is one contract: the
//! scan, the loaders, [`Run`] and the classifier file share the private column checks
//! (`check_*_column`, `*_values`) and [`FeatureError`]'s file/column/row messages, which read the
//! same whichever entry point meets a bad value. The rest sits beside it in `features/`: the
//! writers (`write.rs`), the page decoder (`plain.rs`) and folders of files (`dir.rs`).
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
//!
//! The reader is lenient where it costs nothing: `epoch`, `sample`, `label`, `coarse` and `pred`
//! may have any integer type (or a float type holding integral values), as long as every value
//! is a non-negative integer that fits `u32`; `split` may be a string or a categorical
//! (dictionary-encoded, as pandas categoricals are written by pyarrow); `x` may be a fixed-size
//! list (polars `Array`) or a variable-size list of any numeric type (cast to `f32`), provided
//! every row has the same length. `sample` is tolerated to be absent. A *wide* table, with columns
//! `x_0 … x_{d-1}` instead of `x`, is accepted too, in Parquet or in CSV (where it is the only
//! form). Files are dispatched on their extension: `.parquet` / `.pq`, `.csv`, and Arrow IPC
//! files (Feather v2) `.arrow` / `.feather` / `.ipc` (uncompressed, LZ4 or ZSTD; read lazily
//! with polars' `scan_ipc`, with the same checks and errors as Parquet). A *directory* of Parquet
//! files, one per checkpoint or per layer, is read as one file; the file-name patterns
//! (`epoch-<E>.parquet`, `epoch-<E>-<layer>.parquet`, `features-<layer>.parquet`) and the rules
//! are in the docs of the submodule `dir` (below, and on [`FeatureScan::open_layer`]).
//!
//! Arrow IPC, one limitation of polars 0.52: compressed (LZ4/ZSTD) record batches that pyarrow
//! sliced out of a longer string or list column — `pyarrow.feather.write_feather` of a table of
//! several chunks, or of more than its `chunksize` (65,536) rows — are refused by polars
//! ("unexpected decompressed buffer size"); the error adds what to do (write it uncompressed,
//! or as Parquet). Uncompressed files of any shape, and compressed files whose record batches
//! were built one by one, are read (tests/formats.rs).
//!
//! Entry points: [`FeatureScan::open`] (one file, lazily scanned, filtered with
//! [`FeatureScan::epoch`] / [`FeatureQuery::split`], loaded with [`FeatureQuery::load`]),
//! [`Run::open`] (a run directory: layers, `run.json`, the classifier), [`write_features`],
//! [`read_classifier`] and [`write_classifier`].
//!
//! # Exporting features from PyTorch (pyarrow)
//!
//! Features of any network can be brought in with this recipe (also in
//! `scripts/export_pytorch_features.py`); `h` is an `n × d` array of one layer's features at one
//! checkpoint, e.g. captured with a forward hook and `.detach().cpu().numpy()`:
//!
//! ```python
//! import numpy as np, pyarrow as pa, pyarrow.parquet as pq
//!
//! def features_table(epoch, split, h, label, pred=None, sample=None):
//!     h = np.ascontiguousarray(h, dtype=np.float32)
//!     n, d = h.shape
//!     cols = {"epoch": pa.array(np.full(n, epoch), pa.uint32()),
//!             "split": pa.array([split] * n, pa.string()),
//!             "sample": pa.array(np.arange(n) if sample is None else sample, pa.uint32()),
//!             "label": pa.array(label, pa.uint32())}
//!     if pred is not None:
//!         cols["pred"] = pa.array(pred, pa.uint32())
//!     cols["x"] = pa.FixedSizeListArray.from_arrays(pa.array(h.ravel()), type=pa.list_(pa.float32(), d))
//!     return pa.table(cols)
//!
//! tables = [features_table(e, s, h, y) for (e, s, h, y) in checkpoints]  # one per (epoch, split)
//! pq.write_table(pa.concat_tables(tables), "data/runs/my-run/features-fc2.parquet")
//! ```
//!
//! The crate's tests load a file written by exactly this function
//! (`tests/fixtures/pyarrow-v1.parquet`).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{Array1, Array2};
use polars::io::{HiveOptions, RowIndex};
use polars::prelude::*;
use thiserror::Error;

// Index of the first non-finite value of a slice; the error adds the file, column and row.
use crate::check::first_non_finite_in as first_non_finite;

pub(crate) mod batch;
mod dir;
pub(crate) mod pages;
pub(crate) mod plain;
mod write;
pub use dir::DIR_PATTERNS;
pub use write::{write_classifier, write_features};

/// Name of the row-index column the scans add, so that errors can name the row of the file.
const ROW: &str = "__nc_file_row";

/// Errors from reading, validating or writing feature files. Messages name the file and column.
///
/// Rows are 0-based data rows of the file (the header of a CSV file is not counted), counted
/// before any filter.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FeatureError {
    /// A Parquet file whose footer and page headers disagree, or hold impossible counts (a
    /// damaged file): `at` names the row group, column (and page), `problem` the counts.
    #[error("{path}: {at}: {problem} (the file is damaged)")]
    DamagedFile {
        /// The file.
        path: String,
        /// Where: the footer, or a row group, column and page.
        at: String,
        /// The counts that disagree.
        problem: String,
    },
    /// A polars error while scanning, collecting or writing `path`.
    #[error("{path}: {message}")]
    Polars {
        /// The file being read or written.
        path: String,
        /// polars' message.
        message: String,
    },
    /// `path` is not a regular file (a directory, a FIFO, a device or a socket): only regular
    /// files are read, so that a named pipe cannot block the reader.
    #[error("{path}: is {kind}, not a regular file")]
    NotAFile {
        /// The path.
        path: String,
        /// What it is instead: "a directory", "a FIFO (named pipe)", "a device", "a socket".
        kind: &'static str,
    },
    /// A path that is not valid UTF-8 (polars, which reads the files, handles paths as UTF-8
    /// strings). `path` is shown with the invalid bytes replaced by U+FFFD.
    #[error("{path}: the path is not valid UTF-8; rename the file or folder to read it")]
    NonUtf8Path {
        /// The path, lossily converted.
        path: String,
    },
    /// An I/O error on `path` (a missing file or directory, permissions, …).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `run.json` is not valid JSON.
    #[error("{path}: invalid JSON: {message}")]
    Json {
        /// The JSON file.
        path: String,
        /// serde_json's message.
        message: String,
    },
    /// The file's extension is not one of `.parquet`, `.pq` (or `.csv` for reading).
    #[error("{path}: unsupported file type (expected {expected})")]
    UnsupportedFormat {
        /// The file.
        path: String,
        /// The extensions that are accepted here.
        expected: &'static str,
    },
    /// A required column is absent.
    #[error("{path}: missing column `{column}` (columns: {found})")]
    MissingColumn {
        /// The file.
        path: String,
        /// The missing column.
        column: String,
        /// The columns the file has, comma-separated.
        found: String,
    },
    /// A column has a type the schema does not allow.
    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    ColumnType {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// The type found (polars' name for it).
        found: String,
        /// What the schema allows.
        expected: &'static str,
    },
    /// A null (missing) value in a column that must be complete.
    #[error("{path}: column `{column}` has a null value{}", at_row(*row))]
    NullValue {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// The first row with a null, when known.
        row: Option<u64>,
    },
    /// A finite value stored in a wider type (f64) that is too large for `f32`, the type the
    /// features are loaded as.
    #[error("{path}: column `{column}` has the value {value:e} at row {row}, component {component}, which overflows f32 (largest finite f32: {max:e})", max = f32::MAX)]
    Overflow {
        /// The file.
        path: String,
        /// The column (`x` or `x_<j>`).
        column: String,
        /// The first row with such a value.
        row: u64,
        /// The component (feature index) within the row.
        component: usize,
        /// The value as stored.
        value: f64,
    },
    /// Two columns of a CSV file have the same name (polars would rename the second one).
    #[error("{path}: column `{column}` appears more than once")]
    DuplicateColumn {
        /// The file.
        path: String,
        /// The repeated column name.
        column: String,
    },
    /// A NaN or infinite value in the features (or in a classifier's weights).
    #[error("{path}: column `{column}` has the non-finite value {value} at row {row}, component {component}")]
    NonFinite {
        /// The file.
        path: String,
        /// The column (`x`, `x_<j>`, `w` or `bias`).
        column: String,
        /// The first row with a non-finite value.
        row: u64,
        /// The component (feature index) within the row.
        component: usize,
        /// The offending value.
        value: f64,
    },
    /// A label-like column (`epoch`, `sample`, `label`, `coarse`, `pred`, `class`) holds a value that
    /// is not a non-negative integer fitting `u32`.
    #[error("{path}: column `{column}` has the value {value}{}, which {reason}", at_row(*row))]
    InvalidInteger {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// The first offending row, when known.
        row: Option<u64>,
        /// The offending value, as written in the file.
        value: String,
        /// Why it is rejected: "is negative", "is not an integer", "does not fit u32", …
        reason: &'static str,
    },
    /// Feature vectors (a variable-size list column) of differing lengths.
    #[error("{path}: column `{column}` is ragged: row {row} has {len} values but the first row has {expected}")]
    RaggedFeatures {
        /// The file.
        path: String,
        /// The column.
        column: String,
        /// The first row whose length differs from the first row's.
        row: u64,
        /// That row's length.
        len: usize,
        /// The first row's length.
        expected: usize,
    },
    /// Feature vectors of length 0.
    #[error("{path}: column `{column}` holds empty feature vectors (d = 0)")]
    EmptyFeatures {
        /// The file.
        path: String,
        /// The column.
        column: String,
    },
    /// The file holds no rows at all (a CSV header, or a Parquet or Arrow schema, alone).
    #[error("{path}: the file holds no rows (only its header or schema)")]
    EmptyFile {
        /// The file.
        path: String,
    },
    /// No row is left after filtering.
    #[error("{path}: no rows where {filter} (checkpoints in the file: {available})")]
    NoRows {
        /// The file.
        path: String,
        /// The filter that selected nothing, e.g. `epoch = 7 and split = "train"`.
        filter: String,
        /// The `(epoch, split)` checkpoints the file does hold.
        available: String,
    },
    /// A wide table whose `x_<j>` columns are not exactly `x_0 … x_{d-1}`.
    #[error("{path}: wide feature columns are not contiguous: `{missing}` is missing (found {found} columns x_<j>, largest index {largest})")]
    WideColumns {
        /// The file.
        path: String,
        /// The first missing column name.
        missing: String,
        /// How many `x_<j>` columns there are.
        found: usize,
        /// The largest `j` present.
        largest: usize,
    },
    /// A classifier file lacks a class in `0..C` for an epoch.
    #[error("{path}: classifier at epoch {epoch} has no row for class {class} (classes present: {present})")]
    MissingClass {
        /// The classifier file.
        path: String,
        /// The epoch.
        epoch: u32,
        /// The first missing class.
        class: u32,
        /// The classes present, comma-separated.
        present: String,
    },
    /// A classifier file has two rows for one class at one epoch.
    #[error("{path}: classifier at epoch {epoch} has several rows for class {class}")]
    DuplicateClass {
        /// The classifier file.
        path: String,
        /// The epoch.
        epoch: u32,
        /// The repeated class.
        class: u32,
    },
    /// A run directory has no feature file for the requested layer.
    #[error("{dir}: no feature file for layer `{layer}` (layers: {available})")]
    UnknownLayer {
        /// The run directory.
        dir: String,
        /// The requested layer.
        layer: String,
        /// The layers present, comma-separated.
        available: String,
    },
    /// A directory opened as a feature directory holds no feature file (see the module `dir`
    /// docs on [`FeatureScan::open`]).
    #[error("{dir}: no feature files (expected Parquet files named {patterns})")]
    EmptyDirectory {
        /// The directory.
        dir: String,
        /// The file-name patterns read ([`DIR_PATTERNS`]).
        patterns: &'static str,
    },
    /// A Parquet file of a feature directory whose name matches none of [`DIR_PATTERNS`].
    #[error("{path}: the file name matches none of the patterns {patterns}; rename it or move it out of the directory")]
    UnmatchedFileName {
        /// The file.
        path: String,
        /// The patterns ([`DIR_PATTERNS`]).
        patterns: &'static str,
    },
    /// A file whose name gives a checkpoint (`epoch-<E>…`) holds a different value in its own
    /// `epoch` column.
    #[error("{path}: column `{column}` has the value {found} at row {row}, but the file name says {column} {named}")]
    NameMismatch {
        /// The file.
        path: String,
        /// The column (`epoch`).
        column: String,
        /// The value the file name gives.
        named: String,
        /// The first value of the column that differs, as stored.
        found: String,
        /// Its row in the file.
        row: u64,
    },
    /// A directory holding files of several layers, opened as one layer.
    #[error("{dir}: holds feature files of several layers ({layers}); open one with FeatureScan::open_layer(dir, layer), or move each layer's files into a folder of its own (the command line reads a directory of one layer)")]
    SeveralLayers {
        /// The directory.
        dir: String,
        /// The layers, comma-separated.
        layers: String,
    },
    /// The files of a feature directory cannot be read as one table: two files for one
    /// checkpoint, a file of every checkpoint beside files of one, or files whose columns or
    /// feature widths differ.
    #[error("{dir}: {problem}")]
    DirectoryLayout {
        /// The directory.
        dir: String,
        /// What is wrong, naming the files.
        problem: String,
    },
    /// An in-memory value handed to a writer is inconsistent (a missing epoch or split, lengths that
    /// disagree with the number of rows, feature widths that differ between items, nothing to write).
    #[error("{path}: cannot write item {index}: {problem}")]
    InvalidInput {
        /// The file being written.
        path: String,
        /// Index of the offending item in the slice handed to the writer.
        index: usize,
        /// What is wrong.
        problem: String,
    },
}

fn at_row(row: Option<u64>) -> String {
    match row {
        Some(r) => format!(" at row {r}"),
        None => String::new(),
    }
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
    /// The network's prediction, when stored, in the labels it was trained on: the `coarse`
    /// column when the file has one, else `label` (schema v1). [`NcParams::measure_features`]
    /// uses it for NC4 only when it predicts the labels being measured (see
    /// [`Features::pred_predicts_labels`]).
    ///
    /// [`NcParams::measure_features`]: crate::metrics::NcParams::measure_features
    pub pred: Option<Vec<u32>>,
    /// Which column [`Features::labels`] holds: [`LabelColumn::Label`] as loaded,
    /// [`LabelColumn::Coarse`] after [`Features::relabel`]`(Coarse)`.
    pub labels_from: LabelColumn,
    /// Index of each sample in its split of the dataset, when stored.
    pub sample: Option<Vec<u32>>,
    /// Checkpoint the features were taken at, when known.
    pub epoch: Option<u32>,
    /// `"train"` or `"test"`, when known.
    pub split: Option<String>,
    /// Layer name, when known.
    pub layer: Option<String>,
}

impl Features {
    /// Features `x` (`n × d`) with their fine labels; every optional field is `None`.
    ///
    /// Lengths are not checked here; [`write_features`] and the metrics check them.
    pub fn new(x: Array2<f32>, labels: Vec<u32>) -> Self {
        Features {
            x,
            labels,
            coarse: None,
            pred: None,
            labels_from: LabelColumn::Label,
            sample: None,
            epoch: None,
            split: None,
            layer: None,
        }
    }

    /// Whether [`Features::pred`] predicts [`Features::labels`]: `pred` holds predictions in the
    /// trained-on labels (`coarse` when present), so it predicts `labels` when the features have
    /// no coarse labels or were relabelled to them.
    ///
    /// ```
    /// use neural_collapse::features::{Features, LabelColumn};
    /// let x = ndarray::Array2::<f32>::zeros((4, 2));
    /// let f = Features::new(x, vec![0, 1, 2, 3]).with_coarse(vec![0, 0, 1, 1]).with_pred(vec![0, 0, 1, 1]);
    /// assert!(!f.pred_predicts_labels());
    /// assert!(f.relabel(LabelColumn::Coarse)?.pred_predicts_labels());
    /// # Ok::<(), neural_collapse::features::FeatureError>(())
    /// ```
    pub fn pred_predicts_labels(&self) -> bool {
        self.coarse.is_none() || self.labels_from == LabelColumn::Coarse
    }

    /// Sets the checkpoint (epoch).
    pub fn with_epoch(mut self, epoch: u32) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Sets the split (`"train"` or `"test"`).
    pub fn with_split(mut self, split: impl Into<String>) -> Self {
        self.split = Some(split.into());
        self
    }

    /// Sets the layer name.
    pub fn with_layer(mut self, layer: impl Into<String>) -> Self {
        self.layer = Some(layer.into());
        self
    }

    /// Sets the sample indices.
    pub fn with_sample(mut self, sample: Vec<u32>) -> Self {
        self.sample = Some(sample);
        self
    }

    /// Sets the coarse (trained-on) labels.
    pub fn with_coarse(mut self, coarse: Vec<u32>) -> Self {
        self.coarse = Some(coarse);
        self
    }

    /// Sets the network's predictions.
    pub fn with_pred(mut self, pred: Vec<u32>) -> Self {
        self.pred = Some(pred);
        self
    }

    /// Number of samples `n` (rows of `x`).
    pub fn n_samples(&self) -> usize {
        self.x.nrows()
    }

    /// Feature dimension `d` (columns of `x`).
    pub fn dim(&self) -> usize {
        self.x.ncols()
    }
}

/// Which label column of [`Features`] to use: the fine `label` (default) or the `coarse` labels a
/// network was trained on. Metrics ([`crate::metrics::MeasureOptions::labels`]) and probes
/// ([`crate::probe::LinearProbe::label_column`]) take it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum LabelColumn {
    /// The fine labels, [`Features::labels`] (column `label`).
    #[default]
    #[cfg_attr(feature = "cli", value(help = None::<&str>))]
    Label,
    /// The labels the network was trained on, [`Features::coarse`] (column `coarse`).
    #[cfg_attr(feature = "cli", value(help = None::<&str>))]
    Coarse,
}

impl LabelColumn {
    /// `"label"` or `"coarse"`.
    pub fn name(self) -> &'static str {
        match self {
            LabelColumn::Label => "label",
            LabelColumn::Coarse => "coarse",
        }
    }
}

impl fmt::Display for LabelColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Features {
    /// These features with `column` as their labels: for [`LabelColumn::Coarse`], `labels` and
    /// `coarse` swap places (so NC is measured on the labels the network was trained on, and the
    /// fine labels stay available); [`LabelColumn::Label`] returns them unchanged.
    ///
    /// ```
    /// use ndarray::array;
    /// use neural_collapse::features::{Features, LabelColumn};
    /// let f = Features::new(array![[1.0f32], [2.0], [3.0]], vec![0, 1, 2]).with_coarse(vec![0, 0, 1]);
    /// let c = f.relabel(LabelColumn::Coarse)?;
    /// assert_eq!(c.labels, vec![0, 0, 1]);
    /// assert_eq!(c.coarse, Some(vec![0, 1, 2]));
    /// # Ok::<(), neural_collapse::features::FeatureError>(())
    /// ```
    ///
    /// # Errors
    /// [`FeatureError::MissingColumn`] (column `coarse`) when asked for coarse labels the features
    /// do not have.
    pub fn relabel(mut self, column: LabelColumn) -> Result<Features, FeatureError> {
        match column {
            LabelColumn::Label => Ok(self),
            LabelColumn::Coarse => {
                let Some(coarse) = self.coarse.take() else {
                    return Err(FeatureError::MissingColumn {
                        path: format!(
                            "features (epoch {}, split {}, layer {})",
                            self.epoch.map_or("-".into(), |e| e.to_string()),
                            self.split.as_deref().unwrap_or("-"),
                            self.layer.as_deref().unwrap_or("-")
                        ),
                        column: "coarse".into(),
                        found: "no coarse labels".into(),
                    });
                };
                self.coarse = Some(std::mem::replace(&mut self.labels, coarse));
                self.labels_from = LabelColumn::Coarse;
                Ok(self)
            }
        }
    }
}

/// A linear classifier `z = W h + b` (W is `C × d`), as stored in `classifier.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct Classifier {
    /// `C × d` weights, one row per class.
    pub w: Array2<f64>,
    /// `C` biases.
    pub b: Array1<f64>,
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by readers and writers.

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// `f()`, with a panic inside it caught and turned into its innermost message (see
/// [`innermost_panic`]): polars' readers panic on some damaged files instead of failing.
pub(crate) fn catch_polars_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|panic| innermost_panic(&panic_text(panic.as_ref())))
}

/// `f()` (a read by polars) that cannot panic: some damaged files make a task of polars'
/// reader panic, which polars 0.52 passes on as a panic of its own (`block_on(handle).unwrap()`
/// in `polars-mem-engine`'s cache executor, found by `tests/bad_input.rs`'s damaged-file
/// property test). The panic becomes a `ComputeError` carrying its message, so that the
/// caller's error names the file like any other read error.
pub(crate) fn read_guarded<T>(f: impl FnOnce() -> PolarsResult<T>) -> PolarsResult<T> {
    catch_polars_panic(f).unwrap_or_else(|what| {
        Err(PolarsError::ComputeError(
            format!("polars failed reading the file (damaged or truncated?): {what}").into(),
        ))
    })
}

/// `LazyFrame::collect` under [`read_guarded`].
pub(crate) trait CollectGuarded {
    fn collect_guarded(self) -> PolarsResult<DataFrame>;
}

impl CollectGuarded for LazyFrame {
    fn collect_guarded(self) -> PolarsResult<DataFrame> {
        read_guarded(|| self.collect())
    }
}

/// `lf.collect_schema()` that cannot panic: polars 0.52 panics on a column type it was built
/// without (a `decimal128` column, even one this crate does not read: "Arrow datatype
/// Decimal(10, 2) not supported by Polars"). The panic becomes an error naming the type.
pub(crate) fn schema_guarded(lf: &mut LazyFrame) -> PolarsResult<SchemaRef> {
    catch_polars_panic(|| lf.collect_schema()).unwrap_or_else(|what| {
        let what = what.split(". You probably need").next().unwrap_or_default();
        Err(PolarsError::ComputeError(
            format!("a column's type cannot be read: {what}").into(),
        ))
    })
}

/// The text of a panic's payload (a `&str` or a `String`, as `panic!` makes them), or
/// `"no message"`.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string())
}

/// The innermost message of a panic that polars passed on from thread to thread: each hop
/// wraps it as ``called `Result::unwrap()` on an `Err` value: JoinError::Panic(Id(n), "…", …)``
/// with its quotes escaped once more, so the text after the last `` `Err` value: `` is the
/// original, up to the escapes and the wrappers' tails (`", ...)`), which are dropped.
pub(crate) fn innermost_panic(what: &str) -> String {
    const HOP: &str = "`Err` value: ";
    match what.rfind(HOP) {
        Some(at) => {
            let inner: String = what[at + HOP.len()..]
                .chars()
                .filter(|&c| c != '\\')
                .collect();
            match inner.find("\", ...)") {
                Some(end) => inner[..end].to_string(),
                None => inner,
            }
        }
        None => what.to_string(),
    }
}

fn polars_err(path: &str) -> impl Fn(PolarsError) -> FeatureError + '_ {
    move |e| {
        let mut message = polars_message(&e);
        // polars says only "invalid utf-8 sequence": say where, for a text file.
        if message.contains("invalid utf-8") && format_of(Path::new(path)) == Some(Format::Csv) {
            if let Some(at) = first_invalid_utf8(Path::new(path)) {
                message = format!("{message} at {at}");
            }
        }
        FeatureError::Polars {
            path: path.to_string(),
            message,
        }
    }
}

/// Where the first bytes of `path` that are not UTF-8 lie (`line L, byte B of the file`, both
/// counted from 1), or `None` when the file is valid UTF-8 or cannot be read. Reads the file in
/// 1 MiB pieces (only when polars has reported an invalid sequence).
fn first_invalid_utf8(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut piece = vec![0u8; 1 << 20];
    let (mut data, mut offset, mut line) = (Vec::new(), 0u64, 1u64);
    let at = |offset: u64, line: u64| format!("line {line}, byte {} of the file", offset + 1);
    loop {
        let got = file.read(&mut piece).ok()?;
        if got == 0 {
            // A sequence cut off by the end of the file.
            return (!data.is_empty()).then(|| at(offset, line));
        }
        data.extend_from_slice(&piece[..got]);
        let (valid, invalid) = match std::str::from_utf8(&data) {
            Ok(_) => (data.len(), false),
            Err(e) => (e.valid_up_to(), e.error_len().is_some()),
        };
        line += data[..valid].iter().filter(|&&b| b == b'\n').count() as u64;
        offset += valid as u64;
        if invalid {
            return Some(at(offset, line));
        }
        data.drain(..valid);
    }
}

/// polars' message, with what to do for the one Arrow IPC file that pyarrow writes and polars
/// 0.52 cannot read: LZ4/ZSTD-compressed record batches sliced out of a longer string (or list)
/// column — pyarrow compresses such a column's whole padded values buffer, and polars requires
/// exactly the slice's bytes. `pyarrow.feather.write_feather` does this for a table of several
/// chunks, or of more rows than its `chunksize` (64Ki by default).
fn polars_message(e: &PolarsError) -> String {
    let message = e.to_string();
    if message.contains("unexpected decompressed buffer size") {
        format!(
            "{message} (polars 0.52 cannot read compressed Arrow IPC record batches sliced out of \
             a longer string or list column, as pyarrow writes a table of several chunks or of \
             more than 65,536 rows: write it with compression=\"uncompressed\", or as Parquet)"
        )
    } else if let Some((head, rest)) = message.split_once("You might want to try:") {
        // polars' CSV reader appends advice for its Python API (`infer_schema_length`,
        // `ignore_errors=True`, …), which a user of this crate cannot follow: keep what it
        // found and its original error.
        let original = rest
            .split_once("Original error:")
            .map(|(_, o)| format!(" ({})", o.trim().trim_matches('`')))
            .unwrap_or_default();
        format!("{}{original}", head.trim_end())
    } else {
        message
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Parquet,
    Csv,
    /// Arrow IPC file format (Feather v2): `.arrow`, `.feather`, `.ipc`.
    Ipc,
}

fn format_of(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "parquet" | "pq" => Some(Format::Parquet),
        "csv" => Some(Format::Csv),
        "arrow" | "feather" | "ipc" => Some(Format::Ipc),
        _ => None,
    }
}

/// The layer a feature file holds: `features-<layer>.<ext>` gives `<layer>`, anything else its stem.
fn layer_of(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.strip_prefix("features-") {
        Some(layer) if !layer.is_empty() => layer.to_string(),
        _ => stem,
    }
}

/// Index `j` of a wide feature column `x_<j>` (canonical decimal, no sign or leading zeros).
fn wide_index(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("x_")?;
    let j: usize = digits.parse().ok()?;
    (j.to_string() == digits).then_some(j)
}

fn columns_list(schema: &Schema) -> String {
    schema
        .iter_names()
        .filter(|n| n.as_str() != ROW)
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a non-regular file is, for [`FeatureError::NotAFile`] (and the `.npy` reader).
pub(crate) fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

/// Opens `path` as a lazy frame with a file-row index column [`ROW`].
///
/// Only regular files are opened (a directory, FIFO, device or socket is refused by name), and a
/// Parquet file is read on its own: hive partitioning is off, so folder names such as
/// `split=test/` never become columns. (To read a directory of files, open each file.)
fn scan_file(path: &Path, fmt: Format) -> Result<LazyFrame, FeatureError> {
    let lf = scan_file_from(path, fmt, 0)?;
    if fmt == Format::Parquet {
        // Before polars decodes a page: a damaged count there can abort the process.
        pages::check_page_headers(path)?;
    }
    Ok(lf)
}

/// [`scan_file`] with the row index starting at `row_offset` (a file of a directory scan).
fn scan_file_from(
    path: &Path,
    fmt: Format,
    row_offset: IdxSize,
) -> Result<LazyFrame, FeatureError> {
    let shown = display(path);
    // A clear "No such file" instead of polars' message; and only regular files (following
    // symlinks): a FIFO would block the reader forever, a directory would be expanded by polars.
    let meta = std::fs::metadata(path).map_err(|source| FeatureError::Io {
        path: shown.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(FeatureError::NotAFile {
            path: shown,
            kind: file_kind(&meta),
        });
    }
    // polars handles paths as UTF-8 strings (and panics on other bytes).
    if path.to_str().is_none() {
        return Err(FeatureError::NonUtf8Path { path: shown });
    }
    let pl_path = PlPath::Local(Arc::from(path));
    let row_index = Some(RowIndex {
        name: PlSmallStr::from_static(ROW),
        offset: row_offset,
    });
    match fmt {
        Format::Parquet => {
            // Hive partitioning off: a file inside a folder named `split=test/` or `run=abc/`
            // is read for what it holds, not given (or overridden by) columns from the path.
            let args = ScanArgsParquet {
                row_index,
                glob: false,
                hive_options: HiveOptions::new_disabled(),
                ..Default::default()
            };
            LazyFrame::scan_parquet(pl_path, args).map_err(polars_err(&shown))
        }
        Format::Ipc => {
            // Arrow IPC file format (Feather v2), uncompressed or with LZ4/ZSTD buffers; read
            // lazily like Parquet (only the record batches a query needs are decoded).
            let args = UnifiedScanArgs {
                row_index,
                glob: false,
                hive_options: HiveOptions::new_disabled(),
                ..Default::default()
            };
            LazyFrame::scan_ipc(pl_path, Default::default(), args).map_err(polars_err(&shown))
        }
        Format::Csv => LazyCsvReader::new(pl_path)
            .with_has_header(true)
            .with_glob(false)
            .with_row_index(row_index)
            // Known numeric columns are read as floats whatever the first rows look like (a dead
            // ReLU unit is "0" for many rows); integrality is checked when loading.
            .with_schema_modify(|mut schema: Schema| {
                for (name, dtype) in schema.iter_mut() {
                    if wide_index(name).is_some() {
                        *dtype = DataType::Float32;
                    } else if INT_COLUMNS.contains(&name.as_str()) {
                        *dtype = DataType::Float64;
                    } else if name.as_str() == "split" {
                        *dtype = DataType::String;
                    }
                }
                Ok(schema)
            })
            .map_err(polars_err(&shown))?
            .finish()
            .map_err(polars_err(&shown)),
    }
}

const INT_COLUMNS: [&str; 6] = ["epoch", "sample", "label", "coarse", "pred", "class"];
const EXPECT_INT: &str =
    "an unsigned integer (u32; other integer types and integral floats are accepted)";
const EXPECT_STR: &str = "a string (or categorical)";
const EXPECT_VEC: &str = "a fixed-size list (polars Array) of f32, or a list of numbers";
const EXPECT_FLOAT: &str = "a number (f32/f64)";

fn check_int_column(
    path: &str,
    schema: &Schema,
    column: &str,
    required: bool,
) -> Result<bool, FeatureError> {
    match schema.get(column) {
        None if required => Err(FeatureError::MissingColumn {
            path: path.to_string(),
            column: column.to_string(),
            found: columns_list(schema),
        }),
        None => Ok(false),
        Some(dt) if dt.is_primitive_numeric() => Ok(true),
        Some(dt) => Err(FeatureError::ColumnType {
            path: path.to_string(),
            column: column.to_string(),
            found: dt.to_string(),
            expected: EXPECT_INT,
        }),
    }
}

fn check_str_column(path: &str, schema: &Schema, column: &str) -> Result<(), FeatureError> {
    match schema.get(column) {
        None => Err(FeatureError::MissingColumn {
            path: path.to_string(),
            column: column.to_string(),
            found: columns_list(schema),
        }),
        Some(dt) if dt.is_string() || dt.is_categorical() || dt.is_enum() => Ok(()),
        Some(dt) => Err(FeatureError::ColumnType {
            path: path.to_string(),
            column: column.to_string(),
            found: dt.to_string(),
            expected: EXPECT_STR,
        }),
    }
}

/// How the feature vectors are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
enum VecLayout {
    /// A fixed-size list column of this width.
    Array(usize),
    /// A variable-size list column (lengths checked at load).
    List,
    /// Columns `x_0 … x_{d-1}`.
    Wide(Vec<PlSmallStr>),
}

/// Checks a vector column `column` (Array or List of numbers, or wide `column_<j>` columns).
fn check_vec_column(
    path: &str,
    schema: &Schema,
    column: &str,
    allow_wide: bool,
) -> Result<VecLayout, FeatureError> {
    let bad_type = |dt: &DataType| FeatureError::ColumnType {
        path: path.to_string(),
        column: column.to_string(),
        found: dt.to_string(),
        expected: EXPECT_VEC,
    };
    if let Some(dt) = schema.get(column) {
        return match dt {
            DataType::Array(inner, width) if inner.is_primitive_numeric() => {
                if *width == 0 {
                    Err(FeatureError::EmptyFeatures {
                        path: path.to_string(),
                        column: column.to_string(),
                    })
                } else {
                    Ok(VecLayout::Array(*width))
                }
            }
            DataType::List(inner) if inner.is_primitive_numeric() => Ok(VecLayout::List),
            dt => Err(bad_type(dt)),
        };
    }
    let mut wide: Vec<(usize, PlSmallStr)> = Vec::new();
    if allow_wide {
        for (name, dt) in schema.iter() {
            if let Some(j) = wide_index(name) {
                if !dt.is_primitive_numeric() {
                    return Err(FeatureError::ColumnType {
                        path: path.to_string(),
                        column: name.to_string(),
                        found: dt.to_string(),
                        expected: EXPECT_FLOAT,
                    });
                }
                wide.push((j, name.clone()));
            }
        }
    }
    if wide.is_empty() {
        let mut found = columns_list(schema);
        if allow_wide {
            found.push_str("; nor are there wide columns x_0 … x_{d-1}");
        }
        return Err(FeatureError::MissingColumn {
            path: path.to_string(),
            column: column.to_string(),
            found,
        });
    }
    wide.sort();
    let largest = wide.last().map(|(j, _)| *j).unwrap_or(0);
    if let Some(missing) = (0..wide.len()).find(|&k| wide[k].0 != k) {
        return Err(FeatureError::WideColumns {
            path: path.to_string(),
            missing: format!("x_{missing}"),
            found: wide.len(),
            largest,
        });
    }
    Ok(VecLayout::Wide(wide.into_iter().map(|(_, n)| n).collect()))
}

/// File-row numbers of a collected frame, for error messages.
struct Rows<'a> {
    path: &'a str,
    rows: Option<Vec<IdxSize>>,
}

impl Rows<'_> {
    fn of(&self, i: usize) -> Option<u64> {
        match &self.rows {
            Some(r) => r.get(i).map(|&v| v as u64),
            None => None,
        }
    }

    fn row(&self, i: usize) -> u64 {
        self.of(i).unwrap_or(i as u64)
    }
}

fn rows_of<'a>(path: &'a str, df: &DataFrame) -> Result<Rows<'a>, FeatureError> {
    let rows = match df.column(ROW) {
        Ok(c) => {
            let s = c
                .as_materialized_series()
                .cast(&IDX_DTYPE)
                .map_err(polars_err(path))?;
            let ca = s.idx().map_err(polars_err(path))?;
            Some(ca.into_iter().map(|v| v.unwrap_or(0)).collect())
        }
        Err(_) => None,
    };
    Ok(Rows { path, rows })
}

fn first_null(s: &Series) -> Option<usize> {
    if s.null_count() == 0 {
        return None;
    }
    let mask = s.is_null();
    let pos = (&mask).into_iter().position(|b| b == Some(true));
    pos
}

fn series<'a>(df: &'a DataFrame, path: &str, column: &str) -> Result<&'a Series, FeatureError> {
    df.column(column)
        .map(|c| c.as_materialized_series())
        .map_err(polars_err(path))
}

/// A label-like column as `u32`, rejecting nulls, negative, non-integral and too large values.
fn u32_values(rows: &Rows, df: &DataFrame, column: &str) -> Result<Vec<u32>, FeatureError> {
    let path = rows.path;
    let s = series(df, path, column)?;
    if let Some(i) = first_null(s) {
        return Err(FeatureError::NullValue {
            path: path.to_string(),
            column: column.to_string(),
            row: rows.of(i),
        });
    }
    let invalid = |i: usize, value: String, reason: &'static str| FeatureError::InvalidInteger {
        path: path.to_string(),
        column: column.to_string(),
        row: rows.of(i),
        value,
        reason,
    };
    let pe = polars_err(path);
    let dt = s.dtype();
    if *dt == DataType::UInt32 {
        return Ok(s.u32().map_err(pe)?.into_no_null_iter().collect());
    }
    if dt.is_unsigned_integer() {
        let c = s.cast(&DataType::UInt64).map_err(&pe)?;
        let mut out = Vec::with_capacity(c.len());
        for (i, v) in c.u64().map_err(&pe)?.into_no_null_iter().enumerate() {
            let v32 =
                u32::try_from(v).map_err(|_| invalid(i, v.to_string(), "does not fit u32"))?;
            out.push(v32);
        }
        Ok(out)
    } else if dt.is_signed_integer() {
        let c = s.cast(&DataType::Int64).map_err(&pe)?;
        let mut out = Vec::with_capacity(c.len());
        for (i, v) in c.i64().map_err(&pe)?.into_no_null_iter().enumerate() {
            if v < 0 {
                return Err(invalid(i, v.to_string(), "is negative"));
            }
            let v32 =
                u32::try_from(v).map_err(|_| invalid(i, v.to_string(), "does not fit u32"))?;
            out.push(v32);
        }
        Ok(out)
    } else if dt.is_float() {
        let c = s.cast(&DataType::Float64).map_err(&pe)?;
        let mut out = Vec::with_capacity(c.len());
        for (i, v) in c.f64().map_err(&pe)?.into_no_null_iter().enumerate() {
            if !v.is_finite() {
                return Err(invalid(i, v.to_string(), "is not finite"));
            }
            if v.fract() != 0.0 {
                return Err(invalid(i, v.to_string(), "is not an integer"));
            }
            if v < 0.0 {
                return Err(invalid(i, v.to_string(), "is negative"));
            }
            if v > u32::MAX as f64 {
                return Err(invalid(i, v.to_string(), "does not fit u32"));
            }
            out.push(v as u32);
        }
        Ok(out)
    } else {
        Err(FeatureError::ColumnType {
            path: path.to_string(),
            column: column.to_string(),
            found: dt.to_string(),
            expected: EXPECT_INT,
        })
    }
}

/// A string (or categorical) column as `String`s, rejecting nulls.
fn string_values(rows: &Rows, df: &DataFrame, column: &str) -> Result<Vec<String>, FeatureError> {
    let path = rows.path;
    let s = series(df, path, column)?;
    if let Some(i) = first_null(s) {
        return Err(FeatureError::NullValue {
            path: path.to_string(),
            column: column.to_string(),
            row: rows.of(i),
        });
    }
    let s = s.cast(&DataType::String).map_err(polars_err(path))?;
    let ca = s.str().map_err(polars_err(path))?;
    Ok(ca.into_no_null_iter().map(str::to_string).collect())
}

/// An optional label-like column: `None` when absent or entirely null.
fn opt_u32_values(
    rows: &Rows,
    df: &DataFrame,
    column: &str,
) -> Result<Option<Vec<u32>>, FeatureError> {
    match df.column(column) {
        Err(_) => Ok(None),
        Ok(c) if c.null_count() == c.len() => Ok(None),
        Ok(_) => u32_values(rows, df, column).map(Some),
    }
}

/// The single value of `values`, if they are all equal.
fn common<T: PartialEq + Clone>(values: &[T]) -> Option<T> {
    let first = values.first()?;
    values.iter().all(|v| v == first).then(|| first.clone())
}

/// Row-major values of a vector column (`Array`/`List`) or of wide columns, cast to `target`
/// (`Float32` or `Float64`), as one contiguous single-chunk series without nulls, plus the width.
fn vector_values(
    rows: &Rows,
    df: &DataFrame,
    column: &str,
    layout: &VecLayout,
    target: &DataType,
) -> Result<(Series, usize), FeatureError> {
    let path = rows.path;
    let pe = polars_err(path);
    let null = |row: Option<u64>, column: &str| FeatureError::NullValue {
        path: path.to_string(),
        column: column.to_string(),
        row,
    };
    let n = df.height();
    match layout {
        VecLayout::Wide(names) => {
            for name in names {
                if let Some(i) = first_null(series(df, path, name)?) {
                    return Err(null(rows.of(i), name));
                }
            }
            let d = names.len();
            let sub = df.select(names.iter().cloned()).map_err(&pe)?;
            let flat: Series = if *target == DataType::Float64 {
                let a = sub.to_ndarray::<Float64Type>(IndexOrder::C).map_err(&pe)?;
                Series::new(column.into(), a.into_raw_vec_and_offset().0)
            } else {
                let a = sub.to_ndarray::<Float32Type>(IndexOrder::C).map_err(&pe)?;
                Series::new(column.into(), a.into_raw_vec_and_offset().0)
            };
            debug_assert_eq!(flat.len(), n * d);
            Ok((flat, d))
        }
        VecLayout::Array(_) | VecLayout::List => {
            let mut s = series(df, path, column)?.rechunk();
            if let Some(i) = first_null(&s) {
                return Err(null(rows.of(i), column));
            }
            if let DataType::List(_) = s.dtype() {
                let ca = s.list().map_err(&pe)?;
                let mut expected = None;
                for (i, len) in ca
                    .downcast_iter()
                    .flat_map(|arr| arr.offsets().lengths())
                    .enumerate()
                {
                    match expected {
                        None => expected = Some(len),
                        Some(e) if e != len => {
                            return Err(FeatureError::RaggedFeatures {
                                path: path.to_string(),
                                column: column.to_string(),
                                row: rows.row(i),
                                len,
                                expected: e,
                            })
                        }
                        Some(_) => {}
                    }
                }
                let d = expected.unwrap_or(0);
                if d == 0 {
                    return Err(FeatureError::EmptyFeatures {
                        path: path.to_string(),
                        column: column.to_string(),
                    });
                }
                s = s
                    .cast(&DataType::Array(Box::new(target.clone()), d))
                    .map_err(&pe)?
                    .rechunk();
            }
            let ca = s.array().map_err(&pe)?;
            let d = ca.width();
            if d == 0 {
                return Err(FeatureError::EmptyFeatures {
                    path: path.to_string(),
                    column: column.to_string(),
                });
            }
            let inner = ca.get_inner();
            let inner = if inner.dtype() == target {
                inner
            } else {
                inner.cast(target).map_err(&pe)?
            };
            let inner = inner.rechunk();
            debug_assert_eq!(inner.len(), n * d);
            if let Some(k) = first_null(&inner) {
                return Err(null(rows.of(k / d), column));
            }
            Ok((inner, d))
        }
    }
}

fn non_finite(
    rows: &Rows,
    layout: &VecLayout,
    column: &str,
    k: usize,
    d: usize,
    value: f64,
) -> FeatureError {
    let column = match layout {
        VecLayout::Wide(names) => names[k % d].to_string(),
        _ => column.to_string(),
    };
    FeatureError::NonFinite {
        path: rows.path.to_string(),
        column,
        row: rows.row(k / d),
        component: k % d,
        value,
    }
}

// ---------------------------------------------------------------------------------------------
// Scanning feature files.

/// A lazily scanned feature file (schema v1, long or wide; Parquet or CSV).
///
/// Opening reads only the schema and checks it (required columns, their types, the layout of
/// the feature vectors); values are checked when rows are loaded. Filters
/// ([`epoch`](FeatureScan::epoch), [`split`](FeatureScan::split)) are pushed down into the
/// polars scan, so loading one checkpoint of a large Parquet file reads only the row groups
/// that can hold it. A `FeatureScan` is cheap to clone.
///
/// # Example
///
/// ```
/// use ndarray::array;
/// use neural_collapse::features::{write_features, FeatureScan, Features};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("nc-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("features-fc2.parquet");
///
/// // Two checkpoints of a 2-d layer, 3 samples each.
/// let x0 = array![[0.0f32, 1.0], [1.0, 0.0], [0.5, 0.5]];
/// let x5 = array![[0.0f32, 2.0], [2.0, 0.0], [1.0, 1.0]];
/// write_features(
///     &path,
///     &[
///         Features::new(x0, vec![0, 1, 2]).with_epoch(0).with_split("train"),
///         Features::new(x5.clone(), vec![0, 1, 2]).with_epoch(5).with_split("train"),
///     ],
/// )?;
///
/// let scan = FeatureScan::open(&path)?;
/// assert_eq!(scan.layer(), "fc2");
/// assert_eq!(scan.checkpoints()?, vec![(0, "train".to_string()), (5, "train".to_string())]);
/// let f = scan.epoch(5).split("train").load()?;
/// assert_eq!(f.x, x5);
/// assert_eq!(f.labels, vec![0, 1, 2]);
/// assert_eq!((f.epoch, f.split.as_deref(), f.layer.as_deref()), (Some(5), Some("train"), Some("fc2")));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FeatureScan {
    path: PathBuf,
    shown: String,
    layer: String,
    lf: LazyFrame,
    layout: VecLayout,
    columns: Vec<PlSmallStr>,
    /// The files of a directory scan ([`dir`]), in row order; `None` for one file.
    parts: Option<Arc<[dir::Part]>>,
}

impl fmt::Debug for FeatureScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeatureScan")
            .field("path", &self.path)
            .field("layer", &self.layer)
            .field("dim", &self.dim())
            .field("wide", &matches!(self.layout, VecLayout::Wide(_)))
            .finish()
    }
}

impl FeatureScan {
    /// Opens a feature file: `.parquet` / `.pq` or Arrow IPC / Feather v2 `.arrow` / `.feather` /
    /// `.ipc` (long `x` column or wide `x_<j>` columns), or `.csv` (wide); or a directory of
    /// Parquet files of one layer. The layer name is taken from a file name
    /// `features-<layer>.<ext>`, else from the file stem.
    ///
    /// A directory (whose own name has no feature-file extension) is read as one file of its
    /// one layer: the files `epoch-<E>.parquet` (checkpoint E of the folder's layer),
    /// `epoch-<E>-<layer>.parquet` or `features-<layer>.parquet`, concatenated in checkpoint
    /// order; the epoch comes from the file name when the file has no `epoch` column, and must
    /// agree with it when it has one. [`FeatureScan::open_layer`] picks one layer of a directory
    /// holding several; the rules and errors are in its docs.
    ///
    /// Otherwise only a regular file is opened, and it is read on its own: the folders it sits
    /// in never add or override columns (polars' hive partitioning is off, so
    /// `split=test/features.parquet` holds whatever splits the file holds; a directory named
    /// like a file, `x.parquet/`, as Spark and pyarrow name partitioned datasets, is refused).
    /// [`Run::open`] lists a run directory's `features-<layer>` files, one per layer.
    ///
    /// # Errors
    ///
    /// [`FeatureError::NotAFile`] for a FIFO, device or socket (or a directory named like a
    /// file), the directory errors of [`FeatureScan::open_layer`],
    /// [`FeatureError::NonUtf8Path`] for a path that is not valid UTF-8,
    /// [`FeatureError::DuplicateColumn`] for a CSV header naming a column twice,
    /// [`FeatureError::Io`] if the file cannot be read, [`FeatureError::UnsupportedFormat`] for
    /// another extension, [`FeatureError::MissingColumn`] if `epoch`, `split`, `label` or the
    /// features are absent, [`FeatureError::ColumnType`] for an ill-typed column,
    /// [`FeatureError::EmptyFeatures`] for `Array` columns of width 0,
    /// [`FeatureError::WideColumns`] if the `x_<j>` are not `x_0 … x_{d-1}`, and
    /// [`FeatureError::Polars`] if polars cannot read the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, FeatureError> {
        let path = path.as_ref().to_path_buf();
        // A directory of feature files (module `dir`); one named like a file (`x.parquet/`, as
        // Spark or pyarrow name a partitioned dataset) is refused as not a regular file below.
        if format_of(&path).is_none() && std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            return dir::open_dir(&path, None);
        }
        let shown = display(&path);
        let fmt = format_of(&path).ok_or_else(|| FeatureError::UnsupportedFormat {
            path: shown.clone(),
            expected:
                ".parquet, .pq, .arrow, .feather, .ipc or .csv, or a directory of Parquet files",
        })?;
        let mut lf = scan_file(&path, fmt)?;
        let schema = schema_guarded(&mut lf).map_err(polars_err(&shown))?;
        if fmt == Format::Csv {
            // polars renames a repeated header `label` to `label_duplicated_0`, … .
            let repeated = schema.iter_names().find_map(|n| {
                let (base, k) = n.as_str().rsplit_once("_duplicated_")?;
                (k.parse::<usize>().is_ok() && schema.contains(base)).then(|| base.to_string())
            });
            if let Some(column) = repeated {
                return Err(FeatureError::DuplicateColumn {
                    path: shown,
                    column,
                });
            }
        }
        check_int_column(&shown, &schema, "epoch", true)?;
        check_str_column(&shown, &schema, "split")?;
        check_int_column(&shown, &schema, "label", true)?;
        let mut columns: Vec<PlSmallStr> = vec![ROW.into(), "epoch".into(), "split".into()];
        for name in ["sample", "coarse", "pred"] {
            if check_int_column(&shown, &schema, name, false)? {
                columns.push(name.into());
            }
        }
        columns.push("label".into());
        let layout = check_vec_column(&shown, &schema, "x", true)?;
        match &layout {
            VecLayout::Wide(names) => columns.extend(names.iter().cloned()),
            _ => columns.push("x".into()),
        }
        Ok(FeatureScan {
            layer: layer_of(&path),
            path,
            shown,
            lf,
            layout,
            columns,
            parts: None,
        })
    }

    /// The file this scan reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The layer name (from the file name), stored in every loaded [`Features::layer`].
    pub fn layer(&self) -> &str {
        &self.layer
    }

    /// The feature dimension `d` when the schema fixes it (an `Array` column or wide columns);
    /// `None` for a variable-size list column, whose lengths are checked at load.
    pub fn dim(&self) -> Option<usize> {
        match &self.layout {
            VecLayout::Array(d) => Some(*d),
            VecLayout::Wide(names) => Some(names.len()),
            VecLayout::List => None,
        }
    }

    /// Whether the file is a wide table (`x_0 … x_{d-1}`).
    pub fn is_wide(&self) -> bool {
        matches!(self.layout, VecLayout::Wide(_))
    }

    /// The underlying polars scan, unfiltered, with every column of the file plus a file-row
    /// index column `__nc_file_row` (for custom queries from a notebook).
    pub fn lazy(&self) -> LazyFrame {
        self.lf.clone()
    }

    /// A query over every row; narrow it with [`FeatureQuery::epoch`], [`FeatureQuery::split`]
    /// and [`FeatureQuery::filter`].
    pub fn query(&self) -> FeatureQuery {
        FeatureQuery {
            scan: self.clone(),
            rows: None,
            epoch: None,
            split: None,
            extra: Vec::new(),
        }
    }

    /// A query for the rows of checkpoint `epoch`.
    pub fn epoch(&self, epoch: u32) -> FeatureQuery {
        self.query().epoch(epoch)
    }

    /// A query for the rows of `split` (`"train"` or `"test"`).
    pub fn split(&self, split: impl Into<String>) -> FeatureQuery {
        self.query().split(split)
    }

    /// Loads every row of the file as one [`Features`] (see [`FeatureQuery::load`]).
    ///
    /// # Errors
    ///
    /// As [`FeatureQuery::load`].
    pub fn load(&self) -> Result<Features, FeatureError> {
        self.query().load()
    }

    /// The distinct `(epoch, split)` pairs of the file, sorted by epoch then split. Reads only the
    /// `epoch` and `split` columns.
    ///
    /// # Errors
    ///
    /// [`FeatureError::NullValue`] or [`FeatureError::InvalidInteger`] for bad epochs or splits,
    /// [`FeatureError::Polars`] if the scan fails.
    pub fn checkpoints(&self) -> Result<Vec<(u32, String)>, FeatureError> {
        let df = self
            .lf
            .clone()
            .select([col("epoch"), col("split").cast(DataType::String)])
            .unique(None, UniqueKeepStrategy::Any)
            .collect_guarded()
            .map_err(polars_err(&self.shown))?;
        let rows = Rows {
            path: &self.shown,
            rows: None,
        };
        let epochs = u32_values(&rows, &df, "epoch")?;
        let splits = string_values(&rows, &df, "split")?;
        let mut out: Vec<(u32, String)> = epochs.into_iter().zip(splits).collect();
        out.sort();
        Ok(out)
    }

    /// The distinct epochs of the file, sorted.
    ///
    /// # Errors
    ///
    /// As [`FeatureScan::checkpoints`].
    pub fn epochs(&self) -> Result<Vec<u32>, FeatureError> {
        let mut epochs: Vec<u32> = self.checkpoints()?.into_iter().map(|(e, _)| e).collect();
        epochs.dedup();
        Ok(epochs)
    }

    /// The distinct splits of the file, sorted.
    ///
    /// # Errors
    ///
    /// As [`FeatureScan::checkpoints`].
    pub fn splits(&self) -> Result<Vec<String>, FeatureError> {
        let mut splits: Vec<String> = self.checkpoints()?.into_iter().map(|(_, s)| s).collect();
        splits.sort();
        splits.dedup();
        Ok(splits)
    }

    fn available(&self) -> String {
        match self.checkpoints() {
            Ok(c) if c.is_empty() => "none".to_string(),
            Ok(c) => c
                .iter()
                .map(|(e, s)| format!("({e}, {s})"))
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("unknown ({e})"),
        }
    }
}

/// A selection of rows of a [`FeatureScan`], built with setters and loaded with
/// [`load`](FeatureQuery::load).
#[derive(Clone, Debug)]
pub struct FeatureQuery {
    scan: FeatureScan,
    /// File rows `start..end` (applied before the other filters), for batched reading.
    rows: Option<(u64, u64)>,
    epoch: Option<u32>,
    split: Option<String>,
    extra: Vec<Expr>,
}

impl FeatureQuery {
    /// Keeps the rows of checkpoint `epoch`.
    pub fn epoch(mut self, epoch: u32) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Keeps only the file rows `range` (0-based, end exclusive; taken before the other
    /// filters). The slice is pushed down into the Parquet scan, so only the row groups that
    /// overlap it are read: this is how [`crate::stream`] reads a file in bounded batches.
    pub fn rows(mut self, range: std::ops::Range<u64>) -> Self {
        self.rows = Some((range.start, range.end.max(range.start)));
        self
    }

    /// The distinct `(epoch, split)` pairs of the selected rows, sorted (reads only the `epoch`
    /// and `split` columns); as [`FeatureScan::checkpoints`] for a query.
    ///
    /// # Errors
    ///
    /// As [`FeatureScan::checkpoints`].
    pub fn checkpoints(&self) -> Result<Vec<(u32, String)>, FeatureError> {
        let df = self
            .lazy()
            .select([col("epoch"), col("split").cast(DataType::String)])
            .unique(None, UniqueKeepStrategy::Any)
            .collect_guarded()
            .map_err(polars_err(&self.scan.shown))?;
        let rows = Rows {
            path: &self.scan.shown,
            rows: None,
        };
        let epochs = u32_values(&rows, &df, "epoch")?;
        let splits = string_values(&rows, &df, "split")?;
        let mut out: Vec<(u32, String)> = epochs.into_iter().zip(splits).collect();
        out.sort();
        Ok(out)
    }

    /// Keeps the rows of `split`.
    pub fn split(mut self, split: impl Into<String>) -> Self {
        self.split = Some(split.into());
        self
    }

    /// Keeps the rows where a polars predicate holds, e.g. `col("label").lt(lit(5))`. The
    /// predicate sees the file's columns as stored.
    pub fn filter(mut self, predicate: Expr) -> Self {
        self.extra.push(predicate);
        self
    }

    /// The filtered polars scan (every column of the file, plus `__nc_file_row`).
    pub fn lazy(&self) -> LazyFrame {
        // A directory whose file names give the checkpoints: only the files of `epoch` are read.
        let mut lf = match (self.rows, self.epoch) {
            (None, Some(e)) => self
                .scan
                .files_for_epoch(e)
                .unwrap_or_else(|| self.scan.lf.clone()),
            _ => self.scan.lf.clone(),
        };
        if let Some((start, end)) = self.rows {
            let len = IdxSize::try_from(end - start).unwrap_or(IdxSize::MAX);
            lf = lf.slice(i64::try_from(start).unwrap_or(i64::MAX), len);
        }
        if let Some(e) = self.epoch {
            lf = lf.filter(col("epoch").eq(lit(e)));
        }
        if let Some(s) = &self.split {
            lf = lf.filter(col("split").eq(lit(s.as_str())));
        }
        for p in &self.extra {
            lf = lf.filter(p.clone());
        }
        lf
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((start, end)) = self.rows {
            parts.push(format!("rows {start}..{end}"));
        }
        if let Some(e) = self.epoch {
            parts.push(format!("epoch = {e}"));
        }
        if let Some(s) = &self.split {
            parts.push(format!("split = {s:?}"));
        }
        for p in &self.extra {
            parts.push(format!("{p:?}"));
        }
        if parts.is_empty() {
            "no filter is applied".to_string()
        } else {
            parts.join(" and ")
        }
    }

    /// [`FeatureError::MissingColumn`] when `column` is `coarse` and the file has no such column.
    fn check_label_column(&self, column: LabelColumn) -> Result<(), FeatureError> {
        if column == LabelColumn::Coarse && !self.scan.columns.iter().any(|c| c == "coarse") {
            let found = match schema_guarded(&mut self.scan.lf.clone()) {
                Ok(schema) => columns_list(&schema),
                Err(e) => format!("unknown ({e})"),
            };
            return Err(FeatureError::MissingColumn {
                path: self.scan.shown.clone(),
                column: "coarse".into(),
                found,
            });
        }
        Ok(())
    }

    /// [`load`](Self::load), and checks that the rows have the label column `column`
    /// (`coarse` is optional in the schema), so that [`Features::relabel`] cannot fail.
    ///
    /// # Errors
    ///
    /// [`FeatureError::MissingColumn`] (naming the file) when `column` is `coarse` and the file
    /// has no such column, [`FeatureError::NullValue`] when it is null in every selected row, and
    /// the errors of [`load`](Self::load).
    pub fn load_with_labels(&self, column: LabelColumn) -> Result<Features, FeatureError> {
        let path = self.scan.shown.as_str();
        self.check_label_column(column)?;
        let f = self.load()?;
        if column == LabelColumn::Coarse && f.coarse.is_none() {
            return Err(FeatureError::NullValue {
                path: path.to_string(),
                column: "coarse".into(),
                row: None,
            });
        }
        Ok(f)
    }

    /// Collects the selected rows (in file order) into [`Features`].
    ///
    /// The feature vectors become one contiguous `n × d` `f32` matrix. [`Features::epoch`] and
    /// [`Features::split`] are set when all selected rows share one value; [`Features::sample`]
    /// when the file has that column; `coarse` and `pred` when the file has them and they are not
    /// entirely null; [`Features::layer`] always.
    ///
    /// # Errors
    ///
    /// [`FeatureError::NoRows`] if nothing is selected (naming the filter and the checkpoints the
    /// file holds), [`FeatureError::NullValue`], [`FeatureError::InvalidInteger`] (negative or
    /// non-integral labels, …), [`FeatureError::RaggedFeatures`], [`FeatureError::EmptyFeatures`],
    /// [`FeatureError::NonFinite`] (NaN or ±∞ in the features), [`FeatureError::Overflow`] (a
    /// finite f64 value too large for f32), [`FeatureError::Polars`].
    pub fn load(&self) -> Result<Features, FeatureError> {
        // A directory scan's errors name the file and its row ([`dir`]).
        self.load_rows().map_err(|e| self.scan.relocate(e))
    }

    /// The selected rows, collected (every column of the file), or [`FeatureError::NoRows`].
    fn collect_rows(&self, lf: LazyFrame) -> Result<DataFrame, FeatureError> {
        let scan = &self.scan;
        let path = scan.shown.as_str();
        let exprs: Vec<Expr> = scan.columns.iter().map(|c| col(c.clone())).collect();
        let df = lf
            .select(exprs)
            .collect_guarded()
            .map_err(polars_err(path))?;
        if df.height() == 0 {
            if scan.checkpoints().is_ok_and(|c| c.is_empty()) {
                return Err(FeatureError::EmptyFile {
                    path: path.to_string(),
                });
            }
            return Err(FeatureError::NoRows {
                path: path.to_string(),
                filter: self.describe(),
                available: scan.available(),
            });
        }
        Ok(df)
    }

    fn load_rows(&self) -> Result<Features, FeatureError> {
        let df = self.collect_rows(self.lazy())?;
        self.frame_features(&df)
    }

    /// The selected rows of every `(epoch, split)` that `keep` accepts, read in **one** scan and
    /// split by group in memory: `(epoch, split, features)` sorted by `(epoch, split)`, each
    /// group's rows in file order and converted and checked exactly as [`load`](Self::load)
    /// would load that group alone (so a column null in one group only is `None` there).
    /// Groups that `keep` rejects are filtered out in the scan (never decoded or checked);
    /// no group at all is an empty list, not an error.
    ///
    /// This is how [`crate::stream`] reads one batch of a file holding many checkpoints: a small
    /// file is one batch, read once whole instead of once per group.
    ///
    /// # Errors
    ///
    /// As [`load_with_labels`](Self::load_with_labels), for each group.
    ///
    /// With `plain` (a reader of the file's `x` pages and a buffer), a selection of whole row
    /// groups without other filters has its `x` decoded by [`plain::PlainX`] into the buffer
    /// (which a single group's [`Features::x`] then owns: the caller may take it back for the
    /// next batch) and only the other columns through polars; when the pages are not handled,
    /// everything is read through polars, as without it.
    pub(crate) fn load_groups(
        &self,
        column: LabelColumn,
        keep: &dyn Fn(u32, &str) -> bool,
        plain: Option<(&plain::PlainX, &mut Vec<f32>)>,
    ) -> Result<Vec<(u32, String, Features)>, FeatureError> {
        if let Some((reader, buf)) = plain {
            if let Some(out) = self.load_groups_plain(column, keep, reader, buf)? {
                return Ok(out);
            }
        }
        let all = self.checkpoints()?;
        let kept: Vec<(u32, String)> = all.iter().filter(|(e, s)| keep(*e, s)).cloned().collect();
        if kept.is_empty() {
            return Ok(Vec::new());
        }
        if kept.len() == 1 {
            // One group (the common case of a large file): no split in memory.
            let (e, s) = kept.into_iter().next().unwrap_or_default();
            let q = if all.len() == 1 {
                self.clone()
            } else {
                self.clone().epoch(e).split(s.clone())
            };
            let f = q.load_with_labels(column)?;
            return Ok(vec![(e, s, f)]);
        }
        self.split_groups(column, &all, kept)
            .map_err(|e| self.scan.relocate(e))
    }

    /// Every column of this query's rows but `x`, collected through polars.
    pub(crate) fn small_columns(&self) -> Result<DataFrame, FeatureError> {
        let exprs: Vec<Expr> = self
            .scan
            .columns
            .iter()
            .filter(|c| c.as_str() != "x")
            .map(|c| col(c.clone()))
            .collect();
        self.lazy()
            .select(exprs)
            .collect_guarded()
            .map_err(polars_err(self.scan.shown.as_str()))
    }

    /// [`load_groups`](Self::load_groups) with `x` read by pages; `None` when not applicable.
    fn load_groups_plain(
        &self,
        column: LabelColumn,
        keep: &dyn Fn(u32, &str) -> bool,
        reader: &plain::PlainX,
        buf: &mut Vec<f32>,
    ) -> Result<Option<Vec<(u32, String, Features)>>, FeatureError> {
        let scan = &self.scan;
        let (Some((start, end)), VecLayout::Array(d), None) =
            (self.rows, &scan.layout, &scan.parts)
        else {
            return Ok(None);
        };
        let d = *d;
        if self.epoch.is_some() || self.split.is_some() || !self.extra.is_empty() {
            return Ok(None);
        }
        let Some(groups) = reader.row_groups(&(start..end)) else {
            return Ok(None);
        };
        if !reader.read(groups, buf) {
            return Ok(None);
        }
        self.check_label_column(column)?;
        let path = scan.shown.as_str();
        let df = self.small_columns()?;
        let n = df.height();
        if n == 0 || n as u64 != end - start || n * d != buf.len() {
            return Ok(None);
        }
        let rows = rows_of(path, &df)?;
        let epochs = u32_values(&rows, &df, "epoch")?;
        let splits = string_values(&rows, &df, "split")?;
        let mut all: Vec<(u32, &str)> = epochs
            .iter()
            .copied()
            .zip(splits.iter().map(String::as_str))
            .collect();
        all.sort_unstable();
        all.dedup();
        let kept: Vec<(u32, String)> = all
            .iter()
            .filter(|(e, s)| keep(*e, s))
            .map(|(e, s)| (*e, s.to_string()))
            .collect();
        let mut out = Vec::with_capacity(kept.len());
        if all.len() == 1 {
            if let Some((e, s)) = kept.into_iter().next() {
                let f = self.frame_features_with(&df, Some((std::mem::take(buf), d)))?;
                out.push((e, s, self.require_labels(f, column)?));
            }
            return Ok(Some(out));
        }
        for (e, s) in kept {
            let mask: BooleanChunked = epochs
                .iter()
                .zip(&splits)
                .map(|(&re, rs)| re == e && *rs == s)
                .collect();
            let part = df.filter(&mask).map_err(polars_err(path))?;
            let mut x = Vec::with_capacity(part.height() * d);
            for (i, keep_row) in mask.into_no_null_iter().enumerate() {
                if keep_row {
                    x.extend_from_slice(&buf[i * d..(i + 1) * d]);
                }
            }
            let f = self.frame_features_with(&part, Some((x, d)))?;
            out.push((e, s, self.require_labels(f, column)?));
        }
        Ok(Some(out))
    }

    /// `f`, or [`FeatureError::NullValue`] when `column` is `coarse` and `f` has none.
    fn require_labels(&self, f: Features, column: LabelColumn) -> Result<Features, FeatureError> {
        if column == LabelColumn::Coarse && f.coarse.is_none() {
            return Err(FeatureError::NullValue {
                path: self.scan.shown.clone(),
                column: "coarse".into(),
                row: None,
            });
        }
        Ok(f)
    }

    /// The rows of the groups `kept` (of `all` in the selection) in one scan, split in memory.
    fn split_groups(
        &self,
        column: LabelColumn,
        all: &[(u32, String)],
        kept: Vec<(u32, String)>,
    ) -> Result<Vec<(u32, String, Features)>, FeatureError> {
        let path = self.scan.shown.as_str();
        let mut lf = self.lazy();
        if kept.len() < all.len() {
            let wanted = kept
                .iter()
                .map(|(e, s)| {
                    col("epoch")
                        .eq(lit(*e))
                        .and(col("split").eq(lit(s.as_str())))
                })
                .reduce(|a, b| a.or(b));
            if let Some(w) = wanted {
                lf = lf.filter(w);
            }
        }
        self.check_label_column(column)?;
        let df = self.collect_rows(lf)?;
        let rows = rows_of(path, &df)?;
        let epochs = u32_values(&rows, &df, "epoch")?;
        let splits = string_values(&rows, &df, "split")?;
        let mut out = Vec::with_capacity(kept.len());
        for (e, s) in kept {
            let mask: BooleanChunked = epochs
                .iter()
                .zip(&splits)
                .map(|(&re, rs)| re == e && *rs == s)
                .collect();
            let part = df.filter(&mask).map_err(polars_err(path))?;
            if part.height() == 0 {
                continue;
            }
            let f = self.frame_features(&part)?;
            if column == LabelColumn::Coarse && f.coarse.is_none() {
                return Err(FeatureError::NullValue {
                    path: path.to_string(),
                    column: "coarse".into(),
                    row: None,
                });
            }
            out.push((e, s, f));
        }
        Ok(out)
    }

    /// [`Features`] of collected rows (see [`load`](Self::load) for what is checked).
    fn frame_features(&self, df: &DataFrame) -> Result<Features, FeatureError> {
        self.frame_features_with(df, None)
    }

    /// [`frame_features`](Self::frame_features), with the feature matrix `x` (row-major, `d`
    /// columns, every value finite) already decoded by [`plain::PlainX::read`] when given (`df`
    /// then needs no `x` column).
    fn frame_features_with(
        &self,
        df: &DataFrame,
        x: Option<(Vec<f32>, usize)>,
    ) -> Result<Features, FeatureError> {
        let scan = &self.scan;
        let path = scan.shown.as_str();
        let rows = rows_of(path, df)?;
        let labels = u32_values(&rows, df, "label")?;
        let epochs = u32_values(&rows, df, "epoch")?;
        let splits = string_values(&rows, df, "split")?;
        let sample = match df.column("sample") {
            Ok(_) => Some(u32_values(&rows, df, "sample")?),
            Err(_) => None,
        };
        let coarse = opt_u32_values(&rows, df, "coarse")?;
        let pred = opt_u32_values(&rows, df, "pred")?;

        if let Some((values, d)) = x {
            // Values from `plain::PlainX::read` are all finite (it checks each page).
            let x = Array2::from_shape_vec((df.height(), d), values).map_err(|e| {
                FeatureError::Polars {
                    path: path.to_string(),
                    message: format!("feature matrix: {e}"),
                }
            })?;
            return Ok(Features {
                x,
                labels,
                coarse,
                pred,
                labels_from: LabelColumn::Label,
                sample,
                epoch: common(&epochs),
                split: common(&splits),
                layer: Some(scan.layer.clone()),
            });
        }
        let (flat, d) = vector_values(&rows, df, "x", &scan.layout, &DataType::Float32)?;
        let values = flat
            .f32()
            .map_err(polars_err(path))?
            .cont_slice()
            .map_err(polars_err(path))?;
        let bad = if plain::all_finite(values) {
            None
        } else {
            first_non_finite(values)
        };
        if let Some((k, v)) = bad {
            // A finite value of a wider type can overflow f32: say so rather than "inf".
            let stored = vector_values(&rows, df, "x", &scan.layout, &DataType::Float64)
                .ok()
                .and_then(|(wide, _)| wide.f64().ok().and_then(|ca| ca.get(k)));
            return Err(
                match (non_finite(&rows, &scan.layout, "x", k, d, v), stored) {
                    (
                        FeatureError::NonFinite {
                            path,
                            column,
                            row,
                            component,
                            ..
                        },
                        Some(value),
                    ) if value.is_finite() => FeatureError::Overflow {
                        path,
                        column,
                        row,
                        component,
                        value,
                    },
                    (e, _) => e,
                },
            );
        }
        let x = Array2::from_shape_vec((df.height(), d), values.to_vec()).map_err(|e| {
            FeatureError::Polars {
                path: path.to_string(),
                message: format!("feature matrix: {e}"),
            }
        })?;
        Ok(Features {
            x,
            labels,
            coarse,
            pred,
            labels_from: LabelColumn::Label,
            sample,
            epoch: common(&epochs),
            split: common(&splits),
            layer: Some(scan.layer.clone()),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Run directories.

/// Whether `dir` holds a `run.json`: `Ok(false)` when there is none, `Ok(true)` when it is a
/// regular file (or a link to one).
///
/// # Errors
/// [`FeatureError::NotAFile`] when `run.json` is a directory, FIFO, device or socket (reading a
/// FIFO would block for ever; skipping it would silently lose the run's name and seed), and
/// [`FeatureError::Io`] when it is a link to nothing or cannot be examined.
pub(crate) fn run_json_exists(dir: &Path) -> Result<bool, FeatureError> {
    let json = dir.join("run.json");
    match std::fs::symlink_metadata(&json) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(FeatureError::Io {
                path: display(&json),
                source,
            })
        }
        Ok(_) => {}
    }
    let meta = std::fs::metadata(&json).map_err(|source| FeatureError::Io {
        path: display(&json),
        source,
    })?;
    if meta.is_file() {
        Ok(true)
    } else {
        Err(FeatureError::NotAFile {
            path: display(&json),
            kind: file_kind(&meta),
        })
    }
}

/// A run directory `data/runs/<run>/`: feature files `features-<layer>.parquet` (or `.pq`,
/// `.csv`), `classifier.parquet` and `run.json`.
#[derive(Debug, Clone)]
pub struct Run {
    dir: PathBuf,
    meta: Option<serde_json::Value>,
    layers: Vec<(String, PathBuf)>,
}

impl Run {
    /// Opens a run directory: lists its feature files and parses `run.json` if present.
    ///
    /// Layers are listed in the order of `run.json`'s `"layers"` array when it has one (network
    /// order), then any others alphabetically. When a layer has several files, `.parquet` wins
    /// over `.pq`, which wins over Arrow IPC (`.arrow`, `.feather`, `.ipc`), which wins over
    /// `.csv`.
    ///
    /// # Errors
    ///
    /// [`FeatureError::Io`] if the directory cannot be listed or `run.json` cannot be read,
    /// [`FeatureError::Json`] if `run.json` is not valid JSON.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, FeatureError> {
        let dir = dir.as_ref().to_path_buf();
        let io = |source| FeatureError::Io {
            path: display(&dir),
            source,
        };
        let mut found: BTreeMap<String, (u8, PathBuf)> = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let raw = path.file_name().map_or(&[][..], |n| n.as_encoded_bytes());
            // A feature file whose name is not UTF-8 is an error, not silently left out.
            if raw.starts_with(b"features-") && path.file_name().and_then(|n| n.to_str()).is_none()
            {
                return Err(FeatureError::NonUtf8Path {
                    path: display(&path),
                });
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let rank = match format_of(&path) {
                Some(_) if !name.starts_with("features-") => continue,
                Some(Format::Parquet) if name.ends_with(".parquet") => 0,
                Some(Format::Parquet) => 1,
                Some(Format::Ipc) => 2,
                Some(Format::Csv) => 3,
                None => continue,
            };
            let layer = layer_of(&path);
            if found.get(&layer).is_none_or(|(r, _)| rank < *r) {
                found.insert(layer, (rank, path));
            }
        }
        let json = dir.join("run.json");
        let meta = if run_json_exists(&dir)? {
            let text = std::fs::read_to_string(&json).map_err(|source| FeatureError::Io {
                path: display(&json),
                source,
            })?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                    FeatureError::Json {
                        path: display(&json),
                        message: e.to_string(),
                    }
                })?,
            )
        } else {
            None
        };
        let mut layers = Vec::new();
        if let Some(order) = meta
            .as_ref()
            .and_then(|m| m.get("layers"))
            .and_then(|l| l.as_array())
        {
            for name in order.iter().filter_map(|v| v.as_str()) {
                if let Some((_, path)) = found.remove(name) {
                    layers.push((name.to_string(), path));
                }
            }
        }
        layers.extend(found.into_iter().map(|(l, (_, p))| (l, p)));
        Ok(Run { dir, meta, layers })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run's name: the directory's last component.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| display(&self.dir))
    }

    /// The contents of `run.json`, when the directory has one.
    pub fn meta(&self) -> Option<&serde_json::Value> {
        self.meta.as_ref()
    }

    /// The layers that have a feature file (see [`Run::open`] for the order).
    pub fn layers(&self) -> Vec<String> {
        self.layers.iter().map(|(l, _)| l.clone()).collect()
    }

    /// The feature file of `layer`.
    ///
    /// # Errors
    ///
    /// [`FeatureError::UnknownLayer`] if the run has no file for it.
    pub fn features_path(&self, layer: &str) -> Result<&Path, FeatureError> {
        self.layers
            .iter()
            .find(|(l, _)| l == layer)
            .map(|(_, p)| p.as_path())
            .ok_or_else(|| FeatureError::UnknownLayer {
                dir: display(&self.dir),
                layer: layer.to_string(),
                available: self.layers().join(", "),
            })
    }

    /// Opens the feature file of `layer` ([`FeatureScan::open`]).
    ///
    /// # Errors
    ///
    /// [`FeatureError::UnknownLayer`], or any error of [`FeatureScan::open`].
    pub fn features(&self, layer: &str) -> Result<FeatureScan, FeatureError> {
        FeatureScan::open(self.features_path(layer)?)
    }

    /// The last layer's classifier at `epoch`, from `classifier.parquet` ([`read_classifier`]).
    ///
    /// # Errors
    ///
    /// As [`read_classifier`].
    pub fn classifier(&self, epoch: u32) -> Result<Classifier, FeatureError> {
        read_classifier(self.dir.join("classifier.parquet"), epoch)
    }
}

// ---------------------------------------------------------------------------------------------
// Classifier files.

/// Reads the classifier at `epoch` from a classifier file.
///
/// Format: Parquet with columns `epoch` (u32), `class` (u32), `bias` (f32 or f64) and `w`
/// (fixed-size list of f32 or f64, the class's weight row; a list of equal lengths is accepted),
/// one row per (epoch, class). Rows may come in any order; they are sorted by class.
///
/// # Errors
///
/// [`FeatureError::NoRows`] if the file has no row for `epoch`, [`FeatureError::MissingClass`] if
/// the classes are not exactly `0..C`, [`FeatureError::DuplicateClass`], and the column errors of
/// [`FeatureScan::open`] / [`FeatureQuery::load`] (missing or ill-typed columns, nulls, ragged or
/// non-finite weights).
pub fn read_classifier(path: impl AsRef<Path>, epoch: u32) -> Result<Classifier, FeatureError> {
    let path = path.as_ref();
    let shown = display(path);
    let fmt = format_of(path).filter(|f| *f == Format::Parquet);
    let fmt = fmt.ok_or_else(|| FeatureError::UnsupportedFormat {
        path: shown.clone(),
        expected: ".parquet or .pq",
    })?;
    let mut lf = scan_file(path, fmt)?;
    let schema = schema_guarded(&mut lf).map_err(polars_err(&shown))?;
    check_int_column(&shown, &schema, "epoch", true)?;
    check_int_column(&shown, &schema, "class", true)?;
    match schema.get("bias") {
        None => {
            return Err(FeatureError::MissingColumn {
                path: shown.clone(),
                column: "bias".into(),
                found: columns_list(&schema),
            })
        }
        Some(dt) if !dt.is_primitive_numeric() => {
            return Err(FeatureError::ColumnType {
                path: shown.clone(),
                column: "bias".into(),
                found: dt.to_string(),
                expected: EXPECT_FLOAT,
            })
        }
        Some(_) => {}
    }
    let layout = check_vec_column(&shown, &schema, "w", false)?;
    let df = lf
        .clone()
        .filter(col("epoch").eq(lit(epoch)))
        .select([col(ROW), col("class"), col("bias"), col("w")])
        .collect_guarded()
        .map_err(polars_err(&shown))?;
    if df.height() == 0 {
        let epochs = lf
            .select([col("epoch")])
            .unique(None, UniqueKeepStrategy::Any)
            .collect_guarded()
            .map_err(polars_err(&shown))
            .and_then(|d| {
                u32_values(
                    &Rows {
                        path: &shown,
                        rows: None,
                    },
                    &d,
                    "epoch",
                )
            })
            .map(|mut e| {
                e.sort();
                e.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|e| format!("unknown ({e})"));
        return Err(FeatureError::NoRows {
            path: shown,
            filter: format!("epoch = {epoch}"),
            available: format!("epochs {epochs}"),
        });
    }
    let rows = rows_of(&shown, &df)?;
    let classes = u32_values(&rows, &df, "class")?;
    let bias_s = series(&df, &shown, "bias")?;
    if let Some(i) = first_null(bias_s) {
        return Err(FeatureError::NullValue {
            path: shown.clone(),
            column: "bias".into(),
            row: rows.of(i),
        });
    }
    let bias_s = bias_s
        .cast(&DataType::Float64)
        .map_err(polars_err(&shown))?
        .rechunk();
    let bias = bias_s
        .f64()
        .map_err(polars_err(&shown))?
        .cont_slice()
        .map_err(polars_err(&shown))?;
    if let Some((k, v)) = first_non_finite(bias) {
        return Err(non_finite(&rows, &VecLayout::List, "bias", k, 1, v));
    }
    let (flat, d) = vector_values(&rows, &df, "w", &layout, &DataType::Float64)?;
    let w = flat
        .f64()
        .map_err(polars_err(&shown))?
        .cont_slice()
        .map_err(polars_err(&shown))?;
    if let Some((k, v)) = first_non_finite(w) {
        return Err(non_finite(&rows, &layout, "w", k, d, v));
    }

    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by_key(|&i| classes[i]);
    for (k, &i) in order.iter().enumerate() {
        let c = classes[i];
        if k > 0 && classes[order[k - 1]] == c {
            return Err(FeatureError::DuplicateClass {
                path: shown,
                epoch,
                class: c,
            });
        }
        if c as usize != k {
            let mut present: Vec<u32> = classes.clone();
            present.sort();
            return Err(FeatureError::MissingClass {
                path: shown,
                epoch,
                class: k as u32,
                present: present
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let c = classes.len();
    let mut wm = Array2::<f64>::zeros((c, d));
    let mut bv = Array1::<f64>::zeros(c);
    for (k, &i) in order.iter().enumerate() {
        wm.row_mut(k)
            .assign(&ndarray::ArrayView1::from(&w[i * d..(i + 1) * d]));
        bv[k] = bias[i];
    }
    Ok(Classifier { w: wm, b: bv })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of a panic polars passed through three threads (measured on a damaged
    /// bundled file, `tests/cli.rs`), and one that was not passed on.
    #[test]
    fn innermost_panic_unwraps_the_hops() {
        let what = r#"called `Result::unwrap()` on an `Err` value: JoinError::Panic(Id(3), "called `Result::unwrap()` on an `Err` value: JoinError::Panic(Id(4), \"called `Result::unwrap()` on an `Err` value: JoinError::Panic(Id(9), \\\"called `Result::unwrap()` on an `Err` value: OutOfSpec(\\\\\\\"Thrift out of range\\\\\\\")\\\", ...)\", ...)", ...)"#;
        assert_eq!(innermost_panic(what), r#"OutOfSpec("Thrift out of range")"#);
        assert_eq!(
            innermost_panic("index out of bounds"),
            "index out of bounds"
        );
    }

    #[test]
    fn a_panic_inside_polars_becomes_an_error() {
        let df = df!("a" => [1i32, 2, 3]).unwrap();
        let panicking = df.clone().lazy().select([col("a").map(
            |_: Column| -> PolarsResult<Column> { panic!("boom in a reader task") },
            |_: &Schema, f: &Field| Ok(f.clone()),
        )]);
        let e = panicking.collect_guarded().unwrap_err();
        let shown = polars_err("run/features.parquet")(e).to_string();
        assert!(shown.contains("boom in a reader task"), "{shown}");
        assert!(shown.contains("run/features.parquet"), "{shown}");
        let frame = df.lazy().select([col("a")]).collect_guarded().unwrap();
        assert_eq!(frame.column("a").unwrap().i32().unwrap().get(2), Some(3));
    }
}
