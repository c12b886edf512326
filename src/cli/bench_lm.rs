//! `ulmfit bench lm-step --device cpu`: one AWD-LSTM language-model training step
//! (by default 3 layers 400-1152-1152-400, tied decoder, fastai's LM dropouts including
//! weight dropout, AR/TAR, cross-entropy, clipping 0.1, Adam) at `[T, B]`, timed as the
//! median of `steps` steps after one warm-up step; `frozen` times the step of the first LM
//! fine-tuning epoch instead, only the embedding and decoder trained.
//! `scripts/bench_lm_step_torch.py` runs the same step in PyTorch + fastai and prints the ratio.

use std::time::Instant;

use ulmfit_tensor::optim::{Adam, ParamGroup};
use ulmfit_tensor::Rng;
use ulmfit_text::LmBatch;
use ulmfit_trainer::awd_lstm::{AwdLstmConfig, LanguageModel};
use ulmfit_trainer::schedule::FreezeStage;
use ulmfit_trainer::train::{lm_train_step, StepConfig};

/// The model and batch of one timed LM step: V, E, H, layers, B, T.
pub struct LmShape {
    /// Vocabulary size V of the tied decoder.
    pub vocab: usize,
    /// Embedding size E, also the last layer's width.
    pub emb: usize,
    /// Hidden size H of the other layers.
    pub hidden: usize,
    /// Number of LSTM layers.
    pub layers: usize,
    /// B
    pub batch: usize,
    /// T
    pub seq: usize,
    /// Only the top group (embedding and tied decoder) trains.
    pub frozen: bool,
}

impl LmShape {
    /// Refuses a zero size (and a one-word vocabulary) with the option's name.
    pub fn check(&self) -> anyhow::Result<()> {
        let sizes = [("vocab", self.vocab), ("emb", self.emb), ("hidden", self.hidden)];
        let sizes = sizes.into_iter().chain([("layers", self.layers), ("batch", self.batch), ("seq", self.seq)]);
        for (name, v) in sizes {
            anyhow::ensure!(v > 0, "--{name} must be positive");
        }
        anyhow::ensure!(self.vocab > 1, "--vocab must be at least 2");
        Ok(())
    }

    /// The case name the text and JSON output carry, e.g. `awd-lstm lm-step V33278
    /// 400-1152-1152-400 B64 T70`.
    pub fn case(&self) -> String {
        let mut sizes = vec![self.emb];
        sizes.extend((1..self.layers).map(|_| self.hidden));
        sizes.push(self.emb);
        let sizes: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
        let frozen = if self.frozen { " frozen" } else { "" };
        format!("awd-lstm lm-step V{} {} B{} T{}{frozen}", self.vocab, sizes.join("-"), self.batch, self.seq)
    }
}

/// Times the CPU step and prints one line (or one JSON object with `--json`).
pub fn lm_step_cpu(shape: &LmShape, steps: usize, json: bool) -> anyhow::Result<()> {
    let LmShape { vocab, batch, seq, .. } = *shape;
    let mut rng = Rng::new(0);
    let config =
        AwdLstmConfig { emb_sz: shape.emb, n_hid: shape.hidden, n_layers: shape.layers, ..AwdLstmConfig::lm(vocab) };
    let mut model = LanguageModel::new(config, &mut rng);
    let groups: Vec<ParamGroup> = model.param_groups().into_iter().map(|p| ParamGroup::new(p, 1e-3)).collect();
    let trainable_groups_from_top = if shape.frozen { 1 } else { usize::MAX };
    FreezeStage { trainable_groups_from_top, epochs: 1, lr_max: 1e-3, lr_div: 1.0 }.apply(&groups)?;
    let mut opt = Adam::new(groups, 1e-5);
    let ids: Vec<u32> = (0..(seq + 1) * batch).map(|_| rng.below(vocab) as u32).collect();
    let lm_batch =
        LmBatch { x: ids[..seq * batch].to_vec(), y: ids[batch..].to_vec(), seq_len: seq, batch_size: batch };
    let cfg = StepConfig { clip: Some(0.1), alpha: 2.0, beta: 1.0 };
    let mut times = Vec::with_capacity(steps);
    for step in 0..=steps {
        let t = Instant::now();
        lm_train_step(&mut model, &mut opt, &lm_batch, cfg, &mut rng, step)?;
        if step > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let ms = times[times.len() / 2] * 1e3;
    let tokens_per_s = (batch * seq) as f64 / (ms / 1e3);
    let case = shape.case();
    if json {
        println!(r#"{{"case":"{case}","device":"cpu","pass":"step","ms":{ms:.3},"tokens_per_s":{tokens_per_s:.1}}}"#);
    } else {
        println!("{case} on cpu: {ms:.1} ms per step, {tokens_per_s:.0} tokens/s (median of {steps})");
    }
    Ok(())
}
