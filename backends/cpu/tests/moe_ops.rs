//! DeepSeek-V3's ops against the f64 references (`common::reference`): the head-wise
//! copies of multi-head latent attention, the router, the expert-grouped SwiGLU experts,
//! interleaved and YaRN RoPE; backward ops against finite differences of the forward
//! references.

mod common;

use common::reference as refk;
use common::{Rng, assert_close, backends, dot64, f, numeric_grad, run, to64};
use r1_core::Op;
use r1_core::graph::{MoeRouting, RopeSpec, Yarn};

#[test]
fn head_slices_concats_sums_and_swaps_move_the_right_values() {
    let mut rng = Rng::new(1);
    let (rows, heads, width, start, len) = (3, 4, 7, 2, 3);
    let x = rng.vec(rows * heads * width, 1.0);
    let b = rng.vec(rows * 5, 1.0);
    for be in backends() {
        let lvl = be.simd_level();
        let got = run(
            &be,
            &Op::HeadSlice { width, start, len },
            &[f(x.clone(), &[rows, heads * width])],
            &[rows, heads * len],
        )
        .unwrap();
        let want: Vec<f64> = x
            .chunks(width)
            .flat_map(|h| h[start..start + len].iter().map(|&v| v as f64))
            .collect();
        assert_close(&format!("head_slice on {lvl}"), &got, &want, 0.0, 0.0);
        let back = run(
            &be,
            &Op::HeadSliceBackward { width, start, len },
            &[f(got.clone(), &[rows, heads * len])],
            &[rows, heads * width],
        )
        .unwrap();
        let want_back: Vec<f64> = x
            .chunks(width)
            .flat_map(|h| {
                (0..width).map(move |i| {
                    if (start..start + len).contains(&i) {
                        h[i] as f64
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        assert_close(&format!("head_slice_backward on {lvl}"), &back, &want_back, 0.0, 0.0);
        // a: 4 heads of 7, b: one shared head of 5.
        let cat = run(
            &be,
            &Op::ConcatHeads { heads, b_shared: true },
            &[f(x.clone(), &[rows, heads * width]), f(b.clone(), &[rows, 5])],
            &[rows, heads * 12],
        )
        .unwrap();
        let mut want_cat = Vec::new();
        for r in 0..rows {
            for h in 0..heads {
                let a0 = (r * heads + h) * width;
                want_cat.extend(x[a0..a0 + width].iter().map(|&v| v as f64));
                want_cat.extend(b[r * 5..r * 5 + 5].iter().map(|&v| v as f64));
            }
        }
        assert_close(&format!("concat_heads shared on {lvl}"), &cat, &want_cat, 0.0, 0.0);
        let sum = run(
            &be,
            &Op::SumHeads { heads },
            &[f(x.clone(), &[rows, heads * width])],
            &[rows, width],
        )
        .unwrap();
        let want_sum: Vec<f64> = (0..rows)
            .flat_map(|r| {
                let x = &x;
                (0..width).map(move |i| (0..heads).map(|h| x[(r * heads + h) * width + i] as f64).sum())
            })
            .collect();
        assert_close(&format!("sum_heads on {lvl}"), &sum, &want_sum, 1e-6, 1e-6);
        let swapped = run(
            &be,
            &Op::SwapDims01,
            &[f(x.clone(), &[rows, heads, width])],
            &[heads, rows, width],
        )
        .unwrap();
        for r in 0..rows {
            for h in 0..heads {
                assert_eq!(
                    swapped[(h * rows + r) * width..(h * rows + r + 1) * width],
                    x[(r * heads + h) * width..(r * heads + h + 1) * width]
                );
            }
        }
    }
}

/// Router logits whose choice scores have clear gaps, so finite differences never flip a
/// selection.
fn routing_case(rng: &mut Rng, rows: usize, e: usize) -> (Vec<f32>, Vec<f32>) {
    let mut logits = Vec::with_capacity(rows * e);
    for _ in 0..rows {
        let mut perm: Vec<usize> = (0..e).collect();
        for i in (1..e).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        // Distinct levels 0.35 apart in logit space, shuffled.
        logits.extend(perm.iter().map(|&p| -2.0 + 0.35 * p as f32 + 0.02 * rng.uniform()));
    }
    let bias = rng.vec(e, 0.05);
    (logits, bias)
}

#[test]
fn moe_gate_picks_and_weights_experts_as_the_hf_router() {
    let mut rng = Rng::new(2);
    let (rows, e) = (9, 8);
    for (n_group, topk_group, top_k, norm, scaling) in
        [(4, 2, 2, true, 2.5), (1, 1, 3, false, 1.0), (2, 1, 2, true, 1.0)]
    {
        let (logits, bias) = routing_case(&mut rng, rows, e);
        let routing = MoeRouting {
            n_group,
            topk_group,
            top_k,
            norm_topk_prob: norm,
            scaling,
        };
        let route = |l: &[f64]| -> Vec<f64> {
            l.chunks(e)
                .flat_map(|row| {
                    refk::moe_route_row(row, &to64(&bias), n_group, topk_group, top_k, norm, scaling as f64)
                })
                .collect()
        };
        let want = route(&to64(&logits));
        let dy = rng.vec(rows * e, 1.0);
        let want_grad = numeric_grad(&to64(&logits), |l| dot64(&to64(&dy), &route(l)));
        for be in backends() {
            let lvl = be.simd_level();
            let inputs = [f(logits.clone(), &[rows, e]), f(bias.clone(), &[e])];
            let got = run(&be, &Op::MoeGate(routing), &inputs, &[rows, e]).unwrap();
            assert_close(&format!("moe_gate {routing:?} on {lvl}"), &got, &want, 1e-6, 1e-5);
            for row in got.chunks(e) {
                assert_eq!(row.iter().filter(|&&w| w != 0.0).count(), top_k);
            }
            let inputs = [
                f(logits.clone(), &[rows, e]),
                f(bias.clone(), &[e]),
                f(dy.clone(), &[rows, e]),
            ];
            let grad = run(&be, &Op::MoeGateBackward(routing), &inputs, &[rows, e]).unwrap();
            assert_close(
                &format!("moe_gate_backward {routing:?} on {lvl}"),
                &grad,
                &want_grad,
                1e-5,
                1e-3,
            );
        }
    }
}

#[test]
fn moe_experts_and_their_backward_match_the_row_by_row_reference() {
    let mut rng = Rng::new(3);
    let (rows, h, f_dim, e) = (11, 6, 5, 4);
    let x = rng.vec(rows * h, 1.0);
    // Two experts per row, one expert no row uses.
    let mut gates = vec![0f32; rows * e];
    for r in 0..rows {
        let a = r % 3;
        let b = (a + 1 + r % 2) % 3;
        gates[r * e + a] = 0.3 + rng.uniform();
        gates[r * e + b] = 0.3 + rng.uniform();
    }
    let experts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..e)
        .map(|_| {
            (
                rng.vec(f_dim * h, 0.5),
                rng.vec(f_dim * h, 0.5),
                rng.vec(h * f_dim, 0.5),
            )
        })
        .collect();
    let experts64: Vec<_> = experts.iter().map(|(a, b, c)| (to64(a), to64(b), to64(c))).collect();
    let want = refk::moe_experts(h, &to64(&x), &to64(&gates), &experts64);
    let dy = rng.vec(rows * h, 1.0);
    let dy64 = to64(&dy);
    let loss =
        |x: &[f64], g: &[f64], ws: &[(Vec<f64>, Vec<f64>, Vec<f64>)]| dot64(&dy64, &refk::moe_experts(h, x, g, ws));
    let (x64, g64) = (to64(&x), to64(&gates));
    let mut want_grad = numeric_grad(&x64, |v| loss(v, &g64, &experts64));
    // Gates: only the nonzero ones are routed (a zero gate stays unrouted).
    let dg = numeric_grad(&g64, |v| loss(&x64, v, &experts64));
    want_grad.extend(dg.iter().zip(&g64).map(|(d, g)| if *g == 0.0 { 0.0 } else { *d }));
    for k in 0..e {
        for part in 0..3 {
            let d = numeric_grad(
                match part {
                    0 => &experts64[k].0,
                    1 => &experts64[k].1,
                    _ => &experts64[k].2,
                },
                |v| {
                    let mut ws = experts64.clone();
                    match part {
                        0 => ws[k].0 = v.to_vec(),
                        1 => ws[k].1 = v.to_vec(),
                        _ => ws[k].2 = v.to_vec(),
                    }
                    loss(&x64, &g64, &ws)
                },
            );
            want_grad.extend(d);
        }
    }
    let mut inputs = vec![f(x.clone(), &[rows, h]), f(gates.clone(), &[rows, e])];
    for (g, u, d) in &experts {
        inputs.extend([
            f(g.clone(), &[f_dim, h]),
            f(u.clone(), &[f_dim, h]),
            f(d.clone(), &[h, f_dim]),
        ]);
    }
    for be in backends() {
        let lvl = be.simd_level();
        let got = run(&be, &Op::MoeExperts, &inputs, &[rows, h]).unwrap();
        assert_close(&format!("moe_experts on {lvl}"), &got, &want, 1e-5, 1e-5);
        let mut with_dy = inputs.clone();
        with_dy.push(f(dy.clone(), &[rows, h]));
        let grad = run(&be, &Op::MoeExpertsBackward, &with_dy, &[want_grad.len()]).unwrap();
        assert_close(&format!("moe_experts_backward on {lvl}"), &grad, &want_grad, 1e-4, 1e-3);
    }
}

#[test]
fn interleaved_and_yarn_rope_rotate_as_the_reference_and_invert() {
    let mut rng = Rng::new(4);
    let (b, t, heads, hd, off) = (2, 5, 3, 8, 7);
    let x = rng.vec(b * t * heads * hd, 1.0);
    let yarn = Yarn {
        factor: 4.0,
        low: 1.0,
        high: 3.0,
        attention_factor: 1.2,
    };
    for (interleaved, yarn) in [(true, None), (false, Some(yarn)), (true, Some(yarn))] {
        let spec = RopeSpec {
            pos_offset: off,
            interleaved,
            yarn,
            ..RopeSpec::new(heads, hd, 10_000.0)
        };
        // The frequencies by HF's formula, in f64.
        let inv: Vec<f64> = (0..hd / 2)
            .map(|i| {
                let extra = 1.0 / 10_000f64.powf(2.0 * i as f64 / hd as f64);
                match yarn {
                    None => extra,
                    Some(y) => {
                        let ramp = ((i as f64 - y.low as f64) / (y.high as f64 - y.low as f64)).clamp(0.0, 1.0);
                        extra / y.factor as f64 * ramp + extra * (1.0 - ramp)
                    }
                }
            })
            .collect();
        let magnitude = yarn.map_or(1.0, |y| y.attention_factor as f64);
        let want = refk::rope_with(&to64(&x), t, heads, hd, &inv, magnitude, interleaved, off);
        for be in backends() {
            let lvl = be.simd_level();
            let got = run(
                &be,
                &Op::Rope(spec),
                &[f(x.clone(), &[b, t, heads * hd])],
                &[b, t, heads * hd],
            )
            .unwrap();
            assert_close(
                &format!("rope {interleaved} {yarn:?} on {lvl}"),
                &got,
                &want,
                1e-5,
                1e-5,
            );
            // The backward (inverse) is the transpose: rotating back and scaling again
            // gives x times the magnitude squared.
            let back = run(
                &be,
                &Op::Rope(RopeSpec { inverse: true, ..spec }),
                &[f(got, &[b, t, heads * hd])],
                &[b, t, heads * hd],
            )
            .unwrap();
            let want_back: Vec<f64> = x.iter().map(|&v| v as f64 * magnitude * magnitude).collect();
            assert_close(&format!("rope⁻¹ {interleaved} on {lvl}"), &back, &want_back, 1e-5, 1e-5);
        }
    }
}
