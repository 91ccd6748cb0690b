//! `facegan eval`: FID, KID, precision/recall and SWD of a model or an image folder.

use anyhow::{Context, Result};
use clap::Args;
use facegan::device::parse_device;
use facegan::metrics::{evaluate, parse_metrics, EvalOptions, Source};
use facegan::models::style::Truncation;
use facegan::sample::generate::{shipped_model_path, SHIPPED_MODEL};
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// Images under test: a checkpoint, a run folder (its newest checkpoint), an image
    /// folder or a prepared cache (.fgc). Default: the model the repository ships.
    fake: Option<PathBuf>,
    /// Reference images: an image folder (e.g. img_align_celeba) or a prepared cache.
    #[arg(long)]
    real: PathBuf,
    /// Comma-separated: fid, kid, pr (precision and recall), swd, or all.
    #[arg(long, default_value = "fid,kid,pr")]
    metrics: String,
    /// Images under test: faces generated from a checkpoint, or the first N of a folder.
    #[arg(long, default_value_t = 10_000)]
    num: usize,
    /// Reference images, the first N in path order (default: all).
    #[arg(long)]
    num_real: Option<usize>,
    /// Images per Inception pass (and per generator pass).
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// Latent seed of the generated faces (the faces `facegan generate --seed` makes) and
    /// of the metrics' random subsets and directions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Side the images are compared at (default: the checkpoint's, else the cache's, else 64).
    #[arg(long)]
    size: Option<u32>,
    /// Central square cut from folder images before resizing (as `prepare --crop`).
    #[arg(long)]
    crop: Option<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Neither read nor write the cached reference features.
    #[arg(long)]
    no_cache: bool,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Style families: truncation ψ of the generated faces (1: none); several, comma-separated,
    /// make a sweep: one evaluation each and a plot of FID and precision/recall against ψ.
    #[arg(long, value_delimiter = ',')]
    truncation: Vec<f64>,
    /// Truncate only the first N ws (the coarse styles).
    #[arg(long)]
    truncation_cutoff: Option<usize>,
    /// Where a sweep's plot goes.
    #[arg(long, default_value = "truncation-sweep.png")]
    sweep_plot: PathBuf,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let fake = match a.fake {
        Some(p) => Source::resolve(p)?,
        None => Source::Checkpoint(
            shipped_model_path()
                .with_context(|| format!("no model given and the shipped model models/{SHIPPED_MODEL} is not here"))?,
        ),
    };
    let real = Source::resolve(&a.real)?;
    if let Source::Checkpoint(p) = &real {
        anyhow::bail!("--real {}: the reference must be an image folder or a prepared cache", p.display());
    }
    if a.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    if let Some(dir) = a.json.as_ref().and_then(|j| j.parent()).filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            anyhow::bail!("cannot write --json: folder {} does not exist", dir.display());
        }
    }
    let mut opts = EvalOptions::new(fake, real);
    opts.metrics = parse_metrics(&a.metrics)?;
    opts.num = a.num;
    opts.num_real = a.num_real;
    opts.batch_size = a.batch_size;
    opts.seed = a.seed;
    opts.size = a.size;
    opts.crop = a.crop;
    opts.device = parse_device(&a.device)?;
    opts.use_cache = !a.no_cache;
    opts.progress = !a.quiet;
    if a.truncation_cutoff.is_some() && a.truncation.is_empty() {
        anyhow::bail!("--truncation-cutoff needs --truncation PSI");
    }
    if !a.truncation.is_empty() && !matches!(opts.fake, Source::Checkpoint(_)) {
        anyhow::bail!("--truncation applies to faces generated from a checkpoint, not to an image folder or cache");
    }
    let psis: Vec<Option<f64>> = match a.truncation.is_empty() {
        true => vec![None],
        false => a.truncation.iter().map(|&p| Some(p)).collect(),
    };
    let mut reports = Vec::new();
    for psi in &psis {
        opts.truncation = psi.map(|psi| Truncation { psi, cutoff: a.truncation_cutoff });
        let report = evaluate(&opts)?;
        if let Some(psi) = psi {
            println!("truncation ψ = {psi}");
        }
        print!("{}", report.table());
        reports.push((*psi, report));
    }
    if reports.len() > 1 {
        let points: Vec<_> = reports.iter().map(|(p, r)| (p.unwrap_or(1.0), r.fid, r.precision, r.recall)).collect();
        facegan::report::plot_truncation_sweep(&points, &a.sweep_plot)?;
        eprintln!("wrote {}", a.sweep_plot.display());
    }
    if let Some(path) = a.json {
        let text = match reports.len() {
            1 => reports[0].1.to_json(),
            _ => format!("[\n{}\n]", reports.iter().map(|(_, r)| r.to_json()).collect::<Vec<_>>().join(",\n")),
        };
        facegan::fsutil::write_atomic(&path, (text + "\n").as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
