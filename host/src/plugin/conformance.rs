//! Checks a compiled module against ABI v1 before anything of it runs: the only imports
//! are the host's own `r1` functions with the right types, and the required exports
//! exist with the right types. Errors name the import or export.

use r1_core::plugin_abi::{export, import};
use wasmtime::{ExternType, FuncType, Module};

use super::error::PluginError;

/// Bytes in a wasm page.
const PAGE_BYTES: u64 = 64 << 10;

/// `(params) -> results` of a function type, e.g. `(i32, i32) -> i64`.
pub(crate) fn signature(ty: &FuncType) -> String {
    let params: Vec<String> = ty.params().map(|t| t.to_string()).collect();
    let results: Vec<String> = ty.results().map(|t| t.to_string()).collect();
    let results = match results.len() {
        0 => "()".to_string(),
        1 => results[0].clone(),
        _ => format!("({})", results.join(", ")),
    };
    format!("({}) -> {results}", params.join(", "))
}

fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => format!("a function {}", signature(f)),
        ExternType::Global(_) => "a global".to_string(),
        ExternType::Table(_) => "a table".to_string(),
        ExternType::Memory(_) => "a memory".to_string(),
        ExternType::Tag(_) => "a tag".to_string(),
    }
}

/// A memory whose declared minimum (bytes) is over the plugin's `max_memory_bytes`.
pub(crate) fn memory_over_limit(plugin: &str, minimum: u64, max_memory_bytes: u64) -> PluginError {
    PluginError::Memory {
        plugin: plugin.to_string(),
        detail: format!(
            "memory starts at {minimum} bytes, over the limit of {max_memory_bytes} bytes (`max_memory_bytes`)"
        ),
    }
}

/// The signature each host import must have.
fn import_signature(name: &str) -> Option<&'static str> {
    match name {
        import::LOG => Some("(i32, i32) -> ()"),
        import::SAMPLE => Some("(i32) -> ()"),
        _ => None,
    }
}

/// Required and optional function exports with their signatures.
const FUNCTION_EXPORTS: [(&str, &str, bool); 5] = [
    (export::ABI_VERSION, "() -> i32", true),
    (export::ALLOC, "(i32) -> i32", true),
    (export::INFO, "() -> i64", true),
    (export::INIT, "(i32, i32) -> i32", false),
    (export::SCORE, "(i32, i32) -> i64", true),
];

/// What the check learned about the module.
pub(crate) struct Conformance {
    pub has_init: bool,
}

pub(crate) fn check(plugin: &str, module: &Module, max_memory_bytes: u64) -> Result<Conformance, PluginError> {
    for imp in module.imports() {
        let (module_name, name) = (imp.module(), imp.name());
        let expected = (module_name == import::MODULE)
            .then(|| import_signature(name))
            .flatten();
        let Some(expected) = expected else {
            return Err(PluginError::ForbiddenImport {
                plugin: plugin.to_string(),
                module: module_name.to_string(),
                name: name.to_string(),
            });
        };
        let found = match imp.ty() {
            ExternType::Func(f) => signature(&f),
            other => describe(&other),
        };
        if found != expected {
            return Err(PluginError::ImportType {
                plugin: plugin.to_string(),
                module: module_name.to_string(),
                name: name.to_string(),
                found,
                expected: format!("a function {expected}"),
            });
        }
    }

    match module.get_export(export::MEMORY) {
        Some(ExternType::Memory(memory)) => {
            if memory.is_64() || memory.is_shared() {
                return Err(PluginError::ExportType {
                    plugin: plugin.to_string(),
                    name: export::MEMORY,
                    found: "a 64-bit or shared memory".to_string(),
                    expected: "a 32-bit, unshared memory".to_string(),
                });
            }
            let minimum = memory.minimum().saturating_mul(PAGE_BYTES);
            if minimum > max_memory_bytes {
                return Err(memory_over_limit(plugin, minimum, max_memory_bytes));
            }
        }
        Some(other) => {
            return Err(PluginError::ExportType {
                plugin: plugin.to_string(),
                name: export::MEMORY,
                found: describe(&other),
                expected: "a memory".to_string(),
            });
        }
        None => {
            return Err(PluginError::MissingExport {
                plugin: plugin.to_string(),
                name: export::MEMORY,
                expected: "a memory".to_string(),
            });
        }
    }

    let mut has_init = false;
    for (name, expected, required) in FUNCTION_EXPORTS {
        match module.get_export(name) {
            Some(ExternType::Func(f)) if signature(&f) == expected => has_init |= name == export::INIT,
            Some(other) => {
                return Err(PluginError::ExportType {
                    plugin: plugin.to_string(),
                    name,
                    found: describe(&other),
                    expected: format!("a function {expected}"),
                });
            }
            None if required => {
                return Err(PluginError::MissingExport {
                    plugin: plugin.to_string(),
                    name,
                    expected: format!("a function {expected}"),
                });
            }
            None => {}
        }
    }
    Ok(Conformance { has_init })
}
