//! Stopping a run early and the hooks a stage loop reports to. [`RunControl`] says when to
//! stop (Ctrl-C sets its flag; tests give a step budget); [`StageHooks`] is what
//! `stages::fit_lm` and `fit_classifier` ask and tell at every step and epoch: a plain
//! `MetricsLog` only takes the rows, `resume::Tracker` also saves, restores and stops. A
//! stopped run ends with the error [`Interrupted`], which says how to resume.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use ulmfit_tensor::optim::Adam;
use ulmfit_tensor::Tensor;

use crate::metrics::{EpochMetrics, MetricsLog};

/// When to stop early: Ctrl-C (the command line sets `interrupt`) or, for tests, a budget
/// of optimizer steps in this process.
#[derive(Debug, Default)]
pub struct RunControl {
    /// Set to stop at the next step boundary.
    pub interrupt: Arc<AtomicBool>,
    /// Stop once this many optimizer steps were taken (test hook).
    pub stop_after_steps: Option<u64>,
    steps: AtomicU64,
}

impl RunControl {
    /// Stops only on `interrupt`.
    pub fn new() -> Self {
        RunControl::default()
    }

    /// Stops after `steps` optimizer steps, as if Ctrl-C were pressed then.
    pub fn stop_after(steps: u64) -> Self {
        RunControl { stop_after_steps: Some(steps), ..RunControl::default() }
    }

    /// Counts one optimizer step; true when the run should stop at this boundary.
    pub fn step_done(&self) -> bool {
        self.steps.fetch_add(1, Ordering::SeqCst);
        self.stop_requested()
    }

    /// True once Ctrl-C was pressed or the step budget is spent.
    pub fn stop_requested(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
            || self.stop_after_steps.is_some_and(|k| self.steps.load(Ordering::SeqCst) >= k)
    }
}

/// Where a stage stands: what a stage loop needs to go on exactly where it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct Position {
    /// Epochs of the stage finished.
    pub epoch: usize,
    /// Batches of epoch `epoch` done (0 at an epoch boundary).
    pub batch: usize,
    /// The stage's RNG state (dropout masks) after those batches.
    pub rng: [u64; 4],
    /// Sum of the training losses of the epoch's steps so far.
    pub loss_sum: f64,
    /// Optimizer steps of the epoch so far.
    pub steps: usize,
    /// Validation figures of the last finished epoch (loss, accuracy).
    pub last: (f32, f32),
}

impl Position {
    /// A stage's start, with its RNG state.
    pub fn start(rng: [u64; 4]) -> Self {
        Position { epoch: 0, batch: 0, rng, loss_sum: 0.0, steps: 0, last: (f32::NAN, 0.0) }
    }
}

/// How a stopped run ended; the error `run` and the stage commands return.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.message())]
pub struct Interrupted {
    /// The stage that stopped.
    pub stage: String,
    /// Its epochs finished.
    pub epochs: usize,
    /// Batches of the next epoch done.
    pub batch: usize,
    /// The training state's directory, saved at this point.
    pub state: PathBuf,
}

impl Interrupted {
    fn message(&self) -> String {
        let mut at = format!("stopped in stage {} after {} epoch(s)", self.stage, self.epochs);
        if self.batch > 0 {
            at += &format!(" and {} batches", self.batch);
        }
        let dir = self.state.display();
        format!("{at}: training state saved to {dir}; run the same command with --resume to continue")
    }
}

/// What a stage loop (`stages::fit_lm`, `fit_classifier`) reports to and asks of its run: a
/// plain `MetricsLog` appends rows and never stops or resumes; a `resume::Tracker` also saves and
/// restores the training state and honours stop requests.
pub trait StageHooks {
    /// True when the run resumes at a stage after `stage`, which it therefore skips.
    fn passed(&self, _stage: &str) -> bool {
        false
    }

    /// The position `stage` starts from: `fresh`, or the saved one (weights and moments
    /// restored into `named` and `opt`) when the run resumes in this stage.
    fn begin(
        &mut self,
        _stage: &str,
        _named: &[(String, Tensor)],
        _opt: &mut Adam,
        fresh: Position,
    ) -> Result<Position> {
        Ok(fresh)
    }

    /// Counts one optimizer step; true when the run should stop at this boundary.
    fn step_done(&self) -> bool {
        false
    }

    /// True once a stop was requested.
    fn stop_requested(&self) -> bool {
        false
    }

    /// Appends a finished epoch's metrics row (and saves the state at `pos`, its end).
    fn epoch_done(&mut self, m: &EpochMetrics, named: &[(String, Tensor)], opt: &Adam, pos: &Position) -> Result<()>;

    /// Saves the state of `stage` at `pos` (mid-epoch, before stopping).
    fn save(&mut self, _stage: &str, _named: &[(String, Tensor)], _opt: &Adam, _pos: &Position) -> Result<()> {
        Ok(())
    }

    /// The error that ends a run stopped in `stage` after `epochs` epochs and `batch`
    /// batches, once the state of that point is saved.
    fn interrupted(&self, stage: &str, epochs: usize, batch: usize) -> anyhow::Error {
        anyhow!("stage {stage} stopped after {epochs} epoch(s) and {batch} batches")
    }
}

impl StageHooks for MetricsLog {
    fn epoch_done(&mut self, m: &EpochMetrics, _: &[(String, Tensor)], _: &Adam, _: &Position) -> Result<()> {
        Ok(self.append(m)?)
    }
}
