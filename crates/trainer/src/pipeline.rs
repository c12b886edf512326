//! The whole ULMFiT method from one config: pretrain the LM on a general corpus,
//! fine-tune it on the task's text (frozen, then unfrozen with discriminative LRs),
//! train the classifier with gradual unfreezing, and optionally the same classifier from
//! scratch for comparison (the paper's "without pretraining" row). Each stage writes a
//! checkpoint under `run.out_dir`; metrics go to `metrics.csv` / `metrics.jsonl` (drawn as
//! `loss.svg` and `lr.svg` at the end), the headline figures to `results.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ulmfit_tensor::{Rng, Tensor};
use ulmfit_text::{Corpus, Vocab};

use crate::awd_lstm::{AwdLstm, AwdLstmConfig, LanguageModel};
use crate::checkpoint;
use crate::classifier::Classifier;
use crate::config::{Config, Dropouts};
use crate::curves;
use crate::data::{build_vocab, lm_documents, load_task, numericalize, TaskTexts};
use crate::metrics::{read_jsonl, MetricsLog};
use crate::schedule::discriminative_lrs;
use crate::stages::{accuracy, adam, fit_classifier, fit_lm, Labelled, StagePlan};
use crate::train::StepConfig;

/// What a run measured.
#[derive(Debug, Default, serde::Serialize)]
pub struct RunResults {
    /// Validation perplexity of the pretrained LM (its own corpus).
    pub pretrain_valid_perplexity: Option<f64>,
    /// Validation perplexity of the fine-tuned LM (held-out task text).
    pub finetune_valid_perplexity: Option<f64>,
    /// Test error of the ULMFiT classifier.
    pub test_error: Option<f64>,
    /// Test error of the same classifier trained from scratch, when compared.
    pub scratch_test_error: Option<f64>,
    /// Wall-clock seconds per stage.
    pub seconds: Vec<(String, f64)>,
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
    let valid = numericalize(&valid, &vocab);
    eprintln!("pretraining corpus: {} tokens, vocabulary {}", train.ids.len(), vocab.len());
    let lm = LanguageModel::new(model_config(cfg, vocab.len(), cfg.model.lm_dropouts, cfg.model.lm_drop_mult), rng);
    Ok(Pretraining { vocab, train, valid, lm })
}

/// The step settings of a stage with gradient clip `clip` (0: none).
pub(crate) fn step_config(cfg: &Config, clip: f32) -> StepConfig {
    StepConfig { clip: (clip > 0.0).then_some(clip), alpha: cfg.optim.ar_alpha, beta: cfg.optim.tar_beta }
}

fn save(dir: &Path, named: &[(String, Tensor)], vocab: &Vocab, cfg: &Config) -> Result<()> {
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    checkpoint::save(dir, &refs, vocab.itos(), &cfg.to_toml(), None)
        .with_context(|| format!("saving checkpoint {}", dir.display()))
}

/// Copies the rows of `old` (embedding-like, `[V_old, E]` or `[V_old]`) into a table for
/// `new_vocab`: tokens both know keep their rows, new tokens get the mean row (fastai's
/// `match_embeds`).
fn match_rows(old: &Tensor, old_vocab: &Vocab, new_vocab: &Vocab) -> Result<Tensor> {
    let width = old.numel() / old_vocab.len();
    let data = old.data();
    let mut mean = vec![0.0f32; width];
    data.chunks(width).for_each(|r| mean.iter_mut().zip(r).for_each(|(m, v)| *m += v / old_vocab.len() as f32));
    let mut out = Vec::with_capacity(new_vocab.len() * width);
    for tok in new_vocab.itos() {
        match old_vocab.itos().iter().position(|t| t == tok).filter(|_| tok != "xxfake") {
            Some(i) => out.extend_from_slice(&data[i * width..(i + 1) * width]),
            None => out.extend_from_slice(&mean),
        }
    }
    let mut shape = old.shape().to_vec();
    shape[0] = new_vocab.len();
    Ok(Tensor::param(out, &shape)?)
}

