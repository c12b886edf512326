//! Elementwise ops: broadcasting add/sub/mul/div, unary maps (neg, exp, log, sigmoid, tanh,
//! relu, powf) and scalar add/scale.
//!
//! Broadcasting follows NumPy: shapes are aligned on the right and a dimension of size 1
//! (or a missing one) stretches. The backward of a broadcast operand sums the gradient over
//! the stretched dimensions. Checked by `tests/gradcheck.rs` against finite differences.

use crate::autograd::Op;
use crate::error::{mismatch, Result};
use crate::ops::strides;
use crate::Tensor;

// ----------------------------------------------------------------------------------------
// Broadcasting layout

/// The broadcast shape of `a` and `b`, or `None` when they do not fit.
fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Strides of `shape` read as if broadcast to `out` (0 along stretched dimensions).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = strides(shape);
    let pad = out.len() - shape.len();
    (0..out.len()).map(|i| if i < pad || shape[i - pad] == 1 { 0 } else { own[i - pad] }).collect()
}

/// Calls `f(o, ia, ib)` for every output index `o` with the matching offsets into the two
/// operands. The innermost dimension runs as a tight loop.
fn for_each_broadcast(out: &[usize], sa: &[usize], sb: &[usize], mut f: impl FnMut(usize, usize, usize)) {
    let n: usize = out.iter().product();
    if n == 0 {
        return;
    }
    let Some(&inner) = out.last() else {
        return f(0, 0, 0); // scalars
    };
    let r = out.len();
    let (ia_step, ib_step) = (sa[r - 1], sb[r - 1]);
    let mut idx = vec![0usize; r];
    let (mut ia, mut ib) = (0usize, 0usize);
    for row in 0..n / inner {
        for k in 0..inner {
            f(row * inner + k, ia + k * ia_step, ib + k * ib_step);
        }
        // advance the outer multi-index (all but the last dimension)
        for d in (0..r - 1).rev() {
            idx[d] += 1;
            ia += sa[d];
            ib += sb[d];
            if idx[d] < out[d] {
                break;
            }
            ia -= sa[d] * out[d];
            ib -= sb[d] * out[d];
            idx[d] = 0;
        }
    }
}

// ----------------------------------------------------------------------------------------
// Binary ops

#[derive(Clone, Copy, Debug)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

impl Binary {
    fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
        }
    }

    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
        }
    }

    /// (d out / d a, d out / d b) at (a, b).
    fn partials(self, a: f32, b: f32) -> (f32, f32) {
        match self {
            Binary::Add => (1.0, 1.0),
            Binary::Sub => (1.0, -1.0),
            Binary::Mul => (b, a),
            Binary::Div => (1.0 / b, -a / (b * b)),
        }
    }
}

struct BinaryOp(Binary);

/// Whether `b` (NumPy-aligned) equals the trailing dimensions of `a`, possibly with
/// leading 1s, and holds at least one element: then `b`'s data repeats with period
/// `b.numel()` over `a`'s, laid out as the output (whose shape may gain `b`'s extra 1s).
fn repeats_along_leading_dims(a: &[usize], b: &[usize]) -> bool {
    let b = &b[b.iter().take_while(|&&d| d == 1).count().min(b.len())..];
    b.len() <= a.len() && a[a.len() - b.len()..] == *b && !b.is_empty() && !b.contains(&0)
}

/// `out[i] = f(a[i], b[i % b.len()])`, as plain loops over contiguous chunks.
fn zip_repeat(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    let mut out = vec![0.0; a.len()];
    for (oc, ac) in out.chunks_mut(b.len()).zip(a.chunks(b.len())) {
        oc.iter_mut().zip(ac).zip(b).for_each(|((o, &x), &y)| *o = f(x, y));
    }
    out
}

/// Backward of `zip_repeat`: `da[i] = g[i] * pa`, `db[j] += g[i] * pb` over the repeats,
/// where `(pa, pb) = partials(a[i], b[j])`.
fn zip_repeat_backward(
    a: &[f32],
    b: &[f32],
    g: &[f32],
    partials: impl Fn(f32, f32) -> (f32, f32),
) -> (Vec<f32>, Vec<f32>) {
    let mut da = vec![0.0; a.len()];
    let mut db = vec![0.0; b.len()];
    for ((dac, ac), gc) in da.chunks_mut(b.len()).zip(a.chunks(b.len())).zip(g.chunks(b.len())) {
        for j in 0..b.len() {
            let (pa, pb) = partials(ac[j], b[j]);
            dac[j] = gc[j] * pa;
            db[j] += gc[j] * pb;
        }
    }
    (da, db)
}

