//! LoRA adapters in PEFT's format, so `peft` loads what r1 trains and r1 loads what `peft`
//! trains: a directory with `adapter_config.json` (PEFT's `LoraConfig` as JSON) and
//! `adapter_model.safetensors`, whose keys are the module paths under
//! `base_model.model.` (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`).
//!
//! r1 computes what PEFT's plain `LoraLayer` computes; a config asking for anything else
//! (DoRA, bias training, `fan_in_fan_out`, per-layer rank or alpha patterns, extra
//! modules to save, a subset of layers) is refused naming the field, never half-applied.

use std::path::{Path, PathBuf};

use r1_core::model::{LoraSpec, LoraTargets, ModelConfig};
use serde_json::{Map, Value, json};

use crate::io::atomic::write_bytes_atomically;
use crate::io::error::IoError;
use crate::io::safetensors_f32::{decode_safetensors, encode_safetensors};
use crate::io::tensors::NamedTensor;

/// The adapter's settings file.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// The adapter's weights file.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// What PEFT puts before a module path in the weights file.
const KEY_PREFIX: &str = "base_model.model.";

/// A LoRA adapter read from (or to be written as) a PEFT directory.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftAdapter {
    pub spec: LoraSpec,
    /// `base_model_name_or_path`: where the base model was, as the trainer recorded it.
    pub base_model: Option<String>,
    /// Every `lora_A`/`lora_B` weight under r1's names (the key without
    /// `base_model.model.`), f32.
    pub weights: Vec<NamedTensor>,
}

impl PeftAdapter {
    /// Checks the weights against what `spec` asks of a model of `config`: every adapter
    /// weight present once with its shape, nothing else.
    pub fn check_for(&self, config: &ModelConfig, file: &str) -> Result<(), IoError> {
        let specs = self.spec.adapter_specs(&config.param_specs());
        for s in &specs {
            let t = self
                .weights
                .iter()
                .find(|t| t.name == s.name)
                .ok_or_else(|| IoError::MissingTensor {
                    name: format!("{KEY_PREFIX}{}", s.name),
                    location: format!("{file} (r1 adapts every decoder layer's targeted modules)"),
                })?;
            if t.dims != s.dims {
                return Err(IoError::Shape {
                    file: file.into(),
                    name: t.name.clone(),
                    expected: s.dims.clone(),
                    found: t.dims.clone(),
                });
            }
        }
        if let Some(extra) = self.weights.iter().find(|t| !specs.iter().any(|s| s.name == t.name)) {
            return Err(IoError::Field {
                file: file.into(),
                field: format!("{KEY_PREFIX}{}", extra.name),
                detail: "is not a LoRA weight of this model's targeted modules".into(),
            });
        }
        Ok(())
    }
}

/// Reads a PEFT LoRA adapter directory.
pub fn read_peft_adapter(dir: &Path) -> Result<PeftAdapter, IoError> {
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let text = std::fs::read(&config_path).map_err(|e| IoError::file(&config_path, e))?;
    let file = config_path.display().to_string();
    let value: Value = serde_json::from_slice(&text).map_err(|e| IoError::json(&file, &e))?;
    let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
    let bytes = std::fs::read(&weights_path).map_err(|e| IoError::file(&weights_path, e))?;
    peft_adapter_from_parts(&value, &file, &bytes, &weights_path.display().to_string())
}

/// A PEFT adapter from its parsed `adapter_config.json` and the bytes of its
/// `adapter_model.safetensors` (`config_file` and `weights_file` name them in errors).
pub fn peft_adapter_from_parts(
    config: &Value,
    config_file: &str,
    bytes: &[u8],
    weights_file: &str,
) -> Result<PeftAdapter, IoError> {
    let (spec, base_model) = parse_adapter_config(config, config_file)?;
    let weights_file = weights_file.to_string();
    let mut weights = Vec::new();
    for mut t in decode_safetensors(bytes, &weights_file)? {
        let Some(name) = t.name.strip_prefix(KEY_PREFIX) else {
            return Err(IoError::Field {
                file: weights_file,
                field: t.name,
                detail: format!("a PEFT adapter's keys start with `{KEY_PREFIX}`"),
            });
        };
        t.name = name.to_string();
        weights.push(t);
    }
    Ok(PeftAdapter {
        spec,
        base_model,
        weights,
    })
}

