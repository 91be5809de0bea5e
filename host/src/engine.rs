//! The shared wasmtime engines: one with epoch interruption only, one that also meters
//! fuel.
//!
//! Every component runs on one of two engines per host. Fuel metering instruments the
//! compiled code and slows every guest down (roughly 2× on branchy code against 10–15%
//! for epochs, see `spec/limits.md`), so only apps that ask for a fuel budget pay for it.
//! Both engines use the pooling allocator with copy-on-write memory images, so an
//! instance is a few pre-reserved slots and a mapping, not a fresh allocation.
//!
//! Epochs drive wall-clock limits: a ticker thread advances both engines every
//! [`EngineOptions::epoch_tick`]; a running guest yields to the executor on every tick
//! and is stopped once its deadline has passed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dabba_spec::limits::MAX_MEMORY;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Bytes of each linear memory kept resident between instances when dirty pages can be
/// found with PAGEMAP_SCAN.
const RESIDENT_WITH_PAGEMAP: usize = 64 << 10;

/// How a host sizes its engines.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Component instances that may be live at once across the host, per engine. Each
    /// takes a pre-reserved slot of virtual address space. By default: 1000.
    pub max_instances: u32,
    /// How often epochs advance: the granularity of timeouts and of preemption.
    /// By default: 5 ms.
    pub epoch_tick: Duration,
    /// Use the pooling allocator when the host can reserve its address space.
    /// By default: true (falls back to on-demand allocation if the reservation fails).
    pub pooling: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_instances: 1000,
            epoch_tick: Duration::from_millis(5),
            pooling: true,
        }
    }
}

/// Which engine a component is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metering {
    /// Epoch interruption only.
    Epoch,
    /// Epochs and fuel.
    Fuel,
}

/// The two engines, and the ticker that advances their epochs.
pub struct Engines {
    epoch: Engine,
    fuel: Engine,
    pooling: bool,
    tick: Duration,
    ticker: Arc<AtomicBool>,
}

impl Engines {
    pub fn new(options: &EngineOptions) -> anyhow::Result<Engines> {
        let (epoch, fuel, pooling) = if options.pooling {
            match (
                Engine::new(&config(false, Some(options))),
                Engine::new(&config(true, Some(options))),
            ) {
                (Ok(e), Ok(f)) => (e, f, true),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(
                        error = %e,
                        "could not reserve address space for the pooling allocator; \
                         falling back to on-demand instance allocation"
                    );
                    on_demand()?
                }
            }
        } else {
            on_demand()?
        };
        let stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(&epoch, &fuel, options.epoch_tick, stop.clone());
        Ok(Engines {
            epoch,
            fuel,
            pooling,
            tick: options.epoch_tick,
            ticker: stop,
        })
    }

    pub fn get(&self, metering: Metering) -> &Engine {
        match metering {
            Metering::Epoch => &self.epoch,
            Metering::Fuel => &self.fuel,
        }
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// The epoch period.
    pub fn tick(&self) -> Duration {
        self.tick
    }
}

impl Drop for Engines {
    fn drop(&mut self) {
        self.ticker.store(true, Ordering::Relaxed);
    }
}

fn on_demand() -> anyhow::Result<(Engine, Engine, bool)> {
    Ok((
        Engine::new(&config(false, None))?,
        Engine::new(&config(true, None))?,
        false,
    ))
}

fn config(fuel: bool, pooling: Option<&EngineOptions>) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.consume_fuel(fuel);
    c.memory_init_cow(true);
    // `DABBA_PROFILE=perfmap` writes /tmp/perf-PID.map, so `perf report` names the
    // guests' functions (`wasm[0]::function[N]` becomes the Rust symbol).
    if std::env::var("DABBA_PROFILE").is_ok_and(|v| v == "perfmap") {
        c.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if let Some(o) = pooling {
        let n = o.max_instances;
        let mut p = PoolingAllocationConfig::default();
        // A Rust component holds a handful of core instances (its module and the
        // canonical-ABI shims), one linear memory and a few tables.
        p.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(MAX_MEMORY.as_usize());
        // Resetting a slot with madvise and refaulting its pages on the next request
        // costs cross-core TLB shootdowns under load. Where Linux can report which pages
        // were written (PAGEMAP_SCAN, kernel 6.7+), keep a few MiB of each memory
        // resident and restore only the dirty pages; elsewhere keep only a little, since
        // the whole resident part is rewritten on every reset.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            p.pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(RESIDENT_WITH_PAGEMAP)
                .table_keep_resident(64 * 1024);
        } else {
            p.linear_memory_keep_resident(64 * 1024)
                .table_keep_resident(16 * 1024);
        }
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

/// Advances both engines' epochs every `tick` until `stop` is set or the engines are
/// gone. It holds only weak references, so it never keeps an engine alive.
fn spawn_ticker(epoch: &Engine, fuel: &Engine, tick: Duration, stop: Arc<AtomicBool>) {
    let engines = [epoch.weak(), fuel.weak()];
    std::thread::Builder::new()
        .name("dabba-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                let mut alive = false;
                for weak in &engines {
                    if let Some(engine) = weak.upgrade() {
                        engine.increment_epoch();
                        alive = true;
                    }
                }
                if !alive {
                    break;
                }
            }
        })
        .expect("spawning the epoch thread");
}
