//! Fast single-precision GEMM for x86-64 with AVX-512: `C = alpha * A · B + beta * C`.
//!
//! Built for the LSTM: the recurrent weight `W_hh^T` is packed once per sequence into a
//! [`PackedB`] and reused by [`gemm_packed`] at every time step; [`gemm`] packs B per call.
//! Layout (BLIS): B is packed in `NR`-column panels, A in `MR`-row panels (`pack.rs`), and
//! the output is cut into `MC x NC` blocks, one rayon task each. A task walks K in slices
//! of at most `KC`; per slice it packs its A block, then for each B micro-panel (`kc x NR`,
//! kept in L2) runs the `MR x NR` micro-kernel (`kernel.rs`) down its rows.
//!
//! The blocking was chosen by measurement on a 2-core Zen 5 EPYC (48 KiB L1d, 1 MiB L2):
//! long K slices win, since every extra slice re-reads and re-writes C, and the hardware
//! prefetchers keep the long panel streams fed. `benches/sgemm.rs` times the LSTM shapes.
//!
//! Without AVX-512 (checked once at run time) every call goes to [`crate::gemm::portable_sgemm`]
//! (matrixmultiply), which is also the reference the AVX-512 path is tested against
//! (`tests.rs`, with the naive triple loop).

#[cfg(target_arch = "x86_64")]
mod kernel;
/// Stand-in so the blocking code compiles off x86-64, where `detect` never picks AVX-512.
#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    pub const MR: usize = 8;
    pub const NR: usize = 48;
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(
        _: usize,
        _: usize,
        _: usize,
        _: *const f32,
        _: *const f32,
        _: f32,
        _: f32,
        _: *mut f32,
        _: usize,
    ) {
        unreachable!("sgemm: the AVX-512 kernel called on a non-x86-64 CPU")
    }
    pub unsafe fn transpose16(_: *const f32, _: usize, _: *mut f32, _: *mut f32, _: usize) {
        unreachable!("sgemm: the AVX-512 transpose called on a non-x86-64 CPU")
    }
}
mod pack;
#[cfg(test)]
mod tests;

use crate::gemm::{scale, MatRef, OutPtr, PARALLEL_MIN_MACS};
use pack::AlignedBuf;
use rayon::prelude::*;

use kernel::{MR, NR};

/// The AVX-512 16 x 16 transpose the packing uses, for callers packing their own layouts
/// (the LSTM's W_ih / W_hh blocks): `out[r][c] = src[c * lds + r]`, row r's values 0..8
/// stored at `lo + r * ldd` and 8..16 at `hi + r * ldd`.
///
/// # Safety
/// The CPU must support AVX-512F (x86-64 only); `src` must hold 16 floats at each of the
/// 16 offsets `c * lds`, and `lo`, `hi` 8 floats at each `r * ldd`, not overlapping.
pub use kernel::transpose16;

/// Most K per pass; K is cut into equal slices no longer than this.
const KC: usize = 1536;
/// Rows of C per task, a multiple of MR.
const MC: usize = 16 * MR;
/// Most columns of C per task.
const NC: usize = 32 * NR;

/// Which implementation a product runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Path {
    /// Packed panels and the AVX-512 micro-kernel.
    Avx512,
    /// `crate::gemm::portable_sgemm` on a row-major copy of B.
    Portable,
}

/// The best path this CPU supports (detected once, cached by std).
fn detect() -> Path {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        return Path::Avx512;
    }
    Path::Portable
}

/// The B operand `[K, N]` of a product, copied once into the layout the kernel reads.
///
/// Build it from any strided view (so `W^T` costs nothing extra) and reuse it across
/// calls to [`gemm_packed`], e.g. `W_hh^T` for all T steps of a sequence.
pub struct PackedB {
    k: usize,
    n: usize,
    path: Path,
    /// Avx512: `[ceil(N / NR)][K][NR]` panels. Portable: row-major `[K, N]`.
    data: AlignedBuf,
}

