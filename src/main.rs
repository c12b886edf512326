//! `ulmfit`: the command line of ulmfit-rs.
//!
//! Each subcommand lives in its own module under `src/cli/`; this file only parses the
//! command line and dispatches. Errors print as one clear message and exit with status 1.

mod cli;

use clap::{Parser, Subcommand};

/// ULMFiT rebuilt from scratch in Rust.
#[derive(Parser)]
#[command(name = "ulmfit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time the engine: `bench lstm`, `bench lm-step`.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// Show what the tokenizer does to a text file.
    Tokenize(cli::text::TokenizeArgs),
    /// Build a vocabulary from a text file and save it.
    Vocab(cli::text::VocabArgs),
    /// Download the public datasets, verified by checksum.
    Download(cli::text::DownloadArgs),
    /// The whole ULMFiT pipeline from one TOML config (see configs/); --resume continues it.
    Run(cli::train::RunArgs),
    /// Stage 1 alone: pretrain the language model (writes OUT/pretrain).
    Pretrain(cli::train::PretrainArgs),
    /// Stage 2 alone: fine-tune the LM on the task's text (OUT/pretrain or --from -> OUT/finetune).
    FinetuneLm(cli::train::StageArgs),
    /// Stage 3 alone: train the classifier (OUT/finetune or --from -> OUT/classifier).
    TrainClassifier(cli::train::StageArgs),
    /// Test error of a classifier checkpoint on the config's task.
    Eval(cli::train::EvalArgs),
    /// fastai's LR range test on the config's pretraining stage.
    LrFind(cli::lr_find::LrFindArgs),
    /// Classify texts with a trained classifier checkpoint.
    Predict(cli::predict::PredictArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(cmd) => cli::bench::run(cmd),
        Command::Tokenize(args) => cli::text::tokenize(args),
        Command::Vocab(args) => cli::text::vocab(args),
        Command::Download(args) => cli::text::download(args),
        Command::Run(args) => cli::train::run(args),
        Command::Pretrain(args) => cli::train::pretrain(args),
        Command::FinetuneLm(args) => cli::train::finetune_lm(args),
        Command::TrainClassifier(args) => cli::train::train_classifier(args),
        Command::Eval(args) => cli::train::eval(args),
        Command::LrFind(args) => cli::lr_find::run(args),
        Command::Predict(args) => cli::predict::predict(args),
    };
    if let Err(e) = result {
        eprintln!("error: {}", message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes joined with ": ", leaving out a cause whose text the message
/// already holds (several error types print their source themselves).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
