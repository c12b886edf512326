//! `ulmfit lr-find CONFIG`: fastai's LR range test on the config's pretraining stage; draws
//! the smoothed loss against the LR and prints the suggested LR. It runs on the CPU.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use clap::Args;
use ulmfit_trainer::config::{Config, DeviceKind};
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
    let dir = a.out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    ensure!(dir.is_dir(), "--out {}: the directory {} does not exist", a.out.display(), dir.display());
    let cfg = Config::load(&a.config)?;
    if cfg.run.device != DeviceKind::Cpu {
        eprintln!("lr-find runs on the CPU (the config's run.device is not used)");
    }
    let finder = lr_find(&cfg, a.steps, &a.out)?;
    println!("{} steps tried, plot written to {}", finder.history.len(), a.out.display());
    match finder.suggest() {
        Some(lr) => println!("suggested LR: {lr:.3e}"),
        None => println!("no suggested LR: too few steps before the loss diverged"),
    }
    Ok(())
}
