//! The WGAN-GP value and its gradients with respect to a conv critic's weights equal
//! numbers computed once by PyTorch with `create_graph=True`
//! (tests/fixtures/wgan_gp_reference.json, made by scripts/wgan_gp_reference.py).

use candle_core::{DType, Device, Tensor, Var};
use facegan::loss::AdversarialLoss;
use facegan::nn::leaky_relu;
use facegan::penalty::input_gradient_norm_sq;

fn vec(j: &serde_json::Value, k: &str) -> Vec<f64> {
    j[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn shape(j: &serde_json::Value, k: &str) -> Vec<usize> {
    j["shapes"][k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn check(dtype: DType, tol: f64) {
    facegan::enable_second_order_gradients();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wgan_gp_reference.json")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let t = |k: &str, s: Vec<usize>| Tensor::from_vec(vec(&j, k), s, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
    let xs = shape(&j, "x");
    let (real, fake) = (t("real", xs.clone()), t("fake", xs.clone()));
    let eps = t("eps", vec![xs[0], 1, 1, 1]);
    let w1 = Var::from_tensor(&t("w1", shape(&j, "w1"))).unwrap();
    let b1 = Var::from_tensor(&t("b1", shape(&j, "b1"))).unwrap();
    let v = Var::from_tensor(&t("v", shape(&j, "v"))).unwrap();
    let critic = |x: &Tensor| -> candle_core::Result<Tensor> {
        let h = facegan::ops::conv2d(x, w1.as_tensor(), 2, 1)?;
        let h = h.broadcast_add(&b1.as_tensor().reshape((1, (), 1, 1))?)?;
        leaky_relu(&h, 0.2)?.flatten_from(1)?.matmul(&v.as_tensor().unsqueeze(1)?)?.squeeze(1)
    };
    let x_hat = ((real.broadcast_mul(&eps)).unwrap() + fake.broadcast_mul(&(1.0 - &eps).unwrap()).unwrap()).unwrap();
    let penalty = (input_gradient_norm_sq(&critic, &x_hat).unwrap().sqrt().unwrap() - 1.0)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let d_loss = AdversarialLoss::Wasserstein.d_loss(&critic(&real).unwrap(), &critic(&fake).unwrap()).unwrap();
    let total = (&d_loss + (&penalty * 10.0).unwrap()).unwrap();
    let scalar = |x: &Tensor| x.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
    let rel = |a: f64, b: f64| (a - b).abs() / (1.0 + b.abs());
    assert!(
        rel(scalar(&penalty), j["penalty"].as_f64().unwrap()) < tol,
        "penalty {} vs {}",
        scalar(&penalty),
        j["penalty"]
    );
    assert!(rel(scalar(&d_loss), j["d_loss"].as_f64().unwrap()) < tol);
    let grads = total.backward().unwrap();
    for (name, var) in [("grad_w1", &w1), ("grad_b1", &b1), ("grad_v", &v)] {
        let got: Vec<f64> =
            grads.get(var.as_tensor()).unwrap().to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let want = vec(&j, name);
        let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= tol * scale, "{name}[{i}]: {a} vs PyTorch {b}");
        }
    }
}

#[test]
fn wgan_gp_equals_pytorch_in_f64() {
    check(DType::F64, 1e-9);
}

#[test]
fn wgan_gp_equals_pytorch_in_f32() {
    check(DType::F32, 1e-4);
}
