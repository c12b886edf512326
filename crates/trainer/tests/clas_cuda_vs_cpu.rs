//! The CUDA classifier (`ulmfit_cuda::clas::ClasCuda`) against the CPU classifier
//! (`ulmfit_trainer::classifier::Classifier`), dropouts off: a small model (V 60, E 16, H 24,
//! 3 layers, 3 classes, bptt 5, max_len 6) on 16 documents of 30, 22 and 9..6 tokens (14 end
//! inside chunk 1, so it runs padding steps; chunks shrink from 16 rows to 2 to 1; chunks 0, 2
//! and 3 lie outside every pooling window (fastai's windows: steps 25.., 20.., 5..), so they
//! run without being kept and only carry the state; windows cut documents). 16 documents and
//! weights scaled up, so that batch norm sees features that vary between rows (see
//! `cpu_model`): batch norm multiplies rounding by 1 / std of its inputs, up to 316.
//! Compared, each printed with its max relative error: pooled features, logits, loss, every
//! gradient (of the cross-entropy plus fastai's AR/TAR, which reads documents 9..6 through
//! their trailing padding), the gradient norm, the weights and BN running statistics after one clipped Adam
//! step with a learning rate per group, then two steps with frozen groups (unfrozen one step
//! later: per-group Adam step counts; each from the GPU's state, copied to the CPU), then
//! eval-mode probabilities. Also: out of GPU memory is an error naming the size; DropConnect
//! is drawn per chunk (dW_hh vanishes exactly where every kept chunk's mask drops the weight).
//! FP32 within 1e-4 relative. Without a GPU every test prints one skip line and passes;
//! ULMFIT_REQUIRE_GPU=1 makes that a failure.

use ulmfit_cuda::clas::chunks::Schedule;
use ulmfit_cuda::clas::{mask_id, ClasConfig, ClasCuda, ClasDropouts, ClasError, ClasHyper, ClasMask, ClasWeights};
use ulmfit_cuda::device::gpu_or_skip;
use ulmfit_cuda::lm::mask::{keep_scale, mask_key};
use ulmfit_tensor::optim::{clip_grad_norm, Adam, ParamGroup};
use ulmfit_tensor::{no_grad, Rng, Tensor};
use ulmfit_trainer::awd_lstm::{AwdLstm, AwdLstmConfig};
use ulmfit_trainer::classifier::{Classifier, DocBatch};
use ulmfit_trainer::config::Dropouts;
use ulmfit_trainer::gpu_clas::clas_weights;
use ulmfit_trainer::train::classifier_probs;

const RTOL: f32 = 1e-4;

