//! The executor: walks a [`Plan`] and asks a [`Backend`] to run each step on the arena
//! and the caller-bound buffers. It owns the arena, which grows to the largest plan it
//! has run and is then reused, so repeated runs allocate nothing.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use crate::backend::{Backend, PlanTensors, TensorRef};
use crate::error::GraphError;
use crate::graph::{Graph, NodeId};
use crate::plan::{Location, Plan};

/// Caller-owned buffers for a graph's leaves: `(buffer, byte offset)` per node.
pub struct Bindings<'a, Buf> {
    slots: Vec<Option<(&'a Buf, usize)>>,
}

impl<'a, Buf> Bindings<'a, Buf> {
    /// No leaf of `graph` bound yet.
    pub fn new(graph: &Graph) -> Self {
        Bindings {
            slots: (0..graph.len()).map(|_| None).collect(),
        }
    }

    /// Binds leaf `id` to `buffer` starting at byte `offset`.
    pub fn bind(&mut self, id: NodeId, buffer: &'a Buf, offset: usize) -> Result<(), GraphError> {
        let slot = self.slots.get_mut(id.index()).ok_or(GraphError::UnknownNode(id.0))?;
        *slot = Some((buffer, offset));
        Ok(())
    }

    /// Binds the leaf named `name`.
    pub fn bind_named(&mut self, graph: &Graph, name: &str, buffer: &'a Buf, offset: usize) -> Result<(), GraphError> {
        let id = graph.find(name).ok_or_else(|| GraphError::Unbound {
            node: u32::MAX,
            name: String::from(name),
        })?;
        self.bind(id, buffer, offset)
    }

    /// The buffer and byte offset leaf `id` is bound to, if any.
    pub fn get(&self, id: NodeId) -> Option<(&'a Buf, usize)> {
        self.slots.get(id.index()).copied().flatten()
    }
}

/// The executor's view of a running plan, handed to [`Backend::run_plan`].
struct ExecTensors<'e, 'b, B: Backend> {
    exec: &'e Executor<B>,
    graph: &'e Graph,
    plan: &'e Plan,
    bindings: &'e Bindings<'b, B::Buffer>,
}

impl<B: Backend> PlanTensors<B::Buffer> for ExecTensors<'_, '_, B> {
    fn tensor(&self, id: NodeId) -> Result<TensorRef<'_, B::Buffer>, GraphError> {
        self.exec.tensor(self.graph, self.plan, self.bindings, id)
    }
}

/// Runs plans on a backend, owning the activation arena.
pub struct Executor<B: Backend> {
    arena: Option<B::Buffer>,
    arena_bytes: usize,
}

impl<B: Backend> Default for Executor<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> Executor<B> {
    /// An executor with no arena yet (the first [`Executor::prepare`] allocates it).
    pub fn new() -> Self {
        Executor {
            arena: None,
            arena_bytes: 0,
        }
    }

    /// Bytes of arena currently held.
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }

    /// Makes sure the arena can hold `plan` (allocates only when it must grow).
    pub fn prepare(&mut self, backend: &B, plan: &Plan) -> Result<(), GraphError> {
        if self.arena.is_none() || self.arena_bytes < plan.arena_bytes() {
            let bytes = plan.arena_bytes().max(64);
            self.arena = None; // free the old arena before taking a bigger one
            self.arena = Some(backend.alloc(bytes)?);
            self.arena_bytes = bytes;
        }
        Ok(())
    }

    /// Checks that every leaf the plan reads is bound to a large enough buffer.
    pub fn check_bindings(
        &self,
        backend: &B,
        graph: &Graph,
        plan: &Plan,
        bindings: &Bindings<'_, B::Buffer>,
    ) -> Result<(), GraphError> {
        for &id in plan.externals() {
            let node = graph.node(id)?;
            let (buf, off) = bindings.get(id).ok_or_else(|| GraphError::Unbound {
                node: id.0,
                name: node.label(id),
            })?;
            let need = off.checked_add(node.desc.bytes());
            let have = backend.buffer_len(buf);
            if need.is_none_or(|n| n > have) {
                return Err(GraphError::Binding {
                    node: id.0,
                    name: node.label(id),
                    detail: format!(
                        "{} {} needs {} bytes at offset {off}, buffer has {have}",
                        node.desc.dtype,
                        node.desc.shape,
                        node.desc.bytes()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Runs the whole plan.
    pub fn run(
        &mut self,
        backend: &B,
        graph: &Graph,
        plan: &Plan,
        bindings: &Bindings<'_, B::Buffer>,
    ) -> Result<(), GraphError> {
        self.run_steps(backend, graph, plan, bindings, 0..plan.steps().len())
    }

    /// Runs steps `range` of the plan (e.g. the forward part, then — after the caller
    /// read the outputs and bound a loss gradient — the backward part).
    pub fn run_steps(
        &mut self,
        backend: &B,
        graph: &Graph,
        plan: &Plan,
        bindings: &Bindings<'_, B::Buffer>,
        range: Range<usize>,
    ) -> Result<(), GraphError> {
        self.prepare(backend, plan)?;
        if range.start == 0 {
            self.check_bindings(backend, graph, plan, bindings)?;
        }
        let tensors = ExecTensors {
            exec: self,
            graph,
            plan,
            bindings,
        };
        backend.run_plan(graph, plan, range, &tensors)
    }

    /// Where node `id`'s tensor lives (valid after its step ran, until its storage is
    /// reused; plan outputs stay valid until the next run).
    pub fn tensor<'s>(
        &'s self,
        graph: &Graph,
        plan: &Plan,
        bindings: &Bindings<'s, B::Buffer>,
        id: NodeId,
    ) -> Result<TensorRef<'s, B::Buffer>, GraphError> {
        let node = graph.node(id)?;
        match plan.location(id) {
            Location::Arena { offset } => {
                let buffer = self.arena.as_ref().ok_or_else(|| GraphError::Unbound {
                    node: id.0,
                    name: "arena".into(),
                })?;
                Ok(TensorRef {
                    buffer,
                    offset,
                    desc: node.desc,
                })
            }
            Location::External { root, offset } => {
                let (buffer, base) = bindings.get(root).ok_or_else(|| GraphError::Unbound {
                    node: root.0,
                    name: graph.nodes()[root.index()].label(root),
                })?;
                Ok(TensorRef {
                    buffer,
                    offset: base + offset,
                    desc: node.desc,
                })
            }
            Location::Unused => Err(GraphError::Unsupported {
                op: node.op.name(),
                detail: format!("{} is not computed by this plan", node.label(id)),
            }),
        }
    }

    /// Downloads an f32 tensor (an output, or any node whose storage is still live).
    pub fn read_f32(
        &self,
        backend: &B,
        graph: &Graph,
        plan: &Plan,
        bindings: &Bindings<'_, B::Buffer>,
        id: NodeId,
    ) -> Result<Vec<f32>, GraphError> {
        let t = self.tensor(graph, plan, bindings, id)?;
        let mut bytes = vec![0u8; t.desc.bytes()];
        backend.download(t.buffer, t.offset, &mut bytes)?;
        Ok(crate::backend::f32_from_bytes(&bytes))
    }
}
