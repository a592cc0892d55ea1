//! `MatMul` with a weight that is not f32: `out = a · wᵀ` for `a [.., M, K]` f32 and a
//! stored weight `w [N, K]` (row-major, HF/GGUF layout) of type Q8_0, Q4_0, Q5_0, Q4_K,
//! Q6_K, f16 or bf16, as llama.cpp computes it:
//!
//! - block-quantized weights: each row of `a` is quantized once per call to the weight's
//!   `vec_dot_type` (Q8_0 for Q8_0/Q4_0/Q5_0, Q8_K for Q4_K/Q6_K) with core's reference
//!   quantizer (bit-exact with ggml's `quantize_row_*_ref`); every output element is the
//!   integer block dot product of a weight row with a quantized activation row, scaled
//!   and summed in f32 exactly as `r1_core::quant::vec_dot` (ggml's scalar
//!   `ggml_vec_dot_*_generic`) does. Q8_0, Q4_0 and Q5_0 take the integer block sums from
//!   [`IntIsa`] (AVX2 or AVX-512 VNNI, else scalar) for eight weight rows at a time:
//!   one activation row (decode) reduces eight rows' lane vectors per block, reading the
//!   weights once with the next groups prefetched; from four activation rows on (prefill)
//!   with VNNI, the group's levels are decoded once into an interleaved copy (one row per
//!   32-bit lane) and `dpbusd` sums them against broadcast activations with no reduction.
//!   The per-block f32 terms follow in ggml's order, unfused, so every path gives the
//!   same bits as `quant::vec_dot`. Where [`packed16`] runs (AVX-512 VNNI, or AVX2 with
//!   F16C) and N is a multiple of 16, the weight is packed sixteen rows at a time on
//!   first use and every product (decode included) goes through that copy instead.
//!   Q4_K and Q6_K do the same with [`IntIsa`]'s per-block lanes (AVX2 on both x86
//!   levels: ggml's eight lanes by element index mod 8 kept apart, the activations
//!   reordered once per row so that `maddubs` adds within a lane).
//! - bf16 weights take bf16 activations, as in llama.cpp: each activation is rounded to
//!   bf16 once per call (ggml's `fp32_to_bf16`), and every product of two bf16 values is
//!   exact in f32, so only the order of the f32 sums depends on the CPU. With AVX-512 BF16
//!   the weight rows are read as stored and `vdpbf16ps` takes 32 products at a time
//!   ([`Bf16Dot`]); other CPUs widen the rounded activations back to f32 and take the f16
//!   path below.
//! - f16 weights (and bf16 without AVX-512 BF16): each weight row is converted to f32 once
//!   per call (f16 with F16C where the CPU has it) and dotted with every activation row by
//!   `math::dot`; past `gemm::SMALL_M_DOT` activation rows, chunks of converted rows go
//!   through the f32 GEMM instead (an f16 weight's activations are not rounded).
//!
//! Threads split the N output columns (weight rows) into tiles, so one activation row (a
//! decode step) uses every core; each output element is computed alone, so the result
//! does not depend on the thread count or the tiling.

use r1_core::quant::{self, GgmlType, QK_K, float, q8_0};
use r1_core::{BackendError, DType, Shape};

use super::{Ctx, gemm, size_error};
use crate::buffer::{CpuBuffer, DerivedKey};
use crate::simd::bf16_dot::Bf16Dot;
use crate::simd::int8::{self, IntIsa, Q4kMeta, Q6kWideBlock, Q8_K_BYTES, Q8Weight};
use crate::simd::packed16::{self, PackedActivation};
use crate::simd::{Isa, Simd, SimdTask, half, math};

/// Elements per Q8_0 block (also Q4_0's and Q5_0's).
const QK: usize = q8_0::BLOCK;

/// Weight rows per tile at least (below it, the hand-off costs more than the tile).
const MIN_TILE_COLS: usize = 16;

/// The weight type of a `b` operand this kernel takes, `None` for any other dtype (f32
/// goes to the f32 GEMM).
pub(crate) fn weight_type(dtype: DType) -> Option<GgmlType> {
    GgmlType::from_dtype(dtype).filter(|t| {
        matches!(
            t,
            GgmlType::Q8_0
                | GgmlType::Q4_0
                | GgmlType::Q5_0
                | GgmlType::Q4_K
                | GgmlType::Q6_K
                | GgmlType::F16
                | GgmlType::BF16
        )
    })
}

