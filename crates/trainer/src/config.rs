//! The TOML configuration of `ulmfit run CONFIG` and its presets. Every field defaults to
//! fastai's value (`ulmfit-reference.md` 2.3-2.6), so a preset only states what differs.
//! Unknown keys are errors naming the key, its table and the file; values are validated
//! with errors naming the key. `tests/infra_config.rs` parses a full config and checks both.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::schedule::{fastai_classifier_recipe, FreezeStage, OneCycle, Schedule, SLICE_DIV};

/// A config that cannot be read, parsed or accepted; names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read config: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Bad TOML, an unknown key or a value of the wrong type.
    #[error("{path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    /// Values out of range, one line per key.
    #[error("{path}: invalid config:\n{}", problems.join("\n"))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

/// The whole pipeline: data, model, optimizer, the three training phases, run settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[data]`: where the corpora and the task dataset are.
    pub data: DataConfig,
    /// `[model]`: AWD-LSTM sizes, dropouts, vocabulary.
    pub model: ModelConfig,
    /// `[optim]`: Adam, AR/TAR and schedule shapes shared by all phases.
    pub optim: OptimConfig,
    /// `[pretrain]`: LM pretraining on the general corpus.
    pub pretrain: PretrainConfig,
    /// `[finetune_lm]`: LM fine-tuning on the task's text.
    pub finetune_lm: FinetuneLmConfig,
    /// `[classifier]`: classifier training with gradual unfreezing.
    pub classifier: ClassifierConfig,
    /// `[run]`: seed, device, output directory.
    pub run: RunConfig,
}

/// Kind of target-task dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// `train_5500.label` + `TREC_10.label` in `task_path`.
    Trec,
    /// `aclImdb` (directory or the labelled `.tar.gz`) at `task_path`.
    Imdb,
    /// A CSV/TSV file at `task_path` (and `test_path`), columns `text_col`, `label_col`.
    Csv,
    /// fastai's `label,text,is_valid` CSV (e.g. `imdb_sample/texts.csv`).
    FastaiCsv,
}

/// `[data]`. Relative paths are under `root`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Data directory; unset: `$ULMFIT_DATA`, else `../shared/data`.
    pub root: Option<PathBuf>,
    /// LM pretraining corpus, training tokens.
    pub lm_train: PathBuf,
    /// LM pretraining corpus, validation tokens.
    pub lm_valid: PathBuf,
    /// Target task dataset kind.
    pub task: TaskKind,
    /// Target task dataset: a directory or file, per `task`.
    pub task_path: PathBuf,
    /// Test file for `task = "csv"` (else the task's own test split).
    pub test_path: Option<PathBuf>,
    /// CSV text column.
    pub text_col: String,
    /// CSV label column.
    pub label_col: String,
    /// CSV field separator, one character (`","` or `"\t"`).
    pub delimiter: String,
    /// TREC: the 50 fine classes instead of the 6 coarse ones.
    pub trec_fine: bool,
    /// Fraction of the task's texts held out to validate LM fine-tuning and, where the task
    /// has no validation split, the classifier (fastai 0.1).
    pub valid_pct: f32,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            root: None,
            lm_train: "wikitext-2/wiki.train.tokens".into(),
            lm_valid: "wikitext-2/wiki.valid.tokens".into(),
            task: TaskKind::Trec,
            task_path: "trec".into(),
            test_path: None,
            text_col: "text".into(),
            label_col: "label".into(),
            delimiter: ",".into(),
            trec_fine: false,
            valid_pct: 0.1,
        }
    }
}

impl DataConfig {
    /// The data directory: `root`, else `$ULMFIT_DATA`, else `../shared/data`.
    pub fn root_dir(&self) -> PathBuf {
        self.root
            .clone()
            .or_else(|| std::env::var_os("ULMFIT_DATA").map(PathBuf::from))
            .unwrap_or_else(|| "../shared/data".into())
    }

    /// `p` if absolute, else `p` under the data directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root_dir().join(p)
        }
    }
}

