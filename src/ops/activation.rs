//! LeakyReLU in one pass, with a backward pass that is itself differentiable.
//!
//! Written with candle ops (`maximum(x, slope·x)`), the forward pass takes two passes over
//! the tensor and the backward about eight (candle differentiates `maximum` through two
//! comparisons, two casts, two products and a sum). Here the forward pass is one custom op,
//! and its backward another, `grad · (x > 0 ? 1 : slope)`, whose own backward is the same op
//! applied to the incoming gradient (the slope pattern does not depend on x almost everywhere),
//! so gradient penalties differentiate through it exactly.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;

/// `x` where positive, `slope · x` elsewhere.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    leaky_relu_gain(x, slope, 1.0)
}

/// `gain · leaky_relu(x, slope)` in the same one pass (StyleGAN's activation has gain sqrt(2)).
pub fn leaky_relu_gain(x: &Tensor, slope: f64, gain: f64) -> Result<Tensor> {
    if !super::is_fast_cpu(x) {
        return x.maximum(&(x * slope)?)? * gain;
    }
    x.contiguous()?.apply_op1(LeakyRelu { slope, gain })
}

/// `grad · (x > 0 ? 1 : slope)`: the backward pass of [`leaky_relu`]. `x` may be the
/// activation's output instead of its input (same sign; for ReLU, zero where the input was not
/// positive).
pub(crate) fn leaky_relu_grad(grad: &Tensor, x: &Tensor, slope: f64) -> Result<Tensor> {
    grad.contiguous()?.apply_op2(&x.contiguous()?, LeakyReluGrad { slope, gain: 1.0 })
}

struct LeakyRelu {
    slope: f64,
    gain: f64,
}

fn map<T: Copy + Send + Sync + Default>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut out = super::filled_par(x.len(), T::default());
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = f(x);
        }
    });
    out
}

fn zip_map<T: Copy + Send + Sync + Default>(g: &[T], x: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = super::filled_par(x.len(), T::default());
    out.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK).zip(x.par_chunks(CHUNK))).for_each(|(o, (g, x))| {
        for ((o, &g), &x) in o.iter_mut().zip(g).zip(x) {
            *o = f(g, x);
        }
    });
    out
}

impl CustomOp1 for LeakyRelu {
    fn name(&self) -> &'static str {
        "leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => {
                let (p, k) = (self.gain as f32, (self.slope * self.gain) as f32);
                CpuStorage::F32(map(super::contiguous_slice(v, l, self.name())?, move |x| {
                    x * if x > 0.0 { p } else { k }
                }))
            }
            CpuStorage::F64(v) => {
                let (p, k) = (self.gain, self.slope * self.gain);
                CpuStorage::F64(map(super::contiguous_slice(v, l, self.name())?, move |x| {
                    x * if x > 0.0 { p } else { k }
                }))
            }
            _ => bail!("leaky-relu: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = LeakyReluGrad { slope: self.slope, gain: self.gain };
        Ok(Some(grad.contiguous()?.apply_op2(&arg.contiguous()?, op)?))
    }
}

/// `grad · gain · (x > 0 ? 1 : slope)`.
struct LeakyReluGrad {
    slope: f64,
    gain: f64,
}

impl CustomOp2 for LeakyReluGrad {
    fn name(&self) -> &'static str {
        "leaky-relu-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            bail!("leaky-relu-grad: gradient {:?} and input {:?} differ", l1.shape(), l2.shape());
        }
        let name = self.name();
        let out = match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(x)) => {
                let (p, k) = (self.gain as f32, (self.slope * self.gain) as f32);
                let (g, x) = (super::contiguous_slice(g, l1, name)?, super::contiguous_slice(x, l2, name)?);
                CpuStorage::F32(zip_map(g, x, move |g, x| g * if x > 0.0 { p } else { k }))
            }
            (CpuStorage::F64(g), CpuStorage::F64(x)) => {
                let (p, k) = (self.gain, self.slope * self.gain);
                let (g, x) = (super::contiguous_slice(g, l1, name)?, super::contiguous_slice(x, l2, name)?);
                CpuStorage::F64(zip_map(g, x, move |g, x| g * if x > 0.0 { p } else { k }))
            }
            _ => bail!("leaky-relu-grad: f32 or f64, both the same"),
        };
        Ok((out, l1.shape().clone()))
    }

    /// Linear in the gradient with the same slope pattern; the pattern's own derivative
    /// with respect to x is zero wherever it is defined (candle needs it spelled out when
    /// x depends on variables).
    fn bwd(&self, _grad: &Tensor, x: &Tensor, _res: &Tensor, gg: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = super::cpu::needed(x).then(|| x.zeros_like()).transpose()?;
        let op = LeakyReluGrad { slope: self.slope, gain: self.gain };
        Ok((Some(gg.contiguous()?.apply_op2(&x.contiguous()?, op)?), dx))
    }
}

