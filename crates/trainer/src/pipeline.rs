//! The whole ULMFiT method from one config, as phases that each write a checkpoint under
//! `run.out_dir`: pretrain the LM on a general corpus (`pretrain/`), fine-tune it on the
//! task's text, frozen then unfrozen with discriminative LRs (`finetune/`), train the
//! classifier with gradual unfreezing (`classifier/`); with `run.backwards` the same again on
//! reversed token order (`*-bwd/`) and the two classifiers' probabilities averaged; and
//! optionally the classifier from scratch (the paper's "without pretraining" row). `run`
//! chains the phases; the stage commands (`pretrain`, `finetune_lm`, `train_classifier`,
//! `evaluate`) run one each, reading the previous phase's checkpoint, so they end where `run`
//! does (`tests/pipeline_resume.rs`). Metrics go to `metrics.csv` / `metrics.jsonl` (drawn as
//! `loss.svg` and `lr.svg`), the headline figures to `results.json`; `control.rs` and
//! `resume.rs` stop and resume runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use ulmfit_tensor::Rng;
use ulmfit_text::{Corpus, Vocab};

use crate::awd_lstm::{AwdLstm, AwdLstmConfig, LanguageModel};
use crate::backend::Backend;
use crate::checkpoint;
use crate::config::{Config, Dropouts};
use crate::control::{RunControl, StageHooks};
use crate::data::{build_vocab, lm_documents, lm_texts, load_task, numericalize, TaskTexts};
use crate::models::{
    extend_vocab, load_classifier, load_encoder, load_lm, match_rows, new_classifier, save, save_classifier,
    SavedClassifier,
};
use crate::resume::Tracker;
use crate::schedule::discriminative_lrs;
use crate::stages::{accuracy, accuracy_of, adam, fit_classifier, fit_lm, predict_probs, Labelled, StagePlan};
use crate::train::StepConfig;

/// What a run measured (the stage commands fill their own figures).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunResults {
    /// Validation perplexity of the pretrained LM (its own corpus).
    pub pretrain_valid_perplexity: Option<f64>,
    /// Validation perplexity of the fine-tuned LM (held-out task text).
    pub finetune_valid_perplexity: Option<f64>,
    /// Test error of the ULMFiT classifier.
    pub test_error: Option<f64>,
    /// Test error of the same classifier trained from scratch, when compared.
    pub scratch_test_error: Option<f64>,
    /// `pretrain_valid_perplexity` of the backward model (`run.backwards`).
    pub bwd_pretrain_valid_perplexity: Option<f64>,
    /// `finetune_valid_perplexity` of the backward model.
    pub bwd_finetune_valid_perplexity: Option<f64>,
    /// Test error of the backward classifier.
    pub bwd_test_error: Option<f64>,
    /// Test error of the forward and backward classifiers' averaged probabilities.
    pub ensemble_test_error: Option<f64>,
    /// Wall-clock seconds per stage.
    pub seconds: Vec<(String, f64)>,
}

impl RunResults {
    /// The (pretraining perplexity, fine-tuning perplexity, test error) of one direction.
    fn direction(&mut self, backwards: bool) -> [&mut Option<f64>; 3] {
        if backwards {
            [&mut self.bwd_pretrain_valid_perplexity, &mut self.bwd_finetune_valid_perplexity, &mut self.bwd_test_error]
        } else {
            [&mut self.pretrain_valid_perplexity, &mut self.finetune_valid_perplexity, &mut self.test_error]
        }
    }
}

/// The AWD-LSTM the config describes, for `vocab` words, with dropouts `d * mult`.
pub fn model_config(cfg: &Config, vocab: usize, d: Dropouts, mult: f32) -> AwdLstmConfig {
    let m = &cfg.model;
    AwdLstmConfig { vocab, emb_sz: m.emb_sz, n_hid: m.n_hid, n_layers: m.n_layers, drop: d.scaled(mult) }
}

