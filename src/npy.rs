//! numpy input: a pair of `.npy` files, or one `.npz` archive, read into [`Features`].
//!
//! **Why one file (about 1,650 lines).** One format family with one error type: the `.npy`
//! header parser, the `.npz` (zip) reader with its stored and deflated members, the dtype
//! conversions and the checks; no other module reads numpy files.
//!
//! The route for a user who has `features.npy` and `labels.npy` (for example from
//! `np.save("features.npy", h)` after a forward hook): every metric, probe and figure of the crate
//! takes the [`Features`] these functions return.
//!
//! ```text
//! array / member       dtype                                   shape
//! features (x)         f16, f32 or f64 ('<f2' '<f4' '<f8'),    (n, d), C- or Fortran-order
//!                      either byte order
//! labels               any integer (i1 … i8, u1 … u8)          (n,)   non-negative, fits u32
//! epoch       (npz)    any integer                             (n,) or () (one value for all rows)
//! split       (npz)    str ('<U…') or bytes ('|S…', UTF-8)     (n,) or ()
//! sample, coarse, pred (npz, optional)  any integer            (n,)
//! ```
//!
//! * [`load_npy`]`(features, labels)`: two `.npy` files, one checkpoint (one [`Features`]).
//! * [`load_npz`]`(path)`: an archive written by `np.savez` or `np.savez_compressed`, with the
//!   features under the name `x` (or `features`), the labels under `labels` (or `label`), and the
//!   optional members above; one [`Features`] per `(epoch, split)`, sorted by epoch then split,
//!   rows in file order. Without `epoch` and `split` members the archive is one checkpoint.
//! * [`NpyFeatures`]: one `.npy` feature matrix in row batches, memory-mapped where the format
//!   allows (below).
//! * [`read_npy_header`]: the dtype, order and shape of a `.npy` file without reading its data.
//! * [`write_npy_f32`] / [`write_npy_u32`]: the writer used by notebooks and tests (format 1.0,
//!   C order, little-endian), read back by numpy's `np.load`.
//!
//! The layer ([`Features::layer`]) is taken from the file name as for Parquet: `features-fc2.npy`
//! or `features-fc2.npz` gives `fc2`, any other name its stem.
//!
//! # Format and validation
//!
//! The `.npy` header (magic `\x93NUMPY`, versions 1.0, 2.0 and 3.0, a Python dict literal with
//! `descr`, `fortran_order` and `shape`) is parsed here; an `.npz` archive is a zip whose members
//! are `.npy` files, stored or deflated (the central directory, ZIP64 included, is read here, and
//! deflate goes through `flate2`, already a dependency; each member's CRC-32 is checked).
//!
//! The data is streamed: read once, in chunks, straight into the `n × d` `f32` matrix the crate
//! works on (Fortran-order data is scattered into row-major order as it arrives), so the peak
//! memory is that matrix plus a 64 KiB buffer, and the file's size is checked against the header
//! before anything is allocated. Where the format allows, the file is memory-mapped instead
//! ([`NpyFeatures`]): f32, little-endian, C-order `.npy` features are read from the map in row
//! batches, as views of the file's bytes, so that a matrix larger than memory can be summarised
//! batch by batch; f16/f64, big-endian or Fortran-order files, and `.npz` members, are read
//! (copied and converted) as above. [`load_npy`] goes through [`NpyFeatures`] either way. Metrics accumulate in f64 whatever the input precision; an f64
//! file's values are rounded to f32 once, as the Parquet reader does.
//!
//! Every problem is an [`NpyError`] whose one-line message names the file (and the member of an
//! archive) and the dtype, shape, row or value at fault: unsupported dtypes (object, structured,
//! complex, integer features, float labels), wrong shapes, lengths that disagree between arrays,
//! truncated data or trailing bytes, NaN/±∞ features and f64 values that overflow f32, negative
//! labels or labels beyond u32, a malformed header or archive, a CRC mismatch.
//!
//! ```
//! use ndarray::array;
//! use neural_collapse::npy::{load_npy, write_npy_f32, write_npy_u32};
//! let dir = std::env::temp_dir().join(format!("nc-npy-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let x = array![[1.0f32, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]];
//! write_npy_f32(dir.join("features-fc2.npy"), x.view())?;
//! write_npy_u32(dir.join("labels.npy"), &[0, 0, 1, 1])?;
//! let f = load_npy(dir.join("features-fc2.npy"), dir.join("labels.npy"))?;
//! assert_eq!((f.x, f.labels, f.layer.as_deref()), (x, vec![0, 0, 1, 1], Some("fc2")));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use ndarray::{Array2, ArrayView2, Axis, CowArray, Ix2};
use thiserror::Error;

use crate::features::Features;

