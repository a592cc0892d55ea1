//! Every backward op against central finite differences of its forward op's f64
//! reference: for `L = Σ dy ⊙ f(x)`, the op's output must equal `∂L/∂x`. Packed outputs
//! (`[dx | dw]`, `[dgate | dup]`) are split and checked part by part. Attention's
//! backward is in `attention.rs`, matmul's and broadcasting's in `matmul.rs`.

mod common;

use common::reference as refk;
use common::{Rng, assert_close, backends, dot64, f, ids, numeric_grad, run, to64};
use r1_core::Op;
use r1_core::graph::RopeSpec;

#[test]
fn rms_norm_backward_packs_dx_then_dw() {
    let mut rng = Rng::new(1);
    for (rows, d) in [(3, 5), (4, 37), (70, 64)] {
        let (x, w, dy) = (rng.vec(rows * d, 2.0), rng.vec(d, 1.0), rng.vec(rows * d, 1.0));
        let (x64, w64, dy64) = (to64(&x), to64(&w), to64(&dy));
        let eps = 1e-5;
        let mut want = numeric_grad(&x64, |v| dot64(&dy64, &refk::rms_norm(v, &w64, eps)));
        want.extend(numeric_grad(&w64, |v| dot64(&dy64, &refk::rms_norm(&x64, v, eps))));
        for be in backends() {
            let inputs = [f(x.clone(), &[rows, d]), f(w.clone(), &[d]), f(dy.clone(), &[rows, d])];
            let out = run(&be, &Op::RmsNormBackward { eps: eps as f32 }, &inputs, &[rows * d + d]).unwrap();
            assert_close(
                &format!("rms_norm_backward {rows}x{d} on {}", be.simd_level()),
                &out,
                &want,
                1e-4,
                1e-4,
            );
        }
    }
}

#[test]
fn silu_and_swiglu_backward_match_finite_differences() {
    let mut rng = Rng::new(2);
    for n in [1, 9, 16, 35] {
        let (g, u, dy) = (rng.vec(n, 6.0), rng.vec(n, 2.0), rng.vec(n, 1.0));
        let (g64, u64, dy64) = (to64(&g), to64(&u), to64(&dy));
        let silu_all = |x: &[f64]| x.iter().map(|&v| refk::silu(v)).collect::<Vec<_>>();
        let want_silu = numeric_grad(&g64, |x| dot64(&dy64, &silu_all(x)));
        let swiglu = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(&p, &q)| refk::silu(p) * q).collect::<Vec<_>>();
        let mut want_sw = numeric_grad(&g64, |x| dot64(&dy64, &swiglu(x, &u64)));
        want_sw.extend(numeric_grad(&u64, |x| dot64(&dy64, &swiglu(&g64, x))));
        for be in backends() {
            let lvl = be.simd_level();
            let out = run(&be, &Op::SiluBackward, &[f(g.clone(), &[n]), f(dy.clone(), &[n])], &[n]).unwrap();
            assert_close(&format!("silu_backward {n} on {lvl}"), &out, &want_silu, 1e-5, 1e-4);
            let inputs = [f(g.clone(), &[n]), f(u.clone(), &[n]), f(dy.clone(), &[n])];
            let out = run(&be, &Op::SwiGluBackward, &inputs, &[2 * n]).unwrap();
            assert_close(&format!("swiglu_backward {n} on {lvl}"), &out, &want_sw, 1e-5, 1e-4);
        }
    }
    // Large enough for threads: compare with the closed form.
    let n = 50_001;
    let (g, u, dy) = (rng.vec(n, 6.0), rng.vec(n, 2.0), rng.vec(n, 1.0));
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mut want: Vec<f64> = (0..n)
        .map(|i| {
            let x = g[i] as f64;
            dy[i] as f64 * u[i] as f64 * sig(x) * (1.0 + x * (1.0 - sig(x)))
        })
        .collect();
    want.extend((0..n).map(|i| dy[i] as f64 * refk::silu(g[i] as f64)));
    for be in backends() {
        let inputs = [f(g.clone(), &[n]), f(u.clone(), &[n]), f(dy.clone(), &[n])];
        let out = run(&be, &Op::SwiGluBackward, &inputs, &[2 * n]).unwrap();
        assert_close("swiglu_backward large", &out, &want, 1e-5, 1e-5);
    }
}

