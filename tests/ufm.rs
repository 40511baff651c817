//! The unconstrained features model (`neural_collapse::ufm`) checked against theory.
//!
//! Sizes are small (C ≤ 4, d ≤ 16, N ≤ 54) so that the whole file runs in a few seconds in a
//! debug build. Every tolerance is stated next to its assertion with the reason for it.

use neural_collapse::prelude::*;
use neural_collapse::ufm::UfmLoss;

/// The balanced MSE set-up of most tests: C = 4, d = 8, n = 5, λ_H = λ_W = 5e-3 (γ = √(nλλ) =
/// 0.0112, far below the threshold 1/(C√n) = 0.112), learning rate 1.
fn balanced() -> UfmParams {
    UfmParams::new(4, 8)
        .per_class(5)
        .lambda_h(5e-3)
        .lambda_w(5e-3)
        .learning_rate(1.0)
        .seed(3)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn balanced_mse_collapses_nc1_nc2_nc3_to_zero() {
    let run = balanced().steps(3000).record_every(500).run().unwrap();
    assert!(run.skipped.is_empty(), "{:?}", run.skipped);
    let first = &run.reports[0];
    let last = run.last().unwrap();
    assert_eq!(
        (last.epoch, last.n, last.classes, last.dim),
        (Some(3000), 20, 4, 8)
    );
    // At the random start nothing is collapsed (so the bounds below are not met trivially).
    assert!(first.nc1 > 0.1, "initial NC1 {}", first.nc1);
    assert!(first.nc2.etf_distance > 0.1 && first.nc3.unwrap() > 0.1);
    // Gradient descent converges linearly; at step 3000 the residual distances from the simplex
    // ETF are ~1e-13 (measured 9e-11 at step 2000). NC1 is quadratic in the within-class
    // spread, so it is ~1e-25. Bounds a few orders above the measured values:
    assert!(last.nc1 < 1e-16, "NC1 {}", last.nc1);
    assert!(last.nc2.etf_distance < 1e-8, "NC2 means {:?}", last.nc2);
    assert!(last.nc2.equinorm < 1e-8 && last.nc2.max_angle < 1e-8);
    let w = last.nc2_w.unwrap();
    assert!(
        w.etf_distance < 1e-8 && w.equinorm < 1e-8 && w.max_angle < 1e-8,
        "NC2 W {w:?}"
    );
    assert!(last.nc3.unwrap() < 1e-12, "NC3 {:?}", last.nc3);
    assert_eq!(last.nc4, Some(0.0));
    // NC1 decreases along the recorded trajectory.
    // NC1 decreases along the recorded trajectory until it reaches the rounding floor (~1e-32:
    // the within-class spread is then ~1e-16 of the means).
    let nc1: Vec<f64> = run.reports.iter().map(|r| r.nc1).collect();
    assert!(
        nc1.windows(2).all(|p| p[1] < p[0] || p[0] < 1e-28),
        "{nc1:?}"
    );
}

/// Every ‖w_k‖, ‖μ_k‖, b_k, pairwise cosine and the objective agree with the closed form of the
/// module docs to a relative 1e-9. Why 1e-9: after 5000 steps gradient descent has converged to
/// ~1e-15 in these set-ups (measured), so 1e-9 leaves six orders of margin for rounding and the
/// seed, while any error in the formula shows: the one found while writing it (weight decay
/// applied after the gradient step, i.e. λ replaced by λ/(1 − ηλ)) moved the norms by 1.2e-4.
fn assert_matches_closed_form(p: UfmParams, steps: u32, expect_cos: f64) {
    let cf = p.check().unwrap().closed_form().unwrap();
    assert!((cf.cosine - expect_cos).abs() < 1e-12, "{cf:?}");
    let run = p.steps(steps).record_every(steps).run().unwrap();
    let tol = 1e-9;
    for (k, v) in run.w_row_norms().into_iter().enumerate() {
        assert!(
            rel(v, cf.w_row_norm) < tol,
            "‖w_{k}‖ {v} vs {}",
            cf.w_row_norm
        );
    }
    for (k, v) in run.class_mean_norms().into_iter().enumerate() {
        assert!(
            rel(v, cf.mean_norm) < tol,
            "‖μ_{k}‖ {v} vs {}",
            cf.mean_norm
        );
    }
    for (k, &v) in run.b.iter().enumerate() {
        assert!((v - cf.bias).abs() < tol, "b_{k} {v} vs {}", cf.bias);
    }
    let cos = run.w_cosines();
    for k in 0..cos.nrows() {
        for l in 0..k {
            assert!(
                (cos[[k, l]] - cf.cosine).abs() < tol,
                "cos(w_{k}, w_{l}) {}",
                cos[[k, l]]
            );
        }
    }
    assert!(
        rel(run.final_objective(), cf.objective) < tol,
        "objective {} vs closed form {}",
        run.final_objective(),
        cf.objective
    );
    // The centred means (what NC2 measures) have the norm of the docs too.
    let stats = run.class_stats().unwrap();
    let centred = stats.centered_means(GlobalMean::ClassMeans);
    for row in centred.rows() {
        assert!(rel(row.dot(&row).sqrt(), cf.centred_mean_norm) < tol);
    }
}

#[test]
fn norms_match_closed_form_with_free_bias() {
    // λ_b = 0: β = 0, simplex ETF, cosine −1/(C−1).
    assert_matches_closed_form(balanced(), 5000, -1.0 / 3.0);
}

#[test]
fn norms_match_closed_form_without_bias() {
    // No bias: β = a, W's rows and the means are orthogonal (cosine 0).
    assert_matches_closed_form(balanced().bias(false), 5000, 0.0);
}

#[test]
fn norms_match_closed_form_with_penalised_bias() {
    // λ_b = 0.2 > Cγ/(1 − Cγ) = 0.047: β = 1 − Cγ(1 + λ_b)/λ_b = 0.73, between the two cases
    // above (cosine −0.062). (With λ_b = 0.05, β = 0.061, the β direction converges so slowly
    // that 20000 steps leave a relative 3e-7 on the norms.)
    let p = balanced().lambda_b(0.2);
    let cf = p.check().unwrap().closed_form().unwrap();
    assert!(cf.beta > 0.7 && cf.beta < 0.75, "{cf:?}");
    let (a, b) = (cf.a, cf.beta);
    assert_matches_closed_form(p, 5000, (b - a) / (3.0 * a + b));
}

#[test]
fn closed_form_holds_at_d_equal_c_minus_1() {
    // With a free bias the minimiser has rank C − 1, so d = C − 1 suffices (C = 3, d = 2).
    let p = UfmParams::new(3, 2)
        .per_class(4)
        .lambda_h(1e-2)
        .lambda_w(1e-2)
        .learning_rate(1.0)
        .seed(1);
    assert_matches_closed_form(p, 5000, -0.5);
    // Without a bias it needs rank C: no closed form at d = 2.
    let e = UfmParams::new(3, 2)
        .bias(false)
        .check()
        .unwrap()
        .closed_form();
    assert!(matches!(e, Err(UfmError::NoClosedForm(_))), "{e:?}");
}

#[test]
fn above_the_threshold_the_minimiser_is_zero() {
    // n = 5, C = 4: threshold √(λ_W λ_H) = 1/(C√n) = 0.1118.
    let below = balanced().lambda_h(0.1).lambda_w(0.1);
    let above = balanced().lambda_h(0.12).lambda_w(0.12);
    let cf_below = below.check().unwrap().closed_form().unwrap();
    let cf_above = above.check().unwrap().closed_form().unwrap();
    assert!((cf_below.threshold - 1.0 / (4.0 * 5f64.sqrt())).abs() < 1e-15);
    assert!(
        cf_below.a > 0.1 && cf_below.w_row_norm > 0.1,
        "{cf_below:?}"
    );
    assert_eq!(
        (cf_above.a, cf_above.w_row_norm, cf_above.mean_norm),
        (0.0, 0.0, 0.0)
    );

    // Gradient descent agrees: below, a collapsed simplex of the predicted norm; above, H and
    // W decay to 0 and the model predicts the constant bias 1/C (one class for every sample).
    let run = below.steps(3000).record_every(3000).run().unwrap();
    assert!(rel(run.w_row_norms()[0], cf_below.w_row_norm) < 1e-9);
    assert_eq!(run.train_error(), 0.0);
    let run = above.steps(3000).record_every(3000).run().unwrap();
    let max_w = run.w.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let max_h = run.h.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    // Just above the threshold the slowest (class-separating) mode decays by a factor
    // 1 − η(λ − 1/(C√n)) ≈ 0.992 per step: measured max |W| 1.9e-12, max |H| 8.4e-13 at step
    // 3000. Bound 1e-9.
    assert!(
        max_w < 1e-9 && max_h < 1e-9,
        "max |W| {max_w}, max |H| {max_h}"
    );
    for &b in &run.b {
        assert!((b - 0.25).abs() < 1e-9, "b {:?}", run.b);
    }
    // Not collapse in the stated sense: the model outputs the constant 1/C for every sample
    // (measured: every logit within 3e-17 of 1/C at step 3000); which class wins the argmax is
    // decided by numbers of that size, i.e. by rounding.
    let dev = run
        .logits()
        .iter()
        .fold(0.0f64, |a, z| a.max((z - 0.25).abs()));
    assert!(dev < 1e-9, "max |logit − 1/C| = {dev}");
}

#[test]
fn without_weight_decay_collapse_does_not_follow() {
    // λ_H = λ_W = 0 from a wide start (init_std 1, d = 16 ≫ C = 4): gradient descent reaches
    // zero loss, and then nothing moves the within-class spread that W does not see: NC1 stays
    // at its value at interpolation. With weight decay the same start collapses.
    let p = UfmParams::new(4, 16)
        .per_class(5)
        .init_std(1.0)
        .learning_rate(0.5)
        .seed(2)
        .steps(4000)
        .record_every(1000);
    let free = p.clone().lambda_h(0.0).lambda_w(0.0).run().unwrap();
    let decayed = p.lambda_h(5e-3).lambda_w(5e-3).run().unwrap();
    let nc1 = |r: &UfmRun, i: usize| r.reports[i].nc1;
    // Interpolation: the loss is ~0 (measured below 1e-20).
    assert!(free.final_objective() < 1e-12, "{}", free.final_objective());
    // NC1 frozen: changes by < 1 % between steps 2000 and 4000, and stays above 0.1.
    assert!(nc1(&free, 4) > 0.1, "λ = 0: NC1 {}", nc1(&free, 4));
    assert!(rel(nc1(&free, 4), nc1(&free, 2)) < 0.01);
    // With λ = 5e-3 from the same start: NC1 below 1e-6 and falling.
    assert!(
        nc1(&decayed, 4) < 1e-6,
        "λ = 5e-3: NC1 {}",
        nc1(&decayed, 4)
    );
    assert!(nc1(&decayed, 4) < nc1(&decayed, 2) / 10.0);
    // No closed form without weight decay.
    let e = UfmParams::new(4, 16)
        .lambda_w(0.0)
        .check()
        .unwrap()
        .closed_form();
    assert!(matches!(e, Err(UfmError::NoClosedForm(_))), "{e:?}");
}

/// Minority collapse (Fang et al. 2021): cross-entropy, C = 4 with two majority classes of R
/// samples and two minority classes of 1 sample, d = 8, λ_H = λ_W = 2e-2, free bias, 5000 steps
/// at learning rate 1, seed 0. The mean cosine of the two minority classifier rows, measured:
///
/// | R | 1 | 20 | 22 | 24 | 26 | 30 |
/// |---|---|---|---|---|---|---|
/// | cos | −0.3333 | 0.367 | 0.569 | 0.989 (0.994 at 20000 steps) | 1.000000 | 1.000000 |
///
/// so the minority rows become parallel (cos ≥ 0.99) at a ratio between 22 and 24, and exactly
/// (to 6 digits) from 26. With λ = 1e-2 the crossing of 0.99 lies between R = 48 (0.885) and
/// 50 (0.996); with λ = 5e-3 between 90 (0.653) and 100 (0.987): the weaker the weight decay,
/// the larger the ratio. The test brackets the transition at R = 20 and R = 26.
#[test]
fn minority_collapse_beyond_a_measured_ratio() {
    let run = |r: usize| {
        UfmParams::new(4, 8)
            .class_sizes(&[r, r, 1, 1])
            .loss(UfmLoss::CrossEntropy)
            .lambda_h(2e-2)
            .lambda_w(2e-2)
            .learning_rate(1.0)
            .steps(5000)
            .record_every(5000)
            .seed(0)
            .run()
            .unwrap()
    };
    let balanced = run(1);
    // Balanced cross-entropy: the simplex ETF, cosine −1/(C−1) for every pair.
    assert!((balanced.mean_cosine(&[2, 3]) + 1.0 / 3.0).abs() < 1e-6);
    assert!((balanced.mean_cosine(&[0, 1]) + 1.0 / 3.0).abs() < 1e-6);
    let before = run(20).mean_cosine(&[2, 3]);
    let after = run(26);
    let cos = after.mean_cosine(&[2, 3]);
    assert!(before < 0.5, "R = 20: minority cosine {before}");
    assert!(cos > 0.999, "R = 26: minority cosine {cos}");
    // The majority rows move apart instead (towards antipodal), and keep their norm.
    assert!(after.mean_cosine(&[0, 1]) < -0.75);
    let norms = after.w_row_norms();
    assert!(norms[2] < norms[0] / 2.0, "{norms:?}");
}

#[test]
fn bad_params_give_one_line_errors() {
    let cases: Vec<(UfmParams, &str)> = vec![
        (UfmParams::new(1, 4), "at least 2 classes"),
        (UfmParams::new(0, 4), "at least 2 classes"),
        (UfmParams::new(3, 0), "d ≥ 1"),
        (UfmParams::new(3, 4).per_class(0), "class 0 has no samples"),
        (
            UfmParams::new(3, 4).class_sizes(&[2, 0, 2]),
            "class 1 has no samples",
        ),
        (
            UfmParams::new(3, 4).class_sizes(&[2, 2]),
            "2 class sizes given for 3 classes",
        ),
        (UfmParams::new(3, 4).lambda_h(-1e-3), "lambda_h = -0.001"),
        (UfmParams::new(3, 4).lambda_w(f64::NAN), "lambda_w = NaN"),
        (
            UfmParams::new(3, 4).lambda_b(f64::INFINITY),
            "lambda_b = inf",
        ),
        (UfmParams::new(3, 4).learning_rate(0.0), "learning rate 0"),
        (
            UfmParams::new(3, 4).learning_rate(-0.1),
            "learning rate -0.1",
        ),
        (
            UfmParams::new(3, 4).learning_rate(f64::NAN),
            "learning rate NaN",
        ),
        (UfmParams::new(3, 4).init_std(0.0), "init_std 0"),
        (UfmParams::new(3, 4).steps(0), "steps must be at least 1"),
        (UfmParams::new(3, 4).record_every(0), "recording schedule"),
        (UfmParams::new(3, 4).record_log(0), "recording schedule"),
        (UfmParams::new(3, usize::MAX), "too large"),
        (UfmParams::new(3, 4).per_class(usize::MAX / 2), "too large"),
    ];
    for (p, expect) in cases {
        let e = p.check().expect_err(expect);
        let msg = e.to_string();
        assert!(msg.contains(expect), "{msg:?} should contain {expect:?}");
        assert!(!msg.contains('\n'), "{msg:?}");
        // run() checks first and gives the same error.
        assert_eq!(p.run().unwrap_err().to_string(), msg);
    }
    // A learning rate far too large diverges: a typed error naming the step, not a panic or NaNs.
    let e = UfmParams::new(3, 4).learning_rate(50.0).run().unwrap_err();
    assert!(matches!(e, UfmError::Diverged { .. }), "{e}");
    assert!(e.to_string().contains("lower the learning rate"), "{e}");
    // No closed form for cross-entropy or imbalanced classes.
    for p in [
        UfmParams::new(3, 4).loss(UfmLoss::CrossEntropy),
        UfmParams::new(3, 4).class_sizes(&[1, 2, 3]),
    ] {
        let e = p.check().unwrap().closed_form().unwrap_err();
        assert!(matches!(e, UfmError::NoClosedForm(_)), "{e}");
    }
    // The crate's error converts for `?` in notebooks (Box<dyn Error>).
    let boxed: Box<dyn std::error::Error> = UfmParams::new(1, 1).check().unwrap_err().into();
    assert!(boxed.to_string().contains("2 classes"));
}

#[test]
fn deterministic_from_the_seed() {
    let a = balanced().steps(50).run().unwrap();
    let b = balanced().steps(50).run().unwrap();
    let c = balanced().seed(4).steps(50).run().unwrap();
    assert_eq!(a.h, b.h);
    assert_eq!(a.w, b.w);
    assert_eq!(a.reports, b.reports);
    assert_ne!(a.h, c.h);
}

#[test]
fn trajectory_feeds_tables_and_figures() {
    let p = balanced().steps(1000).record_log(12);
    let steps = p.check().unwrap().record_steps();
    assert_eq!(steps.first(), Some(&0));
    assert_eq!(steps.last(), Some(&1000));
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert!(steps.len() >= 10, "{steps:?}");
    let run = p.run().unwrap();
    assert_eq!(run.reports.len(), steps.len());
    assert_eq!(run.objective.len(), steps.len());
    let epochs: Vec<u32> = run.reports.iter().map(|r| r.epoch.unwrap()).collect();
    assert_eq!(epochs, steps);
    let tidy = run.tidy().unwrap();
    assert_eq!(tidy.height(), steps.len() * run.reports[0].metrics().len());
    let fig = EpochPlot::new(&run.reports).metric("nc1").draw().unwrap();
    assert!(fig.svg().contains("<svg"));
    SmallMultiples::nc_overview(&run.reports).draw().unwrap();
    MeanGeometryPlot::from_features(&run.features())
        .classifier(&run.classifier())
        .draw()
        .unwrap();
    // Two runs in one frame, one line each.
    let other = balanced()
        .lambda_h(1e-3)
        .lambda_w(1e-3)
        .steps(1000)
        .record_log(12)
        .run()
        .unwrap();
    let both = tidy_runs(&[("λ = 5e-3", &run), ("λ = 1e-3", &other)]).unwrap();
    assert_eq!(both.height(), 2 * tidy.height());
    let fig = EpochPlot::new(&both).metric("nc1").draw().unwrap();
    assert_eq!(fig.legend(), ["λ = 5e-3", "λ = 1e-3"]);
}
