//! Partial statistics on disk: the mergeable state of a shard of rows, and their merge.
//!
//! **Why one file (about 1,200 lines).** One versioned on-disk format: its schema and metadata
//! keys, the reader (whose messages name the file, column and row), the merge and the shard job.
//!
//! NC metrics are sums over samples once the class means are fixed (see [`crate::stream`]), so
//! a large study can be measured by many processes, each over a shard of rows, and the states
//! merged. The CLI:
//!
//! ```text
//! neural-collapse stats FILE... --out PART [--shard I/N] [--means MEANS_PART] [--run NAME]
//!                       [--seed S] [--label label|coarse] [--reference own|train]
//!                       [--classifier PATH] [--global-mean class|sample] [--tolerance T]
//! neural-collapse merge PART... [--out PART] [--format table|json|parquet] [--output FILE]
//! ```
//!
//! * `stats` without `--shard`: both passes over each whole FILE; writes a **complete**
//!   partial (pass-1 and pass-2 state of every (epoch, split) group of every FILE).
//! * `stats --shard I/N` (`0 ≤ I < N`): only rows `⌊I·n/N⌋ .. ⌊(I+1)·n/N⌋` of each FILE (`n`
//!   its row count). Without `--means` it writes a **pass-1** partial (counts and f64 sums per
//!   run/layer/epoch/split/class). With `--means MEANS_PART` (a merged pass-1 partial) it
//!   writes a **pass-2** partial: a copy of the means it used and the sums that need them (NC1
//!   numerator, per-class scatter about the reference means, NC4 mismatches). `--means`
//!   without `--shard` measures the whole FILEs against the given means.
//! * Identity: run name and seed come from the FILE's run directory (the directory's name and
//!   `run.json`'s `"seed"`) when a `run.json` sits beside it, else from `--run` / `--seed`; the
//!   layer from the file name `features-<layer>.parquet` (else the file stem); epoch and split
//!   from the file's columns.
//! * Resumption: if `--out PART` exists and is a partial of the same kind for the same inputs
//!   (path, size, modification time, rows, shard, means) and options, and its groups carry the
//!   same run names and seeds, `stats` does nothing and says so on stderr. Partials are written
//!   to a temporary file and renamed, so an interrupted run never leaves a truncated one; `--out`
//!   must be new or a regular file, and not one of the files read.
//! * `merge`: partials in any order (they are sorted by their inputs before summing, so the
//!   order of the arguments does not change a bit; grouping them differently changes the sums
//!   only by rounding). If every group has pass-2 state covering all its rows, it prints the
//!   reports (`table`/`json` as `neural-collapse metrics`, with run, seed and layer; `parquet`
//!   writes one tidy file with columns `run` (str), `seed` (i64, null if unknown), `epoch`
//!   (u32), `split`, `layer`, `metric` (str), `value` (f64) to `--output`) and, with `--out`,
//!   the merged partial. If the merged state is pass-1 only, it writes it to `--out`: the
//!   `MEANS_PART` of the pass-2 shards. The partials' rows must not overlap (the same rows of a
//!   file in two partials, such as a shard given twice, is an error: they would count twice);
//!   `--out` and `--output` must not be one of them, shards of one file must all be measured
//!   with the same classifier (or all without), and a `--means` partial must hold every row of
//!   each of its files (the `merge` of all the pass-1 shards, not one of them). The reader refuses values `stats` cannot
//!   write: class counts outside `1..=2⁵³`, negative or non-finite `scatter` and `nc1_sum`,
//!   more NC4 mismatches than rows.
//! * Results equal `neural-collapse metrics FILE` with the same options up to rounding (within
//!   `1e-12` relative in the tests). `--min-class-samples` is not available for partials.
//!
//! # File format (version 1)
//!
//! A Parquet file (readable with pyarrow: `pq.read_table(PART)`, metadata in
//! `pq.ParquetFile(PART).metadata.metadata`, the file's key-value metadata) with these key-value metadata entries:
//!
//! | key | value |
//! |---|---|
//! | `neural_collapse_partial` | format version, `"1"` |
//! | `neural_collapse_partial_kind` | `"pass1"`, `"pass2"` or `"complete"` |
//! | `neural_collapse_options` | JSON: `label` (`"label"`/`"coarse"`), `reference` (`"own"`/`"train"`), `classifier` (absolute path or null: the job's; merge compares the other options, see below), `global_mean` (`"class_means"`/`"sample_weighted"`), `tolerance` |
//! | `neural_collapse_inputs` | JSON array, one object per input: `path` (absolute), `bytes`, `modified` (seconds since 1970, or null), `rows` (of the file), `start`, `end` (rows measured), `shard` (`[I, N]` or null), `means` (fingerprint of the means partial used, or null); for a merged partial, the union |
//!
//! and one row per group (class null) and one per (group, class):
//!
//! | column | type | group row | class row |
//! |---|---|---|---|
//! | `run` | str, nullable | run name | same |
//! | `seed` | i64, nullable | seed | same |
//! | `layer` | str | layer | same |
//! | `epoch` | u32 | checkpoint | same |
//! | `split` | str | split | same |
//! | `class` | u32, nullable | null | the label `c` |
//! | `dim` | u32, nullable | feature dimension `d` | null |
//! | `count` | u64, nullable | null | `n_c`: rows of class `c` (pass 1) |
//! | `sum` | list of f64, nullable | null | `Σ_{y_i=c} h_i` (`d` values, pass 1) |
//! | `scatter` | f64, nullable | null | `Σ_{y_i=c} ‖h_i − m_c‖²` about the reference means (pass 2; null in a pass-1 partial) |
//! | `pass2_rows` | u64, nullable | rows measured in pass 2 (null: none) | null |
//! | `nc1_sum` | f64, nullable | `Σ_i ‖P_Kᵀ(h_i − m_{y_i})‖²` (pass 2) | null |
//! | `nc4_mismatches` | u64, nullable | NC4 mismatches (null: NC4 not measured) | null |
//! | `means_id` | str, nullable | fingerprint of the means pass 2 used (the group's pass-1 state, and the train group's for `--reference train`) | null |
//! | `classifier` | str, nullable | absolute path of the classifier file pass 2 used (null: none) | null |
//! | `classifier_id` | str, nullable | fingerprint of that classifier's `W` and `b` at the group's epoch ([`classifier_id`]; absent in partials written before it) | null |
//!
//! **Classifiers are per group.** Each run has its own `classifier.parquet`, so the classifier
//! is recorded on each group row and `merge` compares the other options only: partials of
//! different runs, each measured with its own `--classifier`, merge into one study (a group
//! measured with two different classifiers is refused). The reports read each group's `W` from
//! its classifier file (NC2 of `W`, NC3), which must still be there at `merge` time, with the
//! content pass 2 measured NC4 with: `merge` compares the fingerprints and refuses a classifier
//! rewritten in between ([`PartialError::ClassifierChanged`]), and `stats` does not resume
//! from a partial measured with other weights.
//!
//! In a pass-1 partial the counts and sums are those of the partial's rows (they add up over
//! shards). In a pass-2 partial they are the merged means the shard was measured against
//! (identical in every shard: merge checks the fingerprints and keeps one copy) while the
//! pass-2 columns are the shard's. A complete partial holds both for whole files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::features::{read_guarded, FeatureError, LabelColumn};
use crate::metrics::{MeasureOptions, MetricError, NcConfig, NcReport, ReferenceChoice};
use crate::stats::GlobalMean;
use crate::stream::{ClassSums, GroupKey, ResidualSums, StreamError};

