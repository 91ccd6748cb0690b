//! The attribute classifier, and how often a conditional model's faces show the attributes
//! they were asked for.
//!
//! The classifier is the DCGAN discriminator's body (strided 4x4 convolutions, batch norm,
//! LeakyReLU) with an ACGAN head of K attribute logits, trained with binary cross-entropy on
//! labelled faces; the last `held_out` labelled images (in file-name order) never enter
//! training and give its per-attribute accuracy. It is saved as a checkpoint of kind
//! `classifier` (tensors `C.*`, the configuration, the held-out accuracies).
//!
//! With `categorical`, the head is one softmax over the 2^K combinations of the attributes:
//! the semi-supervised GAN's discriminator trained as a plain classifier, its baseline.
//! `evaluate_classifier` measures either kind, or an acgan/sgan run's D, on held-out faces.
//!
//! Attribute accuracy of a conditional G: for each attribute, `num` faces asked to have it and
//! `num` asked not to (the other attributes drawn from G's prior, the same latents for both),
//! classified; the score is the balanced accuracy (mean of the two hit rates), so chance is
//! 0.5 whatever the attribute's frequency, and the classifier's own held-out balanced accuracy
//! is the ceiling a perfect generator would reach.

use crate::config::RunConfig;
use crate::data::Loader;
use crate::models::conditional::{class_index, class_loss, sgan_loss, CLASS_LOGITS, SGAN_MAX_ATTRS};
use crate::models::{build_discriminator, Discriminator, Generator};
use crate::nn::Mode;
use crate::rng::Rng;
use crate::train::checkpoint;
use crate::train::optim::Optimizer;
use crate::train::trainer::{open_data, open_labels};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Checkpoint kind of a saved classifier.
pub const KIND_CLASSIFIER: &str = "classifier";

pub struct ClassifierOptions {
    /// Image folder or prepared cache, with CelebA's attribute file.
    pub data: String,
    /// Attribute names, or `all`, already expanded to names.
    pub attrs: Vec<String>,
    pub attr_file: Option<String>,
    pub image_size: usize,
    /// Channels of the first convolution (doubling at each stride-2 layer).
    pub width: usize,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    /// Labelled images kept out of training to measure accuracy.
    pub held_out: usize,
    /// One softmax over the 2^K combinations of the attributes (the semi-supervised GAN's
    /// D without its GAN part) instead of K independent attribute logits.
    pub categorical: bool,
    /// Train on the labels of this share of the training images only (chosen by the seed
    /// as `train.labelled_fraction` chooses them).
    pub labelled_fraction: f64,
    pub seed: u64,
    pub out: PathBuf,
    pub device: Device,
    pub progress: bool,
    /// Where a `data` folder is prepared (None: the default cache folder).
    pub cache_dir: Option<String>,
}

/// Per-attribute accuracies of a classifier on held-out faces.
#[derive(Clone, Debug)]
pub struct HeldOut {
    pub names: Vec<String>,
    pub accuracy: Vec<f64>,
    /// Mean of the true-positive and true-negative rates.
    pub balanced: Vec<f64>,
    /// Accuracy of always answering the more frequent value.
    pub majority: Vec<f64>,
    pub count: usize,
}

