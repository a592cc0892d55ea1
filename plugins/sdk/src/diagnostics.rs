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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_carry_the_current_sample_and_stop_at_the_limit() {
        let mut d = Diagnostics::new();
        d.note("group");
        d.set_sample(Some(3));
        d.note("three");
        assert_eq!(
            d.as_slice()[0],
            Diagnostic {
                sample: None,
                message: "group".into()
            }
        );
        assert_eq!(
            d.as_slice()[1],
            Diagnostic {
                sample: Some(3),
                message: "three".into()
            }
        );
        for _ in 0..limits::MAX_DIAGNOSTICS {
            d.note("more");
        }
        assert_eq!(d.into_vec().len(), limits::MAX_DIAGNOSTICS);
    }
}
