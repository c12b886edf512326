//! The BPT3C schedule of one batch, as `ulmfit_trainer::classifier::Classifier::forward`
//! runs it: documents sorted longest first and padded at the back; chunk c covers steps
//! [c*bptt, c*bptt + len_c) of the rows still inside their document (a prefix); a chunk is
//! kept for the backward when it reaches into some row's pooling window [from_b, len_b)
//! ([`windows`], fastai's `SentenceEncoder`). Also where each chunk's activations sit in the
//! per-layer arenas: chunk c of a
//! buffer starts after the `Buf::len` of every earlier chunk's dims, so the LSTM plans of
//! `crate::plan` run on each chunk unchanged.
//!
//! Checked by tests/clas_on_cpu.rs (against a direct transcription of the CPU loop).

use ulmfit_lstm::LstmDims;

use crate::plan::Buf;

/// The token id the CPU classifier reads past a document's end (`xxpad`).
pub use crate::lm::PAD;

/// One chunk of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// First step.
    pub start: usize,
    /// Steps.
    pub len: usize,
    /// Rows (the first `rows` documents).
    pub rows: usize,
    /// Whether gradients flow through it.
    pub kept: bool,
    /// Offset of its ids [len, rows] in the batch's id buffer: sum of len * rows before it.
    pub tok: usize,
    /// Sum of rows of the chunks before it.
    pub rows_before: usize,
}

/// First pooled step of each document (lengths `lens`, longest first), as the CPU classifier
/// and fastai's `SentenceEncoder`: in fastai's layout each document is front-padded by whole
/// chunks, and the chunks starting at most `max_len` steps before the batch's end are pooled,
/// i.e. from the first multiple of bptt at or after `longest - max_len`, counted in each
/// document's own steps (at least 0).
pub fn windows(lens: &[usize], bptt: usize, max_len: usize) -> Vec<usize> {
    let longest = lens.first().copied().unwrap_or(0);
    let first = longest.saturating_sub(max_len).div_ceil(bptt) * bptt;
    lens.iter().map(|l| first.saturating_sub((longest - l) / bptt * bptt)).collect()
}

/// The chunks of one batch and each document's pooling window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Document lengths, non-increasing, each > 0.
    pub lens: Vec<usize>,
    /// First pooled step of each document ([`windows`]).
    pub from: Vec<usize>,
    /// Chunks in time order.
    pub chunks: Vec<Chunk>,
    /// Chunk length.
    pub bptt: usize,
}

impl Schedule {
    /// The schedule for documents of lengths `lens`; an error names a violated precondition.
    pub fn new(lens: &[usize], bptt: usize, max_len: usize) -> Result<Self, String> {
        if lens.is_empty() {
            return Err("no documents".into());
        }
        if let Some(b) = lens.iter().position(|&l| l == 0) {
            return Err(format!("document {b} is empty"));
        }
        if let Some(b) = lens.windows(2).position(|w| w[0] < w[1]) {
            return Err(format!("documents must be sorted longest first: {} then {}", lens[b], lens[b + 1]));
        }
        let from = windows(lens, bptt, max_len);
        let mut chunks = Vec::new();
        let (mut tok, mut rows_before) = (0, 0);
        for start in (0..lens[0]).step_by(bptt) {
            let len = bptt.min(lens[0] - start);
            let rows = lens.iter().take_while(|&&l| l > start).count();
            let kept = (0..rows).any(|b| start + len > from[b]);
            chunks.push(Chunk { start, len, rows, kept, tok, rows_before });
            tok += len * rows;
            rows_before += rows;
        }
        Ok(Schedule { lens: lens.to_vec(), from, chunks, bptt })
    }

    /// Total ids over all chunks.
    pub fn tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.len * c.rows).sum()
    }

    /// Every chunk's ids [len, rows] time-major, concatenated; PAD past a document's end.
    pub fn ids(&self, docs: &[Vec<u32>]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(self.tokens());
        for c in &self.chunks {
            for s in 0..c.len {
                ids.extend(docs[..c.rows].iter().map(|d| d.get(c.start + s).copied().unwrap_or(PAD)));
            }
        }
        ids
    }

    /// Dims of chunk `c` for a layer of input width `i` and hidden width `h`.
    pub fn dims(&self, c: usize, i: usize, h: usize) -> LstmDims {
        let ch = self.chunks[c];
        LstmDims { t: ch.len, b: ch.rows, i, h }
    }

    /// Element offset of chunk `c` (c <= chunks) in a layer's arena for `buf`: the sum of
    /// `buf.len` over the earlier chunks. Every arena buffer's length is alpha*t*b + beta*b,
    /// so this is alpha * (tokens before) + beta * (rows before), in O(1).
    pub fn offset(&self, c: usize, buf: Buf, i: usize, h: usize) -> usize {
        let f = |t: usize, b: usize| buf.len(LstmDims { t, b, i, h });
        let alpha = f(2, 1) - f(1, 1);
        let beta = f(1, 1) - alpha;
        assert_eq!(f(3, 2), 6 * alpha + 2 * beta, "Schedule::offset: {buf:?} is not linear in (t*b, b)");
        let (tok, rows) = match self.chunks.get(c) {
            Some(ch) => (ch.tok, ch.rows_before),
            None => (self.tokens(), self.chunks.iter().map(|ch| ch.rows).sum()),
        };
        alpha * tok + beta * rows
    }

    /// Length of a layer's arena for `buf`: every chunk's part.
    pub fn arena_len(&self, buf: Buf, i: usize, h: usize) -> usize {
        self.offset(self.chunks.len(), buf, i, h)
    }
}

/// Where a layer's plan buffer lives for one chunk (see [`place`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The flat parameter buffer.
    Params,
    /// The layer's DropConnect-masked W_hh [4H, H].
    MaskedWhh,
    /// The zero state [batch * max(E, H)].
    Zeros,
    /// The layer's arena for this buffer ([`Schedule::arena_len`]).
    Arena(Buf),
    /// The layer's scratch for this buffer (`Buf::len` of one bptt x batch chunk).
    Scratch(Buf),
}

/// Where element 0 of layer `l`'s plan buffer `buf` lies for chunk `c` of `s`: (buffer,
/// element offset). `w` = the layer's offsets (w_ih, w_hh, b_ih, b_hh) in the flat parameter
/// buffer; (i, h) its widths. The initial state of chunk c > 0 is chunk c-1's last row of
/// Hs / Cs, whose first rows_c rows are exactly this chunk's documents.
pub fn place(s: &Schedule, c: usize, w: [usize; 4], i: usize, h: usize, buf: Buf) -> (Place, usize) {
    match buf {
        Buf::WIh => (Place::Params, w[0]),
        Buf::BIh => (Place::Params, w[2]),
        Buf::BHh => (Place::Params, w[3]),
        Buf::WHh => (Place::MaskedWhh, 0),
        Buf::H0 | Buf::C0 if c == 0 => (Place::Zeros, 0),
        Buf::H0 | Buf::C0 => {
            let seq = if buf == Buf::H0 { Buf::Hs } else { Buf::Cs };
            let prev = s.chunks[c - 1];
            (Place::Arena(seq), s.offset(c - 1, seq, i, h) + prev.len * prev.rows * h)
        }
        Buf::X | Buf::Hs | Buf::Cs | Buf::Act => (Place::Arena(buf), s.offset(c, buf, i, h)),
        other => (Place::Scratch(other), 0),
    }
}
