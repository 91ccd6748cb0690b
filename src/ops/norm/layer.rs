//! Layer norm over (C, H, W) of each sample, with a per-channel scale and shift (the WGAN-GP
//! critic's normalisation).
//!
//! Per sample, with `D = C·H·W` elements, `x̂ = (x − μ)/σ`, `y = γ[c]·x̂ + β[c]` and
//! `h = γ[c]·g` for an output gradient `g`:
//!
//! * input gradient `dx = (h − mean(h) − x̂·mean(h·x̂)) / σ`;
//! * scale and shift gradients `Σ g·x̂` and `Σ g` per channel over samples and pixels.
//!
//! A gradient penalty differentiates `dx` once more. For a cotangent `u` of `dx`, with
//! `v = (u − mean(u) − x̂·mean(u·x̂)) / σ` (the same map applied to `u`):
//!
//! * `∂⟨u, dx⟩/∂g = γ[c]·v`, `∂⟨u, dx⟩/∂γ[c] = Σ g·v`,
//! * `∂⟨u, dx⟩/∂x = −(⟨u, dx⟩·x̂ + ⟨u, x̂⟩·dx + ⟨h, x̂⟩·v) / (σ·D)`,
//!
//! which follow from `∂σ/∂x = x̂/D` and `∂⟨w, x̂⟩/∂x = (w − mean(w) − x̂·mean(w·x̂))/σ`. For the
//! scale and shift gradients with cotangents `(uγ, uβ)`: `∂/∂g = uγ[c]·x̂ + uβ[c]`, and
//! `∂/∂x` is that same map applied to `w = uγ[c]·g`.

use super::{dispatch, split};
use crate::ops::eager::{run_eager, Eager};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Layer norm of `x` (N, C, ...) over everything but the batch dimension, followed by the
/// per-channel `gamma` and `beta` (C elements each), then by a LeakyReLU with slope `act`
/// (0: ReLU) when given.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64, act: Option<f64>) -> Result<Tensor> {
    let c = x.dim(1)?;
    if gamma.elem_count() != c || beta.elem_count() != c {
        bail!("layer_norm: {c} channels but gamma {:?} and beta {:?}", gamma.dims(), beta.dims());
    }
    let fast = crate::ops::is_fast_cpu(x) && gamma.dtype() == x.dtype() && beta.dtype() == x.dtype();
    if !fast {
        return super::composed_activation(composed_forward(x, gamma, beta, eps)?, act);
    }
    let op = LayerNorm { eps, act, stats: Arc::new(Mutex::new(None)) };
    x.contiguous()?.apply_op3(&gamma.flatten_all()?.contiguous()?, &beta.flatten_all()?.contiguous()?, op)
}

/// The same computation in candle ops: the reference, and the path off the CPU.
fn composed_forward(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim((1, 2, 3))?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim((1, 2, 3))?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    crate::ops::channel_affine(&normed, &gamma.flatten_all()?, &beta.flatten_all()?)
}

/// Per-sample mean and `1/σ`.
#[derive(Clone, Debug)]
struct Stats {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

/// Per-sample geometry: `len` elements per sample, `inner` per channel plane.
#[derive(Clone, Copy)]
struct Dims {
    len: usize,
    inner: usize,
}

impl Dims {
    fn of(shape: &Shape) -> Self {
        let (_, c, inner) = split(shape);
        Self { len: c * inner, inner: inner.max(1) }
    }
}

/// `x̂` of one sample's element `x`.
#[inline(always)]
fn xhat<T: WithDType>(x: T, mean: f64, inv: f64) -> f64 {
    (x.to_f64() - mean) * inv
}

struct LayerNorm {
    eps: f64,
    /// LeakyReLU slope applied to the output, if any.
    act: Option<f64>,
    stats: Arc<Mutex<Option<Stats>>>,
}

impl LayerNorm {
    fn forward<T: WithDType>(&self, x: &[T], gamma: &[T], beta: &[T], d: Dims) -> Vec<T> {
        let moments: Vec<(f64, f64)> = x
            .par_chunks(d.len.max(1))
            .map(|s| {
                let (sum, sq) = super::sums(s, None);
                let mean = sum / d.len as f64;
                (mean, 1.0 / ((sq / d.len as f64 - mean * mean).max(0.0) + self.eps).sqrt())
            })
            .collect();
        let k: T = super::negative_slope(self.act);
        let mut out = crate::ops::filled_par(x.len(), T::zero());
        out.par_chunks_mut(d.len.max(1)).zip(x.par_chunks(d.len.max(1))).zip(&moments).for_each(
            |((o, x), &(mean, inv))| {
                for ((o, x), (g, b)) in o.chunks_mut(d.inner).zip(x.chunks(d.inner)).zip(gamma.iter().zip(beta)) {
                    let a = g.to_f64() * inv;
                    let (m, a, b) = (T::from_f64(mean), T::from_f64(a), *b);
                    o.iter_mut().zip(x).for_each(|(o, &x)| *o = super::activate((x - m) * a + b, k));
                }
            },
        );
        let (mean, inv_std) = moments.into_iter().unzip();
        *self.stats.lock().unwrap() = Some(Stats { mean, inv_std });
        out
    }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
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
        let d = Dims::of(l1.shape());
        let out = dispatch!(self.name(), (s1, l1, s2, l2, s3, l3), |x, g, b| self.forward(x, g, b, d));
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
        let (input_grad, param_grad) = (InputGrad { stats: stats.clone() }, ParamGrad { stats });
        super::backward((x, gamma, beta), (res, grad), self.act, input_grad, param_grad)
    }
}