/// Errors from reading (or writing) `.npy` / `.npz` files. `path` is the file, followed for an
/// archive member by `, member \`name.npy\``.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NpyError {
    /// An I/O error (a missing file, permissions, …).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file (a directory, a FIFO, a device or a socket).
    #[error("{path}: is {kind}, not a regular file")]
    NotAFile {
        /// The path.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// The data does not start with the `.npy` magic string.
    #[error("{path}: not a .npy file (starts with {found}, expected \\x93NUMPY){hint}")]
    NotNpy {
        /// The file or member.
        path: String,
        /// The first bytes, escaped.
        found: String,
        /// A hint when the file is recognisably something else (an archive).
        hint: &'static str,
    },
    /// A `.npy` format version other than 1.0, 2.0, 3.0.
    #[error("{path}: .npy format version {major}.{minor} is not supported (1.0, 2.0 or 3.0)")]
    Version {
        /// The file or member.
        path: String,
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// A header that is not the dict numpy writes.
    #[error("{path}: malformed .npy header: {problem}")]
    Header {
        /// The file or member.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// A dtype this array may not have.
    #[error("{path}: dtype '{descr}' is not supported for `{array}` (expected {expected})")]
    Dtype {
        /// The file or member.
        path: String,
        /// Which array (`features`, `labels`, `epoch`, `split`, …).
        array: String,
        /// The header's `descr`.
        descr: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// An array of the wrong shape (dimensions), or with zero rows or columns.
    #[error("{path}: `{array}` has shape {shape}, expected {expected}")]
    Shape {
        /// The file or member.
        path: String,
        /// Which array.
        array: String,
        /// The shape found, as numpy prints it.
        shape: String,
        /// What is expected.
        expected: String,
    },
    /// Less data than the header's shape and dtype need.
    #[error("{path}: truncated: `{array}` of shape {shape} and dtype '{descr}' needs {expected} bytes of data, found {found}")]
    Truncated {
        /// The file or member.
        path: String,
        /// Which array.
        array: String,
        /// The shape.
        shape: String,
        /// The dtype.
        descr: String,
        /// Bytes needed.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// More data than the header's shape and dtype account for.
    #[error("{path}: {extra} bytes after the data of `{array}` (shape {shape}, dtype '{descr}'): not a single numpy array")]
    TrailingData {
        /// The file or member.
        path: String,
        /// Which array.
        array: String,
        /// The shape.
        shape: String,
        /// The dtype.
        descr: String,
        /// Bytes left over.
        extra: u64,
    },
    /// An array too large for this machine's memory.
    #[error("{path}: `{array}` of shape {shape} is too large to load ({bytes} bytes as f32/u32)")]
    TooLarge {
        /// The file or member.
        path: String,
        /// Which array.
        array: String,
        /// The shape.
        shape: String,
        /// Bytes that would be allocated (saturated).
        bytes: u64,
    },
    /// Two arrays disagree on the number of samples.
    #[error("{path}: `{array}` has {len} entries but the features have {n} rows ({features})")]
    LengthMismatch {
        /// The file or member holding `array`.
        path: String,
        /// Which array.
        array: String,
        /// Its length.
        len: usize,
        /// Rows of the features.
        n: usize,
        /// The features' file or member.
        features: String,
    },
    /// NaN or ±∞ in the features.
    #[error(
        "{path}: features have the non-finite value {value} at row {row}, component {component}"
    )]
    NonFinite {
        /// The file or member.
        path: String,
        /// Row (sample).
        row: usize,
        /// Component (feature index).
        component: usize,
        /// The value.
        value: f64,
    },
    /// A finite f64 feature value too large for f32.
    #[error("{path}: features have the value {value:e} at row {row}, component {component}, which overflows f32 (largest finite f32: {max:e})", max = f32::MAX)]
    Overflow {
        /// The file or member.
        path: String,
        /// Row (sample).
        row: usize,
        /// Component.
        component: usize,
        /// The value as stored.
        value: f64,
    },
    /// A label-like value (labels, epoch, sample, coarse, pred) that is not a u32.
    #[error("{path}: `{array}` has the value {value} at index {index}, which {reason}")]
    InvalidInteger {
        /// The file or member.
        path: String,
        /// Which array.
        array: String,
        /// Index of the first offending entry.
        index: usize,
        /// The value.
        value: i128,
        /// "is negative" or "does not fit u32".
        reason: &'static str,
    },
    /// A `split` entry that is not valid text.
    #[error("{path}: `split` entry {index} is not valid {encoding}")]
    InvalidString {
        /// The file or member.
        path: String,
        /// Index of the entry.
        index: usize,
        /// "UTF-8" or "UTF-32".
        encoding: &'static str,
    },
    /// A malformed or unsupported `.npz` (zip) archive.
    #[error("{path}: {problem}")]
    Zip {
        /// The archive (and member, when known).
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// A required array is absent from an archive.
    #[error("{path}: no member `{member}` (members: {found})")]
    MissingMember {
        /// The archive.
        path: String,
        /// The names accepted for it, e.g. `x.npy` or `features.npy`.
        member: String,
        /// The members the archive has.
        found: String,
    },
}

type Result<T> = std::result::Result<T, NpyError>;

// ---------------------------------------------------------------------------------------------
// Header.

/// The header of a `.npy` array: dtype, memory order and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// numpy's dtype string, e.g. `<f4`, `|u1`, `<U5`.
    pub descr: String,
    /// Whether the data is in Fortran (column-major) order.
    pub fortran_order: bool,
    /// The shape.
    pub shape: Vec<usize>,
}

impl NpyHeader {
    fn shape_str(&self) -> String {
        shape_str(&self.shape)
    }
}

fn shape_str(shape: &[usize]) -> String {
    match shape {
        [a] => format!("({a},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// An element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Float,
    Int,
    Uint,
    /// `U<n>`: UTF-32 code units.
    Unicode,
    /// `S<n>`: bytes.
    Bytes,
}

#[derive(Debug, Clone, Copy)]
struct Dtype {
    kind: Kind,
    /// Size of one element in bytes.
    size: usize,
    big_endian: bool,
}

fn parse_descr(descr: &str) -> Option<Dtype> {
    let mut chars = descr.chars();
    let order = chars.next()?;
    let big_endian = match order {
        '<' | '|' => false,
        '>' => true,
        '=' => cfg!(target_endian = "big"),
        _ => return None,
    };
    let kind = match chars.next()? {
        'f' => Kind::Float,
        'i' => Kind::Int,
        'u' => Kind::Uint,
        'U' => Kind::Unicode,
        'S' => Kind::Bytes,
        _ => return None,
    };
    let n: usize = chars.as_str().parse().ok()?;
    let size = match kind {
        Kind::Float if [2, 4, 8].contains(&n) => n,
        Kind::Int | Kind::Uint if [1, 2, 4, 8].contains(&n) => n,
        Kind::Unicode if n > 0 => n.checked_mul(4)?,
        Kind::Bytes if n > 0 => n,
        _ => return None,
    };
    Some(Dtype {
        kind,
        size,
        big_endian,
    })
}

/// A tiny parser for the Python literal numpy writes: `{'descr': '<f4', 'fortran_order': False,
/// 'shape': (3, 4), }`.
struct Lit<'a> {
    s: &'a [u8],
    i: usize,
}

#[derive(Debug)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

impl Lit<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let q = self.peek().ok_or("unexpected end")?;
        if q != b'\'' && q != b'"' {
            return Err(format!("expected a string at byte {}", self.i));
        }
        let start = self.i + 1;
        let end = self.s[start..]
            .iter()
            .position(|&c| c == q)
            .ok_or("unterminated string")?;
        self.i = start + end + 1;
        String::from_utf8(self.s[start..start + end].to_vec()).map_err(|_| "non-UTF-8 text".into())
    }
    fn value(&mut self) -> std::result::Result<Value, String> {
        match self.peek().ok_or("unexpected end")? {
            b'\'' | b'"' => Ok(Value::Str(self.string()?)),
            b'(' => {
                self.i += 1;
                let mut dims = Vec::new();
                loop {
                    if self.eat(b')') {
                        break;
                    }
                    self.ws();
                    let start = self.i;
                    while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                        self.i += 1;
                    }
                    let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                    let dim: usize = digits
                        .parse()
                        .map_err(|_| format!("bad shape entry at byte {start}"))?;
                    self.eat(b'L'); // Python 2 longs
                    dims.push(dim);
                    if !self.eat(b',') {
                        if self.eat(b')') {
                            break;
                        }
                        return Err("expected ',' or ')' in the shape".into());
                    }
                }
                Ok(Value::Tuple(dims))
            }
            b'[' => Err("a structured dtype (a list of fields)".into()),
            _ => {
                let rest = &self.s[self.i..];
                for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
                    if rest.starts_with(word) {
                        self.i += word.len();
                        return Ok(Value::Bool(v));
                    }
                }
                Err(format!("unexpected value at byte {}", self.i))
            }
        }
    }
}

