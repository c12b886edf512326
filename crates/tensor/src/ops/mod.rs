//! Differentiable ops, one family per file. Each file holds the forward (a `Tensor`
//! method) and, just below it, the backward (an `Op` impl), llm.c style.

pub mod batchnorm;
pub mod elementwise;
pub mod embedding;
pub mod linear_xent;
pub mod matmul;
pub mod reduce;
pub mod shape;
pub mod softmax;

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Splits `shape` around `axis` into (outer, len, inner) extents, so that element
/// (o, k, i) sits at `(o * len + k) * inner + i`.
pub(crate) fn split_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}
