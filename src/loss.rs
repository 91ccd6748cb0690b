//! Adversarial losses over discriminator logits.
//!
//! Each loss turns the logits (raw outputs `v` of D) on a real and a fake batch into
//! the discriminator's loss and the generator's loss, both batch means, both to be
//! minimised. `softplus(v) = log(1 + e^v)`, so with D(x) = sigmoid(v),
//! `-log D(x) = softplus(-v)` and `-log(1 - D(x)) = softplus(v)`.
//! docs/losses.md lists every loss with its formula and paper.

use anyhow::{bail, Result};
use candle_core::Tensor;

/// The f-divergences of Nowozin, Cseke and Tomioka 2016 (f-GAN), Table 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Divergence {
    KullbackLeibler,
    ReverseKl,
    PearsonChi2,
    NeymanChi2,
    SquaredHellinger,
    JensenShannon,
    Gan,
}

/// The relativistic average losses of Jolicoeur-Martineau 2018.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relativistic {
    Standard,
    LeastSquares,
    Hinge,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AdversarialLoss {
    /// Goodfellow et al. 2014, the saturating minimax game:
    /// L_D = -log D(x) - log(1 - D(G(z))), L_G = log(1 - D(G(z))).
    Minimax,
    /// The non-saturating variant from the same paper, which DCGAN uses:
    /// L_D as minimax, L_G = -log D(G(z)).
    NonSaturating,
    /// LSGAN (Mao et al. 2017): L_D = ½(v_r - b)² + ½(v_f - a)², L_G = ½(v_f - c)².
    LeastSquares { a: f64, b: f64, c: f64 },
    /// WGAN (Arjovsky et al. 2017): L_D = v_f - v_r, L_G = -v_f. Needs a Lipschitz
    /// constraint: weight clipping or a gradient penalty.
    Wasserstein,
    /// Hinge (Lim and Ye 2017; SAGAN, BigGAN): L_D = relu(1 - v_r) + relu(1 + v_f), L_G = -v_f.
    Hinge,
    /// f-GAN: L_D = -g(v_r) + f*(g(v_f)), L_G = -g(v_f) (the paper's non-saturating
    /// generator objective), with g the divergence's output activation and f* its conjugate.
    FGan(Divergence),
    /// Relativistic average GANs: each side judges whether real data is more realistic
    /// than the average fake, and the reverse.
    RelativisticAverage(Relativistic),
    /// EBGAN (Zhao et al. 2017) over energies E (D's outputs, ≥ 0, low for real data):
    /// L_D = E(x) + max(0, m − E(G(z))), L_G = E(G(z)).
    Energy { margin: f64 },
}

/// Every loss name `parse` accepts (aliases aside).
pub const LOSS_NAMES: &[&str] = &[
    "non-saturating",
    "minimax",
    "lsgan",
    "wgan",
    "hinge",
    "fgan-kl",
    "fgan-reverse-kl",
    "fgan-pearson",
    "fgan-neyman",
    "fgan-hellinger",
    "fgan-js",
    "fgan-gan",
    "ragan",
    "ralsgan",
    "rahinge",
    "ebgan",
];

/// log(1 + e^x), stable for large |x| and differentiable to any order.
pub fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

fn mean(x: &Tensor) -> candle_core::Result<Tensor> {
    x.mean_all()
}

impl Divergence {
    /// The output activation g_f(v).
    pub fn activation(&self, v: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::KullbackLeibler | Self::PearsonChi2 => Ok(v.clone()),
            Self::ReverseKl => v.neg()?.exp()?.neg(),
            Self::NeymanChi2 | Self::SquaredHellinger => v.neg()?.exp()?.neg()? + 1.0,
            Self::JensenShannon => softplus(&v.neg()?)?.neg()? + std::f64::consts::LN_2,
            Self::Gan => softplus(&v.neg()?)?.neg(),
        }
    }

    /// f*(g_f(v)), simplified so it stays finite for every logit.
    pub fn conjugate_of_activation(&self, v: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::KullbackLeibler => (v - 1.0)?.exp(),              // exp(t - 1), t = v
            Self::ReverseKl => v - 1.0,                             // -1 - log(-t), t = -e^-v
            Self::PearsonChi2 => (v.sqr()? * 0.25)? + v,            // t²/4 + t, t = v
            Self::NeymanChi2 => ((v * -0.5)?.exp()? * -2.0)? + 2.0, // 2 - 2√(1-t), t = 1 - e^-v
            Self::SquaredHellinger => v.exp()? - 1.0,               // t/(1-t), t = 1 - e^-v
            Self::JensenShannon => softplus(v)? - std::f64::consts::LN_2, // -log(2 - e^t)
            Self::Gan => softplus(v),                               // -log(1 - e^t), t = -softplus(-v)
        }
    }
}

