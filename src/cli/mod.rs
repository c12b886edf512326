//! Subcommand implementations, one module per family.

pub mod bench;
pub mod bench_cuda;
pub mod bench_lm;
pub mod lr_find;
pub mod predict;
pub mod text;
pub mod train;
