//! Checked access to the tensors of one kernel call. [`with_views`] borrows each
//! tensor's bytes (for writing when it is written), checks every tensor's byte range
//! against its buffer and its alignment, refuses a written range that overlaps any other
//! range, and only then hands the kernel plain slices. This is the one place where the
//! `Backend` trait's `&Buffer` writes become `&mut [f32]`. Stored tensors that are not
//! f32 (bf16, f16, block-quantized weights and KV caches) are read as their raw bytes
//! ([`Views::bytes`]); a typed KV cache is written as its raw bytes
//! ([`Views::bytes_mut`], by `kv_write` alone); everything else written is f32.

use r1_core::{BackendError, DType, TensorRef};

use crate::buffer::{Borrow, CpuBuffer};

/// How a kernel uses a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

enum View<'a> {
    F32(&'a [f32]),
    I32(&'a [i32]),
    F32Mut(&'a mut [f32]),
    /// The raw little-endian bytes of a bf16, f16 or block-quantized tensor.
    Bytes(&'a [u8]),
    /// The same, written (a typed KV cache being appended to).
    BytesMut(&'a mut [u8]),
    Taken,
}

/// The slices of one kernel call, in the order they were requested.
pub(crate) struct Views<'a> {
    op: &'static str,
    views: Vec<View<'a>>,
}

impl<'a> Views<'a> {
    /// Tensor `i`, read as f32.
    pub(crate) fn f32(&self, i: usize) -> Result<&'a [f32], BackendError> {
        match self.views.get(i) {
            Some(View::F32(s)) => Ok(s),
            _ => Err(self.wrong(i, "a read-only f32 tensor")),
        }
    }

    /// Tensor `i`, read as i32 ids.
    pub(crate) fn i32(&self, i: usize) -> Result<&'a [i32], BackendError> {
        match self.views.get(i) {
            Some(View::I32(s)) => Ok(s),
            _ => Err(self.wrong(i, "an i32 tensor")),
        }
    }

    /// Tensor `i` as its raw bytes: a read-only bf16, f16 or block-quantized tensor
    /// (exactly `TensorDesc::bytes` of them).
    pub(crate) fn bytes(&self, i: usize) -> Result<&'a [u8], BackendError> {
        match self.views.get(i) {
            Some(View::Bytes(s)) => Ok(s),
            _ => Err(self.wrong(i, "a read-only bf16, f16 or block-quantized tensor")),
        }
    }

    /// Tensor `i` as its raw bytes, written (once: the slice moves out): a bf16, f16 or
    /// block-quantized tensor.
    pub(crate) fn bytes_mut(&mut self, i: usize) -> Result<&'a mut [u8], BackendError> {
        match self.views.get_mut(i).map(|v| std::mem::replace(v, View::Taken)) {
            Some(View::BytesMut(s)) => Ok(s),
            _ => Err(self.wrong(i, "a written bf16, f16 or block-quantized tensor")),
        }
    }

    /// Tensor `i`, written as f32 (once: the slice moves out).
    pub(crate) fn f32_mut(&mut self, i: usize) -> Result<&'a mut [f32], BackendError> {
        match self.views.get_mut(i).map(|v| std::mem::replace(v, View::Taken)) {
            Some(View::F32Mut(s)) => Ok(s),
            _ => Err(self.wrong(i, "a written f32 tensor")),
        }
    }

    fn wrong(&self, i: usize, what: &str) -> BackendError {
        let is = match self.views.get(i) {
            Some(View::Bytes(_) | View::BytesMut(_)) => {
                ", not bf16/f16/block-quantized (kernels compute on f32, ids i32)"
            }
            _ => "",
        };
        BackendError::Unsupported {
            op: self.op,
            detail: format!("operand {i} must be {what}{is}"),
        }
    }
}

