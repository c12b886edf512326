//! The classifier's parameters on the host, and their layout in the one flat device buffer
//! that clipping and Adam sweep, one contiguous range per parameter group (fastai's order:
//! embedding [V, E]; per LSTM layer w_ih [4H, I], w_hh [4H, H], b_ih, b_hh [4H]; head:
//! per block BN gamma, beta [in], linear weight [out, in]). The batch-norm running statistics
//! are buffers, not parameters: they live in their own small device buffer.
//! Every tensor starts at a multiple of [`ALIGN`] f32; gaps hold 0 and get gradient 0.

use ulmfit_lstm::LayerWeights;

use super::config::ClasConfig;

/// Alignment, in f32, of every tensor slot (256 bytes).
pub const ALIGN: usize = 64;

/// One `LinBnDrop` block of the head: batch norm [in], then a linear layer [out, in].
#[derive(Clone, Debug, PartialEq)]
pub struct HeadWeights {
    /// BN scale [in].
    pub gamma: Vec<f32>,
    /// BN shift [in].
    pub beta: Vec<f32>,
    /// BN running mean [in] (a buffer: no gradient).
    pub running_mean: Vec<f32>,
    /// BN running variance [in] (a buffer: no gradient).
    pub running_var: Vec<f32>,
    /// Linear weight [out, in], no bias.
    pub weight: Vec<f32>,
}

/// Every parameter (or gradient, or Adam moment) of the classifier, host side. As a
/// gradient or moment, the running statistics are 0.
#[derive(Clone, Debug)]
pub struct ClasWeights {
    /// [V, E]
    pub emb: Vec<f32>,
    /// Bottom layer first.
    pub layers: Vec<LayerWeights>,
    /// [3E -> F], [F -> C].
    pub head: [HeadWeights; 2],
}

impl ClasWeights {
    /// All zeros, shaped for `cfg` (running variance 0 too).
    pub fn zeros(cfg: &ClasConfig) -> Self {
        let layers = (0..cfg.layers)
            .map(|l| {
                let d = cfg.layer_dims(l, 1, 1);
                let g = 4 * d.h;
                LayerWeights {
                    i: d.i,
                    h: d.h,
                    w_ih: vec![0.0; g * d.i],
                    w_hh: vec![0.0; g * d.h],
                    b_ih: vec![0.0; g],
                    b_hh: vec![0.0; g],
                }
            })
            .collect();
        let block = |n_in: usize, n_out: usize| HeadWeights {
            gamma: vec![0.0; n_in],
            beta: vec![0.0; n_in],
            running_mean: vec![0.0; n_in],
            running_var: vec![0.0; n_in],
            weight: vec![0.0; n_out * n_in],
        };
        let (e, f) = (cfg.emb, cfg.features);
        ClasWeights { emb: vec![0.0; cfg.vocab * cfg.emb], layers, head: [block(3 * e, f), block(f, cfg.classes)] }
    }

    /// The parameters of each group, each tensor with a name, in flat-buffer order.
    pub fn groups(&self) -> Vec<Vec<(String, &[f32])>> {
        let mut out = vec![vec![("emb".to_string(), self.emb.as_slice())]];
        for (l, w) in self.layers.iter().enumerate() {
            out.push(vec![
                (format!("w_ih{l}"), &w.w_ih),
                (format!("w_hh{l}"), &w.w_hh),
                (format!("b_ih{l}"), &w.b_ih),
                (format!("b_hh{l}"), &w.b_hh),
            ]);
        }
        let mut head: Vec<(String, &[f32])> = Vec::new();
        for (k, blk) in self.head.iter().enumerate() {
            head.push((format!("bn{k}.gamma"), &blk.gamma));
            head.push((format!("bn{k}.beta"), &blk.beta));
            head.push((format!("lin{k}.weight"), &blk.weight));
        }
        out.push(head);
        out
    }

    /// Every parameter with its name, in flat-buffer order.
    pub fn named(&self) -> Vec<(String, &[f32])> {
        self.groups().into_iter().flatten().collect()
    }

    /// The running statistics [mean0, var0, mean1, var1], in stats-buffer order.
    pub fn stats(&self) -> [&[f32]; 4] {
        let [a, b] = &self.head;
        [&a.running_mean, &a.running_var, &b.running_mean, &b.running_var]
    }