static GPU_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Asserts |got - want| <= RTOL * (|want| + max|want|) elementwise (sums of many terms are
/// judged on their tensor's scale); prints the max relative error. NaN never passes.
fn check(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs CPU {}", got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    let (mut max_diff, mut at, mut bad) = (0.0f32, 0, None);
    for (k, (&a, &b)) in got.iter().zip(want).enumerate() {
        let diff = if a.is_nan() { f32::INFINITY } else { (a - b).abs() };
        if diff > max_diff {
            (max_diff, at) = (diff, k);
        }
        let within = diff <= RTOL * (b.abs() + scale); // false for NaN
        if !within && bad.is_none() {
            bad = Some(k);
        }
    }
    println!(
        "  {what:<22} n={:<6} max rel err {:.2e} (max|diff| {max_diff:.2e} at {at}, max|cpu| {scale:.2e})",
        got.len(),
        max_diff / scale
    );
    if let Some(k) = bad {
        panic!(
            "{what}: GPU {} vs CPU {} at {k}; max |diff| {max_diff:.3e} at {at} (scale {scale:.3e})",
            got[k], want[k]
        );
    }
}

fn cfg() -> ClasConfig {
    ClasConfig {
        vocab: 60,
        emb: 16,
        hidden: 24,
        layers: 3,
        features: 50,
        classes: 3,
        bptt: 5,
        max_len: 6,
        batch: 16,
        drop: ClasDropouts::off(),
        seed: 9,
    }
}

/// The CPU classifier for `cfg` with dropouts off, random BN scales, shifts and running stats.
fn cpu_model(c: &ClasConfig) -> Classifier {
    let mut rng = Rng::new(4);
    let enc = AwdLstmConfig {
        vocab: c.vocab,
        emb_sz: c.emb,
        n_hid: c.hidden,
        n_layers: c.layers,
        drop: Dropouts::lm().scaled(0.0),
    };
    let mut m = Classifier::new(AwdLstm::new(enc, &mut rng), c.classes, c.features, 0.1, &mut rng);
    (m.bptt, m.max_len) = (c.bptt, c.max_len);
    // Embedding x10 and LSTM weights x3: with the default init the pooled features barely
    // differ between documents (std ~1e-3 of 0.3), and batch norm's 1 / std (up to
    // 1/sqrt(eps) = 316) amplifies FP32 rounding 100-300x; scaled, the smallest std is 0.03.
    m.encoder.embedding.data_mut().iter_mut().for_each(|v| *v *= 10.0);
    for t in m.encoder.layers.iter().flat_map(|l| [&l.w_ih, &l.w_hh]) {
        t.data_mut().iter_mut().for_each(|v| *v *= 3.0);
    }
    for blk in &mut m.head {
        blk.p = 0.0;
        let n = blk.gamma.numel();
        for (t, lo, hi) in
            [(&blk.gamma, 0.5, 1.5), (&blk.beta, -0.3, 0.3), (&blk.stats.mean, -0.2, 0.2), (&blk.stats.var, 0.5, 2.0)]
        {
            t.data_mut().copy_from_slice(&rng.uniform_tensor(&[n], lo, hi).to_vec());
        }
    }
    m
}

/// The CPU gradients in the same layout (zeros where a parameter got none: frozen).
fn grads_of(m: &Classifier, c: &ClasConfig) -> ClasWeights {
    let g = |t: &Tensor| t.grad().map(|g| g.to_vec()).unwrap_or_else(|| vec![0.0; t.numel()]);
    let mut out = ClasWeights::zeros(c);
    out.emb = g(&m.encoder.embedding);
    for (o, w) in out.layers.iter_mut().zip(&m.encoder.layers) {
        (o.w_ih, o.w_hh, o.b_ih, o.b_hh) = (g(&w.w_ih), g(&w.w_hh), g(&w.b_ih), g(&w.b_hh));
    }
    for (o, b) in out.head.iter_mut().zip(&m.head) {
        (o.gamma, o.beta, o.weight) = (g(&b.gamma), g(&b.beta), g(&b.weight));
    }
    out
}

/// 16 documents of 30, 22 and 9..6 tokens (ids 0..60, so the pad id 1 also occurs inside),
/// and their labels.
fn batch() -> (Vec<Vec<u32>>, Vec<u32>) {
    let lens = [30, 22, 9, 9, 8, 8, 8, 7, 7, 7, 7, 6, 6, 6, 6, 6];
    let docs = lens
        .iter()
        .enumerate()
        .map(|(b, &l)| {
            (0..l).map(|k| ((b as u32 * 131 + k as u32 * 37 + 11).wrapping_mul(2654435761) >> 9) % 60).collect()
        })
        .collect();
    (docs, (0..lens.len() as u32).map(|b| (b * 7 + 1) % 3).collect())
}

/// The CPU pooled features [B, 3E]: the encoder over the chunks, pooled as concat_pool.
fn cpu_pooled(m: &mut Classifier, docs: &[Vec<u32>]) -> Vec<f32> {
    let (e, bptt, max_len) = (m.encoder.cfg.emb_sz, m.bptt, m.max_len);
    let lens: Vec<usize> = docs.iter().map(Vec::len).collect();
    let mut outs = Vec::new(); // (start, rows, [len, rows, E])
    m.encoder.reset();
    for start in (0..lens[0]).step_by(bptt) {
        let len = bptt.min(lens[0] - start);
        let rows = lens.iter().take_while(|&&l| l > start).count();
        let ids: Vec<u32> =
            (0..len).flat_map(|s| docs[..rows].iter().map(move |d| d.get(start + s).copied().unwrap_or(1))).collect();
        m.encoder.keep_rows(rows).unwrap();
        let out = no_grad(|| m.encoder.forward(&ids, len, rows, false, &mut Rng::new(0))).unwrap().raw.to_vec();
        outs.push((start, rows, out));
    }
    m.encoder.reset();
    let mut pooled = vec![0.0; lens.len() * 3 * e];
    // classifier.rs's windows: fastai's chunks of front-padded documents.
    let first = lens[0].saturating_sub(max_len).div_ceil(bptt) * bptt;
    for (b, &len) in lens.iter().enumerate() {
        let from = first.saturating_sub((lens[0] - len) / bptt * bptt);
        let h = |pos: usize| {
            let (start, rows, out) = &outs[pos / bptt];
            out[((pos - start) * rows + b) * e..][..e].to_vec()
        };
        let p = &mut pooled[b * 3 * e..][..3 * e];
        p[..e].copy_from_slice(&h(len - 1));
        p[e..2 * e].fill(f32::NEG_INFINITY);
        for pos in from..len {
            for (k, v) in h(pos).into_iter().enumerate() {
                p[e + k] = p[e + k].max(v);
                p[2 * e + k] += v;
            }
        }
        p[2 * e..].iter_mut().for_each(|v| *v /= len.saturating_sub(from).max(1) as f32);
    }
    pooled
}

/// Discriminative learning rates (fastai's lr / 2.6^k from the head down), decay, clip,
/// fastai's AR/TAR weights.
fn hyper(c: &ClasConfig, frozen: &[bool]) -> ClasHyper {
    let g = c.groups();
    ClasHyper {
        lrs: (0..g).map(|k| 3e-3 / 2.6f32.powi((g - 1 - k) as i32)).collect(),
        frozen: frozen.to_vec(),
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-5,
        weight_decay: 0.5, // large enough that the batch-norm exemption shows (fastai's wd_bn_bias)
        clip: Some(0.2),
        alpha: 2.0,
        beta: 1.0,
    }
}

/// The CPU optimizer over the model's groups with `h`'s settings.
fn cpu_adam(m: &Classifier, h: &ClasHyper) -> Adam {
    let groups = m
        .param_groups()
        .into_iter()
        .zip(&h.lrs)
        .map(|(params, &lr)| ParamGroup {
            betas: (h.beta1, h.beta2),
            weight_decay: h.weight_decay,
            ..ParamGroup::new(params, lr).without_decay_for(&m.no_decay())
        })
        .collect();
    Adam::new(groups, h.eps)
}

fn compare_weights(what: &str, got: &ClasWeights, want: &ClasWeights) {
    for ((name, g), (_, w)) in got.named().into_iter().zip(want.named()) {
        check(&format!("{what} {name}"), g, w);
    }
    for (k, (g, w)) in got.stats().into_iter().zip(want.stats()).enumerate() {
        check(&format!("{what} bn{} running {}", k / 2, ["mean", "var"][k % 2]), g, w);
    }
}

/// Copies the GPU model's weights, running statistics and Adam moments into the CPU model and
/// optimizer, so the next step of both starts from the same state (the trajectories would
/// otherwise drift apart by each step's rounding).
fn sync_cpu_to_gpu(m: &Classifier, opt: &mut Adam, gm: &ClasCuda) {
    let w = gm.weights().unwrap();
    let (mm, vv) = gm.moments().unwrap();
    let (wg, mg, vg) = (w.groups(), mm.groups(), vv.groups());
    for (k, group) in m.param_groups().iter().enumerate() {
        for (j, p) in group.iter().enumerate() {
            p.data_mut().copy_from_slice(wg[k][j].1);
            let st = &mut opt.moments_mut()[k][j];
            if !st.m.is_empty() {
                st.m.copy_from_slice(mg[k][j].1);
                st.v.copy_from_slice(vg[k][j].1);
            }
        }
    }
    for (blk, hw) in m.head.iter().zip(&w.head) {
        blk.stats.mean.data_mut().copy_from_slice(&hw.running_mean);
        blk.stats.var.data_mut().copy_from_slice(&hw.running_var);
    }
}

/// One CPU training step (forward, cross-entropy plus AR/TAR of `h`, backward, clip, Adam)
/// with `frozen` groups; returns (cross-entropy, logits, grads before clipping, norm).
fn cpu_step(m: &mut Classifier, opt: &mut Adam, c: &ClasConfig, h: &ClasHyper) -> (f32, Vec<f32>, ClasWeights, f32) {
    let (docs, labels) = batch();
    for (group, &f) in m.param_groups().iter().zip(&h.frozen) {
        group.iter().for_each(|p| p.set_requires_grad(!f).unwrap());
    }
    opt.zero_grad();
    let (logits, reg) = m.forward_regularized(&DocBatch { docs }, h.alpha, h.beta, &mut Rng::new(0)).unwrap();
    let ce = logits.cross_entropy(&labels, None).unwrap();
    println!("  CPU AR/TAR {}", reg.item().unwrap());
    ce.add(&reg).unwrap().backward().unwrap();
    let grads = grads_of(m, c);
    let params: Vec<Tensor> = m.param_groups().into_iter().flatten().collect();
    let norm = clip_grad_norm(&params, 0.2);
    opt.step();
    (ce.item().unwrap(), logits.to_vec(), grads, norm)
}

#[test]
fn clas_step_matches_cpu() {
    let Some(gpu) = gpu_or_skip("clas_step_matches_cpu", false) else { return };
    let _lock = GPU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let c = cfg();
    let mut m = cpu_model(&c);
    let mut gm = ClasCuda::new(&gpu, c.clone(), &clas_weights(&m)).expect("build the CUDA classifier");
    let (docs, labels) = batch();
    let lens: Vec<usize> = docs.iter().map(Vec::len).collect();
    let kept: Vec<bool> = Schedule::new(&lens, c.bptt, c.max_len).unwrap().chunks.iter().map(|ch| ch.kept).collect();
    assert_eq!(kept, [false, true, false, false, true, true], "the batch should have chunks that are not kept");
    let all = vec![false; c.groups()];
    let h = hyper(&c, &all);
    let mut opt = cpu_adam(&m, &h);

    let pooled = cpu_pooled(&mut m, &docs);
    let (loss, logits, grads, norm) = cpu_step(&mut m, &mut opt, &c, &h);
    let gloss = gm.train_step(&docs, &labels, &h).expect("GPU train step");
    println!("step 1: loss GPU {gloss} CPU {loss}; grad norm CPU {norm}");
    check("pooled", &gm.pooled().unwrap(), &pooled);
    check("logits", &gm.logits().unwrap(), &logits);
    check("loss", &[gloss], &[loss]);
    compare_weights("grad", &gm.grads().unwrap(), &grads);
    check("grad norm", &[gm.grad_norm().unwrap()], &[norm]);
    assert!(norm > 0.2, "the test should exercise clipping (norm {norm})");
    compare_weights("after step 1", &gm.weights().unwrap(), &clas_weights(&m));
    sync_cpu_to_gpu(&m, &mut opt, &gm);

    // Gradual unfreezing: embedding and layer 0 frozen, then only the embedding.
    let l0 = 1;
    let mut frozen = all.clone();
    frozen[0] = true;
    frozen[l0] = true;
    for step in 2..=3 {
        let before = gm.moments().unwrap();
        let hf = hyper(&c, &frozen);
        let (loss, logits, grads, norm) = cpu_step(&mut m, &mut opt, &c, &hf);
        let gloss = gm.train_step(&docs, &labels, &hf).expect("GPU train step");
        println!("step {step} frozen {frozen:?}: loss GPU {gloss} CPU {loss}; grad norm CPU {norm}");
        check("logits", &gm.logits().unwrap(), &logits);
        check("loss", &[gloss], &[loss]);
        compare_weights("grad", &gm.grads().unwrap(), &grads);
        check("grad norm", &[gm.grad_norm().unwrap()], &[norm]);
        compare_weights(&format!("after step {step}"), &gm.weights().unwrap(), &clas_weights(&m));
        let after = gm.moments().unwrap();
        for (k, &f) in frozen.iter().enumerate() {
            for (b, a) in [(&before.0, &after.0), (&before.1, &after.1)] {
                let (bg, ag) = (b.groups(), a.groups());
                let same = bg[k].iter().zip(&ag[k]).all(|(x, y)| x.1 == y.1);
                assert!(same == f, "group {k} (frozen {f}): moments changed {}", !same);
            }
        }
        sync_cpu_to_gpu(&m, &mut opt, &gm);
        frozen[l0] = false;
    }

    let cpu_probs: Vec<f32> = classifier_probs(&mut m, &DocBatch { docs: docs.clone() }, &mut Rng::new(0))
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let gpu_probs: Vec<f32> = gm.probs(&docs).expect("GPU probs").into_iter().flatten().collect();
    check("eval probs", &gpu_probs, &cpu_probs);
    // Eval leaves the running statistics alone.
    compare_weights("after eval", &gm.weights().unwrap(), &clas_weights(&m));
}

#[test]
fn clas_out_of_memory_names_the_size() {
    let Some(gpu) = gpu_or_skip("clas_out_of_memory_names_the_size", false) else { return };
    let _lock = GPU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let c = ClasConfig { emb: 400, hidden: 1152, batch: 2, bptt: 72, max_len: 1440, ..cfg() };
    let mut gm = ClasCuda::new(&gpu, c.clone(), &ClasWeights::zeros(&c)).expect("a small model fits");
    // Two documents of 20 M tokens: layer 0's hidden states alone need 184 GB.
    let docs = vec![vec![2u32; 20_000_000]; 2];
    let err = gm.train_step(&docs, &[0, 1], &ClasHyper::uniform(&c, 1e-3)).expect_err("must run out of memory");
    let msg = err.to_string();
    println!("  error: {msg}");
    assert!(
        matches!(err, ClasError::Cuda(ulmfit_cuda::Error::OutOfMemory { bytes, .. }) if bytes >= 1 << 30),
        "expected an out-of-memory error naming its size (>= 1 GiB): {msg}"
    );
    assert!(msg.contains("out of GPU memory") && msg.contains("bytes"), "{msg}");
}

#[test]
fn clas_dropout_steps_are_finite_and_repeat() {
    let Some(gpu) = gpu_or_skip("clas_dropout_steps_are_finite_and_repeat", false) else { return };
    let _lock = GPU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let c = ClasConfig { drop: ClasDropouts::fastai(), ..cfg() };
    let w = clas_weights(&cpu_model(&c));
    let (docs, labels) = batch();
    let h = hyper(&c, &vec![false; c.groups()]);
    let run = || {
        let mut gm = ClasCuda::new(&gpu, c.clone(), &w).expect("build");
        let losses: Vec<f32> = (0..3).map(|_| gm.train_step(&docs, &labels, &h).expect("step")).collect();
        (losses, gm.weights().unwrap().named().into_iter().flat_map(|(_, t)| t.to_vec()).collect::<Vec<f32>>())
    };
    let (a, wa) = run();
    let (b, wb) = run();
    println!("  dropout-on losses {a:?}");
    assert!(a.iter().all(|l| l.is_finite() && *l > 0.0), "losses {a:?}");
    assert_eq!(a, b, "the same seed must give the same losses");
    assert!(wa == wb, "the same seed must give the same weights");
    let probs = ClasCuda::new(&gpu, c.clone(), &w).unwrap().probs(&docs).expect("probs");
    for (k, p) in probs.iter().enumerate() {
        let sum: f32 = p.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5 && p.iter().all(|v| *v >= 0.0), "probs of document {k}: {p:?}");
    }
}

