//! Reductions over one axis (sum, mean, max) and over everything (sum_all, mean_all).
//!
//! A tensor is viewed as `[outer, len, inner]` around the reduced axis. `max` routes its
//! gradient to the first maximal element (PyTorch does the same for `max(dim)`).

use crate::autograd::Op;
use crate::error::{bad, Result};
use crate::ops::split_axis;
use crate::Tensor;

#[derive(Clone, Copy)]
enum Reduce {
    Sum,
    Mean,
    Max,
}

struct ReduceOp {
    kind: Reduce,
    axis: usize,
    /// For `Max`: index along the axis of the winning element, per output element.
    argmax: Vec<usize>,
}

impl Tensor {
    fn reduce(&self, axis: usize, keepdim: bool, kind: Reduce) -> Result<Tensor> {
        if axis >= self.rank() {
            return Err(bad("reduce", format!("axis {axis} out of range for shape {:?}", self.shape())));
        }
        let (outer, len, inner) = split_axis(self.shape(), axis);
        if len == 0 && matches!(kind, Reduce::Max | Reduce::Mean) {
            return Err(bad("reduce", format!("cannot take max or mean over empty axis {axis} of {:?}", self.shape())));
        }
        let x = self.data();
        let mut out = vec![0.0; outer * inner];
        let mut argmax = Vec::new();
        if let Reduce::Max = kind {
            argmax = vec![0; outer * inner];
            out.fill(f32::NEG_INFINITY);
        }
        for o in 0..outer {
            for k in 0..len {
                let row = &x[(o * len + k) * inner..][..inner];
                let dst = &mut out[o * inner..][..inner];
                match kind {
                    Reduce::Sum | Reduce::Mean => dst.iter_mut().zip(row).for_each(|(d, v)| *d += v),
                    Reduce::Max => {
                        for (i, (d, &v)) in dst.iter_mut().zip(row).enumerate() {
                            if v > *d || (k == 0 && v.is_nan()) {
                                *d = v;
                                argmax[o * inner + i] = k;
                            }
                        }
                    }
                }
            }
        }
        if let Reduce::Mean = kind {
            out.iter_mut().for_each(|v| *v /= len as f32);
        }
        let mut shape = self.shape().to_vec();
        if keepdim {
            shape[axis] = 1;
        } else {
            shape.remove(axis);
        }
        Ok(Tensor::from_op(out, &shape, &[self], ReduceOp { kind, axis, argmax }))
    }

    /// Sum over `axis`; `keepdim` keeps it with size 1.
    pub fn sum(&self, axis: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce(axis, keepdim, Reduce::Sum)
    }

    /// Mean over `axis`.
    pub fn mean(&self, axis: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce(axis, keepdim, Reduce::Mean)
    }

    /// Maximum over `axis`.
    pub fn max(&self, axis: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce(axis, keepdim, Reduce::Max)
    }

    /// Sum of all elements, as a scalar.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.reshape(&[self.numel()])?.sum(0, false)
    }

    /// Mean of all elements, as a scalar.
    pub fn mean_all(&self) -> Result<Tensor> {
        self.reshape(&[self.numel()])?.mean(0, false)
    }
}

impl Op for ReduceOp {
    fn name(&self) -> &'static str {
        match self.kind {
            Reduce::Sum => "sum",
            Reduce::Mean => "mean",
            Reduce::Max => "max",
        }
    }

    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (outer, len, inner) = split_axis(x.shape(), self.axis);
        let g = dout.data();
        let mut dx = vec![0.0; x.numel()];
        for o in 0..outer {
            for i in 0..inner {
                let gi = g[o * inner + i];
                match self.kind {
                    Reduce::Sum => (0..len).for_each(|k| dx[(o * len + k) * inner + i] = gi),
                    Reduce::Mean => (0..len).for_each(|k| dx[(o * len + k) * inner + i] = gi / len as f32),
                    Reduce::Max => dx[(o * len + self.argmax[o * inner + i]) * inner + i] = gi,
                }
            }
        }
        Ok(vec![Some(Tensor::from_vec(dx, x.shape())?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_reductions() {
        let a = Tensor::from_vec(vec![1.0, 5.0, 3.0, 4.0, 2.0, 6.0], &[2, 3]).unwrap();
        assert_eq!(a.sum(0, false).unwrap().to_vec(), vec![5.0, 7.0, 9.0]);
        assert_eq!(a.mean(1, true).unwrap().shape(), &[2, 1]);
        assert_eq!(a.mean(1, false).unwrap().to_vec(), vec![3.0, 4.0]);
        assert_eq!(a.max(1, false).unwrap().to_vec(), vec![5.0, 6.0]);
        assert_eq!(a.sum_all().unwrap().item().unwrap(), 21.0);
    }
}
