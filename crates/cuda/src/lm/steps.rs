//! The LM step as lists of device operations on named buffers: [`forward_ops`],
//! [`backward_ops`] (the forward's list in reverse, llm.c's shape) and [`update_ops`].
//!
//! `super::model` runs the lists on the GPU (or captures them into CUDA graphs);
//! `tests/lm_replay.rs` replays the same lists on the CPU with line-for-line twins of the
//! kernels and checks them against `super::reference`, so the orchestration (buffers,
//! offsets, masks, order) is proven without a GPU. LSTM layers appear as the steps of the
//! fused layer's plans (`crate::plan`) with the layer's buffers mapped by [`layer_at`].
//! Dimensions: T steps, B batch, E embedding width, V vocabulary (Vp padded, see
//! `LmConfig::vocab_padded`), N = T*B rows.

use ulmfit_lstm::LstmDims;

use super::config::LmConfig;
use super::mask::Mask;
use super::params::Layout;
use crate::plan::{backward_plan, forward_plan, mat, transposed, Buf, Gemm, Step};

/// A device buffer of the LM step (f32 unless said).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LmBuf {
    /// Flat parameters [P] (`Layout`).
    Params,
    /// Flat gradients [P].
    Grads,
    /// Adam first moments [P].
    AdamM,
    /// Adam second moments [P].
    AdamV,
    /// Token ids [N], u32.
    Ids,
    /// Next-token targets [N], u32.
    Targets,
    /// The optimizer step [1], u32; also the mask counter.
    Step,
    /// One slot per parameter group (`Hyper::to_slot`), [G * HYPER_LEN].
    Hyper,
    /// Top output after output dropout [N, E].
    Dropped,
    /// dL/ddropped [N, E].
    DDropped,
    /// Logits [N, Vp] (row stride Vp, columns V.. padding), then dL/dlogits in place.
    Logits,
    /// Per-row cross-entropy [N].
    Ce,
    /// Per-row AR sums [N].
    Ar,
    /// Per-row TAR sums [N].
    Tar,
    /// [total, ce, alpha AR, beta TAR].
    Loss,
    /// Partial sums of squared gradients, NORM_BLOCKS per parameter group [G * NORM_BLOCKS].
    Partial,
    /// [gradient norm, clip factor].
    Clip,
    /// N ones.
    Ones,
    /// A buffer owned by LSTM layer l (see [`layer_at`]).
    Layer(usize, Buf),
}

/// Element `off` of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    /// The buffer.
    pub buf: LmBuf,
    /// Element offset.
    pub off: usize,
}

fn at(buf: LmBuf, off: usize) -> At {
    At { buf, off }
}

