//! Tensor descriptors: element type and shape. Tensors are always contiguous and
//! row-major; a descriptor carries no data (data lives in a backend's buffers).

use core::fmt;

/// A block-quantized storage format, opaque to core: an id the backend that supports it
/// recognises, how many elements one block holds and how many bytes it takes. GGUF's
/// Q8_0 is `{ id, block: 32, block_bytes: 34 }`; Q4_K `{ id, block: 256, block_bytes: 144 }`.
/// A row of a block-quantized tensor (its last dimension) is a whole number of blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct BlockFormat {
    /// Which format (chosen by the code that defines it, e.g. the GGUF type number).
    pub id: u16,
    /// Elements per block.
    pub block: u16,
    /// Bytes per block.
    pub block_bytes: u16,
    /// A short name for errors and logs (`"q8_0"`).
    #[serde(skip, default = "unnamed_block")]
    pub name: &'static str,
}

fn unnamed_block() -> &'static str {
    "block"
}

/// Element type of a tensor. Activations and gradients are f32; token ids and positions
/// are i32; weights may also be stored as bf16, f16 or a [`BlockFormat`] — an op whose
/// operand is not f32 (a quantized matmul) is one a backend must say it supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 32-bit signed integer (token ids, positions).
    I32,
    /// bfloat16.
    BF16,
    /// IEEE half.
    F16,
    /// Block-quantized (opaque to core).
    Block(BlockFormat),
}

impl DType {
    /// Bytes per element of a scalar type; `None` for block formats (use
    /// [`DType::bytes_for`], which counts whole blocks).
    pub const fn elem_bytes(self) -> Option<usize> {
        match self {
            DType::F32 | DType::I32 => Some(4),
            DType::BF16 | DType::F16 => Some(2),
            DType::Block(_) => None,
        }
    }

    /// Bytes that `numel` consecutive elements take (for a block format, `numel` rounded
    /// up to whole blocks). `None` on overflow.
    pub const fn bytes_for(self, numel: usize) -> Option<usize> {
        match self {
            DType::Block(f) => {
                let block = if f.block == 0 { 1 } else { f.block as usize };
                numel.div_ceil(block).checked_mul(f.block_bytes as usize)
            }
            _ => match self.elem_bytes() {
                Some(b) => numel.checked_mul(b),
                None => None,
            },
        }
    }

    /// Whether this is a block-quantized format.
    pub const fn is_block(self) -> bool {
        matches!(self, DType::Block(_))
    }

    /// A short name (`f32`, `bf16`, `q8_0`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::Block(f) => f.name,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Most dimensions any op uses (batch, time, heads, head_dim).
pub const MAX_RANK: usize = 4;

/// A row-major shape of rank 0..=4. Rank 0 is a scalar with one element.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: u8,
}

impl Shape {
    /// A shape from its dimensions. Panics only on a rank above [`MAX_RANK`], which is a
    /// programming error in a graph builder, never a consequence of outside input.
    pub fn new(dims: &[usize]) -> Shape {
        assert!(dims.len() <= MAX_RANK, "rank {} exceeds MAX_RANK", dims.len());
        let mut d = [0; MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        Shape {
            dims: d,
            rank: dims.len() as u8,
        }
    }

    /// The rank-0 shape (one element).
    pub const fn scalar() -> Shape {
        Shape {
            dims: [0; MAX_RANK],
            rank: 0,
        }
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank as usize]
    }

