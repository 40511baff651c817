//! The `x` column of a Parquet file decoded page by page into a reused `f32` buffer.
//!
//! polars decodes a list column through its generic nested-array machinery and hands out fresh
//! buffers per batch; for the streaming passes ([`crate::stream`]) that was most of the time
//! (41 % decoding, ~30 % page faults and copies of fresh buffers, 5 % the sums). This reader
//! maps the column chunks of `x` (one per row group) for the time of one batch, decompresses
//! each data page with polars-parquet's own codecs, checks its levels and copies its values
//! straight into the caller's buffer, which keeps its pages from batch to batch.
//!
//! Measured (`perf`, 0.4 GB uncompressed file, d = 512, both passes): with `pread` into a
//! reused buffer, then a copy into the caller's and a finite check, the read was 50 % of the
//! CPU time (20 % the kernel's copy, 20 % the second copy, 10 % the check), 720 ms of CPU in
//! all; with the mapped window, one copy fused with the check on two threads: 495 ms. What is
//! left here is the one copy (~20 %, the floor while [`crate::features::Features`] owns its
//! matrix) and mapping/unmapping the windows (~9 %).
//!
//! For uncompressed PLAIN pages there is also a route that holds no batch at all:
//! [`PlainX::plan`] checks the page headers and levels of a batch (mapping its chunks without
//! populating them, so that only the pages holding headers and levels are touched) and notes
//! where the values lie in the file; [`PlainX::read_values`] then reads any range of them with
//! `pread`, page by page (a page's values start at any byte offset: in pyarrow's files 3 pages
//! in 4 are not 4-byte aligned), into the caller's small buffer. [`crate::stream`] sums the
//! values in pieces of up to 1 MB; its module docs give the measured times (and why reading
//! beat mapping the values and summing them in place).
//!
//! It handles only what it can check completely, and says "not handled" (`Ok(None)`) otherwise,
//! so that the caller falls back to the polars path (which gives the precise errors):
//!
//! * `x` is one leaf column of physical type FLOAT under one list level (`max_rep_level = 1`):
//!   a `list<f32>` or `fixed_size_list<f32, d>` as pyarrow and polars write it;
//! * every data page is PLAIN or dictionary-encoded (pyarrow's default: a dictionary page, then
//!   PLAIN pages once the dictionary is full); BYTE_STREAM_SPLIT and the others → not handled;
//! * every definition level equals the maximum (no null vector, no null component), and the
//!   repetition levels start a new row exactly every `d` values (no ragged row): value `p` of the
//!   chunk has repetition level 0 if and only if `p mod d = 0`;
//! * the chunk holds exactly `rows · d` values;
//! * every value is finite (checked page by page while the page is in cache, so that the
//!   caller need not scan the batch again; a NaN or ±∞ goes to the polars path, whose error
//!   names its row and component).
//!
//! The values are then the same `f32`s polars would produce, in the same order, so every sum
//! is bit-for-bit the one of the polars path.

use std::fs::File;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use polars_parquet::parquet::compression::{Compression, DecompressionContext};
use polars_parquet::parquet::encoding::Encoding;
use polars_parquet::parquet::metadata::{ColumnChunkMetadata, FileMetadata};
use polars_parquet::parquet::page::{split_buffer, Page};
use polars_parquet::parquet::read::{decompress, read_metadata, PageMetaData, PageReader};
use polars_parquet::parquet::schema::types::PhysicalType;
use polars_utils::mmap::{MemReader, MemSlice};

/// Largest page accepted (compressed or not), as polars' own reader.
const MAX_PAGE: usize = 1 << 30;

/// A Parquet file whose `x` column may be read by pages (see the module docs).
///
/// Each column chunk of a batch is memory-mapped for the time of the batch only (a window of
/// the file, unmapped when the batch is decoded), and the values of its uncompressed PLAIN
/// pages are copied straight from the page cache into the caller's buffer: one copy per value,
/// where `pread` into a reused buffer cost two. A map of the *whole* file is avoided: every page
/// read would count towards the process's resident set until the end (a 400 MB file peaked at
/// 500 MB); a window keeps it at one batch.
pub(crate) struct PlainX {
    file: File,
    /// Length of the file, which every mapped range must lie within (a range beyond the end
    /// of the file would fault on access instead of failing).
    len: u64,
    meta: FileMetadata,
    dim: usize,
    /// First file row of each row group, and the total (`row_groups + 1` entries).
    starts: Vec<u64>,
    /// Calls of [`read`](Self::read): whether the loader takes this route at all.
    reads: AtomicUsize,
    /// A buffer already holding the checked values of some row groups ([`Self::mark_read`]):
    /// the row groups, the buffer's address and length.
    ready: Mutex<Option<(Range<usize>, usize, usize)>>,
}

impl std::fmt::Debug for PlainX {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainX").field("dim", &self.dim).finish()
    }
}

/// Where the values of a batch lie in the file ([`PlainX::plan`]): one segment per page, as
/// (byte offset in the file, first value in the batch, number of values), in value order.
#[derive(Debug)]
pub(crate) struct ValuePlan {
    segments: Vec<(u64, usize, usize)>,
    /// Values of the batch (`rows × d`).
    values: usize,
}

