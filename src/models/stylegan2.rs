//! StyleGAN2 (Karras et al. 2020), config F's networks without progressive growing, at the
//! widths a CPU affords.
//!
//! G: the mapping network (`super::style::Mapping`: z normalised, `mapping_layers` fully
//! connected layers, lr multiplier 0.01, tracked w_avg) and a skip-architecture synthesis
//! network: a learned 4x4 constant, then per resolution two modulated/demodulated 3x3
//! convolutions (the first after blurred 2x upsampling), each followed by per-pixel noise with
//! a learned strength, a bias and LeakyReLU(0.2)·sqrt(2); a modulated 1x1 toRGB (no
//! demodulation) per resolution, the RGB image upsampled (blurred) and summed across
//! resolutions. ws: one per convolution and one for the last toRGB (each toRGB shares its w
//! with the next block's first convolution, as in the official code); 10 at 64x64.
//!
//! D: residual. fromRGB (1x1) at full resolution, then per resolution down to 8x8 a block of
//! a 3x3 conv and a 3x3 conv after blurred 2x downsampling, with a shortcut of blurred
//! downsampling and a 1x1 conv (no bias), summed and scaled by sqrt(1/2); at 4x4 minibatch
//! stddev (`mbstd_group`, one channel), a 3x3 conv, a fully connected layer and the output.
//! Every layer has an equalised learning rate.
//!
//! Widths: channels at side r are min(ngf·S/r, 8·ngf) in G (S the image side; ndf likewise
//! in D), so ngf = 32 gives 256 channels at 4x4 and 8x8, 32 at 64x64; the paper's config F
//! has 512 channels at 4x4 to 64x64. Two departures from the official code for the CPU, both
//! the same filters in another order: G upsamples (nearest, then the [1, 2, 1] blur) before
//! its 3x3 convolution instead of a strided transposed convolution followed by the blur, and
//! D downsamples (blur, then 2x2 averages) before its 3x3 convolution at half resolution
//! instead of a 3x3 convolution at stride 2 after the blur.

use super::style::{self, Mapping, StyleGenerator, MAPPING_LAYERS, STYLE_MIXING};
use super::{stages, DiscOutput, Discriminator, Family, ModelOption};
use crate::config::ModelConfig;
use crate::nn::equalized::{bias_lrelu, EqConv2d, EqLinear};
use crate::nn::layers::weight;
use crate::nn::modconv::{ModulatedConv2d, NoiseInput};
use crate::nn::resample::{downsample2x_blur, upsample2x_blur};
use crate::nn::stddev::minibatch_stddev;
use crate::nn::{Mode, Params};
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor, Var};

pub const FAMILY: Family = Family {
    name: "stylegan2",
    about: "StyleGAN2 (Karras et al. 2020): mapping network, modulated convolutions, noise, skip G, residual D",
    options: &[ModelOption::MinibatchStddev, ModelOption::WDim, ModelOption::MappingLayers, ModelOption::StyleMixing],
    d_aux: &[],
    energy_d: false,
    w_space: true,
    conditions: &[],
    build_generator: |c, dev, rng| Ok(Box::new(StyleGan2Generator::new(c, dev, rng)?)),
    build_discriminator: |c, dev, rng| Ok(Box::new(StyleGan2Discriminator::new(c, dev, rng)?)),
    validate: |_| Ok(()),
};

/// Channels at side `res` for a network of base width `base` on images of side `size`.
pub fn width(base: usize, size: usize, res: usize) -> usize {
    (base * size / res).min(8 * base)
}

/// A modulated 3x3 convolution (after blurred upsampling when `up`), noise, bias, activation.
struct SynthesisLayer {
    conv: ModulatedConv2d,
    noise: NoiseInput,
    bias: Var,
    up: bool,
}

impl SynthesisLayer {
    fn new(
        p: &mut Params,
        rng: &mut Rng,
        name: &str,
        (cin, cout): (usize, usize),
        w_dim: usize,
        up: bool,
        salt: u64,
    ) -> Result<Self> {
        Ok(Self {
            conv: ModulatedConv2d::new(p, rng, name, (cin, cout, 3), w_dim, true)?,
            noise: NoiseInput::new(p, name, 1, salt)?,
            bias: p.zeros(&format!("{name}.bias"), &[cout])?,
            up,
        })
    }

