//! FxHash (the rustc hasher): a fast, non-cryptographic hasher for the short strings of the
//! special-case table and the token interner. Deterministic; no DoS protection needed here.

use std::hash::{BuildHasherDefault, Hasher};

/// FxHash-style hasher (rustc's): fast for the short token strings of the interner.
#[derive(Default)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `HashMap` hasher builder using [`FxHasher`].
pub type FxBuildHasher = BuildHasherDefault<FxHasher>;
