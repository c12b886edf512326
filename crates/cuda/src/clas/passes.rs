//! The classifier step's passes, llm.c style: [`ClasCuda::forward`] (encoder over the BPT3C
//! chunks, concat pooling, head, loss), [`ClasCuda::backward`] (the forward in reverse: head,
//! pooling, then each kept chunk through the layers from the top) and [`ClasCuda::update`]
//! (frozen groups' gradients zeroed, global norm, Adam per group).
//!
//! LSTM layers run the steps of `crate::plan`'s forward and backward plans on chunk dims
//! (len, rows), with [`ClasCuda::layer_ptr`] placing each plan buffer. Masks come from the LM's
//! hash with ids from [`mask_id`]. Dimensions: B documents, E top width, F head features,
//! C classes, I/H a layer's input and hidden widths.

use super::chunks::{place, Place, Schedule};
use super::kernels::BnBufs;
use super::model::ClasCuda;
use crate::error::Result;
use crate::lstm::{enqueue_step, sgemm};
use crate::plan::{backward_plan, check_bounds, forward_plan, mat, transposed, Buf, Gemm};

/// The masks of the step (the `tensor` ids of the LM's hash).
#[derive(Clone, Copy, Debug)]
pub enum ClasMask {
    /// DropConnect on layer l's W_hh in chunk c (fastai's `WeightDropout` draws one per call).
    Weight(usize, usize),
    /// Head dropout k (0: before linear 1, 1: before linear 2), elementwise [B, width].
    Head(usize),
    /// Embedding dropout of chunk c (one draw per vocabulary word).
    Word(usize),
    /// Input dropout of chunk c ([rows, E], shared by its steps).
    Input(usize),
    /// Hidden dropout after layer l in chunk c ([rows, H]).
    Hidden(usize, usize),
}

/// The id hashed for mask `m` (distinct for < 60 layers: 128 ids per chunk).
pub fn mask_id(m: ClasMask) -> u32 {
    match m {
        ClasMask::Head(k) => 3000 + k as u32,
        ClasMask::Word(c) => 10_000 + 128 * c as u32,
        ClasMask::Input(c) => 10_001 + 128 * c as u32,
        ClasMask::Hidden(c, l) => 10_002 + 128 * c as u32 + l as u32,
        ClasMask::Weight(c, l) => 10_064 + 128 * c as u32 + l as u32,
    }
}

/// The factors (ka, kt) of `clas_ar_tar_bwd` for weights [alpha, beta]: the derivatives'
/// scales 2 alpha / (B L E) and 2 beta / (B (L-1) E) over fastai's window of L positions
/// (TAR only for more than one document and position, as fastai).
fn ar_tar_factors(s: &Schedule, e: usize, [alpha, beta]: [f32; 2]) -> (f32, f32) {
    let (b, l) = (s.lens.len(), s.lens[0] - s.from[0]);
    let ka = 2.0 * alpha / (b * l * e) as f32;
    let kt = if b > 1 && l > 1 { 2.0 * beta / (b * (l - 1) * e) as f32 } else { 0.0 };
    (ka, kt)
}

/// A head GEMM operand: `rows x cols` at device address `base` (the GEMM buffer type is an address).
fn dev(base: u64, rows: usize, cols: usize) -> crate::plan::Mat<u64> {
    mat(base, 0, rows, cols)
}