    fn forward(&self, x: &Tensor, w: &Tensor, noise: Option<&[u64]>, mode: Mode) -> candle_core::Result<Tensor> {
        let x = if self.up { upsample2x_blur(x)? } else { x.clone() };
        let y = self.noise.forward(&self.conv.forward(&x, w, mode)?, noise, mode)?;
        bias_lrelu(&y, &weight(&self.bias, mode), true)
    }
}

struct ToRgb {
    conv: ModulatedConv2d,
    bias: Var,
}

impl ToRgb {
    fn new(p: &mut Params, rng: &mut Rng, name: &str, cin: usize, w_dim: usize) -> Result<Self> {
        Ok(Self {
            conv: ModulatedConv2d::new(p, rng, name, (cin, 3, 1), w_dim, false)?,
            bias: p.zeros(&format!("{name}.bias"), &[3])?,
        })
    }

    fn forward(&self, x: &Tensor, w: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        bias_lrelu(&self.conv.forward(x, w, mode)?, &weight(&self.bias, mode), false)
    }
}

pub struct StyleGan2Generator {
    params: Params,
    z_dim: usize,
    mixing: f64,
    mapping: Mapping,
    constant: Var,
    /// The 4x4 convolution, then two per resolution.
    layers: Vec<SynthesisLayer>,
    /// One per resolution, from 4x4.
    to_rgb: Vec<ToRgb>,
}

impl StyleGan2Generator {
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        Self::in_params(cfg, Params::new(device), rng)
    }

    /// The generator with its tensors in `p` (empty; f64 for gradient checks).
    pub fn in_params(cfg: &ModelConfig, mut p: Params, rng: &mut Rng) -> Result<Self> {
        let w_dim = cfg.w_dim.unwrap_or(cfg.nz);
        let mapping = Mapping::new(&mut p, rng, cfg.nz, w_dim, cfg.mapping_layers.unwrap_or(MAPPING_LAYERS))?;
        let size = cfg.image_size;
        let c4 = width(cfg.ngf, size, 4);
        let constant = p.normal("synthesis.const", &[c4, 4, 4], 0.0, 1.0, rng)?;
        let mut layers = vec![SynthesisLayer::new(&mut p, rng, "synthesis.b4.conv1", (c4, c4), w_dim, false, 0)?];
        let mut to_rgb = vec![ToRgb::new(&mut p, rng, "synthesis.b4.torgb", c4, w_dim)?];
        let mut res = 8;
        while res <= size {
            let (cin, cout) = (width(cfg.ngf, size, res / 2), width(cfg.ngf, size, res));
            let name = format!("synthesis.b{res}");
            let salt = layers.len() as u64;
            layers.push(SynthesisLayer::new(&mut p, rng, &format!("{name}.conv0"), (cin, cout), w_dim, true, salt)?);
            layers.push(SynthesisLayer::new(
                &mut p,
                rng,
                &format!("{name}.conv1"),
                (cout, cout),
                w_dim,
                false,
                salt + 1,
            )?);
            to_rgb.push(ToRgb::new(&mut p, rng, &format!("{name}.torgb"), cout, w_dim)?);
            res *= 2;
        }
        let mixing = cfg.style_mixing.unwrap_or(STYLE_MIXING);
        Ok(Self { params: p, z_dim: cfg.nz, mixing, mapping, constant, layers, to_rgb })
    }
}

impl StyleGenerator for StyleGan2Generator {
    fn num_ws(&self) -> usize {
        self.layers.len() + 1
    }

    fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// ws[0]: the 4x4 convolution; then per block of side r the two convolutions, and its
    /// toRGB's w shared with the next block's first convolution (the last toRGB at the image side).
    fn ws_sides(&self) -> Vec<usize> {
        let size = 4 << (self.to_rgb.len() - 1);
        (0..self.num_ws()).map(|i| (4usize << i.div_ceil(2)).min(size)).collect()
    }

