//! Streaming metrics and partial statistics (issue 16): the batched two-pass driver and the
//! shard / merge route give the whole-matrix `measure_scan` numbers for every metric.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use neural_collapse::metrics::{MeasureOptions, NcReport, ReferenceChoice};
use neural_collapse::partial::{Kind, Partial, PartialError, PartialOptions, StatsJob};
use neural_collapse::prelude::*;
use neural_collapse::stream::{
    measure_file, measure_scan, measure_scan_loaded, ClassSums, Source, StreamError,
};
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

const C: usize = 5;
const D: usize = 12;

/// Rows of one (epoch, split): class means on random directions (scale grows with the epoch),
/// unit Gaussian noise, every class present, labels shuffled; coarse = label / 2; predictions
/// of the coarse label right 70 % of the time.
fn group(epoch: u32, split: &str, n: usize, rng: &mut StdRng) -> Features {
    let means = Array2::from_shape_fn((C, D), |_| {
        let v: f64 = StandardNormal.sample(rng);
        v * (1.0 + epoch as f64)
    });
    let labels: Vec<u32> = (0..n)
        .map(|i| {
            if i < C {
                i as u32
            } else {
                rng.gen_range(0..C as u32)
            }
        })
        .collect();
    let x = Array2::from_shape_fn((n, D), |(i, j)| {
        let e: f64 = StandardNormal.sample(rng);
        (means[[labels[i] as usize, j]] + e) as f32
    });
    // The network was trained on the coarse labels: its predictions are coarse classes.
    let coarse: Vec<u32> = labels.iter().map(|&l| l / 2).collect();
    let pred = coarse
        .iter()
        .map(|&l| {
            if rng.gen_bool(0.7) {
                l
            } else {
                rng.gen_range(0..C.div_ceil(2) as u32)
            }
        })
        .collect();
    Features::new(x, labels)
        .with_epoch(epoch)
        .with_split(split)
        .with_pred(pred)
        .with_coarse(coarse)
}

/// A feature file of 2 epochs × {train, test}, written in chunks of `chunk` rows, the chunks
/// of the four groups interleaved (so each group's rows are spread over many row groups and a
/// batch holds several groups), and a classifier file.
fn study(dir: &Path, seed: u64, chunk: usize) -> (PathBuf, PathBuf) {
    let mut rng = StdRng::seed_from_u64(seed);
    let groups: Vec<Features> = [
        (0, "train", 97),
        (0, "test", 61),
        (3, "train", 89),
        (3, "test", 53),
    ]
    .iter()
    .map(|&(e, s, n)| group(e, s, n, &mut rng))
    .collect();
    let mut items = Vec::new();
    let mut at = vec![0usize; groups.len()];
    loop {
        let mut any = false;
        for (g, f) in groups.iter().enumerate() {
            let (a, n) = (at[g], f.n_samples());
            if a >= n {
                continue;
            }
            let b = (a + chunk).min(n);
            let rows: Vec<usize> = (a..b).collect();
            let take = |v: &Vec<u32>| rows.iter().map(|&i| v[i]).collect::<Vec<u32>>();
            items.push(
                Features::new(f.x.select(ndarray::Axis(0), &rows), take(&f.labels))
                    .with_epoch(f.epoch.unwrap())
                    .with_split(f.split.clone().unwrap())
                    .with_pred(take(f.pred.as_ref().unwrap()))
                    .with_coarse(take(f.coarse.as_ref().unwrap())),
            );
            at[g] = b;
            any = true;
        }
        if !any {
            break;
        }
    }
    let path = dir.join("features-fc.parquet");
    write_features(&path, &items).unwrap();
    let classifiers: Vec<(u32, Classifier)> = [0u32, 3]
        .iter()
        .map(|&e| {
            let w = Array2::from_shape_fn((C, D), |_| rng.gen_range(-1.0..1.0));
            let b = Array1::from_shape_fn(C, |_| rng.gen_range(-0.1..0.1));
            (e, Classifier { w, b })
        })
        .collect();
    let cpath = dir.join("classifier.parquet");
    write_classifier(&cpath, &classifiers).unwrap();
    (path, cpath)
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// Every metric, the sizes and the labels of two report lists agree (metrics to 1e-12
/// relative).
fn assert_same(got: &[NcReport], want: &[NcReport]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (
                g.epoch,
                &g.split,
                &g.layer,
                g.n,
                g.classes,
                g.dim,
                g.rank,
                &g.reference
            ),
            (
                w.epoch,
                &w.split,
                &w.layer,
                w.n,
                w.classes,
                w.dim,
                w.rank,
                &w.reference
            )
        );
        let (gm, wm) = (g.metrics(), w.metrics());
        assert_eq!(
            gm.iter().map(|m| m.0).collect::<Vec<_>>(),
            wm.iter().map(|m| m.0).collect::<Vec<_>>()
        );
        for ((k, a), (_, b)) in gm.iter().zip(&wm) {
            assert!(
                close(*a, *b),
                "{k} at epoch {:?} {:?}: {a} vs {b}",
                g.epoch,
                g.split
            );
        }
    }
}

