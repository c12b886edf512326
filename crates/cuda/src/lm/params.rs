//! The LM's parameters on the host, and their layout in the one flat device buffer that the
//! clipping and Adam kernels sweep: embedding [V, E] (also the tied decoder weight), decoder
//! bias [V], then per layer w_ih [4H, I], w_hh [4H, H] (before DropConnect), b_ih, b_hh [4H];
//! on the device each in an aligned slot ([`Layout`]). Gradients use the same type and layout.
//! `flatten` / `unflatten` are the dense host order (the CPU formulas' flat vectors).

use ulmfit_lstm::LayerWeights;

use super::config::{LmConfig, VOCAB_ALIGN};
use super::mask::{mask_key, unit};

/// Every parameter (or gradient) of the LM, host side.
#[derive(Clone, Debug)]
pub struct LmWeights {
    /// [V, E]
    pub emb: Vec<f32>,
    /// [V]
    pub dec_bias: Vec<f32>,
    /// Bottom layer first.
    pub layers: Vec<LayerWeights>,
}

impl LmWeights {
    /// fastai's init: embedding uniform(-0.1, 0.1), decoder bias 0, LSTM weights
    /// uniform(-1/sqrt(H), 1/sqrt(H)) (`LayerWeights::init`). Depends only on `seed`.
    pub fn init(cfg: &LmConfig, seed: u64) -> Self {
        let key = mask_key(seed, 0, u32::MAX);
        let emb = (0..cfg.vocab * cfg.emb).map(|k| (unit(key, k as u64) * 2.0 - 1.0) * 0.1).collect();
        let layers = cfg
            .layer_dims()
            .iter()
            .enumerate()
            .map(|(l, d)| LayerWeights::init(d.i, d.h, seed.wrapping_add(1 + l as u64)))
            .collect();
        LmWeights { emb, dec_bias: vec![0.0; cfg.vocab], layers }
    }

    /// All zeros, shaped for `cfg`.
    pub fn zeros(cfg: &LmConfig) -> Self {
        let layers = cfg
            .layer_dims()
            .iter()
            .map(|d| LayerWeights {
                i: d.i,
                h: d.h,
                w_ih: vec![0.0; 4 * d.h * d.i],
                w_hh: vec![0.0; 4 * d.h * d.h],
                b_ih: vec![0.0; 4 * d.h],
                b_hh: vec![0.0; 4 * d.h],
            })
            .collect();
        LmWeights { emb: vec![0.0; cfg.vocab * cfg.emb], dec_bias: vec![0.0; cfg.vocab], layers }
    }

    /// Each tensor with a name, in flat-buffer order.
    pub fn named(&self) -> Vec<(String, &[f32])> {
        let mut out: Vec<(String, &[f32])> = vec![("emb".into(), &self.emb), ("dec_bias".into(), &self.dec_bias)];
        for (l, w) in self.layers.iter().enumerate() {
            out.push((format!("w_ih{l}"), &w.w_ih));
            out.push((format!("w_hh{l}"), &w.w_hh));
            out.push((format!("b_ih{l}"), &w.b_ih));
            out.push((format!("b_hh{l}"), &w.b_hh));
        }
        out
    }

    fn parts_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut out = vec![&mut self.emb, &mut self.dec_bias];
        for w in &mut self.layers {
            out.extend([&mut w.w_ih, &mut w.w_hh, &mut w.b_ih, &mut w.b_hh]);
        }
        out
    }

    /// Every tensor, concatenated densely [P] (the device buffer is `Layout::to_flat`).
    pub fn flatten(&self) -> Vec<f32> {
        self.named().into_iter().flat_map(|(_, v)| v.iter().copied()).collect()
    }

    /// Refills every tensor from a dense [P] buffer ([`LmWeights::flatten`]'s order).
    pub fn unflatten(&mut self, flat: &[f32]) {
        assert_eq!(flat.len(), self.len(), "LmWeights::unflatten: flat buffer length");
        let mut at = 0;
        for part in self.parts_mut() {
            let len = part.len();
            part.copy_from_slice(&flat[at..at + len]);
            at += len;
        }
    }

    /// P, the number of parameters.
    pub fn len(&self) -> usize {
        self.named().iter().map(|(_, v)| v.len()).sum()
    }

    /// Whether there are no parameters (never, for a valid config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where each tensor sits in the flat device buffer: in `LmWeights::named` order, each slot
