//! `CpuBackend`: the `r1_core::Backend` implementation. It owns the instruction set the
//! kernels run with, the threads they run on and the cached RoPE tables; `run_op` checks
//! each op's operands (see [`crate::views`]) and calls its kernel.

use r1_core::backend::{AdamWStep, Backend, BackendError, PlanTensors, TensorRef, run_plan_steps};
use r1_core::graph::AttentionSpec;
use r1_core::model::KvCacheType;
use r1_core::optim8;
use r1_core::quant::GgmlType;
use r1_core::{DType, Graph, GraphError, Op, Plan, TensorDesc};

use crate::buffer::CpuBuffer;
use crate::kernels::elementwise::{self, Binary};
use crate::kernels::kv_cache::KvGeometry;
use crate::kernels::rope::RopeCache;
use crate::kernels::softmax::{self, RowOp};
use crate::kernels::{
    Ctx, Past, activation, adamw, attention, checked_past, embedding, kv_cache, matmul, moe, norm, quant_matmul, rope,
    size_error, token_loss,
};
use crate::parallel::{MIN_PARALLEL_WORK, Threads};
use crate::simd::bf16_dot::Bf16Dot;
use crate::simd::{Isa, SimdLevel};
use crate::views::{Access, Views, with_views};

/// Computes graphs on the host CPU: GEMM on matrixmultiply, explicit SIMD (AVX-512,
/// AVX2+FMA or scalar, detected at run time) and threads over rows, heads and blocks.
pub struct CpuBackend {
    isa: Isa,
    threads: Threads,
    rope: RopeCache,
    /// Set by [`CpuBackend::with_bf16_compute`].
    bf16: Option<Bf16Dot>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend::new()
    }
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl CpuBackend {
    /// The best instruction set of this CPU, on rayon's global thread pool.
    pub fn new() -> CpuBackend {
        CpuBackend {
            isa: Isa::best(),
            threads: Threads::global(),
            rope: RopeCache::default(),
            bf16: None,
        }
    }

    /// The best instruction set, on a dedicated pool of `threads` threads (`0`: one per
    /// available core; `1`: everything on the calling thread). The thread that runs a
    /// plan is one of them: kernels split their work between it and `threads - 1`
    /// started here, which wait for the next op spinning, then asleep (see `parallel`).
    pub fn with_threads(threads: usize) -> Result<CpuBackend, BackendError> {
        CpuBackend::with_config(threads, SimdLevel::detect())
    }

    /// A chosen instruction set (an error if this CPU lacks it) and thread count (as in
    /// [`CpuBackend::with_threads`]). Tests use it to compare SIMD paths with the scalar one.
    pub fn with_config(threads: usize, level: SimdLevel) -> Result<CpuBackend, BackendError> {
        let isa =
            Isa::new(level).ok_or_else(|| BackendError::Unavailable(format!("this CPU does not support {level}")))?;
        Ok(CpuBackend {
            isa,
            threads: Threads::dedicated(thread_count(threads))?,
            rope: RopeCache::default(),
            bf16: None,
        })
    }

    /// This backend with f32 matrix products past the decode sizes (more rows than a
    /// decode step's few sequences: training, scoring, prefill) computed in bf16: both
    /// operands rounded to bf16 to nearest even, every product exact and summed in f32
    /// (AVX-512 BF16's `vdpbf16ps`, twice the multiply-adds per instruction of f32 FMA).
    /// Weights, gradients and optimizer state stay f32; attention, norms and the loss are
    /// untouched. An error on a CPU without AVX-512 BF16, or with a lower instruction set
    /// than AVX-512 chosen.
    pub fn with_bf16_compute(mut self) -> Result<CpuBackend, BackendError> {
        let dot = match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(_) => Bf16Dot::detect(),
            _ => None,
        };
        self.bf16 = Some(dot.ok_or_else(|| {
            BackendError::Unavailable(format!(
                "bf16 compute needs AVX-512 BF16, which this CPU (running {}) lacks",
                self.isa.level()
            ))
        })?);
        Ok(self)
    }

    /// Whether f32 matrix products past the decode sizes compute in bf16.
    pub fn bf16_compute(&self) -> bool {
        self.bf16.is_some()
    }

    /// The instruction set the kernels run with.
    pub fn simd_level(&self) -> SimdLevel {
        self.isa.level()
    }

    /// Threads the kernels may use.
    pub fn threads(&self) -> usize {
        self.threads.count()
    }

    /// A zero-filled buffer of `n` f32 values.
    pub fn alloc_f32(&self, n: usize) -> Result<CpuBuffer, BackendError> {
        let bytes = n
            .checked_mul(4)
            .ok_or(BackendError::OutOfMemory { bytes: usize::MAX })?;
        CpuBuffer::zeroed(bytes)
    }

    /// A buffer holding `values`.
    pub fn buffer_from_f32(&self, values: &[f32]) -> Result<CpuBuffer, BackendError> {
        CpuBuffer::from_f32(values)
    }

    /// Copies `src` into `dst` starting at element `offset` (f32 units), no byte conversion.
    pub fn upload_f32(&self, dst: &CpuBuffer, offset: usize, src: &[f32]) -> Result<(), BackendError> {
        dst.upload_f32(offset, src)
    }

    /// Copies `dst.len()` values from element `offset` of `src` into `dst`.
    pub fn download_f32(&self, src: &CpuBuffer, offset: usize, dst: &mut [f32]) -> Result<(), BackendError> {
        src.download_f32(offset, dst)
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            isa: self.isa,
            threads: &self.threads,
            bf16: self.bf16,
        }
    }

    /// `out_i = a · w_iᵀ` for every `(w_i, out_i)` of `products` (f32, 2-D weights, one
    /// `a`), in one parallel region.
    fn matmul_group(
        &self,
        a: TensorRef<'_, CpuBuffer>,
        products: Vec<(TensorRef<'_, CpuBuffer>, TensorRef<'_, CpuBuffer>)>,
    ) -> Result<(), BackendError> {
        use Access::{Read as R, Write as W};
        let mut tensors = vec![(a, R)];
        for &(w, out) in &products {
            tensors.extend([(w, R), (out, W)]);
        }
        let shapes: Vec<_> = products.iter().map(|(w, out)| (w.desc.shape, out.desc.shape)).collect();
        with_views("matmul", &tensors, |mut v| {
            let mut views = Vec::with_capacity(shapes.len());
            for (i, (sw, so)) in shapes.iter().enumerate() {
                views.push((v.f32(1 + 2 * i)?, sw, v.f32_mut(2 + 2 * i)?, so));
            }
            matmul::matmul_group(self.ctx(), v.f32(0)?, &a.desc.shape, views)
        })
    }
}

