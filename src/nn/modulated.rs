//! Batch norm whose scale and shift are computed per sample from a conditioning vector:
//! self-modulation (Chen et al. 2019) conditions on the latent z through a small MLP,
//! conditional batch norm (de Vries et al. 2017; Miyato & Koyama 2018) on labels through
//! a linear map. The normalisation itself has no affine parameters; the output is
//! `x̂ · (1 + Δγ(c)) + β(c)`, so a fresh layer (small Δγ, β) starts near plain batch norm.

use super::layers::{BatchNorm2d, Init, LayerOpts, Linear};
use super::{Mode, Params};
use crate::rng::Rng;
use candle_core::{Result, Tensor};

pub struct ModulatedBatchNorm {
    pub bn: BatchNorm2d,
    hidden: Option<Linear>,
    out: Linear,
    channels: usize,
}

impl ModulatedBatchNorm {
    /// Normalises `c` channels, modulated by a `cond_dim`-vector through one hidden layer of
    /// `hidden` units with ReLU (self-modulation), or through a linear map when `hidden` is None.
    pub fn new(
        p: &mut Params,
        rng: &mut Rng,
        name: &str,
        c: usize,
        cond_dim: usize,
        hidden: Option<usize>,
    ) -> Result<Self> {
        let bn = BatchNorm2d::new_plain(p, name, c)?;
        let opts = LayerOpts::new(true, Init::XavierUniform(1.0), false);
        let (hidden, into) = match hidden {
            Some(hd) => (Some(Linear::with(p, rng, &format!("{name}.mod_hidden"), cond_dim, hd, opts)?), hd),
            None => (None, cond_dim),
        };
        let out = Linear::with(p, rng, &format!("{name}.mod_out"), into, 2 * c, opts)?;
        Ok(Self { bn, hidden, out, channels: c })
    }

    /// Per-sample (scale, shift), each (N, C).
    pub fn modulation(&self, cond: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        let h = match &self.hidden {
            Some(l) => crate::ops::leaky_relu(&l.forward(cond, mode)?, 0.0)?,
            None => cond.clone(),
        };
        let o = self.out.forward(&h, mode)?;
        let scale = (o.narrow(1, 0, self.channels)? + 1.0)?;
        Ok((scale, o.narrow(1, self.channels, self.channels)?))
    }

    /// Normalises (N, C, H, W) (or (N, C)) `x`, modulates it by `cond` (N, cond_dim), then applies a
    /// LeakyReLU of slope `act` (0: ReLU) when given.
    pub fn forward_act(&self, x: &Tensor, cond: &Tensor, mode: Mode, act: Option<f64>) -> Result<Tensor> {
        let xn = self.bn.forward_act(x, mode, None)?;
        let (scale, shift) = self.modulation(cond, mode)?;
        let mut dims = vec![1usize; x.rank()];
        (dims[0], dims[1]) = (x.dim(0)?, self.channels);
        let y = xn.broadcast_mul(&scale.reshape(dims.clone())?)?.broadcast_add(&shift.reshape(dims)?)?;
        super::layers::activation(y, act)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn per_sample_scale_follows_the_condition_and_matches_the_closed_form() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(7);
        let mut p = Params::new(&dev);
        let m = ModulatedBatchNorm::new(&mut p, &mut rng, "bn", 3, 5, Some(4)).unwrap();
        let z = rng.normal_tensor((4, 5), 0.0, 1.0, &dev).unwrap();
        let (scale, shift) = m.modulation(&z, Mode::TRAIN).unwrap();
        let s = scale.to_vec2::<f32>().unwrap();
        assert!(s[0] != s[1] && s[1] != s[2], "self-modulation's scale must differ across z: {s:?}");
        let x = rng.normal_tensor((4, 3, 2, 2), 0.5, 2.0, &dev).unwrap();
        let y = m.forward_act(&x, &z, Mode::TRAIN, None).unwrap();
        // Closed form: per channel, batch statistics (biased variance), then the per-sample affine.
        let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let yv = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = shift.to_vec2::<f32>().unwrap();
        for c in 0..3 {
            let idx: Vec<usize> = (0..4).flat_map(|n| (0..4).map(move |k| n * 12 + c * 4 + k)).collect();
            let mean = idx.iter().map(|&i| xv[i] as f64).sum::<f64>() / 16.0;
            let var = idx.iter().map(|&i| (xv[i] as f64 - mean).powi(2)).sum::<f64>() / 16.0;
            for &i in &idx {
                let n = i / 12;
                let want = (xv[i] as f64 - mean) / (var + 1e-5).sqrt() * s[n][c] as f64 + b[n][c] as f64;
                assert!((yv[i] as f64 - want).abs() < 1e-4, "{} vs {want}", yv[i]);
            }
        }
        // Only the modulation MLP is trainable: 5·4 + 4 + 4·6 + 6.
        assert_eq!(p.num_parameters(), 5 * 4 + 4 + 4 * 6 + 6);
    }
}
