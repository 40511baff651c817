//! Tests of the linear probes: exact solutions cross-checked against direct solves and
//! linfa-linear, invariances, standardisation and penalty selection hygiene, typed errors, the
//! sweep over a feature file and the `probe` CLI.

use std::collections::BTreeSet;
use std::process::Command;

use approx::assert_abs_diff_eq;
use linfa::traits::{Fit, Predict};
use linfa::DatasetBase;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2, ArrayView2, Axis};
use neural_collapse::features::write_features;
use neural_collapse::prelude::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// Gaussian classes: class `c` has mean `sep · μ_c` (μ_c standard normal) and unit noise.
fn gaussian_classes(n: usize, d: usize, c: usize, sep: f64, seed: u64) -> (Array2<f64>, Vec<u32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let means = Array2::from_shape_fn((c, d), |_| sep * normal.sample(&mut rng));
    let labels: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        means[[labels[i] as usize, j]] + normal.sample(&mut rng)
    });
    (x, labels)
}

fn to_f32(x: &Array2<f64>) -> Array2<f32> {
    x.mapv(|v| v as f32)
}

/// Population mean and standard deviation of each column.
fn mean_std(x: ArrayView2<'_, f64>) -> (Array1<f64>, Array1<f64>) {
    let n = x.nrows() as f64;
    let mean = x.sum_axis(Axis(0)) / n;
    let var = x
        .outer_iter()
        .fold(Array1::<f64>::zeros(x.ncols()), |acc, r| {
            acc + (&r - &mean).mapv(|v| v * v)
        })
        / n;
    (mean, var.mapv(f64::sqrt))
}

/// Solves `A X = B` by Gaussian elimination with partial pivoting (an algorithm independent of
/// the crate's Cholesky).
fn gauss_solve(mut a: Array2<f64>, mut b: Array2<f64>) -> Array2<f64> {
    let n = a.nrows();
    for k in 0..n {
        let p = (k..n)
            .max_by(|&i, &j| a[[i, k]].abs().total_cmp(&a[[j, k]].abs()))
            .unwrap();
        for j in 0..n {
            a.swap([k, j], [p, j]);
        }
        for j in 0..b.ncols() {
            b.swap([k, j], [p, j]);
        }
        for i in k + 1..n {
            let f = a[[i, k]] / a[[k, k]];
            for j in k..n {
                a[[i, j]] -= f * a[[k, j]];
            }
            for j in 0..b.ncols() {
                b[[i, j]] -= f * b[[k, j]];
            }
        }
    }
    for k in (0..n).rev() {
        for j in 0..b.ncols() {
            let mut s = b[[k, j]];
            for i in k + 1..n {
                s -= a[[k, i]] * b[[i, j]];
            }
            b[[k, j]] = s / a[[k, k]];
        }
    }
    b
}

fn one_hot(labels: &[u32], c: usize) -> Array2<f64> {
    let mut y = Array2::zeros((labels.len(), c));
    for (i, &l) in labels.iter().enumerate() {
        y[[i, l as usize]] = 1.0;
    }
    y
}

#[test]
fn separable_data_is_classified_perfectly_by_both_probes() {
    // Four well-separated clusters in 5 dimensions.
    let (x, y) = gaussian_classes(400, 5, 4, 10.0, 1);
    let x = to_f32(&x);
    for probe in [LinearProbe::least_squares(), LinearProbe::logistic()] {
        let fitted = probe.fit_array(x.view(), &y).unwrap();
        assert_eq!(
            fitted.accuracy(x.view(), &y).unwrap(),
            1.0,
            "{:?}",
            fitted.kind()
        );
        assert_eq!(fitted.predict(x.view()).unwrap(), y);
        let per_class = fitted.per_class_accuracy(x.view(), &y).unwrap();
        assert_eq!(per_class.len(), 4);
        assert!(per_class.iter().all(|c| c.accuracy == 1.0 && c.n == 100));
    }
}

#[test]
fn ridge_solution_equals_direct_solve_of_normal_equations() {
    let (n, d, c, lambda) = (300, 8, 4, 0.05);
    let (mut x, y) = gaussian_classes(n, d, c, 1.0, 2);
    // Columns with very different offsets and scales, so standardisation matters.
    for j in 0..d {
        let (a, b) = (1.0 + j as f64 * 3.0, 10.0 * j as f64 - 20.0);
        x.column_mut(j).mapv_inplace(|v| a * v + b);
    }
    let fitted = LinearProbe::least_squares()
        .ridge(lambda)
        .fit_array(x.view(), &y)
        .unwrap();

    // Direct: Z = (X − m) ⊘ s, (ZᵀZ + nλ I) W = Zᵀ Y, b = ȳ.
    let (m, s) = mean_std(x.view());
    let z = (&x - &m) / &s;
    let mut a = z.t().dot(&z);
    for j in 0..d {
        a[[j, j]] += n as f64 * lambda;
    }
    let w = gauss_solve(a, z.t().dot(&one_hot(&y, c)));
    for (got, want) in fitted.coefficients().iter().zip(w.iter()) {
        assert_abs_diff_eq!(got, want, epsilon = 1e-9);
    }
    for (k, &b) in fitted.intercept().iter().enumerate() {
        let freq = y.iter().filter(|&&l| l as usize == k).count() as f64 / n as f64;
        assert_abs_diff_eq!(b, freq, epsilon = 1e-12);
    }
    for (got, want) in fitted.mean().iter().zip(m.iter()) {
        assert_abs_diff_eq!(got, want, epsilon = 1e-10);
    }
    for (got, want) in fitted.scale().iter().zip(s.iter()) {
        assert_abs_diff_eq!(got, want, epsilon = 1e-10);
    }

    // Without standardisation: the same equations on centred X.
    let raw = LinearProbe::least_squares()
        .ridge(lambda)
        .standardize(false)
        .fit_array(x.view(), &y)
        .unwrap();
    let xc = &x - &m;
    let mut a = xc.t().dot(&xc);
    for j in 0..d {
        a[[j, j]] += n as f64 * lambda;
    }
    let w = gauss_solve(a, xc.t().dot(&one_hot(&y, c)));
    for (got, want) in raw.coefficients().iter().zip(w.iter()) {
        assert_abs_diff_eq!(got, want, epsilon = 1e-9);
    }
}

