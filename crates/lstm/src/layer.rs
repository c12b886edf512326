//! The fused LSTM layer: forward and backward through time over a whole sequence.
//!
//! Shaped like Haste's kernels. Forward: one GEMM computes `X W_ih^T` for all T steps
//! straight into the gate buffer; each step adds `h_{t-1} W_hh^T` and runs the fused SIMD
//! cell (`cell.rs`), which overwrites the pre-activations with the activated gates.
//! Backward: each step runs the fused gate-gradient cell (writing dL/dz over the saved
//! gates) and one GEMM for the recurrent dh; after the loop dx, dW_ih, dW_hh and db come
//! from four whole-sequence GEMMs / sums. Checked against `reference.rs` (tests/fused.rs).
//!
//! Memory kept for backward: the activated gates [T, B, 4H] and the cell states [T, B, H],
//! i.e. 5 floats per T*B*H, plus the output y [T, B, H] that the caller holds anyway.
//! Nothing is allocated inside the time loops.
//!
//! Three ways to run the time loops, picked by size: small layers on AVX-512 whose weights
//! fit each core's L2 (`split.rs`: hidden units split across threads, the input projection
//! folded into the steps, one spin-wait per step); H >= 512 (`batched.rs`: one packed GEMM
//! per step over all rows); otherwise blocks of batch rows, one rayon task per thread for
//! the whole sequence (below), with no synchronisation per step since rows never interact.

use std::ops::Range;

use crate::batched;
use crate::cell::{self, CellBwd, CellFwd, Isa};
use crate::recurrent::Recurrent;
use crate::reference::{LstmDims, LstmGrads, LstmOutput, LstmParams};
use crate::split;
use rayon::prelude::*;
use ulmfit_tensor::gemm::{sgemm, MatRef};
use ulmfit_tensor::pool;

/// What the forward keeps for the backward (its buffers go back to `pool` when dropped).
#[derive(Clone, Debug, Default)]
pub struct Saved {
    /// Activated gates i, f, g, o of every step, [T, B, 4H].
    pub gates: Vec<f32>,
    /// Cell state of every step, [T, B, H].
    pub c: Vec<f32>,
}

impl Drop for Saved {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.gates));
        pool::give(std::mem::take(&mut self.c));
    }
}

/// Runs the layer over `x` [T, B, I] from state `h0`, `c0` [B, H].
/// Panics when H = 0 (the loops split buffers into H-wide rows; `op::lstm` returns an error).
pub fn forward(d: LstmDims, p: &LstmParams, x: &[f32], h0: &[f32], c0: &[f32], isa: Isa) -> (LstmOutput, Saved) {
    d.check(p, x, h0, c0);
    assert!(d.h > 0, "lstm forward {d:?}: hidden size H must be at least 1");
    let (tn, bn, inp, hn) = (d.t, d.b, d.i, d.h);
    let (g4, bh) = (4 * hn, bn * hn);
    let bias: Vec<f32> = p.b_ih.iter().zip(p.b_hh).map(|(a, b)| a + b).collect();
    // Stale pooled buffers are fine: the GEMM (beta = 0) and the cell overwrite every element.
    let mut gates = pool::take(tn * bn * g4);
    let mut c = pool::take(tn * bh);
    let mut y = vec![0.0; tn * bh];
    if split::pays((bn, inp, hn), isa) {
        split::forward((bn, inp, hn), (p.w_ih, p.w_hh), &bias, x, (h0, c0), &mut gates, &mut c, &mut y);
        let (h_n, c_n) = (last_step(&y, h0, tn), last_step(&c, c0, tn));
        return (LstmOutput { y, h_n, c_n }, Saved { gates, c });
    }
    // gates [T*B, 4H] = X [T*B, I] . W_ih^T
    sgemm(1.0, MatRef::new(x, tn * bn, inp), MatRef::new(p.w_ih, g4, inp).t(), 0.0, &mut gates);
    if batched::pays(bn, hn, isa) {
        batched::forward((bn, hn), p.w_hh, &bias, (h0, c0), &mut gates, &mut c, &mut y, isa);
        let (h_n, c_n) = (last_step(&y, h0, tn), last_step(&c, c0, tn));
        return (LstmOutput { y, h_n, c_n }, Saved { gates, c });
    }
    let rec = Recurrent::new(p.w_hh, hn, isa, false);
    let blocks = row_blocks(bn);
    let views = split_rows(&mut gates, bn, g4, &blocks).into_iter().zip(split_rows(&mut c, bn, hn, &blocks));
    let mut views: Vec<_> = views.zip(split_rows(&mut y, bn, hn, &blocks)).zip(&blocks).collect();
    views.par_iter_mut().for_each(|(((g, c), y), rows)| {
        let (h0, c0) = (&h0[rows.start * hn..rows.end * hn], &c0[rows.start * hn..rows.end * hn]);
        for t in 0..tn {
            let (c_done, c_now) = c.split_at_mut(t);
            let (y_done, y_now) = y.split_at_mut(t);
            let h_prev = if t == 0 { h0 } else { &*y_done[t - 1] };
            let c_prev = if t == 0 { c0 } else { &*c_done[t - 1] };
            let mut s = CellFwd::new(&mut *g[t], &bias, c_prev, &mut *c_now[0], &mut *y_now[0]);
            rec.forward_step(h_prev, &mut s, rows.len());
        }
    });
    let (h_n, c_n) = (last_step(&y, h0, tn), last_step(&c, c0, tn));
    (LstmOutput { y, h_n, c_n }, Saved { gates, c })
}

