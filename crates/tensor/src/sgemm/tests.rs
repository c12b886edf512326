//! Checks `sgemm` against a naive f64 triple loop, and the AVX-512 path against the
//! portable one (matrixmultiply), on edge shapes, strided views and every beta case.

use super::*;

/// Deterministic values in [-1, 1] that differ per element and per seed.
fn fill(len: usize, seed: usize) -> Vec<f32> {
    (0..len).map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0) - 1.0).collect()
}

/// `alpha * A · B + beta * C0` in f64, plus a per-element error bound `sum |a*b|`.
fn naive(alpha: f32, a: MatRef, b: MatRef, beta: f32, c0: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let (mut want, mut bound) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            let (mut dot, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let x = a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
                dot += x;
                mag += x.abs();
            }
            let old = if beta == 0.0 { 0.0 } else { beta as f64 * c0[i * n + j] as f64 };
            want[i * n + j] = (alpha as f64 * dot + old) as f32;
            bound[i * n + j] = (alpha.abs() as f64 * mag + old.abs()) as f32;
        }
    }
    (want, bound)
}

/// Asserts `|got - want| <= 1e-6 + 1e-5 * bound` everywhere, naming the worst and first bad element.
fn assert_close(what: &str, got: &[f32], want: &[f32], bound: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut first_bad = None;
    let mut max_diff = 0.0f32;
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let diff = (g - w).abs();
        max_diff = if diff.is_nan() { f32::NAN } else { max_diff.max(diff) };
        if (diff.is_nan() || diff > 1e-6 + 1e-5 * b) && first_bad.is_none() {
            first_bad = Some((i, g, w));
        }
    }
    assert!(first_bad.is_none(), "{what}: max diff {max_diff}, first bad index (got, want) {first_bad:?}");
}

/// Operand storage: row-major, or the transpose stored row-major and viewed with `.t()`.
fn view(data: &[f32], rows: usize, cols: usize, transposed: bool) -> MatRef<'_> {
    if transposed {
        MatRef::new(data, cols, rows).t()
    } else {
        MatRef::new(data, rows, cols)
    }
}

/// Runs one product on `path` (B packed up front, and for AVX-512 also packed inside
/// `gemm`) and checks it against the naive loop.
fn check_shape(path: Path, (m, k, n): (usize, usize, usize), ta: bool, tb: bool, alpha: f32, beta: f32) {
    let (a, b) = (fill(m * k, 1), fill(k * n, 2));
    let (a, b) = (view(&a, m, k, ta), view(&b, k, n, tb));
    // beta == 0 must not read C: start from NaN so a read would show.
    let c0 = if beta == 0.0 { vec![f32::NAN; m * n] } else { fill(m * n, 3) };
    let (want, bound) = naive(alpha, a, b, beta, &c0);
    let mut c = c0.clone();
    gemm_packed(alpha, a, &PackedB::pack_for(b, path), beta, &mut c);
    let what = format!("{path:?} {m}x{k}x{n} ta={ta} tb={tb} alpha={alpha} beta={beta}");
    assert_close(&format!("gemm_packed {what}"), &c, &want, &bound);
    if path == Path::Avx512 {
        let mut c = c0.clone();
        gemm(alpha, a, b, beta, &mut c);
        assert_close(&format!("gemm {what}"), &c, &want, &bound);
    }
}

/// Edge sizes around MR, NR, KC, MC and NC, plus sizes big enough to run in parallel.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 1),
    (3, 5, 7),
    (MR, 256, NR),
    (MR + 1, 257, NR + 1),
    (MR - 1, 255, NR - 1),
    (1, 300, 200),
    (2, 20, 100),
    (5, 33, 17),
    (64, 64, 64),
    (MC + 3, 40, 50),
    (17, 600, 49),
    (70, 300, 90),
    (300, 200, 40),
    (MC + 9, 2 * KC + 5, 70),
    (2, KC + 1, NR + 3),
    (32, 256, 1024),
    (4, 3, 2 * NC + 1),
    (2 * MC - 1, 20, NC + NR - 1),
];

#[test]
fn avx512_matches_naive_on_edge_shapes() {
    if detect() != Path::Avx512 {
        eprintln!("skip: no AVX-512F on this CPU, the portable path is covered by portable_matches_naive");
        return;
    }
    for &(m, k, n) in SHAPES {
        check_shape(Path::Avx512, (m, k, n), false, false, 1.0, 0.0);
    }
}

