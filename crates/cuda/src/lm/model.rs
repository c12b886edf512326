//! The AWD-LSTM LM training step on the GPU: runs the op lists of `super::steps` (forward,
//! backward = the forward in reverse, update = one norm reduction and one fused Adam(W)
//! kernel over the flat parameter buffer), op by op or replayed from two CUDA graphs.
//! Everything stays on the device; the host copies in the batch (ids, targets) and copies
//! out the loss.
//!
//! Checked against `super::reference` (loss, every gradient, state, dropout on and off),
//! `reference::clip_factor` and `reference::adam` by tests/lm_vs_ref.rs; the op lists are
//! replayed on the CPU by tests/lm_replay.rs.
//! Dimensions: T steps, B batch, E embedding width, V vocabulary, N = T*B rows.

use cudarc::driver::{CudaGraph, CudaSlice};

use super::config::{Dropouts, GroupHyper, Hyper, LmConfig, LmError, HYPER_LEN};
use super::kernels::{LmKernels, NORM_BLOCKS};
use super::layer::{addr, LmLayer};
use super::mask::Mask;
use super::params::{Layout, LmWeights};
use super::steps::{
    backward_ops, buf_len, check_ops, eval_ops, forward_ops, layer_at, raw_at, update_ops, At, LmBuf, Op,
};
use crate::device::Gpu;
use crate::error::{DriverContext, Result};
use crate::lstm::{capture, copy_dtod, enqueue_step, sgemm};
use crate::plan::Buf;

/// The device buffers of the step outside the LSTM layers (see [`LmBuf`]).
pub(super) struct Bufs {
    pub(super) params: CudaSlice<f32>,
    pub(super) grads: CudaSlice<f32>,
    pub(super) adam_m: CudaSlice<f32>,
    pub(super) adam_v: CudaSlice<f32>,
    pub(super) ids: CudaSlice<u32>,
    pub(super) targets: CudaSlice<u32>,
    pub(super) step: CudaSlice<u32>,
    pub(super) hyper: CudaSlice<f32>,
    pub(super) dropped: CudaSlice<f32>,
    pub(super) ddropped: CudaSlice<f32>,
    pub(super) logits: CudaSlice<f32>,
    pub(super) ce: CudaSlice<f32>,
    pub(super) ar: CudaSlice<f32>,
    pub(super) tar: CudaSlice<f32>,
    pub(super) loss: CudaSlice<f32>,
    pub(super) partial: CudaSlice<f32>,
    pub(super) clip: CudaSlice<f32>,
    pub(super) ones: CudaSlice<f32>,
}

/// The LM on one GPU: parameters, Adam moments, carried state, scratch, and the step.
pub struct LmCuda<'g> {
    pub(super) gpu: &'g Gpu,
    pub(super) cfg: LmConfig,
    pub(super) layout: Layout,
    k: LmKernels,
    pub(super) b: Bufs,
    pub(super) layers: Vec<LmLayer>,
    /// (forward, backward, update) op lists.
    pub(super) ops: [Vec<Op>; 3],
    /// The forward of an evaluation pass (dropout off, no step).
    eval: Vec<Op>,
    /// Parameter groups as flat-buffer ranges (`Layout::groups`).
    groups: Vec<(usize, usize)>,
    /// (forward+backward, update) once [`LmCuda::capture_graphs`] ran.
    graphs: Option<(CudaGraph, CudaGraph)>,
}

