//! Every forward op (but matmul and attention, which have their own files) against the
//! f64 reference, at every SIMD level this CPU has, on odd sizes that leave vector tails,
//! and on sizes large enough to be split over threads.

mod common;

use common::reference as refk;
use common::{Rng, T, assert_close, backends, f, ids, run, to64};
use r1_core::Op;
use r1_core::graph::RopeSpec;

#[test]
fn fill_writes_the_value_everywhere() {
    for be in backends() {
        let out = run(&be, &Op::Fill { value: -2.5 }, &[], &[3, 37]).unwrap();
        assert!(out.iter().all(|&v| v == -2.5));
    }
}

#[test]
fn embedding_copies_the_row_of_each_id() {
    let mut rng = Rng::new(1);
    let (v, h) = (11, 19);
    let table = rng.vec(v * h, 1.0);
    let id_list = vec![3, 0, 10, 3, 7, 1];
    for be in backends() {
        let out = run(
            &be,
            &Op::Embedding,
            &[f(table.clone(), &[v, h]), ids(id_list.clone(), &[2, 3])],
            &[2, 3, h],
        )
        .unwrap();
        for (i, &id) in id_list.iter().enumerate() {
            assert_eq!(&out[i * h..(i + 1) * h], &table[id as usize * h..(id as usize + 1) * h]);
        }
    }
}

