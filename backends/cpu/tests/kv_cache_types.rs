//! KV caches stored as f16, bf16, Q8_0 or Q4_0: `kv_write` quantizes each new row into
//! its slot exactly as core's quantizer (ggml's reference) does and leaves every other
//! byte alone; attention over a typed cache equals — bit for bit — the f32 path run on
//! the cache dequantized (the reference definition), for batches whose sequences have
//! different lengths, prefill and decode steps, rows of one or several blocks and blocks
//! that span heads, on every SIMD level.

mod common;

use common::{Rng, backends};
use r1_backend_cpu::CpuBackend;
use r1_core::backend::{Backend, i32_bytes};
use r1_core::graph::AttentionSpec;
use r1_core::quant::{self, GgmlType};
use r1_core::{Bindings, DType, Executor, Graph, GraphError, Plan, TensorDesc};

const PAST: [i32; 3] = [0, 5, 2];

/// The types a cache may have besides f32.
const TYPED: [GgmlType; 4] = [GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0];

/// `rows` rows of `width` values quantized to `ty`, one row at a time.
fn quantize_rows(ty: GgmlType, x: &[f32], width: usize) -> Vec<u8> {
    x.chunks_exact(width)
        .flat_map(|r| quant::quantize(ty, r).expect("whole blocks"))
        .collect()
}

fn dequantize_rows(ty: GgmlType, bytes: &[u8], width: usize) -> Vec<f32> {
    let rb = ty.row_bytes(width as u64).expect("whole blocks");
    bytes
        .chunks_exact(rb)
        .flat_map(|r| quant::dequantize(ty, r, width).expect("row"))
        .collect()
}

