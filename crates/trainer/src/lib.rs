//! ulmfit-trainer: the ULMFiT method on top of the engine (being built).
//!
//! - `schedule.rs`: slanted triangular LR, one-cycle with cyclical momentum, discriminative LRs.
//! - `checkpoint.rs`: safetensors weights + vocabulary + config, written atomically.
//! - `metrics.rs`, `plot.rs`, `progress.rs`: per-epoch metrics files, curves, progress bars.
//! - `config.rs`: the TOML pipeline configuration.

pub mod checkpoint;
pub mod config;
pub mod metrics;
pub mod plot;
pub mod progress;
pub mod schedule;
