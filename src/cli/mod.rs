//! The command line: subcommands and how their flags map onto the library.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use facegan::bench::{run_bench, BenchOptions};
use facegan::config::RunConfig;
use facegan::data::cache::{report_skipped, Dataset};
use facegan::data::preprocess::CropResize;
use facegan::data::{prepare, PrepareOptions};
use facegan::device::parse_device;
use facegan::fsutil;
use facegan::metrics::ppl::{perceptual_path_length, PathSpace, PplOptions};
use facegan::models::style::Truncation;
use facegan::presets::PRESETS;
use facegan::report::{learning_table, plot_learning_curves, LearningCurve};
use facegan::sample::compare::{compare, CompareOptions};
use facegan::sample::figures;
use facegan::sample::generate::{
    attr_column, attribute_grid, generate, load_generator, parse_attr_values, write_faces,
};
use facegan::sample::grid::save_png;
use facegan::sample::zoo::Zoo;
use facegan::train::{checkpoint, train, TrainOptions};
use std::path::PathBuf;
use train_args::TrainArgs;

mod eval;
mod train_args;

#[derive(Parser)]
#[command(name = "facegan", version, about = "Train GANs on face photographs and generate new faces")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Decode, centre-crop and resize an image folder into a packed cache for training
    /// (with the labels of list_attr_celeba.txt when it is in or beside the folder).
    Prepare(PrepareArgs),
    /// Train a GAN (or resume a run).
    Train(Box<TrainArgs>),
    /// Make faces with a checkpoint or a shipped model (by default, the zoo's default).
    Generate(GenerateArgs),
    /// The models the repository ships in models/ (`generate --model NAME`): size, preset,
    /// images seen, CPU-hours and FID.
    Models,
    /// Style families: the style-mixing figure (faces with coarse, middle or fine styles
    /// taken from other faces).
    Mix(MixArgs),
    /// Style families: the stochastic-variation figure (one w, several noise draws, and the
    /// per-pixel standard deviation).
    Noise(NoiseArgs),
    /// A GIF of latent walks (slerp in Z; lerp in W for style families), for every family.
    Interpolate(InterpolateArgs),
    /// InfoGAN: the latent-traversal figure (rows of faces, one code varied across each row).
    Traverse(TraverseArgs),
    /// Perceptual path length with the FID Inception network as the distance
    /// ("PPL-Inception": not comparable with the papers' VGG16/LPIPS values).
    Ppl(PplArgs),
    /// Rebuild progress.gif, losses.png, metrics.png and report.html of a run.
    Report {
        /// The run folder.
        run: PathBuf,
    },
    /// Write the EMA generator of a checkpoint alone, for sharing (f16 with --half); or,
    /// with --continuation, what a run on another machine needs to go on (`train --init-from`).
    Export {
        /// The checkpoint. Several (e.g. `--checkpoint runs/x/checkpoints/step-001*`): the
        /// mean of their EMA generators, a longer average than the run's EMA; the rest (G, D,
        /// step) comes from the newest.
        #[arg(long, num_args = 1.., required = true)]
        checkpoint: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        half: bool,
        /// G, D and the EMA generator in f16 with the step and settings, no optimizer moments.
        #[arg(long, conflicts_with = "half")]
        continuation: bool,
    },
    /// One picture with a captioned sample grid from each run or checkpoint, all from the
    /// same latents (e.g. the loss presets after the same budget).
    Compare(CompareArgs),
    /// Measure generated faces against real ones: FID, KID, precision/recall, SWD; and for
    /// conditional models, attribute accuracy (`attr`, with --classifier).
    Eval(Box<eval::EvalArgs>),
    /// The attribute classifier that judges conditional models (`eval --metrics attr`).
    #[command(subcommand)]
    Classifier(eval::ClassifierCommand),
    /// Print what a checkpoint or cache holds.
    Inspect { path: PathBuf },
    /// List the network families and the presets, or print one preset's whole configuration.
    Presets {
        /// Print this preset's configuration as TOML (the starting point of `--config`).
        #[arg(long)]
        show: Option<String>,
    },
    /// Time training on the CPU: dcgan-64's layer operations (beside candle's own), a 2048³
    /// matmul, G and D passes, the dcgan-64, sngan-64 and sagan-64 training steps and a
    /// WGAN-GP critic step.
    Bench(BenchArgs),
}

