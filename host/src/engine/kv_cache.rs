//! The KV cache: per layer, one key and one value buffer of `[batch, capacity,
//! kv_heads·head_dim]` f32 on the backend. Decode graphs append to it in place
//! (`KvWrite`) and attend over its first `past + T` rows.

use r1_core::TensorDesc;
use r1_core::backend::{Backend, BackendError, TensorRef};
use r1_core::model::ModelConfig;

/// Key/value buffers for every layer.
pub struct KvCache<B: Backend> {
    pub batch: usize,
    pub capacity: usize,
    /// `kv_heads · head_dim`.
    pub width: usize,
    /// `(keys, values)` per layer.
    pub layers: Vec<(B::Buffer, B::Buffer)>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(backend: &B, cfg: &ModelConfig, batch: usize, capacity: usize) -> Result<Self, BackendError> {
        let width = cfg.kv_heads() * cfg.head_dim();
        let bytes = batch * capacity * width * 4;
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| Ok((backend.alloc(bytes)?, backend.alloc(bytes)?)))
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(KvCache {
            batch,
            capacity,
            width,
            layers,
        })
    }

    /// Whether this cache can serve `batch` rows of `capacity` positions.
    pub fn fits(&self, batch: usize, capacity: usize) -> bool {
        self.batch == batch && self.capacity >= capacity
    }

    /// Copies the first `len` positions of row 0 into rows `1..batch` of every layer:
    /// the G completions of a prompt share its prefill.
    pub fn broadcast_row0(&self, backend: &B, len: usize) -> Result<(), BackendError> {
        let row_bytes = self.capacity * self.width * 4;
        let desc = TensorDesc::f32(&[len * self.width]);
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
