//! The ggml tensor types a GGUF file can name: id, name, elements per block and bytes per
//! block, as ggml.c's `type_traits` table lists them, so every tensor's byte size is
//! checked against the file before anything is read.

use std::fmt;

/// One ggml tensor type (`enum ggml_type`). The ids ggml retired (4, 5, 31–33, 36–38) are
/// unknown here as they are to ggml.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType {
    /// The id stored in the file.
    pub id: u32,
    /// ggml's name (`Q4_K`, `BF16`).
    pub name: &'static str,
    /// Elements per block (1 for the plain types).
    pub block_elems: u64,
    /// Bytes per block.
    pub block_bytes: u64,
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

const fn t(id: u32, name: &'static str, block_elems: u64, block_bytes: u64) -> GgmlType {
    GgmlType {
        id,
        name,
        block_elems,
        block_bytes,
    }
}

/// ggml.c's `type_traits` (`blck_size`, `type_size`). Q8_1 is 36 bytes (two f16 and 32
/// quants) as in ggml; gguf-py's table still says 40, from before the scales were f16.
pub const GGML_TYPES: [GgmlType; 34] = [
    t(0, "F32", 1, 4),
    t(1, "F16", 1, 2),
    t(2, "Q4_0", 32, 18),
    t(3, "Q4_1", 32, 20),
    t(6, "Q5_0", 32, 22),
    t(7, "Q5_1", 32, 24),
    t(8, "Q8_0", 32, 34),
    t(9, "Q8_1", 32, 36),
    t(10, "Q2_K", 256, 84),
    t(11, "Q3_K", 256, 110),
    t(12, "Q4_K", 256, 144),
    t(13, "Q5_K", 256, 176),
    t(14, "Q6_K", 256, 210),
    t(15, "Q8_K", 256, 292),
    t(16, "IQ2_XXS", 256, 66),
    t(17, "IQ2_XS", 256, 74),
    t(18, "IQ3_XXS", 256, 98),
    t(19, "IQ1_S", 256, 50),
    t(20, "IQ4_NL", 32, 18),
    t(21, "IQ3_S", 256, 110),
    t(22, "IQ2_S", 256, 82),
    t(23, "IQ4_XS", 256, 136),
    t(24, "I8", 1, 1),
    t(25, "I16", 1, 2),
    t(26, "I32", 1, 4),
    t(27, "I64", 1, 8),
    t(28, "F64", 1, 8),
    t(29, "IQ1_M", 256, 56),
    t(30, "BF16", 1, 2),
    t(34, "TQ1_0", 256, 54),
    t(35, "TQ2_0", 256, 66),
    t(39, "MXFP4", 32, 17),
    t(40, "NVFP4", 64, 36),
    t(41, "Q1_0", 128, 18),
];

impl GgmlType {
    pub const F32: GgmlType = GGML_TYPES[0];
    pub const F16: GgmlType = GGML_TYPES[1];
    pub const Q8_0: GgmlType = GGML_TYPES[6];
    pub const BF16: GgmlType = GGML_TYPES[28];

    /// The type of id `id`, if ggml defines one.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GGML_TYPES.iter().copied().find(|t| t.id == id)
    }

    /// The type named `name` (ggml's spelling).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GGML_TYPES.iter().copied().find(|t| t.name == name)
    }

    /// Whether values are stored in blocks with shared scales (Q8_0, Q4_K, IQ2_XS…).
    pub fn is_block_quantized(self) -> bool {
        self.block_elems > 1
    }

    /// Bytes of a tensor of `elems` elements whose row length is `row_elems`: `None` when
    /// a row is not a whole number of blocks or the size overflows.
    pub fn bytes_for(self, row_elems: u64, elems: u64) -> Option<u64> {
        if !row_elems.is_multiple_of(self.block_elems) {
            return None;
        }
        (elems / self.block_elems).checked_mul(self.block_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_sizes_match_the_block_layouts() {
        for (i, a) in GGML_TYPES.iter().enumerate() {
            assert!(GGML_TYPES[i + 1..].iter().all(|b| b.id != a.id && b.name != a.name));
        }
        assert_eq!(GgmlType::from_id(8), Some(GgmlType::Q8_0));
        assert_eq!(GgmlType::from_name("BF16"), Some(GgmlType::BF16));
        assert_eq!(GgmlType::F16.id, 1);
        assert_eq!(GgmlType::from_id(4), None);
        // Q4_K: d, dmin (f16), 12 bytes of scales, 128 bytes of 4-bit quants.
        assert_eq!(
            GgmlType::from_name("Q4_K").map(|t| t.block_bytes),
            Some(2 + 2 + 12 + 128)
        );
        // Q6_K: 128 low + 64 high bits bytes, 16 scales, one f16.
        assert_eq!(
            GgmlType::from_name("Q6_K").map(|t| t.block_bytes),
            Some(128 + 64 + 16 + 2)
        );
        assert_eq!(GgmlType::Q8_0.bytes_for(64, 128), Some(4 * 34));
        assert_eq!(GgmlType::Q8_0.bytes_for(48, 96), None);
        assert_eq!(GgmlType::F32.bytes_for(1, u64::MAX), None);
    }
}
