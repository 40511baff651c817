//! Issue 14, deliverable 4: the library keeps the command line's promise. Every public entry
//! point of the statistics, metrics, probes, intervals, datasets and findings helpers returns a
//! typed error with one line naming the value at fault on bad input (never a panic, an abort or
//! a silent 0 for an undefined statistic), and gives the numbers of an independent computation
//! on valid but unusual input (one sample per class, d = 1, C = 2).

use approx::assert_relative_eq;
use ndarray::{array, Array2};
use neural_collapse::datasets::{balanced_subset, class_counts, DatasetError};
use neural_collapse::findings::spearman;
use neural_collapse::interval::{bootstrap_interval, student_t_quantile, t_interval};
use neural_collapse::metrics::{nc1, nc1_explicit, nc2_of_rows, nc3_of};
use neural_collapse::prelude::*;
use neural_collapse::study::SeedValue;

/// The error's message: one non-empty line containing every needle.
fn one_line(e: &dyn std::fmt::Display, needles: &[&str]) -> String {
    let m = e.to_string();
    assert!(!m.trim().is_empty() && !m.contains('\n'), "{m:?}");
    for n in needles {
        assert!(m.contains(n), "{n:?} not in {m:?}");
    }
    m
}

fn metric_err(e: impl Into<Error>) -> MetricError {
    match e.into() {
        Error::Metric(m) => m,
        other => panic!("expected a MetricError, got {other:?}"),
    }
}

/// Two classes in d = 1: {0, 2} and {10, 14}.
fn d1() -> (Array2<f32>, Vec<u32>) {
    (array![[0.0f32], [2.0], [10.0], [14.0]], vec![0, 0, 1, 1])
}

// ---------------------------------------------------------------------------------------------
// ClassStats

#[test]
fn class_stats_from_data_names_a_length_mismatch_even_without_labels() {
    let x = Array2::<f32>::zeros((3, 2));
    // Was "0 class(es): Neural Collapse metrics need at least 2" (the labels were never compared
    // with the rows when there were none).
    let e = metric_err(ClassStats::from_data(x.view(), &[]).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::LengthMismatch { rows: 3, labels: 0 })
        ),
        "{e:?}"
    );
    one_line(&e, &["3 feature rows but 0 labels"]);
    let e = metric_err(ClassStats::from_data(x.view(), &[0, 1]).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::LengthMismatch { rows: 3, labels: 2 })
        ),
        "{e:?}"
    );
}

#[test]
fn class_stats_from_data_refuses_empty_single_class_huge_labels_and_nan() {
    let e =
        metric_err(ClassStats::from_data(Array2::<f32>::zeros((0, 3)).view(), &[]).unwrap_err());
    assert!(
        matches!(e, MetricError::Check(CheckError::Empty { rows: 0, dim: 3 })),
        "{e:?}"
    );
    let e = metric_err(
        ClassStats::from_data(Array2::<f32>::zeros((2, 0)).view(), &[0, 1]).unwrap_err(),
    );
    assert!(
        matches!(e, MetricError::Check(CheckError::Empty { rows: 2, dim: 0 })),
        "{e:?}"
    );
    one_line(&e, &["2 rows × 0 columns"]);
    let e = metric_err(
        ClassStats::from_data(Array2::<f32>::ones((3, 2)).view(), &[0, 0, 0]).unwrap_err(),
    );
    assert!(
        matches!(e, MetricError::TooFewClasses { classes: 1 }),
        "{e:?}"
    );
    let e = metric_err(
        ClassStats::from_data(Array2::<f32>::ones((3, 2)).view(), &[0, 1, 4_000_000_000])
            .unwrap_err(),
    );
    assert!(
        matches!(
            e,
            MetricError::TooManyClasses {
                label: 4_000_000_000,
                rows: 3
            }
        ),
        "{e:?}"
    );
    one_line(&e, &["4000000000", "3 rows"]);
    let x = array![[0.0f32, 1.0], [1.0, f32::NAN], [2.0, 2.0]];
    let e = metric_err(ClassStats::from_data(x.view(), &[0, 1, 1]).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::NonFinite {
                row: 1,
                column: 1,
                ..
            })
        ),
        "{e:?}"
    );
    one_line(&e, &["NaN", "row 1", "column 1"]);
}

#[test]
fn class_stats_with_more_classes_than_rows_is_an_error_before_allocation() {
    let x = Array2::<f32>::ones((3, 4));
    // Was: allocated 4e9 × 4 means (an abort), or silently a summary with empty classes.
    let e = metric_err(
        ClassStats::from_data_with_classes(x.view(), &[0, 1, 3], 4_000_000_000).unwrap_err(),
    );
    assert!(
        matches!(
            e,
            MetricError::EmptyClass {
                class: 2,
                classes: 4_000_000_000
            }
        ),
        "{e:?}"
    );
    one_line(&e, &["class 2 has no samples", "0..4000000000"]);
    let e = metric_err(ClassStats::from_data_with_classes(x.view(), &[0, 1, 5], 3).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::LabelOutOfRange {
                row: 2,
                label: 5,
                classes: 3
            })
        ),
        "{e:?}"
    );
    let e = metric_err(ClassStats::from_data_with_classes(x.view(), &[0, 0], 2).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::LengthMismatch { rows: 3, labels: 2 })
        ),
        "{e:?}"
    );
    for classes in [0, 1] {
        let e = metric_err(
            ClassStats::from_data_with_classes(x.view(), &[0, 0, 0], classes).unwrap_err(),
        );
        assert!(matches!(e, MetricError::TooFewClasses { .. }), "{e:?}");
    }
    // An empty class is still allowed when there are enough rows (streaming use).
    let s = ClassStats::from_data_with_classes(x.view(), &[0, 0, 2], 3).unwrap();
    assert_eq!(s.first_empty_class(), Some(1));
}

#[test]
fn class_stats_new_with_an_unallocatable_size_is_an_error_not_an_abort() {
    for (classes, dim) in [
        (usize::MAX, 2),
        (1usize << 40, 1 << 40),
        (usize::MAX / 8, 1),
    ] {
        let e = metric_err(ClassStats::new(classes, dim).unwrap_err());
        assert!(matches!(e, MetricError::TooLarge { .. }), "{e:?}");
        one_line(&e, &[&classes.to_string(), &dim.to_string(), "too large"]);
    }
    let e = metric_err(ClassStats::new(1, 3).unwrap_err());
    assert!(matches!(e, MetricError::TooFewClasses { classes: 1 }));
    let e = metric_err(ClassStats::new(3, 0).unwrap_err());
    assert!(matches!(
        e,
        MetricError::Check(CheckError::Empty { dim: 0, .. })
    ));
}