#[test]
fn blocked_threaded_gram_matches_direct_solve() {
    // Enough rows for several worker threads and row blocks, and d > 128 for several tiles.
    let (n, d, c, lambda) = (9000, 150, 3, 1e-3);
    let (x, y) = gaussian_classes(n, d, c, 0.2, 13);
    let x = to_f32(&x);
    let fitted = LinearProbe::least_squares()
        .ridge(lambda)
        .fit_array(x.view(), &y)
        .unwrap();
    let x = x.mapv(f64::from);
    let (m, s) = mean_std(x.view());
    let z = (&x - &m) / &s;
    let mut a = z.t().dot(&z);
    for j in 0..d {
        a[[j, j]] += n as f64 * lambda;
    }
    let w = gauss_solve(a, z.t().dot(&one_hot(&y, c)));
    for (got, want) in fitted.coefficients().iter().zip(w.iter()) {
        assert_abs_diff_eq!(got, want, epsilon = 1e-9);
    }
}

#[test]
fn unpenalised_fit_agrees_with_per_class_linfa_linear_ols() {
    let (n, d, c) = (250, 6, 3);
    let (mut x, y) = gaussian_classes(n, d, c, 1.5, 3);
    x.column_mut(2).mapv_inplace(|v| 4.0 * v + 7.0);
    let fitted = LinearProbe::least_squares()
        .ridge(0.0)
        .fit_array(x.view(), &y)
        .unwrap();
    let w_in = fitted.input_weights();
    let b_in = fitted.input_intercept();
    for k in 0..c {
        let target: Array1<f64> = y.iter().map(|&l| f64::from(l as usize == k)).collect();
        let ols = LinearRegression::new()
            .fit(&DatasetBase::new(x.clone(), target.clone()))
            .unwrap();
        for j in 0..d {
            assert_abs_diff_eq!(ols.params()[j], w_in[[j, k]], epsilon = 1e-8);
        }
        assert_abs_diff_eq!(ols.intercept(), b_in[k], epsilon = 1e-8);
        // And the probe's scores are OLS's predictions.
        let pred: Array1<f64> = ols.predict(&x);
        let scores = fitted.decision_function(x.view()).unwrap();
        for i in 0..n {
            assert_abs_diff_eq!(pred[i], scores[[i, k]], epsilon = 1e-8);
        }
    }
}

#[test]
fn permuting_labels_permutes_predictions() {
    let (x, y) = gaussian_classes(300, 6, 5, 0.8, 4);
    let x = to_f32(&x);
    let perm = [3u32, 0, 4, 1, 2];
    let y_perm: Vec<u32> = y.iter().map(|&l| perm[l as usize]).collect();
    for probe in [
        LinearProbe::least_squares().ridge(1e-2),
        LinearProbe::logistic()
            .penalty(1e-2)
            .gradient_tolerance(1e-10)
            .max_iterations(500),
    ] {
        let a = probe
            .fit_array(x.view(), &y)
            .unwrap()
            .predict(x.view())
            .unwrap();
        let b = probe
            .fit_array(x.view(), &y_perm)
            .unwrap()
            .predict(x.view())
            .unwrap();
        let a_perm: Vec<u32> = a.iter().map(|&l| perm[l as usize]).collect();
        assert_eq!(a_perm, b, "{:?}", probe.kind());
        // Not a trivial classifier.
        assert!(a.iter().collect::<BTreeSet<_>>().len() == 5);
    }
}

#[test]
fn arbitrary_label_values_are_classes_in_increasing_order() {
    let (x, y) = gaussian_classes(120, 3, 3, 8.0, 5);
    let labels: Vec<u32> = y
        .iter()
        .map(|&l| [70, 5, 4_000_000_000][l as usize])
        .collect();
    let fitted = LinearProbe::least_squares()
        .fit_array(x.view(), &labels)
        .unwrap();
    assert_eq!(fitted.classes(), &[5, 70, 4_000_000_000]);
    assert_eq!(fitted.predict(x.view()).unwrap(), labels);
    // A label the probe never saw counts as an error.
    let mut other = labels.clone();
    other[0] = 9;
    let acc = fitted.accuracy(x.view(), &other).unwrap();
    assert_abs_diff_eq!(acc, 119.0 / 120.0, epsilon = 1e-15);
    let per = fitted.per_class_accuracy(x.view(), &other).unwrap();
    assert_eq!(per[0].class, 5);
    assert!(per
        .iter()
        .any(|c| c.class == 9 && c.accuracy == 0.0 && c.n == 1));
}

#[test]
fn f32_and_f64_inputs_give_the_same_probe() {
    let (x, y) = gaussian_classes(200, 4, 3, 1.0, 6);
    let x32 = to_f32(&x);
    let x64 = x32.mapv(f64::from);
    let a = LinearProbe::least_squares()
        .fit_array(x32.view(), &y)
        .unwrap();
    let b = LinearProbe::least_squares()
        .fit_array(x64.view(), &y)
        .unwrap();
    assert_eq!(a.coefficients(), b.coefficients());
    assert_eq!(
        a.predict(x32.view()).unwrap(),
        b.predict(x64.view()).unwrap()
    );
}

