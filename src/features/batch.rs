//! The small columns of a batch of rows (labels, epoch, split, sample, coarse, pred) without
//! `x`, for the fused read of [`crate::stream`]: there `x` is read by [`super::plain`] in
//! chunks of a few hundred rows, each summed while it is in cache, instead of being decoded
//! into a matrix of the whole batch (which cost a copy through memory and the page faults of
//! a 32 MB buffer per batch).
//!
//! Which files take this route, and the values it gives, are those of
//! [`FeatureQuery::load_groups`]'s page route (`load_groups_plain`): a Parquet file with `x` a
//! fixed-size list, a query of file rows without other filters. Loading
//! ([`FeatureQuery::load_small`], which may run on another thread while the previous batch is
//! summed) is apart from grouping ([`SmallBatch::groups`]). Any error or unexpected value is
//! left to the caller, which then reads the batch through `load_groups` for the precise message.

use super::*;

/// The small columns of a batch of file rows.
pub(crate) struct SmallBatch {
    /// Checkpoint of each row.
    epochs: Vec<u32>,
    /// Split of each row, as an index into `names`.
    splits: Vec<u32>,
    /// The distinct splits, in order of first appearance.
    names: Vec<String>,
    labels: Vec<u32>,
    sample: Option<Vec<u32>>,
    coarse: Option<Vec<u32>>,
    pred: Option<Vec<u32>>,
    layer: String,
    /// Width of `x`.
    dim: usize,
}

/// The rows of one (epoch, split) of a batch: their features without `x` (an `n × 0` matrix)
/// and the position of each in the batch (ascending).
pub(crate) struct GroupRows {
    /// Checkpoint.
    pub epoch: u32,
    /// Split.
    pub split: String,
    /// Labels, sample indices, coarse labels and predictions of the rows (`x` has no column).
    pub features: Features,
    /// Position of each row in the batch, ascending.
    pub rows: Vec<usize>,
}

/// `values[i]` for each `i` of `rows`.
fn gather<T: Copy>(values: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|&i| values[i]).collect()
}

impl FeatureQuery {
    /// The small columns of this query's rows (checked as `load_groups` checks them): `None`
    /// when the query is not one of file rows alone on a file whose `x` is a fixed-size list
    /// (the route of `load_groups_plain`), holds no row, or has a null split.
    ///
    /// # Errors
    /// Those of the polars path for the same columns (a null or out-of-range label, …).
    pub(crate) fn load_small(
        &self,
        column: LabelColumn,
    ) -> Result<Option<SmallBatch>, FeatureError> {
        let scan = &self.scan;
        let (Some((start, end)), VecLayout::Array(d), None) =
            (self.rows, &scan.layout, &scan.parts)
        else {
            return Ok(None);
        };
        if self.epoch.is_some() || self.split.is_some() || !self.extra.is_empty() {
            return Ok(None);
        }
        self.check_label_column(column)?;
        let path = scan.shown.as_str();
        let df = self.small_columns()?;
        let n = df.height();
        if n == 0 || n as u64 != end - start {
            return Ok(None);
        }
        let rows = rows_of(path, &df)?;
        let epochs = u32_values(&rows, &df, "epoch")?;
        // The split of each row as a code into the distinct names (no string per row).
        let s = series(&df, path, "split")?;
        let Ok(ca) = s.str() else {
            return Ok(None);
        };
        let mut names: Vec<String> = Vec::new();
        let mut splits = Vec::with_capacity(n);
        let mut last: Option<(&str, u32)> = None;
        for v in ca.iter() {
            let Some(v) = v else {
                return Ok(None);
            };
            let code = match last {
                Some((name, code)) if name == v => code,
                _ => {
                    let code = match names.iter().position(|s| s == v) {
                        Some(k) => k as u32,
                        None => {
                            names.push(v.to_string());
                            (names.len() - 1) as u32
                        }
                    };
                    last = Some((v, code));
                    code
                }
            };
            splits.push(code);
        }
        let labels = u32_values(&rows, &df, "label")?;
        let sample = match df.column("sample") {
            Ok(_) => Some(u32_values(&rows, &df, "sample")?),
            Err(_) => None,
        };
        let coarse = opt_u32_values(&rows, &df, "coarse")?;
        let pred = opt_u32_values(&rows, &df, "pred")?;
        Ok(Some(SmallBatch {
            epochs,
            splits,
            names,
            labels,
            sample,
            coarse,
            pred,
            layer: scan.layer.clone(),
            dim: *d,
        }))
    }
}

impl SmallBatch {
    /// Width of `x`.
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    /// Rows of the batch.
    pub(crate) fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Bytes held by the batch's columns (what keeping it costs).
    pub(crate) fn bytes(&self) -> usize {
        let columns = [Some(&self.epochs), Some(&self.splits), Some(&self.labels)]
            .into_iter()
            .chain([
                self.sample.as_ref(),
                self.coarse.as_ref(),
                self.pred.as_ref(),
            ])
            .flatten()
            .map(|c| 4 * c.len())
            .sum::<usize>();
        columns + self.names.iter().map(String::len).sum::<usize>() + self.layer.len()
    }

    /// The groups `keep` selects, in (epoch, split) order; `None` when `column` is `coarse`
    /// and the batch has none (the polars path names the error).
    pub(crate) fn groups(
        &self,
        column: LabelColumn,
        keep: &dyn Fn(u32, &str) -> bool,
    ) -> Option<Vec<GroupRows>> {
        if column == LabelColumn::Coarse && self.coarse.is_none() {
            return None;
        }
        let n = self.rows();
        // The distinct (epoch, split code) pairs, looked up only where a row's pair differs
        // from the previous row's (rows come in runs of one group), then ordered by name.
        let mut seen = std::collections::HashSet::new();
        let mut last = None;
        for (&e, &s) in self.epochs.iter().zip(&self.splits) {
            if last != Some((e, s)) {
                seen.insert((e, s));
                last = Some((e, s));
            }
        }
        let mut all: Vec<(u32, &str, u32)> = seen
            .into_iter()
            .map(|(e, s)| (e, self.names[s as usize].as_str(), s))
            .collect();
        all.sort_unstable();
        let one = all.len() == 1;
        let mut out = Vec::new();
        for (e, s, code) in all.into_iter().filter(|(e, s, _)| keep(*e, s)) {
            let at: Vec<usize> = if one {
                (0..n).collect()
            } else {
                (0..n)
                    .filter(|&i| self.epochs[i] == e && self.splits[i] == code)
                    .collect()
            };
            let features = Features {
                x: Array2::zeros((at.len(), 0)),
                labels: gather(&self.labels, &at),
                coarse: self.coarse.as_deref().map(|c| gather(c, &at)),
                pred: self.pred.as_deref().map(|p| gather(p, &at)),
                labels_from: LabelColumn::Label,
                sample: self.sample.as_deref().map(|v| gather(v, &at)),
                epoch: Some(e),
                split: Some(s.to_string()),
                layer: Some(self.layer.clone()),
            };
            out.push(GroupRows {
                epoch: e,
                split: s.to_string(),
                features,
                rows: at,
            });
        }
        Some(out)
    }
}