/// One device operation; the kernels' other arguments follow from the config (see the
/// kernel wrappers in `super::kernels` and the headers of kernels/lm_*.cu).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// `lm_step_begin`: Step += 1.
    StepBegin,
    /// `lm_embed_fwd`: Layer(0, X) = Params[emb][Ids] with word and input dropout.
    EmbedFwd,
    /// `lm_dropout`: out[k] = inp[k] * mask(k % period), k < n (out may equal inp).
    Dropout {
        /// Output.
        out: At,
        /// Input.
        inp: At,
        /// Elements.
        n: usize,
        /// Mask length (variational masks repeat every B*H).
        period: usize,
        /// Drop probability.
        p: f32,
        /// Which mask.
        mask: Mask,
    },
    /// Step of layer l's forward or backward plan, on the buffers of [`layer_at`].
    Layer {
        /// Layer index.
        l: usize,
        /// The step.
        step: Step,
    },
    /// Device copy of `len` elements.
    Copy {
        /// Destination.
        dst: At,
        /// Source.
        src: At,
        /// Elements.
        len: usize,
    },
    /// `lm_reg_fwd`: Dropped, Ar, Tar from the top layer's output ([`raw_at`]).
    RegFwd,
    /// A decoder GEMM.
    Gemm(Gemm<LmBuf>),
    /// `lm_xent`: Ce, and dL/dlogits in Logits, from Logits, the decoder bias and Targets.
    Xent,
    /// `lm_bias_grad`: the decoder bias's gradient, column sums of dL/dlogits over N rows.
    BiasGrad,
    /// `lm_loss_sum`: Loss from Ce, Ar, Tar.
    LossSum,
    /// `lm_reg_bwd`: the top layer's Dy from DDropped, Dropped and the raw output.
    RegBwd,
    /// `lm_embed_bwd`: Grads[emb] += scatter of Layer(0, Dx) by Ids (none into `PAD`'s row).
    EmbedBwd,
    /// `lm_sumsq_partial`: group g's share of Partial from its range of Grads.
    SumsqPartial {
        /// Parameter group (`Layout::groups`).
        group: usize,
    },
    /// `lm_clip_scale`: Clip from Partial and Hyper.
    ClipScale,
    /// `lm_adam`: a part of group g's range of Params, AdamM, AdamV from Grads, Clip, its
    /// Hyper slot and Step (`Layout::adam_parts`).
    Adam {
        /// Parameter group (`Layout::groups`).
        group: usize,
        /// First element in the flat buffers.
        off: usize,
        /// Elements.
        len: usize,
        /// Whether the group's weight decay applies.
        decay: bool,
    },
}

/// Where layer l's plan buffer `buf` lives: weights and their gradients in the flat buffers
/// (dW_hh w.r.t. the masked copy, masked in place after the layer's backward; one bias
/// gradient in b_ih's slot, copied to b_hh's), the ones row shared, the rest owned.
pub fn layer_at(layout: &Layout, l: usize, buf: Buf, off: usize) -> At {
    let [w_ih, _, b_ih, b_hh] = layout.layers[l];
    let w_hh = layout.layers[l][1];
    match buf {
        Buf::WIh => at(LmBuf::Params, w_ih + off),
        Buf::BIh => at(LmBuf::Params, b_ih + off),
        Buf::BHh => at(LmBuf::Params, b_hh + off),
        Buf::DwIh => at(LmBuf::Grads, w_ih + off),
        Buf::DwHh => at(LmBuf::Grads, w_hh + off),
        Buf::Db => at(LmBuf::Grads, b_ih + off),
        Buf::Ones => at(LmBuf::Ones, off),
        owned => at(LmBuf::Layer(l, owned), off),
    }
}

/// The top layer's output hs[1..] [N, E] (raw: before output dropout).
pub fn raw_at(cfg: &LmConfig) -> At {
    let l = cfg.layers - 1;
    at(LmBuf::Layer(l, Buf::Hs), cfg.b * cfg.emb)
}

/// Number of elements of `buf` (u32 buffers count u32s).
pub fn buf_len(cfg: &LmConfig, layout: &Layout, buf: LmBuf) -> usize {
    let (n, e, v) = (cfg.rows(), cfg.emb, cfg.vocab_padded());
    match buf {
        LmBuf::Params | LmBuf::Grads | LmBuf::AdamM | LmBuf::AdamV => layout.total,
        LmBuf::Ids | LmBuf::Targets | LmBuf::Ce | LmBuf::Ar | LmBuf::Tar | LmBuf::Ones => n,
        LmBuf::Step => 1,
        LmBuf::Hyper => layout.groups().len() * super::config::HYPER_LEN,
        LmBuf::Dropped | LmBuf::DDropped => n * e,
        LmBuf::Logits => n * v,
        LmBuf::Loss => 4,
        LmBuf::Partial => layout.groups().len() * super::kernels::NORM_BLOCKS,
        LmBuf::Clip => 2,
        LmBuf::Layer(l, b) => b.len(cfg.layer_dims()[l]),
    }
}

