//! Models to and from checkpoint directories: a phase's result saved for the next one, and
//! read back by the stage commands (`--from`, `--model`), `predict` and resumed runs. A
//! directory written by another tool loads too when it has our format: `model.safetensors`
//! with fastai-style names, `vocab.txt`, `config.toml`. Also the vocabulary surgery between
//! pretraining and fine-tuning (fastai's `match_embeds`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{ensure, Context, Result};
use ulmfit_tensor::{Rng, Tensor};
use ulmfit_text::Vocab;

use crate::awd_lstm::{AwdLstm, LanguageModel};
use crate::checkpoint::{self, Checkpoint};
use crate::classifier::Classifier;
use crate::config::Config;
use crate::data::build_vocab;
use crate::pipeline::model_config;

/// The file beside a classifier checkpoint that names its classes, one per line.
pub const CLASSES: &str = "classes.txt";

/// Saves `named` with `vocab` and the config to `dir` (atomically).
pub fn save(dir: &Path, named: &[(String, Tensor)], vocab: &Vocab, cfg: &Config) -> Result<()> {
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    checkpoint::save(dir, &refs, vocab.itos(), &cfg.to_toml(), None)
        .with_context(|| format!("saving checkpoint {}", dir.display()))
}

/// Reads the checkpoint in `dir` and its (non-empty) vocabulary; `what` names it in errors.
fn read(dir: &Path, what: &str) -> Result<(Checkpoint, Vocab)> {
    let ck = checkpoint::load(dir).with_context(|| format!("reading the {what} checkpoint"))?;
    ensure!(!ck.vocab.is_empty(), "{}: the {what} checkpoint's vocab.txt is empty", ck.path.display());
    let vocab = Vocab::from_itos(ck.vocab.clone());
    Ok((ck, vocab))
}

/// Whether the checkpoint's model reads documents backwards (`model.backwards` in its saved
/// config.toml; false when absent, e.g. weights exported from fastai).
fn saved_backwards(ck: &Checkpoint) -> bool {
    let saved: Option<toml::Table> = ck.config.parse().ok();
    saved.as_ref().and_then(|t| t.get("model")?.get("backwards")?.as_bool()).unwrap_or(false)
}

/// Refuses a language model or encoder trained in the other reading direction than `cfg`'s.
fn check_direction(ck: &Checkpoint, cfg: &Config, what: &str) -> Result<()> {
    let (saved, want) = (saved_backwards(ck), cfg.model.backwards);
    let name = |b: bool| if b { "backwards" } else { "forwards" };
    ensure!(
        saved == want,
        "{}: the {what} checkpoint reads documents {}, this config's model {} (model.backwards = {want})",
        ck.path.display(),
        name(saved),
        name(want)
    );
    Ok(())
}

/// Copies the checkpoint's tensors into `named`; the error says which tensors differ and
/// which `[model]` sizes the config asks for.
fn assign(ck: &Checkpoint, named: &[(String, Tensor)], cfg: &Config, what: &str) -> Result<()> {
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let m = &cfg.model;
    ck.assign_to(&refs).with_context(|| {
        format!(
            "the {what} checkpoint does not fit the model of this config (emb_sz {}, n_hid {}, n_layers {})",
            m.emb_sz, m.n_hid, m.n_layers
        )
    })
}

/// The language model saved in `dir` (pretrained or fine-tuned), with its vocabulary and
/// the config's LM dropouts.
pub fn load_lm(cfg: &Config, dir: &Path) -> Result<(LanguageModel, Vocab)> {
    let (ck, vocab) = read(dir, "language model")?;
    check_direction(&ck, cfg, "language model")?;
    let m = &cfg.model;
    let lm = LanguageModel::new(model_config(cfg, vocab.len(), m.lm_dropouts, m.lm_drop_mult), &mut Rng::new(0));
    assign(&ck, &lm.named_params(), cfg, "language model")?;
    Ok((lm, vocab))
}

/// The encoder of the language model (or encoder-only checkpoint) in `dir`, with the
/// config's classifier dropouts; decoder tensors (`1.*`) are ignored.
pub fn load_encoder(cfg: &Config, dir: &Path) -> Result<(AwdLstm, Vocab)> {
    let (mut ck, vocab) = read(dir, "encoder")?;
    check_direction(&ck, cfg, "encoder")?;
    ck.tensors.retain(|t| !t.name.starts_with("1."));
    let m = &cfg.model;
    let enc = AwdLstm::new(model_config(cfg, vocab.len(), m.clas_dropouts, m.clas_drop_mult), &mut Rng::new(0));
    assign(&ck, &enc.named_params(), cfg, "encoder")?;
    Ok((enc, vocab))
}

/// A classifier over `encoder` for `classes` classes, head initialised from `seed`, with the
/// config's head size and dropout and its BPT3C settings.
pub fn new_classifier(cfg: &Config, encoder: AwdLstm, classes: usize, seed: u64) -> Classifier {
    let c = &cfg.classifier;
    let mut model = Classifier::new(encoder, classes, c.lin_ftrs, c.head_p, &mut Rng::new(seed));
    model.bptt = c.bptt;
    model.max_len = c.max_len;
    model
}

/// A classifier read back from its checkpoint directory.
pub struct SavedClassifier {
    /// The model, with the config's BPT3C settings.
    pub model: Classifier,
    /// Its vocabulary.
    pub vocab: Vocab,
    /// Class names (`classes.txt`), by class id.
    pub classes: Vec<String>,
    /// It reads documents backwards (`model.backwards` in its saved config.toml).
    pub backwards: bool,
}

