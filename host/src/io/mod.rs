//! Model and data I/O: Hugging Face model directories (config.json + safetensors, FP8
//! block-scaled checkpoints dequantized on load), GGUF
//! files (llama.cpp's format),
//! tokenizers (byte-level and `tokenizer.json`), JSONL datasets, training checkpoints and
//! the export of a model as a Hugging Face directory.
//! Everything read from outside is validated and every failure is an [`IoError`] naming
//! the file and the tensor, field or line.

pub mod atomic;
pub mod byte_tokenizer;
pub mod checkpoint;
pub mod dataset;
pub mod error;
pub mod export;
pub mod fp8;
pub mod gguf;
pub mod hf;
pub mod hf_config;
pub mod peft;
pub mod safetensors_f32;
pub mod tensors;
pub mod tokenizer;

pub use byte_tokenizer::{BYTE_LEVEL_SPECIAL_TOKENS, ByteLevelTokenizer};
pub use checkpoint::{
    CHECKPOINT_MAGIC, CHECKPOINT_VERSION, Checkpoint, OptimizerState, decode_checkpoint, encode_checkpoint,
    load_checkpoint, load_checkpoint_bytes, save_checkpoint,
};
pub use dataset::{DatasetFields, DatasetRow, parse_jsonl, read_jsonl};
pub use error::{CheckpointError, IoError};
pub use export::{R1_CHAT_TEMPLATE, export_hf_dir};
pub use hf::{HfModel, load_hf_model, save_hf_model, weights_from_safetensors_bytes};
pub use hf_config::{hf_config_json, parse_hf_config, read_hf_config};
pub use peft::{PeftAdapter, peft_adapter_from_parts, peft_adapter_parts, read_peft_adapter, write_peft_adapter};
pub use safetensors_f32::{decode_safetensors, encode_safetensors, read_safetensors, write_safetensors};
pub use tensors::{NamedTensor, Weights};
pub use tokenizer::{HfTokenizer, MissingTokenizer, Tokenizer, TokenizerSpec};