/// The decoder's GEMMs over the padded vocabulary Vp (padding rows of the embedding and
/// columns of the logits are 0, so they add nothing): logits = dropped . emb^T (forward),
/// then ddropped = dlogits . emb and demb = dlogits^T . dropped (overwrites the embedding's
/// gradient slot; backward). Bias and softmax are in `lm_xent`, the bias gradient in
/// `lm_bias_grad`.
pub fn decoder_gemms(cfg: &LmConfig, layout: &Layout) -> [Gemm<LmBuf>; 3] {
    let (n, e, vp) = (cfg.rows(), cfg.emb, cfg.vocab_padded());
    let emb = mat(LmBuf::Params, layout.emb, vp, e);
    let logits = mat(LmBuf::Logits, 0, n, vp);
    let dropped = mat(LmBuf::Dropped, 0, n, e);
    [
        Gemm { a: dropped, b: transposed(emb), c: logits },
        Gemm { a: logits, b: emb, c: mat(LmBuf::DDropped, 0, n, e) },
        Gemm { a: transposed(logits), b: dropped, c: mat(LmBuf::Grads, layout.emb, vp, e) },
    ]
}

fn layer_steps(l: usize, plan: Vec<Step>) -> impl Iterator<Item = Op> {
    plan.into_iter().map(move |step| Op::Layer { l, step })
}

/// DropConnect of layer l: masked W_hh copy (forward) or dW_hh masked in place (backward).
fn weight_drop(cfg: &LmConfig, layout: &Layout, l: usize, d: LstmDims, backward: bool) -> Op {
    let n = 4 * d.h * d.h;
    let (out, inp) = if backward {
        let g = at(LmBuf::Grads, layout.layers[l][1]);
        (g, g)
    } else {
        (at(LmBuf::Layer(l, Buf::WHh), 0), at(LmBuf::Params, layout.layers[l][1]))
    };
    Op::Dropout { out, inp, n, period: n, p: cfg.drop.weight, mask: Mask::Weight(l) }
}

/// Forward: step counter, embedding, per layer (DropConnect, plan, hidden dropout, state
/// carry), output dropout with AR/TAR sums, decoder GEMM, softmax cross-entropy, total.
pub fn forward_ops(cfg: &LmConfig, layout: &Layout) -> Vec<Op> {
    let (n, bn) = (cfg.rows(), cfg.b);
    let dims = cfg.layer_dims();
    let mut ops = vec![Op::StepBegin, Op::EmbedFwd];
    for (l, &d) in dims.iter().enumerate() {
        ops.push(weight_drop(cfg, layout, l, d, false));
        ops.extend(layer_steps(l, forward_plan(d)));
        if l + 1 < dims.len() {
            ops.push(Op::Dropout {
                out: at(LmBuf::Layer(l + 1, Buf::X), 0),
                inp: at(LmBuf::Layer(l, Buf::Hs), bn * d.h),
                n: n * d.h,
                period: bn * d.h,
                p: cfg.drop.hidden,
                mask: Mask::Hidden(l),
            });
        }
        // Carry the final state to the next step (detached: nothing flows back into it).
        for (state, seq) in [(Buf::H0, Buf::Hs), (Buf::C0, Buf::Cs)] {
            ops.push(Op::Copy {
                dst: at(LmBuf::Layer(l, state), 0),
                src: at(LmBuf::Layer(l, seq), n * d.h),
                len: bn * d.h,
            });
        }
    }
    let [logits, ..] = decoder_gemms(cfg, layout);
    ops.extend([Op::RegFwd, Op::Gemm(logits), Op::Xent, Op::LossSum]);
    ops
}

