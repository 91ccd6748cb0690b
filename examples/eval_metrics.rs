//! Runs facegan's evaluation from the command line until `facegan eval` exists, and
//! prepares the image folders docs/metrics.md measures on.
//!
//! cargo run --release --example eval_metrics -- eval --fake DIR|CKPT|FGC --real DIR|FGC \
//!     [--metrics fid,kid,pr,swd] [--num N] [--num-real N] [--batch-size B] [--json FILE]
//! cargo run --release --example eval_metrics -- prepare --src DIR --out DIR --skip K \
//!     --take N [--size 64] [--blur]
//! cargo run --release --example eval_metrics -- bench [--images N] [--batch-size B]

use anyhow::Result;
use clap::{Parser, Subcommand};
use facegan::data::preprocess::{load_face, CropResize};
use facegan::data::scan::scan_images;
use facegan::metrics::inception::Inception;
use facegan::metrics::{evaluate, extract_features, parse_metrics, EvalOptions, ImageSet, Source};
use rayon::prelude::*;
use std::path::PathBuf;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Eval {
        #[arg(long)]
        fake: PathBuf,
        #[arg(long)]
        real: PathBuf,
        #[arg(long, default_value = "fid,kid,pr")]
        metrics: String,
        #[arg(long, default_value_t = 10_000)]
        num: usize,
        #[arg(long)]
        num_real: Option<usize>,
        #[arg(long, default_value_t = 50)]
        batch_size: usize,
        #[arg(long)]
        size: Option<u32>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long)]
        no_cache: bool,
    },
    /// Writes `take` images of `src` (path order, after skipping `skip`), centre-cropped
    /// and resized like training data, as PNGs; with --blur, blurred by a 5x5 binomial.
    Prepare {
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
    },
    /// Inception throughput on synthetic 64x64 images.
    Bench {
        #[arg(long, default_value_t = 100)]
        images: usize,
        #[arg(long, default_value_t = 50)]
        batch_size: usize,
    },
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
    match Cli::parse().cmd {
        Cmd::Eval { fake, real, metrics, num, num_real, batch_size, size, seed, json, no_cache } => {
            let mut opts = EvalOptions::new(Source::from_path(fake), Source::from_path(real));
            opts.metrics = parse_metrics(&metrics)?;
            opts.num = num;
            opts.num_real = num_real;
            opts.batch_size = batch_size;
            opts.size = size;
            opts.seed = seed;
            opts.use_cache = !no_cache;
            opts.progress = true;
            let r = evaluate(&opts)?;
            print!("{r}");
            eprintln!("timings: {:?}", r.timings);
            if let Some(p) = json {
                std::fs::write(p, r.to_json())?;
            }
        }
        Cmd::Prepare { src, out, skip, take, size, blur: do_blur } => {
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
        }
        Cmd::Bench { images, batch_size } => {
            let net = Inception::load_default(&candle_core::Device::Cpu)?;
            let s = 64;
            let mut set = ImageSet { size: s, pixels: Vec::new() };
            for i in 0..images {
                set.pixels.extend((0..s * s * 3).map(|p| ((p * 7 + i * 13) % 256) as u8));
            }
            // Warm-up batch.
            let warm = ImageSet { size: s, pixels: set.pixels[..s * s * 3 * batch_size.min(images)].to_vec() };
            extract_features(&net, &warm, batch_size, false)?;
            let t = std::time::Instant::now();
            extract_features(&net, &set, batch_size, false)?;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{images} images, batch {batch_size}, {} threads: {:.2} s, {:.2} images/s",
                rayon::current_num_threads(),
                secs,
                images as f64 / secs
            );
        }
    }
    Ok(())
}