/// The pretraining stage's data and model before any step.
pub struct Pretraining {
    /// Vocabulary built from the pretraining corpus.
    pub vocab: Vocab,
    /// Pretraining corpus, training tokens.
    pub train: Corpus,
    /// Pretraining corpus, validation tokens.
    pub valid: Corpus,
    /// A fresh language model over `vocab` with the config's LM dropouts.
    pub lm: LanguageModel,
}

/// Reads the config's pretraining corpus, builds its vocabulary and a fresh language model
/// (initialised from `rng`), as the pipeline's pretraining stage and `lr_find` start.
pub fn pretraining(cfg: &Config, rng: &mut Rng) -> Result<Pretraining> {
    let train = lm_documents(&cfg.data.resolve(&cfg.data.lm_train))?;
    let valid = lm_documents(&cfg.data.resolve(&cfg.data.lm_valid))?;
    let (vocab, train) = build_vocab(&train, cfg.model.max_vocab, cfg.model.min_freq);
    let (train, valid) = (oriented(cfg, train), oriented(cfg, numericalize(&valid, &vocab)));
    eprintln!("pretraining corpus: {} tokens, vocabulary {}", train.ids.len(), vocab.len());
    let lm = LanguageModel::new(model_config(cfg, vocab.len(), cfg.model.lm_dropouts, cfg.model.lm_drop_mult), rng);
    Ok(Pretraining { vocab, train, valid, lm })
}

/// The step settings of a stage with gradient clip `clip` (0: none).
pub(crate) fn step_config(cfg: &Config, clip: f32) -> StepConfig {
    StepConfig { clip: (clip > 0.0).then_some(clip), alpha: cfg.optim.ar_alpha, beta: cfg.optim.tar_beta }
}

/// `corpus` with every document's tokens reversed when the model reads backwards.
fn oriented(cfg: &Config, corpus: Corpus) -> Corpus {
    if !cfg.model.backwards {
        return corpus;
    }
    let docs: Vec<Vec<u32>> = (0..corpus.len()).map(|d| corpus.doc(d).iter().rev().copied().collect()).collect();
    Corpus::from_docs(&docs)
}

/// `texts` as token ids over `vocab`, in the model's reading order.
fn ids<S: AsRef<str> + Sync>(cfg: &Config, texts: &[S], vocab: &Vocab) -> Corpus {
    oriented(cfg, numericalize(texts, vocab))
}

/// The task's splits as token ids, in the model's reading order.
struct TaskSplits {
    train: Corpus,
    valid: Corpus,
    test: Corpus,
}

impl TaskSplits {
    fn new(cfg: &Config, task: &TaskTexts, vocab: &Vocab) -> Self {
        TaskSplits {
            train: ids(cfg, &task.train.0, vocab),
            valid: ids(cfg, &task.valid.0, vocab),
            test: ids(cfg, &task.test.0, vocab),
        }
    }
}

/// Options of `run` and the stage commands.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Also train the classifier from scratch with the same recipe (`run` only).
    pub compare_scratch: bool,
    /// Continue the interrupted run in `run.out_dir` from its training state.
    pub resume: bool,
}

/// Name (stage and checkpoint directory) of pretraining.
pub const PRETRAIN: &str = "pretrain";
/// Checkpoint directory of the fine-tuned LM.
pub const FINETUNE_DIR: &str = "finetune";
/// Checkpoint directory (and stage prefix) of the classifier.
pub const CLASSIFIER_DIR: &str = "classifier";
const FINETUNE_FROZEN: &str = "finetune-lm-frozen";
const FINETUNE: &str = "finetune-lm";

/// Stage `name` of the config's direction: `name`, or `bwd-name` for a backward model.
fn stage(cfg: &Config, name: &str) -> String {
    if cfg.model.backwards {
        format!("bwd-{name}")
    } else {
        name.to_string()
    }
}

/// The checkpoint directory of phase `name` (`pretrain`, `finetune`, `classifier`) of the
/// config's direction: `OUT/name`, or `OUT/name-bwd` for a backward model.
pub fn phase_dir(cfg: &Config, name: &str) -> PathBuf {
    let suffix = if cfg.model.backwards { "-bwd" } else { "" };
    cfg.run.out_dir.join(format!("{name}{suffix}"))
}

