//! Catalogue of bad or unusual inputs to the command line (issue 14): every bad input gives
//! exit code 2 and exactly one line on stderr naming the file, column or value at fault; every
//! valid unusual input gives the same numbers as an independent computation.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ndarray::Array2;
use neural_collapse::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// Asserts exit code 2 and exactly one non-empty stderr line containing every `needle`; returns it.
fn one_line_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {err:?}");
    assert!(err.ends_with('\n') && !lines[0].trim().is_empty());
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {:?}", lines[0]);
    }
    lines[0].to_string()
}

fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Gaussian classes whose spread shrinks with the epoch; `pred` is the label, wrong on every 7th.
fn gauss(c: usize, d: usize, per: usize, epoch: u32, split: &str, seed: u64) -> Features {
    let mut rng = StdRng::seed_from_u64(seed);
    let labels: Vec<u32> = (0..c * per).map(|i| (i % c) as u32).collect();
    let spread = 1.0 / (1.0 + epoch as f32);
    let x = Array2::from_shape_fn((c * per, d), |(i, j)| {
        ((labels[i] as usize * 5 + j * 3) % 7) as f32 - 3.0
            + spread * rng.sample::<f32, _>(StandardNormal)
    });
    Features::new(x, labels).with_epoch(epoch).with_split(split)
}

/// Two epochs × (train, test) of 3 classes in 4 dimensions.
fn run_features() -> Vec<Features> {
    let mut all = vec![];
    for (k, e) in [0u32, 5].into_iter().enumerate() {
        all.push(gauss(3, 4, 12, e, "train", 100 + k as u64));
        all.push(gauss(3, 4, 6, e, "test", 200 + k as u64));
    }
    all
}

fn write_at(path: &Path, features: &[Features]) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_features(path, features).unwrap();
    path.to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// Row 1: a Parquet file inside a folder named `key=value` is read for what it holds.

#[test]
fn hive_style_folder_names_do_not_change_or_break_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let all = run_features();
    let plain = write_at(&tmp.path().join("plain/features-fc.parquet"), &all);
    let reference = ok_stdout(&run(&[
        "metrics",
        plain.to_str().unwrap(),
        "--format",
        "json",
    ]));
    let ref_rows: Vec<serde_json::Value> = serde_json::from_str(&reference).unwrap();
    assert_eq!(ref_rows.len(), 4);
    for folder in [
        "split=test",
        "epoch=7",
        "label=1",
        "run=abc",
        "date=2024-01-01",
        "a=1/b=x",
    ] {
        let path = write_at(&tmp.path().join(folder).join("features-fc.parquet"), &all);
        // The library: every value comes from the file.
        let scan = FeatureScan::open(&path).unwrap();
        assert_eq!(
            scan.checkpoints().unwrap(),
            vec![
                (0, "test".to_string()),
                (0, "train".to_string()),
                (5, "test".to_string()),
                (5, "train".to_string())
            ],
            "{folder}"
        );
        let cols = scan.lazy().collect_schema().unwrap();
        let names: Vec<&str> = cols.iter_names().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            ["__nc_file_row", "epoch", "split", "sample", "label", "x"],
            "{folder}"
        );
        let f = scan.epoch(5).split("test").load().unwrap();
        assert_eq!(f.labels, all[3].labels, "{folder}");
        assert_eq!(f.x, all[3].x, "{folder}");
        // The command line: the same output as for the same file in a plain folder.
        let out = ok_stdout(&run(&[
            "metrics",
            path.to_str().unwrap(),
            "--format",
            "json",
        ]));
        assert_eq!(out, reference, "{folder}");
        let probe = ok_stdout(&run(&["probe", path.to_str().unwrap(), "--format", "json"]));
        let probe_ref = ok_stdout(&run(&[
            "probe",
            plain.to_str().unwrap(),
            "--format",
            "json",
        ]));
        assert_eq!(probe, probe_ref, "{folder}");
    }
}

