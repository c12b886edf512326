//! The CUDA side of `ulmfit bench lstm --device cuda`: checks a small slice of the case
//! against the CPU reference (`ulmfit_lstm::reference`), then times forward and
//! forward+backward of the layer stack, step by step and replayed from CUDA graphs; and of
//! `ulmfit bench lm-step --device cuda`: checks a tiny LM step against
//! `ulmfit_cuda::lm::reference`, then times the whole AWD-LSTM training step.
//!
//! Times are the median over repeats after warm-up, each repeat bracketed by a stream sync
//! (as the PyTorch script does with `torch.cuda.synchronize()`). GFLOP/s counts the GEMMs
//! only (`LstmCase::flop_per_token`): forward 8·H·(I+H)·B·T per layer, backward twice that.
use std::time::Instant;

use anyhow::Context;
use ulmfit_cuda::lm::{reference as lm_reference, Hyper, LmConfig, LmCuda, LmWeights};
use ulmfit_cuda::plan::{backward_plan, forward_plan, Step};
use ulmfit_cuda::{Gpu, LstmCuda};
use ulmfit_lstm::{reference, LstmDims, LstmParams};
use ulmfit_tensor::Rng;

use super::bench::LstmCase;
use super::bench_lm::LmShape;

/// Warm-up runs before timing, and bounds on the timed repeats.
const WARMUP: usize = 3;
const MIN_REPEATS: usize = 10;
const MAX_REPEATS: usize = 100;
/// Aim for about this much timed work per pass.
const TARGET_SECONDS: f64 = 1.0;

/// Weights and data of one layer, host side.
struct HostLayer {
    d: LstmDims,
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
    x: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
    dy: Vec<f32>,
}

fn uniform(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * scale).collect()
}

impl HostLayer {
    /// PyTorch's init range 1/sqrt(H) for weights; inputs and dy uniform in [-1, 1).
    fn random(d: LstmDims, rng: &mut Rng) -> HostLayer {
        let k = 1.0 / (d.h as f32).sqrt();
        HostLayer {
            d,
            w_ih: uniform(rng, 4 * d.h * d.i, k),
            w_hh: uniform(rng, 4 * d.h * d.h, k),
            b_ih: uniform(rng, 4 * d.h, k),
            b_hh: uniform(rng, 4 * d.h, k),
            x: uniform(rng, d.t * d.b * d.i, 1.0),
            h0: uniform(rng, d.b * d.h, 0.5),
            c0: uniform(rng, d.b * d.h, 0.5),
            dy: uniform(rng, d.t * d.b * d.h, 1.0),
        }
    }

    fn params(&self) -> LstmParams<'_> {
        LstmParams { w_ih: &self.w_ih, w_hh: &self.w_hh, b_ih: &self.b_ih, b_hh: &self.b_hh }
    }
}

/// Dims of each layer of the stack: layer l maps sizes[l-1] (or `input`) to sizes[l].
fn stack_dims(case: &LstmCase, t: usize, b: usize) -> Vec<LstmDims> {
    let inputs = std::iter::once(case.input).chain(case.sizes.iter().copied());
    inputs.zip(&case.sizes).map(|(i, &h)| LstmDims { t, b, i, h }).collect()
}

/// max |got - want| / max |want| over one output.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-12);
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs() as f64).fold(0f64, |m, v| {
        if v.is_nan() {
            f64::INFINITY
        } else {
            m.max(v)
        }
    });
    diff / scale
}

