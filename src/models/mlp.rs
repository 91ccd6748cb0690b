//! The MLP GAN (Goodfellow et al. 2014), in the layout of the common PyTorch version
//! (eriklindernoren's gan.py): fully connected layers only.
//!
//! G: z -> 2·ngf -> 4·ngf -> 8·ngf -> 16·ngf -> 3·S·S, LeakyReLU(0.2) after each hidden layer,
//! batch norm on all but the first, tanh at the end (128-256-512-1024 for ngf = 64).
//! D: 3·S·S -> 8·ndf -> 4·ndf -> 1 with LeakyReLU(0.2) and dropout (`d_dropout`, 0.5 in the
//! presets, as the paper's maxout D used) after each hidden layer. Xavier-uniform weights,
//! zero biases.

use super::{DiscOutput, Discriminator, Family, Generator, Latent, ModelOption};
use crate::config::ModelConfig;
use crate::nn::layers::{Init, LayerOpts};
use crate::nn::{BatchNorm2d, Dropout, Linear, Mode, Params};
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor};

pub const FAMILY: Family = Family {
    name: "mlp",
    about: "MLP GAN (Goodfellow et al. 2014): fully connected G and D, dropout in D",
    options: &[ModelOption::Dropout, ModelOption::DSpectralNorm],
    d_aux: &[],
    energy_d: false,
    w_space: false,
    conditions: &[],
    build_generator: |c, dev, rng| Ok(Box::new(MlpGenerator::new(c, dev, rng)?)),
    build_discriminator: |c, dev, rng| Ok(Box::new(MlpDiscriminator::new(c, dev, rng)?)),
    validate: |_| Ok(()),
};

const SLOPE: f64 = 0.2;

pub struct MlpGenerator {
    params: Params,
    nz: usize,
    size: usize,
    layers: Vec<Linear>,
    /// Batch norm after hidden layers 1.. (None for the first).
    norms: Vec<Option<BatchNorm2d>>,
}

impl MlpGenerator {
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        let mut p = Params::new(device);
        let opts = LayerOpts::new(true, Init::XavierUniform(1.0), cfg.g_spectral_norm);
        let widths = [cfg.nz, 2 * cfg.ngf, 4 * cfg.ngf, 8 * cfg.ngf, 16 * cfg.ngf, 3 * cfg.image_size * cfg.image_size];
        let (mut layers, mut norms) = (Vec::new(), Vec::new());
        for i in 0..widths.len() - 1 {
            layers.push(Linear::with(&mut p, rng, &format!("fc.{i}"), widths[i], widths[i + 1], opts)?);
            if i + 2 < widths.len() {
                norms.push(match i {
                    0 => None,
                    _ => Some(BatchNorm2d::new(&mut p, rng, &format!("fc.{i}.bn"), widths[i + 1])?),
                });
            }
        }
        Ok(Self { params: p, nz: cfg.nz, size: cfg.image_size, layers, norms })
    }
}

impl Generator for MlpGenerator {
    fn latent_dim(&self) -> usize {
        self.nz
    }

    fn forward(&self, latent: &Latent, mode: Mode) -> candle_core::Result<Tensor> {
        let mut h = latent.z.clone();
        for (layer, norm) in self.layers.iter().zip(&self.norms) {
            h = layer.forward(&h, mode)?;
            h = match norm {
                Some(bn) => bn.forward_act(&h, mode, Some(SLOPE))?,
                None => crate::ops::leaky_relu(&h, SLOPE)?,
            };
        }
        let out = self.layers.last().expect("layers").forward(&h, mode)?;
        crate::ops::tanh(&out.reshape((out.dim(0)?, 3, self.size, self.size))?)
    }

    fn params(&self) -> &Params {
        &self.params
    }
}

pub struct MlpDiscriminator {
    params: Params,
    layers: Vec<Linear>,
    dropout: Vec<Dropout>,
}

impl MlpDiscriminator {
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        let mut p = Params::new(device);
        let opts = LayerOpts::new(true, Init::XavierUniform(1.0), cfg.d_spectral_norm);
        let widths = [3 * cfg.image_size * cfg.image_size, 8 * cfg.ndf, 4 * cfg.ndf, 1];
        let mut layers = Vec::new();
        for i in 0..widths.len() - 1 {
            layers.push(Linear::with(&mut p, rng, &format!("fc.{i}"), widths[i], widths[i + 1], opts)?);
        }
        let dropout = (0..widths.len() - 2).map(|i| Dropout { p: cfg.d_dropout, salt: i as u64 }).collect();
        Ok(Self { params: p, layers, dropout })
    }
}

impl Discriminator for MlpDiscriminator {
    fn forward_full(&self, x: &Tensor, _labels: Option<&Tensor>, mode: Mode) -> candle_core::Result<DiscOutput> {
        let mut h = x.flatten_from(1)?;
        for (layer, drop) in self.layers.iter().zip(&self.dropout) {
            h = drop.forward(&crate::ops::leaky_relu(&layer.forward(&h, mode)?, SLOPE)?, mode)?;
        }
        Ok(DiscOutput::logits(self.layers.last().expect("layers").forward(&h, mode)?.flatten_all()?))
    }

    fn params(&self) -> &Params {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parameter_counts_and_dropout() {
        let dev = Device::Cpu;
        let cfg = ModelConfig { arch: "mlp".into(), d_dropout: 0.5, ..Default::default() };
        let mut rng = Rng::new(0);
        let g = MlpGenerator::new(&cfg, &dev, &mut rng).unwrap();
        let d = MlpDiscriminator::new(&cfg, &dev, &mut rng).unwrap();
        // The PyTorch layout (Linear with bias, BatchNorm1d with affine) at 64x64, nz = 100:
        let lin = |a: usize, b: usize| a * b + b;
        let out = 3 * 64 * 64;
        let g_count =
            lin(100, 128) + lin(128, 256) + 512 + lin(256, 512) + 1024 + lin(512, 1024) + 2048 + lin(1024, out);
        assert_eq!(g.params().num_parameters(), g_count);
        assert_eq!(d.params().num_parameters(), lin(out, 512) + lin(512, 256) + lin(256, 1));
        let z = g.sample_latent(4, &mut rng, &dev).unwrap();
        let x = g.forward(&z, Mode::TRAIN).unwrap();
        assert_eq!(x.dims(), &[4, 3, 64, 64]);
        // Dropout: the same seed gives the same logits, another seed other ones, none in eval.
        let a = d.forward(&x, None, Mode::TRAIN.with_noise(1)).unwrap().to_vec1::<f32>().unwrap();
        let b = d.forward(&x, None, Mode::TRAIN.with_noise(1)).unwrap().to_vec1::<f32>().unwrap();
        let c = d.forward(&x, None, Mode::TRAIN.with_noise(2)).unwrap().to_vec1::<f32>().unwrap();
        let e1 = d.forward(&x, None, Mode::EVAL).unwrap().to_vec1::<f32>().unwrap();
        let e2 = d.forward(&x, None, Mode::EVAL).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(e1, e2);
        assert_ne!(a, e1);
    }
}
