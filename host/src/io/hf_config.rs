//! Hugging Face `config.json` ↔ `ModelConfig`. Reading accepts both layouts transformers
//! writes (v4: top-level `rope_theta`, DeepSeek's `rope_scaling`; v5:
//! `rope_parameters`) and refuses settings that change the math r1 implements (RoPE
//! scaling other than DeepSeek-V3's YaRN, another activation, MLP biases, sliding-window
//! attention, DeepSeek-V2's routers) instead of silently computing something else.
//! DeepSeek-V3's top-level MLA/MoE keys are gathered into `ModelConfig::deepseek_v3` and
//! written back at the top level.

use std::path::Path;

use r1_core::model::{Architecture, ModelConfig};
use serde_json::{Map, Value};

use crate::io::error::{IoError, json_message};

/// Reads and validates `config.json`.
pub fn read_hf_config(path: &Path) -> Result<ModelConfig, IoError> {
    let text = std::fs::read(path).map_err(|e| IoError::file(path, e))?;
    parse_hf_config(&text, &path.display().to_string())
}

/// Parses and validates the bytes of a `config.json`; `file` names it in errors.
pub fn parse_hf_config(bytes: &[u8], file: &str) -> Result<ModelConfig, IoError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| IoError::json(file, &e))?;
    let Value::Object(mut obj) = value else {
        return Err(field_err(file, "(root)", "config.json must be a JSON object"));
    };
    normalize(&mut obj, file)?;
    let config = deserialize_config(obj, file)?;
    config.validate().map_err(|e| field_err(file, e.field, &e.detail))?;
    Ok(config)
}

/// The `config.json` text for `config`, loadable by `transformers` (v4 and v5 keys both).
pub fn hf_config_json(config: &ModelConfig) -> Result<String, IoError> {
    let arch = config.validate().map_err(|e| field_err("config", e.field, &e.detail))?;
    let mut v = match serde_json::to_value(config) {
        Ok(Value::Object(m)) => m,
        _ => return Err(field_err("config", "(root)", "does not serialize to a JSON object")),
    };
    // DeepSeek-V3's settings are top-level keys in HF's layout.
    let deepseek = match v.remove("deepseek_v3") {
        Some(Value::Object(ds)) => Some(ds),
        _ => None,
    };
    v.insert("architectures".into(), Value::from(vec![arch.hf_class()]));
    v.insert("model_type".into(), Value::from(arch.model_type()));
    v.insert("num_key_value_heads".into(), Value::from(config.kv_heads()));
    v.insert("head_dim".into(), Value::from(config.head_dim()));
    v.insert("hidden_act".into(), Value::from("silu"));
    // `dtype` is transformers v5's name, `torch_dtype` v4's.
    v.insert("dtype".into(), Value::from("float32"));
    v.insert("torch_dtype".into(), Value::from("float32"));
    v.insert("attention_dropout".into(), Value::from(0.0));
    v.insert("initializer_range".into(), Value::from(0.02));
    v.insert("use_cache".into(), Value::from(true));
    let theta = shortest_f64(config.rope_theta);
    v.insert("rms_norm_eps".into(), Value::from(shortest_f64(config.rms_norm_eps)));
    v.insert("rope_theta".into(), Value::from(theta));
    let mut rope = Map::new();
    rope.insert("rope_type".into(), Value::from("default"));
    rope.insert("rope_theta".into(), Value::from(theta));
    if let (Some(mut ds), Some(settings)) = (deepseek, &config.deepseek_v3) {
        if let Some(Value::Object(yarn)) = ds.remove("rope_scaling") {
            let mut scaling = Map::new();
            scaling.insert("type".into(), Value::from("yarn"));
            for (k, val) in yarn {
                if !val.is_null() {
                    scaling.insert(k, val);
                }
            }
            let mut params = scaling.clone();
            params.remove("type");
            params.insert("rope_type".into(), Value::from("yarn"));
            params.insert("rope_theta".into(), Value::from(theta));
            v.insert("rope_scaling".into(), Value::Object(scaling));
            rope = params;
        }
        v.extend(ds);
        // HF's `head_dim` for this model is the rotary width; `qk_head_dim` the full one.
        v.insert("head_dim".into(), Value::from(settings.qk_rope_head_dim));
        v.insert("qk_head_dim".into(), Value::from(settings.qk_head_dim()));
        v.insert("scoring_func".into(), Value::from("sigmoid"));
        v.insert("topk_method".into(), Value::from("noaux_tc"));
        v.insert("num_nextn_predict_layers".into(), Value::from(0));
    }
    v.insert("rope_parameters".into(), Value::Object(rope));
    if arch == Architecture::Qwen2 {
        v.insert("use_sliding_window".into(), Value::from(false));
        v.insert("sliding_window".into(), Value::Null);
        v.insert("max_window_layers".into(), Value::from(config.num_hidden_layers));
    } else {
        v.insert("mlp_bias".into(), Value::from(false));
        v.insert("pretraining_tp".into(), Value::from(1));
    }
    serde_json::to_string_pretty(&Value::Object(v))
        .map_err(|e| field_err("config", "(root)", &format!("does not serialize: {e}")))
}

