//! Seeded, reproducible random numbers: xoshiro256** seeded through splitmix64.
//!
//! Every random choice in a run (initialisation, dropout masks, shuffling) draws from an
//! `Rng` made from the run's seed, so the same seed gives the same run.

use crate::Tensor;

/// A xoshiro256** generator.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator from `seed`; equal seeds give equal streams.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        Rng { s: [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x)] }
    }

    /// The generator's whole state, for checkpoints.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// A generator that continues from a saved `state`.
    pub fn from_state(state: [u64; 4]) -> Self {
        Rng { s: state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in `[0, 1)`, with 24 random bits (all an f32 holds).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) * n as f64) as usize
    }

    /// Standard normal, by Box-Muller.
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform() as f64; // (0, 1]: log is finite
        let u2 = self.uniform() as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// A constant tensor uniform in `[lo, hi)`.
    pub fn uniform_tensor(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let data = (0..shape.iter().product()).map(|_| lo + (hi - lo) * self.uniform()).collect();
        Tensor::from_vec(data, shape).expect("data fills shape")
    }

    /// A constant tensor of normals with standard deviation `std`.
    pub fn normal_tensor(&mut self, shape: &[usize], std: f32) -> Tensor {
        let data = (0..shape.iter().product()).map(|_| std * self.normal()).collect();
        Tensor::from_vec(data, shape).expect("data fills shape")
    }

    /// An inverted-dropout mask: each element is 0 with probability `p`, else `1 / (1 - p)`.
    /// Multiply it into a tensor (broadcasting) to apply dropout: a `[1, B, H]` mask on a
    /// `[T, B, H]` activation is variational (the same units dropped at every step); a
    /// `[V, 1]` mask on an embedding table drops whole words.
    pub fn dropout_mask(&mut self, shape: &[usize], p: f32) -> Tensor {
        assert!((0.0..1.0).contains(&p), "dropout_mask: p = {p} must be in [0, 1)");
        let keep = 1.0 / (1.0 - p);
        let data = (0..shape.iter().product()).map(|_| if self.uniform() < p { 0.0 } else { keep }).collect();
        Tensor::from_vec(data, shape).expect("data fills shape")
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_sane_moments() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        let mut r = Rng::new(1);
        let xs: Vec<f32> = (0..20000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
        let m = r.dropout_mask(&[10000], 0.25).to_vec();
        let dropped = m.iter().filter(|&&v| v == 0.0).count();
        assert!((2300..2700).contains(&dropped), "{dropped} of 10000 dropped at p = 0.25");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
    }
}
