//! Per-epoch metrics, appended as one row to a CSV (for plotting and spreadsheets) and one
//! line to a JSONL file (for scripts), flushed after every row so a killed run keeps them.
//! `tests/infra_metrics.rs` writes rows, reopens (resume) and reads them back.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One epoch's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Phase name, e.g. `pretrain`, `finetune-lm`, `classifier-1`.
    pub stage: String,
    /// Epoch within the stage, from 1.
    pub epoch: usize,
    /// Optimizer steps so far within the stage.
    pub step: u64,
    /// Mean training loss over the epoch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_loss: f64,
    /// Validation loss, when the stage validates.
    pub valid_loss: Option<f64>,
    /// Validation accuracy (classifier, or LM next-token accuracy).
    pub accuracy: Option<f64>,
    /// Validation perplexity (language models).
    pub perplexity: Option<f64>,
    /// Learning rate of the top group at the end of the epoch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
    /// Wall-clock seconds of the epoch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub seconds: f64,
    /// Training tokens per second.
    #[serde(deserialize_with = "f64_or_nan")]
    pub tokens_per_s: f64,
}

const HEADER: &str = "stage,epoch,step,train_loss,valid_loss,accuracy,perplexity,lr,seconds,tokens_per_s";

/// Error naming the metrics file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {what}")]
pub struct MetricsError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    pub what: String,
}

fn err(path: &Path, what: impl std::fmt::Display) -> MetricsError {
    MetricsError { path: path.to_path_buf(), what: what.to_string() }
}

/// Appends rows to `<csv>` and `<jsonl>`.
pub struct MetricsLog {
    csv: (PathBuf, File),
    jsonl: (PathBuf, File),
}

fn open_append(path: &Path) -> Result<File, MetricsError> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create directory: {e}")))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| err(path, format!("cannot open for appending: {e}")))
}

/// serde_json writes NaN and infinities as null; read them back as NaN.
fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Option::<f64>::deserialize(d).map(|x| x.unwrap_or(f64::NAN))
}

/// A CSV field: empty for a missing value.
fn opt(x: Option<f64>) -> String {
    x.map_or(String::new(), |v| v.to_string())
}

impl MetricsLog {
    /// Opens both files for appending (creating them and their directories); writes the CSV
    /// header only when the CSV is new or empty, so a resumed run continues the same table.
    pub fn open(csv: &Path, jsonl: &Path) -> Result<Self, MetricsError> {
        let mut csv_file = open_append(csv)?;
        let len = csv_file.metadata().map_err(|e| err(csv, e))?.len();
        if len == 0 {
            writeln!(csv_file, "{HEADER}").and_then(|_| csv_file.flush()).map_err(|e| err(csv, e))?;
        }
        Ok(MetricsLog { csv: (csv.to_path_buf(), csv_file), jsonl: (jsonl.to_path_buf(), open_append(jsonl)?) })
    }

    /// `metrics.csv` and `metrics.jsonl` in `dir`.
    pub fn in_dir(dir: &Path) -> Result<Self, MetricsError> {
        MetricsLog::open(&dir.join("metrics.csv"), &dir.join("metrics.jsonl"))
    }

    /// Appends one row to both files and flushes them.
    pub fn append(&mut self, m: &EpochMetrics) -> Result<(), MetricsError> {
        let stage = if m.stage.contains([',', '"', '\n']) {
            format!("\"{}\"", m.stage.replace('"', "\"\""))
        } else {
            m.stage.clone()
        };
        let row = format!(
            "{stage},{},{},{},{},{},{},{},{},{}",
            m.epoch,
            m.step,
            m.train_loss,
            opt(m.valid_loss),
            opt(m.accuracy),
            opt(m.perplexity),
            m.lr,
            m.seconds,
            m.tokens_per_s
        );
        let (path, f) = &mut self.csv;
        writeln!(f, "{row}").and_then(|_| f.flush()).map_err(|e| err(path, e))?;
        // serde_json writes non-finite floats (a diverged loss) as null.
        let line = serde_json::to_string(m).expect("EpochMetrics serializes");
        let (path, f) = &mut self.jsonl;
        writeln!(f, "{line}").and_then(|_| f.flush()).map_err(|e| err(path, e))
    }
}

/// Reads every row of a metrics JSONL file (for plotting a run, resumed parts included).
/// A null loss (written for NaN) reads back as NaN.
pub fn read_jsonl(path: &Path) -> Result<Vec<EpochMetrics>, MetricsError> {
    let f = File::open(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
    let mut rows = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| err(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str(&line).map_err(|e| err(path, format!("line {}: {e}", i + 1)))?;
        rows.push(row);
    }
    Ok(rows)
}
