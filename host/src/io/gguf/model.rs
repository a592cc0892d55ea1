//! A `qwen2` or `llama` GGUF file (every R1-Distill model) as r1's model: the metadata
//! as a [`ModelConfig`], the tensors under their Hugging Face names, and the tokenizer of
//! the metadata.
//!
//! A weight matrix — a projection (q/k/v/o, gate/up/down), `output.weight` or the token
//! embedding (which a tied LM head reuses) — in F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K or
//! Q6_K stays in its stored type: a [`StoredTensor`] whose bytes are the file's own — lent
//! from the memory map to a host-memory backend, which computes on them in place (copied
//! only where llama's q/k rows are reordered, or for a device backend) — never copied
//! into (or widened to) r1's f32 layout; the backend's matmul and embedding lookup read
//! them. Training widens the F32 ones into the layout ([`HostModel::trainable`]).
//! Everything else (norms, biases) is read as f32: F16/BF16 widened exactly, a block
//! format dequantized with r1's reference dequantizer.
//!
//! [`HostModel::trainable`]: crate::model::HostModel::trainable
//!
//! Two conventions differ from Hugging Face's and are undone here:
//! - GGUF lists dims innermost first (`ne0` = columns), so an `[out, in]` weight is
//!   stored with dims `[in, out]`; the bytes are the same row-major values.
//! - llama.cpp's converter (`LlamaModel.permute` in `convert_hf_to_gguf.py`) reorders the
//!   rows of each head of `q_proj` and `k_proj` (and their biases) for its interleaved
//!   RoPE: within a head of `d` rows, row `2j + i` of the file is row `i·d/2 + j` of the
//!   Hugging Face weight (`i` ∈ {0, 1}, `j` < d/2). r1's RoPE rotates halves, as
//!   transformers does, so the rows are put back. Qwen2 files are not permuted.

use std::sync::Arc;

use memmap2::Mmap;
use r1_core::TensorDesc;
use r1_core::model::{Architecture, ModelConfig};
use r1_core::quant::GgmlType as QuantType;

use crate::io::error::IoError;
use crate::io::gguf::GgufError;
use crate::io::gguf::read::{GgufFile, GgufHeader, MetaValue, TensorInfo, gguf_err, parse_header, tensor_slice};
use crate::io::gguf::tokenizer::gguf_tokenizer;
use crate::io::gguf::types::GgmlType;
use crate::io::hf::WeightCollector;
use crate::io::tensors::{NamedTensor, Weights};
use crate::io::tokenizer::HfTokenizer;
use crate::weights::{MappedRange, StoredBytes, StoredTensor};

/// A model read from a GGUF file.
#[derive(Clone, Debug)]
pub struct GgufModel {
    pub config: ModelConfig,
    /// The f32 weights, in `config.param_specs()` order, without those in `stored`.
    pub weights: Weights,
    /// The weight matrices kept in their stored type, bytes as the file stores them
    /// (pointing into the map; llama's q/k rows un-permuted copies), in file order.
    pub stored: Vec<StoredTensor>,
    /// The tokenizer of the metadata (`None` when the file has no `tokenizer.ggml.model`).
    pub tokenizer: Option<HfTokenizer>,
}

/// Maps and reads a GGUF model file.
pub fn load_gguf_model(path: &std::path::Path) -> Result<GgufModel, IoError> {
    let file = GgufFile::open(path)?;
    model_from(file.bytes(), file.shared_map(), &file.header, &file.label)
}

/// Reads a GGUF model held in memory (the whole loading path minus the file system; the
/// fuzz target calls this).
pub fn gguf_model_from_bytes(bytes: &[u8], label: &str) -> Result<GgufModel, IoError> {
    let header = parse_header(bytes, label)?;
    model_from(bytes, None, &header, label)
}

