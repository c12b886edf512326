//! [`ClasCuda`]: the ULMFiT classifier on one GPU, device-resident: parameters, running
//! statistics, Adam moments and every activation stay on the device; the host copies in the
//! documents and labels and copies out the loss (or the probabilities).
//!
//! One training step (`super::passes`): BPT3C forward over the batch's chunks, concat pooling,
//! the head, softmax cross-entropy; the backward through the kept chunks only; gradient
//! zeroing of frozen groups, global-norm clipping and Adam with a learning rate per group.
//! [`ClasCuda::forward_backward`] stops before the update (gradient checks); `probs` is eval
//! mode; weights, gradients and moments copy back to the host, `set_weights` copies in.
//! Checked against `ulmfit_trainer::classifier` by crates/trainer/tests/clas_cuda_vs_cpu.rs.

use cudarc::driver::CudaSlice;

use super::bufs::{addr, ClasLayer, HeadBufs};
use super::chunks::Schedule;
use super::config::{ClasConfig, ClasError, ClasHyper};
use super::kernels::ClasKernels;
use super::params::{ClasWeights, Layout};
use crate::device::Gpu;
use crate::error::{DriverContext, Result};
use crate::lm::kernels::LmKernels;

/// The classifier on one GPU.
pub struct ClasCuda<'g> {
    pub(super) gpu: &'g Gpu,
    pub(super) cfg: ClasConfig,
    pub(super) layout: Layout,
    pub(super) k: ClasKernels,
    pub(super) lm: LmKernels,
    /// Flat parameters, gradients, Adam moments [total]; running statistics [stats_total].
    pub(super) params: CudaSlice<f32>,
    pub(super) grads: CudaSlice<f32>,
    pub(super) adam_m: CudaSlice<f32>,
    pub(super) adam_v: CudaSlice<f32>,
    pub(super) stats: CudaSlice<f32>,
    pub(super) layers: Vec<ClasLayer>,
    pub(super) head: HeadBufs,
    /// Training steps so far (the mask counter).
    pub(super) step: u32,
    /// Adam updates applied to each group so far (its bias-correction t).
    pub(super) group_steps: Vec<u32>,
    /// Documents in the last batch.
    pub(super) last_b: usize,
}

impl<'g> ClasCuda<'g> {
    /// Allocates everything for `cfg` and uploads `w` (Adam moments 0).
    pub fn new(gpu: &'g Gpu, cfg: ClasConfig, w: &ClasWeights) -> std::result::Result<Self, ClasError> {
        cfg.validate()?;
        let want = ClasWeights::zeros(&cfg);
        if w.shapes() != want.shapes() {
            return Err(ClasError::Config(format!(
                "weights have tensor sizes {:?}, the config needs {:?}",
                w.shapes(),
                want.shapes()
            )));
        }
        let layout = Layout::new(&cfg);
        let (flat, stats) = layout.to_flat(w);
        let s = gpu.stream();
        let p = layout.total;
        let params = s.clone_htod(&flat).op("upload classifier parameters")?;
        let stats = s.clone_htod(&stats).op("upload batch-norm running statistics")?;
        let grads = gpu.alloc_zeros(p, "classifier gradients")?;
        let adam_m = gpu.alloc_zeros(p, "classifier Adam first moments")?;
        let adam_v = gpu.alloc_zeros(p, "classifier Adam second moments")?;
        let layers = (0..cfg.layers).map(|l| ClasLayer::new(gpu, &cfg, l)).collect::<Result<_>>()?;
        let head = HeadBufs::new(gpu, &cfg)?;
        let (k, lm) = (ClasKernels::load(gpu)?, LmKernels::load(gpu)?);
        let group_steps = vec![0; cfg.groups()];
        Ok(ClasCuda {
            gpu,
            cfg,
            layout,
            k,
            lm,
            params,
            grads,
            adam_m,
            adam_v,
            stats,
            layers,
            head,
            step: 0,
            group_steps,
            last_b: 0,
        })
    }

    /// The config in force.
    pub fn config(&self) -> &ClasConfig {
        &self.cfg
    }

    /// The parameter layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// One training step on `docs` (sorted longest first) with `labels`: forward, backward,
    /// clip, Adam per group, with fresh dropout masks. Returns the mean cross-entropy.
    pub fn train_step(
        &mut self,
        docs: &[Vec<u32>],
        labels: &[u32],
        hyper: &ClasHyper,
    ) -> std::result::Result<f32, ClasError> {
        hyper.validate(&self.cfg)?;
        self.step += 1;
        self.forward_backward(docs, labels, [hyper.alpha, hyper.beta])?;
        self.update(hyper)?;
        Ok(self.loss()?)
    }

