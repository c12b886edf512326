//! The fused LSTM layer as ONE autograd op of `ulmfit_tensor`: forward and backward through
//! time run in `layer.rs`, the graph records a single node.
//!
//! Inputs x [T, B, I], w_ih [4H, I], w_hh [4H, H], b_ih `[4H]`, b_hh `[4H]`, h0 and c0 [B, H];
//! output y [T, B, H]. The final state (h_n, c_n) comes back as constants: callers carry it
//! into the next call detached (truncated BPTT). Checked against the same LSTM composed
//! from autograd ops (matmul, narrow, sigmoid, tanh, mul, add) in tests/op.rs.

use std::cell::RefCell;

use crate::cell::Isa;
use crate::layer::{self, Saved, Wanted};
use crate::reference::{LstmDims, LstmParams};
use crate::stack::DropMask;
use ulmfit_tensor::{Error, Op, Result, Tensor};

/// Output of [`lstm`]: y [T, B, H] on the graph, and the final state as constants.
pub struct LstmStep {
    pub y: Tensor,
    /// [B, H], detached.
    pub h_n: Tensor,
    /// [B, H], detached.
    pub c_n: Tensor,
}

/// The recorded op: what the backward needs besides the input and output tensors.
struct LstmOp {
    d: LstmDims,
    isa: Isa,
    /// The forward's trace; the backward consumes it (it writes dz over the gates).
    saved: RefCell<Option<Saved>>,
    /// The DropConnect mask and the masked W_hh the forward ran with.
    dropped: Option<(DropMask, Vec<f32>)>,
}

fn bad(msg: String) -> Error {
    Error::BadArgument { op: "lstm", msg }
}

/// Runs one LSTM layer over `x` [T, B, I] from `h0`, `c0` [B, H], with DropConnect on
/// `w_hh` when `drop` is given (one mask for the whole sequence). T, B and I may be 0; H = 0
/// or shapes that disagree are an error.
#[allow(clippy::too_many_arguments)] // one argument per graph input, in the op's input order
pub fn lstm(
    x: &Tensor,
    w_ih: &Tensor,
    w_hh: &Tensor,
    b_ih: &Tensor,
    b_hh: &Tensor,
    h0: &Tensor,
    c0: &Tensor,
    drop: Option<DropMask>,
) -> Result<LstmStep> {
    let [t, b, i] = x.shape()[..] else {
        return Err(bad(format!("x must be [T, B, I], got shape {:?}", x.shape())));
    };
    let h = w_hh.shape().last().copied().unwrap_or(0);
    if h == 0 {
        // The fused loops split [.., H] buffers into H-wide rows: they need H >= 1.
        return Err(bad(format!(
            "hidden size H must be at least 1, got w_hh {:?} for x {:?}",
            w_hh.shape(),
            x.shape()
        )));
    }
    let d = LstmDims { t, b, i, h };
    let want = [
        ("w_ih", w_ih, vec![4 * h, i]),
        ("w_hh", w_hh, vec![4 * h, h]),
        ("b_ih", b_ih, vec![4 * h]),
        ("b_hh", b_hh, vec![4 * h]),
        ("h0", h0, vec![b, h]),
        ("c0", c0, vec![b, h]),
    ];
    for (name, tensor, shape) in &want {
        if tensor.shape() != &shape[..] {
            return Err(bad(format!("{name} must be {shape:?} for x {:?}, got {:?}", x.shape(), tensor.shape())));
        }
    }
    let isa = Isa::detect();
    let dropped = drop.map(|m| {
        let mut masked = Vec::new();
        m.apply(&w_hh.data(), &mut masked);
        (m, masked)
    });
    let (out, saved) = {
        let (wi, wh, bi, bh) = (w_ih.data(), w_hh.data(), b_ih.data(), b_hh.data());
        let w_hh_used = dropped.as_ref().map_or(&wh[..], |(_, m)| &m[..]);
        let p = LstmParams { w_ih: &wi, w_hh: w_hh_used, b_ih: &bi, b_hh: &bh };
        layer::forward(d, &p, &x.data(), &h0.data(), &c0.data(), isa)
    };
    let op = LstmOp { d, isa, saved: RefCell::new(Some(saved)), dropped };
    let y = Tensor::from_op(out.y, &[t, b, h], &[x, w_ih, w_hh, b_ih, b_hh, h0, c0], op);
    Ok(LstmStep { y, h_n: Tensor::from_vec(out.h_n, &[b, h])?, c_n: Tensor::from_vec(out.c_n, &[b, h])? })
}

impl Op for LstmOp {
    fn name(&self) -> &'static str {
        "lstm"
    }

    fn backward(&self, inputs: &[Tensor], out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let saved = self.saved.borrow_mut().take().ok_or_else(|| {
            bad("backward ran twice on one forward; the fused layer keeps its trace for one pass".into())
        })?;
        let [x, w_ih, w_hh, b_ih, b_hh, h0, c0] = inputs else {
            return Err(bad(format!("expected 7 inputs, got {}", inputs.len())));
        };
        let (wi, wh, bi, bh) = (w_ih.data(), w_hh.data(), b_ih.data(), b_hh.data());
        let w_hh_used = self.dropped.as_ref().map_or(&wh[..], |(_, m)| &m[..]);
        let p = LstmParams { w_ih: &wi, w_hh: w_hh_used, b_ih: &bi, b_hh: &bh };
        let (xd, h0d, c0d) = (x.data(), h0.data(), c0.data());
        // Frozen weights (gradual unfreezing) or an input that needs no gradient skip their GEMMs.
        let want =
            Wanted { dx: x.requires_grad(), weights: [w_ih, w_hh, b_ih, b_hh].iter().any(|w| w.requires_grad()) };
        let mut g = layer::backward(
            self.d,
            &p,
            &xd,
            &h0d,
            &c0d,
            &out.data(),
            saved,
            &dout.data(),
            (None, None),
            want,
            self.isa,
        );
        if let Some((m, _)) = &self.dropped {
            m.apply_grad(&mut g.dw_hh);
        }
        let grads = [g.dx, g.dw_ih, g.dw_hh, g.db_ih, g.db_hh, g.dh0, g.dc0];
        inputs
            .iter()
            .zip(grads)
            .map(|(input, gr)| input.requires_grad().then(|| Tensor::from_vec(gr, input.shape())).transpose())
            .collect()
    }
}
