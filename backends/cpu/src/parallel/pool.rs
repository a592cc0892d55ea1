//! The dedicated pool's threads: the caller of a parallel op works beside `n - 1` threads
//! that, between ops, spin for a while on the next op before they sleep.
//!
//! A decode step is a few hundred short parallel ops (a layer's products, one after the
//! other, with serial norms and adds between them). Each op is one job here: its tasks
//! are cut into one contiguous share per thread (the caller's first), every thread takes
//! tasks from its own share, then from the others' (so a thread that is late or busy
//! elsewhere delays nothing), and the caller returns once every task has run. A thread
//! that found no job for [`SPIN`] sleeps until the next one; the ops of a step follow
//! each other closely enough that none sleeps inside a step, so no op pays a wake-up (on
//! a virtual machine, tens of microseconds).

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a thread without a job looks for the next one before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

thread_local! {
    /// Whether this thread is running a task of a [`Pool`] job (any pool's).
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is inside a task, where parallel ops run serially.
pub(super) fn in_task() -> bool {
    IN_TASK.get()
}

/// One parallel op: `f(i)` for every task `i`, cut into a share per thread.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    /// Tasks in all.
    n: usize,
    /// The next task of each thread's share ([`Job::end`]; past it once the share is
    /// taken), one share per thread.
    next: Vec<Padded>,
    /// The first panic of a task, raised again in the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    panicked: AtomicBool,
}

/// A counter alone on its cache line, so threads taking tasks from different shares do
/// not contend for one line.
#[repr(align(128))]
struct Padded(AtomicUsize);

impl Job<'_> {
    fn new(n: usize, threads: usize, f: &(dyn Fn(usize) + Sync)) -> Job<'_> {
        Job {
            f,
            n,
            next: (0..threads)
                .map(|t| Padded(AtomicUsize::new(n * t / threads)))
                .collect(),
            panic: Mutex::new(None),
            panicked: AtomicBool::new(false),
        }
    }

    /// The end of thread `t`'s share (which starts where thread `t - 1`'s ends).
    fn end(&self, t: usize) -> usize {
        self.n * (t + 1) / self.next.len()
    }

    /// Runs tasks on thread `me`: its own share, then what is left of the others'.
    fn work(&self, me: usize) {
        let _task = super::FlagGuard::enter(&IN_TASK);
        let threads = self.next.len();
        for s in 0..threads {
            let t = (me + s) % threads;
            loop {
                let i = self.next[t].0.fetch_add(1, SeqCst);
                if i >= self.end(t) {
                    break;
                }
                self.run(i);
            }
        }
    }

    fn run(&self, i: usize) {
        if self.panicked.load(SeqCst) {
            return;
        }
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| (self.f)(i))) {
            self.panicked.store(true, SeqCst);
            let mut first = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
            first.get_or_insert(payload);
        }
    }
}

