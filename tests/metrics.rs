//! Metric core tests: closed forms, hand-computed cases, properties and cross-checks.

use approx::assert_relative_eq;
use ndarray::{array, s, Array1, Array2, Axis};
use neural_collapse::prelude::*;
use neural_collapse::Error;
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// Random `rows × cols` matrix with orthonormal columns (Gram–Schmidt of a Gaussian matrix).
fn orthonormal(rows: usize, cols: usize, rng: &mut StdRng) -> Array2<f64> {
    let mut q = Array2::<f64>::zeros((rows, cols));
    for j in 0..cols {
        let mut v: Array1<f64> = (0..rows).map(|_| rng.sample(StandardNormal)).collect();
        for _ in 0..2 {
            for k in 0..j {
                let proj = q.column(k).dot(&v);
                v.scaled_add(-proj, &q.column(k));
            }
        }
        let n = v.dot(&v).sqrt();
        q.column_mut(j).assign(&(v / n));
    }
    q
}

/// `C` simplex-ETF vertices (rows) of norm `radius`, embedded in `R^d` by a random isometry.
fn etf(c: usize, d: usize, radius: f64, rng: &mut StdRng) -> Array2<f64> {
    let mut m = Array2::<f64>::eye(c) - 1.0 / c as f64; // rows: e_c − 1/C, norm sqrt((C−1)/C)
    m *= radius * (c as f64 / (c as f64 - 1.0)).sqrt();
    let q = orthonormal(d, c, rng); // d × c
    m.dot(&q.t())
}

fn gaussian_classes(
    c: usize,
    d: usize,
    per_class: usize,
    radius: f64,
    noise: f64,
    seed: u64,
) -> (Array2<f64>, Vec<u32>, Array2<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let means = etf(c, d, radius, &mut rng);
    let mut x = Array2::<f64>::zeros((c * per_class, d));
    let mut y = Vec::with_capacity(c * per_class);
    for (i, mut row) in x.outer_iter_mut().enumerate() {
        let class = i % c;
        y.push(class as u32);
        for (j, v) in row.iter_mut().enumerate() {
            let z: f64 = StandardNormal.sample(&mut rng);
            *v = means[[class, j]] + noise * z;
        }
    }
    (x, y, means)
}

fn metric_err(e: impl Into<Error>) -> MetricError {
    match e.into() {
        Error::Metric(m) => m,
        other => panic!("expected a metric error, got {other:?}"),
    }
}

#[test]
fn exact_simplex_etf_is_fully_collapsed() {
    let mut rng = StdRng::seed_from_u64(7);
    let (c, d) = (5, 12);
    let means = etf(c, d, 3.0, &mut rng);
    // Four samples per class, each exactly at its class mean, plus a common offset μ_G.
    let offset: Array1<f64> = (0..d).map(|j| 0.25 * j as f64).collect();
    let mut x = Array2::<f64>::zeros((4 * c, d));
    let mut y = vec![];
    for i in 0..4 * c {
        x.row_mut(i).assign(&(&means.row(i % c) + &offset));
        y.push((i % c) as u32);
    }
    // Self-dual classifier: W = 2·Ṁᵀ, bias −W μ_G so that W h + b = 2 Ṁᵀ(h − μ_G).
    let w = &means * 2.0;
    let b = -w.dot(&offset);
    let clf = Classifier { w, b };
    let r = NcParams::new()
        .classifier(&clf)
        .measure(x.view(), &y)
        .unwrap();
    assert_eq!(r.rank, c - 1);
    for (name, v) in r.metrics() {
        assert!(v.abs() < 1e-12, "{name} = {v:e}");
    }
    assert_eq!(r.nc4, Some(0.0));
}

#[test]
fn hand_computed_two_class_case() {
    // Class means ±a·e1; each class has residuals ±σ e1 and ±τ e2 (4 samples).
    let (a, sigma, tau) = (2.0, 0.5, 0.3);
    let mut rows = vec![];
    let mut y = vec![];
    for (c, sign) in [(0u32, 1.0), (1, -1.0)] {
        for r in [[sigma, 0.0], [-sigma, 0.0], [0.0, tau], [0.0, -tau]] {
            rows.push([sign * a + r[0], r[1]]);
            y.push(c);
        }
    }
    let x = Array2::from(rows);
    // Σ_W = diag(σ²/2, τ²/2), Σ_B = a² e1 e1ᵀ: NC1 = Tr(Σ_W Σ_B†)/C = σ²/(4a²).
    let r = NcParams::new().measure(x.view(), &y).unwrap();
    assert_eq!(r.rank, 1);
    assert_relative_eq!(r.nc1, sigma * sigma / (4.0 * a * a), max_relative = 1e-14);
    // Tr Σ_W / Tr Σ_B = (σ²+τ²)/2 / a².
    assert_relative_eq!(
        r.nc1_trace_ratio,
        (sigma * sigma + tau * tau) / 2.0 / (a * a),
        max_relative = 1e-14
    );
    // σ²_c = (σ²+τ²)/2, ‖μ_0 − μ_1‖² = 4a²: CDNV = (σ²+τ²)/2 / (4a²).
    assert_relative_eq!(
        r.cdnv,
        (sigma * sigma + tau * tau) / 2.0 / (4.0 * a * a),
        max_relative = 1e-14
    );
    // Explicit form agrees.
    let stats = ClassStats::from_data(x.view(), &y).unwrap();
    let e = nc1_explicit(
        x.view(),
        &y,
        &stats,
        GlobalMean::ClassMeans,
        DEFAULT_TOLERANCE,
    )
    .unwrap();
    assert_relative_eq!(e.value, r.nc1, max_relative = 1e-12);
}

