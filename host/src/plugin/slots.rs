//! Back-pressure: a counting semaphore on evaluations alive at once, so more callers
//! than the host allows wait their turn instead of creating stores (and memory) without
//! bound. It also records the peak, which tests and metrics read.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

pub(crate) struct Slots {
    capacity: usize,
    state: Mutex<SlotState>,
    freed: Condvar,
}

#[derive(Default)]
struct SlotState {
    in_use: usize,
    peak: usize,
    waited: u64,
}

/// A held slot; dropping it frees the slot and wakes one waiter.
pub(crate) struct Slot<'a> {
    slots: &'a Slots,
}

impl Slots {
    pub fn new(capacity: usize) -> Self {
        Slots {
            capacity: capacity.max(1),
            state: Mutex::new(SlotState::default()),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // The state is two counters updated atomically under the lock; a panic elsewhere
        // cannot leave them half-written, so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a free slot.
    pub fn acquire(&self) -> Slot<'_> {
        let mut state = self.lock();
        if state.in_use >= self.capacity {
            state.waited += 1;
        }
        while state.in_use >= self.capacity {
            state = self.freed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.in_use += 1;
        state.peak = state.peak.max(state.in_use);
        Slot { slots: self }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// (peak evaluations alive at once, acquisitions that had to wait).
    pub fn usage(&self) -> (usize, u64) {
        let state = self.lock();
        (state.peak, state.waited)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        state.in_use -= 1;
        drop(state);
        self.slots.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn never_more_holders_than_capacity() {
        let slots = Slots::new(2);
        let live = AtomicUsize::new(0);
        let max_seen = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        let _slot = slots.acquire();
                        let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                        max_seen.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        live.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(max_seen.load(Ordering::SeqCst) <= 2);
        assert_eq!(slots.usage().0, max_seen.load(Ordering::SeqCst));
    }
}
