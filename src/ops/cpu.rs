//! Candle custom ops wrapping the CPU kernels of [`super::kernels`].
//!
//! Each op's backward pass is written with the differentiable entry points of [`super`]
//! (which dispatch back to these ops on the CPU), so gradients of gradients are exact:
//!
//! | op                          | grad wrt 1st argument            | grad wrt 2nd argument          |
//! |-----------------------------|----------------------------------|--------------------------------|
//! | `y = conv2d(x, w)`          | `conv_transpose2d(gy, w)`        | `weight_grad(big x, small gy)` |
//! | `y = conv_transpose2d(x, w)`| `conv2d(gy, w)`                  | `weight_grad(big gy, small x)` |
//! | `y = weight_grad(b, s)`     | `conv_transpose2d(s, gy)`        | `conv2d(b, gy)`                |
//!
//! all with the stride and padding of the forward op, and output paddings chosen so that the
//! gradients have exactly the shapes of the arguments.

use super::kernels::{self, Element, Geometry};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::borrow::Cow;

/// Whether a backward pass needs the gradient with respect to `t`: only when `t` depends on
/// a variable. Candle asks custom ops for every argument's gradient and accumulates even the
/// ones nothing reads (the real images' gradient, the frozen critic's weight gradients in the
/// generator step), each a whole convolution; those are skipped.
pub(crate) fn needed(t: &Tensor) -> bool {
    t.track_op()
}

thread_local! {
    /// Set by [`super::input_gradients_only`] while its backward pass runs.
    static INPUT_GRADIENTS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The gradient of a convolution with respect to its weight `w`, from `grad_w`, the
/// weight-gradient convolution: none when `w` is not tracked ([`needed`]), and zeros inside
/// [`super::input_gradients_only`]. Zeros, not none: candle requires a gradient for every
/// tracked node it reaches (a weight computed from a parameter, such as the equalised
/// learning rate's scaled one, would panic its backward pass), and a zero tensor of a
/// weight's size is cheap beside the GEMM it replaces.
pub(crate) fn weight_gradient(w: &Tensor, grad_w: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    if !needed(w) {
        return Ok(None);
    }
    if INPUT_GRADIENTS_ONLY.with(|f| f.get()) {
        return w.zeros_like().map(Some);
    }
    grad_w().map(Some)
}

/// Runs `f` with convolution weight gradients off on this thread (candle runs a backward pass
/// on the calling thread), restoring the previous setting even if `f` panics.
pub(crate) fn with_input_gradients_only<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INPUT_GRADIENTS_ONLY.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(INPUT_GRADIENTS_ONLY.with(|flag| flag.replace(true)));
    f()
}

/// The elements of a tensor in row-major order, borrowed when its layout is contiguous.
fn contiguous<'a, T: Element>(storage: &'a CpuStorage, layout: &Layout) -> Result<Cow<'a, [T]>> {
    let data = T::cpu_storage_as_slice(storage)?;
    Ok(match layout.contiguous_offsets() {
        Some((start, end)) => Cow::Borrowed(&data[start..end]),
        None => Cow::Owned(gather(data, layout)),
    })
}

/// Copies a strided view (any rank, any strides including zero) into a row-major vector.
fn gather<T: Copy>(data: &[T], layout: &Layout) -> Vec<T> {
    let dims = layout.dims();
    let strides = layout.stride();
    let len = layout.shape().elem_count();
    let mut out = Vec::with_capacity(len);
    let Some((&inner, outer_dims)) = dims.split_last() else {
        out.push(data[layout.start_offset()]);
        return out;
    };
    if len == 0 {
        return out;
    }
    let inner_stride = strides[dims.len() - 1];
    let mut index = vec![0; outer_dims.len()];
    let mut base = layout.start_offset();
    loop {
        out.extend((0..inner).map(|i| data[base + i * inner_stride]));
        // Odometer increment of the outer index, last outer dimension fastest.
        let mut d = outer_dims.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            index[d] += 1;
            base += strides[d];
            if index[d] < outer_dims[d] {
                break;
            }
            base -= index[d] * strides[d];
            index[d] = 0;
        }
    }
}

