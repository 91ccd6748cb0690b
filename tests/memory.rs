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

/// Peak resident memory (VmHWM) of a running child, polled until it exits: the last
/// reading is within a poll of its peak.
#[cfg(target_os = "linux")]
fn peak_rss_mb_of(mut child: std::process::Child) -> (std::process::ExitStatus, f64) {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0f64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                let kb: f64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap();
                peak = peak.max(kb / 1e3);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `facegan prepare` streams: 3,000 faces at 128x128 make a 147 MB cache, and the process
/// never holds more than a chunk of them (it held them all before: 147 MB and more).
#[cfg(target_os = "linux")]
#[test]
fn prepare_streams_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let faces = dir.path().join("faces");
    std::fs::create_dir(&faces).unwrap();
    let n = 3000;
    for i in 0..n {
        image::RgbImage::from_fn(72, 72, |x, y| image::Rgb([(x * 3) as u8, (y * 3) as u8, (i % 251) as u8]))
            .save(faces.join(format!("{i:05}.png")))
            .unwrap();
    }
    let out = dir.path().join("c.fgc");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_facegan"))
        .args(["prepare", "--data", faces.to_str().unwrap(), "--size", "128", "--out", out.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (status, peak) = peak_rss_mb_of(child);
    assert!(status.success());
    let ds = facegan::data::Dataset::open(&out).unwrap();
    assert_eq!((ds.len(), ds.size()), (n, 128));
    assert_eq!(ds.header.names[n - 1], format!("{:05}.png", n - 1));
    assert!(ds.image(n - 1).chunks(3).all(|p| p[2] == ((n - 1) % 251) as u8), "the last face is the last file's");
    let cache_mb = (n * 128 * 128 * 3) as f64 / 1e6;
    eprintln!("prepare: peak RSS {peak:.1} MB for a {cache_mb:.0} MB cache");
    assert!(peak < 90.0, "prepare peaked at {peak:.1} MB of RSS for a {cache_mb:.0} MB cache");
}
