//! Multi-scale sliced Wasserstein distance (Karras et al. 2018, "Progressive growing
//! of GANs", section 5), which needs no network: each image becomes a Laplacian
//! pyramid from its full resolution down to 16x16 (64x64 images: 3 levels, 128x128:
//! 4), 128 random 7x7 RGB patches ("descriptors") are taken per image per level,
//! each set's descriptors are normalised per colour channel, and the distance per
//! level is the sliced Wasserstein distance over 512 random unit directions (4
//! repeats of 128), reported x1e3 with the average over levels.
//!
//! Patch positions come from a stream seeded per (level, image index), the same for
//! both sets, so two identical image sets score exactly 0.

use super::linalg::matmul;
use crate::rng::Rng;
use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq)]
pub struct SwdOptions {
    pub nhood_size: usize,
    pub nhoods_per_image: usize,
    pub dir_repeats: usize,
    pub dirs_per_repeat: usize,
    /// Coarsest pyramid level.
    pub min_resolution: usize,
    /// Most images used from each set (memory: 128 x 147 f32 per image per set).
    pub max_images: usize,
    pub seed: u64,
}

impl Default for SwdOptions {
    fn default() -> Self {
        Self {
            nhood_size: 7,
            nhoods_per_image: 128,
            dir_repeats: 4,
            dirs_per_repeat: 128,
            min_resolution: 16,
            max_images: 8192,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwdLevel {
    pub resolution: usize,
    /// x1e3.
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwdValue {
    pub levels: Vec<SwdLevel>,
    /// Average over the levels, x1e3.
    pub mean: f64,
    /// Images used from each set.
    pub images: usize,
}

/// The 5-tap binomial filter [1 4 6 4 1] / 16 (cv2.pyrDown's, separable).
const TAPS: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// Mirror index ("d c b | a b c d | c b a", scipy.ndimage's mode='mirror').
fn mirror(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - i;
    }
    i as usize
}

/// 5x5 binomial blur (times `gain`) of one (h, w) plane, mirrored borders.
fn blur(src: &[f32], h: usize, w: usize, gain: f32) -> Vec<f32> {
    let mut tmp = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            for (k, t) in TAPS.iter().enumerate() {
                s += t * src[y * w + mirror(x as isize + k as isize - 2, w)];
            }
            tmp[y * w + x] = s;
        }
    }
    let mut out = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            for (k, t) in TAPS.iter().enumerate() {
                s += t * tmp[mirror(y as isize + k as isize - 2, h) * w + x];
            }
            out[y * w + x] = s * gain;
        }
    }
    out
}

fn pyr_down(src: &[f32], h: usize, w: usize) -> Vec<f32> {
    let b = blur(src, h, w, 1.0);
    let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = Vec::with_capacity(oh * ow);
    for y in (0..h).step_by(2) {
        for x in (0..w).step_by(2) {
            out.push(b[y * w + x]);
        }
    }
    out
}

fn pyr_up(src: &[f32], h: usize, w: usize) -> Vec<f32> {
    let (oh, ow) = (2 * h, 2 * w);
    let mut up = vec![0f32; oh * ow];
    for y in 0..h {
        for x in 0..w {
            up[2 * y * ow + 2 * x] = src[y * w + x];
        }
    }
    blur(&up, oh, ow, 4.0)
}

/// Laplacian pyramid of one CHW float image of side `s`: `levels` planes-sets, the
/// finest first; the last level is the low-pass residual.
pub fn laplacian_pyramid(img: &[f32], s: usize, levels: usize) -> Vec<Vec<f32>> {
    let mut pyr = vec![img.to_vec()];
    let mut side = s;
    for _ in 1..levels {
        let prev = pyr.last().unwrap();
        let plane = side * side;
        let half = side / 2;
        let mut down = Vec::with_capacity(3 * half * half);
        for c in 0..3 {
            down.extend(pyr_down(&prev[c * plane..(c + 1) * plane], side, side));
        }
        let last = pyr.last_mut().unwrap();
        for c in 0..3 {
            let up = pyr_up(&down[c * half * half..(c + 1) * half * half], half, half);
            for (v, u) in last[c * plane..(c + 1) * plane].iter_mut().zip(up) {
                *v -= u;
            }
        }
        pyr.push(down);
        side = half;
    }
    pyr
}