fn upload(be: &CpuBackend, bytes: &[u8]) -> Result<r1_backend_cpu::CpuBuffer, GraphError> {
    let buf = be.alloc(bytes.len())?;
    be.upload(&buf, 0, bytes)?;
    Ok(buf)
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Geometry of one decode-graph attention layer: `b` sequences, `t` new rows, a cache of
/// `s` rows, `heads` query heads and `kv_heads` of width `d`.
#[derive(Clone, Copy)]
struct Layer {
    b: usize,
    t: usize,
    s: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
}

impl Layer {
    fn width(&self) -> usize {
        self.kv_heads * self.d
    }
}

/// One layer's cache step as the model builds it: `kv_write_at` of the new keys and
/// values into caches of `types`, then `attention_at` over them. Returns the attention
/// output and the key cache's bytes afterwards.
fn cached_attention(
    be: &CpuBackend,
    l: Layer,
    (kt, vt): (GgmlType, GgmlType),
    (kc, vc): (&[u8], &[u8]),
    (q, nk, nv): (&[f32], &[f32], &[f32]),
) -> Result<(Vec<f32>, Vec<u8>), GraphError> {
    let w = l.width();
    let mut g = Graph::new();
    let qn = g.input("q", TensorDesc::f32(&[l.b, l.t, l.heads * l.d]))?;
    let kcn = g.input("kc", TensorDesc::new(kt.dtype(), &[l.b, l.s, w]))?;
    let vcn = g.input("vc", TensorDesc::new(vt.dtype(), &[l.b, l.s, w]))?;
    let nkn = g.input("nk", TensorDesc::f32(&[l.b, l.t, w]))?;
    let nvn = g.input("nv", TensorDesc::f32(&[l.b, l.t, w]))?;
    let pn = g.input("past", TensorDesc::i32(&[l.b]))?;
    let k_all = g.kv_write_at(kcn, nkn, pn)?;
    let v_all = g.kv_write_at(vcn, nvn, pn)?;
    let spec = AttentionSpec {
        n_heads: l.heads,
        n_kv_heads: l.kv_heads,
        head_dim: l.d,
        q_offset: 0,
        kv_len: l.s,
    };
    let a = g.attention_at(qn, k_all, v_all, spec, pn)?;
    let plan = Plan::for_backend(&g, &[a], be)?;
    let bufs = [
        upload(be, &f32_bytes(q))?,
        upload(be, kc)?,
        upload(be, vc)?,
        upload(be, &f32_bytes(nk))?,
        upload(be, &f32_bytes(nv))?,
        upload(be, &i32_bytes(&PAST[..l.b]))?,
    ];
    let mut bind = Bindings::new(&g);
    for (node, buf) in [qn, kcn, vcn, nkn, nvn, pn].into_iter().zip(&bufs) {
        bind.bind(node, buf, 0)?;
    }
    let mut exec = Executor::new();
    exec.run(be, &g, &plan, &bind)?;
    let out = exec.read_f32(be, &g, &plan, &bind, a)?;
    let mut k_after = vec![0u8; kc.len()];
    be.download(&bufs[1], 0, &mut k_after)?;
    Ok((out, k_after))
}

#[test]
fn kv_write_quantizes_each_new_row_into_its_slot_and_leaves_the_rest() {
    let l = Layer {
        b: 3,
        t: 2,
        s: 9,
        heads: 4,
        kv_heads: 2,
        d: 32,
    };
    let w = l.width();
    let mut rng = Rng::new(11);
    let old = rng.vec(l.b * l.s * w, 2.0);
    let (q, nk, nv) = (
        rng.vec(l.b * l.t * l.heads * l.d, 1.0),
        rng.vec(l.b * l.t * w, 3.0),
        rng.vec(l.b * l.t * w, 1.0),
    );
    let be = CpuBackend::new();
    for ty in TYPED {
        let cache = quantize_rows(ty, &old, w);
        let (_, after) =
            cached_attention(&be, l, (ty, ty), (&cache, &cache), (&q, &nk, &nv)).expect("typed cache step");
        let rb = ty.row_bytes(w as u64).expect("row");
        let mut want = cache.clone();
        for (seq, &p) in PAST.iter().enumerate() {
            for t in 0..l.t {
                let row = seq * l.s + p as usize + t;
                let new = quant::quantize(ty, &nk[(seq * l.t + t) * w..][..w]).expect("row");
                want[row * rb..(row + 1) * rb].copy_from_slice(&new);
            }
        }
        assert!(after == want, "{ty}: the cache after kv_write differs from ggml's rows");
    }
}

#[test]
fn attention_over_a_typed_cache_is_f32_attention_over_its_dequantized_values() {
    let layers = [
        // Decode, two blocks per row.
        Layer {
            b: 3,
            t: 1,
            s: 10,
            heads: 4,
            kv_heads: 2,
            d: 32,
        },
        // Prefill of 3 rows; one block spans both kv heads of 16.
        Layer {
            b: 3,
            t: 3,
            s: 12,
            heads: 4,
            kv_heads: 2,
            d: 16,
        },
        // Three blocks per row, one query head per kv head, one sequence.
        Layer {
            b: 1,
            t: 2,
            s: 7,
            heads: 3,
            kv_heads: 3,
            d: 32,
        },
    ];
    let pairs = [
        (GgmlType::Q8_0, GgmlType::Q8_0),
        (GgmlType::Q4_0, GgmlType::Q4_0),
        (GgmlType::Q8_0, GgmlType::Q4_0),
        (GgmlType::BF16, GgmlType::F16),
        (GgmlType::F32, GgmlType::Q4_0),
    ];
    for (i, l) in layers.into_iter().enumerate() {
        let w = l.width();
        let mut rng = Rng::new(20 + i as u64);
        let (old_k, old_v) = (rng.vec(l.b * l.s * w, 2.0), rng.vec(l.b * l.s * w, 1.0));
        let (q, nk, nv) = (
            rng.vec(l.b * l.t * l.heads * l.d, 1.5),
            rng.vec(l.b * l.t * w, 2.0),
            rng.vec(l.b * l.t * w, 1.0),
        );
        for (kt, vt) in pairs {
            let (kc, vc) = (quantize_rows(kt, &old_k, w), quantize_rows(vt, &old_v, w));
            // The reference: an f32 cache holding the typed cache's values, and new rows
            // that went through the same rounding the typed write applies.
            let round = |ty, x: &[f32]| dequantize_rows(ty, &quantize_rows(ty, x, w), w);
            let (rk, rv) = (dequantize_rows(kt, &kc, w), dequantize_rows(vt, &vc, w));
            let (rnk, rnv) = (round(kt, &nk), round(vt, &nv));
            for be in backends() {
                let f32s = (GgmlType::F32, GgmlType::F32);
                let (want, _) = cached_attention(&be, l, f32s, (&f32_bytes(&rk), &f32_bytes(&rv)), (&q, &rnk, &rnv))
                    .expect("f32 reference");
                let (got, _) = cached_attention(&be, l, (kt, vt), (&kc, &vc), (&q, &nk, &nv)).expect("typed cache");
                let what = format!("layer {i}, k {kt} v {vt} on {}", be.simd_level());
                assert_eq!(got.len(), want.len(), "{what}");
                let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{what}: {got:?} vs {want:?}");
            }
        }
    }
}

#[test]
fn a_cache_type_the_backend_lacks_fails_when_the_plan_is_built() {
    let be = CpuBackend::new();
    let mut g = Graph::new();
    let c = g
        .input("c", TensorDesc::new(GgmlType::Q4_K.dtype(), &[1, 4, 256]))
        .unwrap();
    let n = g.input("n", TensorDesc::f32(&[1, 1, 256])).unwrap();
    let w = g.kv_write(c, n, 0).unwrap();
    let err = Plan::for_backend(&g, &[w], &be).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("kv_write") && msg.contains("q4_K"), "{msg}");
    assert_eq!(g.desc(w).unwrap().dtype, GgmlType::Q4_K.dtype());
    assert_ne!(g.desc(w).unwrap().dtype, DType::F32);
}