fn parse_header_dict(text: &[u8]) -> std::result::Result<NpyHeader, String> {
    let mut p = Lit { s: text, i: 0 };
    if !p.eat(b'{') {
        return Err("expected a dict '{…}'".into());
    }
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        if !p.eat(b':') {
            return Err(format!("expected ':' after '{key}'"));
        }
        let v = p.value().map_err(|e| format!("'{key}': {e}"))?;
        match (key.as_str(), v) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("fortran_order", Value::Bool(b)) => fortran = Some(b),
            ("shape", Value::Tuple(t)) => shape = Some(t),
            (k @ ("descr" | "fortran_order" | "shape"), v) => {
                return Err(format!("'{k}' has an unexpected value {v:?}"))
            }
            _ => {}
        }
        if !p.eat(b',') {
            if p.eat(b'}') {
                break;
            }
            return Err("expected ',' or '}'".into());
        }
    }
    Ok(NpyHeader {
        descr: descr.ok_or("no 'descr' key")?,
        fortran_order: fortran.ok_or("no 'fortran_order' key")?,
        shape: shape.ok_or("no 'shape' key")?,
    })
}

fn escape(bytes: &[u8]) -> String {
    let s: String = bytes
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("\"{s}\"")
}

/// Reads everything `r` yields into `buf` up to its length; returns the bytes read (short at EOF).
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// One array's bytes: a `.npy` file or an archive member, with its total length.
struct Source<'a> {
    path: String,
    reader: Box<dyn Read + 'a>,
    len: u64,
    /// CRC-32 expected at the end (archive members).
    crc: Option<u32>,
    hasher: flate2::Crc,
}

