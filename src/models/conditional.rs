//! Conditioning on labels: what the conditional families share.
//!
//! Labels are CelebA's binary attributes, a (N, K) tensor of 0/1 in the order of
//! `model.attrs`. The ways a family may use them (`model.condition`):
//!
//! - `concat` (cGAN, Mirza & Osindero 2014): G reads [z, s] and D reads the image with K
//!   constant planes s_k appended, where s = 2y − 1 ∈ {−1, 1}^K;
//! - `projection` (Miyato & Koyama 2018): conditional batch norm in G (scale and shift a
//!   linear map of s) and the projection D: logit = ψ(φ(x)) + ⟨E s, φ(x)⟩ with a learned
//!   embedding E (K → C, no bias; spectral norm when D has it). With one-hot classes this is
//!   the paper's ⟨e_y, φ(x)⟩; with K binary attributes each adds or takes away its direction;
//! - `acgan` (Odena et al. 2017): G reads [z, s]; D is unconditional but has an auxiliary
//!   head with K logits (`DiscOutput::aux["class_logits"]`), trained by [`class_loss`] on real
//!   images and fakes, and G by the same loss on its fakes (`train.aux_weight`);
//! - `sgan` (semi-supervised GAN: Odena 2016; Salimans et al. 2016): G is unconditional; the
//!   K attributes make one categorical label of 2^K classes ([`class_index`]) and D has one
//!   logit per class, the fake class's logit fixed at 0, so its real-vs-fake logit is
//!   log Σ exp(l_c) and the usual adversarial loss applies unchanged; on the labelled real
//!   images (`train.labelled_fraction` of them) D also minimises the cross-entropy of the
//!   classes ([`sgan_loss`]). Unlabelled images carry labels of −1.
//!
//! A conditional generator owns its label prior ([`LabelPrior`], each attribute's frequency in
//! the training data, a buffer saved with G), so sampling without given labels (sample grids,
//! `generate`) draws plausible ones. In training the fakes get the labels of the real batch,
//! a draw from the data's joint distribution that keeps correlated attributes together.

use crate::nn::layers::{Init, LayerOpts};
use crate::nn::{Linear, Mode, Params};
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, Var};

/// How a model uses its labels (`model.condition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    None,
    Concat,
    Projection,
    AuxClassifier,
    SemiSupervised,
}

/// The aux output of an ACGAN discriminator: (N, K) attribute logits.
pub const CLASS_LOGITS: &str = "class_logits";

impl Condition {
    pub const ALL: [Condition; 5] =
        [Self::None, Self::Concat, Self::Projection, Self::AuxClassifier, Self::SemiSupervised];

