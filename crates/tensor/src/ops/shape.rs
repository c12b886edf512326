//! Layout ops: reshape, transpose of two axes, concat, narrow (a slice along one axis).
//!
//! Each copies into a fresh contiguous buffer; their backward moves the gradient back
//! through the same index map.

use crate::autograd::Op;
use crate::error::{bad, mismatch, Result};
use crate::ops::{split_axis, strides};
use crate::Tensor;

struct Reshape;

struct Transpose(usize, usize);

struct Concat {
    axis: usize,
}

struct Narrow {
    axis: usize,
    start: usize,
}

/// Copies the `[outer, len, inner]` blocks of `src` into `dst`, whose axis is `dst_len` long,
/// starting at `offset` along it: the index map shared by concat and narrow.
fn copy_along_axis(
    src: &[f32],
    (outer, len, inner): (usize, usize, usize),
    dst: &mut [f32],
    dst_len: usize,
    offset: usize,
) {
    for o in 0..outer {
        let s = &src[o * len * inner..(o + 1) * len * inner];
        dst[(o * dst_len + offset) * inner..][..len * inner].copy_from_slice(s);
    }
}

impl Tensor {
    /// The same data under a new shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(mismatch("reshape", self.shape(), shape));
        }
        Ok(Tensor::from_op(self.to_vec(), shape, &[self], Reshape))
    }

    /// Swaps axes `a0` and `a1`.
    pub fn transpose(&self, a0: usize, a1: usize) -> Result<Tensor> {
        let r = self.rank();
        if a0 >= r || a1 >= r {
            return Err(bad("transpose", format!("axes ({a0}, {a1}) out of range for shape {:?}", self.shape())));
        }
        let (out, shape) = permute2(&self.data(), self.shape(), a0, a1);
        Ok(Tensor::from_op(out, &shape, &[self], Transpose(a0, a1)))
    }

    /// Joins `tensors` along `axis`; all other dimensions must agree.
    pub fn concat(tensors: &[&Tensor], axis: usize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| bad("concat", "no tensors to join"))?;
        if axis >= first.rank() {
            return Err(bad("concat", format!("axis {axis} out of range for shape {:?}", first.shape())));
        }
        for t in tensors {
            let same_rank = t.rank() == first.rank();
            if !same_rank || (0..t.rank()).any(|d| d != axis && t.dim(d) != first.dim(d)) {
                return Err(mismatch("concat", first.shape(), t.shape()));
            }
        }
        let total: usize = tensors.iter().map(|t| t.dim(axis)).sum();
        let mut shape = first.shape().to_vec();
        shape[axis] = total;
        let mut out = vec![0.0; shape.iter().product()];
        let mut offset = 0;
        for t in tensors {
            copy_along_axis(&t.data(), split_axis(t.shape(), axis), &mut out, total, offset);
            offset += t.dim(axis);
        }
        Ok(Tensor::from_op(out, &shape, tensors, Concat { axis }))
    }

    /// Elements `start..start + len` along `axis`.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Tensor> {
        if axis >= self.rank() || start + len > self.dim(axis) {
            return Err(bad(
                "narrow",
                format!("range {start}..{} on axis {axis} out of bounds for shape {:?}", start + len, self.shape()),
            ));
        }
        let (outer, full, inner) = split_axis(self.shape(), axis);
        let data = self.data();
        let mut out = Vec::with_capacity(outer * len * inner);
        for o in 0..outer {
            out.extend_from_slice(&data[(o * full + start) * inner..][..len * inner]);
        }
        let mut shape = self.shape().to_vec();
        shape[axis] = len;
        Ok(Tensor::from_op(out, &shape, &[self], Narrow { axis, start }))
    }
}

/// `data` with axes `a0` and `a1` swapped, and the new shape.
fn permute2(data: &[f32], shape: &[usize], a0: usize, a1: usize) -> (Vec<f32>, Vec<usize>) {
    let mut new_shape = shape.to_vec();
    new_shape.swap(a0, a1);
    let mut src_strides = strides(shape);
    src_strides.swap(a0, a1); // stride in the source for each axis of the result
    let mut out = Vec::with_capacity(data.len());
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..data.len() {
        out.push(data[idx.iter().zip(&src_strides).map(|(i, s)| i * s).sum::<usize>()]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < new_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    (out, new_shape)
}

impl Op for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(Tensor::from_vec(dout.to_vec(), inputs[0].shape())?)])
    }
}

impl Op for Transpose {
    fn name(&self) -> &'static str {
        "transpose"
    }
    fn backward(&self, _inputs: &[Tensor], _out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (d, shape) = permute2(&dout.data(), dout.shape(), self.0, self.1);
        Ok(vec![Some(Tensor::from_vec(d, &shape)?)])
    }
}

impl Op for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut offset = 0;
        inputs
            .iter()
            .map(|t| {
                let part = dout.narrow(self.axis, offset, t.dim(self.axis));
                offset += t.dim(self.axis);
                part.map(Some)
            })
            .collect()
    }
}

impl Op for Narrow {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let mut dx = vec![0.0; x.numel()];
        copy_along_axis(&dout.data(), split_axis(dout.shape(), self.axis), &mut dx, x.dim(self.axis), self.start);
        Ok(vec![Some(Tensor::from_vec(dx, x.shape())?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_layouts() {
        let a = Tensor::from_vec((0..6).map(|x| x as f32).collect(), &[2, 3]).unwrap();
        assert_eq!(a.transpose(0, 1).unwrap().to_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(a.narrow(1, 1, 2).unwrap().to_vec(), vec![1.0, 2.0, 4.0, 5.0]);
        let c = Tensor::concat(&[&a, &a.narrow(1, 0, 1).unwrap()], 1).unwrap();
        assert_eq!(c.shape(), &[2, 4]);
        assert_eq!(c.to_vec(), vec![0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 5.0, 3.0]);
        assert!(a.reshape(&[4]).is_err());
    }
}
