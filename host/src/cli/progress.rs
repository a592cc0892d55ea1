//! Progress bars for long stages (hidden when stderr is not a terminal): the CLI's
//! implementation of the library's [`Progress`] trait.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use crate::progress::Progress;

/// A bar of `total` steps labelled `stage`, with a live message.
pub fn bar(total: u64, stage: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(stage.to_string());
    bar
}

/// Draws one bar per task on stderr and prints log lines above it.
#[derive(Default)]
pub struct TerminalProgress {
    bar: Mutex<Option<ProgressBar>>,
}

impl TerminalProgress {
    fn with_bar(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        // A poisoned lock only means another thread panicked mid-update: keep drawing.
        let mut guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }
}

impl Progress for TerminalProgress {
    fn log(&self, line: &str) {
        self.with_bar(|bar| match bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        });
    }

    fn begin(&self, label: &str, total: u64, done: u64) {
        self.with_bar(|bar| {
            if let Some(old) = bar.take() {
                old.finish_and_clear();
            }
            let b = self::bar(total, label);
            b.set_position(done);
            *bar = Some(b);
        });
    }

    fn step(&self, message: &str) {
        self.with_bar(|bar| {
            if let Some(b) = bar {
                b.set_message(message.to_string());
                b.inc(1);
            }
        });
    }

    fn end(&self) {
        self.with_bar(|bar| {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
        });
    }
}
