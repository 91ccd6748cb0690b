//! Named starting configurations: one table, which `facegan presets` prints and
//! `--preset NAME` reads. Each preset is the defaults of [`RunConfig`] (DCGAN at 64x64, the
//! pytorch/examples recipe) changed by its function.

use crate::config::RunConfig;
use crate::penalty::PenaltyConfig;
use anyhow::{bail, Result};

pub struct Preset {
    pub name: &'static str,
    /// One line for `facegan presets`.
    pub about: &'static str,
    apply: fn(&mut RunConfig) -> Result<()>,
}

/// A ResNet on the SN-GAN recipe (Miyato et al. 2018): spectral norm in D, hinge loss,
/// Adam 2e-4 (0, 0.9), five D steps per G step, no normalisation in D; widths halved
/// from the papers' (ngf = ndf = 32, so 512 channels at the widest) to fit a CPU.
fn sngan(c: &mut RunConfig, size: usize) -> Result<()> {
    let m = &mut c.model;
    (m.arch, m.image_size, m.nz, m.ngf, m.ndf) = ("resnet".into(), size, 128, 32, 32);
    m.d_norm = "none".into();
    m.d_spectral_norm = true;
    let t = &mut c.train;
    t.loss = "hinge".into();
    (t.lr_g, t.lr_d, t.beta1, t.beta2) = (2e-4, 2e-4, 0.0, 0.9);
    t.n_critic = 5;
    Ok(())
}

/// SAGAN (Zhang et al. 2019): the ResNet with spectral norm in G and D, self-attention at
/// 32x32, hinge loss, TTUR 1e-4 (G) / 4e-4 (D), Adam (0, 0.9), one D step per G step.
fn sagan(c: &mut RunConfig, size: usize) -> Result<()> {
    sngan(c, size)?;
    c.model.g_spectral_norm = true;
    c.model.attention = 32;
    let t = &mut c.train;
    (t.lr_g, t.lr_d) = (1e-4, 4e-4);
    t.n_critic = 1;
    Ok(())
}

/// StyleGAN2 (Karras et al. 2020, config F's recipe, with StyleGAN2-ADA's choices where the
/// paper's 1024x1024 settings do not carry over), at CPU widths: w_dim = nz = 256 (paper 512),
/// ngf = ndf = 32 at 32x32 and 64x64 and 16 at 128x128 (so 128 to 256 channels at the widest;
/// paper 512), 8 mapping layers, style mixing 0.9, minibatch stddev over groups of 4; the
/// non-saturating loss with lazy R1 every 16 D steps, γ = 0.0002·S²/batch (ADA's heuristic),
/// path length weight 2 every 4 steps; Adam (0, 0.99) at 0.0025 scaled by the lazy ratio
/// (16/17 for D, 4/5 for G; ADA also rescales β2, which we do not); batch 32; G's EMA with a
/// half-life of about 10k images.
fn stylegan2(c: &mut RunConfig, size: usize) -> Result<()> {
    let m = &mut c.model;
    let width = if size >= 128 { 16 } else { 32 };
    (m.arch, m.image_size, m.nz, m.ngf, m.ndf) = ("stylegan2".into(), size, 256, width, width);
    (m.w_dim, m.mapping_layers, m.style_mixing, m.mbstd_group) = (Some(256), Some(8), Some(0.9), 4);
    let t = &mut c.train;
    t.batch_size = 32;
    t.loss = "non-saturating".into();
    let gamma = 0.0002 * (size * size) as f64 / t.batch_size as f64;
    t.penalties = vec![PenaltyConfig::parse(&format!("r1:{gamma}:16"))?, PenaltyConfig::parse("path-length:2:4")?];
    (t.lr_g, t.lr_d, t.beta1, t.beta2) = (0.0025 * 4.0 / 5.0, 0.0025 * 16.0 / 17.0, 0.0, 0.99);
    t.ema_decay = 0.998;
    Ok(())
}

