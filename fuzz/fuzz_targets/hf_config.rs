//! Any bytes as a `config.json`: parsing and validation return a config or an error; a
//! config that parses must also produce its weight list and serialize back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r1_host::io::{hf_config_json, parse_hf_config};

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = parse_hf_config(data, "fuzz") {
        // Validated configs may still be huge; only walk the weight list when it is small.
        if config.num_hidden_layers <= 64 {
            let _ = config.param_specs();
        }
        let _ = hf_config_json(&config);
    }
});
