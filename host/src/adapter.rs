//! LoRA adapters on a loaded model: attach a fresh or PEFT-read adapter to a [`Model`]
//! (its weights become the frozen base, shared), take the adapter back out as a
//! [`PeftAdapter`], and merge it into the base weights (`W + s · B · A`, as PEFT's
//! `merge_and_unload`).

use std::sync::Arc;

use ndarray::ArrayView2;
use r1_core::backend::Backend;
use r1_core::model::{LoraSpec, ModelConfig};

use crate::io::{NamedTensor, PeftAdapter, Weights};
use crate::model::{Model, ModelError};
use crate::weights::{AdapterBase, ParamBuffer, ParamLayout, WeightsError};

impl<B: Backend> Model<B> {
    /// Puts a fresh adapter (PEFT's initialisation, `seed`) on this model: the current
    /// weights become its frozen base and only the adapter trains.
    pub fn attach_new_adapter(&mut self, backend: &B, lora: LoraSpec, seed: u64) -> Result<(), ModelError> {
        self.replace_params(backend, |b, base, cfg| {
            ParamBuffer::new_adapter(b, base, cfg, lora, seed)
        })
    }

    /// Puts `adapter` (read from a PEFT directory) on this model.
    pub fn attach_adapter(&mut self, backend: &B, adapter: &PeftAdapter) -> Result<(), ModelError> {
        adapter.check_for(&self.config, "the adapter")?;
        let weights = adapter.weights.iter().map(|t| (t.name.clone(), t.data.clone()));
        self.replace_params(backend, |b, base, cfg| {
            ParamBuffer::adapter(b, base, cfg, adapter.spec, weights)
        })
    }

    /// Puts `adapter` on this model's base: in place of the adapter it has, or on its
    /// weights when it has none (a weight update for a served LoRA policy).
    pub fn replace_adapter(&mut self, backend: &B, adapter: &PeftAdapter) -> Result<(), ModelError> {
        adapter.check_for(&self.config, "the adapter")?;
        let Some(base) = self.params.base.as_ref().map(|b| b.params.clone()) else {
            return self.attach_adapter(backend, adapter);
        };
        let weights = adapter.weights.iter().map(|t| (t.name.clone(), t.data.clone()));
        self.params = ParamBuffer::adapter(backend, base, &self.config, adapter.spec, weights)?;
        Ok(())
    }

    fn replace_params(
        &mut self,
        backend: &B,
        make: impl FnOnce(&B, Arc<ParamBuffer<B>>, &ModelConfig) -> Result<ParamBuffer<B>, WeightsError>,
    ) -> Result<(), ModelError> {
        if self.params.base.is_some() {
            return Err(ModelError::Invalid(
                "the model already has a LoRA adapter; merge it before adding another".into(),
            ));
        }
        // A placeholder holds the slot while the base moves into its Arc.
        let placeholder = ParamBuffer::zeros(backend, ParamLayout::new(&[]))?;
        let base = Arc::new(std::mem::replace(&mut self.params, placeholder));
        match make(backend, base.clone(), &self.config) {
            Ok(adapter) => {
                self.params = adapter;
                Ok(())
            }
            Err(e) => {
                // `make` dropped its handle: put the base back as it was.
                if let Ok(params) = Arc::try_unwrap(base) {
                    self.params = params;
                }
                Err(e.into())
            }
        }
    }

