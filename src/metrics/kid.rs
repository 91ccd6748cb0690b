//! Kernel Inception Distance (Bińkowski et al. 2018) as in stylegan2-ada's metric:
//! the unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y / d + 1)³,
//! averaged over random subsets (by default 100 of 1000, fewer when there are fewer
//! samples). Reported as mean ± standard deviation over the subsets.

use super::linalg::matmul;
use crate::rng::Rng;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq)]
pub struct KidOptions {
    pub subsets: usize,
    /// Largest subset; the subsets are min(this, real count, fake count) large.
    pub subset_size: usize,
    pub seed: u64,
}

impl Default for KidOptions {
    fn default() -> Self {
        Self { subsets: 100, subset_size: 1000, seed: 0 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KidValue {
    pub mean: f64,
    /// Standard deviation of the per-subset estimates.
    pub std: f64,
    pub subsets: usize,
    pub subset_size: usize,
}

/// `m` distinct indices below `n`.
fn choose(rng: &mut Rng, n: usize, m: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..m {
        let j = i + rng.below(n - i);
        idx.swap(i, j);
    }
    idx.truncate(m);
    idx
}

fn gather(features: &[f32], dim: usize, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        out.extend_from_slice(&features[i * dim..(i + 1) * dim]);
    }
    out
}

/// KID between row-major (n_real, dim) and (n_fake, dim) features.
pub fn kid(
    real: &[f32],
    n_real: usize,
    fake: &[f32],
    n_fake: usize,
    dim: usize,
    opts: &KidOptions,
) -> Result<KidValue> {
    if real.len() != n_real * dim || fake.len() != n_fake * dim {
        bail!("feature buffers do not match their counts");
    }
    let m = opts.subset_size.min(n_real).min(n_fake);
    if m < 2 {
        bail!("KID needs at least 2 samples in each set");
    }
    if opts.subsets == 0 {
        bail!("KID needs at least one subset");
    }
    let mut rng = Rng::derived(opts.seed, 0x6B1D);
    let kernel = |a: &[f32], b: &[f32]| -> Vec<f64> {
        matmul(a, false, b, true, m, dim, m).into_iter().map(|v| (v as f64 / dim as f64 + 1.0).powi(3)).collect()
    };
    let mut values = Vec::with_capacity(opts.subsets);
    for _ in 0..opts.subsets {
        let x = gather(fake, dim, &choose(&mut rng, n_fake, m));
        let y = gather(real, dim, &choose(&mut rng, n_real, m));
        let off_diagonal = |k: Vec<f64>| -> f64 {
            let total: f64 = k.iter().sum();
            let diag: f64 = (0..m).map(|i| k[i * m + i]).sum();
            total - diag
        };
        let a = off_diagonal(kernel(&x, &x)) + off_diagonal(kernel(&y, &y));
        let b: f64 = kernel(&x, &y).iter().sum();
        let t = a / (m - 1) as f64 - b * 2.0 / m as f64;
        values.push(t / m as f64);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    Ok(KidValue { mean, std: var.sqrt(), subsets: opts.subsets, subset_size: m })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_distribution_is_near_zero_and_a_shift_is_not() {
        let mut r = Rng::new(5);
        let (n, d) = (1000, 16);
        let a = r.normal_vec(n * d, 0.0, 1.0);
        let b = r.normal_vec(n * d, 0.0, 1.0);
        let opts = KidOptions { subsets: 20, subset_size: 200, seed: 1 };
        let shifted: Vec<f32> = b.iter().map(|v| v + 0.5).collect();
        let far = kid(&a, n, &shifted, n, d, &opts).unwrap();
        // Independent draws of one distribution: zero within the subset noise.
        let other = kid(&a, n, &b, n, d, &opts).unwrap();
        assert!(other.mean.abs() < 3.0 * other.std, "{other:?}");
        assert!(far.mean > 20.0 * other.mean.abs().max(other.std), "{far:?} vs {other:?}");
        // The same set (subsets overlap, so the estimate is slightly negative: a
        // sample's similarity to itself counts in the cross term only).
        let same = kid(&a, n, &a, n, d, &opts).unwrap();
        assert_eq!(same.subset_size, 200);
        assert!(same.mean.abs() < far.mean / 10.0, "{same:?} vs {far:?}");
    }

    #[test]
    fn subset_size_is_capped_by_the_sample_count() {
        let mut r = Rng::new(6);
        let a = r.normal_vec(30 * 4, 0.0, 1.0);
        let b = r.normal_vec(50 * 4, 0.0, 1.0);
        let v = kid(&a, 30, &b, 50, 4, &KidOptions::default()).unwrap();
        assert_eq!((v.subset_size, v.subsets), (30, 100));
    }

    #[test]
    fn matches_the_definition_on_a_tiny_case() {
        // One subset of both full sets: the unbiased MMD² written out.
        let x = [0.0f32, 1.0, 2.0, 0.5, -1.0, 1.0];
        let y = [1.0f32, 1.0, 0.0, 0.0, 3.0, -1.0];
        let (m, d) = (3usize, 2usize);
        let k = |p: &[f32], q: &[f32]| ((p[0] * q[0] + p[1] * q[1]) as f64 / 2.0 + 1.0).powi(3);
        let row = |s: &[f32], i: usize| s[i * d..(i + 1) * d].to_vec();
        let mut xx = 0.0;
        let mut yy = 0.0;
        let mut xy = 0.0;
        for i in 0..m {
            for j in 0..m {
                if i != j {
                    xx += k(&row(&x, i), &row(&x, j));
                    yy += k(&row(&y, i), &row(&y, j));
                }
                xy += k(&row(&x, i), &row(&y, j));
            }
        }
        let want = xx / (m * (m - 1)) as f64 + yy / (m * (m - 1)) as f64 - 2.0 * xy / (m * m) as f64;
        let opts = KidOptions { subsets: 1, subset_size: 3, seed: 0 };
        // Subsets of everything are permutations: the value does not depend on them.
        let got = kid(&y, 3, &x, 3, 2, &opts).unwrap();
        assert!((got.mean - want).abs() < 1e-9, "{} vs {want}", got.mean);
    }
}
