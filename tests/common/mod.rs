//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The facegan binary, with its caches (folders prepared on the fly, reference features) in
/// the build's temporary folder rather than the user's cache folder; the Inception weights
/// are still found where the user keeps them.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_facegan"));
    c.env("FACEGAN_CACHE_DIR", cache_dir());
    if std::env::var_os("FACEGAN_INCEPTION").is_none() {
        c.env("FACEGAN_INCEPTION", facegan::metrics::inception::weights_path());
    }
    c
}

/// The tests' cache folder, in the build's temporary folder: the binary's (through
/// `FACEGAN_CACHE_DIR`) and, as `data.cache_dir`, that of trainings run in the test process.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("facegan-cache")
}

/// Runs the binary with `args`, returning (success, stdout + stderr).
pub fn run(args: &[&str]) -> (bool, String) {
    let out: Output = bin().args(args).output().expect("the facegan binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("panicked"), "facegan panicked:\n{text}");
    (out.status.success(), text)
}

/// The shared CelebA folder: `$FACEGAN_CELEBA_DIR`, else ../shared/... beside the repo.
/// Missing: a failure under CI=true, otherwise `None` (the caller skips, saying why).
pub fn celeba_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FACEGAN_CELEBA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/celeba/img_align_celeba"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("CI=true but the shared CelebA images are missing at {}", dir.display());
    }
    eprintln!("skipping: shared CelebA images not found at {} (set FACEGAN_CELEBA_DIR)", dir.display());
    None
}

/// A folder of symbolic links to the first `n` shared CelebA images.
pub fn celeba_subset(n: usize, into: &Path) -> Option<PathBuf> {
    let src = celeba_dir()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let dir = into.join("celeba-subset");
    std::fs::create_dir_all(&dir).unwrap();
    for f in files.iter().take(n) {
        std::os::unix::fs::symlink(f, dir.join(f.file_name().unwrap())).unwrap();
    }
    Some(dir)
}

/// `n` small synthetic face-like PNGs (a light disc on a coloured ground).
pub fn synthetic_faces(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(48, 56, |x, y| {
            let (dx, dy) = (x as i32 - 24, y as i32 - 28);
            if dx * dx + dy * dy < 15 * 15 {
                image::Rgb([220, 180 + (i % 5) as u8 * 10, 150])
            } else {
                image::Rgb([(i * 37 % 255) as u8, 60, 90])
            }
        });
        img.save(dir.join(format!("{i:04}.png"))).unwrap();
    }
}

/// Settings for a tiny, fast model.
pub const TINY: &[&str] =
    &["--preset", "dcgan-32", "--ngf", "8", "--ndf", "8", "--nz", "16", "--batch-size", "8", "--quiet"];

/// Flags of a tiny StyleGAN2 at 32x32 (`stylegan2-32` at widths 4, w 8, two mapping layers).
pub const TINY_STYLEGAN2: &[&str] = &[
    "--preset",
    "stylegan2-32",
    "--ngf",
    "4",
    "--ndf",
    "4",
    "--nz",
    "8",
    "--w-dim",
    "8",
    "--mapping-layers",
    "2",
    "--batch-size",
    "4",
];

/// Runs the binary with `args` and extra environment variables.
pub fn run_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (bool, String) {
    let mut cmd = bin();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out: Output = cmd.output().expect("the facegan binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("panicked"), "facegan panicked:\n{text}");
    (out.status.success(), text)
}

/// The FID Inception archive (`bash scripts/fetch-inception.sh`). Missing: a failure
/// under CI=true, otherwise `None` (the caller skips, saying why).
pub fn inception_weights() -> Option<PathBuf> {
    match facegan::metrics::inception::find_weights() {
        Ok(p) => Some(p),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true and {e:#}");
            }
            eprintln!("SKIPPED: {e:#}");
            None
        }
    }
}

/// Options of a quiet CPU training run of `cfg` in `run` through the library.
pub fn opts(
    cfg: &facegan::config::RunConfig,
    run: &Path,
    resume: bool,
    stop_after: Option<u64>,
) -> facegan::train::TrainOptions {
    facegan::train::TrainOptions {
        config: cfg.clone(),
        run_dir: run.to_path_buf(),
        resume,
        init_from: None,
        device: candle_core::Device::Cpu,
        progress: false,
        stop_after,
        overrides: Vec::new(),
    }
}

/// `n` synthetic faces written into `dir/faces` and prepared at `size` into `dir/faces.fgc`.
pub fn prepared(dir: &Path, n: usize, size: u32) -> PathBuf {
    use facegan::data::cache::{prepare, PrepareOptions};
    synthetic_faces(&dir.join("faces"), n);
    let out = dir.join("faces.fgc");
    let spec = facegan::data::preprocess::CropResize { size, crop: None };
    prepare(&dir.join("faces"), &out, &PrepareOptions { spec, strict: false, progress: false }).unwrap();
    out
}