#[test]
fn constant_columns_get_unit_scale() {
    let (mut x, y) = gaussian_classes(100, 4, 2, 3.0, 7);
    x.column_mut(1).fill(0.3);
    let fitted = LinearProbe::least_squares()
        .fit_array(x.view(), &y)
        .unwrap();
    assert_eq!(fitted.scale()[1], 1.0);
    assert_eq!(
        fitted
            .coefficients()
            .row(1)
            .iter()
            .map(|v| v.abs())
            .sum::<f64>(),
        0.0
    );
    // With λ = 0 the constant column makes ZᵀZ singular.
    let err = LinearProbe::least_squares()
        .ridge(0.0)
        .fit_array(x.view(), &y)
        .unwrap_err();
    // Column 1 of Z is exactly 0 and nλ = 0, so its pivot is exactly 0 (relative value 0), at
    // the default relative tolerance 1e-12.
    assert!(
        matches!(
            err,
            ProbeError::Singular {
                pivot: 1,
                value,
                tolerance,
                penalty,
            } if value == 0.0 && tolerance == 1e-12 && penalty == 0.0
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "singular system: pivot 1 of ZᵀZ + nλI is 0e0 (relative tolerance 1e-12) at penalty \
         λ = 0e0; the features are constant or collinear: use a positive ridge penalty"
    );
}

#[test]
fn standardisation_is_fitted_on_train_only() {
    let (x, y) = gaussian_classes(400, 5, 4, 1.0, 8);
    let x = to_f32(&x);
    let (train_x, test_x) = (
        x.slice(ndarray::s![..300, ..]),
        x.slice(ndarray::s![300.., ..]),
    );
    let (train_y, test_y) = (&y[..300], &y[300..]);
    let shifted = test_x.mapv(|v| v + 50.0);

    let train = Features::new(train_x.to_owned(), train_y.to_vec()).with_epoch(1);
    let test = Features::new(test_x.to_owned(), test_y.to_vec()).with_epoch(1);
    let test_shifted = Features::new(shifted.clone(), test_y.to_vec()).with_epoch(1);
    let probe = LinearProbe::least_squares();
    let fitted = probe.fit(&train).unwrap();

    let (m, s) = mean_std(train_x.mapv(f64::from).view());
    for (got, want) in fitted.mean().iter().zip(m.iter()) {
        assert_abs_diff_eq!(got, want, epsilon = 1e-12);
    }
    for (got, want) in fitted.scale().iter().zip(s.iter()) {
        assert_abs_diff_eq!(got, want, epsilon = 1e-12);
    }
    // Scoring shifted test data uses the train scaler: the scores are those of the train
    // scaler applied by hand, and the report of either test set comes from the same probe.
    let z = (&shifted.mapv(f64::from) - &m) / &s;
    let by_hand = z.dot(&fitted.coefficients()) + fitted.intercept();
    let scores = fitted.decision_function(shifted.view()).unwrap();
    for (a, b) in scores.iter().zip(by_hand.iter()) {
        assert_abs_diff_eq!(a, b, epsilon = 1e-9);
    }
    let r1 = fitted.report(&train, &test).unwrap();
    let r2 = fitted.report(&train, &test_shifted).unwrap();
    assert_eq!(r1.train_accuracy, r2.train_accuracy);
    assert_eq!(r1.penalty, r2.penalty);
    assert!(r2.test_accuracy < r1.test_accuracy);
    // Fitting is a function of the training data alone.
    let again = probe.fit(&train).unwrap();
    assert_eq!(again, fitted);
}

#[test]
fn penalty_selection_sees_only_the_training_data() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = gaussian_classes(600, 20, 5, 0.35, 9);
    let x = to_f32(&x);
    let train = Features::new(
        x.slice(ndarray::s![..400, ..]).to_owned(),
        y[..400].to_vec(),
    );
    let test_a = Features::new(
        x.slice(ndarray::s![400.., ..]).to_owned(),
        y[400..].to_vec(),
    );
    let test_b = Features::new(
        test_a.x.mapv(|v| -3.0 * v),
        y[400..].iter().rev().copied().collect(),
    );
    let write = |name: &str, test: &Features| {
        let path = dir.path().join(name);
        write_features(
            &path,
            &[
                train.clone().with_epoch(0).with_split("train"),
                test.clone().with_epoch(0).with_split("test"),
            ],
        )
        .unwrap();
        FeatureScan::open(&path).unwrap()
    };
    let (scan_a, scan_b) = (
        write("features-a.parquet", &test_a),
        write("features-b.parquet", &test_b),
    );
    let grid = [1e-4, 1e-2, 1.0, 100.0];
    for probe in [
        LinearProbe::least_squares().ridge_grid(&grid),
        LinearProbe::logistic().penalty_grid(&grid),
    ] {
        let ra = probe_scan(&scan_a, &probe, None).unwrap();
        let rb = probe_scan(&scan_b, &probe, None).unwrap();
        let direct = probe.fit(&train).unwrap();
        let sel = direct.selection().unwrap();
        assert_eq!(ra[0].penalty, rb[0].penalty);
        assert_eq!(ra[0].penalty, direct.penalty());
        assert_eq!(ra[0].selection.as_ref(), Some(sel));
        assert_eq!(ra[0].train_accuracy, rb[0].train_accuracy);
        // Stratified: round(0.2 · 80) = 16 rows of each of the 5 classes are held out.
        assert_eq!((sel.n_fit, sel.n_holdout), (320, 80));
        assert_eq!(sel.candidates, grid.to_vec());
        // The chosen penalty has the best held-out accuracy (ties to the larger penalty).
        let best = sel
            .holdout_accuracy
            .iter()
            .copied()
            .fold(f64::MIN, f64::max);
        let k = grid.iter().position(|&l| l == sel.chosen).unwrap();
        assert_eq!(sel.holdout_accuracy[k], best);
        assert!(sel.holdout_accuracy[k + 1..].iter().all(|&a| a < best));
        // The final fit is on all the training rows, with the chosen penalty.
        let refit = LinearProbe::new(probe.kind())
            .penalty(sel.chosen)
            .fit(&train)
            .unwrap();
        assert_eq!(refit.n_train(), 400);
        if probe.kind() == ProbeKind::LeastSquares {
            for (a, b) in refit
                .coefficients()
                .iter()
                .zip(direct.coefficients().iter())
            {
                assert_abs_diff_eq!(a, b, epsilon = 1e-9);
            }
        }
    }
    // Another seed is another split.
    let s1 = LinearProbe::least_squares()
        .ridge_grid(&grid)
        .fit(&train)
        .unwrap();
    let s2 = LinearProbe::least_squares()
        .ridge_grid(&grid)
        .seed(7)
        .fit(&train)
        .unwrap();
    assert_ne!(
        s1.selection().unwrap().holdout_accuracy,
        s2.selection().unwrap().holdout_accuracy
    );
}

