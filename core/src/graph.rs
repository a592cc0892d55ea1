//! The graph IR: a static DAG of typed tensor ops. Building an op only appends a node
//! and infers its output shape (ggml-style); computing is a backend's job. Nodes are
//! appended in topological order, so a node's inputs always have smaller ids.
//!
//! Every tensor is contiguous, row-major f32 unless an op says otherwise (token ids are
//! i32). The semantics of each op are written on its variant; backends implement exactly
//! that, and the CPU backend's scalar reference kernels are the executable definition.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::error::GraphError;
use crate::tensor::{DType, Shape, TensorDesc};

/// Index of a node in its [`Graph`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The id as a `usize` index into [`Graph::nodes`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// Attention geometry shared by [`Op::Attention`] and [`Op::AttentionBackward`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionSpec {
    /// Number of query heads (HF `num_attention_heads`).
    pub n_heads: usize,
    /// Number of key/value heads (HF `num_key_value_heads`); divides `n_heads`.
    pub n_kv_heads: usize,
    /// Width of one head, `d` (HF `head_dim`, by default `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// Absolute position of the first query row (the number of cached tokens before it).
    pub q_offset: usize,
    /// Number of key/value rows in use (`<=` the k/v tensors' time dimension).
    pub kv_len: usize,
}

/// Rotary embedding parameters ([`Op::Rope`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeSpec {
    /// Number of heads packed in `x`'s last dim (query or kv heads, whichever `x` holds).
    pub n_heads: usize,
    /// Width of one head; even (the rotate-half layout pairs `i` with `i + head_dim/2`).
    pub head_dim: usize,
    /// Hugging Face `rope_theta`.
    pub theta: f32,
    /// Absolute position of time row 0.
    pub pos_offset: usize,
    /// Rotate by the negative angle (the transpose of the rotation: RoPE's backward).
    pub inverse: bool,
    /// Pair `(2i, 2i + 1)` instead of `(i, i + head_dim/2)` (DeepSeek's `rope_interleave`:
    /// the pairs rotate in place; transformers writes them de-interleaved, which only
    /// permutes the dims that query and key share, so every dot product is the same).
    pub interleaved: bool,
    /// YaRN frequency scaling and its cos/sin magnitude; `None` for plain RoPE.
    pub yarn: Option<Yarn>,
}

/// YaRN RoPE scaling as transformers' `_compute_yarn_parameters` computes it: frequency
/// `i` blends the interpolated `1 / (factor · theta^(2i/d))` and the original
/// `1 / theta^(2i/d)` with the ramp `clamp((i − low) / (high − low), 0, 1)` (1 = all
/// interpolated), and cos/sin are multiplied by `attention_factor`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    /// The context extension factor (HF `factor`).
    pub factor: f32,
    /// Start of the ramp, in frequency indices (HF's corrected `low`).
    pub low: f32,
    /// End of the ramp (HF's corrected `high`).
    pub high: f32,
    /// What cos and sin are multiplied by (HF `attention_factor`, from `mscale` and
    /// `mscale_all_dim` when not given).
    pub attention_factor: f32,
}

impl RopeSpec {
    /// Plain rotate-half RoPE of `n_heads` heads of `head_dim` at positions from 0.
    pub fn new(n_heads: usize, head_dim: usize, theta: f32) -> RopeSpec {
        RopeSpec {
            n_heads,
            head_dim,
            theta,
            pos_offset: 0,
            inverse: false,
            interleaved: false,
            yarn: None,
        }
    }

    /// The `head_dim / 2` inverse frequencies, in f32 as transformers computes them:
    /// `1 / theta^(2i/d)` (the exponent and the power rounded to f32), blended as YaRN says.
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        (0..d / 2)
            .map(|i| {
                let e = (2 * i) as f32 / d as f32;
                let pos_freq = libm::pow(self.theta as f64, e as f64) as f32;
                let extrapolated = 1.0f32 / pos_freq;
                match self.yarn {
                    None => extrapolated,
                    Some(y) => {
                        let interpolated = 1.0f32 / (y.factor * pos_freq);
                        let span = if y.low == y.high { 0.001 } else { y.high - y.low };
                        let ramp = ((i as f32 - y.low) / span).clamp(0.0, 1.0);
                        let keep = 1.0 - ramp;
                        interpolated * (1.0 - keep) + extrapolated * keep
                    }
                }
            })
            .collect()
    }

    /// What cos and sin are multiplied by (1 without YaRN).
    pub fn magnitude(&self) -> f32 {
        self.yarn.map_or(1.0, |y| y.attention_factor)
    }
}

/// How DeepSeek-V3's router picks experts ([`Op::MoeGate`]), with HF's names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeRouting {
    /// Expert groups (`n_group`); the experts divide evenly into them.
    pub n_group: usize,
    /// Groups a token may use (`topk_group`).
    pub topk_group: usize,
    /// Experts per token (`num_experts_per_tok`).
    pub top_k: usize,
    /// Divide the chosen weights by their sum (`norm_topk_prob`).
    pub norm_topk_prob: bool,
    /// Multiplies the weights (`routed_scaling_factor`).
    pub scaling: f32,
}

impl MoeRouting {
    /// The experts `DeepseekV3TopkRouter` selects for one token: `scores = sigmoid(logits)`,
    /// choice scores `scores + bias`; each group is scored by the sum of its two best choice
    /// scores, the best `topk_group` groups are kept, and the `top_k` best choice scores of
    /// their experts win (ties go to the lower index). Writes the winners' indices to
    /// `chosen` (ascending) and returns how many (`top_k`); `scores` receives the sigmoid.
    pub fn select(&self, logits: &[f32], bias: &[f32], scores: &mut [f32], chosen: &mut [usize]) -> usize {
        let e = logits.len();
        for (s, &l) in scores.iter_mut().zip(logits) {
            *s = 1.0 / (1.0 + libm::expf(-l));
        }
        let per_group = e / self.n_group.max(1);
        let choice = |i: usize| scores[i] + bias[i];
        // Groups allowed: all when every group is kept, else the best by top-2 sum.
        let mut allowed = [true; MAX_GROUPS];
        if self.topk_group < self.n_group {
            let mut group_score = [0f32; MAX_GROUPS];
            for (g, gs) in group_score.iter_mut().enumerate().take(self.n_group) {
                let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                for i in g * per_group..(g + 1) * per_group {
                    let c = choice(i);
                    if c > a {
                        b = a;
                        a = c;
                    } else if c > b {
                        b = c;
                    }
                }
                *gs = a + if per_group > 1 { b } else { 0.0 };
            }
            allowed = [false; MAX_GROUPS];
            for _ in 0..self.topk_group {
                let mut best = usize::MAX;
                for g in 0..self.n_group {
                    if !allowed[g] && (best == usize::MAX || group_score[g] > group_score[best]) {
                        best = g;
                    }
                }
                if best != usize::MAX {
                    allowed[best] = true;
                }
            }
        }
        let k = self.top_k.min(e).min(chosen.len());
        let mut n = 0;
        while n < k {
            let mut best = usize::MAX;
            for i in 0..e {
                if !allowed[i / per_group.max(1)] || chosen[..n].contains(&i) {
                    continue;
                }
                if best == usize::MAX || choice(i) > choice(best) {
                    best = i;
                }
            }
            if best == usize::MAX {
                break;
            }
            chosen[n] = best;
            n += 1;
        }
        chosen[..n].sort_unstable();
        n
    }

