//! Images (N, 3, S, S) in [-1, 1] to RGB pictures: a grid, or one picture each.

use crate::data::preprocess::from_unit_range;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use image::{Rgb, RgbImage};
use std::path::Path;

/// Pixels between grid cells (and around the edge).
pub const GRID_PADDING: u32 = 2;

/// Splits a batch into one RGB picture per image.
pub fn to_images(x: &Tensor) -> Result<Vec<RgbImage>> {
    let (n, c, h, w) = x.dims4()?;
    if c != 3 {
        bail!("expected RGB images, got {c} channels");
    }
    let v = x.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let plane = h * w;
    Ok((0..n)
        .map(|i| {
            let base = i * 3 * plane;
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let o = base + y as usize * w + x as usize;
                Rgb([from_unit_range(v[o]), from_unit_range(v[o + plane]), from_unit_range(v[o + 2 * plane])])
            })
        })
        .collect())
}

/// Lays images out `columns` wide, with a dark padding between cells.
pub fn make_grid(images: &[RgbImage], columns: usize) -> RgbImage {
    let columns = columns.clamp(1, images.len().max(1));
    let rows = images.len().div_ceil(columns).max(1);
    let (w, h) = images.first().map(|i| i.dimensions()).unwrap_or((1, 1));
    let p = GRID_PADDING;
    let mut grid = RgbImage::from_pixel(columns as u32 * (w + p) + p, rows as u32 * (h + p) + p, Rgb([16, 16, 16]));
    for (k, img) in images.iter().enumerate() {
        let (r, c) = ((k / columns) as u32, (k % columns) as u32);
        image::imageops::replace(&mut grid, img, (p + c * (w + p)) as i64, (p + r * (h + p)) as i64);
    }
    grid
}

pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let tmp = crate::fsutil::temp_path_for(path);
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .and_then(|_| std::fs::rename(&tmp, path).map_err(image::ImageError::IoError))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_images_in_rows() {
        let x =
            Tensor::from_vec([vec![-1f32; 12], vec![1f32; 12], vec![0f32; 12]].concat(), (3, 3, 2, 2), &Device::Cpu)
                .unwrap();
        let imgs = to_images(&x).unwrap();
        assert_eq!(imgs[0].get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(imgs[1].get_pixel(1, 1).0, [255, 255, 255]);
        assert_eq!(imgs[2].get_pixel(1, 0).0, [128, 128, 128]);
        let g = make_grid(&imgs, 2);
        assert_eq!(g.dimensions(), (2 * 4 + 2, 2 * 4 + 2));
        assert_eq!(g.get_pixel(2, 2).0, [0, 0, 0]);
        assert_eq!(g.get_pixel(6, 2).0, [255, 255, 255]);
        assert_eq!(g.get_pixel(2, 6).0, [128, 128, 128]);
        assert_eq!(g.get_pixel(6, 6).0, [16, 16, 16]);
    }
}