/// Which gradients [`backward`] computes besides dh0 and dc0 (the recurrence gives those):
/// a frozen layer needs no weight gradients, a layer over frozen inputs no dx. The skipped
/// ones come back empty and cost nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// dL/dx.
    pub dx: bool,
    /// dL/dW_ih, dL/dW_hh and the bias gradients.
    pub weights: bool,
}

impl Wanted {
    /// Every gradient.
    pub const ALL: Wanted = Wanted { dx: true, weights: true };
}

/// Gradients given dL/dy [T, B, H] and optionally dL/dh_n, dL/dc_n [B, H]; those `want`
/// leaves out are empty.
///
/// `y` is the forward's output and `saved` its trace, consumed: the gate gradients are
/// written over the saved gates.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    d: LstmDims,
    p: &LstmParams,
    x: &[f32],
    h0: &[f32],
    c0: &[f32],
    y: &[f32],
    saved: Saved,
    dy: &[f32],
    (dh_n, dc_n): (Option<&[f32]>, Option<&[f32]>),
    want: Wanted,
    isa: Isa,
) -> LstmGrads {
    d.check(p, x, h0, c0);
    assert!(d.h > 0, "lstm backward {d:?}: hidden size H must be at least 1");
    let (tn, bn, inp, hn) = (d.t, d.b, d.i, d.h);
    let (g4, bh, rows) = (4 * hn, bn * hn, d.t * d.b);
    let lens = [
        ("y", y.len(), tn * bh),
        ("dy", dy.len(), tn * bh),
        ("saved gates", saved.gates.len(), rows * g4),
        ("saved c", saved.c.len(), tn * bh),
        ("dh_n", dh_n.map_or(bh, <[f32]>::len), bh),
        ("dc_n", dc_n.map_or(bh, <[f32]>::len), bh),
    ];
    for (name, got, want) in lens {
        assert_eq!(got, want, "lstm backward {d:?}: {name} has {got} elements, expected {want}");
    }
    let mut saved = saved;
    let (mut gates, c) = (std::mem::take(&mut saved.gates), std::mem::take(&mut saved.c));
    let mut dh = dh_n.map_or(vec![0.0; bh], <[f32]>::to_vec);
    let mut dc = dc_n.map_or(vec![0.0; bh], <[f32]>::to_vec);
    let split = split::pays((bn, inp, hn), isa);
    if split {
        split::backward((bn, hn), p.w_hh, c0, &c, dy, &mut gates, (&mut dh, &mut dc));
    } else if batched::pays(bn, hn, isa) {
        batched::backward((bn, hn), p.w_hh, c0, &c, dy, &mut gates, (&mut dh, &mut dc), isa);
    } else {
        recurrent_backward((bn, hn), p.w_hh, (c0, &c), dy, &mut gates, (&mut dh, &mut dc), isa);
    }
    // The whole-sequence GEMMs over dz [T*B, 4H]. For small layers as two halves of equal
    // flops side by side: each GEMM alone splits into too few blocks to keep both threads
    // busy (fwd+bwd measured ~4% faster at 128->256).
    let dz = MatRef::new(&gates, rows, g4);
    let input_grads = || {
        let mut dx = Vec::new();
        if want.dx {
            dx = vec![0.0; rows * inp];
            sgemm(1.0, dz, MatRef::new(p.w_ih, g4, inp), 0.0, &mut dx);
        }
        let mut dw_ih = Vec::new();
        if want.weights {
            dw_ih = vec![0.0; g4 * inp];
            sgemm(1.0, dz.t(), MatRef::new(x, rows, inp), 0.0, &mut dw_ih);
        }
        (dx, dw_ih)
    };
    // dW_hh = sum_t dz_t^T h_{t-1}: h0 for step 0, y_{t-1} for the rest; db = column sums of dz
    let recurrent_grads = || {
        if !want.weights {
            return (Vec::new(), Vec::new());
        }
        let mut dw_hh = vec![0.0; g4 * hn];
        if tn > 0 {
            sgemm(1.0, MatRef::new(&gates[..bn * g4], bn, g4).t(), MatRef::new(h0, bn, hn), 0.0, &mut dw_hh);
            let later = MatRef::new(&gates[bn * g4..], rows - bn, g4).t();
            sgemm(1.0, later, MatRef::new(&y[..(rows - bn) * hn], rows - bn, hn), 1.0, &mut dw_hh);
        }
        (dw_hh, column_sums(&gates, g4))
    };
    let ((dx, dw_ih), (dw_hh, db)) =
        if split { rayon::join(input_grads, recurrent_grads) } else { (input_grads(), recurrent_grads()) };
    (saved.gates, saved.c) = (gates, c); // back to the pool
    LstmGrads { dx, dh0: dh, dc0: dc, dw_ih, dw_hh, db_ih: db.clone(), db_hh: db }
}
/// The per-row-block backward loop: each thread takes a block of rows for the whole
/// sequence; per step the fused `dz_t W_hh` tiles feed the gate-gradient cell of step t-1.
fn recurrent_backward(
    (bn, hn): (usize, usize),
    w_hh: &[f32],
    (c0, c): (&[f32], &[f32]),
    dy: &[f32],
    gates: &mut [f32],
    (dh, dc): (&mut [f32], &mut [f32]),
    isa: Isa,
) {
    let (g4, tn) = (4 * hn, c.len() / (bn * hn).max(1));
    let rec = Recurrent::new(w_hh, hn, isa, true);
    let blocks = row_blocks(bn);
    let views = split_rows(gates, bn, g4, &blocks).into_iter().zip(split_blocks(dh, hn, &blocks));
    let mut views: Vec<_> = views.zip(split_blocks(dc, hn, &blocks)).zip(&blocks).collect();
    views.par_iter_mut().for_each(|(((dz, dh), dc), rows)| {
        let (r0, nr) = (rows.start, rows.len());
        // This block's rows of a [T, B, H] buffer at step t.
        let at = |t: usize| (t * bn + r0) * hn..(t * bn + r0 + nr) * hn;
        let c_prev = |t: usize| {
            if t == 0 {
                &c0[r0 * hn..(r0 + nr) * hn]
            } else {
                &c[at(t - 1)]
            }
        };
        if tn == 0 {
            return;
        }
        // The last step reads dh_n as its recurrent dh.
        let mut s = CellBwd::new(&mut *dz[tn - 1], (&c[at(tn - 1)], c_prev(tn - 1)), (&dy[at(tn - 1)], dh), dc);
        cell::run(isa, &mut s, nr, hn);
        // dh_{t-1} = dz_t . W_hh, then the cell of step t-1 in the same pass.
        for t in (1..tn).rev() {
            let (lo, hi) = dz.split_at_mut(t);
            let s = CellBwd::new(&mut *lo[t - 1], (&c[at(t - 1)], c_prev(t - 1)), (&dy[at(t - 1)], &[]), dc);
            rec.backward_step(&*hi[0], dh, Some(s), nr);
        }
        rec.backward_step(&*dz[0], dh, None, nr);
    });
}

