//! The training stages of a ULMFiT run, each a loop over epochs with a scheduled Adam,
//! validation after every epoch, one metrics row per epoch and a progress line:
//! `fit_lm` (pretraining and LM fine-tuning) and `fit_classifier` (gradual unfreezing).
//! Both report to `control::StageHooks`: a plain `MetricsLog` takes the rows; a `Tracker` also
//! saves the state after every epoch, stops at the next step boundary when asked, and
//! resumes a stage from its saved position (`tests/pipeline_resume.rs` checks the result is
//! the uninterrupted run's).

use std::time::Instant;

use anyhow::{ensure, Result};
use ulmfit_tensor::optim::{Adam, ParamGroup};
use ulmfit_tensor::{Rng, Tensor};
use ulmfit_text::batch::sorted_order;
use ulmfit_text::{Bptt, Corpus, LmBatch, LmStream};

use crate::awd_lstm::LanguageModel;
use crate::backend::{Backend, ClasSteps};
use crate::classifier::{Classifier, DocBatch};
use crate::control::{Position, StageHooks};
use crate::metrics::EpochMetrics;
use crate::progress::EpochProgress;
use crate::schedule::{FreezeStage, Schedule};
use crate::train::StepConfig;

/// How one stage trains: epochs, the peak LR of each parameter group (bottom first),
/// which groups train, the schedule and the step's regularisation.
pub struct StagePlan {
    /// Name in metrics and progress lines (`pretrain`, `finetune-lm-frozen`, ...).
    pub name: String,
    /// Epochs of this stage.
    pub epochs: usize,
    /// Peak LR per parameter group.
    pub peaks: Vec<f32>,
    /// Groups counted from the top that train (usize::MAX: all).
    pub trainable_from_top: usize,
    /// LR (and beta1) schedule over the stage's steps.
    pub schedule: Schedule,
    /// Decoupled weight decay.
    pub wd: f32,
    /// Clip, AR, TAR.
    pub step: StepConfig,
}

/// Adam over `groups` with fastai's eps and second-moment decay; the parameters in
/// `no_decay` get no weight decay (the models' `no_decay`, fastai's `wd_bn_bias=False`).
pub fn adam(groups: Vec<Vec<Tensor>>, no_decay: &[Tensor], sqr_mom: f32, eps: f32) -> Adam {
    let groups = groups
        .into_iter()
        .map(|params| ParamGroup { betas: (0.9, sqr_mom), ..ParamGroup::new(params, 0.0).without_decay_for(no_decay) })
        .collect();
    Adam::new(groups, eps)
}

/// The seed of stage `name` in a run seeded with `seed` (FNV-1a over the name): each stage,
/// and the backward model's (`bwd-...`), draws its own batch order and dropout masks, as the
/// one random stream running through fastai's successive `fit` calls does.
fn stage_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Sets the stage's frozen groups and weight decay, and frees the buffers that the
/// previous stage's shapes left in the tensor cache.
fn prepare(opt: &mut Adam, plan: &StagePlan) -> Result<()> {
    ulmfit_tensor::pool::release_cached_buffers();
    ensure!(
        plan.peaks.len() == opt.groups.len(),
        "stage {}: {} learning rates for {} parameter groups",
        plan.name,
        plan.peaks.len(),
        opt.groups.len()
    );
    FreezeStage { trainable_groups_from_top: plan.trainable_from_top, epochs: plan.epochs, lr_max: 0.0, lr_div: 1.0 }
        .apply(&opt.groups)?;
    opt.groups.iter_mut().for_each(|g| g.weight_decay = plan.wd);
    Ok(())
}