#[test]
fn logistic_solution_is_stationary_for_the_documented_objective() {
    // ∇ = (1/n) Zᵀ (P − Y) + λ W = 0 and (1/n) Σ_i (P − Y)_i = 0 at the optimum.
    let (n, d, c, lambda) = (300, 4, 3, 0.02);
    let (x, y) = gaussian_classes(n, d, c, 0.7, 10);
    let fitted = LinearProbe::logistic()
        .penalty(lambda)
        .gradient_tolerance(1e-9)
        .max_iterations(2000)
        .fit_array(x.view(), &y)
        .unwrap();
    let (m, s) = mean_std(x.view());
    let z = (&x - &m) / &s;
    let mut p = z.dot(&fitted.coefficients()) + fitted.intercept();
    for mut row in p.outer_iter_mut() {
        let max = row.fold(f64::MIN, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row /= sum;
    }
    let diff = p - one_hot(&y, c);
    let grad_w = z.t().dot(&diff) / n as f64 + &fitted.coefficients().mapv(|v| lambda * v);
    let grad_b = diff.sum_axis(Axis(0)) / n as f64;
    for g in grad_w.iter().chain(grad_b.iter()) {
        assert!(g.abs() < 1e-6, "gradient component {g}");
    }
    assert!(fitted.coefficients().iter().any(|v| v.abs() > 0.1));
}

#[test]
fn bad_inputs_give_typed_errors() {
    let (x, y) = gaussian_classes(20, 3, 2, 1.0, 11);
    let ls = LinearProbe::least_squares();

    let err = ls.fit_array(x.view(), &[4u32; 20]).unwrap_err();
    assert!(matches!(err, ProbeError::OneClass { label: 4 }), "{err}");

    let err = ls.fit_array(x.view(), &y[..19]).unwrap_err();
    assert!(
        matches!(
            err,
            ProbeError::Check(CheckError::LengthMismatch {
                rows: 20,
                labels: 19
            })
        ),
        "{err}"
    );

    let mut bad = x.clone();
    bad[[7, 2]] = f64::NAN;
    let err = ls.fit_array(bad.view(), &y).unwrap_err();
    assert!(
        matches!(
            err,
            ProbeError::Check(CheckError::NonFinite {
                row: 7,
                column: 2,
                ..
            })
        ),
        "{err}"
    );
    bad[[7, 2]] = 0.0;
    bad[[3, 1]] = f64::INFINITY;
    let err = LinearProbe::logistic()
        .fit_array(bad.view(), &y)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProbeError::Check(CheckError::NonFinite {
                row: 3,
                column: 1,
                ..
            })
        ),
        "{err}"
    );

    for l in [-1e-3, f64::NAN, f64::INFINITY] {
        let err = LinearProbe::least_squares()
            .ridge(l)
            .fit_array(x.view(), &y)
            .unwrap_err();
        assert!(matches!(err, ProbeError::InvalidPenalty { .. }), "{err}");
        let err = LinearProbe::logistic()
            .penalty_grid(&[1.0, l])
            .fit_array(x.view(), &y)
            .unwrap_err();
        assert!(matches!(err, ProbeError::InvalidPenalty { .. }), "{err}");
    }
    let err = ls
        .clone()
        .ridge_grid(&[])
        .fit_array(x.view(), &y)
        .unwrap_err();
    assert!(matches!(err, ProbeError::EmptyGrid), "{err}");
    let err = ls
        .clone()
        .holdout_fraction(1.0)
        .ridge_grid(&[1.0])
        .fit_array(x.view(), &y)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProbeError::InvalidParameter {
                name: "holdout_fraction",
                ..
            }
        ),
        "{err}"
    );

    let empty = Array2::<f32>::zeros((0, 3));
    let err = ls.fit_array(empty.view(), &[]).unwrap_err();
    assert!(
        matches!(
            err,
            ProbeError::Check(CheckError::Empty { rows: 0, dim: 3 })
        ),
        "{err}"
    );

    // Penalty selection with too few rows to hold any out.
    let tiny = Array2::from_shape_vec((2, 1), vec![0.0f32, 1.0]).unwrap();
    let err = ls
        .clone()
        .ridge_grid(&[1.0])
        .fit_array(tiny.view(), &[0, 1])
        .unwrap_err();
    assert!(
        matches!(err, ProbeError::NoHoldout { rows: 2, .. }),
        "{err}"
    );

    let fitted = ls.fit_array(x.view(), &y).unwrap();
    let wide = Array2::<f64>::zeros((4, 5));
    let err = fitted.predict(wide.view()).unwrap_err();
    assert!(
        matches!(
            err,
            ProbeError::DimensionMismatch {
                expected: 3,
                found: 5
            }
        ),
        "{err}"
    );
    let err = fitted.accuracy(x.view(), &y[..3]).unwrap_err();
    assert!(
        matches!(err, ProbeError::Check(CheckError::LengthMismatch { .. })),
        "{err}"
    );
    let err = fitted
        .accuracy(x.slice(ndarray::s![..0, ..]), &[])
        .unwrap_err();
    assert!(
        matches!(err, ProbeError::Check(CheckError::Empty { .. })),
        "{err}"
    );

    let features = Features::new(x.mapv(|v| v as f32), y.clone());
    let err = ls
        .clone()
        .label_column(LabelColumn::Coarse)
        .fit(&features)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProbeError::MissingLabels {
                column: LabelColumn::Coarse
            }
        ),
        "{err}"
    );

    // They convert into the crate's error with `?`.
    let wrapped: Error = ls.fit_array(x.view(), &[1u32; 20]).unwrap_err().into();
    assert!(matches!(wrapped, Error::Probe(ProbeError::OneClass { .. })));
    assert!(wrapped.to_string().contains("only one class"));
}

/// Writes a small schema-v1 file: `epochs` checkpoints × (train, test), with coarse labels
/// (fine label / 2) and a class structure that sharpens with the epoch.
fn write_run(path: &std::path::Path, epochs: &[u32]) {
    let mut items = Vec::new();
    for &e in epochs {
        // One draw of the class means per epoch, split into 240 train and 120 test rows.
        let (x, y) = gaussian_classes(360, 6, 4, 0.5 + e as f64, 100 + e as u64);
        for (split, rows) in [("train", 0..240), ("test", 240..360)] {
            let y: Vec<u32> = y[rows.clone()].to_vec();
            let coarse: Vec<u32> = y.iter().map(|l| l / 2).collect();
            items.push(
                Features::new(to_f32(&x.slice(ndarray::s![rows, ..]).to_owned()), y)
                    .with_coarse(coarse)
                    .with_epoch(e)
                    .with_split(split),
            );
        }
    }
    write_features(path, &items).unwrap();
}