/// The bytes of one group of sixteen `ty` rows of `k` elements packed for [`matmul`]
/// ([`packed16`]) and the layout tag its copy is kept under: `None` for a type without
/// a packed kernel or rows that are not whole blocks.
fn packed_group(ty: GgmlType, k: usize) -> Option<(usize, u64)> {
    let (group, tag) = match (q8_weight(ty), ty) {
        (Some(kind), _) if k.is_multiple_of(QK) => (packed16::group_bytes(kind, k / QK), kind as u64),
        (None, GgmlType::Q4_K) if k.is_multiple_of(QK_K) => (packed16::q4k_group_bytes(k / QK_K), 3),
        (None, GgmlType::Q6_K) if k.is_multiple_of(QK_K) => (packed16::q6k_group_bytes(k / QK_K), 4),
        _ => return None,
    };
    Some((group, (k as u64) << 8 | tag))
}

/// The weight `w [N, K]` of type `ty` (bytes `offset..` of `buffer`) packed sixteen rows
/// at a time for [`matmul`] by `a` (`sa`), where that kernel exists here (AVX-512 VNNI or AVX2 with F16C;
/// Q8_0, Q4_0, Q5_0, Q4_K; Q6_K from [`Q6K_PACKED_MIN_ROWS`] rows of `a`; `N` a multiple
/// of 16): made once, over the thread pool, and kept beside the buffer until it is
/// written ([`CpuBuffer::derived`]). The copy takes as many bytes as the weight (Q4_K:
/// 148 per row and block against 144, its six-bit scales unpacked; Q6_K 322 against 210,
/// its levels widened to bytes).
pub(crate) fn packed_weight(
    ctx: Ctx<'_>,
    ty: GgmlType,
    buffer: &CpuBuffer,
    offset: usize,
    sb: &Shape,
    sa: &Shape,
) -> Result<Option<std::sync::Arc<Vec<u8>>>, BackendError> {
    let int = IntIsa::for_isa(ctx.isa);
    let kind = q8_weight(ty);
    // Q6_K packs wider than it is stored: for products of several rows only (prefill),
    // which compute on it; decode streams the stored bytes.
    let rows = sa.dims().iter().rev().skip(1).product::<usize>();
    if !packed16::available(int) || sb.rank() != 2 || (ty == GgmlType::Q6_K && rows < Q6K_PACKED_MIN_ROWS) {
        return Ok(None);
    }
    let (n, k) = (sb.dims()[0], sb.dims()[1]);
    let Some((group, layout)) = packed_group(ty, k).filter(|_| n > 0 && n.is_multiple_of(packed16::ROWS)) else {
        return Ok(None);
    };
    let row_bytes = ty.row_bytes(k as u64).map_err(|e| size_error("matmul", e))?;
    let nb = k / if kind.is_some() { QK } else { QK_K };
    let key = DerivedKey {
        start: offset,
        end: offset.saturating_add(n.saturating_mul(row_bytes)),
        layout,
    };
    buffer
        .derived(key, |w| {
            let mut packed = vec![0u8; n / packed16::ROWS * group];
            ctx.threads.for_rows(&mut packed, group, group, |g0, dst| {
                for (g, d) in dst.chunks_exact_mut(group).enumerate() {
                    let rows = &w[(g0 + g) * packed16::ROWS * row_bytes..(g0 + g + 1) * packed16::ROWS * row_bytes];
                    match kind {
                        Some(kind) => packed16::pack(kind, rows, row_bytes, nb, d),
                        None if ty == GgmlType::Q4_K => packed16::pack_q4k(rows, row_bytes, nb, d),
                        None => packed16::pack_q6k(rows, row_bytes, nb, d),
                    }
                }
            });
            Ok(packed)
        })
        .map(Some)
}

