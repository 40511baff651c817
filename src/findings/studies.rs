//! The three findings over the seeds of a study, with criteria fixed before the bundled studies
//! were measured.
//!
//! **Why one file (about 1,100 lines).** The three multi-seed studies with their criteria, kept
//! together so that every criterion the bundled studies are judged by can be read in one place.
//!
//! Each `*Study` measures every seed of a [`Study`] with the single-run finding
//! ([`TrainTestCollapse`], [`Transfer`], [`Cascade`]), summarises the per-checkpoint values over
//! seeds with 95 % intervals, and checks its criterion. The criteria (numbers are constants of
//! this module, quoted in every `CHECK` line):
//!
//! **Finding 1 — train vs test collapse** ([`TrainTestStudy::check`]). The *terminal phase* of a
//! seed runs from its first checkpoint at or after the epoch from which the train error stays 0
//! (`zero_train_error_epoch` of `run.json`) to its last checkpoint. Per seed: the fall of train
//! NC1 over the terminal phase (`NC1(start) / NC1(end)`), the fall of test NC1 measured with the
//! train split's class means, and the gap `test NC1 (train means) / train NC1` at the end.
//! PASS when every seed has a terminal phase of ≥ [`MIN_TERMINAL_CHECKPOINTS`] checkpoints, the
//! geometric mean of the train falls is ≥ [`TRAIN_FALL_GEOMEAN`] with every seed ≥
//! [`TRAIN_FALL_EACH`], and in every seed the test fall is < [`TEST_FALL_MAX`] and the end gap is
//! ≥ [`END_GAP_MIN`].
//!
//! **Finding 2 — collapse hurts transfer** ([`TransferStudy::check`]). A fine-label linear
//! probe (least squares, ridge chosen per checkpoint on held-out train rows, never on test
//! rows) is scored on the exported test rows. The checkpoint compared with the last one is chosen
//! without test data: the first checkpoint at or after the epoch from which the *coarse* train
//! error stays 0. Per seed, the drop is `accuracy(chosen) − accuracy(last)` in points. PASS when
//! the mean drop over seeds is ≥ [`TRANSFER_DROP_MIN`] points, its 95 % t interval excludes 0,
//! the drop is positive in ≥ [`TRANSFER_SEED_SHARE`] of the seeds (4 of 5), every seed is scored
//! on ≥ [`TRANSFER_MIN_TEST`] test images, and source NC1 (coarse labels, train split) is lower at
//! the last checkpoint than at the chosen one in every seed.
//!
//! **Finding 3 — cascading collapse** ([`CascadeStudy::check`]). (a) At the last checkpoint,
//! train NC1 falls with depth in every seed: Spearman ρ(layer index, NC1) ≤ [`CASCADE_RHO_MAX`].
//! (b) Progression: for each layer, the first checkpoint at which its train NC1 is ≤
//! [`CASCADE_THRESHOLD`] (a layer that never gets there counts as later than every checkpoint,
//! tied with the other such layers); deeper layers collapse first when Spearman ρ(layer index,
//! that epoch) ≤ [`CASCADE_RHO_MAX`], and (b) holds when it does in ≥ [`CASCADE_SEED_SHARE`] of
//! the seeds.
//!
//! Intervals: Student's t over seeds (see [`crate::interval`]); NC1, which spans orders of
//! magnitude, is summarised by its geometric mean with a t interval on `log10 NC1`.

use polars::prelude::*;

use crate::error::Result;
use crate::features::{LabelColumn, Run};
use crate::interval::{t_interval, Interval};
use crate::metrics::{MeasureOptions, Metric, NcConfig, NcReport, ReferenceChoice};
use crate::plot::{EpochPlot, Figure, HeatMap, LayerPlot, Nc1AccuracyPlot, Scale};
use crate::probe::LinearProbe;
use crate::stream::measure_scan;
use crate::study::{polars_error, summarise, SeedValue, Study, SummaryMethod, SummaryRow};

use super::{spearman, Cascade, Check, TrainTestCollapse, Transfer, TRANSFER_PENALTY_GRID};

/// Finding 1: a seed's terminal phase must hold at least this many checkpoints (start and end
/// included).
pub const MIN_TERMINAL_CHECKPOINTS: usize = 6;
/// Finding 1: geometric mean over seeds of the train-NC1 fall in the terminal phase, at least.
pub const TRAIN_FALL_GEOMEAN: f64 = 10.0;
/// Finding 1: train-NC1 fall of every seed, at least.
pub const TRAIN_FALL_EACH: f64 = 5.0;
/// Finding 1: fall of test NC1 (train means) over the terminal phase, below this in every seed.
pub const TEST_FALL_MAX: f64 = 2.0;
/// Finding 1: test NC1 (train means) / train NC1 at the last checkpoint, at least, every seed.
pub const END_GAP_MIN: f64 = 10.0;
/// Finding 2: mean drop of fine-probe accuracy (points), at least.
pub const TRANSFER_DROP_MIN: f64 = 2.0;
/// Finding 2: share of seeds with a positive drop, at least.
pub const TRANSFER_SEED_SHARE: f64 = 0.8;
/// Finding 2: test images each probe is scored on, at least.
pub const TRANSFER_MIN_TEST: usize = 5_000;
/// Finding 3: Spearman ρ at most this (both parts).
pub const CASCADE_RHO_MAX: f64 = -0.8;
/// Finding 3: a layer has collapsed at the first checkpoint where its train NC1 is at most this.
pub const CASCADE_THRESHOLD: f64 = 0.25;
/// Finding 3: share of seeds in which deeper layers collapse first, at least.
pub const CASCADE_SEED_SHARE: f64 = 0.8;

