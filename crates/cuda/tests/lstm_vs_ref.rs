//! The CUDA LSTM layer (forward: y, h_n, c_n; backward: every gradient) against
//! `ulmfit_lstm::reference`, run step by step and replayed from CUDA graphs, in FP32
//! (1e-4 relative) and TF32 (1e-2). Without a GPU each test prints one skip line and
//! passes; ULMFIT_REQUIRE_GPU=1 turns the skip into a failure.

mod common;

use common::{assert_close, gpu_lock, gpu_or_skip, Case};
use ulmfit_cuda::{Gpu, LstmCuda};
use ulmfit_lstm::reference;

/// (T, B, I, H): one step, one row, odd H, I != H, and one a few warps wide.
const SHAPES: [(usize, usize, usize, usize); 6] =
    [(1, 1, 1, 1), (1, 3, 5, 7), (5, 1, 4, 9), (7, 4, 6, 17), (4, 3, 8, 8), (12, 16, 40, 96)];

/// Runs one case on `gpu` (optionally through graphs) and compares it with the reference.
fn check(gpu: &Gpu, cs: &Case, graphs: bool, final_grads: bool, rtol: f32, atol_rel: f32) {
    let d = cs.d;
    println!("{d:?} graphs {graphs} final grads {final_grads}");
    let p = cs.params();
    let mut layer = LstmCuda::new(gpu, d, &p).expect("allocate layer");
    if graphs {
        layer.capture_graphs().expect("capture CUDA graphs");
    }
    let got = layer.forward(&cs.x, &cs.h0, &cs.c0).expect("cuda forward");
    let want = reference::forward(d, &p, &cs.x, &cs.h0, &cs.c0);
    assert_close("y", &got.y, &want.y, rtol, atol_rel);
    assert_close("h_n", &got.h_n, &want.h_n, rtol, atol_rel);
    assert_close("c_n", &got.c_n, &want.c_n, rtol, atol_rel);
    let (dh_n, dc_n) = if final_grads { (Some(&cs.dh_n[..]), Some(&cs.dc_n[..])) } else { (None, None) };
    let g = layer.backward(&cs.dy, dh_n, dc_n).expect("cuda backward");
    let w = reference::backward(d, &p, &cs.x, &cs.h0, &cs.c0, &cs.dy, dh_n, dc_n);
    for (name, got, want) in [
        ("dx", &g.dx, &w.dx),
        ("dh0", &g.dh0, &w.dh0),
        ("dc0", &g.dc0, &w.dc0),
        ("dw_ih", &g.dw_ih, &w.dw_ih),
        ("dw_hh", &g.dw_hh, &w.dw_hh),
        ("db_ih", &g.db_ih, &w.db_ih),
        ("db_hh", &g.db_hh, &w.db_hh),
    ] {
        assert_close(name, got, want, rtol, atol_rel);
    }
}

#[test]
fn lstm_fp32_matches_reference() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("lstm_fp32_matches_reference", false) else {
        return;
    };
    for (k, &(t, b, i, h)) in SHAPES.iter().enumerate() {
        let cs = Case::new(t, b, i, h, 100 + k as u64);
        check(&gpu, &cs, false, true, 1e-4, 1e-5);
    }
    check(&gpu, &Case::new(3, 2, 5, 6, 7), false, false, 1e-4, 1e-5);
}

#[test]
fn lstm_graphs_match_reference_and_replay_new_inputs() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("lstm_graphs_match_reference", false) else {
        return;
    };
    for (k, &(t, b, i, h)) in SHAPES.iter().enumerate() {
        check(&gpu, &Case::new(t, b, i, h, 200 + k as u64), true, true, 1e-4, 1e-5);
    }
    // One captured layer, two different inputs: the replay must read the new data.
    let first = Case::new(9, 5, 12, 33, 300);
    let mut second = Case::new(9, 5, 12, 33, 301);
    (second.w_ih, second.w_hh) = (first.w_ih.clone(), first.w_hh.clone());
    (second.b_ih, second.b_hh) = (first.b_ih.clone(), first.b_hh.clone());
    let p = first.params();
    let mut layer = LstmCuda::new(&gpu, first.d, &p).expect("allocate layer");
    layer.capture_graphs().expect("capture CUDA graphs");
    for cs in [&first, &second] {
        let got = layer.forward(&cs.x, &cs.h0, &cs.c0).expect("graph forward");
        let want = reference::forward(cs.d, &p, &cs.x, &cs.h0, &cs.c0);
        assert_close("y", &got.y, &want.y, 1e-4, 1e-5);
        let g = layer.backward(&cs.dy, Some(&cs.dh_n), None).expect("graph backward");
        let w = reference::backward(cs.d, &p, &cs.x, &cs.h0, &cs.c0, &cs.dy, Some(&cs.dh_n), None);
        assert_close("dx", &g.dx, &w.dx, 1e-4, 1e-5);
        assert_close("dw_hh", &g.dw_hh, &w.dw_hh, 1e-4, 1e-5);
        assert_close("dc0", &g.dc0, &w.dc0, 1e-4, 1e-5);
    }
}

#[test]
fn lstm_backward_repeats_bit_for_bit() {
    // No atomics anywhere: two runs on the same inputs give identical gradients.
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("lstm_backward_repeats_bit_for_bit", false) else {
        return;
    };
    let cs = Case::new(10, 8, 24, 40, 400);
    let mut layer = LstmCuda::new(&gpu, cs.d, &cs.params()).expect("allocate layer");
    let mut runs = Vec::new();
    for _ in 0..2 {
        layer.forward(&cs.x, &cs.h0, &cs.c0).expect("forward");
        runs.push(layer.backward(&cs.dy, None, None).expect("backward"));
    }
    assert!(runs[0].dw_hh == runs[1].dw_hh, "dw_hh differs between identical runs");
    assert!(runs[0].db_ih == runs[1].db_ih, "db differs between identical runs");
    assert!(runs[0].dx == runs[1].dx, "dx differs between identical runs");
}

#[test]
fn lstm_tf32_matches_reference_loosely() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("lstm_tf32_matches_reference_loosely", true) else {
        return;
    };
    for (k, &(t, b, i, h)) in [(6, 8, 48, 64), (12, 16, 40, 96)].iter().enumerate() {
        let cs = Case::new(t, b, i, h, 500 + k as u64);
        check(&gpu, &cs, k == 1, true, 1e-2, 1e-2);
    }
}

#[test]
fn out_of_memory_names_the_size() {
    let _lock = gpu_lock();
    let Some(gpu) = gpu_or_skip("out_of_memory_names_the_size", false) else {
        return;
    };
    let n = gpu.total_mem().expect("total memory") / 4 + (1 << 28);
    match gpu.alloc_zeros(n, "test buffer") {
        Err(e @ ulmfit_cuda::Error::OutOfMemory { .. }) => {
            let msg = e.to_string();
            println!("{msg}");
            assert!(msg.contains(&(n * 4).to_string()) && msg.contains("smaller batch"), "{msg}");
        }
        Err(e) => panic!("expected OutOfMemory for {} bytes, got: {e}", n * 4),
        Ok(_) => panic!("allocating {} bytes (more than the card) succeeded", n * 4),
    }
    // The context stays usable after a failed allocation.
    gpu.alloc_zeros(1024, "after OOM").expect("small allocation after OOM");
}
