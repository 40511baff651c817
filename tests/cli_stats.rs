//! The `stats` / `merge` command line (issue 16): the contract the Slurm scripts rely on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use polars::prelude::*;

const RUN: &str = "data/runs/fashion-mnist-train-test-s1";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neural-collapse"))
}

fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Exit code 2 and one line on stderr containing `needle`.
fn fails(args: &[&str], needle: &str) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
}

fn features() -> String {
    format!("{RUN}/features-fc3.parquet")
}

fn classifier() -> String {
    format!("{RUN}/classifier.parquet")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(text: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(text).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// Every numeric key of `metrics --format json` has the same value (1e-12 relative) in `got`.
fn assert_json_same(got: &[serde_json::Value], want: &[serde_json::Value]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        for (k, wv) in w.as_object().unwrap() {
            let gv = &g[k];
            match (gv.as_f64(), wv.as_f64()) {
                (Some(a), Some(b)) => assert!(close(a, b), "{k}: {a} vs {b}"),
                _ => assert_eq!(gv, wv, "{k}"),
            }
        }
    }
}

#[test]
fn complete_partial_merges_into_the_metrics_report() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("c.parquet");
    let (feats, clf) = (features(), classifier());
    let opts = ["--reference", "train", "--classifier", clf.as_str()];
    let mut args = vec!["stats", feats.as_str(), "--out", s(&part)];
    args.extend(opts);
    let said = ok(&args);
    assert!(said.contains("complete partial"), "{said}");
    let mut m = vec!["metrics", &feats, "--format", "json"];
    m.extend(opts);
    let want = json(&ok(&m));
    assert!(want.len() >= 20);
    let got = json(&ok(&["merge", s(&part), "--format", "json"]));
    assert_json_same(&got, &want);
    // Identity from the run directory.
    assert_eq!(got[0]["run"], "fashion-mnist-train-test-s1");
    assert_eq!(got[0]["seed"], 1);
    assert_eq!(got[0]["layer"], "fc3");
    // The table names the run and has one row per (epoch, split).
    let table = ok(&["merge", s(&part)]);
    assert!(table.starts_with("run fashion-mnist-train-test-s1, seed 1, layer fc3"));
    assert_eq!(
        table.lines().filter(|l| l.contains(" test ")).count(),
        want.len() / 2
    );

    // Resumption: the same job again does nothing and says so; other options recompute.
    let before = std::fs::metadata(&part).unwrap().modified().unwrap();
    let o = run(&args);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("skipped"));
    assert!(o.stdout.is_empty());
    assert_eq!(
        std::fs::metadata(&part).unwrap().modified().unwrap(),
        before
    );
    let o = run(&["stats", &feats, "--out", s(&part)]);
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("skipped"));
}

