//! How library code reports progress: through this trait, never by drawing bars itself.
//! The CLI passes an implementation that draws `indicatif` bars; tests and embedders
//! pass [`NoProgress`] or their own (a server streams the same events to a client).

/// Receives the progress of long work (training stages, evaluations, generation).
pub trait Progress {
    /// A free-form line worth showing to the user (a stage starting, a result).
    fn log(&self, line: &str);
    /// A task of `total` steps named `label` begins; `done` of them are already done
    /// (a resumed stage).
    fn begin(&self, label: &str, total: u64, done: u64);
    /// The current task advanced by one step; `message` summarises it ("loss 0.412").
    fn step(&self, message: &str);
    /// The current task ended (its bar can be cleared).
    fn end(&self);
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn log(&self, _line: &str) {}
    fn begin(&self, _label: &str, _total: u64, _done: u64) {}
    fn step(&self, _message: &str) {}
    fn end(&self) {}
}
