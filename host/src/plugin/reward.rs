//! A loaded reward plugin: the compiled module and its `InstancePre`, checked against the
//! ABI, probed once at load (version, info, config), and then used as an
//! `r1_core::reward::Reward`: every `score` call is one evaluation in a fresh `Store`
//! under the plugin's limits, so nothing leaks between calls and a trapped store is
//! simply dropped.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use r1_core::plugin_abi::{self, Diagnostic, PluginInfo, export, limits};
use r1_core::reward::{Reward, RewardError, RewardErrorKind, Sample, Score};
use sha2::{Digest, Sha256};
use wasmtime::{Engine, Instance, InstancePre, Memory, Module, ModuleExport, Store, TypedFunc};

use super::cache::{CacheOutcome, ModuleCache};
use super::config::PluginConfig;
use super::conformance;
use super::error::PluginError;
use super::host::HostShared;
use super::module_scan;
use super::sandbox::{self, Evaluation, GuestFault};

/// A plugin's scores for one group, with what it said about them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scored {
    /// One per sample, each a finite value or "not applicable".
    pub scores: Vec<Score>,
    /// The diagnostics of the response (messages cut to the ABI's limit).
    pub diagnostics: Vec<Diagnostic>,
    /// Lines the plugin logged through `r1.log` during the evaluation.
    pub log: Vec<String>,
    /// Diagnostics and log lines dropped for being over the ABI's limits.
    pub dropped: usize,
}

/// Counters of a plugin's evaluations since it was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PluginStats {
    pub evaluations: u64,
    pub failures: u64,
    /// Scores returned (values and "not applicable").
    pub scores: u64,
}

#[derive(Default)]
struct Counters {
    evaluations: AtomicU64,
    failures: AtomicU64,
    scores: AtomicU64,
}

/// Export indices resolved once per module, so an evaluation needs no string lookups.
struct Exports {
    memory: ModuleExport,
    abi_version: ModuleExport,
    alloc: ModuleExport,
    info: ModuleExport,
    init: Option<ModuleExport>,
    score: ModuleExport,
}

impl Exports {
    fn resolve(module: &Module, has_init: bool) -> Option<Self> {
        Some(Exports {
            memory: module.get_export_index(export::MEMORY)?,
            abi_version: module.get_export_index(export::ABI_VERSION)?,
            alloc: module.get_export_index(export::ALLOC)?,
            info: module.get_export_index(export::INFO)?,
            init: if has_init {
                Some(module.get_export_index(export::INIT)?)
            } else {
                None
            },
            score: module.get_export_index(export::SCORE)?,
        })
    }
}

/// A reward plugin, ready to score. Cheap to share across threads (`&self` scoring).
pub struct PluginReward {
    name: String,
    weight: f32,
    info: PluginInfo,
    sha256: String,
    cache: CacheOutcome,
    engine: Engine,
    pre: InstancePre<Evaluation>,
    exports: Exports,
    init_config: Vec<u8>,
    deadline_ticks: u64,
    fuel: Option<u64>,
    max_memory_bytes: usize,
    host: Arc<HostShared>,
    counters: Counters,
}

/// One evaluation in progress: a fresh store and its instance.
struct Run {
    store: Store<Evaluation>,
    instance: Instance,
    memory: Memory,
}

/// The file name, for messages before the plugin has told its name.
fn label_of(config: &PluginConfig) -> String {
    config.name.clone().unwrap_or_else(|| {
        config
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| config.path.display().to_string())
    })
}

