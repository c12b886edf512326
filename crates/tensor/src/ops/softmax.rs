//! Softmax, log-softmax (over any axis) and fused cross-entropy on integer targets.
//!
//! All three subtract the row maximum before exponentiating, so large logits cannot
//! overflow. Cross-entropy never materialises log-softmax for backward: it keeps the
//! softmax probabilities and returns `(p - onehot) / count`.

use crate::autograd::Op;
use crate::error::{bad, Result};
use crate::ops::split_axis;
use crate::simd::softmax_row;
use crate::Tensor;
use rayon::prelude::*;
use std::cell::RefCell;

/// Calls `f(o, i, lane)` for each softmax lane (the `len` elements along the axis at
/// outer index `o`, inner index `i`), given as a gather of indices.
fn for_each_lane(shape: &[usize], axis: usize, mut f: impl FnMut(&mut dyn Iterator<Item = usize>)) {
    let (outer, len, inner) = split_axis(shape, axis);
    for o in 0..outer {
        for i in 0..inner {
            f(&mut (0..len).map(move |k| (o * len + k) * inner + i));
        }
    }
}

/// `log(sum(exp(x[j])))` over one lane's indices `j`, computed stably.
fn log_sum_exp(x: &[f32], lane: &[usize]) -> f32 {
    let max = lane.iter().map(|&j| x[j]).fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + lane.iter().map(|&j| (x[j] - max).exp()).sum::<f32>().ln()
}

struct Softmax {
    axis: usize,
    log: bool,
}

impl Tensor {
    fn softmax_impl(&self, axis: usize, log: bool) -> Result<Tensor> {
        if axis >= self.rank() {
            return Err(bad("softmax", format!("axis {axis} out of range for shape {:?}", self.shape())));
        }
        let x = self.data();
        let mut out = vec![0.0; x.len()];
        let mut lane = Vec::new();
        for_each_lane(self.shape(), axis, |it| {
            lane.clear();
            lane.extend(it);
            let lse = log_sum_exp(&x, &lane);
            for &j in &lane {
                out[j] = if log { x[j] - lse } else { (x[j] - lse).exp() };
            }
        });
        Ok(Tensor::from_op(out, self.shape(), &[self], Softmax { axis, log }))
    }

    /// Softmax along `axis`.
    pub fn softmax(&self, axis: usize) -> Result<Tensor> {
        self.softmax_impl(axis, false)
    }

    /// Log-softmax along `axis`.
    pub fn log_softmax(&self, axis: usize) -> Result<Tensor> {
        self.softmax_impl(axis, true)
    }
}

impl Op for Softmax {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }

    fn backward(&self, _inputs: &[Tensor], out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (y, g) = (out.data(), dout.data());
        let mut dx = vec![0.0; y.len()];
        let mut lane = Vec::new();
        for_each_lane(out.shape(), self.axis, |it| {
            lane.clear();
            lane.extend(it);
            if self.log {
                // y = x - lse:  dx = g - softmax * sum(g)
                let gsum: f32 = lane.iter().map(|&j| g[j]).sum();
                lane.iter().for_each(|&j| dx[j] = g[j] - y[j].exp() * gsum);
            } else {
                // y = softmax:  dx = y * (g - sum(g * y))
                let dot: f32 = lane.iter().map(|&j| g[j] * y[j]).sum();
                lane.iter().for_each(|&j| dx[j] = y[j] * (g[j] - dot));
            }
        });
        Ok(vec![Some(Tensor::from_vec(dx, out.shape())?)])
    }
}

struct CrossEntropy {
    /// Softmax of the logits, [N, C]; the backward turns it into the gradient in place.
    probs: RefCell<Option<Vec<f32>>>,
    targets: Vec<u32>,
    ignore_index: Option<u32>,
    count: usize,
}

impl Tensor {
    /// Mean cross-entropy of logits `[N, C]` against class ids `targets` (length N).
    /// Rows whose target equals `ignore_index` add nothing and are not counted; when all
    /// rows are ignored the loss is 0. Rows run in parallel (the LM's C is ~33k).
    pub fn cross_entropy(&self, targets: &[u32], ignore_index: Option<u32>) -> Result<Tensor> {
        let op = "cross_entropy";
        let [n, c] = *self.shape() else {
            return Err(bad(op, format!("logits must be [N, C], got {:?}", self.shape())));
        };
        if targets.len() != n {
            return Err(bad(op, format!("{} targets for {n} rows of logits", targets.len())));
        }
        if let Some((r, t)) = targets.iter().enumerate().find(|&(_, &t)| Some(t) != ignore_index && t as usize >= c) {
            return Err(bad(op, format!("target {t} in row {r} is not a class id (C = {c})")));
        }
        let x = self.data();
        let x: &[f32] = &x;
        let mut probs = crate::pool::take(n * c); // every row written below

        // Per row: -log p(target) = log-sum-exp - x[target], or None when ignored.
        let row_losses: Vec<Option<f64>> = probs
            .par_chunks_mut(c.max(1))
            .zip(x.par_chunks(c.max(1)))
            .zip(targets.par_iter())
            .map(|((p, row), &t)| {
                let lse = softmax_row(row, p, 1.0);
                (Some(t) != ignore_index).then(|| (lse - row[t as usize]) as f64)
            })
            .collect();
        let count = row_losses.iter().flatten().count();
        let total: f64 = row_losses.iter().flatten().sum();
        let loss = if count == 0 { 0.0 } else { (total / count as f64) as f32 };
        let op = CrossEntropy { probs: RefCell::new(Some(probs)), targets: targets.to_vec(), ignore_index, count };
        Ok(Tensor::from_op(vec![loss], &[], &[self], op))
    }
}

impl Op for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let c = x.dim(1);
        let scale = if self.count == 0 { 0.0 } else { dout.item()? / self.count as f32 };
        let mut dx = self
            .probs
            .borrow_mut()
            .take()
            .ok_or_else(|| bad("cross_entropy", "backward ran twice through the same graph"))?;
        let ignore = self.ignore_index;
        dx.par_chunks_mut(c.max(1)).zip(self.targets.par_iter()).for_each(|(row, &t)| {
            if Some(t) == ignore {
                row.fill(0.0);
                return;
            }
            row[t as usize] -= 1.0;
            row.iter_mut().for_each(|v| *v *= scale);
        });
        Ok(vec![Some(Tensor::from_vec(dx, x.shape())?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_softmax_and_loss() {
        // softmax([0, ln 3]) = [1/4, 3/4]; CE against class 1 = -ln(3/4)
        let x = Tensor::from_vec(vec![0.0, 3f32.ln()], &[1, 2]).unwrap();
        let p = x.softmax(1).unwrap().to_vec();
        assert!((p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6);
        let l = x.cross_entropy(&[1], None).unwrap().item().unwrap();
        assert!((l + 0.75f32.ln()).abs() < 1e-6);
        // Huge logits stay finite; an ignored row counts for nothing.
        let big = Tensor::from_vec(vec![1000.0, 0.0, 5.0, 5.0], &[2, 2]).unwrap();
        let l = big.cross_entropy(&[0, 9], Some(9)).unwrap().item().unwrap();
        assert!(l.abs() < 1e-6);
        assert!(big.cross_entropy(&[0, 2], None).is_err());
    }
}
