//! Figures: the StyleGAN papers' style-mixing and stochastic-variation figures (style
//! families), latent-walk GIFs (every family) and InfoGAN's latent traversals.

use super::fixed_latents;
use super::grid::{make_grid, to_images};
use crate::models::style::{latent_ws, style_of, StyleGenerator, Truncation};
use crate::models::{Generator, Latent};
use crate::nn::Mode;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};

/// Latent streams of the figures (so each figure's faces are reproducible from its seed).
const ROWS_TAG: u64 = 0xA0;
const COLS_TAG: u64 = 0xB0;
const WALK_TAG: u64 = 0xC0;
const TRAVERSE_TAG: u64 = 0xD0;

/// A named band of feature-map sides whose styles a mixing figure swaps.
#[derive(Clone, Debug, PartialEq)]
pub struct StyleBand {
    pub name: String,
    pub sides: (usize, usize),
}

/// Parses `coarse` (4–8), `middle` (16–32), `fine` (64 and up) or `LO-HI` (sides), comma-separated.
/// The papers' bands; on images under 64x64 `fine` is the image side and `middle` stops below it.
pub fn parse_bands(s: &str) -> Result<Vec<StyleBand>> {
    s.split(',')
        .map(|b| b.trim())
        .filter(|b| !b.is_empty())
        .map(|b| {
            let sides = match b {
                "coarse" => (4, 8),
                "middle" => (16, 32),
                "fine" => (64, usize::MAX),
                other => {
                    let parsed = other.split_once('-').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                    match parsed {
                        Some((lo, hi)) if lo <= hi => (lo, hi),
                        _ => bail!(
                            "style band '{other}' is not coarse, middle, fine or LO-HI (feature-map sides, e.g. 8-16)"
                        ),
                    }
                }
            };
            Ok(StyleBand { name: b.to_string(), sides })
        })
        .collect()
}