/// Per sample: `(Σ h, Σ h·x̂)` with `h = γ[c]·g`.
fn input_grad_sums<T: WithDType>(g: &[T], x: &[T], gamma: &[T], stats: &Stats, d: Dims) -> Vec<(f64, f64)> {
    g.par_chunks(d.len.max(1))
        .zip(x.par_chunks(d.len.max(1)))
        .zip(stats.mean.par_iter().zip(&stats.inv_std))
        .map(|((g, x), (&mean, &inv))| {
            let (mut sh, mut shx) = (0f64, 0f64);
            for ((g, x), gm) in g.chunks(d.inner).zip(x.chunks(d.inner)).zip(gamma) {
                let gm = gm.to_f64();
                let (mut a, mut b) = (0f64, 0f64);
                for (&g, &x) in g.iter().zip(x) {
                    let g = g.to_f64();
                    a += g;
                    b += g * xhat(x, mean, inv);
                }
                sh += gm * a;
                shx += gm * b;
            }
            (sh, shx)
        })
        .collect()
}

/// `dx` of layer norm from `g`, `x` and `γ`.
struct InputGrad {
    stats: Stats,
}

impl InputGrad {
    fn compute<T: WithDType>(&self, g: &[T], x: &[T], gamma: &[T], d: Dims) -> Vec<T> {
        let sums = input_grad_sums(g, x, gamma, &self.stats, d);
        let n = d.len as f64;
        let mut out = crate::ops::filled_par(g.len(), T::zero());
        let st = &self.stats;
        out.par_chunks_mut(d.len.max(1))
            .zip(g.par_chunks(d.len.max(1)).zip(x.par_chunks(d.len.max(1))))
            .zip(sums.par_iter().zip(st.mean.par_iter().zip(&st.inv_std)))
            .for_each(|((o, (g, x)), (&(sh, shx), (&mean, &inv)))| {
                // dx = inv·(γ g − sh/D − x̂·shx/D) = g·k1[c] + x·k2 + k3
                let k2 = -inv * inv * shx / n;
                let k3 = -inv * sh / n - k2 * mean;
                let (k2t, k3t) = (T::from_f64(k2), T::from_f64(k3));
                for ((o, (g, x)), gm) in o.chunks_mut(d.inner).zip(g.chunks(d.inner).zip(x.chunks(d.inner))).zip(gamma)
                {
                    let k1 = T::from_f64(gm.to_f64() * inv);
                    for (o, (&g, &x)) in o.iter_mut().zip(g.iter().zip(x)) {
                        *o = g * k1 + x * k2t + k3t;
                    }
                }
            });
        out
    }
}

impl CustomOp3 for InputGrad {
    fn name(&self) -> &'static str {
        "layer-norm-input-grad"
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
        let d = Dims::of(l1.shape());
        let out = dispatch!(self.name(), (s1, l1, s2, l2, s3, l3), |g, x, gamma| self.compute(g, x, gamma, d));
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
        let e = InputGradVjp { stats: self.stats.clone(), d: Dims::of(g.shape()) };
        let shapes = [g.shape().clone(), x.shape().clone(), gamma.shape().clone()];
        let mut out = run_eager(&e, &[g, x, gamma, u], &shapes)?.into_iter();
        let needed = crate::ops::cpu::needed;
        let (dg, dx, dgamma) = (out.next(), out.next(), out.next());
        Ok((dg.filter(|_| needed(g)), dx.filter(|_| needed(x)), dgamma.filter(|_| needed(gamma))))
    }
}

