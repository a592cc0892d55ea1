//! `--cache-type-k` / `--cache-type-v`: what a command's KV cache stores keys and values
//! as, with llama.cpp's names (f32, f16, bf16, q8_0, q4_0; default f32). One argument
//! group shared by `generate`, `logprobs` and `serve`.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use r1_core::model::{KvCacheType, KvCacheTypes};

#[derive(Clone, Copy, Debug, clap::Args)]
pub struct CacheTypeArgs {
    /// What the KV cache stores keys as (llama.cpp's names; q8_0/q4_0 need kv_heads ×
    /// head_dim to be a multiple of 32).
    #[arg(long, value_name = "TYPE", default_value = "f32", value_parser = cache_type_parser())]
    pub cache_type_k: KvCacheType,
    /// What the KV cache stores values as.
    #[arg(long, value_name = "TYPE", default_value = "f32", value_parser = cache_type_parser())]
    pub cache_type_v: KvCacheType,
}

impl CacheTypeArgs {
    /// The keys' and values' types.
    pub fn types(&self) -> KvCacheTypes {
        KvCacheTypes {
            k: self.cache_type_k,
            v: self.cache_type_v,
        }
    }
}

/// Accepts exactly the cache types' names; clap lists them in its error for any other.
fn cache_type_parser() -> impl TypedValueParser<Value = KvCacheType> {
    PossibleValuesParser::new(KvCacheType::ALL.map(KvCacheType::name)).try_map(|s| s.parse::<KvCacheType>())
}