/// `out [.., M, N] = a [.., M, K] · w [N, K]ᵀ` with `w` of type `ty` (its raw bytes;
/// `packed` the same weight as [`packed_weight`] made it, where it did).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    ctx: Ctx<'_>,
    ty: GgmlType,
    a: &[f32],
    sa: &Shape,
    w: &[u8],
    packed: Option<&[u8]>,
    sb: &Shape,
    out: &mut [f32],
    so: &Shape,
) -> Result<(), BackendError> {
    let err = || size_error("matmul", format!("{sa} x {sb}ᵀ ({}) -> {so}", ty.name()));
    if sa.rank() < 2 || sb.rank() != 2 {
        return Err(err());
    }
    let (m, k) = (sa.dim_from_end(1), sa.dim_from_end(0));
    let (n, kb) = (sb.dims()[0], sb.dims()[1]);
    let lead = &sa.dims()[..sa.rank() - 2];
    let mut want = lead.to_vec();
    want.extend([m, n]);
    let rows = lead.iter().product::<usize>() * m;
    let row_bytes = ty.row_bytes(k as u64).map_err(|e| size_error("matmul", e))?;
    if k != kb || so.dims() != want.as_slice() || a.len() != rows * k || out.len() != rows * n {
        return Err(err());
    }
    if w.len() != n * row_bytes {
        return Err(size_error(
            "matmul",
            format!(
                "a {} weight {sb} takes {} bytes, got {}",
                ty.name(),
                n * row_bytes,
                w.len()
            ),
        ));
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    // A packed weight is whole groups of sixteen rows ([`packed_group`]).
    let group = packed_group(ty, k).map_or(0, |(group, _)| group);
    let packed = packed.filter(|p| {
        group > 0
            && n.is_multiple_of(packed16::ROWS)
            && p.len() == n / packed16::ROWS * group
            && (ty != GgmlType::Q6_K || rows >= Q6K_PACKED_MIN_ROWS)
    });
    let act = Activations::quantize(ctx, ty, a, rows, k)?;
    // Q4_K and Q6_K through the packed kernels take each activation row reordered once.
    let prepared = |want: GgmlType| match (&act, packed) {
        (Activations::Q8K { bytes, .. }, Some(_)) if ty == want => bytes.chunks_exact(bytes.len() / rows).collect(),
        _ => Vec::new(),
    };
    let q4k_act: Vec<_> = prepared(GgmlType::Q4_K)
        .into_iter()
        .map(|row: &[u8]| packed16::Q4kActivation::new(row.as_chunks().0))
        .collect();
    let q6k_act: Vec<_> = prepared(GgmlType::Q6_K)
        .into_iter()
        .map(|row: &[u8]| packed16::Q6kActivation::new(row.as_chunks().0))
        .collect();
    let int = IntIsa::for_isa(ctx.isa);
    // Q6_K rows streamed as stored (decode) take each activation block laid out once for
    // the AVX-512 per-row kernel, where it runs.
    let q6k_wide: Vec<Q6kWideBlock> = match &act {
        Activations::Q8K { bytes, pairs } if ty == GgmlType::Q6_K && packed.is_none() && int.has_q6_k_row_wide() => {
            bytes
                .as_chunks()
                .0
                .iter()
                .zip(pairs)
                .map(|(a, p)| Q6kWideBlock::new(a, p))
                .collect()
        }
        _ => Vec::new(),
    };
    let tile = |j0: usize, cols: usize, dst: &mut [f32]| -> Result<(), BackendError> {
        let w = &w[j0 * row_bytes..(j0 + cols) * row_bytes];
        let p = packed.map(|p| &p[j0 / packed16::ROWS * group..(j0 + cols) / packed16::ROWS * group]);
        match &act {
            Activations::Q8_0 { qs, d, sum } => {
                // Q8_0 activations are exactly the weights of `q8_weight`.
                let kind = q8_weight(ty).ok_or_else(err)?;
                match p {
                    Some(p) => packed_tile(int, kind, p, k, qs, d, sum, cols, dst).ok_or_else(err)?,
                    None => q8_tile(ctx.isa, kind, w, row_bytes, k, qs, d, sum, cols, dst),
                }
                Ok(())
            }
            Activations::Q8K { bytes, pairs } => {
                match p {
                    Some(p) if !q4k_act.is_empty() => {
                        packed_rows(int, p, group, k / QK_K, &q4k_act, cols, dst).ok_or_else(err)?
                    }
                    Some(p) if !q6k_act.is_empty() => {
                        packed_rows(int, p, group, k / QK_K, &q6k_act, cols, dst).ok_or_else(err)?
                    }
                    _ => kq_tile(int, ty, w, row_bytes, k, (bytes, pairs, &q6k_wide), cols, dst),
                }
                Ok(())
            }
            Activations::Bf16(bits, dot) => {
                dot.products(bits, k, w, cols, dst, super::gemm::prefetches(k.saturating_mul(cols)));
                Ok(())
            }
            Activations::F32 | Activations::RoundedF32(_) => {
                let a = match &act {
                    Activations::RoundedF32(r) => r,
                    _ => a,
                };
                ctx.isa.run(FloatTile {
                    isa: ctx.isa,
                    ty,
                    w,
                    row_bytes,
                    a,
                    k,
                    cols,
                    dst,
                });
                Ok(())
            }
        }
    };
    // Tiles of weight rows, a few per thread; each writes a `rows × cols` block (whole
    // packed groups where the weight is packed).
    let mut cols = n.div_ceil(4 * ctx.threads.count()).max(MIN_TILE_COLS);
    if packed.is_some() {
        cols = cols.next_multiple_of(packed16::ROWS);
    }
    let cols = cols.min(n);
    let tiles = n.div_ceil(cols);
    let results = ctx.threads.map_tasks(tiles, cols * rows * k, |t| {
        let j0 = t * cols;
        let c = cols.min(n - j0);
        let mut dst = vec![0.0f32; rows * c];
        tile(j0, c, &mut dst).map(|()| (j0, c, dst))
    });
    for r in results {
        let (j0, c, dst) = r?;
        for (o, d) in out.chunks_exact_mut(n).zip(dst.chunks_exact(c)) {
            o[j0..j0 + c].copy_from_slice(d);
        }
    }
    Ok(())
}

/// The packed K-quant groups `p` (`group` bytes each, `nb` blocks per row) times every
/// prepared activation row of `acts`, into `dst` (`cols` wide): two activation rows at a
/// time (each block's levels unpacked once for both), then an odd last one. `None` where
/// the kernel is unavailable.
fn packed_rows<A: PackedActivation>(
    int: IntIsa,
    p: &[u8],
    group: usize,
    nb: usize,
    acts: &[A],
    cols: usize,
    dst: &mut [f32],
) -> Option<()> {
    for (gi, g) in p.chunks_exact(group).enumerate() {
        let j = gi * packed16::ROWS;
        let mut put =
            |r: usize, o: &[f32; packed16::ROWS]| dst[r * cols + j..r * cols + j + packed16::ROWS].copy_from_slice(o);
        let mut pairs = acts.chunks_exact(2);
        for (i, two) in pairs.by_ref().enumerate() {
            let [a, b] = A::dot16::<2>(int, g, nb, [&two[0], &two[1]])?;
            put(2 * i, &a);
            put(2 * i + 1, &b);
        }
        if let [last] = pairs.remainder() {
            let [a] = A::dot16::<1>(int, g, nb, [last])?;
            put(acts.len() - 1, &a);
        }
    }
    Some(())
}

/// The activation rows as the weight's dot product wants them.
enum Activations {
    /// Q8_0, unpacked: the quants (`rows·K`), each block's scale as f32 and its quant sum.
    Q8_0 { qs: Vec<i8>, d: Vec<f32>, sum: Vec<i32> },
    /// Q8_K rows as bytes (what `quant::vec_dot` takes), and each block's quants in the
    /// order the K-quant lanes take them (`int8::pair_classes`).
    Q8K { bytes: Vec<u8>, pairs: Vec<[i8; 256]> },
    /// bf16 bits (ggml's rounding), for a bf16 weight on a CPU with AVX-512 BF16.
    Bf16(Vec<u16>, Bf16Dot),
    /// Rounded to bf16 and widened back, for a bf16 weight on other CPUs: the same
    /// products, summed by the f32 kernels.
    RoundedF32(Vec<f32>),
    /// f32, used as given.
    F32,
}

impl Activations {
    /// Quantizes each of the `rows` rows of `a` (in parallel when worth it) to `ty`'s
    /// `vec_dot_type` with core's reference quantizer.
    fn quantize(ctx: Ctx<'_>, ty: GgmlType, a: &[f32], rows: usize, k: usize) -> Result<Activations, BackendError> {
        if ty == GgmlType::BF16 {
            return Ok(Activations::bf16(ctx, a, k));
        }
        let Some(act) = ty.vec_dot_type() else {
            return Ok(Activations::F32);
        };
        let row_bytes = act.row_bytes(k as u64).map_err(|e| size_error("matmul", e))?;
        let quantized = ctx.threads.map_tasks(rows, 8 * k, |r| {
            let mut bytes = vec![0u8; row_bytes];
            quant::quantize_into(act, &a[r * k..(r + 1) * k], &mut bytes).map(|()| bytes)
        });
        let mut all = Vec::with_capacity(rows * row_bytes);
        for q in quantized {
            all.extend(q.map_err(|e| size_error("matmul", e))?);
        }
        if act != GgmlType::Q8_0 {
            let pairs = all.as_chunks::<Q8_K_BYTES>().0.iter().map(int8::pair_classes).collect();
            return Ok(Activations::Q8K { bytes: all, pairs });
        }
        let blocks = all.as_chunks::<{ q8_0::BLOCK_BYTES }>().0;
        let qs = blocks.iter().flat_map(|b| b[2..].iter().map(|&q| q as i8)).collect();
        let d = blocks.iter().map(q8_0::scale).collect();
        let sum = blocks
            .iter()
            .map(|b| b[2..].iter().map(|&q| i32::from(q as i8)).sum())
            .collect();
        Ok(Activations::Q8_0 { qs, d, sum })
    }

    /// `a` rounded to bf16 (ggml's `vec_dot_type` for a bf16 weight), as bits for
    /// [`Bf16Dot`] when the CPU has it and the backend runs AVX-512, else widened back.
    fn bf16(ctx: Ctx<'_>, a: &[f32], k: usize) -> Activations {
        let dot = match ctx.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(_) => Bf16Dot::detect(),
            _ => None,
        };
        match dot {
            Some(dot) => {
                // Vector rounding (the scalar one was a tenth of a bf16 prefill's time).
                let mut bits = vec![0u16; a.len()];
                ctx.threads.for_rows(&mut bits, k.max(1), k, |r0, out| {
                    let start = r0 * k;
                    dot.round(&a[start..start + out.len()], out)
                });
                Activations::Bf16(bits, dot)
            }
            None => Activations::RoundedF32(a.iter().map(|&x| float::bf16_to_f32(float::f32_to_bf16(x))).collect()),
        }
    }
}