/// A binary op computed by a typed kernel on contiguous row-major data.
trait TypedKernel {
    const NAME: &'static str;

    /// Computes the result and its shape from the two arguments' data and dimensions.
    fn run<T: Element>(&self, a: &[T], a_dims: &[usize], b: &[T], b_dims: &[usize]) -> Result<(Vec<T>, Shape)>;

    /// The `CustomOp2::cpu_fwd` of the op: dtype dispatch plus layout handling.
    fn forward(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => self.forward_typed::<f32>(s1, l1, s2, l2),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => self.forward_typed::<f64>(s1, l1, s2, l2),
            _ => bail!("{}: arguments must be both f32 or both f64", Self::NAME),
        }
    }

    fn forward_typed<T: Element>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = contiguous::<T>(s1, l1)?;
        let b = contiguous::<T>(s2, l2)?;
        let (out, shape) = self.run(&a, l1.dims(), &b, l2.dims())?;
        Ok((T::to_cpu_storage_owned(out), shape))
    }
}

/// `conv2d(x, w)` with `x` (N, C_in, H, W) and `w` (C_out, C_in, KH, KW).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv2d {
    pub stride: usize,
    /// Rows, columns.
    pub padding: (usize, usize),
}

impl TypedKernel for Conv2d {
    const NAME: &'static str = "facegan-conv2d";

    fn run<T: Element>(&self, x: &[T], x_dims: &[usize], w: &[T], w_dims: &[usize]) -> Result<(Vec<T>, Shape)> {
        let (g, n, c_in, c_out) = Geometry::conv2d(x_dims, w_dims, self.stride, self.padding)?;
        let out = kernels::conv2d(x, w, (n, c_in, c_out), &g);
        Ok((out, (n, c_out, g.small.0, g.small.1).into()))
    }
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward(s1, l1, s2, l2)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (s, p) = (self.stride, self.padding);
        let (g, ..) = Geometry::conv2d(x.dims(), w.dims(), s, p)?;
        let grad_x = needed(x).then(|| super::conv_transpose2d_hw(grad, w, s, p, g.output_padding()));
        let grad_w = weight_gradient(w, || super::conv2d_weight_grad_hw(x, grad, g.kernel, s, p))?;
        Ok((grad_x.transpose()?, grad_w))
    }
}

/// `max(0, conv2d(x, w) + bias)`, forward only (Inception's layers, whose batch norm is folded
/// into `w` and `bias`): the bias and ReLU are applied to each band of output while it is in
/// cache ([`kernels::conv2d_bias_relu`]) rather than in a pass of their own.
#[derive(Clone, Debug)]
pub(crate) struct Conv2dBiasRelu {
    pub conv: Conv2d,
    pub bias: Vec<f64>,
}

impl TypedKernel for Conv2dBiasRelu {
    const NAME: &'static str = "facegan-conv2d-bias-relu";

    fn run<T: Element>(&self, x: &[T], x_dims: &[usize], w: &[T], w_dims: &[usize]) -> Result<(Vec<T>, Shape)> {
        let (g, n, c_in, c_out) = Geometry::conv2d(x_dims, w_dims, self.conv.stride, self.conv.padding)?;
        if self.bias.len() != c_out {
            bail!("{}: {c_out} output channels but {} biases", Self::NAME, self.bias.len());
        }
        let bias: Vec<T> = self.bias.iter().map(|&b| T::from_f64(b)).collect();
        let out = kernels::conv2d_bias_relu(x, w, (n, c_in, c_out), &g, &bias);
        Ok((out, (n, c_out, g.small.0, g.small.1).into()))
    }
}

impl CustomOp2 for Conv2dBiasRelu {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward(s1, l1, s2, l2)
    }
}

