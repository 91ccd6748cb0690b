//! InfoGAN (Chen et al. 2016): latent codes that G must keep recoverable from its images.
//!
//! G reads [z, c] where c is one categorical code of `info_cat` categories (one-hot) and
//! `info_cont` continuous codes drawn from U(−1, 1). D has a Q head on its trunk's features
//! (one hidden layer of [`Q_HIDDEN`] units with LeakyReLU, then `info_cat` logits and
//! `info_cont` means) that predicts c. The variational bound on the mutual information
//! I(c; G(z, c)) gives the loss [`info_loss`]: the cross-entropy of the categorical code plus
//! the Gaussian negative log-likelihood of the continuous ones with unit variance (½‖u − μ‖²,
//! constants dropped), averaged over the batch. Q and D's trunk minimise it on fakes in D's
//! step, G in its own step, each weighted by `train.info_weight` (λ; 1 in the paper).

use crate::nn::layers::{Init, LayerOpts};
use crate::nn::{Linear, Mode, Params};
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor};

/// The aux output of an InfoGAN discriminator: (N, info_cat + info_cont) predicted codes.
pub const Q_CODES: &str = "q_codes";
/// Hidden units of the Q head.
pub const Q_HIDDEN: usize = 128;

/// The codes' layout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InfoCodes {
    pub cat: usize,
    pub cont: usize,
}

impl InfoCodes {
    pub fn dim(&self) -> usize {
        self.cat + self.cont
    }

    pub fn is_empty(&self) -> bool {
        self.dim() == 0
    }

    /// `n` codes (n, cat + cont): a one-hot category, then continuous values in [−1, 1].
    pub fn sample(&self, n: usize, rng: &mut Rng, device: &Device) -> Result<Tensor> {
        let mut v = vec![0f32; n * self.dim()];
        for row in v.chunks_mut(self.dim()) {
            if self.cat > 0 {
                row[rng.below(self.cat)] = 1.0;
            }
            for x in &mut row[self.cat..] {
                *x = (rng.uniform() * 2.0 - 1.0) as f32;
            }
        }
        Ok(Tensor::from_vec(v, (n, self.dim()), device)?)
    }

    /// The codes with category `k` (when `k < cat`) or the continuous code `k − cat` set to
    /// `value` in every row.
    pub fn with_code(&self, codes: &Tensor, k: usize, value: f32) -> Result<Tensor> {
        let mut v: Vec<Vec<f32>> = codes.to_vec2()?;
        for row in &mut v {
            if k < self.cat {
                row[..self.cat].iter_mut().enumerate().for_each(|(j, x)| *x = f32::from(u8::from(j == k)));
            } else {
                row[k] = value;
            }
        }
        Ok(Tensor::from_vec(v.concat(), codes.dims(), codes.device())?)
    }
}

/// The mutual-information loss of predicted codes `q` (N, cat + cont: category logits, then
/// means) against the codes `c` G was given: mean over the batch of
/// −log softmax(q_cat)[c] + ½‖c_cont − q_cont‖². Returns (categorical, continuous) terms.
pub fn info_loss(q: &Tensor, c: &Tensor, codes: InfoCodes) -> candle_core::Result<(Tensor, Tensor)> {
    let n = q.dim(0)? as f64;
    let c = c.to_dtype(q.dtype())?;
    let zero = || Tensor::zeros((), q.dtype(), q.device());
    let cat = match codes.cat {
        0 => zero()?,
        k => {
            let logits = q.narrow(1, 0, k)?;
            let logp = crate::ops::log_softmax(&logits, 1)?;
            ((logp * c.narrow(1, 0, k)?)?.sum_all()? * (-1.0 / n))?
        }
    };
    let cont = match codes.cont {
        0 => zero()?,
        m => {
            let d = (c.narrow(1, codes.cat, m)? - q.narrow(1, codes.cat, m)?)?;
            (d.sqr()?.sum_all()? * (0.5 / n))?
        }
    };
    Ok((cat, cont))
}

/// The Q head: features (N, F) -> predicted codes (N, cat + cont).
pub struct QHead {
    hidden: Linear,
    out: Linear,
}