/// The weight types whose dot product takes Q8_0 activations.
fn q8_weight(ty: GgmlType) -> Option<Q8Weight> {
    match ty {
        GgmlType::Q8_0 => Some(Q8Weight::Q8_0),
        GgmlType::Q4_0 => Some(Q8Weight::Q4_0),
        GgmlType::Q5_0 => Some(Q8Weight::Q5_0),
        _ => None,
    }
}

/// Activation rows from which a Q6_K weight is packed ([`packed_weight`]): its packed
/// copy is half again as large as the stored one, worth it where it is computed on
/// (prefill), not where it is streamed (decode, continuous batching's few rows).
const Q6K_PACKED_MIN_ROWS: usize = 8;

/// Activation rows [`IntIsa::dot8_rows`] takes at once (from this many rows on, a group's
/// weight levels are decoded once for all of them).
const ROWS_AT_ONCE: usize = 4;

/// Output elements whose f32 sums run side by side: each is one dependent chain of adds
/// (ggml's order), so independent chains hide the add latency.
const CHAINS: usize = 4;

/// Q8_0 / Q4_0 / Q5_0 weight rows packed sixteen at a time (`p`: `cols / 16` groups,
/// [`packed16`]) times every Q8_0 activation row, into `dst [rows, cols]`: four
/// activation rows at a time (the group's levels decoded once for them), then one. The
/// same numbers as [`q8_tile`]. `None` where the packed kernel does not run here.
#[allow(clippy::too_many_arguments)]
fn packed_tile(
    int: IntIsa,
    kind: Q8Weight,
    p: &[u8],
    k: usize,
    qs: &[i8],
    d: &[f32],
    sum: &[i32],
    cols: usize,
    dst: &mut [f32],
) -> Option<()> {
    let nb = k / QK;
    let rows = dst.len() / cols;
    let group = packed16::group_bytes(kind, nb);
    for (gi, g) in p.chunks_exact(group).enumerate() {
        let j = gi * packed16::ROWS;
        let mut put = |r: usize, o: &[f32; packed16::ROWS]| {
            dst[r * cols + j..r * cols + j + packed16::ROWS].copy_from_slice(o);
        };
        let mut r = 0;
        while r + ROWS_AT_ONCE <= rows {
            let out = packed16::dot16::<ROWS_AT_ONCE>(int, kind, g, nb, &qs[r * k..], &sum[r * nb..], &d[r * nb..])?;
            for (i, o) in out.iter().enumerate() {
                put(r + i, o);
            }
            r += ROWS_AT_ONCE;
        }
        while r < rows {
            let out = packed16::dot16::<1>(int, kind, g, nb, &qs[r * k..], &sum[r * nb..], &d[r * nb..])?;
            put(r, &out[0]);
            r += 1;
        }
    }
    Some(())
}