/// The stage names of a classifier phase called `name` (`classifier-1`, ...).
fn classifier_stages(cfg: &Config, name: &str) -> Vec<String> {
    (1..=cfg.classifier.freeze_stages().len()).map(|k| format!("{name}-{k}")).collect()
}

/// The stage names of the LM fine-tuning phase.
fn finetune_stages(cfg: &Config) -> Vec<String> {
    vec![stage(cfg, FINETUNE_FROZEN), stage(cfg, FINETUNE)]
}

/// Every stage of one direction's pretraining, fine-tuning and classifier, in order.
fn direction_stages(cfg: &Config) -> Vec<String> {
    let mut out = vec![stage(cfg, PRETRAIN)];
    out.extend(finetune_stages(cfg));
    out.extend(classifier_stages(cfg, &stage(cfg, CLASSIFIER_DIR)));
    out
}

/// Pretrains the LM on the general corpus; saves it to `OUT/pretrain`.
fn pretrain_phase(cfg: &Config, backend: &Backend, run: &mut Tracker) -> Result<(LanguageModel, Vocab)> {
    let t0 = Instant::now();
    let seed = cfg.run.seed;
    let Pretraining { vocab, train, valid, mut lm } = pretraining(cfg, &mut Rng::new(seed))?;
    run.vocab = vocab.itos().to_vec();
    let mut opt = adam(lm.param_groups(), &lm.no_decay(), cfg.optim.sqr_mom, cfg.optim.eps);
    let p = &cfg.pretrain;
    let plan = StagePlan {
        name: stage(cfg, PRETRAIN),
        epochs: p.epochs,
        peaks: vec![p.lr; opt.groups.len()],
        trainable_from_top: usize::MAX,
        schedule: cfg.optim.schedule(p.schedule),
        wd: p.wd,
        step: step_config(cfg, p.clip),
    };
    let (loss, _) = fit_lm(backend, &mut lm, &mut opt, &plan, &train, &valid, p.bs, p.bptt, seed, run)?;
    *run.results.direction(cfg.model.backwards)[0] = Some((loss as f64).exp());
    save(&phase_dir(cfg, PRETRAIN), &lm.named_params(), &vocab, cfg)?;
    run.results.seconds.push((stage(cfg, PRETRAIN), t0.elapsed().as_secs_f64()));
    Ok((lm, vocab))
}

/// Fine-tunes the LM on the task's text, vocabulary extended with the task's words: frozen
/// (top group only), then unfrozen with discriminative LRs; saves it to `OUT/finetune`.
fn finetune_phase(
    cfg: &Config,
    backend: &Backend,
    run: &mut Tracker,
    mut lm: LanguageModel,
    base_vocab: &Vocab,
    task: &TaskTexts,
) -> Result<(LanguageModel, Vocab)> {
    let t0 = Instant::now();
    let seed = cfg.run.seed;
    let f = &cfg.finetune_lm;
    let (train_texts, valid_texts) = lm_texts(task, f.text, cfg.data.valid_pct, seed);
    let vocab = extend_vocab(base_vocab, &train_texts, cfg);
    lm.encoder.embedding = match_rows(&lm.encoder.embedding, base_vocab, &vocab)?;
    lm.decoder_bias = match_rows(&lm.decoder_bias, base_vocab, &vocab)?;
    lm.encoder.cfg.vocab = vocab.len();
    run.vocab = vocab.itos().to_vec();
    let (train, valid) = (ids(cfg, &train_texts, &vocab), ids(cfg, &valid_texts, &vocab));
    let mut opt = adam(lm.param_groups(), &lm.no_decay(), cfg.optim.sqr_mom, cfg.optim.eps);
    let n_groups = opt.groups.len();
    let frozen = StagePlan {
        name: stage(cfg, FINETUNE_FROZEN),
        epochs: f.frozen_epochs,
        peaks: vec![f.frozen_lr; n_groups],
        trainable_from_top: 1,
        schedule: cfg.optim.schedule(f.schedule),
        wd: f.wd,
        step: step_config(cfg, f.clip),
    };
    fit_lm(backend, &mut lm, &mut opt, &frozen, &train, &valid, f.bs, f.bptt, seed, run)?;
    let unfrozen = StagePlan {
        name: stage(cfg, FINETUNE),
        epochs: f.epochs,
        peaks: discriminative_lrs(f.lr, n_groups, 2.6),
        trainable_from_top: usize::MAX,
        ..frozen
    };
    let (loss, _) = fit_lm(backend, &mut lm, &mut opt, &unfrozen, &train, &valid, f.bs, f.bptt, seed, run)?;
    *run.results.direction(cfg.model.backwards)[1] = Some((loss as f64).exp());
    save(&phase_dir(cfg, FINETUNE_DIR), &lm.named_params(), &vocab, cfg)?;
    run.results.seconds.push((stage(cfg, FINETUNE), t0.elapsed().as_secs_f64()));
    Ok((lm, vocab))
}

