//! The per-step recurrent products of the LSTM with W_hh packed once per sequence, and the
//! cell fused into their epilogue.
//!
//! Forward step:  `z [R, 4H] += h_{t-1} [R, H] . W_hh^T`, then the forward cell.
//! Backward step: `dh [R, H] = dz_t [R, 4H] . W_hh`, then the backward cell of step t-1.
//!
//! On AVX-512 W_hh is packed once per sequence (`pack_fwd`: 16-unit blocks of all four
//! gates; `pack_bwd`: 64-unit groups). A register tile of up to 6 batch rows x 64 columns
//! (16 units x 4 gates in the forward, 4 blocks of 16 units in the backward) accumulates
//! into the step's buffers over K slices that keep the packed slice in L1 across row
//! tiles; after the last slice it runs the cell on exactly those units while they are hot
//! (the backward prefetches the cell's saved inputs one slice ahead). Elsewhere the product is `gemm::sgemm`
//! followed by `cell::run`. Both paths are checked against `reference.rs` (tests/fused.rs).
//!
//! The AVX-512 kernels (`avx512::forward`, `avx512::backward`) take a range of unit blocks
//! and, in the forward, several `(packed W, A)` terms, so `split.rs` can run each thread on
//! its own units and fold the input projection `x_t W_ih^T` into the step.

use std::ops::Range;

use crate::cell::{self, CellBwd, CellFwd, CellStep, Isa, View};
use rayon::prelude::*;
use ulmfit_tensor::gemm::{sgemm, MatRef};
use ulmfit_tensor::pool;

/// Hidden units per packed block: one AVX-512 register of f32.
pub const UNITS: usize = 16;
/// Hidden units per packed backward group: the four blocks of one backward tile.
pub const GROUP: usize = 4 * UNITS;

/// W_hh [4H, H] prepared for T steps of recurrent products.
pub struct Recurrent<'a> {
    w_hh: &'a [f32],
    hn: usize,
    isa: Isa,
    /// Forward blocks `[H/16][K=H][4 gates][16]` of W_hh^T (AVX-512 only, zero-padded units).
    fwd: Vec<f32>,
    /// Backward groups `[H/64][K=4H][64]` of W_hh (AVX-512 only, zero-padded units).
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
                r.bwd = pool::take(hn.div_ceil(GROUP) * 4 * hn * GROUP);
                let per = (4 * hn * GROUP).max(1);
                r.bwd.par_chunks_mut(per).enumerate().for_each(|(g, b)| pack_bwd(w_hh, hn, g..g + 1, b));
            } else {
                r.fwd = padded(hn.div_ceil(UNITS) * hn * 4 * UNITS, hn);
                let per = (hn * 4 * UNITS).max(1);
                r.fwd.par_chunks_mut(per).enumerate().for_each(|(u, b)| pack_fwd(w_hh, hn, hn, u..u + 1, b));
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
            let term = avx512::Term { w: self.fwd.as_ptr(), a: h_prev.as_ptr(), k: hn };
            unsafe { avx512::forward(&[term], hn, s, rows, 0..hn.div_ceil(UNITS), true) };
            return;
        }
        let w_t = MatRef::new(self.w_hh, 4 * hn, hn).t();
        // SAFETY: `check` above: the gates view holds [rows, 4H] floats of a live &mut borrow.
        let gates = unsafe { std::slice::from_raw_parts_mut(s.gates.ptr(), s.gates.floats()) };
        sgemm(1.0, MatRef::new(h_prev, rows, hn), w_t, 1.0, gates);
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
            assert_eq!(self.bwd.len(), hn.div_ceil(GROUP) * 4 * hn * GROUP, "recurrent: W_hh was packed for forward");
            // SAFETY: lengths checked above (the cell's by `check` inside); AVX-512 checked in `new`.
            unsafe { avx512::backward(self.bwd.as_ptr(), hn, dz, View::of_mut(dh), s, rows, 0..hn.div_ceil(UNITS)) };
            return;
        }
        sgemm(1.0, MatRef::new(dz, rows, 4 * hn), MatRef::new(self.w_hh, 4 * hn, hn), 0.0, dh);
        if let Some(mut s) = s {
            s.dh_rec = View::of(dh);
            cell::run(self.isa, &mut s, rows, hn);
        }
    }
}

/// A pooled buffer of `len` floats; zeroed when H leaves padding lanes the packing skips.
pub fn padded(len: usize, hn: usize) -> Vec<f32> {
    let mut p = pool::take(len);
    if !hn.is_multiple_of(UNITS) {
        p.fill(0.0);
    }
    p
}

