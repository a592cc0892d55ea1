//! The KV cache: per layer, one key and one value buffer of `[batch, capacity,
//! kv_heads·head_dim]` on the backend, of the cache's element type. Decode graphs append
//! to it in place (`KvWrite` at each sequence's `past` position) and attend over each
//! sequence's first `past + T` rows.

use r1_core::backend::{Backend, BackendError, TensorRef};
use r1_core::model::ModelConfig;
use r1_core::{DType, TensorDesc};

/// Key/value buffers for every layer.
pub struct KvCache<B: Backend> {
    /// Sequences (rows) the cache holds.
    pub batch: usize,
    /// Positions per sequence.
    pub capacity: usize,
    /// `kv_heads · head_dim`.
    pub width: usize,
    /// Element type of the cached keys and values.
    pub dtype: DType,
    /// `(keys, values)` per layer.
    pub layers: Vec<(B::Buffer, B::Buffer)>,
}

impl<B: Backend> KvCache<B> {
    /// An f32 cache of `batch` sequences × `capacity` positions for every layer of `cfg`.
    pub fn new(backend: &B, cfg: &ModelConfig, batch: usize, capacity: usize) -> Result<Self, BackendError> {
        let width = cfg.kv_heads() * cfg.head_dim();
        let dtype = DType::F32;
        let desc = TensorDesc::new(dtype, &[batch, capacity, width]);
        let bytes = desc
            .checked_bytes()
            .ok_or(BackendError::OutOfMemory { bytes: usize::MAX })?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| Ok((backend.alloc(bytes)?, backend.alloc(bytes)?)))
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(KvCache {
            batch,
            capacity,
            width,
            dtype,
            layers,
        })
    }

    /// Bytes one cached token of a `dtype` cache for `cfg` takes over all layers, keys
    /// and values (before any cache exists: the server sizes its rows with it).
    pub fn bytes_per_token_for(cfg: &ModelConfig, dtype: DType) -> usize {
        let width = cfg.kv_heads() * cfg.head_dim();
        per_token(cfg.num_hidden_layers, dtype, width)
    }

    /// Bytes one cached token takes over all layers, keys and values.
    pub fn bytes_per_token(&self) -> usize {
        per_token(self.layers.len(), self.dtype, self.width)
    }

    /// Whether this cache can serve `batch` rows of `capacity` positions.
    pub fn fits(&self, batch: usize, capacity: usize) -> bool {
        self.batch == batch && self.capacity >= capacity
    }

    /// Bytes of one row (sequence) of one layer's keys or values.
    pub fn row_bytes(&self) -> usize {
        TensorDesc::new(self.dtype, &[self.capacity, self.width]).bytes()
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
        let row_bytes = self.row_bytes();
        let desc = TensorDesc::new(self.dtype, &[len * self.width]);
        for (k, v) in &self.layers {
            for buf in [k, v] {
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

/// Keys and values of `layers` layers, `width` elements each, per token.
fn per_token(layers: usize, dtype: DType, width: usize) -> usize {
    2 * layers * TensorDesc::new(dtype, &[width]).bytes()
}
