//! `facegan eval`: FID, KID, precision/recall and SWD of a model or an image folder.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use facegan::data::attrs::expand_all;
use facegan::device::parse_device;
use facegan::metrics::attr::{
    attr_table, attribute_accuracy, evaluate_classifier, train_classifier, AttrScore, Classifier, ClassifierOptions,
    HeldOut,
};
use facegan::metrics::{evaluate, parse_metrics, EvalOptions, Source};
use facegan::models::style::Truncation;
use facegan::sample::generate::load_generator;
use facegan::sample::zoo::Zoo;
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// Images under test: a checkpoint, a run folder (its newest checkpoint), an image
    /// folder or a prepared cache (.fgc). Default: the zoo's default model.
    fake: Option<PathBuf>,
    /// A model of the zoo by name instead (`facegan models` lists them).
    #[arg(long, conflicts_with = "fake")]
    model: Option<String>,
    /// Reference images: an image folder (e.g. img_align_celeba) or a prepared cache (needed
    /// by every metric but attr).
    #[arg(long)]
    real: Option<PathBuf>,
    /// Comma-separated: fid, kid, pr (precision and recall), swd, all; attr (conditional
    /// models: how often faces show the attributes asked for, judged by --classifier).
    #[arg(long, default_value = "fid,kid,pr")]
    metrics: String,
    /// Images under test: faces generated from a checkpoint, or the first N of a folder.
    #[arg(long, default_value_t = 10_000)]
    num: usize,
    /// Reference images, the first N in path order (default: all).
    #[arg(long)]
    num_real: Option<usize>,
    /// Reference images: the last N in path order instead, the faces a run trained with
    /// `--held-out N` never saw.
    #[arg(long, conflicts_with = "num_real")]
    held_out: Option<usize>,
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
    /// Where the reference features are cached (default: $FACEGAN_CACHE_DIR, else
    /// $XDG_CACHE_HOME/facegan, else ~/.cache/facegan).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
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
    /// Metric attr: the attribute classifier (`facegan classifier train`).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Metric attr: faces generated per attribute and value.
    #[arg(long, default_value_t = 500)]
    attr_num: usize,
    /// Evaluate a checkpoint N times, with the faces of sample seeds seed, seed+1, ... (the
    /// same real faces each time), and print each metric's mean and standard deviation over
    /// them: how far a difference between two checkpoints is only the draw of their faces.
    #[arg(long, default_value_t = 1)]
    repeats: u64,
}

#[derive(Subcommand)]
pub enum ClassifierCommand {
    /// Train the attribute classifier on labelled faces and report its held-out accuracy.
    Train(ClassifierTrainArgs),
    /// Measure a classifier, or the discriminator of an acgan or sgan run, on held-out faces.
    Eval(ClassifierEvalArgs),
}

#[derive(Args)]
pub struct ClassifierEvalArgs {
    /// A classifier, or a full checkpoint (or run folder) of an acgan or sgan run.
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    data: String,
    #[arg(long)]
    attr_file: Option<String>,
    /// The last N labelled faces (by name) are measured: the ones the model was trained without.
    #[arg(long, default_value_t = 2000)]
    held_out: usize,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct ClassifierTrainArgs {
    /// Image folder (with CelebA's list_attr_celeba.txt in or beside it) or prepared cache.
    #[arg(long)]
    data: String,
    /// Attributes, comma-separated, or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    attrs: Vec<String>,
    #[arg(long)]
    attr_file: Option<String>,
    /// Side of the faces it reads (generated faces larger than this are pooled down to it).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Channels of its first convolution (doubling at each layer).
    #[arg(long, default_value_t = 32)]
    width: usize,
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Labelled faces kept out of training to measure its accuracy (the last ones by name).
    #[arg(long, default_value_t = 2000)]
    held_out: usize,
    /// One softmax over the combinations of the attributes (at most 6): the semi-supervised
    /// GAN's discriminator as a plain classifier.
    #[arg(long)]
    categorical: bool,
    /// Train on the labels of this share of the training images (as train.labelled_fraction).
    #[arg(long, default_value_t = 1.0)]
    labelled_fraction: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "classifier.safetensors")]
    out: PathBuf,
    /// Also write the held-out accuracies as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    quiet: bool,
}

