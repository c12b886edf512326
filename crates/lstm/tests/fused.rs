//! The fused layer (every ISA this CPU has) against `reference.rs`, and the reference
//! against central finite differences.

mod common;

use common::{assert_close, grads_close, Case};
use ulmfit_lstm::layer::{self, Wanted};
use ulmfit_lstm::{reference, Isa, LstmGrads, LstmOutput};

fn isas() -> Vec<Isa> {
    let all = [Isa::Scalar, Isa::Avx2, Isa::Avx512];
    let have: Vec<Isa> = all.into_iter().filter(|i| i.available()).collect();
    if have.len() < all.len() {
        println!("skipping {:?}: not supported by this CPU", &all[have.len()..]);
    }
    have
}

/// The fused layer's forward and backward on `cs` with `isa`: dL/dy = `cs.dy`, and with
/// `state_grads` also dL/dh_n = `cs.dh_n`, dL/dc_n = `cs.dc_n`.
fn fused(cs: &Case, isa: Isa, state_grads: bool, want: Wanted) -> (LstmOutput, LstmGrads) {
    let p = cs.params();
    let (out, saved) = layer::forward(cs.d, &p, &cs.x, &cs.h0, &cs.c0, isa);
    let dstate = if state_grads { (Some(&cs.dh_n[..]), Some(&cs.dc_n[..])) } else { (None, None) };
    let g = layer::backward(cs.d, &p, &cs.x, &cs.h0, &cs.c0, &out.y, saved, &cs.dy, dstate, want, isa);
    (out, g)
}

/// (T, B, I, H): B=1, T=1, H=1, H not a multiple of 8 or 16, B=19 (two row blocks, every tile
/// size) and H=130 (several K slices in both recurrent kernels, an odd number of unit blocks).
const SHAPES: [(usize, usize, usize, usize); 8] = [
    (1, 1, 3, 5),
    (5, 1, 7, 17),
    (1, 4, 8, 16),
    (6, 3, 10, 33),
    (9, 5, 24, 40),
    (4, 2, 3, 1),
    (3, 19, 12, 21),
    (2, 9, 5, 130),
];

#[test]
fn fused_forward_and_backward_match_reference() {
    for (n, &(t, b, i, h)) in SHAPES.iter().enumerate() {
        let cs = Case::new(t, b, i, h, n as u64);
        let p = cs.params();
        let want = reference::forward(cs.d, &p, &cs.x, &cs.h0, &cs.c0);
        let want_g = reference::backward(cs.d, &p, &cs.x, &cs.h0, &cs.c0, &cs.dy, Some(&cs.dh_n), Some(&cs.dc_n));
        for isa in isas() {
            let what = format!("{:?} {isa:?}", cs.d);
            let (out, g) = fused(&cs, isa, true, Wanted::ALL);
            assert_close(&format!("{what} y"), &out.y, &want.y, 1e-6, 1e-5);
            assert_close(&format!("{what} h_n"), &out.h_n, &want.h_n, 1e-6, 1e-5);
            assert_close(&format!("{what} c_n"), &out.c_n, &want.c_n, 1e-6, 1e-5);
            grads_close(&what, &g, &want_g, 1e-5);
        }
    }
}

#[test]
fn simd_paths_match_scalar_path() {
    let cs = Case::new(7, 6, 20, 45, 99);
    let (base, base_g) = fused(&cs, Isa::Scalar, false, Wanted::ALL);
    for isa in isas().into_iter().skip(1) {
        let (out, g) = fused(&cs, isa, false, Wanted::ALL);
        assert_close(&format!("{isa:?} y"), &out.y, &base.y, 1e-6, 2e-6);
        assert_close(&format!("{isa:?} c_n"), &out.c_n, &base.c_n, 1e-6, 2e-6);
        grads_close(&format!("{isa:?}"), &g, &base_g, 2e-6);
    }
}

#[test]
fn reference_backward_matches_finite_differences() {
    // L = sum(y * dy) + sum(h_n * dh_n) + sum(c_n * dc_n), so dL/dy = dy etc.
    let cs = Case::new(3, 2, 3, 4, 5);
    let g = reference::backward(cs.d, &cs.params(), &cs.x, &cs.h0, &cs.c0, &cs.dy, Some(&cs.dh_n), Some(&cs.dc_n));
    let loss = |c: &Case| -> f64 {
        let o = reference::forward(c.d, &c.params(), &c.x, &c.h0, &c.c0);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>();
        dot(&o.y, &c.dy) + dot(&o.h_n, &c.dh_n) + dot(&o.c_n, &c.dc_n)
    };
    type Field = fn(&mut Case) -> &mut Vec<f32>;
    let fields: [(&str, Field, &Vec<f32>); 7] = [
        ("x", |c| &mut c.x, &g.dx),
        ("h0", |c| &mut c.h0, &g.dh0),
        ("c0", |c| &mut c.c0, &g.dc0),
        ("w_ih", |c| &mut c.w_ih, &g.dw_ih),
        ("w_hh", |c| &mut c.w_hh, &g.dw_hh),
        ("b_ih", |c| &mut c.b_ih, &g.db_ih),
        ("b_hh", |c| &mut c.b_hh, &g.db_hh),
    ];
    let eps = 1e-2f32;
    for (name, field, analytic) in fields {
        let mut c = Case::new(3, 2, 3, 4, 5);
        for (k, &a) in analytic.iter().enumerate() {
            let orig = field(&mut c)[k];
            field(&mut c)[k] = orig + eps;
            let up = loss(&c);
            field(&mut c)[k] = orig - eps;
            let down = loss(&c);
            field(&mut c)[k] = orig;
            let numeric = (up - down) / (2.0 * eps as f64);
            let a = a as f64;
            assert!(
                (numeric - a).abs() <= 2e-3 + 2e-3 * a.abs(),
                "d{name}[{k}]: analytic {a}, finite difference {numeric}"
            );
        }
    }
}

