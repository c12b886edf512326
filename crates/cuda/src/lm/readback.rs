//! Host copies out of (and state into) [`LmCuda`]: loss, parameters, gradients, Adam
//! moments, the clip result and the carried state. Each waits for the stream; the step
//! itself never calls these except `loss`.

use cudarc::driver::CudaSlice;

use super::model::LmCuda;
use super::params::LmWeights;
use super::reference::State;
use super::steps::{At, LmBuf};
use crate::error::{DriverContext, Result};
use crate::plan::Buf;

impl LmCuda<'_> {
    pub(super) fn download(&self, s: &CudaSlice<f32>, what: &str) -> Result<Vec<f32>> {
        let v = self.gpu.stream().clone_dtoh(s).op(what)?;
        self.gpu.sync(what)?;
        Ok(v)
    }

    pub(super) fn download_u32(&self, s: &CudaSlice<u32>) -> Result<Vec<u32>> {
        let v = self.gpu.stream().clone_dtoh(s).op("download step counter")?;
        self.gpu.sync("download step counter")?;
        Ok(v)
    }

    /// [total, cross-entropy, alpha AR, beta TAR] of the last forward (waits for the stream).
    pub fn loss(&self) -> Result<[f32; 4]> {
        let v = self.download(&self.b.loss, "download loss")?;
        Ok([v[0], v[1], v[2], v[3]])
    }

    /// The optimizer steps taken (forward+backward passes queued and run).
    pub fn step_count(&self) -> Result<u32> {
        Ok(self.download_u32(&self.b.step)?[0])
    }

    /// The tensors of a flat device buffer (`Layout::from_flat`).
    fn unflat(&self, flat: &[f32]) -> LmWeights {
        let mut w = LmWeights::zeros(&self.cfg);
        self.layout.from_flat(flat, &mut w);
        w
    }

    /// The parameters now.
    pub fn weights(&self) -> Result<LmWeights> {
        Ok(self.unflat(&self.download(&self.b.params, "download parameters")?))
    }

    /// The gradients of the last backward (before clipping).
    pub fn grads(&self) -> Result<LmWeights> {
        Ok(self.unflat(&self.download(&self.b.grads, "download gradients")?))
    }

    /// Adam moments (m, v), each [P] in `LmWeights::flatten` order.
    pub fn moments(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            self.unflat(&self.download(&self.b.adam_m, "download Adam m")?).flatten(),
            self.unflat(&self.download(&self.b.adam_v, "download Adam v")?).flatten(),
        ))
    }

    /// Replaces the Adam moments (m, v), each [P] in `LmWeights::flatten` order (e.g. the
    /// moments a CPU optimizer kept, so training continues where it stopped).
    pub fn set_moments(&mut self, m: &[f32], v: &[f32]) -> std::result::Result<(), super::LmError> {
        let mut w = LmWeights::zeros(&self.cfg);
        for (host, what) in [(m, "Adam m"), (v, "Adam v")] {
            if host.len() != w.len() {
                let (got, want) = (host.len(), w.len());
                return Err(super::LmError::Config(format!("{what} has {got} values for {want} parameters")));
            }
        }
        w.unflatten(m);
        let m = self.layout.to_flat(&w);
        w.unflatten(v);
        let v = self.layout.to_flat(&w);
        let s = self.gpu.stream();
        s.memcpy_htod(&m, &mut self.b.adam_m).op("upload Adam m")?;
        s.memcpy_htod(&v, &mut self.b.adam_v).op("upload Adam v")?;
        Ok(self.gpu.sync("upload Adam moments")?)
    }

    /// Sets the step counter (the mask counter, and the base of each group's Adam count),
    /// e.g. to continue a stage where a saved run stopped.
    pub fn set_step_count(&mut self, steps: u32) -> Result<()> {
        self.gpu.stream().memcpy_htod(&[steps], &mut self.b.step).op("upload step counter")?;
        self.gpu.sync("upload step counter")
    }

    /// (gradient norm, clip factor) of the last update.
    pub fn clip(&self) -> Result<(f32, f32)> {
        let v = self.download(&self.b.clip, "download clip")?;
        Ok((v[0], v[1]))
    }

    /// The carried (h, c) of every layer.
    pub fn state(&self) -> Result<State> {
        let mut out = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let n = layer.d.b * layer.d.h;
            let get = |buf: Buf| -> Result<Vec<f32>> {
                let mut host = vec![0.0f32; n];
                // SAFETY: the address is element 0 of a live [B, H] buffer of this layer.
                unsafe {
                    cudarc::driver::result::memcpy_dtoh_async(
                        &mut host,
                        self.ptr(At { buf: LmBuf::Layer(l, buf), off: 0 }),
                        self.gpu.stream().cu_stream(),
                    )
                }
                .op("download state")?;
                self.gpu.sync("download state")?;
                Ok(host)
            };
            out.push((get(Buf::H0)?, get(Buf::C0)?));
        }
        Ok(out)
    }

    /// Replaces the carried state (e.g. zeros at the start of an epoch).
    pub fn set_state(&mut self, state: &State) -> Result<()> {
        for (l, (layer, (h, c))) in self.layers.iter().zip(state).enumerate() {
            for (buf, host) in [(Buf::H0, h), (Buf::C0, c)] {
                assert_eq!(host.len(), layer.d.b * layer.d.h, "LmCuda::set_state: {buf:?} of {:?}", layer.d);
                // SAFETY: element 0 of a live [B, H] buffer; the host slice has B*H elements
                // and outlives the copy (synchronised below).
                unsafe {
                    cudarc::driver::result::memcpy_htod_async(
                        self.ptr(At { buf: LmBuf::Layer(l, buf), off: 0 }),
                        host,
                        self.gpu.stream().cu_stream(),
                    )
                }
                .op("upload state")?;
            }
        }
        self.gpu.sync("upload state")
    }
}
