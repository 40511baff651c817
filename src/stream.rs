//! Streaming NC metrics: a feature file read in bounded batches, in two passes of sums.
//!
//! **Why one file (about 1,350 lines).** The two passes, the batching and [`measure_scan`] share
//! the group keys, the prepared reference geometry and [`StreamError`]; the page decoder they use
//! is [`crate::features`]' `plain.rs`.
//!
//! Every NC statistic is a sum over samples once the class means are known, so a file never has
//! to be held in memory:
//!
//! ```text
//! pass 1 (per group, per class c):   n_c = #{i : y_i = c},   s_c = Σ_{y_i=c} h_i      (f64)
//!          →  μ_c = s_c / n_c,  then the reference geometry (Ṁ, its thin SVD, Σ_B† of rank K)
//! pass 2 (per group, given the means m_c of the reference):
//!          nc1_sum   = Σ_i ‖P_Kᵀ (h_i − m_{y_i})‖²          (NC1 = nc1_sum / N)
//!          scatter_c = Σ_{y_i=c} ‖h_i − m_c‖²                (Σ_W trace, CDNV's σ²_c)
//!          nc4_miss  = #{i : argmax_c (W h_i + b)_c ≠ argmin_c ‖h_i − m_c‖}   (NC4 = nc4_miss / N)
//! ```
//!
//! A *group* is one (run, seed, layer, epoch, split) ([`GroupKey`]). The reference means `m_c`
//! are the group's own (`--reference own`) or, for a split other than `train` with
//! `--reference train`, those of the `train` group of the same run, layer and epoch. Pass 1
//! state is [`ClassSums`] (counts and f64 sums; `O(C·d)`), pass 2 state is [`ResidualSums`]
//! (`O(C)`); both are plain sums, so the state of disjoint row sets merges by addition. This is
//! what [`crate::partial`] writes to disk for a shard of rows.
//!
//! **Why two passes rather than one pass with Chan's update of `Σ_W`.** NC1 needs
//! `Tr(Σ_W Σ_B†)`: with the means unknown during the pass, a one-pass form must carry the full
//! `d × d` scatter matrix per group (`Σ_c Σ_{y_i=c} (h_i − μ_c)(h_i − μ_c)ᵀ`, merged by Chan et
//! al.'s rank-one corrections) — 134 MB per group at `d = 4096`, `O(N·d²)` work, and NC4 (the
//! nearest-mean classifier) cannot be computed without the means at all. Two passes keep the
//! state at `O(C·d)`, the work at `O(N·d·C)` (the crate's projected NC1, see
//! [`crate::metrics`]), NC4 exact, and the residuals `h − μ` free of cancellation.
//!
//! **Batches.** A Parquet file is read in batches of whole row groups, consecutive row groups
//! joined up to about [`DEFAULT_BATCH_BYTES`] of `f32` features; polars reads only the row
//! groups a batch overlaps. A row group larger than that is read in slices of that size, but
//! polars 0.52 decodes most of the row group for each slice: peak memory then follows the
//! row-group size (measured: 491 MB peak RSS for a 400 MB file in one row group, 148 MB with
//! row groups of 16384 rows), so write large files with row groups of tens of MB (pyarrow's
//! `row_group_size`; `python/nc_export` writes one per batch). Other formats are read in row
//! slices of the same size. A batch is read once whatever the number of (epoch, split) groups
//! in it, and split by group in memory (a small file holding many checkpoints is one batch: it
//! used to be scanned once per group and pass, 0.93 s instead of 0.04 s for a bundled file of
//! 38 groups). For a Parquet file whose `x` is a fixed-size list of `f32`, a batch of whole row
//! groups whose `x` pages are all uncompressed PLAIN (the layout the README recommends for
//! large files) takes the *fused* route, in batches four times as large when the footer says
//! the whole file is so (`FUSED_BATCHES`): its small columns (labels, epoch, split, …) are
//! loaded through polars (the next batch's on another thread meanwhile; in pass 2, those
//! pass 1 kept, up to `SMALL_KEPT_BYTES` = 64 MB), and the values of `x` are read straight
//! from their pages: the batch's pieces of 1 MB taken in turn by two threads, with `pread`
//! into a 1 MB buffer (L2-sized) that the sums then read, page by page (a PLAIN page's values start
//! wherever its header and levels end, unaligned for 3 pages in 4 of pyarrow's files), and
//! checked finite through the sums (a NaN or ±∞ makes a class sum non-finite, and finite
//! `f32`s cannot overflow an f64 sum) rather than by a pass of their own. The pieces' sums are
//! merged in piece order, whichever thread made them (the same bits on every run); the batch's
//! `x` is never held whole. With `--reference train`, pass 1 of [`measure_file`] only counts
//! the rows of the other splits (their own means serve no statistic: [`ClassSums::count`]), so
//! their values are read once, by pass 2, which checks them finite through its sums. Other
//! Parquet batches (dictionary pages, a codec) have their `x` pages decoded by `plain` into a
//! buffer reused from batch to batch, the next batch's on another thread while a batch is
//! summed (`Buffers`, kept from pass 1 to pass 2), and only the small columns through polars: the
//! same values, so the same sums, 5× faster than polars' nested decoding into fresh buffers.
//! Memory: the fused route holds the small columns of two batches (and those kept for pass
//! 2), two 1 MB buffers and the sums of at most 8 pieces made ahead of the next to join; the
//! other at most three batches (the one summed, the next one, and the mapped window its
//! values are copied from); plus `O(C·d)` per group of the file (the sums, the reference
//! geometry and the packed products of the second pass).
//!
//! Measured (`scripts/bench-scale`, `LAYOUT=plain`, d = 512, 2 GB, warm `cat` 0.24–0.26 s;
//! A/B in one run each): pass 2's fused kernel (`kernels::projected_residuals`) instead of
//! residuals then a padded product, user time ~0.98 → ~0.87 s; fused batches of 128 MB instead
//! of 32 MB, 0.76–0.90 → 0.58–0.69 s; reading the values with `pread` instead of mapping them,
//! 0.62–0.97 → 0.57–0.61 s (8 GB: 2.09–2.51 → 1.76–1.96 s, peak RSS 153 → 136 MB). Mapped
//! pages were read at ~5 GB/s per thread by the sums (a TLB miss and a stop of the hardware
//! prefetchers every 4 KB page, plus ~0.25 s of system time faulting them in and unmapping
//! them), where the kernel's copy reads the page cache through its huge-page direct map; the
//! first fused route (0.4 GB, maps of whole half-batches, populated at once) had been the
//! faster one, 0.25–0.31 s against 0.29–0.33 s; mapping again, with `MADV_HUGEPAGE` on the
//! windows of a page cache held in 2 MB folios, still lost (2026-12-07, 2 GB: user time
//! 0.47–0.55 → 0.80–0.84 s, wall 0.52–0.57 → 0.56–0.62 s). Pass 1 counting the test rows of
//! `--reference train`: 2 GB 0.45–0.48 → 0.43–0.45 s (4 rounds, the page cache then partly in
//! large folios, warm `cat` 0.19–0.20 s); the pieces taken in turn by the two threads instead
//! of a half each: within the noise (`perf stat -r 6`, 0.451/0.465 → 0.448/0.456 s), kept for
//! the pass-1 halves that finished 3–8 ms apart in every batch. Earlier: 0.68 s at 0.4 GB
//! with pyarrow's defaults (snappy + dictionary), 2 GB in 1.8–2.0 s at 164–171 MB; against
//! 1.1 and 5.1 GB when each checkpoint of 0.4 and 2 GB is loaded whole.
//!
//! On a Zen 3 core (AVX2 + FMA, no AVX-512; 2026-12-08), pass 2 took the residuals-then-product
//! route until `kernels::projected_residuals` had an AVX2 version: 2 GB `--reference train`
//! 0.74–1.13 → 0.67–0.73 s (interleaved `perf stat -r 5`), the same JSON bits.
//!
//! **Rounding.** The means are `s_c / n_c` of sums accumulated in f64 batch by batch; the
//! results equal [`measure_scan_loaded`]'s on whole matrices up to rounding (within
//! `1e-12` relative in the tests), and an error in the means enters `Σ_W` only to second order.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use ndarray::{s, Array2, ArrayView2};

use crate::check::CheckError;
use crate::features::batch::{GroupRows, SmallBatch};
use crate::features::plain::{PlainX, ValuePlan};
use crate::features::{
    read_classifier, Classifier, CollectGuarded, FeatureError, FeatureScan, Features, LabelColumn,
};
use crate::kernels::add_rows;
use crate::metrics::{
    blocked_pass, check_classifier, check_tolerance, rescaled_classifier, trace_ratio, Geometry,
    MeasureOptions, MetricError, NcParams, NcReport, Reference, ReferenceChoice,
};
use crate::parallel::map_row_blocks_with;
use crate::stats::{row_major, ClassStats};

/// Errors of the streamed passes and of the file sweeps ([`measure_scan`]): a feature file that
/// cannot be read, bad input to a metric, or sums that do not fit together; with the file,
/// epoch and split at fault in [`StreamError::Context`]. The crate-level
/// [`Error`](crate::Error) shows a wrapped feature or metric error as the
/// [`Features`](crate::Error::Features) or [`Metric`](crate::Error::Metric) error it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Reading a feature or classifier file.
    #[error(transparent)]
    Features(#[from] FeatureError),
    /// Bad input to a statistic or metric.
    #[error(transparent)]
    Metric(#[from] MetricError),
    /// A group's pass-2 sums do not cover its rows exactly.
    #[error("{group}: pass 2 covers {rows} rows but the group has {expected}: a shard is missing or was given twice")]
    IncompletePass {
        /// The group.
        group: String,
        /// Rows with pass-2 sums.
        rows: u64,
        /// Rows of the group.
        expected: u64,
    },
    /// Pass 2 met a group that the means partial lacks.
    #[error("{group}: no class means for this group in the means partial given with --means (was it made from these files?)")]
    MissingMeans {
        /// The group.
        group: String,
    },
    /// A group whose pass 1 only counted its rows (`ClassSums::count`), measured against its
    /// own means, which were not summed.
    #[error("{group}: pass 1 only counted this group's rows (its means were not summed): it can only be measured against the train means")]
    CountedOnly {
        /// The group.
        group: String,
    },
    /// `--reference train` without a train split for the group's epoch.
    #[error("{group}: no train split at this epoch, which --reference train measures this split against")]
    MissingReference {
        /// The group.
        group: String,
    },
    /// One shard measured NC4 and another did not.
    #[error("some shards of a group measured NC4 and others did not (a `pred` column null in part of the file?)")]
    Nc4Mixed,
    /// A `run.json` whose `"seed"` is not an integer.
    #[error("{path}: \"seed\" is {found}; expected an integer (or null)")]
    RunSeed {
        /// The `run.json`.
        path: String,
        /// The value found, as JSON.
        found: String,
    },
    /// An error while processing one part of a file: `context` says which (file, epoch, split).
    #[error("{context}: {source}")]
    Context {
        /// Which part failed, e.g. `runs/a/features-h3.parquet, epoch 10, split test`.
        context: String,
        /// What went wrong there.
        #[source]
        source: Box<StreamError>,
    },
}

impl StreamError {
    /// Wraps this error with a description of where it happened.
    pub fn context(self, context: impl Into<String>) -> Self {
        StreamError::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }
}

/// Result of the streamed passes: [`StreamError`] by default.
type Result<T, E = StreamError> = std::result::Result<T, E>;

/// Target size of one batch's `f32` feature values (32 MiB).
pub const DEFAULT_BATCH_BYTES: usize = 32 << 20;

/// Rows per block of the parallel first pass.
const SUM_BLOCK_ROWS: usize = 4096;

/// Which samples a statistic describes: one (run, seed, layer, epoch, split).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// Run name (the run directory's name), when known.
    pub run: Option<String>,
    /// The run's seed (`run.json`'s `"seed"`), when known.
    pub seed: Option<i64>,
    /// Layer (from the file name `features-<layer>.parquet`, else the file stem).
    pub layer: String,
    /// Checkpoint.
    pub epoch: u32,
    /// Split.
    pub split: String,
}