#[test]
fn shards_pass1_means_pass2_merge_into_a_tidy_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let feats = features();
    let clf = classifier();
    let n = 3;
    let mut p1 = Vec::new();
    for i in 0..n {
        let out = p(&format!("p1-{i}.parquet"));
        ok(&[
            "stats",
            &feats,
            "--shard",
            &format!("{i}/{n}"),
            "--out",
            s(&out),
        ]);
        p1.push(out);
    }
    let means = p("means.parquet");
    let mut args: Vec<&str> = vec!["merge"];
    args.extend(p1.iter().rev().map(|x| s(x)));
    args.extend(["--out", s(&means)]);
    assert!(ok(&args).contains("merged pass-1 partial"));
    // One pass-1 shard is not the means of the file: pass 2 against it is refused (it measured
    // against the means of a third of the rows, exit 0, before).
    fails(
        &[
            "stats",
            &feats,
            "--shard",
            "0/3",
            "--means",
            s(&p1[1]),
            "--out",
            s(&p("wrong.parquet")),
        ],
        "a means partial without rows 0..2000 of",
    );
    // Means of other files: the --means argument is named as the one at fault.
    fails(
        &[
            "stats",
            "data/runs/mnist-train-test-s2/features-fc3.parquet",
            "--means",
            s(&means),
            "--out",
            s(&p("other.parquet")),
        ],
        "no class means for this group in the means partial given with --means",
    );
    let mut p2: Vec<PathBuf> = Vec::new();
    for i in 0..n {
        let out = p(&format!("p2-{i}.parquet"));
        ok(&[
            "stats",
            &feats,
            "--shard",
            &format!("{i}/{n}"),
            "--means",
            s(&means),
            "--classifier",
            &clf,
            "--out",
            s(&out),
        ]);
        p2.push(out);
    }
    // A shard of the same file measured without the classifier does not merge with them
    // (its groups would have lost NC3 and NC4 without a word).
    let bare = p("p2-bare.parquet");
    ok(&[
        "stats",
        &feats,
        "--shard",
        "2/3",
        "--means",
        s(&means),
        "--out",
        s(&bare),
    ]);
    fails(
        &["merge", s(&p2[0]), s(&p2[1]), s(&bare)],
        &format!(
            "{} was measured with classifier none (no --classifier), the partials merged before it with ",
            s(&bare)
        ),
    );
    let tidy = p("nc.parquet");
    let mut args: Vec<&str> = vec!["merge"];
    args.extend([s(&p2[1]), s(&p2[2]), s(&p2[0])]);
    args.extend(["--format", "parquet", "--output", s(&tidy)]);
    ok(&args);
    let want = json(&ok(&[
        "metrics",
        &feats,
        "--classifier",
        &clf,
        "--format",
        "json",
    ]));
    let df = ParquetReader::new(std::fs::File::open(&tidy).unwrap())
        .finish()
        .unwrap();
    let names: Vec<&str> = df.get_column_names().iter().map(|c| c.as_str()).collect();
    assert_eq!(
        names,
        ["run", "seed", "epoch", "split", "layer", "metric", "value"]
    );
    assert_eq!(df.column("seed").unwrap().dtype(), &DataType::Int64);
    assert_eq!(df.column("value").unwrap().dtype(), &DataType::Float64);
    // One row per report and metric: every metric of the JSON report is there.
    let names: std::collections::BTreeSet<&str> = df
        .column("metric")
        .unwrap()
        .str()
        .unwrap()
        .into_no_null_iter()
        .collect();
    for k in [
        "nc1",
        "nc1_trace_ratio",
        "cdnv",
        "nc2_etf_distance_w",
        "nc3",
        "nc4",
    ] {
        assert!(names.contains(k), "{k}");
    }
    assert!(names.iter().all(|k| want[0].get(*k).is_some()));
    assert_eq!(df.height(), want.len() * names.len());
    let (epoch, split, metric, value) = (
        df.column("epoch").unwrap().u32().unwrap(),
        df.column("split").unwrap().str().unwrap(),
        df.column("metric").unwrap().str().unwrap(),
        df.column("value").unwrap().f64().unwrap(),
    );
    for i in 0..df.height() {
        let w = want
            .iter()
            .find(|r| {
                r["epoch"].as_u64() == epoch.get(i).map(u64::from)
                    && r["split"].as_str() == split.get(i)
            })
            .unwrap();
        let k = metric.get(i).unwrap();
        let (a, b) = (value.get(i).unwrap(), w[k].as_f64().unwrap());
        assert!(close(a, b), "{k}: {a} vs {b}");
    }

    // A missing shard is refused; pass-1 partials alone need --out; a complete partial is not
    // a means partial.
    fails(
        &["merge", s(&p2[0]), s(&p2[2])],
        "a shard is missing or was given twice",
    );
    fails(&["merge", s(&p1[0]), s(&p1[1])], "give --out MEANS_PART");
    let complete = p("c.parquet");
    ok(&["stats", &feats, "--out", s(&complete)]);
    fails(
        &[
            "stats",
            &feats,
            "--shard",
            "0/2",
            "--means",
            s(&complete),
            "--out",
            s(&p("x.parquet")),
        ],
        "needs a merged pass-1 partial",
    );
    fails(
        &["merge", s(&p1[0]), s(&p2[0])],
        "cannot merge a pass1 partial with a pass2 partial",
    );
}