/// The format version written in `neural_collapse_partial`.
pub const FORMAT_VERSION: &str = "1";
/// Metadata key of the format version.
pub const KEY_VERSION: &str = "neural_collapse_partial";
/// Metadata key of the kind.
pub const KEY_KIND: &str = "neural_collapse_partial_kind";
/// Metadata key of the options (JSON).
pub const KEY_OPTIONS: &str = "neural_collapse_options";
/// Metadata key of the inputs (JSON).
pub const KEY_INPUTS: &str = "neural_collapse_inputs";

/// Bad or mismatched partials, and incomplete statistics.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PartialError {
    /// A file that is not a partial of a supported version, or a malformed column or value.
    #[error("{path}: {problem}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// Partials made with different options cannot be merged.
    #[error("{path} was made with options {found}, but {expected}: merge partials made with the same options")]
    Options {
        /// The partial that differs.
        path: String,
        /// Its options (JSON).
        found: String,
        /// The other side and its options: `"FIRST with {…}"`.
        expected: String,
    },
    /// Pass-1 and pass-2 partials given together.
    #[error("cannot merge a {a} partial with a {b} partial ({path}): merge the pass-1 partials into a means partial first")]
    Kinds {
        /// One kind.
        a: String,
        /// The other kind.
        b: String,
        /// The partial of kind `b`.
        path: String,
    },
    /// The same group was measured against different means.
    #[error("{group}: {path} was measured against class means {b}, the partials merged before it against {a}; make every pass-2 shard with the same --means")]
    DifferentMeans {
        /// The group.
        group: String,
        /// The fingerprint of the means merged so far.
        a: String,
        /// That of `path`'s.
        b: String,
        /// The partial that disagrees.
        path: String,
    },
    /// The same group was measured with two classifiers.
    #[error(
        "{group}: {path} was measured with classifier {b}, the partials merged before it with {a}"
    )]
    DifferentClassifiers {
        /// The group (or one group of the same file, run, seed and layer).
        group: String,
        /// The classifier file of the partials merged so far.
        a: String,
        /// That of `path`.
        b: String,
        /// The partial that disagrees.
        path: String,
    },
    /// A classifier file whose content has changed since pass 2 measured with it.
    #[error("{path}: the classifier at epoch {epoch} has changed since the partials were measured with it (content {now}, then {then}): run `stats` again with it")]
    ClassifierChanged {
        /// The classifier file.
        path: String,
        /// The epoch whose weights differ.
        epoch: u32,
        /// The fingerprint recorded in the partial.
        then: String,
        /// The file's now.
        now: String,
    },
    /// A bad `--shard` value.
    #[error("--shard {0}: expected I/N with 0 ≤ I < N")]
    Shard(String),
    /// Reading a feature, classifier or partial file.
    #[error(transparent)]
    Features(#[from] FeatureError),
    /// Bad input to a statistic or metric.
    #[error(transparent)]
    Metric(#[from] MetricError),
    /// The streamed passes ([`crate::stream`]): a shard's rows, missing means or references.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// An error while processing one part of a job: `context` says which.
    #[error("{context}: {source}")]
    Context {
        /// Which part failed.
        context: String,
        /// What went wrong there.
        #[source]
        source: Box<PartialError>,
    },
}

impl PartialError {
    /// Wraps this error with a description of where it happened.
    pub fn context(self, context: impl Into<String>) -> Self {
        PartialError::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }
}

/// Result of the partial statistics: [`PartialError`] by default.
type Result<T, E = PartialError> = std::result::Result<T, E>;

/// The options of a partial (those of [`MeasureOptions`] that change the statistics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialOptions {
    /// The label column the classes come from; `"label"` or `"coarse"` on disk (any other
    /// value is a malformed partial).
    pub label: LabelColumn,
    /// Own or train means; `"own"` or `"train"` on disk.
    pub reference: ReferenceChoice,
    /// Absolute path of the classifier file, if any.
    pub classifier: Option<String>,
    /// Global-mean convention.
    pub global_mean: GlobalMean,
    /// Relative eigenvalue tolerance of `Σ_B†`.
    pub tolerance: f64,
}

impl PartialOptions {
    /// Whether two partials' statistics can be added: every option but the classifier, which is
    /// recorded per group.
    pub fn same_statistics(&self, other: &PartialOptions) -> bool {
        PartialOptions {
            classifier: None,
            ..self.clone()
        } == PartialOptions {
            classifier: None,
            ..other.clone()
        }
    }

    /// From measurement options (the classifier path made absolute).
    pub fn from_measure(o: &MeasureOptions) -> Self {
        Self {
            label: o.labels,
            reference: o.config.reference,
            classifier: o.classifier.as_ref().map(|p| {
                std::fs::canonicalize(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            }),
            global_mean: o.config.global_mean,
            tolerance: o.config.tolerance,
        }
    }

    /// Back to measurement options (no epoch/split filter).
    pub fn to_measure(&self) -> MeasureOptions {
        MeasureOptions {
            labels: self.label,
            config: NcConfig {
                reference: self.reference,
                global_mean: self.global_mean,
                tolerance: self.tolerance,
            },
            classifier: self.classifier.as_ref().map(PathBuf::from),
            ..MeasureOptions::default()
        }
    }
}

/// One input of a partial: which rows of which file, and against which means.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Input {
    /// Absolute path of the feature file.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its modification time (seconds since 1970), when known.
    pub modified: Option<u64>,
    /// Its rows.
    pub rows: u64,
    /// First row measured.
    pub start: u64,
    /// One past the last row measured.
    pub end: u64,
    /// `(I, N)` of `--shard I/N`.
    pub shard: Option<(u64, u64)>,
    /// Fingerprint of the means partial used (pass 2).
    pub means: Option<String>,
}

