//! ResNet generator and discriminator (Gulrajani et al. 2017; Miyato et al. 2018, SN-GAN),
//! with the options that SAGAN (self-attention, spectral norm in G) and self-modulation
//! (Chen et al. 2019) add.
//!
//! G: z -> linear -> 4x4 with 16·ngf channels (64x64; 2^stages·ngf in general), then one
//! up-block per doubling that halves the width (BN, ReLU, nearest 2x upsampling, 3x3 conv,
//! BN, ReLU, 3x3 conv; shortcut: upsampling and a 1x1 conv), then BN, ReLU, a 3x3 conv to
//! RGB and tanh. With self-modulation every BN takes its scale and shift from z.
//!
//! D: an optimised first block at full resolution (3x3 conv, ReLU, 3x3 conv, 2x2 average
//! pooling; shortcut: pooling then a 1x1 conv), down-blocks (ReLU, 3x3 conv, ReLU, 3x3 conv,
//! pooling; shortcut: 1x1 conv then pooling) that double the width down to 4x4, one block
//! at 4x4 that doubles it again without pooling, ReLU, global sum pooling, a linear head.
//! `d_norm` (layer norm in Gulrajani et al.'s WGAN-GP critic) goes before each ReLU inside
//! the blocks. Minibatch stddev (optional) enters the last block; attention (optional) follows
//! the block whose output has the chosen side, in G and in D.
//!
//! Conditioning (`models::conditional`): `projection` (conditional batch norm in G, each BN's
//! scale and shift a linear map of the labels' signs, and the projection term in D; Miyato &
//! Koyama 2018) and `acgan` (the same G, and a linear attribute head on D's pooled features).
//! With self-modulation as well, G's BNs read [z, s] through their MLP.
//!
//! Convolutions have biases and Xavier-uniform weights, gain sqrt(2) in the residual
//! branches and 1 in shortcuts and linear layers (as Mimicry's SN-GAN does).

use super::conditional::{self, Condition, LabelPrior, Projection, CLASS_LOGITS};
use super::{check_attention, stages, DiscOutput, Discriminator, Family, Generator, Latent, ModelOption};
use crate::config::ModelConfig;
use crate::nn::attention::SelfAttention;
use crate::nn::layers::{Init, LayerOpts};
use crate::nn::modulated::ModulatedBatchNorm;
use crate::nn::resample::{avg_pool2x, global_sum_pool, upsample2x};
use crate::nn::stddev::minibatch_stddev;
use crate::nn::{BatchNorm2d, Conv2d, Linear, Mode, Norm, Params};
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor};

pub const FAMILY: Family = Family {
    name: "resnet",
    about: "ResNet G and D (Gulrajani et al. 2017, SN-GAN, SAGAN), optionally self-modulated",
    options: &[
        ModelOption::DNorm,
        ModelOption::GSpectralNorm,
        ModelOption::DSpectralNorm,
        ModelOption::Attention,
        ModelOption::MinibatchStddev,
        ModelOption::SelfModulation,
    ],
    d_aux: &[],
    energy_d: false,
    w_space: false,
    conditions: &[Condition::Projection, Condition::AuxClassifier],
    build_generator: |c, dev, rng| Ok(Box::new(ResnetGenerator::new(c, dev, rng)?)),
    build_discriminator: |c, dev, rng| Ok(Box::new(ResnetDiscriminator::new(c, dev, rng)?)),
    validate,
};

fn validate(c: &ModelConfig) -> Result<()> {
    check_attention(c, &attention_sides(c))?;
    if c.attention != 0 {
        let n = stages(c);
        let g_block = (c.attention / 8).trailing_zeros() as usize;
        let d_block = (c.image_size / c.attention).trailing_zeros() as usize - 1;
        let (g_width, d_width) = (c.ngf << (n - g_block - 1), c.ndf << d_block);
        if g_width < 8 || d_width < 8 {
            anyhow::bail!(
                "model.attention {}: self-attention needs at least 8 channels, but G has {g_width} and D {d_width} there; raise ngf/ndf or attend at a smaller side",
                c.attention
            );
        }
    }
    Ok(())
}

