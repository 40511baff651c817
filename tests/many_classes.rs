//! Many classes (issue 17): the d×d route of NC1, tiled NC2/CDNV/NC4 against their naive
//! forms, and the generalized metrics (GNC2, CDNV exponent, NC3 variants) against closed forms.

use ndarray::{Array1, Array2};
use neural_collapse::generalized::{nc3_variants, pairwise_stats, GeneralizedParams};
use neural_collapse::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// `per` samples per class about random means, noise `noise`.
fn data(c: usize, d: usize, per: usize, noise: f64, seed: u64) -> (Array2<f64>, Vec<u32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let means = Array2::from_shape_fn((c, d), |_| rng.sample::<f64, _>(StandardNormal));
    let y: Vec<u32> = (0..c * per).map(|i| (i % c) as u32).collect();
    let x = Array2::from_shape_fn((c * per, d), |(i, j)| {
        means[[y[i] as usize, j]] + noise * rng.sample::<f64, _>(StandardNormal)
    });
    (x, y)
}

/// Samples `mean ± e_0·0.01` (two per class), so that the class means are exactly `means`.
fn at_means(means: &Array2<f64>) -> (Array2<f64>, Vec<u32>) {
    let (c, d) = means.dim();
    let mut x = Array2::zeros((2 * c, d));
    let mut y = Vec::new();
    for k in 0..c {
        for (s, sign) in [-1.0, 1.0].iter().enumerate() {
            let mut row = means.row(k).to_owned();
            row[0] += sign * 0.01;
            x.row_mut(2 * k + s).assign(&row);
            y.push(k as u32);
        }
    }
    (x, y)
}

#[test]
fn nc1_from_either_side_agrees() {
    // C > d (Jacobi on the d × d side vs the C × C side), C ≤ d, and both sides above the
    // Jacobi limit (Gram eigendecompositions).
    for (c, d, seed) in [
        (12usize, 8usize, 1u64),
        (6, 10, 2),
        (40, 3, 3),
        (300, 270, 4),
    ] {
        let (x, y) = data(c, d, 10, 0.7, seed);
        let a = NcParams::new()
            .nc1_route(Nc1Route::Classes)
            .measure(x.view(), &y)
            .unwrap();
        let b = NcParams::new()
            .nc1_route(Nc1Route::Features)
            .measure(x.view(), &y)
            .unwrap();
        assert_eq!(a.nc1_route, Nc1Route::Classes);
        assert_eq!(b.nc1_route, Nc1Route::Features);
        assert_eq!(a.rank, b.rank, "C={c} d={d}");
        assert_eq!(a.rank, (c - 1).min(d));
        assert!(
            rel(a.nc1, b.nc1) < 1e-10,
            "C={c} d={d}: {} vs {}",
            a.nc1,
            b.nc1
        );
        // Auto picks the smaller side beyond 256 classes.
        let auto = NcParams::new().measure(x.view(), &y).unwrap();
        let want = if c > d && c > 256 {
            Nc1Route::Features
        } else {
            Nc1Route::Classes
        };
        assert_eq!(auto.nc1_route, want);
        // And the explicit d × d form (Σ_W, Σ_B, eigendecomposition) agrees.
        if d <= 40 {
            let stats = ClassStats::from_data(x.view(), &y).unwrap();
            let e = nc1_explicit(
                x.view(),
                &y,
                &stats,
                GlobalMean::ClassMeans,
                DEFAULT_TOLERANCE,
            )
            .unwrap();
            assert!(rel(b.nc1, e.value) < 1e-9, "{} vs {}", b.nc1, e.value);
        }
    }
}

