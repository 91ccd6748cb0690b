//! Convolution, transposed convolution, linear, batch and layer norm, dropout.

use super::spectral::SpectralNorm;
use super::{params::Params, BnMode, Mode};
use crate::ops;
use crate::ops::channel::{channel_affine, per_channel};
use crate::rng::Rng;
use candle_core::{Result, Tensor, Var, D};

/// The DCGAN initialisation: weights from N(0, 0.02).
pub const DCGAN_INIT_STD: f64 = 0.02;

/// How a layer's weight is initialised (biases start at 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// N(0, std²); DCGAN uses 0.02.
    Normal(f64),
    /// Glorot/Xavier uniform with a gain: U(−a, a), a = gain·sqrt(6 / (fan_in + fan_out)),
    /// fans counting the kernel's taps (PyTorch's `xavier_uniform_`). The SN-GAN ResNets use
    /// gain sqrt(2) in their blocks and 1 elsewhere.
    XavierUniform(f64),
}

/// How a weighted layer is built.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerOpts {
    pub bias: bool,
    pub init: Init,
    /// Spectral normalisation of the weight (Miyato et al. 2018).
    pub spectral: bool,
}

impl LayerOpts {
    /// No bias, N(0, 0.02), no spectral norm: the DCGAN layers.
    pub const DCGAN: LayerOpts = LayerOpts { bias: false, init: Init::Normal(DCGAN_INIT_STD), spectral: false };

    pub fn new(bias: bool, init: Init, spectral: bool) -> Self {
        Self { bias, init, spectral }
    }
}

/// A weight of `shape` whose fans are `fan_in` and `fan_out`, initialised by `init`.
fn init_weight(
    p: &mut Params,
    rng: &mut Rng,
    name: &str,
    shape: &[usize],
    (fan_in, fan_out): (usize, usize),
    init: Init,
) -> Result<Var> {
    match init {
        Init::Normal(std) => p.normal(name, shape, 0.0, std, rng),
        Init::XavierUniform(gain) => {
            let a = gain * (6.0 / (fan_in + fan_out) as f64).sqrt();
            crate::nn::params::check_budget(shape.iter().product())?;
            let t = rng.uniform_tensor(shape, -a, a, &p.device.clone())?;
            p.param(name, t)
        }
    }
}

/// The weight a forward pass uses: the variable (detached when the network is frozen),
/// divided by its spectral norm when the layer has one.
fn layer_weight(w: &Var, sn: &Option<SpectralNorm>, mode: Mode) -> Result<Tensor> {
    let w = weight(w, mode);
    match sn {
        Some(sn) => sn.normalise(&w, mode),
        None => Ok(w),
    }
}

/// The variable as a forward pass uses it: detached when the network is frozen.
pub(crate) fn weight(v: &Var, mode: Mode) -> Tensor {
    if mode.frozen {
        v.as_tensor().detach()
    } else {
        v.as_tensor().clone()
    }
}

fn add_channel_bias(x: &Tensor, b: &Option<Var>, mode: Mode) -> Result<Tensor> {
    match b {
        Some(b) => x.add(&per_channel(&weight(b, mode), x)?),
        None => Ok(x.clone()),
    }
}

pub struct Conv2d {
    pub w: Var,
    pub b: Option<Var>,
    pub stride: usize,
    pub padding: usize,
    pub sn: Option<SpectralNorm>,
}

impl Conv2d {
    /// A DCGAN convolution (N(0, 0.02), optional bias, no spectral norm).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: &mut Params,
        rng: &mut Rng,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Self> {
        Self::with(p, rng, name, (cin, cout, k), stride, padding, LayerOpts { bias, ..LayerOpts::DCGAN })
    }

    /// A convolution with `(cin, cout, kernel)`, built as `opts` says.
    pub fn with(
        p: &mut Params,
        rng: &mut Rng,
        name: &str,
        (cin, cout, k): (usize, usize, usize),
        stride: usize,
        padding: usize,
        opts: LayerOpts,
    ) -> Result<Self> {
        let fans = (cin * k * k, cout * k * k);
        let w = init_weight(p, rng, &format!("{name}.weight"), &[cout, cin, k, k], fans, opts.init)?;
        let b = if opts.bias { Some(p.zeros(&format!("{name}.bias"), &[cout])?) } else { None };
        let sn = match opts.spectral {
            true => Some(SpectralNorm::new(p, rng, name, cout, cin * k * k)?),
            false => None,
        };
        Ok(Self { w, b, stride, padding, sn })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = ops::conv2d(x, &layer_weight(&self.w, &self.sn, mode)?, self.stride, self.padding)?;
        add_channel_bias(&y, &self.b, mode)
    }
}

