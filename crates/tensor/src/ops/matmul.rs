//! Matrix products: 2-D, batched (3-D · 3-D), a 2-D right operand shared across leading
//! dimensions, either operand transposed; and `linear` (`x · W^T + b`, PyTorch's layout).
//!
//! All products go through `gemm::sgemm` with strided views, so transposes cost nothing.
//! Backward for `C = op(A) · op(B)`: `d op(A) = dC · op(B)^T`, `d op(B) = op(A)^T · dC`,
//! transposed back when the operand was used transposed.

use crate::autograd::Op;
use crate::error::{bad, mismatch, Result};
use crate::gemm::{sgemm, MatRef};
use crate::Tensor;
use rayon::prelude::*;

/// `C[M,N] (+)= op(A) · op(B)` for one matrix pair; `beta` 0 overwrites, 1 accumulates.
#[allow(clippy::too_many_arguments)] // two operands with their shapes and transposition
fn product(
    a: &[f32],
    a_rows: usize,
    a_cols: usize,
    ta: bool,
    b: &[f32],
    b_rows: usize,
    b_cols: usize,
    tb: bool,
    beta: f32,
    c: &mut [f32],
) {
    let view = |d, r, c, t| if t { MatRef::new(d, r, c).t() } else { MatRef::new(d, r, c) };
    sgemm(1.0, view(a, a_rows, a_cols, ta), view(b, b_rows, b_cols, tb), beta, c);
}

struct Matmul {
    ta: bool,
    tb: bool,
}

/// Dimensions of one product: `batch` pairs of `[M,K] · [K,N]`; `shared_b` when one
/// `B` serves every batch entry.
struct Dims {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    shared_b: bool,
}

fn dims(a: &[usize], b: &[usize], ta: bool, tb: bool) -> Result<Dims> {
    let op = "matmul";
    if a.len() < 2 || b.len() < 2 {
        return Err(bad(op, format!("operands must be at least 2-D, got {a:?} and {b:?}")));
    }
    let (ar, ac) = (a[a.len() - 2], a[a.len() - 1]);
    let (br, bc) = (b[b.len() - 2], b[b.len() - 1]);
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if tb { (bc, br) } else { (br, bc) };
    if k != kb {
        return Err(mismatch(op, a, b));
    }
    let batch_a: usize = a[..a.len() - 2].iter().product();
    if b.len() == 2 && !ta {
        // The leading dimensions of A fold into M: one big GEMM instead of many small ones.
        return Ok(Dims { batch: 1, m: batch_a * m, k, n, shared_b: true });
    }
    if b.len() == 2 {
        return Ok(Dims { batch: batch_a, m, k, n, shared_b: true });
    }
    if a[..a.len() - 2] != b[..b.len() - 2] {
        return Err(mismatch(op, a, b));
    }
    Ok(Dims { batch: batch_a, m, k, n, shared_b: false })
}

impl Tensor {
    /// `self · rhs` over the last two dimensions (see `matmul_t`).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.matmul_t(rhs, false, false)
    }

    /// `op(self) · op(rhs)`, where `op` transposes the last two dimensions when its flag is set.
    /// `self` is `[..., M, K]`; `rhs` is `[..., K, N]` with the same leading dimensions, or a
    /// 2-D `[K, N]` shared by every leading index. The result is `[..., M, N]`.
    pub fn matmul_t(&self, rhs: &Tensor, ta: bool, tb: bool) -> Result<Tensor> {
        let d = dims(self.shape(), rhs.shape(), ta, tb)?;
        let (a, b) = (self.data(), rhs.data());
        let mut out = crate::pool::take(d.batch * d.m * d.n); // every element written (beta 0)
        let (ar, ac) = if ta { (d.k, d.m) } else { (d.m, d.k) };
        let (br, bc) = if tb { (d.n, d.k) } else { (d.k, d.n) };
        for i in 0..d.batch {
            let bi = if d.shared_b { &b[..] } else { &b[i * br * bc..(i + 1) * br * bc] };
            product(
                &a[i * ar * ac..(i + 1) * ar * ac],
                ar,
                ac,
                ta,
                bi,
                br,
                bc,
                tb,
                0.0,
                &mut out[i * d.m * d.n..(i + 1) * d.m * d.n],
            );
        }
        let s = self.shape();
        let rows = if ta { s[s.len() - 1] } else { s[s.len() - 2] }; // M of one batch entry
        let mut shape = s[..s.len() - 2].to_vec();
        shape.extend([rows, d.n]);
        Ok(Tensor::from_op(out, &shape, &[self, rhs], Matmul { ta, tb }))
    }

    /// A fully connected layer in PyTorch's layout: `self [..., in] · weight[out, in]^T + bias[out]`.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let y = self.matmul_t(weight, false, true)?;
        match bias {
            Some(b) => y.add_bias(b),
            None => Ok(y),
        }
    }

    /// `self [..., N] + bias [N]`, row by row in parallel: the broadcast add of `linear`,
    /// kept apart from the generic broadcasting `add` because the decoder's logits
    /// (`[T*B, V]`, V ~ 33k) make it hot.
    pub fn add_bias(&self, bias: &Tensor) -> Result<Tensor> {
        let n = *self.shape().last().ok_or_else(|| bad("add_bias", "needs at least 1-D input"))?;
        if bias.shape() != [n] {
            return Err(mismatch("add_bias", self.shape(), bias.shape()));
        }
        let mut out = crate::pool::take(self.numel());
        out.copy_from_slice(&self.data());
        let b = bias.data();
        let b: &[f32] = &b;
        out.par_chunks_mut(n.max(1)).for_each(|row| row.iter_mut().zip(b.iter()).for_each(|(y, b)| *y += b));
        Ok(Tensor::from_op(out, self.shape(), &[self, bias], AddBias))
    }
}

