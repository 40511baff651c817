//! A check of a Parquet file's page headers against its footer, before polars decodes it.
//!
//! polars 0.52 trusts a page header's counts: a data page whose `num_values` is negative (one
//! flipped byte of a damaged file) is cast to `usize` and reserved as a bitmap of ~2⁶⁴ bits,
//! and the process **aborts** ("memory allocation of 2305843009213693928 bytes failed", in
//! `polars_parquet::…::decode_hybrid_rle_into_bitmap`; found by fuzzing `neural-collapse
//! metrics` with damaged copies of the bundled files). An abort cannot be caught, so the
//! counts are checked here first, for every column chunk of every row group:
//!
//! * the footer: the row groups' `num_rows` add up to the file's (polars-parquet has checked
//!   that none is negative);
//!   each column chunk lies within the file, and its `num_values` is non-negative and equals
//!   the row group's `num_rows` for a column that is not repeated (at least that for a list);
//! * each page header (read where it lies, through a map of the chunk whose pages are only
//!   faulted in when touched, so that only the pages holding headers are read): it parses, its
//!   page fits in the chunk (polars-parquet's [`PageReader`] checks both), a data page's
//!   `num_values` is non-negative, and a V2 page's `num_nulls` and `num_rows` lie in
//!   `0..=num_values` and its level lengths in `0..=` the page's size;
//! * the data pages of a chunk hold exactly the chunk's `num_values`.
//!
//! A file whose footer does not parse is left to polars, whose error names it. What this does
//! not see (a damaged value or level inside a page) polars reports as an error or a caught
//! panic ([`super::CollectGuarded`]), which every case found by the fuzzing now is.
//!
//! Cost: one parse per page header (a few thousand for a 10 GB file of 1 MB pages) and one map
//! per column chunk; the pages' values are not read. Each header faults in a page of the file:
//! 11–28 ms for the 2,000 pages of a 2 GB file on one thread, at the start of every command, so
//! files of 64 MB or more are checked on two threads (the first half of the column chunks and
//! the second; the first problem in file order is the error either way).

use std::fs::File;
use std::path::Path;

use polars_parquet::parquet::encoding::Encoding;
use polars_parquet::parquet::metadata::ColumnChunkMetadata;
use polars_parquet::parquet::page::{CompressedPage, DataPageHeader};
use polars_parquet::parquet::read::{read_metadata, PageMetaData, PageReader};
use polars_utils::mmap::{MemReader, MemSlice};

use super::FeatureError;

/// Largest page accepted (compressed), as polars' own reader.
const MAX_PAGE: usize = 1 << 30;

/// Column chunks of at least this many bytes in all are checked on two threads.
const PARALLEL_BYTES: u64 = 64 << 20;

/// Checks the counts of `path`'s footer and page headers (see the module docs).
///
/// # Errors
/// [`FeatureError::DamagedFile`] naming the row group, column and page at fault (pages
/// counted from 0 in the chunk, a dictionary page included);
/// [`FeatureError::Io`] if the file cannot be opened.
pub(crate) fn check_page_headers(path: &Path) -> Result<(), FeatureError> {
    check_page_headers_with(path, PARALLEL_BYTES)
}