#[test]
fn class_stats_push_and_merge_refuse_mismatches() {
    let mut s = ClassStats::new(2, 3).unwrap();
    let e = metric_err(
        s.push(Array2::<f32>::ones((2, 2)).view(), &[0, 1])
            .unwrap_err(),
    );
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::DimensionMismatch {
                expected: 3,
                found: 2
            })
        ),
        "{e:?}"
    );
    let e = metric_err(
        s.push(Array2::<f32>::ones((2, 3)).view(), &[0, 2])
            .unwrap_err(),
    );
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::LabelOutOfRange {
                row: 1,
                label: 2,
                classes: 2
            })
        ),
        "{e:?}"
    );
    let e = metric_err(
        s.push(array![[0.0f64, f64::INFINITY, 0.0]].view(), &[1])
            .unwrap_err(),
    );
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::NonFinite {
                row: 0,
                column: 1,
                ..
            })
        ),
        "{e:?}"
    );
    assert_eq!(s.total(), 0, "a refused batch leaves the summary unchanged");
    let other = ClassStats::new(3, 3).unwrap();
    let e = metric_err(s.merge(&other).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::StatsMismatch {
                classes: (2, 3),
                dims: (3, 3)
            }
        ),
        "{e:?}"
    );
    assert!(s.class_mean(2).is_none());
}

#[test]
fn global_mean_is_nan_not_a_zero_placeholder_when_undefined() {
    // Class 1 has no samples: its stored mean is the zero placeholder. μ_G (class means) was
    // (μ_0 + 0 + μ_2)/3, silently wrong; it is undefined.
    let x = array![[3.0f32, 6.0], [9.0, 12.0]];
    let mut s = ClassStats::new(3, 2).unwrap();
    s.push(x.view(), &[0, 2]).unwrap();
    assert!(s
        .global_mean(GlobalMean::ClassMeans)
        .iter()
        .all(|v| v.is_nan()));
    assert!(s
        .centered_means(GlobalMean::ClassMeans)
        .iter()
        .all(|v| v.is_nan()));
    // Sample-weighted: defined (empty classes weigh 0).
    assert_eq!(
        s.global_mean(GlobalMean::SampleWeighted).to_vec(),
        vec![6.0, 9.0]
    );
    // No samples at all: sample-weighted μ_G was 0, now NaN.
    let empty = ClassStats::new(2, 2).unwrap();
    assert!(empty
        .global_mean(GlobalMean::SampleWeighted)
        .iter()
        .all(|v| v.is_nan()));
    // Variance of an empty class: NaN (documented), never 0.
    assert!(s.variances()[1].is_nan());
}

#[test]
fn class_stats_of_one_sample_per_class_in_one_dimension() {
    let x = array![[1.5f32], [-2.0]];
    let s = ClassStats::from_data(x.view(), &[1, 0]).unwrap();
    assert_eq!(s.counts(), &[1, 1]);
    assert_eq!(s.means().column(0).to_vec(), vec![-2.0, 1.5]);
    assert_eq!(s.scatter(), &[0.0, 0.0]);
    assert_eq!(s.global_mean(GlobalMean::ClassMeans).to_vec(), vec![-0.25]);
}

// ---------------------------------------------------------------------------------------------
// NcParams::measure

#[test]
fn measure_refuses_shapes_labels_and_values() {
    let p = NcParams::new();
    let (x, y) = d1();
    let e = metric_err(p.measure(x.view(), &y[..3]).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::LengthMismatch { rows: 4, labels: 3 })
        ),
        "{e:?}"
    );
    let e = metric_err(
        p.measure(Array2::<f32>::zeros((0, 2)).view(), &[])
            .unwrap_err(),
    );
    assert!(
        matches!(e, MetricError::Check(CheckError::Empty { rows: 0, .. })),
        "{e:?}"
    );
    let e = metric_err(
        p.measure(Array2::<f32>::zeros((2, 0)).view(), &[0, 1])
            .unwrap_err(),
    );
    assert!(
        matches!(e, MetricError::Check(CheckError::Empty { dim: 0, .. })),
        "{e:?}"
    );
    let e = metric_err(p.measure(x.view(), &[0, 0, 0, 0]).unwrap_err());
    assert!(
        matches!(e, MetricError::TooFewClasses { classes: 1 }),
        "{e:?}"
    );
    let e = metric_err(p.measure(x.view(), &[0, 0, 1, u32::MAX]).unwrap_err());
    assert!(
        matches!(e, MetricError::EmptyClass { class: 2, .. }),
        "{e:?}"
    );
    one_line(&e, &["class 2 has no samples", "4294967296"]);
    let bad = array![[0.0f32], [2.0], [f32::NEG_INFINITY], [14.0]];
    let e = metric_err(p.measure(bad.view(), &y).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::NonFinite {
                row: 2,
                column: 0,
                ..
            })
        ),
        "{e:?}"
    );
    one_line(&e, &["-inf", "row 2", "column 0"]);
    let same = Array2::<f32>::ones((4, 2));
    let e = metric_err(p.measure(same.view(), &y).unwrap_err());
    assert!(matches!(e, MetricError::DegenerateMeans { .. }), "{e:?}");
}

#[test]
fn measure_refuses_bad_tolerances() {
    let (x, y) = d1();
    for t in [f64::NAN, -1.0, 1.0, f64::INFINITY] {
        let e = metric_err(
            NcParams::new()
                .tolerance(t)
                .measure(x.view(), &y)
                .unwrap_err(),
        );
        assert!(matches!(e, MetricError::BadTolerance(_)), "{e:?}");
        one_line(&e, &[&format!("tolerance {t}")]);
    }
}

#[test]
fn measure_refuses_a_bad_reference() {
    let (x, y) = d1();
    let wide = ClassStats::from_data(
        Array2::<f32>::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f32).view(),
        &[0, 1],
    )
    .unwrap();
    let e = metric_err(
        NcParams::new()
            .reference(Reference::Train(&wide))
            .measure(x.view(), &y)
            .unwrap_err(),
    );
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::DimensionMismatch {
                expected: 3,
                found: 1
            })
        ),
        "{e:?}"
    );
    let train = ClassStats::from_data(x.view(), &y).unwrap();
    let e = metric_err(
        NcParams::new()
            .reference(Reference::Train(&train))
            .measure(x.view(), &[0, 0, 1, 2])
            .unwrap_err(),
    );
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::LabelOutOfRange {
                row: 3,
                label: 2,
                classes: 2
            })
        ),
        "{e:?}"
    );
    // A reference with an empty class (built with `new` and one push).
    let mut holey = ClassStats::new(3, 1).unwrap();
    holey.push(x.view(), &y).unwrap();
    let e = metric_err(
        NcParams::new()
            .reference(Reference::Train(&holey))
            .measure(x.view(), &y)
            .unwrap_err(),
    );
    assert!(matches!(e, MetricError::EmptyClass { .. }), "{e:?}");
}