/// `threads`, or one per available core for `0`.
fn thread_count(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

fn byte_range(buf: &[u8], offset: usize, len: usize, what: &str) -> Result<std::ops::Range<usize>, BackendError> {
    let end = offset.checked_add(len).filter(|&e| e <= buf.len());
    end.map(|e| offset..e).ok_or_else(|| BackendError::OutOfBounds {
        detail: format!("{what} of {len} bytes at byte {offset} of a {}-byte buffer", buf.len()),
    })
}

/// An op whose optional last input (per-sequence positions) may be present.
fn arity_between(op: &Op, inputs: usize, least: usize, most: usize) -> Result<(), BackendError> {
    if !(least..=most).contains(&inputs) {
        return Err(size_error(
            op.name(),
            format!("{inputs} inputs, the op takes {least} to {most}"),
        ));
    }
    Ok(())
}

fn arity(op: &Op, inputs: usize, want: usize) -> Result<(), BackendError> {
    if inputs != want {
        return Err(size_error(op.name(), format!("{inputs} inputs, the op takes {want}")));
    }
    Ok(())
}

fn rank3(op: &'static str, t: &TensorRef<'_, CpuBuffer>) -> Result<[usize; 3], BackendError> {
    match t.desc.shape.dims() {
        &[a, b, c] => Ok([a, b, c]),
        _ => Err(size_error(
            op,
            format!("needs a [B, T, D] tensor, got {}", t.desc.shape),
        )),
    }
}

/// The output must have the shape of input 0 (element-wise and row-wise ops).
fn shaped_like(
    op: &'static str,
    out: &TensorRef<'_, CpuBuffer>,
    x: &TensorRef<'_, CpuBuffer>,
) -> Result<(), BackendError> {
    if out.desc.shape != x.desc.shape {
        return Err(size_error(
            op,
            format!("output {} for an input of {}", out.desc.shape, x.desc.shape),
        ));
    }
    Ok(())
}

/// RMSNorm's weight must be `[D]` for `x [.., D]`.
fn norm_weight(
    op: &'static str,
    x: &TensorRef<'_, CpuBuffer>,
    w: &TensorRef<'_, CpuBuffer>,
) -> Result<(), BackendError> {
    if x.desc.shape.rank() == 0 || w.desc.shape.dims() != [x.desc.shape.last()] {
        return Err(size_error(
            op,
            format!("x {} with weight {}", x.desc.shape, w.desc.shape),
        ));
    }
    Ok(())
}

/// Whether a `MatMul` with a non-f32 `b` is one `kernels::quant_matmul` computes.
fn quant_matmul_operands(op: &Op, a: &TensorDesc, w: &TensorDesc) -> bool {
    matches!(op, Op::MatMul { trans_a: false, .. })
        && a.dtype == DType::F32
        && a.shape.rank() >= 2
        && w.shape.rank() == 2
        && w.rows_are_whole_blocks()
        && quant_matmul::weight_type(w.dtype).is_some()
}

/// The type of a KV cache operand (`kernels::kv_cache`): f32, f16, bf16, Q8_0 or Q4_0 with
/// rows of whole blocks; `None` for anything else.
fn cache_type(d: &TensorDesc) -> Option<GgmlType> {
    KvCacheType::from_dtype(d.dtype)
        .filter(|_| d.rows_are_whole_blocks())
        .map(KvCacheType::ggml)
}

fn same_place(a: &TensorRef<'_, CpuBuffer>, b: &TensorRef<'_, CpuBuffer>) -> bool {
    std::ptr::eq(a.buffer, b.buffer) && a.offset == b.offset
}

/// Most products run as one group (a layer's q, k and v).
const MAX_GROUP: usize = 4;

/// The steps at the start of `ids` that are products `a · wᵀ` of one f32 `a` (the same
/// node) by 2-D f32 weights, as that `a` and each product's weight and output; `None`
/// when fewer than two are. A lone product costs a look at the next node, and tensors
/// are resolved only for a run of two or more.
fn sibling_products<'t>(
    graph: &Graph,
    ids: &[r1_core::NodeId],
    tensors: &'t (dyn PlanTensors<CpuBuffer> + Sync),
) -> Result<Option<ProductGroup<'t>>, GraphError> {
    let product_of = |id: r1_core::NodeId| -> Result<Option<(r1_core::NodeId, r1_core::NodeId)>, GraphError> {
        let node = graph.node(id)?;
        Ok(match (&node.op, node.inputs.as_slice()) {
            (
                Op::MatMul {
                    trans_a: false,
                    trans_b: true,
                },
                &[a, w],
            ) => Some((a, w)),
            _ => None,
        })
    };
    // The run's input, and its weights and outputs by node (the first `len` entries).
    let mut input = None;
    let mut run = [(r1_core::NodeId(0), r1_core::NodeId(0)); MAX_GROUP];
    let mut len = 0;
    for &id in ids.iter().take(MAX_GROUP) {
        match product_of(id)? {
            Some((a, w)) if input.is_none_or(|first| first == a) => {
                input = Some(a);
                run[len] = (w, id);
                len += 1;
            }
            _ => break,
        }
    }
    let Some(input) = input.filter(|_| len >= 2) else {
        return Ok(None);
    };
    let a = tensors.tensor(input)?;
    if a.desc.dtype != DType::F32 || a.desc.shape.rank() < 2 {
        return Ok(None);
    }
    let mut products: Vec<(TensorRef<'t, CpuBuffer>, TensorRef<'t, CpuBuffer>)> = Vec::with_capacity(len);
    for &(w, id) in &run[..len] {
        let (w, out) = (tensors.tensor(w)?, tensors.tensor(id)?);
        // The outputs are written at once, so none may share bytes with the input or
        // another output (a plan never does this for products that are all read later;
        // checked so a group is only ever an optimisation).
        let fits = w.desc.dtype == DType::F32
            && w.desc.shape.rank() == 2
            && out.desc.dtype == DType::F32
            && !overlap(&out, &a)
            && products.iter().all(|(_, o)| !overlap(o, &out));
        if !fits {
            break;
        }
        products.push((w, out));
    }
    Ok((products.len() >= 2).then_some((a, products)))
}

