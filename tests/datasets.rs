//! Tests of the `datasets` module: IDX fixtures made here, balanced subsets, coarse maps, the
//! missing-files message, and (when the files are present) the real MNIST / Fashion-MNIST.
//!
//! The real-data tests are skipped with a message when the files are absent, unless
//! `NEURAL_COLLAPSE_REQUIRE_DATA=1`, which turns absence into a failure (CI sets it).

use std::io::Write;
use std::path::{Path, PathBuf};

use neural_collapse::datasets::*;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// IDX bytes: magic `0 0 dtype ndim`, big-endian u32 dims, body.
fn idx_bytes(dtype: u8, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, dtype, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `n` 28×28 images whose pixel `k` of image `i` is `(i + k) % 256`.
fn images(n: u32) -> Vec<u8> {
    let px = IMAGE_PIXELS as u32;
    idx_bytes(
        0x08,
        &[n, 28, 28],
        &(0..n * px)
            .map(|k| ((k / px + k % px) % 256) as u8)
            .collect::<Vec<_>>(),
    )
}

fn labels(l: &[u8]) -> Vec<u8> {
    idx_bytes(0x08, &[l.len() as u32], l)
}

/// A fake MNIST directory (`<root>/mnist/…`) with tiny but valid files.
fn fake_mnist(root: &Path, train: (&[u8], &[u8]), test: (&[u8], &[u8])) {
    let d = root.join("mnist");
    std::fs::create_dir_all(&d).unwrap();
    write(&d, "train-images-idx3-ubyte", train.0);
    write(&d, "train-labels-idx1-ubyte", train.1);
    write(&d, "t10k-images-idx3-ubyte", test.0);
    write(&d, "t10k-labels-idx1-ubyte", test.1);
}

// ---------------------------------------------------------------------------------------------
// IDX reader
// ---------------------------------------------------------------------------------------------

#[test]
fn reads_raw_idx() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "a.idx",
        &idx_bytes(8, &[2, 3], &[1, 2, 3, 4, 5, 6]),
    );
    let idx = read_idx(&p).unwrap();
    assert_eq!(idx.dims, vec![2, 3]);
    assert_eq!(idx.data, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!((idx.len(), idx.item_len()), (2, 3));
}

#[test]
fn reads_gzipped_idx_by_magic_not_extension() {
    let dir = tempfile::tempdir().unwrap();
    let raw = idx_bytes(8, &[4], &[9, 8, 7, 6]);
    // No .gz extension: detection must use the magic bytes 1f 8b.
    let p = write(dir.path(), "labels-without-extension", &gzip(&raw));
    let idx = read_idx(&p).unwrap();
    assert_eq!(idx.dims, vec![4]);
    assert_eq!(idx.data, vec![9, 8, 7, 6]);
    // And a raw file named .gz is still read as raw.
    let q = write(dir.path(), "raw.gz", &raw);
    assert_eq!(read_idx(&q).unwrap(), idx);
    // The in-memory parser agrees.
    assert_eq!(parse_idx(&gzip(&raw), "<memory>").unwrap(), idx);
}

#[test]
fn truncated_body_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = idx_bytes(8, &[2, 3], &[1, 2, 3, 4, 5, 6]);
    b.truncate(b.len() - 2);
    let p = write(dir.path(), "short.idx", &b);
    match read_idx(&p) {
        Err(DatasetError::Truncated {
            path,
            expected,
            actual,
        }) => {
            assert_eq!(path, p);
            assert_eq!((expected, actual), (4 + 8 + 6, 4 + 8 + 4));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    // Gzipped and truncated body: same error.
    let g = write(dir.path(), "short.gz", &gzip(&b));
    assert!(matches!(read_idx(&g), Err(DatasetError::Truncated { .. })));
    // Header cut short.
    let h = idx_bytes(8, &[2, 3], &[]);
    assert!(matches!(
        parse_idx(&h[..7], "h"),
        Err(DatasetError::Truncated {
            expected: 12,
            actual: 7,
            ..
        })
    ));
    // The message names the file and both sizes.
    let msg = read_idx(&p).unwrap_err().to_string();
    assert!(
        msg.contains("short.idx") && msg.contains("18") && msg.contains("16"),
        "{msg}"
    );
}

#[test]
fn trailing_data_is_a_typed_error() {
    let mut b = idx_bytes(8, &[2], &[1, 2]);
    b.push(0);
    assert!(matches!(
        parse_idx(&b, "t"),
        Err(DatasetError::TrailingData {
            expected: 10,
            actual: 11,
            ..
        })
    ));
}

#[test]
fn wrong_magic_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "png.idx", b"\x89PNG\r\n\x1a\n");
    match read_idx(&p) {
        Err(DatasetError::BadMagic { path, magic }) => {
            assert_eq!(path, p);
            assert_eq!(magic, vec![0x89, b'P', b'N', b'G']);
        }
        other => panic!("expected BadMagic, got {other:?}"),
    }
    assert!(read_idx(&p).unwrap_err().to_string().contains("png.idx"));
}

