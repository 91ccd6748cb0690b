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

/// The kind of window statistic of [`pool3x3`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The largest pixel inside the image (padding never wins, as PyTorch's -inf padding).
    Max,
    /// The mean of the pixels inside the image (PyTorch's `count_include_pad=False`).
    Mean,
}

/// 3x3 pooling of (N, C, H, W) with `stride` and implicit `padding` (< 3) on every side, to
/// (N, C, (H + 2·padding − 3)/stride + 1, likewise for W): Inception-v3's max and average
/// pools, in one parallel pass over the planes on the CPU (candle's pooling ops on a padded
/// copy elsewhere). Forward only: like candle's own pooling with overlapping windows, it has no
/// backward pass (nothing differentiates through the Inception network).
pub fn pool3x3(x: &Tensor, window: Window, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if stride == 0 || padding >= 3 || h + 2 * padding < 3 || w + 2 * padding < 3 {
        bail!("pool3x3: stride {stride} and padding {padding} do not fit a {h}x{w} input");
    }
    if super::is_fast_cpu(x) {
        return x.contiguous()?.apply_op1(Pool3 { window, stride, padding });
    }
    pool3x3_composed(x, window, stride, padding)
}

/// [`pool3x3`] from candle's ops.
fn pool3x3_composed(x: &Tensor, window: Window, stride: usize, padding: usize) -> Result<Tensor> {
    let pad = |t: &Tensor| t.pad_with_zeros(2, padding, padding)?.pad_with_zeros(3, padding, padding);
    match window {
        Window::Max if padding == 0 => x.max_pool2d_with_stride(3, stride),
        Window::Max => {
            // Shifted so that every pixel is at least 1 and zero padding never wins.
            let shift = (x.flatten_all()?.min(0)? - 1.0)?;
            let y = pad(&x.broadcast_sub(&shift)?)?.max_pool2d_with_stride(3, stride)?;
            y.broadcast_add(&shift)
        }
        Window::Mean => {
            let (_, _, h, w) = x.dims4()?;
            let sum = pad(x)?.avg_pool2d_with_stride(3, stride)?;
            let (_, _, oh, ow) = sum.dims4()?;
            let factor: Vec<f64> = (0..oh * ow)
                .map(|k| 9.0 / (inside(k / ow, stride, padding, h) * inside(k % ow, stride, padding, w)) as f64)
                .collect();
            let factor = Tensor::from_vec(factor, (1, 1, oh, ow), x.device())?.to_dtype(x.dtype())?;
            sum.broadcast_mul(&factor)
        }
    }
}

/// The input rows (or columns) of output index `i` that lie inside `0..n`.
fn window_range(i: usize, stride: usize, padding: usize, n: usize) -> std::ops::Range<usize> {
    let lo = (i * stride).saturating_sub(padding);
    let hi = (i * stride + 3).saturating_sub(padding).min(n);
    lo..hi
}

fn inside(i: usize, stride: usize, padding: usize, n: usize) -> usize {
    window_range(i, stride, padding, n).len()
}

struct Pool3 {
    window: Window,
    stride: usize,
    padding: usize,
}

impl Pool3 {
    fn run<T: candle_core::WithDType>(&self, x: &[T], big: (usize, usize), small: (usize, usize)) -> Vec<T> {
        match self.window {
            Window::Max => self.run_with(x, big, small, |a: T, b: T| if b > a { b } else { a }),
            Window::Mean => self.run_with(x, big, small, |a: T, b: T| a + b),
        }
    }

    /// Separably: each input row reduced over the window's columns (once per row, though up to
    /// three output rows use it), then the output rows as element-wise reductions of those
    /// rows; `combine` is max or +, and a mean divides at the end.
    fn run_with<T, F>(&self, x: &[T], (h, w): (usize, usize), (oh, ow): (usize, usize), combine: F) -> Vec<T>
    where
        T: candle_core::WithDType,
        F: Fn(T, T) -> T + Sync + Copy,
    {
        let (s, p) = (self.stride, self.padding);
        // The mean's divisor as a product of a row and a column factor.
        let inv =
            |n: usize, o: usize| -> Vec<T> { (0..o).map(|i| T::from_f64(1.0 / inside(i, s, p, n) as f64)).collect() };
        let (inv_rows, inv_cols) = (inv(h, oh), inv(w, ow));
        let mut out = super::filled_par(x.len() / (h * w) * oh * ow, T::zero());
        out.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(|(o, xs)| {
            let mut rows = vec![T::zero(); h * ow];
            for (src, dst) in xs.chunks_exact(w).zip(rows.chunks_exact_mut(ow)) {
                reduce_row(src, dst, s, p, combine);
            }
            for (i, dst) in o.chunks_exact_mut(ow).enumerate() {
                let r = window_range(i, s, p, h);
                dst.copy_from_slice(&rows[r.start * ow..(r.start + 1) * ow]);
                for k in r.start + 1..r.end {
                    for (d, &v) in dst.iter_mut().zip(&rows[k * ow..(k + 1) * ow]) {
                        *d = combine(*d, v);
                    }
                }
                if self.window == Window::Mean {
                    let f = inv_rows[i];
                    for (d, &c) in dst.iter_mut().zip(&inv_cols) {
                        *d *= c * f;
                    }
                }
            }
        });
        out
    }
}