#[test]
fn gaussian_classes_match_population_closed_form() {
    // Isotropic noise s² I around simplex-ETF means of radius r:
    //   NC1 = s² (C−1)² / (C r²),  trace ratio = d s² / r²,  CDNV = d s² (C−1) / (2 C r²).
    let (c, d, per, r, s) = (4, 6, 20_000, 2.0, 0.5);
    let (x, y, _) = gaussian_classes(c, d, per, r, s, 42);
    let rep = NcParams::new().measure(x.view(), &y).unwrap();
    let (cf, df) = (c as f64, d as f64);
    assert_relative_eq!(
        rep.nc1,
        s * s * (cf - 1.0).powi(2) / (cf * r * r),
        max_relative = 0.03
    );
    assert_relative_eq!(
        rep.nc1_trace_ratio,
        df * s * s / (r * r),
        max_relative = 0.03
    );
    assert_relative_eq!(
        rep.cdnv,
        df * s * s * (cf - 1.0) / (2.0 * cf * r * r),
        max_relative = 0.03
    );
    assert_eq!(rep.rank, c - 1);
}

#[test]
fn nc2_of_known_vectors() {
    // Two orthogonal unit vectors and one of norm 2 at 180° from the first: norms 1,1,2.
    let v = array![[1.0, 0.0], [0.0, 1.0], [-2.0, 0.0]];
    let nc2 = nc2_of_rows(v.view(), "row").unwrap();
    // norms: mean 4/3, unbiased std sqrt(((1/3)²·2 + (2/3)²)/2) = sqrt(1/3).
    assert_relative_eq!(
        nc2.equinorm,
        (1.0f64 / 3.0).sqrt() / (4.0 / 3.0),
        max_relative = 1e-14
    );
    // cosines (0,1)=0, (0,2)=−1, (1,2)=0: mean −1/3; unbiased std sqrt((1/9+4/9+1/9)/2)=sqrt(1/3).
    assert_relative_eq!(
        nc2.equiangularity,
        (1.0f64 / 3.0).sqrt(),
        max_relative = 1e-14
    );
    // |cos + 1/2|: 1/2, 1/2, 1/2.
    assert_relative_eq!(nc2.max_angle, 0.5, max_relative = 1e-14);
}

#[test]
fn nc3_hand_case() {
    // W = Ṁᵀ rotated by 90° in the plane: ‖A − B‖² = 2 − 2⟨A,B⟩ with ⟨A,B⟩ = 0.
    let m = array![[1.0, 0.0], [-1.0, 0.0]];
    let w = array![[0.0, 1.0], [0.0, -1.0]];
    assert_relative_eq!(
        nc3_of(w.view(), m.view()).unwrap(),
        2.0,
        max_relative = 1e-15
    );
    assert_relative_eq!(nc3_of((&m * 3.0).view(), m.view()).unwrap(), 0.0);
}

#[test]
fn nc4_counts_disagreements() {
    // Means at 0 and 10 on a line; classifier threshold at 7 instead of 5.
    let x = array![[0.0], [4.0], [6.0], [8.0], [10.0], [1.0]];
    let y = [0, 0, 1, 1, 1, 0];
    // means: class 0 = 5/3, class 1 = 8; NCC boundary 4.833…: sample 4.0 → 0, 6.0 → 1.
    let clf = Classifier {
        w: array![[-1.0], [1.0]],
        b: array![7.0, -7.0],
    };
    let r = NcParams::new()
        .classifier(&clf)
        .measure(x.view(), &y)
        .unwrap();
    // Classifier: z = (7 − h, h − 7), class 1 iff h > 7 → 6.0 disagrees with NCC (class 1).
    assert_relative_eq!(r.nc4.unwrap(), 1.0 / 6.0);
    // Stored predictions give the same answer.
    let pred = [0, 0, 0, 1, 1, 0];
    let r2 = NcParams::new()
        .predictions(&pred)
        .measure(x.view(), &y)
        .unwrap();
    assert_eq!(r2.nc4, r.nc4);
}

