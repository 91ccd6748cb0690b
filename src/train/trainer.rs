//! The training loop. One step is a sequence of phases:
//! `D main` (adversarial loss on a real and a detached fake batch) plus `D reg` (the
//! regularisers that target D, lazy ones on their interval), one Optimizer update of D,
//! `n_critic` times; then `G main` (fakes through the updated D, whose weights are frozen
//! for this pass) plus `G reg` (the regularisers that target G, reading D's auxiliary
//! outputs), one Optimizer update of G; then the EMA update of the generator.

use super::augment::Augment;
use super::checkpoint::{self, Checkpoint};
use super::optim::Optimizer;
use super::stats::{self, Accumulator};
use crate::config::RunConfig;
use crate::data::attrs::{self, find_attr_file, AttrFile, Labels};
use crate::data::cache::{prepare_cached, store_labels, Dataset, PrepareOptions, CACHE_EXTENSION};
use crate::data::preprocess::CropResize;
use crate::data::Loader;
use crate::fsutil::ensure_dir;
use crate::loss::{feature_matching, AdversarialLoss};
use crate::models::conditional::{class_accuracy, class_loss, set_label_prior, sgan_loss, Condition, CLASS_LOGITS};
use crate::models::info::{info_loss, InfoCodes, Q_CODES};
use crate::models::{build_discriminator, build_generator, DiscOutput, Discriminator, Generator, FEATURES};
use crate::nn::{BnMode, Mode};
use crate::penalty::{path_length, penalty, pull_away, PenaltyKind, Target, PATH_LENGTH_DECAY};
use crate::rng::Rng;
use crate::sample::{fixed_latents, grid, FIXED_LATENTS_TAG};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Tag of the RNG stream used to recompute the EMA generator's batch-norm statistics.
const STANDING_STATS_TAG: u64 = 0x57A7;
/// Batches of 64 latents used for those statistics.
const STANDING_STATS_BATCHES: usize = 4;

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP ask the loop to write a checkpoint and stop
/// (installed once per process).
fn install_ctrl_c() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if crate::interrupt::request() {
                std::process::exit(130); // second signal: leave at once
            }
            eprintln!("\ninterrupted: writing a checkpoint before stopping (Ctrl-C again to quit at once)");
        });
    });
}

pub struct TrainOptions {
    pub config: RunConfig,
    pub run_dir: PathBuf,
    /// Continue from the newest checkpoint in `run_dir`.
    pub resume: bool,
    /// Start a new run from this continuation file (`export --continuation`).
    pub init_from: Option<PathBuf>,
    pub device: Device,
    pub progress: bool,
    /// Stop (with a checkpoint) after this step, as an interruption would.
    pub stop_after: Option<u64>,
    /// Settings (`section.key`) a resume may change although they change the run's
    /// trajectory (`--override`); any other such change is refused.
    pub overrides: Vec<String>,
}

/// File of a run's configuration changes on resume, one JSON line each.
pub const CONFIG_HISTORY: &str = "config-history.jsonl";
/// Metadata of an export whose EMA generator is a mean of several: their steps.
pub const EMA_AVERAGE_KEY: &str = "ema_average_of";

/// Metadata of a full checkpoint: the learning-rate factor of its last update.
const LR_FACTOR_KEY: &str = "lr_factor";

#[derive(Debug)]
pub struct TrainOutcome {
    pub step: u64,
    pub interrupted: bool,
    pub checkpoint: PathBuf,
}

/// Everything that changes during training.
pub struct Session {
    pub cfg: RunConfig,
    pub device: Device,
    pub g: Box<dyn Generator>,
    pub d: Box<dyn Discriminator>,
    pub g_ema: Box<dyn Generator>,
    pub opt_g: Optimizer,
    pub opt_d: Optimizer,
    pub rng: Rng,
    pub step: u64,
    /// Real images shown to D so far, counted step by step (so a batch size or n_critic
    /// changed on a resume does not rewrite the past).
    images_seen: u64,
    loss: AdversarialLoss,
    penalties: Vec<(PenaltyKind, f64, u64)>,
    /// Moving mean of the path lengths (path-length regulariser).
    pub pl_mean: f64,
    /// Augmentation of D's inputs, with ADA's p.
    pub aug: Augment,
    /// Training CPU seconds before `cpu_mark` (all processes of the run, resumes and
    /// continuation files included); `None` when an older checkpoint did not record them.
    cpu_base: Option<f64>,
    /// This process's CPU seconds when `cpu_base` was last brought up to date.
    cpu_mark: f64,
    /// The steps whose EMA generators `G_ema` is the mean of (`facegan export` with several
    /// checkpoints); empty when it is this run's own moving average.
    pub ema_average_of: Vec<u64>,
    /// The learning-rate factor of the last update (the schedule's, or the ramp's).
    lr_applied: f64,
    /// A ramp back up to the scheduled rates after a resume that would raise them at once.
    lr_ramp: Option<LrRamp>,
}

/// Steps over which a resume that raises the learning rates ramps them up (unless
/// `train.lr_warmup` gives another length).
const RESUME_RAMP_STEPS: u64 = 100;

/// The learning-rate factor going linearly from `from` (at the update before `start`) to the
/// schedule's over `over` updates: a run resumed at full rates after its rates had decayed,
/// or with higher ones, would otherwise take its first steps with a jump in step size (d_loss
/// went from 1.07 to 2.3 at such a resume of the shipped model's run).
#[derive(Clone, Copy, Debug)]
struct LrRamp {
    start: u64,
    from: f64,
    over: u64,
}

impl LrRamp {
    /// The factor at `step` given the schedule's `scheduled`, or None once the ramp is done.
    fn factor(&self, step: u64, scheduled: f64) -> Option<f64> {
        let k = step.saturating_sub(self.start) + 1;
        (k < self.over).then(|| self.from + (scheduled - self.from) * k as f64 / self.over as f64)
    }
}

/// Per-step numbers for the logs, by name.
pub type StepStats = BTreeMap<String, f64>;

fn is_finite(scalar: &Tensor) -> Result<bool> {
    Ok(scalar.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?.is_finite())
}

