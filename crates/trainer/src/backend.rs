//! Where a stage's steps run. The stage loops of `stages` (epochs, schedule, validation,
//! metrics, stop and resume) are the same on every device; each step goes through
//! [`LmSteps`] or [`ClasSteps`]: on the CPU straight into the autograd model, on a GPU into a
//! device-resident copy (`gpu_lm`, `gpu_clas`) that the loops copy back into the CPU model
//! and optimizer ([`LmSteps::to_host`]) before each checkpoint, so checkpoints, resume and
//! the stages around one never depend on where it ran.

use anyhow::{Context, Result};
use ulmfit_cuda::Gpu;
use ulmfit_tensor::optim::Adam;
use ulmfit_tensor::{Rng, Tensor};
use ulmfit_text::LmBatch;

use crate::awd_lstm::LanguageModel;
use crate::classifier::{Classifier, DocBatch};
use crate::config::{DeviceKind, RunConfig};
use crate::gpu_clas::GpuClasSteps;
use crate::gpu_lm::GpuLmSteps;
use crate::stages::StagePlan;
use crate::train::{classifier_probs, classifier_train_step, lm_evaluate, lm_train_step};

/// The language model's steps on some device. The optimizer's groups carry the step's LRs
/// (the schedule sets them), their trainability (`requires_grad`) and weight decay.
pub trait LmSteps {
    /// The only (seq_len, batch_size) this device runs, if it has fixed shapes (the GPU
    /// step); other batches are skipped.
    fn fixed_shape(&self) -> Option<(usize, usize)>;
    /// Zeroes the carried state (each epoch starts from it).
    fn reset(&mut self, model: &mut LanguageModel) -> Result<()>;
    /// One training step, the stage's `step`-th (the mask counter on the GPU); returns the
    /// cross-entropy.
    fn train(
        &mut self,
        model: &mut LanguageModel,
        opt: &mut Adam,
        batch: &LmBatch,
        plan: &StagePlan,
        rng: &mut Rng,
        step: usize,
    ) -> Result<f32>;
    /// (Mean cross-entropy, next-token accuracy or NaN) over `batches`, dropout off.
    fn evaluate(&mut self, model: &mut LanguageModel, batches: &[LmBatch], rng: &mut Rng) -> Result<(f32, f32)>;
    /// Copies the weights and optimizer moments into `model` and `opt` (no-op on the CPU).
    fn to_host(&mut self, model: &mut LanguageModel, opt: &mut Adam) -> Result<()>;
    /// The carried state (h, c) of every layer, [B, H] each (for a mid-epoch checkpoint).
    fn carried(&mut self, model: &LanguageModel, bs: usize) -> Result<Vec<(Tensor, Tensor)>>;
    /// Restores a carried state `carried` returned.
    fn set_carried(&mut self, model: &mut LanguageModel, state: Vec<(Tensor, Tensor)>) -> Result<()>;
}

/// The classifier's steps on some device (see [`LmSteps`]).
pub trait ClasSteps {
    /// One training step on a batch sorted longest first; returns the loss.
    #[allow(clippy::too_many_arguments)] // the step's model, optimizer, data and schedule position
    fn train(
        &mut self,
        model: &mut Classifier,
        opt: &mut Adam,
        batch: &DocBatch,
        labels: &[u32],
        plan: &StagePlan,
        rng: &mut Rng,
        step: usize,
    ) -> Result<f32>;
    /// Class probabilities of a batch (eval mode).
    fn probs(&mut self, model: &mut Classifier, batch: &DocBatch) -> Result<Vec<Vec<f32>>>;
    /// Copies the weights, batch-norm statistics and optimizer moments into `model` and
    /// `opt` (no-op on the CPU).
    fn to_host(&mut self, model: &mut Classifier, opt: &mut Adam) -> Result<()>;
}

/// The steps of the autograd model itself.
pub struct CpuSteps;

impl LmSteps for CpuSteps {
    fn fixed_shape(&self) -> Option<(usize, usize)> {
        None
    }

    fn reset(&mut self, model: &mut LanguageModel) -> Result<()> {
        model.encoder.reset();
        Ok(())
    }

    fn train(
        &mut self,
        model: &mut LanguageModel,
        opt: &mut Adam,
        batch: &LmBatch,
        plan: &StagePlan,
        rng: &mut Rng,
        step: usize,
    ) -> Result<f32> {
        Ok(lm_train_step(model, opt, batch, plan.step, rng, step)?)
    }