/// Trains a classifier over `encoder` with the config's unfreezing stages (named
/// `{name}-k`); returns the test error and saves the model to `save_to` when given.
#[allow(clippy::too_many_arguments)] // config, model, data and bookkeeping of one phase
fn classifier_phase(
    cfg: &Config,
    backend: &Backend,
    run: &mut Tracker,
    mut encoder: AwdLstm,
    vocab: &Vocab,
    task: &TaskTexts,
    name: &str,
    save_to: Option<&Path>,
) -> Result<f64> {
    let t0 = Instant::now();
    let c = &cfg.classifier;
    encoder.cfg = model_config(cfg, vocab.len(), cfg.model.clas_dropouts, cfg.model.clas_drop_mult);
    encoder.reset();
    run.vocab = vocab.itos().to_vec();
    let s = TaskSplits::new(cfg, task, vocab);
    let mut model = new_classifier(cfg, encoder, task.classes.len(), cfg.run.seed ^ 2);
    let mut opt = adam(model.param_groups(), &model.no_decay(), cfg.optim.sqr_mom, cfg.optim.eps);
    let n_groups = opt.groups.len();
    let train = Labelled { corpus: &s.train, labels: &task.train.1 };
    let valid = Labelled { corpus: &s.valid, labels: &task.valid.1 };
    for (k, unfreeze) in c.freeze_stages().iter().enumerate() {
        let plan = StagePlan {
            name: format!("{name}-{}", k + 1),
            epochs: unfreeze.epochs,
            peaks: unfreeze.lrs(n_groups),
            trainable_from_top: unfreeze.trainable_groups_from_top,
            schedule: cfg.optim.schedule(c.schedule),
            wd: c.wd,
            step: step_config(cfg, c.clip),
        };
        fit_classifier(backend, &mut model, &mut opt, &plan, &train, &valid, c.bs, cfg.run.seed, run)?;
    }
    let test = Labelled { corpus: &s.test, labels: &task.test.1 };
    let err = 1.0 - accuracy(backend, &mut model, &test, c.bs)? as f64;
    eprintln!("{name}: test error {:.2}% on {} documents", 100.0 * err, s.test.len());
    if let Some(dir) = save_to {
        save_classifier(dir, &model, vocab, &task.classes, cfg)?;
    }
    run.results.seconds.push((name.into(), t0.elapsed().as_secs_f64()));
    Ok(err)
}

/// The language model `phase` left: in memory, else read from `dir`.
fn lm_or_load(phase: Option<(LanguageModel, Vocab)>, cfg: &Config, dir: &Path) -> Result<(LanguageModel, Vocab)> {
    phase.map_or_else(|| load_lm(cfg, dir), Ok)
}

/// Runs the whole pipeline from the start, without stop requests (see `run_with`).
pub fn run(cfg: &Config, compare_scratch: bool) -> Result<RunResults> {
    run_with(cfg, &RunOptions { compare_scratch, resume: false }, &RunControl::new())
}

