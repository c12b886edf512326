//! ulmfit-tensor: f32 tensors with reverse-mode autograd, the engine under ulmfit-rs.
//!
//! - `tensor.rs`: the `Tensor` handle (shape, data, gradient).
//! - `autograd.rs`: the `Op` trait, grad mode, `backward` (one sort, one reverse loop).
//! - `ops/`: every differentiable op, forward and backward side by side.
//! - `gemm.rs`: `MatRef` (a strided matrix view) and `sgemm`, the entry point of every matmul.
//!   It calls `sgemm::gemm`, which runs our AVX-512 kernel when the CPU has AVX-512F and
//!   `portable_sgemm` (matrixmultiply, split over rayon threads) otherwise.
//! - `sgemm/`: the AVX-512 GEMM: packing, BLIS-style blocking, micro-kernel; `PackedB` keeps
//!   a packed B for reuse across products (the LSTM's recurrent weight).
//! - `pool.rs`: a per-thread cache of large f32 buffers that big op outputs (and the fused
//!   LSTM's traces) reuse.
//! - `optim.rs`: SGD with momentum, Adam(W), parameter groups, gradient clipping.
//! - `rng.rs`: seeded random numbers for initialisation and dropout masks.
//! - `simd.rs`: SIMD lanes picked at run time, exp / sigmoid / tanh on them (the fused LSTM
//!   cell's), and the softmax row kernel of the cross-entropy ops.
//! - `error.rs`: the crate's `Error` and `Result`.

pub mod autograd;
pub mod error;
pub mod gemm;
pub mod ops;
pub mod optim;
pub mod pool;
pub mod rng;
pub mod sgemm;
pub mod simd;
pub mod tensor;

pub use autograd::{is_grad_enabled, no_grad, Op};
pub use error::{Error, Result};
pub use ops::batchnorm::BatchNormStats;
pub use rng::Rng;
pub use tensor::Tensor;
