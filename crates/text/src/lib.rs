//! Text pipeline of ulmfit-rs: a fastai-compatible tokenizer (fastai v2 rules over a spaCy-like
//! English word splitter), vocabulary and numericalisation, loaders for the real datasets, a token
//! cache, LM and classifier batching, and dataset download.
//!
//! Everything is checked against fastai/spaCy outputs or the dataset README counts; see `tests/`.

mod chars;
mod en_tables;
mod fxhash;
pub mod html;
pub mod rules;
mod splitter;
pub mod tokenizer;
mod url;

pub use rules::SPECIAL_TOKENS;
pub use splitter::Splitter;
pub use tokenizer::Tokenizer;
pub mod csv;
pub mod datasets;
pub mod error;

pub use datasets::Document;
pub use error::{Result, TextError};
pub mod corpus;
pub mod vocab;

pub use corpus::{Corpus, CorpusBuilder};
pub use vocab::Vocab;
pub mod batch;
pub mod rng;

pub use batch::{Bptt, ClassifierBatch, ClassifierBatches, LmBatch, LmStream};
pub mod cache;
pub mod download;
pub mod pipeline;
