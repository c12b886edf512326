//! The ULMFiT classifier: the AWD-LSTM encoder read in BPT3C chunks, concat pooling
//! `[last, max, mean]` over the real (non-padding) positions, and fastai's head
//! `BatchNorm -> Dropout -> Linear(1200, 50) -> ReLU -> BatchNorm -> Dropout -> Linear(50, C)`
//! (linear layers without bias, since batch norm precedes them; fastai's `LinBnDrop`).
//!
//! Batches hold documents sorted by decreasing length and padded at the back. Every
//! document starts at step 0 from a zero state, so chunk boundaries fall at multiples of
//! `bptt` from each document's start, as with fastai's front padding in whole chunks. At
//! chunk `i` only the rows still inside their document are run (a prefix, since rows are
//! sorted). State is detached between chunks. Pooling keeps, as fastai's `SentenceEncoder`
//! does, the chunks that start at most `max_len` steps before the longest document's end
//! (in fastai's front-padded layout); chunks that reach into some document's window are kept
//! on the graph, the others run without recording it, so gradients reach the kept chunks
//! only (BPT3C). `tests/parity_fastai.rs` checks all of this against fastai.

use crate::awd_lstm::AwdLstm;
use crate::clas_reg::ar_tar;
use ulmfit_tensor::autograd::Op;
use ulmfit_tensor::{no_grad, BatchNormStats, Result, Rng, Tensor};
use ulmfit_text::vocab::PAD_ID;

/// A batch of documents for the classifier: rows sorted by decreasing length.
pub struct DocBatch {
    /// Token ids per document, longest first.
    pub docs: Vec<Vec<u32>>,
}

/// One kept chunk of encoder output: rows `0..rows` over steps `start..start + len`.
pub(crate) struct Chunk {
    /// The top layer's output [len, rows, E].
    pub(crate) out: Tensor,
    /// First step.
    pub(crate) start: usize,
}

/// The encoder's read of one batch: the kept chunks, and where pooling starts.
struct Encoded {
    chunks: Vec<Chunk>,
    lens: Vec<usize>,
    /// First pooled step of each document, in its own steps.
    from: Vec<usize>,
    /// First pooled position in fastai's front-padded layout.
    first: usize,
}

/// Concat pooling over the kept chunks: for each document b with length `lens[b]`,
/// `[h at its last token, max over its kept steps, mean over its kept steps]`, [B, 3E].
struct ConcatPool {
    lens: Vec<usize>,
    /// First pooled step of each document (its length minus `max_len`, at least 0).
    from: Vec<usize>,
    starts: Vec<usize>,
    /// For each output max element (b, e): (chunk index, step within chunk) of the winner.
    argmax: Vec<(usize, usize)>,
    /// Number of kept real steps per document (the mean's divisor).
    counts: Vec<usize>,
}

fn concat_pool(chunks: &[Chunk], lens: &[usize], from: &[usize], e: usize) -> Result<Tensor> {
    let bn = lens.len();
    let mut out = vec![0.0; bn * 3 * e];
    let mut argmax = vec![(0, 0); bn * e];
    let mut counts = vec![0; bn];
    for b in 0..bn {
        let (last, rest) = out[b * 3 * e..(b + 1) * 3 * e].split_at_mut(e);
        let (max, mean) = rest.split_at_mut(e);
        max.fill(f32::NEG_INFINITY);
        for (ci, ch) in chunks.iter().enumerate() {
            let (len, rows) = (ch.out.dim(0), ch.out.dim(1));
            let data = ch.out.data();
            for s in 0..len {
                let pos = ch.start + s;
                if b >= rows || pos >= lens[b] || pos < from[b] {
                    continue;
                }
                let h = &data[(s * rows + b) * e..][..e];
                for k in 0..e {
                    mean[k] += h[k];
                    if h[k] > max[k] {
                        max[k] = h[k];
                        argmax[b * e + k] = (ci, s);
                    }
                }
                counts[b] += 1;
                if pos + 1 == lens[b] {
                    last.copy_from_slice(h);
                }
            }
        }
        mean.iter_mut().for_each(|m| *m /= counts[b].max(1) as f32);
    }
    let inputs: Vec<&Tensor> = chunks.iter().map(|c| &c.out).collect();
    let op = ConcatPool {
        lens: lens.to_vec(),
        from: from.to_vec(),
        starts: chunks.iter().map(|c| c.start).collect(),
        argmax,
        counts,
    };
    Ok(Tensor::from_op(out, &[bn, 3 * e], &inputs, op))
}