/// Side lengths of the pyramid levels: s, s/2, ... down to `min_res`.
pub fn level_resolutions(s: usize, min_res: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut r = s;
    while r >= min_res && r > 0 {
        out.push(r);
        if r % 2 == 1 {
            break;
        }
        r /= 2;
    }
    out
}

/// Descriptors of one level for every image, (n * nhoods, 3 * k * k), normalised per
/// channel over the whole set.
fn descriptors(images: &[&[u8]], s: usize, level: usize, levels: usize, opts: &SwdOptions) -> Vec<f32> {
    let k = opts.nhood_size;
    let half = k / 2;
    let res = s >> level;
    let dlen = 3 * k * k;
    let per = opts.nhoods_per_image;
    let mut desc = vec![0f32; images.len() * per * dlen];
    desc.par_chunks_mut(per * dlen).zip(images.par_iter()).enumerate().for_each(|(i, (out, im))| {
        let plane = s * s;
        let mut chw = vec![0f32; 3 * plane];
        for (p, px) in im.chunks(3).enumerate() {
            for c in 0..3 {
                chw[c * plane + p] = px[c] as f32;
            }
        }
        let pyr = laplacian_pyramid(&chw, s, (level + 2).min(levels));
        let lv = &pyr[level];
        let mut rng = Rng::derived(opts.seed, ((level as u64) << 40) | i as u64);
        let span = res - 2 * half; // positions half..res-half (exclusive)
        for d in out.chunks_mut(dlen) {
            let x = half + rng.below(span);
            let y = half + rng.below(span);
            let mut o = 0;
            for c in 0..3 {
                for dy in 0..k {
                    for dx in 0..k {
                        d[o] = lv[c * res * res + (y + dy - half) * res + (x + dx - half)];
                        o += 1;
                    }
                }
            }
        }
    });
    // Per-channel normalisation over all descriptors and pixels.
    let per_c = k * k;
    for c in 0..3 {
        let (mut sum, mut sq, mut cnt) = (0f64, 0f64, 0f64);
        for d in desc.chunks(dlen) {
            for &v in &d[c * per_c..(c + 1) * per_c] {
                sum += v as f64;
                sq += (v as f64) * (v as f64);
                cnt += 1.0;
            }
        }
        let mean = sum / cnt;
        let std = (sq / cnt - mean * mean).max(0.0).sqrt();
        let inv = if std > 0.0 { 1.0 / std } else { 1.0 };
        desc.par_chunks_mut(dlen).for_each(|d| {
            for v in &mut d[c * per_c..(c + 1) * per_c] {
                *v = ((*v as f64 - mean) * inv) as f32;
            }
        });
    }
    desc
}

/// Sliced Wasserstein distance between equal-size descriptor sets (n, dim).
fn sliced_wasserstein(a: &[f32], b: &[f32], n: usize, dim: usize, opts: &SwdOptions, level: usize) -> f64 {
    let mut rng = Rng::derived(opts.seed, 0x5D_0000 + level as u64);
    let nd = opts.dirs_per_repeat;
    let mut total = 0.0;
    for _ in 0..opts.dir_repeats {
        // (nd, dim) unit directions.
        let mut dirs = rng.normal_vec(nd * dim, 0.0, 1.0);
        for d in dirs.chunks_mut(dim) {
            let norm = d.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt() as f32;
            d.iter_mut().for_each(|v| *v /= norm);
        }
        let project = |x: &[f32]| {
            let mut p = matmul(&dirs, false, x, true, nd, dim, n); // (nd, n)
            p.par_chunks_mut(n).for_each(|row| row.sort_unstable_by(|a, b| a.total_cmp(b)));
            p
        };
        let (pa, pb) = (project(a), project(b));
        let sum: f64 = pa.par_iter().zip(pb.par_iter()).map(|(x, y)| (x - y).abs() as f64).sum();
        total += sum / (nd * n) as f64;
    }
    total / opts.dir_repeats as f64
}

