//! The AWD-LSTM LM training step on the GPU, llm.c style: the forward is a list of layer
//! forwards, the backward the same list in reverse, then one norm reduction and one fused
//! Adam(W) kernel over the flat parameter buffer. Everything stays on the device; the host
//! copies in the batch (ids, targets) and copies out the loss. The whole step can be
//! captured into two CUDA graphs (forward+backward, update) and replayed.
//!
//! Checked against `super::reference` (loss, every gradient, state, dropout on and off),
//! `reference::clip_factor` and `reference::adam` by tests/lm_vs_ref.rs.
//! Dimensions: T steps, B batch, E embedding width, V vocabulary, N = T*B rows.

use cudarc::driver::{CudaGraph, CudaSlice};

use super::config::{Hyper, LmConfig, LmError};
use super::kernels::{LmKernels, NORM_BLOCKS};
use super::layer::{addr, at, LmLayer, Shared};
use super::mask::Mask;
use super::params::{LmWeights, Layout};
use super::reference::State;
use crate::device::Gpu;
use crate::error::{DriverContext, Result};
use crate::lstm::{capture, copy_dtod, sgemm};
use crate::plan::{mat, transposed, Buf, Gemm};

/// The model's buffers that the decoder GEMMs read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LmBuf {
    /// Flat parameters [P] (embedding at `Layout::emb`).
    Params,
    /// Flat gradients [P].
    Grads,
    /// Top output after output dropout [N, E].
    Dropped,
    /// dL/ddropped [N, E].
    DDropped,
    /// Logits [N, V], then dL/dlogits in place.
    Logits,
    /// N ones.
    Ones,
}

/// The decoder's GEMMs: logits = dropped . emb^T (forward), then ddropped = dlogits . emb,
/// demb = dlogits^T . dropped (overwrites the embedding's gradient slot) and
/// dbias = ones . dlogits (backward). Bias and softmax are in `lm_xent`.
pub fn decoder_gemms(cfg: &LmConfig, layout: &Layout) -> [Gemm<LmBuf>; 4] {
    let (n, e, v) = (cfg.rows(), cfg.emb, cfg.vocab);
    let emb = mat(LmBuf::Params, layout.emb, v, e);
    let logits = mat(LmBuf::Logits, 0, n, v);
    let dropped = mat(LmBuf::Dropped, 0, n, e);
    [
        Gemm { a: dropped, b: transposed(emb), c: logits },
        Gemm { a: logits, b: emb, c: mat(LmBuf::DDropped, 0, n, e) },
        Gemm { a: transposed(logits), b: dropped, c: mat(LmBuf::Grads, layout.emb, v, e) },
        Gemm { a: mat(LmBuf::Ones, 0, 1, n), b: logits, c: mat(LmBuf::Grads, layout.dec_bias, 1, v) },
    ]
}

/// Device buffers of the step outside the LSTM layers.
struct Bufs {
    params: CudaSlice<f32>,
    grads: CudaSlice<f32>,
    adam_m: CudaSlice<f32>,
    adam_v: CudaSlice<f32>,
    ids: CudaSlice<u32>,
    targets: CudaSlice<u32>,
    /// [1]: the optimizer step, also the mask counter.
    step: CudaSlice<u32>,
    /// [6]: `Hyper::to_array`.
    hyper: CudaSlice<f32>,
    dropped: CudaSlice<f32>,
    ddropped: CudaSlice<f32>,
    logits: CudaSlice<f32>,
    /// Per-row cross-entropy, AR and TAR sums [N] each.
    ce: CudaSlice<f32>,
    ar: CudaSlice<f32>,
    tar: CudaSlice<f32>,
    /// [4]: total, ce, alpha AR, beta TAR.
    loss: CudaSlice<f32>,
    partial: CudaSlice<f32>,
    /// [2]: gradient norm and clip factor.
    clip: CudaSlice<f32>,
    ones: CudaSlice<f32>,
}

/// The LM on one GPU: parameters, Adam moments, carried state, scratch, and the step.
pub struct LmCuda<'g> {
    gpu: &'g Gpu,
    cfg: LmConfig,
    layout: Layout,
    k: LmKernels,
    b: Bufs,
    layers: Vec<LmLayer>,
    gemms: [Gemm<LmBuf>; 4],
    /// (forward+backward, update) once [`LmCuda::capture_graphs`] ran.
    graphs: Option<(CudaGraph, CudaGraph)>,
}

