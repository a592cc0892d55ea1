//! The wasmtime engines of the host and the epoch ticker that gives every call a
//! wall-time deadline. One engine per kind of plugin, made when the first plugin of that
//! kind loads: fuel metering is compiled into the code (plugins with a fuel budget need
//! their own engine), and so is the size of the address space reserved for a linear
//! memory, which each engine makes exactly the plugin's `max_memory_bytes`. wasmtime's
//! default reserves 4 GiB (+ guards) per memory so that it can drop bounds checks; under
//! an address-space limit (`ulimit -v`, some containers) that failed to load even a
//! well-behaved plugin, or failed at random once several threads scored at once. With
//! the reservation at the cap, a memory never moves and never outgrows it; the compiled
//! code checks bounds against the cap (a compare with a constant), and the
//! `ResourceLimiter` still refuses growth past the cap with a typed error.

use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use r1_core::plugin_abi::limits;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::config::HostConfig;
use super::error::PluginError;

/// Tables one plugin may have (the limiter enforces the same number).
pub(crate) const MAX_TABLES: u32 = 4;

/// Bytes in a wasm page: reservations are whole pages.
const WASM_PAGE_BYTES: u64 = 64 << 10;

/// Unmapped bytes after each linear memory. With the reservation below 4 GiB the code
/// checks bounds itself; a guard lets one check cover accesses at small constant offsets
/// of the same address. (wasmtime's 32 MiB default would double a 64 MiB plugin's
/// address space for nothing, and there is no guard before the memory either.)
const GUARD_BYTES: u64 = 2 << 20;

/// Bytes of each pooled memory slot that may be reset with `memset` instead of `madvise`
/// when the slot is reused. With `pagemap_scan` (Linux 6.7+) only the pages the instance
/// dirtied are reset, so this covers a Rust plugin's 1 MiB stack, statics and first heap
/// pages without the next instance taking page faults there (measured: the math plugin's
/// evaluation 35 µs -> 15 µs; the trivial one unchanged).
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// What sets an engine apart: fuel metering, and the bytes reserved per linear memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EngineKind {
    fuel: bool,
    memory_reservation: u64,
}

/// The address space one linear memory reserves for a plugin whose memory may grow to
/// `max_memory_bytes`: the cap rounded up to whole wasm pages.
pub(crate) fn memory_reservation(max_memory_bytes: u64) -> u64 {
    max_memory_bytes
        .div_ceil(WASM_PAGE_BYTES)
        .saturating_mul(WASM_PAGE_BYTES)
}

fn engine(host: &HostConfig, kind: EngineKind, slots: u32) -> Result<Engine, PluginError> {
    let mut config = Config::new();
    // Every call (and the start function during instantiation) checks the epoch, so a
    // loop ends at its deadline even without fuel.
    config.epoch_interruption(true);
    config.consume_fuel(kind.fuel);
    config.max_wasm_stack(host.max_wasm_stack_bytes);
    config.cranelift_opt_level(OptLevel::Speed);
    // Plugins are plain single-threaded modules: no shared memory, no 64-bit memory.
    config.wasm_memory64(false);
    // The address space of a memory is the plugin's cap, reserved once; the memory never
    // moves (growth past the cap is refused by the limiter before it would have to).
    config
        .memory_reservation(kind.memory_reservation)
        .memory_reservation_for_growth(0)
        .memory_may_move(false)
        .memory_guard_size(GUARD_BYTES)
        .guard_before_linear_memory(false);
    if host.pooling {
        // Instance, memory and table slots allocated once and reused: instantiation then
        // maps no memory. `slots` is the bound on live evaluations the host enforces.
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots.saturating_mul(MAX_TABLES))
            .max_memories_per_module(1)
            .max_tables_per_module(MAX_TABLES)
            .table_elements(limits::MAX_TABLE_ELEMENTS)
            .max_memory_size(usize::try_from(kind.memory_reservation).unwrap_or(usize::MAX))
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .pagemap_scan(Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Ok(engine) = Engine::new(&config) {
            return Ok(engine);
        }
        // The pool's address space could not be reserved (e.g. under `ulimit -v`): map
        // memory per instance instead, slower but the same semantics.
        config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    }
    Engine::new(&config).map_err(|e| PluginError::Host(format!("cannot create the wasm engine: {e:#}")))
}

/// The engines made so far, shared with the epoch ticker.
type Made = Arc<Mutex<Vec<(EngineKind, Engine)>>>;

fn lock(made: &Made) -> std::sync::MutexGuard<'_, Vec<(EngineKind, Engine)>> {
    // The list only ever gains whole entries: a poisoned lock still holds a valid list.
    made.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct Engines {
    host: HostConfig,
    /// Live evaluations the host allows: the size of each engine's pool.
    slots: u32,
    made: Made,
    pub tick: Duration,
    _ticker: Ticker,
}

impl Engines {
    /// Engines whose pools (when pooling) hold `slots` live evaluations each.
    pub fn new(host: &HostConfig, slots: usize) -> Result<Self, PluginError> {
        let made: Made = Arc::default();
        let tick = Duration::from_millis(host.epoch_tick_ms);
        let ticker = Ticker::start(Arc::clone(&made), tick)?;
        Ok(Engines {
            host: host.clone(),
            slots: u32::try_from(slots).unwrap_or(u32::MAX),
            made,
            tick,
            _ticker: ticker,
        })
    }

    /// The engine for plugins with (or without) fuel whose memory may grow to
    /// `max_memory_bytes`, made on first use.
    pub fn for_plugin(&self, fuel: bool, max_memory_bytes: u64) -> Result<Engine, PluginError> {
        let kind = EngineKind {
            fuel,
            memory_reservation: memory_reservation(max_memory_bytes),
        };
        let mut made = lock(&self.made);
        if let Some((_, engine)) = made.iter().find(|(k, _)| *k == kind) {
            return Ok(engine.clone());
        }
        let engine = engine(&self.host, kind, self.slots)?;
        made.push((kind, engine.clone()));
        Ok(engine)
    }

    /// Epoch ticks that cover `timeout` (rounded up, at least one).
    pub fn deadline_ticks(&self, timeout: Duration) -> u64 {
        let tick = self.tick.as_nanos().max(1);
        (timeout.as_nanos().div_ceil(tick)).clamp(1, u128::from(u64::MAX / 2)) as u64
    }
}

/// A thread that advances the epoch of every engine made so far, every tick, until
/// dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(made: Made, tick: Duration) -> Result<Self, PluginError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("r1-plugin-epoch".into())
            .spawn(move || {
                // `recv_timeout` doubles as the sleep: the sender's drop wakes it at once.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    for (_, engine) in lock(&made).iter() {
                        engine.increment_epoch();
                    }
                }
            })
            .map_err(|e| PluginError::Host(format!("cannot start the epoch ticker thread: {e}")))?;
        Ok(Ticker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reservation_is_the_cap_in_whole_pages() {
        assert_eq!(memory_reservation(64 << 10), 64 << 10);
        assert_eq!(memory_reservation((64 << 10) + 1), 128 << 10);
        assert_eq!(memory_reservation(64 << 20), 64 << 20);
        assert_eq!(memory_reservation(1 << 32), 1 << 32);
    }
}
