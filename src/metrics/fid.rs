//! Fréchet Inception Distance: the Fréchet distance between two Gaussians fitted to
//! feature sets, ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½), all in f64.

use super::linalg::{matmul, trace_sqrt_product, trace_sqrt_product_factored};
use anyhow::{bail, Result};
use rayon::prelude::*;

/// Mean and covariance (unbiased, like `np.cov`) of `n` feature vectors of length `dim`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureStats {
    pub n: usize,
    pub dim: usize,
    pub mean: Vec<f64>,
    /// Row-major (dim, dim).
    pub cov: Vec<f64>,
    /// When there are no more samples than dimensions (n ≤ dim, so `cov` has rank below n):
    /// the centred features over √(n − 1), row-major (n, dim), whose Gram product is `cov`.
    /// The Fréchet distance then takes the trace term in the n-dimensional sample space.
    pub factor: Option<Vec<f64>>,
}

impl FeatureStats {
    /// Statistics of row-major (n, dim) features.
    pub fn from_features(features: &[f32], n: usize, dim: usize) -> Result<Self> {
        if features.len() != n * dim {
            bail!("{} feature values, expected {n} x {dim}", features.len());
        }
        if n < 2 {
            bail!("need at least 2 feature vectors for a covariance, got {n}");
        }
        let mut mean = vec![0.0f64; dim];
        for row in features.chunks(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut centred = vec![0.0f64; n * dim];
        centred.par_chunks_mut(dim).zip(features.par_chunks(dim)).for_each(|(c, f)| {
            for ((c, &f), &m) in c.iter_mut().zip(f).zip(&mean) {
                *c = f as f64 - m;
            }
        });
        let mut cov = matmul(&centred, true, &centred, false, dim, n, dim);
        let s = 1.0 / (n - 1) as f64;
        cov.par_iter_mut().for_each(|v| *v *= s);
        let factor = (n <= dim).then(|| {
            centred.par_iter_mut().for_each(|v| *v *= s.sqrt());
            centred
        });
        Ok(Self { n, dim, mean, cov, factor })
    }

    /// Statistics given directly (e.g. a Gaussian in a test).
    pub fn new(mean: Vec<f64>, cov: Vec<f64>, n: usize) -> Result<Self> {
        let dim = mean.len();
        if cov.len() != dim * dim {
            bail!("covariance has {} entries, expected {dim}x{dim}", cov.len());
        }
        Ok(Self { n, dim, mean, cov, factor: None })
    }
}

/// The Fréchet distance between the Gaussians N(a.mean, a.cov) and N(b.mean, b.cov).
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.dim != b.dim {
        bail!("feature sizes differ: {} vs {}", a.dim, b.dim);
    }
    let n = a.dim;
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y).powi(2)).sum();
    let trace = |c: &[f64]| (0..n).map(|i| c[i * n + i]).sum::<f64>();
    // tr((Σ1 Σ2)^½) = tr((Σ2 Σ1)^½): from the side with fewer samples where one has a factor.
    let factored = [(a, b), (b, a)].into_iter().filter_map(|(x, y)| Some((x.factor.as_ref()?, x.n, y)));
    let cross = match factored.min_by_key(|f| f.1) {
        Some((factor, m, other)) => trace_sqrt_product_factored(factor, m, &other.cov, n)?,
        None => trace_sqrt_product(&a.cov, &b.cov, n)?,
    };
    Ok(mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * cross)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn identical_statistics_give_zero() {
        let mut r = Rng::new(4);
        let (n, d) = (300, 24);
        let f = r.normal_vec(n * d, 0.5, 2.0);
        let s = FeatureStats::from_features(&f, n, d).unwrap();
        let fid = frechet_distance(&s, &s).unwrap();
        let tr: f64 = (0..d).map(|i| s.cov[i * d + i]).sum();
        assert!(fid.abs() < 1e-9 * tr, "{fid}");
    }

    #[test]
    fn diagonal_gaussians_match_the_closed_form() {
        // FID = |mu1-mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2 for diagonal covariances.
        let d = 10;
        let mu1: Vec<f64> = (0..d).map(|i| i as f64 * 0.1).collect();
        let mu2: Vec<f64> = (0..d).map(|i| 1.0 - i as f64 * 0.05).collect();
        let va: Vec<f64> = (0..d).map(|i| 0.5 + i as f64).collect();
        let vb: Vec<f64> = (0..d).map(|i| 2.0 + 0.3 * i as f64).collect();
        let diag = |v: &[f64]| {
            let mut c = vec![0.0; d * d];
            for i in 0..d {
                c[i * d + i] = v[i];
            }
            c
        };
        let a = FeatureStats::new(mu1.clone(), diag(&va), 0).unwrap();
        let b = FeatureStats::new(mu2.clone(), diag(&vb), 0).unwrap();
        let want: f64 = (0..d).map(|i| (mu1[i] - mu2[i]).powi(2) + (va[i].sqrt() - vb[i].sqrt()).powi(2)).sum();
        let got = frechet_distance(&a, &b).unwrap();
        assert!((got - want).abs() < 1e-10 * want, "{got} vs {want}");
    }

    /// With fewer samples than dimensions on one side or both, the trace term taken in the
    /// sample space (through the factor) equals the one from the full covariances.
    #[test]
    fn sample_space_trace_term_equals_the_full_one() {
        let mut r = Rng::new(5);
        let d = 40;
        for (na, nb) in [(12, 30), (30, 12), (25, 90), (90, 25), (41, 40)] {
            let fa = r.normal_vec(na * d, 0.3, 1.5);
            let fb = r.normal_vec(nb * d, -0.2, 0.7);
            let a = FeatureStats::from_features(&fa, na, d).unwrap();
            let b = FeatureStats::from_features(&fb, nb, d).unwrap();
            assert_eq!((a.factor.is_some(), b.factor.is_some()), (na <= d, nb <= d));
            let fast = frechet_distance(&a, &b).unwrap();
            let plain = |s: &FeatureStats| FeatureStats { factor: None, ..s.clone() };
            let full = frechet_distance(&plain(&a), &plain(&b)).unwrap();
            // The full path takes square roots of the rank-deficient product's rounding-level
            // eigenvalues (each about 1e-8 after the root); the sample space has none of them.
            assert!((fast - full).abs() < 1e-7 * full, "{na} vs {nb}: {fast} against {full}");
        }
    }

    #[test]
    fn covariance_matches_definition() {
        let f = [1.0f32, 2.0, 3.0, 5.0, 5.0, 11.0];
        let s = FeatureStats::from_features(&f, 3, 2).unwrap();
        assert_eq!(s.mean, vec![3.0, 6.0]);
        // x: 1,3,5 -> var 4; y: 2,5,11 -> var 21; cov(x,y) = (-2*-4 + 0 + 2*5)/2 = 9.
        assert_eq!(s.cov, vec![4.0, 9.0, 9.0, 21.0]);
        assert!(FeatureStats::from_features(&f[..2], 1, 2).is_err());
    }
}
