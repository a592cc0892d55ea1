//! Training checkpoints: model config, tokenizer, weights, optimizer moments and the
//! trainer's own state in one file, written atomically and checked on load so a torn or
//! foreign file is named as such instead of resuming from garbage.
//!
//! Layout (all integers little-endian):
//!
//! | bytes  | content                                              |
//! |--------|------------------------------------------------------|
//! | 0..6   | magic `R1CKPT`                                       |
//! | 6..8   | format version (u16), [`CHECKPOINT_VERSION`]         |
//! | 8..16  | payload length in bytes (u64)                        |
//! | 16..48 | sha256 of the payload                                |
//! | 48..   | payload: postcard encoding of the wire struct below  |
//!
//! Tensor values are one postcard byte string each (raw little-endian f32), so encoding
//! costs a copy, not a varint per value. The model config is stored as JSON text:
//! `ModelConfig` may gain fields (with defaults) without making old checkpoints
//! unreadable.

use std::io::Write;
use std::path::Path;

use r1_core::model::ModelConfig;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::io::atomic::write_atomically;
use crate::io::error::{CheckpointError, IoError};
use crate::io::hf_config::parse_hf_config;
use crate::io::tensors::{NamedTensor, Weights, check_tensor_len, f32_from_le_bytes};
use crate::io::tokenizer::TokenizerSpec;

pub const CHECKPOINT_MAGIC: [u8; 6] = *b"R1CKPT";
pub const CHECKPOINT_VERSION: u16 = 1;
const HEADER_LEN: usize = 48;

/// Everything needed to resume training or serve the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub config: ModelConfig,
    pub tokenizer: TokenizerSpec,
    /// Exactly the weights of `config`, in `param_specs()` order.
    pub weights: Weights,
    pub optimizer: Option<OptimizerState>,
    /// The trainer's own state (step, RNG, data order…), opaque here.
    pub trainer_state: Vec<u8>,
}

/// AdamW's state: the step count and the first/second moments, one tensor per weight
/// (a subset of the weights is allowed, e.g. when some are frozen).
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    pub step: u64,
    pub m: Weights,
    pub v: Weights,
}

/// Writes `ckpt` to `path` (temporary file in the same directory, fsync, rename).
pub fn save_checkpoint(path: &Path, ckpt: &Checkpoint) -> Result<(), IoError> {
    let payload = encode_payload(ckpt)?;
    let header = header_for(&payload);
    write_atomically(path, |w| {
        w.write_all(&header)?;
        w.write_all(&payload)
    })
}

/// Reads and checks a checkpoint file.
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint, IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::file(path, e))?;
    decode_checkpoint(&bytes, &path.display().to_string())
}

/// The bytes of a checkpoint file.
pub fn encode_checkpoint(ckpt: &Checkpoint) -> Result<Vec<u8>, IoError> {
    Ok(checkpoint_frame(&encode_payload(ckpt)?))
}

/// Decodes checkpoint bytes; `file` names them in errors.
pub fn decode_checkpoint(bytes: &[u8], file: &str) -> Result<Checkpoint, IoError> {
    let fail = |kind| IoError::Checkpoint {
        file: file.to_string(),
        kind,
    };
    let payload = check_frame(bytes).map_err(fail)?;
    let wire: PayloadIn<'_> =
        postcard::from_bytes(payload).map_err(|e| fail(CheckpointError::Decode(e.to_string())))?;
    wire.into_checkpoint(file)
}

/// [`decode_checkpoint`] for in-memory bytes (the fuzz target's entry point).
pub fn load_checkpoint_bytes(bytes: &[u8]) -> Result<Checkpoint, IoError> {
    decode_checkpoint(bytes, "<bytes>")
}

/// A payload wrapped in a valid header (magic, version, length, sha256): lets tools and
/// the fuzz target reach the payload decoder behind the checksum.
pub fn checkpoint_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header_for(payload));
    out.extend_from_slice(payload);
    out
}

