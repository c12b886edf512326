//! One LSTM layer on the GPU: runs the step lists of [`crate::plan`] on device buffers,
//! directly or replayed from CUDA graphs captured once.
//!
//! Checked against `ulmfit_lstm::reference::{forward, backward}` by `tests/lstm_vs_ref.rs`
//! (FP32 within 1e-4 relative; TF32 looser). Dimensions: T steps, B batch, I input, H hidden.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaFunction, CudaGraph, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use ulmfit_lstm::{LstmDims, LstmGrads, LstmOutput, LstmParams};

use crate::device::Gpu;
use crate::error::{DriverContext, Error, Result};
use crate::plan::{backward_plan, check_bounds, forward_plan, Buf, Gemm, Step};

/// Threads per block of the cell kernels.
const CELL_BLOCK: u32 = 256;

/// A layer's weights, activations and gradients on one GPU, with its two step lists.
pub struct LstmCuda<'g> {
    gpu: &'g Gpu,
    d: LstmDims,
    /// One allocation per [`Buf`], indexed by `buf as usize`.
    bufs: Vec<CudaSlice<f32>>,
    fwd: Vec<Step>,
    bwd: Vec<Step>,
    /// Forward and backward captured as CUDA graphs, once [`LstmCuda::capture_graphs`] ran.
    graphs: Option<(CudaGraph, CudaGraph)>,
}

fn check_len(op: &'static str, what: &'static str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Shape { op, what, got, want })
    }
}

impl<'g> LstmCuda<'g> {
    /// Allocates every buffer for dims `d` and uploads the weights `p`.
    pub fn new(gpu: &'g Gpu, d: LstmDims, p: &LstmParams) -> Result<Self> {
        if [d.t, d.b, d.i, d.h].contains(&0) {
            return Err(Error::EmptyDims(d));
        }
        let mut bufs = Vec::with_capacity(Buf::ALL.len());
        for buf in Buf::ALL {
            debug_assert_eq!(bufs.len(), buf as usize, "Buf::ALL is in declaration order");
            bufs.push(gpu.alloc_zeros(buf.len(d), &format!("LSTM buffer {buf:?} of {d:?}"))?);
        }
        let (fwd, bwd) = (forward_plan(d), backward_plan(d));
        check_bounds(d, &fwd);
        check_bounds(d, &bwd);
        let mut layer = LstmCuda { gpu, d, bufs, fwd, bwd, graphs: None };
        layer.upload(Buf::WIh, "w_ih", p.w_ih)?;
        layer.upload(Buf::WHh, "w_hh", p.w_hh)?;
        layer.upload(Buf::BIh, "b_ih", p.b_ih)?;
        layer.upload(Buf::BHh, "b_hh", p.b_hh)?;
        layer.upload(Buf::Ones, "ones", &vec![1.0; d.t * d.b])?;
        Ok(layer)
    }

    /// The layer's dims.
    pub fn dims(&self) -> LstmDims {
        self.d
    }

    /// Copies `data` into the whole of `buf`, checking its length.
    fn upload(&mut self, buf: Buf, what: &'static str, data: &[f32]) -> Result<()> {
        check_len("LstmCuda upload", what, data.len(), buf.len(self.d))?;
        let stream = self.gpu.stream().clone();
        stream.memcpy_htod(data, &mut self.bufs[buf as usize]).op(what)
    }

    /// Copies `len` elements of `buf` from `off` to the host (waits for the stream).
    fn download(&self, buf: Buf, off: usize, len: usize) -> Result<Vec<f32>> {
        let view = self.bufs[buf as usize].slice(off..off + len);
        let host = self.gpu.stream().clone_dtoh(&view).op(&format!("download {buf:?}"))?;
        self.gpu.sync(&format!("download {buf:?}"))?;
        Ok(host)
    }

    /// Sets the input sequence x [T, B, I] and initial states h0, c0 [B, H].
    pub fn set_input(&mut self, x: &[f32], h0: &[f32], c0: &[f32]) -> Result<()> {
        self.upload(Buf::X, "x", x)?;
        self.upload(Buf::H0, "h0", h0)?;
        self.upload(Buf::C0, "c0", c0)
    }

    /// Sets dL/dy [T, B, H] and the optional dL/dh_n, dL/dc_n [B, H] (zeros when None).
    pub fn set_output_grad(&mut self, dy: &[f32], dh_n: Option<&[f32]>, dc_n: Option<&[f32]>) -> Result<()> {
        let zeros = vec![0.0; self.d.b * self.d.h];
        self.upload(Buf::Dy, "dy", dy)?;
        self.upload(Buf::DhN, "dh_n", dh_n.unwrap_or(&zeros))?;
        self.upload(Buf::DcN, "dc_n", dc_n.unwrap_or(&zeros))
    }

