//! Any bytes as a JSONL dataset, under SFT and GRPO field names: rows or an error naming
//! the line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r1_host::io::{DatasetFields, parse_jsonl};

fuzz_target!(|data: &[u8]| {
    let _ = parse_jsonl(data, "fuzz", &DatasetFields::sft());
    let _ = parse_jsonl(data, "fuzz", &DatasetFields::grpo());
});
