//! With second-order gradients on, every gradient carries its graph; anything that
//! keeps one (optimizer state, EMA weights, logs) would grow memory step after step.
//! This trains for many steps and checks that the resident set stays flat.

use candle_core::Device;
use facegan::config::RunConfig;
use facegan::data::loader::images_to_tensor;
use facegan::train::trainer::Session;

fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / 1e6
}

#[test]
fn memory_stays_flat_over_many_steps() {
    facegan::enable_second_order_gradients();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..16 {
        image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, (i * 16) as u8]))
            .save(dir.path().join(format!("{i}.png")))
            .unwrap();
    }
    let cache = dir.path().join("c.fgc");
    let opts = facegan::data::PrepareOptions {
        spec: facegan::data::preprocess::CropResize { size: 32, crop: None },
        strict: false,
        progress: false,
    };
    facegan::data::prepare(dir.path(), &cache, &opts).unwrap();
    let ds = facegan::data::Dataset::open(&cache).unwrap();
    let real = images_to_tensor(&ds, &(0..16).collect::<Vec<_>>(), &[false; 16], &Device::Cpu).unwrap();

    let mut cfg = RunConfig::preset("dcgan-32").unwrap();
    cfg.model.ngf = 32;
    cfg.model.ndf = 32;
    let mut s = Session::new(&cfg, &Device::Cpu).unwrap();
    for _ in 0..10 {
        s.train_step(std::slice::from_ref(&real)).unwrap();
    }
    let warm = rss_mb();
    for _ in 0..40 {
        s.train_step(std::slice::from_ref(&real)).unwrap();
    }
    let after = rss_mb();
    // One step's graph here is tens of MB: keeping graphs alive would add far more.
    assert!(after - warm < 25.0, "RSS grew from {warm:.1} MB to {after:.1} MB over 40 steps");
}
