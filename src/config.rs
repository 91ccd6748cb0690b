//! The whole description of a run: model, training and logging settings, with named
//! presets, TOML load/save and command-line overrides.

use crate::data::cache::default_cache_dir;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Generator/discriminator family (`crate::models::FAMILIES`): mlp, dcgan, resnet, ebgan.
    pub arch: String,
    /// Image side: 32, 64 or 128.
    pub image_size: usize,
    /// Latent size.
    pub nz: usize,
    /// Generator width (channels of its last hidden layer).
    pub ngf: usize,
    /// Discriminator width (channels of its first layer).
    pub ndf: usize,
    /// Normalisation in the discriminator's hidden layers: "batch", "layer" or "none".
    /// Per-sample gradient penalties need "layer" or "none".
    pub d_norm: String,
    /// Spectral normalisation of the generator's convolutions and linear layers.
    pub g_spectral_norm: bool,
    /// Spectral normalisation of the discriminator's convolutions and linear layers.
    pub d_spectral_norm: bool,
    /// Side of the feature maps where G and D get a self-attention block (SAGAN); 0: none.
    pub attention: usize,
    /// Minibatch standard deviation before D's last layers, with this group size; 0: off.
    pub mbstd_group: usize,
    /// Self-modulation: G's batch norms take their scale and shift from z.
    pub self_modulation: bool,
    /// Dropout probability in D's hidden layers (the MLP GAN's discriminator).
    pub d_dropout: f64,
    /// Style families: size of the intermediate latent w (unset: nz).
    pub w_dim: Option<usize>,
    /// Style families: fully connected layers of the mapping network (unset: 8).
    pub mapping_layers: Option<usize>,
    /// Style families: probability that a training batch mixes two latents' styles (unset: 0.9).
    pub style_mixing: Option<f64>,
    /// Conditional models: the attributes (CelebA's names) they are conditioned on, or for
    /// `acgan` classify, in order; empty for unconditional models.
    pub attrs: Vec<String>,
    /// How the labels are used (`crate::models::conditional`): none, concat (cGAN),
    /// projection (conditional BN in G, projection D), acgan (auxiliary classifier in D).
    pub condition: String,
    /// InfoGAN: categories of the categorical latent code (0: none).
    pub info_cat: usize,
    /// InfoGAN: continuous latent codes, each U(-1, 1).
    pub info_cont: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: "dcgan".into(),
            image_size: 64,
            nz: 100,
            ngf: 64,
            ndf: 64,
            d_norm: "batch".into(),
            g_spectral_norm: false,
            d_spectral_norm: false,
            attention: 0,
            mbstd_group: 0,
            self_modulation: false,
            d_dropout: 0.0,
            w_dim: None,
            mapping_layers: None,
            style_mixing: None,
            attrs: Vec::new(),
            condition: "none".into(),
            info_cat: 0,
            info_cont: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub batch_size: usize,
    /// Total number of training steps (one D update and one G update each).
    pub steps: u64,
    pub lr_g: f64,
    pub lr_d: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Adversarial loss; see `facegan::loss::LOSS_NAMES`.
    pub loss: String,
    /// LSGAN's targets (a: fake, b: real, c: the generator's).
    pub lsgan_targets: [f64; 3],
    /// Gradient penalties on D, each with its weight and lazy interval.
    pub penalties: Vec<crate::penalty::PenaltyConfig>,
    /// Discriminator (critic) updates per generator update.
    pub n_critic: u32,
    /// "adam" or "rmsprop".
    pub optimizer: String,
    /// Clip every D weight to [-c, c] after each D update (WGAN); 0 disables.
    pub weight_clip: f64,
    /// One-sided label smoothing: real targets become 1 - s (cross-entropy losses only).
    pub label_smoothing: f64,
    /// Instance noise: std of Gaussian noise added to D's inputs at the start.
    pub instance_noise: f64,
    /// Steps over which instance noise decays linearly to 0 (0: it never decays).
    pub instance_noise_steps: u64,
    pub seed: u64,
    /// Decay of the generator's exponential moving average.
    pub ema_decay: f64,
    /// Random horizontal flips of real images.
    pub flip: bool,
    /// EBGAN's margin m: D's loss is E(x) + max(0, m − E(G(z))) (loss "ebgan").
    pub ebgan_margin: f64,
    /// ACGAN: weight of the auxiliary attribute-classification loss in D's and G's losses.
    pub aux_weight: f64,
    /// InfoGAN: weight λ of the mutual-information loss (Q and D in D's step, G in its own).
    pub info_weight: f64,
    /// Semi-supervised GAN: the share of training images whose labels D's classifier sees
    /// (chosen by the seed); the others train D only as real images.
    pub labelled_fraction: f64,
    /// G's loss by feature matching (Salimans et al. 2016): the squared distance between the
    /// batch means of D's last hidden features on real images and on fakes, in place of the
    /// adversarial G loss (D's loss is unchanged). Needs a D with a `features` output (DCGAN's).
    pub feature_matching: bool,
    /// Augmentation of D's inputs (real and fake, in D's and G's passes, differentiable):
    /// "none", "diffaugment", "ada" (p adapts to D's overfitting) or "fixed" (ADA's
    /// pipeline at p = augment_p); see `facegan::train::augment`.
    pub augment: String,
    /// DiffAugment's policies ("color,translation,cutout") or ADA's groups ("bgc");
    /// empty: those defaults.
    pub augment_pipe: String,
    /// ADA: the initial p ("ada") or the constant one ("fixed").
    pub augment_p: f64,
    /// ADA: the target of the overfitting heuristic r_t = E[sign(D(real))].
    pub ada_target: f64,
    /// ADA: thousands of real images over which p can move from 0 to 1.
    pub ada_kimg: f64,
    /// Optimizer updates over which the learning rates ramp up from zero (0: none;
    /// `train --init-from` sets 100 unless given).
    pub lr_warmup: u64,
    /// Steps at the end of the run (the last `lr_decay_steps` before `steps`) over which
    /// both learning rates fall linearly towards zero, as SN-GAN's schedule (0: constant
    /// learning rates; `steps`: decay over the whole run).
    pub lr_decay_steps: u64,
    /// Steps in a row with a skipped (non-finite) update after which the run goes back to
    /// its newest checkpoint with halved learning rates.
    pub divergence_patience: u64,
    /// Roll-backs after which a run that keeps diverging stops.
    pub max_rollbacks: u32,
}