    fn synthesis(&self, ws: &Tensor, noise: Option<&[u64]>, mode: Mode) -> candle_core::Result<Tensor> {
        let n = ws.dim(0)?;
        let w = |i: usize| ws.narrow(1, i, 1)?.squeeze(1);
        let c = weight(&self.constant, mode);
        let mut x = c.unsqueeze(0)?.broadcast_as((n, c.dim(0)?, 4, 4))?.contiguous()?;
        x = self.layers[0].forward(&x, &w(0)?, noise, mode)?;
        let mut img = self.to_rgb[0].forward(&x, &w(1)?, mode)?;
        for (b, rgb) in self.to_rgb.iter().enumerate().skip(1) {
            let (i, j) = (2 * b - 1, 2 * b);
            x = self.layers[i].forward(&x, &w(i)?, noise, mode)?;
            x = self.layers[j].forward(&x, &w(j)?, noise, mode)?;
            img = (upsample2x_blur(&img)? + rgb.forward(&x, &w(j + 1)?, mode)?)?;
        }
        Ok(img)
    }
}

style::impl_style_generator!(StyleGan2Generator);

/// A block: 3x3 conv, blurred downsampling and a 3x3 conv; when residual, plus a shortcut of
/// blurred downsampling and a 1x1 conv, the sum scaled by sqrt(1/2).
struct DBlock {
    conv0: EqConv2d,
    conv1: EqConv2d,
    skip: Option<EqConv2d>,
}

impl DBlock {
    fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let h = self.conv1.forward(&downsample2x_blur(&self.conv0.forward(x, mode)?)?, mode)?;
        match &self.skip {
            Some(skip) => (h + skip.forward(&downsample2x_blur(x)?, mode)?)? * std::f64::consts::FRAC_1_SQRT_2,
            None => Ok(h),
        }
    }
}

pub struct StyleGan2Discriminator {
    params: Params,
    from_rgb: EqConv2d,
    blocks: Vec<DBlock>,
    mbstd_group: usize,
    conv: EqConv2d,
    fc: EqLinear,
    out: EqLinear,
}

impl StyleGan2Discriminator {
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        Self::in_params(cfg, Params::new(device), rng)
    }

    /// The discriminator with its tensors in `p` (empty; f64 for gradient checks).
    pub fn in_params(cfg: &ModelConfig, p: Params, rng: &mut Rng) -> Result<Self> {
        Self::build(cfg, p, rng, true)
    }

    /// The residual discriminator, or without shortcuts (StyleGAN's, `super::stylegan`).
    pub fn build(cfg: &ModelConfig, mut p: Params, rng: &mut Rng, residual: bool) -> Result<Self> {
        let size = cfg.image_size;
        let wd = |r: usize| width(cfg.ndf, size, r);
        let from_rgb = EqConv2d::new(&mut p, rng, "b_top.fromrgb", (3, wd(size), 1), true, true)?;
        let mut blocks = Vec::new();
        let mut res = size;
        while res > 4 {
            let (cin, cout) = (wd(res), wd(res / 2));
            let name = format!("b{res}");
            blocks.push(DBlock {
                conv0: EqConv2d::new(&mut p, rng, &format!("{name}.conv0"), (cin, cin, 3), true, true)?,
                conv1: EqConv2d::new(&mut p, rng, &format!("{name}.conv1"), (cin, cout, 3), true, true)?,
                skip: match residual {
                    true => Some(EqConv2d::new(&mut p, rng, &format!("{name}.skip"), (cin, cout, 1), false, false)?),
                    false => None,
                },
            });
            res /= 2;
        }
        let c4 = wd(4);
        let extra = usize::from(cfg.mbstd_group > 0);
        let conv = EqConv2d::new(&mut p, rng, "b4.conv", (c4 + extra, c4, 3), true, true)?;
        let fc = EqLinear::new(&mut p, rng, "b4.fc", (c4 * 16, c4), 1.0, Some(0.0), true)?;
        let out = EqLinear::new(&mut p, rng, "b4.out", (c4, 1), 1.0, Some(0.0), false)?;
        debug_assert_eq!(blocks.len(), stages(cfg));
        Ok(Self { params: p, from_rgb, blocks, mbstd_group: cfg.mbstd_group, conv, fc, out })
    }
}

