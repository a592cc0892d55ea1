//! Threads for the kernels: the pool a backend runs on (rayon's global pool, a dedicated
//! one of our own ([`pool`]), or none), and the few ways kernels split work over it.
//! Small work stays on the calling thread: handing work to another thread costs
//! microseconds, more than a small op takes.
//! Reductions split at fixed sizes, so their result does not depend on the thread count.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::thread::LocalKey;

use r1_core::BackendError;
use rayon::prelude::*;

use crate::simd::SimdLevel;

/// Below this many element-operations a kernel runs on the calling thread.
pub(crate) const MIN_PARALLEL_WORK: usize = 1 << 15;

mod pool;

enum Mode {
    Serial,
    Global,
    Pool(pool::Pool),
}

/// Rows a lane of [`Threads::run_lanes`] takes at the least (but see [`lane_min_rows`]).
/// `bench serve --preset small` (two threads, AVX-512 on Intel): lanes of 2 rows lost to
/// one plan over both threads (4 streams 16.2k → 14.0k tok/s), lanes of 4 won (8 streams
/// 21.8k → 24.5k, 32 streams +10–18%).
const LANE_MIN_ROWS: usize = 4;

/// Rows a lane takes at the least with this instruction set; `None`: no lanes.
///
/// With AVX2 a step is one plan whose products split over the threads. Each lane reads
/// all the weights, and on Zen 3 (AVX2) the decode product of a few rows reads weights
/// from L3 at a fraction of one row's rate (`benches/decode_gemm.rs`, cold column), so
/// lanes of 4 rows lost to one plan: `bench serve --preset small --clients 8 --min-secs 3`,
/// the builds before and after in turns, medians of six rounds 3.95k → 4.5k tok/s (an
/// earlier five rounds: 3.2k → 4.3k, inter-token p50 2.3 → 1.8 ms);
/// `bench grpo --preset small`'s generation (8 rows) 0.141 → 0.113 s (five rounds). At 16
/// and 32 streams lanes did not win (32: medians 6.05k either way, ten rounds).
pub(crate) fn lane_min_rows(level: SimdLevel) -> Option<usize> {
    match level {
        SimdLevel::Avx2 => None,
        SimdLevel::Scalar | SimdLevel::Avx512 => Some(LANE_MIN_ROWS),
    }
}

/// The last-level cache assumed where the system does not say (a small server CPU's).
const DEFAULT_LAST_LEVEL_CACHE: usize = 8 << 20;

/// Weight bytes up to which a step is cut into lanes: every lane reads all the weights, so
/// they must stay in the last-level cache, of which half is left to the KV cache and the
/// activations. Weights streamed from memory go faster split by columns, each thread
/// reading its share: `bench serve --preset medium` (97 MiB of weights, 32 MiB of L3) ran
/// 9% (32 streams) to 27% (8 streams) slower in lanes; `small` (12 MiB) 10–18% faster.
fn lane_weight_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| last_level_cache().unwrap_or(DEFAULT_LAST_LEVEL_CACHE) / 2)
}

/// The largest cache the first CPU has, as Linux reports it (`None` elsewhere).
fn last_level_cache() -> Option<usize> {
    std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache")
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("index"))
        .filter_map(|e| parse_cache_size(&std::fs::read_to_string(e.path().join("size")).ok()?))
        .max()
}

/// A sysfs cache size: `32768K`, `1M`, or plain bytes.
fn parse_cache_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, 'K') => (&text[..i], 1usize << 10),
        (i, 'M') => (&text[..i], 1 << 20),
        (i, 'G') => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

thread_local! {
    /// Whether this thread is running a lane of [`Threads::run_lanes`].
    static IN_LANE: Cell<bool> = const { Cell::new(false) };
}

/// Sets a thread-local flag (inside a lane, inside a task) until dropped (on unwind
/// too), restoring what it was before.
struct FlagGuard {
    flag: &'static LocalKey<Cell<bool>>,
    was: bool,
}

impl FlagGuard {
    fn enter(flag: &'static LocalKey<Cell<bool>>) -> FlagGuard {
        FlagGuard {
            flag,
            was: flag.replace(true),
        }
    }
}

impl Drop for FlagGuard {
    fn drop(&mut self) {
        self.flag.set(self.was);
    }
}

