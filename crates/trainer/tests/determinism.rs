//! The same seed gives the same run: a tiny pipeline (PTB validation text -> TREC-6)
//! trained twice with one seed must report bit-identical perplexities and test errors,
//! and a different seed must change them.

mod common;

use common::data_dir;
use std::path::PathBuf;

use ulmfit_trainer::config::Config;
use ulmfit_trainer::pipeline::{self, RunResults};

fn run(seed: u64, tag: &str) -> RunResults {
    let out = std::env::temp_dir().join(format!("ulmfit-determinism-{}-{tag}", std::process::id()));
    let config = format!(
        r#"
[data]
root = "{root}"
lm_train = "ptb/ptb.valid.txt"
lm_valid = "ptb/ptb.test.txt"
task = "trec"
task_path = "trec"

[model]
emb_sz = 16
n_hid = 32
n_layers = 2
max_vocab = 4000

[pretrain]
epochs = 1
bs = 16
bptt = 20

[finetune_lm]
frozen_epochs = 0
epochs = 1
bs = 16
bptt = 20

[classifier]
bs = 64

[[classifier.stages]]
freeze_to = 0
epochs = 1
lr = 1e-2

[run]
seed = {seed}
out_dir = "{out}"
"#,
        root = data_dir().display(),
        out = out.display()
    );
    let cfg = Config::parse(&config, &PathBuf::from("determinism.toml")).unwrap();
    let r = pipeline::run(&cfg, false).unwrap();
    std::fs::remove_dir_all(&out).ok();
    r
}

#[test]
fn same_seed_same_metrics() {
    let data = data_dir();
    if !data.join("ptb").exists() || !data.join("trec").exists() {
        println!("skip: no ptb or trec under {} (set ULMFIT_DATA)", data.display());
        return;
    }
    let key = |r: &RunResults| (r.pretrain_valid_perplexity, r.finetune_valid_perplexity, r.test_error);
    let (a, b, c) = (run(5, "a"), run(5, "b"), run(6, "c"));
    println!("seed 5: {:?}; again: {:?}; seed 6: {:?}", key(&a), key(&b), key(&c));
    assert_eq!(key(&a), key(&b), "the same seed gave different metrics");
    assert_ne!(key(&a), key(&c), "a different seed gave identical metrics: the seed is not used");
}
