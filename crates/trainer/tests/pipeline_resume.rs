//! Resuming and the stage commands, on a tiny pipeline (an AWD-LSTM of 16-32 units
//! pretrained on TREC's 500 test questions, then TREC-6): one uninterrupted `run` is the
//! reference.
//! - A run stopped twice (mid-epoch in pretraining, saved at the batch with the carried LSTM
//!   state, and mid-epoch in a classifier stage, saved at the batch), then resumed,
//!   must end with bit-identical results, metrics rows (timings aside, no duplicates) and
//!   classifier weights.
//! - `pretrain` -> `finetune_lm` -> `train_classifier` -> `evaluate` must give `run`'s test error
//!   and weights.
//! - `--resume` without a state, with another config, another vocabulary or the wrong command
//!   is refused with a message that says which; a fresh run refuses to overwrite a state.
//! - With `run.backwards` (stopped in the backward classifier and resumed), the forward
//!   figures are the reference's, and the reported averaged test error is the one computed
//!   here from both classifiers' probabilities, the backward one reading reversed documents.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::data_dir;
use ulmfit_trainer::backend::Backend;
use ulmfit_trainer::checkpoint::{self, Checkpoint};
use ulmfit_trainer::config::Config;
use ulmfit_trainer::control::{Interrupted, RunControl};
use ulmfit_trainer::data::{load_task, numericalize};
use ulmfit_trainer::metrics::{read_jsonl, EpochMetrics};
use ulmfit_trainer::models::load_classifier;
use ulmfit_trainer::pipeline::{self, RunOptions};
use ulmfit_trainer::stages::{accuracy_of, predict_probs};

fn config(out: &Path, seed: u64) -> Config {
    config_text(out, seed, "")
}

fn config_text(out: &Path, seed: u64, extra_run: &str) -> Config {
    let text = format!(
        r#"
[data]
root = "{root}"
lm_train = "trec/TREC_10.label"
lm_valid = "trec/TREC_10.label"
task = "trec"
task_path = "trec"

[model]
emb_sz = 16
n_hid = 32
n_layers = 2
max_vocab = 600
min_freq = 2

[pretrain]
epochs = 2
bs = 16
bptt = 20

[finetune_lm]
frozen_epochs = 1
epochs = 1
bs = 64
bptt = 35

[classifier]
bs = 64

[[classifier.stages]]
freeze_to = -1
epochs = 1
lr = 2e-2

[[classifier.stages]]
freeze_to = 0
epochs = 2
lr = 1e-2

[run]
seed = {seed}
out_dir = "{out}"
{extra_run}
"#,
        root = data_dir().display(),
        out = out.display()
    );
    Config::parse(&text, &PathBuf::from("resume-test.toml")).unwrap()
}

fn have_data() -> bool {
    let ok = data_dir().join("trec/train_5500.label").exists();
    if !ok {
        println!("skip: no trec under {} (set ULMFIT_DATA)", data_dir().display());
    }
    ok
}

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ulmfit-resume-test-{}-{tag}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

/// The uninterrupted reference run's directory (run once, shared by the tests).
fn reference() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = temp("reference");
        pipeline::run(&config(&out, 7), false).unwrap();
        out
    })
}

fn resume(out: &Path, ctl: &RunControl) -> anyhow::Result<pipeline::RunResults> {
    pipeline::run_with(&config(out, 7), &RunOptions { resume: true, ..RunOptions::default() }, ctl)
}

fn results_without_timings(dir: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("seconds");
    v
}

fn rows_without_timings(dir: &Path) -> Vec<EpochMetrics> {
    let mut rows = read_jsonl(&dir.join("metrics.jsonl")).unwrap();
    rows.iter_mut().for_each(|m| (m.seconds, m.tokens_per_s) = (0.0, 0.0));
    rows
}

/// Batches per epoch of `stage`, from the reference run's metrics.
fn batches(stage: &str) -> u64 {
    let rows = rows_without_timings(reference());
    rows.iter().find(|m| m.stage == stage && m.epoch == 1).unwrap_or_else(|| panic!("no {stage} row")).step
}

fn assert_same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

fn stopped(r: anyhow::Result<pipeline::RunResults>) -> String {
    let e = r.expect_err("the run should have stopped");
    assert!(e.is::<Interrupted>(), "expected a stop, got: {e:#}");
    e.to_string()
}

