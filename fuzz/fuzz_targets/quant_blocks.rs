//! Any bytes as GGML quantized blocks (`r1_host::fuzzing::quant_blocks`).
//! The body lives in the library so that `host/tests/integration/fuzz_replay.rs` runs it on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| r1_host::fuzzing::quant_blocks(data));
