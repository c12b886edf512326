//! The AVX-512 micro-kernel: one `MR x NR` tile of C from a packed A panel and a packed
//! B panel, kept in 24 zmm accumulators for the whole `kc` loop.
//!
//! Register blocking: each k step loads `NV` vectors of 16 B values, broadcasts `MR` A
//! values (`vbroadcastss` from memory) and issues `MR * NV` FMAs; LLVM keeps `acc` in
//! registers (checked in the assembly). With its operands in L1 this 8 x 48 tile ran at
//! ~99% of one core's FMA peak (263 of 265 GFLOP/s, scratch harness). On the LSTM step
//! 12 x 32 measured about the same and 6 x 64, 14 x 32 lower; 8 x 48 needs the fewest
//! loads per FMA and cuts B = 64 or 32 rows into whole tiles. Also here: the 16 x 16
//! transpose that packs operands from transposed views. Checked against the naive
//! product and the portable path by `tests.rs`.

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
    // Edge tiles with few columns or rows run a smaller kernel instead of multiplying
    // padding (N = 400 leaves a 16-column last panel, B = 1 a single row).
    // SAFETY: forwarded contract.
    unsafe {
        match cols.div_ceil(16) {
            1 => tile_cols::<1>(rows, cols, kc, a, b, alpha, beta, c, ldc),
            2 => tile_cols::<2>(rows, cols, kc, a, b, alpha, beta, c, ldc),
            _ => tile_cols::<NV>(rows, cols, kc, a, b, alpha, beta, c, ldc),
        }
    }
}

/// `tile` with `V` vectors per row (`cols <= 16 * V`), dispatching on the row count.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_cols<const V: usize>(
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
    // SAFETY: forwarded contract; R >= rows and 16 * V >= cols in every arm.
    unsafe {
        match rows {
            1 => tile_rows::<1, V>(rows, cols, kc, a, b, alpha, beta, c, ldc),
            2 => tile_rows::<2, V>(rows, cols, kc, a, b, alpha, beta, c, ldc),
            3 | 4 => tile_rows::<4, V>(rows, cols, kc, a, b, alpha, beta, c, ldc),
            _ => tile_rows::<MR, V>(rows, cols, kc, a, b, alpha, beta, c, ldc),
        }
    }
}

/// `tile` computing `R` rows of `V` vectors (`rows <= R <= MR`, `cols <= 16 * V <= NR`)
/// and storing the first `rows` x `cols`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_rows<const R: usize, const V: usize>(
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
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let mut bv = [_mm512_setzero_ps(); V];
    for p in 0..kc {
        // SAFETY: p < kc, so p*NR + 16*V <= kc*NR floats of b and p*MR + R <= kc*MR of a.
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
            let mask: __mmask16 = if cols - lo >= 16 { 0xffff } else { (1u16 << (cols - lo)) - 1 };
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

/// Transposes one 16 x 16 block, `out[r][c] = src[c * lds + r]` for `r, c < 16`, storing
/// row r's values 0..8 at `lo + r * ldd` and 8..16 at `hi + r * ldd`.
///
/// Packs operands from transposed views (`W^T`, or a row-major A) 16 values per
/// instruction: three shuffle stages instead of 256 scalar loads from 16 cache lines.
/// The split store lets one block straddle two 8-wide A panels.
///
/// # Safety
/// The CPU must support AVX-512F; `src` must hold 16 floats at each of the 16 offsets
/// `c * lds`, and `lo`, `hi` 8 floats at each `r * ldd`, not overlapping.
#[target_feature(enable = "avx512f")]
pub unsafe fn transpose16(src: *const f32, lds: usize, lo: *mut f32, hi: *mut f32, ldd: usize) {
    let mut x = [_mm512_setzero_ps(); 16];
    for (c, x_c) in x.iter_mut().enumerate() {
        // SAFETY: column c's 16 values lie at src + c*lds (caller's contract).
        *x_c = unsafe { _mm512_loadu_ps(src.add(c * lds)) };
    }
    // Interleave pairs of columns, then pairs of pairs: afterwards 128-bit lane L of
    // y[4g + e] holds element 4L + e of columns 4g .. 4g + 4.
    let mut y = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let lo01 = _mm512_castps_pd(_mm512_unpacklo_ps(x[4 * g], x[4 * g + 1]));
        let hi01 = _mm512_castps_pd(_mm512_unpackhi_ps(x[4 * g], x[4 * g + 1]));
        let lo23 = _mm512_castps_pd(_mm512_unpacklo_ps(x[4 * g + 2], x[4 * g + 3]));
        let hi23 = _mm512_castps_pd(_mm512_unpackhi_ps(x[4 * g + 2], x[4 * g + 3]));
        y[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo01, lo23));
        y[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo01, lo23));
        y[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi01, hi23));
        y[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi01, hi23));
    }
    // Row 4L + e gathers lane L of y[e], y[4 + e], y[8 + e], y[12 + e].
    for e in 0..4 {
        let ab01 = _mm512_shuffle_f32x4::<0x44>(y[e], y[4 + e]); // a0 a1 b0 b1
        let ab23 = _mm512_shuffle_f32x4::<0xEE>(y[e], y[4 + e]); // a2 a3 b2 b3
        let cd01 = _mm512_shuffle_f32x4::<0x44>(y[8 + e], y[12 + e]);
        let cd23 = _mm512_shuffle_f32x4::<0xEE>(y[8 + e], y[12 + e]);
        let rows = [
            _mm512_shuffle_f32x4::<0x88>(ab01, cd01),
            _mm512_shuffle_f32x4::<0xDD>(ab01, cd01),
            _mm512_shuffle_f32x4::<0x88>(ab23, cd23),
            _mm512_shuffle_f32x4::<0xDD>(ab23, cd23),
        ];
        for (lane, row) in rows.into_iter().enumerate() {
            let r = 4 * lane + e;
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(row)));
            // SAFETY: row r < 16 has 8 floats at lo + r*ldd and at hi + r*ldd (contract).
            unsafe {
                _mm256_storeu_ps(lo.add(r * ldd), _mm512_castps512_ps256(row));
                _mm256_storeu_ps(hi.add(r * ldd), high);
            }
        }
    }
}
