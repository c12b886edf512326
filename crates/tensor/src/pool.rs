//! A small per-thread cache of large f32 buffers, so that big op outputs (the decoder's
//! `[T*B, V]` logits, their softmax, their gradient) reuse memory freed by the previous step
//! instead of mapping and page-faulting fresh pages every time: a fresh 600 MB output costs
//! the decoder GEMM about a third of its speed on the dev machine.
//!
//! Tensors give their buffer back when they drop; ops that overwrite every element take
//! buffers with `take`. Contents of a taken buffer are stale (valid floats, not zeros).

use std::cell::RefCell;

/// Buffers shorter than this (1 MiB) are left to the allocator.
const MIN_LEN: usize = 1 << 18;
/// Buffers kept per thread at most.
const KEEP: usize = 12;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` floats whose contents are unspecified: callers overwrite all of it.
pub(crate) fn take(len: usize) -> Vec<f32> {
    if len >= MIN_LEN {
        // Best fit among buffers no more than twice as large, so a small request does not
        // pin a huge buffer.
        let reused = POOL.with(|p| {
            let mut p = p.borrow_mut();
            let fit =
                (0..p.len()).filter(|&k| (len..=2 * len).contains(&p[k].capacity())).min_by_key(|&k| p[k].capacity());
            fit.map(|k| p.swap_remove(k))
        });
        if let Some(mut v) = reused {
            v.resize(len, 0.0);
            return v;
        }
    }
    vec![0.0; len]
}

/// Returns a buffer to this thread's cache (the oldest is dropped when it is full).
pub(crate) fn give(v: Vec<f32>) {
    if v.capacity() < MIN_LEN {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.push(v);
        if p.len() > KEEP {
            p.remove(0);
        }
    });
}
