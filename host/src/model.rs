//! A model ready to run: its config, tokenizer and weights on a backend — loaded from a
//! Hugging Face directory, from an r1 checkpoint, or created from a config (`--init`)
//! with the byte-level tokenizer — and saved back as a checkpoint.

use std::path::Path;

use r1_core::backend::Backend;
use r1_core::model::ModelConfig;

use crate::engine::Detokenizer;
use crate::io::{
    Checkpoint, IoError, OptimizerState, Tokenizer, Weights, load_checkpoint, load_hf_model, save_checkpoint,
};
use crate::train::optim::AdamW;
use crate::weights::{ParamBuffer, ParamLayout, WeightsError, init_weights, upload_weights};

/// A model on a backend.
pub struct Model<B: Backend> {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub params: ParamBuffer<B>,
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
            },
        }
    }

    fn eos_id(&self) -> Option<u32> {
        Some(Tokenizer::eos_id(self))
    }
}

impl<B: Backend> Model<B> {
    /// Loads a model directory (`config.json` + safetensors [+ `tokenizer.json`]) or an r1
    /// checkpoint file, whichever `path` is.
    pub fn load(backend: &B, path: &Path) -> Result<Self, ModelError> {
        if path.is_dir() {
            let hf = load_hf_model(path)?;
            let tokenizer = Tokenizer::from_model_dir(path, &hf.config)?.unwrap_or_else(Tokenizer::byte_level);
            tokenizer.check_fits(&hf.config)?;
            Self::from_weights(backend, hf.config, tokenizer, hf.weights)
        } else {
            let ckpt = load_checkpoint(path)?;
            let tokenizer = Tokenizer::from_spec(&ckpt.tokenizer)?;
            Self::from_weights(backend, ckpt.config, tokenizer, ckpt.weights)
        }
    }

    /// A fresh model of `config` with the byte-level tokenizer (transformers' initialisation).
    pub fn init(backend: &B, config: ModelConfig, seed: u64) -> Result<Self, ModelError> {
        config.validate().map_err(|e| ModelError::Invalid(e.to_string()))?;
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
        let layout = ParamLayout::for_config(&config);
        let params = upload_weights(
            backend,
            layout,
            weights.into_triples().into_iter().map(|(n, _, v)| (n, v)),
        )?;
        Ok(Model {
            config,
            tokenizer,
            params,
        })
    }

    /// The weights as named host tensors.
    pub fn weights(&self, backend: &B) -> Result<Weights, ModelError> {
        Ok(Weights::from_triples(self.params.download_all(backend)?))
    }

    /// Writes a checkpoint (atomically), with optimizer state and trainer state if given.
    pub fn save(
        &self,
        backend: &B,
        path: &Path,
        optimizer: Option<&AdamW<B>>,
        trainer_state: Vec<u8>,
    ) -> Result<(), ModelError> {
        let optimizer = match optimizer {
            Some(o) => Some(OptimizerState {
                step: o.step,
                m: Weights::from_triples(o.m.download_all(backend)?),
                v: Weights::from_triples(o.v.download_all(backend)?),
            }),
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
}

/// Restores AdamW moments and step from a checkpoint's optimizer state.
pub fn restore_optimizer<B: Backend>(
    backend: &B,
    opt: &mut AdamW<B>,
    state: &OptimizerState,
) -> Result<(), ModelError> {
    for (dst, src) in [(&opt.m, &state.m), (&opt.v, &state.v)] {
        for t in src.iter() {
            dst.upload(backend, &t.name, &t.data)?;
        }
    }
    opt.step = state.step;
    Ok(())
}
