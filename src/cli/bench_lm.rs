//! `ulmfit bench lm-step --device cpu`: one AWD-LSTM language-model training step
//! (3 layers 400-1152-1152-400, tied decoder, fastai's LM dropouts including weight
//! dropout, AR/TAR, cross-entropy, clipping 0.1, Adam) at `[T, B]`, timed as the median of
//! `steps` steps after one warm-up step. `scripts/bench_lm_step_torch.py` runs the same
//! step in PyTorch + fastai and prints the ratio.

use std::time::Instant;

use ulmfit_tensor::optim::{Adam, ParamGroup};
use ulmfit_tensor::Rng;
use ulmfit_text::LmBatch;
use ulmfit_trainer::awd_lstm::{AwdLstmConfig, LanguageModel};
use ulmfit_trainer::train::{lm_train_step, StepConfig};

/// Times the CPU step and prints one line (or one JSON object with `--json`).
pub fn lm_step_cpu(vocab: usize, batch: usize, seq: usize, steps: usize, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(vocab > 1 && batch > 0 && seq > 0 && steps > 0, "vocab, batch, seq and steps must be positive");
    let mut rng = Rng::new(0);
    let mut model = LanguageModel::new(AwdLstmConfig::lm(vocab), &mut rng);
    let groups = model.param_groups().into_iter().map(|p| ParamGroup::new(p, 1e-3)).collect();
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
    let case = format!("awd-lstm lm-step V{vocab} B{batch} T{seq}");
    if json {
        println!(r#"{{"case":"{case}","device":"cpu","pass":"step","ms":{ms:.3},"tokens_per_s":{tokens_per_s:.1}}}"#);
    } else {
        println!("{case} on cpu: {ms:.1} ms per step, {tokens_per_s:.0} tokens/s (median of {steps})");
    }
    Ok(())
}
