//! Resuming a run. The stage loops (`stages.rs`) report to `control::StageHooks`; the run's
//! [`Tracker`] appends each epoch's metrics row and writes the training state to
//! `OUT/state/` (a checkpoint with the model, Adam's moments, the stage, epoch and batch, the
//! stage's RNG state and the run's figures so far), and at every step boundary asks
//! `control::RunControl` whether to stop (Ctrl-C, or a test's step budget); a stopped stage
//! saves its state at that batch (a language-model stage with its carried LSTM state, read
//! from the CPU or the GPU). `--resume` reads the state back: stages before it are skipped
//! (earlier phases are read from their checkpoint directories), the saved stage goes on from
//! the saved batch with the same weights, moments, carried state and random streams, so the
//! resumed run ends bit-identical to an uninterrupted one (`tests/pipeline_resume.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use ulmfit_tensor::optim::{Adam, Moments};
use ulmfit_tensor::Tensor;

use crate::checkpoint::{self, Checkpoint, CheckpointError, NamedTensor, TrainMeta, TrainState};
use crate::config::Config;
use crate::control::{Interrupted, Position, RunControl, StageHooks};
use crate::curves;
use crate::metrics::{read_jsonl, EpochMetrics, MetricsLog};
use crate::pipeline::RunResults;

/// The training state's directory under `run.out_dir`.
pub const STATE_DIR: &str = "state";

/// Config keys that may differ between a run and its resumption.
const FREE_KEYS: [&str; 3] = ["run.out_dir", "run.device", "run.tf32"];

/// A loaded training state that the run has not reached yet.
struct Pending {
    stage: String,
    pos: Position,
    ck: Checkpoint,
}

/// The bookkeeping of one run: metrics rows, training-state checkpoints, the resume point
/// and stop requests. Phases set `vocab` to the vocabulary of the model they train.
pub struct Tracker<'c> {
    out: PathBuf,
    config: String,
    seed: u64,
    ctl: &'c RunControl,
    log: MetricsLog,
    rows: usize,
    first_row: usize,
    stages: Vec<String>,
    pending: Option<Pending>,
    /// The vocabulary of the model being trained (saved with its state, checked on resume).
    pub vocab: Vec<String>,
    /// The run's figures so far (restored on resume).
    pub results: RunResults,
}

fn bits(c: &BTreeMap<String, u64>, key: &str) -> Result<u64> {
    c.get(key).copied().ok_or_else(|| anyhow!("the training state has no counter {key:?}"))
}

/// The run's figures as counters, floats as bits: `result.FIELD` for each number field of
/// `RunResults`, `seconds.IDX.PHASE` for its timings.
fn results_to_counters(r: &RunResults, c: &mut BTreeMap<String, u64>) {
    if let serde_json::Value::Object(fields) = serde_json::to_value(r).expect("RunResults serializes") {
        for (name, v) in fields {
            if let Some(x) = v.as_f64() {
                c.insert(format!("result.{name}"), x.to_bits());
            }
        }
    }
    for (i, (phase, s)) in r.seconds.iter().enumerate() {
        c.insert(format!("seconds.{i:03}.{phase}"), s.to_bits());
    }
}

fn results_from_counters(c: &BTreeMap<String, u64>) -> Result<RunResults> {
    let mut fields = serde_json::Map::new();
    for (k, b) in c.range("result.".to_string().."result/".to_string()) {
        fields.insert(k["result.".len()..].to_string(), serde_json::json!(f64::from_bits(*b)));
    }
    let seconds: Vec<(String, f64)> = c
        .range("seconds.".to_string().."seconds/".to_string())
        .map(|(k, b)| (k.splitn(3, '.').nth(2).unwrap_or_default().to_string(), f64::from_bits(*b)))
        .collect();
    fields.insert("seconds".into(), serde_json::json!(seconds));
    serde_json::from_value(serde_json::Value::Object(fields)).context("the saved run figures do not parse")
}