impl<'g> LmCuda<'g> {
    /// Allocates everything for `cfg`, uploads `w` (Adam moments 0, state 0, step 0).
    pub fn new(gpu: &'g Gpu, cfg: LmConfig, w: &LmWeights, hyper: Hyper) -> std::result::Result<Self, LmError> {
        cfg.validate()?;
        let layout = Layout::new(&cfg);
        if w.len() != layout.total || w.layers.len() != cfg.layers {
            return Err(LmError::Config(format!("weights have {} parameters in {} layers, the config needs {} in {}", w.len(), w.layers.len(), layout.total, cfg.layers)));
        }
        let (n, e, v, p) = (cfg.rows(), cfg.emb, cfg.vocab, layout.total);
        let u32s = |len: usize, what: &str| -> Result<CudaSlice<u32>> {
            gpu.stream().alloc_zeros::<u32>(len).op(&format!("allocate {what}"))
        };
        let b = Bufs {
            params: gpu.stream().clone_htod(&w.flatten()).op("upload LM parameters")?,
            grads: gpu.alloc_zeros(p, "LM gradients")?,
            adam_m: gpu.alloc_zeros(p, "Adam first moments")?,
            adam_v: gpu.alloc_zeros(p, "Adam second moments")?,
            ids: u32s(n, "token ids")?,
            targets: u32s(n, "targets")?,
            step: u32s(1, "step counter")?,
            hyper: gpu.stream().clone_htod(&hyper.to_array()).op("upload hyper-parameters")?,
            dropped: gpu.alloc_zeros(n * e, "dropped output")?,
            ddropped: gpu.alloc_zeros(n * e, "dropped output gradient")?,
            logits: gpu.alloc_zeros(n * v, &format!("logits [{n}, {v}]"))?,
            ce: gpu.alloc_zeros(n, "cross-entropy rows")?,
            ar: gpu.alloc_zeros(n, "AR rows")?,
            tar: gpu.alloc_zeros(n, "TAR rows")?,
            loss: gpu.alloc_zeros(4, "loss")?,
            partial: gpu.alloc_zeros(NORM_BLOCKS, "norm partial sums")?,
            clip: gpu.alloc_zeros(2, "clip")?,
            ones: gpu.stream().clone_htod(&vec![1.0f32; n]).op("upload ones")?,
        };
        let mut layers = Vec::with_capacity(cfg.layers);
        for (l, d) in cfg.layer_dims().into_iter().enumerate() {
            let shared = Shared { params: addr(gpu, &b.params), grads: addr(gpu, &b.grads), offs: layout.layers[l], ones: addr(gpu, &b.ones) };
            layers.push(LmLayer::new(gpu, d, &shared)?);
        }
        let gemms = decoder_gemms(&cfg, &layout);
        let model = LmCuda { gpu, k: LmKernels::load(gpu)?, cfg, layout, b, layers, gemms, graphs: None };
        model.check_gemm_bounds();
        Ok(model)
    }

    /// The config in force.
    pub fn config(&self) -> &LmConfig {
        &self.cfg
    }

    fn check_gemm_bounds(&self) {
        let len = |buf: LmBuf| match buf {
            LmBuf::Params | LmBuf::Grads => self.layout.total,
            LmBuf::Dropped | LmBuf::DDropped => self.cfg.rows() * self.cfg.emb,
            LmBuf::Logits => self.cfg.rows() * self.cfg.vocab,
            LmBuf::Ones => self.cfg.rows(),
        };
        for g in &self.gemms {
            g.mnk();
            for m in [g.a, g.b, g.c] {
                assert!(m.off + m.rows * m.cols <= len(m.buf), "LM decoder gemm {g:?} overruns {:?}", m.buf);
            }
        }
    }

    fn ptr(&self, buf: LmBuf, off: usize) -> u64 {
        let b = &self.b;
        let base = match buf {
            LmBuf::Params => addr(self.gpu, &b.params),
            LmBuf::Grads => addr(self.gpu, &b.grads),
            LmBuf::Dropped => addr(self.gpu, &b.dropped),
            LmBuf::DDropped => addr(self.gpu, &b.ddropped),
            LmBuf::Logits => addr(self.gpu, &b.logits),
            LmBuf::Ones => addr(self.gpu, &b.ones),
        };
        at(base, off)
    }

