//! Tests of the feature-file module: schema v1 round trips, filters, wide and CSV tables, the
//! pyarrow recipe's output, classifiers, run directories, and one test per validation error.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::{array, Array1, Array2};
use neural_collapse::features::{
    read_classifier, write_classifier, write_features, Classifier, FeatureError, FeatureScan,
    Features, Run,
};
use polars::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Writes a polars frame to Parquet (independently of the crate's writer).
fn write_parquet(path: &Path, mut df: DataFrame) {
    ParquetWriter::new(File::create(path).unwrap())
        .finish(&mut df)
        .unwrap();
}

fn random_features(rng: &mut StdRng, n: usize, d: usize, classes: u32) -> (Array2<f32>, Vec<u32>) {
    let x = Array2::from_shape_fn((n, d), |_| {
        rng.gen_range(-3.0f32..3.0) * 1e-3f32.powi(rng.gen_range(0..3))
    });
    let labels = (0..n).map(|_| rng.gen_range(0..classes)).collect();
    (x, labels)
}

/// Several checkpoints with a mix of optional columns.
fn sample_set() -> Vec<Features> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut out = Vec::new();
    for (k, epoch) in [0u32, 5, 10].into_iter().enumerate() {
        for split in ["train", "test"] {
            let n = 6 + k + (split == "test") as usize;
            let (x, labels) = random_features(&mut rng, n, 4, 3);
            let mut f = Features::new(x, labels).with_epoch(epoch).with_split(split);
            if split == "train" {
                f = f.with_sample((0..n as u32).map(|i| 100 + 2 * i).collect());
            }
            if (epoch, split) != (10, "test") {
                f = f.with_pred((0..n as u32).map(|i| (i + epoch) % 3).collect());
            }
            if epoch == 5 {
                f = f.with_coarse((0..n as u32).map(|i| i % 2).collect());
            }
            out.push(f);
        }
    }
    out
}

/// What loading `f` back from `features-<layer>` must give.
fn expected(f: &Features, layer: &str) -> Features {
    let mut e = f.clone();
    if e.sample.is_none() {
        e.sample = Some((0..f.n_samples() as u32).collect());
    }
    e.layer = Some(layer.to_string());
    e
}

#[test]
fn round_trip_is_exact_for_every_checkpoint() {
    let dir = tmp();
    let path = dir.path().join("features-fc2.parquet");
    let set = sample_set();
    write_features(&path, &set).unwrap();

    let scan = FeatureScan::open(&path).unwrap();
    assert_eq!(scan.layer(), "fc2");
    assert_eq!(scan.dim(), Some(4));
    assert!(!scan.is_wide());
    let want: Vec<(u32, String)> = [0, 5, 10]
        .into_iter()
        .flat_map(|e| [(e, "test".to_string()), (e, "train".to_string())])
        .collect();
    assert_eq!(scan.checkpoints().unwrap(), want);
    assert_eq!(scan.epochs().unwrap(), vec![0, 5, 10]);
    assert_eq!(scan.splits().unwrap(), vec!["test", "train"]);

    for f in &set {
        let got = scan
            .epoch(f.epoch.unwrap())
            .split(f.split.clone().unwrap())
            .load()
            .unwrap();
        assert_eq!(got, expected(f, "fc2"));
    }
}

