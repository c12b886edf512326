//! A small per-thread pool of f32 buffers, so the per-sequence trace ([T, B, 4H] gates and
//! [T, B, H] cell states, tens of MB at AWD-LSTM sizes) is not mapped and page-faulted
//! afresh by every forward; the packed W_hh copies are recycled the same way. Buffers come
//! back stale: every user overwrites them completely. During thread-local teardown (a
//! `Saved` dropped at thread exit) the pool is gone: `take` allocates and `give` drops.

use std::cell::RefCell;

/// Buffers kept per thread at most (a 3-layer stack keeps six traces and one packed W_hh).
const KEEP: usize = 10;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` floats with unspecified contents (recycled when one is big enough).
pub fn take(len: usize) -> Vec<f32> {
    let reused = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        let best = (0..p.len()).filter(|&k| p[k].capacity() >= len).min_by_key(|&k| p[k].capacity());
        best.map(|k| p.swap_remove(k))
    });
    match reused.ok().flatten() {
        Some(mut v) => {
            v.resize(len, 0.0);
            v
        }
        None => vec![0.0; len],
    }
}

/// Returns `v` to this thread's pool (dropping the smallest buffer when full, or `v` when
/// the pool is already torn down).
pub fn give(v: Vec<f32>) {
    if v.capacity() == 0 {
        return;
    }
    // Err after teardown: `v` is dropped with the closure.
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        p.push(v);
        if p.len() > KEEP {
            let smallest = (0..p.len()).min_by_key(|&k| p[k].capacity()).expect("pool is not empty");
            p.swap_remove(smallest);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{give, take, POOL};
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Drops that used the pool without panicking, and drops that found it torn down.
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    static LATE: AtomicUsize = AtomicUsize::new(0);

    /// Uses the pool when dropped, as a `Saved` held in a thread-local does at thread exit.
    struct UsesPoolOnDrop;
    impl Drop for UsesPoolOnDrop {
        fn drop(&mut self) {
            if POOL.try_with(|_| ()).is_err() {
                LATE.fetch_add(1, Ordering::SeqCst);
            }
            // Caught here: a panic escaping a thread-local's drop aborts the whole test binary.
            if std::panic::catch_unwind(|| give(take(64))).is_ok() {
                DROPS.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    thread_local! {
        static BEFORE: RefCell<Option<UsesPoolOnDrop>> = const { RefCell::new(None) };
        static AFTER: RefCell<Option<UsesPoolOnDrop>> = const { RefCell::new(None) };
    }

    /// Thread-locals registered before and after the pool: whichever order the runtime
    /// destroys them in, one of them uses the pool after it is gone, and must not panic.
    #[test]
    fn pool_used_during_thread_teardown_does_not_panic() {
        let t = std::thread::spawn(|| {
            BEFORE.with(|b| *b.borrow_mut() = Some(UsesPoolOnDrop));
            give(take(16)); // registers the pool's destructor
            AFTER.with(|a| *a.borrow_mut() = Some(UsesPoolOnDrop));
        });
        assert!(t.join().is_ok(), "the thread panicked while exiting");
        let (drops, late) = (DROPS.load(Ordering::SeqCst), LATE.load(Ordering::SeqCst));
        assert_eq!(drops, 2, "both thread-locals must use the pool without panicking ({drops} did)");
        assert!(late >= 1, "no drop ran after the pool was torn down: the test did not test it");
    }
}
