//! Shared test harness: run one op on a `CpuBackend` with every operand packed into one
//! buffer at odd offsets (so kernels never rely on alignment), the output pre-filled with
//! NaN (so a kernel that reads its output is caught), plus a seeded generator, f64
//! reference kernels and closeness checks.
#![allow(dead_code)]

pub mod reference;

use r1_backend_cpu::{CpuBackend, SimdLevel};
use r1_core::backend::{Backend, BackendError, TensorRef};
use r1_core::{DType, Op, TensorDesc};

/// An operand: f32 values, i32 ids, or the raw bytes of another dtype (a bf16, f16 or
/// block-quantized weight), with its dims.
#[derive(Clone, Debug)]
pub enum T {
    F(Vec<f32>, Vec<usize>),
    I(Vec<i32>, Vec<usize>),
    Raw(Vec<u8>, DType, Vec<usize>),
}

impl T {
    pub fn desc(&self) -> TensorDesc {
        match self {
            T::F(_, d) => TensorDesc::new(DType::F32, d),
            T::I(_, d) => TensorDesc::new(DType::I32, d),
            T::Raw(_, t, d) => TensorDesc::new(*t, d),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            T::F(v, _) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            T::I(v, _) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            T::Raw(v, _, _) => v.clone(),
        }
    }
}

pub fn f(data: Vec<f32>, dims: &[usize]) -> T {
    assert_eq!(data.len(), dims.iter().product::<usize>(), "test tensor size");
    T::F(data, dims.to_vec())
}

pub fn ids(data: Vec<i32>, dims: &[usize]) -> T {
    assert_eq!(data.len(), dims.iter().product::<usize>(), "test tensor size");
    T::I(data, dims.to_vec())
}

/// A backend per SIMD level this CPU has, each with 2 threads.
pub fn backends() -> Vec<CpuBackend> {
    SimdLevel::available()
        .into_iter()
        .map(|l| CpuBackend::with_config(2, l).unwrap())
        .collect()
}

/// Gap in bytes between operands: 12 bytes keeps offsets off 16/32/64-byte boundaries.
const GAP: usize = 12;

/// Runs `op` with `inputs` into an output of `out_dims`; returns the output.
pub fn run(be: &CpuBackend, op: &Op, inputs: &[T], out_dims: &[usize]) -> Result<Vec<f32>, BackendError> {
    let out_desc = TensorDesc::f32(out_dims);
    let mut offsets = Vec::new();
    let mut at = GAP;
    for t in inputs {
        offsets.push(at);
        // Raw operands may take any number of bytes; f32/i32 ones stay 4-aligned.
        at = (at + t.desc().bytes() + GAP).next_multiple_of(4);
    }
    let out_at = at;
    let total = out_at + out_desc.bytes() + GAP;
    let buf = be.alloc(total)?;
    for (t, &o) in inputs.iter().zip(&offsets) {
        be.upload(&buf, o, &t.bytes())?;
    }
    let nan: Vec<u8> = (0..out_desc.numel()).flat_map(|_| f32::NAN.to_le_bytes()).collect();
    be.upload(&buf, out_at, &nan)?;
    let refs: Vec<TensorRef<'_, _>> = inputs
        .iter()
        .zip(&offsets)
        .map(|(t, &o)| TensorRef {
            buffer: &buf,
            offset: o,
            desc: t.desc(),
        })
        .collect();
    be.run_op(
        op,
        &refs,
        TensorRef {
            buffer: &buf,
            offset: out_at,
            desc: out_desc,
        },
    )?;
    let mut out = vec![0.0f32; out_desc.numel()];
    be.download_f32(&buf, out_at / 4, &mut out)?;
    Ok(out)
}

/// A small deterministic generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Asserts `|got − want| ≤ atol + rtol·|want|` everywhere, naming the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs() - (atol + rtol * w.abs());
        assert!(!g.is_nan() || w.is_nan(), "{what}: NaN at {i} (want {w})");
        if err > worst.1 {
            worst = (i, err);
        }
    }
    let (i, e) = worst;
    assert!(
        e <= 0.0,
        "{what}: element {i} is {} but should be {} (excess error {e:e})",
        got[i],
        want[i]
    );
}

