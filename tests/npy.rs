//! Tests of the numpy reader (`neural_collapse::npy`): files written by numpy (committed fixtures
//! from tests/fixtures/npy/make.py, and the same script run live when numpy is installed), files
//! written by a hand-rolled `.npy` / zip writer below (so every case runs without numpy), metrics
//! equal to the Parquet route's, and one test per error.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use neural_collapse::features::{write_features, FeatureScan, Features};
use neural_collapse::metrics::NcParams;
use neural_collapse::npy::{
    load_npy, load_npz, read_npy_header, write_npy_f32, write_npy_u32, NpyError, NpyFeatures,
};
use neural_collapse::stats::ClassStats;

const N: usize = 60;
const D: usize = 5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/npy")
        .join(name)
}

/// The fixtures' data (see make.py): exact in f16, f32 and f64.
fn expected() -> (Array2<f32>, Vec<u32>) {
    let y: Vec<u32> = (0..N as u32).map(|i| i % 3).collect();
    let x = Array2::from_shape_fn((N, D), |(i, j)| {
        let mu = ((3 * y[i] as usize + j) % 5) as f32;
        mu + (((7 * i + 3 * j) % 11) as f32 - 5.0) / 8.0
    });
    (x, y)
}

// ---- a hand-rolled writer, independent of the crate's ---------------------------------------

/// A `.npy` file: `version` 1, 2 or 3, the header dict as numpy writes it, `data` raw.
fn npy(version: u8, descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let f = if fortran { "True" } else { "False" };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}");
    let prefix = if version == 1 { 10 } else { 12 };
    while (prefix + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend([version, 0]);
    if version == 1 {
        out.extend((dict.len() as u16).to_le_bytes());
    } else {
        out.extend((dict.len() as u32).to_le_bytes());
    }
    out.extend(dict.as_bytes());
    out.extend(data);
    out
}