/// Packs unit blocks `blocks` of `w` [4H, K] as `[blocks][K][4][16]` into `out`: block u,
/// input k, gate g, lane l holds w[g*H + 16u + l, k] (the B operand of the forward tiles).
/// Full 16 x 16 squares go through the AVX-512 transpose, the edges one float at a time.
pub fn pack_fwd(w: &[f32], hn: usize, kn: usize, blocks: Range<usize>, out: &mut [f32]) {
    assert_eq!(w.len(), 4 * hn * kn, "recurrent pack: w has {} elements, expected [4*{hn}, {kn}]", w.len());
    assert_eq!(out.len(), blocks.len() * kn * 4 * UNITS, "recurrent pack: output for {blocks:?} blocks, K={kn}");
    #[cfg(target_arch = "x86_64")]
    let simd = is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    for (u, block) in blocks.zip(out.chunks_exact_mut((kn * 4 * UNITS).max(1))) {
        let width = UNITS.min(hn - u * UNITS);
        // k below `done` were packed 16 x 16 at a time.
        let done = if simd && width == UNITS { kn - kn % UNITS } else { 0 };
        for g in 0..4 {
            let rows = &w[(g * hn + u * UNITS) * kn..][..width * kn];
            for k0 in (0..done).step_by(UNITS) {
                let dst = block[(k0 * 4 + g) * UNITS..][..(UNITS - 1) * 4 * UNITS + UNITS].as_mut_ptr();
                // SAFETY: AVX-512F detected above; rows l < 16 hold k0..k0+16 at l*kn + k0,
                // and rows r < 16 of dst (stride 4*16) hold 16 floats each (sliced above).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    ulmfit_tensor::sgemm::transpose16(rows[k0..].as_ptr(), kn, dst, dst.add(8), 4 * UNITS)
                };
            }
            for l in 0..width {
                for (k, &v) in rows[l * kn..(l + 1) * kn].iter().enumerate().skip(done) {
                    block[(k * 4 + g) * UNITS + l] = v;
                }
            }
        }
    }
}