impl TrainConfig {
    /// Real images shown to D per training step (n_critic batches).
    pub fn images_per_step(&self) -> u64 {
        self.batch_size as u64 * self.n_critic as u64
    }

    /// The factor on both learning rates for the update made at step `step` (counted from
    /// 0): 1 until the last `lr_decay_steps` steps, then falling linearly, to
    /// 1/`lr_decay_steps` at the last step.
    pub fn lr_factor(&self, step: u64) -> f64 {
        let start = self.steps.saturating_sub(self.lr_decay_steps);
        match self.lr_decay_steps {
            0 => 1.0,
            _ if step < start => 1.0,
            d => (self.steps.saturating_sub(step) as f64 / d as f64).clamp(0.0, 1.0),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            steps: 20_000,
            lr_g: 2e-4,
            lr_d: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            loss: "non-saturating".into(),
            lsgan_targets: [0.0, 1.0, 1.0],
            penalties: Vec::new(),
            n_critic: 1,
            optimizer: "adam".into(),
            weight_clip: 0.0,
            label_smoothing: 0.0,
            instance_noise: 0.0,
            instance_noise_steps: 0,
            seed: 0,
            ema_decay: 0.999,
            flip: true,
            ebgan_margin: 1.0,
            aux_weight: 1.0,
            info_weight: 1.0,
            labelled_fraction: 1.0,
            feature_matching: false,
            augment: "none".into(),
            augment_pipe: String::new(),
            augment_p: 0.0,
            ada_target: 0.6,
            ada_kimg: 500.0,
            lr_warmup: 0,
            lr_decay_steps: 0,
            divergence_patience: 10,
            max_rollbacks: 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Steps between lines of stats.jsonl.
    pub log_every: u64,
    /// Steps between sample grids.
    pub sample_every: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Minutes of training after which a checkpoint is written whatever the step count
    /// (so a crash costs at most this much); 0: by steps only.
    pub checkpoint_minutes: f64,
    /// How many checkpoints to keep (the newest).
    pub keep_checkpoints: usize,
    /// Faces in each sample grid.
    pub sample_count: usize,
    /// Steps between evaluations of the EMA generator (metrics.jsonl); 0: never.
    pub eval_every: u64,
    /// Faces generated for each evaluation.
    pub eval_num: usize,
    /// Reference images (the first ones of the training data); None: as many as eval_num.
    pub eval_num_real: Option<usize>,
    /// Metrics computed during training, comma-separated (fid, kid, pr, swd).
    pub eval_metrics: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            log_every: 50,
            sample_every: 500,
            checkpoint_every: 1000,
            checkpoint_minutes: 10.0,
            keep_checkpoints: 3,
            sample_count: 64,
            eval_every: 0,
            eval_num: 1000,
            eval_num_real: None,
            eval_metrics: "fid".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Image folder or prepared cache (.fgc).
    pub path: String,
    /// Side of the central square cut before resizing (None: the largest square).
    pub crop: Option<u32>,
    /// CelebA's attribute file for conditional models (None: `list_attr_celeba.txt` in or
    /// beside the image folder).
    pub attr_file: Option<String>,
    /// Refuse, rather than skip, unreadable images and images without attribute rows.
    pub strict: bool,
    /// Hash every image of a folder to check that its cache still matches (instead of
    /// trusting the files' names, sizes and modification times).
    pub verify: bool,
    /// The last N images (by file name) are kept out of training: for conditional models
    /// the last N labelled ones, to measure a classifier or an SGAN's D on them; for the
    /// others the last N images, the faces `--eval-every` and `facegan eval --held-out N`
    /// compare with, faces the model never saw.
    pub held_out: usize,
    /// Where a folder given as `path` is prepared on the fly, and where the reference
    /// features of `--eval-every` are kept (None: [`default_cache_dir`]).
    pub cache_dir: Option<String>,
}

impl DataConfig {
    /// The cache folder to use: `cache_dir`, else [`default_cache_dir`].
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.as_ref().map(PathBuf::from).unwrap_or_else(default_cache_dir)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The preset this configuration started from.
    pub preset: String,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub log: LogConfig,
    pub data: DataConfig,
}

impl RunConfig {
    /// The named preset (`crate::presets::PRESETS`).
    pub fn preset(name: &str) -> Result<Self> {
        crate::presets::preset(name)
    }

    pub fn from_toml(text: &str, source: &str) -> Result<Self> {
        let c: RunConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        c.validate().with_context(|| source.to_string())?;
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Every setting as `section.key = value` (TOML syntax), sorted by key.
    pub fn flat(&self) -> Vec<(String, String)> {
        fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        walk(&key, v, out);
                    }
                }
                other => out.push((prefix.to_string(), other.to_string())),
            }
        }
        let mut out = Vec::new();
        walk("", &toml::Value::try_from(self).expect("config serialises"), &mut out);
        out.sort();
        out
    }

    /// The settings that change a run's trajectory and differ between `self` (a run's
    /// checkpoint) and `requested`: (key, checkpoint's value, requested value). Only the run
    /// length (`train.steps`), logging, evaluation and sampling (`log.*`), the data path and
    /// the preset label may change freely on resume.
    pub fn trajectory_changes(&self, requested: &RunConfig) -> Vec<(String, String, String)> {
        let free = |k: &str| {
            k == "train.steps"
                || k.starts_with("log.")
                || k == "data.path"
                || k == "data.attr_file"
                || k == "data.verify"
                || k == "data.cache_dir"
                || k == "preset"
        };
        let (mine, theirs) = (self.flat(), requested.flat());
        let get = |v: &[(String, String)], k: &str| {
            v.iter().find(|(key, _)| key == k).map(|(_, x)| x.clone()).unwrap_or_else(|| "(unset)".into())
        };
        let mut keys: Vec<&String> = mine.iter().chain(&theirs).map(|(k, _)| k).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| !free(k))
            .filter_map(|k| {
                let (a, b) = (get(&mine, k), get(&theirs, k));
                (a != b).then(|| (k.clone(), a, b))
            })
            .collect()
    }

    /// Applies `KEY=VALUE` (e.g. `train.lr_d=1e-4`, `train.loss=hinge`): VALUE in TOML syntax,
    /// or a bare word taken as a string. Returns the key.
    pub fn apply_override(&mut self, spec: &str) -> Result<String> {
        let Some((key, value)) = spec.split_once('=') else {
            bail!("--override '{spec}': expected KEY=VALUE, e.g. train.lr_d=1e-4");
        };
        let key = key.trim();
        let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {}", value.trim())) {
            Ok(mut t) => t.remove("v").expect("parsed"),
            Err(_) => toml::Value::String(value.trim().to_string()),
        };
        let mut table = toml::Value::try_from(&*self)?;
        let mut slot = &mut table;
        for part in key.split('.') {
            slot = slot.get_mut(part).with_context(|| {
                format!("--override '{spec}': no setting '{key}' (see `facegan presets --show NAME`)")
            })?;
        }
        *slot = parsed;
        *self = RunConfig::from_toml(&toml::to_string(&table)?, &format!("--override {spec}"))?;
        Ok(key.to_string())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, self.to_toml().as_bytes())
    }

    /// Checks values that serde cannot: sizes, names, ranges.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        if !(m.image_size >= 16 && m.image_size.is_power_of_two() && m.image_size <= 256) {
            bail!("model.image_size {} must be a power of two from 16 to 256", m.image_size);
        }
        if m.nz == 0 || m.ngf == 0 || m.ndf == 0 {
            bail!("model.nz, model.ngf and model.ndf must be positive");
        }
        crate::models::validate(m)?;
        let t = &self.train;
        let loss = crate::loss::AdversarialLoss::parse(&t.loss)?;
        for p in &t.penalties {
            p.validate()?;
        }
        let family = crate::models::family(&m.arch)?;
        let per_sample = t.penalties.iter().find(|p| p.kind().target() == crate::penalty::Target::D);
        let d_has_batch_norm = m.d_norm == "batch" && family.options.contains(&crate::models::ModelOption::DNorm);
        if let Some(p) = per_sample.filter(|_| d_has_batch_norm) {
            bail!(
                "penalty {} needs the gradient of D for each sample on its own, but batch norm in D mixes the samples of a batch; set model.d_norm = \"layer\" (or \"none\", or --d-norm layer)",
                p.kind
            );
        }
        for p in &t.penalties {
            if p.kind().needs_w_space() && !family.w_space {
                bail!(
                    "penalty {} measures G's path length in its intermediate latent space W, which the {} family does not have (style families: {})",
                    p.kind,
                    m.arch,
                    crate::models::style_family_names()
                );
            }
            if let Some(aux) = p.kind().needs_aux() {
                if !family.d_aux.contains(&aux) {
                    bail!(
                        "penalty {} reads D's {aux}, which the {} family's discriminator does not provide",
                        p.kind,
                        m.arch
                    );
                }
            }
        }
        if t.feature_matching && !family.d_aux.contains(&crate::models::FEATURES) {
            bail!(
                "train.feature_matching reads D's {}, which the {} family's discriminator does not provide",
                crate::models::FEATURES,
                m.arch
            );
        }
        if matches!(loss, crate::loss::AdversarialLoss::Energy { .. }) != family.energy_d {
            bail!(
                "loss {} and the {} family do not fit: the ebgan loss needs an energy-based discriminator (the ebgan family), and that discriminator needs the ebgan loss",
                t.loss,
                m.arch
            );
        }
        crate::train::augment::Augment::validate(t)?;
        if !(t.labelled_fraction > 0.0 && t.labelled_fraction <= 1.0) {
            bail!("train.labelled_fraction {} must be in (0, 1]", t.labelled_fraction);
        }
        if t.labelled_fraction < 1.0 && m.condition != "sgan" {
            bail!(
                "train.labelled_fraction {} applies to the semi-supervised GAN (model.condition sgan); the {} condition needs every label",
                t.labelled_fraction,
                m.condition
            );
        }
        for (k, v) in [("aux_weight", t.aux_weight), ("info_weight", t.info_weight)] {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("train.{k} {v} must be a non-negative number");
            }
        }
        if !(t.ebgan_margin > 0.0 && t.ebgan_margin.is_finite()) {
            bail!("train.ebgan_margin {} must be a positive number", t.ebgan_margin);
        }
        if !matches!(t.optimizer.as_str(), "adam" | "rmsprop") {
            bail!("train.optimizer '{}' is unknown; valid: adam, rmsprop", t.optimizer);
        }
        if t.divergence_patience == 0 {
            bail!("train.divergence_patience must be at least 1");
        }
        if t.n_critic == 0 {
            bail!("train.n_critic must be at least 1");
        }
        if !(0.0..0.5).contains(&t.label_smoothing) {
            bail!("train.label_smoothing {} must be in [0, 0.5)", t.label_smoothing);
        }
        if t.label_smoothing > 0.0 && !loss.is_cross_entropy() {
            bail!(
                "train.label_smoothing applies to the cross-entropy losses (non-saturating, minimax), not to {}",
                t.loss
            );
        }
        if t.weight_clip < 0.0 || t.instance_noise < 0.0 {
            bail!("train.weight_clip and train.instance_noise must not be negative");
        }
        if t.batch_size == 0 {
            bail!("train.batch_size must be positive");
        }
        if t.lr_decay_steps > t.steps {
            bail!(
                "train.lr_decay_steps {} exceeds train.steps {}: the decay covers the last lr_decay_steps steps of the run (give at most --steps, which decays over the whole run)",
                t.lr_decay_steps,
                t.steps
            );
        }
        if !(0.0..1.0).contains(&t.ema_decay) {
            bail!("train.ema_decay {} must be in [0, 1)", t.ema_decay);
        }
        for (n, v) in [("lr_g", t.lr_g), ("lr_d", t.lr_d)] {
            if !(v > 0.0 && v.is_finite()) {
                bail!("train.{n} {v} must be a positive number");
            }
        }
        for (n, v) in [("beta1", t.beta1), ("beta2", t.beta2)] {
            if !(0.0..1.0).contains(&v) {
                bail!("train.{n} {v} must be in [0, 1)");
            }
        }
        let l = &self.log;
        if l.log_every == 0
            || l.sample_every == 0
            || l.checkpoint_every == 0
            || l.keep_checkpoints == 0
            || l.sample_count == 0
        {
            bail!("log.log_every, sample_every, checkpoint_every, keep_checkpoints and sample_count must be positive");
        }
        if !(l.checkpoint_minutes >= 0.0 && l.checkpoint_minutes.is_finite()) {
            bail!("log.checkpoint_minutes {} must be a non-negative number (0: by steps only)", l.checkpoint_minutes);
        }
        if l.eval_every > 0 {
            crate::metrics::parse_metrics(&l.eval_metrics).context("log.eval_metrics")?;
            if l.eval_num < 2 || l.eval_num_real.is_some_and(|n| n < 2) {
                bail!("log.eval_num and eval_num_real must be at least 2 (the metrics compare distributions)");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_round_trip_through_toml() {
        for p in crate::presets::PRESETS {
            let c = RunConfig::preset(p.name).unwrap();
            c.validate().unwrap();
            let back = RunConfig::from_toml(&c.to_toml(), "test").unwrap();
            assert_eq!(c, back);
        }
        let c = RunConfig::preset("dcgan-64").unwrap();
        assert_eq!((c.model.image_size, c.model.nz, c.model.ngf, c.model.ndf), (64, 100, 64, 64));
        assert_eq!((c.train.lr_g, c.train.lr_d, c.train.beta1, c.train.beta2), (2e-4, 2e-4, 0.5, 0.999));
        let w = RunConfig::preset("wgan-gp-64").unwrap();
        assert_eq!((w.train.n_critic, w.train.beta2, w.model.d_norm.as_str()), (5, 0.9, "layer"));
        // The least-squares losses stay grey with a normalised D (docs/losses.md).
        for name in ["lsgan-64", "ralsgan-64"] {
            assert_eq!(RunConfig::preset(name).unwrap().model.d_norm, "none", "{name}");
        }
    }

    #[test]
    fn batch_norm_critic_with_a_penalty_is_refused_with_the_reason() {
        let mut c = RunConfig::preset("wgan-gp-64").unwrap();
        c.model.d_norm = "batch".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("batch norm") && e.contains("layer"), "{e}");
        let mut c = RunConfig::preset("hinge-64").unwrap();
        c.train.label_smoothing = 0.1;
        assert!(c.validate().unwrap_err().to_string().contains("cross-entropy"));
    }

    #[test]
    fn trajectory_changes_list_every_difference_but_the_free_settings() {
        let a = RunConfig::preset("wgan-gp-64").unwrap();
        let mut b = a.clone();
        (b.train.steps, b.log.log_every, b.data.path) = (99, 7, "elsewhere".into());
        b.data.cache_dir = Some("another-disk".into());
        assert!(a.trajectory_changes(&b).is_empty());
        (b.train.seed, b.train.n_critic) = (5, 2);
        b.train.penalties.clear();
        let keys: Vec<String> = a.trajectory_changes(&b).into_iter().map(|c| c.0).collect();
        assert_eq!(keys, ["train.n_critic", "train.penalties", "train.seed"]);
        let mut c = a.clone();
        assert_eq!(c.apply_override("train.lr_d=1e-4").unwrap(), "train.lr_d");
        assert_eq!(c.apply_override("train.loss=hinge").unwrap(), "train.loss");
        assert_eq!((c.train.lr_d, c.train.loss.as_str()), (1e-4, "hinge"));
        assert!(c.apply_override("train.lr=1").unwrap_err().to_string().contains("no setting 'train.lr'"));
        assert!(c.apply_override("train.n_critic=0").is_err());
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = RunConfig::preset("dcgan-65").unwrap_err().to_string();
        assert!(e.contains("dcgan-64") && e.contains("dcgan-128"), "{e}");
        let e = RunConfig::from_toml("[train]\nlearning_rate = 1\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("learning_rate") && e.contains("lr_g"), "{e}");
        let e = RunConfig::from_toml("[model]\nimage_size = 48\n", "y.toml").unwrap_err();
        assert!(format!("{e:#}").contains("power of two"));
    }
}