/// StyleGAN (Karras et al. 2019), FFHQ config's recipe without progressive growing, at the
/// CPU widths of [`stylegan2`]: the non-saturating loss with R1 every step (γ as there), Adam
/// 0.001 (0, 0.99), batch 32, style mixing 0.9, minibatch stddev over 4.
fn stylegan(c: &mut RunConfig, size: usize) -> Result<()> {
    stylegan2(c, size)?;
    c.model.arch = "stylegan".into();
    let t = &mut c.train;
    let gamma = 0.0002 * (size * size) as f64 / t.batch_size as f64;
    t.penalties = vec![PenaltyConfig::parse(&format!("r1:{gamma}"))?];
    (t.lr_g, t.lr_d) = (0.001, 0.001);
    Ok(())
}

/// The attributes the conditional presets condition on: five that are common, visible at
/// 64x64 and span rare to balanced (CelebA frequencies: Male 42%, Smiling 48%, Young 78%,
/// Eyeglasses 6.5%, Blond_Hair 15%). `--attrs` replaces them (`all` for the 40).
pub const DEFAULT_ATTRS: [&str; 5] = ["Male", "Smiling", "Young", "Eyeglasses", "Blond_Hair"];

fn conditional(c: &mut RunConfig, condition: &str) {
    c.model.condition = condition.into();
    c.model.attrs = DEFAULT_ATTRS.iter().map(|a| a.to_string()).collect();
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "mlp-32",
        about: "MLP GAN (Goodfellow et al. 2014) at 32x32: fully connected G (BN, LeakyReLU) and D (dropout 0.5)",
        apply: |c| {
            mlp(c);
            c.model.image_size = 32;
            Ok(())
        },
    },
    Preset {
        name: "mlp-64",
        about: "MLP GAN at 64x64: G 100-128-256-512-1024-12288, D 12288-512-256-1, Adam 2e-4 (0.5, 0.999)",
        apply: |c| {
            mlp(c);
            Ok(())
        },
    },
    Preset {
        name: "dcgan-32",
        about: "DCGAN at 32x32 (three up/down blocks), the classic Udacity face setting",
        apply: |c| {
            c.model.image_size = 32;
            c.train.batch_size = 128;
            Ok(())
        },
    },
    Preset {
        name: "dcgan-64",
        about: "DCGAN at 64x64 (Radford et al. 2015; pytorch/examples dcgan)",
        apply: |_| Ok(()),
    },
    Preset {
        name: "dcgan-128",
        about: "DCGAN at 128x128, one more block on each side",
        apply: |c| {
            c.model.image_size = 128;
            Ok(())
        },
    },
    Preset {
        name: "minimax-64",
        about: "dcgan-64 with the original saturating minimax loss (Goodfellow et al. 2014)",
        apply: |c| {
            c.train.loss = "minimax".into();
            Ok(())
        },
    },
    // Least-squares losses with a normalised D (batch or layer norm) leave G at its
    // initial grey output on CelebA (500 steps, docs/losses.md); without norm they train.
    Preset {
        name: "lsgan-64",
        about: "least-squares targets a=0, b=1, c=1 (Mao et al. 2017), no norm in D",
        apply: |c| {
            c.train.loss = "lsgan".into();
            c.model.d_norm = "none".into();
            Ok(())
        },
    },
    Preset {
        name: "wgan-64",
        about: "WGAN with weight clipping 0.01, RMSprop 5e-5, 5 critic steps (Arjovsky et al. 2017)",
        apply: |c| {
            let t = &mut c.train;
            t.loss = "wgan".into();
            t.optimizer = "rmsprop".into();
            (t.lr_g, t.lr_d) = (5e-5, 5e-5);
            t.weight_clip = 0.01;
            t.n_critic = 5;
            Ok(())
        },
    },
    Preset {
        name: "wgan-gp-64",
        about: "WGAN-GP: penalty 10, Adam 2e-4 (0.5, 0.9), 5 critic steps, layer-norm critic",
        apply: |c| {
            let t = &mut c.train;
            t.loss = "wgan".into();
            t.penalties = vec![PenaltyConfig::parse("wgan-gp:10")?];
            (t.beta1, t.beta2) = (0.5, 0.9);
            t.n_critic = 5;
            c.model.d_norm = "layer".into();
            Ok(())
        },
    },
    Preset {
        name: "hinge-64",
        about: "hinge loss with TTUR: lr 1e-4 G / 4e-4 D, betas (0, 0.9) (SAGAN)",
        apply: |c| {
            let t = &mut c.train;
            t.loss = "hinge".into();
            (t.lr_g, t.lr_d) = (1e-4, 4e-4);
            (t.beta1, t.beta2) = (0.0, 0.9);
            Ok(())
        },
    },
    Preset {
        name: "dragan-64",
        about: "non-saturating loss + DRAGAN penalty 10 around perturbed reals, layer-norm D",
        apply: |c| {
            c.train.penalties = vec![PenaltyConfig::parse("dragan:10")?];
            c.model.d_norm = "layer".into();
            Ok(())
        },
    },
    Preset {
        name: "r1-64",
        about: "non-saturating loss + lazy R1 penalty 10 every 16 steps, no-norm D (StyleGAN2)",
        apply: |c| {
            c.train.penalties = vec![PenaltyConfig::parse("r1:10:16")?];
            c.model.d_norm = "none".into();
            Ok(())
        },
    },
    Preset {
        name: "fgan-kl-64",
        about: "f-GAN, KL divergence (Nowozin et al. 2016)",
        apply: |c| {
            c.train.loss = "fgan-kl".into();
            Ok(())
        },
    },
    Preset {
        name: "fgan-js-64",
        about: "f-GAN, Jensen-Shannon divergence (Nowozin et al. 2016)",
        apply: |c| {
            c.train.loss = "fgan-js".into();
            Ok(())
        },
    },
    Preset {
        name: "ragan-64",
        about: "relativistic average GAN (Jolicoeur-Martineau 2018)",
        apply: |c| {
            c.train.loss = "ragan".into();
            Ok(())
        },
    },
    Preset {
        name: "ralsgan-64",
        about: "relativistic average least-squares GAN, no norm in D",
        apply: |c| {
            c.train.loss = "ralsgan".into();
            c.model.d_norm = "none".into();
            Ok(())
        },
    },
    Preset {
        name: "rahinge-64",
        about: "relativistic average hinge loss",
        apply: |c| {
            c.train.loss = "rahinge".into();
            Ok(())
        },
    },
    Preset {
        name: "resnet-wgan-gp-64",
        about: "ResNet G and D (Gulrajani et al. 2017), WGAN-GP 10, Adam 1e-4 (0, 0.9), 5 critic steps, layer-norm D",
        apply: |c| {
            let m = &mut c.model;
            (m.arch, m.nz, m.ngf, m.ndf) = ("resnet".into(), 128, 32, 32);
            m.d_norm = "layer".into();
            let t = &mut c.train;
            t.loss = "wgan".into();
            t.penalties = vec![PenaltyConfig::parse("wgan-gp:10")?];
            (t.lr_g, t.lr_d, t.beta1, t.beta2) = (1e-4, 1e-4, 0.0, 0.9);
            t.n_critic = 5;
            Ok(())
        },
    },
    Preset {
        name: "sngan-64",
        about: "SN-GAN ResNet (Miyato et al. 2018): SN in D, hinge, Adam 2e-4 (0, 0.9), 5 critic steps",
        apply: |c| sngan(c, 64),
    },
    Preset { name: "sngan-128", about: "sngan-64 at 128x128, one more block on each side", apply: |c| sngan(c, 128) },
    Preset {
        name: "sagan-64",
        about: "SAGAN (Zhang et al. 2019): SN in G and D, attention at 32x32, hinge, TTUR 1e-4/4e-4",
        apply: |c| sagan(c, 64),
    },
    Preset { name: "sagan-128", about: "sagan-64 at 128x128 (attention still at 32x32)", apply: |c| sagan(c, 128) },
    Preset {
        name: "selfmod-64",
        about: "sngan-64 with self-modulated batch norm in G (Chen et al. 2019)",
        apply: |c| {
            sngan(c, 64)?;
            c.model.self_modulation = true;
            Ok(())
        },
    },
    Preset {
        name: "ebgan-64",
        about: "EBGAN (Zhao et al. 2017): auto-encoder D, margin loss m=1, pulling-away term 0.1 on G",
        apply: |c| {
            c.model.arch = "ebgan".into();
            c.train.loss = "ebgan".into();
            c.train.ebgan_margin = 1.0;
            c.train.penalties = vec![PenaltyConfig::parse("pull-away:0.1")?];
            Ok(())
        },
    },
    Preset {
        name: "cgan-64",
        about: "conditional DCGAN (Mirza & Osindero 2014): attribute signs joined to z and as planes to D's input",
        apply: |c| {
            conditional(c, "concat");
            Ok(())
        },
    },
    Preset {
        name: "acgan-64",
        about: "ACGAN (Odena et al. 2017): DCGAN whose D also classifies the attributes (BCE, weight 1)",
        apply: |c| {
            conditional(c, "acgan");
            Ok(())
        },
    },
    Preset {
        name: "infogan-64",
        about: "InfoGAN (Chen et al. 2016): DCGAN with a 10-way categorical and 2 continuous codes, Q head on D, λ 1",
        apply: |c| {
            (c.model.info_cat, c.model.info_cont) = (10, 2);
            Ok(())
        },
    },
    Preset {
        name: "sgan-64",
        about: "semi-supervised GAN (Odena 2016; Salimans et al. 2016): D's 8 classes (Male×Smiling×Young) + fake",
        apply: |c| {
            c.model.condition = "sgan".into();
            c.model.attrs = ["Male", "Smiling", "Young"].iter().map(|a| a.to_string()).collect();
            Ok(())
        },
    },
    Preset {
        name: "cbn-projection-64",
        about: "sngan-64 with conditional BN in G and a projection D (Miyato & Koyama 2018), hinge, SN",
        apply: |c| {
            sngan(c, 64)?;
            conditional(c, "projection");
            Ok(())
        },
    },
    Preset {
        name: "stylegan-32",
        about: "StyleGAN at 32x32 for quick runs (see stylegan-64)",
        apply: |c| stylegan(c, 32),
    },
    Preset {
        name: "stylegan-64",
        about: "StyleGAN (Karras et al. 2019): AdaIN, noise, mixing 0.9, R1 every step; no progressive growing",
        apply: |c| stylegan(c, 64),
    },
    Preset {
        name: "stylegan2-32",
        about: "StyleGAN2 at 32x32 for quick runs (see stylegan2-64)",
        apply: |c| stylegan2(c, 32),
    },
    Preset {
        name: "stylegan2-64",
        about:
            "StyleGAN2 (Karras et al. 2020): w 256, ngf/ndf 32 (paper 512 channels), lazy R1, path length, mixing 0.9",
        apply: |c| stylegan2(c, 64),
    },
    Preset {
        name: "stylegan2-128",
        about: "StyleGAN2 at 128x128, ngf/ndf 16 (128 channels at the widest)",
        apply: |c| stylegan2(c, 128),
    },
];

fn mlp(c: &mut RunConfig) {
    c.model.arch = "mlp".into();
    c.model.d_dropout = 0.5;
}

/// The named preset, or an error listing the valid names.
pub fn preset(name: &str) -> Result<RunConfig> {
    let Some(p) = PRESETS.iter().find(|p| p.name == name) else {
        bail!(
            "unknown preset '{name}'; valid presets: {}",
            PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
        )
    };
    let mut c = RunConfig { preset: name.to_string(), ..Default::default() };
    (p.apply)(&mut c)?;
    c.validate()?;
    Ok(c)
}