/// The f64 whose shortest decimal form is the f32's (`1e-6`, not `9.99999997e-7`), so the
/// JSON reads the way the user wrote it and parses back to the same f32.
fn shortest_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

fn field_err(file: &str, field: &str, detail: &str) -> IoError {
    IoError::Field {
        file: file.to_string(),
        field: field.to_string(),
        detail: detail.to_string(),
    }
}

/// Brings the v5 layout to the field names `ModelConfig` reads and rejects settings r1
/// does not implement.
fn normalize(obj: &mut Map<String, Value>, file: &str) -> Result<(), IoError> {
    let deepseek = is_deepseek_v3(obj);
    let mut yarn = None;
    for key in ["rope_scaling", "rope_parameters"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(rope)) => {
                let kind = rope.get("rope_type").or_else(|| rope.get("type"));
                match kind {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) if s == "default" => {}
                    Some(Value::String(s)) if s == "yarn" && deepseek => yarn = Some(rope.clone()),
                    Some(other) => {
                        return Err(field_err(
                            file,
                            &format!("{key}.rope_type"),
                            &format!(
                                "{other} is not supported (r1 implements the default RoPE, and YaRN for DeepSeek-V3)"
                            ),
                        ));
                    }
                }
            }
            Some(other) => return Err(field_err(file, key, &format!("expected an object, found {other}"))),
        }
    }
    if deepseek {
        gather_deepseek_v3(obj, yarn, file)?;
    }
    if !obj.contains_key("rope_theta")
        && let Some(theta) = obj.get("rope_parameters").and_then(|r| r.get("rope_theta")).cloned()
    {
        obj.insert("rope_theta".into(), theta);
    }
    if let Some(act) = obj.get("hidden_act")
        && !matches!(act.as_str(), Some("silu") | Some("swish"))
    {
        return Err(field_err(
            file,
            "hidden_act",
            &format!("{act} is not supported (r1 implements SiLU)"),
        ));
    }
    for flag in ["mlp_bias", "use_sliding_window"] {
        if obj.get(flag) == Some(&Value::Bool(true)) {
            return Err(field_err(file, flag, "true is not supported by r1"));
        }
    }
    // Llama 3 style lists of EOS ids: `ModelConfig` keeps one, the first.
    if let Some(Value::Array(ids)) = obj.get("eos_token_id") {
        let first = ids.first().cloned().unwrap_or(Value::Null);
        obj.insert("eos_token_id".into(), first);
    }
    Ok(())
}

/// The `config.json` keys of `DeepseekV3Config` that `ModelConfig::deepseek_v3` holds.
const DEEPSEEK_V3_KEYS: [&str; 16] = [
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "n_routed_experts",
    "n_shared_experts",
    "moe_intermediate_size",
    "num_experts_per_tok",
    "n_group",
    "topk_group",
    "first_k_dense_replace",
    "norm_topk_prob",
    "routed_scaling_factor",
    "rope_interleave",
    "num_nextn_predict_layers",
];

