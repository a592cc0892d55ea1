//! The GGML types r1 reads and writes: ids, block sizes, byte sizes, the matching
//! [`BlockFormat`]s and tensor byte sizes with overflow checks.

use core::fmt;

use super::QuantError;
use crate::tensor::{BlockFormat, DType};

/// Elements per K-quant super-block (`QK_K`).
pub const QK_K: usize = 256;

/// One of the GGML tensor types this module implements, numbered as ggml's `enum ggml_type`
/// (and GGUF's tensor-info type field). F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K and Q6_K are
/// weight formats; Q8_K is what activations are quantized to for the K-quant dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// IEEE binary32, little-endian (`GGML_TYPE_F32` = 0).
    F32,
    /// IEEE binary16, little-endian (`GGML_TYPE_F16` = 1).
    F16,
    /// 32 × 4-bit, one f16 scale (`GGML_TYPE_Q4_0` = 2); see [`super::q4_0`].
    Q4_0,
    /// 32 × 5-bit, one f16 scale (`GGML_TYPE_Q5_0` = 6); see [`super::q5_0`].
    Q5_0,
    /// 32 × 8-bit, one f16 scale (`GGML_TYPE_Q8_0` = 8); see [`super::q8_0`].
    Q8_0,
    /// 256 × 4-bit with 6-bit sub-block scales and mins (`GGML_TYPE_Q4_K` = 12); see [`super::q4_k`].
    Q4_K,
    /// 256 × 6-bit with 8-bit sub-block scales (`GGML_TYPE_Q6_K` = 14); see [`super::q6_k`].
    Q6_K,
    /// 256 × 8-bit, an f32 scale and 16 block sums (`GGML_TYPE_Q8_K` = 15); see [`super::q8_k`].
    Q8_K,
    /// bfloat16, little-endian (`GGML_TYPE_BF16` = 30).
    BF16,
}

/// [`GgmlType::Q4_0`] as a core [`BlockFormat`]: 32 elements in 18 bytes.
pub const BLOCK_Q4_0: BlockFormat = block_format(GgmlType::Q4_0);
/// [`GgmlType::Q5_0`] as a core [`BlockFormat`]: 32 elements in 22 bytes.
pub const BLOCK_Q5_0: BlockFormat = block_format(GgmlType::Q5_0);
/// [`GgmlType::Q8_0`] as a core [`BlockFormat`]: 32 elements in 34 bytes.
pub const BLOCK_Q8_0: BlockFormat = block_format(GgmlType::Q8_0);
/// [`GgmlType::Q4_K`] as a core [`BlockFormat`]: 256 elements in 144 bytes.
pub const BLOCK_Q4_K: BlockFormat = block_format(GgmlType::Q4_K);
/// [`GgmlType::Q6_K`] as a core [`BlockFormat`]: 256 elements in 210 bytes.
pub const BLOCK_Q6_K: BlockFormat = block_format(GgmlType::Q6_K);
/// [`GgmlType::Q8_K`] as a core [`BlockFormat`]: 256 elements in 292 bytes.
pub const BLOCK_Q8_K: BlockFormat = block_format(GgmlType::Q8_K);

const fn block_format(ty: GgmlType) -> BlockFormat {
    BlockFormat {
        id: ty.id() as u16,
        block: ty.block_size() as u16,
        block_bytes: ty.type_size() as u16,
        name: ty.name(),
    }
}