/// The option sets every equality test runs: own / train means, classifier or stored
/// predictions, both global means, fine / coarse labels.
fn option_sets(classifier: &Path) -> Vec<MeasureOptions> {
    let base = MeasureOptions::default();
    vec![
        base.clone(),
        MeasureOptions {
            config: NcConfig {
                reference: ReferenceChoice::Train,
                ..base.config
            },
            classifier: Some(classifier.to_path_buf()),
            ..base.clone()
        },
        MeasureOptions {
            config: NcConfig {
                global_mean: GlobalMean::SampleWeighted,
                tolerance: 1e-9,
                ..base.config
            },
            classifier: Some(classifier.to_path_buf()),
            ..base.clone()
        },
        MeasureOptions {
            config: NcConfig {
                reference: ReferenceChoice::Train,
                ..base.config
            },
            labels: LabelColumn::Coarse,
            ..base
        },
    ]
}

#[test]
fn streamed_equals_whole_with_many_small_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (path, clf) = study(dir.path(), 1, 7);
    let scan = FeatureScan::open(&path).unwrap();
    let source = Source::from_scan(&scan).unwrap();
    assert_eq!(source.rows, 97 + 61 + 89 + 53);
    for options in option_sets(&clf) {
        let whole = measure_scan_loaded(&scan, &options).unwrap();
        assert_eq!(whole.len(), 4);
        // Batches of 1, 5 (inside a row group of 7) and 23 rows (across row groups and groups).
        for rows in [1usize, 5, 23, 100_000] {
            let mut seen = 0u64;
            let streamed =
                measure_file(&source, &options, rows * 4 * D, &mut |r| seen += r).unwrap();
            assert_same(&streamed, &whole);
            assert_eq!(seen, 2 * source.rows, "both passes read every row once");
        }
    }
}

#[test]
fn streamed_filters_by_epoch_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let (path, clf) = study(dir.path(), 2, 11);
    let scan = FeatureScan::open(&path).unwrap();
    let source = Source::from_scan(&scan).unwrap();
    let options = MeasureOptions {
        epoch: Some(3),
        split: Some("test".into()),
        config: NcConfig {
            reference: ReferenceChoice::Train,
            ..NcConfig::default()
        },
        classifier: Some(clf),
        ..MeasureOptions::default()
    };
    let whole = measure_scan_loaded(&scan, &options).unwrap();
    assert_eq!(whole.len(), 1);
    let streamed = measure_file(&source, &options, 40 * 4 * D, &mut |_| {}).unwrap();
    assert_same(&streamed, &whole);
    // measure_scan streams.
    assert_same(&measure_scan(&scan, &options).unwrap(), &whole);
    // No rows for the filter: the loader's message.
    let none = MeasureOptions {
        epoch: Some(9),
        ..MeasureOptions::default()
    };
    let e = measure_file(&source, &none, 1 << 20, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("epoch = 9"), "{e}");
}

