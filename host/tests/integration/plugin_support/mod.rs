//! Shared by the plugin test files: the real example plugins (built once per test run
//! with cargo for wasm32-unknown-unknown), a host with a test cache directory, samples,
//! and the hostile-plugin template.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use r1_core::reward::Sample;
use r1_host::plugin::{HostConfig, PluginConfig, PluginHost, PluginReward};

/// Paths of the example plugins.
pub struct Examples {
    pub arithmetic: PathBuf,
    pub think_format: PathBuf,
    pub math_accuracy: PathBuf,
    pub panicking: PathBuf,
    pub contains_reference_wat: PathBuf,
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples")
}

/// Builds `plugins/examples` (release, wasm32-unknown-unknown) into this test run's
/// temp target dir, once per test binary; cargo makes the later builds no-ops.
pub fn examples() -> &'static Examples {
    static EXAMPLES: OnceLock<Examples> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-examples");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .current_dir(examples_dir())
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "--target-dir",
            ])
            .arg(&target_dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .expect("run cargo to build the example plugins");
        assert!(
            output.status.success(),
            "building the example plugins failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let wasm = |name: &str| {
            target_dir
                .join("wasm32-unknown-unknown/release")
                .join(format!("{name}.wasm"))
        };
        Examples {
            arithmetic: wasm("r1_plugin_arithmetic"),
            think_format: wasm("r1_plugin_think_format"),
            math_accuracy: wasm("r1_plugin_math_accuracy"),
            panicking: wasm("r1_plugin_panicking"),
            contains_reference_wat: examples_dir().join("contains-reference-wat/contains_reference.wat"),
        }
    })
}

/// A host with `threads` scoring threads and a module cache under the test temp dir.
pub fn host(threads: usize) -> PluginHost {
    let config = HostConfig {
        threads,
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-module-cache")),
        ..HostConfig::default()
    };
    PluginHost::new(config).expect("plugin host")
}

pub fn sample(prompt: &str, completion: &str, reference: Option<&str>) -> Sample {
    Sample {
        prompt: prompt.to_string(),
        completion: completion.to_string(),
        reference: reference.map(str::to_string),
        metadata: Vec::new(),
    }
}

pub fn load(host: &PluginHost, path: &Path) -> PluginReward {
    host.load(&PluginConfig::new(path))
        .unwrap_or_else(|e| panic!("load {}: {e}", path.display()))
}

/// The parts of the hostile-plugin template (`tests/hostile/plugin_template.wat`).
pub struct WatPlugin {
    pub imports: String,
    pub memory: String,
    pub alloc: String,
    pub score: String,
    pub extra: String,
}

pub const GOOD_ALLOC: &str = r#"(func (export "r1_alloc") (param i32) (result i32) (i32.const 8192))"#;

/// Answers 1.0 for every sample: reads the count byte, writes the response at 4096.
pub const GOOD_SCORE: &str = r#"
  (func (export "r1_score") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $i i32) (local $o i32)
    (local.set $n (i32.load8_u (local.get $ptr)))
    (i32.store8 (i32.const 4096) (local.get $n))
    (local.set $o (i32.const 4097))
    (block $done (loop $each
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store8 (local.get $o) (i32.const 0))
      (f32.store align=1 (i32.add (local.get $o) (i32.const 1)) (f32.const 1))
      (local.set $o (i32.add (local.get $o) (i32.const 5)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $each)))
    (i32.store8 (local.get $o) (i32.const 0))
    (i64.or (i64.const 4096)
            (i64.shl (i64.extend_i32_u (i32.sub (local.get $o) (i32.const 4095))) (i64.const 32))))"#;

impl Default for WatPlugin {
    fn default() -> Self {
        WatPlugin {
            imports: String::new(),
            memory: r#"(memory (export "memory") 1)"#.to_string(),
            alloc: GOOD_ALLOC.to_string(),
            score: GOOD_SCORE.to_string(),
            extra: String::new(),
        }
    }
}

impl WatPlugin {
    /// A plugin whose `r1_score` returns the bytes of `response` (written by a data
    /// segment at 4096), whatever the request.
    pub fn returning(response: &[u8]) -> Self {
        let escaped: String = response.iter().map(|b| format!("\\{b:02x}")).collect();
        WatPlugin {
            score: format!(
                r#"(func (export "r1_score") (param i32 i32) (result i64)
                     (i64.or (i64.const 4096) (i64.shl (i64.const {}) (i64.const 32))))"#,
                response.len()
            ),
            extra: format!(r#"(data (i32.const 4096) "{escaped}")"#),
            ..WatPlugin::default()
        }
    }

    pub fn text(&self) -> String {
        include_str!("../hostile/plugin_template.wat")
            .replace("{imports}", &self.imports)
            .replace("{memory}", &self.memory)
            .replace("{alloc}", &self.alloc)
            .replace("{score}", &self.score)
            .replace("{extra}", &self.extra)
    }

    pub fn wasm(&self) -> Vec<u8> {
        wat::parse_str(self.text()).unwrap_or_else(|e| panic!("test plugin does not assemble: {e}\n{}", self.text()))
    }
}

/// A test plugin config: a short timeout so attacks that loop end quickly.
pub fn test_config(name: &str) -> PluginConfig {
    PluginConfig {
        name: Some(name.to_string()),
        timeout_ms: 200,
        ..PluginConfig::new(format!("{name}.wasm"))
    }
}

pub fn load_wat(
    host: &PluginHost,
    plugin: &WatPlugin,
    name: &str,
) -> Result<PluginReward, r1_host::plugin::PluginError> {
    host.load_bytes(&plugin.wasm(), &test_config(name))
}