impl<'g> LmCuda<'g> {
    /// Allocates everything for `cfg`, uploads `w` (Adam moments 0, state 0, step 0).
    pub fn new(gpu: &'g Gpu, cfg: LmConfig, w: &LmWeights, hyper: Hyper) -> std::result::Result<Self, LmError> {
        cfg.validate()?;
        let layout = Layout::new(&cfg);
        let want = LmWeights::zeros(&cfg);
        let shapes = |w: &LmWeights| w.named().iter().map(|(_, t)| t.len()).collect::<Vec<_>>();
        if shapes(w) != shapes(&want) {
            return Err(LmError::Config(format!(
                "weights have {} parameters in {} layers, the config needs {} in {}",
                w.len(),
                w.layers.len(),
                want.len(),
                cfg.layers
            )));
        }
        let (n, e, p) = (cfg.rows(), cfg.emb, layout.total);
        let (v, vp) = (cfg.vocab, cfg.vocab_padded());
        let u32s = |len: usize, what: &str| -> Result<CudaSlice<u32>> {
            gpu.stream().alloc_zeros::<u32>(len).op(&format!("allocate {what}"))
        };
        let s = gpu.stream();
        let b = Bufs {
            params: s.clone_htod(&layout.to_flat(w)).op("upload LM parameters")?,
            grads: gpu.alloc_zeros(p, "LM gradients")?,
            adam_m: gpu.alloc_zeros(p, "Adam first moments")?,
            adam_v: gpu.alloc_zeros(p, "Adam second moments")?,
            ids: u32s(n, "token ids")?,
            targets: u32s(n, "targets")?,
            step: u32s(1, "step counter")?,
            hyper: s.clone_htod(&group_slots(&layout, hyper)).op("upload hyper-parameters")?,
            dropped: gpu.alloc_zeros(n * e, "dropped output")?,
            ddropped: gpu.alloc_zeros(n * e, "dropped output gradient")?,
            logits: gpu.alloc_zeros(n * vp, &format!("logits [{n}, {vp}] (V {v} padded)"))?,
            ce: gpu.alloc_zeros(n, "cross-entropy rows")?,
            ar: gpu.alloc_zeros(n, "AR rows")?,
            tar: gpu.alloc_zeros(n, "TAR rows")?,
            loss: gpu.alloc_zeros(4, "loss")?,
            partial: gpu.alloc_zeros(layout.groups().len() * NORM_BLOCKS, "norm partial sums")?,
            clip: gpu.alloc_zeros(2, "clip")?,
            ones: s.clone_htod(&vec![1.0f32; n]).op("upload ones")?,
        };
        // The executor passes raw addresses checked against buf_len: the allocations must agree.
        let lens = [
            (LmBuf::Params, b.params.len()),
            (LmBuf::Grads, b.grads.len()),
            (LmBuf::AdamM, b.adam_m.len()),
            (LmBuf::AdamV, b.adam_v.len()),
            (LmBuf::Ids, b.ids.len()),
            (LmBuf::Targets, b.targets.len()),
            (LmBuf::Step, b.step.len()),
            (LmBuf::Hyper, b.hyper.len()),
            (LmBuf::Dropped, b.dropped.len()),
            (LmBuf::DDropped, b.ddropped.len()),
            (LmBuf::Logits, b.logits.len()),
            (LmBuf::Ce, b.ce.len()),
            (LmBuf::Ar, b.ar.len()),
            (LmBuf::Tar, b.tar.len()),
            (LmBuf::Loss, b.loss.len()),
            (LmBuf::Partial, b.partial.len()),
            (LmBuf::Clip, b.clip.len()),
            (LmBuf::Ones, b.ones.len()),
        ];
        for (buf, len) in lens {
            let want = buf_len(&cfg, &layout, buf);
            assert_eq!(len, want, "LM buffer {buf:?}: allocated {len}, steps::buf_len {want}");
        }
        let mut layers = Vec::with_capacity(cfg.layers);
        for (l, d) in cfg.layer_dims().into_iter().enumerate() {
            layers.push(LmLayer::new(gpu, d, l, &layout)?);
        }
        let ops = [forward_ops(&cfg, &layout), backward_ops(&cfg, &layout), update_ops(&layout)];
        let eval = eval_ops(&cfg, &layout);
        ops.iter().chain([&eval]).for_each(|list| check_ops(&cfg, &layout, list));
        let k = LmKernels::load(gpu)?;
        let groups = layout.groups();
        Ok(LmCuda { gpu, cfg, layout, k, b, layers, ops, eval, groups, graphs: None })
    }

