//! Tests of the convolution entry points against candle's reference ops and finite differences.

use super::*;
use candle_core::{DType, Device, Var};

/// A tiny deterministic generator (SplitMix64) for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn tensor<S: Into<candle_core::Shape>>(&mut self, shape: S, dtype: DType) -> Tensor {
        let shape = shape.into();
        let data: Vec<f64> = (0..shape.elem_count()).map(|_| self.uniform()).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).and_then(|t| t.to_dtype(dtype)).unwrap()
    }
}

/// Largest absolute difference, relative to the largest absolute reference value.
fn rel_diff(actual: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(actual.dims(), reference.dims(), "shape mismatch");
    let a = actual.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = reference.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let a = a.to_vec1::<f64>().unwrap();
    let b = b.to_vec1::<f64>().unwrap();
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let diff = a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

fn assert_close(actual: &Tensor, reference: &Tensor, tol: f64, what: &str) {
    let d = rel_diff(actual, reference);
    assert!(d <= tol, "{what}: relative difference {d:e} > {tol:e}");
}

/// A conv2d test case: batch, channels in/out, input height/width, kernel, stride, padding.
#[derive(Clone, Copy, Debug)]
struct ConvCase {
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
}

const fn conv(n: usize, c_in: usize, c_out: usize, (h, w): (usize, usize), k: usize, s: usize, p: usize) -> ConvCase {
    ConvCase { n, c_in, c_out, h, w, k, s, p }
}

const CONV_CASES: &[ConvCase] = &[
    conv(2, 3, 4, (7, 9), 3, 1, 1),    // odd, non-square
    conv(1, 5, 6, (8, 8), 4, 2, 1),    // batch 1, DCGAN down-sampling
    conv(3, 4, 2, (11, 10), 5, 2, 2),  // output padding differs per axis in the backward
    conv(2, 6, 3, (5, 5), 1, 1, 0),    // pointwise
    conv(2, 3, 5, (6, 7), 1, 2, 1),    // padding larger than the kernel
    conv(4, 2, 3, (9, 9), 3, 3, 0),    // stride 3
    conv(5, 8, 4, (4, 4), 4, 1, 0),    // kernel covers the input: fully connected
    conv(3, 5, 2, (6, 5), 5, 2, 0),    // 1x1 output, not dense: items grouped into one GEMM
    conv(9, 3, 2, (3, 5), 3, 2, 1),    // small output, grouped
    conv(1, 1, 1, (1, 1), 1, 1, 0),    // trivial
    conv(3, 2, 3, (2, 2), 5, 1, 2),    // kernel larger than the input
    conv(2, 16, 8, (16, 16), 4, 2, 1), // wide enough for several parallel tasks
    // Stride 1, at least 32 channels in and at most 32 out: a flipped-kernel conv_transpose2d.
    conv(2, 32, 5, (7, 6), 3, 1, 1),  // ResNet's 3x3, non-square
    conv(1, 33, 2, (5, 6), 3, 1, 0),  // unpadded: the transposed form pads by 2
    conv(2, 32, 3, (3, 3), 5, 1, 2),  // kernel larger than the input
    conv(1, 40, 6, (6, 5), 4, 1, 1),  // even kernel
    conv(1, 2, 3, (36, 40), 4, 2, 1), // strided im2col through the stride phases (20 wide)
    conv(2, 2, 2, (32, 33), 4, 2, 1), // 16-wide small grid: the fixed-width phase rows
];

/// A conv_transpose2d test case: batch, channels in/out, input size, kernel, stride, padding,
/// output padding.
#[derive(Clone, Copy, Debug)]
struct ConvTCase {
    conv: ConvCase,
    op: usize,
}

const fn convt(
    n: usize,
    c_in: usize,
    c_out: usize,
    hw: (usize, usize),
    (k, s, p, op): (usize, usize, usize, usize),
) -> ConvTCase {
    ConvTCase { conv: conv(n, c_in, c_out, hw, k, s, p), op }
}

const CONVT_CASES: &[ConvTCase] = &[
    convt(2, 3, 4, (4, 5), (4, 2, 1, 0)),  // DCGAN up-sampling, non-square
    convt(1, 4, 3, (5, 3), (3, 2, 1, 1)),  // batch 1, output padding 1
    convt(3, 2, 5, (1, 1), (4, 1, 0, 0)),  // DCGAN first layer (1x1 -> 4x4), grouped
    convt(2, 5, 2, (3, 4), (5, 3, 2, 2)),  // stride 3, output padding 2
    convt(2, 3, 3, (6, 6), (1, 1, 0, 0)),  // pointwise
    convt(2, 3, 2, (5, 5), (1, 2, 0, 1)),  // 1x1 kernel, stride 2
    convt(4, 2, 2, (3, 3), (3, 1, 2, 0)),  // padding crops most of the output
    convt(7, 3, 4, (2, 3), (3, 2, 0, 1)),  // grouped, odd batch
    convt(2, 16, 8, (8, 8), (4, 2, 1, 0)), // wide enough for several parallel tasks
    // Stride 1, fewer inputs than outputs: the weight gradient takes the adjoint form.
    convt(2, 5, 8, (6, 7), (3, 1, 1, 0)), // 'same' 3x3, non-square
    convt(3, 4, 9, (4, 5), (3, 1, 0, 0)), // unpadded: the output grows by 2
    convt(2, 6, 8, (5, 5), (4, 1, 2, 0)), // even kernel
];

impl ConvCase {
    fn inputs(&self, rng: &mut Rng, dtype: DType) -> (Tensor, Tensor) {
        let x = rng.tensor((self.n, self.c_in, self.h, self.w), dtype);
        let w = rng.tensor((self.c_out, self.c_in, self.k, self.k), dtype);
        (x, w)
    }

    /// Whether candle's own conv2d backward handles this case (it uses the output padding of
    /// the height for both axes).
    fn candle_backward_ok(&self) -> bool {
        let extra = |size: usize| (size + 2 * self.p - self.k) % self.s;
        extra(self.h) == extra(self.w)
    }
}

impl ConvTCase {
    fn inputs(&self, rng: &mut Rng, dtype: DType) -> (Tensor, Tensor) {
        let c = &self.conv;
        let x = rng.tensor((c.n, c.c_in, c.h, c.w), dtype);
        let w = rng.tensor((c.c_in, c.c_out, c.k, c.k), dtype);
        (x, w)
    }

    fn ours(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let c = &self.conv;
        conv_transpose2d(x, w, c.s, c.p, self.op)
    }

    fn candle(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let c = &self.conv;
        x.conv_transpose2d(w, c.p, self.op, c.s, 1)
    }
}

/// Runs `f` in rayon pools of 1, 2 and 3 threads, exercising the serial, batch-parallel and
/// GEMM-parallel schedules.
fn with_thread_counts(f: impl Fn() + Sync) {
    for threads in [1, 2, 3] {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(&f);
    }
}

#[test]
fn conv2d_forward_matches_candle() {
    with_thread_counts(|| {
        let mut rng = Rng(1);
        for case in CONV_CASES {
            let (x, w) = case.inputs(&mut rng, DType::F32);
            let ours = conv2d(&x, &w, case.s, case.p).unwrap();
            let reference = x.conv2d(&w, case.p, case.s, 1, 1).unwrap();
            assert_close(&ours, &reference, 1e-4, &format!("{case:?}"));
        }
    });
}

#[test]
fn conv_transpose2d_forward_matches_candle() {
    with_thread_counts(|| {
        let mut rng = Rng(2);
        for case in CONVT_CASES {
            let (x, w) = case.inputs(&mut rng, DType::F32);
            let ours = case.ours(&x, &w).unwrap();
            let reference = case.candle(&x, &w).unwrap();
            assert_close(&ours, &reference, 1e-4, &format!("{case:?}"));
        }
    });
}

#[test]
fn non_contiguous_inputs() -> Result<()> {
    let mut rng = Rng(3);
    // Transposed spatial axes, a narrowed batch (offset) and a narrowed width (strided rows).
    let base = rng.tensor((5, 3, 9, 8), DType::F32);
    let xs = [
        base.transpose(2, 3)?,
        base.narrow(0, 1, 3)?,
        base.narrow(3, 1, 6)?,
        rng.tensor((3, 5, 8, 9), DType::F32).permute((1, 0, 3, 2))?,
    ];
    let w_base = rng.tensor((4, 6, 3, 3), DType::F32);
    let w = w_base.narrow(1, 2, 3)?; // (4, 3, 3, 3), non-contiguous
    let wt = rng.tensor((3, 4, 4, 4), DType::F32).transpose(2, 3)?;
    for x in &xs {
        let x_c = x.contiguous()?;
        let w_c = w.contiguous()?;
        let reference = x_c.conv2d(&w_c, 1, 2, 1, 1)?;
        assert_close(&conv2d(x, &w, 2, 1)?, &reference, 1e-4, "conv2d");

        let wt_c = wt.contiguous()?;
        let reference = x_c.conv_transpose2d(&wt_c, 1, 1, 2, 1)?;
        assert_close(&conv_transpose2d(x, &wt, 2, 1, 1)?, &reference, 1e-4, "conv_t");
    }
    Ok(())
}

#[test]
fn other_dtypes_use_candle() -> Result<()> {
    let mut rng = Rng(4);
    let x = rng.tensor((2, 3, 6, 6), DType::F16);
    let w = rng.tensor((4, 3, 3, 3), DType::F16);
    let ours = conv2d(&x, &w, 1, 1)?;
    assert_eq!(ours.dtype(), DType::F16);
    assert_close(&ours, &x.conv2d(&w, 1, 1, 1, 1)?, 0.0, "f16 conv2d");
    let wt = rng.tensor((3, 4, 4, 4), DType::F16);
    let ours = conv_transpose2d(&x, &wt, 2, 1, 0)?;
    assert_close(&ours, &x.conv_transpose2d(&wt, 1, 0, 2, 1)?, 0.0, "f16 conv_t");
    Ok(())
}

#[test]
fn f32_matches_f64() -> Result<()> {
    let mut rng = Rng(5);
    for case in CONV_CASES {
        let (x, w) = case.inputs(&mut rng, DType::F64);
        let f64_out = conv2d(&x, &w, case.s, case.p)?;
        let f32_out = conv2d(&x.to_dtype(DType::F32)?, &w.to_dtype(DType::F32)?, case.s, case.p)?;
        assert_eq!(f64_out.dtype(), DType::F64);
        assert_close(&f32_out, &f64_out, 1e-5, &format!("{case:?}"));
    }
    Ok(())
}

#[test]
fn invalid_arguments_are_errors() {
    let mut rng = Rng(6);
    let x = rng.tensor((1, 3, 4, 4), DType::F32);
    let w = rng.tensor((2, 4, 3, 3), DType::F32);
    assert!(conv2d(&x, &w, 1, 0).is_err(), "channel mismatch");
    let w = rng.tensor((2, 3, 7, 7), DType::F32);
    assert!(conv2d(&x, &w, 1, 1).is_err(), "kernel larger than padded input");
    let w = rng.tensor((2, 3, 3, 3), DType::F32);
    assert!(conv2d(&x, &w, 0, 1).is_err(), "zero stride");
    let wt = rng.tensor((3, 2, 4, 4), DType::F32);
    assert!(conv_transpose2d(&x, &wt, 2, 1, 2).is_err(), "output padding >= stride");
    assert!(conv_transpose2d(&x, &wt, 1, 5, 0).is_err(), "padding too large");
}

#[test]
fn weight_grad_matches_candle_formulation() {
    with_thread_counts(|| {
        let mut rng = Rng(7);
        for case in CONV_CASES {
            let (x, w) = case.inputs(&mut rng, DType::F32);
            let y = x.conv2d(&w, case.p, case.s, 1, 1).unwrap();
            let gy = rng.tensor(y.dims(), DType::F32);
            let kernel = (case.k, case.k);
            let ours = conv2d_weight_grad(&x, &gy, kernel, case.s, case.p).unwrap();
            // Candle's own formulation: a convolution over the batch, dilated by the stride.
            let reference = x
                .transpose(0, 1)
                .and_then(|xt| xt.conv2d(&gy.transpose(0, 1)?, case.p, 1, case.s, 1))
                .and_then(|r| r.transpose(0, 1)?.narrow(2, 0, case.k)?.narrow(3, 0, case.k))
                .unwrap();
            assert_close(&ours, &reference, 1e-4, &format!("{case:?}"));
        }
    });
}

/// `sum(out * r)`, with `r` converted to the dtype of `out`.
fn weighted_sum(out: &Tensor, r: &Tensor) -> Result<Tensor> {
    (out * r.to_dtype(out.dtype())?)?.sum_all()
}

#[test]
fn conv2d_gradients_match_candle() -> Result<()> {
    let mut rng = Rng(8);
    for case in CONV_CASES.iter().filter(|c| c.candle_backward_ok()) {
        let (x, w) = case.inputs(&mut rng, DType::F32);
        let (x, w) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
        let ours = conv2d(&x, &w, case.s, case.p)?;
        let reference = x.conv2d(&w, case.p, case.s, 1, 1)?;
        let r = rng.tensor(ours.dims(), DType::F32);
        let g_ours = weighted_sum(&ours, &r)?.backward()?;
        let g_ref = weighted_sum(&reference, &r)?.backward()?;
        for (v, name) in [(&x, "x"), (&w, "w")] {
            let what = format!("grad {name} {case:?}");
            assert_close(g_ours.get(v).unwrap(), g_ref.get(v).unwrap(), 1e-4, &what);
        }
    }
    Ok(())
}

#[test]
fn conv_transpose2d_gradients_match_candle() -> Result<()> {
    let mut rng = Rng(9);
    for case in CONVT_CASES {
        let (x, w) = case.inputs(&mut rng, DType::F32);
        let (x, w) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
        let ours = case.ours(&x, &w)?;
        let reference = case.candle(&x, &w)?;
        let r = rng.tensor(ours.dims(), DType::F32);
        let g_ours = weighted_sum(&ours, &r)?.backward()?;
        let g_ref = weighted_sum(&reference, &r)?.backward()?;
        for (v, name) in [(&x, "x"), (&w, "w")] {
            let what = format!("grad {name} {case:?}");
            assert_close(g_ours.get(v).unwrap(), g_ref.get(v).unwrap(), 1e-4, &what);
        }
    }
    Ok(())
}

/// Returns `t` (f64) with element `index` (in row-major order) increased by `delta`.
fn perturbed(t: &Tensor, index: usize, delta: f64) -> Result<Tensor> {
    let mut data = t.flatten_all()?.to_vec1::<f64>()?;
    data[index] += delta;
    Tensor::from_vec(data, t.dims(), t.device())
}

/// Checks the gradients `grads[i]` of the scalar function `f(args)` (all f64) against central
/// finite differences at `samples` random elements of each argument.
fn check_finite_differences(
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    args: &[Tensor],
    grads: &[Tensor],
    rng: &mut Rng,
    samples: usize,
    tol: f64,
    what: &str,
) -> Result<()> {
    const EPS: f64 = 1e-4;
    for (i, (arg, grad)) in args.iter().zip(grads).enumerate() {
        assert_eq!(arg.dims(), grad.dims(), "{what}: gradient shape of argument {i}");
        let grad = grad.flatten_all()?.to_vec1::<f64>()?;
        let scale = grad.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for _ in 0..samples {
            let index = rng.below(grad.len());
            let eval = |delta: f64| -> Result<f64> {
                let mut moved = args.to_vec();
                moved[i] = perturbed(arg, index, delta)?;
                f(&moved)?.to_scalar::<f64>()
            };
            let numeric = (eval(EPS)? - eval(-EPS)?) / (2.0 * EPS);
            let err = (numeric - grad[index]).abs() / scale;
            assert!(
                err <= tol,
                "{what}: argument {i} element {index}: analytic {} vs numeric {numeric} \
                 (relative error {err:e})",
                grad[index]
            );
        }
    }
    Ok(())
}

/// Gradients of the scalar `f(args)` with respect to every argument.
fn gradients(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, args: &[Tensor]) -> Result<Vec<Tensor>> {
    let vars = args.iter().map(Var::from_tensor).collect::<Result<Vec<_>>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = f(&tensors)?.backward()?;
    Ok(tensors.iter().map(|t| grads.get(t).expect("missing gradient").clone()).collect())
}

#[test]
fn first_order_gradients_match_finite_differences() -> Result<()> {
    let mut rng = Rng(10);
    for case in CONV_CASES {
        let (x, w) = case.inputs(&mut rng, DType::F64);
        let (s, p) = (case.s, case.p);
        let r = rng.tensor(conv2d(&x, &w, s, p)?.dims(), DType::F64);
        let f = |a: &[Tensor]| weighted_sum(&conv2d(&a[0], &a[1], s, p)?, &r);
        let args = [x, w];
        let grads = gradients(&f, &args)?;
        check_finite_differences(&f, &args, &grads, &mut rng, 4, 1e-7, &format!("{case:?}"))?;
    }
    for case in CONVT_CASES {
        let (x, w) = case.inputs(&mut rng, DType::F64);
        let r = rng.tensor(case.ours(&x, &w)?.dims(), DType::F64);
        let f = |a: &[Tensor]| weighted_sum(&case.ours(&a[0], &a[1])?, &r);
        let args = [x, w];
        let grads = gradients(&f, &args)?;
        check_finite_differences(&f, &args, &grads, &mut rng, 4, 1e-7, &format!("{case:?}"))?;
    }
    Ok(())
}

#[test]
fn weight_grad_gradients_match_finite_differences() -> Result<()> {
    let mut rng = Rng(11);
    for case in CONV_CASES {
        let (x, w) = case.inputs(&mut rng, DType::F64);
        let (s, p, k) = (case.s, case.p, (case.k, case.k));
        let gy = rng.tensor(conv2d(&x, &w, s, p)?.dims(), DType::F64);
        let r = rng.tensor(w.dims(), DType::F64);
        let f = |a: &[Tensor]| weighted_sum(&conv2d_weight_grad(&a[0], &a[1], k, s, p)?, &r);
        let args = [x, gy];
        let grads = gradients(&f, &args)?;
        check_finite_differences(&f, &args, &grads, &mut rng, 4, 1e-7, &format!("{case:?}"))?;
    }
    Ok(())
}

/// LeakyReLU with slope 0.2 in plain candle ops: `max(x, 0) + 0.2 min(x, 0)`.
fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    let zeros = x.zeros_like()?;
    x.maximum(&zeros)? + (x.minimum(&zeros)? * 0.2)?
}

