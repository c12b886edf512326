//! Embedding lookup: gather rows of a `[V, E]` table by id; backward scatter-adds the
//! output gradient into the rows it came from, in id order (deterministic), except into the
//! padding row if there is one (PyTorch's `padding_idx`: that row gets no gradient).
//!
//! Embedding dropout (whole words dropped) is a `[V, 1]` mask multiplied into the table
//! before the lookup; see `Rng::dropout_mask`.

use crate::autograd::Op;
use crate::error::{bad, Result};
use crate::Tensor;

struct Embedding {
    ids: Vec<u32>,
    padding: Option<u32>,
}

impl Tensor {
    /// Rows `ids` of this `[V, E]` table, as `[ids.len(), E]`.
    pub fn embedding(&self, ids: &[u32]) -> Result<Tensor> {
        self.lookup(ids, None)
    }

    /// [`Tensor::embedding`] whose row `padding` gets no gradient (PyTorch's `padding_idx`;
    /// the row itself is looked up as stored).
    pub fn embedding_with_padding(&self, ids: &[u32], padding: u32) -> Result<Tensor> {
        self.lookup(ids, Some(padding))
    }

    fn lookup(&self, ids: &[u32], padding: Option<u32>) -> Result<Tensor> {
        let [v, e] = *self.shape() else {
            return Err(bad("embedding", format!("table must be [V, E], got {:?}", self.shape())));
        };
        if let Some(&bad_id) = ids.iter().find(|&&i| i as usize >= v) {
            return Err(bad("embedding", format!("id {bad_id} out of range for a table of {v} rows")));
        }
        let table = self.data();
        let mut out = Vec::with_capacity(ids.len() * e);
        for &i in ids {
            out.extend_from_slice(&table[i as usize * e..][..e]);
        }
        Ok(Tensor::from_op(out, &[ids.len(), e], &[self], Embedding { ids: ids.to_vec(), padding }))
    }
}

impl Op for Embedding {
    fn name(&self) -> &'static str {
        "embedding"
    }

    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let table = &inputs[0];
        let e = table.dim(1);
        let g = dout.data();
        let mut dtable = vec![0.0; table.numel()];
        for (r, &i) in self.ids.iter().enumerate().filter(|&(_, &i)| Some(i) != self.padding) {
            let row = &mut dtable[i as usize * e..][..e];
            row.iter_mut().zip(&g[r * e..(r + 1) * e]).for_each(|(d, v)| *d += v);
        }
        Ok(vec![Some(Tensor::from_vec(dtable, table.shape())?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_rows_and_rejects_bad_ids() {
        let table = Tensor::from_vec(vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0], &[3, 2]).unwrap();
        assert_eq!(table.embedding(&[2, 0, 2]).unwrap().to_vec(), vec![20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
        assert!(table.embedding(&[3]).is_err());
    }

    #[test]
    fn padding_row_gets_no_gradient() {
        let table = Tensor::param(vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0], &[3, 2]).unwrap();
        let out = table.embedding_with_padding(&[2, 1, 2, 0], 1).unwrap();
        assert_eq!(out.to_vec(), vec![20.0, 21.0, 10.0, 11.0, 20.0, 21.0, 0.0, 1.0], "the padding row is looked up");
        out.sum_all().unwrap().backward().unwrap();
        assert_eq!(table.grad().unwrap().to_vec(), vec![1.0, 1.0, 0.0, 0.0, 2.0, 2.0]);
    }
}
