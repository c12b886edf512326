//! SIMD lanes: one trait, three widths (f32, AVX2 `__m256`, AVX-512 `__m512`), the
//! activations built on it, and the softmax row kernel the cross-entropy ops use.
//!
//! Kernels are written once, generic over [`Lanes`], and instantiated inside
//! `#[target_feature]` functions (matrixmultiply's pattern); the `f32` instance is the
//! scalar fallback and handles the tails. [`Isa`] picks the width at run time. The
//! activations are polynomial approximations computed the same way at every width, checked
//! against f64 libm in the tests below (exp and sigmoid within 2e-7 relative, tanh within
//! 3e-7 absolute + relative); [`softmax_row`] is checked against a direct f64 softmax at
//! every width the host has.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The instruction set a kernel runs with, chosen at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain f32 code, any CPU.
    Scalar,
    /// AVX2 + FMA, 8 lanes.
    Avx2,
    /// AVX-512F, 16 lanes.
    Avx512,
}

impl Isa {
    /// The widest instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Whether this CPU can run `self`: each ISA's own features, checked one by one (an
    /// AVX-512F CPU need not have AVX2 and FMA).
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }
}

/// A vector of `N` f32 lanes. Loads and stores are unaligned.
pub trait Lanes: Copy {
    /// Number of f32 lanes.
    const N: usize;
    /// Loads `N` floats from `p`.
    ///
    /// # Safety
    /// `p..p+N` must be readable.
    unsafe fn load(p: *const f32) -> Self;
    /// Stores `N` floats to `p`.
    ///
    /// # Safety
    /// `p..p+N` must be writable.
    unsafe fn store(self, p: *mut f32);
    fn splat(x: f32) -> Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    /// `self * b + c` (fused where the ISA has FMA).
    fn fma(self, b: Self, c: Self) -> Self;
    /// Lane-wise maximum (which operand a NaN lane yields depends on the ISA).
    fn max(self, o: Self) -> Self;
    /// `self` limited to `[lo, hi]` lane by lane; a NaN lane stays NaN (lo, hi are never NaN).
    fn clamp(self, lo: Self, hi: Self) -> Self;
    /// Round to nearest integer (ties to even), kept as float.
    fn round(self) -> Self;
    /// `2^n` for integral `n` in [-126, 127].
    fn pow2(self) -> Self;
    /// The `N` lanes, in the first `N` places of the array.
    #[inline(always)]
    fn to_array(self) -> [f32; 16] {
        let mut a = [0.0; 16];
        // SAFETY: N <= 16 for every width.
        unsafe { self.store(a.as_mut_ptr()) };
        a
    }
}

impl Lanes for f32 {
    const N: usize = 1;
    unsafe fn load(p: *const f32) -> Self {
        *p
    }
    unsafe fn store(self, p: *mut f32) {
        *p = self
    }
    fn splat(x: f32) -> Self {
        x
    }
    fn add(self, o: Self) -> Self {
        self + o
    }
    fn sub(self, o: Self) -> Self {
        self - o
    }
    fn mul(self, o: Self) -> Self {
        self * o
    }
    fn div(self, o: Self) -> Self {
        self / o
    }
    fn fma(self, b: Self, c: Self) -> Self {
        self * b + c
    }
    fn max(self, o: Self) -> Self {
        f32::max(self, o)
    }
    fn clamp(self, lo: Self, hi: Self) -> Self {
        // f32::max / f32::min return the other operand for NaN: test it explicitly.
        if self.is_nan() {
            self
        } else {
            f32::max(self, lo).min(hi)
        }
    }
    fn round(self) -> Self {
        self.round_ties_even()
    }
    fn pow2(self) -> Self {
        f32::from_bits(((self as i32 + 127) as u32) << 23)
    }
}