#[test]
fn runs_with_their_own_classifiers_merge_into_one_study() {
    let dir = tempfile::tempdir().unwrap();
    let mut parts = Vec::new();
    let mut want = Vec::new();
    for run in ["fashion-mnist-train-test-s1", "mnist-train-test-s2"] {
        let feats = format!("data/runs/{run}/features-fc3.parquet");
        let clf = format!("data/runs/{run}/classifier.parquet");
        let part = dir.path().join(format!("{run}.parquet"));
        ok(&["stats", &feats, "--classifier", &clf, "--out", s(&part)]);
        parts.push(part);
        want.extend(json(&ok(&[
            "metrics",
            &feats,
            "--classifier",
            &clf,
            "--format",
            "json",
        ])));
    }
    let got = json(&ok(&[
        "merge",
        s(&parts[1]),
        s(&parts[0]),
        "--format",
        "json",
    ]));
    // Sorted by run: fashion-mnist first.
    assert_eq!(got[0]["run"], "fashion-mnist-train-test-s1");
    assert_eq!(got.last().unwrap()["run"], "mnist-train-test-s2");
    assert!(got.iter().all(|r| r["nc3"].as_f64().is_some()));
    assert_json_same(&got, &want);
    // The same group with two classifiers is refused.
    let other = dir.path().join("other.parquet");
    ok(&[
        "stats",
        "data/runs/fashion-mnist-train-test-s1/features-fc3.parquet",
        "--classifier",
        "data/runs/fashion-mnist-train-test-s2/classifier.parquet",
        "--out",
        s(&other),
    ]);
    fails(
        &["merge", s(&parts[0]), s(&other)],
        "was measured with classifier",
    );
}

#[test]
fn bad_arguments_are_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.parquet");
    let feats = features();
    // Digits only: a sign or a space is a typo, not another way to write the number.
    for shard in [
        "3/3", "1/0", "a/b", "2", " 0/2", "+0/2", "0/+2", "0/", "0/-2",
    ] {
        fails(
            &["stats", &feats, "--shard", shard, "--out", s(&out)],
            "expected I/N with 0 ≤ I < N",
        );
    }
    fails(
        &["stats", "no/such/features.parquet", "--out", s(&out)],
        "no/such/features.parquet",
    );
    fails(&["merge", &feats], "not a neural-collapse partial");
    assert!(!out.exists());
}

/// A Python with pyarrow: `NC_PYTHON`, or the exporter's test virtualenv that scripts/test.sh
/// makes. `None` (the test is skipped, and says so) outside CI; in CI (`CI=true`) it must be
/// there.
fn pyarrow_python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("NC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-nc-export/bin/python"));
    let has_pyarrow = Command::new(&python)
        .args(["-c", "import pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_pyarrow {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "no Python with pyarrow at {} in CI",
        python.display()
    );
    eprintln!("skipped: no Python with pyarrow at {}", python.display());
    None
}

/// pyarrow reads a partial and its format version (when a Python with pyarrow is at hand:
/// `NC_PYTHON`, or the exporter's test virtualenv that scripts/test.sh makes).
#[test]
fn pyarrow_reads_a_partial() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(python) = pyarrow_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("p.parquet");
    ok(&["stats", &features(), "--shard", "0/2", "--out", s(&part)]);
    let script = r#"
