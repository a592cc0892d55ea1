//! What one evaluation's `Store` holds and enforces: the resource limiter (memory, tables,
//! instances), the plugin's log, the sample it is working on, the host's `r1` import
//! functions, checked access to guest memory, and the mapping of a wasmtime failure to
//! the cause a user reads (timeout, fuel, memory, stack, trap, bad output).

use std::ops::Range;

use r1_core::plugin_abi::{export, import, limits};
use r1_core::reward::RewardErrorKind;
use wasmtime::{Caller, Engine, Extern, Linker, ResourceLimiter, StoreLimits, StoreLimitsBuilder, Trap, WasmBacktrace};

use super::engine::MAX_TABLES;

/// The data of one evaluation's store.
pub(crate) struct Evaluation {
    pub limiter: GuestLimiter,
    pub log: GuestLog,
    /// The sample the plugin said (through `r1.sample`) it is working on.
    pub sample: Option<u32>,
    /// Samples in the group being scored; `None` before `r1_score` is called (`r1_init`,
    /// the load-time probe), when there is no sample to name.
    pub group_len: Option<usize>,
}

impl Evaluation {
    pub fn new(max_memory_bytes: usize) -> Self {
        let limits = StoreLimitsBuilder::new()
            .memory_size(max_memory_bytes)
            .table_elements(limits::MAX_TABLE_ELEMENTS)
            .instances(1)
            .memories(1)
            .tables(MAX_TABLES as usize)
            .build();
        Evaluation {
            limiter: GuestLimiter {
                limits,
                max_memory_bytes,
                max_table_elements: limits::MAX_TABLE_ELEMENTS,
            },
            log: GuestLog::default(),
            sample: None,
            group_len: None,
        }
    }
}

/// wasmtime's `StoreLimits` (memory, table elements, one instance, one memory, a few
/// tables), except that growing memory or a table past its limit traps at once with a
/// typed error rather than `memory.grow` returning -1, so a memory bomb ends with a clear
/// "memory limit" instead of spinning or failing somewhere else.
pub(crate) struct GuestLimiter {
    limits: StoreLimits,
    max_memory_bytes: usize,
    max_table_elements: usize,
}

/// A plugin asked for more memory than its limit.
#[derive(Debug, thiserror::Error)]
#[error("asked for {desired} bytes of memory, over the limit of {limit} bytes")]
pub(crate) struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

/// A plugin asked for a larger table than the host allows.
#[derive(Debug, thiserror::Error)]
#[error("asked for a table of {desired} elements, over the limit of {limit}")]
pub(crate) struct TableLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

/// The plugin broke the ABI in a way the host detected (a bad pointer or length handed to
/// the host, a bad result).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct GuestFault(pub String);

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if !self.limits.memory_growing(current, desired, maximum)? {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired,
                limit: self.max_memory_bytes,
            }));
        }
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if !self.limits.table_growing(current, desired, maximum)? {
            return Err(wasmtime::Error::new(TableLimitExceeded {
                desired,
                limit: self.max_table_elements,
            }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The lines a plugin logged through `r1.log`, within the ABI's limits.
#[derive(Debug, Default)]
pub(crate) struct GuestLog {
    pub lines: Vec<String>,
    bytes: usize,
    /// Lines dropped (in whole or in part) for being over the limits.
    pub dropped: usize,
}

impl GuestLog {
    fn push(&mut self, raw: &[u8]) {
        let room = limits::MAX_LOG_BYTES.saturating_sub(self.bytes);
        if self.lines.len() >= limits::MAX_LOG_LINES || room == 0 {
            self.dropped += 1;
            return;
        }
        // Never take more than the budget from a guest-given length.
        let raw = &raw[..raw.len().min(room)];
        let line = String::from_utf8_lossy(raw).into_owned();
        self.bytes += raw.len();
        self.lines.push(line);
    }

    /// The log as one line for an error message (empty when nothing was logged).
    pub fn summary(&self) -> String {
        let mut text = self.lines.join(" | ");
        if self.dropped > 0 {
            text.push_str(&format!(" (+{} lines dropped)", self.dropped));
        }
        text
    }
}

/// The byte range `[ptr, ptr + len)` of a guest memory of `memory_len` bytes, or why not.
/// Guest pointers and lengths are unsigned 32-bit; the sum is checked, never wrapped.
pub(crate) fn guest_range(memory_len: usize, ptr: u32, len: u32, what: &str) -> Result<Range<usize>, GuestFault> {
    let start = ptr as usize;
    let end = start
        .checked_add(len as usize)
        .ok_or_else(|| GuestFault(format!("{what}: pointer {ptr} + length {len} overflows")))?;
    if end > memory_len {
        return Err(GuestFault(format!(
            "{what}: bytes {start}..{end} lie outside the plugin's memory of {memory_len} bytes"
        )));
    }
    Ok(start..end)
}

/// The sample `r1.sample(index)` names, or why it names none: an index outside the
/// group (or a call with no group being scored) would otherwise make a later trap or
/// timeout blame a sample that does not exist.
pub(crate) fn announced_sample(index: i32, group_len: Option<usize>) -> Result<u32, GuestFault> {
    let Some(n) = group_len else {
        return Err(GuestFault(format!(
            "r1.sample({index}) called outside r1_score: no group is being scored"
        )));
    };
    match u32::try_from(index) {
        Ok(i) if (i as usize) < n => Ok(i),
        _ => Err(GuestFault(format!(
            "r1.sample({index}) names a sample outside the group of {n} samples (indices 0..{n})"
        ))),
    }
}

/// The host's `r1` import module.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<Evaluation>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        import::MODULE,
        import::LOG,
        |mut caller: Caller<'_, Evaluation>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let Some(Extern::Memory(memory)) = caller.get_export(export::MEMORY) else {
                return Err(wasmtime::Error::new(GuestFault(
                    "r1.log called, but the plugin exports no memory".into(),
                )));
            };
            let (data, evaluation) = memory.data_and_store_mut(&mut caller);
            let range = guest_range(data.len(), ptr as u32, len as u32, "r1.log")?;
            evaluation.log.push(&data[range]);
            Ok(())
        },
    )?;
    linker.func_wrap(
        import::MODULE,
        import::SAMPLE,
        |mut caller: Caller<'_, Evaluation>, index: i32| -> wasmtime::Result<()> {
            let evaluation = caller.data_mut();
            evaluation.sample = Some(announced_sample(index, evaluation.group_len)?);
            Ok(())
        },
    )?;
    Ok(linker)
}

