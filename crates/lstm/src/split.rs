//! The time loops for small layers on AVX-512: hidden units split across threads.
//!
//! Each thread owns a contiguous range of 16-unit blocks ("part") for the whole sequence,
//! and packs its share of W_ih and W_hh itself at the first step, so it stays in that
//! core's L2 for all T steps. Forward step t of a part: `z = x_t W_ih^T + h_{t-1} W_hh^T`
//! on the part's units (the input projection folded into the step: no separate GEMM, no
//! round trip of `[T, B, 4H]` through memory), then the cell on them while they are hot.
//! Backward stage s (t = T-1-s): `dh_t = dz_{t+1} W_hh` on the part's units, then the
//! backward cell of step t; stage T gives dh0.
//!
//! A step needs every part's previous step (h_{t-1} and dz_{t+1} span all units), so the
//! threads wait on each other's progress counters: one spin-wait per step instead of a
//! rayon join or barrier. A part whose thread has not started yet (rayon's other threads
//! busy or asleep) is run by whichever thread is there, so the loops always finish.
//! Every element's arithmetic is fixed by its part, so runs repeat bit for bit.
//! Checked against `reference.rs` through the layer (tests/fused.rs).

// The kernels are AVX-512 (x86-64 only); elsewhere `pays` is false and the steps are empty.
#![cfg_attr(not(target_arch = "x86_64"), allow(unused))]

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::batched;
#[cfg(target_arch = "x86_64")]
use crate::cell::{CellBwd, CellFwd, CellStep};
use crate::cell::{Isa, View};
#[cfg(target_arch = "x86_64")]
use crate::recurrent::avx512;
use crate::recurrent::{pack_bwd, pack_fwd, padded, GROUP, UNITS};
use ulmfit_tensor::pool;

/// Most bytes of packed weights per thread: its share of W_ih and W_hh must stay in its
/// 1 MiB L2 (2-core Zen 5) next to the step's working set.
const L2_WEIGHTS: usize = 832 << 10;

/// Polls of the progress counters before a waiting thread starts yielding its core (a
/// step takes tens of microseconds; this is a few).
const SPINS: u32 = 1 << 12;

/// Whether the split loops run for B rows, I inputs, H units: AVX-512 asked for and present
/// on this CPU (the kernels use it unchecked), below the batched loops' sizes, and each
/// thread's packed W_ih and W_hh fit `L2_WEIGHTS`.
pub fn pays((bn, inp, hn): (usize, usize, usize), isa: Isa) -> bool {
    let threads = rayon::current_num_threads().clamp(1, hn.div_ceil(GROUP).max(1));
    let bytes = 4 * 4 * hn.next_multiple_of(UNITS) * (inp + hn) / threads;
    cfg!(target_arch = "x86_64")
        && isa == Isa::Avx512
        && isa.available()
        && !batched::pays(bn, hn, isa)
        && threads > 1
        && bytes <= L2_WEIGHTS
}

/// The unit-block ranges of the parts: one per thread, whole groups of 4 blocks (the
/// backward tiles), as even as the H/64 groups allow.
fn parts(hn: usize) -> Vec<Range<usize>> {
    let (blocks, groups) = (hn.div_ceil(UNITS), hn.div_ceil(GROUP));
    let n = rayon::current_num_threads().clamp(1, groups.max(1));
    let per = GROUP / UNITS;
    (0..n).map(|q| (q * groups / n * per).min(blocks)..((q + 1) * groups / n * per).min(blocks)).collect()
}

/// A raw pointer the step closures share; each part writes only its own units.
#[derive(Clone, Copy)]
struct Ptr(*mut f32);
// SAFETY: parts touch disjoint elements, and a step reads other parts' output only after
// their progress counters (Release / Acquire) say it is complete (`run_steps`).
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

impl Ptr {
    /// The element `at` (a method, so closures capture the whole `Ptr`, not its field).
    fn at(self, at: usize) -> *mut f32 {
        self.0.wrapping_add(at)
    }
    /// A view of `len` floats from element `at`.
    ///
    /// # Safety
    /// `at + len` lies inside the buffer the pointer came from.
    unsafe fn view(self, at: usize, len: usize) -> View {
        View::raw(self.0.add(at), len)
    }
}

