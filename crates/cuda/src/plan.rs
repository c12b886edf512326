//! The LSTM layer as a list of device steps: cuBLAS GEMMs and the two cell kernels.
//!
//! [`forward_plan`] and [`backward_plan`] say what runs, in order, on which buffers; the
//! CUDA executor (`crate::lstm`) runs the list on the GPU (or captures it into a CUDA graph),
//! and `tests/plan_on_cpu.rs` replays the same list on the CPU, GEMM configs included, against
//! `ulmfit_lstm::reference`. Shape of the computation as Haste's: one GEMM for x.W_ih^T over
//! all steps, then per step one recurrent GEMM and one fused cell launch; the backward walks
//! the steps in reverse and computes dW_ih, dW_hh, db and dx after the loop as whole-sequence
//! GEMMs (db as ones.dgates, so it is summed in a fixed order, without atomics).
//!
//! Dimensions: T steps, B batch, I input, H hidden, G = 4H gate rows (i, f, g, o).

use ulmfit_lstm::LstmDims;

/// Device buffers of one layer. Shapes are row-major; `len` gives each size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buf {
    /// Input sequence x [T, B, I].
    X,
    /// Initial hidden state h0 [B, H].
    H0,
    /// Initial cell state c0 [B, H].
    C0,
    /// Input weights W_ih [G, I].
    WIh,
    /// Recurrent weights W_hh [G, H].
    WHh,
    /// Input bias b_ih [G].
    BIh,
    /// Recurrent bias b_hh [G].
    BHh,
    /// x.W_ih^T for all steps [T, B, G].
    Xw,
    /// h_{t-1}.W_hh^T of the current step [B, G].
    Hw,
    /// Hidden states [T+1, B, H]: hs[0] = h0, hs[t+1] = h_t = y_t.
    Hs,
    /// Cell states [T+1, B, H]: cs[0] = c0.
    Cs,
    /// Activated gates (i, f, g, o) of every step [T, B, G], saved for the backward.
    Act,
    /// Output gradient dL/dy [T, B, H].
    Dy,
    /// dL/dh_n [B, H] (zeros when absent).
    DhN,
    /// dL/dc_n [B, H] (zeros when absent).
    DcN,
    /// dL/dh flowing into the current step [B, H]; holds dh0 after the loop.
    Dh,
    /// dL/dc flowing into the current step [B, H]; holds dc0 after the loop.
    Dc,
    /// Gradient w.r.t. the gate pre-activations of every step [T, B, G].
    Dgates,
    /// A row of T*B ones, for the bias-gradient GEMM.
    Ones,
    /// dL/dx [T, B, I].
    Dx,
    /// dL/dW_ih [G, I].
    DwIh,
    /// dL/dW_hh [G, H].
    DwHh,
    /// dL/db [G], the same for b_ih and b_hh.
    Db,
}

impl Buf {
    /// Every buffer, in allocation order.
    pub const ALL: [Buf; 23] = [
        Buf::X,
        Buf::H0,
        Buf::C0,
        Buf::WIh,
        Buf::WHh,
        Buf::BIh,
        Buf::BHh,
        Buf::Xw,
        Buf::Hw,
        Buf::Hs,
        Buf::Cs,
        Buf::Act,
        Buf::Dy,
        Buf::DhN,
        Buf::DcN,
        Buf::Dh,
        Buf::Dc,
        Buf::Dgates,
        Buf::Ones,
        Buf::Dx,
        Buf::DwIh,
        Buf::DwHh,
        Buf::Db,
    ];

    /// Number of f32 elements of this buffer for dims `d`.
    pub fn len(self, d: LstmDims) -> usize {
        let (t, b, i, h) = (d.t, d.b, d.i, d.h);
        let g = 4 * h;
        match self {
            Buf::X | Buf::Dx => t * b * i,
            Buf::H0 | Buf::C0 | Buf::DhN | Buf::DcN | Buf::Dh | Buf::Dc => b * h,
            Buf::WIh | Buf::DwIh => g * i,
            Buf::WHh | Buf::DwHh => g * h,
            Buf::BIh | Buf::BHh | Buf::Db => g,
            Buf::Xw | Buf::Act | Buf::Dgates => t * b * g,
            Buf::Hw => b * g,
            Buf::Hs | Buf::Cs => (t + 1) * b * h,
            Buf::Dy => t * b * h,
            Buf::Ones => t * b,
        }
    }
}

