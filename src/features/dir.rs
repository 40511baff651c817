//! Directories of Parquet feature files: one file per checkpoint, or one per layer.
//!
//! [`FeatureScan::open`] on a directory reads it as one layer; [`FeatureScan::open_layer`]
//! picks one layer of a directory that holds several. The file names say what each file holds:
//!
//! ```text
//! file name                       holds
//! epoch-<E>.parquet               checkpoint E of the directory's layer: the folder's name, less a
//!                                 leading `features-` (`runs/my-run/fc2/epoch-3.parquet` → fc2)
//! epoch-<E>-<layer>.parquet       checkpoint E of <layer>
//! features-<layer>.parquet        every checkpoint of <layer> (epochs from its `epoch` column)
//! ```
//!
//! `<E>` is a decimal number fitting `u32` (leading zeros allowed: `epoch-007` is epoch 7);
//! `.pq` works as `.parquet`. Each file follows schema v1 (module docs), except that a file
//! named `epoch-<E>…` may leave out the `epoch` column: the name supplies it. When the column
//! is there, every row must hold `E` ([`FeatureError::NameMismatch`] names the file, row and
//! value otherwise), so a name and a column can never silently disagree. The layer comes from
//! the name only (schema v1 has no layer column).
//!
//! What is read and what is refused:
//!
//! * Parquet files (`.parquet`, `.pq`) whose name matches none of the patterns are an error
//!   ([`FeatureError::UnmatchedFileName`]), not skipped: a misnamed checkpoint would otherwise
//!   vanish from every table. `classifier.parquet` (the run's classifier, [`read_classifier`](super::read_classifier))
//!   and hidden files (`.`-prefixed) are skipped; other files (`run.json`, CSV, …) and
//!   subdirectories are not feature files of the directory and are ignored — except a
//!   subdirectory named like a Parquet file (`part.parquet/`, a partitioned dataset), which is
//!   refused ([`FeatureError::NotAFile`]) rather than silently left out.
//! * A directory without feature files is [`FeatureError::EmptyDirectory`]; files of several
//!   layers opened as one are [`FeatureError::SeveralLayers`].
//! * Within one layer: two files for one checkpoint (`epoch-3.parquet` and `epoch-003.pq`), or a
//!   file of every checkpoint beside files of one, or files whose optional columns (`sample`,
//!   `coarse`, `pred`) or feature layout and width differ, are [`FeatureError::DirectoryLayout`].
//!   Integer types may differ between files (one file's `label` `u8`, another's `i64`): the
//!   columns are combined at their common supertype and validated as in one file.
//!
//! The files are scanned lazily and concatenated in checkpoint order (polars `concat` of one
//! `scan_parquet` per file), so a directory behaves as one file: [`FeatureScan::epoch`] /
//! [`FeatureQuery::split`](super::FeatureQuery::split) filters, `checkpoints`, `load`, the metrics and probe scans, the CLI's
//! `metrics` and `probe`. Rows are numbered across the directory (the file-row column
//! `__nc_file_row` continues from one file to the next), and an error found while loading names
//! the file and its own row, as for a single file.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::{
    check_int_column, check_str_column, check_vec_column, display, format_of, polars_err,
    scan_file, scan_file_from, CollectGuarded, FeatureError, FeatureScan, Format, VecLayout, ROW,
};

/// The file-name patterns of a feature directory, as error messages show them.
pub const DIR_PATTERNS: &str =
    "epoch-<E>.parquet, epoch-<E>-<layer>.parquet or features-<layer>.parquet (or .pq)";

/// One file of a directory scan: its rows are `offset .. offset + rows` of the directory.
#[derive(Clone)]
pub(super) struct Part {
    shown: String,
    offset: u64,
    rows: u64,
    /// The checkpoint the file name gives.
    epoch: Option<u32>,
    /// The file's scan, projected to the directory's columns.
    lf: LazyFrame,
}

/// A Parquet file of the directory and what its name says.
struct Entry {
    path: PathBuf,
    epoch: Option<u32>,
    layer: String,
}

