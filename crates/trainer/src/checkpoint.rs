//! Checkpoints: a directory holding `model.safetensors` (named f32 tensors), `vocab.txt`,
//! `config.toml` and, for resuming, `train_state.safetensors` (optimizer moments) with
//! `train_state.json` (counters, RNG state).
//!
//! Written atomically: everything goes into `DIR.tmp-<pid>`, the old `DIR` is renamed to
//! `DIR.old`, the new one to `DIR`, then `DIR.old` is removed, so a crash at any point leaves
//! `DIR` or `DIR.old` complete; `load` falls back to `DIR.old`. Each safetensors file carries
//! a checksum of its tensors in its metadata, so flipped bytes are caught, not loaded.
//! `tests/infra_checkpoint.rs` round-trips, truncates, corrupts and deletes files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use ulmfit_tensor::Tensor;
use ulmfit_text::{vocab, SPECIAL_TOKENS};

const MODEL: &str = "model.safetensors";
const VOCAB: &str = "vocab.txt";
const CONFIG: &str = "config.toml";
const STATE_TENSORS: &str = "train_state.safetensors";
const STATE_META: &str = "train_state.json";
const CHECKSUM_KEY: &str = "ulmfit.checksum";

/// What went wrong reading or writing a checkpoint; every variant names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A filesystem operation failed.
    #[error("{path}: cannot {action}: {source}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    /// A file exists but its contents are not what a checkpoint holds.
    #[error("{path}: corrupt checkpoint file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// Neither `DIR` nor `DIR.old` exists.
    #[error("no checkpoint at {0}: no such directory (nor a previous copy beside it, ending in .old); a checkpoint directory holds model.safetensors, vocab.txt and config.toml")]
    Missing(PathBuf),
    /// The caller asked to save something a checkpoint cannot hold.
    #[error("cannot save checkpoint {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// The checkpoint's tensors do not fit the model (every difference listed).
    #[error("checkpoint {path} does not fit the model:\n{details}")]
    Mismatch { path: PathBuf, details: String },
    /// The checkpoint was built with another vocabulary.
    #[error("vocabulary mismatch: {0}")]
    Vocab(String),
}

type Result<T> = std::result::Result<T, CheckpointError>;