/// `gain · leaky_relu(x + b, slope)` with a per-channel bias `b` (C,) on (N, C, ...) `x`, in one
/// pass (StyleGAN's bias_act); `slope` None: `x + b` alone. The backward pass is the
/// activation's (itself differentiable) and a channel sum for the bias.
pub fn bias_act(x: &Tensor, b: &Tensor, act: Option<(f64, f64)>) -> Result<Tensor> {
    let c = x.dim(1)?;
    if b.elem_count() != c {
        bail!("bias_act: {c} channels but a bias of {:?}", b.dims());
    }
    if !super::use_cpu_kernels(x, b) {
        let y = x.add(&super::channel::per_channel(b, x)?)?;
        return match act {
            Some((slope, gain)) => leaky_relu_gain(&y, slope, gain),
            None => Ok(y),
        };
    }
    x.contiguous()?.apply_op2(&b.flatten_all()?.contiguous()?, BiasAct { act })
}

struct BiasAct {
    act: Option<(f64, f64)>,
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let dims = l1.shape().dims();
        let plane: usize = dims[2..].iter().product();
        let (slope, gain) = self.act.unwrap_or((1.0, 1.0));
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(b)) => {
                let (x, b) = (super::contiguous_slice(x, l1, name)?, super::contiguous_slice(b, l2, name)?);
                CpuStorage::F32(bias_act_run(x, b, plane, (gain as f32, (slope * gain) as f32)))
            }
            (CpuStorage::F64(x), CpuStorage::F64(b)) => {
                let (x, b) = (super::contiguous_slice(x, l1, name)?, super::contiguous_slice(b, l2, name)?);
                CpuStorage::F64(bias_act_run(x, b, plane, (gain, slope * gain)))
            }
            _ => bail!("{name}: f32 or f64, both the same"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, b: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The output has the sign of x + b, which decides the slope.
        let g = match self.act {
            Some((slope, gain)) => grad.contiguous()?.apply_op2(&res.contiguous()?, LeakyReluGrad { slope, gain })?,
            None => grad.clone(),
        };
        let gb = super::cpu::needed(b).then(|| super::channel::channel_sum(&g)?.reshape(b.shape())).transpose()?;
        let gx = super::cpu::needed(x).then_some(g);
        Ok((gx, gb))
    }
}

/// Planes of `plane` elements, plane i with bias b[i mod C], through `x·(x > 0 ? p : k)`.
fn bias_act_run<T: candle_core::WithDType>(x: &[T], b: &[T], plane: usize, (p, k): (T, T)) -> Vec<T> {
    let c = b.len();
    let mut out = super::filled_par(x.len(), T::zero());
    out.par_chunks_mut(plane).zip(x.par_chunks(plane)).enumerate().for_each(|(i, (o, x))| {
        let bias = b[i % c];
        for (o, &x) in o.iter_mut().zip(x) {
            let v = x + bias;
            *o = v * if v > T::zero() { p } else { k };
        }
    });
    out
}

/// `tanh(x)`, one parallel pass; its backward `grad · (1 − y²)` is one more.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    if !super::is_fast_cpu(x) {
        return x.tanh();
    }
    x.contiguous()?.apply_op1(Tanh)
}

struct Tanh;

impl CustomOp1 for Tanh {
    fn name(&self) -> &'static str {
        "tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(map(super::contiguous_slice(v, l, self.name())?, f32::tanh)),
            CpuStorage::F64(v) => CpuStorage::F64(map(super::contiguous_slice(v, l, self.name())?, f64::tanh)),
            _ => bail!("tanh: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2(&res.contiguous()?, TanhGrad)?))
    }
}

