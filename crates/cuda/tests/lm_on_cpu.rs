//! The LM step's parts that need no GPU: the kernels compile with NVRTC (where libnvrtc
//! loads), the mask hash keeps the right fraction and is a pure function of its counters,
//! and the CPU reference's gradients match finite differences (dropout on), so the spec the
//! GPU is checked against is itself checked. The op lists are replayed in lm_replay.rs.

mod common;

use ulmfit_cuda::lm::kernels::{LM_CU, LM_CU_NAME, NAMES};
use ulmfit_cuda::lm::mask::{mask_key, scales, unit, Mask};
use ulmfit_cuda::lm::reference::{clip_factor, forward_backward, zero_state};
use ulmfit_cuda::lm::{Dropouts, LmConfig, LmWeights};

#[test]
fn lm_kernels_compile_with_nvrtc() {
    common::compiles_with_every_kernel(LM_CU_NAME, LM_CU, &NAMES);
}

#[test]
fn masks_keep_the_right_fraction_and_repeat() {
    let n = 200_000;
    for p in [0.02f32, 0.1, 0.25, 0.5] {
        let s = scales(7, 3, Mask::Weight(1), n, p);
        let kept = s.iter().filter(|&&x| x != 0.0).count() as f64 / n as f64;
        // binomial sd = sqrt(p(1-p)/n) <= 1.2e-3; allow 5 sd
        assert!((kept - (1.0 - p as f64)).abs() < 6e-3, "p {p}: kept {kept}");
        assert!(s.iter().all(|&x| x == 0.0 || x == 1.0 / (1.0 - p)), "p {p}: scale values");
        assert_eq!(s, scales(7, 3, Mask::Weight(1), n, p), "same counters, same mask");
    }
    assert!(scales(1, 1, Mask::Input, 1000, 0.0).iter().all(|&x| x == 1.0), "p = 0 keeps all");
    // Every counter changes the mask.
    let base = scales(7, 3, Mask::Hidden(0), 4096, 0.5);
    for other in [
        scales(8, 3, Mask::Hidden(0), 4096, 0.5),
        scales(7, 4, Mask::Hidden(0), 4096, 0.5),
        scales(7, 3, Mask::Hidden(1), 4096, 0.5),
        scales(7, 3, Mask::Output, 4096, 0.5),
    ] {
        let same = base.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!(same < 2300, "masks from different counters agree on {same} of 4096");
    }
    let u: Vec<f32> = (0..1000).map(|k| unit(mask_key(0, 1, 2), k)).collect();
    assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
}

fn small_cfg(drop: Dropouts) -> LmConfig {
    LmConfig { vocab: 50, emb: 8, hidden: 12, layers: 3, t: 5, b: 3, drop, alpha: 2.0, beta: 1.0, seed: 11 }
}

fn batch(cfg: &LmConfig, salt: u32) -> (Vec<u32>, Vec<u32>) {
    let n = cfg.rows() as u32;
    let tok = |k: u32| (k.wrapping_mul(2654435761).wrapping_add(salt * 97) >> 7) % cfg.vocab as u32;
    ((0..n).map(tok).collect(), (n..2 * n).map(tok).collect())
}

#[test]
fn reference_gradients_match_finite_differences() {
    // Dropout on (masks depend only on the counters, so the loss is a fixed function).
    let cfg = small_cfg(Dropouts { embed: 0.1, input: 0.2, weight: 0.2, hidden: 0.2, output: 0.2 });
    let w = LmWeights::init(&cfg, 5);
    let (ids, targets) = batch(&cfg, 1);
    let state = zero_state(&cfg);
    let out = forward_backward(&cfg, &w, &state, &ids, &targets, 1);
    let flat = w.flatten();
    let grads = out.grads.flatten();
    let scale = grads.iter().fold(0f32, |m, g| m.max(g.abs()));
    let loss_at = |k: usize, delta: f32| {
        let mut f = flat.clone();
        f[k] += delta;
        let mut wk = w.clone();
        wk.unflatten(&f);
        forward_backward(&cfg, &wk, &state, &ids, &targets, 1).loss[0] as f64
    };
    let eps = 1e-2f32;
    let mut checked = 0;
    let mut at = 0;
    for (name, part) in w.named() {
        // A few entries of each tensor, plus the embedding rows of the batch's words.
        let mut picks: Vec<usize> = (0..part.len()).step_by((part.len() / 5).max(1)).collect();
        if name == "emb" {
            picks.extend(ids.iter().take(3).map(|&id| id as usize * cfg.emb + 1));
        }
        for i in picks {
            let k = at + i;
            let fd = ((loss_at(k, eps) - loss_at(k, -eps)) / (2.0 * eps as f64)) as f32;
            let g = grads[k];
            assert!(
                (fd - g).abs() <= 2e-3 * scale + 3e-2 * g.abs(),
                "{name}[{i}]: analytic {g:e} vs finite difference {fd:e} (max |grad| {scale:e})"
            );
            checked += 1;
        }
        at += part.len();
    }
    println!("{checked} gradients match finite differences (max |grad| {scale:.3e})");
    let (norm, f) = clip_factor(&grads, 0.1);
    assert!(norm > 0.0 && (f - (0.1 / (norm + 1e-6)).min(1.0)).abs() < 1e-7);
}

#[test]
fn config_errors_name_the_problem() {
    let mut cfg = small_cfg(Dropouts::off());
    cfg.drop.weight = 1.0;
    let e = cfg.validate().expect_err("p = 1 must be refused").to_string();
    assert!(e.contains("weight") && e.contains("[0, 1)"), "{e}");
    cfg = small_cfg(Dropouts::off());
    cfg.t = 0;
    assert!(cfg.validate().expect_err("T = 0").to_string().contains("positive"));
}
