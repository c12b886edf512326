//! The classifier's host-side orchestration, without a GPU: the BPT3C schedule against a
//! direct transcription of `ulmfit_trainer::classifier::Classifier::forward`'s loop, the
//! parameter layout (groups, alignment, round trip), and every operand of every LSTM plan
//! step of every chunk inside the buffer `clas::chunks::place` puts it in (the executor
//! passes raw addresses, so this is the bounds proof), the pooling table included. Also: the
//! kernels compile with NVRTC where libnvrtc loads.

mod common;

use ulmfit_cuda::clas::chunks::{place, Place, Schedule, PAD};
use ulmfit_cuda::clas::kernels::{CLAS_CU, CLAS_CU_NAME, NAMES};
use ulmfit_cuda::clas::params::{Layout, ALIGN};
use ulmfit_cuda::clas::{ClasConfig, ClasDropouts, ClasWeights};
use ulmfit_cuda::plan::{backward_plan, forward_plan, Buf, Step};

fn cfg() -> ClasConfig {
    ClasConfig {
        vocab: 60,
        emb: 16,
        hidden: 24,
        layers: 3,
        features: 50,
        classes: 3,
        bptt: 5,
        max_len: 12,
        batch: 5,
        drop: ClasDropouts::off(),
        seed: 3,
    }
}

/// Batches of sorted lengths: short, ragged, one document, equal lengths, long windows.
fn batches() -> Vec<Vec<usize>> {
    vec![vec![30, 22, 13, 7, 1], vec![12, 12, 5], vec![3, 2], vec![1, 1, 1, 1, 1], vec![29, 28, 27, 9, 4], vec![26]]
}

fn docs(lens: &[usize]) -> Vec<Vec<u32>> {
    lens.iter().enumerate().map(|(b, &l)| (0..l).map(|k| 2 + ((b * 7 + k * 3) % 50) as u32).collect()).collect()
}

#[test]
fn schedule_matches_the_cpu_loop() {
    let c = cfg();
    for lens in batches() {
        let s = Schedule::new(&lens, c.bptt, c.max_len).expect("valid lengths");
        // classifier.rs: fastai's windows over front-padded chunks.
        let longest = lens[0];
        let first = longest.saturating_sub(c.max_len).div_ceil(c.bptt) * c.bptt;
        let from: Vec<usize> = lens.iter().map(|l| first.saturating_sub((longest - l) / c.bptt * c.bptt)).collect();
        assert_eq!(s.from, from, "windows of {lens:?}");
        let d = docs(&lens);
        let ids = s.ids(&d);
        let mut k = 0;
        // The CPU loop (classifier.rs), transcribed.
        let starts: Vec<usize> = (0..lens[0]).step_by(c.bptt).collect();
        assert_eq!(s.chunks.len(), starts.len(), "chunks of {lens:?}");
        for (ch, start) in s.chunks.iter().zip(starts) {
            let len = c.bptt.min(lens[0] - start);
            let rows = lens.iter().take_while(|&&l| l > start).count();
            let kept = (0..rows).any(|b| start + len > from[b]);
            assert_eq!((ch.start, ch.len, ch.rows, ch.kept, ch.tok), (start, len, rows, kept, k), "{lens:?}");
            let cn = ch.start / c.bptt;
            for buf in [Buf::X, Buf::Hs, Buf::Cs, Buf::Act] {
                let direct: usize = (0..cn).map(|j| buf.len(s.dims(j, 7, 5))).sum();
                assert_eq!(s.offset(cn, buf, 7, 5), direct, "{lens:?} chunk {cn} {buf:?} offset");
            }
            for st in 0..len {
                for (b, doc) in d.iter().enumerate().take(rows) {
                    assert_eq!(ids[k], doc.get(start + st).copied().unwrap_or(PAD), "{lens:?} chunk at {start} {b}");
                    k += 1;
                }
            }
        }
        assert_eq!(ids.len(), k);
        assert_eq!(s.tokens(), k);
    }
    // A long first document with a short second: windows [35, 40) and [5, 10) (front padding
    // of 6 whole chunks), so the first chunk and those in the middle are not kept.
    let s = Schedule::new(&[40, 10], 5, 6).unwrap();
    assert_eq!(s.from, [35, 5]);
    let kept: Vec<bool> = s.chunks.iter().map(|c| c.kept).collect();
    assert_eq!(kept, [false, true, false, false, false, false, false, true]);
}