/// Trains the language model on `train` for the plan's epochs (fixed BPTT `bptt`, batch
/// `bs`) on `backend`, validating on `valid` after each epoch and reporting to `run`.
/// Returns the last (loss, accuracy); a stage the resumed run has passed is skipped (NaN).
/// Stopped, it saves the state at that batch (the carried LSTM state included, as
/// `lm.state.*` tensors) and returns `control::Interrupted`.
#[allow(clippy::too_many_arguments)] // one stage's data, model, optimizer and bookkeeping
pub fn fit_lm(
    backend: &Backend,
    model: &mut LanguageModel,
    opt: &mut Adam,
    plan: &StagePlan,
    train: &Corpus,
    valid: &Corpus,
    bs: usize,
    bptt: usize,
    seed: u64,
    run: &mut impl StageHooks,
) -> Result<(f32, f32)> {
    if run.passed(&plan.name) {
        return Ok((f32::NAN, f32::NAN));
    }
    prepare(opt, plan)?;
    let seed = stage_seed(seed, &plan.name);
    ensure!(
        train.ids.len() > bs * 2 && valid.ids.len() > bs * 2,
        "stage {}: the corpus is too small for batch size {bs}",
        plan.name
    );
    let fresh = Position::start(Rng::new(seed ^ 0x5eed).state());
    let saved = model.encoder.carried_state(bs); // zeros, or the saved state after `begin`
    let from = run.begin(&plan.name, &with_carried(model, &saved), opt, fresh)?;
    let mut steps = backend.lm_steps(model, opt, plan, bs, bptt, seed)?;
    let shape = steps.fixed_shape();
    let runs = |b: &LmBatch| shape.is_none_or(|(t, bn)| b.seq_len == t && b.batch_size == bn);
    let batches_per_epoch = LmStream::new(train, bs, Bptt::Fixed(bptt), false, seed, 0)?.filter(runs).count();
    ensure!(batches_per_epoch > 0, "stage {}: the text has no batch of {bs} x {bptt} tokens", plan.name);
    let valid_batches: Vec<_> = LmStream::new(valid, bs, Bptt::Fixed(bptt), false, seed, 0)?.filter(runs).collect();
    ensure!(
        !valid_batches.is_empty(),
        "stage {}: the validation text has no batch of {bs} x {bptt} tokens (this device runs only full batches): \
         use a smaller batch size or sequence length",
        plan.name
    );
    let total = plan.epochs * batches_per_epoch;
    let mut rng = Rng::from_state(from.rng);
    let mut last = from.last;
    for epoch in from.epoch..plan.epochs {
        let skip = if epoch == from.epoch { from.batch } else { 0 };
        let (mut loss_sum, mut n) = if skip > 0 { (from.loss_sum, from.steps) } else { (0.0f64, 0usize) };
        if skip > 0 {
            steps.set_carried(model, saved.clone())?;
        } else {
            steps.reset(model)?;
        }
        let start = Instant::now();
        let mut progress = EpochProgress::new(&plan.name, batches_per_epoch);
        let batches = LmStream::new(train, bs, Bptt::Fixed(bptt), true, seed, epoch as u64)?.filter(runs);
        for (i, batch) in batches.enumerate().skip(skip) {
            let step = epoch * batches_per_epoch + i;
            plan.schedule.apply(&mut opt.groups, &plan.peaks, step, total);
            let ce = steps.train(model, opt, &batch, plan, &mut rng, step)?;
            loss_sum += ce as f64;
            n += 1;
            progress.update(ce as f64, batch.x.len());
            if run.step_done() && i + 1 < batches_per_epoch {
                steps.to_host(model, opt)?;
                let carried = steps.carried(model, bs)?;
                let pos = Position { epoch, batch: i + 1, rng: rng.state(), loss_sum, steps: n, last };
                run.save(&plan.name, &with_carried(model, &carried), opt, &pos)?;
                return Err(run.interrupted(&plan.name, epoch, i + 1));
            }
        }
        let (_, tokens_per_s) = progress.finish();
        last = steps.evaluate(model, &valid_batches, &mut rng)?;
        let m = EpochMetrics {
            stage: plan.name.clone(),
            epoch: epoch + 1,
            step: ((epoch + 1) * batches_per_epoch) as u64,
            train_loss: loss_sum / n.max(1) as f64,
            valid_loss: Some(last.0 as f64),
            accuracy: Some(last.1 as f64).filter(|a| a.is_finite()),
            perplexity: Some((last.0 as f64).exp()),
            lr: opt.groups.last().map_or(0.0, |g| g.lr as f64),
            seconds: start.elapsed().as_secs_f64(),
            tokens_per_s,
        };
        eprintln!("{} epoch {}/{}: train loss {:.3}, valid loss {:.3}, perplexity {:.1}, accuracy {:.3}, {:.0}s, {:.0} tokens/s", plan.name, epoch + 1, plan.epochs, m.train_loss, last.0, m.perplexity.unwrap_or(0.0), last.1, m.seconds, tokens_per_s);
        steps.to_host(model, opt)?;
        let pos = Position { epoch: epoch + 1, last, ..Position::start(rng.state()) };
        run.epoch_done(&m, &with_carried(model, &steps.carried(model, bs)?), opt, &pos)?;
        if run.stop_requested() {
            return Err(run.interrupted(&plan.name, epoch + 1, 0));
        }
    }
    model.encoder.reset(); // the device copy was synced back at the end of the last epoch
    Ok(last)
}

