//! Replays the LM step's op lists (`ulmfit_cuda::lm::steps`) on the CPU, with line-for-line
//! twins of the kernels in kernels/lm_*.cu and kernels/lstm_cell.cu and cuBLAS's
//! column-major GEMM semantics, and checks loss, every gradient, the carried state and the
//! Adam update against `ulmfit_cuda::lm::reference`, dropout off and on.
//!
//! Runs without a GPU: it proves the orchestration (which buffer, which offset, which mask,
//! in which order) and the kernels' index math, so a mismatch on the GPU can only come from
//! the CUDA code itself or the driver. Every scratch buffer starts as NaN, so an op that
//! reads what nothing wrote shows up.

mod common;

use common::{assert_close, lm_batch};
use ulmfit_cuda::lm::kernels::NORM_BLOCKS;
use ulmfit_cuda::lm::mask::{keep_scale, mask_key, Mask};
use ulmfit_cuda::lm::params::Layout;
use ulmfit_cuda::lm::phases::phases;
use ulmfit_cuda::lm::reference::{adam_lm, clip_factor, forward_backward, zero_state, State};
use ulmfit_cuda::lm::steps::{
    backward_ops, buf_len, check_ops, forward_ops, layer_at, raw_at, update_ops, At, LmBuf, Op,
};
use ulmfit_cuda::lm::{Dropouts, Hyper, LmConfig, LmWeights, HYPER_LEN, PAD};
use ulmfit_cuda::plan::{Buf, Gemm};

/// Host copies of every device buffer of the step.
struct Host {
    cfg: LmConfig,
    layout: Layout,
    bufs: Vec<(LmBuf, Vec<f32>)>,
    ids: Vec<u32>,
    targets: Vec<u32>,
    step: u32,
}

impl Host {
    /// Parameters `w`, zero moments and state, ones, `h`; everything else NaN (but the
    /// gaps between the gradients' slots, which nothing writes: 0, as allocated on the GPU).
    fn new(cfg: &LmConfig, w: &LmWeights, h: &Hyper) -> Host {
        let layout = Layout::new(cfg);
        let mut nan = LmWeights::zeros(cfg);
        nan.unflatten(&vec![f32::NAN; nan.len()]);
        let mut all = vec![
            LmBuf::Params,
            LmBuf::Grads,
            LmBuf::AdamM,
            LmBuf::AdamV,
            LmBuf::Hyper,
            LmBuf::Dropped,
            LmBuf::DDropped,
            LmBuf::Logits,
            LmBuf::Ce,
            LmBuf::Ar,
            LmBuf::Tar,
            LmBuf::Loss,
            LmBuf::Partial,
            LmBuf::Clip,
            LmBuf::Ones,
        ];
        for l in 0..cfg.layers {
            for b in Buf::ALL {
                if layer_at(&layout, l, b, 0).buf == LmBuf::Layer(l, b) {
                    all.push(LmBuf::Layer(l, b));
                }
            }
        }
        let bufs = all
            .into_iter()
            .map(|b| {
                let n = buf_len(cfg, &layout, b);
                let v = match b {
                    LmBuf::Params => layout.to_flat(w),
                    LmBuf::Grads => layout.to_flat(&nan),
                    LmBuf::Hyper => layout.groups().iter().flat_map(|_| h.to_slot(false, 0)).collect(),
                    LmBuf::Ones => vec![1.0; n],
                    LmBuf::AdamM | LmBuf::AdamV => vec![0.0; n],
                    LmBuf::Layer(_, Buf::H0 | Buf::C0 | Buf::DhN | Buf::DcN) => vec![0.0; n],
                    _ => vec![f32::NAN; n],
                };
                (b, v)
            })
            .collect();
        Host { cfg: cfg.clone(), layout, bufs, ids: vec![], targets: vec![], step: 0 }
    }

    fn buf(&mut self, b: LmBuf) -> &mut Vec<f32> {
        let found = self.bufs.iter_mut().find(|(k, _)| *k == b);
        &mut found.unwrap_or_else(|| panic!("no host buffer {b:?}")).1
    }