fn le<T: Copy, const K: usize>(v: &[T], f: impl Fn(T) -> [u8; K]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// A zip archive of `(name, bytes, deflate)` members (what np.savez writes, minus ZIP64).
fn zip(members: &[(&str, Vec<u8>, bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data, deflate) in members {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let body = if *deflate {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        } else {
            data.clone()
        };
        let method: u16 = if *deflate { 8 } else { 0 };
        let offset = out.len() as u32;
        let common = |v: &mut Vec<u8>| {
            v.extend(20u16.to_le_bytes()); // version needed
            v.extend(0u16.to_le_bytes()); // flags
            v.extend(method.to_le_bytes());
            v.extend([0u8; 4]); // time, date
            v.extend(crc.sum().to_le_bytes());
            v.extend((body.len() as u32).to_le_bytes());
            v.extend((data.len() as u32).to_le_bytes());
            v.extend((name.len() as u16).to_le_bytes());
            v.extend(0u16.to_le_bytes()); // extra
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend(name.as_bytes());
        out.extend(&body);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes()); // version made by
        common(&mut central);
        central.extend([0u8; 10]); // comment length, disk, internal and external attributes
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((members.len() as u16).to_le_bytes());
    out.extend((members.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn f32_bytes(x: &Array2<f32>, fortran: bool) -> Vec<u8> {
    let v: Vec<f32> = if fortran {
        x.t().iter().copied().collect()
    } else {
        x.iter().copied().collect()
    };
    le(&v, f32::to_le_bytes)
}

fn labels_i64(y: &[u32]) -> Vec<u8> {
    le(y, |v| i64::from(v).to_le_bytes())
}

// ---- files written by numpy -----------------------------------------------------------------

#[test]
fn numpy_files_every_float_dtype_and_order() {
    let (x, y) = expected();
    for xs in [
        "c_f32.npy",
        "f_f64.npy",
        "c_f16.npy",
        "be_f64.npy",
        "f_f16.npy",
    ] {
        for ys in ["labels_i64.npy", "labels_u1.npy"] {
            let f = load_npy(fixture(xs), fixture(ys)).unwrap();
            assert_eq!(f.x, x, "{xs}");
            assert_eq!(f.labels, y, "{ys}");
            assert_eq!(f.layer.as_deref(), Some(&xs[..xs.len() - 4]));
        }
    }
    let h = read_npy_header(fixture("f_f64.npy")).unwrap();
    assert_eq!(
        (h.descr.as_str(), h.fortran_order, h.shape),
        ("<f8", true, vec![N, D])
    );
}

#[test]
fn numpy_npz_savez_and_savez_compressed() {
    let (x, y) = expected();
    let plain = load_npz(fixture("run.npz")).unwrap();
    let compressed = load_npz(fixture("run-compressed.npz")).unwrap();
    let keys: Vec<_> = plain
        .iter()
        .map(|f| (f.epoch, f.split.clone().unwrap()))
        .collect();
    assert_eq!(
        keys,
        [
            (Some(0), "test"),
            (Some(0), "train"),
            (Some(10), "test"),
            (Some(10), "train")
        ]
        .map(|(e, s)| (e, s.to_string()))
    );
    for (a, b) in plain.iter().zip(&compressed) {
        let rows: Vec<usize> = (0..N)
            .filter(|&i| {
                let e = if i < 30 { 0 } else { 10 };
                let s = if (i / 10) % 2 == 0 { "train" } else { "test" };
                Some(e) == a.epoch && Some(s) == a.split.as_deref()
            })
            .collect();
        assert_eq!(a.x, x.select(ndarray::Axis(0), &rows));
        assert_eq!(a.labels, rows.iter().map(|&i| y[i]).collect::<Vec<_>>());
        assert_eq!(a.sample, Some(rows.iter().map(|&i| i as u32 / 2).collect()));
        assert_eq!(a.layer.as_deref(), Some("run"));
        assert_eq!(
            (&a.x, &a.labels, a.epoch, &a.split),
            (&b.x, &b.labels, b.epoch, &b.split)
        );
        assert_eq!(b.sample, None);
    }
    // Scalar epoch and split, f16, layer from the name features-<layer>.npz.
    let one = load_npz(fixture("features-fc2.npz")).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].x, x);
    assert_eq!(
        (
            one[0].epoch,
            one[0].split.as_deref(),
            one[0].layer.as_deref()
        ),
        (Some(30), Some("test"), Some("fc2"))
    );
}

/// Runs tests/fixtures/npy/make.py with numpy into a temporary folder when a Python with numpy is
/// found (`NC_PYTHON`, else `.venv-nc-export/bin/python`, else `python3`) and reads the files.
#[test]
fn numpy_live_round_trip_when_numpy_is_installed() {
    let dir = tempfile::tempdir().unwrap();
    let ran = common::run_fixture_script(&fixture("make.py"), dir.path());
    if !ran {
        eprintln!("numpy_live_round_trip: no Python with numpy found; the committed fixtures were read instead");
        return;
    }
    let (x, y) = expected();
    let f = load_npy(
        dir.path().join("f_f16.npy"),
        dir.path().join("labels_i64.npy"),
    )
    .unwrap();
    assert_eq!((f.x, f.labels), (x.clone(), y));
    assert_eq!(
        load_npz(dir.path().join("run-compressed.npz"))
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        load_npz(dir.path().join("features-fc2.npz")).unwrap()[0].x,
        x
    );
}

// ---- the same data through the Parquet route --------------------------------------------------

fn max_metric_difference(a: &Features, b: &Features) -> f64 {
    let ra = NcParams::new().measure_features(a).unwrap();
    let rb = NcParams::new().measure_features(b).unwrap();
    let (ma, mb) = (ra.metrics(), rb.metrics());
    assert_eq!(ma.len(), mb.len());
    ma.iter()
        .zip(&mb)
        .map(|((na, va), (nb, vb))| {
            assert_eq!(na, nb);
            if va.is_nan() && vb.is_nan() {
                0.0
            } else {
                (va - vb).abs()
            }
        })
        .fold(0.0, f64::max)
}

#[test]
fn metrics_equal_to_the_parquet_route() {
    let dir = tempfile::tempdir().unwrap();
    for xs in ["c_f32.npy", "f_f64.npy", "c_f16.npy"] {
        let f = load_npy(fixture(xs), fixture("labels_i64.npy")).unwrap();
        let pq = dir.path().join("features-x.parquet");
        write_features(&pq, &[f.clone().with_epoch(0).with_split("train")]).unwrap();
        let g = FeatureScan::open(&pq).unwrap().load().unwrap();
        let diff = max_metric_difference(&f, &g);
        eprintln!("{xs}: largest |metric(npy) − metric(parquet)| = {diff:e}");
        assert!(diff <= 1e-12, "{xs}: {diff}");
    }
    // Each npz checkpoint against the same rows written to Parquet as one file.
    let parts = load_npz(fixture("run-compressed.npz")).unwrap();
    let pq = dir.path().join("features-run.parquet");
    write_features(&pq, &parts).unwrap();
    let scan = FeatureScan::open(&pq).unwrap();
    for f in &parts {
        let g = scan
            .epoch(f.epoch.unwrap())
            .split(f.split.clone().unwrap())
            .load()
            .unwrap();
        let diff = max_metric_difference(f, &g);
        assert!(diff <= 1e-12, "{:?} {:?}: {diff}", f.epoch, f.split);
    }
}

// ---- the hand-rolled writer ------------------------------------------------------------------

#[test]
fn hand_rolled_files_every_version_order_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = expected();
    let y_path = put(
        dir.path(),
        "y.npy",
        &npy(1, "<i8", false, "(60,)", &labels_i64(&y)),
    );
    for version in [1, 2, 3] {
        for fortran in [false, true] {
            let p = put(
                dir.path(),
                "x.npy",
                &npy(version, "<f4", fortran, "(60, 5)", &f32_bytes(&x, fortran)),
            );
            assert_eq!(
                load_npy(&p, &y_path).unwrap().x,
                x,
                "v{version} fortran {fortran}"
            );
        }
    }
    // f64 big-endian, f16 little-endian (1.5 = 0x3e00).
    let v: Vec<f64> = x.iter().map(|&a| f64::from(a)).collect();
    let p = put(
        dir.path(),
        "x.npy",
        &npy(1, ">f8", false, "(60, 5)", &le(&v, f64::to_be_bytes)),
    );
    assert_eq!(load_npy(&p, &y_path).unwrap().x, x);
    let p = put(
        dir.path(),
        "h.npy",
        &npy(
            1,
            "<f2",
            false,
            "(1, 3)",
            &le(&[0x3e00u16, 0xc000, 0x0001], u16::to_le_bytes),
        ),
    );
    let one = put(dir.path(), "one.npy", &npy(1, "|u1", false, "(1,)", &[4]));
    let f = load_npy(&p, &one).unwrap();
    assert_eq!(f.x.as_slice().unwrap(), &[1.5, -2.0, 2f32.powi(-24)]);
    // Every integer label dtype.
    let p = put(
        dir.path(),
        "x.npy",
        &npy(1, "<f4", false, "(60, 5)", &f32_bytes(&x, false)),
    );
    let labels: [(&str, Vec<u8>); 7] = [
        ("|i1", le(&y, |v| (v as i8).to_le_bytes())),
        ("<i2", le(&y, |v| (v as i16).to_le_bytes())),
        (">i4", le(&y, |v| (v as i32).to_be_bytes())),
        ("<u2", le(&y, |v| (v as u16).to_le_bytes())),
        ("<u4", le(&y, u32::to_le_bytes)),
        ("<u8", le(&y, |v| u64::from(v).to_le_bytes())),
        ("=i8", labels_i64(&y)),
    ];
    for (descr, bytes) in labels {
        let yp = put(dir.path(), "y2.npy", &npy(1, descr, false, "(60,)", &bytes));
        assert_eq!(load_npy(&p, &yp).unwrap().labels, y, "{descr}");
    }
    // npz: stored and deflated members, a 0-d epoch, a U split per row.
    let split: Vec<u8> = (0..N)
        .flat_map(|i| {
            let s = if i % 2 == 0 { "train" } else { "test\0" };
            s.chars()
                .flat_map(|c| (c as u32).to_le_bytes())
                .collect::<Vec<_>>()
        })
        .collect();
    for deflate in [false, true] {
        let archive = zip(&[
            (
                "x.npy",
                npy(1, "<f4", true, "(60, 5)", &f32_bytes(&x, true)),
                deflate,
            ),
            (
                "labels.npy",
                npy(1, "<i8", false, "(60,)", &labels_i64(&y)),
                deflate,
            ),
            (
                "epoch.npy",
                npy(1, "<i8", false, "()", &7i64.to_le_bytes()),
                deflate,
            ),
            ("split.npy", npy(1, "<U5", false, "(60,)", &split), deflate),
        ]);
        let parts = load_npz(put(dir.path(), "features-h.npz", &archive)).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].epoch, parts[0].split.as_deref()),
            (Some(7), Some("test"))
        );
        assert_eq!(
            parts[1].x,
            x.select(ndarray::Axis(0), &(0..N).step_by(2).collect::<Vec<_>>())
        );
        assert_eq!(parts[1].layer.as_deref(), Some("h"));
    }
}