impl Input {
    /// Describes `path` (its size and modification time) for rows `start..end` of `rows`.
    ///
    /// # Errors
    /// [`crate::features::FeatureError::Io`] if the file's metadata cannot be read.
    pub fn of(path: &Path, rows: u64, range: std::ops::Range<u64>) -> Result<Self> {
        let io = |source| crate::features::FeatureError::Io {
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let abs = std::fs::canonicalize(path).map_err(io)?;
        Ok(Self {
            path: abs.display().to_string(),
            bytes: meta.len(),
            modified: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            rows,
            start: range.start,
            end: range.end,
            shard: None,
            means: None,
        })
    }
}

/// What a partial holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Counts and sums of a set of rows (adds up over shards).
    Pass1,
    /// Fixed means plus the pass-2 sums of a set of rows against them.
    Pass2,
    /// Both passes over whole files.
    Complete,
}

impl Kind {
    /// `"pass1"`, `"pass2"`, `"complete"`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pass1 => "pass1",
            Kind::Pass2 => "pass2",
            Kind::Complete => "complete",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "pass1" => Some(Kind::Pass1),
            "pass2" => Some(Kind::Pass2),
            "complete" => Some(Kind::Complete),
            _ => None,
        }
    }
}

/// The mergeable state of a set of rows (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    /// What it holds.
    pub kind: Kind,
    /// The options it was made with.
    pub options: PartialOptions,
    /// Its inputs, sorted.
    pub inputs: Vec<Input>,
    /// Pass-1 state per group (additive for [`Kind::Pass1`], the fixed means otherwise).
    pub means: BTreeMap<GroupKey, ClassSums>,
    /// Pass-2 state per group, with the fingerprint of the means it was measured against.
    pub sums: BTreeMap<GroupKey, (String, ResidualSums)>,
    /// The classifier file of each group measured with one (pass 2).
    pub classifiers: BTreeMap<GroupKey, String>,
    /// The fingerprint of the classifier each of those groups was measured with
    /// ([`classifier_id`] of its weights and biases at the group's epoch): `merge` refuses to
    /// report NC2 of `W` and NC3 from a classifier file that has changed since pass 2 measured
    /// NC4 with it, and a resumption recomputes. Absent in partials written before this field.
    pub classifier_ids: BTreeMap<GroupKey, String>,
}

/// The fingerprint of a classifier's content: the first 8 bytes of the SHA-256 of its shape,
/// weights and biases (as f64 bits), in hex.
pub fn classifier_id(c: &crate::features::Classifier) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((c.w.nrows() as u64).to_le_bytes());
    h.update((c.w.ncols() as u64).to_le_bytes());
    for v in c.w.iter().chain(c.b.iter()) {
        h.update(v.to_bits().to_le_bytes());
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fingerprints of `path`'s classifier at the epochs of `keys`, read once per epoch.
fn classifier_ids_now<'a>(
    path: &str,
    keys: impl Iterator<Item = &'a GroupKey>,
) -> Result<BTreeMap<u32, String>> {
    let mut ids = BTreeMap::new();
    for k in keys {
        if let std::collections::btree_map::Entry::Vacant(e) = ids.entry(k.epoch) {
            e.insert(classifier_id(&crate::features::read_classifier(
                path, k.epoch,
            )?));
        }
    }
    Ok(ids)
}

/// The fingerprint of the means a group's pass 2 uses: its own pass-1 state, and the train
/// group's for `--reference train` (a split other than train).
pub fn means_id(
    means: &BTreeMap<GroupKey, ClassSums>,
    key: &GroupKey,
    options: &PartialOptions,
) -> String {
    let own = means
        .get(key)
        .map_or_else(String::new, ClassSums::fingerprint);
    if options.reference == ReferenceChoice::Train && key.split != "train" {
        let train = means
            .get(&key.train())
            .map_or_else(String::new, ClassSums::fingerprint);
        format!("{own}+{train}")
    } else {
        own
    }
}