/// The tensors of parameter group `k`, in `ClasWeights::groups` order.
fn group_mut(w: &mut ClasWeights, k: usize) -> Vec<&mut Vec<f32>> {
    let nl = w.layers.len();
    if k == 0 {
        vec![&mut w.emb]
    } else if k <= nl {
        let l = &mut w.layers[k - 1];
        vec![&mut l.w_ih, &mut l.w_hh, &mut l.b_ih, &mut l.b_hh]
    } else {
        let [a, b] = &mut w.head;
        vec![&mut a.gamma, &mut a.beta, &mut a.weight, &mut b.gamma, &mut b.beta, &mut b.weight]
    }
}

/// Dropouts on (every mask drawn from the hash, the same masks in each call of one step), one
/// chunk: the GPU gradient of single weights of each parameter group against the central
/// difference of the GPU loss. A forward/backward mask mismatch (embedding, input, DropConnect,
/// hidden, head) gives errors of tens of percent; the tolerance is 2%. Weights whose two
/// step sizes disagree (a max-pooling or ReLU kink within the step) are passed over.
#[test]
fn clas_dropout_gradients_match_finite_differences() {
    let Some(gpu) = gpu_or_skip("clas_dropout_gradients_match_finite_differences", false) else { return };
    let _lock = GPU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // One chunk (bptt = the longest document): across chunks BPT3C cuts the gradient on
    // purpose, which a finite difference would see. max_len >= bptt, so every document is
    // pooled whole (fastai's window starts at a chunk boundary).
    let drop = ClasDropouts { embed: 0.1, input: 0.2, weight: 0.25, hidden: 0.2, head1: 0.2, head2: 0.1 };
    let c = ClasConfig { drop, bptt: 30, max_len: 30, ..cfg() };
    let w0 = clas_weights(&cpu_model(&c));
    let (docs, labels) = batch();
    let mut gm = ClasCuda::new(&gpu, c.clone(), &w0).expect("build");
    let h = hyper(&c, &vec![false; c.groups()]);
    gm.train_step(&docs, &labels, &h).expect("one step, so the masks of step 1 are in force");
    let w1 = gm.weights().unwrap();
    let loss = gm.forward_backward(&docs, &labels, [0.0, 0.0]).expect("forward+backward");
    let grads = gm.grads().unwrap();
    // Single weights, largest gradient first. Max pooling and the head's ReLU (800 inputs
    // here) make the loss only piecewise smooth, and a kink inside the step bends a central
    // difference, the more the larger the step (GPU run of 78b6884: a bias whose differences
    // read 0.274 / 0.289 / 0.320 at steps 1e-3 / 5e-4 / 2.5e-4 against a gradient of 0.347,
    // one kink 1.7e-4 away). So each weight is differenced at two steps: where they disagree
    // by more than the tolerance a kink is near and the weight is passed over. Three smooth
    // weights per group must match. A mask mismatch gives differences that agree with each
    // other and not with the gradient, and fails.
    let mut fd = |k: usize, j: usize, eps: f32| -> f64 {
        let mut losses = [0.0f32; 2];
        for (s, sign) in [1.0f32, -1.0].into_iter().enumerate() {
            let mut w = w1.clone();
            let mut at = j;
            for t in group_mut(&mut w, k) {
                if at < t.len() {
                    t[at] += sign * eps;
                    break;
                }
                at -= t.len();
            }
            gm.set_weights(&w).unwrap();
            losses[s] = gm.forward_backward(&docs, &labels, [0.0, 0.0]).expect("forward+backward");
        }
        (losses[0] - losses[1]) as f64 / (2.0 * eps as f64)
    };
    for k in 0..c.groups() {
        let g: Vec<f32> = grads.groups()[k].iter().flat_map(|(_, t)| t.iter().copied()).collect();
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        let mut smooth = 0;
        for &j in order.iter().take(24) {
            let analytic = g[j] as f64;
            let numeric = [5e-4, 2.5e-4].map(|eps| fd(k, j, eps));
            let tol = 2e-2 * analytic.abs() + 1e-4;
            let near_kink = (numeric[0] - numeric[1]).abs() > tol;
            let err = numeric.iter().map(|n| (n - analytic).abs()).fold(0.0, f64::max);
            let verdict = if near_kink { "near a kink, passed over" } else { "smooth" };
            println!(
                "  group {k} weight {j}: loss {loss} gradient GPU {analytic:.6} finite differences {numeric:.6?} (rel err {:.2e}, {verdict})",
                err / analytic.abs().max(1e-12)
            );
            if near_kink {
                continue;
            }
            assert!(err <= tol, "group {k} weight {j}: gradient {analytic} vs finite differences {numeric:?}");
            smooth += 1;
            if smooth == 3 {
                break;
            }
        }
        assert_eq!(smooth, 3, "group {k}: fewer than 3 of the 24 largest gradients are away from kinks");
    }
}

