//! Writes the image folders docs/metrics.md measures on: `take` images of `src` (path
//! order, after skipping `skip`), centre-cropped and resized like training data, as
//! PNGs, so that facegan and the PyTorch reference read exactly the same pixels; with
//! --blur, blurred by a 5x5 binomial filter.
//!
//! cargo run --release --example fid_folders -- --src DIR --out DIR --skip K --take N \
//!     [--size 64] [--blur]
//!
//! The measurements themselves: `facegan eval` and `facegan bench --only inception`.

use anyhow::Result;
use clap::Parser;
use facegan::data::preprocess::{load_face, CropResize};
use facegan::data::scan::scan_images;
use rayon::prelude::*;
use std::path::PathBuf;

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    src: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    skip: usize,
    #[arg(long)]
    take: usize,
    #[arg(long, default_value_t = 64)]
    size: u32,
    #[arg(long)]
    blur: bool,
}

fn blur(img: &image::RgbImage) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let t = [1.0f32, 4.0, 6.0, 4.0, 1.0];
    image::RgbImage::from_fn(w, h, |x, y| {
        let mut acc = [0f32; 3];
        let mut wsum = 0.0;
        for (j, ty) in t.iter().enumerate() {
            for (i, tx) in t.iter().enumerate() {
                let xx = (x as i64 + i as i64 - 2).clamp(0, w as i64 - 1) as u32;
                let yy = (y as i64 + j as i64 - 2).clamp(0, h as i64 - 1) as u32;
                let p = img.get_pixel(xx, yy).0;
                for c in 0..3 {
                    acc[c] += tx * ty * p[c] as f32;
                }
                wsum += tx * ty;
            }
        }
        image::Rgb(acc.map(|v| (v / wsum).round().clamp(0.0, 255.0) as u8))
    })
}

fn main() -> Result<()> {
    let Cli { src, out, skip, take, size, blur: do_blur } = Cli::parse();
    let files = scan_images(&src)?;
    let files = &files[skip.min(files.len())..(skip + take).min(files.len())];
    std::fs::create_dir_all(&out)?;
    let spec = CropResize { size, crop: None };
    files.par_iter().try_for_each(|f| -> Result<()> {
        let mut im = load_face(f, spec)?;
        if do_blur {
            im = blur(&im);
        }
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        im.save(out.join(format!("{name}.png")))?;
        Ok(())
    })?;
    eprintln!("wrote {} images to {}", files.len(), out.display());
    Ok(())
}