/// Where a backend's kernels run.
pub(crate) struct Threads {
    mode: Mode,
    count: usize,
}

impl Threads {
    /// rayon's global pool (shared with the rest of the process).
    pub(crate) fn global() -> Threads {
        let count = rayon::current_num_threads().max(1);
        if count == 1 {
            Threads {
                mode: Mode::Serial,
                count,
            }
        } else {
            Threads {
                mode: Mode::Global,
                count,
            }
        }
    }

    /// A dedicated pool of `n` threads (`n = 1`: everything on the calling thread): the
    /// thread that calls a kernel and `n - 1` started here ([`pool`]).
    pub(crate) fn dedicated(n: usize) -> Result<Threads, BackendError> {
        if n <= 1 {
            return Ok(Threads {
                mode: Mode::Serial,
                count: 1,
            });
        }
        let pool =
            pool::Pool::new(n).map_err(|e| BackendError::Unavailable(format!("cannot start {n} CPU threads: {e}")))?;
        Ok(Threads {
            count: pool.size(),
            mode: Mode::Pool(pool),
        })
    }

    /// Threads a kernel may split its work over here: 1 inside a lane of
    /// [`Threads::run_lanes`] or a task of the dedicated pool, else the pool's.
    pub(crate) fn count(&self) -> usize {
        if IN_LANE.get() || pool::in_task() {
            1
        } else {
            self.count
        }
    }

    /// Lanes a step over `rows` rows reading `weight_bytes` of weights is cut into: one
    /// per thread, each of at least `min_rows` rows ([`lane_min_rows`]; `None`: 1), when
    /// the weights stay in the last-level cache ([`lane_weight_limit`]); else 1.
    pub(crate) fn lanes(&self, rows: usize, weight_bytes: usize, min_rows: Option<usize>) -> usize {
        match min_rows {
            Some(min) if weight_bytes <= lane_weight_limit() => self.count().min(rows / min.max(1)).max(1),
            _ => 1,
        }
    }

    /// Whether `work` element-operations are worth splitting.
    pub(crate) fn worth_splitting(&self, work: usize) -> bool {
        self.count() > 1 && work >= MIN_PARALLEL_WORK
    }

    /// Runs `f(i)` for `i in 0..n`, each call on one of the pool's threads with every
    /// kernel inside it on that thread ([`Threads::count`] is 1 there), as many at once
    /// as there are threads. Whatever thread runs a lane, its kernels compute what they
    /// compute on one thread, which (reductions being cut at fixed sizes) is what they
    /// compute on any number.
    pub(crate) fn run_lanes(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let lane = |i: usize| {
            let _lane = FlagGuard::enter(&IN_LANE);
            f(i)
        };
        if self.count() <= 1 || n <= 1 {
            (0..n).for_each(lane);
            return;
        }
        self.each(n, &lane);
    }

    /// Runs `f(i)` for every `i in 0..n` in parallel, one task per index (the callers
    /// decided the split is worth it).
    fn each(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        match &self.mode {
            Mode::Serial => (0..n).for_each(f),
            // One task per index: rayon would otherwise hand a thread several in one
            // piece while another has none.
            Mode::Global => (0..n).into_par_iter().with_max_len(1).for_each(f),
            Mode::Pool(pool) => pool.run(n, f),
        }
    }

