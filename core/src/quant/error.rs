//! What can go wrong converting rows to and from GGML's formats: typed, never a panic.

use core::fmt;

use super::GgmlType;

/// An error of the `quant` functions: an unknown type id, a length that is not whole
/// blocks, a buffer of the wrong size (naming expected and actual bytes), a size that
/// overflows, or a type without the requested operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantError {
    /// A GGML type number this module does not implement.
    UnknownType {
        /// The GGML type id (`enum ggml_type`).
        id: u32,
    },
    /// A row length that is not a whole number of the format's blocks.
    NotWholeBlocks {
        /// The format.
        ty: GgmlType,
        /// Elements in the row.
        elements: u64,
        /// Elements per block.
        block: usize,
    },
    /// A byte buffer whose length does not match the elements it should hold.
    ByteLength {
        /// The format of the buffer.
        ty: GgmlType,
        /// Which buffer: `"input"`, `"output"`, `"weight"` or `"activation"`.
        operand: &'static str,
        /// Elements the buffer should hold.
        elements: usize,
        /// Bytes those elements take in `ty`.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// A byte size that does not fit in `u64` or `usize`.
    Overflow {
        /// The format.
        ty: GgmlType,
    },
    /// A weight type without a dot product against a quantized activation here.
    NoVecDot {
        /// The weight's format.
        ty: GgmlType,
    },
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            QuantError::UnknownType { id } => write!(f, "unknown or unsupported GGML type id {id}"),
            QuantError::NotWholeBlocks { ty, elements, block } => write!(
                f,
                "{ty}: a row of {elements} elements is not a whole number of {block}-element blocks"
            ),
            QuantError::ByteLength {
                ty,
                operand,
                elements,
                expected,
                actual,
            } => write!(
                f,
                "{ty}: {operand} of {elements} elements takes {expected} bytes, got {actual}"
            ),
            QuantError::Overflow { ty } => write!(f, "{ty}: tensor byte size overflows"),
            QuantError::NoVecDot { ty } => {
                write!(f, "{ty}: no quantized dot product for this weight type")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for QuantError {}