/// Gradient penalty `P = Σ (∂D/∂x)²` of the critic `D = critic(x, weights)`, computed with a
/// first backward pass that keeps its graph.
fn gradient_penalty(
    critic: &dyn Fn(&Tensor, &[Tensor]) -> Result<Tensor>,
    x: &Tensor,
    weights: &[Tensor],
) -> Result<Tensor> {
    let x = Var::from_tensor(x)?;
    let grads = critic(&x, weights)?.backward()?;
    grads.get(&x).expect("no gradient for x").sqr()?.sum_all()
}

/// Checks `∂P/∂weights` of the gradient penalty of `critic` (in f64) against finite
/// differences, and the f32 fast path against the f64 result.
fn check_gradient_penalty(
    critic: &dyn Fn(&Tensor, &[Tensor]) -> Result<Tensor>,
    x: &Tensor,
    weights: &[Tensor],
    rng: &mut Rng,
    what: &str,
) -> Result<()> {
    // Candle reads this once per thread, before the first backward pass.
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    let penalty = |w: &[Tensor]| gradient_penalty(critic, x, w);
    let grads = gradients(&penalty, weights)?;
    for g in &grads {
        assert!(g.abs()?.max_all()?.to_scalar::<f64>()? > 0.0, "{what}: zero gradient");
    }
    check_finite_differences(&penalty, weights, &grads, rng, 6, 1e-6, what)?;

    let to_f32 = |t: &Tensor| t.to_dtype(DType::F32);
    let weights32 = weights.iter().map(to_f32).collect::<Result<Vec<_>>>()?;
    let x32 = to_f32(x)?;
    let penalty32 = |w: &[Tensor]| gradient_penalty(critic, &x32, w);
    for (g32, g) in gradients(&penalty32, &weights32)?.iter().zip(&grads) {
        assert_close(g32, g, 1e-4, &format!("{what} (f32 vs f64)"));
    }
    Ok(())
}