/// The five AWD-LSTM dropout probabilities (before `drop_mult`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Dropouts {
    /// On the embedding output (`input_p`).
    pub input_p: f32,
    /// Between LSTM layers (`hidden_p`).
    pub hidden_p: f32,
    /// DropConnect on hidden-to-hidden weights (`weight_p`).
    pub weight_p: f32,
    /// Whole embedding rows (`embed_p`).
    pub embed_p: f32,
    /// On the last LSTM output (`output_p`).
    pub output_p: f32,
}

impl Dropouts {
    /// fastai `awd_lstm_lm_config`.
    pub fn lm() -> Self {
        Dropouts { input_p: 0.25, hidden_p: 0.15, weight_p: 0.2, embed_p: 0.02, output_p: 0.1 }
    }

    /// fastai `awd_lstm_clas_config`.
    pub fn clas() -> Self {
        Dropouts { input_p: 0.4, hidden_p: 0.3, weight_p: 0.5, embed_p: 0.05, output_p: 0.4 }
    }

    /// Every probability times `mult` (fastai's `drop_mult`).
    pub fn scaled(&self, mult: f32) -> Self {
        let d = self;
        Dropouts {
            input_p: d.input_p * mult,
            hidden_p: d.hidden_p * mult,
            weight_p: d.weight_p * mult,
            embed_p: d.embed_p * mult,
            output_p: d.output_p * mult,
        }
    }

    fn named(&self) -> [(&'static str, f32); 5] {
        [
            ("input_p", self.input_p),
            ("hidden_p", self.hidden_p),
            ("weight_p", self.weight_p),
            ("embed_p", self.embed_p),
            ("output_p", self.output_p),
        ]
    }
}

/// A `[model.*_dropouts]` table as written: keys left out keep the defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialDropouts {
    input_p: Option<f32>,
    hidden_p: Option<f32>,
    weight_p: Option<f32>,
    embed_p: Option<f32>,
    output_p: Option<f32>,
}

impl PartialDropouts {
    fn over(self, d: Dropouts) -> Dropouts {
        Dropouts {
            input_p: self.input_p.unwrap_or(d.input_p),
            hidden_p: self.hidden_p.unwrap_or(d.hidden_p),
            weight_p: self.weight_p.unwrap_or(d.weight_p),
            embed_p: self.embed_p.unwrap_or(d.embed_p),
            output_p: self.output_p.unwrap_or(d.output_p),
        }
    }
}

fn lm_dropouts<'de, D: Deserializer<'de>>(d: D) -> Result<Dropouts, D::Error> {
    PartialDropouts::deserialize(d).map(|p| p.over(Dropouts::lm()))
}

fn clas_dropouts<'de, D: Deserializer<'de>>(d: D) -> Result<Dropouts, D::Error> {
    PartialDropouts::deserialize(d).map(|p| p.over(Dropouts::clas()))
}

/// `[model]`: AWD-LSTM as fastai builds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Embedding size (400); also the last LSTM layer's output (tied decoder).
    pub emb_sz: usize,
    /// Hidden size of the inner LSTM layers (1152).
    pub n_hid: usize,
    /// LSTM layers (3).
    pub n_layers: usize,
    /// Language-model dropouts (`[model.lm_dropouts]`).
    #[serde(deserialize_with = "lm_dropouts")]
    pub lm_dropouts: Dropouts,
    /// Classifier dropouts (`[model.clas_dropouts]`).
    #[serde(deserialize_with = "clas_dropouts")]
    pub clas_dropouts: Dropouts,
    /// Multiplies the LM dropouts (`language_model_learner` 1.0).
    pub lm_drop_mult: f32,
    /// Multiplies the classifier dropouts (`text_classifier_learner` 0.5).
    pub clas_drop_mult: f32,
    /// Vocabulary cap (60000) of each vocabulary built: the pretraining corpus's, and the
    /// task's, whose new words LM fine-tuning appends to the pretrained vocabulary (so the
    /// fine-tuned vocabulary can hold up to twice this).
    pub max_vocab: usize,
    /// Minimum count to enter the vocabulary (3).
    pub min_freq: usize,
    /// The model reads every document's tokens in reverse order (fastai's `backwards`); set
    /// on the backward checkpoints that `run.backwards` trains (false).
    pub backwards: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            emb_sz: 400,
            n_hid: 1152,
            n_layers: 3,
            lm_dropouts: Dropouts::lm(),
            clas_dropouts: Dropouts::clas(),
            lm_drop_mult: 1.0,
            clas_drop_mult: 0.5,
            max_vocab: 60000,
            min_freq: 3,
            backwards: false,
        }
    }
}