fn is_deepseek_v3(obj: &Map<String, Value>) -> bool {
    match obj
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        Some(first) => first.as_str() == Some("DeepseekV3ForCausalLM"),
        None => obj.get("model_type").and_then(Value::as_str) == Some("deepseek_v3"),
    }
}

/// Moves DeepSeek-V3's top-level keys (and its YaRN settings) into the `deepseek_v3`
/// object `ModelConfig` reads, refusing the variants r1 does not compute (DeepSeek-V2's
/// softmax router or greedy top-k, MoE on a subset of layers).
fn gather_deepseek_v3(
    obj: &mut Map<String, Value>,
    yarn: Option<Map<String, Value>>,
    file: &str,
) -> Result<(), IoError> {
    let expect = |key: &str, allowed: &[&str]| -> Result<(), IoError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
            Some(other) => Err(field_err(
                file,
                key,
                &format!("{other} is not supported (r1 implements {})", allowed.join(" or ")),
            )),
        }
    };
    expect("scoring_func", &["sigmoid"])?;
    expect("topk_method", &["noaux_tc"])?;
    if let Some(freq) = obj.get("moe_layer_freq")
        && freq.as_u64() != Some(1)
    {
        return Err(field_err(
            file,
            "moe_layer_freq",
            &format!("{freq} is not supported (r1 implements 1)"),
        ));
    }
    // HF's `head_dim` here is the rotary width (`qk_rope_head_dim` says it), `qk_head_dim`
    // a derived value: `ModelConfig::head_dim` is the attention width, from the MLA sizes.
    obj.remove("head_dim");
    obj.remove("qk_head_dim");
    // r1's own serde form (a checkpoint's config) has them nested already.
    let mut ds = match obj.remove("deepseek_v3") {
        Some(Value::Object(nested)) => nested,
        _ => Map::new(),
    };
    for key in DEEPSEEK_V3_KEYS {
        if let Some(v) = obj.remove(key) {
            ds.insert(key.into(), v);
        }
    }
    if let Some(mut y) = yarn {
        y.remove("type");
        y.remove("rope_type");
        y.remove("rope_theta");
        ds.insert("rope_scaling".into(), Value::Object(y));
    }
    obj.insert("deepseek_v3".into(), Value::Object(ds));
    Ok(())
}

/// Deserializes the normalized object. serde does not say which field had the wrong type,
/// so on failure the object is re-read from pretty-printed text (one top-level key per
/// line) and the key on the line of the error is named.
fn deserialize_config(obj: Map<String, Value>, file: &str) -> Result<ModelConfig, IoError> {
    let pretty = serde_json::to_string_pretty(&Value::Object(obj))
        .map_err(|e| field_err(file, "(root)", &format!("does not serialize: {e}")))?;
    serde_json::from_str::<ModelConfig>(&pretty).map_err(|e| {
        let message = json_message(&e);
        let field = missing_field_name(&message)
            .or_else(|| key_at_line(&pretty, e.line()))
            .unwrap_or_else(|| "(root)".to_string());
        field_err(file, &field, &message)
    })
}