/// The classifier saved in `dir`, built with `cfg`'s model sizes and classifier settings.
pub fn load_classifier(cfg: &Config, dir: &Path) -> Result<SavedClassifier> {
    let (ck, vocab) = read(dir, "classifier")?;
    let path = ck.path.join(CLASSES);
    ensure!(
        path.exists(),
        "{} is not a classifier checkpoint (it has no {CLASSES}; a language model's, perhaps): give a classifier \
         directory such as OUT/classifier",
        ck.path.display()
    );
    let classes: Vec<String> = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the class names {}", path.display()))?
        .lines()
        .map(str::to_string)
        .collect();
    ensure!(classes.len() >= 2, "{}: {} classes; a classifier has at least 2", path.display(), classes.len());
    let m = &cfg.model;
    let enc = AwdLstm::new(model_config(cfg, vocab.len(), m.clas_dropouts, m.clas_drop_mult), &mut Rng::new(0));
    let model = new_classifier(cfg, enc, classes.len(), 0);
    assign(&ck, &model.named_tensors(), cfg, "classifier")?;
    let backwards = saved_backwards(&ck);
    Ok(SavedClassifier { model, vocab, classes, backwards })
}

/// Saves a classifier with its class names.
pub fn save_classifier(dir: &Path, model: &Classifier, vocab: &Vocab, classes: &[String], cfg: &Config) -> Result<()> {
    save(dir, &model.named_tensors(), vocab, cfg)?;
    std::fs::write(dir.join(CLASSES), classes.join("\n") + "\n")
        .with_context(|| format!("writing class names into {}", dir.display()))
}

/// Copies the rows of `old` (embedding-like, `[V_old, E]` or `[V_old]`) into a table for
/// `new_vocab`: tokens both know keep their rows, new tokens get the mean row (fastai's
/// `match_embeds`).
pub fn match_rows(old: &Tensor, old_vocab: &Vocab, new_vocab: &Vocab) -> Result<Tensor> {
    let width = old.numel() / old_vocab.len();
    let data = old.data();
    let mut mean = vec![0.0f32; width];
    data.chunks(width).for_each(|r| mean.iter_mut().zip(r).for_each(|(m, v)| *m += v / old_vocab.len() as f32));
    let mut row_of = HashMap::new();
    old_vocab.itos().iter().enumerate().for_each(|(i, t)| _ = row_of.entry(t.as_str()).or_insert(i));
    let mut out = Vec::with_capacity(new_vocab.len() * width);
    for tok in new_vocab.itos() {
        match row_of.get(tok.as_str()).filter(|_| tok != "xxfake") {
            Some(&i) => out.extend_from_slice(&data[i * width..(i + 1) * width]),
            None => out.extend_from_slice(&mean),
        }
    }
    let mut shape = old.shape().to_vec();
    shape[0] = new_vocab.len();
    Ok(Tensor::param(out, &shape)?)
}

/// The pretrained vocabulary plus the task's frequent tokens it lacks.
pub fn extend_vocab<S: AsRef<str> + Sync>(base: &Vocab, task_texts: &[S], cfg: &Config) -> Vocab {
    let (task_vocab, _) = build_vocab(task_texts, cfg.model.max_vocab, cfg.model.min_freq);
    let known: HashSet<&String> = base.itos().iter().collect();
    let mut itos = base.itos().to_vec();
    itos.extend(task_vocab.itos().iter().filter(|t| *t != "xxfake" && !known.contains(t)).cloned());
    Vocab::from_itos(itos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dropouts;

    #[test]
    fn new_classifier_takes_head_size_dropout_and_bpt3c_from_the_config() {
        let text = "[model]\nemb_sz = 8\nn_hid = 12\nn_layers = 2\n\n[classifier]\nlin_ftrs = 20\nhead_p = 0.3\nbptt = 9\nmax_len = 27\n";
        let cfg = Config::parse(text, Path::new("head.toml")).unwrap();
        let enc = AwdLstm::new(model_config(&cfg, 30, Dropouts::clas(), 0.5), &mut Rng::new(1));
        let m = new_classifier(&cfg, enc, 4, 2);
        assert_eq!(m.head[0].weight.shape(), &[20, 24], "first head layer 3E -> lin_ftrs");
        assert_eq!(m.head[1].weight.shape(), &[4, 20], "second head layer lin_ftrs -> classes");
        assert_eq!((m.head[1].p, m.bptt, m.max_len), (0.3, 9, 27));
    }

    #[test]
    fn a_model_of_the_other_reading_direction_is_refused() {
        let dir = std::env::temp_dir().join(format!("ulmfit-direction-{}", std::process::id()));
        let text = "[model]\nemb_sz = 4\nn_hid = 6\nn_layers = 1\nbackwards = true\n";
        let bwd = Config::parse(text, Path::new("bwd.toml")).unwrap();
        let itos: Vec<String> = ulmfit_text::SPECIAL_TOKENS.iter().map(|s| s.to_string()).chain(["a".into()]).collect();
        let vocab = Vocab::from_itos(itos);
        let cfg = model_config(&bwd, vocab.len(), bwd.model.lm_dropouts, 1.0);
        save(&dir, &LanguageModel::new(cfg, &mut Rng::new(1)).named_params(), &vocab, &bwd).unwrap();
        assert!(load_lm(&bwd, &dir).is_ok(), "the same direction loads");
        let fwd = Config::parse(&text.replace("backwards = true", "backwards = false"), Path::new("fwd.toml")).unwrap();
        for e in [load_lm(&fwd, &dir).err(), load_encoder(&fwd, &dir).err()] {
            let e = format!("{:#}", e.expect("a backward model loaded into a forward config"));
            assert!(e.contains("reads documents backwards") && e.contains("model.backwards = false"), "{e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