/// The derivatives of `⟨u, dx⟩` with respect to `g`, `x` and `γ` (see the module docs).
struct InputGradVjp {
    stats: Stats,
    d: Dims,
}

impl Eager for InputGradVjp {
    const NAME: &'static str = "layer-norm-input-grad-backward";

    fn run<T: WithDType>(&self, inputs: &[&[T]]) -> Vec<Vec<T>> {
        let &[g, x, gamma, u] = inputs else { unreachable!("four inputs") };
        let (d, c) = (self.d, gamma.len());
        let n = d.len as f64;
        let (mut dg, mut dx) = (crate::ops::filled_par(g.len(), T::zero()), crate::ops::filled_par(g.len(), T::zero()));
        let st = &self.stats;
        let partial: Vec<Vec<f64>> = dg
            .par_chunks_mut(d.len.max(1))
            .zip(dx.par_chunks_mut(d.len.max(1)))
            .zip(g.par_chunks(d.len.max(1)).zip(x.par_chunks(d.len.max(1))).zip(u.par_chunks(d.len.max(1))))
            .zip(st.mean.par_iter().zip(&st.inv_std))
            .map(|(((dg, dx), ((g, x), u)), (&mean, &inv))| {
                // Σu, Σu·x̂, Σh, Σh·x̂, Σu·h over the sample.
                let mut s = [0f64; 5];
                for (((g, x), u), gm) in g.chunks(d.inner).zip(x.chunks(d.inner)).zip(u.chunks(d.inner)).zip(gamma) {
                    let gm = gm.to_f64();
                    for ((&g, &x), &u) in g.iter().zip(x).zip(u) {
                        let (u, h, xh) = (u.to_f64(), gm * g.to_f64(), xhat(x, mean, inv));
                        s[0] += u;
                        s[1] += u * xh;
                        s[2] += h;
                        s[3] += h * xh;
                        s[4] += u * h;
                    }
                }
                let [su, sux, sh, shx, suh] = s;
                let u_dx = inv * (suh - sh * su / n - shx * sux / n);
                let mut dgamma = vec![0f64; c];
                let chunks = dg.chunks_mut(d.inner).zip(dx.chunks_mut(d.inner));
                let inputs = g.chunks(d.inner).zip(x.chunks(d.inner)).zip(u.chunks(d.inner));
                for (((dg, dx), ((g, x), u)), (gm, acc)) in chunks.zip(inputs).zip(gamma.iter().zip(&mut dgamma)) {
                    let gm = gm.to_f64();
                    for (((dg, dx), (&g, &x)), &u) in dg.iter_mut().zip(dx.iter_mut()).zip(g.iter().zip(x)).zip(u) {
                        let (g, xh) = (g.to_f64(), xhat(x, mean, inv));
                        let v = inv * (u.to_f64() - su / n - xh * sux / n);
                        let dx1 = inv * (gm * g - sh / n - xh * shx / n);
                        *dg = T::from_f64(gm * v);
                        *dx = T::from_f64(-inv / n * (u_dx * xh + sux * dx1 + shx * v));
                        *acc += g * v;
                    }
                }
                dgamma
            })
            .collect();
        let dgamma = (0..c).map(|k| T::from_f64(partial.iter().map(|p| p[k]).sum())).collect();
        vec![dg, dx, dgamma]
    }
}

/// `[dγ; dβ]` (2, C) of layer norm from `g` and `x`.
struct ParamGrad {
    stats: Stats,
}

impl ParamGrad {
    fn compute<T: WithDType>(&self, g: &[T], x: &[T], d: Dims) -> Vec<T> {
        let c = d.len / d.inner;
        let st = &self.stats;
        let partial: Vec<Vec<(f64, f64)>> = g
            .par_chunks(d.len.max(1))
            .zip(x.par_chunks(d.len.max(1)))
            .zip(st.mean.par_iter().zip(&st.inv_std))
            .map(|((g, x), (&mean, &inv))| {
                g.chunks(d.inner)
                    .zip(x.chunks(d.inner))
                    .map(|(g, x)| {
                        g.iter().zip(x).fold((0f64, 0f64), |(a, b), (&g, &x)| {
                            let g = g.to_f64();
                            (a + g * xhat(x, mean, inv), b + g)
                        })
                    })
                    .collect()
            })
            .collect();
        let total = |k: usize, pick: fn(&(f64, f64)) -> f64| partial.iter().map(|p| pick(&p[k])).sum::<f64>();
        let dgamma = (0..c).map(|k| total(k, |p| p.0));
        let dbeta = (0..c).map(|k| total(k, |p| p.1));
        dgamma.chain(dbeta).map(T::from_f64).collect()
    }
}

