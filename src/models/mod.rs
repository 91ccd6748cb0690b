//! Generator and discriminator families, and the one place (`build_*`) that maps a
//! model configuration to networks.

pub mod dcgan;

use crate::config::ModelConfig;
use crate::nn::{Mode, Params};
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

pub trait Generator {
    /// Latents `z` (N, nz) to images (N, 3, S, S) in [-1, 1].
    fn forward(&self, z: &Tensor, labels: Option<&Tensor>, mode: Mode) -> candle_core::Result<Tensor>;
    fn params(&self) -> &Params;
}

pub trait Discriminator {
    /// Images (N, 3, S, S) to logits (N,).
    fn forward(&self, x: &Tensor, labels: Option<&Tensor>, mode: Mode) -> candle_core::Result<Tensor>;
    fn params(&self) -> &Params;
}

pub fn build_generator(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Box<dyn Generator>> {
    match cfg.arch.as_str() {
        "dcgan" => Ok(Box::new(dcgan::DcganGenerator::new(cfg, device, rng)?)),
        a => bail!("unknown architecture '{a}'; valid: dcgan"),
    }
}

pub fn build_discriminator(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Box<dyn Discriminator>> {
    match cfg.arch.as_str() {
        "dcgan" => Ok(Box::new(dcgan::DcganDiscriminator::new(cfg, device, rng)?)),
        a => bail!("unknown architecture '{a}'; valid: dcgan"),
    }
}