/// Packs unit groups `groups` of W_hh [4H, H] as `[groups][4H][64]` into `out`: group g,
/// gate row m, lane l holds W_hh[m, 64g + l], zero past H (the B operand of the backward
/// tiles, four 16-unit blocks side by side).
pub fn pack_bwd(w: &[f32], hn: usize, groups: Range<usize>, out: &mut [f32]) {
    assert_eq!(out.len(), groups.len() * 4 * hn * GROUP, "recurrent pack: output for {groups:?} groups, H={hn}");
    for (g, group) in groups.zip(out.chunks_exact_mut((4 * hn * GROUP).max(1))) {
        let width = GROUP.min(hn - g * GROUP);
        for (m, lanes) in group.chunks_exact_mut(GROUP).enumerate() {
            lanes[..width].copy_from_slice(&w[m * hn + g * GROUP..][..width]);
            lanes[width..].fill(0.0);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::{GROUP, UNITS};
    use crate::cell::{CellBwd, CellFwd, CellStep, View};
    use std::arch::x86_64::*;
    use std::ops::Range;
    use ulmfit_tensor::simd::Avx512;

    /// Forward register tile: 6 batch rows x 4 gates of 16 units = 24 accumulators.
    const ROWS_FWD: usize = 6;
    /// Backward register tile: 6 batch rows x 4 blocks of 16 units = 24 accumulators
    /// (8 rows for the last one or two blocks of a range).
    const ROWS_BWD: usize = 6;
    /// Blocks of 16 units per backward tile.
    const BLOCKS_BWD: usize = 4;
    /// K slices sized so one B slice (128 x 64 floats, 32 KiB) stays in L1 while every
    /// row tile of the step streams past it.
    const KC_FWD: usize = 128;
    const KC_BWD: usize = 128;

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
        /// Start from zero instead of c's current values.
        zero: bool,
    }

    #[inline(always)]
    unsafe fn tile<const R: usize, const P: usize>(t: &Tile) {
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        for (r, acc_r) in acc.iter_mut().enumerate() {
            for (p, v) in acc_r.iter_mut().enumerate() {
                let m = if t.zero { 0 } else { t.mask[p] };
                *v = _mm512_maskz_loadu_ps(m, t.c.add(r * t.ldc + p * t.pc));
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

    /// `rows` cut into the fewest tiles of at most `max` rows, as even as possible
    /// (32 rows as 6,6,5,5,5,5 rather than 6,6,6,6,6,2): (first row, rows) of each.
    fn row_tiles(rows: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
        let n = rows.div_ceil(max);
        (0..n).map(move |i| (i * rows / n, (i + 1) * rows / n - i * rows / n))
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

    /// One product term of a forward step: `A [rows, k] . W^T` with W packed by `pack_fwd`
    /// over all unit blocks (`w` points at block 0).
    pub struct Term {
        pub w: *const f32,
        pub a: *const f32,
        pub k: usize,
    }

    /// Forward step on `rows` rows and unit blocks `blocks`: `s.gates (+)= sum of the terms`
    /// (added to the gates' current values when `accumulate`), then the cell on those units.
    ///
    /// # Safety
    /// AVX-512F available; each term's `w` packed by `pack_fwd` with its `k` for all H/16
    /// blocks and `a` holding [rows, k]; `s` checked for `rows` x `hn`; no other thread
    /// touches these blocks' units of `s`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn forward(
        terms: &[Term],
        hn: usize,
        s: &mut CellFwd,
        rows: usize,
        blocks: Range<usize>,
        accumulate: bool,
    ) {
        for u in blocks {
            let (j, width) = (u * UNITS, UNITS.min(hn - u * UNITS));
            for (n, term) in terms.iter().enumerate() {
                for k0 in (0..term.k).step_by(KC_FWD) {
                    let kc = KC_FWD.min(term.k - k0);
                    for (row, r) in row_tiles(rows, ROWS_FWD) {
                        let t = Tile {
                            a: term.a.add(row * term.k + k0),
                            lda: term.k,
                            k: kc,
                            b: term.w.add((u * term.k + k0) * 4 * UNITS),
                            ldb: 4 * UNITS,
                            pb: UNITS,
                            c: s.gates.ptr().add(row * 4 * hn + j),
                            ldc: 4 * hn,
                            pc: hn,
                            mask: [mask(width); 4],
                            zero: !accumulate && n == 0 && k0 == 0,
                        };
                        tile_rows::<4>(r, &t);
                        if n + 1 == terms.len() && k0 + kc == term.k {
                            for i in 0..r {
                                lanes_block(s, hn, row + i, j, width);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Backward step on `rows` rows and unit blocks `blocks`: `dh = dz . W_hh` on those units,
    /// then (if given) the backward cell `s` there, reading `dh` as its `dh_rec`.
    ///
    /// # Safety
    /// AVX-512F available; `w` packed by `pack_bwd` for all H/64 groups; `blocks` starts on
    /// a group (a multiple of 4); `dz` [rows, 4H] and `dh` [rows, H]; no other thread
    /// touches these blocks' units of `dh` or `s`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn backward(
        w: *const f32,
        hn: usize,
        dz: &[f32],
        dh: View,
        mut s: Option<CellBwd>,
        rows: usize,
        blocks: Range<usize>,
    ) {
        assert!(dz.len() >= rows * 4 * hn && dh.floats() >= rows * hn, "recurrent backward: dz or dh too short");
        if let Some(s) = &mut s {
            s.dh_rec = dh;
            s.check(rows, hn);
        }
        assert!(
            blocks.start.is_multiple_of(BLOCKS_BWD),
            "recurrent backward: blocks {blocks:?} do not start on a group"
        );
        let kn = 4 * hn;
        let width = |u: usize| if u < blocks.end { UNITS.min(hn - u * UNITS) } else { 0 };
        for u in blocks.clone().step_by(BLOCKS_BWD) {
            let n = BLOCKS_BWD.min(blocks.end - u);
            let max_rows = if n > 2 { ROWS_BWD } else { 8 };
            for k0 in (0..kn).step_by(KC_BWD) {
                let kc = KC_BWD.min(kn - k0);
                for (row, r) in row_tiles(rows, max_rows) {
                    let t = Tile {
                        a: dz.as_ptr().add(row * kn + k0),
                        lda: kn,
                        k: kc,
                        b: w.add((u / BLOCKS_BWD * kn + k0) * GROUP),
                        ldb: GROUP,
                        pb: UNITS,
                        c: dh.ptr().add(row * hn + u * UNITS),
                        ldc: hn,
                        pc: UNITS,
                        mask: std::array::from_fn(|p| mask(width(u + p))),
                        zero: k0 == 0,
                    };
                    if let (Some(s), true) = (&s, k0 + kc < kn && k0 + 2 * kc >= kn) {
                        // The cell's saved gates, c and dy for these rows, one slice ahead.
                        for i in 0..r {
                            for v in u..u + n {
                                s.prefetch(hn, row + i, v * UNITS);
                            }
                        }
                    }
                    match n {
                        1 => tile_rows::<1>(r, &t),
                        2 => tile_rows::<2>(r, &t),
                        3 => tile_rows::<3>(r, &t),
                        _ => tile_rows::<4>(r, &t),
                    }
                    if let (Some(s), true) = (&mut s, k0 + kc == kn) {
                        // The cell reads dh_rec at exactly the units just finished.
                        for i in 0..r {
                            for v in u..u + n {
                                lanes_block(s, hn, row + i, v * UNITS, width(v));
                            }
                        }
                    }
                }
            }
        }
    }

    /// The cell `s` alone on unit blocks `blocks` of `rows` rows.
    ///
    /// # Safety
    /// AVX-512F available; `s` checked for `rows` x `hn`; no other thread touches these units of `s`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn cell_blocks<S: CellStep>(s: &mut S, hn: usize, rows: usize, blocks: Range<usize>) {
        for row in 0..rows {
            for u in blocks.clone() {
                lanes_block(s, hn, row, u * UNITS, UNITS.min(hn - u * UNITS));
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
