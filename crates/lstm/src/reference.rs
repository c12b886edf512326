//! The LSTM in plain loops: the spec every fused, SIMD and CUDA variant is checked against.
//!
//! Dimensions: T steps, B batch rows, I input features, H hidden units. Gate order is
//! PyTorch's i, f, g, o, so `W_ih` rows `0..H` are the input gate, `H..2H` the forget
//! gate, `2H..3H` the cell candidate and `3H..4H` the output gate:
//!
//! ```text
//! z = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh          [B, 4H]
//! i = sigmoid(z_i)  f = sigmoid(z_f)  g = tanh(z_g)  o = sigmoid(z_o)
//! c_t = f * c_{t-1} + i * g        h_t = o * tanh(c_t)        y_t = h_t
//! ```
//!
//! Nothing here is tuned: each value is one dot product or one scalar expression, in f32,
//! summed in index order. The backward recomputes the forward, then walks the steps in
//! reverse (llm.c's `*_backward` shape).

// Index loops read like the equations; iterator chains would hide them.
#![allow(clippy::needless_range_loop)]

/// Sizes of one LSTM layer run: T steps, B batch rows, I inputs, H hidden units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmDims {
    pub t: usize,
    pub b: usize,
    pub i: usize,
    pub h: usize,
}

/// Borrowed weights of one layer, PyTorch layout and gate order (i, f, g, o).
#[derive(Clone, Copy, Debug)]
pub struct LstmParams<'a> {
    /// [4H, I]
    pub w_ih: &'a [f32],
    /// [4H, H]
    pub w_hh: &'a [f32],
    /// `[4H]`
    pub b_ih: &'a [f32],
    /// `[4H]`
    pub b_hh: &'a [f32],
}

/// Result of a forward pass.
#[derive(Clone, Debug, Default)]
pub struct LstmOutput {
    /// Hidden state at every step, [T, B, H].
    pub y: Vec<f32>,
    /// Final hidden state, [B, H].
    pub h_n: Vec<f32>,
    /// Final cell state, [B, H].
    pub c_n: Vec<f32>,
}

/// Gradients of a loss with respect to every input of the layer.
#[derive(Clone, Debug, Default)]
pub struct LstmGrads {
    /// [T, B, I]
    pub dx: Vec<f32>,
    /// [B, H]
    pub dh0: Vec<f32>,
    /// [B, H]
    pub dc0: Vec<f32>,
    /// [4H, I]
    pub dw_ih: Vec<f32>,
    /// [4H, H]
    pub dw_hh: Vec<f32>,
    /// `[4H]`
    pub db_ih: Vec<f32>,
    /// `[4H]`
    pub db_hh: Vec<f32>,
}