impl GroupKey {
    /// The `train` group of the same run, seed, layer and epoch (the reference of
    /// `--reference train`).
    pub fn train(&self) -> GroupKey {
        GroupKey {
            split: "train".into(),
            ..self.clone()
        }
    }

    /// `run r, layer l, epoch e, split s` for messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        if let Some(r) = &self.run {
            out.push_str(&format!("run {r}, "));
        }
        if let Some(s) = self.seed {
            out.push_str(&format!("seed {s}, "));
        }
        out.push_str(&format!(
            "layer {}, epoch {}, split {}",
            self.layer, self.epoch, self.split
        ));
        out
    }
}

/// Pass-1 state of a group: per label, the count `n_c` and the f64 sum `s_c = Σ h_i`.
///
/// Labels are kept sparse (a shard may hold a few classes only); merging adds counts and sums.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassSums {
    dim: usize,
    classes: BTreeMap<u32, (u64, Vec<f64>)>,
    /// Whether every row counted was also summed (`false` once [`count`](Self::count) added
    /// rows: the sums, and so the means, are then not those of the rows).
    summed: bool,
}

impl ClassSums {
    /// Empty state for `dim`-dimensional features.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            classes: BTreeMap::new(),
            summed: true,
        }
    }

    /// State from its parts (the partial reader); every sum must have `dim` values.
    pub(crate) fn from_classes(dim: usize, classes: BTreeMap<u32, (u64, Vec<f64>)>) -> Self {
        Self {
            dim,
            classes,
            summed: true,
        }
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `(label, count, sum)` in ascending label order.
    pub fn classes(&self) -> impl Iterator<Item = (u32, u64, &[f64])> {
        self.classes
            .iter()
            .map(|(&c, (n, s))| (c, *n, s.as_slice()))
    }

    /// Number of rows added.
    pub fn rows(&self) -> u64 {
        self.classes.values().map(|(n, _)| n).sum()
    }

    /// The largest label seen.
    pub fn max_label(&self) -> Option<u32> {
        self.classes.keys().next_back().copied()
    }

    /// Whether every row counted was summed: `false` for the state of a group whose pass 1
    /// only counted its labels ([`count`](Self::count)), whose means are then unknown.
    pub fn summed(&self) -> bool {
        self.summed
    }

    /// Counts the rows of `labels` without summing their values (pass 1 of a group whose own
    /// means nothing uses: a split measured against the train means). The state is no longer
    /// [`summed`](Self::summed).
    pub(crate) fn count(&mut self, labels: &[u32]) {
        if labels.is_empty() {
            return;
        }
        self.summed = false;
        let dim = self.dim;
        for &label in labels {
            let (n, _) = self
                .classes
                .entry(label)
                .or_insert_with(|| (0, vec![0.0; dim]));
            *n += 1;
        }
    }

    /// Adds a batch (`labels.len() × dim`, f32 or f64) in f64, in parallel blocks whose partial
    /// sums are combined in block order.
    ///
    /// # Errors
    /// [`CheckError::LengthMismatch`](crate::check::CheckError::LengthMismatch) or [`CheckError::DimensionMismatch`](crate::check::CheckError::DimensionMismatch).
    pub fn push<T: Copy + Into<f64> + Sync>(
        &mut self,
        x: ArrayView2<'_, T>,
        labels: &[u32],
    ) -> Result<()> {
        if x.nrows() != labels.len() {
            return Err(MetricError::Check(CheckError::LengthMismatch {
                rows: x.nrows(),
                labels: labels.len(),
            })
            .into());
        }
        if x.ncols() != self.dim {
            return Err(MetricError::Check(CheckError::DimensionMismatch {
                expected: self.dim,
                found: x.ncols(),
            })
            .into());
        }
        if labels.is_empty() {
            return Ok(());
        }
        // Dense local indices for the labels of this batch (labels may be large and sparse).
        let mut distinct = labels.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let local: Vec<u32> = labels
            .iter()
            .map(|l| distinct.binary_search(l).unwrap_or(0) as u32)
            .collect();
        let (k, dim) = (distinct.len(), self.dim);
        let partial =
            map_row_blocks_with(labels.len(), SUM_BLOCK_ROWS, Vec::new, |buf, start, end| {
                let mut counts = vec![0u64; k];
                let mut sums = vec![0.0f64; k * dim];
                let lb = &local[start..end];
                for &l in lb {
                    counts[l as usize] += 1;
                }
                let rows = row_major(x.slice_move(s![start..end, ..]), buf);
                add_rows(&mut sums, rows, lb, dim);
                (counts, sums)
            });
        let mut counts = vec![0u64; k];
        let mut sums = vec![0.0f64; k * dim];
        for (pc, ps) in partial {
            for (a, v) in counts.iter_mut().zip(pc) {
                *a += v;
            }
            for (a, v) in sums.iter_mut().zip(ps) {
                *a += v;
            }
        }
        for (j, &label) in distinct.iter().enumerate() {
            let (n, s) = self
                .classes
                .entry(label)
                .or_insert_with(|| (0, vec![0.0; dim]));
            *n += counts[j];
            for (a, v) in s.iter_mut().zip(&sums[j * dim..(j + 1) * dim]) {
                *a += v;
            }
        }
        Ok(())
    }

    /// Adds another state of the same dimension (counts and sums of each label).
    ///
    /// # Errors
    /// [`CheckError::DimensionMismatch`](crate::check::CheckError::DimensionMismatch).
    pub fn merge(&mut self, other: &ClassSums) -> Result<()> {
        if other.dim != self.dim {
            return Err(MetricError::Check(CheckError::DimensionMismatch {
                expected: self.dim,
                found: other.dim,
            })
            .into());
        }
        for (&c, (n, s)) in &other.classes {
            let (an, as_) = self
                .classes
                .entry(c)
                .or_insert_with(|| (0, vec![0.0; other.dim]));
            *an = an.saturating_add(*n);
            for (a, v) in as_.iter_mut().zip(s) {
                *a += v;
            }
        }
        self.summed &= other.summed;
        Ok(())
    }

    /// Class statistics for classes `0..classes` (means `s_c / n_c`, scatter 0; a class without
    /// samples has count 0 and mean 0). Labels `≥ classes` are ignored.
    pub fn to_stats(&self, classes: usize) -> ClassStats {
        let mut counts = vec![0u64; classes];
        let mut means = Array2::<f64>::zeros((classes, self.dim));
        for (&c, (n, s)) in &self.classes {
            let c = c as usize;
            if c >= classes || *n == 0 {
                continue;
            }
            counts[c] = *n;
            for (m, v) in means.row_mut(c).iter_mut().zip(s) {
                *m = v / *n as f64;
            }
        }
        ClassStats::from_parts(counts, means, vec![0.0; classes])
    }

    /// A fingerprint of the exact state (dimension, labels, counts and the bits of every sum):
    /// 16 hex digits of SHA-256. Equal states have equal fingerprints.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update((self.dim as u64).to_le_bytes());
        for (&c, (n, s)) in &self.classes {
            h.update(c.to_le_bytes());
            h.update(n.to_le_bytes());
            for v in s {
                h.update(v.to_bits().to_le_bytes());
            }
        }
        let d = h.finalize();
        d.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// Pass-2 state of a group, given fixed reference means: the sums of the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct ResidualSums {
    /// Rows measured.
    pub rows: u64,
    /// `Σ_i ‖P_Kᵀ (h_i − m_{y_i})‖²`.
    pub nc1_sum: f64,
    /// Per class `c` of the reference, `Σ_{y_i=c} ‖h_i − m_c‖²`.
    pub scatter: Vec<f64>,
    /// NC4 mismatches, when NC4 is measured (a classifier, or stored predictions).
    pub nc4_mismatches: Option<u64>,
}

impl ResidualSums {
    /// Adds the sums of another set of rows measured against the same means.
    ///
    /// # Errors
    /// [`MetricError::StatsMismatch`] if the class counts differ, [`StreamError::Nc4Mixed`]
    /// when one side measured NC4 and the other did not.
    pub fn merge(&mut self, other: &ResidualSums) -> Result<()> {
        if other.scatter.len() != self.scatter.len() {
            return Err(MetricError::StatsMismatch {
                classes: (self.scatter.len(), other.scatter.len()),
                dims: (0, 0),
            }
            .into());
        }
        self.nc4_mismatches = match (self.nc4_mismatches, other.nc4_mismatches) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (None, None) => None,
            _ if other.rows == 0 => self.nc4_mismatches,
            _ if self.rows == 0 => other.nc4_mismatches,
            _ => return Err(StreamError::Nc4Mixed),
        };
        self.rows = self.rows.saturating_add(other.rows);
        self.nc1_sum += other.nc1_sum;
        for (a, v) in self.scatter.iter_mut().zip(&other.scatter) {
            *a += v;
        }
        Ok(())
    }
}

/// What pass 2 and the report of a group need: its own statistics, the reference (train
/// means, when not its own), the geometry and the classifier.
pub(crate) struct Prepared {
    own: ClassStats,
    reference: Option<ClassStats>,
    geometry: Geometry,
    classes: usize,
    classifier: Option<Classifier>,
}