#[test]
fn measure_refuses_bad_classifiers_and_predictions_naming_the_entry() {
    let (x, y) = d1();
    let shape = Classifier {
        w: array![[1.0], [2.0], [3.0]],
        b: array![0.0, 0.0, 0.0],
    };
    let e = metric_err(
        NcParams::new()
            .classifier(&shape)
            .measure(x.view(), &y)
            .unwrap_err(),
    );
    assert!(
        matches!(
            e,
            MetricError::ClassifierShape {
                rows: 3,
                cols: 1,
                bias: 3,
                classes: 2,
                dim: 1
            }
        ),
        "{e:?}"
    );
    // Was "feature value NaN at row 0, column 0 is not finite": neither a feature nor there.
    let nan_w = Classifier {
        w: array![[1.0], [f64::NAN]],
        b: array![0.0, 0.0],
    };
    let e = metric_err(
        NcParams::new()
            .classifier(&nan_w)
            .measure(x.view(), &y)
            .unwrap_err(),
    );
    assert!(
        matches!(e, MetricError::NonFiniteClassifier { .. }),
        "{e:?}"
    );
    one_line(&e, &["classifier W[1, 0] = NaN"]);
    let inf_b = Classifier {
        w: array![[1.0], [1.0]],
        b: array![0.0, f64::INFINITY],
    };
    let e = metric_err(
        NcParams::new()
            .classifier(&inf_b)
            .measure(x.view(), &y)
            .unwrap_err(),
    );
    one_line(&e, &["classifier b[1] = inf"]);
    // Was "4 feature rows but 3 labels": the predictions were short, not the labels.
    let e = metric_err(
        NcParams::new()
            .predictions(&[0, 0, 1])
            .measure(x.view(), &y)
            .unwrap_err(),
    );
    assert!(
        matches!(e, MetricError::PredictionLength { rows: 4, preds: 3 }),
        "{e:?}"
    );
    one_line(&e, &["3 predictions for 4 feature rows"]);
    let e = metric_err(
        NcParams::new()
            .predictions(&[0, 0, 1, 7])
            .measure(x.view(), &y)
            .unwrap_err(),
    );
    assert!(
        matches!(
            e,
            MetricError::PredictionOutOfRange {
                row: 3,
                pred: 7,
                classes: 2
            }
        ),
        "{e:?}"
    );
    // Through Features: a `pred` column of the wrong length.
    let f = Features::new(x.clone(), y.clone()).with_pred(vec![0, 1]);
    let e = metric_err(NcParams::new().measure_features(&f).unwrap_err());
    assert!(
        matches!(e, MetricError::PredictionLength { rows: 4, preds: 2 }),
        "{e:?}"
    );
}

#[test]
fn measure_d1_c2_matches_the_closed_form() {
    // μ_0 = 1, μ_1 = 12, δ = 11; S_0 = 2, S_1 = 8; N = 4; μ_G = 6.5.
    // Σ_W = 10/4, Σ_B = δ²/4, NC1 = Σ_W/Σ_B/C = 2S/(Nδ²); CDNV = (σ²_0 + σ²_1)/(2δ²), σ² = 1, 4.
    let (x, y) = d1();
    let w = Classifier {
        w: array![[-1.0], [1.0]],
        b: array![11.0, -11.0],
    };
    let r = NcParams::new()
        .classifier(&w)
        .measure(x.view(), &y)
        .unwrap();
    assert_eq!((r.n, r.classes, r.dim, r.rank), (4, 2, 1, 1));
    assert_relative_eq!(r.nc1, 20.0 / (4.0 * 121.0), max_relative = 1e-14);
    assert_relative_eq!(r.nc1_trace_ratio, 2.5 / 30.25, max_relative = 1e-14);
    assert_relative_eq!(r.cdnv, 5.0 / 242.0, max_relative = 1e-14);
    // Centred means ±5.5: equal norms, antipodal, a 2-point simplex ETF.
    assert_eq!(r.nc2.equinorm, 0.0);
    assert_eq!(r.nc2.max_angle, 0.0);
    assert!(r.nc2.etf_distance.abs() < 1e-15);
    // One pair of classes: the unbiased std of one cosine is undefined (was reported as 0).
    assert!(r.nc2.equiangularity.is_nan());
    assert!(r.nc2_w.unwrap().equiangularity.is_nan());
    assert!(r.to_json()["nc2_equiangularity"].is_null());
    // W ∝ Ṁᵀ: NC3 = 0. The classifier's boundary is at 11, the nearest mean's at 6.5: the
    // sample at 10 is the one disagreement, NC4 = 1/4.
    assert!(r.nc3.unwrap().abs() < 1e-15);
    assert_eq!(r.nc4, Some(0.25));
    // Explicit and projected NC1 agree.
    let s = ClassStats::from_data(x.view(), &y).unwrap();
    let a = nc1(x.view(), &y, &s, GlobalMean::ClassMeans, 1e-12).unwrap();
    let b = nc1_explicit(x.view(), &y, &s, GlobalMean::ClassMeans, 1e-12).unwrap();
    assert_relative_eq!(a.value, 20.0 / 484.0, max_relative = 1e-14);
    assert_relative_eq!(b.value, 20.0 / 484.0, max_relative = 1e-12);
}

#[test]
fn measure_one_sample_per_class_is_fully_collapsed() {
    // Three classes, one sample each, at the vertices of a triangle: Σ_W = 0, so NC1 = CDNV = 0
    // and every sample is its own class mean (NC4 = 0 with predictions equal to the labels).
    let x = array![[1.0f32, 0.0], [-0.5, 0.8660254], [-0.5, -0.8660254]];
    let r = NcParams::new()
        .predictions(&[0, 1, 2])
        .measure(x.view(), &[0, 1, 2])
        .unwrap();
    assert_eq!(
        (r.rank, r.nc1, r.cdnv, r.nc1_trace_ratio, r.nc4),
        (2, 0.0, 0.0, 0.0, Some(0.0))
    );
    assert!(r.nc2.equiangularity < 1e-6 && r.nc2.equinorm < 1e-6);
}