/// Pass 1 over shards, merged; pass 2 over shards against the merged means, merged.
fn sharded(path: &Path, options: &PartialOptions, n: u64, batch_bytes: usize) -> Partial {
    let source = || vec![Source::open(path, None, None).unwrap()];
    let pass1: Vec<(String, Partial)> = (0..n)
        .map(|i| {
            let job = StatsJob {
                sources: source(),
                shard: Some((i, n)),
                means: None,
                options: options.clone(),
                batch_bytes,
            };
            assert_eq!(job.kind(), Kind::Pass1);
            (format!("p1-{i}"), job.run(&mut |_| {}).unwrap())
        })
        .collect();
    let means = Partial::merge_all(pass1).unwrap();
    assert_eq!(means.kind, Kind::Pass1);
    let pass2: Vec<(String, Partial)> = (0..n)
        .map(|i| {
            let job = StatsJob {
                sources: source(),
                shard: Some((i, n)),
                means: Some(means.clone()),
                options: options.clone(),
                batch_bytes,
            };
            (format!("p2-{i}"), job.run(&mut |_| {}).unwrap())
        })
        .collect();
    Partial::merge_all(pass2).unwrap()
}

fn reports_of(p: &Partial) -> Vec<NcReport> {
    p.reports().unwrap().into_iter().map(|(_, r)| r).collect()
}

#[test]
fn shard_merge_equals_whole_for_every_metric() {
    let dir = tempfile::tempdir().unwrap();
    let (path, clf) = study(dir.path(), 3, 13);
    let scan = FeatureScan::open(&path).unwrap();
    for options in option_sets(&clf) {
        let whole = measure_scan_loaded(&scan, &options).unwrap();
        let popts = PartialOptions::from_measure(&options);
        for n in [1u64, 2, 7, 40] {
            let merged = sharded(&path, &popts, n, 9 * 4 * D);
            assert_same(&reports_of(&merged), &whole);
        }
        // Without --shard: a complete partial, through a file on disk.
        let job = StatsJob {
            sources: vec![Source::open(&path, None, None).unwrap()],
            shard: None,
            means: None,
            options: popts.clone(),
            batch_bytes: 1 << 20,
        };
        let part = job.run(&mut |_| {}).unwrap();
        assert_eq!(part.kind, Kind::Complete);
        let file = dir.path().join("complete.parquet");
        part.write(&file).unwrap();
        let back = Partial::read(&file).unwrap();
        assert_eq!(back, part, "a partial reads back exactly");
        assert!(job.is_done(&file));
        assert_same(&reports_of(&back), &whole);
    }
}

#[test]
fn run_identity_comes_from_the_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("my-run-s4");
    std::fs::create_dir(&run).unwrap();
    let (path, _) = study(&run, 4, 50);
    std::fs::write(run.join("run.json"), r#"{"seed": 4, "layers": ["fc"]}"#).unwrap();
    let s = Source::open(&path, Some("ignored"), Some(9)).unwrap();
    assert_eq!((s.run.as_deref(), s.seed), (Some("my-run-s4"), Some(4)));
    let k = s.key(3, "test");
    assert_eq!(
        (k.layer.as_str(), k.epoch, k.split.as_str()),
        ("fc", 3, "test")
    );
    // Without run.json: the flags.
    std::fs::remove_file(run.join("run.json")).unwrap();
    let s = Source::open(&path, Some("named"), Some(9)).unwrap();
    assert_eq!((s.run.as_deref(), s.seed), (Some("named"), Some(9)));
    // Shards cover the rows exactly, in order.
    let n = 7;
    let ranges: Vec<_> = (0..n).map(|i| s.shard_rows(i, n)).collect();
    assert_eq!(ranges[0].start, 0);
    assert_eq!(ranges[6].end, s.rows);
    for w in ranges.windows(2) {
        assert_eq!(w[0].end, w[1].start);
    }
}

