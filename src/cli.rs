//! The command line: subcommands and how their flags map onto the library.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use facegan::bench::{run_bench, BenchOptions};
use facegan::config::{RunConfig, PRESETS};
use facegan::data::cache::{report_skipped, Dataset};
use facegan::data::preprocess::CropResize;
use facegan::data::{prepare, PrepareOptions};
use facegan::device::parse_device;
use facegan::penalty::PenaltyConfig;
use facegan::sample::generate::{generate, load_generator, shipped_model_path, write_faces, SHIPPED_MODEL};
use facegan::train::{checkpoint, train, TrainOptions};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "facegan", version, about = "Train GANs on face photographs and generate new faces")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Decode, centre-crop and resize an image folder into a packed cache for training.
    Prepare(PrepareArgs),
    /// Train a GAN (or resume a run).
    Train(Box<TrainArgs>),
    /// Make faces with a checkpoint (by default, the model the repository ships).
    Generate(GenerateArgs),
    /// Rebuild progress.gif and losses.png of a run.
    Report {
        /// The run folder.
        run: PathBuf,
    },
    /// Write the EMA generator of a checkpoint alone, for sharing (f16 with --half).
    Export {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        half: bool,
    },
    /// Print what a checkpoint or cache holds.
    Inspect { path: PathBuf },
    /// List the presets.
    Presets,
    /// Time dcgan-64's building blocks on the CPU: layer operations (beside candle's own),
    /// a 2048³ matmul, G and D passes, a training step and a WGAN-GP critic step.
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
pub struct TrainArgs {
    /// Image folder or prepared cache.
    #[arg(long)]
    data: Option<String>,
    /// Starting configuration; see `facegan presets`.
    #[arg(long, default_value = "dcgan-64")]
    preset: String,
    /// TOML file with settings on top of the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run folder to create.
    #[arg(long, conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this folder from its newest checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    image_size: Option<usize>,
    #[arg(long)]
    nz: Option<usize>,
    #[arg(long)]
    ngf: Option<usize>,
    #[arg(long)]
    ndf: Option<usize>,
    /// Learning rate of both networks.
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    lr_g: Option<f64>,
    #[arg(long)]
    lr_d: Option<f64>,
    #[arg(long)]
    beta1: Option<f64>,
    #[arg(long)]
    beta2: Option<f64>,
    /// Adversarial loss (see docs/losses.md): non-saturating, minimax, lsgan, wgan, hinge,
    /// fgan-kl, fgan-reverse-kl, fgan-pearson, fgan-neyman, fgan-hellinger, fgan-js,
    /// fgan-gan, ragan, ralsgan, rahinge.
    #[arg(long)]
    loss: Option<String>,
    /// Gradient penalty KIND[:WEIGHT[:EVERY]] (wgan-gp, one-sided-gp, dragan, r1, r2);
    /// repeatable; replaces the preset's penalties. `--penalty none` removes them.
    #[arg(long)]
    penalty: Vec<String>,
    /// Discriminator updates per generator update.
    #[arg(long)]
    n_critic: Option<u32>,
    /// adam or rmsprop.
    #[arg(long)]
    optimizer: Option<String>,
    /// Clip D's weights to [-C, C] after each update (WGAN); 0 disables.
    #[arg(long)]
    weight_clip: Option<f64>,
    /// One-sided label smoothing: real targets 1 - S.
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Std of Gaussian instance noise on D's inputs.
    #[arg(long)]
    instance_noise: Option<f64>,
    /// Steps over which instance noise decays linearly to 0.
    #[arg(long)]
    instance_noise_steps: Option<u64>,
    /// Discriminator normalisation: batch, layer or none.
    #[arg(long)]
    d_norm: Option<String>,
    /// LSGAN targets a,b,c (fake, real, generator's).
    #[arg(long, value_delimiter = ',', num_args = 3)]
    lsgan_targets: Option<Vec<f64>>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    ema_decay: Option<f64>,
    /// Central square side cut before resizing.
    #[arg(long)]
    crop: Option<u32>,
    /// No random horizontal flips.
    #[arg(long)]
    no_flip: bool,
    #[arg(long)]
    log_every: Option<u64>,
    #[arg(long)]
    sample_every: Option<u64>,
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Checkpoint (full or generator-only); default: the shipped model.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
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
    /// g_fwd_train, d_fwd_bwd, train_step, wgan_gp_critic_step, and conv2d_fwd[_bwd],
    /// conv_transpose2d_fwd[_bwd], each also with a candle_ prefix.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// Deep-merges TOML `over` into `base`.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

impl TrainArgs {
    /// Preset, then the config file, then flags.
    fn config(&self, base: RunConfig) -> Result<RunConfig> {
        let mut c = base;
        if let Some(path) = &self.config {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
            let over: toml::Value = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let mut v = toml::Value::try_from(&c)?;
            merge(&mut v, over);
            c = RunConfig::from_toml(&toml::to_string(&v)?, &path.display().to_string())?;
        }
        let m = &mut c.model;
        set(&mut m.image_size, self.image_size);
        set(&mut m.nz, self.nz);
        set(&mut m.ngf, self.ngf);
        set(&mut m.ndf, self.ndf);
        set(&mut m.d_norm, self.d_norm.clone());
        let t = &mut c.train;
        set(&mut t.steps, self.steps);
        set(&mut t.batch_size, self.batch_size);
        set(&mut t.lr_g, self.lr.or(self.lr_g));
        set(&mut t.lr_d, self.lr.or(self.lr_d));
        set(&mut t.lr_g, self.lr_g);
        set(&mut t.lr_d, self.lr_d);
        set(&mut t.beta1, self.beta1);
        set(&mut t.beta2, self.beta2);
        set(&mut t.loss, self.loss.clone());
        set(&mut t.seed, self.seed);
        set(&mut t.ema_decay, self.ema_decay);
        set(&mut t.n_critic, self.n_critic);
        set(&mut t.optimizer, self.optimizer.clone());
        set(&mut t.weight_clip, self.weight_clip);
        set(&mut t.label_smoothing, self.label_smoothing);
        set(&mut t.instance_noise, self.instance_noise);
        set(&mut t.instance_noise_steps, self.instance_noise_steps);
        if let Some(v) = &self.lsgan_targets {
            t.lsgan_targets = [v[0], v[1], v[2]];
        }
        if !self.penalty.is_empty() {
            t.penalties = if self.penalty == ["none"] {
                Vec::new()
            } else {
                self.penalty.iter().map(|p| PenaltyConfig::parse(p)).collect::<Result<_>>()?
            };
        }
        if self.no_flip {
            t.flip = false;
        }
        let l = &mut c.log;
        set(&mut l.log_every, self.log_every);
        set(&mut l.sample_every, self.sample_every);
        set(&mut l.checkpoint_every, self.checkpoint_every);
        set(&mut c.data.path, self.data.clone());
        if self.crop.is_some() {
            c.data.crop = self.crop;
        }
        c.validate()?;
        Ok(c)
    }
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
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
            let (config, run_dir, resume) = match &a.resume {
                Some(run) => {
                    let ck = checkpoint::read(&checkpoint::latest(run)?, &candle_core::Device::Cpu)?;
                    (a.config(ck.config)?, run.clone(), true)
                }
                None => {
                    let out = a.out.clone().context("give --out runs/NAME for a new run, or --resume runs/NAME")?;
                    (a.config(RunConfig::preset(&a.preset)?)?, out, false)
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
                device,
                progress: !a.quiet,
                stop_after: None,
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
            let path = match a.checkpoint {
                Some(p) => p,
                None => shipped_model_path().with_context(|| {
                    format!("no --checkpoint given and the shipped model models/{SHIPPED_MODEL} is not here")
                })?,
            };
            let (g, cfg) = load_generator(&path, &device)?;
            let x = generate(g.as_ref(), &cfg, a.count, a.seed, &device)?;
            let written = write_faces(&x, &a.out, a.columns)?;
            eprintln!(
                "wrote {} ({} faces from {})",
                if written.len() == 1 {
                    written[0].display().to_string()
                } else {
                    format!("{} files in {}", written.len(), a.out.display())
                },
                a.count,
                path.display()
            );
        }
        Command::Report { run } => {
            if !run.is_dir() {
                bail!("{} is not a run folder", run.display());
            }
            facegan::report::write_report(&run)?;
            eprintln!("wrote {} and {}", run.join("progress.gif").display(), run.join("losses.png").display());
        }
        Command::Export { checkpoint: ck, out, half } => {
            let device = candle_core::Device::Cpu;
            let c = checkpoint::read(&ck, &device)?;
            let s = facegan::train::trainer::Session::from_checkpoint(&c, &c.config, &device)?;
            s.save_generator(&out, half)?;
            eprintln!("wrote {} (EMA generator at step {})", out.display(), s.step);
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
        Command::Presets => {
            let text: String = PRESETS.iter().map(|(name, about)| format!("{name:12} {about}\n")).collect();
            print_out(&text)?;
        }
    }
    Ok(())
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
    let params: usize = ck.tensors.values().map(|t| t.elem_count()).sum();
    print_out(&format!(
        "checkpoint {}: kind {}, step {}, {} tensors, {} values\n{}",
        path.display(),
        ck.kind(),
        ck.step(),
        ck.tensors.len(),
        params,
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