/// Hidden units of self-modulation's MLP from z to each BN's scale and shift.
pub const SELF_MOD_HIDDEN: usize = 32;

/// Sides where both networks have a feature map after a block: 8 up to half the image.
fn attention_sides(cfg: &ModelConfig) -> Vec<usize> {
    (3..).map(|k| 1usize << k).take_while(|&s| s <= cfg.image_size / 2).collect()
}

fn residual_opts(spectral: bool) -> LayerOpts {
    LayerOpts::new(true, Init::XavierUniform(std::f64::consts::SQRT_2), spectral)
}

fn shortcut_opts(spectral: bool) -> LayerOpts {
    LayerOpts::new(true, Init::XavierUniform(1.0), spectral)
}

/// G's batch norm: plain, self-modulated by z, conditional on the labels, or both (modulated
/// by [z, s]).
enum GNorm {
    Plain(BatchNorm2d),
    Modulated(ModulatedBatchNorm),
}

impl GNorm {
    fn new(p: &mut Params, rng: &mut Rng, name: &str, c: usize, cfg: &ModelConfig) -> Result<Self> {
        let k = cfg.attrs.len();
        Ok(match (cfg.self_modulation, k > 0) {
            (true, _) => GNorm::Modulated(ModulatedBatchNorm::new(p, rng, name, c, cfg.nz + k, Some(SELF_MOD_HIDDEN))?),
            (false, true) => GNorm::Modulated(ModulatedBatchNorm::new(p, rng, name, c, k, None)?),
            (false, false) => GNorm::Plain(BatchNorm2d::new(p, rng, name, c)?),
        })
    }

    /// Batch norm, then ReLU; `z` is the modulating vector (see [`ResnetGenerator::forward`]).
    fn forward_relu(&self, x: &Tensor, z: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        match self {
            GNorm::Plain(bn) => bn.forward_act(x, mode, Some(0.0)),
            GNorm::Modulated(bn) => bn.forward_act(x, z, mode, Some(0.0)),
        }
    }
}

struct UpBlock {
    bn1: GNorm,
    conv1: Conv2d,
    bn2: GNorm,
    conv2: Conv2d,
    shortcut: Conv2d,
}

impl UpBlock {
    fn new(p: &mut Params, rng: &mut Rng, name: &str, cin: usize, cout: usize, cfg: &ModelConfig) -> Result<Self> {
        let sn = cfg.g_spectral_norm;
        Ok(Self {
            bn1: GNorm::new(p, rng, &format!("{name}.bn1"), cin, cfg)?,
            conv1: Conv2d::with(p, rng, &format!("{name}.conv1"), (cin, cout, 3), 1, 1, residual_opts(sn))?,
            bn2: GNorm::new(p, rng, &format!("{name}.bn2"), cout, cfg)?,
            conv2: Conv2d::with(p, rng, &format!("{name}.conv2"), (cout, cout, 3), 1, 1, residual_opts(sn))?,
            shortcut: Conv2d::with(p, rng, &format!("{name}.shortcut"), (cin, cout, 1), 1, 0, shortcut_opts(sn))?,
        })
    }

    fn forward(&self, x: &Tensor, z: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let h = upsample2x(&self.bn1.forward_relu(x, z, mode)?)?;
        let h = self.conv1.forward(&h, mode)?;
        let h = self.conv2.forward(&self.bn2.forward_relu(&h, z, mode)?, mode)?;
        h + self.shortcut.forward(&upsample2x(x)?, mode)?
    }
}

pub struct ResnetGenerator {
    params: Params,
    nz: usize,
    self_modulation: bool,
    prior: Option<LabelPrior>,
    top: usize,
    input: Linear,
    blocks: Vec<UpBlock>,
    /// Attention after block `.0`.
    attention: Option<(usize, SelfAttention)>,
    bn_out: GNorm,
    conv_out: Conv2d,
}

