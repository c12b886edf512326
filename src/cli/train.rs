//! The training commands: `ulmfit run CONFIG` (the whole pipeline from one TOML file) and the
//! stages one at a time, `pretrain`, `finetune-lm`, `train-classifier`, `eval`. Each writes
//! the same checkpoint directories under `run.out_dir` as `run`. Ctrl-C or SIGTERM stops
//! training at the next step boundary with the state saved (a second one exits at once);
//! `--resume` continues from there.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use clap::Args;
use ulmfit_trainer::config::{Config, DeviceKind};
use ulmfit_trainer::control::{Interrupted, RunControl};
use ulmfit_trainer::pipeline::{self, RunOptions, RunResults};

use super::Device;

/// Options every training command takes.
#[derive(Args)]
pub struct CommonArgs {
    /// The pipeline's TOML config (see configs/).
    config: PathBuf,
    /// Override `run.seed`.
    #[arg(long)]
    seed: Option<u64>,
    /// Override `run.out_dir`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override `run.device`.
    #[arg(long, value_enum)]
    device: Option<Device>,
    /// Let cuBLAS use TF32 tensor cores on CUDA (sets `run.tf32`).
    #[arg(long)]
    tf32: bool,
}

/// The datasets a command reads.
#[derive(Clone, Copy, PartialEq)]
enum Reads {
    /// The pretraining corpus and the task (`run`).
    Both,
    /// The pretraining corpus only (`pretrain`).
    Corpus,
    /// The task only (`finetune-lm`, `train-classifier`, `eval`).
    Task,
}

impl CommonArgs {
    /// The config with the command line's overrides, the datasets the command `reads`
    /// fetched if missing.
    fn config(&self, reads: Reads) -> Result<Config> {
        let mut cfg = Config::load(&self.config)?;
        if let Some(s) = self.seed {
            cfg.run.seed = s;
        }
        if let Some(o) = &self.out {
            cfg.run.out_dir = o.clone();
        }
        match self.device {
            None => {}
            Some(Device::Cpu) => cfg.run.device = DeviceKind::Cpu,
            Some(Device::Cuda) => cfg.run.device = DeviceKind::Cuda,
        }
        cfg.run.tf32 |= self.tf32;
        fetch_missing(&mut cfg, reads)?;
        Ok(cfg)
    }
}

/// `ulmfit run` options.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Also train the classifier from scratch with the same recipe, for comparison.
    #[arg(long)]
    compare_scratch: bool,
    /// Continue the interrupted run in the out_dir from its saved training state.
    #[arg(long)]
    resume: bool,
}

/// `ulmfit pretrain` options.
#[derive(Args)]
pub struct PretrainArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Continue the interrupted pretraining in the out_dir.
    #[arg(long)]
    resume: bool,
}

/// `ulmfit finetune-lm` and `ulmfit train-classifier` options.
#[derive(Args)]
pub struct StageArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The previous stage's checkpoint directory (default: OUT/pretrain for finetune-lm,
    /// OUT/finetune for train-classifier); any directory with model.safetensors (fastai-style
    /// names), vocab.txt and config.toml, e.g. from scripts/export_fastai.py.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Continue the interrupted stage in the out_dir.
    #[arg(long)]
    resume: bool,
}

/// `ulmfit eval` options.
#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The classifier checkpoint directory (default: OUT/classifier); given several times
    /// (e.g. OUT/classifier and OUT/classifier-bwd), their probabilities are averaged.
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// A run control whose interrupt flag Ctrl-C, SIGTERM or SIGHUP sets (a scheduler or `timeout`
/// stopping the run saves its state too); a second interrupt exits at once.
fn control() -> Result<RunControl> {
    let ctl = RunControl::new();
    let flag = ctl.interrupt.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting without saving");
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupted (Ctrl-C or SIGTERM): stopping at the next step and saving the training state \
             (interrupt again to exit now)"
        );
    })
    .context("installing the Ctrl-C / SIGTERM handler")?;
    Ok(ctl)
}

/// Prints a command's figures; a stopped run prints how to resume and exits with 130.
fn report(r: Result<RunResults>, out: &std::path::Path) -> Result<()> {
    match r {
        Ok(r) => {
            println!("{}", serde_json::to_string_pretty(&r)?);
            println!("checkpoints and metrics in {}", out.display());
            Ok(())
        }
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("{e}");
            std::process::exit(130)
        }
        Err(e) => Err(e),
    }
}

/// `ulmfit run`: the whole pipeline.
pub fn run(a: RunArgs) -> Result<()> {
    let cfg = a.common.config(Reads::Both)?;
    let opts = RunOptions { compare_scratch: a.compare_scratch, resume: a.resume };
    report(pipeline::run_with(&cfg, &opts, &control()?), &cfg.run.out_dir)
}

/// `ulmfit pretrain`: the LM on the general corpus, to OUT/pretrain.
pub fn pretrain(a: PretrainArgs) -> Result<()> {
    let cfg = a.common.config(Reads::Corpus)?;
    let opts = RunOptions { resume: a.resume, ..RunOptions::default() };
    report(pipeline::pretrain(&cfg, &opts, &control()?), &cfg.run.out_dir)
}

/// `ulmfit finetune-lm`: the LM fine-tuned on the task's text, to OUT/finetune.
pub fn finetune_lm(a: StageArgs) -> Result<()> {
    let cfg = a.common.config(Reads::Task)?;
    let opts = RunOptions { resume: a.resume, ..RunOptions::default() };
    report(pipeline::finetune_lm(&cfg, a.from.as_deref(), &opts, &control()?), &cfg.run.out_dir)
}

/// `ulmfit train-classifier`: the classifier with gradual unfreezing, to OUT/classifier.
pub fn train_classifier(a: StageArgs) -> Result<()> {
    let cfg = a.common.config(Reads::Task)?;
    let opts = RunOptions { resume: a.resume, ..RunOptions::default() };
    report(pipeline::train_classifier(&cfg, a.from.as_deref(), &opts, &control()?), &cfg.run.out_dir)
}

/// `ulmfit eval`: a classifier's (or an average of classifiers') test error on the config's
/// task.
pub fn eval(a: EvalArgs) -> Result<()> {
    let cfg = a.common.config(Reads::Task)?;
    let mut dirs = a.model;
    if dirs.is_empty() {
        dirs.push(cfg.run.out_dir.join(pipeline::CLASSIFIER_DIR));
    }
    let e = pipeline::evaluate(&cfg, &dirs)?;
    if a.json {
        println!("{}", serde_json::to_string(&e)?);
    } else {
        let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        println!(
            "{}: test error {:.2}% (accuracy {:.2}%) on {} documents",
            names.join(" + "),
            100.0 * e.test_error,
            100.0 * e.accuracy,
            e.documents
        );
    }
    Ok(())
}

/// Downloads the public datasets the command `reads` but the data directory lacks (from
/// the addresses in `ulmfit_text::download`, checked by SHA-256).
fn fetch_missing(cfg: &mut Config, reads: Reads) -> Result<()> {
    use ulmfit_trainer::config::TaskKind;
    let d = &cfg.data;
    let mut wanted = Vec::new();
    if reads != Reads::Task && !d.resolve(&d.lm_train).exists() && d.lm_train.starts_with("wikitext-2") {
        wanted.push("wikitext-2");
    }
    match d.task {
        _ if reads == Reads::Corpus => {}
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
