//! # neural-collapse
//!
//! Neural Collapse (NC) metrics for the features of trained networks, built to reproduce
//! Hui, Belkin & Nakkiran (2022), *Limitations of Neural Collapse for Understanding
//! Generalization in Deep Learning* (arXiv 2202.08384), from Rust or from Jupyter (evcxr).
//!
//! Data flow: feature files ([`features`]) → per-class statistics ([`stats::ClassStats`], and
//! the class means on their principal axes, [`projection`]) → metrics ([`metrics::NcReport`])
//! and linear probes ([`probe::LinearProbe`], [`probe::ProbeReport`]) → tidy polars
//! `DataFrame`s ([`tidy`]) → figures ([`plot`], shown inline in Jupyter as SVG or saved as SVG/PNG) and
//! tables ([`display`]). On top: several seeds of one recipe ([`study`], with [`interval`]s),
//! the paper's findings ([`findings`], `prelude::paper`), and the unconstrained-features model
//! ([`ufm`]) for teaching why collapse happens.
//!
//! Conventions (defaults follow Papyan, Han & Donoho 2020) are documented where they are
//! defined: [`stats::GlobalMean`], [`metrics::nc1`], [`metrics::Reference`].
//!
//! ## Layers
//!
//! The modules, top first. A module uses only modules of the rows below its own, so the
//! imports have no circle; `tests/architecture.rs` reads the sources and fails if an arrow
//! points up (it keeps the same table). Errors are at the bottom: input validation
//! ([`check`]) is a leaf, each module has its own error type, and the crate-level [`Error`]
//! near the top wraps them without any module below it using it. Modules in plain code are
//! private.
//!
//! | Layer | Modules | What |
//! |---|---|---|
//! | 17 | [`findings`] | the paper's three findings (`prelude::paper`); like a notebook, returns [`Result`] |
//! | 16 | [`error`] | [`Error`]: every module's error, with context |
//! | 15 | [`plot`] | figures from tidy frames (SVG, PNG) |
//! | 14 | [`display`] | HTML tables of reports and frames in Jupyter |
//! | 13 | [`study`] | several seeds of one recipe |
//! | 12 | [`interval`], [`ufm`] | confidence intervals; the unconstrained-features model |
//! | 11 | [`partial`], `train` | partial statistics of shards; training (feature `train`) |
//! | 10 | [`stream`] | metrics of files in bounded memory ([`stream::measure_scan`]) |
//! | 9 | [`tidy`] | reports as tidy `DataFrame`s |
//! | 8 | [`metrics`], [`probe`] | NC1–NC4, CDNV; linear probes (linfa models) |
//! | 7 | [`generalized`], `tiles`, [`projection`] | GNC2, NC3 variants; tiled pairwise sums; class means on their principal axes |
//! | 6 | [`stats`] | per-class counts, means, scatter ([`stats::ClassStats`]); [`stats::MetricError`] |
//! | 5 | [`npy`], [`datasets`] | `.npy`/`.npz` features; MNIST / Fashion-MNIST |
//! | 4 | [`features`] | reading and writing feature files |
//! | 3 | [`linalg`], `spectral` | products, Cholesky, small SVD; eigenvalues |
//! | 2 | `kernels` | hand-vectorised kernels |
//! | 1 | [`check`], [`config`], `parallel` | input validation ([`check::CheckError`]); conventions; threads |

pub mod check;
pub mod config;
pub mod datasets;
pub mod display;
pub mod error;
pub mod features;
pub mod findings;
pub mod generalized;
pub mod interval;
mod kernels;
pub mod linalg;
pub mod metrics;
pub mod npy;
mod parallel;
pub mod partial;
pub mod plot;
pub mod probe;
pub mod projection;
mod spectral;
pub mod stats;
pub mod stream;
pub mod study;
pub mod tidy;
mod tiles;
#[cfg(feature = "train")]
pub mod train;
pub mod ufm;

pub use error::{Error, Result};

// The linfa crates the probes are built on, at the versions the crate uses, so that a notebook
// can pass their estimators to `probe::probe_scan` without a `:dep` of its own.
pub use linfa;
pub use linfa_linear;
pub use linfa_logistic;

/// What a notebook needs: `use neural_collapse::prelude::*;`.
pub mod prelude {
    pub use crate::check::CheckError;
    pub use crate::config::{GlobalMean, Metric, NcConfig, ReferenceChoice, DEFAULT_TOLERANCE};
    pub use crate::datasets::{
        balanced_subset, CoarseMap, DatasetError, DatasetKind, ImageDataset, Split,
    };
    pub use crate::display::{table, Table};
    pub use crate::error::{Error, Result};
    pub use crate::features::*;
    pub use crate::interval::{bootstrap_interval, t_interval, Interval, IntervalMethod};
    pub use crate::metrics::*;
    pub use crate::npy::{
        load_npy, load_npz, read_npy_header, write_npy_f32, write_npy_u32, NpyError, NpyFeatures,
        NpyHeader,
    };
    pub use crate::plot::{
        epoch_reaching, metric_label, EpochAxis, EpochPlot, Figure, HeatMap, LayerPlot,
        MeanGeometryPlot, Nc1AccuracyPlot, PlotError, Scale, SmallMultiples,
    };
    pub use crate::probe::{
        probe_scan, probe_scan_on, probe_scans, ClassAccuracy, FittedOneVsRestOls, FittedProbe,
        LabelColumn, LinearProbe, OneVsRestOls, PenaltySelection, ProbeError, ProbeKind,
        ProbeLabel, ProbeReport, ValidLinearProbe,
    };
    pub use crate::projection::{MeanProjection, ProjectionError};
    pub use crate::stats::*;
    pub use crate::stream::{measure_scan, measure_scan_loaded, StreamError};
    pub use crate::study::{summarise, summary_frame, Study, SummaryMethod, SummaryRow};
    pub use crate::ufm::{
        tidy_runs, UfmClosedForm, UfmError, UfmLoss, UfmParams, UfmRun, UfmValidParams,
    };

    /// The paper's three findings (Hui, Belkin & Nakkiran 2022) on the bundled studies, apart
    /// from the general API so that a user measuring their own network sees that first:
    /// `use neural_collapse::prelude::paper::*;` (the notebooks 00–03 do).
    pub mod paper {
        pub use crate::findings::studies::{CascadeStudy, TrainTestStudy, TransferStudy};
        pub use crate::findings::{
            reproduce, Cascade, Check, Reproduction, TrainTestCollapse, Transfer, BUNDLED_STUDIES,
        };
    }
}
