//! Hostile plugins, one attack per test: each ends in a clean, typed error that names the
//! plugin and the cause, and the same host then scores with a good plugin as if nothing
//! happened. (After wasmtime's tests/all/limits.rs, fuel.rs, epoch_interruption.rs.)

use crate::plugin_support;

use plugin_support::{WatPlugin, host, load_wat, sample, test_config};
use r1_core::reward::{Reward, RewardError, RewardErrorKind, Score};
use r1_host::plugin::{HostConfig, ModuleLimits, PluginConfig, PluginError, PluginHost};

/// The attack did not take the host down: a good plugin loads and scores on it.
fn assert_next_good_call_succeeds(host: &PluginHost) {
    let good = load_wat(host, &WatPlugin::default(), "good").expect("good plugin loads");
    let group = [sample("a", "b", None), sample("c", "d", Some("e"))];
    assert_eq!(
        good.score(&group).expect("good plugin scores"),
        vec![Score::Value(1.0); 2]
    );
}

fn group(n: usize) -> Vec<r1_core::reward::Sample> {
    (0..n)
        .map(|i| sample(&format!("What is {i}+1?"), &format!("{}", i + 1), None))
        .collect()
}

/// Loads `plugin` (which must load) and scores a group of `n`, returning the error.
fn score_error(host: &PluginHost, plugin: &WatPlugin, n: usize) -> RewardError {
    let reward = load_wat(host, plugin, "hostile").expect("hostile plugin loads");
    let error = reward.score(&group(n)).expect_err("the attack must fail");
    assert_eq!(error.reward, "hostile");
    // The store was dropped: the same plugin fails the same way again, no leaked state.
    let again = reward.score(&group(n)).expect_err("the attack must fail again");
    assert_eq!(again.kind, error.kind);
    error
}