/// Runs every layer at T <= 3, B <= 2 on the GPU and on the CPU reference; fails when any
/// output or gradient is off by more than 1e-4 (FP32) or 2e-2 (TF32) of its scale.
fn check_against_reference(gpu: &Gpu, case: &LstmCase) -> anyhow::Result<f64> {
    let tol = if gpu.tf32() { 2e-2 } else { 1e-4 };
    let mut rng = Rng::new(7);
    let mut worst = 0f64;
    for d in stack_dims(case, case.seq.min(3), case.batch.min(2)) {
        let l = HostLayer::random(d, &mut rng);
        let p = l.params();
        let mut layer = LstmCuda::new(gpu, d, &p)?;
        let out = layer.forward(&l.x, &l.h0, &l.c0)?;
        let grads = layer.backward(&l.dy, None, None)?;
        let want = reference::forward(d, &p, &l.x, &l.h0, &l.c0);
        let wg = reference::backward(d, &p, &l.x, &l.h0, &l.c0, &l.dy, None, None);
        let pairs = [
            ("y", &out.y, &want.y),
            ("c_n", &out.c_n, &want.c_n),
            ("dx", &grads.dx, &wg.dx),
            ("dh0", &grads.dh0, &wg.dh0),
            ("dc0", &grads.dc0, &wg.dc0),
            ("dw_ih", &grads.dw_ih, &wg.dw_ih),
            ("dw_hh", &grads.dw_hh, &wg.dw_hh),
            ("db", &grads.db_ih, &wg.db_ih),
        ];
        for (name, got, want) in pairs {
            let e = rel_err(got, want);
            anyhow::ensure!(
                e <= tol,
                "CUDA LSTM {d:?} {name} differs from the CPU reference: {e:.2e} of its scale (tolerance {tol:.0e})"
            );
            worst = worst.max(e);
        }
    }
    Ok(worst)
}

/// Median wall time in ms of `run` (which must end with a stream sync).
fn time_ms(mut run: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    for _ in 0..WARMUP {
        run()?;
    }
    let start = Instant::now();
    run()?;
    let once = start.elapsed().as_secs_f64();
    let repeats = ((TARGET_SECONDS / once.max(1e-6)) as usize).clamp(MIN_REPEATS, MAX_REPEATS);
    let mut ms = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        run()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

/// One result line, as text or JSON, in the CPU bench's format plus `tf32` and `graphs`.
struct Report<'a> {
    case: &'a LstmCase,
    pass: &'a str,
    gpu: &'a Gpu,
    graphs: bool,
    ms: f64,
    flop: f64,
}

impl Report<'_> {
    fn print(&self, json: bool) {
        let secs = self.ms * 1e-3;
        let tps = (self.case.batch * self.case.seq) as f64 / secs;
        let gflops = self.flop / secs / 1e9;
        let launch = if self.graphs { "graphs" } else { "stream" };
        if json {
            println!(
                "{{\"case\":\"{}\",\"device\":\"{}\",\"tf32\":{},\"graphs\":{},\"pass\":\"{}\",\
                 \"ms\":{:.4},\"tokens_per_s\":{tps:.1},\"gflops\":{gflops:.2}}}",
                self.case.name(),
                self.gpu.name().replace('"', "'"),
                self.gpu.tf32(),
                self.graphs,
                self.pass,
                self.ms
            );
        } else {
            println!("  {:<8} {:>9.3} ms  {tps:>11.0} tokens/s  {gflops:>7.1} GFLOP/s  ({launch})", self.pass, self.ms);
        }
    }
}

/// Times `case` on GPU 0 and prints results in the same format as the CPU bench.
pub fn lstm(case: &LstmCase, tf32: bool, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        !case.sizes.is_empty() && case.input > 0 && case.batch > 0 && case.seq > 0,
        "bench lstm: empty case {case:?}"
    );
    let gpu = Gpu::new(tf32)?;
    let worst = check_against_reference(&gpu, case).context("checking before timing")?;
    if !json {
        println!(
            "bench lstm {} on cuda: {}, {}; check vs reference (T<=3, B<=2): max rel diff {worst:.1e}",
            case.name(),
            gpu.name(),
            if tf32 { "tf32" } else { "fp32" }
        );
    }

    let mut rng = Rng::new(1);
    let dims = stack_dims(case, case.seq, case.batch);
    let host: Vec<HostLayer> = dims.iter().map(|&d| HostLayer::random(d, &mut rng)).collect();
    let mut layers = Vec::with_capacity(host.len());
    for l in &host {
        let mut layer = LstmCuda::new(&gpu, l.d, &l.params())?;
        // Each layer gets its own input: same work as feeding y forward, without copies.
        layer.set_input(&l.x, &l.h0, &l.c0)?;
        layer.set_output_grad(&l.dy, None, None)?;
        layers.push(layer);
    }
    let fwd_flop = case.flop_per_token() * (case.batch * case.seq) as f64;

    let mut layers_captured = false;
    for graphs in [false, true] {
        if graphs {
            if let Err(e) = layers.iter_mut().try_for_each(|l| l.capture_graphs()) {
                eprintln!("warning: CUDA graph capture failed, graphs not timed: {e}");
                break;
            }
            layers_captured = true;
        }
        for (pass, flop) in [("fwd", fwd_flop), ("fwd+bwd", 3.0 * fwd_flop)] {
            let ms = time_ms(|| {
                layers.iter().try_for_each(|l| l.run_forward())?;
                if pass == "fwd+bwd" {
                    layers.iter().rev().try_for_each(|l| l.run_backward())?;
                }
                Ok(gpu.sync(pass)?)
            })?;
            Report { case, pass, gpu: &gpu, graphs, ms, flop }.print(json);
        }
    }
    if layers_captured {
        time_parts(&gpu, case, &layers, json)?;
    }
    Ok(())
}