#[test]
fn train_reference_uses_train_means() {
    let train = array![[1.0, 0.0], [3.0, 0.0], [-1.0, 0.0], [-3.0, 0.0]];
    let ty = [0, 0, 1, 1];
    let stats = ClassStats::from_data(train.view(), &ty).unwrap();
    // Train means ±2 e1. Test samples offset from them by +1 e2 each.
    let test = array![[2.0, 1.0], [-2.0, 1.0]];
    let own = NcParams::new().measure(test.view(), &[0, 1]).unwrap();
    let vs_train = NcParams::new()
        .reference(Reference::Train(&stats))
        .measure(test.view(), &[0, 1])
        .unwrap();
    // Own means: test samples are their own means → no within-class spread.
    assert_eq!(own.nc1, 0.0);
    assert_eq!(own.nc1_trace_ratio, 0.0);
    // Against train means: residuals e2, orthogonal to Σ_B's range → NC1 0, trace ratio 1/4.
    assert_eq!(vs_train.reference, ReferenceChoice::Train);
    assert!(vs_train.nc1.abs() < 1e-30);
    assert_relative_eq!(vs_train.nc1_trace_ratio, 1.0 / 4.0, max_relative = 1e-14);
    // σ²_c = 1 each, ‖μ_0 − μ_1‖² = 16 → CDNV 2/32.
    assert_relative_eq!(vs_train.cdnv, 1.0 / 16.0, max_relative = 1e-14);
    // A residual along e1 is seen by NC1: test (2.5, 0) and (−2, 0) → r = (0.5,0), (0,0).
    let test2 = array![[2.5, 0.0], [-2.0, 0.0]];
    let v2 = NcParams::new()
        .reference(Reference::Train(&stats))
        .measure(test2.view(), &[0, 1])
        .unwrap();
    // Σ_B = 4 e1e1ᵀ, Σ_W = (0.25/2) e1e1ᵀ: NC1 = (0.125/4)/2.
    assert_relative_eq!(v2.nc1, 0.125 / 4.0 / 2.0, max_relative = 1e-14);
}

#[test]
fn sample_weighted_global_mean_differs_when_imbalanced() {
    let x = array![[0.0], [0.0], [0.0], [4.0]];
    let y = [0, 0, 0, 1];
    let st = ClassStats::from_data(x.view(), &y).unwrap();
    assert_eq!(st.global_mean(GlobalMean::ClassMeans)[0], 2.0);
    assert_eq!(st.global_mean(GlobalMean::SampleWeighted)[0], 1.0);
}

/// A naive NC1 as often written in numpy: Σ_B built in f32 from f32 features, then a
/// pseudo-inverse that cuts singular values below 1e-15·σ_max (so keeps the noise directions).
fn naive_f32_nc1(x: &Array2<f32>, y: &[u32], c: usize) -> f64 {
    use linfa_linalg::eigh::Eigh;
    let d = x.ncols();
    let mut means = Array2::<f32>::zeros((c, d));
    let mut counts = vec![0f32; c];
    for (row, &l) in x.outer_iter().zip(y) {
        let mut m = means.row_mut(l as usize);
        m += &row;
        counts[l as usize] += 1.0;
    }
    for (mut m, n) in means.outer_iter_mut().zip(&counts) {
        m /= *n;
    }
    let g = means.mean_axis(Axis(0)).unwrap();
    let mc = &means - &g.insert_axis(Axis(0));
    let sb32 = mc.t().dot(&mc) / c as f32;
    let mut r = x.clone();
    for (mut row, &l) in r.outer_iter_mut().zip(y) {
        row -= &means.row(l as usize);
    }
    let sw32 = r.t().dot(&r) / x.nrows() as f32;
    let sb = sb32.mapv(f64::from);
    let sw = sw32.mapv(f64::from);
    let (vals, vecs) = sb.eigh().unwrap();
    let lmax = vals.iter().cloned().fold(0.0, f64::max);
    let mut tr = 0.0;
    for k in 0..d {
        if vals[k].abs() > 1e-15 * lmax {
            let v = vecs.column(k);
            tr += v.dot(&sw.dot(&v)) / vals[k];
        }
    }
    tr / c as f64
}

#[test]
fn f32_noise_in_sigma_b_does_not_blow_up() {
    // Strongly collapsed f32 features: radius 10, isotropic noise 1e-2, C = 10, d = 64.
    let (c, d) = (10, 64);
    let (x64, y, _) = gaussian_classes(c, d, 60, 10.0, 1e-2, 3);
    let x32 = x64.mapv(|v| v as f32);
    let ours = NcParams::new().measure(x32.view(), &y).unwrap();
    // Reference: the explicit form in f64 on the same (f32-rounded) values.
    let x32_as_64 = x32.mapv(f64::from);
    let st = ClassStats::from_data(x32_as_64.view(), &y).unwrap();
    let exact = nc1_explicit(x32_as_64.view(), &y, &st, GlobalMean::ClassMeans, 1e-12).unwrap();
    assert_relative_eq!(ours.nc1, exact.value, max_relative = 1e-9);
    assert_eq!(ours.rank, c - 1);
    let naive = naive_f32_nc1(&x32, &y, c);
    println!(
        "f32 case: ours {:e} (rank {}), explicit f64 {:e}, naive f32 pinv {naive:e}",
        ours.nc1, ours.rank, exact.value
    );
    assert!(
        naive.abs() > 100.0 * exact.value,
        "naive pinv should explode: naive {naive:e} vs exact {:e}",
        exact.value
    );
}

#[test]
fn rank_respects_tolerance() {
    // Three classes whose centred means are nearly collinear: the second singular value of Ṁ
    // is about 6e-8 of the first. With tolerance 1e-12 on eigenvalues (1e-6 on singular
    // values) it is dropped; with tolerance 0 it is kept and the e2 residuals dominate NC1.
    let x = array![
        [1.1, 0.0],
        [0.9, 0.0],
        [-1.0, 0.0],
        [-1.0, 0.0],
        [0.0, 1e-6],
        [0.0, -0.8e-6]
    ];
    let y = [0, 0, 1, 1, 2, 2];
    let loose = NcParams::new()
        .tolerance(1e-12)
        .measure(x.view(), &y)
        .unwrap();
    let tight = NcParams::new()
        .tolerance(0.0)
        .measure(x.view(), &y)
        .unwrap();
    assert_eq!(loose.rank, 1);
    assert_eq!(tight.rank, 2);
    assert!(tight.nc1 > 1e3 * loose.nc1);
}

