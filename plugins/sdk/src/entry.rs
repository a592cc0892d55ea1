//! The bodies of the ABI v1 exports, generic over the plugin type; the export macros
//! call them. Memory handed to the host is leaked on purpose: the instance is dropped
//! after the call, and with it all of its memory.

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::UnsafeCell;

use r1_core::plugin_abi::{self, PluginInfo, ScoreResponse};

use crate::diagnostics::Diagnostics;
use crate::host;
use crate::plugin::{RewardPlugin, ScoreError};

/// The plugin built by `r1_init`, kept for the `r1_score` call of the same instance.
pub struct PluginState<P>(UnsafeCell<Option<P>>);

// SAFETY: a wasm32-unknown-unknown instance runs on one thread, and the host calls one
// export at a time; nothing else reaches the cell (it is private to the macro's scope).
unsafe impl<P> Sync for PluginState<P> {}

impl<P> PluginState<P> {
    pub const fn new() -> Self {
        PluginState(UnsafeCell::new(None))
    }
}

impl<P> Default for PluginState<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// Logs `error` (naming its sample to the host first) and traps.
pub fn fail(error: &ScoreError) -> ! {
    if let Some(i) = error.sample {
        host::begin_sample(i);
    }
    host::log(&alloc::format!("{error}"));
    trap()
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    panic!("r1-plugin: trap");
}

pub fn abi_version() -> i32 {
    plugin_abi::ABI_VERSION as i32
}

/// `r1_alloc`: a block of `len` bytes (8-aligned) for the host's input; 0 when `len` is
/// negative or memory is exhausted.
pub fn alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else { return 0 };
    let Ok(layout) = core::alloc::Layout::from_size_align(len.max(1), 8) else {
        return 0;
    };
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { alloc::alloc::alloc(layout) };
    ptr as usize as i32
}

/// Leaks `bytes` and packs their address and length for the host.
fn hand_over(bytes: Vec<u8>) -> i64 {
    let bytes = bytes.leak();
    plugin_abi::pack_ptr_len(bytes.as_ptr() as usize as u32, bytes.len() as u32) as i64
}

/// `r1_info`.
pub fn info<P: RewardPlugin>() -> i64 {
    let info = PluginInfo {
        name: String::from(P::INFO.name),
        version: String::from(P::INFO.version),
        description: String::from(P::INFO.description),
    };
    match plugin_abi::encode_plugin_info(&info) {
        Ok(bytes) => hand_over(bytes),
        Err(e) => fail(&ScoreError::new(alloc::format!("{e}"))),
    }
}

/// # Safety
/// `ptr`/`len` must describe initialised memory of this instance (the host's input).
unsafe fn input<'a>(ptr: i32, len: i32) -> &'a [u8] {
    let len = usize::try_from(len).unwrap_or(0);
    if len == 0 {
        return &[];
    }
    // SAFETY: per this function's contract.
    unsafe { core::slice::from_raw_parts(ptr as u32 as usize as *const u8, len) }
}

/// `r1_init`: builds the plugin from its config; 0 accepts, 1 rejects (reason logged).
///
/// # Safety
/// As for [`input`].
pub unsafe fn init<P: RewardPlugin>(state: &PluginState<P>, ptr: i32, len: i32) -> i32 {
    // SAFETY: per this function's contract.
    let bytes = unsafe { input(ptr, len) };
    let Ok(config) = core::str::from_utf8(bytes) else {
        host::log("config is not UTF-8");
        return 1;
    };
    match P::new(config) {
        Ok(plugin) => {
            // SAFETY: see `PluginState`: no other reference to the cell is alive.
            unsafe { *state.0.get() = Some(plugin) };
            0
        }
        Err(e) => {
            host::log(&alloc::format!("{e}"));
            1
        }
    }
}

/// `r1_score`: decodes the group, scores it, encodes the response.
///
/// # Safety
/// As for [`input`].
pub unsafe fn score<P: RewardPlugin>(state: &PluginState<P>, ptr: i32, len: i32) -> i64 {
    // SAFETY: per this function's contract.
    let bytes = unsafe { input(ptr, len) };
    let request = match plugin_abi::decode_score_request(bytes) {
        Ok(r) => r,
        Err(e) => fail(&ScoreError::new(alloc::format!("{e}"))),
    };
    // SAFETY: see `PluginState`: no other reference to the cell is alive.
    let slot = unsafe { &mut *state.0.get() };
    if slot.is_none() {
        // The host calls `r1_init` first; a host that does not gets the default config.
        match P::new("null") {
            Ok(plugin) => *slot = Some(plugin),
            Err(e) => fail(&e),
        }
    }
    let Some(plugin) = slot.as_ref() else { trap() };
    let mut diagnostics = Diagnostics::new();
    let scores = match plugin.score_batch(&request.samples, &mut diagnostics) {
        Ok(scores) => scores,
        Err(e) => fail(&e),
    };
    let response = ScoreResponse {
        scores,
        diagnostics: diagnostics.into_vec(),
    };
    match plugin_abi::encode_score_response(&response) {
        Ok(bytes) => hand_over(bytes),
        Err(e) => fail(&ScoreError::new(alloc::format!("{e}"))),
    }
}