impl Tensor {
    fn binary(&self, rhs: &Tensor, kind: Binary) -> Result<Tensor> {
        let (a, b) = (self.data(), rhs.data());
        let shape = broadcast_shape(self.shape(), rhs.shape())
            .ok_or_else(|| mismatch(kind.name(), self.shape(), rhs.shape()))?;
        let out = if repeats_along_leading_dims(self.shape(), rhs.shape()) {
            // Fast path: rhs has the same shape, or repeats along leading dimensions (a bias
            // row, a [1, B, H] dropout mask over [T, B, H]): no index arithmetic.
            zip_repeat(&a, &b, |x, y| kind.apply(x, y))
        } else {
            let mut out = vec![0.0; shape.iter().product()];
            let (sa, sb) = (broadcast_strides(self.shape(), &shape), broadcast_strides(rhs.shape(), &shape));
            for_each_broadcast(&shape, &sa, &sb, |o, ia, ib| out[o] = kind.apply(a[ia], b[ib]));
            out
        };
        Ok(Tensor::from_op(out, &shape, &[self, rhs], BinaryOp(kind)))
    }

    /// `self + rhs`, broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Add)
    }

    /// `self - rhs`, broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Sub)
    }

    /// `self * rhs` elementwise, broadcasting. Applying a dropout mask is a `mul`.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Mul)
    }

    /// `self / rhs` elementwise, broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, Binary::Div)
    }
}

impl Op for BinaryOp {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn backward(&self, inputs: &[Tensor], out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let (av, bv, g) = (a.data(), b.data(), dout.data());
        if repeats_along_leading_dims(a.shape(), b.shape()) {
            // g has a's data layout (out only adds leading 1s); db sums over the repeats.
            let (da, db) = zip_repeat_backward(&av, &bv, &g, |x, y| self.0.partials(x, y));
            return Ok(vec![Some(Tensor::from_vec(da, a.shape())?), Some(Tensor::from_vec(db, b.shape())?)]);
        }
        // da and db are accumulated in the operands' own shapes: summing over broadcast dims.
        let mut da = vec![0.0; a.numel()];
        let mut db = vec![0.0; b.numel()];
        let shape = out.shape();
        let (sa, sb) = (broadcast_strides(a.shape(), shape), broadcast_strides(b.shape(), shape));
        for_each_broadcast(shape, &sa, &sb, |o, ia, ib| {
            let (pa, pb) = self.0.partials(av[ia], bv[ib]);
            da[ia] += g[o] * pa;
            db[ib] += g[o] * pb;
        });
        Ok(vec![Some(Tensor::from_vec(da, a.shape())?), Some(Tensor::from_vec(db, b.shape())?)])
    }
}

// ----------------------------------------------------------------------------------------
// Unary ops

#[derive(Clone, Copy, Debug)]
enum Unary {
    Neg,
    Exp,
    Log,
    Sigmoid,
    Tanh,
    Relu,
    AddScalar(f32),
    Scale(f32),
    Powf(f32),
}

impl Unary {
    fn name(self) -> &'static str {
        match self {
            Unary::Neg => "neg",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Sigmoid => "sigmoid",
            Unary::Tanh => "tanh",
            Unary::Relu => "relu",
            Unary::AddScalar(_) => "add_scalar",
            Unary::Scale(_) => "scale",
            Unary::Powf(_) => "powf",
        }
    }

    fn apply(self, x: f32) -> f32 {
        match self {
            Unary::Neg => -x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sigmoid => sigmoid(x),
            Unary::Tanh => x.tanh(),
            Unary::Relu => x.max(0.0),
            Unary::AddScalar(s) => x + s,
            Unary::Scale(s) => x * s,
            Unary::Powf(2.0) => x * x,
            Unary::Powf(p) => x.powf(p),
        }
    }

    /// d y / d x, from the input x and the output y (whichever is cheaper).
    fn derivative(self, x: f32, y: f32) -> f32 {
        match self {
            Unary::Neg => -1.0,
            Unary::Exp => y,
            Unary::Log => 1.0 / x,
            Unary::Sigmoid => y * (1.0 - y),
            Unary::Tanh => 1.0 - y * y,
            Unary::Relu => (x > 0.0) as u8 as f32,
            Unary::AddScalar(_) => 1.0,
            Unary::Scale(s) => s,
            Unary::Powf(2.0) => 2.0 * x,
            Unary::Powf(p) => p * x.powf(p - 1.0),
        }
    }
}