#[test]
fn schedule_rejects_bad_batches() {
    for (lens, want) in [(vec![], "no documents"), (vec![3, 0], "empty"), (vec![2, 5], "sorted")] {
        let err = Schedule::new(&lens, 5, 12).expect_err("must fail");
        assert!(err.contains(want), "{lens:?}: {err}");
    }
}

#[test]
fn layout_groups_are_contiguous_aligned_and_round_trip() {
    let c = cfg();
    let lay = Layout::new(&c);
    let mut w = ClasWeights::zeros(&c);
    let mut v = 1.0;
    let fill = |t: &mut Vec<f32>, v: &mut f32| {
        t.iter_mut().for_each(|x| {
            *x = *v;
            *v += 1.0;
        })
    };
    fill(&mut w.emb, &mut v);
    for l in &mut w.layers {
        for t in [&mut l.w_ih, &mut l.w_hh, &mut l.b_ih, &mut l.b_hh] {
            fill(t, &mut v);
        }
    }
    for blk in &mut w.head {
        for t in [&mut blk.gamma, &mut blk.beta, &mut blk.running_mean, &mut blk.running_var, &mut blk.weight] {
            fill(t, &mut v);
        }
    }
    assert_eq!(lay.groups.len(), c.groups());
    assert_eq!(lay.groups[0].0, 0);
    for pair in lay.groups.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "groups must tile the flat buffer: {:?}", lay.groups);
    }
    assert_eq!(lay.groups.last().unwrap().1, lay.total);
    // Adam's parts tile each group; exactly the batch-norm tensors are not decayed.
    let parts = lay.adam_parts();
    for (k, &(start, end)) in lay.groups.iter().enumerate() {
        let mine: Vec<_> = parts.iter().filter(|p| p.0 == k).collect();
        assert_eq!((mine[0].1, mine.last().unwrap().2), (start, end), "group {k}'s Adam parts: {mine:?}");
        assert!(mine.windows(2).all(|p| p[0].2 == p[1].1), "group {k}'s Adam parts do not tile it: {mine:?}");
    }
    for ((name, t), &off) in w.named().iter().zip(&lay.offsets) {
        let part = parts.iter().find(|p| p.1 <= off && off < p.2).expect("every tensor in an Adam part");
        assert!(off + t.len() <= part.2, "{name} straddles two Adam parts");
        assert_eq!(part.3, !name.starts_with("bn"), "{name}: decayed = {}", part.3);
    }
    let named = w.named();
    assert_eq!(named.len(), lay.offsets.len());
    for (k, ((name, t), &off)) in named.iter().zip(&lay.offsets).enumerate() {
        assert_eq!(off % ALIGN, 0, "{name} at {off} is not aligned");
        if let Some(&next) = lay.offsets.get(k + 1) {
            assert!(off + t.len() <= next, "{name} overlaps the next tensor");
        }
    }
    let (flat, stats) = lay.to_flat(&w);
    let mut back = ClasWeights::zeros(&c);
    lay.from_flat(&flat, Some(&stats), &mut back);
    assert_eq!(back.named(), w.named(), "round trip of the parameters");
    assert_eq!(back.stats(), w.stats(), "round trip of the running statistics");
}

/// Elements available in `p` for layer `l` (the allocations of clas::bufs).
fn capacity(c: &ClasConfig, lay: &Layout, s: &Schedule, l: usize, p: Place) -> usize {
    let d = c.layer_dims(l, c.bptt, c.batch);
    match p {
        Place::Params => lay.total,
        Place::MaskedWhh => 4 * d.h * d.h,
        Place::Zeros => c.batch * c.emb.max(c.hidden),
        Place::Arena(b) => s.arena_len(b, d.i, d.h),
        Place::Scratch(b) => b.len(d),
    }
}