/// The pretrained vocabulary plus the task's frequent tokens it lacks.
fn extend_vocab(base: &Vocab, task_texts: &[String], cfg: &Config) -> Vocab {
    let (task_vocab, _) = build_vocab(task_texts, cfg.model.max_vocab, cfg.model.min_freq);
    let mut itos = base.itos().to_vec();
    itos.extend(task_vocab.itos().iter().filter(|t| *t != "xxfake" && base.itos().iter().all(|b| b != *t)).cloned());
    Vocab::from_itos(itos)
}

/// Runs the configured pipeline. With `compare_scratch`, also trains the classifier
/// from a random encoder with the same recipe.
pub fn run(cfg: &Config, compare_scratch: bool) -> Result<RunResults> {
    let out = cfg.run.out_dir.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut log = MetricsLog::in_dir(&out)?;
    let mut results = RunResults::default();
    let seed = cfg.run.seed;
    let mut rng = Rng::new(seed);
    let clock = |name: &str, since: Instant, r: &mut RunResults| {
        r.seconds.push((name.to_string(), since.elapsed().as_secs_f64()))
    };
    // Rows an earlier run left in metrics.jsonl stay out of this run's curves.
    let first_row = read_jsonl(&out.join("metrics.jsonl"))?.len();

    // 1. Pretraining on the general corpus.
    let t0 = Instant::now();
    let Pretraining { vocab: base_vocab, train: lm_train, valid: lm_valid, mut lm } = pretraining(cfg, &mut rng)?;
    let n_groups = lm.param_groups().len();
    let mut opt = adam(lm.param_groups(), cfg.optim.sqr_mom, cfg.optim.eps);
    let p = &cfg.pretrain;
    let plan = StagePlan {
        name: "pretrain".into(),
        epochs: p.epochs,
        peaks: vec![p.lr; n_groups],
        trainable_from_top: usize::MAX,
        schedule: cfg.optim.schedule(p.schedule),
        wd: p.wd,
        step: step_config(cfg, p.clip),
    };
    let (loss, _) = fit_lm(&mut lm, &mut opt, &plan, &lm_train, &lm_valid, p.bs, p.bptt, seed, &mut log)?;
    results.pretrain_valid_perplexity = Some((loss as f64).exp());
    save(&out.join("pretrain"), &lm.named_params(), &base_vocab, cfg)?;
    clock("pretrain", t0, &mut results);
    drop((lm_train, lm_valid));

    // 2. LM fine-tuning on the task's text, vocabulary extended with the task's words.
    let t1 = Instant::now();
    let task = load_task(&cfg.data, seed)?;
    let vocab = extend_vocab(&base_vocab, &task.train.0, cfg);
    lm.encoder.embedding = match_rows(&lm.encoder.embedding, &base_vocab, &vocab)?;
    lm.decoder_bias = match_rows(&lm.decoder_bias, &base_vocab, &vocab)?;
    lm.encoder.cfg.vocab = vocab.len();
    let ft_train = numericalize(&task.train.0, &vocab);
    let ft_valid = numericalize(&task.valid.0, &vocab);
    let f = &cfg.finetune_lm;
    let mut opt = adam(lm.param_groups(), cfg.optim.sqr_mom, cfg.optim.eps);
    let schedule = cfg.optim.schedule(f.schedule);
    let frozen = StagePlan {
        name: "finetune-lm-frozen".into(),
        epochs: f.frozen_epochs,
        peaks: vec![f.frozen_lr; n_groups],
        trainable_from_top: 1,
        schedule,
        wd: f.wd,
        step: step_config(cfg, f.clip),
    };
    fit_lm(&mut lm, &mut opt, &frozen, &ft_train, &ft_valid, f.bs, f.bptt, seed, &mut log)?;
    let unfrozen = StagePlan {
        name: "finetune-lm".into(),
        epochs: f.epochs,
        peaks: discriminative_lrs(f.lr, n_groups, 2.6),
        trainable_from_top: usize::MAX,
        schedule,
        wd: f.wd,
        step: step_config(cfg, f.clip),
    };
    let (loss, _) = fit_lm(&mut lm, &mut opt, &unfrozen, &ft_train, &ft_valid, f.bs, f.bptt, seed, &mut log)?;
    results.finetune_valid_perplexity = Some((loss as f64).exp());
    save(&out.join("finetune"), &lm.named_params(), &vocab, cfg)?;
    clock("finetune-lm", t1, &mut results);

    // 3. The classifier on the fine-tuned encoder, then (optionally) from scratch.
    let splits = TaskSplits::new(&task, &vocab);
    let t2 = Instant::now();
    let mut encoder = lm.encoder;
    encoder.cfg = model_config(cfg, vocab.len(), cfg.model.clas_dropouts, cfg.model.clas_drop_mult);
    encoder.reset();
    let err =
        train_classifier(cfg, encoder, &task, &splits, &mut log, "classifier", &vocab, Some(&out.join("classifier")))?;
    results.test_error = Some(err);
    clock("classifier", t2, &mut results);
    if compare_scratch {
        let t3 = Instant::now();
        let scratch = AwdLstm::new(
            model_config(cfg, vocab.len(), cfg.model.clas_dropouts, cfg.model.clas_drop_mult),
            &mut Rng::new(seed ^ 1),
        );
        results.scratch_test_error =
            Some(train_classifier(cfg, scratch, &task, &splits, &mut log, "scratch", &vocab, None)?);
        clock("scratch", t3, &mut results);
    }
    curves::draw(&out, &read_jsonl(&out.join("metrics.jsonl"))?[first_row..])?;
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(out.join("results.json"), &json)
        .with_context(|| format!("writing {}", out.join("results.json").display()))?;
    Ok(results)
}