fn broadcast_case(op: Op, x_dims: &[usize], y_dims: &[usize], seed: u64) {
    let mut rng = Rng::new(seed);
    let nx: usize = x_dims.iter().product();
    let ny: usize = y_dims.iter().product();
    let (x, y) = (rng.vec(nx, 2.0), rng.vec(ny, 2.0));
    let want: Vec<f64> = (0..nx)
        .map(|i| {
            let (a, b) = (x[i] as f64, y[i % ny] as f64);
            if op == Op::Add { a + b } else { a * b }
        })
        .collect();
    for be in backends() {
        let out = run(&be, &op, &[f(x.clone(), x_dims), f(y.clone(), y_dims)], x_dims).unwrap();
        assert_close(
            &format!("{op:?} {x_dims:?} by {y_dims:?} on {}", be.simd_level()),
            &out,
            &want,
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn add_and_mul_broadcast_a_suffix_operand_over_the_leading_dims() {
    for op in [Op::Add, Op::Mul] {
        broadcast_case(op.clone(), &[3, 5, 7], &[7], 2);
        broadcast_case(op.clone(), &[3, 5, 7], &[5, 7], 3);
        broadcast_case(op.clone(), &[3, 5, 7], &[3, 5, 7], 4);
        broadcast_case(op.clone(), &[3, 5, 7], &[], 5);
        broadcast_case(op.clone(), &[1], &[1], 6);
        // Large enough to be split over threads.
        broadcast_case(op.clone(), &[61, 1031], &[1031], 7);
        broadcast_case(op.clone(), &[61, 1031], &[61, 1031], 8);
        broadcast_case(op, &[70001], &[], 9);
    }
}

#[test]
fn scale_multiplies_every_element() {
    let mut rng = Rng::new(10);
    for n in [1, 15, 16, 17, 100_003] {
        let x = rng.vec(n, 3.0);
        let want: Vec<f64> = x.iter().map(|&v| v as f64 * -0.75).collect();
        for be in backends() {
            let out = run(&be, &Op::Scale { factor: -0.75 }, &[f(x.clone(), &[n])], &[n]).unwrap();
            assert_close("scale", &out, &want, 0.0, 1e-7);
        }
    }
}

#[test]
fn rms_norm_matches_the_reference_on_odd_and_wide_rows() {
    let mut rng = Rng::new(11);
    for (rows, d) in [(1, 1), (5, 37), (3, 64), (300, 256)] {
        let x = rng.vec(rows * d, 3.0);
        let w = rng.vec(d, 1.5);
        let want = refk::rms_norm(&to64(&x), &to64(&w), 1e-6);
        for be in backends() {
            let out = run(
                &be,
                &Op::RmsNorm { eps: 1e-6 },
                &[f(x.clone(), &[rows, d]), f(w.clone(), &[d])],
                &[rows, d],
            )
            .unwrap();
            assert_close(
                &format!("rms_norm {rows}x{d} on {}", be.simd_level()),
                &out,
                &want,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn rope_rotates_pairs_by_position_times_frequency_in_the_rotate_half_layout() {
    let mut rng = Rng::new(12);
    // (batch, time, heads, head_dim, theta, pos_offset)
    for (b, t, heads, hd, theta, off) in [
        (2, 5, 3, 10, 10_000.0, 3),
        (1, 40, 2, 64, 1_000_000.0, 0),
        (3, 2, 1, 2, 500.0, 7),
        (4, 33, 4, 64, 10_000.0, 1),
    ] {
        let x = rng.vec(b * t * heads * hd, 1.0);
        for inverse in [false, true] {
            let spec = RopeSpec {
                n_heads: heads,
                head_dim: hd,
                theta,
                pos_offset: off,
                inverse,
                interleaved: false,
                yarn: None,
            };
            let want = refk::rope(&to64(&x), t, heads, hd, theta as f64, off, inverse);
            for be in backends() {
                let out = run(
                    &be,
                    &Op::Rope(spec),
                    &[f(x.clone(), &[b, t, heads * hd])],
                    &[b, t, heads * hd],
                )
                .unwrap();
                assert_close(
                    &format!("rope {spec:?} on {}", be.simd_level()),
                    &out,
                    &want,
                    2e-5,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn rope_then_its_inverse_gives_back_the_input() {
    let mut rng = Rng::new(13);
    let (b, t, heads, hd) = (2, 9, 2, 18);
    let x = rng.vec(b * t * heads * hd, 1.0);
    for be in backends() {
        let spec = RopeSpec {
            n_heads: heads,
            head_dim: hd,
            theta: 10_000.0,
            pos_offset: 4,
            inverse: false,
            interleaved: false,
            yarn: None,
        };
        let y = run(
            &be,
            &Op::Rope(spec),
            &[f(x.clone(), &[b, t, heads * hd])],
            &[b, t, heads * hd],
        )
        .unwrap();
        let back = run(
            &be,
            &Op::Rope(RopeSpec { inverse: true, ..spec }),
            &[f(y, &[b, t, heads * hd])],
            &[b, t, heads * hd],
        )
        .unwrap();
        assert_close("rope∘rope⁻¹", &back, &to64(&x), 1e-6, 1e-6);
    }
}

#[test]
fn silu_and_swiglu_match_the_reference_including_vector_tails() {
    let mut rng = Rng::new(14);
    for n in [1, 7, 15, 16, 17, 31, 33, 100_001] {
        let g = rng.vec(n, 12.0);
        let u = rng.vec(n, 2.0);
        let want_silu: Vec<f64> = g.iter().map(|&v| refk::silu(v as f64)).collect();
        let want_swiglu: Vec<f64> = g
            .iter()
            .zip(&u)
            .map(|(&a, &b)| refk::silu(a as f64) * b as f64)
            .collect();
        for be in backends() {
            let out = run(&be, &Op::Silu, &[f(g.clone(), &[n])], &[n]).unwrap();
            assert_close(
                &format!("silu {n} on {}", be.simd_level()),
                &out,
                &want_silu,
                1e-6,
                2e-6,
            );
            let out = run(&be, &Op::SwiGlu, &[f(g.clone(), &[n]), f(u.clone(), &[n])], &[n]).unwrap();
            assert_close(
                &format!("swiglu {n} on {}", be.simd_level()),
                &out,
                &want_swiglu,
                1e-6,
                2e-6,
            );
        }
    }
}

#[test]
fn silu_saturates_cleanly_at_extreme_inputs() {
    let x = vec![-1000.0, -90.0, 90.0, 1000.0, 0.0];
    for be in backends() {
        let out = run(&be, &Op::Silu, &[f(x.clone(), &[5])], &[5]).unwrap();
        assert_eq!(out, vec![0.0, 0.0, 90.0, 1000.0, 0.0], "{}", be.simd_level());
    }
}

#[test]
fn softmax_log_softmax_and_entropy_match_the_reference_and_stay_stable() {
    let mut rng = Rng::new(15);
    for (rows, v) in [(3, 1), (4, 7), (5, 33), (2, 1000), (40, 2049)] {
        // Large logits: a naive exp would overflow.
        let x = rng.vec(rows * v, 60.0);
        let x64 = to64(&x);
        let want_sm = refk::rows(&x64, v, refk::softmax_row);
        let want_lsm = refk::rows(&x64, v, refk::log_softmax_row);
        let want_ent: Vec<f64> = x64.chunks(v).map(refk::entropy_row).collect();
        for be in backends() {
            let lvl = be.simd_level();
            let out = run(&be, &Op::Softmax, &[f(x.clone(), &[rows, v])], &[rows, v]).unwrap();
            assert_close(&format!("softmax {rows}x{v} on {lvl}"), &out, &want_sm, 1e-7, 1e-5);
            let out = run(&be, &Op::LogSoftmax, &[f(x.clone(), &[rows, v])], &[rows, v]).unwrap();
            assert_close(&format!("log_softmax {rows}x{v} on {lvl}"), &out, &want_lsm, 1e-4, 1e-6);
            let out = run(&be, &Op::Entropy, &[f(x.clone(), &[rows, v])], &[rows]).unwrap();
            assert_close(&format!("entropy {rows}x{v} on {lvl}"), &out, &want_ent, 1e-5, 1e-5);
        }
    }
}

#[test]
fn gather_and_token_log_probs_pick_the_target_of_each_row() {
    let mut rng = Rng::new(16);
    for (rows, v) in [(1, 1), (6, 19), (130, 4099)] {
        let x = rng.vec(rows * v, 8.0);
        let t: Vec<i32> = (0..rows).map(|_| rng.below(v) as i32).collect();
        let x64 = to64(&x);
        let want_gather: Vec<f64> = (0..rows).map(|r| x64[r * v + t[r] as usize]).collect();
        let want_lp = refk::token_log_probs(&x64, v, &t);
        for be in backends() {
            let inputs = [f(x.clone(), &[rows, v]), ids(t.clone(), &[rows])];
            let out = run(&be, &Op::GatherLastDim, &inputs, &[rows]).unwrap();
            assert_close("gather_last_dim", &out, &want_gather, 0.0, 0.0);
            let out = run(&be, &Op::TokenLogProbs, &inputs, &[rows]).unwrap();
            assert_close(
                &format!("token_log_probs {rows}x{v} on {}", be.simd_level()),
                &out,
                &want_lp,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn cross_entropy_sums_weighted_losses_and_skips_negative_targets() {
    let mut rng = Rng::new(17);
    for (rows, v) in [(5, 9), (77, 513)] {
        let x = rng.vec(rows * v, 5.0);
        let t: Vec<i32> = (0..rows)
            .map(|r| if r % 3 == 1 { -100 } else { rng.below(v) as i32 })
            .collect();
        let w: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32 / rows as f32).collect();
        let want = refk::cross_entropy(&to64(&x), v, &t, &to64(&w));
        for be in backends() {
            let out = run(
                &be,
                &Op::CrossEntropy,
                &[f(x.clone(), &[rows, v]), ids(t.clone(), &[rows]), f(w.clone(), &[rows])],
                &[],
            )
            .unwrap();
            assert_close(
                &format!("cross_entropy {rows}x{v} on {}", be.simd_level()),
                &out,
                &[want],
                1e-5,
                1e-6,
            );
        }
    }
}

#[test]
fn sum_all_and_reduce_to_shape_sum_over_leading_dims() {
    let mut rng = Rng::new(18);
    let dims = [4, 6, 9];
    let x = rng.vec(4 * 6 * 9, 1.0);
    let x64 = to64(&x);
    for be in backends() {
        let total: f64 = x64.iter().sum();
        let out = run(&be, &Op::SumAll, &[f(x.clone(), &dims)], &[]).unwrap();
        assert_close("sum_all", &out, &[total], 1e-5, 1e-6);
        for to in [&[9][..], &[6, 9], &[4, 6, 9], &[]] {
            let n: usize = to.iter().product();
            let want: Vec<f64> = (0..n).map(|j| x64.iter().skip(j).step_by(n).sum()).collect();
            let out = run(&be, &Op::ReduceToShape, &[f(x.clone(), &dims)], to).unwrap();
            assert_close(&format!("reduce_to_shape {to:?}"), &out, &want, 1e-5, 1e-6);
        }
    }
    // Big enough for threads and the f64-combined chunks.
    let (rows, n) = (1200, 777);
    let x = rng.vec(rows * n, 1.0);
    let x64 = to64(&x);
    let want: Vec<f64> = (0..n).map(|j| (0..rows).map(|r| x64[r * n + j]).sum()).collect();
    for be in backends() {
        let out = run(&be, &Op::ReduceToShape, &[f(x.clone(), &[rows, n])], &[n]).unwrap();
        assert_close("reduce_to_shape large", &out, &want, 1e-4, 1e-5);
        let out = run(&be, &Op::SumAll, &[f(x.clone(), &[rows, n])], &[]).unwrap();
        assert_close("sum_all large", &out, &[x64.iter().sum()], 1e-3, 1e-6);
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = Rng::new(19);
    let (rows, d) = (257, 300);
    let x = rng.vec(rows * d, 2.0);
    let w = rng.vec(d, 1.0);
    let dy = rng.vec(rows * d, 1.0);
    let t: Vec<i32> = (0..rows).map(|_| rng.below(d) as i32).collect();
    let level = r1_backend_cpu::SimdLevel::detect();
    let run_on = |be: r1_backend_cpu::CpuBackend| {
        let a = run(
            &be,
            &Op::RmsNormBackward { eps: 1e-5 },
            &[f(x.clone(), &[rows, d]), f(w.clone(), &[d]), f(dy.clone(), &[rows, d])],
            &[rows * d + d],
        )
        .unwrap();
        let b = run(
            &be,
            &Op::CrossEntropy,
            &[
                f(x.clone(), &[rows, d]),
                ids(t.clone(), &[rows]),
                f(vec![1.0; rows], &[rows]),
            ],
            &[],
        )
        .unwrap();
        let c = run(&be, &Op::ReduceToShape, &[f(x.clone(), &[rows, d])], &[d]).unwrap();
        let e = run(&be, &Op::SumAll, &[f(x.clone(), &[rows, d])], &[]).unwrap();
        (a, b, c, e)
    };
    let run_all = |threads: usize| run_on(r1_backend_cpu::CpuBackend::with_config(threads, level).unwrap());
    assert_eq!(run_all(1), run_all(2));
    assert_eq!(run_all(1), run_all(3));
    // rayon's global pool (CpuBackend::new) splits the same way.
    assert_eq!(run_all(1), run_on(r1_backend_cpu::CpuBackend::new()));
}

#[test]
fn kv_write_appends_rows_in_place_and_keeps_the_rest() {
    use r1_core::TensorDesc;
    use r1_core::backend::{Backend, TensorRef};
    let (b, s, d, t, pos) = (2, 6, 5, 2, 3);
    for be in backends() {
        let cache: Vec<f32> = (0..b * s * d).map(|i| i as f32).collect();
        let new: Vec<f32> = (0..b * t * d).map(|i| -1.0 - i as f32).collect();
        let buf = be.buffer_from_f32(&[cache.clone(), new.clone()].concat()).unwrap();
        let cache_ref = TensorRef {
            buffer: &buf,
            offset: 0,
            desc: TensorDesc::f32(&[b, s, d]),
        };
        let new_ref = TensorRef {
            buffer: &buf,
            offset: cache.len() * 4,
            desc: TensorDesc::f32(&[b, t, d]),
        };
        be.run_op(&Op::KvWrite { pos }, &[cache_ref, new_ref], cache_ref)
            .unwrap();
        let mut got = vec![0.0; b * s * d];
        be.download_f32(&buf, 0, &mut got).unwrap();
        let mut want = cache.clone();
        for bi in 0..b {
            for ti in 0..t {
                for c in 0..d {
                    want[(bi * s + pos + ti) * d + c] = new[(bi * t + ti) * d + c];
                }
            }
        }
        assert_eq!(got, want);
        // The same op into a separate output gives the same tensor.
        let out = run(
            &be,
            &Op::KvWrite { pos },
            &[f(cache.clone(), &[b, s, d]), f(new.clone(), &[b, t, d])],
            &[b, s, d],
        )
        .unwrap();
        assert_eq!(out, want);
    }
}

#[test]
fn unused_operand_kinds_are_refused_not_miscomputed() {
    let be = &backends()[0];
    let x: T = f(vec![1.0; 4], &[4]);
    for op in [
        Op::Reshape,
        Op::Slice { offset: 0 },
        Op::Input,
        Op::Param { trainable: true },
    ] {
        assert!(run(be, &op, std::slice::from_ref(&x), &[4]).is_err(), "{op:?}");
        assert!(!r1_core::Backend::supports(be, &op, &[x.desc()], &x.desc()));
    }
    assert!(r1_core::Backend::supports(be, &Op::Softmax, &[x.desc()], &x.desc()));
}

#[test]
fn simd_levels_agree_with_the_scalar_fallback_on_every_tail_length() {
    use r1_backend_cpu::{CpuBackend, SimdLevel};
    let scalar = CpuBackend::with_config(1, SimdLevel::Scalar).unwrap();
    let mut rng = Rng::new(20);
    for n in 1..=40 {
        let (x, y, dy) = (rng.vec(3 * n, 4.0), rng.vec(3 * n, 1.0), rng.vec(3 * n, 1.0));
        let w = rng.vec(n, 1.0);
        let t: Vec<i32> = (0..3).map(|_| rng.below(n) as i32).collect();
        let cases: Vec<(Op, Vec<T>, Vec<usize>)> = vec![
            (Op::Softmax, vec![f(x.clone(), &[3, n])], vec![3, n]),
            (Op::LogSoftmax, vec![f(x.clone(), &[3, n])], vec![3, n]),
            (Op::Entropy, vec![f(x.clone(), &[3, n])], vec![3]),
            (
                Op::TokenLogProbs,
                vec![f(x.clone(), &[3, n]), ids(t.clone(), &[3])],
                vec![3],
            ),
            (
                Op::TokenLogProbsBackward,
                vec![f(x.clone(), &[3, n]), ids(t.clone(), &[3]), f(dy[..3].to_vec(), &[3])],
                vec![3, n],
            ),
            (
                Op::SoftmaxBackward,
                vec![f(y.clone(), &[3, n]), f(dy.clone(), &[3, n])],
                vec![3, n],
            ),
            (
                Op::LogSoftmaxBackward,
                vec![f(x.clone(), &[3, n]), f(dy.clone(), &[3, n])],
                vec![3, n],
            ),
            (
                Op::RmsNorm { eps: 1e-6 },
                vec![f(x.clone(), &[3, n]), f(w.clone(), &[n])],
                vec![3, n],
            ),
            (
                Op::RmsNormBackward { eps: 1e-6 },
                vec![f(x.clone(), &[3, n]), f(w.clone(), &[n]), f(dy.clone(), &[3, n])],
                vec![4 * n],
            ),
            (Op::Silu, vec![f(x.clone(), &[3 * n])], vec![3 * n]),
            (
                Op::SwiGluBackward,
                vec![f(x.clone(), &[3 * n]), f(y.clone(), &[3 * n]), f(dy.clone(), &[3 * n])],
                vec![6 * n],
            ),
            (Op::Mul, vec![f(x.clone(), &[3, n]), f(w.clone(), &[n])], vec![3, n]),
            (Op::ReduceToShape, vec![f(x.clone(), &[3, n])], vec![n]),
        ];
        for (op, inputs, out_dims) in &cases {
            let want = to64(&run(&scalar, op, inputs, out_dims).unwrap());
            for be in backends() {
                let got = run(&be, op, inputs, out_dims).unwrap();
                assert_close(
                    &format!("{op:?} n={n} {} vs scalar", be.simd_level()),
                    &got,
                    &want,
                    1e-6,
                    1e-5,
                );
            }
        }
    }
}
