//! Host memory of the CPU backend: one 64-byte aligned, zero-filled allocation per
//! buffer, written through `&CpuBuffer` (the `Backend` trait's contract) and made sound by
//! run-time borrows of byte ranges: a range written by one thread is touched by no other
//! at the same time, while ranges that do not overlap are free to be used side by side
//! (threads writing their own rows of one buffer).
//!
//! A conflicting access is an error, never a wait, so two threads that lock buffers in
//! different orders cannot deadlock. Typed host helpers (`upload_f32`, `with_f32`, …)
//! avoid byte conversions on the hot paths of the host (weights, logits, gradients).

use std::alloc::{self, Layout};
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use r1_core::BackendError;

/// Alignment of every allocation (one cache line, the widest vector load).
pub const ALIGN: usize = 64;

/// Bytes a read-only [`CpuBuffer`] computes on in place (a memory-mapped weight).
pub type MappedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A block of host memory owned by the CPU backend, or read-only bytes it was lent
/// ([`CpuBuffer::mapped`]).
pub struct CpuBuffer {
    ptr: NonNull<u8>,
    len: usize,
    /// The owner of the bytes of a mapped buffer (never written, never freed here).
    mapped: Option<MappedBytes>,
    /// The byte ranges borrowed now (a handful at most: one per kernel operand).
    borrows: Mutex<Vec<Held>>,
    /// Copies of byte ranges in a layout some kernel reads faster (a repacked weight),
    /// made on first use ([`CpuBuffer::derived`]) and dropped when a write borrow ends.
    derived: Mutex<Vec<(DerivedKey, Arc<Vec<u8>>)>>,
    /// Write borrows ended so far: a copy made while one ended is not kept.
    writes: AtomicU64,
}

/// What a derived copy was made from: a byte range and the layout (a tag its kernel
/// chooses, e.g. the weight type and row length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DerivedKey {
    pub start: usize,
    pub end: usize,
    pub layout: u64,
}

/// One live borrow: bytes `start..end`, read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    start: usize,
    end: usize,
    write: bool,
}

impl Held {
    /// Whether the two cannot be held at once: they share a byte and one of them writes.
    fn conflicts(&self, other: &Held) -> bool {
        (self.write || other.write) && self.start < other.end && other.start < self.end
    }
}

// SAFETY: the buffer owns its allocation (no thread affinity), and every access to the
// bytes goes through `borrow`, which admits either shared readers or one writer.
unsafe impl Send for CpuBuffer {}
// SAFETY: as above; `&CpuBuffer` exposes no byte without holding a `Borrow`.
unsafe impl Sync for CpuBuffer {}

impl std::fmt::Debug for CpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuBuffer({} bytes)", self.len)
    }
}

impl CpuBuffer {
    /// A zero-filled buffer of `bytes` bytes.
    pub fn zeroed(bytes: usize) -> Result<CpuBuffer, BackendError> {
        if bytes == 0 {
            // A non-null, 64-aligned address that is never dereferenced (zero-length slices).
            let ptr = NonNull::new(std::ptr::without_provenance_mut::<u8>(ALIGN))
                .ok_or(BackendError::OutOfMemory { bytes })?;
            return Ok(CpuBuffer {
                ptr,
                len: 0,
                mapped: None,
                borrows: Mutex::new(Vec::new()),
                derived: Mutex::new(Vec::new()),
                writes: AtomicU64::new(0),
            });
        }
        let layout = Layout::from_size_align(bytes, ALIGN).map_err(|_| BackendError::OutOfMemory { bytes })?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or(BackendError::OutOfMemory { bytes })?;
        Ok(CpuBuffer {
            ptr,
            len: bytes,
            mapped: None,
            borrows: Mutex::new(Vec::new()),
            derived: Mutex::new(Vec::new()),
            writes: AtomicU64::new(0),
        })
    }

    /// A read-only buffer over `bytes`, without copying: kernels read them in place, a
    /// write borrow is an error. `None` for an empty or not 4-byte aligned slice (views as
    /// f32 need that alignment; the caller copies instead).
    pub fn mapped(bytes: MappedBytes) -> Option<CpuBuffer> {
        let slice: &[u8] = (*bytes).as_ref();
        if slice.is_empty() || !slice.as_ptr().addr().is_multiple_of(4) {
            return None;
        }
        let ptr = NonNull::new(slice.as_ptr().cast_mut())?;
        let len = slice.len();
        Some(CpuBuffer {
            ptr,
            len,
            mapped: Some(bytes),
            borrows: Mutex::new(Vec::new()),
            derived: Mutex::new(Vec::new()),
            writes: AtomicU64::new(0),
        })
    }

