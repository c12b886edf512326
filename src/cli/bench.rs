//! `ulmfit bench ...`: throughput benchmarks that check before they time.
//!
//! `bench lstm` first compares the fused layer with `ulmfit_lstm::reference` on a small
//! slice of the case's first layer, then times the whole stack forward and forward+backward
//! (median of `--repeats` runs after `--warmup`). Napkin math, per token and layer:
//! forward = 2 * 4H * (I + H) FLOP (the input and recurrent GEMMs), forward+backward = 3x.
use std::time::Instant;

use anyhow::{bail, ensure, Result};
use clap::{Args, Subcommand};

use super::bench_lm::LmShape;
use super::Device;
use ulmfit_lstm::layer::{self, Wanted};
use ulmfit_lstm::{reference, Isa, LstmDims, LstmStack};

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// LSTM forward and forward+backward throughput (tokens/s, GFLOP/s).
    Lstm(LstmArgs),
    /// One AWD-LSTM language-model training step (tokens/s).
    LmStep(LmStepArgs),
}

/// `ulmfit bench lm-step` options.
#[derive(Args, Debug)]
pub struct LmStepArgs {
    /// Vocabulary size V of the tied decoder.
    #[arg(long, default_value_t = 33278)]
    vocab: usize,
    /// Embedding size E (also the last LSTM layer's width).
    #[arg(long, default_value_t = 400)]
    emb: usize,
    /// Hidden size H of the other LSTM layers.
    #[arg(long, default_value_t = 1152)]
    hidden: usize,
    /// Number of LSTM layers.
    #[arg(long, default_value_t = 3)]
    layers: usize,
    /// Batch size B.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Sequence length T.
    #[arg(long, default_value_t = 70)]
    seq: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Train only the top group (embedding and tied decoder), as in the first epoch of LM
    /// fine-tuning (fastai's `learn.freeze()`); the LSTM layers are frozen. CPU only.
    #[arg(long)]
    frozen: bool,
    /// Where it runs.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    /// Allow TF32 tensor-core math (CUDA only).
    #[arg(long)]
    tf32: bool,
    /// Print one JSON object instead of a line.
    #[arg(long)]
    json: bool,
}

/// `ulmfit bench lstm` options.
#[derive(Args, Debug)]
pub struct LstmArgs {
    /// Input feature size I of the first layer.
    #[arg(long, default_value_t = 400)]
    input: usize,
    /// Hidden size H of every layer (with --layers).
    #[arg(long, default_value_t = 1152)]
    hidden: usize,
    /// Number of layers of size --hidden.
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Input size then each layer's hidden size, e.g. 400,1152,1152,400 (overrides --input/--hidden/--layers).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Batch size B.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Sequence length T.
    #[arg(long, default_value_t = 70)]
    seq: usize,
    /// Where it runs.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    /// Allow TF32 tensor-core math (CUDA only).
    #[arg(long)]
    tf32: bool,
    /// Timed runs per pass (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// One LSTM benchmark case: a stack of layers over a [T, B, input] sequence.
#[derive(Clone, Debug)]
pub struct LstmCase {
    /// Input feature size of the first layer.
    pub input: usize,
    /// Hidden size of each layer, bottom to top.
    pub sizes: Vec<usize>,
    /// Batch size B.
    pub batch: usize,
    /// Sequence length T.
    pub seq: usize,
}

impl LstmCase {
    /// Short name, e.g. `400-1152-1152-400 B64 T70`.
    pub fn name(&self) -> String {
        let sizes: Vec<String> =
            std::iter::once(self.input).chain(self.sizes.iter().copied()).map(|s| s.to_string()).collect();
        format!("{} B{} T{}", sizes.join("-"), self.batch, self.seq)
    }

    /// Forward FLOP per token, summed over layers: 2 * 4H * (I + H) each.
    pub fn flop_per_token(&self) -> f64 {
        let mut i = self.input;
        let mut total = 0.0;
        for &h in &self.sizes {
            total += 8.0 * h as f64 * (i + h) as f64;
            i = h;
        }
        total
    }
}

/// Runs one benchmark.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Lstm(args) => lstm(args),
        BenchCommand::LmStep(a) => {
            let shape = LmShape {
                vocab: a.vocab,
                emb: a.emb,
                hidden: a.hidden,
                layers: a.layers,
                batch: a.batch,
                seq: a.seq,
                frozen: a.frozen,
            };
            shape.check()?;
            ensure!(a.steps > 0, "--steps must be positive");
            ensure!(!(a.frozen && a.device == Device::Cuda), "--frozen is measured on the CPU only");
            match a.device {
                Device::Cpu => super::bench_lm::lm_step_cpu(&shape, a.steps, a.json),
                Device::Cuda => super::bench_cuda::lm_step(&shape, a.steps, a.tf32, a.json),
            }
        }
    }
}

