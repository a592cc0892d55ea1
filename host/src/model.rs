//! A model ready to run: its config, tokenizer and weights on a backend — loaded from a
//! Hugging Face directory, a GGUF file (F32/F16/BF16 weights widened to f32; Q8_0, Q4_0,
//! Q5_0, Q4_K and Q6_K projections kept quantized), an r1 checkpoint, or created from a config (`--init`)
//! with the byte-level tokenizer — and saved back as a checkpoint. A directory without
//! `tokenizer.json` loads too: it runs on token ids, and commands that need text say so.

use std::path::Path;

use r1_core::DType;
use r1_core::backend::Backend;
use r1_core::model::ModelConfig;

use crate::engine::Detokenizer;
use crate::io::gguf::{is_gguf_file, load_gguf_model};
use crate::io::{
    Checkpoint, IoError, OptimizerState, Tokenizer, TokenizerSpec, Weights, load_checkpoint, load_hf_model,
    save_checkpoint,
};
use crate::train::moments::Moment;
use crate::train::optim::AdamW;
use crate::weights::{ParamBuffer, ParamLayout, StoredTensor, WeightsError, init_weights, upload_weights};

/// A model on a backend.
pub struct Model<B: Backend> {
    pub config: ModelConfig,
    /// [`Tokenizer::Missing`] for a model without one; [`Model::text_tokenizer`] asks for
    /// a real one.
    pub tokenizer: Tokenizer,
    pub params: ParamBuffer<B>,
}

/// A model's parts read from disk, before any backend: what [`Model::load`] uploads and
/// `r1host export` writes out again.
pub struct HostModel {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    /// The f32 weights, in `config.param_specs()` order (without those in `stored`).
    pub weights: Weights,
    /// Weights kept in their stored type (a GGUF file's block-quantized projections).
    pub stored: Vec<StoredTensor>,
}

impl HostModel {
    /// Every weight as f32, in `config.param_specs()` order: the stored ones dequantized
    /// (with r1's reference dequantizer), for writing formats that hold f32 only.
    pub fn into_f32_weights(self) -> Result<Weights, ModelError> {
        Ok(self.widen(|_| true)?.weights)
    }

    /// The model as training takes it: weights stored as f32 (a GGUF file's F32 matrices,
    /// lent in place for inference) moved into the trainable f32 layout. Weights of other
    /// stored types stay as they are (frozen: a LoRA base, or refused for full training).
    pub fn trainable(self) -> Result<HostModel, ModelError> {
        self.widen(|s| s.desc.dtype == DType::F32)
    }

    /// The model with the stored weights `which` picks widened into the f32 weights.
    fn widen(self, which: impl Fn(&StoredTensor) -> bool) -> Result<HostModel, ModelError> {
        if !self.stored.iter().any(&which) {
            return Ok(self);
        }
        let mut by_name: std::collections::HashMap<String, crate::io::tensors::NamedTensor> =
            self.weights.tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut kept = Vec::new();
        for s in self.stored {
            if !which(&s) {
                kept.push(s);
                continue;
            }
            let data = crate::weights::widen_stored(&s.name, &s.desc, &s.bytes)
                .map_err(|e| ModelError::Invalid(e.to_string()))?;
            let dims = s.desc.shape.dims().to_vec();
            by_name.insert(
                s.name.clone(),
                crate::io::tensors::NamedTensor {
                    name: s.name,
                    dims,
                    data,
                },
            );
        }
        let mut tensors = Vec::with_capacity(by_name.len());
        for spec in self.config.param_specs() {
            if kept.iter().any(|s| s.name == spec.name) {
                continue;
            }
            tensors.push(by_name.remove(&spec.name).ok_or(WeightsError::Missing(spec.name))?);
        }
        Ok(HostModel {
            config: self.config,
            tokenizer: self.tokenizer,
            weights: Weights { tensors },
            stored: kept,
        })
    }
}