    /// Queues the forward pass on the stream (no host sync).
    pub fn run_forward(&self) -> Result<()> {
        match &self.graphs {
            Some((fwd, _)) => fwd.launch().op("launch forward graph"),
            None => self.fwd.iter().try_for_each(|s| self.enqueue(s)),
        }
    }

    /// Queues the backward pass; needs the activations of the last [`LstmCuda::run_forward`].
    pub fn run_backward(&self) -> Result<()> {
        match &self.graphs {
            Some((_, bwd)) => bwd.launch().op("launch backward graph"),
            None => self.bwd.iter().try_for_each(|s| self.enqueue(s)),
        }
    }

    /// Forward over `x` from (h0, c0); returns y, h_n, c_n like the reference.
    pub fn forward(&mut self, x: &[f32], h0: &[f32], c0: &[f32]) -> Result<LstmOutput> {
        self.set_input(x, h0, c0)?;
        self.run_forward()?;
        let (bh, t) = (self.d.b * self.d.h, self.d.t);
        Ok(LstmOutput {
            y: self.download(Buf::Hs, bh, t * bh)?,
            h_n: self.download(Buf::Hs, t * bh, bh)?,
            c_n: self.download(Buf::Cs, t * bh, bh)?,
        })
    }

    /// Backward of the last forward given dL/dy and optional dL/dh_n, dL/dc_n.
    pub fn backward(&mut self, dy: &[f32], dh_n: Option<&[f32]>, dc_n: Option<&[f32]>) -> Result<LstmGrads> {
        self.set_output_grad(dy, dh_n, dc_n)?;
        self.run_backward()?;
        let len = |b: Buf| b.len(self.d);
        let db = self.download(Buf::Db, 0, len(Buf::Db))?;
        Ok(LstmGrads {
            dx: self.download(Buf::Dx, 0, len(Buf::Dx))?,
            dh0: self.download(Buf::Dh, 0, len(Buf::Dh))?,
            dc0: self.download(Buf::Dc, 0, len(Buf::Dc))?,
            dw_ih: self.download(Buf::DwIh, 0, len(Buf::DwIh))?,
            dw_hh: self.download(Buf::DwHh, 0, len(Buf::DwHh))?,
            db_ih: db.clone(),
            db_hh: db,
        })
    }

    /// Captures the forward and backward step lists into CUDA graphs; from then on
    /// `run_forward` / `run_backward` replay them (one launch each instead of ~2T).
    /// Runs each list once first, so that lazily loaded cuBLAS kernels and their heuristics
    /// are set up outside the capture (the outputs are recomputed by every replay).
    pub fn capture_graphs(&mut self) -> Result<()> {
        self.graphs = None;
        self.run_forward()?;
        self.run_backward()?;
        let fwd = self.capture(&self.fwd)?;
        let bwd = self.capture(&self.bwd)?;
        self.graphs = Some((fwd, bwd));
        Ok(())
    }

    /// Captures only the forward and backward steps of one kind (see `Step::kind`) as one
    /// graph, so the bench can time the parts of a pass. The result of replaying it is
    /// meaningless; the work is the same as in the full pass.
    pub fn capture_kind(&self, kind: &str) -> Result<CudaGraph> {
        let part: Vec<Step> = self.fwd.iter().chain(&self.bwd).filter(|s| s.kind() == kind).copied().collect();
        self.capture(&part)
    }

    fn capture(&self, plan: &[Step]) -> Result<CudaGraph> {
        capture(self.gpu, || plan.iter().try_for_each(|s| self.enqueue(s)))
    }

    /// Raw device address of element `off` of `buf`.
    fn ptr(&self, buf: Buf, off: usize) -> u64 {
        let (p, _no_event) = self.bufs[buf as usize].device_ptr(self.gpu.stream());
        p + (off * std::mem::size_of::<f32>()) as u64
    }

    fn enqueue(&self, step: &Step) -> Result<()> {
        enqueue_step(self.gpu, self.d, step, &|buf, off| self.ptr(buf, off))
    }
}

/// Captures everything `queue` puts on the GPU's stream into one CUDA graph (uploaded,
/// ready to launch). The capture is ended even when `queue` fails.
pub(crate) fn capture(gpu: &Gpu, queue: impl FnOnce() -> Result<()>) -> Result<CudaGraph> {
    let stream = gpu.stream();
    gpu.sync("before graph capture")?;
    stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED).op("begin graph capture")?;
    let queued = queue();
    let graph = stream.end_capture(CUgraphInstantiate_flags(0));
    queued?;
    let graph = graph.op("end graph capture")?.ok_or_else(|| Error::Driver {
        op: "end graph capture (empty graph)".to_string(),
        source: cudarc::driver::DriverError(cudarc::driver::sys::CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED),
    })?;
    graph.upload().op("upload graph")?;
    Ok(graph)
}

