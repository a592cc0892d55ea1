//! The KV cache: `KvWrite` appends new key/value rows in place,
//! `cache[b, pos + t, :] = new[b, t, :]` (the output *is* the cache; rows outside
//! `pos .. pos + T` are left as they are), and [`rows_f32`] reads a cache's rows in use
//! back as f32 for attention.
//!
//! A cache stored in another type than f32 (f16, bf16, GGML Q8_0/Q4_0) gets each new row
//! converted block by block by core's quantizer (`quant::quantize_into`: ggml's
//! `quantize_row_*_ref`, round-to-nearest-even for f16/bf16) and is read back by core's
//! dequantizer, so a typed cache holds exactly what ggml's reference would write, and
//! attention over it is attention over those values dequantized.

use r1_core::BackendError;
use r1_core::quant::{self, GgmlType};

use super::{Ctx, Past, size_error};

/// Geometry of one write: `batch` sequences, `capacity` cache rows, `time` new rows, of
/// `row` values each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KvGeometry {
    pub batch: usize,
    pub capacity: usize,
    pub time: usize,
    pub row: usize,
}

impl KvGeometry {
    /// Checks that `time` rows at `past` fit the cache and that `new` and the cache (of
    /// `cache_rows_bytes` bytes per row) have the geometry's sizes.
    fn check(&self, past: Past<'_>, new: usize, cache: usize, row_bytes: usize) -> Result<(), BackendError> {
        let pos = past.max();
        let fits = cache == self.batch * self.capacity * row_bytes
            && new == self.batch * self.time * self.row
            && pos.checked_add(self.time).is_some_and(|end| end <= self.capacity);
        if !fits {
            return Err(size_error(
                "kv_write",
                format!(
                    "{} new rows at position {pos} into a cache of {} rows ({} sequences, rows of {})",
                    self.time, self.capacity, self.batch, self.row
                ),
            ));
        }
        Ok(())
    }
}

/// Writes `new [B, T, D]` into the f32 `cache [B, S, D]`, sequence `b` at time `past.of(b)`.
pub(crate) fn kv_write(g: KvGeometry, past: Past<'_>, new: &[f32], cache: &mut [f32]) -> Result<(), BackendError> {
    g.check(past, new.len(), cache.len(), g.row)?;
    let chunk = g.time * g.row;
    for b in 0..g.batch {
        let at = (b * g.capacity + past.of(b)) * g.row;
        cache[at..at + chunk].copy_from_slice(&new[b * chunk..(b + 1) * chunk]);
    }
    Ok(())
}

/// Writes `new [B, T, D]` (f32) into `cache [B, S, D]` stored as `ty` (its raw bytes),
/// each row quantized on its own, sequence `b` at time `past.of(b)`.
pub(crate) fn kv_write_typed(
    g: KvGeometry,
    past: Past<'_>,
    ty: GgmlType,
    new: &[f32],
    cache: &mut [u8],
) -> Result<(), BackendError> {
    let row_bytes = ty.row_bytes(g.row as u64).map_err(|e| size_error("kv_write", e))?;
    g.check(past, new.len(), cache.len(), row_bytes)?;
    for b in 0..g.batch {
        for t in 0..g.time {
            let src = &new[(b * g.time + t) * g.row..][..g.row];
            let at = (b * g.capacity + past.of(b) + t) * row_bytes;
            quant::quantize_into(ty, src, &mut cache[at..at + row_bytes]).map_err(|e| size_error("kv_write", e))?;
        }
    }
    Ok(())
}

/// A KV cache's bytes as a kernel sees them: f32 values, or the raw bytes of another type.
#[derive(Clone, Copy)]
pub(crate) enum Stored<'a> {
    F32(&'a [f32]),
    Typed(GgmlType, &'a [u8]),
}

impl Stored<'_> {
    fn ty(&self) -> GgmlType {
        match self {
            Stored::F32(_) => GgmlType::F32,
            Stored::Typed(ty, _) => *ty,
        }
    }

    /// Elements the cache holds, `None` when its bytes are not whole rows of `row`.
    fn rows(&self, row: usize) -> Option<usize> {
        match self {
            Stored::F32(v) => v.len().checked_div(row),
            Stored::Typed(ty, b) => b.len().checked_div(ty.row_bytes(row as u64).ok()?),
        }
    }

    /// Row `r` (of `row` values) converted to f32 into `dst`.
    fn row_into(&self, r: usize, dst: &mut [f32]) -> bool {
        let row = dst.len();
        match self {
            Stored::F32(v) => {
                dst.copy_from_slice(&v[r * row..(r + 1) * row]);
                true
            }
            Stored::Typed(ty, b) => {
                let Ok(rb) = ty.row_bytes(row as u64) else {
                    return false;
                };
                quant::dequantize_into(*ty, &b[r * rb..(r + 1) * rb], dst).is_ok()
            }
        }
    }
}

/// The first `used[b]` rows of each sequence of `cache [B, S, D]`, as f32, into
/// `out [B, U, D]` (`U` = the largest `used[b]`; rows past a sequence's `used[b]` are
/// left as they are: attention never reads them).
pub(crate) fn rows_f32(
    ctx: Ctx<'_>,
    cache: Stored<'_>,
    (batch, capacity, row): (usize, usize, usize),
    used: &[usize],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let rows = used.iter().copied().max().unwrap_or(0);
    let fits = used.len() == batch
        && rows <= capacity
        && cache.rows(row) == Some(batch * capacity)
        && out.len() == batch * rows * row;
    if !fits {
        return Err(size_error(
            "attention",
            format!(
                "a {} cache read as {batch} sequences × {rows} of {capacity} rows of {row} values into {} values",
                cache.ty(),
                out.len()
            ),
        ));
    }
    if rows == 0 || row == 0 {
        return Ok(());
    }
    let failed = std::sync::atomic::AtomicBool::new(false);
    ctx.threads.for_rows(out, row, 4 * row, |first, chunk| {
        for (i, dst) in chunk.chunks_exact_mut(row).enumerate() {
            let (b, j) = ((first + i) / rows, (first + i) % rows);
            if j < used[b] && !cache.row_into(b * capacity + j, dst) {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    if failed.into_inner() {
        return Err(size_error(
            "attention",
            format!("{} cache rows of {row} values", cache.ty()),
        ));
    }
    Ok(())
}
