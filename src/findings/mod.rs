//! The paper's three findings, measured on one run or on a study (the runs of one preset at
//! several seeds), each with the criterion its notebook and `neural-collapse reproduce` check.
//!
//! On one run: `TrainTestCollapse::measure(&run)?`, `Transfer::measure(&run)?`,
//! `Cascade::measure(&run)?` hold the reports, turn into tidy DataFrames and draw the figures.
//! On a study: [`studies::TrainTestStudy`], [`studies::TransferStudy`],
//! [`studies::CascadeStudy`] measure every seed, summarise over seeds with 95 % intervals and
//! [`check`](studies::TrainTestStudy::check) the criteria, fixed as constants in [`studies`]
//! before the bundled seeds were trained, giving a [`Check`] that prints as
//! `CHECK <name>: PASS|FAIL — <numbers>`.
//!
//! | finding | criterion (see [`studies`]) |
//! |---|---|
//! | 1. train vs test collapse | in the terminal phase train NC1 falls ≥ 10× (geometric mean over seeds; every seed ≥ 5×), test NC1 (train means) falls < 2× and ends ≥ 10× above train NC1 in every seed |
//! | 2. collapse hurts transfer | fine-probe accuracy at the first zero-coarse-error checkpoint minus the last: mean ≥ 2 points, 95 % t interval above 0, positive in ≥ 4 of 5 seeds, ≥ 5,000 test images, source NC1 falling |
//! | 3. cascading collapse | NC1 falls with depth at the end in every seed (Spearman ≤ −0.8); deeper layers cross NC1 ≤ 0.25 first (ρ ≤ −0.8) in ≥ 4 of 5 seeds |

use std::fmt;

use polars::prelude::*;

use crate::error::Result;
use crate::features::{LabelColumn, Run};
use crate::metrics::{MeasureOptions, Metric, NcConfig, NcReport, ReferenceChoice};
use crate::plot::{EpochPlot, Figure, HeatMap, LayerPlot, Nc1AccuracyPlot, SmallMultiples};
use crate::probe::{probe_scan_on, LinearProbe, ProbeReport};
use crate::stream::measure_scan;
use linfa::traits::{Fit, PredictInplace};
use ndarray::{Array1, Array2};

/// The outcome of checking a finding's criterion on data.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Short name, e.g. `train-vs-test`.
    pub name: String,
    /// Whether the criterion holds.
    pub pass: bool,
    /// The criterion and the numbers it was decided on.
    pub summary: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CHECK {}: {} — {}",
            self.name,
            if self.pass { "PASS" } else { "FAIL" },
            self.summary
        )
    }
}

/// Spearman's rank correlation of two equally long series (average ranks for ties); `NaN` for
/// series of different lengths, fewer than 2 points, a constant series or a `NaN` value (which
/// has no rank).
///
/// ```
/// use neural_collapse::findings::spearman;
/// assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), 1.0);
/// assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 1.0, 0.5]), -1.0);
/// ```
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.len() < 2 || a.iter().chain(b).any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[idx[k]] = avg;
        }
        i = j + 1;
    }
    r
}

pub(crate) fn last_layer(run: &Run) -> Result<String> {
    run.layers().last().cloned().ok_or_else(|| {
        crate::features::FeatureError::UnknownLayer {
            dir: run.dir().display().to_string(),
            layer: "(any)".into(),
            available: String::new(),
        }
        .into()
    })
}

fn series(reports: &[NcReport], split: &str) -> Vec<(u32, f64)> {
    reports
        .iter()
        .filter(|r| r.split.as_deref() == Some(split))
        .filter_map(|r| r.epoch.map(|e| (e, r.nc1)))
        .collect()
}

