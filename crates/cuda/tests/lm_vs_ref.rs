//! The CUDA LM training step against the CPU reference (`ulmfit_cuda::lm::reference`):
//! loss, every gradient and the carried state of two consecutive steps, dropout off and on
//! (the masks are the same hash on both sides), run op by op and replayed from CUDA graphs;
//! clipping and Adam against the CPU formulas; bit-identical repeats; 20 steps that lower
//! the loss along the CPU trajectory. FP32 within 1e-4 relative (TF32 looser). Without a GPU
//! each test prints one skip line and passes; ULMFIT_REQUIRE_GPU=1 makes that a failure.

mod common;

use common::{assert_close, gpu_lock, gpu_or_skip, lm_batch};
use ulmfit_cuda::lm::reference::{adam, adam_lm, clip_factor, forward_backward, zero_state};
use ulmfit_cuda::lm::{Dropouts, GroupHyper, Hyper, LmConfig, LmCuda, LmError, LmWeights};
use ulmfit_cuda::Gpu;

/// V=50, E=8, H=12, 3 layers, T=5, B=3.
fn small_cfg(drop: Dropouts) -> LmConfig {
    LmConfig { vocab: 50, emb: 8, hidden: 12, layers: 3, t: 5, b: 3, drop, alpha: 2.0, beta: 1.0, seed: 11 }
}

fn strong_dropouts() -> Dropouts {
    Dropouts { embed: 0.1, input: 0.2, weight: 0.2, hidden: 0.2, output: 0.2 }
}

fn compare_weights(what: &str, got: &LmWeights, want: &LmWeights, rtol: f32, atol_rel: f32) {
    for ((name, g), (_, w)) in got.named().into_iter().zip(want.named()) {
        assert_close(&format!("{what} {name}"), g, w, rtol, atol_rel);
    }
}

/// Two forward+backward passes (steps 1 and 2, state carried, no update in between)
/// against the reference: loss parts, every gradient, the state after each.
fn check_two_steps(gpu: &Gpu, cfg: &LmConfig, graphs: bool, rtol: f32, atol_rel: f32) {
    println!("{cfg:?} graphs {graphs}");
    let w = LmWeights::init(cfg, 5);
    let mut model = LmCuda::new(gpu, cfg.clone(), &w, Hyper::default()).expect("build LM");
    if graphs {
        model.capture_graphs().expect("capture graphs");
    }
    let mut state = zero_state(cfg);
    for step in 1..=2u32 {
        let (ids, targets) = lm_batch(cfg, step);
        model.set_batch(&ids, &targets).expect("upload batch");
        model.forward_backward().expect("forward+backward");
        let want = forward_backward(cfg, &w, &state, &ids, &targets, step);
        let loss = model.loss().expect("loss");
        println!("  step {step}: loss {loss:?} reference {:?}", want.loss);
        assert_close("loss", &loss, &want.loss, rtol, atol_rel);
        compare_weights("grad", &model.grads().expect("grads"), &want.grads, rtol, atol_rel);
        let got_state = model.state().expect("state");
        for (l, ((gh, gc), (wh, wc))) in got_state.iter().zip(&want.state).enumerate() {
            assert_close(&format!("h_n{l}"), gh, wh, rtol, atol_rel);
            assert_close(&format!("c_n{l}"), gc, wc, rtol, atol_rel);
        }
        assert_eq!(model.step_count().expect("step"), step, "step counter");
        state = want.state;
    }
}

#[test]
fn lm_step_matches_reference() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("lm_step_matches_reference", false) else {
        return;
    };
    check_two_steps(&gpu, &small_cfg(Dropouts::off()), false, 1e-4, 1e-5);
    check_two_steps(&gpu, &small_cfg(strong_dropouts()), false, 1e-4, 1e-5);
    // Two layers, E = H, one step of T: the edges of the loops.
    let edge = LmConfig { layers: 2, hidden: 8, t: 1, ..small_cfg(strong_dropouts()) };
    check_two_steps(&gpu, &edge, false, 1e-4, 1e-5);
}

