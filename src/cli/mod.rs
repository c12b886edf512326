//! Subcommand implementations, one module per family.

pub mod bench;
pub mod text;
