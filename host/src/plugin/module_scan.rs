//! Reads a module's sections with `wasmparser` before wasmtime compiles it and refuses one
//! over the plugin's [`ModuleLimits`]: what compiling costs (functions, their sizes and
//! locals) and what instantiating copies (globals, data segments) — and one whose memory
//! starts larger than `max_memory_bytes`, which the engine (its memory reservation is that
//! cap) could not hold. The scan is linear in the module's bytes and stops at the first
//! limit crossed; a count is checked where its section starts, before any entry of it is
//! read.

use wasmparser::{Parser, Payload};

use super::config::ModuleLimits;
use super::conformance::memory_over_limit;
use super::error::PluginError;

/// Checks `bytes` against `limits` and the memory cap. Malformed bytes are an
/// `InvalidModule` (what compiling them would have said, sooner).
pub(crate) fn check_module(
    plugin: &str,
    bytes: &[u8],
    limits: &ModuleLimits,
    max_memory_bytes: u64,
) -> Result<(), PluginError> {
    let over = |limit: &'static str, value: u64, max: u64, what: String| {
        if value > max {
            Err(PluginError::ModuleOverLimit {
                plugin: plugin.to_string(),
                limit,
                value,
                max,
                what,
            })
        } else {
            Ok(())
        }
    };
    let invalid = |e: wasmparser::BinaryReaderError| PluginError::InvalidModule {
        plugin: plugin.to_string(),
        detail: e.to_string(),
    };
    let mut body_index = 0u64;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::FunctionSection(functions) => {
                let n = u64::from(functions.count());
                let max = u64::from(limits.max_functions);
                over("max_functions", n, max, format!("the module defines {n} functions"))?;
            }
            Payload::CodeSectionStart { count, size, .. } => {
                let n = u64::from(count);
                let max = u64::from(limits.max_functions);
                over("max_functions", n, max, format!("the module defines {n} functions"))?;
                let size = u64::from(size);
                let what = format!("the code section is {size} bytes");
                over("max_code_bytes", size, limits.max_code_bytes, what)?;
            }
            Payload::CodeSectionEntry(body) => {
                let size = body.range().len() as u64;
                let what = format!("function body {body_index} is {size} bytes");
                over("max_function_bytes", size, u64::from(limits.max_function_bytes), what)?;
                let mut locals = body.get_locals_reader().map_err(invalid)?;
                let mut declared = 0u64;
                for _ in 0..locals.get_count() {
                    let (n, _) = locals.read().map_err(invalid)?;
                    declared += u64::from(n);
                    let what = format!("function body {body_index} declares {declared} locals");
                    over("max_locals", declared, u64::from(limits.max_locals), what)?;
                }
                body_index += 1;
            }
            Payload::MemorySection(memories) => {
                for memory in memories {
                    let memory = memory.map_err(invalid)?;
                    let page_bytes = 1u64 << memory.page_size_log2.unwrap_or(16).min(16);
                    let minimum = memory.initial.saturating_mul(page_bytes);
                    if minimum > max_memory_bytes {
                        return Err(memory_over_limit(plugin, minimum, max_memory_bytes));
                    }
                }
            }
            Payload::GlobalSection(globals) => {
                let n = u64::from(globals.count());
                let what = format!("the module defines {n} globals");
                over("max_globals", n, u64::from(limits.max_globals), what)?;
            }
            Payload::DataSection(data) => {
                let n = u64::from(data.count());
                let what = format!("the module has {n} data segments");
                over("max_data_segments", n, u64::from(limits.max_data_segments), what)?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wasm(text: &str) -> Vec<u8> {
        wat::parse_str(text).expect("test module assembles")
    }

    fn refusal(text: &str, limits: &ModuleLimits) -> (&'static str, u64, String) {
        match check_module("m", &wasm(text), limits, 64 << 20) {
            Err(e @ PluginError::ModuleOverLimit { limit, value, .. }) => (limit, value, e.to_string()),
            other => panic!("expected a module limit, got {other:?}"),
        }
    }

    #[test]
    fn a_module_within_the_limits_passes() {
        let text = "(module (global i32 (i32.const 0)) (memory 1) (data (i32.const 0) \"x\")
                    (func (local i32 i64) (nop)) (func))";
        assert!(check_module("m", &wasm(text), &ModuleLimits::default(), 64 << 20).is_ok());
    }

    #[test]
    fn each_limit_is_named_with_the_value() {
        let base = ModuleLimits::default;
        let (limit, value, message) = refusal(
            "(module (func) (func) (func))",
            &ModuleLimits {
                max_functions: 2,
                ..base()
            },
        );
        assert_eq!((limit, value), ("max_functions", 3));
        assert_eq!(
            message,
            "plugin `m`: the module defines 3 functions, over the limit of 2 (`module_limits.max_functions`)"
        );
        let (limit, value, _) = refusal(
            "(module (func (local i32 i32) (local i64 f32 f64)))",
            &ModuleLimits {
                max_locals: 4,
                ..base()
            },
        );
        assert_eq!((limit, value), ("max_locals", 5));
        let (limit, _, message) = refusal(
            "(module (func) (func (drop (i32.add (i32.const 1) (i32.const 2)))))",
            &ModuleLimits {
                max_function_bytes: 4,
                ..base()
            },
        );
        assert_eq!(limit, "max_function_bytes");
        assert!(message.contains("function body 1 is"), "{message}");
        let (limit, _, _) = refusal(
            "(module (func) (func))",
            &ModuleLimits {
                max_code_bytes: 3,
                ..base()
            },
        );
        assert_eq!(limit, "max_code_bytes");
        let (limit, value, _) = refusal(
            "(module (global i32 (i32.const 0)) (global i32 (i32.const 1)))",
            &ModuleLimits {
                max_globals: 1,
                ..base()
            },
        );
        assert_eq!((limit, value), ("max_globals", 2));
        let (limit, value, _) = refusal(
            "(module (memory 1) (data (i32.const 0) \"a\") (data (i32.const 1) \"b\"))",
            &ModuleLimits {
                max_data_segments: 1,
                ..base()
            },
        );
        assert_eq!((limit, value), ("max_data_segments", 2));
    }

    #[test]
    fn a_memory_starting_over_the_cap_is_refused_before_compiling() {
        let bytes = wasm("(module (memory 3))");
        assert!(check_module("m", &bytes, &ModuleLimits::default(), 3 << 16).is_ok());
        match check_module("m", &bytes, &ModuleLimits::default(), (3 << 16) - 1) {
            Err(PluginError::Memory { detail, .. }) => assert!(detail.contains("starts at 196608 bytes"), "{detail}"),
            other => panic!("expected a memory error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_bytes_are_an_invalid_module() {
        for bytes in [&b"not wasm"[..], b"\0asm\x01\0\0\0\x0a\xff\xff"] {
            assert!(matches!(
                check_module("m", bytes, &ModuleLimits::default(), 64 << 20),
                Err(PluginError::InvalidModule { .. })
            ));
        }
    }
}
