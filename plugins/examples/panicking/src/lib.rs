//! Shows what happens when a Rust plugin panics: the SDK's panic handler logs the message
//! (with file and line) through `r1.log` and traps; the host reports a trap on the sample
//! the SDK announced, with that message. Scores 1 unless the completion says "panic".
//! The host's tests use it to check the whole path.
#![cfg_attr(target_arch = "wasm32", no_std)]

use r1_plugin::{Diagnostics, Sample, Score};

pub fn score_or_panic(sample: &Sample, _diagnostics: &mut Diagnostics) -> Score {
    if sample.completion.contains("panic") {
        panic!("asked to panic by the completion `{}`", sample.completion);
    }
    Score::Value(1.0)
}

r1_plugin::export_reward! {
    name: "panicking",
    version: env!("CARGO_PKG_VERSION"),
    description: "1 for every sample, and a panic for a completion that says \"panic\"",
    score: score_or_panic,
}
