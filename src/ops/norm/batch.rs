//! Batch norm with batch statistics (training mode): statistics per channel over (N, H, W).
//!
//! The forward op computes the statistics and `x·a[c] + b[c]` in one parallel pass each. The
//! backward ops differentiate themselves by building the same formulas from candle ops on
//! detached copies of their inputs and running candle's backward pass on them (slower, but
//! only gradient penalties on a batch-norm critic need it).

use super::{dispatch, split};
use crate::ops::channel::{channel_broadcast, channel_sum};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, Var, WithDType};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Training-mode batch norm of `x` (N, C, ...) with per-channel `gamma` and `beta` (C
/// elements each), followed by a LeakyReLU with slope `act` (0: ReLU) when given. Returns
/// the output and the batch mean and biased variance per channel, as (C,) tensors outside
/// the graph (for the running averages).
pub fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Option<f64>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = x.dim(1)?;
    if gamma.elem_count() != c || beta.elem_count() != c {
        bail!("batch_norm: {c} channels but gamma {:?} and beta {:?}", gamma.dims(), beta.dims());
    }
    let fast = crate::ops::is_fast_cpu(x) && gamma.dtype() == x.dtype() && beta.dtype() == x.dtype();
    if !fast {
        let (y, mean, var) = composed_forward(x, gamma, beta, eps)?;
        return Ok((super::composed_activation(y, act)?, mean, var));
    }
    let stats = Arc::new(Mutex::new(None));
    let op = BatchNorm { eps, act, stats: stats.clone() };
    let y = x.contiguous()?.apply_op3(&gamma.flatten_all()?.contiguous()?, &beta.flatten_all()?.contiguous()?, op)?;
    let s: Stats = stats.lock().unwrap().clone().expect("the forward pass stored its statistics");
    let dev = x.device();
    let mean = Tensor::new(s.mean, dev)?.to_dtype(x.dtype())?;
    let var = Tensor::new(s.var, dev)?.to_dtype(x.dtype())?;
    Ok((y, mean, var))
}

/// The same computation in candle ops: the reference, the path off the CPU, and what the
/// backward ops differentiate for second-order gradients.
fn composed_forward(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let (mean, centred, var) = composed_stats(x)?;
    let c = x.dim(1)?;
    let scale = (&var + eps)?.sqrt()?.recip()?.mul(&gamma.reshape(var.shape())?)?;
    let y = crate::ops::channel_affine(&centred, &scale, &beta.reshape(c)?)?;
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}

/// Per-channel mean (1, C, 1, ...), `x − mean`, and biased variance (1, C, 1, ...).
fn composed_stats(x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let m = (x.elem_count() / x.dim(1)?) as f64;
    let mean = (channel_sum(x)? / m)?;
    let centred = x.sub(&channel_broadcast(&mean, x.shape())?)?;
    let var = (channel_sum(&centred.sqr()?)? / m)?;
    Ok((mean, centred, var))
}

/// `x̂ = (x − mean) / √(var + eps)` and `1 / √(var + eps)` (1, C, 1, ...), in candle ops.
fn composed_normalised(x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let (_, centred, var) = composed_stats(x)?;
    let inv = (var + eps)?.sqrt()?.recip()?;
    Ok((centred.mul(&channel_broadcast(&inv, x.shape())?)?, inv))
}

/// The gradients of the scale and shift, `Σ g·x̂` and `Σ g` per channel, in candle ops.
fn composed_param_grad(g: &Tensor, x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let (xhat, _) = composed_normalised(x, eps)?;
    Ok((channel_sum(&g.mul(&xhat)?)?.flatten_all()?, channel_sum(g)?.flatten_all()?))
}

