//! A model's weights on a backend: every f32 parameter in one flat buffer (the trainable
//! master weights), laid out in `ModelConfig::param_specs()` order. One buffer means one
//! upload, one download for a checkpoint, and optimizer state (gradients, moments) with
//! the very same layout.
//!
//! Weights stored in another type (a GGUF file's Q8_0/Q4_0/Q5_0/Q4_K/Q6_K projections) are
//! [`StoredWeight`]s beside it: their bytes as the file has them, one backend buffer
//! each, bound to the graph's frozen typed params by the same [`ParamBuffer::bind`]. They
//! are not in the f32 layout, so a model with any cannot be trained or checkpointed.

use std::collections::HashMap;
use std::sync::Arc;

use r1_core::backend::{Backend, BackendError, TensorRef};
use r1_core::exec::Bindings;
use r1_core::model::{CausalLm, LoraSpec, ModelConfig, ParamSpec, WeightTypes};
use r1_core::sampling::Rng;
use r1_core::{DType, Graph, GraphError, TensorDesc};

/// Parameter offsets are multiples of 16 floats (64 bytes), so every parameter starts on
/// a cache line and a SIMD boundary.
const ALIGN_FLOATS: usize = 16;

/// The element type of a [`ParamBuffer`]: weights, gradients and moments are f32.
pub const PARAM_DTYPE: DType = DType::F32;

/// A parameter as `(name, dims, values)`.
pub type NamedParam = (String, Vec<usize>, Vec<f32>);

/// Where each parameter lives in the flat buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamLayout {
    entries: Vec<ParamEntry>,
    index: HashMap<String, usize>,
    total: usize,
}

/// One parameter of a [`ParamLayout`].
#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    pub name: String,
    pub dims: Vec<usize>,
    /// Offset in elements from the start of the buffer.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl ParamEntry {
    /// The parameter's tensor description.
    pub fn desc(&self) -> TensorDesc {
        TensorDesc::new(PARAM_DTYPE, &self.dims)
    }

    /// Offset in bytes from the start of the buffer.
    pub fn byte_offset(&self) -> usize {
        TensorDesc::new(PARAM_DTYPE, &[self.offset]).bytes()
    }

    /// Whether AdamW's weight decay applies: matrices yes; biases and norm weights no (the
    /// `transformers` Trainer's rule).
    pub fn decays(&self) -> bool {
        self.dims.len() >= 2
    }
}

impl ParamLayout {
    pub fn new(specs: &[ParamSpec]) -> ParamLayout {
        let mut entries = Vec::with_capacity(specs.len());
        let mut index = HashMap::new();
        let mut offset = 0;
        for s in specs {
            let len = s.numel();
            index.insert(s.name.clone(), entries.len());
            entries.push(ParamEntry {
                name: s.name.clone(),
                dims: s.dims.clone(),
                offset,
                len,
            });
            offset += len.div_ceil(ALIGN_FLOATS) * ALIGN_FLOATS;
        }
        ParamLayout {
            entries,
            index,
            total: offset,
        }
    }

    pub fn for_config(cfg: &ModelConfig) -> ParamLayout {
        ParamLayout::new(&cfg.param_specs())
    }

    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    /// The position of parameter `name` in [`ParamLayout::entries`].
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Floats in the flat buffer (with alignment padding).
    pub fn total_floats(&self) -> usize {
        self.total
    }

    /// Bytes of the flat buffer (with alignment padding).
    pub fn total_bytes(&self) -> usize {
        TensorDesc::new(PARAM_DTYPE, &[self.total]).bytes()
    }

    /// Number of parameters (without padding).
    pub fn num_params(&self) -> usize {
        self.entries.iter().map(|e| e.len).sum()
    }
}

/// A weight kept in its stored type (not f32): its bytes, as-is, in a backend buffer of
/// its own.
pub struct StoredWeight<B: Backend> {
    /// The Hugging Face name.
    pub name: String,
    /// Row-major `[out, in]` dims and the stored dtype.
    pub desc: TensorDesc,
    pub buffer: B::Buffer,
}

/// A weight's stored bytes on the host, before any backend.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTensor {
    /// The Hugging Face name.
    pub name: String,
    /// Row-major dims and the stored dtype; `desc.bytes() == bytes.len()`.
    pub desc: TensorDesc,
    pub bytes: StoredBytes,
}