#[cfg(test)]
impl ValuePlan {
    /// The segments: (byte offset in the file, first value in the batch, number of values).
    pub(crate) fn segments(&self) -> &[(u64, usize, usize)] {
        &self.segments
    }
}

/// Values of one uncompressed PLAIN page, copied after the pages of the batch are checked:
/// bytes `src` of map `map` into values `dst` of the batch.
struct PageCopy {
    map: usize,
    src: Range<usize>,
    dst: Range<usize>,
}

impl PlainX {
    /// Opens `path` and checks its schema: `None` when `x` is not one FLOAT leaf under one list
    /// level (or the footer cannot be read: the polars path reports that).
    pub(crate) fn open(path: &std::path::Path, dim: usize) -> Option<Self> {
        if dim == 0 {
            return None;
        }
        let mut file = File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        let meta = read_metadata(&mut file).ok()?;
        for rg in &meta.row_groups {
            let mut cols = rg.columns_under_root_iter("x")?;
            let c = cols.next()?;
            if cols.next().is_some() || !leaf_ok(c) {
                return None;
            }
        }
        if !cfg!(unix) {
            return None;
        }
        let mut starts = vec![0u64];
        for rg in &meta.row_groups {
            starts.push(starts.last().copied().unwrap_or(0) + rg.num_rows() as u64);
        }
        Some(Self {
            file,
            len,
            meta,
            dim,
            starts,
            reads: AtomicUsize::new(0),
            ready: Mutex::new(None),
        })
    }

    /// Whether the footer says that `x` is uncompressed and PLAIN in every row group (no
    /// dictionary page; levels RLE or bit-packed): the layout whose batches
    /// [`crate::stream`] reads in place, in larger batches (a page may still say otherwise:
    /// [`plan`](Self::plan) checks each).
    pub(crate) fn plain_throughout(&self) -> bool {
        const PLAIN: i32 = 0;
        const RLE: i32 = 3;
        const BIT_PACKED: i32 = 4;
        self.meta.row_groups.iter().all(|rg| {
            rg.columns_under_root_iter("x")
                .and_then(|mut c| c.next())
                .is_some_and(|c| {
                    c.compression() == Compression::Uncompressed
                        && c.dictionary_page_offset().is_none()
                        && c.column_encoding()
                            .iter()
                            .all(|e| matches!(e.0, PLAIN | RLE | BIT_PACKED))
                })
        })
    }

    /// The row groups covering file rows `rows` exactly, if `rows` starts and ends on row-group
    /// boundaries.
    pub(crate) fn row_groups(&self, rows: &Range<u64>) -> Option<Range<usize>> {
        let a = self.starts.binary_search(&rows.start).ok()?;
        let b = self.starts.binary_search(&rows.end).ok()?;
        (a < b).then_some(a..b)
    }