    /// The dense routing weights of one token (what [`Op::MoeGate`] outputs): zero except
    /// at the chosen experts, where `scaling · s_i` (divided by `Σ s_chosen + 1e-20`
    /// when `norm_topk_prob`).
    pub fn weights(&self, logits: &[f32], bias: &[f32], scores: &mut [f32], out: &mut [f32]) {
        let mut chosen = [0usize; MAX_TOP_K];
        let n = self.select(logits, bias, scores, &mut chosen);
        out.fill(0.0);
        let denom = if self.norm_topk_prob {
            chosen[..n].iter().map(|&i| scores[i]).sum::<f32>() + 1e-20
        } else {
            1.0
        };
        for &i in &chosen[..n] {
            out[i] = scores[i] / denom * self.scaling;
        }
    }

    /// The gradient of [`MoeRouting::weights`] with respect to the logits, given `dy`
    /// (the bias gets none: it only picks).
    pub fn weights_backward(&self, logits: &[f32], bias: &[f32], dy: &[f32], scores: &mut [f32], dx: &mut [f32]) {
        let mut chosen = [0usize; MAX_TOP_K];
        let n = self.select(logits, bias, scores, &mut chosen);
        dx.fill(0.0);
        let c = self.scaling;
        if self.norm_topk_prob {
            let denom = chosen[..n].iter().map(|&i| scores[i]).sum::<f32>() + 1e-20;
            let dot: f32 = chosen[..n].iter().map(|&i| dy[i] * scores[i]).sum();
            for &i in &chosen[..n] {
                let ds = c * (dy[i] / denom - dot / (denom * denom));
                dx[i] = ds * scores[i] * (1.0 - scores[i]);
            }
        } else {
            for &i in &chosen[..n] {
                dx[i] = c * dy[i] * scores[i] * (1.0 - scores[i]);
            }
        }
    }
}

/// Most expert groups a router may have (DeepSeek-V3: 8).
pub const MAX_GROUPS: usize = 64;
/// Most experts a token may use (DeepSeek-V3: 8).
pub const MAX_TOP_K: usize = 64;

/// Whether [`Op::Dropout`] keeps element `index` of the tensor it masks: a splitmix64
/// hash of `(seed, salt)` and the index, read as a uniform draw in `[0, 1)` and compared
/// with `p`. Every backend computes the same mask from it.
pub fn dropout_keeps(seed: u32, salt: u32, index: u64, p: f32) -> bool {
    let mut z = ((seed as u64) << 32 | salt as u64) ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // The top 24 bits as a float in [0, 1): exact, so the comparison is the same everywhere.
    ((z >> 40) as f32) * (1.0 / (1u32 << 24) as f32) >= p
}