impl ResnetGenerator {
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        let mut p = Params::new(device);
        let n = stages(cfg);
        let width = |i: usize| cfg.ngf << (n - i); // channels entering block i
        let sn = cfg.g_spectral_norm;
        let top = width(0);
        let input = Linear::with(&mut p, rng, "input", cfg.nz, 16 * top, shortcut_opts(sn))?;
        let mut blocks = Vec::new();
        let mut attention = None;
        for i in 0..n {
            blocks.push(UpBlock::new(&mut p, rng, &format!("block{i}"), width(i), width(i + 1), cfg)?);
            if cfg.attention == 8 << i {
                attention = Some((i, SelfAttention::new(&mut p, rng, &format!("attention{i}"), width(i + 1), sn)?));
            }
        }
        let bn_out = GNorm::new(&mut p, rng, "bn_out", cfg.ngf, cfg)?;
        let conv_out = Conv2d::with(&mut p, rng, "conv_out", (cfg.ngf, 3, 3), 1, 1, shortcut_opts(sn))?;
        let prior = match cfg.attrs.len() {
            0 => None,
            k => Some(LabelPrior::new(&mut p, k)?),
        };
        let self_modulation = cfg.self_modulation;
        Ok(Self { params: p, nz: cfg.nz, self_modulation, prior, top, input, blocks, attention, bn_out, conv_out })
    }
}

impl Generator for ResnetGenerator {
    fn latent_dim(&self) -> usize {
        self.nz
    }

    fn sample_latent(&self, n: usize, rng: &mut Rng, device: &Device) -> Result<Latent> {
        conditional::sample_latent(self.nz, self.prior.as_ref(), n, rng, device)
    }

    fn forward(&self, latent: &Latent, mode: Mode) -> candle_core::Result<Tensor> {
        let z = &latent.z;
        // What the batch norms are modulated by: z, the labels' signs, or both.
        let labels = match &self.prior {
            Some(_) => Some(conditional::need(latent.labels.as_ref())?),
            None => None,
        };
        let cond = match (self.self_modulation, labels) {
            (true, Some(l)) => conditional::join_z(z, l)?,
            (false, Some(l)) => conditional::signs(l)?.to_dtype(z.dtype())?,
            (_, None) => z.clone(),
        };
        let z = &cond;
        let mut h = self.input.forward(&latent.z, mode)?.reshape((z.dim(0)?, self.top, 4, 4))?;
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(&h, z, mode)?;
            if let Some((_, a)) = self.attention.as_ref().filter(|(at, _)| *at == i) {
                h = a.forward(&h, mode)?;
            }
        }
        crate::ops::tanh(&self.conv_out.forward(&self.bn_out.forward_relu(&h, z, mode)?, mode)?)
    }

    fn params(&self) -> &Params {
        &self.params
    }
}

