//! Batch and layer normalisation as fused ops.
//!
//! Written with candle ops, a normalisation is a dozen graph nodes (sums, broadcasts, a
//! subtraction, a square, the affine step), and candle's backward pass then makes about
//! twenty single-threaded passes over each normalised activation (every node's gradient is a
//! fresh zero tensor plus an add). Here each is one custom op whose backward pass is two more:
//! the input gradient `γ/σ · (g − mean(g) − x̂ · mean(g·x̂))` and the scale and shift gradients
//! `Σ g·x̂`, `Σ g`, each a parallel reduction plus at most one write pass.
//!
//! The backward ops are differentiable once more, so gradient penalties (second-order
//! gradients) stay exact; their own derivatives are constants, so third-order gradients are
//! not available (nothing in facegan takes them). Off the CPU, and for other dtypes, the same
//! formulas run as candle ops, which candle differentiates to any order.

mod batch;
mod layer;

pub use batch::batch_norm;
pub use layer::layer_norm;

use candle_core::{CustomOp2, CustomOp3, Result, Shape, Tensor};

/// (outer = N, channels = C, inner = H·W) of a shape.
fn split(shape: &Shape) -> (usize, usize, usize) {
    let d = shape.dims();
    (d[0], d[1], d[2..].iter().product())
}

/// `(Σ a, Σ a·b)` in f64 (with `b = None`: `(Σ a, Σ a²)`), over eight interleaved
/// accumulators: a single running f64 sum is a chain of dependent additions (about four
/// cycles per element), eight independent ones vectorise. With the memory-order walk of
/// `batch::channel_moments`: 15.5-16.2 → 9.9-11.3 ms for the statistics of a 64×128×32×32
/// activation on one thread.
fn sums<T: candle_core::WithDType>(a: &[T], b: Option<&[T]>) -> (f64, f64) {
    match b {
        None => lanes(a, a, |u, _| u * u),
        Some(b) => lanes(a, &b[..a.len()], |u, v| u * v.to_f64()),
    }
}

#[inline(always)]
fn lanes<T: candle_core::WithDType>(a: &[T], b: &[T], product: impl Fn(f64, T) -> f64) -> (f64, f64) {
    const LANES: usize = 8;
    let (mut s, mut p) = ([0f64; LANES], [0f64; LANES]);
    let ((ca, ra), (cb, rb)) = (a.as_chunks::<LANES>(), b.as_chunks::<LANES>());
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..LANES {
            let u = x[i].to_f64();
            s[i] += u;
            p[i] += product(u, y[i]);
        }
    }
    for (i, (x, &y)) in ra.iter().zip(rb).enumerate() {
        let u = x.to_f64();
        s[i] += u;
        p[i] += product(u, y);
    }
    (s.iter().sum(), p.iter().sum())
}

/// Evaluates `$body` on the f32 or f64 contents (contiguous slices) of CPU storages that
/// must all have one dtype, wrapping the resulting vector back into a `CpuStorage`.
macro_rules! dispatch {
    ($name:expr, ($($s:ident, $l:ident),+), |$($v:ident),+| $body:expr) => {
        match ($($s),+) {
            ($(CpuStorage::F32($v)),+) => {
                $(let $v = crate::ops::contiguous_slice($v, $l, $name)?;)+
                CpuStorage::F32($body)
            }
            ($(CpuStorage::F64($v)),+) => {
                $(let $v = crate::ops::contiguous_slice($v, $l, $name)?;)+
                CpuStorage::F64($body)
            }
            _ => bail!("{}: f32 or f64 inputs, all the same", $name),
        }
    };
}
use dispatch;

/// `LeakyReLU(v)` with slope `k` (0: ReLU; 1: the identity, for `act = None`; see
/// [`negative_slope`]). Branch-free, so that the loops calling it vectorise.
#[inline(always)]
fn activate<T: candle_core::WithDType>(v: T, k: T) -> T {
    v * if v > T::zero() { T::one() } else { k }
}

/// The slope [`activate`] takes for an optional LeakyReLU.
fn negative_slope<T: candle_core::WithDType>(act: Option<f64>) -> T {
    T::from_f64(act.unwrap_or(1.0))
}

/// The composed-ops path's activation: candle's `maximum` formulation of LeakyReLU.
fn composed_activation(y: Tensor, act: Option<f64>) -> Result<Tensor> {
    match act {
        Some(slope) => y.maximum(&(&y * slope)?),
        None => Ok(y),
    }
}

/// The backward pass of a normalisation op `y = norm(x, γ, β)` with output gradient `grad`:
/// `dx = input_grad(grad, x, γ)` and `[dγ; dβ] = param_grad(grad, x)` (a (2, C) tensor), each
/// computed only when some argument needs it.
/// With `act = Some(slope)` the op's output `res` went through a LeakyReLU (slope 0: ReLU),
/// whose backward pass comes first.
fn backward(
    (x, gamma, beta): (&Tensor, &Tensor, &Tensor),
    (res, grad): (&Tensor, &Tensor),
    act: Option<f64>,
    input_grad: impl CustomOp3 + Send + Sync + 'static,
    param_grad: impl CustomOp2 + Send + Sync + 'static,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let needed = crate::ops::cpu::needed;
    let grad = match act {
        Some(slope) => crate::ops::activation::leaky_relu_grad(grad, res, slope)?,
        None => grad.contiguous()?,
    };
    let dx = needed(x).then(|| grad.apply_op3(x, gamma, input_grad)).transpose()?;
    let (mut dgamma, mut dbeta) = (None, None);
    if needed(gamma) || needed(beta) {
        let both = grad.apply_op2(x, param_grad)?;
        dgamma = needed(gamma).then(|| both.get(0)?.reshape(gamma.shape())).transpose()?;
        dbeta = needed(beta).then(|| both.get(1)?.reshape(beta.shape())).transpose()?;
    }
    Ok((dx, dgamma, dbeta))
}