impl Discriminator for StyleGan2Discriminator {
    fn forward_full(&self, x: &Tensor, _labels: Option<&Tensor>, mode: Mode) -> candle_core::Result<DiscOutput> {
        let mut h = self.from_rgb.forward(x, mode)?;
        for b in &self.blocks {
            h = b.forward(&h, mode)?;
        }
        if self.mbstd_group > 0 {
            h = minibatch_stddev(&h, self.mbstd_group)?;
        }
        let h = self.conv.forward(&h, mode)?.flatten_from(1)?;
        let logits = self.out.forward(&self.fc.forward(&h, mode)?, mode)?.flatten_all()?;
        Ok(DiscOutput::logits(logits))
    }

    fn params(&self) -> &Params {
        &self.params
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::models::style::{latent_ws, Truncation};
    use crate::models::{Generator, Latent};

    pub(crate) fn cfg(size: usize) -> ModelConfig {
        ModelConfig {
            arch: "stylegan2".into(),
            image_size: size,
            nz: 16,
            ngf: 4,
            ndf: 4,
            w_dim: Some(12),
            mapping_layers: Some(2),
            mbstd_group: 2,
            ..Default::default()
        }
    }

    #[test]
    fn shapes_widths_and_ws() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(0);
        for size in [32, 64] {
            let c = cfg(size);
            super::super::validate(&c).unwrap();
            let g = StyleGan2Generator::new(&c, &dev, &mut rng).unwrap();
            let d = StyleGan2Discriminator::new(&c, &dev, &mut rng).unwrap();
            assert_eq!(g.num_ws(), 2 + 2 * stages(&c));
            let sides = g.ws_sides();
            assert_eq!((sides[0], sides[1], sides[2], sides[3], *sides.last().unwrap()), (4, 8, 8, 16, size));
            let z = g.sample_training_latent(4, &mut rng, &dev).unwrap();
            let x = g.forward(&z, Mode::TRAIN).unwrap();
            assert_eq!(x.dims(), &[4, 3, size, size]);
            assert_eq!(d.forward(&x, None, Mode::TRAIN).unwrap().dims(), &[4]);
        }
        assert_eq!((width(32, 64, 4), width(32, 64, 8), width(32, 64, 16), width(32, 64, 64)), (256, 256, 128, 32));
    }

    /// The stylegan2-64 preset's networks have the parameter counts of their PyTorch twin in
    /// scripts/bench_torch.py (`build_stylegan2`, counted with torch 2.15).
    #[test]
    fn preset_parameter_counts_match_the_pytorch_twin() {
        let c = crate::presets::preset("stylegan2-64").unwrap().model;
        let mut rng = Rng::new(0);
        let g = StyleGan2Generator::new(&c, &Device::Cpu, &mut rng).unwrap();
        let d = StyleGan2Discriminator::new(&c, &Device::Cpu, &mut rng).unwrap();
        assert_eq!((g.params().num_parameters(), d.params().num_parameters()), (3_443_192, 3_511_585));
    }