/// Queues one step of a layer plan; `ptr(buf, off)` is the device address of element
/// `off` of `buf` (the caller checked the plan with `check_bounds`).
pub(crate) fn enqueue_step(gpu: &Gpu, d: LstmDims, step: &Step, ptr: &dyn Fn(Buf, usize) -> u64) -> Result<()> {
    match *step {
        Step::Gemm(g) => sgemm(gpu, &g, ptr),
        // (xw, hw, b_ih, b_hh, hs, cs, act, t, B, H)
        Step::CellFwd { t } => {
            let args = [Buf::Xw, Buf::Hw, Buf::BIh, Buf::BHh, Buf::Hs, Buf::Cs, Buf::Act];
            let ptrs = args.map(|b| ptr(b, 0));
            launch_cell(gpu, &gpu.lstm.cell_fwd, "lstm_cell_fwd", &ptrs, t, d)
        }
        // (dy, dh, dc, cs, act, dgates, t, B, H)
        Step::CellBwd { t } => {
            let args = [Buf::Dy, Buf::Dh, Buf::Dc, Buf::Cs, Buf::Act, Buf::Dgates];
            let ptrs = args.map(|b| ptr(b, 0));
            launch_cell(gpu, &gpu.lstm.cell_bwd, "lstm_cell_bwd", &ptrs, t, d)
        }
        Step::Copy { src, dst, off, len } => {
            copy_dtod(gpu, ptr(dst, off), ptr(src, 0), len).map_err(|e| with_op(e, &format!("copy {src:?} -> {dst:?}")))
        }
    }
}

/// Renames the operation of a driver error.
fn with_op(e: Error, op: &str) -> Error {
    match e {
        Error::Driver { source, .. } => Error::Driver { op: op.to_string(), source },
        other => other,
    }
}

/// Queues a device copy of `len` f32 from address `src` to address `dst`.
pub(crate) fn copy_dtod(gpu: &Gpu, dst: u64, src: u64, len: usize) -> Result<()> {
    // SAFETY: the callers pass addresses of live allocations holding `len` f32 each.
    unsafe {
        cudarc::driver::result::memcpy_dtod_async(dst, src, len * std::mem::size_of::<f32>(), gpu.stream().cu_stream())
    }
    .op("copy dtod")
}

/// Queues one cuBLAS SGEMM; see `Gemm::col_major` for the row-major to column-major
/// mapping. `ptr` resolves (buffer, element offset) to a device address.
pub(crate) fn sgemm<B: Copy + std::fmt::Debug>(gpu: &Gpu, g: &Gemm<B>, ptr: &dyn Fn(B, usize) -> u64) -> Result<()> {
    let cm = g.col_major();
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let (alpha, beta) = (1.0f32, 0.0f32);
    // SAFETY: the callers checked every operand inside its buffer; alpha and beta are
    // host scalars read during the call (also when captured into a graph).
    unsafe {
        cudarc::cublas::result::sgemm(
            *gpu.blas().handle(),
            op(cm.transa),
            op(cm.transb),
            cm.m as i32,
            cm.n as i32,
            cm.k as i32,
            &alpha,
            ptr(cm.a.buf, cm.a.off) as *const f32,
            cm.lda as i32,
            ptr(cm.b.buf, cm.b.off) as *const f32,
            cm.ldb as i32,
            &beta,
            ptr(cm.c.buf, cm.c.off) as *mut f32,
            cm.ldc as i32,
        )
    }
    .op(&format!("sgemm {:?} = {:?} . {:?}", g.c.buf, g.a.buf, g.b.buf))
}

/// Launches a cell kernel over B*H threads: pointer arguments `ptrs`, then int t, B, H.
fn launch_cell(gpu: &Gpu, func: &CudaFunction, name: &str, ptrs: &[u64], t: usize, d: LstmDims) -> Result<()> {
    let n = (d.b * d.h) as u32;
    let cfg =
        LaunchConfig { grid_dim: (n.div_ceil(CELL_BLOCK), 1, 1), block_dim: (CELL_BLOCK, 1, 1), shared_mem_bytes: 0 };
    let (t, b, h) = (t as i32, d.b as i32, d.h as i32);
    let mut lb = gpu.stream().launch_builder(func);
    for p in ptrs {
        lb.arg(p);
    }
    lb.arg(&t).arg(&b).arg(&h);
    // SAFETY: argument order and types match the kernel's signature in
    // kernels/lstm_cell.cu: whole buffers sized by Buf::len, then int t, B, H; the
    // grid covers the B*H threads the kernel indexes and bounds-checks.
    unsafe { lb.launch(cfg) }.map(|_| ()).op(name)
}
