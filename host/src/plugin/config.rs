//! Configuration of the plugin host (one per process) and of each plugin (one per reward
//! in a run's TOML). Defaults live here and only here; unknown keys are rejected.

use std::path::PathBuf;

use r1_core::plugin_abi::limits;
use serde::{Deserialize, Serialize};

use super::error::PluginError;

/// The host: threads, the epoch ticker, the wasm stack, the module cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Scoring threads, which is also the most evaluations (stores) alive at once; 0 means
    /// one per available core.
    #[serde(default)]
    pub threads: usize,
    /// How often the epoch ticker advances (milliseconds): the resolution of timeouts.
    #[serde(default = "default_epoch_tick_ms")]
    pub epoch_tick_ms: u64,
    /// Wasm stack one call may use (bytes); deeper recursion traps as a stack overflow.
    #[serde(default = "default_max_wasm_stack_bytes")]
    pub max_wasm_stack_bytes: usize,
    /// Where compiled modules are cached; `None` compiles in memory every time.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: Option<PathBuf>,
    /// Reuse preallocated instance/memory slots (one per thread) instead of mapping fresh
    /// memory for every evaluation: several times faster per evaluation, at the cost of
    /// reserving (not committing) each slot's address space up front — a plugin's
    /// `max_memory_bytes` plus a small guard per thread; falls back to mapping memory per
    /// evaluation when that space cannot be reserved.
    #[serde(default = "default_pooling")]
    pub pooling: bool,
}

fn default_pooling() -> bool {
    true
}

fn default_epoch_tick_ms() -> u64 {
    1
}

fn default_max_wasm_stack_bytes() -> usize {
    limits::DEFAULT_MAX_WASM_STACK_BYTES
}

/// `$R1_CACHE_DIR/plugins`, else `$XDG_CACHE_HOME/r1/plugins`, else `$HOME/.cache/r1/plugins`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("R1_CACHE_DIR") {
        return Some(dir.join("plugins"));
    }
    let base = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|home| home.join(".cache")))?;
    Some(base.join("r1").join("plugins"))
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            threads: 0,
            epoch_tick_ms: default_epoch_tick_ms(),
            max_wasm_stack_bytes: default_max_wasm_stack_bytes(),
            cache_dir: default_cache_dir(),
            pooling: default_pooling(),
        }
    }
}

impl HostConfig {
    pub(crate) fn validate(&self) -> Result<(), PluginError> {
        let fail = |m: &str| Err(PluginError::Config(format!("plugin host: {m}")));
        if self.epoch_tick_ms == 0 || self.epoch_tick_ms > 1_000 {
            return fail("`epoch_tick_ms` must be 1..=1000");
        }
        if self.max_wasm_stack_bytes < 16 << 10 || self.max_wasm_stack_bytes > 64 << 20 {
            return fail("`max_wasm_stack_bytes` must be 16 KiB..=64 MiB");
        }
        Ok(())
    }

    /// The thread count with 0 resolved.
    pub fn resolved_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }
}

/// One reward plugin of a run, e.g.
///
/// ```toml
/// [[rewards.plugin]]
/// path = "plugins/math.wasm"
/// weight = 1.0
/// timeout_ms = 500
/// config = { tolerance = 1e-6 }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The `.wasm` module (or `.wat` text).
    pub path: PathBuf,
    /// The name metrics and errors use; default: the name the plugin reports.
    #[serde(default)]
    pub name: Option<String>,
    /// Weight of this reward in the sum of rewards.
    #[serde(default = "default_weight")]
    pub weight: f32,
    /// Wall-time budget of one evaluation (instantiation, init and score together).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Instruction budget of one evaluation (deterministic, unlike the timeout); none
    /// when absent.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Linear memory the plugin may grow to.
    #[serde(default = "default_max_memory_bytes")]
    pub max_memory_bytes: u64,
    /// Largest module the host agrees to compile.
    #[serde(default = "default_max_module_bytes")]
    pub max_module_bytes: u64,
    /// What the host agrees to compile below `max_module_bytes` (functions, their sizes,
    /// locals, globals, data segments), checked before compiling.
    #[serde(default)]
    pub module_limits: ModuleLimits,
    /// Handed to the plugin's `r1_init` as JSON text.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

fn default_weight() -> f32 {
    1.0
}

fn default_timeout_ms() -> u64 {
    limits::DEFAULT_TIMEOUT_MS
}

fn default_max_memory_bytes() -> u64 {
    limits::DEFAULT_MAX_MEMORY_BYTES
}

fn default_max_module_bytes() -> u64 {
    limits::DEFAULT_MAX_MODULE_BYTES
}

/// Bounds on what compiling a module costs, checked by reading its sections before
/// anything is compiled (`module_scan.rs`). Compile time and memory grow with the number
/// of functions, with the code's size and faster than linearly with one function's size
/// — a 4 MB module of 400,000 empty functions took 15 s and 2.2 GB — so a module well
/// under `max_module_bytes` can still cost minutes and gigabytes. Measured on 2 cores:
/// 50,000 empty functions compile in 4.4 s; one function of loads, stores and branches in
/// 0.16 s at 64 KiB, 1.3 s at 256 KiB, 16 s at 1 MiB; the math-accuracy example (451
/// functions, 105 KB of code, its largest body 6 KB, 35 locals, 3 globals, 2 data
/// segments) in 0.23 s. The defaults sit 20× or more above the Rust examples and keep
/// one compile to a few seconds; raise them for a trusted module that needs more. In a
/// run's TOML:
///
/// ```toml
/// plugin = { path = "big.wasm", module_limits = { max_functions = 100000 } }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModuleLimits {
    /// Functions the module defines (imports not counted).
    pub max_functions: u32,
    /// Bytes of one function body.
    pub max_function_bytes: u32,
    /// Bytes of the code section: every function body together.
    pub max_code_bytes: u64,
    /// Locals one function declares (besides its parameters).
    pub max_locals: u32,
    /// Globals the module defines.
    pub max_globals: u32,
    /// Data segments (each one is copied into memory at instantiation).
    pub max_data_segments: u32,
}

