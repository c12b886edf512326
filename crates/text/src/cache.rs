//! On-disk cache of tokenised + numericalised corpora, so a second run skips tokenisation.
//!
//! The key is an FNV-1a hash of each input's path, size and mtime, the caller's settings string
//! and this crate's version, so a changed input or setting misses instead of going stale. A
//! cache entry is `<key>.vocab` (one token per line) and `<key>.ids`, a flat little-endian u32
//! file: `MAGIC, VERSION, n_docs, n_ids, offsets[n_docs + 1], ids[n_ids]`, read back with
//! bytemuck. Files are written to a temporary name and renamed. Checked by `tests/cache.rs`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::corpus::Corpus;
use crate::error::{io_err, Result, TextError};
use crate::vocab::Vocab;

const MAGIC: u32 = 0x554c_4d54; // "ULMT"
const VERSION: u32 = 1;

/// FNV-1a, 64 bit.
fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Cache key of `inputs` (path, size, mtime) under `settings`.
pub fn cache_key(inputs: &[&Path], settings: &str) -> Result<String> {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    h = fnv1a(h, env!("CARGO_PKG_VERSION").as_bytes());
    h = fnv1a(h, settings.as_bytes());
    for p in inputs {
        let meta = fs::metadata(p).map_err(io_err(p))?;
        let mtime =
            meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        let abs = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        h = fnv1a(h, abs.to_string_lossy().as_bytes());
        h = fnv1a(h, &meta.len().to_le_bytes());
        h = fnv1a(h, &mtime.to_le_bytes());
    }
    Ok(format!("{h:016x}"))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Writes `corpus` as a flat u32 file.
pub fn save_ids(path: &Path, corpus: &Corpus) -> Result<()> {
    let too_big =
        |what: &str| TextError::Format { path: path.to_path_buf(), line: 0, msg: format!("{what} exceed u32") };
    let n_docs = u32::try_from(corpus.len()).map_err(|_| too_big("documents"))?;
    let n_ids = u32::try_from(corpus.ids.len()).map_err(|_| too_big("token ids"))?;
    let mut words = Vec::with_capacity(4 + corpus.offsets.len() + corpus.ids.len());
    words.extend([MAGIC, VERSION, n_docs, n_ids]);
    words.extend(corpus.offsets.iter().map(|&o| o as u32));
    words.extend_from_slice(&corpus.ids);
    if cfg!(target_endian = "big") {
        words.iter_mut().for_each(|w| *w = w.to_le());
    }
    write_atomic(path, bytemuck::cast_slice(&words))
}

/// Reads a file written by [`save_ids`].
pub fn load_ids(path: &Path) -> Result<Corpus> {
    let bad = |msg: String| TextError::Format { path: path.to_path_buf(), line: 0, msg };
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len() as usize;
    if len & 3 != 0 || len < 16 {
        return Err(bad(format!("{len} bytes is not a u32 id file")));
    }
    let mut words = vec![0u32; len / 4];
    f.read_exact(bytemuck::cast_slice_mut(&mut words)).map_err(io_err(path))?;
    words.iter_mut().for_each(|w| *w = u32::from_le(*w));
    let (n_docs, n_ids) = (words[2] as usize, words[3] as usize);
    if words[0] != MAGIC || words[1] != VERSION || words.len() != 4 + n_docs + 1 + n_ids {
        return Err(bad("not a token-id cache of this version".into()));
    }
    let offsets: Vec<usize> = words[4..5 + n_docs].iter().map(|&o| o as usize).collect();
    if offsets.windows(2).any(|w| w[0] > w[1]) || offsets.last() != Some(&n_ids) {
        return Err(bad("document offsets are corrupt".into()));
    }
    words.drain(..5 + n_docs);
    Ok(Corpus { ids: words, offsets })
}

/// Returns the cached (vocab, corpus) for `key` in `dir`, or builds, stores and returns it.
/// The flag is true on a cache hit.
pub fn load_or_build(
    dir: &Path,
    key: &str,
    build: impl FnOnce() -> Result<(Vocab, Corpus)>,
) -> Result<(Vocab, Corpus, bool)> {
    let (ids_path, vocab_path): (PathBuf, PathBuf) = (dir.join(format!("{key}.ids")), dir.join(format!("{key}.vocab")));
    if ids_path.exists() && vocab_path.exists() {
        if let (Ok(v), Ok(c)) = (Vocab::load(&vocab_path), load_ids(&ids_path)) {
            return Ok((v, c, true));
        }
    }
    let (vocab, corpus) = build()?;
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    save_ids(&ids_path, &corpus)?;
    let tmp = vocab_path.with_extension("vocab.tmp");
    vocab.save(&tmp)?;
    fs::rename(&tmp, &vocab_path).map_err(io_err(&vocab_path))?;
    Ok((vocab, corpus, false))
}
