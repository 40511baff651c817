//! Round trips and bad input for the Arrow IPC / Feather reader and for directories of Parquet
//! files (`features::dir`), on files written by pyarrow: the committed fixtures of
//! tests/fixtures/formats/make.py, and the same script run live when a Python with pyarrow is
//! found. Every checkpoint's metrics are compared with those of the single Parquet file that
//! holds the same rows, and the loaded features with the formula of make.py computed here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::Array2;
use neural_collapse::features::{write_features, FeatureError, FeatureScan, Features};
use neural_collapse::metrics::NcParams;

const C: usize = 4;
const D: usize = 6;
const N: usize = 24;
const EPOCHS: [u32; 3] = [0, 5, 10];
const SPLITS: [&str; 2] = ["train", "test"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats")
}

/// make.py's block for (epoch, split), computed independently of any reader.
fn block(e: u32, split: &str) -> (Array2<f32>, Vec<u32>) {
    let labels: Vec<u32> = (0..N as u32).map(|r| r % C as u32).collect();
    let x = Array2::from_shape_fn((N, D), |(r, j)| {
        let c = labels[r] as i64;
        let mu = ((2 * c + j as i64) % 6) as f64 - 2.5;
        let noise = ((5 * r as i64 + 3 * j as i64 + e as i64) % 7 - 3) as f64 / 8.0;
        let shift = if split == "test" { 0.25 } else { 0.0 };
        (mu * (1.0 + e as f64 / 5.0) + noise + shift) as f32
    });
    (x, labels)
}

/// Folders holding make.py's output: the committed fixtures, and a live run when pyarrow is
/// installed (`NC_PYTHON`, else `.venv-nc-export/bin/python`, else `python3`).
fn fixture_sets() -> Vec<(PathBuf, Option<tempfile::TempDir>)> {
    let mut sets = vec![(fixtures(), None)];
    let tmp = tempfile::tempdir().unwrap();
    let ran = common::run_fixture_script(&fixtures().join("make.py"), tmp.path());
    if ran {
        sets.push((tmp.path().to_path_buf(), Some(tmp)));
    } else {
        eprintln!("formats: no Python with pyarrow found; only the committed fixtures are read");
    }
    sets
}

/// The largest |difference| over every metric of two reports of the same rows.
fn max_metric_difference(a: &Features, b: &Features) -> f64 {
    let ra = NcParams::new().measure_features(a).unwrap();
    let rb = NcParams::new().measure_features(b).unwrap();
    let (ma, mb) = (ra.metrics(), rb.metrics());
    assert_eq!(ma.len(), mb.len());
    ma.iter()
        .zip(&mb)
        .map(|((na, va), (nb, vb))| {
            assert_eq!(na, nb);
            assert_eq!(va.is_nan(), vb.is_nan(), "{na}");
            if va.is_nan() {
                0.0
            } else {
                (va - vb).abs()
            }
        })
        .fold(0.0, f64::max)
}

/// Every checkpoint of `scan` equals make.py's data and measures as `reference` does;
/// `scale` multiplies the expected features (layer b of per-epoch-layer is doubled).
fn assert_same_as_reference(scan: &FeatureScan, reference: &FeatureScan, scale: f32) -> f64 {
    let expected: Vec<(u32, String)> = EPOCHS
        .iter()
        .flat_map(|&e| SPLITS.iter().map(move |s| (e, s.to_string())))
        .collect();
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(scan.checkpoints().unwrap(), sorted, "{scan:?}");
    let mut worst = 0.0f64;
    for (e, s) in &expected {
        let f = scan.epoch(*e).split(s.clone()).load().unwrap();
        let (x, labels) = block(*e, s);
        assert_eq!(f.x, x.mapv(|v| v * scale), "{scan:?} epoch {e} {s}");
        assert_eq!(f.labels, labels);
        assert_eq!(f.sample, Some((0..N as u32).collect()));
        assert_eq!(
            f.pred,
            Some((0..N as u32).map(|r| (r + e) % C as u32).collect())
        );
        assert_eq!((f.epoch, f.split.as_deref()), (Some(*e), Some(s.as_str())));
        if scale == 1.0 {
            let g = reference.epoch(*e).split(s.clone()).load().unwrap();
            worst = worst.max(max_metric_difference(&f, &g));
        }
    }
    assert!(worst <= 1e-12, "{scan:?}: {worst}");
    worst
}