#[test]
fn gradient_penalty_through_conv2d() -> Result<()> {
    let mut rng = Rng(12);
    // Non-square odd input: the backward needs different output paddings per axis.
    let x = rng.tensor((2, 3, 7, 8), DType::F64);
    let w1 = rng.tensor((4, 3, 4, 4), DType::F64);
    let v = rng.tensor((2, 4, 3, 4), DType::F64);
    let critic = |x: &Tensor, w: &[Tensor]| weighted_sum(&leaky_relu(&conv2d(x, &w[0], 2, 1)?)?, &v);
    check_gradient_penalty(&critic, &x, &[w1], &mut rng, "conv2d critic")
}

#[test]
fn gradient_penalty_through_conv_transpose2d() -> Result<()> {
    let mut rng = Rng(13);
    let x = rng.tensor((2, 3, 3, 4), DType::F64);
    let w1 = rng.tensor((3, 4, 3, 3), DType::F64);
    let v = rng.tensor((2, 4, 6, 8), DType::F64);
    let critic = |x: &Tensor, w: &[Tensor]| weighted_sum(&leaky_relu(&conv_transpose2d(x, &w[0], 2, 1, 1)?)?, &v);
    check_gradient_penalty(&critic, &x, &[w1], &mut rng, "conv_transpose2d critic")
}