#[test]
fn crate_writer_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = expected();
    write_npy_f32(dir.path().join("features-w.npy"), x.view()).unwrap();
    write_npy_u32(dir.path().join("labels.npy"), &y).unwrap();
    let f = load_npy(
        dir.path().join("features-w.npy"),
        dir.path().join("labels.npy"),
    )
    .unwrap();
    assert_eq!((f.x, f.labels, f.layer.as_deref()), (x, y, Some("w")));
    let bytes = std::fs::read(dir.path().join("labels.npy")).unwrap();
    assert_eq!(&bytes[..10], b"\x93NUMPY\x01\x00\x76\x00"); // 64-byte aligned header, as numpy's
}

// ---- bad input: one test per error ----------------------------------------------------------

/// The error, checked to be one line and to pass unchanged through `neural_collapse::Error`.
fn err_of(r: Result<impl std::fmt::Debug, NpyError>) -> (NpyError, String) {
    let msg = match &r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    };
    assert!(!msg.contains('\n'), "one line: {msg}");
    let wrapped = neural_collapse::Error::from(r.unwrap_err());
    assert_eq!(wrapped.to_string(), msg);
    match wrapped {
        neural_collapse::Error::Npy(e) => (e, msg),
        other => panic!("not an Npy error: {other}"),
    }
}

