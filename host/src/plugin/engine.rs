//! The wasmtime engines of the host and the epoch ticker that gives every call a
//! wall-time deadline. Two engines, because fuel metering is compiled into the code: one
//! for plugins without fuel (faster), one for plugins with a fuel budget.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use r1_core::plugin_abi::limits;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::config::HostConfig;
use super::error::PluginError;

pub(crate) struct Engines {
    pub plain: Engine,
    pub fueled: Engine,
    pub tick: Duration,
    _ticker: Ticker,
}

/// Tables one plugin may have (the limiter enforces the same number).
pub(crate) const MAX_TABLES: u32 = 4;

/// Linear memory of a wasm32 module at most: what a pooled memory slot must be able to hold.
const WASM32_MAX_MEMORY: usize = 1 << 32;

/// Bytes of each pooled memory slot that may be reset with `memset` instead of `madvise`
/// when the slot is reused. With `pagemap_scan` (Linux 6.7+) only the pages the instance
/// dirtied are reset, so this covers a Rust plugin's 1 MiB stack, statics and first heap
/// pages without the next instance taking page faults there (measured: the math plugin's
/// evaluation 35 µs -> 15 µs; the trivial one unchanged).
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

fn engine(host: &HostConfig, fuel: bool, slots: u32) -> Result<Engine, PluginError> {
    let mut config = Config::new();
    // Every call (and the start function during instantiation) checks the epoch, so a
    // loop ends at its deadline even without fuel.
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    config.max_wasm_stack(host.max_wasm_stack_bytes);
    config.cranelift_opt_level(OptLevel::Speed);
    // Plugins are plain single-threaded modules: no shared memory, no 64-bit memory.
    config.wasm_memory64(false);
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
            .max_memory_size(WASM32_MAX_MEMORY)
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

impl Engines {
    /// Engines whose pools (when pooling) hold `slots` live evaluations each.
    pub fn new(host: &HostConfig, slots: usize) -> Result<Self, PluginError> {
        let slots = u32::try_from(slots).unwrap_or(u32::MAX);
        let plain = engine(host, false, slots)?;
        let fueled = engine(host, true, slots)?;
        let tick = Duration::from_millis(host.epoch_tick_ms);
        let ticker = Ticker::start(vec![plain.clone(), fueled.clone()], tick)?;
        Ok(Engines {
            plain,
            fueled,
            tick,
            _ticker: ticker,
        })
    }

    pub fn for_fuel(&self, fuel: bool) -> &Engine {
        if fuel { &self.fueled } else { &self.plain }
    }

    /// Epoch ticks that cover `timeout` (rounded up, at least one).
    pub fn deadline_ticks(&self, timeout: Duration) -> u64 {
        let tick = self.tick.as_nanos().max(1);
        (timeout.as_nanos().div_ceil(tick)).clamp(1, u128::from(u64::MAX / 2)) as u64
    }
}

/// A thread that advances the engines' epoch every tick until dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engines: Vec<Engine>, tick: Duration) -> Result<Self, PluginError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("r1-plugin-epoch".into())
            .spawn(move || {
                // `recv_timeout` doubles as the sleep: the sender's drop wakes it at once.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    for engine in &engines {
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
