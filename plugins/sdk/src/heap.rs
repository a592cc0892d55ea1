//! The plugin's global allocator: a bump allocator over `memory.grow`. An instance lives
//! for one evaluation and is then dropped whole, so freeing matters little; the last
//! block is still freed and grown in place, which covers the common push-and-grow of a
//! `Vec` or `String` being built.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

const PAGE: usize = 64 * 1024;

unsafe extern "C" {
    /// Where the linker put the end of static data and the stack: the heap starts here.
    static __heap_base: u8;
}

struct BumpHeap {
    /// First free byte (0 until the first allocation).
    next: Cell<usize>,
    /// End of the memory we own (the current memory size).
    end: Cell<usize>,
}

// SAFETY: a wasm32-unknown-unknown instance runs on one thread.
unsafe impl Sync for BumpHeap {}

#[global_allocator]
static HEAP: BumpHeap = BumpHeap {
    next: Cell::new(0),
    end: Cell::new(0),
};

impl BumpHeap {
    /// Makes `[next, new_end)` ours, growing memory when needed; false when it cannot.
    fn reserve_to(&self, new_end: usize) -> bool {
        if new_end <= self.end.get() {
            return true;
        }
        let pages = (new_end - self.end.get()).div_ceil(PAGE);
        if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
            return false;
        }
        self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        true
    }

    fn start(&self) {
        if self.next.get() == 0 {
            self.next.set(&raw const __heap_base as usize);
            self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        }
    }
}

unsafe impl GlobalAlloc for BumpHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.start();
        let Some(ptr) = self.next.get().checked_next_multiple_of(layout.align()) else {
            return core::ptr::null_mut();
        };
        let Some(new_end) = ptr.checked_add(layout.size()) else {
            return core::ptr::null_mut();
        };
        if !self.reserve_to(new_end) {
            return core::ptr::null_mut();
        }
        self.next.set(new_end);
        ptr as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only the last block can be given back to a bump allocator.
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize;
        if start + layout.size() == self.next.get() {
            // The last block grows (or shrinks) in place.
            let Some(new_end) = start.checked_add(new_size) else {
                return core::ptr::null_mut();
            };
            if !self.reserve_to(new_end) {
                return core::ptr::null_mut();
            }
            self.next.set(new_end);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees `layout.align()` with `new_size` forms a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` has a non-zero size (it exceeds the old one).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for `layout.size()` bytes and do not overlap
            // (the new one lies past the old one's end).
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size()) };
        }
        new
    }
}