/// `conv_transpose2d(x, w)` with `x` (N, C_in, H, W), `w` (C_in, C_out, KH, KW) and per-axis
/// output padding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvTranspose2d {
    pub stride: usize,
    /// Rows, columns.
    pub padding: (usize, usize),
    pub output_padding: (usize, usize),
}

impl TypedKernel for ConvTranspose2d {
    const NAME: &'static str = "facegan-conv-transpose2d";

    fn run<T: Element>(&self, x: &[T], x_dims: &[usize], w: &[T], w_dims: &[usize]) -> Result<(Vec<T>, Shape)> {
        let (g, n, c_in, c_out) =
            Geometry::conv_transpose2d(x_dims, w_dims, self.stride, self.padding, self.output_padding)?;
        let out = kernels::conv_transpose2d(x, w, (n, c_in, c_out), &g);
        Ok((out, (n, c_out, g.big.0, g.big.1).into()))
    }
}

impl CustomOp2 for ConvTranspose2d {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward(s1, l1, s2, l2)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (s, p) = (self.stride, self.padding);
        let (_, _, kh, kw) = w.dims4()?;
        let grad_x = needed(x).then(|| super::conv2d_hw(grad, w, s, p));
        let grad_w = weight_gradient(w, || super::conv2d_weight_grad_hw(grad, x, (kh, kw), s, p))?;
        Ok((grad_x.transpose()?, grad_w))
    }
}

/// The weight gradient of a convolution, `weight_grad(big, small)` with `big` (N, C_big, H, W)
/// and `small` (N, C_small, H', W') the size of `conv2d(big, kernel)`; the result is
/// (C_small, C_big, KH, KW). See [`super::conv2d_weight_grad`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct WeightGrad {
    pub kernel: (usize, usize),
    pub stride: usize,
    /// Rows, columns.
    pub padding: (usize, usize),
}

impl TypedKernel for WeightGrad {
    const NAME: &'static str = "facegan-conv2d-weight-grad";

    fn run<T: Element>(
        &self,
        big: &[T],
        big_dims: &[usize],
        small: &[T],
        small_dims: &[usize],
    ) -> Result<(Vec<T>, Shape)> {
        let (g, n, c_big, c_small) =
            Geometry::weight_grad(big_dims, small_dims, self.kernel, self.stride, self.padding)?;
        let out = kernels::weight_grad(big, small, (n, c_big, c_small), &g);
        Ok((out, (c_small, c_big, g.kernel.0, g.kernel.1).into()))
    }
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward(s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        big: &Tensor,
        small: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (s, p) = (self.stride, self.padding);
        let (g, ..) = Geometry::weight_grad(big.dims(), small.dims(), self.kernel, s, p)?;
        // The result is linear in each argument: as a function of `small` it is the adjoint of
        // `conv2d(big, ·)`, as a function of `big` the adjoint of `conv_transpose2d(small, ·)`.
        let grad_big = needed(big).then(|| super::conv_transpose2d_hw(small, grad, s, p, g.output_padding()));
        let grad_small = needed(small).then(|| super::conv2d_hw(big, grad, s, p));
        Ok((grad_big.transpose()?, grad_small.transpose()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::WithDType;

    #[test]
    fn gather_matches_candle_contiguous() -> Result<()> {
        let t = Tensor::arange(0f32, 120., &candle_core::Device::Cpu)?.reshape((2, 3, 4, 5))?;
        for view in [
            t.transpose(1, 3)?,
            t.narrow(2, 1, 2)?.transpose(0, 1)?,
            t.permute((3, 1, 0, 2))?.narrow(0, 2, 3)?,
            t.narrow(1, 1, 1)?.broadcast_as((2, 3, 4, 5))?,
        ] {
            let (storage, layout) = view.storage_and_layout();
            let candle_core::Storage::Cpu(cpu) = &*storage else { unreachable!() };
            let data = gather(f32::cpu_storage_as_slice(cpu)?, layout);
            assert_eq!(data, view.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(())
    }
}