/// The ws of `g` whose layers' sides fall in `band`; an error naming the band when none do.
fn band_indices(g: &dyn StyleGenerator, band: &StyleBand) -> Result<Vec<usize>> {
    let sides = g.ws_sides();
    let size = sides.iter().copied().max().unwrap_or(4);
    let (lo, hi) = match band.name.as_str() {
        "fine" => (band.sides.0.min(size), band.sides.1),
        "middle" => (band.sides.0, band.sides.1.min(size / 2)),
        _ => band.sides,
    };
    let idx: Vec<usize> = (0..sides.len()).filter(|&i| sides[i] >= lo && sides[i] <= hi).collect();
    if idx.is_empty() {
        let mut all = sides.clone();
        all.dedup();
        bail!(
            "style band {} selects no layer: this generator's layers have sides {}",
            band.name,
            all.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(idx)
}

fn blank(side: usize) -> RgbImage {
    RgbImage::from_pixel(side as u32, side as u32, Rgb([255, 255, 255]))
}

fn synthesize(g: &dyn StyleGenerator, ws: &Tensor, noise: &[u64]) -> Result<Vec<RgbImage>> {
    to_images(&g.synthesis(ws, Some(noise), Mode::EVAL)?)
}

/// The style-mixing figure: a top row of `cols` source faces B, and per band `rows` source
/// faces A, each followed by A with the band's styles taken from each B (A's noise kept).
pub fn mixing_figure(
    g: &dyn Generator,
    arch: &str,
    (rows, cols): (usize, usize),
    bands: &[StyleBand],
    seed: u64,
    truncation: Option<Truncation>,
    device: &Device,
) -> Result<RgbImage> {
    let sg = style_of(g, arch, "style mixing")?;
    if let Some(t) = truncation {
        t.validate(sg.num_ws())?;
    }
    if rows == 0 || cols == 0 || bands.is_empty() {
        bail!("a mixing figure needs at least one row, one column and one style band");
    }
    let a = fixed_latents(g, seed, ROWS_TAG, rows, device)?;
    let b = fixed_latents(g, seed, COLS_TAG, cols, device)?;
    let (wa, wb) = (latent_ws(sg, &a, truncation, Mode::EVAL)?, latent_ws(sg, &b, truncation, Mode::EVAL)?);
    let (na, nb) = (a.noise.clone().unwrap_or_default(), b.noise.clone().unwrap_or_default());
    let faces_a = synthesize(sg, &wa, &na)?;
    let faces_b = synthesize(sg, &wb, &nb)?;
    let side = faces_a[0].width() as usize;
    let mut cells = vec![blank(side)];
    cells.extend(faces_b.iter().cloned());
    let num_ws = sg.num_ws();
    for band in bands {
        let idx = band_indices(sg, band)?;
        for i in 0..rows {
            cells.push(faces_a[i].clone());
            // Row i of A, once per B, with the band's ws replaced by B's.
            let mut batch = Vec::with_capacity(cols);
            for j in 0..cols {
                let layers: Vec<Tensor> = (0..num_ws)
                    .map(|k| {
                        let src = if idx.contains(&k) { wb.get(j) } else { wa.get(i) };
                        src.and_then(|w| w.get(k))
                    })
                    .collect::<candle_core::Result<_>>()?;
                batch.push(Tensor::stack(&layers, 0)?);
            }
            let ws = Tensor::stack(&batch, 0)?;
            cells.extend(synthesize(sg, &ws, &vec![na[i]; cols])?);
        }
    }
    Ok(make_grid(&cells, cols + 1))
}

/// The stochastic-variation figure: per row one w, `shown` faces with different noise, and
/// the per-pixel standard deviation (over the colour channels' mean) across `draws` noise
/// draws, scaled so the largest is white.
pub fn noise_figure(
    g: &dyn Generator,
    arch: &str,
    rows: usize,
    (shown, draws): (usize, usize),
    seed: u64,
    device: &Device,
) -> Result<RgbImage> {
    let sg = style_of(g, arch, "the noise figure")?;
    if rows == 0 || shown == 0 || draws < 2 || shown > draws {
        bail!("a noise figure needs rows ≥ 1 and 1 ≤ shown ≤ draws, with draws ≥ 2 (got rows {rows}, shown {shown}, draws {draws})");
    }
    let latent = fixed_latents(g, seed, ROWS_TAG, rows, device)?;
    let ws = latent_ws(sg, &latent, None, Mode::EVAL)?;
    let mut seeds_rng = crate::rng::Rng::derived(seed, COLS_TAG);
    let noise: Vec<u64> = (0..draws).map(|_| seeds_rng.next_u64()).collect();
    let mut cells = Vec::new();
    for i in 0..rows {
        let w = ws.get(i)?.unsqueeze(0)?.broadcast_as((draws, ws.dim(1)?, ws.dim(2)?))?.contiguous()?;
        let x = sg.synthesis(&w, Some(&noise), Mode::EVAL)?;
        cells.extend(to_images(&x.narrow(0, 0, shown)?)?);
        let grey = x.mean_keepdim(1)?;
        let std = grey.broadcast_sub(&grey.mean_keepdim(0)?)?.sqr()?.mean(0)?.sqrt()?;
        let peak = std.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1e-12);
        let map = (std / peak as f64)?.affine(2.0, -1.0)?.repeat((3, 1, 1))?.unsqueeze(0)?;
        cells.extend(to_images(&map)?);
    }
    Ok(make_grid(&cells, shown + 1))
}

/// Spherical interpolation of the rows of `a` and `b` (N, D), row i at `t[i]`: the path of a
/// Gaussian latent (walks here, PPL in Z in `crate::metrics::ppl`).
pub fn slerp_rows(a: &Tensor, b: &Tensor, t: &[f64]) -> Result<Tensor> {
    let (av, bv) = (
        a.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?,
        b.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?,
    );
    let rows: Vec<f32> = av.iter().zip(&bv).zip(t).flat_map(|((x, y), &t)| slerp(x, y, t)).collect();
    Ok(Tensor::from_vec(rows, a.shape(), a.device())?.to_dtype(a.dtype())?)
}

/// Spherical interpolation between two vectors.
fn slerp(a: &[f32], b: &[f32], t: f64) -> Vec<f32> {
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
    let cos = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>() / (norm(a) * norm(b));
    let omega = cos.clamp(-1.0, 1.0).acos();
    if omega.abs() < 1e-6 {
        return a.iter().zip(b).map(|(x, y)| ((1.0 - t) * *x as f64 + t * *y as f64) as f32).collect();
    }
    let (p, q) = (((1.0 - t) * omega).sin() / omega.sin(), (t * omega).sin() / omega.sin());
    a.iter().zip(b).map(|(x, y)| (p * *x as f64 + q * *y as f64) as f32).collect()
}

/// Frames of `count` parallel latent walks through `points` key latents and back to the first,
/// `steps` frames per leg: slerp in Z for every family, lerp in W for style families (noise
/// and labels held).
pub fn interpolation_frames(
    g: &dyn Generator,
    (count, points, steps): (usize, usize, usize),
    seed: u64,
    device: &Device,
) -> Result<Vec<RgbImage>> {
    if count == 0 || points < 2 || steps == 0 {
        bail!("a walk needs at least one face, two key latents and one frame per leg (got {count}, {points}, {steps})");
    }
    let keys: Vec<Latent> =
        (0..points).map(|k| fixed_latents(g, seed, WALK_TAG + k as u64, count, device)).collect::<Result<_>>()?;
    let cols = (count as f64).sqrt().ceil() as usize;
    let mut frames = Vec::new();
    let style = g.style();
    let key_ws: Vec<Tensor> = match style {
        Some(sg) => keys.iter().map(|k| latent_ws(sg, k, None, Mode::EVAL)).collect::<candle_core::Result<_>>()?,
        None => Vec::new(),
    };
    for leg in 0..points {
        let next = (leg + 1) % points;
        for s in 0..steps {
            let t = s as f64 / steps as f64;
            let x = match style {
                Some(sg) => {
                    let ws = ((&key_ws[leg] * (1.0 - t))? + (&key_ws[next] * t)?)?;
                    sg.synthesis(&ws, keys[0].noise.as_deref(), Mode::EVAL)?
                }
                None => {
                    let z = slerp_rows(&keys[leg].z, &keys[next].z, &vec![t; count])?;
                    g.forward(&Latent { z, ..keys[0].clone() }, Mode::EVAL)?
                }
            };
            frames.push(make_grid(&to_images(&x)?, cols));
        }
    }
    Ok(frames)
}

/// InfoGAN's latent-traversal figure: `rows` faces (z, labels and the other codes fixed per
/// row); across a row, code `code` takes each value: every category of the categorical code
/// (codes 0 .. info_cat), or `steps` values from −`range` to `range` for a continuous one
/// (codes info_cat ..; the paper shows −2 to 2, beyond the training range [−1, 1]).
pub fn traversal_figure(
    g: &dyn Generator,
    cfg: &crate::config::RunConfig,
    code: usize,
    (rows, steps): (usize, usize),
    range: f64,
    seed: u64,
    device: &Device,
) -> Result<RgbImage> {
    let codes = crate::models::info::InfoCodes { cat: cfg.model.info_cat, cont: cfg.model.info_cont };
    if codes.is_empty() {
        bail!("traverse: the {} model has no InfoGAN codes (model.info_cat and info_cont are 0)", cfg.model.arch);
    }
    let has_cat = usize::from(codes.cat > 0);
    if code >= has_cat + codes.cont {
        let mut desc = Vec::new();
        if codes.cat > 0 {
            desc.push(format!("0 the categorical code ({} categories)", codes.cat));
        }
        if codes.cont > 0 {
            desc.push(format!("{}..={} the continuous ones", has_cat, has_cat + codes.cont - 1));
        }
        bail!("--code {code}: the model has {} codes: {}", has_cat + codes.cont, desc.join(", "));
    }
    if rows == 0 || steps < 2 {
        bail!("traverse needs at least one row and two steps");
    }
    let base = fixed_latents(g, seed, TRAVERSE_TAG, rows, device)?;
    let c = base.codes.clone().expect("an InfoGAN samples codes");
    // Code 0 is the categorical code when there is one; the continuous codes follow.
    let values: Vec<(usize, f32)> = match (code, codes.cat) {
        (0, k) if k > 0 => (0..k).map(|j| (j, 1.0)).collect(),
        (i, k) => {
            let col = if k > 0 { k + i - 1 } else { i };
            (0..steps).map(|j| (col, (-range + 2.0 * range * j as f64 / (steps - 1) as f64) as f32)).collect()
        }
    };
    let mut columns = Vec::new();
    for &(col, v) in &values {
        let latent = Latent { codes: Some(codes.with_code(&c, col, v)?), ..base.clone() };
        columns.push(to_images(&g.forward(&latent, Mode::EVAL)?)?);
    }
    let images: Vec<RgbImage> = (0..rows).flat_map(|r| columns.iter().map(move |col| col[r].clone())).collect();
    Ok(make_grid(&images, values.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_and_slerp() {
        let b = parse_bands("coarse, fine,8-16").unwrap();
        assert_eq!(b.iter().map(|b| b.sides).collect::<Vec<_>>(), [(4, 8), (64, usize::MAX), (8, 16)]);
        assert!(parse_bands("tiny").unwrap_err().to_string().contains("coarse, middle, fine"));
        assert!(parse_bands("16-8").is_err());
        let (a, c) = ([1.0f32, 0.0], [0.0f32, 2.0]);
        assert_eq!(slerp(&a, &c, 0.0), vec![1.0, 0.0]);
        let mid = slerp(&a, &c, 0.5);
        // Halfway along the arc: equal parts, the norm between the two ends'.
        assert!((mid[0] as f64 - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((mid[1] as f64 - 2.0 * std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }
}
