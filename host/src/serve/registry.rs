//! The models a server answers for: those loaded at start, and those a [`ModelSource`]
//! (training jobs, say) can name, loaded on first use. Each loaded model keeps its chat
//! template next to its engine so a request renders without touching the disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc::UnboundedReceiver;

use super::error::{ApiError, ServeError};
use crate::chat::{self, ChatTemplate};
use crate::engine::service::{
    EngineService, GenEvent, GenRequest, ServedModel, ServiceStats, SubmitError, WeightUpdate,
};

/// What the HTTP layer needs of an engine: [`EngineService`] in the server, a scripted
/// stand-in in tests.
pub trait Generator: Send + Sync {
    fn model(&self) -> &ServedModel;
    fn stats(&self) -> &ServiceStats;
    /// Queues a request; dropping the receiver cancels it.
    fn submit(&self, request: GenRequest) -> Result<UnboundedReceiver<GenEvent>, SubmitError>;
    /// Stops the engine (finishing running requests first when `drain`). Blocks.
    fn shutdown(&self, drain: bool);
    /// Queues new weights (see [`EngineService::update_weights`]); engines that cannot
    /// take them refuse.
    fn update_weights(
        &self,
        _update: WeightUpdate,
        _version: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, SubmitError> {
        Err(SubmitError::Invalid(
            "this model's engine cannot take weight updates".into(),
        ))
    }
}

impl Generator for EngineService {
    fn model(&self) -> &ServedModel {
        EngineService::model(self)
    }
    fn stats(&self) -> &ServiceStats {
        EngineService::stats(self)
    }
    fn submit(&self, request: GenRequest) -> Result<UnboundedReceiver<GenEvent>, SubmitError> {
        EngineService::submit(self, request)
    }
    fn shutdown(&self, drain: bool) {
        EngineService::shutdown(self, drain)
    }
    fn update_weights(
        &self,
        update: WeightUpdate,
        version: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, SubmitError> {
        EngineService::update_weights(self, update, version)
    }
}

/// Names of models the server does not load at start but can serve on request (the
/// models training jobs produced).
pub trait ModelSource: Send + Sync {
    /// Every name this source can resolve (listed by `GET /v1/models`).
    fn model_names(&self) -> Vec<String>;
    /// Where the model called `name` lives, if this source knows it.
    fn model_path(&self, name: &str) -> Option<PathBuf>;
}

/// Starts an engine for the model at a path under a name (blocking: it loads weights).
pub type ModelLoader = Arc<dyn Fn(&Path, &str) -> anyhow::Result<Arc<dyn Generator>> + Send + Sync>;

/// A model ready for requests.
pub struct LoadedModel {
    pub generator: Arc<dyn Generator>,
    /// The model's own chat template, or the default DeepSeek-R1 one.
    pub template: ChatTemplate,
}

impl LoadedModel {
    /// Wraps a running engine, reading its chat template from beside its weights.
    pub fn new(generator: Arc<dyn Generator>) -> Result<Self, ServeError> {
        let served = generator.model();
        let model_error = |message: String| ServeError::Model {
            name: served.name.clone(),
            message,
        };
        let own = match &served.path {
            Some(path) => {
                ChatTemplate::from_model_path(path, None).map_err(|e| model_error(format!("chat template: {e}")))?
            }
            None => None,
        };
        let template = match own {
            Some(t) => t,
            None => {
                let tokenizer = &served.tokenizer;
                let token = |id: Option<u32>| id.and_then(|id| tokenizer.decode(&[id]).ok());
                let bos = token(served.config.bos_token_id);
                let eos = token(Some(tokenizer.eos_id()));
                chat::default_template(bos, eos).map_err(|e| model_error(format!("default chat template: {e}")))?
            }
        };
        Ok(LoadedModel { generator, template })
    }

    pub fn name(&self) -> &str {
        &self.generator.model().name
    }
}

/// The served models by name.
pub struct ModelRegistry {
    loaded: RwLock<BTreeMap<String, Arc<LoadedModel>>>,
    sources: RwLock<Vec<Arc<dyn ModelSource>>>,
    loader: Option<ModelLoader>,
    /// One lazy load at a time: two requests for the same new model load it once.
    loading: tokio::sync::Mutex<()>,
}

impl ModelRegistry {
    /// A registry that loads models named by sources with `loader` (none: only models
    /// added with [`ModelRegistry::insert`] are served).
    pub fn new(loader: Option<ModelLoader>) -> Self {
        ModelRegistry {
            loaded: RwLock::new(BTreeMap::new()),
            sources: RwLock::new(Vec::new()),
            loader,
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// Adds a running engine under its model's name.
    pub fn insert(&self, generator: Arc<dyn Generator>) -> Result<Arc<LoadedModel>, ServeError> {
        let model = Arc::new(LoadedModel::new(generator)?);
        let name = model.name().to_string();
        let mut loaded = self.loaded.write().map_err(|_| poisoned())?;
        if loaded.contains_key(&name) {
            return Err(ServeError::DuplicateModel(name));
        }
        loaded.insert(name, model.clone());
        Ok(model)
    }

    /// Lets `source` name more models (loaded on first request).
    pub fn add_source(&self, source: Arc<dyn ModelSource>) {
        if let Ok(mut sources) = self.sources.write() {
            sources.push(source);
        }
    }

    /// The loaded models.
    pub fn loaded(&self) -> Vec<Arc<LoadedModel>> {
        self.loaded
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every name a request may use: loaded models first, then the sources' others.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .loaded
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for source in self.sources() {
            for name in source.model_names() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    fn sources(&self) -> Vec<Arc<dyn ModelSource>> {
        self.sources.read().map(|s| s.clone()).unwrap_or_default()
    }

    fn get(&self, name: &str) -> Option<Arc<LoadedModel>> {
        self.loaded.read().ok()?.get(name).cloned()
    }

    /// The model called `name`, loading it if a source knows it; 404 otherwise.
    pub async fn resolve(&self, name: &str) -> Result<Arc<LoadedModel>, ApiError> {
        if let Some(m) = self.get(name) {
            return Ok(m);
        }
        let Some(path) = self.sources().iter().find_map(|s| s.model_path(name)) else {
            return Err(ApiError::model_not_found(name));
        };
        let Some(loader) = self.loader.clone() else {
            return Err(ApiError::model_not_found(name));
        };
        let _one_at_a_time = self.loading.lock().await;
        if let Some(m) = self.get(name) {
            return Ok(m);
        }
        let owned = name.to_string();
        let generator = tokio::task::spawn_blocking(move || loader(&path, &owned))
            .await
            .map_err(|e| ApiError::internal(format!("loading model `{name}` stopped: {e}")))?
            .map_err(|e| ApiError::internal(format!("model `{name}` could not be loaded: {e:#}")))?;
        self.insert(generator)
            .map_err(|e| ApiError::internal(format!("model `{name}` could not be served: {e}")))
    }

    /// Stops every loaded engine (blocking).
    pub fn shutdown(&self, drain: bool) {
        for model in self.loaded() {
            model.generator.shutdown(drain);
        }
    }
}

fn poisoned() -> ServeError {
    ServeError::Io(std::io::Error::other("the model registry's lock is poisoned"))
}