/// `(epoch, layer)` from a file stem, `None` when it matches no pattern.
fn parse_name(stem: &str) -> Option<(Option<u32>, Option<String>)> {
    if let Some(rest) = stem.strip_prefix("epoch-") {
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        let epoch: u32 = rest[..end].parse().ok()?;
        let tail = &rest[end..];
        if tail.is_empty() {
            return Some((Some(epoch), None));
        }
        let layer = tail.strip_prefix('-')?;
        return (!layer.is_empty()).then(|| (Some(epoch), Some(layer.to_string())));
    }
    let layer = stem.strip_prefix("features-")?;
    (!layer.is_empty()).then(|| (None, Some(layer.to_string())))
}

/// The layer of files named `epoch-<E>.parquet`: the folder's name, less a leading `features-`.
fn dir_layer(dir: &Path) -> String {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            std::fs::canonicalize(dir)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_default();
    match name.strip_prefix("features-") {
        Some(layer) if !layer.is_empty() => layer.to_string(),
        _ => name,
    }
}

fn is_parquet_name(raw: &[u8]) -> bool {
    let lower = raw.to_ascii_lowercase();
    lower.ends_with(b".parquet") || lower.ends_with(b".pq")
}

/// The directory's Parquet feature files, sorted by layer, epoch and name.
fn list(dir: &Path) -> Result<Vec<Entry>, FeatureError> {
    let io = |source| FeatureError::Io {
        path: display(dir),
        source,
    };
    let layer_of_dir = dir_layer(dir);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let raw = path.file_name().map_or(&[][..], |n| n.as_encoded_bytes());
        if raw.starts_with(b".") || !is_parquet_name(raw) {
            continue;
        }
        // A feature file whose name is not UTF-8 is an error, not silently left out.
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            return Err(FeatureError::NonUtf8Path {
                path: display(&path),
            });
        };
        debug_assert_eq!(format_of(&path), Some(Format::Parquet));
        if stem == "classifier" {
            continue;
        }
        let (epoch, layer) = parse_name(stem).ok_or_else(|| FeatureError::UnmatchedFileName {
            path: display(&path),
            patterns: DIR_PATTERNS,
        })?;
        out.push(Entry {
            layer: layer.unwrap_or_else(|| layer_of_dir.clone()),
            path,
            epoch,
        });
    }
    out.sort_by(|a, b| (&a.layer, a.epoch, &a.path).cmp(&(&b.layer, b.epoch, &b.path)));
    Ok(out)
}

fn describe(layout: &VecLayout) -> String {
    match layout {
        VecLayout::Array(d) => format!("a fixed-size list of width {d}"),
        VecLayout::List => "a variable-size list".to_string(),
        VecLayout::Wide(names) => format!("{} wide columns x_<j>", names.len()),
    }
}

/// The layers of a feature directory (see the module docs), sorted.
///
/// # Errors
///
/// As listing in [`open_dir`]: [`FeatureError::Io`], [`FeatureError::NonUtf8Path`],
/// [`FeatureError::UnmatchedFileName`].
pub(super) fn layers(dir: &Path) -> Result<Vec<String>, FeatureError> {
    let mut layers: Vec<String> = list(dir)?.into_iter().map(|e| e.layer).collect();
    layers.dedup();
    Ok(layers)
}