/// The naive CDNV_p double loop over the class means and variances of the data.
fn naive_cdnv(x: &Array2<f64>, y: &[u32], c: usize, p: f64) -> f64 {
    let stats = ClassStats::from_data(x.view(), y).unwrap();
    let m = stats.means();
    let var: Vec<f64> = (0..c)
        .map(|k| {
            let rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] as usize == k).collect();
            rows.iter()
                .map(|&i| {
                    x.row(i)
                        .iter()
                        .zip(m.row(k))
                        .map(|(a, b)| (a - b).powi(2))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / rows.len() as f64
        })
        .collect();
    let mut sum = 0.0;
    for a in 0..c {
        for b in a + 1..c {
            let d2: f64 = m
                .row(a)
                .iter()
                .zip(m.row(b))
                .map(|(u, v)| (u - v).powi(2))
                .sum();
            sum += (var[a] + var[b]) / (2.0 * d2.powf(p));
        }
    }
    sum / (c * (c - 1) / 2) as f64
}

#[test]
fn cdnv_exponent_by_hand() {
    // d = 1: class means 0, 1, 3; variances 1, 0, 1.
    let x = Array2::from_shape_vec((6, 1), vec![-1.0, 1.0, 1.0, 1.0, 2.0, 4.0]).unwrap();
    let y = [0, 0, 1, 1, 2, 2];
    let r1 = NcParams::new().measure(x.view(), &y).unwrap();
    let want1 = (0.5 + 2.0 / 18.0 + 1.0 / 8.0) / 3.0;
    assert!(rel(r1.cdnv, want1) < 1e-14, "{} vs {want1}", r1.cdnv);
    assert_eq!(r1.generalized.cdnv_exponent, None);
    let r2 = NcParams::new()
        .generalized(GeneralizedParams {
            cdnv_exponent: 2.0,
            ..GeneralizedParams::default()
        })
        .measure(x.view(), &y)
        .unwrap();
    let want2 = (0.5 + 2.0 / (2.0 * 81.0) + 1.0 / (2.0 * 16.0)) / 3.0;
    assert!(rel(r2.cdnv, want2) < 1e-14, "{} vs {want2}", r2.cdnv);
    assert_eq!(r2.generalized.cdnv_exponent, Some(2.0));
    assert_eq!(r2.to_json()["cdnv_exponent"], 2.0);
    // A bad exponent is an error, not a number.
    let bad = NcParams::new()
        .generalized(GeneralizedParams {
            cdnv_exponent: -1.0,
            ..GeneralizedParams::default()
        })
        .measure(x.view(), &y);
    assert!(bad.unwrap_err().to_string().contains("cdnv exponent"));
}

#[test]
fn tiled_pairwise_equals_naive() {
    // Three tiles of 256 rows and a remainder; exponents 1 and 2.
    let (x, y) = data(600, 20, 3, 0.5, 7);
    let stats = ClassStats::from_data(x.view(), &y).unwrap();
    let centred = stats.centered_means(GlobalMean::ClassMeans);
    let var: Vec<f64> = {
        let m = stats.means();
        (0..600)
            .map(|k| {
                (0..y.len())
                    .filter(|&i| y[i] as usize == k)
                    .map(|i| {
                        x.row(i)
                            .iter()
                            .zip(m.row(k))
                            .map(|(a, b)| (a - b).powi(2))
                            .sum::<f64>()
                    })
                    .sum::<f64>()
                    / 3.0
            })
            .collect()
    };
    for p in [1.0, 2.0] {
        let st = pairwise_stats(centred.view(), Some(&var), p, 1.0, "mean").unwrap();
        let naive = naive_cdnv(&x, &y, 600, p);
        assert!(rel(st.cdnv.unwrap(), naive) < 1e-10, "p={p}");
    }
    let st = pairwise_stats(centred.view(), None, 1.0, 1.0, "mean").unwrap();
    let full = nc2_of_rows(centred.view(), "mean").unwrap();
    assert!(rel(st.nc2.equinorm, full.equinorm) < 1e-10);
    assert!(rel(st.nc2.equiangularity, full.equiangularity) < 1e-10);
    assert!(rel(st.nc2.max_angle, full.max_angle) < 1e-10);
    assert!(rel(st.nc2.etf_distance, full.etf_distance) < 1e-10);
    // GNC2 by the naive double loop over the directions.
    let u: Vec<Vec<f64>> = centred
        .rows()
        .into_iter()
        .map(|r| {
            let n = r.dot(&r).sqrt();
            r.iter().map(|v| v / n).collect()
        })
        .collect();
    let (mut log, mut riesz, mut pairs) = (0.0, 0.0, 0.0);
    for a in 0..600 {
        for b in a + 1..600 {
            let d2: f64 = u[a].iter().zip(&u[b]).map(|(p, q)| (p - q).powi(2)).sum();
            log += -0.5 * d2.ln();
            riesz += 1.0 / d2.sqrt();
            pairs += 1.0;
        }
    }
    assert!(rel(st.gnc2_log, log / pairs) < 1e-10);
    assert!(rel(st.gnc2_riesz, riesz / pairs) < 1e-10);
}