#[test]
fn gradient_penalty_through_two_layers() -> Result<()> {
    let mut rng = Rng(14);
    let x = rng.tensor((3, 2, 9, 9), DType::F64);
    let w1 = rng.tensor((4, 2, 4, 4), DType::F64);
    let w2 = rng.tensor((4, 3, 3, 3), DType::F64);
    let v = rng.tensor((3, 4, 4, 4), DType::F64);
    // w2 is shared by a transposed convolution and (as a non-contiguous view) a convolution.
    let critic = |x: &Tensor, w: &[Tensor]| {
        let h = leaky_relu(&conv2d(x, &w[0], 2, 1)?)?;
        let h = leaky_relu(&conv_transpose2d(&h, &w[1], 1, 1, 0)?)?;
        weighted_sum(&conv2d(&h, &w[1].transpose(2, 3)?, 1, 1)?, &v)
    };
    check_gradient_penalty(&critic, &x, &[w1, w2], &mut rng, "two-layer critic")
}

/// A penalty on the critic's *weight* gradient, `Σ (∂D/∂w1)²`, differentiated with respect to
/// the input and the other weight: this goes through the backward of the weight-gradient op.
#[test]
fn weight_gradient_penalty() -> Result<()> {
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    let mut rng = Rng(15);
    let x = rng.tensor((2, 3, 8, 7), DType::F64);
    let w1 = rng.tensor((4, 3, 4, 4), DType::F64);
    let w2 = rng.tensor((4, 2, 3, 3), DType::F64);
    let v = rng.tensor((2, 2, 8, 5), DType::F64);
    let penalty = |a: &[Tensor]| {
        let w1 = Var::from_tensor(&w1)?;
        let h = leaky_relu(&conv2d(&a[0], &w1, 2, 1)?)?;
        let d = weighted_sum(&conv_transpose2d_padded(&h, &a[1], 2, 1, (1, 0))?, &v)?;
        d.backward()?.get(&w1).unwrap().sqr()?.sum_all()
    };
    let args = [x, w2];
    let grads = gradients(&penalty, &args)?;
    check_finite_differences(&penalty, &args, &grads, &mut rng, 6, 1e-6, "weight penalty")
}