pub struct ConvTranspose2d {
    pub w: Var,
    pub b: Option<Var>,
    pub stride: usize,
    pub padding: usize,
}

impl ConvTranspose2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: &mut Params,
        rng: &mut Rng,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Self> {
        let w = p.normal(&format!("{name}.weight"), &[cin, cout, k, k], 0.0, DCGAN_INIT_STD, rng)?;
        let b = if bias { Some(p.zeros(&format!("{name}.bias"), &[cout])?) } else { None };
        Ok(Self { w, b, stride, padding })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = ops::conv_transpose2d(x, &weight(&self.w, mode), self.stride, self.padding, 0)?;
        add_channel_bias(&y, &self.b, mode)
    }
}

pub struct Linear {
    pub w: Var,
    pub b: Option<Var>,
    pub sn: Option<SpectralNorm>,
}

impl Linear {
    /// A linear layer with N(0, 0.02) weights.
    pub fn new(p: &mut Params, rng: &mut Rng, name: &str, cin: usize, cout: usize, bias: bool) -> Result<Self> {
        Self::with(p, rng, name, cin, cout, LayerOpts { bias, ..LayerOpts::DCGAN })
    }

    pub fn with(p: &mut Params, rng: &mut Rng, name: &str, cin: usize, cout: usize, opts: LayerOpts) -> Result<Self> {
        let w = init_weight(p, rng, &format!("{name}.weight"), &[cout, cin], (cin, cout), opts.init)?;
        let b = if opts.bias { Some(p.zeros(&format!("{name}.bias"), &[cout])?) } else { None };
        let sn = match opts.spectral {
            true => Some(SpectralNorm::new(p, rng, name, cout, cin)?),
            false => None,
        };
        Ok(Self { w, b, sn })
    }

    /// (N, cin) -> (N, cout).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = x.matmul(&layer_weight(&self.w, &self.sn, mode)?.t()?)?;
        match &self.b {
            Some(b) => y.broadcast_add(&weight(b, mode)),
            None => Ok(y),
        }
    }
}

/// Batch norm over (N, H, W) per channel, with learnable scale and shift; the DCGAN
/// recipe initialises the scale from N(1, 0.02) and the shift at 0.
pub struct BatchNorm2d {
    pub gamma: Var,
    pub beta: Var,
    pub running_mean: Var,
    pub running_var: Var,
    pub eps: f64,
}

impl BatchNorm2d {
    pub fn new(p: &mut Params, rng: &mut Rng, name: &str, c: usize) -> Result<Self> {
        let gamma = p.normal(&format!("{name}.weight"), &[c], 1.0, DCGAN_INIT_STD, rng)?;
        let beta = p.zeros(&format!("{name}.bias"), &[c])?;
        Self::with_affine(p, name, gamma, beta)
    }

    /// Batch norm without learnable scale and shift (γ = 1, β = 0, not parameters), for
    /// layers that supply their own ([`super::modulated::ModulatedBatchNorm`]).
    pub fn new_plain(p: &mut Params, name: &str, c: usize) -> Result<Self> {
        let dev = p.device.clone();
        let gamma = Var::from_tensor(&Tensor::ones(c, p.dtype, &dev)?)?;
        let beta = Var::from_tensor(&Tensor::zeros(c, p.dtype, &dev)?)?;
        Self::with_affine(p, name, gamma, beta)
    }

    /// The running-statistics buffers around a given scale and shift.
    fn with_affine(p: &mut Params, name: &str, gamma: Var, beta: Var) -> Result<Self> {
        let (c, dev) = (gamma.elem_count(), p.device.clone());
        let running_mean =
            p.buffer(&format!("{name}.running_mean"), Tensor::zeros(c, candle_core::DType::F32, &dev)?)?;
        let running_var = p.buffer(&format!("{name}.running_var"), Tensor::ones(c, candle_core::DType::F32, &dev)?)?;
        Ok(Self { gamma, beta, running_mean, running_var, eps: 1e-5 })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_act(x, mode, None)
    }

