//! Model architectures as graph builders: one module per family behind the small
//! [`Family`] trait (config → parameter specs with HF names → graph), candle's split:
//! models live apart from the tensor core, and a new family is a new module.

pub mod builder;
pub mod config;
pub mod deepseek_v3;
pub mod family;
pub mod kv_cache;
pub mod llama;
pub mod lora;
pub mod qwen2;

pub use builder::{
    BuildError, BuildOptions, CausalLm, DROPOUT_SEED, INPUT_IDS, KvCacheSpec, LAST_ROWS, LogitsFor, PAST, ParamTable,
    WeightTypes, build_causal_lm, build_causal_lm_typed, last_rows, linear,
};
pub use config::{Architecture, ConfigError, ModelConfig, ParamSpec};
pub use family::Family;
pub use kv_cache::{KvCacheType, KvCacheTypes, KvCacheWidthError, UnknownKvCacheType};
pub use lora::{LoraError, LoraModule, LoraSpec, LoraTargets};
