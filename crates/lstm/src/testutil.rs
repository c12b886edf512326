//! Test helpers shared by the unit tests of the time-loop variants (`batched.rs`, `split.rs`):
//! run the fused layer on random data, compare it with `reference.rs`, and run it twice.

use crate::layer::{self, Wanted};
use crate::{reference, Isa, LstmDims, LstmGrads, LstmParams};

/// Uniform values in [-scale, scale) from a xorshift stream.
fn rand_vec(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Asserts `|got - want| <= tol (max|want| + |want|)`, naming the first bad index.
#[allow(clippy::neg_cmp_op_on_partial_ord)] // written negated so that NaN fails
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let bad = got.iter().zip(want).position(|(g, w)| !((g - w).abs() <= tol * (scale + w.abs())));
    let max = got.iter().zip(want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
    assert!(bad.is_none(), "{what}: max diff {max:e}; first bad index {bad:?}");
}

fn grads(g: &LstmGrads) -> [(&str, &[f32]); 6] {
    [("dx", &g.dx), ("dh0", &g.dh0), ("dc0", &g.dc0), ("dw_ih", &g.dw_ih), ("dw_hh", &g.dw_hh), ("db", &g.db_ih)]
}

/// Runs the fused layer forward and backward (with dh_n, dc_n) on `d` with `isa`: checks
/// every output and gradient against the reference within 1e-5, and that a second run
/// gives the same bits.
pub fn check_layer(d: LstmDims, isa: Isa) {
    let s = &mut 0x9e37_79b9_7f4a_7c15u64;
    let (g4, bh) = (4 * d.h, d.b * d.h);
    let (w_ih, w_hh) = (rand_vec(s, g4 * d.i, 0.3), rand_vec(s, g4 * d.h, 0.05));
    let (b_ih, b_hh) = (rand_vec(s, g4, 0.1), rand_vec(s, g4, 0.1));
    let (x, h0, c0) = (rand_vec(s, d.t * d.b * d.i, 1.0), rand_vec(s, bh, 0.5), rand_vec(s, bh, 0.5));
    let (dy, dh_n, dc_n) = (rand_vec(s, d.t * bh, 1.0), rand_vec(s, bh, 1.0), rand_vec(s, bh, 1.0));
    let p = LstmParams { w_ih: &w_ih, w_hh: &w_hh, b_ih: &b_ih, b_hh: &b_hh };
    let run = || {
        let (out, saved) = layer::forward(d, &p, &x, &h0, &c0, isa);
        let g = layer::backward(d, &p, &x, &h0, &c0, &out.y, saved, &dy, (Some(&dh_n), Some(&dc_n)), Wanted::ALL, isa);
        (out, g)
    };
    let (out, g) = run();
    let want = reference::forward(d, &p, &x, &h0, &c0);
    let want_g = reference::backward(d, &p, &x, &h0, &c0, &dy, Some(&dh_n), Some(&dc_n));
    for (name, got, want) in [("y", &out.y, &want.y), ("h_n", &out.h_n, &want.h_n), ("c_n", &out.c_n, &want.c_n)] {
        assert_close(name, got, want, 1e-5);
    }
    for ((name, got), (_, want)) in grads(&g).into_iter().zip(grads(&want_g)) {
        assert_close(name, got, want, 1e-5);
    }
    let (out2, g2) = run();
    let pairs = [("y", &out.y[..], &out2.y[..])]
        .into_iter()
        .chain(grads(&g).into_iter().zip(grads(&g2)).map(|((n, a), (_, b))| (n, a, b)));
    for (name, a, b) in pairs {
        let bad = a.iter().zip(b).position(|(u, v)| u.to_bits() != v.to_bits());
        assert!(bad.is_none(), "{name} differs between two identical runs at index {bad:?}");
    }
}
