//! Latent sampling and image grids.

pub mod compare;
pub mod generate;
pub mod grid;

use crate::models::{Generator, Latent};
use crate::rng::Rng;
use candle_core::{Device, Result, Tensor};

/// Tag of the RNG stream that draws a run's fixed sample latents.
pub const FIXED_LATENTS_TAG: u64 = 0xF1_0ED;

/// `n` latents of size `nz` drawn from N(0, 1) with a stream derived from `seed`.
pub fn latents(seed: u64, tag: u64, n: usize, nz: usize, device: &Device) -> Result<Tensor> {
    Rng::derived(seed, tag).normal_tensor((n, nz), 0.0, 1.0, device)
}

/// `n` latents the generator's family samples, from a stream derived from `seed` and `tag`
/// (for families with a plain Gaussian z, the same numbers as [`latents`]).
pub fn fixed_latents(g: &dyn Generator, seed: u64, tag: u64, n: usize, device: &Device) -> anyhow::Result<Latent> {
    g.sample_latent(n, &mut Rng::derived(seed, tag), device)
}