#[derive(Args)]
pub struct PrepareArgs {
    /// Image folder, scanned recursively for jpg/jpeg/png.
    #[arg(long)]
    data: PathBuf,
    /// Output side: 32, 64, 128, ...
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Side of the central square cut before resizing (default: the largest square).
    #[arg(long)]
    crop: Option<u32>,
    /// Cache file to write.
    #[arg(long)]
    out: PathBuf,
    /// Stop at the first unusable image instead of skipping it.
    #[arg(long)]
    strict: bool,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelChoice,
    /// A PNG grid, or a folder (ending in /) for one PNG per face.
    #[arg(long, default_value = "faces.png")]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 64)]
    count: usize,
    #[arg(long, default_value_t = 8)]
    columns: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Style families: truncation ψ in W, from 0 (the average face) to 1 (none).
    #[arg(long)]
    truncation: Option<f64>,
    /// Truncate only the first N ws (the coarse styles); default: all.
    #[arg(long)]
    truncation_cutoff: Option<usize>,
    /// Conditional models: attributes to fix, NAME=1|0,... (e.g. Smiling=1,Male=0); the
    /// others are drawn from the training data's frequencies.
    #[arg(long)]
    attr: Option<String>,
    /// Conditional models: for each attribute listed, a row of --count faces with it off and
    /// a row with it on, everything else fixed.
    #[arg(long, value_delimiter = ',')]
    attr_grid: Vec<String>,
}