/// [`check_page_headers`], on two threads when the column chunks hold at least `parallel`
/// bytes.
fn check_page_headers_with(path: &Path, parallel: u64) -> Result<(), FeatureError> {
    let shown = path.display().to_string();
    let mut file = File::open(path).map_err(|source| FeatureError::Io {
        path: shown.clone(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| FeatureError::Io {
            path: shown.clone(),
            source,
        })?
        .len();
    let damaged = |at: String, problem: String| FeatureError::DamagedFile {
        path: shown.clone(),
        at,
        problem,
    };
    // A footer that does not parse: polars' own error names it. polars-parquet's footer
    // parser panics on some damaged footers (an `unwrap` of a missing field, "Thrift out of
    // range"): that is this file's error too.
    let meta = match super::catch_polars_panic(|| read_metadata(&mut file)) {
        Ok(Ok(meta)) => meta,
        Ok(Err(_)) => return Ok(()),
        Err(what) => return Err(damaged("footer".into(), format!("does not parse ({what})"))),
    };
    let mut rows: i64 = 0;
    let mut chunks = Vec::new();
    for (g, rg) in meta.row_groups.iter().enumerate() {
        // polars-parquet has checked that it is not negative.
        let n = i64::try_from(rg.num_rows()).unwrap_or(i64::MAX);
        rows = rows.saturating_add(n);
        chunks.extend(rg.parquet_columns().iter().map(|c| (g, c, n)));
    }
    // The chunks in order; the first problem found is the file's error.
    let check = |chunks: &[(usize, &ColumnChunkMetadata, i64)]| -> Result<(), FeatureError> {
        for &(g, c, n) in chunks {
            // The page header parser is polars-parquet's too: a panic there is the file's.
            let checked = super::catch_polars_panic(|| check_chunk(&file, len, c, n))
                .unwrap_or_else(|what| Err(format!("a page header does not parse ({what})")));
            checked.map_err(|problem| {
                damaged(format!("row group {g}, column {}", column_name(c)), problem)
            })?;
        }
        Ok(())
    };
    // A large file's two halves of chunks on two threads (each header faults in a page of
    // the file: ~10 ms for the 2,000 pages of a 2 GB file, at the start of every command).
    let bytes: u64 = chunks
        .iter()
        .map(|(_, c, _)| c.compressed_size() as u64)
        .sum();
    if bytes >= parallel && chunks.len() >= 2 {
        let (first, second) = chunks.split_at(chunks.len() / 2);
        let (a, b) = std::thread::scope(|s| {
            let h = s.spawn(|| check(second));
            (check(first), h.join())
        });
        a?;
        match b {
            Ok(b) => b?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    } else {
        check(&chunks)?;
    }
    if i64::try_from(meta.num_rows).ok() != Some(rows) {
        return Err(damaged(
            "footer".into(),
            format!("says {} rows, its row groups {rows}", meta.num_rows),
        ));
    }
    Ok(())
}

/// `a.b.c` for a nested column.
fn column_name(c: &ColumnChunkMetadata) -> String {
    c.descriptor().path_in_schema.join(".")
}

/// The checks of one column chunk of a row group of `rows` rows; `Err` says what is wrong.
fn check_chunk(file: &File, len: u64, c: &ColumnChunkMetadata, rows: i64) -> Result<(), String> {
    let total = c.num_values();
    let repeated = c.descriptor().descriptor.max_rep_level > 0;
    if total < 0 || (!repeated && total != rows) || (repeated && total < rows) {
        return Err(format!("{total} values in the footer for {rows} rows"));
    }
    let range = c.byte_range();
    if range.start > range.end || range.end > len {
        return Err(format!(
            "bytes {}..{} in the footer, beyond the file's {len}",
            range.start, range.end
        ));
    }
    if range.start == range.end {
        return if total == 0 {
            Ok(())
        } else {
            Err(format!("{total} values in 0 bytes"))
        };
    }
    // The map cannot be made (it should always be): polars reads the chunk as it can.
    let Some(pages) = pages_of(file, c) else {
        return Ok(());
    };
    let mut seen: i64 = 0;
    for (k, page) in pages.enumerate() {
        let page = page.map_err(|e| format!("page {k}: {e}"))?;
        let CompressedPage::Data(p) = page else {
            continue;
        };
        // The encodings as numbers: polars' accessors (`DataPageHeaderExt::encoding`, which
        // every reader of the page calls) unwrap their conversion to `Encoding`.
        let (n, v2, codes) = match p.header() {
            DataPageHeader::V1(h) => (
                h.num_values,
                None,
                vec![
                    h.encoding,
                    h.definition_level_encoding,
                    h.repetition_level_encoding,
                ],
            ),
            DataPageHeader::V2(h) => (h.num_values, Some(h), vec![h.encoding]),
        };
        if n < 0 {
            return Err(format!("page {k}: {n} values"));
        }
        if let Some(code) = codes.into_iter().find(|&e| Encoding::try_from(e).is_err()) {
            return Err(format!(
                "page {k}: encoding {} is not one of Parquet's",
                code.0
            ));
        }
        if let Some(h) = v2 {
            let levels = i64::from(h.definition_levels_byte_length)
                + i64::from(h.repetition_levels_byte_length);
            if !(0..=n).contains(&h.num_nulls)
                || !(0..=n).contains(&h.num_rows)
                || h.definition_levels_byte_length < 0
                || h.repetition_levels_byte_length < 0
                || levels > p.compressed_size() as i64
            {
                return Err(format!(
                    "page {k}: {n} values, {} nulls, {} rows, levels of {} + {} bytes in a page of {}",
                    h.num_nulls,
                    h.num_rows,
                    h.repetition_levels_byte_length,
                    h.definition_levels_byte_length,
                    p.compressed_size()
                ));
            }
        }
        seen += i64::from(n);
    }
    if seen != total {
        return Err(format!(
            "its pages hold {seen} values, the footer says {total}"
        ));
    }
    Ok(())
}

/// The pages of column chunk `c` of `file`, read through a map whose pages are faulted in only
/// when touched (`None` if the map fails; the chunk's byte range is checked to lie in the file
/// first).
fn pages_of(file: &File, c: &ColumnChunkMetadata) -> Option<PageReader> {
    let range = c.byte_range();
    let map = std::sync::Arc::new(map_lazily(file, range.start, range.end - range.start)?);
    let data = MemSlice::from_arc(&map[..], map.clone());
    Some(PageReader::new_with_page_meta(
        MemReader::new(data),
        PageMetaData::from(c),
        Vec::new(),
        MAX_PAGE,
    ))
}

/// A read-only map of `len` bytes of `file` from `offset`, its pages faulted in only when
/// touched (`None` if the map fails).
fn map_lazily(file: &File, offset: u64, len: u64) -> Option<memmap2::Mmap> {
    let len = usize::try_from(len).ok()?;
    let mut options = memmap2::MmapOptions::new();
    options.offset(offset).len(len);
    // SAFETY: read-only, and dropped before this check returns; as for polars' own maps of a
    // Parquet file, the file must not be truncated or rewritten while it is read.
    unsafe { options.map(file) }.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use polars::prelude::*;

    /// A small Parquet file (`label` u32, `x` a list of 3 f32), written by polars with
    /// uncompressed pages, so that its page headers can be found and edited by hand.
    fn small_file(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
        let path = dir.join("features-t.parquet");
        let x = Series::new(
            "x".into(),
            (0..6)
                .map(|i| Series::new("".into(), vec![i as f32, 1.0, 2.0]))
                .collect::<Vec<_>>(),
        );
        let mut df = DataFrame::new(vec![
            Column::new("label".into(), (0..6u32).collect::<Vec<_>>()),
            x.into_column(),
        ])
        .unwrap();
        let f = File::create(&path).unwrap();
        ParquetWriter::new(f)
            .with_compression(ParquetCompression::Uncompressed)
            .finish(&mut df)
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        (path, bytes)
    }

    /// The byte offset, in the file, of the `num_values` field of the first data page header
    /// of column `name` of row group 0, and its value. The header is Thrift compact: `type`,
    /// the two sizes, then field 5 `data_page_header`, a struct (field header `0x?c`) whose
    /// field 1 (`0x15`: delta 1, i32) is `num_values`, a zig-zag varint (one byte here). Its
    /// value is read with polars-parquet's reader, then its byte found in the first data page
    /// header.
    fn num_values_field(path: &Path, bytes: &[u8], name: &str) -> (usize, i32) {
        let mut f = File::open(path).unwrap();
        let meta = read_metadata(&mut f).unwrap();
        let c = meta.row_groups[0]
            .parquet_columns()
            .iter()
            .find(|c| column_name(c).starts_with(name))
            .unwrap();
        let n = pages_of(&f, c)
            .unwrap()
            .filter_map(|p| match p.unwrap() {
                CompressedPage::Data(p) => Some(p.num_values() as i32),
                CompressedPage::Dict(_) => None,
            })
            .next()
            .unwrap();
        let zz = ((n << 1) ^ (n >> 31)) as u8;
        let chunk = c.byte_range().start as usize;
        // The data page's header opens with field 1 `type` = DATA_PAGE (0): `0x15 0x00`, then
        // field 2 (`0x15`). (polars writes a dictionary page first, without saying so in the
        // footer: its header opens with `0x15 0x04`.)
        let start = chunk
            + bytes[chunk..]
                .windows(3)
                .position(|w| w == [0x15, 0x00, 0x15])
                .expect("a data page header");
        let at = bytes[start..start + 64]
            .windows(3)
            .position(|w| w[0] & 0x0f == 0x0c && w[1] == 0x15 && w[2] == zz)
            .expect("num_values field in the first data page header")
            + start
            + 2;
        (at, n)
    }

    #[test]
    fn a_valid_file_passes() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _) = small_file(tmp.path());
        check_page_headers(&path).unwrap();
    }

    #[test]
    fn a_negative_page_count_is_named_not_an_abort() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, mut bytes) = small_file(tmp.path());
        let (at, n) = num_values_field(&path, &bytes, "label");
        assert_eq!(n, 6);
        // Zig-zag 0x0d is −7 (one byte, like the 6 it replaces).
        bytes[at] = 0x0d;
        std::fs::write(&path, &bytes).unwrap();
        let e = check_page_headers(&path).unwrap_err().to_string();
        assert!(e.contains("row group 0, column label"), "{e}");
        // Page 0 is the dictionary page polars writes first.
        assert!(e.contains("page 1: -7 values"), "{e}");
        // Loading such a file used to abort the process (the bundled case is in tests/cli.rs):
        // opening it now fails first.
        let e = crate::features::FeatureScan::open(&path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("page 1: -7 values"), "{e}");
    }

    /// A data page whose encoding is not one of Parquet's: polars' readers unwrap its
    /// conversion (a panic in `DataPageHeaderExt::encoding`, found by fuzzing), so the check
    /// names it first.
    #[test]
    fn an_unknown_page_encoding_is_named_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, mut bytes) = small_file(tmp.path());
        let (at, _) = num_values_field(&path, &bytes, "label");
        // Field 2 of the data page header, `encoding` (`0x15`: delta 1, i32), follows
        // `num_values`; the label column is dictionary-encoded (RLE_DICTIONARY = 8, zig-zag
        // 0x10). Zig-zag 0x4b is −38.
        assert_eq!(bytes[at + 1..at + 3], [0x15, 0x10]);
        bytes[at + 2] = 0x4b;
        std::fs::write(&path, &bytes).unwrap();
        let e = check_page_headers(&path).unwrap_err().to_string();
        assert!(
            e.contains("row group 0, column label: page 1: encoding -38 is not one of Parquet's"),
            "{e}"
        );
    }

    #[test]
    fn two_threads_name_the_same_problem() {
        let tmp = tempfile::tempdir().unwrap();
        // A problem in the first chunk (label) or the second (x): on two threads (one chunk
        // each), the error is the one of a check in order.
        for (column, field) in [("label", "label"), ("x", "x")] {
            let (path, mut bytes) = small_file(tmp.path());
            check_page_headers_with(&path, 0).unwrap();
            let (at, _) = num_values_field(&path, &bytes, field);
            bytes[at] = 0x0d;
            std::fs::write(&path, &bytes).unwrap();
            let one = check_page_headers_with(&path, u64::MAX)
                .unwrap_err()
                .to_string();
            let two = check_page_headers_with(&path, 0).unwrap_err().to_string();
            assert_eq!(one, two);
            assert!(
                two.contains(&format!("row group 0, column {column}")) && two.contains("-7 values"),
                "{two}"
            );
        }
    }

    #[test]
    fn a_page_count_that_disagrees_with_the_footer_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, mut bytes) = small_file(tmp.path());
        let (at, _) = num_values_field(&path, &bytes, "label");
        // 5 values where the footer says 6 (zig-zag 0x0a).
        bytes[at] = 0x0a;
        std::fs::write(&path, &bytes).unwrap();
        let e = check_page_headers(&path).unwrap_err().to_string();
        // The reader then looks for another page past the chunk's bytes (page 2, after the
        // dictionary page and the data page).
        assert!(e.contains("row group 0, column label: page 2"), "{e}");
    }
}