#[test]
fn measure_uses_the_tiles_beyond_256_classes() {
    let (x, y) = data(600, 6, 2, 0.3, 9);
    let r = NcParams::new().measure(x.view(), &y).unwrap();
    assert!(rel(r.cdnv, naive_cdnv(&x, &y, 600, 1.0)) < 1e-10);
    let centred = ClassStats::from_data(x.view(), &y)
        .unwrap()
        .centered_means(GlobalMean::ClassMeans);
    let full = nc2_of_rows(centred.view(), "mean").unwrap();
    assert!(rel(r.nc2.equiangularity, full.equiangularity) < 1e-10);
    assert!(rel(r.nc2.etf_distance, full.etf_distance) < 1e-10);
    // C > d + 1: GNC2 is reported without asking.
    assert!(r.generalized.gnc2_log.is_some() && r.generalized.gnc2_riesz.is_some());
    assert_eq!(r.nc1_route, Nc1Route::Features);
}

/// `argmin_c ‖h − μ_c‖²` and `argmax_c (W h + b)_c` in f64, row by row.
fn naive_nc4(
    x: &Array2<f64>,
    means: ndarray::ArrayView2<'_, f64>,
    clf: &Classifier,
) -> (u64, Vec<u32>) {
    let mut mism = 0;
    let mut ncc_all = Vec::new();
    for h in x.rows() {
        let ncc = (0..means.nrows())
            .map(|c| {
                let d: f64 = h
                    .iter()
                    .zip(means.row(c))
                    .map(|(a, b)| (a - b).powi(2))
                    .sum();
                (d, c)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap()
            .1;
        let net = (0..clf.w.nrows())
            .map(|c| (clf.w.row(c).dot(&h) + clf.b[c], c))
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
            .unwrap()
            .1;
        mism += u64::from(ncc != net);
        ncc_all.push(ncc as u32);
    }
    (mism, ncc_all)
}

#[test]
fn nc4_from_the_nc1_product_equals_naive_with_near_ties() {
    // C ≤ d with C ≥ 256: the classes route, whose nearest class means come from the NC1
    // product (tiles::NccFromProjection). Reference means from a first sample; measured rows are
    // fresh noisy rows plus rows placed between two means, nearer to one by a relative 1e-7 of
    // the squared distance: far above f64 rounding (so the naive f64 answer is unambiguous),
    // far below the f32 certification margin (so those rows take the f64 rule).
    let (c, d) = (300usize, 320usize);
    let (x0, y0) = data(c, d, 2, 0.7, 21);
    let stats = ClassStats::from_data(x0.view(), &y0).unwrap();
    let means = stats.means();
    let (noisy, y1) = data(c, d, 2, 0.7, 22);
    let mut rows: Vec<f64> = noisy.iter().copied().collect();
    let mut y: Vec<u32> = y1.clone();
    let mut rng = StdRng::seed_from_u64(23);
    let mut ties = 0;
    for k in 0..400 {
        let a = rng.gen_range(0..c);
        let b = (a + 1 + rng.gen_range(0..c - 1)) % c;
        let t = if k % 2 == 0 { 1e-7 } else { -1e-7 };
        for j in 0..d {
            let (ma, mb) = (means[[a, j]], means[[b, j]]);
            rows.push(0.5 * (ma + mb) + t * (ma - mb));
        }
        y.push(a as u32);
        ties += 1;
    }
    let n = y.len();
    let x = Array2::from_shape_vec((n, d), rows).unwrap();
    let mut rng = StdRng::seed_from_u64(24);
    let clf = Classifier {
        w: means.mapv(|v| v + 0.5 * rng.sample::<f64, _>(StandardNormal)),
        b: Array1::from_shape_fn(c, |_| 0.3 * rng.sample::<f64, _>(StandardNormal)),
    };
    let (want, ncc) = naive_nc4(&x, means, &clf);
    // The tie rows go to the nearer mean: a for t > 0, b for t < 0 (by construction).
    let tie_ncc = &ncc[n - ties..];
    assert!(tie_ncc
        .iter()
        .step_by(2)
        .zip(y[n - ties..].iter().step_by(2))
        .all(|(p, q)| p == q));
    assert!(tie_ncc
        .iter()
        .skip(1)
        .step_by(2)
        .zip(y[n - ties..].iter().skip(1).step_by(2))
        .all(|(p, q)| p != q));
    let r = NcParams::new()
        .reference(Reference::Train(&stats))
        .classifier(&clf)
        .measure(x.view(), &y)
        .unwrap();
    assert_eq!(r.nc1_route, Nc1Route::Classes);
    assert!(want > 0 && want < n as u64, "{want}");
    assert_eq!(r.nc4, Some(want as f64 / n as f64));
    // Against stored predictions: the naive NCC decisions agree with the pass's everywhere,
    // the labels disagree with them exactly where naive says so.
    let r = NcParams::new()
        .reference(Reference::Train(&stats))
        .predictions(&ncc)
        .measure(x.view(), &y)
        .unwrap();
    assert_eq!(r.nc4, Some(0.0));
    let r = NcParams::new()
        .reference(Reference::Train(&stats))
        .predictions(&y)
        .measure(x.view(), &y)
        .unwrap();
    let wrong = ncc.iter().zip(&y).filter(|(a, b)| a != b).count();
    assert!(wrong >= ties / 2);
    assert_eq!(r.nc4, Some(wrong as f64 / n as f64));
}

#[test]
fn tiled_nc4_equals_naive() {
    // 500 classes (two tiles of 480 columns), heavy noise: NCC and the classifier disagree often.
    let (c, d) = (500usize, 16usize);
    let (x, y) = data(c, d, 3, 1.0, 11);
    let mut rng = StdRng::seed_from_u64(12);
    let stats = ClassStats::from_data(x.view(), &y).unwrap();
    let clf = Classifier {
        w: stats
            .means()
            .mapv(|v| v + 0.8 * rng.sample::<f64, _>(StandardNormal)),
        b: Array1::from_shape_fn(c, |_| 0.5 * rng.sample::<f64, _>(StandardNormal)),
    };
    let (want, ncc) = naive_nc4(&x, stats.means(), &clf);
    assert!(want > 0 && want < x.nrows() as u64, "{want}");
    for route in [Nc1Route::Classes, Nc1Route::Features] {
        let r = NcParams::new()
            .nc1_route(route)
            .classifier(&clf)
            .measure(x.view(), &y)
            .unwrap();
        assert_eq!(r.nc4, Some(want as f64 / x.nrows() as f64), "{route:?}");
    }
    // From predictions: the NCC's own decisions disagree nowhere; labels somewhere.
    let r = NcParams::new()
        .predictions(&ncc)
        .measure(x.view(), &y)
        .unwrap();
    assert_eq!(r.nc4, Some(0.0));
    let r = NcParams::new()
        .predictions(&y)
        .measure(x.view(), &y)
        .unwrap();
    let wrong = ncc.iter().zip(&y).filter(|(a, b)| a != b).count();
    assert_eq!(r.nc4, Some(wrong as f64 / y.len() as f64));
}

#[test]
fn gnc2_of_points_on_a_circle() {
    for c in [3usize, 5, 8, 13] {
        let means = Array2::from_shape_fn((c, 2), |(k, j)| {
            let t = 2.0 * std::f64::consts::PI * k as f64 / c as f64;
            3.0 * if j == 0 { t.cos() } else { t.sin() }
        });
        let cf = c as f64;
        let st = pairwise_stats(means.view(), None, 1.0, 2.0, "mean").unwrap();
        assert!(
            (st.gnc2_log - (-cf.ln() / (cf - 1.0))).abs() < 1e-12,
            "C={c}"
        );
        assert!((st.gnc2_riesz - (cf + 1.0) / 12.0).abs() < 1e-12, "C={c}");
        // Through measure (C > d + 1 from C = 4 on; asked for explicitly below that).
        let (x, y) = at_means(&means);
        let r = NcParams::new()
            .generalized(GeneralizedParams {
                always: true,
                riesz_s: 2.0,
                ..GeneralizedParams::default()
            })
            .measure(x.view(), &y)
            .unwrap();
        assert!((r.generalized.gnc2_log.unwrap() - (-cf.ln() / (cf - 1.0))).abs() < 1e-12);
        assert!((r.generalized.gnc2_riesz.unwrap() - (cf + 1.0) / 12.0).abs() < 1e-12);
        let names: Vec<&str> = r.metrics().iter().map(|(k, _)| k.name()).collect();
        assert!(names.contains(&"gnc2_log") && names.contains(&"gnc2_riesz"));
    }
}

#[test]
fn regular_simplex_minimises_the_energies() {
    let mut rng = StdRng::seed_from_u64(5);
    for (c, d) in [(4usize, 3usize), (5, 5), (10, 12)] {
        // Simplex: e_k − 1/C in the first C coordinates (lies in C − 1 ≤ d dimensions).
        let m = Array2::from_shape_fn((c, d), |(k, j)| {
            if j >= c {
                0.0
            } else {
                f64::from(u8::from(j == k)) - 1.0 / c as f64
            }
        });
        // (4, 3): rotate the 4-simplex of R⁴ into R³: use the explicit tetrahedron instead.
        let m = if d < c {
            ndarray::array![
                [1.0, 1.0, 1.0],
                [1.0, -1.0, -1.0],
                [-1.0, 1.0, -1.0],
                [-1.0, -1.0, 1.0]
            ]
        } else {
            m
        };
        let cf = c as f64;
        let chord2 = 2.0 * cf / (cf - 1.0);
        for s in [1.0, 2.0, 3.5] {
            let st = pairwise_stats(m.view(), None, 1.0, s, "mean").unwrap();
            assert!((st.gnc2_log - (-0.5 * chord2.ln())).abs() < 1e-12);
            assert!(rel(st.gnc2_riesz, chord2.powf(-s / 2.0)) < 1e-12);
            assert!(st.nc2.equiangularity.abs() < 1e-12);
            assert!(st.nc2.etf_distance.abs() < 1e-7);
            // Any perturbation raises both energies.
            for _ in 0..5 {
                let p = m.mapv(|v| v + 0.05 * rng.sample::<f64, _>(StandardNormal));
                let q = pairwise_stats(p.view(), None, 1.0, s, "mean").unwrap();
                assert!(q.gnc2_log > st.gnc2_log && q.gnc2_riesz > st.gnc2_riesz);
            }
        }
        // NC2 of the report agrees: equiangularity 0 at the simplex.
        let (x, y) = at_means(&m);
        let r = NcParams::new().measure(x.view(), &y).unwrap();
        assert!(r.nc2.equiangularity.abs() < 1e-12);
    }
}

#[test]
fn nc3_variants_closed_forms() {
    // Self-dual simplex (W = Ṁ scaled): both variants 0.
    let m = ndarray::array![
        [1.0, 1.0, 1.0],
        [1.0, -1.0, -1.0],
        [-1.0, 1.0, -1.0],
        [-1.0, -1.0, 1.0]
    ];
    let (pc, etf) = nc3_variants((&m * 2.5).view(), m.view()).unwrap();
    assert!(pc.abs() < 1e-15 && etf.abs() < 1e-7, "{pc} {etf}");
    // W = −Ṁ: every ‖ŵ − û‖² = 4; WṀᵀ = −ṀṀᵀ, whose normalised distance to the ETF is 2.
    let (pc, etf) = nc3_variants((-&m).view(), m.view()).unwrap();
    assert!(
        (pc - 4.0).abs() < 1e-14 && (etf - 2.0).abs() < 1e-12,
        "{pc} {etf}"
    );
    // By hand against the C × C matrix for a random pair.
    let mut rng = StdRng::seed_from_u64(3);
    let w = Array2::from_shape_fn((300, 5), |_| rng.sample::<f64, _>(StandardNormal));
    let v = Array2::from_shape_fn((300, 5), |_| rng.sample::<f64, _>(StandardNormal));
    let (_, etf) = nc3_variants(w.view(), v.view()).unwrap();
    let g = w.dot(&v.t());
    let f = g.iter().map(|x| x * x).sum::<f64>().sqrt();
    let c = 300.0f64;
    let mut d2 = 0.0;
    for a in 0..300 {
        for b in 0..300 {
            let e = (f64::from(u8::from(a == b)) - 1.0 / c) / (c - 1.0).sqrt();
            d2 += (g[[a, b]] / f - e).powi(2);
        }
    }
    assert!(rel(etf, d2.sqrt()) < 1e-10);
}

#[test]
fn undefined_is_null_with_a_note() {
    let x = ndarray::array![[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.3]];
    let r = NcParams::new().measure(x.view(), &[0, 0, 1, 1]).unwrap();
    assert!(r.nc2.equiangularity.is_nan());
    assert!(r.to_json()["nc2_equiangularity"].is_null());
    assert!(r.generalized.notes.iter().any(|n| n.contains("C = 2")));
    assert!(r.to_json()["notes"][0].as_str().unwrap().contains("C = 2"));
    assert!(r.to_string().contains("C = 2"));
}

#[test]
fn cli_cdnv_exponent_and_generalized() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("hand.csv");
    // The hand case of `cdnv_exponent_by_hand`, one checkpoint.
    std::fs::write(
        &csv,
        "epoch,split,label,x_0\n0,train,0,-1\n0,train,0,1\n0,train,1,1\n0,train,1,1\n0,train,2,2\n0,train,2,4\n",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_neural-collapse");
    let out = std::process::Command::new(bin)
        .args(["metrics", csv.to_str().unwrap(), "--cdnv-exponent", "2"])
        .args(["--generalized", "--riesz-s", "2", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &rows[0];
    let want2 = (0.5 + 2.0 / (2.0 * 81.0) + 1.0 / (2.0 * 16.0)) / 3.0;
    assert!(rel(r["cdnv"].as_f64().unwrap(), want2) < 1e-14);
    assert_eq!(r["cdnv_exponent"], 2.0);
    assert_eq!(r["riesz_s"], 2.0);
    // d = 1: the directions are ±1, so chords are 0 or 2 — two coincide: infinite energy → null.
    assert!(r["gnc2_log"].is_null());
    let notes = r["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n.as_str().unwrap().contains("+∞")),
        "{r}"
    );
    assert!(
        r.get("nc1_route").is_none(),
        "C = 3: the C × C side, no key"
    );
    let bad = std::process::Command::new(bin)
        .args(["metrics", csv.to_str().unwrap(), "--cdnv-exponent", "0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--cdnv-exponent"));
}
