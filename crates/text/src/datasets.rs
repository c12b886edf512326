//! Loaders for the formats of the real datasets (see shared/data/README.md) and for what users
//! bring: WikiText/PTB token files, TREC's Latin-1 label format, IMDb's `aclImdb` layout (from the
//! .tar.gz or a folder), fastai CSV (`label,text,is_valid`), generic CSV/TSV with named columns and
//! one folder per class. Checked against the README counts by `tests/datasets.rs`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::csv;
use crate::error::{io_err, read_utf8, utf8, Result, TextError};

/// One labelled (or unlabelled) text.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Raw text, before tokenisation.
    pub text: String,
    /// Class label, if the dataset has one.
    pub label: Option<String>,
}

/// Reads a pre-tokenised LM file (WikiText, PTB): whitespace-split words plus `eos` after each line.
pub fn load_lm_tokens(path: &Path, eos: &str) -> Result<Vec<String>> {
    let text = read_utf8(path)?;
    let mut toks = Vec::with_capacity(text.len() / 5);
    for line in text.lines() {
        toks.extend(line.split_whitespace().map(str::to_string));
        toks.push(eos.to_string());
    }
    if toks.is_empty() {
        return Err(empty(path, "no lines"));
    }
    Ok(toks)
}

/// Reads a TREC file (ISO-8859-1, `COARSE:fine question` per line). The label is `COARSE:fine`.
pub fn load_trec(path: &Path) -> Result<Vec<Document>> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    // Latin-1: every byte is the code point of the same value.
    let text: String = bytes.iter().map(|&b| b as char).collect();
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (label, question) = line.split_once(' ').ok_or_else(|| TextError::Format {
            path: path.to_path_buf(),
            line: i + 1,
            msg: "expected `LABEL question`".into(),
        })?;
        if !label.contains(':') {
            return Err(TextError::Format {
                path: path.to_path_buf(),
                line: i + 1,
                msg: format!("label {label:?} is not COARSE:fine"),
            });
        }
        docs.push(Document { text: question.to_string(), label: Some(label.to_string()) });
    }
    if docs.is_empty() {
        return Err(empty(path, "no questions"));
    }
    Ok(docs)
}

/// The coarse TREC class (`NUM` of `NUM:dist`).
pub fn trec_coarse(label: &str) -> &str {
    label.split(':').next().unwrap_or(label)
}

/// Options for [`load_csv`].
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Field separator (`,` or `\t`).
    pub delimiter: char,
    /// RFC 4180 quoting (off for GLUE TSVs).
    pub quoting: bool,
    /// Whether the first record names the columns; without it columns are named "0", "1", ...
    pub header: bool,
    /// Name of the text column.
    pub text_col: String,
    /// Name of the label column, if any.
    pub label_col: Option<String>,
}

impl CsvOptions {
    /// CSV with a header, text in `text_col`, labels in `label_col`.
    pub fn csv(text_col: &str, label_col: Option<&str>) -> Self {
        CsvOptions {
            delimiter: ',',
            quoting: true,
            header: true,
            text_col: text_col.into(),
            label_col: label_col.map(Into::into),
        }
    }
}

/// A parsed delimited file with named columns.
struct Table {
    names: Vec<String>,
    rows: Vec<csv::Record>,
}

impl Table {
    fn read(path: &Path, delimiter: char, quoting: bool, header: bool) -> Result<Table> {
        let text = read_utf8(path)?;
        let mut rows = csv::parse(&text, delimiter, quoting, path)?;
        let names = if header && !rows.is_empty() {
            rows.remove(0).fields
        } else {
            (0..rows.first().map_or(0, |r| r.fields.len())).map(|i| i.to_string()).collect()
        };
        if rows.is_empty() {
            return Err(empty(path, "no data rows"));
        }
        for r in &rows {
            if r.fields.len() != names.len() {
                return Err(TextError::Format {
                    path: path.to_path_buf(),
                    line: r.line,
                    msg: format!("{} fields, header has {}", r.fields.len(), names.len()),
                });
            }
        }
        Ok(Table { names, rows })
    }

    fn col(&self, path: &Path, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).ok_or_else(|| TextError::MissingColumn {
            path: path.to_path_buf(),
            column: name.to_string(),
            columns: self.names.join(", "),
        })
    }
}

/// Loads a CSV/TSV with named (or, without header, numbered) columns.
pub fn load_csv(path: &Path, opts: &CsvOptions) -> Result<Vec<Document>> {
    let table = Table::read(path, opts.delimiter, opts.quoting, opts.header)?;
    let t = table.col(path, &opts.text_col)?;
    let l = match &opts.label_col {
        Some(name) => Some(table.col(path, name)?),
        None => None,
    };
    let mut docs = Vec::with_capacity(table.rows.len());
    for mut r in table.rows {
        let label = l.map(|l| std::mem::take(&mut r.fields[l]));
        if label.as_deref() == Some("") {
            return Err(TextError::Format { path: path.to_path_buf(), line: r.line, msg: "empty label".into() });
        }
        docs.push(Document { text: std::mem::take(&mut r.fields[t]), label });
    }
    Ok(docs)
}

