//! A model (config, tokenizer, f32 weights) as a GGUF file llama.cpp loads: the
//! `general.*` and `{arch}.*` keys its converter (`convert_hf_to_gguf.py`) writes for
//! `qwen2` and `llama`, the tokenizer (`write_tokenizer.rs`), and every tensor under its
//! llama.cpp name in the type `quant_mix.rs` picks — quantized with r1's reference
//! quantizer (`r1_core::quant`, bit-exact with ggml's `quantize_row_*_ref`), llama's q/k
//! rows permuted as the converter does.

use r1_core::model::{Architecture, ModelConfig};
use r1_core::quant::GgmlType as QuantType;

use crate::io::error::IoError;
use crate::io::gguf::GgufError;
use crate::io::gguf::model::{gguf_name, permute_rows};
use crate::io::gguf::quant_mix::{FileType, MixContext, tensor_type};
use crate::io::gguf::read::{MetaValue, gguf_err};
use crate::io::gguf::types::GgmlType;
use crate::io::gguf::write::{GgufWriter, ggml_dims};
use crate::io::gguf::write_tokenizer::{SpecialIds, tokenizer_metadata};
use crate::io::tensors::Weights;
use crate::io::tokenizer::Tokenizer;

/// ggml's `GGML_QNT_VERSION`, which the converter and `llama-quantize` write.
const QUANTIZATION_VERSION: u32 = 2;

/// One tensor as written: its llama.cpp name, type, and the type the mix wanted when its
/// rows made it fall back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenTensor {
    pub name: String,
    pub ty: QuantType,
    pub fell_back_from: Option<QuantType>,
}

fn model_err(detail: String) -> IoError {
    gguf_err("GGUF output", GgufError::Model(detail))
}

/// Builds the GGUF file of a model: `weights` must be exactly the weights of `config`
/// (f32, in `param_specs()` order); `name` becomes `general.name`. Tensors are written in
/// that order, as the converter writes them.
pub fn model_to_gguf(
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    weights: &Weights,
    file_type: FileType,
    name: &str,
) -> Result<(GgufWriter, Vec<WrittenTensor>), IoError> {
    weights.validate_for(config, "weights to quantize")?;
    let arch = config.architecture().map_err(|e| model_err(e.to_string()))?;
    if arch == Architecture::DeepseekV3 {
        return Err(model_err(
            "DeepseekV3ForCausalLM cannot be written as GGUF yet (llama.cpp's deepseek2 tensor layout is not mapped)"
                .into(),
        ));
    }
    let mut w = GgufWriter::new();
    for (key, value) in model_metadata(config, arch, file_type, name) {
        w.add_metadata(&key, value)?;
    }
    let ids = SpecialIds {
        bos: config.bos_token_id,
        eos: config.eos_token_id,
        pad: config.pad_token_id,
    };
    for (key, value) in tokenizer_metadata(tokenizer, config.vocab_size, ids)? {
        w.add_metadata(&key, value)?;
    }
    let ctx = MixContext {
        layers: config.num_hidden_layers,
        tied: weights.get("lm_head.weight").is_none(),
    };
    let mut written = Vec::with_capacity(weights.len());
    for t in weights.iter() {
        let file_name =
            gguf_name(&t.name).ok_or_else(|| model_err(format!("weight `{}` has no llama.cpp name", t.name)))?;
        let dims = ggml_dims(&t.dims);
        let choice = tensor_type(file_type, &file_name, &dims, ctx).map_err(model_err)?;
        let mut values = t.data.clone();
        if let Some(heads) = permuted_heads(config, arch, &t.name) {
            permute_rows(&mut values, &t.dims, heads, config.head_dim());
        }
        let bytes = r1_core::quant::quantize(choice.ty, &values)
            .map_err(|e| model_err(format!("tensor `{file_name}` as {}: {e}", choice.ty.name())))?;
        let file_ty = GgmlType::from_id(choice.ty.id())
            .ok_or_else(|| model_err(format!("ggml type id {} is not in the GGUF type table", choice.ty.id())))?;
        w.add_tensor(&file_name, &dims, file_ty, bytes)?;
        written.push(WrittenTensor {
            name: file_name,
            ty: choice.ty,
            fell_back_from: choice.fell_back_from,
        });
    }
    Ok((w, written))
}

/// The heads whose rows llama's converter permutes in this weight (q and k, weights and
/// biases); `None` for every other tensor and for Qwen2.
fn permuted_heads(config: &ModelConfig, arch: Architecture, hf: &str) -> Option<usize> {
    if arch != Architecture::Llama {
        None
    } else if hf.contains(".q_proj.") {
        Some(config.num_attention_heads)
    } else if hf.contains(".k_proj.") {
        Some(config.kv_heads())
    } else {
        None
    }
}

/// `general.*` and the architecture's keys, in the converter's order. Integers are u32
/// and floats f32, as the converter writes them.
fn model_metadata(
    config: &ModelConfig,
    arch: Architecture,
    file_type: FileType,
    name: &str,
) -> Vec<(String, MetaValue)> {
    let a = arch.model_type();
    let u = |n: usize| MetaValue::U32(u32::try_from(n).unwrap_or(u32::MAX));
    let mut meta = vec![
        ("general.architecture".to_string(), MetaValue::String(a.into())),
        ("general.type".to_string(), MetaValue::String("model".into())),
        ("general.name".to_string(), MetaValue::String(name.into())),
    ];
    let mut arch_key = |k: &str, v: MetaValue| meta.push((format!("{a}.{k}"), v));
    arch_key("block_count", u(config.num_hidden_layers));
    arch_key("context_length", u(config.max_position_embeddings));
    arch_key("embedding_length", u(config.hidden_size));
    arch_key("feed_forward_length", u(config.intermediate_size));
    arch_key("attention.head_count", u(config.num_attention_heads));
    arch_key("attention.head_count_kv", u(config.kv_heads()));
    arch_key("rope.freq_base", MetaValue::F32(config.rope_theta));
    arch_key("attention.layer_norm_rms_epsilon", MetaValue::F32(config.rms_norm_eps));
    if config.head_dim.is_some() {
        arch_key("attention.key_length", u(config.head_dim()));
        arch_key("attention.value_length", u(config.head_dim()));
    }
    if arch == Architecture::Llama {
        arch_key("vocab_size", u(config.vocab_size));
        arch_key("rope.dimension_count", u(config.head_dim()));
    }
    meta.push(("general.file_type".into(), MetaValue::U32(file_type.llama_ftype())));
    meta.push((
        "general.quantization_version".into(),
        MetaValue::U32(QUANTIZATION_VERSION),
    ));
    meta
}
