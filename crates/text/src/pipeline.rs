//! End-to-end helpers behind the `ulmfit tokenize|vocab|download` commands: read any supported
//! input by its shape, build vocabulary + corpus with a progress bar, download with progress.
//! The CLI in the root crate stays a thin wrapper around these.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::corpus::{Corpus, CorpusBuilder};
use crate::datasets::{self, CsvOptions, Document};
use crate::error::Result;
use crate::tokenizer::Tokenizer;
use crate::vocab::Vocab;

/// Reads documents from `path`, chosen by its shape: a directory (`aclImdb` layout or one folder
/// per class), `*.tar.gz` (aclImdb), `*.label` (TREC), `*.csv`/`*.tsv` (column `text_col`,
/// optional `label_col`; a fastai CSV needs no options), `*.tokens` (WikiText, one document per
/// line), anything else: one document per non-empty line.
pub fn load_any(path: &Path, text_col: &str, label_col: Option<&str>) -> Result<Vec<Document>> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if path.is_dir() {
        return if path.join("train").join("pos").is_dir() {
            let imdb = datasets::load_imdb(path)?;
            Ok(imdb.train.into_iter().chain(imdb.test).collect())
        } else {
            datasets::load_folder(path)
        };
    }
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let imdb = datasets::load_imdb(path)?;
        return Ok(imdb.train.into_iter().chain(imdb.test).collect());
    }
    if name.ends_with(".label") {
        return datasets::load_trec(path);
    }
    if name.ends_with(".csv") || name.ends_with(".tsv") {
        let mut opts = CsvOptions::csv(text_col, label_col);
        if name.ends_with(".tsv") {
            opts.delimiter = '\t';
            opts.quoting = false;
        }
        return datasets::load_csv(path, &opts);
    }
    let text = crate::error::read_utf8(path)?;
    let docs: Vec<Document> =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| Document { text: l.to_string(), label: None }).collect();
    if docs.is_empty() {
        return Err(crate::TextError::Empty { path: path.to_path_buf(), what: "empty dataset: no lines".into() });
    }
    Ok(docs)
}

/// A progress bar over `n` items, hidden for small inputs (fewer than `min` items).
pub fn progress_bar(n: u64, min: u64, what: &str) -> ProgressBar {
    if n < min {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n);
    let style = ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}]")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

/// Tokenises and numericalises `docs` in chunks (progress bar from 5,000 documents on), building
/// the vocabulary with fastai's rules.
pub fn build_corpus(docs: &[Document], tok: &Tokenizer, max_vocab: usize, min_freq: usize) -> (Vocab, Corpus) {
    let bar = progress_bar(docs.len() as u64, 5000, "tokenizing");
    let mut b = CorpusBuilder::new(tok);
    for chunk in docs.chunks(2000) {
        let texts: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
        b.add(&texts);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    b.finish(max_vocab, min_freq)
}

/// `download::download` with a byte progress bar per file.
pub fn download_with_progress(
    dest: &Path,
    base_url: Option<&str>,
    only: Option<&str>,
) -> Result<Vec<crate::download::Outcome>> {
    let mut bar: Option<(String, ProgressBar)> = None;
    let result = crate::download::download(dest, base_url, only, &mut |url, done, total| {
        if !matches!(&bar, Some((u, _)) if u == url) {
            if let Some((_, b)) = bar.take() {
                b.finish();
            }
            let b = ProgressBar::new(total.unwrap_or(0));
            if let Ok(style) = ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes}") {
                b.set_style(style);
            }
            b.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
            bar = Some((url.to_string(), b));
        }
        if let Some((_, b)) = &bar {
            b.set_position(done);
        }
    });
    if let Some((_, b)) = bar {
        b.finish();
    }
    result
}
