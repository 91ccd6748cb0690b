//! StyleGAN2's modulated convolution (Karras et al. 2020), StyleGAN's adaptive instance
//! normalisation (Karras et al. 2019) and the per-pixel noise inputs of both.
//!
//! A modulated convolution scales its weight's input channels by a per-sample style s
//! (an affine map of w) and, when demodulating, rescales each output channel so that unit
//! input variance gives unit output variance: w'_oik = s_i·w_oik / sqrt(Σ_ik (s_i·w_oik)² + ε).
//! The paper computes it as a grouped convolution with one weight per sample
//! ([`ModulatedConv2d::forward_grouped`], kept as the reference). On the CPU the equivalent
//! form is faster ([`ModulatedConv2d::forward`]): scale the input's channels by s, run one
//! shared convolution for the whole batch, and scale the output's channels by the
//! demodulation factor d_o = 1/sqrt(Σ_i s_i²·Σ_k w_oik² + ε), itself one (N, C_in)×(C_in, C_out)
//! product. Both are differentiable to second order (path length, R1).

use super::equalized::EqLinear;
use super::layers::weight;
use super::{Mode, Params};
use crate::ops::scale_nc;
use crate::rng::Rng;
use candle_core::{Result, Tensor, Var};

/// Added under the square root of the demodulation (as in the official code).
pub const DEMOD_EPS: f64 = 1e-8;

pub struct ModulatedConv2d {
    /// (C_out, C_in, K, K), N(0, 1).
    pub w: Var,
    /// w (N, w_dim) -> styles (N, C_in), bias initialised to 1.
    pub affine: EqLinear,
    pub demodulate: bool,
    /// Scale of the styles: 1, or 1/sqrt(C_in·K²) for toRGB (which does not demodulate).
    style_gain: f64,
}

impl ModulatedConv2d {
    pub fn new(
        p: &mut Params,
        rng: &mut Rng,
        name: &str,
        (cin, cout, k): (usize, usize, usize),
        w_dim: usize,
        demodulate: bool,
    ) -> Result<Self> {
        let affine = EqLinear::new(p, rng, &format!("{name}.affine"), (w_dim, cin), 1.0, Some(1.0), false)?;
        let w = p.normal(&format!("{name}.weight"), &[cout, cin, k, k], 0.0, 1.0, rng)?;
        let style_gain = if demodulate { 1.0 } else { 1.0 / ((cin * k * k) as f64).sqrt() };
        Ok(Self { w, affine, demodulate, style_gain })
    }

    /// Per-sample styles (N, C_in).
    pub fn styles(&self, w: &Tensor, mode: Mode) -> Result<Tensor> {
        self.affine.forward(w, mode)? * self.style_gain
    }

    /// Per-sample demodulation factors (N, C_out) for styles `s`.
    fn demodulation(&self, s: &Tensor, mode: Mode) -> Result<Tensor> {
        let wsq = weight(&self.w, mode).sqr()?.flatten_from(2)?.sum(2)?; // (C_out, C_in)
        (s.sqr()?.matmul(&wsq.t()?)? + DEMOD_EPS)?.sqrt()?.recip()
    }

    /// The fast form: `x` (N, C_in, H, W) scaled by the styles, one shared convolution, the
    /// output scaled by the demodulation factors. `w` is (N, w_dim).
    pub fn forward(&self, x: &Tensor, w: &Tensor, mode: Mode) -> Result<Tensor> {
        let s = self.styles(w, mode)?;
        let k = self.w.dim(3)?;
        let y = crate::ops::conv2d(&scale_nc(x, &s)?, &weight(&self.w, mode), 1, k / 2)?;
        if !self.demodulate {
            return Ok(y);
        }
        scale_nc(&y, &self.demodulation(&s, mode)?)
    }

    /// The paper's form: each sample convolved with its own modulated (and demodulated)
    /// weight. The reference the fast form is tested against.
    pub fn forward_grouped(&self, x: &Tensor, w: &Tensor, mode: Mode) -> Result<Tensor> {
        let s = self.styles(w, mode)?;
        let wt = weight(&self.w, mode);
        let (cout, cin, k, _) = wt.dims4()?;
        let mut outs = Vec::new();
        for i in 0..x.dim(0)? {
            let mut wi = wt.broadcast_mul(&s.get(i)?.reshape((1, cin, 1, 1))?)?;
            if self.demodulate {
                let norm = (wi.sqr()?.flatten_from(1)?.sum_keepdim(1)? + DEMOD_EPS)?.sqrt()?;
                wi = wi.broadcast_div(&norm.reshape((cout, 1, 1, 1))?)?;
            }
            outs.push(crate::ops::conv2d(&x.narrow(0, i, 1)?, &wi, 1, k / 2)?);
        }
        Tensor::cat(&outs, 0)
    }
}

