//! Shared by the CUDA tests: random layers and LM batches, the comparison that fails loudly, the GPU and NVRTC skips.
#![allow(dead_code)] // each test file uses a different subset

use ulmfit_cuda::lm::{LmConfig, PAD};
use ulmfit_lstm::{LstmDims, LstmParams};

/// Deterministic uniform floats in [-scale, scale) (64-bit LCG; no rand dependency).
pub fn uniform(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A random layer and its inputs: PyTorch's init range 1/sqrt(H) for weights.
pub struct Case {
    pub d: LstmDims,
    pub w_ih: Vec<f32>,
    pub w_hh: Vec<f32>,
    pub b_ih: Vec<f32>,
    pub b_hh: Vec<f32>,
    pub x: Vec<f32>,
    pub h0: Vec<f32>,
    pub c0: Vec<f32>,
    pub dy: Vec<f32>,
    pub dh_n: Vec<f32>,
    pub dc_n: Vec<f32>,
}

impl Case {
    pub fn new(t: usize, b: usize, i: usize, h: usize, seed: u64) -> Case {
        let d = LstmDims { t, b, i, h };
        let k = 1.0 / (h as f32).sqrt();
        Case {
            d,
            w_ih: uniform(4 * h * i, k, seed),
            w_hh: uniform(4 * h * h, k, seed + 1),
            b_ih: uniform(4 * h, k, seed + 2),
            b_hh: uniform(4 * h, k, seed + 3),
            x: uniform(t * b * i, 1.0, seed + 4),
            h0: uniform(b * h, 0.5, seed + 5),
            c0: uniform(b * h, 0.5, seed + 6),
            dy: uniform(t * b * h, 1.0, seed + 7),
            dh_n: uniform(b * h, 1.0, seed + 8),
            dc_n: uniform(b * h, 1.0, seed + 9),
        }
    }

    pub fn params(&self) -> LstmParams<'_> {
        LstmParams { w_ih: &self.w_ih, w_hh: &self.w_hh, b_ih: &self.b_ih, b_hh: &self.b_hh }
    }
}

/// Asserts |got - want| <= atol + rtol * |want| elementwise, with atol = atol_rel * max|want|
/// (so sums of many terms are judged on their scale); prints the max difference and the
/// first bad index. NaN never passes.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol_rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs reference {}", got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let atol = atol_rel * scale.max(1e-6);
    let (mut max_diff, mut max_at, mut first_bad) = (0.0f32, 0, None);
    for (k, (&a, &b)) in got.iter().zip(want).enumerate() {
        let diff = if a.is_nan() { f32::INFINITY } else { (a - b).abs() };
        if diff > max_diff {
            (max_diff, max_at) = (diff, k);
        }
        let within = diff <= atol + rtol * b.abs(); // false for NaN
        if !within && first_bad.is_none() {
            first_bad = Some(k);
        }
    }
    println!("  {what:<6} n={:<7} max|diff|={max_diff:.3e} at {max_at} (max|ref|={scale:.3e})", got.len());
    if let Some(k) = first_bad {
        panic!(
            "{what}: mismatch at index {k}: got {} want {} (atol {atol:.2e}, rtol {rtol:.0e}); \
             max |diff| {max_diff:.3e} at {max_at}",
            got[k], want[k]
        );
    }
}

#[allow(unused_imports)] // not every test file opens the GPU
pub use ulmfit_cuda::device::gpu_or_skip;

static GPU_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serializes the GPU tests of one binary: one graph capture or run on the device at a
/// time. A panicking test does not poison the others.
pub fn gpu_lock() -> std::sync::MutexGuard<'static, ()> {
    GPU_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compiles kernel source `src` (named `file`) with NVRTC for compute_90 and checks that the
/// PTX has an entry for each of `names`; prints a skip line where libnvrtc does not load.
pub fn compiles_with_every_kernel(file: &'static str, src: &'static str, names: &[&str]) {
    let found = ["libnvrtc.so.13", "libnvrtc.so"].iter().any(|&lib| {
        // SAFETY: loading libnvrtc runs only its initialisers; it is closed right away.
        unsafe { libloading::Library::new(lib) }.is_ok()
    });
    if !found {
        println!("skip: libnvrtc not found (compile check of {file})");
        return;
    }
    let ptx = ulmfit_cuda::device::compile_cached(file, src, "compute_90").unwrap_or_else(|e| panic!("{e}"));
    let text = ptx.to_src();
    for name in names {
        assert!(text.contains(&format!(".entry {name}(")), "{file}: PTX lacks kernel {name}");
    }
    println!("{file} -> {} bytes of PTX, {} kernels", text.len(), names.len());
}

/// Pseudo-random ids and targets [T, B]; the first id is the padding id, whose embedding row
/// gets no gradient.
pub fn lm_batch(cfg: &LmConfig, salt: u32) -> (Vec<u32>, Vec<u32>) {
    let n = cfg.rows() as u32;
    let tok = |k: u32| (k.wrapping_mul(2654435761).wrapping_add(salt * 97) >> 7) % cfg.vocab as u32;
    let mut ids: Vec<u32> = (0..n).map(tok).collect();
    ids[0] = PAD;
    (ids, (n..2 * n).map(tok).collect())
}
