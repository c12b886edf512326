//! The layer stack against `reference.rs` run layer by layer: per-layer sizes, state carried
//! (and detached) between calls, and DropConnect on W_hh.

mod common;

use common::assert_close;
use ulmfit_lstm::{reference, DropMask, LstmDims, LstmStack};

/// Reference forward of every layer; returns each layer's input and (y, h_n, c_n).
fn reference_stack(
    s: &LstmStack,
    w_hh: &[Vec<f32>],
    x: &[f32],
    t: usize,
    b: usize,
    state: &[(Vec<f32>, Vec<f32>)],
) -> Vec<(Vec<f32>, reference::LstmOutput)> {
    let mut input = x.to_vec();
    let mut out = Vec::new();
    for (l, w) in s.layers.iter().enumerate() {
        let d = LstmDims { t, b, i: w.i, h: w.h };
        let o = reference::forward(d, &w.params_with(&w_hh[l]), &input, &state[l].0, &state[l].1);
        out.push((std::mem::replace(&mut input, o.y.clone()), o));
    }
    out
}

#[test]
fn stack_matches_reference_across_two_calls_with_dropconnect() {
    let (t, b) = (4, 3);
    let sizes = [6, 17, 9, 5];
    let mut s = LstmStack::new(&sizes, 3);
    s.weight_p = 0.3;
    let x: Vec<f32> = (0..t * b * sizes[0]).map(|k| (k * 31 % 17) as f32 / 8.0 - 1.0).collect();
    let dy: Vec<f32> = (0..t * b * 5).map(|k| (k * 7 % 13) as f32 / 6.0 - 1.0).collect();
    let mut state: Vec<(Vec<f32>, Vec<f32>)> =
        s.layers.iter().map(|l| (vec![0.0; b * l.h], vec![0.0; b * l.h])).collect();
    for call in 0..2u64 {
        let seed = 100 + call;
        let (y, trace) = s.forward(&x, t, b, true, seed);
        // The masks the stack drew: layer l uses DropMask { p, seed ^ (l << 32) }.
        let masks: Vec<DropMask> = (0..3).map(|l| DropMask { p: 0.3, seed: seed ^ ((l as u64) << 32) }).collect();
        let w_hh: Vec<Vec<f32>> = s
            .layers
            .iter()
            .zip(&masks)
            .map(|(w, m)| {
                let mut out = Vec::new();
                m.apply(&w.w_hh, &mut out);
                out
            })
            .collect();
        let dropped = w_hh.iter().zip(&s.layers).map(|(m, w)| {
            m.iter().zip(&w.w_hh).filter(|(a, b)| **a == 0.0 && **b != 0.0).count() as f32 / m.len() as f32
        });
        for (l, frac) in dropped.enumerate() {
            assert!((0.15..0.45).contains(&frac), "layer {l}: dropped fraction {frac}, expected about 0.3");
        }
        let want = reference_stack(&s, &w_hh, &x, t, b, &state);
        assert_close(&format!("call {call} top y"), &y, &want[2].1.y, 1e-6, 1e-5);
        // Backward: reference layer by layer, top down, dx of one layer is dy of the one below.
        let (dx, grads) = s.backward(trace.expect("training trace"), &dy);
        let mut d_out = dy.clone();
        for l in (0..3).rev() {
            let w = &s.layers[l];
            let d = LstmDims { t, b, i: w.i, h: w.h };
            let p = w.params_with(&w_hh[l]);
            let mut g = reference::backward(d, &p, &want[l].0, &state[l].0, &state[l].1, &d_out, None, None);
            masks[l].apply_grad(&mut g.dw_hh);
            let scale = |v: &[f32]| v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert_close(
                &format!("call {call} layer {l} dw_hh"),
                &grads[l].dw_hh,
                &g.dw_hh,
                1e-5 * scale(&g.dw_hh),
                1e-5,
            );
            assert_close(
                &format!("call {call} layer {l} dw_ih"),
                &grads[l].dw_ih,
                &g.dw_ih,
                1e-5 * scale(&g.dw_ih),
                1e-5,
            );
            assert_close(
                &format!("call {call} layer {l} db_ih"),
                &grads[l].db_ih,
                &g.db_ih,
                1e-5 * scale(&g.db_ih),
                1e-5,
            );
            d_out = g.dx;
        }
        assert_close(
            &format!("call {call} dx"),
            &dx,
            &d_out,
            1e-5 * d_out.iter().fold(0.0f32, |m, x| m.max(x.abs())),
            1e-5,
        );
        // The next call starts from this call's final state.
        state = want.iter().map(|(_, o)| (o.h_n.clone(), o.c_n.clone())).collect();
        for (l, (h, c)) in state.iter().enumerate() {
            assert_close(&format!("call {call} layer {l} carried h"), &s.state[l].0, h, 1e-6, 1e-5);
            assert_close(&format!("call {call} layer {l} carried c"), &s.state[l].1, c, 1e-6, 1e-5);
        }
    }
}

#[test]
fn reset_starts_the_next_call_from_zeros() {
    let (t, b) = (3, 2);
    let mut s = LstmStack::new(&[4, 6, 5], 9);
    let x: Vec<f32> = (0..t * b * 4).map(|k| (k * 13 % 11) as f32 / 5.0 - 1.0).collect();
    let (first, _) = s.forward(&x, t, b, false, 0);
    let (carried, _) = s.forward(&x, t, b, false, 0);
    assert_ne!(first, carried, "the second call must start from the first call's final state");
    s.reset();
    let (after_reset, _) = s.forward(&x, t, b, false, 0);
    assert_eq!(first, after_reset, "after reset the stack must start from zeros again");
}

/// Every tensor of every layer draws its own stream: with equal sizes (same init scale), no
/// two of the 12 tensors of a 3-layer stack start with the same values, for several seeds.
#[test]
fn init_gives_every_tensor_of_every_layer_its_own_stream() {
    for seed in 0..8 {
        let s = LstmStack::new(&[8, 8, 8, 8], seed);
        let mut heads = Vec::new();
        for (l, w) in s.layers.iter().enumerate() {
            for (name, v) in [("w_ih", &w.w_ih), ("w_hh", &w.w_hh), ("b_ih", &w.b_ih), ("b_hh", &w.b_hh)] {
                heads.push((format!("layer {l} {name}"), v[..4].to_vec()));
            }
        }
        for (a, (na, va)) in heads.iter().enumerate() {
            for (nb, vb) in &heads[a + 1..] {
                assert!(va != vb, "seed {seed}: {na} and {nb} start with the same values {va:?}");
            }
        }
    }
}

/// DropConnect masks are drawn from (seed, index) and must not change between builds:
/// training runs are rerun bit for bit. The 64-element mask of seed 7, p = 0.5, pinned.
#[test]
fn dropconnect_mask_is_pinned() {
    let mut out = Vec::new();
    DropMask { p: 0.5, seed: 7 }.apply(&[1.0; 64], &mut out);
    let dropped = out.iter().enumerate().fold(0u64, |m, (k, v)| m | (((*v == 0.0) as u64) << k));
    assert_eq!(dropped, 0xd024_d54f_c944_6ecd, "dropped-weight bits of DropMask {{ p: 0.5, seed: 7 }} changed");
}