    /// [`Self::forward`] followed by a LeakyReLU with slope `act` (0: ReLU) when given, fused
    /// into the normalisation op in training mode (one graph node and one pass fewer).
    /// (N, C) inputs are normalised per feature (BatchNorm1d).
    pub fn forward_act(&self, x: &Tensor, mode: Mode, act: Option<f64>) -> Result<Tensor> {
        if x.rank() == 2 {
            let (n, c) = x.dims2()?;
            return self.forward_act(&x.reshape((n, c, 1, 1))?, mode, act)?.reshape((n, c));
        }
        let c = x.dim(1)?;
        let gamma = weight(&self.gamma, mode).reshape((1, c, 1, 1))?;
        let beta = weight(&self.beta, mode).reshape((1, c, 1, 1))?;
        let momentum = match mode.bn {
            BnMode::Eval => {
                let rm = self.running_mean.as_tensor().reshape((1, c, 1, 1))?;
                let rv = self.running_var.as_tensor().reshape((1, c, 1, 1))?;
                let scale = gamma.div(&(rv + self.eps)?.sqrt()?)?;
                let shift = (beta - rm.mul(&scale)?)?;
                return activation(channel_affine(x, &scale, &shift)?, act);
            }
            BnMode::Train => 0.1,
            BnMode::Accumulate(m) => m,
        };
        let n = (x.elem_count() / c) as f64;
        let (y, mean, var) = crate::ops::batch_norm(x, &gamma, &beta, self.eps, act)?;
        let unbiased = (var * (n / (n - 1.0).max(1.0)))?;
        let rm = ((self.running_mean.as_tensor() * (1.0 - momentum))? + (mean * momentum)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - momentum))? + (unbiased * momentum)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        Ok(y)
    }
}

/// Inverted dropout: in a pass with a noise seed, each element is zeroed with
/// probability `p` and the rest scaled by 1/(1 − p); otherwise the identity.
pub struct Dropout {
    pub p: f64,
    /// Distinguishes this layer's mask from the other layers' in the same pass.
    pub salt: u64,
}

impl Dropout {
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let Some(seed) = mode.noise.filter(|_| self.p > 0.0) else { return Ok(x.clone()) };
        let mut rng = Rng::derived(seed, self.salt);
        let keep = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> =
            (0..x.elem_count()).map(|_| if rng.uniform() < self.p { 0.0 } else { keep as f32 }).collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }
}

/// `x`, or `LeakyReLU(x)` with slope `act`.
pub(crate) fn activation(x: Tensor, act: Option<f64>) -> Result<Tensor> {
    match act {
        Some(slope) => ops::leaky_relu(&x, slope),
        None => Ok(x),
    }
}

/// Mean over everything but the batch dimension, keeping (N,).
pub fn mean_per_sample(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(1)?.mean(D::Minus1)
}

/// Layer norm over (C, H, W) of each sample, with a per-channel scale (init 1) and
/// shift (init 0), as in the WGAN-GP critic: unlike batch norm it keeps samples
/// independent, which per-sample gradient penalties need.
pub struct LayerNorm2d {
    pub gamma: Var,
    pub beta: Var,
    pub eps: f64,
}

impl LayerNorm2d {
    pub fn new(p: &mut Params, name: &str, c: usize) -> Result<Self> {
        let gamma = p.param(&format!("{name}.weight"), Tensor::ones(c, candle_core::DType::F32, &p.device.clone())?)?;
        let beta = p.zeros(&format!("{name}.bias"), &[c])?;
        Ok(Self { gamma, beta, eps: 1e-5 })
    }

    /// Layer norm followed by a LeakyReLU with slope `act` (0: ReLU) when given, fused.
    pub fn forward_act(&self, x: &Tensor, mode: Mode, act: Option<f64>) -> Result<Tensor> {
        ops::layer_norm(x, &weight(&self.gamma, mode), &weight(&self.beta, mode), self.eps, act)
    }
}

/// The normalisation a hidden layer uses.
pub enum Norm {
    Batch(BatchNorm2d),
    Layer(LayerNorm2d),
    None,
}

impl Norm {
    /// `kind` is "batch", "layer" or "none".
    pub fn new(kind: &str, p: &mut Params, rng: &mut Rng, name: &str, c: usize) -> Result<Self> {
        Ok(match kind {
            "batch" => Norm::Batch(BatchNorm2d::new(p, rng, name, c)?),
            "layer" => Norm::Layer(LayerNorm2d::new(p, name, c)?),
            "none" => Norm::None,
            _ => candle_core::bail!("unknown normalisation '{kind}'"),
        })
    }

    /// The normalisation followed by a LeakyReLU with slope `act` (0: ReLU) when given.
    pub fn forward_act(&self, x: &Tensor, mode: Mode, act: Option<f64>) -> Result<Tensor> {
        match self {
            Norm::Batch(n) => n.forward_act(x, mode, act),
            Norm::Layer(n) => n.forward_act(x, mode, act),
            Norm::None => activation(x.clone(), act),
        }
    }
}