#[test]
fn avx512_matches_naive_on_transposed_operands_and_beta() {
    if detect() != Path::Avx512 {
        eprintln!("skip: no AVX-512F on this CPU");
        return;
    }
    for &(m, k, n) in &[(9, 70, 50), (65, 257, 97), (MC + 1, 30, 2 * NR + 3), (3, KC + 7, 20)] {
        for (ta, tb) in [(false, true), (true, false), (true, true)] {
            check_shape(Path::Avx512, (m, k, n), ta, tb, 1.0, 0.0);
        }
        for (alpha, beta) in [(1.0, 1.0), (0.5, -2.0), (-1.0, 0.0)] {
            check_shape(Path::Avx512, (m, k, n), false, true, alpha, beta);
        }
    }
}

#[test]
fn portable_matches_naive() {
    for &(m, k, n) in &SHAPES[..8] {
        check_shape(Path::Portable, (m, k, n), false, true, 0.5, 1.0);
    }
}

#[test]
fn avx512_matches_portable_and_reuses_packed_b() {
    if detect() != Path::Avx512 {
        eprintln!("skip: no AVX-512F on this CPU");
        return;
    }
    // The recurrent step: C[B,4H] += h[B,H] · W_hh^T, W_hh [4H,H] packed once, two steps.
    let (batch, h) = (64, 96);
    let w_hh = fill(4 * h * h, 4);
    let w_t = MatRef::new(&w_hh, 4 * h, h).t();
    let (fast, slow) = (PackedB::pack_for(w_t, Path::Avx512), PackedB::pack_for(w_t, Path::Portable));
    let (mut c_fast, mut c_slow) = (fill(batch * 4 * h, 5), fill(batch * 4 * h, 5));
    for step in 0..2 {
        let x = fill(batch * h, 6 + step);
        gemm_packed(1.0, MatRef::new(&x, batch, h), &fast, 1.0, &mut c_fast);
        gemm_packed(1.0, MatRef::new(&x, batch, h), &slow, 1.0, &mut c_slow);
        let bound = vec![(h * (step + 1)) as f32; c_slow.len()];
        assert_close(&format!("avx512 vs portable, step {step}"), &c_fast, &c_slow, &bound);
    }
}

#[test]
fn empty_dimensions() {
    let paths: &[Path] = if detect() == Path::Avx512 { &[Path::Avx512, Path::Portable] } else { &[Path::Portable] };
    for &path in paths {
        let b = PackedB::pack_for(MatRef::new(&[], 0, 3), path);
        let mut c = vec![f32::NAN; 6];
        gemm_packed(1.0, MatRef::new(&[], 2, 0), &b, 0.0, &mut c);
        assert!(c.iter().all(|&x| x == 0.0), "{path:?}: beta 0, K 0 gave {c:?}");
        let mut c = vec![2.0; 6];
        gemm_packed(1.0, MatRef::new(&[], 2, 0), &b, 0.5, &mut c);
        assert!(c.iter().all(|&x| x == 1.0), "{path:?}: beta 0.5, K 0 gave {c:?}");
    }
    // Through `gemm` (B packed inside): K = 0 scales C, M = 0 or N = 0 is a no-op.
    let mut c = vec![2.0; 6];
    gemm(1.0, MatRef::new(&[], 2, 0), MatRef::new(&[], 0, 3), 0.5, &mut c);
    assert!(c.iter().all(|&x| x == 1.0), "gemm: beta 0.5, K 0 gave {c:?}");
    gemm(1.0, MatRef::new(&[], 0, 4), MatRef::new(&[0.0; 12], 4, 3), 0.0, &mut []);
    gemm(1.0, MatRef::new(&[0.0; 8], 2, 4), MatRef::new(&[], 4, 0), 0.0, &mut []);
}

#[test]
#[should_panic(expected = "inner dimensions differ")]
fn mismatched_shapes_panic_with_shapes() {
    let b = PackedB::pack(MatRef::new(&[0.0; 6], 2, 3));
    gemm_packed(1.0, MatRef::new(&[0.0; 6], 2, 3), &b, 0.0, &mut [0.0; 6]);
}