#[test]
fn bad_labels() {
    let x = fixture("c_f32.npy");
    let (e, m) = err_of(load_npy(&x, fixture("labels_neg.npy")));
    assert!(
        matches!(
            e,
            NpyError::InvalidInteger {
                index: 7,
                value: -1,
                ..
            }
        ),
        "{m}"
    );
    assert!(
        m.contains("labels_neg.npy") && m.contains("is negative"),
        "{m}"
    );
    let (e, m) = err_of(load_npy(&x, fixture("labels_float.npy")));
    assert!(
        matches!(e, NpyError::Dtype { .. }) && m.contains("'<f8'") && m.contains("`labels`"),
        "{m}"
    );
    let (e, m) = err_of(load_npy(&x, fixture("labels_2d.npy")));
    assert!(
        matches!(e, NpyError::Shape { .. }) && m.contains("(60, 1)"),
        "{m}"
    );
    let dir = tempfile::tempdir().unwrap();
    let big = put(
        dir.path(),
        "y.npy",
        &npy(
            1,
            "<u8",
            false,
            "(60,)",
            &le(&[5u64 << 32; 60], u64::to_le_bytes),
        ),
    );
    let (e, m) = err_of(load_npy(&x, &big));
    assert!(
        matches!(e, NpyError::InvalidInteger { index: 0, .. }) && m.contains("does not fit u32"),
        "{m}"
    );
    let short = put(
        dir.path(),
        "short.npy",
        &npy(1, "<i8", false, "(59,)", &labels_i64(&[0; 59])),
    );
    let (e, m) = err_of(load_npy(&x, &short));
    assert!(
        matches!(e, NpyError::LengthMismatch { len: 59, n: 60, .. }),
        "{m}"
    );
    assert!(m.contains("short.npy") && m.contains("c_f32.npy"), "{m}");
}

