//! One bundle of NVRTC-compiled kernels (`kernels/*.cu` sources concatenated) loaded into a
//! GPU's context, and the single launch path that every kernel wrapper (`lm::kernels`,
//! `clas::kernels`) goes through.

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};

use crate::device::{compile_cached, ptx_arch, Gpu};
use crate::error::{DriverContext, Result};

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
    /// Compiles `source` (once per process, cached under `file`) for `gpu` and loads `names`.
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
