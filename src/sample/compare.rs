//! Side-by-side comparison of models: one labelled sample grid per checkpoint, all
//! from the same latents (`facegan compare`).

use super::generate::{generate, load_generator};
use super::grid::{make_grid, to_images};
use crate::train::checkpoint;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use image::{Rgb, RgbImage};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Height of the caption band above each panel, in pixels.
const CAPTION_HEIGHT: u32 = 22;
/// Pixels between panels.
const GAP: u32 = 8;
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);

/// What to compare and how to lay it out.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Run folders (their newest checkpoint) or checkpoint files.
    pub models: Vec<PathBuf>,
    /// Captions, one per model; empty: each run folder's (or file's) name and its step.
    pub labels: Vec<String>,
    /// Faces per panel, from the latents `facegan generate --seed` draws.
    pub count: usize,
    /// Faces per panel row.
    pub columns: usize,
    /// Panels per row of the picture.
    pub panels_per_row: usize,
    pub seed: u64,
    pub device: Device,
}

/// A checkpoint path and a caption for a run folder or checkpoint file.
fn resolve(model: &Path) -> Result<(PathBuf, String)> {
    let ck = if model.is_dir() { checkpoint::latest(model)? } else { model.to_path_buf() };
    if !ck.is_file() {
        bail!("{} does not exist (give a run folder or a checkpoint)", model.display());
    }
    let name = model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((ck, name))
}

/// The comparison picture: panels in rows, each a captioned sample grid.
pub fn compare(opts: &CompareOptions) -> Result<RgbImage> {
    if opts.models.is_empty() {
        bail!("nothing to compare: give run folders or checkpoints");
    }
    if !opts.labels.is_empty() && opts.labels.len() != opts.models.len() {
        bail!("{} labels for {} models; give one label per model or none", opts.labels.len(), opts.models.len());
    }
    let mut panels = Vec::new();
    for (i, model) in opts.models.iter().enumerate() {
        let (ck, name) = resolve(model)?;
        let (g, cfg) = load_generator(&ck, &opts.device)?;
        let step = checkpoint::read(&ck, &Device::Cpu)?.step();
        let caption = opts.labels.get(i).cloned().unwrap_or_else(|| format!("{name} (step {step})"));
        let x = generate(g.as_ref(), &cfg, opts.count, opts.seed, &opts.device, None, &[])
            .with_context(|| format!("generating with {}", ck.display()))?;
        panels.push((caption, make_grid(&to_images(&x)?, opts.columns)));
    }
    Ok(lay_out(&panels, opts.panels_per_row))
}

/// Places captioned panels `per_row` to a row (every cell as large as the largest panel).
pub fn lay_out(panels: &[(String, RgbImage)], per_row: usize) -> RgbImage {
    let per_row = per_row.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(per_row) as u32;
    let cw = panels.iter().map(|p| p.1.width()).max().unwrap_or(1);
    let ch = panels.iter().map(|p| p.1.height()).max().unwrap_or(1) + CAPTION_HEIGHT;
    let (w, h) = (per_row as u32 * (cw + GAP) + GAP, rows * (ch + GAP) + GAP);
    let mut out = RgbImage::from_pixel(w, h, BACKGROUND);
    let origin = |k: usize| (GAP + (k % per_row) as u32 * (cw + GAP), GAP + (k / per_row) as u32 * (ch + GAP));
    for (k, (_, img)) in panels.iter().enumerate() {
        let (x, y) = origin(k);
        image::imageops::replace(&mut out, img, x as i64, (y + CAPTION_HEIGHT) as i64);
    }
    if crate::report::font_available() {
        let mut buf = out.into_raw();
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            let style = ("sans-serif", 16).into_font().color(&BLACK);
            for (k, (caption, _)) in panels.iter().enumerate() {
                let (x, y) = origin(k);
                // Text that does not fit is cut by the backend; captions are short.
                let _ = root.draw_text(caption, &style, (x as i32 + 2, y as i32 + 3));
            }
            let _ = root.present();
        }
        out = RgbImage::from_raw(w, h, buf).expect("buffer matches the picture");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_are_placed_in_rows_below_their_captions() {
        let a = RgbImage::from_pixel(10, 6, Rgb([255, 0, 0]));
        let b = RgbImage::from_pixel(8, 8, Rgb([0, 0, 255]));
        let panels = vec![("a".to_string(), a.clone()), ("b".into(), b), ("c".into(), a)];
        let img = lay_out(&panels, 2);
        let (cw, ch) = (10, 8 + CAPTION_HEIGHT);
        assert_eq!(img.dimensions(), (2 * (cw + GAP) + GAP, 2 * (ch + GAP) + GAP));
        let top = GAP + CAPTION_HEIGHT;
        assert_eq!(img.get_pixel(GAP, top).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(2 * GAP + cw, top).0, [0, 0, 255]);
        assert_eq!(img.get_pixel(GAP, top + ch + GAP).0, [255, 0, 0]);
        // Below a short panel and in the empty last cell: background.
        assert_eq!(img.get_pixel(GAP, top + 7).0, BACKGROUND.0);
        assert_eq!(img.get_pixel(2 * GAP + cw, top + ch + GAP).0, BACKGROUND.0);
    }
}