/// SWD between two sets of HWC RGB u8 images of side `size`. Uses the first
/// min(real, fake, max_images) images of each.
pub fn swd(real: &[&[u8]], fake: &[&[u8]], size: usize, opts: &SwdOptions) -> Result<SwdValue> {
    let n = real.len().min(fake.len()).min(opts.max_images);
    if n == 0 {
        bail!("SWD needs images in both sets");
    }
    let resolutions = level_resolutions(size, opts.min_resolution);
    if resolutions.is_empty() || size < opts.nhood_size {
        bail!("SWD needs images of at least {}x{} pixels, got {size}x{size}", opts.min_resolution, opts.min_resolution);
    }
    for im in real[..n].iter().chain(&fake[..n]) {
        if im.len() != size * size * 3 {
            bail!("SWD: an image has {} bytes, expected {size}x{size}x3", im.len());
        }
    }
    let dim = 3 * opts.nhood_size * opts.nhood_size;
    let mut levels = Vec::new();
    for (level, &res) in resolutions.iter().enumerate() {
        let a = descriptors(&real[..n], size, level, resolutions.len(), opts);
        let b = descriptors(&fake[..n], size, level, resolutions.len(), opts);
        let m = n * opts.nhoods_per_image;
        let v = sliced_wasserstein(&a, &b, m, dim, opts, level);
        levels.push(SwdLevel { resolution: res, value: v * 1e3 });
    }
    let mean = levels.iter().map(|l| l.value).sum::<f64>() / levels.len() as f64;
    Ok(SwdValue { levels, mean, images: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faces(n: usize, s: usize, seed: u64, noise: f64) -> Vec<Vec<u8>> {
        let mut r = Rng::new(seed);
        (0..n)
            .map(|i| {
                let mut v = Vec::with_capacity(s * s * 3);
                for y in 0..s {
                    for x in 0..s {
                        for c in 0..3 {
                            let base = 128.0
                                + 60.0 * ((x as f64 * 0.2 + i as f64).sin())
                                + 40.0 * ((y as f64 * 0.15 + c as f64).cos());
                            v.push((base + noise * r.normal()).round().clamp(0.0, 255.0) as u8);
                        }
                    }
                }
                v
            })
            .collect()
    }

    fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
        v.iter().map(|x| x.as_slice()).collect()
    }

    #[test]
    fn identical_sets_score_zero_and_noise_raises_it() {
        let s = 32;
        let opts = SwdOptions { nhoods_per_image: 32, ..SwdOptions::default() };
        let a = faces(24, s, 1, 0.0);
        let same = swd(&refs(&a), &refs(&a), s, &opts).unwrap();
        assert_eq!(same.levels.len(), 2, "32 -> 32, 16");
        assert!(same.mean.abs() < 1e-9, "{same:?}");
        let mut last = 0.0;
        for noise in [4.0, 16.0, 48.0] {
            let b = faces(24, s, 2, noise);
            let v = swd(&refs(&a), &refs(&b), s, &opts).unwrap();
            assert!(v.mean > last, "noise {noise}: {v:?} not above {last}");
            last = v.mean;
        }
    }

    #[test]
    fn pyramid_reconstructs_the_image() {
        // image = level0 + up(level1) (+ up(up(level2))...): check one step.
        let s = 16;
        let img: Vec<f32> = (0..3 * s * s).map(|i| ((i * 37) % 255) as f32).collect();
        let pyr = laplacian_pyramid(&img, s, 2);
        for c in 0..3 {
            let up = pyr_up(&pyr[1][c * 64..(c + 1) * 64], 8, 8);
            for p in 0..s * s {
                let rec = pyr[0][c * s * s + p] + up[p];
                assert!((rec - img[c * s * s + p]).abs() < 1e-3);
            }
        }
        // A constant image has an all-zero band-pass level.
        let flat = vec![100f32; 3 * s * s];
        let pyr = laplacian_pyramid(&flat, s, 3);
        assert!(pyr[0].iter().all(|v| v.abs() < 1e-3));
        assert!(pyr[2].iter().all(|v| (v - 100.0).abs() < 1e-3));
        assert_eq!(level_resolutions(64, 16), vec![64, 32, 16]);
        assert_eq!(level_resolutions(128, 16), vec![128, 64, 32, 16]);
        assert_eq!(mirror(-1, 5), 1);
        assert_eq!(mirror(-2, 5), 2);
        assert_eq!(mirror(5, 5), 3);
        assert_eq!(mirror(6, 5), 2);
    }
}