import json, sys
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
kv = pq.ParquetFile(sys.argv[1]).metadata.metadata
groups = t.filter(t["class"].is_null())
classes = t.filter(t["class"].is_valid())
print(json.dumps({
    "version": kv[b"neural_collapse_partial"].decode(),
    "kind": kv[b"neural_collapse_partial_kind"].decode(),
    "columns": t.column_names,
    "groups": groups.num_rows,
    "rows": sum(classes["count"].to_pylist()),
    "dim": groups["dim"].to_pylist()[0],
    "sum_len": len(classes["sum"].to_pylist()[0]),
}))
"#;
    let o = Command::new(&python)
        .args(["-c", script, s(&part)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], "1");
    assert_eq!(v["kind"], "pass1");
    assert_eq!(v["dim"], 128);
    assert_eq!(v["sum_len"], 128);
    // Shard 0 of 2 holds the first half of the rows.
    let scan = neural_collapse::features::FeatureScan::open(root.join(features())).unwrap();
    let n = scan.load().unwrap().n_samples() as u64;
    assert_eq!(v["rows"].as_u64().unwrap(), n / 2);
    assert_eq!(
        v["columns"],
        serde_json::json!([
            "run",
            "seed",
            "layer",
            "epoch",
            "split",
            "class",
            "dim",
            "count",
            "sum",
            "scatter",
            "pass2_rows",
            "nc1_sum",
            "nc4_mismatches",
            "means_id",
            "classifier",
            "classifier_id"
        ])
    );
}

/// A partial whose pass-2 numbers cannot come from `stats` (a negative sum of squares, an
/// infinite NC1 sum, more NC4 mismatches than rows) is refused by name at `merge`, in one line
/// with exit 2, instead of printing a negative NC1 or an NC4 of 1.8e17 (found by fuzzing).
#[test]
fn impossible_pass2_values_in_a_partial_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("c.parquet");
    let feats = features();
    ok(&["stats", feats.as_str(), "--out", s(&part)]);
    let good = neural_collapse::partial::Partial::read(&part).unwrap();
    assert!(!good.sums.is_empty());
    type Edit = fn(&mut neural_collapse::stream::ResidualSums);
    let edits: [(Edit, &str); 3] = [
        (|r| r.scatter[1] = -1.0, "column `scatter` is -1 at row"),
        (
            |r| r.nc1_sum = f64::INFINITY,
            "column `nc1_sum` is inf at row",
        ),
        (|r| r.nc4_mismatches = Some(r.rows + 1), "more than its"),
    ];
    for (i, (edit, needle)) in edits.into_iter().enumerate() {
        let mut bad = good.clone();
        let first = bad.sums.values_mut().next().unwrap();
        if first.1.nc4_mismatches.is_none() && i == 2 {
            // Without a classifier the partial has no NC4 column to damage: give it one.
            for (_, r) in bad.sums.values_mut() {
                r.nc4_mismatches = Some(0);
            }
        }
        edit(&mut bad.sums.values_mut().next().unwrap().1);
        let path = dir.path().join(format!("bad{i}.parquet"));
        bad.write(&path).unwrap();
        fails(&["merge", s(&path)], needle);
    }
    // The unedited partial still merges.
    ok(&["merge", s(&part)]);
}