// ---- Arrow IPC / Feather ----------------------------------------------------------------------

#[test]
fn ipc_and_feather_files_measure_as_the_parquet_file() {
    for (dir, _keep) in fixture_sets() {
        let reference = FeatureScan::open(dir.join("reference.parquet")).unwrap();
        for name in [
            "features-fc2.feather", // pyarrow's default: LZ4-compressed buffers
            "uncompressed.arrow",
            "zstd.ipc",                   // ZSTD, several record batches
            "chunked-uncompressed.arrow", // batches sliced out of one table
            "lists.feather",              // x a list of f64, label i64 (as pandas writes)
        ] {
            let scan = FeatureScan::open(dir.join(name)).unwrap();
            assert_eq!(scan.dim(), (name != "lists.feather").then_some(D));
            let worst = assert_same_as_reference(&scan, &reference, 1.0);
            eprintln!(
                "{}: largest metric difference {worst:e}",
                dir.join(name).display()
            );
        }
        assert_eq!(
            FeatureScan::open(dir.join("features-fc2.feather"))
                .unwrap()
                .layer(),
            "fc2"
        );
        // A run directory lists an IPC feature file as its layer.
        let run = neural_collapse::features::Run::open(&dir).unwrap();
        assert_eq!(run.layers(), vec!["fc2"]);
        assert_same_as_reference(&run.features("fc2").unwrap(), &reference, 1.0);
    }
}

fn ipc_error(name: &str) -> (FeatureError, String) {
    let path = fixtures().join("bad").join(name);
    let e = match FeatureScan::open(&path) {
        Err(e) => e,
        Ok(scan) => scan.load().unwrap_err(),
    };
    let msg = e.to_string();
    assert!(msg.contains(path.to_str().unwrap()), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    (e, msg)
}

#[test]
fn ipc_bad_input_gets_the_parquet_readers_errors() {
    let (e, m) = ipc_error("label-string.feather");
    assert!(
        matches!(&e, FeatureError::ColumnType { column, .. } if column == "label"),
        "{m}"
    );
    let (e, m) = ipc_error("nan.feather");
    assert!(
        matches!(&e, FeatureError::NonFinite { row: 7, component: 2, value, .. } if value.is_nan()),
        "{m}"
    );
    let (e, m) = ipc_error("ragged.feather");
    assert!(
        matches!(
            &e,
            FeatureError::RaggedFeatures {
                row: 9,
                len: 5,
                expected: 6,
                ..
            }
        ),
        "{m}"
    );
    // polars 0.52 cannot read this one (LZ4 batches sliced out of a longer string column, as
    // pyarrow writes tables of several chunks): the message says how to write it instead.
    let (e, m) = ipc_error("chunked-lz4.feather");
    assert!(
        matches!(e, FeatureError::Polars { .. }) && m.contains("compression=\"uncompressed\""),
        "{m}"
    );
    let (e, m) = ipc_error("no-label.feather");
    assert!(
        matches!(&e, FeatureError::MissingColumn { column, .. } if column == "label"),
        "{m}"
    );
}

/// A truncated or garbled IPC file is a one-line error naming it (polars' message), never a
/// panic; cut at several places (inside the footer, inside a record batch, inside the header).
#[test]
fn truncated_ipc_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["features-fc2.feather", "uncompressed.arrow", "zstd.ipc"] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        for keep in [bytes.len() - 3, bytes.len() - 40, bytes.len() / 2, 12, 0] {
            let path = tmp.path().join(format!("cut-{keep}-{name}"));
            std::fs::write(&path, &bytes[..keep]).unwrap();
            let r = std::panic::catch_unwind(|| {
                FeatureScan::open(&path).and_then(|s| s.load().map(|_| ()))
            });
            let e = r
                .unwrap_or_else(|_| panic!("{name} cut at {keep}: panicked"))
                .unwrap_err();
            let m = e.to_string();
            assert!(
                matches!(e, FeatureError::Polars { .. }) && m.contains(path.to_str().unwrap()),
                "{name} cut at {keep}: {m}"
            );
            assert!(!m.contains('\n'), "{m}");
        }
        // A corrupted middle (the record batches' bytes overwritten) is an error too.
        let mut garbled = bytes.clone();
        let mid = garbled.len() / 2;
        for b in &mut garbled[mid - 64..mid + 64] {
            *b = 0xff;
        }
        let path = tmp.path().join(format!("garbled-{name}"));
        std::fs::write(&path, &garbled).unwrap();
        let r = std::panic::catch_unwind(|| {
            FeatureScan::open(&path).and_then(|s| s.load().map(|f| f.x))
        });
        match r.unwrap_or_else(|_| panic!("{name} garbled: panicked")) {
            Err(e) => assert!(e.to_string().contains(path.to_str().unwrap()), "{e}"),
            // Overwritten bytes that happen to decode must still give finite, checked values.
            Ok(x) => assert!(x.iter().all(|v| v.is_finite())),
        }
    }
}

