//! The LM step's kernels (`kernels/lm_*.cu`): compiled by NVRTC once per process as one
//! source (lm_hash.cu first), loaded into the GPU's context, and one launch wrapper per
//! kernel with the kernel's name, through [`KernelSet::launch`]. Every wrapper passes the
//! arguments in the order and with the types of its kernel's signature in kernels/lm_*.cu;
//! every pointer argument is a raw device address into a buffer the caller owns and sized as
//! the kernel's header comment says.

use crate::device::Gpu;
use crate::error::Result;
use crate::launch::{blocks, stride_grid, Arg, KernelSet, BLOCK};

/// The LM kernel sources, in the order NVRTC sees them.
pub const LM_CU: &str = concat!(
    include_str!("../../../../kernels/lm_hash.cu"),
    include_str!("../../../../kernels/lm_dropout.cu"),
    include_str!("../../../../kernels/lm_loss.cu"),
    include_str!("../../../../kernels/lm_optim.cu"),
);

/// Name under which the sources are compiled and cached.
pub const LM_CU_NAME: &str = "kernels/lm_*.cu";

/// Every kernel name in `LM_CU`.
pub const NAMES: [&str; 12] = [
    "lm_dropout",
    "lm_embed_fwd",
    "lm_embed_bwd",
    "lm_reg_fwd",
    "lm_xent",
    "lm_bias_grad",
    "lm_loss_sum",
    "lm_reg_bwd",
    "lm_step_begin",
    "lm_sumsq_partial",
    "lm_clip_scale",
    "lm_adam",
];

/// Blocks of `lm_sumsq_partial`: the length of its partial-sum buffer.
pub const NORM_BLOCKS: usize = 1024;
/// Threads per block of the vocabulary-row and single-block kernels.
const WIDE: u32 = 1024;

/// The loaded LM kernels.
pub struct LmKernels {
    set: KernelSet,
}

impl LmKernels {
    /// Compiles (once per process) and loads the LM kernels into `gpu`'s context.
    pub fn load(gpu: &Gpu) -> Result<Self> {
        Ok(LmKernels { set: KernelSet::load(gpu, LM_CU_NAME, LM_CU, &NAMES)? })
    }