/// Whether two tensors share bytes.
fn overlap(a: &TensorRef<'_, CpuBuffer>, b: &TensorRef<'_, CpuBuffer>) -> bool {
    std::ptr::eq(a.buffer, b.buffer) && a.offset < b.offset + b.desc.bytes() && b.offset < a.offset + a.desc.bytes()
}

/// A group of products: their shared input, and each one's weight and output.
type ProductGroup<'t> = (
    TensorRef<'t, CpuBuffer>,
    Vec<(TensorRef<'t, CpuBuffer>, TensorRef<'t, CpuBuffer>)>,
);

/// Operand `i` of `v`, a KV cache described by `d`, as the kernels read it.
fn stored<'a>(v: &Views<'a>, i: usize, d: &TensorDesc) -> Result<kv_cache::Stored<'a>, BackendError> {
    match cache_type(d) {
        Some(GgmlType::F32) | None => Ok(kv_cache::Stored::F32(v.f32(i)?)),
        Some(ty) => Ok(kv_cache::Stored::Typed(ty, v.bytes(i)?)),
    }
}

/// `KvWrite` into a cache stored as f16, bf16, Q8_0 or Q4_0, in place (the output is the
/// cache): each new row quantized into its slot.
fn typed_kv_write(
    g: KvGeometry,
    pos: usize,
    inputs: &[TensorRef<'_, CpuBuffer>],
    output: TensorRef<'_, CpuBuffer>,
) -> Result<(), BackendError> {
    let name = "kv_write";
    let ty = cache_type(&inputs[0].desc).ok_or_else(|| BackendError::Unsupported {
        op: name,
        detail: format!("a {} cache (f32, f16, bf16, q8_0, q4_0 are)", inputs[0].desc.dtype),
    })?;
    if !same_place(&inputs[0], &output) {
        return Err(size_error(name, format!("a {ty} cache is written in place")));
    }
    if let Some(past) = inputs.get(2) {
        return with_views(
            name,
            &[
                (inputs[1], Access::Read),
                (*past, Access::Read),
                (output, Access::Write),
            ],
            |mut v| {
                let p = checked_past(name, v.i32(1)?, g.batch, g.time, g.capacity)?;
                kv_cache::kv_write_typed(g, Past::PerSeq(&p), ty, v.f32(0)?, v.bytes_mut(2)?)
            },
        );
    }
    with_views(name, &[(inputs[1], Access::Read), (output, Access::Write)], |mut v| {
        kv_cache::kv_write_typed(g, Past::Fixed(pos), ty, v.f32(0)?, v.bytes_mut(1)?)
    })
}

impl CpuBackend {
    /// Attention whose `k` or `v` is a cache stored as f16, bf16, Q8_0 or Q4_0: the rows
    /// each sequence uses are dequantized to f32 ([`kv_cache::rows_f32`]) and the f32
    /// kernel runs on them, so the result is exactly attention over the dequantized cache.
    fn typed_cache_attention(
        &self,
        spec: &AttentionSpec,
        inputs: &[TensorRef<'_, CpuBuffer>],
        output: TensorRef<'_, CpuBuffer>,
    ) -> Result<(), BackendError> {
        use Access::{Read as R, Write as W};
        let name = "attention";
        let ctx = self.ctx();
        let [batch, time, _] = rank3(name, &inputs[0])?;
        let [kb, keys, width] = rank3(name, &inputs[1])?;
        if kb != batch || inputs[2].desc.shape != inputs[1].desc.shape {
            return Err(size_error(
                name,
                format!(
                    "q {}, k {}, v {}",
                    inputs[0].desc.shape, inputs[1].desc.shape, inputs[2].desc.shape
                ),
            ));
        }
        for t in &inputs[1..3] {
            if cache_type(&t.desc).is_none() {
                return Err(BackendError::Unsupported {
                    op: name,
                    detail: format!("a {} cache (f32, f16, bf16, q8_0, q4_0 are)", t.desc.dtype),
                });
            }
        }
        let mut tensors = vec![(inputs[0], R), (inputs[1], R), (inputs[2], R)];
        tensors.extend(inputs.get(3).map(|p| (*p, R)));
        tensors.push((output, W));
        with_views(name, &tensors, |mut v| {
            let (past, used) = match inputs.get(3) {
                Some(_) => {
                    let p = checked_past(name, v.i32(3)?, batch, time, keys)?;
                    let used = p.iter().map(|&p| p + time).collect::<Vec<_>>();
                    (Some(p), used)
                }
                None => (None, vec![spec.kv_len.min(keys); batch]),
            };
            let rows = used.iter().copied().max().unwrap_or(0);
            let mut kf = vec![0.0f32; batch * rows * width];
            let mut vf = vec![0.0f32; batch * rows * width];
            let geometry = (batch, keys, width);
            kv_cache::rows_f32(ctx, stored(&v, 1, &inputs[1].desc)?, geometry, &used, &mut kf)?;
            kv_cache::rows_f32(ctx, stored(&v, 2, &inputs[2].desc)?, geometry, &used, &mut vf)?;
            let q = v.f32(0)?;
            let out = v.f32_mut(3 + usize::from(past.is_some()))?;
            match &past {
                Some(p) => {
                    let spec = AttentionSpec { kv_len: rows, ..*spec };
                    attention::attention(ctx, &spec, time, Past::PerSeq(p), q, &kf, &vf, out)
                }
                None => attention::attention(ctx, spec, time, Past::Fixed(spec.q_offset), q, &kf, &vf, out),
            }
        })
    }
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;

    fn for_each_index(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        self.threads.for_tasks(n, MIN_PARALLEL_WORK, f);
    }

    fn lanes(&self, rows: usize, weight_bytes: usize) -> usize {
        self.threads
            .lanes(rows, weight_bytes, crate::parallel::lane_min_rows(self.isa.level()))
    }

    fn run_lanes(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        self.threads.run_lanes(n, f);
    }

    fn name(&self) -> String {
        let n = self.threads.count();
        format!(
            "cpu ({}{}, {n} thread{})",
            self.isa.level(),
            if self.bf16.is_some() { ", bf16 compute" } else { "" },
            if n == 1 { "" } else { "s" }
        )
    }

    fn alloc(&self, bytes: usize) -> Result<CpuBuffer, BackendError> {
        CpuBuffer::zeroed(bytes)
    }

    fn map_bytes(
        &self,
        bytes: std::sync::Arc<dyn AsRef<[u8]> + Send + Sync>,
    ) -> Result<Option<CpuBuffer>, BackendError> {
        Ok(CpuBuffer::mapped(bytes))
    }

    fn buffer_len(&self, buffer: &CpuBuffer) -> usize {
        buffer.len()
    }

    fn upload(&self, dst: &CpuBuffer, offset: usize, src: &[u8]) -> Result<(), BackendError> {
        dst.with_bytes_mut(|b| {
            let r = byte_range(b, offset, src.len(), "upload")?;
            b[r].copy_from_slice(src);
            Ok(())
        })?
    }

    fn download(&self, src: &CpuBuffer, offset: usize, dst: &mut [u8]) -> Result<(), BackendError> {
        src.with_bytes(|b| {
            let r = byte_range(b, offset, dst.len(), "download")?;
            dst.copy_from_slice(&b[r]);
            Ok(())
        })?
    }

    fn supports(&self, op: &Op, inputs: &[TensorDesc], output: &TensorDesc) -> bool {
        if matches!(op, Op::Input | Op::Param { .. } | Op::Reshape | Op::Slice { .. }) {
            return false;
        }
        // A stored weight that is not f32 (Q8_0, Q4_0, Q4_K, Q6_K, f16, bf16) feeds only
        // `a · wᵀ` with `w [N, K]` 2-D and rows of whole blocks (`kernels::quant_matmul`).
        if let (Op::MatMul { .. }, [a, w]) = (op, inputs)
            && w.dtype != DType::F32
        {
            return quant_matmul_operands(op, a, w) && output.dtype == DType::F32;
        }
        // …and an embedding lookup as its table (`kernels::embedding::embedding_typed`).
        if let (Op::Embedding, [table, ids]) = (op, inputs)
            && table.dtype != DType::F32
        {
            return quant_matmul::weight_type(table.dtype).is_some()
                && table.rows_are_whole_blocks()
                && ids.dtype == DType::I32
                && output.dtype == DType::F32;
        }
        // A KV cache may be f32, f16, bf16, Q8_0 or Q4_0: appended to in its type, read
        // back as f32 by attention (`kernels::kv_cache`).
        match (op, inputs) {
            (Op::KvWrite { .. }, [cache, new, past @ ..]) => {
                return cache_type(cache).is_some()
                    && new.dtype == DType::F32
                    && past.iter().all(|p| p.dtype == DType::I32)
                    && *output == *cache;
            }
            (Op::Attention(_), [q, k, v, past @ ..]) => {
                return q.dtype == DType::F32
                    && cache_type(k).is_some()
                    && cache_type(v).is_some()
                    && past.iter().all(|p| p.dtype == DType::I32)
                    && output.dtype == DType::F32;
            }
            _ => {}
        }
        // Every other kernel computes in f32 on f32 operands (ids and positions are i32).
        inputs.iter().all(|d| matches!(d.dtype, DType::F32 | DType::I32)) && output.dtype == DType::F32
    }

    /// The whole walk runs on a pool thread ([`Threads::run_inside`]): the steps of
    /// [`run_plan_steps`], except that consecutive products of one input by f32 weights —
    /// a layer's q/k/v or gate/up projections, which the model builders emit side by side
    /// — run as one parallel region ([`matmul::matmul_group`]). Every product is cut as
    /// it is alone, so results do not change.
    fn run_plan(
        &self,
        graph: &Graph,
        plan: &Plan,
        steps: std::ops::Range<usize>,
        tensors: &(dyn PlanTensors<CpuBuffer> + Sync),
    ) -> Result<(), GraphError> {
        self.threads.run_inside(|| {
            let ids = plan.steps().get(steps.clone()).ok_or_else(|| GraphError::Shape {
                op: "run_plan",
                detail: format!("steps {steps:?} outside the plan's {}", plan.steps().len()),
            })?;
            // Steps before `single` not yet run go one by one.
            let mut single = 0;
            let mut i = 0;
            while i < ids.len() {
                let Some((a, products)) = sibling_products(graph, &ids[i..], tensors)? else {
                    i += 1;
                    continue;
                };
                let at = steps.start;
                run_plan_steps(self, graph, plan, at + single..at + i, tensors)?;
                let members = products.len();
                let label = graph.node(ids[i])?.label(ids[i]);
                self.matmul_group(a, products).map_err(|e| match e {
                    BackendError::InvalidInput { op, detail } => GraphError::Backend(BackendError::InvalidInput {
                        op,
                        detail: format!("{detail} (node {label})"),
                    }),
                    other => GraphError::Backend(other),
                })?;
                i += members;
                single = i;
            }
            run_plan_steps(self, graph, plan, steps.start + single..steps.end, tensors)
        })
    }

    fn run_op(
        &self,
        op: &Op,
        inputs: &[TensorRef<'_, CpuBuffer>],
        output: TensorRef<'_, CpuBuffer>,
    ) -> Result<(), BackendError> {
        use Access::{Read as R, Write as W};
        let ctx = self.ctx();
        let name = op.name();
        let last = |i: usize| inputs[i].desc.shape.last();
        let elementwise = matches!(
            op,
            Op::Add
                | Op::Mul
                | Op::Scale { .. }
                | Op::Dropout { .. }
                | Op::RmsNorm { .. }
                | Op::Rope(_)
                | Op::Attention(_)
                | Op::Silu
                | Op::SwiGlu
                | Op::Softmax
                | Op::LogSoftmax
                | Op::SiluBackward
                | Op::SoftmaxBackward
                | Op::LogSoftmaxBackward
                | Op::TokenLogProbsBackward
                | Op::CrossEntropyBackward
        );
        if elementwise {
            let x = inputs.first().ok_or_else(|| size_error(name, "no inputs"))?;
            shaped_like(name, &output, x)?;
        }
        match op {
            Op::Input | Op::Param { .. } | Op::Reshape | Op::Slice { .. } => Err(BackendError::Unsupported {
                op: name,
                detail: "leaves and views have no kernel: the executor binds or aliases them".into(),
            }),
            Op::Fill { value } => {
                arity(op, inputs.len(), 0)?;
                with_views(name, &[(output, W)], |mut v| {
                    elementwise::fill(v.f32_mut(0)?, *value);
                    Ok(())
                })
            }
            Op::Embedding => {
                arity(op, inputs.len(), 2)?;
                let hidden = last(0);
                let (ids, out) = (inputs[1].desc.shape, output.desc.shape);
                if inputs[0].desc.shape.rank() != 2
                    || out.rank() != ids.rank() + 1
                    || out.dims()[..ids.rank()] != *ids.dims()
                    || out.last() != hidden
                {
                    return Err(size_error(
                        name,
                        format!("table {} and ids {} into {out}", inputs[0].desc.shape, ids),
                    ));
                }
                if inputs[0].desc.dtype != DType::F32 {
                    let ty =
                        quant_matmul::weight_type(inputs[0].desc.dtype).ok_or_else(|| BackendError::Unsupported {
                            op: name,
                            detail: format!(
                                "a {} table (tables are f32, f16, bf16, q8_0, q4_0, q4_k or q6_k)",
                                inputs[0].desc.dtype
                            ),
                        })?;
                    return with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                        embedding::embedding_typed(ctx, ty, hidden, v.bytes(0)?, v.i32(1)?, v.f32_mut(2)?)
                    });
                }
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    embedding::embedding(ctx, hidden, v.f32(0)?, v.i32(1)?, v.f32_mut(2)?)
                })
            }
            Op::MatMul { trans_a, trans_b } => {
                arity(op, inputs.len(), 2)?;
                let (sa, sb, so) = (inputs[0].desc.shape, inputs[1].desc.shape, output.desc.shape);
                if inputs[1].desc.dtype != DType::F32 {
                    let ty = quant_matmul::weight_type(inputs[1].desc.dtype)
                        .filter(|_| quant_matmul_operands(op, &inputs[0].desc, &inputs[1].desc))
                        .ok_or_else(|| BackendError::Unsupported {
                            op: name,
                            detail: format!(
                                "a {} weight {} feeds only a · wᵀ or a · w with a 2-D w of whole \
                                 blocks (q8_0, q4_0, q4_k, q6_k, f16, bf16) and an f32 a",
                                inputs[1].desc.dtype, sb
                            ),
                        })?;
                    // `a · wᵀ` (forward, through a packed copy of the weight where this
                    // CPU has a kernel for one) or `a · w` (the input gradient of a
                    // frozen weight).
                    if !*trans_b {
                        return with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                            quant_matmul::matmul_w(ctx, ty, v.f32(0)?, &sa, v.bytes(1)?, &sb, v.f32_mut(2)?, &so)
                        });
                    }
                    let packed = quant_matmul::packed_weight(ctx, ty, inputs[1].buffer, inputs[1].offset, &sb, &sa)?;
                    return with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                        let packed = packed.as_ref().map(|p| p.as_slice());
                        quant_matmul::matmul(ctx, ty, v.f32(0)?, &sa, v.bytes(1)?, packed, &sb, v.f32_mut(2)?, &so)
                    });
                }
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    matmul::matmul(
                        ctx,
                        *trans_a,
                        *trans_b,
                        v.f32(0)?,
                        &sa,
                        v.f32(1)?,
                        &sb,
                        v.f32_mut(2)?,
                        &so,
                    )
                })
            }
            Op::Add | Op::Mul => {
                arity(op, inputs.len(), 2)?;
                let kind = if matches!(op, Op::Add) {
                    Binary::Add
                } else {
                    Binary::Mul
                };
                if !inputs[0].desc.shape.ends_with(&inputs[1].desc.shape) {
                    return Err(size_error(
                        name,
                        format!("{} is not a suffix of {}", inputs[1].desc.shape, inputs[0].desc.shape),
                    ));
                }
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    elementwise::broadcast(ctx, kind, v.f32(0)?, v.f32(1)?, v.f32_mut(2)?)
                })
            }
            Op::Scale { factor } => {
                arity(op, inputs.len(), 1)?;
                with_views(name, &[(inputs[0], R), (output, W)], |mut v| {
                    elementwise::scale(ctx, *factor, v.f32(0)?, v.f32_mut(1)?)
                })
            }
            Op::Dropout { p, salt } => {
                arity(op, inputs.len(), 2)?;
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    let seed = *v.i32(1)?.first().ok_or_else(|| size_error(name, "an empty seed"))?;
                    elementwise::dropout(ctx, *p, *salt, seed as u32, v.f32(0)?, v.f32_mut(2)?)
                })
            }
            Op::RmsNorm { eps } => {
                arity(op, inputs.len(), 2)?;
                norm_weight(name, &inputs[0], &inputs[1])?;
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    norm::rms_norm(ctx, *eps, v.f32(0)?, v.f32(1)?, v.f32_mut(2)?)
                })
            }
            Op::Rope(spec) => {
                arity_between(op, inputs.len(), 1, 2)?;
                let [batch, time, _] = rank3(name, &inputs[0])?;
                if let [x, past] = inputs {
                    return with_views(name, &[(*x, R), (*past, R), (output, W)], |mut v| {
                        let p = checked_past(name, v.i32(1)?, batch, 0, usize::MAX)?;
                        rope::rope(ctx, &self.rope, spec, time, Past::PerSeq(&p), v.f32(0)?, v.f32_mut(2)?)
                    });
                }
                with_views(name, &[(inputs[0], R), (output, W)], |mut v| {
                    let past = Past::Fixed(spec.pos_offset);
                    rope::rope(ctx, &self.rope, spec, time, past, v.f32(0)?, v.f32_mut(1)?)
                })
            }
            Op::Attention(spec) => {
                arity_between(op, inputs.len(), 3, 4)?;
                let [batch, time, _] = rank3(name, &inputs[0])?;
                let [_, keys, _] = rank3(name, &inputs[1])?;
                if inputs[1].desc.dtype != DType::F32 || inputs[2].desc.dtype != DType::F32 {
                    return self.typed_cache_attention(spec, inputs, output);
                }
                if let [q, k, vv, past] = inputs {
                    return with_views(name, &[(*q, R), (*k, R), (*vv, R), (*past, R), (output, W)], |mut v| {
                        let p = checked_past(name, v.i32(3)?, batch, time, keys)?;
                        let (q, k, vv) = (v.f32(0)?, v.f32(1)?, v.f32(2)?);
                        attention::attention(ctx, spec, time, Past::PerSeq(&p), q, k, vv, v.f32_mut(4)?)
                    });
                }
                with_views(
                    name,
                    &[(inputs[0], R), (inputs[1], R), (inputs[2], R), (output, W)],
                    |mut v| {
                        let past = Past::Fixed(spec.q_offset);
                        attention::attention(ctx, spec, time, past, v.f32(0)?, v.f32(1)?, v.f32(2)?, v.f32_mut(3)?)
                    },
                )
            }
            Op::Silu => {
                arity(op, inputs.len(), 1)?;
                with_views(name, &[(inputs[0], R), (output, W)], |mut v| {
                    activation::silu(ctx, v.f32(0)?, v.f32_mut(1)?)
                })
            }
            Op::SwiGlu => {
                arity(op, inputs.len(), 2)?;
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    activation::swiglu(ctx, v.f32(0)?, v.f32(1)?, v.f32_mut(2)?)
                })
            }
            Op::Softmax | Op::LogSoftmax => {
                arity(op, inputs.len(), 1)?;
                let kind = if matches!(op, Op::Softmax) {
                    RowOp::Softmax
                } else {
                    RowOp::LogSoftmax
                };
                let cols = last(0);
                with_views(name, &[(inputs[0], R), (output, W)], |mut v| {
                    softmax::rows(ctx, kind, cols, v.f32(0)?, &[], v.f32_mut(1)?)
                })
            }
            Op::GatherLastDim => {
                arity(op, inputs.len(), 2)?;
                let vocab = last(0);
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    token_loss::gather_last_dim(vocab, v.f32(0)?, v.i32(1)?, v.f32_mut(2)?)
                })
            }
            Op::TokenLogProbs => {
                arity(op, inputs.len(), 2)?;
                let vocab = last(0);
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    token_loss::token_log_probs(ctx, vocab, v.f32(0)?, v.i32(1)?, v.f32_mut(2)?)
                })
            }
            Op::CrossEntropy => {
                arity(op, inputs.len(), 3)?;
                let vocab = last(0);
                with_views(
                    name,
                    &[(inputs[0], R), (inputs[1], R), (inputs[2], R), (output, W)],
                    |mut v| token_loss::cross_entropy(ctx, vocab, v.f32(0)?, v.i32(1)?, v.f32(2)?, v.f32_mut(3)?),
                )
            }
            Op::Entropy => {
                arity(op, inputs.len(), 1)?;
                let cols = last(0);
                with_views(name, &[(inputs[0], R), (output, W)], |mut v| {
                    softmax::entropy(ctx, cols, v.f32(0)?, v.f32_mut(1)?)
                })
            }
            Op::SumAll => {
                arity(op, inputs.len(), 1)?;
                with_views(name, &[(inputs[0], R), (output, W)], |mut v| {
                    elementwise::sum_all(ctx, v.f32(0)?, v.f32_mut(1)?)
                })
            }
            Op::ReduceToShape => {
                arity(op, inputs.len(), 1)?;
                if !inputs[0].desc.shape.ends_with(&output.desc.shape) {
                    return Err(size_error(
                        name,
                        format!("{} is not a suffix of {}", output.desc.shape, inputs[0].desc.shape),
                    ));
                }
                with_views(name, &[(inputs[0], R), (output, W)], |mut v| {
                    elementwise::reduce_to_shape(ctx, v.f32(0)?, v.f32_mut(1)?)
                })
            }
            Op::EmbeddingBackward => {
                arity(op, inputs.len(), 2)?;
                let hidden = output.desc.shape.last();
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    embedding::embedding_backward(ctx, hidden, v.i32(0)?, v.f32(1)?, v.f32_mut(2)?)
                })
            }
            Op::RmsNormBackward { eps } => {
                arity(op, inputs.len(), 3)?;
                norm_weight(name, &inputs[0], &inputs[1])?;
                with_views(
                    name,
                    &[(inputs[0], R), (inputs[1], R), (inputs[2], R), (output, W)],
                    |mut v| norm::rms_norm_backward(ctx, *eps, v.f32(0)?, v.f32(1)?, v.f32(2)?, v.f32_mut(3)?),
                )
            }
            Op::AttentionBackward(spec) => {
                arity(op, inputs.len(), 4)?;
                let [_, time, _] = rank3(name, &inputs[0])?;
                let tensors = [
                    (inputs[0], R),
                    (inputs[1], R),
                    (inputs[2], R),
                    (inputs[3], R),
                    (output, W),
                ];
                with_views(name, &tensors, |mut v| {
                    attention::attention_backward(
                        ctx,
                        spec,
                        time,
                        v.f32(0)?,
                        v.f32(1)?,
                        v.f32(2)?,
                        v.f32(3)?,
                        v.f32_mut(4)?,
                    )
                })
            }
            Op::SiluBackward => {
                arity(op, inputs.len(), 2)?;
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    activation::silu_backward(ctx, v.f32(0)?, v.f32(1)?, v.f32_mut(2)?)
                })
            }
            Op::SwiGluBackward => {
                arity(op, inputs.len(), 3)?;
                with_views(
                    name,
                    &[(inputs[0], R), (inputs[1], R), (inputs[2], R), (output, W)],
                    |mut v| activation::swiglu_backward(ctx, v.f32(0)?, v.f32(1)?, v.f32(2)?, v.f32_mut(3)?),
                )
            }
            Op::SoftmaxBackward | Op::LogSoftmaxBackward => {
                arity(op, inputs.len(), 2)?;
                let kind = if matches!(op, Op::SoftmaxBackward) {
                    RowOp::SoftmaxBackward
                } else {
                    RowOp::LogSoftmaxBackward
                };
                let cols = last(0);
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    softmax::rows(ctx, kind, cols, v.f32(0)?, v.f32(1)?, v.f32_mut(2)?)
                })
            }
            Op::ScatterLastDim => {
                arity(op, inputs.len(), 2)?;
                let vocab = output.desc.shape.last();
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    token_loss::scatter_last_dim(vocab, v.i32(0)?, v.f32(1)?, v.f32_mut(2)?)
                })
            }
            Op::TokenLogProbsBackward => {
                arity(op, inputs.len(), 3)?;
                let vocab = last(0);
                with_views(
                    name,
                    &[(inputs[0], R), (inputs[1], R), (inputs[2], R), (output, W)],
                    |mut v| {
                        token_loss::token_log_probs_backward(ctx, vocab, v.f32(0)?, v.i32(1)?, v.f32(2)?, v.f32_mut(3)?)
                    },
                )
            }
            Op::CrossEntropyBackward => {
                arity(op, inputs.len(), 4)?;
                let vocab = last(0);
                let tensors = [
                    (inputs[0], R),
                    (inputs[1], R),
                    (inputs[2], R),
                    (inputs[3], R),
                    (output, W),
                ];
                with_views(name, &tensors, |mut v| {
                    token_loss::cross_entropy_backward(
                        ctx,
                        vocab,
                        v.f32(0)?,
                        v.i32(1)?,
                        v.f32(2)?,
                        v.f32(3)?,
                        v.f32_mut(4)?,
                    )
                })
            }
            Op::HeadSlice { width, start, len } | Op::HeadSliceBackward { width, start, len } => {
                arity(op, inputs.len(), 1)?;
                let backward = matches!(op, Op::HeadSliceBackward { .. });
                with_views(name, &[(inputs[0], R), (output, W)], |mut v| {
                    let (x, o) = (v.f32(0)?, v.f32_mut(1)?);
                    if backward {
                        moe::head_slice_backward(*width, *start, *len, x, o)
                    } else {
                        moe::head_slice(*width, *start, *len, x, o)
                    }
                })
            }
            Op::ConcatHeads { heads, b_shared } => {
                arity(op, inputs.len(), 2)?;
                let wa = last(0) / (*heads).max(1);
                let wb = if *b_shared { last(1) } else { last(1) / (*heads).max(1) };
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    moe::concat_heads(*heads, wa, wb, *b_shared, v.f32(0)?, v.f32(1)?, v.f32_mut(2)?)
                })
            }
            Op::SwapDims01 => {
                arity(op, inputs.len(), 1)?;
                let [a, b, c] = rank3(name, &inputs[0])?;
                with_views(name, &[(inputs[0], R), (output, W)], |mut v| {
                    moe::swap_dims01(a, b, c, v.f32(0)?, v.f32_mut(1)?)
                })
            }
            Op::SumHeads { heads } => {
                arity(op, inputs.len(), 1)?;
                let d = output.desc.shape.last();
                with_views(name, &[(inputs[0], R), (output, W)], |mut v| {
                    moe::sum_heads(*heads, d, v.f32(0)?, v.f32_mut(1)?)
                })
            }
            Op::MoeGate(routing) => {
                arity(op, inputs.len(), 2)?;
                with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                    moe::moe_gate(routing, v.f32(0)?, v.f32(1)?, v.f32_mut(2)?)
                })
            }
            Op::MoeGateBackward(routing) => {
                arity(op, inputs.len(), 3)?;
                with_views(
                    name,
                    &[(inputs[0], R), (inputs[1], R), (inputs[2], R), (output, W)],
                    |mut v| moe::moe_gate_backward(routing, v.f32(0)?, v.f32(1)?, v.f32(2)?, v.f32_mut(3)?),
                )
            }
            Op::MoeExperts | Op::MoeExpertsBackward => {
                let backward = matches!(op, Op::MoeExpertsBackward);
                let n_weights = inputs.len().saturating_sub(if backward { 3 } else { 2 });
                if inputs.len() < 5 || !n_weights.is_multiple_of(3) {
                    return Err(size_error(name, format!("{} operands", inputs.len())));
                }
                let h = last(0);
                let mut tensors: Vec<_> = inputs.iter().map(|t| (*t, R)).collect();
                tensors.push((output, W));
                with_views(name, &tensors, |mut v| {
                    let experts = (0..n_weights / 3)
                        .map(|e| {
                            Ok(moe::Expert {
                                gate: v.f32(2 + 3 * e)?,
                                up: v.f32(3 + 3 * e)?,
                                down: v.f32(4 + 3 * e)?,
                            })
                        })
                        .collect::<Result<Vec<_>, BackendError>>()?;
                    let (x, gates) = (v.f32(0)?, v.f32(1)?);
                    let last_in = inputs.len();
                    if backward {
                        let dy = v.f32(last_in - 1)?;
                        moe::moe_experts_backward(ctx, h, x, gates, &experts, dy, v.f32_mut(last_in)?)
                    } else {
                        moe::moe_experts(ctx, h, x, gates, &experts, v.f32_mut(last_in)?)
                    }
                })
            }
            Op::KvWrite { pos } => {
                arity_between(op, inputs.len(), 2, 3)?;
                let [batch, capacity, row] = rank3(name, &inputs[0])?;
                let [nb, time, nrow] = rank3(name, &inputs[1])?;
                if nb != batch || nrow != row || output.desc != inputs[0].desc {
                    return Err(size_error(
                        name,
                        format!(
                            "{} into cache {} (output {})",
                            inputs[1].desc.shape, inputs[0].desc.shape, output.desc.shape
                        ),
                    ));
                }
                let g = KvGeometry {
                    batch,
                    capacity,
                    time,
                    row,
                };
                if inputs[0].desc.dtype != DType::F32 {
                    return typed_kv_write(g, *pos, inputs, output);
                }
                if let Some(past) = inputs.get(2) {
                    if !same_place(&inputs[0], &output) {
                        return Err(size_error(
                            name,
                            "a kv_write at per-sequence positions writes its cache in place",
                        ));
                    }
                    return with_views(name, &[(inputs[1], R), (*past, R), (output, W)], |mut v| {
                        let p = checked_past(name, v.i32(1)?, batch, time, capacity)?;
                        kv_cache::kv_write(g, Past::PerSeq(&p), v.f32(0)?, v.f32_mut(2)?)
                    });
                }
                if same_place(&inputs[0], &output) {
                    // The documented case: the output is the cache, written in place.
                    with_views(name, &[(inputs[1], R), (output, W)], |mut v| {
                        kv_cache::kv_write(g, Past::Fixed(*pos), v.f32(0)?, v.f32_mut(1)?)
                    })
                } else {
                    // A separate output: the cache with the new rows written over it.
                    with_views(name, &[(inputs[0], R), (inputs[1], R), (output, W)], |mut v| {
                        let out = v.f32_mut(2)?;
                        out.copy_from_slice(v.f32(0)?);
                        kv_cache::kv_write(g, Past::Fixed(*pos), v.f32(1)?, out)
                    })
                }
            }
        }
    }

    fn axpby(
        &self,
        y: TensorRef<'_, CpuBuffer>,
        a: f32,
        x: TensorRef<'_, CpuBuffer>,
        b: f32,
    ) -> Result<(), BackendError> {
        if x.desc.numel() != y.desc.numel() || x.desc.dtype != DType::F32 {
            return Err(size_error(
                "axpby",
                format!(
                    "x {} {} and y {} {}",
                    x.desc.dtype, x.desc.shape, y.desc.dtype, y.desc.shape
                ),
            ));
        }
        let ctx = self.ctx();
        if a == 0.0 || same_place(&x, &y) {
            // `x` unread (a = 0), or `x` is `y`: y ← (a + b)·y.
            let b = if a == 0.0 { b } else { a + b };
            return with_views("axpby", &[(y, Access::Write)], |mut v| {
                elementwise::axpby(ctx, v.f32_mut(0)?, None, b)
            });
        }
        with_views("axpby", &[(y, Access::Write), (x, Access::Read)], |mut v| {
            let xs = v.f32(1)?;
            elementwise::axpby(ctx, v.f32_mut(0)?, Some((a, xs)), b)
        })
    }

    fn sum_squares(&self, x: TensorRef<'_, CpuBuffer>) -> Result<f64, BackendError> {
        let ctx = self.ctx();
        with_views("sum_squares", &[(x, Access::Read)], |v| {
            Ok(elementwise::sum_squares(ctx, v.f32(0)?))
        })
    }

    fn adamw(
        &self,
        param: TensorRef<'_, CpuBuffer>,
        grad: TensorRef<'_, CpuBuffer>,
        m: TensorRef<'_, CpuBuffer>,
        v: TensorRef<'_, CpuBuffer>,
        step: &AdamWStep,
    ) -> Result<(), BackendError> {
        let ctx = self.ctx();
        let tensors = [
            (param, Access::Write),
            (grad, Access::Read),
            (m, Access::Write),
            (v, Access::Write),
        ];
        with_views("adamw", &tensors, |mut views| {
            let g = views.f32(1)?;
            let (p, m, v) = (views.f32_mut(0)?, views.f32_mut(2)?, views.f32_mut(3)?);
            adamw::adamw(ctx, step, p, g, m, v)
        })
    }

    fn adamw_8bit(
        &self,
        param: TensorRef<'_, CpuBuffer>,
        grad: TensorRef<'_, CpuBuffer>,
        m: TensorRef<'_, CpuBuffer>,
        v: TensorRef<'_, CpuBuffer>,
        step: &AdamWStep,
    ) -> Result<(), BackendError> {
        let n = param.desc.numel();
        for (t, code) in [(&m, optim8::Code::Signed), (&v, optim8::Code::Unsigned)] {
            let want = optim8::state_desc(code, n);
            if t.desc != want {
                return Err(BackendError::InvalidInput {
                    op: "adamw_8bit",
                    detail: format!(
                        "the moment of {n} values must be {} {}, not {} {}",
                        want.dtype, want.shape, t.desc.dtype, t.desc.shape
                    ),
                });
            }
        }
        let ctx = self.ctx();
        let tensors = [
            (param, Access::Write),
            (grad, Access::Read),
            (m, Access::Write),
            (v, Access::Write),
        ];
        with_views("adamw_8bit", &tensors, |mut views| {
            let g = views.f32(1)?;
            let (p, m, v) = (views.f32_mut(0)?, views.bytes_mut(2)?, views.bytes_mut(3)?);
            adamw::adamw_8bit(ctx, step, p, g, m, v)
        })
    }
}