/// A row-major matrix operand: `rows x cols` stored in `buf` from element `off`, with
/// leading dimension `cols` (rows are contiguous). `trans` means the GEMM uses its transpose.
/// `B` names the buffers: [`Buf`] for an LSTM layer, the LM's own enum in `crate::lm`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mat<B = Buf> {
    /// The buffer holding the matrix.
    pub buf: B,
    /// Element offset of its first element.
    pub off: usize,
    /// Stored rows.
    pub rows: usize,
    /// Stored columns (the leading dimension).
    pub cols: usize,
    /// Whether the product uses the transpose.
    pub trans: bool,
}

/// C[M, N] = op(A)[M, K] . op(B)[K, N], row-major, overwriting C (beta = 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm<B = Buf> {
    /// Left operand, op(A) is [M, K].
    pub a: Mat<B>,
    /// Right operand, op(B) is [K, N].
    pub b: Mat<B>,
    /// Result [M, N], never transposed.
    pub c: Mat<B>,
}

/// One device step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    /// A cuBLAS SGEMM.
    Gemm(Gemm),
    /// `lstm_cell_fwd` for step t (kernels/lstm_cell.cu).
    CellFwd {
        /// Time step.
        t: usize,
    },
    /// `lstm_cell_bwd` for step t.
    CellBwd {
        /// Time step.
        t: usize,
    },
    /// Device copy of `len` elements, src[0..len] -> dst[off..off+len].
    Copy {
        /// Source buffer, read from element 0.
        src: Buf,
        /// Destination buffer.
        dst: Buf,
        /// Destination element offset.
        off: usize,
        /// Elements copied.
        len: usize,
    },
}

impl Step {
    /// What the step is, for the bench's time breakdown: "seq-gemm" (a GEMM over all T*B
    /// rows or a weight gradient), "step-gemm" (the recurrent GEMM of one step), "cell" or
    /// "copy".
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Gemm(g) if matches!(g.c.buf, Buf::Hw | Buf::Dh) => "step-gemm",
            Step::Gemm(_) => "seq-gemm",
            Step::CellFwd { .. } | Step::CellBwd { .. } => "cell",
            Step::Copy { .. } => "copy",
        }
    }
}

/// The untransposed operand `rows x cols` of `buf` from element `off`.
pub fn mat<B>(buf: B, off: usize, rows: usize, cols: usize) -> Mat<B> {
    Mat { buf, off, rows, cols, trans: false }
}

/// The same operand, used transposed.
pub fn transposed<B>(m: Mat<B>) -> Mat<B> {
    Mat { trans: true, ..m }
}

impl<B: Copy + std::fmt::Debug> Gemm<B> {
    /// (M, N, K) of the product, asserting that the operands agree.
    pub fn mnk(&self) -> (usize, usize, usize) {
        let dims = |m: &Mat<B>| {
            if m.trans {
                (m.cols, m.rows)
            } else {
                (m.rows, m.cols)
            }
        };
        let ((m, k), (k2, n), (cm, cn)) = (dims(&self.a), dims(&self.b), dims(&self.c));
        assert!(k == k2 && cm == m && cn == n && !self.c.trans, "gemm shapes disagree: {self:?}");
        (m, n, k)
    }
}

/// Forward: Xw = X.W_ih^T, then per step Hw = h_{t-1}.W_hh^T and the cell.
pub fn forward_plan(d: LstmDims) -> Vec<Step> {
    let (tn, b, i, h) = (d.t, d.b, d.i, d.h);
    let g = 4 * h;
    let mut plan = vec![
        Step::Copy { src: Buf::H0, dst: Buf::Hs, off: 0, len: b * h },
        Step::Copy { src: Buf::C0, dst: Buf::Cs, off: 0, len: b * h },
        // Xw [TB, G] = X [TB, I] . W_ih^T
        Step::Gemm(Gemm {
            a: mat(Buf::X, 0, tn * b, i),
            b: transposed(mat(Buf::WIh, 0, g, i)),
            c: mat(Buf::Xw, 0, tn * b, g),
        }),
    ];
    for step in 0..tn {
        // Hw [B, G] = hs[t] [B, H] . W_hh^T
        plan.push(Step::Gemm(Gemm {
            a: mat(Buf::Hs, step * b * h, b, h),
            b: transposed(mat(Buf::WHh, 0, g, h)),
            c: mat(Buf::Hw, 0, b, g),
        }));
        plan.push(Step::CellFwd { t: step });
    }
    plan
}