/// Opens `layer` (or the only layer) of the feature directory `dir` as one scan.
pub(super) fn open_dir(dir: &Path, layer: Option<&str>) -> Result<FeatureScan, FeatureError> {
    let shown = display(dir);
    if dir.to_str().is_none() {
        return Err(FeatureError::NonUtf8Path { path: shown });
    }
    let entries = list(dir)?;
    if entries.is_empty() {
        return Err(FeatureError::EmptyDirectory {
            dir: shown,
            patterns: DIR_PATTERNS,
        });
    }
    let mut layers: Vec<&str> = entries.iter().map(|e| e.layer.as_str()).collect();
    layers.dedup();
    let layer = match layer {
        Some(l) if layers.contains(&l) => l.to_string(),
        Some(l) => {
            return Err(FeatureError::UnknownLayer {
                dir: shown,
                layer: l.to_string(),
                available: layers.join(", "),
            })
        }
        None if layers.len() > 1 => {
            return Err(FeatureError::SeveralLayers {
                dir: shown,
                layers: layers.join(", "),
            })
        }
        None => layers[0].to_string(),
    };
    let files: Vec<&Entry> = entries.iter().filter(|e| e.layer == layer).collect();
    let layout_err = |problem: String| FeatureError::DirectoryLayout {
        dir: shown.clone(),
        problem,
    };
    if files.len() > 1 {
        if let Some(all) = files.iter().find(|f| f.epoch.is_none()) {
            let other = files
                .iter()
                .find(|f| !std::ptr::eq(**f, *all))
                .map_or(String::new(), |f| display(&f.path));
            return Err(layout_err(format!(
                "{} holds every checkpoint of layer `{layer}` but {other} is another file of \
                 it; keep one file per layer or one file per checkpoint",
                display(&all.path)
            )));
        }
    }
    for w in files.windows(2) {
        if w[0].epoch == w[1].epoch {
            return Err(layout_err(format!(
                "two files for epoch {} of layer `{layer}`: {} and {}",
                w[0].epoch.map_or("-".into(), |e| e.to_string()),
                display(&w[0].path),
                display(&w[1].path)
            )));
        }
    }

    let mut parts = Vec::with_capacity(files.len());
    let mut frames = Vec::with_capacity(files.len());
    let mut first: Option<(String, VecLayout, Vec<&'static str>)> = None;
    let mut offset: u64 = 0;
    for f in &files {
        let fshown = display(&f.path);
        let probe = scan_file(&f.path, Format::Parquet)?;
        let schema = super::schema_guarded(&mut probe.clone()).map_err(polars_err(&fshown))?;
        // The epoch column is required unless the name gives the checkpoint.
        let has_epoch = check_int_column(&fshown, &schema, "epoch", f.epoch.is_none())?;
        check_str_column(&fshown, &schema, "split")?;
        check_int_column(&fshown, &schema, "label", true)?;
        let mut optional = Vec::new();
        for name in ["sample", "coarse", "pred"] {
            if check_int_column(&fshown, &schema, name, false)? {
                optional.push(name);
            }
        }
        let layout = check_vec_column(&fshown, &schema, "x", true)?;
        match &first {
            None => first = Some((fshown.clone(), layout.clone(), optional.clone())),
            Some((name0, layout0, optional0)) => {
                if layout != *layout0 {
                    return Err(layout_err(format!(
                        "the features of {fshown} are {} but those of {name0} are {}",
                        describe(&layout),
                        describe(layout0)
                    )));
                }
                if optional != *optional0 {
                    let list = |o: &[&str]| {
                        if o.is_empty() {
                            "none".to_string()
                        } else {
                            o.join(", ")
                        }
                    };
                    return Err(layout_err(format!(
                        "{fshown} has the optional columns {} but {name0} has {}",
                        list(&optional),
                        list(optional0)
                    )));
                }
            }
        }
        let count = probe
            .clone()
            .select([len()])
            .collect_guarded()
            .map_err(polars_err(&fshown))?;
        let rows = count
            .get_columns()
            .first()
            .and_then(|c| c.get(0).ok())
            .and_then(|v| v.extract::<u64>())
            .unwrap_or(0);
        if let (true, Some(e)) = (has_epoch, f.epoch) {
            let bad = probe
                .clone()
                .filter(col("epoch").neq(lit(e)))
                .select([col(ROW), col("epoch")])
                .limit(1)
                .collect_guarded()
                .map_err(polars_err(&fshown))?;
            if bad.height() > 0 {
                let get = |c: &str| bad.column(c).ok().and_then(|c| c.get(0).ok());
                return Err(FeatureError::NameMismatch {
                    path: fshown,
                    column: "epoch".into(),
                    named: e.to_string(),
                    found: get("epoch").map_or("?".into(), |v| v.to_string()),
                    row: get(ROW).and_then(|v| v.extract::<u64>()).unwrap_or(0),
                });
            }
        }
        let from = IdxSize::try_from(offset).map_err(|_| {
            layout_err(format!(
                "more than {} rows: too many for a row index",
                IdxSize::MAX
            ))
        })?;
        let lf = scan_file_from(&f.path, Format::Parquet, from)?;
        let mut exprs = vec![col(ROW)];
        exprs.push(match (has_epoch, f.epoch) {
            (false, Some(e)) => lit(e).alias("epoch"),
            _ => col("epoch"),
        });
        // One string type for `split` (a categorical in one file and a string in another).
        exprs.push(col("split").cast(DataType::String));
        exprs.extend(optional.iter().map(|c| col(*c)));
        exprs.push(col("label"));
        match &layout {
            VecLayout::Wide(names) => exprs.extend(names.iter().map(|n| col(n.clone()))),
            _ => exprs.push(col("x")),
        }
        let lf = lf.select(exprs);
        frames.push(lf.clone());
        parts.push(Part {
            shown: fshown,
            offset,
            rows,
            epoch: f.epoch,
            lf,
        });
        offset += rows;
    }
    let Some((_, layout, optional)) = first else {
        // Unreachable: `files` holds at least the entry that named `layer`.
        return Err(FeatureError::EmptyDirectory {
            dir: shown,
            patterns: DIR_PATTERNS,
        });
    };
    let lf = concat(
        frames,
        UnionArgs {
            to_supertypes: true,
            ..Default::default()
        },
    )
    .map_err(polars_err(&shown))?;
    let mut columns: Vec<PlSmallStr> = vec![ROW.into(), "epoch".into(), "split".into()];
    columns.extend(optional.iter().map(|c| PlSmallStr::from(*c)));
    columns.push("label".into());
    match &layout {
        VecLayout::Wide(names) => columns.extend(names.iter().cloned()),
        _ => columns.push("x".into()),
    }
    Ok(FeatureScan {
        path: dir.to_path_buf(),
        shown,
        layer,
        lf,
        layout,
        columns,
        parts: Some(parts.into()),
    })
}

impl FeatureScan {
    /// Opens one layer of a feature directory: the files `epoch-<E>-<layer>.parquet`, or
    /// `features-<layer>.parquet`, or `epoch-<E>.parquet` when `layer` is the folder's layer.
    ///
    /// ```text
    /// file name                       holds
    /// epoch-<E>.parquet               checkpoint E of the directory's layer: the folder's name,
    ///                                 less a leading `features-` (`runs/mine/fc2/epoch-3.parquet` → fc2)
    /// epoch-<E>-<layer>.parquet       checkpoint E of <layer>
    /// features-<layer>.parquet        every checkpoint of <layer> (epochs from its `epoch` column)
    /// ```
    ///
    /// `<E>` is decimal (leading zeros allowed) and fits `u32`; `.pq` works as `.parquet`. A file
    /// named `epoch-<E>…` may leave out the `epoch` column; when it has one, every row must hold
    /// E. Parquet files matching no pattern are an error (not skipped); `classifier.parquet`,
    /// hidden files, other file types and subdirectories are skipped (a subdirectory named
    /// `*.parquet` is refused as not a regular file). The files are scanned
    /// lazily and concatenated in checkpoint order, with integer columns at their common
    /// supertype; rows are numbered across the directory, and errors found while loading name
    /// the file and its own row.
    ///
    /// # Errors
    ///
    /// [`FeatureError::UnknownLayer`] (naming the layers there are),
    /// [`FeatureError::EmptyDirectory`], [`FeatureError::UnmatchedFileName`],
    /// [`FeatureError::NameMismatch`], [`FeatureError::DirectoryLayout`] (two files for one
    /// checkpoint, a file of every checkpoint beside files of one, optional columns or feature
    /// layouts that differ between files), [`FeatureError::Io`] and
    /// [`FeatureError::NonUtf8Path`], and each file's schema errors as [`FeatureScan::open`]
    /// gives them. [`FeatureScan::open`] on a directory of several layers is
    /// [`FeatureError::SeveralLayers`].
    pub fn open_layer(dir: impl AsRef<Path>, layer: &str) -> Result<Self, FeatureError> {
        let dir = dir.as_ref();
        let meta = std::fs::metadata(dir).map_err(|source| FeatureError::Io {
            path: display(dir),
            source,
        })?;
        if !meta.is_dir() {
            return Err(FeatureError::Io {
                path: display(dir),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory"),
            });
        }
        open_dir(dir, Some(layer))
    }

    /// The layers of the feature directory `dir` (module docs of `features::dir`), sorted.
    ///
    /// # Errors
    ///
    /// [`FeatureError::Io`], [`FeatureError::NonUtf8Path`], [`FeatureError::UnmatchedFileName`].
    pub fn dir_layers(dir: impl AsRef<Path>) -> Result<Vec<String>, FeatureError> {
        layers(dir.as_ref())
    }

    /// The files this scan reads: the file itself, or a directory's files in row order.
    pub fn files(&self) -> Vec<PathBuf> {
        match &self.parts {
            None => vec![self.path.clone()],
            Some(parts) => parts.iter().map(|p| PathBuf::from(&p.shown)).collect(),
        }
    }

    /// The scan of the files that can hold checkpoint `epoch` (those whose name gives it, or no
    /// checkpoint), when that is fewer files than the whole directory; `None` otherwise (and for
    /// a single file). A query for one epoch reads only these files.
    pub(super) fn files_for_epoch(&self, epoch: u32) -> Option<LazyFrame> {
        let parts = self.parts.as_ref()?;
        let keep: Vec<LazyFrame> = parts
            .iter()
            .filter(|p| p.epoch.is_none_or(|e| e == epoch))
            .map(|p| p.lf.clone())
            .collect();
        match keep.len() {
            n if n == parts.len() => None,
            // No file of that epoch: an empty frame of the directory's columns (the query then
            // reports no rows, with the checkpoints there are).
            0 => Some(parts[0].lf.clone().slice(0, 0)),
            1 => keep.into_iter().next(),
            _ => concat(
                keep,
                UnionArgs {
                    to_supertypes: true,
                    ..Default::default()
                },
            )
            .ok(),
        }
    }

    /// An error found while loading rows of a directory scan, with the directory-wide row
    /// turned into the file and its row.
    pub(super) fn relocate(&self, e: FeatureError) -> FeatureError {
        let Some(parts) = &self.parts else {
            return e;
        };
        let locate = |path: String, row: u64| -> (String, u64) {
            match parts
                .iter()
                .find(|p| row >= p.offset && row - p.offset < p.rows)
            {
                Some(p) => (p.shown.clone(), row - p.offset),
                None => (path, row),
            }
        };
        match e {
            FeatureError::NullValue {
                path,
                column,
                row: Some(r),
            } => {
                let (path, r) = locate(path, r);
                FeatureError::NullValue {
                    path,
                    column,
                    row: Some(r),
                }
            }
            FeatureError::InvalidInteger {
                path,
                column,
                row: Some(r),
                value,
                reason,
            } => {
                let (path, r) = locate(path, r);
                FeatureError::InvalidInteger {
                    path,
                    column,
                    row: Some(r),
                    value,
                    reason,
                }
            }
            FeatureError::NonFinite {
                path,
                column,
                row,
                component,
                value,
            } => {
                let (path, row) = locate(path, row);
                FeatureError::NonFinite {
                    path,
                    column,
                    row,
                    component,
                    value,
                }
            }
            FeatureError::Overflow {
                path,
                column,
                row,
                component,
                value,
            } => {
                let (path, row) = locate(path, row);
                FeatureError::Overflow {
                    path,
                    column,
                    row,
                    component,
                    value,
                }
            }
            FeatureError::RaggedFeatures {
                path,
                column,
                row,
                len,
                expected,
            } => {
                let (path, row) = locate(path, row);
                FeatureError::RaggedFeatures {
                    path,
                    column,
                    row,
                    len,
                    expected,
                }
            }
            e => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_name;

    #[test]
    fn file_name_patterns() {
        assert_eq!(parse_name("epoch-7"), Some((Some(7), None)));
        assert_eq!(parse_name("epoch-007"), Some((Some(7), None)));
        assert_eq!(
            parse_name("epoch-12-fc2"),
            Some((Some(12), Some("fc2".into())))
        );
        assert_eq!(
            parse_name("epoch-3-block-1"),
            Some((Some(3), Some("block-1".into())))
        );
        assert_eq!(parse_name("features-fc2"), Some((None, Some("fc2".into()))));
        for bad in [
            "epoch-",
            "epoch-x",
            "epoch-3-",
            "epoch-3x",
            "epoch-99999999999",
            "features-",
            "fc2",
            "part-0000",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