#[test]
fn bad_features() {
    let y = fixture("labels_i64.npy");
    let (e, m) = err_of(load_npy(fixture("x_nan.npy"), &y));
    assert!(
        matches!(
            e,
            NpyError::NonFinite {
                row: 4,
                component: 2,
                ..
            }
        ) && m.contains("NaN"),
        "{m}"
    );
    let (e, m) = err_of(load_npy(fixture("x_1d.npy"), &y));
    assert!(
        matches!(e, NpyError::Shape { .. }) && m.contains("(60,)") && m.contains("2-D"),
        "{m}"
    );
    let dir = tempfile::tempdir().unwrap();
    let y1 = put(
        dir.path(),
        "y1.npy",
        &npy(1, "<i8", false, "(1,)", &labels_i64(&[0])),
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("overflow", npy(1, "<f8", false, "(1, 2)", &le(&[1.0, 1e39], f64::to_le_bytes)), "overflows f32"),
        ("inf", npy(1, "<f2", false, "(1, 1)", &0x7c00u16.to_le_bytes()), "non-finite value inf"),
        ("int", npy(1, "<i4", false, "(1, 1)", &[0; 4]), "dtype '<i4'"),
        ("complex", npy(1, "<c8", false, "(1, 1)", &[0; 8]), "dtype '<c8'"),
        ("object", npy(1, "|O", false, "(1, 1)", &[0; 8]), "dtype '|O'"),
        ("structured", b"\x93NUMPY\x01\x00\x30\x00{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }".to_vec(), "structured dtype"),
        ("empty", npy(1, "<f4", false, "(0, 5)", &[]), "has shape (0, 5)"),
        ("zero-d", npy(1, "<f4", false, "(1, 0)", &[]), "has shape (1, 0)"),
        ("truncated", npy(1, "<f4", false, "(1, 2)", &[0; 7]), "needs 8 bytes of data, found 7"),
        ("trailing", npy(1, "<f4", false, "(1, 2)", &[0; 9]), "1 bytes after the data"),
        ("huge", npy(1, "<f4", false, "(1073741824, 1048576)", &[0; 8]), "truncated"),
        ("overflowing shape", npy(1, "<f4", false, "(18446744073709551615, 2)", &[]), "too large"),
        ("magic", b"NUMPY!!!\x01\x00".to_vec(), "not a .npy file"),
        ("version", npy(4, "<f4", false, "(1, 1)", &[0; 4]).into_iter().enumerate().map(|(i, b)| if i == 6 { 4 } else { b }).collect(), "version 4.0"),
        ("header", b"\x93NUMPY\x01\x00\x08\x00{'descr'".to_vec(), "malformed .npy header"),
        ("header length", b"\x93NUMPY\x01\x00\xff\x00{}".to_vec(), "exceeds"),
        ("no shape", {
            let mut b = npy(1, "<f4", false, "(1, 1)", &[0; 4]);
            let k = b.windows(7).position(|w| w == b"'shape'").unwrap();
            b[k + 1] = b'z';
            b
        }, "no 'shape' key"),
        ("zip", zip(&[("x.npy", vec![1, 2, 3], false)]), "load_npz"),
    ];
    for (name, bytes, want) in cases {
        let p = put(dir.path(), &format!("{name}.npy"), &bytes);
        let (_, m) = err_of(load_npy(&p, &y1));
        assert!(
            m.contains(want) && m.contains(&format!("{name}.npy")),
            "{name}: {m}"
        );
    }
    let (e, _) = err_of(load_npy(dir.path().join("missing.npy"), &y1));
    assert!(matches!(e, NpyError::Io { .. }));
    let (e, m) = err_of(load_npy(dir.path(), &y1));
    assert!(
        matches!(e, NpyError::NotAFile { .. }) && m.contains("directory"),
        "{m}"
    );
}

