//! A study: the runs of one preset on one dataset at several seeds, and summaries over seeds.
//!
//! ```no_run
//! use neural_collapse::study::Study;
//! let study = Study::open("data/runs", "train-test", "mnist")?;
//! assert_eq!(study.seeds(), vec![0, 1, 2, 3, 4]);
//! # Ok::<(), neural_collapse::Error>(())
//! ```
//!
//! A run belongs to a study when its `run.json` names the preset (`"preset"`) and the dataset
//! (`"dataset"`); its seed is `run.json`'s `"seed"`. Directories without a `run.json` are
//! skipped. Seeds are unique within a study (two runs with one seed are an error).
//!
//! # Summaries over seeds
//!
//! [`summarise`] turns per-seed values `(seed, epoch, series, value)` into one row per
//! `(epoch, series)`: the mean over seeds with a 95 % interval ([`crate::interval`]; Student's
//! t over seeds by default, say [`SummaryMethod::Bootstrap`] for the percentile bootstrap), and
//! the number of seeds that had a finite value there. Tidy frames of a study carry a `seed`
//! column ([`Study::tag`]).

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::features::{FeatureError, Run};
use crate::interval::{bootstrap_interval, t_interval, Interval};

/// Errors of opening a study.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StudyError {
    /// No run under the directory has this preset and dataset.
    #[error("{dir}: no run with preset `{preset}` and dataset `{dataset}` (runs found: {found})")]
    NoRuns {
        /// The directory searched.
        dir: String,
        /// The preset asked for.
        preset: String,
        /// The dataset asked for.
        dataset: String,
        /// `preset/dataset` of the runs that were there.
        found: String,
    },
    /// A `run.json` without an integer `seed`, or two runs with one seed.
    #[error("{path}: {message}")]
    Seed {
        /// The run directory or its `run.json`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Reading a run or building a table (the crate-level
    /// [`Error`](crate::Error) shows it as `Error::Features`).
    #[error(transparent)]
    Features(#[from] FeatureError),
}

/// Result of the study functions: [`StudyError`] by default.
type Result<T, E = StudyError> = std::result::Result<T, E>;

/// The runs of one preset on one dataset, one per seed, ascending by seed.
#[derive(Debug, Clone)]
pub struct Study {
    dir: PathBuf,
    preset: String,
    dataset: String,
    runs: Vec<(u64, Run)>,
}

impl Study {
    /// Opens every run under `dir` whose `run.json` has this `preset` and `dataset`.
    ///
    /// # Errors
    /// [`FeatureError::Io`] when `dir` cannot be listed, [`FeatureError::Json`] for a
    /// `run.json` that is not JSON, [`StudyError::NoRuns`] when no run matches,
    /// [`StudyError::Seed`] for two runs with one seed or a run without a seed, and the errors
    /// of [`Run::open`].
    pub fn open(dir: impl AsRef<Path>, preset: &str, dataset: &str) -> Result<Self> {
        let dir = dir.as_ref();
        let entries = std::fs::read_dir(dir).map_err(|source| FeatureError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        // A directory's `run.json` that is not a regular file (a FIFO, a dangling link) is an
        // error naming it, not a directory silently left out of the study.
        let mut paths: Vec<PathBuf> = Vec::new();
        for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if p.is_dir() && crate::features::run_json_exists(&p)? {
                paths.push(p);
            }
        }
        paths.sort();
        let mut runs: Vec<(u64, Run)> = Vec::new();
        let mut found: Vec<String> = Vec::new();
        for p in paths {
            let json = p.join("run.json");
            // Run::open reads and parses run.json once; the study reads its fields from it.
            let run = Run::open(&p)?;
            let meta = run.meta().cloned().unwrap_or_default();
            let field = |k: &str| {
                meta.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_string()
            };
            let (p_run, d_run) = (field("preset"), field("dataset"));
            if p_run != preset || d_run != dataset {
                let tag = format!("{p_run}/{d_run}");
                if !found.contains(&tag) {
                    found.push(tag);
                }
                continue;
            }
            let seed = meta
                .get("seed")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| StudyError::Seed {
                    path: json.display().to_string(),
                    message: "no integer `seed`".into(),
                })?;
            if let Some((_, other)) = runs.iter().find(|(s, _)| *s == seed) {
                return Err(StudyError::Seed {
                    path: p.display().to_string(),
                    message: format!("seed {seed} is also the seed of {}", other.dir().display()),
                });
            }
            runs.push((seed, run));
        }
        if runs.is_empty() {
            return Err(StudyError::NoRuns {
                dir: dir.display().to_string(),
                preset: preset.into(),
                dataset: dataset.into(),
                found: if found.is_empty() {
                    "none".into()
                } else {
                    found.join(", ")
                },
            });
        }
        runs.sort_by_key(|(s, _)| *s);
        Ok(Study {
            dir: dir.to_path_buf(),
            preset: preset.to_string(),
            dataset: dataset.to_string(),
            runs,
        })
    }

    /// The directory the runs were found in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The preset.
    pub fn preset(&self) -> &str {
        &self.preset
    }

    /// The dataset.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// `<dataset>-<preset>`, e.g. `mnist-train-test`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.dataset, self.preset)
    }

    /// The seeds, ascending.
    pub fn seeds(&self) -> Vec<u64> {
        self.runs.iter().map(|(s, _)| *s).collect()
    }

    /// `(seed, run)`, ascending by seed.
    pub fn runs(&self) -> &[(u64, Run)] {
        &self.runs
    }

    /// Adds a `seed` column (u64, constant) to a run's tidy frame.
    ///
    /// # Errors
    /// Building the column.
    pub fn tag(frame: DataFrame, seed: u64) -> Result<DataFrame> {
        let n = frame.height();
        let mut f = frame;
        f.with_column(Column::new("seed".into(), vec![seed; n]))
            .map_err(|e| polars_error("<study table>", e))?;
        Ok(f)
    }
}