// ---------------------------------------------------------------------------------------------
// Row 2: only regular files are opened.

#[test]
fn a_directory_named_parquet_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adir.parquet");
    std::fs::create_dir(&dir).unwrap();
    let shown = dir.to_str().unwrap();
    for cmd in ["metrics", "probe"] {
        let line = one_line_error(
            &run(&[cmd, shown]),
            &[shown, "is a directory, not a regular file"],
        );
        assert!(!line.contains("expanded paths"), "{line}");
    }
    // --classifier too.
    let f = write_at(&tmp.path().join("features-fc.parquet"), &run_features());
    one_line_error(
        &run(&["metrics", f.to_str().unwrap(), "--classifier", shown]),
        &[shown, "is a directory"],
    );
    // The library's error is typed.
    let e = FeatureScan::open(&dir).unwrap_err();
    assert!(
        matches!(e, neural_collapse::features::FeatureError::NotAFile { .. }),
        "{e:?}"
    );
}

#[cfg(unix)]
#[test]
fn a_fifo_named_parquet_is_refused_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("x.parquet");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let shown = fifo.to_str().unwrap();
    // No writer ever opens the FIFO: a reader that opened it would block forever, so a timeout
    // guards the test.
    let mut child = bin()
        .args(["metrics", shown])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("metrics on a FIFO blocked");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    one_line_error(&out, &[shown, "is a FIFO (named pipe), not a regular file"]);
    // A character device.
    one_line_error(&run(&["metrics", "/dev/null"]), &["/dev/null"]);
}

// ---------------------------------------------------------------------------------------------
// Row 4: stdout closed or full.

