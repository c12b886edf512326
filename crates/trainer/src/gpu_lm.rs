//! Language-model stages on the GPU: [`fit_lm_gpu`] trains a [`LanguageModel`] for one
//! stage with `ulmfit_cuda::lm::LmCuda` (the device-resident AWD-LSTM step: fused LSTM,
//! tied decoder, dropouts from a counter-based hash, AR/TAR, clipping, fused Adam with one
//! slot per parameter group) and copies the weights and Adam moments back, so the stage
//! reads and leaves the same CPU model and optimizer as `stages::fit_lm` and the stages
//! before and after it (classifier, checkpoints) need not know where it ran.
//!
//! Differences from the CPU stage: dropout masks come from the device hash (same seed, same
//! run, but not the CPU's masks), a last batch shorter than `bptt` is skipped (the step's
//! shapes are fixed), and the LM's next-token accuracy is not measured. The device step is
//! checked against its CPU spec by crates/cuda/tests/lm_vs_ref.rs; this file only moves
//! weights, moments and settings, checked on the GPU by tests/gpu_lm.rs.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use ulmfit_cuda::lm::{Dropouts, GroupHyper, Hyper, LmConfig, LmCuda, LmWeights};
use ulmfit_cuda::Gpu;
use ulmfit_lstm::LayerWeights;
use ulmfit_tensor::optim::{Adam, Moments};
use ulmfit_tensor::Tensor;
use ulmfit_text::{Bptt, Corpus, LmStream};

use crate::awd_lstm::LanguageModel;
use crate::metrics::{EpochMetrics, MetricsLog};
use crate::progress::EpochProgress;
use crate::schedule::FreezeStage;
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

