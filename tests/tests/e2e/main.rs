//! End-to-end tests of r1 through its library crates, in one test binary: one file per
//! subject, each a module here (`cargo test -p r1-e2e --test e2e engine::` runs one file's
//! tests). One binary rather than one per file, so that the whole host is linked once.

mod bf16_compute;
mod deepseek_v3;
mod engine;
mod engine_service;
mod grpo_learns;
mod model_gradients;
mod no_std;
mod parity_transformers;
mod sft_trains;
