//! Reverse-mode autodiff on the graph: [`backward`] appends the gradient nodes of the
//! nodes that lead from the requested parameters to the seeded outputs.
//!
//! A seed is a pair (output, gradient of the loss w.r.t. that output). For a scalar loss
//! the gradient is a `Fill { 1.0 }` node; for GRPO it is an `Input` holding
//! d loss / d logp, computed by the GRPO math between the forward and backward passes.
//! Gradients flowing into a node from several readers are summed with `Add` nodes.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use crate::error::GraphError;
use crate::graph::{Graph, NodeId, Op};
use crate::tensor::DType;

fn unsupported(op: &'static str, detail: &str) -> GraphError {
    GraphError::Unsupported {
        op,
        detail: format!("no gradient: {detail}"),
    }
}

/// Appends gradient nodes to `g` and returns, for each node of `wrt`, the node holding
/// d loss / d wrt (`None` when the seeds do not depend on it).
pub fn backward(g: &mut Graph, seeds: &[(NodeId, NodeId)], wrt: &[NodeId]) -> Result<Vec<Option<NodeId>>, GraphError> {
    backward_checkpointed(g, seeds, wrt, &[])
}

/// [`backward`] with gradient checkpointing: each of `segments` (ranges of node indices,
/// e.g. one decoder layer each, disjoint) is computed again just before its gradients,
/// from the values that enter it, and its backward reads the copies. The forward values
/// inside a segment are then dead once the forward pass has used them, so the memory
/// plan ([`crate::plan::Plan`]) reuses their storage; what stays live from the forward
/// pass to the backward pass is only what crosses segment boundaries. The copies run the
/// same kernels on the same operands, so the gradients are bit for bit those of
/// [`backward`]; the cost is one more forward pass through the segments.
pub fn backward_checkpointed(
    g: &mut Graph,
    seeds: &[(NodeId, NodeId)],
    wrt: &[NodeId],
    segments: &[Range<usize>],
) -> Result<Vec<Option<NodeId>>, GraphError> {
    let n = g.len();
    // Which segment each forward node belongs to.
    let mut segment_of: Vec<Option<usize>> = vec![None; n];
    for (k, seg) in segments.iter().enumerate() {
        if seg.end > n || seg.start > seg.end {
            return Err(GraphError::Shape {
                op: "backward",
                detail: format!("checkpoint segment {seg:?} outside the graph's {n} nodes"),
            });
        }
        for slot in &mut segment_of[seg.clone()] {
            if slot.is_some() {
                return Err(GraphError::Shape {
                    op: "backward",
                    detail: format!("checkpoint segment {seg:?} overlaps another"),
                });
            }
            *slot = Some(k);
        }
    }
    // The recomputed copy of each checkpointed node, once its segment was recomputed.
    let mut copy: Vec<Option<NodeId>> = vec![None; n];
    let mut recomputed = vec![false; segments.len()];
    for &(out, grad) in seeds {
        let (d_out, d_grad) = (g.desc(out)?, g.desc(grad)?);
        if d_out != d_grad {
            return Err(GraphError::Shape {
                op: "backward",
                detail: format!(
                    "seed gradient {} {} for output {out:?} of {} {}",
                    d_grad.dtype, d_grad.shape, d_out.dtype, d_out.shape
                ),
            });
        }
    }
    // Nodes whose value depends on a `wrt` node (only f32 tensors carry gradients).
    let mut requires = vec![false; n];
    for &w in wrt {
        g.node(w)?;
        requires[w.index()] = true;
    }
    for (id, node) in g.iter() {
        if node.desc.dtype == DType::F32 && node.inputs.iter().any(|i| requires[i.index()]) {
            requires[id.index()] = true;
        }
    }

    let mut grad: Vec<Option<NodeId>> = vec![None; n];
    for &(out, seed) in seeds {
        accumulate(g, &mut grad, out, seed)?;
    }

    for i in (0..n).rev() {
        let Some(dy) = grad[i] else { continue };
        if !requires[i] {
            continue;
        }
        if let Some(k) = segment_of[i]
            && !recomputed[k]
        {
            recompute(g, segments[k].clone(), &mut copy)?;
            recomputed[k] = true;
        }
        // Gradients are keyed by the forward nodes; operands of the gradient ops are the
        // recomputed copies where there are some.
        let value = |x: NodeId| value_of(&copy, x);
        let y = value(NodeId(i as u32));
        let node = g.nodes()[i].clone();
        let ins = &node.inputs;
        let vals: Vec<NodeId> = ins.iter().map(|&x| value(x)).collect();
        let needs = |k: usize| requires[ins[k].index()];
        match node.op {
            Op::Input | Op::Param { .. } => {}
            Op::Reshape => {
                let x = ins[0];
                let dims = g.shape(x)?;
                let dx = g.reshape(dy, dims.dims())?;
                accumulate(g, &mut grad, x, dx)?;
            }
            Op::Embedding => {
                if needs(0) {
                    let d = g.same_shape(Op::EmbeddingBackward, &[vals[1], dy], ins[0])?;
                    accumulate(g, &mut grad, ins[0], d)?;
                }
            }
            Op::MatMul { trans_a, trans_b } => matmul_backward(
                g,
                &mut grad,
                &requires,
                [ins[0], ins[1]],
                [vals[0], vals[1]],
                trans_a,
                trans_b,
                dy,
            )?,
            Op::Add => {
                if needs(0) {
                    accumulate(g, &mut grad, ins[0], dy)?;
                }
                if needs(1) {
                    let s = g.shape(ins[1])?;
                    let d = g.reduce_to_shape(dy, s)?;
                    accumulate(g, &mut grad, ins[1], d)?;
                }
            }
            Op::Mul => {
                if needs(0) {
                    let d = g.mul(dy, vals[1])?;
                    accumulate(g, &mut grad, ins[0], d)?;
                }
                if needs(1) {
                    let s = g.shape(ins[1])?;
                    let p = g.mul(dy, vals[0])?;
                    let d = g.reduce_to_shape(p, s)?;
                    accumulate(g, &mut grad, ins[1], d)?;
                }
            }
            Op::Scale { factor } => {
                let d = g.scale(dy, factor)?;
                accumulate(g, &mut grad, ins[0], d)?;
            }
            Op::RmsNorm { eps } => {
                let (x, w) = (ins[0], ins[1]);
                let nx = g.shape(x)?.numel();
                let nw = g.shape(w)?.numel();
                let packed = g.packed(Op::RmsNormBackward { eps }, &[vals[0], vals[1], dy], nx + nw)?;
                split_packed(g, &mut grad, &requires, packed, &[x, w])?;
            }
            Op::Rope(spec) => {
                let mut inv = spec;
                inv.inverse = !spec.inverse;
                // The transpose of a rotation is the rotation by the negative angle, at the
                // same positions (fixed, or read from the `past` input).
                let d = match vals.get(1) {
                    Some(&past) => g.rope_at(dy, inv, past)?,
                    None => g.rope(dy, inv)?,
                };
                accumulate(g, &mut grad, ins[0], d)?;
            }
            Op::Attention(_) if ins.len() > 3 => {
                if ins[..3].iter().any(|x| requires[x.index()]) {
                    return Err(unsupported(
                        "attention",
                        "attention at per-sequence positions (a decode graph) is not differentiable",
                    ));
                }
            }
            Op::Attention(spec) => {
                let total: usize = ins
                    .iter()
                    .map(|&t| g.shape(t).map(|s| s.numel()))
                    .sum::<Result<usize, _>>()?;
                let packed = g.packed(Op::AttentionBackward(spec), &[vals[0], vals[1], vals[2], dy], total)?;
                split_packed(g, &mut grad, &requires, packed, &[ins[0], ins[1], ins[2]])?;
            }
            Op::Dropout { p, salt } => {
                // The mask times 1/(1−p) is diagonal: its transpose is itself.
                let d = g.dropout(dy, vals[1], p, salt)?;
                accumulate(g, &mut grad, ins[0], d)?;
            }
            Op::Silu => {
                let d = g.same_shape(Op::SiluBackward, &[vals[0], dy], ins[0])?;
                accumulate(g, &mut grad, ins[0], d)?;
            }
            Op::SwiGlu => {
                let ne = g.shape(ins[0])?.numel();
                let packed = g.packed(Op::SwiGluBackward, &[vals[0], vals[1], dy], 2 * ne)?;
                split_packed(g, &mut grad, &requires, packed, &[ins[0], ins[1]])?;
            }
            Op::HeadSlice { width, start, len } => {
                let d = g.same_shape(Op::HeadSliceBackward { width, start, len }, &[dy], ins[0])?;
                accumulate(g, &mut grad, ins[0], d)?;
            }
            Op::ConcatHeads { heads, b_shared } => {
                let (wa, wb) = (g.shape(ins[0])?.last() / heads, g.shape(ins[1])?.last());
                let wb = if b_shared { wb } else { wb / heads };
                if needs(0) {
                    let d = g.head_slice(dy, wa + wb, 0, wa)?;
                    accumulate(g, &mut grad, ins[0], d)?;
                }
                if needs(1) {
                    let mut d = g.head_slice(dy, wa + wb, wa, wb)?;
                    if b_shared {
                        d = g.sum_heads(d, heads)?;
                    }
                    accumulate(g, &mut grad, ins[1], d)?;
                }
            }
            Op::SwapDims01 => {
                let d = g.swap_dims01(dy)?;
                accumulate(g, &mut grad, ins[0], d)?;
            }
            Op::MoeGate(routing) => {
                // The bias only picks experts: no gradient reaches it.
                if needs(0) {
                    let d = g.same_shape(Op::MoeGateBackward(routing), &[vals[0], vals[1], dy], ins[0])?;
                    accumulate(g, &mut grad, ins[0], d)?;
                }
            }
            Op::MoeExperts => {
                let total: usize = ins
                    .iter()
                    .map(|&t| g.shape(t).map(|s| s.numel()))
                    .sum::<Result<usize, _>>()?;
                let mut operands = vals.clone();
                operands.push(dy);
                let packed = g.packed(Op::MoeExpertsBackward, &operands, total)?;
                split_packed(g, &mut grad, &requires, packed, ins)?;
            }
            Op::Softmax => {
                let d = g.same_shape(Op::SoftmaxBackward, &[y, dy], ins[0])?;
                accumulate(g, &mut grad, ins[0], d)?;
            }
            Op::LogSoftmax => {
                let d = g.same_shape(Op::LogSoftmaxBackward, &[y, dy], ins[0])?;
                accumulate(g, &mut grad, ins[0], d)?;
            }
            Op::GatherLastDim => {
                let d = g.same_shape(Op::ScatterLastDim, &[vals[1], dy], ins[0])?;
                accumulate(g, &mut grad, ins[0], d)?;
            }
            Op::TokenLogProbs => {
                let d = g.same_shape(Op::TokenLogProbsBackward, &[vals[0], vals[1], dy], ins[0])?;
                accumulate(g, &mut grad, ins[0], d)?;
            }
            Op::CrossEntropy => {
                if needs(2) {
                    return Err(unsupported("cross_entropy", "with respect to the weights input"));
                }
                let d = g.same_shape(Op::CrossEntropyBackward, &[vals[0], vals[1], vals[2], dy], ins[0])?;
                accumulate(g, &mut grad, ins[0], d)?;
            }
            Op::SumAll => {
                let s = g.shape(ins[0])?;
                let ones = g.fill(1.0, s.dims())?;
                let d = g.mul(ones, dy)?;
                accumulate(g, &mut grad, ins[0], d)?;
            }
            ref op @ (Op::Slice { .. }
            | Op::Fill { .. }
            | Op::Entropy
            | Op::ReduceToShape
            | Op::EmbeddingBackward
            | Op::RmsNormBackward { .. }
            | Op::AttentionBackward(_)
            | Op::SiluBackward
            | Op::SwiGluBackward
            | Op::SoftmaxBackward
            | Op::LogSoftmaxBackward
            | Op::ScatterLastDim
            | Op::SumHeads { .. }
            | Op::HeadSliceBackward { .. }
            | Op::MoeGateBackward(_)
            | Op::MoeExpertsBackward
            | Op::TokenLogProbsBackward
            | Op::CrossEntropyBackward
            | Op::KvWrite { .. }) => {
                if ins.iter().any(|x| requires[x.index()]) {
                    return Err(unsupported(op.name(), "this op is not differentiable in r1"));
                }
            }
        }
    }
    Ok(wrt.iter().map(|w| grad[w.index()]).collect())
}