/// `x` from serde's "missing field `x`".
fn missing_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// The top-level key whose value spans `line` (1-based) of pretty-printed JSON.
fn key_at_line(pretty: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = pretty.lines().collect();
    let upto = line.min(lines.len());
    lines[..upto].iter().rev().find_map(|l| {
        let rest = l.strip_prefix("  \"")?;
        Some(rest[..rest.find("\":")?].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DeepSeek-V3 `config.json` as DeepSeek ships it (trimmed to a tiny size): top-level
    /// `rope_theta`, `rope_scaling` with `type: yarn`, its router keys, one MTP layer.
    const DEEPSEEK_SHIPPED: &str = r#"{
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
        "num_hidden_layers": 3, "num_nextn_predict_layers": 1, "num_attention_heads": 4,
        "num_key_value_heads": 4, "n_shared_experts": 1, "n_routed_experts": 8,
        "routed_scaling_factor": 2.5, "kv_lora_rank": 32, "q_lora_rank": 48,
        "qk_rope_head_dim": 8, "v_head_dim": 16, "qk_nope_head_dim": 16,
        "topk_method": "noaux_tc", "n_group": 4, "topk_group": 2, "num_experts_per_tok": 2,
        "moe_layer_freq": 1, "first_k_dense_replace": 1, "norm_topk_prob": true,
        "scoring_func": "sigmoid", "hidden_act": "silu", "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-06, "rope_theta": 10000, "vocab_size": 256,
        "tie_word_embeddings": false, "attention_bias": false,
        "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                         "mscale_all_dim": 1.0, "original_max_position_embeddings": 64, "type": "yarn"},
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                                "quant_method": "fp8", "weight_block_size": [128, 128]}
    }"#;

    #[test]
    fn deepseeks_shipped_config_reads_and_round_trips_through_the_v5_layout() {
        let c = parse_hf_config(DEEPSEEK_SHIPPED.as_bytes(), "config.json").expect("parses");
        assert_eq!(c.architecture(), Ok(Architecture::DeepseekV3));
        let ds = c.deepseek_v3.as_ref().expect("DeepSeek fields");
        assert_eq!((ds.kv_lora_rank, ds.q_lora_rank, ds.n_group), (32, Some(48), 4));
        assert_eq!(ds.num_nextn_predict_layers, 1);
        assert!(ds.rope_interleave, "transformers' default");
        let yarn = ds.rope_scaling.as_ref().expect("yarn");
        assert_eq!((yarn.factor, yarn.original_max_position_embeddings), (40.0, 64));
        assert_eq!(c.rope_theta, 10000.0);
        // Attention runs at max(16 + 8, 16) per head; the compressed cache row is 32 + 8.
        assert_eq!(c.head_dim(), 24);
        assert_eq!(c.kv_cache_widths(), (40, 0));
        let text = hf_config_json(&c).expect("writes");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["kv_lora_rank"], 32);
        assert_eq!(v["head_dim"], 8, "HF's head_dim is the rotary width");
        assert_eq!(v["rope_parameters"]["rope_type"], "yarn");
        assert_eq!(v["rope_scaling"]["type"], "yarn");
        assert_eq!(v["num_nextn_predict_layers"], 0, "r1 keeps no MTP weights");
        let back = parse_hf_config(text.as_bytes(), "written").expect("reads back");
        let mut want = c.clone();
        if let Some(ds) = want.deepseek_v3.as_mut() {
            ds.num_nextn_predict_layers = 0;
        }
        assert_eq!(back, want);
        // r1's own serde form (a checkpoint's config) reads back too.
        let own = serde_json::to_string(&c).expect("serde");
        assert_eq!(parse_hf_config(own.as_bytes(), "checkpoint").expect("own form"), c);
    }

    #[test]
    fn deepseek_variants_r1_does_not_compute_are_refused_by_field() {
        for (key, value) in [
            ("scoring_func", "\"softmax\""),
            ("topk_method", "\"greedy\""),
            ("moe_layer_freq", "2"),
            ("n_group", "3"),
        ] {
            let text = DEEPSEEK_SHIPPED.replacen("\"hidden_act\"", &format!("\"{key}\": {value}, \"hidden_act\""), 1);
            // The later key wins in serde_json: drop the original first.
            let mut obj: Map<String, Value> = serde_json::from_str(&text).expect("json");
            obj.insert(key.into(), serde_json::from_str(value).expect("value"));
            let text = serde_json::to_string(&obj).expect("json");
            let err = parse_hf_config(text.as_bytes(), "config.json").expect_err(key);
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
        // YaRN stays refused for the Llama family.
        let llama = r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 8,
            "rope_scaling": {"type": "yarn", "factor": 4}}"#;
        let err = parse_hf_config(llama.as_bytes(), "config.json").expect_err("yarn on llama");
        assert!(err.to_string().contains("rope_scaling"), "{err}");
    }

    #[test]
    fn key_at_line_finds_the_enclosing_top_level_key() {
        let pretty = "{\n  \"a\": 1,\n  \"b\": [\n    1,\n    2\n  ]\n}";
        assert_eq!(key_at_line(pretty, 2).as_deref(), Some("a"));
        assert_eq!(key_at_line(pretty, 5).as_deref(), Some("b"));
    }
}