/// Fingerprint of a whole pass-1 state (for [`Input::means`]).
pub fn state_id(means: &BTreeMap<GroupKey, ClassSums>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in means {
        h.update(format!("{k:?}").as_bytes());
        h.update(v.fingerprint().as_bytes());
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Partial {
    /// Merges partials (see the module docs): sorted by their inputs first, so the order of
    /// `parts` does not matter.
    ///
    /// # Errors
    /// [`PartialError::Options`], [`PartialError::Kinds`], [`PartialError::DifferentMeans`],
    /// [`StreamError::Nc4Mixed`], and dimension mismatches.
    pub fn merge_all(mut parts: Vec<(String, Partial)>) -> Result<Partial> {
        parts.sort_by(|a, b| {
            a.1.inputs
                .cmp(&b.1.inputs)
                .then_with(|| a.1.kind.name().cmp(b.1.kind.name()))
        });
        let mut iter = parts.into_iter();
        let Some((first_path, mut acc)) = iter.next() else {
            return Err(PartialError::Format {
                path: String::new(),
                problem: "no partials to merge".into(),
            });
        };
        for (path, p) in iter {
            acc.merge(&p, &first_path, &path)?;
        }
        acc.inputs.sort();
        Ok(acc)
    }

    /// Adds `other` into `self` (`first` and `path` name them in errors).
    fn merge(&mut self, other: &Partial, first: &str, path: &str) -> Result<()> {
        let additive = |k: Kind| k == Kind::Pass1;
        if additive(self.kind) != additive(other.kind) {
            return Err(PartialError::Kinds {
                a: self.kind.name().into(),
                b: other.kind.name().into(),
                path: path.to_string(),
            });
        }
        if !other.options.same_statistics(&self.options) {
            let json = |o: &PartialOptions| serde_json::to_string(o).unwrap_or_default();
            return Err(PartialError::Options {
                path: path.to_string(),
                found: json(&other.options),
                expected: format!("{first} with {}", json(&self.options)),
            });
        }
        if additive(self.kind) {
            for (k, v) in &other.means {
                match self.means.get_mut(k) {
                    Some(acc) => acc.merge(v)?,
                    None => {
                        self.means.insert(k.clone(), v.clone());
                    }
                }
            }
        } else {
            for (k, v) in &other.means {
                match self.means.get(k) {
                    Some(acc) if acc.fingerprint() != v.fingerprint() => {
                        return Err(PartialError::DifferentMeans {
                            group: k.describe(),
                            a: acc.fingerprint(),
                            b: v.fingerprint(),
                            path: path.to_string(),
                        })
                    }
                    Some(_) => {}
                    None => {
                        self.means.insert(k.clone(), v.clone());
                    }
                }
            }
            // Shards of one file (run, seed, layer) measured with and without a classifier, or
            // with two: the groups of one shard would have NC3 and NC4, the others' not.
            // (A classifier is its file and, when recorded, its content at the group's epoch.)
            let file = |k: &GroupKey| (k.run.clone(), k.seed, k.layer.clone());
            let who = |p: &Partial, k: &GroupKey| match p.classifiers.get(k) {
                None => "none (no --classifier)".to_string(),
                Some(c) => match p.classifier_ids.get(k) {
                    Some(id) => format!("{c} (content {id} at epoch {})", k.epoch),
                    None => c.clone(),
                },
            };
            let same = |a: &Partial, ka: &GroupKey, b: &Partial, kb: &GroupKey| {
                a.classifiers.get(ka) == b.classifiers.get(kb)
                    && (ka.epoch != kb.epoch
                        || !a.classifier_ids.contains_key(ka)
                        || !b.classifier_ids.contains_key(kb)
                        || a.classifier_ids.get(ka) == b.classifier_ids.get(kb))
            };
            for k in other.sums.keys() {
                if let Some(k2) = self
                    .sums
                    .keys()
                    .find(|k2| file(k2) == file(k) && !same(self, k2, other, k))
                {
                    return Err(PartialError::DifferentClassifiers {
                        group: k.describe(),
                        a: who(self, k2),
                        b: who(other, k),
                        path: path.to_string(),
                    });
                }
            }
            for (k, (id, v)) in &other.sums {
                match self.sums.get_mut(k) {
                    Some((aid, _)) if aid != id => {
                        return Err(PartialError::DifferentMeans {
                            group: k.describe(),
                            a: aid.clone(),
                            b: id.clone(),
                            path: path.to_string(),
                        })
                    }
                    Some((_, acc)) => acc.merge(v)?,
                    None => {
                        self.sums.insert(k.clone(), (id.clone(), v.clone()));
                    }
                }
            }
            for (k, c) in &other.classifiers {
                match self.classifiers.get(k) {
                    Some(_) if !same(self, k, other, k) => {
                        return Err(PartialError::DifferentClassifiers {
                            group: k.describe(),
                            a: who(self, k),
                            b: who(other, k),
                            path: path.to_string(),
                        })
                    }
                    Some(_) => {}
                    None => {
                        self.classifiers.insert(k.clone(), c.clone());
                    }
                }
                if let Some(id) = other.classifier_ids.get(k) {
                    self.classifier_ids
                        .entry(k.clone())
                        .or_insert_with(|| id.clone());
                }
            }
            if other.kind == Kind::Pass2 {
                self.kind = Kind::Pass2;
            }
        }
        // The same rows twice (a shard, or a whole partial, given twice) would be counted
        // twice: the inputs of partials that merge are disjoint row ranges of their files.
        for b in &other.inputs {
            if let Some(a) = self
                .inputs
                .iter()
                .find(|a| a.path == b.path && a.start < b.end && b.start < a.end)
            {
                return Err(PartialError::Format {
                    path: path.to_string(),
                    problem: format!(
                        "rows {}..{} of {} are also in the partials merged before it (from {first}): the same rows given twice?",
                        a.start.max(b.start),
                        a.end.min(b.end),
                        b.path
                    ),
                });
            }
        }
        self.inputs.extend(other.inputs.iter().cloned());
        Ok(())
    }

    /// Whether every group with means has pass-2 sums (so reports can be made).
    pub fn has_pass2(&self) -> bool {
        self.kind != Kind::Pass1 && !self.sums.is_empty()
    }

    /// The reports of every group with pass-2 sums, in key order (run, seed, layer, epoch,
    /// split).
    ///
    /// # Errors
    /// [`StreamError::IncompletePass`] when a group's pass-2 sums do not cover its rows; the
    /// metric errors of [`crate::metrics::NcParams::measure`].
    pub fn reports(&self) -> Result<Vec<(GroupKey, NcReport)>> {
        let options = self.options.to_measure();
        // Every group of the means is measured by some pass-2 shard (a group wholly inside a
        // missing shard has no sums at all).
        if let Some((key, m)) = self.means.iter().find(|(k, _)| !self.sums.contains_key(*k)) {
            return Err(StreamError::IncompletePass {
                group: key.describe(),
                rows: 0,
                expected: m.rows(),
            }
            .into());
        }
        // Groups by classifier file (each run has its own).
        let mut by_classifier: BTreeMap<Option<&String>, BTreeMap<GroupKey, ResidualSums>> =
            BTreeMap::new();
        for (k, (_, s)) in &self.sums {
            by_classifier
                .entry(self.classifiers.get(k))
                .or_default()
                .insert(k.clone(), s.clone());
        }
        let mut out = Vec::with_capacity(self.sums.len());
        for (classifier, sums) in by_classifier {
            if let Some(path) = classifier {
                self.check_classifier_unchanged(path, sums.keys())?;
            }
            let options = MeasureOptions {
                classifier: classifier.map(PathBuf::from),
                ..options.clone()
            };
            let reports = crate::stream::reports(&self.means, &sums, &options, "")?;
            out.extend(sums.into_keys().zip(reports));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// [`PartialError::ClassifierChanged`] when `path`'s classifier at the epoch of one of
    /// `keys` is not the one recorded for it (NC4 was measured with the recorded one; NC2 of
    /// `W` and NC3 would come from the file as it is now).
    fn check_classifier_unchanged<'a>(
        &self,
        path: &str,
        keys: impl Iterator<Item = &'a GroupKey>,
    ) -> Result<()> {
        let recorded: Vec<&GroupKey> = keys
            .filter(|k| self.classifier_ids.contains_key(*k))
            .collect();
        let now = classifier_ids_now(path, recorded.iter().copied())?;
        for k in recorded {
            let then = &self.classifier_ids[k];
            if &now[&k.epoch] != then {
                return Err(PartialError::ClassifierChanged {
                    path: path.to_string(),
                    epoch: k.epoch,
                    then: then.clone(),
                    now: now[&k.epoch].clone(),
                });
            }
        }
        Ok(())
    }

    /// Writes the partial to `path` (through a temporary file renamed into place).
    ///
    /// # Errors
    /// [`crate::features::FeatureError::Io`] / [`crate::features::FeatureError::Polars`].
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut df = self.frame().map_err(|e| polars_err(path, e))?;
        let kv = vec![
            (KEY_VERSION.to_string(), FORMAT_VERSION.to_string()),
            (KEY_KIND.to_string(), self.kind.name().to_string()),
            (
                KEY_OPTIONS.to_string(),
                serde_json::to_string(&self.options).unwrap_or_default(),
            ),
            (
                KEY_INPUTS.to_string(),
                serde_json::to_string(&self.inputs).unwrap_or_default(),
            ),
        ];
        let io = |source| crate::features::FeatureError::Io {
            path: path.display().to_string(),
            source,
        };
        // The rename below would replace whatever `path` is: only a regular file (or nothing).
        if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "exists and is not a regular file (a partial is written to a new or regular file)",
            ))
            .into());
        }
        let tmp = tmp_path(path);
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let written = ParquetWriter::new(file)
            .with_key_value_metadata(Some(KeyValueMetadata::from_static(kv)))
            .finish(&mut df)
            .map_err(|e| polars_err(path, e));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(())
    }

    fn frame(&self) -> PolarsResult<DataFrame> {
        let mut run: Vec<Option<String>> = Vec::new();
        let mut seed: Vec<Option<i64>> = Vec::new();
        let mut layer: Vec<String> = Vec::new();
        let mut epoch: Vec<u32> = Vec::new();
        let mut split: Vec<String> = Vec::new();
        let mut class: Vec<Option<u32>> = Vec::new();
        let mut dim: Vec<Option<u32>> = Vec::new();
        let mut count: Vec<Option<u64>> = Vec::new();
        let mut sum: Vec<Option<Series>> = Vec::new();
        let mut scatter: Vec<Option<f64>> = Vec::new();
        let mut pass2_rows: Vec<Option<u64>> = Vec::new();
        let mut nc1_sum: Vec<Option<f64>> = Vec::new();
        let mut nc4: Vec<Option<u64>> = Vec::new();
        let mut mid: Vec<Option<String>> = Vec::new();
        let mut clf: Vec<Option<String>> = Vec::new();
        let mut clf_id: Vec<Option<String>> = Vec::new();
        for (key, m) in &self.means {
            let s = self.sums.get(key);
            let mut push_key = || {
                run.push(key.run.clone());
                seed.push(key.seed);
                layer.push(key.layer.clone());
                epoch.push(key.epoch);
                split.push(key.split.clone());
            };
            push_key();
            class.push(None);
            dim.push(Some(m.dim() as u32));
            count.push(None);
            sum.push(None);
            scatter.push(None);
            pass2_rows.push(s.map(|(_, v)| v.rows));
            nc1_sum.push(s.map(|(_, v)| v.nc1_sum));
            nc4.push(s.and_then(|(_, v)| v.nc4_mismatches));
            mid.push(s.map(|(id, _)| id.clone()));
            clf.push(self.classifiers.get(key).cloned());
            clf_id.push(self.classifier_ids.get(key).cloned());
            for (c, n, values) in m.classes() {
                push_key();
                class.push(Some(c));
                dim.push(None);
                count.push(Some(n));
                sum.push(Some(Series::new("".into(), values)));
                scatter.push(s.and_then(|(_, v)| v.scatter.get(c as usize).copied()));
                pass2_rows.push(None);
                nc1_sum.push(None);
                nc4.push(None);
                mid.push(None);
                clf.push(None);
                clf_id.push(None);
            }
        }
        let sum: ListChunked = sum.into_iter().collect();
        DataFrame::new(vec![
            Column::new("run".into(), run),
            Column::new("seed".into(), seed),
            Column::new("layer".into(), layer),
            Column::new("epoch".into(), epoch),
            Column::new("split".into(), split),
            Column::new("class".into(), class),
            Column::new("dim".into(), dim),
            Column::new("count".into(), count),
            sum.with_name("sum".into()).into_series().into(),
            Column::new("scatter".into(), scatter),
            Column::new("pass2_rows".into(), pass2_rows),
            Column::new("nc1_sum".into(), nc1_sum),
            Column::new("nc4_mismatches".into(), nc4),
            Column::new("means_id".into(), mid),
            Column::new("classifier".into(), clf),
            Column::new("classifier_id".into(), clf_id),
        ])
    }

    /// Reads the metadata of a partial (kind, options, inputs) without its rows.
    ///
    /// # Errors
    /// [`PartialError::Format`] if `path` is not a partial of a supported version.
    pub fn read_header(path: &Path) -> Result<(Kind, PartialOptions, Vec<Input>)> {
        let shown = path.display().to_string();
        let bad = |problem: String| -> PartialError {
            PartialError::Format {
                path: shown.clone(),
                problem,
            }
        };
        let meta = std::fs::metadata(path).map_err(|source| crate::features::FeatureError::Io {
            path: shown.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        // The counts of the footer and page headers first: polars trusts them, and a damaged
        // one can abort the process (see `features::pages`).
        crate::features::pages::check_page_headers(path)?;
        let file =
            std::fs::File::open(path).map_err(|source| crate::features::FeatureError::Io {
                path: shown.clone(),
                source,
            })?;
        let mut reader = ParquetReader::new(file);
        let md = read_guarded(|| reader.get_metadata().cloned())
            .map_err(|e| bad(format!("not a Parquet file ({e})")))?;
        let kv: BTreeMap<String, String> = md
            .key_value_metadata()
            .iter()
            .flatten()
            .filter_map(|kv| kv.value.clone().map(|v| (kv.key.clone(), v)))
            .collect();
        let version = kv.get(KEY_VERSION).ok_or_else(|| {
            bad(format!(
                "not a neural-collapse partial (no `{KEY_VERSION}` key in the Parquet metadata)"
            ))
        })?;
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "partial format version {version:?}; this program reads version {FORMAT_VERSION:?}"
            )));
        }
        let kind = kv
            .get(KEY_KIND)
            .and_then(|k| Kind::parse(k))
            .ok_or_else(|| {
                bad(format!(
                    "`{KEY_KIND}` missing or not pass1, pass2 or complete"
                ))
            })?;
        let options: PartialOptions = kv
            .get(KEY_OPTIONS)
            .ok_or_else(|| bad(format!("`{KEY_OPTIONS}` missing")))
            .and_then(|j| {
                serde_json::from_str(j).map_err(|e| bad(format!("`{KEY_OPTIONS}`: {e}")))
            })?;
        let inputs: Vec<Input> = kv
            .get(KEY_INPUTS)
            .ok_or_else(|| bad(format!("`{KEY_INPUTS}` missing")))
            .and_then(|j| {
                serde_json::from_str(j).map_err(|e| bad(format!("`{KEY_INPUTS}`: {e}")))
            })?;
        // A column name twice: polars reads the first and ignores the other, so which one the
        // writer meant is unknown.
        let mut seen = std::collections::BTreeSet::new();
        if let Some(field) = md.schema().fields().iter().find(|f| !seen.insert(f.name())) {
            return Err(bad(format!(
                "column `{}` appears more than once",
                field.name()
            )));
        }
        Ok((kind, options, inputs))
    }

    /// Reads a partial.
    ///
    /// # Errors
    /// [`PartialError::Format`] naming the file, column and row of a malformed value.
    pub fn read(path: &Path) -> Result<Partial> {
        let (kind, options, inputs) = Self::read_header(path)?;
        let shown = path.display().to_string();
        let file =
            std::fs::File::open(path).map_err(|source| crate::features::FeatureError::Io {
                path: shown.clone(),
                source,
            })?;
        let df =
            read_guarded(|| ParquetReader::new(file).finish()).map_err(|e| polars_err(path, e))?;
        let bad = |problem: String| -> PartialError {
            PartialError::Format {
                path: shown.clone(),
                problem,
            }
        };
        let col = |name: &str, dt: DataType| -> Result<Series> {
            let c = df
                .column(name)
                .map_err(|_| bad(format!("column `{name}` is missing")))?;
            // The type written, up to its width: a string column is not read as numbers (nor
            // numbers as strings), nor floats as integers.
            let same_kind = match (&dt, c.dtype()) {
                (_, DataType::Null) => true,
                (DataType::String, found) => found.is_string(),
                (DataType::List(_), DataType::List(inner)) => inner.is_float(),
                (want, found) if want.is_integer() => found.is_integer(),
                (want, found) if want.is_float() => found.is_float(),
                _ => false,
            };
            if !same_kind {
                return Err(bad(format!(
                    "column `{name}` has type {}, expected {dt}",
                    c.dtype()
                )));
            }
            let series = c
                .as_materialized_series()
                .strict_cast(&dt)
                .map_err(|e| bad(format!("column `{name}`: {e}")))?;
            // polars can hand back a damaged file's column shorter than the frame.
            if series.len() != df.height() {
                return Err(bad(format!(
                    "column `{name}` has {} values for {} rows (the file is damaged)",
                    series.len(),
                    df.height()
                )));
            }
            Ok(series)
        };
        let run = col("run", DataType::String)?;
        let seed = col("seed", DataType::Int64)?;
        let layer = col("layer", DataType::String)?;
        let epoch = col("epoch", DataType::UInt32)?;
        let split = col("split", DataType::String)?;
        let class = col("class", DataType::UInt32)?;
        let dim = col("dim", DataType::UInt32)?;
        let count = col("count", DataType::UInt64)?;
        let sum = col("sum", DataType::List(Box::new(DataType::Float64)))?;
        let scatter = col("scatter", DataType::Float64)?;
        let p2 = col("pass2_rows", DataType::UInt64)?;
        let nc1 = col("nc1_sum", DataType::Float64)?;
        let nc4 = col("nc4_mismatches", DataType::UInt64)?;
        let mid = col("means_id", DataType::String)?;
        // `classifier` may be absent (no group measured with one).
        let clf = match df.column("classifier") {
            Ok(_) => col("classifier", DataType::String)?,
            Err(_) => Series::full_null("classifier".into(), df.height(), &DataType::String),
        };
        // `classifier_id` is absent in partials written before it.
        let clf_id = match df.column("classifier_id") {
            Ok(_) => col("classifier_id", DataType::String)?,
            Err(_) => Series::full_null("classifier_id".into(), df.height(), &DataType::String),
        };
        let pe = |e: PolarsError| bad(e.to_string());
        let (run, seed, layer, epoch, split) = (
            run.str().map_err(pe)?,
            seed.i64().map_err(pe)?,
            layer.str().map_err(pe)?,
            epoch.u32().map_err(pe)?,
            split.str().map_err(pe)?,
        );
        let (class, dim, count, sum, scatter) = (
            class.u32().map_err(pe)?,
            dim.u32().map_err(pe)?,
            count.u64().map_err(pe)?,
            sum.list().map_err(pe)?,
            scatter.f64().map_err(pe)?,
        );
        let (p2, nc1, nc4, mid, clf) = (
            p2.u64().map_err(pe)?,
            nc1.f64().map_err(pe)?,
            nc4.u64().map_err(pe)?,
            mid.str().map_err(pe)?,
            clf.str().map_err(pe)?,
        );
        let clf_id = clf_id.str().map_err(pe)?;
        let mut classifiers = BTreeMap::new();
        let mut classifier_ids = BTreeMap::new();
        struct Group {
            dim: usize,
            classes: BTreeMap<u32, (u64, Vec<f64>)>,
            scatter: BTreeMap<u32, f64>,
            pass2: Option<(String, u64, f64, Option<u64>)>,
        }
        let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
        fn need<T>(v: Option<T>, column: &str, row: usize, path: &str) -> Result<T> {
            v.ok_or_else(|| PartialError::Format {
                path: path.to_string(),
                problem: format!("column `{column}` is null at row {row}"),
            })
        }
        for i in 0..df.height() {
            let key = GroupKey {
                run: run.get(i).map(str::to_string),
                seed: seed.get(i),
                layer: need(layer.get(i), "layer", i, &shown)?.to_string(),
                epoch: need(epoch.get(i), "epoch", i, &shown)?,
                split: need(split.get(i), "split", i, &shown)?.to_string(),
            };
            match class.get(i) {
                None => {
                    let d = need(dim.get(i), "dim", i, &shown)? as usize;
                    let pass2 = match p2.get(i) {
                        Some(rows) => {
                            if rows > MAX_COUNT {
                                return Err(bad(format!(
                                    "column `pass2_rows` is {rows} at row {i} (at most 2^53)"
                                )));
                            }
                            let nc1_sum = need(nc1.get(i), "nc1_sum", i, &shown)?;
                            // A sum of weighted squares, and a count of some of the rows.
                            if !(nc1_sum.is_finite() && nc1_sum >= 0.0) {
                                return Err(bad(format!(
                                    "column `nc1_sum` is {nc1_sum} at row {i} (a sum of squares: finite, ≥ 0)"
                                )));
                            }
                            if let Some(m) = nc4.get(i).filter(|&m| m > rows) {
                                return Err(bad(format!(
                                    "column `nc4_mismatches` is {m} at row {i}, more than its {rows} rows"
                                )));
                            }
                            Some((
                                need(mid.get(i), "means_id", i, &shown)?.to_string(),
                                rows,
                                nc1_sum,
                                nc4.get(i),
                            ))
                        }
                        None => None,
                    };
                    let g = groups.entry(key.clone()).or_insert(Group {
                        dim: d,
                        classes: BTreeMap::new(),
                        scatter: BTreeMap::new(),
                        pass2: None,
                    });
                    if g.pass2.is_some() || (g.dim != d && !g.classes.is_empty()) {
                        return Err(bad(format!(
                            "group {} appears twice (row {i})",
                            key.describe()
                        )));
                    }
                    g.dim = d;
                    g.pass2 = pass2;
                    if let Some(c) = clf.get(i) {
                        classifiers.insert(key.clone(), c.to_string());
                        if let Some(id) = clf_id.get(i) {
                            classifier_ids.insert(key.clone(), id.to_string());
                        }
                    }
                }
                Some(c) => {
                    let n = need(count.get(i), "count", i, &shown)?;
                    // A class row counts its samples: at least one, and at most 2⁵³ (so that
                    // counts add up exactly, also as f64).
                    if !(1..=MAX_COUNT).contains(&n) {
                        return Err(bad(format!(
                            "column `count` is {n} at row {i} (a class's samples: 1 to 2^53)"
                        )));
                    }
                    let values: Vec<f64> = need(sum.get_as_series(i), "sum", i, &shown)?
                        .f64()
                        .map_err(pe)?
                        .into_iter()
                        .map(|v| {
                            v.ok_or_else(|| bad(format!("column `sum` holds a null at row {i}")))
                        })
                        .collect::<Result<_>>()?;
                    if values.iter().any(|v| !v.is_finite()) {
                        return Err(bad(format!("column `sum` is not finite at row {i}")));
                    }
                    let g = groups.entry(key.clone()).or_insert(Group {
                        dim: values.len(),
                        classes: BTreeMap::new(),
                        scatter: BTreeMap::new(),
                        pass2: None,
                    });
                    if g.classes.insert(c, (n, values)).is_some() {
                        return Err(bad(format!(
                            "class {c} of group {} appears twice (row {i})",
                            key.describe()
                        )));
                    }
                    if let Some(v) = scatter.get(i) {
                        // A sum of squared distances: finite and not negative.
                        if !(v.is_finite() && v >= 0.0) {
                            return Err(bad(format!(
                                "column `scatter` is {v} at row {i} (a sum of squares: finite, ≥ 0)"
                            )));
                        }
                        g.scatter.insert(c, v);
                    }
                }
            }
        }
        let mut means = BTreeMap::new();
        let mut sums = BTreeMap::new();
        for (key, g) in groups {
            if let Some((c, (_, v))) = g.classes.iter().find(|(_, (_, v))| v.len() != g.dim) {
                return Err(bad(format!(
                    "group {}: class {c} has {} sums but the dimension is {}",
                    key.describe(),
                    v.len(),
                    g.dim
                )));
            }
            if let Some((id, rows, nc1_sum, nc4)) = g.pass2 {
                let classes = g.scatter.keys().next_back().map_or(0, |&c| c as usize + 1);
                if g.scatter.len() != classes {
                    return Err(bad(format!(
                        "group {}: `scatter` is missing for some class below {classes}",
                        key.describe()
                    )));
                }
                sums.insert(
                    key.clone(),
                    (
                        id,
                        ResidualSums {
                            rows,
                            nc1_sum,
                            scatter: g.scatter.into_values().collect(),
                            nc4_mismatches: nc4,
                        },
                    ),
                );
            }
            means.insert(key, ClassSums::from_classes(g.dim, g.classes));
        }
        if kind == Kind::Pass1 && !sums.is_empty() {
            return Err(bad("a pass-1 partial with pass-2 columns".into()));
        }
        Ok(Partial {
            kind,
            options,
            inputs,
            means,
            sums,
            classifiers,
            classifier_ids,
        })
    }
}

