//! The `metrics` command: JSON keys, filters, references, classifier, and bad input.

use std::path::Path;
use std::process::Command;

use ndarray::{Array1, Array2};
use neural_collapse::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
}

/// Features of `c` Gaussian classes whose spread shrinks with the epoch.
fn split(c: usize, d: usize, per: usize, epoch: u32, name: &str, seed: u64) -> Features {
    let mut rng = StdRng::seed_from_u64(seed);
    let means = Array2::from_shape_fn((c, d), |(k, j)| ((k * 7 + j * 3) % 5) as f32 - 2.0);
    let spread = 1.0 / (1.0 + epoch as f32);
    let labels: Vec<u32> = (0..c * per).map(|i| (i % c) as u32).collect();
    let x = Array2::from_shape_fn((c * per, d), |(i, j)| {
        means[[labels[i] as usize, j]] + spread * rng.sample::<f32, _>(StandardNormal)
    });
    let pred: Vec<u32> = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| if i % 9 == 0 { (l + 1) % c as u32 } else { l })
        .collect();
    Features::new(x, labels)
        .with_epoch(epoch)
        .with_split(name)
        .with_pred(pred)
}

fn write_run(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<Features>) {
    let (c, d) = (4, 6);
    let mut all = vec![];
    for (k, epoch) in [0u32, 3, 10].into_iter().enumerate() {
        all.push(split(c, d, 20, epoch, "train", 10 + k as u64));
        all.push(split(c, d, 10, epoch, "test", 20 + k as u64));
    }
    let path = dir.join("features-fc.parquet");
    write_features(&path, &all).unwrap();
    let clfs: Vec<(u32, Classifier)> = [0u32, 3, 10]
        .iter()
        .map(|&e| {
            (
                e,
                Classifier {
                    w: Array2::from_shape_fn((c, d), |(k, j)| {
                        ((k * 7 + j * 3) % 5) as f64 - 2.0 + 0.01 * e as f64
                    }),
                    b: Array1::from_shape_fn(c, |k| 0.1 * k as f64),
                },
            )
        })
        .collect();
    let cpath = dir.join("classifier.parquet");
    write_classifier(&cpath, &clfs).unwrap();
    (path, cpath, all)
}

/// Runs the CLI with `args`; asserts exit code 2 and one line on stderr, and returns it.
fn one_line_failure(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    err
}