impl PackedB {
    /// Packs `b` `[K, N]` (any strides) for this CPU's best path.
    pub fn pack(b: MatRef) -> Self {
        Self::pack_for(b, detect())
    }

    fn pack_for(b: MatRef, path: Path) -> Self {
        b.check("B");
        let data = match path {
            Path::Avx512 => pack::pack_panels::<NR>(b),
            Path::Portable => pack::row_major(b),
        };
        PackedB { k: b.rows, n: b.cols, path, data }
    }

    /// Rows of B (the inner dimension K).
    pub fn rows(&self) -> usize {
        self.k
    }

    /// Columns of B (N).
    pub fn cols(&self) -> usize {
        self.n
    }
}

/// `C[M,N] = alpha * A[M,K] · B[K,N] + beta * C`, with B packed, C row-major contiguous.
///
/// With `beta == 0` the old contents of `C` are never read (NaNs in it do not leak).
/// Panics (naming the shapes) if the dimensions disagree.
pub fn gemm_packed(alpha: f32, a: MatRef, b: &PackedB, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.n);
    assert_eq!(k, b.k, "sgemm: inner dimensions differ: A is [{m}x{k}], B is [{}x{n}]", b.k);
    assert_eq!(c.len(), m * n, "sgemm: C has {} elements, expected [{m}x{n}]", c.len());
    a.check("A");
    match b.path {
        Path::Portable => crate::gemm::portable_sgemm(alpha, a, MatRef::new(b.data.as_slice(), k, n), beta, c),
        Path::Avx512 => blocked(alpha, a, BSrc::Packed(b.data.as_slice()), beta, c, n),
    }
}

/// `C[M,N] = alpha * A[M,K] · B[K,N] + beta * C`, packing B on every call.
///
/// Same contract as [`crate::gemm::sgemm`]; prefer [`gemm_packed`] when B is reused.
pub fn gemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "sgemm: inner dimensions differ: A is [{m}x{k}], B is [{}x{n}]", b.rows);
    match detect() {
        Path::Portable => crate::gemm::portable_sgemm(alpha, a, b, beta, c),
        // One row block: each task packs its own B panels as it goes, so every B element
        // is copied once, while still in cache. More: pack B once, share it across row blocks.
        Path::Avx512 if m <= MC => {
            assert_eq!(c.len(), m * n, "sgemm: C has {} elements, expected [{m}x{n}]", c.len());
            a.check("A");
            b.check("B");
            blocked(alpha, a, BSrc::Raw(b), beta, c, n)
        }
        Path::Avx512 => gemm_packed(alpha, a, &PackedB::pack_for(b, Path::Avx512), beta, c),
    }
}