#[test]
fn sweep_over_a_feature_file_returns_one_report_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features-fc2.parquet");
    write_run(&path, &[0, 2, 5]);
    let scan = FeatureScan::open(&path).unwrap();

    let reports = probe_scan(&scan, &LinearProbe::least_squares(), None).unwrap();
    assert_eq!(
        reports.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        vec![Some(0), Some(2), Some(5)]
    );
    for r in &reports {
        assert_eq!((r.n_train, r.n_test, r.classes, r.dim), (240, 120, 4, 6));
        assert_eq!(r.layer.as_deref(), Some("fc2"));
        assert_eq!(r.label, LabelColumn::Label);
        assert_eq!(r.per_class_test_accuracy.len(), 4);
        assert!((0.0..=1.0).contains(&r.test_accuracy));
    }
    assert!(reports[2].test_accuracy > reports[0].test_accuracy);

    // Filtered, on the coarse labels, with the logistic probe.
    let probe = LinearProbe::logistic().label_column(LabelColumn::Coarse);
    let coarse = probe_scan(&scan, &probe, Some(&[5])).unwrap();
    assert_eq!(coarse.len(), 1);
    assert_eq!(
        (coarse[0].epoch, coarse[0].classes, coarse[0].label),
        (Some(5), 2, LabelColumn::Coarse)
    );

    // Several files (layers).
    let path2 = dir.path().join("features-fc1.parquet");
    write_run(&path2, &[0, 2, 5]);
    let scans = [scan.clone(), FeatureScan::open(&path2).unwrap()];
    let both = probe_scans(&scans, &LinearProbe::least_squares(), Some(&[2, 0])).unwrap();
    let keys: Vec<_> = both
        .iter()
        .map(|r| (r.layer.clone().unwrap(), r.epoch.unwrap()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("fc2".into(), 0),
            ("fc2".into(), 2),
            ("fc1".into(), 0),
            ("fc1".into(), 2)
        ]
    );

    // A missing epoch is the loader's error, naming the file.
    let err = probe_scan(&scan, &LinearProbe::least_squares(), Some(&[3])).unwrap_err();
    assert!(err.to_string().contains("features-fc2.parquet"), "{err}");

    // Tidy table.
    let df = ProbeReport::to_tidy_many(&reports).unwrap();
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        names,
        ["epoch", "layer", "probe", "split", "metric", "value"]
    );
    // Per report: train + test accuracy, 4 per-class accuracies, the penalty.
    assert_eq!(df.height(), 3 * 7);
    let probe_col = df
        .column("probe")
        .unwrap()
        .str()
        .unwrap()
        .get(0)
        .unwrap()
        .to_string();
    assert_eq!(probe_col, "least-squares/label");

    // Display, JSON and the evcxr form.
    let text = reports[1].to_string();
    assert!(
        text.contains("epoch 2") && text.contains("test accuracy"),
        "{text}"
    );
    let json = reports[1].to_json();
    assert_eq!(json["kind"], "least-squares");
    assert_eq!(json["label"], "label");
    assert_eq!(json["epoch"], 2);
    assert_eq!(json["per_class_test_accuracy"].as_array().unwrap().len(), 4);
}

#[test]
fn cli_probe_json_has_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features-fc2.parquet");
    write_run(&path, &[0, 3]);
    let out = Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
        .args([
            "probe",
            path.to_str().unwrap(),
            "--format",
            "json",
            "--kind",
            "logistic",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    for (obj, epoch) in arr.iter().zip([0, 3]) {
        let keys: BTreeSet<&str> = obj
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "epoch",
                "kind",
                "train_accuracy",
                "test_accuracy",
                "penalty"
            ])
        );
        assert_eq!(obj["epoch"], epoch);
        assert_eq!(obj["kind"], "logistic");
        assert_eq!(obj["penalty"], 1e-4);
    }

    let out = Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
        .args([
            "probe",
            path.to_str().unwrap(),
            "--label",
            "coarse",
            "--epoch",
            "3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("coarse") && table.contains("least-squares"),
        "{table}"
    );
    assert_eq!(
        table.lines().filter(|l| !l.trim().is_empty()).count(),
        2,
        "{table}"
    );
}