#[test]
fn a_closed_pipe_ends_quietly_and_a_full_disk_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_at(&tmp.path().join("features-fc.parquet"), &run_features());
    let shown = f.to_str().unwrap();
    for cmd in ["metrics", "probe"] {
        // `… | head -0`: the reading end is closed before the program writes.
        let mut child = bin()
            .args([cmd, shown])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    #[cfg(target_os = "linux")]
    {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = bin()
            .args(["metrics", shown])
            .stdout(Stdio::from(full))
            .output()
            .unwrap();
        one_line_error(
            &out,
            &["cannot write to standard output", "No space left on device"],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Row 7: negative numbers are values, rejected with a range message; clap's errors on one line.

#[test]
fn negative_numbers_get_a_range_message_and_argument_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_at(&tmp.path().join("features-fc.parquet"), &run_features());
    let p = f.to_str().unwrap();
    let cases: [(&[&str], &[&str]); 8] = [
        (
            &["metrics", p, "--epoch", "-1"],
            &["'-1'", "--epoch", "0..=4294967295"],
        ),
        (
            &["probe", p, "--epoch", "-1"],
            &["'-1'", "--epoch", "0..=4294967295"],
        ),
        (
            &["metrics", p, "--epoch", "4294967296"],
            &["--epoch", "0..=4294967295"],
        ),
        (
            &["metrics", p, "--tolerance", "-1"],
            &["'-1'", "--tolerance", "[0, 1)"],
        ),
        (
            &["metrics", p, "--tolerance", "1"],
            &["--tolerance", "[0, 1)"],
        ),
        (
            &["probe", p, "--penalty", "-1"],
            &["'-1'", "--penalty", "≥ 0"],
        ),
        (
            &["probe", p, "--penalty-grid", "1e-3,-1"],
            &["'-1'", "--penalty-grid", "≥ 0"],
        ),
        (&["probe", p, "--penalty", "nan"], &["--penalty", "finite"]),
    ];
    for (args, expect) in cases {
        one_line_error(&run(args), expect);
    }
    // clap's own errors, each on one line.
    one_line_error(&run(&["metrics"]), &["required", "<FILE>"]);
    one_line_error(&run(&["metrics", p, "--bogus"]), &["--bogus"]);
    one_line_error(
        &run(&["metrics", p, "--format", "xml"]),
        &["xml", "--format"],
    );
    one_line_error(&run(&["frobnicate"]), &["frobnicate"]);
    one_line_error(&run(&[]), &["subcommand"]);
    // In range, the values are used: epoch 5 alone, tolerance 0.
    let out = ok_stdout(&run(&[
        "metrics",
        p,
        "--epoch",
        "5",
        "--tolerance",
        "0",
        "--format",
        "json",
    ]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["epoch"] == 5), "{rows:?}");
    let all = run_features();
    for (row, f) in rows.iter().zip([&all[3], &all[2]]) {
        assert_eq!(row["split"], f.split.as_deref().unwrap());
        let want = NcParams::new().tolerance(0.0).measure_features(f).unwrap();
        let got = row["nc1"].as_f64().unwrap();
        assert!(
            (got - want.nc1).abs() <= 1e-12 * want.nc1.abs(),
            "{got} vs {}",
            want.nc1
        );
    }
    // --help still goes to stdout with exit 0.
    let help = ok_stdout(&run(&["metrics", "--help"]));
    assert!(help.contains("Usage:") && help.contains("--tolerance"));
}

// ---------------------------------------------------------------------------------------------
// Rows 5, 6, 10: zero rows, repeated CSV columns, a missing `coarse`, f64 values beyond f32.

/// A wide Parquet table: `epoch` (u32), `split`, `label` (u32), `x_0 … x_{d-1}` (f64).
fn write_wide_f64(path: &Path, epochs: &[u32], splits: &[&str], labels: &[u32], x: &[Vec<f64>]) {
    use polars::prelude::*;
    let mut cols = vec![
        Column::new("epoch".into(), epochs.to_vec()),
        Column::new("split".into(), splits.to_vec()),
        Column::new("label".into(), labels.to_vec()),
    ];
    for (j, xs) in x.iter().enumerate() {
        cols.push(Column::new(format!("x_{j}").into(), xs.clone()));
    }
    let mut df = DataFrame::new(cols).unwrap();
    ParquetWriter::new(std::fs::File::create(path).unwrap())
        .finish(&mut df)
        .unwrap();
}

#[test]
fn zero_rows_are_an_error_for_probe_as_for_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("empty.csv");
    std::fs::write(&csv, "epoch,split,label,x_0,x_1\n").unwrap();
    let pq = tmp.path().join("empty.parquet");
    write_wide_f64(&pq, &[], &[], &[], &[vec![], vec![]]);
    for f in [&csv, &pq] {
        let shown = f.to_str().unwrap();
        assert_eq!(FeatureScan::open(f).unwrap().checkpoints().unwrap(), vec![]);
        for cmd in ["metrics", "probe"] {
            one_line_error(
                &run(&[cmd, shown]),
                &[shown, "the file holds no rows (only its header or schema)"],
            );
        }
    }
}

#[test]
fn a_csv_with_two_label_columns_is_refused_naming_the_column() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("dup.csv");
    std::fs::write(
        &csv,
        "epoch,split,label,label,x_0,x_1\n0,train,0,1,0.5,1.0\n0,train,1,0,2.0,3.0\n0,test,0,1,0.1,0.2\n0,test,1,0,1.0,2.0\n",
    )
    .unwrap();
    let shown = csv.to_str().unwrap();
    for cmd in ["metrics", "probe"] {
        one_line_error(
            &run(&[cmd, shown]),
            &[shown, "column `label` appears more than once"],
        );
    }
    // A repeated feature column too.
    std::fs::write(&csv, "epoch,split,label,x_0,x_0\n0,train,0,0.5,1.0\n").unwrap();
    one_line_error(
        &run(&["metrics", shown]),
        &[shown, "column `x_0` appears more than once"],
    );
}

