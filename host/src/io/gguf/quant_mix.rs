//! Which ggml type each tensor of a GGUF file gets for a file type (`--type q4_k_m`), as
//! llama.cpp's `llama-quantize` picks it: `tensor_allows_quantization`,
//! `llama_tensor_get_type_impl` and `tensor_type_fallback` of `src/llama-quant.cpp`,
//! restricted to the file types r1 writes and to dense `qwen2`/`llama` models (one expert,
//! no importance matrix, no `--pure`, no per-tensor overrides).
//!
//! One rule of llama.cpp is not followed, for want of the type in `core::quant`: a 70B
//! Llama's Q4_K `attn_v` (llama.cpp: Q5_K, `LLM_TYPE_70B`) stays Q4_K.

use r1_core::quant::GgmlType as QuantType;

/// A whole-file type, as `llama-quantize`'s `ftype` argument names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[allow(non_camel_case_types)]
pub enum FileType {
    /// Every tensor F32 (`LLAMA_FTYPE_ALL_F32`).
    #[value(name = "f32")]
    F32,
    /// 2-D weights F16, the rest F32 (`LLAMA_FTYPE_MOSTLY_F16`).
    #[value(name = "f16")]
    F16,
    /// 2-D weights BF16, the rest F32 (`LLAMA_FTYPE_MOSTLY_BF16`).
    #[value(name = "bf16")]
    Bf16,
    /// 2-D weights Q8_0 (`LLAMA_FTYPE_MOSTLY_Q8_0`).
    #[value(name = "q8_0")]
    Q8_0,
    /// 2-D weights Q4_0, the LM head Q6_K (`LLAMA_FTYPE_MOSTLY_Q4_0`).
    #[value(name = "q4_0")]
    Q4_0,
    /// Q4_K with Q6_K for the LM head and for half the `attn_v` and `ffn_down` weights
    /// (`LLAMA_FTYPE_MOSTLY_Q4_K_M`).
    #[value(name = "q4_k_m")]
    Q4_K_M,
}

impl FileType {
    /// `general.file_type`: llama.cpp's `enum llama_ftype` number.
    pub const fn llama_ftype(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q8_0 => 7,
            FileType::Q4_K_M => 15,
            FileType::Bf16 => 32,
        }
    }

    /// `llama_ftype_get_default_type`: the type of a quantizable tensor before the mix.
    pub const fn default_type(self) -> QuantType {
        match self {
            FileType::F32 => QuantType::F32,
            FileType::F16 => QuantType::F16,
            FileType::Bf16 => QuantType::BF16,
            FileType::Q8_0 => QuantType::Q8_0,
            FileType::Q4_0 => QuantType::Q4_0,
            FileType::Q4_K_M => QuantType::Q4_K,
        }
    }

    /// The name `llama-quantize` prints (`Q4_K_M`).
    pub const fn name(self) -> &'static str {
        match self {
            FileType::F32 => "F32",
            FileType::F16 => "F16",
            FileType::Bf16 => "BF16",
            FileType::Q8_0 => "Q8_0",
            FileType::Q4_0 => "Q4_0",
            FileType::Q4_K_M => "Q4_K_M",
        }
    }
}

/// What the model around a tensor contributes to its type.
#[derive(Clone, Copy, Debug)]
pub struct MixContext {
    /// Transformer blocks (`n_attention_wv` and `n_ffn_down` of llama.cpp: one `attn_v`
    /// and one `ffn_down` per block).
    pub layers: usize,
    /// No `output.weight`: the token embedding is also the LM head, and gets its type.
    pub tied: bool,
}

/// The type chosen for one tensor, and the type the mix wanted when the row length made
/// it fall back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorChoice {
    pub ty: QuantType,
    pub fell_back_from: Option<QuantType>,
}

/// llama.cpp's broad tensor categories (`tensor_get_category`), for the names a
/// `qwen2`/`llama` file has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    Output,
    AttnV,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    match name {
        "output.weight" => Category::Output,
        "token_embd.weight" => Category::TokenEmbd,
        _ if name.contains("attn_v.weight") => Category::AttnV,
        _ if name.contains("ffn_down") => Category::FfnDown,
        _ => Category::Other,
    }
}

/// `tensor_allows_quantization` for these architectures: 2-D tensors whose name ends in
/// `weight`, norms excepted. Everything else keeps its source type, which for r1's f32
/// weights (and the converter's 1-D tensors) is F32.
fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    dims.len() >= 2 && name.ends_with("weight") && !name.contains("_norm.weight")
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third
/// one between.
fn use_more_bits(layer: i64, layers: i64) -> bool {
    // C's truncating `%`, as Rust's: negative for the first eighth (already chosen).
    layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
}

