//! Text pipeline of ulmfit-rs: a fastai-compatible tokenizer (fastai v2's rules over a spaCy-like
//! English word splitter), vocabulary and numericalisation, loaders for the real datasets, LM
//! and classifier batching, and dataset download.
//!
//! References: fastai 2.8 `fastai/text/{core,data}.py` and spaCy 3.8's English tokenizer.
//! `tests/fastai_agreement.rs` compares with tokens fastai produced (scripts/fastai_tokens.py);
//! `en_tables.rs` is generated from spaCy by scripts/fastai_spacy_tables.py; loader counts are
//! checked against shared/data/README.md.
//!
//! ```no_run
//! use ulmfit_text::{Tokenizer, Vocab};
//! let tok = Tokenizer::new();
//! let toks = tok.tokenize_batch(&["I didn't LOVE it!!!".to_string()]);
//! assert_eq!(toks[0][..4], ["xxbos", "i", "did", "n't"]);
//! let vocab = Vocab::build(&toks, 60000, 1);
//! let ids = vocab.encode(&toks[0]);
//! ```

mod chars;
mod en_tables;
mod fxhash;
mod splitter;
mod url;

pub mod batch;
pub mod corpus;
pub mod csv;
pub mod datasets;
pub mod download;
pub mod error;
pub mod html;
pub mod pipeline;
pub mod rng;
pub mod rules;
pub mod tokenizer;
pub mod vocab;

pub use batch::{Bptt, ClassifierBatch, ClassifierBatches, LmBatch, LmStream};
pub use corpus::{Corpus, CorpusBuilder};
pub use datasets::Document;
pub use error::{Result, TextError};
pub use rules::SPECIAL_TOKENS;
pub use splitter::Splitter;
pub use tokenizer::Tokenizer;
pub use vocab::Vocab;