/// DropConnect only (p 0.5), two kept chunks: dW_hh must be 0 exactly where both chunks'
/// masks drop the weight, and (generically) nonzero where one keeps it; the masks of the
/// chunks must differ. Catches a dW mask drawn with the wrong chunk's id (or one shared id).
#[test]
fn clas_dropconnect_gradient_vanishes_exactly_where_every_chunk_drops() {
    let Some(gpu) = gpu_or_skip("clas_dropconnect_gradient_vanishes_exactly_where_every_chunk_drops", false) else {
        return;
    };
    let drop = ClasDropouts { weight: 0.5, ..ClasDropouts::off() };
    let c = ClasConfig { drop, max_len: 10, batch: 4, ..cfg() };
    let enc = AwdLstmConfig { vocab: 60, emb_sz: 16, n_hid: 24, n_layers: 3, drop: Dropouts::lm().scaled(0.0) };
    let mut rng = Rng::new(4);
    let m = Classifier::new(AwdLstm::new(enc, &mut rng), 3, 50, 0.0, &mut rng);
    // Lengths 10, 9, 7, 6: two chunks, both in every window (max_len 10).
    let docs: Vec<Vec<u32>> =
        [10u32, 9, 7, 6].iter().map(|&l| (0..l).map(|k| 2 + (k * 7 + l) % 50).collect()).collect();
    let labels = [0, 1, 2, 0];
    let mut gm = ClasCuda::new(&gpu, c.clone(), &clas_weights(&m)).expect("build");
    let step = 3;
    gm.set_step_count(step);
    gm.forward_backward(&docs, &labels, [0.0, 0.0]).expect("forward+backward");
    let grads = gm.grads().unwrap();
    for (l, g) in grads.layers.iter().enumerate() {
        let keep = |chunk: usize, k: usize| {
            keep_scale(mask_key(c.seed, step, mask_id(ClasMask::Weight(chunk, l))), k as u64, 0.5) != 0.0
        };
        let (mut both_dropped, mut nonzero, mut kept, mut differ) = (0, 0, 0, 0);
        for (k, &v) in g.w_hh.iter().enumerate() {
            let (k0, k1) = (keep(0, k), keep(1, k));
            differ += usize::from(k0 != k1);
            if !k0 && !k1 {
                both_dropped += 1;
                assert_eq!(v, 0.0, "layer {l}: dW_hh[{k}] = {v} though both chunks drop it");
            } else {
                kept += 1;
                nonzero += usize::from(v != 0.0);
            }
        }
        println!("layer {l}: {both_dropped} dropped by both chunks, {nonzero} of {kept} others nonzero, masks differ at {differ}");
        assert!(both_dropped > 0 && differ > g.w_hh.len() / 4, "layer {l}: masks not per chunk");
        assert!(nonzero * 10 >= kept * 9, "layer {l}: only {nonzero} of {kept} kept weights have a gradient");
    }
}
