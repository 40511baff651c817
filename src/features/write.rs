//! Writing feature files ([`write_features`]) and classifier files ([`write_classifier`]) in
//! schema v1 (see [`crate::features`]): the inverse of the loaders. The items are checked
//! (epoch, split, lengths, dimension) before anything is written, and reading a file back gives
//! the same values exactly.

use super::*;

fn check_write_path(path: &Path) -> Result<File, FeatureError> {
    let shown = display(path);
    if format_of(path) != Some(Format::Parquet) {
        return Err(FeatureError::UnsupportedFormat {
            path: shown,
            expected: ".parquet or .pq",
        });
    }
    File::create(path).map_err(|source| FeatureError::Io {
        path: shown,
        source,
    })
}

fn array_column(name: &str, flat: Series, d: usize, path: &str) -> Result<Column, FeatureError> {
    let s = flat
        .reshape_array(&[ReshapeDimension::Infer, ReshapeDimension::new(d as i64)])
        .map_err(polars_err(path))?;
    Ok(s.with_name(name.into()).into_column())
}

/// zstd level of the files the crate writes: 19 makes the bundled studies about 5 % smaller than
/// polars' default level and still reads at the same speed (decompression does not depend on the
/// level); writing is slower, which only the trainer's export sees.
const ZSTD_LEVEL: i32 = 19;

/// Writes frames as consecutive row groups of one Parquet file (one row group per frame, so
/// that a filter on a checkpoint can skip the others by their statistics), zstd level
/// [`ZSTD_LEVEL`].
fn write_frames(path: &Path, file: File, frames: Vec<DataFrame>) -> Result<(), FeatureError> {
    let shown = display(path);
    let pe = polars_err(&shown);
    let schema = frames[0].schema().clone();
    let level = ZstdLevel::try_new(ZSTD_LEVEL).map_err(&pe)?;
    let mut writer = ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(Some(level)))
        .batched(&schema)
        .map_err(&pe)?;
    for mut df in frames {
        df.as_single_chunk();
        writer.write_batch(&df).map_err(&pe)?;
    }
    writer.finish().map_err(&pe)?;
    Ok(())
}

/// Writes feature sets to a schema-v1 Parquet file (`.parquet` or `.pq`), one row group per item.
///
/// Every item must carry [`Features::epoch`] and [`Features::split`]. Columns written: `epoch`
/// (u32), `split` (str), `sample` (u32; `0..n` when [`Features::sample`] is `None`), `label`
/// (u32), `coarse` and `pred` (u32, only when some item has them; null for items without), and
/// `x` as `Array(f32, d)`. [`Features::layer`] is not stored (the file name carries it). Items
/// with zero rows are skipped. Reading back with [`FeatureScan`] gives the same values exactly.
///
/// # Errors
///
/// [`FeatureError::InvalidInput`] if `features` is empty, an item lacks its epoch or split, its
/// lengths disagree with its rows, or items differ in `d`; [`FeatureError::EmptyFeatures`] if
/// `d = 0`; [`FeatureError::UnsupportedFormat`] for another extension; [`FeatureError::Io`] /
/// [`FeatureError::Polars`] if the file cannot be written.
pub fn write_features(path: impl AsRef<Path>, features: &[Features]) -> Result<(), FeatureError> {
    let path = path.as_ref();
    let shown = display(path);
    let invalid = |index: usize, problem: String| FeatureError::InvalidInput {
        path: shown.clone(),
        index,
        problem,
    };
    if features.is_empty() {
        return Err(invalid(0, "no features to write".into()));
    }
    let d = features[0].dim();
    if d == 0 {
        return Err(FeatureError::EmptyFeatures {
            path: shown.clone(),
            column: "x".into(),
        });
    }
    for (i, f) in features.iter().enumerate() {
        let n = f.n_samples();
        if f.epoch.is_none() {
            return Err(invalid(i, "`epoch` is None".into()));
        }
        if f.split.is_none() {
            return Err(invalid(i, "`split` is None".into()));
        }
        if f.dim() != d {
            return Err(invalid(
                i,
                format!("x has {} columns but item 0 has {d}", f.dim()),
            ));
        }
        let lens = [
            ("labels", Some(f.labels.len())),
            ("coarse", f.coarse.as_ref().map(Vec::len)),
            ("pred", f.pred.as_ref().map(Vec::len)),
            ("sample", f.sample.as_ref().map(Vec::len)),
        ];
        for (name, len) in lens {
            if let Some(len) = len.filter(|&l| l != n) {
                return Err(invalid(
                    i,
                    format!("`{name}` has {len} entries but x has {n} rows"),
                ));
            }
        }
    }
    let any_coarse = features.iter().any(|f| f.coarse.is_some());
    let any_pred = features.iter().any(|f| f.pred.is_some());
    let file = check_write_path(path)?;
    let mut frames = Vec::new();
    for f in features.iter().filter(|f| f.n_samples() > 0) {
        let n = f.n_samples();
        let mut cols = vec![
            Column::new("epoch".into(), vec![f.epoch.unwrap_or(0); n]),
            Column::new("split".into(), vec![f.split.as_deref().unwrap_or(""); n]),
            Column::new(
                "sample".into(),
                f.sample.clone().unwrap_or_else(|| (0..n as u32).collect()),
            ),
            Column::new("label".into(), f.labels.clone()),
        ];
        for (name, present, values) in [
            ("coarse", any_coarse, &f.coarse),
            ("pred", any_pred, &f.pred),
        ] {
            if present {
                let v: Vec<Option<u32>> = match values {
                    Some(v) => v.iter().copied().map(Some).collect(),
                    None => vec![None; n],
                };
                cols.push(Column::new(name.into(), v));
            }
        }
        let flat: Vec<f32> = f.x.iter().copied().collect();
        cols.push(array_column("x", Series::new("x".into(), flat), d, &shown)?);
        frames.push(DataFrame::new(cols).map_err(polars_err(&shown))?);
    }
    if frames.is_empty() {
        return Err(invalid(0, "every item has zero rows".into()));
    }
    write_frames(path, file, frames)
}

