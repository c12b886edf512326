//! The per-step recurrent products of the LSTM with W_hh packed once per sequence, and the
//! cell fused into their epilogue.
//!
//! Forward step:  `z [R, 4H] += h_{t-1} [R, H] . W_hh^T`, then the forward cell.
//! Backward step: `dh [R, H] = dz_t [R, 4H] . W_hh`, then the backward cell of step t-1.
//!
//! On AVX-512 W_hh is packed once per sequence into 16-unit blocks (`pack_fwd`, `pack_bwd`).
//! A register tile of a few batch rows x 16 hidden units (all four gates in the forward,
//! two unit blocks in the backward) accumulates into the step's buffers over K slices that
//! keep the packed W_hh slice in L1 across row tiles; after the last slice it runs the cell
//! on exactly those units while they are hot. Elsewhere the product is `gemm::sgemm`
//! followed by `cell::run`. Both paths are checked against `reference.rs` (tests/fused.rs).

use crate::cell::{self, CellBwd, CellFwd, CellStep, Isa};
use crate::pool;
use rayon::prelude::*;
use ulmfit_tensor::gemm::{sgemm, MatRef};

/// Hidden units per packed block: one AVX-512 register of f32.
const UNITS: usize = 16;

/// W_hh [4H, H] prepared for T steps of recurrent products.
pub struct Recurrent<'a> {
    w_hh: &'a [f32],
    hn: usize,
    isa: Isa,
    /// Forward blocks `[H/16][K=H][4 gates][16]` of W_hh^T (AVX-512 only, zero-padded units).
    fwd: Vec<f32>,
    /// Backward blocks `[H/16][K=4H][16]` of W_hh (AVX-512 only).
    bwd: Vec<f32>,
}

impl Drop for Recurrent<'_> {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.fwd));
        pool::give(std::mem::take(&mut self.bwd));
    }
}

impl<'a> Recurrent<'a> {
    /// Prepares `w_hh` [4H, H] for `isa`, packing it when the fused kernels apply.
    /// `backward` selects which packed layout is built (forward or backward products).
    pub fn new(w_hh: &'a [f32], hn: usize, isa: Isa, backward: bool) -> Self {
        assert_eq!(w_hh.len(), 4 * hn * hn, "recurrent: w_hh has {} elements, expected [4*{hn}, {hn}]", w_hh.len());
        assert!(isa.available(), "recurrent: {isa:?} is not supported by this CPU");
        let mut r = Recurrent { w_hh, hn, isa, fwd: Vec::new(), bwd: Vec::new() };
        if isa == Isa::Avx512 {
            if backward {
                r.bwd = pack_bwd(w_hh, hn);
            } else {
                r.fwd = pack_fwd(w_hh, hn);
            }
        }
        r
    }

    /// `s.gates += h_prev . W_hh^T`, then the forward cell, for the `rows` rows in `s`.
    pub fn forward_step(&self, h_prev: &[f32], s: &mut CellFwd, rows: usize) {
        let hn = self.hn;
        assert_eq!(
            h_prev.len(),
            rows * hn,
            "recurrent forward: h_prev has {} elements, expected [{rows}, {hn}]",
            h_prev.len()
        );
        s.check(rows, hn);
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512 {
            assert_eq!(self.fwd.len(), hn.div_ceil(UNITS) * hn * 4 * UNITS, "recurrent: W_hh was packed for backward");
            // SAFETY: lengths and packing checked above; `new` checked that the CPU has AVX-512.
            unsafe { avx512::forward(&self.fwd, hn, h_prev, s, rows) };
            return;
        }
        let w_t = MatRef::new(self.w_hh, 4 * hn, hn).t();
        sgemm(1.0, MatRef::new(h_prev, rows, hn), w_t, 1.0, s.gates);
        cell::run(self.isa, s, rows, hn);
    }

    /// `dh = dz . W_hh` for `rows` rows, then (if given) the backward cell `s` of the
    /// previous step, which reads `dh` as its `dh_rec`.
    pub fn backward_step(&self, dz: &[f32], dh: &mut [f32], s: Option<CellBwd>, rows: usize) {
        let hn = self.hn;
        assert_eq!(
            dz.len(),
            rows * 4 * hn,
            "recurrent backward: dz has {} elements, expected [{rows}, 4*{hn}]",
            dz.len()
        );
        assert_eq!(dh.len(), rows * hn, "recurrent backward: dh has {} elements, expected [{rows}, {hn}]", dh.len());
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512 {
            assert_eq!(self.bwd.len(), hn.div_ceil(UNITS) * 4 * hn * UNITS, "recurrent: W_hh was packed for forward");
            // SAFETY: lengths checked above (the cell's by `check` inside); AVX-512 checked in `new`.
            unsafe { avx512::backward(&self.bwd, hn, dz, dh, s, rows) };
            return;
        }
        sgemm(1.0, MatRef::new(dz, rows, 4 * hn), MatRef::new(self.w_hh, 4 * hn, hn), 0.0, dh);
        if let Some(mut s) = s {
            cell::run(self.isa, &mut s.with_dh_rec(dh), rows, hn);
        }
    }
}

