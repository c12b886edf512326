//! A stack of fused LSTM layers with per-layer sizes (AWD-LSTM: 400-1152-1152-400),
//! state carried between calls and detached (truncated BPTT), and DropConnect on W_hh.
//!
//! Layer l reads layer l-1's output y. Each forward starts from the state the previous
//! forward ended in; no gradient flows into that state. Checked against `reference.rs`
//! layer by layer in tests/stack.rs.

use crate::cell::Isa;
use crate::layer::{self, Saved, Wanted};
use crate::reference::{LstmDims, LstmGrads, LstmParams};
use rayon::prelude::*;

/// Weights of one layer, PyTorch layout and gate order (i, f, g, o).
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// Input size I.
    pub i: usize,
    /// Hidden size H.
    pub h: usize,
    /// [4H, I]
    pub w_ih: Vec<f32>,
    /// [4H, H]
    pub w_hh: Vec<f32>,
    /// `[4H]`
    pub b_ih: Vec<f32>,
    /// `[4H]`
    pub b_hh: Vec<f32>,
}

impl LayerWeights {
    /// PyTorch's default init: every weight uniform in [-1/sqrt(H), 1/sqrt(H)). Each tensor
    /// draws from its own stream, a hash of (`seed`, tensor), so layers seeded `seed + l`
    /// share no stream.
    pub fn init(i: usize, h: usize, seed: u64) -> Self {
        let k = 1.0 / (h as f32).sqrt();
        let u = |tensor: u64, n: usize| -> Vec<f32> {
            let stream = mix(mix(seed) ^ tensor);
            (0..n).map(|j| (unit(stream, j) * 2.0 - 1.0) * k).collect()
        };
        LayerWeights { i, h, w_ih: u(1, 4 * h * i), w_hh: u(2, 4 * h * h), b_ih: u(3, 4 * h), b_hh: u(4, 4 * h) }
    }

    /// Borrowed view with `w_hh` replaced (by a DropConnect-masked copy).
    pub fn params_with<'a>(&'a self, w_hh: &'a [f32]) -> LstmParams<'a> {
        LstmParams { w_ih: &self.w_ih, w_hh, b_ih: &self.b_ih, b_hh: &self.b_hh }
    }
}

/// A number in [0, 1) that depends only on (`seed`, `index`).
fn unit(seed: u64, index: usize) -> f32 {
    let z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64).wrapping_add(0x632B_E59B_D9B4_E019);
    (mix(z) >> 40) as f32 / (1u64 << 24) as f32
}

/// splitmix64's finaliser: a bijection of u64 that scatters every input bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// DropConnect on W_hh: one mask per forward, drawn from (`seed`, element index), so the
/// backward regenerates it instead of storing it.
#[derive(Clone, Copy, Debug)]
pub struct DropMask {
    /// Probability of dropping each weight.
    pub p: f32,
    pub seed: u64,
}

impl DropMask {
    /// Mask scale of element k: 0 if dropped, else 1 / (1 - p).
    fn scale(&self, k: usize) -> f32 {
        if unit(self.seed, k) < self.p {
            0.0
        } else {
            1.0 / (1.0 - self.p)
        }
    }

    /// `out = w * mask` (the copy the whole sequence uses), into a reused buffer.
    pub fn apply(&self, w: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(w);
        self.apply_grad(out);
    }

    /// Multiplies `x` by the mask in place: turns dL/d(masked W) into dL/dW.
    pub fn apply_grad(&self, x: &mut [f32]) {
        const CHUNK: usize = 1 << 14;
        x.par_chunks_mut(CHUNK).enumerate().for_each(|(c, part)| {
            part.iter_mut().enumerate().for_each(|(k, v)| *v *= self.scale(c * CHUNK + k));
        });
    }
}

/// What one layer's forward kept for its backward (its input is the layer below's `y`).
struct LayerTrace {
    d: LstmDims,
    h0: Vec<f32>,
    c0: Vec<f32>,
    y: Vec<f32>,
    /// The DropConnect-masked W_hh the forward used, and its mask.
    dropped: Option<(Vec<f32>, DropMask)>,
    saved: Saved,
}

/// Everything a stack forward kept for its backward: the input and each layer's trace.
pub struct StackTrace {
    x: Vec<f32>,
    layers: Vec<LayerTrace>,
}