/// The model's named parameters plus its carried state as `lm.state.{h,c}.{layer}`: what an
/// LM stage's training state holds.
fn with_carried(model: &LanguageModel, carried: &[(Tensor, Tensor)]) -> Vec<(String, Tensor)> {
    let mut named = model.named_params();
    for (l, (h, c)) in carried.iter().enumerate() {
        named.push((format!("lm.state.h.{l}"), h.clone()));
        named.push((format!("lm.state.c.{l}"), c.clone()));
    }
    named
}

/// Labelled documents as token ids.
pub struct Labelled<'a> {
    /// The documents.
    pub corpus: &'a Corpus,
    /// One class id per document.
    pub labels: &'a [u32],
}

/// The documents `docs` of `corpus` as a batch sorted longest first, with their indices in
/// that order.
fn sorted_batch(corpus: &Corpus, docs: &[usize]) -> (DocBatch, Vec<usize>) {
    let mut idx = docs.to_vec();
    idx.sort_by_key(|&d| std::cmp::Reverse(corpus.doc_len(d)));
    (DocBatch { docs: idx.iter().map(|&d| corpus.doc(d).to_vec()).collect() }, idx)
}

/// Batches of `docs` (indices into `data`), sorted longest first within each batch.
fn doc_batch(data: &Labelled, docs: &[usize]) -> (DocBatch, Vec<u32>) {
    let (batch, idx) = sorted_batch(data.corpus, docs);
    (batch, idx.iter().map(|&d| data.labels[d]).collect())
}

/// Class probabilities of every document of `corpus`, in corpus order (no dropout; batch
/// norm in eval mode), read in batches of `bs` documents of similar length on `backend`.
pub fn predict_probs(backend: &Backend, model: &mut Classifier, corpus: &Corpus, bs: usize) -> Result<Vec<Vec<f32>>> {
    let opt = adam(model.param_groups(), &model.no_decay(), 0.99, 1e-5); // inference: no optimizer state
    let mut steps = backend.clas_steps(model, &opt, bs, 0)?;
    predict_probs_on(steps.as_mut(), model, corpus, bs)
}

/// [`predict_probs`] through `steps` (on the device they run on).
fn predict_probs_on(
    steps: &mut dyn ClasSteps,
    model: &mut Classifier,
    corpus: &Corpus,
    bs: usize,
) -> Result<Vec<Vec<f32>>> {
    let lens: Vec<usize> = (0..corpus.len()).map(|d| corpus.doc_len(d)).collect();
    let order = sorted_order(&lens, bs, false, &mut ulmfit_text::rng::Rng::new(0));
    let mut out = vec![Vec::new(); corpus.len()];
    for docs in order.chunks(bs) {
        let (batch, idx) = sorted_batch(corpus, docs);
        for (d, p) in idx.into_iter().zip(steps.probs(model, &batch)?) {
            out[d] = p;
        }
    }
    Ok(out)
}

/// Fraction of documents whose most probable class (`probs`, one row per document) is
/// their label.
pub fn accuracy_of(probs: &[Vec<f32>], labels: &[u32]) -> f32 {
    let correct = probs.iter().zip(labels).filter(|(p, &y)| argmax(p) == y as usize).count();
    correct as f32 / labels.len().max(1) as f32
}

/// Fraction of `data` the classifier gets right on `backend` (no dropout; batch norm in
/// eval mode).
pub fn accuracy(backend: &Backend, model: &mut Classifier, data: &Labelled, bs: usize) -> Result<f32> {
    Ok(accuracy_of(&predict_probs(backend, model, data.corpus, bs)?, data.labels))
}