/// Q8_0 / Q4_0 / Q5_0 weight rows `w` (`cols` rows of `row_bytes`) times every Q8_0 activation
/// row, into `dst [rows, cols]`. The f32 scaling is `quant::vec_dot`'s, term by term:
/// eight weight rows at a time in SIMD lanes, the rest as (weight row, activation row)
/// pairs [`CHAINS`] at a time, weight row major.
#[allow(clippy::too_many_arguments)]
fn q8_tile(
    isa: Isa,
    kind: Q8Weight,
    w: &[u8],
    row_bytes: usize,
    k: usize,
    qs: &[i8],
    d: &[f32],
    sum: &[i32],
    cols: usize,
    dst: &mut [f32],
) {
    let int = IntIsa::for_isa(isa);
    let nb = k / QK;
    let rows = dst.len() / cols;
    let block_bytes = kind.block_bytes();
    // Groups of eight weight rows, rows in SIMD lanes (`IntIsa::dot8_q8`); the rest (and
    // everything on the scalar set) pair by pair below.
    let simd_cols = if int.has_dot8() { cols / 8 * 8 } else { 0 };
    let mut dw8 = vec![0.0f32; 8 * nb];
    let mut lv = if rows >= ROWS_AT_ONCE && int.has_dot8_rows() {
        vec![0u8; 256 * nb]
    } else {
        Vec::new()
    };
    for j0 in (0..simd_cols).step_by(8) {
        let w8 = &w[j0 * row_bytes..(j0 + 8) * row_bytes];
        // The bytes two groups on: eight rows side by side are more streams than the
        // hardware prefetcher follows well (decode measured 1.3-1.5× faster with this,
        // two groups ahead a little better than one, four worse).
        let ahead = if j0 == 0 { 8..24 } else { j0 + 16..j0 + 24 };
        if ahead.start < simd_cols {
            crate::simd::prefetch(&w[ahead.start * row_bytes..ahead.end.min(simd_cols) * row_bytes]);
        }
        if !int.scales8(kind, w8, row_bytes, &mut dw8) {
            break;
        }
        // Several activation rows (prefill): the group's levels decoded once, interleaved,
        // and dotted with four rows at a time.
        let mut r = 0;
        if rows >= ROWS_AT_ONCE && int.interleave8(kind, w8, row_bytes, &mut lv) {
            let at = |r: usize| (&qs[r * k..], &sum[r * nb..], &d[r * nb..]);
            let mut out4 = [[0.0f32; 8]; ROWS_AT_ONCE];
            while r + ROWS_AT_ONCE <= rows {
                let (qa, sa, da) = at(r);
                int.dot8_rows(kind, &lv, &dw8, qa, sa, da, &mut out4);
                for (i, o) in out4.iter().enumerate() {
                    dst[(r + i) * cols + j0..(r + i) * cols + j0 + 8].copy_from_slice(o);
                }
                r += ROWS_AT_ONCE;
            }
            let mut out1 = [[0.0f32; 8]; 1];
            while r < rows {
                let (qa, sa, da) = at(r);
                int.dot8_rows(kind, &lv, &dw8, qa, sa, da, &mut out1);
                dst[r * cols + j0..r * cols + j0 + 8].copy_from_slice(&out1[0]);
                r += 1;
            }
        }
        for r in r..rows {
            let (qa, sa, da) = (
                &qs[r * k..(r + 1) * k],
                &sum[r * nb..(r + 1) * nb],
                &d[r * nb..(r + 1) * nb],
            );
            if let Some(out) = int.dot8_q8(kind, w8, row_bytes, qa, sa, &dw8, da) {
                dst[r * cols + j0..r * cols + j0 + 8].copy_from_slice(&out);
            }
        }
    }
    // The remaining rows' scales as f32 (`dw[j·nb + b]` for row `simd_cols + j`; widened
    // with F16C where the CPU has it, exact either way).
    let mut halves = Vec::with_capacity(2 * (cols - simd_cols) * nb);
    for row in w.chunks_exact(row_bytes.max(1)).take(cols).skip(simd_cols) {
        for block in row.chunks_exact(block_bytes).take(nb) {
            halves.extend_from_slice(&block[..2]);
        }
    }
    let mut dw = vec![0.0f32; halves.len() / 2];
    half::f16_to_f32_row(isa, &halves, &mut dw);
    let mut sumi = vec![0i32; CHAINS * nb];
    let pairs = (cols - simd_cols) * rows;
    let mut p0 = 0;
    while p0 < pairs {
        let g = CHAINS.min(pairs - p0);
        let pair = |i: usize| (simd_cols + (p0 + i) / rows, (p0 + i) % rows);
        for (i, s) in sumi.chunks_exact_mut(nb.max(1)).take(g).enumerate() {
            let (j, r) = pair(i);
            let wr = &w[j * row_bytes..(j + 1) * row_bytes];
            let (qa, sa) = (&qs[r * k..(r + 1) * k], &sum[r * nb..(r + 1) * nb]);
            int.block_sums(kind, wr, qa, sa, &mut s[..nb]);
        }
        let mut acc = [0.0f32; CHAINS];
        let scales: [(&[f32], &[f32]); CHAINS] = std::array::from_fn(|i| {
            let (j, r) = pair(i.min(g - 1));
            (
                &dw[(j - simd_cols) * nb..(j - simd_cols + 1) * nb],
                &d[r * nb..(r + 1) * nb],
            )
        });
        for b in 0..nb {
            for (i, a) in acc.iter_mut().enumerate().take(g) {
                let (x, y) = (scales[i].0[b], scales[i].1[b]);
                let s = sumi[i * nb + b] as f32;
                if kind.scales_first() {
                    // ggml_vec_dot_q8_0_q8_0: sumi · (d_w · d_a); q5_0's (d_w · d_a) · sumi.
                    *a += s * (x * y);
                } else {
                    // ggml_vec_dot_q4_0_q8_0: sumi · d_w · d_a, left to right.
                    *a += s * x * y;
                }
            }
        }
        for (i, &a) in acc.iter().enumerate().take(g) {
            let (j, r) = pair(i);
            dst[r * cols + j] = a;
        }
        p0 += g;
    }
}

