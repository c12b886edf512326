//! `ulmfit predict`: class probabilities from a trained classifier checkpoint, for texts from
//! the arguments, a file or standard input, batched; plain lines or JSON.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ulmfit_tensor::Rng;
use ulmfit_text::Tokenizer;
use ulmfit_trainer::checkpoint;
use ulmfit_trainer::classifier::DocBatch;
use ulmfit_trainer::config::Config;
use ulmfit_trainer::models::{load_classifier, SavedClassifier};
use ulmfit_trainer::train::classifier_probs;

/// `ulmfit predict` options.
#[derive(Args)]
pub struct PredictArgs {
    /// A classifier checkpoint directory (e.g. runs/trec-cpu/classifier).
    #[arg(long)]
    model: PathBuf,
    /// Texts to classify; none: one text per line of --file, or of standard input.
    texts: Vec<String>,
    /// Read one text per line from this file.
    #[arg(long, conflicts_with = "texts")]
    file: Option<PathBuf>,
    /// Print one JSON object per text.
    #[arg(long)]
    json: bool,
}

/// Classifies texts with a saved classifier (built with the config saved beside it; a
/// backward classifier gets each text's tokens reversed).
pub fn predict(a: PredictArgs) -> Result<()> {
    let ck = checkpoint::load(&a.model)?;
    let cfg = Config::parse(&ck.config, &a.model.join("config.toml"))?;
    let SavedClassifier { mut model, vocab, classes, backwards } = load_classifier(&cfg, &a.model)?;
    let texts: Vec<String> = if !a.texts.is_empty() {
        a.texts
    } else {
        let mut s = String::new();
        match &a.file {
            Some(f) => s = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            None => _ = std::io::stdin().read_to_string(&mut s).context("reading standard input")?,
        }
        let from = a.file.as_ref().map_or("standard input".to_string(), |f| f.display().to_string());
        let texts: Vec<String> = s.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
        anyhow::ensure!(
            !texts.is_empty(),
            "no texts to classify in {from} (give TEXT..., --file F, or lines on stdin)"
        );
        texts
    };
    let tok = Tokenizer::new();
    let mut rng = Rng::new(0);
    for chunk in texts.chunks(64) {
        // The classifier wants each batch longest first; remember where each text went.
        let encode = |t: &String| {
            let mut ids = vocab.encode(&tok.tokenize(t));
            if backwards {
                ids.reverse(); // a backward model reads the tokens last to first
            }
            ids
        };
        let mut order: Vec<(usize, Vec<u32>)> = chunk.iter().map(encode).enumerate().collect();
        order.sort_by_key(|(_, ids)| std::cmp::Reverse(ids.len()));
        let batch = DocBatch { docs: order.iter().map(|(_, ids)| ids.clone()).collect() };
        let probs = classifier_probs(&mut model, &batch, &mut rng)?;
        let mut back = vec![Vec::new(); chunk.len()];
        for ((i, _), p) in order.iter().zip(probs) {
            back[*i] = p;
        }
        for (text, p) in chunk.iter().zip(back) {
            let best = p.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map_or(0, |(i, _)| i);
            if a.json {
                let probs: serde_json::Map<String, serde_json::Value> =
                    classes.iter().zip(&p).map(|(c, v)| (c.clone(), serde_json::json!(v))).collect();
                println!("{}", serde_json::json!({"text": text, "label": classes[best], "probs": probs}));
            } else {
                println!("{}\t{:.3}\t{}", classes[best], p[best], text);
            }
        }
    }
    Ok(())
}