    /// Whether the buffer is lent read-only bytes ([`CpuBuffer::mapped`]).
    pub fn is_mapped(&self) -> bool {
        self.mapped.is_some()
    }

    /// A buffer holding `values`.
    pub fn from_f32(values: &[f32]) -> Result<CpuBuffer, BackendError> {
        let buf = CpuBuffer::zeroed(std::mem::size_of_val(values))?;
        buf.upload_f32(0, values)?;
        Ok(buf)
    }

    /// A buffer holding `values` (token ids).
    pub fn from_i32(values: &[i32]) -> Result<CpuBuffer, BackendError> {
        let buf = CpuBuffer::zeroed(std::mem::size_of_val(values))?;
        buf.with_bytes_mut(|b| {
            for (d, v) in b.chunks_exact_mut(4).zip(values) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        })?;
        Ok(buf)
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of whole f32 values the buffer holds.
    pub fn len_f32(&self) -> usize {
        self.len / 4
    }

    /// Copies `src` into the buffer starting at element `offset` (in f32 units).
    pub fn upload_f32(&self, offset: usize, src: &[f32]) -> Result<(), BackendError> {
        self.with_f32_mut(|all| {
            let dst = checked_range_mut(all, offset, src.len(), self.len)?;
            dst.copy_from_slice(src);
            Ok(())
        })?
    }

    /// Copies `dst.len()` values starting at element `offset` (in f32 units) into `dst`.
    pub fn download_f32(&self, offset: usize, dst: &mut [f32]) -> Result<(), BackendError> {
        self.with_f32(|all| {
            let src = checked_range(all, offset, dst.len(), self.len)?;
            dst.copy_from_slice(src);
            Ok(())
        })?
    }

    /// The whole buffer as f32 values, read-only, without copying.
    pub fn with_f32<R>(&self, f: impl FnOnce(&[f32]) -> R) -> Result<R, BackendError> {
        let _guard = self.lock(false)?;
        // SAFETY: the read borrow excludes writers; the allocation is 64-aligned,
        // initialised (zero-filled at birth) and every bit pattern is a valid f32.
        let s = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr() as *const f32, self.len / 4) };
        Ok(f(s))
    }

    /// The whole buffer as mutable f32 values, without copying.
    pub fn with_f32_mut<R>(&self, f: impl FnOnce(&mut [f32]) -> R) -> Result<R, BackendError> {
        let _guard = self.lock(true)?;
        // SAFETY: the write borrow excludes every other access; see `with_f32`.
        let s = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr() as *mut f32, self.len / 4) };
        Ok(f(s))
    }

    /// The raw bytes, read-only.
    pub fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, BackendError> {
        let _guard = self.lock(false)?;
        // SAFETY: see `with_f32`.
        let s = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr() as *const u8, self.len) };
        Ok(f(s))
    }

    /// The raw bytes, mutable.
    pub fn with_bytes_mut<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> Result<R, BackendError> {
        let _guard = self.lock(true)?;
        // SAFETY: see `with_f32_mut`.
        let s = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) };
        Ok(f(s))
    }

    /// The copy of bytes `key.start..key.end` in `key.layout`: the one made before, or
    /// `make(bytes)` now (kept until a write borrow of the buffer ends). `make` runs with
    /// a read borrow of the range and no lock held, so it may use the thread pool; two
    /// threads that ask at once may both make it (one copy is kept).
    pub(crate) fn derived(
        &self,
        key: DerivedKey,
        make: impl FnOnce(&[u8]) -> Result<Vec<u8>, BackendError>,
    ) -> Result<Arc<Vec<u8>>, BackendError> {
        if let Some(d) = self.derived_list().iter().find(|(k, _)| *k == key) {
            return Ok(d.1.clone());
        }
        if key.start > key.end || key.end > self.len {
            return Err(BackendError::OutOfBounds {
                detail: format!("bytes {}..{} of a {}-byte buffer", key.start, key.end, self.len),
            });
        }
        let writes = self.writes.load(Ordering::Acquire);
        let made = {
            let _guard = self.lock_range(key.start..key.end, false)?;
            // SAFETY: the read borrow excludes writers of the range, which lies inside
            // the initialised allocation (checked above).
            let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(key.start), key.end - key.start) };
            Arc::new(make(bytes)?)
        };
        let mut list = self.derived_list();
        if let Some(d) = list.iter().find(|(k, _)| *k == key) {
            return Ok(d.1.clone());
        }
        if self.writes.load(Ordering::Acquire) == writes {
            list.push((key, made.clone()));
        }
        Ok(made)
    }

    /// The derived copies; as with `held`, a poisoned lock leaves a consistent list.
    fn derived_list(&self) -> MutexGuard<'_, Vec<(DerivedKey, Arc<Vec<u8>>)>> {
        self.derived.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Base address, for [`crate::views`] which builds checked slices under a [`Borrow`].
    pub(crate) fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Takes a read (`write = false`) or write borrow of the whole buffer, or fails if
    /// another thread holds a conflicting one.
    pub(crate) fn lock(&self, write: bool) -> Result<Borrow<'_>, BackendError> {
        self.lock_range(0..self.len, write)
    }

    /// Takes a read or write borrow of bytes `range`, or fails if another thread holds
    /// a conflicting borrow (one that overlaps it, either of them writing).
    pub(crate) fn lock_range(&self, range: Range<usize>, write: bool) -> Result<Borrow<'_>, BackendError> {
        if write && self.mapped.is_some() && range.start < range.end {
            return Err(BackendError::Device(format!(
                "bytes {range:?} of a read-only mapped CpuBuffer of {} bytes were to be written",
                self.len
            )));
        }
        let held = Held {
            start: range.start,
            end: range.end,
            write,
        };
        let mut borrows = self.held();
        if held.start < held.end {
            if borrows.iter().any(|h| h.conflicts(&held)) {
                return Err(busy(self.len, range));
            }
            borrows.push(held);
        }
        Ok(Borrow { buf: self, held })
    }

    /// The live borrows. A poisoned lock only means a thread panicked between pushing and
    /// removing an entry (neither touches the bytes), so the list is still right.
    fn held(&self) -> MutexGuard<'_, Vec<Held>> {
        self.borrows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn busy(len: usize, range: Range<usize>) -> BackendError {
    BackendError::Device(format!(
        "bytes {range:?} of a CpuBuffer of {len} bytes are used by two threads at once with at \
         least one writer; give each thread its own buffers or rows, or serialise the calls"
    ))
}