    /// ψ = 1 is the identity; ψ = 0 gives the image of w_avg for every z.
    #[test]
    fn truncation_identity_and_average_face() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(1);
        let g = StyleGan2Generator::new(&cfg(32), &dev, &mut rng).unwrap();
        g.mapping.w_avg.set(&rng.normal_tensor(12, 0.0, 1.0, &dev).unwrap()).unwrap();
        let latent = g.sample_latent(3, &mut rng, &dev).unwrap();
        let plain = latent_ws(&g, &latent, None, Mode::EVAL).unwrap();
        let one = latent_ws(&g, &latent, Some(Truncation { psi: 1.0, cutoff: None }), Mode::EVAL).unwrap();
        assert_eq!(crate::ops::max_abs_diff(&plain, &one), 0.0);
        let zero = latent_ws(&g, &latent, Some(Truncation { psi: 0.0, cutoff: None }), Mode::EVAL).unwrap();
        let avg = style::broadcast_ws(&g.mapping.w_avg.as_tensor().unsqueeze(0).unwrap(), g.num_ws()).unwrap();
        let same_noise = Some(&[7u64, 7, 7][..]);
        let faces = g.synthesis(&zero, same_noise, Mode::EVAL).unwrap();
        let avg_face = g.synthesis(&avg, Some(&[7]), Mode::EVAL).unwrap();
        for i in 0..3 {
            assert!(crate::ops::max_abs_diff(&faces.get(i).unwrap(), &avg_face.get(0).unwrap()) < 1e-5);
        }
        // A cutoff truncates only the first layers.
        let cut = latent_ws(&g, &latent, Some(Truncation { psi: 0.0, cutoff: Some(3) }), Mode::EVAL).unwrap();
        assert_eq!(crate::ops::max_abs_diff(&cut.narrow(1, 3, 5).unwrap(), &plain.narrow(1, 3, 5).unwrap()), 0.0);
        assert_eq!(crate::ops::max_abs_diff(&cut.narrow(1, 0, 3).unwrap(), &zero.narrow(1, 0, 3).unwrap()), 0.0);
        assert!(Truncation { psi: 1.5, cutoff: None }.validate(8).unwrap_err().to_string().contains("[0, 1]"));
        assert!(Truncation { psi: 0.5, cutoff: Some(9) }.validate(8).unwrap_err().to_string().contains("1 to 8"));
    }

    /// Mixing at cutoff k: perturbing the second latent changes the ws from k on and only
    /// those; perturbing the first changes the ws before k only.
    #[test]
    fn style_mixing_uses_the_second_latent_from_the_cutoff_on() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(2);
        let g = StyleGan2Generator::new(&cfg(32), &dev, &mut rng).unwrap();
        let base = g.sample_latent(2, &mut rng, &dev).unwrap();
        let z2 = rng.normal_tensor((2, 16), 0.0, 1.0, &dev).unwrap();
        let k = 3;
        let mixed = Latent { mix: Some((z2.clone(), k)), ..base.clone() };
        let ws = latent_ws(&g, &mixed, None, Mode::EVAL).unwrap();
        let moved2 = Latent { mix: Some(((&z2 + 0.5).unwrap(), k)), ..base.clone() };
        let ws2 = latent_ws(&g, &moved2, None, Mode::EVAL).unwrap();
        let moved1 = Latent { z: (&base.z + 0.5).unwrap(), ..mixed.clone() };
        let ws1 = latent_ws(&g, &moved1, None, Mode::EVAL).unwrap();
        let n = g.num_ws();
        let diff = |a: &Tensor, b: &Tensor, from: usize, len: usize| {
            crate::ops::max_abs_diff(&a.narrow(1, from, len).unwrap(), &b.narrow(1, from, len).unwrap())
        };
        assert_eq!(diff(&ws, &ws2, 0, k), 0.0);
        assert!(diff(&ws, &ws2, k, n - k) > 1e-4);
        assert!(diff(&ws, &ws1, 0, k) > 1e-4);
        assert_eq!(diff(&ws, &ws1, k, n - k), 0.0);
        // And the images: the second latent's change reaches the output.
        let a = g.forward(&mixed, Mode::EVAL).unwrap();
        let b = g.forward(&moved2, Mode::EVAL).unwrap();
        assert!(crate::ops::max_abs_diff(&a, &b) > 1e-6);
    }

    #[test]
    fn w_avg_moves_only_in_training_passes() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(3);
        let g = StyleGan2Generator::new(&cfg(32), &dev, &mut rng).unwrap();
        let latent = g.sample_latent(4, &mut rng, &dev).unwrap();
        let before = g.mapping.w_avg.as_tensor().copy().unwrap();
        g.forward(&latent, Mode::EVAL).unwrap();
        g.forward(&latent, Mode::FROZEN).unwrap();
        assert_eq!(crate::ops::max_abs_diff(&before, g.mapping.w_avg.as_tensor()), 0.0);
        g.forward(&latent, Mode::TRAIN).unwrap();
        let w = g.mapping.forward(&latent.z, Mode::EVAL).unwrap().mean(0).unwrap();
        let want = (w * (1.0 - style::W_AVG_BETA)).unwrap();
        assert!(crate::ops::max_abs_diff(&want, g.mapping.w_avg.as_tensor()) < 1e-6);
    }
}
