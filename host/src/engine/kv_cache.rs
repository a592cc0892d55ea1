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

    /// Bytes one cached token takes over all layers, keys and values.
    pub fn bytes_per_token(&self) -> usize {
        2 * self.layers.len() * TensorDesc::new(self.dtype, &[self.width]).bytes()
    }

    /// Whether this cache can serve `batch` rows of `capacity` positions.
    pub fn fits(&self, batch: usize, capacity: usize) -> bool {
        self.batch == batch && self.capacity >= capacity
    }

    /// Copies the first `len` positions of row 0 into rows `1..batch` of every layer:
    /// the G completions of a prompt share its prefill.
    pub fn broadcast_row0(&self, backend: &B, len: usize) -> Result<(), BackendError> {
        let row_bytes = TensorDesc::new(self.dtype, &[self.capacity, self.width]).bytes();
        let desc = TensorDesc::new(self.dtype, &[len * self.width]);
        for (k, v) in &self.layers {
            for buf in [k, v] {
                let src = TensorRef {
                    buffer: buf,
                    offset: 0,
                    desc,
                };
                for r in 1..self.batch {
                    let dst = TensorRef {
                        buffer: buf,
                        offset: r * row_bytes,
                        desc,
                    };
                    backend.axpby(dst, 1.0, src, 0.0)?;
                }
            }
        }
        Ok(())
    }
}
