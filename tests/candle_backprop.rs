//! The vendored candle-core's backward pass (vendor/README.md) stores the first gradient
//! reaching a tensor instead of adding it to zeros. These pin what that must not change:
//! fan-in sums, gradients arriving as views, and second-order gradients through both.

use candle_core::{Device, Tensor, Var};

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

#[test]
fn fan_in_gradients_are_summed_once_each() {
    let dev = Device::Cpu;
    let x = Var::new(&[1.0f64, -2.0, 3.0], &dev).unwrap();
    let a = Tensor::new(&[2.0f64, 3.0, 4.0], &dev).unwrap();
    // x reaches the loss four times: as both sides of one add, through a product and through
    // a subtraction. d/dx sum(x + x + a*x - x) = 1 + 1 + a - 1.
    let t = x.as_tensor();
    let loss = ((t + t).unwrap() + (a.mul(t).unwrap() - t).unwrap()).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    assert_eq!(values(g.get(t).unwrap()), vec![3.0, 4.0, 5.0]);
}

#[test]
fn gradients_that_arrive_as_views_are_stored_contiguous() {
    let dev = Device::Cpu;
    let x = Var::new(&[[1.0f64, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev).unwrap();
    let y = Var::new(&[[7.0f64], [8.0]], &dev).unwrap();
    // cat along dim 1 hands each part a narrowed (strided) view of the gradient; the
    // transposes make the forward inputs non-contiguous as well.
    let cat = Tensor::cat(&[x.as_tensor(), y.as_tensor()], 1).unwrap();
    let w = Tensor::new(&[[1.0f64, 10.0], [100.0, 1000.0], [2.0, 20.0], [3.0, 30.0]], &dev).unwrap();
    let loss = cat.t().unwrap().mul(&w).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let gx = g.get(x.as_tensor()).unwrap();
    let gy = g.get(y.as_tensor()).unwrap();
    assert!(gx.is_contiguous() && gy.is_contiguous());
    assert_eq!(values(gx), vec![1.0, 100.0, 2.0, 10.0, 1000.0, 20.0]);
    assert_eq!(values(gy), vec![3.0, 30.0]);
}

#[test]
fn second_order_gradients_pass_through_first_contributions() {
    facegan::enable_second_order_gradients();
    let dev = Device::Cpu;
    let x = Var::new(&[0.5f64, -1.5, 2.0], &dev).unwrap();
    let t = x.as_tensor();
    // f = sum(x³ + x·x): f' = 3x² + 2x, and the gradient of sum(f'²) is 2 f' (6x + 2).
    let f = (t.powf(3.0).unwrap() + t.mul(t).unwrap()).unwrap().sum_all().unwrap();
    let d1 = f.backward().unwrap().get(t).unwrap().clone();
    let d2 = d1.sqr().unwrap().sum_all().unwrap().backward().unwrap().get(t).unwrap().clone();
    for ((&xi, g1), g2) in [0.5f64, -1.5, 2.0].iter().zip(values(&d1)).zip(values(&d2)) {
        let fp = 3.0 * xi * xi + 2.0 * xi;
        assert!((g1 - fp).abs() < 1e-12, "first order {g1} vs {fp}");
        assert!((g2 - 2.0 * fp * (6.0 * xi + 2.0)).abs() < 1e-9, "second order {g2}");
    }
}
