//! A small, seedable, serialisable random number generator (xoshiro256++).
//!
//! Candle's CPU `randn` draws from a thread RNG that cannot be seeded, so every random
//! number facegan uses (weight init, latents, shuffles, flips) comes from here: runs
//! are reproducible under a seed, and the state goes into checkpoints so a resumed run
//! continues the exact same sequence.

use candle_core::{Device, Result, Shape, Tensor};

#[derive(Clone, Debug, PartialEq, Eq)]
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
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let s = [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x)];
        Self { s }
    }

    /// An independent stream derived from `seed` and a purpose tag, e.g. the fixed
    /// sample latents or the shuffle of epoch `k`.
    pub fn derived(seed: u64, tag: u64) -> Self {
        Self::new(seed ^ tag.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal (Box-Muller; one value per call keeps the stream simple).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn normal_vec(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        (0..n).map(|_| (mean + std * self.normal()) as f32).collect()
    }

    pub fn uniform_vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| (lo + (hi - lo) * self.uniform()) as f32).collect()
    }

    /// A tensor of N(mean, std^2) values, f32.
    pub fn normal_tensor<S: Into<Shape>>(&mut self, shape: S, mean: f64, std: f64, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.normal_vec(shape.elem_count(), mean, std);
        Tensor::from_vec(v, shape, device)
    }

    /// A tensor of U(lo, hi) values, f32.
    pub fn uniform_tensor<S: Into<Shape>>(&mut self, shape: S, lo: f64, hi: f64, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.uniform_vec(shape.elem_count(), lo, hi);
        Tensor::from_vec(v, shape, device)
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// The state as text, for checkpoint metadata.
    pub fn to_state_string(&self) -> String {
        self.s.iter().map(|x| format!("{x:016x}")).collect::<Vec<_>>().join(":")
    }

    pub fn from_state_string(s: &str) -> Option<Self> {
        let parts: Vec<u64> = s.split(':').map(|p| u64::from_str_radix(p, 16).ok()).collect::<Option<_>>()?;
        let s: [u64; 4] = parts.try_into().ok()?;
        if s == [0; 4] {
            return None;
        }
        Some(Self { s })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_state_round_trip() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let saved = a.to_state_string();
        let x: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let mut c = Rng::from_state_string(&saved).unwrap();
        let y: Vec<u64> = (0..5).map(|_| c.next_u64()).collect();
        assert_eq!(x, y);
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = Rng::new(1);
        let v = r.normal_vec(200_000, 0.0, 1.0);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut r = Rng::new(3);
        let mut v: Vec<usize> = (0..100).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
