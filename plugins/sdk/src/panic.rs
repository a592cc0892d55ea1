//! The plugin's panic handler: log the message and location through `r1.log`, then trap,
//! so the host's error says why the plugin failed. It formats into a fixed buffer, so it
//! works even when the panic is an allocation failure.

use core::fmt::Write;
use core::panic::PanicInfo;

const CAPACITY: usize = 1024;

/// Keeps the first `CAPACITY` bytes of what is written (cut at a char boundary).
struct MessageBuffer {
    bytes: [u8; CAPACITY],
    len: usize,
}

impl Write for MessageBuffer {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = CAPACITY - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let mut buffer = MessageBuffer {
        bytes: [0; CAPACITY],
        len: 0,
    };
    let _ = write!(buffer, "panicked");
    if let Some(location) = info.location() {
        let _ = write!(buffer, " at {}:{}", location.file(), location.line());
    }
    let _ = write!(buffer, ": {}", info.message());
    if let Ok(message) = core::str::from_utf8(&buffer.bytes[..buffer.len]) {
        crate::host::log(message);
    }
    core::arch::wasm32::unreachable()
}
