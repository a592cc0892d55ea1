//! The one error type of the GRPO math: bad shapes, non-finite inputs and invalid
//! configuration, each naming the tensor, index or field at fault. A plain enum (no_std).

use alloc::string::String;
use core::fmt;

/// Why an advantage or loss computation refused its inputs.
#[derive(Clone, Debug, PartialEq)]
pub enum GrpoError {
    /// The group size (`num_generations`) is 0.
    ZeroGroupSize,
    /// The batch is not a whole number of groups.
    GroupSizeDoesNotDivide {
        /// Number of completions (rewards) in the batch.
        batch: usize,
        /// Completions per prompt, `G` (TRL's `num_generations`).
        group_size: usize,
    },
    /// A tensor's length does not fit the others (`expected` is what the shape implies).
    LengthMismatch {
        /// The argument's name (`logp`, `advantages`…).
        tensor: &'static str,
        /// Length the other inputs (or the config) imply.
        expected: usize,
        /// Length it has.
        actual: usize,
    },
    /// A value that must be finite is NaN or infinite (`index` is the flat position).
    NonFinite {
        /// The argument's name.
        tensor: &'static str,
        /// Flat position of the bad value.
        index: usize,
        /// The value (NaN or ±∞).
        value: f32,
    },
    /// A reward that is infinite (NaN is allowed: it means "not applicable").
    InfiniteReward {
        /// Index of the reward function, in the order the rewards were passed.
        reward: usize,
        /// Index of the completion in the batch.
        sample: usize,
        /// The infinite score.
        value: f32,
    },
    /// A completion-mask entry other than 0 or 1.
    InvalidMask {
        /// Flat position in the `[B × completion_len]` mask.
        index: usize,
        /// The entry found.
        value: f32,
    },
    /// An input the configuration needs was not given (`ref_logp` when `beta != 0`…).
    MissingInput {
        /// The missing argument.
        tensor: &'static str,
        /// Which setting needs it.
        reason: &'static str,
    },
    /// The batch has no sequences, or the sequences have no positions.
    EmptyBatch {
        /// What is empty (no completions, no reward functions, `completion_len` 0).
        what: &'static str,
    },
    /// A configuration field is out of range.
    InvalidConfig {
        /// The [`GrpoConfig`](crate::grpo::GrpoConfig) field, under TRL's name.
        field: &'static str,
        /// The allowed range or the conflict.
        reason: String,
    },
}

impl fmt::Display for GrpoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrpoError::ZeroGroupSize => f.write_str("group size (num_generations) must be at least 1"),
            GrpoError::GroupSizeDoesNotDivide { batch, group_size } => write!(
                f,
                "batch of {batch} rewards is not a whole number of groups of {group_size} (num_generations)"
            ),
            GrpoError::LengthMismatch {
                tensor,
                expected,
                actual,
            } => {
                write!(f, "`{tensor}` has {actual} values, expected {expected}")
            }
            GrpoError::NonFinite { tensor, index, value } => {
                write!(f, "`{tensor}[{index}]` is {value}, expected a finite number")
            }
            GrpoError::InfiniteReward { reward, sample, value } => write!(
                f,
                "reward function {reward} gave {value} for sample {sample} (expected a finite score or NaN for not applicable)"
            ),
            GrpoError::InvalidMask { index, value } => {
                write!(f, "`mask[{index}]` is {value}, expected 0 or 1")
            }
            GrpoError::MissingInput { tensor, reason } => write!(f, "`{tensor}` is required: {reason}"),
            GrpoError::EmptyBatch { what } => write!(f, "empty batch: {what}"),
            GrpoError::InvalidConfig { field, reason } => write!(f, "invalid GRPO config `{field}`: {reason}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for GrpoError {}