    /// Sets Adam's and the clip's settings (read by the next update).
    pub fn set_hyper(&mut self, h: Hyper) -> Result<()> {
        self.gpu.stream().memcpy_htod(&h.to_array(), &mut self.b.hyper).op("upload hyper-parameters")
    }

    /// Uploads a batch: `ids` and next-token `targets`, both [T, B] time-major, each < V.
    pub fn set_batch(&mut self, ids: &[u32], targets: &[u32]) -> std::result::Result<(), LmError> {
        let (n, v) = (self.cfg.rows(), self.cfg.vocab);
        for (what, xs) in [("ids", ids), ("targets", targets)] {
            if xs.len() != n {
                return Err(LmError::Batch(format!("{what} has {} tokens, expected T*B = {n}", xs.len())));
            }
            if let Some((k, bad)) = xs.iter().enumerate().find(|(_, &x)| x as usize >= v) {
                return Err(LmError::Batch(format!("{what}[{k}] = {bad} is outside the vocabulary of {v}")));
            }
        }
        let s = self.gpu.stream();
        s.memcpy_htod(ids, &mut self.b.ids).op("upload ids")?;
        s.memcpy_htod(targets, &mut self.b.targets).op("upload targets")?;
        Ok(())
    }

    /// Queues forward and backward of the uploaded batch (step counter += 1 first).
    pub fn forward_backward(&self) -> Result<()> {
        match &self.graphs {
            Some((fb, _)) => fb.launch().op("launch forward+backward graph"),
            None => {
                self.forward()?;
                self.backward()
            }
        }
    }

    /// Queues clipping and the Adam update of every parameter.
    pub fn update(&self) -> Result<()> {
        match &self.graphs {
            Some((_, up)) => up.launch().op("launch update graph"),
            None => self.queue_update(),
        }
    }

    /// One training step on a batch; returns [total, cross-entropy, alpha AR, beta TAR].
    pub fn step(&mut self, ids: &[u32], targets: &[u32]) -> std::result::Result<[f32; 4], LmError> {
        self.set_batch(ids, targets)?;
        self.forward_backward()?;
        self.update()?;
        Ok(self.loss()?)
    }

    /// The address of the step counter, and (probability, mask id) pairs, for launches.
    fn step_ptr(&self) -> u64 {
        addr(self.gpu, &self.b.step)
    }

    fn embed_masks(&self) -> [(f32, u32); 2] {
        [(self.cfg.drop.embed, Mask::Word.id()), (self.cfg.drop.input, Mask::Input.id())]
    }

