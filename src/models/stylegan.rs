//! StyleGAN (Karras et al. 2019) without progressive growing (trained at its final
//! resolution from the start, as StyleGAN2 does), at CPU widths.
//!
//! G: the mapping network (`super::style::Mapping`, as in StyleGAN2) and a synthesis network
//! from a learned 4x4 constant (initialised to ones): per resolution two 3x3 convolutions
//! (the first after blurred 2x upsampling; none before the constant's epilogue at 4x4), each
//! followed by the layer epilogue: per-pixel noise with a learned per-channel strength, a
//! bias, LeakyReLU(0.2)·sqrt(2), then AdaIN with that layer's w (instance norm, then a
//! per-sample scale 1 + s and shift b from an affine map of w). One 1x1 toRGB at the image
//! side (no growing, so no intermediate RGB outputs). ws: two per resolution, 10 at 64x64.
//!
//! D: StyleGAN's (the progressive-GAN discriminator at full resolution): StyleGAN2's
//! `super::stylegan2` discriminator without its residual shortcuts: fromRGB, per resolution a
//! 3x3 conv and a 3x3 conv after blurred downsampling, minibatch stddev, a 3x3 conv, a fully
//! connected layer and the output. Every layer has an equalised learning rate.
//!
//! Widths as StyleGAN2's family: min(ngf·S/r, 8·ngf) channels at side r.

use super::style::{self, Mapping, StyleGenerator, MAPPING_LAYERS, STYLE_MIXING};
use super::stylegan2::{width, StyleGan2Discriminator};
use super::{DiscOutput, Discriminator, Family, ModelOption};
use crate::config::ModelConfig;
use crate::nn::equalized::{bias_lrelu, EqConv2d};
use crate::nn::layers::weight;
use crate::nn::modconv::{AdaIn, NoiseInput};
use crate::nn::resample::upsample2x_blur;
use crate::nn::{Mode, Params};
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor, Var};

pub const FAMILY: Family = Family {
    name: "stylegan",
    about: "StyleGAN (Karras et al. 2019): mapping network, AdaIN, noise, blurred resampling; no progressive growing",
    options: &[ModelOption::MinibatchStddev, ModelOption::WDim, ModelOption::MappingLayers, ModelOption::StyleMixing],
    d_aux: &[],
    energy_d: false,
    w_space: true,
    conditions: &[],
    build_generator: |c, dev, rng| Ok(Box::new(StyleGanGenerator::new(c, dev, rng)?)),
    build_discriminator: |c, dev, rng| Ok(Box::new(StyleGanDiscriminator::new(c, dev, rng)?)),
    validate: |_| Ok(()),
};

/// Noise, bias, activation and AdaIN after a convolution (or after the constant).
struct Epilogue {
    noise: NoiseInput,
    bias: Var,
    adain: AdaIn,
}

impl Epilogue {
    fn new(p: &mut Params, rng: &mut Rng, name: &str, c: usize, w_dim: usize, salt: u64) -> Result<Self> {
        Ok(Self {
            noise: NoiseInput::new(p, name, c, salt)?,
            bias: p.zeros(&format!("{name}.bias"), &[c])?,
            adain: AdaIn::new(p, rng, name, c, w_dim)?,
        })
    }

    fn forward(&self, x: &Tensor, w: &Tensor, noise: Option<&[u64]>, mode: Mode) -> candle_core::Result<Tensor> {
        let y = bias_lrelu(&self.noise.forward(x, noise, mode)?, &weight(&self.bias, mode), true)?;
        self.adain.forward(&y, w, mode)
    }
}

/// A 3x3 convolution (after blurred upsampling when `up`) and its epilogue; at 4x4 the first
/// layer is the constant's epilogue alone.
struct Layer {
    conv: Option<EqConv2d>,
    up: bool,
    epilogue: Epilogue,
}

pub struct StyleGanGenerator {
    params: Params,
    z_dim: usize,
    mixing: f64,
    mapping: Mapping,
    constant: Var,
    layers: Vec<Layer>,
    to_rgb: EqConv2d,
}