/// One part's progress, on its own cache line(s).
#[repr(align(128))]
#[derive(Default)]
struct Slot {
    /// Steps claimed so far.
    next: AtomicUsize,
    /// Steps finished so far.
    done: AtomicUsize,
    /// Whether the part's own thread has started.
    arrived: AtomicBool,
}

/// Sets its flag when dropped during a panic: marks the steps as abandoned.
struct PoisonOnPanic<'a>(&'a AtomicBool);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// Runs `step(part, s)` for every part and `s` in `0..steps`, where step s of any part may
/// start once step s-1 of every part has finished. Thread w runs part w; parts whose
/// thread has not arrived are run by the others. A panicking step stops every thread (none
/// waits for a step that will never finish) and the panic reaches the caller.
fn run_steps(parts: usize, steps: usize, step: &(dyn Fn(usize, usize) + Sync)) {
    let slots: Vec<Slot> = (0..parts).map(|_| Slot::default()).collect();
    let poisoned = AtomicBool::new(false);
    let ready = |s: usize| slots.iter().all(|o| o.done.load(Ordering::Acquire) >= s);
    let work = |w: usize| {
        slots[w].arrived.store(true, Ordering::Relaxed);
        let mut idle = 0u32;
        loop {
            if poisoned.load(Ordering::Acquire) {
                return; // a step panicked; rayon::scope re-raises it
            }
            let (mut open, mut ran) = (false, false);
            for q in (w..parts).chain(0..w) {
                let slot = &slots[q];
                if q != w && slot.arrived.load(Ordering::Relaxed) {
                    continue; // its own thread runs it
                }
                let s = slot.next.load(Ordering::Acquire);
                if s >= steps {
                    continue;
                }
                open = true;
                if ready(s) && slot.next.compare_exchange(s, s + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    let guard = PoisonOnPanic(&poisoned);
                    step(q, s);
                    drop(guard);
                    slot.done.store(s + 1, Ordering::Release);
                    ran = true;
                    break;
                }
            }
            if !open {
                return;
            }
            if ran {
                idle = 0;
            } else {
                // A partner that is not running (a loaded machine) would waste our time slice.
                idle += 1;
                if idle < SPINS {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    };
    rayon::scope(|sc| {
        for w in 1..parts {
            let work = &work;
            sc.spawn(move |_| work(w));
        }
        work(0);
    });
}

/// Forward through time for `x` [T, B, I]: `gates` [T, B, 4H] receives the activated gates,
/// `c`, `y` [T, B, H] the cell states and outputs. Shapes checked by the caller.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    (bn, inp, hn): (usize, usize, usize),
    (w_ih, w_hh): (&[f32], &[f32]),
    bias: &[f32],
    x: &[f32],
    (h0, c0): (&[f32], &[f32]),
    gates: &mut [f32],
    c: &mut [f32],
    y: &mut [f32],
) {
    let (g4, bh) = (4 * hn, bn * hn);
    let tn = c.len() / bh.max(1);
    let nb = hn.div_ceil(UNITS);
    let parts = parts(hn);
    // W_ih, W_hh packed as [H/16][K][4][16]; each part fills its own blocks at step 0.
    let (mut pih, mut phh) = (padded(nb * inp * 4 * UNITS, hn), padded(nb * hn * 4 * UNITS, hn));
    let (pih_at, phh_at) = (Ptr(pih.as_mut_ptr()), Ptr(phh.as_mut_ptr()));
    let (g_at, c_at, y_at) = (Ptr(gates.as_mut_ptr()), Ptr(c.as_mut_ptr()), Ptr(y.as_mut_ptr()));
    let step = |q: usize, t: usize| {
        let blocks = parts[q].clone();
        // SAFETY: every view lies inside its buffer ([T, B, 4H], [T, B, H], packed sizes
        // above); part q writes only its blocks' units, and reads the other parts' h_{t-1}
        // after `run_steps` saw step t-1 finish. `pays` checked that the CPU has AVX-512.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if t == 0 {
                let (ih, hh) = (inp * 4 * UNITS, hn * 4 * UNITS);
                let out = std::slice::from_raw_parts_mut(pih_at.at(blocks.start * ih), blocks.len() * ih);
                pack_fwd(w_ih, hn, inp, blocks.clone(), out);
                let out = std::slice::from_raw_parts_mut(phh_at.at(blocks.start * hh), blocks.len() * hh);
                pack_fwd(w_hh, hn, hn, blocks.clone(), out);
            }
            let (h_prev, c_prev) = match t {
                0 => (View::of(h0), View::of(c0)),
                _ => (y_at.view((t - 1) * bh, bh), c_at.view((t - 1) * bh, bh)),
            };
            let (g, c_t, y_t) = (g_at.view(t * bn * g4, bn * g4), c_at.view(t * bh, bh), y_at.view(t * bh, bh));
            let mut s = CellFwd::from_views(g, View::of(bias), c_prev, c_t, y_t);
            s.check(bn, hn);
            let terms = [
                avx512::Term { w: pih_at.at(0), a: x.as_ptr().add(t * bn * inp), k: inp },
                avx512::Term { w: phh_at.at(0), a: h_prev.ptr(), k: hn },
            ];
            let terms = if inp == 0 { &terms[1..] } else { &terms[..] };
            avx512::forward(terms, hn, &mut s, bn, blocks, false);
        }
    };
    run_steps(parts.len(), tn, &step);
    pool::give(pih);
    pool::give(phh);
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
) {
    let (g4, bh) = (4 * hn, bn * hn);
    let tn = c.len() / bh.max(1);
    if tn == 0 {
        return;
    }
    let parts = parts(hn);
    // W_hh packed as [H/64][4H][64]; each part fills its own groups at stage 0.
    let mut pw = pool::take(hn.div_ceil(GROUP) * g4 * GROUP);
    let (pw_at, dz_at, dh_at, dc_at) =
        (Ptr(pw.as_mut_ptr()), Ptr(dz.as_mut_ptr()), Ptr(dh.as_mut_ptr()), Ptr(dc.as_mut_ptr()));
    let step = |q: usize, s: usize| {
        let blocks = parts[q].clone();
        // SAFETY: as in `forward`: views inside their buffers, part q writes only its units
        // (of dz_t, dh, dc), and reads dz_{t+1} of all units after every part finished it;
        // `pays` checked that the CPU has AVX-512.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if s == 0 {
                let (per, groups) = (g4 * GROUP, blocks.start * UNITS / GROUP..(blocks.end * UNITS).div_ceil(GROUP));
                let out = std::slice::from_raw_parts_mut(pw_at.at(groups.start * per), groups.len() * per);
                pack_bwd(w_hh, hn, groups, out);
            }
            let dh_v = dh_at.view(0, bh);
            if s == tn {
                // dh0 = dz_0 . W_hh
                let dz0 = std::slice::from_raw_parts(dz_at.at(0), bn * g4);
                avx512::backward(pw_at.at(0), hn, dz0, dh_v, None, bn, blocks);
                return;
            }
            let t = tn - 1 - s;
            let c_prev = if t == 0 { View::of(c0) } else { View::of(&c[(t - 1) * bh..t * bh]) };
            let (c_t, dy_t) = (View::of(&c[t * bh..][..bh]), View::of(&dy[t * bh..][..bh]));
            let mut cell =
                CellBwd::from_views(dz_at.view(t * bn * g4, bn * g4), (c_t, c_prev), (dy_t, dh_v), dc_at.view(0, bh));
            if s == 0 {
                // The last step reads dh_n as its recurrent dh.
                cell.check(bn, hn);
                avx512::cell_blocks(&mut cell, hn, bn, blocks);
            } else {
                // dh_t = dz_{t+1} . W_hh, then the cell of step t.
                let next = std::slice::from_raw_parts(dz_at.at((t + 1) * bn * g4), bn * g4);
                avx512::backward(pw_at.at(0), hn, next, dh_v, Some(cell), bn, blocks);
            }
        }
    };
    run_steps(parts.len(), tn + 1, &step);
    pool::give(pw);
}

