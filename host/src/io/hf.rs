//! Hugging Face model directories: `config.json` plus `model.safetensors`, or shards listed
//! by `model.safetensors.index.json`. Loading checks every tensor against
//! `ModelConfig::param_specs()` (names, shapes, dtypes, nothing missing, nothing extra) —
//! block-scaled FP8 weights (`fp8.rs`) are dequantized to f32 first, their scales consumed;
//! saving writes a directory `transformers` `from_pretrained` loads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path};

use r1_core::model::ModelConfig;
use serde_json::Value;

use crate::io::atomic::write_bytes_atomically;
use crate::io::error::IoError;
use crate::io::fp8::{DecodedTensor, Fp8Pairing, parse_fp8_config};
use crate::io::hf_config::{hf_config_json, parse_hf_config};
use crate::io::safetensors_f32::{decode_safetensors, decode_safetensors_with_fp8, write_safetensors};
use crate::io::tensors::{NamedTensor, Weights};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A loaded model directory: its config and every weight as f32.
#[derive(Clone, Debug, PartialEq)]
pub struct HfModel {
    pub config: ModelConfig,
    /// In `config.param_specs()` order.
    pub weights: Weights,
}

/// Loads `dir/config.json` and its safetensors weights (single file preferred over an
/// index, as `transformers` does). With an fp8 `quantization_config` (DeepSeek-V3/R1's
/// block-scaled FP8), each F8_E4M3 weight is dequantized with its `…_scale_inv` to f32.
pub fn load_hf_model(dir: &Path) -> Result<HfModel, IoError> {
    let config_path = dir.join(CONFIG_FILE);
    let config_bytes = std::fs::read(&config_path).map_err(|e| IoError::file(&config_path, e))?;
    let config_label = config_path.display().to_string();
    let config = parse_hf_config(&config_bytes, &config_label)?;
    let fp8 = parse_fp8_config(&config_bytes, &config_label)?;
    let single = dir.join(WEIGHTS_FILE);
    let index = dir.join(INDEX_FILE);
    let mut weights = DirWeights {
        collector: WeightCollector::new(&config),
        fp8: Fp8Pairing::new(fp8),
    };
    if single.is_file() {
        let bytes = std::fs::read(&single).map_err(|e| IoError::file(&single, e))?;
        let label = single.display().to_string();
        weights.add_file(decode_safetensors_with_fp8(&bytes, &label)?, &label)?;
    } else if index.is_file() {
        load_shards(dir, &index, &mut weights)?;
    } else {
        let hint = if dir.join("pytorch_model.bin").is_file() {
            " (PyTorch .bin weights are not read: convert them to safetensors)"
        } else {
            ""
        };
        return Err(IoError::NoWeights {
            dir: dir.to_path_buf(),
            hint,
        });
    }
    // Before naming a missing tensor: a config too large for its files says so, with the
    // memory the model would need.
    let bytes_per_weight = if fp8.is_some() { 1 } else { 2 };
    check_weight_bytes(dir, &config, bytes_per_weight, [&single, &index])?;
    let weights = weights.finish(&dir.display().to_string())?;
    Ok(HfModel { config, weights })
}

/// A model directory's weights as its files are read: FP8 weights paired with their scales
/// and dequantized, every f32 weight handed to the collector under the file that holds it.
struct DirWeights {
    collector: WeightCollector,
    fp8: Fp8Pairing,
}

impl DirWeights {
    fn add_file(&mut self, tensors: Vec<DecodedTensor>, file: &str) -> Result<(), IoError> {
        for t in tensors {
            if let Some((tensor, origin)) = self.fp8.route(t, file)? {
                self.collector.add_file(vec![tensor], &origin)?;
            }
        }
        Ok(())
    }

    /// An unpaired FP8 weight or scale first, then what the collector misses.
    fn finish(self, location: &str) -> Result<Weights, IoError> {
        self.fp8.finish()?;
        self.collector.finish(location)
    }
}