/// Central finite differences of `f` at `x`: `(f(x + h e_i) − f(x − h e_i)) / 2h`.
pub fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let keep = x[i];
            x[i] = keep + h;
            let up = f(&x);
            x[i] = keep - h;
            let down = f(&x);
            x[i] = keep;
            (up - down) / (2.0 * h)
        })
        .collect()
}

pub fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// `Σ_i a[i]·b[i]` in f64.
pub fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Builds `loss` on `g` (leaves bound to `leaves`), appends its gradient with core's
/// autodiff, runs the plan on `be`, and returns the loss and d loss / d `wrt`.
pub fn loss_and_grads(
    be: &CpuBackend,
    mut g: r1_core::Graph,
    loss: r1_core::NodeId,
    leaves: &[(r1_core::NodeId, T)],
    wrt: &[r1_core::NodeId],
) -> (f32, Vec<Vec<f32>>) {
    use r1_core::{Bindings, Executor, Plan, autodiff};
    let seed = g.fill(1.0, &[]).unwrap();
    let grads = autodiff::backward(&mut g, &[(loss, seed)], wrt).unwrap();
    let grads: Vec<_> = grads
        .into_iter()
        .map(|d| d.expect("every wrt node reaches the loss"))
        .collect();
    let mut outs = vec![loss];
    outs.extend(&grads);
    let plan = Plan::new(&g, &outs).unwrap();
    let buffers: Vec<_> = leaves
        .iter()
        .map(|(_, t)| {
            let buf = be.alloc(t.desc().bytes().max(4)).unwrap();
            be.upload(&buf, 0, &t.bytes()).unwrap();
            buf
        })
        .collect();
    let mut bindings = Bindings::new(&g);
    for ((id, _), buf) in leaves.iter().zip(&buffers) {
        bindings.bind(*id, buf, 0).unwrap();
    }
    let mut exec = Executor::new();
    exec.run(be, &g, &plan, &bindings).unwrap();
    let read = |id| exec.read_f32(be, &g, &plan, &bindings, id).unwrap();
    let l = read(loss)[0];
    (l, grads.iter().map(|&d| read(d)).collect())
}

/// Random operands of `op(a)·op(b)` (`Op::MatMul`): `a` of `lead ++ [m, k]` (`[k, m]` when
/// transposed), `b` shared or batched over `lead`, with every operand's dims.
pub struct MatmulCase {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub a_dims: Vec<usize>,
    pub b_dims: Vec<usize>,
    pub o_dims: Vec<usize>,
    items: usize,
    mkn: [usize; 3],
    ta: bool,
    tb: bool,
    batched: bool,
}

impl MatmulCase {
    #[allow(clippy::too_many_arguments)]
    pub fn new(lead: &[usize], m: usize, k: usize, n: usize, ta: bool, tb: bool, batched: bool, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let items: usize = lead.iter().product();
        let a = rng.vec(items * m * k, 1.0);
        let b = rng.vec(if batched { items } else { 1 } * k * n, 1.0);
        let mut a_dims = lead.to_vec();
        a_dims.extend(if ta { [k, m] } else { [m, k] });
        let mut b_dims = if batched { lead.to_vec() } else { vec![] };
        b_dims.extend(if tb { [n, k] } else { [k, n] });
        let mut o_dims = lead.to_vec();
        o_dims.extend([m, n]);
        MatmulCase {
            a,
            b,
            a_dims,
            b_dims,
            o_dims,
            items,
            mkn: [m, k, n],
            ta,
            tb,
            batched,
        }
    }

    pub fn op(&self) -> Op {
        Op::MatMul {
            trans_a: self.ta,
            trans_b: self.tb,
        }
    }

    pub fn inputs(&self) -> [T; 2] {
        [f(self.a.clone(), &self.a_dims), f(self.b.clone(), &self.b_dims)]
    }

    /// The f64 product of `a` and `b`, operands laid out as this case's.
    pub fn reference(&self, a: &[f32], b: &[f32]) -> Vec<f64> {
        let [m, k, n] = self.mkn;
        reference::matmul(
            &to64(a),
            &to64(b),
            self.items,
            if self.batched { self.items } else { 1 },
            m,
            k,
            n,
            self.ta,
            self.tb,
        )
    }

    /// `[dims]ᵀ x [dims]` for messages.
    pub fn name(&self) -> String {
        let t = |on: bool| if on { "ᵀ" } else { "" };
        format!("{:?}{} x {:?}{}", self.a_dims, t(self.ta), self.b_dims, t(self.tb))
    }
}
