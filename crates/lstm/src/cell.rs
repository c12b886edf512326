//! The fused LSTM cell for one time step, forward and backward, in explicit SIMD.
//!
//! Gate order i, f, g, o. Each kernel walks rows `b` of the batch and hidden units `j` in
//! vectors of `V::N` lanes, finishing each row with the scalar (`f32`) instance of the same
//! generic body. Checked against `reference.rs` through the layer tests, and every ISA
//! against the scalar path (`simd_paths_match_scalar_path` in tests/fused.rs).

use std::marker::PhantomData;

use ulmfit_tensor::simd::{self, Lanes};

pub use ulmfit_tensor::simd::Isa;

/// A raw view of an f32 buffer: the cell kernels address it by (row, unit). Views of one
/// step may be held by several threads at once when each touches only its own hidden units
/// (`split.rs`); the safe constructors below build them from borrowed slices.
#[derive(Clone, Copy)]
pub struct View {
    ptr: *mut f32,
    len: usize,
}

impl View {
    /// A view of `v`, written by the kernels.
    pub fn of_mut(v: &mut [f32]) -> Self {
        View { ptr: v.as_mut_ptr(), len: v.len() }
    }
    /// A view of `v`, only read by the kernels.
    pub fn of(v: &[f32]) -> Self {
        View { ptr: v.as_ptr() as *mut f32, len: v.len() }
    }
    /// A view of `len` floats at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr+len` stays valid while the view is used; no two threads touch the same element
    /// without synchronisation, and elements only read through `View::of` are never written.
    pub unsafe fn raw(ptr: *mut f32, len: usize) -> Self {
        View { ptr, len }
    }
    /// Number of floats in the view.
    pub fn floats(&self) -> usize {
        self.len
    }
    /// The first float.
    pub fn ptr(&self) -> *mut f32 {
        self.ptr
    }
}

/// Buffers of one forward step for `rows` batch rows, H hidden units (fields private to
/// the crate: a view swapped for a shorter-lived one would outlive its buffer).
pub struct CellFwd<'a> {
    /// In: pre-activations `x W_ih^T + h W_hh^T` (no bias); out: activated gates. [rows, 4H]
    pub(crate) gates: View,
    /// `b_ih + b_hh`, `[4H]`
    pub(crate) bias: View,
    /// c_{t-1}, [rows, H]
    pub(crate) c_prev: View,
    /// Out: c_t, [rows, H]
    pub(crate) c: View,
    /// Out: h_t, [rows, H]
    pub(crate) h: View,
    life: PhantomData<&'a mut [f32]>,
}

impl<'a> CellFwd<'a> {
    /// The step over borrowed buffers (shapes on the fields).
    pub fn new(gates: &'a mut [f32], bias: &'a [f32], c_prev: &'a [f32], c: &'a mut [f32], h: &'a mut [f32]) -> Self {
        let (gates, bias, c_prev) = (View::of_mut(gates), View::of(bias), View::of(c_prev));
        CellFwd { gates, bias, c_prev, c: View::of_mut(c), h: View::of_mut(h), life: PhantomData }
    }
    /// The step over raw views (see `View::raw` for the contract).
    ///
    /// # Safety
    /// As `View::raw`, for every view, for the lifetime `'a`.
    pub unsafe fn from_views(gates: View, bias: View, c_prev: View, c: View, h: View) -> Self {
        CellFwd { gates, bias, c_prev, c, h, life: PhantomData }
    }
}

/// Buffers of one backward step for `rows` batch rows, H hidden units.
pub struct CellBwd<'a> {
    /// In: activated gates of step t; out: dL/d(pre-activation). [rows, 4H]
    pub(crate) gates: View,
    /// c_t and c_{t-1}, [rows, H]
    pub(crate) c: View,
    pub(crate) c_prev: View,
    /// dL/dh_t from the output and from step t+1, [rows, H] each
    pub(crate) dy: View,
    pub(crate) dh_rec: View,
    /// In: dL/dc_t from step t+1; out: dL/dc_{t-1}. [rows, H]
    pub(crate) dc: View,
    life: PhantomData<&'a mut [f32]>,
}

