//! The seam between the model-independent core and one architecture's module: a family
//! says which weights a config has (under their Hugging Face names) and how they make a
//! graph. Adding a family is adding a module that implements [`Family`] and a variant
//! of [`Architecture`] that points to it.

use alloc::vec::Vec;

use crate::graph::Graph;
use crate::model::builder::{BuildError, BuildOptions, CausalLm, WeightTypes};
use crate::model::config::{Architecture, ModelConfig, ParamSpec};

/// One model architecture: config → parameter specs with HF names → graph.
pub trait Family: Sync {
    /// The architecture this module builds.
    fn architecture(&self) -> Architecture;

    /// Every weight with its HF name and shape, in a stable order (the order weights are
    /// laid out in memory and in checkpoints).
    fn param_specs(&self, cfg: &ModelConfig) -> Vec<ParamSpec>;

    /// Appends the forward graph to `g`, each weight stored as `types` says. `cfg` is
    /// validated and `opts` checked against it by the caller
    /// ([`crate::model::build_causal_lm_typed`]).
    fn build(
        &self,
        g: &mut Graph,
        cfg: &ModelConfig,
        opts: &BuildOptions,
        types: &WeightTypes,
    ) -> Result<CausalLm, BuildError>;
}

impl Architecture {
    /// The module that builds this architecture.
    pub fn family(self) -> &'static dyn Family {
        match self {
            Architecture::Llama => &crate::model::llama::Llama,
            Architecture::Qwen2 => &crate::model::qwen2::Qwen2,
            Architecture::DeepseekV3 => &crate::model::deepseek_v3::DeepseekV3,
        }
    }
}