pub fn classifier(c: ClassifierCommand) -> Result<()> {
    let a = match c {
        ClassifierCommand::Train(a) => a,
        ClassifierCommand::Eval(e) => {
            let device = parse_device(&e.device)?;
            let model = match e.model.is_dir() {
                true => facegan::train::checkpoint::latest(&e.model)?,
                false => e.model.clone(),
            };
            let c = Classifier::load(&model, &device)?;
            let result = evaluate_classifier(&c, &e.data, e.attr_file.as_deref(), e.held_out)?;
            print!("{}", result.table());
            if let Some(path) = e.json {
                write_held_out_json(&path, &result)?;
            }
            return Ok(());
        }
    };
    let attrs = expand_all(&a.attrs, a.attr_file.as_deref(), &PathBuf::from(&a.data))?;
    let opts = ClassifierOptions {
        data: a.data,
        attrs,
        attr_file: a.attr_file,
        image_size: a.size,
        width: a.width,
        steps: a.steps,
        batch_size: a.batch_size,
        lr: a.lr,
        held_out: a.held_out,
        categorical: a.categorical,
        labelled_fraction: a.labelled_fraction,
        seed: a.seed,
        out: a.out.clone(),
        device: parse_device(&a.device)?,
        progress: !a.quiet,
        cache_dir: None,
    };
    let result = train_classifier(&opts)?;
    print!("{}", result.table());
    if let Some(path) = a.json {
        write_held_out_json(&path, &result)?;
    }
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn write_held_out_json(path: &std::path::Path, r: &HeldOut) -> Result<()> {
    let json = serde_json::json!({
        "attributes": r.names, "accuracy": r.accuracy, "balanced": r.balanced,
        "majority": r.majority, "held_out": r.count,
    });
    facegan::fsutil::write_atomic(path, format!("{json:#}\n").as_bytes())
}

/// `eval --metrics ...,attr`: the attribute accuracy of a conditional checkpoint.
fn attr_metric(a: &EvalArgs, fake: &Source) -> Result<Vec<AttrScore>> {
    let Source::Checkpoint(path) = fake else {
        anyhow::bail!("metric attr needs a conditional model's checkpoint, not an image folder or cache");
    };
    let classifier = a
        .classifier
        .as_ref()
        .context("metric attr needs --classifier PATH (make one with `facegan classifier train`)")?;
    if a.attr_num == 0 {
        anyhow::bail!("--attr-num must be at least 1");
    }
    let device = parse_device(&a.device)?;
    let c = Classifier::load(classifier, &device)?;
    let (g, cfg) = load_generator(path, &device)?;
    attribute_accuracy(g.as_ref(), &cfg, &c, a.attr_num, a.seed, &device)
}

pub fn run(a: EvalArgs) -> Result<()> {
    let fake = match a.fake.clone() {
        Some(p) => Source::resolve(p)?,
        None => Source::Checkpoint(Zoo::find()?.model_path(a.model.as_deref())?),
    };
    let wants_attr = a.metrics.split(',').any(|m| m.trim() == "attr");
    let others: Vec<&str> = a.metrics.split(',').map(str::trim).filter(|m| *m != "attr" && !m.is_empty()).collect();
    if a.repeats == 0 {
        anyhow::bail!("--repeats must be at least 1");
    }
    if a.repeats > 1 && !matches!(fake, Source::Checkpoint(_)) {
        anyhow::bail!(
            "--repeats draws new faces from a generator: it needs a checkpoint or a zoo model, not an image folder or cache"
        );
    }
    if a.repeats > 1 && (a.truncation.len() > 1 || wants_attr) {
        anyhow::bail!(
            "--repeats cannot be combined with a truncation sweep (several --truncation values) or metric attr"
        );
    }
    let attr_scores = match wants_attr {
        true => Some(attr_metric(&a, &fake)?),
        false => None,
    };
    if let Some(scores) = &attr_scores {
        print!("{}", attr_table(scores));
        if others.is_empty() {
            if let Some(path) = &a.json {
                let json = serde_json::json!({ "attr": scores });
                facegan::fsutil::write_atomic(path, format!("{json:#}\n").as_bytes())?;
            }
            return Ok(());
        }
    }
    let real = a.real.as_ref().context("--real IMAGES is needed for fid, kid, pr and swd")?;
    let real = Source::resolve(real)?;
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
    opts.metrics = parse_metrics(&others.join(","))?;
    opts.num = a.num;
    opts.num_real = a.num_real.or(a.held_out);
    opts.real_last = a.held_out.is_some();
    opts.batch_size = a.batch_size;
    opts.seed = a.seed;
    opts.size = a.size;
    opts.crop = a.crop;
    opts.device = parse_device(&a.device)?;
    opts.use_cache = !a.no_cache;
    opts.cache_dir = a.cache_dir.clone();
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
        for seed in a.seed..a.seed + a.repeats {
            opts.seed = seed;
            let report = evaluate(&opts)?;
            if let Some(psi) = psi {
                println!("truncation ψ = {psi}");
            }
            if a.repeats > 1 {
                println!("sample seed {seed}");
            }
            print!("{}", report.table());
            reports.push((*psi, report));
        }
    }
    if a.repeats > 1 {
        let all: Vec<_> = reports.iter().map(|(_, r)| r.clone()).collect();
        let spreads = facegan::metrics::spread_over(&all);
        println!(
            "over {} draws of generated faces (sample seeds {} to {}):",
            a.repeats,
            a.seed,
            a.seed + a.repeats - 1
        );
        for s in &spreads {
            let values: Vec<String> = s.values.iter().map(|v| format!("{v:.4}")).collect();
            println!("  {:<16} {:.4} ± {:.4} (sd)   [{}]", s.metric, s.mean, s.sd, values.join(", "));
        }
        if let Some(path) = &a.json {
            let json = serde_json::json!({ "repeats": all, "spread": spreads });
            facegan::fsutil::write_atomic(path, format!("{json:#}\n").as_bytes())?;
            eprintln!("wrote {}", path.display());
        }
        return Ok(());
    }
    if reports.len() > 1 {
        let points: Vec<_> = reports.iter().map(|(p, r)| (p.unwrap_or(1.0), r.fid, r.precision, r.recall)).collect();
        facegan::report::plot_truncation_sweep(&points, &a.sweep_plot)?;
        eprintln!("wrote {}", a.sweep_plot.display());
    }
    if let Some(path) = a.json {
        let text = match reports.len() {
            1 => match &attr_scores {
                Some(scores) => {
                    format!("{{\"metrics\": {}, \"attr\": {}}}", reports[0].1.to_json(), serde_json::to_string(scores)?)
                }
                None => reports[0].1.to_json(),
            },
            _ => format!("[\n{}\n]", reports.iter().map(|(_, r)| r.to_json()).collect::<Vec<_>>().join(",\n")),
        };
        facegan::fsutil::write_atomic(&path, (text + "\n").as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
