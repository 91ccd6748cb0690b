//! Making faces from a checkpoint.

use super::{fixed_latents, grid};
use crate::config::RunConfig;
use crate::models::style::{eval_images, Truncation};
use crate::models::{build_generator, Generator};
use crate::rng::Rng;
use crate::train::checkpoint;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// File name of the generator the repository ships, under `models/`.
pub const SHIPPED_MODEL: &str = "dcgan64-celeba.safetensors";
/// Tag of the latent stream `generate --seed S` draws from.
pub const GENERATE_TAG: u64 = 0x6E4E;

/// The shipped model: `models/` in the working directory, else in the source tree
/// this binary was built from.
pub fn shipped_model_path() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("models").join(SHIPPED_MODEL),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(SHIPPED_MODEL),
    ];
    candidates.into_iter().find(|p| p.is_file())
}

/// Loads the EMA generator of a checkpoint (full or generator-only).
pub fn load_generator(path: &Path, device: &Device) -> Result<(Box<dyn Generator>, RunConfig)> {
    let ck = checkpoint::read(path, device)?;
    let g = build_generator(&ck.config.model, device, &mut Rng::new(0))?;
    g.params().load_tensors("G_ema", &ck.tensors, &path.display().to_string())?;
    Ok((g, ck.config))
}

/// `count` images from latents drawn under `seed`, (N, 3, S, S) in [-1, 1], truncated in W
/// when `truncation` is given (style families only).
pub fn generate(
    g: &dyn Generator,
    cfg: &RunConfig,
    count: usize,
    seed: u64,
    device: &Device,
    truncation: Option<Truncation>,
) -> Result<Tensor> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let z = fixed_latents(g, seed, GENERATE_TAG, count, device)?;
    // Batches of 64 keep memory flat for large counts; eval-mode batch norm makes
    // each face independent of its batch.
    let mut parts = Vec::new();
    for start in (0..count).step_by(64) {
        let n = 64.min(count - start);
        parts.push(eval_images(g, &z.narrow(start, n)?, truncation, &cfg.model.arch)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Writes a grid PNG to `out`, or, when `out` ends with a path separator or is an
/// existing folder, one PNG per face (face-0000.png, ...).
pub fn write_faces(x: &Tensor, out: &Path, columns: usize) -> Result<Vec<PathBuf>> {
    let images = grid::to_images(x)?;
    let as_dir = out.is_dir() || out.to_string_lossy().ends_with(['/', '\\']);
    if as_dir {
        crate::fsutil::ensure_dir(out)?;
        let mut written = Vec::new();
        for (i, img) in images.iter().enumerate() {
            let p = out.join(format!("face-{i:04}.png"));
            grid::save_png(img, &p)?;
            written.push(p);
        }
        Ok(written)
    } else {
        if let Some(dir) = out.parent() {
            if !dir.as_os_str().is_empty() && !dir.is_dir() {
                bail!("cannot write {}: folder {} does not exist", out.display(), dir.display());
            }
        }
        grid::save_png(&grid::make_grid(&images, columns), out)?;
        Ok(vec![out.to_path_buf()])
    }
}
