//! Running the real `r1host` binary as a user would, for the tests that drive the CLI:
//! the command, its captured output as text, and paths as the `&str` arguments it takes.

use std::path::Path;
use std::process::{Command, Output};

/// `r1host` with no arguments yet; stdin closed, so a test never waits on a prompt.
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_r1host"));
    cmd.stdin(std::process::Stdio::null());
    cmd
}

/// Runs `r1host ARGS` to the end and captures its output.
pub fn r1host(args: &[&str]) -> Output {
    command().args(args).output().expect("run r1host")
}

/// Bytes a process printed, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A path as a command-line argument.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
