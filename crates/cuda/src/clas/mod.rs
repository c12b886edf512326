//! The ULMFiT text classifier on the GPU (fastai's `get_text_classifier`): the AWD-LSTM
//! encoder read in BPT3C chunks (documents sorted longest first, each chunk on the rows still
//! inside their document, state carried and detached between chunks), concat pooling
//! `[last, max, mean]` over each document's last `max_len` steps, the head
//! `BN -> dropout -> linear(3E, F) -> ReLU -> BN -> dropout -> linear(F, C)`, softmax
//! cross-entropy, the backward through the kept chunks, clipping and Adam with one learning
//! rate per parameter group (frozen groups untouched). Device-resident, llm.c style.
//!
//! - [`config`]: sizes, dropouts, per-group optimizer settings, errors.
//! - [`params`]: host weights and the flat device layout (one range per group).
//! - [`chunks`]: the BPT3C schedule of a batch and where each chunk sits in the arenas.
//! - [`kernels`]: `kernels/clas_*.cu`, compiled once, one launch wrapper per kernel.
//! - `bufs`: the device buffers (chunk arenas, scratch, head).
//! - [`model`]: [`ClasCuda`], the public API and host copies.
//! - `passes`: forward, backward, update.
//!
//! Checked against `ulmfit_trainer::classifier` (the CPU classifier) by
//! crates/trainer/tests/clas_cuda_vs_cpu.rs; the schedule and layout by tests/clas_on_cpu.rs.

mod bufs;
pub mod chunks;
pub mod config;
pub mod kernels;
pub mod model;
pub mod params;
mod passes;

pub use config::{ClasConfig, ClasDropouts, ClasError, ClasHyper};
pub use model::ClasCuda;
pub use params::{ClasWeights, HeadWeights};
pub use passes::{mask_id, ClasMask};
