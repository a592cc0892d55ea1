//! The backend seam: the kernels a graph needs, on a backend's own opaque buffers.
//!
//! Core never sees a host pointer of a backend: it asks for buffers, uploads and
//! downloads bytes, and asks the backend to run one op at a time on byte ranges of its
//! buffers. A backend may run asynchronously (a CUDA stream) until `download` or
//! `synchronize`, which wait.
//!
//! Buffers are written through shared references (`&Self::Buffer`): a backend's buffer
//! type has interior mutability (a device pointer, or host memory behind a cell). The
//! executor guarantees that an op's output range never overlaps its inputs' ranges,
//! except for [`Op::KvWrite`], whose output *is* its input 0 (written in place).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use crate::error::GraphError;
use crate::graph::{Graph, NodeId, Op};
use crate::plan::Plan;
use crate::tensor::TensorDesc;

/// Where the tensors of a running plan live: the executor's arena and the caller-bound
/// leaves, resolved per node. What [`Backend::run_plan`] reads its operands through.
pub trait PlanTensors<Buf> {
    /// The tensor of node `id` (its storage must be live at this point of the plan).
    fn tensor(&self, id: NodeId) -> Result<TensorRef<'_, Buf>, GraphError>;
}

/// Why a backend could not do what was asked.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendError {
    /// The backend cannot be used here (e.g. "no CUDA device", driver not found).
    Unavailable(String),
    /// An allocation failed.
    OutOfMemory {
        /// Size of the allocation that failed.
        bytes: usize,
    },
    /// The op (or this variant of it) is not implemented by the backend.
    Unsupported {
        /// The op's [`Op::name`].
        op: &'static str,
        /// Which variant or operand dtype is missing.
        detail: String,
    },
    /// Data fed at run time is invalid for the op (a token id outside the vocabulary…).
    InvalidInput {
        /// The op's [`Op::name`].
        op: &'static str,
        /// The bad value and where it is (the executor appends the node's label).
        detail: String,
    },
    /// A byte range outside a buffer, or sizes that do not match.
    OutOfBounds {
        /// The range and the buffer size.
        detail: String,
    },
    /// Any other device or driver failure.
    Device(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Unavailable(m) => write!(f, "backend unavailable: {m}"),
            BackendError::OutOfMemory { bytes } => write!(f, "out of memory allocating {bytes} bytes"),
            BackendError::Unsupported { op, detail } => write!(f, "{op} is not supported: {detail}"),
            BackendError::InvalidInput { op, detail } => write!(f, "{op}: invalid input: {detail}"),
            BackendError::OutOfBounds { detail } => write!(f, "out of bounds: {detail}"),
            BackendError::Device(m) => write!(f, "device error: {m}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BackendError {}

/// A tensor living in a backend buffer: `desc.bytes()` bytes starting at byte `offset`.
pub struct TensorRef<'a, B> {
    /// The backend buffer holding the tensor.
    pub buffer: &'a B,
    /// Byte offset of the tensor's first element in `buffer`.
    pub offset: usize,
    /// Element type and shape (`desc.bytes()` bytes from `offset`).
    pub desc: TensorDesc,
}

impl<B> Clone for TensorRef<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for TensorRef<'_, B> {}

impl<B> fmt::Debug for TensorRef<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TensorRef({} {} @ {})",
            self.desc.dtype, self.desc.shape, self.offset
        )
    }
}

/// One AdamW update (decoupled weight decay, Loshchilov & Hutter; bias-corrected moments
/// as in `torch.optim.AdamW`):
/// `g ← grad_scale·g; m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;`
/// `p ← p − lr·wd·p − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + eps)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// Learning rate for this step (after any schedule).
    pub lr: f32,
    /// First-moment decay `β1` (PyTorch's default 0.9).
    pub beta1: f32,
    /// Second-moment decay `β2` (PyTorch's default 0.999).
    pub beta2: f32,
    /// Added to `sqrt(v̂)` in the denominator (PyTorch's default 1e-8).
    pub eps: f32,
    /// Decoupled weight decay `wd`, applied as `p ← p − lr·wd·p`.
    pub weight_decay: f32,
    /// 1-based step count for bias correction.
    pub step: u64,
    /// Multiplies the gradient first (clipping coefficient × accumulation average).
    pub grad_scale: f32,
}

