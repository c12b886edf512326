//! The AVX-512 micro-kernel: one `MR x NR` tile of C from a packed A panel and a packed
//! B panel, kept in 24 zmm accumulators for the whole `kc` loop.
//!
//! Register blocking: each k step loads `NV` vectors of 16 B values, broadcasts `MR` A
//! values (folded by LLVM into the FMA as an embedded `{1to16}` memory operand) and issues
//! `MR * NV` FMAs. Checked against the naive product and the portable path by `tests.rs`.

use std::arch::x86_64::*;

/// Rows of C per tile: A values broadcast per k step.
pub const MR: usize = 8;
/// zmm vectors (16 lanes each) per tile row.
pub const NV: usize = 3;
/// Columns of C per tile.
pub const NR: usize = NV * 16;

/// One output tile: `C[rows, cols] = alpha * A[rows, kc] · B[kc, cols] + beta * C`.
///
/// `a` is a packed A panel (`[kc][MR]`, rows past `rows` padding), `b` a packed B panel
/// (`[kc][NR]`), `c` the tile's top-left with row stride `ldc`. `rows <= MR`, `cols <= NR`.
/// With `beta == 0` the old C is never read.
///
/// # Safety
/// The CPU must support AVX-512F; `a` must hold `kc * MR` floats, `b` `kc * NR`, and
/// `c` must be valid for `rows` rows of `cols` floats at stride `ldc`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    rows: usize,
    cols: usize,
    kc: usize,
    a: *const f32,
    b: *const f32,
    alpha: f32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    // Edge tiles with few rows run a shorter kernel instead of multiplying padding.
    // SAFETY: forwarded contract; R >= rows in every arm.
    unsafe {
        match rows {
            1 => tile_rows::<1>(rows, cols, kc, a, b, alpha, beta, c, ldc),
            2 => tile_rows::<2>(rows, cols, kc, a, b, alpha, beta, c, ldc),
            3 | 4 => tile_rows::<4>(rows, cols, kc, a, b, alpha, beta, c, ldc),
            _ => tile_rows::<MR>(rows, cols, kc, a, b, alpha, beta, c, ldc),
        }
    }
}

/// `tile` computing `R` rows (`rows <= R <= MR`) and storing the first `rows`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_rows<const R: usize>(
    rows: usize,
    cols: usize,
    kc: usize,
    a: *const f32,
    b: *const f32,
    alpha: f32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    let mut bv = [_mm512_setzero_ps(); NV];
    for p in 0..kc {
        // SAFETY: p < kc, so p*NR + NR <= kc*NR floats of b and p*MR + R <= kc*MR of a.
        unsafe {
            for (v, b_v) in bv.iter_mut().enumerate() {
                *b_v = _mm512_loadu_ps(b.add(p * NR + v * 16));
            }
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let a_i = _mm512_set1_ps(*a.add(p * MR + i));
                for (acc_v, &b_v) in acc_row.iter_mut().zip(&bv) {
                    *acc_v = _mm512_fmadd_ps(a_i, b_v, *acc_v);
                }
            }
        }
    }
    let (valpha, vbeta) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    for (i, acc_row) in acc.iter().enumerate().take(rows) {
        for (v, &acc_v) in acc_row.iter().enumerate() {
            let lo = v * 16;
            if lo >= cols {
                break;
            }
            // Lanes lo..cols of this vector are inside the tile.
            let mask: __mmask16 = if cols - lo >= 16 {
                0xffff
            } else {
                (1u16 << (cols - lo)) - 1
            };
            // SAFETY: row i < rows and lanes < cols lie inside C (caller's contract); the
            // masked load/store touch no other lanes.
            unsafe {
                let dst = c.add(i * ldc + lo);
                let mut out = _mm512_mul_ps(valpha, acc_v);
                if beta != 0.0 {
                    out = _mm512_fmadd_ps(vbeta, _mm512_maskz_loadu_ps(mask, dst), out);
                }
                _mm512_mask_storeu_ps(dst, mask, out);
            }
        }
    }
}