#[test]
fn label_coarse_without_the_column_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_at(&tmp.path().join("features-fc.parquet"), &run_features());
    let shown = f.to_str().unwrap();
    for cmd in ["metrics", "probe"] {
        one_line_error(
            &run(&[cmd, shown, "--label", "coarse"]),
            &[shown, "missing column `coarse`", "label"],
        );
    }
    let scan = FeatureScan::open(&f).unwrap();
    let e = neural_collapse::stream::measure_scan(
        &scan,
        &neural_collapse::metrics::MeasureOptions {
            labels: LabelColumn::Coarse,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{shown}: missing column `coarse`")),
        "{e}"
    );
    // With the column, --label coarse measures the coarse classes: the same numbers as the
    // library on the relabelled features.
    let mut all = run_features();
    for f in &mut all {
        let coarse: Vec<u32> = f.labels.iter().map(|&l| u32::from(l == 2)).collect();
        *f = f.clone().with_coarse(coarse);
    }
    let g = write_at(&tmp.path().join("c/features-fc.parquet"), &all);
    let out = ok_stdout(&run(&[
        "metrics",
        g.to_str().unwrap(),
        "--label",
        "coarse",
        "--epoch",
        "0",
        "--split",
        "train",
        "--format",
        "json",
    ]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let want = NcParams::new()
        .measure_features(&all[0].clone().relabel(LabelColumn::Coarse).unwrap())
        .unwrap();
    assert_eq!(rows[0]["classes"], 2);
    let got = rows[0]["nc1"].as_f64().unwrap();
    assert!(
        (got - want.nc1).abs() <= 1e-12 * want.nc1,
        "{got} vs {}",
        want.nc1
    );
}

#[test]
fn an_f64_value_beyond_f32_is_called_an_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("big.parquet");
    let n = 4;
    write_wide_f64(
        &f,
        &vec![0; n],
        &vec!["train"; n],
        &[0, 1, 0, 1],
        &[vec![0.0, 1.0, 2.0, 3.0], vec![1.0, 1.0, 1e300, 1.0]],
    );
    let shown = f.to_str().unwrap();
    let line = one_line_error(
        &run(&["metrics", shown]),
        &[
            shown,
            "`x_1`",
            "1e300",
            "row 2",
            "component 1",
            "overflows f32",
        ],
    );
    assert!(!line.contains("inf"), "{line}");
    // A stored infinity is still called non-finite.
    let g = tmp.path().join("inf.parquet");
    write_wide_f64(
        &g,
        &vec![0; n],
        &vec!["train"; n],
        &[0, 1, 0, 1],
        &[vec![0.0, 1.0, 2.0, 3.0], vec![1.0, f64::INFINITY, 1.0, 1.0]],
    );
    one_line_error(
        &run(&["metrics", g.to_str().unwrap()]),
        &["`x_1`", "non-finite value inf", "row 1"],
    );
}

// ---------------------------------------------------------------------------------------------
// Row 8: a huge label is refused before anything is allocated per class.

#[test]
fn a_huge_label_is_refused_naming_it_and_the_row_count() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("huge.parquet");
    // Three rows, labels {0, 1, 4e9}: 4e9 fits u32, but 4e9 + 1 classes cannot all have a sample.
    write_wide_f64(
        &f,
        &[0, 0, 0, 0, 0, 0, 0],
        &["train", "train", "train", "train", "test", "test", "test"],
        &[0, 1, 0, 1, 0, 1, 4_000_000_000],
        &[
            vec![0.0, 1.0, 0.5, 1.5, 0.0, 1.0, 2.0],
            vec![1.0, 0.0, 1.0, 0.5, 2.0, 1.0, 0.0],
        ],
    );
    let shown = f.to_str().unwrap();
    one_line_error(
        &run(&["metrics", shown, "--split", "test"]),
        &[
            shown,
            "split test",
            "largest label 4000000000",
            "4000000001 classes",
            "only 3 rows",
        ],
    );
    // Measured against the train means, train (4 rows) lacks the classes.
    one_line_error(
        &run(&["metrics", shown, "--split", "test", "--reference", "train"]),
        &[
            shown,
            "split train",
            "largest label 4000000000",
            "only 4 rows",
        ],
    );
    // The library, directly: the first empty class, found without allocating 2³² × d values.
    let x = ndarray::array![[0.0f32, 1.0], [1.0, 0.0], [2.0, 0.0]];
    let e = neural_collapse::Error::from(
        NcParams::new()
            .measure(x.view(), &[0, 1, u32::MAX])
            .unwrap_err(),
    );
    let classes = u32::MAX as usize + 1;
    assert!(
        matches!(
            e,
            neural_collapse::Error::Metric(
                neural_collapse::metrics::MetricError::EmptyClass { class: 2, classes: c }
            ) if c == classes
        ),
        "{e:?}"
    );
    let e = NcParams::new().measure(x.view(), &[1, 4, 4]).unwrap_err();
    assert_eq!(e.to_string(), "class 0 has no samples (classes 0..5)");
    // The probe needs no per-label allocation (its classes are the distinct labels): the same
    // file is fitted, with the huge label as a class of its own.
    let g = tmp.path().join("probe.parquet");
    write_wide_f64(
        &g,
        &[0; 6],
        &["train", "train", "train", "test", "test", "test"],
        &[0, 1, 4_000_000_000, 0, 1, 4_000_000_000],
        &[
            vec![0.0, 5.0, 0.0, 0.1, 5.1, 0.1],
            vec![0.0, 0.0, 5.0, 0.1, 0.1, 5.1],
        ],
    );
    let out = ok_stdout(&run(&["probe", g.to_str().unwrap(), "--format", "json"]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["test_accuracy"], 1.0, "{out}");
}

#[test]
fn a_class_missing_from_train_is_reported_on_train_with_reference_train() {
    let tmp = tempfile::tempdir().unwrap();
    let mut all = run_features();
    // Test has classes 0, 1, 2 and 3; train only 0, 1, 2.
    all[1].labels[0] = 3;
    let f = write_at(&tmp.path().join("features-fc.parquet"), &all[..2]);
    let shown = f.to_str().unwrap();
    one_line_error(
        &run(&["metrics", shown, "--split", "test", "--reference", "train"]),
        &[
            shown,
            "epoch 0, split train (the reference of split test)",
            "class 3 has no samples",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Row 9: the least-squares probe with n < d solves the n × n (dual) system.

/// `n × d` standard-normal features whose first `c` columns carry the class.
fn wide_probe_data(n: usize, d: usize, c: usize, seed: u64) -> (Array2<f32>, Vec<u32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let labels: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        let signal = if j < c && labels[i] as usize == j {
            2.0
        } else {
            0.0
        };
        signal + rng.sample::<f32, _>(StandardNormal)
    });
    (x, labels)
}

#[test]
fn least_squares_probe_with_fewer_rows_than_features_solves_the_normal_equations() {
    let (n, d, c, lambda) = (100, 2000, 4, 1e-2);
    let (x, labels) = wide_probe_data(n, d, c, 7);
    let fitted = LinearProbe::least_squares()
        .ridge(lambda)
        .fit_array(x.view(), &labels)
        .unwrap();
    // Independent check: W solves the primal normal equations (ZᵀZ + nλI) W = ZᵀY, with Z the
    // training rows standardised by the probe's own mean and scale (population, 1/n).
    let xd = x.mapv(f64::from);
    let mean = xd.mean_axis(ndarray::Axis(0)).unwrap();
    let std = xd.std_axis(ndarray::Axis(0), 0.0);
    for j in 0..d {
        assert!((fitted.mean()[j] - mean[j]).abs() <= 1e-12 * (1.0 + mean[j].abs()));
        assert!((fitted.scale()[j] - std[j]).abs() <= 1e-10 * std[j]);
    }
    let z = (&xd - &mean) / &std;
    let mut y = Array2::<f64>::zeros((n, c));
    for (i, &l) in labels.iter().enumerate() {
        y[[i, l as usize]] = 1.0;
    }
    let w = fitted.coefficients().to_owned();
    let lhs = z.t().dot(&z.dot(&w)) + &w * (n as f64 * lambda);
    let rhs = z.t().dot(&y);
    let size = rhs.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = (&lhs - &rhs).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(err <= 1e-9 * size, "residual {err:e} of {size:e}");
    // b = class frequencies; the scores are z W + b.
    for k in 0..c {
        assert!((fitted.intercept()[k] - 0.25).abs() < 1e-15);
    }
    let scores = fitted.decision_function(x.view()).unwrap();
    let want = z.dot(&w) + fitted.intercept();
    let r = (&scores - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(r <= 1e-9, "{r:e}");
}

#[test]
fn least_squares_probe_with_d_10000_and_n_300_runs_in_dual_form() {
    // The primal form would need a 10,000 × 10,000 system (800 MB per accumulator).
    let (n, d, c) = (300, 10_000, 3);
    let (x, labels) = wide_probe_data(n, d, c, 11);
    let (xt, lt) = wide_probe_data(150, d, c, 12);
    let train = Features::new(x, labels).with_epoch(0).with_split("train");
    let test = Features::new(xt, lt).with_epoch(0).with_split("test");
    let fitted = LinearProbe::least_squares()
        .ridge_grid(&[1e-3, 1e-1, 10.0])
        .fit(&train)
        .unwrap();
    let sel = fitted.selection().unwrap();
    assert_eq!(sel.n_fit + sel.n_holdout, n);
    assert!(sel.holdout_accuracy.iter().all(|a| a.is_finite()));
    let report = fitted.report(&train, &test).unwrap();
    assert_eq!((report.n_train, report.n_test), (n, 150));
    // Independent check: the chosen λ's W solves (ZᵀZ + nλI) W = ZᵀY.
    let lambda = fitted.penalty();
    assert!(sel.candidates.contains(&lambda));
    let xd = train.x.mapv(f64::from);
    let z = (&xd - &fitted.mean()) / fitted.scale();
    let mut y = Array2::<f64>::zeros((n, c));
    for (i, &l) in train.labels.iter().enumerate() {
        y[[i, l as usize]] = 1.0;
    }
    let w = fitted.coefficients().to_owned();
    let lhs = z.t().dot(&z.dot(&w)) + &w * (n as f64 * lambda);
    let rhs = z.t().dot(&y);
    let size = rhs.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = (&lhs - &rhs).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(err <= 1e-9 * size, "residual {err:e} of {size:e}");
    assert_eq!(fitted.coefficients().dim(), (d, c));
}

// ---------------------------------------------------------------------------------------------
// A file or folder name that is not UTF-8: a clear error before polars sees it.

#[cfg(unix)]
#[test]
fn a_non_utf8_path_is_refused_with_one_line() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let good = write_at(&tmp.path().join("features-fc.parquet"), &run_features());
    let bad_file = tmp.path().join(OsStr::from_bytes(b"feat\xffures.parquet"));
    std::fs::copy(&good, &bad_file).unwrap();
    let bad_dir = tmp
        .path()
        .join(OsStr::from_bytes(b"run\xfe"))
        .join("features-fc.parquet");
    std::fs::create_dir_all(bad_dir.parent().unwrap()).unwrap();
    std::fs::copy(&good, &bad_dir).unwrap();
    for path in [&bad_file, &bad_dir] {
        let shown = path.to_string_lossy().into_owned();
        for cmd in ["metrics", "probe"] {
            let out = bin().arg(cmd).arg(path).output().unwrap();
            one_line_error(&out, &[&shown, "not valid UTF-8"]);
        }
        let out = bin()
            .arg("metrics")
            .arg(&good)
            .arg("--classifier")
            .arg(path)
            .output()
            .unwrap();
        one_line_error(&out, &[&shown, "not valid UTF-8"]);
        let e = FeatureScan::open(path).unwrap_err();
        assert!(
            matches!(
                e,
                neural_collapse::features::FeatureError::NonUtf8Path { .. }
            ),
            "{e:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Truncated and corrupted files: an error (or, if the damage misses every value, the data), never
// a panic. A bounded property test over byte-level damage of a valid file.

mod damaged_files {
    use super::*;
    use proptest::prelude::*;

    fn valid_parquet() -> &'static [u8] {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        BYTES.get_or_init(|| {
            let tmp = tempfile::tempdir().unwrap();
            let path = write_at(
                &tmp.path().join("features-fc.parquet"),
                &run_features()[..2],
            );
            std::fs::read(path).unwrap()
        })
    }

    const VALID_CSV: &str = "epoch,split,label,x_0,x_1\n0,train,0,0.5,1.0\n0,train,1,2.0,3.0\n0,test,0,0.1,0.2\n0,test,1,1.0,2.0\n";

    /// Every reader entry point on `bytes` stored under `name`; returns whether it panicked.
    fn exercise(name: &str, bytes: &[u8]) -> bool {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        std::panic::catch_unwind(|| {
            if let Ok(scan) = FeatureScan::open(&path) {
                let _ = scan.checkpoints();
                let _ = scan.load();
                let _ = scan.epoch(0).split("train").load();
            }
            let _ = read_classifier(&path, 0);
        })
        .is_err()
    }

    proptest! {
        // 64 cases each by default; NC_FUZZ_CASES=n runs more.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("NC_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn damaged_parquet_never_panics(
            cut in 0usize..4096,
            flips in proptest::collection::vec((0usize..4096, any::<u8>()), 0..6),
        ) {
            let mut bytes = valid_parquet().to_vec();
            for (at, v) in flips {
                let k = at % bytes.len();
                bytes[k] ^= v;
            }
            bytes.truncate(bytes.len() - cut % bytes.len());
            prop_assert!(!exercise("features-fc.parquet", &bytes));
        }

        #[test]
        fn damaged_csv_never_panics(
            cut in 0usize..200,
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
        ) {
            let mut bytes = VALID_CSV.as_bytes().to_vec();
            for (at, v) in flips {
                let k = at % bytes.len();
                bytes[k] ^= v;
            }
            bytes.truncate(bytes.len() - cut % bytes.len());
            prop_assert!(!exercise("features-fc.csv", &bytes));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert!(!exercise("x.parquet", &bytes));
            prop_assert!(!exercise("x.csv", &bytes));
        }
    }
}

/// `label` and `epoch` stored as 8- and 16-bit integers (signed or not) are read as the same
/// labels and epochs: the metrics equal those of the u32 file, number for number.
#[test]
fn small_integer_label_and_epoch_columns_are_accepted() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let (c, per, d) = (3usize, 6usize, 4usize);
    let n = c * per;
    let labels: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
    let x: Vec<f32> = (0..n * d)
        .map(|k| {
            let (i, j) = (k / d, k % d);
            labels[i] as f32 * if j == 0 { 3.0 } else { 0.5 } + ((k * 37 % 11) as f32 - 5.0) / 10.0
        })
        .collect();
    let write = |name: &str, dtype: DataType| -> std::path::PathBuf {
        let xs = Series::new("x".into(), x.clone())
            .reshape_array(&[ReshapeDimension::Infer, ReshapeDimension::new(d as i64)])
            .unwrap();
        let mut df = DataFrame::new(vec![
            Series::new("epoch".into(), vec![7u32; n])
                .cast(&dtype)
                .unwrap()
                .into_column(),
            Column::new("split".into(), vec!["train"; n]),
            Series::new("label".into(), labels.clone())
                .cast(&dtype)
                .unwrap()
                .into_column(),
            xs.with_name("x".into()).into_column(),
        ])
        .unwrap();
        let path = dir.path().join(name);
        ParquetWriter::new(std::fs::File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        path
    };
    let reference = write("u32.parquet", DataType::UInt32);
    let want = metrics_json(&reference);
    for (name, dtype) in [
        ("u8.parquet", DataType::UInt8),
        ("i8.parquet", DataType::Int8),
        ("u16.parquet", DataType::UInt16),
        ("i16.parquet", DataType::Int16),
    ] {
        let got = metrics_json(&write(name, dtype));
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(want[0]["epoch"], 7);
    assert_eq!(want[0]["classes"], 3);
}

fn metrics_json(path: &std::path::Path) -> serde_json::Value {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
        .arg("metrics")
        .arg(path)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A run directory holding a feature file whose name is not UTF-8: `Run::open` refuses it by
/// name instead of silently leaving that layer out.
#[test]
fn a_run_with_a_non_utf8_feature_file_name_is_an_error() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    write_at(&tmp.path().join("features-fc.parquet"), &run_features());
    assert_eq!(Run::open(tmp.path()).unwrap().layers(), vec!["fc"]);
    let bad = tmp
        .path()
        .join(OsStr::from_bytes(b"features-f\xffc.parquet"));
    std::fs::copy(tmp.path().join("features-fc.parquet"), &bad).unwrap();
    let e = Run::open(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("not valid UTF-8") && e.contains("features-f"),
        "{e}"
    );
}

/// `--min-class-samples K` (issue 17): strict by default (an empty class is one line, exit 2);
/// with K the small classes are dropped and listed, and the metrics equal those of the file
/// with the dropped rows removed by hand. K = 0 or −1 is a one-line range error.
#[test]
fn min_class_samples_drops_small_classes_and_lists_them() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = [
        (0, 0.0, 0.1),
        (0, 0.2, -0.1),
        (0, -0.1, 0.0),
        (1, 2.0, 1.1),
        (1, 2.2, 0.9),
        (1, 1.9, 1.0),
        (3, 5.0, 5.0),
    ];
    let text = |keep: &dyn Fn(u32) -> bool| {
        let mut t = String::from("epoch,split,label,x_0,x_1\n");
        for &(l, a, b) in &rows {
            if keep(l) {
                t.push_str(&format!("0,train,{l},{a},{b}\n"));
            }
        }
        t
    };
    let all = tmp.path().join("all.csv");
    std::fs::write(&all, text(&|_| true)).unwrap();
    let kept = tmp.path().join("kept.csv");
    std::fs::write(&kept, text(&|l| l < 3)).unwrap();
    let shown = all.to_str().unwrap();
    one_line_error(&run(&["metrics", shown]), &[shown, "class 2"]);
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&ok_stdout(&run(args))).unwrap()[0].clone()
    };
    let dropped = json(&[
        "metrics",
        shown,
        "--min-class-samples",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(
        dropped["dropped_classes"],
        serde_json::json!([3]),
        "{dropped}"
    );
    assert_eq!(dropped["classes"], 2);
    let by_hand = json(&["metrics", kept.to_str().unwrap(), "--format", "json"]);
    assert!(by_hand.get("dropped_classes").is_none());
    for key in ["nc1", "nc1_trace_ratio", "cdnv", "nc2_equinorm"] {
        let (a, b) = (
            dropped[key].as_f64().unwrap(),
            by_hand[key].as_f64().unwrap(),
        );
        assert!((a - b).abs() <= 1e-12 * b.abs(), "{key}: {a} vs {b}");
    }
    let table = ok_stdout(&run(&["metrics", shown, "--min-class-samples", "2"]));
    assert!(
        table.contains("1 classes dropped (too few samples): 3"),
        "{table}"
    );
    for k in ["0", "-1"] {
        one_line_error(
            &run(&["metrics", shown, "--min-class-samples", k]),
            &["--min-class-samples", "at least 1"],
        );
    }
}