/// Checks a group's pass-1 state and builds what pass 2 needs, with the conventions and errors
/// of [`measure_scan`] (`base` names the file in messages, or is empty).
pub(crate) fn prepare(
    key: &GroupKey,
    own: &ClassSums,
    train: Option<&ClassSums>,
    options: &MeasureOptions,
    classifier: Option<Classifier>,
    base: &str,
) -> Result<Prepared> {
    check_tolerance(options.config.tolerance)?;
    options.generalized.check()?;
    // "FILE, epoch E, split S" (as measure_scan says it); `base` is the file, or empty.
    let sep = if base.is_empty() { "" } else { ", " };
    let context = format!("{base}{sep}epoch {}, split {}", key.epoch, key.split);
    let with_ctx = |e: StreamError, what: &str| e.context(format!("{context}{what}"));
    let wants_train = options.config.reference == ReferenceChoice::Train && key.split != "train";
    // A group whose pass 1 only counted its rows has no means of its own: it can only be
    // measured against the train means.
    if !wants_train && !own.summed() {
        return Err(with_ctx(
            StreamError::CountedOnly {
                group: key.describe(),
            },
            "",
        ));
    }
    let rows = own.rows();
    let own_label = own.max_label().unwrap_or(0);
    let (classes, reference) = if wants_train {
        let Some(train) = train else {
            return Err(with_ctx(
                StreamError::MissingReference {
                    group: key.describe(),
                },
                "",
            ));
        };
        let label = train.max_label().unwrap_or(0).max(own_label);
        let ctx = format!(
            "{base}{sep}epoch {}, split train (the reference of split {})",
            key.epoch, key.split
        );
        if u64::from(label) >= train.rows() {
            return Err(StreamError::from(MetricError::TooManyClasses {
                label,
                rows: train.rows() as usize,
            })
            .context(ctx));
        }
        let classes = label as usize + 1;
        let stats = train.to_stats(classes);
        if let Some(class) = stats.first_empty_class() {
            return Err(StreamError::from(MetricError::EmptyClass { class, classes }).context(ctx));
        }
        (classes, Some(stats))
    } else {
        if u64::from(own_label) >= rows {
            return Err(with_ctx(
                MetricError::TooManyClasses {
                    label: own_label,
                    rows: rows as usize,
                }
                .into(),
                "",
            ));
        }
        (own_label as usize + 1, None)
    };
    if classes < 2 {
        return Err(with_ctx(MetricError::TooFewClasses { classes }.into(), ""));
    }
    let own_stats = own.to_stats(classes);
    own_stats
        .require_all_classes()
        .map_err(|e| with_ctx(e.into(), ""))?;
    if let Some(c) = &classifier {
        check_classifier(c, classes, own.dim()).map_err(|e| match &options.classifier {
            // The classifier's file is at fault: name it first, and the features it was
            // checked against after.
            Some(path) => StreamError::from(e).context(format!(
                "{}, epoch {} (for {context})",
                path.display(),
                key.epoch
            )),
            None => with_ctx(e.into(), ""),
        })?;
    }
    // Exactly rescaled when its entries would overflow or underflow the products (same
    // statistics: see `rescaled_classifier`).
    let classifier = classifier.map(|c| rescaled_classifier(&c).unwrap_or(c));
    let geometry = Geometry::with_route(
        reference.as_ref().unwrap_or(&own_stats),
        options.config.global_mean,
        options.config.tolerance,
        options.nc1_route,
    )
    .map_err(|e| with_ctx(e.into(), ""))?;
    Ok(Prepared {
        own: own_stats,
        reference,
        geometry,
        classes,
        classifier,
    })
}

impl Prepared {
    /// Pass 2 over one batch of the group's rows.
    pub(crate) fn pass<T: Copy + Into<f64> + Sync>(
        &self,
        x: ArrayView2<'_, T>,
        labels: &[u32],
        pred: Option<&[u32]>,
    ) -> Result<ResidualSums> {
        if let Some((row, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= self.classes)
        {
            return Err(MetricError::Check(CheckError::LabelOutOfRange {
                row,
                label,
                classes: self.classes,
            })
            .into());
        }
        if x.ncols() != self.own.dim() {
            return Err(MetricError::Check(CheckError::DimensionMismatch {
                expected: self.own.dim(),
                found: x.ncols(),
            })
            .into());
        }
        let pred = if self.classifier.is_some() {
            None
        } else {
            pred
        };
        if let Some(p) = pred {
            if let Some((row, &pred)) = p
                .iter()
                .enumerate()
                .find(|(_, &v)| v as usize >= self.classes)
            {
                return Err(MetricError::PredictionOutOfRange {
                    row,
                    pred,
                    classes: self.classes,
                }
                .into());
            }
        }
        if labels.is_empty() {
            return Ok(self.empty_sums());
        }
        let p = blocked_pass(x, labels, &self.geometry, self.classifier.as_ref(), pred);
        Ok(ResidualSums {
            rows: labels.len() as u64,
            nc1_sum: p.nc1_sum,
            scatter: p.scatter,
            nc4_mismatches: p.nc4_mismatches,
        })
    }

    /// Pass-2 state of no rows.
    pub(crate) fn empty_sums(&self) -> ResidualSums {
        ResidualSums {
            rows: 0,
            nc1_sum: 0.0,
            scatter: vec![0.0; self.classes],
            nc4_mismatches: None,
        }
    }

    /// The report of a group from its complete pass-2 sums (as [`crate::metrics::NcParams::measure`]).
    ///
    /// # Errors
    /// [`StreamError::IncompletePass`] if the pass-2 sums do not cover exactly the group's rows
    /// (a shard missing or counted twice), and the metric errors (coinciding means, …).
    pub(crate) fn report(
        &self,
        key: &GroupKey,
        sums: &ResidualSums,
        options: &MeasureOptions,
    ) -> Result<NcReport> {
        let n = self.own.total();
        if sums.rows != n || sums.scatter.len() != self.classes {
            return Err(StreamError::IncompletePass {
                group: key.describe(),
                rows: sums.rows,
                expected: n,
            });
        }
        let n = n as usize;
        let own_full;
        let reference = match &self.reference {
            Some(r) => r,
            None => {
                own_full = ClassStats::from_parts(
                    self.own.counts().to_vec(),
                    self.own.means().to_owned(),
                    sums.scatter.clone(),
                );
                &own_full
            }
        };
        // NC2, CDNV, NC3 and the generalized metrics, tiled for many classes.
        let many = crate::metrics::ManyClasses::new(
            &self.geometry,
            &sums.scatter,
            self.own.counts(),
            reference,
            self.classifier.as_ref(),
            options.generalized,
        )?;
        Ok(NcReport {
            epoch: Some(key.epoch),
            split: Some(key.split.clone()),
            layer: Some(key.layer.clone()),
            n,
            classes: self.classes,
            dim: self.own.dim(),
            rank: self.geometry.rank,
            reference: options.config.reference,
            global_mean: options.config.global_mean,
            tolerance: options.config.tolerance,
            nc1: sums.nc1_sum / n as f64,
            nc1_trace_ratio: trace_ratio(&sums.scatter, n, reference, options.config.global_mean),
            cdnv: many.cdnv,
            nc2: many.nc2,
            nc2_w: many.nc2_w,
            nc3: many.nc3,
            nc4: sums.nc4_mismatches.map(|m| m as f64 / n as f64),
            dropped_classes: Vec::new(),
            nc1_route: self.geometry.route,
            generalized: many.generalized,
        })
    }
}

/// A feature file with the identity of its groups (run, seed, layer) and its row count.
#[derive(Clone, Debug)]
pub struct Source {
    /// The scan of the file.
    pub scan: FeatureScan,
    /// Run name.
    pub run: Option<String>,
    /// Seed.
    pub seed: Option<i64>,
    /// Rows of the file.
    pub rows: u64,
}

impl Source {
    /// Opens `path`. The run name and seed come from the run directory when the file sits
    /// beside a `run.json` (its directory's name, and `run.json`'s `"seed"`), else from `run`
    /// and `seed`; the layer from the file name ([`FeatureScan::layer`]).
    ///
    /// # Errors
    /// Those of [`FeatureScan::open`] and of reading `run.json` or the row count.
    pub fn open(path: &Path, run: Option<&str>, seed: Option<i64>) -> Result<Self> {
        let scan = FeatureScan::open(path)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let run_dir = dir
            .map(|d| d.to_path_buf())
            .unwrap_or_else(|| std::path::PathBuf::from("."));
        let (run, seed) = if crate::features::run_json_exists(&run_dir)? {
            let meta = crate::features::Run::open(&run_dir)?;
            // A seed is an integer (or absent, or null): anything else is the file's error,
            // not a run without a seed.
            let seed = match meta.meta().and_then(|m| m.get("seed")) {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => Some(v.as_i64().ok_or_else(|| StreamError::RunSeed {
                    path: run_dir.join("run.json").display().to_string(),
                    found: v.to_string(),
                })?),
            };
            let name = std::fs::canonicalize(&run_dir)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| meta.name());
            (Some(name), seed)
        } else {
            (run.map(str::to_string), seed)
        };
        let rows = row_count(&scan)?;
        Ok(Self {
            scan,
            run,
            seed,
            rows,
        })
    }

    /// A scan without run identity (run and seed unknown).
    ///
    /// # Errors
    /// If the row count cannot be read.
    pub fn from_scan(scan: &FeatureScan) -> Result<Self> {
        Ok(Self {
            rows: row_count(scan)?,
            scan: scan.clone(),
            run: None,
            seed: None,
        })
    }

    /// The key of `(epoch, split)` in this file.
    pub fn key(&self, epoch: u32, split: &str) -> GroupKey {
        GroupKey {
            run: self.run.clone(),
            seed: self.seed,
            layer: self.scan.layer().to_string(),
            epoch,
            split: split.to_string(),
        }
    }

    /// Rows `⌊I·n/N⌋ .. ⌊(I+1)·n/N⌋` of shard `I` of `N`.
    pub fn shard_rows(&self, index: u64, count: u64) -> Range<u64> {
        let n = u128::from(self.rows);
        let at = |i: u64| (n * u128::from(i) / u128::from(count.max(1))) as u64;
        at(index)..at(index + 1)
    }
}

fn is_parquet(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("pq"))
}

fn polars_error(path: &Path, e: polars::prelude::PolarsError) -> StreamError {
    FeatureError::Polars {
        path: path.display().to_string(),
        message: e.to_string(),
    }
    .into()
}

