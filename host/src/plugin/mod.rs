//! The reward-plugin host on wasmtime.
