//! `ulmfit tokenize`, `ulmfit vocab`, `ulmfit download`: thin wrappers over `ulmfit_text::pipeline`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ulmfit_text::vocab::{escape, MAX_VOCAB, MIN_FREQ};
use ulmfit_text::{pipeline, Tokenizer};

/// Arguments of `ulmfit tokenize`.
#[derive(Args)]
pub struct TokenizeArgs {
    /// Input: text file (one document per line), .csv/.tsv, TREC .label, aclImdb .tar.gz or folder.
    pub file: PathBuf,
    /// Number of documents to show.
    #[arg(long, default_value_t = 5)]
    pub limit: usize,
    /// Text column of a CSV/TSV.
    #[arg(long, default_value = "text")]
    pub text_col: String,
    /// Label column of a CSV/TSV.
    #[arg(long)]
    pub label_col: Option<String>,
}

/// Arguments of `ulmfit vocab`.
#[derive(Args)]
pub struct VocabArgs {
    /// Input, as for `ulmfit tokenize`.
    pub file: PathBuf,
    /// Where to write the vocabulary (one token per line).
    #[arg(long)]
    pub out: PathBuf,
    /// Maximum vocabulary size (fastai default 60000).
    #[arg(long, default_value_t = MAX_VOCAB)]
    pub max_vocab: usize,
    /// Minimum count to enter the vocabulary (fastai default 3).
    #[arg(long, default_value_t = MIN_FREQ)]
    pub min_freq: usize,
    /// Text column of a CSV/TSV.
    #[arg(long, default_value = "text")]
    pub text_col: String,
}

/// Arguments of `ulmfit download`.
#[derive(Args)]
pub struct DownloadArgs {
    /// Destination directory (default: where the configs read data: `$ULMFIT_DATA`, else
    /// `../shared/data`).
    #[arg(long)]
    pub dest: Option<PathBuf>,
    /// Mirror laid out like shared/data (default: the canonical upstream addresses).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Only this dataset (wikitext-2, ptb, trec, imdb, imdb_sample, ag_news, sst2).
    #[arg(long)]
    pub only: Option<String>,
}

/// Runs `ulmfit tokenize`: prints the tokens of the first `--limit` documents.
pub fn tokenize(args: TokenizeArgs) -> anyhow::Result<()> {
    let docs = pipeline::load_any(&args.file, &args.text_col, args.label_col.as_deref())?;
    let tok = Tokenizer::new();
    let shown = &docs[..args.limit.min(docs.len())];
    let toks = tok.tokenize_batch(&shown.iter().map(|d| d.text.as_str()).collect::<Vec<_>>());
    for (i, (d, t)) in shown.iter().zip(toks).enumerate() {
        let label = d.label.as_deref().map(|l| format!(" [{l}]")).unwrap_or_default();
        let line: Vec<String> = t.iter().map(|x| escape(x)).collect();
        println!("doc {i}{label} ({} tokens): {}", line.len(), line.join(" "));
    }
    println!("{} of {} documents shown", shown.len(), docs.len());
    Ok(())
}

/// Runs `ulmfit vocab`: tokenises the whole input and saves its vocabulary.
pub fn vocab(args: VocabArgs) -> anyhow::Result<()> {
    let docs = pipeline::load_any(&args.file, &args.text_col, None)?;
    let tok = Tokenizer::new();
    let t0 = std::time::Instant::now();
    let (vocab, corpus) = pipeline::build_corpus(&docs, &tok, args.max_vocab, args.min_freq);
    vocab.save(&args.out).with_context(|| format!("saving {}", args.out.display()))?;
    let unk = corpus.ids.iter().filter(|&&i| i == 0).count();
    println!(
        "{} documents, {} tokens in {:.2} s; vocabulary of {} written to {} ({:.2}% of tokens unknown)",
        corpus.len(),
        corpus.ids.len(),
        t0.elapsed().as_secs_f64(),
        vocab.len(),
        args.out.display(),
        100.0 * unk as f64 / corpus.ids.len().max(1) as f64
    );
    Ok(())
}

/// Runs `ulmfit download`.
pub fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let dest = args.dest.unwrap_or_else(|| ulmfit_trainer::config::DataConfig::default().root_dir());
    let got = pipeline::download_with_progress(&dest, args.base_url.as_deref(), args.only.as_deref())?;
    for o in got {
        match o {
            ulmfit_text::download::Outcome::Downloaded(p) => {
                println!("downloaded and verified {}", p.display())
            }
            ulmfit_text::download::Outcome::Present(p) => {
                println!("already present, verified {}", p.display())
            }
        }
    }
    Ok(())
}
