//! Subcommand implementations, one module per family.

pub mod bench;
pub mod bench_cuda;
pub mod text;