/// Rows of a Parquet file's row groups, from its footer (`None` for another format).
fn row_groups(path: &Path) -> Result<Option<Vec<u64>>> {
    use polars::prelude::{ParquetReader, SerReader};
    if !is_parquet(path) {
        return Ok(None);
    }
    let file = std::fs::File::open(path).map_err(|source| FeatureError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut reader = ParquetReader::new(file);
    let meta = reader.get_metadata().map_err(|e| polars_error(path, e))?;
    Ok(Some(
        meta.row_groups
            .iter()
            .map(|g| g.num_rows() as u64)
            .collect(),
    ))
}

fn row_count(scan: &FeatureScan) -> Result<u64> {
    if let Some(groups) = row_groups(scan.path())? {
        return Ok(groups.iter().sum());
    }
    use polars::prelude::*;
    let df = scan
        .lazy()
        .select([len()])
        .collect_guarded()
        .map_err(|e| polars_error(scan.path(), e))?;
    let v = df
        .get_columns()
        .first()
        .and_then(|c| c.get(0).ok())
        .and_then(|v| v.extract::<u64>())
        .unwrap_or(0);
    Ok(v)
}

/// Batches of `range`: whole row groups joined up to `batch_rows` rows (a longer row group in
/// slices of `batch_rows`), or plain slices of `batch_rows` for a non-Parquet file.
pub(crate) fn batches(
    scan: &FeatureScan,
    range: Range<u64>,
    batch_rows: u64,
) -> Result<Vec<Range<u64>>> {
    let batch_rows = batch_rows.max(1);
    let mut out = Vec::new();
    let bounds: Vec<u64> = match row_groups(scan.path())? {
        Some(groups) => {
            let mut b = vec![0u64];
            let mut at = 0;
            for g in groups {
                at += g;
                b.push(at);
            }
            b
        }
        None => vec![0, range.end],
    };
    // Row-group boundaries inside the range, then cut into batches.
    let mut cuts: Vec<u64> = vec![range.start];
    cuts.extend(
        bounds
            .into_iter()
            .filter(|&b| b > range.start && b < range.end),
    );
    cuts.push(range.end);
    let mut start = range.start;
    let mut i = 1;
    while start < range.end {
        // Extend over whole row groups while the batch stays within batch_rows.
        let mut end = cuts[i].min(start + batch_rows);
        if end == cuts[i] {
            while i + 1 < cuts.len() && cuts[i + 1] - start <= batch_rows {
                i += 1;
                end = cuts[i];
            }
        }
        out.push(start..end);
        start = end;
        while i < cuts.len() - 1 && cuts[i] <= start {
            i += 1;
        }
    }
    Ok(out)
}

/// How many times `batch_bytes` of features a batch of the fused route holds (a file whose
/// `x` is uncompressed PLAIN throughout, [`PlainX::plain_throughout`]): that route keeps only
/// the batch's small columns (16 bytes a row) and reads its values 1 MB at a time, so its
/// memory does not follow the batch; the costs paid per batch (two threads started, one
/// polars query for the small columns, the wait for the slower half, merges) are spread over
/// more rows. Measured (`scripts/bench-scale`, 2 GB, d = 512, A/B in one run, 4 rounds, the
/// values then mapped in windows of 16 MB per thread): 32 MB batches 0.76–0.90 s, 128 MB
/// 0.58–0.69 s at 102–115 MB peak RSS (512 MB: no faster, 0.59–0.63 s). A batch whose pages
/// turn out not to be PLAIN after all is decoded whole, up to three batches in memory
/// (`FUSED_BATCHES` × 96 MB by default).
const FUSED_BATCHES: usize = 4;

/// Rows per batch for `DEFAULT_BATCH_BYTES` of f32 features of dimension `dim`.
pub(crate) fn batch_rows(dim: Option<usize>, batch_bytes: usize) -> u64 {
    let d = dim.unwrap_or(512).max(1);
    ((batch_bytes / (4 * d)).max(1)) as u64
}

/// The batch buffers of [`for_each_batch`] (the batch summed, the next one read ahead, and
/// the chunk buffers of the fused read), kept from one pass to the next so that their pages
/// are faulted in once.
#[derive(Default)]
pub(crate) struct Buffers {
    buf: Vec<f32>,
    spare: Vec<f32>,
    chunks: [Vec<f32>; 2],
    /// The batches of the last pass, the rows per batch and where their values lie (the same
    /// for both passes over a file).
    plans: Option<(Range<u64>, u64, Vec<Option<ValuePlan>>)>,
    /// The small columns of the fused batches of the last pass, in batch order, kept for the
    /// next pass over the same batches while they take at most [`SMALL_KEPT_BYTES`] (`None`
    /// for a batch not kept).
    smalls: Vec<Option<SmallBatch>>,
}

/// Most bytes of small columns (labels, epochs, splits, …: 16 bytes a row with sample
/// indices) kept from pass 1 for pass 2, so that pass 2 does not load them through polars
/// again: 4 M rows. Measured (`scripts/bench-scale`, 2 GB, d = 512, 1 M rows): loading them
/// took ~0.2 s of CPU per run on polars' threads and the fetching thread, on the same two
/// cores as the sums.
const SMALL_KEPT_BYTES: usize = 64 << 20;

/// A batch's `x` read ahead: its row groups, the buffer, and whether the pages were handled.
type ReadAhead = (Range<usize>, Vec<f32>, bool);

/// What a pass does with the rows of a file: [`for_each_batch`] calls
/// [`prepare`](Sweep::prepare) for each group of a batch (in order, before its rows),
/// [`add`](Sweep::add) on parts of the batch's rows of one group, possibly on two threads
/// at once, each into its own accumulator ([`acc`](Sweep::acc)), then
/// [`merge`](Sweep::merge) with the accumulators of the batch in row order. An accumulator
/// is merged only once its batch was read completely, so a batch can be read again another
/// way without counting a row twice.
pub(crate) trait Sweep: Sync {
    /// Sums of some rows.
    type Acc: Send + Default;
    /// Called once per group and batch before [`add`](Sweep::add) sees its rows.
    fn prepare(&mut self, key: &GroupKey) -> Result<()>;
    /// Whether [`add`](Sweep::add) reads the values of group `key`'s rows: when not, the
    /// fused route does not read them and passes `add` an `n × 0` matrix.
    fn reads_x(&self, _key: &GroupKey) -> bool {
        true
    }
    /// An empty accumulator.
    fn acc(&self) -> Self::Acc {
        Self::Acc::default()
    }
    /// Adds rows `rows` of group `key` (prepared) to `acc`: their values `x` (`rows.len() × d`,
    /// `f32`s or `f64`s), the rest (labels, predictions) those of
    /// rows `rows` of `f`, whose own `x` is not read.
    fn add<T: Copy + Into<f64> + Sync>(
        &self,
        acc: &mut Self::Acc,
        key: &GroupKey,
        x: ArrayView2<'_, T>,
        f: &Features,
        rows: Range<usize>,
    ) -> Result<()>;
    /// Adds the sums of a batch's rows to the pass's state.
    fn merge(&mut self, acc: Self::Acc) -> Result<()>;
    /// Adds the sums `acc` of some rows to the sums `into` of the rows before them.
    fn combine(&self, into: &mut Self::Acc, acc: Self::Acc) -> Result<()>;
    /// Whether every sum in `acc` is finite. Values added were all finite if and only if it
    /// is: a NaN or ±∞ makes every sum it enters non-finite, and finite `f32`s cannot make an
    /// f64 sum (or sum of squares) overflow (`|v| < 2¹²⁸`, so `v² < 2²⁵⁶`, and fewer than
    /// 2⁷⁰⁰ terms).
    fn finite(&self, acc: &Self::Acc) -> bool;
}

/// `f32` values per chunk of the fused read (1 MB: a chunk is summed while it is in L2).
const CHUNK_VALUES: usize = 1 << 18;

/// Rows per chunk of the fused read: [`CHUNK_VALUES`] of them, at most 1024 rows (the row
/// blocks of [`ClassSums::push`] and of `metrics::blocked_pass`, 4096 and 1024 rows, run on
/// the calling thread for no more rows than one block: no thread inside a worker).
fn chunk_rows(dim: usize) -> usize {
    (CHUNK_VALUES / dim.max(1)).clamp(1, 1024)
}

/// Reads `range` of a file in batches and passes each batch's rows of every group selected by
/// `keep(epoch, split)` (loaded, validated and relabelled like
/// [`crate::features::FeatureQuery::load_with_labels`]) to `sweep`; `progress` receives the
/// rows of each batch read.
///
/// A batch of a Parquet file whose `x` pages are all uncompressed PLAIN (the layout
/// recommended for large files) takes the *fused* route, in batches [`FUSED_BATCHES`] times
/// larger when the whole file is so: its small columns (labels, epoch, split, …) are loaded
/// through polars (or kept from the previous pass, up to [`SMALL_KEPT_BYTES`]), and its `x`
/// values read page by page ([`PlainX::read_values`], `pread` into a 1 MB buffer) in pieces
/// of at most [`chunk_rows`] rows, taken in turn by two threads, and checked
/// finite through the sums they enter ([`Sweep::finite`], no pass of its own over the
/// values). Any problem with such a batch (an error, a non-finite value) drops its partial
/// sums and reads it again the other way, which gives the precise error. Other batches are
/// loaded whole ([`FeatureQuery::load_groups`](crate::features::FeatureQuery)), their `x`
/// pages decoded by [`PlainX`] when it handles them (the next batch's pages on another
/// thread meanwhile), else by polars.
#[allow(clippy::too_many_arguments)]
pub(crate) fn for_each_batch<W: Sweep>(
    source: &Source,
    range: Range<u64>,
    labels: LabelColumn,
    batch_bytes: usize,
    keep: &dyn Fn(u32, &str) -> bool,
    sweep: &mut W,
    progress: &mut dyn FnMut(u64),
    bufs: &mut Buffers,
) -> Result<()> {
    let scan = &source.scan;
    // A Parquet file's `x` pages decoded straight into one buffer reused by every batch
    // (crate::features::plain); other files, or pages it does not handle, go through polars.
    let plain = match scan.dim() {
        Some(d) if is_parquet(scan.path()) => PlainX::open(scan.path(), d),
        _ => None,
    };
    // A file whose `x` is PLAIN throughout goes in batches FUSED_BATCHES times larger.
    let fusable = plain.as_ref().is_some_and(PlainX::plain_throughout);
    let rows = batch_rows(
        scan.dim(),
        if fusable {
            batch_bytes.saturating_mul(FUSED_BATCHES)
        } else {
            batch_bytes
        },
    );
    let batches = batches(scan, range.clone(), rows)?;
    // Where the values of each batch lie, for the batches of the fused route (kept for the
    // next pass over the same rows).
    let Buffers {
        buf,
        spare,
        chunks,
        plans,
        smalls,
    } = bufs;
    // The plans of the previous pass, if it read the same batches.
    let cached = plans
        .take()
        .filter(|(r, n, p)| *r == range && *n == rows && p.len() == batches.len())
        .map(|p| p.2);
    // The small columns the previous pass kept (only if it read the same batches), and those
    // this pass keeps for the next.
    let mut kept_small = std::mem::take(smalls);
    if cached.is_none() {
        kept_small.clear();
    }
    let mut keeping: Vec<Option<SmallBatch>> = Vec::with_capacity(batches.len());
    let mut kept_bytes = 0usize;
    // The plan (unless cached) and, for the fused route, the small columns of batch `j`:
    // for the next batch, on another thread while a batch is summed.
    let fetch = |j: usize| -> (Option<ValuePlan>, Option<SmallBatch>) {
        let (Some(p), Some(b)) = (plain.as_ref(), batches.get(j)) else {
            return (None, None);
        };
        let plan = match &cached {
            Some(_) => None,
            None => p.row_groups(b).and_then(|g| p.plan(g)),
        };
        let fused = match &cached {
            Some(c) => c.get(j).is_some_and(Option::is_some),
            None => plan.is_some(),
        };
        let small = fused
            .then(|| {
                scan.query()
                    .rows(b.clone())
                    .load_small(labels)
                    .ok()
                    .flatten()
            })
            .flatten();
        (plan, small)
    };
    let fetch = &fetch;
    let mut made: Vec<Option<ValuePlan>> = Vec::with_capacity(batches.len());
    // While a batch is summed, the `x` pages of the next one are decoded on another thread
    // into a second buffer (`spare`), once the loader is seen to read through `plain`.
    let swept = std::thread::scope(|s| -> Result<()> {
        let mut ahead: Option<std::thread::ScopedJoinHandle<'_, ReadAhead>> = None;
        type Fetched = (Option<ValuePlan>, Option<SmallBatch>);
        let mut next: Option<std::thread::ScopedJoinHandle<'_, Fetched>> = None;
        for (i, batch) in batches.iter().enumerate() {
            if let (Some(p), Some(h)) = (plain.as_ref(), ahead.take()) {
                if let Ok((groups, values, ok)) = h.join() {
                    *spare = std::mem::replace(buf, values);
                    if ok {
                        p.mark_read(groups, buf);
                    }
                }
            }
            let kept = kept_small.get_mut(i).and_then(Option::take);
            let (plan, this) = match (next.take(), kept) {
                (Some(h), _) => h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
                (None, Some(kept)) => (None, Some(kept)),
                (None, None) => fetch(i),
            };
            let next_kept = kept_small.get(i + 1).is_some_and(Option::is_some);
            if i + 1 < batches.len() && plain.is_some() && !next_kept {
                next = Some(s.spawn(move || fetch(i + 1)));
            }
            let plan = match &cached {
                Some(c) => c.get(i).and_then(Option::as_ref),
                None => {
                    made.push(plan);
                    made.last().and_then(Option::as_ref)
                }
            };
            if let (Some(p), Some(plan)) = (plain.as_ref(), plan) {
                let acc = this.as_ref().and_then(|this| {
                    let groups = this.groups(labels, keep)?;
                    fused(source, this, groups, labels, p, plan, sweep, chunks)
                });
                if let Some(acc) = acc {
                    sweep.merge(acc)?;
                    progress(batch.end - batch.start);
                    let bytes = this.as_ref().map_or(0, SmallBatch::bytes);
                    if keeping.len() == i && kept_bytes + bytes <= SMALL_KEPT_BYTES {
                        kept_bytes += bytes;
                        keeping.push(this);
                    }
                    continue;
                }
            }
            // Before the batch is loaded (to overlap the loading of its small columns too),
            // or, for the first batch, as soon as the loader is seen to use `plain`.
            let read_next = |spare: &mut Vec<f32>| {
                let (Some(p), Some(next)) = (plain.as_ref(), batches.get(i + 1)) else {
                    return None;
                };
                let groups = p.used().then(|| p.row_groups(next)).flatten()?;
                let mut values = std::mem::take(spare);
                Some(s.spawn(move || {
                    let ok = p.read_ahead(groups.clone(), &mut values);
                    (groups, values, ok)
                }))
            };
            ahead = read_next(spare);
            // The batch is read once, whatever the number of groups in it (a small file
            // holding many checkpoints is one batch), and split by group in memory.
            let groups = scan.query().rows(batch.clone()).load_groups(
                labels,
                keep,
                plain.as_ref().map(|p| (p, &mut *buf)),
            )?;
            if ahead.is_none() {
                ahead = read_next(spare);
            }
            for (e, s, features) in groups {
                let features = features.relabel(labels)?;
                let key = source.key(e, &s);
                sweep.prepare(&key)?;
                let mut acc = sweep.acc();
                let n = features.labels.len();
                sweep.add(&mut acc, &key, features.x.view(), &features, 0..n)?;
                sweep.merge(acc)?;
                // Take the feature buffer back for the next batch (its pages stay mapped).
                let (x, _) = features.x.into_raw_vec_and_offset();
                if x.capacity() > buf.capacity() {
                    *buf = x;
                }
            }
            progress(batch.end - batch.start);
        }
        Ok(())
    });
    *plans = Some((range, rows, cached.unwrap_or(made)));
    *smalls = keeping;
    swept
}

/// The fused route of [`for_each_batch`] for one batch: the accumulator of its rows, or
/// `None` when the batch must be read the other way (an error or a value the route does not
/// take: that way names it). `small` holds the batch's small columns, `groups` its groups.
/// The values of a piece of rows are read only if a group there [reads them](Sweep::reads_x).
#[allow(clippy::too_many_arguments)]
fn fused<W: Sweep>(
    source: &Source,
    small: &SmallBatch,
    groups: Vec<GroupRows>,
    labels: LabelColumn,
    plain: &PlainX,
    plan: &ValuePlan,
    sweep: &mut W,
    chunks: &mut [Vec<f32>; 2],
) -> Option<W::Acc> {
    let d = small.dim();
    let mut parts = Vec::with_capacity(groups.len());
    for g in groups {
        let features = g.features.relabel(labels).ok()?;
        let key = source.key(g.epoch, &g.split);
        sweep.prepare(&key).ok()?;
        let reads = sweep.reads_x(&key);
        parts.push(Part {
            key,
            features,
            rows: g.rows,
            reads,
        });
    }
    let n = small.rows();
    let step = chunk_rows(d);
    let sweep = &*sweep;
    let parts = &parts;
    // The sums of the rows `piece` of the batch: their values read (`pread` into `buf`,
    // L2-sized) when a group there reads them, and added group by group.
    let piece_sums = |piece: Range<usize>, buf: &mut Vec<f32>, gathered: &mut Vec<f32>| {
        let mut acc = sweep.acc();
        // The groups with rows in the piece, and whether one of them reads the values.
        let (mut any, mut read) = (false, false);
        for p in parts {
            let a = p.rows.partition_point(|&r| r < piece.start);
            if p.rows.get(a).is_some_and(|&r| r < piece.end) {
                any = true;
                read |= p.reads;
            }
        }
        if !any {
            return Some(acc);
        }
        let x: &[f32] = if read {
            let values = piece.start * d..piece.end * d;
            buf.resize(values.len(), 0.0);
            if !plain.read_values(plan, values, buf) {
                return None;
            }
            buf
        } else {
            &[]
        };
        add_piece(sweep, &mut acc, parts, x, piece, d, gathered)?;
        Some(acc)
    };
    let [first, second] = chunks;
    let pieces = n.div_ceil(step);
    if pieces <= 1 {
        let acc = piece_sums(0..n, first, &mut Vec::new())?;
        return sweep.finite(&acc).then_some(acc);
    }
    // Both threads take the next piece until none is left (a thread slowed down by the
    // next batch's loading, or by anything else, takes fewer), and each piece's sums join
    // the batch's in piece order, whichever thread made them: the same sums in the same
    // order on every run. Checked finite through the sums (no pass of its own over the
    // values).
    let sums = join_in_order(
        pieces,
        [(first, Vec::new()), (second, Vec::new())],
        |i, (buf, gathered)| piece_sums(i * step..((i + 1) * step).min(n), buf, gathered),
        sweep.acc(),
        |into, acc| sweep.combine(into, acc).is_ok(),
    )?;
    sweep.finite(&sums).then_some(sums)
}

/// Makes pieces `0..pieces` on two threads (each with its own `state`), each taking the next
/// piece not taken, and joins their results into `init` in piece order with `join`: the same
/// result whichever thread made which piece. `None` if a piece or a join fails (`None`,
/// `false`); the other thread then stops at its next piece. At most [`PIECES_AHEAD`] pieces
/// wait to join, whatever holds up the thread making the next one (it is making it: every
/// piece before those waiting is taken). A panic while making a piece is resumed after both
/// threads stop.
fn join_in_order<S: Send, A: Send>(
    pieces: usize,
    state: [S; 2],
    make: impl Fn(usize, &mut S) -> Option<A> + Sync,
    init: A,
    join: impl Fn(&mut A, A) -> bool + Sync,
) -> Option<A> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let merged = std::sync::Mutex::new(InOrder {
        next: 0,
        pending: BTreeMap::new(),
        sums: init,
        failed: false,
    });
    // Signalled when pieces join (or one failed).
    let joined = std::sync::Condvar::new();
    let worker = |mut state: S| {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= pieces {
                return;
            }
            {
                let Ok(mut m) = merged.lock() else {
                    return;
                };
                while !m.failed && i >= m.next + PIECES_AHEAD {
                    m = match joined.wait(m) {
                        Ok(m) => m,
                        Err(_) => return,
                    };
                }
                if m.failed {
                    return;
                }
            }
            // A panic while the piece is made must not leave the other thread waiting for it.
            let guard = FailOnUnwind {
                merged: &merged,
                joined: &joined,
            };
            let made = make(i, &mut state);
            std::mem::forget(guard);
            let Ok(mut m) = merged.lock() else {
                return;
            };
            let m = &mut *m;
            match made {
                Some(made) => {
                    m.pending.insert(i, made);
                    while let Some(made) = m.pending.remove(&m.next) {
                        if !join(&mut m.sums, made) {
                            m.failed = true;
                        }
                        m.next += 1;
                    }
                }
                None => m.failed = true,
            }
            joined.notify_all();
            if m.failed {
                // The other thread stops at its next piece.
                next.store(pieces, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
    };
    let [a, b] = state;
    std::thread::scope(|s| {
        let h = s.spawn(|| worker(b));
        worker(a);
        if let Err(panic) = h.join() {
            std::panic::resume_unwind(panic)
        }
    });
    let m = merged.into_inner().ok()?;
    (!m.failed && m.next == pieces).then_some(m.sums)
}

/// Marks the pieces of [`join_in_order`] failed, and wakes the threads waiting for one to
/// join, when dropped: while a piece is made, a drop is an unwinding panic.
struct FailOnUnwind<'a, A> {
    merged: &'a std::sync::Mutex<InOrder<A>>,
    joined: &'a std::sync::Condvar,
}

impl<A> Drop for FailOnUnwind<'_, A> {
    fn drop(&mut self) {
        let mut m = self
            .merged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.failed = true;
        self.joined.notify_all();
    }
}