    /// Whether the generator reads the labels (every way but sgan's).
    pub fn conditions_g(&self) -> bool {
        !matches!(self, Self::None | Self::SemiSupervised)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Concat => "concat",
            Self::Projection => "projection",
            Self::AuxClassifier => "acgan",
            Self::SemiSupervised => "sgan",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match Self::ALL.iter().find(|c| c.name() == s) {
            Some(c) => Ok(*c),
            None => bail!(
                "model.condition '{s}' is unknown; valid: {}",
                Self::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// Each attribute's probability of being present when a conditional G draws labels itself.
pub struct LabelPrior {
    freq: Var,
    k: usize,
}

/// Name of the prior's buffer in a generator's parameters.
pub const LABEL_PRIOR: &str = "label_prior";

impl LabelPrior {
    /// A prior over `k` attributes, 0.5 each until [`set_label_prior`] sets the data's.
    pub fn new(p: &mut Params, k: usize) -> candle_core::Result<Self> {
        let freq = p.buffer(LABEL_PRIOR, Tensor::full(0.5f32, k, &p.device.clone())?)?;
        Ok(Self { freq, k })
    }

    /// `n` label vectors (n, K) of independent draws.
    pub fn sample(&self, n: usize, rng: &mut Rng, device: &Device) -> Result<Tensor> {
        let f: Vec<f64> = self.freq.as_tensor().to_dtype(candle_core::DType::F64)?.to_vec1()?;
        let v: Vec<f32> = (0..n * self.k).map(|i| f32::from(u8::from(rng.uniform() < f[i % self.k]))).collect();
        Ok(Tensor::from_vec(v, (n, self.k), device)?)
    }
}

/// Sets a conditional generator's label prior to `freq` (the data's attribute frequencies).
pub fn set_label_prior(p: &Params, freq: &[f64]) -> Result<()> {
    let Some((_, v)) = p.buffers().find(|(n, _)| n.as_str() == LABEL_PRIOR) else {
        bail!("the generator is not conditional: it has no label prior");
    };
    if v.elem_count() != freq.len() {
        bail!("label prior of {} attributes set with {}", v.elem_count(), freq.len());
    }
    let t = Tensor::from_vec(freq.iter().map(|&f| f as f32).collect::<Vec<_>>(), freq.len(), &p.device)?;
    v.set(&t.to_dtype(v.dtype())?)?;
    Ok(())
}

/// A generator's latents: z ~ N(0, I), and labels from its prior when it has one.
pub fn sample_latent(
    nz: usize,
    prior: Option<&LabelPrior>,
    n: usize,
    rng: &mut Rng,
    device: &Device,
) -> Result<super::Latent> {
    let mut latent = super::Latent::from_z(rng.normal_tensor((n, nz), 0.0, 1.0, device)?);
    if let Some(p) = prior {
        latent.labels = Some(p.sample(n, rng, device)?);
    }
    Ok(latent)
}

/// 0/1 labels to signs ±1.
pub fn signs(labels: &Tensor) -> candle_core::Result<Tensor> {
    labels.affine(2.0, -1.0)
}

/// The labels a conditional network needs, or an error saying so.
pub fn need(labels: Option<&Tensor>) -> candle_core::Result<&Tensor> {
    labels.ok_or_else(|| candle_core::Error::Msg("this conditional model needs labels (model.attrs)".into()))
}

/// [z, s]: the latent with the labels' signs appended, (N, nz + K).
pub fn join_z(z: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::cat(&[z, &signs(labels)?.to_dtype(z.dtype())?], 1)
}

/// The image (N, C, H, W) with the labels' signs as K constant planes, (N, C + K, H, W).
pub fn append_label_planes(x: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    let k = labels.dim(1)?;
    let planes = signs(labels)?.to_dtype(x.dtype())?.reshape((n, k, 1, 1))?.broadcast_as((n, k, h, w))?;
    Tensor::cat(&[x, &planes.contiguous()?], 1)
}

/// The projection term ⟨E s, φ⟩ of a projection discriminator.
pub struct Projection {
    embed: Linear,
}

impl Projection {
    /// An embedding of `k` attributes into D's `features` channels.
    pub fn new(p: &mut Params, rng: &mut Rng, k: usize, features: usize, spectral: bool) -> candle_core::Result<Self> {
        let opts = LayerOpts::new(false, Init::XavierUniform(1.0), spectral);
        Ok(Self { embed: Linear::with(p, rng, "projection", k, features, opts)? })
    }

    /// (N,) projections of the features φ (N, C) on the labels' embeddings.
    pub fn forward(&self, phi: &Tensor, labels: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let e = self.embed.forward(&signs(labels)?.to_dtype(phi.dtype())?, mode)?;
        (phi * e)?.sum(1)
    }
}

/// ACGAN's auxiliary classification loss: binary cross-entropy of the attribute logits
/// (N, K) against the 0/1 labels, averaged over samples and attributes:
/// mean(softplus(l) − y·l).
pub fn class_loss(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let labels = labels.to_dtype(logits.dtype())?;
    let softplus = crate::loss::softplus(logits)?;
    (softplus - (labels * logits)?)?.mean_all()
}

/// The most attributes an sgan label combines (2^6 = 64 classes).
pub const SGAN_MAX_ATTRS: usize = 6;

/// The class of each row of 0/1 labels (N, K): Σ_j 2^j y_j, or None for an unlabelled row
/// (negative values).
pub fn class_index(labels: &Tensor) -> Result<Vec<Option<u32>>> {
    let v: Vec<Vec<f32>> = labels.to_dtype(candle_core::DType::F32)?.to_vec2()?;
    Ok(v.iter()
        .map(|row| match row.iter().any(|&x| x < 0.0) {
            true => None,
            false => Some(row.iter().enumerate().map(|(j, &x)| u32::from(x > 0.5) << j).sum()),
        })
        .collect())
}

/// The semi-supervised classification loss: the cross-entropy of the class logits (N, C)
/// on the labelled rows of `labels` (mean over them; 0 when there are none), the number of
/// labelled rows, and how many of them the argmax gets right.
pub fn sgan_loss(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, usize, usize)> {
    let classes = class_index(labels)?;
    let c = logits.dim(1)?;
    let mut mask = vec![0f32; classes.len() * c];
    let mut n = 0;
    for (i, k) in classes.iter().enumerate() {
        if let Some(k) = k {
            mask[i * c + *k as usize] = 1.0;
            n += 1;
        }
    }
    if n == 0 {
        return Ok((Tensor::zeros((), logits.dtype(), logits.device())?, 0, 0));
    }
    let mask = Tensor::from_vec(mask, (classes.len(), c), logits.device())?.to_dtype(logits.dtype())?;
    let logp = crate::ops::log_softmax(logits, 1)?;
    let loss = ((logp * &mask)?.sum_all()? * (-1.0 / n as f64))?;
    let l: Vec<Vec<f32>> = logits.detach().to_dtype(candle_core::DType::F32)?.to_vec2()?;
    let right = classes
        .iter()
        .zip(&l)
        .filter(|(k, row)| {
            let best = row.iter().enumerate().fold((0, f32::MIN), |b, (j, &x)| if x > b.1 { (j, x) } else { b }).0;
            k.is_some_and(|k| k as usize == best)
        })
        .count();
    Ok((loss, n, right))
}

/// SGAN's real-vs-fake logit: log Σ_c exp(l_c) over the class logits (N, C), the fake
/// class's logit being 0, so that sigmoid of it is D's probability of "real".
pub fn logsumexp_rows(logits: &Tensor) -> candle_core::Result<Tensor> {
    let m = logits.max_keepdim(1)?.detach();
    (logits.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + m)?.flatten_all()
}

/// The share of attribute logits whose sign agrees with the 0/1 labels.
pub fn class_accuracy(logits: &Tensor, labels: &Tensor) -> Result<f64> {
    let l: Vec<f32> = logits.detach().flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
    let y: Vec<f32> = labels.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
    let right = l.iter().zip(&y).filter(|(l, y)| (**l > 0.0) == (**y > 0.5)).count();
    Ok(right as f64 / l.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Var};

    #[test]
    fn projection_matches_its_closed_form() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(3);
        let mut p = Params::with_dtype(&dev, DType::F64);
        let proj = Projection::new(&mut p, &mut rng, 3, 4, false).unwrap();
        let phi = rng.normal_tensor((2, 4), 0.0, 1.0, &dev).unwrap().to_dtype(DType::F64).unwrap();
        let y = Tensor::new(&[[1f32, 0., 1.], [0., 0., 1.]], &dev).unwrap();
        let out = proj.forward(&phi, &y, Mode::TRAIN).unwrap().to_vec1::<f64>().unwrap();
        let e = proj.embed.w.as_tensor().to_vec2::<f64>().unwrap(); // (C, K)
        let phi = phi.to_vec2::<f64>().unwrap();
        let y = y.to_vec2::<f32>().unwrap();
        for n in 0..2 {
            let want: f64 =
                (0..4).map(|c| phi[n][c] * (0..3).map(|k| e[c][k] * (2.0 * y[n][k] as f64 - 1.0)).sum::<f64>()).sum();
            assert!((out[n] - want).abs() < 1e-12, "{} vs {want}", out[n]);
        }
    }

    #[test]
    fn class_loss_is_binary_cross_entropy() {
        let dev = Device::Cpu;
        let l = Tensor::new(&[[2.0f64, -1.0], [0.5, 0.0]], &dev).unwrap();
        let y = Tensor::new(&[[1f32, 1.], [0., 1.]], &dev).unwrap();
        let got = class_loss(&l, &y).unwrap().to_scalar::<f64>().unwrap();
        let bce = |l: f64, y: f64| -(y * (1.0 / (1.0 + (-l).exp())).ln() + (1.0 - y) * (1.0 / (1.0 + l.exp())).ln());
        let want = (bce(2.0, 1.0) + bce(-1.0, 1.0) + bce(0.5, 0.0) + bce(0.0, 1.0)) / 4.0;
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert_eq!(class_accuracy(&l, &y).unwrap(), 0.25);
    }

    #[test]
    fn sgan_classes_loss_and_real_logit_match_their_closed_forms() {
        let dev = Device::Cpu;
        let y = Tensor::new(&[[1f32, 0.], [1., 1.], [-1., -1.]], &dev).unwrap();
        let k: Vec<Option<u32>> = class_index(&y).unwrap();
        assert_eq!(k, [Some(1), Some(3), None]);
        let lv = [[0.5f64, 2.0, -1.0, 0.0], [1.0, 0.0, 0.0, 3.0], [9.0, 9.0, 9.0, 9.0]];
        let l = Var::from_tensor(&Tensor::new(&lv, &dev).unwrap()).unwrap();
        let (loss, n, right) = sgan_loss(l.as_tensor(), &y).unwrap();
        let lse = |r: &[f64]| r.iter().map(|x| x.exp()).sum::<f64>().ln();
        let want = ((lse(&lv[0]) - lv[0][1]) + (lse(&lv[1]) - lv[1][3])) / 2.0;
        assert!((loss.to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
        assert_eq!((n, right), (2, 2));
        // Its gradient against central differences (the unlabelled row gets none).
        let g: Vec<Vec<f64>> = loss.backward().unwrap().get(&l).unwrap().to_vec2().unwrap();
        for (i, j) in [(0, 0), (0, 1), (1, 3), (2, 2)] {
            let f = |d: f64| {
                let mut v = lv;
                v[i][j] += d;
                sgan_loss(&Tensor::new(&v, &dev).unwrap(), &y).unwrap().0.to_scalar::<f64>().unwrap()
            };
            let fd = (f(1e-6) - f(-1e-6)) / 2e-6;
            assert!((g[i][j] - fd).abs() < 1e-7, "({i}, {j}): {} vs {fd}", g[i][j]);
        }
        let r = logsumexp_rows(&Tensor::new(&lv, &dev).unwrap()).unwrap().to_vec1::<f64>().unwrap();
        assert!((r[0] - lse(&lv[0])).abs() < 1e-12 && (r[2] - (9.0 + 4f64.ln())).abs() < 1e-12);
        let none = Tensor::new(&[[-1f32, -1.]], &dev).unwrap();
        assert_eq!(sgan_loss(&Tensor::zeros((1, 4), DType::F32, &dev).unwrap(), &none).unwrap().1, 0);
    }

    #[test]
    fn class_loss_gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let lv = [[0.3f64, -1.2], [2.0, 0.1]];
        let y = Tensor::new(&[[1f32, 0.], [0., 1.]], &dev).unwrap();
        let l = Var::from_tensor(&Tensor::new(&lv, &dev).unwrap()).unwrap();
        let g: Vec<Vec<f64>> =
            class_loss(l.as_tensor(), &y).unwrap().backward().unwrap().get(&l).unwrap().to_vec2().unwrap();
        for i in 0..2 {
            for j in 0..2 {
                let f = |d: f64| {
                    let mut v = lv;
                    v[i][j] += d;
                    class_loss(&Tensor::new(&v, &dev).unwrap(), &y).unwrap().to_scalar::<f64>().unwrap()
                };
                let fd = (f(1e-6) - f(-1e-6)) / 2e-6;
                assert!((g[i][j] - fd).abs() < 1e-8, "{} vs {fd}", g[i][j]);
            }
        }
    }

    #[test]
    fn label_planes_and_joined_z_carry_the_signs() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 2, 2), DType::F32, &dev).unwrap();
        let y = Tensor::new(&[[1f32, 0.], [0., 0.]], &dev).unwrap();
        let a = append_label_planes(&x, &y).unwrap();
        assert_eq!(a.dims(), &[2, 5, 2, 2]);
        use candle_core::IndexOp;
        assert_eq!(a.i((0, 3)).unwrap().to_vec2::<f32>().unwrap(), [[1.0, 1.0], [1.0, 1.0]]);
        assert_eq!(a.i((0, 4)).unwrap().to_vec2::<f32>().unwrap(), [[-1.0, -1.0], [-1.0, -1.0]]);
        let z = Tensor::zeros((2, 1), DType::F32, &dev).unwrap();
        assert_eq!(join_z(&z, &y).unwrap().to_vec2::<f32>().unwrap(), [[0.0, 1.0, -1.0], [0.0, -1.0, -1.0]]);
    }

    #[test]
    fn the_prior_draws_at_the_data_frequencies() {
        let dev = Device::Cpu;
        let mut p = Params::new(&dev);
        let prior = LabelPrior::new(&mut p, 2).unwrap();
        set_label_prior(&p, &[0.0, 0.8]).unwrap();
        let y = prior.sample(2000, &mut Rng::new(1), &dev).unwrap().mean(0).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(y[0], 0.0);
        assert!((y[1] - 0.8).abs() < 0.03, "{y:?}");
        assert!(set_label_prior(&Params::new(&dev), &[0.5]).unwrap_err().to_string().contains("not conditional"));
    }
}