/// AdaIN: each sample's channels normalised over (H, W) (instance norm, ε = 1e-8 as in the
/// official code), then scaled by 1 + s and shifted by b, (s, b) an affine map of w.
pub struct AdaIn {
    /// w (N, w_dim) -> (N, 2C): scales then shifts, biases initialised to 0.
    pub affine: EqLinear,
    channels: usize,
}

/// Instance norm's ε.
pub const ADAIN_EPS: f64 = 1e-8;

impl AdaIn {
    pub fn new(p: &mut Params, rng: &mut Rng, name: &str, channels: usize, w_dim: usize) -> Result<Self> {
        let affine = EqLinear::new(p, rng, &format!("{name}.style"), (w_dim, 2 * channels), 1.0, Some(0.0), false)?;
        Ok(Self { affine, channels })
    }

    pub fn forward(&self, x: &Tensor, w: &Tensor, mode: Mode) -> Result<Tensor> {
        let (n, c, h, wd) = x.dims4()?;
        // Instance norm is layer norm over each (sample, channel) plane.
        let (one, zero) = (Tensor::ones(1, x.dtype(), x.device())?, Tensor::zeros(1, x.dtype(), x.device())?);
        let xn = crate::ops::layer_norm(&x.reshape((n * c, 1, h, wd))?, &one, &zero, ADAIN_EPS, None)?;
        let style = self.affine.forward(w, mode)?;
        let scale = (style.narrow(1, 0, self.channels)? + 1.0)?;
        let shift = style.narrow(1, self.channels, self.channels)?.reshape((n, c, 1, 1))?;
        scale_nc(&xn.reshape((n, c, h, wd))?, &scale)?.broadcast_add(&shift)
    }
}

/// Per-pixel Gaussian noise, one image per sample shared by the channels, added with a learned
/// strength: one scalar (StyleGAN2) or one per channel (StyleGAN), starting at 0.
pub struct NoiseInput {
    pub strength: Var,
    /// Distinguishes this layer's noise from the other layers' of the same sample.
    salt: u64,
}

impl NoiseInput {
    pub fn new(p: &mut Params, name: &str, channels: usize, salt: u64) -> Result<Self> {
        Ok(Self { strength: p.zeros(&format!("{name}.noise_strength"), &[channels])?, salt })
    }

