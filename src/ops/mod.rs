//! Convolution entry points used by every model.
//!
//! On the CPU, for f32 and f64 tensors, these run our own kernels (im2col / col2im around one
//! `gemm` call per group of batch items, parallelised with rayon), wrapped as candle custom ops
//! whose backward passes are themselves written with these functions, so gradients of any order
//! are exact (as needed by gradient penalties, with `CANDLE_GRAD_DO_NOT_DETACH=1`). On other
//! devices and dtypes they call candle's own ops.
//!
//! Weights use PyTorch's layouts: `(C_out, C_in, KH, KW)` for [`conv2d`] and
//! `(C_in, C_out, KH, KW)` for [`conv_transpose2d`].

pub(crate) mod activation;
pub mod channel;
mod cpu;
pub(crate) mod eager;
mod gather;
mod kernels;
mod modulate;
mod norm;
mod phases;
mod pool;
mod resample;
mod softmax;

pub use activation::{bias_act, leaky_relu, leaky_relu_gain, tanh};
pub use channel::channel_affine;
pub use modulate::{dot_nc, scale_nc};
pub use norm::{batch_norm, layer_norm};
pub use pool::{max_pool2x, pool3x3, Window};
pub use resample::{blur121, sum_pool2x_scaled, upsample2x_scaled};
pub use softmax::{log_softmax, softmax_last};

/// Runs `f`, typically the first backward pass of a gradient penalty, without the gradients
/// of [`conv2d`] and [`conv_transpose2d`] (and their `_hw` forms) with respect to their
/// weights, the second argument (they come out as zeros): candle's backward computes the
/// gradient of every tracked tensor, and a penalty's inner backward reads only its input's
/// (R1's images, the path length's ws), so each convolution's weight-gradient GEMM would be
/// computed and dropped.
/// The graph of the input gradient still depends on the weights, so the outer backward
/// through it is unchanged.
///
/// Only for a backward pass whose wanted gradients do not reach a convolution through its
/// weight argument: right for every family's layers, whose convolution weights are
/// parameters (scaled or normalised) and never computed from the data or the latents (the
/// grouped reference form of a modulated convolution, whose weights are per-sample styles,
/// would be wrong inside it; only its test uses it). The finite-difference checks of
/// tests/second_order.rs run through it (the zoo's layers under an input-gradient penalty,
/// R1 through StyleGAN2's discriminator, the path length through its generator), so a layer
/// among those that broke the assumption would fail them; a new layer needs such a check.
pub fn input_gradients_only<R>(f: impl FnOnce() -> R) -> R {
    cpu::with_input_gradients_only(f)
}

/// Largest absolute element difference of two tensors (unit tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    d.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}
#[cfg(test)]
mod tests;

use candle_core::{bail, DType, Result, Tensor};
use rayon::prelude::*;

/// `len` copies of `value` (a zero), written by the thread pool. The custom ops fill their
/// outputs in parallel afterwards; `vec![0; len]` would zero them on the calling thread
/// first (a single-threaded pass over every activation, visible in the profile of a
/// training step).
pub(crate) fn filled_par<T: Copy + Send + Sync>(len: usize, value: T) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut().par_chunks_mut(1 << 14).for_each(|c| {
        for x in c {
            x.write(value);
        }
    });
    // SAFETY: the loop above initialised all `len` elements of the spare capacity.
    unsafe { v.set_len(len) };
    v
}

/// The elements of a contiguous CPU storage slice under `l`; `op` names the op in the error.
pub(crate) fn contiguous_slice<'a, T>(s: &'a [T], l: &candle_core::Layout, op: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => bail!("{op}: input not contiguous"),
    }
}

/// Whether our CPU kernels handle this tensor (f32 or f64 on the CPU).
pub(crate) fn is_fast_cpu(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// Whether the fast CPU kernels handle these arguments.
pub(crate) fn use_cpu_kernels(a: &Tensor, b: &Tensor) -> bool {
    a.device().is_cpu() && b.device().is_cpu() && a.dtype() == b.dtype() && matches!(a.dtype(), DType::F32 | DType::F64)
}

/// 2-D convolution, NCHW input `x` (N, C_in, H, W), weight `w` (C_out, C_in, K, K).
///
/// The output is (N, C_out, (H + 2·padding − K) / stride + 1, (W + 2·padding − K) / stride + 1).
/// Non-square kernels are supported too.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    conv2d_hw(x, w, stride, (padding, padding))
}

/// [`conv2d`] with separate zero paddings for the rows and the columns, e.g. (0, 3) for a 1x7
/// kernel that keeps the size (Inception-v3), without a padded copy of the input.
pub fn conv2d_hw(x: &Tensor, w: &Tensor, stride: usize, padding: (usize, usize)) -> Result<Tensor> {
    if use_cpu_kernels(x, w) {
        return x.apply_op2(w, cpu::Conv2d { stride, padding });
    }
    let (ph, pw) = padding;
    if ph == pw {
        return x.conv2d(w, ph, stride, 1, 1);
    }
    x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?.conv2d(w, 0, stride, 1, 1)
}

