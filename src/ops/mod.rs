//! Convolution entry points used by every model.
//!
//! On the CPU these are meant to dispatch to our own fast kernels (custom ops on the
//! `gemm` crate, with differentiable backward passes); on other devices they call
//! candle's own ops. Until the fast kernels land, both paths use candle's ops.

use candle_core::{Result, Tensor};

/// 2-D convolution, NCHW input `x` (N, C_in, H, W), weight `w` (C_out, C_in, K, K).
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    x.conv2d(w, padding, stride, 1, 1)
}

/// 2-D transposed convolution, NCHW input `x` (N, C_in, H, W), weight `w` (C_in, C_out, K, K)
/// (PyTorch's layout).
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    x.conv_transpose2d(w, padding, output_padding, stride, 1)
}