#[test]
fn softmax_and_log_softmax_backward_match_finite_differences() {
    let mut rng = Rng::new(3);
    for (rows, v) in [(2, 1), (3, 7), (2, 40)] {
        let (x, dy) = (rng.vec(rows * v, 3.0), rng.vec(rows * v, 1.0));
        let (x64, dy64) = (to64(&x), to64(&dy));
        let want_sm = numeric_grad(&x64, |z| dot64(&dy64, &refk::rows(z, v, refk::softmax_row)));
        let want_lsm = numeric_grad(&x64, |z| dot64(&dy64, &refk::rows(z, v, refk::log_softmax_row)));
        for be in backends() {
            let lvl = be.simd_level();
            let y = run(&be, &Op::Softmax, &[f(x.clone(), &[rows, v])], &[rows, v]).unwrap();
            let out = run(
                &be,
                &Op::SoftmaxBackward,
                &[f(y, &[rows, v]), f(dy.clone(), &[rows, v])],
                &[rows, v],
            )
            .unwrap();
            assert_close(
                &format!("softmax_backward {rows}x{v} on {lvl}"),
                &out,
                &want_sm,
                1e-5,
                1e-4,
            );
            let y = run(&be, &Op::LogSoftmax, &[f(x.clone(), &[rows, v])], &[rows, v]).unwrap();
            let out = run(
                &be,
                &Op::LogSoftmaxBackward,
                &[f(y, &[rows, v]), f(dy.clone(), &[rows, v])],
                &[rows, v],
            )
            .unwrap();
            assert_close(
                &format!("log_softmax_backward {rows}x{v} on {lvl}"),
                &out,
                &want_lsm,
                1e-5,
                1e-4,
            );
        }
    }
}

#[test]
fn token_log_probs_and_gather_backward_match_finite_differences() {
    let mut rng = Rng::new(4);
    for (rows, v) in [(3, 5), (4, 33)] {
        let x = rng.vec(rows * v, 3.0);
        let dy = rng.vec(rows, 1.0);
        let t: Vec<i32> = (0..rows).map(|_| rng.below(v) as i32).collect();
        let (x64, dy64) = (to64(&x), to64(&dy));
        let want_tlp = numeric_grad(&x64, |z| dot64(&dy64, &refk::token_log_probs(z, v, &t)));
        let gather = |z: &[f64]| (0..rows).map(|r| z[r * v + t[r] as usize]).collect::<Vec<_>>();
        let want_gather = numeric_grad(&x64, |z| dot64(&dy64, &gather(z)));
        for be in backends() {
            let lvl = be.simd_level();
            let inputs = [
                f(x.clone(), &[rows, v]),
                ids(t.clone(), &[rows]),
                f(dy.clone(), &[rows]),
            ];
            let out = run(&be, &Op::TokenLogProbsBackward, &inputs, &[rows, v]).unwrap();
            assert_close(
                &format!("token_log_probs_backward {rows}x{v} on {lvl}"),
                &out,
                &want_tlp,
                1e-5,
                1e-4,
            );
            let out = run(
                &be,
                &Op::ScatterLastDim,
                &[ids(t.clone(), &[rows]), f(dy.clone(), &[rows])],
                &[rows, v],
            )
            .unwrap();
            assert_close(&format!("scatter_last_dim {rows}x{v}"), &out, &want_gather, 1e-6, 1e-6);
        }
    }
}