    /// Adds noise drawn from each sample's seed (`seeds`, one per sample); no seeds: no noise.
    pub fn forward(&self, x: &Tensor, seeds: Option<&[u64]>, mode: Mode) -> Result<Tensor> {
        let Some(seeds) = seeds else { return Ok(x.clone()) };
        let (n, c, h, w) = x.dims4()?;
        if seeds.len() != n {
            candle_core::bail!("{} noise seeds for a batch of {n}", seeds.len());
        }
        let mut values = Vec::with_capacity(n * h * w);
        for &seed in seeds {
            values.extend(Rng::derived(seed, self.salt).normal_vec(h * w, 0.0, 1.0));
        }
        let noise = Tensor::from_vec(values, (n, 1, h, w), x.device())?.to_dtype(x.dtype())?;
        let s = weight(&self.strength, mode);
        let s = if s.elem_count() == 1 { s.reshape((1, 1, 1, 1))? } else { s.reshape((1, c, 1, 1))? };
        x.broadcast_add(&noise.broadcast_mul(&s)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn layer(demodulate: bool, dtype: DType) -> (ModulatedConv2d, Params) {
        let mut p = Params::with_dtype(&Device::Cpu, dtype);
        let m = ModulatedConv2d::new(&mut p, &mut Rng::new(4), "conv", (6, 5, 3), 7, demodulate).unwrap();
        (m, p)
    }

    #[test]
    fn the_fast_form_equals_the_grouped_reference() {
        let mut rng = Rng::new(5);
        for demodulate in [true, false] {
            let (m, _) = layer(demodulate, DType::F64);
            let x = rng.normal_tensor((3, 6, 8, 8), 0.0, 1.0, &Device::Cpu).unwrap().to_dtype(DType::F64).unwrap();
            let w = rng.normal_tensor((3, 7), 0.0, 1.0, &Device::Cpu).unwrap().to_dtype(DType::F64).unwrap();
            let fast = m.forward(&x, &w, Mode::TRAIN).unwrap();
            let grouped = m.forward_grouped(&x, &w, Mode::TRAIN).unwrap();
            assert_eq!(fast.dims(), &[3, 5, 8, 8]);
            assert!(crate::ops::max_abs_diff(&fast, &grouped) < 1e-10, "demodulate {demodulate}");
        }
    }

    /// For unit-variance, independent inputs, a demodulated output pixel away from the
    /// border has variance Σ_ik w'_oik² = 1, whatever the style.
    #[test]
    fn demodulation_keeps_unit_output_variance() {
        let (m, _) = layer(true, DType::F32);
        let mut rng = Rng::new(6);
        let w = (rng.normal_tensor((1, 7), 0.0, 1.0, &Device::Cpu).unwrap() * 3.0).unwrap();
        let x = rng.normal_tensor((64, 6, 12, 12), 0.0, 1.0, &Device::Cpu).unwrap();
        let w = w.broadcast_as((64, 7)).unwrap().contiguous().unwrap();
        let y = m.forward(&x, &w, Mode::TRAIN).unwrap().narrow(2, 1, 10).unwrap().narrow(3, 1, 10).unwrap();
        for o in 0..5 {
            let v = y.narrow(1, o, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mean = v.iter().map(|&a| a as f64).sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
            assert!((var - 1.0).abs() < 0.06, "channel {o}: variance {var}");
        }
    }

    #[test]
    fn adain_against_the_closed_form() {
        let dev = Device::Cpu;
        let mut p = Params::with_dtype(&dev, DType::F64);
        let mut rng = Rng::new(8);
        let a = AdaIn::new(&mut p, &mut rng, "adain", 3, 5).unwrap();
        let x = rng.normal_tensor((2, 3, 4, 4), 1.0, 2.0, &dev).unwrap().to_dtype(DType::F64).unwrap();
        let w = rng.normal_tensor((2, 5), 0.0, 1.0, &dev).unwrap().to_dtype(DType::F64).unwrap();
        let y = a.forward(&x, &w, Mode::TRAIN).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let style = a.affine.forward(&w, Mode::TRAIN).unwrap().to_vec2::<f64>().unwrap();
        let xv = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for n in 0..2 {
            for c in 0..3 {
                let plane = &xv[(n * 3 + c) * 16..(n * 3 + c + 1) * 16];
                let mean = plane.iter().sum::<f64>() / 16.0;
                let var = plane.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 16.0;
                for (k, v) in plane.iter().enumerate() {
                    let want = (v - mean) / (var + ADAIN_EPS).sqrt() * (1.0 + style[n][c]) + style[n][3 + c];
                    assert!((y[(n * 3 + c) * 16 + k] - want).abs() < 1e-9);
                }
            }
        }
    }

    #[test]
    fn noise_follows_the_seeds_and_the_strength() {
        let dev = Device::Cpu;
        let mut p = Params::new(&dev);
        let noise = NoiseInput::new(&mut p, "n", 1, 9).unwrap();
        let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev).unwrap();
        // Strength 0 at the start: the identity.
        assert_eq!(crate::ops::max_abs_diff(&noise.forward(&x, Some(&[1, 2]), Mode::TRAIN).unwrap(), &x), 0.0);
        noise.strength.set(&Tensor::new(&[0.5f32], &dev).unwrap()).unwrap();
        let a = noise.forward(&x, Some(&[1, 2]), Mode::TRAIN).unwrap();
        let b = noise.forward(&x, Some(&[1, 3]), Mode::TRAIN).unwrap();
        // Sample 0 has the same seed in both, sample 1 not; channels share the image.
        assert_eq!(crate::ops::max_abs_diff(&a.get(0).unwrap(), &b.get(0).unwrap()), 0.0);
        assert!(crate::ops::max_abs_diff(&a.get(1).unwrap(), &b.get(1).unwrap()) > 0.1);
        let a0 = a.get(0).unwrap();
        assert_eq!(crate::ops::max_abs_diff(&a0.get(0).unwrap(), &a0.get(2).unwrap()), 0.0);
        let want = (Tensor::new(Rng::derived(1, 9).normal_vec(16, 0.0, 1.0), &dev).unwrap() * 0.5).unwrap();
        assert!(crate::ops::max_abs_diff(&a0.get(0).unwrap().flatten_all().unwrap(), &want) < 1e-7);
        assert_eq!(crate::ops::max_abs_diff(&noise.forward(&x, None, Mode::TRAIN).unwrap(), &x), 0.0);
    }
}