fn argmax(p: &[f32]) -> usize {
    p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

/// Trains the classifier for one stage of gradual unfreezing, validating after each
/// epoch and reporting to `run`; returns the last validation accuracy (NaN for
/// a stage the resumed run has passed). Stopped, it saves the state at that batch and
/// returns `control::Interrupted`.
#[allow(clippy::too_many_arguments)] // one stage's data, model, optimizer and bookkeeping
pub fn fit_classifier(
    backend: &Backend,
    model: &mut Classifier,
    opt: &mut Adam,
    plan: &StagePlan,
    train: &Labelled,
    valid: &Labelled,
    bs: usize,
    seed: u64,
    run: &mut impl StageHooks,
) -> Result<f32> {
    if run.passed(&plan.name) {
        return Ok(f32::NAN);
    }
    prepare(opt, plan)?;
    let seed = stage_seed(seed, &plan.name);
    ensure!(train.corpus.len() >= 2, "stage {}: fewer than 2 training documents", plan.name);
    ensure!(bs >= 2, "stage {}: batch size {bs}: batch norm needs at least 2 documents a batch", plan.name);
    let lens: Vec<usize> = (0..train.corpus.len()).map(|d| train.corpus.doc_len(d)).collect();
    let batches_per_epoch = lens.len().div_ceil(bs);
    let total = plan.epochs * batches_per_epoch;
    let fresh = Position::start(Rng::new(seed ^ 0xc1a5).state());
    let from = run.begin(&plan.name, &model.named_tensors(), opt, fresh)?;
    let mut steps = backend.clas_steps(model, opt, bs, seed)?;
    let mut rng = Rng::from_state(from.rng);
    let mut acc = from.last.1;
    if from.batch > 0 {
        // Mid-epoch: the metrics row reads the LR of the last step taken.
        let step = from.epoch * batches_per_epoch + from.batch - 1;
        plan.schedule.apply(&mut opt.groups, &plan.peaks, step, total);
    }
    for epoch in from.epoch..plan.epochs {
        let start = Instant::now();
        let mut order_rng = ulmfit_text::rng::Rng::new(seed.wrapping_add(epoch as u64));
        let order = sorted_order(&lens, bs, true, &mut order_rng);
        let mut progress = EpochProgress::new(&plan.name, batches_per_epoch);
        let (skip, mut loss_sum, mut n) =
            if epoch == from.epoch { (from.batch, from.loss_sum, from.steps) } else { (0, 0.0f64, 0usize) };
        for (i, docs) in order.chunks(bs).enumerate().skip(skip) {
            if docs.len() < 2 {
                continue; // batch norm needs two rows
            }
            let step = epoch * batches_per_epoch + i;
            plan.schedule.apply(&mut opt.groups, &plan.peaks, step, total);
            let (batch, labels) = doc_batch(train, docs);
            let loss = steps.train(model, opt, &batch, &labels, plan, &mut rng, step)?;
            loss_sum += loss as f64;
            n += 1;
            progress.update(loss as f64, docs.iter().map(|&d| lens[d]).sum());
            if run.step_done() && i + 1 < batches_per_epoch {
                let pos = Position { epoch, batch: i + 1, rng: rng.state(), loss_sum, steps: n, last: (f32::NAN, acc) };
                steps.to_host(model, opt)?;
                run.save(&plan.name, &model.named_tensors(), opt, &pos)?;
                return Err(run.interrupted(&plan.name, epoch, i + 1));
            }
        }
        let (_, tokens_per_s) = progress.finish();
        acc = accuracy_of(&predict_probs_on(steps.as_mut(), model, valid.corpus, bs)?, valid.labels);
        let m = EpochMetrics {
            stage: plan.name.clone(),
            epoch: epoch + 1,
            step: ((epoch + 1) * batches_per_epoch) as u64,
            train_loss: loss_sum / n.max(1) as f64,
            valid_loss: None,
            accuracy: Some(acc as f64),
            perplexity: None,
            lr: opt.groups.last().map_or(0.0, |g| g.lr as f64),
            seconds: start.elapsed().as_secs_f64(),
            tokens_per_s,
        };
        eprintln!(
            "{} epoch {}/{}: train loss {:.3}, valid accuracy {:.3}, {:.0}s",
            plan.name,
            epoch + 1,
            plan.epochs,
            m.train_loss,
            acc,
            m.seconds
        );
        let pos = Position { epoch: epoch + 1, last: (f32::NAN, acc), ..Position::start(rng.state()) };
        steps.to_host(model, opt)?;
        run.epoch_done(&m, &model.named_tensors(), opt, &pos)?;
        if run.stop_requested() {
            return Err(run.interrupted(&plan.name, epoch + 1, 0));
        }
    }
    Ok(acc) // the device copy was synced back at the end of the last epoch
}

#[cfg(test)]
mod tests {
    use super::stage_seed;

    #[test]
    fn every_stage_and_direction_has_its_own_seed() {
        let names =
            ["pretrain", "finetune-lm-frozen", "finetune-lm", "classifier-1", "classifier-2", "bwd-classifier-1"];
        let seeds: Vec<u64> = names.iter().map(|n| stage_seed(42, n)).collect();
        for i in 0..seeds.len() {
            for j in i + 1..seeds.len() {
                assert_ne!(seeds[i], seeds[j], "{} and {} share a seed", names[i], names[j]);
            }
        }
        assert_eq!(stage_seed(42, "classifier-1"), seeds[3], "a stage's seed repeats");
        assert_ne!(stage_seed(43, "classifier-1"), seeds[3], "the run's seed is used");
    }
}