fn checked_range(all: &[f32], offset: usize, n: usize, bytes: usize) -> Result<&[f32], BackendError> {
    offset
        .checked_add(n)
        .and_then(|end| all.get(offset..end))
        .ok_or_else(|| BackendError::OutOfBounds {
            detail: format!("{n} f32 at element {offset} of a {bytes}-byte buffer"),
        })
}

fn checked_range_mut(all: &mut [f32], offset: usize, n: usize, bytes: usize) -> Result<&mut [f32], BackendError> {
    offset
        .checked_add(n)
        .and_then(|end| all.get_mut(offset..end))
        .ok_or_else(|| BackendError::OutOfBounds {
            detail: format!("{n} f32 at element {offset} of a {bytes}-byte buffer"),
        })
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        if self.len > 0
            && self.mapped.is_none()
            && let Ok(layout) = Layout::from_size_align(self.len, ALIGN)
        {
            // SAFETY: allocated in `zeroed` with this very layout; `&mut self` proves
            // no borrow is alive.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

/// A held read or write borrow of bytes of a [`CpuBuffer`]; released on drop.
pub(crate) struct Borrow<'a> {
    buf: &'a CpuBuffer,
    held: Held,
}

impl Drop for Borrow<'_> {
    fn drop(&mut self) {
        if self.held.start >= self.held.end {
            return;
        }
        {
            let mut borrows = self.buf.held();
            if let Some(i) = borrows.iter().position(|h| *h == self.held) {
                borrows.swap_remove(i);
            }
        }
        if self.held.write {
            // The bytes may have changed: no copy made from them before stays.
            let mut derived = self.buf.derived_list();
            self.buf.writes.fetch_add(1, Ordering::AcqRel);
            derived.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_buffers_read_in_place_and_refuse_writes() {
        let owner: MappedBytes = Arc::new(vec![1u8, 2, 3, 4, 5, 6, 7, 8]);
        let at = (*owner).as_ref().as_ptr();
        let buf = CpuBuffer::mapped(owner.clone()).expect("aligned vec");
        assert!(buf.is_mapped());
        assert_eq!(buf.len(), 8);
        buf.with_bytes(|b| {
            assert_eq!(b.as_ptr(), at, "no copy");
            assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8]);
        })
        .unwrap();
        assert!(buf.with_bytes_mut(|_| ()).is_err());
        assert!(buf.upload_f32(0, &[1.0]).is_err());
        drop(buf);
        // The owner outlives the buffer and was never freed by it.
        assert_eq!((*owner).as_ref(), [1, 2, 3, 4, 5, 6, 7, 8]);
        let empty: MappedBytes = Arc::new(Vec::<u8>::new());
        assert!(CpuBuffer::mapped(empty).is_none());
    }

    #[test]
    fn derived_copies_are_made_once_and_dropped_by_writes() {
        let b = CpuBuffer::zeroed(16).unwrap();
        b.with_bytes_mut(|s| s[4] = 7).unwrap();
        let key = DerivedKey {
            start: 4,
            end: 8,
            layout: 1,
        };
        let made = std::sync::atomic::AtomicUsize::new(0);
        let make = |bytes: &[u8]| {
            made.fetch_add(1, Ordering::Relaxed);
            Ok(bytes.iter().rev().copied().collect())
        };
        assert_eq!(*b.derived(key, make).unwrap(), [0, 0, 0, 7]);
        assert_eq!(*b.derived(key, make).unwrap(), [0, 0, 0, 7]);
        assert_eq!(made.load(Ordering::Relaxed), 1, "kept after the first");
        // Another layout of the same range is its own copy.
        let other = DerivedKey { layout: 2, ..key };
        assert_eq!(*b.derived(other, make).unwrap(), [0, 0, 0, 7]);
        assert_eq!(made.load(Ordering::Relaxed), 2);
        // A write anywhere in the buffer drops them.
        b.with_bytes_mut(|s| s[5] = 9).unwrap();
        assert_eq!(*b.derived(key, make).unwrap(), [0, 0, 9, 7]);
        assert_eq!(made.load(Ordering::Relaxed), 3);
        // Out of range, or while a writer holds the range: an error, nothing kept.
        let outside = DerivedKey { end: 17, ..key };
        assert!(b.derived(outside, make).is_err());
        let w = b.lock_range(6..7, true).unwrap();
        assert!(b.derived(DerivedKey { layout: 3, ..key }, make).is_err());
        drop(w);
        assert_eq!(made.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn allocations_are_aligned_and_zeroed() {
        for bytes in [0, 4, 100, 4096 + 12] {
            let b = CpuBuffer::zeroed(bytes).unwrap();
            assert_eq!(b.base() as usize % ALIGN, 0);
            b.with_bytes(|s| assert!(s.iter().all(|&x| x == 0))).unwrap();
            assert_eq!(b.len(), bytes);
        }
    }

    #[test]
    fn typed_upload_and_download_round_trip_and_check_ranges() {
        let b = CpuBuffer::zeroed(40).unwrap();
        b.upload_f32(3, &[1.5, -2.0]).unwrap();
        let mut out = [0.0; 4];
        b.download_f32(2, &mut out).unwrap();
        assert_eq!(out, [0.0, 1.5, -2.0, 0.0]);
        assert!(matches!(
            b.upload_f32(9, &[1.0, 2.0]),
            Err(BackendError::OutOfBounds { .. })
        ));
        assert!(matches!(
            b.download_f32(usize::MAX, &mut out),
            Err(BackendError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn a_writer_excludes_readers_and_other_writers() {
        let b = CpuBuffer::zeroed(16).unwrap();
        let w = b.lock(true).unwrap();
        assert!(b.lock(false).is_err());
        assert!(b.lock(true).is_err());
        drop(w);
        let r1 = b.lock(false).unwrap();
        let r2 = b.lock(false).unwrap();
        assert!(b.lock(true).is_err());
        drop((r1, r2));
        assert!(b.lock(true).is_ok());
    }

    #[test]
    fn disjoint_ranges_are_borrowed_side_by_side_and_overlapping_ones_are_refused() {
        let b = CpuBuffer::zeroed(64).unwrap();
        let low = b.lock_range(0..32, true).unwrap();
        let high = b.lock_range(32..64, true).unwrap();
        assert!(b.lock_range(16..48, false).is_err());
        assert!(b.lock(false).is_err());
        drop(low);
        let read = b.lock_range(0..16, false).unwrap();
        let read_again = b.lock_range(8..24, false).unwrap();
        assert!(b.lock_range(20..21, true).is_err());
        assert!(b.lock_range(16..32, false).is_ok());
        drop((read, read_again, high));
        assert!(b.lock(true).is_ok());
        // An empty range touches no byte.
        let w = b.lock(true).unwrap();
        assert!(b.lock_range(10..10, true).is_ok());
        drop(w);
    }
}
