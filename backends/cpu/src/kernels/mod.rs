//! The kernels of every graph op, one concept per file, each next to its backward.
//! They take plain slices (see [`crate::views`]) and a [`Ctx`]: the instruction set and
//! the threads to run on.

pub(crate) mod activation;
pub(crate) mod adamw;
pub(crate) mod attention;
pub(crate) mod elementwise;
pub(crate) mod embedding;
pub(crate) mod gemm;
pub(crate) mod kv_cache;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod rope;
pub(crate) mod softmax;
pub(crate) mod token_loss;

use std::fmt::Display;

use r1_core::BackendError;

use crate::parallel::Threads;
use crate::simd::Isa;

/// What every kernel runs with.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub isa: Isa,
    pub threads: &'a Threads,
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
