//! `ulmfit run CONFIG`: the whole ULMFiT pipeline from one TOML file; `ulmfit predict`:
//! class probabilities from a trained classifier checkpoint.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use ulmfit_tensor::Rng;
use ulmfit_text::{Tokenizer, Vocab};
use ulmfit_trainer::awd_lstm::AwdLstm;
use ulmfit_trainer::checkpoint;
use ulmfit_trainer::classifier::{Classifier, DocBatch};
use ulmfit_trainer::config::{Config, DeviceKind};
use ulmfit_trainer::pipeline;
use ulmfit_trainer::train::classifier_probs;

/// `ulmfit run` options.
#[derive(Args)]
pub struct RunArgs {
    /// The pipeline's TOML config (see configs/).
    config: PathBuf,
    /// Also train the classifier from scratch with the same recipe, for comparison.
    #[arg(long)]
    compare_scratch: bool,
    /// Override `run.seed`.
    #[arg(long)]
    seed: Option<u64>,
    /// Override `run.out_dir`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override `run.device` (cpu or cuda).
    #[arg(long)]
    device: Option<String>,
}

/// Runs the pipeline and prints the headline figures.
pub fn run(a: RunArgs) -> Result<()> {
    let mut cfg = Config::load(&a.config)?;
    if let Some(s) = a.seed {
        cfg.run.seed = s;
    }
    if let Some(o) = a.out {
        cfg.run.out_dir = o;
    }
    match a.device.as_deref() {
        None => {}
        Some("cpu") => cfg.run.device = DeviceKind::Cpu,
        Some("cuda") => cfg.run.device = DeviceKind::Cuda,
        Some(other) => bail!("--device {other:?}: expected cpu or cuda"),
    }
    if cfg.run.device == DeviceKind::Cuda {
        bail!("training runs on the CPU only so far (the CUDA backend covers the LSTM layer and `bench`); use --device cpu");
    }
    fetch_missing(&mut cfg)?;
    let r = pipeline::run(&cfg, a.compare_scratch)?;
    println!("{}", serde_json::to_string_pretty(&r)?);
    println!("results written to {}", cfg.run.out_dir.join("results.json").display());
    Ok(())
}

/// Downloads the public datasets the config needs but the data directory lacks (from
/// their canonical addresses, checked by SHA-256).
fn fetch_missing(cfg: &mut Config) -> Result<()> {
    use ulmfit_trainer::config::TaskKind;
    let d = &cfg.data;
    let mut wanted = Vec::new();
    if !d.resolve(&d.lm_train).exists() && d.lm_train.starts_with("wikitext-2") {
        wanted.push("wikitext-2");
    }
    match d.task {
        TaskKind::Trec if !d.resolve(&d.task_path).join("train_5500.label").exists() => wanted.push("trec"),
        TaskKind::Imdb if !d.resolve(&d.task_path).exists() => wanted.push("imdb"),
        _ => {}
    }
    let root = d.root_dir();
    for name in wanted {
        eprintln!("{name} is not under {}: downloading it there", root.display());
        let mut last = String::new();
        ulmfit_text::download::download(&root, None, Some(name), &mut |file, done, total| {
            let line =
                format!("{file}: {} MB{}", done >> 20, total.map_or(String::new(), |t| format!(" of {} MB", t >> 20)));
            if line != last {
                eprint!("\r{line}");
                last = line;
            }
        })
        .with_context(|| {
            format!("downloading {name} into {} (or set ULMFIT_DATA to a folder that has it)", root.display())
        })?;
        eprintln!();
        if name == "imdb" {
            cfg.data.task_path = "imdb/aclImdb_v1.tar.gz".into();
        }
    }
    Ok(())
}

/// `ulmfit predict` options.
#[derive(Args)]
pub struct PredictArgs {
    /// A classifier checkpoint directory (e.g. runs/trec-cpu/classifier).
    #[arg(long)]
    model: PathBuf,
    /// Texts to classify; none: one text per line of --file, or of standard input.
    texts: Vec<String>,
    /// Read one text per line from this file.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Print one JSON object per text.
    #[arg(long)]
    json: bool,
}

/// Classifies texts with a saved classifier.
pub fn predict(a: PredictArgs) -> Result<()> {
    let ck = checkpoint::load(&a.model)?;
    let cfg = Config::parse(&ck.config, &a.model.join("config.toml"))?;
    let classes_path = a.model.join("classes.txt");
    let classes: Vec<String> = std::fs::read_to_string(&classes_path)
        .with_context(|| format!("reading {}", classes_path.display()))?
        .lines()
        .map(str::to_string)
        .collect();
    let vocab = Vocab::from_itos(ck.vocab.clone());
    let enc_cfg = pipeline::model_config(&cfg, vocab.len(), cfg.model.clas_dropouts, cfg.model.clas_drop_mult);
    let mut rng = Rng::new(0);
    let mut model = Classifier::new(AwdLstm::new(enc_cfg, &mut rng), classes.len(), &mut rng);
    model.bptt = cfg.classifier.bptt;
    model.max_len = cfg.classifier.max_len;
    let named = model.named_tensors();
    let refs: Vec<(&str, &ulmfit_tensor::Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    ck.assign_to(&refs)?;

    let texts: Vec<String> = if !a.texts.is_empty() {
        a.texts
    } else {
        let mut s = String::new();
        match &a.file {
            Some(f) => s = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            None => _ = std::io::stdin().read_to_string(&mut s).context("reading standard input")?,
        }
        s.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
    };
    let tok = Tokenizer::new();
    for chunk in texts.chunks(64) {
        // The classifier wants each batch longest first; remember where each text went.
        let mut order: Vec<(usize, Vec<u32>)> =
            chunk.iter().map(|t| vocab.encode(&tok.tokenize(t))).enumerate().collect();
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