/// `max(0, conv2d_hw(x, w) + b)` with `b` (C_out,): forward only (no gradient), for networks
/// that are only evaluated (Inception); on the CPU the bias and ReLU cost no pass of their own.
pub fn conv2d_bias_relu(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, padding: (usize, usize)) -> Result<Tensor> {
    if use_cpu_kernels(x, w) {
        let bias = b.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        return x.apply_op2_no_bwd(w, &cpu::Conv2dBiasRelu { conv: cpu::Conv2d { stride, padding }, bias });
    }
    bias_act(&conv2d_hw(x, w, stride, padding)?, b, Some((0.0, 1.0)))
}

/// 2-D transposed convolution, NCHW input `x` (N, C_in, H, W), weight `w` (C_in, C_out, K, K)
/// (PyTorch's layout).
///
/// The output is (N, C_out, (H − 1)·stride − 2·padding + K + output_padding, likewise for W);
/// `output_padding` must be smaller than `stride`.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    conv_transpose2d_padded(x, w, stride, padding, (output_padding, output_padding))
}

/// [`conv_transpose2d`] with separate output paddings for the height and the width, as needed
/// for the input gradient of a [`conv2d`] whose input is not square.
pub fn conv_transpose2d_padded(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    output_padding: (usize, usize),
) -> Result<Tensor> {
    conv_transpose2d_hw(x, w, stride, (padding, padding), output_padding)
}

/// [`conv_transpose2d_padded`] with separate paddings for the rows and the columns too (the
/// input gradient of [`conv2d_hw`]).
pub fn conv_transpose2d_hw(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: (usize, usize),
    output_padding: (usize, usize),
) -> Result<Tensor> {
    let (oph, opw) = output_padding;
    if oph >= stride.max(1) || opw >= stride.max(1) {
        bail!("conv_transpose2d: output padding {output_padding:?} must be smaller than stride {stride}");
    }
    if use_cpu_kernels(x, w) {
        return x.apply_op2(w, cpu::ConvTranspose2d { stride, padding, output_padding });
    }
    // Candle has one padding and one output padding: transpose with the smaller padding and the
    // larger output padding, and crop each axis. This is exact because an output pixel does not
    // depend on the output size.
    let p = padding.0.min(padding.1);
    let (_, _, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let out = |n: usize, k: usize, p: usize, op: usize| ((n - 1) * stride + k + op).checked_sub(2 * p);
    let (Some(oh), Some(ow)) = (out(h, kh, padding.0, oph), out(wd, kw, padding.1, opw)) else {
        bail!("conv_transpose2d: padding {padding:?} is too large for input {h}x{wd} and kernel {kh}x{kw}");
    };
    let y = x.conv_transpose2d(w, p, oph.max(opw), stride, 1)?;
    y.narrow(2, padding.0 - p, oh)?.narrow(3, padding.1 - p, ow)
}

/// The gradient of a convolution with respect to its weight, as a differentiable op.
///
/// `big` is (N, C_big, H, W) and `small` is (N, C_small, H', W') with H' × W' the output size
/// of a `conv2d` of `big` with this kernel size, stride and padding. The result, of shape
/// (C_small, C_big, KH, KW), is
/// `out[a, b, i, j] = Σ_{n,y,x} small[n, a, y, x] · big[n, b, y·stride + i − padding, x·stride + j − padding]`
/// (out-of-range pixels of `big` read as zero). So for `y = conv2d(x, w)` the weight gradient
/// is `conv2d_weight_grad(x, grad_y, ..)`, and for `y = conv_transpose2d(x, w)` it is
/// `conv2d_weight_grad(grad_y, x, ..)`.
pub fn conv2d_weight_grad(
    big: &Tensor,
    small: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_weight_grad_hw(big, small, kernel, stride, (padding, padding))
}

/// [`conv2d_weight_grad`] with separate paddings for the rows and the columns.
pub fn conv2d_weight_grad_hw(
    big: &Tensor,
    small: &Tensor,
    kernel: (usize, usize),
    stride: usize,
    padding: (usize, usize),
) -> Result<Tensor> {
    if use_cpu_kernels(big, small) {
        return big.apply_op2(small, cpu::WeightGrad { kernel, stride, padding });
    }
    // Candle's formulation: a convolution over the batch dimension, dilated by the stride.
    let big = big.pad_with_zeros(2, padding.0, padding.0)?.pad_with_zeros(3, padding.1, padding.1)?;
    let out = big.transpose(0, 1)?.conv2d(&small.transpose(0, 1)?, 0, 1, stride, 1)?.transpose(0, 1)?;
    out.narrow(2, 0, kernel.0)?.narrow(3, 0, kernel.1)
}
