//! ulmfit-tensor: f32 tensors with reverse-mode autograd, the engine under ulmfit-rs.
//!
//! - `tensor.rs`: the `Tensor` handle (shape, data, gradient).
//! - `autograd.rs`: the `Op` trait, grad mode, `backward` (one sort, one reverse loop).
//! - `ops/`: every differentiable op, forward and backward side by side.
//! - `gemm.rs`: the CPU matrix product all matmuls use.
//! - `optim.rs`: SGD with momentum, Adam(W), parameter groups, gradient clipping.
//! - `rng.rs`: seeded random numbers for initialisation and dropout masks.

pub mod autograd;
pub mod error;
pub mod gemm;
pub mod ops;
pub mod optim;
mod pool;
pub mod rng;
pub mod sgemm;
pub mod tensor;

pub use autograd::{is_grad_enabled, no_grad, Op};
pub use error::{Error, Result};
pub use ops::batchnorm::BatchNormStats;
pub use rng::Rng;
pub use tensor::Tensor;