/// The bytes of a [`StoredTensor`]: owned, or a range of a memory-mapped file that a
/// host-memory backend computes on in place ([`Backend::map_bytes`]), so a model file's
/// weights are neither copied nor widened.
#[derive(Clone)]
pub enum StoredBytes {
    Owned(Vec<u8>),
    Mapped(Arc<MappedRange>),
}

/// Bytes `range` of a memory-mapped file (kept mapped while this lives).
pub struct MappedRange {
    pub map: Arc<memmap2::Mmap>,
    pub range: std::ops::Range<usize>,
}

impl AsRef<[u8]> for MappedRange {
    fn as_ref(&self) -> &[u8] {
        // The range was checked against the map when it was made; an empty slice
        // otherwise (never reached).
        self.map.get(self.range.clone()).unwrap_or(&[])
    }
}

impl std::ops::Deref for StoredBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            StoredBytes::Owned(v) => v,
            StoredBytes::Mapped(m) => (**m).as_ref(),
        }
    }
}

impl PartialEq for StoredBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for StoredBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredBytes::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            StoredBytes::Mapped(m) => write!(f, "Mapped({:?})", m.range),
        }
    }
}

/// A flat f32 buffer on a backend with a [`ParamLayout`]: weights, gradients, or optimizer
/// moments; for weights, also the [`StoredWeight`]s of other types, and for a LoRA adapter
/// the frozen model under it.
pub struct ParamBuffer<B: Backend> {
    pub layout: ParamLayout,
    pub buffer: B::Buffer,
    /// Weights not in the f32 layout, kept in their stored type (empty for gradients,
    /// moments, and every model loaded from f32/f16/bf16 weights).
    pub stored: Vec<StoredWeight<B>>,
    /// For an adapter's weights (`layout` then holds `lora_A`/`lora_B` only): the frozen
    /// model they adapt, shared (GRPO's reference model is this base, not a copy).
    pub base: Option<AdapterBase<B>>,
}

/// The frozen model under a LoRA adapter, and the adapter's settings.
pub struct AdapterBase<B: Backend> {
    pub params: Arc<ParamBuffer<B>>,
    pub lora: LoraSpec,
}

impl<B: Backend> ParamBuffer<B> {
    /// A zero-filled buffer.
    pub fn zeros(backend: &B, layout: ParamLayout) -> Result<Self, BackendError> {
        let buffer = backend.alloc(layout.total_bytes())?;
        Ok(ParamBuffer {
            layout,
            buffer,
            stored: Vec::new(),
            base: None,
        })
    }

    /// A LoRA adapter over `base` for a model of config `cfg`, initialised as PEFT does
    /// (`init_lora_weights=True`): `lora_A` from Kaiming-uniform with `a = √5`, i.e.
    /// U(−1/√in, 1/√in), `lora_B` zero — so the adapted model starts as the base.
    pub fn new_adapter(
        backend: &B,
        base: Arc<ParamBuffer<B>>,
        cfg: &ModelConfig,
        lora: LoraSpec,
        seed: u64,
    ) -> Result<Self, WeightsError> {
        if base.base.is_some() {
            return Err(WeightsError::Lora(
                "an adapter cannot sit on another adapter; merge it first".into(),
            ));
        }
        lora.validate().map_err(|e| WeightsError::Lora(e.to_string()))?;
        let specs = lora.adapter_specs(&cfg.param_specs());
        let mut rng = Rng::new(seed);
        let values: Vec<(String, Vec<f32>)> = specs
            .iter()
            .map(|s| {
                let values = if s.name.ends_with(".lora_A.weight") {
                    let bound = 1.0 / (s.dims[1] as f64).sqrt();
                    (0..s.numel())
                        .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                        .collect()
                } else {
                    vec![0.0; s.numel()]
                };
                (s.name.clone(), values)
            })
            .collect();
        Self::adapter(backend, base, cfg, lora, values)
    }