    /// `lm_dropout`: out[k] = inp[k] * mask(k % period), n elements (out may equal inp).
    #[allow(clippy::too_many_arguments)]
    pub fn lm_dropout(
        &self,
        gpu: &Gpu,
        out: u64,
        inp: u64,
        n: usize,
        period: usize,
        p: f32,
        mask: u32,
        seed: u64,
        step: u64,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(out),
            Arg::Ptr(inp),
            Arg::I64(n as i64),
            Arg::I64(period as i64),
            Arg::F32(p),
            Arg::U32(mask),
            Arg::U64(seed),
            Arg::Ptr(step),
        ];
        self.set.launch(gpu, "lm_dropout", stride_grid(n), &args)
    }

    /// Arguments shared by `lm_embed_fwd` and `lm_embed_bwd` after the first two pointers.
    #[allow(clippy::too_many_arguments)]
    fn embed_args(
        ids: u64,
        tb: usize,
        b: usize,
        e: usize,
        p_word: f32,
        t_word: u32,
        p_input: f32,
        t_input: u32,
        seed: u64,
        step: u64,
    ) -> [Arg; 10] {
        [
            Arg::Ptr(ids),
            Arg::I32(tb as i32),
            Arg::I32(b as i32),
            Arg::I32(e as i32),
            Arg::F32(p_word),
            Arg::U32(t_word),
            Arg::F32(p_input),
            Arg::U32(t_input),
            Arg::U64(seed),
            Arg::Ptr(step),
        ]
    }

    /// `lm_embed_fwd`: x [T*B, E] = emb[ids] with word and input dropout.
    #[allow(clippy::too_many_arguments)]
    pub fn lm_embed_fwd(
        &self,
        gpu: &Gpu,
        x: u64,
        emb: u64,
        ids: u64,
        tb: usize,
        b: usize,
        e: usize,
        masks: [(f32, u32); 2],
        seed: u64,
        step: u64,
    ) -> Result<()> {
        let [(pw, tw), (pi, ti)] = masks;
        let mut args = vec![Arg::Ptr(x), Arg::Ptr(emb)];
        args.extend(Self::embed_args(ids, tb, b, e, pw, tw, pi, ti, seed, step));
        self.set.launch(gpu, "lm_embed_fwd", stride_grid(tb * e), &args)
    }

    /// `lm_embed_bwd`: demb [V, E] += scatter of dx [T*B, E] through the same masks.
    #[allow(clippy::too_many_arguments)]
    pub fn lm_embed_bwd(
        &self,
        gpu: &Gpu,
        demb: u64,
        dx: u64,
        ids: u64,
        tb: usize,
        b: usize,
        e: usize,
        masks: [(f32, u32); 2],
        seed: u64,
        step: u64,
    ) -> Result<()> {
        let [(pw, tw), (pi, ti)] = masks;
        let mut args = vec![Arg::Ptr(demb), Arg::Ptr(dx)];
        args.extend(Self::embed_args(ids, tb, b, e, pw, tw, pi, ti, seed, step));
        // One thread per column when E <= 1024, so each row's scan over the ids runs once.
        let threads = (e.div_ceil(32) * 32).min(WIDE as usize) as u32;
        self.set.launch(gpu, "lm_embed_bwd", blocks(tb, threads), &args)
    }

    /// `lm_reg_fwd`: dropped = raw * output mask, per-row AR and TAR sums.
    #[allow(clippy::too_many_arguments)]
    pub fn lm_reg_fwd(
        &self,
        gpu: &Gpu,
        dropped: u64,
        ar: u64,
        tar: u64,
        raw: u64,
        n: usize,
        b: usize,
        e: usize,
        p_out: f32,
        t_out: u32,
        seed: u64,
        step: u64,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(dropped),
            Arg::Ptr(ar),
            Arg::Ptr(tar),
            Arg::Ptr(raw),
            Arg::I32(b as i32),
            Arg::I32(e as i32),
            Arg::F32(p_out),
            Arg::U32(t_out),
            Arg::U64(seed),
            Arg::Ptr(step),
        ];
        self.set.launch(gpu, "lm_reg_fwd", blocks(n, 128), &args)
    }

    /// `lm_xent`: per row of logits [N, ld], softmax cross-entropy over the V real columns
    /// into ce [N], dL/dlogits in place (0 in the padding columns). The kernel loads float4:
    /// ld must be a multiple of 4, logits and bias [ld] 16-byte aligned.
    #[allow(clippy::too_many_arguments)]
    pub fn lm_xent(
        &self,
        gpu: &Gpu,
        logits: u64,
        ce: u64,
        bias: u64,
        targets: u64,
        n: usize,
        v: usize,
        ld: usize,
    ) -> Result<()> {
        assert!(
            ld.is_multiple_of(4) && ld >= v && logits.is_multiple_of(16) && bias.is_multiple_of(16),
            "lm_xent: ld {ld} (V {v}) and the logits and bias addresses must allow float4"
        );
        let args = [
            Arg::Ptr(logits),
            Arg::Ptr(ce),
            Arg::Ptr(bias),
            Arg::Ptr(targets),
            Arg::I32(v as i32),
            Arg::I32(ld as i32),
            Arg::F32(1.0 / n as f32),
        ];
        self.set.launch(gpu, "lm_xent", blocks(n, WIDE), &args)
    }

    /// `lm_bias_grad`: dbias [ld] = column sums of dlogits [n, ld], in a fixed order.
    pub fn lm_bias_grad(&self, gpu: &Gpu, dbias: u64, dlogits: u64, n: usize, ld: usize) -> Result<()> {
        let args = [Arg::Ptr(dbias), Arg::Ptr(dlogits), Arg::I32(n as i32), Arg::I32(ld as i32)];
        // 32 columns by LM_BIAS_GROUPS = 16 row groups per block (kernels/lm_loss.cu).
        self.set.launch(gpu, "lm_bias_grad", blocks(ld.div_ceil(32), 512), &args)
    }

    /// `lm_loss_sum`: out [4] = (total, ce, alpha AR, beta TAR) from the row sums.
    #[allow(clippy::too_many_arguments)]
    pub fn lm_loss_sum(
        &self,
        gpu: &Gpu,
        out: u64,
        ce: u64,
        ar: u64,
        tar: u64,
        n: usize,
        alpha: f32,
        ar_div: f32,
        beta: f32,
        tar_div: f32,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(out),
            Arg::Ptr(ce),
            Arg::Ptr(ar),
            Arg::Ptr(tar),
            Arg::I32(n as i32),
            Arg::F32(alpha),
            Arg::F32(ar_div),
            Arg::F32(beta),
            Arg::F32(tar_div),
        ];
        self.set.launch(gpu, "lm_loss_sum", blocks(1, WIDE), &args)
    }

    /// `lm_reg_bwd`: dy [T*B, E] = dL/draw through output dropout, AR and TAR.
    #[allow(clippy::too_many_arguments)]
    pub fn lm_reg_bwd(
        &self,
        gpu: &Gpu,
        dy: u64,
        ddropped: u64,
        dropped: u64,
        raw: u64,
        tbe: [usize; 3],
        reg: [f32; 4],
        p_out: f32,
        t_out: u32,
        seed: u64,
        step: u64,
    ) -> Result<()> {
        let [t, b, e] = tbe;
        let [alpha, ar_div, beta, tar_div] = reg;
        let args = [
            Arg::Ptr(dy),
            Arg::Ptr(ddropped),
            Arg::Ptr(dropped),
            Arg::Ptr(raw),
            Arg::I32(t as i32),
            Arg::I32(b as i32),
            Arg::I32(e as i32),
            Arg::F32(alpha),
            Arg::F32(ar_div),
            Arg::F32(beta),
            Arg::F32(tar_div),
            Arg::F32(p_out),
            Arg::U32(t_out),
            Arg::U64(seed),
            Arg::Ptr(step),
        ];
        self.set.launch(gpu, "lm_reg_bwd", stride_grid(t * b * e), &args)
    }

    /// `lm_step_begin`: step += 1.
    pub fn lm_step_begin(&self, gpu: &Gpu, step: u64) -> Result<()> {
        self.set.launch(gpu, "lm_step_begin", blocks(1, 1), &[Arg::Ptr(step)])
    }

    /// `lm_sumsq_partial`: partial [NORM_BLOCKS] sums of g^2 over one group's g [n] (zeros
    /// when the group's `hyper` slot says frozen).
    pub fn lm_sumsq_partial(&self, gpu: &Gpu, partial: u64, g: u64, n: usize, hyper: u64) -> Result<()> {
        let args = [Arg::Ptr(partial), Arg::Ptr(g), Arg::I64(n as i64), Arg::Ptr(hyper)];
        self.set.launch(gpu, "lm_sumsq_partial", blocks(NORM_BLOCKS, BLOCK), &args)
    }

    /// `lm_clip_scale`: clip [2] = (norm, factor) from `nparts` partial sums.
    pub fn lm_clip_scale(&self, gpu: &Gpu, clip: u64, partial: u64, nparts: usize, hyper: u64) -> Result<()> {
        let args = [Arg::Ptr(clip), Arg::Ptr(partial), Arg::I32(nparts as i32), Arg::Ptr(hyper)];
        self.set.launch(gpu, "lm_clip_scale", blocks(1, WIDE), &args)
    }

    /// `lm_adam`: the fused Adam(W) update of [w, m, v, grad] [n] (a part of one group), with
    /// the group's `hyper` slot; its weight decay only if `decay`.
    #[allow(clippy::too_many_arguments)]
    pub fn lm_adam(
        &self,
        gpu: &Gpu,
        [w, m, v, grad]: [u64; 4],
        n: usize,
        clip: u64,
        hyper: u64,
        step: u64,
        decay: bool,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(w),
            Arg::Ptr(m),
            Arg::Ptr(v),
            Arg::Ptr(grad),
            Arg::I64(n as i64),
            Arg::Ptr(clip),
            Arg::Ptr(hyper),
            Arg::Ptr(step),
            Arg::I32(decay as i32),
        ];
        self.set.launch(gpu, "lm_adam", stride_grid(n), &args)
    }
}
