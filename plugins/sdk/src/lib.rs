//! r1-plugin: the guest SDK for writing r1 reward plugins in Rust. Implement
//! [`RewardPlugin`] (or write one scoring function) and export it with one macro; the SDK
//! handles the ABI v1 exports, allocation, postcard decoding and encoding, and panics
//! (a panic logs its message through `r1.log`, then traps, so the host reports it).
//!
//! ```ignore
//! #![no_std]
//! use r1_plugin::{Diagnostics, Sample, Score};
//!
//! fn non_empty(sample: &Sample, _diagnostics: &mut Diagnostics) -> Score {
//!     Score::Value(if sample.completion.trim().is_empty() { 0.0 } else { 1.0 })
//! }
//!
//! r1_plugin::export_reward! {
//!     name: "non-empty",
//!     version: "0.1.0",
//!     description: "1 when the completion has any text",
//!     score: non_empty,
//! }
//! ```
//!
//! Build with `cargo build --release --target wasm32-unknown-unknown` and a `cdylib`
//! crate type. The contract itself is in `plugins/ABI.md`; the wire types are
//! [`r1_core::plugin_abi`].
#![no_std]

extern crate alloc;

mod diagnostics;
mod entry;
#[cfg(all(target_arch = "wasm32", feature = "global-allocator"))]
mod heap;
pub mod host;
#[cfg(all(target_arch = "wasm32", feature = "panic-handler"))]
mod panic;
mod plugin;

pub use diagnostics::Diagnostics;
pub use plugin::{PluginInfoStatic, RewardPlugin, ScoreError};
pub use r1_core;
pub use r1_core::plugin_abi::{ABI_VERSION, Diagnostic};
pub use r1_core::reward::{Sample, Score};

/// Used by the export macros; not part of the SDK's stable surface.
#[doc(hidden)]
pub mod __private {
    pub use crate::entry::{PluginState, abi_version, alloc, info, init, score};
}

/// Exports a type implementing [`RewardPlugin`] as this module's reward, generating the
/// ABI v1 exports (`r1_abi_version`, `r1_alloc`, `r1_info`, `r1_init`, `r1_score`).
/// Use it once per plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            static STATE: $crate::__private::PluginState<$plugin> = $crate::__private::PluginState::new();

            #[unsafe(no_mangle)]
            pub extern "C" fn r1_abi_version() -> i32 {
                $crate::__private::abi_version()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn r1_alloc(len: i32) -> i32 {
                $crate::__private::alloc(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn r1_info() -> i64 {
                $crate::__private::info::<$plugin>()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn r1_init(ptr: i32, len: i32) -> i32 {
                // SAFETY: the host wrote `len` bytes at `ptr`, a block it got from `r1_alloc`.
                unsafe { $crate::__private::init::<$plugin>(&STATE, ptr, len) }
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn r1_score(ptr: i32, len: i32) -> i64 {
                // SAFETY: as for `r1_init`.
                unsafe { $crate::__private::score::<$plugin>(&STATE, ptr, len) }
            }
        };
    };
}

/// Exports one function `fn(&Sample, &mut Diagnostics) -> Score` as this module's reward.
/// The plugin takes no config (any config the run gives is accepted and ignored).
#[macro_export]
macro_rules! export_reward {
    (name: $name:expr, version: $version:expr, description: $description:expr, score: $score:path $(,)?) => {
        const _: () = {
            struct ExportedReward;

            impl $crate::RewardPlugin for ExportedReward {
                const INFO: $crate::PluginInfoStatic = $crate::PluginInfoStatic {
                    name: $name,
                    version: $version,
                    description: $description,
                };

                fn new(_config: &str) -> ::core::result::Result<Self, $crate::ScoreError> {
                    ::core::result::Result::Ok(ExportedReward)
                }

                fn score(&self, sample: &$crate::Sample, diagnostics: &mut $crate::Diagnostics) -> $crate::Score {
                    $score(sample, diagnostics)
                }
            }

            $crate::export_plugin!(ExportedReward);
        };
    };
}