impl ClasCuda<'_> {
    /// Address of element `off` of layer `l`'s plan buffer `buf` for chunk `c` of `s`.
    pub(super) fn layer_ptr(&self, l: usize, c: usize, s: &Schedule, buf: Buf, off: usize) -> u64 {
        let (lay, g) = (&self.layers[l], self.gpu);
        let (at, base) = place(s, c, self.layout.layer(l), lay.i, lay.h, buf);
        let start = match at {
            Place::Params => self.at(&self.params, 0),
            Place::MaskedWhh => self.at(&lay.whh, 0),
            Place::Zeros => self.at(&self.head.zeros, 0),
            Place::Arena(b) | Place::Scratch(b) => lay.base(g, b),
        };
        start + 4 * (base + off) as u64
    }

    /// `lm_dropout` of `n` elements from `inp` to `out` with mask `m` repeating every
    /// `period`; nothing when p is 0 and `out` is `inp`.
    fn dropout(&self, out: u64, inp: u64, n: usize, period: usize, p: f32, m: ClasMask) -> Result<()> {
        if p == 0.0 && out == inp {
            return Ok(());
        }
        let (seed, step) = (self.cfg.seed, self.at(&self.head.step, 0));
        self.lm.lm_dropout(self.gpu, out, inp, n, period, p, mask_id(m), seed, step)
    }

    /// Layer l's W_hh into its `whh` buffer: with chunk c's DropConnect mask (`Some(c)`), or
    /// as it is (`None`: eval, or no DropConnect). The backward masks dW_hh with the same mask.
    fn mask_whh(&self, l: usize, chunk: Option<usize>) -> Result<()> {
        let lay = &self.layers[l];
        let (n, w_hh) = (4 * lay.h * lay.h, self.at(&self.params, self.layout.layer(l)[1]));
        let p = if chunk.is_some() { self.cfg.drop.weight } else { 0.0 };
        self.dropout(self.at(&lay.whh, 0), w_hh, n, n, p, ClasMask::Weight(chunk.unwrap_or(0), l))
    }

    /// The embedding masks of chunk c: (p, id) of word and input dropout.
    fn embed_masks(&self, c: usize, train: bool) -> [(f32, u32); 2] {
        let d = self.cfg.drop;
        let p = |p: f32| if train { p } else { 0.0 };
        [(p(d.embed), mask_id(ClasMask::Word(c))), (p(d.input), mask_id(ClasMask::Input(c)))]
    }

    /// The forward: every chunk through the encoder (layer by layer, each with W_hh masked
    /// for the chunk, hidden dropout between), concat pooling, head, then the loss (`train`)
    /// or the probabilities (eval, into the dlogits buffer).
    pub(super) fn forward(&self, s: &Schedule, train: bool) -> Result<()> {
        let (g, cfg, nl) = (self.gpu, &self.cfg, self.cfg.layers);
        let on = |p: f32| if train { p } else { 0.0 };
        let per_chunk = on(cfg.drop.weight) > 0.0;
        if !per_chunk {
            (0..nl).try_for_each(|l| self.mask_whh(l, None))?;
        }
        for (c, ch) in s.chunks.iter().enumerate() {
            let tb = ch.len * ch.rows;
            let x0 = self.layer_ptr(0, c, s, Buf::X, 0);
            let (emb, ids) = (self.at(&self.params, self.layout.offsets[0]), self.at(&self.head.ids, ch.tok));
            let (seed, step) = (cfg.seed, self.at(&self.head.step, 0));
            self.lm.lm_embed_fwd(g, x0, emb, ids, tb, ch.rows, cfg.emb, self.embed_masks(c, train), seed, step)?;
            for l in 0..nl {
                if per_chunk {
                    self.mask_whh(l, Some(c))?;
                }
                let lay = &self.layers[l];
                let d = s.dims(c, lay.i, lay.h);
                let plan = forward_plan(d);
                check_bounds(d, &plan);
                for step in &plan {
                    enqueue_step(g, d, step, &|buf, off| self.layer_ptr(l, c, s, buf, off))?;
                }
                if l + 1 < nl {
                    let out = self.layer_ptr(l + 1, c, s, Buf::X, 0);
                    let inp = self.layer_ptr(l, c, s, Buf::Hs, ch.rows * lay.h);
                    let m = ClasMask::Hidden(c, l);
                    self.dropout(out, inp, tb * lay.h, ch.rows * lay.h, on(cfg.drop.hidden), m)?;
                }
            }
        }
        let h = &self.head;
        let top = &self.layers[nl - 1];
        let table = [self.at(&h.hs_off, 0), self.at(&h.rows, 0), self.at(&h.lens, 0), self.at(&h.from, 0)];
        let (pooled, argmax) = (self.at(&h.pooled, 0), self.at(&h.argmax, 0));
        self.k.clas_pool_fwd(g, pooled, argmax, top.base(g, Buf::Hs), table, s.lens.len(), cfg.emb, cfg.bptt)?;
        self.head_forward(s.lens.len(), train)
    }

    /// The buffers of head batch norm k (0: over the pooled features, 1: over the ReLU output).
    fn bn_bufs(&self, k: usize) -> BnBufs {
        let h = &self.head;
        let [gamma, beta, _] = self.layout.head(k).map(|off| self.at(&self.params, off));
        let st = self.layout.stats;
        let (x, y, xhat, inv_std) =
            if k == 0 { (&h.pooled, &h.d1, &h.xhat1, &h.istd1) } else { (&h.r1, &h.d2, &h.xhat2, &h.istd2) };
        BnBufs {
            x: self.at(x, 0),
            y: self.at(y, 0),
            xhat: self.at(xhat, 0),
            inv_std: self.at(inv_std, 0),
            gamma,
            beta,
            mean: self.at(&self.stats, st[2 * k]),
            var: self.at(&self.stats, st[2 * k + 1]),
        }
    }

    /// BN 1 -> dropout -> linear 1 -> ReLU -> BN 2 -> dropout -> linear 2, then softmax
    /// cross-entropy (train) or softmax (eval) over `b` rows.
    fn head_forward(&self, b: usize, train: bool) -> Result<()> {
        let (g, h, cfg) = (self.gpu, &self.head, &self.cfg);
        let (e3, f, nc) = (3 * cfg.emb, cfg.features, cfg.classes);
        let on = |p: f32| if train { p } else { 0.0 };
        let [w1, w2] = [0, 1].map(|k| self.at(&self.params, self.layout.head(k)[2]));
        let bn1 = self.bn_bufs(0);
        self.k.clas_bn_fwd(g, bn1, b, e3, train)?;
        self.dropout(bn1.y, bn1.y, b * e3, b * e3, on(cfg.drop.head1), ClasMask::Head(0))?;
        let (z1, r1) = (self.at(&h.z1, 0), self.at(&h.r1, 0));
        self.gemm(Gemm { a: dev(bn1.y, b, e3), b: transposed(dev(w1, f, e3)), c: dev(z1, b, f) })?;
        self.k.clas_relu_fwd(g, r1, z1, b * f)?;
        let bn2 = self.bn_bufs(1);
        self.k.clas_bn_fwd(g, bn2, b, f, train)?;
        self.dropout(bn2.y, bn2.y, b * f, b * f, on(cfg.drop.head2), ClasMask::Head(1))?;
        let (logits, out) = (self.at(&h.logits, 0), self.at(&h.dlogits, 0));
        self.gemm(Gemm { a: dev(bn2.y, b, f), b: transposed(dev(w2, nc, f)), c: dev(logits, b, nc) })?;
        if train {
            let (loss, ce, labels) = (self.at(&h.loss, 0), self.at(&h.ce, 0), self.at(&h.labels, 0));
            self.k.clas_xent(g, loss, ce, out, logits, labels, b, nc)
        } else {
            self.k.clas_softmax(g, out, logits, b, nc)
        }
    }

    /// A cuBLAS SGEMM on device addresses (beta 0: C is overwritten).
    fn gemm(&self, gm: Gemm<u64>) -> Result<()> {
        sgemm(self.gpu, &gm, &|base, off| base + 4 * off as u64)
    }

    /// The backward of the last training forward: gradients zeroed, the head in reverse,
    /// then each kept chunk (pooling's dy plus the AR/TAR gradient of weights `ar_tar` =
    /// [alpha, beta], layers from the top, the embedding scatter). LSTM weight gradients of
    /// each chunk are added into the flat gradients.
    pub(super) fn backward(&self, s: &Schedule, ar_tar: [f32; 2]) -> Result<()> {
        let (g, cfg, nl) = (self.gpu, &self.cfg, self.cfg.layers);
        let zero = self.layout.total * 4;
        // SAFETY: grads holds layout.total f32.
        unsafe { cudarc::driver::result::memset_d8_async(self.at(&self.grads, 0), 0, zero, g.stream().cu_stream()) }
            .map_err(|source| crate::Error::Driver { op: "zero classifier gradients".into(), source })?;
        self.head_backward(s.lens.len())?;
        let h = &self.head;
        let lens_from = [self.at(&h.lens, 0), self.at(&h.from, 0)];
        let (dpool, argmax) = (self.at(&h.dpool, 0), self.at(&h.argmax, 0));
        let (ka, kt) = ar_tar_factors(s, cfg.emb, ar_tar);
        let table = [self.at(&h.hs_off, 0), self.at(&h.rows, 0), lens_from[0], lens_from[1]];
        let hs = self.layers[nl - 1].base(g, Buf::Hs);
        for (c, ch) in s.chunks.iter().enumerate().rev().filter(|(_, ch)| ch.kept) {
            let tb = ch.len * ch.rows;
            let dy = self.layer_ptr(nl - 1, c, s, Buf::Dy, 0);
            self.k.clas_pool_bwd(g, dy, dpool, argmax, lens_from, ch.start, ch.len, ch.rows, cfg.emb)?;
            if ka != 0.0 || kt != 0.0 {
                let sizes = [ch.start, ch.len, ch.rows, cfg.emb, cfg.bptt];
                self.k.clas_ar_tar_bwd(g, dy, hs, table, sizes, ka, kt)?;
            }
            for l in (0..nl).rev() {
                // The forward's mask of this chunk (the last chunk's is still in place).
                if cfg.drop.weight > 0.0 && c + 1 < s.chunks.len() {
                    self.mask_whh(l, Some(c))?;
                }
                let lay = &self.layers[l];
                let d = s.dims(c, lay.i, lay.h);
                let plan = backward_plan(d);
                check_bounds(d, &plan);
                for step in &plan {
                    enqueue_step(g, d, step, &|buf, off| self.layer_ptr(l, c, s, buf, off))?;
                }
                self.add_layer_grads(l, c, s)?;
                let dx = self.layer_ptr(l, c, s, Buf::Dx, 0);
                if l > 0 {
                    let dy_below = self.layer_ptr(l - 1, c, s, Buf::Dy, 0);
                    let m = ClasMask::Hidden(c, l - 1);
                    self.dropout(dy_below, dx, tb * lay.i, ch.rows * lay.i, cfg.drop.hidden, m)?;
                } else {
                    let demb = self.at(&self.grads, self.layout.offsets[0]);
                    let ids = self.at(&h.ids, ch.tok);
                    let (seed, step) = (cfg.seed, self.at(&h.step, 0));
                    let masks = self.embed_masks(c, true);
                    self.lm.lm_embed_bwd(g, demb, dx, ids, tb, ch.rows, cfg.emb, masks, seed, step)?;
                }
            }
        }
        Ok(())
    }

    /// Layer l's weight gradients of chunk c (DropConnect's mask on dW_hh) added into the
    /// flat gradients; the one bias gradient goes to both b_ih and b_hh.
    fn add_layer_grads(&self, l: usize, c: usize, s: &Schedule) -> Result<()> {
        let (g, lay) = (self.gpu, &self.layers[l]);
        let (i, h4) = (lay.i, 4 * lay.h);
        let dw_hh = self.layer_ptr(l, c, s, Buf::DwHh, 0);
        self.dropout(dw_hh, dw_hh, h4 * lay.h, h4 * lay.h, self.cfg.drop.weight, ClasMask::Weight(c, l))?;
        let [w_ih, w_hh, b_ih, b_hh] = self.layout.layer(l).map(|off| self.at(&self.grads, off));
        self.k.clas_add(g, w_ih, self.layer_ptr(l, c, s, Buf::DwIh, 0), h4 * i)?;
        self.k.clas_add(g, w_hh, dw_hh, h4 * lay.h)?;
        let db = self.layer_ptr(l, c, s, Buf::Db, 0);
        self.k.clas_add(g, b_ih, db, h4)?;
        self.k.clas_add(g, b_hh, db, h4)
    }

    /// The head in reverse over `b` rows: linear 2, dropout, BN 2, ReLU, linear 1, dropout,
    /// BN 1, ending in dpool [B, 3E]; the head's gradients land in the flat gradients.
    fn head_backward(&self, b: usize) -> Result<()> {
        let (g, h, cfg) = (self.gpu, &self.head, &self.cfg);
        let (e3, f, nc) = (3 * cfg.emb, cfg.features, cfg.classes);
        let [g1, b1, w1] = self.layout.head(0);
        let [g2, b2, w2] = self.layout.head(1);
        let (p, dp) = (|off: usize| self.at(&self.params, off), |off: usize| self.at(&self.grads, off));
        let (dlogits, d2, dd2) = (self.at(&h.dlogits, 0), self.at(&h.d2, 0), self.at(&h.dd2, 0));
        // dW2 [C, F] = dlogits^T . d2; dd2 [B, F] = dlogits . W2
        self.gemm(Gemm { a: transposed(dev(dlogits, b, nc)), b: dev(d2, b, f), c: dev(dp(w2), nc, f) })?;
        self.gemm(Gemm { a: dev(dlogits, b, nc), b: dev(p(w2), nc, f), c: dev(dd2, b, f) })?;
        self.dropout(dd2, dd2, b * f, b * f, cfg.drop.head2, ClasMask::Head(1))?;
        let (dr1, z1) = (self.at(&h.dr1, 0), self.at(&h.z1, 0));
        self.k.clas_bn_bwd(g, dr1, [dp(g2), dp(b2)], dd2, self.bn_bufs(1), b, f)?;
        self.k.clas_relu_bwd(g, dr1, dr1, z1, b * f)?;
        let (d1, dd1) = (self.at(&h.d1, 0), self.at(&h.dd1, 0));
        // dW1 [F, 3E] = dz1^T . d1; dd1 [B, 3E] = dz1 . W1
        self.gemm(Gemm { a: transposed(dev(dr1, b, f)), b: dev(d1, b, e3), c: dev(dp(w1), f, e3) })?;
        self.gemm(Gemm { a: dev(dr1, b, f), b: dev(p(w1), f, e3), c: dev(dd1, b, e3) })?;
        self.dropout(dd1, dd1, b * e3, b * e3, cfg.drop.head1, ClasMask::Head(0))?;
        let dpool = self.at(&h.dpool, 0);
        self.k.clas_bn_bwd(g, dpool, [dp(g1), dp(b1)], dd1, self.bn_bufs(0), b, e3)
    }

    /// Frozen groups' gradients zeroed, then the global norm, the clip factor and one Adam
    /// update of every trainable group with its learning rate (`Layout::adam_parts`: no
    /// weight decay on the head's batch-norm parameters).
    pub(super) fn update(&mut self, hyper: &super::config::ClasHyper) -> Result<()> {
        let g = self.gpu;
        for (k, &(start, end)) in self.layout.groups.iter().enumerate() {
            if hyper.frozen[k] {
                // SAFETY: [start, end) lies inside grads [total].
                unsafe {
                    let ptr = self.at(&self.grads, start);
                    cudarc::driver::result::memset_d8_async(ptr, 0, (end - start) * 4, g.stream().cu_stream())
                }
                .map_err(|source| crate::Error::Driver { op: "zero frozen gradients".into(), source })?;
            }
        }
        let (partial, clip) = (self.at(&self.head.partial, 0), self.at(&self.head.clip, 0));
        self.k.clas_sumsq_partial(g, partial, self.at(&self.grads, 0), self.layout.total)?;
        self.k.clas_clip_scale(g, clip, partial, hyper.clip.unwrap_or(0.0))?;
        for (k, steps) in self.group_steps.iter_mut().enumerate() {
            *steps += u32::from(!hyper.frozen[k]);
        }
        for (k, start, end, decay) in self.layout.adam_parts() {
            if hyper.frozen[k] {
                continue;
            }
            let consts = [hyper.beta1, hyper.beta2, hyper.eps, if decay { hyper.weight_decay } else { 0.0 }];
            let wmv = [self.at(&self.params, start), self.at(&self.adam_m, start), self.at(&self.adam_v, start)];
            let grad = self.at(&self.grads, start);
            self.k.clas_adam(g, wmv, grad, end - start, clip, hyper.lrs[k], consts, self.group_steps[k])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{mask_id, ClasMask};

    /// Every mask of a step hashes a different id (60 layers, 100 chunks, both head masks).
    #[test]
    fn mask_ids_are_distinct() {
        let mut ids: Vec<u32> = (0..2).map(|k| mask_id(ClasMask::Head(k))).collect();
        for c in 0..100 {
            ids.extend([mask_id(ClasMask::Word(c)), mask_id(ClasMask::Input(c))]);
            ids.extend((0..60).flat_map(|l| [mask_id(ClasMask::Hidden(c, l)), mask_id(ClasMask::Weight(c, l))]));
        }
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "two masks share an id");
    }
}
