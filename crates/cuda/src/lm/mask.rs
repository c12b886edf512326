//! The dropout masks of the LM step, drawn from a counter-based hash of (seed, step, mask,
//! element index): the bit-for-bit twin of `kernels/lm_hash.cu`, used by the CPU reference
//! (`super::reference`) so that dropout-on steps compare exactly, and by `tests/lm_on_cpu.rs` and `tests/lm_replay.rs`.
//!
//! Integer arithmetic only until the final 24-bit draw becomes a float, so host and device
//! agree exactly; no state is kept, so a mask is never stored: the backward redraws it.

/// Which mask a draw belongs to (the `tensor` argument of the kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// Embedding dropout: one draw per vocabulary row (index = word id).
    Word,
    /// Input dropout on the embedding output: a [B, E] mask shared by every step.
    Input,
    /// DropConnect on layer `l`'s W_hh: one draw per weight, index k of [4H, H].
    Weight(usize),
    /// Hidden dropout on layer `l`'s output (l below the top): a [B, H] mask.
    Hidden(usize),
    /// Output dropout on the top layer's output: a [B, E] mask.
    Output,
}

impl Mask {
    /// The id the kernels hash (distinct for every mask of a model with < 1000 layers).
    pub fn id(self) -> u32 {
        match self {
            Mask::Word => 0,
            Mask::Input => 1,
            Mask::Output => 2,
            Mask::Weight(l) => 1000 + l as u32,
            Mask::Hidden(l) => 2000 + l as u32,
        }
    }
}

/// splitmix64's finaliser (`lm_mix`).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of mask `tensor` at optimizer step `step` (`lm_mask_key`).
pub fn mask_key(seed: u64, step: u32, tensor: u32) -> u64 {
    let s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(step as u64 + 1));
    mix(mix(s) ^ (tensor as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// The draw in [0, 1) of element `index` (exact multiples of 2^-24).
pub fn unit(key: u64, index: u64) -> f32 {
    let z = mix(key ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x632B_E59B_D9B4_E019));
    (z >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// Multiplier of element `index`: 0 (dropped, probability `p`) or 1 / (1 - p) (`lm_keep_scale`).
pub fn keep_scale(key: u64, index: u64, p: f32) -> f32 {
    if unit(key, index) < p {
        0.0
    } else {
        1.0 / (1.0 - p)
    }
}

/// The whole mask: multiplier of each of `n` elements of mask `m` at `step`.
pub fn scales(seed: u64, step: u32, m: Mask, n: usize, p: f32) -> Vec<f32> {
    let key = mask_key(seed, step, m.id());
    (0..n as u64).map(|k| keep_scale(key, k, p)).collect()
}
