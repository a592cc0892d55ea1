//! AdamW, `axpby` and `sum_squares`: the optimizer-side kernels. AdamW is checked against
//! the formula computed by hand in f64 and against `torch.optim.AdamW` values recorded by
//! `fixtures/gen_adamw.py`.

mod common;

use common::{Rng, assert_close, backends};
use r1_backend_cpu::{CpuBackend, CpuBuffer};
use r1_core::TensorDesc;
use r1_core::backend::{AdamWStep, Backend, TensorRef};

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