#[test]
fn every_plan_operand_of_every_chunk_is_inside_its_buffer() {
    let c = cfg();
    let lay = Layout::new(&c);
    for lens in batches() {
        let s = Schedule::new(&lens, c.bptt, c.max_len).unwrap();
        for l in 0..c.layers {
            let (i, h) = {
                let d = c.layer_dims(l, 1, 1);
                (d.i, d.h)
            };
            let w = lay.layer(l);
            for (ci, ch) in s.chunks.iter().enumerate() {
                let d = s.dims(ci, i, h);
                let fits = |buf: Buf, off: usize, len: usize, what: &str| {
                    let (p, base) = place(&s, ci, w, i, h, buf);
                    let cap = capacity(&c, &lay, &s, l, p);
                    assert!(
                        base + off + len <= cap,
                        "{lens:?} layer {l} chunk {ci} {what}: {buf:?} at {p:?} {base}+{off}+{len} > {cap}"
                    );
                    // An arena part must stay inside its own chunk's region (H0/C0 read the previous one).
                    if let Place::Arena(ab) = p {
                        let own = if matches!(buf, Buf::H0 | Buf::C0) { ci - 1 } else { ci };
                        let region = s.offset(own, ab, i, h)..s.offset(own + 1, ab, i, h);
                        assert!(
                            region.contains(&(base + off)) && base + off + len <= region.end,
                            "{lens:?} layer {l} chunk {ci} {what}: {buf:?} leaves its chunk region"
                        );
                    }
                };
                for step in forward_plan(d).iter().chain(&backward_plan(d)) {
                    match *step {
                        Step::Gemm(g) => {
                            g.mnk();
                            for m in [g.a, g.b, g.c] {
                                fits(m.buf, m.off, m.rows * m.cols, "gemm");
                            }
                        }
                        Step::Copy { src, dst, off, len } => {
                            fits(src, 0, len, "copy src");
                            fits(dst, off, len, "copy dst");
                        }
                        // The cells read and write whole buffers of the chunk's dims.
                        Step::CellFwd { .. } => {
                            for b in [Buf::Xw, Buf::Hw, Buf::BIh, Buf::BHh, Buf::Hs, Buf::Cs, Buf::Act] {
                                fits(b, 0, b.len(d), "cell fwd");
                            }
                        }
                        Step::CellBwd { .. } => {
                            for b in [Buf::Dy, Buf::Dh, Buf::Dc, Buf::Cs, Buf::Act, Buf::Dgates] {
                                fits(b, 0, b.len(d), "cell bwd");
                            }
                        }
                    }
                }
                // Hidden dropout into the next layer's X, embedding into layer 0's X.
                fits(Buf::X, 0, ch.len * ch.rows * i, "layer input");
                fits(Buf::Hs, ch.rows * h, ch.len * ch.rows * h, "layer output");
                fits(Buf::Dx, 0, ch.len * ch.rows * i, "dx");
                fits(Buf::Dy, 0, ch.len * ch.rows * h, "dy");
            }
        }
        // The pooling table: every pooled step of every document reads its own chunk's Hs.
        let e = c.emb;
        for (b, (&len, &from)) in s.lens.iter().zip(&s.from).enumerate() {
            for pos in from..len {
                let ci = pos / c.bptt;
                let ch = s.chunks[ci];
                assert!(
                    ch.kept && b < ch.rows && pos - ch.start < ch.len,
                    "{lens:?}: doc {b} step {pos} in chunk {ci} {ch:?}"
                );
                let at = s.offset(ci, Buf::Hs, e, e) + ((pos % c.bptt + 1) * ch.rows + b) * e;
                assert!(at + e <= s.offset(ci + 1, Buf::Hs, e, e), "{lens:?}: doc {b} step {pos} leaves chunk {ci}");
            }
        }
        // AR/TAR (`clas_ar_tar_bwd`): document b's steps q < stop_b from the window on lie in
        // kept chunks, and they and their neighbours q +- 1 below stop_b in chunks that run b.
        let (sl, first) = (s.lens[0], s.from[0]);
        for (b, &len) in s.lens.iter().enumerate() {
            let front = (sl - len) / c.bptt * c.bptt;
            let stop = (len.div_ceil(c.bptt) * c.bptt).min(sl - front);
            for q in first.saturating_sub(front)..stop {
                assert!(s.chunks[q / c.bptt].kept, "{lens:?}: doc {b} step {q} (AR/TAR) in a chunk not kept");
                for t in [q.wrapping_sub(1), q, q + 1].into_iter().filter(|&t| t < stop) {
                    let ch = s.chunks[t / c.bptt];
                    assert!(b < ch.rows && t - ch.start < ch.len, "{lens:?}: doc {b} step {t} (AR/TAR) in {ch:?}");
                }
            }
        }
    }
}

#[test]
fn clas_kernels_compile_with_nvrtc() {
    common::compiles_with_every_kernel(CLAS_CU_NAME, CLAS_CU, &NAMES);
}