/// Layers bottom to top, and the (h, c) state [B, H] each carries between calls.
pub struct LstmStack {
    pub layers: Vec<LayerWeights>,
    /// (h, c) per layer, [B, H] each; empty until the first forward or after `reset`.
    pub state: Vec<(Vec<f32>, Vec<f32>)>,
    /// DropConnect probability on each W_hh during training forwards (0 = off).
    pub weight_p: f32,
    pub isa: Isa,
}

impl LstmStack {
    /// A stack over `sizes` = [input, hidden_1, ..., hidden_L], PyTorch init.
    pub fn new(sizes: &[usize], seed: u64) -> Self {
        assert!(sizes.len() >= 2, "lstm stack: sizes {sizes:?} needs an input size and at least one layer");
        let layers =
            sizes.windows(2).enumerate().map(|(l, w)| LayerWeights::init(w[0], w[1], seed + l as u64)).collect();
        LstmStack { layers, state: Vec::new(), weight_p: 0.0, isa: Isa::detect() }
    }

    /// Forgets the carried state (the next forward starts from zeros).
    pub fn reset(&mut self) {
        self.state.clear();
    }

    /// Runs all layers over `x` [T, B, I]; returns the top layer's y [T, B, H_top] and,
    /// when `train`, the trace for `backward` (with a fresh DropConnect mask from `seed`).
    pub fn forward(&mut self, x: &[f32], t: usize, b: usize, train: bool, seed: u64) -> (Vec<f32>, Option<StackTrace>) {
        if self.state.len() != self.layers.len() || self.state[0].0.len() != b * self.layers[0].h {
            self.state = self.layers.iter().map(|l| (vec![0.0; b * l.h], vec![0.0; b * l.h])).collect();
        }
        let mut layers = Vec::new();
        for (l, w) in self.layers.iter().enumerate() {
            let d = LstmDims { t, b, i: w.i, h: w.h };
            let dropped = (train && self.weight_p > 0.0).then(|| {
                let m = DropMask { p: self.weight_p, seed: seed ^ ((l as u64) << 32) };
                let mut w_hh = Vec::new();
                m.apply(&w.w_hh, &mut w_hh);
                (w_hh, m)
            });
            let p = w.params_with(dropped.as_ref().map_or(&w.w_hh, |(w_hh, _)| w_hh));
            let (h0, c0) = std::mem::take(&mut self.state[l]);
            let input = layers.last().map_or(x, |below: &LayerTrace| &below.y);
            let (out, saved) = layer::forward(d, &p, input, &h0, &c0, self.isa);
            self.state[l] = (out.h_n, out.c_n);
            if !train {
                layers.clear(); // only the layer above reads this output
            }
            layers.push(LayerTrace { d, h0, c0, y: out.y, dropped, saved });
        }
        if !train {
            // Inference keeps no trace: hand over the top output instead of copying it.
            return (layers.pop().map_or_else(Vec::new, |l| l.y), None);
        }
        let top = layers.last().map_or_else(Vec::new, |l| l.y.clone());
        (top, Some(StackTrace { x: x.to_vec(), layers }))
    }

    /// Gradients of every layer (bottom first) and dL/dx, given dL/dy of the top layer.
    /// The carried state is detached: no gradient flows into it.
    pub fn backward(&self, mut trace: StackTrace, dy: &[f32]) -> (Vec<f32>, Vec<LstmGrads>) {
        let mut d_out = dy.to_vec();
        let mut grads = Vec::with_capacity(trace.layers.len());
        for l in (0..trace.layers.len()).rev() {
            let (below, this) = trace.layers.split_at_mut(l);
            let tr = &mut this[0];
            let x = below.last().map_or(&trace.x, |b| &b.y);
            let w = &self.layers[l];
            let p = w.params_with(tr.dropped.as_ref().map_or(&w.w_hh, |(w_hh, _)| w_hh));
            let saved = std::mem::take(&mut tr.saved);
            let mut g =
                layer::backward(tr.d, &p, x, &tr.h0, &tr.c0, &tr.y, saved, &d_out, (None, None), Wanted::ALL, self.isa);
            if let Some((_, m)) = &tr.dropped {
                m.apply_grad(&mut g.dw_hh);
            }
            d_out = std::mem::take(&mut g.dx);
            grads.push(g);
        }
        grads.reverse();
        (d_out, grads)
    }
}
