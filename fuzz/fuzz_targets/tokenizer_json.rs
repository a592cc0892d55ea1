//! Any bytes as a `tokenizer.json`: a tokenizer or an error. A tokenizer that loads must
//! encode and decode a fixed text without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r1_host::io::HfTokenizer;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = HfTokenizer::from_json_bytes(data, "fuzz", None, None)
        && let Ok(ids) = t.encode("Hello <think>world</think> 🙂")
    {
        let _ = t.decode(&ids);
    }
});