#[test]
fn lm_graphs_match_reference() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("lm_graphs_match_reference", false) else {
        return;
    };
    check_two_steps(&gpu, &small_cfg(strong_dropouts()), true, 1e-4, 1e-5);
}

#[test]
fn lm_tf32_matches_reference_loosely() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("lm_tf32_matches_reference_loosely", true) else {
        return;
    };
    check_two_steps(&gpu, &small_cfg(strong_dropouts()), true, 2e-2, 2e-2);
}

#[test]
fn clip_and_adam_match_cpu_formulas() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("clip_and_adam_match_cpu_formulas", false) else {
        return;
    };
    let cfg = small_cfg(strong_dropouts());
    let h = Hyper { lr: 1e-2, weight_decay: 1.0, clip: 0.05, ..Hyper::default() };
    let mut model = LmCuda::new(&gpu, cfg.clone(), &LmWeights::init(&cfg, 9), h).expect("build LM");
    let p = LmWeights::init(&cfg, 9).len();
    let (mut m, mut v) = (vec![0.0f32; p], vec![0.0f32; p]);
    for step in 1..=2u32 {
        let (ids, targets) = lm_batch(&cfg, step);
        model.set_batch(&ids, &targets).expect("batch");
        model.forward_backward().expect("forward+backward");
        let before = model.weights().expect("weights").flatten();
        let grads = model.grads().expect("grads").flatten();
        model.update().expect("update");
        let (norm, factor) = model.clip().expect("clip");
        let (want_norm, want_factor) = clip_factor(&grads, h.clip);
        println!("step {step}: norm {norm} (cpu {want_norm}), factor {factor} (cpu {want_factor})");
        assert_close("norm", &[norm, factor], &[want_norm, want_factor], 1e-5, 0.0);
        assert!(factor < 1.0, "clip 0.05 should be active (norm {norm})");
        let mut want = before.clone();
        adam_lm(&cfg, &mut want, &mut m, &mut v, &grads, &h, step, want_factor);
        let after = model.weights().expect("weights").flatten();
        let (gm, gv) = model.moments().expect("moments");
        assert_close("adam m", &gm, &m, 1e-4, 1e-5);
        assert_close("adam v", &gv, &v, 1e-4, 1e-5);
        let delta = |w: &[f32]| w.iter().zip(&before).map(|(a, b)| a - b).collect::<Vec<f32>>();
        assert_close("adam dw", &delta(&after), &delta(&want), 1e-3, 1e-4);
    }
}

/// The group of each tensor of `LmWeights::named`: the embedding and decoder bias are the
/// last group, layer l's tensors group l.
fn group_of(name: &str, layers: usize) -> usize {
    match name {
        "emb" | "dec_bias" => layers,
        _ => name.trim_start_matches(|c: char| c.is_alphabetic() || c == '_').parse().expect("layer index"),
    }
}