    /// Forward and backward of a training step without the update, with the masks of the
    /// current step count (the same masks on every call until the next `train_step`):
    /// the gradients for [`ClasCuda::grads`] of the cross-entropy plus fastai's AR/TAR with
    /// weights `ar_tar` = [alpha, beta] ([0, 0]: none). Updates the BN running statistics
    /// like any training forward. Returns the mean cross-entropy.
    pub fn forward_backward(
        &mut self,
        docs: &[Vec<u32>],
        labels: &[u32],
        ar_tar: [f32; 2],
    ) -> std::result::Result<f32, ClasError> {
        if docs.len() < 2 {
            return Err(ClasError::Batch(format!(
                "training needs at least 2 documents (batch norm), got {}",
                docs.len()
            )));
        }
        if labels.len() != docs.len() {
            return Err(ClasError::Batch(format!("{} labels for {} documents", labels.len(), docs.len())));
        }
        if let Some((b, &y)) = labels.iter().enumerate().find(|(_, &y)| y as usize >= self.cfg.classes) {
            return Err(ClasError::Batch(format!(
                "label {y} of document {b} is not a class (C = {})",
                self.cfg.classes
            )));
        }
        let sched = self.prepare(docs)?;
        self.gpu.stream().memcpy_htod(labels, &mut self.head.labels).op("upload labels")?;
        self.gpu.stream().memcpy_htod(&[self.step], &mut self.head.step).op("upload mask counter")?;
        self.forward(&sched, true)?;
        self.backward(&sched, ar_tar)?;
        Ok(self.loss()?)
    }

    /// Replaces the parameters and running statistics by `w` (Adam moments and step counts
    /// are kept), e.g. from a checkpoint.
    pub fn set_weights(&mut self, w: &ClasWeights) -> std::result::Result<(), ClasError> {
        let want = ClasWeights::zeros(&self.cfg).shapes();
        if w.shapes() != want {
            return Err(ClasError::Config(format!(
                "weights have tensor sizes {:?}, the config needs {want:?}",
                w.shapes()
            )));
        }
        let (flat, stats) = self.layout.to_flat(w);
        let s = self.gpu.stream();
        s.memcpy_htod(&flat, &mut self.params).op("upload classifier parameters")?;
        s.memcpy_htod(&stats, &mut self.stats).op("upload batch-norm running statistics")?;
        Ok(())
    }

    /// Class probabilities [B][C] of `docs` (sorted longest first) in eval mode: no dropout,
    /// batch norm with the running statistics.
    pub fn probs(&mut self, docs: &[Vec<u32>]) -> std::result::Result<Vec<Vec<f32>>, ClasError> {
        let sched = self.prepare(docs)?;
        self.forward(&sched, false)?;
        let c = self.cfg.classes;
        let flat = self.download(&self.head.dlogits, docs.len() * c)?;
        Ok(flat.chunks(c).map(<[f32]>::to_vec).collect())
    }