    /// A LoRA adapter over `base` with the given weights (every `lora_A`/`lora_B` of
    /// `lora`'s targets, by name).
    pub fn adapter(
        backend: &B,
        base: Arc<ParamBuffer<B>>,
        cfg: &ModelConfig,
        lora: LoraSpec,
        weights: impl IntoIterator<Item = (String, Vec<f32>)>,
    ) -> Result<Self, WeightsError> {
        let specs = lora.adapter_specs(&cfg.param_specs());
        if specs.is_empty() {
            return Err(WeightsError::Lora(format!(
                "none of the target modules ({}) is a weight of this model",
                lora.targets.names().join(", ")
            )));
        }
        let mut adapter = upload_weights(backend, ParamLayout::new(&specs), weights)?;
        adapter.base = Some(AdapterBase { params: base, lora });
        Ok(adapter)
    }

    /// Uploads a weight kept in its stored type into a buffer of its own.
    pub fn add_stored(&mut self, backend: &B, t: &StoredTensor) -> Result<(), WeightsError> {
        if self.layout.get(&t.name).is_some() || self.stored.iter().any(|s| s.name == t.name) {
            return Err(WeightsError::Duplicate(t.name.clone()));
        }
        if t.desc.checked_bytes() != Some(t.bytes.len()) {
            return Err(WeightsError::StoredSize {
                name: t.name.clone(),
                desc: format!("{} {}", t.desc.dtype, t.desc.shape),
                got: t.bytes.len(),
            });
        }
        // Mapped bytes are lent to a backend that computes on host memory, else copied.
        let lent = match &t.bytes {
            StoredBytes::Mapped(m) => backend.map_bytes(m.clone())?,
            StoredBytes::Owned(_) => None,
        };
        let buffer = match lent {
            Some(b) => b,
            None => {
                let b = backend.alloc(t.bytes.len())?;
                backend.upload(&b, 0, &t.bytes)?;
                b
            }
        };
        self.stored.push(StoredWeight {
            name: t.name.clone(),
            desc: t.desc,
            buffer,
        });
        Ok(())
    }

    /// The stored type of every weight: what the graph builder needs
    /// (`r1_core::model::build_causal_lm_typed`).
    pub fn weight_types(&self) -> WeightTypes {
        if let Some(base) = &self.base {
            return base.params.weight_types().with_lora(base.lora);
        }
        let mut types = WeightTypes::all_f32();
        for s in &self.stored {
            types.set(&s.name, s.desc.dtype);
        }
        types
    }

    /// Bytes the weights occupy on the backend: the flat f32 buffer (alignment padding
    /// included) plus every stored weight, and the base under an adapter.
    pub fn resident_bytes(&self) -> usize {
        let own = self
            .stored
            .iter()
            .fold(self.layout.total_bytes(), |n, s| n.saturating_add(s.desc.bytes()));
        own.saturating_add(self.base.as_ref().map_or(0, |b| b.params.resident_bytes()))
    }

    /// The LoRA adapter's settings, when these are an adapter's weights.
    pub fn lora(&self) -> Option<&LoraSpec> {
        self.base.as_ref().map(|b| &b.lora)
    }

    /// Where weight `name` lives: this buffer's layout, a stored weight, or the base.
    fn find(&self, name: &str) -> Option<(&B::Buffer, usize)> {
        if let Some(e) = self.layout.get(name) {
            return Some((&self.buffer, e.byte_offset()));
        }
        if let Some(s) = self.stored.iter().find(|s| s.name == name) {
            return Some((&s.buffer, 0));
        }
        self.base.as_ref().and_then(|b| b.params.find(name))
    }

    /// Refuses a model with weights kept in a stored type: they are frozen, outside the
    /// f32 layout that gradients, optimizer moments and checkpoints share.
    pub fn check_trainable(&self, what: &str) -> Result<(), WeightsError> {
        // Name a weight of a type training cannot widen (f32 ones are widened when the
        // model is loaded to train, `Model::load_trainable`).
        let example = self
            .stored
            .iter()
            .find(|s| s.desc.dtype != DType::F32)
            .or(self.stored.first());
        match example {
            None => Ok(()),
            Some(s) => Err(WeightsError::NotF32 {
                what: what.to_string(),
                count: self.stored.len(),
                example: s.name.clone(),
                dtype: s.desc.dtype.to_string(),
            }),
        }
    }

