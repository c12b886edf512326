//! Shared helpers for the text crate's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared data directory (`$ULMFIT_DATA`, default `<workspace>/../shared/data`), or `None`
/// after printing a skip line when it is missing.
pub fn data_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("ULMFIT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    if dir.join("README.md").exists() {
        Some(dir)
    } else {
        println!("SKIP {test}: data dir {} not found (set ULMFIT_DATA)", dir.display());
        None
    }
}

/// A fresh scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("ulmfit-text-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
