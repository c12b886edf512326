//! Single-precision GEMM on the CPU: `C = alpha * op(A) * op(B) + beta * C`.
//!
//! Every matrix product in the engine (matmul, linear, the LSTM's input and recurrent
//! projections) lands here. On CPUs with AVX-512 it runs our own packed kernel
//! (`crate::sgemm`); elsewhere `matrixmultiply::sgemm`, with the output split into column
//! (or row) panels, one per rayon thread, when the product is big enough for the split to
//! pay (`portable_sgemm`, also the reference the AVX-512 kernel is tested against).
//!
//! Matrices are described by a base slice plus row and column strides, so transposed
//! operands cost nothing: `A^T` of a row-major `[K, M]` buffer is `MatRef { rs: 1, cs: M }`.

use rayon::prelude::*;

/// A read-only strided view of an `rows x cols` matrix inside a slice.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Distance in elements between consecutive rows.
    pub rs: usize,
    /// Distance in elements between consecutive columns.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, as a view (no copy).
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Panics unless every element of the view lies inside its slice.
    pub(crate) fn check(&self, what: &str) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(
                last < self.data.len(),
                "gemm: operand {what} [{}x{}] overruns its buffer of {}",
                self.rows,
                self.cols,
                self.data.len()
            );
        }
    }
}

/// Products below this many multiply-adds run on one thread: splitting costs more than it
/// saves. Shared by `portable_sgemm` and the AVX-512 path (`crate::sgemm`).
pub(crate) const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Raw pointer to C, shared by rayon tasks that write disjoint parts of it
/// (panels in `portable_sgemm`, blocks in `crate::sgemm`).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: every user hands each rayon task a disjoint set of C's elements.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Element `off` of C. A method, so that closures capture the `Sync` wrapper and not
    /// the raw pointer inside it.
    ///
    /// # Safety
    /// `off` lies inside C, and no other task writes that element.
    pub(crate) unsafe fn at(&self, off: usize) -> *mut f32 {
        self.0.add(off)
    }
}

/// `C[M,N] = alpha * A[M,K] · B[K,N] + beta * C`, with `C` row-major and contiguous.
///
/// With `beta == 0` the old contents of `C` are never read (NaNs in it do not leak).
/// Every element of C is summed in a fixed order, whatever the thread count.
pub fn sgemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32]) {
    crate::sgemm::gemm(alpha, a, b, beta, c)
}

/// The portable path of `sgemm`: matrixmultiply, split into panels over rayon's threads.
pub fn portable_sgemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(
        a.cols, b.rows,
        "gemm: inner dimensions differ: A is [{}x{}], B is [{}x{}]",
        a.rows, a.cols, b.rows, b.cols
    );
    assert_eq!(c.len(), m * n, "gemm: C has {} elements, expected [{m}x{n}]", c.len());
    a.check("A");
    b.check("B");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        scale(c, beta);
        return;
    }
    let threads = rayon::current_num_threads();
    if threads == 1 || m * n * k < PARALLEL_MIN_MACS {
        // SAFETY: bounds checked above; C is [m, n] row-major.
        unsafe { kernel(alpha, a, b, beta, c.as_mut_ptr(), n) };
        return;
    }
    // Split the larger output dimension into one panel per thread, rounded to 16 so each
    // panel stays aligned with matrixmultiply's micro-kernel width.
    let split_n = n >= m;
    let len = if split_n { n } else { m };
    let panel = len.div_ceil(threads).next_multiple_of(16).min(len);
    let out = OutPtr(c.as_mut_ptr());
    (0..len.div_ceil(panel)).into_par_iter().for_each(|p| {
        let (lo, hi) = (p * panel, ((p + 1) * panel).min(len));
        // SAFETY: panel p covers columns (or rows) lo..hi of C only; panels are disjoint
        // and all lie inside the m*n buffer checked above.
        unsafe {
            if split_n {
                let bp = MatRef { data: &b.data[lo * b.cs..], cols: hi - lo, ..b };
                kernel(alpha, a, bp, beta, out.at(lo), n);
            } else {
                let ap = MatRef { data: &a.data[lo * a.rs..], rows: hi - lo, ..a };
                kernel(alpha, ap, b, beta, out.at(lo * n), n);
            }
        }
    });
}

/// One call into matrixmultiply; `c` points at the output's top-left, row stride `ldc`.
unsafe fn kernel(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: *mut f32, ldc: usize) {
    matrixmultiply::sgemm(
        a.rows,
        a.cols,
        b.cols,
        alpha,
        a.data.as_ptr(),
        a.rs as isize,
        a.cs as isize,
        b.data.as_ptr(),
        b.rs as isize,
        b.cs as isize,
        beta,
        c,
        ldc as isize,
        1,
    );
}

/// `C = beta * C` for an empty inner dimension (`beta == 0` writes zeros, reading nothing).
pub(crate) fn scale(c: &mut [f32], beta: f32) {
    if beta == 0.0 {
        c.fill(0.0);
    } else {
        c.iter_mut().for_each(|x| *x *= beta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: MatRef, b: MatRef) -> Vec<f32> {
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] =
                    (0..a.cols).map(|p| a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_on_split_and_transposed_shapes() {
        // Shapes above the parallel threshold in both split directions, plus a tiny one.
        for &(m, k, n) in &[(3, 5, 7), (70, 300, 90), (300, 200, 40)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect(); // [N,K]
            let want = naive(MatRef::new(&a, m, k), MatRef::new(&b, k, n));
            let mut c = vec![f32::NAN; m * n];
            portable_sgemm(1.0, MatRef::new(&a, m, k), MatRef::new(&bt, n, k).t(), 0.0, &mut c);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{m}x{k}x{n}: {x} vs {y}");
            }
        }
    }
}