/// Writes classifiers to a classifier Parquet file: columns `epoch` (u32), `class` (u32),
/// `bias` (f64) and `w` (`Array(f64, d)`), one row per (epoch, class), rows sorted by class
/// within each epoch. [`read_classifier`] reads the values back exactly.
///
/// # Errors
///
/// [`FeatureError::InvalidInput`] if `classifiers` is empty, `w` and `b` disagree in `C`, or
/// items differ in `d`; [`FeatureError::EmptyFeatures`] if `d = 0`;
/// [`FeatureError::UnsupportedFormat`], [`FeatureError::Io`], [`FeatureError::Polars`].
pub fn write_classifier(
    path: impl AsRef<Path>,
    classifiers: &[(u32, Classifier)],
) -> Result<(), FeatureError> {
    let path = path.as_ref();
    let shown = display(path);
    let invalid = |index: usize, problem: String| FeatureError::InvalidInput {
        path: shown.clone(),
        index,
        problem,
    };
    if classifiers.is_empty() {
        return Err(invalid(0, "no classifier to write".into()));
    }
    let d = classifiers[0].1.w.ncols();
    if d == 0 {
        return Err(FeatureError::EmptyFeatures {
            path: shown.clone(),
            column: "w".into(),
        });
    }
    for (i, (_, c)) in classifiers.iter().enumerate() {
        if c.w.nrows() != c.b.len() {
            return Err(invalid(
                i,
                format!("w has {} rows but b has {} entries", c.w.nrows(), c.b.len()),
            ));
        }
        if c.w.ncols() != d {
            return Err(invalid(
                i,
                format!("w has {} columns but item 0 has {d}", c.w.ncols()),
            ));
        }
    }
    let file = check_write_path(path)?;
    let mut frames = Vec::new();
    for (epoch, c) in classifiers.iter().filter(|(_, c)| !c.b.is_empty()) {
        let k = c.b.len();
        let flat: Vec<f64> = c.w.iter().copied().collect();
        let cols = vec![
            Column::new("epoch".into(), vec![*epoch; k]),
            Column::new("class".into(), (0..k as u32).collect::<Vec<u32>>()),
            Column::new("bias".into(), c.b.to_vec()),
            array_column("w", Series::new("w".into(), flat), d, &shown)?,
        ];
        frames.push(DataFrame::new(cols).map_err(polars_err(&shown))?);
    }
    if frames.is_empty() {
        return Err(invalid(0, "every classifier has zero classes".into()));
    }
    write_frames(path, file, frames)
}