/// starting at a multiple of [`VOCAB_ALIGN`] f32 (so every GEMM operand and kernel pointer is
/// 256-byte aligned), the embedding's slot Vp rows long (`LmConfig::vocab_padded`), the
/// decoder bias's Vp long. Gaps and padding rows hold 0 and get gradient 0, so they stay 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Offset of the embedding [Vp, E] (0); rows V.. are padding.
    pub emb: usize,
    /// Offset of the decoder bias [Vp]; entries V.. are padding.
    pub dec_bias: usize,
    /// Per layer, offsets of (w_ih, w_hh, b_ih, b_hh).
    pub layers: Vec<[usize; 4]>,
    /// Length of the flat buffer (P plus padding).
    pub total: usize,
}

/// `at` rounded up to a multiple of [`VOCAB_ALIGN`].
fn aligned(at: usize) -> usize {
    at.div_ceil(VOCAB_ALIGN) * VOCAB_ALIGN
}

impl Layout {
    /// The layout for `cfg`.
    pub fn new(cfg: &LmConfig) -> Self {
        let vp = cfg.vocab_padded();
        let dec_bias = aligned(vp * cfg.emb);
        let mut at = aligned(dec_bias + vp);
        let mut layers = Vec::new();
        for d in cfg.layer_dims() {
            let g = 4 * d.h;
            let mut offs = [0; 4];
            for (off, len) in offs.iter_mut().zip([g * d.i, g * d.h, g, g]) {
                *off = at;
                at = aligned(at + len);
            }
            layers.push(offs);
        }
        Layout { emb: 0, dec_bias, layers, total: at }
    }

    /// The parameter groups as (offset, length) ranges of the flat buffer, in the trainer's
    /// order (`ulmfit_trainer`'s `LanguageModel::param_groups`, fastai's splits): each LSTM
    /// layer bottom first, then the embedding with the decoder bias. Together they cover
    /// the buffer.
    pub fn groups(&self) -> Vec<(usize, usize)> {
        let starts: Vec<usize> = self.layers.iter().map(|l| l[0]).chain([self.total]).collect();
        let mut out: Vec<(usize, usize)> = starts.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
        out.push((self.emb, starts[0] - self.emb));
        out
    }

    /// The ranges the Adam update sweeps, as (group, offset, length, decayed): each group's
    /// range, the embedding group's split so that the decoder bias gets no weight decay
    /// (fastai's `wd_bn_bias=False`; the LSTM biases are decayed, as in fastai).
    pub fn adam_parts(&self) -> Vec<(usize, usize, usize, bool)> {
        let groups = self.groups();
        let top = groups.len() - 1;
        let mut out: Vec<_> = groups[..top].iter().enumerate().map(|(g, &(off, len))| (g, off, len, true)).collect();
        let (emb, end) = (groups[top].0, groups[top].0 + groups[top].1);
        out.push((top, emb, self.dec_bias - emb, true));
        out.push((top, self.dec_bias, end - self.dec_bias, false));
        out
    }

    /// Offset of each tensor, in `LmWeights::named` order.
    fn offsets(&self) -> Vec<usize> {
        let mut out = vec![self.emb, self.dec_bias];
        self.layers.iter().for_each(|l| out.extend(l));
        out
    }

    /// The flat device buffer [total] holding `w` (zeros in the gaps). `w` must be shaped
    /// for the config of this layout.
    pub fn to_flat(&self, w: &LmWeights) -> Vec<f32> {
        let mut flat = vec![0.0; self.total];
        for (off, (name, t)) in self.offsets().into_iter().zip(w.named()) {
            assert!(off + t.len() <= self.total, "Layout::to_flat: {name} of {} overruns {}", t.len(), self.total);
            flat[off..off + t.len()].copy_from_slice(t);
        }
        flat
    }

    /// Refills every tensor of `w` (shaped for this layout's config) from a flat device
    /// buffer [total]; the inverse of [`Layout::to_flat`].
    pub fn from_flat(&self, flat: &[f32], w: &mut LmWeights) {
        assert_eq!(flat.len(), self.total, "Layout::from_flat: flat buffer length");
        for (off, part) in self.offsets().into_iter().zip(w.parts_mut()) {
            let len = part.len();
            part.copy_from_slice(&flat[off..off + len]);
        }
    }
}
