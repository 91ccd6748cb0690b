//! Regularisers, each with a target network, a weight and an interval: the gradient
//! penalties on the discriminator, computed from D as a closure over its input so the
//! penalty's own gradient with respect to D's weights is exact (second order; needs
//! `CANDLE_GRAD_DO_NOT_DETACH=1`), and the generator-side terms (EBGAN's pulling-away term).

use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PenaltyKind {
    /// WGAN-GP (Gulrajani et al. 2017): E[(||∇D(x̂)|| - 1)²] on random interpolates
    /// x̂ = εx + (1-ε)x̃, ε ~ U[0,1] per sample; the norm runs over all pixels and channels.
    WganGp,
    /// The one-sided variant from the same paper: E[max(0, ||∇D(x̂)|| - 1)²].
    OneSidedGp,
    /// DRAGAN (Kodali et al. 2017): the two-sided penalty around perturbed real data,
    /// x̂ = x + α·δ, δ = 0.5·std(x)·U[0,1], α ~ U[0,1] per sample.
    Dragan,
    /// R1 (Mescheder et al. 2018): ½E_real[||∇D(x)||²].
    R1,
    /// R2: the same on fake data.
    R2,
    /// EBGAN's pulling-away term on the generator (Zhao et al. 2017): the mean squared
    /// cosine similarity between the discriminator's embeddings of different fakes.
    PullAway,
    /// StyleGAN2's path-length regulariser on G (Karras et al. 2020): E[(‖J_wᵀy‖ − a)²], y an
    /// image-shaped Gaussian scaled by 1/sqrt(H·W), J_w the Jacobian of the image with respect
    /// to the ws, a the moving mean of the lengths (decay 0.01); on half the batch.
    PathLength,
}

/// The network a regulariser's gradient updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    D,
    G,
}

pub const PENALTY_NAMES: &[&str] = &["wgan-gp", "one-sided-gp", "dragan", "r1", "r2", "pull-away", "path-length"];

impl PenaltyKind {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "wgan-gp" | "gp" => Self::WganGp,
            "one-sided-gp" => Self::OneSidedGp,
            "dragan" => Self::Dragan,
            "r1" => Self::R1,
            "r2" => Self::R2,
            "pull-away" | "pt" => Self::PullAway,
            "path-length" | "pl" => Self::PathLength,
            _ => bail!("unknown penalty '{s}'; valid penalties: {}", PENALTY_NAMES.join(", ")),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::WganGp => "wgan-gp",
            Self::OneSidedGp => "one-sided-gp",
            Self::Dragan => "dragan",
            Self::R1 => "r1",
            Self::R2 => "r2",
            Self::PullAway => "pull-away",
            Self::PathLength => "path-length",
        }
    }

    pub fn target(&self) -> Target {
        match self {
            Self::PullAway | Self::PathLength => Target::G,
            _ => Target::D,
        }
    }

    /// The auxiliary output of D (`crate::models::DiscOutput::aux`) this term reads.
    pub fn needs_aux(&self) -> Option<&'static str> {
        match self {
            Self::PullAway => Some("embedding"),
            _ => None,
        }
    }

    /// Whether this term needs G's intermediate latent space W.
    pub fn needs_w_space(&self) -> bool {
        *self == Self::PathLength
    }
}

/// A penalty with its weight; lazy ones (`every` > 1) are applied every `every` steps
/// and scaled by `every`, as in StyleGAN2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PenaltyConfig {
    pub kind: String,
    pub weight: f64,
    #[serde(default = "one")]
    pub every: u64,
}

fn one() -> u64 {
    1
}

