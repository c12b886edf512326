//! `ulmfit bench ...`: throughput benchmarks that check before they time.
use clap::Subcommand;

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Matrix multiply GFLOP/s against raw matrixmultiply.
    Matmul,
}

/// Runs one benchmark.
pub fn run(_cmd: BenchCommand) -> anyhow::Result<()> { anyhow::bail!("not built yet") }