/// Implements [`Lanes`] for one x86 vector type; `$fma` is only called inside functions
/// compiled with the matching `target_feature`, which is what makes these sound.
macro_rules! x86_lanes {
    ($name:ident, $v:ty, $n:expr, $load:ident, $store:ident, $set1:ident, $add:ident, $sub:ident,
     $mul:ident, $div:ident, $fma:ident, $min:ident, $max:ident, $round:expr, $cvt:ident, $slli:ident,
     $addi:ident, $set1i:ident, $cast:ident) => {
        /// One register of f32 lanes.
        #[cfg(target_arch = "x86_64")]
        #[derive(Clone, Copy)]
        pub struct $name(pub $v);
        #[cfg(target_arch = "x86_64")]
        impl Lanes for $name {
            const N: usize = $n;
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                $name($load(p))
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut f32) {
                $store(p, self.0)
            }
            #[inline(always)]
            fn splat(x: f32) -> Self {
                unsafe { $name($set1(x)) }
            }
            #[inline(always)]
            fn add(self, o: Self) -> Self {
                unsafe { $name($add(self.0, o.0)) }
            }
            #[inline(always)]
            fn sub(self, o: Self) -> Self {
                unsafe { $name($sub(self.0, o.0)) }
            }
            #[inline(always)]
            fn mul(self, o: Self) -> Self {
                unsafe { $name($mul(self.0, o.0)) }
            }
            #[inline(always)]
            fn div(self, o: Self) -> Self {
                unsafe { $name($div(self.0, o.0)) }
            }
            #[inline(always)]
            fn fma(self, b: Self, c: Self) -> Self {
                unsafe { $name($fma(self.0, b.0, c.0)) }
            }
            #[inline(always)]
            fn max(self, o: Self) -> Self {
                unsafe { $name($max(self.0, o.0)) }
            }
            /// x86 min / max return their SECOND operand when either is NaN, so `self` goes second.
            #[inline(always)]
            fn clamp(self, lo: Self, hi: Self) -> Self {
                unsafe { $name($min(hi.0, $max(lo.0, self.0))) }
            }
            #[inline(always)]
            fn round(self) -> Self {
                unsafe { $name($round(self.0)) }
            }
            #[inline(always)]
            fn pow2(self) -> Self {
                unsafe { $name($cast($slli::<23>($addi($cvt(self.0), $set1i(127))))) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn round256(x: __m256) -> __m256 {
    _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x)
}
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn round512(x: __m512) -> __m512 {
    _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x)
}

x86_lanes!(
    Avx2,
    __m256,
    8,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_add_ps,
    _mm256_sub_ps,
    _mm256_mul_ps,
    _mm256_div_ps,
    _mm256_fmadd_ps,
    _mm256_min_ps,
    _mm256_max_ps,
    round256,
    _mm256_cvtps_epi32,
    _mm256_slli_epi32,
    _mm256_add_epi32,
    _mm256_set1_epi32,
    _mm256_castsi256_ps
);
x86_lanes!(
    Avx512,
    __m512,
    16,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_add_ps,
    _mm512_sub_ps,
    _mm512_mul_ps,
    _mm512_div_ps,
    _mm512_fmadd_ps,
    _mm512_min_ps,
    _mm512_max_ps,
    round512,
    _mm512_cvtps_epi32,
    _mm512_slli_epi32,
    _mm512_add_epi32,
    _mm512_set1_epi32,
    _mm512_castsi512_ps
);

/// `e^x` by range reduction `x = n ln2 + r` and Cephes' degree-6 polynomial for `e^r`.
/// Inputs are clamped to [-87.3, 88.3], so the result never overflows or goes subnormal;
/// NaN gives NaN.
#[inline(always)]
pub fn exp<V: Lanes>(x: V) -> V {
    let x = x.clamp(V::splat(-87.3), V::splat(88.3));
    let n = x.mul(V::splat(std::f32::consts::LOG2_E)).round();
    // r = x - n ln2, with ln2 split in a high part exact in f32 and a low correction
    let r = n.fma(V::splat(-0.693_359_4), x);
    let r = n.fma(V::splat(2.121_944_4e-4), r);
    let mut p = V::splat(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = p.fma(r, V::splat(c));
    }
    let e = p.mul(r.mul(r)).add(r).add(V::splat(1.0));
    e.mul(n.pow2())
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid<V: Lanes>(x: V) -> V {
    let one = V::splat(1.0);
    one.div(one.add(exp(V::splat(0.0).sub(x))))
}

/// `tanh(x)` as Eigen's odd rational approximation `x P(x^2) / Q(x^2)` on [-7.9, 7.9]
/// (beyond it tanh is 1 in f32); NaN gives NaN.
#[inline(always)]
pub fn tanh<V: Lanes>(x: V) -> V {
    let x = x.clamp(V::splat(-7.905_311), V::splat(7.905_311));
    let x2 = x.mul(x);
    let mut p = V::splat(-2.760_768_5e-16);
    for c in [2.000_188e-13, -8.604_672e-11, 5.122_297e-8, 1.485_722_4e-5, 6.372_619_3e-4, 4.893_524_6e-3] {
        p = p.fma(x2, V::splat(c));
    }
    let mut q = V::splat(1.198_258_4e-6);
    for c in [1.185_347_1e-4, 2.268_434_6e-3, 4.893_525e-3] {
        q = q.fma(x2, V::splat(c));
    }
    x.mul(p).div(q)
}

/// Writes `dst = scale * softmax(src)` and returns `log(sum(exp(src)))`. The row maximum is
/// subtracted before exponentiating, so large logits cannot overflow; a NaN anywhere in
/// `src` makes the result NaN. Runs at the widest width this CPU has.
pub fn softmax_row(src: &[f32], dst: &mut [f32], scale: f32) -> f32 {
    assert_eq!(src.len(), dst.len(), "softmax_row: {} inputs for {} outputs", src.len(), dst.len());
    // SAFETY: both slices hold `src.len()` floats; the detected ISA is supported.
    unsafe { softmax_raw(Isa::detect(), src.as_ptr(), dst.as_mut_ptr(), src.len(), scale) }
}

/// [`softmax_row`] with the row overwritten by its own result.
pub fn softmax_row_in_place(row: &mut [f32], scale: f32) -> f32 {
    let p = row.as_mut_ptr();
    // SAFETY: `row` holds `row.len()` floats; the kernel reads each element before writing it.
    unsafe { softmax_raw(Isa::detect(), p, p, row.len(), scale) }
}

/// # Safety
/// `src..src+n` readable, `dst..dst+n` writable (they may be the same buffer), `isa` available.
unsafe fn softmax_raw(isa: Isa, src: *const f32, dst: *mut f32, n: usize, scale: f32) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => softmax_avx512(src, dst, n, scale),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => softmax_avx2(src, dst, n, scale),
        _ => softmax_lanes::<f32>(src, dst, n, scale),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(src: *const f32, dst: *mut f32, n: usize, scale: f32) -> f32 {
    softmax_lanes::<Avx2>(src, dst, n, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(src: *const f32, dst: *mut f32, n: usize, scale: f32) -> f32 {
    softmax_lanes::<Avx512>(src, dst, n, scale)
}

/// Three passes over the row: the maximum, `exp(x - max)` stored and summed, the scaling.
/// Full vectors first, then the scalar tail, with the same `exp` at both widths.
#[inline(always)]
unsafe fn softmax_lanes<V: Lanes>(src: *const f32, dst: *mut f32, n: usize, scale: f32) -> f32 {
    let full = n - n % V::N;
    let mut m = V::splat(f32::NEG_INFINITY);
    for j in (0..full).step_by(V::N) {
        m = V::load(src.add(j)).max(m);
    }
    let max = (full..n)
        .fold(m.to_array()[..V::N].iter().copied().fold(f32::NEG_INFINITY, f32::max), |a, j| a.max(*src.add(j)));
    let (shift, mut s) = (V::splat(max), V::splat(0.0));
    for j in (0..full).step_by(V::N) {
        let e = exp(V::load(src.add(j)).sub(shift));
        e.store(dst.add(j));
        s = s.add(e);
    }
    let mut sum: f32 = s.to_array()[..V::N].iter().sum();
    for j in full..n {
        let e = exp(*src.add(j) - max);
        *dst.add(j) = e;
        sum += e;
    }
    let k = V::splat(scale / sum);
    for j in (0..full).step_by(V::N) {
        V::load(dst.add(j)).mul(k).store(dst.add(j));
    }
    for j in full..n {
        *dst.add(j) *= scale / sum;
    }
    max + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `f` at every width the host supports and checks it against `want` (f64).
    fn check(name: &str, f: fn(f32) -> f32, want: fn(f64) -> f64, atol: f64, rtol: f64) {
        let wide = [-100.0, -87.0, -60.0, -30.0, 30.0, 60.0, 88.0, 100.0, 1e-6];
        let mut xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.005).chain(wide).collect();
        if name == "exp" {
            xs.retain(|x| (-87.0..=88.0).contains(x)); // exp clamps outside its f32 range
        }
        let mut worst = (0.0f64, 0.0f32);
        for &x in &xs {
            let (got, w) = (f(x) as f64, want(x as f64));
            let err = (got - w).abs() / (atol + rtol * w.abs());
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 <= 1.0, "{name}: error {:.3} of tolerance at x={}", worst.0, worst.1);
    }

    #[test]
    fn scalar_activations_match_libm() {
        check("exp", exp::<f32>, f64::exp, 0.0, 2e-7);
        // below x = -88 sigmoid stays at ~1e-39 where f32 would go subnormal
        check("sigmoid", sigmoid::<f32>, |x| 1.0 / (1.0 + (-x).exp()), 1e-37, 2e-7);
        check("tanh", tanh::<f32>, f64::tanh, 3e-7, 3e-7);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_activations_match_scalar() {
        let xs: Vec<f32> = (0..4096).map(|i| (i as f32 - 2048.0) * 0.013).collect();
        let scalar: Vec<[f32; 3]> = xs.iter().map(|&x| [exp(x), sigmoid(x), tanh(x)]).collect();
        let mut checked = 0;
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: features detected above.
            let v = unsafe { eval_avx2(&xs) };
            compare("avx2", &v, &scalar);
            checked += 1;
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: feature detected above.
            let v = unsafe { eval_avx512(&xs) };
            compare("avx512", &v, &scalar);
            checked += 1;
        }
        if checked < 2 {
            println!("skipping {} vector width(s): host lacks the feature", 2 - checked);
        }
    }

    /// A NaN input gives NaN from exp, sigmoid and tanh at every width (the clamps keep it).
    #[test]
    fn activations_propagate_nan() {
        let xs = [f32::NAN; 16];
        let mut widths: Vec<(&str, Vec<[f32; 3]>)> =
            vec![("scalar", xs.iter().map(|&x| [exp(x), sigmoid(x), tanh(x)]).collect())];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                // SAFETY: features detected above.
                widths.push(("avx2", unsafe { eval_avx2(&xs) }));
            }
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: feature detected above.
                widths.push(("avx512", unsafe { eval_avx512(&xs) }));
            }
        }
        for (isa, got) in widths {
            let bad = got.iter().flatten().position(|v| !v.is_nan());
            assert!(bad.is_none(), "{isa}: exp/sigmoid/tanh of NaN is finite at flat index {bad:?}: {got:?}");
        }
    }

    /// Every width against a direct f64 softmax: rows shorter than a vector, with tails, with
    /// logits far apart (shifted by +-80), scaled, and in place; the log-sum-exp too.
    #[test]
    fn softmax_row_matches_f64_at_every_width() {
        let mut rng = crate::Rng::new(3);
        for (n, spread, shift) in [(1, 1.0, 0.0), (7, 3.0, 0.0), (17, 5.0, 80.0), (33, 5.0, -80.0), (1003, 12.0, 0.0)] {
            let x: Vec<f32> = (0..n).map(|_| rng.normal() * spread + shift).collect();
            let max = x.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
            let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
            let want: Vec<f64> = x.iter().map(|&v| 0.5 * (v as f64 - max).exp() / sum).collect();
            for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512].into_iter().filter(|i| i.available()) {
                let mut got = vec![f32::NAN; n];
                // SAFETY: both buffers hold n floats; the ISA is available.
                let lse = unsafe { softmax_raw(isa, x.as_ptr(), got.as_mut_ptr(), n, 0.5) };
                let bad = got.iter().zip(&want).position(|(&g, &w)| (g as f64 - w).abs() > 1e-6 * w + 1e-12);
                assert!(bad.is_none(), "{isa:?} n={n}: first bad index {bad:?}: {got:?} vs {want:?}");
                let lse_want = max + sum.ln();
                assert!(
                    (lse as f64 - lse_want).abs() <= 1e-6 * lse_want.abs().max(1.0),
                    "{isa:?} n={n}: lse {lse} vs {lse_want}"
                );
                let mut row = x.clone();
                // SAFETY: as above, one buffer read before it is written.
                let lse_in_place = unsafe { softmax_raw(isa, row.as_ptr(), row.as_mut_ptr(), n, 0.5) };
                assert_eq!((row, lse_in_place), (got, lse), "{isa:?} n={n}: in place differs");
            }
        }
        let mut nan = vec![0.5f32; 40];
        nan[21] = f32::NAN;
        assert!(softmax_row_in_place(&mut nan, 1.0).is_nan(), "a NaN logit must give a NaN log-sum-exp");
    }

    fn compare(isa: &str, got: &[[f32; 3]], want: &[[f32; 3]]) {
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            for f in 0..3 {
                let d = (g[f] - w[f]).abs();
                assert!(d <= 1e-7 + 1e-6 * w[f].abs(), "{isa}: function {f} at index {k}: {} vs {}", g[f], w[f]);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn eval_avx2(xs: &[f32]) -> Vec<[f32; 3]> {
        eval::<Avx2>(xs)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn eval_avx512(xs: &[f32]) -> Vec<[f32; 3]> {
        eval::<Avx512>(xs)
    }
    #[inline(always)]
    unsafe fn eval<V: Lanes>(xs: &[f32]) -> Vec<[f32; 3]> {
        let mut out = vec![[0.0; 3]; xs.len()];
        let mut buf = [0.0f32; 16];
        for (k, ch) in xs.chunks_exact(V::N).enumerate() {
            let x = V::load(ch.as_ptr());
            for (f, y) in [exp(x), sigmoid(x), tanh(x)].into_iter().enumerate() {
                y.store(buf.as_mut_ptr());
                for l in 0..V::N {
                    out[k * V::N + l][f] = buf[l];
                }
            }
        }
        out
    }
}
