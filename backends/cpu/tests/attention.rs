//! Fused attention against the f64 definition: grouped-query heads, query blocks, KV-cache
//! offsets with unused cache rows, decode rows one at a time through `KvWrite`, and the
//! backward pass against finite differences (including GQA and decode offsets).

mod common;

use common::reference::{self as refk, Attn};
use common::{Rng, assert_close, backends, dot64, f, numeric_grad, run, to64};
use r1_core::Op;

fn inputs(g: &Attn, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    (
        rng.vec(g.q_len(), 1.5),
        rng.vec(g.kv_len_values(), 1.5),
        rng.vec(g.kv_len_values(), 1.0),
    )
}

fn check_forward(g: Attn, seed: u64) {
    let (q, k, v) = inputs(&g, seed);
    let want = refk::attention(&g, &to64(&q), &to64(&k), &to64(&v));
    for be in backends() {
        let ins = [
            f(q.clone(), &g.q_dims()),
            f(k.clone(), &g.kv_dims()),
            f(v.clone(), &g.kv_dims()),
        ];
        let out = run(&be, &Op::Attention(g.spec()), &ins, &g.q_dims()).unwrap();
        assert_close(
            &format!("attention {g:?} on {}", be.simd_level()),
            &out,
            &want,
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn causal_attention_matches_the_definition() {
    let base = Attn {
        batch: 2,
        time: 5,
        keys: 5,
        heads: 4,
        kv_heads: 2,
        d: 6,
        q_offset: 0,
        kv_len: 5,
    };
    check_forward(base, 1);
    // Multi-head without grouping, odd head dim.
    check_forward(
        Attn {
            heads: 3,
            kv_heads: 3,
            d: 7,
            ..base
        },
        2,
    );
    // Multi-query (one kv head) over two query blocks.
    check_forward(
        Attn {
            batch: 1,
            time: 70,
            keys: 70,
            heads: 2,
            kv_heads: 1,
            d: 16,
            q_offset: 0,
            kv_len: 70,
        },
        3,
    );
    // Big enough for threads, model-like head dim.
    check_forward(
        Attn {
            batch: 2,
            time: 130,
            keys: 130,
            heads: 4,
            kv_heads: 2,
            d: 64,
            q_offset: 0,
            kv_len: 130,
        },
        4,
    );
}

#[test]
fn attention_over_a_kv_cache_uses_only_the_rows_in_use() {
    // Chunked prefill: 3 new rows after 4 cached ones, cache capacity 10 (rows 7.. unused).
    check_forward(
        Attn {
            batch: 2,
            time: 3,
            keys: 10,
            heads: 6,
            kv_heads: 2,
            d: 5,
            q_offset: 4,
            kv_len: 7,
        },
        5,
    );
    // Decode: one row per sequence at position 12 of a 20-row cache.
    check_forward(
        Attn {
            batch: 3,
            time: 1,
            keys: 20,
            heads: 4,
            kv_heads: 4,
            d: 8,
            q_offset: 12,
            kv_len: 13,
        },
        6,
    );
    // Decode with GQA and a long cache (the dot-product path with many keys).
    check_forward(
        Attn {
            batch: 2,
            time: 1,
            keys: 600,
            heads: 8,
            kv_heads: 2,
            d: 64,
            q_offset: 520,
            kv_len: 521,
        },
        7,
    );
}

#[test]
fn decode_rows_match_the_definition_for_every_group_size_and_head_dim() {
    // The decode kernel takes query rows four, three, two and one at a time, value columns
    // a few vectors at a time (head dims that are not whole vectors leave a partial one),
    // and scores a vector's worth of keys at a time (key counts that are not whole blocks
    // leave a partial one).
    for (i, &(heads, kv_heads, d, kv_len)) in [
        (3, 1, 64, 17),   // three rows
        (7, 1, 72, 33),   // four, then three; a partial value vector
        (10, 2, 128, 40), // five per group: four, then one
        (4, 2, 5, 3),     // two rows; a head dim shorter than a vector
        (2, 2, 40, 1),    // one row, one key
        (12, 2, 24, 16),  // six per group: four, then two
    ]
    .iter()
    .enumerate()
    {
        check_forward(
            Attn {
                batch: 2,
                time: 1,
                keys: kv_len + 3,
                heads,
                kv_heads,
                d,
                q_offset: kv_len - 1,
                kv_len,
            },
            40 + i as u64,
        );
    }
}

#[test]
fn unused_cache_rows_do_not_change_the_result() {
    let g = Attn {
        batch: 1,
        time: 2,
        keys: 8,
        heads: 2,
        kv_heads: 1,
        d: 4,
        q_offset: 3,
        kv_len: 5,
    };
    let (q, k, v) = inputs(&g, 8);
    let (mut k2, mut v2) = (k.clone(), v.clone());
    for j in g.kv_len..g.keys {
        for c in 0..g.d {
            k2[j * g.d + c] = f32::NAN;
            v2[j * g.d + c] = 1e30;
        }
    }
    for be in backends() {
        let a = run(
            &be,
            &Op::Attention(g.spec()),
            &[
                f(q.clone(), &g.q_dims()),
                f(k.clone(), &g.kv_dims()),
                f(v.clone(), &g.kv_dims()),
            ],
            &g.q_dims(),
        )
        .unwrap();
        let b = run(
            &be,
            &Op::Attention(g.spec()),
            &[
                f(q.clone(), &g.q_dims()),
                f(k2.clone(), &g.kv_dims()),
                f(v2.clone(), &g.kv_dims()),
            ],
            &g.q_dims(),
        )
        .unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn decoding_one_row_at_a_time_through_kv_write_reproduces_full_attention() {
    use r1_core::TensorDesc;
    use r1_core::backend::{Backend, TensorRef};
    let full = Attn {
        batch: 2,
        time: 9,
        keys: 9,
        heads: 4,
        kv_heads: 2,
        d: 8,
        q_offset: 0,
        kv_len: 9,
    };
    let (q, k, v) = inputs(&full, 9);
    let want = refk::attention(&full, &to64(&q), &to64(&k), &to64(&v));
    let (qrow, krow) = (full.heads * full.d, full.kv_heads * full.d);
    let cap = 12;
    for be in backends() {
        let cache_desc = TensorDesc::f32(&[full.batch, cap, krow]);
        let kc = be.alloc(cache_desc.bytes()).unwrap();
        let vc = be.alloc(cache_desc.bytes()).unwrap();
        for t in 0..full.time {
            let step = |src: &[f32], row: usize| -> Vec<f32> {
                (0..full.batch)
                    .flat_map(|b| src[(b * full.time + t) * row..][..row].to_vec())
                    .collect()
            };
            let (qt, kt, vt) = (step(&q, qrow), step(&k, krow), step(&v, krow));
            let newb = be.buffer_from_f32(&[kt, vt].concat()).unwrap();
            let new_desc = TensorDesc::f32(&[full.batch, 1, krow]);
            for (cache, off) in [(&kc, 0), (&vc, full.batch * krow * 4)] {
                let c = TensorRef {
                    buffer: cache,
                    offset: 0,
                    desc: cache_desc,
                };
                be.run_op(
                    &Op::KvWrite { pos: t },
                    &[
                        c,
                        TensorRef {
                            buffer: &newb,
                            offset: off,
                            desc: new_desc,
                        },
                    ],
                    c,
                )
                .unwrap();
            }
            let g = Attn {
                time: 1,
                keys: cap,
                q_offset: t,
                kv_len: t + 1,
                ..full
            };
            let qb = be.buffer_from_f32(&qt).unwrap();
            let out = be.alloc(qt.len() * 4).unwrap();
            let qd = TensorDesc::f32(&g.q_dims());
            let kref = TensorRef {
                buffer: &kc,
                offset: 0,
                desc: cache_desc,
            };
            let vref = TensorRef {
                buffer: &vc,
                offset: 0,
                desc: cache_desc,
            };
            be.run_op(
                &Op::Attention(g.spec()),
                &[
                    TensorRef {
                        buffer: &qb,
                        offset: 0,
                        desc: qd,
                    },
                    kref,
                    vref,
                ],
                TensorRef {
                    buffer: &out,
                    offset: 0,
                    desc: qd,
                },
            )
            .unwrap();
            let mut got = vec![0.0; qt.len()];
            be.download_f32(&out, 0, &mut got).unwrap();
            let want_t: Vec<f64> = (0..full.batch)
                .flat_map(|b| want[(b * full.time + t) * qrow..][..qrow].to_vec())
                .collect();
            assert_close(
                &format!("decode step {t} on {}", be.simd_level()),
                &got,
                &want_t,
                1e-5,
                1e-5,
            );
        }
    }
}

fn check_backward(g: Attn, seed: u64) {
    let (q, k, v) = inputs(&g, seed);
    let dout = Rng::new(seed + 1000).vec(g.q_len(), 1.0);
    let (q64, k64, v64, d64) = (to64(&q), to64(&k), to64(&v), to64(&dout));
    let mut want = numeric_grad(&q64, |x| dot64(&d64, &refk::attention(&g, x, &k64, &v64)));
    want.extend(numeric_grad(&k64, |x| dot64(&d64, &refk::attention(&g, &q64, x, &v64))));
    want.extend(numeric_grad(&v64, |x| dot64(&d64, &refk::attention(&g, &q64, &k64, x))));
    for be in backends() {
        let ins = [
            f(q.clone(), &g.q_dims()),
            f(k.clone(), &g.kv_dims()),
            f(v.clone(), &g.kv_dims()),
            f(dout.clone(), &g.q_dims()),
        ];
        let out = run(
            &be,
            &Op::AttentionBackward(g.spec()),
            &ins,
            &[g.q_len() + 2 * g.kv_len_values()],
        )
        .unwrap();
        assert_close(
            &format!("attention_backward {g:?} on {}", be.simd_level()),
            &out,
            &want,
            1e-5,
            1e-4,
        );
    }
}

#[test]
fn attention_backward_matches_finite_differences() {
    check_backward(
        Attn {
            batch: 2,
            time: 4,
            keys: 4,
            heads: 2,
            kv_heads: 2,
            d: 3,
            q_offset: 0,
            kv_len: 4,
        },
        10,
    );
    // GQA: two query heads per kv head accumulate into the same dK/dV.
    check_backward(
        Attn {
            batch: 2,
            time: 5,
            keys: 5,
            heads: 4,
            kv_heads: 2,
            d: 5,
            q_offset: 0,
            kv_len: 5,
        },
        11,
    );
    // Queries after cached rows; cache rows past kv_len get zero gradient.
    check_backward(
        Attn {
            batch: 1,
            time: 3,
            keys: 8,
            heads: 3,
            kv_heads: 1,
            d: 4,
            q_offset: 2,
            kv_len: 6,
        },
        12,
    );
    // One decode row.
    check_backward(
        Attn {
            batch: 2,
            time: 1,
            keys: 6,
            heads: 2,
            kv_heads: 1,
            d: 6,
            q_offset: 4,
            kv_len: 5,
        },
        13,
    );
}

#[test]
fn attention_backward_over_several_query_blocks_matches_the_closed_form() {
    // T = 70 spans two query blocks; finite differences would be slow here, so compare
    // with the analytic gradient computed in f64.
    let g = Attn {
        batch: 2,
        time: 70,
        keys: 70,
        heads: 4,
        kv_heads: 2,
        d: 16,
        q_offset: 0,
        kv_len: 70,
    };
    let (q, k, v) = inputs(&g, 14);
    let dout = Rng::new(15).vec(g.q_len(), 1.0);
    let want = analytic_backward(&g, &to64(&q), &to64(&k), &to64(&v), &to64(&dout));
    for be in backends() {
        let ins = [
            f(q.clone(), &g.q_dims()),
            f(k.clone(), &g.kv_dims()),
            f(v.clone(), &g.kv_dims()),
            f(dout.clone(), &g.q_dims()),
        ];
        let out = run(
            &be,
            &Op::AttentionBackward(g.spec()),
            &ins,
            &[g.q_len() + 2 * g.kv_len_values()],
        )
        .unwrap();
        assert_close(
            &format!("attention_backward blocks on {}", be.simd_level()),
            &out,
            &want,
            2e-5,
            1e-4,
        );
    }
}

/// `[dq | dk | dv]` from the softmax-attention derivative, in f64.
fn analytic_backward(g: &Attn, q: &[f64], k: &[f64], v: &[f64], dout: &[f64]) -> Vec<f64> {
    let (qrow, krow) = (g.heads * g.d, g.kv_heads * g.d);
    let group = g.heads / g.kv_heads;
    let scale = 1.0 / (g.d as f64).sqrt();
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for b in 0..g.batch {
        for h in 0..g.heads {
            let kvh = h / group;
            for t in 0..g.time {
                let qi = (b * g.time + t) * qrow + h * g.d;
                let nk = (g.q_offset + t + 1).min(g.kv_len);
                let ki = |j: usize| (b * g.keys + j) * krow + kvh * g.d;
                let s: Vec<f64> = (0..nk)
                    .map(|j| (0..g.d).map(|c| q[qi + c] * k[ki(j) + c]).sum::<f64>() * scale)
                    .collect();
                let p = refk::softmax_row(&s);
                let dp: Vec<f64> = (0..nk)
                    .map(|j| (0..g.d).map(|c| dout[qi + c] * v[ki(j) + c]).sum())
                    .collect();
                let dsum: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for j in 0..nk {
                    let ds = p[j] * (dp[j] - dsum);
                    for c in 0..g.d {
                        dq[qi + c] += ds * k[ki(j) + c] * scale;
                        dk[ki(j) + c] += ds * q[qi + c] * scale;
                        dv[ki(j) + c] += p[j] * dout[qi + c];
                    }
                }
            }
        }
    }
    [dq, dk, dv].concat()
}
