//! `Qwen2ForCausalLM` (every DeepSeek-R1-Distill-Qwen model): the Llama decoder with
//! biases on the q/k/v projections and none on o_proj (HF `modeling_qwen2.py`).

use alloc::vec::Vec;

use crate::graph::Graph;
use crate::model::builder::{BuildError, BuildOptions, CausalLm, WeightTypes};
use crate::model::config::{Architecture, ModelConfig, ParamSpec};
use crate::model::family::Family;
use crate::model::llama::{Biases, build_decoder, decoder_param_specs};

/// The Qwen2 family.
pub struct Qwen2;

const QWEN2_BIASES: Biases = Biases { qkv: true, o: false };

impl Family for Qwen2 {
    fn architecture(&self) -> Architecture {
        Architecture::Qwen2
    }

    fn param_specs(&self, cfg: &ModelConfig) -> Vec<ParamSpec> {
        decoder_param_specs(cfg, QWEN2_BIASES)
    }

    fn build(
        &self,
        g: &mut Graph,
        cfg: &ModelConfig,
        opts: &BuildOptions,
        types: &WeightTypes,
    ) -> Result<CausalLm, BuildError> {
        build_decoder(g, cfg, opts, QWEN2_BIASES, types)
    }
}