struct AddBias;

impl Op for AddBias {
    fn name(&self) -> &'static str {
        "add_bias"
    }

    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let n = inputs[1].numel();
        let g = dout.data();
        let g: &[f32] = &g;
        // dbias[j] = sum over rows of dout[:, j]; columns split across threads, rows summed
        // in order, so the result does not depend on the thread count.
        let cols: Vec<usize> = (0..n).collect();
        let mut db = vec![0.0; n];
        db.par_chunks_mut(256).zip(cols.par_chunks(256)).for_each(|(d, js)| {
            for row in g.chunks(n) {
                d.iter_mut().zip(js).for_each(|(d, &j)| *d += row[j]);
            }
        });
        Ok(vec![Some(dout.clone()), Some(Tensor::from_vec(db, &[n])?)])
    }
}

impl Op for Matmul {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (at, bt) = (&inputs[0], &inputs[1]);
        let d = dims(at.shape(), bt.shape(), self.ta, self.tb)?;
        let (a, b, g) = (at.data(), bt.data(), dout.data());
        let (ar, ac) = if self.ta { (d.k, d.m) } else { (d.m, d.k) };
        let (br, bc) = if self.tb { (d.n, d.k) } else { (d.k, d.n) };
        // Both written in full: beta is 0 for the first (or only) product into each.
        let mut da = crate::pool::take(a.len());
        let mut db = crate::pool::take(b.len());
        let (sa, sb, sg) = (ar * ac, br * bc, d.m * d.n);
        for i in 0..d.batch {
            let ai = &a[i * sa..(i + 1) * sa];
            let gi = &g[i * sg..(i + 1) * sg];
            let (bi_lo, beta_b) = if d.shared_b { (0, (i > 0) as u8 as f32) } else { (i * sb, 0.0) };
            let bi = &b[bi_lo..bi_lo + sb];
            // dA: [M,K] = dC[M,N] · op(B)^T, stored transposed ([K,M] = op(B) · dC^T) when ta.
            if self.ta {
                product(bi, br, bc, self.tb, gi, d.m, d.n, true, 0.0, &mut da[i * sa..(i + 1) * sa]);
            } else {
                product(gi, d.m, d.n, false, bi, br, bc, !self.tb, 0.0, &mut da[i * sa..(i + 1) * sa]);
            }
            // dB: [K,N] = op(A)^T · dC, stored transposed ([N,K] = dC^T · op(A)) when tb.
            // A shared B sums its gradient over the batch (beta = 1 after the first entry).
            let dbi = &mut db[bi_lo..bi_lo + sb];
            if self.tb {
                product(gi, d.m, d.n, true, ai, ar, ac, self.ta, beta_b, dbi);
            } else {
                product(ai, ar, ac, !self.ta, gi, d.m, d.n, false, beta_b, dbi);
            }
        }
        Ok(vec![Some(Tensor::from_vec(da, at.shape())?), Some(Tensor::from_vec(db, bt.shape())?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_product_and_shapes() {
        // [[1,2],[3,4]] · [[5,6],[7,8]] = [[19,22],[43,50]]
        let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let b = Tensor::from_vec(vec![5.0, 6.0, 7.0, 8.0], &[2, 2]).unwrap();
        assert_eq!(a.matmul(&b).unwrap().to_vec(), vec![19.0, 22.0, 43.0, 50.0]);
        // a^T · b = [[26,30],[38,44]]
        assert_eq!(a.matmul_t(&b, true, false).unwrap().to_vec(), vec![26.0, 30.0, 38.0, 44.0]);
        let err = a.matmul(&Tensor::zeros(&[3, 2])).unwrap_err();
        assert_eq!(err.to_string(), "matmul: shapes [2, 2] and [3, 2] do not fit");
    }
}