#[test]
fn bad_inputs_give_typed_errors() {
    let x = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
    let p = NcParams::new();
    assert!(matches!(
        metric_err(p.measure(x.view(), &[0, 1]).unwrap_err()),
        MetricError::Check(CheckError::LengthMismatch { rows: 3, labels: 2 })
    ));
    assert!(matches!(
        metric_err(p.measure(x.view(), &[0, 0, 0]).unwrap_err()),
        MetricError::TooFewClasses { classes: 1 }
    ));
    assert!(matches!(
        metric_err(p.measure(x.view(), &[0, 2, 0]).unwrap_err()),
        MetricError::EmptyClass { class: 1, .. }
    ));
    let nan = array![[1.0f32, 2.0], [f32::NAN, 4.0], [5.0, 6.0]];
    let e = metric_err(p.measure(nan.view(), &[0, 1, 0]).unwrap_err());
    assert!(matches!(
        e,
        MetricError::Check(CheckError::NonFinite {
            row: 1,
            column: 0,
            ..
        })
    ));
    assert!(e.to_string().contains("row 1"));
    let inf = array![[1.0f64, f64::INFINITY], [3.0, 4.0]];
    assert!(matches!(
        metric_err(p.measure(inf.view(), &[0, 1]).unwrap_err()),
        MetricError::Check(CheckError::NonFinite {
            row: 0,
            column: 1,
            ..
        })
    ));
    assert!(matches!(
        metric_err(
            NcParams::new()
                .tolerance(f64::NAN)
                .measure(x.view(), &[0, 1, 0])
                .unwrap_err()
        ),
        MetricError::BadTolerance(_)
    ));
    let same = array![[1.0f32, 1.0], [1.0, 1.0]];
    assert!(matches!(
        metric_err(p.measure(same.view(), &[0, 1]).unwrap_err()),
        MetricError::DegenerateMeans { .. }
    ));
    let clf = Classifier {
        w: Array2::zeros((3, 2)),
        b: Array1::zeros(3),
    };
    assert!(matches!(
        metric_err(
            p.classifier(&clf)
                .measure(x.view(), &[0, 1, 0])
                .unwrap_err()
        ),
        MetricError::ClassifierShape {
            rows: 3,
            classes: 2,
            ..
        }
    ));
    let st = ClassStats::from_data(x.view(), &[0, 1, 2]).unwrap();
    assert!(matches!(
        metric_err(
            NcParams::new()
                .reference(Reference::Train(&st))
                .measure(x.view(), &[0, 1, 0])
                .unwrap_err()
        ),
        MetricError::EmptyClass { class: 2, .. }
    ));
    assert!(matches!(
        metric_err(p.measure(x.view(), &[0, 1, 5]).unwrap_err()),
        MetricError::EmptyClass { .. }
    ));
    assert!(matches!(
        metric_err(
            NcParams::new()
                .reference(Reference::Train(&st))
                .measure(x.view(), &[0, 1, 5])
                .unwrap_err()
        ),
        MetricError::Check(CheckError::LabelOutOfRange {
            row: 2,
            label: 5,
            classes: 3
        })
    ));
    assert!(matches!(
        metric_err(
            p.predictions(&[0, 7, 0])
                .measure(x.view(), &[0, 1, 0])
                .unwrap_err()
        ),
        MetricError::PredictionOutOfRange {
            row: 1,
            pred: 7,
            ..
        }
    ));
    let empty = Array2::<f32>::zeros((0, 2));
    assert!(matches!(
        metric_err(p.measure(empty.view(), &[]).unwrap_err()),
        MetricError::Check(CheckError::Empty { .. })
    ));
}

#[test]
fn report_outputs() {
    let (x, y, means) = gaussian_classes(3, 4, 10, 1.0, 0.1, 1);
    let clf = Classifier {
        w: means.clone(),
        b: Array1::zeros(3),
    };
    let r = NcParams::new()
        .classifier(&clf)
        .measure(x.view(), &y)
        .unwrap();
    let j = r.to_json();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    for k in [
        "epoch",
        "split",
        "n",
        "classes",
        "dim",
        "rank",
        "nc1",
        "nc1_trace_ratio",
        "cdnv",
        "nc2_equinorm",
        "nc2_equiangularity",
        "nc2_max_angle",
        "nc2_etf_distance",
        "nc2_equinorm_w",
        "nc2_equiangularity_w",
        "nc2_max_angle_w",
        "nc2_etf_distance_w",
        "nc3",
        "nc4",
    ] {
        assert!(keys.contains(&k), "missing {k}");
    }
    // The JSON and the table show the same metrics: every metric of the report is a key.
    for (k, v) in r.metrics() {
        assert_eq!(j[k.name()].as_f64(), Some(v), "{k}");
    }
    assert_eq!(j["n"], 30);
    let df = r.to_tidy().unwrap();
    assert_eq!(df.height(), r.metrics().len());
    assert_eq!(
        df.get_column_names(),
        ["epoch", "split", "layer", "metric", "value"]
    );
    let text = r.to_string();
    assert!(text.contains("nc1_trace_ratio"));
}

