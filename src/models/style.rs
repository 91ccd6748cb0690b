//! What the style-based families (StyleGAN, StyleGAN2) share: the mapping network from z to
//! the intermediate latent w, the tracked average w, one w per synthesis layer ("ws"), style
//! mixing, truncation and the per-sample noise seeds.

use super::Latent;
use crate::nn::equalized::EqLinear;
use crate::nn::{Mode, Params};
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, Var};

/// Decay of the tracked average w (StyleGAN2-ADA's w_avg_beta).
pub const W_AVG_BETA: f64 = 0.995;
/// Learning-rate multiplier of the mapping network.
pub const MAPPING_LR_MUL: f64 = 0.01;
/// Default depth of the mapping network.
pub const MAPPING_LAYERS: usize = 8;
/// Default probability of style mixing in a training batch.
pub const STYLE_MIXING: f64 = 0.9;

/// A generator with an intermediate latent space W.
pub trait StyleGenerator {
    /// Number of ws the synthesis network reads (one per modulated layer and toRGB).
    fn num_ws(&self) -> usize;
    fn mapping(&self) -> &Mapping;
    /// The side of the feature maps each w modulates, in order (a toRGB counts at its block's
    /// side): what "coarse", "middle" and "fine" styles select.
    fn ws_sides(&self) -> Vec<usize>;
    /// ws (N, num_ws, w_dim) to images, with per-sample noise seeds (None: no noise).
    fn synthesis(&self, ws: &Tensor, noise: Option<&[u64]>, mode: Mode) -> candle_core::Result<Tensor>;
}

/// The mapping network: z normalised to unit second moment, then fully connected layers with
/// LeakyReLU(0.2)·sqrt(2) and a learning-rate multiplier of 0.01. It tracks the average w.
pub struct Mapping {
    layers: Vec<EqLinear>,
    /// Moving average of w over training batches (a buffer: checkpointed and copied to G_ema).
    pub w_avg: Var,
    pub w_dim: usize,
}

impl Mapping {
    pub fn new(p: &mut Params, rng: &mut Rng, z_dim: usize, w_dim: usize, depth: usize) -> Result<Self> {
        let mut layers = Vec::new();
        for i in 0..depth {
            let cin = if i == 0 { z_dim } else { w_dim };
            layers.push(EqLinear::new(
                p,
                rng,
                &format!("mapping.fc{i}"),
                (cin, w_dim),
                MAPPING_LR_MUL,
                Some(0.0),
                true,
            )?);
        }
        let w_avg = p.buffer("mapping.w_avg", Tensor::zeros(w_dim, candle_core::DType::F32, &p.device.clone())?)?;
        Ok(Self { layers, w_avg, w_dim })
    }

    /// z (N, z_dim) to w (N, w_dim).
    pub fn forward(&self, z: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let norm = (z.sqr()?.mean_keepdim(1)? + 1e-8)?.sqrt()?;
        let mut x = z.broadcast_div(&norm)?;
        for l in &self.layers {
            x = l.forward(&x, mode)?;
        }
        Ok(x)
    }

    /// Moves the tracked average towards the batch mean of `w`: w_avg ← β·w_avg + (1 − β)·mean(w).
    pub fn track(&self, w: &Tensor) -> candle_core::Result<()> {
        let mean = w.detach().mean(0)?.to_dtype(self.w_avg.dtype())?;
        let avg = ((self.w_avg.as_tensor() * W_AVG_BETA)? + (mean * (1.0 - W_AVG_BETA))?)?;
        self.w_avg.set(&avg)
    }
}

/// Truncation in W (Karras et al. 2019): w ← w_avg + ψ(w − w_avg) in the first `cutoff` ws
/// (all when None). ψ = 1 is the identity, ψ = 0 the average face.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Truncation {
    pub psi: f64,
    pub cutoff: Option<usize>,
}

impl Truncation {
    /// Checks ψ and the cutoff against a generator with `num_ws` ws.
    pub fn validate(&self, num_ws: usize) -> Result<()> {
        if !(0.0..=1.0).contains(&self.psi) {
            bail!("truncation {} must be in [0, 1] (1: none, 0: the average face)", self.psi);
        }
        if let Some(c) = self.cutoff.filter(|&c| c == 0 || c > num_ws) {
            bail!("truncation cutoff {c} is outside this generator's layers: it reads {num_ws} ws, so the cutoff must be 1 to {num_ws}");
        }
        Ok(())
    }
}

/// `w` (N, w_dim) repeated for every layer: (N, num_ws, w_dim).
pub fn broadcast_ws(w: &Tensor, num_ws: usize) -> candle_core::Result<Tensor> {
    let (n, d) = w.dims2()?;
    w.unsqueeze(1)?.broadcast_as((n, num_ws, d))?.contiguous()
}

/// ws whose layers from `cutoff` on come from `other` (both (N, num_ws, w_dim)).
pub fn mix_ws(ws: &Tensor, other: &Tensor, cutoff: usize) -> candle_core::Result<Tensor> {
    let num_ws = ws.dim(1)?;
    if cutoff == 0 {
        return Ok(other.clone());
    }
    if cutoff >= num_ws {
        return Ok(ws.clone());
    }
    Tensor::cat(&[ws.narrow(1, 0, cutoff)?, other.narrow(1, cutoff, num_ws - cutoff)?], 1)
}

/// Truncates ws towards `w_avg` (w_dim,).
pub fn truncate_ws(ws: &Tensor, w_avg: &Tensor, t: Truncation) -> candle_core::Result<Tensor> {
    let num_ws = ws.dim(1)?;
    let avg = w_avg.to_dtype(ws.dtype())?.reshape((1, 1, w_avg.elem_count()))?;
    let truncated = (avg
        .broadcast_mul(&Tensor::new(1.0 - t.psi, ws.device())?.to_dtype(ws.dtype())?)?
        .broadcast_add(&(ws * t.psi)?))?;
    mix_ws(&truncated, ws, t.cutoff.unwrap_or(num_ws).min(num_ws))
}

