//! Layers the model zoo shares, and the parameter store they live in.
//!
//! `layers`: convolutions, linear, batch/layer norm, dropout and their initialisations;
//! `spectral`: spectral normalisation of a weight; `attention`: SAGAN self-attention;
//! `modulated`: batch norm whose scale and shift come from a conditioning input
//! (self-modulation, conditional batch norm); `stddev`: minibatch standard deviation;
//! `resample`: nearest-neighbour upsampling and average pooling, and StyleGAN's blurred forms;
//! `equalized`: equalised-learning-rate linear and conv layers (StyleGAN);
//! `modconv`: StyleGAN2's modulated convolution and the per-pixel noise inputs.

pub mod attention;
pub mod equalized;
pub mod layers;
pub mod modconv;
pub mod modulated;
pub mod params;
pub mod resample;
pub mod spectral;
pub mod stddev;

pub use layers::{BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Init, LayerNorm2d, Linear, Norm};
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
    /// Seed of this pass's stochastic layers (dropout); `None`: they are off (evaluation).
    /// The trainer draws it from the run's RNG, so a resumed run repeats the same masks.
    pub noise: Option<u64>,
}

impl Mode {
    pub const TRAIN: Mode = Mode { bn: BnMode::Train, frozen: false, noise: None };
    pub const FROZEN: Mode = Mode { bn: BnMode::Train, frozen: true, noise: None };
    pub const EVAL: Mode = Mode { bn: BnMode::Eval, frozen: true, noise: None };

    /// This mode with stochastic layers seeded by `seed`.
    pub fn with_noise(self, seed: u64) -> Mode {
        Mode { noise: Some(seed), ..self }
    }

    /// Whether layers with training-time state (spectral norm's power iteration) update it:
    /// in a training pass of the network being trained, not when it is frozen or evaluated.
    pub fn updates_state(&self) -> bool {
        !self.frozen && self.bn != BnMode::Eval
    }
}

/// LeakyReLU, differentiable to any order ([`crate::ops::leaky_relu`]).
pub fn leaky_relu(x: &candle_core::Tensor, slope: f64) -> candle_core::Result<candle_core::Tensor> {
    crate::ops::leaky_relu(x, slope)
}