    /// Number of dimensions (0 for a scalar).
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// Number of elements (1 for a scalar), `None` on overflow.
    pub fn checked_numel(&self) -> Option<usize> {
        self.dims().iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// The last dimension (1 for a scalar).
    pub fn last(&self) -> usize {
        self.dims().last().copied().unwrap_or(1)
    }

    /// Product of all dimensions but the last (1 for rank <= 1).
    pub fn rows(&self) -> usize {
        let d = self.dims();
        if d.is_empty() {
            1
        } else {
            d[..d.len() - 1].iter().product()
        }
    }

    /// Dimension `i` counted from the end (0 = last); 1 when out of range.
    pub fn dim_from_end(&self, i: usize) -> usize {
        let d = self.dims();
        if i < d.len() { d[d.len() - 1 - i] } else { 1 }
    }

    /// True when `suffix`'s dims equal the trailing dims of `self` (the broadcast rule of
    /// `Add`/`Mul`: the right operand repeats over the leading dims of the left).
    pub fn ends_with(&self, suffix: &Shape) -> bool {
        self.dims().ends_with(suffix.dims())
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

/// Element type and shape of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorDesc {
    /// Element type.
    pub dtype: DType,
    /// Dimensions (row-major, contiguous).
    pub shape: Shape,
}

impl TensorDesc {
    /// A `dtype` tensor of shape `dims`.
    pub fn new(dtype: DType, dims: &[usize]) -> TensorDesc {
        TensorDesc {
            dtype,
            shape: Shape::new(dims),
        }
    }

    /// An f32 tensor of shape `dims`.
    pub fn f32(dims: &[usize]) -> TensorDesc {
        TensorDesc::new(DType::F32, dims)
    }

    /// An i32 tensor of shape `dims`.
    pub fn i32(dims: &[usize]) -> TensorDesc {
        TensorDesc::new(DType::I32, dims)
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// Bytes the tensor takes: rows × the bytes of one row (a block format stores each
    /// row — the last dimension — as whole blocks). Saturates on overflow, which no
    /// allocation can satisfy; [`TensorDesc::checked_bytes`] reports it instead.
    pub fn bytes(&self) -> usize {
        self.checked_bytes().unwrap_or(usize::MAX)
    }

    /// Bytes the tensor takes, `None` on overflow.
    pub fn checked_bytes(&self) -> Option<usize> {
        let numel = self.shape.checked_numel()?;
        match self.dtype {
            DType::Block(_) => {
                let last = self.shape.last();
                let rows = numel.checked_div(last).unwrap_or(0);
                self.dtype.bytes_for(last)?.checked_mul(rows)
            }
            d => d.bytes_for(numel),
        }
    }

    /// Byte offset of element `index` in a tensor of this type (for a block format, of
    /// the block that starts at `index`, which must be a block boundary).
    pub fn byte_offset(&self, index: usize) -> usize {
        self.dtype.bytes_for(index).unwrap_or(usize::MAX)
    }

    /// Whether a block format's rows are whole blocks (always true for scalar types).
    pub fn rows_are_whole_blocks(&self) -> bool {
        match self.dtype {
            DType::Block(f) => f.block > 0 && self.shape.last().is_multiple_of(f.block as usize),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const Q8_0: BlockFormat = BlockFormat {
        id: 8,
        block: 32,
        block_bytes: 34,
        name: "q8_0",
    };

    #[test]
    fn block_formats_count_whole_blocks_per_row() {
        let d = TensorDesc::new(DType::Block(Q8_0), &[3, 64]);
        assert_eq!(d.bytes(), 3 * 2 * 34);
        assert!(d.rows_are_whole_blocks());
        assert_eq!(d.byte_offset(64), 2 * 34);
        assert!(!TensorDesc::new(DType::Block(Q8_0), &[3, 48]).rows_are_whole_blocks());
        assert_eq!(DType::Block(Q8_0).elem_bytes(), None);
        assert_eq!(DType::Block(Q8_0).to_string(), "q8_0");
    }

    #[test]
    fn scalar_types_take_their_element_size() {
        assert_eq!(TensorDesc::new(DType::BF16, &[5, 3]).bytes(), 30);
        assert_eq!(TensorDesc::f32(&[5, 3]).bytes(), 60);
        assert_eq!(TensorDesc::i32(&[]).bytes(), 4);
        assert_eq!(TensorDesc::f32(&[usize::MAX, 2]).checked_bytes(), None);
    }
}
