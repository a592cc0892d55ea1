//! The wasmtime engines of the host and the epoch ticker that gives every call a
//! wall-time deadline. Two engines, because fuel metering is compiled into the code: one
//! for plugins without fuel (faster), one for plugins with a fuel budget.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, OptLevel};

use super::config::HostConfig;
use super::error::PluginError;

pub(crate) struct Engines {
    pub plain: Engine,
    pub fueled: Engine,
    pub tick: Duration,
    _ticker: Ticker,
}

fn engine(host: &HostConfig, fuel: bool) -> Result<Engine, PluginError> {
    let mut config = Config::new();
    // Every call (and the start function during instantiation) checks the epoch, so a
    // loop ends at its deadline even without fuel.
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    config.max_wasm_stack(host.max_wasm_stack_bytes);
    config.cranelift_opt_level(OptLevel::Speed);
    // Plugins are plain single-threaded modules: no shared memory, no 64-bit memory.
    config.wasm_memory64(false);
    Engine::new(&config).map_err(|e| PluginError::Host(format!("cannot create the wasm engine: {e:#}")))
}

impl Engines {
    pub fn new(host: &HostConfig) -> Result<Self, PluginError> {
        let plain = engine(host, false)?;
        let fueled = engine(host, true)?;
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
