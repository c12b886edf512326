//! The bench's time breakdown of the LM step: the op lists of `super::steps` cut into named
//! phases (embedding, each LSTM layer forward and backward, decoder GEMMs, softmax and
//! cross-entropy, bias gradient, embedding scatter, clip + Adam), each captured as its own
//! CUDA graph and replayed in step order with CUDA events between them.
//!
//! Timing only: the phases run the same ops as the step, so the model trains on as usual.
//! Checked by tests/lm_replay.rs (every op lands in exactly one phase, in order).

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaGraph;

use super::mask::Mask;
use super::model::LmCuda;
use super::steps::{LmBuf, Op};
use crate::error::{DriverContext, Result};
use crate::lstm::capture;

/// The phase of `op` in the forward (`backward` false) or backward list; `prev` is the phase
/// of the op before it (hidden dropout and copies go with the layer they follow).
fn phase_of(op: &Op, backward: bool, prev: &str) -> String {
    let dir = if backward { "bwd" } else { "fwd" };
    let name = match op {
        Op::StepBegin | Op::EmbedFwd => "embedding + dropouts fwd",
        Op::Dropout { mask: Mask::Weight(l), .. } | Op::Layer { l, .. } => return format!("lstm{l} {dir}"),
        Op::Dropout { .. } | Op::Copy { .. } => prev,
        Op::RegFwd => "output dropout + AR/TAR fwd",
        Op::Gemm(g) => match g.c.buf {
            LmBuf::Logits => "decoder GEMM fwd",
            LmBuf::DDropped => "decoder GEMM bwd dX",
            _ => "decoder GEMM bwd dW",
        },
        Op::Xent | Op::LossSum => "softmax + CE (fwd+bwd)",
        Op::BiasGrad => "decoder bias grad",
        Op::RegBwd => "output dropout + AR/TAR bwd",
        Op::EmbedBwd => "embedding scatter bwd",
        Op::SumsqPartial { .. } | Op::ClipScale | Op::Adam { .. } => "clip + adam",
    };
    name.to_string()
}

/// The ops of forward, backward and update cut into runs of one phase each, in order.
pub fn phases(lists: &[Vec<Op>; 3]) -> Vec<(String, Vec<Op>)> {
    let mut out: Vec<(String, Vec<Op>)> = Vec::new();
    for (k, list) in lists.iter().enumerate() {
        for op in list {
            let prev = out.last().map_or("", |(name, _)| name.as_str());
            let name = phase_of(op, k == 1, prev);
            match out.last_mut() {
                Some((last, ops)) if *last == name => ops.push(*op),
                _ => out.push((name, vec![*op])),
            }
        }
    }
    out
}

impl LmCuda<'_> {
    /// Median milliseconds of each phase of the step over `repeats` replays (after one
    /// warm-up), from CUDA events around each phase's graph. Each replay is one whole
    /// training step on the uploaded batch (the parameters change).
    pub fn time_phases(&self, repeats: usize) -> Result<Vec<(String, f64)>> {
        let parts = phases(&self.ops);
        // Outside any capture first, so cuBLAS sets itself up (as `capture_graphs` does).
        parts.iter().try_for_each(|(_, ops)| self.run_ops(ops))?;
        let graphs =
            parts.iter().map(|(_, ops)| capture(self.gpu, || self.run_ops(ops))).collect::<Result<Vec<CudaGraph>>>()?;
        let ctx = self.gpu.stream().context();
        let events = (0..=graphs.len())
            .map(|_| ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .op("create timing events")?;
        let mut ms = vec![Vec::with_capacity(repeats); graphs.len()];
        for rep in 0..=repeats {
            let stream = self.gpu.stream();
            events[0].record(stream).op("record event")?;
            for (g, end) in graphs.iter().zip(&events[1..]) {
                g.launch().op("launch phase graph")?;
                end.record(stream).op("record event")?;
            }
            self.gpu.sync("phase timing")?;
            if rep == 0 {
                continue; // warm-up
            }
            for (k, pair) in events.windows(2).enumerate() {
                let t = pair[0].elapsed_ms(&pair[1]).op("event time")?;
                ms[k].push(t as f64);
            }
        }
        Ok(parts
            .into_iter()
            .zip(ms)
            .map(|((name, _), mut t)| {
                t.sort_by(f64::total_cmp);
                (name, t.get(t.len() / 2).copied().unwrap_or(f64::NAN))
            })
            .collect())
    }
}