impl Op for ConcatPool {
    fn name(&self) -> &'static str {
        "concat_pool"
    }

    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let g = dout.data();
        let e = g.len() / (3 * self.lens.len());
        let mut grads: Vec<Vec<f32>> = inputs.iter().map(|t| vec![0.0; t.numel()]).collect();
        for (b, &len_b) in self.lens.iter().enumerate() {
            let gb = &g[b * 3 * e..(b + 1) * 3 * e];
            for (ci, input) in inputs.iter().enumerate() {
                let (len, rows) = (input.dim(0), input.dim(1));
                for s in 0..len {
                    let pos = self.starts[ci] + s;
                    if b >= rows || pos >= len_b || pos < self.from[b] {
                        continue;
                    }
                    let dh = &mut grads[ci][(s * rows + b) * e..][..e];
                    for k in 0..e {
                        dh[k] += gb[2 * e + k] / self.counts[b] as f32;
                        if self.argmax[b * e + k] == (ci, s) {
                            dh[k] += gb[e + k];
                        }
                        if pos + 1 == len_b {
                            dh[k] += gb[k];
                        }
                    }
                }
            }
        }
        grads.into_iter().zip(inputs).map(|(d, t)| Tensor::from_vec(d, t.shape()).map(Some)).collect()
    }
}

/// One `LinBnDrop` block of the head: batch norm, dropout, linear without bias.
pub struct HeadBlock {
    /// Batch-norm scale, [in].
    pub gamma: Tensor,
    /// Batch-norm shift, [in].
    pub beta: Tensor,
    /// Running statistics.
    pub stats: BatchNormStats,
    /// Dropout probability (not scaled by drop_mult for the second block, as fastai).
    pub p: f32,
    /// [out, in]
    pub weight: Tensor,
}

impl HeadBlock {
    fn new(n_in: usize, n_out: usize, p: f32, rng: &mut Rng) -> Self {
        let k = 1.0 / (n_in as f32).sqrt();
        let w = rng.uniform_tensor(&[n_out, n_in], -k, k);
        HeadBlock {
            gamma: Tensor::param(vec![1.0; n_in], &[n_in]).expect("shape"),
            beta: Tensor::param(vec![0.0; n_in], &[n_in]).expect("shape"),
            stats: BatchNormStats::new(n_in),
            p,
            weight: Tensor::param(w.to_vec(), w.shape()).expect("shape"),
        }
    }

    fn forward(&self, x: &Tensor, train: bool, rng: &mut Rng) -> Result<Tensor> {
        let mut x = x.batch_norm_1d(&self.gamma, &self.beta, &self.stats, train)?;
        if train && self.p > 0.0 {
            x = x.mul(&rng.dropout_mask(x.shape(), self.p))?;
        }
        x.linear(&self.weight, None)
    }

    fn params(&self) -> Vec<Tensor> {
        vec![self.gamma.clone(), self.beta.clone(), self.weight.clone()]
    }
}

/// The classifier: encoder, pooling and a two-block head.
pub struct Classifier {
    /// The AWD-LSTM encoder (with the classifier's dropouts).
    pub encoder: AwdLstm,
    /// `[3E -> 50]` then `[50 -> classes]`.
    pub head: [HeadBlock; 2],
    /// Chunk length (fastai: 72).
    pub bptt: usize,
    /// Steps kept for pooling, counted back from the longest document's end (fastai: 1440).
    pub max_len: usize,
}