/// A pooled buffer of `len` floats; zeroed when H leaves padding lanes the packing skips.
fn padded(len: usize, hn: usize) -> Vec<f32> {
    let mut p = pool::take(len);
    if !hn.is_multiple_of(UNITS) {
        p.fill(0.0);
    }
    p
}

/// `[H/16][H][4][16]`: block u, input unit k, gate g, lane l holds W_hh[g*H + 16u + l, k].
fn pack_fwd(w: &[f32], hn: usize) -> Vec<f32> {
    let mut p = padded(hn.div_ceil(UNITS) * hn * 4 * UNITS, hn);
    p.par_chunks_mut((hn * 4 * UNITS).max(1)).enumerate().for_each(|(u, block)| {
        for g in 0..4 {
            for l in 0..UNITS.min(hn - u * UNITS) {
                // One contiguous row of W_hh scatters down one lane of the block.
                let row = &w[(g * hn + u * UNITS + l) * hn..][..hn];
                for (k, &v) in row.iter().enumerate() {
                    block[(k * 4 + g) * UNITS + l] = v;
                }
            }
        }
    });
    p
}

/// `[H/16][4H][16]`: block u, gate row m, lane l holds W_hh[m, 16u + l].
fn pack_bwd(w: &[f32], hn: usize) -> Vec<f32> {
    let mut p = padded(hn.div_ceil(UNITS) * 4 * hn * UNITS, hn);
    p.par_chunks_mut((4 * hn * UNITS).max(1)).enumerate().for_each(|(u, block)| {
        let width = UNITS.min(hn - u * UNITS);
        for (m, lanes) in block.chunks_exact_mut(UNITS).enumerate() {
            lanes[..width].copy_from_slice(&w[m * hn + u * UNITS..][..width]);
        }
    });
    p
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::UNITS;
    use crate::cell::{CellBwd, CellFwd, CellStep};
    use crate::simd::Avx512;
    use std::arch::x86_64::*;

    /// Forward register tile: 6 batch rows x 4 gates of 16 units = 24 accumulators.
    const ROWS_FWD: usize = 6;
    /// Backward register tile: 8 batch rows x 2 blocks of 16 units = 16 accumulators.
    const ROWS_BWD: usize = 8;
    /// K slices sized so one B slice (128 x 64 or 256 x 32 floats, 32 KiB) stays in L1
    /// while every row tile of the step streams past it.
    const KC_FWD: usize = 128;
    const KC_BWD: usize = 256;

    /// One register tile: `c[r, p] += a[r, 0..k] . b[0..k, p]` for rows r and panels p of
    /// 16 lanes, every operand strided (`ld*` between rows or k, `p*` between panels).
    struct Tile {
        a: *const f32,
        lda: usize,
        k: usize,
        b: *const f32,
        ldb: usize,
        pb: usize,
        c: *mut f32,
        ldc: usize,
        pc: usize,
        /// Valid lanes of each panel of c (B panels are zero-padded, so only c is masked).
        mask: [__mmask16; 4],
    }

    #[inline(always)]
    unsafe fn tile<const R: usize, const P: usize>(t: &Tile) {
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        for (r, acc_r) in acc.iter_mut().enumerate() {
            for (p, v) in acc_r.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(t.mask[p], t.c.add(r * t.ldc + p * t.pc));
            }
        }
        // Two k steps per iteration: measured 198 -> 256 GFLOP/s per core for the 6x4 tile.
        for kk in (0..t.k - t.k % 2).step_by(2) {
            k_step(&mut acc, t, kk);
            k_step(&mut acc, t, kk + 1);
        }
        if t.k % 2 == 1 {
            k_step(&mut acc, t, t.k - 1);
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (p, v) in acc_r.iter().enumerate() {
                _mm512_mask_storeu_ps(t.c.add(r * t.ldc + p * t.pc), t.mask[p], *v);
            }
        }
    }

    /// One k step of `tile`: P vectors of B times R broadcasts of A.
    #[inline(always)]
    unsafe fn k_step<const R: usize, const P: usize>(acc: &mut [[__m512; P]; R], t: &Tile, kk: usize) {
        let bk = t.b.add(kk * t.ldb);
        let bv: [__m512; P] = std::array::from_fn(|p| _mm512_loadu_ps(bk.add(p * t.pb)));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*t.a.add(r * t.lda + kk));
            for p in 0..P {
                acc_r[p] = _mm512_fmadd_ps(av, bv[p], acc_r[p]);
            }
        }
    }

    /// `tile` for a run-time row count `r` in 1..=8.
    #[inline(always)]
    unsafe fn tile_rows<const P: usize>(r: usize, t: &Tile) {
        match r {
            1 => tile::<1, P>(t),
            2 => tile::<2, P>(t),
            3 => tile::<3, P>(t),
            4 => tile::<4, P>(t),
            5 => tile::<5, P>(t),
            6 => tile::<6, P>(t),
            7 => tile::<7, P>(t),
            _ => tile::<8, P>(t),
        }
    }

    /// Lanes `0..width` of a 16-lane block.
    fn mask(width: usize) -> __mmask16 {
        ((1u32 << width) - 1) as __mmask16
    }

    /// Forward step on `rows` rows: see `Recurrent::forward_step`.
    ///
    /// # Safety
    /// AVX-512F available; `w` packed by `pack_fwd`; buffer lengths checked by the caller.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn forward(w: &[f32], hn: usize, h_prev: &[f32], s: &mut CellFwd, rows: usize) {
        for u in 0..hn.div_ceil(UNITS) {
            let (j, width) = (u * UNITS, UNITS.min(hn - u * UNITS));
            for k0 in (0..hn).step_by(KC_FWD) {
                let kc = KC_FWD.min(hn - k0);
                for row in (0..rows).step_by(ROWS_FWD) {
                    let r = ROWS_FWD.min(rows - row);
                    let t = Tile {
                        a: h_prev.as_ptr().add(row * hn + k0),
                        lda: hn,
                        k: kc,
                        b: w.as_ptr().add((u * hn + k0) * 4 * UNITS),
                        ldb: 4 * UNITS,
                        pb: UNITS,
                        c: s.gates.as_mut_ptr().add(row * 4 * hn + j),
                        ldc: 4 * hn,
                        pc: hn,
                        mask: [mask(width); 4],
                    };
                    tile_rows::<4>(r, &t);
                    if k0 + kc == hn {
                        for i in 0..r {
                            lanes_block(s, hn, row + i, j, width);
                        }
                    }
                }
            }
        }
    }

    /// Backward step on `rows` rows: see `Recurrent::backward_step`.
    ///
    /// # Safety
    /// AVX-512F available; `w` packed by `pack_bwd`; `dz`, `dh` lengths checked by the caller.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn backward(w: &[f32], hn: usize, dz: &[f32], dh: &mut [f32], mut s: Option<CellBwd>, rows: usize) {
        if let Some(s) = &mut s {
            s.with_dh_rec(dh).check(rows, hn);
        }
        dh.fill(0.0);
        let (blocks, kn) = (hn.div_ceil(UNITS), 4 * hn);
        let width = |u: usize| if u < blocks { UNITS.min(hn - u * UNITS) } else { 0 };
        for u in (0..blocks).step_by(2) {
            let pair = blocks - u >= 2;
            for k0 in (0..kn).step_by(KC_BWD) {
                let kc = KC_BWD.min(kn - k0);
                for row in (0..rows).step_by(ROWS_BWD) {
                    let r = ROWS_BWD.min(rows - row);
                    let t = Tile {
                        a: dz.as_ptr().add(row * kn + k0),
                        lda: kn,
                        k: kc,
                        b: w.as_ptr().add((u * kn + k0) * UNITS),
                        ldb: UNITS,
                        pb: kn * UNITS,
                        c: dh.as_mut_ptr().add(row * hn + u * UNITS),
                        ldc: hn,
                        pc: UNITS,
                        mask: [mask(width(u)), mask(width(u + 1)), 0, 0],
                    };
                    if pair {
                        tile_rows::<2>(r, &t);
                    } else {
                        tile_rows::<1>(r, &t);
                    }
                    if let (Some(s), true) = (&mut s, k0 + kc == kn) {
                        // The cell reads dh_rec at exactly the units just finished.
                        let mut s = s.with_dh_rec(dh);
                        for i in 0..r {
                            lanes_block(&mut s, hn, row + i, u * UNITS, width(u));
                            if pair {
                                lanes_block(&mut s, hn, row + i, (u + 1) * UNITS, width(u + 1));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Runs the cell on units `j..j+width` of `row`: one vector, or scalar for a tail block.
    #[inline(always)]
    unsafe fn lanes_block<S: CellStep>(s: &mut S, hn: usize, row: usize, j: usize, width: usize) {
        if width == UNITS {
            s.lanes::<Avx512>(hn, row, j);
        } else {
            for l in 0..width {
                s.lanes::<f32>(hn, row, j + l);
            }
        }
    }
}
