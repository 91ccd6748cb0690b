//! `facegan train`'s flags and how they override the preset and config file.

use anyhow::{Context, Result};
use clap::Args;
use facegan::config::RunConfig;
use facegan::data::attrs::expand_all;
use facegan::penalty::PenaltyConfig;
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    /// Image folder or prepared cache.
    #[arg(long)]
    pub data: Option<String>,
    /// Starting configuration; see `facegan presets`.
    #[arg(long, default_value = "dcgan-64")]
    pub preset: String,
    /// TOML file with settings on top of the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run folder to create.
    #[arg(long, conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder from its newest checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start a new run (--out) from a continuation file written by `export --continuation`
    /// elsewhere: its networks, step and settings; fresh optimizer moments with a warm-up.
    #[arg(long, conflicts_with = "resume")]
    pub init_from: Option<PathBuf>,
    /// Optimizer updates over which the learning rates ramp up (default 0; 100 with
    /// --init-from). A resume that would raise the rates at once (a decay that had ended, higher
    /// rates given) ramps them up from the checkpoint's over this many steps, or 100.
    #[arg(long)]
    lr_warmup: Option<u64>,
    /// Let both learning rates fall linearly towards zero over the run's last N steps (up to
    /// --steps; 0: constant; N = --steps: over the whole run, as SN-GAN)
    #[arg(long)]
    lr_decay_steps: Option<u64>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
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
    /// Regulariser KIND[:WEIGHT[:EVERY]]: the gradient penalties on D (wgan-gp,
    /// one-sided-gp, dragan, r1, r2) and EBGAN's pull-away on G; repeatable; replaces the
    /// preset's. `--penalty none` removes them.
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
    /// Network family: mlp, dcgan, resnet, ebgan, stylegan, stylegan2 (see `facegan presets`).
    #[arg(long)]
    arch: Option<String>,
    /// Discriminator normalisation: batch, layer or none.
    #[arg(long)]
    d_norm: Option<String>,
    /// Spectral normalisation in the discriminator (true/false).
    #[arg(long)]
    d_spectral_norm: Option<bool>,
    /// Spectral normalisation in the generator (true/false).
    #[arg(long)]
    g_spectral_norm: Option<bool>,
    /// Self-attention at feature maps of this side in G and D (0: none).
    #[arg(long)]
    attention: Option<usize>,
    /// Minibatch standard deviation in D with this group size (0: off).
    #[arg(long)]
    mbstd_group: Option<usize>,
    /// Self-modulated batch norm in G (true/false).
    #[arg(long)]
    self_modulation: Option<bool>,
    /// Dropout probability in D's hidden layers (mlp).
    #[arg(long)]
    d_dropout: Option<f64>,
    /// Style families: size of the intermediate latent w (default: nz).
    #[arg(long)]
    w_dim: Option<usize>,
    /// Style families: depth of the mapping network (default 8).
    #[arg(long)]
    mapping_layers: Option<usize>,
    /// Style families: probability of style mixing in a training batch (default 0.9).
    #[arg(long)]
    style_mixing: Option<f64>,
    /// Conditional models: CelebA attributes to condition on, comma-separated
    /// (e.g. Male,Smiling,Eyeglasses), `all` for the 40, `none` for an unconditional model.
    #[arg(long, value_delimiter = ',')]
    attrs: Option<Vec<String>>,
    /// How a conditional model uses the attributes: concat (cGAN), projection (conditional BN
    /// in G and a projection D), acgan (auxiliary classifier on D), none.
    #[arg(long)]
    condition: Option<String>,
    /// CelebA's list_attr_celeba.txt (default: in or beside the image folder).
    #[arg(long)]
    attr_file: Option<String>,
    /// Refuse unreadable images and images without attribute rows instead of skipping them.
    #[arg(long)]
    strict: bool,
    /// Read and hash every image of a --data folder to check its cache, instead of trusting
    /// the files' names, sizes and modification times (a cache that no longer matches is
    /// prepared again).
    #[arg(long)]
    verify: bool,
    /// Where a --data folder is prepared (and found again next time), and where the
    /// reference features of --eval-every are kept (default: $FACEGAN_CACHE_DIR, else
    /// $XDG_CACHE_HOME/facegan, else ~/.cache/facegan).
    #[arg(long)]
    cache_dir: Option<String>,
    /// Semi-supervised GAN: use the labels of this share of the training images.
    #[arg(long)]
    labelled_fraction: Option<f64>,
    /// G's loss by feature matching (Salimans et al. 2016) instead of the adversarial one
    /// (true/false; DCGAN's D).
    #[arg(long)]
    feature_matching: Option<bool>,
    /// Keep the last N images (by name; labelled ones for conditional models) out of
    /// training, to measure on them: `--eval-every` and `facegan eval --held-out N` compare
    /// with them.
    #[arg(long)]
    held_out: Option<usize>,
    /// ACGAN: weight of the attribute-classification loss (default 1).
    #[arg(long)]
    aux_weight: Option<f64>,
    /// InfoGAN: categories of the categorical latent code (0: none).
    #[arg(long)]
    info_cat: Option<usize>,
    /// InfoGAN: continuous latent codes, U(-1, 1) each.
    #[arg(long)]
    info_cont: Option<usize>,
    /// InfoGAN: weight λ of the mutual-information loss (default 1).
    #[arg(long)]
    info_weight: Option<f64>,
    /// Augment D's inputs: none, diffaugment (colour, translation, cutout), ada (adaptive
    /// p, for small datasets) or fixed (ADA's pipeline at --augment-p).
    #[arg(long)]
    augment: Option<String>,
    /// DiffAugment's policies (e.g. color,translation) or ADA's groups (e.g. bgc).
    #[arg(long)]
    augment_pipe: Option<String>,
    /// ADA: the initial p (ada) or the constant one (fixed).
    #[arg(long)]
    augment_p: Option<f64>,
    /// ADA: target of the overfitting heuristic r_t (default 0.6).
    #[arg(long)]
    ada_target: Option<f64>,
    /// ADA: thousands of images over which p can go from 0 to 1 (default 500).
    #[arg(long)]
    ada_kimg: Option<f64>,
    /// EBGAN's margin (loss ebgan).
    #[arg(long)]
    ebgan_margin: Option<f64>,
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
    /// Also checkpoint after this many minutes of training whatever the step (default 10; 0: off).
    #[arg(long)]
    checkpoint_minutes: Option<f64>,
    /// Evaluate the EMA generator every N steps (and at the end) into metrics.jsonl.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Faces generated per evaluation (default 1000).
    #[arg(long)]
    eval_num: Option<usize>,
    /// Reference images per evaluation, the first of the training data (default: --eval-num).
    #[arg(long)]
    eval_num_real: Option<usize>,
    /// Metrics of the evaluation: fid, kid, pr, swd (default fid).
    #[arg(long)]
    eval_metrics: Option<String>,
    /// Set any setting, KEY=VALUE (e.g. train.lr_d=1e-4, train.loss=hinge), applied last. On
    /// --resume this is the way to change a setting that changes the run's trajectory (seed,
    /// batch size, losses, penalties, n_critic, optimizer, learning rates, ...); the change is
    /// recorded in the run's config-history.jsonl. Repeatable.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
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
    pub fn config(&self, base: RunConfig) -> Result<RunConfig> {
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
        set(&mut m.arch, self.arch.clone());
        set(&mut m.d_norm, self.d_norm.clone());
        set(&mut m.d_spectral_norm, self.d_spectral_norm);
        set(&mut m.g_spectral_norm, self.g_spectral_norm);
        set(&mut m.attention, self.attention);
        set(&mut m.mbstd_group, self.mbstd_group);
        set(&mut m.self_modulation, self.self_modulation);
        set(&mut m.d_dropout, self.d_dropout);
        m.w_dim = self.w_dim.or(m.w_dim);
        m.mapping_layers = self.mapping_layers.or(m.mapping_layers);
        m.style_mixing = self.style_mixing.or(m.style_mixing);
        set(&mut m.condition, self.condition.clone());
        set(&mut m.info_cat, self.info_cat);
        set(&mut m.info_cont, self.info_cont);
        if let Some(a) = &self.attrs {
            m.attrs = if a == &["none"] { Vec::new() } else { a.clone() };
        }
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
        set(&mut t.ebgan_margin, self.ebgan_margin);
        set(&mut t.aux_weight, self.aux_weight);
        set(&mut t.info_weight, self.info_weight);
        set(&mut t.labelled_fraction, self.labelled_fraction);
        set(&mut t.feature_matching, self.feature_matching);
        set(&mut t.augment, self.augment.clone());
        set(&mut t.augment_pipe, self.augment_pipe.clone());
        set(&mut t.augment_p, self.augment_p);
        set(&mut t.ada_target, self.ada_target);
        set(&mut t.ada_kimg, self.ada_kimg);
        set(&mut t.lr_warmup, self.lr_warmup);
        set(&mut t.lr_decay_steps, self.lr_decay_steps);
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
        set(&mut l.checkpoint_minutes, self.checkpoint_minutes);
        set(&mut l.eval_every, self.eval_every);
        set(&mut l.eval_num, self.eval_num);
        set(&mut l.eval_metrics, self.eval_metrics.clone());
        if self.eval_num_real.is_some() {
            l.eval_num_real = self.eval_num_real;
        }
        set(&mut c.data.path, self.data.clone());
        if self.crop.is_some() {
            c.data.crop = self.crop;
        }
        if self.attr_file.is_some() {
            c.data.attr_file = self.attr_file.clone();
        }
        c.data.strict |= self.strict;
        set(&mut c.data.held_out, self.held_out);
        if self.verify {
            c.data.verify = true;
        }
        if self.cache_dir.is_some() {
            c.data.cache_dir = self.cache_dir.clone();
        }
        if c.model.attrs.iter().any(|a| a == "all") {
            if c.data.path.is_empty() {
                anyhow::bail!("--attrs all reads the names from the attribute file beside --data, which is not given");
            }
            c.model.attrs = expand_all(&c.model.attrs, c.data.attr_file.as_deref(), &PathBuf::from(&c.data.path))?;
        }
        c.validate()?;
        Ok(c)
    }

    /// The configuration with the --override settings applied, and their keys.
    pub fn config_with_overrides(&self, base: RunConfig) -> Result<(RunConfig, Vec<String>)> {
        let mut c = self.config(base)?;
        let keys = self.overrides.iter().map(|o| c.apply_override(o)).collect::<Result<Vec<_>>>()?;
        Ok((c, keys))
    }
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}
