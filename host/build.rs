//! Builds the bundled arithmetic-checker reward plugin (plugins/examples/arithmetic) for
//! wasm32-unknown-unknown, so the default `r1host run` job exercises the plugin path with
//! a real module. Without the wasm32 target the build goes on with an empty module and
//! `r1host run` explains how to add the target.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let examples = manifest.join("../plugins/examples");
    for dir in [
        "../plugins/examples/arithmetic",
        "../plugins/examples/Cargo.toml",
        "../plugins/sdk",
        "../core/src",
        "../core/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={dir}");
    }
    let target_dir = out.join("plugin-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&examples)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "r1-plugin-arithmetic",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status();
    let built = target_dir.join("wasm32-unknown-unknown/release/r1_plugin_arithmetic.wasm");
    let dest = out.join("arithmetic.wasm");
    match status {
        Ok(s) if s.success() && built.is_file() => {
            std::fs::copy(&built, &dest).expect("copy the arithmetic plugin into OUT_DIR");
        }
        other => {
            println!(
                "cargo:warning=the bundled arithmetic plugin was not built ({other:?}); `r1host run` needs it: run `rustup target add wasm32-unknown-unknown` and rebuild"
            );
            std::fs::write(&dest, b"").expect("write an empty placeholder module");
            // Watch where the target's standard library goes, so that the rebuild the
            // warning asks for builds the plugin once the target is added (nothing of this
            // package changes then, and cargo would otherwise keep the empty module).
            if let Some(dir) = wasm32_std_dir() {
                println!("cargo:rerun-if-changed={}", dir.display());
            }
        }
    }
}

/// `<sysroot>/lib/rustlib/wasm32-unknown-unknown` of the compiler cargo builds with.
fn wasm32_std_dir() -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).args(["--print", "sysroot"]).output().ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(sysroot.trim()).join("lib/rustlib/wasm32-unknown-unknown"))
}