// ---- directories of Parquet files -------------------------------------------------------------

#[test]
fn a_directory_of_one_file_per_checkpoint_measures_as_one_file() {
    for (dir, _keep) in fixture_sets() {
        let reference = FeatureScan::open(dir.join("reference.parquet")).unwrap();
        // epoch-<E>.parquet; epoch 5 has no epoch column (the name supplies it).
        let scan = FeatureScan::open(dir.join("per-epoch/fc2")).unwrap();
        assert_eq!(scan.layer(), "fc2");
        assert_eq!(scan.files().len(), 3);
        assert_same_as_reference(&scan, &reference, 1.0);
        // The whole directory at once: rows in checkpoint order.
        let all = scan.load().unwrap();
        let whole = reference.load().unwrap();
        assert_eq!(all.x, whole.x);
        assert_eq!(all.labels, whole.labels);
        // epoch-<E>-<layer>.parquet: one layer at a time, or the only one.
        let two = dir.join("per-epoch-layer");
        assert_eq!(FeatureScan::dir_layers(&two).unwrap(), vec!["a", "b"]);
        let a = FeatureScan::open_layer(&two, "a").unwrap();
        assert_eq!(a.layer(), "a");
        assert_same_as_reference(&a, &reference, 1.0);
        assert_same_as_reference(
            &FeatureScan::open_layer(&two, "b").unwrap(),
            &reference,
            2.0,
        );
        // features-<layer>.parquet: one file per layer (label i16 in fc1).
        let per_layer = dir.join("per-layer");
        for layer in ["fc1", "fc2"] {
            let s = FeatureScan::open_layer(&per_layer, layer).unwrap();
            assert_same_as_reference(&s, &reference, 1.0);
        }
    }
}