impl Classifier {
    /// A classifier over `encoder` for `classes` classes with a head 3E -> `lin_ftrs` ->
    /// classes (fastai: 50). The first head dropout is the encoder config's `output_p` (as in
    /// fastai), the second `head_p` (fastai: 0.1).
    pub fn new(encoder: AwdLstm, classes: usize, lin_ftrs: usize, head_p: f32, rng: &mut Rng) -> Self {
        let e = encoder.cfg.emb_sz;
        let p = encoder.cfg.drop.output_p;
        Classifier {
            head: [HeadBlock::new(3 * e, lin_ftrs, p, rng), HeadBlock::new(lin_ftrs, classes, head_p, rng)],
            encoder,
            bptt: 72,
            max_len: 1440,
        }
    }

    /// Class logits `[B, classes]` for a batch of documents sorted by decreasing length.
    pub fn forward(&mut self, batch: &DocBatch, train: bool, rng: &mut Rng) -> Result<Tensor> {
        let enc = self.encode(batch, train, rng)?;
        self.head_forward(&enc, train, rng)
    }

    /// Training mode: the class logits and fastai's classifier AR/TAR penalty
    /// `alpha * AR + beta * TAR` (a scalar; `clas_reg.rs`), drawing the same masks as `forward`.
    pub fn forward_regularized(
        &mut self,
        batch: &DocBatch,
        alpha: f32,
        beta: f32,
        rng: &mut Rng,
    ) -> Result<(Tensor, Tensor)> {
        let enc = self.encode(batch, true, rng)?;
        let logits = self.head_forward(&enc, true, rng)?;
        let reg = if alpha == 0.0 && beta == 0.0 {
            Tensor::scalar(0.0)
        } else {
            ar_tar(&enc.chunks, &enc.lens, self.bptt, enc.first, alpha, beta)
        };
        Ok((logits, reg))
    }

    /// Pooling and the head over the encoder's read.
    fn head_forward(&self, enc: &Encoded, train: bool, rng: &mut Rng) -> Result<Tensor> {
        let pooled = concat_pool(&enc.chunks, &enc.lens, &enc.from, self.encoder.cfg.emb_sz)?;
        let x = self.head[0].forward(&pooled, train, rng)?.relu();
        self.head[1].forward(&x, train, rng)
    }

    /// The encoder over the batch in BPT3C chunks, keeping the chunks pooling reads.
    fn encode(&mut self, batch: &DocBatch, train: bool, rng: &mut Rng) -> Result<Encoded> {
        let lens: Vec<usize> = batch.docs.iter().map(Vec::len).collect();
        if lens.is_empty() || lens.windows(2).any(|w| w[0] < w[1]) || lens.last() == Some(&0) {
            return Err(ulmfit_tensor::Error::BadArgument {
                op: "classifier",
                msg: "documents must be non-empty and sorted longest first".into(),
            });
        }
        if self.max_len < self.bptt {
            let msg = format!("max_len {} < bptt {}: the pooled window could be empty", self.max_len, self.bptt);
            return Err(ulmfit_tensor::Error::BadArgument { op: "classifier", msg });
        }
        let longest = lens[0];
        // fastai front-pads each document by whole chunks and pools the chunks that start at
        // most `max_len` before the batch's end (`SentenceEncoder`): the first multiple of
        // bptt at or after `longest - max_len`, counted in each document's own steps.
        let first = longest.saturating_sub(self.max_len).div_ceil(self.bptt) * self.bptt;
        let from: Vec<usize> =
            lens.iter().map(|l| first.saturating_sub((longest - l) / self.bptt * self.bptt)).collect();
        self.encoder.reset();
        let mut chunks = Vec::new();
        for start in (0..longest).step_by(self.bptt) {
            let len = self.bptt.min(longest - start);
            let rows = lens.iter().take_while(|&&l| l > start).count();
            // [len, rows] time-major ids; positions past a document's end read xxpad.
            let mut ids = Vec::with_capacity(len * rows);
            for s in 0..len {
                ids.extend(batch.docs[..rows].iter().map(|d| d.get(start + s).copied().unwrap_or(PAD_ID)));
            }
            self.encoder.keep_rows(rows)?;
            if (0..rows).any(|b| start + len > from[b]) {
                let out = self.encoder.forward(&ids, len, rows, train, rng)?.raw;
                chunks.push(Chunk { out, start });
            } else {
                no_grad(|| self.encoder.forward(&ids, len, rows, train, rng))?;
            }
        }
        Ok(Encoded { chunks, lens, from, first })
    }

