//! Softmax over the last dimension in one parallel pass per row, with a backward pass that
//! is itself a custom op, `y ⊙ (g − Σ g ⊙ y)`, whose own backward is written with candle
//! ops, so gradient penalties through self-attention are exact.
//!
//! Written with candle ops, a softmax over (N, HW, HW) attention logits took five passes
//! (max, subtract, exp, sum, divide), each allocating, and its backward as many again with
//! candle's broadcast reductions: most of a SAGAN step.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Rows per parallel task.
const ROWS: usize = 16;

/// Softmax over the last dimension (the maximum subtracted first).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if !super::is_fast_cpu(x) {
        let max = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&max)?.exp()?;
        return e.broadcast_div(&e.sum_keepdim(D::Minus1)?);
    }
    x.contiguous()?.apply_op1(Softmax)
}

/// Log-softmax over dimension `dim`, `x − max − log Σ exp(x − max)`, written with candle ops
/// (for the classifier heads of ACGAN and InfoGAN, small tensors).
pub fn log_softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    let diff = x.broadcast_sub(&x.max_keepdim(dim)?)?;
    let log_sum = diff.exp()?.sum_keepdim(dim)?.log()?;
    diff.broadcast_sub(&log_sum)
}

/// `y ⊙ (g − Σ_last g ⊙ y)`: the gradient of a softmax whose output is `y`, given the
/// gradient `g` of its output.
fn softmax_grad(g: &Tensor, y: &Tensor) -> Result<Tensor> {
    g.contiguous()?.apply_op2(&y.contiguous()?, SoftmaxGrad)
}

/// The element types of the kernels, with their exponential.
trait Float: candle_core::WithDType {
    /// Below this, exp underflows to (nearly) zero; it is returned as 0 without calling
    /// libm, whose underflow path was a sixth of a SAGAN step.
    const UNDERFLOW: Self;
    fn exp_(self) -> Self;
}

impl Float for f32 {
    const UNDERFLOW: f32 = -87.0;
    fn exp_(self) -> Self {
        if self < Self::UNDERFLOW {
            0.0
        } else {
            self.exp()
        }
    }
}

impl Float for f64 {
    const UNDERFLOW: f64 = -708.0;
    fn exp_(self) -> Self {
        if self < Self::UNDERFLOW {
            0.0
        } else {
            self.exp()
        }
    }
}

fn softmax_rows<T: Float>(x: &[T], width: usize) -> Vec<T> {
    let mut out = super::filled_par(x.len(), T::zero());
    out.par_chunks_mut(width * ROWS).zip(x.par_chunks(width * ROWS)).for_each(|(o, x)| {
        for (o, x) in o.chunks_mut(width).zip(x.chunks(width)) {
            let max = x.iter().copied().fold(x[0], |m, v| if v > m { v } else { m });
            let mut sum = T::zero();
            for (o, &v) in o.iter_mut().zip(x) {
                *o = (v - max).exp_();
                sum += *o;
            }
            let inv = T::one() / sum;
            o.iter_mut().for_each(|o| *o *= inv);
        }
    });
    out
}

fn softmax_grad_rows<T: Float>(g: &[T], y: &[T], width: usize) -> Vec<T> {
    let mut out = super::filled_par(g.len(), T::zero());
    out.par_chunks_mut(width * ROWS).zip(g.par_chunks(width * ROWS).zip(y.par_chunks(width * ROWS))).for_each(
        |(o, (g, y))| {
            for (o, (g, y)) in o.chunks_mut(width).zip(g.chunks(width).zip(y.chunks(width))) {
                let dot = g.iter().zip(y).fold(T::zero(), |s, (&a, &b)| s + a * b);
                for ((o, &g), &y) in o.iter_mut().zip(g).zip(y) {
                    *o = y * (g - dot);
                }
            }
        },
    );
    out
}

