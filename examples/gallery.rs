//! Every figure of `neural_collapse::plot`, written as SVG and PNG to `target/gallery/`.
//!
//! ```text
//! cargo run --example gallery               # the first run in data/runs/ if any, else synthetic
//! cargo run --example gallery -- --synthetic
//! cargo run --example gallery -- data/runs/<run>
//! ```
//!
//! With a run directory (`features-<layer>.parquet`, `classifier.parquet`, `run.json`; see
//! `features::Run`) the NC metrics of every layer and checkpoint, least-squares probes and the
//! class-mean geometry are computed with the crate. Without one, synthetic features are drawn:
//! Gaussian classes whose means move toward a simplex ETF and whose within-class spread
//! shrinks with the epoch, faster in deeper layers and on the train split than on the test
//! split (a cartoon of Neural Collapse), with a classifier that aligns with the means.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{Array1, Array2};
use neural_collapse::plot::TidyRow;
use neural_collapse::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// What the figures are drawn from.
struct Data {
    name: String,
    layers: Vec<String>,
    nc: Vec<NcReport>,
    probes: Vec<ProbeReport>,
    /// (epoch, train error of the network), when predictions are known.
    train_error: Vec<(u32, f64)>,
    /// Features of the last layer at the last epoch (train split), and its classifier.
    last: Features,
    first: Features,
    classifier: Option<Classifier>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    let data = if args.iter().any(|a| a == "--synthetic") {
        synthetic()?
    } else if let Some(dir) = args.iter().find(|a| !a.starts_with("--")) {
        from_run(Path::new(dir))?
    } else {
        match first_run()? {
            Some(dir) => from_run(&dir)?,
            None => synthetic()?,
        }
    };
    eprintln!(
        "data: {} ({} layers, {} NC reports, {} probe reports) in {:.1?}",
        data.name,
        data.layers.len(),
        data.nc.len(),
        data.probes.len(),
        started.elapsed()
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/gallery");
    std::fs::create_dir_all(&out)?;

    let last_layer = data.layers.last().cloned().unwrap_or_default();
    let zero_error = terminal_epoch(&data.train_error);
    let mut figures: Vec<(&str, Figure)> = Vec::new();

    // 1. NC1 vs epoch of the last layer, train and test, with the epoch where the train error
    //    reaches 0.
    let mut nc1 = EpochPlot::new(&data.nc).metric("nc1").layer(&last_layer);
    if let Some(e) = zero_error {
        nc1 = nc1.marker(e, "train error = 0");
    }
    figures.push(("epoch_nc1", nc1.draw()?));

    // 2. Test NC1 of a few layers (one colour per layer), from a filtered polars DataFrame.
    let some_layers = pick(&data.layers, 4);
    let subset: Vec<NcReport> = data
        .nc
        .iter()
        .filter(|r| r.layer.as_ref().is_some_and(|l| some_layers.contains(l)))
        .cloned()
        .collect();
    let tidy = NcReport::to_tidy_many(&subset)?;
    figures.push((
        "epoch_nc1_layers",
        EpochPlot::new(&tidy)
            .metric("nc1")
            .title("NC1 vs epoch, several layers")
            .draw()?,
    ));

    // 3. NC1 vs layer, one line per epoch.
    figures.push((
        "layer_nc1",
        LayerPlot::new(&data.nc)
            .metric("nc1")
            .split("train")
            .draw()?,
    ));
    figures.push((
        "layer_nc1_train_test",
        LayerPlot::new(&data.nc)
            .metric("nc1")
            .max_epochs(4)
            .draw()?,
    ));

    // 4. Heat map of NC1 over layers × epochs.
    figures.push((
        "heatmap_nc1",
        HeatMap::new(&data.nc).metric("nc1").split("train").draw()?,
    ));
    figures.push((
        "heatmap_cdnv_test",
        HeatMap::new(&data.nc).metric("cdnv").split("test").draw()?,
    ));

    // 5. Probe accuracy vs epoch (a few layers) and vs NC1.
    let probe_subset: Vec<ProbeReport> = data
        .probes
        .iter()
        .filter(|r| r.layer.as_ref().is_some_and(|l| some_layers.contains(l)))
        .cloned()
        .collect();
    let classes = data.last.labels.iter().max().map_or(2, |m| *m + 1);
    figures.push((
        "probe_accuracy",
        EpochPlot::probe_accuracy(&probe_subset)
            .reference_line(1.0 / classes as f64, "chance 1/C")
            .draw()?,
    ));
    figures.push((
        "probe_vs_nc1",
        Nc1AccuracyPlot::new(&data.nc, &data.probes).draw()?,
    ));

    // 6. Class-mean geometry at the first and last checkpoints.
    let mut geometry = MeanGeometryPlot::from_features(&data.last).samples(600, 7);
    if let Some(c) = &data.classifier {
        geometry = geometry.classifier(c);
    }
    figures.push(("geometry_last", geometry.draw()?));
    figures.push((
        "geometry_first",
        MeanGeometryPlot::from_features(&data.first)
            .samples(600, 7)
            .draw()?,
    ));

    // 7. NC1–NC4 of the last layer on one canvas.
    let mut grid = SmallMultiples::nc_overview(&data.nc).layer(&last_layer);
    if let Some(e) = zero_error {
        grid = grid.marker(e, "train error = 0");
    }
    figures.push(("small_multiples", grid.draw()?));

    for (name, fig) in &figures {
        fig.save(out.join(format!("{name}.svg")))?;
        fig.save(out.join(format!("{name}.png")))?;
    }
    eprintln!(
        "wrote {} figures (SVG + PNG) to {} in {:.1?}",
        figures.len(),
        out.display(),
        started.elapsed()
    );
    Ok(())
}

/// `k` layers spread over the network (first and last included).
fn pick(layers: &[String], k: usize) -> Vec<String> {
    if layers.len() <= k {
        return layers.to_vec();
    }
    (0..k)
        .map(|i| layers[i * (layers.len() - 1) / (k - 1)].clone())
        .collect()
}

/// The first epoch from which the train error stays 0.
fn terminal_epoch(errors: &[(u32, f64)]) -> Option<u32> {
    let rows: Vec<TidyRow> = errors
        .iter()
        .map(|&(e, v)| TidyRow {
            run: None,
            epoch: Some(e),
            layer: None,
            probe: None,
            split: Some("train".into()),
            metric: "error".into(),
            value: v,
            band: None,
        })
        .collect();
    epoch_reaching(&rows, "error", "train", 0.0, 0.0)
        .ok()
        .flatten()
}

// ---------------------------------------------------------------------------------------------
// A run directory.

fn first_run() -> Result<Option<PathBuf>, Box<dyn Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/runs");
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(None);
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("run.json").exists())
        .collect();
    dirs.sort();
    Ok(dirs.into_iter().next())
}