#[test]
fn cross_entropy_backward_matches_finite_differences_with_ignored_rows_and_weights() {
    let mut rng = Rng::new(5);
    for (rows, v) in [(4, 6), (6, 35)] {
        let x = rng.vec(rows * v, 3.0);
        let t: Vec<i32> = (0..rows)
            .map(|r| if r == 1 { -1 } else { rng.below(v) as i32 })
            .collect();
        let w: Vec<f32> = (0..rows).map(|r| 0.25 * (r + 1) as f32).collect();
        let dy = 1.7f32;
        let (x64, w64) = (to64(&x), to64(&w));
        let want = numeric_grad(&x64, |z| dy as f64 * refk::cross_entropy(z, v, &t, &w64));
        for be in backends() {
            let inputs = [
                f(x.clone(), &[rows, v]),
                ids(t.clone(), &[rows]),
                f(w.clone(), &[rows]),
                f(vec![dy], &[]),
            ];
            let out = run(&be, &Op::CrossEntropyBackward, &inputs, &[rows, v]).unwrap();
            assert_close(
                &format!("cross_entropy_backward {rows}x{v} on {}", be.simd_level()),
                &out,
                &want,
                1e-5,
                1e-4,
            );
            assert!(
                out[v..2 * v].iter().all(|&g| g == 0.0),
                "ignored row must have zero gradient"
            );
        }
    }
}

#[test]
fn embedding_backward_adds_the_rows_of_repeated_ids() {
    let mut rng = Rng::new(6);
    let (vocab, h) = (9, 13);
    let id_list = vec![2, 5, 2, 8, 0, 2, 5];
    let table = rng.vec(vocab * h, 1.0);
    let dy = rng.vec(id_list.len() * h, 1.0);
    let dy64 = to64(&dy);
    let lookup = |t: &[f64]| {
        id_list
            .iter()
            .flat_map(|&i| t[i as usize * h..(i as usize + 1) * h].to_vec())
            .collect::<Vec<_>>()
    };
    let want = numeric_grad(&to64(&table), |t| dot64(&dy64, &lookup(t)));
    for be in backends() {
        let out = run(
            &be,
            &Op::EmbeddingBackward,
            &[ids(id_list.clone(), &[7]), f(dy.clone(), &[7, h])],
            &[vocab, h],
        )
        .unwrap();
        assert_close("embedding_backward", &out, &want, 1e-6, 1e-5);
    }
    // Many ids over a large table: the vocabulary is split between threads.
    let (vocab, h, n) = (4096, 64, 3000);
    let id_list: Vec<i32> = (0..n).map(|_| rng.below(vocab) as i32).collect();
    let dy = rng.vec(n * h, 1.0);
    let mut want = vec![0.0f64; vocab * h];
    for (i, &id) in id_list.iter().enumerate() {
        for c in 0..h {
            want[id as usize * h + c] += dy[i * h + c] as f64;
        }
    }
    for be in backends() {
        let out = run(
            &be,
            &Op::EmbeddingBackward,
            &[ids(id_list.clone(), &[n]), f(dy.clone(), &[n, h])],
            &[vocab, h],
        )
        .unwrap();
        assert_close("embedding_backward large", &out, &want, 1e-5, 1e-5);
    }
}

#[test]
fn rope_inverse_is_the_gradient_of_rope() {
    let mut rng = Rng::new(7);
    let (b, t, heads, hd, off) = (2, 4, 2, 6, 5);
    let x = rng.vec(b * t * heads * hd, 1.0);
    let dy = rng.vec(b * t * heads * hd, 1.0);
    let dy64 = to64(&dy);
    let want = numeric_grad(&to64(&x), |z| {
        dot64(&dy64, &refk::rope(z, t, heads, hd, 10_000.0, off, false))
    });
    for be in backends() {
        let spec = RopeSpec {
            n_heads: heads,
            head_dim: hd,
            theta: 10_000.0,
            pos_offset: off,
            inverse: true,
            interleaved: false,
            yarn: None,
        };
        let out = run(
            &be,
            &Op::Rope(spec),
            &[f(dy.clone(), &[b, t, heads * hd])],
            &[b, t, heads * hd],
        )
        .unwrap();
        assert_close("rope backward", &out, &want, 1e-5, 1e-4);
    }
}
