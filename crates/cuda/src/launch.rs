//! One bundle of NVRTC-compiled kernels (`kernels/*.cu` sources concatenated) loaded into a
//! GPU's context, the single launch path that the LM's and the classifier's kernel wrappers
//! (`lm::kernels`, `clas::kernels`) go through, and the grid shapes they launch with.

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};

use crate::device::{compile_cached, ptx_arch, Gpu};
use crate::error::{DriverContext, Result};

/// Threads per block of the elementwise and row kernels.
pub const BLOCK: u32 = 256;
/// Most blocks of a grid-stride kernel (16 per SM of an H200 is plenty).
const MAX_BLOCKS: usize = 132 * 16;

/// Grid for a grid-stride loop over `n` elements: blocks of [`BLOCK`] threads.
pub fn stride_grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// `blocks` blocks of `threads`.
pub fn blocks(blocks: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// One kernel argument, by value.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A device address.
    Ptr(u64),
    /// `int`
    I32(i32),
    /// `long long`
    I64(i64),
    /// `unsigned int`
    U32(u32),
    /// `unsigned long long`
    U64(u64),
    /// `float`
    F32(f32),
}

/// The kernels `names` of one source bundle, loaded, looked up by name.
pub struct KernelSet {
    names: &'static [&'static str],
    funcs: Vec<CudaFunction>,
}

impl KernelSet {
    /// Compiles `source` for `gpu` (once per process, cached under `file`, the name errors
    /// give) and loads the kernels `names` from it.
    pub fn load(gpu: &Gpu, file: &'static str, source: &str, names: &'static [&'static str]) -> Result<Self> {
        let (major, minor) = gpu.stream().context().compute_capability().op("compute capability")?;
        let ptx = compile_cached(file, source, &ptx_arch(major, minor))?;
        let module = gpu.stream().context().load_module(ptx).op(&format!("load {file} PTX"))?;
        let funcs =
            names.iter().map(|name| module.load_function(name).op(&format!("load {name}"))).collect::<Result<_>>()?;
        Ok(KernelSet { names, funcs })
    }

    /// Launches kernel `name` on `gpu`'s stream with `args` in the kernel's parameter order.
    /// Each wrapper that calls this passes the arguments in the order and with the types of
    /// the kernel's signature, and addresses of live device buffers at least as long as the
    /// kernel's header comment says.
    pub fn launch(&self, gpu: &Gpu, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        let k = self.names.iter().position(|n| *n == name).expect("kernel name is in the set's names");
        let mut lb = gpu.stream().launch_builder(&self.funcs[k]);
        for a in args {
            match a {
                Arg::Ptr(v) | Arg::U64(v) => lb.arg(v),
                Arg::I32(v) => lb.arg(v),
                Arg::I64(v) => lb.arg(v),
                Arg::U32(v) => lb.arg(v),
                Arg::F32(v) => lb.arg(v),
            };
        }
        // SAFETY: see above: the calling wrapper matches the kernel's signature and passes
        // live buffers of the sizes its header comment names.
        unsafe { lb.launch(cfg) }.map(|_| ()).op(name)
    }
}
