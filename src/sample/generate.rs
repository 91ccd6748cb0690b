//! Making faces from a checkpoint.

use super::{fixed_latents, grid};
use crate::config::RunConfig;
use crate::models::style::{eval_images, Truncation};
use crate::models::{build_generator, Generator, Latent};
use crate::rng::Rng;
use crate::train::checkpoint;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// Tag of the latent stream `generate --seed S` draws from.
pub const GENERATE_TAG: u64 = 0x6E4E;

/// Loads the EMA generator of a checkpoint (full, generator-only or continuation), or of a
/// run folder's newest good checkpoint.
pub fn load_generator(path: &Path, device: &Device) -> Result<(Box<dyn Generator>, RunConfig)> {
    let ck = match path.is_dir() {
        true => checkpoint::read_latest(path, device)?,
        false => checkpoint::read(path, device)?,
    };
    let path = ck.path.as_path();
    if ck.kind() == crate::metrics::attr::KIND_CLASSIFIER {
        bail!("{} is an attribute classifier, not a generator", path.display());
    }
    // The file's tensors bound the network its (possibly damaged) configuration may build.
    let held: usize = ck.tensors.values().map(|t| t.elem_count()).sum();
    let g =
        crate::nn::params::with_parameter_budget(held, || build_generator(&ck.config.model, device, &mut Rng::new(0)))
            .with_context(|| format!("{}: its configuration does not match its tensors", path.display()))?;
    g.params().load_tensors("G_ema", &ck.tensors, &path.display().to_string())?;
    Ok((g, ck.config))
}

/// `count` images from latents drawn under `seed`, (N, 3, S, S) in [-1, 1], truncated in W
/// when `truncation` is given (style families only), with the attributes `attrs` (column,
/// 0/1; see [`parse_attr_values`]) fixed for every face of a conditional model (the others
/// are drawn from the model's prior).
pub fn generate(
    g: &dyn Generator,
    cfg: &RunConfig,
    count: usize,
    seed: u64,
    device: &Device,
    truncation: Option<Truncation>,
    attrs: &[(usize, f32)],
) -> Result<Tensor> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let mut z = fixed_latents(g, seed, GENERATE_TAG, count, device)?;
    set_attrs(&mut z, attrs)?;
    images_of(g, cfg, &z, truncation)
}

/// Images of `latent`, in batches of 64 (memory stays flat for large counts; eval-mode
/// batch norm makes each face independent of its batch).
fn images_of(g: &dyn Generator, cfg: &RunConfig, latent: &Latent, truncation: Option<Truncation>) -> Result<Tensor> {
    let count = latent.batch_size()?;
    let mut parts = Vec::new();
    for start in (0..count).step_by(64) {
        let n = 64.min(count - start);
        parts.push(eval_images(g, &latent.narrow(start, n)?, truncation, &cfg.model.arch)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// `NAME=V,...` (V: 1 or 0; -1 as in CelebA's file means 0) for a model conditioned on
/// `cfg.model.attrs`: each attribute's column and value. An attribute the model was not
/// trained on, or any attribute for an unconditional model, is an error naming the valid ones.
pub fn parse_attr_values(spec: &str, cfg: &RunConfig) -> Result<Vec<(usize, f32)>> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let Some((name, v)) = item.split_once('=') else {
                bail!("--attr '{item}': expected NAME=1 or NAME=0, e.g. Smiling=1,Male=0");
            };
            let v = match v.trim() {
                "1" | "true" | "yes" => 1.0,
                "0" | "-1" | "false" | "no" => 0.0,
                other => bail!("--attr {name}={other}: the value must be 1 or 0"),
            };
            Ok((attr_column(name.trim(), cfg)?, v))
        })
        .collect()
}

/// The column of attribute `name` in a conditional model's labels.
pub fn attr_column(name: &str, cfg: &RunConfig) -> Result<usize> {
    let attrs = &cfg.model.attrs;
    if attrs.is_empty() {
        bail!("attribute {name}: this {} model is unconditional (trained without attributes)", cfg.model.arch);
    }
    match attrs.iter().position(|a| a == name) {
        Some(i) => Ok(i),
        None => bail!("the model was not trained on attribute '{name}'; its attributes: {}", attrs.join(", ")),
    }
}

/// Overwrites the given label columns of every sample of `latent`.
pub fn set_attrs(latent: &mut Latent, attrs: &[(usize, f32)]) -> Result<()> {
    if attrs.is_empty() {
        return Ok(());
    }
    let labels = latent.labels.as_ref().context("the generator drew no labels: it is not conditional")?;
    let mut v: Vec<Vec<f32>> = labels.to_vec2()?;
    for row in &mut v {
        for &(c, x) in attrs {
            row[c] = x;
        }
    }
    let (n, k) = labels.dims2()?;
    latent.labels = Some(Tensor::from_vec(v.concat(), (n, k), labels.device())?);
    Ok(())
}

/// The attribute grid: for each attribute of `columns`, a row of `count` faces with it off
/// and a row with it on; every other input (z, the other attributes, `fixed`) is the same in
/// every row, so a column shows what flipping one attribute changes.
pub fn attribute_grid(
    g: &dyn Generator,
    cfg: &RunConfig,
    columns: &[usize],
    count: usize,
    seed: u64,
    fixed: &[(usize, f32)],
    device: &Device,
) -> Result<Tensor> {
    if count == 0 || columns.is_empty() {
        bail!("--attr-grid needs at least one attribute and --count of at least 1");
    }
    let mut base = fixed_latents(g, seed, GENERATE_TAG, count, device)?;
    set_attrs(&mut base, fixed)?;
    let mut rows = Vec::new();
    for &c in columns {
        for v in [0.0, 1.0] {
            let mut z = base.clone();
            set_attrs(&mut z, &[(c, v)])?;
            rows.push(images_of(g, cfg, &z, None)?);
        }
    }
    Ok(Tensor::cat(&rows, 0)?)
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