/// The CLI's `metrics` and `probe` read a directory and an IPC file as the Parquet file.
#[test]
fn the_cli_reads_directories_and_ipc_files() {
    let exe = env!("CARGO_BIN_EXE_neural-collapse");
    let out = |cmd: &str, path: &Path| {
        let o = Command::new(exe)
            .args([cmd, path.to_str().unwrap(), "--format", "json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let dir = fixtures();
    for cmd in ["metrics", "probe"] {
        let reference = out(cmd, &dir.join("reference.parquet"));
        assert!(reference.len() > 100, "{reference}");
        assert_eq!(out(cmd, &dir.join("per-epoch/fc2")), reference, "{cmd}");
        assert_eq!(
            out(cmd, &dir.join("features-fc2.feather")),
            reference,
            "{cmd}"
        );
    }
    // A directory of two layers is one line naming them, exit code 2.
    let o = Command::new(exe)
        .args(["metrics", dir.join("per-epoch-layer").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("several layers (a, b)"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// Writes `epochs` of make.py's data into `dir` as `epoch-<E>.parquet` with the crate's writer.
fn write_epochs(dir: &Path, epochs: &[u32]) {
    std::fs::create_dir_all(dir).unwrap();
    for &e in epochs {
        let items: Vec<Features> = SPLITS
            .iter()
            .map(|s| {
                let (x, y) = block(e, s);
                Features::new(x, y).with_epoch(e).with_split(*s)
            })
            .collect();
        write_features(dir.join(format!("epoch-{e}.parquet")), &items).unwrap();
    }
}

fn dir_error(dir: &Path) -> (FeatureError, String) {
    let e = match FeatureScan::open(dir) {
        Err(e) => e,
        Ok(scan) => scan.load().unwrap_err(),
    };
    let m = e.to_string();
    assert!(!m.contains('\n'), "{m}");
    (e, m)
}

#[test]
fn directory_bad_input() {
    let tmp = tempfile::tempdir().unwrap();

    // No feature file at all (other files are ignored).
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("run.json"), "{}").unwrap();
    let (e, m) = dir_error(&empty);
    assert!(matches!(e, FeatureError::EmptyDirectory { .. }), "{m}");
    assert!(m.contains("epoch-<E>.parquet"), "{m}");

    // A Parquet file whose name matches no pattern.
    let odd = tmp.path().join("odd");
    write_epochs(&odd, &[0]);
    std::fs::copy(odd.join("epoch-0.parquet"), odd.join("ep5.parquet")).unwrap();
    let (e, m) = dir_error(&odd);
    assert!(
        matches!(&e, FeatureError::UnmatchedFileName { path, .. } if path.ends_with("ep5.parquet")),
        "{m}"
    );

    // A subdirectory is ignored, unless it is named like a Parquet file (a partitioned dataset).
    std::fs::create_dir(odd.join("notes")).unwrap();
    std::fs::remove_file(odd.join("ep5.parquet")).unwrap();
    assert_eq!(FeatureScan::open(&odd).unwrap().files().len(), 1);
    std::fs::create_dir(odd.join("epoch-9.parquet")).unwrap();
    let (e, m) = dir_error(&odd);
    assert!(
        matches!(&e, FeatureError::NotAFile { path, .. } if path.ends_with("epoch-9.parquet")),
        "{m}"
    );

    // The name says epoch 5, the column 0.
    let wrong = tmp.path().join("wrong");
    write_epochs(&wrong, &[0]);
    std::fs::rename(wrong.join("epoch-0.parquet"), wrong.join("epoch-5.parquet")).unwrap();
    let (e, m) = dir_error(&wrong);
    assert!(
        matches!(&e, FeatureError::NameMismatch { named, found, row: 0, .. } if named == "5" && found == "0"),
        "{m}"
    );

    // Two files for one checkpoint.
    let dup = tmp.path().join("dup");
    write_epochs(&dup, &[0]);
    std::fs::copy(dup.join("epoch-0.parquet"), dup.join("epoch-000.pq")).unwrap();
    let (e, m) = dir_error(&dup);
    assert!(
        matches!(e, FeatureError::DirectoryLayout { .. }) && m.contains("two files for epoch 0"),
        "{m}"
    );

    // Feature widths that differ between files.
    let widths = tmp.path().join("widths");
    write_epochs(&widths, &[0]);
    let (x, y) = block(5, "train");
    let narrow = x.slice(ndarray::s![.., ..3]).to_owned();
    write_features(
        widths.join("epoch-5.parquet"),
        &[Features::new(narrow, y).with_epoch(5).with_split("train")],
    )
    .unwrap();
    let (e, m) = dir_error(&widths);
    assert!(
        matches!(e, FeatureError::DirectoryLayout { .. })
            && m.contains("width 3")
            && m.contains("width 6"),
        "{m}"
    );

    // Several layers opened as one; an unknown layer.
    let layers = fixtures().join("per-epoch-layer");
    let (e, _) = dir_error(&layers);
    assert!(matches!(e, FeatureError::SeveralLayers { .. }));
    let e = FeatureScan::open_layer(&layers, "c").unwrap_err();
    assert!(
        matches!(&e, FeatureError::UnknownLayer { available, .. } if available == "a, b"),
        "{e}"
    );

    // A wrong dtype in one file (labels as strings): the error names that file and column.
    let typed = tmp.path().join("typed");
    write_epochs(&typed, &[0]);
    {
        use polars::prelude::*;
        let (x, _) = block(3, "train");
        let mut columns = vec![
            Column::new("split".into(), vec!["train"; N]),
            Column::new("label".into(), vec!["cat"; N]),
        ];
        for j in 0..D {
            columns.push(Column::new(format!("x_{j}").into(), x.column(j).to_vec()));
        }
        let mut df = DataFrame::new(columns).unwrap();
        let mut f = std::fs::File::create(typed.join("epoch-3.parquet")).unwrap();
        ParquetWriter::new(&mut f).finish(&mut df).unwrap();
    }
    let (e, m) = dir_error(&typed);
    assert!(
        matches!(&e, FeatureError::ColumnType { path, column, .. }
            if path.ends_with("epoch-3.parquet") && column == "label"),
        "{m}"
    );

    // A truncated file: the error names it.
    let typed = tmp.path().join("truncated");
    write_epochs(&typed, &[0]);
    std::fs::copy(
        fixtures().join("bad/label-string.feather"),
        typed.join("not-read.feather"),
    )
    .unwrap(); // not Parquet: ignored
    let bytes = std::fs::read(typed.join("epoch-0.parquet")).unwrap();
    std::fs::write(typed.join("epoch-7.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let (e, m) = dir_error(&typed);
    assert!(
        matches!(e, FeatureError::Polars { .. }) && m.contains("epoch-7.parquet"),
        "truncated file: {m}"
    );

    // A NaN in the second file: the error names that file and its own row.
    let nan = tmp.path().join("nan");
    write_epochs(&nan, &[0]);
    let (mut x, y) = block(5, "test");
    x[[3, 1]] = f32::NAN;
    let (x5, y5) = block(5, "train");
    write_features(
        nan.join("epoch-5.parquet"),
        &[
            Features::new(x5, y5).with_epoch(5).with_split("train"),
            Features::new(x, y).with_epoch(5).with_split("test"),
        ],
    )
    .unwrap();
    let scan = FeatureScan::open(&nan).unwrap();
    assert!(scan.epoch(0).load().is_ok());
    let e = scan.epoch(5).split("test").load().unwrap_err();
    assert!(
        matches!(&e, FeatureError::NonFinite { path, row, component: 1, .. }
            if path.ends_with("epoch-5.parquet") && *row == (N + 3) as u64),
        "{e}"
    );
    // Labels of another type in one file are validated as in one file (negative label).
    let neg = tmp.path().join("neg");
    write_epochs(&neg, &[0]);
    let (x, _) = block(5, "train");
    let df_path = neg.join("epoch-5.parquet");
    {
        // A wide table (x_0 … x_5) without `sample`, labels i64 with a -1 at row 11.
        use polars::prelude::*;
        let labels: Vec<i64> = (0..N as i64)
            .map(|r| if r == 11 { -1 } else { r % 4 })
            .collect();
        let mut columns = vec![
            Column::new("split".into(), vec!["train"; N]),
            Column::new("label".into(), labels),
        ];
        for j in 0..D {
            columns.push(Column::new(format!("x_{j}").into(), x.column(j).to_vec()));
        }
        let mut df = DataFrame::new(columns).unwrap();
        let mut f = std::fs::File::create(&df_path).unwrap();
        ParquetWriter::new(&mut f).finish(&mut df).unwrap();
    }
    // The crate's files have `x` and `sample`; this one neither: a layout error naming it.
    let (e, m) = dir_error(&neg);
    assert!(
        matches!(e, FeatureError::DirectoryLayout { .. }) && m.contains("epoch-5.parquet"),
        "{m}"
    );
    std::fs::remove_file(neg.join("epoch-0.parquet")).unwrap();
    let e = FeatureScan::open(&neg).unwrap().load().unwrap_err();
    assert!(
        matches!(&e, FeatureError::InvalidInteger { path, column, row: Some(11), .. }
            if path.ends_with("epoch-5.parquet") && column == "label"),
        "{e}"
    );
}

/// A query for one checkpoint of a directory of `epoch-<E>` files reads only that file: it still
/// loads after the other files are removed (they would be "no such file" if they were scanned).
#[test]
fn one_checkpoint_reads_one_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fc2");
    write_epochs(&dir, &EPOCHS);
    let scan = FeatureScan::open(&dir).unwrap();
    let whole = scan.load().unwrap();
    assert_eq!(whole.x.nrows(), EPOCHS.len() * SPLITS.len() * N);
    std::fs::remove_file(dir.join("epoch-0.parquet")).unwrap();
    std::fs::remove_file(dir.join("epoch-10.parquet")).unwrap();
    for s in SPLITS {
        let f = scan.epoch(5).split(s).load().unwrap();
        assert_eq!(f.x, block(5, s).0);
    }
    // The whole directory does read the removed files.
    let e = scan.load().unwrap_err();
    assert!(matches!(e, FeatureError::Polars { .. }), "{e}");
    // An epoch no file holds: no rows, naming the filter.
    let e = scan.epoch(7).load().unwrap_err();
    assert!(
        matches!(&e, FeatureError::NoRows { filter, .. } if filter == "epoch = 7"),
        "{e}"
    );
}
