//! Helpers shared by the integration tests: random problems and loud comparisons.
#![allow(dead_code)] // each test binary uses a different subset

use ulmfit_lstm::{LstmDims, LstmGrads, LstmParams};

/// Deterministic uniform numbers in [-scale, scale) (splitmix64).
pub fn rand_vec(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// One random problem: weights, input, initial state and upstream gradients.
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
        let s = &mut (seed * 7919 + 1);
        let w = 1.0 / (h as f32).sqrt();
        Case {
            d: LstmDims { t, b, i, h },
            w_ih: rand_vec(s, 4 * h * i, w),
            w_hh: rand_vec(s, 4 * h * h, w),
            b_ih: rand_vec(s, 4 * h, w),
            b_hh: rand_vec(s, 4 * h, w),
            x: rand_vec(s, t * b * i, 1.0),
            h0: rand_vec(s, b * h, 0.5),
            c0: rand_vec(s, b * h, 0.5),
            dy: rand_vec(s, t * b * h, 1.0),
            dh_n: rand_vec(s, b * h, 1.0),
            dc_n: rand_vec(s, b * h, 1.0),
        }
    }
    pub fn params(&self) -> LstmParams<'_> {
        LstmParams { w_ih: &self.w_ih, w_hh: &self.w_hh, b_ih: &self.b_ih, b_hh: &self.b_hh }
    }
}

/// Asserts `|got - want| <= atol + rtol |want|` elementwise, naming the first bad index.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    let mut max_diff = 0.0f32;
    let mut first_bad = None;
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let diff = (g - w).abs();
        max_diff = max_diff.max(diff);
        // written so that a NaN on either side counts as a mismatch
        let ok = diff <= atol + rtol * w.abs();
        if !ok && first_bad.is_none() {
            first_bad = Some((k, *g, *w));
        }
    }
    if let Some((k, g, w)) = first_bad {
        panic!("{what}: max diff {max_diff:e}; first bad index {k}: got {g}, want {w}");
    }
}

pub fn grads_close(what: &str, got: &LstmGrads, want: &LstmGrads, tol: f32) {
    let pairs = [
        ("dx", &got.dx, &want.dx),
        ("dh0", &got.dh0, &want.dh0),
        ("dc0", &got.dc0, &want.dc0),
        ("dw_ih", &got.dw_ih, &want.dw_ih),
        ("dw_hh", &got.dw_hh, &want.dw_hh),
        ("db_ih", &got.db_ih, &want.db_ih),
        ("db_hh", &got.db_hh, &want.db_hh),
    ];
    for (name, g, w) in pairs {
        // Gradients sum many terms: scale the absolute floor by the buffer's largest value.
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_close(&format!("{what} {name}"), g, w, tol * scale, tol);
    }
}
