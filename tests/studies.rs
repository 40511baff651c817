//! The findings' criteria over seeds, on synthetic studies whose effect is known: each criterion
//! must PASS where the effect is built in and FAIL where it is absent.
//!
//! Features are class means plus Gaussian noise of standard deviation `s`, so NC1 scales as `s²`
//! (NC1 = s² · Tr(Σ_B†)/C for isotropic noise): a fall of `s` by 10× is a fall of NC1 by 100×.

use std::path::Path;

use ndarray::Array2;
use neural_collapse::features::{write_features, Features};
use neural_collapse::findings::studies::{CascadeStudy, TrainTestStudy, TransferStudy};
use neural_collapse::study::Study;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

const EPOCHS: [u32; 11] = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
const ZERO_ERROR: u32 = 10;

/// Rows: `per_class` samples of each class, `means[c] + s · N(0, I)`.
fn sample(
    means: &[Vec<f64>],
    per_class: usize,
    s: f64,
    rng: &mut rand::rngs::StdRng,
) -> (Array2<f32>, Vec<u32>) {
    let d = means[0].len();
    let n = means.len() * per_class;
    let mut x = Array2::<f32>::zeros((n, d));
    let mut labels = Vec::with_capacity(n);
    for (c, m) in means.iter().enumerate() {
        for i in 0..per_class {
            let row = c * per_class + i;
            for j in 0..d {
                let z: f64 = rng.sample(StandardNormal);
                x[[row, j]] = (m[j] + s * z) as f32;
            }
            labels.push(c as u32);
        }
    }
    (x, labels)
}

/// Class means at `scale` times the first `classes` unit vectors of R^d.
fn simplex(classes: usize, d: usize, scale: f64) -> Vec<Vec<f64>> {
    (0..classes)
        .map(|c| (0..d).map(|j| if j == c { scale } else { 0.0 }).collect())
        .collect()
}

/// `run.json` with the fields the studies read: train accuracy 1 from `zero` on.
fn write_meta(
    dir: &Path,
    preset: &str,
    dataset: &str,
    seed: u64,
    layers: &[&str],
    zero: Option<u32>,
) {
    let last = *EPOCHS.last().unwrap();
    let history: Vec<serde_json::Value> = (0..=last)
        .map(|e| {
            let fitted = zero.is_some_and(|z| e >= z);
            serde_json::json!({"epoch": e, "lr": 0.1, "train_loss": 0.1,
                "train_accuracy": if fitted { 1.0 } else { 0.9 }, "test_accuracy": 0.8})
        })
        .collect();
    let meta = serde_json::json!({"preset": preset, "dataset": dataset, "seed": seed,
        "layers": layers, "epochs": EPOCHS, "zero_train_error_epoch": zero,
        "lr_drop_epochs": [90], "history": history});
    std::fs::write(dir.join("run.json"), meta.to_string()).unwrap();
}