/// Runs the whole pipeline: pretraining, LM fine-tuning and the classifier; with
/// `run.backwards` the same again reading backwards, then the averaged classifiers; with
/// `compare_scratch` the classifier from scratch. Writes `results.json`. With `resume`,
/// continues the interrupted run in `run.out_dir`, reading finished phases from their
/// checkpoint directories. A stop request ends it with `control::Interrupted`.
pub fn run_with(cfg: &Config, opts: &RunOptions, ctl: &RunControl) -> Result<RunResults> {
    let bwd = cfg.run.backwards.then(|| cfg.backward());
    let mut stages = direction_stages(cfg);
    stages.extend(bwd.iter().flat_map(direction_stages));
    if opts.compare_scratch {
        stages.extend(classifier_stages(cfg, "scratch"));
    }
    let backend = Backend::open(&cfg.run)?;
    let mut run = Tracker::open(cfg, stages, opts.resume, ctl)?;
    let task = load_task(&cfg.data, cfg.run.seed)?;
    let vocab = one_direction(cfg, &backend, &mut run, &task)?;
    if let Some(b) = &bwd {
        one_direction(b, &backend, &mut run, &task)?;
    }
    if opts.compare_scratch {
        let vocab = match vocab {
            Some(v) => v,
            None => Vocab::from_itos(checkpoint::load(&phase_dir(cfg, FINETUNE_DIR))?.vocab),
        };
        let m = &cfg.model;
        let cfg_enc = model_config(cfg, vocab.len(), m.clas_dropouts, m.clas_drop_mult);
        let scratch = AwdLstm::new(cfg_enc, &mut Rng::new(cfg.run.seed ^ 1));
        run.results.scratch_test_error =
            Some(classifier_phase(cfg, &backend, &mut run, scratch, &vocab, &task, "scratch", None)?);
    }
    if let Some(b) = &bwd {
        let both = [phase_dir(cfg, CLASSIFIER_DIR), phase_dir(b, CLASSIFIER_DIR)];
        let e = evaluate_on(&backend, cfg, &both)?;
        eprintln!("forward + backward: test error {:.2}%", 100.0 * e.test_error);
        run.results.ensemble_test_error = Some(e.test_error);
    }
    let out = &cfg.run.out_dir;
    let results = run.finish()?;
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(out.join("results.json"), &json)
        .with_context(|| format!("writing {}", out.join("results.json").display()))?;
    Ok(results)
}

/// The three phases of the config's direction, skipping those a resumed run has passed
/// (their models are read from their directories, their figures come with the training
/// state); returns the classifier's vocabulary
/// when this call trained the classifier.
fn one_direction(cfg: &Config, backend: &Backend, run: &mut Tracker, task: &TaskTexts) -> Result<Option<Vocab>> {
    let mut lm = None;
    if !run.passed(&stage(cfg, PRETRAIN)) {
        lm = Some(pretrain_phase(cfg, backend, run)?);
    }
    if !run.passed(&stage(cfg, FINETUNE)) {
        let (pretrained, base) = lm_or_load(lm.take(), cfg, &phase_dir(cfg, PRETRAIN))?;
        lm = Some(finetune_phase(cfg, backend, run, pretrained, &base, task)?);
    }
    let name = stage(cfg, CLASSIFIER_DIR);
    if classifier_stages(cfg, &name).last().is_some_and(|last| run.passed(last)) {
        return Ok(None);
    }
    let (tuned, vocab) = lm_or_load(lm.take(), cfg, &phase_dir(cfg, FINETUNE_DIR))?;
    let dir = phase_dir(cfg, CLASSIFIER_DIR);
    let err = classifier_phase(cfg, backend, run, tuned.encoder, &vocab, task, &name, Some(&dir))?;
    *run.results.direction(cfg.model.backwards)[2] = Some(err);
    Ok(Some(vocab))
}

/// `ulmfit pretrain`: the pretraining phase alone; writes `OUT/pretrain`.
pub fn pretrain(cfg: &Config, opts: &RunOptions, ctl: &RunControl) -> Result<RunResults> {
    let backend = Backend::open(&cfg.run)?;
    let mut run = Tracker::open(cfg, vec![stage(cfg, PRETRAIN)], opts.resume, ctl)?;
    pretrain_phase(cfg, &backend, &mut run)?;
    run.finish()
}

