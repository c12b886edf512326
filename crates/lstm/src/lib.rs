//! ulmfit-lstm: the LSTM layer of ulmfit-rs, fused for the CPU.
//!
//! - [`reference`](mod@reference): plain loops, the spec (gate order i, f, g, o as PyTorch).
//! - [`layer`]: the fused layer, forward and backward through time over a whole sequence.
//! - [`op`]: the fused layer as one `ulmfit_tensor` autograd op.
//! - [`cell`]: the per-step fused cell kernels (AVX-512, AVX2+FMA, scalar), picked at run time.
//! - [`stack`]: multi-layer stacks with per-layer sizes, carried state and DropConnect.
//! - `batched`: the time loops with one packed GEMM per step over all rows (large H).
//! - `recurrent`: the per-step recurrent products with W_hh prepared once per sequence.
//! - `split`: the time loops for small layers, hidden units split across threads.

mod batched;
pub mod cell;
pub mod layer;
pub mod op;
mod recurrent;
pub mod reference;
mod split;
pub mod stack;
#[cfg(test)]
mod testutil;

pub use cell::Isa;
pub use reference::{LstmDims, LstmGrads, LstmOutput, LstmParams};
pub use stack::{DropMask, LayerWeights, LstmStack};