impl GgmlType {
    /// Every type this module implements, in id order.
    pub const ALL: [GgmlType; 9] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::BF16,
    ];

    /// The GGML type number (`enum ggml_type`).
    pub const fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q5_0 => 6,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::BF16 => 30,
        }
    }

    /// The type with GGML number `id`; [`QuantError::UnknownType`] for any other
    /// (including GGML types this module does not implement, such as Q5_K).
    pub fn from_id(id: u32) -> Result<GgmlType, QuantError> {
        GgmlType::ALL
            .into_iter()
            .find(|t| t.id() == id)
            .ok_or(QuantError::UnknownType { id })
    }

    /// ggml's name of the type (`"q4_K"`, `"bf16"`).
    pub const fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q4_K => "q4_K",
            GgmlType::Q6_K => "q6_K",
            GgmlType::Q8_K => "q8_K",
            GgmlType::BF16 => "bf16",
        }
    }

    /// Elements per block (`ggml_blck_size`; 1 for the float types).
    pub const fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => 32,
            GgmlType::Q4_K | GgmlType::Q6_K | GgmlType::Q8_K => QK_K,
        }
    }

    /// Bytes per block (`ggml_type_size`).
    pub const fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q5_0 => 22,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_K => 144,
            GgmlType::Q6_K => 210,
            GgmlType::Q8_K => 292,
        }
    }

    /// Whether the type is block-quantized (not one of the float types).
    pub const fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// The core [`BlockFormat`] of a block-quantized type; `None` for the float types.
    pub const fn block_format(self) -> Option<BlockFormat> {
        if self.is_quantized() {
            Some(block_format(self))
        } else {
            None
        }
    }

    /// The core element type a tensor of this GGML type has.
    pub const fn dtype(self) -> DType {
        match self {
            GgmlType::F32 => DType::F32,
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            t => DType::Block(block_format(t)),
        }
    }

    /// The GGML type of a core element type: a float type, or a [`BlockFormat`] whose id,
    /// block and block bytes are one of this module's (its name is not compared).
    pub fn from_dtype(dtype: DType) -> Option<GgmlType> {
        match dtype {
            DType::F32 => Some(GgmlType::F32),
            DType::F16 => Some(GgmlType::F16),
            DType::BF16 => Some(GgmlType::BF16),
            DType::I32 => None,
            DType::Block(f) => {
                let t = GgmlType::from_id(u32::from(f.id)).ok()?;
                let same = t.is_quantized()
                    && usize::from(f.block) == t.block_size()
                    && usize::from(f.block_bytes) == t.type_size();
                same.then_some(t)
            }
        }
    }

    /// The type ggml quantizes activations to for this weight type's dot product
    /// (`type_traits_cpu[..].vec_dot_type`), when [`super::vec_dot`] implements it.
    pub const fn vec_dot_type(self) -> Option<GgmlType> {
        match self {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => Some(GgmlType::Q8_0),
            GgmlType::Q4_K | GgmlType::Q6_K => Some(GgmlType::Q8_K),
            _ => None,
        }
    }

    /// Bytes of a row of `elements` elements (`ggml_row_size`). The row must be a whole
    /// number of blocks ([`QuantError::NotWholeBlocks`]); a size past `usize` is
    /// [`QuantError::Overflow`].
    pub fn row_bytes(self, elements: u64) -> Result<usize, QuantError> {
        let block = self.block_size() as u64;
        if !elements.is_multiple_of(block) {
            return Err(QuantError::NotWholeBlocks {
                ty: self,
                elements,
                block: self.block_size(),
            });
        }
        (elements / block)
            .checked_mul(self.type_size() as u64)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(QuantError::Overflow { ty: self })
    }

    /// Bytes of a contiguous tensor with GGML dimensions `ne` (`ggml_nbytes`): `ne[0]` is
    /// the row length (innermost, as GGUF stores dimensions), which must be whole blocks;
    /// the others count rows (any of them 0: no bytes). No dimensions means one element. Overflow is an error.
    pub fn tensor_bytes(self, ne: &[u64]) -> Result<usize, QuantError> {
        let (&row, outer) = ne.split_first().unwrap_or((&1, &[]));
        let rows = if outer.contains(&0) {
            0
        } else {
            outer
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d))
                .ok_or(QuantError::Overflow { ty: self })?
        };
        self.row_bytes(row)?
            .checked_mul(usize::try_from(rows).map_err(|_| QuantError::Overflow { ty: self })?)
            .ok_or(QuantError::Overflow { ty: self })
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorDesc;

    #[test]
    fn ids_and_sizes_are_ggmls() {
        let table: [(GgmlType, u32, usize, usize); 9] = [
            (GgmlType::F32, 0, 1, 4),
            (GgmlType::F16, 1, 1, 2),
            (GgmlType::Q4_0, 2, 32, 18),
            (GgmlType::Q5_0, 6, 32, 22),
            (GgmlType::Q8_0, 8, 32, 34),
            (GgmlType::Q4_K, 12, 256, 144),
            (GgmlType::Q6_K, 14, 256, 210),
            (GgmlType::Q8_K, 15, 256, 292),
            (GgmlType::BF16, 30, 1, 2),
        ];
        for (t, id, block, size) in table {
            assert_eq!((t.id(), t.block_size(), t.type_size()), (id, block, size), "{t}");
            assert_eq!(GgmlType::from_id(id), Ok(t));
            assert_eq!(GgmlType::from_dtype(t.dtype()), Some(t));
        }
        assert_eq!(GgmlType::from_id(13), Err(QuantError::UnknownType { id: 13 }));
        assert_eq!(GgmlType::from_dtype(DType::I32), None);
    }

    #[test]
    fn block_formats_size_core_tensors() {
        assert_eq!(BLOCK_Q4_K.block_bytes, 144);
        let d = TensorDesc::new(DType::Block(BLOCK_Q6_K), &[3, 512]);
        assert_eq!(d.checked_bytes(), Some(3 * 2 * 210));
        assert_eq!(GgmlType::Q6_K.tensor_bytes(&[512, 3]), Ok(3 * 2 * 210));
        let foreign = BlockFormat {
            block: 64,
            ..BLOCK_Q8_0
        };
        assert_eq!(GgmlType::from_dtype(DType::Block(foreign)), None);
    }

    #[test]
    fn tensor_bytes_refuses_partial_blocks_and_overflow() {
        let t = GgmlType::Q8_0;
        assert_eq!(t.tensor_bytes(&[4096, 11008]), Ok(4096 / 32 * 34 * 11008));
        assert_eq!(
            t.tensor_bytes(&[48, 2]),
            Err(QuantError::NotWholeBlocks {
                ty: t,
                elements: 48,
                block: 32
            })
        );
        assert_eq!(t.tensor_bytes(&[32, u64::MAX, 2]), Err(QuantError::Overflow { ty: t }));
        assert_eq!(t.tensor_bytes(&[32, u64::MAX, 2, 0]), Ok(0));
        assert_eq!(
            GgmlType::F32.tensor_bytes(&[u64::MAX]),
            Err(QuantError::Overflow { ty: GgmlType::F32 })
        );
        assert_eq!(GgmlType::F16.tensor_bytes(&[]), Ok(2));
    }
}