/// A named tensor held by value: what a checkpoint stores.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// Name, e.g. `encoder.weight` or `adam.m.3`.
    pub name: String,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Counters and RNG state for resuming, stored as `train_state.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainMeta {
    /// Index of the stage (pretrain / fine-tune / unfreezing stage) being run.
    pub stage: usize,
    /// Name of that stage (`pretrain`, `finetune-lm`, `classifier-2`, ...).
    #[serde(default)]
    pub stage_name: String,
    /// Epochs finished within the stage.
    pub epoch: usize,
    /// Batches done within epoch `epoch` (0 at an epoch boundary).
    pub step: u64,
    /// The run's seed.
    pub seed: u64,
    /// The RNG's internal state words, to continue the same stream.
    pub rng_state: Vec<u64>,
    /// Anything else the trainer counts (e.g. `adam.steps.3`), by name.
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

/// Everything needed to resume training besides the weights.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainState {
    /// Optimizer moments and other state tensors.
    pub tensors: Vec<NamedTensor>,
    /// Counters and RNG state.
    pub meta: TrainMeta,
}

/// A loaded checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The directory it was read from (`DIR`, or `DIR.old` after an interrupted save).
    pub path: PathBuf,
    /// The model's tensors, sorted by name.
    pub tensors: Vec<NamedTensor>,
    /// The vocabulary, index order.
    pub vocab: Vec<String>,
    /// The config text as saved.
    pub config: String,
    /// Training state, when the checkpoint was saved for resuming.
    pub state: Option<TrainState>,
}

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io { path: path.to_path_buf(), action, source }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt { path: path.to_path_buf(), reason: reason.into() }
}

/// `DIR` with `suffix` appended to its last component (`runs/x/` gives `runs/x.old`).
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut s = dir.components().as_path().as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// FNV-1a over names and little-endian values, in name order: detects flipped bytes.
fn checksum<'a>(tensors: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, data) in sorted {
        eat(name.as_bytes());
        eat(&(data.len() as u64).to_le_bytes());
        eat(data);
    }
    format!("{h:016x}")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(io_err(path, "create"))?;
    f.write_all(bytes).map_err(io_err(path, "write"))?;
    f.sync_all().map_err(io_err(path, "sync"))
}

/// Writes named tensors (`(name, shape, data)`) as an f32 safetensors file with a checksum.
fn write_tensors(path: &Path, tensors: &[(&str, &[usize], &[f32])]) -> Result<()> {
    let mut seen = HashSet::new();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|&(name, shape, data)| {
            if !seen.insert(name) {
                return Err(CheckpointError::Invalid {
                    path: path.into(),
                    reason: format!("tensor name {name:?} given twice"),
                });
            }
            Ok((name.to_string(), shape.to_vec(), data.iter().flat_map(|x| x.to_le_bytes()).collect()))
        })
        .collect::<Result<_>>()?;
    let sum = checksum(bytes.iter().map(|(n, _, b)| (n.as_str(), b.as_slice())));
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            Ok((n.as_str(), TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| corrupt(path, e.to_string()))?))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = Some(HashMap::from([(CHECKSUM_KEY.to_string(), sum)]));
    let buf = safetensors::serialize(views, &meta)
        .map_err(|e| CheckpointError::Invalid { path: path.into(), reason: e.to_string() })?;
    write_file(path, &buf)
}

/// Reads an f32 safetensors file written by `write_tensors`, checking its checksum.
fn read_tensors(path: &Path) -> Result<Vec<NamedTensor>> {
    let buf = fs::read(path).map_err(io_err(path, "read"))?;
    let bad = |e: safetensors::SafeTensorError| corrupt(path, format!("{e:?} (truncated or not a safetensors file)"));
    let (_, meta) = SafeTensors::read_metadata(&buf).map_err(bad)?;
    let st = SafeTensors::deserialize(&buf).map_err(bad)?;
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let want = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CHECKSUM_KEY))
        .ok_or_else(|| corrupt(path, "no checksum in metadata"))?;
    let got = checksum(views.iter().map(|(n, v)| (n.as_str(), v.data())));
    if &got != want {
        return Err(corrupt(path, format!("checksum {got} does not match the stored {want}: the data was altered")));
    }
    views
        .into_iter()
        .map(|(name, v)| {
            if v.dtype() != Dtype::F32 {
                return Err(corrupt(path, format!("tensor {name:?} has dtype {:?}, expected F32", v.dtype())));
            }
            let data = v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Ok(NamedTensor { name, shape: v.shape().to_vec(), data })
        })
        .collect()
}

/// Reads `vocab.txt`: one token per line, escaped as `ulmfit_text::Vocab::save` writes it,
/// starting with `xxunk`, `xxpad` (or empty: a checkpoint without vocabulary).
fn read_vocab(path: &Path) -> Result<Vec<String>> {
    let text = fs::read(path).map_err(io_err(path, "read"))?;
    let text = String::from_utf8(text)
        .map_err(|e| corrupt(path, format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to())))?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let body = text.strip_suffix('\n').ok_or_else(|| corrupt(path, "last line has no newline (truncated?)"))?;
    let itos: Vec<String> = body.split('\n').map(vocab::unescape).collect();
    // Unknown and padding tokens have fixed ids; fastai v1 vocabularies (wt103) order the
    // other special tokens differently, which is fine: they are looked up by name.
    let (unk, pad) = (SPECIAL_TOKENS[vocab::UNK_ID as usize], SPECIAL_TOKENS[vocab::PAD_ID as usize]);
    if itos.len() < 2 || itos[vocab::UNK_ID as usize] != unk || itos[vocab::PAD_ID as usize] != pad {
        return Err(corrupt(path, format!("a vocabulary starts with {unk} and {pad} (ids 0 and 1)")));
    }
    Ok(itos)
}

/// Writes a checkpoint into `dir` atomically (see the module docs). `tensors` are the model's
/// named weights; `config` is stored verbatim as `config.toml`.
pub fn save(
    dir: &Path,
    tensors: &[(&str, &Tensor)],
    vocab: &[String],
    config: &str,
    state: Option<&TrainState>,
) -> Result<()> {
    let tmp = sibling(dir, &format!(".tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp, "remove stale temporary directory"))?;
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent, "create directory"))?;
    }
    fs::create_dir(&tmp).map_err(io_err(&tmp, "create directory"))?;
    let written = write_all(&tmp, tensors, vocab, config, state);
    if written.is_err() {
        let _ = fs::remove_dir_all(&tmp); // the error being returned matters more
    }
    written?;
    swap_in(dir, &tmp)
}

/// Writes the checkpoint files into the (new, empty) directory `tmp`.
fn write_all(
    tmp: &Path,
    tensors: &[(&str, &Tensor)],
    vocab: &[String],
    config: &str,
    state: Option<&TrainState>,
) -> Result<()> {
    let guards: Vec<_> = tensors.iter().map(|(_, t)| t.data()).collect();
    let model: Vec<_> = tensors.iter().zip(&guards).map(|((n, t), d)| (*n, t.shape(), d.as_slice())).collect();
    write_tensors(&tmp.join(MODEL), &model)?;
    drop(guards);
    let mut text = String::new();
    vocab.iter().for_each(|t| {
        text.push_str(&vocab::escape(t));
        text.push('\n');
    });
    write_file(&tmp.join(VOCAB), text.as_bytes())?;
    write_file(&tmp.join(CONFIG), config.as_bytes())?;
    if let Some(st) = state {
        let named: Vec<_> =
            st.tensors.iter().map(|t| (t.name.as_str(), t.shape.as_slice(), t.data.as_slice())).collect();
        write_tensors(&tmp.join(STATE_TENSORS), &named)?;
        let json = serde_json::to_string_pretty(&st.meta).expect("TrainMeta serializes");
        write_file(&tmp.join(STATE_META), json.as_bytes())?;
    }
    Ok(())
}

/// Replaces `dir` by `tmp` so that `dir` or `dir.old` is complete at every instant.
fn swap_in(dir: &Path, tmp: &Path) -> Result<()> {
    let old = sibling(dir, ".old");
    if dir.exists() {
        if old.exists() {
            fs::remove_dir_all(&old).map_err(io_err(&old, "remove"))?;
        }
        fs::rename(dir, &old).map_err(io_err(dir, "rename to .old"))?;
    }
    fs::rename(tmp, dir).map_err(io_err(tmp, "rename into place"))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io_err(&old, "remove"))?;
    }
    Ok(())
}

/// Loads the checkpoint in `dir`, or in `dir.old` if a save was interrupted before `dir` existed.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let old = sibling(dir, ".old");
    let path = if dir.is_dir() {
        dir.to_path_buf()
    } else if old.is_dir() {
        old
    } else {
        return Err(CheckpointError::Missing(dir.to_path_buf()));
    };
    let tensors = read_tensors(&path.join(MODEL))?;
    let vocab = read_vocab(&path.join(VOCAB))?;
    let cfg = path.join(CONFIG);
    let config = fs::read(&cfg).map_err(io_err(&cfg, "read"))?;
    let config = String::from_utf8(config).map_err(|_| corrupt(&cfg, "not UTF-8"))?;
    let (st, meta) = (path.join(STATE_TENSORS), path.join(STATE_META));
    let state = match (st.exists(), meta.exists()) {
        (false, false) => None,
        (true, false) => return Err(corrupt(&meta, "missing, but train_state.safetensors is present")),
        (false, true) => return Err(corrupt(&st, "missing, but train_state.json is present")),
        (true, true) => {
            let text = fs::read_to_string(&meta).map_err(io_err(&meta, "read"))?;
            let meta = serde_json::from_str(&text).map_err(|e| corrupt(&meta, e.to_string()))?;
            Some(TrainState { tensors: read_tensors(&st)?, meta })
        }
    };
    Ok(Checkpoint { path, tensors, vocab, config, state })
}

impl Checkpoint {
    /// Copies the stored values into the model's tensors, matched by name. Refuses, changing
    /// nothing, unless names and shapes match exactly; the error lists every missing name,
    /// unexpected name and shape mismatch.
    pub fn assign_to(&self, named: &[(&str, &Tensor)]) -> Result<()> {
        let stored: HashMap<&str, &NamedTensor> = self.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let wanted: HashSet<&str> = named.iter().map(|(n, _)| *n).collect();
        let mut problems = Vec::new();
        for (name, t) in named {
            match stored.get(name) {
                None => problems.push(format!("missing in checkpoint: {name} (model shape {:?})", t.shape())),
                Some(s) if s.shape != t.shape() => problems.push(format!(
                    "shape mismatch: {name}: model expects {:?}, checkpoint has {:?}",
                    t.shape(),
                    s.shape
                )),
                Some(_) => {}
            }
        }
        for t in &self.tensors {
            if !wanted.contains(t.name.as_str()) {
                problems.push(format!("unexpected in checkpoint: {} (shape {:?})", t.name, t.shape));
            }
        }
        if !problems.is_empty() {
            return Err(CheckpointError::Mismatch { path: self.path.clone(), details: problems.join("\n") });
        }
        for (name, t) in named {
            t.data_mut().copy_from_slice(&stored[name].data);
        }
        Ok(())
    }
}

/// Checks that a checkpoint's vocabulary (`found`) is the model's (`expected`); the error says
/// how they differ: sizes and the first differing index with both tokens.
pub fn check_vocab(expected: &[String], found: &[String]) -> Result<()> {
    let first = expected.iter().zip(found).position(|(a, b)| a != b);
    if first.is_none() && expected.len() == found.len() {
        return Ok(());
    }
    let mut msg = format!("expected {} tokens, checkpoint has {}", expected.len(), found.len());
    match first {
        Some(i) => msg += &format!("; first difference at index {i}: expected {:?}, found {:?}", expected[i], found[i]),
        None => msg += &format!("; the first {} tokens agree", expected.len().min(found.len())),
    }
    Err(CheckpointError::Vocab(msg))
}