    fn parts_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut out = vec![&mut self.emb];
        for w in &mut self.layers {
            out.extend([&mut w.w_ih, &mut w.w_hh, &mut w.b_ih, &mut w.b_hh]);
        }
        for blk in &mut self.head {
            out.extend([&mut blk.gamma, &mut blk.beta, &mut blk.weight]);
        }
        out
    }

    fn stats_mut(&mut self) -> [&mut Vec<f32>; 4] {
        let [a, b] = &mut self.head;
        [&mut a.running_mean, &mut a.running_var, &mut b.running_mean, &mut b.running_var]
    }

    /// Tensor lengths, parameters then running statistics (for shape checks).
    pub fn shapes(&self) -> Vec<usize> {
        let mut out: Vec<usize> = self.named().iter().map(|(_, t)| t.len()).collect();
        out.extend(self.stats().iter().map(|t| t.len()));
        out
    }
}

/// Where each tensor sits in the flat device buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Offset of every parameter, in [`ClasWeights::named`] order.
    pub offsets: Vec<usize>,
    /// Per group, the range [start, end) of the flat buffer it covers.
    pub groups: Vec<(usize, usize)>,
    /// Length of the flat parameter buffer.
    pub total: usize,
    /// Offsets of [mean0, var0, mean1, var1] in the running-statistics buffer.
    pub stats: [usize; 4],
    /// Length of the running-statistics buffer.
    pub stats_total: usize,
}

/// `at` rounded up to a multiple of [`ALIGN`].
fn aligned(at: usize) -> usize {
    at.div_ceil(ALIGN) * ALIGN
}

impl Layout {
    /// The layout for `cfg`.
    pub fn new(cfg: &ClasConfig) -> Self {
        let w = ClasWeights::zeros(cfg);
        let (mut offsets, mut groups, mut at) = (Vec::new(), Vec::new(), 0);
        for group in w.groups() {
            let start = at;
            for (_, t) in group {
                offsets.push(at);
                at = aligned(at + t.len());
            }
            groups.push((start, at));
        }
        let mut stats = [0; 4];
        let mut s = 0;
        for (off, t) in stats.iter_mut().zip(w.stats()) {
            *off = s;
            s = aligned(s + t.len());
        }
        Layout { offsets, groups, total: at, stats, stats_total: s }
    }

    /// Offset of layer `l`'s (w_ih, w_hh, b_ih, b_hh).
    pub fn layer(&self, l: usize) -> [usize; 4] {
        let k = 1 + 4 * l;
        [self.offsets[k], self.offsets[k + 1], self.offsets[k + 2], self.offsets[k + 3]]
    }

    /// Offset of head block `k`'s (gamma, beta, weight).
    pub fn head(&self, k: usize) -> [usize; 3] {
        let at = self.offsets.len() - 6 + 3 * k;
        [self.offsets[at], self.offsets[at + 1], self.offsets[at + 2]]
    }

    /// The ranges the Adam update sweeps, as (group, start, end, decayed): every group whole,
    /// except that the head's batch-norm weights and biases get no weight decay (fastai's
    /// `wd_bn_bias=False`; its linear layers have no bias).
    pub fn adam_parts(&self) -> Vec<(usize, usize, usize, bool)> {
        let head = self.groups.len() - 1;
        let mut out: Vec<_> = self.groups[..head].iter().enumerate().map(|(g, &(s, e))| (g, s, e, true)).collect();
        let ([g0, _, w0], [g1, _, w1], end) = (self.head(0), self.head(1), self.groups[head].1);
        out.extend([(head, g0, w0, false), (head, w0, g1, true), (head, g1, w1, false), (head, w1, end, true)]);
        out
    }

    /// The flat parameter buffer [total] and the statistics buffer [stats_total] holding `w`.
    pub fn to_flat(&self, w: &ClasWeights) -> (Vec<f32>, Vec<f32>) {
        let mut flat = vec![0.0; self.total];
        for (&off, (_, t)) in self.offsets.iter().zip(w.named()) {
            flat[off..off + t.len()].copy_from_slice(t);
        }
        let mut stats = vec![0.0; self.stats_total];
        for (&off, t) in self.stats.iter().zip(w.stats()) {
            stats[off..off + t.len()].copy_from_slice(t);
        }
        (flat, stats)
    }

    /// Refills the parameters of `w` from a flat buffer [total] and, when given, its running
    /// statistics from a statistics buffer; the inverse of [`Layout::to_flat`].
    pub fn from_flat(&self, flat: &[f32], stats: Option<&[f32]>, w: &mut ClasWeights) {
        assert_eq!(flat.len(), self.total, "clas Layout::from_flat: flat buffer length");
        for (&off, part) in self.offsets.iter().zip(w.parts_mut()) {
            let len = part.len();
            part.copy_from_slice(&flat[off..off + len]);
        }
        if let Some(stats) = stats {
            for (&off, part) in self.stats.iter().zip(w.stats_mut()) {
                let len = part.len();
                part.copy_from_slice(&stats[off..off + len]);
            }
        }
    }
}