impl HeldOut {
    pub fn table(&self) -> String {
        let mut s = format!("{:22} {:>9} {:>9} {:>9}\n", "attribute", "accuracy", "balanced", "majority");
        for i in 0..self.names.len() {
            s.push_str(&format!(
                "{:22} {:>9.3} {:>9.3} {:>9.3}\n",
                self.names[i], self.accuracy[i], self.balanced[i], self.majority[i]
            ));
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        s.push_str(&format!(
            "{:22} {:>9.3} {:>9.3} {:>9.3}   ({} held-out faces)\n",
            "mean",
            mean(&self.accuracy),
            mean(&self.balanced),
            mean(&self.majority),
            self.count
        ));
        s
    }
}

fn classifier_config(o: &ClassifierOptions) -> Result<RunConfig> {
    let mut c = RunConfig::preset("dcgan-64")?;
    c.preset = "classifier".into();
    let m = &mut c.model;
    (m.image_size, m.ndf, m.ngf, m.nz) = (o.image_size, o.width, 8, 8);
    m.condition = if o.categorical { "sgan" } else { "acgan" }.into();
    m.attrs = o.attrs.clone();
    (c.train.batch_size, c.train.steps, c.train.seed, c.train.lr_d) = (o.batch_size, o.steps, o.seed, o.lr);
    (c.data.path, c.data.attr_file, c.data.cache_dir) = (o.data.clone(), o.attr_file.clone(), o.cache_dir.clone());
    c.validate()?;
    Ok(c)
}

/// Trains a classifier, writes it to `o.out` and returns its held-out accuracies.
pub fn train_classifier(o: &ClassifierOptions) -> Result<HeldOut> {
    let cfg = classifier_config(o)?;
    if let Some(dir) = o.out.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        bail!("cannot write {}: folder {} does not exist", o.out.display(), dir.display());
    }
    let data = open_data(&cfg, o.progress)?;
    let labels = open_labels(&cfg, &data)?.context("a classifier needs attributes")?;
    let mut train_labels = labels.clone();
    let held = train_labels.hold_out(o.held_out)?;
    if o.labelled_fraction < 1.0 {
        train_labels.hide(o.labelled_fraction, o.seed);
        let known: Vec<usize> =
            train_labels.labelled.iter().copied().filter(|&i| train_labels.of(i)[0] >= 0.0).collect();
        train_labels.labelled = known;
    }
    if train_labels.labelled.len() < o.batch_size {
        bail!("{} labelled training images, fewer than one batch of {}", train_labels.labelled.len(), o.batch_size);
    }
    if o.progress {
        eprintln!("classifier: {} training images, {} held out", train_labels.labelled.len(), held.len());
    }
    let mut rng = Rng::new(o.seed);
    let d = build_discriminator(&cfg.model, &o.device, &mut rng)?;
    let mut opt = Optimizer::from_name("adam", d.params(), o.lr, 0.5, 0.999)?;
    let mut loader = Loader::new(data, o.batch_size, o.seed, true)?.with_labels(train_labels)?;
    let mut recent = 0.0;
    for step in 0..o.steps {
        let (x, y) = loader.batch(step, &mut rng, &o.device)?;
        let y = y.expect("labelled loader");
        let out = d.forward_full(&x, None, Mode::TRAIN)?;
        let loss = match o.categorical {
            true => sgan_loss(&out.aux[CLASS_LOGITS], &y)?.0,
            false => class_loss(&out.aux[CLASS_LOGITS], &y)?,
        };
        let grads = loss.backward()?;
        opt.step(d.params(), &grads)?;
        recent += loss.to_scalar::<f32>()? as f64;
        if o.progress && (step + 1) % 100 == 0 {
            eprintln!("classifier step {}/{}: loss {:.4}", step + 1, o.steps, recent / 100.0);
            recent = 0.0;
        }
    }
    let c = Classifier { d, cfg, held_out: None };
    let result = c.held_out_accuracy(&loader.data, &labels, &held)?;
    let mut t = HashMap::new();
    c.d.params().to_tensors("C", &mut t);
    let mut meta = checkpoint::base_meta(KIND_CLASSIFIER, o.steps, &c.cfg);
    meta.insert("held_out".into(), serde_json::to_string(&result.balanced)?);
    meta.insert("held_out_count".into(), result.count.to_string());
    checkpoint::write(&o.out, &t, meta, false)?;
    Ok(result)
}

pub struct Classifier {
    d: Box<dyn Discriminator>,
    pub cfg: RunConfig,
    /// Held-out balanced accuracy per attribute, as saved with it.
    pub held_out: Option<Vec<f64>>,
}

