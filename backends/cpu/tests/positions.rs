//! Per-sequence positions (the `past [B]` input of decode graphs): RoPE, attention and
//! KV writes of a batch whose sequences have different cached lengths must equal each
//! sequence computed alone at its own fixed offset — the reference definitions — and
//! positions that do not fit are errors naming the sequence. Also: a plan that needs an
//! op the backend lacks fails when it is built, naming the op.

mod common;

use common::reference::{self as refk, Attn};
use common::{Rng, assert_close, backends, f, ids, run, to64};
use r1_backend_cpu::CpuBackend;
use r1_core::backend::{BackendError, i32_bytes};
use r1_core::graph::RopeSpec;
use r1_core::{Backend, Bindings, DType, Executor, Graph, GraphError, Op, Plan, TensorDesc};

const PAST: [i32; 3] = [0, 4, 2];

#[test]
fn rope_at_per_sequence_positions_matches_each_sequence_alone() {
    let (b, t, heads, hd) = (3, 2, 2, 8);
    let row = heads * hd;
    let x = Rng::new(3).vec(b * t * row, 1.0);
    let spec = RopeSpec {
        n_heads: heads,
        head_dim: hd,
        theta: 10000.0,
        pos_offset: 0,
        inverse: false,
        interleaved: false,
        yarn: None,
    };
    let mut want = Vec::new();
    for (s, &p) in PAST.iter().enumerate() {
        let xs = &x[s * t * row..(s + 1) * t * row];
        want.extend(refk::rope(&to64(xs), t, heads, hd, 10000.0, p as usize, false));
    }
    for be in backends() {
        let ins = [f(x.clone(), &[b, t, row]), ids(PAST.to_vec(), &[b])];
        let out = run(&be, &Op::Rope(spec), &ins, &[b, t, row]).unwrap();
        assert_close(&format!("rope at past on {}", be.simd_level()), &out, &want, 1e-6, 1e-6);
    }
}

#[test]
fn attention_at_per_sequence_positions_matches_each_sequence_alone() {
    for (t, heads, kv_heads) in [(1, 4, 2), (3, 4, 2), (2, 3, 3)] {
        let (b, keys, d) = (3, 8, 6);
        let batch = Attn {
            batch: b,
            time: t,
            keys,
            heads,
            kv_heads,
            d,
            q_offset: 0,
            kv_len: keys,
        };
        let mut rng = Rng::new(7);
        let (q, k, v) = (
            rng.vec(batch.q_len(), 1.5),
            rng.vec(batch.kv_len_values(), 1.5),
            rng.vec(batch.kv_len_values(), 1.0),
        );
        let (qs, ks) = (t * heads * d, keys * kv_heads * d);
        let mut want = Vec::new();
        for (s, &p) in PAST.iter().enumerate() {
            let alone = Attn {
                batch: 1,
                q_offset: p as usize,
                kv_len: p as usize + t,
                ..batch
            };
            let (q1, k1, v1) = (&q[s * qs..][..qs], &k[s * ks..][..ks], &v[s * ks..][..ks]);
            want.extend(refk::attention(&alone, &to64(q1), &to64(k1), &to64(v1)));
        }
        for be in backends() {
            let ins = [
                f(q.clone(), &batch.q_dims()),
                f(k.clone(), &batch.kv_dims()),
                f(v.clone(), &batch.kv_dims()),
                ids(PAST.to_vec(), &[b]),
            ];
            let out = run(&be, &Op::Attention(batch.spec()), &ins, &batch.q_dims()).unwrap();
            let what = format!(
                "attention at past, T={t} {heads}/{kv_heads} heads on {}",
                be.simd_level()
            );
            assert_close(&what, &out, &want, 1e-5, 1e-5);
        }
    }
}

