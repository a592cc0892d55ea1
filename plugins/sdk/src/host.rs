//! The host's `r1` import module: logging and "now on sample i". Off wasm32 (unit tests of
//! a plugin's logic on the host) both are no-ops.

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "r1")]
    unsafe extern "C" {
        pub fn log(ptr: i32, len: i32);
        pub fn sample(index: i32);
    }
}

/// Appends one line to this evaluation's log (shown with errors and by `r1host plugin`).
pub fn log(message: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the pointer and length describe `message`, which lives across the call; the
    // host only reads them.
    unsafe {
        imports::log(message.as_ptr() as i32, message.len() as i32)
    };
    #[cfg(not(target_arch = "wasm32"))]
    let _ = message;
}

/// Tells the host the plugin is now working on sample `index`, so a trap or timeout from
/// here on names it.
pub fn begin_sample(index: usize) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: a plain call into the host with an integer.
    unsafe {
        imports::sample(i32::try_from(index).unwrap_or(i32::MAX))
    };
    #[cfg(not(target_arch = "wasm32"))]
    let _ = index;
}