#[test]
fn gradient_penalty_matches_candle_ops() -> Result<()> {
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    let mut rng = Rng(16);
    let x = rng.tensor((2, 3, 8, 8), DType::F32);
    let w1 = rng.tensor((4, 3, 4, 4), DType::F32);
    let w2 = rng.tensor((4, 2, 4, 4), DType::F32);
    let v = rng.tensor((2, 2, 8, 8), DType::F32);
    let ours = |x: &Tensor, w: &[Tensor]| {
        let h = leaky_relu(&conv2d(x, &w[0], 2, 1)?)?;
        weighted_sum(&conv_transpose2d(&h, &w[1], 2, 1, 0)?, &v)
    };
    let candle = |x: &Tensor, w: &[Tensor]| {
        let h = leaky_relu(&x.conv2d(&w[0], 1, 2, 1, 1)?)?;
        weighted_sum(&h.conv_transpose2d(&w[1], 1, 0, 2, 1)?, &v)
    };
    let weights = [w1, w2];
    let g_ours = gradients(&|w: &[Tensor]| gradient_penalty(&ours, &x, w), &weights)?;
    let g_ref = gradients(&|w: &[Tensor]| gradient_penalty(&candle, &x, w), &weights)?;
    for (a, b) in g_ours.iter().zip(&g_ref) {
        assert_close(a, b, 1e-4, "penalty gradient vs candle");
    }
    Ok(())
}