// ---------------------------------------------------------------------------------------------
// nc1, nc1_explicit, nc2_of_rows, nc3_of

#[test]
fn nc1_functions_check_their_tolerance() {
    let (x, y) = d1();
    let s = ClassStats::from_data(x.view(), &y).unwrap();
    for t in [f64::NAN, -0.5, 2.0] {
        // NaN was "all class means coincide (… tolerance NaN)"; −0.5 and 2 were accepted.
        let e = metric_err(nc1(x.view(), &y, &s, GlobalMean::ClassMeans, t).unwrap_err());
        assert!(matches!(e, MetricError::BadTolerance(_)), "{t}: {e:?}");
        one_line(&e, &[&format!("tolerance {t}")]);
        let e = metric_err(nc1_explicit(x.view(), &y, &s, GlobalMean::ClassMeans, t).unwrap_err());
        assert!(matches!(e, MetricError::BadTolerance(_)), "{t}: {e:?}");
    }
}

#[test]
fn nc1_functions_refuse_bad_data() {
    let (x, y) = d1();
    let s = ClassStats::from_data(x.view(), &y).unwrap();
    let g = GlobalMean::ClassMeans;
    let e = metric_err(nc1(x.view(), &y[..2], &s, g, 1e-12).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::LengthMismatch { rows: 4, labels: 2 })
        ),
        "{e:?}"
    );
    let e = metric_err(nc1(Array2::<f32>::zeros((0, 1)).view(), &[], &s, g, 1e-12).unwrap_err());
    assert!(
        matches!(e, MetricError::Check(CheckError::Empty { .. })),
        "{e:?}"
    );
    let e = metric_err(
        nc1_explicit(Array2::<f32>::zeros((0, 1)).view(), &[], &s, g, 1e-12).unwrap_err(),
    );
    assert!(
        matches!(e, MetricError::Check(CheckError::Empty { .. })),
        "{e:?}"
    );
    let wide = Array2::<f32>::zeros((4, 2));
    let e = metric_err(nc1_explicit(wide.view(), &y, &s, g, 1e-12).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::DimensionMismatch {
                expected: 1,
                found: 2
            })
        ),
        "{e:?}"
    );
    let e = metric_err(nc1(x.view(), &[0, 1, 2, 0], &s, g, 1e-12).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::LabelOutOfRange {
                row: 2,
                label: 2,
                ..
            })
        ),
        "{e:?}"
    );
    let nan = array![[0.0f32], [f32::NAN], [10.0], [14.0]];
    let e = metric_err(nc1(nan.view(), &y, &s, g, 1e-12).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::NonFinite {
                row: 1,
                column: 0,
                ..
            })
        ),
        "{e:?}"
    );
    let e = metric_err(nc1_explicit(nan.view(), &y, &s, g, 1e-12).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::NonFinite {
                row: 1,
                column: 0,
                ..
            })
        ),
        "{e:?}"
    );
}

/// `nc1_explicit` holds a d × d covariance: at d = 300,000 that is 720 GB, refused as an error
/// before anything is allocated (on a kernel that does not overcommit without limit, Linux's
/// default heuristic mode), while `nc1` measures the same rows in O(C·d) memory.
#[test]
fn nc1_explicit_refuses_an_unallocatable_covariance() {
    let d = 300_000;
    let mut x = Array2::<f32>::zeros((4, d));
    x[[2, 0]] = 10.0;
    x[[3, 0]] = 14.0;
    x[[1, 1]] = 1.0;
    let y = [0u32, 0, 1, 1];
    let s = ClassStats::from_data(x.view(), &y).unwrap();
    let g = GlobalMean::ClassMeans;
    let e = metric_err(nc1_explicit(x.view(), &y, &s, g, 1e-12).unwrap_err());
    assert!(
        matches!(e, MetricError::TooLargeCovariance { dim: 300_000 }),
        "{e:?}"
    );
    one_line(&e, &["300000 × 300000"]);
    assert!(nc1(x.view(), &y, &s, g, 1e-12).unwrap().value.is_finite());
}

#[test]
fn nc2_of_rows_refuses_non_finite_rows_and_reports_c2_equiangularity_as_nan() {
    // Was Ok with NaN metrics.
    let e = metric_err(
        nc2_of_rows(array![[1.0, 0.0], [0.0, f64::NAN]].view(), "classifier row").unwrap_err(),
    );
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::NonFiniteEntry {
                row: 1,
                column: 1,
                ..
            })
        ),
        "{e:?}"
    );
    one_line(&e, &["classifier row [1, 1] = NaN"]);
    let e = metric_err(nc2_of_rows(array![[1.0, 0.0]].view(), "row").unwrap_err());
    assert!(
        matches!(e, MetricError::TooFewClasses { classes: 1 }),
        "{e:?}"
    );
    let e = metric_err(nc2_of_rows(array![[1.0, 0.0], [0.0, 0.0]].view(), "row").unwrap_err());
    one_line(&e, &["row 1 has zero norm"]);
    // C = 2, rows at 90°: norms 1 and 2 (mean 1.5, unbiased std 1/√2); one cosine 0:
    // equiangularity undefined, max-angle |0 + 1| = 1; G = diag(1, 4), ‖G‖_F = √17,
    // ETF = [[½, −½], [−½, ½]].
    let r = nc2_of_rows(array![[1.0, 0.0], [0.0, 2.0]].view(), "row").unwrap();
    assert_relative_eq!(r.equinorm, (0.5f64).sqrt() / 1.5, max_relative = 1e-14);
    assert!(r.equiangularity.is_nan());
    assert_relative_eq!(r.max_angle, 1.0, max_relative = 1e-14);
    let s17 = 17f64.sqrt();
    let want = ((1.0 / s17 - 0.5).powi(2) + (4.0 / s17 - 0.5).powi(2) + 2.0 * 0.25).sqrt();
    assert_relative_eq!(r.etf_distance, want, max_relative = 1e-14);
}