impl PenaltyConfig {
    /// Parses `KIND[:WEIGHT[:EVERY]]`, e.g. `wgan-gp:10` or `r1:10:16`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let kind = PenaltyKind::parse(parts[0])?;
        let weight = match parts.get(1) {
            Some(w) => w.parse().map_err(|_| anyhow::anyhow!("penalty '{s}': weight '{w}' is not a number"))?,
            None => default_weight(kind),
        };
        let every = match parts.get(2) {
            Some(k) => k.parse().map_err(|_| anyhow::anyhow!("penalty '{s}': interval '{k}' is not a whole number"))?,
            None => 1,
        };
        if parts.len() > 3 {
            bail!("penalty '{s}': expected KIND[:WEIGHT[:EVERY]]");
        }
        let c = Self { kind: kind.name().to_string(), weight, every };
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        PenaltyKind::parse(&self.kind)?;
        if !(self.weight >= 0.0 && self.weight.is_finite()) {
            bail!("penalty {}: weight {} must be a non-negative number", self.kind, self.weight);
        }
        if self.every == 0 {
            bail!("penalty {}: interval must be at least 1", self.kind);
        }
        Ok(())
    }

    pub fn kind(&self) -> PenaltyKind {
        PenaltyKind::parse(&self.kind).expect("validated")
    }
}

/// The weights the papers use.
pub fn default_weight(kind: PenaltyKind) -> f64 {
    match kind {
        PenaltyKind::WganGp | PenaltyKind::OneSidedGp | PenaltyKind::Dragan | PenaltyKind::R1 | PenaltyKind::R2 => 10.0,
        PenaltyKind::PullAway => 0.1,
        PenaltyKind::PathLength => 2.0,
    }
}