fn arb_problem() -> impl Strategy<Value = (Array2<f64>, Vec<u32>)> {
    (2usize..6, 2usize..9, 2usize..6, any::<u64>()).prop_map(|(c, d, per, seed)| {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = c * per + rng.gen_range(0..c);
        let mut x = Array2::<f64>::zeros((n, d));
        let mut y = vec![];
        let shift: Array2<f64> =
            Array2::from_shape_fn((c, d), |_| 3.0 * rng.sample::<f64, _>(StandardNormal));
        for i in 0..n {
            let class = i % c;
            y.push(class as u32);
            for j in 0..d {
                x[[i, j]] = shift[[class, j]] + rng.sample::<f64, _>(StandardNormal);
            }
        }
        (x, y)
    })
}

/// Equal to a relative tolerance; two NaNs (an undefined metric, e.g. the equiangularity of
/// C = 2 classes) count as equal.
fn close(a: f64, b: f64, rel: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= rel * a.abs().max(b.abs()) + 1e-12
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn invariant_to_rotation_scaling_and_order((x, y) in arb_problem(), seed in any::<u64>(), scale in 0.01f64..100.0) {
        let mut rng = StdRng::seed_from_u64(seed);
        let base = NcParams::new().measure(x.view(), &y).unwrap();
        let q = orthonormal(x.ncols(), x.ncols(), &mut rng);
        let rotated = x.dot(&q) * scale;
        let rot = NcParams::new().measure(rotated.view(), &y).unwrap();
        let mut perm: Vec<usize> = (0..y.len()).collect();
        for i in (1..perm.len()).rev() { perm.swap(i, rng.gen_range(0..=i)); }
        let xp = x.select(Axis(0), &perm);
        let yp: Vec<u32> = perm.iter().map(|&i| y[i]).collect();
        let per = NcParams::new().measure(xp.view(), &yp).unwrap();
        for ((name, a), ((_, b), (_, c))) in base.metrics().into_iter().zip(rot.metrics().into_iter().zip(per.metrics())) {
            prop_assert!(close(a, b, 1e-8), "{} rotation/scale: {:e} vs {:e}", name, a, b);
            prop_assert!(close(a, c, 1e-10), "{} order: {:e} vs {:e}", name, a, c);
        }
        prop_assert_eq!(base.rank, rot.rank);
    }

    #[test]
    fn streamed_and_merged_equal_whole((x, y) in arb_problem(), cut_seed in any::<u64>()) {
        let mut rng = StdRng::seed_from_u64(cut_seed);
        let c = *y.iter().max().unwrap() as usize + 1;
        let whole = ClassStats::from_data(x.view(), &y).unwrap();
        let mut streamed = ClassStats::new(c, x.ncols()).unwrap();
        let mut merged = ClassStats::new(c, x.ncols()).unwrap();
        let mut start = 0;
        while start < y.len() {
            let end = (start + rng.gen_range(1..5)).min(y.len());
            streamed.push(x.slice(s![start..end, ..]), &y[start..end]).unwrap();
            let part = ClassStats::new(c, x.ncols()).and_then(|mut p| {
                p.push(x.slice(s![start..end, ..]), &y[start..end]).map(|_| p)
            }).unwrap();
            merged.merge(&part).unwrap();
            start = end;
        }
        for other in [&streamed, &merged] {
            prop_assert_eq!(other.counts(), whole.counts());
            for (a, b) in other.means().iter().zip(whole.means().iter()) {
                prop_assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()));
            }
            for (a, b) in other.scatter().iter().zip(whole.scatter()) {
                prop_assert!(close(*a, *b, 1e-10));
            }
        }
    }

    #[test]
    fn projected_equals_explicit((x, y) in arb_problem()) {
        let st = ClassStats::from_data(x.view(), &y).unwrap();
        for g in [GlobalMean::ClassMeans, GlobalMean::SampleWeighted] {
            let a = nc1(x.view(), &y, &st, g, DEFAULT_TOLERANCE).unwrap();
            let b = nc1_explicit(x.view(), &y, &st, g, DEFAULT_TOLERANCE).unwrap();
            prop_assert_eq!(a.rank, b.rank);
            prop_assert!(close(a.value, b.value, 1e-9), "{:e} vs {:e}", a.value, b.value);
        }
    }
}