fn json(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn json_has_exactly_the_documented_keys_and_library_values() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _, all) = write_run(tmp.path());
    let out = bin()
        .args(["metrics", path.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let rows = json(&out);
    assert_eq!(rows.len(), 6);
    let mut keys: Vec<String> = rows[0].as_object().unwrap().keys().cloned().collect();
    keys.sort();
    let mut expected = vec![
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
        "nc4",
    ];
    expected.sort();
    assert_eq!(
        keys, expected,
        "pred column present → nc4, no classifier keys"
    );
    // Ordered by epoch then split; values equal the library's on the same features.
    assert_eq!(rows[0]["epoch"], 0);
    assert_eq!(rows[0]["split"], "test");
    assert_eq!(rows[1]["split"], "train");
    let lib = NcParams::new().measure_features(&all[0]).unwrap(); // epoch 0 train
    let r = &rows[1];
    assert_eq!(r["n"], 80);
    assert!((r["nc1"].as_f64().unwrap() - lib.nc1).abs() <= 1e-12 * lib.nc1);
    assert!((r["nc4"].as_f64().unwrap() - lib.nc4.unwrap()).abs() < 1e-15);
    // Train NC1 falls with the spread.
    assert!(rows[5]["nc1"].as_f64().unwrap() < rows[1]["nc1"].as_f64().unwrap() / 10.0);
}

#[test]
fn filters_reference_and_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, cpath, all) = write_run(tmp.path());
    let p = path.to_str().unwrap();
    let out = bin()
        .args([
            "metrics",
            p,
            "--epoch",
            "3",
            "--split",
            "test",
            "--reference",
            "train",
        ])
        .args(["--classifier", cpath.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let rows = json(&out);
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    for k in [
        "nc2_equinorm_w",
        "nc2_equiangularity_w",
        "nc2_max_angle_w",
        "nc3",
        "nc4",
    ] {
        assert!(r.get(k).is_some(), "missing {k}");
    }
    // Same value as the library measuring epoch-3 test against epoch-3 train means.
    let train = ClassStats::from_data(all[2].x.view(), &all[2].labels).unwrap();
    let clf = read_classifier(&cpath, 3).unwrap();
    let lib = NcParams::new()
        .reference(Reference::Train(&train))
        .classifier(&clf)
        .measure_features(&all[3])
        .unwrap();
    assert!((r["nc1"].as_f64().unwrap() - lib.nc1).abs() <= 1e-12 * lib.nc1);
    assert!((r["nc3"].as_f64().unwrap() - lib.nc3.unwrap()).abs() <= 1e-12);
    assert!((r["nc4"].as_f64().unwrap() - lib.nc4.unwrap()).abs() <= 1e-15);
    // Own reference differs from train reference on a test split.
    let own = json(
        &bin()
            .args([
                "metrics", p, "--epoch", "3", "--split", "test", "--format", "json",
            ])
            .output()
            .unwrap(),
    );
    assert_ne!(own[0]["nc1"], r["nc1"]);
    // Table output names the metrics.
    let table = bin()
        .args(["metrics", p, "--epoch", "10"])
        .output()
        .unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("nc1_trace_ratio") || text.contains("nc1_trace_r"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("10"))
            .count(),
        2
    );
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _, _) = write_run(tmp.path());
    let p = path.to_str().unwrap();
    let missing = tmp.path().join("nope.parquet");
    let cases: Vec<Vec<String>> = vec![
        vec!["metrics".into(), missing.to_str().unwrap().into()],
        vec!["metrics".into(), p.into(), "--epoch".into(), "7".into()],
        vec![
            "metrics".into(),
            p.into(),
            "--reference".into(),
            "sideways".into(),
        ],
        vec![
            "metrics".into(),
            p.into(),
            "--classifier".into(),
            missing.to_str().unwrap().into(),
        ],
        vec!["metrics".into(), p.into(), "--tolerance=2".into()],
    ];
    for args in cases {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.contains("panicked"), "{err}");
        if args[1] != "--reference" && !args.contains(&"sideways".to_string()) {
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
            assert!(err.starts_with("error: "), "{err}");
        }
    }
    // A bad file names itself.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "label,x_0,x_1\n0,1.0,nan\n1,2.0,3.0\n").unwrap();
    let out = bin()
        .args(["metrics", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.csv"), "{err}");
}

/// A bundled feature file with one byte changed at `at` (xor `flip`), found by fuzzing the
/// command with damaged copies of the bundled files; its stderr and exit code. `RUST_BACKTRACE`
/// is set, as a user debugging a run would have it: no backtrace may reach them either.
fn damaged_bundled(run: &str, layer: &str, at: usize, flip: u8) -> (Option<i32>, String) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/runs")
        .join(run)
        .join(format!("features-{layer}.parquet"));
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[at] ^= flip;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(format!("features-{layer}.parquet"));
    std::fs::write(&path, &bytes).unwrap();
    let out = bin()
        .args(["metrics", path.to_str().unwrap(), "--format", "json"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

/// A page header whose value count became negative made polars reserve ~2⁶⁴ bits and abort
/// the process (`features::pages` now checks the headers first): one line naming the row
/// group, column and page, exit 2.
#[test]
fn a_damaged_page_header_is_one_line_not_an_abort() {
    let (code, err) = damaged_bundled("mnist-cascade-s1", "fc1", 135_187, 11);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.trim_end().ends_with(
            "features-fc1.parquet: row group 9, column pred: page 1: -98 values (the file is damaged)"
        ),
        "{err}"
    );
}

/// A damaged page that polars' reader panics on (on its own threads): the library turns the
/// panic into an error naming the file, and the command prints that one line, without the
/// panic messages and backtraces of polars' threads before it.
#[test]
fn a_panic_inside_polars_is_one_line() {
    let (code, err) = damaged_bundled("mnist-train-test-s2", "fc3", 478_954, 210);
    assert_eq!(code, Some(2), "{err}");
    // The precondition (that this byte still makes polars panic) is part of the line.
    assert!(err.contains("polars failed reading the file"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("stack backtrace"), "{err}");
}

/// `reproduce` checks its inputs before it writes anything: a missing study leaves `--out`
/// uncreated, and an `--out` that is a file is refused by name; each with one line and exit 2.
#[test]
fn reproduce_checks_inputs_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("figures");
    let o = bin()
        .args(["reproduce", "--runs"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no run with preset `train-test` and dataset `mnist`"),
        "{err}"
    );
    assert!(
        !out.exists(),
        "--out was created before the inputs were checked"
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = bin()
        .args(["reproduce", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("a-file") && err.contains("not a directory"),
        "{err}"
    );
}

/// NC4 from the `pred` column of a run trained on coarse labels: left out when the fine labels
/// are measured (pred predicts coarse labels), present for `--label coarse`, where it equals the
/// library's value on the same features.
#[test]
fn nc4_from_coarse_predictions_only_on_coarse_labels() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/runs/fashion-mnist-transfer-s0/features-fc3.parquet");
    let run = |label: &str| -> serde_json::Value {
        let o = bin()
            .arg("metrics")
            .arg(&file)
            .args([
                "--epoch", "280", "--split", "train", "--format", "json", "--label", label,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()[0].clone()
    };
    let fine = run("label");
    assert!(fine.get("nc4").is_none(), "{fine}");
    assert_eq!(fine["classes"], 10);
    let coarse = run("coarse");
    assert_eq!(coarse["classes"], 2);
    let f = FeatureScan::open(&file)
        .unwrap()
        .epoch(280)
        .split("train")
        .load()
        .unwrap()
        .relabel(LabelColumn::Coarse)
        .unwrap();
    let lib = NcParams::new().measure_features(&f).unwrap();
    assert_eq!(coarse["nc4"].as_f64(), lib.nc4);
}

/// `reproduce` on the bundled studies: one CHECK line per criterion (4), a line saying what it
/// wrote, every figure as SVG and PNG (20 files) and no temporary file left behind.
#[test]
fn reproduce_writes_every_figure_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("figures");
    let o = bin()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["reproduce", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let checks: Vec<&str> = stdout.lines().filter(|l| l.starts_with("CHECK ")).collect();
    assert_eq!(checks.len(), 4, "{stdout}");
    for (line, name) in checks.iter().zip([
        "train-vs-test mnist-train-test",
        "train-vs-test fashion-mnist-train-test",
        "collapse-hurts-transfer fashion-mnist-transfer",
        "cascading-collapse mnist-cascade",
    ]) {
        assert!(line.starts_with(&format!("CHECK {name}: ")), "{line}");
        assert!(
            line.contains(": PASS — ") || line.contains(": FAIL — "),
            "{line}"
        );
    }
    assert!(stdout.contains("10 figures written to"), "{stdout}");
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 20, "{files:?}");
    assert!(
        files.iter().all(|f| !f.starts_with('.')),
        "temporary files left: {files:?}"
    );
    assert_eq!(files.iter().filter(|f| f.ends_with(".png")).count(), 10);
}

/// Two more bytes found by fuzzing: one makes polars-parquet's footer parser panic (an
/// `unwrap` of a missing field), the other gives a data page an encoding outside Parquet's,
/// which polars' page accessors unwrap. Both are now one line naming the file, exit 2.
#[test]
fn a_damaged_footer_or_page_encoding_is_one_line() {
    let (code, err) = damaged_bundled("mnist-cascade-s0", "fc8", 538_798, 0x61);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("features-fc8.parquet: footer: does not parse"),
        "{err}"
    );
    let (code, err) = damaged_bundled("mnist-cascade-s0", "fc8", 370_357, 0x5b);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("column x.list.element: page 0: encoding -46 is not one of Parquet's"),
        "{err}"
    );
}

/// A CSV value with an escape sequence is shown escaped (it would act on the terminal), and
/// polars' advice for its Python API (`infer_schema_length`, `ignore_errors=True`) is left
/// out of the line.
#[test]
fn csv_errors_are_printable_and_without_python_advice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.csv");
    std::fs::write(
        &path,
        "epoch,split,label,x_0,x_1\n0,train,0,1\u{1b}[2J,2\n0,train,1,3,4\n",
    )
    .unwrap();
    let err = one_line_failure(&["metrics", path.to_str().unwrap()]);
    assert!(!err.contains('\u{1b}'), "{err:?}");
    assert!(err.contains("\\u{1b}[2J"), "{err}");
    assert!(!err.contains("infer_schema_length"), "{err}");
    assert!(
        err.contains("invalid primitive value found during CSV parsing"),
        "{err}"
    );

    // A byte that is not UTF-8 is placed: header (26 bytes) and two rows (18 each), then
    // `0,train,0,1` (11) and 0xff at byte 26 + 36 + 11 + 1 = 74, on line 4.
    let mut bytes = b"epoch,split,label,x_0,x_1\n0,train,0,1.0,2.0\n0,train,1,2.0,3.0\n".to_vec();
    bytes.extend_from_slice(b"0,train,0,1\xff5,2.0\n0,train,1,2.5,3.0\n");
    std::fs::write(&path, bytes).unwrap();
    let err = one_line_failure(&["metrics", path.to_str().unwrap()]);
    assert!(
        err.contains("invalid utf-8 sequence at line 4, byte 74 of the file"),
        "{err}"
    );
}

/// A geometry the machine cannot hold is one line, exit 2, not an abort on allocation (found by
/// fuzzing under `ulimit -v`): `--nc1-route features` at d = 20,000 needs three 20,000 × 20,000
/// f64 matrices (8.9 GiB), above a 3 GiB address-space limit. The classes route, asked for by
/// default here (C = 3 < d), measures the same file.
#[test]
fn a_geometry_too_large_to_allocate_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("features-wide.parquet");
    write_features(&path, &[split(3, 20_000, 2, 0, "train", 5)]).unwrap();
    let limited = |route: &str| {
        let script = format!(
            "ulimit -v 3000000 && exec \"$0\" metrics \"$1\" --nc1-route {route} --format json"
        );
        Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_neural-collapse")])
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = limited("features");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("three 20000 × 20000 matrices (8.9 GiB)")
            && err.contains("--nc1-route classes"),
        "{err}"
    );
    let out = limited("classes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out).len(), 1);
}

/// A classifier that does not fit the features names its own file first (it named only the
/// feature file), then the features it was checked against.
#[test]
fn a_classifier_of_the_wrong_shape_names_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _, _) = write_run(tmp.path());
    let wrong = tmp.path().join("wrong-classifier.parquet");
    let clf = Classifier {
        w: Array2::from_shape_fn((4, 5), |(k, j)| (k + j) as f64),
        b: Array1::zeros(4),
    };
    write_classifier(&wrong, &[(0, clf)]).unwrap();
    let err = one_line_failure(&[
        "metrics",
        path.to_str().unwrap(),
        "--classifier",
        wrong.to_str().unwrap(),
        "--epoch",
        "0",
    ]);
    let want = format!(
        "error: {}, epoch 0 (for {}, epoch 0, split ",
        wrong.display(),
        path.display()
    );
    assert!(err.starts_with(&want), "{err}");
    assert!(
        err.contains("classifier is 4 × 5 with 4 biases, expected 4 × 6"),
        "{err}"
    );
}