/// Schedule of a training phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// fastai's `fit_one_cycle`.
    OneCycle,
    /// The paper's slanted triangular LR.
    Stlr,
}

/// `[optim]`: Adam, AR/TAR and the schedules' shapes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Adam beta2 (fastai `sqr_mom` 0.99).
    pub sqr_mom: f32,
    /// Adam epsilon (fastai 1e-5).
    pub eps: f32,
    /// Activation regularisation weight (`RNNRegularizer` alpha 2).
    pub ar_alpha: f32,
    /// Temporal activation regularisation weight (beta 1).
    pub tar_beta: f32,
    /// One-cycle beta1 at start, peak, end (`TextLearner` 0.8, 0.7, 0.8).
    pub moms: [f32; 3],
    /// One-cycle warm-up fraction (0.25).
    pub pct_start: f32,
    /// One-cycle start LR divisor (25).
    pub div: f32,
    /// One-cycle final LR divisor (1e5).
    pub div_final: f32,
    /// STLR warm-up fraction (0.1).
    pub cut_frac: f32,
    /// STLR lowest-to-highest LR ratio (32).
    pub ratio: f32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            sqr_mom: 0.99,
            eps: 1e-5,
            ar_alpha: 2.0,
            tar_beta: 1.0,
            moms: [0.8, 0.7, 0.8],
            pct_start: 0.25,
            div: 25.0,
            div_final: 1e5,
            cut_frac: 0.1,
            ratio: 32.0,
        }
    }
}

impl OptimConfig {
    /// The schedule of `kind` with these shapes (peak-relative: see `Schedule::at`).
    pub fn schedule(&self, kind: ScheduleKind) -> Schedule {
        match kind {
            ScheduleKind::OneCycle => {
                let [m0, m1, m2] = self.moms;
                Schedule::OneCycle(OneCycle {
                    lr_max: 1.0,
                    div: self.div,
                    div_final: self.div_final,
                    pct_start: self.pct_start,
                    moms: (m0, m1, m2),
                })
            }
            ScheduleKind::Stlr => Schedule::Slanted { cut_frac: self.cut_frac, ratio: self.ratio },
        }
    }
}

/// `[pretrain]`: the LM on the general-domain corpus. `epochs = 0` skips it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    /// Epochs (10).
    pub epochs: usize,
    /// Batch size (64).
    pub bs: usize,
    /// Sequence length (fastai `LMDataLoader` 72).
    pub bptt: usize,
    /// Peak LR (1e-2).
    pub lr: f32,
    /// Decoupled weight decay (fastai LM tutorial 0.1).
    pub wd: f32,
    /// Gradient-norm clip, 0 = off (fastai's ULMFiT example 0.1).
    pub clip: f32,
    /// LR schedule (one-cycle).
    pub schedule: ScheduleKind,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig { epochs: 10, bs: 64, bptt: 72, lr: 1e-2, wd: 0.1, clip: 0.1, schedule: ScheduleKind::OneCycle }
    }
}

