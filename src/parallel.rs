//! Deterministic data parallelism over row blocks (std threads, no extra dependency).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The cores this process may use, asked once: `available_parallelism` reads the cgroup files
/// on every call (about 1 % of a streamed pass, which calls this per chunk).
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |t| t.get()))
}

/// Splits `0..n` into consecutive blocks of `block` rows, runs `f(scratch, start, end)` on
/// every block using all available cores, and returns the results **in block order**. Each
/// thread makes its `scratch` once with `init` and lends it to every block it runs (buffers that
/// would otherwise be allocated per block). Because the blocks do not depend on the number of
/// threads, reductions over the results are bit-for-bit the same whatever the thread count.
pub(crate) fn map_row_blocks_with<S, R, I, F>(n: usize, block: usize, init: I, f: F) -> Vec<R>
where
    R: Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, usize, usize) -> R + Sync,
{
    let block = block.max(1);
    let bounds: Vec<(usize, usize)> = (0..n)
        .step_by(block)
        .map(|s| (s, (s + block).min(n)))
        .collect();
    let threads = cores().min(bounds.len());
    if threads <= 1 {
        let mut scratch = init();
        return bounds.iter().map(|&(s, e)| f(&mut scratch, s, e)).collect();
    }
    // Blocks are handed out one at a time (a shared counter), so a thread slowed by other work
    // on its core takes fewer of them; each result is put back in its block's place.
    let next = AtomicUsize::new(0);
    let (f, init, bounds, next) = (&f, &init, &bounds, &next);
    let mut indexed: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let mut scratch = init();
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(s, e)) = bounds.get(i) else {
                            break done;
                        };
                        done.push((i, f(&mut scratch, s, e)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    indexed.sort_unstable_by_key(|&(i, _)| i);
    indexed.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn blocks_cover_all_rows_in_order() {
        let out = super::map_row_blocks_with(10, 3, || (), |_, s, e| (s, e));
        assert_eq!(out, vec![(0, 3), (3, 6), (6, 9), (9, 10)]);
        assert!(super::map_row_blocks_with(0, 4, || (), |_, s, e| (s, e)).is_empty());
    }
}
