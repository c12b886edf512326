//! fastai's AR and TAR on the classifier. `TextLearner` adds `RNNRegularizer(alpha=2, beta=1)`
//! to classifiers too, and `PoolingLinearClassifier` hands the `SentenceEncoder` output on as
//! both regularised outputs, so the training loss gains
//! `alpha * mean(out^2) + beta * mean((out[:, p+1] - out[:, p])^2)` over `out` [B, L, E]:
//! the top-layer outputs of the kept chunks in fastai's front-padded layout.
//!
//! That layout, for a batch whose longest document has `sl` tokens: document b is front-padded
//! by `f_b` = whole chunks of `(sl - len_b)`, so its step q sits at position `f_b + q`, and `out`
//! spans the pooled window [i0, sl) (i0 = the first pooled position, as for pooling). A document
//! has an output at q if it ran q's chunk in fastai: q < its run's end, the end of the chunk
//! holding its last token but at most `sl - f_b` (its trailing padding inside that chunk is run
//! and counted); elsewhere `out` holds 0 and still counts in the means. Our chunks run every
//! such step (documents start at step 0 and run whole chunks), so the op reads them there.
//! (fastai runs the first `real_bs` rows of a chunk, `real_bs` counting the rows not padding
//! at its start, which is the set above only while those rows are a prefix; where a longer
//! document's text ends before the last chunk while a shorter one's runs into it, fastai runs
//! the wrong rows. We run the rows it means to, as for pooling; the fixtures avoid the case.)
//!
//! Checked against a direct computation below and against fastai in `tests/parity_fastai.rs`.

use ulmfit_tensor::autograd::Op;
use ulmfit_tensor::{Result, Tensor};

use crate::classifier::Chunk;

/// Where fastai's `out` [B, L, E] takes its values: for each (document, window position),
/// the (kept chunk, step) holding the output, or None for a 0.
struct Sources {
    at: Vec<Option<(usize, usize)>>,
    docs: usize,
    len: usize,
}

impl Sources {
    /// The sources for documents of lengths `lens` (longest first) read in chunks of `bptt`,
    /// window from position `first`, over the kept `chunks`.
    fn new(chunks: &[Chunk], lens: &[usize], bptt: usize, first: usize) -> Sources {
        let sl = lens[0];
        let len = sl - first;
        let mut at = vec![None; lens.len() * len];
        // Index in `chunks` of the kept chunk starting at k * bptt.
        let mut kept = vec![None; sl.div_ceil(bptt)];
        chunks.iter().enumerate().for_each(|(ci, c)| kept[c.start / bptt] = Some(ci));
        for (b, &len_b) in lens.iter().enumerate() {
            let front = (sl - len_b) / bptt * bptt;
            let stop = (len_b.div_ceil(bptt) * bptt).min(sl - front);
            for p in 0..len {
                let Some(q) = (first + p).checked_sub(front).filter(|&q| q < stop) else { continue };
                let start = q / bptt * bptt;
                let ci = kept[q / bptt].expect("ar_tar: a pooled step's chunk is kept");
                assert!(b < chunks[ci].out.dim(1), "ar_tar: document {b} did not run the chunk at {start}");
                at[b * len + p] = Some((ci, q - start));
            }
        }
        Sources { at, docs: lens.len(), len }
    }

    /// fastai's `out` [B, L, E] gathered from the chunks' outputs (`data[ci]` [len, rows, E]).
    fn gather(&self, data: &[&[f32]], rows: &[usize], e: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.at.len() * e];
        for (k, src) in self.at.iter().enumerate() {
            if let Some((ci, s)) = *src {
                let b = k / self.len;
                out[k * e..(k + 1) * e].copy_from_slice(&data[ci][(s * rows[ci] + b) * e..][..e]);
            }
        }
        out
    }
}

/// The penalty `alpha * AR + beta * TAR` of the module header as a scalar tensor on the graph
/// of the chunks' outputs (fastai applies TAR only to batches of more than one document).
pub(crate) fn ar_tar(chunks: &[Chunk], lens: &[usize], bptt: usize, first: usize, alpha: f32, beta: f32) -> Tensor {
    let src = Sources::new(chunks, lens, bptt, first);
    let op = ArTar { alpha, beta: if lens.len() > 1 && src.len > 1 { beta } else { 0.0 }, src };
    let inputs: Vec<&Tensor> = chunks.iter().map(|c| &c.out).collect();
    let e = chunks.first().map_or(0, |c| c.out.dim(2));
    let out = op.gather(&inputs, e);
    let (ar, tar) = op.means(&out, e);
    Tensor::from_op(vec![op.alpha * ar + op.beta * tar], &[], &inputs, op)
}

struct ArTar {
    alpha: f32,
    beta: f32,
    src: Sources,
}

impl ArTar {
    fn gather(&self, inputs: &[&Tensor], e: usize) -> Vec<f32> {
        let data: Vec<_> = inputs.iter().map(|t| t.data()).collect();
        let slices: Vec<&[f32]> = data.iter().map(|d| &d[..]).collect();
        let rows: Vec<usize> = inputs.iter().map(|t| t.dim(1)).collect();
        self.src.gather(&slices, &rows, e)
    }

    /// (mean of out^2, mean of the squared steps along L; 0 without TAR).
    fn means(&self, out: &[f32], e: usize) -> (f32, f32) {
        let (n, l) = (self.src.docs, self.src.len);
        let ar = out.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / (n * l * e) as f64;
        if self.beta == 0.0 {
            return (ar as f32, 0.0);
        }
        let mut tar = 0.0f64;
        for row in out.chunks(l * e) {
            tar += row.windows(e + 1).map(|w| ((w[e] - w[0]) as f64).powi(2)).sum::<f64>();
        }
        (ar as f32, (tar / (n * (l - 1) * e) as f64) as f32)
    }
}