/// Host copy of the model's weights for the device.
fn to_device_weights(model: &LanguageModel) -> LmWeights {
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

/// Copies the CPU optimizer's moments (where it has any) to the device; returns each
/// group's update count.
fn upload_moments(dev: &mut LmCuda, opt: &Adam, model: &LanguageModel) -> Result<Vec<u32>> {
    let state = opt.moments();
    let mut updates = vec![0u32; state.len()];
    if state.iter().flatten().all(|s| s.m.is_empty()) {
        return Ok(updates);
    }
    let (mut m, mut v) = (Vec::new(), Vec::new());
    for (t, (g, k)) in tensors(model).iter().zip(moment_index(model.encoder.layers.len())) {
        let s = &state[g][k];
        let fresh = s.m.is_empty();
        m.extend_from_slice(if fresh { &[] } else { &s.m });
        v.extend_from_slice(if fresh { &[] } else { &s.v });
        if fresh {
            m.resize(m.len() + t.numel(), 0.0);
            v.resize(v.len() + t.numel(), 0.0);
        }
        updates[g] = updates[g].max(s.steps);
    }
    dev.set_moments(&m, &v)?;
    Ok(updates)
}

/// Copies the device weights and moments back into `model` and `opt`.
fn download(dev: &LmCuda, opt: &mut Adam, model: &LanguageModel, updates: &[u32]) -> Result<()> {
    let w = dev.weights()?;
    let (m, v) = dev.moments()?;
    let mut at = 0;
    let state = opt.moments_mut();
    for ((t, (_, host)), (g, k)) in tensors(model).iter().zip(w.named()).zip(moment_index(model.encoder.layers.len())) {
        t.data_mut().copy_from_slice(host);
        let n = t.numel();
        if updates[g] > 0 {
            state[g][k] = Moments { m: m[at..at + n].to_vec(), v: v[at..at + n].to_vec(), steps: updates[g] };
        }
        at += n;
    }
    Ok(())
}

/// The settings of every group for the next step, from the optimizer's groups (as the
/// schedule left them) and the plan.
fn group_settings(opt: &Adam, plan: &StagePlan, updates: &[u32]) -> Vec<GroupHyper> {
    let n = opt.groups.len();
    let stage = FreezeStage { trainable_groups_from_top: plan.trainable_from_top, epochs: 0, lr_max: 0.0, lr_div: 1.0 };
    opt.groups
        .iter()
        .enumerate()
        .map(|(g, group)| GroupHyper {
            hyper: Hyper {
                lr: group.lr,
                beta1: group.betas.0,
                beta2: group.betas.1,
                eps: opt.eps,
                weight_decay: plan.wd,
                clip: plan.step.clip.unwrap_or(0.0),
            },
            frozen: !stage.is_trainable(g, n),
            updates: updates[g],
        })
        .collect()
}

/// Mean cross-entropy of `valid` (full batches only), dropout off, state from zero.
fn evaluate(dev: &mut LmCuda, valid: &Corpus, bs: usize, bptt: usize, seed: u64) -> Result<f32> {
    dev.set_state(&zero_state(dev.config()))?;
    let (mut sum, mut n) = (0.0f64, 0usize);
    for b in LmStream::new(valid, bs, Bptt::Fixed(bptt), false, seed, 0)?.filter(|b| b.seq_len == bptt) {
        sum += dev.evaluate(&b.x, &b.y)? as f64;
        n += 1;
    }
    ensure!(n > 0, "the validation text has no full batch of {bs} x {bptt} tokens");
    Ok((sum / n as f64) as f32)
}

fn zero_state(cfg: &LmConfig) -> Vec<(Vec<f32>, Vec<f32>)> {
    cfg.layer_dims().iter().map(|d| (vec![0.0; d.b * d.h], vec![0.0; d.b * d.h])).collect()
}

/// `stages::fit_lm` on the GPU: trains `model` for the plan's epochs (batch `bs`, fixed
/// BPTT `bptt`), validating after each; weights and Adam moments go back to `model` and
/// `opt` at the end. Returns the last (validation loss, NaN accuracy).
#[allow(clippy::too_many_arguments)] // one stage's data, model, optimizer and bookkeeping
pub fn fit_lm_gpu(
    gpu: &Gpu,
    model: &mut LanguageModel,
    opt: &mut Adam,
    plan: &StagePlan,
    train: &Corpus,
    valid: &Corpus,
    bs: usize,
    bptt: usize,
    seed: u64,
    log: &mut MetricsLog,
) -> Result<(f32, f32)> {
    ensure!(
        plan.peaks.len() == opt.groups.len(),
        "stage {}: {} learning rates for {} parameter groups",
        plan.name,
        plan.peaks.len(),
        opt.groups.len()
    );
    let cfg = lm_config(model, plan, bs, bptt, seed);
    let mut dev = LmCuda::new(gpu, cfg, &to_device_weights(model), Hyper::default())
        .with_context(|| format!("stage {}: setting up the language model on {}", plan.name, gpu.name()))?;
    let mut updates = upload_moments(&mut dev, opt, model)?;
    let batches_per_epoch =
        LmStream::new(train, bs, Bptt::Fixed(bptt), false, seed, 0)?.filter(|b| b.seq_len == bptt).count();
    ensure!(batches_per_epoch > 0, "stage {}: the text has no full batch of {bs} x {bptt} tokens", plan.name);
    let total = plan.epochs * batches_per_epoch;
    let mut last = (f32::NAN, f32::NAN);
    for epoch in 0..plan.epochs {
        dev.set_state(&zero_state(dev.config()))?;
        let start = Instant::now();
        let mut progress = EpochProgress::new(&plan.name, batches_per_epoch);
        let (mut loss_sum, mut n) = (0.0f64, 0usize);
        let batches = LmStream::new(train, bs, Bptt::Fixed(bptt), true, seed, epoch as u64)?;
        for (i, batch) in batches.filter(|b| b.seq_len == bptt).enumerate() {
            let step = epoch * batches_per_epoch + i;
            plan.schedule.apply(&mut opt.groups, &plan.peaks, step, total);
            let settings = group_settings(opt, plan, &updates);
            dev.set_groups(&settings)?;
            if step == 0 {
                dev.capture_graphs()?; // after the first settings: cuBLAS warms up outside the capture
            }
            let [_, ce, ..] = dev.step(&batch.x, &batch.y)?;
            if !ce.is_finite() {
                return Err(TrainError::NonFinite { what: "cross-entropy", value: ce, step }.into());
            }
            settings.iter().zip(&mut updates).filter(|(s, _)| !s.frozen).for_each(|(_, u)| *u += 1);
            loss_sum += ce as f64;
            n += 1;
            progress.update(ce as f64, batch.x.len());
        }
        let (_, tokens_per_s) = progress.finish();
        let loss = evaluate(&mut dev, valid, bs, bptt, seed)?;
        last = (loss, f32::NAN);
        let m = EpochMetrics {
            stage: plan.name.clone(),
            epoch: epoch + 1,
            step: ((epoch + 1) * batches_per_epoch) as u64,
            train_loss: loss_sum / n.max(1) as f64,
            valid_loss: Some(loss as f64),
            accuracy: None,
            perplexity: Some((loss as f64).exp()),
            lr: opt.groups.last().map_or(0.0, |g| g.lr as f64),
            seconds: start.elapsed().as_secs_f64(),
            tokens_per_s,
        };
        log.append(&m)?;
        eprintln!(
            "{} epoch {}/{} (GPU): train loss {:.3}, valid loss {:.3}, perplexity {:.1}, {:.0}s, {:.0} tokens/s",
            plan.name,
            epoch + 1,
            plan.epochs,
            m.train_loss,
            loss,
            m.perplexity.unwrap_or(0.0),
            m.seconds,
            tokens_per_s
        );
    }
    download(&dev, opt, model, &updates)?;
    model.encoder.reset();
    Ok(last)
}
