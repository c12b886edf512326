//! The classifier's device buffers: per LSTM layer the chunk arenas (X, Hs, Cs, Act of every
//! chunk of the batch, grown to fit) and one chunk's scratch (the other buffers of the
//! layer's plan, sized for bptt x batch); the head's activations and gradients [B, width];
//! the batch's ids and chunk table. All zeroed at allocation. The sizes the executor relies
//! on are checked against every plan step by tests/clas_on_cpu.rs.

use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, ValidAsZeroBits};

use super::chunks::Schedule;
use super::config::ClasConfig;
use super::kernels::NORM_BLOCKS;
use crate::device::Gpu;
use crate::error::{DriverContext, Result};
use crate::plan::Buf;

/// Device address of a whole slice.
pub(crate) fn addr<T>(gpu: &Gpu, s: &CudaSlice<T>) -> u64 {
    let (p, _no_event) = s.device_ptr(gpu.stream());
    p
}

/// Replaces `slot` by a zeroed allocation of `n` (at least 1) when it holds fewer.
pub(crate) fn grow<T: DeviceRepr + ValidAsZeroBits>(
    gpu: &Gpu,
    slot: &mut CudaSlice<T>,
    n: usize,
    what: &str,
) -> Result<()> {
    if slot.len() < n {
        *slot = alloc(gpu, n, what)?;
    }
    Ok(())
}

/// A zeroed device buffer of `n` (at least 1) elements; out of memory names `what` and the size.
pub(crate) fn alloc<T: DeviceRepr + ValidAsZeroBits>(gpu: &Gpu, n: usize, what: &str) -> Result<CudaSlice<T>> {
    let bytes = n.max(1) * std::mem::size_of::<T>();
    gpu.stream().alloc_zeros::<T>(n.max(1)).map_err(|e| {
        if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            crate::Error::OutOfMemory { what: what.to_string(), bytes }
        } else {
            crate::Error::Driver { op: format!("allocate {bytes} bytes for {what}"), source: e }
        }
    })
}

/// The plan buffers kept per chunk (the backward of a kept chunk reads them).
pub const ARENA: [Buf; 4] = [Buf::X, Buf::Hs, Buf::Cs, Buf::Act];

/// The plan buffers shared by every chunk: one chunk's worth, reused.
pub const SCRATCH: [Buf; 13] = [
    Buf::Xw,
    Buf::Hw,
    Buf::Dy,
    Buf::DhN,
    Buf::DcN,
    Buf::Dh,
    Buf::Dc,
    Buf::Dgates,
    Buf::Ones,
    Buf::Dx,
    Buf::DwIh,
    Buf::DwHh,
    Buf::Db,
];

/// One LSTM layer's buffers. The weights and biases live in the flat parameter buffer; the
/// initial state of chunk c is chunk c-1's last row of Hs / Cs (zeros for chunk 0).
pub(crate) struct ClasLayer {
    /// Input width I.
    pub i: usize,
    /// Hidden width H.
    pub h: usize,
    /// Arenas, indexed like [`ARENA`].
    pub arena: Vec<CudaSlice<f32>>,
    /// Scratch, indexed like [`SCRATCH`].
    pub scratch: Vec<CudaSlice<f32>>,
    /// W_hh after DropConnect [4H, H] (a copy when the dropout is off).
    pub whh: CudaSlice<f32>,
}

impl ClasLayer {
    /// Scratch for one chunk of bptt x batch rows of layer `l`; empty arenas.
    pub fn new(gpu: &Gpu, cfg: &ClasConfig, l: usize) -> Result<Self> {
        let d = cfg.layer_dims(l, cfg.bptt, cfg.batch);
        let mut scratch = Vec::with_capacity(SCRATCH.len());
        for buf in SCRATCH {
            scratch.push(gpu.alloc_zeros(buf.len(d), &format!("classifier layer {l} {buf:?} of {d:?}"))?);
        }
        let ones = vec![1.0f32; Buf::Ones.len(d)];
        let at = SCRATCH.iter().position(|&b| b == Buf::Ones).expect("Ones is scratch");
        gpu.stream().memcpy_htod(&ones, &mut scratch[at]).op("upload ones")?;
        let arena = (0..ARENA.len()).map(|_| alloc(gpu, 1, "arena")).collect::<Result<_>>()?;
        let whh = gpu.alloc_zeros(4 * d.h * d.h, &format!("classifier layer {l} masked W_hh"))?;
        Ok(ClasLayer { i: d.i, h: d.h, arena, scratch, whh })
    }

    /// Grows the arenas to hold every chunk of `s`.
    pub fn fit(&mut self, gpu: &Gpu, s: &Schedule, l: usize) -> Result<()> {
        for (k, buf) in ARENA.into_iter().enumerate() {
            let n = s.arena_len(buf, self.i, self.h);
            let what = format!("classifier layer {l} {buf:?} of {} chunks ({} tokens)", s.chunks.len(), s.tokens());
            grow(gpu, &mut self.arena[k], n, &what)?;
        }
        Ok(())
    }