#[test]
fn backward_repeats_bit_for_bit() {
    let cs = Case::new(6, 21, 9, 35, 12);
    let run = || fused(&cs, Isa::detect(), false, Wanted::ALL).1;
    let (a, b) = (run(), run());
    let pairs = [
        ("dx", &a.dx, &b.dx),
        ("dw_ih", &a.dw_ih, &b.dw_ih),
        ("dw_hh", &a.dw_hh, &b.dw_hh),
        ("db", &a.db_ih, &b.db_ih),
    ];
    for (name, x, y) in pairs {
        let bad = x.iter().zip(y.iter()).position(|(u, v)| u.to_bits() != v.to_bits());
        assert!(bad.is_none(), "{name} differs between two identical runs at index {bad:?}");
    }
}

/// A backward that skips dx or the weight gradients (frozen inputs, frozen layer) returns
/// those empty and the rest bit for bit as a full backward, in each time-loop variant (row
/// blocks at H=17; split at H=130 and batched at H=513, B=17 on AVX-512).
#[test]
fn skipped_gradients_come_back_empty_and_the_rest_unchanged() {
    for (n, &(t, b, i, h)) in [(3, 2, 5, 17), (2, 3, 7, 130), (2, 17, 6, 513)].iter().enumerate() {
        let cs = Case::new(t, b, i, h, 40 + n as u64);
        let run = |want| fused(&cs, Isa::detect(), false, want).1;
        let all = run(Wanted::ALL);
        for (want, kept) in
            [(Wanted { dx: false, weights: true }, "weights"), (Wanted { dx: true, weights: false }, "dx")]
        {
            let g = run(want);
            let pairs = [
                ("dx", &g.dx, &all.dx, want.dx),
                ("dw_ih", &g.dw_ih, &all.dw_ih, want.weights),
                ("dw_hh", &g.dw_hh, &all.dw_hh, want.weights),
                ("db_ih", &g.db_ih, &all.db_ih, want.weights),
                ("dh0", &g.dh0, &all.dh0, true),
                ("dc0", &g.dc0, &all.dc0, true),
            ];
            for (name, got, full, wanted) in pairs {
                if wanted {
                    assert!(got == full, "{:?} keeping {kept}: {name} differs from the full backward's", cs.d);
                } else {
                    assert!(got.is_empty(), "{:?} keeping {kept}: {name} was computed", cs.d);
                }
            }
        }
    }
}

/// A NaN in x or in W_hh reaches y, h_n and c_n at exactly the reference's positions, on every
/// ISA and time-loop variant (row blocks at H=17; split at H=130 and batched at H=513, B=17 on
/// AVX-512): the activations' clamps must not turn NaN into a finite gate.
#[test]
fn nan_in_x_or_w_hh_propagates_like_reference() {
    let nan_mask = |v: &[f32]| v.iter().map(|x| x.is_nan()).collect::<Vec<_>>();
    for (n, &(t, b, i, h)) in [(3, 2, 5, 17), (2, 3, 7, 130), (2, 17, 6, 513)].iter().enumerate() {
        for field in ["x", "w_hh"] {
            let mut cs = Case::new(t, b, i, h, 80 + n as u64);
            match field {
                "x" => cs.x[i + 1] = f32::NAN, // step 0, row 1
                _ => cs.w_hh[3 * h + 2] = f32::NAN,
            }
            let p = cs.params();
            let want = reference::forward(cs.d, &p, &cs.x, &cs.h0, &cs.c0);
            assert!(want.y.iter().any(|v| v.is_nan()), "{:?}: the reference must give NaN", cs.d);
            for isa in isas() {
                let (out, _) = layer::forward(cs.d, &p, &cs.x, &cs.h0, &cs.c0, isa);
                for (name, got, want) in
                    [("y", &out.y, &want.y), ("h_n", &out.h_n, &want.h_n), ("c_n", &out.c_n, &want.c_n)]
                {
                    let (g, w) = (nan_mask(got), nan_mask(want));
                    let bad = g.iter().zip(&w).position(|(a, b)| a != b);
                    assert!(
                        bad.is_none(),
                        "{:?} {isa:?} NaN in {field}: {name} NaN pattern differs from the reference; first index {bad:?} (got NaN: {:?})",
                        cs.d,
                        bad.map(|k| g[k])
                    );
                }
            }
        }
    }
}
