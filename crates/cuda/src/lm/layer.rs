//! The device buffers an LSTM layer of the LM owns: those of its plan's buffers that
//! `super::steps::layer_at` does not place in the flat parameter and gradient buffers
//! (input x, state h0/c0, the DropConnect-masked W_hh, activations, gradients w.r.t.
//! activations). Zeroed at allocation, so the carried state starts at 0.

use cudarc::driver::{CudaSlice, DevicePtr};
use ulmfit_lstm::LstmDims;

use super::params::Layout;
use super::steps::{layer_at, LmBuf};
use crate::device::Gpu;
use crate::error::Result;
use crate::plan::Buf;

/// Device address of a whole slice.
pub(crate) fn addr<T>(gpu: &Gpu, s: &CudaSlice<T>) -> u64 {
    let (p, _no_event) = s.device_ptr(gpu.stream());
    p
}

/// One layer's owned buffers, indexed by `Buf as usize` (None: lives in a flat buffer).
pub(crate) struct LmLayer {
    pub d: LstmDims,
    owned: Vec<Option<CudaSlice<f32>>>,
}

impl LmLayer {
    /// Allocates the buffers layer `l` (dims `d`) owns.
    pub fn new(gpu: &Gpu, d: LstmDims, l: usize, layout: &Layout) -> Result<Self> {
        let mut owned = Vec::with_capacity(Buf::ALL.len());
        for buf in Buf::ALL {
            owned.push(if layer_at(layout, l, buf, 0).buf == LmBuf::Layer(l, buf) {
                let what = format!("LM layer {l} buffer {buf:?} of {d:?}");
                Some(gpu.alloc_zeros(buf.len(d), &what)?)
            } else {
                None
            });
        }
        Ok(LmLayer { d, owned })
    }

    /// Address of owned buffer `buf`.
    pub fn base(&self, gpu: &Gpu, buf: Buf) -> u64 {
        let slice = self.owned[buf as usize].as_ref();
        addr(gpu, slice.expect("steps::layer_at maps only owned buffers to LmBuf::Layer"))
    }
}