fn header_for(payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..6].copy_from_slice(&CHECKPOINT_MAGIC);
    h[6..8].copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[16..48].copy_from_slice(&Sha256::digest(payload));
    h
}

/// Checks magic, version, length and checksum; returns the payload.
fn check_frame(bytes: &[u8]) -> Result<&[u8], CheckpointError> {
    let found = bytes.len() as u64;
    let magic_len = bytes.len().min(CHECKPOINT_MAGIC.len());
    if bytes[..magic_len] != CHECKPOINT_MAGIC[..magic_len] {
        return Err(CheckpointError::Foreign);
    }
    if bytes.len() < 8 {
        return Err(CheckpointError::Truncated {
            expected: HEADER_LEN as u64,
            found,
        });
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    if version != CHECKPOINT_VERSION {
        return Err(CheckpointError::Version {
            found: version,
            supported: CHECKPOINT_VERSION,
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(CheckpointError::Truncated {
            expected: HEADER_LEN as u64,
            found,
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[8..16]);
    let expected = u64::from_le_bytes(len).saturating_add(HEADER_LEN as u64);
    if found < expected {
        return Err(CheckpointError::Truncated { expected, found });
    }
    if found > expected {
        return Err(CheckpointError::TrailingBytes {
            extra: found - expected,
        });
    }
    let payload = &bytes[HEADER_LEN..];
    if Sha256::digest(payload).as_slice() != &bytes[16..48] {
        return Err(CheckpointError::Checksum);
    }
    Ok(payload)
}

fn encode_payload(ckpt: &Checkpoint) -> Result<Vec<u8>, IoError> {
    let label = "checkpoint to save";
    ckpt.config.validate().map_err(|e| IoError::Field {
        file: label.into(),
        field: e.field.into(),
        detail: e.detail.clone(),
    })?;
    // The config's own serde form (not `hf_config_json`), so it reads back identical.
    let config_json = serde_json::to_string(&ckpt.config).map_err(|e| IoError::Checkpoint {
        file: label.into(),
        kind: CheckpointError::Invalid(format!("config does not encode: {e}")),
    })?;
    ckpt.weights.validate_for(&ckpt.config, label)?;
    if let Some(opt) = &ckpt.optimizer {
        check_moments(&opt.m, &ckpt.weights, "optimizer m", label)?;
        check_moments(&opt.v, &ckpt.weights, "optimizer v", label)?;
    }
    let wire = PayloadOut {
        config_json,
        tokenizer: &ckpt.tokenizer,
        tensors: tensors_out(&ckpt.weights),
        optimizer: ckpt.optimizer.as_ref().map(|o| OptimizerOut {
            step: o.step,
            m: tensors_out(&o.m),
            v: tensors_out(&o.v),
        }),
        trainer_state: Bytes(&ckpt.trainer_state),
    };
    let values = ckpt.weights.num_values()
        + ckpt
            .optimizer
            .as_ref()
            .map_or(0, |o| o.m.num_values() + o.v.num_values());
    let capacity = 4 * values + ckpt.trainer_state.len() + (1 << 16);
    postcard::to_extend(&wire, Vec::with_capacity(capacity)).map_err(|e| IoError::Checkpoint {
        file: label.into(),
        kind: CheckpointError::Invalid(format!("does not encode: {e}")),
    })
}

/// Each moment tensor must be one of the weights, with its shape.
fn check_moments(moments: &Weights, weights: &Weights, what: &str, file: &str) -> Result<(), IoError> {
    for t in moments.iter() {
        check_tensor_len(t, file)?;
        match weights.get(&t.name) {
            Some(w) if w.dims == t.dims => {}
            Some(w) => {
                return Err(IoError::Shape {
                    file: format!("{file} ({what})"),
                    name: t.name.clone(),
                    expected: w.dims.clone(),
                    found: t.dims.clone(),
                });
            }
            None => {
                return Err(IoError::Checkpoint {
                    file: file.to_string(),
                    kind: CheckpointError::Invalid(format!("{what} has tensor `{}` that is not a weight", t.name)),
                });
            }
        }
    }
    Ok(())
}

fn tensors_out(w: &Weights) -> Vec<TensorOut<'_>> {
    w.iter()
        .map(|t| TensorOut {
            name: &t.name,
            dims: t.dims.iter().map(|&d| d as u64).collect(),
            data: F32Bytes(&t.data),
        })
        .collect()
}

#[derive(Serialize)]
struct PayloadOut<'a> {
    config_json: String,
    tokenizer: &'a TokenizerSpec,
    tensors: Vec<TensorOut<'a>>,
    optimizer: Option<OptimizerOut<'a>>,
    trainer_state: Bytes<'a>,
}

#[derive(Serialize)]
struct OptimizerOut<'a> {
    step: u64,
    m: Vec<TensorOut<'a>>,
    v: Vec<TensorOut<'a>>,
}

#[derive(Serialize)]
struct TensorOut<'a> {
    name: &'a str,
    dims: Vec<u64>,
    data: F32Bytes<'a>,
}

/// f32 values as one byte string of little-endian floats.
struct F32Bytes<'a>(&'a [f32]);