#[derive(Args)]
pub struct MixArgs {
    /// A style family's generator: --checkpoint or a zoo --model such as
    /// stylegan2-64-ada-celeba.
    #[command(flatten)]
    model: ModelChoice,
    #[arg(long, default_value = "mix.png")]
    out: PathBuf,
    /// Source faces A per style band (rows).
    #[arg(long, default_value_t = 3)]
    rows: usize,
    /// Source faces B (columns) whose styles are taken.
    #[arg(long, default_value_t = 4)]
    cols: usize,
    /// Style bands swapped, one block of rows each: coarse (4-8), middle (16-32), fine (64
    /// and up) or LO-HI feature-map sides.
    #[arg(long, default_value = "coarse,middle,fine")]
    styles: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    truncation: Option<f64>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct NoiseArgs {
    /// A style family's generator: --checkpoint or a zoo --model such as
    /// stylegan2-64-ada-celeba.
    #[command(flatten)]
    model: ModelChoice,
    #[arg(long, default_value = "noise.png")]
    out: PathBuf,
    /// Faces (one w each).
    #[arg(long, default_value_t = 3)]
    rows: usize,
    /// Noise draws shown per face.
    #[arg(long, default_value_t = 4)]
    shown: usize,
    /// Noise draws the standard deviation is taken over.
    #[arg(long, default_value_t = 32)]
    draws: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct InterpolateArgs {
    #[command(flatten)]
    model: ModelChoice,
    #[arg(long, default_value = "walk.gif")]
    out: PathBuf,
    /// Faces walking in parallel.
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// Key latents of each walk (it returns to the first).
    #[arg(long, default_value_t = 4)]
    points: usize,
    /// Frames between two key latents.
    #[arg(long, default_value_t = 12)]
    frames: usize,
    /// Milliseconds per frame.
    #[arg(long, default_value_t = 80)]
    delay: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct TraverseArgs {
    /// Checkpoint of an InfoGAN (full or generator-only).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The code varied: 0 the categorical code (all its categories), then the continuous ones.
    #[arg(long)]
    code: usize,
    #[arg(long, default_value = "traverse.png")]
    out: PathBuf,
    /// Faces (rows), each with its own z and other codes.
    #[arg(long, default_value_t = 8)]
    rows: usize,
    /// Values of a continuous code across a row.
    #[arg(long, default_value_t = 7)]
    steps: usize,
    /// Continuous codes go from -RANGE to RANGE (trained on -1..1; the paper shows 2).
    #[arg(long, default_value_t = 2.0)]
    range: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct PplArgs {
    #[command(flatten)]
    model: ModelChoice,
    /// Path space: w (lerp in W, style families) or z (slerp in Z, every family).
    #[arg(long, default_value = "w")]
    space: String,
    /// Samples (the paper uses 100,000).
    #[arg(long, default_value_t = 1000)]
    num: usize,
    #[arg(long, default_value_t = 1e-4)]
    epsilon: f64,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct CompareArgs {
    /// Run folders (their newest checkpoint) or checkpoint files.
    #[arg(required = true)]
    models: Vec<PathBuf>,
    #[arg(long, default_value = "compare.png")]
    out: PathBuf,
    /// Captions, comma-separated, one per model (default: folder name and step).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Faces per model.
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// Faces per row within a model's grid.
    #[arg(long, default_value_t = 4)]
    columns: usize,
    /// Models per row of the picture.
    #[arg(long, default_value_t = 5)]
    per_row: usize,
    /// Also plot the runs' learning curves (FID from each run's metrics.jsonl against real
    /// images seen and against training CPU-hours) into this PNG.
    #[arg(long)]
    curves: Option<PathBuf>,
    /// Also write the runs' evaluations as a Markdown table into this file and print it (per
    /// run: preset and parameters; per evaluation: step, real images, CPU-hours, CPU-s per
    /// image, FID and whatever else it measured).
    #[arg(long)]
    table: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Timed iterations per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Untimed iterations before them.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Also write the numbers as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Comma-separated name prefixes of the measurements to take (default: all), e.g.
    /// `conv2d,candle_conv2d`, `train_step` or `matmul,g_`. Names: matmul_2048, g_fwd_eval,
    /// g_fwd_train, d_fwd_bwd, train_step, sngan64_train_step, sagan64_train_step,
    /// wgan_gp_critic_step, conv2d_fwd[_bwd], conv_transpose2d_fwd[_bwd] (each also with a
    /// candle_ prefix), layer_g1_fwd_bwd … layer_d5_fwd_bwd, inception.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Prepare(a) => {
            let opts =
                PrepareOptions { spec: CropResize { size: a.size, crop: a.crop }, strict: a.strict, progress: true };
            if !(8..=1024).contains(&a.size) {
                bail!("--size {} is out of range (8 to 1024)", a.size);
            }
            if let Some(dir) = a.out.parent() {
                if !dir.as_os_str().is_empty() && !dir.is_dir() {
                    bail!("cannot write {}: folder {} does not exist", a.out.display(), dir.display());
                }
            }
            let report = prepare(&a.data, &a.out, &opts)?;
            report_skipped(&report);
        }
        Command::Train(a) => {
            let device = parse_device(&a.device)?;
            let ((config, overrides), run_dir, resume) = match &a.resume {
                Some(run) => {
                    let ck = checkpoint::read_latest(run, &candle_core::Device::Cpu)?;
                    (a.config_with_overrides(ck.config)?, run.clone(), true)
                }
                None => {
                    let out = a.out.clone().context("give --out runs/NAME for a new run, or --resume runs/NAME")?;
                    let base = match &a.init_from {
                        // The continuation's settings, with a learning-rate warm-up for the
                        // restarted optimizer moments unless one is given.
                        Some(file) => {
                            let mut c = checkpoint::read(file, &candle_core::Device::Cpu)?.config;
                            c.train.lr_warmup = 100;
                            c
                        }
                        None => RunConfig::preset(&a.preset)?,
                    };
                    (a.config_with_overrides(base)?, out, false)
                }
            };
            if config.data.path.is_empty() {
                bail!("no training data: give --data FOLDER_OR_CACHE (for example ../shared/data/celeba/img_align_celeba)");
            }
            if !resume {
                std::fs::create_dir_all(&run_dir)
                    .with_context(|| format!("cannot create run folder {}", run_dir.display()))?;
            }
            let outcome = train(TrainOptions {
                config,
                run_dir: run_dir.clone(),
                resume,
                init_from: a.init_from.clone(),
                device,
                progress: !a.quiet,
                stop_after: None,
                overrides,
            })?;
            eprintln!(
                "{} at step {}; checkpoint {}; samples in {}",
                if outcome.interrupted { "stopped" } else { "finished" },
                outcome.step,
                outcome.checkpoint.display(),
                run_dir.join("samples").display()
            );
        }
        Command::Generate(a) => {
            let device = parse_device(&a.device)?;
            let path = a.model.path()?;
            let (g, cfg) = load_generator(&path, &device)?;
            if a.truncation_cutoff.is_some() && a.truncation.is_none() {
                bail!("--truncation-cutoff needs --truncation PSI");
            }
            let truncation = a.truncation.map(|psi| Truncation { psi, cutoff: a.truncation_cutoff });
            let fixed = parse_attr_values(a.attr.as_deref().unwrap_or(""), &cfg)?;
            let (x, columns) = if a.attr_grid.is_empty() {
                (generate(g.as_ref(), &cfg, a.count, a.seed, &device, truncation, &fixed)?, a.columns)
            } else {
                if truncation.is_some() {
                    bail!("--attr-grid does not take --truncation");
                }
                let cols = a.attr_grid.iter().map(|n| attr_column(n, &cfg)).collect::<Result<Vec<_>>>()?;
                (attribute_grid(g.as_ref(), &cfg, &cols, a.count, a.seed, &fixed, &device)?, a.count)
            };
            let written = write_faces(&x, &a.out, columns)?;
            eprintln!(
                "wrote {} ({} faces from {})",
                if written.len() == 1 {
                    written[0].display().to_string()
                } else {
                    format!("{} files in {}", written.len(), a.out.display())
                },
                x.dim(0)?,
                path.display()
            );
        }
        Command::Mix(a) => {
            let device = parse_device(&a.device)?;
            let (g, cfg) = load_generator(&a.model.path()?, &device)?;
            let bands = figures::parse_bands(&a.styles)?;
            let truncation = a.truncation.map(|psi| Truncation { psi, cutoff: None });
            let img = figures::mixing_figure(
                g.as_ref(),
                &cfg.model.arch,
                (a.rows, a.cols),
                &bands,
                a.seed,
                truncation,
                &device,
            )?;
            save_png(&img, &a.out)?;
            eprintln!("wrote {} (styles {} of {} faces into {} faces)", a.out.display(), a.styles, a.cols, a.rows);
        }
        Command::Noise(a) => {
            let device = parse_device(&a.device)?;
            let (g, cfg) = load_generator(&a.model.path()?, &device)?;
            let img = figures::noise_figure(g.as_ref(), &cfg.model.arch, a.rows, (a.shown, a.draws), a.seed, &device)?;
            save_png(&img, &a.out)?;
            eprintln!("wrote {} ({} faces, standard deviation over {} noise draws)", a.out.display(), a.rows, a.draws);
        }
        Command::Interpolate(a) => {
            let device = parse_device(&a.device)?;
            let path = a.model.path()?;
            let (g, _) = load_generator(&path, &device)?;
            let frames = figures::interpolation_frames(g.as_ref(), (a.count, a.points, a.frames), a.seed, &device)?;
            let n = frames.len();
            facegan::report::encode_gif(frames.into_iter().map(|f| (f, a.delay)).collect(), &a.out)?;
            eprintln!("wrote {} ({n} frames of {} faces)", a.out.display(), a.count);
        }
        Command::Traverse(a) => {
            let device = parse_device(&a.device)?;
            let (g, cfg) = load_generator(&a.checkpoint, &device)?;
            let img = figures::traversal_figure(g.as_ref(), &cfg, a.code, (a.rows, a.steps), a.range, a.seed, &device)?;
            save_png(&img, &a.out)?;
            eprintln!("wrote {} (code {} across {} faces)", a.out.display(), a.code, a.rows);
        }
        Command::Ppl(a) => {
            let device = parse_device(&a.device)?;
            let path = a.model.path()?;
            let space = match a.space.as_str() {
                "w" => PathSpace::W,
                "z" => PathSpace::Z,
                other => bail!("--space '{other}' is unknown; valid: w (style families), z"),
            };
            let (g, cfg) = load_generator(&path, &device)?;
            let net = facegan::metrics::inception::Inception::load_default(&device)?;
            let opts = PplOptions { space, num: a.num, epsilon: a.epsilon, batch_size: a.batch_size, seed: a.seed };
            let r = perceptual_path_length(g.as_ref(), &cfg.model.arch, &net, &opts, &device)?;
            println!(
                "PPL-Inception ({} path, epsilon {}, {} samples, {} kept between the 1st and 99th percentiles): {:.2}",
                r.space, r.epsilon, r.samples, r.kept, r.value
            );
            if let Some(json) = a.json {
                facegan::fsutil::write_atomic(&json, (serde_json::to_string_pretty(&r)? + "\n").as_bytes())?;
            }
        }
        Command::Report { run } => {
            if !run.is_dir() {
                bail!("{} is not a run folder", run.display());
            }
            facegan::report::write_report(&run)?;
            eprintln!("wrote {} and {}", run.join("progress.gif").display(), run.join("losses.png").display());
        }
        Command::Export { checkpoint: cks, out, half, continuation } => {
            let device = candle_core::Device::Cpu;
            let mut by_step = Vec::new();
            for p in cks {
                let step = checkpoint::read_metadata(&p)?.get("step").and_then(|s| s.parse::<u64>().ok());
                by_step.push((step.with_context(|| format!("{}: no step in its metadata", p.display()))?, p));
            }
            by_step.sort();
            let (_, ck) = by_step.pop().expect("clap requires a checkpoint");
            let c = checkpoint::read(&ck, &device)?;
            let mut s = facegan::train::trainer::Session::from_checkpoint(&c, &c.config, &device)?;
            drop(c);
            if !by_step.is_empty() {
                s.average_ema_with(&by_step.into_iter().map(|(_, p)| p).collect::<Vec<_>>())?;
                eprintln!("averaged the EMA generators of steps {:?}", s.ema_average_of);
            }
            if continuation {
                let curve = facegan::train::eval::curve_up_to(&ck, s.step)?;
                s.save_continuation(&out, &curve)?;
                let mb = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
                let carried = match curve.len() {
                    0 => "no learning curve: the checkpoint is not in a run folder's checkpoints/ with a metrics.jsonl"
                        .into(),
                    n => format!("a learning curve of {n} evaluations"),
                };
                eprintln!(
                    "wrote {} ({mb:.1} MB: G, D and EMA generator at step {}, {} images seen, {carried}); go on with `facegan train --init-from {} --out RUN --steps N`",
                    out.display(),
                    s.step,
                    s.images_seen(),
                    out.display()
                );
            } else {
                s.save_generator(&out, half)?;
                eprintln!("wrote {} (EMA generator at step {})", out.display(), s.step);
            }
        }
        Command::Eval(a) => eval::run(*a)?,
        Command::Classifier(c) => eval::classifier(c)?,
        Command::Compare(a) => {
            let opts = CompareOptions {
                models: a.models,
                labels: a.labels,
                count: a.count,
                columns: a.columns,
                panels_per_row: a.per_row,
                seed: a.seed,
                device: parse_device(&a.device)?,
            };
            let n = opts.models.len();
            // The curves' files are read first: a run without them fails before any generating.
            let curves = match a.curves.is_some() || a.table.is_some() {
                true => (opts.models.iter().enumerate())
                    .map(|(i, m)| LearningCurve::of_run(m, opts.labels.get(i).map(String::as_str)))
                    .collect::<Result<Vec<_>>>()?,
                false => Vec::new(),
            };
            if a.curves.is_some() {
                curves.iter().try_for_each(LearningCurve::check_plottable)?;
            }
            if let Some(path) = &a.table {
                let table = learning_table(&curves);
                fsutil::write_atomic(path, table.as_bytes())?;
                print_out(&table)?;
                eprintln!("wrote {} (the runs' evaluations)", path.display());
            }
            let img = compare(&opts)?;
            save_png(&img, &a.out)?;
            eprintln!("wrote {} ({n} models, {} faces each)", a.out.display(), opts.count);
            if let Some(path) = &a.curves {
                plot_learning_curves(&curves, path)?;
                eprintln!("wrote {} (FID by real images seen and by training CPU-hours)", path.display());
            }
        }
        Command::Inspect { path } => inspect(&path)?,
        Command::Bench(a) => {
            let opts = BenchOptions {
                batch_size: a.batch_size,
                iters: a.iters,
                warmup: a.warmup,
                only: a.only.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
                progress: true,
            };
            let report = run_bench(&opts)?;
            print!("{}", report.table());
            if let Some(path) = a.json {
                let text = serde_json::to_string_pretty(&report)? + "\n";
                facegan::fsutil::write_atomic(&path, text.as_bytes())?;
                eprintln!("wrote {}", path.display());
            }
        }
        Command::Models => print_out(&Zoo::find()?.table())?,
        Command::Presets { show: Some(name) } => print_out(&RunConfig::preset(&name)?.to_toml())?,
        Command::Presets { show: None } => {
            let mut text = String::from("Families (model.arch / --arch):\n");
            for f in facegan::models::FAMILIES {
                text.push_str(&format!("  {:8} {}\n", f.name, f.about));
            }
            text.push_str("\nPresets (--preset):\n");
            for p in PRESETS {
                text.push_str(&format!("  {:18} {}\n", p.name, p.about));
            }
            print_out(&text)?;
        }
    }
    Ok(())
}

/// Which generator a command uses: a checkpoint, or a model of the zoo in models/.
#[derive(Args)]
pub struct ModelChoice {
    /// Checkpoint (full, generator-only or continuation) or run folder (its newest
    /// checkpoint); default: the zoo's default model.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A model of the zoo by name (`facegan models` lists them).
    #[arg(long, conflicts_with = "checkpoint")]
    model: Option<String>,
}

impl ModelChoice {
    fn path(&self) -> Result<PathBuf> {
        match &self.checkpoint {
            Some(p) => Ok(p.clone()),
            None => Zoo::find()?.model_path(self.model.as_deref()),
        }
    }
}

fn inspect(path: &std::path::Path) -> Result<()> {
    if let Ok(ds) = Dataset::open(path) {
        println!(
            "cache {}: {} images of {}x{}, from {}",
            path.display(),
            ds.len(),
            ds.size(),
            ds.size(),
            ds.header.source
        );
        return Ok(());
    }
    let ck = checkpoint::read(path, &candle_core::Device::Cpu)?;
    let values: usize = ck.tensors.values().map(|t| t.elem_count()).sum();
    let per_net = checkpoint::parameter_counts(path)?;
    let per_net: Vec<String> = per_net.iter().map(|(net, n)| format!("{net} {n}")).collect();
    let curve = facegan::train::eval::carried_curve(&ck)?;
    let curve = match (curve.first(), curve.last()) {
        (Some(a), Some(b)) => {
            format!("learning curve: {} evaluations, steps {} to {}\n", curve.len(), a.step, b.step)
        }
        _ => String::new(),
    };
    print_out(&format!(
        "checkpoint {}: kind {}, step {}, {} tensors, {} values\nparameters: {}\n{curve}{}",
        path.display(),
        ck.kind(),
        ck.step(),
        ck.tensors.len(),
        values,
        per_net.join(", "),
        ck.config.to_toml()
    ))
}

/// Writes to standard output; a closed pipe (`facegan presets | head`) is not an error.
fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
