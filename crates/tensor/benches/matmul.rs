//! `cargo bench -p ulmfit-tensor --bench matmul`: GFLOP/s of `Tensor::matmul` next to raw
//! `matrixmultiply::sgemm` on the same shapes in the same run.
//!
//! Raw is measured twice: on one thread, and split over N into one panel per core with
//! `std::thread::scope` (independent of our own splitting code). Our overhead is
//! `raw-split time / ours time - 1` over the best raw figure. Each figure is the median of
//! the repeats after one warm-up. FLOPs per product: 2 * M * K * N.

use std::time::Instant;
use ulmfit_tensor::Rng;

fn median_secs(repeats: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: page faults, packing buffers, thread pool
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[repeats / 2]
}

/// Raw matrixmultiply on `[m,k]·[k,n]`, with N split into `threads` panels.
fn raw_sgemm(a: &[f32], b: &[f32], c: &mut [f32], (m, k, n): (usize, usize, usize), threads: usize) {
    let panel = n.div_ceil(threads).next_multiple_of(16);
    std::thread::scope(|s| {
        for (p, lo) in (0..n).step_by(panel).enumerate() {
            let cols = panel.min(n - lo);
            let c_ptr = c.as_mut_ptr() as usize;
            let run = move || unsafe {
                // SAFETY: panel p writes columns lo..lo+cols of C only; panels are disjoint.
                matrixmultiply::sgemm(
                    m,
                    k,
                    cols,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr().add(lo),
                    n as isize,
                    1,
                    0.0,
                    (c_ptr as *mut f32).add(lo),
                    n as isize,
                    1,
                )
            };
            if p + 1 == n.div_ceil(panel) {
                run()
            } else {
                s.spawn(run);
            }
        }
    });
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("matmul GFLOP/s, {threads} threads, median of repeats");
    println!("{:<18} {:>12} {:>14} {:>10} {:>9}", "M x K x N", "raw 1 thread", "raw split", "ours", "ours/raw");
    let mut rng = Rng::new(0);
    for &(m, k, n, repeats) in &[(64, 1152, 4608, 50), (4480, 400, 33278, 5)] {
        let a = rng.uniform_tensor(&[m, k], -1.0, 1.0);
        let b = rng.uniform_tensor(&[k, n], -1.0, 1.0);
        let (av, bv) = (a.to_vec(), b.to_vec());
        let mut c = vec![0.0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let one = median_secs(repeats, || raw_sgemm(&av, &bv, &mut c, (m, k, n), 1));
        let split = median_secs(repeats, || raw_sgemm(&av, &bv, &mut c, (m, k, n), threads));
        let ours = median_secs(repeats, || drop(a.matmul(&b).unwrap()));
        let gf = |s: f64| flops / s / 1e9;
        println!(
            "{:<18} {:>12.1} {:>14.1} {:>10.1} {:>9.3}",
            format!("{m}x{k}x{n}"),
            gf(one),
            gf(split),
            gf(ours),
            one.min(split) / ours
        );
    }
}