/// `--penalty-grid` and `--no-standardize` give what the library gives with the same settings.
#[test]
fn cli_probe_penalty_grid_and_no_standardize_match_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features-fc2.parquet");
    write_run(&path, &[0, 3]);
    let scan = FeatureScan::open(&path).unwrap();
    let grid = [1e-4, 1e-2, 1.0, 100.0];
    let cases: [(Vec<&str>, LinearProbe); 2] = [
        (
            vec!["--penalty-grid", "1e-4,1e-2,1,100"],
            LinearProbe::least_squares().penalty_grid(&grid),
        ),
        (
            vec!["--no-standardize", "--penalty", "0.5"],
            LinearProbe::least_squares().standardize(false).penalty(0.5),
        ),
    ];
    for (args, probe) in cases {
        let expected = probe_scan(&scan, &probe, None).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
            .args(["probe", path.to_str().unwrap(), "--format", "json"])
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), expected.len());
        for (obj, r) in arr.iter().zip(&expected) {
            assert_eq!(obj["penalty"].as_f64().unwrap(), r.penalty, "{args:?}");
            assert_eq!(
                obj["test_accuracy"].as_f64().unwrap(),
                r.test_accuracy,
                "{args:?}"
            );
            if args[0] == "--penalty-grid" {
                assert!(grid.contains(&r.penalty), "{}", r.penalty);
            }
        }
    }
    // A fixed penalty and a grid at once is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
        .args([
            "probe",
            path.to_str().unwrap(),
            "--penalty",
            "1",
            "--penalty-grid",
            "1,2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cli_probe_exits_with_code_2_on_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.parquet");
    let out = Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
        .args(["probe", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: ") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    assert!(!err.contains("panicked"));

    // A file without coarse labels, asked for them.
    let path = dir.path().join("features-x.parquet");
    let (x, y) = gaussian_classes(40, 3, 2, 1.0, 12);
    write_features(
        &path,
        &[
            Features::new(to_f32(&x), y.clone())
                .with_epoch(0)
                .with_split("train"),
            Features::new(to_f32(&x), y)
                .with_epoch(0)
                .with_split("test"),
        ],
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
        .args(["probe", path.to_str().unwrap(), "--label", "coarse"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: ") && err.contains("coarse"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
        .args(["probe", path.to_str().unwrap(), "--penalty", "-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The least-squares coefficients satisfy their normal equations, for any data shape.
    #[test]
    fn least_squares_satisfies_normal_equations(
        n in 8usize..60, d in 1usize..6, c in 2usize..5, seed in 0u64..1000, log_l in -4.0f64..1.0,
    ) {
        let lambda = 10f64.powf(log_l);
        let mut rng = StdRng::seed_from_u64(seed);
        let x = Array2::from_shape_fn((n, d), |_| rng.gen_range(-3.0..3.0));
        let mut y: Vec<u32> = (0..n).map(|_| rng.gen_range(0..c as u32)).collect();
        y[0] = 0;
        y[1] = 1;
        let fitted = LinearProbe::least_squares().ridge(lambda).fit_array(x.view(), &y).unwrap();
        let (m, s) = mean_std(x.view());
        let z = (&x - &m) / &s;
        let classes = fitted.classes().to_vec();
        let dense: Vec<u32> = y.iter().map(|l| classes.binary_search(l).unwrap() as u32).collect();
        let w = fitted.coefficients();
        let residual = z.t().dot(&z).dot(&w) + &w.mapv(|v| v * n as f64 * lambda)
            - z.t().dot(&one_hot(&dense, classes.len()));
        for r in residual.iter() {
            prop_assert!(r.abs() < 1e-8 * n as f64, "residual {}", r);
        }
        let acc = fitted.accuracy(x.view(), &y).unwrap();
        prop_assert!((0.0..=1.0).contains(&acc));
    }
}

/// The logistic probe must reach the optimum of its objective
/// `(1/n) Σ −log softmax(Wᵀz_i + b)_{y_i} + (λ/2)‖W‖²` (z standardised): there the gradient
/// vanishes. Well-separated classes with a small penalty make the logits of different rows
/// differ by far more than 34.5, the case where linfa-logistic 0.8.1's `log_sum_exp` (global
/// instead of per-row maximum) gave a wrong loss and gradient and L-BFGS stopped far from the
/// optimum (the crate patches it, see `vendor/linfa-logistic`).
#[test]
fn logistic_probe_reaches_the_optimum_with_widely_spread_logits() {
    // Four classes along a line (centres 0, 15, 30, 45, spread 3) plus two noise columns: the
    // rows at the ends of the line have far larger top logits than the rows in the middle.
    let mut rng = StdRng::seed_from_u64(11);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let y: Vec<u32> = (0..800).map(|i| (i % 4) as u32).collect();
    let x = Array2::from_shape_fn((800, 3), |(i, j)| match j {
        0 => 15.0 * f64::from(y[i]) + 3.0 * normal.sample(&mut rng),
        _ => normal.sample(&mut rng),
    });
    let lambda = 1e-5;
    let fitted = LinearProbe::logistic()
        .penalty(lambda)
        .max_iterations(1000)
        .gradient_tolerance(1e-7)
        .fit_array(x.view(), &y)
        .unwrap();
    let (mean, scale) = (fitted.mean(), fitted.scale());
    let z = (&x - &mean.insert_axis(Axis(0))) / scale.insert_axis(Axis(0));
    let w = fitted.coefficients();
    let b = fitted.intercept();
    let logits = z.dot(&w) + b;
    let n = x.nrows() as f64;
    let mut diff = Array2::<f64>::zeros(logits.dim());
    let row_max: Vec<f64> = logits
        .outer_iter()
        .map(|r| r.fold(f64::NEG_INFINITY, |a, &v| a.max(v)))
        .collect();
    for (i, row) in logits.outer_iter().enumerate() {
        let s: f64 = row.iter().map(|v| (v - row_max[i]).exp()).sum();
        for k in 0..row.len() {
            let p = (row[k] - row_max[i]).exp() / s;
            diff[[i, k]] = p - f64::from(u8::from(k == y[i] as usize));
        }
    }
    let spread = row_max.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v))
        - row_max.iter().fold(f64::INFINITY, |a, &v| a.min(v));
    assert!(
        spread > 34.5,
        "logit spread {spread} does not exercise the case"
    );
    let grad_w = z.t().dot(&diff) / n + &w * lambda;
    let grad_b = diff.sum_axis(Axis(0)) / n;
    let norm = (grad_w
        .iter()
        .chain(grad_b.iter())
        .map(|v| v * v)
        .sum::<f64>())
    .sqrt();
    assert!(
        norm < 1e-6,
        "gradient norm {norm:e} at the returned solution (spread {spread})"
    );
}

// ---------------------------------------------------------------------------------------------
// Probes as linfa models (issue 15, item 1).

/// `LinearProbe` through linfa's `ParamGuard` → `Fit` → `PredictInplace` gives the very model
/// (compared with `==`, every coefficient bit for bit) and predictions of `fit_array`.
#[test]
fn linfa_fit_and_fit_array_give_the_same_model_and_predictions() {
    use linfa::traits::PredictInplace;
    use linfa::ParamGuard;
    let (x, y) = gaussian_classes(300, 5, 4, 1.0, 21);
    let x32 = to_f32(&x);
    // The f32 features as f64 (exact), as probe_scan gives them to other estimators.
    let x64 = x32.mapv(f64::from);
    let y_usize: Array1<usize> = y.iter().map(|&l| l as usize).collect();
    let y_u32: Array1<u32> = Array1::from(y.clone());
    for probe in [
        LinearProbe::least_squares(),
        LinearProbe::least_squares().ridge_grid(&[1e-4, 1e-2, 1.0]),
        LinearProbe::least_squares().standardize(false).ridge(0.0),
        LinearProbe::logistic().penalty(1e-3),
        LinearProbe::logistic().penalty_grid(&[1e-3, 1e-1]),
    ] {
        let old = probe.fit_array(x32.view(), &y).unwrap();
        // The blanket `Fit` of a `ParamGuard`, on f64 records and usize labels …
        let via_guard: FittedProbe =
            Fit::fit(&probe, &DatasetBase::new(x64.clone(), y_usize.clone())).unwrap();
        // … and the checked parameters' own `Fit`, on the f32 records and u32 labels.
        let checked: ValidLinearProbe = probe.clone().check().unwrap();
        assert_eq!(checked.kind(), probe.kind());
        let via_checked = checked
            .fit(&DatasetBase::new(x32.clone(), y_u32.clone()))
            .unwrap();
        assert_eq!(via_guard, old, "{probe:?}");
        assert_eq!(via_checked, old, "{probe:?}");
        let expected = old.predict(x32.view()).unwrap();
        let linfa_usize: Array1<usize> = Predict::predict(&via_guard, &x64);
        let mut linfa_u32 = Array1::<u32>::zeros(x32.nrows());
        via_checked.predict_inplace(&x32, &mut linfa_u32);
        assert_eq!(
            linfa_usize.to_vec(),
            expected.iter().map(|&l| l as usize).collect::<Vec<_>>()
        );
        assert_eq!(linfa_u32.to_vec(), expected);
    }
    // Bad parameters are caught by `check`, with the crate's typed error.
    assert!(matches!(
        LinearProbe::least_squares().ridge(-1.0).check(),
        Err(ProbeError::InvalidPenalty { .. })
    ));
    // A label that does not fit in u32 is an error, not a wrapped-around class.
    let mut big = y_usize.clone();
    big[7] = u32::MAX as usize + 1;
    let err = Fit::fit(&LinearProbe::least_squares(), &DatasetBase::new(x64, big)).unwrap_err();
    assert!(
        matches!(err, ProbeError::LabelOutOfRange { row: 7, .. }),
        "{err}"
    );
}

/// A user's own estimator: the nearest class mean, with its own error type.
#[derive(Debug, Clone, Copy)]
struct NearestMean;

#[derive(Debug)]
struct NearestMeanError(String);

impl std::fmt::Display for NearestMeanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nearest mean: {}", self.0)
    }
}

impl std::error::Error for NearestMeanError {}

impl From<linfa::Error> for NearestMeanError {
    fn from(e: linfa::Error) -> Self {
        NearestMeanError(e.to_string())
    }
}

struct FittedNearestMean {
    classes: Vec<usize>,
    means: Array2<f64>,
}

impl Fit<Array2<f64>, Array1<usize>, NearestMeanError> for NearestMean {
    type Object = FittedNearestMean;

    fn fit(
        &self,
        data: &DatasetBase<Array2<f64>, Array1<usize>>,
    ) -> Result<FittedNearestMean, NearestMeanError> {
        let (x, y) = (data.records(), data.targets());
        let classes: Vec<usize> = y
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if classes.len() < 2 {
            return Err(NearestMeanError("one class".into()));
        }
        let mut means = Array2::zeros((classes.len(), x.ncols()));
        for (k, c) in classes.iter().enumerate() {
            let rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == *c).collect();
            means
                .row_mut(k)
                .assign(&x.select(Axis(0), &rows).mean_axis(Axis(0)).unwrap());
        }
        Ok(FittedNearestMean { classes, means })
    }
}

impl linfa::traits::PredictInplace<Array2<f64>, Array1<usize>> for FittedNearestMean {
    fn predict_inplace(&self, x: &Array2<f64>, y: &mut Array1<usize>) {
        for (out, row) in y.iter_mut().zip(x.outer_iter()) {
            let dist = |k: usize| (&row - &self.means.row(k)).mapv(|v| v * v).sum();
            let best = (0..self.classes.len())
                .min_by(|&a, &b| dist(a).total_cmp(&dist(b)))
                .unwrap();
            *out = self.classes[best];
        }
    }

    fn default_target(&self, x: &Array2<f64>) -> Array1<usize> {
        Array1::zeros(x.nrows())
    }
}

#[test]
fn probe_scan_takes_any_linfa_estimator() {
    use linfa::traits::PredictInplace;
    use neural_collapse::linfa_logistic::MultiLogisticRegression;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features-fc2.parquet");
    write_run(&path, &[0, 2, 5]);
    let scan = FeatureScan::open(&path).unwrap();

    // The user's estimator: the report's numbers are those of fitting and predicting by hand.
    let reports = probe_scan(&scan, &NearestMean, None).unwrap();
    assert_eq!(reports.len(), 3);
    for r in &reports {
        let e = r.epoch.unwrap();
        let train = scan.epoch(e).split("train").load().unwrap();
        let test = scan.epoch(e).split("test").load().unwrap();
        let xt = train.x.mapv(f64::from);
        let yt: Array1<usize> = train.labels.iter().map(|&l| l as usize).collect();
        let fitted = NearestMean.fit(&DatasetBase::new(xt, yt)).unwrap();
        let xs = test.x.mapv(f64::from);
        let mut pred = Array1::<usize>::zeros(xs.nrows());
        fitted.predict_inplace(&xs, &mut pred);
        let correct = pred
            .iter()
            .zip(&test.labels)
            .filter(|(p, t)| **p == **t as usize)
            .count();
        assert_eq!(r.test_accuracy, correct as f64 / 120.0);
        assert_eq!(r.kind, ProbeKind::Other("NearestMean"));
        assert_eq!(r.kind.name(), "NearestMean");
        assert!(r.penalty.is_nan() && r.selection.is_none());
        assert_eq!((r.n_train, r.n_test, r.classes, r.dim), (240, 120, 4, 6));
        assert_eq!(r.per_class_test_accuracy.len(), 4);
        let per: usize = r.per_class_test_accuracy.iter().map(|c| c.correct).sum();
        assert_eq!(per, correct);
    }
    assert!(reports[2].test_accuracy > reports[0].test_accuracy);
    // Tidy table: no penalty row for an unknown penalty; JSON names the kind.
    let tidy = ProbeReport::to_tidy_many(&reports).unwrap();
    assert_eq!(tidy.height(), 3 * (2 + 4));
    assert_eq!(reports[0].to_json()["kind"], "NearestMean");
    // On the coarse labels.
    let coarse = probe_scan_on(&scan, &NearestMean, LabelColumn::Coarse, Some(&[5])).unwrap();
    assert_eq!(
        (coarse[0].classes, coarse[0].label),
        (2, LabelColumn::Coarse)
    );
    // An estimator's error names the file, epoch and estimator.
    let one_class = dir.path().join("features-one.parquet");
    write_features(
        &one_class,
        &[
            Features::new(Array2::<f32>::ones((4, 2)), vec![1; 4])
                .with_epoch(0)
                .with_split("train"),
            Features::new(Array2::<f32>::ones((4, 2)), vec![1; 4])
                .with_epoch(0)
                .with_split("test"),
        ],
    )
    .unwrap();
    let err = probe_scan(&FeatureScan::open(&one_class).unwrap(), &NearestMean, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("features-one.parquet") && msg.contains("nearest mean: one class"),
        "{msg}"
    );

    // linfa-logistic's estimator, directly.
    let logistic = MultiLogisticRegression::<f64>::default().alpha(1e-2);
    let reports = probe_scan(&scan, &logistic, Some(&[5])).unwrap();
    // `MultiLogisticRegression` is an alias of linfa-logistic's `LogisticRegressionParams`.
    assert_eq!(
        reports[0].kind,
        ProbeKind::Other("LogisticRegressionParams")
    );
    let train = scan.epoch(5).split("train").load().unwrap();
    let test = scan.epoch(5).split("test").load().unwrap();
    let yt: Array1<usize> = train.labels.iter().map(|&l| l as usize).collect();
    let fitted = logistic
        .fit(&DatasetBase::new(train.x.mapv(f64::from), yt))
        .unwrap();
    let pred: Array1<usize> = fitted.predict(&test.x.mapv(f64::from));
    let correct = pred
        .iter()
        .zip(&test.labels)
        .filter(|(p, t)| **p == **t as usize)
        .count();
    assert_eq!(reports[0].test_accuracy, correct as f64 / 120.0);

    // The crate's own probe keeps its path: the reports of `fit` + `report`, penalty selection
    // included; and `probe_scans` takes any estimator too.
    let probe = LinearProbe::least_squares().ridge_grid(&[1e-4, 1e-2, 1.0]);
    let reports = probe_scan(&scan, &probe, None).unwrap();
    for r in &reports {
        let e = r.epoch.unwrap();
        let train = scan.epoch(e).split("train").load().unwrap();
        let test = scan.epoch(e).split("test").load().unwrap();
        assert_eq!(
            *r,
            probe.fit(&train).unwrap().report(&train, &test).unwrap()
        );
        assert!(r.selection.is_some());
    }
    let both = probe_scans(&[scan.clone(), scan.clone()], &OneVsRestOls, Some(&[2])).unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].kind, ProbeKind::LinfaOls);
}

