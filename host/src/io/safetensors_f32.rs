//! safetensors files ↔ f32 tensors. Reading validates the header with the `safetensors`
//! crate (lengths, offsets, shape × dtype = bytes) and widens BF16 and F16 to f32 (F8_E4M3
//! codes are kept as bytes for the model-directory loader, which scales them: `fp8.rs`);
//! writing stores f32 (or bf16, rounded to nearest even as torch rounds) with the
//! `{"format": "pt"}` metadata `transformers` requires.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};

use crate::io::atomic::write_bytes_atomically;
use crate::io::error::IoError;
use crate::io::fp8::{DecodedTensor, E4m3Tensor};
use crate::io::tensors::{NamedTensor, check_tensor_len, check_value_count, f32_from_le_bytes, f32_to_le_bytes};

/// Every tensor of a safetensors file, widened to f32, in file (offset) order. An F8_E4M3
/// tensor is refused by name: FP8 weights are read only with their block scales, by
/// [`crate::io::load_hf_model`] for a model directory with an fp8 `quantization_config`.
pub fn decode_safetensors(bytes: &[u8], file: &str) -> Result<Vec<NamedTensor>, IoError> {
    decode_safetensors_with_fp8(bytes, file)?
        .into_iter()
        .map(|t| match t {
            DecodedTensor::Float { tensor, .. } => Ok(tensor),
            DecodedTensor::E4m3(q) => Err(IoError::Fp8 {
                file: file.to_string(),
                name: q.name,
                detail: "is F8_E4M3 (FP8), which r1 reads only as a block-scaled weight with its \
                         `…_scale_inv`, in a model directory whose config.json has an fp8 quantization_config"
                    .into(),
            }),
        })
        .collect()
}

/// Every tensor of a safetensors file in file (offset) order: floats widened to f32,
/// F8_E4M3 kept as codes for [`crate::io::fp8`] to scale.
pub(crate) fn decode_safetensors_with_fp8(bytes: &[u8], file: &str) -> Result<Vec<DecodedTensor>, IoError> {
    // `read_metadata` checks the header length, the JSON, that offsets are contiguous and
    // cover the data exactly, and that each tensor's byte length fits its shape and dtype.
    let (n, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| header_error(bytes, file, e))?;
    let data_section = bytes.get(8 + n..).unwrap_or_default();
    let mut out = Vec::with_capacity(metadata.tensors().len());
    for name in metadata.offset_keys() {
        let Some(info) = metadata.info(&name) else { continue };
        let (start, end) = info.data_offsets;
        let Some(raw) = data_section.get(start..end) else {
            return Err(IoError::Safetensors {
                file: file.to_string(),
                detail: format!("tensor `{name}`: offsets {start}..{end} are outside the data section"),
            });
        };
        out.push(decode_tensor(name, info.dtype, &info.shape, raw, file)?);
    }
    Ok(out)
}

/// One tensor's bytes as f32 values (F32, BF16, F16) or E4M3 codes.
fn decode_tensor(
    name: String,
    dtype: Dtype,
    shape: &[usize],
    raw: &[u8],
    file: &str,
) -> Result<DecodedTensor, IoError> {
    let data = match dtype {
        Dtype::F8_E4M3 => {
            check_value_count(&name, shape, raw.len(), file)?;
            return Ok(DecodedTensor::E4m3(E4m3Tensor {
                name,
                dims: shape.to_vec(),
                codes: raw.to_vec(),
            }));
        }
        Dtype::F32 => f32_from_le_bytes(raw),
        Dtype::BF16 => even(raw).map(|r| {
            r.chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect()
        }),
        Dtype::F16 => even(raw).map(|r| {
            r.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect()
        }),
        other => {
            return Err(IoError::Dtype {
                file: file.to_string(),
                name,
                dtype: other.to_string(),
            });
        }
    };
    let Some(data) = data else {
        return Err(IoError::Safetensors {
            file: file.to_string(),
            detail: format!("tensor `{name}`: odd byte length"),
        });
    };
    let tensor = NamedTensor {
        name,
        dims: shape.to_vec(),
        data,
    };
    check_tensor_len(&tensor, file)?;
    Ok(DecodedTensor::Float { tensor, dtype })
}