/// The kernels a graph needs. See the module docs for the buffer contract.
pub trait Backend: Sync {
    /// Device memory, opaque to core. Shared by the threads of a backend that runs a
    /// plan on a pool, and by the lanes of [`Backend::run_lanes`].
    type Buffer: Send + Sync;

    /// A human-readable name ("cpu (avx512, 2 threads)", "cuda:0 NVIDIA H200").
    fn name(&self) -> String;

    /// A zero-filled buffer of `bytes` bytes.
    fn alloc(&self, bytes: usize) -> Result<Self::Buffer, BackendError>;

    /// A read-only buffer over `bytes` without copying them (a memory-mapped weight), where
    /// the backend computes on host memory; `Ok(None)` where it cannot (a device backend),
    /// and the caller uploads a copy instead. The buffer keeps `bytes` alive; writing to it
    /// is an error.
    fn map_bytes(&self, bytes: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Result<Option<Self::Buffer>, BackendError> {
        let _ = bytes;
        Ok(None)
    }

    /// Size of a buffer in bytes.
    fn buffer_len(&self, buffer: &Self::Buffer) -> usize;

    /// Copies `src` into `dst` at byte `offset`.
    fn upload(&self, dst: &Self::Buffer, offset: usize, src: &[u8]) -> Result<(), BackendError>;

    /// Copies bytes from `src` at byte `offset` into `dst`; waits for pending work.
    fn download(&self, src: &Self::Buffer, offset: usize, dst: &mut [u8]) -> Result<(), BackendError>;

    /// Runs `f(i)` for every `i in 0..n` on the host threads this backend was given, in
    /// any order and possibly at once: host work between device steps that should use
    /// those cores and no others (sampling the rows of a decode step). The default runs
    /// them in order on the calling thread.
    fn for_each_index(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..n).for_each(f);
    }

    /// How many lanes ([`Backend::run_lanes`]) a step over `rows` independent rows is best
    /// cut into, when each lane reads all `weight_bytes` of the weights: 1 where one plan
    /// over all the rows is faster (few rows, weights streamed from memory, one thread, or
    /// a device that runs one plan at a time anyway).
    fn lanes(&self, rows: usize, weight_bytes: usize) -> usize {
        let _ = (rows, weight_bytes);
        1
    }