struct DownBlock {
    /// Whether this is the optimised first block (no activation before its first conv).
    first: bool,
    down: bool,
    norm1: Norm,
    conv1: Conv2d,
    norm2: Norm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl DownBlock {
    fn new(
        p: &mut Params,
        rng: &mut Rng,
        name: &str,
        (cin, cout): (usize, usize),
        (first, down): (bool, bool),
        cfg: &ModelConfig,
    ) -> Result<Self> {
        let sn = cfg.d_spectral_norm;
        let norm = |p: &mut Params, rng: &mut Rng, part: &str, c| match first && part == "norm1" {
            true => Ok(Norm::None),
            false => Norm::new(&cfg.d_norm, p, rng, &format!("{name}.{part}"), c),
        };
        let learn_shortcut = first || down || cin != cout;
        Ok(Self {
            first,
            down,
            norm1: norm(p, rng, "norm1", cin)?,
            conv1: Conv2d::with(p, rng, &format!("{name}.conv1"), (cin, cout, 3), 1, 1, residual_opts(sn))?,
            norm2: norm(p, rng, "norm2", cout)?,
            conv2: Conv2d::with(p, rng, &format!("{name}.conv2"), (cout, cout, 3), 1, 1, residual_opts(sn))?,
            shortcut: match learn_shortcut {
                true => {
                    Some(Conv2d::with(p, rng, &format!("{name}.shortcut"), (cin, cout, 1), 1, 0, shortcut_opts(sn))?)
                }
                false => None,
            },
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let h = match self.first {
            true => x.clone(),
            false => self.norm1.forward_act(x, mode, Some(0.0))?,
        };
        let h = self.conv1.forward(&h, mode)?;
        let mut h = self.conv2.forward(&self.norm2.forward_act(&h, mode, Some(0.0))?, mode)?;
        if self.down {
            h = avg_pool2x(&h)?;
        }
        let s = match (&self.shortcut, self.first) {
            (Some(c), true) => c.forward(&avg_pool2x(x)?, mode)?,
            (Some(c), false) if self.down => avg_pool2x(&c.forward(x, mode)?)?,
            (Some(c), false) => c.forward(x, mode)?,
            (None, _) => x.clone(),
        };
        h + s
    }
}

pub struct ResnetDiscriminator {
    params: Params,
    blocks: Vec<DownBlock>,
    attention: Option<(usize, SelfAttention)>,
    mbstd_group: usize,
    head: Linear,
    projection: Option<Projection>,
    class_head: Option<Linear>,
}

impl ResnetDiscriminator {
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        let mut p = Params::new(device);
        let n = stages(cfg);
        let sn = cfg.d_spectral_norm;
        let mut blocks = Vec::new();
        let mut attention = None;
        let mut side = cfg.image_size;
        for i in 0..=n {
            let last = i == n;
            let cin = if i == 0 { 3 } else { cfg.ndf << (i - 1) };
            let cin = cin + usize::from(last && cfg.mbstd_group > 0);
            let cout = cfg.ndf << i;
            blocks.push(DownBlock::new(&mut p, rng, &format!("block{i}"), (cin, cout), (i == 0, !last), cfg)?);
            if !last {
                side /= 2;
            }
            if cfg.attention == side && !last {
                attention = Some((i, SelfAttention::new(&mut p, rng, &format!("attention{i}"), cout, sn)?));
            }
        }
        let head = Linear::with(&mut p, rng, "head", cfg.ndf << n, 1, shortcut_opts(sn))?;
        let (k, features) = (cfg.attrs.len(), cfg.ndf << n);
        let (mut projection, mut class_head) = (None, None);
        match Condition::parse(&cfg.condition)? {
            Condition::Projection => projection = Some(Projection::new(&mut p, rng, k, features, sn)?),
            Condition::AuxClassifier => {
                class_head = Some(Linear::with(&mut p, rng, "class_head", features, k, shortcut_opts(sn))?)
            }
            _ => {}
        }
        Ok(Self { params: p, blocks, attention, mbstd_group: cfg.mbstd_group, head, projection, class_head })
    }
}

impl Discriminator for ResnetDiscriminator {
    fn forward_full(&self, x: &Tensor, labels: Option<&Tensor>, mode: Mode) -> candle_core::Result<DiscOutput> {
        let mut h = x.clone();
        let last = self.blocks.len() - 1;
        for (i, block) in self.blocks.iter().enumerate() {
            if i == last && self.mbstd_group > 0 {
                h = minibatch_stddev(&h, self.mbstd_group)?;
            }
            h = block.forward(&h, mode)?;
            if let Some((_, a)) = self.attention.as_ref().filter(|(at, _)| *at == i) {
                h = a.forward(&h, mode)?;
            }
        }
        let pooled = global_sum_pool(&crate::ops::leaky_relu(&h, 0.0)?)?;
        let mut logits = self.head.forward(&pooled, mode)?.flatten_all()?;
        if let Some(p) = &self.projection {
            logits = (logits + p.forward(&pooled, conditional::need(labels)?, mode)?)?;
        }
        let mut out = DiscOutput::logits(logits);
        if let Some(c) = &self.class_head {
            out.aux.insert(CLASS_LOGITS, c.forward(&pooled, mode)?);
        }
        Ok(out)
    }

    fn params(&self) -> &Params {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(size: usize) -> ModelConfig {
        ModelConfig {
            arch: "resnet".into(),
            image_size: size,
            nz: 16,
            ngf: 8,
            ndf: 8,
            d_norm: "none".into(),
            ..Default::default()
        }
    }

    #[test]
    fn shapes_with_every_option() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(0);
        for size in [32, 64] {
            for c in [
                cfg(size),
                ModelConfig { g_spectral_norm: true, d_spectral_norm: true, attention: 16, ..cfg(size) },
                ModelConfig { self_modulation: true, mbstd_group: 2, d_norm: "layer".into(), ..cfg(size) },
            ] {
                super::super::validate(&c).unwrap();
                let g = ResnetGenerator::new(&c, &dev, &mut rng).unwrap();
                let d = ResnetDiscriminator::new(&c, &dev, &mut rng).unwrap();
                let z = g.sample_latent(4, &mut rng, &dev).unwrap();
                let x = g.forward(&z, Mode::TRAIN).unwrap();
                assert_eq!(x.dims(), &[4, 3, size, size]);
                assert_eq!(d.forward(&x, None, Mode::TRAIN).unwrap().dims(), &[4]);
                assert_eq!(g.attention.is_some(), c.attention != 0);
                assert_eq!(d.attention.is_some(), c.attention != 0);
            }
        }
        let bad = ModelConfig { attention: 64, ..cfg(64) };
        let e = super::super::validate(&bad).unwrap_err().to_string();
        assert!(e.contains("8, 16, 32"), "{e}");
        let thin = ModelConfig { attention: 32, ndf: 4, ..cfg(64) };
        let e = super::super::validate(&thin).unwrap_err().to_string();
        assert!(e.contains("at least 8 channels") && e.contains("D 4"), "{e}");
        let c = ModelConfig { attention: 32, ngf: 4, ndf: 8, ..cfg(64) };
        super::super::validate(&c).unwrap(); // G has 8 channels at 32x32, D 8
    }

    /// Parameter counts of the SN-GAN ResNet at 64x64 with ngf = ndf = 64, nz = 128, written
    /// out layer by layer as PyTorch counts them (conv and linear weights and biases, BN scale
    /// and shift; spectral norm's u and v are buffers, not parameters).
    #[test]
    fn parameter_counts_match_the_layer_by_layer_sum() {
        let c = ModelConfig { nz: 128, ngf: 64, ndf: 64, ..cfg(64) };
        let mut rng = Rng::new(0);
        let g = ResnetGenerator::new(&c, &Device::Cpu, &mut rng).unwrap();
        let d = ResnetDiscriminator::new(&ModelConfig { d_spectral_norm: true, ..c.clone() }, &Device::Cpu, &mut rng)
            .unwrap();
        let conv = |i: usize, o: usize, k: usize| i * o * k * k + o;
        let up = |i: usize, o: usize| 2 * i + conv(i, o, 3) + 2 * o + conv(o, o, 3) + conv(i, o, 1);
        let g_count = 128 * 16 * 1024
            + 16 * 1024
            + up(1024, 512)
            + up(512, 256)
            + up(256, 128)
            + up(128, 64)
            + 2 * 64
            + conv(64, 3, 3);
        assert_eq!(g.params().num_parameters(), g_count);
        let down = |i: usize, o: usize| conv(i, o, 3) + conv(o, o, 3) + conv(i, o, 1);
        let d_count = down(3, 64) + down(64, 128) + down(128, 256) + down(256, 512) + down(512, 1024) + 1024 + 1;
        assert_eq!(d.params().num_parameters(), d_count);
        // The same as the PyTorch twin (scripts/bench_torch.py, build_resnet(ngf=64, ndf=64)).
        assert_eq!((g_count, d_count), (12_220_675, 19_542_721));
    }

    /// The sngan-64 and sagan-64 presets' networks have the parameter counts of their PyTorch
    /// twins in scripts/bench_torch.py (`build_resnet`, counted with torch 2.15).
    #[test]
    fn preset_parameter_counts_match_the_pytorch_twins() {
        for (preset, g_count, d_count) in [("sngan-64", 3_586_179, 4_887_905), ("sagan-64", 3_591_300, 4_889_186)] {
            let c = crate::presets::preset(preset).unwrap().model;
            let mut rng = Rng::new(0);
            let g = ResnetGenerator::new(&c, &Device::Cpu, &mut rng).unwrap();
            let d = ResnetDiscriminator::new(&c, &Device::Cpu, &mut rng).unwrap();
            assert_eq!((g.params().num_parameters(), d.params().num_parameters()), (g_count, d_count), "{preset}");
        }
    }
}