/// The [`LoraSpec`] and base model path of an `adapter_config.json`.
pub fn parse_adapter_config(value: &Value, file: &str) -> Result<(LoraSpec, Option<String>), IoError> {
    let obj = value
        .as_object()
        .ok_or_else(|| field_error(file, "(root)", "is not a JSON object"))?;
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    match get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => {
            return Err(field_error(
                file,
                "peft_type",
                &format!("{other:?}: r1 reads LoRA adapters (`\"LORA\"`)"),
            ));
        }
    }
    refuse_unless(obj, file, "use_dora", &json!(false), "DoRA adapters are not supported")?;
    refuse_unless(obj, file, "bias", &json!("none"), "r1 trains no biases in an adapter")?;
    refuse_unless(obj, file, "lora_bias", &json!(false), "LoRA B biases are not supported")?;
    refuse_unless(
        obj,
        file,
        "fan_in_fan_out",
        &json!(false),
        "Conv1D-style layers are not supported",
    )?;
    for key in ["rank_pattern", "alpha_pattern"] {
        if get(key).is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
            return Err(field_error(file, key, "per-module ranks or alphas are not supported"));
        }
    }
    for key in [
        "modules_to_save",
        "layers_to_transform",
        "layer_replication",
        "trainable_token_indices",
    ] {
        if get(key).is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
            return Err(field_error(
                file,
                key,
                "is not supported (r1 adapts every decoder layer)",
            ));
        }
    }
    let rank = get("r")
        .and_then(Value::as_u64)
        .ok_or_else(|| field_error(file, "r", "must be a positive integer"))?;
    let number = |k: &str, default: f64| -> Result<f64, IoError> {
        match get(k) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| field_error(file, k, "must be a number")),
        }
    };
    let alpha = number("lora_alpha", 8.0)?;
    let dropout = number("lora_dropout", 0.0)?;
    let rslora = match get("use_rslora") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| field_error(file, "use_rslora", "must be true or false"))?,
    };
    let targets = parse_targets(get("target_modules"), file)?;
    let spec = LoraSpec {
        rank: usize::try_from(rank).unwrap_or(usize::MAX),
        alpha: alpha as f32,
        dropout: dropout as f32,
        rslora,
        targets,
    };
    spec.validate().map_err(|e| field_error(file, e.field, &e.detail))?;
    let base_model = get("base_model_name_or_path")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((spec, base_model))
}

/// `target_modules`: a list of module names or paths (PEFT matches an entry equal to the
/// module's path or ending in `.{entry}`; `all-linear` is saved expanded to paths), or the
/// string `all-linear` or a single module name. r1 keeps the module kinds named; the
/// weights must then cover every layer (checked by [`PeftAdapter::check_for`]).
fn parse_targets(value: Option<&Value>, file: &str) -> Result<LoraTargets, IoError> {
    let names: Vec<&str> = match value {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| field_error(file, "target_modules", "entries must be strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(field_error(file, "target_modules", "must list the modules to adapt")),
    };
    let kinds: Vec<&str> = names.iter().map(|n| n.rsplit('.').next().unwrap_or(n)).collect();
    LoraTargets::from_names(kinds).map_err(|e| field_error(file, "target_modules", &e.detail))
}

fn refuse_unless(obj: &Map<String, Value>, file: &str, key: &str, want: &Value, why: &str) -> Result<(), IoError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v == want => Ok(()),
        Some(v) => Err(field_error(file, key, &format!("{v}: {why}"))),
    }
}

fn field_error(file: &str, field: &str, detail: &str) -> IoError {
    IoError::Field {
        file: file.into(),
        field: field.into(),
        detail: detail.into(),
    }
}

/// `adapter_config.json` as PEFT writes it for a plain LoRA adapter of a causal LM.
pub fn adapter_config_json(spec: &LoraSpec, base_model: Option<&str>) -> Value {
    json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        // PEFT writes an integer alpha as an integer.
        "lora_alpha": if spec.alpha.fract() == 0.0 && spec.alpha.abs() < 1e9 { json!(spec.alpha as i64) } else { json!(spec.alpha) },
        "lora_bias": false,
        "lora_dropout": spec.dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": spec.rank,
        "rank_pattern": {},
        "revision": null,
        "target_modules": spec.targets.names(),
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": spec.rslora,
    })
}

/// `adapter` as PEFT writes it: the `adapter_config.json` object and the bytes of
/// `adapter_model.safetensors` (what [`peft_adapter_from_parts`] reads back).
pub fn peft_adapter_parts(adapter: &PeftAdapter) -> Result<(Value, Vec<u8>), IoError> {
    let keyed: Vec<NamedTensor> = adapter
        .weights
        .iter()
        .map(|t| NamedTensor {
            name: format!("{KEY_PREFIX}{}", t.name),
            dims: t.dims.clone(),
            data: t.data.clone(),
        })
        .collect();
    let config = adapter_config_json(&adapter.spec, adapter.base_model.as_deref());
    Ok((config, encode_safetensors(&keyed)?))
}

/// Writes `adapter` as a PEFT directory (created if needed), each file to a temporary file
/// renamed over the old one; returns the files written.
pub fn write_peft_adapter(dir: &Path, adapter: &PeftAdapter) -> Result<Vec<PathBuf>, IoError> {
    std::fs::create_dir_all(dir).map_err(|e| IoError::file(dir, e))?;
    let (config, bytes) = peft_adapter_parts(adapter)?;
    let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
    write_bytes_atomically(&weights_path, &bytes)?;
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| field_error(&config_path.display().to_string(), "(root)", &e.to_string()))?;
    write_bytes_atomically(&config_path, text.as_bytes())?;
    Ok(vec![config_path, weights_path])
}
