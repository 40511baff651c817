//! The bundled studies in `data/runs/` (every preset at seeds 0–4) open through `features` and
//! `study`, and match their `run.json`.

use std::path::{Path, PathBuf};

use neural_collapse::features::Run;

/// The studies the presets make at their default scale (see data/README.md), each at these
/// seeds.
const STUDIES: [&str; 4] = [
    "mnist-train-test",
    "fashion-mnist-train-test",
    "fashion-mnist-transfer",
    "mnist-cascade",
];
const SEEDS: [u64; 5] = [0, 1, 2, 3, 4];

fn runs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/runs")
}

fn u64s(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_u64().unwrap())
        .collect()
}

#[test]
fn every_bundled_run_matches_its_run_json() {
    let mut total_bytes = 0u64;
    let names = STUDIES
        .iter()
        .flat_map(|s| SEEDS.iter().map(move |k| format!("{s}-s{k}")));
    for name in names {
        let name = name.as_str();
        let dir = runs_dir().join(name);
        let run = Run::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let meta = run.meta().unwrap_or_else(|| panic!("{name}: no run.json"));
        let layers: Vec<String> = meta["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            run.layers(),
            layers,
            "{name}: feature files vs run.json layers"
        );
        let epochs = u64s(&meta["epochs"]);
        assert_eq!(epochs[0], 0, "{name}: epoch 0 is exported");
        let per_class = meta["export"]["per_class"].as_u64().unwrap() as usize;
        let test_per_class = meta["export"]["test_per_class"].as_u64().unwrap() as usize;
        assert_eq!(
            format!(
                "{}-s{}",
                meta["run"].as_str().unwrap().rsplit_once("-s").unwrap().0,
                meta["seed"]
            ),
            name,
            "{name}: run name and seed"
        );
        assert!(!meta["why"].as_str().unwrap().is_empty(), "{name}: why");
        let classes = meta["classes"].as_u64().unwrap() as usize;
        let trained = meta["trained_classes"].as_u64().unwrap() as usize;
        let width = meta["architecture"]["width"].as_u64().unwrap() as usize;
        assert!(meta["command"].as_str().unwrap().contains("train --preset"));
        for layer in &layers {
            let scan = run.features(layer).unwrap();
            let cps = scan.checkpoints().unwrap();
            let want: Vec<(u32, String)> = epochs
                .iter()
                .flat_map(|&e| {
                    [
                        (e as u32, "test".to_string()),
                        (e as u32, "train".to_string()),
                    ]
                })
                .collect();
            let mut got = cps.clone();
            got.sort();
            let mut want_sorted = want.clone();
            want_sorted.sort();
            assert_eq!(got, want_sorted, "{name}/{layer}: checkpoints");
            for (split, per_class) in [("train", per_class), ("test", test_per_class)] {
                let f = scan
                    .epoch(*epochs.last().unwrap() as u32)
                    .split(split)
                    .load()
                    .unwrap();
                assert_eq!(
                    f.x.dim(),
                    (per_class * classes, width),
                    "{name}/{layer}/{split}"
                );
                assert_eq!(
                    neural_collapse::datasets::class_counts(&f.labels, classes),
                    vec![per_class; classes]
                );
                assert_eq!(
                    f.coarse.is_some(),
                    trained != classes,
                    "{name}: coarse column"
                );
                assert!(f.pred.unwrap().iter().all(|&p| (p as usize) < trained));
            }
        }
        for &e in &epochs {
            let clf = run.classifier(e as u32).unwrap();
            assert_eq!(
                clf.w.dim(),
                (trained, width),
                "{name}: classifier at epoch {e}"
            );
        }
        // The final accuracies recorded in run.json are those of the last history entry.
        let hist = meta["history"].as_array().unwrap();
        assert_eq!(hist.len() as u64, epochs.last().unwrap() + 1);
        assert_eq!(meta["final"], *hist.last().unwrap());
        for entry in std::fs::read_dir(&dir).unwrap() {
            total_bytes += entry.unwrap().metadata().unwrap().len();
        }
    }
    assert!(
        total_bytes <= 60 * 1024 * 1024,
        "bundled runs take {total_bytes} bytes (limit 60 MB)"
    );
}

/// Every study opens with its five seeds, every run reaches zero train error by about a third of
/// its epochs (at most 35 % of them), and at least 6 checkpoints lie at or after the epoch from
/// which the train error stays zero (issue #13: a dense terminal phase in every run, not only on
/// average).
#[test]
fn every_study_has_five_seeds_and_a_dense_terminal_phase() {
    use neural_collapse::findings::BUNDLED_STUDIES;
    use neural_collapse::study::Study;
    for (preset, dataset) in BUNDLED_STUDIES {
        let s = Study::open(runs_dir(), preset, dataset).unwrap();
        assert_eq!(s.seeds(), SEEDS.to_vec(), "{preset}/{dataset}");
        for (seed, run) in s.runs() {
            let meta = run.meta().unwrap();
            let epochs = u64s(&meta["epochs"]);
            let num_epochs = meta["num_epochs"].as_u64().unwrap();
            let zero = meta["zero_train_error_epoch"].as_u64().unwrap_or_else(|| {
                panic!("{preset}/{dataset} seed {seed}: never reaches zero train error")
            });
            assert!(
                zero as f64 <= 0.35 * num_epochs as f64,
                "{preset}/{dataset} seed {seed}: zero train error from epoch {zero} of {num_epochs}"
            );
            let after = epochs.iter().filter(|&&e| e >= zero).count();
            assert!(
                after >= 6,
                "{preset}/{dataset} seed {seed}: {after} checkpoints at or after epoch {zero}"
            );
        }
    }
}