/// `key = value` for every leaf of a TOML value (`a.b`, `a.list[2].c`).
fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => t
            .iter()
            .for_each(|(k, v)| flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out)),
        toml::Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| flatten(&format!("{prefix}[{i}]"), v, out)),
        leaf => _ = out.insert(prefix.to_string(), leaf.to_string()),
    }
}

/// Every key whose value differs between the saved config text and this run's, as
/// `key: saved X, now Y` (`FREE_KEYS` ignored).
fn config_differences(saved: &str, now: &str) -> Result<Vec<String>> {
    let leaves = |text: &str| -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        flatten("", &toml::Value::Table(text.parse::<toml::Table>()?), &mut out);
        Ok(out)
    };
    let (a, b) = (leaves(saved).context("the saved config.toml does not parse")?, leaves(now)?);
    let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter(|k| !FREE_KEYS.contains(&k.as_str()) && a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: saved {}, now {}", show(a.get(k)), show(b.get(k))))
        .collect())
}

/// Keeps the first `rows` rows of `OUT/metrics.{jsonl,csv}` (rows written after the state
/// was saved belong to epochs the resumed run repeats).
fn truncate_metrics(out: &Path, rows: usize) -> Result<()> {
    let jsonl = out.join("metrics.jsonl");
    let all = if jsonl.exists() { read_jsonl(&jsonl)? } else { Vec::new() };
    if all.len() <= rows {
        if all.len() < rows {
            eprintln!("warning: {} has {} rows, the saved state counted {rows}", jsonl.display(), all.len());
        }
        return Ok(());
    }
    let (csv_tmp, jsonl_tmp) = (out.join("metrics.csv.tmp"), out.join("metrics.jsonl.tmp"));
    for p in [&csv_tmp, &jsonl_tmp] {
        if p.exists() {
            std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    let mut log = MetricsLog::open(&csv_tmp, &jsonl_tmp)?;
    all[..rows].iter().try_for_each(|m| log.append(m))?;
    drop(log);
    for (tmp, name) in [(csv_tmp, "metrics.csv"), (jsonl_tmp, "metrics.jsonl")] {
        std::fs::rename(&tmp, out.join(name)).with_context(|| format!("replacing {}", out.join(name).display()))?;
    }
    Ok(())
}

/// Adam's moments as state tensors (`adam.G.P.m`, `.v`) and step counters (`adam.G.P.steps`).
fn save_moments(opt: &Adam, tensors: &mut Vec<NamedTensor>, counters: &mut BTreeMap<String, u64>) {
    for (g, group) in opt.moments().iter().enumerate() {
        for (p, m) in group.iter().enumerate().filter(|(_, m)| !m.m.is_empty()) {
            let key = format!("adam.{g}.{p}");
            tensors.push(NamedTensor { name: format!("{key}.m"), shape: vec![m.m.len()], data: m.m.clone() });
            tensors.push(NamedTensor { name: format!("{key}.v"), shape: vec![m.v.len()], data: m.v.clone() });
            counters.insert(format!("{key}.steps"), m.steps as u64);
        }
    }
}

/// Puts saved moments back into `opt`; refuses moments that do not fit its parameters.
fn restore_moments(opt: &mut Adam, st: &TrainState, path: &Path) -> Result<()> {
    let by_name: HashMap<&str, &NamedTensor> = st.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let sizes: Vec<Vec<usize>> = opt.groups.iter().map(|g| g.params.iter().map(Tensor::numel).collect()).collect();
    let mut used = 0;
    for (g, group) in opt.moments_mut().iter_mut().enumerate() {
        for (p, m) in group.iter_mut().enumerate() {
            let key = format!("adam.{g}.{p}");
            let n = sizes[g][p];
            let parts = (
                by_name.get(format!("{key}.m").as_str()),
                by_name.get(format!("{key}.v").as_str()),
                st.meta.counters.get(&format!("{key}.steps")),
            );
            *m = match parts {
                (None, None, None) => Moments::default(),
                (Some(a), Some(b), Some(&steps)) if a.data.len() == n && b.data.len() == n => {
                    used += 2;
                    Moments { m: a.data.clone(), v: b.data.clone(), steps: steps as u32 }
                }
                _ => bail!("{}: the saved Adam state {key} is incomplete or not of {n} values", path.display()),
            };
        }
    }
    ensure!(
        used == st.tensors.len(),
        "{}: the saved Adam state has {} tensors, this model's optimizer {used}",
        path.display(),
        st.tensors.len()
    );
    Ok(())
}

/// Loads the training state in `dir` for resuming: checks that it was saved with this
/// `config` and in one of `stages`; returns it with its counters.
fn load_pending(dir: &Path, config: &str, stages: &[String]) -> Result<(Pending, BTreeMap<String, u64>)> {
    let ck = match checkpoint::load(dir) {
        Err(CheckpointError::Missing(_)) => {
            let out = dir.parent().unwrap_or(Path::new("."));
            let why = if out.join("results.json").exists() {
                "the run there finished (see results.json)"
            } else {
                "the run there never finished an epoch"
            };
            bail!("--resume: no training state in {}: {why}; start it without --resume", dir.display())
        }
        r => r?,
    };
    let diffs = config_differences(&ck.config, config)?;
    ensure!(
        diffs.is_empty(),
        "--resume: the training state in {} was saved with another config:\n  {}\nresume with the same config \
         and options, or start over in another out_dir",
        ck.path.display(),
        diffs.join("\n  ")
    );
    let st = ck.state.as_ref().with_context(|| format!("{}: no training state files", ck.path.display()))?;
    let c = st.meta.counters.clone();
    let stage = st.meta.stage_name.clone();
    ensure!(
        stages.contains(&stage),
        "--resume: the training state in {} is of stage {stage}, which this command does not run (its stages: \
         {}); resume with the command that saved it",
        ck.path.display(),
        stages.join(", ")
    );
    let rng: [u64; 4] = st.meta.rng_state.as_slice().try_into().context("the saved RNG state is not 4 words")?;
    let f32_of = |k: &str| bits(&c, k).map(|b| f32::from_bits(b as u32));
    let pos = Position {
        epoch: st.meta.epoch,
        batch: st.meta.step as usize,
        rng,
        loss_sum: f64::from_bits(bits(&c, "position.loss_sum")?),
        steps: bits(&c, "position.steps")? as usize,
        last: (f32_of("position.last_loss")?, f32_of("position.last_accuracy")?),
    };
    Ok((Pending { stage, pos, ck }, c))
}

impl<'c> Tracker<'c> {
    /// Opens the run's bookkeeping in `cfg.run.out_dir` for `stages` (the stage names this
    /// command runs, in order). With `resume`, loads the training state and checks that it
    /// belongs to this config and to one of `stages`; without, refuses to overwrite one.
    pub fn open(cfg: &Config, stages: Vec<String>, resume: bool, ctl: &'c RunControl) -> Result<Self> {
        let out = cfg.run.out_dir.clone();
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let dir = out.join(STATE_DIR);
        let config = cfg.to_toml();
        let (rows, first_row, results, pending) = if resume {
            let (pending, counters) = load_pending(&dir, &config, &stages)?;
            let (rows, first_row) =
                (bits(&counters, "metrics.rows")? as usize, bits(&counters, "metrics.first_row")? as usize);
            truncate_metrics(&out, rows)?;
            (rows, first_row, results_from_counters(&counters)?, Some(pending))
        } else {
            ensure!(
                !dir.exists() && !dir.with_extension("old").exists(),
                "{} holds the training state of an interrupted run: continue it with --resume, or delete that \
                 directory to start over",
                dir.display()
            );
            let jsonl = out.join("metrics.jsonl");
            let rows = if jsonl.exists() { read_jsonl(&jsonl)?.len() } else { 0 };
            (rows, rows, RunResults::default(), None)
        };
        Ok(Tracker {
            log: MetricsLog::in_dir(&out)?,
            out,
            config,
            seed: cfg.run.seed,
            ctl,
            rows,
            first_row,
            stages,
            pending,
            vocab: Vec::new(),
            results,
        })
    }

    /// The training state's directory.
    pub fn state_dir(&self) -> PathBuf {
        self.out.join(STATE_DIR)
    }

    /// Ends the run: draws its loss and LR curves, removes the training state, returns the
    /// figures.
    pub fn finish(self) -> Result<RunResults> {
        let rows = read_jsonl(&self.out.join("metrics.jsonl"))?;
        curves::draw(&self.out, &rows[self.first_row.min(rows.len())..])?;
        for dir in [self.state_dir(), self.state_dir().with_extension("old")] {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            }
        }
        Ok(self.results)
    }
}

impl StageHooks for Tracker<'_> {
    fn passed(&self, stage: &str) -> bool {
        let Some(p) = &self.pending else { return false };
        let at = |s: &str| self.stages.iter().position(|x| x == s);
        matches!((at(stage), at(&p.stage)), (Some(a), Some(b)) if a < b)
    }

    fn begin(&mut self, stage: &str, named: &[(String, Tensor)], opt: &mut Adam, fresh: Position) -> Result<Position> {
        if self.pending.as_ref().is_none_or(|p| p.stage != stage) {
            return Ok(fresh);
        }
        let p = self.pending.take().expect("checked above");
        let path = p.ck.path.display();
        checkpoint::check_vocab(&self.vocab, &p.ck.vocab)
            .with_context(|| format!("--resume: the training state in {path} was saved with another vocabulary"))?;
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        p.ck.assign_to(&refs)?;
        restore_moments(opt, p.ck.state.as_ref().expect("checked at open"), &p.ck.path)?;
        eprintln!("resuming {stage} after epoch {} and {} batches (state from {path})", p.pos.epoch, p.pos.batch);
        Ok(p.pos)
    }

    fn step_done(&self) -> bool {
        self.ctl.step_done()
    }

    fn stop_requested(&self) -> bool {
        self.ctl.stop_requested()
    }

    fn epoch_done(&mut self, m: &EpochMetrics, named: &[(String, Tensor)], opt: &Adam, pos: &Position) -> Result<()> {
        self.log.append(m)?;
        self.rows += 1;
        self.save(&m.stage, named, opt, pos)
    }

    fn save(&mut self, stage: &str, named: &[(String, Tensor)], opt: &Adam, pos: &Position) -> Result<()> {
        let mut counters = BTreeMap::new();
        let mut tensors = Vec::new();
        save_moments(opt, &mut tensors, &mut counters);
        results_to_counters(&self.results, &mut counters);
        for (k, v) in [
            ("position.loss_sum", pos.loss_sum.to_bits()),
            ("position.steps", pos.steps as u64),
            ("position.last_loss", pos.last.0.to_bits() as u64),
            ("position.last_accuracy", pos.last.1.to_bits() as u64),
            ("metrics.rows", self.rows as u64),
            ("metrics.first_row", self.first_row as u64),
        ] {
            counters.insert(k.to_string(), v);
        }
        let meta = TrainMeta {
            stage: self.stages.iter().position(|s| s == stage).unwrap_or(usize::MAX),
            stage_name: stage.to_string(),
            epoch: pos.epoch,
            step: pos.batch as u64,
            seed: self.seed,
            rng_state: pos.rng.to_vec(),
            counters,
        };
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let dir = self.state_dir();
        checkpoint::save(&dir, &refs, &self.vocab, &self.config, Some(&TrainState { tensors, meta }))
            .with_context(|| format!("saving the training state to {}", dir.display()))?;
        Ok(())
    }

    fn interrupted(&self, stage: &str, epochs: usize, batch: usize) -> anyhow::Error {
        Interrupted { stage: stage.to_string(), epochs, batch, state: self.state_dir() }.into()
    }
}
