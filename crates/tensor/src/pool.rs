//! A per-thread cache of large f32 buffers, shared by the engine's ops and the fused LSTM,
//! so that big outputs (the decoder's `[T*B, V]` logits, their softmax and gradient, the
//! LSTM's `[T, B, 4H]` gates) reuse memory freed by the previous step instead of mapping and
//! page-faulting fresh pages every time: a fresh 600 MB output costs the decoder GEMM about
//! a third of its speed on the dev machine.
//!
//! Tensors give their buffer back when they drop, and so does the LSTM's trace; code that
//! overwrites every element takes buffers with `take` (contents stale: valid floats, not
//! zeros). Eviction is first in, first out, and the cache holds about one language-model
//! step's worth of freed buffers (an LM step frees about 50 of at least 1 MiB): with 12, the
//! decoder's buffers, freed first in the backward, were evicted before the next step could
//! reuse them, and the CPU preset's LM step ran 1.25x slower; with 1024, buffers nobody asks
//! for again (most op outputs are allocated outside the cache and still come back to it)
//! piled up to 2 GB and the full-size step ran 1.2x slower on the dev machine. A training
//! stage, whose shapes differ from the last one's, starts by emptying it with
//! `release_cached_buffers`.

use std::cell::RefCell;

/// Buffers shorter than this (1 MiB) are left to the allocator.
const MIN_LEN: usize = 1 << 18;
/// Buffers kept per thread at most (the oldest is evicted first): one LM step's churn.
const KEEP: usize = 64;

thread_local! {
    /// Oldest first.
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` floats whose contents are unspecified: callers overwrite all of it.
pub fn take(len: usize) -> Vec<f32> {
    if len < MIN_LEN {
        return vec![0.0; len];
    }
    // Best fit among buffers no more than twice as large, so a small request does not pin a
    // huge buffer. `try_with`: during thread teardown the cache is gone and we allocate.
    let reused = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        let fit = (0..p.len()).filter(|&k| (len..=2 * len).contains(&p[k].capacity())).min_by_key(|&k| p[k].capacity());
        fit.map(|k| p.remove(k))
    });
    match reused.ok().flatten() {
        Some(mut v) => {
            v.resize(len, 0.0);
            v
        }
        None => vec![0.0; len],
    }
}

/// Returns a buffer to this thread's cache (the oldest is dropped when it is full; `v` is
/// dropped when it is small or the cache is already torn down).
pub fn give(v: Vec<f32>) {
    if v.capacity() < MIN_LEN {
        return;
    }
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        p.push(v);
        if p.len() > KEEP {
            p.remove(0);
        }
    });
}

/// Frees the buffers this thread's cache holds (for example between training stages, whose
/// tensor shapes differ), returning the number of bytes released.
pub fn release_cached_buffers() -> usize {
    let bytes = POOL.try_with(|p| p.borrow_mut().drain(..).map(|v| v.capacity() * std::mem::size_of::<f32>()).sum());
    bytes.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_buffer_outlives_one_steps_churn_and_release_frees_it() {
        release_cached_buffers();
        let big = vec![0.0f32; 4 * MIN_LEN];
        let ptr = big.as_ptr();
        give(big);
        // An LM step frees about 50 smaller buffers after the decoder's.
        (0..60).for_each(|_| give(vec![1.0; MIN_LEN]));
        let again = take(4 * MIN_LEN);
        assert_eq!(again.as_ptr(), ptr, "the large buffer was evicted by 60 smaller ones");
        // Too small a request for it: a 2 MiB buffer is not pinned by a 1 MiB request.
        give(again);
        assert!(take(MIN_LEN).capacity() < 2 * MIN_LEN, "a 1 MiB request took the 4 MiB buffer");
        let released = release_cached_buffers();
        assert_eq!(released, (59 * MIN_LEN + 4 * MIN_LEN) * 4, "release freed {released} bytes");
        assert_eq!(release_cached_buffers(), 0, "the cache is not empty after a release");
    }

    /// Drops that used the cache without panicking, and drops that found it torn down.
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    static LATE: AtomicUsize = AtomicUsize::new(0);

    /// Uses the cache when dropped, as a tensor or an LSTM trace held in a thread-local does
    /// at thread exit.
    struct UsesPoolOnDrop;
    impl Drop for UsesPoolOnDrop {
        fn drop(&mut self) {
            if POOL.try_with(|_| ()).is_err() {
                LATE.fetch_add(1, Ordering::SeqCst);
            }
            // Caught here: a panic escaping a thread-local's drop aborts the whole test binary.
            if std::panic::catch_unwind(|| give(take(MIN_LEN))).is_ok() {
                DROPS.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    thread_local! {
        static BEFORE: RefCell<Option<UsesPoolOnDrop>> = const { RefCell::new(None) };
        static AFTER: RefCell<Option<UsesPoolOnDrop>> = const { RefCell::new(None) };
    }

    /// Thread-locals registered before and after the cache: whichever order the runtime
    /// destroys them in, one of them uses the cache after it is gone, and must not panic.
    #[test]
    fn cache_used_during_thread_teardown_does_not_panic() {
        let t = std::thread::spawn(|| {
            BEFORE.with(|b| *b.borrow_mut() = Some(UsesPoolOnDrop));
            give(take(MIN_LEN)); // registers the cache's destructor
            AFTER.with(|a| *a.borrow_mut() = Some(UsesPoolOnDrop));
        });
        assert!(t.join().is_ok(), "the thread panicked while exiting");
        let (drops, late) = (DROPS.load(Ordering::SeqCst), LATE.load(Ordering::SeqCst));
        assert_eq!(drops, 2, "both thread-locals must use the cache without panicking ({drops} did)");
        assert!(late >= 1, "no drop ran after the cache was torn down: the test did not test it");
    }
}