    /// The config in force.
    pub fn config(&self) -> &LmConfig {
        &self.cfg
    }

    /// Device address of element 0 of `buf`.
    fn base(&self, buf: LmBuf) -> u64 {
        let (g, b) = (self.gpu, &self.b);
        match buf {
            LmBuf::Params => addr(g, &b.params),
            LmBuf::Grads => addr(g, &b.grads),
            LmBuf::AdamM => addr(g, &b.adam_m),
            LmBuf::AdamV => addr(g, &b.adam_v),
            LmBuf::Ids => addr(g, &b.ids),
            LmBuf::Targets => addr(g, &b.targets),
            LmBuf::Step => addr(g, &b.step),
            LmBuf::Hyper => addr(g, &b.hyper),
            LmBuf::Dropped => addr(g, &b.dropped),
            LmBuf::DDropped => addr(g, &b.ddropped),
            LmBuf::Logits => addr(g, &b.logits),
            LmBuf::Ce => addr(g, &b.ce),
            LmBuf::Ar => addr(g, &b.ar),
            LmBuf::Tar => addr(g, &b.tar),
            LmBuf::Loss => addr(g, &b.loss),
            LmBuf::Partial => addr(g, &b.partial),
            LmBuf::Clip => addr(g, &b.clip),
            LmBuf::Ones => addr(g, &b.ones),
            LmBuf::Layer(l, buf) => self.layers[l].base(g, buf),
        }
    }

    /// Device address of `a` (every buffer has 4-byte elements).
    pub(super) fn ptr(&self, a: At) -> u64 {
        self.base(a.buf) + (a.off * 4) as u64
    }

    /// Address of element `off` of `buf`.
    fn p(&self, buf: LmBuf, off: usize) -> u64 {
        self.ptr(At { buf, off })
    }

    /// The parameter groups (`Layout::groups`: each LSTM layer, then the embedding with the
    /// decoder bias), as (offset, length) in the flat buffer.
    pub fn groups(&self) -> &[(usize, usize)] {
        &self.groups
    }

    /// Sets each parameter group's settings (read by the next update): its Adam(W)
    /// settings, frozen or not, and its update count so far (bias correction continues
    /// from there). The clip is group 0's.
    pub fn set_groups(&mut self, groups: &[GroupHyper]) -> std::result::Result<(), LmError> {
        if groups.len() != self.groups.len() {
            let (got, want) = (groups.len(), self.groups.len());
            return Err(LmError::Config(format!("{got} parameter-group settings for {want} groups")));
        }
        let steps = self.step_count()? as i64;
        let slots: Vec<f32> = groups.iter().flat_map(|g| g.hyper.to_slot(g.frozen, steps - g.updates as i64)).collect();
        Ok(self.gpu.stream().memcpy_htod(&slots, &mut self.b.hyper).op("upload hyper-parameters")?)
    }

