//! DCGAN (Radford, Metz and Chintala 2015), as in pytorch/examples' dcgan.
//!
//! G: z -> 4x4 by a transposed convolution, then stride-2 transposed convolutions
//! that double the side and halve the width, batch norm + ReLU between, tanh at the
//! end. D mirrors it with stride-2 convolutions, LeakyReLU(0.2), batch norm on all but
//! the first layer, and a 4x4 valid convolution to one logit. No biases (batch norm
//! follows every hidden convolution). Weights N(0, 0.02), BN scale N(1, 0.02).
//!
//! Options: D's normalisation (batch, layer, none), spectral norm on D's convolutions
//! (SN-DCGAN), and minibatch standard deviation before D's last convolution.
//!
//! Conditioning (`models::conditional`): `concat` (cGAN: G reads [z, s], D the image with K
//! label planes) and `acgan` (G reads [z, s]; D's last convolution has 1 + K outputs, the
//! score and the attribute logits), `sgan` (unconditional G; D's last convolution has one
//! logit per class of the combined attributes, see `models::conditional`).
//!
//! InfoGAN (`models::info`, `info_cat`/`info_cont`): G reads [z, s, c]; D's 4x4 features
//! (before its last convolution) feed a Q head that predicts c.

use super::conditional::{self, Condition, LabelPrior, CLASS_LOGITS};
use super::info::{InfoCodes, QHead, Q_CODES};
use super::{stages, DiscOutput, Discriminator, Family, Generator, Latent, ModelOption};
use crate::config::ModelConfig;
use crate::nn::layers::LayerOpts;
use crate::nn::stddev::minibatch_stddev;
use crate::nn::{leaky_relu, BatchNorm2d, Conv2d, ConvTranspose2d, Mode, Norm, Params};
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor};

pub const FAMILY: Family = Family {
    name: "dcgan",
    about: "DCGAN (Radford et al. 2015): transposed convolutions up, strided convolutions down",
    options: &[
        ModelOption::DNorm,
        ModelOption::DSpectralNorm,
        ModelOption::MinibatchStddev,
        ModelOption::InfoCat,
        ModelOption::InfoCont,
    ],
    d_aux: &[super::FEATURES],
    energy_d: false,
    w_space: false,
    conditions: &[Condition::Concat, Condition::AuxClassifier, Condition::SemiSupervised],
    build_generator: |c, dev, rng| Ok(Box::new(DcganGenerator::new(c, dev, rng)?)),
    build_discriminator: |c, dev, rng| Ok(Box::new(DcganDiscriminator::new(c, dev, rng)?)),
    validate: |_| Ok(()),
};

pub struct DcganGenerator {
    params: Params,
    nz: usize,
    /// Conditional models: the labels' prior (their signs join z).
    prior: Option<LabelPrior>,
    /// InfoGAN's codes (joining z after the labels).
    codes: InfoCodes,
    convs: Vec<ConvTranspose2d>,
    norms: Vec<BatchNorm2d>,
}

impl DcganGenerator {
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        let mut p = Params::new(device);
        let n = stages(cfg);
        let width = |i: usize| cfg.ngf << (n - 1 - i); // channels after layer i (i < n)
        let k = if Condition::parse(&cfg.condition)?.conditions_g() { cfg.attrs.len() } else { 0 };
        let codes = InfoCodes { cat: cfg.info_cat, cont: cfg.info_cont };
        let input = cfg.nz + k + codes.dim();
        let mut convs = vec![ConvTranspose2d::new(&mut p, rng, "main.0", input, width(0), 4, 1, 0, false)?];
        let mut norms = vec![BatchNorm2d::new(&mut p, rng, "main.0.bn", width(0))?];
        for i in 1..n {
            convs.push(ConvTranspose2d::new(
                &mut p,
                rng,
                &format!("main.{i}"),
                width(i - 1),
                width(i),
                4,
                2,
                1,
                false,
            )?);
            norms.push(BatchNorm2d::new(&mut p, rng, &format!("main.{i}.bn"), width(i))?);
        }
        convs.push(ConvTranspose2d::new(&mut p, rng, &format!("main.{n}"), width(n - 1), 3, 4, 2, 1, false)?);
        let prior = if k > 0 { Some(LabelPrior::new(&mut p, k)?) } else { None };
        Ok(Self { params: p, nz: cfg.nz, prior, codes, convs, norms })
    }
}

impl Generator for DcganGenerator {
    fn latent_dim(&self) -> usize {
        self.nz
    }

