//! A cooperative stop request: whoever owns a long run (a Ctrl-C handler, a job's cancel
//! route, a daemon shutting down) sets it; the pipeline reads it between optimizer steps
//! and at stage boundaries, checkpoints where it can resume from, and returns
//! [`PipelineOutcome::Stopped`](crate::pipeline::PipelineOutcome::Stopped).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag shared between the code that asks for a stop and the run that honours it.
/// Clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// A signal nobody has raised yet.
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Asks the run to stop at its next safe point.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself, for code that sets it from a signal handler (`signal-hook`).
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reaches_every_clone() {
        let signal = StopSignal::new();
        let seen_by_the_run = signal.clone();
        assert!(!seen_by_the_run.is_requested());
        signal.request();
        assert!(seen_by_the_run.is_requested());
        assert!(signal.flag().load(Ordering::SeqCst));
    }
}
