//! 2x2 max pooling whose gradient goes to one element per window: the first maximal one in
//! row-major order. candle's `max` sends the gradient to every tied element, which is wrong
//! exactly where ties are common: after nearest-neighbour upsampling every 2x2 window holds
//! four equal values (the self-attention keys of a ResNet generator).
//!
//! Three ops, each other's adjoints, so gradients of any order are exact: the pooling, the
//! scatter of a pooled gradient to the chosen elements, and the gather of a full-size
//! gradient at the chosen elements. The choice depends only on the pooled input, whose own
//! derivative through the choice is zero almost everywhere.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// (N, C, H, W) -> (N, C, H/2, W/2), the maximum of each 2x2 window (H and W even).
pub fn max_pool2x(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h % 2 != 0 || w % 2 != 0 {
        bail!("max_pool2x needs an even height and width, got {h}x{w}");
    }
    if !super::is_fast_cpu(x) {
        let (n, c, _, _) = x.dims4()?;
        return x.reshape((n, c, h / 2, 2, w / 2, 2))?.max(5)?.max(3);
    }
    x.contiguous()?.apply_op1(MaxPool)
}

/// Offset within the (H, W) plane of the chosen element of window (i, j).
fn argmax<T: PartialOrd + Copy>(plane: &[T], w: usize, i: usize, j: usize) -> usize {
    let base = 2 * i * w + 2 * j;
    let mut best = base;
    for off in [base + 1, base + w, base + w + 1] {
        if plane[off] > plane[best] {
            best = off;
        }
    }
    best
}

/// The three computations, over planes of `x` (H, W) in parallel.
enum Kind {
    /// out (H/2, W/2) = x at the chosen elements.
    Pool,
    /// out (H/2, W/2) = other (H, W) at x's chosen elements.
    Gather,
    /// out (H, W) = other (H/2, W/2) put at x's chosen elements, zero elsewhere.
    Scatter,
}

fn run<T: candle_core::WithDType>(kind: &Kind, x: &[T], other: &[T], (h, w): (usize, usize)) -> Vec<T> {
    let (plane, half) = (h * w, h * w / 4);
    let out_plane = if matches!(kind, Kind::Scatter) { plane } else { half };
    let planes = x.len() / plane;
    let mut out = super::filled_par(planes * out_plane, T::zero());
    out.par_chunks_mut(out_plane).enumerate().for_each(|(p, o)| {
        let xs = &x[p * plane..(p + 1) * plane];
        for i in 0..h / 2 {
            for j in 0..w / 2 {
                let at = argmax(xs, w, i, j);
                let k = i * (w / 2) + j;
                match kind {
                    Kind::Pool => o[k] = xs[at],
                    Kind::Gather => o[k] = other[p * plane + at],
                    Kind::Scatter => o[at] = other[p * half + k],
                }
            }
        }
    });
    out
}

fn half_shape(s: &Shape) -> Result<Shape> {
    let (n, c, h, w) = s.dims4()?;
    Ok(Shape::from((n, c, h / 2, w / 2)))
}

struct MaxPool;

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max-pool-2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, _, h, w) = l.shape().dims4()?;
        let out = match s {
            CpuStorage::F32(v) => {
                CpuStorage::F32(run(&Kind::Pool, super::contiguous_slice(v, l, self.name())?, &[], (h, w)))
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(run(&Kind::Pool, super::contiguous_slice(v, l, self.name())?, &[], (h, w)))
            }
            _ => bail!("max-pool-2x: f32 or f64 only"),
        };
        Ok((out, half_shape(l.shape())?))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2(&grad.contiguous()?, Chosen { scatter: true })?))
    }
}

/// `x.apply_op2(other, Chosen { scatter })`: scatter (N, C, H/2, W/2) `other` to x's chosen
/// elements, or gather (N, C, H, W) `other` at them.
struct Chosen {
    scatter: bool,
}

impl CustomOp2 for Chosen {
    fn name(&self) -> &'static str {
        if self.scatter {
            "max-pool-2x-scatter"
        } else {
            "max-pool-2x-gather"
        }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, _, h, w) = l1.shape().dims4()?;
        let expected = if self.scatter { half_shape(l1.shape())? } else { l1.shape().clone() };
        if l2.shape() != &expected {
            bail!("{}: expected {:?}, got {:?}", self.name(), expected, l2.shape());
        }
        let kind = if self.scatter { Kind::Scatter } else { Kind::Gather };
        let name = self.name();
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(o)) => CpuStorage::F32(run(
                &kind,
                super::contiguous_slice(x, l1, name)?,
                super::contiguous_slice(o, l2, name)?,
                (h, w),
            )),
            (CpuStorage::F64(x), CpuStorage::F64(o)) => CpuStorage::F64(run(
                &kind,
                super::contiguous_slice(x, l1, name)?,
                super::contiguous_slice(o, l2, name)?,
                (h, w),
            )),
            _ => bail!("{name}: f32 or f64, both the same"),
        };
        let shape = if self.scatter { l1.shape().clone() } else { half_shape(l1.shape())? };
        Ok((out, shape))
    }

    /// Linear in `other`, with the adjoint op; constant in `x` almost everywhere.
    fn bwd(
        &self,
        x: &Tensor,
        _other: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d_other = x.apply_op2(&grad.contiguous()?, Chosen { scatter: !self.scatter })?;
        let dx = super::cpu::needed(x).then(|| x.zeros_like()).transpose()?;
        Ok((dx, Some(d_other)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn ties_send_the_gradient_to_one_element_and_second_order_is_exact() {
        crate::enable_second_order_gradients();
        let dev = Device::Cpu;
        // A window of four equal values: the gradient goes to its first element only.
        let x = Var::new(&[[[[1.0f64, 1.0], [1.0, 1.0]]]], &dev).unwrap();
        let g = max_pool2x(x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(g, [1.0, 0.0, 0.0, 0.0]);
        // Without ties: equals candle's max, forward and first order.
        let mut rng = crate::rng::Rng::new(4);
        let x =
            Var::from_tensor(&rng.normal_tensor((2, 3, 4, 6), 0.0, 1.0, &dev).unwrap().to_dtype(DType::F64).unwrap())
                .unwrap();
        let w = rng.normal_tensor((2, 3, 2, 3), 0.0, 1.0, &dev).unwrap().to_dtype(DType::F64).unwrap();
        let composed = |t: &Tensor| t.reshape((2, 3, 2, 2, 3, 2)).unwrap().max(5).unwrap().max(3).unwrap();
        let ours = max_pool2x(x.as_tensor()).unwrap();
        assert_eq!(crate::ops::max_abs_diff(&ours, &composed(x.as_tensor())), 0.0);
        // Second order: the gradient of ||d(Σ w ⊙ pool(x²))/dx||² with respect to x.
        let second = |pool: &dyn Fn(&Tensor) -> Tensor| {
            let v = Var::from_tensor(&x.as_tensor().detach()).unwrap();
            let first = (pool(&v.as_tensor().sqr().unwrap()) * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = first.get(v.as_tensor()).unwrap().clone();
            gx.sqr().unwrap().sum_all().unwrap().backward().unwrap().get(v.as_tensor()).unwrap().clone()
        };
        let a = second(&|t| max_pool2x(t).unwrap());
        let b = second(&|t| composed(t));
        assert!(crate::ops::max_abs_diff(&a, &b) < 1e-12);
        assert!(max_pool2x(&x.as_tensor().narrow(3, 0, 5).unwrap()).is_err());
    }
}
