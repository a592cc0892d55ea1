//! Named f32 tensors on the host: what a model directory or a checkpoint holds once read,
//! and what the trainer hands back to be written.

use r1_core::model::ModelConfig;

use crate::io::error::IoError;

/// One tensor under its Hugging Face name, row-major f32.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

impl NamedTensor {
    /// Element count implied by `dims` (`None` on overflow).
    pub fn numel(&self) -> Option<usize> {
        element_count(&self.dims)
    }
}

/// A model's weights, in `ModelConfig::param_specs()` order once loaded or validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    pub tensors: Vec<NamedTensor>,
}

impl Weights {
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, NamedTensor> {
        self.tensors.iter()
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of values.
    pub fn num_values(&self) -> usize {
        self.tensors.iter().map(|t| t.data.len()).sum()
    }

    /// From the `(name, dims, values)` triples `crate::weights` uses.
    pub fn from_triples(triples: Vec<(String, Vec<usize>, Vec<f32>)>) -> Weights {
        Weights {
            tensors: triples
                .into_iter()
                .map(|(name, dims, data)| NamedTensor { name, dims, data })
                .collect(),
        }
    }

    /// Into `(name, dims, values)` triples, e.g. for `crate::weights::upload_weights`.
    pub fn into_triples(self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.tensors.into_iter().map(|t| (t.name, t.dims, t.data)).collect()
    }

    /// Checks that these are exactly the weights of `config`: the same names in
    /// `param_specs()` order, each with its shape and as many values as the shape holds.
    pub fn validate_for(&self, config: &ModelConfig, file: &str) -> Result<(), IoError> {
        let specs = config.param_specs();
        for (i, spec) in specs.iter().enumerate() {
            let Some(t) = self.tensors.get(i) else {
                return Err(IoError::MissingTensor {
                    name: spec.name.clone(),
                    location: file.to_string(),
                });
            };
            if t.name != spec.name {
                return Err(match self.get(&spec.name) {
                    None => IoError::MissingTensor {
                        name: spec.name.clone(),
                        location: file.to_string(),
                    },
                    Some(_) => IoError::Field {
                        file: file.to_string(),
                        field: t.name.clone(),
                        detail: format!(
                            "tensor #{i} should be `{}` (weights must follow param_specs order)",
                            spec.name
                        ),
                    },
                });
            }
            check_tensor_len(t, file)?;
            if t.dims != spec.dims {
                return Err(IoError::Shape {
                    file: file.to_string(),
                    name: t.name.clone(),
                    expected: spec.dims.clone(),
                    found: t.dims.clone(),
                });
            }
        }
        if let Some(extra) = self.tensors.get(specs.len()) {
            let arch = config.architecture().map(|a| a.hf_class()).unwrap_or("unknown");
            return Err(IoError::UnexpectedTensor {
                file: file.to_string(),
                name: extra.name.clone(),
                arch: arch.into(),
            });
        }
        Ok(())
    }
}

/// A tensor whose value count is not the product of its dims.
pub(crate) fn check_tensor_len(t: &NamedTensor, file: &str) -> Result<(), IoError> {
    check_value_count(&t.name, &t.dims, t.data.len(), file)
}

/// `count` values that are not the product of `dims` (tensor `name` of `file`).
pub(crate) fn check_value_count(name: &str, dims: &[usize], count: usize, file: &str) -> Result<(), IoError> {
    if element_count(dims) != Some(count) {
        return Err(IoError::Field {
            file: file.to_string(),
            field: name.to_string(),
            detail: format!("shape {dims:?} does not hold the {count} values given"),
        });
    }
    Ok(())
}

/// The product of `dims` (`None` on overflow).
fn element_count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Little-endian bytes of f32 values.
pub(crate) fn f32_to_le_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// f32 values from little-endian bytes; `None` unless the length is a multiple of 4.
pub(crate) fn f32_from_le_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}
