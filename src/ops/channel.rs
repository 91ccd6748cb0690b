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
    let mut out = vec![T::default(); n * c * inner];
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn close(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

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