/// `OneVsRestOls` (linfa-linear) and the crate's ridge at a tiny penalty solve the same
/// problem. Tolerance: the standardised columns have unit variance and the classes are well
/// separated from collinearity (smallest eigenvalue of the standardised `ZᵀZ / n` is O(0.1)),
/// so λ = 1e-10 moves the ridge scores by O(λ / 0.1) ≈ 1e-9 relative to OLS, and both solvers'
/// rounding is O(cond · ε) ≈ 1e-14; 1e-7 on scores of order 1 leaves two orders of margin and
/// still fails for any real disagreement (a wrong intercept or class order is O(0.1)).
#[test]
fn linfa_ols_kind_agrees_with_ridge_at_tiny_penalty() {
    let (mut x, y) = gaussian_classes(400, 7, 5, 0.8, 33);
    // A badly scaled, offset column: the crate standardises it, linfa-linear does not.
    x.column_mut(3).mapv_inplace(|v| 50.0 * v + 300.0);
    let y_usize: Array1<usize> = y.iter().map(|&l| l as usize).collect();
    let ols = OneVsRestOls
        .fit(&DatasetBase::new(x.clone(), y_usize))
        .unwrap();
    assert_eq!(ols.classes(), &[0, 1, 2, 3, 4]);
    let s_ols = ols.decision_function(&x);
    for lambda in [0.0, 1e-10] {
        let ridge = LinearProbe::least_squares()
            .ridge(lambda)
            .fit_array(x.view(), &y)
            .unwrap();
        let s_ridge = ridge.decision_function(x.view()).unwrap();
        let diff = (&s_ols - &s_ridge)
            .mapv(f64::abs)
            .fold(0.0f64, |m, &v| m.max(v));
        assert!(
            diff < 1e-7,
            "λ = {lambda:e}: max |score difference| {diff:e}"
        );
        // The input-space weights agree too (column 3 has 50× smaller weights).
        for (a, b) in ols.weights().iter().zip(ridge.input_weights()) {
            assert_abs_diff_eq!(*a, *b, epsilon = 1e-7);
        }
        let pred_ols: Array1<usize> = ols.predict(&x);
        let pred_ridge = ridge.predict(x.view()).unwrap();
        assert_eq!(
            pred_ols.iter().map(|&l| l as u32).collect::<Vec<_>>(),
            pred_ridge
        );
    }
    // At a real penalty they differ (the check is not vacuous).
    let strong = LinearProbe::least_squares()
        .ridge(1.0)
        .fit_array(x.view(), &y)
        .unwrap();
    let diff = (&s_ols - &strong.decision_function(x.view()).unwrap())
        .mapv(f64::abs)
        .fold(0.0f64, |m, &v| m.max(v));
    assert!(diff > 1e-3, "{diff:e}");

    // The CLI's `--kind linfa-ols` is `probe_scan_on(OneVsRestOls)`; it takes no penalty.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features-fc2.parquet");
    write_run(&path, &[0, 5]);
    let out = Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
        .args([
            "probe",
            path.to_str().unwrap(),
            "--format",
            "json",
            "--kind",
            "linfa-ols",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lib = probe_scan(&FeatureScan::open(&path).unwrap(), &OneVsRestOls, None).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    for (obj, r) in arr.iter().zip(&lib) {
        assert_eq!(obj["kind"], "linfa-ols");
        assert_eq!(obj["test_accuracy"].as_f64().unwrap(), r.test_accuracy);
        assert_eq!(obj["train_accuracy"].as_f64().unwrap(), r.train_accuracy);
        assert_eq!(obj["penalty"].as_f64().unwrap(), 0.0);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
        .args([
            "probe",
            path.to_str().unwrap(),
            "--kind",
            "linfa-ols",
            "--penalty",
            "1e-3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("linfa-ols"));
}