/// Q4_K / Q6_K weight rows times every Q8_K activation row (`act`, rows of bytes; their
/// blocks in [`int8::pair_classes`] order, and for Q6_K as [`Q6kWideBlock`]s where that kernel
/// runs, else none), into `dst [rows, cols]`: per block the integer lanes of [`IntIsa`],
/// then `quant::vec_dot`'s f32 steps in its order.
#[allow(clippy::too_many_arguments)]
fn kq_tile(
    int: IntIsa,
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    k: usize,
    (act, pairs, wide): (&[u8], &[[i8; 256]], &[Q6kWideBlock]),
    cols: usize,
    dst: &mut [f32],
) {
    let nb = k / QK_K;
    let act_row = nb * Q8_K_BYTES;
    let rows = dst.len() / cols;
    let mut meta = Vec::with_capacity(k / QK_K);
    for j in 0..cols {
        let wr = &w[j * row_bytes..(j + 1) * row_bytes];
        if ty == GgmlType::Q4_K {
            // Unpacked once per weight row, used by every activation row.
            meta.clear();
            meta.extend(wr.as_chunks().0.iter().map(Q4kMeta::of));
        }
        for r in 0..rows {
            let ar = act[r * act_row..(r + 1) * act_row].as_chunks().0;
            let pr = &pairs[r * nb..(r + 1) * nb];
            let wide = wide.get(r * nb..(r + 1) * nb);
            dst[r * cols + j] = if ty == GgmlType::Q4_K {
                int.q4_k_row(wr.as_chunks().0, &meta, ar, pr)
            } else if let Some(sum) = wide.and_then(|a| int.q6_k_row_wide(wr.as_chunks().0, a)) {
                sum
            } else {
                int.q6_k_row(wr.as_chunks().0, ar, pr)
            };
        }
    }
}