/// The input gradient `γ/σ · (g − mean(g) − x̂ · mean(g·x̂))`, in candle ops.
fn composed_input_grad(g: &Tensor, x: &Tensor, gamma: &Tensor, eps: f64) -> Result<Tensor> {
    let m = (x.elem_count() / x.dim(1)?) as f64;
    let (xhat, inv) = composed_normalised(x, eps)?;
    let (dgamma, dbeta) = composed_param_grad(g, x, eps)?;
    let shape = inv.shape().clone();
    let mean_g = channel_broadcast(&(dbeta.reshape(&shape)? / m)?, x.shape())?;
    let mean_gx = channel_broadcast(&(dgamma.reshape(&shape)? / m)?, x.shape())?;
    let inner = g.sub(&mean_g)?.sub(&xhat.mul(&mean_gx)?)?;
    let k = inv.mul(&gamma.reshape(&shape)?)?;
    inner.mul(&channel_broadcast(&k, x.shape())?)
}

/// Vector-Jacobian product of `f` at `args` with the cotangent `u`, by candle's backward
/// pass on detached copies: `(∂⟨u, f⟩/∂argᵢ)ᵢ`, `None` where `args[i]` needs no gradient.
fn vjp(args: &[&Tensor], u: &Tensor, f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<Vec<Option<Tensor>>> {
    let vars: Vec<Var> = args.iter().map(|a| Var::from_tensor(&a.detach())).collect::<Result<_>>()?;
    let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&inputs)?;
    let grads = out.mul(&u.detach())?.sum_all()?.backward()?;
    args.iter()
        .zip(&inputs)
        .map(|(a, v)| match crate::ops::cpu::needed(a) {
            true => Ok(Some(grads.get(v).map_or_else(|| v.zeros_like(), |g| Ok(g.detach()))?)),
            false => Ok(None),
        })
        .collect()
}

/// Per-channel statistics of a forward pass, kept for its backward pass.
#[derive(Clone, Debug)]
struct Stats {
    mean: Vec<f64>,
    /// Biased variance.
    var: Vec<f64>,
    /// `1 / √(var + eps)`.
    inv_std: Vec<f64>,
}

/// Per-channel `(Σ a, Σ a·b)` in f64 (with `b = None`: `(Σ a, Σ a²)`): sums per plane in
/// memory order, in parallel, then per channel. (Walking each channel's planes instead, one
/// page-sized plane every `C` planes, ran at a third of the memory bandwidth.)
fn channel_moments<T: WithDType>(
    a: &[T],
    b: Option<&[T]>,
    (_, channels, inner): (usize, usize, usize),
) -> Vec<(f64, f64)> {
    let len = inner.max(1);
    let planes: Vec<(f64, f64)> = match b {
        None => a.par_chunks(len).map(|p| super::sums(p, None)).collect(),
        Some(b) => a.par_chunks(len).zip(b.par_chunks(len)).map(|(p, q)| super::sums(p, Some(q))).collect(),
    };
    (0..channels)
        .map(|c| planes.iter().skip(c).step_by(channels).fold((0.0, 0.0), |(s, p), (ds, dp)| (s + ds, p + dp)))
        .collect()
}

/// `out = LeakyReLU((x − k[c][0])·k[c][1] + k[c][2])` with negative slope `slope` (1: none)
/// over (N, C, inner), planes in parallel (subtracting the mean first keeps the result
/// accurate when the variance is tiny).
fn normalise_planes<T: WithDType>(
    x: &[T],
    k: &[[f64; 3]],
    slope: T,
    (_, channels, inner): (usize, usize, usize),
) -> Vec<T> {
    let mut out = crate::ops::filled_par(x.len(), T::zero());
    out.par_chunks_mut(inner.max(1)).zip(x.par_chunks(inner.max(1))).enumerate().for_each(|(p, (o, x))| {
        let [mean, a, b] = k[p % channels].map(T::from_f64);
        o.iter_mut().zip(x).for_each(|(o, &x)| *o = super::activate((x - mean) * a + b, slope));
    });
    out
}

