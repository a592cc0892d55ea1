//! The kernels of every graph op, one concept per file, each next to its backward.
//! They take plain slices (see [`crate::views`]) and a [`Ctx`]: the instruction set and
//! the threads to run on.

pub(crate) mod activation;
pub(crate) mod adamw;
pub(crate) mod attention;
pub(crate) mod elementwise;
pub(crate) mod embedding;
pub(crate) mod gemm;
pub(crate) mod gemm_bcast;
pub(crate) mod gemm_bf16;
pub(crate) mod kv_cache;
pub(crate) mod matmul;
pub(crate) mod moe;
pub(crate) mod norm;
pub(crate) mod quant_matmul;
pub(crate) mod rope;
pub(crate) mod softmax;
pub(crate) mod token_loss;

use std::fmt::Display;

use r1_core::BackendError;

use crate::parallel::Threads;
use crate::simd::Isa;
use crate::simd::bf16_dot::Bf16Dot;

/// What every kernel runs with.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub isa: Isa,
    pub threads: &'a Threads,
    /// Set when f32 matmuls past the decode sizes compute in bf16 (`with_bf16_compute`).
    pub bf16: Option<Bf16Dot>,
}

/// Where each sequence of a batch starts: one offset for every sequence (a graph built
/// for one position) or one per sequence, read at run time from a `past [B]` input (a
/// decode plan reused at every step).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Past<'a> {
    Fixed(usize),
    PerSeq(&'a [usize]),
}

impl Past<'_> {
    /// Tokens before sequence `b`'s first row.
    pub fn of(&self, b: usize) -> usize {
        match self {
            Past::Fixed(p) => *p,
            Past::PerSeq(p) => p.get(b).copied().unwrap_or(0),
        }
    }

    /// The largest start over all sequences.
    pub fn max(&self) -> usize {
        match self {
            Past::Fixed(p) => *p,
            Past::PerSeq(p) => p.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Checks a `past [B]` input: one non-negative start per sequence, with `time` new rows
/// fitting `capacity` rows after it. An `InvalidInput` names the first bad entry.
pub(crate) fn checked_past(
    op: &'static str,
    past: &[i32],
    batch: usize,
    time: usize,
    capacity: usize,
) -> Result<Vec<usize>, BackendError> {
    if past.len() != batch {
        return Err(size_error(
            op,
            format!("{} positions for {batch} sequences", past.len()),
        ));
    }
    past.iter()
        .enumerate()
        .map(|(b, &p)| {
            usize::try_from(p)
                .ok()
                .filter(|&p| p.checked_add(time).is_some_and(|end| end <= capacity))
                .ok_or_else(|| BackendError::InvalidInput {
                    op,
                    detail: format!("sequence {b} starts at position {p}: {time} new rows do not fit {capacity}"),
                })
        })
        .collect()
}

/// Sizes that do not fit the op (the `Backend` contract calls this `OutOfBounds`).
pub(crate) fn size_error(op: &'static str, detail: impl Display) -> BackendError {
    BackendError::OutOfBounds {
        detail: format!("{op}: {detail}"),
    }
}

/// Checks that every id is in `0..vocab` (negative ids pass when `negative_ignored`: the
/// ignore mask of cross-entropy). The first bad id is an `InvalidInput` naming it, its
/// position and the vocabulary size.
pub(crate) fn check_ids(
    op: &'static str,
    ids: &[i32],
    vocab: usize,
    negative_ignored: bool,
) -> Result<(), BackendError> {
    let bad = ids.iter().position(|&id| {
        if id < 0 {
            !negative_ignored
        } else {
            id as usize >= vocab
        }
    });
    match bad {
        None => Ok(()),
        Some(i) => Err(BackendError::InvalidInput {
            op,
            detail: format!(
                "id {} at position {i} is outside the vocabulary of size {vocab} (valid ids are 0..{vocab})",
                ids[i]
            ),
        }),
    }
}
