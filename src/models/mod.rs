//! Generator and discriminator families.
//!
//! A family is one file here that defines its networks and one [`Family`] entry (name,
//! description, the layer options it accepts, its builders and its own checks); [`FAMILIES`]
//! lists them, and everything else (configuration checks, training, sampling, checkpoints)
//! goes through that list, never through a family's name. A new family is its file, its
//! entry in [`FAMILIES`], a preset in `crate::presets` and its tests.

pub mod conditional;
pub mod dcgan;
pub mod ebgan;
pub mod info;
pub mod mlp;
pub mod resnet;
pub mod style;
pub mod stylegan;
pub mod stylegan2;

use crate::config::ModelConfig;
use crate::nn::{Mode, Params};
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use conditional::Condition;
use std::collections::BTreeMap;

/// What a generator makes images from. Families sample it themselves
/// ([`Generator::sample_latent`]), so latents with more structure than one Gaussian vector
/// (codes, labels, several styles) have a place to live.
#[derive(Clone, Debug)]
pub struct Latent {
    /// The Gaussian latent, (N, latent_dim).
    pub z: Tensor,
    /// Conditioning labels, (N, L), for conditional families.
    pub labels: Option<Tensor>,
    /// Style families: one seed per sample for its per-pixel noise inputs (None: no noise).
    pub noise: Option<Vec<u64>>,
    /// Style mixing: a second z, whose w drives the layers from this index on.
    pub mix: Option<(Tensor, usize)>,
    /// InfoGAN's codes (N, info_cat + info_cont): a one-hot category, then continuous values.
    pub codes: Option<Tensor>,
}

impl Latent {
    pub fn from_z(z: Tensor) -> Self {
        Self { z, labels: None, noise: None, mix: None, codes: None }
    }

    pub fn batch_size(&self) -> Result<usize> {
        Ok(self.z.dim(0)?)
    }

    /// Samples `start..start + len` of the batch.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        let labels = match &self.labels {
            Some(l) => Some(l.narrow(0, start, len)?),
            None => None,
        };
        let noise = self.noise.as_ref().map(|s| s[start..start + len].to_vec());
        let mix = match &self.mix {
            Some((z2, cutoff)) => Some((z2.narrow(0, start, len)?, *cutoff)),
            None => None,
        };
        let codes = self.codes.as_ref().map(|c| c.narrow(0, start, len)).transpose()?;
        Ok(Self { z: self.z.narrow(0, start, len)?, labels, noise, mix, codes })
    }
}

pub trait Generator {
    /// Size of the Gaussian latent z.
    fn latent_dim(&self) -> usize;

    /// `n` latents drawn from `rng`; by default z ~ N(0, I) of [`Self::latent_dim`].
    fn sample_latent(&self, n: usize, rng: &mut Rng, device: &Device) -> Result<Latent> {
        Ok(Latent::from_z(rng.normal_tensor((n, self.latent_dim()), 0.0, 1.0, device)?))
    }

    /// The latents of a training step: [`Self::sample_latent`], plus whatever regularisation
    /// the family draws with them (style mixing).
    fn sample_training_latent(&self, n: usize, rng: &mut Rng, device: &Device) -> Result<Latent> {
        self.sample_latent(n, rng, device)
    }

    /// Latents to images (N, 3, S, S) in [-1, 1].
    fn forward(&self, latent: &Latent, mode: Mode) -> candle_core::Result<Tensor>;

    fn params(&self) -> &Params;

    /// The intermediate latent space W of a style-based generator (truncation, style mixing,
    /// path length); None for the other families.
    fn style(&self) -> Option<&dyn style::StyleGenerator> {
        None
    }
}

/// The auxiliary output holding D's last hidden features, (N, F) (DCGAN's D), read by
/// feature matching.
pub const FEATURES: &str = "features";

/// What a discriminator returns: one score per image, and named auxiliary outputs that
/// losses and regularisers may read (e.g. EBGAN's embedding for the pulling-away term).
pub struct DiscOutput {
    /// (N,) logits (or, for energy-based discriminators, energies).
    pub logits: Tensor,
    pub aux: BTreeMap<&'static str, Tensor>,
}

impl DiscOutput {
    pub fn logits(logits: Tensor) -> Self {
        Self { logits, aux: BTreeMap::new() }
    }
}

pub trait Discriminator {
    /// Images (N, 3, S, S) to logits and auxiliary outputs.
    fn forward_full(&self, x: &Tensor, labels: Option<&Tensor>, mode: Mode) -> candle_core::Result<DiscOutput>;