/// The streamed `metrics` and `stats`/`merge` give a classifier scaled by 2^1000 (weights near
/// 1e301, whose squared norms overflow f64) the same NC2 of `W`, NC3 and NC4 as unscaled: they
/// are invariant to the scale, and the classifier is rescaled exactly by a power of two before
/// use (NC2 of W was NaN, exit 0).
#[test]
fn a_classifier_near_the_limits_of_f64_gives_the_same_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, cpath, _) = write_run(tmp.path());
    let big = tmp.path().join("big-classifier.parquet");
    let f = 2f64.powi(500) * 2f64.powi(500);
    let clfs: Vec<(u32, Classifier)> = [0u32, 3, 10]
        .iter()
        .map(|&e| {
            let c = read_classifier(&cpath, e).unwrap();
            (
                e,
                Classifier {
                    w: c.w.mapv(|v| v * f),
                    b: c.b.mapv(|v| v * f),
                },
            )
        })
        .collect();
    write_classifier(&big, &clfs).unwrap();
    let report = |clf: &Path| {
        json(
            &bin()
                .args(["metrics", path.to_str().unwrap(), "--format", "json"])
                .arg("--classifier")
                .arg(clf)
                .output()
                .unwrap(),
        )
    };
    let (want, got) = (report(&cpath), report(&big));
    assert_eq!(want.len(), 6);
    for (w, g) in want.iter().zip(&got) {
        for key in ["nc2_equinorm_w", "nc2_equiangularity_w", "nc3", "nc4"] {
            assert!(w[key].as_f64().is_some_and(f64::is_finite), "{key}: {w}");
            assert_eq!(w[key], g[key], "{key}");
        }
    }
}