#[test]
fn bad_archives() {
    let (x, y) = expected();
    let dir = tempfile::tempdir().unwrap();
    let (e, m) = err_of(load_npz(fixture("no-labels.npz")));
    assert!(matches!(e, NpyError::MissingMember { .. }), "{m}");
    assert!(
        m.contains("labels.npy or label.npy") && m.contains("y.npy"),
        "{m}"
    );
    let good = zip(&[
        (
            "x.npy",
            npy(1, "<f4", false, "(60, 5)", &f32_bytes(&x, false)),
            false,
        ),
        (
            "labels.npy",
            npy(1, "<i8", false, "(60,)", &labels_i64(&y)),
            false,
        ),
    ]);
    // Truncated archive, a flipped data byte (CRC), not a zip, an unsupported method.
    let (_, m) = err_of(load_npz(put(
        dir.path(),
        "cut.npz",
        &good[..good.len() / 2],
    )));
    assert!(m.contains("cut.npz") && m.contains("truncated"), "{m}");
    let mut flipped = good.clone();
    flipped[400] ^= 0x40;
    let (_, m) = err_of(load_npz(put(dir.path(), "flip.npz", &flipped)));
    assert!(
        m.contains("flip.npz, member `x.npy`") && m.contains("CRC-32 mismatch"),
        "{m}"
    );
    let (_, m) = err_of(load_npz(put(dir.path(), "text.npz", b"hello, world")));
    assert!(m.contains("not a .npz (zip) archive"), "{m}");
    let mut bzip = good.clone();
    bzip[8] = 12; // local header method
    let cd = good.len() - 22 - 2 * 46 - "x.npy".len() - "labels.npy".len();
    bzip[cd + 10] = 12; // central directory method
    let (_, m) = err_of(load_npz(put(dir.path(), "bzip.npz", &bzip)));
    assert!(m.contains("compression method 12"), "{m}");
    // Per-member errors name the member.
    let archive = zip(&[
        (
            "x.npy",
            npy(1, "<f4", false, "(60, 5)", &f32_bytes(&x, false)),
            true,
        ),
        (
            "labels.npy",
            npy(1, "<i8", false, "(60,)", &labels_i64(&y)),
            true,
        ),
        (
            "epoch.npy",
            npy(1, "<i8", false, "(59,)", &labels_i64(&[1; 59])),
            true,
        ),
    ]);
    let (e, m) = err_of(load_npz(put(dir.path(), "epochs.npz", &archive)));
    assert!(
        matches!(e, NpyError::LengthMismatch { len: 59, n: 60, .. }),
        "{m}"
    );
    assert!(m.contains("epochs.npz, member `epoch.npy`"), "{m}");
    let archive = zip(&[
        (
            "x.npy",
            npy(1, "<f4", false, "(60, 5)", &f32_bytes(&x, false)),
            false,
        ),
        (
            "labels.npy",
            npy(1, "<i8", false, "(60,)", &labels_i64(&y)),
            false,
        ),
        (
            "split.npy",
            npy(1, "|S2", false, "()", &[0xff, 0xfe]),
            false,
        ),
    ]);
    let (e, m) = err_of(load_npz(put(dir.path(), "split.npz", &archive)));
    assert!(
        matches!(e, NpyError::InvalidString { .. }) && m.contains("UTF-8"),
        "{m}"
    );
}