    /// Images to logits (N,).
    fn forward(&self, x: &Tensor, labels: Option<&Tensor>, mode: Mode) -> candle_core::Result<Tensor> {
        Ok(self.forward_full(x, labels, mode)?.logits)
    }

    fn params(&self) -> &Params;
}

/// Layer options of `model` that a family may or may not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelOption {
    /// `d_norm` other than the default batch norm.
    DNorm,
    GSpectralNorm,
    DSpectralNorm,
    Attention,
    MinibatchStddev,
    SelfModulation,
    Dropout,
    WDim,
    MappingLayers,
    StyleMixing,
    InfoCat,
    InfoCont,
}

impl ModelOption {
    /// The configuration key, as a user writes it.
    pub fn key(&self) -> &'static str {
        match self {
            Self::DNorm => "d_norm",
            Self::GSpectralNorm => "g_spectral_norm",
            Self::DSpectralNorm => "d_spectral_norm",
            Self::Attention => "attention",
            Self::MinibatchStddev => "mbstd_group",
            Self::SelfModulation => "self_modulation",
            Self::Dropout => "d_dropout",
            Self::WDim => "w_dim",
            Self::MappingLayers => "mapping_layers",
            Self::StyleMixing => "style_mixing",
            Self::InfoCat => "info_cat",
            Self::InfoCont => "info_cont",
        }
    }

    /// Whether `cfg` sets this option away from its default.
    fn is_set(&self, cfg: &ModelConfig) -> bool {
        match self {
            Self::DNorm => cfg.d_norm != "batch",
            Self::GSpectralNorm => cfg.g_spectral_norm,
            Self::DSpectralNorm => cfg.d_spectral_norm,
            Self::Attention => cfg.attention != 0,
            Self::MinibatchStddev => cfg.mbstd_group != 0,
            Self::SelfModulation => cfg.self_modulation,
            Self::Dropout => cfg.d_dropout != 0.0,
            Self::WDim => cfg.w_dim.is_some(),
            Self::MappingLayers => cfg.mapping_layers.is_some(),
            Self::StyleMixing => cfg.style_mixing.is_some(),
            Self::InfoCat => cfg.info_cat != 0,
            Self::InfoCont => cfg.info_cont != 0,
        }
    }

    const ALL: [ModelOption; 12] = [
        Self::DNorm,
        Self::GSpectralNorm,
        Self::DSpectralNorm,
        Self::Attention,
        Self::MinibatchStddev,
        Self::SelfModulation,
        Self::Dropout,
        Self::WDim,
        Self::MappingLayers,
        Self::StyleMixing,
        Self::InfoCat,
        Self::InfoCont,
    ];
}

pub type BuildG = fn(&ModelConfig, &Device, &mut Rng) -> Result<Box<dyn Generator>>;
pub type BuildD = fn(&ModelConfig, &Device, &mut Rng) -> Result<Box<dyn Discriminator>>;

/// One network family.
pub struct Family {
    /// The value of `model.arch`.
    pub name: &'static str,
    pub about: &'static str,
    /// Options this family's networks accept; setting any other is an error.
    pub options: &'static [ModelOption],
    /// Auxiliary outputs its discriminator provides (see [`DiscOutput::aux`]).
    pub d_aux: &'static [&'static str],
    /// Whether D outputs energies (low on real data) for the `ebgan` loss, not logits.
    pub energy_d: bool,
    /// Whether G has an intermediate latent space W ([`Generator::style`]): truncation,
    /// style mixing and path-length regularisation apply.
    pub w_space: bool,
    /// Ways of conditioning on labels it supports (`model.condition` other than none).
    pub conditions: &'static [Condition],
    pub build_generator: BuildG,
    pub build_discriminator: BuildD,
    /// Checks of this family's own (image sizes it supports, where attention can go).
    pub validate: fn(&ModelConfig) -> Result<()>,
}

/// Every family, in the order `facegan presets` shows them.
pub const FAMILIES: &[&Family] =
    &[&mlp::FAMILY, &dcgan::FAMILY, &resnet::FAMILY, &ebgan::FAMILY, &stylegan::FAMILY, &stylegan2::FAMILY];

/// The families with a W space, comma-separated (for messages).
pub fn style_family_names() -> String {
    FAMILIES.iter().filter(|f| f.w_space).map(|f| f.name).collect::<Vec<_>>().join(", ")
}