/// Most pieces made ahead of the next one to join in [`join_in_order`] (their results wait in
/// memory: for a fused batch, sums as large as twice a piece's values with a class per row,
/// 16 MB in all).
const PIECES_AHEAD: usize = 8;

/// The results of [`join_in_order`]'s pieces joined in piece order: the next piece to join,
/// the pieces done out of order, the result so far, and whether a piece failed.
struct InOrder<A> {
    next: usize,
    pending: BTreeMap<usize, A>,
    sums: A,
    failed: bool,
}

/// A group's part of a fused batch: its key, small columns, rows in the batch (ascending)
/// and whether its sweep reads the values ([`Sweep::reads_x`]).
struct Part {
    key: GroupKey,
    features: Features,
    rows: Vec<usize>,
    reads: bool,
}

/// Adds the rows `piece` of a batch, their values `x` (row-major, `d` per row; empty when no
/// group in the piece reads them), to `acc` group by group (`parts`); the rows of a group that
/// shares the piece with others are gathered into `gathered` first. A group that does not
/// read the values gets an `n × 0` matrix.
fn add_piece<W: Sweep, T: Copy + Into<f64> + Sync>(
    sweep: &W,
    acc: &mut W::Acc,
    parts: &[Part],
    x: &[T],
    piece: Range<usize>,
    d: usize,
    gathered: &mut Vec<T>,
) -> Option<()> {
    for Part {
        key,
        features: f,
        rows,
        reads,
    } in parts
    {
        let a = rows.partition_point(|&r| r < piece.start);
        let b = rows.partition_point(|&r| r < piece.end);
        if a == b {
            continue;
        }
        if !reads {
            let view = ArrayView2::from_shape((b - a, 0), &x[..0]).ok()?;
            sweep.add(acc, key, view, f, a..b).ok()?;
            continue;
        }
        let values: &[T] = if b - a == piece.len() {
            x
        } else {
            // Rows of several groups in the piece: this group's rows, gathered.
            gathered.clear();
            for &r in &rows[a..b] {
                let at = (r - piece.start) * d;
                gathered.extend_from_slice(&x[at..at + d]);
            }
            gathered
        };
        let view = ArrayView2::from_shape((b - a, d), values).ok()?;
        sweep.add(acc, key, view, f, a..b).ok()?;
    }
    Some(())
}