/// The ws of `latent`: mapped, repeated per layer, mixed with the second latent's when the
/// latent asks for it, truncated when `truncation` is given.
pub fn latent_ws(
    g: &dyn StyleGenerator,
    latent: &Latent,
    truncation: Option<Truncation>,
    mode: Mode,
) -> candle_core::Result<Tensor> {
    let m = g.mapping();
    let mut ws = broadcast_ws(&m.forward(&latent.z, mode)?, g.num_ws())?;
    if let Some((z2, cutoff)) = &latent.mix {
        ws = mix_ws(&ws, &broadcast_ws(&m.forward(z2, mode)?, g.num_ws())?, *cutoff)?;
    }
    match truncation {
        Some(t) => truncate_ws(&ws, m.w_avg.as_tensor(), t),
        None => Ok(ws),
    }
}

/// A generator's forward pass: the ws of `latent`, the average w tracked when `mode` trains,
/// then the synthesis network.
pub fn forward(g: &dyn StyleGenerator, latent: &Latent, mode: Mode) -> candle_core::Result<Tensor> {
    let ws = latent_ws(g, latent, None, mode)?;
    if mode.updates_state() {
        // The batch's own w (the first of the ws; mixing does not enter the average).
        g.mapping().track(&ws.narrow(1, 0, 1)?.squeeze(1)?)?;
    }
    g.synthesis(&ws, latent.noise.as_deref(), mode)
}

/// Images of `latent` in evaluation mode, truncated in W when `truncation` is given; an
/// error naming `arch` when the generator has no W space or the truncation does not fit it.
pub fn eval_images(
    g: &dyn super::Generator,
    latent: &Latent,
    truncation: Option<Truncation>,
    arch: &str,
) -> Result<Tensor> {
    let Some(t) = truncation else { return Ok(g.forward(latent, Mode::EVAL)?) };
    let sg = style_of(g, arch, "truncation")?;
    t.validate(sg.num_ws())?;
    let ws = latent_ws(sg, latent, Some(t), Mode::EVAL)?;
    Ok(sg.synthesis(&ws, latent.noise.as_deref(), Mode::EVAL)?)
}

/// `g`'s W space, or an error saying that `what` needs one and the `arch` family has none.
pub fn style_of<'a>(g: &'a dyn super::Generator, arch: &str, what: &str) -> Result<&'a dyn StyleGenerator> {
    match g.style() {
        Some(s) => Ok(s),
        None => bail!(
            "{what} works in the intermediate latent space W of a style-based generator ({}); this checkpoint's generator is {arch}, which has none",
            super::style_family_names()
        ),
    }
}

/// The `Generator` impl of a style family's generator type, which has the fields `z_dim`,
/// `mixing` and `params` and implements [`StyleGenerator`]: latents with noise seeds (and
/// style mixing in training batches), the forward pass through [`forward`], and its W space.
macro_rules! impl_style_generator {
    ($t:ty) => {
        impl $crate::models::Generator for $t {
            fn latent_dim(&self) -> usize {
                self.z_dim
            }

            fn sample_latent(
                &self,
                n: usize,
                rng: &mut $crate::rng::Rng,
                device: &candle_core::Device,
            ) -> anyhow::Result<$crate::models::Latent> {
                $crate::models::style::sample_latent(self.z_dim, n, rng, device)
            }

            fn sample_training_latent(
                &self,
                n: usize,
                rng: &mut $crate::rng::Rng,
                device: &candle_core::Device,
            ) -> anyhow::Result<$crate::models::Latent> {
                use $crate::models::style::StyleGenerator;
                $crate::models::style::sample_training_latent(self.z_dim, self.num_ws(), self.mixing, n, rng, device)
            }

            fn forward(
                &self,
                latent: &$crate::models::Latent,
                mode: $crate::nn::Mode,
            ) -> candle_core::Result<candle_core::Tensor> {
                $crate::models::style::forward(self, latent, mode)
            }

            fn params(&self) -> &$crate::nn::Params {
                &self.params
            }

            fn style(&self) -> Option<&dyn $crate::models::style::StyleGenerator> {
                Some(self)
            }
        }
    };
}
pub(crate) use impl_style_generator;

/// `n` latents of a style family: z ~ N(0, I), then one noise seed per sample.
pub fn sample_latent(z_dim: usize, n: usize, rng: &mut Rng, device: &Device) -> Result<Latent> {
    let z = rng.normal_tensor((n, z_dim), 0.0, 1.0, device)?;
    let seeds = (0..n).map(|_| rng.next_u64()).collect();
    Ok(Latent { noise: Some(seeds), ..Latent::from_z(z) })
}

/// A training batch's latents: with probability `mixing`, a second z takes over from a
/// cutoff drawn uniformly from 1..num_ws (one per batch, as in StyleGAN2-ADA).
pub fn sample_training_latent(
    z_dim: usize,
    num_ws: usize,
    mixing: f64,
    n: usize,
    rng: &mut Rng,
    device: &Device,
) -> Result<Latent> {
    let mut latent = sample_latent(z_dim, n, rng, device)?;
    if mixing > 0.0 && num_ws > 1 && rng.uniform() < mixing {
        let z2 = rng.normal_tensor((n, z_dim), 0.0, 1.0, device)?;
        latent.mix = Some((z2, 1 + rng.below(num_ws - 1)));
    }
    Ok(latent)
}