    /// Address of element 0 of arena or scratch buffer `buf`.
    pub fn base(&self, gpu: &Gpu, buf: Buf) -> u64 {
        if let Some(k) = ARENA.iter().position(|&b| b == buf) {
            return addr(gpu, &self.arena[k]);
        }
        let k = SCRATCH.iter().position(|&b| b == buf).expect("every other plan buffer is scratch");
        addr(gpu, &self.scratch[k])
    }
}

/// The pooling, head, loss and optimizer buffers, for up to `batch` documents.
pub(crate) struct HeadBufs {
    /// Pooled features [B, 3E].
    pub pooled: CudaSlice<f32>,
    /// Step of each max [B, E].
    pub argmax: CudaSlice<i32>,
    /// BN 1: normalised input, output (dropped in place) [B, 3E]; 1 / std [3E].
    pub xhat1: CudaSlice<f32>,
    pub d1: CudaSlice<f32>,
    pub istd1: CudaSlice<f32>,
    /// Linear 1 output [B, F], after ReLU [B, F].
    pub z1: CudaSlice<f32>,
    pub r1: CudaSlice<f32>,
    /// BN 2: normalised input, output (dropped in place) [B, F]; 1 / std [F].
    pub xhat2: CudaSlice<f32>,
    pub d2: CudaSlice<f32>,
    pub istd2: CudaSlice<f32>,
    /// Logits [B, C]; dlogits in training, probabilities in eval [B, C].
    pub logits: CudaSlice<f32>,
    pub dlogits: CudaSlice<f32>,
    /// Per-row cross-entropy [B], mean [1].
    pub ce: CudaSlice<f32>,
    pub loss: CudaSlice<f32>,
    /// Gradients: w.r.t. the dropped BN 2 output, the ReLU output (then linear 1's output) [B, F].
    pub dd2: CudaSlice<f32>,
    pub dr1: CudaSlice<f32>,
    /// Gradients w.r.t. the dropped BN 1 output and the pooled features [B, 3E].
    pub dd1: CudaSlice<f32>,
    pub dpool: CudaSlice<f32>,
    /// Labels [B].
    pub labels: CudaSlice<u32>,
    /// Norm partial sums [NORM_BLOCKS], (norm, clip factor) [2].
    pub partial: CudaSlice<f32>,
    pub clip: CudaSlice<f32>,
    /// The mask counter [1].
    pub step: CudaSlice<u32>,
    /// Zeros [B * max(E, H)]: chunk 0's initial state.
    pub zeros: CudaSlice<f32>,
    /// The batch's ids (every chunk's [len, rows], concatenated), grown to fit.
    pub ids: CudaSlice<u32>,
    /// Chunk table: Hs offset of each chunk in the top layer's arena, its rows.
    pub hs_off: CudaSlice<i64>,
    pub rows: CudaSlice<i32>,
    /// Document lengths and first pooled steps [B].
    pub lens: CudaSlice<i32>,
    pub from: CudaSlice<i32>,
}

impl HeadBufs {
    /// Allocates everything for `cfg`.
    pub fn new(gpu: &Gpu, cfg: &ClasConfig) -> Result<Self> {
        let (b, e3, f, c) = (cfg.batch, 3 * cfg.emb, cfg.features, cfg.classes);
        let z = |n: usize, what: &str| gpu.alloc_zeros(n, &format!("classifier {what}"));
        Ok(HeadBufs {
            pooled: z(b * e3, "pooled features")?,
            argmax: alloc(gpu, b * cfg.emb, "pooling argmax")?,
            xhat1: z(b * e3, "BN 1 xhat")?,
            d1: z(b * e3, "BN 1 output")?,
            istd1: z(e3, "BN 1 inv std")?,
            z1: z(b * f, "linear 1 output")?,
            r1: z(b * f, "ReLU output")?,
            xhat2: z(b * f, "BN 2 xhat")?,
            d2: z(b * f, "BN 2 output")?,
            istd2: z(f, "BN 2 inv std")?,
            logits: z(b * c, "logits")?,
            dlogits: z(b * c, "dlogits")?,
            ce: z(b, "cross-entropy rows")?,
            loss: z(1, "loss")?,
            dd2: z(b * f, "BN 2 output gradient")?,
            dr1: z(b * f, "ReLU output gradient")?,
            dd1: z(b * e3, "BN 1 output gradient")?,
            dpool: z(b * e3, "pooled gradient")?,
            labels: alloc(gpu, b, "labels")?,
            partial: z(NORM_BLOCKS, "norm partial sums")?,
            clip: z(2, "clip")?,
            step: alloc(gpu, 1, "mask counter")?,
            zeros: z(b * cfg.emb.max(cfg.hidden), "zero state")?,
            ids: alloc(gpu, 1, "ids")?,
            hs_off: alloc(gpu, 1, "chunk Hs offsets")?,
            rows: alloc(gpu, 1, "chunk rows")?,
            lens: alloc(gpu, b, "document lengths")?,
            from: alloc(gpu, b, "pooling windows")?,
        })
    }
}
