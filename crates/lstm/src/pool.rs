//! A small per-thread pool of f32 buffers, so the per-sequence trace ([T, B, 4H] gates and
//! [T, B, H] cell states, tens of MB at AWD-LSTM sizes) is not mapped and page-faulted
//! afresh by every forward; the packed W_hh copies are recycled the same way. Buffers come back stale: every user overwrites them completely.

use std::cell::RefCell;

/// Buffers kept per thread at most (a 3-layer stack keeps six traces and one packed W_hh).
const KEEP: usize = 10;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` floats with unspecified contents (recycled when one is big enough).
pub fn take(len: usize) -> Vec<f32> {
    let reused = POOL.with(|p| {
        let mut p = p.borrow_mut();
        let best = (0..p.len()).filter(|&k| p[k].capacity() >= len).min_by_key(|&k| p[k].capacity());
        best.map(|k| p.swap_remove(k))
    });
    match reused {
        Some(mut v) => {
            v.resize(len, 0.0);
            v
        }
        None => vec![0.0; len],
    }
}

/// Returns `v` to this thread's pool (dropping the smallest buffer when full).
pub fn give(v: Vec<f32>) {
    if v.capacity() == 0 {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.push(v);
        if p.len() > KEEP {
            let smallest = (0..p.len()).min_by_key(|&k| p[k].capacity()).expect("pool is not empty");
            p.swap_remove(smallest);
        }
    });
}