/// Weight rows an f16 / bf16 prefill widens at once for the GEMM.
const FLOAT_CHUNK_ROWS: usize = 64;

/// f16 / bf16 weight rows, converted to f32 one at a time, dotted with each f32 row.
struct FloatTile<'a> {
    isa: Isa,
    ty: GgmlType,
    w: &'a [u8],
    row_bytes: usize,
    a: &'a [f32],
    k: usize,
    cols: usize,
    dst: &'a mut [f32],
}

impl SimdTask for FloatTile<'_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let FloatTile {
            isa,
            ty,
            w,
            row_bytes,
            a,
            k,
            cols,
            dst,
        } = self;
        let widen = |wr: &[u8], wf: &mut [f32]| {
            if ty == GgmlType::F16 {
                half::f16_to_f32_row(isa, wr, wf);
            } else if ty == GgmlType::BF16 {
                half::bf16_to_f32_row(isa, wr, wf);
            } else if quant::dequantize_into(ty, wr, wf).is_err() {
                // Unreachable: the caller checked `w` is `cols` rows of `k` elements.
                wf.fill(f32::NAN);
            }
        };
        let rows = a.len() / k.max(1);
        if rows > gemm::SMALL_M_DOT.rows && k > 0 {
            // Prefill: weight rows widened a chunk at a time, then the f32 GEMM (packed,
            // cache-blocked) on the chunk; each output's sum is the GEMM's, whatever the
            // chunk or tile it falls in.
            let mut wf = vec![0.0f32; FLOAT_CHUNK_ROWS * k];
            for j0 in (0..cols).step_by(FLOAT_CHUNK_ROWS) {
                let c = FLOAT_CHUNK_ROWS.min(cols - j0);
                for (i, wf) in wf.chunks_exact_mut(k).take(c).enumerate() {
                    widen(&w[(j0 + i) * row_bytes..(j0 + i + 1) * row_bytes], wf);
                }
                gemm::gemm(
                    isa,
                    1.0,
                    gemm::Mat::row_major(a, rows, k),
                    gemm::Mat::row_major(&wf[..c * k], c, k).t(),
                    0.0,
                    gemm::MatMut::new(&mut dst[j0..], rows, c, cols),
                );
            }
            return;
        }
        if ty == GgmlType::BF16 && half::has_bf16_dot(isa) {
            // The same sums with each weight widened as it is loaded (AVX2).
            for j in 0..cols {
                let wr = &w[j * row_bytes..(j + 1) * row_bytes];
                for (r, ar) in a.chunks_exact(k.max(1)).enumerate() {
                    dst[r * cols + j] = half::bf16_dot(isa, ar, wr).unwrap_or(f32::NAN);
                }
            }
            return;
        }
        let mut wf = vec![0.0f32; k];
        for j in 0..cols {
            widen(&w[j * row_bytes..(j + 1) * row_bytes], &mut wf);
            for (r, ar) in a.chunks_exact(k.max(1)).enumerate() {
                dst[r * cols + j] = math::dot(s, ar, &wf);
            }
        }
    }
}