#[test]
fn stopped_and_resumed_run_matches_uninterrupted_run() {
    if !have_data() {
        return;
    }
    let reference = reference();
    let (pre, ft, c1) = (batches("pretrain"), batches("finetune-lm"), batches("classifier-1"));
    let out = temp("resumed");
    // 1. Stop halfway through pretraining's second epoch: saved at that batch, carried LSTM
    // state included.
    let msg =
        stopped(pipeline::run_with(&config(&out, 7), &RunOptions::default(), &RunControl::stop_after(pre + pre / 2)));
    println!("first stop: {msg}");
    assert!(msg.contains("pretrain") && msg.contains("saved"), "{msg}");
    // 2. Resume (the rest of epoch 2), stop halfway through classifier-1's epoch: saved at the batch.
    let msg = stopped(resume(&out, &RunControl::stop_after(pre - pre / 2 + 2 * ft + c1 / 2)));
    println!("second stop: {msg}");
    assert!(msg.contains("classifier-1") && msg.contains("saved"), "{msg}");
    // 3. Resume to the end.
    resume(&out, &RunControl::new()).unwrap();
    assert_eq!(results_without_timings(&out), results_without_timings(reference), "results.json differs");
    let (got, want) = (rows_without_timings(&out), rows_without_timings(reference));
    assert_eq!(got.len(), want.len(), "metrics rows: {} after resuming, {} uninterrupted", got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g == w || (g.train_loss.is_nan() && w.train_loss.is_nan()), "metrics row {i}: {g:?} vs {w:?}");
    }
    for f in ["pretrain/model.safetensors", "finetune/model.safetensors", "classifier/model.safetensors"] {
        assert_same_file(&out.join(f), &reference.join(f));
    }
    assert!(!out.join("state").exists(), "the finished run left its training state");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), want.len() + 1, "metrics.csv rows:\n{csv}");
    // Nothing left to resume.
    let e = resume(&out, &RunControl::new()).unwrap_err().to_string();
    assert!(e.contains("no training state") && e.contains("finished"), "{e}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn stage_commands_match_run() {
    if !have_data() {
        return;
    }
    let reference = reference();
    let out = temp("stages");
    let cfg = config(&out, 7);
    let (opts, ctl) = (RunOptions::default(), RunControl::new());
    pipeline::pretrain(&cfg, &opts, &ctl).unwrap();
    pipeline::finetune_lm(&cfg, None, &opts, &ctl).unwrap();
    // --from: the fine-tuned LM read from a copy elsewhere, as a fastai export would be.
    let copy = temp("stages-from");
    let ck = checkpoint::load(&out.join("finetune")).unwrap();
    save_copy(&ck, &copy, &ck.vocab);
    let r = pipeline::train_classifier(&cfg, Some(&copy), &opts, &ctl).unwrap();
    let eval = pipeline::evaluate(&cfg, &[out.join("classifier")]).unwrap();
    let want: serde_json::Value = results_without_timings(reference);
    println!("stages: test error {:?}, eval {eval:?}; run {want}", r.test_error);
    assert_eq!(r.test_error, want["test_error"].as_f64(), "train-classifier's test error differs from run's");
    assert_eq!(Some(eval.test_error), r.test_error, "eval's test error differs from train-classifier's");
    for f in ["pretrain/model.safetensors", "finetune/model.safetensors", "classifier/model.safetensors"] {
        assert_same_file(&out.join(f), &reference.join(f));
    }
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&copy).ok();
}

fn save_copy(ck: &Checkpoint, dir: &Path, vocab: &[String]) {
    let tensors: Vec<_> = ck
        .tensors
        .iter()
        .map(|t| (t.name.clone(), ulmfit_tensor::Tensor::from_vec(t.data.clone(), &t.shape).unwrap()))
        .collect();
    let refs: Vec<_> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    checkpoint::save(dir, &refs, vocab, &ck.config, ck.state.as_ref()).unwrap();
}

