//! Per-channel sums and broadcasts over NCHW tensors, the reductions that batch norm and
//! channel biases are made of.
//!
//! candle's CPU backend reduces over dimensions (0, 2, 3) with a divide-per-element index
//! loop, and differentiates every `broadcast_*` op with that same reduction; in a DCGAN step
//! this took a third of the time. These two ops are each other's backward pass, so they can
//! be differentiated to any order.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// (N, C, ...) -> (1, C, 1, ...): the sum over every dimension but the channel.
pub fn channel_sum(x: &Tensor) -> Result<Tensor> {
    if x.rank() < 2 {
        bail!("channel_sum needs (N, C, ...), got {:?}", x.dims());
    }
    if !super::is_fast_cpu(x) {
        let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        return x.sum_keepdim(dims);
    }
    x.contiguous()?.apply_op1(ChannelSum)
}

/// (1, C, 1, ...) -> `shape` (N, C, ...): each channel's value repeated.
pub fn channel_broadcast(v: &Tensor, shape: &Shape) -> Result<Tensor> {
    if v.dims().iter().enumerate().any(|(i, &d)| i != 1 && d != 1) || v.rank() != shape.rank() {
        bail!("channel_broadcast needs (1, C, 1, ...) of rank {}, got {:?}", shape.rank(), v.dims());
    }
    if !super::is_fast_cpu(v) {
        return v.broadcast_as(shape);
    }
    v.contiguous()?.apply_op1(ChannelBroadcast { shape: shape.clone() })
}

/// Reshapes a per-channel vector (C,) to (1, C, 1, 1) and repeats it to `like`'s shape.
pub fn per_channel(v: &Tensor, like: &Tensor) -> Result<Tensor> {
    let mut dims = vec![1usize; like.rank()];
    dims[1] = v.elem_count();
    channel_broadcast(&v.reshape(dims)?, like.shape())
}

/// (outer = N, channels = C, inner = H·W) of a shape.
fn split(shape: &Shape) -> (usize, usize, usize) {
    let d = shape.dims();
    (d[0], d[1], d[2..].iter().product())
}

fn channel_shape(shape: &Shape) -> Shape {
    let mut dims = vec![1usize; shape.rank()];
    dims[1] = shape.dims()[1];
    Shape::from(dims)
}

struct ChannelSum;

fn sum_channels<T: Copy + Send + Sync + std::iter::Sum<T> + std::ops::Add<Output = T> + Default>(
    x: &[T],
    (n, c, inner): (usize, usize, usize),
) -> Vec<T> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut acc = T::default();
            for i in 0..n {
                let start = (i * c + ch) * inner;
                acc = acc + x[start..start + inner].iter().copied().sum::<T>();
            }
            acc
        })
        .collect()
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else { bail!("channel-sum: input not contiguous") };
        let dims = split(l.shape());
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(sum_channels(&v[a..b], dims)),
            CpuStorage::F64(v) => CpuStorage::F64(sum_channels(&v[a..b], dims)),
            _ => bail!("channel-sum: f32 or f64 only"),
        };
        Ok((out, channel_shape(l.shape())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(channel_broadcast(grad, arg.shape())?))
    }
}

struct ChannelBroadcast {
    shape: Shape,
}

fn repeat_channels<T: Copy + Send + Sync + Default>(v: &[T], (n, c, inner): (usize, usize, usize)) -> Vec<T> {
    let mut out = super::filled_par(n * c * inner, T::default());
    out.par_chunks_mut(inner).enumerate().for_each(|(k, chunk)| chunk.fill(v[k % c]));
    out
}

impl CustomOp1 for ChannelBroadcast {
    fn name(&self) -> &'static str {
        "channel-broadcast"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else { bail!("channel-broadcast: input not contiguous") };
        let dims = split(&self.shape);
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(repeat_channels(&v[a..b], dims)),
            CpuStorage::F64(v) => CpuStorage::F64(repeat_channels(&v[a..b], dims)),
            _ => bail!("channel-broadcast: f32 or f64 only"),
        };
        Ok((out, self.shape.clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(channel_sum(grad)?))
    }
}