    /// Merges the adapter into the weights (`W + s·B·A`) and drops it: the model is a
    /// plain one again, with one f32 buffer. Returns whether there was an adapter.
    ///
    /// An f32 base held by nothing else is merged in place, one adapted weight at a time
    /// (no second copy of the model); a quantized base is widened into a new f32 model.
    pub fn merge_adapter(&mut self, backend: &B) -> Result<bool, ModelError> {
        let Some(adapter) = self.adapter(backend, None)? else {
            return Ok(false);
        };
        let in_place = self
            .params
            .base
            .as_ref()
            .is_some_and(|b| b.params.stored.is_empty() && Arc::strong_count(&b.params) == 1);
        if !in_place {
            let merged = self.weights(backend)?;
            let plain = Model::from_weights(backend, self.config.clone(), self.tokenizer.clone(), merged)?;
            self.params = plain.params;
            return Ok(true);
        }
        let Some(AdapterBase { params, lora }) = self.params.base.take() else {
            return Ok(false);
        };
        let base = match Arc::try_unwrap(params) {
            Ok(base) => base,
            Err(params) => {
                self.params.base = Some(AdapterBase { params, lora });
                return Err(ModelError::Invalid(
                    "the adapter's base is shared; it cannot be merged in place".into(),
                ));
            }
        };
        for i in 0..base.layout.entries().len() {
            let e = &base.layout.entries()[i];
            if adapter.spec.target_of(&e.name).is_none() {
                continue;
            }
            let mut bytes = vec![0u8; e.desc().bytes()];
            backend.download(&base.buffer, e.byte_offset(), &mut bytes)?;
            let mut one = Weights {
                tensors: vec![NamedTensor {
                    name: e.name.clone(),
                    dims: e.dims.clone(),
                    data: r1_core::backend::f32_from_bytes(&bytes),
                }],
            };
            merge_adapter(&mut one, &adapter)?;
            base.upload(backend, &e.name, &one.tensors[0].data)?;
        }
        self.params = base;
        Ok(true)
    }

    /// The adapter as a [`PeftAdapter`] (its current weights), when the model has one.
    pub fn adapter(&self, backend: &B, base_model: Option<String>) -> Result<Option<PeftAdapter>, ModelError> {
        let Some(spec) = self.params.lora().copied() else {
            return Ok(None);
        };
        let weights = Weights::from_triples(self.params.download_all(backend)?).tensors;
        Ok(Some(PeftAdapter {
            spec,
            base_model,
            weights,
        }))
    }
}

/// An adapter of `spec` for a model of `config` with every weight (B too, unlike PEFT's
/// initialisation) drawn from N(0, `std`²) by `seed`: for tests and benchmarks that need an
/// adapter that changes the model.
pub fn random_adapter(config: &ModelConfig, spec: LoraSpec, seed: u64, std: f64) -> PeftAdapter {
    let mut rng = r1_core::sampling::Rng::new(seed);
    let weights = spec
        .adapter_specs(&config.param_specs())
        .into_iter()
        .map(|s| NamedTensor {
            data: (0..s.numel()).map(|_| (rng.normal() * std) as f32).collect(),
            name: s.name,
            dims: s.dims,
        })
        .collect();
    PeftAdapter {
        spec,
        base_model: None,
        weights,
    }
}

/// Adds `s · B · A` of every adapted module of `adapter` to its weight in `base`, in f32 as
/// PEFT's `merge_and_unload` does; returns the number of weights changed.
pub fn merge_adapter(base: &mut Weights, adapter: &PeftAdapter) -> Result<usize, ModelError> {
    let s = adapter.spec.scaling();
    let find = |name: &str| -> Result<&NamedTensor, ModelError> {
        adapter
            .weights
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ModelError::Invalid(format!("adapter weight `{name}` is missing")))
    };
    let mut merged = 0;
    for w in base.tensors.iter_mut() {
        let Some(prefix) = adapter.spec.target_of(&w.name) else {
            continue;
        };
        let (a, b) = (
            find(&format!("{prefix}.lora_A.weight"))?,
            find(&format!("{prefix}.lora_B.weight"))?,
        );
        let (a, b) = (matrix(a)?, matrix(b)?);
        let delta = b.dot(&a);
        if delta.dim() != (w.dims[0], w.dims.get(1).copied().unwrap_or(0)) {
            return Err(ModelError::Invalid(format!(
                "adapter of `{}` makes a {:?} update for a {:?} weight",
                w.name,
                delta.dim(),
                w.dims
            )));
        }
        for (x, d) in w.data.iter_mut().zip(delta.iter()) {
            *x += d * s;
        }
        merged += 1;
    }
    Ok(merged)
}

/// A 2-D tensor as an ndarray view.
fn matrix(t: &NamedTensor) -> Result<ArrayView2<'_, f32>, ModelError> {
    match t.dims[..] {
        [rows, cols] => ArrayView2::from_shape((rows, cols), &t.data)
            .map_err(|e| ModelError::Invalid(format!("adapter weight `{}`: {e}", t.name))),
        _ => Err(ModelError::Invalid(format!(
            "adapter weight `{}` is not a matrix",
            t.name
        ))),
    }
}
