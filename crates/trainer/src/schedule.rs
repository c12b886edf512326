//! Learning-rate schedules of ULMFiT: slanted triangular LR (paper eq. 3), fastai's one-cycle
//! with cyclical momentum, discriminative per-group LRs and gradual unfreezing as data.
//!
//! Every schedule is a pure function of the step; `tests/infra_schedule.rs` checks each one
//! against its formula at hand-computed points. Groups are ordered bottom (embedding) to top
//! (head), as `Adam::groups` holds them.

use std::f64::consts::PI;

use ulmfit_tensor::optim::ParamGroup;

/// Slanted triangular LR, Howard & Ruder (2018) eq. 3, at update `step` of `total_steps`:
/// `cut = floor(T * cut_frac)`; `p = t / cut` before the cut, else
/// `1 - (t - cut) / (cut * (1 / cut_frac - 1))`; `lr = lr_max * (1 + p * (ratio - 1)) / ratio`.
/// `cut` is at least 1 and `p` at least 0: where `T * cut_frac` is not a whole number the
/// floor would otherwise make the last few LRs negative.
pub fn slanted_triangular(step: usize, total_steps: usize, lr_max: f32, cut_frac: f32, ratio: f32) -> f32 {
    let (t, cut_frac, ratio) = (step as f64, cut_frac as f64, ratio as f64);
    let cut = ((total_steps as f64 * cut_frac).floor()).max(1.0);
    let p = if t < cut { t / cut } else { 1.0 - (t - cut) / (cut * (1.0 / cut_frac - 1.0)) };
    (lr_max as f64 * (1.0 + p.max(0.0) * (ratio - 1.0)) / ratio) as f32
}

/// fastai's `SchedCos(start, end)` at `pos` in [0, 1]: half a cosine from `start` to `end`.
fn cos_anneal(start: f64, end: f64, pos: f64) -> f64 {
    start + (1.0 + (PI * (1.0 - pos)).cos()) * (end - start) / 2.0
}

/// fastai's `fit_one_cycle`: LR warms up from `lr_max / div` to `lr_max` over the first
/// `pct_start` of the steps, then anneals to `lr_max / div_final`, both by half cosines;
/// Adam's beta1 goes `moms.0 -> moms.1 -> moms.2` over the same two phases.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycle {
    /// Peak learning rate.
    pub lr_max: f32,
    /// Start LR is `lr_max / div` (fastai 25).
    pub div: f32,
    /// Final LR is `lr_max / div_final` (fastai 1e5).
    pub div_final: f32,
    /// Fraction of the steps spent warming up (fastai 0.25).
    pub pct_start: f32,
    /// beta1 at the start, the LR peak and the end (fastai 0.95, 0.85, 0.95; `TextLearner` 0.8, 0.7, 0.8).
    pub moms: (f32, f32, f32),
}

impl OneCycle {
    /// fastai's defaults around `lr_max`.
    pub fn new(lr_max: f32) -> Self {
        OneCycle { lr_max, div: 25.0, div_final: 1e5, pct_start: 0.25, moms: (0.95, 0.85, 0.95) }
    }

    /// (lr, beta1) at update `step` of `total` (fastai's position `step / total`).
    pub fn at(&self, step: usize, total: usize) -> (f32, f32) {
        let pos = if total == 0 { 0.0 } else { (step as f64 / total as f64).min(1.0) };
        let pct = self.pct_start as f64;
        let (lr, m) = (self.lr_max as f64, self.moms);
        let (start, end) = (lr / self.div as f64, lr / self.div_final as f64);
        if pos < pct {
            let x = pos / pct;
            (cos_anneal(start, lr, x) as f32, cos_anneal(m.0 as f64, m.1 as f64, x) as f32)
        } else {
            let x = (pos - pct) / (1.0 - pct);
            (cos_anneal(lr, end, x) as f32, cos_anneal(m.1 as f64, m.2 as f64, x) as f32)
        }
    }
}

/// The schedule a fit runs, peak-relative so each group's own LR can be scaled by it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// fastai's one-cycle; its `lr_max` is ignored here (the groups carry their peaks).
    OneCycle(OneCycle),
    /// Slanted triangular LR with (cut_frac, ratio); beta1 stays as the optimizer has it.
    Slanted { cut_frac: f32, ratio: f32 },
}

impl Schedule {
    /// (LR as a fraction of the peak, beta1 if the schedule sets it) at `step` of `total`.
    /// Both schedules are linear in the peak LR, so group g's LR is `peak_g * fraction`.
    pub fn at(&self, step: usize, total: usize) -> (f32, Option<f32>) {
        match *self {
            Schedule::OneCycle(oc) => {
                let (lr, mom) = OneCycle { lr_max: 1.0, ..oc }.at(step, total);
                (lr, Some(mom))
            }
            Schedule::Slanted { cut_frac, ratio } => (slanted_triangular(step, total, 1.0, cut_frac, ratio), None),
        }
    }