/// Reads a model directory (`config.json` + safetensors [+ `tokenizer.json`]), a GGUF
/// file (told by its magic bytes; its tokenizer and chat template come from its
/// metadata) or an r1 checkpoint file, whichever `path` is.
pub fn read_model(path: &Path) -> Result<HostModel, ModelError> {
    let name = path.display().to_string();
    if path.is_dir() {
        let hf = load_hf_model(path)?;
        let tokenizer = match Tokenizer::from_model_dir(path, &hf.config)? {
            Some(t) => t,
            None => Tokenizer::missing(&name, &hf.config),
        };
        tokenizer.check_fits(&hf.config)?;
        Ok(HostModel {
            config: hf.config,
            tokenizer,
            weights: hf.weights,
            stored: Vec::new(),
        })
    } else if is_gguf_file(path) {
        let gguf = load_gguf_model(path)?;
        let tokenizer = match gguf.tokenizer {
            Some(t) => Tokenizer::HuggingFace(Box::new(t)),
            None => Tokenizer::missing(&name, &gguf.config),
        };
        tokenizer.check_fits(&gguf.config)?;
        Ok(HostModel {
            config: gguf.config,
            tokenizer,
            weights: gguf.weights,
            stored: gguf.stored,
        })
    } else if path.exists() {
        let ckpt = load_checkpoint(path)?;
        let tokenizer = match &ckpt.tokenizer {
            TokenizerSpec::Missing => Tokenizer::missing(&name, &ckpt.config),
            spec => Tokenizer::from_spec(spec)?,
        };
        Ok(HostModel {
            config: ckpt.config,
            tokenizer,
            weights: ckpt.weights,
            stored: Vec::new(),
        })
    } else {
        Err(ModelError::Invalid(format!(
            "{name}: no such model directory, GGUF file or checkpoint file"
        )))
    }
}

