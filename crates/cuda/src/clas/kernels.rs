//! The classifier's kernels (`kernels/clas_*.cu`, after `kernels/lm_hash.cu`): compiled by
//! NVRTC once per process, loaded into the GPU's context, one launch wrapper per kernel with
//! the kernel's name, through [`KernelSet::launch`]. Every wrapper passes the arguments in
//! the order and with the types of its kernel's signature in kernels/clas_*.cu; every pointer
//! is a raw device address into a buffer the caller owns, sized as the kernel's header comment
//! says. Dropout and the embedding reuse the LM's
//! kernels (`crate::lm::kernels`).

use cudarc::driver::LaunchConfig;

use crate::device::Gpu;
use crate::error::Result;
use crate::launch::{blocks, stride_grid, Arg, KernelSet, BLOCK};

/// The classifier kernel sources, in the order NVRTC sees them.
pub const CLAS_CU: &str = concat!(
    include_str!("../../../../kernels/lm_hash.cu"),
    include_str!("../../../../kernels/clas_head.cu"),
    include_str!("../../../../kernels/clas_optim.cu"),
);

/// Name under which the sources are compiled and cached.
pub const CLAS_CU_NAME: &str = "kernels/clas_*.cu";

/// Every kernel name in `CLAS_CU`.
pub const NAMES: [&str; 13] = [
    "clas_pool_fwd",
    "clas_pool_bwd",
    "clas_ar_tar_bwd",
    "clas_bn_fwd",
    "clas_bn_bwd",
    "clas_relu_fwd",
    "clas_relu_bwd",
    "clas_xent",
    "clas_softmax",
    "clas_add",
    "clas_sumsq_partial",
    "clas_clip_scale",
    "clas_adam",
];

/// Blocks of `clas_sumsq_partial`: the length of its partial-sum buffer.
pub const NORM_BLOCKS: usize = 256;

/// One block of [`BLOCK`] threads.
fn one_block() -> LaunchConfig {
    blocks(1, BLOCK)
}

/// The buffers of one batch-norm forward.
#[derive(Clone, Copy, Debug)]
pub struct BnBufs {
    /// Input x [N, C].
    pub x: u64,
    /// Output y [N, C].
    pub y: u64,
    /// Normalised input [N, C], kept for the backward.
    pub xhat: u64,
    /// 1 / sqrt(var + eps) [C], kept for the backward.
    pub inv_std: u64,
    /// Scale [C].
    pub gamma: u64,
    /// Shift [C].
    pub beta: u64,
    /// Running mean [C].
    pub mean: u64,
    /// Running variance [C].
    pub var: u64,
}

/// The loaded classifier kernels.
pub struct ClasKernels {
    set: KernelSet,
}

impl ClasKernels {
    /// Compiles (once per process) and loads the classifier kernels into `gpu`'s context.
    pub fn load(gpu: &Gpu) -> Result<Self> {
        Ok(ClasKernels { set: KernelSet::load(gpu, CLAS_CU_NAME, CLAS_CU, &NAMES)? })
    }

    /// `clas_pool_fwd`: out [B, 3E] and argmax [B, E] from the top layer's Hs arena.
    /// `table` = (hs_off [chunks] i64, rows [chunks] i32, lens [B] i32, from [B] i32).
    #[allow(clippy::too_many_arguments)]
    pub fn clas_pool_fwd(
        &self,
        gpu: &Gpu,
        out: u64,
        argmax: u64,
        hs: u64,
        table: [u64; 4],
        b: usize,
        e: usize,
        bptt: usize,
    ) -> Result<()> {
        let [hs_off, rows, lens, from] = table.map(Arg::Ptr);
        let args = [Arg::Ptr(out), Arg::Ptr(argmax), Arg::Ptr(hs), hs_off, rows, lens, from];
        let sizes = [b, e, bptt].map(|v| Arg::I32(v as i32));
        self.set.launch(gpu, "clas_pool_fwd", stride_grid(b * e), &[&args[..], &sizes[..]].concat())
    }