/// Pass 1 over `range` of a file: counts and sums of every group `keep` selects.
///
/// # Errors
/// Reading errors (naming the file, column and row), and dimension mismatches.
pub fn first_pass(
    source: &Source,
    range: Range<u64>,
    labels: LabelColumn,
    batch_bytes: usize,
    keep: &dyn Fn(u32, &str) -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<BTreeMap<GroupKey, ClassSums>> {
    let mut bufs = Buffers::default();
    first_pass_in(
        source,
        range,
        labels,
        batch_bytes,
        keep,
        &|_, _| false,
        progress,
        &mut bufs,
    )
}

/// Which groups pass 1 only counts ([`ClassSums::count`]) instead of summing, by (epoch,
/// split).
type CountsOnly<'a> = &'a (dyn Fn(u32, &str) -> bool + Sync);

/// Pass 1 as a [`Sweep`]: the class sums of every group, or only the class counts of those
/// `counts_only` selects.
struct FirstPass<'a> {
    out: BTreeMap<GroupKey, ClassSums>,
    counts_only: CountsOnly<'a>,
    /// The file's feature width, for the groups only counted (whose `x` the fused route
    /// passes with no column).
    dim: Option<usize>,
}

impl Sweep for FirstPass<'_> {
    type Acc = BTreeMap<GroupKey, ClassSums>;

    fn finite(&self, acc: &Self::Acc) -> bool {
        acc.values().all(|sums| {
            sums.classes
                .values()
                .all(|(_, s)| s.iter().all(|v| v.is_finite()))
        })
    }

    fn prepare(&mut self, _: &GroupKey) -> Result<()> {
        Ok(())
    }

    fn reads_x(&self, key: &GroupKey) -> bool {
        !(self.counts_only)(key.epoch, &key.split)
    }

    fn add<T: Copy + Into<f64> + Sync>(
        &self,
        acc: &mut Self::Acc,
        key: &GroupKey,
        x: ArrayView2<'_, T>,
        f: &Features,
        rows: Range<usize>,
    ) -> Result<()> {
        let labels = rows_of(&f.labels, &rows)?;
        let reads = self.reads_x(key);
        // The width of the group's features (`x` has none when it was not read).
        let dim = match self.dim {
            Some(d) if !reads && x.ncols() == 0 => d,
            _ => x.ncols(),
        };
        if !acc.contains_key(key) {
            acc.insert(key.clone(), ClassSums::new(dim));
        }
        match acc.get_mut(key) {
            Some(sums) if reads => sums.push(x, labels),
            Some(sums) => {
                sums.count(labels);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn merge(&mut self, acc: Self::Acc) -> Result<()> {
        merge_class_sums(&mut self.out, acc)
    }

    fn combine(&self, into: &mut Self::Acc, acc: Self::Acc) -> Result<()> {
        merge_class_sums(into, acc)
    }
}

/// Adds each group's sums in `acc` to those of `into`.
fn merge_class_sums(
    into: &mut BTreeMap<GroupKey, ClassSums>,
    acc: BTreeMap<GroupKey, ClassSums>,
) -> Result<()> {
    for (key, sums) in acc {
        match into.get_mut(&key) {
            Some(s) => s.merge(&sums)?,
            None => {
                into.insert(key, sums);
            }
        }
    }
    Ok(())
}

/// [`first_pass`] with the batch buffers `bufs` (kept for the second pass), summing the
/// groups `keep` selects and only counting those `counts_only` selects too.
#[allow(clippy::too_many_arguments)]
fn first_pass_in(
    source: &Source,
    range: Range<u64>,
    labels: LabelColumn,
    batch_bytes: usize,
    keep: &dyn Fn(u32, &str) -> bool,
    counts_only: CountsOnly<'_>,
    progress: &mut dyn FnMut(u64),
    bufs: &mut Buffers,
) -> Result<BTreeMap<GroupKey, ClassSums>> {
    let mut pass = FirstPass {
        out: BTreeMap::new(),
        counts_only,
        dim: source.scan.dim(),
    };
    for_each_batch(
        source,
        range,
        labels,
        batch_bytes,
        keep,
        &mut pass,
        progress,
        bufs,
    )?;
    Ok(pass.out)
}

/// Groups measured in pass 2 and the classifier of each epoch, prepared once.
pub(crate) struct Plan<'m> {
    means: &'m BTreeMap<GroupKey, ClassSums>,
    options: MeasureOptions,
    prepared: HashMap<GroupKey, Prepared>,
    classifiers: HashMap<u32, Classifier>,
    context: String,
}

impl<'m> Plan<'m> {
    /// A plan over the pass-1 state `means` (all groups of the file or of the merged shards).
    pub(crate) fn new(
        means: &'m BTreeMap<GroupKey, ClassSums>,
        options: &MeasureOptions,
        context: &str,
    ) -> Self {
        Self {
            means,
            options: options.clone(),
            prepared: HashMap::new(),
            classifiers: HashMap::new(),
            context: context.to_string(),
        }
    }

    /// The prepared group (computed on first use).
    pub(crate) fn group(&mut self, key: &GroupKey) -> Result<&Prepared> {
        if !self.prepared.contains_key(key) {
            let own = self
                .means
                .get(key)
                .ok_or_else(|| StreamError::MissingMeans {
                    group: key.describe(),
                })?;
            let train = self.means.get(&key.train());
            let classifier = match &self.options.classifier {
                Some(path) => {
                    if let std::collections::hash_map::Entry::Vacant(e) =
                        self.classifiers.entry(key.epoch)
                    {
                        e.insert(crate::features::read_classifier(path, key.epoch)?);
                    }
                    self.classifiers.get(&key.epoch).cloned()
                }
                None => None,
            };
            let p = prepare(key, own, train, &self.options, classifier, &self.context)?;
            self.prepared.insert(key.clone(), p);
        }
        Ok(&self.prepared[key])
    }
}

/// Pass 2 over `range` of a file against the pass-1 state `means` (which must hold every group
/// `keep` selects, and their train groups for `--reference train`).
///
/// # Errors
/// Reading errors, a group without means, and the metric errors of preparing a group.
pub fn second_pass(
    source: &Source,
    range: Range<u64>,
    means: &BTreeMap<GroupKey, ClassSums>,
    options: &MeasureOptions,
    batch_bytes: usize,
    keep: &dyn Fn(u32, &str) -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<BTreeMap<GroupKey, ResidualSums>> {
    let mut bufs = Buffers::default();
    second_pass_in(
        source,
        range,
        means,
        options,
        batch_bytes,
        keep,
        progress,
        &mut bufs,
    )
}

/// Pass 2 as a [`Sweep`]: the residual sums of every group, against the prepared groups of
/// `plan`.
struct SecondPass<'m> {
    plan: Plan<'m>,
    context: String,
    out: BTreeMap<GroupKey, ResidualSums>,
}

impl Sweep for SecondPass<'_> {
    type Acc = BTreeMap<GroupKey, ResidualSums>;

    fn finite(&self, acc: &Self::Acc) -> bool {
        acc.values()
            .all(|r| r.nc1_sum.is_finite() && r.scatter.iter().all(|v| v.is_finite()))
    }

    fn prepare(&mut self, key: &GroupKey) -> Result<()> {
        self.plan.group(key).map(|_| ())
    }

    fn add<T: Copy + Into<f64> + Sync>(
        &self,
        acc: &mut Self::Acc,
        key: &GroupKey,
        x: ArrayView2<'_, T>,
        f: &Features,
        rows: Range<usize>,
    ) -> Result<()> {
        let labels = rows_of(&f.labels, &rows)?;
        let prepared = self
            .plan
            .prepared
            .get(key)
            .ok_or_else(|| StreamError::MissingMeans {
                group: key.describe(),
            })?;
        let pred = match f.pred.as_deref().filter(|_| f.pred_predicts_labels()) {
            Some(p) => Some(rows_of(p, &rows)?),
            None => None,
        };
        let sums = prepared.pass(x, labels, pred).map_err(|e| {
            e.context(format!(
                "{}, epoch {}, split {}",
                self.context, key.epoch, key.split
            ))
        })?;
        merge_residuals(acc, key, sums)
    }

    fn merge(&mut self, acc: Self::Acc) -> Result<()> {
        merge_residual_sums(&mut self.out, acc)
    }

    fn combine(&self, into: &mut Self::Acc, acc: Self::Acc) -> Result<()> {
        merge_residual_sums(into, acc)
    }
}

/// Values `rows` of a column of a group's rows (a length mismatch if they are not all there).
fn rows_of<'a>(v: &'a [u32], rows: &Range<usize>) -> Result<&'a [u32]> {
    v.get(rows.clone()).ok_or_else(|| {
        MetricError::Check(CheckError::LengthMismatch {
            rows: rows.end,
            labels: v.len(),
        })
        .into()
    })
}

/// Adds each group's sums in `acc` to those of `into`.
fn merge_residual_sums(
    into: &mut BTreeMap<GroupKey, ResidualSums>,
    acc: BTreeMap<GroupKey, ResidualSums>,
) -> Result<()> {
    for (key, sums) in acc {
        merge_residuals(into, &key, sums)?;
    }
    Ok(())
}

/// Adds `sums` to the sums of `key` in `into`.
fn merge_residuals(
    into: &mut BTreeMap<GroupKey, ResidualSums>,
    key: &GroupKey,
    sums: ResidualSums,
) -> Result<()> {
    match into.get_mut(key) {
        Some(acc) => acc.merge(&sums),
        None => {
            into.insert(key.clone(), sums);
            Ok(())
        }
    }
}

/// [`second_pass`] with the batch buffers `bufs`.
#[allow(clippy::too_many_arguments)]
fn second_pass_in(
    source: &Source,
    range: Range<u64>,
    means: &BTreeMap<GroupKey, ClassSums>,
    options: &MeasureOptions,
    batch_bytes: usize,
    keep: &dyn Fn(u32, &str) -> bool,
    progress: &mut dyn FnMut(u64),
    bufs: &mut Buffers,
) -> Result<BTreeMap<GroupKey, ResidualSums>> {
    let context = source.scan.path().display().to_string();
    let mut pass = SecondPass {
        plan: Plan::new(means, options, &context),
        context,
        out: BTreeMap::new(),
    };
    for_each_batch(
        source,
        range,
        options.labels,
        batch_bytes,
        keep,
        &mut pass,
        progress,
        bufs,
    )?;
    Ok(pass.out)
}