/// Reads a module file, refusing one over `max` bytes before reading it; `.wat` files
/// are converted from the text format.
pub(crate) fn read_module(path: &Path, max: u64, plugin: &str) -> Result<Vec<u8>, PluginError> {
    use std::io::Read;
    let read_error = |source| PluginError::Read {
        plugin: plugin.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > max {
        return Err(PluginError::ModuleTooLarge {
            plugin: plugin.to_string(),
            size,
            max,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > max {
        return Err(PluginError::ModuleTooLarge {
            plugin: plugin.to_string(),
            size: bytes.len() as u64,
            max,
        });
    }
    if path.extension().is_some_and(|e| e == "wat") {
        bytes = wat::parse_bytes(&bytes)
            .map_err(|e| PluginError::InvalidModule {
                plugin: plugin.to_string(),
                detail: e.to_string(),
            })?
            .into_owned();
    }
    Ok(bytes)
}

impl PluginReward {
    /// Compiles (or loads from the cache), checks and probes a module.
    pub(crate) fn load(host: Arc<HostShared>, bytes: &[u8], config: &PluginConfig) -> Result<Self, PluginError> {
        config.validate()?;
        let label = label_of(config);
        let size = bytes.len() as u64;
        if size > config.max_module_bytes {
            return Err(PluginError::ModuleTooLarge {
                plugin: label,
                size,
                max: config.max_module_bytes,
            });
        }
        // What compiling would cost is bounded before anything is compiled.
        module_scan::check_module(&label, bytes, &config.module_limits, config.max_memory_bytes)?;
        let engine = host
            .engines
            .for_plugin(config.fuel.is_some(), config.max_memory_bytes)?;
        let digest = Sha256::digest(bytes);
        let (module, cache) = compile(&host, &engine, bytes, &digest, &label)?;
        let conformance = conformance::check(&label, &module, config.max_memory_bytes)?;
        let link_error = |e: wasmtime::Error| PluginError::Link {
            plugin: label.clone(),
            detail: format!("{e:#}"),
        };
        let linker = sandbox::linker(&engine).map_err(link_error)?;
        let pre = linker.instantiate_pre(&module).map_err(link_error)?;
        let exports = Exports::resolve(&module, conformance.has_init).ok_or_else(|| PluginError::Link {
            plugin: label.clone(),
            detail: "export indices did not resolve".into(),
        })?;
        let deadline_ticks = host.engines.deadline_ticks(Duration::from_millis(config.timeout_ms));
        let mut reward = PluginReward {
            name: label,
            weight: config.weight,
            info: PluginInfo::default(),
            sha256: super::cache::hex(&digest),
            cache,
            engine,
            pre,
            exports,
            init_config: config.init_json(),
            deadline_ticks,
            fuel: config.fuel,
            // Validated to be at most 4 GiB, which fits a 64-bit usize.
            max_memory_bytes: usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX),
            host,
            counters: Counters::default(),
        };
        reward.info = reward.probe()?;
        if config.name.is_none() && !reward.info.name.trim().is_empty() {
            reward.name = reward.info.name.clone();
        }
        Ok(reward)
    }

    /// The name metrics and errors use (the config's `name`, else the plugin's own).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn weight(&self) -> f32 {
        self.weight
    }

    /// Hex sha256 of the module's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether the compiled module came from the on-disk cache.
    pub fn cache_outcome(&self) -> &CacheOutcome {
        &self.cache
    }

    /// Whether the module exports `r1_init`.
    pub fn has_init(&self) -> bool {
        self.exports.init.is_some()
    }

    pub fn stats(&self) -> PluginStats {
        PluginStats {
            evaluations: self.counters.evaluations.load(Ordering::Relaxed),
            failures: self.counters.failures.load(Ordering::Relaxed),
            scores: self.counters.scores.load(Ordering::Relaxed),
        }
    }

    fn error(&self, sample: Option<usize>, kind: RewardErrorKind) -> RewardError {
        RewardError {
            reward: self.name.clone(),
            sample,
            kind,
        }
    }

    /// An error from inside an evaluation, naming the sample the plugin was on (the only
    /// one, for a group of one).
    fn run_error(&self, run: &Run, group_len: usize, kind: RewardErrorKind) -> RewardError {
        let sample = run
            .store
            .data()
            .sample
            .map(|i| i as usize)
            .or((group_len == 1).then_some(0));
        self.error(sample, kind)
    }

    fn trap(&self, run: &Run, group_len: usize, e: wasmtime::Error) -> RewardError {
        let kind = sandbox::classify(&e, run.store.data());
        self.run_error(run, group_len, kind)
    }

    /// A fresh store with the plugin's limits, and the instance (its start function runs
    /// under the same deadline and fuel as the calls).
    fn start(&self) -> Result<Run, RewardError> {
        let mut store = Store::new(&self.engine, Evaluation::new(self.max_memory_bytes));
        store.limiter(|evaluation| &mut evaluation.limiter);
        store.set_epoch_deadline(self.deadline_ticks);
        store.epoch_deadline_trap();
        if let Some(fuel) = self.fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| self.error(None, RewardErrorKind::Other(format!("{e:#}"))))?;
        }
        let instance = match self.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => {
                let kind = sandbox::classify(&e, store.data());
                return Err(self.error(store.data().sample.map(|i| i as usize), kind));
            }
        };
        let memory = instance
            .get_module_export(&mut store, &self.exports.memory)
            .and_then(|e| e.into_memory())
            .ok_or_else(|| self.error(None, RewardErrorKind::BadOutput("`memory` is not a memory".into())))?;
        Ok(Run {
            store,
            instance,
            memory,
        })
    }

    fn func<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &self,
        run: &mut Run,
        export: &ModuleExport,
    ) -> Result<TypedFunc<P, R>, RewardError> {
        // The conformance check proved the types; a failure here is a host bug.
        run.instance
            .get_module_export(&mut run.store, export)
            .and_then(|e| e.into_func())
            .and_then(|f| f.typed::<P, R>(&run.store).ok())
            .ok_or_else(|| {
                self.error(
                    None,
                    RewardErrorKind::Other("an export changed type after checking".into()),
                )
            })
    }

    /// Asks the plugin for `bytes.len()` bytes and copies `bytes` there.
    fn write_input(
        &self,
        run: &mut Run,
        bytes: &[u8],
        what: &str,
        group_len: usize,
    ) -> Result<(i32, i32), RewardError> {
        let alloc = self.func::<i32, i32>(run, &self.exports.alloc)?;
        let len = u32::try_from(bytes.len())
            .ok()
            .and_then(|l| i32::try_from(l).ok())
            .ok_or_else(|| self.error(None, RewardErrorKind::InvalidSample(format!("{what} is too large"))))?;
        let ptr = alloc
            .call(&mut run.store, len)
            .map_err(|e| self.trap(run, group_len, e))?;
        if ptr == 0 {
            return Err(self.error(
                None,
                RewardErrorKind::BadOutput(format!("r1_alloc({len}) for the {what} returned 0")),
            ));
        }
        let data = run.memory.data_mut(&mut run.store);
        let range = sandbox::guest_range(
            data.len(),
            ptr as u32,
            len as u32,
            &format!("r1_alloc({len}) for the {what}"),
        )
        .map_err(|GuestFault(m)| self.error(None, RewardErrorKind::BadOutput(m)))?;
        data[range].copy_from_slice(bytes);
        Ok((ptr, len))
    }

    /// The guest bytes a packed pointer/length names, checked against memory.
    fn output<'a>(&self, run: &'a Run, packed: i64, what: &str) -> Result<&'a [u8], RewardError> {
        let (ptr, len) = plugin_abi::unpack_ptr_len(packed as u64);
        let data = run.memory.data(&run.store);
        let range = sandbox::guest_range(data.len(), ptr, len, what)
            .map_err(|GuestFault(m)| self.error(None, RewardErrorKind::BadOutput(m)))?;
        Ok(&data[range])
    }

    /// Runs `r1_init` with the config, if the plugin has it. `Ok(Err(reason))`: rejected.
    fn init(&self, run: &mut Run, group_len: usize) -> Result<Result<(), String>, RewardError> {
        let Some(init_export) = &self.exports.init else {
            return Ok(Ok(()));
        };
        let (ptr, len) = self.write_input(run, &self.init_config, "config", group_len)?;
        let init = self.func::<(i32, i32), i32>(run, init_export)?;
        let status = init
            .call(&mut run.store, (ptr, len))
            .map_err(|e| self.trap(run, group_len, e))?;
        if status != 0 {
            let log = run.store.data().log.summary();
            return Ok(Err(if log.is_empty() {
                format!("r1_init returned {status}")
            } else {
                log
            }));
        }
        Ok(Ok(()))
    }

    /// At load: the ABI version, the info and the config, in one throwaway evaluation.
    fn probe(&self) -> Result<PluginInfo, PluginError> {
        let _slot = self.host.slots.acquire();
        let mut run = self.start().map_err(PluginError::Probe)?;
        let version_fn = self
            .func::<(), i32>(&mut run, &self.exports.abi_version)
            .map_err(PluginError::Probe)?;
        let version = version_fn
            .call(&mut run.store, ())
            .map_err(|e| PluginError::Probe(self.trap(&run, 0, e)))?;
        if version as i64 != i64::from(plugin_abi::ABI_VERSION) {
            return Err(PluginError::AbiVersion {
                plugin: self.name.clone(),
                found: i64::from(version),
                expected: plugin_abi::ABI_VERSION,
            });
        }
        let info_fn = self
            .func::<(), i64>(&mut run, &self.exports.info)
            .map_err(PluginError::Probe)?;
        let packed = info_fn
            .call(&mut run.store, ())
            .map_err(|e| PluginError::Probe(self.trap(&run, 0, e)))?;
        let bytes = self
            .output(&run, packed, "r1_info result")
            .map_err(PluginError::Probe)?;
        if bytes.len() > limits::MAX_INFO_BYTES {
            let kind = RewardErrorKind::BadOutput(format!(
                "r1_info returned {} bytes, over the limit of {}",
                bytes.len(),
                limits::MAX_INFO_BYTES
            ));
            return Err(PluginError::Probe(self.error(None, kind)));
        }
        let info = plugin_abi::decode_plugin_info(bytes)
            .map_err(|e| PluginError::Probe(self.error(None, RewardErrorKind::BadOutput(format!("r1_info: {e}")))))?;
        if let Err(reason) = self.init(&mut run, 0).map_err(PluginError::Probe)? {
            return Err(PluginError::ConfigRejected {
                plugin: self.name.clone(),
                reason,
            });
        }
        Ok(info)
    }

    /// Scores one group in a fresh store: one score per sample, with the plugin's
    /// diagnostics and log.
    pub fn score_detailed(&self, batch: &[Sample]) -> Result<Scored, RewardError> {
        self.counters.evaluations.fetch_add(1, Ordering::Relaxed);
        let result = self.evaluate(batch);
        match &result {
            Ok(scored) => {
                self.counters
                    .scores
                    .fetch_add(scored.scores.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn evaluate(&self, batch: &[Sample]) -> Result<Scored, RewardError> {
        let request = plugin_abi::encode_score_request(batch)
            .map_err(|e| self.error(None, RewardErrorKind::InvalidSample(e.to_string())))?;
        if request.len() >= self.max_memory_bytes {
            return Err(self.error(
                None,
                RewardErrorKind::InvalidSample(format!(
                    "the group encodes to {} bytes, more than the plugin's memory limit of {} bytes",
                    request.len(),
                    self.max_memory_bytes
                )),
            ));
        }
        let n = batch.len();
        let _slot = self.host.slots.acquire();
        let mut run = self.start()?;
        if let Err(reason) = self.init(&mut run, n)? {
            return Err(self.error(
                None,
                RewardErrorKind::Config(format!("the plugin rejected its config: {reason}")),
            ));
        }
        let (ptr, len) = self.write_input(&mut run, &request, "score request", n)?;
        run.store.data_mut().group_len = Some(n);
        let score = self.func::<(i32, i32), i64>(&mut run, &self.exports.score)?;
        let packed = score
            .call(&mut run.store, (ptr, len))
            .map_err(|e| self.trap(&run, n, e))?;
        let bytes = self.output(&run, packed, "r1_score result")?;
        let (mut response, mut dropped) = plugin_abi::decode_score_response_limited(bytes, n, limits::MAX_DIAGNOSTICS)
            .map_err(|e| self.error(None, RewardErrorKind::BadOutput(e.to_string())))?;
        for (i, score) in response.scores.iter().enumerate() {
            if let Score::Value(v) = score
                && !v.is_finite()
            {
                let kind = RewardErrorKind::BadOutput(format!("score {v} is not finite"));
                return Err(self.error(Some(i), kind));
            }
        }
        for diagnostic in &mut response.diagnostics {
            if let Some(i) = diagnostic.sample
                && i as usize >= n
            {
                let kind = RewardErrorKind::BadOutput(format!("a diagnostic names sample {i} of a group of {n}"));
                return Err(self.error(None, kind));
            }
            truncate_at_char(&mut diagnostic.message, limits::MAX_DIAGNOSTIC_BYTES);
        }
        let log = std::mem::take(&mut run.store.data_mut().log);
        dropped += log.dropped;
        Ok(Scored {
            scores: response.scores,
            diagnostics: response.diagnostics,
            log: log.lines,
            dropped,
        })
    }
}

fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

/// The compiled module, from the cache when an intact entry exists.
fn compile(
    host: &HostShared,
    engine: &Engine,
    bytes: &[u8],
    digest: &[u8],
    label: &str,
) -> Result<(Module, CacheOutcome), PluginError> {
    // Compiled on the host's scoring threads: wasmtime compiles functions in parallel on
    // the rayon pool it runs in, so a compile uses at most the host's `threads`.
    let compile_now = || {
        host.install(|| Module::from_binary(engine, bytes))
            .map_err(|e| PluginError::InvalidModule {
                plugin: label.to_string(),
                detail: format!("{e:#}"),
            })
    };
    let cache = match &host.cache {
        Ok(Some(cache)) => cache,
        Ok(None) => return Ok((compile_now()?, CacheOutcome::Disabled)),
        Err(reason) => return Ok((compile_now()?, CacheOutcome::NotStored(reason.clone()))),
    };
    let key = ModuleCache::key(engine, digest);
    if let Some(module) = cache.load(engine, &key) {
        return Ok((module, CacheOutcome::Hit));
    }
    let module = compile_now()?;
    let outcome = match module.serialize() {
        Ok(serialized) => match cache.store(&key, &serialized) {
            Ok(()) => CacheOutcome::Stored,
            Err(e) => CacheOutcome::NotStored(e.to_string()),
        },
        Err(e) => CacheOutcome::NotStored(format!("{e:#}")),
    };
    Ok((module, outcome))
}

impl Reward for PluginReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, batch: &[Sample]) -> Result<Vec<Score>, RewardError> {
        self.score_detailed(batch).map(|scored| scored.scores)
    }
}

impl std::fmt::Debug for PluginReward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginReward")
            .field("name", &self.name)
            .field("info", &self.info)
            .field("sha256", &self.sha256)
            .field("weight", &self.weight)
            .finish_non_exhaustive()
    }
}