/// The task's splits as token ids.
struct TaskSplits {
    train: Corpus,
    valid: Corpus,
    test: Corpus,
}

impl TaskSplits {
    fn new(task: &TaskTexts, vocab: &Vocab) -> Self {
        TaskSplits {
            train: numericalize(&task.train.0, vocab),
            valid: numericalize(&task.valid.0, vocab),
            test: numericalize(&task.test.0, vocab),
        }
    }
}

/// Trains a classifier over `encoder` with the config's unfreezing stages; returns the
/// test error and saves the model to `save_to` when given.
#[allow(clippy::too_many_arguments)] // config, model, data and bookkeeping of one run
fn train_classifier(
    cfg: &Config,
    encoder: AwdLstm,
    task: &TaskTexts,
    s: &TaskSplits,
    log: &mut MetricsLog,
    name: &str,
    vocab: &Vocab,
    save_to: Option<&PathBuf>,
) -> Result<f64> {
    let c = &cfg.classifier;
    let mut rng = Rng::new(cfg.run.seed ^ 2);
    let mut model = Classifier::new(encoder, task.classes.len(), &mut rng);
    model.bptt = c.bptt;
    model.max_len = c.max_len;
    let mut opt = adam(model.param_groups(), cfg.optim.sqr_mom, cfg.optim.eps);
    let n_groups = opt.groups.len();
    let train = Labelled { corpus: &s.train, labels: &task.train.1 };
    let valid = Labelled { corpus: &s.valid, labels: &task.valid.1 };
    for (k, stage) in c.freeze_stages().iter().enumerate() {
        let plan = StagePlan {
            name: format!("{name}-{}", k + 1),
            epochs: stage.epochs,
            peaks: stage.lrs(n_groups),
            trainable_from_top: stage.trainable_groups_from_top,
            schedule: cfg.optim.schedule(c.schedule),
            wd: c.wd,
            step: step_config(cfg, c.clip),
        };
        fit_classifier(&mut model, &mut opt, &plan, &train, &valid, c.bs, cfg.run.seed, log)?;
    }
    let test = Labelled { corpus: &s.test, labels: &task.test.1 };
    let err = 1.0 - accuracy(&mut model, &test, c.bs)? as f64;
    eprintln!("{name}: test error {:.2}% on {} documents", 100.0 * err, s.test.len());
    if let Some(dir) = save_to {
        save(dir, &model.named_tensors(), vocab, cfg)?;
        std::fs::write(dir.join("classes.txt"), task.classes.join("\n") + "\n")
            .with_context(|| format!("writing classes into {}", dir.display()))?;
    }
    Ok(err)
}
