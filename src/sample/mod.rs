//! Latent sampling and image grids.

pub mod compare;
pub mod figures;
pub mod generate;
pub mod grid;
pub mod zoo;

use crate::models::{Generator, Latent};
use crate::rng::Rng;
use candle_core::Device;

/// Tag of the RNG stream that draws a run's fixed sample latents.
pub const FIXED_LATENTS_TAG: u64 = 0xF1_0ED;

/// `n` latents the generator's family samples, from a stream derived from `seed` and `tag`
/// (for a plain Gaussian z, N(0, 1) values in order: what scripts/to_pytorch.py reproduces).
pub fn fixed_latents(g: &dyn Generator, seed: u64, tag: u64, n: usize, device: &Device) -> anyhow::Result<Latent> {
    g.sample_latent(n, &mut Rng::derived(seed, tag), device)
}
