//! Layers the model zoo shares, and the parameter store they live in.

pub mod layers;
pub mod params;

pub use layers::{BatchNorm2d, Conv2d, ConvTranspose2d, LayerNorm2d, Linear, Norm};
pub use params::Params;

/// How batch norm behaves in a forward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BnMode {
    /// Batch statistics; running averages updated with momentum 0.1 (PyTorch's default).
    Train,
    /// Running averages.
    Eval,
    /// Batch statistics; running averages updated with this momentum. With momentum
    /// 1/(k+1) on the k-th of several batches this computes "standing statistics":
    /// the plain mean over those batches.
    Accumulate(f64),
}

/// The context of one forward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mode {
    pub bn: BnMode,
    /// Use detached weights: no gradient flows into this network's parameters (the
    /// discriminator during a generator step), which skips their weight gradients.
    pub frozen: bool,
}

impl Mode {
    pub const TRAIN: Mode = Mode { bn: BnMode::Train, frozen: false };
    pub const FROZEN: Mode = Mode { bn: BnMode::Train, frozen: true };
    pub const EVAL: Mode = Mode { bn: BnMode::Eval, frozen: true };
}

/// LeakyReLU, differentiable to any order ([`crate::ops::leaky_relu`]).
pub fn leaky_relu(x: &candle_core::Tensor, slope: f64) -> candle_core::Result<candle_core::Tensor> {
    crate::ops::leaky_relu(x, slope)
}
