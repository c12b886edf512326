//! Numericalised corpora: all token ids in one flat `Vec<u32>` with document offsets, built in a
//! single streaming pass (tokenise a chunk of documents in parallel, intern tokens to provisional
//! ids in first-occurrence order, then remap to the final vocabulary in place), so memory holds
//! the ids once plus one chunk of text. Checked by `tests/vocab.rs` against `Vocab::build` +
//! `encode` on the same documents.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::fxhash::FxBuildHasher;
use crate::tokenizer::Tokenizer;
use crate::vocab::Vocab;

/// Token ids of many documents, stored flat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Corpus {
    /// All ids, document after document.
    pub ids: Vec<u32>,
    /// `offsets[d]..offsets[d + 1]` is document d in `ids` (length = documents + 1).
    pub offsets: Vec<usize>,
}

impl Corpus {
    /// Builds a corpus from per-document id lists.
    pub fn from_docs(docs: &[Vec<u32>]) -> Corpus {
        let mut c = Corpus { ids: Vec::new(), offsets: vec![0] };
        for d in docs {
            c.push_doc(d);
        }
        c
    }

    /// Appends one document.
    pub fn push_doc(&mut self, ids: &[u32]) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.ids.extend_from_slice(ids);
        self.offsets.push(self.ids.len());
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// True if there are no documents.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ids of document `d`.
    pub fn doc(&self, d: usize) -> &[u32] {
        &self.ids[self.offsets[d]..self.offsets[d + 1]]
    }

    /// Length in tokens of document `d`.
    pub fn doc_len(&self, d: usize) -> usize {
        self.offsets[d + 1] - self.offsets[d]
    }
}

/// One tokenised document, compact: tokens concatenated with their end offsets.
struct Tokens {
    text: String,
    ends: Vec<u32>,
}

impl Tokens {
    fn of(tok: &Tokenizer, doc: &str) -> Tokens {
        let mut t = Tokens { text: String::with_capacity(doc.len() + 64), ends: Vec::new() };
        tok.tokenize_with(doc, |s| {
            t.text.push_str(s);
            t.ends.push(t.text.len() as u32);
        });
        t
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter()).map(|(a, &b)| &self.text[a as usize..b as usize])
    }
}

/// Streams documents through the tokenizer into a [`Corpus`] of provisional ids.
pub struct CorpusBuilder<'t> {
    tok: &'t Tokenizer,
    index: HashMap<String, u32, FxBuildHasher>,
    /// Provisional id -> (token, count), in first-occurrence order.
    counts: Vec<(String, usize)>,
    corpus: Corpus,
}

impl<'t> CorpusBuilder<'t> {
    /// An empty builder using `tok`.
    pub fn new(tok: &'t Tokenizer) -> Self {
        CorpusBuilder { tok, index: HashMap::default(), counts: Vec::new(), corpus: Corpus::from_docs(&[]) }
    }

    /// Tokenises `texts` in parallel and appends them (in order).
    pub fn add<S: AsRef<str> + Sync>(&mut self, texts: &[S]) {
        let toks: Vec<Tokens> = texts.par_iter().map(|t| Tokens::of(self.tok, t.as_ref())).collect();
        for doc in toks {
            for t in doc.iter() {
                let id = match self.index.get(t) {
                    Some(&id) => id,
                    None => {
                        let id = self.counts.len() as u32;
                        self.index.insert(t.to_string(), id);
                        self.counts.push((t.to_string(), 0));
                        id
                    }
                };
                self.counts[id as usize].1 += 1;
                self.corpus.ids.push(id);
            }
            self.corpus.offsets.push(self.corpus.ids.len());
        }
    }

    /// Builds the vocabulary from the counts (fastai `make_vocab`) and numericalises with it.
    pub fn finish(self, max_vocab: usize, min_freq: usize) -> (Vocab, Corpus) {
        let vocab = Vocab::from_counts(&self.counts, max_vocab, min_freq);
        let corpus = self.finish_with(&vocab);
        (vocab, corpus)
    }

    /// Numericalises with an existing vocabulary (e.g. the LM's for the classifier).
    pub fn finish_with(self, vocab: &Vocab) -> Corpus {
        let remap: Vec<u32> = self.counts.iter().map(|(t, _)| vocab.id(t)).collect();
        let mut corpus = self.corpus;
        corpus.ids.par_iter_mut().for_each(|id| *id = remap[*id as usize]);
        corpus
    }
}
