//! `ulmfit lr-find CONFIG`: fastai's LR range test on the config's pretraining stage; draws
//! the smoothed loss against the LR and prints the suggested LR.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use clap::Args;
use ulmfit_trainer::config::Config;
use ulmfit_trainer::lr_find::lr_find;

/// `ulmfit lr-find` options.
#[derive(Args)]
pub struct LrFindArgs {
    /// The pipeline's TOML config (see configs/); its `[pretrain]` stage is tested.
    config: PathBuf,
    /// Where to draw the loss-vs-LR curve.
    #[arg(long, default_value = "lr_find.svg")]
    out: PathBuf,
    /// Number of LRs tried, from 1e-7 to 10.
    #[arg(long, default_value_t = 100)]
    steps: usize,
}

/// Runs the range test and prints the suggested LR.
pub fn run(a: LrFindArgs) -> Result<()> {
    ensure!(a.steps >= 2, "--steps {}: need at least 2", a.steps);
    let cfg = Config::load(&a.config)?;
    let finder = lr_find(&cfg, a.steps, &a.out)?;
    println!("{} steps tried, plot written to {}", finder.history.len(), a.out.display());
    match finder.suggest() {
        Some(lr) => println!("suggested LR: {lr:.3e}"),
        None => println!("no suggested LR: too few steps before the loss diverged"),
    }
    Ok(())
}