/// NC4 by brute force: the classifier's argmax of `Wh + b` against the argmin of the squared
/// distances to the reference means, both computed directly (first index on ties).
fn brute_force_nc4(x: &Array2<f64>, means: ndarray::ArrayView2<f64>, clf: &Classifier) -> f64 {
    let mut mismatches = 0usize;
    for h in x.outer_iter() {
        let logits = clf.w.dot(&h) + &clf.b;
        let net =
            (0..logits.len()).fold(0, |best, c| if logits[c] > logits[best] { c } else { best });
        let dist: Vec<f64> = means
            .outer_iter()
            .map(|m| (&h - &m).mapv(|v| v * v).sum())
            .collect();
        let ncc = (0..dist.len()).fold(0, |best, c| if dist[c] < dist[best] { c } else { best });
        mismatches += usize::from(net != ncc);
    }
    mismatches as f64 / x.nrows() as f64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The pass derives nearest-class-mean scores from the residuals' projections
    /// (`r·(μ_c − μ_G) = Σ_k V_ck (r·q_k)`) and logits from `r·w_c + μ_y·w_c + b_c`: it must
    /// agree with the direct computation, also when `d < C` (rank-deficient means), against a
    /// train reference, and for any number of rows (the kernels work in groups of 12). From 16
    /// classes on the logits are certified f32 products (both paths are drawn).
    #[test]
    fn nc4_matches_brute_force(
        c in 2usize..40,
        d in 1usize..20,
        extra in 0usize..60,
        seed in any::<u64>(),
    ) {
        let n = c + extra; // every class present (the split's own statistics need them all)
        let mut rng = StdRng::seed_from_u64(seed);
        let mut gauss = |r: usize, k: usize, s: f64| {
            Array2::from_shape_fn((r, k), |_| s * rng.sample::<f64, _>(StandardNormal))
        };
        let centres = gauss(c, d, 2.0);
        let train_y: Vec<u32> = (0..3 * c).map(|i| (i % c) as u32).collect();
        let mut train = gauss(3 * c, d, 1.0);
        for (mut row, &y) in train.outer_iter_mut().zip(&train_y) {
            row += &centres.row(y as usize);
        }
        let y: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
        let mut x = gauss(n, d, 1.5);
        for (mut row, &yy) in x.outer_iter_mut().zip(&y) {
            row += &centres.row(yy as usize);
        }
        let clf = Classifier { w: gauss(c, d, 1.0), b: Array1::from_iter(gauss(1, c, 0.5)) };
        let stats = ClassStats::from_data(train.view(), &train_y).unwrap();
        let want = brute_force_nc4(&x, stats.means(), &clf);
        let got = NcParams::new()
            .reference(Reference::Train(&stats))
            .classifier(&clf)
            .measure(x.view(), &y)
            .unwrap()
            .nc4
            .unwrap();
        prop_assert!((got - want).abs() < 1e-12, "{} vs {}", got, want);
        // Against the split's own means as well.
        let own = ClassStats::from_data(x.view(), &y).unwrap();
        let got_own = NcParams::new().classifier(&clf).measure(x.view(), &y).unwrap().nc4.unwrap();
        prop_assert!((got_own - brute_force_nc4(&x, own.means(), &clf)).abs() < 1e-12);
    }
}

/// The certified f32 logits (from 16 classes on) fall back to f64 where f32 cannot decide:
/// with two identical classifier rows every row is an exact tie between them, which the f64
/// rule breaks towards the first; a third row close to them (a relative 1e-7 apart, below
/// f32's resolution of the logits) must still be ranked as in f64.
#[test]
fn certified_f32_logits_fall_back_to_f64_on_ties() {
    let (c, d, n) = (24, 40, 500);
    let mut rng = StdRng::seed_from_u64(7);
    let mut gauss = |r: usize, k: usize, s: f64| {
        Array2::from_shape_fn((r, k), |_| s * rng.sample::<f64, _>(StandardNormal))
    };
    let centres = gauss(c, d, 2.0);
    let y: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
    let mut x = gauss(n, d, 1.0);
    for (mut row, &yy) in x.outer_iter_mut().zip(&y) {
        row += &centres.row(yy as usize);
    }
    // The classifier: the centres, with rows 5 and 9 equal and row 11 = row 5 (1 + 1e-7).
    let mut w = centres.clone();
    let r5 = w.row(5).to_owned();
    w.row_mut(9).assign(&r5);
    w.row_mut(11).assign(&(&r5 * (1.0 + 1e-7)));
    let clf = Classifier {
        w,
        b: Array1::zeros(c),
    };
    let own = ClassStats::from_data(x.view(), &y).unwrap();
    let want = brute_force_nc4(&x, own.means(), &clf);
    let got = NcParams::new()
        .classifier(&clf)
        .measure(x.view(), &y)
        .unwrap()
        .nc4
        .unwrap();
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    // The rows of class 5, 9 and 11 are where the ties and near-ties decide.
    assert!(
        want > 0.0,
        "some rows of classes 5, 9, 11 disagree with the nearest mean"
    );
}

/// `pred` holds predictions in the trained-on (coarse) labels: NC4 from it is measured only on
/// the labels it predicts. Hand case: two coarse classes on a line, fine classes within them.
#[test]
fn nc4_from_pred_only_for_the_labels_it_predicts() {
    use neural_collapse::features::{Features, LabelColumn};
    // x: fine 0 near -2.1, fine 1 near -1.9 (coarse 0); fine 2 near 1.9, fine 3 near 2.1 (coarse 1).
    let x = ndarray::arr2(&[
        [-2.2f32],
        [-2.0],
        [-2.0],
        [-1.8],
        [1.8],
        [2.0],
        [2.0],
        [2.2],
    ]);
    let fine = vec![0, 0, 1, 1, 2, 2, 3, 3];
    let coarse = vec![0, 0, 0, 0, 1, 1, 1, 1];
    // The network predicts coarse labels; one of eight (row 7) is wrong.
    let pred = vec![0, 0, 0, 0, 1, 1, 1, 0];
    let f = Features::new(x, fine).with_coarse(coarse).with_pred(pred);
    assert!(!f.pred_predicts_labels());
    let on_fine = NcParams::new().measure_features(&f).unwrap();
    assert_eq!(
        on_fine.nc4, None,
        "coarse predictions say nothing about the fine classes"
    );
    // On the coarse labels, the nearest coarse mean (−2 or +2) agrees with pred except at row 7.
    let on_coarse = NcParams::new()
        .measure_features(&f.relabel(LabelColumn::Coarse).unwrap())
        .unwrap();
    assert_eq!(on_coarse.nc4, Some(1.0 / 8.0));
}