    /// Decodes `x` of the row groups `groups` into `out` (`rows × d` values, row-major);
    /// `false` (and `out` unspecified) when a page is not handled.
    ///
    /// The pages are walked (headers, levels, dictionary and compressed pages decoded) in order;
    /// the values of uncompressed PLAIN pages, most of the bytes, are then copied and checked
    /// on two threads, each a contiguous half of the pages.
    ///
    /// If `out` is the buffer that [`read_ahead`](Self::read_ahead) filled with these row
    /// groups (and nothing else was read ahead since), it is taken as it is.
    pub(crate) fn read(&self, groups: Range<usize>, out: &mut Vec<f32>) -> bool {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut ready) = self.ready.lock() {
            if ready.take() == Some((groups.clone(), out.as_ptr() as usize, out.len())) {
                return true;
            }
        }
        self.decode(groups, out)
    }

    /// Whether [`read`](Self::read) was called (the loader reads `x` through this reader).
    pub(crate) fn used(&self) -> bool {
        self.reads.load(Ordering::Relaxed) > 0
    }

    /// [`read`](Self::read) ahead of time (typically on another thread while the previous
    /// batch is summed), without marking the buffer: see [`mark_read`](Self::mark_read).
    pub(crate) fn read_ahead(&self, groups: Range<usize>, out: &mut Vec<f32>) -> bool {
        self.decode(groups, out)
    }

    /// Marks `out` as holding the values of `groups` that a successful
    /// [`read_ahead`](Self::read_ahead) put there: the next [`read`](Self::read) of the same row
    /// groups into the same, unchanged buffer returns at once. One mark at a time (a new mark
    /// replaces the old one, and `read` clears it).
    pub(crate) fn mark_read(&self, groups: Range<usize>, out: &[f32]) {
        if let Ok(mut ready) = self.ready.lock() {
            *ready = Some((groups, out.as_ptr() as usize, out.len()));
        }
    }

    fn decode(&self, groups: Range<usize>, out: &mut Vec<f32>) -> bool {
        let d = self.dim;
        let first = self.starts[groups.start];
        let total = (self.starts[groups.end] - first) as usize * d;
        // Every value is overwritten below (a chunk that does not fill its part exactly is not
        // handled): only values beyond the buffer's current length are zeroed.
        out.resize(total, 0.0);
        let mut maps = Vec::new();
        let mut copies = Vec::new();
        let mut at = 0usize;
        for g in groups {
            let n = (self.starts[g + 1] - self.starts[g]) as usize * d;
            let Some(c) = self.meta.row_groups[g]
                .columns_under_root_iter("x")
                .and_then(|mut c| c.next())
            else {
                return false;
            };
            let Some(map) = self.map(c) else {
                return false;
            };
            let map = Arc::new(map);
            let data = MemSlice::from_arc(&map[..], map.clone());
            let done =
                self.decode_chunk(c, data, &mut out[at..at + n], at, maps.len(), &mut copies);
            if done.is_none() {
                return false;
            }
            maps.push(map);
            at += n;
        }
        let maps: Vec<&[u8]> = maps.iter().map(|m| &m[..]).collect();
        copy_pages(&maps, &copies, out)
    }

    /// Where the values of row groups `groups` lie in the file, when every page of their `x`
    /// chunks is an uncompressed PLAIN data page whose levels say "no null, rows of `d`"
    /// (checked here, as [`read`](Self::read) checks them); `None` otherwise. The values
    /// themselves are not touched: [`read_values`](Self::read_values) reads and checks them.
    ///
    /// Each chunk is mapped without populating it, so only the pages holding page headers
    /// and levels (a few KB per 1 MB page) are faulted in, and unmapped before returning.
    pub(crate) fn plan(&self, groups: Range<usize>) -> Option<ValuePlan> {
        if cfg!(not(target_endian = "little")) {
            return None;
        }
        let d = self.dim as u64;
        let mut segments = Vec::new();
        let mut at = 0usize;
        for g in groups {
            let c = self.meta.row_groups[g]
                .columns_under_root_iter("x")
                .and_then(|mut c| c.next())?;
            if c.compression() != Compression::Uncompressed {
                return None;
            }
            let n = usize::try_from((self.starts[g + 1] - self.starts[g]) * d).ok()?;
            let map = Arc::new(self.map_lazily(c)?);
            let whole = map.as_ptr() as usize..map.as_ptr() as usize + map.len();
            let data = MemSlice::from_arc(&map[..], map.clone());
            let reader = MemReader::new(data);
            let pages =
                PageReader::new_with_page_meta(reader, PageMetaData::from(c), Vec::new(), MAX_PAGE);
            let desc = &c.descriptor().descriptor;
            let (max_def, max_rep) = (desc.max_def_level as u32, desc.max_rep_level as u32);
            let (def_bits, rep_bits) = (bits_for(max_def), bits_for(max_rep));
            let chunk_start = c.byte_range().start;
            let mut p: u64 = 0;
            let (mut scratch, mut ctx) = (Vec::new(), DecompressionContext::Unset);
            for page in pages {
                let Page::Data(page) = decompress(page.ok()?, &mut scratch, &mut ctx).ok()? else {
                    return None;
                };
                if page.encoding() != Encoding::Plain {
                    return None;
                }
                let k = page.num_values();
                let split = split_buffer(&page).ok()?;
                if max_def > 0 && !all_equal(split.def, def_bits, k, max_def)? {
                    return None;
                }
                if !rows_of_d(split.rep, rep_bits, k, p, d)? {
                    return None;
                }
                let values = split.values.get(..k.checked_mul(4)?)?;
                let from = values.as_ptr() as usize;
                if from < whole.start || from + values.len() > whole.end {
                    return None;
                }
                let offset = chunk_start + (from - whole.start) as u64;
                segments.push((offset, at + usize::try_from(p).ok()?, k));
                p += k as u64;
            }
            if p != n as u64 {
                return None;
            }
            at += n;
        }
        Some(ValuePlan {
            segments,
            values: at,
        })
    }

    /// Values `values` of a batch planned by [`plan`](Self::plan), read from the file into
    /// `out` (`values.len()` of them) with `pread`, page by page (a page's values start at any
    /// byte offset); not checked finite (the caller checks them through its sums). `false` if
    /// a read fails (the polars path then names the problem).
    #[cfg(unix)]
    pub(crate) fn read_values(
        &self,
        plan: &ValuePlan,
        values: Range<usize>,
        out: &mut [f32],
    ) -> bool {
        read_planned(&self.file, plan, values, out)
    }

    /// Not available off unix ([`open`](Self::open) refuses there).
    #[cfg(not(unix))]
    pub(crate) fn read_values(&self, _: &ValuePlan, _: Range<usize>, _: &mut [f32]) -> bool {
        false
    }

    /// A read-only map of the bytes of column chunk `c` whose pages are faulted in only when
    /// touched (`None` as [`map`](Self::map)).
    fn map_lazily(&self, c: &ColumnChunkMetadata) -> Option<memmap2::Mmap> {
        self.map_chunk(c, false)
    }

    /// A read-only map of the bytes of column chunk `c` (`None` if they are not within the
    /// file, or the map fails).
    fn map(&self, c: &ColumnChunkMetadata) -> Option<memmap2::Mmap> {
        self.map_chunk(c, true)
    }

    /// [`map`](Self::map), with the pages read in at once when `populate`.
    fn map_chunk(&self, c: &ColumnChunkMetadata, populate: bool) -> Option<memmap2::Mmap> {
        let range = c.byte_range();
        if range.end > self.len || range.start >= range.end {
            return None;
        }
        let len = usize::try_from(range.end - range.start).ok()?;
        let mut options = memmap2::MmapOptions::new();
        options.offset(range.start).len(len);
        if populate {
            options.populate();
        }
        // SAFETY: the map is read-only and lives for one batch; as for polars' own maps of a
        // Parquet file, the file must not be truncated or rewritten while it is read.
        unsafe { options.map(&self.file) }.ok()
    }

    /// The pages of one column chunk (its bytes `data`, map number `map` of the batch) into
    /// `dst`, values `base..` of the batch: dictionary and compressed pages decoded here, the
    /// uncompressed PLAIN pages left in `copies` (their levels checked).
    fn decode_chunk(
        &self,
        c: &ColumnChunkMetadata,
        data: MemSlice,
        dst: &mut [f32],
        base: usize,
        map: usize,
        copies: &mut Vec<PageCopy>,
    ) -> Option<()> {
        let whole = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
        let reader = MemReader::new(data);
        let mut pages =
            PageReader::new_with_page_meta(reader, PageMetaData::from(c), Vec::new(), MAX_PAGE);
        let desc = &c.descriptor().descriptor;
        let (max_def, max_rep) = (desc.max_def_level as u32, desc.max_rep_level as u32);
        let def_bits = bits_for(max_def);
        let rep_bits = bits_for(max_rep);
        let d = self.dim as u64;
        let compressed = c.compression() != Compression::Uncompressed;
        let mut scratch = Vec::new();
        let mut ctx = DecompressionContext::Unset;
        // Values of the chunk so far.
        let mut p: u64 = 0;
        // The chunk's dictionary (pyarrow writes one by default, and falls back to PLAIN pages
        // once it exceeds its size limit).
        let mut dict: Option<Vec<f32>> = None;
        for page in pages.by_ref() {
            let page = match decompress(page.ok()?, &mut scratch, &mut ctx).ok()? {
                Page::Dict(page) => {
                    let bytes = page.buffer.get(..page.num_values.checked_mul(4)?)?;
                    let mut values = vec![0.0f32; page.num_values];
                    copy_f32(bytes, &mut values);
                    if !all_finite(&values) {
                        return None;
                    }
                    dict = Some(values);
                    continue;
                }
                Page::Data(page) => page,
            };
            let n = page.num_values() as u64;
            let split = split_buffer(&page).ok()?;
            if max_def > 0 && !all_equal(split.def, def_bits, n as usize, max_def)? {
                return None;
            }
            if !rows_of_d(split.rep, rep_bits, n as usize, p, d)? {
                return None;
            }
            let at = usize::try_from(p).ok()?;
            let to = dst.get_mut(at..at.checked_add(n as usize)?)?;
            match page.encoding() {
                Encoding::Plain => {
                    let values = split.values.get(..(n as usize).checked_mul(4)?)?;
                    let from = values.as_ptr() as usize;
                    if !compressed && whole.start <= from && from + values.len() <= whole.end {
                        // In the map: copied (and checked) with the other pages of the batch.
                        let src = from - whole.start;
                        copies.push(PageCopy {
                            map,
                            src: src..src + values.len(),
                            dst: base + at..base + at + n as usize,
                        });
                    } else if !copy_finite(values, to) {
                        // Checked while the page is in cache; the polars path names the value.
                        return None;
                    }
                }
                Encoding::PlainDictionary | Encoding::RleDictionary => {
                    // One byte of index width, then the indices as an RLE/bit-packed hybrid.
                    let dict = dict.as_deref()?;
                    let (&bits, idx) = split.values.split_first()?;
                    if !gather(dict, idx, u32::from(bits), to)? {
                        return None;
                    }
                }
                _ => return None,
            }
            p += n;
            // Hand a decompressed page's buffer back for the next page (an uncompressed page
            // borrows the mapped file: nothing to take back).
            if compressed {
                let mut page = page;
                scratch = std::mem::take(page.buffer_mut());
            }
        }
        (p as usize == dst.len()).then_some(())
    }
}