    /// `len` elements from `a`.
    fn read(&mut self, a: At, len: usize) -> Vec<f32> {
        self.buf(a.buf)[a.off..a.off + len].to_vec()
    }

    fn write(&mut self, a: At, v: &[f32]) {
        self.buf(a.buf)[a.off..a.off + v.len()].copy_from_slice(v);
    }

    fn layer(&mut self, l: usize, b: Buf) -> At {
        layer_at(&self.layout, l, b, 0)
    }

    fn state(&mut self) -> State {
        (0..self.cfg.layers)
            .map(|l| {
                let d = self.cfg.layer_dims()[l];
                let (h, c) = (self.layer(l, Buf::H0), self.layer(l, Buf::C0));
                (self.read(h, d.b * d.h), self.read(c, d.b * d.h))
            })
            .collect()
    }
}

fn key(h: &Host, m: Mask) -> u64 {
    mask_key(h.cfg.seed, h.step, m.id())
}

/// cublasSgemm semantics (column-major, alpha 1, beta 0) of a row-major [`Gemm`], operands
/// resolved by `at`.
fn gemm<B: Copy + std::fmt::Debug>(h: &mut Host, g: &Gemm<B>, at: impl Fn(B, usize) -> At) {
    let cm = g.col_major();
    let span = |rows: usize, cols: usize| rows * cols;
    let a = h.read(at(cm.a.buf, cm.a.off), span(cm.a.rows, cm.a.cols));
    let b = h.read(at(cm.b.buf, cm.b.off), span(cm.b.rows, cm.b.cols));
    let cat = at(cm.c.buf, cm.c.off);
    let mut c = h.read(cat, span(cm.c.rows, cm.c.cols));
    for j in 0..cm.n {
        for i in 0..cm.m {
            let av = |l: usize| {
                if cm.transa {
                    a[l + i * cm.lda]
                } else {
                    a[i + l * cm.lda]
                }
            };
            let bv = |l: usize| {
                if cm.transb {
                    b[j + l * cm.ldb]
                } else {
                    b[l + j * cm.ldb]
                }
            };
            c[i + j * cm.ldc] = (0..cm.k).map(|l| av(l) * bv(l)).sum();
        }
    }
    h.write(cat, &c);
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Twin of `lstm_cell_fwd` for layer l, step t.
fn cell_fwd(h: &mut Host, l: usize, t: usize) {
    let d = h.cfg.layer_dims()[l];
    let (bn, hn) = (d.b, d.h);
    let n = bn * hn;
    let g4 = |h: &mut Host, b: Buf, len: usize| {
        let a = h.layer(l, b);
        h.read(a, len)
    };
    let (xw, hw) = (g4(h, Buf::Xw, d.t * bn * 4 * hn), g4(h, Buf::Hw, bn * 4 * hn));
    let (bi, bh) = (g4(h, Buf::BIh, 4 * hn), g4(h, Buf::BHh, 4 * hn));
    let (mut hs, mut cs) = (g4(h, Buf::Hs, (d.t + 1) * n), g4(h, Buf::Cs, (d.t + 1) * n));
    let mut act = g4(h, Buf::Act, d.t * bn * 4 * hn);
    for idx in 0..n {
        let (b, j) = (idx / hn, idx % hn);
        let row = t * bn + b;
        let pre =
            |k: usize| xw[row * 4 * hn + k * hn + j] + hw[b * 4 * hn + k * hn + j] + bi[k * hn + j] + bh[k * hn + j];
        let (i, f, g, o) = (sigmoid(pre(0)), sigmoid(pre(1)), pre(2).tanh(), sigmoid(pre(3)));
        let c = f * cs[t * n + idx] + i * g;
        cs[(t + 1) * n + idx] = c;
        hs[(t + 1) * n + idx] = o * c.tanh();
        let ar = &mut act[row * 4 * hn..];
        (ar[j], ar[hn + j], ar[2 * hn + j], ar[3 * hn + j]) = (i, f, g, o);
    }
    for (b, v) in [(Buf::Hs, hs), (Buf::Cs, cs), (Buf::Act, act)] {
        let a = h.layer(l, b);
        h.write(a, &v);
    }
}

/// Twin of `lstm_cell_bwd` for layer l, step t.
fn cell_bwd(h: &mut Host, l: usize, t: usize) {
    let d = h.cfg.layer_dims()[l];
    let (bn, hn) = (d.b, d.h);
    let n = bn * hn;
    let g4 = |h: &mut Host, b: Buf, len: usize| {
        let a = h.layer(l, b);
        h.read(a, len)
    };
    let (act, cs) = (g4(h, Buf::Act, d.t * bn * 4 * hn), g4(h, Buf::Cs, (d.t + 1) * n));
    let (dy, dh) = (g4(h, Buf::Dy, d.t * n), g4(h, Buf::Dh, n));
    let (mut dc, mut dg) = (g4(h, Buf::Dc, n), g4(h, Buf::Dgates, d.t * bn * 4 * hn));
    for idx in 0..n {
        let (b, j) = (idx / hn, idx % hn);
        let row = t * bn + b;
        let ar = &act[row * 4 * hn..];
        let (i, f, g, o) = (ar[j], ar[hn + j], ar[2 * hn + j], ar[3 * hn + j]);
        let c_prev = cs[t * n + idx];
        let tc = cs[(t + 1) * n + idx].tanh();
        let dh_t = dy[t * n + idx] + dh[idx];
        let dc_t = dc[idx] + dh_t * o * (1.0 - tc * tc);
        dc[idx] = dc_t * f;
        let dr = &mut dg[row * 4 * hn..];
        dr[j] = dc_t * g * i * (1.0 - i);
        dr[hn + j] = dc_t * c_prev * f * (1.0 - f);
        dr[2 * hn + j] = dc_t * i * (1.0 - g * g);
        dr[3 * hn + j] = dh_t * tc * o * (1.0 - o);
    }
    for (b, v) in [(Buf::Dc, dc), (Buf::Dgates, dg)] {
        let a = h.layer(l, b);
        h.write(a, &v);
    }
}

/// Runs one op on the host buffers; each arm is the twin of the kernel the GPU executor
/// (`LmCuda::run`) launches for it, with the same implicit operands.
fn run(h: &mut Host, op: &Op) {
    let c = h.cfg.clone();
    let (n, bn, e, nv) = (c.rows(), c.b, c.emb, c.vocab);
    let at = |buf: LmBuf, off: usize| At { buf, off };
    match *op {
        Op::StepBegin => h.step += 1,
        Op::EmbedFwd => {
            let (kw, ki) = (key(h, Mask::Word), key(h, Mask::Input));
            let emb = h.read(at(LmBuf::Params, h.layout.emb), nv * e);
            let x: Vec<f32> = (0..n * e)
                .map(|k| {
                    let (r, col) = (k / e, k % e);
                    let id = h.ids[r] as usize;
                    emb[id * e + col]
                        * keep_scale(kw, id as u64, c.drop.embed)
                        * keep_scale(ki, ((r % bn) * e + col) as u64, c.drop.input)
                })
                .collect();
            let x0 = h.layer(0, Buf::X);
            h.write(x0, &x);
        }
        Op::Dropout { out, inp, n, period, p, mask } => {
            let k = key(h, mask);
            let v: Vec<f32> =
                h.read(inp, n).iter().enumerate().map(|(i, x)| x * keep_scale(k, (i % period) as u64, p)).collect();
            h.write(out, &v);
        }
        Op::Layer { l, step } => match step {
            ulmfit_cuda::plan::Step::Gemm(g) => {
                let layout = h.layout.clone();
                gemm(h, &g, |b, off| layer_at(&layout, l, b, off));
            }
            ulmfit_cuda::plan::Step::CellFwd { t } => cell_fwd(h, l, t),
            ulmfit_cuda::plan::Step::CellBwd { t } => cell_bwd(h, l, t),
            ulmfit_cuda::plan::Step::Copy { src, dst, off, len } => {
                let s = h.read(layer_at(&h.layout, l, src, 0), len);
                h.write(layer_at(&h.layout, l, dst, off), &s);
            }
        },
        Op::Copy { dst, src, len } => {
            let s = h.read(src, len);
            h.write(dst, &s);
        }
        Op::RegFwd => {
            let k = key(h, Mask::Output);
            let raw = h.read(raw_at(&c), n * e);
            let (mut dropped, mut ar, mut tar) = (vec![0.0; n * e], vec![0.0; n], vec![0.0; n]);
            for r in 0..n {
                for col in 0..e {
                    let x = raw[r * e + col];
                    let d = x * keep_scale(k, ((r % bn) * e + col) as u64, c.drop.output);
                    dropped[r * e + col] = d;
                    ar[r] += d * d;
                    if r >= bn {
                        tar[r] += (x - raw[(r - bn) * e + col]).powi(2);
                    }
                }
            }
            h.write(at(LmBuf::Dropped, 0), &dropped);
            h.write(at(LmBuf::Ar, 0), &ar);
            h.write(at(LmBuf::Tar, 0), &tar);
        }
        Op::Gemm(g) => gemm(h, &g, at),
        Op::Xent => {
            let vp = c.vocab_padded();
            let bias = h.read(at(LmBuf::Params, h.layout.dec_bias), nv);
            let mut z = h.read(at(LmBuf::Logits, 0), n * vp);
            let mut ce = vec![0.0f32; n];
            for r in 0..n {
                z[r * vp + nv..(r + 1) * vp].fill(0.0);
                let row = &mut z[r * vp..r * vp + nv];
                row.iter_mut().zip(&bias).for_each(|(x, b)| *x += b);
                let mx = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let lse = mx + row.iter().map(|&x| (x - mx).exp()).sum::<f32>().ln();
                let tg = h.targets[r] as usize;
                ce[r] = lse - row[tg];
                for (v, x) in row.iter_mut().enumerate() {
                    *x = ((*x - lse).exp() - if v == tg { 1.0 } else { 0.0 }) / n as f32;
                }
            }
            h.write(at(LmBuf::Logits, 0), &z);
            h.write(at(LmBuf::Ce, 0), &ce);
        }
        Op::BiasGrad => {
            let vp = c.vocab_padded();
            let dz = h.read(at(LmBuf::Logits, 0), n * vp);
            let dbias: Vec<f32> = (0..vp).map(|v| (0..n).map(|r| dz[r * vp + v]).sum()).collect();
            h.write(at(LmBuf::Grads, h.layout.dec_bias), &dbias);
        }
        Op::LossSum => {
            let sum = |h: &mut Host, b: LmBuf| h.read(at(b, 0), n).iter().sum::<f32>();
            let (ce, ar, tar) = (sum(h, LmBuf::Ce), sum(h, LmBuf::Ar), sum(h, LmBuf::Tar));
            let tar_div = ((c.t - 1) * bn * e) as f32;
            let ce = ce / n as f32;
            let ar = c.alpha * ar / (n * e) as f32;
            let tar = if tar_div > 0.0 { c.beta * tar / tar_div } else { 0.0 };
            h.write(at(LmBuf::Loss, 0), &[ce + ar + tar, ce, ar, tar]);
        }
        Op::RegBwd => {
            let k = key(h, Mask::Output);
            let raw = h.read(raw_at(&c), n * e);
            let dd = h.read(at(LmBuf::DDropped, 0), n * e);
            let dropped = h.read(at(LmBuf::Dropped, 0), n * e);
            let (be, ar_div, tar_div) = (bn * e, (n * e) as f32, ((c.t - 1) * bn * e) as f32);
            let c_tar = if tar_div > 0.0 { 2.0 * c.beta / tar_div } else { 0.0 };
            let dy: Vec<f32> = (0..n * e)
                .map(|k2| {
                    let t = k2 / be;
                    let s = keep_scale(k, (k2 % be) as u64, c.drop.output);
                    let mut g = s * (dd[k2] + 2.0 * c.alpha / ar_div * dropped[k2]);
                    if t > 0 {
                        g += c_tar * (raw[k2] - raw[k2 - be]);
                    }
                    if t + 1 < c.t {
                        g -= c_tar * (raw[k2 + be] - raw[k2]);
                    }
                    g
                })
                .collect();
            let top = h.layer(c.layers - 1, Buf::Dy);
            h.write(top, &dy);
        }
        Op::EmbedBwd => {
            let (kw, ki) = (key(h, Mask::Word), key(h, Mask::Input));
            let dx0 = h.layer(0, Buf::Dx);
            let dx = h.read(dx0, n * e);
            let demb_at = at(LmBuf::Grads, h.layout.emb);
            let mut demb = h.read(demb_at, nv * e);
            // The block of the first row holding a word owns that word's row.
            for p in 0..n {
                let v = h.ids[p];
                if h.ids[..p].contains(&v) || v == PAD {
                    continue;
                }
                let word = keep_scale(kw, v as u64, c.drop.embed);
                for col in 0..e {
                    let mut acc = 0.0f32;
                    for q in p..n {
                        if h.ids[q] == v {
                            let s = keep_scale(ki, ((q % bn) * e + col) as u64, c.drop.input);
                            acc += dx[q * e + col] * s;
                        }
                    }
                    demb[v as usize * e + col] += word * acc;
                }
            }
            h.write(demb_at, &demb);
        }
        Op::SumsqPartial { group } => {
            let (off, len) = h.layout.groups()[group];
            let frozen = h.read(at(LmBuf::Hyper, group * HYPER_LEN + 6), 1)[0] != 0.0;
            let g = h.read(at(LmBuf::Grads, off), len);
            let mut partial = vec![0.0f32; NORM_BLOCKS];
            for (i, x) in g.iter().enumerate().filter(|_| !frozen) {
                partial[(i % (NORM_BLOCKS * 256)) / 256] += x * x;
            }
            h.write(at(LmBuf::Partial, group * NORM_BLOCKS), &partial);
        }
        Op::ClipScale => {
            let parts = h.layout.groups().len() * NORM_BLOCKS;
            let norm = h.read(at(LmBuf::Partial, 0), parts).iter().sum::<f32>().sqrt();
            let max_norm = h.read(at(LmBuf::Hyper, 5), 1)[0];
            let coef = max_norm / (norm + 1e-6);
            let f = if max_norm > 0.0 && coef < 1.0 { coef } else { 1.0 };
            h.write(at(LmBuf::Clip, 0), &[norm, f]);
        }
        Op::Adam { group, off, len: p, decay } => {
            let hy = h.read(at(LmBuf::Hyper, group * HYPER_LEN), HYPER_LEN);
            if hy[6] != 0.0 {
                return;
            }
            let (lr, b1, b2, eps) = (hy[0], hy[1], hy[2], hy[3]);
            let wd = if decay { hy[4] } else { 0.0 };
            let t = h.step as f32 - hy[7];
            let (c1, c2) = (1.0 - b1.powf(t), 1.0 - b2.powf(t));
            let scale = h.read(at(LmBuf::Clip, 1), 1)[0];
            let g = h.read(at(LmBuf::Grads, off), p);
            let (mut w, mut m, mut v) =
                (h.read(at(LmBuf::Params, off), p), h.read(at(LmBuf::AdamM, off), p), h.read(at(LmBuf::AdamV, off), p));
            for i in 0..p {
                let gi = g[i] * scale;
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                w[i] = w[i] * (1.0 - lr * wd) - lr * ((m[i] / c1) / ((v[i] / c2).sqrt() + eps));
            }
            h.write(at(LmBuf::Params, off), &w);
            h.write(at(LmBuf::AdamM, off), &m);
            h.write(at(LmBuf::AdamV, off), &v);
        }
    }
}

/// Two steps (state carried, update after each) replayed against the reference.
fn replay(cfg: &LmConfig) {
    println!("replay {cfg:?}");
    let layout = Layout::new(cfg);
    let (fwd, bwd, upd) = (forward_ops(cfg, &layout), backward_ops(cfg, &layout), update_ops(&layout));
    for ops in [&fwd, &bwd, &upd] {
        check_ops(cfg, &layout, ops);
    }
    let hy = Hyper { lr: 1e-2, weight_decay: 0.1, clip: 0.05, ..Hyper::default() };
    let mut w = LmWeights::init(cfg, 5);
    let mut host = Host::new(cfg, &w, &hy);
    let (mut state, mut flat) = (zero_state(cfg), w.flatten());
    let (mut m, mut v) = (vec![0.0f32; flat.len()], vec![0.0f32; flat.len()]);
    for step in 1..=2u32 {
        let (ids, targets) = lm_batch(cfg, step);
        (host.ids, host.targets) = (ids.clone(), targets.clone());
        fwd.iter().chain(&bwd).for_each(|op| run(&mut host, op));
        w.unflatten(&flat);
        let want = forward_backward(cfg, &w, &state, &ids, &targets, step);
        let loss = host.read(At { buf: LmBuf::Loss, off: 0 }, 4);
        assert_close("loss", &loss, &want.loss, 1e-4, 1e-5);
        let mut got = LmWeights::zeros(cfg);
        let grads = host.read(At { buf: LmBuf::Grads, off: 0 }, layout.total);
        assert!(grads.iter().all(|g| g.is_finite()), "a gradient slot or gap was never written");
        layout.from_flat(&grads, &mut got);
        for ((name, g), (_, r)) in got.named().into_iter().zip(want.grads.named()) {
            assert_close(&name, g, r, 1e-4, 1e-5);
        }
        for (l, ((gh, gc), (wh, wc))) in host.state().iter().zip(&want.state).enumerate() {
            assert_close(&format!("h_n{l}"), gh, wh, 1e-4, 1e-5);
            assert_close(&format!("c_n{l}"), gc, wc, 1e-4, 1e-5);
        }
        upd.iter().for_each(|op| run(&mut host, op));
        let g = got.flatten();
        let (norm, factor) = clip_factor(&g, hy.clip);
        let clip = host.read(At { buf: LmBuf::Clip, off: 0 }, 2);
        assert_close("clip", &clip, &[norm, factor], 1e-5, 0.0);
        adam_lm(cfg, &mut flat, &mut m, &mut v, &g, &hy, step, factor);
        let mut params = LmWeights::zeros(cfg);
        let device = host.read(At { buf: LmBuf::Params, off: 0 }, layout.total);
        layout.from_flat(&device, &mut params);
        assert_close("params after adam", &params.flatten(), &flat, 1e-5, 1e-6);
        assert!(layout.to_flat(&params) == device, "the padding of the parameters is no longer 0");
        state = want.state;
    }
}

#[test]
fn lm_ops_replayed_on_cpu_match_reference() {
    let base = LmConfig {
        vocab: 50,
        emb: 8,
        hidden: 12,
        layers: 3,
        t: 5,
        b: 3,
        drop: Dropouts::off(),
        alpha: 2.0,
        beta: 1.0,
        seed: 11,
    };
    replay(&base);
    let drop = Dropouts { embed: 0.1, input: 0.2, weight: 0.2, hidden: 0.2, output: 0.2 };
    replay(&LmConfig { drop, ..base.clone() });
    // Two layers of width E, one time step: the loops' edges.
    replay(&LmConfig { layers: 2, hidden: 8, t: 1, drop, ..base });
}

#[test]
fn phases_cover_every_op_once_in_order() {
    let cfg = LmConfig { drop: Dropouts::awd_lstm(), ..LmConfig::awd_lstm(50, 4, 2) };
    let layout = Layout::new(&cfg);
    let lists = [forward_ops(&cfg, &layout), backward_ops(&cfg, &layout), update_ops(&layout)];
    let parts = phases(&lists);
    let joined: Vec<Op> = parts.iter().flat_map(|(_, ops)| ops.clone()).collect();
    assert!(joined == lists.concat(), "phases lost or reordered ops");
    let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
    println!("phases: {names:?}");
    for (k, name) in names.iter().enumerate() {
        assert!(!names[..k].contains(name), "phase {name} is cut in two: {names:?}");
    }
    for l in 0..cfg.layers {
        for dir in ["fwd", "bwd"] {
            let want = format!("lstm{l} {dir}");
            assert!(names.contains(&want.as_str()), "no phase {want}: {names:?}");
        }
    }
    assert_eq!(names.len(), 2 * cfg.layers + 10, "phases: {names:?}");
}