    /// Checks the documents, builds their schedule, grows the arenas and uploads the ids and
    /// the chunk table.
    fn prepare(&mut self, docs: &[Vec<u32>]) -> std::result::Result<Schedule, ClasError> {
        let (b, v) = (docs.len(), self.cfg.vocab);
        if b > self.cfg.batch {
            return Err(ClasError::Batch(format!("{b} documents, the model was built for at most {}", self.cfg.batch)));
        }
        for (k, d) in docs.iter().enumerate() {
            if let Some((pos, &bad)) = d.iter().enumerate().find(|(_, &t)| t as usize >= v) {
                return Err(ClasError::Batch(format!(
                    "token {bad} at {pos} of document {k} is outside the vocabulary of {v}"
                )));
            }
        }
        let lens: Vec<usize> = docs.iter().map(Vec::len).collect();
        let sched = Schedule::new(&lens, self.cfg.bptt, self.cfg.max_len).map_err(ClasError::Batch)?;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            layer.fit(self.gpu, &sched, l)?;
        }
        let (gpu, h, top) = (self.gpu, &mut self.head, &self.layers[self.cfg.layers - 1]);
        let s = gpu.stream();
        let ids = sched.ids(docs);
        super::bufs::grow(gpu, &mut h.ids, ids.len(), "classifier ids")?;
        s.memcpy_htod(&ids, &mut h.ids).op("upload ids")?;
        let n = sched.chunks.len();
        let hs_off: Vec<i64> = (0..n).map(|c| sched.offset(c, crate::plan::Buf::Hs, top.i, top.h) as i64).collect();
        let rows: Vec<i32> = sched.chunks.iter().map(|c| c.rows as i32).collect();
        super::bufs::grow(gpu, &mut h.hs_off, n, "chunk table")?;
        super::bufs::grow(gpu, &mut h.rows, n, "chunk table")?;
        s.memcpy_htod(&hs_off, &mut h.hs_off).op("upload chunk table")?;
        s.memcpy_htod(&rows, &mut h.rows).op("upload chunk table")?;
        let as_i32 = |v: &[usize]| v.iter().map(|&x| x as i32).collect::<Vec<_>>();
        s.memcpy_htod(&as_i32(&sched.lens), &mut h.lens).op("upload document lengths")?;
        s.memcpy_htod(&as_i32(&sched.from), &mut h.from).op("upload pooling windows")?;
        self.last_b = b;
        Ok(sched)
    }

    /// Device address of element `off` of a buffer.
    pub(super) fn at<T>(&self, s: &CudaSlice<T>, off: usize) -> u64 {
        addr(self.gpu, s) + (off * std::mem::size_of::<T>()) as u64
    }

    /// Copies the first `n` elements of `s` to the host (waits for the stream).
    fn download(&self, s: &CudaSlice<f32>, n: usize) -> Result<Vec<f32>> {
        let host = self.gpu.stream().clone_dtoh(&s.slice(0..n)).op("classifier download")?;
        self.gpu.sync("classifier download")?;
        Ok(host)
    }

    /// (Adam updates of each group so far, training steps so far): each group's
    /// bias-correction count and the mask counter.
    pub fn counters(&self) -> (&[u32], u32) {
        (&self.group_steps, self.step)
    }

    /// Replaces Adam's moments `m`, `v` (shaped like the weights; running statistics
    /// ignored) and each group's update count, e.g. to go on with the optimizer state of an
    /// earlier stage or a saved run.
    pub fn set_optimizer_state(
        &mut self,
        m: &ClasWeights,
        v: &ClasWeights,
        group_steps: &[u32],
    ) -> std::result::Result<(), ClasError> {
        let want = ClasWeights::zeros(&self.cfg).shapes();
        if m.shapes() != want || v.shapes() != want || group_steps.len() != self.group_steps.len() {
            return Err(ClasError::Config(format!(
                "optimizer state for tensor sizes {:?} and {} groups, the model has {want:?} and {}",
                m.shapes(),
                group_steps.len(),
                self.group_steps.len()
            )));
        }
        let s = self.gpu.stream();
        s.memcpy_htod(&self.layout.to_flat(m).0, &mut self.adam_m).op("upload Adam m")?;
        s.memcpy_htod(&self.layout.to_flat(v).0, &mut self.adam_v).op("upload Adam v")?;
        self.gpu.sync("upload Adam moments")?;
        self.group_steps.copy_from_slice(group_steps);
        Ok(())
    }

    /// Sets the training-step counter (the mask counter; the next step draws the masks of
    /// `steps + 1`).
    pub fn set_step_count(&mut self, steps: u32) {
        self.step = steps;
    }

    /// The mean cross-entropy of the last training step.
    pub fn loss(&self) -> Result<f32> {
        Ok(self.download(&self.head.loss, 1)?[0])
    }

    /// The pooled features [B, 3E] of the last forward.
    pub fn pooled(&self) -> Result<Vec<f32>> {
        self.download(&self.head.pooled, self.last_b * 3 * self.cfg.emb)
    }

    /// The logits [B, C] of the last forward.
    pub fn logits(&self) -> Result<Vec<f32>> {
        self.download(&self.head.logits, self.last_b * self.cfg.classes)
    }

    /// The global gradient norm of the last step (frozen groups left out), before clipping.
    pub fn grad_norm(&self) -> Result<f32> {
        Ok(self.download(&self.head.clip, 1)?[0])
    }

    /// Parameters and running statistics.
    pub fn weights(&self) -> Result<ClasWeights> {
        let stats = self.download(&self.stats, self.layout.stats_total)?;
        self.unflatten(&self.params, Some(&stats))
    }

    /// Gradients of the last step (unclipped; frozen groups 0; running statistics 0).
    pub fn grads(&self) -> Result<ClasWeights> {
        self.unflatten(&self.grads, None)
    }

    /// Adam's (first, second) moments.
    pub fn moments(&self) -> Result<(ClasWeights, ClasWeights)> {
        Ok((self.unflatten(&self.adam_m, None)?, self.unflatten(&self.adam_v, None)?))
    }

    fn unflatten(&self, flat: &CudaSlice<f32>, stats: Option<&[f32]>) -> Result<ClasWeights> {
        let flat = self.download(flat, self.layout.total)?;
        let mut w = ClasWeights::zeros(&self.cfg);
        self.layout.from_flat(&flat, stats, &mut w);
        Ok(w)
    }
}
