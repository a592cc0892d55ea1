//! r1-core: the embeddable heart of r1. A static graph IR of tensor ops with shape
//! inference, reverse-mode autodiff, a liveness-based memory plan and an executor over
//! any [`Backend`]; Llama/Qwen2 graph builders; GRPO math; reward traits and rule rewards;
//! sampling; the reward-plugin ABI types; and GGML's block-quantized formats (`quant`).
//! `no_std` + `alloc`: nothing here touches files, threads, clocks or the network.
#![no_std]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod autodiff;
pub mod backend;
pub mod error;
pub mod exec;
pub mod graph;
pub mod grpo;
pub mod model;
pub mod optim8;
pub mod plan;
pub mod plugin_abi;
pub mod quant;
pub mod reasoning;
pub mod reward;
pub mod sampling;
pub mod tensor;

pub use backend::{AdamWStep, Backend, BackendError, PlanTensors, TensorRef};
pub use error::GraphError;
pub use exec::{Bindings, Executor};
pub use graph::{Graph, Node, NodeId, Op};
pub use plan::Plan;

pub use tensor::{BlockFormat, DType, Shape, TensorDesc};
