//! GFLOP/s of `ulmfit_tensor::sgemm` (B packed once, and B packed every call) against
//! `ulmfit_tensor::gemm::portable_sgemm` (matrixmultiply split over the rayon threads), on
//! the LSTM's and the decoder's shapes. Each figure is the median of several timed samples.
//!
//! Run (serialised with other measurements on the shared machine):
//!   flock /tmp/bench.lock cargo bench -p ulmfit-tensor --bench sgemm [-- NAME_FILTER]

use std::time::Instant;
use ulmfit_tensor::gemm::{self, MatRef};
use ulmfit_tensor::sgemm::{self as fast, PackedB};

/// One benchmarked product `C[M,N] = A[M,K] · B[K,N]`, operands stored as the model stores them.
struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    /// A is the transpose of a row-major `[K, M]` buffer (dW = dG^T · H).
    a_t: bool,
    /// B is the transpose of a row-major `[N, K]` weight (x · W^T).
    b_t: bool,
}

/// A shape row of the table below.
const fn shape(name: &'static str, m: usize, k: usize, n: usize, a_t: bool, b_t: bool) -> Shape {
    Shape { name, m, k, n, a_t, b_t }
}

const SHAPES: &[Shape] = &[
    shape("recurrent B=64 H=1152", 64, 1152, 4608, false, true),
    shape("recurrent B=32 H=1152", 32, 1152, 4608, false, true),
    shape("recurrent B=1 H=1152", 1, 1152, 4608, false, true),
    shape("recurrent B=64 H=400", 64, 400, 1600, false, true),
    shape("recurrent B=32 H=256", 32, 256, 1024, false, true),
    shape("dH = dG·W_hh", 64, 4608, 1152, false, false),
    shape("input proj X·W_ih^T I=400", 4480, 400, 4608, false, true),
    shape("input proj X·W_ih^T I=1152", 4480, 1152, 4608, false, true),
    shape("dW_hh = dG^T·H", 4608, 4480, 1152, true, false),
    shape("dW_ih = dG^T·X I=400", 4608, 4480, 400, true, false),
    shape("dX = dG·W_ih I=400", 4480, 4608, 400, false, false),
    shape("decoder X·W_dec^T", 4480, 400, 33278, false, true),
];

/// Deterministic values in [-1, 1].
fn fill(len: usize, seed: usize) -> Vec<f32> {
    (0..len).map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0) - 1.0).collect()
}

/// Seconds per call of each of `fs`, timed in interleaved rounds (so all see the same
/// background load), each sample at least ~20 ms; returns the median per function.
fn median_seconds(fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let iters: Vec<usize> = fs
        .iter_mut()
        .map(|f| {
            f(); // warm-up: page faults, lazy thread-pool start
            let t = Instant::now();
            f();
            ((0.02 / t.elapsed().as_secs_f64()).ceil() as usize).max(1)
        })
        .collect();
    let rounds = 9;
    let mut samples = vec![Vec::new(); fs.len()];
    for _ in 0..rounds {
        for ((f, &n), s) in fs.iter_mut().zip(&iters).zip(&mut samples) {
            let t = Instant::now();
            (0..n).for_each(|_| f());
            s.push(t.elapsed().as_secs_f64() / n as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(|a, b| a.partial_cmp(b).unwrap());
            s[rounds / 2]
        })
        .collect()
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--")).unwrap_or_default();
    println!("threads: {}, avx512f: {}", rayon::current_num_threads(), is_x86_feature_detected!("avx512f"));
    println!("GFLOP/s, median of 9 interleaved rounds; packed: B packed once; gemm: packs B per call; mm: portable_sgemm, matrixmultiply split over threads");
    println!("{:<34} {:>15} {:>8} {:>8} {:>8} {:>9}", "shape", "MxKxN", "packed", "gemm", "mm", "packed/mm");
    for s in SHAPES.iter().filter(|s| s.name.contains(&filter)) {
        let (a_buf, b_buf) = (fill(s.m * s.k, 1), fill(s.k * s.n, 2));
        let a = if s.a_t { MatRef::new(&a_buf, s.k, s.m).t() } else { MatRef::new(&a_buf, s.m, s.k) };
        let b = if s.b_t { MatRef::new(&b_buf, s.n, s.k).t() } else { MatRef::new(&b_buf, s.k, s.n) };
        let (mut c1, mut c2, mut c3) = (fill(s.m * s.n, 3), fill(s.m * s.n, 3), fill(s.m * s.n, 3));
        let packed = PackedB::pack(b);
        let secs = median_seconds(&mut [
            &mut || fast::gemm_packed(1.0, a, &packed, 1.0, &mut c1),
            &mut || fast::gemm(1.0, a, b, 1.0, &mut c2),
            &mut || gemm::portable_sgemm(1.0, a, b, 1.0, &mut c3),
        ]);
        let rate: Vec<f64> = secs.iter().map(|t| 2.0 * (s.m * s.k * s.n) as f64 / t / 1e9).collect();
        let dims = format!("{}x{}x{}", s.m, s.k, s.n);
        println!(
            "{:<34} {dims:>15} {:>8.1} {:>8.1} {:>8.1} {:>9.2}",
            s.name,
            rate[0],
            rate[1],
            rate[2],
            rate[0] / rate[2]
        );
    }
}