pub(crate) fn polars_error(what: &str, e: PolarsError) -> FeatureError {
    FeatureError::Polars {
        path: what.into(),
        message: e.to_string(),
    }
}

/// How [`summarise`] computes its intervals.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum SummaryMethod {
    /// Student's t interval over seeds ([`t_interval`]).
    #[default]
    StudentT,
    /// Percentile bootstrap over seeds ([`bootstrap_interval`]) with this many resamples and
    /// this seed.
    Bootstrap {
        /// Resamples.
        resamples: usize,
        /// Seed of the resampling.
        seed: u64,
    },
}

impl SummaryMethod {
    /// The interval of `values` at `level` by this method.
    pub fn interval(self, values: &[f64], level: f64) -> Interval {
        match self {
            SummaryMethod::StudentT => t_interval(values, level),
            SummaryMethod::Bootstrap { resamples, seed } => {
                bootstrap_interval(values, level, resamples, seed)
            }
        }
    }
}

/// One value of one seed: `(seed, epoch, series, value)`.
pub type SeedValue = (u64, u32, String, f64);

/// One row of a summary over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// Checkpoint.
    pub epoch: u32,
    /// Series (e.g. `train`, `test (train means)`).
    pub series: String,
    /// Mean over seeds with its interval (see [`Interval::n`] for the number of seeds).
    pub interval: Interval,
}

/// Per `(epoch, series)` in order of first appearance of the series and ascending epoch: the
/// mean over seeds and its `level` interval by `method`.
pub fn summarise(values: &[SeedValue], level: f64, method: SummaryMethod) -> Vec<SummaryRow> {
    let mut series: Vec<&str> = Vec::new();
    for v in values {
        if !series.contains(&v.2.as_str()) {
            series.push(&v.2);
        }
    }
    let mut out = Vec::new();
    for s in series {
        let mut epochs: Vec<u32> = values.iter().filter(|v| v.2 == s).map(|v| v.1).collect();
        epochs.sort_unstable();
        epochs.dedup();
        for e in epochs {
            let xs: Vec<f64> = values
                .iter()
                .filter(|v| v.2 == s && v.1 == e)
                .map(|v| v.3)
                .collect();
            out.push(SummaryRow {
                epoch: e,
                series: s.to_string(),
                interval: method.interval(&xs, level),
            });
        }
    }
    out
}

/// A summary as a tidy frame: `epoch, series, mean, lo, hi, n`.
///
/// # Errors
/// Building the DataFrame.
pub fn summary_frame(rows: &[SummaryRow]) -> Result<DataFrame> {
    DataFrame::new(vec![
        Column::new(
            "epoch".into(),
            rows.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        ),
        Column::new(
            "series".into(),
            rows.iter().map(|r| r.series.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "mean".into(),
            rows.iter().map(|r| r.interval.mean).collect::<Vec<_>>(),
        ),
        Column::new(
            "lo".into(),
            rows.iter().map(|r| r.interval.lo).collect::<Vec<_>>(),
        ),
        Column::new(
            "hi".into(),
            rows.iter().map(|r| r.interval.hi).collect::<Vec<_>>(),
        ),
        Column::new(
            "n".into(),
            rows.iter().map(|r| r.interval.n as u32).collect::<Vec<_>>(),
        ),
    ])
    .map_err(|e| polars_error("<study summary>", e).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarise_groups_by_series_and_epoch() {
        let v: Vec<SeedValue> = vec![
            (0, 1, "train".into(), 1.0),
            (1, 1, "train".into(), 3.0),
            (0, 0, "train".into(), 5.0),
            (1, 0, "train".into(), 5.0),
            (0, 1, "test".into(), 2.0),
        ];
        let s = summarise(&v, 0.95, SummaryMethod::StudentT);
        let key: Vec<(u32, &str, f64, usize)> = s
            .iter()
            .map(|r| (r.epoch, r.series.as_str(), r.interval.mean, r.interval.n))
            .collect();
        assert_eq!(
            key,
            vec![
                (0, "train", 5.0, 2),
                (1, "train", 2.0, 2),
                (1, "test", 2.0, 1)
            ]
        );
        // Two equal values: a zero-width interval is right (s = 0); one value: undefined.
        assert_eq!((s[0].interval.lo, s[0].interval.hi), (5.0, 5.0));
        assert!(s[2].interval.lo.is_nan());
        let f = summary_frame(&s).unwrap();
        assert_eq!(f.shape(), (3, 6));
    }
}