impl Classifier {
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let ck = checkpoint::read(path, device)?;
        // A classifier, or the discriminator of an acgan or sgan run (whose class head is one).
        let has_head = matches!(ck.config.model.condition.as_str(), "acgan" | "sgan");
        let prefix = match ck.kind() {
            KIND_CLASSIFIER => "C",
            checkpoint::KIND_FULL if has_head => "D",
            kind => bail!(
                "{} is a {kind} checkpoint of a {} model, not an attribute classifier (make one with `facegan classifier train`, or give a full checkpoint of an acgan or sgan run)",
                path.display(),
                if ck.config.model.condition == "none" { "unconditional" } else { ck.config.model.condition.as_str() }
            ),
        };
        let d = build_discriminator(&ck.config.model, device, &mut Rng::new(0))?;
        d.params().load_tensors(prefix, &ck.tensors, &path.display().to_string())?;
        let held_out = ck.meta.get("held_out").and_then(|s| serde_json::from_str(s).ok());
        Ok(Self { d, cfg: ck.config, held_out })
    }

    pub fn attrs(&self) -> &[String] {
        &self.cfg.model.attrs
    }

    /// Attribute logits (N, K) of images (N, 3, S, S) in [-1, 1]; images larger than the
    /// classifier's side are average-pooled down to it (by powers of two).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let size = self.cfg.model.image_size;
        let mut x = x.clone();
        while x.dim(3)? > size && x.dim(3)? % 2 == 0 {
            x = crate::nn::resample::avg_pool2x(&x)?;
        }
        if x.dim(3)? != size {
            bail!("the classifier reads {size}x{size} faces; these are {}x{}", x.dim(2)?, x.dim(3)?);
        }
        let out = self.d.forward_full(&x, None, Mode::EVAL)?;
        Ok(out.aux[CLASS_LOGITS].clone())
    }

    /// Whether it names one class per combination of its attributes (an sgan D).
    pub fn categorical(&self) -> bool {
        self.cfg.model.condition == "sgan"
    }

    /// Its accuracy on images `idx` of `data` with `labels`: per attribute, or for a
    /// categorical classifier, over the attributes' combined classes.
    pub fn held_out_accuracy(
        &self,
        data: &crate::data::Dataset,
        labels: &crate::data::attrs::Labels,
        idx: &[usize],
    ) -> Result<HeldOut> {
        let k = labels.k();
        let (mut right, mut tp, mut pos, mut tn, mut neg) =
            (vec![0usize; k], vec![0usize; k], vec![0usize; k], vec![0usize; k], vec![0usize; k]);
        let (mut class_right, mut class_count) = (0usize, vec![0usize; 1 << k.min(SGAN_MAX_ATTRS)]);
        for chunk in idx.chunks(100) {
            let x =
                crate::data::loader::images_to_tensor(data, chunk, &vec![false; chunk.len()], &self.d.params().device)?;
            let logits = self.logits(&x)?;
            if self.categorical() {
                let y: Vec<f32> = chunk.iter().flat_map(|&i| labels.of(i).iter().copied()).collect();
                let y = Tensor::from_vec(y, (chunk.len(), k), x.device())?;
                class_right += sgan_loss(&logits, &y)?.2;
                for c in class_index(&y)?.into_iter().flatten() {
                    class_count[c as usize] += 1;
                }
                continue;
            }
            let l: Vec<Vec<f32>> = logits.to_vec2()?;
            for (row, &i) in l.iter().zip(chunk) {
                for a in 0..k {
                    let (pred, truth) = (row[a] > 0.0, labels.of(i)[a] > 0.5);
                    right[a] += usize::from(pred == truth);
                    if truth {
                        pos[a] += 1;
                        tp[a] += usize::from(pred);
                    } else {
                        neg[a] += 1;
                        tn[a] += usize::from(!pred);
                    }
                }
            }
        }
        let n = idx.len() as f64;
        if self.categorical() {
            let acc = class_right as f64 / n;
            let majority = *class_count.iter().max().unwrap_or(&0) as f64 / n;
            return Ok(HeldOut {
                names: vec![format!("classes of {}", labels.names.join("+"))],
                accuracy: vec![acc],
                balanced: vec![acc],
                majority: vec![majority],
                count: idx.len(),
            });
        }
        let rate = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        Ok(HeldOut {
            names: labels.names.clone(),
            accuracy: right.iter().map(|&r| r as f64 / n).collect(),
            balanced: (0..k).map(|a| (rate(tp[a], pos[a]) + rate(tn[a], neg[a])) / 2.0).collect(),
            majority: (0..k).map(|a| pos[a].max(neg[a]) as f64 / n).collect(),
            count: idx.len(),
        })
    }
}