impl CustomOp2 for ParamGrad {
    fn name(&self) -> &'static str {
        "layer-norm-param-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape());
        let out = dispatch!(self.name(), (s1, l1, s2, l2), |g, x| self.compute(g, x, d));
        Ok((out, Shape::from((2, d.len / d.inner))))
    }

    fn bwd(&self, g: &Tensor, x: &Tensor, _res: &Tensor, u: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let e = ParamGradVjp { stats: self.stats.clone(), d: Dims::of(g.shape()) };
        let shapes = [g.shape().clone(), x.shape().clone()];
        let mut out = run_eager(&e, &[g, x, u], &shapes)?.into_iter();
        let needed = crate::ops::cpu::needed;
        let (dg, dx) = (out.next(), out.next());
        Ok((dg.filter(|_| needed(g)), dx.filter(|_| needed(x))))
    }
}

/// The derivatives of `⟨uγ, dγ⟩ + ⟨uβ, dβ⟩` with respect to `g` and `x`.
struct ParamGradVjp {
    stats: Stats,
    d: Dims,
}

impl Eager for ParamGradVjp {
    const NAME: &'static str = "layer-norm-param-grad-backward";

    fn run<T: WithDType>(&self, inputs: &[&[T]]) -> Vec<Vec<T>> {
        let &[g, x, u] = inputs else { unreachable!("three inputs") };
        let (d, c) = (self.d, u.len() / 2);
        let (ug, ub) = u.split_at(c);
        let n = d.len as f64;
        let (mut dg, mut dx) = (crate::ops::filled_par(g.len(), T::zero()), crate::ops::filled_par(g.len(), T::zero()));
        let st = &self.stats;
        dg.par_chunks_mut(d.len.max(1))
            .zip(dx.par_chunks_mut(d.len.max(1)))
            .zip(g.par_chunks(d.len.max(1)).zip(x.par_chunks(d.len.max(1))))
            .zip(st.mean.par_iter().zip(&st.inv_std))
            .for_each(|(((dg, dx), (g, x)), (&mean, &inv))| {
                // w = uγ[c]·g; ∂/∂x = inv·(w − mean(w) − x̂·mean(w·x̂)).
                let (mut sw, mut swx) = (0f64, 0f64);
                for ((g, x), a) in g.chunks(d.inner).zip(x.chunks(d.inner)).zip(ug) {
                    let a = a.to_f64();
                    for (&g, &x) in g.iter().zip(x) {
                        let w = a * g.to_f64();
                        sw += w;
                        swx += w * xhat(x, mean, inv);
                    }
                }
                let chunks = dg.chunks_mut(d.inner).zip(dx.chunks_mut(d.inner));
                for (((dg, dx), (g, x)), (a, b)) in
                    chunks.zip(g.chunks(d.inner).zip(x.chunks(d.inner))).zip(ug.iter().zip(ub))
                {
                    let (a, b) = (a.to_f64(), b.to_f64());
                    for ((dg, dx), (&g, &x)) in dg.iter_mut().zip(dx.iter_mut()).zip(g.iter().zip(x)) {
                        let xh = xhat(x, mean, inv);
                        *dg = T::from_f64(a * xh + b);
                        *dx = T::from_f64(inv * (a * g.to_f64() - sw / n - xh * swx / n));
                    }
                }
            });
        vec![dg, dx]
    }
}

#[cfg(test)]
mod tests {
    use super::super::checks;
    use super::*;

    fn fast(x: &Tensor, g: &Tensor, b: &Tensor) -> Tensor {
        layer_norm(x, g, b, 1e-5, None).unwrap()
    }

    fn reference(x: &Tensor, g: &Tensor, b: &Tensor) -> Tensor {
        composed_forward(x, g, b, 1e-5).unwrap()
    }

    /// With a fused LeakyReLU (slope 0.2), against candle's `maximum`.
    fn fast_leaky(x: &Tensor, g: &Tensor, b: &Tensor) -> Tensor {
        layer_norm(x, g, b, 1e-5, Some(0.2)).unwrap()
    }

    fn reference_leaky(x: &Tensor, g: &Tensor, b: &Tensor) -> Tensor {
        checks::leaky(reference(x, g, b), 0.2)
    }

    #[test]
    fn forward_matches_candle_ops() {
        checks::forward_matches(fast, reference);
        checks::forward_matches(fast_leaky, reference_leaky);
    }

    #[test]
    fn first_and_second_order_gradients_match_candle_ops() {
        checks::gradients_match(fast, reference);
        checks::gradients_match(fast_leaky, reference_leaky);
    }
}