impl QHead {
    pub fn new(p: &mut Params, rng: &mut Rng, features: usize, codes: InfoCodes) -> candle_core::Result<Self> {
        let opts = LayerOpts::new(true, Init::XavierUniform(1.0), false);
        Ok(Self {
            hidden: Linear::with(p, rng, "q.hidden", features, Q_HIDDEN, opts)?,
            out: Linear::with(p, rng, "q.out", Q_HIDDEN, codes.dim(), opts)?,
        })
    }

    pub fn forward(&self, features: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let h = crate::ops::leaky_relu(&self.hidden.forward(features, mode)?, 0.1)?;
        self.out.forward(&h, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Var};

    const CODES: InfoCodes = InfoCodes { cat: 3, cont: 2 };

    fn closed_form(q: &[f64], c: &[f64]) -> (f64, f64) {
        let m = q[..3].iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + q[..3].iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        let k = c[..3].iter().position(|&x| x == 1.0).unwrap();
        (lse - q[k], 0.5 * ((c[3] - q[3]).powi(2) + (c[4] - q[4]).powi(2)))
    }

    #[test]
    fn info_loss_matches_the_closed_form_and_its_gradient_finite_differences() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(4);
        let c = CODES.sample(2, &mut rng, &dev).unwrap();
        let cv: Vec<Vec<f32>> = c.to_vec2().unwrap();
        assert!(cv.iter().all(|r| r[..3].iter().sum::<f32>() == 1.0 && r[3..].iter().all(|x| x.abs() <= 1.0)));
        let qv: Vec<f64> = rng.normal_vec(10, 0.0, 1.0).iter().map(|&x| x as f64).collect();
        let loss = |qv: &[f64]| -> (f64, f64) {
            let q = Tensor::from_vec(qv.to_vec(), (2, 5), &dev).unwrap();
            let (a, b) = info_loss(&q, &c, CODES).unwrap();
            (a.to_scalar::<f64>().unwrap(), b.to_scalar::<f64>().unwrap())
        };
        let (cat, cont) = loss(&qv);
        let cf = |r: usize| closed_form(&qv[r * 5..r * 5 + 5], &cv[r].iter().map(|&x| x as f64).collect::<Vec<_>>());
        let (a0, b0) = cf(0);
        let (a1, b1) = cf(1);
        assert!((cat - (a0 + a1) / 2.0).abs() < 1e-12 && (cont - (b0 + b1) / 2.0).abs() < 1e-12);
        // The gradient of the sum against central differences.
        let q = Var::from_tensor(&Tensor::from_vec(qv.clone(), (2, 5), &dev).unwrap()).unwrap();
        let (a, b) = info_loss(q.as_tensor(), &c, CODES).unwrap();
        let g: Vec<f64> =
            (a + b).unwrap().backward().unwrap().get(&q).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for i in 0..10 {
            let h = 1e-6;
            let (mut up, mut down) = (qv.clone(), qv.clone());
            up[i] += h;
            down[i] -= h;
            let s = |v: (f64, f64)| v.0 + v.1;
            let fd = (s(loss(&up)) - s(loss(&down))) / (2.0 * h);
            assert!((g[i] - fd).abs() < 1e-7, "{i}: {} vs {fd}", g[i]);
        }
        let q32 = Tensor::zeros((2, 5), DType::F32, &dev).unwrap();
        assert!(info_loss(&q32, &c, InfoCodes { cat: 3, cont: 0 }).is_ok());
    }

    #[test]
    fn with_code_sets_one_category_or_one_value() {
        let dev = Device::Cpu;
        let c = CODES.sample(2, &mut Rng::new(1), &dev).unwrap();
        let a: Vec<Vec<f32>> = CODES.with_code(&c, 1, 0.0).unwrap().to_vec2().unwrap();
        assert!(a.iter().all(|r| r[..3] == [0.0, 1.0, 0.0]));
        let b: Vec<Vec<f32>> = CODES.with_code(&c, 4, 2.0).unwrap().to_vec2().unwrap();
        let orig: Vec<Vec<f32>> = c.to_vec2().unwrap();
        assert!(b.iter().zip(&orig).all(|(r, o)| r[4] == 2.0 && r[..4] == o[..4]));
    }
}
