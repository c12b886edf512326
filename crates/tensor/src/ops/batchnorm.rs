//! 1-D batch normalisation over `[N, C]` (the classifier head's), PyTorch semantics:
//! training normalises with the batch's biased variance and updates running statistics
//! with the unbiased one (`running = (1 - momentum) * running + momentum * batch`);
//! evaluation uses the running statistics.

use crate::autograd::Op;
use crate::error::{bad, mismatch, Result};
use crate::Tensor;

/// Running statistics and settings of one batch-norm layer.
pub struct BatchNormStats {
    /// Running mean, `[C]`.
    pub mean: Tensor,
    /// Running variance, `[C]`.
    pub var: Tensor,
    /// Weight of the newest batch in the running statistics (PyTorch default 0.1).
    pub momentum: f32,
    /// Added to the variance before the square root (PyTorch default 1e-5).
    pub eps: f32,
}

impl BatchNormStats {
    /// Fresh statistics for `c` channels: mean 0, variance 1.
    pub fn new(c: usize) -> Self {
        BatchNormStats { mean: Tensor::zeros(&[c]), var: Tensor::full(&[c], 1.0), momentum: 0.1, eps: 1e-5 }
    }
}

struct BatchNorm {
    /// Normalised input, [N, C].
    xhat: Vec<f32>,
    /// 1 / sqrt(var + eps) per channel, [C].
    inv_std: Vec<f32>,
    training: bool,
}

impl Tensor {
    /// Batch norm of `self [N, C]` with affine `gamma`, `beta` `[C]`. In training mode the
    /// batch statistics are used and `stats` is updated; in eval mode `stats` is used.
    pub fn batch_norm_1d(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        stats: &BatchNormStats,
        training: bool,
    ) -> Result<Tensor> {
        let [n, c] = *self.shape() else {
            return Err(bad("batch_norm_1d", format!("input must be [N, C], got {:?}", self.shape())));
        };
        for p in [gamma, beta, &stats.mean, &stats.var] {
            if p.shape() != [c] {
                return Err(mismatch("batch_norm_1d", self.shape(), p.shape()));
            }
        }
        if training && n < 2 {
            return Err(bad("batch_norm_1d", "training needs at least 2 rows per batch"));
        }
        let x = self.data();
        let (mean, var) = if training {
            let mut mean = vec![0.0; c];
            let mut var = vec![0.0; c];
            x.chunks(c).for_each(|row| mean.iter_mut().zip(row).for_each(|(m, v)| *m += v / n as f32));
            x.chunks(c).for_each(|row| {
                var.iter_mut().zip(row).zip(&mean).for_each(|((s, v), m)| *s += (v - m) * (v - m) / n as f32)
            });
            let unbiased = n as f32 / (n - 1) as f32;
            let mo = stats.momentum;
            stats.mean.data_mut().iter_mut().zip(&mean).for_each(|(r, m)| *r = (1.0 - mo) * *r + mo * m);
            stats.var.data_mut().iter_mut().zip(&var).for_each(|(r, v)| *r = (1.0 - mo) * *r + mo * v * unbiased);
            (mean, var)
        } else {
            (stats.mean.to_vec(), stats.var.to_vec())
        };
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + stats.eps).sqrt()).collect();
        let (g, b) = (gamma.data(), beta.data());
        let mut xhat = vec![0.0; n * c];
        let mut out = vec![0.0; n * c];
        for i in 0..n * c {
            let ch = i % c;
            xhat[i] = (x[i] - mean[ch]) * inv_std[ch];
            out[i] = g[ch] * xhat[i] + b[ch];
        }
        Ok(Tensor::from_op(out, &[n, c], &[self, gamma, beta], BatchNorm { xhat, inv_std, training }))
    }
}

impl Op for BatchNorm {
    fn name(&self) -> &'static str {
        "batch_norm_1d"
    }

    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, gamma) = (&inputs[0], &inputs[1]);
        let (n, c) = (x.dim(0), x.dim(1));
        let (g, dy) = (gamma.data(), dout.data());
        let mut dgamma = vec![0.0; c];
        let mut dbeta = vec![0.0; c];
        for i in 0..n * c {
            dgamma[i % c] += dy[i] * self.xhat[i];
            dbeta[i % c] += dy[i];
        }
        let mut dx = vec![0.0; n * c];
        for i in 0..n * c {
            let ch = i % c;
            let dxhat = dy[i] * g[ch];
            dx[i] = if self.training {
                // Batch statistics depend on x too:
                // dx = inv_std / N * (N dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
                let (sum_dxhat, sum_dxhat_xhat) = (dbeta[ch] * g[ch], dgamma[ch] * g[ch]);
                self.inv_std[ch] / n as f32 * (n as f32 * dxhat - sum_dxhat - self.xhat[i] * sum_dxhat_xhat)
            } else {
                dxhat * self.inv_std[ch]
            };
        }
        Ok(vec![
            Some(Tensor::from_vec(dx, x.shape())?),
            Some(Tensor::from_vec(dgamma, &[c])?),
            Some(Tensor::from_vec(dbeta, &[c])?),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_tracks_running_stats() {
        let x = Tensor::from_vec(vec![1.0, 10.0, 3.0, 30.0], &[2, 2]).unwrap();
        let stats = BatchNormStats::new(2);
        let (g, b) = (Tensor::full(&[2], 1.0), Tensor::zeros(&[2]));
        let y = x.batch_norm_1d(&g, &b, &stats, true).unwrap().to_vec();
        // each column becomes [-1, 1] (up to eps)
        assert!(y.iter().zip([-1.0, -1.0, 1.0, 1.0]).all(|(a, e)| (a - e).abs() < 1e-4), "{y:?}");
        // running mean = 0.1 * [2, 20]; running var = 0.9 + 0.1 * [2, 200] (unbiased)
        assert_eq!(stats.mean.to_vec(), vec![0.2, 2.0]);
        let rv = stats.var.to_vec();
        assert!((rv[0] - 1.1).abs() < 1e-6 && (rv[1] - 20.9).abs() < 1e-4, "{rv:?}");
    }
}
