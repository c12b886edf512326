//! Peak-memory check: tokenise and numericalise all 50,000 IMDb reviews straight from the
//! .tar.gz (streamed in chunks), then run one epoch of LM batches and one of classifier batches.
//! Run under `/usr/bin/time -v` and compare "Maximum resident set size" with the id bytes printed.
//!
//! `cargo run --release -p ulmfit-text --example imdb_rss [PATH_TO_aclImdb.tar.gz]`

use std::path::PathBuf;

use ulmfit_text::datasets::for_each_imdb;
use ulmfit_text::{Bptt, ClassifierBatches, CorpusBuilder, LmStream, Tokenizer};

fn main() -> ulmfit_text::Result<()> {
    let path = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/imdb/aclImdb_labeled.tar.gz")
    });
    let tok = Tokenizer::new();
    let mut builder = CorpusBuilder::new(&tok);
    let (mut chunk, mut labels) = (Vec::new(), Vec::new());
    let t0 = std::time::Instant::now();
    for_each_imdb(&path, |_, doc| {
        labels.push((doc.label.as_deref() == Some("pos")) as u32);
        chunk.push(doc.text);
        if chunk.len() == 2000 {
            builder.add(&chunk);
            chunk.clear();
        }
        Ok(())
    })?;
    builder.add(&chunk);
    drop(chunk);
    let (vocab, corpus) = builder.finish(60000, 3);
    let t_tok = t0.elapsed().as_secs_f64();
    let (mut n_lm, mut n_clas, mut sum) = (0usize, 0usize, 0u64);
    for b in LmStream::new(&corpus, 64, Bptt::Random(70), true, 1, 0)? {
        n_lm += 1;
        sum += b.x[0] as u64 + b.y[b.y.len() - 1] as u64;
    }
    for b in ClassifierBatches::new(&corpus, &labels, 64, 72, true, 1, 0)? {
        n_clas += 1;
        sum += b.x[0] as u64;
    }
    let id_bytes = corpus.ids.len() * 4;
    println!(
        "{} docs, {} tokens, vocab {}, ids {:.1} MB; tokenised in {:.2} s; {} LM batches, {} classifier batches (checksum {})",
        corpus.len(),
        corpus.ids.len(),
        vocab.len(),
        id_bytes as f64 / 1e6,
        t_tok,
        n_lm,
        n_clas,
        sum
    );
    Ok(())
}