/// The model in `bytes` (the whole file); with `map` (the same bytes, memory-mapped) a
/// stored tensor that needs no reordering points into the map instead of being copied.
fn model_from(bytes: &[u8], map: Option<&Arc<Mmap>>, header: &GgufHeader, file: &str) -> Result<GgufModel, IoError> {
    let config = gguf_config(header, file)?;
    let arch = config.architecture().map_err(|e| model_err(file, e.to_string()))?;
    // What is cheap to refuse is refused before any weight is converted: the tokenizer,
    // a tensor r1 has no name for, a type it does not read.
    let tokenizer = gguf_tokenizer(header, file, config.eos_token_id)?;
    if let Some(t) = &tokenizer
        && t.vocab_size() > config.vocab_size
    {
        return Err(model_err(
            file,
            format!(
                "the tokenizer has {} ids but the embedding only {} rows",
                t.vocab_size(),
                config.vocab_size
            ),
        ));
    }
    let mut names = Vec::with_capacity(header.tensors.len());
    for info in &header.tensors {
        let name = hf_name(&info.name).ok_or_else(|| {
            model_err(
                file,
                format!(
                    "tensor `{}` is not a weight of a {} model as r1 builds it",
                    info.name,
                    arch.model_type()
                ),
            )
        })?;
        check_type(info, file)?;
        names.push(name);
    }
    let mut tensors = Vec::with_capacity(header.tensors.len());
    let mut stored = Vec::new();
    for (info, name) in header.tensors.iter().zip(names) {
        let raw = tensor_slice(bytes, header, info, file)?;
        let dims = info.row_major_shape();
        let heads = if arch != Architecture::Llama {
            None
        } else if name.contains(".q_proj.") {
            Some(config.num_attention_heads)
        } else if name.contains(".k_proj.") {
            Some(config.kv_heads())
        } else {
            None
        };
        if keeps_stored(info, &name) {
            let Some(q) = stored_type(info.ggml_type) else {
                return Err(model_err(file, format!("tensor `{}`: not a type r1 runs", info.name)));
            };
            let desc = TensorDesc::new(q.dtype(), &dims);
            let bytes = match (heads, map) {
                // A row is whole blocks, so llama's permutation moves rows of bytes.
                (Some(heads), _) => {
                    let mut data = raw.to_vec();
                    let row_bytes = data.len() / dims[0].max(1);
                    unpermute_rows(&mut data, &[dims[0], row_bytes], heads, config.head_dim());
                    StoredBytes::Owned(data)
                }
                // The map's own bytes: `raw` is a slice of `bytes`, which is the map.
                (None, Some(map)) => {
                    let start = raw.as_ptr().addr() - bytes.as_ptr().addr();
                    StoredBytes::Mapped(Arc::new(MappedRange {
                        map: map.clone(),
                        range: start..start + raw.len(),
                    }))
                }
                (None, None) => StoredBytes::Owned(raw.to_vec()),
            };
            stored.push(StoredTensor { name, desc, bytes });
            continue;
        }
        let mut data = to_f32(info, raw, file)?;
        if let Some(heads) = heads {
            unpermute_rows(&mut data, &dims, heads, config.head_dim());
        }
        tensors.push(NamedTensor { name, dims, data });
    }
    let mut collector = WeightCollector::new(&config);
    collector.add_file(tensors, file)?;
    for s in &stored {
        collector.provided_elsewhere(&s.name, s.desc.shape.dims(), file)?;
    }
    let weights = collector.finish_without(file, stored.iter().map(|s| s.name.as_str()))?;
    Ok(GgufModel {
        config,
        weights,
        stored,
        tokenizer,
    })
}

fn model_err(file: &str, detail: String) -> IoError {
    gguf_err(file, GgufError::Model(detail))
}

fn meta_err(file: &str, key: &str, detail: String) -> IoError {
    gguf_err(
        file,
        GgufError::Metadata {
            key: key.to_string(),
            detail,
        },
    )
}