/// Refuses a config whose weights cannot be in the directory's safetensors files (each
/// weight takes at least `bytes_per_weight` bytes: 2 as BF16/F16, 1 as FP8), saying how
/// much memory the model would need. (`ModelConfig::validate` already bounds the sizes, so
/// nothing before this step allocates more than the files hold.)
fn check_weight_bytes(
    dir: &Path,
    config: &ModelConfig,
    bytes_per_weight: u64,
    [single, index]: [&Path; 2],
) -> Result<(), IoError> {
    let file_len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let on_disk = if single.is_file() {
        file_len(single)
    } else if index.is_file() {
        // Every file of the directory: the shards are among them; a loose bound suffices.
        std::fs::read_dir(dir)
            .map_err(|e| IoError::file(dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| file_len(&e.path()))
            .fold(0u64, u64::saturating_add)
    } else {
        return Ok(());
    };
    let params = config.checked_num_params().map_or(u64::MAX, |n| n as u64);
    if params.saturating_mul(bytes_per_weight) > on_disk {
        let gib = params.saturating_mul(4) as f64 / (1u64 << 30) as f64;
        return Err(IoError::Field {
            file: dir.join(CONFIG_FILE).display().to_string(),
            field: "(sizes)".into(),
            detail: format!(
                "describes {params} parameters (this model needs {gib:.1} GiB as f32), \
                 but its weight files hold only {on_disk} bytes"
            ),
        });
    }
    Ok(())
}

/// Builds the weights of `config` from the bytes of one safetensors file (the whole
/// loading path minus the file system; the fuzz target calls this).
pub fn weights_from_safetensors_bytes(config: &ModelConfig, bytes: &[u8]) -> Result<Weights, IoError> {
    let label = "<bytes>";
    let mut collector = WeightCollector::new(config);
    collector.add_file(decode_safetensors(bytes, label)?, label)?;
    collector.finish(label)
}

/// Writes `dir/config.json` and `dir/model.safetensors` (F32), each atomically, so that
/// `transformers` (and [`load_hf_model`]) can load the model. `weights` must be exactly
/// the weights of `config` (see [`Weights::validate_for`]).
pub fn save_hf_model(dir: &Path, config: &ModelConfig, weights: &Weights) -> Result<(), IoError> {
    weights.validate_for(config, "weights to save")?;
    let json = hf_config_json(config)?;
    std::fs::create_dir_all(dir).map_err(|e| IoError::file(dir, e))?;
    write_safetensors(&dir.join(WEIGHTS_FILE), &weights.tensors)?;
    write_bytes_atomically(&dir.join(CONFIG_FILE), json.as_bytes())
}

/// Reads the index and every shard it names, checking that each tensor is where the index
/// says it is.
fn load_shards(dir: &Path, index: &Path, weights: &mut DirWeights) -> Result<(), IoError> {
    let index_label = index.display().to_string();
    let text = std::fs::read(index).map_err(|e| IoError::file(index, e))?;
    let value: Value = serde_json::from_slice(&text).map_err(|e| IoError::json(&index_label, &e))?;
    let Some(map) = value.get("weight_map").and_then(Value::as_object) else {
        return Err(IoError::Field {
            file: index_label,
            field: "weight_map".into(),
            detail: "missing or not an object of tensor name → shard file".into(),
        });
    };
    // tensor → shard, and shard → first tensor (for messages), both in sorted order.
    let mut placement: BTreeMap<&str, &str> = BTreeMap::new();
    let mut shards: BTreeMap<&str, &str> = BTreeMap::new();
    for (tensor, shard) in map {
        let Some(shard) = shard.as_str() else {
            return Err(IoError::Field {
                file: index_label,
                field: format!("weight_map.{tensor}"),
                detail: format!("expected a shard file name, found {shard}"),
            });
        };
        if !is_plain_file_name(shard) {
            return Err(IoError::Field {
                file: index_label,
                field: format!("weight_map.{tensor}"),
                detail: format!("`{shard}` is not a file name inside the model directory"),
            });
        }
        placement.insert(tensor, shard);
        shards.entry(shard).or_insert(tensor);
    }
    let mut found_in: HashMap<String, String> = HashMap::new();
    for (shard, first_tensor) in &shards {
        let path = dir.join(shard);
        if !path.is_file() {
            return Err(IoError::MissingShard {
                index: index_label,
                shard: shard.to_string(),
                tensor: first_tensor.to_string(),
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| IoError::file(&path, e))?;
        let label = path.display().to_string();
        let tensors = decode_safetensors_with_fp8(&bytes, &label)?;
        for t in &tensors {
            found_in.insert(t.name().to_string(), shard.to_string());
        }
        weights.add_file(tensors, &label)?;
    }
    for (tensor, shard) in placement {
        match found_in.get(tensor) {
            Some(actual) if actual == shard => {}
            Some(actual) => {
                return Err(IoError::Field {
                    file: index_label,
                    field: format!("weight_map.{tensor}"),
                    detail: format!("says `{shard}`, but the tensor is in `{actual}`"),
                });
            }
            None => {
                return Err(IoError::MissingTensor {
                    name: tensor.to_string(),
                    location: format!("shard {} (where {INDEX_FILE} places it)", dir.join(shard).display()),
                });
            }
        }
    }
    Ok(())
}

/// A single normal path component: no separators, `..`, or absolute paths.
fn is_plain_file_name(name: &str) -> bool {
    let mut comps = Path::new(name).components();
    matches!((comps.next(), comps.next()), (Some(Component::Normal(_)), None)) && !name.contains(['/', '\\'])
}

/// Slots for the weights of a config, filled from one or more files (safetensors shards,
/// or a GGUF file's tensors under their Hugging Face names).
pub(crate) struct WeightCollector {
    slots: Vec<(NamedTensor, Option<String>)>,
    index: HashMap<String, usize>,
    tied: bool,
    arch: &'static str,
    /// A stored `lm_head.weight` of a tied model, checked against the embeddings.
    tied_head: Option<(NamedTensor, String)>,
    seen_head: Option<String>,
    /// Layers of DeepSeek-V3's multi-token-prediction modules, skipped.
    mtp_layers: std::ops::Range<usize>,
}

impl WeightCollector {
    pub(crate) fn new(config: &ModelConfig) -> Self {
        let specs = config.param_specs();
        let index = specs.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
        let slots = specs
            .into_iter()
            .map(|s| {
                (
                    NamedTensor {
                        name: s.name,
                        dims: s.dims,
                        data: Vec::new(),
                    },
                    None,
                )
            })
            .collect();
        WeightCollector {
            slots,
            index,
            tied: config.tie_word_embeddings,
            arch: config.architecture().map(|a| a.hf_class()).unwrap_or("unknown"),
            tied_head: None,
            seen_head: None,
            mtp_layers: config.deepseek_v3.as_ref().map_or(0..0, |ds| {
                config.num_hidden_layers..config.num_hidden_layers + ds.num_nextn_predict_layers
            }),
        }
    }

    /// Whether `name` is a weight of a multi-token-prediction module (`model.layers.N.…`
    /// with `N` past the decoder), which the causal LM does not use.
    fn is_mtp(&self, name: &str) -> bool {
        name.strip_prefix("model.layers.")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(layer, _)| layer.parse::<usize>().ok())
            .is_some_and(|l| self.mtp_layers.contains(&l))
    }

    pub(crate) fn add_file(&mut self, tensors: Vec<NamedTensor>, file: &str) -> Result<(), IoError> {
        for t in tensors {
            // Older checkpoints store RoPE's inverse frequencies; they follow from the config.
            if t.name.ends_with("rotary_emb.inv_freq") || self.is_mtp(&t.name) {
                continue;
            }
            if self.tied && t.name == "lm_head.weight" {
                if let Some(first) = self.seen_head.replace(file.to_string()) {
                    return Err(IoError::DuplicateTensor {
                        name: t.name,
                        first,
                        second: file.to_string(),
                    });
                }
                self.tied_head = Some((t, file.to_string()));
                continue;
            }
            let Some(&i) = self.index.get(&t.name) else {
                return Err(IoError::UnexpectedTensor {
                    file: file.to_string(),
                    name: t.name,
                    arch: self.arch.into(),
                });
            };
            let (slot, origin) = &mut self.slots[i];
            if let Some(first) = origin {
                return Err(IoError::DuplicateTensor {
                    name: t.name,
                    first: first.clone(),
                    second: file.to_string(),
                });
            }
            if t.dims != slot.dims {
                return Err(IoError::Shape {
                    file: file.to_string(),
                    name: t.name,
                    expected: slot.dims.clone(),
                    found: t.dims,
                });
            }
            slot.data = t.data;
            *origin = Some(file.to_string());
        }
        Ok(())
    }

    pub(crate) fn finish(self, location: &str) -> Result<Weights, IoError> {
        let mut tensors = Vec::with_capacity(self.slots.len());
        for (t, origin) in self.slots {
            if origin.is_none() {
                return Err(IoError::MissingTensor {
                    name: t.name,
                    location: location.to_string(),
                });
            }
            tensors.push(t);
        }
        if let Some((head, file)) = self.tied_head {
            let same = tensors
                .iter()
                .find(|t| t.name == "model.embed_tokens.weight")
                .is_some_and(|e| {
                    e.dims == head.dims && e.data.iter().zip(&head.data).all(|(a, b)| a.to_bits() == b.to_bits())
                });
            if !same {
                return Err(IoError::TiedMismatch { file });
            }
        }
        Ok(Weights { tensors })
    }

    /// Records that weight `name` (of shape `dims`) was read from `file` but is kept
    /// elsewhere (in its stored type): it counts as present, and
    /// [`WeightCollector::finish_without`] leaves it out.
    pub(crate) fn provided_elsewhere(&mut self, name: &str, dims: &[usize], file: &str) -> Result<(), IoError> {
        let placeholder = NamedTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            data: Vec::new(),
        };
        self.add_file(vec![placeholder], file)
    }

    /// [`WeightCollector::finish`] without the weights named in `elsewhere`.
    pub(crate) fn finish_without<'a>(
        self,
        location: &str,
        elsewhere: impl Iterator<Item = &'a str>,
    ) -> Result<Weights, IoError> {
        let skip: std::collections::HashSet<&str> = elsewhere.collect();
        let mut w = self.finish(location)?;
        w.tensors.retain(|t| !skip.contains(t.name.as_str()));
        Ok(w)
    }
}
