//! Perceptual path length (Karras et al. 2019), with the FID Inception network's feature maps
//! as the perceptual distance: "PPL-Inception". The papers' PPL uses LPIPS on VGG16, whose
//! weights no package registry ships; this is the same measurement with another distance,
//! so its values are not comparable with the papers' numbers, only with each other.
//!
//! For each sample: two latents, t ~ U(0, 1), the images at t and t + ε along the path (lerp
//! in W for style families, slerp in Z otherwise; the same noise for both), and
//! d(a, b) / ε², where d sums over four Inception depths the mean over positions of the
//! squared distance between channel-normalised feature vectors (LPIPS without its learned
//! weights). Samples outside the 1st to 99th percentile are dropped, as in the paper, and
//! the rest averaged.

use super::inception::{float_images_to_input, Inception};
use crate::models::style::{latent_ws, style_of};
use crate::models::Generator;
use crate::nn::Mode;
use crate::rng::Rng;
use crate::sample::figures::slerp_rows;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, D};

/// The path a PPL is measured along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathSpace {
    /// Linear interpolation in W (style families).
    W,
    /// Spherical interpolation in Z (every family).
    Z,
}

pub struct PplOptions {
    pub space: PathSpace,
    pub num: usize,
    pub epsilon: f64,
    pub batch_size: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PplReport {
    pub space: String,
    pub epsilon: f64,
    pub samples: usize,
    pub kept: usize,
    pub value: f64,
}

/// The perceptual distance between two batches of network inputs, per sample (N,).
pub fn perceptual_distance(net: &Inception, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let n = a.dim(0)?;
    let maps = net.feature_maps(&Tensor::cat(&[a, b], 0)?)?;
    let mut total: Option<Tensor> = None;
    for m in maps {
        let norm = (m.sqr()?.sum_keepdim(1)?.sqrt()? + 1e-10)?;
        let unit = m.broadcast_div(&norm)?;
        let d = (unit.narrow(0, 0, n)? - unit.narrow(0, n, n)?)?.sqr()?.sum(1)?.mean(D::Minus1)?.mean(D::Minus1)?;
        total = Some(match total {
            Some(t) => (t + d)?,
            None => d,
        });
    }
    Ok(total.expect("four feature maps"))
}

/// PPL-Inception of `g` (whose family is `arch`).
pub fn perceptual_path_length(
    g: &dyn Generator,
    arch: &str,
    net: &Inception,
    opts: &PplOptions,
    device: &Device,
) -> Result<PplReport> {
    if opts.num < 2 || opts.batch_size == 0 || opts.epsilon.is_nan() || opts.epsilon <= 0.0 {
        bail!("PPL needs at least 2 samples, a batch of at least 1 and a positive epsilon");
    }
    let style = match opts.space {
        PathSpace::W => Some(style_of(g, arch, "PPL in W")?),
        PathSpace::Z => None,
    };
    let mut rng = Rng::derived(opts.seed, 0x991);
    let mut values = Vec::with_capacity(opts.num);
    while values.len() < opts.num {
        let n = opts.batch_size.min(opts.num - values.len());
        let a = g.sample_latent(n, &mut rng, device)?;
        let b = g.sample_latent(n, &mut rng, device)?;
        let t: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
        let t2: Vec<f64> = t.iter().map(|t| t + opts.epsilon).collect();
        let (x0, x1) = match style {
            Some(sg) => {
                let (wa, wb) = (latent_ws(sg, &a, None, Mode::EVAL)?, latent_ws(sg, &b, None, Mode::EVAL)?);
                let at = |ts: &[f64]| -> Result<Tensor> {
                    let tt = Tensor::from_vec(ts.iter().map(|v| *v as f32).collect::<Vec<_>>(), (n, 1, 1), device)?;
                    let ws = (&wa + (&wb - &wa)?.broadcast_mul(&tt.to_dtype(wa.dtype())?)?)?;
                    Ok(sg.synthesis(&ws, a.noise.as_deref(), Mode::EVAL)?)
                };
                (at(&t)?, at(&t2)?)
            }
            None => {
                let at = |ts: &[f64]| -> Result<Tensor> {
                    let z = slerp_rows(&a.z, &b.z, ts)?;
                    Ok(g.forward(&crate::models::Latent { z, ..a.clone() }, Mode::EVAL)?)
                };
                (at(&t)?, at(&t2)?)
            }
        };
        let nd = net.device().clone();
        let d = perceptual_distance(net, &float_images_to_input(&x0, &nd)?, &float_images_to_input(&x1, &nd)?)?;
        let eps2 = opts.epsilon * opts.epsilon;
        values.extend(d.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?.into_iter().map(|v| v / eps2));
    }
    let mut sorted = values.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let (lo, hi) = (q(0.01), q(0.99));
    let kept: Vec<f64> = values.into_iter().filter(|v| *v >= lo && *v <= hi).collect();
    let value = kept.iter().sum::<f64>() / kept.len().max(1) as f64;
    let space = match opts.space {
        PathSpace::W => "w",
        PathSpace::Z => "z",
    };
    Ok(PplReport { space: space.into(), epsilon: opts.epsilon, samples: opts.num, kept: kept.len(), value })
}