/// `out = a·k1[c] + b·k2[c] + k3[c]` over (N, C, inner), planes in parallel.
fn channel_combine<T: WithDType>(
    a: &[T],
    b: &[T],
    k: &[[f64; 3]],
    (_, channels, inner): (usize, usize, usize),
) -> Vec<T> {
    let mut out = crate::ops::filled_par(a.len(), T::zero());
    out.par_chunks_mut(inner.max(1)).enumerate().for_each(|(p, o)| {
        let [k1, k2, k3] = k[p % channels].map(T::from_f64);
        let (pa, pb) = (&a[p * inner..][..inner], &b[p * inner..][..inner]);
        o.iter_mut().zip(pa.iter().zip(pb)).for_each(|(o, (&a, &b))| *o = a * k1 + b * k2 + k3);
    });
    out
}

/// `y = (x − mean[c]) / √(var[c] + eps) · γ[c] + β[c]` with the batch statistics of `x`.
struct BatchNorm {
    eps: f64,
    /// LeakyReLU slope applied to the output, if any.
    act: Option<f64>,
    stats: Arc<Mutex<Option<Stats>>>,
}

impl BatchNorm {
    fn forward<T: WithDType>(&self, x: &[T], gamma: &[T], beta: &[T], dims: (usize, usize, usize)) -> Vec<T> {
        let m = (dims.0 * dims.2).max(1) as f64;
        let moments = channel_moments(x, None, dims);
        let mut stats = Stats { mean: vec![], var: vec![], inv_std: vec![] };
        let k: Vec<[f64; 3]> = moments
            .iter()
            .zip(gamma.iter().zip(beta))
            .map(|(&(s, sq), (g, b))| {
                let mean = s / m;
                let var = (sq / m - mean * mean).max(0.0);
                let inv = 1.0 / (var + self.eps).sqrt();
                stats.mean.push(mean);
                stats.var.push(var);
                stats.inv_std.push(inv);
                let a = g.to_f64() * inv;
                [mean, a, b.to_f64()]
            })
            .collect();
        *self.stats.lock().unwrap() = Some(stats);
        normalise_planes(x, &k, super::negative_slope(self.act), dims)
    }
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = split(l1.shape());
        let out = dispatch!(self.name(), (s1, l1, s2, l2, s3, l3), |x, g, b| self.forward(x, g, b, dims));
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats = self.stats.lock().unwrap().clone().expect("forward ran before backward");
        let eps = self.eps;
        let input_grad = InputGrad { eps, stats: stats.clone() };
        super::backward((x, gamma, beta), (res, grad), self.act, input_grad, ParamGrad { eps, stats })
    }
}

/// Per-channel `[Σ g·x̂, Σ g]` from `Σ g` and `Σ g·x`.
fn param_grads(sums: &[(f64, f64)], stats: &Stats) -> Vec<(f64, f64)> {
    sums.iter()
        .zip(stats.mean.iter().zip(&stats.inv_std))
        .map(|(&(sg, sgx), (&mean, &inv))| (inv * (sgx - mean * sg), sg))
        .collect()
}

/// `[dγ; dβ]` (2, C) of batch norm from the output gradient `g` and the input `x`.
struct ParamGrad {
    eps: f64,
    stats: Stats,
}

impl CustomOp2 for ParamGrad {
    fn name(&self) -> &'static str {
        "batch-norm-param-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = split(l1.shape());
        let out = dispatch!(self.name(), (s1, l1, s2, l2), |g, x| {
            let grads = param_grads(&channel_moments(g, Some(x), dims), &self.stats);
            let (dg, db): (Vec<f64>, Vec<f64>) = grads.into_iter().unzip();
            dg.into_iter().chain(db).map(WithDType::from_f64).collect()
        });
        Ok((out, Shape::from((2, dims.1))))
    }

    fn bwd(&self, g: &Tensor, x: &Tensor, _res: &Tensor, u: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let eps = self.eps;
        let mut grads = vjp(&[g, x], u, |a| {
            let (dg, db) = composed_param_grad(&a[0], &a[1], eps)?;
            Tensor::stack(&[dg, db], 0)
        })?;
        let dx = grads.pop().flatten();
        Ok((grads.pop().flatten(), dx))
    }
}