/// `dst[j]` = `combine` over the three-wide window of output column j in `src` (the pixels
/// inside it). Stride 1 with padding 1 and stride 2 without padding, Inception's cases, have
/// loops the compiler vectorises; the rest takes the general one.
fn reduce_row<T: Copy, F: Fn(T, T) -> T>(src: &[T], dst: &mut [T], stride: usize, padding: usize, combine: F) {
    let w = src.len();
    match (stride, padding) {
        (1, 1) if w >= 2 => {
            dst[0] = combine(src[0], src[1]);
            dst[w - 1] = combine(src[w - 2], src[w - 1]);
            let inner = dst[1..w - 1].iter_mut().zip(src.iter().zip(&src[1..]).zip(&src[2..]));
            for (d, ((&a, &b), &c)) in inner {
                *d = combine(combine(a, b), c);
            }
        }
        (2, 0) => {
            for (j, d) in dst.iter_mut().enumerate() {
                let t = &src[2 * j..2 * j + 3];
                *d = combine(combine(t[0], t[1]), t[2]);
            }
        }
        _ => {
            for (j, d) in dst.iter_mut().enumerate() {
                let c = window_range(j, stride, padding, w);
                *d = src[c.clone()].iter().skip(1).fold(src[c.start], |a, &b| combine(a, b));
            }
        }
    }
}

impl CustomOp1 for Pool3 {
    fn name(&self) -> &'static str {
        "pool-3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let out = |size: usize| (size + 2 * self.padding - 3) / self.stride + 1;
        let (oh, ow) = (out(h), out(w));
        let name = self.name();
        let y = match s {
            CpuStorage::F32(v) => CpuStorage::F32(self.run(super::contiguous_slice(v, l, name)?, (h, w), (oh, ow))),
            CpuStorage::F64(v) => CpuStorage::F64(self.run(super::contiguous_slice(v, l, name)?, (h, w), (oh, ow))),
            _ => bail!("{name}: f32 or f64 only"),
        };
        Ok((y, Shape::from((n, c, oh, ow))))
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

    #[test]
    fn inception_pools_equal_candles_and_ignore_the_padding() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::new(5);
        // Odd and even sizes, negative values (so zero padding would win a max).
        for (h, w) in [(7, 7), (8, 5), (3, 4)] {
            let x = rng.normal_tensor((2, 3, h, w), -0.5, 1.0, &dev).unwrap().to_dtype(DType::F64).unwrap();
            for window in [Window::Max, Window::Mean] {
                for (stride, padding) in [(1, 1), (2, 0), (1, 0), (2, 1)] {
                    let fast = pool3x3(&x, window, stride, padding).unwrap();
                    let composed = pool3x3_composed(&x, window, stride, padding).unwrap();
                    assert_eq!(fast.dims(), composed.dims());
                    assert!(
                        crate::ops::max_abs_diff(&fast, &composed) < 1e-12,
                        "{window:?} {stride} {padding} {h}x{w}"
                    );
                    let f32 = pool3x3(&x.to_dtype(DType::F32).unwrap(), window, stride, padding).unwrap();
                    assert!(crate::ops::max_abs_diff(&f32.to_dtype(DType::F64).unwrap(), &fast) < 1e-6);
                }
            }
        }
        // Closed forms at a corner of a 2x2 input: the max and mean of all four pixels.
        let x = Tensor::new(&[[[[-3.0f64, -1.0], [-2.0, -4.0]]]], &dev).unwrap();
        let at = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap()[0];
        assert_eq!(at(pool3x3(&x, Window::Max, 1, 1).unwrap()), -1.0);
        assert_eq!(at(pool3x3(&x, Window::Mean, 1, 1).unwrap()), -2.5);
        assert!(pool3x3(&x, Window::Max, 1, 3).is_err());
    }
}
