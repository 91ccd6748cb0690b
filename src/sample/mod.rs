//! Latent sampling and image grids.

pub mod compare;
pub mod generate;
pub mod grid;

use crate::rng::Rng;
use candle_core::{Device, Result, Tensor};

/// Tag of the RNG stream that draws a run's fixed sample latents.
pub const FIXED_LATENTS_TAG: u64 = 0xF1_0ED;

/// `n` latents of size `nz` drawn from N(0, 1) with a stream derived from `seed`.
pub fn latents(seed: u64, tag: u64, n: usize, nz: usize, device: &Device) -> Result<Tensor> {
    Rng::derived(seed, tag).normal_tensor((n, nz), 0.0, 1.0, device)
}
