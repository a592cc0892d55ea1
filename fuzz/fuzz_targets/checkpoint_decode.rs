//! Any bytes as a checkpoint. The first byte picks the input as a whole file (frame
//! checks: magic, version, length, checksum) or as a payload wrapped in a valid frame, so
//! the fuzzer also reaches the postcard decoder and the consistency checks behind the
//! checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r1_host::io::checkpoint::checkpoint_frame;
use r1_host::io::load_checkpoint_bytes;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, payload)) => {
            let _ = load_checkpoint_bytes(&checkpoint_frame(payload));
        }
        _ => {
            let _ = load_checkpoint_bytes(data);
        }
    }
});