fn from_run(dir: &Path) -> Result<Data, Box<dyn Error>> {
    let run = Run::open(dir)?;
    let layers = run.layers();
    let last_layer = layers.last().ok_or("the run has no feature files")?.clone();
    // The classifier is over the trained-on classes: with a coarse-label map it does not fit
    // the fine labels NC is measured on, so it is left out.
    let coarse = run
        .meta()
        .and_then(|m| m.get("coarse"))
        .is_some_and(|c| !c.is_null());
    let classifier_path = Some(dir.join("classifier.parquet")).filter(|p| p.exists() && !coarse);
    let mut nc = Vec::new();
    let mut probes = Vec::new();
    let probe = LinearProbe::least_squares().ridge(1e-3);
    for layer in &layers {
        let t = Instant::now();
        let scan = run.features(layer)?;
        let options = MeasureOptions {
            classifier: classifier_path.clone().filter(|_| layer == &last_layer),
            ..MeasureOptions::default()
        };
        nc.extend(measure_scan(&scan, &options)?);
        probes.extend(probe_scan(&scan, &probe, None)?);
        eprintln!("  {layer}: {:.1?}", t.elapsed());
    }
    let scan = run.features(&last_layer)?;
    let epochs = scan.epochs()?;
    // The train error of the network: from run.json's per-epoch history (the whole training
    // subset) when present, else from the stored predictions of the exported samples.
    let history = run
        .meta()
        .and_then(|m| m.get("history"))
        .and_then(|h| h.as_array());
    let mut train_error: Vec<(u32, f64)> = history
        .map(|h| {
            h.iter()
                .filter_map(|e| {
                    let epoch = e.get("epoch")?.as_u64()? as u32;
                    let acc = e.get("train_accuracy")?.as_f64()?;
                    Some((epoch, 1.0 - acc))
                })
                .collect()
        })
        .unwrap_or_default();
    for &e in epochs.iter().filter(|_| history.is_none()) {
        let f = scan.epoch(e).split("train").load()?;
        if let Some(pred) = &f.pred {
            let target = f.coarse.as_ref().unwrap_or(&f.labels);
            let wrong = pred.iter().zip(target).filter(|(p, t)| p != t).count();
            train_error.push((e, wrong as f64 / pred.len().max(1) as f64));
        }
    }
    let first_epoch = *epochs.first().ok_or("no epochs")?;
    let last_epoch = *epochs.last().ok_or("no epochs")?;
    let last = scan.epoch(last_epoch).split("train").load()?;
    let first = scan.epoch(first_epoch).split("train").load()?;
    let classifier = if classifier_path.is_some() {
        Some(run.classifier(last_epoch)?)
    } else {
        None
    };
    Ok(Data {
        name: run.name(),
        layers,
        nc,
        probes,
        train_error,
        last,
        first,
        classifier,
    })
}

// ---------------------------------------------------------------------------------------------
// Synthetic collapse.

const CLASSES: usize = 10;
const DIM: usize = 24;
const TRAIN_PER_CLASS: usize = 40;
const TEST_PER_CLASS: usize = 20;
const LAYERS: usize = 10;
const EPOCHS: [u32; 10] = [0, 1, 2, 5, 10, 20, 50, 100, 200, 400];