/// What the caller and the threads share.
struct Shared {
    /// The open job (null between jobs). Its lifetime is the caller's: see [`Pool::run`].
    job: AtomicPtr<Job<'static>>,
    /// Bumped for every job, so a thread joins each job once.
    epoch: AtomicUsize,
    /// Threads that may be inside the open job.
    inside: AtomicUsize,
    /// Threads asleep (or about to sleep) on `wake`.
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Shared {
    /// Waits for a job newer than `seen`: its epoch, or `None` once the pool stops.
    fn next_epoch(&self, seen: usize) -> Option<usize> {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = self.epoch.load(SeqCst);
            if epoch != seen {
                return Some(epoch);
            }
            if self.stop.load(SeqCst) {
                return None;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && start.elapsed() > SPIN {
                break;
            }
            std::hint::spin_loop();
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // Counted before the epoch is read again: a caller that bumps the epoch after
        // this read sees the count and wakes us under the lock (which we hold until the
        // wait releases it), so no wake-up is lost.
        self.sleeping.fetch_add(1, SeqCst);
        let found = loop {
            let epoch = self.epoch.load(SeqCst);
            if epoch != seen {
                break Some(epoch);
            }
            if self.stop.load(SeqCst) {
                break None;
            }
            guard = self.wake.wait(guard).unwrap_or_else(PoisonError::into_inner);
        };
        self.sleeping.fetch_sub(1, SeqCst);
        found
    }

    fn wake_all(&self) {
        if self.sleeping.load(SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.wake.notify_all();
        }
    }

    /// A thread's life: join every job until the pool stops.
    fn serve(&self, me: usize) {
        let mut seen = self.epoch.load(SeqCst);
        while let Some(epoch) = self.next_epoch(seen) {
            seen = epoch;
            // Counted before the job is read: the caller closes the job (nulls it) before
            // it reads the count, so either it waits for us or we find no job.
            self.inside.fetch_add(1, SeqCst);
            let job = self.job.load(SeqCst);
            if !job.is_null() {
                // SAFETY: the job is open, and its caller keeps it alive until `inside`
                // is back to zero, which it cannot be before the decrement below.
                unsafe { (*job).work(me) };
            }
            self.inside.fetch_sub(1, SeqCst);
        }
    }
}

/// `n - 1` threads and the calling thread, one job at a time.
pub(super) struct Pool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Held by the thread whose job is open: jobs from other threads wait their turn.
    submit: Mutex<()>,
}

impl Pool {
    /// Starts `n - 1` threads (the caller of each job is the n-th).
    pub(super) fn new(n: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            job: AtomicPtr::new(ptr::null_mut()),
            epoch: AtomicUsize::new(0),
            inside: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut pool = Pool {
            shared,
            threads: Vec::with_capacity(n.saturating_sub(1)),
            submit: Mutex::new(()),
        };
        for me in 1..n {
            let shared = Arc::clone(&pool.shared);
            let thread = std::thread::Builder::new()
                .name(format!("r1-cpu-{me}"))
                .spawn(move || shared.serve(me))?;
            // On an error `pool` drops here and stops the threads already started.
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Threads a job is shared between, the caller's included.
    pub(super) fn size(&self) -> usize {
        self.threads.len() + 1
    }

    /// Runs `f(i)` for `i in 0..n` on the caller and the pool's threads, and returns when
    /// all have run; a task's panic is raised again here once the others have finished.
    /// One task, or a call from inside a task (of any pool), runs on this thread alone.
    pub(super) fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if n <= 1 || in_task() || self.threads.is_empty() {
            (0..n).for_each(f);
            return;
        }
        let _turn = self.submit.lock().unwrap_or_else(PoisonError::into_inner);
        let job = Job::new(n, self.size(), f);
        let shared = &*self.shared;
        // Only the pointer's lifetime changes: the job outlives every use of it (below).
        let open = ptr::from_ref(&job).cast_mut().cast::<Job<'static>>();
        shared.job.store(open, SeqCst);
        shared.epoch.fetch_add(1, SeqCst);
        shared.wake_all();
        job.work(0);
        // Close the job, then wait for every thread that may have found it open.
        shared.job.store(ptr::null_mut(), SeqCst);
        let mut spins = 0u32;
        while shared.inside.load(SeqCst) != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                // A thread descheduled mid-task: let it run.
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
        let payload = job.panic.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(payload) = payload {
            panic::resume_unwind(payload);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.shared.wake.notify_all();
        }
        for thread in self.threads.drain(..) {
            // A thread only ends by returning from `serve` (tasks' panics are caught).
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn every_task_runs_once_on_every_size() {
        for threads in 1..=4 {
            let pool = Pool::new(threads).expect("pool");
            for n in [0, 1, 2, 3, 7, 64, 1000] {
                let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
                pool.run(n, &|i| {
                    assert_eq!(in_task(), n > 1 && threads > 1);
                    hits[i].fetch_add(1, SeqCst);
                });
                assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "{threads} threads, {n} tasks");
                assert!(!in_task());
            }
        }
    }

    #[test]
    fn jobs_after_the_threads_slept_still_run() {
        let pool = Pool::new(2).expect("pool");
        for _ in 0..3 {
            std::thread::sleep(SPIN * 5);
            let sum = AtomicU64::new(0);
            pool.run(100, &|i| {
                sum.fetch_add(i as u64, SeqCst);
            });
            assert_eq!(sum.load(SeqCst), 4950);
        }
    }

    #[test]
    fn nested_jobs_run_on_the_task_thread() {
        let pool = Pool::new(3).expect("pool");
        let sum = AtomicU64::new(0);
        pool.run(6, &|i| {
            let me = std::thread::current().id();
            pool.run(4, &|j| {
                assert_eq!(std::thread::current().id(), me);
                sum.fetch_add((i * 4 + j) as u64, SeqCst);
            });
        });
        assert_eq!(sum.load(SeqCst), (0..24).sum::<u64>());
    }

    #[test]
    fn a_panic_reaches_the_caller_and_the_pool_goes_on() {
        let pool = Pool::new(2).expect("pool");
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(16, &|i| {
                if i == 11 {
                    panic!("task {i}");
                }
            })
        }));
        let payload = caught.expect_err("the panic comes back");
        assert_eq!(payload.downcast_ref::<String>().map(String::as_str), Some("task 11"));
        assert!(!in_task());
        let count = AtomicU64::new(0);
        pool.run(16, &|_| {
            count.fetch_add(1, SeqCst);
        });
        assert_eq!(count.load(SeqCst), 16);
    }

    #[test]
    fn jobs_from_several_threads_take_turns() {
        let pool = Pool::new(2).expect("pool");
        let total = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        pool.run(8, &|i| {
                            total.fetch_add(i as u64, SeqCst);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(SeqCst), 4 * 200 * 28);
    }
}
