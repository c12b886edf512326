//! fastai v2's default tokenizer: the pre-rules (`rules.rs`), the spaCy-like word splitter
//! (`splitter.rs`) and the post-rule `replace_space` (a space inside a token becomes `▁`).
//!
//! Reference: fastai `Tokenizer`/`tokenize_texts` with `WordTokenizer`; checked document by
//! document by `tests/fastai_agreement.rs`.

use rayon::prelude::*;

use crate::rules::apply_rules;
use crate::splitter::Splitter;

/// fastai-compatible word tokenizer (rules + spaCy English splitting). `Sync`: share one.
#[derive(Default)]
pub struct Tokenizer {
    splitter: Splitter,
}

impl Tokenizer {
    /// A tokenizer with fastai's default rules and spaCy English's special cases.
    pub fn new() -> Self {
        Tokenizer { splitter: Splitter::new() }
    }

    /// Tokenizes one document; the first token is `xxbos`, as in fastai.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.tokenize_with(text, |t| out.push(t.to_string()));
        out
    }

    /// Tokenizes one document and hands each token to `f` without allocating it.
    pub fn tokenize_with(&self, text: &str, mut f: impl FnMut(&str)) {
        let prepared = apply_rules(text);
        let mut toks = Vec::with_capacity(prepared.len() / 4);
        self.splitter.split(&prepared, &mut toks);
        for t in toks {
            if t.contains(' ') {
                f(&t.replace(' ', "\u{2581}"));
            } else {
                f(t);
            }
        }
    }

    /// Tokenizes many documents in parallel (rayon), keeping their order.
    pub fn tokenize_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<Vec<String>> {
        texts.par_iter().map(|t| self.tokenize(t.as_ref())).collect()
    }
}