/// One tensor operation. Inputs are listed in [`Node::inputs`] in the order given here.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // ---- leaves: bound to caller-owned buffers -------------------------------------
    /// Per-run data (token ids, masks, a loss seed, a KV cache), bound by the caller.
    Input,
    /// A model weight, bound by the caller and persistent across runs.
    Param {
        /// Whether the weight is meant to be trained; only f32 weights may be (bf16, f16 and
        /// block-quantized weights are frozen).
        trainable: bool,
    },

    // ---- views: no kernel, the output aliases input 0 ------------------------------
    /// `[x]` → same elements, another shape with the same element count.
    Reshape,
    /// `[x]` → the flat elements `offset .. offset + numel(out)` of `x`, with the node's
    /// shape (how packed multi-output backward results are split).
    Slice {
        /// First element of the view, counted in elements of `x` (not bytes).
        offset: usize,
    },

    // ---- forward ops ---------------------------------------------------------------
    /// `[]` → a tensor filled with `value`.
    Fill {
        /// The value every element takes.
        value: f32,
    },
    /// `[table [V, H], ids [..] i32]` → `[.., H]`: row `ids[i]` of `table`. An id outside
    /// `0..V` is a run-time error naming the id.
    Embedding,
    /// `[a, b]` → `op(a) · op(b)` where `op` transposes the last two dims when asked.
    /// `a` is `[.., M, K]` (`[.., K, M]` if `trans_a`); `b` is `[K, N]` (`[N, K]` if
    /// `trans_b`) shared over `a`'s leading dims, or has the same leading dims as `a`
    /// (batched). Output `[.., M, N]` f32. `a` is f32; a shared 2-D weight `b` may be
    /// stored as bf16, f16 or a block format (rows of whole blocks), read as `x · wᵀ`
    /// (the forward) or `dy · w` (the input gradient of a frozen weight), which a backend
    /// supports or refuses at plan time.
    MatMul {
        /// Transpose `a`'s last two dims before multiplying.
        trans_a: bool,
        /// Transpose `b`'s last two dims before multiplying (`x · Wᵀ` for an HF `[out, in]`
        /// linear weight).
        trans_b: bool,
    },
    /// `[x, y]` → `x + y`; `y`'s shape is a suffix of `x`'s and repeats over the rest.
    Add,
    /// `[x, seed [1] i32]` → `x` with element `i` zeroed unless [`dropout_keeps`]`(seed,
    /// salt, i, p)`, the kept ones scaled by `1 / (1 − p)` (inverted dropout, as torch's).
    /// The mask is a pure function of its arguments, so the op is its own backward.
    Dropout {
        /// Probability of zeroing an element, in `(0, 1)`.
        p: f32,
        /// Tells apart the masks of dropouts fed by one seed (one per LoRA module).
        salt: u32,
    },
    /// `[x, y]` → `x * y` element-wise, with `Add`'s broadcast rule.
    Mul,
    /// `[x]` → `factor * x`.
    Scale {
        /// The constant multiplier.
        factor: f32,
    },
    /// `[x [.., D], w [D]]` → `x / sqrt(mean(x²) + eps) * w` per row (HF `Qwen2RMSNorm`).
    RmsNorm {
        /// Added to the mean square before the square root (HF `rms_norm_eps`).
        eps: f32,
    },
    /// `[x [B, T, n_heads * head_dim]]` or `[x, past [B] i32]` → rotary position
    /// embedding in the rotate-half layout of HF Llama/Qwen2: for head `h`, pair
    /// `(i, i + head_dim/2)` of row `t` of sequence `b` at position `p = pos_offset + t`
    /// (with a `past` input: `p = past[b] + t`, and `pos_offset` is 0) is rotated by
    /// `p · theta^(−2i/head_dim)`: `x1' = x1·cos − x2·sin`, `x2' = x2·cos + x1·sin`
    /// (angle negated if `inverse`). The `past` form lets one decode plan serve every
    /// step: only the positions change between runs.
    Rope(RopeSpec),
    /// `[q [B, T, Hq·d], k [B, S, Hkv·d], v [B, S, Hkv·d]]` → `[B, T, Hq·d]`: causal
    /// scaled-dot-product attention, scale `1/sqrt(d)`; query head `h` reads kv head
    /// `h / (Hq / Hkv)` (grouped-query). Query row `t` sits at absolute position
    /// `q_offset + t` and attends key rows `j <= q_offset + t`, `j < kv_len`.
    /// With a fourth input `past [B] i32`, sequence `b`'s row `t` sits at `past[b] + t`
    /// and attends `j <= past[b] + t` (the spec has `q_offset = 0`, `kv_len = S`): each
    /// sequence of a decode batch has its own length, set per run.
    /// `k` and `v` may be a KV cache stored in another type than f32 (each its own): the
    /// result is that of attention over their values converted to f32.
    Attention(AttentionSpec),
    /// `[x]` → `x · sigmoid(x)`.
    Silu,
    /// `[gate, up]` (same shape) → `silu(gate) * up`.
    SwiGlu,
    /// `[x [.., H·width]]` → `[.., H·len]`: columns `start .. start + len` of each of the
    /// `H` heads of `width` values (how multi-head latent attention splits a projection
    /// into its parts).
    HeadSlice {
        /// Width of one head of `x`.
        width: usize,
        /// First column taken from each head.
        start: usize,
        /// Columns taken from each head.
        len: usize,
    },
    /// `[a [.., H·da], b [.., Hb·db]]` → `[.., H·(da + db)]`: head `h` is `a`'s head `h`
    /// followed by `b`'s head `h` — or by `b`'s only head when `b_shared` (a key part
    /// every head shares, as MLA's rotary key).
    ConcatHeads {
        /// `H`, the heads of `a` and of the output.
        heads: usize,
        /// `b` has one head, repeated for every head of the output.
        b_shared: bool,
    },
    /// `[x [A, B, C]]` → `[B, A, C]`: the first two dims swapped (heads to the front, so
    /// a batched matmul multiplies each head by its own matrix). Its own transpose.
    SwapDims01,
    /// `[x [.., H·d]]` → `[.., d]`: the sum of the `H` heads.
    SumHeads {
        /// `H`.
        heads: usize,
    },
    /// `[logits [.., E], bias [E]]` → `[.., E]`: DeepSeek-V3's routing weights of each row
    /// ([`MoeRouting::weights`]): zero except at the experts the row is routed to.
    MoeGate(MoeRouting),
    /// `[x [.., H], gates [.., E]]` then per expert `e` its `gate_e [F, H]`, `up_e [F, H]`,
    /// `down_e [H, F]` → `[.., H]`: `Σ_e gates[r, e] · down_e(silu(gate_e·x_r) ⊙ up_e·x_r)`
    /// over the experts whose weight for row `r` is nonzero. Each expert multiplies the
    /// rows routed to it as one matrix (gathered, then scattered back).
    MoeExperts,
    /// `[x [.., V]]` → softmax over the last dim.
    Softmax,
    /// `[x [.., V]]` → log-softmax over the last dim.
    LogSoftmax,
    /// `[x [.., V], idx [..] i32]` → `[..]`: `x[r, idx[r]]`. An index outside `0..V` is
    /// a run-time error.
    GatherLastDim,
    /// `[logits [.., V], targets [..] i32]` → `[..]`: `log_softmax(logits)[target]`, the
    /// log-prob of each chosen token, without materialising the log-softmax.
    TokenLogProbs,
    /// `[logits [N, V], targets [N] i32, weights [N]]` → scalar
    /// `Σ_i weights[i] · (−log_softmax(logits_i)[targets[i]])`; rows whose target is
    /// negative are ignored (the ignore mask). Use the weights for `1/count` means.
    CrossEntropy,
    /// `[logits [.., V]]` → `[..]`: entropy `−Σ p log p` of `softmax(logits)` per row
    /// (a metric; not differentiable here).
    Entropy,
    /// `[x]` → scalar sum of all elements.
    SumAll,

    // ---- backward ops (appended by autodiff) ---------------------------------------
    /// `[x]` → the node's shape, a suffix of `x`'s: sums `x` over its leading dims (the
    /// gradient of a broadcast operand).
    ReduceToShape,
    /// `[ids [..] i32, dy [.., H]]` → `[V, H]`: scatter-add of `dy` rows into row `ids[i]`.
    EmbeddingBackward,
    /// `[x, w, dy]` → packed flat `[dx (numel x) | dw (D)]`.
    RmsNormBackward {
        /// The forward [`Op::RmsNorm`]'s `eps`.
        eps: f32,
    },
    /// `[q, k, v, dout]` → packed flat `[dq (numel q) | dk (numel k) | dv (numel v)]`;
    /// rows of dk/dv at or past `kv_len` are zero.
    AttentionBackward(AttentionSpec),
    /// `[x, dy]` → `dy · silu'(x)`.
    SiluBackward,
    /// `[gate, up, dy]` → packed flat `[dgate | dup]`.
    SwiGluBackward,
    /// `[y, dy]` (y = softmax output) → `y · (dy − Σ dy·y)` per row.
    SoftmaxBackward,
    /// `[y, dy]` (y = log-softmax output) → `dy − exp(y) · Σ dy` per row.
    LogSoftmaxBackward,
    /// `[idx [..] i32, dy [..]]` → `[.., V]` zeros except `dy[r]` at `idx[r]`.
    ScatterLastDim,
    /// `[dy [.., H·len]]` → `[.., H·width]`: `dy`'s heads at columns `start .. start + len`
    /// of each head, zeros elsewhere (the transpose of [`Op::HeadSlice`]).
    HeadSliceBackward {
        /// Width of one output head.
        width: usize,
        /// Column where each head of `dy` goes.
        start: usize,
        /// Width of one head of `dy`.
        len: usize,
    },
    /// `[logits, bias, dy]` → d logits of [`Op::MoeGate`] ([`MoeRouting::weights_backward`]).
    MoeGateBackward(MoeRouting),
    /// `[x, gates, expert weights…, dy]` → packed flat
    /// `[dx | dgates | d gate_0 | d up_0 | d down_0 | d gate_1 | …]` of [`Op::MoeExperts`]
    /// (`dgates` is nonzero only where the gates are).
    MoeExpertsBackward,
    /// `[logits, targets, dy]` → `dy[r] · (onehot(target) − softmax(logits_r))`.
    TokenLogProbsBackward,
    /// `[logits, targets, weights, dy (scalar)]` →
    /// `dy · weights[i] · (softmax(logits_i) − onehot(target_i))`, zero on ignored rows.
    CrossEntropyBackward,

    // ---- state ---------------------------------------------------------------------
    /// `[cache [B, S, D], new [B, T, D]]` → the cache, written in place:
    /// `cache[b, pos + t] = new[b, t]`. The output aliases the cache buffer, so ops that
    /// read the output see the appended rows (how decode appends to a KV cache). With a
    /// third input `past [B] i32` (and `pos = 0`) sequence `b` is written at `past[b] + t`.
    /// The cache may be stored in another type than f32 (f16, bf16, a block format whose
    /// rows `D` are whole blocks): each new f32 row is then converted, block by block, as
    /// that format's quantizer does (GGML's `quantize_row_*_ref` for Q8_0/Q4_0).
    KvWrite {
        /// Cache row (time position) the first new row is written to; 0 with a `past` input.
        pos: usize,
    },
}

