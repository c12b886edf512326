//! The AWD-LSTM language-model training step on the GPU (fastai's `awd_lstm_lm_config`):
//! embedding with embedding and input dropout, LSTM layers (the fused layer of
//! `crate::lstm`'s plans) with DropConnect on W_hh and hidden dropout, output dropout, tied
//! decoder, fused softmax + cross-entropy, AR and TAR, global-norm clipping and one fused
//! Adam(W) kernel. All of it device-resident; masks from a counter-based hash.
//!
//! - [`config`]: sizes, dropouts, optimizer settings, errors.
//! - [`params`]: host weights and the flat device layout.
//! - [`mask`]: the hash every mask is drawn from (twin of `kernels/lm_hash.cu`).
//! - [`reference`]: the step in plain loops: the spec.
//! - [`kernels`]: `kernels/lm_*.cu`, compiled once, one launch wrapper per kernel.
//! - [`steps`]: the step as lists of device ops on named buffers (replayed on the CPU by
//!   tests/lm_replay.rs).
//! - `layer`: the buffers an LSTM layer owns.
//! - [`model`]: [`LmCuda`], the step, forward then backward then update, or CUDA graphs.
//! - [`phases`]: the step cut into named phases, each timed from its own graph (the bench).
//! - `readback`: host copies of the loss, weights, gradients, moments and state.

pub mod config;
pub mod kernels;
mod layer;
pub mod mask;
pub mod model;
pub mod params;
pub mod phases;
mod readback;
pub mod reference;
pub mod steps;

pub use config::{Dropouts, GroupHyper, Hyper, LmConfig, LmError, HYPER_LEN, PAD};
pub use model::LmCuda;
pub use params::LmWeights;