impl<'a> CellBwd<'a> {
    /// The step over borrowed buffers (shapes on the fields).
    pub fn new(
        gates: &'a mut [f32],
        (c, c_prev): (&'a [f32], &'a [f32]),
        (dy, dh_rec): (&'a [f32], &'a [f32]),
        dc: &'a mut [f32],
    ) -> Self {
        let (gates, c, c_prev, dy) = (View::of_mut(gates), View::of(c), View::of(c_prev), View::of(dy));
        CellBwd { gates, c, c_prev, dy, dh_rec: View::of(dh_rec), dc: View::of_mut(dc), life: PhantomData }
    }
    /// The step over raw views (see `View::raw` for the contract).
    ///
    /// # Safety
    /// As `View::raw`, for every view, for the lifetime `'a`.
    pub unsafe fn from_views(gates: View, (c, c_prev): (View, View), (dy, dh_rec): (View, View), dc: View) -> Self {
        CellBwd { gates, c, c_prev, dy, dh_rec, dc, life: PhantomData }
    }

    /// Asks the cache for the saved gates, c, c_prev and dy that the cell reads at units
    /// `j..j+16` of `row`, so the backward tiles fetch them (the trace streams from L3)
    /// while they compute.
    pub fn prefetch(&self, hn: usize, row: usize, j: usize) {
        let (g, at) = (self.gates.ptr.wrapping_add(row * 4 * hn + j), row * hn + j);
        for k in 0..4 {
            fetch(g.wrapping_add(k * hn), true);
        }
        for v in [self.c, self.c_prev, self.dy] {
            fetch(v.ptr.wrapping_add(at), false);
        }
    }
}

/// One step's buffers, processed `V::N` hidden units of one row at a time.
pub trait CellStep {
    /// Checks every buffer against `rows` x `hn` and panics naming the one that disagrees.
    fn check(&self, rows: usize, hn: usize);
    /// Processes units `j..j+V::N` of `row`.
    ///
    /// # Safety
    /// `row < rows()`, `j + V::N <= H`, the buffers hold the shapes documented on the struct,
    /// and the CPU supports `V`.
    unsafe fn lanes<V: Lanes>(&mut self, hn: usize, row: usize, j: usize);
}

/// Prefetches the 16 floats at `p` (two lines when they straddle), for writing if `write`.
/// A prefetch never faults, so any address is fine.
#[inline(always)]
fn fetch(p: *const f32, write: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0, _MM_HINT_T0};
        for q in [p, p.wrapping_add(15)] {
            // SAFETY: prefetch is a hint; it does not fault on any address.
            unsafe {
                if write {
                    _mm_prefetch::<_MM_HINT_ET0>(q as *const i8);
                } else {
                    _mm_prefetch::<_MM_HINT_T0>(q as *const i8);
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, write);
}

impl CellStep for CellFwd<'_> {
    fn check(&self, rows: usize, hn: usize) {
        let n = rows * hn;
        let lens = [("gates", self.gates.len, 4 * n), ("bias", self.bias.len, 4 * hn), ("c_prev", self.c_prev.len, n)];
        check_lens("cell forward", &lens);
        check_lens("cell forward", &[("c", self.c.len, n), ("h", self.h.len, n)]);
    }
    /// `c = f c_prev + i g`, `h = o tanh(c)`.
    #[inline(always)]
    unsafe fn lanes<V: Lanes>(&mut self, hn: usize, row: usize, j: usize) {
        let s = self;
        let (g, bias) = (s.gates.ptr.add(row * 4 * hn + j), s.bias.ptr.add(j));
        let pre = |k: usize| V::load(g.add(k * hn)).add(V::load(bias.add(k * hn)));
        let i = simd::sigmoid(pre(0));
        let f = simd::sigmoid(pre(1));
        let gg = simd::tanh(pre(2));
        let o = simd::sigmoid(pre(3));
        let at = row * hn + j;
        let c = f.mul(V::load(s.c_prev.ptr.add(at))).add(i.mul(gg));
        c.store(s.c.ptr.add(at));
        o.mul(simd::tanh(c)).store(s.h.ptr.add(at));
        for (k, v) in [i, f, gg, o].into_iter().enumerate() {
            v.store(g.add(k * hn));
        }
    }
}