#[test]
fn bad_resumes_are_refused_with_the_reason() {
    if !have_data() {
        return;
    }
    let out = temp("refused");
    let e = resume(&out, &RunControl::new()).unwrap_err().to_string();
    assert!(e.contains("no training state") && e.contains("never finished an epoch"), "{e}");
    // Stop at the end of pretraining's first epoch: a state is saved.
    let pre = batches("pretrain");
    stopped(pipeline::run_with(&config(&out, 7), &RunOptions::default(), &RunControl::stop_after(pre)));
    let e = pipeline::run(&config(&out, 7), false).unwrap_err().to_string();
    assert!(e.contains("interrupted run") && e.contains("--resume"), "{e}");
    let opts = RunOptions { resume: true, ..RunOptions::default() };
    let e = format!("{:#}", pipeline::run_with(&config(&out, 8), &opts, &RunControl::new()).unwrap_err());
    assert!(e.contains("another config") && e.contains("run.seed: saved 7, now 8"), "{e}");
    let e = format!("{:#}", pipeline::finetune_lm(&config(&out, 7), None, &opts, &RunControl::new()).unwrap_err());
    assert!(e.contains("stage pretrain") && e.contains("does not run"), "{e}");
    // The same state with two tokens swapped in its vocabulary.
    let state = out.join("state");
    let ck = checkpoint::load(&state).unwrap();
    let mut vocab = ck.vocab.clone();
    vocab.swap(10, 11);
    save_copy(&ck, &state, &vocab);
    let e = format!("{:#}", resume(&out, &RunControl::new()).unwrap_err());
    assert!(e.contains("another vocabulary") && e.contains("first difference at index 10"), "{e}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn backward_models_and_their_average() {
    if !have_data() {
        return;
    }
    let want = results_without_timings(reference());
    let out = temp("backwards");
    let cfg = config_text(&out, 7, "backwards = true");
    let (pre, ft, c1, c2) =
        (batches("pretrain"), batches("finetune-lm"), batches("classifier-1"), batches("classifier-2"));
    let one_direction = 2 * pre + 2 * ft + c1 + 2 * c2;
    let stop = RunControl::stop_after(one_direction + 2 * pre + 2 * ft + c1 / 2);
    let msg = stopped(pipeline::run_with(&cfg, &RunOptions::default(), &stop));
    assert!(msg.contains("bwd-classifier-1") && msg.contains("saved"), "{msg}");
    let r =
        pipeline::run_with(&cfg, &RunOptions { resume: true, ..RunOptions::default() }, &RunControl::new()).unwrap();
    println!("backwards: {r:?}");
    assert_eq!(r.test_error, want["test_error"].as_f64(), "the forward classifier differs from the reference");
    assert_eq!(r.pretrain_valid_perplexity, want["pretrain_valid_perplexity"].as_f64());
    assert_ne!(r.bwd_pretrain_valid_perplexity, r.pretrain_valid_perplexity, "the backward LM saw the same text");
    let bwd_dir = out.join("classifier-bwd");
    let bwd = pipeline::evaluate(&cfg, std::slice::from_ref(&bwd_dir)).unwrap();
    assert_eq!(Some(bwd.test_error), r.bwd_test_error, "eval of the backward classifier differs from the run's");
    // The average, computed here: the backward classifier reads each test document reversed.
    let task = load_task(&cfg.data, 7).unwrap();
    let mut mean = vec![vec![0.0f32; task.classes.len()]; task.test.1.len()];
    for (dir, reverse) in [(out.join("classifier"), false), (bwd_dir, true)] {
        let mut c = load_classifier(&cfg, &dir).unwrap();
        assert_eq!(c.backwards, reverse, "{}: direction read from its config", dir.display());
        let docs = numericalize(&task.test.0, &c.vocab);
        let docs: Vec<Vec<u32>> = (0..docs.len())
            .map(|d| if reverse { docs.doc(d).iter().rev().copied().collect() } else { docs.doc(d).to_vec() })
            .collect();
        let corpus = ulmfit_text::Corpus::from_docs(&docs);
        for (m, p) in mean.iter_mut().zip(predict_probs(&Backend::Cpu, &mut c.model, &corpus, 64).unwrap()) {
            m.iter_mut().zip(p).for_each(|(m, p)| *m += p / 2.0);
        }
    }
    let err = 1.0 - accuracy_of(&mean, &task.test.1) as f64;
    println!("averaged: {err} (forward {:?}, backward {:?})", r.test_error, r.bwd_test_error);
    assert_eq!(r.ensemble_test_error, Some(err), "the reported averaged test error is not the average's");
    std::fs::remove_dir_all(&out).ok();
}