impl Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let k = read_full(&mut self.reader, buf).map_err(|source| NpyError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.hasher.update(&buf[..k]);
        Ok(k)
    }

    /// Parses the header; returns it with the number of data bytes that follow.
    fn header(&mut self) -> Result<(NpyHeader, u64)> {
        let mut magic = [0u8; 8];
        let k = self.read(&mut magic[..8])?;
        if k < 8 || &magic[..6] != b"\x93NUMPY" {
            let hint = if magic.starts_with(b"PK\x03\x04") {
                " — this is a zip archive (.npz): read it with load_npz"
            } else {
                ""
            };
            return Err(NpyError::NotNpy {
                path: self.path.clone(),
                found: escape(&magic[..k.min(6)]),
                hint,
            });
        }
        let (major, minor) = (magic[6], magic[7]);
        let len_bytes: usize = match (major, minor) {
            (1, 0) => 2,
            (2, 0) | (3, 0) => 4,
            _ => {
                return Err(NpyError::Version {
                    path: self.path.clone(),
                    major,
                    minor,
                })
            }
        };
        let path = self.path.clone();
        let bad = move |problem: String| NpyError::Header {
            path: path.clone(),
            problem,
        };
        let mut lb = [0u8; 4];
        if self.read(&mut lb[..len_bytes])? < len_bytes {
            return Err(bad("the file ends inside the header".into()));
        }
        let hlen = u64::from(u32::from_le_bytes(lb));
        let prefix = 8 + len_bytes as u64;
        if prefix + hlen > self.len {
            return Err(bad(format!(
                "header length {hlen} exceeds the {} bytes of the file",
                self.len
            )));
        }
        let mut text = vec![0u8; hlen as usize];
        if self.read(&mut text)? < text.len() {
            return Err(bad("the file ends inside the header".into()));
        }
        let header = parse_header_dict(&text).map_err(bad)?;
        Ok((header, self.len - prefix - hlen))
    }

    /// After the data: the member's CRC-32, when it has one.
    fn finish(&mut self) -> Result<()> {
        let mut rest = [0u8; 1];
        if self.read(&mut rest)? != 0 {
            return Err(NpyError::Zip {
                path: self.path.clone(),
                problem: "the member holds more data than its declared size".into(),
            });
        }
        if let Some(want) = self.crc {
            let got = self.hasher.sum();
            if got != want {
                return Err(NpyError::Zip {
                    path: self.path.clone(),
                    problem: format!(
                        "CRC-32 mismatch (stored {want:08x}, data {got:08x}): the archive is corrupt"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The header checked against the data length and an expected kind; `elements` its element count.
struct Checked {
    header: NpyHeader,
    dtype: Dtype,
    elements: usize,
}

fn check_data(
    src: &Source<'_>,
    header: NpyHeader,
    data_len: u64,
    array: &str,
    expected: &'static str,
    accept: &dyn Fn(Kind) -> bool,
) -> Result<Checked> {
    let dtype = match parse_descr(&header.descr) {
        Some(d) if accept(d.kind) => d,
        _ => {
            return Err(NpyError::Dtype {
                path: src.path.clone(),
                array: array.into(),
                descr: header.descr,
                expected,
            })
        }
    };
    let elements = header
        .shape
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s));
    let need = elements
        .and_then(|e| e.checked_mul(dtype.size))
        .map(|b| b as u64);
    let (Some(elements), Some(need)) = (elements, need) else {
        return Err(NpyError::TooLarge {
            path: src.path.clone(),
            array: array.into(),
            shape: header.shape_str(),
            bytes: u64::MAX,
        });
    };
    if data_len < need {
        return Err(NpyError::Truncated {
            path: src.path.clone(),
            array: array.into(),
            shape: header.shape_str(),
            descr: header.descr,
            expected: need,
            found: data_len,
        });
    }
    if data_len > need {
        return Err(NpyError::TrailingData {
            path: src.path.clone(),
            array: array.into(),
            shape: header.shape_str(),
            descr: header.descr,
            extra: data_len - need,
        });
    }
    Ok(Checked {
        header,
        dtype,
        elements,
    })
}

const CHUNK: usize = 64 * 1024;

/// Streams `count` elements of `size` bytes, calling `f(index, bytes)` for each.
fn stream(
    src: &mut Source<'_>,
    c: &Checked,
    array: &str,
    mut f: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<()> {
    let size = c.dtype.size;
    let per = (CHUNK / size).max(1);
    let mut buf = vec![0u8; per * size];
    let mut k = 0usize;
    while k < c.elements {
        let m = per.min(c.elements - k);
        let got = src.read(&mut buf[..m * size])?;
        if got < m * size {
            return Err(NpyError::Truncated {
                path: src.path.clone(),
                array: array.into(),
                shape: c.header.shape_str(),
                descr: c.header.descr.clone(),
                expected: (c.elements * size) as u64,
                found: (k * size + got) as u64,
            });
        }
        for (j, e) in buf[..m * size].chunks_exact(size).enumerate() {
            f(k + j, e)?;
        }
        k += m;
    }
    src.finish()
}

fn bytes_n<const N: usize>(e: &[u8], big: bool) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&e[..N]);
    if big {
        b.reverse();
    }
    b
}

fn f16_to_f32(h: u16) -> f32 {
    let negative = h >> 15 == 1;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let sign = u32::from(negative) << 31;
    match exp {
        0 => {
            // Zero or subnormal: mant · 2⁻²⁴, exact in f32.
            let v = mant as f32 * f32::from_bits(0x3380_0000);
            if negative {
                -v
            } else {
                v
            }
        }
        31 => f32::from_bits(sign | 0x7f80_0000 | (mant << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (mant << 13)),
    }
}

fn float_of(e: &[u8], d: Dtype) -> f64 {
    match d.size {
        2 => f64::from(f16_to_f32(u16::from_le_bytes(bytes_n(e, d.big_endian)))),
        4 => f64::from(f32::from_le_bytes(bytes_n(e, d.big_endian))),
        _ => f64::from_le_bytes(bytes_n(e, d.big_endian)),
    }
}

fn int_of(e: &[u8], d: Dtype) -> i128 {
    let signed = d.kind == Kind::Int;
    match (d.size, signed) {
        (1, true) => i128::from(e[0] as i8),
        (1, false) => i128::from(e[0]),
        (2, true) => i128::from(i16::from_le_bytes(bytes_n(e, d.big_endian))),
        (2, false) => i128::from(u16::from_le_bytes(bytes_n(e, d.big_endian))),
        (4, true) => i128::from(i32::from_le_bytes(bytes_n(e, d.big_endian))),
        (4, false) => i128::from(u32::from_le_bytes(bytes_n(e, d.big_endian))),
        (_, true) => i128::from(i64::from_le_bytes(bytes_n(e, d.big_endian))),
        (_, false) => i128::from(u64::from_le_bytes(bytes_n(e, d.big_endian))),
    }
}

fn too_large(src: &Source<'_>, array: &str, shape: &[usize], bytes: usize) -> NpyError {
    NpyError::TooLarge {
        path: src.path.clone(),
        array: array.into(),
        shape: shape_str(shape),
        bytes: bytes as u64,
    }
}

/// The features' header, checked: a 2-D float array with n, d > 0 and as many data bytes as
/// its shape needs; returns it with `(n, d)`.
fn matrix_header(src: &mut Source<'_>) -> Result<(Checked, usize, usize)> {
    let array = "features";
    let (header, data_len) = src.header()?;
    let c = check_data(
        src,
        header,
        data_len,
        array,
        "a float array: '<f2', '<f4' or '<f8' (either byte order)",
        &|k| k == Kind::Float,
    )?;
    match c.header.shape[..] {
        [n, d] if n > 0 && d > 0 => Ok((c, n, d)),
        _ => Err(NpyError::Shape {
            path: src.path.clone(),
            array: array.into(),
            shape: c.header.shape_str(),
            expected: "2-D (n, d) with n ≥ 1 samples and d ≥ 1 features".into(),
        }),
    }
}

/// Reads the features: a 2-D float array with n, d > 0.
fn read_matrix(src: &mut Source<'_>) -> Result<Array2<f32>> {
    let array = "features";
    let (c, n, d) = matrix_header(src)?;
    let mut data: Vec<f32> = Vec::new();
    data.try_reserve_exact(c.elements)
        .map_err(|_| too_large(src, array, &c.header.shape, c.elements.saturating_mul(4)))?;
    data.resize(c.elements, 0.0);
    let (dtype, fortran) = (c.dtype, c.header.fortran_order);
    let path = src.path.clone();
    stream(src, &c, array, |k, e| {
        let (row, component) = if fortran {
            (k % n, k / n)
        } else {
            (k / d, k % d)
        };
        let v = float_of(e, dtype);
        let x = v as f32;
        if !x.is_finite() {
            return Err(if v.is_finite() {
                NpyError::Overflow {
                    path: path.clone(),
                    row,
                    component,
                    value: v,
                }
            } else {
                NpyError::NonFinite {
                    path: path.clone(),
                    row,
                    component,
                    value: v,
                }
            });
        }
        data[row * d + component] = x;
        Ok(())
    })?;
    Array2::from_shape_vec((n, d), data).map_err(|e| NpyError::Header {
        path: src.path.clone(),
        problem: format!("feature matrix: {e}"),
    })
}

/// Reads a 1-D integer array of u32 values (or, when `scalar_ok`, a 0-d one, returned as one
/// value); the flag says whether it was 0-d.
fn read_u32s(src: &mut Source<'_>, array: &str, scalar_ok: bool) -> Result<(Vec<u32>, bool)> {
    let (header, data_len) = src.header()?;
    let c = check_data(
        src,
        header,
        data_len,
        array,
        "an integer array: i1, i2, i4, i8, u1, u2, u4 or u8",
        &|k| matches!(k, Kind::Int | Kind::Uint),
    )?;
    let ok = match c.header.shape[..] {
        [_] => true,
        [] => scalar_ok,
        _ => false,
    };
    if !ok {
        return Err(NpyError::Shape {
            path: src.path.clone(),
            array: array.into(),
            shape: c.header.shape_str(),
            expected: if scalar_ok {
                "1-D (n,) or a scalar ()".into()
            } else {
                "1-D (n,)".into()
            },
        });
    }
    let mut out: Vec<u32> = Vec::new();
    out.try_reserve_exact(c.elements)
        .map_err(|_| too_large(src, array, &c.header.shape, c.elements.saturating_mul(4)))?;
    let (dtype, path) = (c.dtype, src.path.clone());
    stream(src, &c, array, |index, e| {
        let v = int_of(e, dtype);
        let reason = if v < 0 {
            "is negative"
        } else if v > i128::from(u32::MAX) {
            "does not fit u32"
        } else {
            out.push(v as u32);
            return Ok(());
        };
        Err(NpyError::InvalidInteger {
            path: path.clone(),
            array: array.into(),
            index,
            value: v,
            reason,
        })
    })?;
    Ok((out, c.header.shape.is_empty()))
}

/// Reads a 1-D (or 0-d) array of strings: `U<n>` (UTF-32) or `S<n>` (UTF-8 bytes); the flag says
/// whether it was 0-d.
fn read_strings(src: &mut Source<'_>, array: &str) -> Result<(Vec<String>, bool)> {
    let (header, data_len) = src.header()?;
    let c = check_data(
        src,
        header,
        data_len,
        array,
        "a string array: '<U…' (str) or '|S…' (bytes, UTF-8)",
        &|k| matches!(k, Kind::Unicode | Kind::Bytes),
    )?;
    if c.header.shape.len() > 1 {
        return Err(NpyError::Shape {
            path: src.path.clone(),
            array: array.into(),
            shape: c.header.shape_str(),
            expected: "1-D (n,) or a scalar ()".into(),
        });
    }
    let mut out: Vec<String> = Vec::new();
    out.try_reserve_exact(c.elements).map_err(|_| {
        too_large(
            src,
            array,
            &c.header.shape,
            c.elements.saturating_mul(c.dtype.size),
        )
    })?;
    let (dtype, path) = (c.dtype, src.path.clone());
    stream(src, &c, array, |index, e| {
        let bad = |encoding| NpyError::InvalidString {
            path: path.clone(),
            index,
            encoding,
        };
        let s = if dtype.kind == Kind::Bytes {
            let end = e.iter().position(|&b| b == 0).unwrap_or(e.len());
            String::from_utf8(e[..end].to_vec()).map_err(|_| bad("UTF-8"))?
        } else {
            let mut s = String::new();
            for u in e.chunks_exact(4) {
                let cp = u32::from_le_bytes(bytes_n(u, dtype.big_endian));
                if cp == 0 {
                    break;
                }
                s.push(char::from_u32(cp).ok_or_else(|| bad("UTF-32"))?);
            }
            s
        };
        out.push(s);
        Ok(())
    })?;
    Ok((out, c.header.shape.is_empty()))
}

// ---------------------------------------------------------------------------------------------
// Files.

use crate::features::file_kind;

/// Opens a regular file; returns it with its length.
fn open_file(path: &Path) -> Result<(File, u64)> {
    let shown = path.display().to_string();
    let io = |source| NpyError::Io {
        path: shown.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(NpyError::NotAFile {
            path: shown,
            kind: file_kind(&meta),
        });
    }
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    Ok((file, len))
}

fn npy_source(path: &Path) -> Result<Source<'static>> {
    let (file, len) = open_file(path)?;
    Ok(Source {
        path: path.display().to_string(),
        reader: Box::new(BufReader::with_capacity(CHUNK, file)),
        len,
        crc: None,
        hasher: flate2::Crc::new(),
    })
}

/// The header of the `.npy` file at `path` (dtype, order, shape), without reading the data.
///
/// # Errors
/// [`NpyError::Io`], [`NpyError::NotAFile`], [`NpyError::NotNpy`], [`NpyError::Version`],
/// [`NpyError::Header`].
pub fn read_npy_header(path: impl AsRef<Path>) -> Result<NpyHeader> {
    Ok(npy_source(path.as_ref())?.header()?.0)
}

/// The layer a file holds: `features-<layer>.<ext>` gives `<layer>`, anything else its stem.
fn layer_of(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.strip_prefix("features-") {
        Some(layer) if !layer.is_empty() => layer.to_string(),
        _ => stem,
    }
}

fn check_len(path: &str, array: &str, len: usize, n: usize, features: &str) -> Result<()> {
    if len == n {
        Ok(())
    } else {
        Err(NpyError::LengthMismatch {
            path: path.into(),
            array: array.into(),
            len,
            n,
            features: features.into(),
        })
    }
}

/// Loads features (`n × d`, f16/f32/f64, C- or Fortran-order) and their labels (`n`, any integer
/// dtype) from two `.npy` files as one [`Features`]; the layer comes from the features' file name.
///
/// # Errors
/// Every [`NpyError`] that applies to a `.npy` file: unreadable or non-regular files, a bad
/// magic string, version or header, [`NpyError::Dtype`], [`NpyError::Shape`],
/// [`NpyError::Truncated`], [`NpyError::TrailingData`], [`NpyError::NonFinite`],
/// [`NpyError::Overflow`], [`NpyError::InvalidInteger`] (negative labels),
/// [`NpyError::LengthMismatch`] (labels and rows disagree), [`NpyError::TooLarge`].
pub fn load_npy(features: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Features> {
    let (fp, lp) = (features.as_ref(), labels.as_ref());
    let x = NpyFeatures::open(fp)?.to_array()?;
    let mut ls = npy_source(lp)?;
    let (y, _) = read_u32s(&mut ls, "labels", false)?;
    check_len(
        &ls.path,
        "labels",
        y.len(),
        x.nrows(),
        &fp.display().to_string(),
    )?;
    Ok(Features::new(x, y).with_layer(layer_of(fp)))
}

// ---------------------------------------------------------------------------------------------
// Memory-mapped features.

/// A `.npy` feature matrix read in row batches: memory-mapped where the format allows.
///
/// When the file's data are `f32`, little-endian (`'<f4'`, or `'=f4'` on a little-endian
/// machine) and in C order, the file is memory-mapped and [`rows`](Self::rows) hands out views
/// of the map (no copy: the operating system pages the data in as the batches are read, and
/// pages them out under memory pressure, so a file larger than memory can be summarised batch
/// by batch, e.g. into [`crate::stats::ClassStats::push`]). The view is of the file's own bytes
/// when they are 4-byte aligned in the map (numpy pads the header to a multiple of 64 bytes,
/// so they are for every file numpy writes); otherwise the batch is copied.
///
/// Every other layout is read into memory once at [`open`](Self::open), converted to `f32`
/// (as [`load_npy`] reads it): f16 and f64 data (which must be converted), big-endian data
/// (which must be swapped) and Fortran order (whose rows are not contiguous). Members of an
/// `.npz` archive are never mapped ([`load_npz`] reads them; a deflated member has no bytes to
/// map, and a stored one is not aligned).
///
/// Validation is the same in both cases and gives the same [`NpyError`]s: the header, dtype,
/// shape and file length are checked at `open` (a truncated file is [`NpyError::Truncated`]
/// before anything is mapped); NaN and ±∞ are checked in each batch a mapped file hands out
/// ([`NpyError::NonFinite`] naming the row and component of the file), and in the whole file at
/// `open` otherwise.
///
/// The usual caveat of memory-mapping applies: the file must not be truncated or rewritten by
/// another process while the `NpyFeatures` exists (numpy's `mmap_mode` has the same rule).
///
/// ```
/// use ndarray::{array, s};
/// use neural_collapse::npy::{write_npy_f32, NpyFeatures};
/// let dir = std::env::temp_dir().join(format!("nc-npy-map-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let x = array![[1.0f32, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.5, 0.5]];
/// write_npy_f32(dir.join("h.npy"), x.view())?;
/// let h = NpyFeatures::open(dir.join("h.npy"))?;
/// assert!(h.is_mapped());
/// assert_eq!(h.shape(), (5, 2));
/// let batches: Vec<_> = h.batches(2).collect::<Result<_, _>>()?;
/// assert_eq!(batches.len(), 3);
/// assert_eq!(batches[1], x.slice(s![2..4, ..]));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct NpyFeatures {
    path: String,
    n: usize,
    d: usize,
    data: Data,
}

enum Data {
    /// The file mapped; the data start `offset` bytes in.
    Mapped { map: memmap2::Mmap, offset: usize },
    /// Read and converted at `open`.
    Owned(Array2<f32>),
}

impl std::fmt::Debug for NpyFeatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpyFeatures")
            .field("path", &self.path)
            .field("shape", &(self.n, self.d))
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

impl NpyFeatures {
    /// Opens a `.npy` feature matrix (`n × d`, f16/f32/f64, C- or Fortran-order): maps it when
    /// it is f32, little-endian and C-order, else reads it (type docs).
    ///
    /// # Errors
    /// As [`load_npy`] for the features: unreadable or non-regular files, a bad magic string,
    /// version or header, [`NpyError::Dtype`], [`NpyError::Shape`], [`NpyError::Truncated`],
    /// [`NpyError::TrailingData`], [`NpyError::TooLarge`]; for a file that is read rather than
    /// mapped, also [`NpyError::NonFinite`] and [`NpyError::Overflow`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let p = path.as_ref();
        let mut src = npy_source(p)?;
        let (c, n, d) = matrix_header(&mut src)?;
        let mappable = c.dtype.size == 4 && !c.dtype.big_endian && !c.header.fortran_order;
        let shown = src.path.clone();
        if !(mappable && cfg!(target_endian = "little")) {
            let x = read_matrix(&mut npy_source(p)?)?;
            return Ok(NpyFeatures {
                path: shown,
                n,
                d,
                data: Data::Owned(x),
            });
        }
        let offset = (src.len - (c.elements * 4) as u64) as usize;
        drop(src);
        let (file, len) = open_file(p)?;
        if len != (offset + c.elements * 4) as u64 {
            return Err(NpyError::Header {
                path: shown,
                problem: format!("the file changed while it was opened ({len} bytes now)"),
            });
        }
        // SAFETY: the map is read-only and lives as long as `self`; the bytes are only read
        // as plain f32 values (any bit pattern is a valid f32). A file truncated or rewritten by
        // another process while it is mapped is outside what this type supports (type docs).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| NpyError::Io {
            path: shown.clone(),
            source,
        })?;
        if map.len() as u64 != len {
            return Err(NpyError::Header {
                path: shown,
                problem: format!("mapped {} bytes of a {len}-byte file", map.len()),
            });
        }
        Ok(NpyFeatures {
            path: shown,
            n,
            d,
            data: Data::Mapped { map, offset },
        })
    }

    /// `(n, d)`: rows (samples) and columns (features).
    pub fn shape(&self) -> (usize, usize) {
        (self.n, self.d)
    }

    /// Whether the file is memory-mapped (type docs say when).
    pub fn is_mapped(&self) -> bool {
        matches!(self.data, Data::Mapped { .. })
    }

    /// Rows `range` of the matrix: a view of the map (or of the matrix read at `open`), or a
    /// copy when the mapped bytes are not 4-byte aligned. A range reaching past `n` is cut at
    /// `n`; an empty range gives a `0 × d` batch.
    ///
    /// # Errors
    /// [`NpyError::NonFinite`] for a NaN or ±∞ in the rows of a mapped file, naming its row (of
    /// the file) and component.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Result<CowArray<'_, f32, Ix2>> {
        let end = range.end.min(self.n);
        let start = range.start.min(end);
        let (m, d) = (end - start, self.d);
        match &self.data {
            Data::Owned(x) => Ok(CowArray::from(x.slice(ndarray::s![start..end, ..]))),
            Data::Mapped { map, offset } => {
                let bytes = &map[offset + start * d * 4..offset + end * d * 4];
                let batch = match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                    // Little-endian f32 on a little-endian machine: the bytes are the values.
                    Ok(values) => CowArray::from(
                        ArrayView2::from_shape((m, d), values).map_err(|e| self.shape_err(e))?,
                    ),
                    Err(_) => {
                        let values: Vec<f32> = bytes
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect();
                        CowArray::from(
                            Array2::from_shape_vec((m, d), values)
                                .map_err(|e| self.shape_err(e))?,
                        )
                    }
                };
                if let Some(k) = batch.iter().position(|v| !v.is_finite()) {
                    let value = batch.iter().nth(k).copied().unwrap_or(f32::NAN);
                    return Err(NpyError::NonFinite {
                        path: self.path.clone(),
                        row: start + k / d,
                        component: k % d,
                        value: f64::from(value),
                    });
                }
                Ok(batch)
            }
        }
    }

    /// The rows in consecutive batches of `rows` rows (the last one shorter), each as
    /// [`rows`](Self::rows) gives it; `rows = 0` is taken as 1.
    pub fn batches(
        &self,
        rows: usize,
    ) -> impl Iterator<Item = Result<CowArray<'_, f32, Ix2>>> + '_ {
        let rows = rows.max(1);
        (0..self.n.div_ceil(rows)).map(move |b| self.rows(b * rows..(b + 1) * rows))
    }

    /// The whole matrix, owned (a mapped file is copied out of the map, batch by batch).
    ///
    /// # Errors
    /// As [`rows`](Self::rows); [`NpyError::TooLarge`] if the matrix cannot be allocated.
    pub fn to_array(self) -> Result<Array2<f32>> {
        if let Data::Owned(x) = self.data {
            return Ok(x);
        }
        let mut data: Vec<f32> = Vec::new();
        let elements = self.n * self.d;
        data.try_reserve_exact(elements)
            .map_err(|_| NpyError::TooLarge {
                path: self.path.clone(),
                array: "features".into(),
                shape: shape_str(&[self.n, self.d]),
                bytes: (elements as u64).saturating_mul(4),
            })?;
        let per = (CHUNK / (4 * self.d)).max(1);
        for batch in self.batches(per) {
            data.extend(batch?.iter().copied());
        }
        Array2::from_shape_vec((self.n, self.d), data).map_err(|e| self.shape_err(e))
    }

    fn shape_err(&self, e: ndarray::ShapeError) -> NpyError {
        NpyError::Header {
            path: self.path.clone(),
            problem: format!("feature matrix: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// .npz archives (zip).

struct Member {
    name: String,
    method: u16,
    flags: u16,
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    local_offset: u64,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

struct Archive {
    path: String,
    file: File,
    len: u64,
    members: Vec<Member>,
}

impl Archive {
    fn zip_err(&self, problem: impl Into<String>) -> NpyError {
        NpyError::Zip {
            path: self.path.clone(),
            problem: problem.into(),
        }
    }

    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> Result<()> {
        let path = self.path.clone();
        let io = |source| NpyError::Io {
            path: path.clone(),
            source,
        };
        self.file.seek(SeekFrom::Start(at)).map_err(io)?;
        let got = read_full(&mut self.file, buf).map_err(io)?;
        if got < buf.len() {
            return Err(self.zip_err(format!(
                "truncated archive: {} bytes needed at offset {at}, the file has {}",
                buf.len(),
                self.len
            )));
        }
        Ok(())
    }

    fn open(path: &Path) -> Result<Archive> {
        let (file, len) = open_file(path)?;
        let mut a = Archive {
            path: path.display().to_string(),
            file,
            len,
            members: Vec::new(),
        };
        // End of central directory: 22 bytes plus a comment of at most 65,535.
        let tail_len = len.min(22 + 65_535);
        let mut tail = vec![0u8; tail_len as usize];
        a.read_at(len - tail_len, &mut tail)?;
        let eocd = (0..tail.len().saturating_sub(21))
            .rev()
            .find(|&i| le32(&tail, i) == 0x0605_4b50)
            .ok_or_else(|| {
                let mut start = [0u8; 4];
                let zip = a.read_at(0, &mut start).is_ok() && &start == b"PK\x03\x04";
                a.zip_err(if zip {
                    "truncated zip archive: no end-of-central-directory record".to_string()
                } else {
                    "not a .npz (zip) archive: no end-of-central-directory record".to_string()
                })
            })?;
        let eocd_at = len - tail_len + eocd as u64;
        let e = &tail[eocd..];
        let mut entries = u64::from(le16(e, 10));
        let mut cd_size = u64::from(le32(e, 12));
        let mut cd_offset = u64::from(le32(e, 16));
        if entries == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
            // ZIP64: the locator sits just before the record.
            let mut loc = [0u8; 20];
            if eocd_at < 20 {
                return Err(a.zip_err("ZIP64 locator missing"));
            }
            a.read_at(eocd_at - 20, &mut loc)?;
            if le32(&loc, 0) != 0x0706_4b50 {
                return Err(a.zip_err("ZIP64 locator missing"));
            }
            let mut rec = [0u8; 56];
            a.read_at(le64(&loc, 8), &mut rec)?;
            if le32(&rec, 0) != 0x0606_4b50 {
                return Err(a.zip_err("ZIP64 end-of-central-directory record missing"));
            }
            entries = le64(&rec, 32);
            cd_size = le64(&rec, 40);
            cd_offset = le64(&rec, 48);
        }
        if cd_offset.checked_add(cd_size).is_none_or(|end| end > len) || cd_size > 1 << 30 {
            return Err(a.zip_err(format!(
                "central directory (offset {cd_offset}, {cd_size} bytes) lies outside the {len}-byte file: truncated?"
            )));
        }
        let mut cd = vec![0u8; cd_size as usize];
        a.read_at(cd_offset, &mut cd)?;
        let mut i = 0usize;
        for _ in 0..entries {
            if i + 46 > cd.len() || le32(&cd, i) != 0x0201_4b50 {
                return Err(a.zip_err("malformed central directory"));
            }
            let (nl, xl, cl) = (
                le16(&cd, i + 28) as usize,
                le16(&cd, i + 30) as usize,
                le16(&cd, i + 32) as usize,
            );
            if i + 46 + nl + xl + cl > cd.len() {
                return Err(a.zip_err("malformed central directory"));
            }
            let name = String::from_utf8_lossy(&cd[i + 46..i + 46 + nl]).into_owned();
            let mut m = Member {
                name,
                flags: le16(&cd, i + 8),
                method: le16(&cd, i + 10),
                crc: le32(&cd, i + 16),
                compressed: u64::from(le32(&cd, i + 20)),
                uncompressed: u64::from(le32(&cd, i + 24)),
                local_offset: u64::from(le32(&cd, i + 42)),
            };
            // ZIP64 extra field: the 0xffffffff fields, in order.
            let extra = &cd[i + 46 + nl..i + 46 + nl + xl];
            let mut j = 0;
            while j + 4 <= extra.len() {
                let (id, size) = (le16(extra, j), le16(extra, j + 2) as usize);
                let body = &extra[(j + 4).min(extra.len())..(j + 4 + size).min(extra.len())];
                if id == 0x0001 {
                    let mut at = 0;
                    for field in [&mut m.uncompressed, &mut m.compressed, &mut m.local_offset] {
                        if *field == 0xffff_ffff && at + 8 <= body.len() {
                            *field = le64(body, at);
                            at += 8;
                        }
                    }
                }
                j += 4 + size;
            }
            a.members.push(m);
            i += 46 + nl + xl + cl;
        }
        Ok(a)
    }

    fn names(&self) -> String {
        self.members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The member `name.npy` (first of `names` present), as a source.
    fn member(&mut self, names: &[&str]) -> Result<Option<Source<'_>>> {
        let Some(idx) = names.iter().find_map(|n| {
            let file = format!("{n}.npy");
            self.members.iter().position(|m| m.name == file)
        }) else {
            return Ok(None);
        };
        let m = &self.members[idx];
        let shown = format!("{}, member `{}`", self.path, m.name);
        let zerr = |problem: String| NpyError::Zip {
            path: shown.clone(),
            problem,
        };
        if m.flags & 1 != 0 {
            return Err(zerr("the member is encrypted".into()));
        }
        if m.method != 0 && m.method != 8 {
            return Err(zerr(format!(
                "compression method {} is not supported (stored or deflate, as np.savez / np.savez_compressed write)",
                m.method
            )));
        }
        let (offset, compressed, uncompressed, crc, method) = (
            m.local_offset,
            m.compressed,
            m.uncompressed,
            m.crc,
            m.method,
        );
        let mut local = [0u8; 30];
        self.read_at(offset, &mut local)?;
        if le32(&local, 0) != 0x0403_4b50 {
            return Err(zerr(format!("no local header at offset {offset}")));
        }
        let start = offset + 30 + u64::from(le16(&local, 26)) + u64::from(le16(&local, 28));
        if start
            .checked_add(compressed)
            .is_none_or(|end| end > self.len)
        {
            return Err(zerr(format!(
                "truncated: its {compressed} bytes at offset {start} run past the end of the {}-byte file",
                self.len
            )));
        }
        self.file
            .seek(SeekFrom::Start(start))
            .map_err(|source| NpyError::Io {
                path: shown.clone(),
                source,
            })?;
        let raw = BufReader::with_capacity(CHUNK, &self.file).take(compressed);
        let reader: Box<dyn Read + '_> = if method == 0 {
            Box::new(raw)
        } else {
            Box::new(flate2::bufread::DeflateDecoder::new(raw))
        };
        Ok(Some(Source {
            path: shown,
            reader,
            len: uncompressed,
            crc: Some(crc),
            hasher: flate2::Crc::new(),
        }))
    }

    fn required(&mut self, names: &[&str]) -> Result<Source<'_>> {
        let found = self.names();
        let path = self.path.clone();
        self.member(names)?.ok_or_else(|| NpyError::MissingMember {
            path,
            member: names
                .iter()
                .map(|n| format!("{n}.npy"))
                .collect::<Vec<_>>()
                .join(" or "),
            found,
        })
    }
}

/// Loads an `.npz` archive (from `np.savez` or `np.savez_compressed`) as one [`Features`] per
/// `(epoch, split)`, sorted by epoch then split; rows keep their order within each.
///
/// Members: `x` or `features` (`n × d` float, required), `labels` or `label` (`n` integers,
/// required), and optionally `epoch` (`n` integers, or one scalar), `split` (`n` strings, or one
/// scalar), `sample`, `coarse`, `pred` (`n` integers each); others are ignored. Without `epoch`
/// and `split`, the result is one [`Features`] with both unset.
///
/// ```python
/// np.savez("features-fc2.npz", x=h, labels=y, epoch=np.full(len(y), 30), split=["train"] * len(y))
/// ```
///
/// # Errors
/// As [`load_npy`] for each member (the message names the archive and the member), plus
/// [`NpyError::Zip`] (not a zip archive, truncated, encrypted, an unsupported compression
/// method, a CRC mismatch) and [`NpyError::MissingMember`].
pub fn load_npz(path: impl AsRef<Path>) -> Result<Vec<Features>> {
    let path = path.as_ref();
    let mut a = Archive::open(path)?;
    let (x, x_path) = {
        let mut s = a.required(&["x", "features"])?;
        (read_matrix(&mut s)?, s.path.clone())
    };
    let n = x.nrows();
    let labels = {
        let mut s = a.required(&["labels", "label"])?;
        let (y, _) = read_u32s(&mut s, "labels", false)?;
        check_len(&s.path, "labels", y.len(), n, &x_path)?;
        y
    };
    let mut optional = BTreeMap::new();
    for name in ["sample", "coarse", "pred", "epoch"] {
        if let Some(mut s) = a.member(&[name])? {
            let (mut v, scalar) = read_u32s(&mut s, name, name == "epoch")?;
            if scalar {
                v = vec![v[0]; n];
            }
            check_len(&s.path, name, v.len(), n, &x_path)?;
            optional.insert(name, v);
        }
    }
    let split = match a.member(&["split"])? {
        Some(mut s) => {
            let (mut v, scalar) = read_strings(&mut s, "split")?;
            if scalar {
                v = vec![v[0].clone(); n];
            }
            check_len(&s.path, "split", v.len(), n, &x_path)?;
            Some(v)
        }
        None => None,
    };
    let epoch = optional.remove("epoch");
    let layer = layer_of(path);
    let build = |rows: Option<&[usize]>| {
        let pick = |v: &Vec<u32>| match rows {
            Some(r) => r.iter().map(|&i| v[i]).collect(),
            None => v.clone(),
        };
        let mut f = Features::new(
            match rows {
                Some(r) => x.select(Axis(0), r),
                None => x.clone(),
            },
            pick(&labels),
        )
        .with_layer(layer.clone());
        f.sample = optional.get("sample").map(pick);
        f.coarse = optional.get("coarse").map(pick);
        f.pred = optional.get("pred").map(pick);
        f
    };
    if epoch.is_none() && split.is_none() {
        return Ok(vec![build(None)]);
    }
    let mut groups: BTreeMap<(Option<u32>, Option<&str>), Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        let key = (
            epoch.as_ref().map(|e| e[i]),
            split.as_ref().map(|s| s[i].as_str()),
        );
        groups.entry(key).or_default().push(i);
    }
    if groups.len() == 1 {
        let ((e, s), _) = groups.into_iter().next().expect("one group");
        let mut f = build(None);
        f.epoch = e;
        f.split = s.map(str::to_string);
        return Ok(vec![f]);
    }
    Ok(groups
        .into_iter()
        .map(|((e, s), rows)| {
            let mut f = build(Some(&rows));
            f.epoch = e;
            f.split = s.map(str::to_string);
            f
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Writers.

fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> Result<()> {
    let shown = path.display().to_string();
    let io = |source| NpyError::Io {
        path: shown.clone(),
        source,
    };
    let mut dict = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        shape_str(shape)
    );
    // Magic (6) + version (2) + length (2) + dict + '\n', padded with spaces to 64 bytes.
    let total = (10 + dict.len() + 1).div_ceil(64) * 64;
    while 10 + dict.len() + 1 < total {
        dict.push(' ');
    }
    dict.push('\n');
    let mut w = BufWriter::new(File::create(path).map_err(io)?);
    w.write_all(b"\x93NUMPY\x01\x00").map_err(io)?;
    w.write_all(&(dict.len() as u16).to_le_bytes())
        .map_err(io)?;
    w.write_all(dict.as_bytes()).map_err(io)?;
    w.write_all(data).map_err(io)?;
    w.flush().map_err(io)
}

/// Writes an `n × d` f32 matrix as a `.npy` file (format 1.0, `<f4`, C order), as
/// `np.save(path, x.astype(np.float32))` would.
///
/// # Errors
/// [`NpyError::Io`] if the file cannot be written.
pub fn write_npy_f32(path: impl AsRef<Path>, x: ArrayView2<'_, f32>) -> Result<()> {
    let data: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(path.as_ref(), "<f4", &[x.nrows(), x.ncols()], &data)
}

/// Writes labels as a 1-D `.npy` file (format 1.0, `<u4`).
///
/// # Errors
/// [`NpyError::Io`] if the file cannot be written.
pub fn write_npy_u32(path: impl AsRef<Path>, values: &[u32]) -> Result<()> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(path.as_ref(), "<u4", &[values.len()], &data)
}
