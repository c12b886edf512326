//! Optimizers over parameter groups: SGD with momentum, Adam with decoupled weight decay
//! (AdamW, fastai's `true_wd`), and global-norm gradient clipping.
//!
//! A group is a list of parameters with its own learning rate (discriminative fine-tuning
//! gives each layer group `lr / 2.6^k`), betas and weight decay; schedules set `lr` and
//! `betas` on the groups between steps. Frozen parameters (requires_grad false) and
//! parameters without a gradient are skipped and keep their optimizer state. Weight decay
//! skips the parameters a group marks (fastai's `do_wd`: with its default `wd_bn_bias=False`,
//! batch-norm parameters and the biases of linear layers are not decayed).

use crate::Tensor;

/// Parameters that share hyper-parameters.
pub struct ParamGroup {
    /// The parameters (leaf tensors).
    pub params: Vec<Tensor>,
    /// Learning rate.
    pub lr: f32,
    /// Adam's (beta1, beta2); for SGD, beta1 is the momentum.
    pub betas: (f32, f32),
    /// Decoupled weight decay: each step multiplies the weights by `1 - lr * weight_decay`.
    pub weight_decay: f32,
    /// Per parameter (same length as `params`): whether `weight_decay` applies to it.
    pub decays: Vec<bool>,
}

impl ParamGroup {
    /// A group with the given learning rate, betas (0.9, 0.99) and no weight decay; every
    /// parameter would be decayed if `weight_decay` were set.
    pub fn new(params: Vec<Tensor>, lr: f32) -> Self {
        let decays = vec![true; params.len()];
        ParamGroup { params, lr, betas: (0.9, 0.99), weight_decay: 0.0, decays }
    }

    /// The group with weight decay turned off for the parameters in `exempt` (the same
    /// tensors, compared by identity; others in `exempt` are ignored).
    pub fn without_decay_for(mut self, exempt: &[Tensor]) -> Self {
        for (p, decays) in self.params.iter().zip(&mut self.decays) {
            *decays &= !exempt.iter().any(|e| e.same(p));
        }
        self
    }

    /// The factor `1 - lr * weight_decay` for parameter `k`, or 1 when it is not decayed.
    fn decay_factor(&self, k: usize) -> f32 {
        assert_eq!(self.decays.len(), self.params.len(), "ParamGroup: one decay flag per parameter");
        if self.decays[k] {
            1.0 - self.lr * self.weight_decay
        } else {
            1.0
        }
    }
}

/// The per-parameter state of Adam (or the velocity of SGD, in `m`); empty until the
/// parameter's first update. Exposed so checkpoints can save and restore it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Moments {
    /// First moment (SGD: velocity).
    pub m: Vec<f32>,
    /// Second moment (unused by SGD).
    pub v: Vec<f32>,
    /// Updates applied so far (for bias correction).
    pub steps: u32,
}

/// Adam with decoupled weight decay and per-parameter bias correction.
pub struct Adam {
    /// The parameter groups; change `lr` / `betas` here to schedule them.
    pub groups: Vec<ParamGroup>,
    /// Added to the denominator (fastai uses 1e-5, PyTorch 1e-8).
    pub eps: f32,
    state: Vec<Vec<Moments>>,
}

impl Adam {
    /// An optimizer over `groups`.
    pub fn new(groups: Vec<ParamGroup>, eps: f32) -> Self {
        let state = groups.iter().map(|g| vec![Moments::default(); g.params.len()]).collect();
        Adam { groups, eps, state }
    }

    /// One update of every trainable parameter that has a gradient.
    pub fn step(&mut self) {
        for (group, states) in self.groups.iter().zip(&mut self.state) {
            let (b1, b2) = group.betas;
            for (k, (p, st)) in group.params.iter().zip(states.iter_mut()).enumerate() {
                let Some(grad) = trainable_grad(p) else { continue };
                if st.m.is_empty() {
                    st.m = vec![0.0; p.numel()];
                    st.v = vec![0.0; p.numel()];
                }
                st.steps += 1;
                let c1 = 1.0 - b1.powi(st.steps as i32);
                let c2 = 1.0 - b2.powi(st.steps as i32);
                let decay = group.decay_factor(k);
                let g = grad.data();
                let mut w = p.data_mut();
                for i in 0..w.len() {
                    st.m[i] = b1 * st.m[i] + (1.0 - b1) * g[i];
                    st.v[i] = b2 * st.v[i] + (1.0 - b2) * g[i] * g[i];
                    let update = (st.m[i] / c1) / ((st.v[i] / c2).sqrt() + self.eps);
                    w[i] = w[i] * decay - group.lr * update;
                }
            }
        }
    }