/// `ulmfit finetune-lm`: fine-tunes the LM in `from` (default `OUT/pretrain`) on the
/// task's text; writes `OUT/finetune`.
pub fn finetune_lm(cfg: &Config, from: Option<&Path>, opts: &RunOptions, ctl: &RunControl) -> Result<RunResults> {
    let backend = Backend::open(&cfg.run)?;
    let task = load_task(&cfg.data, cfg.run.seed)?;
    let mut run = Tracker::open(cfg, finetune_stages(cfg), opts.resume, ctl)?;
    let from = from.map_or_else(|| phase_dir(cfg, PRETRAIN), Path::to_path_buf);
    let (lm, base) = load_lm(cfg, &from)?;
    finetune_phase(cfg, &backend, &mut run, lm, &base, &task)?;
    run.finish()
}

/// `ulmfit train-classifier`: trains the classifier on the encoder in `from` (default
/// `OUT/finetune`); writes `OUT/classifier` and reports the test error.
pub fn train_classifier(cfg: &Config, from: Option<&Path>, opts: &RunOptions, ctl: &RunControl) -> Result<RunResults> {
    let backend = Backend::open(&cfg.run)?;
    let task = load_task(&cfg.data, cfg.run.seed)?;
    let name = stage(cfg, CLASSIFIER_DIR);
    let mut run = Tracker::open(cfg, classifier_stages(cfg, &name), opts.resume, ctl)?;
    let from = from.map_or_else(|| phase_dir(cfg, FINETUNE_DIR), Path::to_path_buf);
    let (encoder, vocab) = load_encoder(cfg, &from)?;
    let dir = phase_dir(cfg, CLASSIFIER_DIR);
    let err = classifier_phase(cfg, &backend, &mut run, encoder, &vocab, &task, &name, Some(&dir))?;
    *run.results.direction(cfg.model.backwards)[2] = Some(err);
    run.finish()
}

/// Figures of a classifier (or of several, probabilities averaged) on the test split.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// 1 - accuracy.
    pub test_error: f64,
    /// Fraction of test documents classified right.
    pub accuracy: f64,
    /// Test documents.
    pub documents: usize,
}

/// `ulmfit eval`: the test error on the config's task of the classifier in `dirs[0]`, or of
/// the average of the class probabilities of all of `dirs` (e.g. forward and backward).
/// Each classifier reads the test documents in its own direction, on `run.device`.
pub fn evaluate(cfg: &Config, dirs: &[PathBuf]) -> Result<Evaluation> {
    evaluate_on(&Backend::open(&cfg.run)?, cfg, dirs)
}

/// [`evaluate`] on `backend`.
fn evaluate_on(backend: &Backend, cfg: &Config, dirs: &[PathBuf]) -> Result<Evaluation> {
    ensure!(!dirs.is_empty(), "no classifier to evaluate");
    let task = load_task(&cfg.data, cfg.run.seed)?;
    let mut sum: Vec<Vec<f32>> = Vec::new();
    for dir in dirs {
        let SavedClassifier { mut model, vocab, classes, backwards } = load_classifier(cfg, dir)?;
        ensure!(
            classes == task.classes,
            "{}: the classifier's classes ({}) are not the task's ({})",
            dir.display(),
            classes.join(", "),
            task.classes.join(", ")
        );
        let mut dir_cfg = cfg.clone();
        dir_cfg.model.backwards = backwards;
        let probs = predict_probs(backend, &mut model, &ids(&dir_cfg, &task.test.0, &vocab), cfg.classifier.bs)?;
        if sum.is_empty() {
            sum = probs;
        } else {
            sum.iter_mut().zip(probs).for_each(|(s, p)| s.iter_mut().zip(p).for_each(|(s, p)| *s += p));
        }
    }
    let n = dirs.len() as f32;
    let mean: Vec<Vec<f32>> = sum.into_iter().map(|p| p.into_iter().map(|x| x / n).collect()).collect();
    let acc = accuracy_of(&mean, &task.test.1) as f64;
    Ok(Evaluation { test_error: 1.0 - acc, accuracy: acc, documents: mean.len() })
}