/// Refuses a model whose f32 weights alone exceed this machine's memory, before
/// allocating them ("this model needs N GiB"), rather than aborting half-way.
pub fn check_fits_in_memory(config: &ModelConfig) -> Result<(), ModelError> {
    let Some(params) = config.checked_num_params() else {
        return Err(ModelError::Invalid("the model's parameter count overflows".into()));
    };
    let needed = (params as u64).saturating_mul(4);
    match total_memory_bytes() {
        Some(total) if needed > total => Err(ModelError::Invalid(format!(
            "this model needs {:.1} GiB for its {params} f32 weights alone; this machine has {:.1} GiB",
            gib(needed),
            gib(total)
        ))),
        _ => Ok(()),
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// `MemTotal` of `/proc/meminfo` (Linux); `None` elsewhere.
fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Errors of loading or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Backend(#[from] r1_core::BackendError),
    #[error("{0}")]
    Invalid(String),
}

impl Detokenizer for Tokenizer {
    fn decode(&self, tokens: &[u32]) -> String {
        // Lossless for valid UTF-8; a partial multi-byte character mid-generation shows as
        // U+FFFD until its last byte arrives.
        match Tokenizer::decode(self, tokens) {
            Ok(s) => s,
            Err(_) => match self {
                Tokenizer::ByteLevel(b) => {
                    String::from_utf8_lossy(&b.decode_bytes(tokens).unwrap_or_default()).into_owned()
                }
                Tokenizer::HuggingFace(_) => String::new(),
                // Ids only: show them as such.
                Tokenizer::Missing(_) => format!("{tokens:?}"),
            },
        }
    }

    fn eos_id(&self) -> Option<u32> {
        match self {
            Tokenizer::Missing(m) => m.eos_id,
            _ => Some(Tokenizer::eos_id(self)),
        }
    }
}

impl<B: Backend> Model<B> {
    /// Loads a model directory, a GGUF file or an r1 checkpoint (see [`read_model`]) onto
    /// `backend`.
    pub fn load(backend: &B, path: &Path) -> Result<Self, ModelError> {
        let host = read_model(path)?;
        Self::from_parts(backend, host.config, host.tokenizer, host.weights, host.stored)
    }

    /// [`Model::load`] for training: f32 weights a file lends in place are copied into the
    /// trainable layout ([`HostModel::trainable`]).
    pub fn load_trainable(backend: &B, path: &Path) -> Result<Self, ModelError> {
        let host = read_model(path)?.trainable()?;
        Self::from_parts(backend, host.config, host.tokenizer, host.weights, host.stored)
    }

    /// A fresh model of `config` with the byte-level tokenizer (transformers' initialisation).
    pub fn init(backend: &B, config: ModelConfig, seed: u64) -> Result<Self, ModelError> {
        config.validate().map_err(|e| ModelError::Invalid(e.to_string()))?;
        check_fits_in_memory(&config)?;
        let tokenizer = Tokenizer::byte_level();
        tokenizer.check_fits(&config)?;
        let weights = Weights::from_triples(init_weights(&config, seed));
        Self::from_weights(backend, config, tokenizer, weights)
    }

    pub fn from_weights(
        backend: &B,
        config: ModelConfig,
        tokenizer: Tokenizer,
        weights: Weights,
    ) -> Result<Self, ModelError> {
        Self::from_parts(backend, config, tokenizer, weights, Vec::new())
    }

    /// A model of f32 `weights` plus weights kept in their `stored` type (bytes uploaded
    /// as they are, one buffer each); the f32 layout leaves the stored ones out.
    pub fn from_parts(
        backend: &B,
        config: ModelConfig,
        tokenizer: Tokenizer,
        weights: Weights,
        stored: Vec<StoredTensor>,
    ) -> Result<Self, ModelError> {
        if let Some(t) = weights.iter().find(|t| t.data.iter().any(|v| !v.is_finite())) {
            return Err(ModelError::Invalid(format!(
                "weight `{}` holds a non-finite value (NaN or infinity)",
                t.name
            )));
        }
        let specs: Vec<_> = config
            .param_specs()
            .into_iter()
            .filter(|s| !stored.iter().any(|t| t.name == s.name))
            .collect();
        let mut params = upload_weights(
            backend,
            ParamLayout::new(&specs),
            weights.into_triples().into_iter().map(|(n, _, v)| (n, v)),
        )?;
        for t in &stored {
            params.add_stored(backend, t)?;
        }
        Ok(Model {
            config,
            tokenizer,
            params,
        })
    }

    /// The weights as named host tensors (f32 only: a model with weights kept in a
    /// stored type is refused); with a LoRA adapter, the base with the adapter merged in.
    pub fn weights(&self, backend: &B) -> Result<Weights, ModelError> {
        let Some(base) = &self.params.base else {
            self.params.check_trainable("downloading the weights as f32")?;
            return Ok(Weights::from_triples(self.params.download_all(backend)?));
        };
        // A quantized base (QLoRA) is widened: the merge is an f32 model.
        let mut weights = Weights::from_triples(base.params.download_widened(backend, &self.config)?);
        if let Some(adapter) = self.adapter(backend, None)? {
            crate::adapter::merge_adapter(&mut weights, &adapter)?;
        }
        Ok(weights)
    }

    /// Bytes the weights occupy on the backend (f32 buffer plus stored weights).
    pub fn resident_weight_bytes(&self) -> usize {
        self.params.resident_bytes()
    }

    /// Writes a checkpoint (atomically), with optimizer state and trainer state if given.
    pub fn save(
        &self,
        backend: &B,
        path: &Path,
        optimizer: Option<&AdamW<B>>,
        trainer_state: Vec<u8>,
    ) -> Result<(), ModelError> {
        self.params.check_trainable("saving an r1 checkpoint")?;
        if optimizer.is_some() && self.params.base.is_some() {
            return Err(ModelError::Invalid(
                "an r1 checkpoint holds a whole model: a LoRA adapter's optimizer state has no place in it".into(),
            ));
        }
        let optimizer = match optimizer {
            Some(o) => {
                let (m, v) = o.moments.download_all(backend)?;
                Some(OptimizerState {
                    step: o.step,
                    m: Weights::from_triples(m),
                    v: Weights::from_triples(v),
                })
            }
            None => None,
        };
        let ckpt = Checkpoint {
            config: self.config.clone(),
            tokenizer: self.tokenizer.spec(),
            weights: self.weights(backend)?,
            optimizer,
            trainer_state,
        };
        save_checkpoint(path, &ckpt)?;
        Ok(())
    }

    /// Encodes text, mapping tokenizer errors.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        Ok(self.tokenizer.encode(text)?)
    }

    /// The tokenizer, for a command that needs text; a model without one is an error
    /// naming the model ("model X has no tokenizer.json; this command needs text").
    pub fn text_tokenizer(&self) -> Result<&Tokenizer, ModelError> {
        Ok(self.tokenizer.require_text()?)
    }
}

/// Restores AdamW moments and step from a checkpoint's optimizer state.
pub fn restore_optimizer<B: Backend>(
    backend: &B,
    opt: &mut AdamW<B>,
    state: &OptimizerState,
) -> Result<(), ModelError> {
    for (which, src) in [(Moment::First, &state.m), (Moment::Second, &state.v)] {
        for t in src.iter() {
            opt.moments.upload(backend, &t.name, which, &t.data)?;
        }
    }
    opt.step = state.step;
    Ok(())
}
