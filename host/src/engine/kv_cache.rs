//! The KV cache: per layer, one key and one value buffer of `[batch, capacity, width]` on
//! the backend (`ModelConfig::kv_cache_widths`: `kv_heads·head_dim` each, or DeepSeek-V3's
//! compressed latent rows and no value buffer), each of its own element type (`KvCacheTypes`:
//! f32, f16, bf16, Q8_0, Q4_0 — llama.cpp's `--cache-type-k` / `--cache-type-v`). Decode
//! graphs append to it in place (`KvWrite` at each sequence's `past` position, quantizing
//! each new row to the cache's type) and attend over each sequence's first `past + T` rows.

use r1_core::backend::{Backend, BackendError, TensorRef};
use r1_core::model::{BuildError, KvCacheType, KvCacheTypes, ModelConfig};
use r1_core::{DType, TensorDesc};

use super::EngineError;

/// Key/value buffers for every layer.
pub struct KvCache<B: Backend> {
    /// Sequences (rows) the cache holds.
    pub batch: usize,
    /// Positions per sequence.
    pub capacity: usize,
    /// Values per cached row of keys and of values (`ModelConfig::kv_cache_widths`; a
    /// value width of 0: no value buffers).
    pub widths: (usize, usize),
    /// Element types of the cached keys and values.
    pub types: KvCacheTypes,
    /// `(keys, values)` per layer (no values when their width is 0).
    pub layers: Vec<(B::Buffer, Option<B::Buffer>)>,
}

/// One side of the cache: keys or values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Keys,
    Values,
}

impl<B: Backend> KvCache<B> {
    /// A cache of `batch` sequences × `capacity` positions for every layer of `cfg`, keys
    /// and values stored as `types` says. A quantized type needs rows of whole 32-value
    /// blocks.
    pub fn new(
        backend: &B,
        cfg: &ModelConfig,
        batch: usize,
        capacity: usize,
        types: KvCacheTypes,
    ) -> Result<Self, EngineError> {
        let widths = cfg.kv_cache_widths();
        types.bytes_per_token_per_layer(widths).map_err(BuildError::from)?;
        let bytes = |ty: KvCacheType, width: usize| {
            TensorDesc::new(ty.dtype(), &[batch, capacity, width])
                .checked_bytes()
                .ok_or(BackendError::OutOfMemory { bytes: usize::MAX })
        };
        let (kb, vb) = (bytes(types.k, widths.0)?, bytes(types.v, widths.1)?);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| {
                let values = if widths.1 > 0 { Some(backend.alloc(vb)?) } else { None };
                Ok((backend.alloc(kb)?, values))
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(KvCache {
            batch,
            capacity,
            widths,
            types,
            layers,
        })
    }

    /// Bytes one cached token of a cache of `types` for `cfg` takes over all layers, keys
    /// and values (before any cache exists: the server sizes its rows with it). An error
    /// when a quantized type cannot store the model's rows.
    pub fn bytes_per_token_for(cfg: &ModelConfig, types: KvCacheTypes) -> Result<usize, BuildError> {
        let per_layer = types.bytes_per_token_per_layer(cfg.kv_cache_widths())?;
        Ok(per_layer.saturating_mul(cfg.num_hidden_layers))
    }

    /// Bytes one cached token takes over all layers, keys and values.
    pub fn bytes_per_token(&self) -> usize {
        let side = |ty: KvCacheType, width: usize| TensorDesc::new(ty.dtype(), &[width]).bytes();
        let (kw, vw) = self.widths;
        self.layers
            .len()
            .saturating_mul(side(self.types.k, kw).saturating_add(side(self.types.v, vw)))
    }

    /// Whether this cache can serve `batch` rows of `capacity` positions.
    pub fn fits(&self, batch: usize, capacity: usize) -> bool {
        self.batch == batch && self.capacity >= capacity
    }

    fn dtype(&self, side: Side) -> DType {
        match side {
            Side::Keys => self.types.k.dtype(),
            Side::Values => self.types.v.dtype(),
        }
    }

    /// Values per cached position of one side.
    pub fn width(&self, side: Side) -> usize {
        match side {
            Side::Keys => self.widths.0,
            Side::Values => self.widths.1,
        }
    }

    /// Bytes of one row (sequence) of one layer's keys or values.
    pub fn row_bytes(&self, side: Side) -> usize {
        TensorDesc::new(self.dtype(side), &[self.capacity, self.width(side)]).bytes()
    }

    /// Copies the first `len` positions of row `src` into each of `dst` in every layer:
    /// the completions of a prompt share its prefill, and a row that leaves the batch is
    /// refilled by the last one.
    pub fn copy_rows(
        &self,
        backend: &B,
        src: usize,
        dst: impl Iterator<Item = usize> + Clone,
        len: usize,
    ) -> Result<(), BackendError> {
        for (k, v) in &self.layers {
            let sides = std::iter::once((k, Side::Keys)).chain(v.as_ref().map(|v| (v, Side::Values)));
            for (buf, side) in sides {
                let row_bytes = self.row_bytes(side);
                let desc = TensorDesc::new(self.dtype(side), &[len * self.width(side)]);
                if desc.dtype != DType::F32 {
                    copy_bytes(
                        backend,
                        buf,
                        src * row_bytes,
                        dst.clone().map(|r| r * row_bytes),
                        desc.bytes(),
                    )?;
                    continue;
                }
                // f32 rows go through `axpby` (1·x + 0·y) as they always have, so the
                // default cache computes what it did before typed caches existed.
                let from = TensorRef {
                    buffer: buf,
                    offset: src * row_bytes,
                    desc,
                };
                for r in dst.clone() {
                    let to = TensorRef {
                        buffer: buf,
                        offset: r * row_bytes,
                        desc,
                    };
                    backend.axpby(to, 1.0, from, 0.0)?;
                }
            }
        }
        Ok(())
    }
}

/// Copies `bytes` bytes at `src` of `buf` to each of `dst` through the host (the
/// `Backend` trait has no device-side copy of raw bytes; typed rows are copied once per
/// prompt's extra completion, not per token).
fn copy_bytes<B: Backend>(
    backend: &B,
    buf: &B::Buffer,
    src: usize,
    dst: impl Iterator<Item = usize>,
    bytes: usize,
) -> Result<(), BackendError> {
    let mut row = vec![0u8; bytes];
    backend.download(buf, src, &mut row)?;
    for at in dst {
        backend.upload(buf, at, &row)?;
    }
    Ok(())
}