    /// Runs `f` where the kernels inside it split work with the pool directly: on one of
    /// rayon's threads for the global pool (the caller is handed to it once per plan
    /// instead of once per parallel op), on the calling thread for a dedicated pool.
    pub(crate) fn run_inside<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.mode {
            Mode::Global => rayon::scope(|_| f()),
            Mode::Serial | Mode::Pool(_) => f(),
        }
    }

    /// Calls `f(first_row, rows)` over `out` cut into chunks of whole rows (`row_len`
    /// elements each), in parallel when `rows · work_per_row` is worth it.
    pub(crate) fn for_rows<T: Send>(
        &self,
        out: &mut [T],
        row_len: usize,
        work_per_row: usize,
        f: impl Fn(usize, &mut [T]) + Sync + Send,
    ) {
        let rows = out.len().checked_div(row_len).unwrap_or(0);
        if rows <= 1 || !self.worth_splitting(rows.saturating_mul(work_per_row)) {
            f(0, out);
            return;
        }
        // A few chunks per thread balance the load when other processes take a core.
        let by_count = rows.div_ceil(4 * self.count());
        let by_work = (MIN_PARALLEL_WORK / 4).div_ceil(work_per_row.max(1));
        let chunk_rows = by_count.max(by_work).max(1);
        let chunks = Chunks::new(out, chunk_rows * row_len);
        self.each(chunks.count(), &|i| {
            // SAFETY: each index is run once, and chunks of different indices are disjoint.
            f(i * chunk_rows, unsafe { chunks.get(i) })
        });
    }

    /// Calls `f(chunk, first_row, rows)` over `out` cut into chunks of exactly
    /// `rows_per_chunk` rows (the last may be shorter) and returns the results in chunk
    /// order. The cut does not depend on the thread count, so a reduction over the
    /// results is deterministic.
    pub(crate) fn map_row_chunks<T: Send, R: Send>(
        &self,
        out: &mut [T],
        row_len: usize,
        rows_per_chunk: usize,
        work_per_row: usize,
        f: impl Fn(usize, usize, &mut [T]) -> R + Sync + Send,
    ) -> Vec<R> {
        let rows = out.len().checked_div(row_len).unwrap_or(0);
        let step = rows_per_chunk.max(1) * row_len.max(1);
        if !self.worth_splitting(rows.saturating_mul(work_per_row)) {
            return out
                .chunks_mut(step)
                .enumerate()
                .map(|(i, c)| f(i, i * rows_per_chunk, c))
                .collect();
        }
        let chunks = Chunks::new(out, step);
        self.collect(chunks.count(), &|i| {
            // SAFETY: each index is run once, and chunks of different indices are disjoint.
            f(i, i * rows_per_chunk, unsafe { chunks.get(i) })
        })
    }

    /// Calls `f(i)` for `i in 0..n` and returns the results in order, in parallel when
    /// `n · work_per_task` is worth it.
    pub(crate) fn map_tasks<R: Send>(
        &self,
        n: usize,
        work_per_task: usize,
        f: impl Fn(usize) -> R + Sync + Send,
    ) -> Vec<R> {
        if n <= 1 || !self.worth_splitting(n.saturating_mul(work_per_task)) {
            return (0..n).map(f).collect();
        }
        self.collect(n, &f)
    }

    /// `f(i)` for every `i in 0..n`, in parallel, in index order.
    fn collect<R: Send>(&self, n: usize, f: &(dyn Fn(usize) -> R + Sync)) -> Vec<R> {
        let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(n).collect();
        let out = Chunks::new(&mut slots, 1);
        self.each(n, &|i| {
            // SAFETY: each index is run once, and writes only its own slot.
            let slot = unsafe { out.get(i) };
            slot[0] = Some(f(i));
        });
        // `each` returns only once every index has run (a panic would have come back).
        slots.into_iter().flatten().collect()
    }

    /// Calls `f` on each job, in parallel (the caller decided the jobs are worth it).
    pub(crate) fn for_each_owned<T: Send>(&self, jobs: Vec<T>, f: impl Fn(T) + Sync + Send) {
        if self.count() <= 1 || jobs.len() <= 1 {
            jobs.into_iter().for_each(f);
            return;
        }
        let mut slots: Vec<Option<T>> = jobs.into_iter().map(Some).collect();
        let n = slots.len();
        let jobs = Chunks::new(&mut slots, 1);
        self.each(n, &|i| {
            // SAFETY: each index is run once, and takes only its own job.
            let slot = unsafe { jobs.get(i) };
            if let Some(job) = slot[0].take() {
                f(job)
            }
        });
    }

    /// Calls `f(i)` for `i in 0..n`, in parallel when worth it.
    pub(crate) fn for_tasks(&self, n: usize, work_per_task: usize, f: impl Fn(usize) + Sync + Send) {
        if n <= 1 || !self.worth_splitting(n.saturating_mul(work_per_task)) {
            (0..n).for_each(f);
            return;
        }
        self.each(n, &f);
    }
}

/// A slice cut into chunks of `step` elements (the last may be shorter) that parallel
/// tasks take one each.
struct Chunks<'a, T> {
    out: SharedOut<'a, T>,
    step: usize,
}