    fn sample_latent(&self, n: usize, rng: &mut Rng, device: &Device) -> Result<Latent> {
        let mut latent = conditional::sample_latent(self.nz, self.prior.as_ref(), n, rng, device)?;
        if !self.codes.is_empty() {
            latent.codes = Some(self.codes.sample(n, rng, device)?);
        }
        Ok(latent)
    }

    fn forward(&self, latent: &Latent, mode: Mode) -> candle_core::Result<Tensor> {
        let mut z = match &self.prior {
            Some(_) => conditional::join_z(&latent.z, conditional::need(latent.labels.as_ref())?)?,
            None => latent.z.clone(),
        };
        if !self.codes.is_empty() {
            let c =
                latent.codes.as_ref().ok_or_else(|| candle_core::Error::Msg("this InfoGAN needs its codes".into()))?;
            z = Tensor::cat(&[&z, &c.to_dtype(z.dtype())?], 1)?;
        }
        let mut x = z.reshape((z.dim(0)?, z.dim(1)?, 1, 1))?;
        for (conv, bn) in self.convs.iter().zip(&self.norms) {
            x = bn.forward_act(&conv.forward(&x, mode)?, mode, Some(0.0))?;
        }
        crate::ops::tanh(&self.convs.last().unwrap().forward(&x, mode)?)
    }

    fn params(&self) -> &Params {
        &self.params
    }
}

pub struct DcganDiscriminator {
    params: Params,
    convs: Vec<Conv2d>,
    /// Normalisation (batch norm in the classic recipe) after every conv but the
    /// first and the last.
    norms: Vec<Norm>,
    /// Minibatch standard deviation group before the last convolution (0: none).
    mbstd_group: usize,
    condition: Condition,
    q: Option<QHead>,
}

impl DcganDiscriminator {
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        let mut p = Params::new(device);
        let n = stages(cfg);
        let width = |i: usize| cfg.ndf << i;
        let opts = LayerOpts { spectral: cfg.d_spectral_norm, ..LayerOpts::DCGAN };
        let conv = |p: &mut Params, rng: &mut Rng, i: usize, cin, cout, stride, pad| {
            Conv2d::with(p, rng, &format!("main.{i}"), (cin, cout, 4), stride, pad, opts)
        };
        let condition = Condition::parse(&cfg.condition)?;
        let k = cfg.attrs.len();
        let planes = if condition == Condition::Concat { k } else { 0 };
        let mut convs = vec![conv(&mut p, rng, 0, 3 + planes, width(0), 2, 1)?];
        let mut norms = Vec::new();
        for i in 1..n {
            convs.push(conv(&mut p, rng, i, width(i - 1), width(i), 2, 1)?);
            norms.push(Norm::new(&cfg.d_norm, &mut p, rng, &format!("main.{i}.norm"), width(i))?);
        }
        let extra = usize::from(cfg.mbstd_group > 0);
        let outputs = match condition {
            Condition::AuxClassifier => 1 + k,
            Condition::SemiSupervised => 1 << k,
            _ => 1,
        };
        convs.push(conv(&mut p, rng, n, width(n - 1) + extra, outputs, 1, 0)?);
        let codes = InfoCodes { cat: cfg.info_cat, cont: cfg.info_cont };
        let q = match codes.is_empty() {
            true => None,
            false => Some(QHead::new(&mut p, rng, (width(n - 1) + extra) * 16, codes)?),
        };
        Ok(Self { params: p, convs, norms, mbstd_group: cfg.mbstd_group, condition, q })
    }
}

impl Discriminator for DcganDiscriminator {
    fn forward_full(&self, x: &Tensor, labels: Option<&Tensor>, mode: Mode) -> candle_core::Result<DiscOutput> {
        let x = match self.condition {
            Condition::Concat => conditional::append_label_planes(x, conditional::need(labels)?)?,
            _ => x.clone(),
        };
        let mut h = leaky_relu(&self.convs[0].forward(&x, mode)?, 0.2)?;
        for (conv, norm) in self.convs[1..].iter().zip(&self.norms) {
            h = norm.forward_act(&conv.forward(&h, mode)?, mode, Some(0.2))?;
        }
        let features = h.flatten_from(1)?;
        if self.mbstd_group > 0 {
            h = minibatch_stddev(&h, self.mbstd_group)?;
        }
        let out = self.convs.last().unwrap().forward(&h, mode)?.flatten_from(1)?;
        let mut d = match self.condition {
            Condition::SemiSupervised => DiscOutput::logits(conditional::logsumexp_rows(&out)?),
            _ => DiscOutput::logits(out.narrow(1, 0, 1)?.flatten_all()?),
        };
        match self.condition {
            Condition::AuxClassifier => drop(d.aux.insert(CLASS_LOGITS, out.narrow(1, 1, out.dim(1)? - 1)?)),
            Condition::SemiSupervised => drop(d.aux.insert(CLASS_LOGITS, out)),
            _ => {}
        }
        if let Some(q) = &self.q {
            d.aux.insert(Q_CODES, q.forward(&h.flatten_from(1)?, mode)?);
        }
        d.aux.insert(super::FEATURES, features);
        Ok(d)
    }

