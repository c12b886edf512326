//! Vocabulary as fastai v2's `make_vocab` builds it, and numericalisation to u32.
//!
//! Tokens are ranked by count (ties: first occurrence, like `Counter.most_common`), the top
//! `max_vocab` with count >= `min_freq` kept, the special tokens forced to the front in fastai's
//! order, the list cut to `max_vocab` and padded with `xxfake` to a multiple of 8 (fastai adds 8
//! when it already is one). Unknown tokens (and `xxfake`) encode to `xxunk` = 0. Checked by
//! `tests/vocab.rs` against the list fastai's `make_vocab` gives.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{io_err, read_utf8, Result, TextError};
use crate::rules::SPECIAL_TOKENS;

/// fastai v2 defaults.
pub const MAX_VOCAB: usize = 60000;
/// fastai v2 default minimum count.
pub const MIN_FREQ: usize = 3;
/// Id of `xxunk` (first of [`SPECIAL_TOKENS`]); unknown tokens and `xxfake` encode to it.
pub const UNK_ID: u32 = 0;
/// Id of `xxpad` (second of [`SPECIAL_TOKENS`]); classifier batches are padded with it.
pub const PAD_ID: u32 = 1;

/// Token <-> id mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    itos: Vec<String>,
    stoi: HashMap<String, u32>,
}

impl Vocab {
    /// fastai `make_vocab` from token counts given in first-occurrence order.
    pub fn from_counts<S: AsRef<str>>(counts: &[(S, usize)], max_vocab: usize, min_freq: usize) -> Vocab {
        let mut order: Vec<usize> = (0..counts.len()).collect();
        order.sort_by(|&a, &b| counts[b].1.cmp(&counts[a].1).then(a.cmp(&b)));
        let mut itos: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
        itos.extend(
            order
                .into_iter()
                .take(max_vocab)
                .filter(|&i| counts[i].1 >= min_freq)
                .map(|i| counts[i].0.as_ref())
                .filter(|t| !SPECIAL_TOKENS.contains(t))
                .map(str::to_string),
        );
        itos.truncate(max_vocab);
        let pad = 8 - itos.len() % 8;
        itos.extend(vec!["xxfake".to_string(); pad]);
        Vocab::from_itos(itos)
    }

    /// Counts the tokens of `docs` (in order) and builds the vocabulary.
    pub fn build<S: AsRef<str>>(docs: &[Vec<S>], max_vocab: usize, min_freq: usize) -> Vocab {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for t in docs.iter().flatten() {
            let t = t.as_ref();
            let i = *index.entry(t).or_insert_with(|| {
                counts.push((t, 0));
                counts.len() - 1
            });
            counts[i].1 += 1;
        }
        Vocab::from_counts(&counts, max_vocab, min_freq)
    }

    /// Wraps an id -> token list (e.g. one read from disk).
    ///
    /// The list must start with [`SPECIAL_TOKENS`] in order, as every list [`Vocab::build`] makes
    /// (and [`Vocab::save`] writes) does: [`Vocab::unk_id`] and [`Vocab::pad_id`] are the fixed
    /// ids [`UNK_ID`] and [`PAD_ID`], not looked up. This is not checked here (it cannot fail);
    /// [`Vocab::load`] checks it, and a caller wrapping a list from another file should too.
    pub fn from_itos(itos: Vec<String>) -> Vocab {
        let stoi = itos
            .iter()
            .enumerate()
            .filter(|(_, t)| t.as_str() != "xxfake")
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Vocab { itos, stoi }
    }

    /// Number of entries, `xxfake` padding included.
    pub fn len(&self) -> usize {
        self.itos.len()
    }

    /// True if there are no entries (never for a built vocabulary).
    pub fn is_empty(&self) -> bool {
        self.itos.is_empty()
    }

    /// Id of `xxunk` ([`UNK_ID`]).
    pub fn unk_id(&self) -> u32 {
        UNK_ID
    }

    /// Id of `xxpad` ([`PAD_ID`]).
    pub fn pad_id(&self) -> u32 {
        PAD_ID
    }

    /// The id -> token list.
    pub fn itos(&self) -> &[String] {
        &self.itos
    }

    /// Id of one token (`xxunk` if unknown).
    pub fn id(&self, token: &str) -> u32 {
        self.stoi.get(token).copied().unwrap_or(UNK_ID)
    }

    /// Ids of tokens.
    pub fn encode<S: AsRef<str>>(&self, tokens: &[S]) -> Vec<u32> {
        tokens.iter().map(|t| self.id(t.as_ref())).collect()
    }

    /// Tokens of ids; ids out of range decode to `xxunk`.
    pub fn decode(&self, ids: &[u32]) -> Vec<&str> {
        ids.iter().map(|&i| self.itos.get(i as usize).map_or("xxunk", String::as_str)).collect()
    }

    /// Saves one token per line (`\`, newline, CR and tab escaped as `\\`, `\n`, `\r`, `\t`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut s = String::with_capacity(self.itos.len() * 8);
        for t in &self.itos {
            s.push_str(&escape(t));
            s.push('\n');
        }
        std::fs::write(path, s).map_err(io_err(path))
    }

    /// Loads a file written by [`Vocab::save`].
    pub fn load(path: &Path) -> Result<Vocab> {
        let text = read_utf8(path)?;
        let itos: Vec<String> = text.lines().map(unescape).collect();
        if itos.len() < SPECIAL_TOKENS.len() || itos[..SPECIAL_TOKENS.len()] != SPECIAL_TOKENS {
            return Err(TextError::Format {
                path: path.to_path_buf(),
                line: 1,
                msg: format!("a vocabulary starts with the special tokens {SPECIAL_TOKENS:?}"),
            });
        }
        Ok(Vocab::from_itos(itos))
    }
}

/// Escapes a token for one-per-line files.
pub fn escape(t: &str) -> String {
    t.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r").replace('\t', "\\t")
}

/// Reverses [`escape`].
pub fn unescape(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    let mut it = t.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ids_are_the_special_tokens() {
        assert_eq!(SPECIAL_TOKENS[UNK_ID as usize], "xxunk");
        assert_eq!(SPECIAL_TOKENS[PAD_ID as usize], "xxpad");
        let v = Vocab::build(&[vec!["a"]], MAX_VOCAB, 1);
        assert_eq!((v.id("xxunk"), v.id("xxpad")), (v.unk_id(), v.pad_id()));
    }
}
