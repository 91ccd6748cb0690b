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