// ---- memory-mapped features -----------------------------------------------------------------

/// f32, little-endian, C-order files are mapped and read in batches as views of the file; the
/// other layouts are read and converted; both give make.py's matrix and the same errors.
#[test]
fn mapped_where_the_format_allows() {
    let (x, y) = expected();
    for (name, mapped) in [
        ("c_f32.npy", true),
        ("f_f64.npy", false),
        ("c_f16.npy", false),
        ("be_f64.npy", false),
        ("f_f16.npy", false),
    ] {
        let h = NpyFeatures::open(fixture(name)).unwrap();
        assert_eq!((h.is_mapped(), h.shape()), (mapped, (N, D)), "{name}");
        let mut rows = 0;
        for batch in h.batches(7) {
            let batch = batch.unwrap();
            assert_eq!(batch, x.slice(ndarray::s![rows..rows + batch.nrows(), ..]));
            // numpy pads the header to 64 bytes: the mapped data are aligned, so no copy.
            assert!(batch.is_view(), "{name}");
            rows += batch.nrows();
        }
        assert_eq!(rows, N);
        assert_eq!(h.rows(55..99).unwrap().nrows(), 5);
        assert_eq!(h.rows(70..80).unwrap().nrows(), 0);
        assert_eq!(h.to_array().unwrap(), x, "{name}");
    }

    // Batches pushed into ClassStats give the statistics of the whole matrix.
    let h = NpyFeatures::open(fixture("c_f32.npy")).unwrap();
    let mut stats = ClassStats::new(3, D).unwrap();
    for (b, batch) in h.batches(16).enumerate() {
        let batch = batch.unwrap();
        stats
            .push(batch.view(), &y[b * 16..b * 16 + batch.nrows()])
            .unwrap();
    }
    let whole = ClassStats::from_data(x.view(), &y).unwrap();
    assert_eq!(stats.counts(), whole.counts());
    for (a, b) in stats.means().iter().zip(whole.means().iter()) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} {b}");
    }
    for (a, b) in stats.scatter().iter().zip(whole.scatter()) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} {b}");
    }

    // Data at an offset that is not a multiple of 4: still mapped, batches copied.
    let dir = tempfile::tempdir().unwrap();
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({N}, {D}), }}");
    let mut header = dict.clone();
    while (10 + header.len() + 1) % 4 != 2 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(f32_bytes(&x, false));
    let odd = put(dir.path(), "odd.npy", &bytes);
    let h = NpyFeatures::open(&odd).unwrap();
    assert!(h.is_mapped());
    let batch = h.rows(3..9).unwrap();
    assert!(!batch.is_view());
    assert_eq!(batch, x.slice(ndarray::s![3..9, ..]));
    assert_eq!(load_npy(&odd, fixture("labels_i64.npy")).unwrap().x, x);

    // A NaN in a mapped file: the batch holding it is the error, naming the file's row.
    let h = NpyFeatures::open(fixture("x_nan.npy")).unwrap();
    assert!(h.is_mapped());
    assert!(h.rows(0..4).is_ok());
    let e = h.rows(2..10).unwrap_err();
    assert!(
        matches!(
            e,
            NpyError::NonFinite {
                row: 4,
                component: 2,
                ..
            }
        ),
        "{e}"
    );
    // A truncated f32 file is refused before it is mapped.
    let cut = put(
        dir.path(),
        "cut.npy",
        &std::fs::read(fixture("c_f32.npy")).unwrap()[..200],
    );
    assert!(matches!(
        NpyFeatures::open(&cut).unwrap_err(),
        NpyError::Truncated { .. }
    ));
}