impl StyleGanGenerator {
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        let mut p = Params::new(device);
        let w_dim = cfg.w_dim.unwrap_or(cfg.nz);
        let mapping = Mapping::new(&mut p, rng, cfg.nz, w_dim, cfg.mapping_layers.unwrap_or(MAPPING_LAYERS))?;
        let size = cfg.image_size;
        let c4 = width(cfg.ngf, size, 4);
        let constant = p.param("synthesis.const", Tensor::ones((c4, 4, 4), candle_core::DType::F32, device)?)?;
        let mut layers = Vec::new();
        let mut res = 4;
        while res <= size {
            let (cin, cout) = (width(cfg.ngf, size, (res / 2).max(4)), width(cfg.ngf, size, res));
            for k in 0..2 {
                let name = format!("synthesis.b{res}.layer{k}");
                let conv = match (res, k) {
                    (4, 0) => None,
                    (_, 0) => Some(EqConv2d::new(&mut p, rng, &format!("{name}.conv"), (cin, cout, 3), false, false)?),
                    _ => Some(EqConv2d::new(&mut p, rng, &format!("{name}.conv"), (cout, cout, 3), false, false)?),
                };
                let salt = layers.len() as u64;
                let epilogue = Epilogue::new(&mut p, rng, &name, cout, w_dim, salt)?;
                layers.push(Layer { conv, up: k == 0 && res > 4, epilogue });
            }
            res *= 2;
        }
        let to_rgb = EqConv2d::new(&mut p, rng, "synthesis.torgb", (width(cfg.ngf, size, size), 3, 1), true, false)?;
        let mixing = cfg.style_mixing.unwrap_or(STYLE_MIXING);
        Ok(Self { params: p, z_dim: cfg.nz, mixing, mapping, constant, layers, to_rgb })
    }
}

impl StyleGenerator for StyleGanGenerator {
    fn num_ws(&self) -> usize {
        self.layers.len()
    }

    fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Two ws per resolution, from 4x4.
    fn ws_sides(&self) -> Vec<usize> {
        (0..self.num_ws()).map(|i| 4 << (i / 2)).collect()
    }

    fn synthesis(&self, ws: &Tensor, noise: Option<&[u64]>, mode: Mode) -> candle_core::Result<Tensor> {
        let n = ws.dim(0)?;
        let c = weight(&self.constant, mode);
        let mut x = c.unsqueeze(0)?.broadcast_as((n, c.dim(0)?, 4, 4))?.contiguous()?;
        for (i, l) in self.layers.iter().enumerate() {
            if l.up {
                x = upsample2x_blur(&x)?;
            }
            if let Some(conv) = &l.conv {
                x = conv.forward(&x, mode)?;
            }
            x = l.epilogue.forward(&x, &ws.narrow(1, i, 1)?.squeeze(1)?, noise, mode)?;
        }
        self.to_rgb.forward(&x, mode)
    }
}

style::impl_style_generator!(StyleGanGenerator);

/// StyleGAN's discriminator: StyleGAN2's without the residual shortcuts.
pub struct StyleGanDiscriminator(StyleGan2Discriminator);

impl StyleGanDiscriminator {
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        Ok(Self(StyleGan2Discriminator::build(cfg, Params::new(device), rng, false)?))
    }
}

impl Discriminator for StyleGanDiscriminator {
    fn forward_full(&self, x: &Tensor, labels: Option<&Tensor>, mode: Mode) -> candle_core::Result<DiscOutput> {
        self.0.forward_full(x, labels, mode)
    }

    fn params(&self) -> &Params {
        self.0.params()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::style::{latent_ws, Truncation};
    use crate::models::{Generator, Latent};

    fn cfg(size: usize) -> ModelConfig {
        ModelConfig { arch: "stylegan".into(), ..super::super::stylegan2::tests::cfg(size) }
    }

    #[test]
    fn shapes_ws_and_truncation() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(0);
        for size in [32, 64] {
            let c = cfg(size);
            super::super::validate(&c).unwrap();
            let g = StyleGanGenerator::new(&c, &dev, &mut rng).unwrap();
            let d = StyleGanDiscriminator::new(&c, &dev, &mut rng).unwrap();
            assert_eq!(g.num_ws(), 2 * (super::super::stages(&c) + 1));
            assert_eq!(*g.ws_sides().last().unwrap(), size);
            let z = g.sample_training_latent(4, &mut rng, &dev).unwrap();
            let x = g.forward(&z, Mode::TRAIN).unwrap();
            assert_eq!(x.dims(), &[4, 3, size, size]);
            assert_eq!(d.forward(&x, None, Mode::TRAIN).unwrap().dims(), &[4]);
            assert!(!d.params().trainable().any(|(n, _)| n.contains("skip")), "no residual shortcuts");
            // ψ = 0: every face is the average face (same noise).
            let latent = Latent { noise: Some(vec![3; 3]), ..g.sample_latent(3, &mut rng, &dev).unwrap() };
            let ws = latent_ws(&g, &latent, Some(Truncation { psi: 0.0, cutoff: None }), Mode::EVAL).unwrap();
            let x = g.synthesis(&ws, latent.noise.as_deref(), Mode::EVAL).unwrap();
            assert!(crate::ops::max_abs_diff(&x.get(0).unwrap(), &x.get(2).unwrap()) < 1e-5);
        }
    }
}