/// Finding 1: train noise `train_s(epoch)`, test noise `test_s(epoch)`, 5 seeds.
fn train_test_study(
    root: &Path,
    train_s: impl Fn(u32) -> f64,
    test_s: impl Fn(u32) -> f64,
) -> Study {
    for seed in 0..5u64 {
        let dir = root.join(format!("toy-train-test-s{seed}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let means = simplex(4, 6, 1.0);
        let mut feats = Vec::new();
        for &e in &EPOCHS {
            for (split, s) in [("train", train_s(e)), ("test", test_s(e))] {
                let (x, y) = sample(&means, 25, s, &mut rng);
                feats.push(
                    Features::new(x, y)
                        .with_epoch(e)
                        .with_split(split)
                        .with_layer("fc"),
                );
            }
        }
        write_features(dir.join("features-fc.parquet"), &feats).unwrap();
        write_meta(&dir, "train-test", "toy", seed, &["fc"], Some(ZERO_ERROR));
    }
    Study::open(root, "train-test", "toy").unwrap()
}

#[test]
fn finding_1_passes_with_the_effect_and_fails_without() {
    // Train noise falls 10× over the terminal phase (NC1 100×); test noise stays.
    let dir = tempfile::tempdir().unwrap();
    let s = train_test_study(
        dir.path(),
        |e| {
            if e <= ZERO_ERROR {
                0.3
            } else {
                0.3 * 0.1f64.powf((e - 10) as f64 / 90.0)
            }
        },
        |_| 0.4,
    );
    let study = TrainTestStudy::measure(&s).unwrap();
    let t = study.terminal();
    assert!(
        t.iter()
            .all(|p| p.start == Some(10) && p.end == 100 && p.checkpoints == 10),
        "{t:?}"
    );
    // The measured fall is that of s² up to sampling noise of 100 samples.
    assert!(
        t.iter()
            .all(|p| p.train_fall > 50.0 && p.train_fall < 200.0),
        "{t:?}"
    );
    let c = study.check();
    assert!(c.pass, "{c}");
    assert!(c
        .to_string()
        .starts_with("CHECK train-vs-test toy-train-test: PASS"));

    // Absent: train NC1 does not fall in the terminal phase.
    let dir = tempfile::tempdir().unwrap();
    let s = train_test_study(dir.path(), |_| 0.3, |_| 0.4);
    let c = TrainTestStudy::measure(&s).unwrap().check();
    assert!(!c.pass, "{c}");

    // Absent the other way: test collapses with train (test NC1 falls as much).
    let dir = tempfile::tempdir().unwrap();
    let fall = |e: u32| {
        if e <= ZERO_ERROR {
            0.3
        } else {
            0.3 * 0.1f64.powf((e - 10) as f64 / 90.0)
        }
    };
    let c = TrainTestStudy::measure(&train_test_study(dir.path(), fall, fall))
        .unwrap()
        .check();
    assert!(!c.pass, "{c}");
}

/// Finding 2: 2 coarse classes of 3 fine classes each; the fine classes sit at `a(epoch)` from
/// their coarse mean; noise `s(epoch)`.
fn transfer_study(root: &Path, a: impl Fn(u32) -> f64, s: impl Fn(u32) -> f64) -> Study {
    let d = 8;
    for seed in 0..5u64 {
        let dir = root.join(format!("toy-transfer-s{seed}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(100 + seed);
        let mut feats = Vec::new();
        for &e in &EPOCHS {
            let means: Vec<Vec<f64>> = (0..6)
                .map(|f| {
                    let coarse = f / 3;
                    (0..d)
                        .map(|j| {
                            let c = if j == coarse { 3.0 } else { 0.0 };
                            let fine = if j == 2 + f { a(e) } else { 0.0 };
                            c + fine
                        })
                        .collect()
                })
                .collect();
            for (split, n) in [("train", 50), ("test", 850)] {
                let (x, y) = sample(&means, n, s(e), &mut rng);
                let coarse: Vec<u32> = y.iter().map(|&f| f / 3).collect();
                feats.push(
                    Features::new(x, y)
                        .with_epoch(e)
                        .with_split(split)
                        .with_layer("fc")
                        .with_coarse(coarse),
                );
            }
        }
        write_features(dir.join("features-fc.parquet"), &feats).unwrap();
        write_meta(&dir, "transfer", "toy", seed, &["fc"], Some(ZERO_ERROR));
    }
    Study::open(root, "transfer", "toy").unwrap()
}

#[test]
fn finding_2_passes_with_the_effect_and_fails_without() {
    // Fine structure shrinks to 0 after zero coarse error; noise shrinks too (source NC1 falls).
    let dir = tempfile::tempdir().unwrap();
    let s = transfer_study(
        dir.path(),
        |e| {
            if e <= 10 {
                1.0
            } else {
                1.0 - (e - 10) as f64 / 90.0
            }
        },
        |e| 0.4 - 0.002 * e as f64,
    );
    let t = TransferStudy::measure(&s).unwrap();
    let seeds = t.seeds();
    assert!(
        seeds
            .iter()
            .all(|x| x.chosen == Some(10) && x.last == 100 && x.n_test == 5100),
        "{seeds:?}"
    );
    // With a = 0 the 3 fine classes of a coarse class are indistinguishable: chance is 1/3.
    assert!(
        seeds
            .iter()
            .all(|x| x.acc_last < 40.0 && x.acc_chosen > 80.0),
        "{seeds:?}"
    );
    let c = t.check();
    assert!(c.pass, "{c}");

    // Absent: the fine structure stays; only the noise shrinks.
    let dir = tempfile::tempdir().unwrap();
    let s = transfer_study(dir.path(), |_| 1.0, |e| 0.4 - 0.002 * e as f64);
    let c = TransferStudy::measure(&s).unwrap().check();
    assert!(!c.pass, "{c}");
}

/// Finding 3: 4 layers; layer k's noise at epoch e is `s(k, e)`.
fn cascade_study(root: &Path, s: impl Fn(usize, u32) -> f64) -> Study {
    let layers = ["fc1", "fc2", "fc3", "fc4"];
    for seed in 0..5u64 {
        let dir = root.join(format!("toy-cascade-s{seed}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(200 + seed);
        let means = simplex(4, 6, 1.0);
        for (k, layer) in layers.iter().enumerate() {
            let mut feats = Vec::new();
            for &e in &EPOCHS {
                for split in ["train", "test"] {
                    let (x, y) = sample(&means, 25, s(k, e), &mut rng);
                    feats.push(
                        Features::new(x, y)
                            .with_epoch(e)
                            .with_split(split)
                            .with_layer(*layer),
                    );
                }
            }
            write_features(dir.join(format!("features-{layer}.parquet")), &feats).unwrap();
        }
        write_meta(&dir, "cascade", "toy", seed, &layers, Some(ZERO_ERROR));
    }
    Study::open(root, "cascade", "toy").unwrap()
}

#[test]
fn finding_3_passes_with_the_effect_and_fails_without() {
    // Deeper layers shrink faster: s = exp(−rate_k · e), rate growing with depth, so layer k
    // crosses NC1 ≤ 0.25 earlier the deeper it is and ends lower.
    let dir = tempfile::tempdir().unwrap();
    let s = cascade_study(dir.path(), |k, e| {
        1.0 * (-(0.005 + 0.01 * k as f64) * e as f64).exp()
    });
    let c = CascadeStudy::measure(&s).unwrap();
    let seeds = c.seeds();
    assert!(seeds.iter().all(|x| x.rho_end == -1.0), "{seeds:?}");
    let check = c.check();
    assert!(check.pass, "{check}");

    // Absent: every layer the same (ρ is then decided by noise, and collapse epochs tie).
    let dir = tempfile::tempdir().unwrap();
    let s = cascade_study(dir.path(), |_, e| 1.0 * (-0.02 * e as f64).exp());
    let check = CascadeStudy::measure(&s).unwrap().check();
    assert!(!check.pass, "{check}");

    // Reversed: earlier layers collapse more.
    let dir = tempfile::tempdir().unwrap();
    let s = cascade_study(dir.path(), |k, e| {
        1.0 * (-(0.035 - 0.01 * k as f64) * e as f64).exp()
    });
    let check = CascadeStudy::measure(&s).unwrap().check();
    assert!(!check.pass, "{check}");
}

#[test]
fn study_open_errors_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let s = train_test_study(dir.path(), |_| 0.3, |_| 0.3);
    assert_eq!(s.seeds(), vec![0, 1, 2, 3, 4]);
    let e = Study::open(dir.path(), "cascade", "toy")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no run with preset `cascade` and dataset `toy`")
            && e.contains("train-test/toy"),
        "{e}"
    );
    // Two runs with one seed.
    let a = dir.path().join("toy-train-test-s0");
    let b = dir.path().join("toy-train-test-copy");
    std::fs::create_dir_all(&b).unwrap();
    for f in ["run.json", "features-fc.parquet"] {
        std::fs::copy(a.join(f), b.join(f)).unwrap();
    }
    let e = Study::open(dir.path(), "train-test", "toy")
        .unwrap_err()
        .to_string();
    assert!(e.contains("seed 0 is also the seed of"), "{e}");
}
