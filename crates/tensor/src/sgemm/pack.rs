//! Packing: copy a strided matrix into the panel layout the micro-kernel streams.
//!
//! A matrix `[rows, cols]` packed in panels of width `w` is `[ceil(cols / w)][rows][w]`:
//! panel `j` holds columns `j*w .. j*w+w`, one row of `w` values after another. The last
//! panel's columns past `cols` are padding: each output element depends only on its own A
//! row and B column, and the kernel never stores the padded ones, so their values do not
//! matter. B `[K, N]` is packed with `w = NR`; A `[M, K]` is packed as `A^T` with `w = MR`,
//! so a k step of either panel is `w` consecutive floats. The layout does not depend on
//! the K blocking, so any `kc` slice of a panel is contiguous.
//!
//! Checked through the products in `tests.rs` (every stride pattern, edge widths).

use crate::gemm::MatRef;
use rayon::prelude::*;
use std::cell::RefCell;

/// Float buffer whose slice starts on a 64-byte (cache-line, zmm) boundary.
///
/// Its storage comes from, and goes back to, a small per-thread free list, so the packing
/// scratch of a product called once per LSTM time step is not allocated (and page-faulted)
/// every step.
pub struct AlignedBuf {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

/// Buffers kept per thread for reuse.
const FREE_KEEP: usize = 4;

thread_local! {
    static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

impl AlignedBuf {
    /// `len` zeros, 64-byte aligned.
    pub fn zeros(len: usize) -> Self {
        let want = len + 15;
        // Reuse a free buffer that fits without being far larger than needed.
        let reused = FREE.with(|f| {
            let mut f = f.borrow_mut();
            let fit = f.iter().position(|b| (want..=2 * want + 4096).contains(&b.capacity()));
            fit.map(|i| f.swap_remove(i))
        });
        let mut buf = reused.unwrap_or_default();
        buf.clear();
        buf.resize(want, 0.0);
        let off = buf.as_ptr().align_offset(64).min(15);
        AlignedBuf { buf, off, len }
    }

    /// The aligned floats.
    pub fn as_slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }

    /// The aligned floats, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        FREE.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < FREE_KEEP {
                f.push(buf);
            }
        });
    }
}

/// Floats needed to pack `[rows, cols]` in panels of width `w`.
pub fn packed_len(rows: usize, cols: usize, w: usize) -> usize {
    cols.div_ceil(w) * rows * w
}

/// Packs `src` `[rows, cols]` into panels of width `W` (see the file header).
///
/// Parallel over groups of panels when the matrix is large enough for rayon to pay.
pub fn pack_panels<const W: usize>(src: MatRef) -> AlignedBuf {
    let mut out = AlignedBuf::zeros(packed_len(src.rows, src.cols, W));
    if src.rows * src.cols >= 1 << 18 {
        // 8 panels per task keep row-major reads a few cache lines long.
        let group = 8 * W;
        out.as_mut_slice().par_chunks_mut(src.rows * group).enumerate().for_each(|(g, dst)| {
            let c0 = g * group;
            pack_into::<W>(sub_view(src, 0, c0, src.rows, group.min(src.cols - c0)), dst)
        });
    } else {
        pack_into::<W>(src, out.as_mut_slice());
    }
    out
}

/// A row-major copy of `src` (the portable path's "packed" B).
pub fn row_major(src: MatRef) -> AlignedBuf {
    let mut out = AlignedBuf::zeros(src.rows * src.cols);
    for (r, row) in out.as_mut_slice().chunks_exact_mut(src.cols.max(1)).enumerate() {
        for (c, x) in row.iter_mut().enumerate() {
            *x = src.data[r * src.rs + c * src.cs];
        }
    }
    out
}

/// The `rows x cols` block of `m` whose top-left element is `(r0, c0)`.
pub fn sub_view(m: MatRef, r0: usize, c0: usize, rows: usize, cols: usize) -> MatRef {
    let start = if rows > 0 && cols > 0 { r0 * m.rs + c0 * m.cs } else { 0 };
    MatRef { data: &m.data[start..], rows, cols, ..m }
}

/// Packs `src` into panels of width `W` at the start of `dst`, on the calling thread.
/// The last panel's columns past `src.cols` keep whatever `dst` held. (`W` is a constant
/// so the short row copies compile to a few vector moves, not `memcpy` calls.)
pub fn pack_into<const W: usize>(src: MatRef, dst: &mut [f32]) {
    let (rows, cols) = (src.rows, src.cols);
    let panel_len = rows * W;
    if panel_len == 0 {
        return;
    }
    if src.cs == 1 {
        // Rows contiguous: read each row once, cutting it into the panels. (Walking one
        // panel at a time would stride through memory and thrash the cache sets.)
        for r in 0..rows {
            let row = &src.data[r * src.rs..][..cols];
            let mut chunks = row.chunks_exact(W);
            for (p, chunk) in chunks.by_ref().enumerate() {
                dst[p * panel_len + r * W..][..W].copy_from_slice(chunk);
            }
            let tail = chunks.remainder();
            if !tail.is_empty() {
                dst[(cols / W) * panel_len + r * W..][..tail.len()].copy_from_slice(tail);
            }
        }
    } else {
        // Strided rows (a transposed view): work in 64-row bands, 16 columns at a time,
        // so each column run read is a few whole cache lines. (Walking whole panel rows
        // keeps `W` strided streams live, which thrashes the cache sets when the stride
        // is a multiple of a large power of two: K = 256, 1024, ...)
        const BAND: usize = 64;
        // Index of element (r, c) in the packed panels.
        let at = |r: usize, c: usize| (c / W) * panel_len + r * W + c % W;
        // With contiguous columns, whole 16 x 16 blocks go through the AVX-512 transpose.
        let fast = src.rs == 1 && W.is_multiple_of(8) && super::detect() == super::Path::Avx512;
        let fast_cols = if fast { cols / 16 * 16 } else { 0 };
        for r0 in (0..rows).step_by(BAND) {
            let band = r0..(r0 + BAND).min(rows);
            let fast_end = band.start + band.len() / 16 * 16;
            for c0 in (0..fast_cols).step_by(16) {
                for r in (band.start..fast_end).step_by(16) {
                    let block = &src.data[c0 * src.cs + r..];
                    transpose_block(block, src.cs, dst, at(r, c0), at(r, c0 + 8), W);
                }
            }
            // The rest one value at a time: rows below the blocks, columns right of them.
            for c in 0..cols {
                let left = if c < fast_cols { fast_end..band.end } else { band.clone() };
                let col = &src.data[c * src.cs..];
                for r in left {
                    dst[at(r, c)] = col[r * src.rs];
                }
            }
        }
    }
}

/// A 16 x 16 block of a column-contiguous view (`src[c * lds + r]`, `c, r < 16`) into
/// `dst`: row r's first 8 values at `lo + r * ldd`, its last 8 at `hi + r * ldd`.
fn transpose_block(src: &[f32], lds: usize, dst: &mut [f32], lo: usize, hi: usize, ldd: usize) {
    assert!(
        src.len() >= 15 * lds + 16 && dst.len() >= lo.max(hi) + 15 * ldd + 8 && lo.abs_diff(hi) >= 8,
        "sgemm: transpose block out of bounds"
    );
    // SAFETY: both extents checked just above (the two halves do not overlap); only
    // called after `detect` found AVX-512F.
    unsafe {
        let out = dst.as_mut_ptr();
        super::kernel::transpose16(src.as_ptr(), lds, out.add(lo), out.add(hi), ldd)
    };
}