/// The architecture's config from `general.architecture` and the `{arch}.*` keys, the
/// vocabulary size from the token list (else the embedding's rows) and
/// `tie_word_embeddings` from the absence of `output.weight`.
pub fn gguf_config(header: &GgufHeader, file: &str) -> Result<ModelConfig, IoError> {
    let arch_key = "general.architecture";
    let arch_name = header
        .get_str(arch_key)
        .map_err(|d| meta_err(file, arch_key, d))?
        .ok_or_else(|| meta_err(file, arch_key, "missing".into()))?;
    let arch = match arch_name {
        "qwen2" => Architecture::Qwen2,
        "llama" => Architecture::Llama,
        other => {
            return Err(meta_err(
                file,
                arch_key,
                format!("`{other}` is not an architecture r1 builds (it builds qwen2 and llama)"),
            ));
        }
    };
    let key = |k: &str| format!("{arch_name}.{k}");
    let uint = |k: &str| -> Result<Option<usize>, IoError> {
        let full = key(k);
        match header.get(&full) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| meta_err(file, &full, format!("expected a non-negative integer, found {v:?}"))),
        }
    };
    let required = |k: &str| uint(k)?.ok_or_else(|| meta_err(file, &key(k), "missing".into()));
    let float = |k: &str| -> Result<Option<f32>, IoError> {
        let full = key(k);
        match header.get(&full) {
            None => Ok(None),
            Some(v) => v
                .as_f32()
                .map(Some)
                .ok_or_else(|| meta_err(file, &full, format!("expected a float, found {v:?}"))),
        }
    };

    let hidden = required("embedding_length")?;
    let heads = required("attention.head_count")?;
    let kv_heads = uint("attention.head_count_kv")?;
    let key_length = uint("attention.key_length")?;
    if let (Some(k), Some(v)) = (key_length, uint("attention.value_length")?)
        && k != v
    {
        return Err(meta_err(
            file,
            &key("attention.value_length"),
            format!("{v} differs from attention.key_length {k} (r1 needs one head width)"),
        ));
    }
    let head_dim = key_length.filter(|&k| hidden.checked_div(heads) != Some(k));
    let effective_head_dim = key_length.unwrap_or(hidden.checked_div(heads).unwrap_or(0));
    if let Some(rot) = uint("rope.dimension_count")?
        && rot != effective_head_dim
    {
        return Err(meta_err(
            file,
            &key("rope.dimension_count"),
            format!("{rot} differs from the head width {effective_head_dim} (partial RoPE is not supported by r1)"),
        ));
    }
    let scaling = key("rope.scaling.type");
    match header.get(&scaling) {
        None => {}
        Some(MetaValue::String(s)) if s == "none" => {}
        Some(v) => {
            return Err(meta_err(
                file,
                &scaling,
                format!("{v:?} is not supported (r1 implements the default RoPE only)"),
            ));
        }
    }
    if header.tensor("rope_freqs.weight").is_some() {
        return Err(model_err(
            file,
            "tensor `rope_freqs.weight` (Llama 3 RoPE scaling) is not supported: r1 implements the default RoPE only"
                .into(),
        ));
    }
    let tokens = header
        .get("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_array)
        .map(|a| a.len());
    let embd = header.tensor("token_embd.weight");
    let vocab_size = match (tokens, embd) {
        (Some(n), _) => n,
        (None, Some(t)) if t.dims.len() == 2 => t.dims[1] as usize,
        _ => {
            return Err(meta_err(
                file,
                "tokenizer.ggml.tokens",
                "missing, and no 2-D token_embd.weight gives the vocabulary size".into(),
            ));
        }
    };
    let token_id = |k: &str| -> Result<Option<u32>, IoError> {
        match header.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| meta_err(file, k, format!("expected a token id, found {v:?}"))),
        }
    };
    let config = ModelConfig {
        architectures: vec![arch.hf_class().to_string()],
        model_type: Some(arch.model_type().to_string()),
        hidden_size: hidden,
        intermediate_size: required("feed_forward_length")?,
        num_hidden_layers: required("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rms_norm_eps: float("attention.layer_norm_rms_epsilon")?
            .ok_or_else(|| meta_err(file, &key("attention.layer_norm_rms_epsilon"), "missing".into()))?,
        rope_theta: float("rope.freq_base")?.unwrap_or(10000.0),
        vocab_size,
        tie_word_embeddings: header.tensor("output.weight").is_none(),
        max_position_embeddings: required("context_length")?,
        attention_bias: arch == Architecture::Llama && header.tensor("blk.0.attn_q.bias").is_some(),
        bos_token_id: token_id("tokenizer.ggml.bos_token_id")?,
        eos_token_id: token_id("tokenizer.ggml.eos_token_id")?,
        pad_token_id: token_id("tokenizer.ggml.padding_token_id")?,
        deepseek_v3: None,
    };
    config.validate().map_err(|e| {
        meta_err(
            file,
            &gguf_key_of(arch_name, e.field),
            format!("{} (as the config's `{}`)", e.detail, e.field),
        )
    })?;
    Ok(config)
}

/// The GGUF key a `config.json` field comes from, for messages.
fn gguf_key_of(arch: &str, field: &str) -> String {
    let k = match field {
        "hidden_size" => "embedding_length",
        "intermediate_size" => "feed_forward_length",
        "num_hidden_layers" => "block_count",
        "num_attention_heads" => "attention.head_count",
        "num_key_value_heads" => "attention.head_count_kv",
        "head_dim" => "attention.key_length",
        "rms_norm_eps" => "attention.layer_norm_rms_epsilon",
        "rope_theta" => "rope.freq_base",
        "max_position_embeddings" => "context_length",
        "vocab_size" => return "tokenizer.ggml.tokens".into(),
        other => return format!("{arch}.* ({other})"),
    };
    format!("{arch}.{k}")
}