impl Op {
    /// A short stable name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Param { .. } => "param",
            Op::Reshape => "reshape",
            Op::Slice { .. } => "slice",
            Op::Fill { .. } => "fill",
            Op::Embedding => "embedding",
            Op::MatMul { .. } => "matmul",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Scale { .. } => "scale",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Rope(_) => "rope",
            Op::Attention(_) => "attention",
            Op::Silu => "silu",
            Op::Dropout { .. } => "dropout",
            Op::SwiGlu => "swiglu",
            Op::HeadSlice { .. } => "head_slice",
            Op::ConcatHeads { .. } => "concat_heads",
            Op::SumHeads { .. } => "sum_heads",
            Op::SwapDims01 => "swap_dims01",
            Op::MoeGate(_) => "moe_gate",
            Op::MoeExperts => "moe_experts",
            Op::HeadSliceBackward { .. } => "head_slice_backward",
            Op::MoeGateBackward(_) => "moe_gate_backward",
            Op::MoeExpertsBackward => "moe_experts_backward",
            Op::Softmax => "softmax",
            Op::LogSoftmax => "log_softmax",
            Op::GatherLastDim => "gather_last_dim",
            Op::TokenLogProbs => "token_log_probs",
            Op::CrossEntropy => "cross_entropy",
            Op::Entropy => "entropy",
            Op::SumAll => "sum_all",
            Op::ReduceToShape => "reduce_to_shape",
            Op::EmbeddingBackward => "embedding_backward",
            Op::RmsNormBackward { .. } => "rms_norm_backward",
            Op::AttentionBackward(_) => "attention_backward",
            Op::SiluBackward => "silu_backward",
            Op::SwiGluBackward => "swiglu_backward",
            Op::SoftmaxBackward => "softmax_backward",
            Op::LogSoftmaxBackward => "log_softmax_backward",
            Op::ScatterLastDim => "scatter_last_dim",
            Op::TokenLogProbsBackward => "token_log_probs_backward",
            Op::CrossEntropyBackward => "cross_entropy_backward",
            Op::KvWrite { .. } => "kv_write",
        }
    }

    /// Leaves are bound to caller buffers rather than computed.
    pub fn is_leaf(&self) -> bool {
        matches!(self, Op::Input | Op::Param { .. })
    }

    /// Views and in-place ops: the output lives in input 0's storage.
    pub fn aliases_input(&self) -> bool {
        matches!(self, Op::Reshape | Op::Slice { .. } | Op::KvWrite { .. })
    }

    /// Byte offset of the output (described by `out`) inside input 0's storage for
    /// aliasing ops.
    pub fn alias_offset_bytes(&self, out: &TensorDesc) -> usize {
        match self {
            Op::Slice { offset } => out.byte_offset(*offset),
            _ => 0,
        }
    }
}

/// One node: an op, its inputs, its output tensor and an optional name (the HF tensor
/// name for params, the feed name for inputs).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// What the node computes.
    pub op: Op,
    /// Operands, in the order its [`Op`] variant documents.
    pub inputs: Vec<NodeId>,
    /// Output dtype and shape, fixed when the node is built.
    pub desc: TensorDesc,
    /// The HF tensor name of a param or the feed name of an input; `None` for computed nodes.
    pub name: Option<String>,
}

impl Node {
    /// The output shape.
    pub fn shape(&self) -> &Shape {
        &self.desc.shape
    }

    /// The node's name, or `%id` when it has none.
    pub fn label(&self, id: NodeId) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("{:?} ({})", id, self.op.name()),
        }
    }
}

/// A static DAG of ops. Build one per batch shape; building costs microseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    nodes: Vec<Node>,
}

