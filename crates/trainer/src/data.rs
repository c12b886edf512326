//! Loading the corpora a ULMFiT run needs, tokenised with the fastai rules and
//! numericalised: the LM pretraining corpus (one document per non-empty line of a
//! WikiText/PTB file) and the target task (labelled documents, split into train / valid /
//! test, labels mapped to class ids).

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use ulmfit_tensor::Rng;
use ulmfit_text::datasets::{self, CsvOptions, Document};
use ulmfit_text::{Corpus, CorpusBuilder, Tokenizer, Vocab};

use crate::config::{DataConfig, LmText, TaskKind};

/// The lines of an LM token file, one document each (blank lines dropped).
pub fn lm_documents(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading LM corpus {}", path.display()))?;
    let docs: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    ensure!(!docs.is_empty(), "LM corpus {} has no text", path.display());
    Ok(docs)
}

/// Tokenises `texts` into a corpus over a fixed vocabulary.
pub fn numericalize<S: AsRef<str> + Sync>(texts: &[S], vocab: &Vocab) -> Corpus {
    let tok = Tokenizer::new();
    let mut b = CorpusBuilder::new(&tok);
    b.add(texts);
    b.finish_with(vocab)
}

/// Tokenises `texts` and builds the vocabulary from them (`max_vocab`, `min_freq`).
pub fn build_vocab<S: AsRef<str> + Sync>(texts: &[S], max_vocab: usize, min_freq: usize) -> (Vocab, Corpus) {
    let tok = Tokenizer::new();
    let mut b = CorpusBuilder::new(&tok);
    b.add(texts);
    b.finish(max_vocab, min_freq)
}

/// A labelled task, as texts: train (after the validation split), valid, test.
pub struct TaskTexts {
    /// Class names; the id of a class is its index.
    pub classes: Vec<String>,
    /// (texts, label ids) per split.
    pub train: (Vec<String>, Vec<u32>),
    /// Held out from the training split (`valid_pct`), or the dataset's own validation set.
    pub valid: (Vec<String>, Vec<u32>),
    /// The test split.
    pub test: (Vec<String>, Vec<u32>),
}

/// A task's documents: train, valid (if the dataset has its own), test.
type Splits = (Vec<Document>, Option<Vec<Document>>, Vec<Document>);

/// Loads the configured task's documents: (train, valid if the dataset has one, test).
fn task_documents(cfg: &DataConfig) -> Result<Splits> {
    let path = cfg.resolve(&cfg.task_path);
    Ok(match cfg.task {
        TaskKind::Trec => {
            let mut train = datasets::load_trec(&path.join("train_5500.label"))?;
            let mut test = datasets::load_trec(&path.join("TREC_10.label"))?;
            if !cfg.trec_fine {
                for d in train.iter_mut().chain(test.iter_mut()) {
                    d.label = d.label.as_deref().map(|l| datasets::trec_coarse(l).to_string());
                }
            }
            (train, None, test)
        }
        TaskKind::Imdb => {
            let imdb = datasets::load_imdb(&path)?;
            (imdb.train, None, imdb.test)
        }
        TaskKind::FastaiCsv => {
            let (train, valid) = datasets::load_fastai_csv(&path)?;
            (train, None, valid)
        }
        TaskKind::Csv => {
            let mut opts = CsvOptions::csv(&cfg.text_col, Some(&cfg.label_col));
            opts.delimiter = cfg.delimiter.chars().next().unwrap_or(',');
            let test_path = cfg
                .test_path
                .as_ref()
                .map(|p| cfg.resolve(p))
                .context("data.test_path is required for task = \"csv\"")?;
            (datasets::load_csv(&path, &opts)?, None, datasets::load_csv(&test_path, &opts)?)
        }
    })
}

