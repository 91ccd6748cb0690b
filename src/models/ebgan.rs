//! EBGAN (Zhao et al. 2017): the discriminator is an auto-encoder, and its energy is the
//! reconstruction error E(x) = mean over pixels of (Dec(Enc(x)) − x)², low on real faces.
//! It is trained with the margin loss (`loss = "ebgan"`, margin `train.ebgan_margin`), and
//! the generator with E(G(z)) plus the pulling-away term on the encoder's embeddings of
//! its fakes (penalty `pull-away`, weight 0.1 as in the paper).
//!
//! G is the DCGAN generator. The auto-encoder is the paper's 64x64 layout on DCGAN
//! layers: encoder 4x4 stride-2 convolutions 3 -> ndf -> 2·ndf -> 4·ndf (S/8 x S/8
//! embedding), LeakyReLU(0.2), `d_norm` after all but the first; decoder 4x4 stride-2
//! transposed convolutions back to 3 channels, norm and ReLU between, no output activation.
//! Spectral norm is not offered for this D (the decoder's transposed convolutions have none).

use super::dcgan::DcganGenerator;
use super::{DiscOutput, Discriminator, Family, ModelOption};
use crate::config::ModelConfig;
use crate::nn::{leaky_relu, Conv2d, ConvTranspose2d, Mode, Norm, Params};
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor};

pub const FAMILY: Family = Family {
    name: "ebgan",
    about: "EBGAN (Zhao et al. 2017): DCGAN G, auto-encoder D whose energy is the reconstruction error",
    options: &[ModelOption::DNorm],
    d_aux: &["embedding"],
    energy_d: true,
    w_space: false,
    conditions: &[],
    build_generator: |c, dev, rng| Ok(Box::new(DcganGenerator::new(c, dev, rng)?)),
    build_discriminator: |c, dev, rng| Ok(Box::new(AutoEncoderDiscriminator::new(c, dev, rng)?)),
    validate: |_| Ok(()),
};

/// Stride-2 stages of the encoder (and of the decoder).
const DEPTH: usize = 3;

pub struct AutoEncoderDiscriminator {
    params: Params,
    enc: Vec<Conv2d>,
    enc_norms: Vec<Norm>,
    dec: Vec<ConvTranspose2d>,
    dec_norms: Vec<Norm>,
}

impl AutoEncoderDiscriminator {
    pub fn new(cfg: &ModelConfig, device: &Device, rng: &mut Rng) -> Result<Self> {
        let mut p = Params::new(device);
        let width = |i: usize| cfg.ndf << i;
        let (mut enc, mut enc_norms, mut dec, mut dec_norms) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..DEPTH {
            let cin = if i == 0 { 3 } else { width(i - 1) };
            enc.push(Conv2d::new(&mut p, rng, &format!("enc.{i}"), cin, width(i), 4, 2, 1, false)?);
            if i > 0 {
                enc_norms.push(Norm::new(&cfg.d_norm, &mut p, rng, &format!("enc.{i}.norm"), width(i))?);
            }
        }
        for i in (0..DEPTH).rev() {
            let cout = if i == 0 { 3 } else { width(i - 1) };
            dec.push(ConvTranspose2d::new(&mut p, rng, &format!("dec.{i}"), width(i), cout, 4, 2, 1, i == 0)?);
            if i > 0 {
                dec_norms.push(Norm::new(&cfg.d_norm, &mut p, rng, &format!("dec.{i}.norm"), cout)?);
            }
        }
        Ok(Self { params: p, enc, enc_norms, dec, dec_norms })
    }

    /// The embedding (N, 4·ndf, S/8, S/8) and the reconstruction of `x`.
    pub fn reconstruct(&self, x: &Tensor, mode: Mode) -> candle_core::Result<(Tensor, Tensor)> {
        let mut h = leaky_relu(&self.enc[0].forward(x, mode)?, 0.2)?;
        for (conv, norm) in self.enc[1..].iter().zip(&self.enc_norms) {
            h = norm.forward_act(&conv.forward(&h, mode)?, mode, Some(0.2))?;
        }
        let embedding = h.clone();
        for (conv, norm) in self.dec.iter().zip(&self.dec_norms) {
            h = norm.forward_act(&conv.forward(&h, mode)?, mode, Some(0.0))?;
        }
        Ok((embedding, self.dec.last().expect("decoder").forward(&h, mode)?))
    }
}

impl Discriminator for AutoEncoderDiscriminator {
    /// Logits are the energies E(x) (N,); aux "embedding" is the encoder's output.
    fn forward_full(&self, x: &Tensor, _labels: Option<&Tensor>, mode: Mode) -> candle_core::Result<DiscOutput> {
        let (embedding, rec) = self.reconstruct(x, mode)?;
        let energy = (rec - x)?.sqr()?.flatten_from(1)?.mean(1)?;
        let mut out = DiscOutput::logits(energy);
        out.aux.insert("embedding", embedding);
        Ok(out)
    }

    fn params(&self) -> &Params {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::AdversarialLoss;

    #[test]
    fn energy_is_the_reconstruction_error_and_the_losses_their_closed_forms() {
        let dev = Device::Cpu;
        let cfg = ModelConfig { arch: "ebgan".into(), image_size: 32, ngf: 8, ndf: 8, nz: 16, ..Default::default() };
        let mut rng = Rng::new(2);
        let d = AutoEncoderDiscriminator::new(&cfg, &dev, &mut rng).unwrap();
        let x = rng.normal_tensor((3, 3, 32, 32), 0.0, 0.5, &dev).unwrap();
        let out = d.forward_full(&x, None, Mode::EVAL).unwrap();
        assert_eq!(out.aux["embedding"].dims(), &[3, 32, 4, 4]);
        let (_, rec) = d.reconstruct(&x, Mode::EVAL).unwrap();
        assert_eq!(rec.dims(), x.dims());
        let (xv, rv) =
            (x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), rec.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let e = out.logits.to_vec1::<f32>().unwrap();
        let per = 3 * 32 * 32;
        for n in 0..3 {
            let want: f64 =
                (0..per).map(|i| ((rv[n * per + i] - xv[n * per + i]) as f64).powi(2)).sum::<f64>() / per as f64;
            assert!((e[n] as f64 - want).abs() < 1e-5 * want.max(1.0), "{} vs {want}", e[n]);
        }
        // The margin loss: L_D = mean E(x) + mean max(0, m − E(G(z))), L_G = mean E(G(z)).
        let loss = AdversarialLoss::Energy { margin: 0.5 };
        let real = Tensor::new(&[0.1f32, 0.3], &dev).unwrap();
        let fake = Tensor::new(&[0.2f32, 0.9], &dev).unwrap();
        let dl = loss.d_loss(&real, &fake).unwrap().to_scalar::<f32>().unwrap();
        let gl = loss.g_loss(None, &fake).unwrap().to_scalar::<f32>().unwrap();
        assert!((dl - (0.2 + 0.15)).abs() < 1e-6 && (gl - 0.55).abs() < 1e-6, "{dl} {gl}");
    }
}
