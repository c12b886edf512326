//! The GPU handle: driver probe, one context with ONE stream, cuBLAS, and the kernel cache.
//!
//! cudarc loads libcuda, libnvrtc and libcublas at run time (`dynamic-loading`) and panics
//! when one is missing, so [`Gpu::new`] first `dlopen`s `libcuda.so.1` itself and runs the
//! rest of the set-up under `catch_unwind`: no driver is a clean [`Error::NoDriver`].
//! Event tracking is off and everything runs on the one stream, so cudarc adds no event
//! record/wait per launch (docs/gpu.md) and the stream can be captured into a CUDA graph.
//! Kernel files are compiled by NVRTC once per process; the PTX is cached here.

use std::sync::{Arc, Mutex};

use cudarc::cublas::{sys as cublas_sys, CudaBlas};
use cudarc::driver::{sys as cuda_sys, CudaContext, CudaFunction, CudaSlice, CudaStream};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

use crate::error::{DriverContext, Error, Result};

/// The kernel source files, embedded at build time.
const LSTM_CELL_CU: &str = include_str!("../../../kernels/lstm_cell.cu");

/// cuBLAS workspace set on the handle, so a GEMM inside graph capture never allocates
/// (32 MiB is what cuBLAS documents for Hopper).
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// PTX per (file, arch), compiled once per process.
static PTX_CACHE: Mutex<Vec<(&'static str, String, Ptx)>> = Mutex::new(Vec::new());

/// The kernels of `kernels/lstm_cell.cu`, loaded into this context.
pub struct LstmKernels {
    /// `lstm_cell_fwd`
    pub cell_fwd: CudaFunction,
    /// `lstm_cell_bwd`
    pub cell_bwd: CudaFunction,
}

/// One GPU: context, its single stream, a cuBLAS handle bound to that stream, and kernels.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// Keeps the cuBLAS workspace alive as long as the handle.
    _workspace: CudaSlice<u8>,
    /// Loaded LSTM cell kernels.
    pub lstm: LstmKernels,
    name: String,
    tf32: bool,
}

/// Checks that the CUDA driver library `lib` can be loaded (e.g. "libcuda.so.1").
pub fn probe_driver(lib: &str) -> Result<()> {
    // SAFETY: loading the driver runs only its own initialisers. The handle is leaked on
    // purpose: cudarc opens the same library again and it must stay mapped.
    match unsafe { libloading::Library::new(lib) } {
        Ok(handle) => {
            std::mem::forget(handle);
            Ok(())
        }
        Err(e) => Err(Error::NoDriver(format!("cannot load {lib}: {e}"))),
    }
}

/// The PTX architecture for compute capability (major, minor): compute_90 on Hopper and
/// newer (PTX is forward compatible), the device's own below that.
pub fn ptx_arch(major: i32, minor: i32) -> String {
    if major >= 9 {
        "compute_90".to_string()
    } else {
        format!("compute_{major}{minor}")
    }
}

/// Compiles `src` (named `file`) to PTX for `arch`, or returns the cached PTX.
pub fn compile_cached(file: &'static str, src: &str, arch: &str) -> Result<Ptx> {
    let mut cache = PTX_CACHE.lock().expect("PTX cache lock poisoned");
    if let Some((_, _, ptx)) = cache.iter().find(|(f, a, _)| *f == file && a == arch) {
        return Ok(ptx.clone());
    }
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}")],
        name: Some(file.to_string()),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| Error::Compile {
        file,
        arch: arch.to_string(),
        log: match e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        },
    })?;
    cache.push((file, arch.to_string(), ptx.clone()));
    Ok(ptx)
}

/// Turns a panic payload from cudarc (missing library or symbol) into text.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p.downcast::<&str>().map(|s| s.to_string()).unwrap_or_else(|_| "unknown panic".to_string()),
    }
}

impl Gpu {
    /// Opens GPU 0. `tf32` lets cuBLAS use TF32 tensor cores for FP32 GEMMs.
    /// Without a driver or GPU this is [`Error::NoDriver`], never a panic.
    pub fn new(tf32: bool) -> Result<Gpu> {
        probe_driver("libcuda.so.1")?;
        std::panic::catch_unwind(|| Gpu::open(tf32))
            .unwrap_or_else(|p| Err(Error::NoDriver(format!("a CUDA library failed to load: {}", panic_text(p)))))
    }