#[test]
fn filters_select_the_right_rows_in_file_order() {
    let dir = tmp();
    let path = dir.path().join("features-conv.parquet");
    let set = sample_set();
    write_features(&path, &set).unwrap();
    let scan = FeatureScan::open(&path).unwrap();

    // Epoch only: train then test rows of epoch 5, in file order.
    let got = scan.epoch(5).load().unwrap();
    let (a, b) = (&set[2], &set[3]);
    assert_eq!(got.epoch, Some(5));
    assert_eq!(got.split, None);
    assert_eq!(got.n_samples(), a.n_samples() + b.n_samples());
    let want_x = ndarray::concatenate(ndarray::Axis(0), &[a.x.view(), b.x.view()]).unwrap();
    assert_eq!(got.x, want_x);
    assert_eq!(got.labels, [a.labels.clone(), b.labels.clone()].concat());
    assert_eq!(
        got.coarse,
        Some([a.coarse.clone().unwrap(), b.coarse.clone().unwrap()].concat())
    );

    // Split only (minus epoch 5, the only one with coarse labels): train sets of epochs 0 and 10.
    let got = scan
        .split("train")
        .filter(col("epoch").neq(lit(5u32)))
        .load()
        .unwrap();
    let trains: Vec<&Features> = [&set[0], &set[4]].into();
    assert_eq!(got.split.as_deref(), Some("train"));
    assert_eq!(got.epoch, None);
    assert_eq!(
        got.labels,
        trains
            .iter()
            .flat_map(|f| f.labels.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        got.sample,
        Some(
            trains
                .iter()
                .flat_map(|f| f.sample.clone().unwrap())
                .collect()
        )
    );
    assert_eq!(
        got.pred,
        Some(
            trains
                .iter()
                .flat_map(|f| f.pred.clone().unwrap())
                .collect()
        )
    );
    // The coarse column exists in the file but is entirely null over this selection.
    assert_eq!(got.coarse, None);

    // A custom predicate on top.
    let got = scan
        .epoch(0)
        .split("train")
        .filter(col("label").lt(lit(2u32)))
        .load()
        .unwrap();
    let f = &set[0];
    let keep: Vec<usize> = (0..f.n_samples()).filter(|&i| f.labels[i] < 2).collect();
    assert_eq!(
        got.labels,
        keep.iter().map(|&i| f.labels[i]).collect::<Vec<_>>()
    );
    assert_eq!(got.x, f.x.select(ndarray::Axis(0), &keep));
    assert_eq!(
        got.sample,
        Some(
            keep.iter()
                .map(|&i| f.sample.as_ref().unwrap()[i])
                .collect()
        )
    );

    // Everything: coarse is stored at epoch 5 only, so it is partly null over the whole file.
    let err = scan.load().unwrap_err();
    assert!(
        matches!(&err, FeatureError::NullValue { column, row: Some(0), .. } if column == "coarse"),
        "{err}"
    );
    let all = scan.query().filter(col("epoch").neq(lit(5u32))).load();
    // Without epoch 5, pred is still partly null (absent at epoch 10, test).
    assert!(matches!(all.unwrap_err(), FeatureError::NullValue { .. }));
    let all = scan.split("train").load().unwrap_err();
    assert!(matches!(all, FeatureError::NullValue { .. }));
    let all = scan
        .query()
        .filter(col("epoch").lt(lit(10u32)))
        .filter(col("epoch").gt(lit(0u32)))
        .load()
        .unwrap();
    assert_eq!(all.n_samples(), set[2].n_samples() + set[3].n_samples());
    assert_eq!((all.epoch, all.split), (Some(5), None));
}

#[test]
fn partly_null_optional_column_is_an_error() {
    let dir = tmp();
    let path = dir.path().join("features-fc2.parquet");
    write_features(&path, &sample_set()).unwrap();
    let scan = FeatureScan::open(&path).unwrap();
    // coarse is stored at epoch 5 only; selecting epochs 0 and 5 together mixes nulls and values.
    let err = scan
        .split("train")
        .filter(col("epoch").lt_eq(lit(5u32)))
        .load()
        .unwrap_err();
    match &err {
        FeatureError::NullValue { column, row, .. } => {
            assert_eq!(column, "coarse");
            assert_eq!(*row, Some(0));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("coarse"));
}

#[test]
fn no_rows_names_the_filter_and_the_checkpoints() {
    let dir = tmp();
    let path = dir.path().join("features-fc2.parquet");
    write_features(&path, &sample_set()).unwrap();
    let scan = FeatureScan::open(&path).unwrap();
    let err = scan.epoch(7).split("train").load().unwrap_err();
    match &err {
        FeatureError::NoRows {
            filter, available, ..
        } => {
            assert!(filter.contains("epoch = 7"), "{filter}");
            assert!(filter.contains("train"), "{filter}");
            assert!(available.contains("(5, test)"), "{available}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let err = scan.epoch(5).split("validation").load().unwrap_err();
    assert!(matches!(err, FeatureError::NoRows { .. }), "{err}");
    assert!(err.to_string().contains("validation"));
}

/// Wide versions (Parquet and CSV) of one long table.
#[test]
fn wide_parquet_and_csv_agree_with_the_long_form() {
    let dir = tmp();
    let n = 150;
    let d = 3;
    // Exactly representable values; x_2 is 0 for the first 120 rows, then fractional, so a
    // CSV reader that infers types from the first rows would take it for an integer column.
    let xv = |r: usize, j: usize| -> f32 {
        match j {
            0 => r as f32 / 8.0 - 5.0,
            1 => (r % 7) as f32,
            _ => {
                if r < 120 {
                    0.0
                } else {
                    r as f32 * 0.5 + 0.25
                }
            }
        }
    };
    let epoch: Vec<u32> = (0..n).map(|r| if r < 100 { 1 } else { 2 }).collect();
    let split: Vec<&str> = (0..n)
        .map(|r| if r % 2 == 0 { "train" } else { "test" })
        .collect();
    let label: Vec<u32> = (0..n as u32).map(|r| r % 4).collect();
    let sample: Vec<u32> = (0..n as u32).collect();

    // Long form, written by the crate.
    let long_path = dir.path().join("features-long.parquet");
    let mut set = Vec::new();
    for e in [1u32, 2] {
        for s in ["train", "test"] {
            let rows: Vec<usize> = (0..n).filter(|&r| epoch[r] == e && split[r] == s).collect();
            let x = Array2::from_shape_fn((rows.len(), d), |(i, j)| xv(rows[i], j));
            set.push(
                Features::new(x, rows.iter().map(|&r| label[r]).collect())
                    .with_epoch(e)
                    .with_split(s)
                    .with_sample(rows.iter().map(|&r| sample[r]).collect()),
            );
        }
    }
    write_features(&long_path, &set).unwrap();

    // Wide Parquet, x_j as f64, labels as i64, written by polars directly.
    let wide_pq = dir.path().join("features-wide.parquet");
    let mut cols = vec![
        Column::new(
            "epoch".into(),
            epoch.iter().map(|&e| e as i64).collect::<Vec<_>>(),
        ),
        Column::new("split".into(), split.clone()),
        Column::new("sample".into(), sample.clone()),
        Column::new(
            "label".into(),
            label.iter().map(|&l| l as i64).collect::<Vec<_>>(),
        ),
    ];
    // Columns deliberately out of order.
    for j in [2usize, 0, 1] {
        cols.push(Column::new(
            format!("x_{j}").into(),
            (0..n).map(|r| xv(r, j) as f64).collect::<Vec<_>>(),
        ));
    }
    write_parquet(&wide_pq, DataFrame::new(cols).unwrap());

    // Wide CSV, written by hand.
    let csv = dir.path().join("features-wide.csv");
    let mut text = String::from("epoch,split,sample,label,x_0,x_1,x_2\n");
    for r in 0..n {
        text.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            epoch[r],
            split[r],
            sample[r],
            label[r],
            xv(r, 0),
            xv(r, 1),
            xv(r, 2)
        ));
    }
    std::fs::write(&csv, text).unwrap();

    let long = FeatureScan::open(&long_path).unwrap();
    let wide = FeatureScan::open(&wide_pq).unwrap();
    let csv = FeatureScan::open(&csv).unwrap();
    assert!(wide.is_wide() && csv.is_wide());
    assert_eq!(wide.dim(), Some(3));
    assert_eq!(csv.layer(), "wide");
    for scan in [&wide, &csv] {
        assert_eq!(scan.checkpoints().unwrap(), long.checkpoints().unwrap());
    }
    for e in [1u32, 2] {
        for s in ["train", "test"] {
            let mut want = long.epoch(e).split(s).load().unwrap();
            want.layer = Some("wide".into());
            assert_eq!(wide.epoch(e).split(s).load().unwrap(), want);
            assert_eq!(csv.epoch(e).split(s).load().unwrap(), want);
        }
    }
    // And against values computed here.
    let f = csv.epoch(2).split("train").load().unwrap();
    let rows: Vec<usize> = (100..n).filter(|r| r % 2 == 0).collect();
    assert_eq!(
        f.x,
        Array2::from_shape_fn((rows.len(), d), |(i, j)| xv(rows[i], j))
    );
    assert_eq!(f.x[[rows.len() - 1, 2]], 148.0 * 0.5 + 0.25);
}

#[test]
fn list_and_array_inputs_agree() {
    let dir = tmp();
    let rows: Vec<Vec<f64>> = (0..5).map(|r| vec![r as f64, -0.5 * r as f64]).collect();
    let base = |x: Column| {
        DataFrame::new(vec![
            Column::new("epoch".into(), vec![3u32; 5]),
            Column::new("split".into(), vec!["train"; 5]),
            Column::new("sample".into(), (0..5u32).collect::<Vec<_>>()),
            Column::new("label".into(), vec![0u32, 1, 0, 1, 1]),
            x,
        ])
        .unwrap()
    };
    let list = Series::new(
        "x".into(),
        rows.iter()
            .map(|r| Series::new("".into(), r.clone()))
            .collect::<Vec<_>>(),
    );
    assert!(matches!(list.dtype(), DataType::List(_)));
    let array_f64 = list
        .cast(&DataType::Array(Box::new(DataType::Float64), 2))
        .unwrap();
    let array_f32 = list
        .cast(&DataType::Array(Box::new(DataType::Float32), 2))
        .unwrap();
    let mut loaded = Vec::new();
    for (name, s) in [("list", list), ("a64", array_f64), ("a32", array_f32)] {
        let p = dir.path().join(format!("features-{name}.parquet"));
        write_parquet(&p, base(s.into_column()));
        let mut f = FeatureScan::open(&p).unwrap().load().unwrap();
        f.layer = None;
        loaded.push(f);
    }
    let want = Features::new(
        Array2::from_shape_fn((5, 2), |(r, j)| rows[r][j] as f32),
        vec![0, 1, 0, 1, 1],
    )
    .with_epoch(3)
    .with_split("train")
    .with_sample((0..5).collect());
    for f in &loaded {
        assert_eq!(f, &want);
    }
}

#[test]
fn reads_the_pyarrow_recipe_output() {
    let scan = FeatureScan::open(fixture("pyarrow-v1.parquet")).unwrap();
    assert_eq!(scan.dim(), Some(3));
    assert_eq!(
        scan.checkpoints().unwrap(),
        vec![
            (0, "test".into()),
            (0, "train".into()),
            (3, "test".into()),
            (3, "train".into())
        ]
    );
    // Global rows: epoch 0 train 0..3, epoch 0 test 3..6, epoch 3 train 6..9, epoch 3 test 9..12.
    for (epoch, split, first) in [
        (0u32, "train", 0u32),
        (0, "test", 3),
        (3, "train", 6),
        (3, "test", 9),
    ] {
        let f = scan.epoch(epoch).split(split).load().unwrap();
        let r: Vec<u32> = (first..first + 3).collect();
        let want = Features {
            x: Array2::from_shape_fn((3, 3), |(i, j)| r[i] as f32 + j as f32 / 4.0),
            labels: r.iter().map(|r| r % 3).collect(),
            coarse: None,
            pred: Some(r.iter().map(|r| (r + 1) % 3).collect()),
            labels_from: neural_collapse::features::LabelColumn::Label,
            sample: Some(vec![10, 11, 12]),
            epoch: Some(epoch),
            split: Some(split.into()),
            layer: Some("pyarrow-v1".into()),
        };
        assert_eq!(f, want);
    }
}

#[test]
fn reads_categorical_splits_int64_labels_and_f64_lists() {
    // pyarrow-v1-dict.parquet: split dictionary-encoded, ints as int64, x as list<double>.
    let plain = FeatureScan::open(fixture("pyarrow-v1.parquet")).unwrap();
    let dict = FeatureScan::open(fixture("pyarrow-v1-dict.parquet")).unwrap();
    assert_eq!(dict.dim(), None);
    assert_eq!(dict.checkpoints().unwrap(), plain.checkpoints().unwrap());
    for (e, s) in plain.checkpoints().unwrap() {
        let mut want = plain.epoch(e).split(s.clone()).load().unwrap();
        want.pred = None;
        want.layer = Some("pyarrow-v1-dict".into());
        assert_eq!(dict.epoch(e).split(s).load().unwrap(), want);
    }
}

#[test]
fn the_documented_recipe_matches_the_script() {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/features.rs"))
            .unwrap();
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/export_pytorch_features.py"),
    )
    .unwrap();
    let doc: Vec<&str> = src
        .lines()
        .filter_map(|l| l.strip_prefix("//! "))
        .skip_while(|l| !l.starts_with("def features_table"))
        .take_while(|l| !l.starts_with("    return"))
        .collect();
    assert!(doc.len() > 5, "recipe not found in the module doc");
    let body: Vec<&str> = script
        .lines()
        .skip_while(|l| !l.starts_with("def features_table"))
        .take(doc.len())
        .collect();
    assert_eq!(doc, body);
}

// ---------------------------------------------------------------------------------------------
// Classifiers and runs.

fn classifiers() -> Vec<(u32, Classifier)> {
    let mut rng = StdRng::seed_from_u64(3);
    [0u32, 5]
        .into_iter()
        .map(|e| {
            let w = Array2::from_shape_fn((3, 4), |_| rng.gen_range(-1.0..1.0));
            let b = Array1::from_shape_fn(3, |_| rng.gen_range(-1.0..1.0));
            (e, Classifier { w, b })
        })
        .collect()
}

#[test]
fn classifier_round_trip_is_exact() {
    let dir = tmp();
    let path = dir.path().join("classifier.parquet");
    let cs = classifiers();
    write_classifier(&path, &cs).unwrap();
    for (e, c) in &cs {
        assert_eq!(&read_classifier(&path, *e).unwrap(), c);
    }
    let err = read_classifier(&path, 4).unwrap_err();
    assert!(matches!(err, FeatureError::NoRows { .. }), "{err}");
    assert!(err.to_string().contains("epoch = 4"));
}

fn classifier_frame(classes: Vec<u32>) -> DataFrame {
    let k = classes.len();
    let w = Series::new(
        "w".into(),
        classes
            .iter()
            .map(|&c| Series::new("".into(), vec![c as f32, 10.0 + c as f32]))
            .collect::<Vec<_>>(),
    )
    .cast(&DataType::Array(Box::new(DataType::Float32), 2))
    .unwrap();
    DataFrame::new(vec![
        Column::new("epoch".into(), vec![1u32; k]),
        Column::new("class".into(), classes.clone()),
        Column::new(
            "bias".into(),
            classes.iter().map(|&c| -(c as f32)).collect::<Vec<_>>(),
        ),
        w.into_column(),
    ])
    .unwrap()
}

#[test]
fn classifier_rows_are_sorted_by_class_and_checked() {
    let dir = tmp();
    let path = dir.path().join("classifier.parquet");
    write_parquet(&path, classifier_frame(vec![2, 0, 1]));
    let c = read_classifier(&path, 1).unwrap();
    assert_eq!(c.w, array![[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]]);
    assert_eq!(c.b, array![0.0, -1.0, -2.0]);

    write_parquet(&path, classifier_frame(vec![2, 0, 3]));
    let err = read_classifier(&path, 1).unwrap_err();
    match &err {
        FeatureError::MissingClass { class, epoch, .. } => assert_eq!((*class, *epoch), (1, 1)),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("class 1"));

    write_parquet(&path, classifier_frame(vec![1, 0, 1]));
    let err = read_classifier(&path, 1).unwrap_err();
    assert!(
        matches!(err, FeatureError::DuplicateClass { class: 1, .. }),
        "{err}"
    );
}

#[test]
fn run_directory_lists_layers_and_reads_everything() {
    let dir = tmp();
    let set = sample_set();
    write_features(dir.path().join("features-fc1.parquet"), &set[..2]).unwrap();
    write_features(dir.path().join("features-fc2.parquet"), &set).unwrap();
    write_classifier(dir.path().join("classifier.parquet"), &classifiers()).unwrap();
    std::fs::write(
        dir.path().join("run.json"),
        r#"{"dataset": "mnist", "seed": 4, "layers": ["fc2", "fc1"]}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a feature file").unwrap();

    let run = Run::open(dir.path()).unwrap();
    assert_eq!(run.layers(), vec!["fc2", "fc1"]);
    assert_eq!(run.meta().unwrap()["seed"], 4);
    assert_eq!(
        run.name(),
        dir.path().file_name().unwrap().to_string_lossy()
    );
    let f = run
        .features("fc1")
        .unwrap()
        .epoch(0)
        .split("test")
        .load()
        .unwrap();
    assert_eq!(f, expected(&set[1], "fc1"));
    assert_eq!(run.classifier(5).unwrap(), classifiers()[1].1);

    let err = run.features("fc3").unwrap_err();
    assert!(matches!(err, FeatureError::UnknownLayer { .. }), "{err}");
    assert!(err.to_string().contains("fc3") && err.to_string().contains("fc1"));

    // Without run.json, layers come alphabetically.
    std::fs::remove_file(dir.path().join("run.json")).unwrap();
    let run = Run::open(dir.path()).unwrap();
    assert_eq!(run.layers(), vec!["fc1", "fc2"]);
    assert!(run.meta().is_none());

    std::fs::write(dir.path().join("run.json"), "{not json").unwrap();
    assert!(matches!(
        Run::open(dir.path()).unwrap_err(),
        FeatureError::Json { .. }
    ));
    assert!(matches!(
        Run::open(dir.path().join("absent")).unwrap_err(),
        FeatureError::Io { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Validation errors, one per bad input.

/// A valid long table of 4 rows (epoch 0: rows 0–1, epoch 1: rows 2–3), with `edit` applied.
fn table_with(edit: impl FnOnce(&mut Vec<Column>)) -> DataFrame {
    let x = Series::new(
        "x".into(),
        (0..4)
            .map(|r| Series::new("".into(), vec![r as f32, 1.0]))
            .collect::<Vec<_>>(),
    )
    .cast(&DataType::Array(Box::new(DataType::Float32), 2))
    .unwrap();
    let mut cols = vec![
        Column::new("epoch".into(), vec![0u32, 0, 1, 1]),
        Column::new("split".into(), vec!["train"; 4]),
        Column::new("sample".into(), vec![0u32, 1, 0, 1]),
        Column::new("label".into(), vec![0u32, 1, 0, 1]),
        x.into_column(),
    ];
    edit(&mut cols);
    DataFrame::new(cols).unwrap()
}

fn replace(cols: &mut [Column], c: Column) {
    let i = cols.iter().position(|k| k.name() == c.name()).unwrap();
    cols[i] = c;
}

fn bad_file(dir: &Path, df: DataFrame) -> PathBuf {
    let p = dir.join("features-bad.parquet");
    write_parquet(&p, df);
    p
}

#[test]
fn the_valid_base_table_loads() {
    let dir = tmp();
    let p = bad_file(dir.path(), table_with(|_| {}));
    let f = FeatureScan::open(&p).unwrap().epoch(1).load().unwrap();
    assert_eq!(f.x, array![[2.0f32, 1.0], [3.0, 1.0]]);
}

#[test]
fn missing_columns() {
    let dir = tmp();
    for name in ["label", "epoch", "split", "x"] {
        let p = bad_file(dir.path(), table_with(|c| c.retain(|k| k.name() != name)));
        let err = FeatureScan::open(&p).unwrap_err();
        match &err {
            FeatureError::MissingColumn { column, .. } => assert!(column.starts_with(name)),
            other => panic!("{name}: unexpected {other:?}"),
        }
        assert!(err.to_string().contains(&format!("`{name}")), "{err}");
        assert!(err.to_string().contains("features-bad.parquet"), "{err}");
    }
}

#[test]
fn ill_typed_columns() {
    let dir = tmp();
    let cases: Vec<(&str, Column)> = vec![
        (
            "label",
            Column::new("label".into(), vec!["a", "b", "c", "d"]),
        ),
        ("split", Column::new("split".into(), vec![1u32, 1, 1, 1])),
        ("x", Column::new("x".into(), vec!["1,2"; 4])),
        ("pred", Column::new("pred".into(), vec![true; 4])),
    ];
    for (name, c) in cases {
        let p = bad_file(
            dir.path(),
            table_with(|cols| {
                if name == "pred" {
                    cols.push(c);
                } else {
                    replace(cols, c);
                }
            }),
        );
        let err = FeatureScan::open(&p).unwrap_err();
        match &err {
            FeatureError::ColumnType { column, .. } => assert_eq!(column, name),
            other => panic!("{name}: unexpected {other:?}"),
        }
        assert!(err.to_string().contains(&format!("`{name}`")), "{err}");
    }
}

#[test]
fn ragged_feature_vectors() {
    let dir = tmp();
    let lens = [2usize, 2, 3, 2];
    let x = Series::new(
        "x".into(),
        lens.iter()
            .map(|&l| Series::new("".into(), vec![0.5f32; l]))
            .collect::<Vec<_>>(),
    );
    let p = bad_file(dir.path(), table_with(|c| replace(c, x.into_column())));
    let scan = FeatureScan::open(&p).unwrap();
    // Epoch 0 alone is fine.
    assert_eq!(scan.epoch(0).load().unwrap().dim(), 2);
    let err = scan.load().unwrap_err();
    match &err {
        FeatureError::RaggedFeatures {
            column,
            row,
            len,
            expected,
            ..
        } => {
            assert_eq!((column.as_str(), *row, *len, *expected), ("x", 2, 3, 2));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("`x`"));
}

#[test]
fn empty_feature_vectors() {
    let dir = tmp();
    let x = Series::new(
        "x".into(),
        (0..4)
            .map(|_| Series::new_empty("".into(), &DataType::Float32))
            .collect::<Vec<_>>(),
    );
    let p = bad_file(dir.path(), table_with(|c| replace(c, x.into_column())));
    let err = FeatureScan::open(&p).unwrap().load().unwrap_err();
    assert!(
        matches!(&err, FeatureError::EmptyFeatures { column, .. } if column == "x"),
        "{err}"
    );
    assert!(err.to_string().contains("`x`"));

    // The writer refuses d = 0 too.
    let f = Features::new(Array2::zeros((2, 0)), vec![0, 1])
        .with_epoch(0)
        .with_split("train");
    let err = write_features(dir.path().join("features-e.parquet"), &[f]).unwrap_err();
    assert!(matches!(err, FeatureError::EmptyFeatures { .. }), "{err}");
}

#[test]
fn null_values() {
    let dir = tmp();
    // A null label at file row 3.
    let p = bad_file(
        dir.path(),
        table_with(|c| {
            replace(
                c,
                Column::new("label".into(), vec![Some(0u32), Some(1), Some(0), None]),
            )
        }),
    );
    let scan = FeatureScan::open(&p).unwrap();
    assert!(scan.epoch(0).load().is_ok());
    let err = scan.epoch(1).load().unwrap_err();
    match &err {
        FeatureError::NullValue { column, row, .. } => {
            assert_eq!((column.as_str(), *row), ("label", Some(3)))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().contains("`label`") && err.to_string().contains("row 3"),
        "{err}"
    );

    // A null feature vector at row 2, and a null component at row 1.
    let vecs: Vec<Option<Series>> = (0..4)
        .map(|r| (r != 2).then(|| Series::new("".into(), vec![r as f32, 1.0])))
        .collect();
    let x = Series::new("x".into(), vecs)
        .cast(&DataType::Array(Box::new(DataType::Float32), 2))
        .unwrap();
    let p = bad_file(dir.path(), table_with(|c| replace(c, x.into_column())));
    let err = FeatureScan::open(&p).unwrap().epoch(1).load().unwrap_err();
    assert!(
        matches!(&err, FeatureError::NullValue { column, row: Some(2), .. } if column == "x"),
        "{err}"
    );

    let vecs: Vec<Series> = (0..4)
        .map(|r| Series::new("".into(), vec![Some(r as f32), (r != 1).then_some(1.0)]))
        .collect();
    let x = Series::new("x".into(), vecs);
    let p = bad_file(dir.path(), table_with(|c| replace(c, x.into_column())));
    let err = FeatureScan::open(&p).unwrap().load().unwrap_err();
    assert!(
        matches!(&err, FeatureError::NullValue { column, row: Some(1), .. } if column == "x"),
        "{err}"
    );

    // A null split.
    let p = bad_file(
        dir.path(),
        table_with(|c| {
            replace(
                c,
                Column::new(
                    "split".into(),
                    vec![Some("train"), None, Some("train"), Some("train")],
                ),
            )
        }),
    );
    let err = FeatureScan::open(&p).unwrap().epoch(0).load().unwrap_err();
    assert!(
        matches!(&err, FeatureError::NullValue { column, row: Some(1), .. } if column == "split"),
        "{err}"
    );
}

#[test]
fn non_finite_features_name_the_row() {
    let dir = tmp();
    let x = Series::new(
        "x".into(),
        (0..4)
            .map(|r| {
                Series::new(
                    "".into(),
                    vec![r as f32, if r == 3 { f32::NAN } else { 1.0 }],
                )
            })
            .collect::<Vec<_>>(),
    )
    .cast(&DataType::Array(Box::new(DataType::Float32), 2))
    .unwrap();
    let p = bad_file(dir.path(), table_with(|c| replace(c, x.into_column())));
    let scan = FeatureScan::open(&p).unwrap();
    assert!(scan.epoch(0).load().is_ok());
    let err = scan.epoch(1).load().unwrap_err();
    match &err {
        FeatureError::NonFinite {
            column,
            row,
            component,
            value,
            ..
        } => {
            assert_eq!((column.as_str(), *row, *component), ("x", 3, 1));
            assert!(value.is_nan());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("row 3"), "{err}");

    // Infinity in a wide table names the x_<j> column.
    let p = dir.path().join("features-wide.parquet");
    write_parquet(
        &p,
        DataFrame::new(vec![
            Column::new("epoch".into(), vec![0u32; 3]),
            Column::new("split".into(), vec!["test"; 3]),
            Column::new("label".into(), vec![0u32; 3]),
            Column::new("x_0".into(), vec![1.0f64, 2.0, 3.0]),
            Column::new("x_1".into(), vec![1.0f64, f64::NEG_INFINITY, 3.0]),
        ])
        .unwrap(),
    );
    let err = FeatureScan::open(&p).unwrap().load().unwrap_err();
    assert!(
        matches!(&err, FeatureError::NonFinite { column, row: 1, component: 1, .. } if column == "x_1"),
        "{err}"
    );
}

#[test]
fn negative_and_non_integral_labels() {
    let dir = tmp();
    let p = bad_file(
        dir.path(),
        table_with(|c| replace(c, Column::new("label".into(), vec![0i64, 1, -1, 1]))),
    );
    let err = FeatureScan::open(&p).unwrap().load().unwrap_err();
    match &err {
        FeatureError::InvalidInteger {
            column, row, value, ..
        } => {
            assert_eq!(
                (column.as_str(), *row, value.as_str()),
                ("label", Some(2), "-1")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().contains("`label`") && err.to_string().contains("-1"),
        "{err}"
    );

    let p = bad_file(
        dir.path(),
        table_with(|c| replace(c, Column::new("label".into(), vec![0.0f64, 1.0, 2.0, 1.5]))),
    );
    let scan = FeatureScan::open(&p).unwrap();
    // Integral floats are accepted.
    assert_eq!(scan.epoch(0).load().unwrap().labels, vec![0, 1]);
    let err = scan.load().unwrap_err();
    assert!(
        matches!(&err, FeatureError::InvalidInteger { column, row: Some(3), value, .. } if column == "label" && value == "1.5"),
        "{err}"
    );
    assert!(err.to_string().contains("1.5"));

    // Too large for u32, in `sample`.
    let p = bad_file(
        dir.path(),
        table_with(|c| replace(c, Column::new("sample".into(), vec![0u64, 1, 1 << 40, 1]))),
    );
    let err = FeatureScan::open(&p).unwrap().load().unwrap_err();
    assert!(
        matches!(&err, FeatureError::InvalidInteger { column, .. } if column == "sample"),
        "{err}"
    );

    // A negative epoch breaks checkpoints().
    let p = bad_file(
        dir.path(),
        table_with(|c| replace(c, Column::new("epoch".into(), vec![0i32, 0, -3, -3]))),
    );
    let err = FeatureScan::open(&p).unwrap().checkpoints().unwrap_err();
    assert!(
        matches!(&err, FeatureError::InvalidInteger { column, .. } if column == "epoch"),
        "{err}"
    );
}

#[test]
fn wide_columns_must_be_contiguous() {
    let dir = tmp();
    let p = dir.path().join("features-gap.parquet");
    write_parquet(
        &p,
        DataFrame::new(vec![
            Column::new("epoch".into(), vec![0u32; 2]),
            Column::new("split".into(), vec!["train"; 2]),
            Column::new("label".into(), vec![0u32; 2]),
            Column::new("x_0".into(), vec![1.0f32; 2]),
            Column::new("x_1".into(), vec![1.0f32; 2]),
            Column::new("x_3".into(), vec![1.0f32; 2]),
        ])
        .unwrap(),
    );
    let err = FeatureScan::open(&p).unwrap_err();
    match &err {
        FeatureError::WideColumns {
            missing,
            found,
            largest,
            ..
        } => {
            assert_eq!((missing.as_str(), *found, *largest), ("x_2", 3, 3));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("x_2"));

    // The same in CSV, starting at x_1.
    let csv = dir.path().join("features-gap.csv");
    std::fs::File::create(&csv)
        .unwrap()
        .write_all(b"epoch,split,label,x_1,x_2\n0,train,0,1.0,2.0\n")
        .unwrap();
    let err = FeatureScan::open(&csv).unwrap_err();
    assert!(
        matches!(&err, FeatureError::WideColumns { missing, .. } if missing == "x_0"),
        "{err}"
    );
}

#[test]
fn csv_errors_name_file_rows() {
    let dir = tmp();
    let csv = dir.path().join("features-l1.csv");
    std::fs::write(
        &csv,
        "epoch,split,label,x_0\n0,train,0,1.5\n0,train,2.5,1.0\n0,train,1,nan\n",
    )
    .unwrap();
    let scan = FeatureScan::open(&csv).unwrap();
    assert_eq!(scan.layer(), "l1");
    let err = scan.load().unwrap_err();
    assert!(
        matches!(&err, FeatureError::InvalidInteger { column, row: Some(1), value, .. } if column == "label" && value == "2.5"),
        "{err}"
    );
    // Skipping the bad label row reaches the NaN at file row 2.
    let err = scan
        .query()
        .filter(col("label").neq(lit(2.5)))
        .load()
        .unwrap_err();
    assert!(
        matches!(&err, FeatureError::NonFinite { column, row: 2, .. } if column == "x_0"),
        "{err}"
    );
}

#[test]
fn unsupported_and_missing_files() {
    let dir = tmp();
    let p = dir.path().join("features-x.json");
    std::fs::write(&p, "{}").unwrap();
    let err = FeatureScan::open(&p).unwrap_err();
    assert!(
        matches!(err, FeatureError::UnsupportedFormat { .. }),
        "{err}"
    );
    let err = FeatureScan::open(dir.path().join("features-absent.parquet")).unwrap_err();
    assert!(matches!(err, FeatureError::Io { .. }), "{err}");
    assert!(err.to_string().contains("features-absent.parquet"));
}

#[test]
fn writer_checks_its_input() {
    let dir = tmp();
    let p = dir.path().join("features-w.parquet");
    let ok = Features::new(array![[1.0f32, 2.0]], vec![0])
        .with_epoch(0)
        .with_split("train");
    let cases = vec![
        Features::new(array![[1.0f32, 2.0]], vec![0]).with_split("train"),
        Features::new(array![[1.0f32, 2.0]], vec![0]).with_epoch(1),
        Features::new(array![[1.0f32, 2.0]], vec![0, 1])
            .with_epoch(1)
            .with_split("test"),
        Features::new(array![[1.0f32, 2.0, 3.0]], vec![0])
            .with_epoch(1)
            .with_split("test"),
        ok.clone().with_pred(vec![]),
    ];
    for bad in cases {
        let err = write_features(&p, &[ok.clone(), bad.clone()]).unwrap_err();
        assert!(
            matches!(err, FeatureError::InvalidInput { index: 1, .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(matches!(
        write_features(&p, &[]).unwrap_err(),
        FeatureError::InvalidInput { .. }
    ));
    assert!(matches!(
        write_features(dir.path().join("f.csv"), &[ok]).unwrap_err(),
        FeatureError::UnsupportedFormat { .. }
    ));
}