fn lstm(a: LstmArgs) -> Result<()> {
    let case = match &a.sizes {
        Some(s) => {
            ensure!(s.len() >= 2, "--sizes {s:?}: give the input size and at least one layer size");
            LstmCase { input: s[0], sizes: s[1..].to_vec(), batch: a.batch, seq: a.seq }
        }
        None => LstmCase { input: a.input, sizes: vec![a.hidden; a.layers], batch: a.batch, seq: a.seq },
    };
    ensure!(
        !case.sizes.is_empty() && case.input > 0 && case.sizes.iter().all(|&h| h > 0) && case.batch > 0 && case.seq > 0,
        "bench lstm: need at least one layer, and every size, --batch and --seq positive ({})",
        case.name()
    );
    ensure!(a.repeats > 0, "bench lstm: --repeats must be at least 1");
    match a.device {
        Device::Cuda => super::bench_cuda::lstm(&case, a.tf32, a.json),
        Device::Cpu if a.tf32 => bail!("--tf32 applies to --device cuda only"),
        Device::Cpu => lstm_cpu(&case, &a),
    }
}

fn lstm_cpu(case: &LstmCase, a: &LstmArgs) -> Result<()> {
    let isa = Isa::detect();
    let diff = check_against_reference(case, isa);
    ensure!(diff <= 1e-4, "bench lstm: fused layer differs from the reference by {diff:e} (relative); not timing");
    let mut sizes = vec![case.input];
    sizes.extend(&case.sizes);
    let mut stack = LstmStack::new(&sizes, 1);
    stack.isa = isa;
    let (t, b) = (case.seq, case.batch);
    let x: Vec<f32> = (0..t * b * case.input).map(|k| (k * 37 % 101) as f32 / 50.0 - 1.0).collect();
    let dy: Vec<f32> =
        (0..t * b * case.sizes[case.sizes.len() - 1]).map(|k| (k * 13 % 29) as f32 / 14.0 - 1.0).collect();
    let threads = layer::num_threads();
    if !a.json {
        println!(
            "bench lstm {} on cpu: {isa:?}, {threads} threads; check vs reference: max rel diff {diff:.1e}",
            case.name()
        );
    }
    let fwd = time(a, || {
        stack.forward(&x, t, b, false, 0);
    });
    let fwd_bwd = time(a, || {
        let (_, trace) = stack.forward(&x, t, b, true, 0);
        stack.backward(trace.expect("training forward returns a trace"), &dy);
    });
    let tokens = (t * b) as f64;
    for (pass, secs, mult) in [("fwd", fwd, 1.0), ("fwd+bwd", fwd_bwd, 3.0)] {
        let (tps, gflops) = (tokens / secs, tokens * case.flop_per_token() * mult / secs / 1e9);
        if a.json {
            println!(
                "{{\"case\":\"{}\",\"device\":\"cpu\",\"isa\":\"{isa:?}\",\"threads\":{threads},\"pass\":\"{pass}\",\"ms\":{:.3},\"tokens_per_s\":{tps:.1},\"gflops\":{gflops:.2}}}",
                case.name(),
                secs * 1e3
            );
        } else {
            println!("  {pass:<8} {:>9.2} ms  {tps:>11.0} tokens/s  {gflops:>7.1} GFLOP/s", secs * 1e3);
        }
    }
    Ok(())
}

/// Median wall time of `a.repeats` runs of `f` after `a.warmup` untimed ones.
fn time(a: &LstmArgs, mut f: impl FnMut()) -> f64 {
    for _ in 0..a.warmup {
        f();
    }
    let mut secs: Vec<f64> = (0..a.repeats)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    secs[secs.len() / 2]
}

/// Largest relative difference between the fused layer and the reference on a small
/// slice of the first layer (T=3, B=min(B, 5), full I and H): forward y and dW_hh.
fn check_against_reference(case: &LstmCase, isa: Isa) -> f32 {
    let d = LstmDims { t: 3, b: case.batch.min(5), i: case.input, h: case.sizes[0] };
    let w = ulmfit_lstm::LayerWeights::init(d.i, d.h, 7);
    let p = w.params_with(&w.w_hh);
    let x: Vec<f32> = (0..d.t * d.b * d.i).map(|k| (k * 7 % 23) as f32 / 11.0 - 1.0).collect();
    let zeros = vec![0.0; d.b * d.h];
    let dy: Vec<f32> = (0..d.t * d.b * d.h).map(|k| (k * 5 % 17) as f32 / 8.0 - 1.0).collect();
    let want = reference::forward(d, &p, &x, &zeros, &zeros);
    let want_g = reference::backward(d, &p, &x, &zeros, &zeros, &dy, None, None);
    let (out, saved) = layer::forward(d, &p, &x, &zeros, &zeros, isa);
    let g = layer::backward(d, &p, &x, &zeros, &zeros, &out.y, saved, &dy, (None, None), Wanted::ALL, isa);
    let rel = |got: &[f32], want: &[f32]| {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
        got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs() / scale))
    };
    rel(&out.y, &want.y).max(rel(&g.dw_hh, &want_g.dw_hh)).max(rel(&g.dx, &want_g.dx))
}
