//! AdamW, `axpby` and `sum_squares`: the optimizer-side kernels. AdamW is checked against
//! the formula computed by hand in f64 and against `torch.optim.AdamW` values recorded by
//! `fixtures/gen_adamw.py`; AdamW with 8-bit moments against core's per-block reference
//! and, over many steps, against f32 AdamW.

mod common;

use common::{Rng, assert_close, backends};
use r1_backend_cpu::{CpuBackend, CpuBuffer};
use r1_core::TensorDesc;
use r1_core::backend::{AdamWStep, Backend, BackendError, TensorRef};
use r1_core::optim8::{self, AdamWCoefs, Code};

fn tref(buf: &CpuBuffer, at: usize, n: usize) -> TensorRef<'_, CpuBuffer> {
    TensorRef {
        buffer: buf,
        offset: at * 4,
        desc: TensorDesc::f32(&[n]),
    }
}

/// Runs `steps` AdamW updates on one buffer holding `[p | g | m | v]`; returns (p, m, v).
fn run_adamw(be: &CpuBackend, p0: &[f32], grads: &[Vec<f32>], st: AdamWStep) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = p0.len();
    let buf = be.alloc_f32(4 * n + 3).unwrap();
    // Odd offsets: `p` at 1, `g` at n+2, `m` at 2n+2, `v` at 3n+3.
    let (pa, ga, ma, va) = (1, n + 2, 2 * n + 2, 3 * n + 3);
    be.upload_f32(&buf, pa, p0).unwrap();
    for (t, g) in grads.iter().enumerate() {
        be.upload_f32(&buf, ga, g).unwrap();
        let step = AdamWStep {
            step: t as u64 + 1,
            ..st
        };
        be.adamw(
            tref(&buf, pa, n),
            tref(&buf, ga, n),
            tref(&buf, ma, n),
            tref(&buf, va, n),
            &step,
        )
        .unwrap();
    }
    let mut out = vec![vec![0.0; n]; 3];
    for (o, at) in out.iter_mut().zip([pa, ma, va]) {
        be.download_f32(&buf, at, o).unwrap();
    }
    let v = out.pop().unwrap();
    let m = out.pop().unwrap();
    (out.pop().unwrap(), m, v)
}

#[test]
fn adamw_matches_the_hand_computed_update() {
    let mut rng = Rng::new(1);
    let n = 45;
    let p0 = rng.vec(n, 1.0);
    let grads: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(n, 2.0)).collect();
    let st = AdamWStep {
        lr: 0.05,
        beta1: 0.8,
        beta2: 0.99,
        eps: 1e-6,
        weight_decay: 0.2,
        step: 1,
        grad_scale: 0.7,
    };
    // The trait's formula in f64.
    let (mut p, mut m, mut v) = (
        p0.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        vec![0.0; n],
        vec![0.0; n],
    );
    let (lr, b1, b2, eps, wd) = (
        st.lr as f64,
        st.beta1 as f64,
        st.beta2 as f64,
        st.eps as f64,
        st.weight_decay as f64,
    );
    for (t, g) in grads.iter().enumerate() {
        let t = t as i32 + 1;
        for i in 0..n {
            let gi = st.grad_scale as f64 * g[i] as f64;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let mhat = m[i] / (1.0 - b1.powi(t));
            let vhat = v[i] / (1.0 - b2.powi(t));
            p[i] = p[i] - lr * wd * p[i] - lr * mhat / (vhat.sqrt() + eps);
        }
    }
    for be in backends() {
        let (gp, gm, gv) = run_adamw(&be, &p0, &grads, st);
        let lvl = be.simd_level();
        assert_close(&format!("param on {lvl}"), &gp, &p, 1e-6, 1e-5);
        assert_close(&format!("m on {lvl}"), &gm, &m, 1e-7, 1e-5);
        assert_close(&format!("v on {lvl}"), &gv, &v, 1e-7, 1e-5);
    }
}

#[test]
fn adamw_matches_torch_optim_adamw() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adamw_torch.json")).unwrap();
    let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect::<Vec<f32>>()
    };
    let h = &fx["hyper"];
    let hp = |k: &str| h[k].as_f64().unwrap() as f32;
    let st = AdamWStep {
        lr: hp("lr"),
        beta1: hp("beta1"),
        beta2: hp("beta2"),
        eps: hp("eps"),
        weight_decay: hp("weight_decay"),
        step: 1,
        grad_scale: hp("grad_scale"),
    };
    let p0 = floats(&fx["init"]);
    let steps = fx["steps"].as_array().unwrap();
    let grads: Vec<Vec<f32>> = steps.iter().map(|s| floats(&s["grad"])).collect();
    let last = steps.last().unwrap();
    let as64 = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
    for be in backends() {
        let (p, m, v) = run_adamw(&be, &p0, &grads, st);
        let lvl = be.simd_level();
        assert_close(
            &format!("param vs torch on {lvl}"),
            &p,
            &as64(floats(&last["param"])),
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("exp_avg vs torch on {lvl}"),
            &m,
            &as64(floats(&last["exp_avg"])),
            1e-7,
            1e-5,
        );
        assert_close(
            &format!("exp_avg_sq vs torch on {lvl}"),
            &v,
            &as64(floats(&last["exp_avg_sq"])),
            1e-7,
            1e-5,
        );
    }
}

