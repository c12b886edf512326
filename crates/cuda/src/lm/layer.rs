//! One LSTM layer of the LM: the fused layer's step lists (`crate::plan`) run on a pointer
//! table in which the weights and their gradients are slices of the model's flat parameter
//! and gradient buffers, W_hh is the DropConnect-masked copy, and everything else is owned.
//!
//! Checked with the whole step against `super::reference` by tests/lm_vs_ref.rs; the layer
//! itself is the one tests/lstm_vs_ref.rs checks (same plans, same executor).

use cudarc::driver::{CudaSlice, DevicePtr};
use ulmfit_lstm::LstmDims;

use crate::device::Gpu;
use crate::error::Result;
use crate::lstm::enqueue_step;
use crate::plan::{backward_plan, check_bounds, forward_plan, Buf, Step};

/// Device address of a whole slice.
pub(crate) fn addr<T>(gpu: &Gpu, s: &CudaSlice<T>) -> u64 {
    let (p, _no_event) = s.device_ptr(gpu.stream());
    p
}

/// Address of element `off` of the f32 buffer at `base`.
pub(crate) fn at(base: u64, off: usize) -> u64 {
    base + (off * std::mem::size_of::<f32>()) as u64
}

/// Where a layer's weights and gradients live: addresses of the flat buffers and the
/// offsets (w_ih, w_hh, b_ih, b_hh) of this layer in them.
pub(crate) struct Shared {
    pub params: u64,
    pub grads: u64,
    pub offs: [usize; 4],
    /// A row of at least T*B ones.
    pub ones: u64,
}

/// A layer's plans and its pointer table.
pub(crate) struct LmLayer {
    pub d: LstmDims,
    fwd: Vec<Step>,
    bwd: Vec<Step>,
    /// Base address of every [`Buf`], indexed by `buf as usize`.
    base: [u64; Buf::ALL.len()],
    /// The buffers this layer owns (kept alive; the table points into them).
    _owned: Vec<CudaSlice<f32>>,
}

impl LmLayer {
    /// Allocates the owned buffers (zeroed: the carried state starts at 0) and builds the table.
    pub fn new(gpu: &Gpu, d: LstmDims, s: &Shared) -> Result<Self> {
        let (fwd, bwd) = (forward_plan(d), backward_plan(d));
        check_bounds(d, &fwd);
        check_bounds(d, &bwd);
        let [w_ih, w_hh, b_ih, b_hh] = s.offs;
        let mut base = [0u64; Buf::ALL.len()];
        let mut owned = Vec::new();
        for buf in Buf::ALL {
            base[buf as usize] = match buf {
                Buf::WIh => at(s.params, w_ih),
                Buf::BIh => at(s.params, b_ih),
                Buf::BHh => at(s.params, b_hh),
                Buf::DwIh => at(s.grads, w_ih),
                // The plan's dW_hh is w.r.t. the masked copy; the model masks it in place.
                Buf::DwHh => at(s.grads, w_hh),
                // One bias gradient; the model copies it to b_hh's slot.
                Buf::Db => at(s.grads, b_ih),
                Buf::Ones => s.ones,
                _ => {
                    let slice = gpu.alloc_zeros(buf.len(d), &format!("LM LSTM buffer {buf:?} of {d:?}"))?;
                    let a = addr(gpu, &slice);
                    owned.push(slice);
                    a
                }
            };
        }
        Ok(LmLayer { d, fwd, bwd, base, _owned: owned })
    }

    /// Address of element `off` of `buf`.
    pub fn ptr(&self, buf: Buf, off: usize) -> u64 {
        at(self.base[buf as usize], off)
    }

    /// Queues the forward: x (Buf::X) -> hs, cs, act, from h0, c0 (Buf::H0, C0).
    pub fn forward(&self, gpu: &Gpu) -> Result<()> {
        self.fwd.iter().try_for_each(|s| enqueue_step(gpu, self.d, s, &|b, o| self.ptr(b, o)))
    }

    /// Queues the backward from dy (Buf::Dy): gradients into the flat buffer, dx into Buf::Dx.
    pub fn backward(&self, gpu: &Gpu) -> Result<()> {
        self.bwd.iter().try_for_each(|s| enqueue_step(gpu, self.d, s, &|b, o| self.ptr(b, o)))
    }
}