/// Whether `(epoch, split)` is measured under `options`' epoch and split filters.
pub(crate) fn wanted(options: &MeasureOptions, epoch: u32, split: &str) -> bool {
    options.epoch.is_none_or(|e| e == epoch) && options.split.as_deref().is_none_or(|s| s == split)
}

/// Whether pass 1 needs `(epoch, split)`: the wanted groups and, for `--reference train`, the
/// train split of their epochs.
pub(crate) fn needed(options: &MeasureOptions, epoch: u32, split: &str) -> bool {
    wanted(options, epoch, split)
        || (options.config.reference == ReferenceChoice::Train
            && split == "train"
            && options.epoch.is_none_or(|e| e == epoch))
}

/// Whether pass 1 of [`measure_file`] only counts the rows of a group of split `split`: with
/// `--reference train`, a split other than `train` is measured against the train means, and
/// its own means are used by no statistic (its counts are: `n_c`, `N`, the classes present).
/// Its values are then read once, by pass 2.
fn counted_only(options: &MeasureOptions, split: &str) -> bool {
    options.config.reference == ReferenceChoice::Train && split != "train"
}

/// Both passes over a whole file and the reports of its wanted groups, ordered by (epoch,
/// split): [`measure_scan`] in bounded memory (without
/// `min_class_samples`, which needs the whole matrix).
///
/// # Errors
/// As [`measure_scan`].
pub fn measure_file(
    source: &Source,
    options: &MeasureOptions,
    batch_bytes: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<NcReport>> {
    // One pair of batch buffers for both passes (their pages are not faulted in twice).
    let mut bufs = Buffers::default();
    let means = first_pass_in(
        source,
        0..source.rows,
        options.labels,
        batch_bytes,
        &|e, s| needed(options, e, s),
        &|_, s| counted_only(options, s),
        progress,
        &mut bufs,
    )?;
    // Pass 2 reads the same rows (its groups are among pass 1's), in the same chunks, and
    // checks finite the values of the groups pass 1 only counted.
    check_any(source, options, &means)?;
    let sums = second_pass_in(
        source,
        0..source.rows,
        &means,
        options,
        batch_bytes,
        &|e, s| wanted(options, e, s),
        progress,
        &mut bufs,
    )?;
    reports(
        &means,
        &sums,
        options,
        &source.scan.path().display().to_string(),
    )
}

/// The "no rows for this filter" error of the loader when no group is wanted.
fn check_any(
    source: &Source,
    options: &MeasureOptions,
    means: &BTreeMap<GroupKey, ClassSums>,
) -> Result<()> {
    if means.keys().any(|k| wanted(options, k.epoch, &k.split)) {
        return Ok(());
    }
    let mut q = source.scan.query();
    if let Some(e) = options.epoch {
        q = q.epoch(e);
    }
    if let Some(s) = &options.split {
        q = q.split(s.clone());
    }
    q.load()?;
    Ok(())
}

/// Reports of every group with pass-2 sums, in key order.
pub(crate) fn reports(
    means: &BTreeMap<GroupKey, ClassSums>,
    sums: &BTreeMap<GroupKey, ResidualSums>,
    options: &MeasureOptions,
    context: &str,
) -> Result<Vec<NcReport>> {
    let mut plan = Plan::new(means, options, context);
    let mut out = Vec::with_capacity(sums.len());
    for (key, s) in sums {
        let prepared = plan.group(key)?;
        let report = prepared.report(key, s, options).map_err(|e| match e {
            // It names its group (run, seed, layer, epoch, split) itself.
            e @ StreamError::IncompletePass { .. } if context.is_empty() => e,
            e => e.context(format!(
                "{context}{}epoch {}, split {}",
                if context.is_empty() { "" } else { ", " },
                key.epoch,
                key.split
            )),
        })?;
        out.push(report);
    }
    Ok(out)
}

/// [`measure_scan`] in bounded batches (see the module docs).
///
/// # Errors
/// As [`measure_scan`]. `options.min_class_samples` is ignored here: with it
/// set, use `measure_scan` (dropping classes needs the whole matrix).
pub fn measure_scan_streamed(
    scan: &FeatureScan,
    options: &MeasureOptions,
) -> Result<Vec<NcReport>> {
    measure_file(
        &Source::from_scan(scan)?,
        options,
        DEFAULT_BATCH_BYTES,
        &mut |_| {},
    )
}

/// Measures every (epoch, split) of a feature file in one call, in the order of
/// [`FeatureScan::checkpoints`](crate::features::FeatureScan::checkpoints) (epoch, then split).
///
/// The file is read in bounded batches, in two passes of sums
/// ([`measure_scan_streamed`]: memory is one batch plus `O(C·d)` per checkpoint,
/// whatever the file size); with [`MeasureOptions::min_class_samples`] set, each checkpoint is
/// loaded whole ([`measure_scan_loaded`]). The two agree to rounding.
///
/// # Errors
/// As [`measure_scan_loaded`].
pub fn measure_scan(scan: &FeatureScan, options: &MeasureOptions) -> Result<Vec<NcReport>> {
    if options.min_class_samples.is_none() {
        return measure_scan_streamed(scan, options);
    }
    measure_scan_loaded(scan, options)
}

/// [`measure_scan`] with each (epoch, split) loaded whole into memory (and the train split of
/// its epoch, for [`ReferenceChoice::Train`]).
///
/// With [`ReferenceChoice::Train`], a non-train split is measured against the class means of
/// the `train` split of the same epoch (loaded once per epoch). With a classifier file, each
/// epoch's classifier is read from it; otherwise a stored `pred` column gives NC4.
///
/// # Errors
/// Those of loading ([`FeatureError`](crate::features::FeatureError), e.g. no rows for the
/// filter, or no train split for `Train`) and of [`NcParams::measure`].
pub fn measure_scan_loaded(scan: &FeatureScan, options: &MeasureOptions) -> Result<Vec<NcReport>> {
    let mut checkpoints = scan.checkpoints()?;
    checkpoints.retain(|(e, s)| {
        options.epoch.is_none_or(|want| want == *e)
            && options.split.as_deref().is_none_or(|want| want == s)
    });
    if checkpoints.is_empty() {
        // Let the loader produce its precise "no rows for this filter" message.
        let mut q = scan.query();
        if let Some(e) = options.epoch {
            q = q.epoch(e);
        }
        if let Some(s) = &options.split {
            q = q.split(s.clone());
        }
        q.load()?;
    }
    let mut reports = Vec::with_capacity(checkpoints.len());
    let mut train_stats: Option<(u32, ClassStats)> = None;
    let mut classifier: Option<(u32, Classifier)> = None;
    for (epoch, split) in checkpoints {
        let features = scan
            .epoch(epoch)
            .split(split.clone())
            .load_with_labels(options.labels)?
            .relabel(options.labels)?;
        if let Some(path) = &options.classifier {
            if classifier.as_ref().is_none_or(|(e, _)| *e != epoch) {
                classifier = Some((epoch, read_classifier(path, epoch)?));
            }
        }
        let wants_train = options.config.reference == ReferenceChoice::Train && split != "train";
        if wants_train && train_stats.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let train = scan
                .epoch(epoch)
                .split("train")
                .load_with_labels(options.labels)?
                .relabel(options.labels)?;
            let label = train
                .labels
                .iter()
                .chain(&features.labels)
                .copied()
                .max()
                .unwrap_or(0);
            let at_train = |e: MetricError| {
                StreamError::from(e).context(format!(
                    "{}, epoch {epoch}, split train (the reference of split {split})",
                    scan.path().display()
                ))
            };
            // Every class needs a train sample: refuse before allocating `classes × d`.
            too_many_classes(label, train.labels.len()).map_err(at_train)?;
            let classes = label as usize + 1;
            let stats = ClassStats::from_data_with_classes(train.x.view(), &train.labels, classes)?;
            // A class of this split that train lacks: name train, whose means are missing
            // (unless such classes are to be dropped).
            if let (None, Some(class)) = (options.min_class_samples, stats.first_empty_class()) {
                return Err(at_train(MetricError::EmptyClass { class, classes }));
            }
            train_stats = Some((epoch, stats));
        }
        // Every class needs a sample: refuse a huge label before anything is allocated per class.
        let label = features.labels.iter().copied().max().unwrap_or(0);
        if !wants_train && options.min_class_samples.is_none() {
            too_many_classes(label, features.labels.len()).map_err(|e| {
                StreamError::from(e).context(format!(
                    "{}, epoch {epoch}, split {split}",
                    scan.path().display()
                ))
            })?;
        }
        // With `ReferenceChoice::Train` the train split itself gets no train statistics: it is
        // measured against its own means, and its report says `train` (see `NcParams::config`).
        let mut params = NcParams::new()
            .config(options.config)
            .nc1_route(options.nc1_route)
            .generalized(options.generalized);
        if wants_train {
            if let Some((_, s)) = &train_stats {
                params = params.reference(Reference::Train(s));
            }
        }
        if let Some((_, c)) = &classifier {
            params = params.classifier(c);
        }
        if let Some(k) = options.min_class_samples {
            params = params.min_class_samples(k);
        }
        let report = params.measure_features(&features).map_err(|e| {
            StreamError::from(e).context(format!(
                "{}, epoch {epoch}, split {split}",
                scan.path().display()
            ))
        })?;
        reports.push(report);
    }
    Ok(reports)
}