impl Serialize for F32Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 4);
        for v in self.0 {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        s.serialize_bytes(&bytes)
    }
}

/// A byte string (serde would otherwise write `&[u8]` element by element).
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

#[derive(Deserialize)]
struct PayloadIn<'a> {
    #[serde(borrow)]
    config_json: &'a str,
    tokenizer: TokenizerSpec,
    #[serde(borrow)]
    tensors: Vec<TensorIn<'a>>,
    #[serde(borrow)]
    optimizer: Option<OptimizerIn<'a>>,
    #[serde(borrow)]
    trainer_state: &'a [u8],
}

#[derive(Deserialize)]
struct OptimizerIn<'a> {
    step: u64,
    #[serde(borrow)]
    m: Vec<TensorIn<'a>>,
    #[serde(borrow)]
    v: Vec<TensorIn<'a>>,
}

#[derive(Deserialize)]
struct TensorIn<'a> {
    #[serde(borrow)]
    name: &'a str,
    dims: Vec<u64>,
    #[serde(borrow)]
    data: &'a [u8],
}

impl PayloadIn<'_> {
    fn into_checkpoint(self, file: &str) -> Result<Checkpoint, IoError> {
        let config = parse_hf_config(self.config_json.as_bytes(), &format!("{file} (model config)"))?;
        let weights = tensors_in(self.tensors, file)?;
        weights.validate_for(&config, file)?;
        let optimizer = match self.optimizer {
            None => None,
            Some(o) => {
                let m = tensors_in(o.m, file)?;
                let v = tensors_in(o.v, file)?;
                check_moments(&m, &weights, "optimizer m", file)?;
                check_moments(&v, &weights, "optimizer v", file)?;
                Some(OptimizerState { step: o.step, m, v })
            }
        };
        Ok(Checkpoint {
            config,
            tokenizer: self.tokenizer,
            weights,
            optimizer,
            trainer_state: self.trainer_state.to_vec(),
        })
    }
}

fn tensors_in(wire: Vec<TensorIn<'_>>, file: &str) -> Result<Weights, IoError> {
    let invalid = |detail: String| IoError::Checkpoint {
        file: file.to_string(),
        kind: CheckpointError::Invalid(detail),
    };
    let mut tensors = Vec::with_capacity(wire.len());
    for t in wire {
        let dims = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| invalid(format!("tensor `{}`: dims {:?} overflow usize", t.name, t.dims)))?;
        let data = f32_from_le_bytes(t.data).ok_or_else(|| {
            invalid(format!(
                "tensor `{}`: {} data bytes is not whole f32 values",
                t.name,
                t.data.len()
            ))
        })?;
        let tensor = NamedTensor {
            name: t.name.to_string(),
            dims,
            data,
        };
        check_tensor_len(&tensor, file)?;
        tensors.push(tensor);
    }
    Ok(Weights { tensors })
}
