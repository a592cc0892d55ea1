//! Tensor descriptors: element type and shape. Tensors are always contiguous and
//! row-major; a descriptor carries no data (data lives in a backend's buffers).

use core::fmt;

/// Element type of a tensor. Graph compute is f32; ids are i32; bf16/f16 exist for
/// loading stored weights (converted to f32 when uploaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    F32,
    I32,
    BF16,
    F16,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
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

    pub const fn scalar() -> Shape {
        Shape {
            dims: [0; MAX_RANK],
            rank: 0,
        }
    }

    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank as usize]
    }

    pub fn rank(&self) -> usize {
        self.rank as usize
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
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorDesc {
    pub fn new(dtype: DType, dims: &[usize]) -> TensorDesc {
        TensorDesc {
            dtype,
            shape: Shape::new(dims),
        }
    }

    pub fn f32(dims: &[usize]) -> TensorDesc {
        TensorDesc::new(DType::F32, dims)
    }

    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}