/// [`PlainX::read_values`] from `file`, without the check: values `values` of the batch
/// `plan` describes into `out`; `false` if they are not all in the plan or a read fails.
#[cfg(unix)]
fn read_planned(file: &File, plan: &ValuePlan, values: Range<usize>, out: &mut [f32]) -> bool {
    use std::os::unix::fs::FileExt;
    if values.end > plan.values || out.len() != values.len() {
        return false;
    }
    // The first segment ending after `values.start`.
    let first = plan.segments.partition_point(|s| s.1 + s.2 <= values.start);
    let mut done = 0;
    for &(offset, start, count) in &plan.segments[first..] {
        if start >= values.end {
            break;
        }
        let a = values.start.max(start);
        let b = values.end.min(start + count);
        let to = &mut out[a - values.start..b - values.start];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(to);
        if file
            .read_exact_at(bytes, offset + 4 * (a - start) as u64)
            .is_err()
        {
            return false;
        }
        done += b - a;
    }
    done == values.len()
}

/// Runs `copies` (in increasing, disjoint `dst` order) from `maps` into `out`, on two threads
/// that each take a contiguous half of the bytes; `false` if a value is not finite.
fn copy_pages(maps: &[&[u8]], copies: &[PageCopy], out: &mut [f32]) -> bool {
    // One destination slice per copy.
    let mut jobs: Vec<(&[u8], &mut [f32])> = Vec::with_capacity(copies.len());
    let mut rest: &mut [f32] = out;
    let mut pos = 0usize;
    for c in copies {
        let Some(src) = maps.get(c.map).and_then(|m| m.get(c.src.clone())) else {
            return false;
        };
        if c.dst.start < pos || c.dst.end > pos + rest.len() {
            return false;
        }
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(c.dst.start - pos);
        let (to, tail) = tail.split_at_mut(c.dst.len());
        rest = tail;
        pos = c.dst.end;
        jobs.push((src, to));
    }
    let total: usize = jobs.iter().map(|j| j.1.len()).sum();
    let run =
        |jobs: &mut [(&[u8], &mut [f32])]| jobs.iter_mut().all(|(src, to)| copy_finite(src, to));
    if total < (1 << 20) {
        return run(&mut jobs);
    }
    let mut cut = 0;
    let mut acc = 0;
    while cut < jobs.len() && acc < total / 2 {
        acc += jobs[cut].1.len();
        cut += 1;
    }
    let (left, right) = jobs.split_at_mut(cut);
    std::thread::scope(|s| {
        let h = s.spawn(|| run(right));
        let a = run(left);
        h.join().unwrap_or(false) && a
    })
}