/// Backward: per step (in reverse) the cell and dh = dgates[t].W_hh; then the weight,
/// bias and input gradients as GEMMs over all T*B rows.
pub fn backward_plan(d: LstmDims) -> Vec<Step> {
    let (tn, b, i, h) = (d.t, d.b, d.i, d.h);
    let (g, rows) = (4 * h, d.t * d.b);
    let mut plan = vec![
        Step::Copy { src: Buf::DhN, dst: Buf::Dh, off: 0, len: b * h },
        Step::Copy { src: Buf::DcN, dst: Buf::Dc, off: 0, len: b * h },
    ];
    for step in (0..tn).rev() {
        plan.push(Step::CellBwd { t: step });
        // Dh [B, H] = dgates[t] [B, G] . W_hh [G, H]
        plan.push(Step::Gemm(Gemm {
            a: mat(Buf::Dgates, step * b * g, b, g),
            b: mat(Buf::WHh, 0, g, h),
            c: mat(Buf::Dh, 0, b, h),
        }));
    }
    plan.extend([
        // dW_hh [G, H] = dgates^T [G, TB] . hs[0..T] [TB, H]
        Step::Gemm(Gemm {
            a: transposed(mat(Buf::Dgates, 0, rows, g)),
            b: mat(Buf::Hs, 0, rows, h),
            c: mat(Buf::DwHh, 0, g, h),
        }),
        // dW_ih [G, I] = dgates^T . X [TB, I]
        Step::Gemm(Gemm {
            a: transposed(mat(Buf::Dgates, 0, rows, g)),
            b: mat(Buf::X, 0, rows, i),
            c: mat(Buf::DwIh, 0, g, i),
        }),
        // db [1, G] = ones [1, TB] . dgates [TB, G]
        Step::Gemm(Gemm { a: mat(Buf::Ones, 0, 1, rows), b: mat(Buf::Dgates, 0, rows, g), c: mat(Buf::Db, 0, 1, g) }),
        // dx [TB, I] = dgates [TB, G] . W_ih [G, I]
        Step::Gemm(Gemm { a: mat(Buf::Dgates, 0, rows, g), b: mat(Buf::WIh, 0, g, i), c: mat(Buf::Dx, 0, rows, i) }),
    ]);
    plan
}

/// Asserts that every step stays inside its buffers (the executor passes raw pointers).
pub fn check_bounds(d: LstmDims, plan: &[Step]) {
    let fits = |m: &Mat| {
        assert!(
            m.off + m.rows * m.cols <= m.buf.len(d),
            "lstm plan {d:?}: {m:?} overruns {:?} of {} elements",
            m.buf,
            m.buf.len(d)
        )
    };
    for s in plan {
        match s {
            Step::Gemm(gm) => {
                gm.mnk();
                [gm.a, gm.b, gm.c].iter().for_each(fits);
            }
            Step::CellFwd { t } | Step::CellBwd { t } => assert!(*t < d.t, "step {t} of {d:?}"),
            Step::Copy { src, dst, off, len } => {
                assert!(*len <= src.len(d) && off + len <= dst.len(d), "lstm plan {d:?}: copy {s:?} overruns")
            }
        }
    }
}

/// The column-major `cublasSgemm` call that computes a row-major [`Gemm`]: cuBLAS sees
/// row-major C[M, N] as C^T[N, M] and computes C^T = op(B)^T . op(A)^T, so our B is its
/// first operand and our A its second, each with leading dimension = its stored width.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColMajor<B = Buf> {
    /// cuBLAS `transa` (true = CUBLAS_OP_T).
    pub transa: bool,
    /// cuBLAS `transb`.
    pub transb: bool,
    /// cuBLAS m = our N.
    pub m: usize,
    /// cuBLAS n = our M.
    pub n: usize,
    /// cuBLAS k = our K.
    pub k: usize,
    /// cuBLAS A: our B.
    pub a: Mat<B>,
    /// Leading dimension of cuBLAS A.
    pub lda: usize,
    /// cuBLAS B: our A.
    pub b: Mat<B>,
    /// Leading dimension of cuBLAS B.
    pub ldb: usize,
    /// C.
    pub c: Mat<B>,
    /// Leading dimension of C.
    pub ldc: usize,
}

impl<B: Copy + std::fmt::Debug> Gemm<B> {
    /// The cuBLAS arguments for this product.
    pub fn col_major(&self) -> ColMajor<B> {
        let (m, n, k) = self.mnk();
        ColMajor {
            transa: self.b.trans,
            transb: self.a.trans,
            m: n,
            n: m,
            k,
            a: self.b,
            lda: self.b.cols,
            b: self.a,
            ldb: self.a.cols,
            c: self.c,
            ldc: self.c.cols,
        }
    }
}