impl AdversarialLoss {
    pub fn parse(s: &str) -> Result<Self> {
        Self::parse_with_targets(s, [0.0, 1.0, 1.0])
    }

    /// The loss a training configuration names, with its LSGAN targets and EBGAN margin.
    pub fn from_config(t: &crate::config::TrainConfig) -> Result<Self> {
        Ok(match Self::parse_with_targets(&t.loss, t.lsgan_targets)? {
            Self::Energy { .. } => Self::Energy { margin: t.ebgan_margin },
            other => other,
        })
    }

    /// Parses a name; `lsgan_abc` are LSGAN's targets (fake, real, generator's).
    pub fn parse_with_targets(s: &str, lsgan_abc: [f64; 3]) -> Result<Self> {
        use Divergence::*;
        let [a, b, c] = lsgan_abc;
        Ok(match s {
            "non-saturating" | "ns" | "bce" => Self::NonSaturating,
            "minimax" | "saturating" => Self::Minimax,
            "lsgan" | "least-squares" => Self::LeastSquares { a, b, c },
            "wgan" | "wasserstein" => Self::Wasserstein,
            "hinge" => Self::Hinge,
            "fgan-kl" => Self::FGan(KullbackLeibler),
            "fgan-reverse-kl" | "fgan-rkl" => Self::FGan(ReverseKl),
            "fgan-pearson" => Self::FGan(PearsonChi2),
            "fgan-neyman" => Self::FGan(NeymanChi2),
            "fgan-hellinger" => Self::FGan(SquaredHellinger),
            "fgan-js" => Self::FGan(JensenShannon),
            "fgan-gan" => Self::FGan(Gan),
            "ragan" | "rasgan" => Self::RelativisticAverage(Relativistic::Standard),
            "ralsgan" => Self::RelativisticAverage(Relativistic::LeastSquares),
            "rahinge" => Self::RelativisticAverage(Relativistic::Hinge),
            "ebgan" | "energy" => Self::Energy { margin: 1.0 },
            _ => bail!("unknown loss '{s}'; valid losses: {}", LOSS_NAMES.join(", ")),
        })
    }

    /// D's output where it is indifferent between real and fake: the minimiser of the D loss
    /// when a real and a fake sample get the same output (where the optimal D sits where the
    /// data and the generator agree). 0 for most losses; LSGAN's (a + b)/2; f-GAN's v with
    /// g_f(v) = f'(1), which is 1 for KL and 0 for the others; EBGAN's half margin. The
    /// shift-invariant losses (WGAN, relativistic) have no such point, every constant is one:
    /// 0 here, and [`Self::realness`] reads their outputs against the fakes' mean instead.
    pub fn indifference(&self) -> f64 {
        match *self {
            Self::LeastSquares { a, b, .. } => (a + b) / 2.0,
            Self::FGan(Divergence::KullbackLeibler) => 1.0,
            Self::Energy { margin } => margin / 2.0,
            _ => 0.0,
        }
    }