/// [`copy_f32`] then [`all_finite`] in blocks of 8 KB, each checked while in L1 cache.
fn copy_finite(bytes: &[u8], dst: &mut [f32]) -> bool {
    const BLOCK: usize = 2048;
    if bytes.len() != 4 * dst.len() {
        return false;
    }
    bytes
        .chunks(4 * BLOCK)
        .zip(dst.chunks_mut(BLOCK))
        .all(|(src, to)| {
            copy_f32(src, to);
            all_finite(to)
        })
}

/// Whether every value is finite (no NaN or ±∞), in blocks that the compiler vectorises (the
/// position of a bad value is found by the caller).
///
/// With `a` the bits of `|v|` (sign cleared), `v` is finite iff its exponent is not all ones,
/// i.e. `a < 0x7f80_0000`, i.e. `a + 0x0080_0000 < 2³¹`: so the top bit of the OR of
/// `a + 0x0080_0000` over a block is clear iff every value is finite (no overflow: `a < 2³¹`).
/// Adds and ORs only, no compare (1.2–1.5× faster than testing the exponent bits per value).
pub(crate) fn all_finite(values: &[f32]) -> bool {
    values.chunks(1024).all(|block| {
        block.iter().fold(0u32, |bad, v| {
            bad | ((v.to_bits() & 0x7fff_ffff) + 0x0080_0000)
        }) & 0x8000_0000
            == 0
    })
}

fn leaf_ok(c: &ColumnChunkMetadata) -> bool {
    let desc = &c.descriptor().descriptor;
    desc.primitive_type.physical_type == PhysicalType::Float && desc.max_rep_level == 1
}

/// Bits of a level of at most `max` (the RLE/bit-packed hybrid's width).
fn bits_for(max: u32) -> u32 {
    32 - max.leading_zeros()
}

