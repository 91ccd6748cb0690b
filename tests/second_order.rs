//! Second-order gradients: the gradient of a WGAN-GP style penalty with respect to a
//! small conv critic's weights equals finite differences. This only works with
//! `CANDLE_GRAD_DO_NOT_DETACH=1` (set by .cargo/config.toml and by the binary).

use candle_core::{DType, Device, Tensor, Var};
use facegan::nn::leaky_relu;
use facegan::ops;

/// D(x) = v . leaky_relu(conv(x, w1, stride 2, pad 1)), flattened per sample.
fn critic(x: &Tensor, w1: &Tensor, v: &Tensor) -> Tensor {
    let h = leaky_relu(&ops::conv2d(x, w1, 2, 1).unwrap(), 0.2).unwrap();
    h.flatten_from(1).unwrap().matmul(&v.unsqueeze(1).unwrap()).unwrap().squeeze(1).unwrap()
}

/// mean_i (||dD/dx_i|| - 1)^2 at the points `x`, with the graph kept for a second backward.
fn penalty(x: &Tensor, w1: &Tensor, v: &Tensor) -> Tensor {
    let xv = Var::from_tensor(x).unwrap();
    let grads = critic(xv.as_tensor(), w1, v).sum_all().unwrap().backward().unwrap();
    let g = grads.get(xv.as_tensor()).expect("gradient wrt the input").clone();
    let norm = g.sqr().unwrap().flatten_from(1).unwrap().sum(1).unwrap().sqrt().unwrap();
    (norm - 1.0).unwrap().sqr().unwrap().mean_all().unwrap()
}

fn setup(dtype: DType) -> (Tensor, Var, Tensor) {
    let dev = Device::Cpu;
    let mut rng = facegan::rng::Rng::new(5);
    let x = rng.normal_tensor((2, 2, 6, 6), 0.0, 1.0, &dev).unwrap().to_dtype(dtype).unwrap();
    let w1 =
        Var::from_tensor(&rng.normal_tensor((3, 2, 4, 4), 0.0, 0.3, &dev).unwrap().to_dtype(dtype).unwrap()).unwrap();
    let v = rng.normal_tensor(3 * 3 * 3, 0.0, 0.5, &dev).unwrap().to_dtype(dtype).unwrap();
    (x, w1, v)
}