fn polars_err(path: &Path, e: PolarsError) -> PartialError {
    crate::features::FeatureError::Polars {
        path: path.display().to_string(),
        message: e.to_string(),
    }
    .into()
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Parses `--shard I/N`.
///
/// # Errors
/// [`PartialError::Shard`] unless `I` and `N` are plain decimal numbers (digits only: no sign,
/// no spaces) with `0 ≤ I < N`.
pub fn parse_shard(s: &str) -> Result<(u64, u64)> {
    let bad = || PartialError::Shard(s.to_string());
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let number = |t: &str| -> Result<u64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let (i, n) = (number(i)?, number(n)?);
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The tidy table of reports: `run` (str, nullable), `seed` (i64, nullable), `epoch` (u32),
/// `split`, `layer`, `metric` (str), `value` (f64); one row per report and metric of
/// [`NcReport::metrics`].
///
/// # Errors
/// Only if polars fails to build the frame.
pub fn tidy_reports(reports: &[(GroupKey, NcReport)]) -> Result<DataFrame> {
    let (mut run, mut seed, mut epoch, mut split, mut layer, mut metric, mut value) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (k, r) in reports {
        for (m, v) in r.metrics() {
            run.push(k.run.clone());
            seed.push(k.seed);
            epoch.push(k.epoch);
            split.push(k.split.clone());
            layer.push(k.layer.clone());
            metric.push(m.name());
            value.push(v);
        }
    }
    DataFrame::new(vec![
        Column::new("run".into(), run),
        Column::new("seed".into(), seed),
        Column::new("epoch".into(), epoch),
        Column::new("split".into(), split),
        Column::new("layer".into(), layer),
        Column::new("metric".into(), metric),
        Column::new("value".into(), value),
    ])
    .map_err(|e| polars_err(Path::new("tidy report"), e))
}

/// Writes [`tidy_reports`] to a Parquet file.
///
/// # Errors
/// As [`tidy_reports`]; I/O errors naming `path`.
pub fn write_tidy(path: &Path, reports: &[(GroupKey, NcReport)]) -> Result<()> {
    let mut df = tidy_reports(reports)?;
    let file = std::fs::File::create(path).map_err(|source| crate::features::FeatureError::Io {
        path: path.display().to_string(),
        source,
    })?;
    ParquetWriter::new(file)
        .finish(&mut df)
        .map_err(|e| polars_err(path, e))?;
    Ok(())
}

/// One `stats` job: files, an optional shard and means partial, options.
#[derive(Debug)]
pub struct StatsJob {
    /// The feature files.
    pub sources: Vec<crate::stream::Source>,
    /// `(I, N)` of `--shard I/N`.
    pub shard: Option<(u64, u64)>,
    /// The means partial of pass 2 (a merged pass-1 partial).
    pub means: Option<Partial>,
    /// Options.
    pub options: PartialOptions,
    /// Target bytes of features per batch.
    pub batch_bytes: usize,
}

impl StatsJob {
    /// The kind of partial the job writes.
    pub fn kind(&self) -> Kind {
        match (&self.means, self.shard) {
            (Some(_), _) => Kind::Pass2,
            (None, Some(_)) => Kind::Pass1,
            (None, None) => Kind::Complete,
        }
    }

    fn range(&self, s: &crate::stream::Source) -> std::ops::Range<u64> {
        match self.shard {
            Some((i, n)) => s.shard_rows(i, n),
            None => 0..s.rows,
        }
    }

    /// The inputs the partial will record (sorted).
    ///
    /// # Errors
    /// If a file's metadata cannot be read.
    pub fn inputs(&self) -> Result<Vec<Input>> {
        let means = self.means.as_ref().map(|m| state_id(&m.means));
        let mut out = Vec::new();
        for s in &self.sources {
            let mut i = Input::of(s.scan.path(), s.rows, self.range(s))?;
            i.shard = self.shard;
            i.means.clone_from(&means);
            out.push(i);
        }
        out.sort();
        Ok(out)
    }

    /// Rows the job reads, over both passes (for progress).
    pub fn total_rows(&self) -> u64 {
        let passes = if self.kind() == Kind::Complete { 2 } else { 1 };
        self.sources
            .iter()
            .map(|s| {
                let r = self.range(s);
                r.end - r.start
            })
            .sum::<u64>()
            * passes
    }

    /// Whether `out` already holds this job's partial (same kind, options and inputs).
    pub fn is_done(&self, out: &Path) -> bool {
        let same_header = match (Self::header(out), self.inputs()) {
            (Some((kind, options, inputs)), Ok(expected)) => {
                kind == self.kind() && options == self.options && inputs == expected
            }
            _ => false,
        };
        // The run name and seed (from run.json, or --run/--seed) label the groups, not the
        // header: a partial made under other names is not this job's.
        same_header
            && Partial::read(out).is_ok_and(|p| {
                let want: std::collections::BTreeSet<(Option<String>, Option<i64>)> = self
                    .sources
                    .iter()
                    .map(|s| (s.run.clone(), s.seed))
                    .collect();
                p.means
                    .keys()
                    .chain(p.sums.keys())
                    .all(|k| want.contains(&(k.run.clone(), k.seed)))
                    // The classifier file as it is now (it may have been rewritten in place).
                    && {
                        let mut by_file: BTreeMap<&String, Vec<&GroupKey>> = BTreeMap::new();
                        for (k, c) in &p.classifiers {
                            by_file.entry(c).or_default().push(k);
                        }
                        by_file.iter().all(|(c, keys)| {
                            p.check_classifier_unchanged(c, keys.iter().copied()).is_ok()
                        })
                    }
            })
    }

    fn header(out: &Path) -> Option<(Kind, PartialOptions, Vec<Input>)> {
        if !out.is_file() {
            return None;
        }
        Partial::read_header(out).ok()
    }

    /// Runs the job; `progress` receives the rows of each batch read.
    ///
    /// # Errors
    /// Reading and metric errors (naming the file, epoch and split), a means partial of the
    /// wrong kind or label column, groups without means.
    pub fn run(&self, progress: &mut dyn FnMut(u64)) -> Result<Partial> {
        use crate::stream::{first_pass, second_pass};
        let options = self.options.to_measure();
        let mut means: BTreeMap<GroupKey, ClassSums> = BTreeMap::new();
        let mut sums: BTreeMap<GroupKey, (String, ResidualSums)> = BTreeMap::new();
        let mut classifiers = BTreeMap::new();
        let mut classifier_ids = BTreeMap::new();
        let all = |_: u32, _: &str| true;
        if let Some(m) = &self.means {
            means.clone_from(&m.means);
        }
        for s in &self.sources {
            let range = self.range(s);
            let file_means = match &self.means {
                Some(_) => None,
                None => Some(first_pass(
                    s,
                    range.clone(),
                    options.labels,
                    self.batch_bytes,
                    &all,
                    progress,
                )?),
            };
            if self.kind() == Kind::Pass1 {
                for (k, v) in file_means.unwrap_or_default() {
                    match means.get_mut(&k) {
                        Some(acc) => acc.merge(&v)?,
                        None => {
                            means.insert(k, v);
                        }
                    }
                }
                continue;
            }
            let reference = match &file_means {
                Some(fm) => fm,
                None => &means,
            };
            let file_sums = second_pass(
                s,
                range,
                reference,
                &options,
                self.batch_bytes,
                &all,
                progress,
            )?;
            if let Some(c) = &self.options.classifier {
                // The content each group was measured with (pass 2 read the same file).
                let now = classifier_ids_now(c, file_sums.keys())?;
                for k in file_sums.keys() {
                    classifiers.insert(k.clone(), c.clone());
                    classifier_ids.insert(k.clone(), now[&k.epoch].clone());
                }
            }
            for (k, v) in file_sums {
                let id = means_id(reference, &k, &self.options);
                sums.insert(k, (id, v));
            }
            if let Some(fm) = file_means {
                means.extend(fm);
            }
        }
        Ok(Partial {
            kind: self.kind(),
            options: self.options.clone(),
            inputs: self.inputs()?,
            means,
            sums,
            classifiers,
            classifier_ids,
        })
    }
}

/// Reads a means partial for `stats --means`: a pass-1 partial made with the same label column.
///
/// # Errors
/// [`PartialError::Format`] for another kind; [`PartialError::Options`] for another label
/// column.
pub fn read_means(path: &Path, options: &PartialOptions) -> Result<Partial> {
    let p = Partial::read(path)?;
    if p.kind != Kind::Pass1 {
        return Err(PartialError::Format {
            path: path.display().to_string(),
            problem: format!(
                "a {} partial, but --means needs a merged pass-1 partial (`merge` of the `stats --shard` outputs made without --means)",
                p.kind.name()
            ),
        });
    }
    if p.options.label != options.label {
        return Err(PartialError::Options {
            path: path.display().to_string(),
            found: format!("--label {}", p.options.label.name()),
            expected: format!("this command with --label {}", options.label.name()),
        });
    }
    // Means of all the rows of each file: a single pass-1 shard would give the means of part
    // of the data, and pass 2 would measure against them without a word.
    let mut ranges: BTreeMap<&str, (u64, Vec<(u64, u64)>)> = BTreeMap::new();
    for i in &p.inputs {
        let e = ranges
            .entry(i.path.as_str())
            .or_insert((i.rows, Vec::new()));
        e.1.push((i.start, i.end));
    }
    for (file, (rows, mut r)) in ranges {
        r.sort_unstable();
        let mut at = 0;
        for (start, end) in r.into_iter().chain([(rows, rows)]) {
            if start > at {
                return Err(PartialError::Format {
                    path: path.display().to_string(),
                    problem: format!(
                        "a means partial without rows {at}..{start} of {file} (of its {rows}): --means needs the `merge` of every pass-1 shard of the file"
                    ),
                });
            }
            at = at.max(end);
        }
    }
    Ok(p)
}

/// The largest count of rows a partial may hold for a class or a group: 2⁵³, beyond which
/// counts would not add up exactly in f64 (and sums of them could wrap).
const MAX_COUNT: u64 = 1 << 53;