/// The cause of a failed evaluation, as a user should read it.
pub(crate) fn classify(error: &wasmtime::Error, evaluation: &Evaluation) -> RewardErrorKind {
    if error.downcast_ref::<MemoryLimitExceeded>().is_some() || error.downcast_ref::<TableLimitExceeded>().is_some() {
        return RewardErrorKind::MemoryLimit;
    }
    if let Some(fault) = error.downcast_ref::<GuestFault>() {
        return RewardErrorKind::BadOutput(fault.0.clone());
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => RewardErrorKind::Timeout,
            Trap::OutOfFuel => RewardErrorKind::OutOfFuel,
            Trap::StackOverflow => RewardErrorKind::StackOverflow,
            other => {
                let mut message = other.to_string();
                let function = error
                    .downcast_ref::<WasmBacktrace>()
                    .and_then(|bt| bt.frames().first().and_then(|f| f.func_name().map(str::to_string)));
                if let Some(function) = function {
                    message.push_str(&format!(" in `{function}`"));
                }
                let log = evaluation.log.summary();
                if !log.is_empty() {
                    message.push_str(&format!("; plugin log: {log}"));
                }
                RewardErrorKind::Trap(message)
            }
        };
    }
    RewardErrorKind::Other(format!("{error:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_range_rejects_overflow_and_out_of_bounds() {
        assert_eq!(guest_range(100, 10, 90, "x").unwrap(), 10..100);
        assert!(guest_range(100, 10, 91, "x").is_err());
        assert!(guest_range(100, u32::MAX, u32::MAX, "x").is_err());
        assert_eq!(guest_range(0, 0, 0, "x").unwrap(), 0..0);
    }

    #[test]
    fn announced_sample_must_lie_in_the_group() {
        assert_eq!(announced_sample(2, Some(3)).unwrap(), 2);
        let GuestFault(m) = announced_sample(3, Some(3)).unwrap_err();
        assert_eq!(
            m,
            "r1.sample(3) names a sample outside the group of 3 samples (indices 0..3)"
        );
        assert!(announced_sample(-1, Some(3)).is_err());
        let GuestFault(m) = announced_sample(0, None).unwrap_err();
        assert!(m.contains("outside r1_score"), "{m}");
    }

    #[test]
    fn log_keeps_lines_and_bytes_within_limits() {
        let mut log = GuestLog::default();
        for _ in 0..limits::MAX_LOG_LINES + 5 {
            log.push(b"abc");
        }
        assert_eq!(log.lines.len(), limits::MAX_LOG_LINES);
        assert_eq!(log.dropped, 5);
        let mut log = GuestLog::default();
        log.push(&vec![b'x'; limits::MAX_LOG_BYTES * 2]);
        assert_eq!(log.lines[0].len(), limits::MAX_LOG_BYTES);
        log.push(b"more");
        assert_eq!(log.dropped, 1);
        let mut log = GuestLog::default();
        log.push(&[0xff, b'a']);
        assert_eq!(log.lines[0], "\u{fffd}a");
    }
}