/// `grad · (1 − y²)` for `y = tanh(x)`.
struct TanhGrad;

impl CustomOp2 for TanhGrad {
    fn name(&self) -> &'static str {
        "tanh-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            bail!("tanh-grad: gradient {:?} and output {:?} differ", l1.shape(), l2.shape());
        }
        let name = self.name();
        let out = match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(y)) => CpuStorage::F32(zip_map(
                super::contiguous_slice(g, l1, name)?,
                super::contiguous_slice(y, l2, name)?,
                |g, y| g * (1.0 - y * y),
            )),
            (CpuStorage::F64(g), CpuStorage::F64(y)) => CpuStorage::F64(zip_map(
                super::contiguous_slice(g, l1, name)?,
                super::contiguous_slice(y, l2, name)?,
                |g, y| g * (1.0 - y * y),
            )),
            _ => bail!("tanh-grad: f32 or f64, both the same"),
        };
        Ok((out, l1.shape().clone()))
    }

    /// Linear in the gradient (this op again); with respect to y, `−2·u·grad·y` in candle ops.
    fn bwd(&self, grad: &Tensor, y: &Tensor, _res: &Tensor, u: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dgrad = u.contiguous()?.apply_op2(&y.contiguous()?, TanhGrad)?;
        let dy = super::cpu::needed(y).then(|| u.mul(grad)?.mul(y)? * -2.0).transpose()?;
        Ok((Some(dgrad), dy))
    }
}