/// The logistic function, stable for large |x|.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

struct UnaryOp(Unary);

impl Tensor {
    fn unary(&self, kind: Unary) -> Tensor {
        let out = self.data().iter().map(|&x| kind.apply(x)).collect();
        Tensor::from_op(out, self.shape(), &[self], UnaryOp(kind))
    }

    /// `-self`.
    pub fn neg(&self) -> Tensor {
        self.unary(Unary::Neg)
    }
    /// `e^self`.
    pub fn exp(&self) -> Tensor {
        self.unary(Unary::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Tensor {
        self.unary(Unary::Log)
    }
    /// Logistic sigmoid.
    pub fn sigmoid(&self) -> Tensor {
        self.unary(Unary::Sigmoid)
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        self.unary(Unary::Tanh)
    }
    /// `max(self, 0)`.
    pub fn relu(&self) -> Tensor {
        self.unary(Unary::Relu)
    }
    /// `self + s`.
    pub fn add_scalar(&self, s: f32) -> Tensor {
        self.unary(Unary::AddScalar(s))
    }
    /// `self * s`.
    pub fn scale(&self, s: f32) -> Tensor {
        self.unary(Unary::Scale(s))
    }
    /// `self ^ p`, elementwise.
    pub fn powf(&self, p: f32) -> Tensor {
        self.unary(Unary::Powf(p))
    }
}

impl Op for UnaryOp {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn backward(&self, inputs: &[Tensor], out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let dx = x
            .data()
            .iter()
            .zip(out.data().iter())
            .zip(dout.data().iter())
            .map(|((&x, &y), &g)| g * self.0.derivative(x, y))
            .collect();
        Ok(vec![Some(Tensor::from_vec(dx, x.shape())?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_shapes_follow_numpy() {
        assert_eq!(broadcast_shape(&[4, 3], &[3]), Some(vec![4, 3]));
        assert_eq!(broadcast_shape(&[2, 1, 3], &[5, 1]), Some(vec![2, 5, 3]));
        assert_eq!(broadcast_shape(&[4, 3], &[4]), None);
    }

    #[test]
    fn hand_computed_values() {
        let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let b = Tensor::from_vec(vec![10.0, 20.0], &[2]).unwrap();
        assert_eq!(a.add(&b).unwrap().to_vec(), vec![11.0, 22.0, 13.0, 24.0]);
        let col = Tensor::from_vec(vec![2.0, 4.0], &[2, 1]).unwrap();
        assert_eq!(a.div(&col).unwrap().to_vec(), vec![0.5, 1.0, 0.75, 1.0]);
        assert_eq!(Tensor::scalar(0.0).sigmoid().item().unwrap(), 0.5);
        assert_eq!(a.relu().neg().to_vec(), vec![-1.0, -2.0, -3.0, -4.0]);
        let err = a.add(&Tensor::zeros(&[3])).unwrap_err();
        assert_eq!(err.to_string(), "add: shapes [2, 2] and [3] do not fit");
    }

    #[test]
    fn output_takes_leading_dims_from_either_side() {
        let a = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
        let b = Tensor::from_vec(vec![10.0, 20.0, 30.0], &[1, 1, 3]).unwrap();
        for (x, y) in [(&a, &b), (&b, &a)] {
            let sum = x.add(y).unwrap();
            assert_eq!(sum.shape(), &[1, 1, 3], "add {:?} + {:?}", x.shape(), y.shape());
            assert_eq!(sum.to_vec(), vec![11.0, 22.0, 33.0]);
        }
        let rows = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        let prod = rows.mul(&b).unwrap();
        assert_eq!(prod.shape(), &[1, 2, 3]);
        assert_eq!(prod.to_vec(), vec![10.0, 40.0, 90.0, 40.0, 100.0, 180.0]);
        // Empty operands broadcast to an empty result.
        let empty = Tensor::zeros(&[2, 0]).sub(&Tensor::zeros(&[0])).unwrap();
        assert_eq!(empty.shape(), &[2, 0]);
    }
}