/// Borrows the buffers of `tensors`, checks their ranges, and runs `f` on the slices.
pub(crate) fn with_views<R>(
    op: &'static str,
    tensors: &[(TensorRef<'_, CpuBuffer>, Access)],
    f: impl FnOnce(Views<'_>) -> Result<R, BackendError>,
) -> Result<R, BackendError> {
    // Byte ranges, checked against their buffers.
    let mut ranges = Vec::with_capacity(tensors.len());
    for (i, (t, access)) in tensors.iter().enumerate() {
        // Non-f32 tensors are read (and a typed KV cache written) as bytes by the kernels
        // that take them (a quantized matmul, kv_write, attention); every other kernel
        // asks for f32 and gets `Unsupported` naming the type. Ids are never written.
        if *access == Access::Write && t.desc.dtype == DType::I32 {
            return Err(BackendError::Unsupported {
                op,
                detail: format!(
                    "operand {i} is {} {}; kernels do not write ids",
                    t.desc.dtype, t.desc.shape
                ),
            });
        }
        if !t.desc.rows_are_whole_blocks() {
            return Err(BackendError::OutOfBounds {
                detail: format!(
                    "{op}: operand {i} ({} {}) has rows that are not whole blocks",
                    t.desc.dtype, t.desc.shape
                ),
            });
        }
        let end = t.offset.checked_add(t.desc.bytes());
        if end.is_none_or(|e| e > t.buffer.len()) {
            return Err(BackendError::OutOfBounds {
                detail: format!(
                    "{op}: operand {i} ({} {}, {} bytes at byte {}) lies outside its {}-byte buffer",
                    t.desc.dtype,
                    t.desc.shape,
                    t.desc.bytes(),
                    t.offset,
                    t.buffer.len()
                ),
            });
        }
        if matches!(t.desc.dtype, DType::F32 | DType::I32) && t.offset % 4 != 0 {
            return Err(BackendError::OutOfBounds {
                detail: format!("{op}: operand {i} starts at byte {}, not a multiple of 4", t.offset),
            });
        }
        ranges.push(t.offset..t.offset + t.desc.bytes());
    }
    // A written range may share its buffer with other tensors but no byte with them.
    for i in 0..tensors.len() {
        for j in i + 1..tensors.len() {
            let (a, b) = (&tensors[i], &tensors[j]);
            let written = a.1 == Access::Write || b.1 == Access::Write;
            let overlap = ranges[i].start < ranges[j].end && ranges[j].start < ranges[i].end;
            if written && overlap && std::ptr::eq(a.0.buffer, b.0.buffer) {
                return Err(BackendError::OutOfBounds {
                    detail: format!(
                        "{op}: operands {i} (bytes {:?}) and {j} (bytes {:?}) overlap and one is written",
                        ranges[i], ranges[j]
                    ),
                });
            }
        }
    }
    // One borrow per tensor, of its own bytes: other threads may use the rest of a
    // buffer meanwhile (other rows of one KV cache, say).
    let mut borrows: Vec<Borrow<'_>> = Vec::with_capacity(tensors.len());
    for ((t, access), range) in tensors.iter().zip(&ranges) {
        borrows.push(t.buffer.lock_range(range.clone(), *access == Access::Write)?);
    }
    let mut views = Vec::with_capacity(tensors.len());
    for ((t, access), range) in tensors.iter().zip(&ranges) {
        let n = t.desc.numel();
        // SAFETY (all five arms): `range` lies inside the buffer's allocation (checked
        // above); the allocation is 64-aligned and, for f32/i32, `range.start` is a multiple
        // of 4, so the pointer is aligned for f32/i32 (bytes need no alignment; ids are
        // never written); the bytes are initialised (zero-filled at birth)
        // and every bit pattern is a valid f32/i32/u8; the borrows taken above keep every
        // other thread off these bytes (off written ones entirely), and within this call a written range overlaps no other range, so
        // no `&mut` aliases another reference. The slices live only inside `f`, while
        // `borrows` is held.
        let p = unsafe { t.buffer.base().add(range.start) };
        views.push(match (access, t.desc.dtype) {
            (Access::Write, DType::F32) => View::F32Mut(unsafe { std::slice::from_raw_parts_mut(p as *mut f32, n) }),
            (Access::Write, _) => View::BytesMut(unsafe { std::slice::from_raw_parts_mut(p, range.len()) }),
            (Access::Read, DType::I32) => View::I32(unsafe { std::slice::from_raw_parts(p as *const i32, n) }),
            (Access::Read, DType::F32) => View::F32(unsafe { std::slice::from_raw_parts(p as *const f32, n) }),
            (Access::Read, _) => View::Bytes(unsafe { std::slice::from_raw_parts(p as *const u8, range.len()) }),
        });
    }
    let result = f(Views { op, views });
    drop(borrows);
    result
}

#[cfg(target_endian = "big")]
compile_error!("r1-backend-cpu reads i32/f32 buffers in place and assumes a little-endian host");