/// [`MetricError::TooManyClasses`] if the largest label `label` implies more classes than the
/// `rows` they come from (some class is then necessarily empty).
fn too_many_classes(label: u32, rows: usize) -> std::result::Result<(), MetricError> {
    if label as u64 >= rows as u64 {
        return Err(MetricError::TooManyClasses { label, rows });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{write_features, Features};
    use polars::prelude::*;

    /// Whether two JSON values agree: numbers to `1e-12` relative, the rest exactly.
    fn close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                (x - y).abs() <= 1e-12 * y.abs().max(1e-300)
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
            }
            _ => a == b,
        }
    }

    /// An uncompressed file (PLAIN pages: the fused route of `for_each_batch`) of two epochs
    /// × train/test, with batches of 2500 rows that straddle groups and hold three chunks
    /// each (two threads): the streamed reports equal those of whole matrices to `1e-12`,
    /// and a NaN in it gives the error of the polars path (file row and component).
    #[test]
    fn pieces_join_in_order_with_a_bounded_lead() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Piece 0 is slow: the other thread makes pieces 1.. meanwhile, but no more than
        // PIECES_AHEAD - 1 of them wait to join; the joins come in piece order.
        let joins = AtomicUsize::new(0);
        let lead = AtomicUsize::new(0);
        let made = join_in_order(
            100,
            [0usize, 1],
            |i, _| {
                if i == 0 {
                    // Until the other thread has made all it may (or 5 s), and then some.
                    let t = std::time::Instant::now();
                    while lead.load(Ordering::SeqCst) < PIECES_AHEAD - 1
                        && t.elapsed().as_secs() < 5
                    {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                lead.fetch_max(i - joins.load(Ordering::SeqCst), Ordering::SeqCst);
                Some(vec![i])
            },
            Vec::new(),
            |into, v| {
                into.extend(v);
                joins.fetch_add(1, Ordering::SeqCst);
                true
            },
        )
        .expect("every piece made");
        assert_eq!(made, (0..100).collect::<Vec<_>>());
        assert_eq!(lead.load(Ordering::SeqCst), PIECES_AHEAD - 1);
        // Which thread made which piece does not matter: each thread's state is its own.
        let by_thread = join_in_order(
            40,
            [Vec::new(), Vec::new()],
            |i, mine: &mut Vec<usize>| {
                mine.push(i);
                Some(i as f64)
            },
            0.0,
            |into, v| {
                *into += v;
                true
            },
        );
        assert_eq!(by_thread, Some((0..40).sum::<usize>() as f64));
        // A piece or a join that fails: no result, and both threads stop.
        let none = join_in_order(
            50,
            [(), ()],
            |i, _| (i != 17).then_some(i),
            0,
            |a, v| {
                *a += v;
                true
            },
        );
        assert_eq!(none, None);
        let refused = join_in_order(
            50,
            [(), ()],
            |i, _| Some(i),
            0,
            |a, v| {
                *a += v;
                v != 33
            },
        );
        assert_eq!(refused, None);
        // A panic while a piece is made reaches the caller (the other thread, which may be
        // waiting for that piece, stops instead of waiting forever: a hang fails after 20 s).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let panicked = std::panic::catch_unwind(|| {
                join_in_order(
                    50,
                    [(), ()],
                    |i, _| {
                        if i == 0 {
                            std::thread::sleep(std::time::Duration::from_millis(30));
                            panic!("piece 0");
                        }
                        Some(i)
                    },
                    0,
                    |a, v| {
                        *a += v;
                        true
                    },
                )
            });
            tx.send(panicked.is_err()).ok();
        });
        let panicked = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("join_in_order returned");
        assert!(panicked);
    }

    #[test]
    fn counted_rows_have_no_means_of_their_own() {
        let key = GroupKey {
            run: None,
            seed: None,
            layer: "penultimate".into(),
            epoch: 3,
            split: "test".into(),
        };
        let x = ndarray::array![[1.0f32, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 3.0]];
        let labels = [0u32, 1, 0, 1];
        let mut summed = ClassSums::new(2);
        summed.push(x.view(), &labels).expect("push");
        let mut train = ClassSums::new(2);
        let xt = ndarray::array![[3.0f32, 0.0], [0.0, 2.0], [4.0, 1.0], [0.5, 4.0]];
        train.push(xt.view(), &labels).expect("push");
        let mut counted = ClassSums::new(2);
        counted.count(&labels);
        assert!(summed.summed() && !counted.summed());
        let counts = |s: &ClassSums| s.classes().map(|(c, n, _)| (c, n)).collect::<Vec<_>>();
        assert_eq!(counts(&counted), vec![(0, 2), (1, 2)]);
        // Merged with a summed state, the result is not summed either.
        let mut merged = summed.clone();
        merged.merge(&counted).expect("merge");
        assert!(!merged.summed());
        assert_eq!(merged.rows(), 8);
        // Against its own means, a counted group is refused; against the train means it is
        // measured, with the same report as the summed group.
        let mut options = MeasureOptions::default();
        let err = prepare(&key, &counted, Some(&train), &options, None, "f.parquet")
            .err()
            .expect("no means of its own")
            .to_string();
        assert!(
            err.starts_with("f.parquet, epoch 3, split test: ") && err.contains("only counted"),
            "{err}"
        );
        assert!(prepare(&key, &summed, Some(&train), &options, None, "").is_ok());
        options.config.reference = ReferenceChoice::Train;
        let a = prepare(&key, &counted, Some(&train), &options, None, "").expect("counted");
        let b = prepare(&key, &summed, Some(&train), &options, None, "").expect("summed");
        let sums = a.pass(x.view(), &labels, None).expect("pass 2");
        assert_eq!(sums, b.pass(x.view(), &labels, None).expect("pass 2"));
        let report = |p: &Prepared| {
            serde_json::to_value(p.report(&key, &sums, &options).expect("report")).expect("json")
        };
        assert_eq!(report(&a), report(&b));
    }

    #[test]
    fn fused_route_equals_whole_matrices() {
        let dir = std::env::temp_dir().join(format!("nc-stream-fused-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (d, classes) = (64usize, 5u32);
        let mut items = Vec::new();
        let mut seed = 12345u64;
        for (k, (epoch, split, n)) in [
            (1u32, "train", 3100usize),
            (1, "test", 900),
            (2, "train", 3300),
            (2, "test", 1200),
        ]
        .into_iter()
        .enumerate()
        {
            let labels: Vec<u32> = (0..n as u32)
                .map(|i| (i * 7 + k as u32) % classes)
                .collect();
            let x = ndarray::Array2::from_shape_fn((n, d), |(i, j)| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                let c = labels[i] as usize;
                ((c * 13 + j * 5) % 11) as f32 * (1.0 + epoch as f32) * 0.3 + noise
            });
            items.push(Features::new(x, labels).with_epoch(epoch).with_split(split));
        }
        let zstd = dir.join("features-z.parquet");
        write_features(&zstd, &items).expect("write");
        // Rewritten uncompressed in row groups of 2500 rows (its pages PLAIN).
        let path = dir.join("features-fc.parquet");
        let rewrite = |from: &Path, to: &Path| {
            let mut df = FeatureScan::open(from)
                .expect("scan")
                .lazy()
                .select(["epoch", "split", "sample", "label", "x"].map(col))
                .collect()
                .expect("collect");
            let file = std::fs::File::create(to).expect("create");
            ParquetWriter::new(file)
                .with_compression(ParquetCompression::Uncompressed)
                .with_row_group_size(Some(2500))
                .finish(&mut df)
                .expect("write uncompressed");
        };
        rewrite(&zstd, &path);
        let rows: u64 = items.iter().map(|f| f.n_samples() as u64).sum();
        let plain = PlainX::open(&path, d).expect("a FLOAT list leaf");
        let groups = plain.row_groups(&(0..rows)).expect("row groups");
        let plan = plain.plan(groups).expect("every page uncompressed PLAIN");
        // The fused route reads values at any byte offset: some pages' values are not 4-byte
        // aligned in the file.
        let offsets: Vec<u64> = plan.segments().iter().map(|s| s.0 % 4).collect();
        assert!(offsets.iter().any(|&o| o != 0), "{offsets:?}");
        let batch_bytes = 4 * d * 2500;
        assert_eq!(chunk_rows(d), 1024);
        // Fused batches of at most 10,000 rows (the whole file, maps of 1,250 rows), and of
        // at most 3,200 (maps of 400 rows): two fused batches, whose small columns pass 2
        // reuses from pass 1, then two that cut row groups and take the other route.
        for (reference, batch_bytes) in [
            (ReferenceChoice::Own, batch_bytes),
            (ReferenceChoice::Train, batch_bytes),
            (ReferenceChoice::Train, 4 * d * 800),
        ] {
            let mut options = MeasureOptions::default();
            options.config.reference = reference;
            let source = Source::open(&path, None, None).expect("open");
            let streamed =
                measure_file(&source, &options, batch_bytes, &mut |_| {}).expect("streamed");
            let whole = measure_scan_loaded(&source.scan, &options).expect("whole");
            assert_eq!(streamed.len(), 4);
            // The pieces of a fused batch go to whichever thread is free, and join in piece
            // order: the same bits on every run.
            let again =
                measure_file(&source, &options, batch_bytes, &mut |_| {}).expect("streamed");
            assert_eq!(
                serde_json::to_value(&streamed).expect("json"),
                serde_json::to_value(&again).expect("json")
            );
            for (a, b) in streamed.iter().zip(&whole) {
                let (a, b) = (
                    serde_json::to_value(a).expect("json"),
                    serde_json::to_value(b).expect("json"),
                );
                assert!(close(&a, &b), "{a}\n{b}");
            }
        }
        // With `--reference train`, pass 1 only counts the test rows (their own means serve
        // no statistic): the train groups' sums are those of a full pass 1, the test groups'
        // counts too, and their state says it holds no means.
        let source = Source::open(&path, None, None).expect("open");
        let mut options = MeasureOptions::default();
        options.config.reference = ReferenceChoice::Train;
        let full = first_pass(
            &source,
            0..rows,
            options.labels,
            batch_bytes,
            &|_, _| true,
            &mut |_| {},
        )
        .expect("pass 1");
        let counted = first_pass_in(
            &source,
            0..rows,
            options.labels,
            batch_bytes,
            &|_, _| true,
            &|_, s| counted_only(&options, s),
            &mut |_| {},
            &mut Buffers::default(),
        )
        .expect("pass 1, test rows counted");
        assert_eq!(full.len(), 4);
        for (key, sums) in &full {
            let other = &counted[key];
            assert!(sums.summed());
            assert_eq!(other.summed(), key.split == "train", "{key:?}");
            if key.split == "train" {
                assert_eq!(sums, other);
            } else {
                let counts =
                    |s: &ClassSums| s.classes().map(|(c, n, _)| (c, n)).collect::<Vec<_>>();
                assert_eq!(counts(sums), counts(other));
                assert_eq!(sums.dim(), other.dim());
            }
        }
        // A NaN or -∞ at file row 3100 + 900 + 1234 (epoch 2, train), component 17: pass 1
        // sees it through its sums (`Sweep::finite`) and reads the batch the polars way. At
        // row 3100 + 900 + 3300 + 456 (epoch 2, test) with `--reference train`, pass 1 only
        // counted the row: pass 2 sees it through its sums.
        for (bad_value, item, row, reference) in [
            (f32::NAN, 2, 1234, ReferenceChoice::Own),
            (f32::NEG_INFINITY, 2, 1234, ReferenceChoice::Own),
            (f32::NAN, 3, 456, ReferenceChoice::Train),
            (f32::INFINITY, 3, 456, ReferenceChoice::Train),
        ] {
            let mut bad = items.clone();
            bad[item].x[[row, 17]] = bad_value;
            let bad_zstd = dir.join("features-badz.parquet");
            write_features(&bad_zstd, &bad).expect("write");
            let bad_path = dir.join("features-bad.parquet");
            rewrite(&bad_zstd, &bad_path);
            let source = Source::open(&bad_path, None, None).expect("open");
            let mut options = MeasureOptions::default();
            options.config.reference = reference;
            let err = measure_file(&source, &options, batch_bytes, &mut |_| {})
                .expect_err("a non-finite value");
            let message = err.to_string();
            let file_row: usize =
                items[..item].iter().map(Features::n_samples).sum::<usize>() + row;
            assert!(
                message.contains(&format!(
                    "non-finite value {bad_value} at row {file_row}, component 17"
                )),
                "{message}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