    /// The forward: embedding, LSTM layers with their dropouts, output dropout, decoder, loss.
    fn forward(&self) -> Result<()> {
        let (g, k, c) = (self.gpu, &self.k, &self.cfg);
        let (n, bn, e) = (c.rows(), c.b, c.emb);
        let (seed, step) = (c.seed, self.step_ptr());
        let params = addr(g, &self.b.params);
        k.lm_step_begin(g, step)?;
        let x0 = self.layers[0].ptr(Buf::X, 0);
        let ids = addr(g, &self.b.ids);
        k.lm_embed_fwd(g, x0, at(params, self.layout.emb), ids, n, bn, e, self.embed_masks(), seed, step)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let (d, w_hh) = (layer.d, self.layout.layers[l][1]);
            // DropConnect: one masked copy of W_hh for the whole sequence.
            let nw = 4 * d.h * d.h;
            k.lm_dropout(g, layer.ptr(Buf::WHh, 0), at(params, w_hh), nw, nw, c.drop.weight, Mask::Weight(l).id(), seed, step)?;
            layer.forward(g)?;
            if let Some(next) = self.layers.get(l + 1) {
                let y = layer.ptr(Buf::Hs, bn * d.h);
                k.lm_dropout(g, next.ptr(Buf::X, 0), y, n * d.h, bn * d.h, c.drop.hidden, Mask::Hidden(l).id(), seed, step)?;
            }
            // Carry the final state to the next step (detached: nothing flows back into it).
            copy_dtod(g, layer.ptr(Buf::H0, 0), layer.ptr(Buf::Hs, n * d.h), bn * d.h)?;
            copy_dtod(g, layer.ptr(Buf::C0, 0), layer.ptr(Buf::Cs, n * d.h), bn * d.h)?;
        }
        let b = &self.b;
        let raw = self.raw_ptr();
        let (dropped, ar, tar, ce) = (addr(g, &b.dropped), addr(g, &b.ar), addr(g, &b.tar), addr(g, &b.ce));
        k.lm_reg_fwd(g, dropped, ar, tar, raw, n, bn, e, c.drop.output, Mask::Output.id(), seed, step)?;
        sgemm(g, &self.gemms[0], &|buf, off| self.ptr(buf, off))?;
        let bias = at(params, self.layout.dec_bias);
        k.lm_xent(g, addr(g, &b.logits), ce, bias, addr(g, &b.targets), n, c.vocab)?;
        let [_, ar_div, _, tar_div] = self.reg_terms();
        k.lm_loss_sum(g, addr(g, &b.loss), ce, ar, tar, n, c.alpha, ar_div, c.beta, tar_div)
    }

    /// The top layer's output (hs[1..]) [N, E].
    fn raw_ptr(&self) -> u64 {
        let top = self.layers.last().expect("at least one layer");
        top.ptr(Buf::Hs, self.cfg.b * top.d.h)
    }

    /// [alpha, N*E, beta, (T-1)*B*E]: the AR and TAR weights and divisors.
    fn reg_terms(&self) -> [f32; 4] {
        let c = &self.cfg;
        [c.alpha, (c.rows() * c.emb) as f32, c.beta, ((c.t - 1) * c.b * c.emb) as f32]
    }

    /// The backward: decoder, regularizers and output dropout, LSTM layers in reverse with
    /// their dropouts, embedding scatter. Every gradient slot is overwritten (no zeroing).
    fn backward(&self) -> Result<()> {
        let (g, k, c) = (self.gpu, &self.k, &self.cfg);
        let (n, bn, e) = (c.rows(), c.b, c.emb);
        let (seed, step) = (c.seed, self.step_ptr());
        for gemm in &self.gemms[1..] {
            sgemm(g, gemm, &|buf, off| self.ptr(buf, off))?;
        }
        let b = &self.b;
        let top = self.layers.last().expect("at least one layer");
        let (ddropped, dropped) = (addr(g, &b.ddropped), addr(g, &b.dropped));
        k.lm_reg_bwd(g, top.ptr(Buf::Dy, 0), ddropped, dropped, self.raw_ptr(), [c.t, bn, e], self.reg_terms(), c.drop.output, Mask::Output.id(), seed, step)?;
        let grads = addr(g, &b.grads);
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let d = layer.d;
            layer.backward(g)?;
            let [_, w_hh, b_ih, b_hh] = self.layout.layers[l];
            let nw = 4 * d.h * d.h;
            k.lm_dropout(g, at(grads, w_hh), at(grads, w_hh), nw, nw, c.drop.weight, Mask::Weight(l).id(), seed, step)?;
            copy_dtod(g, at(grads, b_hh), at(grads, b_ih), 4 * d.h)?;
            if l > 0 {
                let below = &self.layers[l - 1];
                k.lm_dropout(g, below.ptr(Buf::Dy, 0), layer.ptr(Buf::Dx, 0), n * d.i, bn * d.i, c.drop.hidden, Mask::Hidden(l - 1).id(), seed, step)?;
            }
        }
        let dx0 = self.layers[0].ptr(Buf::Dx, 0);
        k.lm_embed_bwd(g, at(grads, self.layout.emb), dx0, addr(g, &b.ids), n, bn, e, self.embed_masks(), seed, step)
    }

    /// Global gradient norm, clip factor, fused Adam(W).
    fn queue_update(&self) -> Result<()> {
        let (g, k, b) = (self.gpu, &self.k, &self.b);
        let (partial, clip, hyper) = (addr(g, &b.partial), addr(g, &b.clip), addr(g, &b.hyper));
        let (params, grads, p) = (addr(g, &b.params), addr(g, &b.grads), self.layout.total);
        k.lm_sumsq_partial(g, partial, grads, p)?;
        k.lm_clip_scale(g, clip, partial, hyper)?;
        k.lm_adam(g, params, addr(g, &b.adam_m), addr(g, &b.adam_v), grads, p, clip, hyper, self.step_ptr())
    }

    /// Captures forward+backward and the update into two CUDA graphs that later calls
    /// replay. Runs forward+backward once first (cuBLAS sets up outside the capture), then
    /// restores the step counter and the carried state, so the model is as before.
    pub fn capture_graphs(&mut self) -> Result<()> {
        self.graphs = None;
        let step = self.download_u32(&self.b.step)?;
        let state = self.state()?;
        self.forward()?;
        self.backward()?;
        self.queue_update_dry()?;
        self.gpu.stream().memcpy_htod(&step, &mut self.b.step).op("restore step counter")?;
        self.set_state(&state)?;
        let fb = capture(self.gpu, || {
            self.forward()?;
            self.backward()
        })?;
        let up = capture(self.gpu, || self.queue_update())?;
        self.graphs = Some((fb, up));
        Ok(())
    }

    /// The norm reduction alone (no parameter changes), to warm its kernels up.
    fn queue_update_dry(&self) -> Result<()> {
        let (g, b) = (self.gpu, &self.b);
        self.k.lm_sumsq_partial(g, addr(g, &b.partial), addr(g, &b.grads), self.layout.total)?;
        self.k.lm_clip_scale(g, addr(g, &b.clip), addr(g, &b.partial), addr(g, &b.hyper))
    }

    fn download(&self, s: &CudaSlice<f32>, what: &str) -> Result<Vec<f32>> {
        let v = self.gpu.stream().clone_dtoh(s).op(what)?;
        self.gpu.sync(what)?;
        Ok(v)
    }

    fn download_u32(&self, s: &CudaSlice<u32>) -> Result<Vec<u32>> {
        let v = self.gpu.stream().clone_dtoh(s).op("download step counter")?;
        self.gpu.sync("download step counter")?;
        Ok(v)
    }

    /// [total, cross-entropy, alpha AR, beta TAR] of the last forward (waits for the stream).
    pub fn loss(&self) -> Result<[f32; 4]> {
        let v = self.download(&self.b.loss, "download loss")?;
        Ok([v[0], v[1], v[2], v[3]])
    }

    /// The optimizer steps taken (forward+backward passes queued and run).
    pub fn step_count(&self) -> Result<u32> {
        Ok(self.download_u32(&self.b.step)?[0])
    }

    fn unflat(&self, flat: &[f32]) -> LmWeights {
        let mut w = LmWeights::zeros(&self.cfg);
        w.unflatten(flat);
        w
    }

    /// The parameters now.
    pub fn weights(&self) -> Result<LmWeights> {
        Ok(self.unflat(&self.download(&self.b.params, "download parameters")?))
    }

    /// The gradients of the last backward (before clipping).
    pub fn grads(&self) -> Result<LmWeights> {
        Ok(self.unflat(&self.download(&self.b.grads, "download gradients")?))
    }

    /// Flat Adam moments (m, v) [P] each.
    pub fn moments(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((self.download(&self.b.adam_m, "download Adam m")?, self.download(&self.b.adam_v, "download Adam v")?))
    }

    /// (gradient norm, clip factor) of the last update.
    pub fn clip(&self) -> Result<(f32, f32)> {
        let v = self.download(&self.b.clip, "download clip")?;
        Ok((v[0], v[1]))
    }

    /// The carried (h, c) of every layer.
    pub fn state(&self) -> Result<State> {
        let mut out = Vec::new();
        for layer in &self.layers {
            let n = layer.d.b * layer.d.h;
            let get = |buf: Buf| -> Result<Vec<f32>> {
                let mut host = vec![0.0f32; n];
                // SAFETY: the address is element 0 of a live [B, H] buffer of this layer.
                unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut host, layer.ptr(buf, 0), self.gpu.stream().cu_stream()) }
                    .op("download state")?;
                self.gpu.sync("download state")?;
                Ok(host)
            };
            out.push((get(Buf::H0)?, get(Buf::C0)?));
        }
        Ok(out)
    }

    /// Replaces the carried state (e.g. zeros at the start of an epoch).
    pub fn set_state(&mut self, state: &State) -> Result<()> {
        for (layer, (h, c)) in self.layers.iter().zip(state) {
            for (buf, host) in [(Buf::H0, h), (Buf::C0, c)] {
                assert_eq!(host.len(), layer.d.b * layer.d.h, "LmCuda::set_state: {buf:?} of {:?}", layer.d);
                // SAFETY: element 0 of a live [B, H] buffer; the host slice has B*H elements
                // and outlives the copy (synchronised below).
                unsafe { cudarc::driver::result::memcpy_htod_async(layer.ptr(buf, 0), host, self.gpu.stream().cu_stream()) }
                    .op("upload state")?;
            }
        }
        self.gpu.sync("upload state")
    }
}
