//! Training and evaluation loops for the language model and the classifier.
//!
//! One step: forward, loss, backward, clip the global gradient norm, Adam step (the stage
//! loop in `stages.rs` sets the scheduled learning rates and Adam's beta1 before it). A non-finite loss or gradient norm stops the
//! run with an error before any weight is touched, so the last checkpoint stays good.

use crate::awd_lstm::{lm_loss, LanguageModel};
use crate::classifier::{Classifier, DocBatch};
use ulmfit_tensor::optim::{clip_grad_norm, Adam};
use ulmfit_tensor::{no_grad, Rng, Tensor};
use ulmfit_text::batch::LmBatch;

/// Hyper-parameters of one step that do not change within a stage.
#[derive(Clone, Copy, Debug)]
pub struct StepConfig {
    /// Global gradient-norm clip (`None`: no clipping).
    pub clip: Option<f32>,
    /// AR coefficient (fastai: 2).
    pub alpha: f32,
    /// TAR coefficient (fastai: 1).
    pub beta: f32,
}

/// Why a training step failed.
#[derive(Debug)]
pub enum TrainError {
    /// The loss or the gradient norm was NaN or infinite.
    NonFinite { what: &'static str, value: f32, step: usize },
    /// An engine error (shapes, ids out of range).
    Engine(ulmfit_tensor::Error),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::NonFinite { what, value, step } => {
                write!(f, "{what} is {value} at step {step}: stopping; the last checkpoint is kept (try a lower learning rate or stronger clipping)")
            }
            TrainError::Engine(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TrainError {}

impl From<ulmfit_tensor::Error> for TrainError {
    fn from(e: ulmfit_tensor::Error) -> Self {
        TrainError::Engine(e)
    }
}

/// Back-propagates `loss`, clips, and steps `opt`; `step` is for messages.
pub fn optimizer_step(opt: &mut Adam, loss: &Tensor, clip: Option<f32>, step: usize) -> Result<(), TrainError> {
    let value = loss.item()?;
    if !value.is_finite() {
        return Err(TrainError::NonFinite { what: "the loss", value, step });
    }
    opt.zero_grad();
    loss.backward()?;
    let params: Vec<Tensor> = opt.groups.iter().flat_map(|g| g.params.iter().cloned()).collect();
    let norm = clip_grad_norm(&params, clip.unwrap_or(f32::INFINITY));
    if !norm.is_finite() {
        return Err(TrainError::NonFinite { what: "the gradient norm", value: norm, step });
    }
    opt.step();
    Ok(())
}

/// One LM training step; returns the cross-entropy (without AR/TAR).
pub fn lm_train_step(
    model: &mut LanguageModel,
    opt: &mut Adam,
    batch: &LmBatch,
    cfg: StepConfig,
    rng: &mut Rng,
    step: usize,
) -> Result<f32, TrainError> {
    let (raw, dropped) = model.encode(&batch.x, batch.seq_len, batch.batch_size, true, rng)?;
    let ce = model.decoder_cross_entropy(&dropped, &batch.y)?;
    let (loss, ce) = lm_loss(ce, &raw, &dropped, cfg.alpha, cfg.beta)?;
    optimizer_step(opt, &loss, cfg.clip, step)?;
    Ok(ce)
}

/// Mean cross-entropy and next-token accuracy of the LM over `batches` (state reset first,
/// then carried, as in training).
pub fn lm_evaluate<'a>(
    model: &mut LanguageModel,
    batches: impl Iterator<Item = &'a LmBatch>,
    rng: &mut Rng,
) -> Result<(f32, f32), TrainError> {
    model.encoder.reset();
    let (mut loss_sum, mut correct, mut count) = (0.0f64, 0usize, 0usize);
    for batch in batches {
        let out = no_grad(|| model.forward(&batch.x, batch.seq_len, batch.batch_size, false, rng))?;
        let n = batch.y.len();
        loss_sum += out.logits.cross_entropy(&batch.y, None)?.item()? as f64 * n as f64;
        correct += argmax_rows(&out.logits).iter().zip(&batch.y).filter(|(p, y)| p == y).count();
        count += n;
    }
    model.encoder.reset();
    Ok(((loss_sum / count.max(1) as f64) as f32, correct as f32 / count.max(1) as f32))
}

/// One classifier training step (cross-entropy plus fastai's AR/TAR on the encoder output,
/// as `TextLearner` trains classifiers); returns the cross-entropy.
pub fn classifier_train_step(
    model: &mut Classifier,
    opt: &mut Adam,
    batch: &DocBatch,
    labels: &[u32],
    cfg: StepConfig,
    rng: &mut Rng,
    step: usize,
) -> Result<f32, TrainError> {
    let (logits, reg) = model.forward_regularized(batch, cfg.alpha, cfg.beta, rng)?;
    let ce = logits.cross_entropy(labels, None)?;
    let ce_value = ce.item()?;
    optimizer_step(opt, &ce.add(&reg)?, cfg.clip, step)?;
    Ok(ce_value)
}

/// Class probabilities `[B, C]` (softmax of the logits) for one batch, no dropout.
pub fn classifier_probs(model: &mut Classifier, batch: &DocBatch, rng: &mut Rng) -> Result<Vec<Vec<f32>>, TrainError> {
    let probs = no_grad(|| model.forward(batch, false, rng).and_then(|l| l.softmax(1)))?;
    let c = probs.dim(1);
    Ok(probs.to_vec().chunks(c).map(<[f32]>::to_vec).collect())
}

/// Index of the largest value in each row of a `[N, C]` tensor.
pub fn argmax_rows(t: &Tensor) -> Vec<u32> {
    let c = t.dim(t.rank() - 1);
    t.data()
        .chunks(c)
        .map(|row| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32))
        .collect()
}