impl<'a, T> Chunks<'a, T> {
    fn new(out: &'a mut [T], step: usize) -> Chunks<'a, T> {
        Chunks {
            out: SharedOut::new(out),
            step: step.max(1),
        }
    }

    fn count(&self) -> usize {
        self.out.len().div_ceil(self.step)
    }

    /// Chunk `i` (`i < count()`).
    ///
    /// # Safety
    /// No chunk may be taken twice while an earlier borrow of it is alive.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self, i: usize) -> &mut [T] {
        let start = i * self.step;
        let len = self.step.min(self.out.len().saturating_sub(start));
        // SAFETY: chunks of different indices are disjoint; the rest is the caller's.
        unsafe { self.out.slice(start, len) }
    }
}

/// An output shared by parallel tasks that each write their own disjoint set of elements
/// (e.g. one attention head's columns inside rows that interleave all heads).
pub(crate) struct SharedOut<'a, T = f32> {
    ptr: *mut T,
    len: usize,
    _owner: PhantomData<&'a mut [T]>,
}

// SAFETY: `SharedOut` is a `&mut [T]` split between threads; `slice`'s contract makes
// the pieces disjoint, so sharing the handle sends only `T`s between threads and creates
// no data race.
unsafe impl<T: Send> Send for SharedOut<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedOut<'_, T> {}

impl<'a, T> SharedOut<'a, T> {
    pub(crate) fn new(out: &'a mut [T]) -> SharedOut<'a, T> {
        SharedOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            _owner: PhantomData,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Elements `start .. start + len`.
    ///
    /// # Safety
    /// No two slices obtained from this handle that are alive at the same time may
    /// overlap; callers partition the elements between their tasks.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(
            start.checked_add(len).is_some_and(|e| e <= self.len),
            "SharedOut range {start}+{len} > {}",
            self.len
        );
        // SAFETY: in bounds (asserted) of the `&'a mut [T]` this handle was made from;
        // exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// The raw base pointer, for [`crate::kernels::gemm::MatMut::from_shared`].
    pub(crate) fn base(&self) -> *mut T {
        self.ptr
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn cache_sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_cache_size("32768K\n"), Some(32 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("2G"), Some(2 << 30));
        assert_eq!(parse_cache_size("4096"), Some(4096));
        for bad in ["", "K", "12Q", "-1K", "99999999999999999999999G"] {
            assert_eq!(parse_cache_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn steps_are_cut_into_lanes_only_with_rows_and_cached_weights() {
        let threads = Threads::dedicated(2).expect("pool");
        let fits = lane_weight_limit();
        let min = Some(LANE_MIN_ROWS);
        assert_eq!(threads.lanes(2 * LANE_MIN_ROWS, fits, min), 2);
        assert_eq!(threads.lanes(64, fits, min), 2, "one lane per thread at the most");
        assert_eq!(threads.lanes(2 * LANE_MIN_ROWS - 1, fits, min), 1);
        assert_eq!(threads.lanes(64, fits + 1, min), 1, "weights past the cache");
        assert_eq!(Threads::dedicated(1).expect("serial").lanes(64, 0, min), 1);
        assert_eq!(threads.lanes(64, 0, None), 1, "no lanes for this instruction set");
        assert_eq!(lane_min_rows(SimdLevel::Avx2), None);
        assert_eq!(lane_min_rows(SimdLevel::Avx512), Some(LANE_MIN_ROWS));
    }

    #[test]
    fn a_lane_runs_every_index_once_with_its_kernels_on_one_thread() {
        let threads = Threads::dedicated(2).expect("pool");
        let seen = Mutex::new(Vec::new());
        threads.run_lanes(5, &|i| {
            // Inside a lane nothing splits further.
            assert_eq!(threads.count(), 1);
            assert!(!threads.worth_splitting(usize::MAX));
            seen.lock().expect("lock").push(i);
        });
        let mut seen = seen.into_inner().expect("lock");
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        // Outside, the pool is whole again (on this thread and on the pool's).
        assert_eq!(threads.count(), 2);
        threads.run_inside(|| assert_eq!(threads.count(), 2));
    }

    #[test]
    fn a_panicking_lane_leaves_its_thread_out_of_lane() {
        let threads = Threads::dedicated(1).expect("serial");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            threads.run_lanes(1, &|_| panic!("lane"))
        }));
        assert!(caught.is_err());
        assert!(!IN_LANE.get(), "the guard restored the flag on unwind");
    }
}
