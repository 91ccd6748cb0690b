//! Equalised learning rate (Karras et al. 2018, kept by StyleGAN and StyleGAN2): weights are
//! stored as N(0, 1/lr_mul²) draws and scaled at run time by `lr_mul / sqrt(fan_in)`, so an
//! optimiser that normalises its steps (Adam) moves every layer's effective weights at the
//! same relative speed; `lr_mul` slows a layer down (0.01 in the mapping network). Biases are
//! scaled by `lr_mul` too. Activations use StyleGAN's LeakyReLU(0.2) times sqrt(2), which
//! keeps the signal's magnitude through a layer.

use super::layers::weight;
use super::{Mode, Params};
use crate::rng::Rng;
use candle_core::{Result, Tensor, Var};

/// StyleGAN's activation: LeakyReLU with slope 0.2, times sqrt(2).
pub const LRELU: (f64, f64) = (0.2, std::f64::consts::SQRT_2);

/// StyleGAN's activation: LeakyReLU with slope 0.2, times sqrt(2).
pub fn lrelu_gain(x: &Tensor) -> Result<Tensor> {
    crate::ops::leaky_relu_gain(x, LRELU.0, LRELU.1)
}

/// `x` plus a per-channel bias, then (when `act`) StyleGAN's activation, in one op.
pub fn bias_lrelu(x: &Tensor, b: &Tensor, act: bool) -> Result<Tensor> {
    crate::ops::bias_act(x, b, act.then_some(LRELU))
}

/// A fully connected layer with an equalised learning rate.
pub struct EqLinear {
    pub w: Var,
    pub b: Option<Var>,
    /// Run-time scale of the weight: lr_mul / sqrt(fan_in).
    pub weight_gain: f64,
    /// Run-time scale of the bias: lr_mul.
    pub bias_gain: f64,
    /// LeakyReLU(0.2)·sqrt(2) after the bias.
    pub act: bool,
}

impl EqLinear {
    /// `bias_init`: the stored bias's initial value (None: no bias), 1 for the style affines.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: &mut Params,
        rng: &mut Rng,
        name: &str,
        (cin, cout): (usize, usize),
        lr_mul: f64,
        bias_init: Option<f64>,
        act: bool,
    ) -> Result<Self> {
        let w = p.normal(&format!("{name}.weight"), &[cout, cin], 0.0, 1.0 / lr_mul, rng)?;
        let b = match bias_init {
            Some(v) => Some(p.param(&format!("{name}.bias"), Tensor::full(v as f32, cout, &p.device.clone())?)?),
            None => None,
        };
        Ok(Self { w, b, weight_gain: lr_mul / (cin as f64).sqrt(), bias_gain: lr_mul, act })
    }

    /// (N, cin) -> (N, cout).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = x.matmul(&(weight(&self.w, mode) * self.weight_gain)?.t()?)?;
        let y = match &self.b {
            Some(b) => y.broadcast_add(&(weight(b, mode) * self.bias_gain)?)?,
            None => y,
        };
        if self.act {
            lrelu_gain(&y)
        } else {
            Ok(y)
        }
    }
}

/// A convolution (stride 1, "same" padding) with an equalised learning rate: N(0, 1) weights
/// scaled by 1/sqrt(cin·k²), zero biases.
pub struct EqConv2d {
    pub w: Var,
    pub b: Option<Var>,
    pub weight_gain: f64,
    pub act: bool,
}

impl EqConv2d {
    pub fn new(
        p: &mut Params,
        rng: &mut Rng,
        name: &str,
        (cin, cout, k): (usize, usize, usize),
        bias: bool,
        act: bool,
    ) -> Result<Self> {
        let w = p.normal(&format!("{name}.weight"), &[cout, cin, k, k], 0.0, 1.0, rng)?;
        let b = if bias { Some(p.zeros(&format!("{name}.bias"), &[cout])?) } else { None };
        Ok(Self { w, b, weight_gain: 1.0 / ((cin * k * k) as f64).sqrt(), act })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let k = self.w.dim(3)?;
        let y = crate::ops::conv2d(x, &(weight(&self.w, mode) * self.weight_gain)?, 1, k / 2)?;
        match (&self.b, self.act) {
            (Some(b), act) => bias_lrelu(&y, &weight(b, mode), act),
            (None, true) => lrelu_gain(&y),
            (None, false) => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::Optimizer;
    use candle_core::Device;

    /// The stored weights are N(0, 1/lr_mul²), the layer computes x·(w·lr_mul/sqrt(fan_in))ᵀ +
    /// b·lr_mul, and one Adam step of size lr moves each effective weight by lr·lr_mul/sqrt(fan_in)
    /// (Adam's first step is ±lr per stored element).
    #[test]
    fn equalised_learning_rate_against_the_closed_form() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(3);
        let mut p = Params::new(&dev);
        let (cin, cout, lr_mul) = (400, 50, 0.01);
        let l = EqLinear::new(&mut p, &mut rng, "fc", (cin, cout), lr_mul, Some(0.5), false).unwrap();
        let w = l.w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let std = (w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!((std * lr_mul - 1.0).abs() < 0.03, "stored std {std}");
        let x = rng.normal_tensor((3, cin), 0.0, 1.0, &dev).unwrap();
        let want = x
            .matmul(&(l.w.as_tensor() * (lr_mul / (cin as f64).sqrt())).unwrap().t().unwrap())
            .unwrap()
            .broadcast_add(&(l.b.as_ref().unwrap().as_tensor() * lr_mul).unwrap())
            .unwrap();
        let y = l.forward(&x, Mode::TRAIN).unwrap();
        assert!(crate::ops::max_abs_diff(&y, &want) < 1e-5);
        // Effective weights before and after one Adam step.
        let effective = |l: &EqLinear| (l.w.as_tensor() * l.weight_gain).unwrap();
        let before = effective(&l);
        let lr = 0.1;
        let mut opt = Optimizer::from_name("adam", &p, lr, 0.0, 0.99).unwrap();
        // Large enough gradients that Adam's ε (1e-8) does not shrink the first step.
        let grads = (y.sqr().unwrap().sum_all().unwrap() * 1e6).unwrap().backward().unwrap();
        opt.step(&p, &grads).unwrap();
        let moved = (effective(&l) - before).unwrap().abs().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let expect = lr * lr_mul / (cin as f64).sqrt();
        for m in moved {
            assert!((m as f64 - expect).abs() < 1e-3 * expect, "moved {m}, expected {expect}");
        }
        // Convolutions: N(0, 1) weights, run-time scale 1/sqrt(cin·k²).
        let c = EqConv2d::new(&mut p, &mut rng, "conv", (8, 4, 3), true, false).unwrap();
        assert!((c.weight_gain - 1.0 / 72f64.sqrt()).abs() < 1e-15);
        let x = rng.normal_tensor((2, 8, 5, 5), 0.0, 1.0, &dev).unwrap();
        let want = crate::ops::conv2d(&x, &(c.w.as_tensor() * c.weight_gain).unwrap(), 1, 1).unwrap();
        assert!(crate::ops::max_abs_diff(&c.forward(&x, Mode::TRAIN).unwrap(), &want) < 1e-6);
    }
}