    /// Runs `f(i)` for every `i in 0..n` at once, each on its own host thread whose
    /// kernels keep their work on that thread: the backend's threads divided between
    /// independent plans instead of between the pieces of each op. A decode step over
    /// many sequences, cut into `n` groups of rows each running its own plan, then has
    /// its threads meet once per step instead of once per op. The default runs them in
    /// order on the calling thread.
    fn run_lanes(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..n).for_each(f);
    }

    /// Waits until all queued work is done.
    fn synchronize(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Whether [`Backend::run_op`] implements `op` on operands described by `inputs`
    /// (in the order [`Op`] documents) producing `output`. Asked once per step when a
    /// plan is built ([`crate::Plan::for_backend`]), never while it runs.
    fn supports(&self, op: &Op, inputs: &[TensorDesc], output: &TensorDesc) -> bool;

    /// Runs the steps `steps` of `plan` (a whole plan, or the forward or backward part
    /// of one). The default walks them one op at a time through [`Backend::run_op`]
    /// ([`run_plan_steps`]); a GPU backend may capture or fuse the sequence instead (a
    /// CUDA graph), a CPU backend may hand the whole walk to its thread pool.
    fn run_plan(
        &self,
        graph: &Graph,
        plan: &Plan,
        steps: Range<usize>,
        tensors: &(dyn PlanTensors<Self::Buffer> + Sync),
    ) -> Result<(), GraphError> {
        run_plan_steps(self, graph, plan, steps, tensors)
    }

    /// Computes one non-leaf, non-view op: reads `inputs` (in the order [`Op`] documents)
    /// and writes `output`.
    fn run_op(
        &self,
        op: &Op,
        inputs: &[TensorRef<'_, Self::Buffer>],
        output: TensorRef<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;

    /// `y ← a·x + b·y` over f32 tensors of equal size (gradient accumulation, zeroing
    /// with `a = b = 0`, scaling, copying with `a = 1, b = 0`).
    fn axpby(
        &self,
        y: TensorRef<'_, Self::Buffer>,
        a: f32,
        x: TensorRef<'_, Self::Buffer>,
        b: f32,
    ) -> Result<(), BackendError>;

    /// `Σ x²` over an f32 tensor, accumulated in f64 (gradient norms). Waits.
    fn sum_squares(&self, x: TensorRef<'_, Self::Buffer>) -> Result<f64, BackendError>;

    /// One AdamW update of `param` in place from `grad`, with moments `m`, `v` (all f32,
    /// equal size).
    fn adamw(
        &self,
        param: TensorRef<'_, Self::Buffer>,
        grad: TensorRef<'_, Self::Buffer>,
        m: TensorRef<'_, Self::Buffer>,
        v: TensorRef<'_, Self::Buffer>,
        step: &AdamWStep,
    ) -> Result<(), BackendError>;

    /// [`Backend::adamw`] with 8-bit moments: `m` and `v` are blockwise states of
    /// `param`'s element count in [`crate::optim8::SIGNED_FORMAT`] and
    /// [`crate::optim8::UNSIGNED_FORMAT`], updated as [`crate::optim8::adamw_block`] does.
    fn adamw_8bit(
        &self,
        param: TensorRef<'_, Self::Buffer>,
        grad: TensorRef<'_, Self::Buffer>,
        m: TensorRef<'_, Self::Buffer>,
        v: TensorRef<'_, Self::Buffer>,
        step: &AdamWStep,
    ) -> Result<(), BackendError>;
}

/// Walks the steps `steps` of `plan` one op at a time through [`Backend::run_op`],
/// naming the node in an [`BackendError::InvalidInput`] error: what
/// [`Backend::run_plan`] does unless a backend overrides it.
pub fn run_plan_steps<B: Backend + ?Sized>(
    backend: &B,
    graph: &Graph,
    plan: &Plan,
    steps: Range<usize>,
    tensors: &(dyn PlanTensors<B::Buffer> + Sync),
) -> Result<(), GraphError> {
    let ids = plan.steps().get(steps.clone()).ok_or_else(|| GraphError::Shape {
        op: "run_plan",
        detail: format!("steps {steps:?} outside the plan's {}", plan.steps().len()),
    })?;
    let mut inputs: Vec<TensorRef<'_, B::Buffer>> = Vec::with_capacity(4);
    for &id in ids {
        let node = graph.node(id)?;
        inputs.clear();
        for &i in &node.inputs {
            inputs.push(tensors.tensor(i)?);
        }
        let out = tensors.tensor(id)?;
        backend.run_op(&node.op, &inputs, out).map_err(|e| match e {
            BackendError::InvalidInput { op, detail } => GraphError::Backend(BackendError::InvalidInput {
                op,
                detail: format!("{detail} (node {})", node.label(id)),
            }),
            other => GraphError::Backend(other),
        })?;
    }
    Ok(())
}

/// Little-endian bytes of f32 values (uploads from core without `unsafe`).
pub fn f32_bytes(values: &[f32]) -> alloc::vec::Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes of i32 values.
pub fn i32_bytes(values: &[i32]) -> alloc::vec::Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// f32 values from little-endian bytes (a trailing partial value is ignored).
pub fn f32_from_bytes(bytes: &[u8]) -> alloc::vec::Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