/// Appends a copy of every computed node of `seg`, in order, reading the copies of the
/// segment's own nodes and the forward values of everything else (leaves are not copied).
fn recompute(g: &mut Graph, seg: Range<usize>, copy: &mut [Option<NodeId>]) -> Result<(), GraphError> {
    for j in seg {
        let node = g.nodes()[j].clone();
        if node.op.is_leaf() {
            continue;
        }
        let inputs: Vec<NodeId> = node.inputs.iter().map(|&x| value_of(copy, x)).collect();
        copy[j] = Some(g.push(node.op, &inputs, node.desc)?);
    }
    Ok(())
}

/// The value of forward node `x` for the backward pass: its recomputed copy when its
/// segment has one, else the node itself.
fn value_of(copy: &[Option<NodeId>], x: NodeId) -> NodeId {
    copy[x.index()].unwrap_or(x)
}

/// Adds `d` to the gradient of `x`.
fn accumulate(g: &mut Graph, grad: &mut [Option<NodeId>], x: NodeId, d: NodeId) -> Result<(), GraphError> {
    let slot = &mut grad[x.index()];
    *slot = Some(match *slot {
        None => d,
        Some(prev) => g.add(prev, d)?,
    });
    Ok(())
}

/// Splits a packed backward output into one view per operand, in order.
fn split_packed(
    g: &mut Graph,
    grad: &mut [Option<NodeId>],
    requires: &[bool],
    packed: NodeId,
    operands: &[NodeId],
) -> Result<(), GraphError> {
    let mut offset = 0;
    for &x in operands {
        let s = g.shape(x)?;
        if requires[x.index()] {
            let d = g.slice(packed, offset, s.dims())?;
            accumulate(g, grad, x, d)?;
        }
        offset += s.numel();
    }
    Ok(())
}

