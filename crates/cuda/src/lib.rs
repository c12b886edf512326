//! ulmfit-cuda: the CUDA backend of ulmfit-rs.
//!
//! - [`device`]: driver probe, one context and stream, cuBLAS handle, NVRTC kernel cache.
//! - [`error`]: CUDA errors with what was being done, out of memory with the size.
//! - [`launch`]: NVRTC kernel bundles loaded by name, the one launch path of `lm` and `clas`.
//! - [`plan`]: the LSTM layer as a list of GEMMs and cell launches (forward and backward).
//! - [`lstm`]: runs those lists on the GPU, directly or as CUDA graphs.
//! - [`lm`]: the AWD-LSTM language-model training step, device-resident.
//! - [`clas`]: the ULMFiT classifier's training step and evaluation, device-resident.
//!
//! Kernels are CUDA C in `kernels/*.cu` at the workspace root, embedded with `include_str!`.
//! Each part is checked against a CPU spec: the LSTM against `ulmfit_lstm::reference`, the
//! LM against `lm::reference`, the classifier against `ulmfit_trainer::classifier`.
//! Builds and runs its CPU-side tests with no CUDA installed (`dynamic-loading`).

#![warn(missing_docs)]

pub mod clas;
pub mod device;
pub mod error;
pub mod launch;
pub mod lm;
pub mod lstm;
pub mod plan;

pub use device::Gpu;
pub use error::{Error, Result};
pub use lstm::LstmCuda;
