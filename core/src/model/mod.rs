//! Model architectures as graph builders: plain functions from a [`ModelConfig`] to a
//! graph (candle's split: models live apart from the tensor core).

pub mod builder;
pub mod config;

pub use builder::{BuildError, BuildOptions, CausalLm, KvCacheSpec, LogitsFor, build_causal_lm};
pub use config::{Architecture, ConfigError, ModelConfig, ParamSpec};