    /// D's outputs on reals as signed realness: positive where D judges the input real,
    /// negative where it judges it fake. ADA's overfitting heuristic r_t = E[sign(·)] over the
    /// reals reads this, so that it means the same for every loss: `real − indifference`, or
    /// `indifference − E` for EBGAN's energies (low for real data; raw, they are all positive,
    /// as LSGAN's outputs are with its default targets, which would raise p whatever D does).
    /// The shift-invariant losses (WGAN, relativistic) leave D's constant offset free, so the
    /// sign of a raw output says nothing (a WGAN critic drifts to +80 on reals and fakes alike):
    /// for them a real counts as judged real when D scores it above the mean of the step's
    /// fakes, `real − mean(fake)` (the relativistic losses' own view of a real sample).
    pub fn realness(&self, real: &Tensor, fake: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Self::Energy { .. } => real.neg()? + self.indifference(),
            _ if self.is_shift_invariant() => real.broadcast_sub(&fake.detach().mean_all()?),
            _ => real - self.indifference(),
        }
    }

    /// Whether adding a constant to every output of D leaves D's loss unchanged, so that
    /// nothing pins D's offset: WGAN's critic and the relativistic losses, which compare real
    /// and fake outputs only.
    pub fn is_shift_invariant(&self) -> bool {
        matches!(self, Self::Wasserstein | Self::RelativisticAverage(_))
    }

    /// Whether the loss reads D(x) = sigmoid(v) as a probability (so one-sided label
    /// smoothing applies).
    pub fn is_cross_entropy(&self) -> bool {
        matches!(self, Self::Minimax | Self::NonSaturating)
    }

    /// Whether the generator's loss needs the logits of real images.
    pub fn g_needs_real(&self) -> bool {
        matches!(self, Self::RelativisticAverage(_))
    }

    /// The discriminator's loss. `real_label` is the target of real images for the
    /// cross-entropy losses (1, or e.g. 0.9 with one-sided label smoothing).
    pub fn d_loss(&self, real: &Tensor, fake: &Tensor) -> candle_core::Result<Tensor> {
        self.d_loss_smoothed(real, fake, 1.0)
    }

    pub fn d_loss_smoothed(&self, real: &Tensor, fake: &Tensor, real_label: f64) -> candle_core::Result<Tensor> {
        match *self {
            Self::Minimax | Self::NonSaturating => {
                let real_term = if real_label == 1.0 {
                    softplus(&real.neg()?)?
                } else {
                    ((softplus(&real.neg()?)? * real_label)? + (softplus(real)? * (1.0 - real_label))?)?
                };
                mean(&real_term)? + mean(&softplus(fake)?)?
            }
            Self::LeastSquares { a, b, .. } => (mean(&(real - b)?.sqr()?)? + mean(&(fake - a)?.sqr()?)?)? * 0.5,
            Self::Wasserstein => mean(fake)? - mean(real)?,
            Self::Hinge => mean(&(real.neg()? + 1.0)?.relu()?)? + mean(&(fake + 1.0)?.relu()?)?,
            Self::FGan(div) => mean(&div.conjugate_of_activation(fake)?)? - mean(&div.activation(real)?)?,
            Self::RelativisticAverage(kind) => {
                let (r, f) = relativistic_pair(real, fake)?;
                relativistic(kind, &r, &f)
            }
            Self::Energy { margin } => mean(real)? + mean(&(fake.neg()? + margin)?.relu()?)?,
        }
    }

    /// The generator's loss; `real` is read only by the relativistic losses.
    pub fn g_loss(&self, real: Option<&Tensor>, fake: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Self::Minimax => mean(&softplus(fake)?)?.neg(),
            Self::NonSaturating => mean(&softplus(&fake.neg()?)?),
            Self::LeastSquares { c, .. } => mean(&(fake - c)?.sqr()?)? * 0.5,
            Self::Wasserstein | Self::Hinge => mean(fake)?.neg(),
            Self::Energy { .. } => mean(fake),
            Self::FGan(div) => mean(&div.activation(fake)?)?.neg(),
            Self::RelativisticAverage(kind) => {
                let real = real.ok_or_else(|| {
                    candle_core::Error::Msg("relativistic losses need D's logits on real images".into())
                })?;
                let (r, f) = relativistic_pair(real, fake)?;
                // The generator plays the same game with the roles of real and fake swapped.
                relativistic(kind, &f, &r)
            }
        }
    }
}

/// (v_r - mean v_f, v_f - mean v_r).
fn relativistic_pair(real: &Tensor, fake: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    Ok((real.broadcast_sub(&mean(fake)?)?, fake.broadcast_sub(&mean(real)?)?))
}

/// The relativistic loss of the side that wants `up` judged real and `down` judged fake.
fn relativistic(kind: Relativistic, up: &Tensor, down: &Tensor) -> candle_core::Result<Tensor> {
    match kind {
        Relativistic::Standard => mean(&softplus(&up.neg()?)?)? + mean(&softplus(down)?)?,
        Relativistic::LeastSquares => mean(&(up - 1.0)?.sqr()?)? + mean(&(down + 1.0)?.sqr()?)?,
        Relativistic::Hinge => mean(&(up.neg()? + 1.0)?.relu()?)? + mean(&(down + 1.0)?.relu()?)?,
    }
}