/// EBGAN's pulling-away term of embeddings `s` (N, ...): with ŝ_i = s_i / ‖s_i‖,
/// PT = Σ_{i≠j} (ŝ_iᵀ ŝ_j)² / (N (N − 1)).
pub fn pull_away(s: &Tensor) -> candle_core::Result<Tensor> {
    let s = s.flatten_from(1)?;
    let n = s.dim(0)?;
    if n < 2 {
        candle_core::bail!("the pulling-away term needs a batch of at least 2");
    }
    let norms = (s.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
    let unit = s.broadcast_div(&norms)?;
    let cos = unit.matmul(&unit.t()?)?;
    let diag = unit.sqr()?.sum(1)?.sqr()?.sum_all()?;
    (cos.sqr()?.sum_all()? - diag)? / (n * (n - 1)) as f64
}

/// Decay of the path-length regulariser's moving mean (StyleGAN2's pl_decay).
pub const PATH_LENGTH_DECAY: f64 = 0.01;

/// One evaluation of the path-length regulariser.
pub struct PathLength {
    /// (‖J_wᵀy‖ − a)² averaged over the batch, a scalar differentiable with respect to the
    /// synthesis network's weights and to `ws_leaf`.
    pub value: Tensor,
    /// The mean path length of this batch, and the moving mean a after it.
    pub mean_length: f64,
    pub new_mean: f64,
    /// The ws as computed by the mapping network (in its graph), and the leaf the synthesis
    /// network read them from: the regulariser reaches the mapping network through
    /// [`PathLength::mapping_surrogate`].
    pub ws: Tensor,
    pub ws_leaf: Var,
}

impl PathLength {
    /// Σ ws ⊙ (∂loss/∂ws_leaf), whose gradient with respect to the mapping network's weights is
    /// the regulariser's (the chain rule through ws): `grads` is the backward pass of a loss
    /// containing [`PathLength::value`].
    pub fn mapping_surrogate(&self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<Option<Tensor>> {
        match grads.get(self.ws_leaf.as_tensor()) {
            Some(g) => Ok(Some(self.ws.mul(&g.detach())?.sum_all()?)),
            None => Ok(None),
        }
    }
}

/// The path-length regulariser of `g` on `latent` (StyleGAN2): the images' gradient along a
/// random image-shaped direction y (N(0, 1)/sqrt(H·W)) with respect to the ws, its length
/// sqrt(mean over ws of Σ_dim grad²) per sample, and the squared deviation from the moving
/// mean `mean`, first moved towards this batch's mean length by `decay` (the trainer's is
/// [`PATH_LENGTH_DECAY`]; 0 keeps it fixed, for gradient checks).
pub fn path_length(
    g: &dyn crate::models::style::StyleGenerator,
    latent: &crate::models::Latent,
    mode: crate::nn::Mode,
    (mean, decay): (f64, f64),
    rng: &mut Rng,
) -> candle_core::Result<PathLength> {
    let ws = crate::models::style::latent_ws(g, latent, None, mode)?;
    let ws_leaf = Var::from_tensor(&ws.detach())?;
    let img = g.synthesis(ws_leaf.as_tensor(), latent.noise.as_deref(), mode)?;
    let (_, _, h, w) = img.dims4()?;
    let y = rng.normal_tensor(img.shape(), 0.0, 1.0 / ((h * w) as f64).sqrt(), img.device())?.to_dtype(img.dtype())?;
    let grads = crate::ops::input_gradients_only(|| img.mul(&y)?.sum_all()?.backward())?;
    let gw = grads
        .get(ws_leaf.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("the images do not depend on the ws".into()))?;
    let lengths = gw.sqr()?.sum(2)?.mean(1)?.sqrt()?;
    let mean_length = lengths.mean_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    let new_mean = mean + (mean_length - mean) * decay;
    let value = (lengths - new_mean)?.sqr()?.mean_all()?;
    Ok(PathLength { value, mean_length, new_mean, ws, ws_leaf })
}

/// Per-sample L2 norm of the gradient of sum(D(x)) with respect to x, keeping the
/// graph so the result can be differentiated again.
pub fn input_gradient_norm_sq(
    d: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    x: &Tensor,
) -> candle_core::Result<Tensor> {
    let xv = Var::from_tensor(&x.detach())?;
    let out = d(xv.as_tensor())?.sum_all()?;
    let grads = crate::ops::input_gradients_only(|| out.backward())?;
    let g = grads
        .get(xv.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("the discriminator's output does not depend on its input".into()))?;
    g.sqr()?.flatten_from(1)?.sum(1)
}

/// The unweighted penalty value (a scalar tensor differentiable with respect to D's
/// weights). `d` maps images to logits (N,).
pub fn penalty(
    kind: PenaltyKind,
    d: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    real: &Tensor,
    fake: &Tensor,
    rng: &mut Rng,
) -> candle_core::Result<Tensor> {
    /// U[0,1] of shape (N, 1, 1, ...) in `like`'s dtype.
    fn per_sample(like: &Tensor, rng: &mut Rng) -> candle_core::Result<Tensor> {
        let mut dims = vec![1usize; like.rank()];
        dims[0] = like.dim(0)?;
        rng.uniform_tensor(dims, 0.0, 1.0, like.device())?.to_dtype(like.dtype())
    }
    match kind {
        PenaltyKind::WganGp | PenaltyKind::OneSidedGp => {
            let eps = per_sample(real, rng)?;
            let x_hat = (real.detach().broadcast_mul(&eps)? + fake.detach().broadcast_mul(&(1.0 - &eps)?)?)?;
            let norm = input_gradient_norm_sq(d, &x_hat)?.sqrt()?;
            let excess = (norm - 1.0)?;
            let excess = if kind == PenaltyKind::OneSidedGp { excess.relu()? } else { excess };
            excess.sqr()?.mean_all()
        }
        PenaltyKind::Dragan => {
            let real = real.detach();
            let std = real.flatten_all()?.to_dtype(candle_core::DType::F64)?.var(0)?.sqrt()?.to_scalar::<f64>()?;
            let delta =
                (rng.uniform_tensor(real.shape(), 0.0, 1.0, real.device())?.to_dtype(real.dtype())? * (0.5 * std))?;
            let alpha = per_sample(&real, rng)?;
            let x_hat = (&real + delta.broadcast_mul(&alpha)?)?;
            let norm = input_gradient_norm_sq(d, &x_hat)?.sqrt()?;
            (norm - 1.0)?.sqr()?.mean_all()
        }
        PenaltyKind::R1 => input_gradient_norm_sq(d, real)?.mean_all()? * 0.5,
        PenaltyKind::R2 => input_gradient_norm_sq(d, fake)?.mean_all()? * 0.5,
        PenaltyKind::PullAway | PenaltyKind::PathLength => {
            candle_core::bail!("{} regularises the generator, not D", kind.name())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn parse_kind_weight_interval() {
        assert_eq!(
            PenaltyConfig::parse("wgan-gp").unwrap(),
            PenaltyConfig { kind: "wgan-gp".into(), weight: 10.0, every: 1 }
        );
        assert_eq!(
            PenaltyConfig::parse("r1:5:16").unwrap(),
            PenaltyConfig { kind: "r1".into(), weight: 5.0, every: 16 }
        );
        assert!(PenaltyConfig::parse("gradient").unwrap_err().to_string().contains("wgan-gp"));
        assert!(PenaltyConfig::parse("r1:x").is_err());
        assert!(PenaltyConfig::parse("r1:1:0").is_err());
    }

    /// For a linear critic D(x) = <w, x>, ∇D = w everywhere: every penalty has a closed form.
    #[test]
    fn linear_critic_closed_forms() {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[0.5f64, -1.0], [2.0, 0.25]], &dev).unwrap().reshape((1, 1, 2, 2)).unwrap();
        let norm = (0.25f64 + 1.0 + 4.0 + 0.0625).sqrt();
        let d = |x: &Tensor| x.broadcast_mul(&w)?.flatten_from(1)?.sum(1);
        let real = Tensor::ones((3, 1, 2, 2), DType::F64, &dev).unwrap();
        let fake = Tensor::zeros((3, 1, 2, 2), DType::F64, &dev).unwrap();
        let v = |k| penalty(k, &d, &real, &fake, &mut Rng::new(0)).unwrap().to_scalar::<f64>().unwrap();
        assert!((v(PenaltyKind::WganGp) - (norm - 1.0).powi(2)).abs() < 1e-12);
        assert!((v(PenaltyKind::OneSidedGp) - (norm - 1.0).max(0.0).powi(2)).abs() < 1e-12);
        assert!((v(PenaltyKind::Dragan) - (norm - 1.0).powi(2)).abs() < 1e-12);
        assert!((v(PenaltyKind::R1) - 0.5 * norm * norm).abs() < 1e-12);
        assert!((v(PenaltyKind::R2) - 0.5 * norm * norm).abs() < 1e-12);
    }

    #[test]
    fn pull_away_closed_form_and_gradient() {
        let dev = Device::Cpu;
        let rows = [[1.0f64, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 1.0]];
        let unit: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                let n = r.iter().map(|x| x * x).sum::<f64>().sqrt();
                r.iter().map(|x| x / n).collect()
            })
            .collect();
        let closed = |u: &[Vec<f64>]| {
            let mut t = 0.0;
            for i in 0..3 {
                for j in 0..3 {
                    if i != j {
                        t += u[i].iter().zip(&u[j]).map(|(a, b)| a * b).sum::<f64>().powi(2);
                    }
                }
            }
            t / 6.0
        };
        let s = Var::new(&rows, &dev).unwrap();
        let pt = pull_away(s.as_tensor()).unwrap();
        assert!((pt.to_scalar::<f64>().unwrap() - closed(&unit)).abs() < 1e-12);
        // Orthogonal embeddings are pulled apart as far as they go.
        let eye = Tensor::eye(3, DType::F64, &dev).unwrap();
        assert!(pull_away(&eye).unwrap().to_scalar::<f64>().unwrap().abs() < 1e-12);
        // Gradient against central differences.
        let g = pt.backward().unwrap().get(s.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let value = |r: [[f64; 3]; 3]| pull_away(&Tensor::new(&r, &dev).unwrap()).unwrap().to_scalar::<f64>().unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let (mut a, mut b) = (rows, rows);
                a[i][j] += 1e-6;
                b[i][j] -= 1e-6;
                let fd = (value(a) - value(b)) / 2e-6;
                assert!((fd - g[i][j]).abs() < 1e-6, "[{i}][{j}] {fd} vs {}", g[i][j]);
            }
        }
        assert_eq!(PenaltyKind::parse("pull-away").unwrap().target(), Target::G);
    }
}
