//! Notes a plugin attaches to its scores (why a sample got 0, what was parsed), returned
//! to the host in the score response and shown by `r1host plugin score`.

use alloc::string::String;
use alloc::vec::Vec;

use r1_core::plugin_abi::{Diagnostic, limits};

/// The diagnostics of one `r1_score` call. Messages beyond the ABI's limits are dropped.
#[derive(Debug, Default)]
pub struct Diagnostics {
    current: Option<u32>,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    /// The sample later notes belong to (`None`: the whole group).
    pub fn set_sample(&mut self, sample: Option<usize>) {
        self.current = sample.and_then(|i| u32::try_from(i).ok());
    }

    /// Adds a note about the current sample.
    pub fn note(&mut self, message: impl Into<String>) {
        if self.items.len() < limits::MAX_DIAGNOSTICS {
            self.items.push(Diagnostic {
                sample: self.current,
                message: message.into(),
            });
        }
    }

    pub fn as_slice(&self) -> &[Diagnostic] {
        &self.items
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }
}