/// Inputs and outputs that would lose or double data, found by fuzzing: the same partial
/// merged twice (its rows counted twice), a result written over an input, a partial written
/// over something that is not a regular file (a rename would replace a device node), a
/// `run.json` whose seed is not an integer (it was read as "no seed"), and a resumption under
/// another run name and seed (the stale partial was kept). Each is one line, exit 2, except the
/// resumption, which now recomputes.
#[test]
fn inputs_and_outputs_that_would_lose_or_double_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let feats = features();
    let part = dir.path().join("c.parquet");
    ok(&["stats", feats.as_str(), "--out", s(&part)]);
    fails(
        &["merge", s(&part), s(&part)],
        "are also in the partials merged before it",
    );
    fails(
        &[
            "merge",
            s(&part),
            "--format",
            "parquet",
            "--output",
            s(&part),
        ],
        "is also a partial being merged",
    );
    fails(
        &["stats", feats.as_str(), "--out", feats.as_str()],
        "--out is also an input",
    );
    let sub = dir.path().join("a-directory.parquet");
    std::fs::create_dir(&sub).unwrap();
    fails(
        &["stats", feats.as_str(), "--out", s(&sub)],
        "exists and is not a regular file",
    );
    assert!(sub.is_dir());

    // A run directory whose run.json has a seed that is not an integer.
    let run = dir.path().join("run-x");
    std::fs::create_dir(&run).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(RUN);
    std::fs::copy(
        src.join("features-fc3.parquet"),
        run.join("features-fc3.parquet"),
    )
    .unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("run.json")).unwrap()).unwrap();
    meta["seed"] = "x".into();
    std::fs::write(run.join("run.json"), meta.to_string()).unwrap();
    let f = run.join("features-fc3.parquet");
    let out = dir.path().join("x.parquet");
    fails(
        &["stats", s(&f), "--out", s(&out)],
        "run.json: \"seed\" is \"x\"; expected an integer",
    );

    // Resumption under other names recomputes: without run.json, --run/--seed name the groups.
    std::fs::remove_file(run.join("run.json")).unwrap();
    for (name, seed) in [("a", "1"), ("b", "2")] {
        let args = [
            "stats",
            s(&f),
            "--out",
            s(&out),
            "--run",
            name,
            "--seed",
            seed,
        ];
        ok(&args);
    }
    let table = ok(&["merge", s(&out)]);
    assert!(table.starts_with("run b, seed 2, layer fc3"), "{table}");

    // A run.json that is a link to nothing, or a FIFO, is named: reading a FIFO would block
    // for ever, and skipping either would give the groups --run's name instead of the run's.
    std::os::unix::fs::symlink(dir.path().join("gone.json"), run.join("run.json")).unwrap();
    fails(&["stats", s(&f), "--out", s(&out)], "run.json");
    std::fs::remove_file(run.join("run.json")).unwrap();
    let made = Command::new("mkfifo")
        .arg(run.join("run.json"))
        .status()
        .is_ok_and(|st| st.success());
    if made {
        fails(
            &["stats", s(&f), "--out", s(&out)],
            "run.json: is a FIFO (named pipe), not a regular file",
        );
    }
}

/// A damaged partial (two bytes of a valid one changed, found by fuzzing) for which polars
/// returns a column shorter than the frame: reading it indexed past the column's end and
/// panicked (exit 101). Now one line naming the column, exit 2.
#[test]
fn a_partial_whose_column_is_shorter_than_the_frame_is_refused() {
    let path = "tests/fixtures/partial-damaged-short-column.parquet";
    let o = run(&["merge", path]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // A release build reads the short column (and the partial reader names it); in a debug
    // build polars' own length assertion fires first, under the reader's guard.
    assert!(
        err.contains(&format!(
            "{path}: column `means_id` has 8 values for 44 rows (the file is damaged)"
        )) || err.contains(&format!(
            "{path}: polars failed reading the file (damaged or truncated?): assertion `left == right` failed   left: 8  right: 44"
        )),
        "{err}"
    );
}

/// A partial whose numbers are stored as strings (or a float column as integers) is refused
/// naming the column and both types: it was read by parsing the strings (found by fuzzing).
/// The copy keeps the partial's header (its key-value metadata), so only the type is wrong.
#[test]
fn a_partial_column_of_the_wrong_type_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("c.parquet");
    ok(&["stats", features().as_str(), "--out", s(&part)]);
    let file = std::fs::File::open(&part).unwrap();
    let mut reader = ParquetReader::new(file);
    let kv: Vec<(String, String)> = reader
        .get_metadata()
        .unwrap()
        .key_value_metadata()
        .iter()
        .flatten()
        .filter_map(|kv| kv.value.clone().map(|v| (kv.key.clone(), v)))
        // The partial's own keys (not the Arrow schema of the original types).
        .filter(|(k, _)| k.starts_with("neural_collapse"))
        .collect();
    let df = reader.finish().unwrap();
    let cases = [
        (
            "count",
            DataType::String,
            "column `count` has type str, expected u64",
        ),
        (
            "nc1_sum",
            DataType::Int64,
            "column `nc1_sum` has type i64, expected f64",
        ),
        (
            "run",
            DataType::Float64,
            "column `run` has type f64, expected str",
        ),
    ];
    for (i, (column, to, needle)) in cases.into_iter().enumerate() {
        let mut changed = df.clone();
        let cast = changed.column(column).unwrap().cast(&to).unwrap();
        changed.with_column(cast).unwrap();
        let path = dir.path().join(format!("typed{i}.parquet"));
        ParquetWriter::new(std::fs::File::create(&path).unwrap())
            .with_key_value_metadata(Some(KeyValueMetadata::from_static(kv.clone())))
            .finish(&mut changed)
            .unwrap();
        fails(&["merge", s(&path)], needle);
    }
    // The same copy with the types kept merges.
    let path = dir.path().join("same.parquet");
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .with_key_value_metadata(Some(KeyValueMetadata::from_static(kv)))
        .finish(&mut df.clone())
        .unwrap();
    ok(&["merge", s(&path)]);
}

