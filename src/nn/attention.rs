//! Self-attention over positions (Zhang et al. 2019, SAGAN): 1x1 convolutions make queries
//! and keys of C/8 channels and values of C/2, a softmax over positions weighs the values for
//! each position, a 1x1 convolution maps them back to C channels, and a learned γ (starting
//! at 0, so the block starts as the identity) scales what is added to the input. As in the
//! official SAGAN code (and BigGAN), keys and values are max-pooled 2x2 first, so each of the
//! H·W queries attends over H·W/4 positions: a quarter of the cost of the paper's formula.

use super::layers::{Conv2d, Init, LayerOpts};
use super::{Mode, Params};
use crate::ops::{max_pool2x, softmax_last};
use crate::rng::Rng;
use candle_core::{Result, Tensor, Var};

pub struct SelfAttention {
    query: Conv2d,
    key: Conv2d,
    value: Conv2d,
    out: Conv2d,
    pub gamma: Var,
}

impl SelfAttention {
    /// Attention over `c` channels (at least 8); `spectral` puts spectral norm on its convolutions.
    pub fn new(p: &mut Params, rng: &mut Rng, name: &str, c: usize, spectral: bool) -> Result<Self> {
        if c < 8 {
            candle_core::bail!("self-attention needs at least 8 channels, got {c}");
        }
        let opts = LayerOpts::new(false, Init::XavierUniform(1.0), spectral);
        let conv = |p: &mut Params, rng: &mut Rng, part: &str, cin, cout| {
            Conv2d::with(p, rng, &format!("{name}.{part}"), (cin, cout, 1), 1, 0, opts)
        };
        let query = conv(p, rng, "query", c, c / 8)?;
        let key = conv(p, rng, "key", c, c / 8)?;
        let value = conv(p, rng, "value", c, c / 2)?;
        let out = conv(p, rng, "out", c / 2, c)?;
        let gamma = p.zeros(&format!("{name}.gamma"), &[1])?;
        Ok(Self { query, key, value, out, gamma })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (n, _, h, w) = x.dims4()?;
        let hw = h * w;
        let q = self.query.forward(x, mode)?.reshape((n, (), hw))?.transpose(1, 2)?; // (n, hw, c/8)
        let k = max_pool2x(&self.key.forward(x, mode)?)?.reshape((n, (), hw / 4))?; // (n, c/8, hw/4)
        let attn = softmax_last(&q.matmul(&k)?)?; // (n, hw query, hw/4 key)
        let v = max_pool2x(&self.value.forward(x, mode)?)?.reshape((n, (), hw / 4))?; // (n, c/2, hw/4)
        let o = v.matmul(&attn.transpose(1, 2)?)?.reshape((n, (), h, w))?;
        let o = self.out.forward(&o, mode)?;
        let gamma = super::layers::weight(&self.gamma, mode);
        x + o.broadcast_mul(&gamma.reshape((1, 1, 1, 1))?)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn identity_at_gamma_zero_and_attends_otherwise() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(6);
        let mut p = Params::new(&dev);
        let a = SelfAttention::new(&mut p, &mut rng, "attn", 16, true).unwrap();
        let x = rng.normal_tensor((2, 16, 4, 4), 0.0, 1.0, &dev).unwrap();
        let y = a.forward(&x, Mode::TRAIN).unwrap();
        assert_eq!(crate::ops::max_abs_diff(&x, &y), 0.0);
        a.gamma.set(&Tensor::new(&[0.5f32], &dev).unwrap()).unwrap();
        let y = a.forward(&x, Mode::EVAL).unwrap();
        assert!(crate::ops::max_abs_diff(&x, &y) > 1e-3);
        // Each output position mixes every position: changing one input pixel changes
        // the attention output at a far position.
        let mut xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        xv[0] += 3.0;
        let x2 = Tensor::from_vec(xv, x.shape(), &dev).unwrap();
        let y2 = a.forward(&x2, Mode::EVAL).unwrap();
        let far =
            |t: &Tensor| t.get(0).unwrap().get(5).unwrap().get(3).unwrap().get(3).unwrap().to_scalar::<f32>().unwrap();
        assert_ne!(far(&y), far(&y2));
        // Softmax rows sum to one.
        let s = softmax_last(&x.reshape((2, 16, 16)).unwrap()).unwrap().sum(2).unwrap();
        let s = s.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-5));
        // 4 1x1 convolutions without bias and γ: 16·2 + 16·2 + 16·8 + 8·16 + 1.
        assert_eq!(p.num_parameters(), 16 * 2 + 16 * 2 + 16 * 8 + 8 * 16 + 1);
    }
}