/// `[finetune_lm]`: the LM on the task's text: `frozen_epochs` training only the top group
/// (embedding + decoder), then `epochs` with everything unfrozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneLmConfig {
    /// Epochs with only the top group trainable (1).
    pub frozen_epochs: usize,
    /// Peak LR of the frozen epochs (1e-2).
    pub frozen_lr: f32,
    /// Epochs unfrozen (10).
    pub epochs: usize,
    /// Peak LR unfrozen (1e-3), of the top group (fastai's LM split puts the embedding and
    /// tied decoder last); each LSTM layer below gets 2.6 times less than the one above.
    pub lr: f32,
    /// Batch size (64).
    pub bs: usize,
    /// Sequence length (72).
    pub bptt: usize,
    /// Decoupled weight decay (0.1).
    pub wd: f32,
    /// Gradient-norm clip, 0 = off (0.1).
    pub clip: f32,
    /// LR schedule (one-cycle).
    pub schedule: ScheduleKind,
    /// Which of the task's texts the LM reads (`train`).
    pub text: LmText,
}

/// The task texts that LM fine-tuning reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LmText {
    /// The classifier's training texts; its validation split is the LM's.
    Train,
    /// Every text of the task, test set included, labels unused (fastai's IMDb recipe): a
    /// seeded `data.valid_pct` of them is held out for the LM's validation.
    All,
}

impl Default for FinetuneLmConfig {
    fn default() -> Self {
        FinetuneLmConfig {
            frozen_epochs: 1,
            frozen_lr: 1e-2,
            epochs: 10,
            lr: 1e-3,
            bs: 64,
            bptt: 72,
            wd: 0.1,
            clip: 0.1,
            schedule: ScheduleKind::OneCycle,
            text: LmText::Train,
        }
    }
}

/// One gradual-unfreezing stage as written in `[[classifier.stages]]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// fastai's `freeze_to(n)`: -1 trains the head only, -2 one group more, ..., 0 everything.
    pub freeze_to: i64,
    /// Epochs.
    pub epochs: usize,
    /// Peak LR of the top group.
    pub lr: f32,
    /// The bottom group's LR is `lr / lr_div` (default 2.6^4, fastai's slice).
    #[serde(default = "slice_div")]
    pub lr_div: f32,
}

fn slice_div() -> f32 {
    SLICE_DIV
}

/// `[classifier]`: BPT3C classifier with concat pooling, trained by gradual unfreezing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierConfig {
    /// Batch size (64).
    pub bs: usize,
    /// BPT3C chunk length (72).
    pub bptt: usize,
    /// Tokens kept at the end of each document (72 x 20 = 1440).
    pub max_len: usize,
    /// Hidden size of the head (50).
    pub lin_ftrs: usize,
    /// Dropout before the last linear layer, not scaled by `drop_mult` (0.1).
    pub head_p: f32,
    /// Recipe base LR: stages default to fastai's IMDb recipe scaled by `lr / 2e-2` (2e-2).
    pub lr: f32,
    /// Decoupled weight decay (fastai default 0.01).
    pub wd: f32,
    /// Gradient-norm clip, 0 = off (fastai default off).
    pub clip: f32,
    /// LR schedule of each stage (one-cycle).
    pub schedule: ScheduleKind,
    /// Explicit unfreezing stages; unset: fastai's recipe.
    pub stages: Option<Vec<StageConfig>>,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            bs: 64,
            bptt: 72,
            max_len: 1440,
            lin_ftrs: 50,
            head_p: 0.1,
            lr: 2e-2,
            wd: 0.01,
            clip: 0.0,
            schedule: ScheduleKind::OneCycle,
            stages: None,
        }
    }
}

impl ClassifierConfig {
    /// The unfreezing stages to run: `stages` if given, else `fastai_classifier_recipe(lr)`.
    pub fn freeze_stages(&self) -> Vec<FreezeStage> {
        match &self.stages {
            None => fastai_classifier_recipe(self.lr),
            Some(stages) => stages
                .iter()
                .map(|s| FreezeStage {
                    trainable_groups_from_top: if s.freeze_to == 0 {
                        usize::MAX
                    } else {
                        s.freeze_to.unsigned_abs() as usize
                    },
                    epochs: s.epochs,
                    lr_max: s.lr,
                    lr_div: s.lr_div,
                })
                .collect(),
        }
    }
}

/// Compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The CPU.
    Cpu,
    /// The first CUDA GPU.
    Cuda,
}

/// `[run]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Seed of every random choice (42).
    pub seed: u64,
    /// Device (cpu).
    pub device: DeviceKind,
    /// Checkpoints, metrics and plots go here (`runs/ulmfit`).
    pub out_dir: PathBuf,
    /// After the forward pipeline, train it again on reversed token order (LM, fine-tuned LM
    /// and classifier in `*-bwd/`) and report the test error of the averaged probabilities.
    pub backwards: bool,
    /// On CUDA, let cuBLAS use TF32 tensor cores for FP32 GEMMs (off).
    pub tf32: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { seed: 42, device: DeviceKind::Cpu, out_dir: "runs/ulmfit".into(), backwards: false, tf32: false }
    }
}

/// The `[table]` header above the line holding byte `pos` of `text`, for error messages.
fn table_at(text: &str, pos: usize) -> Option<&str> {
    let line_start = text[..pos.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    text[..line_start].lines().rev().map(str::trim).find(|l| l.starts_with('['))
}

impl Config {
    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let table = e
                .span()
                .and_then(|s| table_at(text, s.start))
                .map_or("the top level".to_string(), |t| format!("table {t}"));
            ConfigError::Parse { path: origin.into(), msg: format!("{} (in {table})", e.to_string().trim_end()) }
        })?;
        let problems = cfg.problems();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid { path: origin.into(), problems })
        }
    }

    /// The same config for the backward model (`model.backwards`), as `run.backwards` trains it.
    pub fn backward(&self) -> Config {
        let mut c = self.clone();
        c.model.backwards = true;
        c.run.backwards = false;
        c
    }

    /// The config as TOML (stored beside checkpoints; parses back to the same config).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes to TOML")
    }

    /// Every out-of-range value, as `key = value: rule`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |key: &str, value: String, ok: bool, rule: &str| {
            if !ok {
                out.push(format!("{key} = {value}: {rule}"));
            }
        };
        let (d, m, o) = (&self.data, &self.model, &self.optim);
        check("data.valid_pct", d.valid_pct.to_string(), d.valid_pct > 0.0 && d.valid_pct < 1.0, "must be in (0, 1)");
        check(
            "data.delimiter",
            format!("{:?}", d.delimiter),
            d.delimiter.chars().count() == 1,
            "must be one character",
        );
        for (key, v) in [("data.text_col", &d.text_col), ("data.label_col", &d.label_col)] {
            check(key, format!("{v:?}"), !v.is_empty(), "must not be empty");
        }
        for (key, v) in [
            ("model.emb_sz", m.emb_sz),
            ("model.n_hid", m.n_hid),
            ("model.n_layers", m.n_layers),
            ("model.max_vocab", m.max_vocab),
            ("model.min_freq", m.min_freq),
        ] {
            check(key, v.to_string(), v > 0, "must be positive");
        }
        for (table, drops, mult) in
            [("lm_dropouts", &m.lm_dropouts, m.lm_drop_mult), ("clas_dropouts", &m.clas_dropouts, m.clas_drop_mult)]
        {
            for (name, p) in drops.named() {
                let key = format!("model.{table}.{name}");
                if (0.0..1.0).contains(&p) {
                    check(
                        &key,
                        format!("{p} (x drop_mult {mult} = {})", p * mult),
                        (0.0..1.0).contains(&(p * mult)),
                        "scaled dropout must be in [0, 1)",
                    );
                } else {
                    check(&key, p.to_string(), false, "a dropout must be in [0, 1)");
                }
            }
        }
        for (key, v) in [("model.lm_drop_mult", m.lm_drop_mult), ("model.clas_drop_mult", m.clas_drop_mult)] {
            check(key, v.to_string(), v >= 0.0 && v.is_finite(), "must be >= 0");
        }
        for (key, v) in [
            ("optim.sqr_mom", o.sqr_mom),
            ("optim.moms[0]", o.moms[0]),
            ("optim.moms[1]", o.moms[1]),
            ("optim.moms[2]", o.moms[2]),
        ] {
            check(key, v.to_string(), (0.0..1.0).contains(&v), "must be in [0, 1)");
        }
        for (key, v) in [("optim.pct_start", o.pct_start), ("optim.cut_frac", o.cut_frac)] {
            check(key, v.to_string(), v > 0.0 && v < 1.0, "must be in (0, 1)");
        }
        for (key, v) in [("optim.div", o.div), ("optim.div_final", o.div_final), ("optim.ratio", o.ratio)] {
            check(key, v.to_string(), v >= 1.0 && v.is_finite(), "must be >= 1");
        }
        check("optim.eps", o.eps.to_string(), o.eps > 0.0 && o.eps.is_finite(), "must be positive");
        for (key, v) in [("optim.ar_alpha", o.ar_alpha), ("optim.tar_beta", o.tar_beta)] {
            check(key, v.to_string(), v >= 0.0 && v.is_finite(), "must be >= 0");
        }
        let (p, f, c) = (&self.pretrain, &self.finetune_lm, &self.classifier);
        let sizes = [
            ("pretrain.bs", p.bs),
            ("pretrain.bptt", p.bptt),
            ("finetune_lm.bs", f.bs),
            ("finetune_lm.bptt", f.bptt),
            ("classifier.bs", c.bs),
            ("classifier.bptt", c.bptt),
            ("classifier.max_len", c.max_len),
            ("classifier.lin_ftrs", c.lin_ftrs),
        ];
        for (key, v) in sizes {
            check(key, v.to_string(), v > 0, "must be positive");
        }
        for (key, v) in [
            ("pretrain.lr", p.lr),
            ("finetune_lm.frozen_lr", f.frozen_lr),
            ("finetune_lm.lr", f.lr),
            ("classifier.lr", c.lr),
        ] {
            check(key, v.to_string(), v > 0.0 && v.is_finite(), "a learning rate must be positive");
        }
        for (key, v) in [
            ("pretrain.wd", p.wd),
            ("finetune_lm.wd", f.wd),
            ("classifier.wd", c.wd),
            ("pretrain.clip", p.clip),
            ("finetune_lm.clip", f.clip),
            ("classifier.clip", c.clip),
        ] {
            check(key, v.to_string(), v >= 0.0 && v.is_finite(), "must be >= 0");
        }
        check(
            "run.backwards",
            self.run.backwards.to_string(),
            !(self.run.backwards && m.backwards),
            "needs model.backwards = false (it trains the forward model, then the backward one)",
        );
        check("classifier.head_p", c.head_p.to_string(), (0.0..1.0).contains(&c.head_p), "a dropout must be in [0, 1)");
        check(
            "classifier.max_len",
            c.max_len.to_string(),
            c.max_len + 1 >= 2 * c.bptt,
            "must be at least 2 x classifier.bptt - 1, so that the pooled steps hold every document's last chunk",
        );
        check("classifier.bs", c.bs.to_string(), c.bs != 1, "must be at least 2 (batch norm needs two rows)");
        for (i, s) in c.stages.iter().flatten().enumerate() {
            let key = |k: &str| format!("classifier.stages[{i}].{k}");
            check(
                &key("freeze_to"),
                s.freeze_to.to_string(),
                s.freeze_to <= 0,
                "must be -n (train the top n groups) or 0 (all)",
            );
            check(&key("lr"), s.lr.to_string(), s.lr > 0.0 && s.lr.is_finite(), "a learning rate must be positive");
            check(&key("lr_div"), s.lr_div.to_string(), s.lr_div >= 1.0 && s.lr_div.is_finite(), "must be >= 1");
        }
        if c.stages.as_ref().is_some_and(|s| s.is_empty()) {
            check(
                "classifier.stages",
                "[]".into(),
                false,
                "needs at least one stage (leave it out for fastai's recipe)",
            );
        }
        out
    }
}