/// Gradients of `C = op(A)·op(B)` (see [`Op::MatMul`]) for the forward nodes `A`, `B`
/// whose values are `a`, `b` (themselves, or their recomputed copies):
/// `dA = dC·op(B)ᵀ` (or its transpose), `dB = op(A)ᵀ·dC` (or its transpose); a rank-2
/// `B` shared over `A`'s batch dims gets the sum over the batch, computed by flattening
/// the batch into the rows of one GEMM.
#[allow(clippy::too_many_arguments)]
fn matmul_backward(
    g: &mut Graph,
    grad: &mut [Option<NodeId>],
    requires: &[bool],
    [a_node, b_node]: [NodeId; 2],
    [a, b]: [NodeId; 2],
    ta: bool,
    tb: bool,
    dc: NodeId,
) -> Result<(), GraphError> {
    let sa = g.shape(a)?;
    let sb = g.shape(b)?;
    let shared_b = sb.rank() == 2 && sa.rank() > 2;
    if requires[a_node.index()] {
        let da = if !ta {
            g.matmul(dc, b, false, !tb)?
        } else if !shared_b {
            g.matmul(b, dc, tb, true)?
        } else {
            return Err(unsupported("matmul", "transposed batched A with a shared B"));
        };
        accumulate(g, grad, a_node, da)?;
    }
    if requires[b_node.index()] {
        let db = if shared_b {
            if ta {
                return Err(unsupported("matmul", "transposed batched A with a shared B"));
            }
            let (k, m_all) = (sa.last(), sa.rows());
            let n = g.shape(dc)?.last();
            let a2 = g.reshape(a, &[m_all, k])?;
            let dc2 = g.reshape(dc, &[m_all, n])?;
            if tb {
                g.matmul(dc2, a2, true, false)?
            } else {
                g.matmul(a2, dc2, true, false)?
            }
        } else if tb {
            g.matmul(dc, a, true, ta)?
        } else {
            g.matmul(a, dc, !ta, false)?
        };
        accumulate(g, grad, b_node, db)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sum(silu(w) · w)`: one segment of two computed nodes between a param and a loss.
    fn graph() -> (Graph, NodeId, NodeId, NodeId) {
        let mut g = Graph::new();
        let w = g.param("w", &[4], true).expect("param");
        let s = g.silu(w).expect("silu");
        let m = g.mul(s, w).expect("mul");
        let loss = g.sum_all(m).expect("sum");
        let one = g.fill(1.0, &[]).expect("seed");
        (g, w, loss, one)
    }

    #[test]
    fn a_checkpointed_segment_is_recomputed_and_its_copies_feed_the_gradient() {
        let (mut g, w, loss, one) = graph();
        let before = g.len();
        let d = backward_checkpointed(&mut g, &[(loss, one)], &[w], core::slice::from_ref(&(1..3))).expect("backward");
        let dw = d[0].expect("gradient");
        // The copies of silu and mul come once the backward pass reaches the segment
        // (after sum's gradient); the gradient of mul's w operand reads the copy of silu.
        let nodes = g.nodes();
        let silu = (before..nodes.len())
            .find(|&i| nodes[i].op == Op::Silu)
            .expect("silu copy");
        assert_eq!(nodes[silu].inputs, [w]);
        assert_eq!(nodes[silu + 1].op, Op::Mul);
        assert_eq!(nodes[silu + 1].inputs, [NodeId(silu as u32), w]);
        let reads_copy = nodes[silu + 2..]
            .iter()
            .any(|n| n.op == Op::Mul && n.inputs.contains(&NodeId(silu as u32)));
        assert!(reads_copy, "the gradient of mul's w input reads the recomputed silu");
        assert!(
            !nodes[before..].iter().any(|n| n.inputs.contains(&NodeId(1))),
            "nothing reads the forward silu"
        );
        assert!(dw.index() > silu + 1);
    }

    #[test]
    fn segments_outside_the_graph_or_overlapping_are_refused() {
        let (mut g, w, loss, one) = graph();
        let n = g.len();
        let err = backward_checkpointed(&mut g, &[(loss, one)], &[w], core::slice::from_ref(&(1..n + 1)))
            .expect_err("outside");
        assert!(format!("{err}").contains("outside"), "{err}");
        let err = backward_checkpointed(&mut g, &[(loss, one)], &[w], &[1..3, 2..4]).expect_err("overlap");
        assert!(format!("{err}").contains("overlaps"), "{err}");
    }
}
