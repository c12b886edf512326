//! Batching: the language-model stream and length-sorted classifier batches, both time-major
//! `[T, B]` (index `t * B + b`) as the LSTM wants, both reading the flat [`Corpus`] in place.
//!
//! `LmStream` follows fastai's `LMDataLoader`: documents shuffled per epoch, concatenated, the
//! stream of N tokens cut into B rows of `(N - 1) / B` tokens; each batch holds the next T tokens
//! of every row and the targets one token later, so the batches tile each row in order. With
//! `Bptt::Fixed(T)` batch i holds tokens `[i*T, i*T+T)`; with `Bptt::Random` T is drawn per batch.
//! The concatenation is virtual (per-row cursors over the shuffled document order), so no copy
//! of the corpus is made. `ClassifierBatches` follows fastai's `SortedDL` + `pad_input_chunk`
//! (padded with `xxpad`, [`PAD_ID`], in whole `seq_len` chunks at the front, the remainder at
//! the end). Checked by `tests/batch.rs` against a plain concatenate-and-slice reference and
//! fastai's ordering rules.

use crate::corpus::Corpus;
use crate::error::{Result, TextError};
use crate::rng::Rng;
use crate::vocab::PAD_ID;

/// Sequence length policy of the LM stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bptt {
    /// Every batch has T = this many steps (the last one may be shorter).
    Fixed(usize),
    /// AWD-LSTM: base T with p=0.95, else T/2; then max(5, N(that, 5)).
    Random(usize),
}

/// The shuffling RNG of epoch `epoch` under run seed `seed`: each epoch reshuffles, and the
/// same (seed, epoch) repeats.
fn epoch_rng(seed: u64, epoch: u64) -> Rng {
    Rng::new(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// One LM batch: inputs and next-token targets, both `[seq_len, batch_size]` time-major.
#[derive(Debug, Clone, PartialEq)]
pub struct LmBatch {
    /// Input ids, `x[t * batch_size + b]`.
    pub x: Vec<u32>,
    /// Target ids (the next token of each input).
    pub y: Vec<u32>,
    /// T of this batch (AWD-LSTM scales the learning rate by T / bptt).
    pub seq_len: usize,
    /// B.
    pub batch_size: usize,
}

/// Position in the shuffled document order.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    doc: usize,
    off: usize,
}

/// One epoch of LM batches over a corpus.
pub struct LmStream<'c> {
    corpus: &'c Corpus,
    order: Vec<u32>,
    rows: Vec<Cursor>,
    row_len: usize,
    t: usize,
    bptt: Bptt,
    rng: Rng,
}

impl<'c> LmStream<'c> {
    /// Epoch `epoch` of the stream; `shuffle` reorders documents with a seed derived from
    /// (`seed`, `epoch`). Errors if the corpus has fewer than `batch_size + 1` tokens.
    pub fn new(
        corpus: &'c Corpus,
        batch_size: usize,
        bptt: Bptt,
        shuffle: bool,
        seed: u64,
        epoch: u64,
    ) -> Result<Self> {
        let n = corpus.ids.len();
        let t = match bptt {
            Bptt::Fixed(t) | Bptt::Random(t) => t,
        };
        if batch_size == 0 || t == 0 || n <= batch_size {
            return Err(TextError::Invalid(format!(
                "LmStream: {n} tokens cannot fill batch size {batch_size} with bptt {t}"
            )));
        }
        let mut rng = epoch_rng(seed, epoch);
        let mut order: Vec<u32> = (0..corpus.len() as u32).collect();
        if shuffle {
            rng.shuffle(&mut order);
        }
        let row_len = (n - 1) / batch_size;
        // Start of each row: walk the shuffled documents once.
        let mut rows = Vec::with_capacity(batch_size);
        let (mut doc, mut before) = (0usize, 0usize);
        for b in 0..batch_size {
            let p = b * row_len;
            while before + corpus.doc_len(order[doc] as usize) <= p {
                before += corpus.doc_len(order[doc] as usize);
                doc += 1;
            }
            rows.push(Cursor { doc, off: p - before });
        }
        Ok(LmStream { corpus, order, rows, row_len, t: 0, bptt, rng })
    }

    /// The shuffled document order of this epoch.
    pub fn doc_order(&self) -> &[u32] {
        &self.order
    }

    /// Tokens per row (`(N - 1) / B`).
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Reads `n` tokens from `cur` into `out[k * stride]`, advancing the cursor.
    fn read(&self, cur: &mut Cursor, n: usize, out: &mut [u32], stride: usize) {
        for k in 0..n {
            let mut d = self.corpus.doc(self.order[cur.doc] as usize);
            while cur.off >= d.len() {
                cur.doc += 1;
                cur.off = 0;
                d = self.corpus.doc(self.order[cur.doc] as usize);
            }
            out[k * stride] = d[cur.off];
            cur.off += 1;
        }
    }

    fn next_len(&mut self) -> usize {
        match self.bptt {
            Bptt::Fixed(t) => t,
            Bptt::Random(base) => {
                let b = if self.rng.uniform() < 0.95 { base as f64 } else { base as f64 / 2.0 };
                ((b + 5.0 * self.rng.normal()) as i64).max(5) as usize
            }
        }
    }
}