/// Where a task finds its B panels.
#[derive(Clone, Copy)]
enum BSrc<'a> {
    /// All of B, already in `NR`-column panels (`PackedB::data`).
    Packed(&'a [f32]),
    /// B as given; each task packs the panels it needs into a scratch buffer.
    Raw(MatRef<'a>),
}

/// The AVX-512 product `C[M,N] = alpha * A · B + beta * C`, operands already checked.
fn blocked(alpha: f32, a: MatRef, b: BSrc, beta: f32, c: &mut [f32], n: usize) {
    let (m, k) = (a.rows, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        scale(c, beta);
        return;
    }
    let threads = rayon::current_num_threads();
    let serial = threads == 1 || m * n * k < PARALLEL_MIN_MACS;
    // Column blocks: at most NC wide, and enough of them for two tasks per thread.
    let m_blocks = m.div_ceil(MC);
    let n_panels = n.div_ceil(NR);
    let want = if serial { 1 } else { (2 * threads).div_ceil(m_blocks) };
    let n_blocks = want.max(n.div_ceil(NC)).min(n_panels);
    let nc = n_panels.div_ceil(n_blocks) * NR;
    let n_blocks = n.div_ceil(nc);
    let kc = k.div_ceil(k.div_ceil(KC));
    let product = Product { alpha, beta, a, b, k, n, kc, out: OutPtr(c.as_mut_ptr()) };
    // Task t covers rows ib*MC.., columns jb*nc..; consecutive tasks share B columns, so
    // rayon's halving hands each thread its own half of B.
    let task = |scratch: &mut Scratch, t: usize| {
        let (jb, ib) = (t / m_blocks, t % m_blocks);
        let (rows, cols) = (ib * MC..m.min((ib + 1) * MC), jb * nc..n.min((jb + 1) * nc));
        // SAFETY: blocks of different tasks are disjoint and lie inside the m*n C.
        unsafe { product.block(scratch, rows, cols) };
    };
    // Packing buffers, allocated once per thread (per rayon split), not per task.
    let new_scratch = || Scratch {
        a: AlignedBuf::zeros(pack::packed_len(kc, m.min(MC), MR)),
        b: AlignedBuf::zeros(if let BSrc::Raw(_) = b { kc * NR } else { 0 }),
    };
    if serial {
        let mut scratch = new_scratch();
        (0..m_blocks * n_blocks).for_each(|t| task(&mut scratch, t));
    } else {
        (0..m_blocks * n_blocks).into_par_iter().for_each_init(new_scratch, task);
    }
}

/// One thread's packing buffers: an A block, and a B micro-panel when B comes unpacked.
struct Scratch {
    a: AlignedBuf,
    b: AlignedBuf,
}

/// Everything the tasks of one product share.
struct Product<'a> {
    alpha: f32,
    beta: f32,
    a: MatRef<'a>,
    b: BSrc<'a>,
    k: usize,
    n: usize,
    /// K per pass.
    kc: usize,
    /// C `[M, N]`, row-major.
    out: OutPtr,
}

impl Product<'_> {
    /// One `rows x cols` block of C (starting on a tile corner), walking K in `kc` slices:
    /// each slice packs its `rows x kc` A block (kept in L2), then sweeps the B panels.
    ///
    /// # Safety
    /// No other thread may touch this block of C during the call; AVX-512F must be available.
    unsafe fn block(&self, scratch: &mut Scratch, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        let (k, n) = (self.k, self.n);
        for pc in (0..k).step_by(self.kc) {
            let kc = self.kc.min(k - pc);
            // Later K slices accumulate onto the first one's result.
            let beta = if pc == 0 { self.beta } else { 1.0 };
            // A^T [kc, rows] in MR-wide panels: panel r holds rows.start + r*MR .., [kc][MR].
            pack::pack_into::<MR>(pack::sub_view(self.a.t(), pc, rows.start, kc, rows.len()), scratch.a.as_mut_slice());
            let ap = scratch.a.as_slice();
            for j in cols.clone().step_by(NR) {
                let b_panel = match self.b {
                    BSrc::Packed(bp) => &bp[(j / NR) * k * NR + pc * NR..][..kc * NR],
                    BSrc::Raw(bm) => {
                        let src = pack::sub_view(bm, pc, j, kc, NR.min(n - j));
                        pack::pack_into::<NR>(src, scratch.b.as_mut_slice());
                        &scratch.b.as_slice()[..kc * NR]
                    }
                };
                for i in rows.clone().step_by(MR) {
                    let a_panel = &ap[(i - rows.start) / MR * kc * MR..][..kc * MR];
                    let (tile_rows, tile_cols) = (MR.min(rows.end - i), NR.min(cols.end - j));
                    // SAFETY: the panels hold kc*MR and kc*NR floats (sliced above); the
                    // tile (i.., j..) lies inside this block of the [M, n] C (caller's contract).
                    unsafe {
                        kernel::tile(
                            tile_rows,
                            tile_cols,
                            kc,
                            a_panel.as_ptr(),
                            b_panel.as_ptr(),
                            self.alpha,
                            beta,
                            self.out.at(i * n + j),
                            n,
                        )
                    };
                }
            }
        }
    }
}