#[test]
fn axpby_accumulates_scales_copies_and_zeroes() {
    let mut rng = Rng::new(2);
    for n in [1, 17, 100_003] {
        let x = rng.vec(n, 1.0);
        let y0 = rng.vec(n, 1.0);
        for be in backends() {
            let buf = be.alloc_f32(2 * n + 1).unwrap();
            let (xr, yr) = (tref(&buf, 0, n), tref(&buf, n + 1, n));
            be.upload_f32(&buf, 0, &x).unwrap();
            let mut got = vec![0.0; n];
            for (a, b) in [(0.5f32, -2.0f32), (1.0, 0.0), (0.0, 3.0), (0.0, 0.0)] {
                be.upload_f32(&buf, n + 1, &y0).unwrap();
                be.axpby(yr, a, xr, b).unwrap();
                be.download_f32(&buf, n + 1, &mut got).unwrap();
                let want: Vec<f64> = (0..n)
                    .map(|i| a as f64 * x[i] as f64 + b as f64 * y0[i] as f64)
                    .collect();
                assert_close(
                    &format!("axpby a={a} b={b} n={n} on {}", be.simd_level()),
                    &got,
                    &want,
                    1e-6,
                    1e-6,
                );
            }
            // Zeroing clears NaN, and y may be its own x.
            be.upload_f32(&buf, n + 1, &vec![f32::NAN; n]).unwrap();
            be.axpby(yr, 0.0, xr, 0.0).unwrap();
            be.download_f32(&buf, n + 1, &mut got).unwrap();
            assert!(got.iter().all(|&v| v == 0.0));
            be.upload_f32(&buf, n + 1, &y0).unwrap();
            be.axpby(yr, 1.0, yr, 1.0).unwrap();
            be.download_f32(&buf, n + 1, &mut got).unwrap();
            assert!(got.iter().zip(&y0).all(|(g, y)| *g == 2.0 * y));
        }
    }
}

#[test]
fn sum_squares_accumulates_in_f64() {
    let mut rng = Rng::new(3);
    let n = 1_000_003;
    let x = rng.vec(n, 1.0);
    let want: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    for be in backends() {
        let buf = be.buffer_from_f32(&x).unwrap();
        let got = be.sum_squares(tref(&buf, 0, n)).unwrap();
        assert!(
            (got - want).abs() <= 1e-6 * want,
            "{got} vs {want} on {}",
            be.simd_level()
        );
    }
}

/// Runs `grads.len()` AdamW steps with 8-bit moments on `p0`; returns (p, m bytes, v bytes).
fn run_adamw_8bit(be: &CpuBackend, p0: &[f32], grads: &[Vec<f32>], st: AdamWStep) -> (Vec<f32>, Vec<u8>, Vec<u8>) {
    let n = p0.len();
    let state = optim8::state_bytes(n);
    let floats = be.alloc_f32(2 * n + 1).unwrap();
    // `m` at an odd byte offset: the kernel must not assume alignment of the codes.
    let moments = be.alloc(2 * state + 1).unwrap();
    let (pa, ga) = (0, n + 1);
    be.upload_f32(&floats, pa, p0).unwrap();
    let m = TensorRef {
        buffer: &moments,
        offset: 1,
        desc: optim8::state_desc(Code::Signed, n),
    };
    let v = TensorRef {
        buffer: &moments,
        offset: 1 + state,
        desc: optim8::state_desc(Code::Unsigned, n),
    };
    for (t, g) in grads.iter().enumerate() {
        be.upload_f32(&floats, ga, g).unwrap();
        let step = AdamWStep {
            step: t as u64 + 1,
            ..st
        };
        be.adamw_8bit(tref(&floats, pa, n), tref(&floats, ga, n), m, v, &step)
            .unwrap();
    }
    let mut p = vec![0.0; n];
    be.download_f32(&floats, pa, &mut p).unwrap();
    let mut bytes = vec![0u8; 2 * state + 1];
    be.download(&moments, 0, &mut bytes).unwrap();
    (p, bytes[1..1 + state].to_vec(), bytes[1 + state..].to_vec())
}

/// Core's per-block reference over a whole tensor, from zero state.
fn reference_adamw_8bit(p0: &[f32], grads: &[Vec<f32>], st: AdamWStep) -> (Vec<f32>, Vec<u8>, Vec<u8>) {
    let n = p0.len();
    let mut p = p0.to_vec();
    let mut m = vec![0u8; optim8::state_bytes(n)];
    let mut v = m.clone();
    for (t, g) in grads.iter().enumerate() {
        let c = AdamWCoefs::new(&AdamWStep {
            step: t as u64 + 1,
            ..st
        });
        let blocks = p
            .chunks_mut(optim8::BLOCK)
            .zip(g.chunks(optim8::BLOCK))
            .zip(m.as_chunks_mut::<{ optim8::BLOCK_BYTES }>().0)
            .zip(v.as_chunks_mut::<{ optim8::BLOCK_BYTES }>().0);
        for (((p, g), m), v) in blocks {
            optim8::adamw_block(&c, p, g, m, v);
        }
    }
    (p, m, v)
}