    /// `clas_pool_bwd`: dy [len, rows, E] of one chunk from dpool [B, 3E].
    #[allow(clippy::too_many_arguments)]
    pub fn clas_pool_bwd(
        &self,
        gpu: &Gpu,
        dy: u64,
        dpool: u64,
        argmax: u64,
        lens_from: [u64; 2],
        start: usize,
        len: usize,
        rows: usize,
        e: usize,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(dy),
            Arg::Ptr(dpool),
            Arg::Ptr(argmax),
            Arg::Ptr(lens_from[0]),
            Arg::Ptr(lens_from[1]),
            Arg::I32(start as i32),
            Arg::I32(len as i32),
            Arg::I32(rows as i32),
            Arg::I32(e as i32),
        ];
        self.set.launch(gpu, "clas_pool_bwd", stride_grid(len * rows * e), &args)
    }

    /// `clas_ar_tar_bwd`: adds fastai's AR/TAR gradient (`ka`, `kt` as in the kernel) to dy
    /// [len, rows, E] of the chunk at `start`; `table` as [`Self::clas_pool_fwd`]'s.
    #[allow(clippy::too_many_arguments)]
    pub fn clas_ar_tar_bwd(
        &self,
        gpu: &Gpu,
        dy: u64,
        hs: u64,
        table: [u64; 4],
        [start, len, rows, e, bptt]: [usize; 5],
        ka: f32,
        kt: f32,
    ) -> Result<()> {
        let [hs_off, rows_c, lens, from] = table.map(Arg::Ptr);
        let args = [Arg::Ptr(dy), Arg::Ptr(hs), hs_off, rows_c, lens, from];
        let sizes = [start, len, rows, e, bptt].map(|v| Arg::I32(v as i32));
        let ks = [Arg::F32(ka), Arg::F32(kt)];
        self.set.launch(gpu, "clas_ar_tar_bwd", stride_grid(len * rows * e), &[&args[..], &sizes[..], &ks[..]].concat())
    }

    /// `clas_bn_fwd` over [n, c]: y, xhat, inv_std; running stats updated when `train`.
    pub fn clas_bn_fwd(&self, gpu: &Gpu, p: BnBufs, n: usize, c: usize, train: bool) -> Result<()> {
        let args = [
            Arg::Ptr(p.y),
            Arg::Ptr(p.xhat),
            Arg::Ptr(p.inv_std),
            Arg::Ptr(p.mean),
            Arg::Ptr(p.var),
            Arg::Ptr(p.x),
            Arg::Ptr(p.gamma),
            Arg::Ptr(p.beta),
            Arg::I32(n as i32),
            Arg::I32(c as i32),
            Arg::I32(train as i32),
            Arg::F32(BN_MOMENTUM),
            Arg::F32(BN_EPS),
        ];
        self.set.launch(gpu, "clas_bn_fwd", stride_grid(c), &args)
    }

    /// `clas_bn_bwd` over [n, c] of the forward `f`: dx [n, c] and (dgamma, dbeta) [c]
    /// (overwritten) from dy [n, c].
    #[allow(clippy::too_many_arguments)]
    pub fn clas_bn_bwd(
        &self,
        gpu: &Gpu,
        dx: u64,
        dgamma_dbeta: [u64; 2],
        dy: u64,
        f: BnBufs,
        n: usize,
        c: usize,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(dx),
            Arg::Ptr(dgamma_dbeta[0]),
            Arg::Ptr(dgamma_dbeta[1]),
            Arg::Ptr(dy),
            Arg::Ptr(f.xhat),
            Arg::Ptr(f.gamma),
            Arg::Ptr(f.inv_std),
            Arg::I32(n as i32),
            Arg::I32(c as i32),
        ];
        self.set.launch(gpu, "clas_bn_bwd", stride_grid(c), &args)
    }

    /// `clas_relu_fwd`: y = max(x, 0) over n.
    pub fn clas_relu_fwd(&self, gpu: &Gpu, y: u64, x: u64, n: usize) -> Result<()> {
        let args = [Arg::Ptr(y), Arg::Ptr(x), Arg::I32(n as i32)];
        self.set.launch(gpu, "clas_relu_fwd", stride_grid(n), &args)
    }

    /// `clas_relu_bwd`: dx = x > 0 ? dy : 0 over n.
    pub fn clas_relu_bwd(&self, gpu: &Gpu, dx: u64, dy: u64, x: u64, n: usize) -> Result<()> {
        let args = [Arg::Ptr(dx), Arg::Ptr(dy), Arg::Ptr(x), Arg::I32(n as i32)];
        self.set.launch(gpu, "clas_relu_bwd", stride_grid(n), &args)
    }

    /// `clas_xent`: loss [1], ce [n], dlogits [n, c] from logits [n, c] and labels [n].
    #[allow(clippy::too_many_arguments)]
    pub fn clas_xent(
        &self,
        gpu: &Gpu,
        loss: u64,
        ce: u64,
        dlogits: u64,
        logits: u64,
        labels: u64,
        n: usize,
        c: usize,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(loss),
            Arg::Ptr(ce),
            Arg::Ptr(dlogits),
            Arg::Ptr(logits),
            Arg::Ptr(labels),
            Arg::I32(n as i32),
            Arg::I32(c as i32),
        ];
        self.set.launch(gpu, "clas_xent", one_block(), &args)
    }

    /// `clas_softmax`: probs [n, c] from logits [n, c].
    pub fn clas_softmax(&self, gpu: &Gpu, probs: u64, logits: u64, n: usize, c: usize) -> Result<()> {
        let args = [Arg::Ptr(probs), Arg::Ptr(logits), Arg::I32(n as i32), Arg::I32(c as i32)];
        self.set.launch(gpu, "clas_softmax", stride_grid(n), &args)
    }

    /// `clas_add`: y += x over n.
    pub fn clas_add(&self, gpu: &Gpu, y: u64, x: u64, n: usize) -> Result<()> {
        let args = [Arg::Ptr(y), Arg::Ptr(x), Arg::I64(n as i64)];
        self.set.launch(gpu, "clas_add", stride_grid(n), &args)
    }

    /// `clas_sumsq_partial`: partial [NORM_BLOCKS] sums of g^2 over g [n].
    pub fn clas_sumsq_partial(&self, gpu: &Gpu, partial: u64, g: u64, n: usize) -> Result<()> {
        self.set.launch(
            gpu,
            "clas_sumsq_partial",
            blocks(NORM_BLOCKS, BLOCK),
            &[Arg::Ptr(partial), Arg::Ptr(g), Arg::I64(n as i64)],
        )
    }

    /// `clas_clip_scale`: clip [2] = (norm, factor) from the partial sums.
    pub fn clas_clip_scale(&self, gpu: &Gpu, clip: u64, partial: u64, max_norm: f32) -> Result<()> {
        let args = [Arg::Ptr(clip), Arg::Ptr(partial), Arg::I32(NORM_BLOCKS as i32), Arg::F32(max_norm)];
        self.set.launch(gpu, "clas_clip_scale", one_block(), &args)
    }

    /// `clas_adam`: one group's Adam(W) update, its `t`-th; `consts` = (beta1, beta2, eps, wd).
    #[allow(clippy::too_many_arguments)]
    pub fn clas_adam(
        &self,
        gpu: &Gpu,
        wmv: [u64; 3],
        grad: u64,
        n: usize,
        clip: u64,
        lr: f32,
        consts: [f32; 4],
        t: u32,
    ) -> Result<()> {
        let [w, m, v] = wmv.map(Arg::Ptr);
        let [b1, b2, eps, wd] = consts.map(Arg::F32);
        let args = [w, m, v, Arg::Ptr(grad), Arg::I64(n as i64), Arg::Ptr(clip), Arg::F32(lr), b1, b2, eps, wd];
        self.set.launch(gpu, "clas_adam", stride_grid(n), &[&args[..], &[Arg::I32(t as i32)]].concat())
    }
}

/// Weight of the newest batch in the running statistics (PyTorch's BatchNorm1d default).
pub const BN_MOMENTUM: f32 = 0.1;
/// Added to the variance before the square root (PyTorch's default).
pub const BN_EPS: f32 = 1e-5;
