//! Subcommand implementations, one module per family.

pub mod bench;
pub mod bench_cuda;
pub mod bench_lm;
pub mod lr_find;
pub mod predict;
pub mod text;
pub mod train;

/// Where a command runs (`--device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The CPU (our SIMD kernels, rayon threads).
    Cpu,
    /// The first CUDA GPU (needs a driver; the kernels compile at run time).
    Cuda,
}
