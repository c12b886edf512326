//! The language model's steps on the GPU ([`GpuLmSteps`], a `backend::LmSteps`): a stage's
//! model runs as `ulmfit_cuda::lm::LmCuda` (the device-resident AWD-LSTM step: fused LSTM,
//! tied decoder, dropouts from a counter-based hash, AR/TAR, clipping, fused Adam with one
//! slot per parameter group, CUDA graphs), set up from the CPU model and optimizer and
//! copied back into them on `to_host`, so the stage loop, checkpoints and the stages
//! around it are those of the CPU.
//!
//! Differences from the CPU steps: dropout masks come from the device hash (repeatable, but
//! not the CPU's masks), only full `bs` x `bptt` batches run (the step's shapes are fixed),
//! and the LM's next-token accuracy is not measured. The device step is checked against its
//! CPU spec by crates/cuda/tests/lm_vs_ref.rs; this file only moves weights, moments and
//! settings, checked on the GPU against the CPU stages by tests/gpu_lm.rs.

use anyhow::{Context, Result};
use ulmfit_cuda::lm::{Dropouts, GroupHyper, Hyper, LmConfig, LmCuda, LmWeights};
use ulmfit_cuda::Gpu;
use ulmfit_lstm::LayerWeights;
use ulmfit_tensor::optim::{Adam, Moments};
use ulmfit_tensor::{Rng, Tensor};
use ulmfit_text::LmBatch;

use crate::awd_lstm::LanguageModel;
use crate::backend::LmSteps;
use crate::stages::StagePlan;
use crate::train::TrainError;

/// The device step's config for `model` at batch `bs` x `bptt` steps.
fn lm_config(model: &LanguageModel, plan: &StagePlan, bs: usize, bptt: usize, seed: u64) -> LmConfig {
    let c = &model.encoder.cfg;
    let d = c.drop;
    LmConfig {
        vocab: c.vocab,
        emb: c.emb_sz,
        hidden: c.n_hid,
        layers: c.n_layers,
        t: bptt,
        b: bs,
        drop: Dropouts {
            embed: d.embed_p,
            input: d.input_p,
            weight: d.weight_p,
            hidden: d.hidden_p,
            output: d.output_p,
        },
        alpha: plan.step.alpha,
        beta: plan.step.beta,
        seed,
    }
}

/// The model's tensors in the device step's order: embedding, decoder bias, then each
/// layer's (w_ih, w_hh, b_ih, b_hh); the same order as `LmWeights::named`.
fn tensors(model: &LanguageModel) -> Vec<Tensor> {
    let mut out = vec![model.encoder.embedding.clone(), model.decoder_bias.clone()];
    (0..model.encoder.layers.len()).for_each(|l| out.extend(model.encoder.layer_params(l)));
    out
}

/// The model's weights in the device step's layout (host side).
pub fn lm_weights(model: &LanguageModel) -> LmWeights {
    let t = tensors(model);
    let layers = t[2..]
        .chunks(4)
        .map(|w| LayerWeights {
            i: w[0].dim(1),
            h: w[1].dim(1),
            w_ih: w[0].to_vec(),
            w_hh: w[1].to_vec(),
            b_ih: w[2].to_vec(),
            b_hh: w[3].to_vec(),
        })
        .collect();
    LmWeights { emb: t[0].to_vec(), dec_bias: t[1].to_vec(), layers }
}

/// Where each tensor of [`tensors`] sits in `Adam`'s `[group][param]` state (the groups
/// of `LanguageModel::param_groups`: layers bottom first, then embedding and decoder bias).
fn moment_index(layers: usize) -> Vec<(usize, usize)> {
    let mut out = vec![(layers, 0), (layers, 1)];
    (0..layers).for_each(|l| out.extend((0..4).map(|k| (l, k))));
    out
}

/// Each group's optimizer state in the CPU optimizer: (moments of each tensor of
/// [`tensors`] or zeros, Adam update count of each group).
fn host_moments(opt: &Adam, model: &LanguageModel) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let state = opt.moments();
    let (mut m, mut v, mut updates) = (Vec::new(), Vec::new(), vec![0u32; state.len()]);
    for (t, (g, k)) in tensors(model).iter().zip(moment_index(model.encoder.layers.len())) {
        let s = &state[g][k];
        if s.m.is_empty() {
            m.resize(m.len() + t.numel(), 0.0);
            v.resize(v.len() + t.numel(), 0.0);
        } else {
            m.extend_from_slice(&s.m);
            v.extend_from_slice(&s.v);
        }
        updates[g] = updates[g].max(s.steps);
    }
    (m, v, updates)
}

/// The settings of every group for the next step, from the optimizer's groups: the LR and
/// beta1 the schedule set, trainability and weight decay as the stage set them.
fn group_settings(opt: &Adam, plan: &StagePlan, updates: &[u32]) -> Vec<GroupHyper> {
    opt.groups
        .iter()
        .zip(updates)
        .map(|(group, &updates)| GroupHyper {
            hyper: Hyper {
                lr: group.lr,
                beta1: group.betas.0,
                beta2: group.betas.1,
                eps: opt.eps,
                weight_decay: group.weight_decay,
                clip: plan.step.clip.unwrap_or(0.0),
            },
            frozen: !group.params.iter().any(Tensor::requires_grad),
            updates,
        })
        .collect()
}

