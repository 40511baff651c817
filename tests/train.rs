//! Training smoke tests (feature `train`): synthetic images always, real MNIST when the files are
//! there (required when `NEURAL_COLLAPSE_REQUIRE_DATA=1`, as in CI).
#![cfg(feature = "train")]

use ndarray::Array2;
use neural_collapse::datasets::{CoarseMap, DatasetKind, Split, SplitMix64, IMAGE_PIXELS};
use neural_collapse::features::{read_classifier, FeatureScan, Run};
use neural_collapse::train::{
    checkpoint_epochs, Architecture, LayerSelection, Loss, TrainConfig, TrainError,
};

/// `per_class` images per class: class c lights up a 4-pixel-high band at rows 2c..2c+4 (plus
/// uniform noise), so the classes are learnable but not trivially separable by one pixel.
fn synthetic(per_class: usize, classes: usize, seed: u64) -> Split {
    let mut rng = SplitMix64::new(seed);
    let n = per_class * classes;
    let mut x = Array2::<f32>::zeros((n, IMAGE_PIXELS));
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % classes;
        labels.push(c as u32);
        for p in 0..IMAGE_PIXELS {
            let row = p / 28;
            let noise = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
            let on = row >= 2 * c + 2 && row < 2 * c + 6;
            x[[i, p]] = 0.6 * noise + if on { 0.4 } else { 0.0 };
        }
    }
    Split { images: x, labels }
}

fn small(out: &std::path::Path) -> TrainConfig {
    TrainConfig::new(DatasetKind::Mnist)
        .architecture(Architecture::Mlp {
            depth: 2,
            width: 32,
        })
        .per_class(20)
        .epochs(6)
        .batch_size(32)
        .export_per_class(5)
        .checkpoints(4)
        .progress(false)
        .out(out)
}

#[test]
fn checkpoints_are_log_spaced_from_zero_to_last() {
    for (epochs, count) in [(1, 2), (10, 4), (100, 12), (350, 15), (7, 30)] {
        let c = checkpoint_epochs(epochs, count);
        assert_eq!(c[0], 0);
        assert_eq!(*c.last().unwrap(), epochs);
        assert!(c.windows(2).all(|w| w[0] < w[1]), "{c:?}");
        assert!(c.len() <= count, "{c:?}");
    }
    // Log spacing: 1, 10, 100 for three points after 0.
    assert_eq!(checkpoint_epochs(100, 4), vec![0, 1, 10, 100]);
}

