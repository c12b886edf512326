//! Helpers shared by the trainer's integration tests.

use std::path::PathBuf;

/// The datasets folder: `$ULMFIT_DATA`, else `shared/data` beside the checkout.
pub fn data_dir() -> PathBuf {
    std::env::var_os("ULMFIT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")))
}