/// A label far beyond the number of rows is an error before anything is allocated per class
/// (4·10⁹ classes × d would abort the process).
#[test]
fn class_stats_refuse_a_huge_label_without_allocating() {
    let x = ndarray::Array2::<f32>::zeros((3, 512));
    let e = ClassStats::from_data(x.view(), &[0, 1, 4_000_000_000]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("largest label 4000000000") && msg.contains("only 3 rows"),
        "{msg}"
    );
}

// --- min_class_samples (issue 17, item 2) ----------------------------------------------------

/// Rows of classes {0: 4, 1: 4, 5: 1, 7: 3} in d = 3, deterministic.
fn uneven() -> (Array2<f64>, Vec<u32>) {
    let labels = vec![0u32, 0, 0, 0, 1, 1, 1, 1, 5, 7, 7, 7];
    let mut rng = StdRng::seed_from_u64(17);
    let x = Array2::from_shape_fn((labels.len(), 3), |(i, j)| {
        let centre = f64::from(labels[i]) * if j == 0 { 1.0 } else { 0.3 };
        centre + 0.1 * rng.sample::<f64, _>(StandardNormal)
    });
    (x, labels)
}

/// The same rows measured two ways: with `min_class_samples(k)` on all rows, and strictly on
/// the rows of the kept classes renumbered by hand.
#[test]
fn min_class_samples_equals_measuring_the_kept_rows_by_hand() {
    let (x, labels) = uneven();
    // Strict default: labels 2, 3, 4, 6 have no rows → error naming class 2.
    let e = metric_err(NcParams::new().measure(x.view(), &labels).unwrap_err());
    assert!(
        matches!(e, MetricError::EmptyClass { class: 2, .. }),
        "{e:?}"
    );
    for (k, kept, dropped) in [
        (1usize, vec![0u32, 1, 5, 7], vec![]),
        (3, vec![0, 1, 7], vec![5u32]),
        (4, vec![0, 1], vec![5, 7]),
    ] {
        let r = NcParams::new()
            .min_class_samples(k)
            .measure(x.view(), &labels)
            .unwrap();
        assert_eq!(r.dropped_classes, dropped, "k = {k}");
        assert_eq!(r.classes, kept.len());
        let rows: Vec<usize> = (0..labels.len())
            .filter(|&i| kept.contains(&labels[i]))
            .collect();
        let by_hand_labels: Vec<u32> = rows
            .iter()
            .map(|&i| kept.iter().position(|&l| l == labels[i]).unwrap() as u32)
            .collect();
        let by_hand = NcParams::new()
            .measure(x.select(Axis(0), &rows).view(), &by_hand_labels)
            .unwrap();
        assert_eq!(r.n, rows.len());
        assert_relative_eq!(r.nc1, by_hand.nc1, max_relative = 1e-14);
        assert_relative_eq!(r.cdnv, by_hand.cdnv, max_relative = 1e-14);
        assert_relative_eq!(r.nc2.equinorm, by_hand.nc2.equinorm, max_relative = 1e-14);
    }
    let e = metric_err(
        NcParams::new()
            .min_class_samples(5)
            .measure(x.view(), &labels)
            .unwrap_err(),
    );
    assert!(
        matches!(e, MetricError::TooFewClasses { classes: 0 }),
        "{e:?}"
    );
    let e = metric_err(
        NcParams::new()
            .min_class_samples(0)
            .measure(x.view(), &labels)
            .unwrap_err(),
    );
    assert!(matches!(e, MetricError::BadMinClassSamples), "{e:?}");
}

/// A label of 4e9 with too few rows is dropped without allocating by label value.
#[test]
fn min_class_samples_drops_a_huge_label_without_allocating_for_it() {
    let (x, mut labels) = uneven();
    labels[8] = 4_000_000_000;
    let r = NcParams::new()
        .min_class_samples(2)
        .measure(x.view(), &labels)
        .unwrap();
    assert_eq!(r.dropped_classes, vec![4_000_000_000]);
    assert_eq!(r.classes, 3);
}