/// The block index of `blk.N.…`.
fn layer_of(name: &str) -> Option<i64> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The type of tensor `name` (llama.cpp's name; `dims` innermost first, so `dims[0]` is
/// the row length) in a file of type `file_type`; an error names the tensor when no type
/// of llama.cpp's table fits its rows.
pub fn tensor_type(file_type: FileType, name: &str, dims: &[u64], ctx: MixContext) -> Result<TensorChoice, String> {
    let plain = |ty| {
        Ok(TensorChoice {
            ty,
            fell_back_from: None,
        })
    };
    if !allows_quantization(name, dims) {
        return plain(QuantType::F32);
    }
    let default = file_type.default_type();
    if !default.is_quantized() {
        return plain(default);
    }
    let cols = dims[0];
    let cat = category(name);
    let mut ty = default;
    if cat == Category::Output || (ctx.tied && cat == Category::TokenEmbd) {
        // The LM head (or the embedding that is also the head).
        if !cols.is_multiple_of(ty.block_size() as u64) {
            ty = QuantType::Q8_0;
        } else if ty != QuantType::Q8_0 {
            ty = QuantType::Q6_K;
        }
    } else if file_type == FileType::Q4_K_M && matches!(cat, Category::AttnV | Category::FfnDown) {
        // llama.cpp counts attn_v (ffn_down) tensors in its layer-sorted order; with one
        // per block the count is the block index.
        let layer = layer_of(name).ok_or_else(|| format!("tensor `{name}`: no block index in its name"))?;
        if use_more_bits(layer, ctx.layers as i64) {
            ty = QuantType::Q6_K;
        }
    }
    fallback(name, ty, cols)
}

/// The type llama.cpp falls back to when a row length is not whole blocks of `wanted`
/// (`tensor_type_fallback`), for the types this mix produces: Q4_K → Q5_0, Q6_K → Q8_0,
/// and F16 when even that block of 32 does not fit.
/// Q8_0 and Q4_0 have no fallback in llama.cpp either: a row that is not whole
/// 32-element blocks is an error.
pub fn fallback(name: &str, wanted: QuantType, cols: u64) -> Result<TensorChoice, String> {
    if cols.is_multiple_of(wanted.block_size() as u64) {
        return Ok(TensorChoice {
            ty: wanted,
            fell_back_from: None,
        });
    }
    let mut ty = match wanted {
        QuantType::Q4_K => Q4_K_FALLBACK,
        QuantType::Q6_K => QuantType::Q8_0,
        other => {
            return Err(format!(
                "tensor `{name}`: rows of {cols} are not whole {}-element blocks of {}, and llama.cpp defines no fallback for {}",
                other.block_size(),
                other.name(),
                other.name()
            ));
        }
    };
    if !cols.is_multiple_of(ty.block_size() as u64) {
        ty = QuantType::F16;
    }
    Ok(TensorChoice {
        ty,
        fell_back_from: Some(wanted),
    })
}

/// What a Q4_K tensor with rows that are not whole 256-element blocks becomes, as in
/// llama.cpp.
pub const Q4_K_FALLBACK: QuantType = QuantType::Q5_0;

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(layers: usize, tied: bool) -> MixContext {
        MixContext { layers, tied }
    }

    fn ty(ft: FileType, name: &str, dims: &[u64], c: MixContext) -> QuantType {
        tensor_type(ft, name, dims, c).expect("type").ty
    }

    #[test]
    fn use_more_bits_picks_llama_cpps_layers() {
        let picked: Vec<i64> = (0..24).filter(|&i| use_more_bits(i, 24)).collect();
        assert_eq!(picked, [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
        let picked: Vec<i64> = (0..2).filter(|&i| use_more_bits(i, 2)).collect();
        assert_eq!(picked, [1]);
    }

    #[test]
    fn q4_k_m_gives_the_head_and_half_of_attn_v_and_ffn_down_q6_k() {
        let c = ctx(24, false);
        let q = FileType::Q4_K_M;
        assert_eq!(ty(q, "output.weight", &[1024, 500], c), QuantType::Q6_K);
        assert_eq!(ty(q, "token_embd.weight", &[1024, 500], c), QuantType::Q4_K);
        assert_eq!(ty(q, "token_embd.weight", &[1024, 500], ctx(24, true)), QuantType::Q6_K);
        assert_eq!(ty(q, "blk.5.attn_v.weight", &[1024, 256], c), QuantType::Q6_K);
        assert_eq!(ty(q, "blk.6.attn_v.weight", &[1024, 256], c), QuantType::Q4_K);
        assert_eq!(ty(q, "blk.23.ffn_down.weight", &[2048, 1024], c), QuantType::Q6_K);
        assert_eq!(ty(q, "blk.12.ffn_down.weight", &[2048, 1024], c), QuantType::Q4_K);
        assert_eq!(ty(q, "blk.0.attn_q.weight", &[1024, 1024], c), QuantType::Q4_K);
        assert_eq!(ty(q, "blk.0.attn_q.bias", &[1024], c), QuantType::F32);
        assert_eq!(ty(q, "blk.0.attn_norm.weight", &[1024], c), QuantType::F32);
    }

    #[test]
    fn rows_that_are_not_whole_blocks_fall_back_as_llama_cpp_does() {
        let c = ctx(24, true);
        let q = FileType::Q4_K_M;
        // Qwen2.5-0.5B: 896 columns are not whole 256-blocks.
        let q_proj = tensor_type(q, "blk.3.attn_q.weight", &[896, 896], c).expect("type");
        assert_eq!(
            q_proj,
            TensorChoice {
                ty: Q4_K_FALLBACK,
                fell_back_from: Some(QuantType::Q4_K)
            }
        );
        assert_eq!(ty(q, "blk.0.attn_v.weight", &[896, 128], c), QuantType::Q8_0);
        // The tied head: Q8_0 straight away (no fallback counted), as llama.cpp.
        let embd = tensor_type(q, "token_embd.weight", &[896, 1000], c).expect("type");
        assert_eq!(embd.ty, QuantType::Q8_0);
        assert_eq!(embd.fell_back_from, None);
        // Not even 32-blocks: F16.
        assert_eq!(ty(q, "blk.1.attn_q.weight", &[24, 24], c), QuantType::F16);
        // Q8_0 has no fallback.
        assert!(tensor_type(FileType::Q8_0, "blk.1.attn_q.weight", &[24, 24], c).is_err());
        // Q4_0's head is Q6_K, or Q8_0 when its rows are not 256-blocks.
        assert_eq!(
            ty(FileType::Q4_0, "output.weight", &[512, 9], ctx(2, false)),
            QuantType::Q6_K
        );
        assert_eq!(
            ty(FileType::Q4_0, "output.weight", &[96, 9], ctx(2, false)),
            QuantType::Q8_0
        );
    }

    #[test]
    fn float_file_types_keep_one_dimensional_tensors_f32() {
        let c = ctx(2, false);
        assert_eq!(ty(FileType::Bf16, "blk.0.ffn_up.weight", &[24, 40], c), QuantType::BF16);
        assert_eq!(ty(FileType::F16, "token_embd.weight", &[24, 96], c), QuantType::F16);
        assert_eq!(ty(FileType::F16, "output_norm.weight", &[24], c), QuantType::F32);
        assert_eq!(ty(FileType::F32, "output.weight", &[24, 96], c), QuantType::F32);
    }

    /// Per-type tensor counts of a 24-layer Qwen2 (q/k/v biases) with `hidden` columns
    /// and an FFN of `ffn`, as `r1host quantize --type q4_k_m` writes it.
    fn q4_k_m_counts(hidden: u64, ffn: u64, tied: bool) -> Vec<(&'static str, usize)> {
        let (kv, vocab) = (128, 151_936);
        let mut tensors = vec![("token_embd.weight".to_string(), vec![hidden, vocab])];
        for i in 0..24 {
            let blk = |p: &str| format!("blk.{i}.{p}");
            for (name, dims) in [
                (blk("attn_norm.weight"), vec![hidden]),
                (blk("attn_q.weight"), vec![hidden, hidden]),
                (blk("attn_q.bias"), vec![hidden]),
                (blk("attn_k.weight"), vec![hidden, kv]),
                (blk("attn_k.bias"), vec![kv]),
                (blk("attn_v.weight"), vec![hidden, kv]),
                (blk("attn_v.bias"), vec![kv]),
                (blk("attn_output.weight"), vec![hidden, hidden]),
                (blk("ffn_norm.weight"), vec![hidden]),
                (blk("ffn_gate.weight"), vec![hidden, ffn]),
                (blk("ffn_up.weight"), vec![hidden, ffn]),
                (blk("ffn_down.weight"), vec![ffn, hidden]),
            ] {
                tensors.push((name, dims));
            }
        }
        tensors.push(("output_norm.weight".into(), vec![hidden]));
        if !tied {
            tensors.push(("output.weight".into(), vec![hidden, vocab]));
        }
        let mut counts = std::collections::BTreeMap::new();
        for (name, dims) in &tensors {
            let t = ty(FileType::Q4_K_M, name, dims, ctx(24, tied));
            *counts.entry(t.name()).or_insert(0) += 1;
        }
        counts.into_iter().collect()
    }

    #[test]
    fn a_24_layer_model_gets_llama_cpps_q4_k_m_counts() {
        // Rows of whole 256-blocks: 25 Q6_K (head, 12 attn_v, 12 ffn_down), the rest Q4_K.
        assert_eq!(
            q4_k_m_counts(1024, 2816, false),
            [("f32", 121), ("q4_K", 145), ("q6_K", 25)]
        );
        // Qwen2.5-0.5B's shapes (896 columns, FFN 4864, tied): only ffn_down has
        // 256-blocks; the rest falls back as llama.cpp's does, to 132 Q5_0 + 13 Q8_0.
        assert_eq!(
            q4_k_m_counts(896, 4864, true),
            [("f32", 121), ("q4_K", 12), ("q5_0", 132), ("q6_K", 12), ("q8_0", 13)]
        );
    }
}