    fn params(&self) -> &Params {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Mode;

    fn cfg(size: usize) -> ModelConfig {
        ModelConfig { image_size: size, nz: 16, ngf: 8, ndf: 8, ..Default::default() }
    }

    #[test]
    fn shapes_at_32_64_128() {
        let dev = Device::Cpu;
        for size in [32, 64, 128] {
            let mut rng = Rng::new(0);
            let g = DcganGenerator::new(&cfg(size), &dev, &mut rng).unwrap();
            let d = DcganDiscriminator::new(&cfg(size), &dev, &mut rng).unwrap();
            let z = rng.normal_tensor((2, 16), 0.0, 1.0, &dev).unwrap();
            let x = g.forward(&Latent::from_z(z), Mode::TRAIN).unwrap();
            assert_eq!(x.dims(), &[2, 3, size, size]);
            let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(v.iter().all(|a| (-1.0..=1.0).contains(a)));
            assert_eq!(d.forward(&x, None, Mode::TRAIN).unwrap().dims(), &[2]);
            for norm in ["layer", "none"] {
                let c = ModelConfig { d_norm: norm.into(), ..cfg(size) };
                let d = DcganDiscriminator::new(&c, &dev, &mut rng).unwrap();
                assert_eq!(d.forward(&x, None, Mode::TRAIN).unwrap().dims(), &[2]);
            }
            let c = ModelConfig { d_spectral_norm: true, mbstd_group: 4, ..cfg(size) };
            let d = DcganDiscriminator::new(&c, &dev, &mut rng).unwrap();
            assert_eq!(d.forward(&x, None, Mode::TRAIN).unwrap().dims(), &[2]);
            // One extra input channel of the last convolution for the stddev.
            assert_eq!(d.convs.last().unwrap().w.dims()[1], (8 << (stages(&c) - 1)) + 1);
        }
    }

    #[test]
    fn classic_64_widths() {
        let c = ModelConfig::default();
        let g = DcganGenerator::new(&c, &Device::Cpu, &mut Rng::new(0)).unwrap();
        let shapes: Vec<Vec<usize>> = g.convs.iter().map(|c| c.w.dims().to_vec()).collect();
        assert_eq!(
            shapes,
            vec![
                vec![100, 512, 4, 4],
                vec![512, 256, 4, 4],
                vec![256, 128, 4, 4],
                vec![128, 64, 4, 4],
                vec![64, 3, 4, 4]
            ]
        );
        // pytorch/examples dcgan: 3,576,704 generator parameters and 2,765,568 for D.
        assert_eq!(g.params().num_parameters(), 3_576_704);
        let d = DcganDiscriminator::new(&c, &Device::Cpu, &mut Rng::new(0)).unwrap();
        assert_eq!(d.params().num_parameters(), 2_765_568);
    }

    #[test]
    fn init_statistics() {
        let c = ModelConfig::default();
        let g = DcganGenerator::new(&c, &Device::Cpu, &mut Rng::new(1)).unwrap();
        let stats = |v: Vec<f32>| {
            let n = v.len() as f64;
            let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let s = (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n).sqrt();
            (m, s)
        };
        for (name, var) in g.params().trainable() {
            let v = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (m, s) = stats(v);
            if name.ends_with("bn.bias") {
                assert_eq!((m, s), (0.0, 0.0), "{name}");
            } else if name.ends_with("bn.weight") {
                assert!((m - 1.0).abs() < 0.01 && (s - 0.02).abs() < 0.01, "{name}: {m} {s}");
            } else {
                assert!(m.abs() < 0.002 && (s - 0.02).abs() < 0.001, "{name}: {m} {s}");
            }
        }
    }
}
