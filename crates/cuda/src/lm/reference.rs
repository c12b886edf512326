//! One AWD-LSTM LM training step in plain loops on the CPU: the spec the CUDA step
//! (`super::model`) is checked against, masks included (`super::mask` is the kernels' twin).
//! The LSTM layers are `ulmfit_lstm::reference::{forward, backward}`.
//!
//! Dimensions: T steps, B batch, E embedding (= top layer) width, V vocabulary, N = T*B
//! rows r = t*B + b; ids and targets are time-major [T, B].
//!   x0 = emb[ids] * word(id) * input(b, :)             embedding + embedding and input dropout
//!   x_{l+1} = lstm_l(x_l; W_hh * weight_l) * hidden_l(b, :)       (no hidden dropout on top)
//!   raw = top output, dropped = raw * output(b, :), logits = dropped . emb^T + bias
//!   loss = mean CE + alpha * mean(dropped^2) + beta * mean_{t>=1} (raw_t - raw_{t-1})^2
//! The backward runs the same list in reverse (llm.c's shape).

// Index loops read like the equations.
#![allow(clippy::needless_range_loop)]

use ulmfit_lstm::{reference, LstmParams};

use super::config::{Hyper, LmConfig};
use super::mask::{scales, Mask};
use super::params::LmWeights;

/// The (h, c) state [B, H] of each layer, carried between steps.
pub type State = Vec<(Vec<f32>, Vec<f32>)>;

/// What one step computes before the optimizer.
pub struct RefStep {
    /// [total, cross-entropy, alpha * AR, beta * TAR]
    pub loss: [f32; 4],
    /// Gradient of the total loss w.r.t. every parameter.
    pub grads: LmWeights,
    /// The state after the step (detached: no gradient flows into it).
    pub state: State,
}

/// Zero state for `cfg`.
pub fn zero_state(cfg: &LmConfig) -> State {
    cfg.layer_dims().iter().map(|d| (vec![0.0; d.b * d.h], vec![0.0; d.b * d.h])).collect()
}

/// `out[r, :] = x[r, :] * mask[r % B, :]` for a variational [B, W] mask.
fn apply_rows(x: &[f32], mask: &[f32]) -> Vec<f32> {
    x.iter().enumerate().map(|(k, v)| v * mask[k % mask.len()]).collect()
}