    fn open(tf32: bool) -> Result<Gpu> {
        let ctx = CudaContext::new(0).map_err(|e| Error::NoDriver(format!("libcuda loaded but no usable GPU: {e}")))?;
        // SAFETY: this handle uses one stream only, so no cross-stream tracking is needed.
        unsafe { ctx.disable_event_tracking() };
        // A created stream, not the legacy default one: only those can be graph-captured.
        let stream = ctx.new_stream().op("create stream")?;
        let blas = CudaBlas::new(stream.clone()).op("create cuBLAS handle")?;
        let mut workspace = alloc_bytes(&stream, CUBLAS_WORKSPACE_BYTES, "cuBLAS workspace")?;
        {
            use cudarc::driver::DevicePtrMut;
            let (ptr, _sync) = workspace.device_ptr_mut(&stream);
            // SAFETY: ptr is a live allocation of CUBLAS_WORKSPACE_BYTES bytes owned by self.
            unsafe {
                cublas_sys::cublasSetWorkspace_v2(*blas.handle(), ptr as *mut std::ffi::c_void, CUBLAS_WORKSPACE_BYTES)
                    .result()
            }
            .op("cublasSetWorkspace")?;
        }
        let mode = if tf32 {
            cublas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            cublas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: the handle is valid for the life of `blas`.
        unsafe { cublas_sys::cublasSetMathMode(*blas.handle(), mode).result() }.op("cublasSetMathMode")?;
        let (major, minor) = ctx.compute_capability().op("compute capability")?;
        let arch = ptx_arch(major, minor);
        let ptx = compile_cached("kernels/lstm_cell.cu", LSTM_CELL_CU, &arch)?;
        let module = ctx.load_module(ptx).op("load kernels/lstm_cell.cu PTX")?;
        let lstm = LstmKernels {
            cell_fwd: module.load_function("lstm_cell_fwd").op("load lstm_cell_fwd")?,
            cell_bwd: module.load_function("lstm_cell_bwd").op("load lstm_cell_bwd")?,
        };
        let name = ctx.name().op("device name")?;
        Ok(Gpu { ctx, stream, blas, _workspace: workspace, lstm, name, tf32 })
    }

    /// The device name, e.g. "NVIDIA H200".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether cuBLAS may use TF32 tensor cores.
    pub fn tf32(&self) -> bool {
        self.tf32
    }

    /// The one stream all work goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The cuBLAS handle (bound to [`Gpu::stream`]).
    pub fn blas(&self) -> &CudaBlas {
        &self.blas
    }

    /// Total device memory in bytes.
    pub fn total_mem(&self) -> Result<usize> {
        self.ctx.total_mem().op("total memory")
    }

    /// Allocates `n` zeroed f32 on the device; out of memory names `what` and the size.
    pub fn alloc_zeros(&self, n: usize, what: &str) -> Result<CudaSlice<f32>> {
        let bytes = n * std::mem::size_of::<f32>();
        self.stream.alloc_zeros::<f32>(n).map_err(|e| alloc_error(e, what, bytes))
    }

    /// Waits for all queued work and reports any error recorded asynchronously.
    pub fn sync(&self, op: &str) -> Result<()> {
        self.stream.synchronize().op(op)?;
        self.ctx.check_err().op(op)
    }
}

fn alloc_error(e: cudarc::driver::DriverError, what: &str, bytes: usize) -> Error {
    if e.0 == cuda_sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        Error::OutOfMemory { what: what.to_string(), bytes }
    } else {
        Error::Driver { op: format!("allocate {bytes} bytes for {what}"), source: e }
    }
}

fn alloc_bytes(stream: &Arc<CudaStream>, bytes: usize, what: &str) -> Result<CudaSlice<u8>> {
    stream.alloc_zeros::<u8>(bytes).map_err(|e| alloc_error(e, what, bytes))
}

/// For tests: the GPU (TF32 as asked), or `None` after one printed `skip:` line when there is
/// no CUDA driver. With `ULMFIT_REQUIRE_GPU=1` a missing GPU panics instead; a driver that is
/// present but fails to initialise always panics.
pub fn gpu_or_skip(test: &str, tf32: bool) -> Option<Gpu> {
    match Gpu::new(tf32) {
        Ok(gpu) => {
            println!("{test}: running on {} (tf32 {tf32})", gpu.name());
            Some(gpu)
        }
        Err(e @ Error::NoDriver(_)) => {
            if std::env::var("ULMFIT_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: ULMFIT_REQUIRE_GPU=1 but the GPU is unavailable: {e}");
            }
            println!("skip: no CUDA driver ({test}: {e})");
            None
        }
        Err(e) => panic!("{test}: the GPU is present but failed to initialise: {e}"),
    }
}