    fn evaluate(&mut self, model: &mut LanguageModel, batches: &[LmBatch], rng: &mut Rng) -> Result<(f32, f32)> {
        Ok(lm_evaluate(model, batches.iter(), rng)?)
    }

    fn to_host(&mut self, _: &mut LanguageModel, _: &mut Adam) -> Result<()> {
        Ok(())
    }

    fn carried(&mut self, model: &LanguageModel, bs: usize) -> Result<Vec<(Tensor, Tensor)>> {
        Ok(model.encoder.carried_state(bs))
    }

    fn set_carried(&mut self, model: &mut LanguageModel, state: Vec<(Tensor, Tensor)>) -> Result<()> {
        model.encoder.set_carried_state(state);
        Ok(())
    }
}

impl ClasSteps for CpuSteps {
    fn train(
        &mut self,
        model: &mut Classifier,
        opt: &mut Adam,
        batch: &DocBatch,
        labels: &[u32],
        plan: &StagePlan,
        rng: &mut Rng,
        step: usize,
    ) -> Result<f32> {
        Ok(classifier_train_step(model, opt, batch, labels, plan.step, rng, step)?)
    }

    fn probs(&mut self, model: &mut Classifier, batch: &DocBatch) -> Result<Vec<Vec<f32>>> {
        Ok(classifier_probs(model, batch, &mut Rng::new(0))?)
    }

    fn to_host(&mut self, _: &mut Classifier, _: &mut Adam) -> Result<()> {
        Ok(())
    }
}

/// The device a run trains on.
pub enum Backend {
    /// The CPU autograd engine.
    Cpu,
    /// A CUDA GPU: LM stages on `ulmfit_cuda::lm`, classifier stages on `ulmfit_cuda::clas`.
    Cuda(Gpu),
}

impl Backend {
    /// The device `run.device` names (`run.tf32` lets cuBLAS use TF32 tensor cores); a
    /// clear error when CUDA is asked for but there is no driver or GPU.
    pub fn open(run: &RunConfig) -> Result<Backend> {
        match run.device {
            DeviceKind::Cpu => Ok(Backend::Cpu),
            DeviceKind::Cuda => {
                let gpu = Gpu::new(run.tf32).context("run.device = \"cuda\"")?;
                eprintln!("training on {} (TF32 {})", gpu.name(), if run.tf32 { "on" } else { "off" });
                Ok(Backend::Cuda(gpu))
            }
        }
    }

    /// The LM steps of one stage on this device, for batches of `bs` x `bptt` (`model` and
    /// `opt` hold the state to start from).
    #[allow(clippy::too_many_arguments)] // the stage's model, optimizer and shape
    pub fn lm_steps<'a>(
        &'a self,
        model: &LanguageModel,
        opt: &Adam,
        plan: &StagePlan,
        bs: usize,
        bptt: usize,
        seed: u64,
    ) -> Result<Box<dyn LmSteps + 'a>> {
        Ok(match self {
            Backend::Cpu => Box::new(CpuSteps),
            Backend::Cuda(gpu) => {
                decay_as_on_the_device(opt, &model.no_decay())?;
                Box::new(GpuLmSteps::new(gpu, model, opt, plan, bs, bptt, seed)?)
            }
        })
    }

    /// The classifier steps of one stage on this device, for batches of at most `bs`
    /// documents (`model` and `opt` hold the state to start from).
    pub fn clas_steps<'a>(
        &'a self,
        model: &Classifier,
        opt: &Adam,
        bs: usize,
        seed: u64,
    ) -> Result<Box<dyn ClasSteps + 'a>> {
        Ok(match self {
            Backend::Cpu => Box::new(CpuSteps),
            Backend::Cuda(gpu) => {
                decay_as_on_the_device(opt, &model.no_decay())?;
                Box::new(GpuClasSteps::new(gpu, model, opt, bs, seed)?)
            }
        })
    }
}

/// The device's update leaves exactly the model's `no_decay` parameters out of weight decay
/// (fastai's `wd_bn_bias=False`); an optimizer that differs would train differently there.
fn decay_as_on_the_device(opt: &Adam, no_decay: &[Tensor]) -> Result<()> {
    let differs = opt
        .groups
        .iter()
        .any(|g| g.params.iter().zip(&g.decays).any(|(p, &decays)| decays == no_decay.iter().any(|e| e.same(p))));
    anyhow::ensure!(
        !differs,
        "the GPU exempts from weight decay exactly the model's no_decay parameters; this optimizer's flags differ"
    );
    Ok(())
}