#[test]
fn positions_that_do_not_fit_the_cache_are_errors_naming_the_sequence() {
    let g = Attn {
        batch: 2,
        time: 2,
        keys: 4,
        heads: 2,
        kv_heads: 1,
        d: 4,
        q_offset: 0,
        kv_len: 4,
    };
    let be = &backends()[0];
    for past in [[0, 3], [-1, 0]] {
        let ins = [
            f(vec![0.5; g.q_len()], &g.q_dims()),
            f(vec![0.5; g.kv_len_values()], &g.kv_dims()),
            f(vec![0.5; g.kv_len_values()], &g.kv_dims()),
            ids(past.to_vec(), &[2]),
        ];
        let err = run(be, &Op::Attention(g.spec()), &ins, &g.q_dims()).unwrap_err();
        match err {
            BackendError::InvalidInput { op, detail } => {
                assert_eq!(op, "attention");
                assert!(detail.contains("sequence"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Runs `kv_write_at` through the executor (its output is the cache, written in place).
fn kv_write_at(
    be: &CpuBackend,
    cache: &[f32],
    new: &[f32],
    past: &[i32],
    dims: [usize; 3],
    t: usize,
) -> Result<Vec<f32>, GraphError> {
    let [b, s, d] = dims;
    let mut g = Graph::new();
    let c = g.input("cache", TensorDesc::f32(&[b, s, d]))?;
    let n = g.input("new", TensorDesc::f32(&[b, t, d]))?;
    let p = g.input("past", TensorDesc::i32(&[b]))?;
    let w = g.kv_write_at(c, n, p)?;
    let plan = Plan::for_backend(&g, &[w], be)?;
    let cbuf = be.buffer_from_f32(cache)?;
    let nbuf = be.buffer_from_f32(new)?;
    let pbuf = be.alloc(TensorDesc::i32(&[b]).bytes())?;
    be.upload(&pbuf, 0, &i32_bytes(past))?;
    let mut bind = Bindings::new(&g);
    bind.bind(c, &cbuf, 0)?;
    bind.bind(n, &nbuf, 0)?;
    bind.bind(p, &pbuf, 0)?;
    let mut exec = Executor::new();
    exec.run(be, &g, &plan, &bind)?;
    exec.read_f32(be, &g, &plan, &bind, w)
}

#[test]
fn kv_write_at_puts_each_sequence_at_its_own_length() {
    let (b, s, d, t) = (3, 7, 2, 2);
    let cache: Vec<f32> = (0..b * s * d).map(|i| -(i as f32)).collect();
    let new: Vec<f32> = (0..b * t * d).map(|i| 100.0 + i as f32).collect();
    let be = CpuBackend::new();
    let out = kv_write_at(&be, &cache, &new, &PAST, [b, s, d], t).unwrap();
    let mut want = cache.clone();
    for (seq, &p) in PAST.iter().enumerate() {
        let at = (seq * s + p as usize) * d;
        want[at..at + t * d].copy_from_slice(&new[seq * t * d..(seq + 1) * t * d]);
    }
    assert_eq!(out, want);
    let err = kv_write_at(&be, &cache, &new, &[0, 6, 0], [b, s, d], t).unwrap_err();
    assert!(err.to_string().contains("sequence 1"), "{err}");
}

#[test]
fn an_op_the_backend_lacks_fails_when_the_plan_is_built() {
    let be = CpuBackend::new();
    let mut g = Graph::new();
    // A bf16 weight is supported as `x · wᵀ` or `x · w`, never against a transposed `x`.
    let x = g.input("x", TensorDesc::f32(&[4, 2])).unwrap();
    let w = g
        .param_typed(
            "model.layers.0.mlp.up_proj.weight",
            TensorDesc::new(DType::BF16, &[4, 8]),
            false,
        )
        .unwrap();
    let y = g.matmul(x, w, true, false).unwrap();
    let err = Plan::for_backend(&g, &[y], &be).unwrap_err().to_string();
    assert!(err.contains("matmul") && err.contains("bf16"), "{err}");
    // The same graph with an f32 weight plans.
    let mut g = Graph::new();
    let x = g.input("x", TensorDesc::f32(&[2, 8])).unwrap();
    let w = g.param("w", &[4, 8], false).unwrap();
    let y = g.matmul(x, w, false, true).unwrap();
    assert!(Plan::for_backend(&g, &[y], &be).is_ok());
}