impl Op for ArTar {
    fn name(&self) -> &'static str {
        "clas_ar_tar"
    }

    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (n, l) = (self.src.docs, self.src.len);
        let e = inputs.first().map_or(0, |c| c.dim(2));
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let out = self.gather(&refs, e);
        let g = dout.item()?;
        // d/dout[p] of alpha*mean(out^2) + beta*mean((out[p+1]-out[p])^2).
        let ka = g * 2.0 * self.alpha / (n * l * e) as f32;
        let kt = if self.beta == 0.0 { 0.0 } else { g * 2.0 * self.beta / (n * (l - 1) * e) as f32 };
        let mut grads: Vec<Vec<f32>> = inputs.iter().map(|t| vec![0.0; t.numel()]).collect();
        for (k, src) in self.src.at.iter().enumerate() {
            let Some((ci, s)) = *src else { continue };
            let (b, p) = (k / l, k % l);
            let rows = inputs[ci].dim(1);
            let dst = &mut grads[ci][(s * rows + b) * e..][..e];
            for j in 0..e {
                let x = out[k * e + j];
                let mut d = ka * x;
                if p > 0 {
                    d += kt * (x - out[(k - 1) * e + j]);
                }
                if p + 1 < l {
                    d -= kt * (out[(k + 1) * e + j] - x);
                }
                dst[j] += d;
            }
        }
        grads.into_iter().zip(inputs).map(|(d, t)| Tensor::from_vec(d, t.shape()).map(Some)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ulmfit_tensor::Rng;

    /// Documents of lengths 7, 5, 2 in chunks of 3 (sl 7), window from position 3: fastai
    /// front-pads them by 0, 0 and 3 steps. Document 1 runs fastai's chunks at 0 and 3 (its
    /// text ends at 5, so the chunk at 6 starts on padding and is not run): position 6 is 0.
    /// Document 2 runs the chunk at 3 (text 3..5, then one pad), not the one at 6.
    #[test]
    fn ar_tar_matches_direct_computation_and_finite_differences() {
        let mut rng = Rng::new(5);
        let e = 2;
        let param = |shape: &[usize], rng: &mut Rng| {
            Tensor::param(rng.uniform_tensor(shape, -1.0, 1.0).to_vec(), shape).unwrap()
        };
        // Kept chunks: [3, 6) runs documents 0 and 1 (lengths > 3), [6, 7) only document 0;
        // chunk [0, 3) is kept for document 2, whose window starts at its step 0.
        let chunks = vec![
            Chunk { out: param(&[3, 3, e], &mut rng), start: 0 },
            Chunk { out: param(&[3, 2, e], &mut rng), start: 3 },
            Chunk { out: param(&[1, 1, e], &mut rng), start: 6 },
        ];
        let lens = [7, 5, 2];
        let (alpha, beta) = (2.0, 1.0);
        let h = |ci: usize, s: usize, b: usize| -> Vec<f32> {
            let c = &chunks[ci].out;
            c.to_vec()[(s * c.dim(1) + b) * e..][..e].to_vec()
        };
        // fastai's out [3, 4, E] over positions 3..7, written out by hand.
        let z = vec![0.0; e];
        let want_out = [
            [h(1, 0, 0), h(1, 1, 0), h(1, 2, 0), h(2, 0, 0)],
            [h(1, 0, 1), h(1, 1, 1), h(1, 2, 1), z.clone()],
            [h(0, 0, 2), h(0, 1, 2), h(0, 2, 2), z.clone()],
        ];
        let (mut ar, mut tar) = (0.0, 0.0);
        for row in &want_out {
            for p in 0..4 {
                ar += row[p].iter().map(|x| x * x).sum::<f32>();
                if p < 3 {
                    tar += row[p].iter().zip(&row[p + 1]).map(|(a, b)| (b - a) * (b - a)).sum::<f32>();
                }
            }
        }
        let want = alpha * ar / (3 * 4 * e) as f32 + beta * tar / (3 * 3 * e) as f32;
        let loss = ar_tar(&chunks, &lens, 3, 3, alpha, beta);
        let got = loss.item().unwrap();
        assert!((got - want).abs() <= 1e-6 * want.abs(), "ar_tar {got} vs direct {want}");
        loss.backward().unwrap();
        for (ci, c) in chunks.iter().enumerate() {
            let analytic = c.out.grad().unwrap().to_vec();
            for (j, &autograd) in analytic.iter().enumerate() {
                let orig = c.out.data()[j];
                let eps = 1e-3;
                c.out.data_mut()[j] = orig + eps;
                let up = ar_tar(&chunks, &lens, 3, 3, alpha, beta).item().unwrap();
                c.out.data_mut()[j] = orig - eps;
                let down = ar_tar(&chunks, &lens, 3, 3, alpha, beta).item().unwrap();
                c.out.data_mut()[j] = orig;
                let numeric = (up - down) / (2.0 * eps);
                let diff = (numeric - autograd).abs();
                assert!(
                    diff <= 1e-3 + 1e-2 * numeric.abs(),
                    "chunk {ci} [{j}]: autograd {autograd} vs numeric {numeric}"
                );
            }
        }
        // Document 0's steps 0..3 (positions 0..3) lie before the window: no gradient.
        let g0 = chunks[0].out.grad().unwrap().to_vec();
        for s in 0..3 {
            assert_eq!(&g0[(s * 3) * e..][..e], &[0.0, 0.0], "document 0 step {s} is outside the window");
        }
    }
}