/// The Hugging Face name of a llama.cpp tensor name.
pub fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) || (layer.len() > 1 && layer.starts_with('0')) {
        return None;
    }
    let (part, kind) = rest.rsplit_once('.')?;
    if !matches!(kind, "weight" | "bias") {
        return None;
    }
    let module = match (part, kind) {
        ("attn_norm", "weight") => "input_layernorm",
        ("ffn_norm", "weight") => "post_attention_layernorm",
        ("attn_q", _) => "self_attn.q_proj",
        ("attn_k", _) => "self_attn.k_proj",
        ("attn_v", _) => "self_attn.v_proj",
        ("attn_output", _) => "self_attn.o_proj",
        ("ffn_gate", "weight") => "mlp.gate_proj",
        ("ffn_up", "weight") => "mlp.up_proj",
        ("ffn_down", "weight") => "mlp.down_proj",
        _ => return None,
    };
    // Whether a bias belongs to the architecture is the weight collector's call (it knows
    // the config); the name maps either way.
    Some(format!("model.layers.{layer}.{module}.{kind}"))
}

/// The llama.cpp name of a Hugging Face weight name (the inverse of [`hf_name`]).
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let (layer, rest) = hf.strip_prefix("model.layers.")?.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let part = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    let name = format!("blk.{layer}.{part}.{kind}");
    // Only names that map back: a well-formed layer number and a weight or bias.
    (hf_name(&name).as_deref() == Some(hf)).then_some(name)
}

/// The block formats r1 runs: kept quantized as a weight matrix, dequantized elsewhere.
const RUN_QUANTIZED: [QuantType; 5] = [
    QuantType::Q8_0,
    QuantType::Q4_0,
    QuantType::Q5_0,
    QuantType::Q4_K,
    QuantType::Q6_K,
];

/// Core's quantizer type of a file type, when it is one of [`RUN_QUANTIZED`].
fn run_quantized(t: GgmlType) -> Option<QuantType> {
    QuantType::from_id(t.id).ok().filter(|q| RUN_QUANTIZED.contains(q))
}

/// The type a tensor stays in when [`keeps_stored`] says so: a block format of
/// [`RUN_QUANTIZED`], F16/BF16 (the backend's matmul and embedding read both), or F32
/// (computed on in place, lent from the file's map rather than copied into the f32
/// layout; training widens it into the layout, see [`HostModel::trainable`]).
///
/// [`HostModel::trainable`]: crate::model::HostModel::trainable
fn stored_type(t: GgmlType) -> Option<QuantType> {
    run_quantized(t).or(match t {
        GgmlType::F32 => Some(QuantType::F32),
        GgmlType::F16 => Some(QuantType::F16),
        GgmlType::BF16 => Some(QuantType::BF16),
        _ => None,
    })
}

/// Whether a tensor stays in its stored type (see [`stored_type`]): a 2-D projection
/// weight (one that feeds a matmul as `x · wᵀ`), the LM head, or the token embedding
/// (looked up row by row, and the LM head itself when tied).
fn keeps_stored(info: &TensorInfo, hf: &str) -> bool {
    stored_type(info.ggml_type).is_some()
        && info.dims.len() == 2
        && hf.ends_with(".weight")
        && (hf == "lm_head.weight" || hf == "model.embed_tokens.weight" || hf.contains("_proj."))
}

/// F32, F16, BF16 and the block formats of [`RUN_QUANTIZED`] are read; another block
/// format or plain type is an error naming the tensor and the type.
fn check_type(info: &TensorInfo, file: &str) -> Result<(), IoError> {
    let t = info.ggml_type;
    if [GgmlType::F32, GgmlType::F16, GgmlType::BF16].contains(&t) || run_quantized(t).is_some() {
        return Ok(());
    }
    let (tensor, ggml_type) = (info.name.clone(), t.name.to_string());
    Err(gguf_err(
        file,
        if t.is_block_quantized() {
            GgufError::Quantized { tensor, ggml_type }
        } else {
            GgufError::UnsupportedType { tensor, ggml_type }
        },
    ))
}

