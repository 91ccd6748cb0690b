//! Adversarial losses over discriminator logits.
//!
//! Each loss turns the logits of real and fake batches into the discriminator's loss
//! and the generator's loss, both batch means. Formulas use the logit `l` of D, with
//! D(x) = sigmoid(l); `softplus(l) = log(1 + e^l) = -log(1 - sigmoid(l))`.

use anyhow::{bail, Result};
use candle_core::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdversarialLoss {
    /// Goodfellow et al. 2014, the saturating minimax game:
    /// L_D = -log D(x) - log(1 - D(G(z))), L_G = log(1 - D(G(z))).
    Minimax,
    /// The non-saturating variant from the same paper, which DCGAN uses:
    /// L_D as minimax, L_G = -log D(G(z)).
    NonSaturating,
}

pub const LOSS_NAMES: &[&str] = &["non-saturating", "minimax"];

/// log(1 + e^x), stable for large |x| and differentiable to any order.
pub fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

impl AdversarialLoss {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "non-saturating" | "ns" | "bce" => Self::NonSaturating,
            "minimax" | "saturating" => Self::Minimax,
            _ => bail!(
                "unknown loss '{s}'; valid losses: {}",
                LOSS_NAMES.join(", ")
            ),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Minimax => "minimax",
            Self::NonSaturating => "non-saturating",
        }
    }

    /// The discriminator's loss from logits on a real and a fake batch.
    pub fn d_loss(&self, real: &Tensor, fake: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Minimax | Self::NonSaturating => {
                softplus(&real.neg()?)?.mean_all()? + softplus(fake)?.mean_all()?
            }
        }
    }

    /// The generator's loss from the discriminator's logits on a fake batch.
    pub fn g_loss(&self, fake: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Minimax => softplus(fake)?.mean_all()?.neg(),
            Self::NonSaturating => softplus(&fake.neg()?)?.mean_all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn softplus_matches_closed_form_and_is_stable() {
        let v = softplus(&t(&[-100.0, -1.0, 0.0, 2.0, 100.0]))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = [
            0.0,
            (1.0f64 + (-1.0f64).exp()).ln(),
            2f64.ln(),
            (1.0 + 2f64.exp()).ln(),
            100.0,
        ];
        for (a, b) in v.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn losses_equal_their_probability_forms() {
        let (r, f) = ([1.5f32, -0.3], [0.2f32, -2.0]);
        let d_want = r.iter().map(|&x| -sig(x as f64).ln()).sum::<f64>() / 2.0
            + f.iter().map(|&x| -(1.0 - sig(x as f64)).ln()).sum::<f64>() / 2.0;
        for loss in [AdversarialLoss::Minimax, AdversarialLoss::NonSaturating] {
            assert!((scalar(&loss.d_loss(&t(&r), &t(&f)).unwrap()) - d_want).abs() < 1e-5);
        }
        let ns = f.iter().map(|&x| -sig(x as f64).ln()).sum::<f64>() / 2.0;
        let mm = f.iter().map(|&x| (1.0 - sig(x as f64)).ln()).sum::<f64>() / 2.0;
        assert!(
            (scalar(&AdversarialLoss::NonSaturating.g_loss(&t(&f)).unwrap()) - ns).abs() < 1e-5
        );
        assert!((scalar(&AdversarialLoss::Minimax.g_loss(&t(&f)).unwrap()) - mm).abs() < 1e-5);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let base = [0.7f64, -1.2, 0.05];
        for loss in [AdversarialLoss::Minimax, AdversarialLoss::NonSaturating] {
            let f = |x: &[f64]| -> f64 {
                let xt = Tensor::new(x, &Device::Cpu).unwrap();
                scalar(&loss.g_loss(&xt).unwrap())
                    + scalar(&loss.d_loss(&xt, &(&xt * 0.5).unwrap()).unwrap())
            };
            let v = Var::new(&base[..], &Device::Cpu).unwrap();
            let l = (loss.g_loss(v.as_tensor()).unwrap()
                + loss
                    .d_loss(v.as_tensor(), &(v.as_tensor() * 0.5).unwrap())
                    .unwrap())
            .unwrap();
            let g = l
                .backward()
                .unwrap()
                .get(v.as_tensor())
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for i in 0..3 {
                let (mut a, mut b) = (base, base);
                a[i] += 1e-6;
                b[i] -= 1e-6;
                let fd = (f(&a) - f(&b)) / 2e-6;
                assert!(
                    (fd - g[i]).abs() < 1e-6,
                    "{}: {fd} vs {}",
                    loss.name(),
                    g[i]
                );
            }
        }
    }

    #[test]
    fn unknown_loss_lists_valid_ones() {
        let e = AdversarialLoss::parse("wasserstain")
            .unwrap_err()
            .to_string();
        assert!(e.contains("non-saturating") && e.contains("minimax"));
    }
}
