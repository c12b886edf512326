//! The classifier's steps on the GPU ([`GpuClasSteps`], a `backend::ClasSteps`): a stage's
//! classifier runs as `ulmfit_cuda::clas::ClasCuda` (BPT3C encoder, concat pooling,
//! batch-norm head, clipping and Adam per parameter group, all device-resident), set up from
//! the CPU classifier and optimizer and copied back into them on `to_host`.
//!
//! Dropout masks come from the device hash, not the CPU's RNG. `ClasCuda` is checked against
//! the CPU classifier by tests/clas_cuda_vs_cpu.rs, which also uses [`clas_weights`].

use anyhow::{Context, Result};
use ulmfit_cuda::clas::{ClasConfig, ClasCuda, ClasDropouts, ClasHyper, ClasWeights, HeadWeights};
use ulmfit_cuda::Gpu;
use ulmfit_lstm::LayerWeights;
use ulmfit_tensor::optim::{Adam, Moments};
use ulmfit_tensor::{Rng, Tensor};

use crate::backend::ClasSteps;
use crate::classifier::{Classifier, DocBatch};
use crate::stages::StagePlan;
use crate::train::TrainError;

/// The device config of `model` for batches of at most `bs` documents.
pub fn clas_config(model: &Classifier, bs: usize, seed: u64) -> ClasConfig {
    let (c, head) = (&model.encoder.cfg, &model.head);
    ClasConfig {
        vocab: c.vocab,
        emb: c.emb_sz,
        hidden: c.n_hid,
        layers: c.n_layers,
        features: head[0].weight.dim(0),
        classes: head[1].weight.dim(0),
        bptt: model.bptt,
        max_len: model.max_len,
        batch: bs,
        drop: ClasDropouts {
            embed: c.drop.embed_p,
            input: c.drop.input_p,
            weight: c.drop.weight_p,
            hidden: c.drop.hidden_p,
            head1: head[0].p,
            head2: head[1].p,
        },
        seed,
    }
}

/// The CPU classifier's weights and batch-norm statistics in the device layout.
pub fn clas_weights(m: &Classifier) -> ClasWeights {
    let layers = m
        .encoder
        .layers
        .iter()
        .map(|w| LayerWeights {
            i: w.w_ih.dim(1),
            h: w.w_hh.dim(1),
            w_ih: w.w_ih.to_vec(),
            w_hh: w.w_hh.to_vec(),
            b_ih: w.b_ih.to_vec(),
            b_hh: w.b_hh.to_vec(),
        })
        .collect();
    let head = |k: usize| {
        let b = &m.head[k];
        HeadWeights {
            gamma: b.gamma.to_vec(),
            beta: b.beta.to_vec(),
            running_mean: b.stats.mean.to_vec(),
            running_var: b.stats.var.to_vec(),
            weight: b.weight.to_vec(),
        }
    };
    ClasWeights { emb: m.encoder.embedding.to_vec(), layers, head: [head(0), head(1)] }
}

/// The optimizer's moments in the device layout (zeros where a parameter has none yet) and
/// each group's update count.
fn host_moments(opt: &Adam, model: &Classifier) -> (ClasWeights, ClasWeights, Vec<u32>) {
    let state = opt.moments();
    let (mut m, mut v) = (clas_weights(model), clas_weights(model));
    for (out, first) in [(&mut m, true), (&mut v, false)] {
        for (dst, s) in parts_mut(out).into_iter().zip(state.iter().flatten()) {
            match if first { &s.m } else { &s.v } {
                src if src.is_empty() => dst.fill(0.0),
                src => dst.copy_from_slice(src),
            }
        }
    }
    let updates = state.iter().map(|g| g.iter().map(|s| s.steps).max().unwrap_or(0)).collect();
    (m, v, updates)
}

/// The tensors of `w` in `Classifier::param_groups` order (embedding, each layer's four,
/// each head block's gamma, beta, weight).
fn parts_mut(w: &mut ClasWeights) -> Vec<&mut Vec<f32>> {
    let mut out = vec![&mut w.emb];
    for l in &mut w.layers {
        out.extend([&mut l.w_ih, &mut l.w_hh, &mut l.b_ih, &mut l.b_hh]);
    }
    for b in &mut w.head {
        out.extend([&mut b.gamma, &mut b.beta, &mut b.weight]);
    }
    out
}

/// A stage's classifier on the GPU.
pub struct GpuClasSteps<'g> {
    dev: ClasCuda<'g>,
}

impl<'g> GpuClasSteps<'g> {
    /// Uploads `model` and `opt`'s moments for batches of at most `bs` documents.
    pub fn new(gpu: &'g Gpu, model: &Classifier, opt: &Adam, bs: usize, seed: u64) -> Result<Self> {
        let mut dev = ClasCuda::new(gpu, clas_config(model, bs, seed), &clas_weights(model))
            .with_context(|| format!("setting up the classifier on {}", gpu.name()))?;
        let (m, v, updates) = host_moments(opt, model);
        dev.set_optimizer_state(&m, &v, &updates)?;
        Ok(GpuClasSteps { dev })
    }
}

impl ClasSteps for GpuClasSteps<'_> {
    fn train(
        &mut self,
        _: &mut Classifier,
        opt: &mut Adam,
        batch: &DocBatch,
        labels: &[u32],
        plan: &StagePlan,
        _: &mut Rng,
        step: usize,
    ) -> Result<f32> {
        // Adam's betas and the weight decay are the same in every group (`stages.rs` sets them).
        let first = &opt.groups[0];
        let hyper = ClasHyper {
            lrs: opt.groups.iter().map(|g| g.lr).collect(),
            frozen: opt.groups.iter().map(|g| !g.params.iter().any(Tensor::requires_grad)).collect(),
            beta1: first.betas.0,
            beta2: first.betas.1,
            eps: opt.eps,
            weight_decay: first.weight_decay,
            clip: plan.step.clip,
            alpha: plan.step.alpha,
            beta: plan.step.beta,
        };
        self.dev.set_step_count(step as u32); // masks follow the stage's step index (resume)
        let loss = self.dev.train_step(&batch.docs, labels, &hyper)?;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { what: "the classifier loss", value: loss, step }.into());
        }
        Ok(loss)
    }

    fn probs(&mut self, _: &mut Classifier, batch: &DocBatch) -> Result<Vec<Vec<f32>>> {
        Ok(self.dev.probs(&batch.docs)?)
    }

    fn to_host(&mut self, model: &mut Classifier, opt: &mut Adam) -> Result<()> {
        let w = self.dev.weights()?;
        let (m, v) = self.dev.moments()?;
        let (updates, _) = self.dev.counters();
        let (wg, mg, vg) = (w.groups(), m.groups(), v.groups());
        let state = opt.moments_mut();
        for (g, group) in model.param_groups().iter().enumerate() {
            for (k, p) in group.iter().enumerate() {
                p.data_mut().copy_from_slice(wg[g][k].1);
                if updates[g] > 0 {
                    state[g][k] = Moments { m: mg[g][k].1.to_vec(), v: vg[g][k].1.to_vec(), steps: updates[g] };
                }
            }
        }
        for (blk, hw) in model.head.iter().zip(&w.head) {
            blk.stats.mean.data_mut().copy_from_slice(&hw.running_mean);
            blk.stats.var.data_mut().copy_from_slice(&hw.running_var);
        }
        Ok(())
    }
}