/// A tensor's values as f32: F32 as is, F16 and BF16 widened (exactly), a block format
/// dequantized as ggml does.
fn to_f32(info: &TensorInfo, raw: &[u8], file: &str) -> Result<Vec<f32>, IoError> {
    check_type(info, file)?;
    let t = info.ggml_type;
    if let Some(q) = run_quantized(t) {
        let n = usize::try_from(info.elems())
            .map_err(|_| model_err(file, format!("tensor `{}` is too large", info.name)))?;
        return r1_core::quant::dequantize(q, raw, n)
            .map_err(|e| model_err(file, format!("tensor `{}`: {e}", info.name)));
    }
    Ok(if t == GgmlType::F32 {
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else if t == GgmlType::F16 {
        raw.chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    } else {
        raw.chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    })
}

/// Undoes `LlamaModel.permute`: within each of the `heads` blocks of `head_dim` rows,
/// file row `2j + i` goes back to row `i·head_dim/2 + j`. A tensor whose rows are not
/// `heads × head_dim` is left alone (the shape check names it). Generic over the element:
/// a block-quantized tensor is permuted as `[rows, row bytes]` bytes.
pub fn unpermute_rows<T: Copy>(data: &mut [T], dims: &[usize], heads: usize, head_dim: usize) {
    move_head_rows(data, dims, heads, head_dim, true);
}

/// What `LlamaModel.permute` does (the inverse of [`unpermute_rows`]); for writing files
/// llama.cpp reads, and for tests.
pub fn permute_rows<T: Copy>(data: &mut [T], dims: &[usize], heads: usize, head_dim: usize) {
    move_head_rows(data, dims, heads, head_dim, false);
}

/// Within each head's `head_dim` rows, moves row `i·head_dim/2 + j` (HF order) to row
/// `2j + i` (llama.cpp's interleaved order), or back when `to_hf`.
fn move_head_rows<T: Copy>(data: &mut [T], dims: &[usize], heads: usize, head_dim: usize, to_hf: bool) {
    let Some(&rows) = dims.first() else { return };
    let cols: usize = dims[1..].iter().product();
    if heads == 0 || !head_dim.is_multiple_of(2) || rows != heads * head_dim || data.len() != rows * cols {
        return;
    }
    let half = head_dim / 2;
    let src = data.to_vec();
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..half {
                let interleaved = (h * head_dim + 2 * j + i) * cols;
                let split = (h * head_dim + i * half + j) * cols;
                let (from, to) = if to_hf {
                    (interleaved, split)
                } else {
                    (split, interleaved)
                };
                data[to..to + cols].copy_from_slice(&src[from..from + cols]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_is_the_converters_and_unpermute_undoes_it() {
        // 2 heads of 4 rows, 1 column: the converter's reshape(n_head, 2, d/2).swapaxes(1, 2)
        // turns rows [0 1 2 3 | 4 5 6 7] into [0 2 1 3 | 4 6 5 7].
        let mut v: Vec<f32> = (0..8).map(|x| x as f32).collect();
        permute_rows(&mut v, &[8], 2, 4);
        assert_eq!(v, [0., 2., 1., 3., 4., 6., 5., 7.]);
        unpermute_rows(&mut v, &[8], 2, 4);
        assert_eq!(v, [0., 1., 2., 3., 4., 5., 6., 7.]);
        // Rows move whole.
        let mut m: Vec<f32> = (0..24).map(|x| x as f32).collect();
        let orig = m.clone();
        permute_rows(&mut m, &[8, 3], 1, 8);
        assert_eq!(&m[3..6], &orig[12..15]);
        unpermute_rows(&mut m, &[8, 3], 1, 8);
        assert_eq!(m, orig);
    }

    #[test]
    fn tensor_names_map_to_hugging_face_names() {
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(
            hf_name("blk.11.attn_q.bias").as_deref(),
            Some("model.layers.11.self_attn.q_proj.bias")
        );
        assert_eq!(
            hf_name("blk.0.ffn_down.weight").as_deref(),
            Some("model.layers.0.mlp.down_proj.weight")
        );
        assert_eq!(hf_name("blk.01.ffn_down.weight"), None);
        assert_eq!(hf_name("blk.x.ffn_down.weight"), None);
        assert_eq!(hf_name("blk.0.ffn_norm.bias"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
        for name in [
            "token_embd.weight",
            "output.weight",
            "blk.11.attn_q.bias",
            "blk.3.ffn_norm.weight",
        ] {
            assert_eq!(hf_name(name).and_then(|h| gguf_name(&h)).as_deref(), Some(name));
        }
        assert_eq!(gguf_name("model.layers.x.mlp.up_proj.weight"), None);
    }
}