#[test]
fn per_axis_padding_equals_a_padded_copy() -> Result<()> {
    let mut rng = Rng(21);
    // Inception's one-axis kernels, a strided mix, and f32 and f64.
    for (kernel, stride, padding) in
        [((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0)), ((3, 2), 2, (1, 2)), ((1, 3), 2, (0, 1))]
    {
        for dtype in [DType::F64, DType::F32] {
            let x = Var::from_tensor(&rng.tensor((2, 3, 9, 8), dtype))?;
            let w = Var::from_tensor(&rng.tensor((4, 3, kernel.0, kernel.1), dtype))?;
            let ours = conv2d_hw(&x, &w, stride, padding)?;
            let padded = x.pad_with_zeros(2, padding.0, padding.0)?.pad_with_zeros(3, padding.1, padding.1)?;
            let reference = conv2d(&padded, &w, stride, 0)?;
            let what = format!("{kernel:?} stride {stride} padding {padding:?} {dtype:?}");
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert_close(&ours, &reference, tol, &what);
            let r = rng.tensor(ours.dims(), dtype);
            let (g_ours, g_ref) = (weighted_sum(&ours, &r)?.backward()?, weighted_sum(&reference, &r)?.backward()?);
            for (v, name) in [(&x, "x"), (&w, "w")] {
                assert_close(g_ours.get(v).unwrap(), g_ref.get(v).unwrap(), tol, &format!("grad {name} {what}"));
            }
        }
    }
    assert!(conv2d_hw(&rng.tensor((1, 1, 3, 3), DType::F32), &rng.tensor((1, 1, 1, 7), DType::F32), 1, (0, 1)).is_err());
    Ok(())
}

#[test]
fn gradient_penalty_through_a_per_axis_padded_conv2d() -> Result<()> {
    let mut rng = Rng(22);
    let x = rng.tensor((2, 3, 5, 6), DType::F64);
    let w1 = rng.tensor((4, 3, 1, 3), DType::F64);
    let v = rng.tensor((2, 4, 3, 3), DType::F64);
    let critic = |x: &Tensor, w: &[Tensor]| weighted_sum(&leaky_relu(&conv2d_hw(x, &w[0], 2, (0, 1))?)?, &v);
    check_gradient_penalty(&critic, &x, &[w1], &mut rng, "per-axis padded conv2d critic")
}

/// Inside `input_gradients_only` a backward pass computes the input's gradient but not the
/// convolution weights' (zeros, also through the scaled weight `0.5 w1`); the penalty built
/// on it has the same gradient with respect to the weights as without it, and the setting
/// ends with the call.
#[test]
fn input_gradients_only_drops_weight_gradients_and_keeps_penalties_exact() -> Result<()> {
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    let mut rng = Rng(16);
    let x = rng.tensor((3, 2, 9, 9), DType::F64);
    let w1 = Var::from_tensor(&rng.tensor((4, 2, 4, 4), DType::F64))?;
    let w2 = Var::from_tensor(&rng.tensor((4, 3, 3, 3), DType::F64))?;
    let v = rng.tensor((3, 4, 4, 4), DType::F64);
    let critic = |x: &Tensor| -> Result<Tensor> {
        let h = leaky_relu(&conv2d(x, &(w1.as_tensor() * 0.5)?, 2, 1)?)?;
        let h = leaky_relu(&conv_transpose2d(&h, &w2, 1, 1, 0)?)?;
        weighted_sum(&conv2d(&h, &w2.as_tensor().transpose(2, 3)?, 1, 1)?, &v)
    };
    let penalty = |only_inputs: bool| -> Result<(Tensor, candle_core::backprop::GradStore)> {
        let xv = Var::from_tensor(&x)?;
        let out = critic(&xv)?;
        let first = if only_inputs { super::input_gradients_only(|| out.backward())? } else { out.backward()? };
        let gx = first.get(&xv).expect("no gradient for x").clone();
        for w in [&w1, &w2] {
            let largest = first.get(w).expect("weight gradient").abs()?.max_all()?.to_scalar::<f64>()?;
            assert_eq!(largest == 0.0, only_inputs, "weight gradient {largest} (input gradients only: {only_inputs})");
        }
        Ok((gx.clone(), gx.sqr()?.sum_all()?.backward()?))
    };
    let (gx_all, outer_all) = penalty(false)?;
    let (gx_only, outer_only) = penalty(true)?;
    assert_close(&gx_only, &gx_all, 1e-12, "input gradient");
    for w in [&w1, &w2] {
        let (a, b) = (outer_only.get(w).expect("penalty gradient"), outer_all.get(w).expect("penalty gradient"));
        assert!(a.abs()?.max_all()?.to_scalar::<f64>()? > 0.0);
        assert_close(a, b, 1e-12, "penalty gradient with respect to a weight");
    }
    // The setting is off again after the call.
    let xv = Var::from_tensor(&x)?;
    assert!(critic(&xv)?.backward()?.get(&w2).expect("weight gradient").abs()?.max_all()?.to_scalar::<f64>()? > 0.0);
    Ok(())
}

