//! Any bytes as the body of a chat or text completion request to `r1host serve`
//! (`r1_host::fuzzing::serve_request`).
//! The body lives in the library so that `host/tests/integration/fuzz_replay.rs` runs it on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| r1_host::fuzzing::serve_request(data));