const ST8: AdamWStep = AdamWStep {
    lr: 0.01,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weight_decay: 0.01,
    step: 1,
    grad_scale: 0.5,
};

#[test]
fn adamw_8bit_equals_the_per_block_reference_bit_for_bit() {
    let mut rng = Rng::new(11);
    // One partial block, a tail after whole blocks, and enough blocks to split over threads.
    for n in [77, 4096 + 77, 200_003] {
        let p0 = rng.vec(n, 1.0);
        let grads: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(n, 3.0)).collect();
        let want = reference_adamw_8bit(&p0, &grads, ST8);
        for be in backends() {
            let got = run_adamw_8bit(&be, &p0, &grads, ST8);
            let lvl = be.simd_level();
            assert!(got.0 == want.0, "params differ from the reference, n={n} on {lvl}");
            assert!(got.1 == want.1, "m differs from the reference, n={n} on {lvl}");
            assert!(got.2 == want.2, "v differs from the reference, n={n} on {lvl}");
        }
    }
}

#[test]
fn adamw_8bit_tracks_f32_adamw_over_many_steps() {
    // Gradients with a persistent direction plus noise, magnitudes spread 1000× inside
    // every block (harsher than neighbouring weights of a real layer): 8-bit moments must
    // move the weights where f32 moments do, within a bound relative to the distance
    // travelled. Measured: 6.4% apart (3.3% with a 10× spread); storing `v` itself instead
    // of its root (bitsandbytes' choice) ends 14× the path apart here, as small `v` round
    // to zero.
    let mut rng = Rng::new(12);
    let n = 3 * optim8::BLOCK + 100;
    let p0 = rng.vec(n, 1.0);
    let scale: Vec<f32> = (0..n).map(|i| 10f32.powf((i % 7) as f32 / 2.0 - 2.0)).collect();
    let drift = rng.vec(n, 1.0);
    let grads: Vec<Vec<f32>> = (0..200)
        .map(|_| {
            let noise = rng.vec(n, 1.0);
            (0..n).map(|i| scale[i] * (drift[i] + noise[i])).collect()
        })
        .collect();
    let be = CpuBackend::with_threads(2).unwrap();
    let (p8, m8, _) = run_adamw_8bit(&be, &p0, &grads, ST8);
    let (p32, m32, _) = run_adamw(&be, &p0, &grads, ST8);
    let travelled: f64 = p32
        .iter()
        .zip(&p0)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let apart: f64 = p8
        .iter()
        .zip(&p32)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(travelled > 1.0, "the weights barely moved ({travelled})");
    assert!(
        apart < 0.1 * travelled,
        "8-bit drifted {apart} from f32 over a path of {travelled}"
    );
    // The first moment dequantizes to within half a code step (relative 0.9/64/2 at the top
    // of a block) of the f32 optimizer's.
    let mut m = vec![0.0f32; optim8::BLOCK];
    for (b, block) in m8.as_chunks::<{ optim8::BLOCK_BYTES }>().0.iter().enumerate() {
        let len = optim8::BLOCK.min(n - b * optim8::BLOCK);
        optim8::dequantize_block(Code::Signed, block, &mut m[..len]);
        let amax = optim8::absmax(block);
        for j in 0..len {
            let want = m32[b * optim8::BLOCK + j];
            assert!(
                (m[j] - want).abs() <= 0.05 * amax,
                "m[{}] = {} vs {want}",
                b * optim8::BLOCK + j,
                m[j]
            );
        }
    }
}

#[test]
fn adamw_8bit_refuses_f32_moments_and_wrong_sizes() {
    let be = CpuBackend::with_threads(1).unwrap();
    let n = 300;
    let floats = be.alloc_f32(4 * n).unwrap();
    let moments = be.alloc(2 * optim8::state_bytes(n)).unwrap();
    let q = |code, at, len| TensorRef {
        buffer: &moments,
        offset: at,
        desc: optim8::state_desc(code, len),
    };
    let (p, g) = (tref(&floats, 0, n), tref(&floats, n, n));
    let err = be
        .adamw_8bit(p, g, tref(&floats, 2 * n, n), tref(&floats, 3 * n, n), &ST8)
        .unwrap_err();
    assert!(
        matches!(err, BackendError::InvalidInput { op: "adamw_8bit", ref detail } if detail.contains("adam8_signed")),
        "{err}"
    );
    let state = optim8::state_bytes(n);
    let swapped = be.adamw_8bit(p, g, q(Code::Unsigned, 0, n), q(Code::Signed, state, n), &ST8);
    assert!(swapped.is_err());
    let short = be.adamw_8bit(p, g, q(Code::Signed, 0, 256), q(Code::Unsigned, state, 256), &ST8);
    assert!(short.is_err());
}