#[test]
fn per_group_lrs_frozen_groups_and_update_counts_match_cpu_formulas() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("per_group_lrs_frozen_groups_and_update_counts_match_cpu_formulas", false) else {
        return;
    };
    let cfg = small_cfg(strong_dropouts());
    let base = Hyper { lr: 1e-2, weight_decay: 1.0, clip: 0.05, ..Hyper::default() };
    // Group 0 frozen, group 1 with its own LR and momentum and 4 earlier updates, the rest
    // fresh: each group's update must be Adam at its own t with its own settings, and the
    // norm must leave the frozen group out.
    let groups: Vec<GroupHyper> = (0..=cfg.layers)
        .map(|g| GroupHyper {
            hyper: if g == 1 { Hyper { lr: 3e-2, beta1: 0.8, ..base } } else { base },
            frozen: g == 0,
            updates: if g == 1 { 4 } else { 0 },
        })
        .collect();
    let w0 = LmWeights::init(&cfg, 9);
    let mut model = LmCuda::new(&gpu, cfg.clone(), &w0, base).expect("build LM");
    assert_eq!(model.groups().len(), cfg.layers + 1, "groups: {:?}", model.groups());
    let mut moments: Vec<(Vec<f32>, Vec<f32>)> =
        w0.named().iter().map(|(_, t)| (vec![0.0; t.len()], vec![0.0; t.len()])).collect();
    for step in 1..=2u32 {
        let (ids, targets) = lm_batch(&cfg, step);
        let ups: Vec<GroupHyper> = groups.iter().map(|g| GroupHyper { updates: g.updates + step - 1, ..*g }).collect();
        model.set_groups(&ups).expect("set groups");
        model.set_batch(&ids, &targets).expect("batch");
        model.forward_backward().expect("forward+backward");
        let before = model.weights().expect("weights");
        let grads = model.grads().expect("grads");
        model.update().expect("update");
        let trained: Vec<f32> = grads
            .named()
            .iter()
            .filter(|(n, _)| !ups[group_of(n, cfg.layers)].frozen)
            .flat_map(|(_, g)| g.to_vec())
            .collect();
        let (want_norm, factor) = clip_factor(&trained, base.clip);
        let (norm, got_factor) = model.clip().expect("clip");
        println!("step {step}: norm {norm} (cpu {want_norm}, frozen group left out)");
        assert_close("norm", &[norm, got_factor], &[want_norm, factor], 1e-5, 0.0);
        let after = model.weights().expect("weights");
        for (k, (((name, b), (_, g)), (_, a))) in
            before.named().into_iter().zip(grads.named()).zip(after.named()).enumerate()
        {
            let u = &ups[group_of(&name, cfg.layers)];
            let mut want = b.to_vec();
            if !u.frozen {
                let (m, v) = &mut moments[k];
                // The decoder bias is not decayed (fastai's `wd_bn_bias=False`).
                let hy = if name == "dec_bias" { Hyper { weight_decay: 0.0, ..u.hyper } } else { u.hyper };
                adam(&mut want, m, v, g, &hy, u.updates + 1, factor);
            }
            let delta = |w: &[f32]| w.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<f32>>();
            assert_close(&format!("step {step} {name} dw"), &delta(a), &delta(&want), 1e-3, 1e-4);
        }
    }
}

#[test]
fn evaluate_matches_reference_without_dropout() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("evaluate_matches_reference_without_dropout", false) else {
        return;
    };
    let cfg = small_cfg(strong_dropouts());
    let w = LmWeights::init(&cfg, 5);
    let mut model = LmCuda::new(&gpu, cfg.clone(), &w, Hyper::default()).expect("build LM");
    let off = LmConfig { drop: Dropouts::off(), ..cfg.clone() };
    let mut state = zero_state(&cfg);
    for k in 1..=2u32 {
        let (ids, targets) = lm_batch(&cfg, k);
        let ce = model.evaluate(&ids, &targets).expect("evaluate");
        let want = forward_backward(&off, &w, &state, &ids, &targets, k);
        println!("eval batch {k}: cross-entropy {ce} (cpu, dropout off: {})", want.loss[1]);
        assert_close("eval cross-entropy", &[ce], &[want.loss[1]], 1e-4, 1e-6);
        state = want.state;
    }
    assert_eq!(model.step_count().expect("step"), 0, "evaluation must not count steps");
    compare_weights("weights after evaluation", &model.weights().expect("weights"), &w, 0.0, 0.0);
}

