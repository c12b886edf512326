//! `ulmfit tokenize`, `ulmfit vocab`, `ulmfit download`. (Filled by the text pipeline.)
use clap::Args;

/// Arguments of `ulmfit tokenize`.
#[derive(Args)]
pub struct TokenizeArgs {}
/// Arguments of `ulmfit vocab`.
#[derive(Args)]
pub struct VocabArgs {}
/// Arguments of `ulmfit download`.
#[derive(Args)]
pub struct DownloadArgs {}

/// Runs `ulmfit tokenize`.
pub fn tokenize(_args: TokenizeArgs) -> anyhow::Result<()> { anyhow::bail!("not built yet") }
/// Runs `ulmfit vocab`.
pub fn vocab(_args: VocabArgs) -> anyhow::Result<()> { anyhow::bail!("not built yet") }
/// Runs `ulmfit download`.
pub fn download(_args: DownloadArgs) -> anyhow::Result<()> { anyhow::bail!("not built yet") }