#[test]
fn smoke_run_loss_falls_and_export_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let train = synthetic(30, 10, 1);
    let test = synthetic(10, 10, 2);
    let cfg = small(&out).layers(LayerSelection::All);
    let s = cfg.run_on(&train, &test).unwrap();

    // Loss falls, accuracy rises above chance.
    let first = s.history[1].train_loss;
    let last = s.last().unwrap().train_loss;
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    assert!(s.last().unwrap().train_accuracy > 0.5, "{:?}", s.last());
    assert_eq!(s.history.len(), 7);
    assert_eq!(s.checkpoints, checkpoint_epochs(6, 4));
    assert!(s.samples_per_second > 0.0);

    // Schedule: η₀ until epoch 2, ×0.1 from 3, ×0.01 from 5 (milestones at 1/3 and 2/3 of 6).
    assert_eq!(cfg.lr_drop_epochs(), vec![3, 5]);
    let lrs: Vec<f64> = s.history[1..].iter().map(|r| r.lr).collect();
    for (got, factor) in lrs.iter().zip([1.0, 1.0, 0.1, 0.1, 0.01, 0.01]) {
        assert!((got - factor * cfg.lr).abs() < 1e-12 * cfg.lr, "{lrs:?}");
    }

    // The export reads back with the right shapes through `features`.
    let run = Run::open(&out).unwrap();
    assert_eq!(run.layers(), vec!["fc1", "fc2"]);
    let meta = run.meta().unwrap();
    assert_eq!(meta["layers"], serde_json::json!(["fc1", "fc2"]));
    assert_eq!(meta["epochs"], serde_json::json!(s.checkpoints));
    assert!(meta["command"].as_str().unwrap().contains("--epochs 6"));
    for layer in ["fc1", "fc2"] {
        let scan = run.features(layer).unwrap();
        let cps = scan.checkpoints().unwrap();
        assert_eq!(cps.len(), 2 * s.checkpoints.len(), "{cps:?}");
        for split in ["train", "test"] {
            let f = scan.epoch(6).split(split).load().unwrap();
            assert_eq!(f.x.dim(), (50, 32));
            assert_eq!(f.labels.len(), 50);
            let counts = neural_collapse::datasets::class_counts(&f.labels, 10);
            assert_eq!(counts, vec![5; 10]);
            assert!(f.pred.is_some() && f.sample.is_some() && f.coarse.is_none());
            assert!(
                f.x.iter().all(|v| *v >= 0.0),
                "ReLU outputs are non-negative"
            );
        }
    }

    // Two methods agree: the stored predictions are argmax(W h + b) of the stored last layer
    // and classifier.
    let clf = run.classifier(6).unwrap();
    assert_eq!(clf.w.dim(), (10, 32));
    let f = run
        .features("fc2")
        .unwrap()
        .epoch(6)
        .split("test")
        .load()
        .unwrap();
    let pred = f.pred.clone().unwrap();
    let mut agree = 0;
    for (i, row) in f.x.outer_iter().enumerate() {
        let z: Vec<f64> = (0..10)
            .map(|c| {
                clf.b[c]
                    + row
                        .iter()
                        .zip(clf.w.row(c))
                        .map(|(h, w)| f64::from(*h) * w)
                        .sum::<f64>()
            })
            .collect();
        let arg = (0..10).max_by(|&a, &b| z[a].total_cmp(&z[b])).unwrap();
        agree += usize::from(arg as u32 == pred[i]);
    }
    assert!(agree >= 49, "stored pred agrees with W h + b on {agree}/50");
}

#[test]
fn same_seed_same_run_other_seed_other_init() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(20, 10, 3);
    let test = synthetic(5, 10, 4);
    let run = |name: &str, seed: u64| {
        let out = dir.path().join(name);
        let s = small(&out)
            .epochs(3)
            .seed(seed)
            .run_on(&train, &test)
            .unwrap();
        let x0 = FeatureScan::open(out.join("features-fc2.parquet"))
            .unwrap()
            .epoch(0)
            .split("train")
            .load()
            .unwrap()
            .x;
        (s, x0)
    };
    let (a, xa) = run("a", 7);
    let (b, xb) = run("b", 7);
    let (_, xc) = run("c", 8);
    assert_eq!(xa, xb);
    assert_ne!(xa, xc);
    for (ra, rb) in a.history.iter().zip(&b.history) {
        assert!((ra.train_loss - rb.train_loss).abs() <= 1e-6 * ra.train_loss.abs().max(1.0));
    }
}

#[test]
fn coarse_run_trains_on_coarse_labels_and_exports_fine_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("coarse");
    let map = CoarseMap::fashion_2way_semantic();
    let cfg = TrainConfig::new(DatasetKind::FashionMnist)
        .architecture(Architecture::Mlp {
            depth: 1,
            width: 16,
        })
        .per_class(20)
        .epochs(2)
        .export_per_class(4)
        .checkpoints(3)
        .loss(Loss::CrossEntropy)
        .coarse(Some(map.clone()))
        .progress(false)
        .out(&out);
    assert_eq!(cfg.trained_classes(), 2);
    cfg.run_on(&synthetic(20, 10, 5), &synthetic(4, 10, 6))
        .unwrap();
    let f = FeatureScan::open(out.join("features-fc1.parquet"))
        .unwrap()
        .epoch(2)
        .split("train")
        .load()
        .unwrap();
    let coarse = f.coarse.clone().unwrap();
    assert_eq!(coarse, map.map_labels(&f.labels).unwrap());
    assert!(f.pred.unwrap().iter().all(|&p| p < 2));
    let clf = read_classifier(out.join("classifier.parquet"), 2).unwrap();
    assert_eq!(clf.w.dim(), (2, 16));
}

