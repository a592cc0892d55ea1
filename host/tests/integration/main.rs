//! r1-host's integration tests, in one test binary: one file per subject, each a module
//! here (`cargo test -p r1-host --test integration serve_http::` runs one file's tests).
//! One binary rather than one per file: each test binary links the whole host (wasmtime,
//! tokenizers, axum, ...), and forty of them made the debug test build minutes longer.
//! Two tests stay binaries of their own: `rollout_fleet` (it sets an environment variable,
//! which a process must not do while other tests' threads run) and `mpi_data_parallel`
//! (built only with the `mpi` feature).

mod cli_support;
mod io_support;
mod plugin_support;
mod recipe_support;
mod serve_support;

mod chat_templates;
mod checkpointing;
mod cli_models;
mod deepseek_v3_cli;
mod fuzz_replay;
mod grpo_plugin_failures;
mod hostile_inputs;
mod io_checkpoint;
mod io_dataset;
mod io_export;
mod io_fp8;
mod io_gguf;
mod io_hf;
mod io_hostile_bytes;
mod io_tokenizer;
mod kv_cache_types;
mod lora;
mod model_without_tokenizer;
mod optimizer_8bit;
mod pipeline_e2e;
mod pipeline_lora;
mod pipeline_seed;
mod pipeline_stop;
mod plot;
mod plugin_cli;
mod plugin_examples;
mod plugin_hostile;
mod quantize_cli;
mod rejection_reward_errors;
mod serve_cli;
mod serve_dashboard;
mod serve_http;
mod serve_jobs;
mod serve_weights;
mod train_non_finite;