impl CellStep for CellBwd<'_> {
    fn check(&self, rows: usize, hn: usize) {
        let n = rows * hn;
        let lens = [("gates", self.gates.len, 4 * n), ("c", self.c.len, n), ("c_prev", self.c_prev.len, n)];
        check_lens("cell backward", &lens);
        let lens = [("dy", self.dy.len, n), ("dh_rec", self.dh_rec.len, n), ("dc", self.dc.len, n)];
        check_lens("cell backward", &lens);
    }
    /// Gate gradients from the saved activations (sigmoid' = v (1 - v), tanh' = 1 - v^2).
    #[inline(always)]
    unsafe fn lanes<V: Lanes>(&mut self, hn: usize, row: usize, j: usize) {
        let s = self;
        let g = s.gates.ptr.add(row * 4 * hn + j);
        let (i, f, gg, o) = (V::load(g), V::load(g.add(hn)), V::load(g.add(2 * hn)), V::load(g.add(3 * hn)));
        let at = row * hn + j;
        let one = V::splat(1.0);
        let tc = simd::tanh(V::load(s.c.ptr.add(at)));
        let dh = V::load(s.dy.ptr.add(at)).add(V::load(s.dh_rec.ptr.add(at)));
        // dc = dc_next + dh o (1 - tanh(c)^2)
        let dc = dh.mul(o).mul(one.sub(tc.mul(tc))).add(V::load(s.dc.ptr.add(at)));
        let dgate = |v: V, d: V| d.mul(v).mul(one.sub(v)); // sigmoid' = v (1 - v)
        dgate(i, dc.mul(gg)).store(g);
        dgate(f, dc.mul(V::load(s.c_prev.ptr.add(at)))).store(g.add(hn));
        dc.mul(i).mul(one.sub(gg.mul(gg))).store(g.add(2 * hn));
        dgate(o, dh.mul(tc)).store(g.add(3 * hn));
        dc.mul(f).store(s.dc.ptr.add(at));
    }
}

fn check_lens(op: &str, lens: &[(&str, usize, usize)]) {
    for &(name, got, want) in lens {
        assert_eq!(got, want, "{op}: {name} has {got} elements, expected {want}");
    }
}

/// Runs `s` over all `rows` x `hn` units: full vectors, then the row's scalar tail.
#[inline(always)]
unsafe fn run_rows<V: Lanes, S: CellStep>(s: &mut S, rows: usize, hn: usize) {
    let full = hn - hn % V::N;
    for row in 0..rows {
        for j in (0..full).step_by(V::N) {
            s.lanes::<V>(hn, row, j);
        }
        for j in full..hn {
            s.lanes::<f32>(hn, row, j);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<S: CellStep>(s: &mut S, rows: usize, hn: usize) {
    run_rows::<simd::Avx2, S>(s, rows, hn)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<S: CellStep>(s: &mut S, rows: usize, hn: usize) {
    run_rows::<simd::Avx512, S>(s, rows, hn)
}

/// Runs one cell step (forward or backward) over `rows` x `hn` units with `isa`.
pub fn run<S: CellStep>(isa: Isa, s: &mut S, rows: usize, hn: usize) {
    s.check(rows, hn);
    assert!(isa.available(), "cell: {isa:?} is not supported by this CPU");
    // SAFETY: buffer lengths checked above; the ISA is supported.
    unsafe {
        match isa {
            Isa::Scalar => run_rows::<f32, S>(s, rows, hn),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => run_avx2(s, rows, hn),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => run_avx512(s, rows, hn),
            #[allow(unreachable_patterns)]
            _ => unreachable!("available() admits only Scalar off x86_64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Isa;

    /// `available` asks for each ISA's own features: AVX2 needs avx2 and fma even on an
    /// AVX-512F CPU; `detect` picks only an available ISA.
    #[test]
    fn each_isa_is_available_exactly_when_the_cpu_has_its_features() {
        #[cfg(target_arch = "x86_64")]
        let (avx2, avx512) =
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"), is_x86_feature_detected!("avx512f"));
        #[cfg(not(target_arch = "x86_64"))]
        let (avx2, avx512) = (false, false);
        for (isa, want) in [(Isa::Scalar, true), (Isa::Avx2, avx2), (Isa::Avx512, avx512)] {
            assert_eq!(isa.available(), want, "{isa:?}.available() disagrees with the CPU's features");
        }
        assert!(Isa::detect().available(), "detect() picked {:?}, which is not available", Isa::detect());
    }
}