    /// Clears the gradients of every parameter in every group.
    pub fn zero_grad(&self) {
        zero_grads(&self.groups);
    }

    /// The moments of every parameter, indexed `[group][param]` like `groups`.
    pub fn moments(&self) -> &[Vec<Moments>] {
        &self.state
    }

    /// Mutable moments, for restoring a checkpoint.
    pub fn moments_mut(&mut self) -> &mut [Vec<Moments>] {
        &mut self.state
    }
}

/// SGD with (PyTorch-style) momentum: `v = mu * v + g; w -= lr * v`, with decoupled decay.
pub struct Sgd {
    /// The parameter groups; `betas.0` is the momentum.
    pub groups: Vec<ParamGroup>,
    state: Vec<Vec<Moments>>,
}

impl Sgd {
    /// An optimizer over `groups`.
    pub fn new(groups: Vec<ParamGroup>) -> Self {
        let state = groups.iter().map(|g| vec![Moments::default(); g.params.len()]).collect();
        Sgd { groups, state }
    }

    /// One update of every trainable parameter that has a gradient.
    pub fn step(&mut self) {
        for (group, states) in self.groups.iter().zip(&mut self.state) {
            let mu = group.betas.0;
            for (k, (p, st)) in group.params.iter().zip(states.iter_mut()).enumerate() {
                let Some(grad) = trainable_grad(p) else { continue };
                if st.m.is_empty() {
                    st.m = vec![0.0; p.numel()];
                }
                let decay = group.decay_factor(k);
                let g = grad.data();
                let mut w = p.data_mut();
                for i in 0..w.len() {
                    st.m[i] = mu * st.m[i] + g[i];
                    w[i] = w[i] * decay - group.lr * st.m[i];
                }
            }
        }
    }

    /// Clears the gradients of every parameter in every group.
    pub fn zero_grad(&self) {
        zero_grads(&self.groups);
    }
}

fn trainable_grad(p: &Tensor) -> Option<Tensor> {
    if p.requires_grad() {
        p.grad()
    } else {
        None
    }
}

fn zero_grads(groups: &[ParamGroup]) {
    groups.iter().flat_map(|g| &g.params).for_each(Tensor::zero_grad);
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`; returns the
/// norm before clipping. Non-finite norms are returned unchanged and nothing is scaled, so
/// the caller can stop the run on a NaN.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f32) -> f32 {
    let grads: Vec<Tensor> = params.iter().filter_map(trainable_grad).collect();
    let sq: f64 = grads.iter().map(|g| g.data().iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()).sum();
    let norm = sq.sqrt() as f32;
    if norm.is_finite() && norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        grads.iter().for_each(|g| g.data_mut().iter_mut().for_each(|x| *x *= s));
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_with_grad(w: Vec<f32>, g: Vec<f32>) -> Tensor {
        let n = w.len();
        let p = Tensor::param(w, &[n]).unwrap();
        *p.0.grad.borrow_mut() = Some(Tensor::from_vec(g, &[n]).unwrap());
        p
    }

    #[test]
    fn adam_first_step_matches_formula() {
        // Step 1: m_hat = g, v_hat = g^2, so w -= lr * g / (|g| + eps), after w *= 1 - lr*wd
        // for decayed parameters only.
        let p = param_with_grad(vec![1.0, -2.0], vec![0.5, -4.0]);
        let bias = param_with_grad(vec![1.0], vec![0.5]);
        let mut group =
            ParamGroup::new(vec![p.clone(), bias.clone()], 0.1).without_decay_for(std::slice::from_ref(&bias));
        group.weight_decay = 0.01;
        let mut opt = Adam::new(vec![group], 1e-8);
        opt.step();
        let w = p.to_vec();
        assert!((w[0] - (1.0 * 0.999 - 0.1)).abs() < 1e-6, "{w:?}");
        assert!((w[1] - (-2.0 * 0.999 + 0.1)).abs() < 1e-6, "{w:?}");
        let b = bias.to_vec();
        assert!((b[0] - (1.0 - 0.1)).abs() < 1e-6, "an exempt parameter was decayed: {b:?}");
    }

    #[test]
    fn frozen_params_do_not_move_and_clipping_scales() {
        let p = param_with_grad(vec![1.0], vec![1.0]);
        p.set_requires_grad(false).unwrap();
        let mut sgd = Sgd::new(vec![ParamGroup::new(vec![p.clone()], 0.5)]);
        sgd.step();
        assert_eq!(p.to_vec(), vec![1.0]);
        let q = param_with_grad(vec![0.0, 0.0], vec![3.0, 4.0]);
        assert_eq!(clip_grad_norm(std::slice::from_ref(&q), 1.0), 5.0);
        let g = q.grad().unwrap().to_vec();
        assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5);
    }
}
