//! Improved precision and recall (Kynkäänniemi et al. 2019) on Inception features:
//! each set's manifold is the union of balls around its samples reaching their k-th
//! nearest neighbour (k = 3, the sample itself not counted). Precision is the share
//! of generated samples inside the real manifold, recall the share of real samples
//! inside the generated one.

use super::linalg::matmul;
use anyhow::{bail, Result};
use rayon::prelude::*;

/// Rows per block of the distance matrices.
const BLOCK: usize = 1024;

fn squared_norms(x: &[f32], dim: usize) -> Vec<f32> {
    x.par_chunks(dim).map(|r| r.iter().map(|v| v * v).sum()).collect()
}

/// Squared distances between rows `r0..r1` of `a` and every row of `b`, (r1-r0, nb).
fn block_distances(a: &[f32], an: &[f32], r0: usize, r1: usize, b: &[f32], bn: &[f32], dim: usize) -> Vec<f32> {
    let nb = bn.len();
    let mut d = matmul(&a[r0 * dim..r1 * dim], false, b, true, r1 - r0, dim, nb);
    d.par_chunks_mut(nb).enumerate().for_each(|(i, row)| {
        for (v, &bj) in row.iter_mut().zip(bn) {
            *v = (an[r0 + i] + bj - 2.0 * *v).max(0.0);
        }
    });
    d
}

/// Squared distance of every row of `x` to its k-th nearest other row.
fn knn_radii(x: &[f32], n: usize, dim: usize, k: usize) -> Vec<f32> {
    let norms = squared_norms(x, dim);
    let mut radii = Vec::with_capacity(n);
    for r0 in (0..n).step_by(BLOCK) {
        let r1 = (r0 + BLOCK).min(n);
        let mut d = block_distances(x, &norms, r0, r1, x, &norms, dim);
        let part: Vec<f32> = d
            .par_chunks_mut(n)
            .enumerate()
            .map(|(i, row)| {
                row[r0 + i] = 0.0; // itself, whatever the rounding says
                                   // Index k: the k-th smallest after the sample's own zero.
                *row.select_nth_unstable_by(k, |a, b| a.total_cmp(b)).1
            })
            .collect();
        radii.extend(part);
    }
    radii
}

/// (precision, recall) of `fake` against `real`, row-major (n, dim) features.
pub fn precision_recall(
    real: &[f32],
    n_real: usize,
    fake: &[f32],
    n_fake: usize,
    dim: usize,
    k: usize,
) -> Result<(f64, f64)> {
    if real.len() != n_real * dim || fake.len() != n_fake * dim {
        bail!("feature buffers do not match their counts");
    }
    if k == 0 || n_real <= k || n_fake <= k {
        bail!("precision/recall with k={k} needs more than {k} samples in each set");
    }
    let r_real = knn_radii(real, n_real, dim, k);
    let r_fake = knn_radii(fake, n_fake, dim, k);
    let real_norms = squared_norms(real, dim);
    let fake_norms = squared_norms(fake, dim);
    // Rows: real samples; columns: fake samples.
    let mut fake_covered = vec![false; n_fake];
    let mut real_covered = vec![false; n_real];
    for r0 in (0..n_real).step_by(BLOCK) {
        let r1 = (r0 + BLOCK).min(n_real);
        let d = block_distances(real, &real_norms, r0, r1, fake, &fake_norms, dim);
        let rows: Vec<bool> = d.par_chunks(n_fake).map(|row| row.iter().zip(&r_fake).any(|(d, r)| d <= r)).collect();
        real_covered[r0..r1].copy_from_slice(&rows);
        let cols: Vec<bool> =
            (0..n_fake).into_par_iter().map(|j| (r0..r1).any(|i| d[(i - r0) * n_fake + j] <= r_real[i])).collect();
        for (c, hit) in fake_covered.iter_mut().zip(cols) {
            *c |= hit;
        }
    }
    let share = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / v.len() as f64;
    Ok((share(&fake_covered), share(&real_covered)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn points(rng: &mut Rng, n: usize, cx: f64, cy: f64, s: f64) -> Vec<f32> {
        (0..n).flat_map(|_| [(cx + s * rng.normal()) as f32, (cy + s * rng.normal()) as f32]).collect()
    }

    #[test]
    fn toy_2d_sets() {
        let mut r = Rng::new(2);
        let real = points(&mut r, 500, 0.0, 0.0, 1.0);
        // Same distribution: both high.
        let same = points(&mut r, 500, 0.0, 0.0, 1.0);
        let (p, rc) = precision_recall(&real, 500, &same, 500, 2, 3).unwrap();
        assert!(p > 0.9 && rc > 0.9, "{p} {rc}");
        // Collapsed onto a small part of the real set: precise, poor recall.
        let collapsed = points(&mut r, 500, 0.5, 0.5, 0.05);
        let (p, rc) = precision_recall(&real, 500, &collapsed, 500, 2, 3).unwrap();
        assert!(p > 0.95 && rc < 0.2, "{p} {rc}");
        // Far away: neither.
        let far = points(&mut r, 500, 20.0, 20.0, 1.0);
        let (p, rc) = precision_recall(&real, 500, &far, 500, 2, 3).unwrap();
        assert!(p == 0.0 && rc == 0.0, "{p} {rc}");
        // Half the fakes on the real blob, half far off: precision about one half.
        let mut mixed = points(&mut r, 250, 0.0, 0.0, 1.0);
        mixed.extend(points(&mut r, 250, 20.0, 20.0, 1.0));
        let (p, _) = precision_recall(&real, 500, &mixed, 500, 2, 3).unwrap();
        assert!((p - 0.5).abs() < 0.06, "{p}");
    }

    #[test]
    fn knn_radius_is_the_kth_other_point() {
        // Points on a line at 0, 1, 3, 6, 10: 2nd neighbour distances 3, 2, 3, 4, 7 (squared).
        let x = [0.0f32, 1.0, 3.0, 6.0, 10.0];
        let r = knn_radii(&x, 5, 1, 2);
        assert_eq!(r, vec![9.0, 4.0, 9.0, 16.0, 49.0]);
    }
}