#[cfg(test)]
mod bias_act_tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Against the composed ops (per-channel add, LeakyReLU with gain), to second order.
    #[test]
    fn matches_the_composed_ops_to_second_order() {
        crate::enable_second_order_gradients();
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::new(12);
        let f64t = |t: Tensor| t.to_dtype(DType::F64).unwrap();
        let x = f64t(rng.normal_tensor((2, 3, 4, 5), 0.0, 1.0, &dev).unwrap());
        let b = f64t(rng.normal_tensor(3, 0.0, 1.0, &dev).unwrap());
        let w = f64t(rng.normal_tensor((2, 3, 4, 5), 0.0, 1.0, &dev).unwrap());
        for act in [Some((0.2, std::f64::consts::SQRT_2)), None] {
            let ours = |x: &Tensor, b: &Tensor| bias_act(x, b, act).unwrap();
            let theirs = |x: &Tensor, b: &Tensor| {
                let y = x.broadcast_add(&b.reshape((1, 3, 1, 1)).unwrap()).unwrap();
                match act {
                    Some((s, g)) => (y.maximum(&(&y * s).unwrap()).unwrap() * g).unwrap(),
                    None => y,
                }
            };
            assert!(crate::ops::max_abs_diff(&ours(&x, &b), &theirs(&x, &b)) < 1e-14);
            type F<'a> = &'a dyn Fn(&Tensor, &Tensor) -> Tensor;
            let second = |f: F| {
                let (xv, bv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&b).unwrap());
                let y = f(&xv.as_tensor().sqr().unwrap(), &bv.as_tensor().sqr().unwrap());
                let g1 = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let (gx, gb) = (g1.get(xv.as_tensor()).unwrap().clone(), g1.get(bv.as_tensor()).unwrap().clone());
                let total = (gx.sqr().unwrap().sum_all().unwrap() + gb.sqr().unwrap().sum_all().unwrap()).unwrap();
                let g2 = total.backward().unwrap();
                [gx, gb, g2.get(xv.as_tensor()).unwrap().clone(), g2.get(bv.as_tensor()).unwrap().clone()]
            };
            for (a, c) in second(&ours).iter().zip(second(&theirs).iter()) {
                assert!(crate::ops::max_abs_diff(a, c) < 1e-10, "{act:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_abs_diff as max_diff;
    use super::*;
    use candle_core::{DType, Device, Var};

    fn reference(x: &Tensor, slope: f64) -> Tensor {
        x.maximum(&(x * slope).unwrap()).unwrap()
    }

    #[test]
    fn forward_matches_maximum_also_non_contiguous() {
        let x = Tensor::randn(0f32, 1.0, (3, 4, 5, 6), &Device::Cpu).unwrap();
        assert_eq!(max_diff(&leaky_relu(&x, 0.2).unwrap(), &reference(&x, 0.2)), 0.0);
        let xt = x.transpose(1, 3).unwrap();
        assert_eq!(max_diff(&leaky_relu(&xt, 0.2).unwrap(), &reference(&xt, 0.2)), 0.0);
        let x64 = x.to_dtype(DType::F64).unwrap();
        assert_eq!(max_diff(&leaky_relu(&x64, 0.01).unwrap(), &reference(&x64, 0.01)), 0.0);
    }

    #[test]
    fn first_and_second_order_gradients_match_maximum() {
        // A penalty-like objective: p = sum((d/dx sum(v · act(w·x)))²), differentiated
        // with respect to w and v, as a gradient penalty is.
        let x0 = Tensor::randn(0f64, 1.0, (2, 3, 4, 4), &Device::Cpu).unwrap();
        let w0 = Tensor::randn(0f64, 1.0, (1, 3, 1, 1), &Device::Cpu).unwrap();
        let v0 = Tensor::randn(0f64, 1.0, (2, 3, 4, 4), &Device::Cpu).unwrap();
        let eval = move |fast: bool| {
            let (x, w, v) =
                (Var::from_tensor(&x0).unwrap(), Var::from_tensor(&w0).unwrap(), Var::from_tensor(&v0).unwrap());
            let h = x.as_tensor().broadcast_mul(w.as_tensor()).unwrap();
            let a = if fast { leaky_relu(&h, 0.2).unwrap() } else { reference(&h, 0.2) };
            let f = (a * (v.as_tensor() * v.as_tensor()).unwrap()).unwrap().sum_all().unwrap();
            let g = f.backward().unwrap();
            let gx = g.get(x.as_tensor()).unwrap().clone();
            let p = gx.sqr().unwrap().sum_all().unwrap();
            let g2 = p.backward().unwrap();
            (gx, g2.get(w.as_tensor()).unwrap().clone(), g2.get(v.as_tensor()).unwrap().clone())
        };
        crate::enable_second_order_gradients();
        let (a, b) = std::thread::spawn(move || (eval(true), eval(false))).join().unwrap();
        assert!(max_diff(&a.0, &b.0) < 1e-12);
        assert!(max_diff(&a.1, &b.1) < 1e-10);
        assert!(max_diff(&a.2, &b.2) < 1e-10);
        assert!(a.1.abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() > 1e-3, "a non-trivial test");
    }

    #[test]
    fn tanh_first_and_second_order_gradients_match_candle() {
        // p = Σ (d/dx Σ v·tanh(w·x)²)², differentiated with respect to w and v.
        let x0 = Tensor::randn(0f64, 1.0, (2, 3, 4), &Device::Cpu).unwrap();
        let w0 = Tensor::randn(0f64, 1.0, (1, 3, 1), &Device::Cpu).unwrap();
        let v0 = Tensor::randn(0f64, 1.0, (2, 3, 4), &Device::Cpu).unwrap();
        let eval = move |fast: bool| {
            let (x, w, v) =
                (Var::from_tensor(&x0).unwrap(), Var::from_tensor(&w0).unwrap(), Var::from_tensor(&v0).unwrap());
            let h = x.as_tensor().broadcast_mul(w.as_tensor()).unwrap();
            let y = if fast { tanh(&h).unwrap() } else { h.tanh().unwrap() };
            let f = (y.sqr().unwrap() * v.as_tensor()).unwrap().sum_all().unwrap();
            let gx = f.backward().unwrap().get(x.as_tensor()).unwrap().clone();
            let g2 = gx.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            (y, gx, g2.get(w.as_tensor()).unwrap().clone(), g2.get(v.as_tensor()).unwrap().clone())
        };
        crate::enable_second_order_gradients();
        let (a, b) = std::thread::spawn(move || (eval(true), eval(false))).join().unwrap();
        assert!(max_diff(&a.0, &b.0) < 1e-15);
        assert!(max_diff(&a.1, &b.1) < 1e-12);
        assert!(max_diff(&a.2, &b.2) < 1e-10 && max_diff(&a.3, &b.3) < 1e-10);
        assert!(a.2.abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() > 1e-3, "a non-trivial test");
    }
}