    /// fastai's classifier parameter groups: embedding, each LSTM layer, head.
    pub fn param_groups(&self) -> Vec<Vec<Tensor>> {
        let mut groups = vec![vec![self.encoder.embedding.clone()]];
        groups.extend((0..self.encoder.layers.len()).map(|l| self.encoder.layer_params(l)));
        groups.push(self.head.iter().flat_map(HeadBlock::params).collect());
        groups
    }

    /// The parameters fastai leaves out of weight decay (`wd_bn_bias=False`): the head's
    /// batch-norm weights and biases (its linear layers have no bias).
    pub fn no_decay(&self) -> Vec<Tensor> {
        self.head.iter().flat_map(|b| [b.gamma.clone(), b.beta.clone()]).collect()
    }

    /// Named parameters and buffers, fastai style (`1.layers.{k}...` for the head).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = self.encoder.named_params();
        for (k, blk) in self.head.iter().enumerate() {
            let p = format!("1.layers.{k}");
            out.push((format!("{p}.0.weight"), blk.gamma.clone()));
            out.push((format!("{p}.0.bias"), blk.beta.clone()));
            out.push((format!("{p}.0.running_mean"), blk.stats.mean.clone()));
            out.push((format!("{p}.0.running_var"), blk.stats.var.clone()));
            out.push((format!("{p}.2.weight"), blk.weight.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pooling over two chunks with padding equals a direct computation per document.
    #[test]
    fn concat_pool_matches_direct_computation_with_padding() {
        let e = 2;
        let mut rng = Rng::new(3);
        // Documents of lengths 5, 3, 1; chunks of 3 steps: [0..3) for 3 rows, [3..5) for 1 row.
        let lens = [5, 3, 1];
        let c0 = Tensor::param(rng.uniform_tensor(&[3, 3, e], -1.0, 1.0).to_vec(), &[3, 3, e]).unwrap();
        let c1 = Tensor::param(rng.uniform_tensor(&[2, 1, e], -1.0, 1.0).to_vec(), &[2, 1, e]).unwrap();
        let chunks = [Chunk { out: c0.clone(), start: 0 }, Chunk { out: c1.clone(), start: 3 }];
        let pooled = concat_pool(&chunks, &lens, &[0, 0, 0], e).unwrap().to_vec();
        let (d0, d1) = (c0.to_vec(), c1.to_vec());
        // h(b, pos): the encoder output of document b at step pos.
        let h = |b: usize, pos: usize, k: usize| {
            if pos < 3 {
                d0[(pos * 3 + b) * e + k]
            } else {
                d1[((pos - 3) + b) * e + k]
            }
        };
        for b in 0..3 {
            for k in 0..e {
                let steps: Vec<f32> = (0..lens[b]).map(|p| h(b, p, k)).collect();
                let want = [
                    h(b, lens[b] - 1, k),
                    steps.iter().copied().fold(f32::MIN, f32::max),
                    steps.iter().sum::<f32>() / steps.len() as f32,
                ];
                for (j, w) in want.iter().enumerate() {
                    let got = pooled[b * 3 * e + j * e + k];
                    assert!((got - w).abs() < 1e-6, "doc {b} part {j} feature {k}: {got} vs {w}");
                }
            }
        }
        // A window (max_len 3 for doc 0: steps 2..5) pools only the document's last steps.
        let windowed = concat_pool(&chunks, &lens, &[2, 0, 0], e).unwrap().to_vec();
        for k in 0..e {
            let want = (2..5).map(|p| h(0, p, k)).sum::<f32>() / 3.0;
            assert!((windowed[2 * e + k] - want).abs() < 1e-6, "windowed mean of doc 0, feature {k}");
        }
        // The gradient of sum(pooled) puts nothing on padding steps (doc 2 past step 0).
        concat_pool(&chunks, &lens, &[0, 0, 0], e).unwrap().sum_all().unwrap().backward().unwrap();
        let g0 = c0.grad().unwrap().to_vec();
        for pos in 1..3 {
            assert_eq!(&g0[(pos * 3 + 2) * e..][..e], &[0.0, 0.0], "padding step {pos} of doc 2 got a gradient");
        }
    }
}

#[cfg(test)]
mod gradient_tests {
    use super::*;
    use crate::awd_lstm::AwdLstmConfig;

    /// Finite differences through the whole classifier (no dropout, batch norm in train
    /// mode with fresh statistics): encoder, pooling with padding, head, loss. One chunk:
    /// across chunk boundaries BPT3C truncates the gradient on purpose.
    #[test]
    fn classifier_gradients_match_finite_differences() {
        let mut rng = Rng::new(1);
        let cfg = AwdLstmConfig {
            vocab: 11,
            emb_sz: 4,
            n_hid: 5,
            n_layers: 2,
            drop: crate::config::Dropouts::lm().scaled(0.0),
        };
        let mut model = Classifier::new(AwdLstm::new(cfg, &mut rng), 3, 50, 0.1, &mut rng);
        model.head[1].p = 0.0;
        model.bptt = 8;
        // No xxpad (1) inside a document: its embedding row gets no gradient (padding_idx).
        let batch = DocBatch { docs: vec![vec![2, 5, 6, 7, 3, 9, 10], vec![2, 4, 4, 8], vec![2, 3]] };
        let labels = [0, 2, 1];
        let loss = |m: &mut Classifier| -> f32 {
            for blk in &mut m.head {
                blk.stats = BatchNormStats::new(blk.gamma.numel());
            }
            m.forward(&batch, true, &mut Rng::new(0)).unwrap().cross_entropy(&labels, None).unwrap().item().unwrap()
        };
        for blk in &mut model.head {
            blk.stats = BatchNormStats::new(blk.gamma.numel());
        }
        let l = model.forward(&batch, true, &mut Rng::new(0)).unwrap().cross_entropy(&labels, None).unwrap();
        l.backward().unwrap();
        let params: Vec<Tensor> = model.param_groups().into_iter().flatten().collect();
        for (k, p) in params.iter().enumerate() {
            let analytic = p.grad().map(|g| g.to_vec()).unwrap_or_else(|| vec![0.0; p.numel()]);
            for j in (0..p.numel()).step_by(3) {
                let orig = p.data()[j];
                let eps = 1e-3; // small: max pooling is only piecewise smooth
                p.data_mut()[j] = orig + eps;
                let up = no_grad(|| loss(&mut model));
                p.data_mut()[j] = orig - eps;
                let down = no_grad(|| loss(&mut model));
                p.data_mut()[j] = orig;
                let numeric = (up - down) / (2.0 * eps);
                let diff = (numeric - analytic[j]).abs();
                assert!(
                    diff <= 5e-3 + 2e-2 * numeric.abs(),
                    "param {k} {:?} [{j}]: autograd {} vs numeric {numeric}",
                    p.shape(),
                    analytic[j]
                );
            }
        }
    }
}