#[test]
fn nc3_of_names_the_shapes_and_refuses_non_finite_entries() {
    let m = array![[1.0, 0.0], [-1.0, 0.0]];
    // Was "feature dimension 6 does not match the expected 4" (element counts).
    let e =
        metric_err(nc3_of(array![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]].view(), m.view()).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::StatsMismatch {
                classes: (2, 2),
                dims: (3, 2)
            }
        ),
        "{e:?}"
    );
    one_line(&e, &["dimensions (3, 2)"]);
    let e =
        metric_err(nc3_of(array![[f64::INFINITY, 0.0], [0.0, 1.0]].view(), m.view()).unwrap_err());
    assert!(
        matches!(
            e,
            MetricError::Check(CheckError::NonFiniteEntry {
                row: 0,
                column: 0,
                ..
            })
        ),
        "{e:?}"
    );
    one_line(&e, &["classifier W [0, 0] = inf"]);
    let e = metric_err(nc3_of(m.view(), Array2::<f64>::zeros((2, 2)).view()).unwrap_err());
    assert!(matches!(e, MetricError::ZeroNorm { .. }), "{e:?}");
    // W orthogonal to Ṁ (d = 2, C = 2): ‖A − B‖² = 2 − 2⟨A, B⟩ = 2.
    let r = nc3_of(array![[0.0, 1.0], [0.0, -1.0]].view(), m.view()).unwrap();
    assert_relative_eq!(r, 2.0, max_relative = 1e-14);
}

// ---------------------------------------------------------------------------------------------
// Linear probes

#[test]
fn probe_fit_refuses_bad_data() {
    let p = LinearProbe::least_squares();
    let (x, y) = d1();
    let e = p.fit_array(x.view(), &y[..3]).unwrap_err();
    assert!(
        matches!(
            e,
            ProbeError::Check(CheckError::LengthMismatch { rows: 4, labels: 3 })
        ),
        "{e:?}"
    );
    let e = p
        .fit_array(Array2::<f32>::zeros((0, 2)).view(), &[])
        .unwrap_err();
    assert!(
        matches!(e, ProbeError::Check(CheckError::Empty { rows: 0, dim: 2 })),
        "{e:?}"
    );
    let e = p
        .fit_array(Array2::<f32>::zeros((2, 0)).view(), &[0, 1])
        .unwrap_err();
    assert!(
        matches!(e, ProbeError::Check(CheckError::Empty { rows: 2, dim: 0 })),
        "{e:?}"
    );
    let e = p.fit_array(x.view(), &[7, 7, 7, 7]).unwrap_err();
    assert!(matches!(e, ProbeError::OneClass { label: 7 }), "{e:?}");
    one_line(&e, &["label 7"]);
    let bad = array![[0.0f32], [2.0], [f32::NAN], [14.0]];
    for p in [LinearProbe::least_squares(), LinearProbe::logistic()] {
        let e = p.fit_array(bad.view(), &y).unwrap_err();
        assert!(
            matches!(
                e,
                ProbeError::Check(CheckError::NonFinite {
                    row: 2,
                    column: 0,
                    ..
                })
            ),
            "{e:?}"
        );
        one_line(&e, &["NaN", "row 2", "column 0"]);
    }
    // Huge labels are just class names for a probe: no allocation by label value.
    let f = p.fit_array(x.view(), &[0, 0, u32::MAX, u32::MAX]).unwrap();
    assert_eq!(f.classes(), &[0, u32::MAX]);
}

#[test]
fn probe_fit_refuses_bad_parameters() {
    let (x, y) = d1();
    for lambda in [-1.0, f64::NAN, f64::INFINITY] {
        let e = LinearProbe::least_squares()
            .penalty(lambda)
            .fit_array(x.view(), &y)
            .unwrap_err();
        assert!(matches!(e, ProbeError::InvalidPenalty { .. }), "{e:?}");
        one_line(&e, &[&format!("penalty {lambda}")]);
        let e = LinearProbe::logistic()
            .penalty_grid(&[1e-3, lambda])
            .fit_array(x.view(), &y)
            .unwrap_err();
        assert!(matches!(e, ProbeError::InvalidPenalty { .. }), "{e:?}");
    }
    let e = LinearProbe::least_squares()
        .penalty_grid(&[])
        .fit_array(x.view(), &y)
        .unwrap_err();
    assert!(matches!(e, ProbeError::EmptyGrid), "{e:?}");
    for (probe, name) in [
        (
            LinearProbe::least_squares().holdout_fraction(1.0),
            "holdout_fraction",
        ),
        (
            LinearProbe::least_squares().holdout_fraction(f64::NAN),
            "holdout_fraction",
        ),
        (
            LinearProbe::logistic().gradient_tolerance(-1.0),
            "gradient_tolerance",
        ),
        (LinearProbe::logistic().max_iterations(0), "max_iterations"),
        (
            LinearProbe::least_squares().singular_tolerance(f64::NAN),
            "singular_tolerance",
        ),
    ] {
        let e = probe.fit_array(x.view(), &y).unwrap_err();
        assert!(matches!(e, ProbeError::InvalidParameter { .. }), "{e:?}");
        one_line(&e, &[name]);
    }
    // One sample per class leaves nothing to hold out for penalty selection.
    let e = LinearProbe::least_squares()
        .ridge_grid(&[1e-3, 1e-1])
        .fit_array(array![[0.0f32], [1.0]].view(), &[0, 1])
        .unwrap_err();
    assert!(matches!(e, ProbeError::NoHoldout { rows: 2, .. }), "{e:?}");
    // λ = 0 on a constant column: a singular system, named.
    let e = LinearProbe::least_squares()
        .penalty(0.0)
        .standardize(false)
        .fit_array(
            array![[1.0f32, 0.0], [1.0, 1.0], [1.0, 2.0]].view(),
            &[0, 1, 1],
        )
        .unwrap_err();
    assert!(matches!(e, ProbeError::Singular { .. }), "{e:?}");
}

