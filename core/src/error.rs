//! Errors of graph construction, planning and execution. Plain enums (no_std); with the
//! `std` feature they implement `std::error::Error`.

use alloc::string::String;
use core::fmt;

use crate::backend::BackendError;

/// Anything that can go wrong building, differentiating, planning or running a graph.
#[derive(Clone, Debug, PartialEq)]
pub enum GraphError {
    /// Operand shapes or dtypes do not fit the op; `detail` names the shapes.
    Shape {
        /// The op being built ([`Op::name`](crate::graph::Op::name)).
        op: &'static str,
        /// The offending shapes and dtypes, and what the op needs.
        detail: String,
    },
    /// A node id that does not belong to this graph.
    UnknownNode(u32),
    /// An op that autodiff cannot differentiate, or a backend cannot run.
    Unsupported {
        /// The op that cannot be differentiated or run.
        op: &'static str,
        /// Why, e.g. which backend refused which dtype.
        detail: String,
    },
    /// An `Input` or `Param` node needed by the plan has no buffer bound.
    Unbound {
        /// The leaf's node id (`u32::MAX` when looked up by a name no node has).
        node: u32,
        /// The leaf's name (the feed or HF tensor name the caller binds by).
        name: String,
    },
    /// A bound buffer's size does not match the node's tensor.
    Binding {
        /// The leaf's node id.
        node: u32,
        /// The leaf's name.
        name: String,
        /// The expected and bound sizes.
        detail: String,
    },
    /// A kernel failed on the backend.
    Backend(BackendError),
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::Shape { op, detail } => write!(f, "{op}: shape mismatch: {detail}"),
            GraphError::UnknownNode(id) => write!(f, "node %{id} does not belong to this graph"),
            GraphError::Unsupported { op, detail } => write!(f, "{op}: unsupported: {detail}"),
            GraphError::Unbound { node, name } => {
                write!(f, "node %{node} `{name}` needs a buffer but none is bound")
            }
            GraphError::Binding { node, name, detail } => {
                write!(f, "node %{node} `{name}`: bad binding: {detail}")
            }
            GraphError::Backend(e) => write!(f, "backend: {e}"),
        }
    }
}

impl From<BackendError> for GraphError {
    fn from(e: BackendError) -> Self {
        GraphError::Backend(e)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for GraphError {}