#[test]
fn merge_refuses_what_does_not_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = study(dir.path(), 5, 10);
    let popts = PartialOptions::from_measure(&MeasureOptions::default());
    let job = |shard: Option<(u64, u64)>, means: Option<Partial>| StatsJob {
        sources: vec![Source::open(&path, None, None).unwrap()],
        shard,
        means,
        options: popts.clone(),
        batch_bytes: 1 << 20,
    };
    let p1: Vec<Partial> = (0..3)
        .map(|i| job(Some((i, 3)), None).run(&mut |_| {}).unwrap())
        .collect();
    let means = Partial::merge_all(
        p1.iter()
            .enumerate()
            .map(|(i, p)| (format!("{i}"), p.clone()))
            .collect(),
    )
    .unwrap();
    let p2: Vec<Partial> = (0..3)
        .map(|i| {
            job(Some((i, 3)), Some(means.clone()))
                .run(&mut |_| {})
                .unwrap()
        })
        .collect();
    // A missing shard: pass 2 does not cover the rows.
    let two = Partial::merge_all(vec![
        ("a".into(), p2[0].clone()),
        ("b".into(), p2[2].clone()),
    ])
    .unwrap();
    let e = two.reports().unwrap_err();
    assert!(
        matches!(
            root(&e),
            PartialError::Stream(s) if matches!(stream_root(s), StreamError::IncompletePass { .. })
        ),
        "{e}"
    );
    // A shard given twice: its rows are refused by the merge itself (the reports would have
    // found more rows than the group has), in any order.
    for order in [[0, 1, 2, 2], [2, 0, 2, 1]] {
        let e = Partial::merge_all(
            order
                .iter()
                .enumerate()
                .map(|(k, &i)| (format!("{k}"), p2[i].clone()))
                .collect(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("the same rows given twice"), "{e}");
    }
    // So is a pass-1 shard given twice (its counts would double, its means would not).
    let e = Partial::merge_all(vec![
        ("a".into(), p1[0].clone()),
        ("b".into(), p1[0].clone()),
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("the same rows given twice"), "{e}");
    // Pass-1 and pass-2 partials together.
    let e = Partial::merge_all(vec![
        ("a".into(), p1[0].clone()),
        ("b".into(), p2[0].clone()),
    ])
    .unwrap_err();
    assert!(matches!(root(&e), PartialError::Kinds { .. }), "{e}");
    // Pass 2 against other means (those of two shards only).
    let other = Partial::merge_all(vec![
        ("a".into(), p1[0].clone()),
        ("b".into(), p1[1].clone()),
    ])
    .unwrap();
    let q = job(Some((2, 3)), Some(other)).run(&mut |_| {}).unwrap();
    let e = Partial::merge_all(vec![("a".into(), p2[0].clone()), ("b".into(), q)]).unwrap_err();
    assert!(
        matches!(root(&e), PartialError::DifferentMeans { .. }),
        "{e}"
    );
    // Other options.
    let mut other_opts = p2[1].clone();
    other_opts.options.tolerance = 1e-6;
    let e = Partial::merge_all(vec![("a".into(), p2[0].clone()), ("b".into(), other_opts)])
        .unwrap_err();
    assert!(matches!(root(&e), PartialError::Options { .. }), "{e}");
    // A feature file is not a partial.
    let e = Partial::read(&path).unwrap_err();
    assert!(
        e.to_string().contains("not a neural-collapse partial"),
        "{e}"
    );
}

fn root(e: &PartialError) -> &PartialError {
    match e {
        PartialError::Context { source, .. } => root(source),
        p => p,
    }
}

fn stream_root(e: &StreamError) -> &StreamError {
    match e {
        StreamError::Context { source, .. } => stream_root(source),
        s => s,
    }
}

#[test]
fn class_sums_push_equals_direct_sums() {
    // Two-method check: ClassSums over uneven batches against a plain loop.
    let mut rng = StdRng::seed_from_u64(6);
    let (n, d) = (1000, 9);
    let x = Array2::from_shape_fn((n, d), |_| rng.gen_range(-3.0f64..3.0));
    let labels: Vec<u32> = (0..n).map(|_| rng.gen_range(0..4u32) * 1_000_000).collect();
    let mut s = ClassSums::new(d);
    let mut at = 0;
    for b in [1usize, 10, 333, 656] {
        s.push(x.slice(ndarray::s![at..at + b, ..]), &labels[at..at + b])
            .unwrap();
        at += b;
    }
    let mut want: BTreeMap<u32, (u64, Vec<f64>)> = BTreeMap::new();
    for i in 0..n {
        let e = want.entry(labels[i]).or_insert((0, vec![0.0; d]));
        e.0 += 1;
        for j in 0..d {
            e.1[j] += x[[i, j]];
        }
    }
    assert_eq!(s.rows(), n as u64);
    assert_eq!(s.max_label(), Some(3_000_000));
    for ((c, cnt, sum), (wc, (wn, ws))) in s.classes().zip(&want) {
        assert_eq!((c, cnt), (*wc, *wn));
        for (a, b) in sum.iter().zip(ws) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Merging is order-independent (bit for bit: partials are sorted by their inputs) and
    /// associative (to rounding): any permutation of the shard partials, and any grouping of
    /// them into two merges, gives the whole-file reports.
    #[test]
    fn merge_is_order_independent_and_associative(
        n in 2u64..9,
        perm_seed in any::<u64>(),
        split_at in 1usize..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = study(dir.path(), 7, 9);
        let scan = FeatureScan::open(&path).unwrap();
        let options = MeasureOptions {
            config: NcConfig { reference: ReferenceChoice::Train, ..NcConfig::default() },
            ..MeasureOptions::default()
        };
        let whole = measure_scan_loaded(&scan, &options).unwrap();
        let popts = PartialOptions::from_measure(&options);
        let src = || vec![Source::open(&path, None, None).unwrap()];
        let p1: Vec<(String, Partial)> = (0..n).map(|i| {
            let job = StatsJob { sources: src(), shard: Some((i, n)), means: None, options: popts.clone(), batch_bytes: 1 << 20 };
            (format!("{i}"), job.run(&mut |_| {}).unwrap())
        }).collect();
        let mut rng = StdRng::seed_from_u64(perm_seed);
        let mut shuffled = p1.clone();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.gen_range(0..=i));
        }
        let means = Partial::merge_all(p1.clone()).unwrap();
        prop_assert_eq!(&Partial::merge_all(shuffled.clone()).unwrap(), &means);
        // (a ⊕ b) ⊕ c: merge a prefix, then the rest.
        let k = split_at.min(shuffled.len() - 1);
        let left = Partial::merge_all(shuffled[..k].to_vec()).unwrap();
        let right = Partial::merge_all(shuffled[k..].to_vec()).unwrap();
        let grouped = Partial::merge_all(vec![("l".into(), left), ("r".into(), right)]).unwrap();
        prop_assert_eq!(grouped.means.len(), means.means.len());
        for (key, s) in &means.means {
            let g = &grouped.means[key];
            for ((c1, n1, a), (c2, n2, b)) in s.classes().zip(g.classes()) {
                prop_assert_eq!((c1, n1), (c2, n2));
                for (x, y) in a.iter().zip(b) {
                    prop_assert!((x - y).abs() <= 1e-12 * x.abs().max(1e-300), "{} vs {}", x, y);
                }
            }
        }
        // Pass 2 against the grouped means, merged in a shuffled order: the whole-file reports.
        let p2: Vec<(String, Partial)> = (0..n).map(|i| {
            let job = StatsJob { sources: src(), shard: Some((i, n)), means: Some(grouped.clone()), options: popts.clone(), batch_bytes: 1 << 20 };
            (format!("{i}"), job.run(&mut |_| {}).unwrap())
        }).collect();
        let mut p2s = p2.clone();
        p2s.reverse();
        let a = Partial::merge_all(p2).unwrap();
        let b = Partial::merge_all(p2s).unwrap();
        prop_assert_eq!(&a, &b);
        assert_same(&reports_of(&a), &whole);
    }
}

#[test]
fn partial_options_label_is_typed_and_written_as_before() {
    // The label column is an enum in memory and the same lowercase string on disk; a value that
    // is neither `label` nor `coarse` is refused instead of read as `label`.
    let o = PartialOptions::from_measure(&MeasureOptions {
        labels: LabelColumn::Coarse,
        ..Default::default()
    });
    let j = serde_json::to_string(&o).unwrap();
    assert!(j.contains(r#""label":"coarse""#), "{j}");
    let back: PartialOptions = serde_json::from_str(&j).unwrap();
    assert_eq!(back, o);
    assert_eq!(back.to_measure().labels, LabelColumn::Coarse);
    let bad = j.replace(r#""label":"coarse""#, r#""label":"fine""#);
    let e = serde_json::from_str::<PartialOptions>(&bad).unwrap_err();
    assert!(e.to_string().contains("fine"), "{e}");
}
