//! Replays the CUDA layer's step lists on the CPU, through the exact column-major
//! `cublasSgemm` arguments the executor passes, and checks them against the reference.
//!
//! Runs without a GPU: it proves the plan (buffer offsets, transposes, leading dimensions,
//! step order) so that a mismatch on the GPU can only come from the kernels or the driver.
//! The two cell functions below are line-for-line twins of kernels/lstm_cell.cu.

mod common;

use common::{assert_close, Case};
use ulmfit_cuda::plan::{backward_plan, check_bounds, forward_plan, Buf, ColMajor, Step};
use ulmfit_lstm::{reference, LstmDims};

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// BLAS semantics of cublasSgemm (column-major, alpha = 1, beta = 0).
fn sgemm_col_major(bufs: &mut [Vec<f32>], cm: &ColMajor) {
    let a = &bufs[cm.a.buf as usize][cm.a.off..];
    let b = &bufs[cm.b.buf as usize][cm.b.off..];
    let mut c = vec![0.0f32; cm.m * cm.n];
    for j in 0..cm.n {
        for i in 0..cm.m {
            let mut s = 0.0f32;
            for l in 0..cm.k {
                let av = if cm.transa { a[l + i * cm.lda] } else { a[i + l * cm.lda] };
                let bv = if cm.transb { b[j + l * cm.ldb] } else { b[l + j * cm.ldb] };
                s += av * bv;
            }
            c[i + j * cm.m] = s;
        }
    }
    let out = &mut bufs[cm.c.buf as usize][cm.c.off..];
    for j in 0..cm.n {
        for i in 0..cm.m {
            out[i + j * cm.ldc] = c[i + j * cm.m];
        }
    }
}

/// Twin of `lstm_cell_fwd`, looping over the (b, j) threads.
fn cell_fwd(bufs: &mut [Vec<f32>], t: usize, bn: usize, h: usize) {
    let n = bn * h;
    for idx in 0..n {
        let (b, j) = (idx / h, idx % h);
        let row = t * bn + b;
        let xr = &bufs[Buf::Xw as usize][row * 4 * h..];
        let hr = &bufs[Buf::Hw as usize][b * 4 * h..];
        let (bi, bh) = (&bufs[Buf::BIh as usize], &bufs[Buf::BHh as usize]);
        let pre = |k: usize| xr[k * h + j] + hr[k * h + j] + bi[k * h + j] + bh[k * h + j];
        let (i, f, g, o) = (sigmoid(pre(0)), sigmoid(pre(1)), pre(2).tanh(), sigmoid(pre(3)));
        let c = f * bufs[Buf::Cs as usize][t * n + idx] + i * g;
        bufs[Buf::Cs as usize][(t + 1) * n + idx] = c;
        bufs[Buf::Hs as usize][(t + 1) * n + idx] = o * c.tanh();
        let ar = &mut bufs[Buf::Act as usize][row * 4 * h..];
        (ar[j], ar[h + j], ar[2 * h + j], ar[3 * h + j]) = (i, f, g, o);
    }
}

/// Twin of `lstm_cell_bwd`.
fn cell_bwd(bufs: &mut [Vec<f32>], t: usize, bn: usize, h: usize) {
    let n = bn * h;
    for idx in 0..n {
        let (b, j) = (idx / h, idx % h);
        let row = t * bn + b;
        let ar = &bufs[Buf::Act as usize][row * 4 * h..];
        let (i, f, g, o) = (ar[j], ar[h + j], ar[2 * h + j], ar[3 * h + j]);
        let c_prev = bufs[Buf::Cs as usize][t * n + idx];
        let tc = bufs[Buf::Cs as usize][(t + 1) * n + idx].tanh();
        let dh_t = bufs[Buf::Dy as usize][t * n + idx] + bufs[Buf::Dh as usize][idx];
        let dc_t = bufs[Buf::Dc as usize][idx] + dh_t * o * (1.0 - tc * tc);
        bufs[Buf::Dc as usize][idx] = dc_t * f;
        let dr = &mut bufs[Buf::Dgates as usize][row * 4 * h..];
        dr[j] = dc_t * g * i * (1.0 - i);
        dr[h + j] = dc_t * c_prev * f * (1.0 - f);
        dr[2 * h + j] = dc_t * i * (1.0 - g * g);
        dr[3 * h + j] = dh_t * tc * o * (1.0 - o);
    }
}

fn run(bufs: &mut [Vec<f32>], d: LstmDims, plan: &[Step]) {
    check_bounds(d, plan);
    for step in plan {
        match *step {
            Step::Gemm(g) => sgemm_col_major(bufs, &g.col_major()),
            Step::CellFwd { t } => cell_fwd(bufs, t, d.b, d.h),
            Step::CellBwd { t } => cell_bwd(bufs, t, d.b, d.h),
            Step::Copy { src, dst, off, len } => {
                let v = bufs[src as usize][..len].to_vec();
                bufs[dst as usize][off..off + len].copy_from_slice(&v);
            }
        }
    }
}