/// Little-endian `f32`s from `bytes` (`4 · dst.len()` of them).
fn copy_f32(bytes: &[u8], dst: &mut [f32]) {
    #[cfg(target_endian = "little")]
    {
        bytemuck::cast_slice_mut::<f32, u8>(dst).copy_from_slice(bytes);
    }
    #[cfg(not(target_endian = "little"))]
    for (v, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// A ULEB128 varint at `data[*at..]`.
fn varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Walks the first `n` levels of an RLE/bit-packed hybrid buffer of width `bits`: `run(value,
/// count)` for an RLE run, `packed(values)` for each value of a bit-packed run, in order.
/// `None` when the buffer is malformed or too short.
fn walk_levels(
    data: &[u8],
    bits: u32,
    n: usize,
    run: &mut dyn FnMut(u32, usize) -> bool,
    packed: &mut dyn FnMut(u32) -> bool,
) -> Option<bool> {
    if bits == 0 {
        return Some(run(0, n));
    }
    let bytes_per = bits.div_ceil(8) as usize;
    let mask = if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    let mut at = 0usize;
    let mut left = n;
    while left > 0 {
        let header = varint(data, &mut at)?;
        if header & 1 == 1 {
            // Bit-packed: (header >> 1) groups of 8 values.
            let count = usize::try_from(header >> 1).ok()?.checked_mul(8)?;
            let len = count.checked_mul(bits as usize)?.div_ceil(8);
            let buf = data.get(at..at.checked_add(len)?)?;
            at += len;
            let take = count.min(left);
            for i in 0..take {
                let bit = i * bits as usize;
                let mut word = 0u64;
                // The bytes holding the value's bits (one for `bits` = 1, at most five).
                for k in 0..(bit % 8 + bits as usize).div_ceil(8) {
                    if let Some(&b) = buf.get(bit / 8 + k) {
                        word |= u64::from(b) << (8 * k);
                    }
                }
                let v = ((word >> (bit % 8)) as u32) & mask;
                if !packed(v) {
                    return Some(false);
                }
            }
            left -= take;
        } else {
            let count = usize::try_from(header >> 1).ok()?;
            let raw = data.get(at..at.checked_add(bytes_per)?)?;
            at += bytes_per;
            let mut v = 0u32;
            for (k, &b) in raw.iter().enumerate().take(4) {
                v |= u32::from(b) << (8 * k);
            }
            if count == 0 {
                return None;
            }
            let take = count.min(left);
            if !run(v, take) {
                return Some(false);
            }
            left -= take;
        }
    }
    Some(true)
}

/// `to[i] = dict[index i]` for the `to.len()` indices of width `bits` in `data`; `Some(false)`
/// for an index beyond the dictionary.
fn gather(dict: &[f32], data: &[u8], bits: u32, to: &mut [f32]) -> Option<bool> {
    if bits > 32 {
        return None;
    }
    let n = to.len();
    let at = std::cell::Cell::new(0usize);
    let to = std::cell::RefCell::new(to);
    walk_levels(
        data,
        bits,
        n,
        &mut |v, count| {
            let Some(&value) = dict.get(v as usize) else {
                return false;
            };
            let i = at.get();
            to.borrow_mut()[i..i + count].fill(value);
            at.set(i + count);
            true
        },
        &mut |v| {
            let Some(&value) = dict.get(v as usize) else {
                return false;
            };
            let i = at.get();
            to.borrow_mut()[i] = value;
            at.set(i + 1);
            true
        },
    )
}

/// Whether all `n` levels equal `want`.
fn all_equal(data: &[u8], bits: u32, n: usize, want: u32) -> Option<bool> {
    walk_levels(data, bits, n, &mut |v, _| v == want, &mut |v| v == want)
}

/// Whether the `n` repetition levels of the values `p0..p0 + n` of a chunk start a row exactly
/// at the multiples of `d` (level 0 there, 1 elsewhere).
fn rows_of_d(data: &[u8], bits: u32, n: usize, p0: u64, d: u64) -> Option<bool> {
    if d == 0 {
        return None;
    }
    // The next value's position in the chunk and in its row (`p % d`, kept without a
    // division per value: a bit-packed run holds every value of a row of 8·k levels).
    let p = std::cell::Cell::new((p0, p0 % d));
    let ok = walk_levels(
        data,
        bits,
        n,
        &mut |v, count| {
            let ((at, r), count) = (p.get(), count as u64);
            p.set((at + count, (r + count) % d));
            match v {
                // Every value of the run starts a row.
                0 => d == 1 || (count == 1 && r == 0),
                // No value of the run starts a row.
                1 => d > 1 && r != 0 && r + count <= d,
                _ => false,
            }
        },
        &mut |v| {
            let (at, r) = p.get();
            p.set((at + 1, if r + 1 == d { 0 } else { r + 1 }));
            v <= 1 && (v == 0) == (r == 0)
        },
    )?;
    Some(ok && p.get().0 == p0 + n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RLE run header + value (width 1).
    fn rle(count: u64, v: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut h = count << 1;
        loop {
            let b = (h & 0x7f) as u8;
            h >>= 7;
            if h == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.push(v);
        out
    }

    #[test]
    fn repetition_levels_of_fixed_rows() {
        // d = 4, 3 rows: 0 1 1 1 | 0 1 1 1 | 0 1 1 1 as RLE runs.
        let mut buf = Vec::new();
        for _ in 0..3 {
            buf.extend(rle(1, 0));
            buf.extend(rle(3, 1));
        }
        assert_eq!(rows_of_d(&buf, 1, 12, 0, 4), Some(true));
        // The same levels read as d = 3 or starting mid-row are refused.
        assert_eq!(rows_of_d(&buf, 1, 12, 0, 3), Some(false));
        assert_eq!(rows_of_d(&buf, 1, 12, 1, 4), Some(false));
        // Bit-packed: one group of 8 values 0,1,1,1,0,1,1,1 = bits LSB first: 0b1110_1110.
        let packed = vec![0b11, 0b1110_1110];
        assert_eq!(rows_of_d(&packed, 1, 8, 0, 4), Some(true));
        assert_eq!(rows_of_d(&packed, 1, 8, 0, 2), Some(false));
        // Truncated buffer: malformed.
        assert_eq!(rows_of_d(&buf[..3], 1, 12, 0, 4), None);
    }

    /// The pages of a file the crate writes (zstd, `Array(f32, d)`, one row group per item)
    /// decode to exactly the matrix polars loads, batch by batch, and a batch not on row-group
    /// boundaries is not handled.
    #[test]
    fn pages_equal_polars() {
        use crate::features::{write_features, FeatureScan, Features};
        let dir = std::env::temp_dir().join(format!("nc-plain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("features-fc.parquet");
        let d = 37;
        let items: Vec<Features> = (0..3u32)
            .map(|k| {
                let n = 50 + 13 * k as usize;
                let x = ndarray::Array2::from_shape_fn((n, d), |(i, j)| {
                    ((i * 31 + j * 7 + k as usize) % 97) as f32 * 0.37 - 11.0
                });
                Features::new(x, (0..n as u32).map(|i| i % 4).collect())
                    .with_epoch(k)
                    .with_split("train")
            })
            .collect();
        write_features(&path, &items).expect("write");
        let reader = PlainX::open(&path, d).expect("a FLOAT list leaf");
        let whole = FeatureScan::open(&path)
            .expect("scan")
            .load()
            .expect("load");
        let mut buf = Vec::new();
        let (mut at, mut row) = (0usize, 0u64);
        for (g, item) in items.iter().enumerate() {
            let n = item.n_samples() as u64;
            assert_eq!(reader.row_groups(&(row..row + n)), Some(g..g + 1));
            assert!(reader.read(g..g + 1, &mut buf));
            let polars = whole.x.slice(ndarray::s![at..at + n as usize, ..]);
            assert_eq!(buf.len(), polars.len());
            for (a, b) in buf.iter().zip(polars.iter()) {
                assert_eq!(a.to_bits(), b.to_bits());
            }
            at += n as usize;
            row += n;
        }
        // All three row groups at once (two threads), and a range inside a row group.
        assert_eq!(reader.row_groups(&(0..row)), Some(0..3));
        assert!(reader.read(0..3, &mut buf));
        assert_eq!(buf.as_slice(), whole.x.as_slice().expect("standard layout"));
        assert_eq!(reader.row_groups(&(1..row)), None);
        // A NaN is not handled here (the polars path names its row and component).
        let mut bad = items[..1].to_vec();
        bad[0].x[[3, 5]] = f32::NAN;
        let nan_path = dir.join("features-nan.parquet");
        write_features(&nan_path, &bad).expect("write");
        let nan = PlainX::open(&nan_path, d).expect("schema");
        assert!(!nan.read(0..1, &mut buf));
        // The wrong width is refused by the levels, not read.
        let wrong = PlainX::open(&path, d + 1).expect("schema alone is fine");
        assert!(!wrong.read(0..1, &mut buf));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Uncompressed PLAIN pages (copied from the mapped file, on two threads past 2²⁰ values)
    /// decode to exactly the matrix polars loads, across two row groups.
    #[test]
    fn mapped_pages_equal_polars() {
        use crate::features::{write_features, FeatureScan, Features};
        use polars::prelude::*;
        let dir = std::env::temp_dir().join(format!("nc-plain-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let zstd = dir.join("features-z.parquet");
        let (n, d) = (2100, 512);
        let x = ndarray::Array2::from_shape_fn((n, d), |(i, j)| {
            ((i * 131 + j * 17) % 1009) as f32 * 0.013 - 6.5
        });
        let item = Features::new(x, (0..n as u32).map(|i| i % 3).collect())
            .with_epoch(1)
            .with_split("train");
        write_features(&zstd, &[item]).expect("write");
        // The same frame rewritten uncompressed, in row groups of 1050 rows.
        let mut df = FeatureScan::open(&zstd)
            .expect("scan")
            .lazy()
            .select(["epoch", "split", "sample", "label", "x"].map(col))
            .collect()
            .expect("collect");
        let path = dir.join("features-plain.parquet");
        let file = std::fs::File::create(&path).expect("create");
        ParquetWriter::new(file)
            .with_compression(ParquetCompression::Uncompressed)
            .with_row_group_size(Some(n / 2))
            .finish(&mut df)
            .expect("write uncompressed");
        let whole = FeatureScan::open(&path)
            .expect("scan")
            .load()
            .expect("load");
        let reader = PlainX::open(&path, d).expect("a FLOAT list leaf");
        assert_eq!(reader.row_groups(&(0..n as u64)), Some(0..2));
        let mut buf = Vec::new();
        assert!(reader.read(0..2, &mut buf));
        assert_eq!(buf.len(), n * d);
        let polars = whole.x.as_slice().expect("standard layout");
        assert!(buf
            .iter()
            .zip(polars)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A buffer read ahead and marked is taken as it is by the next `read` of the same row
    /// groups into the same buffer, once; any other read decodes the pages.
    #[test]
    fn read_ahead_hands_over_a_marked_buffer_once() {
        use crate::features::{write_features, FeatureScan, Features};
        let dir = std::env::temp_dir().join(format!("nc-plain-ahead-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("features-fc.parquet");
        let d = 8;
        let items: Vec<Features> = (0..2u32)
            .map(|k| {
                let x = ndarray::Array2::from_shape_fn((20, d), |(i, j)| {
                    (i * d + j) as f32 + 1000.0 * k as f32
                });
                Features::new(x, (0..20u32).map(|i| i % 2).collect())
                    .with_epoch(k)
                    .with_split("train")
            })
            .collect();
        write_features(&path, &items).expect("write");
        let whole = FeatureScan::open(&path)
            .expect("scan")
            .load()
            .expect("load");
        let polars = whole.x.as_slice().expect("standard layout");
        let (first, second) = polars.split_at(20 * d);
        let reader = PlainX::open(&path, d).expect("a FLOAT list leaf");
        let mut a = Vec::new();
        assert!(reader.read_ahead(1..2, &mut a));
        assert_eq!(a.as_slice(), second);
        reader.mark_read(1..2, &a);
        assert!(reader.read(1..2, &mut a));
        assert_eq!(a.as_slice(), second);
        // A mark for other row groups is not taken: the pages are decoded.
        let mut b = vec![0.0f32; 20 * d];
        reader.mark_read(1..2, &b);
        assert!(reader.read(0..1, &mut b));
        assert_eq!(b.as_slice(), first);
        // A mark is taken once (here on a buffer that does not hold the values, to tell the
        // two apart): the next read decodes.
        let mut c = vec![0.0f32; 20 * d];
        reader.mark_read(0..1, &c);
        assert!(reader.read(0..1, &mut c));
        assert!(c.iter().all(|&v| v == 0.0));
        assert!(reader.read(0..1, &mut c));
        assert_eq!(c.as_slice(), first);
        assert!(reader.used());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn finite_check_agrees_with_is_finite() {
        let mut v: Vec<f32> = (0..5000).map(|i| (i as f32 - 2500.0) * 1e30).collect();
        assert!(all_finite(&v));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let k = 4321;
            let keep = v[k];
            v[k] = bad;
            assert!(!all_finite(&v));
            v[k] = keep;
        }
        assert!(all_finite(&[
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            0.0,
            -0.0,
            1e-45
        ]));
    }

    #[test]
    fn definition_levels_all_max() {
        let buf = rle(10, 3);
        assert_eq!(all_equal(&buf, 2, 10, 3), Some(true));
        assert_eq!(all_equal(&buf, 2, 10, 2), Some(false));
        // A bit-packed group (width 2) with one value below the maximum.
        // One group of 8 values of 2 bits (2 bytes, LSB first): 3 3 3 3 | 3 2 3 3.
        let packed = vec![0b11, 0xff, 0b1111_1011];
        assert_eq!(all_equal(&packed, 2, 8, 3), Some(false));
        let packed = vec![0b11, 0xff, 0xff];
        assert_eq!(all_equal(&packed, 2, 8, 3), Some(true));
        assert_eq!(bits_for(0), 0);
        assert_eq!(bits_for(1), 1);
        assert_eq!(bits_for(3), 2);
    }

    /// Values read by [`read_planned`] from pages at unaligned offsets whose boundaries split
    /// rows, against the values written: within a page and across pages, NaN and infinities
    /// as written (and refused by the finite check).
    #[cfg(unix)]
    #[test]
    fn planned_values_of_unaligned_pages() {
        let dir = std::env::temp_dir().join(format!("nc-plain-pread-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("pages.bin");
        let want: Vec<f32> = (0..21).map(|i| i as f32 * 0.5 - 3.25).collect();
        // Three pages (byte offset, first value, values): offsets 1, 3 and 2 mod 4, the last
        // across a 4 KB boundary; with rows of 3 values, rows 1 and 3 are split.
        let pages = [(5u64, 0usize, 4usize), (1003, 4, 7), (4090, 11, 10)];
        let write = |values: &[f32]| {
            let mut bytes = vec![0xa5u8; 4090 + 40 + 7];
            for &(offset, start, count) in &pages {
                for k in 0..count {
                    let at = offset as usize + 4 * k;
                    bytes[at..at + 4].copy_from_slice(&values[start + k].to_le_bytes());
                }
            }
            std::fs::write(&path, &bytes).expect("write");
            File::open(&path).expect("open")
        };
        let file = write(&want);
        let plan = ValuePlan {
            segments: pages.to_vec(),
            values: 21,
        };
        let read = |file: &File, r: Range<usize>| {
            let mut out = vec![0.0f32; r.len()];
            read_planned(file, &plan, r, &mut out).then_some(out)
        };
        for (a, b) in [
            (0, 21),
            (0, 4),
            (4, 11),
            (11, 21),
            (1, 3),
            (2, 18),
            (6, 13),
            (3, 5),
        ] {
            assert_eq!(
                read(&file, a..b).expect("in the plan"),
                want[a..b],
                "{a}..{b}"
            );
        }
        // Values beyond the plan, or an output of the wrong length: refused.
        assert!(read(&file, 0..22).is_none());
        assert!(!read_planned(&file, &plan, 0..4, &mut [0.0; 3]));
        // A file shorter than the plan says: the read fails.
        std::fs::write(&path, vec![0u8; 4100]).expect("truncate");
        assert!(read(&File::open(&path).expect("open"), 11..21).is_none());
        // A NaN or ±∞ read as it was written (the sums it enters become non-finite).
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut values = want.clone();
            values[15] = bad;
            let file = write(&values);
            let x = read(&file, 11..21).expect("in the plan");
            assert_eq!(x[4].to_bits(), bad.to_bits());
            assert!(!all_finite(&x));
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