/// Times the parts of forward+backward separately (each captured as one graph per layer):
/// the whole-sequence GEMMs, the per-step recurrent GEMMs and the cell kernels. GFLOP/s
/// of a part counts that part's GEMMs (2·M·N·K each; the cells count none).
fn time_parts(gpu: &Gpu, case: &LstmCase, layers: &[LstmCuda], json: bool) -> anyhow::Result<()> {
    for kind in ["seq-gemm", "step-gemm", "cell"] {
        let mut graphs = Vec::with_capacity(layers.len());
        let mut flop = 0.0;
        for l in layers {
            graphs.push(l.capture_kind(kind)?);
            let d = l.dims();
            let steps = forward_plan(d).into_iter().chain(backward_plan(d));
            for s in steps.filter(|s| s.kind() == kind) {
                if let Step::Gemm(g) = s {
                    let (m, n, k) = g.mnk();
                    flop += 2.0 * (m * n * k) as f64;
                }
            }
        }
        let ms = time_ms(|| {
            for g in &graphs {
                g.launch()?;
            }
            Ok(gpu.sync(kind)?)
        })?;
        Report { case, pass: &format!("fwd+bwd:{kind}"), gpu, graphs: true, ms, flop }.print(json);
    }
    Ok(())
}

/// Runs one forward+backward of a tiny LM (all dropouts on) on the GPU and on the CPU
/// reference (`ulmfit_cuda::lm::reference`); fails when the loss or any gradient is off by
/// more than 1e-4 (FP32) or 2e-2 (TF32) of its scale. Returns the worst relative difference.
fn check_lm_against_reference(gpu: &Gpu) -> anyhow::Result<f64> {
    let tol = if gpu.tf32() { 2e-2 } else { 1e-4 };
    let cfg = LmConfig { vocab: 97, emb: 16, hidden: 24, ..LmConfig::awd_lstm(97, 6, 3) };
    let w = LmWeights::init(&cfg, 3);
    let mut rng = Rng::new(3);
    let ids: Vec<u32> = (0..cfg.rows() * 2).map(|_| rng.below(cfg.vocab) as u32).collect();
    let (x, y) = ids.split_at(cfg.rows());
    let mut model = LmCuda::new(gpu, cfg.clone(), &w, Hyper::default())?;
    model.set_batch(x, y)?;
    model.forward_backward()?;
    let want = lm_reference::forward_backward(&cfg, &w, &lm_reference::zero_state(&cfg), x, y, 1);
    let mut worst = rel_err(&model.loss()?, &want.loss);
    let got = model.grads()?;
    for ((name, g), (_, r)) in got.named().into_iter().zip(want.grads.named()) {
        let e = rel_err(g, r);
        anyhow::ensure!(e <= tol, "CUDA LM step: gradient {name} differs from the CPU reference by {e:.2e} of its scale (tolerance {tol:.0e})");
        worst = worst.max(e);
    }
    anyhow::ensure!(worst <= tol, "CUDA LM step: loss differs from the CPU reference by {worst:.2e}");
    Ok(worst)
}