/// `x · scale[c] + shift[c]` over (N, C, ...) in one pass; `scale` and `shift` have C
/// elements each (any shape). The affine step of batch and layer norm and of channel biases.
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    if scale.elem_count() != c || shift.elem_count() != c {
        bail!("channel_affine: {c} channels but scale {:?} and shift {:?}", scale.dims(), shift.dims());
    }
    if !super::is_fast_cpu(x) || scale.dtype() != x.dtype() || shift.dtype() != x.dtype() {
        let (s, b) = (per_channel(&scale.flatten_all()?, x)?, per_channel(&shift.flatten_all()?, x)?);
        return x.mul(&s)?.add(&b);
    }
    x.contiguous()?.apply_op3(&scale.flatten_all()?.contiguous()?, &shift.flatten_all()?.contiguous()?, ChannelAffine)
}

struct ChannelAffine;

fn affine<T: Copy + Send + Sync + Default + std::ops::Mul<Output = T> + std::ops::Add<Output = T>>(
    x: &[T],
    scale: &[T],
    shift: &[T],
    (n, c, inner): (usize, usize, usize),
) -> Vec<T> {
    let mut out = super::filled_par(n * c * inner, T::default());
    out.par_chunks_mut(inner).zip(x.par_chunks(inner.max(1))).enumerate().for_each(|(k, (o, x))| {
        let (a, b) = (scale[k % c], shift[k % c]);
        for (o, &x) in o.iter_mut().zip(x) {
            *o = x * a + b;
        }
    });
    out
}