/// Loads the task, splits `valid_pct` of the training documents off for validation
/// (seeded) when the dataset has no validation split, and maps labels to class ids.
/// A test label that training never saw is an error naming it.
pub fn load_task(cfg: &DataConfig, seed: u64) -> Result<TaskTexts> {
    let (mut train, valid, test) = task_documents(cfg)?;
    ensure!(!train.is_empty(), "the task's training set {} is empty", cfg.task_path.display());
    ensure!(
        valid.is_some() || train.len() >= 2,
        "the task's training set {} has 1 document: a validation split needs at least 2",
        cfg.task_path.display()
    );
    ensure!(!test.is_empty(), "the task's test set is empty");
    let valid = match valid {
        Some(v) => v,
        None => {
            Rng::new(seed).shuffle(&mut train);
            let n_valid = ((train.len() as f32 * cfg.valid_pct).round() as usize).clamp(1, train.len() - 1);
            train.split_off(train.len() - n_valid)
        }
    };
    let mut classes: Vec<String> = train.iter().filter_map(|d| d.label.clone()).collect();
    classes.sort();
    classes.dedup();
    ensure!(
        classes.len() >= 2,
        "the task's training set has {} distinct labels; a classifier needs at least 2",
        classes.len()
    );
    let split = |docs: Vec<Document>, name: &str| -> Result<(Vec<String>, Vec<u32>)> {
        let mut texts = Vec::with_capacity(docs.len());
        let mut labels = Vec::with_capacity(docs.len());
        for (i, d) in docs.into_iter().enumerate() {
            let Some(label) = d.label else { bail!("{name} document {i} has no label") };
            let Ok(id) = classes.binary_search(&label) else {
                bail!(
                    "{name} document {i} has label {label:?}, which the training set never uses (classes: {})",
                    classes.join(", ")
                )
            };
            texts.push(d.text);
            labels.push(id as u32);
        }
        Ok((texts, labels))
    };
    Ok(TaskTexts {
        train: split(train, "training")?,
        valid: split(valid, "validation")?,
        test: split(test, "test")?,
        classes,
    })
}

/// The texts LM fine-tuning reads, as (train, valid): the task's own training and validation
/// texts, or with [`LmText::All`] every text of the task (test set included, labels unused),
/// shuffled with `seed` and `valid_pct` of them held out.
pub fn lm_texts(task: &TaskTexts, text: LmText, valid_pct: f32, seed: u64) -> (Vec<&str>, Vec<&str>) {
    fn strs(texts: &[String]) -> Vec<&str> {
        texts.iter().map(String::as_str).collect()
    }
    match text {
        LmText::Train => (strs(&task.train.0), strs(&task.valid.0)),
        LmText::All => {
            let mut all = strs(&task.train.0);
            all.extend(strs(&task.valid.0));
            all.extend(strs(&task.test.0));
            Rng::new(seed).shuffle(&mut all);
            let n_valid = ((all.len() as f32 * valid_pct).round() as usize).clamp(1, all.len() - 1);
            let valid = all.split_off(all.len() - n_valid);
            (all, valid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskTexts {
        let texts = |prefix: &str, n: usize| ((0..n).map(|i| format!("{prefix} {i}")).collect(), vec![0; n]);
        TaskTexts {
            classes: vec!["a".into()],
            train: texts("train", 30),
            valid: texts("valid", 5),
            test: texts("test", 15),
        }
    }

    #[test]
    fn a_training_set_of_one_document_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("ulmfit-one-doc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("train.csv"), "label,text\npos,only one\n").unwrap();
        std::fs::write(dir.join("test.csv"), "label,text\npos,a\nneg,b\n").unwrap();
        let text = format!(
            "[data]\nroot = {:?}\ntask = \"csv\"\ntask_path = \"train.csv\"\ntest_path = \"test.csv\"\n",
            dir.display().to_string()
        );
        let cfg = crate::config::Config::parse(&text, std::path::Path::new("one.toml")).unwrap();
        let e = load_task(&cfg.data, 1).err().expect("one training document loaded").to_string();
        assert!(e.contains("train.csv") && e.contains("1 document"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn lm_texts_train_is_the_classifiers_split() {
        let t = task();
        let (train, valid) = lm_texts(&t, LmText::Train, 0.1, 1);
        assert_eq!(train, t.train.0);
        assert_eq!(valid, t.valid.0);
    }

    #[test]
    fn lm_texts_all_holds_out_a_seeded_share_of_every_text() {
        let t = task();
        let (train, valid) = lm_texts(&t, LmText::All, 0.1, 1);
        assert_eq!(valid.len(), 5, "10% of 50 texts");
        let mut seen: Vec<&str> = train.iter().chain(&valid).copied().collect();
        seen.sort();
        let mut every: Vec<&str> = t.train.0.iter().chain(&t.valid.0).chain(&t.test.0).map(String::as_str).collect();
        every.sort();
        assert_eq!(seen, every, "each text exactly once");
        assert!(train.iter().any(|s| s.starts_with("test")), "test texts are read");
        assert_eq!(lm_texts(&t, LmText::All, 0.1, 1), (train.clone(), valid.clone()), "same seed, same split");
        assert_ne!(lm_texts(&t, LmText::All, 0.1, 2).1, valid, "the seed picks the split");
    }
}