/// Median wall time in ms of `steps` runs of `run` (which must end with a host sync)
/// after `WARMUP` untimed runs.
fn median_ms(steps: usize, mut run: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    for _ in 0..WARMUP {
        run()?;
    }
    let mut ms = Vec::with_capacity(steps);
    for _ in 0..steps.max(1) {
        let start = Instant::now();
        run()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

/// Times one AWD-LSTM LM training step on GPU 0 (fastai's LM config, all dropouts,
/// AR/TAR, clip 0.1, Adam): the batch upload, forward, backward, clipping, Adam and the loss
/// download, op by op and replayed from CUDA graphs. With `--json` the last line printed is
/// the graphs result (`scripts/bench_lm_step_torch.py` reads it); the text output ends with
/// the time of each phase of the step.
pub fn lm_step(shape: &LmShape, steps: usize, tf32: bool, json: bool) -> anyhow::Result<()> {
    let LmShape { vocab, batch, seq, .. } = *shape;
    let gpu = Gpu::new(tf32)?;
    let worst = check_lm_against_reference(&gpu).context("checking before timing")?;
    let case = shape.case();
    if !json {
        println!(
            "bench lm-step {case} on cuda: {}, {}; check vs reference (V97 T6 B3): max rel diff {worst:.1e}",
            gpu.name(),
            if tf32 { "tf32" } else { "fp32" }
        );
    }
    let cfg = LmConfig {
        emb: shape.emb,
        hidden: shape.hidden,
        layers: shape.layers,
        ..LmConfig::awd_lstm(vocab, seq, batch)
    };
    let mut model = LmCuda::new(&gpu, cfg.clone(), &LmWeights::init(&cfg, 0), Hyper::default())?;
    let mut rng = Rng::new(1);
    let ids: Vec<u32> = (0..(seq + 1) * batch).map(|_| rng.below(vocab) as u32).collect();
    let (x, y) = (&ids[..seq * batch], &ids[batch..]);
    let tokens = (batch * seq) as f64;
    let report = |pass: &str, graphs: bool, ms: f64, loss: f32| {
        let tps = tokens / (ms * 1e-3);
        if json {
            println!(
                "{{\"case\":\"{case}\",\"device\":\"{}\",\"tf32\":{tf32},\"graphs\":{graphs},\"pass\":\"{pass}\",\"ms\":{ms:.4},\"tokens_per_s\":{tps:.1}}}",
                gpu.name().replace('"', "'")
            );
        } else {
            let launch = if graphs { "graphs" } else { "stream" };
            println!("  {pass:<12} {ms:>9.3} ms  {tps:>11.0} tokens/s  ({launch}, median of {steps}, loss {loss:.4})");
        }
    };
    let mut loss = 0.0;
    let ms = median_ms(steps, || {
        loss = model.step(x, y)?[0];
        Ok(())
    })?;
    report("step", false, ms, loss);
    if let Err(e) = model.capture_graphs() {
        eprintln!("warning: CUDA graph capture of the LM step failed, graphs not timed: {e}");
        return Ok(());
    }
    // The parts alone (human output only): forward+backward, then clip + Adam.
    if !json {
        let fb = median_ms(steps, || Ok(model.forward_backward().and_then(|_| gpu.sync("fwd+bwd"))?))?;
        report("fwd+bwd", true, fb, model.loss()?[0]);
        let up = median_ms(steps, || Ok(model.update().and_then(|_| gpu.sync("update"))?))?;
        report("clip+adam", true, up, model.loss()?[0]);
    }
    let ms = median_ms(steps, || {
        loss = model.step(x, y)?[0];
        Ok(())
    })?;
    anyhow::ensure!(loss.is_finite(), "bench lm-step: the loss became {loss}");
    report("step", true, ms, loss);
    if !json {
        print_phases(&model, steps);
    }
    Ok(())
}

/// Prints where the step's time goes (`LmCuda::time_phases`), after every timing line: a
/// failure here only loses the breakdown (a warning on stderr).
fn print_phases(model: &LmCuda, steps: usize) {
    match model.time_phases(steps) {
        Ok(parts) => {
            println!("  phases (one graph each, CUDA events, median of {steps}):");
            for (name, ms) in &parts {
                println!("    {name:<30} {ms:>8.3} ms");
            }
            let sum: f64 = parts.iter().map(|(_, ms)| ms).sum();
            println!("    {:<30} {sum:>8.3} ms", "sum of phases");
        }
        Err(e) => eprintln!("warning: phase breakdown failed: {e}"),
    }
}