#[cfg(test)]
mod tests {
    use super::{pays, run_steps};
    use crate::testutil::check_layer;
    use crate::{Isa, LstmDims};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// T=4, H=200: parts of 8 and 5 blocks (one ending in a partial group), an 8-unit tail
    /// block, B=13 in uneven row tiles. T=1, H=130: one step, parts of 4 and 5 blocks.
    #[test]
    fn split_loops_match_reference_and_repeat_bit_for_bit() {
        if !Isa::Avx512.available() || rayon::current_num_threads() < 2 {
            println!("skipping the split loops: they need AVX-512 and two threads");
            return;
        }
        for d in [LstmDims { t: 4, b: 13, i: 20, h: 200 }, LstmDims { t: 1, b: 3, i: 7, h: 130 }] {
            assert!(pays((d.b, d.i, d.h), Isa::Avx512), "the test shape {d:?} must take the split loops");
            check_layer(d, Isa::Avx512);
        }
    }

    /// A step that panics (part 1, step 2) makes `run_steps` panic instead of leaving the
    /// other threads waiting for it forever; a watchdog fails the test if it hangs.
    #[test]
    fn a_panicking_step_propagates_instead_of_hanging() {
        for (threads, parts) in [(1, 2), (2, 2), (2, 3)] {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a rayon pool");
                let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    pool.install(|| {
                        run_steps(parts, 5, &|q, s| {
                            if (q, s) == (1, 2) {
                                panic!("deliberate panic in part 1, step 2");
                            }
                        })
                    })
                }));
                let _ = tx.send(caught.is_err());
            });
            match rx.recv_timeout(std::time::Duration::from_secs(10)) {
                Ok(panicked) => assert!(panicked, "{threads} threads, {parts} parts: the step's panic was swallowed"),
                Err(_) => panic!("{threads} threads, {parts} parts: run_steps hung after a step panicked"),
            }
        }
    }

    /// The split loops run AVX-512 kernels unchecked, so `pays` is true only where the CPU has
    /// AVX-512 (and for no other ISA), whatever ISA the caller of `layer::forward` names.
    #[test]
    fn pays_only_where_the_cpu_has_avx512() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a rayon pool");
        let shape = (13, 20, 200); // the split test's shape: pays on an AVX-512 CPU
        pool.install(|| {
            let have = cfg!(target_arch = "x86_64") && Isa::Avx512.available();
            assert_eq!(pays(shape, Isa::Avx512), have, "pays({shape:?}, Avx512) with AVX-512 present: {have}");
            for isa in [Isa::Scalar, Isa::Avx2] {
                assert!(!pays(shape, isa), "pays({shape:?}, {isa:?}) must be false");
            }
        });
    }

    /// Every step starts only after the previous step of every part finished, each part's
    /// steps run in order, and the loops finish when one thread has to run all parts.
    #[test]
    fn steps_respect_dependencies_with_or_without_partner_threads() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a rayon pool");
            let (parts, steps) = (3, 40);
            let done: Vec<AtomicUsize> = (0..steps).map(|_| AtomicUsize::new(0)).collect();
            let next: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            pool.install(|| {
                run_steps(parts, steps, &|q, s| {
                    assert_eq!(next[q].swap(s + 1, Ordering::SeqCst), s, "part {q}: step {s} out of order");
                    let before = if s == 0 { parts } else { done[s - 1].load(Ordering::SeqCst) };
                    assert_eq!(
                        before,
                        parts,
                        "part {q} step {s} started with {before}/{parts} of step {} done",
                        s.max(1) - 1
                    );
                    done[s].fetch_add(1, Ordering::SeqCst);
                })
            });
            let all = done.iter().map(|d| d.load(Ordering::SeqCst)).collect::<Vec<_>>();
            assert!(all.iter().all(|&n| n == parts), "{threads} threads: steps done per step {all:?}");
        }
    }
}