/// The epoch from which a history's train accuracy stays 1 (`run.json`'s
/// `zero_train_error_epoch`, recomputed from the history when absent).
fn zero_error_epoch(run: &Run) -> Option<u32> {
    let meta = run.meta()?;
    match meta.get("zero_train_error_epoch") {
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|e| u32::try_from(e).ok()),
        Some(serde_json::Value::Null) => None,
        _ => super::zero_error_from_history(&super::accuracy_history(run)),
    }
}

/// The learning-rate drops recorded in `run.json` (`lr_drop_epochs`, or derived from the
/// history's `lr`).
pub fn lr_drop_epochs(run: &Run) -> Vec<u32> {
    let Some(meta) = run.meta() else {
        return vec![];
    };
    if let Some(v) = meta.get("lr_drop_epochs").and_then(|v| v.as_array()) {
        return v
            .iter()
            .filter_map(|e| e.as_u64().and_then(|e| u32::try_from(e).ok()))
            .collect();
    }
    let h: Vec<(u32, f64)> = meta
        .get("history")
        .and_then(|h| h.as_array())
        .map(|h| {
            h.iter()
                .filter_map(|r| {
                    Some((
                        u32::try_from(r.get("epoch")?.as_u64()?).ok()?,
                        r.get("lr")?.as_f64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    h.windows(2)
        .filter(|w| w[0].0 > 0 && w[1].1 < w[0].1)
        .map(|w| w[1].0)
        .collect()
}

/// Measures every run of a study with `f`: `(seed, value)`, each seed's zero-train-error epoch,
/// and the first run's learning-rate drops. Errors name the run.
#[allow(clippy::type_complexity)]
fn measure_seeds<T>(
    study: &Study,
    f: impl Fn(&Run) -> Result<T>,
) -> Result<(Vec<(u64, T)>, Vec<Option<u32>>, Vec<u32>)> {
    let mut runs = Vec::new();
    let mut zero_epochs = Vec::new();
    for (seed, run) in study.runs() {
        runs.push((
            *seed,
            f(run).map_err(|e| e.context(run.dir().display().to_string()))?,
        ));
        zero_epochs.push(zero_error_epoch(run));
    }
    let drops = study
        .runs()
        .first()
        .map(|(_, r)| lr_drop_epochs(r))
        .unwrap_or_default();
    Ok((runs, zero_epochs, drops))
}

/// The latest epoch from which a seed's train error stays 0, if every seed gets there.
fn all_zero(zero_epochs: &[Option<u32>]) -> Option<u32> {
    zero_epochs
        .iter()
        .copied()
        .collect::<Option<Vec<u32>>>()?
        .into_iter()
        .max()
}

/// Adds the terminal-phase marker (`zero` labelled `label`) and the learning-rate drops.
fn with_markers(mut p: EpochPlot, zero: Option<u32>, label: &str, drops: &[u32]) -> EpochPlot {
    if let Some(z) = zero {
        p = p.marker(z, label);
    }
    for &d in drops {
        p = p.marker(d, "learning rate ÷10");
    }
    p
}

/// The number of seeds out of `n` that a share asks for: `⌈share · n⌉`.
fn needed(share: f64, n: usize) -> usize {
    (share * n as f64 - 1e-9).ceil().max(0.0) as usize
}

fn fmt_list(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Geometric mean with a t interval on `log10` of the positive finite values.
pub fn geometric_interval(values: &[f64], level: f64) -> Interval {
    let logs: Vec<f64> = values.iter().map(|v| log10_or_nan(*v)).collect();
    pow10(t_interval(&logs, level))
}

/// `log10 v` for positive `v`, else `NaN` (left out of the interval, never 0).
fn log10_or_nan(v: f64) -> f64 {
    if v > 0.0 {
        v.log10()
    } else {
        f64::NAN
    }
}

/// An interval of log10 values taken back to the values' scale.
fn pow10(i: Interval) -> Interval {
    Interval {
        mean: 10f64.powf(i.mean),
        lo: 10f64.powf(i.lo),
        hi: 10f64.powf(i.hi),
        ..i
    }
}

/// Summary of NC1-like values over seeds: geometric mean and t interval on log10.
fn summarise_log(values: &[SeedValue]) -> Vec<SummaryRow> {
    let logs: Vec<SeedValue> = values
        .iter()
        .map(|(s, e, k, v)| (*s, *e, k.clone(), log10_or_nan(*v)))
        .collect();
    summarise(&logs, 0.95, SummaryMethod::StudentT)
        .into_iter()
        .map(|r| SummaryRow {
            interval: pow10(r.interval),
            ..r
        })
        .collect()
}

/// A summary as tidy rows for the figures: `epoch, split, metric, value` plus `lo`, `hi`
/// columns (the band).
fn band_frame(rows: &[SummaryRow], metric: &str) -> Result<DataFrame> {
    let mut f = crate::study::summary_frame(rows)?;
    let err = |e| polars_error("<study summary>", e);
    f.rename("series", "split".into()).map_err(err)?;
    f.rename("mean", "value".into()).map_err(err)?;
    f.with_column(Column::new(
        "metric".into(),
        vec![metric.to_string(); rows.len()],
    ))
    .map_err(err)?;
    Ok(f)
}

fn concat(frames: Vec<DataFrame>) -> Result<DataFrame> {
    let mut it = frames.into_iter();
    let Some(mut first) = it.next() else {
        return Ok(DataFrame::empty());
    };
    for f in it {
        first
            .vstack_mut(&f)
            .map_err(|e| polars_error("<study table>", e))?;
    }
    Ok(first)
}

// ---------------------------------------------------------------------------------------------
// Finding 1.

/// One seed's terminal phase (finding 1).
#[derive(Debug, Clone, PartialEq)]
pub struct TerminalPhase {
    /// Seed.
    pub seed: u64,
    /// Epoch from which the train error stays 0, if it does.
    pub zero_train_error_epoch: Option<u32>,
    /// First checkpoint of the terminal phase and the last checkpoint.
    pub start: Option<u32>,
    /// Last checkpoint.
    pub end: u32,
    /// Checkpoints in the terminal phase (start and end included).
    pub checkpoints: usize,
    /// Train NC1 at start / at end.
    pub train_fall: f64,
    /// Test NC1 (train means) at start / at end.
    pub test_fall: f64,
    /// Test NC1 (train means) / train NC1 at the end.
    pub end_gap: f64,
}

/// Finding 1 over the seeds of a study.
#[derive(Debug, Clone)]
pub struct TrainTestStudy {
    /// `<dataset>-<preset>`.
    pub name: String,
    /// `(seed, measured run)`.
    pub runs: Vec<(u64, TrainTestCollapse)>,
    /// Learning-rate drops (epochs), from the first run.
    pub lr_drops: Vec<u32>,
    zero_epochs: Vec<Option<u32>>,
}

impl TrainTestStudy {
    /// Measures every seed (see [`TrainTestCollapse::measure`]).
    ///
    /// # Errors
    /// As [`TrainTestCollapse::measure`], with the run named.
    pub fn measure(study: &Study) -> Result<Self> {
        let (runs, zero_epochs, lr_drops) = measure_seeds(study, TrainTestCollapse::measure)?;
        Ok(TrainTestStudy {
            name: study.name(),
            lr_drops,
            runs,
            zero_epochs,
        })
    }

    /// The seeds.
    pub fn seeds(&self) -> Vec<u64> {
        self.runs.iter().map(|r| r.0).collect()
    }

    /// Each seed's terminal phase.
    pub fn terminal(&self) -> Vec<TerminalPhase> {
        self.runs
            .iter()
            .zip(&self.zero_epochs)
            .map(|((seed, m), z)| {
                let [train, _, test_tm] = m.nc1();
                let end = train.last().map_or(0, |p| p.0);
                let start = z.and_then(|z| train.iter().find(|p| p.0 >= z).map(|p| p.0));
                let at = |s: &[(u32, f64)], e: Option<u32>| {
                    e.and_then(|e| s.iter().find(|p| p.0 == e).map(|p| p.1))
                        .unwrap_or(f64::NAN)
                };
                let checkpoints = start.map_or(0, |s| train.iter().filter(|p| p.0 >= s).count());
                TerminalPhase {
                    seed: *seed,
                    zero_train_error_epoch: *z,
                    start,
                    end,
                    checkpoints,
                    train_fall: at(&train, start) / at(&train, Some(end)),
                    test_fall: at(&test_tm, start) / at(&test_tm, Some(end)),
                    end_gap: at(&test_tm, Some(end)) / at(&train, Some(end)),
                }
            })
            .collect()
    }

    /// NC1 per seed: `(seed, epoch, series, value)` with series `train`, `test (own means)`,
    /// `test (train means)`.
    pub fn nc1_values(&self) -> Vec<SeedValue> {
        let mut out = Vec::new();
        for (seed, m) in &self.runs {
            let names = ["train", "test (own means)", "test (train means)"];
            for (name, s) in names.iter().zip(m.nc1()) {
                out.extend(s.into_iter().map(|(e, v)| (*seed, e, name.to_string(), v)));
            }
        }
        out
    }

    /// NC1 per checkpoint and series: geometric mean over seeds with a 95 % t interval on log10.
    pub fn nc1_summary(&self) -> Vec<SummaryRow> {
        summarise_log(&self.nc1_values())
    }

    /// Train and test accuracy (%) per epoch: mean over seeds with a 95 % t interval (series
    /// `train`, `test`; epochs where the trainer did not measure test accuracy are left out).
    pub fn accuracy_summary(&self) -> Vec<SummaryRow> {
        let mut v = Vec::new();
        for (seed, m) in &self.runs {
            for &(e, tr, te) in &m.history {
                v.push((*seed, e, "train".to_string(), 100.0 * tr));
                if te.is_finite() {
                    v.push((*seed, e, "test".to_string(), 100.0 * te));
                }
            }
        }
        summarise(&v, 0.95, SummaryMethod::StudentT)
    }

    /// Every seed's tidy rows ([`TrainTestCollapse::tidy`]) with a `seed` column.
    ///
    /// # Errors
    /// Building the DataFrame.
    pub fn tidy(&self) -> Result<DataFrame> {
        concat(
            self.runs
                .iter()
                .map(|(s, m)| Ok(Study::tag(m.tidy()?, *s)?))
                .collect::<Result<Vec<_>>>()?,
        )
    }

    /// The NC1 summary as a tidy frame with `lo`/`hi` band columns.
    ///
    /// # Errors
    /// Building the DataFrame.
    pub fn summary_frame(&self) -> Result<DataFrame> {
        band_frame(&self.nc1_summary(), Metric::Nc1.name())
    }

    /// The latest epoch at which some seed's train error reaches 0 for good (the marker).
    pub fn zero_error_marker(&self) -> Option<u32> {
        all_zero(&self.zero_epochs)
    }

    /// NC1 vs epoch, geometric mean over seeds with its 95 % band: train, test (own means), test
    /// (train means); markers where the train error is 0 in every seed and at the learning-rate
    /// drops.
    ///
    /// # Errors
    /// Drawing.
    pub fn figure(&self) -> Result<Figure> {
        let p = EpochPlot::new(&self.summary_frame()?)
            .metric(Metric::Nc1)
            .title(format!(
                "Finding 1 — NC1, train vs test ({}, {} seeds, 95 % t band)",
                self.name,
                self.runs.len()
            ));
        Ok(with_markers(
            p,
            self.zero_error_marker(),
            "zero train error, all seeds",
            &self.lr_drops,
        )
        .draw()?)
    }

    /// Train and test accuracy (%) vs epoch, mean over seeds with its 95 % band, with the same
    /// markers.
    ///
    /// # Errors
    /// Drawing.
    pub fn figure_accuracy(&self) -> Result<Figure> {
        let p = EpochPlot::new(&band_frame(&self.accuracy_summary(), "accuracy (%)")?)
            .metric("accuracy (%)")
            .scale(Scale::Linear)
            .y_label("accuracy (%)")
            .title(format!(
                "Accuracy history ({}, {} seeds, 95 % t band)",
                self.name,
                self.runs.len()
            ));
        Ok(with_markers(
            p,
            self.zero_error_marker(),
            "zero train error, all seeds",
            &self.lr_drops,
        )
        .draw()?)
    }

    /// The criterion of finding 1 (see the [module docs](self)).
    pub fn check(&self) -> Check {
        let t = self.terminal();
        let falls: Vec<f64> = t.iter().map(|p| p.train_fall).collect();
        let test_falls: Vec<f64> = t.iter().map(|p| p.test_fall).collect();
        let gaps: Vec<f64> = t.iter().map(|p| p.end_gap).collect();
        let gm = geometric_interval(&falls, 0.95);
        let all_terminal = !t.is_empty()
            && t.iter()
                .all(|p| p.start.is_some() && p.checkpoints >= MIN_TERMINAL_CHECKPOINTS);
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let pass = all_terminal
            && gm.n == t.len()
            && gm.mean >= TRAIN_FALL_GEOMEAN
            && min(&falls) >= TRAIN_FALL_EACH
            && max(&test_falls) < TEST_FALL_MAX
            && min(&gaps) >= END_GAP_MIN;
        let starts: Vec<String> = t
            .iter()
            .map(|p| match p.start {
                Some(s) => format!("{s}→{} ({} ckpts)", p.end, p.checkpoints),
                None => "never zero error".into(),
            })
            .collect();
        Check {
            name: format!("train-vs-test {}", self.name),
            pass,
            summary: format!(
                "seeds {:?}; terminal phase {}; train NC1 fell {} × (geometric mean {:.1} ×, 95 % t interval on log10 [{:.1}, {:.1}]; need ≥ {TRAIN_FALL_GEOMEAN}, every seed ≥ {TRAIN_FALL_EACH}, ≥ {MIN_TERMINAL_CHECKPOINTS} ckpts); \
                 test NC1 (train means) fell {} × (every seed < {TEST_FALL_MAX}); at the end test/train NC1 = {} × (every seed ≥ {END_GAP_MIN})",
                self.seeds(),
                starts.join(", "),
                fmt_list(&falls, 1),
                gm.mean,
                gm.lo,
                gm.hi,
                fmt_list(&test_falls, 2),
                fmt_list(&gaps, 1),
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 2.

/// One seed of finding 2.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferSeed {
    /// Seed.
    pub seed: u64,
    /// The checkpoint chosen without test data (first at or after zero coarse train error).
    pub chosen: Option<u32>,
    /// The last checkpoint.
    pub last: u32,
    /// Probe test accuracy (%) at the chosen checkpoint.
    pub acc_chosen: f64,
    /// Probe test accuracy (%) at the last checkpoint.
    pub acc_last: f64,
    /// Probe test accuracy (%) on the epoch-0 features (baseline).
    pub acc_init: f64,
    /// Source NC1 at the chosen and at the last checkpoint.
    pub source_nc1: (f64, f64),
    /// Test images the probe was scored on (the smallest over checkpoints).
    pub n_test: usize,
}

impl TransferSeed {
    /// `acc_chosen − acc_last`, points.
    pub fn drop(&self) -> f64 {
        self.acc_chosen - self.acc_last
    }
}

/// Finding 2 over the seeds of a study.
#[derive(Debug, Clone)]
pub struct TransferStudy {
    /// `<dataset>-<preset>`.
    pub name: String,
    /// `(seed, measured run)`.
    pub runs: Vec<(u64, Transfer)>,
    /// Learning-rate drops (epochs), from the first run.
    pub lr_drops: Vec<u32>,
    zero_epochs: Vec<Option<u32>>,
}

impl TransferStudy {
    /// Measures every seed with [`Transfer::measure`]'s probe.
    ///
    /// # Errors
    /// As [`Transfer::measure`], with the run named.
    pub fn measure(study: &Study) -> Result<Self> {
        Self::measure_with(
            study,
            &LinearProbe::least_squares().ridge_grid(&TRANSFER_PENALTY_GRID),
        )
    }

    /// As [`TransferStudy::measure`] with another probe (any linfa estimator
    /// [`Transfer::measure_with`] takes).
    ///
    /// # Errors
    /// As [`Transfer::measure`].
    pub fn measure_with<E, Er>(study: &Study, probe: &E) -> Result<Self>
    where
        E: linfa::traits::Fit<ndarray::Array2<f64>, ndarray::Array1<usize>, Er> + 'static,
        E::Object:
            linfa::traits::PredictInplace<ndarray::Array2<f64>, ndarray::Array1<usize>> + 'static,
        Er: std::error::Error + From<linfa::error::Error>,
    {
        let (runs, zero_epochs, lr_drops) =
            measure_seeds(study, |run| Transfer::measure_with(run, probe))?;
        Ok(TransferStudy {
            name: study.name(),
            lr_drops,
            runs,
            zero_epochs,
        })
    }

    /// Per seed: the chosen and last checkpoints and their accuracies.
    pub fn seeds(&self) -> Vec<TransferSeed> {
        self.runs
            .iter()
            .zip(&self.zero_epochs)
            .map(|((seed, t), z)| {
                let pts = t.points();
                let last = pts.last().map_or(0, |p| p.0);
                let chosen = z.and_then(|z| pts.iter().find(|p| p.0 >= z).map(|p| p.0));
                let at = |e: Option<u32>| e.and_then(|e| pts.iter().find(|p| p.0 == e).copied());
                let c = at(chosen);
                let l = at(Some(last));
                let init = at(pts.first().map(|p| p.0));
                TransferSeed {
                    seed: *seed,
                    chosen,
                    last,
                    acc_chosen: c.map_or(f64::NAN, |p| 100.0 * p.2),
                    acc_last: l.map_or(f64::NAN, |p| 100.0 * p.2),
                    acc_init: init.map_or(f64::NAN, |p| 100.0 * p.2),
                    source_nc1: (c.map_or(f64::NAN, |p| p.1), l.map_or(f64::NAN, |p| p.1)),
                    n_test: t.probes.iter().map(|p| p.n_test).min().unwrap_or(0),
                }
            })
            .collect()
    }

    /// Fine-probe accuracy (%) per checkpoint, series `test` and `train` (the probe's own fit):
    /// mean over seeds with a 95 % t interval.
    pub fn probe_summary(&self) -> Vec<SummaryRow> {
        let mut v = Vec::new();
        for (seed, t) in &self.runs {
            for p in &t.probes {
                if let Some(e) = p.epoch {
                    v.push((*seed, e, "test".to_string(), 100.0 * p.test_accuracy));
                    v.push((*seed, e, "train".to_string(), 100.0 * p.train_accuracy));
                }
            }
        }
        summarise(&v, 0.95, SummaryMethod::StudentT)
    }

    /// Source NC1 (coarse, train) and fine NC1 (train) per checkpoint: geometric mean over seeds
    /// with a 95 % t interval on log10.
    pub fn nc1_summary(&self) -> Vec<SummaryRow> {
        let mut v = Vec::new();
        for (seed, t) in &self.runs {
            for r in &t.source {
                if let Some(e) = r.epoch {
                    v.push((*seed, e, "source NC1 (coarse)".to_string(), r.nc1));
                }
            }
            for r in &t.fine {
                if let Some(e) = r.epoch {
                    v.push((*seed, e, "fine NC1".to_string(), r.nc1));
                }
            }
        }
        summarise_log(&v)
    }

    /// Every seed's tidy rows ([`Transfer::tidy`]) with a `seed` column.
    ///
    /// # Errors
    /// Building the DataFrame.
    pub fn tidy(&self) -> Result<DataFrame> {
        concat(
            self.runs
                .iter()
                .map(|(s, m)| Ok(Study::tag(m.tidy()?, *s)?))
                .collect::<Result<Vec<_>>>()?,
        )
    }

    fn markers(&self, p: EpochPlot) -> EpochPlot {
        with_markers(
            p,
            all_zero(&self.zero_epochs),
            "zero coarse train error, all seeds",
            &self.lr_drops,
        )
    }

    /// The raw-pixel baseline of every seed: the same probe fitted on the pixels (scaled to
    /// [0, 1]) of the same exported train rows and scored on the same test rows (`sample`
    /// column of epoch 0), test accuracy in %, with a 95 % t interval over seeds. `loader` reads
    /// the dataset the study was trained on.
    ///
    /// # Errors
    /// A missing dataset (the message says how to fetch it), a run without a `sample` column,
    /// probe errors.
    pub fn pixel_baseline(
        study: &Study,
        loader: &crate::datasets::DatasetLoader,
    ) -> Result<Interval> {
        let data = loader.load()?;
        let probe = LinearProbe::least_squares().ridge_grid(&TRANSFER_PENALTY_GRID);
        let mut accs = Vec::new();
        for (_, run) in study.runs() {
            let layer = super::last_layer(run)?;
            let scan = run.features(&layer)?;
            let pixels = |split: &str,
                          images: &crate::datasets::Split|
             -> Result<crate::features::Features> {
                let f = scan.epoch(0).split(split).load()?;
                let path = run.features_path(&layer)?.display().to_string();
                let sample = f.sample.clone().ok_or_else(|| {
                    crate::features::FeatureError::MissingColumn {
                        path: path.clone(),
                        column: "sample".into(),
                        found: "(no sample column)".into(),
                    }
                })?;
                let rows: Vec<usize> = sample.iter().map(|&i| i as usize).collect();
                if let Some(&bad) = rows.iter().find(|&&r| r >= images.images.nrows()) {
                    return Err(crate::features::FeatureError::InvalidInteger {
                        path,
                        column: "sample".into(),
                        value: bad.to_string(),
                        row: None,
                        reason: "is not an image index of the dataset split",
                    }
                    .into());
                }
                let x = images.images.select(ndarray::Axis(0), &rows);
                Ok(crate::features::Features::new(x, f.labels.clone()).with_split(split))
            };
            let train = pixels("train", &data.train)?;
            let test = pixels("test", &data.test)?;
            let fitted = probe.fit(&train)?;
            accs.push(100.0 * fitted.accuracy_features(&test)?);
        }
        Ok(t_interval(&accs, 0.95))
    }

    /// Fine-probe accuracy (%) vs epoch with its 95 % band (train and test rows), the epoch-0
    /// features' test accuracy as a reference line, and `pixels` (the raw-pixel probe's test
    /// accuracy, %) when given.
    ///
    /// # Errors
    /// Drawing.
    pub fn figure_probe(&self, pixels: Option<f64>) -> Result<Figure> {
        let init = t_interval(
            &self.seeds().iter().map(|s| s.acc_init).collect::<Vec<_>>(),
            0.95,
        );
        let mut p = EpochPlot::new(&band_frame(&self.probe_summary(), "accuracy (%)")?)
            .metric("accuracy (%)")
            .scale(Scale::Linear)
            .y_label("fine-label probe accuracy (%)")
            .title(format!(
                "Finding 2 — fine-label probe ({}, {} seeds, 95 % t band)",
                self.name,
                self.runs.len()
            ))
            .reference_line(init.mean, "epoch-0 features (test)");
        if let Some(px) = pixels {
            p = p.reference_line(px, "raw pixels (test)");
        }
        Ok(self.markers(p).draw()?)
    }

    /// Source NC1 and fine NC1 vs epoch with their 95 % bands.
    ///
    /// # Errors
    /// Drawing.
    pub fn figure_nc1(&self) -> Result<Figure> {
        let p = EpochPlot::new(&band_frame(&self.nc1_summary(), Metric::Nc1.name())?)
            .metric(Metric::Nc1)
            .title(format!(
                "Source (coarse) and fine NC1, train split ({}, {} seeds)",
                self.name,
                self.runs.len()
            ));
        Ok(self.markers(p).draw()?)
    }

    /// Mean fine-probe test accuracy (%) against the geometric-mean source NC1, one point per
    /// checkpoint labelled by its epoch and joined in time order.
    ///
    /// # Errors
    /// Drawing.
    pub fn figure_scatter(&self) -> Result<Figure> {
        let row = |epoch: u32, split: &str, metric: &str, value: f64| crate::plot::TidyRow {
            run: None,
            epoch: Some(epoch),
            layer: None,
            probe: None,
            split: Some(split.into()),
            metric: metric.into(),
            value,
            band: None,
        };
        let nc: Vec<_> = self
            .nc1_summary()
            .into_iter()
            .filter(|r| r.series == "source NC1 (coarse)")
            .map(|r| row(r.epoch, "train", Metric::Nc1.name(), r.interval.mean))
            .collect();
        let acc: Vec<_> = self
            .probe_summary()
            .into_iter()
            .filter(|r| r.series == "test")
            .map(|r| row(r.epoch, "test", Metric::Accuracy.name(), r.interval.mean))
            .collect();
        Ok(Nc1AccuracyPlot::new(&nc, &acc)
            .nc_split("train")
            .probe_split("test")
            .title(format!(
                "Fine-probe accuracy (%) vs source NC1 ({}, means over {} seeds)",
                self.name,
                self.runs.len()
            ))
            .draw()?)
    }

    /// The criterion of finding 2 (see the [module docs](self)).
    pub fn check(&self) -> Check {
        let s = self.seeds();
        let drops: Vec<f64> = s.iter().map(TransferSeed::drop).collect();
        let i = t_interval(&drops, 0.95);
        let positive = drops.iter().filter(|d| **d > 0.0).count();
        let source_falls = s.iter().all(|x| x.source_nc1.1 < x.source_nc1.0);
        let min_test = s.iter().map(|x| x.n_test).min().unwrap_or(0);
        let pass = !s.is_empty()
            && s.iter().all(|x| x.chosen.is_some())
            && i.n == s.len()
            && i.mean >= TRANSFER_DROP_MIN
            && i.lo > 0.0
            && positive >= needed(TRANSFER_SEED_SHARE, s.len())
            && source_falls
            && min_test >= TRANSFER_MIN_TEST;
        let per: Vec<String> = s
            .iter()
            .map(|x| {
                format!(
                    "seed {}: {:.2} % at epoch {} → {:.2} % at {} (source NC1 {:.2e} → {:.2e})",
                    x.seed,
                    x.acc_chosen,
                    x.chosen.map_or("-".into(), |c| c.to_string()),
                    x.acc_last,
                    x.last,
                    x.source_nc1.0,
                    x.source_nc1.1
                )
            })
            .collect();
        Check {
            name: format!("collapse-hurts-transfer {}", self.name),
            pass,
            summary: format!(
                "fine-probe drop from the first zero-coarse-error checkpoint to the last: {} points, mean {:.2} (95 % t interval [{:.2}, {:.2}]; need mean ≥ {TRANSFER_DROP_MIN}, interval above 0, > 0 in ≥ {} of {} seeds: {positive}); \
                 source NC1 lower at the end in every seed: {}; test images per probe ≥ {TRANSFER_MIN_TEST}: {min_test}; {}",
                fmt_list(&drops, 2),
                i.mean,
                i.lo,
                i.hi,
                needed(TRANSFER_SEED_SHARE, s.len()),
                s.len(),
                if source_falls { "yes" } else { "no" },
                per.join("; ")
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 3.

/// One seed of finding 3.
#[derive(Debug, Clone, PartialEq)]
pub struct CascadeSeed {
    /// Seed.
    pub seed: u64,
    /// Train NC1 per layer (network order) at the last checkpoint.
    pub nc1_end: Vec<f64>,
    /// ρ(layer index, NC1 at the end).
    pub rho_end: f64,
    /// Per layer, the first checkpoint with train NC1 ≤ [`CASCADE_THRESHOLD`] (`None`: never).
    pub collapse_epoch: Vec<Option<u32>>,
    /// ρ(layer index, collapse epoch), never = later than every checkpoint.
    pub rho_progression: f64,
}

/// Finding 3 over the seeds of a study: the train split (and the test split) of every layer.
#[derive(Debug, Clone)]
pub struct CascadeStudy {
    /// `<dataset>-<preset>`.
    pub name: String,
    /// Layers in network order.
    pub layers: Vec<String>,
    /// `(seed, measured run)` (train split).
    pub runs: Vec<(u64, Cascade)>,
    /// `(seed, reports)` of the test split of every layer, own means.
    pub test: Vec<(u64, Vec<NcReport>)>,
    /// Epoch from which the train error stays 0, per seed.
    pub zero_epochs: Vec<Option<u32>>,
}

impl CascadeStudy {
    /// Measures every layer of every seed, train and test splits.
    ///
    /// # Errors
    /// As [`Cascade::measure`], with the run named.
    pub fn measure(study: &Study) -> Result<Self> {
        let mut runs = Vec::new();
        let mut test = Vec::new();
        let mut zero_epochs = Vec::new();
        for (seed, run) in study.runs() {
            let c =
                Cascade::measure(run).map_err(|e| e.context(run.dir().display().to_string()))?;
            let mut t = Vec::new();
            for l in &c.layers {
                let mut r = measure_scan(
                    &run.features(l)?,
                    &MeasureOptions {
                        split: Some("test".into()),
                        config: NcConfig {
                            reference: ReferenceChoice::Own,
                            ..NcConfig::default()
                        },
                        labels: LabelColumn::Label,
                        ..MeasureOptions::default()
                    },
                )
                .map_err(|e| e.context(format!("{}, layer {l}", run.dir().display())))?;
                for x in &mut r {
                    x.layer = Some(l.clone());
                }
                t.extend(r);
            }
            zero_epochs.push(zero_error_epoch(run));
            test.push((*seed, t));
            runs.push((*seed, c));
        }
        Ok(CascadeStudy {
            name: study.name(),
            layers: runs.first().map(|r| r.1.layers.clone()).unwrap_or_default(),
            runs,
            test,
            zero_epochs,
        })
    }

    /// Per seed: NC1 by layer at the end, the collapse epochs and both ρ.
    pub fn seeds(&self) -> Vec<CascadeSeed> {
        self.runs
            .iter()
            .map(|(seed, c)| {
                let epochs = c.epochs();
                let last = epochs.last().copied().unwrap_or(0);
                let nc1_end: Vec<f64> = c.nc1_at(last).iter().map(|p| p.1).collect();
                let depth: Vec<f64> = (0..nc1_end.len()).map(|i| i as f64).collect();
                let collapse_epoch: Vec<Option<u32>> = c
                    .layers
                    .iter()
                    .map(|l| {
                        epochs.iter().copied().find(|&e| {
                            c.reports.iter().any(|r| {
                                r.epoch == Some(e)
                                    && r.layer.as_deref() == Some(l)
                                    && r.nc1 <= CASCADE_THRESHOLD
                            })
                        })
                    })
                    .collect();
                let t: Vec<f64> = collapse_epoch
                    .iter()
                    .map(|e| e.map_or(f64::INFINITY, f64::from))
                    .collect();
                let depth_t: Vec<f64> = (0..t.len()).map(|i| i as f64).collect();
                CascadeSeed {
                    seed: *seed,
                    rho_end: spearman(&depth, &nc1_end),
                    nc1_end,
                    rho_progression: spearman(&depth_t, &t),
                    collapse_epoch,
                }
            })
            .collect()
    }

    /// NC1 by (layer, epoch) and split: geometric mean over seeds with a 95 % t interval on
    /// log10; series `"<layer> train"` and `"<layer> test"`.
    pub fn nc1_summary(&self) -> Vec<SummaryRow> {
        let mut v = Vec::new();
        for (seed, c) in &self.runs {
            for r in &c.reports {
                if let (Some(e), Some(l)) = (r.epoch, &r.layer) {
                    v.push((*seed, e, format!("{l} train"), r.nc1));
                }
            }
        }
        for (seed, t) in &self.test {
            for r in t {
                if let (Some(e), Some(l)) = (r.epoch, &r.layer) {
                    v.push((*seed, e, format!("{l} test"), r.nc1));
                }
            }
        }
        summarise_log(&v)
    }

    /// Tidy rows of every seed (train and test, every layer) with a `seed` column.
    ///
    /// # Errors
    /// Building the DataFrame.
    pub fn tidy(&self) -> Result<DataFrame> {
        let mut frames = Vec::new();
        for ((seed, c), (_, t)) in self.runs.iter().zip(&self.test) {
            let mut all = c.reports.clone();
            all.extend(t.iter().cloned());
            frames.push(Study::tag(NcReport::to_tidy_many(&all)?, *seed)?);
        }
        concat(frames)
    }

    /// Geometric-mean NC1 by layer for every checkpoint (one line per checkpoint), `split`
    /// `train` or `test`.
    ///
    /// # Errors
    /// Drawing.
    pub fn figure_layers(&self, split: &str) -> Result<Figure> {
        let rows = self.nc1_summary();
        let mut reports: Vec<crate::plot::TidyRow> = Vec::new();
        for r in rows
            .iter()
            .filter(|r| r.series.ends_with(&format!(" {split}")))
        {
            let layer = r.series.trim_end_matches(&format!(" {split}")).to_string();
            reports.push(crate::plot::TidyRow {
                run: None,
                epoch: Some(r.epoch),
                layer: Some(layer),
                probe: None,
                split: Some(split.to_string()),
                metric: Metric::Nc1.into(),
                value: r.interval.mean,
                band: None,
            });
        }
        let epochs = reports
            .iter()
            .filter_map(|r| r.epoch)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        Ok(LayerPlot::new(&reports)
            .metric(Metric::Nc1)
            .layers(&self.layers)
            .max_epochs(epochs.max(1))
            .size(820, (200 + 26 * epochs as u32).max(460))
            .title(format!(
                "Finding 3 — {split} NC1 by layer, all {epochs} checkpoints ({}, {} seeds)",
                self.name,
                self.runs.len()
            ))
            .draw()?)
    }

    /// Layer × epoch heat map of train NC1, geometric mean over seeds (log colour scale).
    ///
    /// # Errors
    /// Drawing.
    pub fn figure_heatmap(&self) -> Result<Figure> {
        let rows: Vec<crate::plot::TidyRow> = self
            .nc1_summary()
            .into_iter()
            .filter(|r| r.series.ends_with(" train"))
            .map(|r| crate::plot::TidyRow {
                run: None,
                epoch: Some(r.epoch),
                layer: Some(r.series.trim_end_matches(" train").to_string()),
                probe: None,
                split: Some("train".into()),
                metric: Metric::Nc1.into(),
                value: r.interval.mean,
                band: None,
            })
            .collect();
        Ok(HeatMap::new(&rows)
            .metric(Metric::Nc1)
            .layers(&self.layers)
            .title(format!(
                "Train NC1, layer × epoch ({}, geometric mean of {} seeds)",
                self.name,
                self.runs.len()
            ))
            .draw()?)
    }

    /// The criterion of finding 3 (see the [module docs](self)).
    pub fn check(&self) -> Check {
        let s = self.seeds();
        let ends: Vec<f64> = s.iter().map(|x| x.rho_end).collect();
        let progs: Vec<f64> = s.iter().map(|x| x.rho_progression).collect();
        let end_ok = !s.is_empty() && ends.iter().all(|r| *r <= CASCADE_RHO_MAX);
        let prog_count = progs.iter().filter(|r| **r <= CASCADE_RHO_MAX).count();
        let prog_ok = !s.is_empty() && prog_count >= needed(CASCADE_SEED_SHARE, s.len());
        let epochs: Vec<String> = s
            .iter()
            .map(|x| {
                format!(
                    "seed {}: [{}]",
                    x.seed,
                    x.collapse_epoch
                        .iter()
                        .map(|e| e.map_or("never".into(), |e| e.to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        Check {
            name: format!("cascading-collapse {}", self.name),
            pass: end_ok && prog_ok,
            summary: format!(
                "at the last checkpoint ρ(depth, train NC1) = {} (every seed ≤ {CASCADE_RHO_MAX}); first checkpoint with train NC1 ≤ {CASCADE_THRESHOLD} by layer {}: {}; ρ(depth, that epoch) = {} (≤ {CASCADE_RHO_MAX} in ≥ {} of {} seeds: {prog_count})",
                fmt_list(&ends, 2),
                self.layers.join(" "),
                epochs.join("; "),
                fmt_list(&progs, 2),
                needed(CASCADE_SEED_SHARE, s.len()),
                s.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_seeds() {
        assert_eq!(needed(0.8, 5), 4);
        assert_eq!(needed(0.8, 10), 8);
        assert_eq!(needed(0.8, 1), 1);
    }

    #[test]
    fn geometric_interval_of_powers_of_ten() {
        // log10 values 0, 1, 2: mean 1 → geometric mean 10.
        let i = geometric_interval(&[1.0, 10.0, 100.0], 0.95);
        assert!((i.mean - 10.0).abs() < 1e-12);
        let half = crate::interval::student_t_quantile(0.975, 2.0) * (1.0f64 / 3.0).sqrt();
        assert!((i.hi.log10() - (1.0 + half)).abs() < 1e-9);
    }
}
