//! ulmfit-cuda: the CUDA backend of ulmfit-rs.
//!
//! - [`device`]: driver probe, one context and stream, cuBLAS handle, NVRTC kernel cache.
//! - [`plan`]: the LSTM layer as a list of GEMMs and cell launches (forward and backward).
//! - [`lstm`]: runs those lists on the GPU, directly or as CUDA graphs.
//!
//! Kernels are CUDA C in `kernels/*.cu` at the workspace root, embedded with `include_str!`.
//! Everything is checked against the CPU reference in `ulmfit_lstm::reference`.
//! Builds and runs its CPU-side tests with no CUDA installed (`dynamic-loading`).

#![warn(missing_docs)]

pub mod clas;
pub mod device;
pub mod error;
pub mod lm;
pub mod lstm;
pub mod plan;

pub use device::Gpu;
pub use error::{Error, Result};
pub use lstm::LstmCuda;