#[test]
fn wrong_dtype_and_ndim_are_typed_errors() {
    // 0x0D = f32.
    let b = idx_bytes(0x0D, &[1], &[0, 0, 0, 0]);
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "float.idx", &b);
    match read_idx(&p) {
        Err(DatasetError::UnsupportedDtype { path, dtype }) => {
            assert_eq!((path, dtype), (p.clone(), 0x0D));
        }
        other => panic!("expected UnsupportedDtype, got {other:?}"),
    }
    assert!(read_idx(&p).unwrap_err().to_string().contains("float.idx"));
    assert!(matches!(
        parse_idx(&[0, 0, 8, 0], "z"),
        Err(DatasetError::UnsupportedNdim { ndim: 0, .. })
    ));
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.idx");
    let e = read_idx(&p).unwrap_err();
    assert!(matches!(e, DatasetError::Io { .. }));
    assert!(e.to_string().contains("nope.idx"));
}

#[test]
fn split_from_idx_files_scales_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let i = write(dir.path(), "i", &gzip(&images(3)));
    let l = write(dir.path(), "l", &labels(&[2, 0, 1]));
    let s = Split::from_idx_files(&i, &l, 3).unwrap();
    assert_eq!(s.images.dim(), (3, 784));
    assert_eq!(s.labels, vec![2, 0, 1]);
    assert_eq!(s.images[[0, 0]], 0.0);
    assert_eq!(s.images[[1, 3]], 4.0 / 255.0);
    assert_eq!(s.images[[0, 255]], 1.0);
    assert!(s.images.iter().all(|&x| (0.0..=1.0).contains(&x)));
    let sub = s.subset(&[2, 0]);
    assert_eq!(sub.labels, vec![1, 2]);
    assert_eq!(sub.images.row(1), s.images.row(0));
}

#[test]
fn image_label_count_mismatch_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let i = write(dir.path(), "imgs", &images(3));
    let l = write(dir.path(), "labs", &labels(&[0, 1]));
    match Split::from_idx_files(&i, &l, 10) {
        Err(DatasetError::CountMismatch {
            images,
            labels,
            n_images,
            n_labels,
        }) => {
            assert_eq!((images, labels), (i.clone(), l.clone()));
            assert_eq!((n_images, n_labels), (3, 2));
        }
        other => panic!("expected CountMismatch, got {other:?}"),
    }
    let msg = Split::from_idx_files(&i, &l, 10).unwrap_err().to_string();
    assert!(msg.contains("imgs") && msg.contains("labs"), "{msg}");
}

