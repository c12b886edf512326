//! Error type of the text pipeline: every variant names the file (and line) it is about.

use std::path::PathBuf;

/// Errors from loaders, vocabulary files, the token cache and downloads.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A file could not be opened, read or written.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        err: std::io::Error,
    },
    /// A file is not valid UTF-8 (line is 1-based).
    #[error("{path}:{line}: invalid UTF-8 (byte offset {offset})")]
    Utf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// A file does not follow its format.
    #[error("{path}:{line}: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 for binary files).
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A requested column is not in the header.
    #[error("{path}: no column {column:?} (columns: {columns})")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The columns the file has, comma separated.
        columns: String,
    },
    /// The input holds no documents (or no labels where labels are needed).
    #[error("{path}: {what}")]
    Empty {
        /// The file or directory.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// Arguments that cannot work (e.g. an unknown dataset name, a corpus smaller than one batch).
    #[error("{0}")]
    Invalid(String),
    /// A download failed or its checksum did not match.
    #[error("download {url}: {msg}")]
    Download {
        /// The address.
        url: String,
        /// What went wrong.
        msg: String,
    },
}

/// Result with [`TextError`].
pub type Result<T> = std::result::Result<T, TextError>;

/// Wraps an I/O error with its path.
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TextError + '_ {
    move |err| TextError::Io { path: path.to_path_buf(), err }
}

/// Reads a whole file as UTF-8, reporting the line of the first invalid byte.
pub fn read_utf8(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    utf8(bytes, path)
}

/// Checks `bytes` is UTF-8; the error names `path` and the line of the first bad byte.
pub(crate) fn utf8(bytes: Vec<u8>, path: &std::path::Path) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count();
        TextError::Utf8 { path: path.to_path_buf(), line, offset }
    })
}