/// A classifier file rewritten in place between `stats` and `merge` (a retrained model
/// exported to the same path) is refused at merge: NC4 was measured with the old weights, NC2 of
/// `W` and NC3 would come from the new ones. Running `stats` again recomputes (the partial's
/// inputs and options are unchanged, but its classifier is not), and the merge then equals
/// `metrics` with the new classifier. Found by fuzzing (the path was reopened at merge).
#[test]
fn a_classifier_rewritten_after_stats_is_refused_at_merge_and_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let feats = "data/runs/fashion-mnist-train-test-s1/features-fc3.parquet";
    let clf = dir.path().join("classifier.parquet");
    std::fs::copy(
        "data/runs/fashion-mnist-train-test-s1/classifier.parquet",
        &clf,
    )
    .unwrap();
    let part = dir.path().join("p.parquet");
    let stats = ["stats", feats, "--classifier", s(&clf), "--out", s(&part)];
    ok(&stats);
    ok(&["merge", s(&part)]);
    std::fs::copy(
        "data/runs/fashion-mnist-train-test-s2/classifier.parquet",
        &clf,
    )
    .unwrap();
    fails(
        &["merge", s(&part)],
        "has changed since the partials were measured with it",
    );
    let again = run(&stats);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert!(!err.contains("skipped"), "{err}");
    let got = json(&ok(&["merge", s(&part), "--format", "json"]));
    let want = json(&ok(&[
        "metrics",
        feats,
        "--classifier",
        s(&clf),
        "--format",
        "json",
    ]));
    assert_json_same(&got, &want);
    // And now a resumption does skip.
    let third = run(&stats);
    assert!(String::from_utf8_lossy(&third.stderr).contains("skipped"));
}

/// A partial with a column name twice (pyarrow writes such a file; polars reads the first and
/// ignores the other) is refused by name: which one was meant is unknown. With doubled counts
/// first, merge said "pass 2 covers 200 rows but the group has 400"; second, it printed the
/// original report.
#[test]
fn a_partial_column_given_twice_is_refused() {
    let Some(python) = pyarrow_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("p.parquet");
    ok(&["stats", &features(), "--out", s(&part)]);
    let script = r#"
import sys
import pyarrow as pa, pyarrow.parquet as pq
src, first, last = sys.argv[1:4]
t = pq.read_table(src)
keep = {k: v for k, v in pq.ParquetFile(src).metadata.metadata.items()
        if k.startswith(b"neural_collapse")}
count = t.column("count").to_pylist()
doubled = pa.array([None if v is None else 2 * v for v in count], pa.uint64())
for out, cols, names in [
    (first, [doubled] + list(t.columns), ["count"] + t.column_names),
    (last, list(t.columns) + [doubled], t.column_names + ["count"]),
]:
    pq.write_table(pa.Table.from_arrays(cols, names=names).replace_schema_metadata(keep), out)
"#;
    let (first, last) = (
        dir.path().join("first.parquet"),
        dir.path().join("last.parquet"),
    );
    let o = Command::new(&python)
        .args(["-c", script, s(&part), s(&first), s(&last)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for path in [&first, &last] {
        fails(&["merge", s(path)], "column `count` appears more than once");
    }
    ok(&["merge", s(&part)]);
}