/// Weight rows dequantized per step of [`matmul_w`]: a few MiB of f32 for the widest rows.
const BACKWARD_CHUNK_ROWS: usize = 256;

/// `out [.., M, K] = a [.., M, N] · w [N, K]` with `w` of type `ty` (its raw bytes): the
/// input gradient of `x · wᵀ` through a frozen stored weight (LoRA over a quantized or
/// bf16 base). Chunks of weight rows are dequantized with core's reference dequantizer
/// (the values the forward's integer dot products stand for) and accumulated with the f32
/// GEMM, `out += a[:, n0..n1] · w[n0..n1]`, chunk after chunk in a fixed order, so the
/// result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_w(
    ctx: Ctx<'_>,
    ty: GgmlType,
    a: &[f32],
    sa: &Shape,
    w: &[u8],
    sb: &Shape,
    out: &mut [f32],
    so: &Shape,
) -> Result<(), BackendError> {
    let err = || size_error("matmul", format!("{sa} x {sb} ({}) -> {so}", ty.name()));
    if sa.rank() < 2 || sb.rank() != 2 {
        return Err(err());
    }
    let (n, k) = (sb.dims()[0], sb.dims()[1]);
    let m: usize = sa.dims()[..sa.rank() - 1].iter().product();
    let mut want = sa.dims()[..sa.rank() - 1].to_vec();
    want.push(k);
    let row_bytes = ty.row_bytes(k as u64).map_err(|_| err())?;
    if sa.dim_from_end(0) != n
        || so.dims() != want.as_slice()
        || a.len() != m * n
        || out.len() != m * k
        || Some(w.len()) != row_bytes.checked_mul(n)
    {
        return Err(err());
    }
    out.fill(0.0);
    let mut rows = vec![0.0f32; BACKWARD_CHUNK_ROWS.min(n) * k];
    for n0 in (0..n).step_by(BACKWARD_CHUNK_ROWS) {
        let c = BACKWARD_CHUNK_ROWS.min(n - n0);
        let chunk = &mut rows[..c * k];
        // Dequantize the chunk's rows over the pool, a few rows per task.
        let src = &w[n0 * row_bytes..(n0 + c) * row_bytes];
        let failed = std::sync::atomic::AtomicBool::new(false);
        ctx.threads.for_rows(chunk, k, k, |r0, dst| {
            let count = dst.len() / k;
            if quant::dequantize_into(ty, &src[r0 * row_bytes..(r0 + count) * row_bytes], dst).is_err() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        if failed.into_inner() {
            return Err(err());
        }
        let a_cols = gemm::Mat::new(&a[n0..], m, c, n, 1);
        let b_rows = gemm::Mat::row_major(chunk, c, k);
        gemm::gemm_par(
            ctx.threads,
            ctx.isa,
            None,
            gemm::WEIGHT_DOT,
            1.0,
            a_cols,
            b_rows,
            1.0,
            gemm::MatMut::new(out, m, k, k),
        );
    }
    Ok(())
}