    /// Uploads a batch: `ids` and next-token `targets`, both [T, B] time-major, each < V.
    pub fn set_batch(&mut self, ids: &[u32], targets: &[u32]) -> std::result::Result<(), LmError> {
        let (n, v) = (self.cfg.rows(), self.cfg.vocab);
        for (what, xs) in [("ids", ids), ("targets", targets)] {
            if xs.len() != n {
                let got = xs.len();
                return Err(LmError::Batch(format!("{what} has {got} tokens, expected T*B = {n}")));
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
            None => self.run_ops(&self.ops[0]).and_then(|_| self.run_ops(&self.ops[1])),
        }
    }

    /// Queues clipping and the Adam update of every parameter.
    pub fn update(&self) -> Result<()> {
        match &self.graphs {
            Some((_, up)) => up.launch().op("launch update graph"),
            None => self.run_ops(&self.ops[2]),
        }
    }

    /// The mean cross-entropy of a batch with every dropout off, without a gradient or an
    /// update (validation). The carried state advances as in training.
    pub fn evaluate(&mut self, ids: &[u32], targets: &[u32]) -> std::result::Result<f32, LmError> {
        self.set_batch(ids, targets)?;
        self.eval.iter().try_for_each(|op| self.run(op, &Dropouts::off()))?;
        Ok(self.loss()?[1])
    }

    /// One training step on a batch; returns [total, cross-entropy, alpha AR, beta TAR].
    pub fn step(&mut self, ids: &[u32], targets: &[u32]) -> std::result::Result<[f32; 4], LmError> {
        self.set_batch(ids, targets)?;
        self.forward_backward()?;
        self.update()?;
        Ok(self.loss()?)
    }

    pub(super) fn run_ops(&self, ops: &[Op]) -> Result<()> {
        ops.iter().try_for_each(|op| self.run(op, &self.cfg.drop))
    }

    /// [alpha, N*E, beta, (T-1)*B*E]: the AR and TAR weights and divisors.
    fn reg_terms(&self) -> [f32; 4] {
        let c = &self.cfg;
        let (ar_div, tar_div) = (c.rows() * c.emb, (c.t - 1) * c.b * c.emb);
        [c.alpha, ar_div as f32, c.beta, tar_div as f32]
    }

    /// Queues one op: its kernel with the buffers and sizes its doc (`steps::Op`) names;
    /// the embedding and output dropouts are `drop`'s.
    fn run(&self, op: &Op, drop: &Dropouts) -> Result<()> {
        let (g, k, c) = (self.gpu, &self.k, &self.cfg);
        let (n, bn, e, v) = (c.rows(), c.b, c.emb, c.vocab);
        let (seed, step) = (c.seed, self.p(LmBuf::Step, 0));
        let embed_masks = [(drop.embed, Mask::Word.id()), (drop.input, Mask::Input.id())];
        let (p_out, t_out) = (drop.output, Mask::Output.id());
        let top = c.layers - 1;
        let q = |buf: LmBuf| self.p(buf, 0);
        match *op {
            Op::StepBegin => k.lm_step_begin(g, step),
            Op::EmbedFwd => {
                let x = q(LmBuf::Layer(0, Buf::X));
                let emb = self.p(LmBuf::Params, self.layout.emb);
                let ids = q(LmBuf::Ids);
                k.lm_embed_fwd(g, x, emb, ids, n, bn, e, embed_masks, seed, step)
            }
            Op::Dropout { out, inp, n, period, p, mask } => {
                let (out, inp) = (self.ptr(out), self.ptr(inp));
                k.lm_dropout(g, out, inp, n, period, p, mask.id(), seed, step)
            }
            Op::Layer { l, step } => {
                let resolve = |buf: Buf, off: usize| self.ptr(layer_at(&self.layout, l, buf, off));
                enqueue_step(g, self.layers[l].d, &step, &resolve)
            }
            Op::Copy { dst, src, len } => copy_dtod(g, self.ptr(dst), self.ptr(src), len),
            Op::RegFwd => {
                let (dropped, raw) = (q(LmBuf::Dropped), self.ptr(raw_at(c)));
                let (ar, tar) = (q(LmBuf::Ar), q(LmBuf::Tar));
                k.lm_reg_fwd(g, dropped, ar, tar, raw, n, bn, e, p_out, t_out, seed, step)
            }
            Op::Gemm(gemm) => sgemm(g, &gemm, &|buf, off| self.p(buf, off)),
            Op::Xent => {
                let bias = self.p(LmBuf::Params, self.layout.dec_bias);
                let (logits, ce, targets) = (q(LmBuf::Logits), q(LmBuf::Ce), q(LmBuf::Targets));
                k.lm_xent(g, logits, ce, bias, targets, n, v, c.vocab_padded())
            }
            Op::BiasGrad => {
                let dbias = self.p(LmBuf::Grads, self.layout.dec_bias);
                k.lm_bias_grad(g, dbias, q(LmBuf::Logits), n, c.vocab_padded())
            }
            Op::LossSum => {
                let [alpha, ar_div, beta, tar_div] = self.reg_terms();
                let (loss, ce, ar, tar) = (q(LmBuf::Loss), q(LmBuf::Ce), q(LmBuf::Ar), q(LmBuf::Tar));
                k.lm_loss_sum(g, loss, ce, ar, tar, n, alpha, ar_div, beta, tar_div)
            }
            Op::RegBwd => {
                let dy = q(LmBuf::Layer(top, Buf::Dy));
                let (dd, dropped, raw) = (q(LmBuf::DDropped), q(LmBuf::Dropped), self.ptr(raw_at(c)));
                let tbe = [c.t, bn, e];
                let reg = self.reg_terms();
                k.lm_reg_bwd(g, dy, dd, dropped, raw, tbe, reg, p_out, t_out, seed, step)
            }
            Op::EmbedBwd => {
                let demb = self.p(LmBuf::Grads, self.layout.emb);
                let (dx, ids) = (q(LmBuf::Layer(0, Buf::Dx)), q(LmBuf::Ids));
                k.lm_embed_bwd(g, demb, dx, ids, n, bn, e, embed_masks, seed, step)
            }
            Op::SumsqPartial { group } => {
                let (off, len) = self.groups[group];
                let partial = self.p(LmBuf::Partial, group * NORM_BLOCKS);
                let hyper = self.p(LmBuf::Hyper, group * HYPER_LEN);
                k.lm_sumsq_partial(g, partial, self.p(LmBuf::Grads, off), len, hyper)
            }
            Op::ClipScale => {
                let parts = self.groups.len() * NORM_BLOCKS;
                k.lm_clip_scale(g, q(LmBuf::Clip), q(LmBuf::Partial), parts, q(LmBuf::Hyper))
            }
            Op::Adam { group, off, len, decay } => {
                let (w, m) = (self.p(LmBuf::Params, off), self.p(LmBuf::AdamM, off));
                let (v2, grads) = (self.p(LmBuf::AdamV, off), self.p(LmBuf::Grads, off));
                let (clip, hyper) = (q(LmBuf::Clip), self.p(LmBuf::Hyper, group * HYPER_LEN));
                k.lm_adam(g, [w, m, v2, grads], len, clip, hyper, step, decay)
            }
        }
    }

    /// Captures forward+backward and the update into two CUDA graphs that later calls
    /// replay. Runs forward+backward and the norm once first (cuBLAS sets up outside the
    /// capture), then restores the step counter and the carried state, so the model is as
    /// before (parameters and moments are not touched).
    pub fn capture_graphs(&mut self) -> Result<()> {
        self.graphs = None;
        let step = self.download_u32(&self.b.step)?;
        let state = self.state()?;
        self.run_ops(&self.ops[0])?;
        self.run_ops(&self.ops[1])?;
        let sums: Vec<Op> = (0..self.groups.len()).map(|group| Op::SumsqPartial { group }).collect();
        self.run_ops(&sums)?;
        self.run_ops(&[Op::ClipScale])?;
        let stream = self.gpu.stream().clone();
        stream.memcpy_htod(&step, &mut self.b.step).op("restore step counter")?;
        self.set_state(&state)?;
        let fb = capture(self.gpu, || {
            self.run_ops(&self.ops[0])?;
            self.run_ops(&self.ops[1])
        })?;
        let up = capture(self.gpu, || self.run_ops(&self.ops[2]))?;
        self.graphs = Some((fb, up));
        Ok(())
    }
}

/// The hyper-parameter buffer with `h` in every group's slot: trainable, Adam's t the step
/// counter.
fn group_slots(layout: &Layout, h: Hyper) -> Vec<f32> {
    layout.groups().iter().flat_map(|_| h.to_slot(false, 0)).collect()
}