/// The family named `name`, or an error listing the valid names.
pub fn family(name: &str) -> Result<&'static Family> {
    match FAMILIES.iter().find(|f| f.name == name) {
        Some(f) => Ok(f),
        None => bail!(
            "model.arch '{name}' is unknown; valid families: {}",
            FAMILIES.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Checks a model configuration against its family: every option it sets must be one the
/// family accepts, and the family's own checks must pass.
pub fn validate(cfg: &ModelConfig) -> Result<()> {
    let fam = family(&cfg.arch)?;
    for opt in ModelOption::ALL {
        if opt.is_set(cfg) && !fam.options.contains(&opt) {
            let valid: Vec<&str> = fam.options.iter().map(|o| o.key()).collect();
            bail!(
                "model.{} does not apply to the {} family (its options: {})",
                opt.key(),
                fam.name,
                if valid.is_empty() { "none".to_string() } else { valid.join(", ") }
            );
        }
    }
    if !matches!(cfg.d_norm.as_str(), "batch" | "layer" | "none") {
        bail!("model.d_norm '{}' is unknown; valid: batch, layer, none", cfg.d_norm);
    }
    if cfg.info_cat == 1 {
        bail!("model.info_cat 1 is a code with one value, which carries nothing; use 0 (none) or 2 or more (10 in InfoGAN)");
    }
    if cfg.mbstd_group == 1 {
        bail!("model.mbstd_group 1 has no spread to measure; use 0 (off) or a group of 2 or more (4 as in the papers)");
    }
    if let Some(p) = cfg.style_mixing.filter(|p| !(0.0..=1.0).contains(p)) {
        bail!("model.style_mixing {p} is a probability and must be in [0, 1]");
    }
    if cfg.w_dim == Some(0) || cfg.mapping_layers == Some(0) {
        bail!("model.w_dim and model.mapping_layers must be at least 1");
    }
    if !(0.0..1.0).contains(&cfg.d_dropout) {
        bail!("model.d_dropout {} must be in [0, 1)", cfg.d_dropout);
    }
    validate_condition(cfg, fam)?;
    (fam.validate)(cfg)
}

fn validate_condition(cfg: &ModelConfig, fam: &Family) -> Result<()> {
    let cond = Condition::parse(&cfg.condition)?;
    let names = |cs: &[Condition]| cs.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
    if cond != Condition::None && !fam.conditions.contains(&cond) {
        let supported = FAMILIES.iter().filter(|f| f.conditions.contains(&cond)).map(|f| f.name).collect::<Vec<_>>();
        bail!(
            "model.condition {} does not apply to the {} family (its conditions: {}; families with {}: {})",
            cond.name(),
            fam.name,
            if fam.conditions.is_empty() { "none".to_string() } else { names(fam.conditions) },
            cond.name(),
            supported.join(", ")
        );
    }
    match (cond, cfg.attrs.is_empty()) {
        (Condition::None, false) => bail!(
            "model.attrs ({}) needs a way to use them: model.condition (--condition) one of {}",
            cfg.attrs.join(", "),
            names(&Condition::ALL[1..])
        ),
        (c, true) if c != Condition::None => {
            bail!("model.condition {} needs attributes to condition on: --attrs Male,Smiling,... (or all)", c.name())
        }
        _ => {}
    }
    if cond == Condition::SemiSupervised && cfg.attrs.len() > conditional::SGAN_MAX_ATTRS {
        bail!(
            "model.condition sgan makes one class per combination of its attributes: {} attributes would be 2^{} classes; use at most {}",
            cfg.attrs.len(),
            cfg.attrs.len(),
            conditional::SGAN_MAX_ATTRS
        );
    }
    if cfg.attrs.iter().any(|a| a == "all") {
        bail!("model.attrs 'all' must be expanded to the attribute file's names before the model is built (the command line does this)");
    }
    Ok(())
}

/// Checks that attention, when asked for, sits at one of `resolutions` (the sides of the
/// feature maps where the family can put it).
pub fn check_attention(cfg: &ModelConfig, resolutions: &[usize]) -> Result<()> {
    if cfg.attention != 0 && !resolutions.contains(&cfg.attention) {
        bail!(
            "model.attention {}: the {} networks at {}x{} have no feature map of that side; valid: {}",
            cfg.attention,
            cfg.arch,
            cfg.image_size,
            cfg.image_size,
            resolutions.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

pub fn build_generator(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Box<dyn Generator>> {
    (family(&cfg.arch)?.build_generator)(cfg, device, rng)
}

pub fn build_discriminator(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Box<dyn Discriminator>> {
    (family(&cfg.arch)?.build_discriminator)(cfg, device, rng)
}

/// Number of stride-2 stages between 4x4 and the image size.
pub(crate) fn stages(cfg: &ModelConfig) -> usize {
    (cfg.image_size / 4).trailing_zeros() as usize
}
