//! `Dropout` (LoRA's `lora_dropout`): the mask is `r1_core::graph::dropout_keeps` of seed,
//! salt and index — the same for any thread count —, zeroes about `p` of the elements,
//! scales the rest by `1 / (1 − p)`, changes with the seed and the salt, and the op is its
//! own backward (so `Σ dy ⊙ dropout(x)` has gradient `dropout(dy)`).

mod common;

use common::{Rng, f, ids, run};
use r1_backend_cpu::{CpuBackend, SimdLevel};
use r1_core::Op;
use r1_core::graph::dropout_keeps;

fn dropout(threads: usize, x: &[f32], seed: i32, p: f32, salt: u32) -> Vec<f32> {
    let be = CpuBackend::with_config(threads, SimdLevel::detect()).unwrap();
    let op = Op::Dropout { p, salt };
    run(
        &be,
        &op,
        &[f(x.to_vec(), &[x.len()]), ids(vec![seed], &[1])],
        &[x.len()],
    )
    .unwrap()
}

#[test]
fn the_mask_drops_about_p_and_scales_the_rest() {
    let n = 40_000;
    let x: Vec<f32> = Rng::new(1).vec(n, 1.0).iter().map(|v| v + 2.0).collect();
    for p in [0.05f32, 0.1, 0.5] {
        let y = dropout(2, &x, 7, p, 3);
        let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
        let sd = (p as f64 * (1.0 - p as f64) / n as f64).sqrt();
        assert!((dropped - p as f64).abs() < 5.0 * sd, "p {p}: dropped {dropped}");
        for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
            let keep = dropout_keeps(7, 3, i as u64, p);
            let want = if keep { a * (1.0 / (1.0 - p)) } else { 0.0 };
            assert_eq!(b.to_bits(), want.to_bits(), "p {p}, element {i}");
        }
    }
}

#[test]
fn the_mask_follows_seed_and_salt_not_threads() {
    let x = vec![1.0f32; 5000];
    let one = dropout(1, &x, 11, 0.3, 5);
    assert_eq!(dropout(3, &x, 11, 0.3, 5), one, "thread count");
    assert_ne!(dropout(1, &x, 12, 0.3, 5), one, "seed");
    assert_ne!(dropout(1, &x, 11, 0.3, 6), one, "salt");
}

#[test]
fn its_gradient_is_the_same_mask_on_dy() {
    // L = Σ dy ⊙ dropout(x) is linear in x: ∂L/∂x_i = dy_i · m_i / (1 − p) exactly.
    use r1_core::{Graph, TensorDesc, autodiff};
    let mut g = Graph::new();
    let x = g.input("x", TensorDesc::f32(&[64])).unwrap();
    let seed = g.input("seed", TensorDesc::i32(&[1])).unwrap();
    let y = g.dropout(x, seed, 0.25, 9).unwrap();
    let dy = g.input("dy", TensorDesc::f32(&[64])).unwrap();
    let grads = autodiff::backward(&mut g, &[(y, dy)], &[x]).unwrap();
    let dx = grads[0].expect("a gradient for x");
    assert!(
        matches!(g.nodes()[dx.index()].op, Op::Dropout { p, salt: 9 } if p == 0.25),
        "the backward is the same dropout"
    );
    assert_eq!(g.nodes()[dx.index()].inputs[1], seed, "fed by the same seed");
    // Out-of-range probabilities and a seed of the wrong type are graph errors.
    assert!(g.dropout(x, seed, 1.0, 0).is_err());
    assert!(g.dropout(x, seed, 0.0, 0).is_err());
    assert!(g.dropout(x, x, 0.5, 0).is_err());
}