fn score_wat(body: &str) -> WatPlugin {
    WatPlugin {
        imports: r#"(import "r1" "sample" (func $sample (param i32)))"#.to_string(),
        score: format!(r#"(func (export "r1_score") (param $ptr i32) (param $len i32) (result i64) {body})"#),
        ..WatPlugin::default()
    }
}

#[test]
fn infinite_loop_in_score_times_out() {
    let host = host(2);
    let plugin = score_wat("(call $sample (i32.const 1)) (loop $spin (br $spin)) (unreachable)");
    let error = score_error(&host, &plugin, 3);
    assert_eq!(error.kind, RewardErrorKind::Timeout);
    assert_eq!(error.sample, Some(1), "the sample the plugin announced");
    assert_eq!(error.to_string(), "reward `hostile` on sample 1: timed out");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn infinite_loop_in_start_function_times_out() {
    let host = host(2);
    let plugin = WatPlugin {
        extra: "(func $spin (loop $l (br $l))) (start $spin)".to_string(),
        ..WatPlugin::default()
    };
    match load_wat(&host, &plugin, "hostile") {
        Err(PluginError::Probe(e)) => {
            assert_eq!(e.kind, RewardErrorKind::Timeout);
            assert_eq!(e.reward, "hostile");
        }
        other => panic!("expected a timeout while loading, got {other:?}"),
    }
    assert_next_good_call_succeeds(&host);
}

#[test]
fn infinite_loop_runs_out_of_fuel_when_fuel_is_set() {
    let host = host(2);
    let plugin = score_wat("(loop $spin (br $spin)) (unreachable)");
    let config = PluginConfig {
        fuel: Some(1_000_000),
        timeout_ms: 60_000,
        ..test_config("hostile")
    };
    let reward = host.load_bytes(&plugin.wasm(), &config).expect("loads");
    let error = reward.score(&group(1)).expect_err("runs out of fuel");
    assert_eq!(error.kind, RewardErrorKind::OutOfFuel);
    assert_eq!(error.sample, Some(0));
    assert_next_good_call_succeeds(&host);
}

#[test]
fn memory_bomb_grow_loop_hits_the_memory_limit() {
    let host = host(2);
    let plugin = score_wat("(loop $grow (drop (memory.grow (i32.const 16))) (br $grow)) (unreachable)");
    let config = PluginConfig {
        max_memory_bytes: 4 << 20,
        ..test_config("hostile")
    };
    let reward = host.load_bytes(&plugin.wasm(), &config).expect("loads");
    let error = reward.score(&group(2)).expect_err("hits the limit");
    assert_eq!(error.kind, RewardErrorKind::MemoryLimit);
    assert_next_good_call_succeeds(&host);
}

#[test]
fn memory_bomb_huge_declared_minimum_is_refused() {
    let host = host(2);
    // 60,000 pages = 3.7 GiB declared up front.
    let plugin = WatPlugin {
        memory: r#"(memory (export "memory") 60000)"#.to_string(),
        ..WatPlugin::default()
    };
    match load_wat(&host, &plugin, "hostile") {
        Err(PluginError::Memory { plugin, detail }) => {
            assert_eq!(plugin, "hostile");
            assert!(detail.contains("3932160000 bytes"), "{detail}");
        }
        other => panic!("expected a memory error, got {other:?}"),
    }
    assert_next_good_call_succeeds(&host);
}

#[test]
fn huge_declared_table_is_refused() {
    let plugin = WatPlugin {
        extra: "(table 10000000 funcref)".to_string(),
        ..WatPlugin::default()
    };
    // Pooled slots have a fixed table size, so the module is refused when compiled...
    let pooled = host(2);
    match load_wat(&pooled, &plugin, "hostile") {
        Err(PluginError::InvalidModule { detail, .. }) => {
            assert!(detail.contains("exceeds the limit of 100000"), "{detail}")
        }
        other => panic!("expected the table to be refused, got {other:?}"),
    }
    assert_next_good_call_succeeds(&pooled);
    // ...and without pooling the limiter refuses it when instantiated.
    let config = HostConfig {
        pooling: false,
        ..pooled.config().clone()
    };
    let on_demand = PluginHost::new(config).expect("host");
    match load_wat(&on_demand, &plugin, "hostile") {
        Err(PluginError::Probe(e)) => assert_eq!(e.kind, RewardErrorKind::MemoryLimit),
        other => panic!("expected the table to hit the limit, got {other:?}"),
    }
    assert_next_good_call_succeeds(&on_demand);
}

#[test]
fn huge_memory_fill_traps_out_of_bounds() {
    let host = host(2);
    let plugin = score_wat("(memory.fill (i32.const 0) (i32.const 0x55) (i32.const -1)) (unreachable)");
    let error = score_error(&host, &plugin, 1);
    match &error.kind {
        RewardErrorKind::Trap(m) => assert!(m.contains("out of bounds memory access"), "{m}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_next_good_call_succeeds(&host);
}

#[test]
fn deep_recursion_overflows_the_stack() {
    let host = host(2);
    let plugin = WatPlugin {
        extra: "(func $down (param i32) (result i32) (call $down (i32.add (local.get 0) (i32.const 1))))".to_string(),
        ..score_wat("(drop (call $down (i32.const 0))) (unreachable)")
    };
    let error = score_error(&host, &plugin, 2);
    assert_eq!(error.kind, RewardErrorKind::StackOverflow);
    assert_next_good_call_succeeds(&host);
}

fn assert_bad_output(error: &RewardError, needle: &str) {
    match &error.kind {
        RewardErrorKind::BadOutput(m) => assert!(m.contains(needle), "`{m}` should mention `{needle}`"),
        other => panic!("expected bad output ({needle}), got {other:?}"),
    }
}

#[test]
fn output_length_beyond_memory_is_bad_output() {
    let host = host(2);
    // 100 bytes from 65,500 in a 65,536-byte memory.
    let plugin = score_wat("(i64.or (i64.const 65500) (i64.shl (i64.const 100) (i64.const 32)))");
    let error = score_error(&host, &plugin, 1);
    assert_bad_output(&error, "outside the plugin's memory of 65536 bytes");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn output_pointer_plus_length_that_overflows_is_bad_output() {
    let host = host(2);
    let plugin = score_wat("(i64.const -1)"); // pointer 0xffffffff, length 0xffffffff
    let error = score_error(&host, &plugin, 1);
    assert_bad_output(&error, "r1_score result");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn allocator_returning_zero_is_bad_output() {
    let host = host(2);
    let plugin = WatPlugin {
        alloc: r#"(func (export "r1_alloc") (param i32) (result i32) (i32.const 0))"#.to_string(),
        ..WatPlugin::default()
    };
    let error = score_error(&host, &plugin, 1);
    assert_bad_output(&error, "returned 0");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn allocator_returning_out_of_bounds_pointer_is_bad_output() {
    let host = host(2);
    let plugin = WatPlugin {
        alloc: r#"(func (export "r1_alloc") (param i32) (result i32) (i32.const 65530))"#.to_string(),
        ..WatPlugin::default()
    };
    let error = score_error(&host, &plugin, 2);
    assert_bad_output(&error, "outside the plugin's memory");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn invalid_postcard_output_is_bad_output() {
    let host = host(2);
    // A varint that never ends.
    let error = score_error(&host, &WatPlugin::returning(&[0xff; 12]), 1);
    assert_bad_output(&error, "not valid postcard");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn wrong_number_of_scores_is_bad_output() {
    let host = host(2);
    // Two scores and no diagnostics, for a group of three.
    let plugin = WatPlugin::returning(&[2, 0, 0, 0, 0x80, 0x3f, 1, 0]);
    let error = score_error(&host, &plugin, 3);
    assert_bad_output(&error, "returned 2 scores for 3 samples");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn nan_score_is_bad_output_naming_the_sample() {
    let host = host(2);
    // [1.0, NaN], no diagnostics.
    let plugin = WatPlugin::returning(&[2, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0x7f, 0]);
    let error = score_error(&host, &plugin, 2);
    assert_bad_output(&error, "score NaN is not finite");
    assert_eq!(error.sample, Some(1));
    assert_next_good_call_succeeds(&host);
}

#[test]
fn infinite_score_is_bad_output_naming_the_sample() {
    let host = host(2);
    // [+inf], no diagnostics.
    let plugin = WatPlugin::returning(&[1, 0, 0, 0, 0x80, 0x7f, 0]);
    let error = score_error(&host, &plugin, 1);
    assert_bad_output(&error, "score inf is not finite");
    assert_eq!(error.sample, Some(0));
    assert_next_good_call_succeeds(&host);
}

#[test]
fn invalid_utf8_in_diagnostics_is_bad_output() {
    let host = host(2);
    // [1.0], one diagnostic on no sample whose message is the byte 0xff.
    let plugin = WatPlugin::returning(&[1, 0, 0, 0, 0x80, 0x3f, 1, 0, 1, 0xff]);
    let error = score_error(&host, &plugin, 1);
    assert_bad_output(&error, "not valid postcard");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn diagnostic_naming_a_sample_outside_the_group_is_bad_output() {
    let host = host(2);
    // [1.0], one diagnostic on sample 7 ("x").
    let plugin = WatPlugin::returning(&[1, 0, 0, 0, 0x80, 0x3f, 1, 1, 7, 1, b'x']);
    let error = score_error(&host, &plugin, 1);
    assert_bad_output(&error, "names sample 7 of a group of 1");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn trap_after_partial_diagnostics_reports_what_was_logged() {
    let host = host(2);
    let plugin = WatPlugin {
        imports: r#"(import "r1" "log" (func $log (param i32 i32)))
                    (import "r1" "sample" (func $sample (param i32)))"#
            .to_string(),
        extra: r#"(data (i32.const 1024) "checked sample 0") (data (i32.const 1100) "sample 1 looks odd")"#.to_string(),
        score: r#"(func (export "r1_score") (param i32 i32) (result i64)
                    (call $sample (i32.const 0)) (call $log (i32.const 1024) (i32.const 16))
                    (call $sample (i32.const 1)) (call $log (i32.const 1100) (i32.const 18))
                    (unreachable))"#
            .to_string(),
        ..WatPlugin::default()
    };
    let error = score_error(&host, &plugin, 2);
    assert_eq!(error.sample, Some(1));
    match &error.kind {
        RewardErrorKind::Trap(m) => {
            assert!(m.contains("wasm `unreachable` instruction executed"), "{m}");
            assert!(m.contains("plugin log: checked sample 0 | sample 1 looks odd"), "{m}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_next_good_call_succeeds(&host);
}

#[test]
fn log_with_pointer_outside_memory_is_bad_output() {
    let host = host(2);
    let plugin = WatPlugin {
        imports: r#"(import "r1" "log" (func $log (param i32 i32)))"#.to_string(),
        score: r#"(func (export "r1_score") (param i32 i32) (result i64)
                    (call $log (i32.const 65000) (i32.const -1)) (unreachable))"#
            .to_string(),
        ..WatPlugin::default()
    };
    let error = score_error(&host, &plugin, 1);
    assert_bad_output(&error, "r1.log");
    assert_next_good_call_succeeds(&host);
}

fn assert_invalid_module(result: Result<r1_host::plugin::PluginReward, PluginError>) {
    match result {
        Err(PluginError::InvalidModule { plugin, detail }) => {
            assert_eq!(plugin, "hostile");
            assert!(!detail.is_empty());
        }
        other => panic!("expected an invalid-module error, got {other:?}"),
    }
}

#[test]
fn malformed_module_is_refused() {
    let host = host(2);
    assert_invalid_module(host.load_bytes(b"\0asm\x01\0\0\0\xff\xff\xff garbage", &test_config("hostile")));
    assert_invalid_module(host.load_bytes(b"this is not wasm at all", &test_config("hostile")));
    assert_next_good_call_succeeds(&host);
}

#[test]
fn truncated_module_is_refused() {
    let host = host(2);
    let wasm = WatPlugin::default().wasm();
    // (8 bytes would be the header alone: a valid, empty module.)
    for cut in [4, 7, 9, wasm.len() / 2, wasm.len() - 1] {
        assert_invalid_module(host.load_bytes(&wasm[..cut], &test_config("hostile")));
    }
    assert_next_good_call_succeeds(&host);
}

fn assert_forbidden_import(host: &PluginHost, import: &str, module: &str, name: &str) {
    let plugin = WatPlugin {
        imports: import.to_string(),
        ..WatPlugin::default()
    };
    match load_wat(host, &plugin, "hostile") {
        Err(e @ PluginError::ForbiddenImport { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&format!("`{module}::{name}`")), "{message}");
            assert!(message.starts_with("plugin `hostile`"), "{message}");
        }
        other => panic!("expected {module}::{name} to be refused, got {other:?}"),
    }
}

#[test]
fn wasi_fd_write_import_is_refused_by_name() {
    let host = host(2);
    let import = r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#;
    assert_forbidden_import(&host, import, "wasi_snapshot_preview1", "fd_write");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn wasi_path_open_import_is_refused_by_name() {
    let host = host(2);
    let import = r#"(import "wasi_snapshot_preview1" "path_open"
                      (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#;
    assert_forbidden_import(&host, import, "wasi_snapshot_preview1", "path_open");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn wasi_socket_imports_are_refused_by_name() {
    let host = host(2);
    for name in ["sock_accept", "sock_recv", "sock_send", "sock_shutdown"] {
        let import = format!(r#"(import "wasi_snapshot_preview1" "{name}" (func (param i32 i32 i32) (result i32)))"#);
        assert_forbidden_import(&host, &import, "wasi_snapshot_preview1", name);
    }
    assert_next_good_call_succeeds(&host);
}

#[test]
fn unknown_imports_are_refused_by_name() {
    let host = host(2);
    assert_forbidden_import(&host, r#"(import "env" "abort" (func (param i32)))"#, "env", "abort");
    assert_forbidden_import(&host, r#"(import "r1" "exec" (func (param i32 i32)))"#, "r1", "exec");
    assert_forbidden_import(&host, r#"(import "env" "memory" (memory 1))"#, "env", "memory");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn host_import_with_the_wrong_signature_is_refused() {
    let host = host(2);
    let plugin = WatPlugin {
        imports: r#"(import "r1" "log" (func (param i64)))"#.to_string(),
        ..WatPlugin::default()
    };
    match load_wat(&host, &plugin, "hostile") {
        Err(PluginError::ImportType { name, found, .. }) => {
            assert_eq!(name, "log");
            assert_eq!(found, "(i64) -> ()");
        }
        other => panic!("expected an import type error, got {other:?}"),
    }
    assert_next_good_call_succeeds(&host);
}

#[test]
fn oversized_module_is_refused_before_compiling() {
    let host = host(2);
    let config = PluginConfig {
        max_module_bytes: 1024,
        ..test_config("hostile")
    };
    // Not even valid wasm: the size check must come first.
    match host.load_bytes(&vec![0u8; 4096], &config) {
        Err(PluginError::ModuleTooLarge { size, max, .. }) => assert_eq!((size, max), (4096, 1024)),
        other => panic!("expected a size error, got {other:?}"),
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.wasm");
    std::fs::write(&path, vec![0u8; 4096]).expect("write");
    let config = PluginConfig {
        max_module_bytes: 1024,
        ..PluginConfig::new(&path)
    };
    assert!(matches!(
        host.load(&config),
        Err(PluginError::ModuleTooLarge { size: 4096, .. })
    ));
    assert_next_good_call_succeeds(&host);
}

/// A module of `functions` empty functions plus one body of `body_bytes` `nop`s: cheap to
/// make, and (for a real body of that size) costly to compile.
fn module_with(functions: u32, body_bytes: usize) -> Vec<u8> {
    use wasm_encoder::{CodeSection, Function, FunctionSection, Instruction, Module, TypeSection};
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut declared = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut empty = Function::new([]);
    empty.instruction(&Instruction::End);
    for _ in 0..functions {
        declared.function(0);
        code.function(&empty);
    }
    if body_bytes > 0 {
        let mut filler = Function::new([]);
        filler.raw(std::iter::repeat_n(0x01, body_bytes)); // `nop`
        filler.instruction(&Instruction::End);
        declared.function(0);
        code.function(&filler);
    }
    let mut module = Module::new();
    module.section(&types).section(&declared).section(&code);
    module.finish()
}

/// Loads `wasm`, which must be refused for `limit` within a second, and returns the message.
fn assert_refused_for(host: &PluginHost, wasm: &[u8], limit: &str) -> String {
    let started = std::time::Instant::now();
    let result = host.load_bytes(wasm, &test_config("hostile"));
    let elapsed = started.elapsed();
    match result {
        Err(e @ PluginError::ModuleOverLimit { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&format!("`module_limits.{limit}`")), "{message}");
            assert!(elapsed.as_secs_f64() < 1.0, "refused after {elapsed:?}");
            eprintln!("{limit}: refused in {elapsed:?}: {message}");
            message
        }
        other => panic!("expected {limit} to refuse the module, got {other:?}"),
    }
}

#[test]
fn module_of_400k_functions_is_refused_before_compiling() {
    let host = host(2);
    // 400,000 functions in 1.6 MB: compiling it took 15 s and 2.2 GB.
    let wasm = module_with(400_000, 0);
    let cap = test_config("hostile").max_module_bytes;
    assert!(
        (wasm.len() as u64) < cap,
        "{} bytes: under the module size cap",
        wasm.len()
    );
    let message = assert_refused_for(&host, &wasm, "max_functions");
    assert!(
        message.contains("the module defines 400000 functions, over the limit of 20000"),
        "{message}"
    );
    // The real example plugins are far below the default limits.
    let math = plugin_support::load(&host, &plugin_support::examples().math_accuracy);
    assert_eq!(math.name(), "math-accuracy");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn huge_function_body_is_refused_before_compiling() {
    let host = host(2);
    // One function of 1 MiB: compiling one of loads, stores and branches took 16 s.
    let message = assert_refused_for(&host, &module_with(1, 1 << 20), "max_function_bytes");
    assert!(message.contains("function body 1 is 1048578 bytes"), "{message}");
    assert_next_good_call_succeeds(&host);
}

#[test]
fn module_limits_can_be_raised_for_a_trusted_module() {
    let host = host(2);
    let config = PluginConfig {
        module_limits: ModuleLimits {
            max_functions: 3,
            ..ModuleLimits::default()
        },
        ..test_config("hostile")
    };
    // The template has 4 functions: one over a limit of 3.
    match host.load_bytes(&WatPlugin::default().wasm(), &config) {
        Err(PluginError::ModuleOverLimit { limit, value, max, .. }) => {
            assert_eq!((limit, value, max), ("max_functions", 4, 3))
        }
        other => panic!("expected the function limit, got {other:?}"),
    }
    let config = PluginConfig {
        module_limits: ModuleLimits {
            max_functions: 4,
            ..ModuleLimits::default()
        },
        ..config
    };
    assert!(host.load_bytes(&WatPlugin::default().wasm(), &config).is_ok());
}

#[test]
fn sample_index_outside_the_group_is_named_with_the_group_size() {
    let host = host(2);
    for (index, needle) in [
        (7, "r1.sample(7) names a sample outside the group of 3 samples"),
        (-1, "r1.sample(-1) names a sample outside the group of 3 samples"),
    ] {
        // Before the check, this timed out "on sample 7" of a group of 3.
        let plugin = score_wat(&format!(
            "(call $sample (i32.const {index})) (loop $spin (br $spin)) (unreachable)"
        ));
        let error = score_error(&host, &plugin, 3);
        assert_bad_output(&error, needle);
        assert_eq!(error.sample, None, "no sample of the group is to blame");
    }
    assert_next_good_call_succeeds(&host);
}

#[test]
fn wrong_export_signature_is_refused() {
    let host = host(2);
    let plugin = WatPlugin {
        score: r#"(func (export "r1_score") (param i32) (result i32) (i32.const 0))"#.to_string(),
        ..WatPlugin::default()
    };
    match load_wat(&host, &plugin, "hostile") {
        Err(e @ PluginError::ExportType { .. }) => assert_eq!(
            e.to_string(),
            "plugin `hostile`: export `r1_score` is a function (i32) -> i32, expected a function (i32, i32) -> i64"
        ),
        other => panic!("expected an export type error, got {other:?}"),
    }
    let plugin = WatPlugin {
        alloc: r#"(global (export "r1_alloc") i32 (i32.const 0))"#.to_string(),
        ..WatPlugin::default()
    };
    assert!(matches!(
        load_wat(&host, &plugin, "hostile"),
        Err(PluginError::ExportType { name: "r1_alloc", .. })
    ));
    assert_next_good_call_succeeds(&host);
}

#[test]
fn missing_exports_are_refused_by_name() {
    let host = host(2);
    let plugin = WatPlugin {
        alloc: String::new(),
        ..WatPlugin::default()
    };
    assert!(matches!(
        load_wat(&host, &plugin, "hostile"),
        Err(PluginError::MissingExport { name: "r1_alloc", .. })
    ));
    let plugin = WatPlugin {
        memory: "(memory 1)".to_string(),
        ..WatPlugin::default()
    };
    assert!(matches!(
        load_wat(&host, &plugin, "hostile"),
        Err(PluginError::MissingExport { name: "memory", .. })
    ));
    assert_next_good_call_succeeds(&host);
}

#[test]
fn wrong_abi_version_is_refused() {
    let host = host(2);
    let text = WatPlugin::default().text().replace(
        r#"(func (export "r1_abi_version") (result i32) (i32.const 1))"#,
        r#"(func (export "r1_abi_version") (result i32) (i32.const 2))"#,
    );
    let wasm = wat::parse_str(text).expect("assembles");
    match host.load_bytes(&wasm, &test_config("hostile")) {
        Err(PluginError::AbiVersion {
            found: 2, expected: 1, ..
        }) => {}
        other => panic!("expected an ABI version error, got {other:?}"),
    }
    assert_next_good_call_succeeds(&host);
}

#[test]
fn more_concurrent_evaluations_than_the_pool_allows_wait_their_turn() {
    let host = host(2);
    // Each evaluation spins ~10 million iterations (a few ms), then answers 1.0.
    let plugin = WatPlugin {
        extra: r#"(func $busy (local $i i32)
                    (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
                             (br_if $l (i32.lt_u (local.get $i) (i32.const 10000000)))))"#
            .to_string(),
        score: plugin_support::GOOD_SCORE.replace("(local.set $n", "(call $busy) (local.set $n"),
        ..WatPlugin::default()
    };
    let reward = load_wat(&host, &plugin, "slow").expect("loads");
    let callers = 12;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..callers)
            .map(|_| scope.spawn(|| (0..3).map(|_| reward.score(&group(2))).collect::<Vec<_>>()))
            .collect();
        for handle in handles {
            for result in handle.join().expect("caller thread") {
                assert_eq!(result.expect("every call succeeds"), vec![Score::Value(1.0); 2]);
            }
        }
    });
    // And through the pool: more groups than threads.
    let groups: Vec<_> = (0..16).map(|_| group(3)).collect();
    for result in host.score_groups(&reward, &groups) {
        assert_eq!(result.expect("every group succeeds"), vec![Score::Value(1.0); 3]);
    }
    let usage = host.evaluation_usage();
    assert_eq!(usage.capacity, 2);
    assert!(usage.peak <= 2, "at most 2 evaluations at once, saw {}", usage.peak);
    assert!(usage.waited > 0, "12 callers on 2 slots must have waited");
    assert_eq!(reward.stats().evaluations, 12 * 3 + 16);
    assert_eq!(reward.stats().failures, 0);
    assert_next_good_call_succeeds(&host);
}