/// The last step's [B, H] of a [T, B, H] buffer, or `init` when T = 0.
fn last_step(v: &[f32], init: &[f32], tn: usize) -> Vec<f32> {
    if tn == 0 {
        init.to_vec()
    } else {
        v[(tn - 1) * init.len()..].to_vec()
    }
}

/// Threads the time loops split batch rows over (rayon's pool; `RAYON_NUM_THREADS` sets it).
pub fn num_threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Splits B rows into one block per thread, in multiples of 8 rows where B allows.
fn row_blocks(bn: usize) -> Vec<Range<usize>> {
    let per = bn.div_ceil(num_threads()).next_multiple_of(8).max(1);
    (0..bn).step_by(per).map(|r| r..bn.min(r + per)).collect()
}

/// The row blocks of a [B, width] buffer.
fn split_blocks<'a>(mut buf: &'a mut [f32], width: usize, blocks: &[Range<usize>]) -> Vec<&'a mut [f32]> {
    blocks
        .iter()
        .map(|r| {
            let (head, rest) = std::mem::take(&mut buf).split_at_mut(r.len() * width);
            buf = rest;
            head
        })
        .collect()
}

/// The row blocks of a [T, B, width] buffer: for each block, its [rows, width] slice of every step.
fn split_rows<'a>(buf: &'a mut [f32], bn: usize, width: usize, blocks: &[Range<usize>]) -> Vec<Vec<&'a mut [f32]>> {
    let mut out: Vec<Vec<&mut [f32]>> = blocks.iter().map(|_| Vec::new()).collect();
    for step in buf.chunks_mut((bn * width).max(1)) {
        for (o, part) in out.iter_mut().zip(split_blocks(step, width, blocks)) {
            o.push(part);
        }
    }
    out
}

/// Sums the rows of a row-major [rows, n] matrix, in row order (deterministic).
fn column_sums(m: &[f32], n: usize) -> Vec<f32> {
    let mut s = vec![0.0; n];
    for row in m.chunks_exact(n) {
        s.iter_mut().zip(row).for_each(|(a, b)| *a += b);
    }
    s
}