/// A centred simplex ETF of `CLASSES` unit vectors in `DIM` dimensions (rows).
fn simplex_etf(rng: &mut StdRng) -> Array2<f64> {
    // Orthonormal rows by Gram–Schmidt, then centred and rescaled.
    let mut q = Array2::<f64>::zeros((CLASSES, DIM));
    for c in 0..CLASSES {
        let mut v: Array1<f64> = (0..DIM).map(|_| rng.sample(StandardNormal)).collect();
        for k in 0..c {
            let proj = v.dot(&q.row(k));
            v.scaled_add(-proj, &q.row(k));
        }
        let n = v.dot(&v).sqrt();
        q.row_mut(c).assign(&(v / n));
    }
    let mean = q.mean_axis(ndarray::Axis(0)).unwrap();
    let mut m = q - &mean;
    for mut row in m.outer_iter_mut() {
        let n = row.dot(&row).sqrt();
        row /= n;
    }
    m
}

/// Collapse progress in `[0, 1)` of a layer (0-based) at an epoch: faster in deeper layers.
fn progress(layer: usize, epoch: u32) -> f64 {
    let depth = (layer + 1) as f64 / LAYERS as f64;
    let time = 1.0 - (-(epoch as f64) / 40.0).exp();
    time * (0.35 + 0.64 * depth)
}

fn synthetic() -> Result<Data, Box<dyn Error>> {
    let mut rng = StdRng::seed_from_u64(2022);
    let etf = simplex_etf(&mut rng);
    let layer_names: Vec<String> = (1..=LAYERS).map(|l| format!("layer{l}")).collect();
    // Random initial class means per layer, and a random initial classifier.
    let init: Vec<Array2<f64>> = (0..LAYERS)
        .map(|_| {
            Array2::from_shape_fn((CLASSES, DIM), |_| {
                0.6 * rng.sample::<f64, _>(StandardNormal)
            })
        })
        .collect();
    let w0 = Array2::from_shape_fn((CLASSES, DIM), |_| rng.sample::<f64, _>(StandardNormal));

    let mut nc = Vec::new();
    let mut probes = Vec::new();
    let mut train_error = Vec::new();
    let mut last = None;
    let mut first = None;
    let mut classifier = None;
    let probe = LinearProbe::least_squares().ridge(1e-3);
    for &epoch in &EPOCHS {
        for (l, name) in layer_names.iter().enumerate() {
            let p = progress(l, epoch);
            let means = &init[l] * (1.0 - p) + &(&etf * (3.0 * p));
            let sigma_train = 1.0 * (1.0 - 0.995 * p);
            let sigma_test = 1.0 * (1.0 - 0.8 * p);
            let mut draw = |per_class: usize, sigma: f64, split: &str| {
                let n = per_class * CLASSES;
                let labels: Vec<u32> = (0..n).map(|i| (i % CLASSES) as u32).collect();
                let x = Array2::from_shape_fn((n, DIM), |(i, j)| {
                    (means[[i % CLASSES, j]] + sigma * rng.sample::<f64, _>(StandardNormal)) as f32
                });
                Features::new(x, labels)
                    .with_epoch(epoch)
                    .with_split(split)
                    .with_layer(name.clone())
            };
            let mut train = draw(TRAIN_PER_CLASS, sigma_train, "train");
            let mut test = draw(TEST_PER_CLASS, sigma_test, "test");
            let is_last = l == LAYERS - 1;
            let w = is_last.then(|| {
                let q = (1.0 - (-(epoch as f64) / 15.0).exp()).min(1.0);
                Classifier {
                    w: &w0 * (1.0 - q) + &(&etf * (2.0 * q)),
                    b: Array1::zeros(CLASSES),
                }
            });
            if let Some(w) = &w {
                for f in [&mut train, &mut test] {
                    let x = f.x.mapv(f64::from);
                    let logits = x.dot(&w.w.t());
                    let pred: Vec<u32> = logits
                        .outer_iter()
                        .map(|row| {
                            let mut best = 0;
                            for (k, v) in row.iter().enumerate() {
                                if *v > row[best] {
                                    best = k;
                                }
                            }
                            best as u32
                        })
                        .collect();
                    f.pred = Some(pred);
                }
                let pred = train.pred.as_ref().unwrap();
                let wrong = pred
                    .iter()
                    .zip(&train.labels)
                    .filter(|(p, y)| p != y)
                    .count();
                train_error.push((epoch, wrong as f64 / pred.len() as f64));
            }
            let mut params = NcParams::new();
            if let Some(w) = &w {
                params = params.classifier(w);
            }
            nc.push(params.measure_features(&train)?);
            nc.push(params.measure_features(&test)?);
            probes.push(probe.fit(&train)?.report(&train, &test)?);
            if is_last {
                if epoch == EPOCHS[0] {
                    first = Some(train.clone());
                }
                if epoch == EPOCHS[EPOCHS.len() - 1] {
                    last = Some(train.clone());
                    classifier = w.clone();
                }
            }
        }
    }
    Ok(Data {
        name: "synthetic".into(),
        layers: layer_names,
        nc,
        probes,
        train_error,
        last: last.ok_or("no last checkpoint")?,
        first: first.ok_or("no first checkpoint")?,
        classifier,
    })
}