fn check_case(t: usize, b: usize, i: usize, h: usize, with_final_grads: bool) {
    let cs = Case::new(t, b, i, h, (t * 1000 + b * 100 + i * 10 + h) as u64);
    let d = cs.d;
    println!("plan on cpu {d:?} final grads {with_final_grads}");
    // Poison every buffer: a step that reads what nothing wrote shows up as NaN.
    let mut bufs: Vec<Vec<f32>> = Buf::ALL.iter().map(|b| vec![f32::NAN; b.len(d)]).collect();
    let zeros = vec![0.0; b * h];
    let (dh_n, dc_n) = if with_final_grads { (Some(&cs.dh_n[..]), Some(&cs.dc_n[..])) } else { (None, None) };
    for (buf, data) in [
        (Buf::X, &cs.x[..]),
        (Buf::H0, &cs.h0),
        (Buf::C0, &cs.c0),
        (Buf::WIh, &cs.w_ih),
        (Buf::WHh, &cs.w_hh),
        (Buf::BIh, &cs.b_ih),
        (Buf::BHh, &cs.b_hh),
        (Buf::Dy, &cs.dy),
        (Buf::DhN, dh_n.unwrap_or(&zeros)),
        (Buf::DcN, dc_n.unwrap_or(&zeros)),
        (Buf::Ones, &vec![1.0; t * b]),
    ] {
        bufs[buf as usize].copy_from_slice(data);
    }
    run(&mut bufs, d, &forward_plan(d));
    let p = cs.params();
    let want = reference::forward(d, &p, &cs.x, &cs.h0, &cs.c0);
    let bh = b * h;
    let hs = &bufs[Buf::Hs as usize];
    assert_close("y", &hs[bh..], &want.y, 1e-4, 1e-5);
    assert_close("h_n", &hs[t * bh..], &want.h_n, 1e-4, 1e-5);
    assert_close("c_n", &bufs[Buf::Cs as usize][t * bh..], &want.c_n, 1e-4, 1e-5);

    run(&mut bufs, d, &backward_plan(d));
    let gw = reference::backward(d, &p, &cs.x, &cs.h0, &cs.c0, &cs.dy, dh_n, dc_n);
    for (name, buf, want) in [
        ("dx", Buf::Dx, &gw.dx),
        ("dh0", Buf::Dh, &gw.dh0),
        ("dc0", Buf::Dc, &gw.dc0),
        ("dw_ih", Buf::DwIh, &gw.dw_ih),
        ("dw_hh", Buf::DwHh, &gw.dw_hh),
        ("db_ih", Buf::Db, &gw.db_ih),
        ("db_hh", Buf::Db, &gw.db_hh),
    ] {
        assert_close(name, &bufs[buf as usize], want, 1e-4, 1e-5);
    }
}

#[test]
fn plan_matches_reference_on_cpu() {
    // (T, B, I, H): single step, single row, odd and even H, I != H.
    for (t, b, i, h) in [(1, 1, 1, 1), (1, 3, 5, 7), (5, 1, 4, 9), (7, 4, 6, 17), (4, 3, 8, 8)] {
        check_case(t, b, i, h, true);
    }
    check_case(3, 2, 5, 6, false);
}

#[test]
fn gemm_mapping_of_a_known_product() {
    // Row-major [[1,2,3],[4,5,6]] . [[1,0],[0,1],[1,1]] = [[4,5],[10,11]]
    use ulmfit_cuda::plan::{Gemm, Mat};
    let mut bufs: Vec<Vec<f32>> = Buf::ALL.iter().map(|_| vec![0.0; 6]).collect();
    bufs[Buf::X as usize] = vec![1., 2., 3., 4., 5., 6.];
    bufs[Buf::WIh as usize] = vec![1., 0., 0., 1., 1., 1.];
    let m = |buf, rows, cols, trans| Mat { buf, off: 0, rows, cols, trans };
    let g = Gemm { a: m(Buf::X, 2, 3, false), b: m(Buf::WIh, 3, 2, false), c: m(Buf::Dx, 2, 2, false) };
    sgemm_col_major(&mut bufs, &g.col_major());
    assert_eq!(&bufs[Buf::Dx as usize][..4], &[4., 5., 10., 11.], "plain product");
    // A^T . B^T with A stored [3,2] and B stored [2,3]: same product, transposed storage.
    bufs[Buf::X as usize] = vec![1., 4., 2., 5., 3., 6.];
    bufs[Buf::WIh as usize] = vec![1., 0., 1., 0., 1., 1.];
    let g = Gemm { a: m(Buf::X, 3, 2, true), b: m(Buf::WIh, 2, 3, true), c: m(Buf::Dx, 2, 2, false) };
    sgemm_col_major(&mut bufs, &g.col_major());
    assert_eq!(&bufs[Buf::Dx as usize][..4], &[4., 5., 10., 11.], "transposed operands");
}

#[test]
fn step_kinds_count_the_launches() {
    // Per pass: T recurrent GEMMs and T cell launches; 1 + 4 whole-sequence GEMMs; 2 + 2 copies.
    let d = LstmDims { t: 6, b: 2, i: 3, h: 4 };
    let count = |plan: &[Step], kind: &str| plan.iter().filter(|s| s.kind() == kind).count();
    let (fwd, bwd) = (forward_plan(d), backward_plan(d));
    let got: Vec<usize> =
        ["step-gemm", "cell", "seq-gemm", "copy"].iter().flat_map(|k| [count(&fwd, k), count(&bwd, k)]).collect();
    assert_eq!(got, [6, 6, 6, 6, 1, 4, 2, 2], "step kinds of {d:?}");
}