/// The input gradient of batch norm, `γ/σ · (g − mean(g) − x̂ · mean(g·x̂))`, from `g`, `x`
/// and `γ`.
struct InputGrad {
    eps: f64,
    stats: Stats,
}

impl CustomOp3 for InputGrad {
    fn name(&self) -> &'static str {
        "batch-norm-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = split(l1.shape());
        let m = (dims.0 * dims.2).max(1) as f64;
        let out = dispatch!(self.name(), (s1, l1, s2, l2, s3, l3), |g, x, gamma| {
            let grads = param_grads(&channel_moments(g, Some(x), dims), &self.stats);
            // γ·inv·(g − dβ/M − (x − mean)·inv·dγ/M) = g·k1 + x·k2 + k3
            let k: Vec<[f64; 3]> = grads
                .iter()
                .zip(gamma)
                .zip(self.stats.mean.iter().zip(&self.stats.inv_std))
                .map(|((&(dg, db), gm), (&mean, &inv))| {
                    let k1 = gm.to_f64() * inv;
                    let k2 = -k1 * inv * dg / m;
                    [k1, k2, -k1 * db / m - k2 * mean]
                })
                .collect();
            channel_combine(g, x, &k, dims)
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        x: &Tensor,
        gamma: &Tensor,
        _res: &Tensor,
        u: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let eps = self.eps;
        let mut grads = vjp(&[g, x, gamma], u, |a| composed_input_grad(&a[0], &a[1], &a[2], eps))?;
        let dgamma = grads.pop().flatten();
        let dx = grads.pop().flatten();
        Ok((grads.pop().flatten(), dx, dgamma))
    }
}

#[cfg(test)]
mod tests {
    use super::super::checks::{self, rand};
    use super::*;
    use crate::ops::max_abs_diff as diff;

    fn fast(x: &Tensor, g: &Tensor, b: &Tensor) -> Tensor {
        batch_norm(x, g, b, 1e-5, None).unwrap().0
    }

    fn reference(x: &Tensor, g: &Tensor, b: &Tensor) -> Tensor {
        composed_forward(x, g, b, 1e-5).unwrap().0
    }

    /// With a fused LeakyReLU (slope 0.2) and ReLU, against candle's `maximum`.
    fn fast_leaky(x: &Tensor, g: &Tensor, b: &Tensor) -> Tensor {
        batch_norm(x, g, b, 1e-5, Some(0.2)).unwrap().0
    }

    fn reference_leaky(x: &Tensor, g: &Tensor, b: &Tensor) -> Tensor {
        checks::leaky(reference(x, g, b), 0.2)
    }

    fn fast_relu(x: &Tensor, g: &Tensor, b: &Tensor) -> Tensor {
        batch_norm(x, g, b, 1e-5, Some(0.0)).unwrap().0
    }

    fn reference_relu(x: &Tensor, g: &Tensor, b: &Tensor) -> Tensor {
        checks::leaky(reference(x, g, b), 0.0)
    }

    #[test]
    fn forward_and_statistics_match_candle_ops() {
        checks::forward_matches(fast, reference);
        checks::forward_matches(fast_leaky, reference_leaky);
        checks::forward_matches(fast_relu, reference_relu);
        for shape in [[4, 3, 5, 6], [1, 2, 1, 1]] {
            let (x, gamma, beta) = (rand(&shape, 0.7), rand(&[shape[1]], 1.0), rand(&[shape[1]], 0.0));
            let (_, m, v) = batch_norm(&x, &gamma, &beta, 1e-5, Some(0.2)).unwrap();
            let (_, m0, v0) = composed_forward(&x, &gamma, &beta, 1e-5).unwrap();
            assert!(diff(&m, &m0) < 1e-12 && diff(&v, &v0) < 1e-12, "{shape:?}");
        }
    }

    #[test]
    fn first_and_second_order_gradients_match_candle_ops() {
        checks::gradients_match(fast, reference);
        checks::gradients_match(fast_leaky, reference_leaky);
        checks::gradients_match(fast_relu, reference_relu);
    }
}