    /// The tensor of parameter `i` (in layout order).
    pub fn tensor(&self, i: usize) -> TensorRef<'_, B::Buffer> {
        let e = &self.layout.entries[i];
        TensorRef {
            buffer: &self.buffer,
            offset: e.byte_offset(),
            desc: e.desc(),
        }
    }

    /// The whole buffer as one flat tensor (padding included; it stays zero).
    pub fn flat(&self) -> TensorRef<'_, B::Buffer> {
        TensorRef {
            buffer: &self.buffer,
            offset: 0,
            desc: TensorDesc::new(PARAM_DTYPE, &[self.layout.total_floats()]),
        }
    }

    /// Uploads parameter `name`'s values.
    pub fn upload(&self, backend: &B, name: &str, values: &[f32]) -> Result<(), WeightsError> {
        let e = self
            .layout
            .get(name)
            .ok_or_else(|| WeightsError::UnknownTensor(name.to_string()))?;
        if values.len() != e.len {
            return Err(WeightsError::Shape {
                name: name.to_string(),
                expected: e.dims.clone(),
                got: values.len(),
            });
        }
        backend.upload(&self.buffer, e.byte_offset(), &r1_core::backend::f32_bytes(values))?;
        Ok(())
    }

    /// Downloads the f32 parameter `name`.
    pub fn download(&self, backend: &B, name: &str) -> Result<Vec<f32>, WeightsError> {
        let e = self
            .layout
            .get(name)
            .ok_or_else(|| WeightsError::UnknownTensor(name.to_string()))?;
        let mut bytes = vec![0u8; e.desc().bytes()];
        backend.download(&self.buffer, e.byte_offset(), &mut bytes)?;
        Ok(r1_core::backend::f32_from_bytes(&bytes))
    }

    /// Downloads every parameter as `(name, dims, values)` in layout order.
    pub fn download_all(&self, backend: &B) -> Result<Vec<NamedParam>, WeightsError> {
        let mut bytes = vec![0u8; self.layout.total_bytes()];
        backend.download(&self.buffer, 0, &mut bytes)?;
        let all = r1_core::backend::f32_from_bytes(&bytes);
        Ok(self
            .layout
            .entries
            .iter()
            .map(|e| (e.name.clone(), e.dims.clone(), all[e.offset..e.offset + e.len].to_vec()))
            .collect())
    }

    /// Every weight of a model of `cfg` as f32, in `param_specs` order: the f32 layout's
    /// values and the stored weights dequantized with core's reference dequantizer (what
    /// merging an adapter into a quantized base starts from).
    pub fn download_widened(&self, backend: &B, cfg: &ModelConfig) -> Result<Vec<NamedParam>, WeightsError> {
        let mut f32s: HashMap<String, NamedParam> = self
            .download_all(backend)?
            .into_iter()
            .map(|p| (p.0.clone(), p))
            .collect();
        let mut out = Vec::new();
        for spec in cfg.param_specs() {
            if let Some(p) = f32s.remove(&spec.name) {
                out.push(p);
                continue;
            }
            let s = self
                .stored
                .iter()
                .find(|s| s.name == spec.name)
                .ok_or_else(|| WeightsError::Missing(spec.name.clone()))?;
            let mut bytes = vec![0u8; s.desc.bytes()];
            backend.download(&s.buffer, 0, &mut bytes)?;
            out.push((spec.name, spec.dims, widen_stored(&s.name, &s.desc, &bytes)?));
        }
        Ok(out)
    }

    /// Binds every `Param` node of a built model to this buffer.
    pub fn bind<'a>(&'a self, lm: &CausalLm, bindings: &mut Bindings<'a, B::Buffer>) -> Result<(), GraphError> {
        for (name, id) in &lm.params {
            let (buffer, offset) = self.find(name).ok_or_else(|| GraphError::Unbound {
                node: id.0,
                name: name.to_string(),
            })?;
            bindings.bind(*id, buffer, offset)?;
        }
        Ok(())
    }

    /// Binds the params of an arbitrary graph by name (params not in the layout are left
    /// unbound and reported by the executor).
    pub fn bind_graph<'a>(&'a self, graph: &Graph, bindings: &mut Bindings<'a, B::Buffer>) -> Result<(), GraphError> {
        for (id, node) in graph.iter() {
            if let (r1_core::Op::Param { .. }, Some(name)) = (&node.op, &node.name)
                && let Some((buffer, offset)) = self.find(name)
            {
                bindings.bind(id, buffer, offset)?;
            }
        }
        Ok(())
    }
}