#[test]
fn label_out_of_range_and_bad_shape_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let i = write(dir.path(), "imgs", &images(2));
    let l = write(dir.path(), "labs", &labels(&[0, 10]));
    assert!(matches!(
        Split::from_idx_files(&i, &l, 10),
        Err(DatasetError::LabelOutOfRange {
            index: 1,
            label: 10,
            num_classes: 10,
            ..
        })
    ));
    let flat = write(dir.path(), "flat", &idx_bytes(8, &[2, 784], &[0; 1568]));
    let l = write(dir.path(), "labs2", &labels(&[0, 1]));
    assert!(matches!(
        Split::from_idx_files(&flat, &l, 10),
        Err(DatasetError::UnexpectedShape { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Loader on fixture directories
// ---------------------------------------------------------------------------------------------

#[test]
fn loader_reads_a_fixture_directory_without_verification() {
    let root = tempfile::tempdir().unwrap();
    let (ti, tl) = (images(4), labels(&[0, 1, 2, 9]));
    let (ei, el) = (images(2), labels(&[5, 5]));
    fake_mnist(root.path(), (&ti, &tl), (&ei, &el));
    let ds = DatasetKind::Mnist
        .loader()
        .dir(root.path())
        .verify(false)
        .load()
        .unwrap();
    assert_eq!(ds.kind, DatasetKind::Mnist);
    assert_eq!(ds.dir, root.path().join("mnist"));
    assert_eq!(ds.train.images.dim(), (4, 784));
    assert_eq!(ds.test.labels, vec![5, 5]);
    // The directory may also be the dataset directory itself.
    let direct = DatasetKind::Mnist
        .loader()
        .dir(root.path().join("mnist"))
        .verify(false)
        .load()
        .unwrap();
    assert_eq!(direct.train, ds.train);
}

#[test]
fn loader_verifies_checksums() {
    let root = tempfile::tempdir().unwrap();
    let (ti, tl) = (images(1), labels(&[0]));
    fake_mnist(root.path(), (&ti, &tl), (&ti, &tl));
    match DatasetKind::Mnist.loader().dir(root.path()).load() {
        Err(DatasetError::ChecksumMismatch {
            path,
            expected,
            actual,
        }) => {
            assert_eq!(path, root.path().join("mnist/train-images-idx3-ubyte"));
            assert_eq!(expected, DatasetKind::Mnist.files()[0].sha256);
            assert_eq!(actual, sha256_hex(&ti));
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
}

#[test]
fn loader_reports_count_mismatch() {
    let root = tempfile::tempdir().unwrap();
    let (ti, tl) = (images(3), labels(&[0, 1]));
    fake_mnist(root.path(), (&ti, &tl), (&ti, &tl));
    let e = DatasetKind::Mnist
        .loader()
        .dir(root.path())
        .verify(false)
        .load()
        .unwrap_err();
    assert!(matches!(
        e,
        DatasetError::CountMismatch {
            n_images: 3,
            n_labels: 2,
            ..
        }
    ));
}

#[test]
fn missing_files_message_lists_files_dir_env_and_command() {
    let root = tempfile::tempdir().unwrap();
    for kind in DatasetKind::ALL {
        let e = kind.loader().dir(root.path()).load().unwrap_err();
        let msg = e.to_string();
        match &e {
            DatasetError::MissingFiles { missing, dir, .. } => {
                assert_eq!(missing.len(), 4);
                assert_eq!(dir, &root.path().join(kind.id()));
            }
            other => panic!("expected MissingFiles, got {other:?}"),
        }
        for f in kind.files() {
            assert!(msg.contains(f.name), "{msg}");
        }
        assert!(
            msg.contains(&root.path().join(kind.id()).display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("NEURAL_COLLAPSE_DATA"), "{msg}");
        assert!(msg.contains("scripts/fetch-datasets.sh"), "{msg}");
        // Through the crate-level error too.
        let top: neural_collapse::Error = e.into();
        assert!(top.to_string().contains("scripts/fetch-datasets.sh"));
    }
    // Only the missing ones are listed.
    let (ti, tl) = (images(1), labels(&[0]));
    fake_mnist(root.path(), (&ti, &tl), (&ti, &tl));
    std::fs::remove_file(root.path().join("mnist/t10k-labels-idx1-ubyte")).unwrap();
    match DatasetKind::Mnist.loader().dir(root.path()).load() {
        Err(DatasetError::MissingFiles { missing, .. }) => {
            assert_eq!(
                missing,
                vec![root.path().join("mnist/t10k-labels-idx1-ubyte")]
            );
        }
        other => panic!("expected MissingFiles, got {other:?}"),
    }
}

#[test]
fn dataset_kind_names_and_parsing() {
    assert_eq!("mnist".parse::<DatasetKind>().unwrap(), DatasetKind::Mnist);
    assert_eq!(
        "Fashion-MNIST".parse::<DatasetKind>().unwrap(),
        DatasetKind::FashionMnist
    );
    assert!(matches!(
        "cifar10".parse::<DatasetKind>(),
        Err(DatasetError::UnknownDataset { .. })
    ));
    assert_eq!(
        serde_json::to_string(&DatasetKind::FashionMnist).unwrap(),
        "\"fashion-mnist\""
    );
    assert_eq!(DatasetKind::FashionMnist.class_names()[9], "Ankle boot");
    assert_eq!(DatasetKind::Mnist.class_names()[3], "3");
    assert_eq!(
        (DatasetKind::Mnist.mean(), DatasetKind::Mnist.std()),
        (0.1307, 0.3081)
    );
    assert_eq!((FASHION_MNIST_MEAN, FASHION_MNIST_STD), (0.2860, 0.3530));
}

// ---------------------------------------------------------------------------------------------
// Balanced subsets
// ---------------------------------------------------------------------------------------------

/// 3 classes with 10, 20 and 7 samples, interleaved.
fn uneven_labels() -> Vec<u32> {
    let mut l = Vec::new();
    for i in 0..37u32 {
        l.push(match i % 4 {
            0 if l.iter().filter(|&&x| x == 0).count() < 10 => 0,
            3 if l.iter().filter(|&&x| x == 2).count() < 7 => 2,
            _ => 1,
        });
    }
    l
}

#[test]
fn balanced_subset_has_exact_per_class_counts() {
    let labels = uneven_labels();
    assert_eq!(class_counts(&labels, 3), vec![10, 20, 7]);
    let idx = balanced_subset(&labels, 7, 42).unwrap();
    assert_eq!(idx.len(), 21);
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
    let picked: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
    assert_eq!(class_counts(&picked, 3), vec![7, 7, 7]);
}

#[test]
fn balanced_subset_is_deterministic_per_seed() {
    let labels: Vec<u32> = (0..1000).map(|i| (i * 7 % 10) as u32).collect();
    let a = balanced_subset(&labels, 20, 1).unwrap();
    let b = balanced_subset(&labels, 20, 1).unwrap();
    let c = balanced_subset(&labels, 20, 2).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.len(), 200);
}

#[test]
fn balanced_subset_errors_on_a_small_class() {
    let labels = uneven_labels();
    match balanced_subset(&labels, 8, 0) {
        Err(DatasetError::NotEnoughSamples {
            class,
            available,
            requested,
        }) => assert_eq!((class, available, requested), (2, 7, 8)),
        other => panic!("expected NotEnoughSamples, got {other:?}"),
    }
    let msg = balanced_subset(&labels, 8, 0).unwrap_err().to_string();
    assert!(msg.contains("class 2"), "{msg}");
    // An absent class below the maximum label counts as a class with 0 samples.
    assert!(matches!(
        balanced_subset(&[0, 2, 2, 0], 1, 0),
        Err(DatasetError::NotEnoughSamples {
            class: 1,
            available: 0,
            ..
        })
    ));
    assert_eq!(balanced_subset(&[], 5, 0).unwrap(), Vec::<usize>::new());
}

#[test]
fn balanced_subset_draws_every_sample_eventually() {
    // Uniformity smoke test: over many seeds each index of a class is picked.
    let labels = vec![0u32; 10];
    let mut seen = [false; 10];
    for seed in 0..100 {
        for i in balanced_subset(&labels, 2, seed).unwrap() {
            seen[i] = true;
        }
    }
    assert!(seen.iter().all(|&s| s));
}

// ---------------------------------------------------------------------------------------------
// Coarse maps
// ---------------------------------------------------------------------------------------------

fn group_sizes(m: &CoarseMap) -> Vec<usize> {
    m.groups().iter().map(Vec::len).collect()
}

#[test]
fn coarse_presets_match_the_documented_groupings() {
    let sem = CoarseMap::fashion_2way_semantic();
    assert_eq!(sem.groups(), vec![vec![0, 1, 2, 3, 4, 6], vec![5, 7, 8, 9]]);
    assert_eq!(group_sizes(&sem), vec![6, 4]);
    let bal = CoarseMap::fashion_2way_balanced();
    assert_eq!(bal.groups(), vec![vec![0, 2, 3, 4, 6], vec![1, 5, 7, 8, 9]]);
    assert_eq!(group_sizes(&bal), vec![5, 5]);
    let pairs = CoarseMap::fashion_5pairs();
    assert_eq!(
        pairs.groups(),
        vec![vec![0, 6], vec![2, 4], vec![5, 7], vec![8, 9], vec![1, 3]]
    );
    let mnist = CoarseMap::mnist_low_high();
    assert_eq!(
        mnist.groups(),
        vec![vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9]]
    );
    for m in [&sem, &bal, &pairs, &mnist] {
        assert_eq!(m.num_fine(), 10);
        assert_eq!(m.coarse_names().len(), m.num_coarse());
        for fine in 0..10 {
            assert!(
                (m.map(fine) as usize) < m.num_coarse(),
                "{} maps {fine}",
                m.name()
            );
        }
        assert_eq!(m.try_map(10), None);
    }
    assert_eq!(pairs.num_coarse(), 5);
    assert_eq!(sem.map(8), 1);
    assert_eq!(sem.coarse_names()[1], "footwear and bags");
}

#[test]
fn coarse_map_validation_and_serde() {
    assert!(matches!(
        CoarseMap::new(vec![]),
        Err(DatasetError::InvalidCoarseMap { .. })
    ));
    assert!(matches!(
        CoarseMap::new(vec![0, 2, 2]),
        Err(DatasetError::InvalidCoarseMap { .. })
    ));
    let m = CoarseMap::new(vec![1, 0, 1]).unwrap();
    assert_eq!(m.num_coarse(), 2);
    assert_eq!(m.coarse_names(), ["{1}", "{0,2}"]);
    assert!(m.clone().with_names(["only one"]).is_err());
    assert_eq!(m.map_labels(&[0, 1, 2, 2]).unwrap(), vec![1, 0, 1, 1]);
    assert!(matches!(
        m.map_labels(&[3]),
        Err(DatasetError::LabelOutOfRange { label: 3, .. })
    ));

    let sem = CoarseMap::fashion_2way_semantic();
    let json = serde_json::to_string(&sem).unwrap();
    assert!(
        json.contains("\"fine_to_coarse\":[0,0,0,0,0,1,0,1,1,1]"),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<CoarseMap>(&json).unwrap(), sem);
    // Invalid maps are rejected when read back; names are optional.
    assert!(serde_json::from_str::<CoarseMap>(r#"{"fine_to_coarse":[0,2]}"#).is_err());
    let bare: CoarseMap = serde_json::from_str(r#"{"fine_to_coarse":[0,1,1]}"#).unwrap();
    assert_eq!(bare.num_coarse(), 2);
}

// ---------------------------------------------------------------------------------------------
// Real data
// ---------------------------------------------------------------------------------------------

/// Loads the real dataset, or returns `None` (printing why) when its files are missing, unless
/// `NEURAL_COLLAPSE_REQUIRE_DATA=1`, which makes absence a failure.
fn real(kind: DatasetKind) -> Option<ImageDataset> {
    match kind.load() {
        Ok(ds) => Some(ds),
        Err(e @ DatasetError::MissingFiles { .. }) => {
            if std::env::var("NEURAL_COLLAPSE_REQUIRE_DATA").is_ok_and(|v| v == "1") {
                panic!("NEURAL_COLLAPSE_REQUIRE_DATA=1 but {kind} is missing:\n{e}");
            }
            eprintln!("skipped: run scripts/fetch-datasets.sh ({kind} not found)\n{e}");
            None
        }
        Err(e) => panic!("loading {kind}: {e}"),
    }
}

fn mean_std(x: &ndarray::Array2<f32>) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

#[test]
fn real_mnist() {
    let Some(ds) = real(DatasetKind::Mnist) else {
        return;
    };
    assert_eq!(ds.train.images.dim(), (60_000, 784));
    assert_eq!(ds.test.images.dim(), (10_000, 784));
    assert_eq!(ds.train.labels.len(), 60_000);
    assert_eq!(ds.test.labels.len(), 10_000);
    assert_eq!(
        ds.train.class_counts(10),
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(ds.test.class_counts(10).iter().sum::<usize>(), 10_000);
    let (mean, std) = mean_std(&ds.train.images);
    assert!((mean - f64::from(MNIST_MEAN)).abs() < 1e-4, "mean {mean}");
    assert!((std - f64::from(MNIST_STD)).abs() < 1e-4, "std {std}");
    let sub = ds.train.balanced_subset(100, 0).unwrap();
    assert_eq!(sub.class_counts(10), vec![100; 10]);
}

#[test]
fn real_fashion_mnist() {
    let Some(ds) = real(DatasetKind::FashionMnist) else {
        return;
    };
    assert_eq!(ds.train.images.dim(), (60_000, 784));
    assert_eq!(ds.test.images.dim(), (10_000, 784));
    assert_eq!(ds.train.class_counts(10), vec![6_000; 10]);
    assert_eq!(ds.test.class_counts(10), vec![1_000; 10]);
    let (mean, std) = mean_std(&ds.train.images);
    assert!(
        (mean - f64::from(FASHION_MNIST_MEAN)).abs() < 1e-4,
        "mean {mean}"
    );
    assert!(
        (std - f64::from(FASHION_MNIST_STD)).abs() < 1e-4,
        "std {std}"
    );
    let coarse = CoarseMap::fashion_2way_semantic()
        .map_labels(&ds.train.labels)
        .unwrap();
    assert_eq!(class_counts(&coarse, 2), vec![36_000, 24_000]);
}