/// Checks shared by the batch- and layer-norm tests: the fast op against its composed
/// candle-op reference, as `y = norm(x, γ, β)` with eps 1e-5.
#[cfg(test)]
mod checks {
    use crate::ops::max_abs_diff as diff;
    use candle_core::{DType, Device, Tensor, Var};

    pub(super) type Norm = fn(&Tensor, &Tensor, &Tensor) -> Tensor;

    /// LeakyReLU as candle's `maximum(y, slope·y)`, the reference for the fused activation.
    pub(super) fn leaky(y: Tensor, slope: f64) -> Tensor {
        super::composed_activation(y, Some(slope)).unwrap()
    }

    pub(super) fn rand(shape: &[usize], mean: f64) -> Tensor {
        Tensor::randn(mean, 1.0, shape, &Device::Cpu).unwrap()
    }

    /// Outputs agree in f64 (1e-12) and in f32 on a non-contiguous input (1e-4), including
    /// shapes with a single element per channel or per sample.
    pub(super) fn forward_matches(fast: Norm, reference: Norm) {
        for shape in [[4, 3, 5, 6], [1, 2, 1, 1], [3, 5, 1, 7]] {
            let x = rand(&shape, 0.7);
            let (gamma, beta) = (rand(&[shape[1]], 1.0), rand(&[shape[1]], 0.0));
            assert!(diff(&fast(&x, &gamma, &beta), &reference(&x, &gamma, &beta)) < 1e-12, "{shape:?}");
            let xt = x.to_dtype(DType::F32).unwrap().transpose(2, 3).unwrap();
            let (g32, b32) = (gamma.to_dtype(DType::F32).unwrap(), beta.to_dtype(DType::F32).unwrap());
            assert!(diff(&fast(&xt, &g32, &b32), &reference(&xt, &g32, &b32)) < 1e-4, "{shape:?}");
        }
    }

    /// A gradient-penalty-like objective: first-order gradients of `Σ v·norm(x)²` with respect
    /// to x, γ, β, then the gradients of `Σ (∂/∂x)² + Σ (∂/∂γ)²` (through both backward ops)
    /// with respect to x, γ, β and v.
    fn penalty_grads(inputs: &[Tensor], norm: Norm) -> Vec<Tensor> {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let [xt, gt, bt, vt] = [0, 1, 2, 3].map(|i| vars[i].as_tensor());
        // The square makes the second derivative non-trivial.
        let f = norm(xt, gt, bt).sqr().unwrap().mul(vt).unwrap().sum_all().unwrap();
        let g = f.backward().unwrap();
        let first: Vec<Tensor> = [xt, gt, bt].iter().map(|t| g.get(t).unwrap().clone()).collect();
        let p = (first[0].sqr().unwrap().sum_all().unwrap() + first[1].sqr().unwrap().sum_all().unwrap()).unwrap();
        let g2 = p.backward().unwrap();
        let second = [xt, gt, bt, vt].into_iter().map(|t| g2.get(t).unwrap().clone());
        first.into_iter().chain(second).collect()
    }

    /// First- and second-order gradients agree to 1e-9 (relative to their size).
    pub(super) fn gradients_match(fast: Norm, reference: Norm) {
        crate::enable_second_order_gradients();
        let inputs = vec![rand(&[3, 2, 4, 5], 0.3), rand(&[2], 1.0), rand(&[2], 0.0), rand(&[3, 2, 4, 5], 0.0)];
        let (a, b) = std::thread::spawn(move || (penalty_grads(&inputs, fast), penalty_grads(&inputs, reference)))
            .join()
            .unwrap();
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            assert!(scale > 1e-6, "gradient {i} is trivially zero");
            assert!(diff(a, b) < 1e-9 * scale.max(1.0), "gradient {i}: {}", diff(a, b));
        }
    }
}

#[cfg(test)]
mod sums_tests {
    #[test]
    fn sums_match_plain_loops_on_every_tail_length() {
        for n in [0usize, 1, 7, 8, 9, 23, 64] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() + 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let s: f64 = a.iter().map(|&v| v as f64).sum();
            let sq: f64 = a.iter().map(|&v| v as f64 * v as f64).sum();
            let ab: f64 = a.iter().zip(&b).map(|(&u, &v)| u as f64 * v as f64).sum();
            let (s1, sq1) = super::sums(&a, None);
            let (s2, ab2) = super::sums(&a, Some(&b));
            for (got, want) in [(s1, s), (sq1, sq), (s2, s), (ab2, ab)] {
                assert!((got - want).abs() <= 1e-12 * (1.0 + want.abs()), "n = {n}: {got} vs {want}");
            }
        }
    }
}