/// Loads a fastai-style CSV (`label,text,is_valid`) as (train, valid).
pub fn load_fastai_csv(path: &Path) -> Result<(Vec<Document>, Vec<Document>)> {
    let table = Table::read(path, ',', true, true)?;
    let (l, t, v) = (table.col(path, "label")?, table.col(path, "text")?, table.col(path, "is_valid")?);
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for mut r in table.rows {
        let is_valid = match r.fields[v].as_str() {
            "True" | "true" | "1" => true,
            "False" | "false" | "0" => false,
            other => {
                return Err(TextError::Format {
                    path: path.to_path_buf(),
                    line: r.line,
                    msg: format!("is_valid is {other:?}, expected True/False"),
                })
            }
        };
        let doc = Document { text: std::mem::take(&mut r.fields[t]), label: Some(std::mem::take(&mut r.fields[l])) };
        if is_valid {
            valid.push(doc)
        } else {
            train.push(doc)
        }
    }
    Ok((train, valid))
}

/// The labelled IMDb reviews (`aclImdb/{train,test}/{pos,neg}/*.txt`), in the order
/// [`for_each_imdb`] gives them: sorted by path from a folder, archive order from a `.tar.gz`.
#[derive(Debug, Default)]
pub struct Imdb {
    /// Training reviews (25,000 in the full dataset).
    pub train: Vec<Document>,
    /// Test reviews (25,000 in the full dataset).
    pub test: Vec<Document>,
}

/// Split and label of an `aclImdb/<split>/<pos|neg>/<id>_<rating>.txt` path.
fn imdb_role(p: &Path) -> Option<(bool, &'static str)> {
    let parts: Vec<_> = p.components().map(|c| c.as_os_str().to_str().unwrap_or("")).collect();
    let n = parts.len();
    if n < 3 || !parts[n - 1].ends_with(".txt") {
        return None;
    }
    let label = match parts[n - 2] {
        "pos" => "pos",
        "neg" => "neg",
        _ => return None,
    };
    match parts[n - 3] {
        "train" => Some((true, label)),
        "test" => Some((false, label)),
        _ => None,
    }
}

/// Decodes one review if `p` is a labelled review path and hands it to `f`.
fn push_imdb(f: &mut impl FnMut(bool, Document) -> Result<()>, p: &Path, bytes: Vec<u8>, shown: &Path) -> Result<()> {
    match imdb_role(p) {
        Some((train, label)) => f(train, Document { text: utf8(bytes, shown)?, label: Some(label.into()) }),
        None => Ok(()),
    }
}

/// Loads IMDb from `aclImdb_*.tar.gz` (streamed, never extracted) or an extracted folder.
pub fn load_imdb(path: &Path) -> Result<Imdb> {
    let mut imdb = Imdb::default();
    for_each_imdb(path, |train, doc| {
        if train {
            imdb.train.push(doc)
        } else {
            imdb.test.push(doc)
        }
        Ok(())
    })?;
    Ok(imdb)
}

/// Streams IMDb reviews to `f(is_train, doc)` without holding them all: from a folder in sorted
/// path order, from a `.tar.gz` in the order the archive stores them.
pub fn for_each_imdb(path: &Path, mut f: impl FnMut(bool, Document) -> Result<()>) -> Result<()> {
    let mut n = 0usize;
    let mut count = |train: bool, doc: Document| {
        n += 1;
        f(train, doc)
    };
    if path.is_dir() {
        let mut files = Vec::new();
        for split in ["train", "test"] {
            for label in ["neg", "pos"] {
                let dir = path.join(split).join(label);
                for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
                    files.push(e.map_err(io_err(&dir))?.path());
                }
            }
        }
        files.sort();
        for file in files {
            let bytes = fs::read(&file).map_err(io_err(&file))?;
            push_imdb(&mut count, &file, bytes, &file)?;
        }
    } else {
        let file = fs::File::open(path).map_err(io_err(path))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for entry in archive.entries().map_err(io_err(path))? {
            let mut entry = entry.map_err(io_err(path))?;
            let p: PathBuf = entry.path().map_err(io_err(path))?.into_owned();
            if imdb_role(&p).is_none() {
                continue;
            }
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(io_err(path))?;
            push_imdb(&mut count, &p, bytes, &path.join(&p))?;
        }
    }
    if n == 0 {
        return Err(empty(path, "no aclImdb/{train,test}/{pos,neg}/*.txt reviews"));
    }
    Ok(())
}

/// Loads one folder per class: `root/<label>/*` (text files, sorted), label = folder name.
pub fn load_folder(root: &Path) -> Result<Vec<Document>> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .map_err(io_err(root))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut docs = Vec::new();
    for dir in dirs {
        let label = dir.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            docs.push(Document { text: read_utf8(&f)?, label: Some(label.clone()) });
        }
    }
    if docs.is_empty() {
        return Err(empty(root, "no class folders with files"));
    }
    Ok(docs)
}

fn empty(path: &Path, what: &str) -> TextError {
    TextError::Empty { path: path.to_path_buf(), what: format!("empty dataset: {what}") }
}
