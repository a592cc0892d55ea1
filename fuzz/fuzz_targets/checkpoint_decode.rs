//! Any bytes as a checkpoint, whole or (first byte 0) as a framed payload
//! (`r1_host::fuzzing::checkpoint_decode`).
//! The body lives in the library so that `host/tests/integration/fuzz_replay.rs` runs it on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| r1_host::fuzzing::checkpoint_decode(data));