impl LstmDims {
    /// Panics with a message naming the buffer when a slice length disagrees with the dims.
    pub fn check(&self, p: &LstmParams, x: &[f32], h0: &[f32], c0: &[f32]) {
        let (t, b, i, h) = (self.t, self.b, self.i, self.h);
        let want = [
            ("w_ih", p.w_ih.len(), 4 * h * i),
            ("w_hh", p.w_hh.len(), 4 * h * h),
            ("b_ih", p.b_ih.len(), 4 * h),
            ("b_hh", p.b_hh.len(), 4 * h),
            ("x", x.len(), t * b * i),
            ("h0", h0.len(), b * h),
            ("c0", c0.len(), b * h),
        ];
        for (name, got, exp) in want {
            assert_eq!(got, exp, "lstm {self:?}: {name} has {got} elements, expected {exp}");
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Activated gates of every step, [T, B, 4H] (i, f, g, o), and cell states [T, B, H].
struct Trace {
    gates: Vec<f32>,
    c: Vec<f32>,
    out: LstmOutput,
}

fn run_forward(d: LstmDims, p: &LstmParams, x: &[f32], h0: &[f32], c0: &[f32]) -> Trace {
    d.check(p, x, h0, c0);
    let (tn, bn, inp, hn) = (d.t, d.b, d.i, d.h);
    let mut gates = vec![0.0; tn * bn * 4 * hn];
    let mut cs = vec![0.0; tn * bn * hn];
    let mut y = vec![0.0; tn * bn * hn];
    let (mut h_prev, mut c_prev) = (h0.to_vec(), c0.to_vec());
    for t in 0..tn {
        for b in 0..bn {
            let xt = &x[(t * bn + b) * inp..][..inp];
            let hp = &h_prev[b * hn..][..hn];
            let g = &mut gates[(t * bn + b) * 4 * hn..][..4 * hn];
            for r in 0..4 * hn {
                let mut z = p.b_ih[r] + p.b_hh[r];
                for k in 0..inp {
                    z += p.w_ih[r * inp + k] * xt[k];
                }
                for k in 0..hn {
                    z += p.w_hh[r * hn + k] * hp[k];
                }
                g[r] = if (2 * hn..3 * hn).contains(&r) { z.tanh() } else { sigmoid(z) };
            }
            for j in 0..hn {
                let (ig, fg, gg, og) = (g[j], g[hn + j], g[2 * hn + j], g[3 * hn + j]);
                let c = fg * c_prev[b * hn + j] + ig * gg;
                cs[(t * bn + b) * hn + j] = c;
                y[(t * bn + b) * hn + j] = og * c.tanh();
            }
        }
        h_prev.copy_from_slice(&y[t * bn * hn..][..bn * hn]);
        c_prev.copy_from_slice(&cs[t * bn * hn..][..bn * hn]);
    }
    Trace { gates, c: cs, out: LstmOutput { y, h_n: h_prev, c_n: c_prev } }
}

/// Runs the layer over the whole sequence. `x` is [T, B, I], `h0` and `c0` are [B, H].
pub fn forward(d: LstmDims, p: &LstmParams, x: &[f32], h0: &[f32], c0: &[f32]) -> LstmOutput {
    run_forward(d, p, x, h0, c0).out
}

/// Gradients of a loss L given `dy` = dL/dy [T, B, H] and optionally dL/dh_n, dL/dc_n [B, H].
#[allow(clippy::too_many_arguments)] // the signature the CUDA kernels are compared through
pub fn backward(
    d: LstmDims,
    p: &LstmParams,
    x: &[f32],
    h0: &[f32],
    c0: &[f32],
    dy: &[f32],
    dh_n: Option<&[f32]>,
    dc_n: Option<&[f32]>,
) -> LstmGrads {
    let (tn, bn, inp, hn) = (d.t, d.b, d.i, d.h);
    assert_eq!(dy.len(), tn * bn * hn, "lstm backward {d:?}: dy has {} elements", dy.len());
    let tr = run_forward(d, p, x, h0, c0);
    let mut gr = LstmGrads {
        dx: vec![0.0; tn * bn * inp],
        dh0: vec![0.0; bn * hn],
        dc0: vec![0.0; bn * hn],
        dw_ih: vec![0.0; 4 * hn * inp],
        dw_hh: vec![0.0; 4 * hn * hn],
        db_ih: vec![0.0; 4 * hn],
        db_hh: vec![0.0; 4 * hn],
    };
    // dh, dc carried from step t+1 into step t; [B, H]
    let mut dh_next = dh_n.map_or(vec![0.0; bn * hn], <[f32]>::to_vec);
    let mut dc_next = dc_n.map_or(vec![0.0; bn * hn], <[f32]>::to_vec);
    let mut dz = vec![0.0; 4 * hn]; // dL/dz for one row
    for t in (0..tn).rev() {
        for b in 0..bn {
            let row = t * bn + b;
            let g = &tr.gates[row * 4 * hn..][..4 * hn];
            let c_prev = if t == 0 { &c0[b * hn..][..hn] } else { &tr.c[(row - bn) * hn..][..hn] };
            let h_prev = if t == 0 { &h0[b * hn..][..hn] } else { &tr.out.y[(row - bn) * hn..][..hn] };
            for j in 0..hn {
                let (ig, fg, gg, og) = (g[j], g[hn + j], g[2 * hn + j], g[3 * hn + j]);
                let tc = tr.c[row * hn + j].tanh();
                let dh = dy[row * hn + j] + dh_next[b * hn + j];
                let dc = dc_next[b * hn + j] + dh * og * (1.0 - tc * tc);
                dz[j] = dc * gg * ig * (1.0 - ig);
                dz[hn + j] = dc * c_prev[j] * fg * (1.0 - fg);
                dz[2 * hn + j] = dc * ig * (1.0 - gg * gg);
                dz[3 * hn + j] = dh * tc * og * (1.0 - og);
                dc_next[b * hn + j] = dc * fg;
            }
            // dh_{t-1} = W_hh^T dz ; dx_t = W_ih^T dz ; weight grads are outer products
            for k in 0..hn {
                dh_next[b * hn + k] = (0..4 * hn).map(|r| p.w_hh[r * hn + k] * dz[r]).sum();
            }
            for k in 0..inp {
                gr.dx[row * inp + k] = (0..4 * hn).map(|r| p.w_ih[r * inp + k] * dz[r]).sum();
            }
            let xt = &x[row * inp..][..inp];
            for r in 0..4 * hn {
                gr.db_ih[r] += dz[r];
                gr.db_hh[r] += dz[r];
                for k in 0..inp {
                    gr.dw_ih[r * inp + k] += dz[r] * xt[k];
                }
                for k in 0..hn {
                    gr.dw_hh[r * hn + k] += dz[r] * h_prev[k];
                }
            }
        }
    }
    gr.dh0 = dh_next;
    gr.dc0 = dc_next;
    gr
}