#[test]
fn fitted_probe_refuses_bad_data() {
    let (x, y) = d1();
    let f = LinearProbe::least_squares()
        .fit_array(x.view(), &y)
        .unwrap();
    let e = f.predict(Array2::<f32>::zeros((2, 3)).view()).unwrap_err();
    assert!(
        matches!(
            e,
            ProbeError::DimensionMismatch {
                expected: 1,
                found: 3
            }
        ),
        "{e:?}"
    );
    let e = f
        .decision_function(array![[f32::INFINITY]].view())
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProbeError::Check(CheckError::NonFinite {
                row: 0,
                column: 0,
                ..
            })
        ),
        "{e:?}"
    );
    let e = f
        .accuracy(Array2::<f32>::zeros((0, 1)).view(), &[])
        .unwrap_err();
    assert!(
        matches!(e, ProbeError::Check(CheckError::Empty { rows: 0, .. })),
        "{e:?}"
    );
    let e = f.per_class_accuracy(x.view(), &y[..1]).unwrap_err();
    assert!(
        matches!(
            e,
            ProbeError::Check(CheckError::LengthMismatch { rows: 4, labels: 1 })
        ),
        "{e:?}"
    );
    let train = Features::new(x.clone(), y.clone());
    let empty = Features::new(Array2::zeros((0, 1)), vec![]);
    let e = f.report(&train, &empty).unwrap_err();
    assert!(
        matches!(e, ProbeError::Check(CheckError::Empty { rows: 0, .. })),
        "{e:?}"
    );
    let e = LinearProbe::least_squares()
        .label_column(LabelColumn::Coarse)
        .fit(&train)
        .unwrap_err();
    assert!(matches!(e, ProbeError::MissingLabels { .. }), "{e:?}");
    one_line(&e, &["coarse"]);
    // Coarse labels of the wrong length are named as a length mismatch.
    let short = train.clone().with_coarse(vec![0, 1]);
    let e = LinearProbe::least_squares()
        .label_column(LabelColumn::Coarse)
        .fit(&short)
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProbeError::Check(CheckError::LengthMismatch { rows: 4, labels: 2 })
        ),
        "{e:?}"
    );
    // An empty matrix is predicted as nothing, not an error and not a panic.
    assert!(f
        .predict(Array2::<f32>::zeros((0, 1)).view())
        .unwrap()
        .is_empty());
}

#[test]
fn least_squares_probe_with_one_sample_per_class_in_one_dimension_matches_the_closed_form() {
    // x = {0, 2}: m = 1, s = 1, z = {−1, 1}. ZᵀZ + nλ = 2 + 2λ; ZᵀY = [−1, 1];
    // W = [−1, 1]/(2 + 2λ); b = class frequencies [½, ½].
    let x = array![[0.0f32], [2.0]];
    for lambda in [0.0, 0.1, 3.0] {
        let f = LinearProbe::least_squares()
            .ridge(lambda)
            .fit_array(x.view(), &[5, 9])
            .unwrap();
        assert_eq!(f.classes(), &[5, 9]);
        let w = f.coefficients();
        assert_relative_eq!(w[[0, 0]], -1.0 / (2.0 + 2.0 * lambda), max_relative = 1e-14);
        assert_relative_eq!(w[[0, 1]], 1.0 / (2.0 + 2.0 * lambda), max_relative = 1e-14);
        assert_eq!(f.intercept().to_vec(), vec![0.5, 0.5]);
        assert_eq!(f.mean().to_vec(), vec![1.0]);
        assert_eq!(f.scale().to_vec(), vec![1.0]);
        assert_eq!(f.predict(x.view()).unwrap(), vec![5, 9]);
        assert_eq!(f.accuracy(x.view(), &[5, 9]).unwrap(), 1.0);
    }
    // The dual form (n = 2 < d = 3), one sample per class: the third column is constant
    // (dropped), the second is the first doubled (scale 2). Z = [[−1, −1, 0], [1, 1, 0]];
    // ZZᵀ + nλI = [[3, −2], [−2, 3]] (λ = ½); α = (ZZᵀ + nλI)⁻¹ Y = [[3, 2], [2, 3]]/5;
    // W = Zᵀα: W[:, 0] = [−0.2, −0.2, 0], W[:, 1] = [0.2, 0.2, 0].
    let x3 = array![[0.0f32, 0.0, 4.0], [2.0, 4.0, 4.0]];
    let f = LinearProbe::least_squares()
        .ridge(0.5)
        .fit_array(x3.view(), &[0, 1])
        .unwrap();
    let w = f.coefficients();
    assert_relative_eq!(w[[0, 0]], -0.2, max_relative = 1e-12);
    assert_relative_eq!(w[[1, 0]], -0.2, max_relative = 1e-12);
    assert_eq!(w[[2, 0]], 0.0);
    assert_relative_eq!(w[[0, 1]], 0.2, max_relative = 1e-12);
}

// ---------------------------------------------------------------------------------------------
// Intervals, summaries, datasets, findings helpers

#[test]
fn intervals_of_too_few_values_or_a_bad_level_are_nan_not_zero_width() {
    for i in [
        t_interval(&[], 0.95),
        t_interval(&[2.0], 0.95),
        t_interval(&[1.0, f64::NAN], 0.95),
        t_interval(&[1.0, 2.0], f64::NAN),
        t_interval(&[1.0, 2.0], 1.0),
        bootstrap_interval(&[1.0], 0.95, 100, 0),
        bootstrap_interval(&[1.0, 2.0], 0.95, 0, 0),
        bootstrap_interval(&[1.0, 2.0], -0.5, 100, 0),
    ] {
        assert!(i.lo.is_nan() && i.hi.is_nan(), "{i:?}");
        assert!(!i.excludes_below(-1e300));
    }
    assert!(t_interval(&[], 0.95).mean.is_nan());
    for (p, df) in [
        (0.0, 3.0),
        (1.0, 3.0),
        (0.5, 0.0),
        (f64::NAN, 2.0),
        (0.9, f64::INFINITY),
    ] {
        assert!(student_t_quantile(p, df).is_nan(), "{p} {df}");
    }
    // Two values, level 0.95: t_{1, 0.975} = tan(0.475π), s/√n = ½.
    let i = t_interval(&[1.0, 2.0, f64::INFINITY], 0.95);
    assert_eq!(i.n, 2);
    let t = (0.475 * std::f64::consts::PI).tan();
    assert_relative_eq!(i.hi, 1.5 + 0.5 * t, max_relative = 1e-9);
}

#[test]
fn summaries_of_single_seeds_have_nan_bounds() {
    let values: Vec<SeedValue> = vec![
        (0, 10, "train".into(), 1.0),
        (1, 10, "train".into(), f64::NAN),
        (0, 20, "train".into(), 2.0),
        (1, 20, "train".into(), 4.0),
    ];
    let rows = summarise(&values, 0.95, SummaryMethod::StudentT);
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].interval.mean, rows[0].interval.n), (1.0, 1));
    assert!(rows[0].interval.lo.is_nan());
    assert_eq!(rows[1].interval.mean, 3.0);
    let df = summary_frame(&rows).unwrap();
    assert_eq!(df.height(), 2);
    assert_eq!(summary_frame(&[]).unwrap().height(), 0);
    assert!(summarise(&[], 0.95, SummaryMethod::StudentT).is_empty());
}