/// Reads and decodes one safetensors file.
pub fn read_safetensors(path: &Path) -> Result<Vec<NamedTensor>, IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::file(path, e))?;
    decode_safetensors(&bytes, &path.display().to_string())
}

/// The element type tensors are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDtype {
    F32,
    /// bfloat16, rounded to nearest even (`half::bf16::from_f32`, as torch's `.bfloat16()`).
    BF16,
}

/// The bytes of a safetensors file holding `tensors` as F32.
pub fn encode_safetensors(tensors: &[NamedTensor]) -> Result<Vec<u8>, IoError> {
    encode_safetensors_as(tensors, StoredDtype::F32)
}

/// The bytes of a safetensors file holding `tensors` as `dtype`.
pub fn encode_safetensors_as(tensors: &[NamedTensor], dtype: StoredDtype) -> Result<Vec<u8>, IoError> {
    for t in tensors {
        check_tensor_len(t, "safetensors output")?;
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let views = tensors
        .iter()
        .map(|t| (t.name.as_str(), TensorView { tensor: t, dtype }));
    safetensors::serialize(views, Some(metadata)).map_err(|e| IoError::Safetensors {
        file: "safetensors output".into(),
        detail: e.to_string(),
    })
}

/// Writes `tensors` as an F32 safetensors file, atomically.
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor]) -> Result<(), IoError> {
    write_safetensors_as(path, tensors, StoredDtype::F32)
}

/// Writes `tensors` as a safetensors file of `dtype`, atomically.
pub fn write_safetensors_as(path: &Path, tensors: &[NamedTensor], dtype: StoredDtype) -> Result<(), IoError> {
    let bytes = encode_safetensors_as(tensors, dtype)?;
    write_bytes_atomically(path, &bytes)
}

fn even(raw: &[u8]) -> Option<&[u8]> {
    raw.len().is_multiple_of(2).then_some(raw)
}

/// The `safetensors` crate's messages, with the sizes spelled out for the two ways a
/// truncated or foreign file shows up.
fn header_error(bytes: &[u8], file: &str, e: SafeTensorError) -> IoError {
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
    let detail = match (&e, header_len) {
        (SafeTensorError::HeaderTooSmall, _) => {
            format!("{} bytes: too short for the 8-byte header length", bytes.len())
        }
        (SafeTensorError::InvalidHeaderLength, Some(n)) => {
            format!(
                "header length {n} runs past the end of the file ({} bytes)",
                bytes.len()
            )
        }
        (SafeTensorError::MetadataIncompleteBuffer, Some(n)) => format!(
            "the tensor offsets do not cover the {} data bytes after the {n}-byte header (truncated or padded file)",
            (bytes.len() as u64).saturating_sub(8 + n)
        ),
        _ => e.to_string(),
    };
    IoError::Safetensors {
        file: file.to_string(),
        detail,
    }
}

/// A tensor as the `safetensors` writer sees it: converted to `dtype` when written.
struct TensorView<'a> {
    tensor: &'a NamedTensor,
    dtype: StoredDtype,
}

impl View for TensorView<'_> {
    fn dtype(&self) -> Dtype {
        match self.dtype {
            StoredDtype::F32 => Dtype::F32,
            StoredDtype::BF16 => Dtype::BF16,
        }
    }

    fn shape(&self) -> &[usize] {
        &self.tensor.dims
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(match self.dtype {
            StoredDtype::F32 => f32_to_le_bytes(&self.tensor.data),
            StoredDtype::BF16 => self
                .tensor
                .data
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        })
    }

    fn data_len(&self) -> usize {
        let width = match self.dtype {
            StoredDtype::F32 => 4,
            StoredDtype::BF16 => 2,
        };
        self.tensor.data.len() * width
    }
}