impl candle_core::CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "channel-affine"
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
        let part = |l: &Layout| {
            l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("channel-affine: input not contiguous".into()))
        };
        let ((a1, b1), (a2, b2), (a3, b3)) = (part(l1)?, part(l2)?, part(l3)?);
        let dims = split(l1.shape());
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(s), CpuStorage::F32(b)) => {
                CpuStorage::F32(affine(&x[a1..b1], &s[a2..b2], &b[a3..b3], dims))
            }
            (CpuStorage::F64(x), CpuStorage::F64(s), CpuStorage::F64(b)) => {
                CpuStorage::F64(affine(&x[a1..b1], &s[a2..b2], &b[a3..b3], dims))
            }
            _ => bail!("channel-affine: f32 or f64, all three the same"),
        };
        Ok((out, l1.shape().clone()))
    }

    /// dx = grad · scale[c] (this op again, so differentiable), dscale = Σ grad · x,
    /// dshift = Σ grad, per channel.
    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let needed = super::cpu::needed;
        let dx = needed(x).then(|| channel_affine(grad, scale, &scale.zeros_like()?));
        let dscale = needed(scale).then(|| channel_sum(&grad.mul(x)?)?.reshape(scale.shape()));
        let dshift = needed(shift).then(|| channel_sum(grad)?.reshape(shift.shape()));
        Ok((dx.transpose()?, dscale.transpose()?, dshift.transpose()?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_abs_diff as close;
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn sum_and_broadcast_match_candle() {
        let x = Tensor::randn(0f32, 1.0, (3, 5, 4, 7), &Device::Cpu).unwrap();
        let want = x.sum_keepdim((0, 2, 3)).unwrap();
        assert!(close(&channel_sum(&x).unwrap(), &want) < 1e-4);
        // a non-contiguous input
        let xt = x.transpose(2, 3).unwrap();
        assert!(close(&channel_sum(&xt).unwrap(), &xt.sum_keepdim((0, 2, 3)).unwrap()) < 1e-4);
        let v = Tensor::randn(0f32, 1.0, (1, 5, 1, 1), &Device::Cpu).unwrap();
        let b = channel_broadcast(&v, x.shape()).unwrap();
        assert_eq!(close(&b, &v.broadcast_as(x.shape()).unwrap()), 0.0);
        assert!(channel_broadcast(&x, x.shape()).is_err());
    }

    #[test]
    fn affine_matches_broadcast_ops_to_second_order() {
        let x0 = Tensor::randn(0f64, 1.0, (2, 3, 2, 5), &Device::Cpu).unwrap();
        let s0 = Tensor::randn(0f64, 1.0, 3, &Device::Cpu).unwrap();
        let b0 = Tensor::randn(0f64, 1.0, 3, &Device::Cpu).unwrap();
        let v0 = Tensor::randn(0f64, 1.0, (2, 3, 2, 5), &Device::Cpu).unwrap();
        let (x1, s1, b1) = (x0.clone(), s0.clone(), b0.clone());
        let eval = move |fast: bool| {
            let (x, s, b) =
                (Var::from_tensor(&x1).unwrap(), Var::from_tensor(&s1).unwrap(), Var::from_tensor(&b1).unwrap());
            let y = if fast {
                channel_affine(x.as_tensor(), s.as_tensor(), b.as_tensor()).unwrap()
            } else {
                let s4 = s.as_tensor().reshape((1, 3, 1, 1)).unwrap();
                let b4 = b.as_tensor().reshape((1, 3, 1, 1)).unwrap();
                x.as_tensor().broadcast_mul(&s4).unwrap().broadcast_add(&b4).unwrap()
            };
            // A penalty-like objective: the squared input gradient of sum(v · y²).
            let f = (y.sqr().unwrap() * &v0).unwrap().sum_all().unwrap();
            let gx = f.backward().unwrap().get(x.as_tensor()).unwrap().clone();
            let p = gx.sqr().unwrap().sum_all().unwrap();
            let g2 = p.backward().unwrap();
            (y, gx, g2.get(s.as_tensor()).unwrap().clone(), g2.get(b.as_tensor()).unwrap().clone())
        };
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let (a, b) = std::thread::spawn(move || (eval(true), eval(false))).join().unwrap();
        assert!(close(&a.0, &b.0) < 1e-12);
        assert!(close(&a.1, &b.1) < 1e-10);
        assert!(close(&a.2, &b.2) < 1e-10);
        assert!(close(&a.3, &b.3) < 1e-10);
        let xt = x0.transpose(2, 3).unwrap().to_dtype(DType::F32).unwrap();
        let (s32, b32) = (s0.to_dtype(DType::F32).unwrap(), b0.to_dtype(DType::F32).unwrap());
        let want = xt
            .broadcast_mul(&s32.reshape((1, 3, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b32.reshape((1, 3, 1, 1)).unwrap())
            .unwrap();
        assert!(close(&channel_affine(&xt, &s32, &b32).unwrap(), &want) < 1e-6, "non-contiguous f32");
        assert!(channel_affine(&xt, &s32.narrow(0, 0, 2).unwrap(), &b32).is_err());
    }

    #[test]
    fn second_order_gradients_match_candle_ops() {
        // f(x) = sum((x - mean_c(x))^2 * w_c), differentiate twice via the input gradient.
        let x0 = Tensor::randn(0f64, 1.0, (2, 3, 2, 2), &Device::Cpu).unwrap();
        let w0 = Tensor::randn(0f64, 1.0, (1, 3, 1, 1), &Device::Cpu).unwrap();
        let eval = move |fast: bool| {
            let x = Var::from_tensor(&x0).unwrap();
            let w = Var::from_tensor(&w0).unwrap();
            let shape = x.shape().clone();
            type F<'a> = Box<dyn Fn(&Tensor) -> Tensor + 'a>;
            let (sum, bc): (F, F) = if fast {
                (Box::new(|t| channel_sum(t).unwrap()), Box::new(move |t| channel_broadcast(t, &shape).unwrap()))
            } else {
                (Box::new(|t| t.sum_keepdim((0, 2, 3)).unwrap()), Box::new(move |t| t.broadcast_as(&shape).unwrap()))
            };
            let mean = (sum(x.as_tensor()) / 8.0).unwrap();
            let c = (x.as_tensor() - bc(&mean)).unwrap();
            let f = (c.sqr().unwrap() * bc(w.as_tensor())).unwrap().sum_all().unwrap();
            let gx = f.backward().unwrap().get(x.as_tensor()).unwrap().clone();
            let p = gx.sqr().unwrap().sum_all().unwrap();
            let gw = p.backward().unwrap().get(w.as_tensor()).unwrap().clone();
            (gx, gw)
        };
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let (a, b) = std::thread::spawn(move || (eval(true), eval(false))).join().unwrap();
        assert!(close(&a.0, &b.0) < 1e-10);
        assert!(close(&a.1, &b.1) < 1e-10);
    }
}