fn shape_err(op: &'static str, detail: String) -> GraphError {
    GraphError::Shape { op, detail }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph { nodes: Vec::new() }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// All nodes in topological order, indexed by [`NodeId::index`].
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node `id`, or [`GraphError::UnknownNode`] if it is not in this graph.
    pub fn node(&self, id: NodeId) -> Result<&Node, GraphError> {
        self.nodes.get(id.index()).ok_or(GraphError::UnknownNode(id.0))
    }

    /// Output dtype and shape of node `id`.
    pub fn desc(&self, id: NodeId) -> Result<TensorDesc, GraphError> {
        Ok(self.node(id)?.desc)
    }

    /// Output shape of node `id`.
    pub fn shape(&self, id: NodeId) -> Result<Shape, GraphError> {
        Ok(self.node(id)?.desc.shape)
    }

    /// Iterates `(id, node)` in topological order.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes.iter().enumerate().map(|(i, n)| (NodeId(i as u32), n))
    }

    /// The first node with this name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.iter()
            .find(|(_, n)| n.name.as_deref() == Some(name))
            .map(|(id, _)| id)
    }

    /// Appends a node after checking its inputs exist. Shape inference is the caller's
    /// (the typed builders below); this is the one place nodes enter the graph.
    pub fn push(&mut self, op: Op, inputs: &[NodeId], desc: TensorDesc) -> Result<NodeId, GraphError> {
        for &i in inputs {
            self.node(i)?;
        }
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            desc,
            name: None,
        });
        Ok(id)
    }

    /// Names a node (params and inputs are found by name when binding).
    pub fn set_name(&mut self, id: NodeId, name: &str) -> Result<(), GraphError> {
        let n = self.nodes.get_mut(id.index()).ok_or(GraphError::UnknownNode(id.0))?;
        n.name = Some(name.to_string());
        Ok(())
    }

    fn f32_of(&self, op: &'static str, id: NodeId) -> Result<Shape, GraphError> {
        let d = self.desc(id)?;
        if d.dtype != DType::F32 {
            return Err(shape_err(op, format!("{id:?} must be f32, is {}", d.dtype)));
        }
        Ok(d.shape)
    }

    /// A tensor stored as f32, f16, bf16 or a block format with rows of whole blocks (a
    /// KV cache): what attention reads and `kv_write` writes.
    fn stored_of(&self, op: &'static str, id: NodeId) -> Result<Shape, GraphError> {
        let d = self.desc(id)?;
        if d.dtype == DType::I32 || !d.rows_are_whole_blocks() {
            return Err(shape_err(
                op,
                format!(
                    "{id:?} is {} {}: need f32, f16, bf16 or rows of whole blocks",
                    d.dtype, d.shape
                ),
            ));
        }
        Ok(d.shape)
    }

    fn i32_of(&self, op: &'static str, id: NodeId) -> Result<Shape, GraphError> {
        let d = self.desc(id)?;
        if d.dtype != DType::I32 {
            return Err(shape_err(op, format!("{id:?} must be i32 ids, is {}", d.dtype)));
        }
        Ok(d.shape)
    }

    // ---- leaves -----------------------------------------------------------------------

    /// A per-run input named `name`.
    pub fn input(&mut self, name: &str, desc: TensorDesc) -> Result<NodeId, GraphError> {
        let id = self.push(Op::Input, &[], desc)?;
        self.set_name(id, name)?;
        Ok(id)
    }

    /// An f32 weight named `name` (the Hugging Face tensor name for model weights).
    pub fn param(&mut self, name: &str, dims: &[usize], trainable: bool) -> Result<NodeId, GraphError> {
        self.param_typed(name, TensorDesc::f32(dims), trainable)
    }

    /// A weight stored as `desc.dtype` (bf16, f16, a block format). Only f32 weights can
    /// be trained; a block format's rows must be whole blocks.
    pub fn param_typed(&mut self, name: &str, desc: TensorDesc, trainable: bool) -> Result<NodeId, GraphError> {
        if trainable && desc.dtype != DType::F32 {
            return Err(shape_err(
                "param",
                format!("`{name}`: a {} weight cannot be trained", desc.dtype),
            ));
        }
        if !desc.rows_are_whole_blocks() || desc.dtype == DType::I32 {
            return Err(shape_err(
                "param",
                format!("`{name}`: {} {} is not a valid weight layout", desc.dtype, desc.shape),
            ));
        }
        let id = self.push(Op::Param { trainable }, &[], desc)?;
        self.set_name(id, name)?;
        Ok(id)
    }

    // ---- views ------------------------------------------------------------------------

    /// [`Op::Reshape`]: `x` viewed as `dims` (same element count, no copy).
    pub fn reshape(&mut self, x: NodeId, dims: &[usize]) -> Result<NodeId, GraphError> {
        let d = self.desc(x)?;
        let to = Shape::new(dims);
        if to.numel() != d.shape.numel() {
            return Err(shape_err(
                "reshape",
                format!("{} ({} elements) to {to}", d.shape, d.shape.numel()),
            ));
        }
        self.push(
            Op::Reshape,
            &[x],
            TensorDesc {
                dtype: d.dtype,
                shape: to,
            },
        )
    }

    /// Elements `offset .. offset + numel(dims)` of `x` viewed as `dims`.
    pub fn slice(&mut self, x: NodeId, offset: usize, dims: &[usize]) -> Result<NodeId, GraphError> {
        let d = self.desc(x)?;
        let to = Shape::new(dims);
        if offset.checked_add(to.numel()).is_none_or(|end| end > d.shape.numel()) {
            return Err(shape_err("slice", format!("{to} at offset {offset} of {}", d.shape)));
        }
        // A view of a block-quantized tensor starts on a block and keeps whole-block rows.
        if let DType::Block(f) = d.dtype {
            let view = TensorDesc {
                dtype: d.dtype,
                shape: to,
            };
            if f.block == 0 || !offset.is_multiple_of(f.block as usize) || !view.rows_are_whole_blocks() {
                return Err(shape_err(
                    "slice",
                    format!("{to} at offset {offset} of {} {} splits a block", d.dtype, d.shape),
                ));
            }
        }
        self.push(
            Op::Slice { offset },
            &[x],
            TensorDesc {
                dtype: d.dtype,
                shape: to,
            },
        )
    }

    // ---- forward ops ------------------------------------------------------------------

    /// [`Op::Fill`]: an f32 tensor of shape `dims` with every element `value`.
    pub fn fill(&mut self, value: f32, dims: &[usize]) -> Result<NodeId, GraphError> {
        self.push(Op::Fill { value }, &[], TensorDesc::f32(dims))
    }

    /// [`Op::Embedding`]: rows of `table [V, H]` picked by `ids [..] i32` → `[.., H]` f32.
    /// The table may be stored in another type (f16, bf16, a block format of whole-block
    /// rows): the picked rows are widened.
    pub fn embedding(&mut self, table: NodeId, ids: NodeId) -> Result<NodeId, GraphError> {
        let td = self.desc(table)?;
        if td.dtype == DType::I32 || !td.rows_are_whole_blocks() {
            return Err(shape_err(
                "embedding",
                format!("table {} {} is not an embedding table", td.dtype, td.shape),
            ));
        }
        let t = td.shape;
        let i = self.i32_of("embedding", ids)?;
        if t.rank() != 2 || i.rank() + 1 > crate::tensor::MAX_RANK {
            return Err(shape_err("embedding", format!("table {t} must be [V, H], ids {i}")));
        }
        let mut dims: Vec<usize> = i.dims().to_vec();
        dims.push(t.dims()[1]);
        self.push(Op::Embedding, &[table, ids], TensorDesc::f32(&dims))
    }

    /// [`Op::MatMul`]: `op(a) · op(b)`, `[.., M, K] · [K, N]` → `[.., M, N]` (see the op for
    /// transposes, batching and stored weight dtypes).
    pub fn matmul(&mut self, a: NodeId, b: NodeId, trans_a: bool, trans_b: bool) -> Result<NodeId, GraphError> {
        let sa = self.f32_of("matmul", a)?;
        let db = self.desc(b)?;
        let sb = db.shape;
        let stored_weight = matches!(db.dtype, DType::BF16 | DType::F16 | DType::Block(_));
        if db.dtype == DType::I32 || (stored_weight && sb.rank() != 2) {
            return Err(shape_err(
                "matmul",
                format!("{b:?} is {} {sb}: a non-f32 operand must be a 2-D weight", db.dtype),
            ));
        }
        let err = || {
            shape_err(
                "matmul",
                format!(
                    "{sa}{} x {sb}{}",
                    if trans_a { "ᵀ" } else { "" },
                    if trans_b { "ᵀ" } else { "" }
                ),
            )
        };
        if sa.rank() < 2 || sb.rank() < 2 {
            return Err(err());
        }
        let (m, ka) = if trans_a {
            (sa.dim_from_end(0), sa.dim_from_end(1))
        } else {
            (sa.dim_from_end(1), sa.dim_from_end(0))
        };
        let (kb, n) = if trans_b {
            (sb.dim_from_end(0), sb.dim_from_end(1))
        } else {
            (sb.dim_from_end(1), sb.dim_from_end(0))
        };
        if ka != kb {
            return Err(err());
        }
        let lead = &sa.dims()[..sa.rank() - 2];
        if sb.rank() > 2 && &sb.dims()[..sb.rank() - 2] != lead {
            return Err(err());
        }
        let mut dims = lead.to_vec();
        dims.push(m);
        dims.push(n);
        self.push(Op::MatMul { trans_a, trans_b }, &[a, b], TensorDesc::f32(&dims))
    }

    fn broadcast_binary(&mut self, op: Op, x: NodeId, y: NodeId) -> Result<NodeId, GraphError> {
        let name = op.name();
        let sx = self.f32_of(name, x)?;
        let sy = self.f32_of(name, y)?;
        if !sx.ends_with(&sy) {
            return Err(shape_err(name, format!("{sy} is not a suffix of {sx}")));
        }
        self.push(
            op,
            &[x, y],
            TensorDesc {
                dtype: DType::F32,
                shape: sx,
            },
        )
    }

    /// [`Op::Add`]: `x + y`, `y`'s shape a suffix of `x`'s (broadcast over the leading dims).
    pub fn add(&mut self, x: NodeId, y: NodeId) -> Result<NodeId, GraphError> {
        self.broadcast_binary(Op::Add, x, y)
    }

    /// [`Op::Mul`]: `x * y` element-wise, with [`Graph::add`]'s broadcast rule.
    pub fn mul(&mut self, x: NodeId, y: NodeId) -> Result<NodeId, GraphError> {
        self.broadcast_binary(Op::Mul, x, y)
    }

    /// [`Op::Scale`]: `factor * x`.
    pub fn scale(&mut self, x: NodeId, factor: f32) -> Result<NodeId, GraphError> {
        let s = self.f32_of("scale", x)?;
        self.push(
            Op::Scale { factor },
            &[x],
            TensorDesc {
                dtype: DType::F32,
                shape: s,
            },
        )
    }

    /// [`Op::RmsNorm`]: RMS-normalises each row of `x [.., D]` and scales by `w [D]`.
    pub fn rms_norm(&mut self, x: NodeId, w: NodeId, eps: f32) -> Result<NodeId, GraphError> {
        let sx = self.f32_of("rms_norm", x)?;
        let sw = self.f32_of("rms_norm", w)?;
        if sx.rank() == 0 || sw.dims() != [sx.last()] {
            return Err(shape_err("rms_norm", format!("x {sx} with weight {sw}")));
        }
        self.push(
            Op::RmsNorm { eps },
            &[x, w],
            TensorDesc {
                dtype: DType::F32,
                shape: sx,
            },
        )
    }

    /// [`Op::Rope`] on `x [B, T, n_heads·head_dim]`, row `t` at position `spec.pos_offset + t`.
    pub fn rope(&mut self, x: NodeId, spec: RopeSpec) -> Result<NodeId, GraphError> {
        self.rope_with(x, spec, None)
    }

    /// RoPE at per-sequence positions read from `past [B] i32` at run time.
    pub fn rope_at(&mut self, x: NodeId, spec: RopeSpec, past: NodeId) -> Result<NodeId, GraphError> {
        self.rope_with(x, spec, Some(past))
    }

    /// Checks that `past` is the `[B]` i32 positions input for a `[B, ..]` tensor.
    fn check_past(&self, op: &'static str, batch: usize, past: Option<NodeId>) -> Result<(), GraphError> {
        if let Some(p) = past {
            let sp = self.i32_of(op, p)?;
            if sp.dims() != [batch] {
                return Err(shape_err(
                    op,
                    format!("positions {sp} for a batch of {batch} (need [B])"),
                ));
            }
        }
        Ok(())
    }

    fn rope_with(&mut self, x: NodeId, spec: RopeSpec, past: Option<NodeId>) -> Result<NodeId, GraphError> {
        let s = self.f32_of("rope", x)?;
        if past.is_some() && spec.pos_offset != 0 {
            return Err(shape_err(
                "rope",
                "positions come from the `past` input: pos_offset must be 0".into(),
            ));
        }
        if s.rank() != 3 || s.dims()[2] != spec.n_heads * spec.head_dim || !spec.head_dim.is_multiple_of(2) {
            return Err(shape_err(
                "rope",
                format!("x {s} with {} heads of dim {}", spec.n_heads, spec.head_dim),
            ));
        }
        self.check_past("rope", s.dims()[0], past)?;
        let inputs: Vec<NodeId> = core::iter::once(x).chain(past).collect();
        self.push(
            Op::Rope(spec),
            &inputs,
            TensorDesc {
                dtype: DType::F32,
                shape: s,
            },
        )
    }

    fn check_attention(
        &self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        spec: &AttentionSpec,
    ) -> Result<(Shape, Shape), GraphError> {
        let sq = self.f32_of("attention", q)?;
        let sk = self.stored_of("attention", k)?;
        let sv = self.stored_of("attention", v)?;
        let ok = sq.rank() == 3
            && sk.rank() == 3
            && sk == sv
            && spec.n_kv_heads > 0
            && spec.n_heads.is_multiple_of(spec.n_kv_heads)
            && sq.dims()[2] == spec.n_heads * spec.head_dim
            && sk.dims()[2] == spec.n_kv_heads * spec.head_dim
            && sq.dims()[0] == sk.dims()[0]
            && spec.kv_len <= sk.dims()[1]
            && spec.q_offset + sq.dims()[1] <= spec.kv_len;
        if !ok {
            return Err(shape_err(
                "attention",
                format!(
                    "q {sq}, k {sk}, v {sv} with {spec:?} (need q [B,T,Hq·d], k=v [B,S,Hkv·d], q_offset+T <= kv_len <= S)"
                ),
            ));
        }
        Ok((sq, sk))
    }

    /// [`Op::Attention`]: causal grouped-query attention of `q [B, T, Hq·d]` over
    /// `k`, `v [B, S, Hkv·d]`, queries at `spec.q_offset ..`, keys `0 .. spec.kv_len`.
    pub fn attention(&mut self, q: NodeId, k: NodeId, v: NodeId, spec: AttentionSpec) -> Result<NodeId, GraphError> {
        let (sq, _) = self.check_attention(q, k, v, &spec)?;
        self.push(
            Op::Attention(spec),
            &[q, k, v],
            TensorDesc {
                dtype: DType::F32,
                shape: sq,
            },
        )
    }

    /// Attention where sequence `b`'s queries sit at `past[b] + t` (`past [B] i32`, read
    /// at run time) over a cache of `S` rows; `spec.q_offset` and `spec.kv_len` are set
    /// here (`0`, `S`).
    pub fn attention_at(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        spec: AttentionSpec,
        past: NodeId,
    ) -> Result<NodeId, GraphError> {
        let keys = self.shape(k)?.dim_from_end(1);
        let spec = AttentionSpec {
            q_offset: 0,
            kv_len: keys,
            ..spec
        };
        let (sq, _) = self.check_attention(q, k, v, &spec)?;
        self.check_past("attention", sq.dims()[0], Some(past))?;
        self.push(
            Op::Attention(spec),
            &[q, k, v, past],
            TensorDesc {
                dtype: DType::F32,
                shape: sq,
            },
        )
    }

    fn unary(&mut self, op: Op, x: NodeId) -> Result<NodeId, GraphError> {
        let s = self.f32_of(op.name(), x)?;
        if s.rank() == 0 && matches!(op, Op::Softmax | Op::LogSoftmax) {
            return Err(shape_err(op.name(), "needs at least one dimension".to_string()));
        }
        self.push(
            op,
            &[x],
            TensorDesc {
                dtype: DType::F32,
                shape: s,
            },
        )
    }

    /// [`Op::Dropout`] of `x` with probability `p`, its mask drawn from `seed [1] i32` and
    /// `salt`.
    pub fn dropout(&mut self, x: NodeId, seed: NodeId, p: f32, salt: u32) -> Result<NodeId, GraphError> {
        let sx = self.f32_of("dropout", x)?;
        let ds = self.desc(seed)?;
        if ds != TensorDesc::i32(&[1]) {
            return Err(shape_err(
                "dropout",
                format!("the seed is {} {}, not i32 [1]", ds.dtype, ds.shape),
            ));
        }
        if !(p > 0.0 && p < 1.0) {
            return Err(shape_err("dropout", format!("probability {p} is not in (0, 1)")));
        }
        self.push(
            Op::Dropout { p, salt },
            &[x, seed],
            TensorDesc {
                dtype: DType::F32,
                shape: sx,
            },
        )
    }

    /// [`Op::Silu`]: `x · sigmoid(x)` element-wise.
    pub fn silu(&mut self, x: NodeId) -> Result<NodeId, GraphError> {
        self.unary(Op::Silu, x)
    }

    /// [`Op::SwiGlu`]: `silu(gate) * up`, the Llama/Qwen2 MLP activation; shapes must match.
    pub fn swiglu(&mut self, gate: NodeId, up: NodeId) -> Result<NodeId, GraphError> {
        let sg = self.f32_of("swiglu", gate)?;
        let su = self.f32_of("swiglu", up)?;
        if sg != su {
            return Err(shape_err("swiglu", format!("gate {sg} vs up {su}")));
        }
        self.push(
            Op::SwiGlu,
            &[gate, up],
            TensorDesc {
                dtype: DType::F32,
                shape: sg,
            },
        )
    }

    /// [`Op::HeadSlice`]: columns `start .. start + len` of each head of `width` values.
    pub fn head_slice(&mut self, x: NodeId, width: usize, start: usize, len: usize) -> Result<NodeId, GraphError> {
        let s = self.f32_of("head_slice", x)?;
        let last = s.last();
        if s.rank() == 0 || width == 0 || len == 0 || !last.is_multiple_of(width) || start + len > width {
            return Err(shape_err(
                "head_slice",
                format!("columns {start}..{} of heads of {width} in {s}", start + len),
            ));
        }
        let mut dims = s.dims().to_vec();
        dims[s.rank() - 1] = last / width * len;
        self.push(Op::HeadSlice { width, start, len }, &[x], TensorDesc::f32(&dims))
    }

    /// [`Op::ConcatHeads`]: each of `a`'s `heads` heads followed by `b`'s head of the same
    /// index, or by `b`'s only head when `b_heads` is 1.
    pub fn concat_heads(&mut self, a: NodeId, b: NodeId, heads: usize, b_heads: usize) -> Result<NodeId, GraphError> {
        let sa = self.f32_of("concat_heads", a)?;
        let sb = self.f32_of("concat_heads", b)?;
        let lead = |s: &Shape| s.dims()[..s.rank().saturating_sub(1)].to_vec();
        let ok = sa.rank() > 0
            && sb.rank() == sa.rank()
            && lead(&sa) == lead(&sb)
            && heads > 0
            && (b_heads == heads || b_heads == 1)
            && sa.last().is_multiple_of(heads)
            && sb.last().is_multiple_of(b_heads);
        if !ok {
            return Err(shape_err(
                "concat_heads",
                format!("a {sa} ({heads} heads) with b {sb} ({b_heads} heads)"),
            ));
        }
        let width = sa.last() / heads + sb.last() / b_heads;
        let mut dims = lead(&sa);
        dims.push(heads * width);
        let b_shared = b_heads == 1 && heads > 1;
        self.push(Op::ConcatHeads { heads, b_shared }, &[a, b], TensorDesc::f32(&dims))
    }

    /// [`Op::SwapDims01`]: `x [A, B, C]` → `[B, A, C]`.
    pub fn swap_dims01(&mut self, x: NodeId) -> Result<NodeId, GraphError> {
        let s = self.f32_of("swap_dims01", x)?;
        let [a, b, c] = s.dims() else {
            return Err(shape_err("swap_dims01", format!("{s} is not [A, B, C]")));
        };
        self.push(Op::SwapDims01, &[x], TensorDesc::f32(&[*b, *a, *c]))
    }

    /// [`Op::SumHeads`]: the sum of `x`'s `heads` heads.
    pub fn sum_heads(&mut self, x: NodeId, heads: usize) -> Result<NodeId, GraphError> {
        let s = self.f32_of("sum_heads", x)?;
        if s.rank() == 0 || heads == 0 || !s.last().is_multiple_of(heads) {
            return Err(shape_err("sum_heads", format!("{s} into {heads} heads")));
        }
        let mut dims = s.dims().to_vec();
        dims[s.rank() - 1] = s.last() / heads;
        self.push(Op::SumHeads { heads }, &[x], TensorDesc::f32(&dims))
    }

    /// [`Op::MoeGate`]: routing weights of `logits [.., E]` with the choice `bias [E]`.
    pub fn moe_gate(&mut self, logits: NodeId, bias: NodeId, routing: MoeRouting) -> Result<NodeId, GraphError> {
        let sl = self.f32_of("moe_gate", logits)?;
        let sb = self.f32_of("moe_gate", bias)?;
        let e = sl.last();
        let r = routing;
        let per_group = e.checked_div(r.n_group).unwrap_or(0);
        let ok = sl.rank() > 0
            && sb.dims() == [e]
            && r.n_group > 0
            && r.n_group <= MAX_GROUPS
            && e.is_multiple_of(r.n_group)
            && (r.topk_group == r.n_group || per_group >= 2)
            && r.topk_group > 0
            && r.topk_group <= r.n_group
            && r.top_k > 0
            && r.top_k <= MAX_TOP_K
            && r.top_k <= r.topk_group * per_group;
        if !ok {
            return Err(shape_err("moe_gate", format!("logits {sl}, bias {sb}, routing {r:?}")));
        }
        self.push(Op::MoeGate(routing), &[logits, bias], TensorDesc::f32(sl.dims()))
    }

    /// [`Op::MoeExperts`]: `x [.., H]` through the experts `[gate, up, down]` weighted by
    /// `gates [.., E]` (one expert per gates column).
    pub fn moe_experts(&mut self, x: NodeId, gates: NodeId, experts: &[[NodeId; 3]]) -> Result<NodeId, GraphError> {
        let sx = self.f32_of("moe_experts", x)?;
        let sg = self.f32_of("moe_experts", gates)?;
        let h = sx.last();
        let lead = |s: &Shape| s.dims()[..s.rank().saturating_sub(1)].to_vec();
        if sx.rank() == 0 || sg.rank() != sx.rank() || lead(&sx) != lead(&sg) || sg.last() != experts.len() {
            return Err(shape_err(
                "moe_experts",
                format!("x {sx}, gates {sg} for {} experts", experts.len()),
            ));
        }
        let mut inputs = vec![x, gates];
        for (e, &[gate, up, down]) in experts.iter().enumerate() {
            let (wg, wu, wd) = (
                self.f32_of("moe_experts", gate)?,
                self.f32_of("moe_experts", up)?,
                self.f32_of("moe_experts", down)?,
            );
            let f = wg.dims().first().copied().unwrap_or(0);
            if wg.dims() != [f, h] || wu.dims() != [f, h] || wd.dims() != [h, f] || f == 0 {
                return Err(shape_err(
                    "moe_experts",
                    format!("expert {e}: gate {wg}, up {wu}, down {wd} for hidden {h}"),
                ));
            }
            inputs.extend([gate, up, down]);
        }
        self.push(Op::MoeExperts, &inputs, TensorDesc::f32(sx.dims()))
    }

    /// [`Op::Softmax`] over the last dim.
    pub fn softmax(&mut self, x: NodeId) -> Result<NodeId, GraphError> {
        self.unary(Op::Softmax, x)
    }

    /// [`Op::LogSoftmax`] over the last dim.
    pub fn log_softmax(&mut self, x: NodeId) -> Result<NodeId, GraphError> {
        self.unary(Op::LogSoftmax, x)
    }

    fn rows_with_ids(&self, op: &'static str, x: NodeId, idx: NodeId) -> Result<Shape, GraphError> {
        let sx = self.f32_of(op, x)?;
        let si = self.i32_of(op, idx)?;
        if sx.rank() == 0 || &sx.dims()[..sx.rank() - 1] != si.dims() {
            return Err(shape_err(
                op,
                format!("x {sx} with indices {si} (need x [.., V], indices [..])"),
            ));
        }
        Ok(si)
    }

    /// [`Op::GatherLastDim`]: `x[r, idx[r]]` for `x [.., V]`, `idx [..] i32` → `[..]`.
    pub fn gather_last_dim(&mut self, x: NodeId, idx: NodeId) -> Result<NodeId, GraphError> {
        let si = self.rows_with_ids("gather_last_dim", x, idx)?;
        self.push(
            Op::GatherLastDim,
            &[x, idx],
            TensorDesc {
                dtype: DType::F32,
                shape: si,
            },
        )
    }

    /// [`Op::TokenLogProbs`]: log-prob of each target token under `logits [.., V]` → `[..]`.
    pub fn token_log_probs(&mut self, logits: NodeId, targets: NodeId) -> Result<NodeId, GraphError> {
        let si = self.rows_with_ids("token_log_probs", logits, targets)?;
        self.push(
            Op::TokenLogProbs,
            &[logits, targets],
            TensorDesc {
                dtype: DType::F32,
                shape: si,
            },
        )
    }

    /// [`Op::CrossEntropy`]: weighted sum of token NLLs over `logits [N, V]`,
    /// `targets [N] i32` and `weights [N]` → scalar; negative targets are ignored.
    pub fn cross_entropy(&mut self, logits: NodeId, targets: NodeId, weights: NodeId) -> Result<NodeId, GraphError> {
        let si = self.rows_with_ids("cross_entropy", logits, targets)?;
        let sw = self.f32_of("cross_entropy", weights)?;
        if si.rank() != 1 || sw != si {
            return Err(shape_err(
                "cross_entropy",
                format!("targets {si} and weights {sw} must both be [N]"),
            ));
        }
        self.push(Op::CrossEntropy, &[logits, targets, weights], TensorDesc::f32(&[]))
    }

    /// [`Op::Entropy`]: per-row entropy of `softmax(logits [.., V])` → `[..]` (a metric).
    pub fn entropy(&mut self, logits: NodeId) -> Result<NodeId, GraphError> {
        let s = self.f32_of("entropy", logits)?;
        if s.rank() == 0 {
            return Err(shape_err("entropy", "needs at least one dimension".to_string()));
        }
        self.push(Op::Entropy, &[logits], TensorDesc::f32(&s.dims()[..s.rank() - 1]))
    }

    /// [`Op::SumAll`]: scalar sum of every element of `x`.
    pub fn sum_all(&mut self, x: NodeId) -> Result<NodeId, GraphError> {
        self.f32_of("sum_all", x)?;
        self.push(Op::SumAll, &[x], TensorDesc::f32(&[]))
    }

    /// Appends `new` to a KV cache at time position `pos`, in place.
    pub fn kv_write(&mut self, cache: NodeId, new: NodeId, pos: usize) -> Result<NodeId, GraphError> {
        self.kv_write_with(cache, new, pos, None)
    }

    /// Appends `new` to a KV cache in place, sequence `b` at row `past[b]` (`past [B]
    /// i32`, read at run time).
    pub fn kv_write_at(&mut self, cache: NodeId, new: NodeId, past: NodeId) -> Result<NodeId, GraphError> {
        self.kv_write_with(cache, new, 0, Some(past))
    }

    fn kv_write_with(
        &mut self,
        cache: NodeId,
        new: NodeId,
        pos: usize,
        past: Option<NodeId>,
    ) -> Result<NodeId, GraphError> {
        let cache_desc = self.desc(cache)?;
        let sc = self.stored_of("kv_write", cache)?;
        let sn = self.f32_of("kv_write", new)?;
        let ok = sc.rank() == 3
            && sn.rank() == 3
            && sc.dims()[0] == sn.dims()[0]
            && sc.dims()[2] == sn.dims()[2]
            && pos + sn.dims()[1] <= sc.dims()[1];
        if !ok {
            return Err(shape_err("kv_write", format!("{sn} at position {pos} into cache {sc}")));
        }
        self.check_past("kv_write", sc.dims()[0], past)?;
        let inputs: Vec<NodeId> = [cache, new].into_iter().chain(past).collect();
        self.push(Op::KvWrite { pos }, &inputs, cache_desc)
    }

    // ---- backward ops (used by autodiff; checked lightly, their inputs come from
    // ---- already-checked forward nodes) -----------------------------------------------

    pub(crate) fn reduce_to_shape(&mut self, x: NodeId, to: Shape) -> Result<NodeId, GraphError> {
        let sx = self.f32_of("reduce_to_shape", x)?;
        if !sx.ends_with(&to) {
            return Err(shape_err("reduce_to_shape", format!("{to} is not a suffix of {sx}")));
        }
        if sx == to {
            return Ok(x);
        }
        self.push(
            Op::ReduceToShape,
            &[x],
            TensorDesc {
                dtype: DType::F32,
                shape: to,
            },
        )
    }

    /// A packed backward op with flat output of `total` elements.
    pub(crate) fn packed(&mut self, op: Op, inputs: &[NodeId], total: usize) -> Result<NodeId, GraphError> {
        self.push(op, inputs, TensorDesc::f32(&[total]))
    }

    pub(crate) fn same_shape(&mut self, op: Op, inputs: &[NodeId], like: NodeId) -> Result<NodeId, GraphError> {
        let d = self.desc(like)?;
        self.push(op, inputs, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_infers_batched_and_transposed_shapes() {
        let mut g = Graph::new();
        let a = g.input("a", TensorDesc::f32(&[2, 3, 4])).unwrap();
        let w = g.param("w", &[5, 4], true).unwrap();
        let y = g.matmul(a, w, false, true).unwrap();
        assert_eq!(g.shape(y).unwrap().dims(), &[2, 3, 5]);
        let b = g.input("b", TensorDesc::f32(&[2, 3, 6])).unwrap();
        let z = g.matmul(a, b, true, false).unwrap();
        assert_eq!(g.shape(z).unwrap().dims(), &[2, 4, 6]);
    }

    #[test]
    fn mismatched_matmul_names_both_shapes() {
        let mut g = Graph::new();
        let a = g.input("a", TensorDesc::f32(&[3, 4])).unwrap();
        let b = g.input("b", TensorDesc::f32(&[5, 6])).unwrap();
        let e = g.matmul(a, b, false, false).unwrap_err();
        let msg = alloc::format!("{e}");
        assert!(msg.contains("[3, 4]") && msg.contains("[5, 6]"), "{msg}");
    }

    #[test]
    fn broadcast_add_requires_a_suffix() {
        let mut g = Graph::new();
        let x = g.input("x", TensorDesc::f32(&[2, 3, 4])).unwrap();
        let b = g.param("b", &[4], true).unwrap();
        assert!(g.add(x, b).is_ok());
        let c = g.param("c", &[3], true).unwrap();
        assert!(matches!(g.add(x, c), Err(GraphError::Shape { .. })));
    }

    #[test]
    fn attention_rejects_heads_that_do_not_group() {
        let mut g = Graph::new();
        let q = g.input("q", TensorDesc::f32(&[1, 4, 3 * 8])).unwrap();
        let k = g.input("k", TensorDesc::f32(&[1, 4, 2 * 8])).unwrap();
        let spec = AttentionSpec {
            n_heads: 3,
            n_kv_heads: 2,
            head_dim: 8,
            q_offset: 0,
            kv_len: 4,
        };
        assert!(g.attention(q, k, k, spec).is_err());
    }

    #[test]
    fn stored_weights_enter_matmul_only_as_untrainable_2d_weights() {
        use crate::tensor::BlockFormat;
        let q8 = DType::Block(BlockFormat {
            id: 8,
            block: 32,
            block_bytes: 34,
            name: "q8_0",
        });
        let mut g = Graph::new();
        let x = g.input("x", TensorDesc::f32(&[2, 64])).unwrap();
        assert!(g.param_typed("t", TensorDesc::new(q8, &[4, 64]), true).is_err());
        assert!(g.param_typed("r", TensorDesc::new(q8, &[4, 48]), false).is_err());
        let w = g.param_typed("w", TensorDesc::new(q8, &[4, 64]), false).unwrap();
        let y = g.matmul(x, w, false, true).unwrap();
        assert_eq!(g.desc(y).unwrap(), TensorDesc::f32(&[2, 4]));
        let dy = g.input("dy", TensorDesc::f32(&[2, 4])).unwrap();
        let dx = g.matmul(dy, w, false, false).unwrap();
        assert_eq!(
            g.desc(dx).unwrap(),
            TensorDesc::f32(&[2, 64]),
            "the input gradient through w"
        );
        assert!(g.add(x, w).is_err(), "element-wise ops stay f32");
        // A stored table also feeds an embedding lookup (a tied LM head's other use).
        let ids = g.input("ids", TensorDesc::i32(&[3])).unwrap();
        let e = g.embedding(w, ids).unwrap();
        assert_eq!(g.desc(e).unwrap(), TensorDesc::f32(&[3, 64]));
        let not_a_table = g.input("i", TensorDesc::i32(&[4, 64])).unwrap();
        assert!(g.embedding(not_a_table, ids).is_err());
    }

    #[test]
    fn ids_must_be_i32() {
        let mut g = Graph::new();
        let t = g.param("t", &[10, 4], true).unwrap();
        let ids = g.input("ids", TensorDesc::f32(&[3])).unwrap();
        assert!(g.embedding(t, ids).is_err());
    }
}