/// The accuracy of a classifier (or an acgan/sgan run's D) on the last `held_out` labelled
/// images of `data`, for its own attributes.
pub fn evaluate_classifier(c: &Classifier, data: &str, attr_file: Option<&str>, held_out: usize) -> Result<HeldOut> {
    let mut cfg = c.cfg.clone();
    (cfg.data.path, cfg.data.attr_file) = (data.to_string(), attr_file.map(str::to_string));
    let ds = open_data(&cfg, false)?;
    let mut labels = open_labels(&cfg, &ds)?.context("the classifier has no attributes")?;
    let idx = labels.hold_out(held_out)?;
    c.held_out_accuracy(&ds, &labels, &idx)
}

/// One attribute's result for a conditional generator.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AttrScore {
    pub name: String,
    /// Share of faces asked to show it that the classifier says show it.
    pub hit_on: f64,
    /// Share of faces asked not to show it that the classifier says do not.
    pub hit_off: f64,
    /// (hit_on + hit_off) / 2; chance is 0.5.
    pub balanced: f64,
    /// The classifier's own balanced accuracy on held-out real faces.
    pub classifier: Option<f64>,
}

/// How often `g`'s faces show the attributes they were asked for, per attribute of its
/// configuration, with `num` faces for each value.
pub fn attribute_accuracy(
    g: &dyn Generator,
    gcfg: &RunConfig,
    c: &Classifier,
    num: usize,
    seed: u64,
    device: &Device,
) -> Result<Vec<AttrScore>> {
    if gcfg.model.attrs.is_empty() {
        bail!("metric attr: the {} model is unconditional (trained without attributes)", gcfg.model.arch);
    }
    let mut out = Vec::new();
    for (col, name) in gcfg.model.attrs.iter().enumerate() {
        let Some(cc) = c.attrs().iter().position(|a| a == name) else {
            bail!("the classifier does not know attribute {name}; it knows: {}", c.attrs().join(", "));
        };
        let mut hits = [0.0; 2];
        for (v, hit) in hits.iter_mut().enumerate() {
            let x = crate::sample::generate::generate(g, gcfg, num, seed, device, None, &[(col, v as f32)])?;
            let mut right = 0usize;
            for start in (0..num).step_by(100) {
                let n = 100.min(num - start);
                let l: Vec<Vec<f32>> = c.logits(&x.narrow(0, start, n)?)?.to_vec2()?;
                right += l.iter().filter(|row| (row[cc] > 0.0) == (v == 1)).count();
            }
            *hit = right as f64 / num as f64;
        }
        out.push(AttrScore {
            name: name.clone(),
            hit_on: hits[1],
            hit_off: hits[0],
            balanced: (hits[0] + hits[1]) / 2.0,
            classifier: c.held_out.as_ref().map(|h| h[cc]),
        });
    }
    Ok(out)
}

/// The scores as a table.
pub fn attr_table(scores: &[AttrScore]) -> String {
    let mut s =
        format!("{:22} {:>8} {:>8} {:>9} {:>11}\n", "attribute", "asked 1", "asked 0", "balanced", "classifier");
    for a in scores {
        let c = a.classifier.map(|c| format!("{c:.3}")).unwrap_or_else(|| "?".into());
        s.push_str(&format!("{:22} {:>8.3} {:>8.3} {:>9.3} {:>11}\n", a.name, a.hit_on, a.hit_off, a.balanced, c));
    }
    s.push_str("(share of faces classified as asked; balanced = mean of the two, chance 0.5; classifier = its balanced accuracy on held-out real faces)\n");
    s
}
