//! What a KV cache stores: the element type of the cached keys and of the cached values
//! (llama.cpp's `--cache-type-k` / `--cache-type-v`: f32, f16, bf16, q8_0, q4_0), each a
//! [`GgmlType`] so its bytes, quantizer and dequantizer are GGML's, and the bytes one
//! cached token takes per layer.
//!
//! A quantized cache row (`kv_heads · head_dim` values) is whole 32-value blocks: each
//! new key or value row is quantized block by block when it is appended.

use core::fmt;
use core::str::FromStr;

use crate::quant::GgmlType;
use crate::tensor::DType;

/// The element type of one side (keys or values) of a KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[allow(non_camel_case_types)]
pub enum KvCacheType {
    /// 4 bytes per value, what the cache stored before this type existed (the default).
    #[default]
    #[serde(rename = "f32")]
    F32,
    /// IEEE half, 2 bytes per value.
    #[serde(rename = "f16")]
    F16,
    /// bfloat16, 2 bytes per value.
    #[serde(rename = "bf16")]
    BF16,
    /// GGML Q8_0: 34 bytes per 32 values.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// GGML Q4_0: 18 bytes per 32 values.
    #[serde(rename = "q4_0")]
    Q4_0,
}

impl KvCacheType {
    /// Every cache type, in the order the CLI lists them.
    pub const ALL: [KvCacheType; 5] = [
        KvCacheType::F32,
        KvCacheType::F16,
        KvCacheType::BF16,
        KvCacheType::Q8_0,
        KvCacheType::Q4_0,
    ];

    /// The GGML type whose bytes the cache holds.
    pub const fn ggml(self) -> GgmlType {
        match self {
            KvCacheType::F32 => GgmlType::F32,
            KvCacheType::F16 => GgmlType::F16,
            KvCacheType::BF16 => GgmlType::BF16,
            KvCacheType::Q8_0 => GgmlType::Q8_0,
            KvCacheType::Q4_0 => GgmlType::Q4_0,
        }
    }

    /// The graph element type of a cache input of this type.
    pub const fn dtype(self) -> DType {
        self.ggml().dtype()
    }

    /// The cache type of a graph element type, `None` for one a cache cannot hold.
    pub fn from_dtype(dtype: DType) -> Option<KvCacheType> {
        let ty = GgmlType::from_dtype(dtype)?;
        KvCacheType::ALL.into_iter().find(|t| t.ggml() == ty)
    }

    /// llama.cpp's name (`"q8_0"`).
    pub const fn name(self) -> &'static str {
        self.ggml().name()
    }

    /// Bytes of one cached row of `width` values; `None` when `width` is not whole
    /// blocks (q8_0 and q4_0 need a multiple of 32) or the size overflows.
    pub fn row_bytes(self, width: usize) -> Option<usize> {
        self.ggml().row_bytes(width as u64).ok()
    }
}

impl fmt::Display for KvCacheType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cache type name that is none of f32, f16, bf16, q8_0, q4_0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownKvCacheType(pub alloc::string::String);

impl fmt::Display for UnknownKvCacheType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown KV cache type `{}`: expected one of f32, f16, bf16, q8_0, q4_0",
            self.0
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for UnknownKvCacheType {}

impl FromStr for KvCacheType {
    type Err = UnknownKvCacheType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KvCacheType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownKvCacheType(s.into()))
    }
}

/// The element types of a cache's keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KvCacheTypes {
    /// What the keys are stored as.
    pub k: KvCacheType,
    /// What the values are stored as.
    pub v: KvCacheType,
}

impl KvCacheTypes {
    /// Keys and values in f32.
    pub const F32: KvCacheTypes = KvCacheTypes {
        k: KvCacheType::F32,
        v: KvCacheType::F32,
    };

    /// Bytes one cached token takes in one layer: a key row and a value row of their
    /// widths (`ModelConfig::kv_cache_widths`: `kv_heads · head_dim` each, or a value width
    /// of 0 for no value cache), `row_bytes(k) + row_bytes(v)`. An error when a quantized
    /// side's rows are not whole blocks.
    pub fn bytes_per_token_per_layer(self, (kw, vw): (usize, usize)) -> Result<usize, KvCacheWidthError> {
        let side = |ty: KvCacheType, side, width| ty.row_bytes(width).ok_or(KvCacheWidthError { side, ty, width });
        let (k, v) = (side(self.k, "key", kw)?, side(self.v, "value", vw)?);
        k.checked_add(v).ok_or(KvCacheWidthError {
            side: "key",
            ty: self.k,
            width: kw,
        })
    }
}

impl fmt::Display for KvCacheTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "keys {}, values {}", self.k, self.v)
    }
}

/// A cache row width a quantized cache type cannot store (rows are whole blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheWidthError {
    /// `"key"` or `"value"`.
    pub side: &'static str,
    /// The side's cache type.
    pub ty: KvCacheType,
    /// The row width, `kv_heads · head_dim`.
    pub width: usize,
}

impl fmt::Display for KvCacheWidthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {} {} cache stores rows of whole {}-value blocks, but this model's rows \
             (kv_heads × head_dim) hold {} values; use f32, f16 or bf16 for it",
            self.ty,
            self.side,
            self.ty.ggml().block_size(),
            self.width
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn names_are_llama_cpps_and_parse_back() {
        for t in KvCacheType::ALL {
            assert_eq!(t.name().parse::<KvCacheType>(), Ok(t));
            assert_eq!(KvCacheType::from_dtype(t.dtype()), Some(t));
        }
        let e = "q5_1".parse::<KvCacheType>().unwrap_err().to_string();
        assert!(e.contains("`q5_1`") && e.contains("q4_0"), "{e}");
        assert_eq!(KvCacheType::from_dtype(DType::I32), None);
        assert_eq!(KvCacheType::from_dtype(GgmlType::Q4_K.dtype()), None);
    }

    #[test]
    fn bytes_per_token_count_both_sides_in_their_types() {
        // Qwen2.5-0.5B: 2 kv heads × 64 = 128 values per row.
        let w = 128;
        let f32s = KvCacheTypes::F32.bytes_per_token_per_layer((w, w));
        assert_eq!(f32s, Ok(2 * 128 * 4));
        let mixed = KvCacheTypes {
            k: KvCacheType::Q8_0,
            v: KvCacheType::Q4_0,
        };
        assert_eq!(mixed.bytes_per_token_per_layer((w, w)), Ok(4 * 34 + 4 * 18));
        let bf16 = KvCacheTypes {
            k: KvCacheType::BF16,
            v: KvCacheType::F16,
        };
        assert_eq!(bf16.bytes_per_token_per_layer((w, w)), Ok(2 * 128 * 2));
    }

    #[test]
    fn quantized_rows_must_be_whole_blocks() {
        let t = KvCacheTypes {
            k: KvCacheType::F32,
            v: KvCacheType::Q8_0,
        };
        let e = t.bytes_per_token_per_layer((48, 48)).unwrap_err();
        assert_eq!((e.side, e.ty, e.width), ("value", KvCacheType::Q8_0, 48));
        assert!(e.to_string().contains("32-value blocks"), "{e}");
    }
}