#[test]
fn balanced_subset_with_a_huge_label_is_an_error_not_an_abort() {
    // Was: a vector of 4e9 + 1 class lists (96 GB), an abort.
    let e = balanced_subset(&[0, 0, 4_000_000_000], 1, 0).unwrap_err();
    assert!(
        matches!(
            e,
            DatasetError::NotEnoughSamples {
                class: 1,
                available: 0,
                requested: 1
            }
        ),
        "{e:?}"
    );
    one_line(&e, &["class 1 has 0 samples"]);
    // The same first short class as the per-class count names.
    let e = balanced_subset(&[0, 0, 1, 2, 2, 3, 3, 3], 2, 0).unwrap_err();
    assert!(
        matches!(
            e,
            DatasetError::NotEnoughSamples {
                class: 1,
                available: 1,
                requested: 2
            }
        ),
        "{e:?}"
    );
    let e = balanced_subset(&[0, 1, 2, 2], 1_000, 0).unwrap_err();
    assert!(
        matches!(
            e,
            DatasetError::NotEnoughSamples {
                class: 0,
                available: 1,
                ..
            }
        ),
        "{e:?}"
    );
    let e = balanced_subset(&[1, 1], usize::MAX, 0).unwrap_err();
    assert!(
        matches!(
            e,
            DatasetError::NotEnoughSamples {
                class: 0,
                available: 0,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(balanced_subset(&[0, u32::MAX], 0, 0).unwrap().is_empty());
    assert!(balanced_subset(&[], 3, 0).unwrap().is_empty());
    let idx = balanced_subset(&[1, 0, 1, 0], 2, 5).unwrap();
    assert_eq!(idx, vec![0, 1, 2, 3]);
    // class_counts ignores labels beyond its range and never allocates by label value.
    assert_eq!(class_counts(&[0, 1, u32::MAX, 1], 2), vec![1, 2]);
}

#[test]
fn spearman_of_nan_values_is_nan() {
    // Was: NaN ranked above every number, giving a finite correlation (here 1).
    assert!(spearman(&[1.0, 2.0, f64::NAN], &[1.0, 2.0, 3.0]).is_nan());
    assert!(spearman(&[1.0, 2.0], &[1.0]).is_nan());
    assert!(spearman(&[1.0], &[1.0]).is_nan());
    assert!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_nan());
    // Ties: ranks (1.5, 1.5, 3) against (1, 2, 3): r = (−0.75·… ) = √3/2.
    assert_relative_eq!(
        spearman(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]),
        3f64.sqrt() / 2.0,
        max_relative = 1e-14
    );
    assert_eq!(
        spearman(&[f64::NEG_INFINITY, 0.0, f64::INFINITY], &[3.0, 2.0, 1.0]),
        -1.0
    );
}

// ---------------------------------------------------------------------------------------------
// Random small inputs: no panic, and every Ok result is finite or a documented NaN.

mod random_inputs {
    use super::*;
    use proptest::prelude::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn finite_nc2(n: &Nc2, classes: usize) -> bool {
        n.equinorm.is_finite()
            && n.max_angle.is_finite()
            && n.etf_distance.is_finite()
            && (n.equiangularity.is_finite() || (classes == 2 && n.equiangularity.is_nan()))
    }

    fn check_report(r: &NcReport) -> Result<(), String> {
        let ok = r.nc1.is_finite()
            && r.nc1 >= 0.0
            && r.nc1_trace_ratio.is_finite()
            && r.cdnv.is_finite()
            && finite_nc2(&r.nc2, r.classes)
            && r.nc2_w.as_ref().is_none_or(|w| finite_nc2(w, r.classes))
            && r.nc3
                .is_none_or(|v| v.is_finite() && (0.0..=4.0 + 1e-12).contains(&v))
            && r.nc4.is_none_or(|v| (0.0..=1.0).contains(&v))
            && r.rank >= 1
            && r.rank < r.classes;
        if ok {
            Ok(())
        } else {
            Err(format!("non-finite or out-of-range report: {r:?}"))
        }
    }

    /// Every entry point on one input; `Err(message)` if something panicked or an Ok result is
    /// not finite (or a documented NaN).
    fn exercise(
        x: &Array2<f32>,
        labels: &[u32],
        classifier: &Classifier,
        preds: &[u32],
    ) -> Result<(), String> {
        let x64 = x.mapv(f64::from);
        let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let stats = ClassStats::from_data(x.view(), labels);
            if let Ok(s) = &stats {
                if s.means().iter().chain(s.scatter()).any(|v| !v.is_finite()) {
                    return Err(format!("non-finite statistics {s:?}"));
                }
                let _ = s.global_mean(GlobalMean::SampleWeighted);
                let _ = s.centered_means(GlobalMean::ClassMeans);
            }
            let _ = ClassStats::from_data_with_classes(x.view(), labels, 3);
            let mut fresh = ClassStats::new(3, x.ncols().max(1)).map_err(|e| e.to_string())?;
            let _ = fresh.push(x.view(), labels);
            let params = [
                NcParams::new(),
                NcParams::new()
                    .global_mean(GlobalMean::SampleWeighted)
                    .tolerance(0.0),
                NcParams::new().classifier(classifier),
                NcParams::new().predictions(preds),
            ];
            for p in params {
                if let Ok(r) = p.measure(x.view(), labels) {
                    check_report(&r)?;
                }
                if let Ok(r) = p.measure(x64.view(), labels) {
                    check_report(&r)?;
                }
            }
            if let Ok(s) = &stats {
                if let Ok(r) = NcParams::new()
                    .reference(Reference::Train(s))
                    .measure(x.view(), labels)
                {
                    check_report(&r)?;
                }
                for g in [GlobalMean::ClassMeans, GlobalMean::SampleWeighted] {
                    for f in [nc1::<f32>, nc1_explicit::<f32>] {
                        if let Ok(v) = f(x.view(), labels, s, g, 1e-12) {
                            if !(v.value.is_finite() && v.value >= 0.0) {
                                return Err(format!("nc1 {v:?}"));
                            }
                        }
                    }
                }
                let centered = s.centered_means(GlobalMean::ClassMeans);
                if let Ok(v) = nc2_of_rows(centered.view(), "centred class mean") {
                    if !finite_nc2(&v, s.classes()) {
                        return Err(format!("nc2 {v:?}"));
                    }
                }
                if let Ok(v) = nc3_of(classifier.w.view(), centered.view()) {
                    if !v.is_finite() {
                        return Err(format!("nc3 {v}"));
                    }
                }
            }
            let _ = nc2_of_rows(x64.view(), "row");
            let probes = [
                LinearProbe::least_squares(),
                LinearProbe::least_squares().ridge(0.0).standardize(false),
                LinearProbe::least_squares().ridge_grid(&[0.0, 1e-2, 1.0]),
                LinearProbe::logistic().max_iterations(20),
            ];
            for p in probes {
                if let Ok(f) = p.fit_array(x.view(), labels) {
                    if f.coefficients()
                        .iter()
                        .chain(f.intercept())
                        .any(|v| !v.is_finite())
                    {
                        return Err(format!("non-finite probe {f:?}"));
                    }
                    let pred = f.predict(x.view()).map_err(|e| e.to_string())?;
                    if pred.iter().any(|p| !f.classes().contains(p)) {
                        return Err("prediction outside the classes".into());
                    }
                    let acc = f.accuracy(x.view(), labels).map_err(|e| e.to_string())?;
                    if !(0.0..=1.0).contains(&acc) {
                        return Err(format!("accuracy {acc}"));
                    }
                }
            }
            let _ = balanced_subset(labels, 1, 0);
            Ok(())
        }));
        match outcome {
            Ok(r) => r,
            Err(p) => Err(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        }
    }

    fn pick<T: Clone>(options: &[T], k: usize) -> T {
        options[k % options.len()].clone()
    }

    /// Every figure on one random tidy table; `Err(message)` if something panicked.
    fn draw_all(
        rows: &[(usize, usize, usize, usize, usize)],
        knobs: &[usize],
    ) -> Result<(), String> {
        use polars::prelude::*;
        let epochs = [0u32, 1, 5, 100, u32::MAX];
        let values = [f64::NAN, -1.0, 0.0, 1e-300, 1e300, 0.5, f64::INFINITY, 2.0];
        let df = df!(
            "epoch" => rows.iter().map(|r| pick(&epochs, r.0)).collect::<Vec<u32>>(),
            "split" => rows.iter().map(|r| pick(&["train", "test"], r.1)).collect::<Vec<&str>>(),
            "layer" => rows.iter().map(|r| pick(&["a", "b", "c"], r.2)).collect::<Vec<&str>>(),
            "metric" => rows.iter().map(|r| pick(&["nc1", "nc4", "accuracy"], r.3)).collect::<Vec<&str>>(),
            "value" => rows.iter().map(|r| pick(&values, r.4)).collect::<Vec<f64>>(),
        )
        .map_err(|e| e.to_string())?;
        let k = |i: usize| knobs[i % knobs.len()];
        let size = (
            pick(&[0u32, 1, 300, 800, u32::MAX], k(0)),
            pick(&[0u32, 200, 600, u32::MAX], k(1)),
        );
        let metric = pick(&["nc1", "nc4", "accuracy", "nope"], k(2));
        let scale = pick(&[Scale::Log, Scale::Linear, Scale::Auto], k(3));
        let axis = pick(
            &[EpochAxis::Auto, EpochAxis::Linear, EpochAxis::LogPlusOne],
            k(4),
        );
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = EpochPlot::new(&df)
                .metric(metric)
                .scale(scale)
                .x_axis(axis)
                .marker(pick(&epochs, k(5)), "m")
                .reference_line(pick(&values, k(6)), "r")
                .size(size.0, size.1)
                .draw();
            let _ = EpochPlot::new(&df).metric(metric).scale(scale).draw();
            let _ = LayerPlot::new(&df)
                .metric(metric)
                .split(pick(&["train", "test"], k(7)))
                .max_epochs(k(8) % 4)
                .scale(scale)
                .draw();
            let _ = HeatMap::new(&df)
                .metric(metric)
                .scale(scale)
                .annotate(k(9) % 2 == 0)
                .draw();
            let _ = HeatMap::new(&df).metric(metric).split("train").draw();
            let _ = SmallMultiples::nc_overview(&df)
                .columns(pick(&[0usize, 1, 2, usize::MAX], k(10)))
                .draw();
            let _ = Nc1AccuracyPlot::new(&df, &df).scale(scale).draw();
            let _ = epoch_reaching(
                &df,
                metric,
                "train",
                pick(&values, k(11)),
                pick(&values, k(12)),
            );
            if let Ok(f) = EpochPlot::new(&df).metric(metric).draw() {
                let _ = f.to_rgb(pick(&[0.0, f64::NAN, 0.01, 1.0, 1e9], k(12)));
            }
        }));
        outcome.map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    }

    /// A value: mostly small integers (so that ties, coinciding means and constant columns are
    /// frequent), sometimes large, tiny, NaN or infinite.
    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            40 => (-3i8..=3).prop_map(f32::from),
            20 => -10.0f32..10.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            2 => prop_oneof![Just(3e38f32), Just(-1e30f32), Just(1e-40f32)],
        ]
    }

    fn label() -> impl Strategy<Value = u32> {
        prop_oneof![30 => 0u32..3, 4 => Just(3u32), 1 => Just(u32::MAX), 1 => 4u32..1_000_000]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("NC_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_small_arrays_never_panic(
            n in 0usize..12,
            d in 0usize..4,
            values in proptest::collection::vec(value(), 47),
            labels in proptest::collection::vec(label(), 12),
            cut in 0usize..16,
            w in proptest::collection::vec(value(), 12),
            c in 1usize..4,
            preds in proptest::collection::vec(0u32..4, 0..11),
        ) {
            let x = Array2::from_shape_fn((n, d), |(i, j)| values[(i * d + j) % values.len()]);
            let wd = d.max(1);
            let classifier = Classifier {
                w: Array2::from_shape_fn((c, wd), |(i, j)| f64::from(w[(i * wd + j) % w.len()])),
                b: (0..c).map(|k| f64::from(w[(k + 5) % w.len()])).collect(),
            };
            // Labels: one per row (the common case), or of another length.
            let labels = labels[..if cut < 12 { n } else { cut - 4 }].to_vec();
            let preds = if preds.len() > n { preds[..n].to_vec() } else { preds };
            if let Err(m) = exercise(&x, &labels, &classifier, &preds) {
                prop_assert!(false, "{m}\nx = {x:?}\nlabels = {labels:?}\nclassifier = {classifier:?}\npreds = {preds:?}");
            }
        }

        #[test]
        fn random_tidy_tables_never_make_a_figure_panic(
            rows in proptest::collection::vec((0usize..5, 0usize..2, 0usize..3, 0usize..3, 0usize..8), 0..9),
            knobs in proptest::collection::vec(0usize..64, 13),
        ) {
            if let Err(m) = draw_all(&rows, &knobs) {
                prop_assert!(false, "panicked: {m}\nrows = {rows:?}\nknobs = {knobs:?}");
            }
        }
    }
}