/// Whether the gradients of every trainable parameter in `grads` are finite (a NaN or an
/// infinity anywhere makes the sum non-finite).
fn grads_finite(params: &crate::nn::Params, grads: &candle_core::backprop::GradStore) -> Result<bool> {
    for (_, v) in params.trainable() {
        if let Some(g) = grads.get(v.as_tensor()) {
            if !is_finite(&g.sum_all()?)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// A regulariser's weight at one update of its network (`update` counts that network's
/// updates): `weight × every` on the updates its interval falls on, so that the expected
/// gradient is the eager one's (StyleGAN2's lazy regularisation); None on the others, and when
/// the weight is 0.
pub fn lazy_weight(weight: f64, every: u64, update: u64) -> Option<f64> {
    (weight != 0.0 && update.is_multiple_of(every.max(1))).then_some(weight * every.max(1) as f64)
}

/// D's last hidden features (feature matching).
fn features(out: &DiscOutput) -> Result<Tensor> {
    out.aux.get(FEATURES).cloned().context("feature matching: D gave no features")
}

fn mean_sigmoid(logits: &Tensor) -> Result<f64> {
    let p = (logits.detach().neg()?.exp()? + 1.0)?.recip()?;
    Ok(p.mean_all()?.to_scalar::<f32>()? as f64)
}

impl Session {
    /// A fresh session: networks initialised from the seed.
    pub fn new(cfg: &RunConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let mut rng = Rng::new(cfg.train.seed);
        let g = build_generator(&cfg.model, device, &mut rng)?;
        let d = build_discriminator(&cfg.model, device, &mut rng)?;
        let g_ema = build_generator(&cfg.model, device, &mut Rng::new(0))?;
        g_ema.params().copy_from(g.params())?;
        let t = &cfg.train;
        let mut opt_g = Optimizer::from_name(&t.optimizer, g.params(), t.lr_g, t.beta1, t.beta2)?;
        let mut opt_d = Optimizer::from_name(&t.optimizer, d.params(), t.lr_d, t.beta1, t.beta2)?;
        (opt_g.warmup, opt_d.warmup) = (t.lr_warmup, t.lr_warmup * t.n_critic as u64);
        let loss = AdversarialLoss::from_config(t)?;
        let penalties = t.penalties.iter().map(|p| (p.kind(), p.weight, p.every)).collect();
        let aug = Augment::from_config(t)?;
        Ok(Self {
            cfg: cfg.clone(),
            device: device.clone(),
            g,
            d,
            g_ema,
            opt_g,
            opt_d,
            rng,
            step: 0,
            images_seen: 0,
            loss,
            penalties,
            pl_mean: 0.0,
            aug,
            cpu_base: Some(0.0),
            cpu_mark: stats::process_cpu_seconds(),
            ema_average_of: Vec::new(),
            lr_applied: 1.0,
            lr_ramp: None,
        })
    }

    /// CPU seconds (user + system, every thread) the run has spent training so far, across
    /// resumes and machines; evaluations during training are not counted. `None` for runs
    /// from checkpoints that predate this count.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.cpu_base.map(|b| b + (stats::process_cpu_seconds() - self.cpu_mark))
    }

    /// Leaves the CPU time of `f` (an evaluation) out of [`Self::cpu_seconds`].
    pub fn without_cpu_count<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let before = stats::process_cpu_seconds();
        let out = f(self);
        self.cpu_mark += stats::process_cpu_seconds() - before;
        out
    }

    /// Restores a session from a full checkpoint; `cfg` may differ from the saved one
    /// only in settings that do not change the networks (steps, logging, data path).
    pub fn from_checkpoint(ck: &Checkpoint, cfg: &RunConfig, device: &Device) -> Result<Self> {
        let src = ck.path.display().to_string();
        if ck.kind() != checkpoint::KIND_FULL {
            bail!("{src}: holds only a generator; training can only resume from a full checkpoint of a run");
        }
        let mut s = Self::with_networks_of(ck, cfg, device, "checkpoint")?;
        s.opt_g.load_tensors("opt_G", s.g.params(), &ck.tensors, ck.meta_u64("opt_G.t")?, &src)?;
        s.opt_d.load_tensors("opt_D", s.d.params(), &ck.tensors, ck.meta_u64("opt_D.t")?, &src)?;
        s.rng = ck
            .meta
            .get("rng")
            .and_then(|r| Rng::from_state_string(r))
            .with_context(|| format!("{src}: RNG state missing or malformed"))?;
        // The factor of the checkpoint's last update (older checkpoints: its schedule's).
        let (old, new) = (&ck.config.train, &cfg.train);
        let last = match ck.meta.get(LR_FACTOR_KEY) {
            Some(v) => v.parse::<f64>().with_context(|| format!("{src}: malformed {LR_FACTOR_KEY} '{v}'"))?,
            None => old.lr_factor(s.step.saturating_sub(1)),
        };
        s.lr_applied = last;
        // Where the rates would jump up (a decay ended, higher rates given), ramp up from the
        // last update's rates, as a fraction of the new ones.
        let from = (old.lr_g * last / new.lr_g).min(old.lr_d * last / new.lr_d);
        let scheduled = new.lr_factor(s.step);
        if from < scheduled * (1.0 - 1e-9) {
            let over = if new.lr_warmup > 0 { new.lr_warmup } else { RESUME_RAMP_STEPS };
            s.lr_ramp = Some(LrRamp { start: s.step, from, over });
            eprintln!(
                "the learning rates ramp up over {over} steps from {from:.3} of lr_g {:e} and lr_d {:e} (where the checkpoint's last update was) to the schedule's",
                new.lr_g, new.lr_d
            );
        }
        Ok(s)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let (mut t, mut meta) = self.networks_and_state(checkpoint::KIND_FULL)?;
        self.opt_g.to_tensors("opt_G", self.g.params(), &mut t);
        self.opt_d.to_tensors("opt_D", self.d.params(), &mut t);
        meta.insert("opt_G.t".into(), self.opt_g.t.to_string());
        meta.insert(LR_FACTOR_KEY.into(), self.lr_applied.to_string());
        meta.insert("opt_D.t".into(), self.opt_d.t.to_string());
        checkpoint::write(path, &t, meta, false)
    }

    /// Writes what a run elsewhere needs to go on (`train --init-from`): G, D and the EMA
    /// generator (with its standing statistics) in f16, the step, ADA's p, the path-length
    /// mean and the RNG; not the optimizer moments, which the new run restarts. `curve` is
    /// the run's learning curve (its evaluations up to this step), carried along so that
    /// the run started from the file goes on with it.
    pub fn save_continuation(&self, path: &Path, curve: &[super::eval::MetricsLine]) -> Result<()> {
        let (t, mut meta) = self.networks_and_state(checkpoint::KIND_CONTINUATION)?;
        let curve: Vec<_> = curve.iter().filter(|l| l.step <= self.step).cloned().collect();
        if !curve.is_empty() {
            meta.insert(super::eval::CURVE_KEY.into(), super::eval::to_jsonl(&curve)?);
        }
        checkpoint::write(path, &t, meta, true)
    }

    /// What full checkpoints and continuation files share (the inverse of
    /// [`Self::with_networks_of`]): G, D and G_ema, the latter with its own standing batch
    /// statistics rather than the copy of G's (the next step overwrites them again, so the
    /// run's course does not change), and the step, RNG, path-length mean (bit-exact, so a
    /// resumed run continues the same moving mean) and ADA's state.
    fn networks_and_state(&self, kind: &str) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
        self.refresh_ema_stats()?;
        let mut t = HashMap::new();
        self.g.params().to_tensors("G", &mut t);
        self.d.params().to_tensors("D", &mut t);
        self.g_ema.params().to_tensors("G_ema", &mut t);
        let mut meta = self.base_meta(kind);
        meta.insert("images_seen".into(), self.images_seen.to_string());
        meta.insert("rng".into(), self.rng.to_state_string());
        meta.insert("pl_mean".into(), format!("{:016x}", self.pl_mean.to_bits()));
        if let Some(c) = self.cpu_seconds() {
            meta.insert("cpu_s".into(), format!("{c:.6}"));
        }
        meta.extend(self.aug.state());
        Ok((t, meta))
    }

    /// Real images shown to D so far: the sum over the run's steps of each step's batch
    /// size times n_critic, across resumes that changed them.
    pub fn images_seen(&self) -> u64 {
        self.images_seen
    }

    /// A session that goes on from a continuation file: its networks, step, ADA's p and
    /// RNG, with fresh optimizer moments (and `train.lr_warmup`'s ramp). `cfg` may change
    /// the training settings but not the model's.
    pub fn from_continuation(ck: &Checkpoint, cfg: &RunConfig, device: &Device) -> Result<Self> {
        let src = ck.path.display().to_string();
        if ck.kind() != checkpoint::KIND_CONTINUATION {
            bail!(
                "{src}: is a '{}' checkpoint, not a continuation file; write one with `facegan export --continuation --checkpoint CK --out FILE`, or resume a run folder with --resume",
                ck.kind()
            );
        }
        let mut s = Self::with_networks_of(ck, cfg, device, "continuation")?;
        if let Some(rng) = ck.meta.get("rng") {
            s.rng = Rng::from_state_string(rng).with_context(|| format!("{src}: RNG state malformed"))?;
        }
        Ok(s)
    }

    /// A fresh session for `cfg` holding the networks of `ck` (G, D, G_ema), its step,
    /// path-length mean and ADA state; `what` names the file's kind in messages.
    fn with_networks_of(ck: &Checkpoint, cfg: &RunConfig, device: &Device, what: &str) -> Result<Self> {
        let src = ck.path.display().to_string();
        if cfg.model != ck.config.model {
            bail!(
                "{src}: the {what}'s model settings differ from the requested ones:\n  {what}: {:?}\n  requested: {:?}",
                ck.config.model,
                cfg.model
            );
        }
        let mut s = Self::new(cfg, device)?;
        s.g.params().load_tensors("G", &ck.tensors, &src)?;
        s.d.params().load_tensors("D", &ck.tensors, &src)?;
        s.g_ema.params().load_tensors("G_ema", &ck.tensors, &src)?;
        s.step = ck.meta_u64("step")?;
        // Files written before the count was kept: their run never changed its batch.
        s.images_seen = match ck.meta.get("images_seen") {
            Some(n) => n.parse().with_context(|| format!("{src}: images_seen '{n}' is malformed"))?,
            None => s.step * ck.config.train.images_per_step(),
        };
        if let Some(bits) = ck.meta.get("pl_mean") {
            let bits =
                u64::from_str_radix(bits, 16).with_context(|| format!("{src}: pl_mean '{bits}' is malformed"))?;
            s.pl_mean = f64::from_bits(bits);
        }
        s.cpu_base = match ck.meta.get("cpu_s") {
            Some(c) => Some(c.parse().with_context(|| format!("{src}: cpu_s '{c}' is malformed"))?),
            None => None,
        };
        s.aug.restore(|k| ck.meta.get(k).cloned(), &src)?;
        Ok(s)
    }

    /// Writes only the EMA generator (for sharing and `generate`), optionally as f16.
    pub fn save_generator(&self, path: &Path, half: bool) -> Result<()> {
        self.refresh_ema_stats()?;
        let mut t = HashMap::new();
        self.g_ema.params().to_tensors("G_ema", &mut t);
        checkpoint::write(path, &t, self.base_meta(checkpoint::KIND_GENERATOR), half)
    }

    fn base_meta(&self, kind: &str) -> HashMap<String, String> {
        let mut meta = checkpoint::base_meta(kind, self.step, &self.cfg);
        if !self.ema_average_of.is_empty() {
            let steps: Vec<String> = self.ema_average_of.iter().map(u64::to_string).collect();
            meta.insert(EMA_AVERAGE_KEY.into(), steps.join(","));
        }
        meta
    }

    /// Replaces the EMA generator's weights by their mean with those of the EMA generators
    /// in `others` (checkpoints, continuation files or exported generators of the same
    /// model): averaging snapshots after training, which lengthens the EMA's window without
    /// retraining (Yazıcı et al. 2019; Karras et al. 2024's post-hoc EMA). The buffers
    /// stay this session's (StyleGAN's w_avg); the batch-norm statistics are recomputed
    /// for the mean when it is saved. The rest of the session (G, D, step, RNG) stays too.
    pub fn average_ema_with(&mut self, others: &[PathBuf]) -> Result<()> {
        let mut steps = vec![self.step];
        let buffers: Vec<Tensor> =
            self.g_ema.params().buffers().map(|(_, v)| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
        let scratch = build_generator(&self.cfg.model, &self.device, &mut Rng::new(0))?;
        for (k, path) in others.iter().enumerate() {
            // One at a time: a full checkpoint with its optimizer moments can be large.
            let ck = checkpoint::read(path, &self.device)?;
            let src = path.display().to_string();
            if ck.config.model != self.cfg.model {
                bail!(
                    "{src}: its model settings differ from those of the checkpoint at step {}, so their generators cannot be averaged:\n  {src}: {:?}\n  step {}: {:?}",
                    self.step,
                    ck.config.model,
                    self.step,
                    self.cfg.model
                );
            }
            scratch.params().load_tensors("G_ema", &ck.tensors, &src)?;
            // The running mean of k + 2 generators: weight (k + 1) / (k + 2) on the mean so far.
            let kept = (k as f64 + 1.0) / (k as f64 + 2.0);
            self.g_ema.params().ema_from(scratch.params(), kept)?;
            steps.push(ck.step());
        }
        for ((_, v), t) in self.g_ema.params().buffers().zip(&buffers) {
            v.set(t)?;
        }
        steps.sort_unstable();
        if let Some(w) = steps.windows(2).find(|w| w[0] == w[1]) {
            bail!("two of the checkpoints to average are at step {}: give each snapshot once", w[0]);
        }
        self.ema_average_of = steps;
        Ok(())
    }

    /// Standard deviation of the instance noise at the current step.
    pub fn instance_noise_std(&self) -> f64 {
        let t = &self.cfg.train;
        match t.instance_noise_steps {
            0 => t.instance_noise,
            n => t.instance_noise * (1.0 - self.step as f64 / n as f64).max(0.0),
        }
    }

    fn with_noise(&mut self, x: &Tensor, std: f64) -> Result<Tensor> {
        if std == 0.0 {
            return Ok(x.clone());
        }
        let noise = self.rng.normal_tensor(x.shape(), 0.0, std, &self.device)?;
        Ok((x + noise)?)
    }

    /// One training step: `n_critic` discriminator updates, one on each batch of `reals`,
    /// then one generator update, then the EMA.
    pub fn train_step(&mut self, reals: &[Tensor]) -> Result<StepStats> {
        self.train_step_labelled(reals, None)
    }

    /// [`Self::train_step`] with the real batches' labels (N, K), which conditional models
    /// need: the fakes of each D step get the labels of its real batch (G's step those of the
    /// first), so real, fake and the penalties' mixtures are judged under the same labels.
    pub fn train_step_labelled(&mut self, reals: &[Tensor], real_labels: Option<&[Tensor]>) -> Result<StepStats> {
        self.train_step_supervised(reals, real_labels, None)
    }

    /// [`Self::train_step_labelled`] with, for the semi-supervised GAN, a batch of images
    /// whose labels are known for each D step (Salimans et al. 2016's labelled minibatch):
    /// D's classification loss is taken on it rather than on the few labelled images that
    /// land in the random batch.
    pub fn train_step_supervised(
        &mut self,
        reals: &[Tensor],
        real_labels: Option<&[Tensor]>,
        supervised: Option<&[(Tensor, Tensor)]>,
    ) -> Result<StepStats> {
        let nc = self.cfg.train.n_critic as usize;
        if supervised.is_some_and(|s| s.len() != nc) {
            bail!("a step with n_critic = {nc} needs {nc} labelled batches");
        }
        if reals.len() != nc {
            bail!("a step with n_critic = {nc} needs {nc} real batches, got {}", reals.len());
        }
        let conditional = !self.cfg.model.attrs.is_empty();
        match real_labels {
            None if conditional => {
                bail!("the model is conditioned on {} but the batches have no labels", self.cfg.model.attrs.join(", "))
            }
            Some(l) if l.len() != nc => bail!("{} label batches for {nc} real batches", l.len()),
            _ => {}
        }
        let real_labels = real_labels.filter(|_| conditional);
        let aux_weight = self.cfg.train.aux_weight;
        let sgan = self.cfg.model.condition == Condition::SemiSupervised.name();
        let sigma = self.instance_noise_std();
        let real_label = 1.0 - self.cfg.train.label_smoothing;
        let scheduled = self.cfg.train.lr_factor(self.step);
        let ramp = self.lr_ramp.and_then(|r| r.factor(self.step, scheduled));
        if ramp.is_none() {
            self.lr_ramp = None;
        }
        let lr_factor = ramp.unwrap_or(scheduled);
        (self.opt_g.scale, self.opt_d.scale) = (lr_factor, lr_factor);
        self.lr_applied = lr_factor;
        let mut stats = StepStats::new();
        let mut add = |k: &str, v: f64| *stats.entry(k.to_string()).or_insert(0.0) += v / nc as f64;
        let mut last_fake = None;
        for (i, real) in reals.iter().enumerate() {
            // D main: real and detached fake.
            let n = real.dim(0)?;
            let mut latent = self.g.sample_training_latent(n, &mut self.rng, &self.device)?;
            if let Some(l) = real_labels {
                latent.labels = Some(l[i].clone());
            }
            let labels = latent.labels.clone();
            let fake = self.g.forward(&latent, Mode::TRAIN)?;
            let real_in = self.with_noise(real, sigma)?;
            let fake_in = self.with_noise(&fake.detach(), sigma)?;
            // Augmentation (none unless train.augment says so), drawn apart for reals and fakes.
            let plan_r = self.aug.plan(&real_in, &mut self.rng)?;
            let plan_f = self.aug.plan(&fake_in, &mut self.rng)?;
            let mode = self.d_mode(Mode::TRAIN);
            let real_out = self.d.forward_full(&plan_r.apply(&real_in)?, labels.as_ref(), mode)?;
            let fake_out = self.d.forward_full(&plan_f.apply(&fake_in)?, labels.as_ref(), mode)?;
            self.aug.observe(&self.loss.realness(&real_out.logits, &fake_out.logits)?)?;
            let (real_logits, fake_logits) = (&real_out.logits, &fake_out.logits);
            let adv = self.loss.d_loss_smoothed(real_logits, fake_logits, real_label)?;
            let mut d_total = adv.clone();
            // SGAN: D also classifies labelled real images into the attributes' classes: those
            // of the step's labelled batch, else the labelled ones of the random batch.
            let class_out = match supervised.map(|s| &s[i]) {
                Some((x, y)) if sgan => {
                    let x_in = self.with_noise(x, sigma)?;
                    let plan = self.aug.plan(&x_in, &mut self.rng)?;
                    let out = self.d.forward_full(&plan.apply(&x_in)?, Some(y), mode)?;
                    out.aux.get(CLASS_LOGITS).cloned().map(|c| (c, y.clone()))
                }
                _ => real_out.aux.get(CLASS_LOGITS).cloned().zip(labels.clone()),
            };
            if let (true, Some((cr, y))) = (sgan, class_out) {
                let (l, n, right) = sgan_loss(&cr, &y)?;
                add("d_class_real", l.to_scalar::<f32>()? as f64);
                add("d_class_n", n as f64);
                if n > 0 {
                    add("class_acc_real", right as f64 / n as f64);
                }
                d_total = (d_total + (l * aux_weight)?)?;
            }
            // ACGAN: D also learns to classify the attributes of real images and of fakes.
            if let (false, Some(cr), Some(cf), Some(y)) =
                (sgan, real_out.aux.get(CLASS_LOGITS), fake_out.aux.get(CLASS_LOGITS), labels.as_ref())
            {
                let (lr, lf) = (class_loss(cr, y)?, class_loss(cf, y)?);
                add("d_class_real", lr.to_scalar::<f32>()? as f64);
                add("d_class_fake", lf.to_scalar::<f32>()? as f64);
                add("class_acc_real", class_accuracy(cr, y)?);
                d_total = (d_total + ((lr + lf)? * aux_weight)?)?;
            }
            // InfoGAN: Q (and D's trunk) learn to recover the codes of the fakes.
            if let (Some(q), Some(c)) = (fake_out.aux.get(Q_CODES), latent.codes.as_ref()) {
                let (cat, cont) = info_loss(q, c, self.info_codes())?;
                d_total = (d_total + ((cat + cont)? * self.cfg.train.info_weight)?)?;
            }
            // D reg: gradient penalties, lazy ones every `every` D steps, scaled by `every`.
            let d_step = self.step * nc as u64 + i as u64;
            for &(kind, weight, every) in &self.penalties {
                let Some(w) = lazy_weight(weight, every, d_step).filter(|_| kind.target() == Target::D) else {
                    continue;
                };
                // Through the augmentation: R1 is the gradient at the un-augmented reals.
                let d = &self.d;
                let plan = if kind == PenaltyKind::R2 { &plan_f } else { &plan_r };
                let critic = |x: &Tensor| d.forward(&plan.apply(x)?, labels.as_ref(), mode);
                let p = penalty(kind, &critic, &real_in, &fake_in, &mut self.rng)?;
                add(&format!("penalty_{}", kind.name()), p.to_scalar::<f32>()? as f64);
                d_total = (d_total + (p * w)?)?;
            }
            let grads = d_total.backward()?;
            // A non-finite loss or gradient never reaches the weights: the update is skipped.
            let finite = is_finite(&d_total)? && grads_finite(self.d.params(), &grads)?;
            if finite {
                self.opt_d.step(self.d.params(), &grads)?;
            } else {
                add("skipped_updates", nc as f64);
            }
            drop(grads);
            if finite && self.cfg.train.weight_clip > 0.0 {
                let c = self.cfg.train.weight_clip;
                for (_, v) in self.d.params().trainable() {
                    v.set(&v.as_tensor().clamp(-c, c)?)?;
                }
            }
            add("d_loss", adv.to_scalar::<f32>()? as f64);
            add("d_real", mean_sigmoid(real_logits)?);
            add("d_fake", mean_sigmoid(fake_logits)?);
            add("logit_real", real_logits.mean_all()?.to_scalar::<f32>()? as f64);
            add("logit_fake", fake_logits.mean_all()?.to_scalar::<f32>()? as f64);
            last_fake = Some((fake, latent, real_in));
        }

        // G main: with one critic step the same fakes (as DCGAN does), else new ones,
        // through the updated D with its weights frozen.
        let (last_fake, last_latent, real_in) = last_fake.expect("n_critic >= 1");
        let (fake, latent) = if nc == 1 {
            (last_fake, last_latent)
        } else {
            let mut latent = self.g.sample_training_latent(reals[0].dim(0)?, &mut self.rng, &self.device)?;
            if let Some(l) = real_labels {
                latent.labels = Some(l[0].clone());
            }
            (self.g.forward(&latent, Mode::TRAIN)?, latent)
        };
        let labels = latent.labels.clone();
        let fake_in = self.with_noise(&fake, sigma)?;
        let mode = self.d_mode(Mode::FROZEN);
        let plan_f = self.aug.plan(&fake_in, &mut self.rng)?;
        let out = self.d.forward_full(&plan_f.apply(&fake_in)?, labels.as_ref(), mode)?;
        let g_loss = if self.cfg.train.feature_matching {
            // Feature matching: G matches the mean of D's features on the real batch.
            let plan_r = self.aug.plan(&real_in, &mut self.rng)?;
            let real_out = self.d.forward_full(&plan_r.apply(&real_in)?, labels.as_ref(), mode)?;
            let (real_f, fake_f) = (features(&real_out)?.detach(), features(&out)?);
            feature_matching(&real_f, &fake_f)?
        } else {
            let real_logits = match self.loss.g_needs_real() {
                true => {
                    let plan_r = self.aug.plan(&real_in, &mut self.rng)?;
                    Some(self.d.forward(&plan_r.apply(&real_in)?, labels.as_ref(), mode)?.detach())
                }
                false => None,
            };
            self.loss.g_loss(real_logits.as_ref(), &out.logits)?
        };
        // G reg: regularisers of the generator, on their interval, scaled by it.
        let mut g_total = g_loss.clone();
        if let (false, Some(c), Some(y)) = (sgan, out.aux.get(CLASS_LOGITS), labels.as_ref()) {
            let l = class_loss(c, y)?;
            stats.insert("g_class".into(), l.to_scalar::<f32>()? as f64);
            g_total = (g_total + (l * aux_weight)?)?;
        }
        // InfoGAN: G makes its codes recoverable by Q.
        if let (Some(q), Some(c)) = (out.aux.get(Q_CODES), latent.codes.as_ref()) {
            let (cat, cont) = info_loss(q, c, self.info_codes())?;
            stats.insert("info_cat".into(), cat.to_scalar::<f32>()? as f64);
            stats.insert("info_cont".into(), cont.to_scalar::<f32>()? as f64);
            g_total = (g_total + ((cat + cont)? * self.cfg.train.info_weight)?)?;
        }
        let mut path = None;
        for &(kind, weight, every) in &self.penalties {
            let Some(w) = lazy_weight(weight, every, self.step).filter(|_| kind.target() == Target::G) else {
                continue;
            };
            let value = match kind {
                PenaltyKind::PullAway => pull_away(out.aux.get("embedding").context("D gave no embedding")?)?,
                PenaltyKind::PathLength => {
                    // On half the batch, with the same latent distribution (mixing included).
                    let n = (reals[0].dim(0)? / 2).max(1);
                    let latent = self.g.sample_training_latent(n, &mut self.rng, &self.device)?;
                    let sg = self.g.style().context("path length needs a generator with a W space")?;
                    let pl = path_length(sg, &latent, Mode::TRAIN, (self.pl_mean, PATH_LENGTH_DECAY), &mut self.rng)?;
                    self.pl_mean = pl.new_mean;
                    stats.insert("pl_mean".into(), pl.new_mean);
                    stats.insert("pl_length".into(), pl.mean_length);
                    let value = pl.value.clone();
                    path = Some(pl);
                    value
                }
                other => bail!("{} is not a generator regulariser", other.name()),
            };
            stats.insert(format!("penalty_{}", kind.name()), value.to_scalar::<f32>()? as f64);
            g_total = (g_total + (value * w)?)?;
        }
        let mut grads = g_total.backward()?;
        if let Some(surrogate) = path.as_ref().map(|pl| pl.mapping_surrogate(&grads)).transpose()?.flatten() {
            // The path-length term's gradient through the ws into the mapping network.
            let extra = surrogate.backward()?;
            for (_, v) in self.g.params().trainable() {
                if let Some(e) = extra.get(v.as_tensor()) {
                    let sum = match grads.get(v.as_tensor()) {
                        Some(g) => (g + e)?,
                        None => e.clone(),
                    };
                    grads.insert(v.as_tensor(), sum);
                }
            }
        }
        drop(path);
        if is_finite(&g_total)? && grads_finite(self.g.params(), &grads)? {
            self.opt_g.step(self.g.params(), &grads)?;
        } else {
            *stats.entry("skipped_updates".into()).or_insert(0.0) += 1.0;
        }
        drop(grads);

        // EMA of G, with a warm-up so early averages are not dominated by the init.
        let t = self.step as f64;
        let decay = self.cfg.train.ema_decay.min((1.0 + t) / (10.0 + t));
        self.g_ema.params().ema_from(self.g.params(), decay)?;
        self.step += 1;
        self.images_seen += self.cfg.train.images_per_step();

        stats.insert("g_loss".into(), g_loss.to_scalar::<f32>()? as f64);
        if sigma > 0.0 {
            stats.insert("instance_noise".into(), sigma);
        }
        if self.cfg.train.lr_decay_steps > 0 || ramp.is_some() {
            stats.insert("lr_factor".into(), lr_factor);
        }
        if self.aug.is_on() && self.aug.kind != super::augment::Kind::DiffAugment {
            stats.insert("augment_p".into(), self.aug.p);
            if let Some(rt) = self.aug.last_rt {
                stats.insert("ada_rt".into(), rt);
            }
        }
        // Values of a diverged pass stay out of the logs; `skipped_updates` says what happened.
        stats.retain(|_, v| v.is_finite());
        Ok(stats)
    }

    /// Whether every weight and buffer of G, D and G_ema is finite (a checkpoint must be).
    pub fn networks_finite(&self) -> Result<bool> {
        for p in [self.g.params(), self.d.params(), self.g_ema.params()] {
            let mut t = HashMap::new();
            p.to_tensors("", &mut t);
            for v in t.values() {
                if !is_finite(&v.to_dtype(candle_core::DType::F32)?.abs()?.sum_all()?)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn info_codes(&self) -> InfoCodes {
        InfoCodes { cat: self.cfg.model.info_cat, cont: self.cfg.model.info_cont }
    }

    /// `mode` for a pass of D, with a fresh seed for its stochastic layers (dropout) when it
    /// has any, drawn from the run's RNG so that a resumed run repeats it.
    fn d_mode(&mut self, mode: Mode) -> Mode {
        match self.cfg.model.d_dropout > 0.0 {
            true => mode.with_noise(self.rng.next_u64()),
            false => mode,
        }
    }

    /// Gives the EMA generator batch-norm statistics of its own ("standing
    /// statistics"): the running averages copied from G do not match G_ema's weights.
    pub fn refresh_ema_stats(&self) -> Result<()> {
        let mut rng = Rng::derived(self.cfg.train.seed, STANDING_STATS_TAG);
        for k in 0..STANDING_STATS_BATCHES {
            let latent = self.g_ema.sample_latent(64, &mut rng, &self.device)?;
            let mode = Mode { bn: BnMode::Accumulate(1.0 / (k as f64 + 1.0)), frozen: true, noise: None };
            self.g_ema.forward(&latent, mode)?;
        }
        Ok(())
    }

    /// The fixed-latent sample grid from the EMA generator.
    pub fn sample_grid(&self) -> Result<image::RgbImage> {
        self.refresh_ema_stats()?;
        let n = self.cfg.log.sample_count;
        let latent = fixed_latents(self.g_ema.as_ref(), self.cfg.train.seed, FIXED_LATENTS_TAG, n, &self.device)?;
        let x = self.g_ema.forward(&latent, Mode::EVAL)?;
        let cols = (n as f64).sqrt().ceil() as usize;
        Ok(grid::make_grid(&grid::to_images(&x)?, cols))
    }
}

/// Goes back to the run's newest checkpoint with halved learning rates after `bad` steps in
/// a row with non-finite updates (recorded in the config history, stats truncated), or
/// stops with a message when there is none or this was one roll-back too many.
fn roll_back(run: &Path, session: Session, bad: u64, rollbacks: u32, device: &Device) -> Result<Session> {
    let step = session.step;
    let t = &session.cfg.train;
    let ck = match checkpoint::read_latest(run, device) {
        Ok(ck) => ck,
        Err(_) => bail!(
            "training diverged at step {step}: {bad} steps in a row had non-finite losses or gradients (their updates were skipped), and the run has no checkpoint to go back to; lower the learning rates (--lr-g, --lr-d) or check the data"
        ),
    };
    if rollbacks > t.max_rollbacks {
        bail!(
            "training keeps diverging: at step {step} after {} roll-backs with halved learning rates (now lr_g {:e}, lr_d {:e}); the checkpoints in {} are intact; resume from them with lower learning rates (--override train.lr_g=...) or another recipe",
            t.max_rollbacks,
            t.lr_g,
            t.lr_d,
            run.join("checkpoints").display()
        );
    }
    let path = ck.path.clone();
    let mut cfg = session.cfg.clone();
    // The discarded steps cost CPU time too.
    let cpu = session.cpu_seconds();
    drop(session);
    let (old_g, old_d) = (cfg.train.lr_g, cfg.train.lr_d);
    (cfg.train.lr_g, cfg.train.lr_d) = (old_g * 0.5, old_d * 0.5);
    let mut s = Session::from_checkpoint(&ck, &cfg, device)?;
    (s.cpu_base, s.cpu_mark) = (cpu, stats::process_cpu_seconds());
    eprintln!(
        "step {step}: {bad} steps in a row had non-finite losses or gradients; going back to step {} ({}) with halved learning rates (lr_g {old_g:e} -> {:e}, lr_d {old_d:e} -> {:e}), roll-back {rollbacks} of at most {}",
        s.step,
        path.display(),
        cfg.train.lr_g,
        cfg.train.lr_d,
        cfg.train.max_rollbacks
    );
    let entry = serde_json::json!({
        "step": s.step,
        "rollback": {"diverged_at": step, "steps_in_a_row": bad},
        "changes": {"train.lr_g": [old_g, cfg.train.lr_g], "train.lr_d": [old_d, cfg.train.lr_d]},
    });
    let mut text = std::fs::read_to_string(run.join(CONFIG_HISTORY)).unwrap_or_default();
    text.push_str(&format!("{entry}\n"));
    crate::fsutil::write_atomic(&run.join(CONFIG_HISTORY), text.as_bytes())?;
    cfg.save(&run.join("config.toml"))?;
    stats::truncate_after(&run.join("stats.jsonl"), s.step)?;
    stats::truncate_after(&run.join(super::eval::METRICS_FILE), s.step)?;
    Ok(s)
}

/// Opens the training data: a prepared cache, or a folder prepared on the fly into
/// the cache directory (reused while the folder's listing, its files' names, sizes and
/// modification times, is unchanged; with `data.verify` while their bytes are).
pub fn open_data(cfg: &RunConfig, progress: bool) -> Result<Dataset> {
    let path = PathBuf::from(&cfg.data.path);
    if cfg.data.path.is_empty() {
        bail!("no training data: give --data FOLDER_OR_CACHE");
    }
    let size = cfg.model.image_size;
    let cache = if path.is_file() {
        path.clone()
    } else if path.is_dir() {
        let spec = CropResize { size: size as u32, crop: cfg.data.crop };
        let opts = PrepareOptions { spec, strict: cfg.data.strict, progress };
        prepare_cached(&path, &cfg.data.cache_dir(), &opts, cfg.data.verify)?
    } else {
        bail!(
            "data {} does not exist (give an image folder or a .{CACHE_EXTENSION} cache made by `facegan prepare`)",
            path.display()
        );
    };
    let ds = Dataset::open(&cache)?;
    if ds.size() != size {
        bail!(
            "{} holds {}x{} images but the model makes {size}x{size}; prepare it with --size {size}",
            cache.display(),
            ds.size(),
            ds.size()
        );
    }
    Ok(ds)
}

/// The labels of `data`'s images for a conditional model (None for an unconditional one).
/// The attribute file is `data.attr_file`, else `list_attr_celeba.txt` in or beside the
/// image folder (for a prepared cache, the folder it was prepared from). The cache stores
/// the file's labels the first time (and again when the file's bytes change), and they are
/// read from it from then on; without an attribute file, the labels stored in the cache
/// serve, so a cache moved on its own keeps them.
pub fn open_labels(cfg: &RunConfig, data: &Dataset) -> Result<Option<Labels>> {
    if cfg.model.attrs.is_empty() {
        return Ok(None);
    }
    let file = match find_attr_file(cfg.data.attr_file.as_deref(), Path::new(&cfg.data.path)) {
        Ok(path) => {
            // The hash alone tells whether the stored labels are this file's: no parse then.
            let bytes = attrs::read_bytes(&path)?;
            let stored = data.header.labels.as_ref().is_some_and(|l| l.key == attrs::key_of(&bytes));
            match stored {
                true => data.stored_attrs()?.context("the cache's labels went missing")?,
                false => {
                    let file = AttrFile::from_bytes(bytes, &path)?;
                    match store_labels(&data.path, &file) {
                        Ok(()) => eprintln!("stored the labels of {} in {}", path.display(), data.path.display()),
                        Err(e) => eprintln!("warning: {e:#}; reading them from {} each time", path.display()),
                    }
                    file
                }
            }
        }
        Err(not_found) if cfg.data.attr_file.is_some() => return Err(not_found),
        Err(not_found) => match data.stored_attrs()? {
            Some(stored) => {
                eprintln!(
                    "{} has no attribute file beside it; using the labels stored in {} (read from {})",
                    cfg.data.path,
                    data.path.display(),
                    stored.path.display()
                );
                stored
            }
            None => return Err(not_found),
        },
    };
    Ok(Some(Labels::from_file(&file, &cfg.model.attrs, &data.header.names, cfg.data.strict)?))
}

/// The labels a run trains on: [`open_labels`] without the `data.held_out` images, and with
/// only `train.labelled_fraction` of them known (semi-supervised).
pub fn training_labels(cfg: &RunConfig, data: &Dataset, progress: bool) -> Result<Option<Labels>> {
    let Some(mut labels) = open_labels(cfg, data)? else { return Ok(None) };
    if cfg.data.held_out > 0 {
        labels.hold_out(cfg.data.held_out)?;
    }
    if cfg.train.labelled_fraction < 1.0 {
        let kept = labels.hide(cfg.train.labelled_fraction, cfg.train.seed);
        if progress {
            eprintln!("semi-supervised: the labels of {kept} of {} training images are used", labels.labelled.len());
        }
    }
    Ok(Some(labels))
}

/// The semi-supervised GAN's second loader: batches of the training images whose labels are
/// known (at most a batch of them), in an order of their own.
fn supervised_loader(cfg: &RunConfig, labels: &Labels, data: &Path) -> Result<Loader> {
    let mut known = labels.clone();
    known.labelled.retain(|&i| labels.of(i).first().is_some_and(|&v| v >= 0.0));
    let batch = cfg.train.batch_size.min(known.labelled.len()).max(1);
    if known.labelled.is_empty() {
        bail!("semi-supervised GAN: no training image has a known label; raise train.labelled_fraction");
    }
    Loader::new(Dataset::open(data)?, batch, cfg.train.seed ^ 0x5u64.rotate_left(60), cfg.train.flip)?
        .with_labels(known)
}

/// Trains (or resumes) a run, writing checkpoints, samples and stats under the run folder.
pub fn train(opts: TrainOptions) -> Result<TrainOutcome> {
    let run = &opts.run_dir;
    // One trainer per run folder, from before anything in it is read or written.
    if !opts.resume {
        ensure_dir(run)?;
    }
    let _lock = match run.is_dir() {
        true => Some(super::lock::RunLock::acquire(run)?),
        false => None,
    };
    let mut session = if opts.resume {
        let ck = checkpoint::read_latest(run, &opts.device)?;
        let changes = ck.config.trajectory_changes(&opts.config);
        let refused: Vec<String> = changes
            .iter()
            .filter(|(k, _, _)| !opts.overrides.contains(k))
            .map(|(k, old, new)| format!("  {k}: {old} in the checkpoint, {new} requested"))
            .collect();
        if !refused.is_empty() {
            bail!(
                "{}: resuming with these settings would silently change the run:\n{}\nleave them out to continue the run as it was, or name each one with --override KEY=VALUE",
                run.display(),
                refused.join("\n")
            );
        }
        let s = Session::from_checkpoint(&ck, &opts.config, &opts.device)?;
        if !changes.is_empty() {
            let entry = serde_json::json!({
                "step": s.step,
                "changes": changes.iter().map(|(k, old, new)| (k.clone(), serde_json::json!([old, new]))).collect::<serde_json::Map<_, _>>(),
            });
            let mut text = std::fs::read_to_string(run.join(CONFIG_HISTORY)).unwrap_or_default();
            text.push_str(&format!("{entry}\n"));
            crate::fsutil::write_atomic(&run.join(CONFIG_HISTORY), text.as_bytes())?;
            for (k, old, new) in &changes {
                eprintln!("override: {k} {old} -> {new} from step {}", s.step);
            }
        }
        eprintln!("resuming {} from step {}", run.display(), s.step);
        stats::truncate_after(&run.join("stats.jsonl"), s.step)?;
        stats::truncate_after(&run.join(super::eval::METRICS_FILE), s.step)?;
        s
    } else {
        if !checkpoint::list_checkpoints(run).is_empty() {
            bail!(
                "{} already holds a run; resume it with --resume {} or choose another --out",
                run.display(),
                run.display()
            );
        }
        match &opts.init_from {
            None => Session::new(&opts.config, &opts.device)?,
            Some(file) => {
                let ck = checkpoint::read(file, &opts.device)?;
                let s = Session::from_continuation(&ck, &opts.config, &opts.device)?;
                if s.step >= opts.config.train.steps {
                    bail!(
                        "{}: the continuation is at step {}; give --steps more than that (steps count from the start of the original run)",
                        file.display(),
                        s.step
                    );
                }
                eprintln!("starting {} from {} at step {}", run.display(), file.display(), s.step);
                // The learning curve so far goes on in this run's metrics.jsonl (the folder
                // holds no run: it has no checkpoint).
                let curve: Vec<_> = super::eval::carried_curve(&ck)?.into_iter().filter(|l| l.step <= s.step).collect();
                if !curve.is_empty() {
                    ensure_dir(run)?;
                    let path = run.join(super::eval::METRICS_FILE);
                    crate::fsutil::write_atomic(&path, super::eval::to_jsonl(&curve)?.as_bytes())?;
                    eprintln!("carried its learning curve ({} evaluations) into {}", curve.len(), path.display());
                }
                s
            }
        }
    };
    let cfg = session.cfg.clone();
    ensure_dir(run)?;
    ensure_dir(&run.join("samples"))?;
    cfg.save(&run.join("config.toml"))?;

    let data = open_data(&cfg, opts.progress)?;
    let labels = training_labels(&cfg, &data, opts.progress)?;
    let evaluation = super::eval::TrainEval::new(&cfg, &data, run, &opts.device, opts.progress)?;
    let mut loader = Loader::new(data, cfg.train.batch_size, cfg.train.seed, cfg.train.flip)?;
    let mut supervised: Option<Loader> = None;
    if let Some(labels) = labels {
        if session.step == 0 && Condition::parse(&cfg.model.condition)?.conditions_g() {
            // The generator's label prior: the attributes' frequencies in the training data.
            let freq = labels.frequencies();
            set_label_prior(session.g.params(), &freq)?;
            set_label_prior(session.g_ema.params(), &freq)?;
        }
        if Condition::parse(&cfg.model.condition)? == Condition::SemiSupervised {
            supervised = Some(supervised_loader(&cfg, &labels, loader.data.path.as_path())?);
        }
        loader = loader.with_labels(labels)?;
    } else if cfg.data.held_out > 0 {
        loader = loader.hold_out(cfg.data.held_out)?;
    }
    install_ctrl_c();
    crate::interrupt::clear();

    let total = cfg.train.steps;
    let tty = opts.progress && std::io::stderr().is_terminal();
    let bar = if tty { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}").unwrap());
    bar.set_position(session.step);
    let mut tb = super::tensorboard::EventWriter::create(&run.join(super::tensorboard::TB_DIR), session.step)?;
    if session.step == 0 {
        let g = session.sample_grid()?;
        grid::save_png(&g, &run.join("samples").join("step-0000000.png"))?;
        tb.image(0, "samples", &g)?;
        tb.flush()?;
    }

    let stats_path = run.join("stats.jsonl");
    let mut acc = Accumulator::default();
    let start = Instant::now();
    let mut interval_start = Instant::now();
    let mut interval_steps = 0u64;
    let mut interrupted = false;
    let mut last_ck: Option<PathBuf> = None;
    let mut last_ck_time = Instant::now();
    let (mut diverged_in_a_row, mut rollbacks) = (0u64, 0u32);
    while session.step < total {
        let nc = cfg.train.n_critic as u64;
        let (reals, labels): (Vec<Tensor>, Vec<Option<Tensor>>) = (0..nc)
            .map(|i| loader.batch(session.step * nc + i, &mut session.rng, &opts.device))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let labels: Option<Vec<Tensor>> = labels.into_iter().collect();
        let sup: Option<Vec<(Tensor, Tensor)>> = match supervised.as_mut() {
            Some(l) => Some(
                (0..nc)
                    .map(|i| {
                        let (x, y) = l.batch(session.step * nc + i, &mut session.rng, &opts.device)?;
                        Ok((x, y.ok_or_else(|| anyhow!("the labelled loader gave no labels"))?))
                    })
                    .collect::<Result<_>>()?,
            ),
            None => None,
        };
        let step_stats = session.train_step_supervised(&reals, labels.as_deref(), sup.as_deref())?;
        diverged_in_a_row = if step_stats.contains_key("skipped_updates") { diverged_in_a_row + 1 } else { 0 };
        for (k, v) in step_stats {
            acc.add(&k, v);
        }
        if diverged_in_a_row >= cfg.train.divergence_patience {
            rollbacks += 1;
            session = roll_back(run, session, diverged_in_a_row, rollbacks, &opts.device)?;
            (diverged_in_a_row, interval_steps, interval_start) = (0, 0, Instant::now());
            acc.take();
            bar.set_position(session.step);
            continue;
        }
        interval_steps += 1;
        let step = session.step;
        bar.set_position(step);
        if step % cfg.log.log_every == 0 || step == total {
            let secs = interval_start.elapsed().as_secs_f64();
            // Real images shown to D per second (n_critic batches per step).
            let ips = (interval_steps * cfg.train.images_per_step()) as f64 / secs.max(1e-9);
            let mut means = acc.take();
            if let Some(c) = session.cpu_seconds() {
                means.insert("cpu_s".into(), c);
            }
            let line = stats::line(step, means, ips, start.elapsed().as_secs_f64());
            stats::append(&stats_path, &line)?;
            let mut scalars = vec![
                ("d_loss", line.d_loss),
                ("g_loss", line.g_loss),
                ("d_real", line.d_real),
                ("d_fake", line.d_fake),
                ("img_per_s", line.img_per_s),
            ];
            scalars.extend(line.extra.iter().map(|(k, v)| (k.as_str(), *v)));
            tb.scalars(step, &scalars)?;
            tb.flush()?;
            let (d, g, dr, df) = (line.d_loss, line.g_loss, line.d_real, line.d_fake);
            let mut msg = format!("D {d:.3} G {g:.3} D(x) {dr:.2} D(G(z)) {df:.2}");
            for (k, v) in line.extra.iter().filter(|(k, _)| k.starts_with("penalty_")) {
                msg.push_str(&format!(" {} {v:.3}", &k[8..]));
            }
            msg.push_str(&format!(" {ips:.1} img/s"));
            if tty {
                bar.set_message(msg);
            } else if opts.progress {
                eprintln!("step {step}/{total} {msg}");
            }
            interval_start = Instant::now();
            interval_steps = 0;
        }
        if step % cfg.log.sample_every == 0 || step == total {
            let g = session.sample_grid()?;
            grid::save_png(&g, &run.join("samples").join(format!("step-{step:07}.png")))?;
            tb.image(step, "samples", &g)?;
            tb.flush()?;
        }
        // (log.eval_every is 0 when no evaluation is set up: only read it when there is one.)
        let eval_due = || step % cfg.log.eval_every == 0 || step == total;
        if let Some(ev) = evaluation.as_ref().filter(|_| eval_due() && !crate::interrupt::requested()) {
            session.refresh_ema_stats()?;
            let cpu_s = session.cpu_seconds();
            match session.without_cpu_count(|s| ev.run(s.g_ema.as_ref(), &cfg, step, s.images_seen, cpu_s)) {
                Ok(line) => {
                    let metrics = [
                        ("metrics/fid", line.fid),
                        ("metrics/kid", line.kid),
                        ("metrics/precision", line.precision),
                        ("metrics/recall", line.recall),
                        ("metrics/swd", line.swd),
                    ];
                    let present: Vec<(&str, f64)> = metrics.iter().filter_map(|(k, v)| v.map(|v| (*k, v))).collect();
                    tb.scalars(step, &present)?;
                    tb.flush()?;
                    if tty {
                        bar.println(format!("step {step}: {}", line.summary()));
                    } else if opts.progress {
                        eprintln!("step {step}/{total} {} ({:.0} s)", line.summary(), line.seconds.unwrap_or(0.0));
                    }
                }
                // A signal during the evaluation: no metrics line; the checkpoint comes next.
                Err(e) if e.is::<crate::interrupt::Interrupted>() => {
                    eprintln!("step {step}: evaluation cut short by the interruption");
                }
                Err(e) => return Err(e),
            }
        }
        let stop_now = crate::interrupt::requested() || opts.stop_after == Some(step);
        let minutes = cfg.log.checkpoint_minutes;
        let by_time = minutes > 0.0 && last_ck_time.elapsed().as_secs_f64() >= minutes * 60.0;
        if step % cfg.log.checkpoint_every == 0 || step == total || stop_now || by_time {
            if !session.networks_finite()? {
                // Never over a good checkpoint: a non-finite weight or buffer (batch-norm
                // statistics of an overflowing pass) sends the run back instead.
                rollbacks += 1;
                session = roll_back(run, session, diverged_in_a_row.max(1), rollbacks, &opts.device)?;
                diverged_in_a_row = 0;
                continue;
            }
            last_ck_time = Instant::now();
            let path = checkpoint::checkpoint_path(run, step);
            session.save(&path)?;
            checkpoint::prune(run, cfg.log.keep_checkpoints);
            last_ck = Some(path);
        }
        if stop_now {
            interrupted = true;
            break;
        }
    }
    bar.finish_and_clear();
    if !acc.is_empty() {
        acc.take();
    }
    let checkpoint = match last_ck {
        Some(p) => p,
        None => {
            let p = checkpoint::checkpoint_path(run, session.step);
            session.save(&p)?;
            p
        }
    };
    crate::report::write_report(run)?;
    Ok(TrainOutcome { step: session.step, interrupted, checkpoint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_sigmoid_is_the_mean_probability() -> Result<()> {
        // σ(0) = 1/2, σ(ln 3) = 3/4, and the saturated ends give 0 and 1 without NaN.
        let x = Tensor::new(&[0.0f32, 3f32.ln(), -200.0, 200.0], &candle_core::Device::Cpu)?;
        let m = mean_sigmoid(&x)?;
        assert!((m - (0.5 + 0.75 + 0.0 + 1.0) / 4.0).abs() < 1e-6, "{m}");
        Ok(())
    }
}