/// Forward and backward of one step at optimizer step `step` (masks depend on it).
pub fn forward_backward(
    cfg: &LmConfig,
    w: &LmWeights,
    state: &State,
    ids: &[u32],
    targets: &[u32],
    step: u32,
) -> RefStep {
    let (tn, bn, e, nv, n) = (cfg.t, cfg.b, cfg.emb, cfg.vocab, cfg.rows());
    assert!(ids.len() == n && targets.len() == n, "lm reference: ids/targets must be T*B = {n}");
    let (dr, seed) = (cfg.drop, cfg.seed);
    let word = scales(seed, step, Mask::Word, nv, dr.embed);
    let input = scales(seed, step, Mask::Input, bn * e, dr.input);
    let out_mask = scales(seed, step, Mask::Output, bn * e, dr.output);

    // Embedding [N, E] with word and input dropout.
    let mut x = vec![0.0f32; n * e];
    for r in 0..n {
        let id = ids[r] as usize;
        for k in 0..e {
            x[r * e + k] = w.emb[id * e + k] * word[id] * input[(r % bn) * e + k];
        }
    }
    // LSTM layers; keep each layer's input and dropped W_hh for the backward.
    let dims = cfg.layer_dims();
    let (mut inputs, mut w_hhs, mut new_state) = (Vec::new(), Vec::new(), State::new());
    for (l, d) in dims.iter().enumerate() {
        let lw = &w.layers[l];
        let wm = scales(seed, step, Mask::Weight(l), lw.w_hh.len(), dr.weight);
        let w_hh: Vec<f32> = lw.w_hh.iter().zip(&wm).map(|(a, m)| a * m).collect();
        let out = reference::forward(*d, &lw.params_with(&w_hh), &x, &state[l].0, &state[l].1);
        new_state.push((out.h_n, out.c_n));
        inputs.push(std::mem::take(&mut x));
        w_hhs.push((w_hh, wm));
        x = if l + 1 < dims.len() {
            apply_rows(&out.y, &scales(seed, step, Mask::Hidden(l), bn * d.h, dr.hidden))
        } else {
            out.y
        };
    }
    let raw = x;
    let dropped = apply_rows(&raw, &out_mask);

    // Tied decoder and softmax cross-entropy; dlogits = (softmax - onehot) / N.
    let mut dlogits = vec![0.0f32; n * nv];
    let mut ce = 0.0f64;
    for r in 0..n {
        let z: Vec<f32> = (0..nv)
            .map(|v| w.dec_bias[v] + (0..e).map(|k| dropped[r * e + k] * w.emb[v * e + k]).sum::<f32>())
            .collect();
        let mx = z.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
        let lse = mx as f64 + z.iter().map(|&a| ((a - mx) as f64).exp()).sum::<f64>().ln();
        ce += lse - z[targets[r] as usize] as f64;
        for v in 0..nv {
            let p = ((z[v] as f64) - lse).exp() as f32;
            dlogits[r * nv + v] = (p - if v == targets[r] as usize { 1.0 } else { 0.0 }) / n as f32;
        }
    }
    // AR and TAR.
    let ar_div = (n * e) as f32;
    let tar_div = ((tn - 1) * bn * e) as f32;
    let ar: f64 = dropped.iter().map(|&d| (d * d) as f64).sum();
    let tar: f64 = (bn * e..n * e).map(|k| ((raw[k] - raw[k - bn * e]) as f64).powi(2)).sum();
    let ce = (ce / n as f64) as f32;
    let ar = cfg.alpha * (ar / ar_div as f64) as f32;
    let tar = if tn > 1 { cfg.beta * (tar / tar_div as f64) as f32 } else { 0.0 };

    // Backward: decoder (ddropped, demb, dbias), then AR/TAR and output dropout into dy.
    let mut grads = LmWeights::zeros(cfg);
    let mut ddropped = vec![0.0f32; n * e];
    for r in 0..n {
        for k in 0..e {
            ddropped[r * e + k] = (0..nv).map(|v| dlogits[r * nv + v] * w.emb[v * e + k]).sum();
        }
    }
    for v in 0..nv {
        for k in 0..e {
            grads.emb[v * e + k] = (0..n).map(|r| dlogits[r * nv + v] * dropped[r * e + k]).sum();
        }
        grads.dec_bias[v] = (0..n).map(|r| dlogits[r * nv + v]).sum();
    }
    let be = bn * e;
    let c_tar = if tn > 1 { 2.0 * cfg.beta / tar_div } else { 0.0 };
    let mut dy: Vec<f32> = (0..n * e)
        .map(|k| {
            let t = k / be;
            let mut g = out_mask[k % be] * (ddropped[k] + 2.0 * cfg.alpha / ar_div * dropped[k]);
            if t > 0 {
                g += c_tar * (raw[k] - raw[k - be]);
            }
            if t + 1 < tn {
                g -= c_tar * (raw[k + be] - raw[k]);
            }
            g
        })
        .collect();
    // LSTM layers in reverse; DropConnect's gradient takes the same mask.
    for (l, d) in dims.iter().enumerate().rev() {
        let lw = &w.layers[l];
        let (w_hh, wm) = &w_hhs[l];
        let p = LstmParams { w_ih: &lw.w_ih, w_hh, b_ih: &lw.b_ih, b_hh: &lw.b_hh };
        let g = reference::backward(*d, &p, &inputs[l], &state[l].0, &state[l].1, &dy, None, None);
        let gl = &mut grads.layers[l];
        gl.w_ih = g.dw_ih;
        gl.w_hh = g.dw_hh.iter().zip(wm).map(|(a, m)| a * m).collect();
        (gl.b_ih, gl.b_hh) = (g.db_ih, g.db_hh);
        dy =
            if l > 0 { apply_rows(&g.dx, &scales(seed, step, Mask::Hidden(l - 1), bn * d.i, dr.hidden)) } else { g.dx };
    }
    // Embedding: scatter-add through the input and word masks; none into the padding row.
    for r in (0..n).filter(|&r| ids[r] != super::PAD) {
        let id = ids[r] as usize;
        for k in 0..e {
            grads.emb[id * e + k] += word[id] * dy[r * e + k] * input[(r % bn) * e + k];
        }
    }
    RefStep { loss: [ce + ar + tar, ce, ar, tar], grads, state: new_state }
}

/// The gradient norm and clip factor as PyTorch's `clip_grad_norm_`: (||g||, min(1, max / (||g|| + 1e-6))).
pub fn clip_factor(grads: &[f32], max_norm: f32) -> (f32, f32) {
    let norm = grads.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>().sqrt() as f32;
    let coef = max_norm / (norm + 1e-6);
    (norm, if max_norm > 0.0 && coef < 1.0 { coef } else { 1.0 })
}

/// Adam(W) over the dense LM buffers ([`LmWeights::flatten`] order) as the device's update
/// does it: [`adam`] on every tensor, the decoder bias without weight decay (fastai's
/// `wd_bn_bias=False`).
#[allow(clippy::too_many_arguments)]
pub fn adam_lm(
    cfg: &LmConfig,
    w: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grads: &[f32],
    h: &Hyper,
    t: u32,
    scale: f32,
) {
    let (bias, rest) = (cfg.vocab * cfg.emb, cfg.vocab * (cfg.emb + 1));
    let no_decay = Hyper { weight_decay: 0.0, ..*h };
    for (range, hy) in [(0..bias, h), (bias..rest, &no_decay), (rest..w.len(), h)] {
        let r = range.clone();
        adam(&mut w[r.clone()], &mut m[r.clone()], &mut v[r.clone()], &grads[r], hy, t, scale);
    }
}

/// Adam(W) on flat buffers at step `t` (>= 1), gradients multiplied by `scale` first; the
/// formula of `ulmfit_tensor::optim::Adam::step`.
pub fn adam(w: &mut [f32], m: &mut [f32], v: &mut [f32], grads: &[f32], h: &Hyper, t: u32, scale: f32) {
    let c1 = 1.0 - h.beta1.powi(t as i32);
    let c2 = 1.0 - h.beta2.powi(t as i32);
    let decay = 1.0 - h.lr * h.weight_decay;
    for i in 0..w.len() {
        let g = grads[i] * scale;
        m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g;
        v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g * g;
        w[i] = w[i] * decay - h.lr * ((m[i] / c1) / ((v[i] / c2).sqrt() + h.eps));
    }
}
