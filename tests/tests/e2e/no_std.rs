//! `r1-core` stays embeddable: it must build for `wasm32-unknown-unknown` without its
//! `std` feature (no files, threads, clocks or network in core).

use std::path::Path;
use std::process::Command;

#[test]
fn core_builds_for_wasm32_without_std() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-std-core");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "-p",
            "r1-core",
            "--no-default-features",
            "--target",
            "wasm32-unknown-unknown",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "r1-core does not build for wasm32-unknown-unknown without std (is the target installed? \
         `rustup target add wasm32-unknown-unknown`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