/// Weights that do not fit the model.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("tensor `{0}` is not a parameter of this model")]
    UnknownTensor(String),
    #[error("tensor `{name}`: expected shape {expected:?}, got {got} values")]
    Shape {
        name: String,
        expected: Vec<usize>,
        got: usize,
    },
    #[error("tensor `{0}` is missing")]
    Missing(String),
    #[error("tensor `{0}` is given twice")]
    Duplicate(String),
    #[error("tensor `{name}`: {desc} takes a different number of bytes than the {got} given")]
    StoredSize { name: String, desc: String, got: usize },
    #[error(
        "{what} needs f32 weights, but {count} weight(s) of this model are kept in their stored type (e.g. `{example}` as {dtype}): quantized weights cannot be trained in full (train a LoRA adapter on them instead: `lora` in the stage), and r1 checkpoints hold f32 weights only — start from an f32/f16/bf16 model, or `r1host export` it (which dequantizes)"
    )]
    NotF32 {
        what: String,
        count: usize,
        example: String,
        dtype: String,
    },
    #[error("LoRA: {0}")]
    Lora(String),
    #[error("{0}")]
    Widen(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Fresh weights the way `transformers` initialises a Llama/Qwen2/DeepSeek-V3 model:
/// matrices and embeddings from N(0, 0.02²), biases (and DeepSeek's router bias) 0, norm
/// weights 1.
pub fn init_weights(cfg: &ModelConfig, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = Rng::new(seed);
    cfg.param_specs()
        .into_iter()
        .map(|s| {
            let values = init_values(&s, &mut rng);
            (s.name, s.dims, values)
        })
        .collect()
}

/// One weight's values as [`init_weights`] draws them, from `rng` in spec order (for
/// callers that convert or upload each weight before drawing the next).
pub fn init_values(spec: &ParamSpec, rng: &mut Rng) -> Vec<f32> {
    const INITIALIZER_RANGE: f64 = 0.02;
    let n = spec.numel();
    if spec.name.ends_with("norm.weight") {
        vec![1.0; n]
    } else if spec.name.ends_with(".bias") || r1_core::model::builder::is_buffer(&spec.name) {
        vec![0.0; n]
    } else {
        (0..n).map(|_| (rng.normal() * INITIALIZER_RANGE) as f32).collect()
    }
}

/// A stored weight's bytes as f32, with core's reference dequantizer (`what` names it in
/// the error).
pub fn widen_stored(what: &str, desc: &TensorDesc, bytes: &[u8]) -> Result<Vec<f32>, WeightsError> {
    let ty = r1_core::quant::GgmlType::from_dtype(desc.dtype)
        .ok_or_else(|| WeightsError::Widen(format!("`{what}` is stored as {}, which r1 cannot widen", desc.dtype)))?;
    r1_core::quant::dequantize(ty, bytes, desc.shape.numel())
        .map_err(|e| WeightsError::Widen(format!("dequantizing `{what}`: {e}")))
}

/// [`init_weights`] uploaded into a fresh [`ParamBuffer`] laid out for `cfg`.
pub fn random_params<B: Backend>(backend: &B, cfg: &ModelConfig, seed: u64) -> Result<ParamBuffer<B>, WeightsError> {
    upload_weights(
        backend,
        ParamLayout::for_config(cfg),
        init_weights(cfg, seed).into_iter().map(|(n, _, v)| (n, v)),
    )
}

/// Uploads named weights into a fresh [`ParamBuffer`], checking that every parameter of
/// the layout is present with the right size.
pub fn upload_weights<B: Backend>(
    backend: &B,
    layout: ParamLayout,
    weights: impl IntoIterator<Item = (String, Vec<f32>)>,
) -> Result<ParamBuffer<B>, WeightsError> {
    let buf = ParamBuffer::zeros(backend, layout)?;
    let mut seen = vec![false; buf.layout.entries.len()];
    for (name, values) in weights {
        buf.upload(backend, &name, &values)?;
        if let Some(&i) = buf.layout.index.get(&name) {
            seen[i] = true;
        }
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(WeightsError::Missing(buf.layout.entries[i].name.clone()));
    }
    Ok(buf)
}