/// Backward, the forward in reverse: decoder GEMMs, AR/TAR and output dropout into the
/// top layer's dy, per layer from the top (plan, DropConnect on dW_hh, b_hh's gradient,
/// hidden dropout into the layer below's dy), embedding scatter. Every gradient slot is
/// overwritten, so nothing needs zeroing between steps.
pub fn backward_ops(cfg: &LmConfig, layout: &Layout) -> Vec<Op> {
    let (n, bn) = (cfg.rows(), cfg.b);
    let dims = cfg.layer_dims();
    let [_, ddropped, demb] = decoder_gemms(cfg, layout);
    let mut ops = vec![Op::Gemm(ddropped), Op::Gemm(demb), Op::BiasGrad, Op::RegBwd];
    for (l, &d) in dims.iter().enumerate().rev() {
        ops.extend(layer_steps(l, backward_plan(d)));
        ops.push(weight_drop(cfg, layout, l, d, true));
        let [_, _, b_ih, b_hh] = layout.layers[l];
        ops.push(Op::Copy { dst: at(LmBuf::Grads, b_hh), src: at(LmBuf::Grads, b_ih), len: 4 * d.h });
        if l > 0 {
            ops.push(Op::Dropout {
                out: at(LmBuf::Layer(l - 1, Buf::Dy), 0),
                inp: at(LmBuf::Layer(l, Buf::Dx), 0),
                n: n * d.i,
                period: bn * d.i,
                p: cfg.drop.hidden,
                mask: Mask::Hidden(l - 1),
            });
        }
    }
    ops.push(Op::EmbedBwd);
    ops
}

/// The update: squared-gradient partial sums per group, norm and clip factor, fused
/// Adam(W) per part of each group (`Layout::adam_parts`).
pub fn update_ops(layout: &Layout) -> Vec<Op> {
    let sums = (0..layout.groups().len()).map(|group| Op::SumsqPartial { group });
    let parts = layout.adam_parts().into_iter().map(|(group, off, len, decay)| Op::Adam { group, off, len, decay });
    sums.chain([Op::ClipScale]).chain(parts).collect()
}

/// The forward of an evaluation pass: [`forward_ops`] with every dropout off and no step
/// count (the loss of the model as it is; the carried state still advances).
pub fn eval_ops(cfg: &LmConfig, layout: &Layout) -> Vec<Op> {
    let off = LmConfig { drop: super::config::Dropouts::off(), ..cfg.clone() };
    forward_ops(&off, layout).into_iter().filter(|op| *op != Op::StepBegin).collect()
}

/// Asserts every explicit operand of `ops` inside its buffer (the executor passes raw
/// addresses); implicit operands are whole buffers sized by [`buf_len`].
pub fn check_ops(cfg: &LmConfig, layout: &Layout, ops: &[Op]) {
    let fits = |a: At, len: usize| {
        let have = buf_len(cfg, layout, a.buf);
        assert!(a.off + len <= have, "LM op overruns {:?}: {} + {len} > {have}", a.buf, a.off);
    };
    let dims = cfg.layer_dims();
    for op in ops {
        match *op {
            Op::Dropout { out, inp, n, period, .. } => {
                assert!(period > 0 && n % period == 0, "LM dropout {op:?}: period");
                fits(out, n);
                fits(inp, n);
            }
            Op::Copy { dst, src, len } => {
                fits(dst, len);
                fits(src, len);
            }
            Op::Gemm(g) => {
                g.mnk();
                for m in [g.a, g.b, g.c] {
                    fits(at(m.buf, m.off), m.rows * m.cols);
                }
            }
            Op::Layer { l, step } => {
                crate::plan::check_bounds(dims[l], &[step]);
                match step {
                    Step::Gemm(g) => {
                        for m in [g.a, g.b, g.c] {
                            fits(layer_at(layout, l, m.buf, m.off), m.rows * m.cols);
                        }
                    }
                    Step::Copy { src, dst, off, len } => {
                        fits(layer_at(layout, l, src, 0), len);
                        fits(layer_at(layout, l, dst, off), len);
                    }
                    // Cells read whole buffers: owned ones are sized by Buf::len, and the
                    // biases they read from the flat buffer are whole [4H] slots.
                    Step::CellFwd { .. } | Step::CellBwd { .. } => {}
                }
            }
            _ => {}
        }
    }
}
