//! The time loops with one packed GEMM per step over ALL batch rows, for large hidden sizes.
//!
//! Forward step:  `z_t [B, 4H] += h_{t-1} [B, H] . W_hh^T`, then the forward cell.
//! Backward step: `dh [B, H] = dz_t [B, 4H] . W_hh`, then the backward cell of step t-1.
//!
//! W_hh is packed once per sequence (`ulmfit_tensor::sgemm::PackedB`); each product splits
//! the output columns across threads, so every thread streams only its share of W_hh per
//! step (the row-block loops in `layer.rs` stream all of it). The cell then runs over row
//! blocks in parallel. Every element's arithmetic is fixed (no reduction across threads),
//! so runs repeat bit for bit. Checked against `reference.rs` through the layer (tests/fused.rs).

use crate::cell::{self, CellBwd, CellFwd, Isa};
use rayon::prelude::*;
use ulmfit_tensor::gemm::MatRef;
use ulmfit_tensor::sgemm::{gemm_packed, PackedB};

/// Cells per step (B*H) from which the cell runs over row blocks in parallel.
const CELL_PAR_MIN: usize = 1 << 14;

/// Whether the batched loops beat the per-row-block ones for B rows, H units (measured on
/// the 2-core Zen 5: they win at H = 1152, lose at H = 256).
pub fn pays(bn: usize, hn: usize, isa: Isa) -> bool {
    isa == Isa::Avx512 && hn >= 512 && bn >= 16
}

/// Rows per cell task: one block per thread when the step is big enough.
fn cell_rows(bn: usize, hn: usize) -> usize {
    if bn * hn >= CELL_PAR_MIN {
        bn.div_ceil(rayon::current_num_threads().max(1)).max(1)
    } else {
        bn.max(1)
    }
}

/// Forward through time: `gates` [T, B, 4H] holds `X W_ih^T` on entry and the activated
/// gates on return; `c`, `y` [T, B, H] receive the cell states and outputs.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    (bn, hn): (usize, usize),
    w_hh: &[f32],
    bias: &[f32],
    (h0, c0): (&[f32], &[f32]),
    gates: &mut [f32],
    c: &mut [f32],
    y: &mut [f32],
    isa: Isa,
) {
    let (g4, bh) = (4 * hn, bn * hn);
    // W_hh^T [H, 4H], packed once for all T steps.
    let w = PackedB::pack(MatRef::new(w_hh, g4, hn).t());
    let rb = cell_rows(bn, hn);
    for (t, g) in gates.chunks_exact_mut((bn * g4).max(1)).enumerate() {
        let (c_done, c_now) = c.split_at_mut(t * bh);
        let (y_done, y_now) = y.split_at_mut(t * bh);
        let h_prev = if t == 0 { h0 } else { &y_done[(t - 1) * bh..] };
        let c_prev = if t == 0 { c0 } else { &c_done[(t - 1) * bh..] };
        gemm_packed(1.0, MatRef::new(h_prev, bn, hn), &w, 1.0, g);
        let parts = g.par_chunks_mut(rb * g4).zip(c_now[..bh].par_chunks_mut(rb * hn));
        let parts = parts.zip(y_now[..bh].par_chunks_mut(rb * hn)).zip(c_prev.par_chunks(rb * hn));
        parts.for_each(|(((gates, c), h), c_prev)| {
            let rows = c.len() / hn;
            cell::run(isa, &mut CellFwd::new(gates, bias, c_prev, c, h), rows, hn);
        });
    }
}

/// Backward through time: `dz` [T, B, 4H] holds the saved gates on entry and dL/dz on
/// return; `dh`, `dc` [B, H] hold dL/dh_n, dL/dc_n on entry and dL/dh0, dL/dc0 on return.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    (bn, hn): (usize, usize),
    w_hh: &[f32],
    c0: &[f32],
    c: &[f32],
    dy: &[f32],
    dz: &mut [f32],
    (dh, dc): (&mut [f32], &mut [f32]),
    isa: Isa,
) {
    let (g4, bh) = (4 * hn, bn * hn);
    let tn = dz.len() / (bn * g4).max(1);
    if tn == 0 {
        return;
    }
    // W_hh [4H, H], packed once for all T steps.
    let w = PackedB::pack(MatRef::new(w_hh, g4, hn));
    let rb = cell_rows(bn, hn);
    let mut dh_rec = vec![0.0; bh];
    dh_rec.copy_from_slice(dh);
    for t in (0..tn).rev() {
        if t + 1 < tn {
            // dh_t = dz_{t+1} . W_hh
            gemm_packed(1.0, MatRef::new(&dz[(t + 1) * bn * g4..][..bn * g4], bn, g4), &w, 0.0, &mut dh_rec);
        }
        let c_prev = if t == 0 { c0 } else { &c[(t - 1) * bh..t * bh] };
        let g = &mut dz[t * bn * g4..][..bn * g4];
        let parts = g.par_chunks_mut(rb * g4).zip(dc.par_chunks_mut(rb * hn));
        let parts = parts.zip(c[t * bh..][..bh].par_chunks(rb * hn)).zip(c_prev.par_chunks(rb * hn));
        let parts = parts.zip(dy[t * bh..][..bh].par_chunks(rb * hn)).zip(dh_rec.par_chunks(rb * hn));
        parts.for_each(|(((((gates, dc), c), c_prev), dy), dh_rec)| {
            let rows = dc.len() / hn;
            cell::run(isa, &mut CellBwd::new(gates, (c, c_prev), (dy, dh_rec), dc), rows, hn);
        });
    }
    // dh0 = dz_0 . W_hh
    gemm_packed(1.0, MatRef::new(&dz[..bn * g4], bn, g4), &w, 0.0, dh);
}

#[cfg(test)]
mod tests {
    use crate::testutil::check_layer;
    use crate::{Isa, LstmDims};

    /// B=33, H=513: the batched loops, a scalar unit tail, the cell split into uneven row blocks.
    #[test]
    fn batched_loops_match_reference_and_repeat_bit_for_bit() {
        if !Isa::Avx512.available() {
            println!("skipping the batched loops: this CPU has no AVX-512");
            return;
        }
        let d = LstmDims { t: 3, b: 33, i: 6, h: 513 };
        assert!(super::pays(d.b, d.h, Isa::Avx512), "the test shape must take the batched loops");
        check_layer(d, Isa::Avx512);
    }
}