#[test]
fn dropout_steps_repeat_bit_for_bit() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("dropout_steps_repeat_bit_for_bit", false) else {
        return;
    };
    let cfg = LmConfig { vocab: 300, emb: 16, hidden: 24, t: 7, b: 4, ..small_cfg(Dropouts::awd_lstm()) };
    let run = |graphs: bool| -> (Vec<[f32; 4]>, Vec<f32>) {
        let mut model = LmCuda::new(&gpu, cfg.clone(), &LmWeights::init(&cfg, 1), Hyper::default()).expect("build LM");
        if graphs {
            model.capture_graphs().expect("capture graphs");
        }
        let losses = (1..=3)
            .map(|s| {
                let (i, t) = lm_batch(&cfg, s);
                model.step(&i, &t).expect("step")
            })
            .collect();
        (losses, model.weights().expect("weights").flatten())
    };
    let (a, b) = (run(false), run(false));
    println!("losses {:?}", a.0);
    assert!(a.0 == b.0, "losses differ between identical runs: {:?} vs {:?}", a.0, b.0);
    assert!(a.1 == b.1, "weights differ between identical runs");
    let (g1, g2) = (run(true), run(true));
    assert!(g1.0 == g2.0 && g1.1 == g2.1, "graph replays differ between identical runs");
    let flat = |r: &[[f32; 4]]| r.iter().flatten().copied().collect::<Vec<f32>>();
    assert_close("graph vs stream losses", &flat(&g1.0), &flat(&a.0), 1e-5, 1e-6);
    // A different seed draws different masks.
    let mut other =
        LmCuda::new(&gpu, LmConfig { seed: 12, ..cfg.clone() }, &LmWeights::init(&cfg, 1), Hyper::default())
            .expect("build LM");
    let (i, t) = lm_batch(&cfg, 1);
    assert!(other.step(&i, &t).expect("step") != a.0[0], "seed 12 gave the same loss as seed 11");
}

#[test]
fn loss_decreases_along_the_cpu_trajectory() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("loss_decreases_along_the_cpu_trajectory", false) else {
        return;
    };
    let cfg = small_cfg(Dropouts::awd_lstm());
    let h = Hyper { lr: 3e-2, clip: 0.5, ..Hyper::default() };
    let w = LmWeights::init(&cfg, 5);
    let mut model = LmCuda::new(&gpu, cfg.clone(), &w, h).expect("build LM");
    model.capture_graphs().expect("capture graphs");
    let (ids, targets) = lm_batch(&cfg, 1);
    // The CPU twin of the same 20 steps: reference step, clip, Adam.
    let (mut flat, mut state) = (w.flatten(), zero_state(&cfg));
    let (mut m, mut v) = (vec![0.0; flat.len()], vec![0.0; flat.len()]);
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for step in 1..=20u32 {
        got.push(model.step(&ids, &targets).expect("step")[0]);
        let mut wk = w.clone();
        wk.unflatten(&flat);
        let out = forward_backward(&cfg, &wk, &state, &ids, &targets, step);
        let g = out.grads.flatten();
        adam_lm(&cfg, &mut flat, &mut m, &mut v, &g, &h, step, clip_factor(&g, h.clip).1);
        want.push(out.loss[0]);
        state = out.state;
    }
    println!("gpu {got:?}\ncpu {want:?}");
    assert!(got[19] < 0.85 * got[0], "loss did not fall over 20 steps: {got:?}");
    assert_close("20-step losses", &got, &want, 1e-2, 0.0);
}

#[test]
fn bad_batches_are_errors() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("bad_batches_are_errors", false) else {
        return;
    };
    let cfg = small_cfg(Dropouts::off());
    let mut model = LmCuda::new(&gpu, cfg.clone(), &LmWeights::init(&cfg, 1), Hyper::default()).expect("build LM");
    let (mut ids, targets) = lm_batch(&cfg, 1);
    ids[4] = 50;
    match model.set_batch(&ids, &targets) {
        Err(e @ LmError::Batch(_)) => assert!(e.to_string().contains("ids[4] = 50"), "{e}"),
        other => panic!("expected a batch error, got {:?}", other.map(|_| ())),
    }
    let short = vec![0u32; 3];
    assert!(matches!(model.set_batch(&short, &targets), Err(LmError::Batch(_))));
}