#[test]
fn gradient_penalty_weight_gradient_equals_finite_differences() {
    facegan::enable_second_order_gradients();
    let (x, w1, v) = setup(DType::F64);
    let p = penalty(&x, w1.as_tensor(), &v);
    let dw = p.backward().unwrap().get(w1.as_tensor()).expect("penalty reaches the weights").clone();
    let dw = dw.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let w0 = w1.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let eps = 1e-6;
    let mut checked = 0;
    for i in (0..w0.len()).step_by(7) {
        let at = |delta: f64| {
            let mut w = w0.clone();
            w[i] += delta;
            let wt = Tensor::from_vec(w, w1.dims(), &Device::Cpu).unwrap();
            penalty(&x, &wt, &v).to_scalar::<f64>().unwrap()
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!((fd - dw[i]).abs() < 1e-6 * (1.0 + fd.abs()), "weight {i}: finite difference {fd}, autograd {}", dw[i]);
        checked += 1;
    }
    assert!(checked >= 10);
    assert!(dw.iter().any(|g| g.abs() > 1e-3), "the penalty gradient is not trivially zero");
}

/// Every penalty of the zoo, through `facegan::penalty`, on the same critic.
#[test]
fn every_penalty_weight_gradient_equals_finite_differences() {
    use facegan::penalty::{penalty as zoo, PenaltyKind, PENALTY_NAMES};
    facegan::enable_second_order_gradients();
    let (x, w1, v) = setup(DType::F64);
    let fake = (x.clone() * 0.5).unwrap().sin().unwrap();
    for name in PENALTY_NAMES {
        let kind = PenaltyKind::parse(name).unwrap();
        if kind.target() != facegan::penalty::Target::D {
            continue; // generator regularisers have their own tests
        }
        let value = |w: &Tensor| {
            let d = |inp: &Tensor| Ok(critic(inp, w, &v));
            zoo(kind, &d, &x, &fake, &mut facegan::rng::Rng::new(9)).unwrap()
        };
        let dw = value(w1.as_tensor())
            .backward()
            .unwrap()
            .get(w1.as_tensor())
            .expect("reaches the weights")
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let w0 = w1.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in (0..w0.len()).step_by(11) {
            let at = |delta: f64| {
                let mut w = w0.clone();
                w[i] += delta;
                value(&Tensor::from_vec(w, w1.dims(), &Device::Cpu).unwrap()).to_scalar::<f64>().unwrap()
            };
            let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!(
                (fd - dw[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "{name} weight {i}: finite difference {fd}, autograd {}",
                dw[i]
            );
        }
        assert!(dw.iter().any(|g| g.abs() > 1e-4), "{name}: gradient is trivially zero");
    }
}

#[test]
fn gradient_penalty_in_f32_matches_f64() {
    facegan::enable_second_order_gradients();
    let (x, w1, v) = setup(DType::F64);
    let dw64 = penalty(&x, w1.as_tensor(), &v)
        .backward()
        .unwrap()
        .get(w1.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let (x, w1, v) = setup(DType::F32);
    let dw32 = penalty(&x, w1.as_tensor(), &v)
        .backward()
        .unwrap()
        .get(w1.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let scale = dw64.iter().fold(0f64, |m, g| m.max(g.abs()));
    for (a, b) in dw64.iter().zip(&dw32) {
        assert!((a - *b as f64).abs() < 1e-4 * scale, "{a} vs {b}");
    }
}

/// The model-zoo layers under a gradient penalty: spectral norm, self-attention (with its
/// max-pooled keys and values and the fused softmax), nearest upsampling, average pooling
/// and minibatch stddev in one critic, built in f64; the gradient of
/// mean ||dD/dx||² with respect to every parameter equals central differences.
#[test]
fn zoo_layers_penalty_gradient_equals_finite_differences() {
    use facegan::nn::attention::SelfAttention;
    use facegan::nn::layers::{Init, LayerOpts};
    use facegan::nn::resample::{avg_pool2x, upsample2x};
    use facegan::nn::stddev::minibatch_stddev;
    use facegan::nn::{BnMode, Conv2d, Mode, Params};
    facegan::enable_second_order_gradients();
    let dev = Device::Cpu;
    let mut rng = facegan::rng::Rng::new(21);
    let mut p = Params::with_dtype(&dev, DType::F64);
    let sn = LayerOpts::new(true, Init::XavierUniform(1.0), true);
    let conv1 = Conv2d::with(&mut p, &mut rng, "c1", (3, 8, 3), 1, 1, sn).unwrap();
    let attn = SelfAttention::new(&mut p, &mut rng, "attn", 8, true).unwrap();
    let conv2 = Conv2d::with(&mut p, &mut rng, "c2", (9, 1, 1), 1, 0, sn).unwrap();
    attn.gamma.set(&Tensor::new(&[0.7f64], &dev).unwrap()).unwrap();
    // Weights train (not frozen) but spectral norm does not iterate (evaluation statistics).
    let mode = Mode { bn: BnMode::Eval, frozen: false, noise: None };
    let critic = |x: &Tensor| -> candle_core::Result<Tensor> {
        let h = leaky_relu(&conv1.forward(x, mode)?, 0.2)?;
        let h = attn.forward(&upsample2x(&h)?, mode)?;
        let h = minibatch_stddev(&avg_pool2x(&h)?, 2)?;
        conv2.forward(&h, mode)?.flatten_from(1)?.sum(1)
    };
    let x = rng.normal_tensor((2, 3, 8, 8), 0.0, 1.0, &dev).unwrap().to_dtype(DType::F64).unwrap();
    // Training passes run spectral norm's power iteration: let u and v converge first.
    let train = Mode { bn: BnMode::Train, ..mode };
    for _ in 0..20 {
        for c in [&conv1, &conv2] {
            c.forward(&Tensor::zeros((1, c.w.dims()[1], 4, 4), DType::F64, &dev).unwrap(), train).unwrap();
        }
        attn.forward(&Tensor::zeros((1, 8, 4, 4), DType::F64, &dev).unwrap(), train).unwrap();
    }
    let value = || facegan::penalty::input_gradient_norm_sq(&critic, &x).unwrap().mean_all().unwrap();
    let grads = value().backward().unwrap();
    let mut checked = 0;
    for (name, var) in p.trainable() {
        // The last bias does not change dD/dx: no gradient, and central differences of 0.
        let g = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            None => vec![0.0; var.elem_count()],
        };
        let w0 = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in (0..w0.len()).step_by(w0.len().div_ceil(5)) {
            let at = |delta: f64| {
                let mut w = w0.clone();
                w[i] += delta;
                var.set(&Tensor::from_vec(w, var.dims(), &dev).unwrap()).unwrap();
                let v = value().to_scalar::<f64>().unwrap();
                var.set(&Tensor::from_vec(w0.clone(), var.dims(), &dev).unwrap()).unwrap();
                v
            };
            let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!(
                (fd - g[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                "{name}[{i}]: finite difference {fd}, autograd {}",
                g[i]
            );
            checked += 1;
        }
        assert!(name == "c2.bias" || g.iter().any(|v| v.abs() > 1e-6), "{name}: gradient is trivially zero");
    }
    assert!(checked >= 30, "{checked}");
}

/// A small StyleGAN2 in f64: (tensor name, index) samples of every parameter tensor, and
/// the check that `grads` (autograd) matches central differences of `value`.
fn check_against_finite_differences(
    params: &facegan::nn::Params,
    grads: &std::collections::HashMap<String, Vec<f64>>,
    value: &dyn Fn() -> f64,
    what: &str,
) -> usize {
    let dev = Device::Cpu;
    let mut checked = 0;
    for (name, var) in params.trainable() {
        let g = grads.get(name).cloned().unwrap_or_else(|| vec![0.0; var.elem_count()]);
        let w0 = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in (0..w0.len()).step_by(w0.len().div_ceil(3)) {
            let at = |delta: f64| {
                let mut w = w0.clone();
                w[i] += delta;
                var.set(&Tensor::from_vec(w, var.dims(), &dev).unwrap()).unwrap();
                let v = value();
                var.set(&Tensor::from_vec(w0.clone(), var.dims(), &dev).unwrap()).unwrap();
                v
            };
            let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!(
                (fd - g[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                "{what}: {name}[{i}]: finite difference {fd}, autograd {}",
                g[i]
            );
            checked += 1;
        }
    }
    checked
}

fn tiny_stylegan2() -> facegan::config::ModelConfig {
    facegan::config::ModelConfig {
        arch: "stylegan2".into(),
        image_size: 16,
        nz: 4,
        ngf: 2,
        ndf: 2,
        w_dim: Some(4),
        mapping_layers: Some(2),
        mbstd_group: 2,
        ..Default::default()
    }
}

/// StyleGAN2's path-length regulariser through the modulated network (mapping, modulated and
/// demodulated convolutions, noise, blurred upsampling, skip toRGBs), with its gradient into
/// the mapping network by the chain rule through the ws: every parameter's gradient equals
/// central differences (the moving mean held fixed).
#[test]
fn path_length_gradient_through_stylegan2_equals_finite_differences() {
    use facegan::models::style::StyleGenerator;
    use facegan::models::stylegan2::StyleGan2Generator;
    use facegan::models::Generator;
    use facegan::nn::{Mode, Params};
    facegan::enable_second_order_gradients();
    let dev = Device::Cpu;
    let mut rng = facegan::rng::Rng::new(31);
    let g = StyleGan2Generator::in_params(&tiny_stylegan2(), Params::with_dtype(&dev, DType::F64), &mut rng).unwrap();
    // Non-zero noise strengths, so that the noise path is exercised too.
    for (name, v) in g.params().trainable() {
        if name.ends_with("noise_strength") {
            v.set(&Tensor::new(&[0.3f64], &dev).unwrap()).unwrap();
        }
    }
    let mut latent = g.sample_latent(2, &mut rng, &dev).unwrap();
    latent.z = latent.z.to_dtype(DType::F64).unwrap();
    latent.mix = Some((rng.normal_tensor((2, 4), 0.0, 1.0, &dev).unwrap().to_dtype(DType::F64).unwrap(), 2));
    let pl = |seed| {
        let sg: &dyn StyleGenerator = &g;
        facegan::penalty::path_length(sg, &latent, Mode::TRAIN, (0.4, 0.0), &mut facegan::rng::Rng::new(seed)).unwrap()
    };
    let p = pl(5);
    let grads = p.value.backward().unwrap();
    let extra = p.mapping_surrogate(&grads).unwrap().expect("the ws get a gradient").backward().unwrap();
    let mut by_name = std::collections::HashMap::new();
    for (name, v) in g.params().trainable() {
        let a = grads.get(v.as_tensor()).map(|t| t.flatten_all().unwrap().to_vec1::<f64>().unwrap());
        let b = extra.get(v.as_tensor()).map(|t| t.flatten_all().unwrap().to_vec1::<f64>().unwrap());
        let sum = match (a, b) {
            (Some(a), Some(b)) => a.iter().zip(&b).map(|(x, y)| x + y).collect(),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => continue,
        };
        by_name.insert(name.clone(), sum);
    }
    assert!(by_name.keys().any(|k| k.starts_with("mapping.")), "the regulariser reaches the mapping network");
    let value = || pl(5).value.to_scalar::<f64>().unwrap();
    let checked = check_against_finite_differences(g.params(), &by_name, &value, "path length");
    assert!(checked >= 60, "{checked}");
}

/// R1 through StyleGAN2's residual discriminator (equalised-LR convolutions, blurred
/// downsampling, minibatch stddev, the fully connected epilogue).
#[test]
fn r1_gradient_through_the_stylegan2_discriminator_equals_finite_differences() {
    use facegan::models::stylegan2::StyleGan2Discriminator;
    use facegan::models::Discriminator;
    use facegan::nn::{Mode, Params};
    use facegan::penalty::{penalty as zoo, PenaltyKind};
    facegan::enable_second_order_gradients();
    let dev = Device::Cpu;
    let mut rng = facegan::rng::Rng::new(32);
    let d =
        StyleGan2Discriminator::in_params(&tiny_stylegan2(), Params::with_dtype(&dev, DType::F64), &mut rng).unwrap();
    let x = rng.normal_tensor((4, 3, 16, 16), 0.0, 1.0, &dev).unwrap().to_dtype(DType::F64).unwrap();
    let value = || {
        let critic = |inp: &Tensor| d.forward(inp, None, Mode::TRAIN);
        zoo(PenaltyKind::R1, &critic, &x, &x, &mut facegan::rng::Rng::new(1)).unwrap()
    };
    let grads = value().backward().unwrap();
    let mut by_name = std::collections::HashMap::new();
    for (name, v) in d.params().trainable() {
        if let Some(g) = grads.get(v.as_tensor()) {
            by_name.insert(name.clone(), g.flatten_all().unwrap().to_vec1::<f64>().unwrap());
        }
    }
    let checked = check_against_finite_differences(d.params(), &by_name, &|| value().to_scalar::<f64>().unwrap(), "R1");
    assert!(checked >= 40, "{checked}");
}