/// Feature matching (Salimans et al. 2016, eq. 4 up to a constant): the mean over features of
/// the squared difference between the batch means of D's features on real images `real`
/// (N, F) and on fakes `fake` (M, F). The paper's ‖·‖² is this times F; the mean keeps the
/// scale independent of D's width.
pub fn feature_matching(real: &Tensor, fake: &Tensor) -> candle_core::Result<Tensor> {
    (real.mean(0)? - fake.mean(0)?)?.sqr()?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    const REAL: [f64; 3] = [1.5, -0.3, 0.4];
    const FAKE: [f64; 3] = [0.2, -2.0, 0.7];

    fn t(v: &[f64]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_scalar::<f64>().unwrap()
    }

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn avg(v: &[f64], f: impl Fn(f64) -> f64) -> f64 {
        v.iter().map(|&x| f(x)).sum::<f64>() / v.len() as f64
    }

    fn all_losses() -> Vec<AdversarialLoss> {
        LOSS_NAMES.iter().map(|n| AdversarialLoss::parse(n).unwrap()).collect()
    }

    /// At the indifference point the D loss of a real and a fake sample with the same output is
    /// stationary, and realness is positive on the side that lowers the real sample's loss,
    /// for every loss (and LSGAN's other targets, and another EBGAN margin).
    #[test]
    fn realness_is_zero_where_d_is_indifferent_and_positive_towards_real() {
        let mut losses = all_losses();
        losses.push(AdversarialLoss::parse_with_targets("lsgan", [-1.0, 1.0, 0.0]).unwrap());
        losses.push(AdversarialLoss::Energy { margin: 3.0 });
        for loss in losses {
            let v0 = loss.indifference();
            let d = |r: f64, f: f64| scalar(&loss.d_loss(&t(&[r]), &t(&[f])).unwrap());
            let h = 1e-4;
            let slope = (d(v0 + h, v0 + h) - d(v0 - h, v0 - h)) / (2.0 * h);
            assert!(slope.abs() < 1e-6, "{loss:?}: D loss slope {slope} at the indifference point {v0}");
            assert!(scalar(&loss.realness(&t(&[v0]), &t(&[v0])).unwrap().sum_all().unwrap()).abs() < 1e-12, "{loss:?}");
            // One step from v0 down the real sample's loss (fake fixed at v0) reads as real.
            let real_slope = (d(v0 + h, v0) - d(v0 - h, v0)) / (2.0 * h);
            if real_slope.abs() < 1e-9 {
                continue; // relativistic losses at a tie: no side is preferred
            }
            let towards_real = v0 - 0.1 * real_slope.signum();
            let r = scalar(&loss.realness(&t(&[towards_real]), &t(&[v0])).unwrap().sum_all().unwrap());
            assert!(r > 0.0, "{loss:?}: realness {r} at {towards_real} (v0 {v0})");
        }
        // EBGAN: zero energy is real, the margin is fake.
        let e = AdversarialLoss::Energy { margin: 1.0 };
        assert_eq!(e.realness(&t(&[0.0, 1.0]), &t(&[2.0])).unwrap().to_vec1::<f64>().unwrap(), [0.5, -0.5]);
    }

    /// The losses named shift-invariant are exactly those whose D loss does not change when a
    /// constant is added to every output of D (nothing pins the offset; WGAN's G loss moves
    /// by the constant, which leaves its gradient alone), and for them (only) realness ignores
    /// such an offset: a WGAN critic that has drifted to +80 on reals and fakes alike does not
    /// read every real as judged real. The others keep their fixed indifference point.
    #[test]
    fn realness_of_shift_invariant_losses_ignores_the_critics_offset() {
        let shift = |v: &[f64], c: f64| v.iter().map(|x| x + c).collect::<Vec<_>>();
        for loss in all_losses() {
            let d = |c: f64| scalar(&loss.d_loss(&t(&shift(&REAL, c)), &t(&shift(&FAKE, c))).unwrap());
            let (d0, d1) = (d(0.0), d(5.0));
            let invariant = (d0 - d1).abs() < 1e-9;
            assert_eq!(invariant, loss.is_shift_invariant(), "{loss:?}: D loss {d0} -> {d1}");
            let read =
                |c: f64| loss.realness(&t(&shift(&REAL, c)), &t(&shift(&FAKE, c))).unwrap().to_vec1::<f64>().unwrap();
            let (r0, r80) = (read(0.0), read(80.0));
            if invariant {
                let fake_mean = avg(&FAKE, |x| x);
                for ((a, b), x) in r0.iter().zip(&r80).zip(REAL) {
                    assert!((a - b).abs() < 1e-9 && (a - (x - fake_mean)).abs() < 1e-12, "{loss:?}: {r0:?} {r80:?}");
                }
            } else {
                assert!(r80.iter().zip(&r0).all(|(b, a)| (b - a).abs() > 1.0), "{loss:?}: {r0:?} {r80:?}");
            }
        }
    }

    /// (L_D, L_G) written directly from the papers' formulas, in plain f64.
    fn closed_form(loss: AdversarialLoss, r: &[f64], f: &[f64]) -> (f64, f64) {
        use AdversarialLoss::*;
        match loss {
            Minimax => (avg(r, |x| -sig(x).ln()) + avg(f, |x| -(1.0 - sig(x)).ln()), avg(f, |x| (1.0 - sig(x)).ln())),
            NonSaturating => (avg(r, |x| -sig(x).ln()) + avg(f, |x| -(1.0 - sig(x)).ln()), avg(f, |x| -sig(x).ln())),
            LeastSquares { a, b, c } => (
                0.5 * avg(r, |x| (x - b).powi(2)) + 0.5 * avg(f, |x| (x - a).powi(2)),
                0.5 * avg(f, |x| (x - c).powi(2)),
            ),
            Wasserstein => (avg(f, |x| x) - avg(r, |x| x), -avg(f, |x| x)),
            Hinge => (avg(r, |x| (1.0 - x).max(0.0)) + avg(f, |x| (1.0 + x).max(0.0)), -avg(f, |x| x)),
            FGan(d) => {
                // Table 2 of Nowozin et al.: activation g and conjugate f*.
                type F = fn(f64) -> f64;
                let (g, fstar): (F, F) = match d {
                    Divergence::KullbackLeibler => (|v| v, |t| (t - 1.0).exp()),
                    Divergence::ReverseKl => (|v| -(-v).exp(), |t| -1.0 - (-t).ln()),
                    Divergence::PearsonChi2 => (|v| v, |t| 0.25 * t * t + t),
                    Divergence::NeymanChi2 => (|v| 1.0 - (-v).exp(), |t| 2.0 - 2.0 * (1.0 - t).sqrt()),
                    Divergence::SquaredHellinger => (|v| 1.0 - (-v).exp(), |t| t / (1.0 - t)),
                    Divergence::JensenShannon => {
                        (|v| std::f64::consts::LN_2 - (1.0 + (-v).exp()).ln(), |t| -(2.0 - t.exp()).ln())
                    }
                    Divergence::Gan => (|v| -(1.0 + (-v).exp()).ln(), |t| -(1.0 - t.exp()).ln()),
                };
                (-(avg(r, g) - avg(f, |v| fstar(g(v)))), -avg(f, g))
            }
            RelativisticAverage(kind) => {
                let (mr, mf) = (avg(r, |x| x), avg(f, |x| x));
                let side = |up: &[f64], mu_down: f64, down: &[f64], mu_up: f64| match kind {
                    Relativistic::Standard => {
                        avg(up, |x| -sig(x - mu_down).ln()) + avg(down, |x| -(1.0 - sig(x - mu_up)).ln())
                    }
                    Relativistic::LeastSquares => {
                        avg(up, |x| (x - mu_down - 1.0).powi(2)) + avg(down, |x| (x - mu_up + 1.0).powi(2))
                    }
                    Relativistic::Hinge => {
                        avg(up, |x| (1.0 - (x - mu_down)).max(0.0)) + avg(down, |x| (1.0 + (x - mu_up)).max(0.0))
                    }
                };
                (side(r, mf, f, mr), side(f, mr, r, mf))
            }
            Energy { margin } => (avg(r, |x| x) + avg(f, |x| (margin - x).max(0.0)), avg(f, |x| x)),
        }
    }

    #[test]
    fn every_loss_matches_its_closed_form() {
        for loss in all_losses() {
            let (d, g) = closed_form(loss, &REAL, &FAKE);
            let dl = scalar(&loss.d_loss(&t(&REAL), &t(&FAKE)).unwrap());
            let gl = scalar(&loss.g_loss(Some(&t(&REAL)), &t(&FAKE)).unwrap());
            assert!((dl - d).abs() < 1e-10, "{loss:?} D: {dl} vs {d}");
            assert!((gl - g).abs() < 1e-10, "{loss:?} G: {gl} vs {g}");
        }
    }

    #[test]
    fn every_loss_gradient_matches_finite_differences() {
        for loss in all_losses() {
            let total =
                |r: &Tensor, f: &Tensor| (loss.d_loss(r, f).unwrap() + loss.g_loss(Some(r), f).unwrap()).unwrap();
            let (r, f) = (Var::new(&REAL[..], &Device::Cpu).unwrap(), Var::new(&FAKE[..], &Device::Cpu).unwrap());
            let grads = total(r.as_tensor(), f.as_tensor()).backward().unwrap();
            for (which, var) in [(0, &r), (1, &f)] {
                let g = grads.get(var.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
                for i in 0..3 {
                    let eval = |d: f64| {
                        let (mut a, mut b) = (REAL, FAKE);
                        if which == 0 {
                            a[i] += d
                        } else {
                            b[i] += d
                        }
                        let (d1, g1) = closed_form(loss, &a, &b);
                        d1 + g1
                    };
                    let fd = (eval(1e-6) - eval(-1e-6)) / 2e-6;
                    assert!((fd - g[i]).abs() < 1e-5 * (1.0 + fd.abs()), "{loss:?} arg {which}[{i}]: {fd} vs {}", g[i]);
                }
            }
        }
    }

    #[test]
    fn softplus_is_stable() {
        let v = softplus(&t(&[-100.0, 0.0, 100.0])).unwrap().to_vec1::<f64>().unwrap();
        assert!(v[0] < 1e-40 && (v[1] - 2f64.ln()).abs() < 1e-12 && (v[2] - 100.0).abs() < 1e-12);
    }

    #[test]
    fn label_smoothing_moves_the_real_target() {
        let l = AdversarialLoss::NonSaturating;
        let got = scalar(&l.d_loss_smoothed(&t(&REAL), &t(&FAKE), 0.9).unwrap());
        let want =
            avg(&REAL, |x| -(0.9 * sig(x).ln() + 0.1 * (1.0 - sig(x)).ln())) + avg(&FAKE, |x| -(1.0 - sig(x)).ln());
        assert!((got - want).abs() < 1e-10);
    }

    #[test]
    fn feature_matching_is_the_distance_of_the_feature_means_and_pulls_fakes_toward_reals() {
        let real = Tensor::new(&[[1.0f64, 2.0, -1.0], [3.0, 0.0, 1.0]], &Device::Cpu).unwrap();
        let fake = Var::new(&[[0.0f64, 1.0, 1.0], [0.0, 3.0, 2.0], [3.0, -1.0, 0.0]], &Device::Cpu).unwrap();
        let loss = feature_matching(&real, fake.as_tensor()).unwrap();
        // Means: real (2, 1, 0), fake (1, 1, 1): ((1)² + 0 + (−1)²) / 3.
        assert!((scalar(&loss) - 2.0 / 3.0).abs() < 1e-12);
        // d/d fake[i][j] = −2 (real_mean_j − fake_mean_j) / (3 features · 3 fakes).
        let g = loss.backward().unwrap().get(fake.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        for row in g {
            for (got, want) in row.iter().zip([-2.0 / 9.0, 0.0, 2.0 / 9.0]) {
                assert!((got - want).abs() < 1e-12, "{got} vs {want}");
            }
        }
    }

    #[test]
    fn unknown_loss_lists_valid_ones() {
        let e = AdversarialLoss::parse("wasserstain").unwrap_err().to_string();
        assert!(e.contains("non-saturating") && e.contains("rahinge") && e.contains("fgan-js"));
    }
}