#[test]
fn cnn_exports_its_three_layers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cnn");
    let cfg = TrainConfig::new(DatasetKind::Mnist)
        .architecture(Architecture::Cnn {
            channels: 4,
            width: 16,
        })
        .per_class(6)
        .epochs(1)
        .export_per_class(2)
        .checkpoints(2)
        .layers(LayerSelection::All)
        .progress(false)
        .out(&out);
    cfg.run_on(&synthetic(6, 10, 8), &synthetic(2, 10, 9))
        .unwrap();
    let run = Run::open(&out).unwrap();
    assert_eq!(run.layers(), vec!["conv1", "conv2", "fc1"]);
    let dims: Vec<usize> = run
        .layers()
        .iter()
        .map(|l| {
            run.features(l)
                .unwrap()
                .epoch(1)
                .split("test")
                .load()
                .unwrap()
                .dim()
        })
        .collect();
    assert_eq!(dims, vec![4 * 14 * 14, 8 * 7 * 7, 16]);
}

#[test]
fn bad_configurations_name_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let train = synthetic(10, 10, 1);
    let test = synthetic(3, 10, 2);
    let base = small(dir.path()).per_class(10);
    let err = base
        .clone()
        .export_per_class(11)
        .run_on(&train, &test)
        .unwrap_err();
    assert!(
        matches!(err, TrainError::Config(ref m) if m.contains("--export-per-class")),
        "{err}"
    );
    let err = base
        .clone()
        .per_class(11)
        .export_per_class(3)
        .run_on(&train, &test)
        .unwrap_err();
    assert!(
        matches!(err, TrainError::Config(ref m) if m.contains("class 0")),
        "{err}"
    );
    let err = base
        .clone()
        .export_per_class(4)
        .run_on(&train, &test)
        .unwrap_err();
    assert!(
        matches!(err, TrainError::Config(ref m) if m.contains("test split")),
        "{err}"
    );
    let err = base.clone().lr(-1.0).run_on(&train, &test).unwrap_err();
    assert!(
        matches!(err, TrainError::Config(ref m) if m.contains("--lr")),
        "{err}"
    );
    let err = base
        .clone()
        .layers(LayerSelection::Named(vec!["fc9".into()]))
        .run_on(&train, &test)
        .unwrap_err();
    assert!(
        matches!(err, TrainError::Config(ref m) if m.contains("fc9")),
        "{err}"
    );
    let err = base
        .export_per_class(3)
        .lr(1e6)
        .epochs(2)
        .run_on(&train, &test)
        .unwrap_err();
    assert!(matches!(err, TrainError::Diverged { .. }), "{err}");
}

#[test]
fn real_mnist_smoke_run() {
    let require = std::env::var("NEURAL_COLLAPSE_REQUIRE_DATA").is_ok_and(|v| v == "1");
    let data = match DatasetKind::Mnist.load() {
        Ok(d) => d,
        Err(e) if !require => {
            eprintln!("skipping: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small(&dir.path().join("mnist")).per_class(50).epochs(3);
    cfg.lr_milestones.clear(); // constant learning rate for so short a run
    let s = cfg.run_on(&data.train, &data.test).unwrap();
    let r = s.last().unwrap();
    assert!(r.train_loss < s.history[1].train_loss, "{:?}", s.history);
    assert!(r.train_accuracy > 0.8, "{r:?}");
    assert!(r.test_accuracy.is_some_and(|a| a > 0.6), "{r:?}");
}