impl Iterator for LmStream<'_> {
    type Item = LmBatch;

    fn next(&mut self) -> Option<LmBatch> {
        if self.t >= self.row_len {
            return None;
        }
        let seq_len = self.next_len().min(self.row_len - self.t);
        let bs = self.rows.len();
        let mut xy = vec![0u32; (seq_len + 1) * bs];
        for b in 0..bs {
            let mut cur = self.rows[b];
            self.read(&mut cur, seq_len, &mut xy[b..], bs);
            // The target of the last step is the next token; the row continues from there.
            self.rows[b] = cur;
            let mut peek = cur;
            self.read(&mut peek, 1, &mut xy[seq_len * bs + b..], bs);
        }
        self.t += seq_len;
        let y = xy[bs..].to_vec();
        xy.truncate(seq_len * bs);
        Some(LmBatch { x: xy, y, seq_len, batch_size: bs })
    }
}

/// One classifier batch, padded (`[T, B]` time-major).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierBatch {
    /// Padded ids, `x[t * batch_size + b]`.
    pub x: Vec<u32>,
    /// T (the longest document of the batch).
    pub seq_len: usize,
    /// Label of each example.
    pub labels: Vec<u32>,
    /// Unpadded length of each example.
    pub lengths: Vec<usize>,
    /// Corpus index of each example.
    pub docs: Vec<usize>,
}

/// Classifier batches in fastai `SortedDL` order.
pub struct ClassifierBatches<'c> {
    corpus: &'c Corpus,
    labels: &'c [u32],
    order: Vec<usize>,
    batch_size: usize,
    pad_chunk: usize,
    pos: usize,
}

/// fastai `SortedDL` document order: longest-first sort, or when shuffling: a random
/// permutation with the longest document first, sorted by length within chunks of 50 batches,
/// then the middle batches permuted.
pub fn sorted_order(lens: &[usize], batch_size: usize, shuffle: bool, rng: &mut Rng) -> Vec<usize> {
    let by_len_desc = |idx: &mut [usize]| idx.sort_by(|&a, &b| lens[b].cmp(&lens[a]));
    let mut idxs: Vec<usize> = (0..lens.len()).collect();
    if !shuffle || lens.is_empty() {
        by_len_desc(&mut idxs);
        return idxs;
    }
    rng.shuffle(&mut idxs);
    let longest = (0..lens.len()).fold(0, |m, i| if lens[i] > lens[m] { i } else { m });
    let at = idxs.iter().position(|&i| i == longest).unwrap_or(0);
    idxs.swap(0, at);
    idxs.chunks_mut(batch_size * 50).for_each(by_len_desc);
    let mut batches: Vec<&[usize]> = idxs.chunks(batch_size).collect();
    if batches.len() > 2 {
        let n = batches.len();
        rng.shuffle(&mut batches[1..n - 1]);
    }
    batches.concat()
}

impl<'c> ClassifierBatches<'c> {
    /// Epoch `epoch` of classifier batches. `pad_chunk` is fastai's `seq_len` for
    /// `pad_input_chunk` (72); 1 pads purely at the front.
    pub fn new(
        corpus: &'c Corpus,
        labels: &'c [u32],
        batch_size: usize,
        pad_chunk: usize,
        shuffle: bool,
        seed: u64,
        epoch: u64,
    ) -> Result<Self> {
        if corpus.len() != labels.len() || corpus.is_empty() || batch_size == 0 || pad_chunk == 0 {
            return Err(TextError::Invalid(format!(
                "ClassifierBatches: {} documents, {} labels, batch size {batch_size}, pad chunk {pad_chunk}",
                corpus.len(),
                labels.len()
            )));
        }
        let lens: Vec<usize> = (0..corpus.len()).map(|d| corpus.doc_len(d)).collect();
        let mut rng = epoch_rng(seed, epoch);
        let order = sorted_order(&lens, batch_size, shuffle, &mut rng);
        Ok(ClassifierBatches { corpus, labels, order, batch_size, pad_chunk, pos: 0 })
    }
}

impl Iterator for ClassifierBatches<'_> {
    type Item = ClassifierBatch;

    fn next(&mut self) -> Option<ClassifierBatch> {
        if self.pos >= self.order.len() {
            return None;
        }
        let docs: Vec<usize> = self.order[self.pos..(self.pos + self.batch_size).min(self.order.len())].to_vec();
        self.pos += docs.len();
        let bs = docs.len();
        let lengths: Vec<usize> = docs.iter().map(|&d| self.corpus.doc_len(d)).collect();
        let seq_len = lengths.iter().copied().max().unwrap_or(0);
        let mut x = vec![PAD_ID; seq_len * bs];
        for (b, &d) in docs.iter().enumerate() {
            let pad = seq_len - lengths[b];
            let front = pad / self.pad_chunk * self.pad_chunk;
            for (t, &id) in self.corpus.doc(d).iter().enumerate() {
                x[(front + t) * bs + b] = id;
            }
        }
        let labels = docs.iter().map(|&d| self.labels[d]).collect();
        Some(ClassifierBatch { x, seq_len, labels, lengths, docs })
    }
}
