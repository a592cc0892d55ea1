//! Any bytes as a `tokenizer_config.json` whose chat template is rendered, optionally
//! followed by NUL and a JSON list of messages (`r1_host::fuzzing::chat_template`).
//! The body lives in the library so that `host/tests/integration/fuzz_replay.rs` runs it on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| r1_host::fuzzing::chat_template(data));
