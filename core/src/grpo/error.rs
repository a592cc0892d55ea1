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
    GroupSizeDoesNotDivide { batch: usize, group_size: usize },
    /// A tensor's length does not fit the others (`expected` is what the shape implies).
    LengthMismatch {
        tensor: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A value that must be finite is NaN or infinite (`index` is the flat position).
    NonFinite {
        tensor: &'static str,
        index: usize,
        value: f32,
    },
    /// A reward that is infinite (NaN is allowed: it means "not applicable").
    InfiniteReward { reward: usize, sample: usize, value: f32 },
    /// A completion-mask entry other than 0 or 1.
    InvalidMask { index: usize, value: f32 },
    /// An input the configuration needs was not given (`ref_logp` when `beta != 0`…).
    MissingInput { tensor: &'static str, reason: &'static str },
    /// The batch has no sequences, or the sequences have no positions.
    EmptyBatch { what: &'static str },
    /// A configuration field is out of range.
    InvalidConfig { field: &'static str, reason: String },
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