    /// Sets each group's `lr` to `peaks[g] * fraction` (and beta1 when scheduled) for `step`.
    pub fn apply(&self, groups: &mut [ParamGroup], peaks: &[f32], step: usize, total: usize) {
        assert_eq!(groups.len(), peaks.len(), "Schedule::apply: {} groups but {} peak LRs", groups.len(), peaks.len());
        let (frac, beta1) = self.at(step, total);
        for (g, &peak) in groups.iter_mut().zip(peaks) {
            g.lr = peak * frac;
            if let Some(b1) = beta1 {
                g.betas.0 = b1;
            }
        }
    }
}

/// The paper's discriminative LRs, bottom group first: the top group gets `lr_last`, the
/// group k below it `lr_last / factor^k` (factor 2.6).
pub fn discriminative_lrs(lr_last: f32, n_groups: usize, factor: f32) -> Vec<f32> {
    (0..n_groups).map(|g| (lr_last as f64 / (factor as f64).powi((n_groups - 1 - g) as i32)) as f32).collect()
}

/// fastai's `slice(lo, hi)` over `n_groups` (`even_mults`): geometric from `lo` (bottom) to
/// `hi` (top). One group gets `hi`.
pub fn slice_lrs(lo: f32, hi: f32, n_groups: usize) -> Vec<f32> {
    if n_groups <= 1 {
        return vec![hi; n_groups];
    }
    let step = (hi as f64 / lo as f64).powf(1.0 / (n_groups - 1) as f64);
    (0..n_groups).map(|g| (lo as f64 * step.powi(g as i32)) as f32).collect()
}

/// One stage of gradual unfreezing: fastai's `freeze_to(-n); fit_one_cycle(epochs, slice(lr_max / lr_div, lr_max))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FreezeStage {
    /// How many groups, counted from the top, train (1 = only the head, `usize::MAX` = all).
    pub trainable_groups_from_top: usize,
    /// Epochs in this stage.
    pub epochs: usize,
    /// LR of the top group.
    pub lr_max: f32,
    /// The bottom group gets `lr_max / lr_div` (1 = the same LR everywhere, 2.6^4 = fastai's slice).
    pub lr_div: f32,
}

impl FreezeStage {
    /// Whether group `g` (0 = bottom) trains in this stage.
    pub fn is_trainable(&self, g: usize, n_groups: usize) -> bool {
        g + self.trainable_groups_from_top.min(n_groups) >= n_groups
    }

    /// Peak LR of each group, bottom first (frozen groups included, as fastai lists them).
    pub fn lrs(&self, n_groups: usize) -> Vec<f32> {
        slice_lrs(self.lr_max / self.lr_div, self.lr_max, n_groups)
    }

    /// Freezes and unfreezes the parameters of `groups` for this stage.
    pub fn apply(&self, groups: &[ParamGroup]) -> ulmfit_tensor::Result<()> {
        for (g, group) in groups.iter().enumerate() {
            let on = self.is_trainable(g, groups.len());
            group.params.iter().try_for_each(|p| p.set_requires_grad(on))?;
        }
        Ok(())
    }
}

/// 2.6^4: fastai's `slice(lr / 2.6**4, lr)` spread, x2.6 per group over 5 groups.
pub const SLICE_DIV: f32 = 45.6976;

/// fastai's IMDb classifier recipe (`nbs/38_tutorial.text.ipynb`), with every LR scaled by
/// `base_lr / 2e-2` (pass 2e-2 for the notebook's values): freeze_to(-1) 1 epoch at 2e-2;
/// freeze_to(-2) 1 epoch slice(1e-2/2.6^4, 1e-2); freeze_to(-3) 1 epoch slice(5e-3/2.6^4, 5e-3);
/// unfreeze, 2 epochs slice(1e-3/2.6^4, 1e-3).
pub fn fastai_classifier_recipe(base_lr: f32) -> Vec<FreezeStage> {
    let s = base_lr / 2e-2;
    let stage = |groups, epochs, lr: f32, lr_div| FreezeStage {
        trainable_groups_from_top: groups,
        epochs,
        lr_max: lr * s,
        lr_div,
    };
    vec![
        stage(1, 1, 2e-2, 1.0),
        stage(2, 1, 1e-2, SLICE_DIV),
        stage(3, 1, 5e-3, SLICE_DIV),
        stage(usize::MAX, 2, 1e-3, SLICE_DIV),
    ]
}