/// The rows per band of a convolution geometry with `c_in` input channels in `dtype`; panics
/// when it is not banded (a test case that no longer exercises the bands).
fn banded_rows(g: &kernels::Geometry, c_in: usize, dtype: DType) -> usize {
    let k = c_in * g.kernel.0 * g.kernel.1;
    let rows = match dtype {
        DType::F32 => kernels::band_rows::<f32>(g, k, 1),
        _ => kernels::band_rows::<f64>(g, k, 1),
    };
    rows.unwrap_or_else(|| panic!("{g:?} is not banded"))
}

/// Convolutions whose column matrix is built a band of output rows at a time (large grids:
/// Inception's stem, 64x64 ResNets) equal candle's, with bands that divide the output and
/// ones that leave a shorter last band, strided, and padded on one axis only.
#[test]
fn banded_convolutions_match_candle() -> Result<()> {
    let mut rng = Rng(33);
    // (batch, c_in, c_out, (h, w), kernel, stride, padding)
    let cases = [
        (2, 16, 40, (66, 64), (3, 3), 1, (1, 1)),
        (1, 32, 4, (130, 130), (3, 3), 2, (1, 1)),
        (2, 64, 40, (40, 40), (7, 1), 1, (3, 0)),
        (1, 24, 36, (48, 50), (5, 5), 1, (2, 2)),
        (1, 32, 8, (70, 70), (3, 3), 1, (1, 1)), // banded rather than the transposed form
    ];
    for (n, c_in, c_out, (h, wd), kernel, stride, padding) in cases {
        for dtype in [DType::F32, DType::F64] {
            let (g, ..) =
                kernels::Geometry::conv2d(&[n, c_in, h, wd], &[c_out, c_in, kernel.0, kernel.1], stride, padding)?;
            let rows = banded_rows(&g, c_in, dtype);
            assert!(rows < g.small.0);
            let x = rng.tensor((n, c_in, h, wd), dtype);
            let w = rng.tensor((c_out, c_in, kernel.0, kernel.1), dtype);
            let padded = x.pad_with_zeros(2, padding.0, padding.0)?.pad_with_zeros(3, padding.1, padding.1)?;
            let reference = padded.conv2d(&w, 0, stride, 1, 1)?;
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            with_thread_counts(|| {
                let ours = conv2d_hw(&x, &w, stride, padding).unwrap();
                assert_close(&ours, &reference, tol, &format!("{g:?} {dtype:?}, bands of {rows} rows"));
            });
        }
    }
    Ok(())
}

/// The backward passes of convolutions on grids large enough for bands equal candle's: the
/// weight gradient (built a band of output rows at a time, or through the adjoint form when
/// the convolution narrows, banded inside), with bands that divide the output and ones that
/// do not, strided and not, and the input gradient beside it.
#[test]
fn banded_convolution_gradients_match_candle() -> Result<()> {
    let mut rng = Rng(35);
    // (batch, c_in, c_out, (h, w), kernel, stride, padding)
    let cases = [
        (2, 16, 16, (66, 64), (3, 3), 1, (1, 1)),
        (1, 32, 8, (70, 70), (3, 3), 1, (1, 1)), // narrows: the adjoint weight gradient, banded inside
        (2, 24, 36, (48, 50), (5, 5), 1, (2, 2)),
        (1, 16, 8, (130, 130), (3, 3), 2, (1, 1)),
    ];
    for (n, c_in, c_out, (h, wd), kernel, stride, padding) in cases {
        for dtype in [DType::F32, DType::F64] {
            let (g, ..) =
                kernels::Geometry::conv2d(&[n, c_in, h, wd], &[c_out, c_in, kernel.0, kernel.1], stride, padding)?;
            banded_rows(&g, c_in, dtype);
            let x = Var::from_tensor(&rng.tensor((n, c_in, h, wd), dtype))?;
            let w = Var::from_tensor(&rng.tensor((c_out, c_in, kernel.0, kernel.1), dtype))?;
            let (oh, ow) = g.small;
            let r = rng.tensor((n, c_out, oh, ow), dtype);
            let padded = x.pad_with_zeros(2, padding.0, padding.0)?.pad_with_zeros(3, padding.1, padding.1)?;
            let reference = padded.conv2d(&w, 0, stride, 1, 1)?.mul(&r)?.sum_all()?.backward()?;
            let tol = if dtype == DType::F64 { 1e-12 } else { 2e-5 };
            with_thread_counts(|| {
                let ours = conv2d_hw(&x, &w, stride, padding).unwrap().mul(&r).unwrap().sum_all().unwrap();
                let ours = ours.backward().unwrap();
                for (v, what) in [(&x, "input"), (&w, "weight")] {
                    let (a, b) = (ours.get(v).unwrap(), reference.get(v).unwrap());
                    assert_close(a, b, tol, &format!("{what} gradient, {g:?} {dtype:?}"));
                }
            });
        }
    }
    Ok(())
}

