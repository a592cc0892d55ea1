//! Embedding lookup `out[i, :] = table[ids[i], :]` and its backward, the scatter-add
//! `dtable[ids[i], :] += dy[i, :]`. Ids come from outside and are checked before any
//! work. The backward splits the vocabulary between threads (each adds the rows of its
//! own range, in id order), so it needs no atomics and its sums do not depend on threads.

use r1_core::BackendError;
use r1_core::quant::{self, GgmlType};

use super::{Ctx, check_ids, size_error};

/// `out[i, :] = table[ids[i], :]` for a table of rows of `hidden`.
pub(crate) fn embedding(
    ctx: Ctx<'_>,
    hidden: usize,
    table: &[f32],
    ids: &[i32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    if hidden == 0 || !table.len().is_multiple_of(hidden) || out.len() != ids.len() * hidden {
        return Err(size_error(
            "embedding",
            format!(
                "table of {} in rows of {hidden}, {} ids, output {}",
                table.len(),
                ids.len(),
                out.len()
            ),
        ));
    }
    let vocab = table.len() / hidden;
    check_ids("embedding", ids, vocab, false)?;
    ctx.threads.for_rows(out, hidden, hidden, |r0, o| {
        for (row, &id) in o.chunks_exact_mut(hidden).zip(&ids[r0..]) {
            let id = id as usize;
            row.copy_from_slice(&table[id * hidden..(id + 1) * hidden]);
        }
    });
    Ok(())
}

/// [`embedding`] over a table stored as `ty` (f16, bf16, a GGML block format of
/// whole-block rows; `table` its raw bytes): each picked row is widened with core's
/// reference dequantizer, so a row equals `quant::dequantize` of it exactly.
pub(crate) fn embedding_typed(
    ctx: Ctx<'_>,
    ty: GgmlType,
    hidden: usize,
    table: &[u8],
    ids: &[i32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let row_bytes = ty.row_bytes(hidden as u64).ok().filter(|&b| b > 0);
    let Some(row_bytes) = row_bytes.filter(|&b| table.len().is_multiple_of(b) && out.len() == ids.len() * hidden)
    else {
        return Err(size_error(
            "embedding",
            format!(
                "{} table of {} bytes in rows of {hidden}, {} ids, output {}",
                ty.name(),
                table.len(),
                ids.len(),
                out.len()
            ),
        ));
    };
    let vocab = table.len() / row_bytes;
    check_ids("embedding", ids, vocab, false)?;
    let failed = std::sync::atomic::AtomicBool::new(false);
    ctx.threads.for_rows(out, hidden, hidden, |r0, o| {
        for (row, &id) in o.chunks_exact_mut(hidden).zip(&ids[r0..]) {
            let id = id as usize;
            if quant::dequantize_into(ty, &table[id * row_bytes..(id + 1) * row_bytes], row).is_err() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    if failed.into_inner() {
        return Err(size_error(
            "embedding",
            format!("{} rows of {hidden} do not dequantize", ty.name()),
        ));
    }
    Ok(())
}

/// `out[v, :] = Σ_{i: ids[i] = v} dy[i, :]` over a `[vocab, hidden]` output.
pub(crate) fn embedding_backward(
    ctx: Ctx<'_>,
    hidden: usize,
    ids: &[i32],
    dy: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    if hidden == 0 || !out.len().is_multiple_of(hidden) || dy.len() != ids.len() * hidden {
        return Err(size_error(
            "embedding_backward",
            format!(
                "{} ids, dy of {}, output {} in rows of {hidden}",
                ids.len(),
                dy.len(),
                out.len()
            ),
        ));
    }
    let vocab = out.len() / hidden;
    check_ids("embedding_backward", ids, vocab, false)?;
    ctx.threads
        .for_rows(out, hidden, 1 + ids.len() * hidden / vocab.max(1), |v0, o| {
            o.fill(0.0);
            let v1 = v0 + o.len() / hidden;
            for (i, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if (v0..v1).contains(&id) {
                    let dst = &mut o[(id - v0) * hidden..(id - v0 + 1) * hidden];
                    for (d, g) in dst.iter_mut().zip(&dy[i * hidden..(i + 1) * hidden]) {
                        *d += g;
                    }
                }
            }
        });
    Ok(())
}
