//! Errors of loading a plugin (reading, compiling, checking the ABI, the first
//! instantiation). Errors of scoring are `r1_core::reward::RewardError`, like any reward's.

use std::path::PathBuf;

use r1_core::reward::RewardError;

/// Why a plugin could not be loaded. Every variant names the plugin (its file until it
/// has told its name).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Config(String),
    #[error("plugin host: {0}")]
    Host(String),
    #[error("plugin `{plugin}`: cannot read {}: {source}", path.display())]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin `{plugin}`: module is {size} bytes, over the limit of {max} bytes (`max_module_bytes`)")]
    ModuleTooLarge { plugin: String, size: u64, max: u64 },
    /// A module over one of the plugin's `module_limits`, found before compiling.
    #[error("plugin `{plugin}`: {what}, over the limit of {max} (`module_limits.{limit}`)")]
    ModuleOverLimit {
        plugin: String,
        /// The key in `module_limits`.
        limit: &'static str,
        /// What the module has (a count or bytes).
        value: u64,
        max: u64,
        /// The value in words, e.g. "the module defines 400000 functions".
        what: String,
    },
    /// Malformed or truncated bytes, or a module over the host's fixed limits.
    #[error("plugin `{plugin}`: cannot compile the module: {detail}")]
    InvalidModule { plugin: String, detail: String },
    #[error(
        "plugin `{plugin}`: imports `{module}::{name}`, but a plugin may only import `r1::log` and `r1::sample` \
         (no WASI, no other host functions)"
    )]
    ForbiddenImport {
        plugin: String,
        module: String,
        name: String,
    },
    #[error("plugin `{plugin}`: import `{module}::{name}` has type {found}, expected {expected}")]
    ImportType {
        plugin: String,
        module: String,
        name: String,
        found: String,
        expected: String,
    },
    #[error("plugin `{plugin}`: missing export `{name}` ({expected})")]
    MissingExport {
        plugin: String,
        name: &'static str,
        expected: String,
    },
    #[error("plugin `{plugin}`: export `{name}` is {found}, expected {expected}")]
    ExportType {
        plugin: String,
        name: &'static str,
        found: String,
        expected: String,
    },
    #[error("plugin `{plugin}`: {detail}")]
    Memory { plugin: String, detail: String },
    #[error("plugin `{plugin}`: written for ABI version {found}, this host speaks version {expected}")]
    AbiVersion { plugin: String, found: i64, expected: u32 },
    #[error("plugin `{plugin}`: rejected its config: {reason}")]
    ConfigRejected { plugin: String, reason: String },
    /// The plugin failed while being probed at load (instantiation, `r1_info`, `r1_init`).
    #[error("{0} (while loading)")]
    Probe(RewardError),
    #[error("plugin `{plugin}`: {detail}")]
    Link { plugin: String, detail: String },
}

impl PluginError {
    /// The same failure as a reward error, for callers that only speak `Reward`.
    pub fn into_reward_error(self, reward: &str) -> RewardError {
        use r1_core::reward::RewardErrorKind;
        match self {
            PluginError::Probe(e) => e,
            PluginError::Config(m) => RewardError {
                reward: reward.to_string(),
                sample: None,
                kind: RewardErrorKind::Config(m),
            },
            other => RewardError {
                reward: reward.to_string(),
                sample: None,
                kind: RewardErrorKind::Other(other.to_string()),
            },
        }
    }
}
