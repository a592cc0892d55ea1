//! Threads for the kernels: the pool a backend runs on (rayon's global pool, a dedicated
//! one, or none), and the few ways kernels split work over it. Small work stays on the
//! calling thread: waking a worker costs microseconds, more than a small op takes.
//! Reductions split at fixed sizes, so their result does not depend on the thread count.

use std::marker::PhantomData;

use r1_core::BackendError;
use rayon::prelude::*;

/// Below this many element-operations a kernel runs on the calling thread.
pub(crate) const MIN_PARALLEL_WORK: usize = 1 << 15;

enum Mode {
    Serial,
    Global,
    Pool(rayon::ThreadPool),
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

    /// A dedicated pool of `n` threads (`n = 1`: everything on the calling thread). With
    /// `here`, the calling thread is the pool's first thread and `n - 1` are started.
    pub(crate) fn dedicated(n: usize, here: bool) -> Result<Threads, BackendError> {
        if n <= 1 {
            return Ok(Threads {
                mode: Mode::Serial,
                count: 1,
            });
        }
        let mut builder = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("r1-cpu-{i}"));
        if here {
            builder = builder.use_current_thread();
        }
        let pool = builder
            .build()
            .map_err(|e| BackendError::Unavailable(format!("cannot start {n} CPU threads: {e}")))?;
        Ok(Threads {
            mode: Mode::Pool(pool),
            count: n,
        })
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Whether `work` element-operations are worth splitting.
    pub(crate) fn worth_splitting(&self, work: usize) -> bool {
        self.count > 1 && work >= MIN_PARALLEL_WORK
    }

    /// Runs `f` where rayon's parallel iterators use this backend's pool.
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.mode {
            Mode::Pool(p) => p.install(f),
            Mode::Serial | Mode::Global => f(),
        }
    }

    /// Runs `f` on one of the pool's threads (inline when already on one), so the
    /// kernels inside it split work with the other threads directly. A whole plan runs
    /// this way: the caller is handed to the pool once per plan instead of once per
    /// parallel op (a cold hand-off parks the caller and wakes a worker, which costs more
    /// than a decode-sized op).
    pub(crate) fn run_inside<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.mode {
            Mode::Serial => f(),
            Mode::Global => rayon::scope(|_| f()),
            Mode::Pool(p) => p.install(f),
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
        let by_count = rows.div_ceil(4 * self.count);
        let by_work = (MIN_PARALLEL_WORK / 4).div_ceil(work_per_row.max(1));
        let chunk_rows = by_count.max(by_work).max(1);
        self.install(|| {
            out.par_chunks_mut(chunk_rows * row_len)
                .enumerate()
                .for_each(|(i, c)| f(i * chunk_rows, c));
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
        self.install(|| {
            out.par_chunks_mut(step)
                .enumerate()
                .map(|(i, c)| f(i, i * rows_per_chunk, c))
                .collect()
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
        self.install(|| (0..n).into_par_iter().map(f).collect())
    }

    /// Calls `f` on each job, in parallel (the caller decided the jobs are worth it).
    pub(crate) fn for_each_owned<T: Send>(&self, jobs: Vec<T>, f: impl Fn(T) + Sync + Send) {
        if self.count <= 1 || jobs.len() <= 1 {
            jobs.into_iter().for_each(f);
            return;
        }
        self.install(|| jobs.into_par_iter().for_each(f));
    }

    /// Calls `f(i)` for `i in 0..n`, in parallel when worth it.
    pub(crate) fn for_tasks(&self, n: usize, work_per_task: usize, f: impl Fn(usize) + Sync + Send) {
        if n <= 1 || !self.worth_splitting(n.saturating_mul(work_per_task)) {
            (0..n).for_each(f);
            return;
        }
        self.install(|| (0..n).into_par_iter().for_each(f));
    }
}

/// An output shared by parallel tasks that each write their own disjoint set of elements
/// (e.g. one attention head's columns inside rows that interleave all heads).
pub(crate) struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    _owner: PhantomData<&'a mut [f32]>,
}

// SAFETY: `SharedOut` is a `&mut [f32]` split between threads; `slice`'s contract makes
// the pieces disjoint, so sharing the handle creates no data race.
unsafe impl Send for SharedOut<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    pub(crate) fn new(out: &'a mut [f32]) -> SharedOut<'a> {
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
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(
            start.checked_add(len).is_some_and(|e| e <= self.len),
            "SharedOut range {start}+{len} > {}",
            self.len
        );
        // SAFETY: in bounds (asserted) of the `&'a mut [f32]` this handle was made from;
        // exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// The raw base pointer, for [`crate::kernels::gemm::MatMut::from_shared`].
    pub(crate) fn base(&self) -> *mut f32 {
        self.ptr
    }
}
