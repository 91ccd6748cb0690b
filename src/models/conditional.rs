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
//!   images and fakes, and G by the same loss on its fakes (`train.aux_weight`).
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
}

/// The aux output of an ACGAN discriminator: (N, K) attribute logits.
pub const CLASS_LOGITS: &str = "class_logits";

impl Condition {
    pub const ALL: [Condition; 4] = [Self::None, Self::Concat, Self::Projection, Self::AuxClassifier];

    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Concat => "concat",
            Self::Projection => "projection",
            Self::AuxClassifier => "acgan",
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
    use candle_core::DType;

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