/// The fused forward-only convolution + bias + ReLU equals the two ops it replaces, on banded
/// and unbanded grids, in f32 and f64, and keeps a NaN.
#[test]
fn conv2d_bias_relu_equals_conv_then_bias_act() -> Result<()> {
    let mut rng = Rng(34);
    // (batch, c_in, c_out, (h, w), kernel, stride, padding)
    let cases = [
        (2, 16, 40, (66, 64), (3, 3), 1, (1, 1)), // banded
        (1, 32, 8, (70, 70), (3, 3), 1, (1, 1)),  // banded rather than transposed
        (2, 6, 5, (9, 8), (1, 7), 1, (0, 3)),     // one-axis padding, not banded
        (3, 8, 4, (5, 5), (1, 1), 1, (0, 0)),     // pointwise
        (2, 40, 6, (7, 6), (3, 3), 1, (1, 1)),    // the transposed form
        (2, 4, 3, (4, 4), (4, 4), 1, (0, 0)),     // dense
    ];
    for (n, c_in, c_out, (h, wd), kernel, stride, padding) in cases {
        for dtype in [DType::F32, DType::F64] {
            let x = rng.tensor((n, c_in, h, wd), dtype);
            let w = rng.tensor((c_out, c_in, kernel.0, kernel.1), dtype);
            let b = rng.tensor(c_out, dtype);
            let ours = conv2d_bias_relu(&x, &w, &b, stride, padding)?;
            let reference = bias_act(&conv2d_hw(&x, &w, stride, padding)?, &b, Some((0.0, 1.0)))?;
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert_close(&ours, &reference, tol, &format!("{kernel:?} {c_in}->{c_out} at {h}x{wd} {dtype:?}"));
            let zeros =
                ours.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?.iter().filter(|v| **v == 0.0).count();
            assert!(zeros > 0 && zeros < ours.elem_count(), "the ReLU clamps some outputs and not others");
        }
    }
    let x = Tensor::from_vec(vec![f32::NAN, 1.0, -1.0, 2.0], (1, 1, 2, 2), &Device::Cpu)?;
    let w = Tensor::ones((1, 1, 1, 1), DType::F32, &Device::Cpu)?;
    let y = conv2d_bias_relu(&x, &w, &Tensor::zeros(1, DType::F32, &Device::Cpu)?, 1, (0, 0))?;
    let y = y.flatten_all()?.to_vec1::<f32>()?;
    assert!(y[0].is_nan() && y[1..] == [1.0, 0.0, 2.0], "{y:?}");
    Ok(())
}

#[test]
fn log_softmax_matches_closed_forms() -> Result<()> {
    // Softmax of (0, ln 3) is (1/4, 3/4); shifting a row by 1000 changes nothing, since the
    // maximum is subtracted before the exponential (a plain exp would overflow).
    let l3 = 3f64.ln();
    let x = Tensor::new(&[[0.0f64, l3], [1000.0, 1000.0 + l3]], &Device::Cpu)?;
    for row in log_softmax(&x, 1)?.to_vec2::<f64>()? {
        assert!((row[0] - 0.25f64.ln()).abs() < 1e-12, "{row:?}");
        assert!((row[1] - 0.75f64.ln()).abs() < 1e-12, "{row:?}");
    }
    // d/dx Σ w ⊙ log_softmax(x) = w − softmax(x) Σ w: (1, 2) − (1/4, 3/4)·3 = (1/4, −1/4).
    let v = Var::from_tensor(&x.narrow(0, 0, 1)?)?;
    let w = Tensor::new(&[[1.0f64, 2.0]], &Device::Cpu)?;
    let grads = (log_softmax(v.as_tensor(), 1)? * &w)?.sum_all()?.backward()?;
    let g = grads.get(v.as_tensor()).expect("a gradient").to_vec2::<f64>()?;
    assert!((g[0][0] - 0.25).abs() < 1e-12 && (g[0][1] + 0.25).abs() < 1e-12, "{g:?}");
    Ok(())
}