/// With a train reference, a class missing from the measured split (or too small in the
/// reference) is dropped and the reference restricted; equal to a reference built from the
/// kept classes' train rows. The classifier keeps its rows of the kept classes: NC3/NC4 equal
/// those of the hand-restricted classifier.
#[test]
fn min_class_samples_with_a_train_reference_and_a_classifier() {
    let (train_x, train_labels) = uneven();
    let train_labels: Vec<u32> = train_labels
        .iter()
        .map(|&l| [0, 1, 0, 0, 0, 2, 0, 3][l as usize])
        .collect();
    let train = ClassStats::from_data(train_x.view(), &train_labels).unwrap(); // counts 4, 4, 1, 3
    let (test_x, test_labels) = (
        train_x.slice(s![..8, ..]).to_owned(),
        train_labels[..8].to_vec(),
    ); // classes 0, 1 only
    let clf = Classifier {
        w: array![
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [1.0, 1.0, 1.0]
        ],
        b: array![0.1, 0.2, 0.3, 0.4],
    };
    let strict = NcParams::new()
        .reference(Reference::Train(&train))
        .measure(test_x.view(), &test_labels);
    assert!(strict.is_err());
    let r = NcParams::new()
        .reference(Reference::Train(&train))
        .classifier(&clf)
        .min_class_samples(1)
        .measure(test_x.view(), &test_labels)
        .unwrap();
    assert_eq!(r.dropped_classes, vec![2, 3]);
    let rows: Vec<usize> = (0..12).filter(|&i| train_labels[i] < 2).collect();
    let kept_train = ClassStats::from_data(
        train_x.select(Axis(0), &rows).view(),
        &train_labels
            .iter()
            .copied()
            .filter(|&l| l < 2)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let kept_clf = Classifier {
        w: clf.w.slice(s![..2, ..]).to_owned(),
        b: clf.b.slice(s![..2]).to_owned(),
    };
    let by_hand = NcParams::new()
        .reference(Reference::Train(&kept_train))
        .classifier(&kept_clf)
        .measure(test_x.view(), &test_labels)
        .unwrap();
    assert_relative_eq!(r.nc1, by_hand.nc1, max_relative = 1e-14);
    assert_relative_eq!(r.nc3.unwrap(), by_hand.nc3.unwrap(), max_relative = 1e-14);
    assert_eq!(r.nc4, by_hand.nc4);
    // Measuring the train rows themselves with k = 4: classes 2 (1 sample) and 3 (3) dropped.
    let test_all = NcParams::new()
        .reference(Reference::Train(&train))
        .min_class_samples(4)
        .measure(train_x.view(), &train_labels)
        .unwrap();
    assert_eq!(test_all.dropped_classes, vec![2, 3]);
    assert_eq!(test_all.n, 8);
}

/// Stored predictions of a dropped class leave NC4 out rather than count against it.
#[test]
fn min_class_samples_leaves_nc4_out_when_a_prediction_names_a_dropped_class() {
    let (x, labels) = uneven();
    let mut pred = labels.clone();
    let r = NcParams::new()
        .predictions(&pred)
        .min_class_samples(3)
        .measure(x.view(), &labels)
        .unwrap();
    assert!(r.nc4.is_some());
    pred[0] = 5; // a dropped class
    let r = NcParams::new()
        .predictions(&pred)
        .min_class_samples(3)
        .measure(x.view(), &labels)
        .unwrap();
    assert_eq!(r.nc4, None);
}

/// Classifier statistics do not change when `W` and `b` are scaled by one power of two, even
/// one that puts the weights near f64's limits, where `‖w_c‖²` and `w_c·h` overflow (weights
/// of 1e308 gave NC2 of W as NaN, exit 0) or underflow. Closed form: the statistics are
/// scale-invariant, and scaling by 2^k is exact.
#[test]
fn classifier_statistics_are_the_same_at_the_limits_of_f64() {
    let (c, d, n) = (6, 9, 240);
    let mut rng = StdRng::seed_from_u64(41);
    let means = Array2::from_shape_fn((c, d), |_| 3.0 * rng.sample::<f64, _>(StandardNormal));
    let y: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        means[[y[i] as usize, j]] + rng.sample::<f64, _>(StandardNormal)
    });
    let noise = Array2::from_shape_fn((c, d), |_| 2.0 * rng.sample::<f64, _>(StandardNormal));
    let w = &means + &noise;
    let b: Array1<f64> = (0..c).map(|_| rng.sample(StandardNormal)).collect();
    let clf = Classifier { w, b };
    let measure = |k: i32| {
        // 2^k as two exact factors, each a normal f64.
        let f = 2f64.powi(k / 2) * 2f64.powi(k - k / 2);
        let scaled = Classifier {
            w: clf.w.mapv(|v| v * f),
            b: clf.b.mapv(|v| v * f),
        };
        if k > 0 {
            let sq: f64 = scaled.w.row(0).iter().map(|v| v * v).sum();
            assert!(
                sq.is_infinite(),
                "2^{k}: the weights do not overflow a norm"
            );
        }
        NcParams::new()
            .classifier(&scaled)
            .measure(x.view(), &y)
            .unwrap()
    };
    let base = measure(0);
    assert!(
        base.nc4.is_some_and(|v| v > 0.0 && v < 0.5),
        "{:?}",
        base.nc4
    );
    for k in [1015, 600, -600, -1000] {
        let r = measure(k);
        assert_eq!(r.nc4, base.nc4, "2^{k}: NC4");
        for ((name, got), (_, want)) in r.metrics().into_iter().zip(base.metrics()) {
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "2^{k}: {name} = {got:e}, unscaled {want:e}"
            );
        }
    }
}