fn last_dim(l: &Layout) -> Result<usize> {
    match l.dims().last() {
        Some(&w) if w > 0 => Ok(w),
        _ => bail!("softmax: needs a non-empty last dimension, got {:?}", l.dims()),
    }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let w = last_dim(l)?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(softmax_rows(super::contiguous_slice(v, l, self.name())?, w)),
            CpuStorage::F64(v) => CpuStorage::F64(softmax_rows(super::contiguous_slice(v, l, self.name())?, w)),
            _ => bail!("softmax-last: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(softmax_grad(grad, res)?))
    }
}

struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            bail!("softmax-grad: gradient {:?} and output {:?} differ", l1.shape(), l2.shape());
        }
        let (w, name) = (last_dim(l1)?, self.name());
        let out = match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(y)) => CpuStorage::F32(softmax_grad_rows(
                super::contiguous_slice(g, l1, name)?,
                super::contiguous_slice(y, l2, name)?,
                w,
            )),
            (CpuStorage::F64(g), CpuStorage::F64(y)) => CpuStorage::F64(softmax_grad_rows(
                super::contiguous_slice(g, l1, name)?,
                super::contiguous_slice(y, l2, name)?,
                w,
            )),
            _ => bail!("softmax-grad: f32 or f64, both the same"),
        };
        Ok((out, l1.shape().clone()))
    }

    /// z = y ⊙ (g − s), s = Σ g ⊙ y. With h the gradient of z and r = Σ h ⊙ y:
    /// ∂/∂g = y ⊙ (h − r) (the same op on h), ∂/∂y = h ⊙ (g − s) − g ⊙ r.
    fn bwd(&self, g: &Tensor, y: &Tensor, _res: &Tensor, h: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dg = softmax_grad(h, y)?;
        let dy = match super::cpu::needed(y) {
            true => {
                let s = (g * y)?.sum_keepdim(D::Minus1)?;
                let r = (h * y)?.sum_keepdim(D::Minus1)?;
                Some((h * g.broadcast_sub(&s)?)?.sub(&g.broadcast_mul(&r)?)?)
            }
            false => None,
        };
        Ok((Some(dg), dy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn composed(x: &Tensor) -> Tensor {
        let max = x.max_keepdim(D::Minus1).unwrap().detach();
        let e = x.broadcast_sub(&max).unwrap().exp().unwrap();
        e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
    }

    /// Forward, first and second order against the composed candle ops, in f64.
    #[test]
    fn matches_the_composed_softmax_to_second_order() {
        crate::enable_second_order_gradients();
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::new(9);
        let x = Var::from_tensor(&rng.normal_tensor((3, 5, 7), 0.0, 2.0, &dev).unwrap().to_dtype(DType::F64).unwrap())
            .unwrap();
        let w = rng.normal_tensor((3, 5, 7), 0.0, 1.0, &dev).unwrap().to_dtype(DType::F64).unwrap();
        let ours = softmax_last(x.as_tensor()).unwrap();
        let theirs = composed(x.as_tensor());
        assert!(crate::ops::max_abs_diff(&ours, &theirs) < 1e-14);
        // A penalty-like objective: the squared norm of d(Σ w ⊙ softmax(x))/dx, differentiated again.
        let second = |f: &dyn Fn(&Tensor) -> Tensor| {
            let v = Var::from_tensor(&x.as_tensor().detach()).unwrap();
            let first = (f(v.as_tensor()) * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = first.get(v.as_tensor()).unwrap().clone();
            let pen =
                (gx.sqr().unwrap().sum_all().unwrap() + (f(v.as_tensor()).sqr().unwrap().sum_all().unwrap())).unwrap();
            let g2 = pen.backward().unwrap();
            (gx, g2.get(v.as_tensor()).unwrap().clone())
        };
        let (a1, a2) = second(&|t| softmax_last(t).unwrap());
        let (b1, b2) = second(&|t| composed(t));
        assert!(crate::ops::max_abs_diff(&a1, &b1) < 1e-12);
        assert!(crate::ops::max_abs_diff(&a2, &b2) < 1e-10, "{}", crate::ops::max_abs_diff(&a2, &b2));
    }
}