impl Default for ModuleLimits {
    fn default() -> Self {
        ModuleLimits {
            max_functions: 20_000,
            max_function_bytes: 128 << 10,
            max_code_bytes: 2 << 20,
            max_locals: 10_000,
            max_globals: 10_000,
            max_data_segments: 10_000,
        }
    }
}

impl ModuleLimits {
    /// Every limit must be positive (a zero would refuse every module).
    fn validate(&self) -> Result<(), String> {
        let limits = [
            ("max_functions", u64::from(self.max_functions)),
            ("max_function_bytes", u64::from(self.max_function_bytes)),
            ("max_code_bytes", self.max_code_bytes),
            ("max_locals", u64::from(self.max_locals)),
            ("max_globals", u64::from(self.max_globals)),
            ("max_data_segments", u64::from(self.max_data_segments)),
        ];
        match limits.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(format!("`module_limits.{name}` must be positive")),
            None => Ok(()),
        }
    }
}

/// A wasm32 memory cannot exceed 4 GiB.
const WASM32_MEMORY_BYTES: u64 = 1 << 32;

impl PluginConfig {
    /// A config with every default for the module at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        PluginConfig {
            path: path.into(),
            name: None,
            weight: default_weight(),
            timeout_ms: default_timeout_ms(),
            fuel: None,
            max_memory_bytes: default_max_memory_bytes(),
            max_module_bytes: default_max_module_bytes(),
            module_limits: ModuleLimits::default(),
            config: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), PluginError> {
        let fail = |m: String| Err(PluginError::Config(format!("plugin `{}`: {m}", self.path.display())));
        if !self.weight.is_finite() {
            return fail(format!("`weight` must be finite, got {}", self.weight));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 3_600_000 {
            return fail(format!("`timeout_ms` must be 1..=3600000, got {}", self.timeout_ms));
        }
        if self.fuel == Some(0) {
            return fail("`fuel` must be positive (leave it out for no fuel limit)".into());
        }
        if self.max_memory_bytes < 64 << 10 || self.max_memory_bytes > WASM32_MEMORY_BYTES {
            return fail(format!(
                "`max_memory_bytes` must be 64 KiB..=4 GiB, got {}",
                self.max_memory_bytes
            ));
        }
        if self.max_module_bytes == 0 {
            return fail("`max_module_bytes` must be positive".into());
        }
        self.module_limits.validate().or_else(fail)?;
        if let Some(name) = &self.name
            && name.trim().is_empty()
        {
            return fail("`name` must not be empty".into());
        }
        Ok(())
    }

    /// The JSON text handed to `r1_init` (`null` when there is no config).
    pub(crate) fn init_json(&self) -> Vec<u8> {
        match &self.config {
            Some(value) => value.to_string().into_bytes(),
            None => b"null".to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_reads_toml_with_defaults() {
        let c: PluginConfig =
            toml::from_str("path = \"m.wasm\"\nconfig = { tolerance = 0.5, strict = true }\n").unwrap();
        assert_eq!(c.timeout_ms, limits::DEFAULT_TIMEOUT_MS);
        assert_eq!(c.max_memory_bytes, limits::DEFAULT_MAX_MEMORY_BYTES);
        assert_eq!(c.fuel, None);
        assert_eq!(c.weight, 1.0);
        assert_eq!(
            String::from_utf8(c.init_json()).unwrap(),
            r#"{"strict":true,"tolerance":0.5}"#
        );
    }

    #[test]
    fn module_limits_read_from_toml_keep_the_defaults_they_do_not_set() {
        let c: PluginConfig = toml::from_str("path = \"m.wasm\"\nmodule_limits = { max_functions = 7 }\n").unwrap();
        assert_eq!(c.module_limits.max_functions, 7);
        assert_eq!(c.module_limits.max_code_bytes, ModuleLimits::default().max_code_bytes);
        let err = toml::from_str::<PluginConfig>("path = \"m.wasm\"\nmodule_limits = { functions = 7 }\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `functions`"), "{err}");
    }

    #[test]
    fn unknown_plugin_config_key_is_named() {
        let err = toml::from_str::<PluginConfig>("path = \"m.wasm\"\ntimeout = 5\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
    }

    #[test]
    fn out_of_range_limits_are_rejected() {
        let mut c = PluginConfig::new("m.wasm");
        c.max_memory_bytes = 5 << 30;
        assert!(matches!(c.validate(), Err(PluginError::Config(m)) if m.contains("max_memory_bytes")));
        let mut c = PluginConfig::new("m.wasm");
        c.timeout_ms = 0;
        assert!(c.validate().is_err());
        let mut c = PluginConfig::new("m.wasm");
        c.module_limits.max_functions = 0;
        assert!(matches!(c.validate(), Err(PluginError::Config(m)) if m.contains("module_limits.max_functions")));
        assert!(PluginConfig::new("m.wasm").validate().is_ok());
    }

    #[test]
    fn host_config_rejects_unknown_keys_and_bad_ticks() {
        assert!(toml::from_str::<HostConfig>("threadz = 2").is_err());
        let c: HostConfig = toml::from_str("threads = 2\nepoch_tick_ms = 0").unwrap();
        assert!(c.validate().is_err());
    }
}
