//! Model architectures as graph builders: one module per family behind the small
//! [`Family`] trait (config → parameter specs with HF names → graph), candle's split:
//! models live apart from the tensor core, and a new family is a new module.

pub mod builder;
pub mod config;
pub mod family;
pub mod llama;
pub mod qwen2;

pub use builder::{BuildError, BuildOptions, CausalLm, INPUT_IDS, KvCacheSpec, LogitsFor, PAST, build_causal_lm};
pub use config::{Architecture, ConfigError, ModelConfig, ParamSpec};
pub use family::Family;