/// A run's per-epoch train and test accuracy from `run.json`'s `history` (empty if absent); the
/// test accuracy is `NaN` at epochs where the trainer did not measure it (`null`).
pub fn accuracy_history(run: &Run) -> Vec<(u32, f64, f64)> {
    run.meta()
        .and_then(|m| m.get("history"))
        .and_then(|h| h.as_array())
        .map(|h| {
            h.iter()
                .filter_map(|r| {
                    Some((
                        u32::try_from(r.get("epoch")?.as_u64()?).ok()?,
                        r.get("train_accuracy")?.as_f64()?,
                        r.get("test_accuracy")
                            .and_then(serde_json::Value::as_f64)
                            .unwrap_or(f64::NAN),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The first epoch from which the train accuracy stays 1 in an `(epoch, train, test)` history
/// ([`accuracy_history`]), if the last epoch has it.
pub(crate) fn zero_error_from_history(history: &[(u32, f64, f64)]) -> Option<u32> {
    history
        .iter()
        .rev()
        .take_while(|r| r.1 >= 1.0)
        .last()
        .map(|r| r.0)
}

/// Finding 1: NC on the train split and on the test split, against the test split's own class
/// means and against the train split's.
#[derive(Debug, Clone)]
pub struct TrainTestCollapse {
    /// Run name.
    pub run: String,
    /// Layer measured (the last hidden layer).
    pub layer: String,
    /// Every (epoch, split), each split against its own class means.
    pub own: Vec<NcReport>,
    /// The test split of every epoch against the train split's class means.
    pub test_vs_train_means: Vec<NcReport>,
    /// `(epoch, train accuracy, test accuracy)` from `run.json`.
    pub history: Vec<(u32, f64, f64)>,
}

impl TrainTestCollapse {
    /// Measures the run's last layer (with its classifier, so NC2 of W, NC3 and NC4 are there).
    ///
    /// # Errors
    /// Loading and metric errors, with the file, epoch and split at fault.
    pub fn measure(run: &Run) -> Result<Self> {
        let layer = last_layer(run)?;
        let scan = run.features(&layer)?;
        let classifier = run.dir().join("classifier.parquet");
        let options = MeasureOptions {
            classifier: classifier.exists().then_some(classifier),
            ..MeasureOptions::default()
        };
        let own = measure_scan(&scan, &options)?;
        let test_vs_train_means = measure_scan(
            &scan,
            &MeasureOptions {
                split: Some("test".into()),
                config: NcConfig {
                    reference: ReferenceChoice::Train,
                    ..options.config
                },
                ..options
            },
        )?;
        Ok(TrainTestCollapse {
            run: run.name(),
            layer,
            own,
            test_vs_train_means,
            history: accuracy_history(run),
        })
    }

    /// NC1 per epoch: train, test (own means), test (train means).
    pub fn nc1(&self) -> [Vec<(u32, f64)>; 3] {
        [
            series(&self.own, "train"),
            series(&self.own, "test"),
            series(&self.test_vs_train_means, "test"),
        ]
    }

    /// The first epoch from which the training error stays 0 (from `run.json`).
    pub fn zero_train_error_epoch(&self) -> Option<u32> {
        zero_error_from_history(&self.history)
    }

    /// Tidy rows `epoch, split, layer, metric, value`, where `split` is `train`,
    /// `test (own means)` or `test (train means)`.
    ///
    /// # Errors
    /// Building the DataFrame.
    pub fn tidy(&self) -> Result<DataFrame> {
        let relabel = |r: &NcReport, split: &str| NcReport {
            split: Some(split.to_string()),
            ..r.clone()
        };
        let mut all: Vec<NcReport> = self
            .own
            .iter()
            .map(|r| match r.split.as_deref() {
                Some("test") => relabel(r, "test (own means)"),
                _ => r.clone(),
            })
            .collect();
        all.extend(
            self.test_vs_train_means
                .iter()
                .map(|r| relabel(r, "test (train means)")),
        );
        Ok(NcReport::to_tidy_many(&all)?)
    }

    /// NC1 vs epoch: train (solid), test with its own means and with the train means (dashed).
    ///
    /// # Errors
    /// Building the table or drawing.
    pub fn figure(&self) -> Result<Figure> {
        Ok(EpochPlot::new(&self.tidy()?)
            .metric(Metric::Nc1)
            .title(format!(
                "Finding 1 — train vs test collapse ({}, {})",
                self.run, self.layer
            ))
            .draw()?)
    }

    /// NC1–NC4 vs epoch on one canvas (each split with its own means).
    ///
    /// # Errors
    /// Drawing.
    pub fn overview(&self) -> Result<Figure> {
        Ok(SmallMultiples::nc_overview(&self.own)
            .title(format!("NC1–NC4 ({}, {})", self.run, self.layer))
            .draw()?)
    }
}

/// Finding 2: source NC1 (on the coarse labels the network was trained on) and the accuracy of a
/// linear probe on the fine labels, per checkpoint.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Run name.
    pub run: String,
    /// Layer measured (the last hidden layer).
    pub layer: String,
    /// Train split, coarse labels, own means: the source task's collapse.
    pub source: Vec<NcReport>,
    /// Train split, fine labels: collapse of the fine classes.
    pub fine: Vec<NcReport>,
    /// Probe on the fine labels (fitted on the train split, scored on the test split), one per
    /// checkpoint.
    pub probes: Vec<ProbeReport>,
}

/// Ridge penalties (per sample, on standardised features) among which [`Transfer::measure`]'s
/// probe chooses at every checkpoint, on a held-out 20 % of each class of the train split.
///
/// Choosing λ per checkpoint keeps the probe fair to every epoch: the features' scale and
/// conditioning change by orders of magnitude while they collapse, and a fixed λ would be too
/// strong for some checkpoints and too weak for others. With a fixed λ the drop measured on the
/// bundled run is larger (λ = 10⁻³ on standardised features: 73.8 % → 65.9 %; λ = 10⁻³ on raw
/// features: 72.0 % → 33.0 %), so the chosen probe is the conservative one.
pub const TRANSFER_PENALTY_GRID: [f64; 6] = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];

impl Transfer {
    /// Measures the run's last layer with a least-squares probe whose ridge penalty is chosen per
    /// checkpoint among [`TRANSFER_PENALTY_GRID`] on held-out train rows (the test split is never
    /// used for the choice).
    ///
    /// # Errors
    /// Loading, metric and probe errors (e.g. a run without a `coarse` column).
    pub fn measure(run: &Run) -> Result<Self> {
        Self::measure_with(
            run,
            &LinearProbe::least_squares().ridge_grid(&TRANSFER_PENALTY_GRID),
        )
    }

    /// As [`Transfer::measure`] with another probe: any linfa estimator [`probe_scan`](crate::probe::probe_scan) takes
    /// (e.g. a [`LinearProbe`], whose label column is set to `label`, or
    /// `linfa_logistic::MultiLogisticRegression`), fitted on the fine labels.
    ///
    /// # Errors
    /// As [`Transfer::measure`].
    pub fn measure_with<E, Er>(run: &Run, probe: &E) -> Result<Self>
    where
        E: Fit<Array2<f64>, Array1<usize>, Er> + 'static,
        E::Object: PredictInplace<Array2<f64>, Array1<usize>> + 'static,
        Er: std::error::Error + From<linfa::error::Error>,
    {
        let layer = last_layer(run)?;
        let scan = run.features(&layer)?;
        let train_only = MeasureOptions {
            split: Some("train".into()),
            ..MeasureOptions::default()
        };
        let source = measure_scan(
            &scan,
            &MeasureOptions {
                labels: LabelColumn::Coarse,
                ..train_only.clone()
            },
        )?;
        let fine = measure_scan(&scan, &train_only)?;
        let probes = probe_scan_on(&scan, probe, LabelColumn::Label, None)?;
        Ok(Transfer {
            run: run.name(),
            layer,
            source,
            fine,
            probes,
        })
    }

    /// `(epoch, source NC1, fine-label probe test accuracy)` per checkpoint.
    pub fn points(&self) -> Vec<(u32, f64, f64)> {
        self.source
            .iter()
            .filter_map(|r| {
                let e = r.epoch?;
                let p = self.probes.iter().find(|p| p.epoch == Some(e))?;
                Some((e, r.nc1, p.test_accuracy))
            })
            .collect()
    }

    /// Tidy rows `epoch, layer, series, value` with series `source NC1 (coarse)`,
    /// `fine NC1`, `probe test accuracy (fine)` and `probe train accuracy (fine)`.
    ///
    /// # Errors
    /// Building the DataFrame.
    pub fn tidy(&self) -> Result<DataFrame> {
        let (mut e, mut s, mut v) = (Vec::new(), Vec::new(), Vec::new());
        let mut push = |epoch: Option<u32>, series: &str, value: f64| {
            e.push(epoch);
            s.push(series.to_string());
            v.push(value);
        };
        for r in &self.source {
            push(r.epoch, "source NC1 (coarse)", r.nc1);
        }
        for r in &self.fine {
            push(r.epoch, "fine NC1", r.nc1);
        }
        for p in &self.probes {
            push(p.epoch, "probe test accuracy (fine)", p.test_accuracy);
            push(p.epoch, "probe train accuracy (fine)", p.train_accuracy);
        }
        let n = v.len();
        DataFrame::new(vec![
            Column::new("epoch".into(), e),
            Column::new("layer".into(), vec![self.layer.clone(); n]),
            Column::new("series".into(), s),
            Column::new("value".into(), v),
        ])
        .map_err(|e| {
            crate::features::FeatureError::Polars {
                path: "<transfer table>".into(),
                message: e.to_string(),
            }
            .into()
        })
    }

    /// Source NC1 (coarse labels, train split) vs epoch.
    ///
    /// # Errors
    /// Drawing.
    pub fn figure_source_nc1(&self) -> Result<Figure> {
        Ok(EpochPlot::new(&self.source)
            .metric(Metric::Nc1)
            .title(format!("Source NC1 (coarse labels) — {}", self.run))
            .draw()?)
    }

    /// Fine-label probe accuracy (train and test splits) vs epoch.
    ///
    /// # Errors
    /// Drawing.
    pub fn figure_probe(&self) -> Result<Figure> {
        Ok(EpochPlot::probe_accuracy(&self.probes)
            .title(format!("Fine-label linear probe — {}", self.run))
            .draw()?)
    }

    /// Fine-label probe test accuracy against source NC1, one point per checkpoint.
    ///
    /// # Errors
    /// Drawing.
    pub fn figure_scatter(&self) -> Result<Figure> {
        Ok(Nc1AccuracyPlot::new(&self.source, &self.probes)
            .nc_split("train")
            .probe_split("test")
            .title(format!("Transfer vs source collapse — {}", self.run))
            .draw()?)
    }
}

/// Finding 3: NC1 of every layer at every checkpoint (train split).
#[derive(Debug, Clone)]
pub struct Cascade {
    /// Run name.
    pub run: String,
    /// Layers in network order.
    pub layers: Vec<String>,
    /// One report per (layer, epoch), train split, own means.
    pub reports: Vec<NcReport>,
}

impl Cascade {
    /// Measures the train split of every layer of the run.
    ///
    /// # Errors
    /// Loading and metric errors, with the file, epoch and split at fault.
    pub fn measure(run: &Run) -> Result<Self> {
        let layers = run.layers();
        let options = MeasureOptions {
            split: Some("train".into()),
            ..MeasureOptions::default()
        };
        let mut reports = Vec::new();
        for l in &layers {
            let mut r = measure_scan(&run.features(l)?, &options)?;
            for x in &mut r {
                x.layer = Some(l.clone());
            }
            reports.extend(r);
        }
        Ok(Cascade {
            run: run.name(),
            layers,
            reports,
        })
    }

    /// Tidy rows `epoch, split, layer, metric, value` of every report.
    ///
    /// # Errors
    /// Building the DataFrame.
    pub fn tidy(&self) -> Result<DataFrame> {
        Ok(NcReport::to_tidy_many(&self.reports)?)
    }

    /// NC1 of each layer (network order) at `epoch`.
    pub fn nc1_at(&self, epoch: u32) -> Vec<(String, f64)> {
        self.layers
            .iter()
            .filter_map(|l| {
                self.reports
                    .iter()
                    .find(|r| r.epoch == Some(epoch) && r.layer.as_deref() == Some(l))
                    .map(|r| (l.clone(), r.nc1))
            })
            .collect()
    }

    /// The checkpoints measured, ascending.
    pub fn epochs(&self) -> Vec<u32> {
        let mut e: Vec<u32> = self.reports.iter().filter_map(|r| r.epoch).collect();
        e.sort_unstable();
        e.dedup();
        e
    }

    /// NC1 vs layer, one line per checkpoint.
    ///
    /// # Errors
    /// Drawing.
    pub fn figure_layers(&self) -> Result<Figure> {
        Ok(LayerPlot::new(&self.reports)
            .metric(Metric::Nc1)
            .layers(&self.layers)
            .title(format!("Finding 3 — NC1 by layer ({})", self.run))
            .draw()?)
    }

    /// Layer × epoch heat map of NC1 (log colour scale).
    ///
    /// # Errors
    /// Drawing.
    pub fn figure_heatmap(&self) -> Result<Figure> {
        Ok(HeatMap::new(&self.reports)
            .metric(Metric::Nc1)
            .layers(&self.layers)
            .title(format!("NC1, layer × epoch ({})", self.run))
            .draw()?)
    }
}

/// The bundled studies: `(preset, dataset)` of finding 1 (two datasets), 2 and 3.
pub const BUNDLED_STUDIES: [(&str, &str); 4] = [
    ("train-test", "mnist"),
    ("train-test", "fashion-mnist"),
    ("transfer", "fashion-mnist"),
    ("cascade", "mnist"),
];

/// What [`reproduce`] did: the check of each finding, the figures it wrote, and notes (e.g. a
/// baseline it could not compute).
#[derive(Debug, Clone)]
pub struct Reproduction {
    /// One check per criterion, in the order of the paper.
    pub checks: Vec<Check>,
    /// Every file written.
    pub written: Vec<std::path::PathBuf>,
    /// Notes, e.g. `raw-pixel baseline left out: …`.
    pub notes: Vec<String>,
}

/// Runs every finding on the bundled studies under `runs_dir` (`data/runs`, seeds 0–4 of each
/// preset; see [`studies`]), then writes each figure as SVG and PNG to `out_dir`.
///
/// Every input is read and every figure drawn before anything is written; each file is written
/// to a temporary name in `out_dir` and renamed into place, so a failure leaves no partial file.
/// The raw-pixel baseline of finding 2 needs Fashion-MNIST (`scripts/fetch-datasets.sh`); without
/// it the baseline is left out with a note.
///
/// # Errors
/// A missing study, loading, metric, probe and drawing errors (before anything is written), an
/// `out_dir` that is not a directory, and write errors.
pub fn reproduce(
    runs_dir: impl AsRef<std::path::Path>,
    out_dir: impl AsRef<std::path::Path>,
) -> Result<Reproduction> {
    use studies::{CascadeStudy, TrainTestStudy, TransferStudy};
    let (runs_dir, out) = (runs_dir.as_ref(), out_dir.as_ref());
    if out.exists() && !out.is_dir() {
        return Err(crate::plot::PlotError::Save {
            path: out.display().to_string(),
            message: "exists and is not a directory".into(),
        }
        .into());
    }
    let open = |(p, d): (&str, &str)| crate::study::Study::open(runs_dir, p, d);
    let studies: Vec<crate::study::Study> = BUNDLED_STUDIES
        .iter()
        .map(|&k| open(k))
        .collect::<Result<_, _>>()?;
    let mut figures: Vec<(String, Figure)> = Vec::new();
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    for s in &studies[..2] {
        let f = TrainTestStudy::measure(s)?;
        figures.push((format!("1-{}-nc1", s.name()), f.figure()?));
        figures.push((format!("1-{}-accuracy", s.name()), f.figure_accuracy()?));
        checks.push(f.check());
    }
    let t = TransferStudy::measure(&studies[2])?;
    let loader = crate::datasets::DatasetKind::FashionMnist.loader();
    let pixels = match TransferStudy::pixel_baseline(&studies[2], &loader) {
        Ok(i) => Some(i.mean),
        Err(e) => {
            notes.push(format!("raw-pixel baseline left out: {e}"));
            None
        }
    };
    let name = studies[2].name();
    figures.push((format!("2-{name}-probe"), t.figure_probe(pixels)?));
    figures.push((format!("2-{name}-nc1"), t.figure_nc1()?));
    figures.push((format!("2-{name}-probe-vs-nc1"), t.figure_scatter()?));
    checks.push(t.check());
    let c = CascadeStudy::measure(&studies[3])?;
    let name = studies[3].name();
    figures.push((
        format!("3-{name}-nc1-by-layer-train"),
        c.figure_layers("train")?,
    ));
    figures.push((
        format!("3-{name}-nc1-by-layer-test"),
        c.figure_layers("test")?,
    ));
    figures.push((format!("3-{name}-heatmap"), c.figure_heatmap()?));
    checks.push(c.check());

    std::fs::create_dir_all(out).map_err(|e| crate::plot::PlotError::Save {
        path: out.display().to_string(),
        message: e.to_string(),
    })?;
    let mut written = Vec::new();
    for (name, fig) in &figures {
        for ext in ["svg", "png"] {
            let path = out.join(format!("{name}.{ext}"));
            let tmp = out.join(format!(".{name}.tmp.{ext}"));
            let saved = if ext == "svg" {
                fig.save_svg(&tmp)
            } else {
                fig.save_png(&tmp)
            };
            saved
                .and_then(|()| {
                    std::fs::rename(&tmp, &path).map_err(|e| crate::plot::PlotError::Save {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })
                })
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })?;
            written.push(path);
        }
    }
    Ok(Reproduction {
        checks,
        written,
        notes,
    })
}

pub mod studies;
