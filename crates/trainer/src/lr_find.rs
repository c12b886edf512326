//! fastai's LR range test on the config's pretraining stage: a fresh language model on the
//! pretraining corpus, one training step per LR of `plot::LrFinder` (exponential from 1e-7
//! to 10), stopping when the smoothed loss diverges. Checked by `tests/lr_find.rs` on PTB.

use std::path::Path;

use anyhow::{Context, Result};
use ulmfit_tensor::Rng;
use ulmfit_text::{Bptt, LmStream};

use crate::config::Config;
use crate::pipeline::{pretraining, step_config, Pretraining};
use crate::plot::{LrFindStep, LrFinder};
use crate::stages::adam;
use crate::train::{lm_train_step, TrainError};

/// Runs the range test for at most `steps` mini-batches of the pretraining data (cycling
/// through epochs if needed), draws the smoothed loss against the LR to `plot`, and returns
/// the finder (its `history` and `suggest()`).
pub fn lr_find(cfg: &Config, steps: usize, plot: &Path) -> Result<LrFinder> {
    let seed = cfg.run.seed;
    let Pretraining { train, mut lm, .. } = pretraining(cfg, &mut Rng::new(seed))?;
    let p = &cfg.pretrain;
    let mut opt = adam(lm.param_groups(), &lm.no_decay(), cfg.optim.sqr_mom, cfg.optim.eps);
    opt.groups.iter_mut().for_each(|g| g.weight_decay = p.wd);
    let step_cfg = step_config(cfg, p.clip);
    let mut finder = LrFinder::new(1e-7, 10.0, steps);
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut epoch = 0;
    let mut batches = LmStream::new(&train, p.bs, Bptt::Fixed(p.bptt), true, seed, epoch)?;
    for i in 0..steps {
        let batch = match batches.next() {
            Some(b) => b,
            None => {
                epoch += 1;
                batches = LmStream::new(&train, p.bs, Bptt::Fixed(p.bptt), true, seed, epoch)?;
                batches.next().context("lr_find: the pretraining corpus yields no batch")?
            }
        };
        let lr = finder.lr(i) as f32;
        opt.groups.iter_mut().for_each(|g| g.lr = lr);
        match lm_train_step(&mut lm, &mut opt, &batch, step_cfg, &mut rng, i) {
            // A non-finite loss or gradient is divergence: the test ends there.
            Err(TrainError::NonFinite { .. }) => break,
            Err(e) => return Err(e.into()),
            Ok(loss) if finder.record(loss as f64) != LrFindStep::Continue => break,
            Ok(_) => {}
        }
    }
    finder.plot(plot)?;
    Ok(finder)
}
