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

use candle_core::{bail, Layout, Result, Shape};

/// (outer = N, channels = C, inner = H·W) of a shape.
fn split(shape: &Shape) -> (usize, usize, usize) {
    let d = shape.dims();
    (d[0], d[1], d[2..].iter().product())
}

fn contiguous<'a, T>(s: &'a [T], l: &Layout, op: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => bail!("{op}: input not contiguous"),
    }
}

/// Evaluates `$body` on the f32 or f64 contents (contiguous slices) of CPU storages that
/// must all have one dtype, wrapping the resulting vector back into a `CpuStorage`.
macro_rules! dispatch {
    ($name:expr, ($($s:ident, $l:ident),+), |$($v:ident),+| $body:expr) => {
        match ($($s),+) {
            ($(CpuStorage::F32($v)),+) => {
                $(let $v = super::contiguous($v, $l, $name)?;)+
                CpuStorage::F32($body)
            }
            ($(CpuStorage::F64($v)),+) => {
                $(let $v = super::contiguous($v, $l, $name)?;)+
                CpuStorage::F64($body)
            }
            _ => bail!("{}: f32 or f64 inputs, all the same", $name),
        }
    };
}
use dispatch;
