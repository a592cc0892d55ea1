//! Any bytes as a `tokenizer.json` (`r1_host::fuzzing::tokenizer_json`).
//! The body lives in the library so that `host/tests/integration/fuzz_replay.rs` runs it on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| r1_host::fuzzing::tokenizer_json(data));
