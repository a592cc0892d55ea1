//! `KvWrite`: appends new key/value rows to a KV cache in place,
//! `cache[b, pos + t, :] = new[b, t, :]`. The output *is* the cache; rows outside
//! `pos .. pos + T` are left as they are.

use r1_core::BackendError;

use super::{Past, size_error};

/// Geometry of one write: `batch` sequences, `capacity` cache rows, `time` new rows, of
/// `row` values each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KvGeometry {
    pub batch: usize,
    pub capacity: usize,
    pub time: usize,
    pub row: usize,
}

/// Writes `new [B, T, D]` into `cache [B, S, D]`, sequence `b` at time `past.of(b)`.
pub(crate) fn kv_write(g: KvGeometry, past: Past<'_>, new: &[f32], cache: &mut [f32]) -> Result<(), BackendError> {
    let pos = past.max();
    let fits = cache.len() == g.batch * g.capacity * g.row
        && new.len() == g.batch * g.time * g.row
        && pos.checked_add(g.time).is_some_and(|end| end <= g.capacity);
    if !fits {
        return Err(size_error(
            "kv_write",
            format!(
                "{} new rows at position {pos} into a cache of {} rows ({} sequences, rows of {})",
                g.time, g.capacity, g.batch, g.row
            ),
        ));
    }
    let chunk = g.time * g.row;
    for b in 0..g.batch {
        let at = (b * g.capacity + past.of(b)) * g.row;
        cache[at..at + chunk].copy_from_slice(&new[b * chunk..(b + 1) * chunk]);
    }
    Ok(())
}
