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

/// Float buffer whose slice starts on a 64-byte (cache-line, zmm) boundary.
pub struct AlignedBuf {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zeros, 64-byte aligned.
    pub fn zeros(len: usize) -> Self {
        let buf = vec![0.0f32; len + 15];
        let off = buf.as_ptr().align_offset(64).min(15);
        AlignedBuf { buf, off, len }
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// Floats needed to pack `[rows, cols]` in panels of width `w`.
pub fn packed_len(rows: usize, cols: usize, w: usize) -> usize {
    cols.div_ceil(w) * rows * w
}

/// Packs `src` `[rows, cols]` into panels of width `w` (see the file header).
///
/// Parallel over groups of panels when the matrix is large enough for rayon to pay.
pub fn pack_panels(src: MatRef, w: usize) -> AlignedBuf {
    let mut out = AlignedBuf::zeros(packed_len(src.rows, src.cols, w));
    if src.rows * src.cols >= 1 << 18 {
        // 8 panels per task keep row-major reads a few cache lines long.
        let group = 8 * w;
        out.as_mut_slice()
            .par_chunks_mut(src.rows * group)
            .enumerate()
            .for_each(|(g, dst)| {
                let c0 = g * group;
                pack_into(
                    sub_view(src, 0, c0, src.rows, group.min(src.cols - c0)),
                    w,
                    dst,
                )
            });
    } else {
        pack_into(src, w, out.as_mut_slice());
    }
    out
}

/// The `rows x cols` block of `m` whose top-left element is `(r0, c0)`.
pub fn sub_view(m: MatRef, r0: usize, c0: usize, rows: usize, cols: usize) -> MatRef {
    let start = if rows > 0 && cols > 0 {
        r0 * m.rs + c0 * m.cs
    } else {
        0
    };
    MatRef {
        data: &m.data[start..],
        rows,
        cols,
        ..m
    }
}

/// Packs `src` into panels of width `w` at the start of `dst`, on the calling thread.
/// The last panel's columns past `src.cols` keep whatever `dst` held.
pub fn pack_into(src: MatRef, w: usize, dst: &mut [f32]) {
    let (rows, cols) = (src.rows, src.cols);
    let panel_len = rows * w;
    if panel_len == 0 {
        return;
    }
    if src.cs == 1 {
        // Rows contiguous: read each row once, cutting it into the panels. (Walking one
        // panel at a time would stride through memory and thrash the cache sets.)
        for r in 0..rows {
            let row = &src.data[r * src.rs..][..cols];
            for (p, chunk) in row.chunks(w).enumerate() {
                dst[p * panel_len + r * w..][..chunk.len()].copy_from_slice(chunk);
            }
        }
    } else {
        // Strided rows (a transposed view): copy 16-row bands, one column run at a time.
        // Each run is a cache line or two read once; walking whole panel rows instead
        // keeps `w` strided streams live, which thrashes the cache sets when the stride
        // is a multiple of a large power of two (K = 256, 1024, ...).
        const BAND: usize = 16;
        for (p, panel) in dst
            .chunks_exact_mut(panel_len)
            .take(cols.div_ceil(w))
            .enumerate()
        {
            let width = w.min(cols - p * w);
            for r0 in (0..rows).step_by(BAND) {
                let band = r0..(r0 + BAND).min(rows);
                for x in 0..width {
                    let col = &src.data[(p * w + x) * src.cs..];
                    for r in band.clone() {
                        panel[r * w + x] = col[r * src.rs];
                    }
                }
            }
        }
    }
}