fn zero_state(cfg: &LmConfig) -> Vec<(Vec<f32>, Vec<f32>)> {
    cfg.layer_dims().iter().map(|d| (vec![0.0; d.b * d.h], vec![0.0; d.b * d.h])).collect()
}

/// A stage's language model on the GPU.
pub struct GpuLmSteps<'g> {
    dev: LmCuda<'g>,
    /// Adam updates of each parameter group so far.
    updates: Vec<u32>,
    /// Whether the step's CUDA graphs are captured (at the first step, after its settings).
    captured: bool,
}

impl<'g> GpuLmSteps<'g> {
    /// Uploads `model` and `opt`'s moments for batches of `bs` x `bptt`.
    pub fn new(
        gpu: &'g Gpu,
        model: &LanguageModel,
        opt: &Adam,
        plan: &StagePlan,
        bs: usize,
        bptt: usize,
        seed: u64,
    ) -> Result<Self> {
        let cfg = lm_config(model, plan, bs, bptt, seed);
        let mut dev = LmCuda::new(gpu, cfg, &lm_weights(model), Hyper::default())
            .with_context(|| format!("stage {}: setting up the language model on {}", plan.name, gpu.name()))?;
        let (m, v, updates) = host_moments(opt, model);
        dev.set_moments(&m, &v)?;
        Ok(GpuLmSteps { dev, updates, captured: false })
    }
}

impl LmSteps for GpuLmSteps<'_> {
    fn fixed_shape(&self) -> Option<(usize, usize)> {
        let c = self.dev.config();
        Some((c.t, c.b))
    }

    fn reset(&mut self, _: &mut LanguageModel) -> Result<()> {
        Ok(self.dev.set_state(&zero_state(self.dev.config()))?)
    }

    fn train(
        &mut self,
        _: &mut LanguageModel,
        opt: &mut Adam,
        batch: &LmBatch,
        plan: &StagePlan,
        _: &mut Rng,
        step: usize,
    ) -> Result<f32> {
        // The counter before the step: masks and Adam counts follow the stage's step index,
        // so a resumed stage draws the masks of the uninterrupted one.
        self.dev.set_step_count(step as u32)?;
        let settings = group_settings(opt, plan, &self.updates);
        self.dev.set_groups(&settings)?;
        if !self.captured {
            self.dev.capture_graphs()?; // after the first settings: cuBLAS sets up outside the capture
            self.captured = true;
        }
        let [_, ce, ..] = self.dev.step(&batch.x, &batch.y)?;
        if !ce.is_finite() {
            return Err(TrainError::NonFinite { what: "the cross-entropy", value: ce, step }.into());
        }
        settings.iter().zip(&mut self.updates).filter(|(s, _)| !s.frozen).for_each(|(_, u)| *u += 1);
        Ok(ce)
    }

    fn evaluate(&mut self, model: &mut LanguageModel, batches: &[LmBatch], _: &mut Rng) -> Result<(f32, f32)> {
        self.reset(model)?;
        let (mut sum, mut n) = (0.0f64, 0usize);
        for b in batches {
            sum += self.dev.evaluate(&b.x, &b.y)? as f64;
            n += 1;
        }
        anyhow::ensure!(
            n > 0,
            "the validation text has no full batch of {:?}",
            (self.dev.config().b, self.dev.config().t)
        );
        Ok(((sum / n as f64) as f32, f32::NAN))
    }

    fn carried(&mut self, _: &LanguageModel, _: usize) -> Result<Vec<(Tensor, Tensor)>> {
        let dims = self.dev.config().layer_dims();
        let state = self.dev.state()?;
        let tensor = |v: &[f32], d: &ulmfit_lstm::LstmDims| Tensor::from_vec(v.to_vec(), &[d.b, d.h]);
        state.iter().zip(&dims).map(|((h, c), d)| Ok((tensor(h, d)?, tensor(c, d)?))).collect()
    }

    fn set_carried(&mut self, _: &mut LanguageModel, state: Vec<(Tensor, Tensor)>) -> Result<()> {
        Ok(self.dev.set_state(&state.iter().map(|(h, c)| (h.to_vec(), c.to_vec())).collect::<Vec<_>>())?)
    }

    fn to_host(&mut self, model: &mut LanguageModel, opt: &mut Adam) -> Result<()> {
        let w = self.dev.weights()?;
        let (m, v) = self.dev.moments()?;
        let state = opt.moments_mut();
        let mut at = 0;
        let index = moment_index(model.encoder.layers.len());
        for ((t, (_, host)), (g, k)) in tensors(model).iter().zip(w.named()).zip(index) {
            t.data_mut().copy_from_slice(host);
            let n = t.numel();
            if self.updates[g] > 0 {
                let (m, v) = (m[at..at + n].to_vec(), v[at..at + n].to_vec());
                state[g][k] = Moments { m, v, steps: self.updates[g] };
            }
            at += n;
        }
        Ok(())
    }
}
